#!/bin/sh
# run.sh — what `make bench` runs: the engine benchmark (tests/bench/db_bench, liblsm beside LevelDB
# and RocksDB), then, when they exist, the file-system benchmarks tests/bench/fsbench.sh (small
# files), as root tests/bench/bigbench.sh (large files) and tests/bench/realbench.sh (real
# programs), and last tests/bench/plot.sh, when gnuplot is installed: one PNG of lsmfs's speed
# relative to ext4 from fsbench's and realbench's data.
#
# Arguments go to db_bench unchanged (e.g. `sh tests/bench/run.sh --num=100000`). Every database
# lives under one temporary directory made here (on $TMPDIR, default /tmp) and removed on exit,
# even when a benchmark fails or is interrupted. fsbench's and realbench's data files and the plot
# are kept in BENCH_OUT (default a new directory lsmfs-bench-out.XXXXXX on $TMPDIR), printed at the
# end; with BENCH_PLOT_REPO=1 the plot goes to tests/bench/ratios.png instead (the README's). The
# exit status is non-zero if any program fails; all still run, so one failure does not hide the
# others' numbers.
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

out=${BENCH_OUT:-}
if [ -z "$out" ]; then
    out=$(mktemp -d "${TMPDIR:-/tmp}/lsmfs-bench-out.XXXXXX") || exit 1
fi
mkdir -p "$out" || exit 1

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
    (cd "$top" && FSBENCH_OUT="$out" sh "$here/fsbench.sh") || {
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

if [ -f "$here/realbench.sh" ] && [ "$(id -u)" = 0 ]; then
    echo
    echo "== realbench.sh"
    (cd "$top" && REALBENCH_OUT="$out" bash "$here/realbench.sh") || {
        rc=$?
        echo "run.sh: realbench.sh failed (exit $rc)" >&2
        status=1
    }
fi

if command -v gnuplot >/dev/null 2>&1; then
    set --
    for f in "$out/fsbench.dat" "$out/realbench.dat"; do
        [ -s "$f" ] && set -- "$@" "$f"
    done
    if [ $# -gt 0 ]; then
        echo
        echo "== plot.sh"
        data="$*"
        if [ "${BENCH_PLOT_REPO:-0}" = 1 ]; then set -- -r "$@"; fi
        sh "$here/plot.sh" "$@" || {
            rc=$?
            echo "run.sh: plot.sh failed (exit $rc)" >&2
            status=1
        }
        # the same plot for -o uring, when it ran (ratios-uring.png beside the other)
        if grep -q "lsmfs-uring" $data; then
            where=$out
            [ "${BENCH_PLOT_REPO:-0}" = 1 ] && where=$here
            sh "$here/plot.sh" -m lsmfs-uring -o "$where/ratios-uring.png" $data || status=1
        fi
    fi
fi

echo
echo "run.sh: data files and logs in $out"
exit $status
