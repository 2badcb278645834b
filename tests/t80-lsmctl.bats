#!/usr/bin/env bats
# t80-lsmctl.bats — lsmctl(1), the admin tool: every command, its exit statuses, binary-safe keys
# and values through scan's escaping and through dump | load, backups that open as databases,
# check naming a damaged file, repair keeping the rest, and read-only commands that leave every
# byte of DATADIR as it was. Most cases need no FUSE; the last ones mount lsmfs.

load helper

setup() {
    T=$(mktemp -d "${BATS_TEST_TMPDIR:-/tmp}/lsmctl.XXXXXX")
    DATA=$T/data
    MNT=$T/mnt
    LOG=$T/lsmfs.log
    require_lsmctl
}

teardown() {
    common_teardown
}

ctl() {
    "$LSMCTL" -d "$DATA" "$@"
}

# "name sha256" of every file under $1, sorted.
tree_sums() {
    (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}

# A database with three tables (a000..a199, b000..b999, odd keys), a live log, binary keys and a value big enough for a blob file.
make_db() {
    {
        for i in $(seq 0 199); do printf 'put a%03d value-a-%d\n' "$i" "$i"; done
        echo flush
        for i in $(seq 0 999); do printf 'put b%03d value-b-%d\n' "$i" "$i"; done
        echo flush
        printf 'put \\x00attr\\x01 \\x00\\xff\\x0a\n'
        printf 'put tab\\x09key line\\x0anl\n'
        printf 'put back\\\\slash v\\\\\n'
        echo 'put with space value with spaces'
        echo flush
        for i in $(seq 0 9); do printf 'put c%03d live\n' "$i"; done
        echo 'del a007'
        # random bytes, escaped; they stay in the log (a read-write open makes them a table
        # and a blob file)
        python3 -c '
import os, sys
b = os.urandom(300000)
open(sys.argv[1], "wb").write(b)
print("put big/value " + "".join(chr(c) if 32 <= c < 127 and c != 92 else "\\x%02x" % c for c in b))
' "$T/big"
    } | ctl script
}

@test "lsmctl: get, put, del, scan and their exit statuses" {
    run ctl get nothing
    [ "$status" -eq 5 ]                       # no database yet
    [[ $output == *"no such directory"* ]]
    ctl put k1 v1
    echo -n v2 | ctl put k2
    assert_eq "$(ctl get k1)" v1
    assert_eq "$(ctl get k2)" v2
    run ctl get k3
    [ "$status" -eq 1 ]
    [[ $output == *"k3: not found"* ]]
    run ctl scan
    assert_eq "$output" "$(printf 'k1\nk2')"
    run ctl scan --values
    assert_eq "$output" "$(printf 'k1\tv1\nk2\tv2')"
    ctl del k1
    run ctl del k1
    [ "$status" -eq 1 ]
    run ctl get k1
    [ "$status" -eq 1 ]
    run ctl frobnicate
    [ "$status" -eq 2 ]
    run "$LSMCTL" scan
    [ "$status" -eq 2 ]
    run ctl get 'bad\q'
    [ "$status" -eq 2 ]
    run ctl put "" v
    [ "$status" -eq 2 ]
    run "$LSMCTL" --version
    [ "$status" -eq 0 ]
    [[ $output == *liblsm* ]]
    run "$LSMCTL" --help
    [[ $output == *"backup DEST"* ]]
}

@test "lsmctl scan: --from, --to, --prefix, --limit" {
    make_db
    assert_eq "$(ctl scan --prefix b19 | tr '\n' ' ')" "b190 b191 b192 b193 b194 b195 b196 b197 b198 b199 "
    assert_eq "$(ctl scan --from a198 --to b002 | tr '\n' ' ')" "a198 a199 b000 b001 "
    assert_eq "$(ctl scan --from c005 --limit 2 | tr '\n' ' ')" "c005 c006 "
    assert_eq "$(ctl scan --prefix a00 | wc -l)" 9     # a007 deleted
    assert_eq "$(ctl scan --prefix c --from c008 | tr '\n' ' ')" "c008 c009 "
}

@test "lsmctl: binary keys and values are escaped by scan and read back by every command" {
    make_db
    run ctl scan --prefix '\x00'
    assert_eq "$output" '\x00attr\x01'
    run ctl scan --values --from tab --to tac
    assert_eq "$output" "$(printf '%s\t%s' 'tab\x09key' 'line\x0anl')"
    run ctl scan --values --prefix back
    assert_eq "$output" "$(printf '%s\t%s' 'back\\slash' 'v\\')"
    # every key scan prints reads back with get, and its value as scan shows it
    ctl scan --values >"$T/scan"
    n=0
    while IFS=$'\t' read -r k v; do
        assert_eq "$(ctl get --escape "$k")" "$v"
        n=$((n + 1))
    done <"$T/scan"
    assert_eq "$n" "$(ctl scan | wc -l)"
    # raw get is byte-exact
    ctl get '\x00attr\x01' >"$T/raw"
    assert_eq "$(od -An -tx1 "$T/raw" | tr -d ' \n')" "00ff0a"
    cmp "$T/big" <(ctl get big/value)
    # --hex both ways
    assert_eq "$(ctl --hex get --hex 006174747201)" "00ff0a"
    assert_eq "$(ctl --hex scan --prefix 0061)" "006174747201"
    assert_eq "$(ctl scan --hex --values --prefix 0061)" "$(printf '006174747201\t00ff0a')"
    ctl --hex put 01ff 00
    assert_eq "$(ctl get --escape '\x01\xff')" '\x00'
    ctl del '\x01\xff'
}

@test "lsmctl dump | load: the same keys and values, and the same stream again" {
    make_db
    ctl dump >"$T/dump"
    [ "$(head -c 8 "$T/dump")" = "lsmdump" ]
    "$LSMCTL" -d "$T/copy" load <"$T/dump"
    "$LSMCTL" -d "$T/copy" dump >"$T/dump2"
    cmp "$T/dump" "$T/dump2"
    diff <(ctl scan --values) <("$LSMCTL" -d "$T/copy" scan --values)
    cmp "$T/big" <("$LSMCTL" -d "$T/copy" get big/value)
    # load onto a database with keys is refused unless --merge
    run "$LSMCTL" -d "$T/copy" load <"$T/dump"
    [ "$status" -eq 2 ]
    "$LSMCTL" -d "$T/copy" load --merge <"$T/dump"
    # dump to a terminal is refused; not a dump
    run bash -c "echo hello | '$LSMCTL' -d '$T/x' load"
    [ "$status" -eq 3 ]
    [[ $output == *magic* ]]
}

@test "lsmctl dump | load of a value too long to hold in memory (loaded with a value writer)" {
    head -c $((20 << 20)) /dev/urandom >"$T/long"
    ctl put long <"$T/long"
    ctl put short v
    ctl dump >"$T/dump"
    "$LSMCTL" -d "$T/copy" load <"$T/dump"
    cmp "$T/long" <("$LSMCTL" -d "$T/copy" get long)
    "$LSMCTL" -d "$T/copy" dump | cmp - "$T/dump"
    run "$LSMCTL" -d "$T/copy" check
    [ "$status" -eq 0 ]
    # a damaged byte inside the long value: nothing of it is committed
    printf 'X' | dd of="$T/dump" bs=1 seek=$((10 << 20)) conv=notrunc status=none
    run "$LSMCTL" -d "$T/copy2" load <"$T/dump"
    [ "$status" -eq 3 ]
    run "$LSMCTL" -d "$T/copy2" get long
    [ "$status" -eq 1 ]
}

@test "lsmctl load: a damaged or truncated stream ends with status 3" {
    make_db
    ctl dump >"$T/dump"
    size=$(stat -c %s "$T/dump")
    head -c $((size - 30)) "$T/dump" >"$T/short"
    run "$LSMCTL" -d "$T/c1" load <"$T/short"
    [ "$status" -eq 3 ]
    [[ $output == *truncated* ]]
    cp "$T/dump" "$T/bad"
    printf 'X' | dd of="$T/bad" bs=1 seek=100 conv=notrunc status=none
    run "$LSMCTL" -d "$T/c2" load <"$T/bad"
    [ "$status" -eq 3 ]
    [[ $output == *checksum* ]]
    # a record dropped from the middle: the end record's count and checksum say so
    python3 - "$T/dump" "$T/dropped" <<'PYEOF'
import struct, sys
d = open(sys.argv[1], 'rb').read()
off = 16
recs = []
while d[off] == 1:
    kl, vl = struct.unpack_from('<IQ', d, off + 1)
    n = 13 + kl + vl + 8
    recs.append(d[off:off + n]); off += n
open(sys.argv[2], 'wb').write(d[:16] + b''.join(recs[:5] + recs[6:]) + d[off:])
PYEOF
    run "$LSMCTL" -d "$T/c3" load <"$T/dropped"
    [ "$status" -eq 3 ]
}

@test "lsmctl backup: a consistent copy that opens as a database, read-only and read-write" {
    make_db
    ctl backup "$T/backup"
    diff <(ctl scan --values) <("$LSMCTL" -d "$T/backup" scan --values)
    cmp "$T/big" <("$LSMCTL" -d "$T/backup" get big/value)
    run "$LSMCTL" -d "$T/backup" check
    [ "$status" -eq 0 ]
    # independent of the source: writes to either leave the other alone
    "$LSMCTL" -d "$T/backup" put only-in-backup x
    "$LSMCTL" -d "$T/backup" compact
    ctl del a001
    run ctl get only-in-backup
    [ "$status" -eq 1 ]
    assert_eq "$("$LSMCTL" -d "$T/backup" get a001)" value-a-1
    run ctl backup "$T/backup"
    [ "$status" -eq 5 ]
    [[ $output == *exists* ]]
}

@test "lsmctl check: clean is 0; a flipped byte in a table is status 3 naming the file and its keys" {
    make_db
    run ctl check
    [ "$status" -eq 0 ]
    assert_eq "$output" clean
    cp -a "$DATA" "$T/damaged"
    # the table of b000..b999
    sst=$(ls "$T/damaged"/*.sst | sort | sed -n 2p)
    printf '\x55' | dd of="$sst" bs=1 seek=300 conv=notrunc status=none
    run "$LSMCTL" -d "$T/damaged" check
    [ "$status" -eq 3 ]
    [[ $output == *"damaged $sst: "* ]]
    [[ $output == *"(keys b000 .. b999)"* ]]
    [[ $output == *"1 damaged file"* ]]
    # the blob file holding big/value (a read-write open writes the log's values out)
    ctl flush
    cp -a "$DATA" "$T/damaged2"
    blob=$(ls "$T/damaged2"/*.blob)
    printf '\x55' | dd of="$blob" bs=1 seek=5000 conv=notrunc status=none
    run "$LSMCTL" -d "$T/damaged2" check
    [ "$status" -eq 3 ]
    [[ $output == *"damaged $blob: "*"(keys big/value .. big/value)"* ]]
}

@test "lsmctl check: a corruption sweep (bytes flipped across every table, one at a time) is always found" {
    make_db
    ctl flush
    local n=0 sst size off
    for sst in "$DATA"/*.sst; do
        size=$(stat -c %s "$sst")
        for pct in 1 20 40 60 80 95 99; do
            off=$((size * pct / 100))
            rm -rf "$T/sweep"
            cp -a "$DATA" "$T/sweep"
            copy="$T/sweep/$(basename "$sst")"
            python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(int(sys.argv[2])); b=f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0]^0xff]))' "$copy" "$off"
            run "$LSMCTL" -d "$T/sweep" check
            [ "$status" -eq 3 ] || { echo "byte $off of $(basename "$sst") ($size bytes) flipped: check said $status: $output" >&2; false; }
            [[ $output == *"damaged $copy: "* ]]
            n=$((n + 1))
        done
    done
    [ "$n" -ge 14 ]
}

@test "lsmctl repair: rebuilds from what is readable, reports the loss, keeps the old files in lost/" {
    make_db
    ctl scan --values >"$T/before"
    sst=$(ls "$DATA"/*.sst | sort | sed -n 2p)
    size=$(stat -c %s "$sst")
    printf '\x55' | dd of="$sst" bs=1 seek=$((size / 3)) conv=notrunc status=none
    run ctl check
    [ "$status" -eq 3 ]
    run ctl repair
    [ "$status" -eq 3 ]
    [[ $output == *"lost $sst: "* ]]
    [ -d "$DATA/lost" ]
    run ctl check
    [ "$status" -eq 0 ]
    ctl scan --values >"$T/after"
    # everything but some b keys is as it was
    diff <(grep -v '^b[0-9]' "$T/before") <(grep -v '^b[0-9]' "$T/after")
    kept=$(grep -c '^b[0-9]' "$T/after")
    [ "$kept" -gt 0 ] && [ "$kept" -lt 1000 ]
    grep '^b[0-9]' "$T/after" | grep -vxFf "$T/before" && return 1
    ctl put b199 again
    assert_eq "$(ctl get b199)" again
    # a clean database repairs with nothing lost
    run ctl repair
    [ "$status" -eq 0 ]
    [[ $output == *"nothing lost"* ]]
}

@test "lsmctl: read-only commands leave every file of DATADIR byte-identical, also without LOCK" {
    make_db
    tree_sums "$DATA" >"$T/sums1"
    ls -la "$DATA" >"$T/ls1"
    ctl get a001 >/dev/null
    ctl get --escape '\x00attr\x01' >/dev/null
    ctl scan --values >/dev/null
    ctl dump >/dev/null
    ctl backup "$T/bk"
    ctl check >/dev/null
    ctl stats >/dev/null
    run ctl get nothing
    tree_sums "$DATA" >"$T/sums2"
    diff "$T/sums1" "$T/sums2"
    assert_eq "$(ls "$DATA" | sort | tr '\n' ' ')" "$(awk 'NR > 3 { print $NF }' "$T/ls1" | sort | tr '\n' ' ')"
    # a copy without LOCK stays without it
    cp -a "$DATA" "$T/nolock"
    rm "$T/nolock/LOCK"
    tree_sums "$T/nolock" >"$T/sums3"
    "$LSMCTL" -d "$T/nolock" scan >/dev/null
    "$LSMCTL" -d "$T/nolock" check >/dev/null
    [ ! -e "$T/nolock/LOCK" ]
    diff "$T/sums3" <(tree_sums "$T/nolock")
}

@test "lsmctl stats, compact and flush" {
    make_db
    ctl stats >"$T/stats"
    for f in level0_tables tables disk_bytes write_amplification space_amplification \
             cache_hit_rate stall_micros pending_compaction_bytes last_sequence; do
        grep -q "^$f " "$T/stats" || { echo "no $f in stats" >&2; return 1; }
    done
    [ "$(awk '$1 == "tables" { print $2 }' "$T/stats")" -ge 3 ]
    ctl compact --from a000 --to a199
    ctl compact
    ctl stats >"$T/stats2"
    assert_eq "$(awk '$1 == "level0_tables" { print $2 }' "$T/stats2")" 0
    ctl flush
    diff <(ctl scan) <(ctl scan)
    assert_eq "$(ctl get a001)" value-a-1
    run ctl get a007
    [ "$status" -eq 1 ]
}

@test "lsmctl beside lsmfs: reads go through the daemon, writes of keys are refused (status 4, pid named), -w waits for the lock" {
    require_fuse
    mkdir "$MNT"
    mount_fs
    echo hello >"$MNT/f"
    run ctl get f
    [ "$status" -eq 0 ]
    assert_eq "$output" hello
    run ctl put f other
    [ "$status" -eq 4 ]
    [[ $output == *"$DATA is mounted by lsmfs (pid $LSMFS_PID)"* ]]
    run ctl check
    [ "$status" -eq 0 ]
    fusermount3 -u "$MNT"
    run ctl -w 10 put f offline
    [ "$status" -eq 0 ]
    run ctl get f
    assert_eq "$output" offline
    wait_gone "$LSMFS_PID" 100
}

@test "lsmctl dump | load of an lsmfs DATADIR gives back files, directories, attributes and links" {
    require_fuse
    mkdir "$MNT"
    mount_fs
    mkdir -p "$MNT/d/e"
    printf 'bin\0ary' >"$MNT/d/e/f"
    echo text >"$MNT/t"
    chmod 640 "$MNT/t"
    touch -d '2001-02-03 04:05:06' "$MNT/t"
    ln -s d/e/f "$MNT/link"
    mkdir "$MNT/empty"
    (cd "$MNT" && find . -printf '%p %y %m %s %T@ %l\n' | LC_ALL=C sort) >"$T/tree1"
    cat "$MNT/d/e/f" >"$T/f1"
    unmount_fs
    ctl -w 10 dump >"$T/dump"
    DATA=$T/restored
    ctl load <"$T/dump"
    mount_fs
    (cd "$MNT" && find . -printf '%p %y %m %s %T@ %l\n' | LC_ALL=C sort) >"$T/tree2"
    diff "$T/tree1" "$T/tree2"
    cmp "$T/f1" "$MNT/d/e/f"
}

@test "lsmctl on a read-only file system reads, checks and backs up; a backup across file systems is a copy" {
    require_root
    make_db
    ctl flush                                   # a blob file too
    ctl scan --values >"$T/before"
    mount_tmpfs "$T/ro" size=64m
    cp -a "$DATA" "$T/ro/data"
    mount -o remount,ro "$T/ro"
    run "$LSMCTL" -d "$T/ro/data" scan --values
    [ "$status" -eq 0 ]
    diff "$T/before" <(printf '%s\n' "$output")
    run "$LSMCTL" -d "$T/ro/data" check
    [ "$status" -eq 0 ]
    run "$LSMCTL" -d "$T/ro/data" put k v
    [ "$status" -eq 5 ]
    # from the read-only tmpfs to $T: links fail with EXDEV, so the files are copied
    "$LSMCTL" -d "$T/ro/data" backup "$T/bk"
    diff "$T/before" <("$LSMCTL" -d "$T/bk" scan --values)
    for f in "$T"/bk/*.sst "$T"/bk/*.blob; do
        assert_eq "$(stat -c %h "$f")" 1
    done
    # on one file system they are links
    ctl backup "$T/bk2"
    sst=$(ls "$T"/bk2/*.sst | head -n1)
    [ "$(stat -c %h "$sst")" -ge 2 ]
}
