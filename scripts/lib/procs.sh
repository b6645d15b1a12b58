# Shared by scripts/load.sh and scripts/bench.sh: CPU pinning and the child processes of a run.
# Source it after defining `say`.

# Pinning: the server on CPU 0, the clients on CPU 1 (when the machine has two).
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
  PIN_SERVER=(taskset -c 0)
  PIN_CLIENTS=(taskset -c 1)
else
  say "fewer than 2 CPUs or no taskset: not pinning (figures will be noisier)"
  PIN_SERVER=()
  PIN_CLIENTS=()
fi

# A scratch directory, and the children started into PIDS: stopped (TERM, then KILL after 5 s)
# when the script exits, whatever the reason.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/meridian-${RUN_NAME:-run}.XXXXXX")"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.5
  done
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
