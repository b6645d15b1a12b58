#!/usr/bin/env bash
# Handoff benchmark: two shards in one world (a throwaway redis-server on a free loopback port,
# never 6379), bots walking across their border; prints one table.
#
#   scripts/handoff.sh [--quick] [--bots N] [--duration S] [other flags of the bench]
#
#   --quick        10 s of sustained load instead of 60 (blackouts still over 200 handoffs)
#   --bots N       bots of the sustained-rate phase (default 300)
#   --duration S   seconds of the sustained-rate window (default 60)
#   --help         every flag of the bench (blackout bots and handoffs, RTT, tick rate…)
#
# 1. blackout at the client (last snapshot from the old shard → first from the new one),
#    p50/p99/max over >= 200 handoffs, on loopback and at 40 ms RTT through the link
#    conditioner, beside the goal "2 ticks + one client RTT" (RTT measured in the same phase);
# 2. sustained handoffs/s of N bots oscillating between x = 197 and x = 203 on one runtime,
#    failures, bots lost, the ownership audit after the run, and the shards' tick p99 and the
#    CPU of the process, of redis-server and of the machine.
# Runs `cargo bench --bench handoff` (the bench profile: optimized, thin LTO). Exits 0 when the
# run completed: the figures are reported, not judged. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

for a in "$@"; do
  case "$a" in
    -h | --help)
      awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
      echo
      ;;
  esac
done

if ! command -v redis-server >/dev/null 2>&1; then
  printf '== installing redis-server\n' >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

printf '== cargo bench --bench handoff -- %s\n' "$*" >&2
exec timeout 3600 cargo bench -p meridian --bench handoff -- "$@"
