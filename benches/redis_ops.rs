//! Shard → Redis throughput beside a raw redis pipeline of the same command mix.
//!
//! The shard's steady Redis work per tick is a fenced checkpoint of its players (one
//! `EVALSHA` per player, pipelined by [`Store::checkpoint_players`]) and one border-ghost
//! batch (`PUBLISH`, [`Store::publish_ghosts`]). This bench drives exactly those Store
//! operations through the real adapter ([`StoreHandle`] on a Redis URL), one tick's worth
//! after the other and awaited in turn as the shard's worker does, and counts the commands
//! Redis executed (`INFO commandstats`, before and after) over the elapsed time.
//!
//! Baseline, same server, same run: the same mix (per round, `--players` fenced checkpoint
//! scripts — an `HMGET` of the fence fields, the check, an `HSET` of the state — and one
//! `PUBLISH` of a batch of the same size) sent with the redis crate as back-to-back pipelines
//! 16 commands deep on one connection. The ratio is shard ops/s ÷ pipeline ops/s (goal ≥ 0.5).
//! Also printed: Redis round trips per tick of the shard path (one per Store call).
//!
//! Prints `RESULT name=value` lines for `scripts/bench.sh`. Without `--redis-url` (as under a
//! plain `cargo bench`) it prints a hint and exits.

use anyhow::{Context, Result, bail, ensure};
use meridian_cluster::Store as _;
use meridian_cluster::ownership::{AcquireOutcome, ClaimOutcome, Lease, PlayerState};
use meridian_cluster::store::{StoreConfig, StoreHandle};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Depth of the baseline's pipelines.
const PIPELINE_DEPTH: usize = 16;

/// The baseline's checkpoint: the fence read, the check and the write of the shard's script.
/// KEYS[1] = player; ARGV = owner, zone, epoch, state JSON.
const BASELINE_CHECKPOINT: &str = r"
local r = redis.call('HMGET', KEYS[1], 'owner', 'zone', 'epoch')
if r[1] ~= ARGV[1] or r[2] ~= ARGV[2] or tonumber(r[3] or '0') > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[4])
return 1
";

struct Args {
    redis_url: Option<String>,
    players: usize,
    seconds: f64,
    ghost_bytes: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        redis_url: None,
        players: 100,
        seconds: 5.0,
        ghost_bytes: 512,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--redis-url" => args.redis_url = Some(value("--redis-url")?),
            "--players" => {
                args.players = value("--players")?
                    .parse()
                    .context("--players takes a whole number")?;
            }
            "--seconds" => {
                args.seconds = value("--seconds")?
                    .parse()
                    .context("--seconds takes a number")?;
            }
            "--ghost-bytes" => {
                args.ghost_bytes = value("--ghost-bytes")?
                    .parse()
                    .context("--ghost-bytes takes a whole number")?;
            }
            // Passed by `cargo bench`.
            "--bench" => {}
            other => bail!(
                "unknown argument `{other}` (--redis-url URL, --players N, --seconds S, --ghost-bytes B)"
            ),
        }
    }
    ensure!(args.players > 0, "--players must be positive");
    ensure!(
        args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3_600.0,
        "--seconds must be in (0, 3600]"
    );
    ensure!(
        args.ghost_bytes <= 1 << 20,
        "--ghost-bytes must be at most 1 MiB"
    );
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let Some(url) = args.redis_url.clone() else {
        eprintln!(
            "redis_ops: nothing to do without --redis-url (run by scripts/bench.sh). Example: \
             cargo bench --bench redis_ops -- --redis-url redis://127.0.0.1:PORT"
        );
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(run(&args, &url))
}

/// Calls per command, from `INFO commandstats` (`cmdstat_<name>:calls=N,...`), without `info`.
async fn command_calls(
    conn: &mut redis::aio::MultiplexedConnection,
) -> Result<BTreeMap<String, u64>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .context("INFO commandstats")?;
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, stats)) = rest.split_once(':') else {
            continue;
        };
        if name == "info" {
            continue;
        }
        let calls = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("no calls= in `{line}`"))?;
        out.insert(name.to_owned(), calls);
    }
    Ok(out)
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn mix(d: &BTreeMap<String, u64>) -> String {
    d.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn run(args: &Args, url: &str) -> Result<()> {
    let client = redis::Client::open(url).with_context(|| format!("redis URL {url}"))?;
    let mut stats = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let window = Duration::from_secs_f64(args.seconds);
    let ghost = vec![0x5au8; args.ghost_bytes];

    // --- the shard's path: the real adapter --------------------------------------------------
    let store = StoreHandle::open(url, &StoreConfig::default())
        .await
        .with_context(|| format!("opening the store at {url}"))?;
    let zone = ZoneId::new("bench").context("zone name")?;
    let shard = ShardId::new("shard-bench").context("shard name")?;
    let lease: Lease = match store
        .acquire_lease(&zone, &shard, Duration::from_secs(3_600))
        .await
        .context("acquire_lease")?
    {
        AcquireOutcome::Acquired(l) => l,
        AcquireOutcome::Held(l) => bail!("zone `bench` held by {:?}", l.owner),
    };
    let mut states = Vec::with_capacity(args.players);
    for i in 0..args.players {
        let player = PlayerId(1_000_000 + i as u64);
        match store
            .claim_player(player, &lease)
            .await
            .context("claim_player")?
        {
            ClaimOutcome::Claimed { .. } => {}
            other => bail!("claim of {player:?} refused: {other:?}"),
        }
        let state = PlayerState {
            pos: [100.0 + i as f32, 50.0],
            vel: [8.0, 0.0],
            score: i as u64,
            last_input: 7,
        };
        states.push((player, state));
    }
    // Warm-up (loads the scripts).
    store
        .checkpoint_players(&lease, &states)
        .await
        .context("checkpoint_players")?;

    let before = command_calls(&mut stats).await?;
    let start = Instant::now();
    let mut ticks = 0u64;
    let mut round_trips = 0u64;
    while start.elapsed() < window {
        let written = store
            .checkpoint_players(&lease, &states)
            .await
            .context("checkpoint_players")?;
        ensure!(
            written.iter().all(|w| *w),
            "a checkpoint was refused by its fence"
        );
        store
            .publish_ghosts(&zone, &ghost)
            .await
            .context("publish_ghosts")?;
        ticks += 1;
        round_trips += 2;
    }
    let shard_elapsed = start.elapsed().as_secs_f64();
    let shard_mix = delta(&before, &command_calls(&mut stats).await?);
    let shard_ops: u64 = shard_mix.values().sum();
    let shard_ops_s = shard_ops as f64 / shard_elapsed;
    let tick_ms = shard_elapsed * 1e3 / ticks.max(1) as f64;

    // --- baseline: the same mix, raw 16-deep pipelines -----------------------------------------
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let script = redis::Script::new(BASELINE_CHECKPOINT);
    let sha = script.get_hash().to_owned();
    script
        .prepare_invoke()
        .load_async(&mut conn)
        .await
        .context("SCRIPT LOAD")?;
    let keys: Vec<(String, String)> = states
        .iter()
        .map(|(p, s)| {
            let key = format!("bench:{{p:{}}}", p.0);
            let json = format!(
                "{{\"pos\":[{},{}],\"vel\":[{},{}],\"score\":{},\"last_input\":{}}}",
                s.pos[0], s.pos[1], s.vel[0], s.vel[1], s.score, s.last_input
            );
            (key, json)
        })
        .collect();
    let mut seed = redis::pipe();
    for (key, _) in &keys {
        seed.cmd("HSET")
            .arg(key)
            .arg("owner")
            .arg(lease.owner.as_str())
            .arg("zone")
            .arg(lease.zone.as_str())
            .arg("epoch")
            .arg(lease.epoch)
            .ignore();
    }
    seed.exec_async(&mut conn).await.context("seeding")?;
    // The mix of one round: every player's checkpoint, then one publish.
    let round = keys.len() + 1;
    let before = command_calls(&mut stats).await?;
    let start = Instant::now();
    let mut next = 0usize;
    while start.elapsed() < window {
        let mut pipe = redis::pipe();
        for _ in 0..PIPELINE_DEPTH {
            let k = next % round;
            next += 1;
            if k == keys.len() {
                pipe.cmd("PUBLISH")
                    .arg("bench:ghosts")
                    .arg(&ghost[..])
                    .ignore();
            } else {
                let (key, json) = &keys[k];
                pipe.cmd("EVALSHA")
                    .arg(&sha)
                    .arg(1)
                    .arg(key)
                    .arg(lease.owner.as_str())
                    .arg(lease.zone.as_str())
                    .arg(lease.epoch)
                    .arg(json)
                    .ignore();
            }
        }
        pipe.exec_async(&mut conn)
            .await
            .context("baseline pipeline")?;
    }
    let bare_elapsed = start.elapsed().as_secs_f64();
    let bare_mix = delta(&before, &command_calls(&mut stats).await?);
    let bare_ops: u64 = bare_mix.values().sum();
    let bare_ops_s = bare_ops as f64 / bare_elapsed;

    let ratio = shard_ops_s / bare_ops_s;
    println!(
        "redis_ops: {} players, {}-byte ghost batch, {:.1} s each",
        args.players, args.ghost_bytes, args.seconds
    );
    println!(
        "  shard path (checkpoint_players + publish_ghosts per tick): {shard_ops_s:.0} ops/s, \
         {ticks} ticks ({tick_ms:.2} ms each), {} Redis round trips per tick; mix {}",
        round_trips / ticks.max(1),
        mix(&shard_mix)
    );
    println!(
        "  baseline (same mix, {PIPELINE_DEPTH}-deep pipelines): {bare_ops_s:.0} ops/s; mix {}",
        mix(&bare_mix)
    );
    println!("  ratio shard / pipeline: {ratio:.3} (goal >= 0.5)");
    println!("RESULT redis_shard_ops_s={shard_ops_s:.1}");
    println!("RESULT redis_pipeline_ops_s={bare_ops_s:.1}");
    println!(
        "RESULT redis_round_trips_per_tick={}",
        round_trips / ticks.max(1)
    );
    println!("RESULT redis_tick_ms={tick_ms:.3}");
    Ok(())
}
