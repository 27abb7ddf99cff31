#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, starting from the committed seed
# corpus, and fails on any crash.
#
#   scripts/ci/fuzz.sh [SECONDS_PER_TARGET]     default 20; CI's bounded run
#   scripts/ci/fuzz.sh 3600                     a long run: an hour per target
#   GOOSE_FUZZ_TARGETS="node_sequences" scripts/ci/fuzz.sh 600    some targets only
#
# The targets (fuzz/README.md says what each asserts): frame_decode, text_parse, auth_open,
# node_sequences, node_frames. First `cargo test` in fuzz/ checks that the committed corpus
# is what fuzz/src/seeds.rs generates and replays fuzz/regressions/. Then each target runs from a copy of fuzz/corpus/<target> in a temporary directory, so
# a run never adds files to the repository. A crash leaves its input in
# fuzz/artifacts/<target>/ (git-ignored) and the command that replays it is printed.
#
# Needs the nightly toolchain (cargo-fuzz builds with -Z flags) and installs cargo-fuzz if
# it is missing. Builds without a sanitizer by default: the core forbids unsafe code, and
# without ASan the flock target runs ~10x faster; GOOSE_FUZZ_SANITIZER=address turns it on.
# Debug assertions are on: the core's debug_asserts are invariants too. Honours
# CARGO_TARGET_DIR (the build goes in a `fuzz` directory under it), else target/fuzz.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
fi
read -r -a targets <<<"${GOOSE_FUZZ_TARGETS:-frame_decode text_parse auth_open node_sequences node_frames}"
sanitizer="${GOOSE_FUZZ_SANITIZER:-none}"
target_dir="$(mkdir -p "${CARGO_TARGET_DIR:-$root/target}" && cd "${CARGO_TARGET_DIR:-$root/target}" && pwd)/fuzz"

# The project installs what it needs.
if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$root/fuzz"
echo "== seed corpus and regressions (cargo test in fuzz/)"
# Not --locked: fuzz/Cargo.lock is this crate's own, and a dependency the core gains must
# not fail CI here before someone refreshes it (cargo fuzz build updates it the same way).
if ! cargo test --target-dir "$target_dir/test" >"$work/test.log" 2>&1; then
  tail -60 "$work/test.log"
  echo "FAILED: fuzz/ tests (a seed or a fixed regression fails its target, or a seed scenario no longer ends with its goose)"
  exit 1
fi
grep -E '^test result' "$work/test.log"

echo "== build: ${targets[*]} (release, debug assertions, sanitizer: $sanitizer)"
build_start=$SECONDS
# `cargo fuzz build` builds one target, or all of them.
one=()
[ "${#targets[@]}" -eq 1 ] && one=("${targets[0]}")
cargo +nightly fuzz build -a -s "$sanitizer" --target-dir "$target_dir" "${one[@]}"
host="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$host/release"
echo "   built in $((SECONDS - build_start)) s"

failed=()
summary=()
for target in "${targets[@]}"; do
  corpus="$work/corpus-$target"
  mkdir -p "$corpus" "$root/fuzz/artifacts/$target"
  cp "$root/fuzz/corpus/$target"/* "$corpus/"
  log="$work/$target.log"
  echo "== $target: ${seconds} s from $(ls "$corpus" | wc -l) seeds"
  status=0
  # -timeout: an input slower than 10 s is a hang; -rss_limit_mb: a leak or a blow-up.
  "$bin_dir/$target" "$corpus" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$root/fuzz/artifacts/$target/" >"$log" 2>&1 || status=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)"
  summary+=("$(printf '%-16s %12s execs %8s exec/s  %s  corpus %s' "$target" "${execs:-?}" "${rate:-?}" "${cov:-cov: ?}" "$(ls "$corpus" | wc -l)")")
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "!! $target crashed (exit $status):"
    # The panic message (with the flock's action trace) and libFuzzer's summary.
    grep -v -E '^\s+#[0-9]+ 0x|^\s+[0-9]+: |^\s+at ' "$log" | grep -v '^#[0-9]' | tail -60
    artifact="$(grep -o "Test unit written to .*" "$log" | sed 's/Test unit written to //' | tail -1)"
    if [ -n "$artifact" ]; then
      echo "   replay: (cd fuzz && cargo +nightly fuzz run -a -s $sanitizer $target ${artifact#"$root/fuzz/"})"
      [ "$target" = node_sequences ] &&
        echo "   trace:  (cd fuzz && cargo run --example replay -- ${artifact#"$root/fuzz/"})"
    fi
  fi
done

echo "== summary (${seconds} s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#targets[@]} passed, 0 failed"
