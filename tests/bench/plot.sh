#!/bin/sh
# plot.sh — one PNG of lsmfs's speed relative to ext4 (issue 16): a bar per fsbench phase (lsmfs's
# ops/s over ext4's) and per real program of realbench (ext4's wall time over lsmfs's), so that
# higher is better everywhere and ext4 is 1. Log scale; a line at 1 (ext4), one at 0.5 (the target
# for real programs: at most twice ext4's time) and one at 1/3 (fsx's target, at most 3x).
#
# usage: sh tests/bench/plot.sh [-r | -o FILE.png] [-m MOUNT] DATA...
#   DATA  fsbench.dat (written by fsbench.sh when FSBENCH_OUT is set: ratios, one column per
#         lsmfs mount, "lsmfs/ext4" ...) and/or realbench.dat (written by realbench.sh: seconds,
#         one column per file system, "ext4" "lsmfs" ...); told apart by their header lines
#   -r    write tests/bench/ratios.png (the plot the README shows)
#   -o    write FILE.png; default: ratios.png beside the first DATA file
#   -m    the lsmfs mount to plot (a column name without "/ext4": default lsmfs, the default
#         mount; e.g. lsmfs-writeback)
# Needs gnuplot (Debian gnuplot-nox); uses its pngcairo terminal when it has one, else png.
# Prints the path it wrote. The title carries the newest DATA file's date (UTC).
set -u

here=$(cd "$(dirname "$0")" && pwd)
out=""
mount=lsmfs
while getopts "ro:m:" c; do
    case $c in
    r) out=$here/ratios.png ;;
    o) out=$OPTARG ;;
    m) mount=$OPTARG ;;
    *) echo "usage: plot.sh [-r | -o FILE.png] [-m MOUNT] DATA..." >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -eq 0 ]; then
    echo "usage: plot.sh [-r | -o FILE.png] [-m MOUNT] DATA..." >&2
    exit 2
fi
command -v gnuplot >/dev/null || { echo "plot.sh: gnuplot is not installed (Debian gnuplot-nox)" >&2; exit 1; }
[ -n "$out" ] || out=$(dirname "$1")/ratios.png

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plot.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# bars.dat: "LABEL RATIO GROUP" (group 1: fsbench, 2: real programs), in the order given
newest=0        # the newest DATA file's mtime
for f; do
    [ -r "$f" ] || { echo "plot.sh: cannot read $f" >&2; exit 1; }
    t=$(stat -c %Y "$f")
    [ "$t" -gt "$newest" ] && newest=$t
    awk -v m="$mount" -v f="$f" '
        NR == 1 {
            for (i = 3; i <= NF; i++) col[$i] = i - 1   # "# phase A B ...": A is field 2
            if ((m "/ext4") in col) { kind = 1; c = col[m "/ext4"] }
            else if ("ext4" in col && m in col) { kind = 2; e = col["ext4"]; c = col[m] }
            else { print "plot.sh: " f ": no column " m "/ext4 or ext4 and " m > "/dev/stderr"; exit 1 }
            next
        }
        kind == 1 && $c != "-" { print $1, $c, 1; next }
        kind == 2 && $c != "-" && $e != "-" && $c > 0 { printf "%s %.4f 2\n", $1, $e / $c; next }
        { print "plot.sh: " f ": " $1 ": no value for " m ", left out" > "/dev/stderr" }
    ' "$f" >>"$tmp/bars.dat" || exit 1
done
[ -s "$tmp/bars.dat" ] || { echo "plot.sh: nothing to plot" >&2; exit 1; }

term=png
gnuplot -e 'set terminal' 2>&1 | grep -qw pngcairo && term=pngcairo
day=$(date -u -d "@$newest" +%Y-%m-%d)
what=$mount
[ "$mount" = lsmfs ] && what="lsmfs (default mount)"
# the y range: every bar and the three lines, with room for the value labels
range=$(awk 'BEGIN { lo = 0.3; hi = 1 }
             { if ($2 < lo) lo = $2; if ($2 > hi) hi = $2 }
             END { printf "%g:%g", lo / 2, hi * 3 }' "$tmp/bars.dat")

gnuplot <<EOF || { echo "plot.sh: gnuplot failed" >&2; exit 1; }
set terminal $term size 1500,650 font ",10"
set output "$out"
set title "$what speed relative to ext4 (in each benchmark, ext4 and lsmfs on one ext4 image in one run; $day)"
set ylabel "speed relative to ext4 (ext4 = 1, higher is better, log scale)"
set xlabel "fsbench phase (ops/s ratio) and real program (ext4 time / lsmfs time)"
set logscale y
set yrange [$range]
set xrange [-0.7:*]
set grid ytics
set xtics rotate by -40 left nomirror
set key outside right top vertical
set boxwidth 0.7
set style fill solid 0.8 noborder
plot "$tmp/bars.dat" using 0:(\$3 == 1 ? \$2 : NaN):xtic(1) with boxes lc rgb "#4a7ebb" title "fsbench phase", \
     "" using 0:(\$3 == 2 ? \$2 : NaN) with boxes lc rgb "#d9822b" title "real program", \
     "" using 0:2:(sprintf("%.2f", \$2)) with labels offset 0,0.7 font ",8" notitle, \
     1 with lines lc rgb "black" lw 2 title "ext4", \
     0.5 with lines lc rgb "#c0392b" dt 2 lw 2 title "target, real programs (time <= 2x ext4)", \
     1.0/3 with lines lc rgb "#7f8c8d" dt 3 lw 2 title "target, fsx (time <= 3x ext4)"
EOF
echo "plot.sh: wrote $out"
