# Shared by the scripts in this folder; sourced, not run. POSIX sh and `nc -u` only.
#
# GOOSE_HOST overrides the address the nodes listen on (default 127.0.0.1).

GOOSE_HOST=${GOOSE_HOST:-127.0.0.1}

# goose_send <port> <text>: sends one datagram, prints the first reply line (nothing if
# no reply within about a second).
goose_send() {
    printf '%s' "$2" | nc -u -w1 "$GOOSE_HOST" "$1" 2>/dev/null | head -n 1
}

# goose_ctl <port> <command...>: sends "ctl <command...>", prints "<port>: <reply>";
# returns 1 on an err reply or none.
goose_ctl() {
    port=$1
    shift
    reply=$(goose_send "$port" "ctl $*")
    printf '%s: %s\n' "$port" "${reply:--}"
    case $reply in
        ok*) return 0 ;;
        *) return 1 ;;
    esac
}
