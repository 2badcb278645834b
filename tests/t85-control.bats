#!/usr/bin/env bats
# t85 — operating a mounted file system: lsmctl through the daemon's control socket (by DATADIR
# or by mount point), backups and snapshots while mounted, read-only mounts of a snapshot and of
# a DATADIR beside other readers, and what is refused while mounted.

load helper

setup() {
    common_setup
    require_lsmctl
    mount_fs
}

teardown() {
    common_teardown
}

ctl() {
    "$LSMCTL" "$@"
}

@test "lsmctl -d MOUNTPOINT and -d DATADIR reach the daemon: unflushed writes are seen, stats, check" {
    echo one >"$MNT/a"
    mkdir "$MNT/d"
    echo two >"$MNT/d/b"
    run ctl -d "$MNT" get d/b
    [ "$status" -eq 0 ]
    assert_eq "$output" two
    run ctl -d "$DATA" scan --prefix d/
    [ "$status" -eq 0 ]
    assert_eq "$output" d/b
    run ctl -d "$MNT" stats
    [ "$status" -eq 0 ]
    [[ $output == *write_amplification* ]]
    run ctl -d "$MNT" check
    [ "$status" -eq 0 ]
    [ -S "$DATA/lsmfs.ctl" ]
    [ "$(stat -c %a "$DATA/lsmfs.ctl")" = 600 ]
}

@test "keys are not changed behind the mount: put, del and load are refused with status 4" {
    echo keep >"$MNT/k"
    run ctl -d "$MNT" put k other
    [ "$status" -eq 4 ]
    [[ $output == *"change files through the mount"* ]]
    run ctl -d "$MNT" del k
    [ "$status" -eq 4 ]
    run ctl -d "$MNT" repair
    [ "$status" -ne 0 ]
    assert_eq "$(cat "$MNT/k")" keep
}

@test "backup while mounted: a consistent database that opens and holds every file" {
    for i in $(seq 1 200); do echo "v$i" >"$MNT/f$i"; done
    head -c 300000 /dev/urandom >"$MNT/big"
    run ctl -d "$MNT" backup "$T/backup"
    [ "$status" -eq 0 ]
    echo changed >"$MNT/f1"
    assert_eq "$(ctl -d "$T/backup" get f1)" v1
    assert_eq "$(ctl -d "$T/backup" get f200)" v200
    ctl -d "$T/backup" get big | cmp - "$MNT/big"
    run ctl -d "$T/backup" check
    [ "$status" -eq 0 ]
}

@test "snapshots: made while mounted, mounted read-only beside it, kept across remounts, deleted" {
    echo old >"$MNT/f"
    mkdir "$MNT/dir"
    ln -s f "$MNT/link"
    chmod 640 "$MNT/f"
    run ctl snapshot create before "$MNT"
    [ "$status" -eq 0 ]
    echo new >"$MNT/f"
    rm "$MNT/link"
    assert_eq "$(ctl snapshot list "$MNT" | cut -f1)" before
    mkdir "$T/snap"
    "$LSMFS" -o snapshot=before "$DATA" "$T/snap"
    MOUNTS+=("$T/snap")
    assert_eq "$(cat "$T/snap/f")" old
    assert_eq "$(stat -c %a "$T/snap/f")" 640
    assert_eq "$(readlink "$T/snap/link")" f
    [ -d "$T/snap/dir" ]
    run bash -c "echo x >'$T/snap/f'"
    [ "$status" -ne 0 ]
    [[ $output == *"Read-only file system"* ]]
    assert_eq "$(cat "$MNT/f")" new
    fusermount3 -u "$T/snap"
    remount
    mkdir -p "$T/snap2"
    "$LSMFS" -o snapshot=before "$DATA" "$T/snap2"
    MOUNTS+=("$T/snap2")
    assert_eq "$(cat "$T/snap2/f")" old
    fusermount3 -u "$T/snap2"
    run ctl snapshot delete before "$MNT"
    [ "$status" -eq 0 ]
    [ ! -e "$DATA/snapshots/before" ]
    run "$LSMFS" -o snapshot=before "$DATA" "$T/snap2"
    [ "$status" -ne 0 ]
    [[ $output == *"no snapshot 'before'"* ]]
}

@test "read-only mounts: refused beside the read-write one (pid named), several side by side once it is gone" {
    echo v >"$MNT/k"
    mkdir "$T/ro1" "$T/ro2"
    run "$LSMFS" -o ro "$DATA" "$T/ro1"
    [ "$status" -ne 0 ]
    [[ $output == *"pid $LSMFS_PID"* ]]
    unmount_fs
    "$LSMFS" -o ro "$DATA" "$T/ro1"
    MOUNTS+=("$T/ro1")
    "$LSMFS" -o ro "$DATA" "$T/ro2"
    MOUNTS+=("$T/ro2")
    assert_eq "$(cat "$T/ro1/k")" v
    assert_eq "$(cat "$T/ro2/k")" v
    assert_eq "$(ctl -d "$T/ro1" get k)" v        # no socket: lsmctl reads beside them
    [ ! -e "$DATA/lsmfs.ctl" ]
    run ctl -d "$DATA" put k w
    [ "$status" -eq 4 ]
    fusermount3 -u "$T/ro1"
    fusermount3 -u "$T/ro2"
}

@test "backup and snapshot while a file is open and written: they hold the bytes written so far" {
    # A writer that holds one descriptor and never forks: every close(2) of a copy of it (a
    # shell's redirection, a child's exec) would write the file back by itself.
    # (it gives up after 60 s, and holds none of bats's descriptors, so a failing step cannot
    # leave it, or bats, waiting)
    python3 - "$MNT/open" "$T" >/dev/null 2>&1 3>&- <<'EOF2' &
import os, sys, time
path, t = sys.argv[1:]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"written-not-closed")
open(t + "/ready", "w").close()
end = time.time() + 60
while not os.path.exists(t + "/done") and time.time() < end:
    time.sleep(0.05)
os.close(fd)
EOF2
    local writer=$!
    CLEANUPS+=("touch '$T/done'")
    for i in $(seq 1 100); do [ -e "$T/ready" ] && break; sleep 0.05; done
    run ctl -d "$MNT" backup "$T/backup"
    [ "$status" -eq 0 ]
    run ctl snapshot create s "$MNT"
    [ "$status" -eq 0 ]
    touch "$T/done"
    wait "$writer"
    assert_eq "$(ctl -d "$T/backup" get open)" written-not-closed
    assert_eq "$(ctl -d "$DATA/snapshots/s" get open)" written-not-closed
}

@test "a snapshot survives the live tree's compactions, holds the only copy of removed data, and deleting it frees that space" {
    for i in $(seq 1 40); do head -c 131072 /dev/urandom >"$MNT/f$i"; done
    (cd "$MNT" && sha256sum f*) >"$T/sums"
    run ctl snapshot create keep "$MNT"
    [ "$status" -eq 0 ]
    rm "$MNT"/f*
    run ctl -d "$MNT" compact
    [ "$status" -eq 0 ]
    local with without
    with=$(du -sk "$DATA" | cut -f1)
    [ "$with" -ge 4096 ]                   # the snapshot's links keep ~5 MiB of tables and blobs
    mkdir "$T/snap"
    "$LSMFS" -o snapshot=keep "$DATA" "$T/snap"
    MOUNTS+=("$T/snap")
    (cd "$T/snap" && sha256sum -c --quiet "$T/sums")
    fusermount3 -u "$T/snap"
    run ctl snapshot delete keep "$MNT"
    [ "$status" -eq 0 ]
    # (the snapshot's daemon may still be closing its files, which keeps their space a moment)
    for i in $(seq 1 100); do
        without=$(du -sk "$DATA" | cut -f1)
        [ $((with - without)) -ge 4096 ] && break
        sleep 0.1
    done
    [ $((with - without)) -ge 4096 ] || { echo "du $with KiB with the snapshot, $without without" >&2; false; }
}

@test "MOUNTPOINT/.snapshots/NAME: cd into a snapshot, read-only, hidden from ls, as it was; comes and goes with lsmctl" {
    echo old >"$MNT/f"
    mkdir -p "$MNT/d/e"
    echo deep >"$MNT/d/e/g"
    ln -s f "$MNT/link"
    setfattr -n user.tag -v blue "$MNT/f" 2>/dev/null || true
    (cd "$MNT" && find . -printf '%p %y %m %s %l\n' | LC_ALL=C sort) >"$T/before"
    run ctl snapshot create mon "$MNT"
    [ "$status" -eq 0 ]
    echo new >"$MNT/f"
    rm -r "$MNT/d"
    # hidden from the root's listing, reachable by name
    [[ "$(ls -A "$MNT")" != *".snapshots"* ]]
    assert_eq "$(ls "$MNT/.snapshots")" mon
    (cd "$MNT/.snapshots/mon" && find . -printf '%p %y %m %s %l\n' | LC_ALL=C sort) >"$T/snap"
    diff "$T/before" "$T/snap"
    assert_eq "$(cat "$MNT/.snapshots/mon/f")" old
    assert_eq "$(cat "$MNT/.snapshots/mon/d/e/g")" deep
    if command -v getfattr >/dev/null; then
        assert_eq "$(getfattr --only-values -n user.tag "$MNT/.snapshots/mon/f")" blue
    fi
    # a file and its snapshot copy are not one file
    [ "$(stat -c %i "$MNT/f")" != "$(stat -c %i "$MNT/.snapshots/mon/f")" ]
    # read-only, and the name .snapshots is taken
    run bash -c "echo x >'$MNT/.snapshots/mon/f'"
    [[ $output == *"Read-only file system"* ]]
    run rm "$MNT/.snapshots/mon/f"
    [ "$status" -ne 0 ]
    run mkdir "$MNT/.snapshots/new"
    [ "$status" -ne 0 ]
    run mkdir "$MNT/.snapshots"
    [ "$status" -ne 0 ]
    assert_eq "$(cat "$MNT/f")" new
    # a snapshot made later shows up, and survives a remount; a deleted one goes
    ctl snapshot create tue "$MNT" >/dev/null
    assert_eq "$(ls "$MNT/.snapshots" | tr '\n' ' ')" "mon tue "
    assert_eq "$(cat "$MNT/.snapshots/tue/f")" new
    remount
    assert_eq "$(cat "$MNT/.snapshots/mon/f")" old
    ctl snapshot delete mon "$MNT" >/dev/null
    [ ! -e "$MNT/.snapshots/mon" ]
    assert_eq "$(ls "$MNT/.snapshots")" tue
}
