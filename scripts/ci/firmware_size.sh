#!/usr/bin/env bash
# Builds both board firmwares in release and prints what each takes of its chip; fails if
# the QEMU firmware (the one the tests run) grows past its budget.
#
#   scripts/ci/firmware_size.sh
#
# - node-embedded/firmware: QEMU's lm3s6965evb (thumbv7m-none-eabi), the firmware
#   tests/tests/qemu.rs runs, in its own target dir, where the tests look for it. Budget:
#   FLASH_MAX bytes of flash (vector table + text + rodata + the .data image) and
#   STATIC_RAM_MAX bytes of static RAM (.data + .bss + .uninit); its peak stack comes on
#   top, held to 19 KiB by a QEMU test (tests/tests/qemu.rs; node-embedded/README.md,
#   "Footprint").
# - node-embedded/nucleo-f429zi: the NUCLEO-F429ZI (thumbv7em-none-eabihf). Built and
#   sized only: nothing here runs it.
#
# Exits non-zero if a build fails or the QEMU firmware is over budget.
set -euo pipefail

# The QEMU firmware's budget: today's figures rounded up to the KiB (node-embedded/
# README.md, "How far the flash can go", says why the 64 KiB flash target is not met).
# Lower them as it shrinks. The static RAM holds no board: the firmware keeps it in
# `main`'s frame, so it counts in the measured peak stack instead.
FLASH_MAX=$((83 * 1024))
STATIC_RAM_MAX=$((12 * 1024))

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$root/scripts/ci/prereqs.sh" thumbv7m-none-eabi thumbv7em-none-eabihf llvm-tools

host="$(rustc -vV | sed -n 's/^host: //p')"
llvm_size="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-size"
[[ -x "$llvm_size" ]] || llvm_size=size

sizes() { # elf: prints "flash static_ram"
  "$llvm_size" -A "$1" | awk '
    $1 == ".vector_table" || $1 == ".text" || $1 == ".rodata" { flash += $2 }
    $1 == ".data" { flash += $2; ram += $2 }
    $1 == ".bss" || $1 == ".uninit" { ram += $2 }
    END { print flash + 0, ram + 0 }'
}

build() { # folder: builds it in release with its own lock and target dir
  echo "== build: $1 (release, --locked)"
  (cd "$root/$1" && env -u CARGO_TARGET_DIR cargo build --release --locked)
}

build node-embedded/firmware
build node-embedded/nucleo-f429zi
qemu_elf="$root/node-embedded/firmware/target/thumbv7m-none-eabi/release/goose-firmware"
nucleo_elf="$root/node-embedded/nucleo-f429zi/target/thumbv7em-none-eabihf/release/goose-nucleo-f429zi"
read -r qemu_flash qemu_ram < <(sizes "$qemu_elf")
read -r nucleo_flash nucleo_ram < <(sizes "$nucleo_elf")

echo
echo "| firmware | flash (bytes) | static RAM (bytes) |"
echo "| --- | ---: | ---: |"
echo "| QEMU lm3s6965evb (budget $FLASH_MAX / $STATIC_RAM_MAX) | $qemu_flash | $qemu_ram |"
echo "| NUCLEO-F429ZI (built, never run here) | $nucleo_flash | $nucleo_ram |"
echo

status=0
if ((qemu_flash > FLASH_MAX)); then
  echo "FAIL: the QEMU firmware takes $qemu_flash bytes of flash, over its $FLASH_MAX" >&2
  status=1
fi
if ((qemu_ram > STATIC_RAM_MAX)); then
  echo "FAIL: the QEMU firmware takes $qemu_ram bytes of static RAM, over its $STATIC_RAM_MAX" >&2
  status=1
fi
exit "$status"
