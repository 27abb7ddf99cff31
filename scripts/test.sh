#!/usr/bin/env bash
# Passes every test: the workspace's tests (simulator, scenarios, swarm, real processes,
# QEMU boards), the no-alloc, thumbv7m build of the core with its footprint, and both
# board firmwares within their budgets.
#
#   ./scripts/test.sh                  installs what the tests need if missing, then tests
#   ./scripts/test.sh --no-install     installs nothing: stops at once if something is missing
#   ./scripts/test.sh --prereqs-only   stops after the prerequisites and their own test
set -euo pipefail
cd "$(dirname "$0")/.."

prereqs_only=""
for arg in "$@"; do
  case "$arg" in
    # Exported: scripts/ci/footprint.sh checks its own prerequisites again.
    --no-install) export GOOSE_NO_INSTALL=1 ;;
    --prereqs-only) prereqs_only=1 ;;
    *)
      echo "usage: $0 [--no-install] [--prereqs-only]" >&2
      exit 2
      ;;
  esac
done

# Before anything is built: what the tests need from the machine (nc, qemu-system-arm, ip,
# the thumbv7m target, …), installed or named with the command that installs it. A test
# that needs something new adds its line to the table in scripts/ci/prereqs.sh.
echo "== prerequisites (scripts/ci/prereqs.sh)"
./scripts/ci/prereqs.sh
echo "ok: everything the tests need is here"
# The check's own test, which runs this script again with a tool hidden: not from there.
if [ -z "${GOOSE_PREREQS_SELFTEST:-}" ]; then
  ./scripts/ci/prereqs_test.sh
fi
[ -z "$prereqs_only" ] || exit 0

# The core for a Cortex-M3, in release, linked into a firmware-shaped binary with no
# global allocator: any crate that links `alloc` fails this build.
./scripts/ci/footprint.sh

# Both board firmwares, sized against their budgets: QEMU's (tests/tests/qemu.rs finds its
# release ELF in its own target dir, whatever CARGO_TARGET_DIR says) and the NUCLEO-F429ZI's.
./scripts/ci/firmware_size.sh

cargo test --workspace --release --locked
