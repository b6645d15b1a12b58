#!/usr/bin/env bash
# Runs every check and test of Meridian, installing what a fresh machine lacks.
# Usage: scripts/test.sh            (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# --- tools the tests need -----------------------------------------------------------------
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
# tests/report_html.rs opens the bots' HTML report in a headless browser.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${need_apt[@]}"
fi
# The test suite starts its own redis-server on free ports; it never uses the machine's 6379.

if ! cargo fmt --version >/dev/null 2>&1; then
  say "installing rustfmt"
  rustup component add rustfmt
fi
if ! cargo clippy --version >/dev/null 2>&1; then
  say "installing clippy"
  rustup component add clippy
fi

# --- checks ----------------------------------------------------------------------------------
say "cargo fmt --all --check"
cargo fmt --all --check

say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The chaos suite (tests/chaos.rs) runs the release binary: 300 bots through a kill -9, a Redis
# outage, a frozen Redis, a zombie shard and a drain, at the real 30 Hz (the debug build cannot
# hold that many bots on two cores). bench.sh below reuses this build.
say "cargo build --release --bin meridian"
cargo build --release --locked -p meridian --bin meridian

say "cargo test --workspace"
CHAOS_BIN="$PWD/target/release/meridian" CHAOS_BOTS=300 CHAOS_TICK_HZ=30 CHAOS_RAMP=50 \
  cargo test --workspace --locked

# The bench suite, short: keeps every measurement runnable (figures are not judged here).
say "scripts/bench.sh --quick"
scripts/bench.sh --quick

say "all checks passed"
