#!/usr/bin/env bash
# Passes every test: the workspace's tests (simulator, scenarios, swarm, real processes,
# QEMU boards), and the no-alloc, thumbv7m build of the core with its footprint.
set -euo pipefail
cd "$(dirname "$0")/.."

# The core for a Cortex-M3, in release, linked into a firmware-shaped binary with no
# global allocator: any crate that links `alloc` fails this build.
./scripts/ci/footprint.sh

cargo test --workspace --release --locked
