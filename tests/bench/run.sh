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

# part NAME COMMAND...: prints the heading, runs the command, and on failure says so and sets
# status, so that one failure does not hide the other parts' numbers
part() {
    name=$1
    shift
    echo
    echo "== $name"
    "$@" || {
        rc=$?
        echo "run.sh: $name failed (exit $rc)" >&2
        status=1
    }
}

fsbench() { (cd "$top" && FSBENCH_OUT="$out" sh "$here/fsbench.sh"); }
bigbench() { (cd "$top" && sh "$here/bigbench.sh"); }
realbench() { (cd "$top" && REALBENCH_OUT="$out" bash "$here/realbench.sh"); }

part db_bench "$here/db_bench" --dir="$work" "$@"
[ -f "$here/fsbench.sh" ] && part fsbench.sh fsbench
[ -f "$here/bigbench.sh" ] && [ "$(id -u)" = 0 ] && part bigbench.sh bigbench
[ -f "$here/realbench.sh" ] && [ "$(id -u)" = 0 ] && part realbench.sh realbench

if command -v gnuplot >/dev/null 2>&1; then
    set --
    for f in "$out/fsbench.dat" "$out/realbench.dat"; do
        [ -s "$f" ] && set -- "$@" "$f"
    done
    if [ $# -gt 0 ]; then
        where=$out
        [ "${BENCH_PLOT_REPO:-0}" = 1 ] && where=$here
        part plot.sh sh "$here/plot.sh" -o "$where/ratios.png" "$@"
        # the same plot for -o uring, when it ran (ratios-uring.png beside the other)
        if grep -q "lsmfs-uring" "$@"; then
            part "plot.sh -m lsmfs-uring" sh "$here/plot.sh" -m lsmfs-uring \
                -o "$where/ratios-uring.png" "$@"
        fi
    fi
fi

echo
echo "run.sh: data files and logs in $out"
exit $status
