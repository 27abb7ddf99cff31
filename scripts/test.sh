#!/usr/bin/env bash
# Passes every test: the workspace's tests (simulator, scenarios, swarm, real processes,
# QEMU boards), and the no-alloc, thumbv7m build of the core with its footprint.
set -euo pipefail
cd "$(dirname "$0")/.."

# The core for a Cortex-M3, in release, linked into a firmware-shaped binary with no
# global allocator: any crate that links `alloc` fails this build.
./scripts/ci/footprint.sh

# The board firmware, for the QEMU tests (tests/tests/qemu.rs finds its release ELF there).
# Its own target dir, where the tests look, whatever CARGO_TARGET_DIR says.
(cd node-embedded/firmware && env -u CARGO_TARGET_DIR cargo build --release --locked)

cargo test --workspace --release --locked
