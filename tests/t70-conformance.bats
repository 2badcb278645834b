#!/usr/bin/env bats
# t70 — POSIX conformance, lsmfs against the kernel's tmpfs: tests/conformance.py runs the same
# named cases (errno of every error case, which timestamps and link counts change, stat fields,
# permissions as another user) on both in one run; a case whose outcome differs fails the test
# unless conformance.py lists it as documented in lsmfs(1) or as a known bug.

load helper

setup() {
    common_setup
    require_root
    mount_fs -o allow_other
    mount_tmpfs "$T/tmpfs" mode=0755
}

teardown() {
    common_teardown
}

@test "conformance cases give the same outcome on lsmfs and on tmpfs" {
    python3 "$REPO/tests/conformance.py" run "$T/tmpfs" >"$T/tmpfs.out"
    python3 "$REPO/tests/conformance.py" run "$MNT" >"$T/lsmfs.out"
    run python3 "$REPO/tests/conformance.py" compare "$T/lsmfs.out" "$T/tmpfs.out"
    # the table, as a TAP comment line
    grep '^# lsmfs vs tmpfs:' <<<"$output" >&3
    if [ "$status" -ne 0 ]; then
        echo "$output" >&2
        return 1
    fi
    grep -E '^(documented|known bug|note)' <<<"$output" | sed 's/^/# /' >&3 || true
}
