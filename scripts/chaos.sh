#!/usr/bin/env bash
# Chaos figures with a release build: the scenarios of tests/chaos.rs (real processes, a real
# redis-server on a free loopback port, never 6379) run against `target/release/meridian`, and
# the figures they measure printed.
#
#   scripts/chaos.sh [--bots N] [--scenarios LIST]
#
#   --bots N          bots playing through the faults (default 300)
#   --scenarios LIST  comma-separated, in order: kill,redis,freeze,zombie,drain (default kill)
#
# Figures (kill -9 of the shard of zone a under N bots):
# - recovery at the bots: last snapshot from the killed shard → first snapshot from the new
#   owner, p50/p99/max over the bots that were on it (the bots' report, `reconnects`), beside
#   the goal "p99 <= lease TTL + 2 s";
# - lease taken: kill → the standby holds the zone; all back: kill → every bot in play again
#   (the bots say so and the new owner holds each one active);
# - work lost: age of the restored checkpoint at the kill (how far back positions roll),
#   p50/p99/max, beside the checkpoint interval; committed score lost (asserted 0).
# Exits 0 when the run completed and its invariants held; the figures are reported, not judged.
set -euo pipefail
cd "$(dirname "$0")/.."

BOTS=300
SCENARIOS=kill
while [ $# -gt 0 ]; do
  case "$1" in
    --bots) BOTS="$2"; shift 2 ;;
    --scenarios) SCENARIOS="$2"; shift 2 ;;
    -h | --help)
      awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
      exit 0
      ;;
    *) printf 'unknown argument: %s (try --help)\n' "$1" >&2; exit 2 ;;
  esac
done

say() { printf '== %s\n' "$*" >&2; }

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

RUN_NAME=chaos
# shellcheck source=lib/procs.sh
source scripts/lib/procs.sh

say "cargo build --release --bin meridian"
cargo build --release --locked --bin meridian
FIGURES="$WORK/figures.json"
say "cargo test --test chaos (scenarios $SCENARIOS, $BOTS bots, release binary)"
CHAOS_BIN="$PWD/target/release/meridian" CHAOS_SCENARIOS="$SCENARIOS" CHAOS_BOTS="$BOTS" \
  CHAOS_TICK_HZ=30 CHAOS_RAMP=50 CHAOS_FIGURES="$FIGURES" timeout 1800 \
  cargo test --locked -p meridian --test chaos -- --nocapture --test-threads 1 >&2

f() { jq -r "$1" "$FIGURES"; }
ttl_ms=3000
row() { printf '%-40s %10s %10s %10s  %s\n' "$@"; }
ms() { printf '%.0f' "$(f "$1")"; }
secs() { printf '%.2f' "$(f "$1")"; }
printf '\nchaos figures: %s bots, %s Hz, checkpoint every %s ms, lease TTL %s ms (release build, %s CPUs)\n' \
  "$(f .bots)" "$(f .tick_hz)" "$(f .checkpoint_ms)" "$ttl_ms" "$(nproc)"
row figure p50 p99 max goal
# The bots' reconnects cover the whole run: the kill's recovery alone when only it ran.
if [ "$SCENARIOS" = kill ]; then what="recovery after kill -9 (ms)"; else what="out of play per reconnect, all (ms)"; fi
row "$what" "$(ms .reconnects.out_ms_p50)" "$(ms .reconnects.out_ms_p99)" \
  "$(ms .reconnects.out_ms_max)" "p99 <= $((ttl_ms + 2000))"
if [ "$(f '.kill // empty')" != "" ]; then
  row "checkpoint age at the kill (ms)" "$(ms .kill.checkpoint_age_ms.p50)" \
    "$(ms .kill.checkpoint_age_ms.p99)" "$(ms .kill.checkpoint_age_ms.max)" \
    "<= $(f .checkpoint_ms) (+ write time)"
  row "committed score lost" "$(f .kill.score_lost)" "" "" "0"
  row "players with a score at the kill" "$(f .kill.scored_players)"
  row "bots on the killed shard" "$(f .kill.victim_players)"
  row "kill -> lease taken (s)" "$(secs .kill.lease_taken_s)"
  row "kill -> every bot in play (s)" "$(secs .kill.all_back_s)"
fi
if [ "$(f '.redis // empty')" != "" ]; then
  row "redis restart -> every bot in play (s)" "$(secs .redis.all_back_after_restart_s)"
fi
if [ "$(f '.freeze // empty')" != "" ]; then
  row "redis thaw -> every bot in play (s)" "$(secs .freeze.all_back_after_thaw_s)"
fi
for s in zombie drain; do
  if [ "$(f ".$s // empty")" != "" ]; then
    row "$s -> every bot in play (s)" "$(secs ".$s.all_back_s")"
  fi
done
printf '%-40s %10s (failed %s)\n' "reconnects" "$(f .reconnects.count)" "$(f .reconnects.failed)"
