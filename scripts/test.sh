#!/usr/bin/env bash
# Every check and test paygate has: format, lints, unit and end-to-end tests.
# The end-to-end tests start real paygate processes on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
