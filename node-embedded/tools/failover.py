#!/usr/bin/env python3
"""Failover in the mixed flock: 3 desktop `goose node`s (ids 1-3) and 2 QEMU boards (ids 4-5)
on 127.0.0.1:9900-9904. Kills whichever member is goose with SIGKILL (a node process or a
board's QEMU), measures the time until another member answers `goose` to `whois-goose`,
restarts the victim on its state, and repeats. Checks on every probe round that no two
members answer `goose`. Prints every round, then p50 and max. Stops everything it started.

    python3 node-embedded/tools/failover.py [kills, default 20]

Needs `cargo build --release -p goose`, the firmware built (`cargo build --release` in
node-embedded/firmware) and qemu-system-arm.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

KILLS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
MEMBERS = {1: 'node', 2: 'node', 3: 'node', 4: 'board', 5: 'board'}
MEMBER_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'member.sh')


def port(ident):
    return 9899 + ident


def start(kind, ident, work):
    out = subprocess.run([MEMBER_SH, kind, str(ident), work], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[0])


def probe(ident, timeout=0.05):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(b'whois-goose', ('127.0.0.1', port(ident)))
            return s.recv(256).decode().split()
        except OSError:
            return None


def geese(exclude=()):
    found = []
    for ident in MEMBERS:
        reply = None if ident in exclude else probe(ident)
        if reply and reply[0] == 'goose':
            found.append((ident, reply[2]))
    assert len(found) <= 1, f'two geese at once: {found}'
    return found


def wait_goose(exclude=(), limit=10.0):
    began = time.monotonic()
    while True:
        found = geese(exclude)
        if found:
            return found[0], time.monotonic() - began
        assert time.monotonic() - began < limit, 'no goose'


def main():
    work = tempfile.mkdtemp(prefix='goose-mixed-')
    pids = {}
    try:
        for ident, kind in MEMBERS.items():
            pids[ident] = start(kind, ident, work)
        wait_goose()
        times = []
        for round_ in range(1, KILLS + 1):
            (victim, term), _ = wait_goose()
            os.kill(pids[victim], signal.SIGKILL)
            (new, new_term), elapsed = wait_goose(exclude=(victim,))
            times.append(elapsed * 1000)
            print(f'kill {round_}: {MEMBERS[victim]} {victim} ({term}) -> goose {new} '
                  f'({new_term}) in {elapsed * 1000:.0f} ms', flush=True)
            pids[victim] = start(MEMBERS[victim], victim, work)
            time.sleep(1.5)  # the victim comes back and settles as a duck
        times.sort()
        print(f'failover over {KILLS} kills: p50 {times[len(times) // 2]:.0f} ms, '
              f'max {times[-1]:.0f} ms (logs and state in {work})')
    finally:
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


if __name__ == '__main__':
    main()
