#!/bin/sh
# bigbench.sh — large files (issue 17): tests/bench/bigbench on ext4 and on lsmfs, in one run, on
# one ext4 file system (a loop image made here, so both sit on the same disk with the same free
# space), and one table of MB/s and ops/s with lsmfs's ratio to ext4. Also the daemon's peak
# memory (VmHWM) over the whole lsmfs run.
#
# usage: sh tests/bench/bigbench.sh [bigbench options, default -s 1024 -n 20000 -a 2000 -d]
# env:   LSMFS (daemon, default fs/lsmfs), LSMFS_OPTS (extra -o options for lsmfs),
#        BIGBENCH_DIR (where the image goes, default /var/tmp)
# Needs root (the loop mount, dropping the page cache). Everything it mounts is unmounted on exit,
# also on failure or ^C.
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
LSMFS=${LSMFS:-$repo/fs/lsmfs}
LSMFS_OPTS=${LSMFS_OPTS:-}
[ "$(id -u)" = 0 ] || { echo "bigbench.sh: needs root (loop mount)" >&2; exit 1; }
base=$(mktemp -d "${BIGBENCH_DIR:-/var/tmp}/bigbench.XXXXXX") || exit 1
lsmfs_pid=""

cleanup() {
    if grep -q " $base/mnt " /proc/mounts; then
        fusermount3 -u "$base/mnt" 2>/dev/null || fusermount3 -uz "$base/mnt" 2>/dev/null
    fi
    if [ -n "$lsmfs_pid" ]; then
        i=0
        while kill -0 "$lsmfs_pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -0 "$lsmfs_pid" 2>/dev/null && kill -9 "$lsmfs_pid"
    fi
    grep -q " $base/img " /proc/mounts && { umount "$base/img" 2>/dev/null || umount -l "$base/img"; }
    rm -rf "$base"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bin=$here/bigbench
if [ ! -x "$bin" ] || [ "$bin" -ot "$here/bigbench.c" ]; then
    bin=$base/bigbench
    ${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -o "$bin" "$here/bigbench.c" || exit 1
fi
[ $# -gt 0 ] || set -- -s 1024 -n 20000 -a 2000 -d

truncate -s 8G "$base/ext4.img"
mkfs.ext4 -q -F "$base/ext4.img" || exit 1
mkdir "$base/img" "$base/mnt"
mount -o loop "$base/ext4.img" "$base/img" || exit 1
mkdir "$base/img/ext4"

echo "bigbench.sh: ext4 ..." >&2
"$bin" "$@" "$base/img/ext4" >"$base/ext4.out" || { echo "bigbench.sh: ext4 failed" >&2; exit 1; }
cat "$base/ext4.out" >&2

echo "bigbench.sh: lsmfs ..." >&2
# shellcheck disable=SC2086 # LSMFS_OPTS is a list of words
"$LSMFS" -f $LSMFS_OPTS "$base/img/lsmdata" "$base/mnt" >"$base/lsmfs.log" 2>&1 &
lsmfs_pid=$!
i=0
while ! grep -q " $base/mnt " /proc/mounts; do
    [ $i -ge 100 ] && { echo "bigbench.sh: lsmfs did not mount" >&2; cat "$base/lsmfs.log" >&2; exit 1; }
    sleep 0.1
    i=$((i + 1))
done
"$bin" "$@" "$base/mnt" >"$base/lsmfs.out" || { echo "bigbench.sh: lsmfs failed" >&2; exit 1; }
cat "$base/lsmfs.out" >&2
hwm=$(awk '$1 == "VmHWM:" { print $2 }' /proc/"$lsmfs_pid"/status)
fusermount3 -u "$base/mnt"

echo
echo "Large files: lsmfs vs ext4 (same loop-mounted ext4 image, same run; bigbench $*)"
echo
printf '| %-10s | %16s | %16s | %7s |\n' phase ext4 lsmfs ratio
printf '|%s|%s|%s|%s|\n' ------------ -----------------: -----------------: --------:
awk 'FNR == NR { v[$1] = $2; u[$1] = $3; next }
     { printf "| %-10s | %10.1f %-5s | %10.1f %-5s | %6.3fx |\n", $1, v[$1], u[$1], $2, $3,
              (v[$1] > 0 ? $2 / v[$1] : 0) }' "$base/ext4.out" "$base/lsmfs.out"
echo
echo "lsmfs peak memory (VmHWM): $((hwm / 1024)) MiB"
