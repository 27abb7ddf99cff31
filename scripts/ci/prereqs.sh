#!/usr/bin/env bash
# What the tests need from the machine beyond Rust itself, checked before anything is built
# and installed when it can be, so that `./scripts/test.sh` alone readies a fresh Debian
# machine. The tests fail, never skip, without these; this check is what keeps a fresh
# machine from building for minutes and then failing on a missing tool.
#
#   scripts/ci/prereqs.sh [--check] [NAME...]
#
# Installs what is missing, printing one line per install: rustup targets and components
# always; Debian packages with apt-get when it runs as root or with passwordless sudo
# (`sudo -n true`). When it cannot install all of it (not root and no passwordless sudo, no
# apt-get, no rustup), or with --check (or GOOSE_NO_INSTALL=1, which `scripts/test.sh
# --no-install` sets), it installs nothing and prints one message: what is missing and the
# commands that install it. NAME... checks only those lines of the table
# (scripts/ci/footprint.sh asks for its own when it runs alone).
#
# Exit status: 0 all present (nothing printed), 1 something missing, 2 a usage error.
# GOOSE_PREREQS_TABLE=<file> reads the table from that file instead of the one below; the
# check's own test (scripts/ci/prereqs_test.sh) runs it on fake tables.
set -euo pipefail

# The table: one line per prerequisite, `kind name source`, then what needs it (for people;
# not parsed):
#
#   command   <name>    <Debian package>   runnable: on the PATH, or in /usr/sbin or /sbin,
#                                          where Debian puts root's tools (ip, keepalived)
#                                          that a user's PATH lacks
#   file      <path>    <Debian package>   exists
#   target    <triple>  rustup             a rustup target of the active toolchain
#   component <name>    rustup             a rustup component of the active toolchain
#
# A test that needs something new from the machine adds its line here, in the commit that
# adds the test, and nowhere else: `scripts/test.sh` and CI (`.ci/run`) then install it on a
# fresh machine, and a machine without it stops here with the command to run. List only what
# a test in the tree uses: every line is installed on every machine that runs the tests.
table() {
  cat <<'EOF'
command   nc                  netcat-openbsd   the demo scripts (scripts/*.sh) in tests/tests/processes.rs
command   qemu-system-arm     qemu-system-arm  the boards of the mixed flock: tests/tests/qemu.rs
command   ip                  iproute2         the soak's network namespaces: tests/tests/soak.rs, tests/tests/vip.rs, tests/tests/deploy.rs
command   keepalived          keepalived       the virtual IP side by side with keepalived: tests/tests/vip.rs
command   nft                 nftables         cutting only election traffic (VRRP, peer frames): tests/tests/vip.rs
command   arping              iputils-arping   the goose hooks' ARP announcement of the virtual IP: tests/tests/vip.rs
command   systemd-analyze     systemd          verifying deploy/goose.service: tests/tests/deploy.rs
target    thumbv7m-none-eabi  rustup           the board firmware (tests/tests/qemu.rs), scripts/ci/footprint.sh
target    thumbv7em-none-eabihf rustup         the NUCLEO-F429ZI firmware: scripts/ci/firmware_size.sh
component llvm-tools          rustup           llvm-size in scripts/ci/footprint.sh
command   tmux                tmux             the dashboard driven in tmux: node-std/tests/observability.rs
command   promtool            prometheus       /metrics checked: node-std/tests/observability.rs
command   prometheus          prometheus       /metrics scraped by a real Prometheus: node-std/tests/observability.rs
command   chromium            chromium         the --http page in headless Chromium: node-std/tests/observability.rs
command   python3             python3          the README's Python example: client/tests/readme.rs
EOF
}

me="scripts/ci/prereqs.sh"
usage() {
  echo "usage: $me [--check] [NAME...]${1:+ ($1)}" >&2
  exit 2
}

check_only=""
case "${GOOSE_NO_INSTALL:-}" in "" | 0) ;; *) check_only=1 ;; esac
wanted=()
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    -*) usage "unknown option $arg" ;;
    *) wanted+=("$arg") ;;
  esac
done

# The table as three parallel arrays, then the lines asked for (all by default).
if [ -n "${GOOSE_PREREQS_TABLE:-}" ]; then
  [ -r "$GOOSE_PREREQS_TABLE" ] || usage "cannot read GOOSE_PREREQS_TABLE=$GOOSE_PREREQS_TABLE"
  lines="$(cat "$GOOSE_PREREQS_TABLE")"
else
  lines="$(table)"
fi
kinds=()
names=()
sources=()
while read -r kind name source _; do
  case "$kind" in "" | "#"*) continue ;; esac
  case "$kind:$source" in
    command:?* | file:?* | target:rustup | component:rustup) ;;
    *) usage "bad table line: $kind $name $source" ;;
  esac
  kinds+=("$kind")
  names+=("$name")
  sources+=("$source")
done <<<"$lines"
selected=()
if [ "${#wanted[@]}" -eq 0 ]; then
  selected=("${!names[@]}")
else
  for want in "${wanted[@]}"; do
    found=""
    for i in "${!names[@]}"; do
      if [ "${names[$i]}" = "$want" ]; then
        selected+=("$i")
        found=1
      fi
    done
    [ -n "$found" ] || usage "no prerequisite named $want"
  done
fi

# rustup's lists, read once per pass (a target check costs one rustup call, not one each).
listed=""
rustup_targets=""
rustup_components=""
host=""
read_rustup_lists() {
  [ -z "$listed" ] || return 0
  listed=1
  if command -v rustup >/dev/null 2>&1; then
    rustup_targets="$(rustup target list --installed 2>/dev/null || true)"
    rustup_components="$(rustup component list --installed 2>/dev/null || true)"
  fi
  host="$(rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)"
}

present() { # index
  local name="${names[$1]}"
  case "${kinds[$1]}" in
    command) command -v "$name" >/dev/null 2>&1 || [ -x "/usr/sbin/$name" ] || [ -x "/sbin/$name" ] ;;
    file) [ -e "$name" ] ;;
    target)
      read_rustup_lists
      grep -qxF -- "$name" <<<"$rustup_targets"
      ;;
    component)
      # Listed as <name>-<host> (llvm-tools-x86_64-unknown-linux-gnu), or bare for
      # host-independent ones (rust-src); older toolchains add -preview.
      read_rustup_lists
      grep -qE -- "^$name(-preview)?(-$host)?\$" <<<"$rustup_components"
      ;;
  esac
}

describe() { # index
  case "${kinds[$1]}" in
    command | file) echo "Debian package ${sources[$1]}" ;;
    target) echo "rustup target" ;;
    component) echo "rustup component" ;;
  esac
}

missing=()
for i in "${selected[@]}"; do
  present "$i" || missing+=("$i")
done
[ "${#missing[@]}" -gt 0 ] || exit 0

# What is missing, by how it installs: the Debian packages (each once), the rustup lines.
apt_packages=()
rustup_missing=()
by_installer() {
  apt_packages=()
  rustup_missing=()
  for i in "${missing[@]}"; do
    case "${kinds[$i]}" in
      command | file)
        case " ${apt_packages[*]} " in
          *" ${sources[$i]} "*) ;;
          *) apt_packages+=("${sources[$i]}") ;;
        esac
        ;;
      *) rustup_missing+=("$i") ;;
    esac
  done
}
by_installer

uid="$(id -u)"
as_root=() # how apt-get runs: directly as root, else through sudo
reason=""
if [ -n "$check_only" ]; then
  reason="checking only, installing nothing"
else
  if [ "${#apt_packages[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
      reason="no apt-get to install the Debian packages with"
    elif [ "$uid" != 0 ]; then
      if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        as_root=(sudo -n)
      else
        reason="not root, and no passwordless sudo for apt-get"
      fi
    fi
  fi
  if [ "${#rustup_missing[@]}" -gt 0 ] && ! command -v rustup >/dev/null 2>&1; then
    reason="${reason:+$reason; }no rustup to add targets and components with"
  fi
fi

# One message: what is missing, and the commands that install it.
report() { # headline
  {
    echo "$me: $1:"
    for i in "${missing[@]}"; do
      printf '  %-22s %s\n' "${names[$i]}" "$(describe "$i")"
    done
    echo "install with:"
    if [ "${#apt_packages[@]}" -gt 0 ]; then
      if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$uid" = 0 ] || sudo="sudo "
        echo "  ${sudo}apt-get update && ${sudo}apt-get install -y ${apt_packages[*]}"
      else
        echo "  the Debian packages ${apt_packages[*]}, or this system's equivalents"
      fi
    fi
    if [ "${#rustup_missing[@]}" -gt 0 ] && ! command -v rustup >/dev/null 2>&1; then
      echo "  rustup (https://rustup.rs), then:"
    fi
    for i in "${rustup_missing[@]}"; do
      echo "  rustup ${kinds[$i]} add ${names[$i]}"
    done
  } >&2
}

if [ -n "$reason" ]; then
  report "missing what the tests need ($reason)"
  exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run_quietly() { # command...: its output only if it fails
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "$me: failed: $*" >&2
    exit 1
  fi
}
if [ "${#apt_packages[@]}" -gt 0 ]; then
  for i in "${missing[@]}"; do
    case "${kinds[$i]}" in
      command | file) echo "installing ${names[$i]} (apt: ${sources[$i]})" ;;
    esac
  done
  run_quietly "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  run_quietly "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq "${apt_packages[@]}"
fi
for i in "${rustup_missing[@]}"; do
  echo "installing ${names[$i]} (rustup ${kinds[$i]})"
  run_quietly rustup "${kinds[$i]}" add "${names[$i]}"
done

# A package that installed but does not provide what its line names is a wrong table line.
listed=""
still=()
for i in "${missing[@]}"; do
  present "$i" || still+=("$i")
done
if [ "${#still[@]}" -gt 0 ]; then
  missing=("${still[@]}")
  by_installer
  report "still missing after installing (does the table name the right package?)"
  exit 1
fi
