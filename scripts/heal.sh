#!/bin/sh
# Usage: heal.sh [port...]   (default 9900-9904)
# Tells each node to drop no peer traffic any more. Exit 1 if a node did not say ok.
set -u
. "$(dirname "$0")/goose_lib.sh"

[ $# -eq 0 ] && set -- 9900 9901 9902 9903 9904
status=0
for port in "$@"; do
    goose_ctl "$port" heal || status=1
done
exit $status
