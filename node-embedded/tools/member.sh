#!/bin/sh
# Starts one member of a 5-node mixed flock on 127.0.0.1:9900-9904 in the background and
# prints its pid (the goose process, or the QEMU process for a board).
#
#   node-embedded/tools/member.sh node|board <id 1..5> <work dir>
#
# Desktop nodes run target/release/goose (`cargo build --release -p goose`); boards run
# the firmware (`cd node-embedded/firmware && cargo build --release`) with exactly the QEMU
# command line of ../README.md. State goes in <work dir>/<id>/, logs in <work dir>/<id>.log.
# GOOSE and FIRMWARE override the binaries' paths.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
goose=${GOOSE:-${CARGO_TARGET_DIR:-$root/target}/release/goose}
firmware=${FIRMWARE:-$root/node-embedded/firmware/target/thumbv7m-none-eabi/release/goose-firmware}
kind=$1 id=$2 work=$3
port=$((9899 + id))
peers=""
for peer in 1 2 3 4 5; do
  [ "$peer" = "$id" ] || peers="$peers --peer $peer=127.0.0.1:$((9899 + peer))"
done
mkdir -p "$work/$id"
case $kind in
node)
  # shellcheck disable=SC2086 # $peers is a list of words
  RUST_LOG=info "$goose" node --id "$id" --listen "127.0.0.1:$port" $peers \
    --data-dir "$work/$id" >>"$work/$id.log" 2>&1 </dev/null &
  ;;
board)
  seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
  qemu-system-arm -M lm3s6965evb -nographic -monitor none \
    -semihosting-config enable=on,target=native \
    -nic "user,model=stellaris,mac=02:00:00:00:00:0$id,hostfwd=udp:127.0.0.1:$port-:$port" \
    -kernel "$firmware" \
    -append "--id $id --port $port --seed $seed$peers --state $work/$id/board.flash" \
    >>"$work/$id.log" 2>&1 </dev/null &
  ;;
*)
  echo "usage: $0 node|board <id 1..5> <work dir>" >&2
  exit 2
  ;;
esac
echo $!
