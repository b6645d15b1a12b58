#!/usr/bin/env bash
# Load test of one shard, and of a bare quinn server sending the same datagrams at the same
# rate, on this machine; prints the comparison table.
#
#   scripts/load.sh [--clients N] [--seconds S] [--quick] [--perf]
#
#   --clients N   headless clients (default 1000)
#   --seconds S   measured window, seconds (default 20; after the ramp-up and a warm-up)
#   --quick       50 clients, 5 s window (CI smoke)
#   --perf        also record a perf profile (cpu-clock) of the shard over its window; the
#                 profile's own cost perturbs that run's figures (attaching stalls the shard
#                 for tens of ms, which was seen to get clients kicked for InputFlood)
#
# a. `meridian shard` (30 Hz, 1000 NPCs) pinned to CPU 0, `load_clients --mode shard` pinned
#    to CPU 1: delivery, mean snapshot size, the shard's CPU time over exactly the window
#    (load_clients reads /proc/PID/stat at the window's start and end), tick p99 from the
#    shard's "shard stopped" log line;
# b. `bare_quinn --datagram-bytes <mean snapshot size>` on CPU 0, `load_clients --mode bare`
#    on CPU 1: the same figures for the baseline;
# c. the table. Exits 0 when the run completed: the figures are reported, not judged.
# Loopback only. Logs and JSON results stay in the directory printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=1000
WINDOW=20
WARMUP=5
RATE=200
NPCS=1000
TICK_HZ=30
PERF=0
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS="${2:?--clients needs a number}"; shift 2 ;;
    --seconds) WINDOW="${2:?--seconds needs a number}"; shift 2 ;;
    --quick) CLIENTS=50; WINDOW=5; WARMUP=2; shift ;;
    --perf) PERF=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "load.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$CLIENTS$WINDOW" in *[!0-9]*) echo "load.sh: --clients and --seconds take whole numbers" >&2; exit 2 ;; esac

say() { printf '== %s\n' "$*" >&2; }

if ! command -v jq >/dev/null 2>&1; then
  say "installing jq"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq jq >/dev/null
fi

RUN_NAME=load
# shellcheck source=scripts/lib/procs.sh
source scripts/lib/procs.sh

# --- build -----------------------------------------------------------------------------------
say "cargo build --release"
timeout 1800 cargo build --release -p meridian --bin meridian >&2
say "cargo bench --no-run (load_clients, bare_quinn)"
timeout 1800 cargo bench -p meridian --bench load_clients --bench bare_quinn --no-run --message-format=json \
  >"$WORK/build.json" 2>"$WORK/build.err" || { cat "$WORK/build.err" >&2; exit 1; }
exe() { jq -r --arg n "$1" 'select(.reason=="compiler-artifact" and .target.name==$n and .executable!=null) | .executable' "$WORK/build.json" | tail -1; }
MERIDIAN=target/release/meridian
LOAD_CLIENTS="$(exe load_clients)"
BARE_QUINN="$(exe bare_quinn)"
for b in "$MERIDIAN" "$LOAD_CLIENTS" "$BARE_QUINN"; do
  [ -x "$b" ] || { echo "load.sh: binary not found: '$b'" >&2; exit 1; }
done
if "$MERIDIAN" shard --help 2>&1 | grep -qi "not built yet"; then
  echo "load.sh: 'meridian shard' is not built yet" >&2
  exit 1
fi

# --- helpers ---------------------------------------------------------------------------------
# wait_for FILE JQ-FILTER SECONDS PID: prints the first JSON line of FILE for which the filter
# is true, polling; fails after SECONDS or when PID exits.
wait_for() {
  local file=$1 filter=$2 seconds=$3 pid=$4 line
  local deadline=$((SECONDS + seconds))
  while [ "$SECONDS" -lt "$deadline" ]; do
    line="$(jq -c "select($filter)" "$file" 2>/dev/null | head -1 || true)"
    if [ -n "$line" ]; then printf '%s\n' "$line"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "load.sh: process $pid exited; see $file" >&2; return 1; }
    sleep 0.1
  done
  echo "load.sh: timed out after ${seconds}s waiting in $file" >&2
  return 1
}

# stop PID: SIGTERM, then wait up to 20 s, then SIGKILL.
stop() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { echo "load.sh: $pid ignored SIGTERM; killing" >&2; kill -KILL "$pid" 2>/dev/null; }
  wait "$pid" 2>/dev/null || true
}

RUN_TIMEOUT=$((CLIENTS / RATE + WARMUP + WINDOW + 90))
load_args=(--clients "$CLIENTS" --window-s "$WINDOW" --warmup-s "$WARMUP" --connect-rate "$RATE" --tick-hz "$TICK_HZ")

# --- a. the shard ----------------------------------------------------------------------------
KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
say "a. shard: $CLIENTS clients, ${WINDOW}s window (logs: $WORK)"
MERIDIAN_TICKET_KEY="$KEY" RUST_LOG=info "${PIN_SERVER[@]}" "$MERIDIAN" shard --dev-cert --listen 127.0.0.1:0 \
  --npcs "$NPCS" --tick-hz "$TICK_HZ" --log-format json >"$WORK/shard.out" 2>"$WORK/shard.log" &
SHARD_PID=$!
PIDS+=("$SHARD_PID")
listening="$(wait_for "$WORK/shard.log" '.fields.message=="shard listening"' 30 "$SHARD_PID")"
SHARD_ADDR="$(jq -r '.fields.addr' <<<"$listening")"
SHARD_PIN="$(jq -r '.fields.cert_sha256' <<<"$listening")"
SHARD_ID="$(jq -r '.fields.shard' <<<"$listening")"
SHARD_ZONE="$(jq -r '.fields.zone' <<<"$listening")"
say "shard $SHARD_ID ($SHARD_ZONE) at $SHARD_ADDR, pid $SHARD_PID"

if [ "$PERF" -eq 1 ] && command -v perf >/dev/null 2>&1; then
  (
    sleep $((CLIENTS / RATE + WARMUP + 1))
    exec "${PIN_CLIENTS[@]}" perf record -e cpu-clock -F 499 -g -p "$SHARD_PID" -o "$WORK/shard.perf.data" -- sleep "$((WINDOW > 4 ? WINDOW - 2 : 2))"
  ) >"$WORK/perf.log" 2>&1 &
  PIDS+=("$!")
fi

MERIDIAN_TICKET_KEY="$KEY" timeout "$RUN_TIMEOUT" "${PIN_CLIENTS[@]}" "$LOAD_CLIENTS" --mode shard --addr "$SHARD_ADDR" \
  --cert-sha256 "$SHARD_PIN" --shard-id "$SHARD_ID" --zone "$SHARD_ZONE" --server-pid "$SHARD_PID" "${load_args[@]}" \
  >"$WORK/shard_clients.json" 2> >(tee "$WORK/shard_clients.log" >&2)
stop "$SHARD_PID"
SHARD_RESULT="$(tail -1 "$WORK/shard_clients.json")"
STOPPED="$(jq -c 'select(.fields.message=="shard stopped") | .fields' "$WORK/shard.log" | tail -1)"
[ -n "$STOPPED" ] || STOPPED='{}'
# Clients the shard kicked, by reason (from its log).
KICKS="$(jq -c 'select(.fields.message=="kicking client") | .fields.reason' "$WORK/shard.log" | jq -sc 'group_by(.) | map({key: ., value: length} | .key |= .[0]) | from_entries')"
MEAN_BYTES="$(jq -r '.mean_datagram_bytes | round' <<<"$SHARD_RESULT")"
INPUT_BYTES="$(jq -r '.mean_input_bytes | round' <<<"$SHARD_RESULT")"
if [ -z "$MEAN_BYTES" ] || [ "$MEAN_BYTES" -lt 1 ]; then
  echo "load.sh: the shard run measured no snapshots; see $WORK" >&2
  exit 1
fi

# --- b. bare quinn ---------------------------------------------------------------------------
say "b. bare quinn: $CLIENTS clients, ${MEAN_BYTES}-byte datagrams down and ${INPUT_BYTES}-byte up at ${TICK_HZ} Hz"
"${PIN_SERVER[@]}" "$BARE_QUINN" --listen 127.0.0.1:0 --datagram-bytes "$MEAN_BYTES" --tick-hz "$TICK_HZ" \
  --max-seconds "$((RUN_TIMEOUT + 30))" >"$WORK/bare.out" 2>"$WORK/bare.log" &
BARE_PID=$!
PIDS+=("$BARE_PID")
listening="$(wait_for "$WORK/bare.out" '.event=="listening"' 30 "$BARE_PID")"
BARE_ADDR="$(jq -r '.addr' <<<"$listening")"
BARE_PIN="$(jq -r '.cert_sha256' <<<"$listening")"
timeout "$RUN_TIMEOUT" "${PIN_CLIENTS[@]}" "$LOAD_CLIENTS" --mode bare --addr "$BARE_ADDR" --cert-sha256 "$BARE_PIN" \
  --server-pid "$BARE_PID" --input-bytes "$INPUT_BYTES" "${load_args[@]}" >"$WORK/bare_clients.json" 2> >(tee "$WORK/bare_clients.log" >&2)
stop "$BARE_PID"
BARE_RESULT="$(tail -1 "$WORK/bare_clients.json")"
BARE_STOPPED="$(jq -c 'select(.event=="stopped")' "$WORK/bare.out" | tail -1)"
[ -n "$BARE_STOPPED" ] || BARE_STOPPED='{}'

# --- c. the table ----------------------------------------------------------------------------
jq -n --argjson shard "$SHARD_RESULT" --argjson bare "$BARE_RESULT" --argjson stopped "$STOPPED" \
  --argjson bare_stopped "$BARE_STOPPED" --argjson kicks "$KICKS" \
  '{shard: $shard, shard_stopped: $stopped, shard_kicks: $kicks, bare: $bare, bare_stopped: $bare_stopped}' \
  >"$WORK/results.json"
echo
jq -r --arg cores "$(nproc)" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
  '"Meridian load test: 1 shard at \(.shard.tick_hz) Hz, \(.shard.clients) clients (\(.shard.measured_clients) measured), window \(.shard.window_s) s; \($cores) CPUs (\($cpu)); server on CPU 0, clients on CPU 1"' \
  "$WORK/results.json"
echo
jq -r '
  def f(n): if n == null then "-" else (n * 1000 | round / 1000 | tostring) end;
  def row(a; b; c): "\(a)\t\(b)\t\(c)";
  # ksoftirqd of each CPU: loopback work of the senders on that CPU, done outside their own context.
  def soft(r): (r.ksoftirqd_pct // []) + [0, 0];
  # Busy time of each CPU not spent by the server (CPU 0), the clients (CPU 1) or ksoftirqd.
  def other(r): [((r.cpu_busy_pct // [0, 0])[0] - (r.server_cpu_pct // 0) - soft(r)[0]), ((r.cpu_busy_pct // [0, 0])[1] - (r.client_cpu_pct // 0) - soft(r)[1])];
  # Server CPU per client per tick with ksoftirqd/0 added (the same work, charged elsewhere).
  def with_soft(r): if (r.server_cpu_pct // 0) > 0 then r.server_cpu_us_per_client_tick * (r.server_cpu_pct + soft(r)[0]) / r.server_cpu_pct else null end;
  .shard as $s | .bare as $b | .shard_stopped as $st | .bare_stopped as $bs |
  (if ($s.server_cpu_us_per_client_tick // 0) > 0 and ($b.server_cpu_us_per_client_tick // 0) > 0
   then $s.server_cpu_us_per_client_tick / $b.server_cpu_us_per_client_tick else null end) as $ratio |
  (if (with_soft($s) // 0) > 0 and (with_soft($b) // 0) > 0 then with_soft($s) / with_soft($b) else null end) as $ratio_soft |
  row("figure"; "value"; "goal"),
  row("tick p99, ms (whole shard run)"; f($st.tick_p99_ms); "<= 8"),
  row("tick overruns (whole shard run)"; f($st.overruns); "-"),
  row("snapshots delivered, %"; f($s.delivered_pct); ">= 99"),
  row("  over clients not kicked, %"; f($s.delivered_pct_open_at_end); "-"),
  row("  of the server ticks the clients saw pass, %"; f($s.delivered_of_ticks_pct); "-"),
  row("  reached the clients QUIC stack, %"; f(100 * $s.quic_datagram_frames_rx / ($s.expected_per_client * $s.measured_clients)); "-"),
  row("clients kicked by the shard"; ((.shard_kicks // {}) | if length == 0 then "0" else (to_entries | map("\(.value) \(.key)") | join(", ")) end); "-"),
  row("server ticks/s seen by clients"; f($s.server_ticks_per_s); "30"),
  row("mean snapshot datagram, bytes"; f($s.mean_datagram_bytes); "-"),
  row("shard CPU, % of one core"; f($s.server_cpu_pct); "-"),
  row("shard CPU, us per client per tick"; f($s.server_cpu_us_per_client_tick); "-"),
  row("bare quinn CPU, % of one core"; f($b.server_cpu_pct); "-"),
  row("bare quinn CPU, us per client per tick"; f($b.server_cpu_us_per_client_tick); "-"),
  row("ratio shard / bare"; f($ratio); "<= 1.3"),
  row("  the same with ksoftirqd/0 added to each (us: shard / bare)"; "\(f($ratio_soft)) (\(f(with_soft($s))) / \(f(with_soft($b))))"; "<= 1.3"),
  row("bare quinn delivered, %"; f($b.delivered_pct); "-"),
  row("  reached the clients QUIC stack, %"; f(100 * $b.quic_datagram_frames_rx / ($b.expected_per_client * $b.measured_clients)); "-"),
  row("kernel UDP RcvbufErrors in window (shard / bare)"; "\(f($s.kernel_udp.RcvbufErrors)) / \(f($b.kernel_udp.RcvbufErrors))"; "-"),
  row("bare quinn send tick p99, ms"; f($bs.send_tick_ms.p99); "-"),
  row("client process CPU, % (shard run / bare run)"; "\(f($s.client_cpu_pct)) / \(f($b.client_cpu_pct))"; "-"),
  row("client tick lateness p99, ms (shard / bare)"; "\(f($s.client_tick_late_ms.p99)) / \(f($b.client_tick_late_ms.p99))"; "-"),
  row("CPU 0 / CPU 1 busy %, all processes (shard run)"; ($s.cpu_busy_pct // [] | map(tostring) | join(" / ")); "-"),
  row("CPU 0 / CPU 1 busy %, all processes (bare run)"; ($b.cpu_busy_pct // [] | map(tostring) | join(" / ")); "-"),
  row("ksoftirqd on CPU 0 / CPU 1, % (shard run / bare run)"; "\(soft($s)[0:2] | map(tostring) | join(" / ")) ; \(soft($b)[0:2] | map(tostring) | join(" / "))"; "-"),
  row("other load on CPU 0 / CPU 1, % (shard run)"; "\(f(other($s)[0])) / \(f(other($s)[1]))"; "~0"),
  row("other load on CPU 0 / CPU 1, % (bare run)"; "\(f(other($b)[0])) / \(f(other($b)[1]))"; "~0"),
  "",
  "shard threads, CPU s over the window: \($s.server_threads_cpu_s // {} | to_entries | map("\(.key)=\(.value)") | join(" "))",
  "bare threads, CPU s over the window:  \($b.server_threads_cpu_s // {} | to_entries | map("\(.key)=\(.value)") | join(" "))"
' "$WORK/results.json" | column -t -s $'\t'
jq -r '
  [.shard, .bare] | map(((.ksoftirqd_pct // []) + [0, 0]) as $k | ((.cpu_busy_pct // [0, 0])[0] - (.server_cpu_pct // 0) - $k[0]), ((.cpu_busy_pct // [0, 0])[1] - (.client_cpu_pct // 0) - $k[1])) | max
  | if . > 10 then "\nWARNING: other processes took up to \(. | round)% of a CPU during a window: the machine was shared; figures are perturbed" else empty end
' "$WORK/results.json"
echo
echo "results: $WORK/results.json (logs beside it)"
if [ "$PERF" -eq 1 ] && [ -f "$WORK/shard.perf.data" ]; then
  echo "profile: perf report -i $WORK/shard.perf.data --no-children --sort dso,sym"
fi
