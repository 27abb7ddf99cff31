#!/usr/bin/env bash
# The prerequisite check's own test: scripts/ci/prereqs.sh and scripts/test.sh, run with a
# controlled PATH, must name what is missing with the command that installs it and stop
# before anything is built, and must install (through fake apt-get, sudo and rustup) exactly
# what is missing, one line each. Nothing real is installed and nothing is built.
#
#   scripts/ci/prereqs_test.sh
#
# scripts/test.sh runs it right after the real check passed: the cases on the real table
# hide `nc` and expect it alone to be missing, so on a machine that lacks more they fail.
# Takes a few seconds; exits non-zero on the first failed case.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
calls="$work/calls" # what the fakes were asked to do, one file per fake
fakes="$work/fakes" # first on the PATH: id, sudo, apt-get, cargo, and rustup when faked
shadow="$work/shadow" # everything else on this PATH, as symlinks, minus the hidden tools
state="$work/state"   # the fake rustup's installed targets and components
mkdir -p "$calls" "$fakes" "$shadow" "$state"

host="$(rustc -vV | sed -n 's/^host: //p')"

# The shadow PATH: one directory with a symlink to the first of each name on PATH.
IFS=: read -r -a path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}"; do
  [ -d "$dir" ] || continue
  # Names already linked from an earlier directory are refused, as PATH order wants.
  ln -s -t "$shadow" -- "$dir"/* 2>/dev/null || true
done

# `id -u` answers $FAKE_UID: the check decides between apt-get and sudo by it.
cat >"$fakes/id" <<'EOF'
#!/bin/sh
if [ "$1" = -u ]; then echo "$FAKE_UID"; else exec /usr/bin/id "$@"; fi
EOF
# sudo: passwordless when FAKE_SUDO=ok, else it asks for a password (and so fails with -n).
cat >"$fakes/sudo" <<'EOF'
#!/bin/sh
echo "$*" >>"$FAKE_CALLS/sudo"
if [ "${FAKE_SUDO:-}" != ok ]; then echo "sudo: a password is required" >&2; exit 1; fi
[ "$1" = -n ] && shift
exec "$@"
EOF
# apt-get: records its environment and arguments; installing package <tool>-pkg provides
# the command <tool>, any other package provides nothing.
cat >"$fakes/apt-get" <<'EOF'
#!/bin/sh
echo "DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-} $*" >>"$FAKE_CALLS/apt-get"
if [ "$1" = install ]; then
  for package in "$@"; do
    case "$package" in
      *-pkg) printf '#!/bin/sh\n' >"$FAKE_BIN/${package%-pkg}"; chmod +x "$FAKE_BIN/${package%-pkg}" ;;
    esac
  done
fi
EOF
# cargo: a tripwire. The check runs before anything is built, so it is never called.
cat >"$fakes/cargo" <<'EOF'
#!/bin/sh
echo "$*" >>"$FAKE_CALLS/cargo"
echo "cargo called: $*" >&2
exit 1
EOF
# rustup, for the fake tables only: lists and adds to $FAKE_STATE/{target,component}.
mkdir -p "$work/fake-rustup"
cat >"$work/fake-rustup/rustup" <<'EOF'
#!/bin/sh
echo "$*" >>"$FAKE_CALLS/rustup"
case "$1 $2" in
  "target list") cat "$FAKE_STATE/target" ;;
  "component list") sed "s/\$/-$FAKE_HOST/" "$FAKE_STATE/component" ;;
  "target add" | "component add") echo "$3" >>"$FAKE_STATE/$1" ;;
  *) echo "fake rustup: $*" >&2; exit 1 ;;
esac
EOF
chmod +x "$fakes"/* "$work/fake-rustup/rustup"

case_name=""
out="$work/out"
status=0
fail() {
  echo "FAIL: prereqs_test: $case_name: $*" >&2
  echo "--- output:" >&2
  cat "$out" >&2
  for file in "$calls"/*; do
    [ -e "$file" ] && { echo "--- ${file##*/} was called:" >&2; cat "$file" >&2; }
  done
  exit 1
}

# run NAME HIDDEN UID SUDO RUSTUP TABLE -- COMMAND...: one case, from a clean slate.
# HIDDEN: the names missing from the shadow PATH; RUSTUP: real or fake; TABLE: a file or "".
run() {
  case_name="$1"
  local hidden="$2" uid="$3" sudo="$4" rustup="$5" table="$6"
  shift 7
  rm -f "$calls"/* "$work/bin"/*
  mkdir -p "$work/bin"
  printf '%s\n' "x86_64-unknown-linux-gnu" >"$state/target"
  printf '%s\n' "rustc" >"$state/component"
  local path="$fakes:$work/bin:$shadow"
  [ "$rustup" = fake ] && path="$work/fake-rustup:$path"
  for name in $hidden; do
    rm -f "$shadow/$name"
  done
  status=0
  (cd "$root" && env -u GOOSE_NO_INSTALL PATH="$path" FAKE_UID="$uid" FAKE_SUDO="$sudo" \
    FAKE_CALLS="$calls" FAKE_BIN="$work/bin" FAKE_STATE="$state" FAKE_HOST="$host" \
    GOOSE_PREREQS_TABLE="$table" GOOSE_PREREQS_SELFTEST=1 "$@") >"$out" 2>&1 || status=$?
  for name in $hidden; do
    ln -s "$(command -v "$name")" "$shadow/$name"
  done
}
expect_status() { [ "$status" = "$1" ] || fail "exit status $status, expected $1"; }
expect_line() { grep -qxF -- "$1" "$out" || fail "no line: $1"; }
expect_no() { ! grep -qF -- "$1" "$out" || fail "unexpected: $1"; }
expect_output() { [ "$(cat "$out")" = "$1" ] || fail "expected exactly:"$'\n'"$1"; }
expect_calls() { # fake, exactly these lines (none: "")
  local got=""
  [ -e "$calls/$1" ] && got="$(cat "$calls/$1")"
  [ "$got" = "$2" ] || fail "$1 calls:"$'\n'"$got"$'\n'"expected:"$'\n'"$2"
}

# The real table, nc hidden, a user without sudo: the check alone, checking only.
run "check only, nc hidden" "nc" 1000 no real "" -- scripts/ci/prereqs.sh --check
expect_status 1
expect_line "scripts/ci/prereqs.sh: missing what the tests need (checking only, installing nothing):"
expect_line "  nc                     Debian package netcat-openbsd"
expect_line "  sudo apt-get update && sudo apt-get install -y netcat-openbsd"
expect_no "qemu-system-arm"
expect_calls sudo ""
expect_calls apt-get ""

# The README's test command, the same user: stops before building, installs nothing.
run "test.sh, nc hidden, no root, no sudo" "nc" 1000 no real "" -- scripts/test.sh
expect_status 1
expect_line "scripts/ci/prereqs.sh: missing what the tests need (not root, and no passwordless sudo for apt-get):"
expect_line "  nc                     Debian package netcat-openbsd"
expect_line "  sudo apt-get update && sudo apt-get install -y netcat-openbsd"
expect_no "ok: everything the tests need is here"
expect_calls apt-get ""
expect_calls cargo ""

# As root, --no-install: the command has no sudo, and nothing is installed or built.
run "test.sh --no-install, nc hidden, root" "nc" 0 no real "" -- scripts/test.sh --no-install
expect_status 1
expect_line "  nc                     Debian package netcat-openbsd"
expect_line "  apt-get update && apt-get install -y netcat-openbsd"
expect_calls sudo ""
expect_calls apt-get ""
expect_calls cargo ""

# A fake table: two tools from apt, one already there, a rustup target and component.
table="$work/table"
cat >"$table" <<EOF
# kind    name               source
command   ddg-fake-a         ddg-fake-a-pkg   a test
command   sh                 dash             present: never mentioned
file      $root/README.md    ddg-readme       present too
command   ddg-fake-b         ddg-fake-b-pkg
target    ddg-fake-target    rustup
component ddg-fake-comp      rustup
EOF

# As root: apt-get update once, one install of both packages, one line per install.
run "fake table, root" "" 0 no fake "$table" -- scripts/ci/prereqs.sh
expect_status 0
expect_output "installing ddg-fake-a (apt: ddg-fake-a-pkg)
installing ddg-fake-b (apt: ddg-fake-b-pkg)
installing ddg-fake-target (rustup target)
installing ddg-fake-comp (rustup component)"
expect_calls apt-get "DEBIAN_FRONTEND=noninteractive update -qq
DEBIAN_FRONTEND=noninteractive install -y -qq ddg-fake-a-pkg ddg-fake-b-pkg"
expect_calls sudo ""
grep -qx "target add ddg-fake-target" "$calls/rustup" || fail "no rustup target add"
grep -qx "component add ddg-fake-comp" "$calls/rustup" || fail "no rustup component add"

# Everything present: silent, and apt-get is not even updated.
cat >"$work/table-present" <<EOF
command   sh                 dash
target    ddg-fake-target    rustup
EOF
# shellcheck disable=SC2016 # expanded by that sh, in the fake environment
run "fake table, all present" "" 0 no fake "$work/table-present" -- \
  sh -c 'echo ddg-fake-target >>"$FAKE_STATE/target" && scripts/ci/prereqs.sh'
expect_status 0
expect_output ""
expect_calls apt-get ""

# A user with passwordless sudo: apt-get through sudo -n.
run "fake table, sudo" "" 1000 ok fake "$table" -- scripts/ci/prereqs.sh ddg-fake-a
expect_status 0
expect_output "installing ddg-fake-a (apt: ddg-fake-a-pkg)"
expect_calls sudo "-n true
-n env DEBIAN_FRONTEND=noninteractive apt-get update -qq
-n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ddg-fake-a-pkg"

# A user without sudo: one message with every missing line, and nothing installed, not even
# the rustup target it could have added.
run "fake table, no root, no sudo" "" 1000 no fake "$table" -- scripts/ci/prereqs.sh
expect_status 1
expect_line "  ddg-fake-a             Debian package ddg-fake-a-pkg"
expect_line "  ddg-fake-target        rustup target"
expect_line "  sudo apt-get update && sudo apt-get install -y ddg-fake-a-pkg ddg-fake-b-pkg"
expect_line "  rustup target add ddg-fake-target"
expect_line "  rustup component add ddg-fake-comp"
expect_no "installing"
expect_no "  sh "
expect_calls apt-get ""
grep -q "add" "$calls/rustup" && fail "rustup added something"

# A line whose package does not provide its tool: named after the install.
cat >"$work/table-wrong" <<EOF
command   ddg-fake-c         ddg-nothing
EOF
run "fake table, wrong package" "" 0 no fake "$work/table-wrong" -- scripts/ci/prereqs.sh
expect_status 1
expect_line "installing ddg-fake-c (apt: ddg-nothing)"
expect_line "scripts/ci/prereqs.sh: still missing after installing (does the table name the right package?):"
expect_line "  ddg-fake-c             Debian package ddg-nothing"

# A name that is not in the table is a usage error.
run "unknown name" "" 0 no fake "$table" -- scripts/ci/prereqs.sh ddg-no-such-line
expect_status 2
expect_calls apt-get ""

echo "ok: prereqs_test: 9 cases"
