//! `--log-format json` with the real binary: every line on stderr is one JSON object, with the
//! fields of its spans, so that one handoff can be followed across two shards' logs by its
//! ids (player, seq, from, to).

use serde_json::Value;
use std::process::Command;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Every complete stderr line of a run, parsed (a killed process may leave a last line cut).
fn json_lines(stderr: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(stderr);
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// The fields of the innermost span named `name` in `line`'s span list.
fn span<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"]
        .as_array()?
        .iter()
        .rev()
        .find(|s| s["name"] == name)
}

#[test]
fn shard_json_lines_carry_its_id_and_zone() {
    // A shard runs until a signal: this one is killed once it has logged its first lines.
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "--log-format",
            "json",
            "shard",
            "--dev-cert",
            "--ticket-key",
            KEY,
        ])
        .args(["--id", "shard-logs", "--zone", "logzone", "--npcs", "5"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("meridian shard starts");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let lines = json_lines(&out.stderr);
    let listening = lines
        .iter()
        .find(|l| message(l) == "shard listening")
        .unwrap_or_else(|| panic!("no `shard listening` line in {lines:#?}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["fields"]["shard"], "shard-logs");
    assert_eq!(listening["fields"]["zone"], "logzone");
    assert!(listening["timestamp"].is_string());
    assert!(
        lines
            .iter()
            .any(|l| message(l) == "admin endpoint listening" && l["fields"]["addr"].is_string()),
        "{lines:#?}"
    );
}

#[test]
fn one_handoff_is_followed_across_two_shards_by_its_ids() {
    // Bots cross the zone borders of the dev world: each handoff logs "ownership moved" on the
    // shard it leaves and "handoff notice accepted" on the shard it enters.
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "--log-format",
            "json",
            "dev",
            "--bots",
            "6",
            "--scenario",
            "cross",
        ])
        .args(["--duration", "10", "--npcs", "50"])
        .args([
            "--lobby-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .output()
        .expect("meridian dev runs");
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stderr);
    let moved: Vec<&Value> = lines
        .iter()
        .filter(|l| message(l) == "ownership moved")
        .collect();
    assert!(!moved.is_empty(), "no handoff in 10 s of crossing bots");
    let mut followed = 0;
    for out_line in &moved {
        let h = span(out_line, "handoff").expect("a handoff span");
        let (player, seq, from, to) = (&h["player"], &h["seq"], &h["from"], &h["to"]);
        assert!(player.is_string() && seq.is_u64(), "{out_line}");
        assert_ne!(from, to, "{out_line}");
        // The same ids on the line of the shard the player entered.
        let accepted = lines.iter().find(|l| {
            message(l) == "handoff notice accepted"
                && span(l, "handoff").is_some_and(|s| {
                    (&s["player"], &s["seq"], &s["from"], &s["to"]) == (player, seq, from, to)
                })
        });
        if let Some(accepted) = accepted {
            // Each line also says which shard wrote it.
            let writer = |l: &Value| {
                l["spans"].as_array().and_then(|spans| {
                    spans
                        .iter()
                        .find_map(|s| s["shard"].as_str().map(str::to_owned))
                })
            };
            assert_eq!(writer(out_line).as_deref(), from.as_str(), "{out_line}");
            assert_eq!(writer(accepted).as_deref(), to.as_str(), "{accepted}");
            followed += 1;
        }
    }
    assert!(
        followed > 0,
        "no handoff found on both shards' lines: {moved:#?}"
    );
}
