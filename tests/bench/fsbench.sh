#!/bin/sh
# fsbench.sh — runs tests/bench/fsbench (small files) on ext4, tmpfs, bindfs over ext4 and lsmfs
# over ext4, in one run on one machine, and prints one table of ops/s with lsmfs's ratios to bindfs
# (the cost of FUSE itself) and to ext4 (the kernel's own filesystem).
#
# usage: sh tests/bench/fsbench.sh [fsbench options, e.g. -n 5000]
# env:   LSMFS (daemon, default fs/lsmfs), LSMFS_OPTS (extra -o options for lsmfs),
#        FSBENCH_DIR (where the temporary ext4 directories go, default /var/tmp)
# Everything it mounts is unmounted on exit, also on failure or ^C.  tmpfs needs root; bindfs needs
# the Debian bindfs package; a missing one is shown as "-".
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
LSMFS=${LSMFS:-$repo/fs/lsmfs}
LSMFS_OPTS=${LSMFS_OPTS:-}
base=$(mktemp -d "${FSBENCH_DIR:-/var/tmp}/fsbench.XXXXXX") || exit 1
mounts=""       # FUSE mount points, unmounted with fusermount3
kmounts=""      # kernel mount points (tmpfs), unmounted with umount
lsmfs_pid=""

cleanup() {
    for m in $mounts; do
        if grep -q " $m " /proc/mounts; then
            fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
        fi
    done
    for m in $kmounts; do
        grep -q " $m " /proc/mounts && { umount "$m" 2>/dev/null || umount -l "$m"; }
    done
    if [ -n "$lsmfs_pid" ]; then
        i=0
        while kill -0 "$lsmfs_pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -0 "$lsmfs_pid" 2>/dev/null && kill -9 "$lsmfs_pid"
    fi
    rm -rf "$base"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bin=$base/fsbench
if [ -x "$here/fsbench" ] && [ "$here/fsbench" -nt "$here/fsbench.c" ]; then
    cp "$here/fsbench" "$bin"
else
    ${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -o "$bin" "$here/fsbench.c" || exit 1
fi

fstype=$(findmnt -n -o FSTYPE -T "$base")
[ "$fstype" = ext4 ] || echo "fsbench.sh: warning: $base is on $fstype, not ext4" >&2

wait_mount() {  # wait_mount DIR: up to 10 s
    i=0
    while ! grep -q " $1 " /proc/mounts; do
        [ $i -ge 100 ] && return 1
        sleep 0.1
        i=$((i + 1))
    done
}

# bench NAME FSBENCH-ARGS... DIR: output kept in $base/NAME.out
bench() {
    echo "fsbench.sh: $1 ..." >&2
    name=$1
    shift
    if "$bin" "$@" >"$base/$name.out" 2>"$base/$name.err"; then
        cat "$base/$name.out" >&2
    else
        echo "fsbench.sh: $name failed: $(cat "$base/$name.err")" >&2
        : >"$base/$name.out"
    fi
}

mkdir "$base/ext4"
bench ext4 "$@" "$base/ext4"

if [ "$(id -u)" = 0 ]; then
    mkdir "$base/tmpfs"
    if mount -t tmpfs -o size=2g tmpfs "$base/tmpfs"; then
        kmounts="$base/tmpfs"
        bench tmpfs "$@" "$base/tmpfs"
        umount "$base/tmpfs"
    fi
fi

if command -v bindfs >/dev/null 2>&1; then
    mkdir "$base/bind-src" "$base/bindfs"
    mounts="$mounts $base/bindfs"
    if bindfs "$base/bind-src" "$base/bindfs"; then
        bench bindfs "$@" "$base/bindfs"
        fusermount3 -u "$base/bindfs"
    fi
fi

if [ -x "$LSMFS" ]; then
    mkdir "$base/lsmfs"
    mounts="$mounts $base/lsmfs"
    "$LSMFS" -f ${LSMFS_OPTS:+-o "$LSMFS_OPTS"} "$base/lsm-data" "$base/lsmfs" \
        >"$base/lsmfs.log" 2>&1 </dev/null &
    lsmfs_pid=$!
    if wait_mount "$base/lsmfs"; then
        bench lsmfs "$@" "$base/lsmfs"
        fusermount3 -u "$base/lsmfs"
        wait "$lsmfs_pid" || echo "fsbench.sh: lsmfs exited with status $?" >&2
        du -sh "$base/lsm-data" >&2
    else
        echo "fsbench.sh: lsmfs did not mount: $(cat "$base/lsmfs.log")" >&2
    fi
else
    echo "fsbench.sh: $LSMFS not built: run make" >&2
fi

echo
echo "fsbench: $(sed -n 1p "$base/ext4.out" | awk '{ print $2 }') files; ops/s (readdir: names/s); ext4 is $base's $fstype"
awk -v dir="$base" '
    BEGIN {
        n = split("ext4 tmpfs bindfs lsmfs", fs, " ")
        for (i = 1; i <= n; i++) {
            f = dir "/" fs[i] ".out"
            while ((getline line < f) > 0) {
                split(line, w, " ")
                if (!(w[1] in seen)) { seen[w[1]] = 1; order[++np] = w[1] }
                v[w[1], fs[i]] = w[4]
            }
            close(f)
        }
        printf "%-10s | %10s | %10s | %10s | %10s | %12s | %10s\n", "phase", "ext4", "tmpfs", "bindfs", "lsmfs", "lsmfs/bindfs", "lsmfs/ext4"
        printf "%s\n", "-----------+------------+------------+------------+------------+--------------+-----------"
        for (p = 1; p <= np; p++) {
            ph = order[p]
            printf "%-10s", ph
            for (i = 1; i <= n; i++) {
                x = v[ph, fs[i]]
                printf " | %10s", x == "" ? "-" : x
            }
            l = v[ph, "lsmfs"]; b = v[ph, "bindfs"]; e = v[ph, "ext4"]
            printf " | %12s", (l != "" && b > 0) ? sprintf("%.2fx", l / b) : "-"
            printf " | %10s\n", (l != "" && e > 0) ? sprintf("%.2fx", l / e) : "-"
        }
    }'
