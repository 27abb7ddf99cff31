#!/bin/sh
# Usage: find_goose.sh [port...]   (default 9900-9904)
# Prints "<port>: <role>" per port: goose, duck, or - (no answer). All ports are asked at
# once, so this takes about a second whatever their number.
set -u
. "$(dirname "$0")/goose_lib.sh"

[ $# -eq 0 ] && set -- 9900 9901 9902 9903 9904
replies=$(mktemp -d) || exit 1
trap 'rm -rf "$replies"' EXIT INT TERM
for port in "$@"; do
    goose_send "$port" whois-goose >"$replies/$port" &
done
wait
for port in "$@"; do
    read -r role _ <"$replies/$port" || role=-
    case $role in
        goose | duck) ;;
        *) role=- ;;
    esac
    printf '%s: %s\n' "$port" "$role"
done
