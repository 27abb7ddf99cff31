#!/bin/sh
# Usage: startstop.sh <port> start|stop
# stop: the node goes silent to its peers (keeps answering probes and control);
# start: it resumes from its persisted state as a follower. Exit 1 on err or no reply.
set -u
. "$(dirname "$0")/goose_lib.sh"

if [ $# -ne 2 ]; then
    echo "usage: $0 <port> start|stop" >&2
    exit 2
fi
case $2 in
    start | stop) ;;
    *)
        echo "usage: $0 <port> start|stop" >&2
        exit 2
        ;;
esac
goose_ctl "$1" "$2"
