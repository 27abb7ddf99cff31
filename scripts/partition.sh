#!/bin/sh
# Usage: partition.sh "9900,9901|9902,9903,9904"
# Splits the flock into sides separated by "|": every node of a side is told to drop
# peer traffic to and from every node of the other sides (named 127.0.0.1:<port>).
# Replaces any earlier partition; undo with heal.sh. Exit 1 if a node did not say ok.
set -u
. "$(dirname "$0")/goose_lib.sh"

case ${1:-} in
    *'|'*) ;;
    *)
        echo "usage: $0 \"<port>,<port>|<port>,...\"" >&2
        exit 2
        ;;
esac
spec=$1
status=0
sides=$(printf '%s\n' "$spec" | tr '|' ' ')
for side in $sides; do
    others=""
    for other in $sides; do
        [ "$other" = "$side" ] && continue
        for port in $(printf '%s\n' "$other" | tr ',' ' '); do
            others="${others:+$others,}$GOOSE_HOST:$port"
        done
    done
    for port in $(printf '%s\n' "$side" | tr ',' ' '); do
        goose_ctl "$port" partition "$others" || status=1
    done
done
exit $status
