# tests/helper.bash — shared setup and teardown for the lsmfs bats suites.
#
# Every test gets its own data directory ($DATA, not created: lsmfs must create it) and mount point
# ($MNT) under $T, a fresh per-test temporary directory.  mount_fs starts the daemon in foreground
# mode (-f) in the background so that its pid is known exactly ($LSMFS_PID), then waits until the
# mount shows in /proc/mounts.  Everything mounted or started here is recorded, and common_teardown
# unmounts it and stops only the processes it started, whether the test passed or failed.
#
# Environment: LSMFS (daemon binary, default fs/lsmfs of this tree), LSMCTL (the admin tool, default
# tools/lsmctl), LSMFS_TEST_OPTS (extra daemon arguments for every mount_fs, e.g.
# "-o writeback" to run the suites in that mode).

bats_require_minimum_version 1.5.0

REPO=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
: "${LSMFS:=$REPO/fs/lsmfs}"
: "${LSMCTL:=$REPO/tools/lsmctl}"

MOUNTS=()        # mount points to unmount at teardown
PIDS=()          # daemon pids this test started
CLEANUPS=()      # extra shell commands for teardown (run last, in reverse)

# Skips when FUSE cannot work here; fails when the daemon is not built.
require_fuse() {
    [ -c /dev/fuse ] || skip "/dev/fuse is missing: FUSE tests cannot run here"
    command -v fusermount3 >/dev/null || skip "fusermount3 is not installed"
    if [ ! -x "$LSMFS" ]; then
        echo "lsmfs binary not found at $LSMFS: run make first" >&2
        return 1
    fi
}

# Skips tests of strict close-to-open when LSMFS_TEST_OPTS turns on the kernel's page cache, which
# the man page says trades that guarantee away.
require_strict_close_to_open() {
    case " ${LSMFS_TEST_OPTS:-} " in
    *kernel_cache* | *writeback*) skip "close_to_open does not combine with $LSMFS_TEST_OPTS" ;;
    esac
}

require_root() {
    [ "$(id -u)" = 0 ] || skip "needs root"
}

# Makes DIR and mounts a tmpfs there with OPTIONS (-o); teardown unmounts it.
mount_tmpfs() {
    mkdir "$1"
    mount -t tmpfs -o "$2" tmpfs "$1"
    MOUNTS+=("$1")
    CLEANUPS+=("umount '$1' 2>/dev/null || umount -l '$1' 2>/dev/null")
}

# Creates $T, $DATA and $MNT for this test.
common_setup() {
    require_fuse
    T=$(mktemp -d "${BATS_TEST_TMPDIR:-/tmp}/lsmfs.XXXXXX")
    DATA=$T/data
    MNT=$T/mnt
    LOG=$T/lsmfs.log
    mkdir "$MNT"
}

# True while any thread of pid runs (a zombie does not count; a zombie thread-group leader whose
# other threads are still exiting does).
pid_alive() {
    local f s
    for f in /proc/"$1"/task/*/stat; do
        s=$(cat "$f" 2>/dev/null) || continue
        s=${s##*) }
        case ${s%% *} in Z | X) ;; *) return 0 ;; esac
    done
    return 1
}

is_mounted() {
    awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/mounts
}

# A plain function so that it fails a test (bats ignores the status of a `! cmd` line).
not_mounted() {
    ! is_mounted "$1"
}

# wait_gone PID [TENTHS]: waits up to TENTHS/10 s (default 100) for pid to exit.
wait_gone() {
    local i
    for ((i = 0; i < ${2:-100}; i++)); do
        pid_alive "$1" || return 0
        sleep 0.1
    done
    return 1
}

# mount_fs [OPTIONS...]: runs `lsmfs -f OPTIONS... $DATA $MNT` in the background, records its pid
# in LSMFS_PID and waits for the mount.  Fails (printing the daemon's output) if it exits first.
mount_fs() {
    # shellcheck disable=SC2086 # LSMFS_TEST_OPTS is a list of words
    echo "--- lsmfs -f ${LSMFS_TEST_OPTS:-} $* $DATA $MNT" >>"$LOG"
    "$LSMFS" -f ${LSMFS_TEST_OPTS:-} "$@" "$DATA" "$MNT" >>"$LOG" 2>&1 3>&- 4>&- </dev/null &
    LSMFS_PID=$!
    PIDS+=("$LSMFS_PID")
    MOUNTS+=("$MNT")
    wait_mounted "$MNT" "$LSMFS_PID"
}

# wait_mounted MNT PID: waits up to 10 s for MNT in /proc/mounts while PID runs.
wait_mounted() {
    local i
    for ((i = 0; i < 100; i++)); do
        if is_mounted "$1"; then
            return 0
        fi
        if ! pid_alive "$2"; then
            echo "lsmfs exited before mounting $1:" >&2
            cat "$LOG" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "lsmfs did not mount $1 within 10 s:" >&2
    cat "$LOG" >&2
    return 1
}

# Finds the pid of a daemonized lsmfs serving DATADIR on MNT (by its exact argv words).
find_daemon_pid() {
    local p
    for p in /proc/[0-9]*; do
        [ -r "$p/cmdline" ] || continue
        if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF -- "$1" &&
           tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF -- "$2"; then
            case $(tr '\0' '\n' <"$p/cmdline" | head -n1) in
            *lsmfs*) echo "${p#/proc/}"; return 0 ;;
            esac
        fi
    done
    return 1
}

# unmount_fs: clean unmount of $MNT with fusermount3 -u; waits for the daemon started by mount_fs to
# exit and sets DAEMON_STATUS to its exit status.
unmount_fs() {
    fusermount3 -u "$MNT" || return 1
    if ! wait_gone "$LSMFS_PID" 100; then
        echo "lsmfs (pid $LSMFS_PID) still running 10 s after fusermount3 -u" >&2
        return 1
    fi
    DAEMON_STATUS=0
    wait "$LSMFS_PID" || DAEMON_STATUS=$?
    return 0
}

# remount [OPTIONS...]: clean unmount, then mount again with OPTIONS.
remount() {
    unmount_fs && mount_fs "$@"
}

# kill_daemon: SIGKILL the daemon started by mount_fs and detach the dead mount.
kill_daemon() {
    kill -9 "$LSMFS_PID"
    wait_gone "$LSMFS_PID" 100
    wait "$LSMFS_PID" 2>/dev/null || true
    fusermount3 -uz "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
}

common_teardown() {
    local i m p status=0
    MOUNTS=("${MNT:-}" "${MOUNTS[@]}")     # $MNT even if a failed test mounted it unrecorded
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[i]}
        if is_mounted "$m"; then
            fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null ||
                umount -l "$m" 2>/dev/null || true
        fi
    done
    for p in "${PIDS[@]}"; do
        [ -n "$p" ] || continue
        if ! wait_gone "$p" 50; then
            echo "# killing lsmfs pid $p: still running after unmount" >&2
            kill -9 "$p" 2>/dev/null || true
        fi
    done
    for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUPS[i]}" || true
    done
    # a sanitizer build of the daemon (make check) reports memory errors and leaks on stderr
    if [ -s "${LOG:-/nonexistent}" ] &&
       grep -Eq 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$LOG"; then
        echo "# the daemon reported a sanitizer error:" >&2
        grep -E -A12 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$LOG" | head -n 40 | sed 's/^/#   /' >&2
        status=1
    fi
    if [ -z "${BATS_TEST_COMPLETED:-}" ] && [ -s "${LOG:-/nonexistent}" ]; then
        echo "# lsmfs output:" >&2
        tail -n 40 "$LOG" | sed 's/^/#   /' >&2
    fi
    for m in "${MOUNTS[@]}"; do
        if [ -n "$m" ] && is_mounted "$m"; then
            echo "# $m is still mounted: leaving $T in place" >&2
            return 0
        fi
    done
    [ -n "${T:-}" ] && rm -rf "$T"
    return "$status"
}

# Checks that `run` ended with an errno-style message among the given ones.
assert_output_has_one_of() {
    local s
    for s in "$@"; do
        [[ $output == *"$s"* ]] && return 0
    done
    echo "expected one of: $* — got (status $status): $output" >&2
    return 1
}

# Fails with a message unless "$1" == "$2".
assert_eq() {
    if [ "$1" != "$2" ]; then
        printf 'expected: %s\n     got: %s\n' "$2" "$1" >&2
        return 1
    fi
}

# Makes sure the admin tool is built (the Makefile builds tools/%).
require_lsmctl() {
    if [ ! -x "$LSMCTL" ]; then
        make -s -C "$REPO" tools/lsmctl >/dev/null 2>&1 || true
    fi
    if [ ! -x "$LSMCTL" ]; then
        echo "admin tool $LSMCTL is not built (make tools/lsmctl)" >&2
        return 1
    fi
}
