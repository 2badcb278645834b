#!/usr/bin/env bats
# t70 — POSIX conformance, lsmfs against the kernel's tmpfs: tests/conformance.py runs the same
# named cases (errno of every error case, which timestamps and link counts change, stat fields,
# permissions as another user) on both in one run; a case whose outcome differs fails the test
# unless conformance.py lists it as documented in lsmfs(1) or as a known bug.

load helper

setup() {
    common_setup
    require_root
    # Cases run as uid 65534 too, which must reach both mounts: bats's temporary directories are
    # private (0700), so both live in a directory of their own under /tmp, searchable by all.
    P=$(mktemp -d /tmp/lsmfs-t70.XXXXXX)
    chmod 0755 "$P"
    CLEANUPS+=("rmdir '$P/mnt' '$P/tmpfs' '$P'")
    MNT=$P/mnt
    mkdir "$MNT"
    mount_fs -o allow_other
    mount_tmpfs "$P/tmpfs" mode=0755
}

teardown() {
    common_teardown
}

@test "conformance cases give the same outcome on lsmfs and on tmpfs" {
    python3 "$REPO/tests/conformance.py" run "$P/tmpfs" >"$T/tmpfs.out"
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
