#!/bin/sh
# Runs every suite — the engine's C tests (cmocka, TAP output) and the daemon's bats suites — and
# ends with one line "N passed, N failed". Exits non-zero when anything failed. A test binary that
# dies without reporting a failure (a crash, a sanitizer report) counts as one failed test.
cd "$(dirname "$0")/.." || exit 2
pass=0
fail=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

count() { # $1 = suite name, $2 = exit status; reads TAP from $log
    p=$(grep -c '^ok ' "$log")
    f=$(grep -c '^not ok ' "$log")
    if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "not ok - $1 exited with status $2 without reporting a failed test"
    fi
    printf '# %-28s %5d passed, %d failed\n' "$1" "$p" "$f"
    pass=$((pass + p))
    fail=$((fail + f))
}

# A C suite whose binary is missing was left out of the Makefile's TESTS list: it would never run.
for c in tests/engine/test_*.c; do
    [ -x "${c%.c}" ] && continue
    echo "not ok - ${c%.c} is not built: is it in TESTS in the Makefile?"
    fail=$((fail + 1))
done

for t in tests/engine/test_*; do
    case "$t" in *.c|*.d|*.o) continue ;; esac
    [ -x "$t" ] || continue
    echo "# running $t"
    CMOCKA_MESSAGE_OUTPUT=TAP "$t" >"$log" 2>&1
    rc=$?
    grep -v '^ok ' "$log"
    count "$(basename "$t")" "$rc"
done

if [ -z "$LSM_SKIP_BATS" ] && ls tests/*.bats >/dev/null 2>&1; then
    for s in tests/*.bats; do
        echo "# running $s"
        bats --tap "$s" >"$log" 2>&1
        rc=$?
        grep -v '^ok ' "$log"
        count "$(basename "$s")" "$rc"
    done
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
