#!/bin/bash
# fsreqs.sh — how many FUSE requests each small-file operation costs on lsmfs: mounts a fresh
# lsmfs with -d (libfuse prints every request), runs fsbench's phases on 100 files one phase at a
# time, and prints the requests per operation of each phase, by opcode. What the kernel answers
# from its caches costs nothing here, so this shows what the caches save and what is left.
#
# usage: bash tests/bench/fsreqs.sh [LSMFS-BINARY [lsmfs options...]]
#        e.g. bash tests/bench/fsreqs.sh fs/lsmfs -o writeback
# Not a timing: -d slows every request down. Everything it mounts is unmounted on exit.
set -u
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../fs/lsmfs}
shift || true
w=$(mktemp -d /tmp/fsreqs.XXXXXX) || exit 1
pid=""
cleanup() {
    if grep -q " $w/mnt " /proc/mounts; then
        fusermount3 -u "$w/mnt" 2>/dev/null || fusermount3 -uz "$w/mnt"
    fi
    [ -n "$pid" ] && wait "$pid" 2>/dev/null
    rm -rf "$w"
}
trap cleanup EXIT
mkdir "$w/mnt"
"$bin" -f -d "$@" "$w/data" "$w/mnt" >"$w/log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 100); do grep -q " $w/mnt " /proc/mounts && break; sleep 0.1; done
grep -q " $w/mnt " /proc/mounts || { echo "fsreqs.sh: lsmfs did not mount: $(cat "$w/log")" >&2; exit 1; }
mkdir "$w/mnt/d"

# phase NAME PYTHON: runs the code (argv[1] is the directory) and prints requests per operation
phase() {
    sync
    sleep 0.3
    local n0
    n0=$(wc -l <"$w/log")
    python3 -c "$2" "$w/mnt/d"
    sleep 0.3
    printf '%-10s %s\n' "$1" "$(tail -n +$((n0 + 1)) "$w/log" | grep -o 'opcode: [A-Z_]*' |
        awk '{ print $2 }' | sort | uniq -c |
        awk '{ printf "%s %.2f  ", $2, $1 / 100 } END { if (!NR) printf "(none)" }')"
}

echo "FUSE requests per operation (100 operations per phase), $bin $*"
phase create 'import os, sys
for i in range(100):
    fd = os.open(sys.argv[1] + "/f%d" % i, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"x" * 4096); os.close(fd)'
phase stat 'import os, sys
for i in range(100): os.stat(sys.argv[1] + "/f%d" % i)'
phase readdir 'import os, sys
for i in range(100): os.listdir(sys.argv[1])'
phase read 'import os, sys
for i in range(100):
    fd = os.open(sys.argv[1] + "/f%d" % i, os.O_RDONLY); os.read(fd, 8192); os.close(fd)'
phase warm-stat 'import os, sys
for i in range(100): os.stat(sys.argv[1] + "/f%d" % i)'
phase warm-read 'import os, sys
for i in range(100):
    fd = os.open(sys.argv[1] + "/f%d" % i, os.O_RDONLY); os.read(fd, 8192); os.close(fd)'
phase overwrite 'import os, sys
for i in range(100):
    fd = os.open(sys.argv[1] + "/f%d" % i, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"y" * 4096); os.close(fd)'
phase rename 'import os, sys
for i in range(100): os.rename(sys.argv[1] + "/f%d" % i, sys.argv[1] + "/f%d.r" % i)'
phase unlink 'import os, sys
for i in range(100): os.unlink(sys.argv[1] + "/f%d.r" % i)'
phase neg-stat 'import os, sys
for j in range(2):
    for i in range(50):
        try: os.stat(sys.argv[1] + "/none%d" % i)
        except FileNotFoundError: pass'
