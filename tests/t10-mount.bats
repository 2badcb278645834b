#!/usr/bin/env bats
# t10 — mounting and unmounting: the command line, options, daemon lifecycle, mount(8) helpers.

load helper

setup() {
    common_setup
}

teardown() {
    common_teardown
    # a test that changed the fuse module's enable_uring puts it back
    if [ -n "${URING_SAVED:-}" ]; then
        echo "$URING_SAVED" >/sys/module/fuse/parameters/enable_uring
    fi
}

URING_PARAM=/sys/module/fuse/parameters/enable_uring

# uring_param VALUE: sets the fuse module's enable_uring for this test (teardown restores it);
# skips where the kernel has no FUSE over io_uring or the test cannot change it.
uring_param() {
    [ -e "$URING_PARAM" ] || skip "this kernel has no FUSE over io_uring (Linux 6.14+)"
    if [ "$(cat "$URING_PARAM")" != "$1" ]; then
        [ "$(id -u)" = 0 ] || skip "needs root to set enable_uring=$1"
        URING_SAVED=$(cat "$URING_PARAM")
        echo "$1" >"$URING_PARAM"
    fi
}

@test "-V and --version print the version and exit 0" {
    run "$LSMFS" -V 3>&-
    [ "$status" -eq 0 ]
    [[ $output =~ [0-9]+\.[0-9]+ ]]
    [[ $output == *lsmfs* ]]
    run "$LSMFS" --version 3>&-
    [ "$status" -eq 0 ]
    [[ $output =~ [0-9]+\.[0-9]+ ]]
}

@test "-h and --help describe usage and lsmfs's own options, exit 0" {
    run "$LSMFS" -h 3>&-
    [ "$status" -eq 0 ]
    [[ $output == *DATADIR* ]]
    [[ $output == *MOUNTPOINT* ]]
    for o in memtable_size cache_size compression sync max_file_size; do
        [[ $output == *"$o"* ]] || { echo "-h does not mention $o" >&2; false; }
    done
    run "$LSMFS" --help 3>&-
    [ "$status" -eq 0 ]
    [[ $output == *memtable_size* ]]
}

@test "no arguments or one argument: usage error, non-zero exit, nothing mounted" {
    run "$LSMFS" 3>&-
    [ "$status" -ne 0 ]
    [ -n "$output" ]
    run "$LSMFS" "$DATA" 3>&-
    [ "$status" -ne 0 ]
    [ -n "$output" ]
    not_mounted "$MNT"
}

@test "daemon mode returns once mounted; DATADIR created 0700; fusermount3 -u ends the daemon" {
    run "$LSMFS" "$DATA" "$MNT" 3>&-
    [ "$status" -eq 0 ]
    MOUNTS+=("$MNT")
    is_mounted "$MNT"                       # ready on return: no waiting
    pid=$(find_daemon_pid "$DATA" "$MNT")
    PIDS+=("$pid")
    [ -d "$DATA" ]
    assert_eq "$(stat -c %a "$DATA")" 700
    [ -e "$DATA/LOCK" ]
    echo hello >"$MNT/greeting"
    fusermount3 -u "$MNT"
    wait_gone "$pid" 100
    not_mounted "$MNT"
    mount_fs
    assert_eq "$(cat "$MNT/greeting")" hello
}

@test "foreground -f: unmount makes the daemon exit with status 0" {
    mount_fs
    pid_alive "$LSMFS_PID"
    echo x >"$MNT/k"
    unmount_fs
    assert_eq "$DAEMON_STATUS" 0
    not_mounted "$MNT"
}

@test "-s (single-threaded) mount serves reads and writes" {
    mount_fs -s
    seq 1 1000 >"$MNT/numbers"
    mkdir "$MNT/d"
    echo y >"$MNT/d/y"
    assert_eq "$(wc -l <"$MNT/numbers")" 1000
    assert_eq "$(ls "$MNT")" "d
numbers"
}

@test "serving loops: default, -o workers=0, -o spin=0, -o mt, sync=close and sync=always all serve" {
    for opts in "" "-o workers=0" "-o spin=0" "-o mt" "-o sync=close,workers=2" "-o sync=always" \
                "-o mt,max_threads=2"; do
        mount_fs $opts
        seq 1 200000 >"$MNT/big"            # over 64 KiB: a large file's reads go to a worker
        python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"synced\n"); os.fsync(fd); os.close(fd)
d = os.open(sys.argv[2], os.O_RDONLY); os.fsync(d); os.close(d)' "$MNT/s" "$MNT"
        fallocate -l 1M "$MNT/fa"
        assert_eq "$(cat "$MNT/s")" synced
        assert_eq "$(stat -c %s "$MNT/fa")" 1048576
        unmount_fs
        mount_fs
        assert_eq "$(sha256sum <"$MNT/big")" "$(seq 1 200000 | sha256sum)"
        assert_eq "$(cat "$MNT/s")" synced
        rm "$MNT/big" "$MNT/s" "$MNT/fa"
        unmount_fs
    done
}

@test "-o uring: the rings serve writes, fsync, fallocate, large reads and listings that survive a remount" {
    uring_param Y
    mount_fs -o uring
    grep -q "uring: serving requests on" "$LOG"
    seq 1 200000 >"$MNT/big"
    python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"synced\n"); os.fsync(fd); os.close(fd)
d = os.open(sys.argv[2], os.O_RDONLY); os.fsync(d); os.close(d)' "$MNT/s" "$MNT"
    fallocate -l 1M "$MNT/fa"
    mkdir "$MNT/d"
    for i in $(seq 1 300); do echo "$i" >"$MNT/d/f$i"; done
    mv "$MNT/d/f1" "$MNT/d/g1"
    rm "$MNT/d/f2"
    assert_eq "$(ls "$MNT/d" | wc -l)" 299
    assert_eq "$(cat "$MNT/s")" synced
    assert_eq "$(sha256sum <"$MNT/big")" "$(seq 1 200000 | sha256sum)"
    unmount_fs
    assert_eq "$DAEMON_STATUS" 0
    grep -q "requests came by the rings" "$LOG"
    mount_fs -o uring
    assert_eq "$(sha256sum <"$MNT/big")" "$(seq 1 200000 | sha256sum)"
    assert_eq "$(cat "$MNT/s") $(stat -c %s "$MNT/fa") $(cat "$MNT/d/g1") $(ls "$MNT/d" | wc -l)" \
              "synced 1048576 1 299"
    unmount_fs
}

@test "-o uring when the kernel does not offer it: one warning, and /dev/fuse serves" {
    uring_param N
    mount_fs -o uring
    echo z >"$MNT/z"
    assert_eq "$(cat "$MNT/z")" z
    unmount_fs
    assert_eq "$(grep -c "does not offer FUSE over io_uring" "$LOG")" 1
    ! grep -q "requests came by the rings" "$LOG"
}

@test "-o workers and -o spin out of range: a clear error, nothing mounted" {
    for bad in workers=17 workers=-1 workers=x spin=-5 spin=1000001 spin=; do
        run "$LSMFS" -f -o "$bad" "$DATA" "$MNT"
        [ "$status" -ne 0 ]
        [[ "$output" == *"invalid ${bad%%=*}"* ]] || { echo "-o $bad: $output"; false; }
        ! grep -q " $MNT " /proc/mounts
    done
}

@test "-d prints FUSE debug output and still serves requests" {
    mount_fs -d
    echo z >"$MNT/z"
    assert_eq "$(cat "$MNT/z")" z
    unmount_fs
    grep -qi init "$LOG"
    [ "$(wc -l <"$LOG")" -gt 5 ]
}

@test "own options accepted: memtable_size, cache_size, compression, sync, max_file_size (K/M/G)" {
    mount_fs -o memtable_size=64K,cache_size=1M,compression=lz4,sync=always,max_file_size=1G
    echo a >"$MNT/a"
    assert_eq "$(cat "$MNT/a")" a
    remount -o sync=close,compression=zstd -o memtable_size=1M
    assert_eq "$(cat "$MNT/a")" a
    remount -o sync=fsync,compression=none,cache_size=0K,max_file_size=2M
    assert_eq "$(cat "$MNT/a")" a
}

@test "data written under each compression reads back under the others" {
    python3 - "$T/src" <<'EOF'
import os, sys
os.mkdir(sys.argv[1])
for i in range(300):
    with open(os.path.join(sys.argv[1], "f%03d" % i), "w") as f:
        f.write(("line %d of file %d, compressible text\n" % (0, i)) * (50 + i))
EOF
    mount_fs -o compression=zstd,memtable_size=64K
    mkdir "$MNT/z"
    cp "$T"/src/* "$MNT/z/"
    remount -o compression=lz4,memtable_size=64K
    mkdir "$MNT/l"
    cp "$T"/src/* "$MNT/l/"
    remount -o compression=none,memtable_size=64K
    mkdir "$MNT/n"
    cp "$T"/src/* "$MNT/n/"
    remount -o compression=zstd
    diff -r "$T/src" "$MNT/z"
    diff -r "$T/src" "$MNT/l"
    diff -r "$T/src" "$MNT/n"
}

@test "standard FUSE options: fsname shows in /proc/mounts; allow_other, default_permissions accepted" {
    mount_fs -o fsname=lsmtest42,allow_other,default_permissions
    awk -v m="$MNT" '$2 == m { print $1, $4 }' /proc/mounts >"$T/line"
    grep -q '^lsmtest42 ' "$T/line"
    grep -q allow_other "$T/line"
    grep -q default_permissions "$T/line"
    echo v >"$MNT/k"
    assert_eq "$(cat "$MNT/k")" v
}

@test "-o ro: files readable, writes refused with EROFS" {
    mount_fs
    echo keep >"$MNT/k"
    remount -o ro
    assert_eq "$(cat "$MNT/k")" keep
    run bash -c "echo new >'$MNT/k'"
    [ "$status" -ne 0 ]
    [[ $output == *"Read-only file system"* ]]
    run touch "$MNT/new"
    [ "$status" -ne 0 ]
    [[ $output == *"Read-only file system"* ]]
    for cmd in "mkdir $MNT/d" "rm $MNT/k" "chmod 600 $MNT/k" "mv $MNT/k $MNT/k2" "truncate -s 0 $MNT/k"; do
        run $cmd
        [ "$status" -ne 0 ]
        [[ $output == *"Read-only file system"* ]] || { echo "$cmd: $output" >&2; false; }
    done
    assert_eq "$(ls "$MNT")" k
    assert_eq "$(cat "$MNT/k")" keep
}

@test "mount.fuse3 'lsmfs#DATADIR' with lsmfs on PATH (fstab form)" {
    run env PATH="$(dirname "$LSMFS"):$PATH" mount.fuse3 "lsmfs#$DATA" "$MNT" -o memtable_size=64K,sync=close 3>&-
    [ "$status" -eq 0 ]
    MOUNTS+=("$MNT")
    is_mounted "$MNT"
    PIDS+=("$(find_daemon_pid "$DATA" "$MNT")")
    echo via-helper >"$MNT/k"
    assert_eq "$(cat "$MNT/k")" via-helper
    fusermount3 -u "$MNT"
    wait_gone "${PIDS[-1]}" 100
    mount_fs
    assert_eq "$(cat "$MNT/k")" via-helper
}

@test "mount -t fuse.lsmfs DATADIR MNT -o ... (mount.fuse3 runs lsmfs from mount's PATH)" {
    require_root
    # mount(8) gives helpers PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:...; make install puts
    # lsmfs in /usr/local/bin, so a temporary link there stands for the installed program
    link=/usr/local/bin/lsmfs
    if [ -e "$link" ] || [ -L "$link" ]; then
        skip "$link already exists (installed lsmfs?): not replacing it"
    fi
    ln -s "$LSMFS" "$link"
    CLEANUPS+=("rm -f $link")
    run mount -t fuse.lsmfs "$DATA" "$MNT" -o memtable_size=64K,sync=fsync 3>&-
    [ "$status" -eq 0 ]
    MOUNTS+=("$MNT")
    is_mounted "$MNT"
    awk -v m="$MNT" '$2 == m { print $3 }' /proc/mounts | grep -q '^fuse'
    PIDS+=("$(find_daemon_pid "$DATA" "$MNT")")
    echo via-mount >"$MNT/k"
    umount "$MNT"
    wait_gone "${PIDS[-1]}" 100
    mount_fs
    assert_eq "$(cat "$MNT/k")" via-mount
}

@test "data and directories persist across unmount and mount" {
    mount_fs
    mkdir -p "$MNT/a/b"
    printf 'one\n' >"$MNT/a/b/one"
    printf 'two\n' >"$MNT/two"
    mkdir "$MNT/empty"
    remount
    assert_eq "$(cat "$MNT/a/b/one")" one
    assert_eq "$(cat "$MNT/two")" two
    [ -d "$MNT/empty" ]
    assert_eq "$(ls "$MNT")" "a
empty
two"
}

@test "only the daemon's main thread takes SIGTERM, SIGHUP and SIGINT" {
    # libfuse's loop sleeps on the main thread until a signal handler runs there. If another
    # thread took the signal, the daemon would stay mounted until the next request woke it.
    mount_fs
    echo x >"$MNT/busy"     # requests and a put: libfuse workers and engine threads all started
    local want=$(((1 << (1 - 1)) | (1 << (2 - 1)) | (1 << (15 - 1))))   # SIGHUP, SIGINT, SIGTERM
    local task tid blk others=0
    for task in /proc/"$LSMFS_PID"/task/*; do
        tid=${task##*/}
        blk=$(awk '/^SigBlk:/ { print $2 }' "$task/status")
        if [ "$tid" = "$LSMFS_PID" ]; then
            (((16#$blk & want) == 0)) || { echo "main thread blocks $blk" >&2; false; }
        else
            others=$((others + 1))
            (((16#$blk & want) == want)) ||
                { echo "thread $tid ($(cat "$task/comm")) accepts them: SigBlk $blk" >&2; false; }
        fi
    done
    [ "$others" -ge 4 ]     # flush, two compaction threads, the reclaim thread, libfuse workers
}

@test "SIGTERM, SIGHUP and SIGINT unmount cleanly: the daemon exits 0 and every closed file is there" {
    # The daemon starts with these signals at their defaults, whatever the runner ignores (nohup
    # ignores SIGHUP, a shell's background jobs ignore SIGINT): libfuse, like most daemons, leaves
    # an ignored signal ignored.
    local wrap="$BATS_TEST_TMPDIR/lsmfs-default-signals"
    printf '#!/bin/sh\nexec env --default-signal=HUP,INT,TERM "%s" "$@"\n' "$LSMFS" >"$wrap"
    chmod +x "$wrap"
    LSMFS=$wrap
    for sig in TERM HUP INT; do
        mount_fs
        echo "before $sig" >"$MNT/$sig"
        kill -"$sig" "$LSMFS_PID"
        wait_gone "$LSMFS_PID" 100
        st=0
        wait "$LSMFS_PID" || st=$?
        assert_eq "$st" 0
        not_mounted "$MNT"
    done
    mount_fs
    assert_eq "$(cat "$MNT/TERM" "$MNT/HUP" "$MNT/INT")" "before TERM
before HUP
before INT"
}

@test "DATADIR and MOUNTPOINT swapped: refused, the database stays visible and nothing is created" {
    mount_fs
    echo precious >"$MNT/k"
    unmount_fs
    mkdir "$T/empty"
    run "$LSMFS" -f "$T/empty" "$DATA" 3>&-
    [ "$status" -ne 0 ]
    [[ $output == *"swap"* ]]
    not_mounted "$DATA"
    [ -z "$(ls -A "$T/empty")" ]
    run "$LSMFS" -f "$T/new" "$DATA" 3>&-
    [ "$status" -ne 0 ]
    [ ! -e "$T/new" ]
    [ -e "$DATA/CURRENT" ]
    mount_fs
    assert_eq "$(cat "$MNT/k")" precious
}

@test "a DATADIR holding other files and no database is refused and left as it was" {
    mkdir -p "$DATA/photos"
    echo mine >"$DATA/notes.txt"
    run "$LSMFS" -f "$DATA" "$MNT" 3>&-
    [ "$status" -ne 0 ]
    [[ $output == *"not empty and holds no lsmfs database"* ]]
    not_mounted "$MNT"
    assert_eq "$(ls -A "$DATA" | tr '\n' ' ')" "notes.txt photos "
    # a file system's own root (lost+found) is fine
    mkdir -p "$T/fsroot/lost+found"
    DATA=$T/fsroot
    mount_fs
    echo v >"$MNT/k"
    assert_eq "$(cat "$MNT/k")" v
}

@test "a DATADIR inside the mount point is refused" {
    run "$LSMFS" -f "$MNT/data" "$MNT" 3>&-
    [ "$status" -ne 0 ]
    [[ $output == *"inside the mount point"* ]]
    not_mounted "$MNT"
}

@test "SIGUSR1 logs the engine's and the daemon's statistics and the daemon keeps serving" {
    mount_fs
    for i in $(seq 1 50); do echo "v$i" >"$MNT/k$i"; done
    kill -USR1 "$LSMFS_PID"
    kill -USR1 "$LSMFS_PID"
    for i in $(seq 1 50); do
        grep -q "stats: block cache" "$LOG" && break
        sleep 0.1
    done
    grep -q "stats: levels:" "$LOG"
    grep -q "stats: written: by users" "$LOG"
    grep -q "stats: daemon:" "$LOG"
    pid_alive "$LSMFS_PID"
    assert_eq "$(cat "$MNT/k7")" v7
    unmount_fs
    [ "$DAEMON_STATUS" -eq 0 ]
}

@test "-o init starts a database in a DATADIR that holds other files, and leaves them" {
    mkdir -p "$DATA"
    echo mine >"$DATA/notes.txt"
    mount_fs -o init
    echo v >"$MNT/k"
    unmount_fs
    assert_eq "$(cat "$DATA/notes.txt")" mine
    mount_fs
    assert_eq "$(cat "$MNT/k")" v
}

@test "-o logfile and -o loglevel: messages go to the file, with time, pid and level; less urgent ones dropped" {
    mount_fs -o logfile="$T/daemon.log",loglevel=info
    kill -USR1 "$LSMFS_PID"
    for i in $(seq 1 50); do grep -q "stats: levels" "$T/daemon.log" 2>/dev/null && break; sleep 0.1; done
    grep -Eq "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8} lsmfs\[$LSMFS_PID\]: info: stats: levels" "$T/daemon.log"
    unmount_fs
    mount_fs -o logfile="$T/quiet.log",loglevel=err
    kill -USR1 "$LSMFS_PID"
    sleep 0.5
    ! grep -q stats "$T/quiet.log"
    mkdir "$T/m2"
    run "$LSMFS" -f -o loglevel=loud "$DATA" "$T/m2" 3>&-
    [ "$status" -ne 0 ]
    [[ $output == *"loglevel=loud"* ]]
}

@test "the engine logs through the daemon: flushes at info, compactions at debug, with bytes and time" {
    mount_fs -o logfile="$T/engine.log",loglevel=info,memtable_size=64K
    for i in $(seq 1 600); do printf '%0300d' "$i" >"$MNT/f$i"; done
    for i in $(seq 1 100); do grep -q "liblsm: flush: " "$T/engine.log" 2>/dev/null && break; sleep 0.1; done
    grep -Eq "lsmfs\[$LSMFS_PID\]: info: liblsm: flush: .* bytes, in [0-9]+ ms" "$T/engine.log"
    ! grep -q "debug:" "$T/engine.log"
    unmount_fs
    # debug adds what compaction does, and the files a reopen removes as a matter of course
    require_lsmctl
    mount_fs -o logfile="$T/debug.log",loglevel=debug
    "$LSMCTL" -d "$MNT" compact
    for i in $(seq 1 50); do grep -q "liblsm: compaction: " "$T/debug.log" && break; sleep 0.1; done
    grep -Eq "debug: liblsm: compaction: .* bytes, in [0-9]+ ms" "$T/debug.log"
    grep -q "debug: liblsm: recovery: removed obsolete" "$T/debug.log"
    assert_eq "$(cat "$MNT/f7")" "$(printf '%0300d' 7)"
}

@test "the engine's full-disk events reach the log file: reserve given back, low-space mode entered" {
    require_root
    mount_tmpfs "$T/small" size=32m
    DATA=$T/small/data
    mount_fs -o logfile="$T/full.log",loglevel=info
    local i
    for ((i = 0; i < 100; i++)); do
        head -c 1M /dev/urandom >"$MNT/f$i" 2>/dev/null || break
    done
    [ "$i" -lt 100 ]
    for i in $(seq 1 50); do grep -q "low-space mode entered" "$T/full.log" && break; sleep 0.1; done
    grep -Eq "warning: liblsm: .*the disk is full: reserve of [0-9]+ bytes given back" "$T/full.log"
    grep -Eq "warning: liblsm: .*low-space mode entered" "$T/full.log"
    pid_alive "$LSMFS_PID"
}
