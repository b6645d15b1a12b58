#!/usr/bin/env bash
# Every performance figure of Meridian beside its baseline, in one run; prints one table of
# ratios (measurement, baseline, ratio, goal).
#
#   scripts/bench.sh [--quick] [--only NAME[,NAME...]]
#
#   --quick   a short version of each measurement (CI: keeps the suite working, ~3 minutes)
#   --only    run only these: sim, replication, load, redis, handoff, join, rss, capacity
#
# Measurements (each runs its baseline in the same run):
#   sim          shard-server/benches/sim.rs: sim tick vs a bare bevy_ecs query (goal <= 3x)
#   replication  shard-server/benches/replication.rs: snapshot bytes vs naive full-state bincode
#                (all moving: <= 6 B/entity; one in ten moving: <= 5% of naive)
#   load         scripts/load.sh: shard CPU per client per tick vs bare quinn (goal <= 1.3x)
#   redis        benches/redis_ops.rs: shard Store ops/s vs a raw 16-deep pipeline of the same
#                mix (goal >= 0.5x), on a redis-server this script starts on a free port
#   handoff      benches/handoff.rs: blackout p99 vs 2 ticks + RTT (goal <= 1.0x)
#   join         lobby/benches/join_storm.rs: joins/s vs bare quinn handshakes/s (goal >= 0.5x)
#   rss          VmRSS of a `meridian shard` per connected client vs a bare quinn server per
#                connection, same client count (goal <= 2.5x)
#   capacity     the most load_clients bots one shard holds at 30 Hz with tick p99 <= 8 ms and
#                >= 99% snapshots delivered (goal >= 1,000), shard and bots on separate CPUs
#
# Exits 0 when every measurement ran, whatever the ratios (figures are reported, not judged);
# non-zero if one could not run, or if one of its figures could not be read (named on stderr,
# shown as nan / - in the table). Logs stay in the directory printed at the end. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
ONLY=""
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --only) ONLY=",${2:?--only needs names},"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
wanted() { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; }

say() { printf '== %s\n' "$*" >&2; }

# --- tools -----------------------------------------------------------------------------------
need_apt=()
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

RUN_NAME=bench
# shellcheck source=scripts/lib/procs.sh
source scripts/lib/procs.sh

# --- build -----------------------------------------------------------------------------------
say "cargo build --release (meridian) and cargo bench --no-run (every bench)"
timeout 1800 cargo build --release -p meridian --bin meridian >&2
timeout 1800 cargo bench -p meridian -p meridian-shard -p meridian-lobby \
  --bench load_clients --bench bare_quinn --bench handoff --bench redis_ops \
  --bench sim --bench replication --bench join_storm --no-run --message-format=json \
  >"$WORK/build.json" 2>"$WORK/build.err" || { cat "$WORK/build.err" >&2; exit 1; }
exe() { jq -r --arg n "$1" 'select(.reason=="compiler-artifact" and .target.name==$n and .executable!=null) | .executable' "$WORK/build.json" | tail -1; }
MERIDIAN=target/release/meridian
LOAD_CLIENTS="$(exe load_clients)"
BARE_QUINN="$(exe bare_quinn)"
HANDOFF="$(exe handoff)"
REDIS_OPS="$(exe redis_ops)"
SIM="$(exe sim)"
REPLICATION="$(exe replication)"
JOIN_STORM="$(exe join_storm)"
for b in "$MERIDIAN" "$LOAD_CLIENTS" "$BARE_QUINN" "$HANDOFF" "$REDIS_OPS" "$SIM" "$REPLICATION" "$JOIN_STORM"; do
  [ -x "$b" ] || { echo "bench.sh: binary not found: '$b'" >&2; exit 1; }
done

# --- results ---------------------------------------------------------------------------------
# One line per row: name|value|baseline|ratio|goal|verdict
ROWS="$WORK/rows"
: >"$ROWS"
FAILED=()
row() { printf '%s|%s|%s|%s|%s|%s\n' "$@" >>"$ROWS"; }
failed() { FAILED+=("$1"); row "$1" "could not run (see $WORK/$1.log)" "-" "-" "$2" "ERROR"; }
# Parsing never stops the script (set -e): a figure that cannot be read is reported by name
# and left empty, its ratio "nan", its verdict "-", and the run ends non-zero (PARSE_ERRORS).
parse_error() { echo "bench.sh: $*" >&2; echo "$*" >>"$WORK/parse_errors"; }
# result FILE NAME: the value of `RESULT NAME=value` in FILE (last one).
result() {
  local v
  v="$({ grep -o "RESULT.*\b$2=[^ ]*" "$1" 2>/dev/null || true; } | sed "s/.*\b$2=//" | tail -1)"
  [ -n "$v" ] || parse_error "no 'RESULT $2=' line in $1"
  printf '%s' "$v"
}
# calc EXPR: awk arithmetic, 3 significant decimals; "nan" when an operand is missing.
calc() { awk "BEGIN { printf \"%.3f\", $1 }" 2>/dev/null || printf 'nan'; }
# jqv FILTER FILE: one value from a JSON file, or empty (and reported) when it cannot be read.
jqv() {
  local v
  v="$(jq -r "$1" "$2" 2>/dev/null || true)"
  [ -n "$v" ] && [ "$v" != null ] || parse_error "cannot read $1 from ${2:-<no file>}"
  printf '%s' "$v"
}
# verdict VALUE OP GOAL
verdict() { awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN { if (v == "" || v == "nan") { print "-"; exit } m = (op == "<=") ? (v <= g) : (v >= g); print (m ? "met" : "MISSED") }'; }

# --- a throwaway redis-server on a free port (never 6379) -------------------------------------
REDIS_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench.sh: redis-server did not start on port $REDIS_PORT; see $WORK/redis.log" >&2
  return 1
}

# --- sim ---------------------------------------------------------------------------------------
# Criterion's own sampling is skipped under --quick (a filter that matches nothing); the
# side-by-side ratio the bench prints after it always runs.
if [ "$QUICK" -eq 1 ]; then CRIT=(--bench only-the-ratio); else CRIT=(--bench --warm-up-time 1 --measurement-time 3); fi
if wanted sim; then
  say "sim"
  if timeout 600 "$SIM" "${CRIT[@]}" >"$WORK/sim.log" 2>&1; then
    t="$(result "$WORK/sim.log" sim_tick_us)"; b="$(result "$WORK/sim.log" sim_bare_query_us)"
    r="$(calc "$t / $b")"
    row "sim tick, 10k NPCs + 1k players (us)" "$t" "bare bevy_ecs query $b" "$r" "<= 3" "$(verdict "$r" '<=' 3)"
  else failed sim "<= 3"; fi
fi

# --- replication -------------------------------------------------------------------------------
if wanted replication; then
  say "replication"
  if timeout 600 "$REPLICATION" "${CRIT[@]}" >"$WORK/replication.log" 2>&1; then
    pe="$(result "$WORK/replication.log" replication_all_moving_bytes_per_entity)"
    ab="$(result "$WORK/replication.log" replication_all_moving_bytes)"
    an="$(result "$WORK/replication.log" replication_all_moving_naive_bytes)"
    row "snapshot, all moving (B/entity)" "$pe ($ab B)" "naive bincode $an B" "$(calc "$ab / $an")" "<= 6 B/entity" "$(verdict "$pe" '<=' 6)"
    tb="$(result "$WORK/replication.log" replication_tenth_moving_bytes)"
    tn="$(result "$WORK/replication.log" replication_tenth_moving_naive_bytes)"
    r="$(calc "$tb / $tn")"
    row "snapshot, one in ten moving (B)" "$tb" "naive bincode $tn B" "$r" "<= 0.05" "$(verdict "$r" '<=' 0.05)"
  else failed replication "<= 6 B/entity"; fi
fi

# --- load: shard CPU per client per tick vs bare quinn ----------------------------------------
if wanted load; then
  say "load (scripts/load.sh)"
  LOAD_ARGS=()
  [ "$QUICK" -eq 1 ] && LOAD_ARGS=(--quick)
  if timeout 900 scripts/load.sh "${LOAD_ARGS[@]}" >"$WORK/load.log" 2>&1; then
    res="$(sed -n 's/^results: \([^ ]*\).*/\1/p' "$WORK/load.log" | tail -1)"
    [ -n "$res" ] || parse_error "no 'results: FILE' line in $WORK/load.log"
    s="$(jqv '.shard.server_cpu_us_per_client_tick' "$res")"
    b="$(jqv '.bare.server_cpu_us_per_client_tick' "$res")"
    n="$(jqv '.shard.clients' "$res")"
    r="$(calc "$s / $b")"
    row "shard CPU per client per tick, $n clients (us)" "$(calc "$s")" "bare quinn $(calc "$b")" "$r" "<= 1.3" "$(verdict "$r" '<=' 1.3)"
  else failed load "<= 1.3"; fi
fi

# --- redis -------------------------------------------------------------------------------------
if wanted redis; then
  say "redis (redis-server on 127.0.0.1:$REDIS_PORT)"
  if [ "$QUICK" -eq 1 ]; then RS=2; else RS=10; fi
  if start_redis && timeout 300 "$REDIS_OPS" --bench --redis-url "redis://127.0.0.1:$REDIS_PORT" --seconds "$RS" >"$WORK/redis.log.out" 2>&1; then
    cp "$WORK/redis.log.out" "$WORK/redis_ops.log"
    s="$(result "$WORK/redis_ops.log" redis_shard_ops_s)"; b="$(result "$WORK/redis_ops.log" redis_pipeline_ops_s)"
    rt="$(result "$WORK/redis_ops.log" redis_round_trips_per_tick)"
    r="$(calc "$s / $b")"
    row "shard -> Redis ops/s ($rt round trips per tick)" "$s" "16-deep pipeline $b" "$r" ">= 0.5" "$(verdict "$r" '>=' 0.5)"
  else
    [ -f "$WORK/redis.log.out" ] && cp "$WORK/redis.log.out" "$WORK/redis_ops.log"
    failed redis_ops ">= 0.5"
  fi
  if [ -n "${REDIS_PID:-}" ]; then redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill -TERM "$REDIS_PID" 2>/dev/null || true; fi
fi

# --- handoff -----------------------------------------------------------------------------------
if wanted handoff; then
  say "handoff"
  if [ "$QUICK" -eq 1 ]; then HA=(--blackout-handoffs 40 --bots 40 --duration 3); else HA=(); fi
  if timeout 1200 "$HANDOFF" --bench "${HA[@]}" >"$WORK/handoff.log" 2>&1; then
    for tag in loopback rtt; do
      p="$(result "$WORK/handoff.log" "handoff_${tag}_p99_ms")"; b="$(result "$WORK/handoff.log" "handoff_${tag}_baseline_ms")"
      c="$(result "$WORK/handoff.log" "handoff_${tag}_count")"
      label="loopback"; [ "$tag" = rtt ] && label="40 ms RTT"
      r="$(calc "$p / $b")"
      row "handoff blackout p99, $label, $c handoffs (ms)" "$p" "2 ticks + RTT $b" "$r" "<= 1.0" "$(verdict "$r" '<=' 1.0)"
    done
  else failed handoff "<= 1.0"; fi
fi

# --- join storm --------------------------------------------------------------------------------
if wanted join; then
  say "join storm"
  if [ "$QUICK" -eq 1 ]; then JA=(--clients 50); else JA=(); fi
  if timeout 900 "$JOIN_STORM" --bench "${JA[@]}" >"$WORK/join.log" 2>&1; then
    j="$(result "$WORK/join.log" join_per_s)"; b="$(result "$WORK/join.log" join_bare_handshakes_per_s)"
    n="$(result "$WORK/join.log" join_clients)"; ok="$(result "$WORK/join.log" join_joined)"
    r="$(calc "$j / $b")"
    row "joins/s, $n at once ($ok joined)" "$j" "bare handshakes/s $b" "$r" ">= 0.5" "$(verdict "$r" '>=' 0.5)"
  else failed join ">= 0.5"; fi
fi

# --- probes: a shard or a bare quinn server under N load_clients ------------------------------
# wait_json FILE JQ-FILTER SECONDS PID: the first JSON line of FILE matching the filter.
wait_json() {
  local file=$1 filter=$2 seconds=$3 pid=$4 line
  local deadline=$((SECONDS + seconds))
  while [ "$SECONDS" -lt "$deadline" ]; do
    line="$(jq -c "select($filter)" "$file" 2>/dev/null | head -1 || true)"
    if [ -n "$line" ]; then printf '%s\n' "$line"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "bench.sh: process $pid exited; see $file" >&2; return 1; }
    sleep 0.1
  done
  echo "bench.sh: timed out after ${seconds}s waiting in $file" >&2
  return 1
}
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

if [ "$QUICK" -eq 1 ]; then PROBE_WINDOW=3; PROBE_WARMUP=2; else PROBE_WINDOW=10; PROBE_WARMUP=5; fi
PROBE_RATE=200
# probe MODE N: runs a server (shard or bare) and N clients; writes $WORK/probe-MODE-N.json with
# the clients' results, the server's RSS idle and mid-window (KiB) and, for a shard, its
# "shard stopped" fields (tick p99).
probe() {
  local mode=$1 n=$2 out="$WORK/probe-$1-$2" pid addr pin listening key rss0 rss1 cpid
  local ramp=$(( (n + PROBE_RATE - 1) / PROBE_RATE ))
  local run_timeout=$((ramp + PROBE_WARMUP + PROBE_WINDOW + 90))
  key="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
  if [ "$mode" = shard ]; then
    MERIDIAN_TICKET_KEY="$key" RUST_LOG=info "${PIN_SERVER[@]}" "$MERIDIAN" shard --dev-cert --listen 127.0.0.1:0 \
      --npcs 1000 --tick-hz 30 --log-format json >"$out.server.out" 2>"$out.server.log" &
    pid=$!; PIDS+=("$pid")
    listening="$(wait_json "$out.server.log" '.fields.message=="shard listening"' 30 "$pid")" || return 1
    addr="$(jq -r '.fields.addr' <<<"$listening")"; pin="$(jq -r '.fields.cert_sha256' <<<"$listening")"
    local extra=(--mode shard --shard-id "$(jq -r '.fields.shard' <<<"$listening")" --zone "$(jq -r '.fields.zone' <<<"$listening")")
  else
    "${PIN_SERVER[@]}" "$BARE_QUINN" --listen 127.0.0.1:0 --datagram-bytes "${BARE_BYTES:-69}" --tick-hz 30 \
      --max-seconds "$((run_timeout + 30))" >"$out.server.out" 2>"$out.server.log" &
    pid=$!; PIDS+=("$pid")
    listening="$(wait_json "$out.server.out" '.event=="listening"' 30 "$pid")" || return 1
    addr="$(jq -r '.addr' <<<"$listening")"; pin="$(jq -r '.cert_sha256' <<<"$listening")"
    local extra=(--mode bare)
  fi
  sleep 1
  rss0="$(rss_kib "$pid")"
  MERIDIAN_TICKET_KEY="$key" timeout "$run_timeout" "${PIN_CLIENTS[@]}" "$LOAD_CLIENTS" "${extra[@]}" --addr "$addr" \
    --cert-sha256 "$pin" --server-pid "$pid" --clients "$n" --window-s "$PROBE_WINDOW" --warmup-s "$PROBE_WARMUP" \
    --connect-rate "$PROBE_RATE" --tick-hz 30 >"$out.clients.json" 2>"$out.clients.log" &
  cpid=$!
  # RSS in the middle of the window: every client connected and playing.
  sleep "$(calc "$n / $PROBE_RATE + $PROBE_WARMUP + $PROBE_WINDOW / 2")"
  rss1="$(rss_kib "$pid")"
  local rc=0
  wait "$cpid" || rc=$?
  stop_pid "$pid"
  [ "$rc" -eq 0 ] || { echo "bench.sh: load_clients failed ($rc); see $out.clients.log" >&2; return 1; }
  local stopped='{}'
  if [ "$mode" = shard ]; then
    stopped="$(jq -c 'select(.fields.message=="shard stopped") | .fields' "$out.server.log" | tail -1)"
    [ -n "$stopped" ] || stopped='{}'
  fi
  jq -c --argjson stopped "$stopped" --argjson rss0 "${rss0:-0}" --argjson rss1 "${rss1:-0}" \
    '. + {stopped: $stopped, rss_idle_kib: $rss0, rss_loaded_kib: $rss1}' <(tail -1 "$out.clients.json") >"$out.json"
}

# --- rss -------------------------------------------------------------------------------------
if [ "$QUICK" -eq 1 ]; then RSS_N=50; else RSS_N=1000; fi
if wanted rss; then
  say "rss: shard and bare quinn with $RSS_N clients each"
  if probe shard "$RSS_N" >>"$WORK/rss.log" 2>&1 \
    && BARE_BYTES="$(jq -r '.mean_datagram_bytes // 69 | round | if . < 1 then 69 else . end' "$WORK/probe-shard-$RSS_N.json" 2>/dev/null || echo 69)" \
    && probe bare "$RSS_N" >>"$WORK/rss.log" 2>&1; then
    s="$(jqv '(.rss_loaded_kib - .rss_idle_kib) / .clients' "$WORK/probe-shard-$RSS_N.json")"
    b="$(jqv '(.rss_loaded_kib - .rss_idle_kib) / .clients' "$WORK/probe-bare-$RSS_N.json")"
    si="$(jqv '.rss_idle_kib' "$WORK/probe-shard-$RSS_N.json")"; bi="$(jqv '.rss_idle_kib' "$WORK/probe-bare-$RSS_N.json")"
    r="$(calc "$s / $b")"
    row "RSS per connected client, $RSS_N clients (KiB; idle $si)" "$(calc "$s")" "bare quinn $(calc "$b") (idle $bi)" "$r" "<= 2.5" "$(verdict "$r" '<=' 2.5)"
  else failed rss "<= 2.5"; fi
fi

# --- capacity ----------------------------------------------------------------------------------
# A probe passes with tick p99 <= 8 ms (the shard's whole run) and >= 99% delivered.
passes() {
  jq -e '((.stopped.tick_p99_ms // 1e9) <= 8) and ((.delivered_pct // 0) >= 99)' "$WORK/probe-shard-$1.json" >/dev/null
}
if wanted capacity; then
  if [ "$QUICK" -eq 1 ]; then STEPS=(50 100); else STEPS=(250 500 750 1000 1250 1500 2000); fi
  say "capacity: ${STEPS[*]} clients until one fails"
  best=0; first_fail=""; cap_err=0
  for n in "${STEPS[@]}"; do
    if [ ! -f "$WORK/probe-shard-$n.json" ]; then
      probe shard "$n" >>"$WORK/capacity.log" 2>&1 || { cap_err=1; break; }
    fi
    jq -c --argjson n "$n" '{clients: $n, tick_p99_ms: .stopped.tick_p99_ms, delivered_pct, server_cpu_pct}' \
      "$WORK/probe-shard-$n.json" >>"$WORK/capacity.log" 2>&1 || parse_error "cannot read $WORK/probe-shard-$n.json"
    if passes "$n"; then best=$n; else first_fail=$n; break; fi
  done
  if [ "$cap_err" -eq 1 ]; then failed capacity ">= 1000"
  else
    why="all passed"
    [ -n "$first_fail" ] && why="$(jq -r 2>/dev/null --argjson n "$first_fail" '"\($n) failed: tick p99 \(.stopped.tick_p99_ms) ms, \(.delivered_pct | . * 100 | round / 100)% delivered"' "$WORK/probe-shard-$first_fail.json")" \
      || why="$first_fail failed (its figures could not be read: $WORK/probe-shard-$first_fail.json)"
    row "capacity at 30 Hz, tick p99 <= 8 ms, >= 99% delivered (bots)" "$best" "goal 1000 ($why)" "$(calc "$best / 1000")" ">= 1000" "$(verdict "$best" '>=' 1000)"
  fi
fi

# --- the table -------------------------------------------------------------------------------
echo
echo "Meridian bench suite$([ "$QUICK" -eq 1 ] && echo " (--quick)"): $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr), redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
echo
{ echo "measurement|value|baseline|ratio|goal|verdict"; cat "$ROWS"; } | column -t -s '|'
echo
echo "logs: $WORK"
if [ -s "$WORK/parse_errors" ]; then
  echo "bench.sh: figures that could not be read (shown as nan / -):" >&2
  sed 's/^/  /' "$WORK/parse_errors" >&2
fi
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "bench.sh: could not run: ${FAILED[*]}" >&2
  exit 1
fi
[ ! -s "$WORK/parse_errors" ] || exit 1
