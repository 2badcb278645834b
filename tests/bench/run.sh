#!/bin/sh
# run.sh — what `make bench` runs: the engine benchmark (tests/bench/db_bench, liblsm beside LevelDB
# and RocksDB), then, when they exist, the file-system benchmarks tests/bench/fsbench.sh (small
# files) and, as root, tests/bench/bigbench.sh (large files).
#
# Arguments go to db_bench unchanged (e.g. `sh tests/bench/run.sh --num=100000`). Every database
# lives under one temporary directory made here (on $TMPDIR, default /tmp) and removed on exit,
# even when a benchmark fails or is interrupted. The exit status is non-zero if either program
# fails; both still run, so one failure does not hide the other's numbers.
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

if [ ! -x "$here/db_bench" ]; then
    echo "run.sh: $here/db_bench is not built; run 'make all' first" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/lsmfs-bench.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

status=0

echo "== db_bench"
"$here/db_bench" --dir="$work" "$@" || {
    rc=$?
    echo "run.sh: db_bench failed (exit $rc)" >&2
    status=1
}

if [ -f "$here/fsbench.sh" ]; then
    echo
    echo "== fsbench.sh"
    (cd "$top" && sh "$here/fsbench.sh") || {
        rc=$?
        echo "run.sh: fsbench.sh failed (exit $rc)" >&2
        status=1
    }
fi

if [ -f "$here/bigbench.sh" ] && [ "$(id -u)" = 0 ]; then
    echo
    echo "== bigbench.sh"
    (cd "$top" && sh "$here/bigbench.sh") || {
        rc=$?
        echo "run.sh: bigbench.sh failed (exit $rc)" >&2
        status=1
    }
fi

exit $status
