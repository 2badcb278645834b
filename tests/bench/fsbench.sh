#!/bin/sh
# fsbench.sh — runs tests/bench/fsbench (small files) on ext4, tmpfs, bindfs over ext4 and lsmfs
# over ext4 in each of its modes, in one run on one machine, and prints two tables: ops/s side by
# side, and lsmfs's ratios to ext4 (the kernel's own filesystem), to bindfs (the cost of FUSE
# itself) and, when LSMFS_BASE names another lsmfs binary, to that one's default mount.
#
# usage: sh tests/bench/fsbench.sh [fsbench options, e.g. -n 5000]
# env:   LSMFS (daemon, default fs/lsmfs), LSMFS_OPTS (extra -o options for every lsmfs mount),
#        LSMFS_MODES (lsmfs mounts to run, default "default mt uring writeback close_to_open";
#          a mode with uring sets the fuse module's enable_uring to Y for its run, as root),
#        LSMFS_BASE (another lsmfs binary, e.g. main's, run with its default mount as "base"),
#        FSBENCH_DIR (where the temporary directories go, default /var/tmp),
#        FSBENCH_LOOP (0: use FSBENCH_DIR's filesystem as is instead of a fresh ext4 loop image),
#        FSBENCH_TREE (a tree to tar, default /usr/include; empty: no real-program phases),
#        FSBENCH_OUT (a directory: the ratio table is also written there as fsbench.dat, one line
#          per phase, "-" where a value is missing, for tests/bench/plot.sh)
# After fsbench's phases, three real-program ones time a whole tree (files/s, the wall time per
# file inverted so that higher is better, like the rest): tar-x (tar xf of the tree's tarball),
# diff-r (diff -r --no-dereference of the copy against the tree), rm-rf.
# As root, ext4, bindfs's source and lsmfs's data directory all live on one fresh ext4 image
# mounted through a loop device, so every disk-backed filesystem sees the same empty disk.
# Everything it mounts is unmounted on exit, also on failure or ^C. tmpfs needs root; bindfs
# needs the Debian bindfs package; a missing one is shown as "-".
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
LSMFS=${LSMFS:-$repo/fs/lsmfs}
LSMFS_OPTS=${LSMFS_OPTS:-}
LSMFS_MODES=${LSMFS_MODES:-default mt uring writeback close_to_open}
LSMFS_BASE=${LSMFS_BASE:-}
base=$(mktemp -d "${FSBENCH_DIR:-/var/tmp}/fsbench.XXXXXX") || exit 1
mounts=""       # FUSE mount points, unmounted with fusermount3
kmounts=""      # kernel mount points (tmpfs, the ext4 image), unmounted with umount, last first
lsmfs_pid=""
names=""        # filesystems run, in order

cleanup() {
    [ -z "${uring_saved:-}" ] || uring_param restore
    for m in $mounts; do
        if grep -q " $m " /proc/mounts; then
            fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
        fi
    done
    if [ -n "$lsmfs_pid" ]; then
        i=0
        while kill -0 "$lsmfs_pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -0 "$lsmfs_pid" 2>/dev/null && kill -9 "$lsmfs_pid"
    fi
    for m in $kmounts; do
        grep -q " $m " /proc/mounts && { umount "$m" 2>/dev/null || umount -l "$m"; }
    done
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

# The disk: a fresh ext4 image when we may mount one, else the directory as it is.
disk=$base
if [ "$(id -u)" = 0 ] && [ "${FSBENCH_LOOP:-1}" != 0 ] && command -v mkfs.ext4 >/dev/null; then
    mkdir "$base/disk"
    if truncate -s 8G "$base/ext4.img" && mkfs.ext4 -q -F "$base/ext4.img" &&
       mount -o loop "$base/ext4.img" "$base/disk"; then
        kmounts="$base/disk"
        disk=$base/disk
    else
        echo "fsbench.sh: cannot mount an ext4 image; using $base as it is" >&2
    fi
fi
tree=${FSBENCH_TREE-/usr/include}
treefiles=0
if [ -n "$tree" ] && [ -d "$tree" ]; then
    tar cf "$base/tree.tar" -C "$(dirname "$tree")" "$(basename "$tree")" 2>/dev/null ||
        rm -f "$base/tree.tar"
    treefiles=$(find "$tree" -type f | wc -l)
fi

fstype=$(findmnt -n -o FSTYPE -T "$disk")
[ "$fstype" = ext4 ] || echo "fsbench.sh: warning: $disk is on $fstype, not ext4" >&2

wait_mount() {  # wait_mount DIR: up to 10 s
    i=0
    while ! grep -q " $1 " /proc/mounts; do
        [ $i -ge 100 ] && return 1
        sleep 0.1
        i=$((i + 1))
    done
}

# tree_bench NAME DIR: the real-program phases, appended to $base/NAME.out
tree_bench() {
    [ -s "$base/tree.tar" ] || return 0
    for step in tar-x diff-r rm-rf; do
        sync
        t0=$(date +%s.%N)
        case $step in
        tar-x) tar xf "$base/tree.tar" -C "$2" ;;
        diff-r) diff -r --no-dereference "$tree" "$2/$(basename "$tree")" >/dev/null ;;
        rm-rf) rm -rf "${2:?}/$(basename "$tree")" ;;
        esac
        rc=$?
        t1=$(date +%s.%N)
        if [ $rc -ne 0 ]; then
            echo "fsbench.sh: $1: $step failed (status $rc)" >&2
            continue
        fi
        awk -v p="$step" -v n="$treefiles" -v a="$t0" -v b="$t1" \
            'BEGIN { printf "%-10s %8ld %9.3f %12.0f\n", p, n, b - a, n / (b - a) }' |
            tee -a "$base/$1.out" >&2
    done
}

# bench NAME FSBENCH-ARGS... DIR: output kept in $base/NAME.out
bench() {
    echo "fsbench.sh: $1 ..." >&2
    name=$1
    names="$names $name"
    shift
    sync
    if "$bin" "$@" >"$base/$name.out" 2>"$base/$name.err"; then
        cat "$base/$name.out" >&2
    else
        echo "fsbench.sh: $name failed: $(cat "$base/$name.err")" >&2
        : >"$base/$name.out"
    fi
    for dir; do :; done   # the last argument
    tree_bench "$name" "$dir"
}

. "$here/uring.sh"   # uring_param

# lsmfs_bench NAME BINARY [-o OPTIONS]: mounts a fresh lsmfs, runs fsbench, unmounts
lsmfs_bench() {
    name=$1
    lbin=$2
    shift 2
    case "$*" in *uring*) uring_param Y ;; esac
    mkdir "$base/$name" "$disk/$name-data"
    mounts="$mounts $base/$name"
    "$lbin" -f ${LSMFS_OPTS:+-o "$LSMFS_OPTS"} "$@" "$disk/$name-data" "$base/$name" \
        >"$base/$name.log" 2>&1 </dev/null &
    lsmfs_pid=$!
    if wait_mount "$base/$name"; then
        bench "$name" $fsargs "$base/$name"
        fusermount3 -u "$base/$name"
        wait "$lsmfs_pid" || echo "fsbench.sh: $name exited with status $?" >&2
        du -sh "$disk/$name-data" >&2
    else
        echo "fsbench.sh: $name did not mount: $(cat "$base/$name.log")" >&2
    fi
    lsmfs_pid=""
    rm -rf "$disk/$name-data"
    case "$*" in *uring*) uring_param restore ;; esac
}

fsargs="$*"

mkdir "$disk/ext4"
bench ext4 "$@" "$disk/ext4"
rm -rf "$disk/ext4"

if [ "$(id -u)" = 0 ]; then
    mkdir "$base/tmpfs"
    if mount -t tmpfs -o size=4g tmpfs "$base/tmpfs"; then
        kmounts="$base/tmpfs $kmounts"
        bench tmpfs "$@" "$base/tmpfs"
        umount "$base/tmpfs"
    fi
fi

if command -v bindfs >/dev/null 2>&1; then
    mkdir "$disk/bind-src" "$base/bindfs"
    mounts="$mounts $base/bindfs"
    if bindfs "$disk/bind-src" "$base/bindfs"; then
        bench bindfs "$@" "$base/bindfs"
        fusermount3 -u "$base/bindfs"
    fi
    rm -rf "$disk/bind-src"
fi

if [ -n "$LSMFS_BASE" ] && [ -x "$LSMFS_BASE" ]; then
    lsmfs_bench base "$LSMFS_BASE"
fi

if [ -x "$LSMFS" ]; then
    for mode in $LSMFS_MODES; do
        case $mode in
        default) lsmfs_bench lsmfs "$LSMFS" ;;
        *) lsmfs_bench "lsmfs-$mode" "$LSMFS" -o "$mode" ;;
        esac
    done
else
    echo "fsbench.sh: $LSMFS not built: run make" >&2
fi

datafile=""
if [ -n "${FSBENCH_OUT:-}" ]; then
    mkdir -p "$FSBENCH_OUT" && datafile=$FSBENCH_OUT/fsbench.dat
fi

echo
echo "fsbench: $(sed -n 1p "$base/ext4.out" | awk '{ print $2 }') files; ops/s (readdir: names/s); ext4 is a fresh $fstype${LSMFS_OPTS:+; lsmfs -o $LSMFS_OPTS}"
[ -s "$base/tree.tar" ] && echo "tar-x, diff-r, rm-rf: $tree ($treefiles files, $(du -sh "$tree" | cut -f1)), files/s"
echo "lsmfs modes: lsmfs = default mount; lsmfs-MODE = -o MODE${LSMFS_BASE:+; base = $LSMFS_BASE, default mount}"
awk -v dir="$base" -v list="$names" -v data="$datafile" '
    function ratio(a, b) { return (a != "" && b > 0) ? sprintf("%.2f", a / b) : "-" }
    BEGIN {
        n = split(list, fs, " ")
        for (i = 1; i <= n; i++) {
            f = dir "/" fs[i] ".out"
            while ((getline line < f) > 0) {
                split(line, w, " ")
                if (!(w[1] in seen)) { seen[w[1]] = 1; order[++np] = w[1] }
                v[w[1], fs[i]] = w[4]
            }
            close(f)
        }
        printf "%-10s", "phase"
        for (i = 1; i <= n; i++) printf " | %12s", fs[i]
        printf "\n"
        for (p = 1; p <= np; p++) {
            printf "%-10s", order[p]
            for (i = 1; i <= n; i++) { x = v[order[p], fs[i]]; printf " | %12s", x == "" ? "-" : x }
            printf "\n"
        }
        # ratios: every lsmfs mount against ext4, and the default one against bindfs and base
        nl = 0
        for (i = 1; i <= n; i++) if (fs[i] ~ /^lsmfs/) lsm[++nl] = fs[i]
        printf "\n%-10s", "ratio"
        for (j = 1; j <= nl; j++) printf " | %18s", lsm[j] "/ext4"
        printf " | %14s | %14s\n", "lsmfs/bindfs", "lsmfs/base"
        if (data != "") {
            printf "# phase" > data
            for (j = 1; j <= nl; j++) printf " %s", lsm[j] "/ext4" > data
            printf " lsmfs/bindfs lsmfs/base\n" > data
        }
        for (p = 1; p <= np; p++) {
            ph = order[p]
            printf "%-10s", ph
            for (j = 1; j <= nl; j++) printf " | %18s", ratio(v[ph, lsm[j]], v[ph, "ext4"])
            printf " | %14s | %14s\n", ratio(v[ph, "lsmfs"], v[ph, "bindfs"]), ratio(v[ph, "lsmfs"], v[ph, "base"])
            if (data != "") {
                printf "%s", ph > data
                for (j = 1; j <= nl; j++) printf " %s", ratio(v[ph, lsm[j]], v[ph, "ext4"]) > data
                printf " %s %s\n", ratio(v[ph, "lsmfs"], v[ph, "bindfs"]), ratio(v[ph, "lsmfs"], v[ph, "base"]) > data
            }
        }
    }'
