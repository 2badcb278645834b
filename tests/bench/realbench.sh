#!/bin/bash
# realbench.sh — real programs on lsmfs and on ext4 in one run (issue 16): each phase's wall time
# on ext4, on lsmfs's default mount and on lsmfs in each other mode, every one on a fresh directory
# of one fresh ext4 image, and one table with lsmfs's time ratio to ext4 against the issue's
# targets (a real program at most 2x ext4's time, the random-I/O generator fsxgen at most 3x).
#
# usage: bash tests/bench/realbench.sh
# env:   LSMFS (daemon, default fs/lsmfs), LSMFS_OPTS (extra -o options for every lsmfs mount),
#        LSMFS_MODES (lsmfs mounts to run, default "default mt uring writeback"; MODE other than default
#          mounts with -o MODE; a mode with uring sets the fuse module's enable_uring to Y for its
#          run, as root, and puts the old value back),
#        REALBENCH_DIR (where the temporary directories go, default /var/tmp),
#        REALBENCH_LOOP (0: use REALBENCH_DIR's file system as is instead of a fresh ext4 image),
#        REALBENCH_OUT (where realbench.dat, the table and each phase's log are kept; default a new
#          directory realbench-out.XXXXXX under REALBENCH_DIR, printed at the end),
#        REALBENCH_TREE (tarred for tar-x, compared by diff-r; default /usr/include),
#        REALBENCH_RSYNC (copied by rsync; default /usr/share/man, else /usr/include),
#        REALBENCH_GIT (a repository for git-clone; default this one),
#        REALBENCH_PHASES (the phases to run, default all, in this order: tar-x diff-r git-clone
#          git-status-1 git-status-2 rsync rsync-again make postmark fio fsx),
#        REALBENCH_TIMEOUT (seconds a phase may take, default 300).
# Phases: tar-x (tar xf of the tree's tarball, made outside the file system measured), diff-r
# (diff -r --no-dereference of the copy against the tree), git-clone (git clone --no-hardlinks),
# git-status-1 and -2 (git status --porcelain in the clone, twice), rsync and rsync-again (rsync -a
# of a tree, then again with nothing to copy), make (make -j2 all of this project's sources,
# copied in with git archive, untimed), postmark (5000 files of 512 B-16 KiB, 20000 transactions),
# fio (randrw of 4 KiB blocks over 2000 files of 4 KiB, 64 MiB in all, files laid out first) and
# fsx (tests/bench/fsxgen -n 10000: random writes, checked reads, truncates on one file).
# Each phase runs after a sync and is timed with date +%s.%N; one that fails is reported, shown as
# "-" and the run goes on; the exit status is then 1. Needs root for the loop mount, and the Debian packages fio and postmark
# for those phases. Everything it mounts is unmounted on exit, also on failure or ^C; it stops
# only the daemons it started.
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
LSMFS=${LSMFS:-$repo/fs/lsmfs}
LSMFS_OPTS=${LSMFS_OPTS:-}
LSMFS_MODES=${LSMFS_MODES:-default mt uring writeback}
tree=${REALBENCH_TREE:-/usr/include}
rtree=${REALBENCH_RSYNC:-}
if [ -z "$rtree" ]; then
    rtree=/usr/share/man
    [ -d "$rtree" ] || rtree=/usr/include
fi
gitsrc=${REALBENCH_GIT:-$repo}
phases=${REALBENCH_PHASES:-tar-x diff-r git-clone git-status-1 git-status-2 rsync rsync-again make postmark fio fsx}
limit=${REALBENCH_TIMEOUT:-300}
fsx_ops=10000

base=$(mktemp -d "${REALBENCH_DIR:-/var/tmp}/realbench.XXXXXX") || exit 1
out=${REALBENCH_OUT:-}
if [ -z "$out" ]; then
    out=$(mktemp -d "${REALBENCH_DIR:-/var/tmp}/realbench-out.XXXXXX") || exit 1
fi
mkdir -p "$out" || exit 1
mounts=()       # FUSE mount points, unmounted with fusermount3
pids=()         # daemons started here
kmount=""       # the ext4 image's mount point, unmounted last
names=()        # file systems run, in order
failed=0        # 1 once a phase or a mount failed: the exit status

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local m p i
    [ -z "${uring_saved:-}" ] || uring_param restore
    for m in "${mounts[@]}"; do
        if grep -q " $m " /proc/mounts; then
            fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
        fi
    done
    for p in "${pids[@]}"; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -0 "$p" 2>/dev/null && kill -9 "$p"
    done
    if [ -n "$kmount" ] && grep -q " $kmount " /proc/mounts; then
        umount "$kmount" 2>/dev/null || umount -l "$kmount"
    fi
    rm -rf "$base"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fsx=$here/fsxgen
if [ ! -x "$fsx" ] || [ "$fsx" -ot "$here/fsxgen.c" ]; then
    fsx=$base/fsxgen
    ${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -o "$fsx" "$here/fsxgen.c" || exit 1
fi

# The disk: a fresh ext4 image when we may mount one, else the directory as it is.
disk=$base
if [ "$(id -u)" = 0 ] && [ "${REALBENCH_LOOP:-1}" != 0 ]; then
    mkdir "$base/disk"
    if truncate -s 8G "$base/ext4.img" && mkfs.ext4 -q -F "$base/ext4.img" &&
       mount -o loop "$base/ext4.img" "$base/disk"; then
        kmount=$base/disk
        disk=$base/disk
    else
        echo "realbench.sh: cannot mount an ext4 image; using $base as it is" >&2
    fi
fi
fstype=$(findmnt -n -o FSTYPE -T "$disk")
[ "$fstype" = ext4 ] || echo "realbench.sh: warning: $disk is on $fstype, not ext4" >&2

# Made once, outside every file system measured.
tar cf "$base/tree.tar" -C "$(dirname "$tree")" "$(basename "$tree")" 2>/dev/null || {
    echo "realbench.sh: cannot tar $tree: tar-x and diff-r will fail" >&2
    rm -f "$base/tree.tar"
}
git -C "$repo" archive HEAD >"$base/src.tar" 2>/dev/null || {
    echo "realbench.sh: git archive HEAD failed in $repo: make will fail" >&2
    rm -f "$base/src.tar"
}

wait_mount() {  # wait_mount DIR PID: up to 10 s, while PID runs
    local i=0
    while ! grep -q " $1 " /proc/mounts; do
        kill -0 "$2" 2>/dev/null || return 1
        [ $i -ge 100 ] && return 1
        sleep 0.1
        i=$((i + 1))
    done
}

# phase_cmd PHASE DIR: runs one phase's program, under timeout, in DIR (the file system under
# test), its output on stdout/stderr; untimed preparation is done by prepare.
phase_cmd() {
    local dir=$2 to=(timeout -k 10 "$limit")
    case $1 in
    tar-x) "${to[@]}" tar xf "$base/tree.tar" -C "$dir" ;;
    diff-r) "${to[@]}" diff -r --no-dereference "$tree" "$dir/$(basename "$tree")" ;;
    git-clone) "${to[@]}" git clone -q --no-hardlinks "$gitsrc" "$dir/clone" ;;
    git-status-*) "${to[@]}" git -C "$dir/clone" status --porcelain ;;
    rsync | rsync-again) "${to[@]}" rsync -a "$rtree/" "$dir/rsync/" ;;
    make) "${to[@]}" env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$dir/src" -j2 all ;;
    postmark) "${to[@]}" postmark <"$dir/postmark.cfg" ;;
    fio)
        "${to[@]}" fio --name=smallfiles --directory="$dir/fio" --nrfiles=2000 --filesize=4k --size=8m \
            --io_size=64m --rw=randrw --bs=4k --ioengine=psync --openfiles=64 \
            --file_service_type=random --randseed=42
        ;;
    fsx) "${to[@]}" "$fsx" -n "$fsx_ops" -s 1 "$dir/fsx.file" ;;
    *) echo "unknown phase $1"; return 2 ;;
    esac
}

prepare() {  # prepare PHASE DIR: what a phase needs before its clock starts
    case $1 in
    make) mkdir -p "$2/src" && tar xf "$base/src.tar" -C "$2/src" ;;
    postmark)
        mkdir -p "$2/postmark" &&
            printf 'set location %s\nset number 5000\nset transactions 20000\nset size 512 16384\nset read 4096\nset write 4096\nrun\nquit\n' \
                "$2/postmark" >"$2/postmark.cfg"
        ;;
    fio) mkdir -p "$2/fio" ;;
    esac
}

# run_phases NAME DIR: every phase on DIR; "PHASE SECONDS" (or "PHASE -") lines into $out/NAME.times
run_phases() {
    local name=$1 dir=$2 p t0 t1 rc log secs
    : >"$out/$name.times"
    for p in $phases; do
        log=$out/$name.$p.log
        if ! prepare "$p" "$dir" >"$log" 2>&1; then
            echo "realbench.sh: $name: $p: preparation failed: $(tail -n 3 "$log")" >&2
            failed=1
            echo "$p -" >>"$out/$name.times"
            continue
        fi
        sync
        t0=$(date +%s.%N)
        phase_cmd "$p" "$dir" >>"$log" 2>&1
        rc=$?
        t1=$(date +%s.%N)
        if [ $rc -ne 0 ]; then
            [ $rc -eq 124 ] && echo "realbench.sh: $name: $p timed out after $limit s" >&2
            echo "realbench.sh: $name: $p FAILED (status $rc); last lines of $log:" >&2
            tail -n 5 "$log" | sed 's/^/    /' >&2
            failed=1
            echo "$p -" >>"$out/$name.times"
            continue
        fi
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        echo "$p $secs" >>"$out/$name.times"
        printf 'realbench.sh: %-18s %-13s %8s s\n' "$name" "$p" "$secs" >&2
        case $p in
        git-status-*)
            [ -s "$log" ] && echo "realbench.sh: $name: $p: the fresh clone is not clean: $(head -n 3 "$log")" >&2 ;;
        fio)
            grep -E '^ *(read|write): IOPS=' "$log" | sed "s/^ */realbench.sh: $name: fio /; s/,.*//" >&2 ;;
        esac
    done
}

. "$here/uring.sh"   # uring_param

lsmfs_run() {  # lsmfs_run NAME [-o MODE]: a fresh lsmfs with its DATADIR on the disk
    local name=$1 pid
    shift
    case "$*" in *uring*) uring_param Y ;; esac
    mkdir "$base/$name" "$disk/$name-data"
    mounts+=("$base/$name")
    names+=("$name")
    "$LSMFS" -f ${LSMFS_OPTS:+-o "$LSMFS_OPTS"} "$@" "$disk/$name-data" "$base/$name" \
        >"$out/$name.daemon.log" 2>&1 </dev/null &
    pid=$!
    pids+=("$pid")
    if wait_mount "$base/$name" "$pid"; then
        run_phases "$name" "$base/$name"
        fusermount3 -u "$base/$name" || fusermount3 -uz "$base/$name"
        wait "$pid" || echo "realbench.sh: $name: lsmfs exited with status $?" >&2
        du -sh "$disk/$name-data" >&2
    else
        echo "realbench.sh: $name did not mount: $(tail -n 5 "$out/$name.daemon.log")" >&2
        failed=1
        : >"$out/$name.times"
    fi
    rm -rf "$disk/$name-data"
    case "$*" in *uring*) uring_param restore ;; esac
}

echo "realbench.sh: ext4 ..." >&2
mkdir "$disk/ext4"
names+=(ext4)
run_phases ext4 "$disk/ext4"
rm -rf "$disk/ext4"

if [ -x "$LSMFS" ]; then
    for mode in $LSMFS_MODES; do
        echo "realbench.sh: lsmfs $mode ..." >&2
        case $mode in
        default) lsmfs_run lsmfs ;;
        *) lsmfs_run "lsmfs-$mode" -o "$mode" ;;
        esac
    done
else
    echo "realbench.sh: $LSMFS not built: run make" >&2
    failed=1
fi

# realbench.dat: one line per phase, its seconds on each file system ("-" when it failed).
awk -v dir="$out" -v list="${names[*]}" -v phases="$phases" '
    BEGIN {
        n = split(list, fs, " ")
        np = split(phases, ph, " ")
        for (i = 1; i <= n; i++) {
            f = dir "/" fs[i] ".times"
            while ((getline line < f) > 0) { split(line, w, " "); v[w[1], fs[i]] = w[2] }
            close(f)
        }
        printf "# phase"
        for (i = 1; i <= n; i++) printf " %s", fs[i]
        printf "\n"
        for (p = 1; p <= np; p++) {
            printf "%s", ph[p]
            for (i = 1; i <= n; i++) { x = v[ph[p], fs[i]]; printf " %s", x == "" ? "-" : x }
            printf "\n"
        }
    }' >"$out/realbench.dat"

{
    echo "Real programs: wall time in seconds (lower is better), ext4 and lsmfs on one fresh $fstype image, same run"
    echo "tar-x, diff-r: $tree ($(find "$tree" -type f | wc -l) files); rsync: $rtree ($(find "$rtree" -type f | wc -l) files); git-clone: $gitsrc"
    echo "lsmfs = default mount; lsmfs-MODE = -o MODE${LSMFS_OPTS:+; every lsmfs mount -o $LSMFS_OPTS}; target: lsmfs/ext4 <= 2 (fsx <= 3)"
    echo
    awk '
        function ratio(a, b) { return (a != "-" && b != "-" && b > 0) ? sprintf("%.2f", a / b) : "-" }
        NR == 1 {
            n = NF - 2          # file systems after "# phase"
            for (i = 1; i <= n; i++) fs[i] = $(i + 2)
            printf "| %-12s |", "phase"
            for (i = 1; i <= n; i++) printf " %18s |", fs[i] " s"
            for (i = 2; i <= n; i++) printf " %20s |", fs[i] "/ext4"
            printf " %-12s |\n", "target"
            printf "|%s|", "--------------"
            for (i = 1; i <= n; i++) printf "%s|", "-------------------:"
            for (i = 2; i <= n; i++) printf "%s|", "---------------------:"
            printf "%s|\n", "--------------"
            next
        }
        {
            printf "| %-12s |", $1
            for (i = 1; i <= n; i++) printf " %18s |", $(i + 1)
            for (i = 2; i <= n; i++) printf " %20s |", ratio($(i + 1), $2)
            lim = $1 == "fsx" ? 3 : 2
            r = ratio($3, $2)
            printf " %-12s |\n", n < 2 || r == "-" ? "-" : ("<=" lim (r + 0 <= lim ? " met" : " missed"))
        }' "$out/realbench.dat"
    case " $phases " in
    *" fio "*)
        printf '\nfio IOPS (read / write):'
        for n in "${names[@]}"; do
            printf ' %s %s;' "$n" "$(sed -n 's/^ *\(read\|write\): IOPS=\([^,]*\),.*/\2/p' "$out/$n.fio.log" 2>/dev/null |
                paste -sd/ -)"
        done
        echo
        ;;
    esac
} | tee "$out/realbench.txt"
echo
echo "realbench.sh: data in $out/realbench.dat, phase logs in $out"
exit $failed
