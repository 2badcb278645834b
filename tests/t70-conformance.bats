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

@test "a directory's times, st_nlink and set-group-ID bit survive a remount; API keys count" {
    require_lsmctl
    mkdir -p "$MNT/d/a" "$MNT/d/b/c"
    echo x >"$MNT/d/f"
    chmod 2775 "$MNT/d/b"
    mkdir "$MNT/d/b/s"
    rm "$MNT/d/f"
    before=$(stat -c '%n %h %y %z %a' "$MNT" "$MNT/d" "$MNT/d/b" "$MNT/d/b/s")
    unmount_fs
    # a directory made only by keys below it counts its subdirectories too
    echo v | "$LSMCTL" -d "$DATA" put imp/x/y
    echo v | "$LSMCTL" -d "$DATA" put imp/z/w/v
    echo v | "$LSMCTL" -d "$DATA" put imp/file
    mount_fs -o allow_other
    assert_eq "$(stat -c '%n %h %y %z %a' "$MNT" "$MNT/d" "$MNT/d/b" "$MNT/d/b/s")" \
        "$(sed "1s|^\($MNT\) 3 |\1 4 |" <<<"$before")"   # the root gained imp/
    assert_eq "$(stat -c %h "$MNT/imp" "$MNT/imp/z")" "4
3"
}

# libfuse's test/test_syscalls.c is another project's code and stays out of this tree: build it
# yourself (cc -D_GNU_SOURCE -DHAVE_COPY_FILE_RANGE with an empty config.h) and point
# LSMFS_TEST_SYSCALLS at the binary. The tests it fails are named (numbers change between
# versions) and must be exactly those lsmfs(1) STANDARDS lists.
@test "libfuse's test_syscalls fails only what lsmfs(1) documents (with LSMFS_TEST_SYSCALLS)" {
    [ -n "${LSMFS_TEST_SYSCALLS:-}" ] || skip "LSMFS_TEST_SYSCALLS (a built libfuse test_syscalls) is not set"
    mkdir "$MNT/ts"
    run "$LSMFS_TEST_SYSCALLS" "$MNT/ts"
    echo "$output" >"$T/syscalls.out"
    # link, link-unlink-link: hard links; utime: access times
    assert_eq "$(grep -v ' OK$' "$T/syscalls.out" | sed -n 's/^ *[0-9]* \[\([^]]*\)\].*/\1/p' |
        sort -u | tr '\n' ' ')" "link link-unlink-link utime "
    # Its checks of unlinked files (-u: fstat of an O_PATH descriptor kept from every test) run
    # only after a run with no failure, so each test that passed runs again alone with them. The
    # symlink test fails alone anywhere (it takes the length of the previous test's file name).
    for n in $(grep ' OK$' "$T/syscalls.out" | grep -v '\[symlink\]' | awk '{print $1}'); do
        run "$LSMFS_TEST_SYSCALLS" "$MNT/ts" "$n" -u
        if [ "$status" -ne 0 ]; then
            echo "test $n alone with -u: $output" >&2
            return 1
        fi
    done
}
