#!/usr/bin/env bash
# Proves goose-core builds for a Cortex-M3 (thumbv7m-none-eabi) in release with neither std
# nor alloc, and prints the flash and RAM it costs.
#
#   scripts/ci/footprint.sh
#
# It builds core/footprint, a firmware image that links the whole core (Node<_, 5, 32>, the
# wire codec, the text protocol) with no #[global_allocator]:
#
# 1. the build must succeed: any crate in the graph that linked `alloc` would fail it with
#    rustc's "no global memory allocator" error, and an image that overflowed memory.x
#    (256 KiB flash, 64 KiB RAM, the lm3s6965) would fail the link;
# 2. the same image with the `alloc-canary` feature, which links `alloc` on purpose, must
#    fail with exactly that error, so the proof in (1) is known to be live;
# 3. the section sizes are printed, and checked against the core's budget (CORE_FLASH_MAX,
#    CORE_STATIC_RAM_MAX below).
#
# Exits non-zero if (1) or (2) does not hold, or the image is over budget. Honours CARGO_TARGET_DIR (the image goes in a
# `footprint` directory under it), else uses target/footprint at the repository root.
set -euo pipefail

# The core image's budget, today's figures rounded up to the KiB: the core is most of a
# board's firmware (node-embedded/README.md, "Footprint"). Lower them as it shrinks. 44 KiB
# since the core parses and writes socket addresses itself, sorts by insertion and decodes
# the state in place; 45 KiB once it writes probe replies without `write!` and tells a
# quiescent leader (+384 bytes); 41 KiB once every reply is written without `write!`.
CORE_FLASH_MAX=$((41 * 1024))
CORE_STATIC_RAM_MAX=$((6 * 1024))

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
crate="$root/core/footprint"
target=thumbv7m-none-eabi
target_dir="$(mkdir -p "${CARGO_TARGET_DIR:-$root/target}" && cd "${CARGO_TARGET_DIR:-$root/target}" && pwd)/footprint"
elf="$target_dir/$target/release/goose-footprint"

# A fresh machine has neither; scripts/test.sh has checked them already, this is for a run
# of this script alone.
"$root/scripts/ci/prereqs.sh" "$target" llvm-tools

cd "$crate" # cargo reads .cargo/config.toml (target, link.x) from here
echo "== build: $target, release (opt-level z, lto, 1 codegen unit, panic abort), no allocator"
cargo build --release --locked --target-dir "$target_dir"

host="$(rustc -vV | sed -n 's/^host: //p')"
llvm_size="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-size"
if [[ -x "$llvm_size" ]]; then
  sections="$("$llvm_size" -A "$elf")"
else
  sections="$(size -A "$elf")"
fi
section() { # the size of section $1, 0 if absent
  awk -v name="$1" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }' <<<"$sections"
}
vector_table="$(section .vector_table)"
text="$(section .text)"
rodata="$(section .rodata)"
data="$(section .data)"
bss="$(section .bss)"
uninit="$(section .uninit)"

echo "== alloc canary: the same image linking alloc must not build"
canary_log="$(mktemp)"
trap 'rm -f "$canary_log"' EXIT
if cargo build --release --locked --target-dir "$target_dir" --features alloc-canary \
  >"$canary_log" 2>&1; then
  echo "FAIL: the alloc canary built, so a missing allocator is not detected" >&2
  exit 1
fi
if ! grep -q "no global memory allocator" "$canary_log"; then
  echo "FAIL: the alloc canary failed for another reason:" >&2
  cat "$canary_log" >&2
  exit 1
fi
echo "ok: rustc refuses it (no global memory allocator), so the image above links no alloc"

echo
echo "| goose-core on $target | bytes |"
echo "| --- | ---: |"
echo "| flash: .text + .rodata | $((text + rodata)) |"
echo "| flash: + .vector_table + .data image (what is burned) | $((vector_table + text + rodata + data)) |"
echo "| RAM: .data + .bss + .uninit (static; the stack comes on top) | $((data + bss + uninit)) |"
echo
echo "sections: .vector_table=$vector_table .text=$text .rodata=$rodata .data=$data .bss=$bss .uninit=$uninit"
echo "image: $elf"
flash=$((vector_table + text + rodata + data))
ram=$((data + bss + uninit))
if ((flash > CORE_FLASH_MAX || ram > CORE_STATIC_RAM_MAX)); then
  echo "FAIL: the core image takes $flash bytes of flash and $ram of static RAM, over its budget of $CORE_FLASH_MAX and $CORE_STATIC_RAM_MAX" >&2
  exit 1
fi
echo "ok: within the core's budget ($CORE_FLASH_MAX bytes of flash, $CORE_STATIC_RAM_MAX of static RAM)"
