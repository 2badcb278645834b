#!/usr/bin/env bats
# t60 — bad input: a second mount of a locked data directory, missing or unusable paths, bad
# options, and damaged tables.  Each must fail clearly (non-zero exit, a message naming the cause)
# or, for damage found only when reading, fail the read with EIO; never return wrong bytes.

load helper

setup() {
    common_setup
}

teardown() {
    common_teardown
}

@test "second mount of the same DATADIR fails, naming the lock file" {
    mount_fs
    echo first >"$MNT/k"
    mkdir "$T/mnt2"
    run "$LSMFS" "$DATA" "$T/mnt2" 3>&-
    MOUNTS+=("$T/mnt2")
    [ "$status" -ne 0 ]
    [[ $output == *LOCK* ]]
    not_mounted "$T/mnt2"
    # also in foreground mode, and the first mount is unharmed
    run "$LSMFS" -f "$DATA" "$T/mnt2" 3>&-
    [ "$status" -ne 0 ]
    [[ $output == *LOCK* ]]
    not_mounted "$T/mnt2"
    assert_eq "$(cat "$MNT/k")" first
    echo second >"$MNT/k2"
    remount
    assert_eq "$(cat "$MNT/k2")" second
}

@test "lsmctl on a DATADIR the daemon holds: reads go through the daemon, key changes are refused" {
    require_lsmctl
    mount_fs
    echo v >"$MNT/k"
    run "$LSMCTL" -d "$DATA" scan
    [ "$status" -eq 0 ]
    [[ $output == *k* ]]
    run "$LSMCTL" -d "$DATA" put k v
    [ "$status" -eq 4 ]
    [[ $output == *"$DATA is mounted by lsmfs (pid $LSMFS_PID)"* ]]
    assert_eq "$(cat "$MNT/k")" v
}

@test "missing MOUNTPOINT: non-zero exit with a message naming it" {
    run "$LSMFS" "$DATA" "$T/no/such/mnt" 3>&-
    [ "$status" -ne 0 ]
    [[ $output == *"$T/no/such/mnt"* ]] || [[ $output == *"No such file or directory"* ]]
    not_mounted "$T/no/such/mnt"
}

@test "DATADIR that is a regular file: non-zero exit with a message" {
    echo not-a-dir >"$T/file"
    run "$LSMFS" "$T/file" "$MNT" 3>&-
    [ "$status" -ne 0 ]
    [ -n "$output" ]
    not_mounted "$MNT"
    assert_eq "$(cat "$T/file")" not-a-dir
}

@test "DATADIR to be created on a read-only filesystem: non-zero exit with a message" {
    require_root
    mount_tmpfs "$T/ro" ro,size=1m
    run "$LSMFS" "$T/ro/data" "$MNT" 3>&-
    [ "$status" -ne 0 ]
    [[ $output == *"Read-only file system"* ]] || [[ $output == *"$T/ro/data"* ]]
    not_mounted "$MNT"
}

@test "existing DATADIR on a filesystem remounted read-only: refuses to mount rw" {
    require_root
    mount_tmpfs "$T/ro" size=8m
    DATA=$T/ro/data
    mount_fs
    echo v >"$MNT/k"
    unmount_fs
    mount -o remount,ro "$T/ro"
    run "$LSMFS" "$DATA" "$MNT" 3>&-
    [ "$status" -ne 0 ]
    [ -n "$output" ]
    not_mounted "$MNT"
}

@test "unknown -o option: non-zero exit naming the option" {
    run "$LSMFS" -o no_such_option=1 "$DATA" "$MNT" 3>&-
    [ "$status" -ne 0 ]
    [[ $output == *no_such_option* ]]
    not_mounted "$MNT"
    run "$LSMFS" -o memtable_size=64K,bogus_flag "$DATA" "$MNT" 3>&-
    [ "$status" -ne 0 ]
    [[ $output == *bogus_flag* ]]
    not_mounted "$MNT"
}

@test "bad values for lsmfs options: non-zero exit naming the option" {
    for o in compression=gzip sync=never memtable_size=abc cache_size=12Q max_file_size=-1 \
             memtable_size=; do
        run "$LSMFS" -o "$o" "$DATA" "$MNT" 3>&-
        if [ "$status" -eq 0 ] || is_mounted "$MNT"; then
            echo "-o $o was accepted" >&2
            false
        fi
        [[ $output == *"${o%%=*}"* ]] || { echo "-o $o: message does not name the option: $output" >&2; false; }
    done
}

@test "unknown command-line flag: non-zero exit" {
    run "$LSMFS" --no-such-flag "$DATA" "$MNT" 3>&-
    [ "$status" -ne 0 ]
    not_mounted "$MNT"
}

# Writes files through a mount with a small memtable so several tables exist, records their
# sha256 in $T/expect, unmounts.
write_tables() {
    mount_fs -o memtable_size=64K
    python3 - "$MNT" "$T/expect" <<'EOF'
import hashlib, os, sys
m, out = sys.argv[1], open(sys.argv[2], "w")
for i in range(400):
    data = os.urandom(4096)
    with open("%s/f%03d" % (m, i), "wb") as f:
        f.write(data)
    out.write("%s f%03d\n" % (hashlib.sha256(data).hexdigest(), i))
EOF
    unmount_fs
    ls "$DATA"/*.sst >/dev/null
}

# After damage: either the mount is refused with a message about corruption, or every read that
# succeeds returns the original bytes and at least one read fails with EIO.
check_damage_detected() {
    "$LSMFS" -f -o memtable_size=64K "$DATA" "$MNT" >"$T/err" 2>&1 3>&- </dev/null &
    LSMFS_PID=$!
    PIDS+=("$LSMFS_PID")
    MOUNTS+=("$MNT")
    for i in $(seq 1 100); do
        is_mounted "$MNT" && break
        pid_alive "$LSMFS_PID" || break
        sleep 0.1
    done
    if ! is_mounted "$MNT"; then
        # refused: a non-zero exit and a message that says what is wrong
        local st=0
        wait "$LSMFS_PID" || st=$?
        [ "$st" -ne 0 ] || { echo "daemon exited 0 without mounting" >&2; return 1; }
        grep -Eiq 'corrupt|checksum|damaged' "$T/err" || { cat "$T/err" >&2; return 1; }
        return 0
    fi
    python3 - "$MNT" "$T/expect" <<'EOF'
import errno, hashlib, sys
m, ok, eio, wrong = sys.argv[1], 0, 0, []
for line in open(sys.argv[2]):
    digest, name = line.split()
    try:
        data = open("%s/%s" % (m, name), "rb").read()
    except OSError as e:
        if e.errno != errno.EIO:
            wrong.append("%s: %s (want EIO)" % (name, e))
        eio += 1
        continue
    if hashlib.sha256(data).hexdigest() != digest:
        wrong.append("%s: WRONG BYTES (%d bytes)" % (name, len(data)))
    ok += 1
print("# %d reads intact, %d failed with EIO" % (ok, eio))
assert not wrong, "\n".join(wrong[:10])
assert eio > 0, "damage went unnoticed: every read succeeded"
EOF
}

@test "damaged table (bytes flipped in the middle): mount refused or EIO, never wrong bytes" {
    write_tables
    python3 - "$DATA" <<'EOF'
import glob, sys
for p in sorted(glob.glob(sys.argv[1] + "/*.sst")):
    with open(p, "r+b") as f:
        data = bytearray(f.read())
        for frac in (0.25, 0.5, 0.75):
            i = int(len(data) * frac)
            for j in range(i, min(i + 8, len(data))):
                data[j] ^= 0x5A
        f.seek(0); f.write(data)
EOF
    check_damage_detected
}

@test "damaged table footer (last bytes zeroed): mount refused or EIO, never wrong bytes" {
    write_tables
    python3 - "$DATA" <<'EOF'
import glob, os, sys
for p in sorted(glob.glob(sys.argv[1] + "/*.sst")):
    n = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.seek(n - 16)
        f.write(b"\0" * 16)
EOF
    check_damage_detected
}

@test "truncated table: mount refused or EIO, never wrong bytes" {
    write_tables
    for f in "$DATA"/*.sst; do
        truncate -s $(( $(stat -c %s "$f") / 2 )) "$f"
    done
    check_damage_detected
}

@test "torn log tail (log cut short at 30/60/90%): mount succeeds, files are a prefix of the writes" {
    mount_fs -o memtable_size=16M
    python3 - "$MNT" "$T/expect" <<'EOF2'
import hashlib, os, sys
m, out = sys.argv[1], open(sys.argv[2], "w")
for i in range(150):
    data = os.urandom(2000 + i)
    with open("%s/f%03d" % (m, i), "wb") as f:
        f.write(data)
    out.write("%s f%03d\n" % (hashlib.sha256(data).hexdigest(), i))
EOF2
    unmount_fs
    ls "$DATA"/*.log >/dev/null
    [ -z "$(ls "$DATA" | grep '\.sst$')" ]     # everything is still in the log
    cp -a "$DATA" "$T/pristine"
    for pct in 30 60 90; do
        rm -rf "$DATA"
        cp -a "$T/pristine" "$DATA"
        for f in "$DATA"/*.log; do
            # The log is preallocated: cut its records, not the zeros after them.
            end=$(python3 -c 'import sys; print(len(open(sys.argv[1], "rb").read().rstrip(b"\0")))' "$f")
            truncate -s $(( end * pct / 100 )) "$f"
        done
        mount_fs
        python3 - "$MNT" "$T/expect" "$pct" <<'EOF2'
import hashlib, os, sys
m, pct = sys.argv[1], sys.argv[3]
state = []
for line in open(sys.argv[2]):
    digest, name = line.split()
    try:
        data = open(os.path.join(m, name), "rb").read()
    except FileNotFoundError:
        state.append("-"); continue
    if hashlib.sha256(data).hexdigest() == digest:
        state.append("F")
    elif data == b"":
        state.append("0")         # created, its bytes not yet logged
    else:
        sys.exit("%s: WRONG BYTES after a torn log tail (%d bytes)" % (name, len(data)))
s = "".join(state)
full = len(s) - len(s.lstrip("F"))
rest = s[full:]
assert rest in ("-" * len(rest), "0" + "-" * (len(rest) - 1)), "not a prefix of the writes: " + s
assert 0 < full < len(s), "cut at %s%%: %d of %d files survived" % (pct, full, len(s))
print("# cut at %s%%: %d of %d files intact" % (pct, full, len(s)))
EOF2
        unmount_fs
    done
}

@test "damaged MANIFEST or missing CURRENT: mount refused with a message; the data stays intact" {
    write_tables
    cp -a "$DATA" "$T/pristine"
    python3 - "$DATA" <<'EOF2'
import glob, sys
p = glob.glob(sys.argv[1] + "/MANIFEST-*")[0]
d = bytearray(open(p, "rb").read())
for j in range(len(d) // 2, len(d) // 2 + 4):
    d[j] ^= 0xFF
open(p, "wb").write(d)
EOF2
    run "$LSMFS" "$DATA" "$MNT" 3>&-
    [ "$status" -ne 0 ]
    [[ $output == *MANIFEST* ]]
    not_mounted "$MNT"
    rm -rf "$DATA"
    cp -a "$T/pristine" "$DATA"
    rm "$DATA/CURRENT"
    run "$LSMFS" "$DATA" "$MNT" 3>&-
    [ "$status" -ne 0 ]
    [[ $output == *CURRENT* ]]
    not_mounted "$MNT"
    [ ! -e "$DATA/CURRENT" ]               # refusing created nothing
    cp "$T/pristine/CURRENT" "$DATA/CURRENT"
    mount_fs
    (cd "$MNT" && sha256sum -c --quiet "$T/expect")
}

@test "full disk: ENOSPC, the daemon stays up; with space again every closed file is intact" {
    require_root
    mount_tmpfs "$T/small" size=3m
    DATA=$T/small/data
    mount_fs
    python3 - "$MNT" "$T" <<'EOF2'
import errno, hashlib, os, sys
m, t = sys.argv[1], sys.argv[2]
ok, failed = open(t + "/ok", "w"), open(t + "/failed", "w")
nfail = 0
for i in range(40):
    data = os.urandom(150000)
    line = "%s  f%02d\n" % (hashlib.sha256(data).hexdigest(), i)
    try:
        with open("%s/f%02d" % (m, i), "wb") as f:
            f.write(data)
        ok.write(line)
    except OSError as e:
        failed.write(line)
        nfail += 1
        if nfail == 1:
            print("# first failure at f%02d: %s" % (i, e))
        assert e.errno == errno.ENOSPC, "f%02d: %s, expected ENOSPC" % (i, e)
assert nfail > 0, "40 x 150 KB fit in a 3 MB filesystem?"
EOF2
    pid_alive "$LSMFS_PID"
    stat "$MNT" >/dev/null
    [ -s "$T/ok" ]
    fusermount3 -u "$MNT"
    wait_gone "$LSMFS_PID" 100
    mount -o remount,size=64m "$T/small"
    mount_fs
    (cd "$MNT" && sha256sum -c --quiet "$T/ok")
    python3 - "$MNT" "$T/failed" <<'EOF2'
import hashlib, os, sys
for line in open(sys.argv[2]):
    digest, name = line.split()
    p = os.path.join(sys.argv[1], name)
    if os.path.exists(p):
        d = open(p, "rb").read()
        assert d == b"" or hashlib.sha256(d).hexdigest() == digest, "%s: %d wrong bytes" % (name, len(d))
EOF2
    echo again >"$MNT/again"
    assert_eq "$(cat "$MNT/again")" again
}

@test "full disk: a file whose write or write-back failed keeps size and content in agreement" {
    require_root
    mount_tmpfs "$T/small" size=3m
    DATA=$T/small/data
    # Without a reserve, creating still works on the full disk and the close is what fails.
    mount_fs -o reserve=0
    python3 - "$MNT" <<'EOF2'
import errno, os, sys
m = sys.argv[1]
for i in range(40):
    data = os.urandom(150000)
    fd = os.open("%s/f%02d" % (m, i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            os.write(fd, data)      # a large file's bytes go to disk at once: may fail here
        finally:
            os.close(fd)            # or at the write-back
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
        break
else:
    raise AssertionError("40 x 150 KB fit in a 3 MB filesystem?")
# every file, the one whose close failed included, reads as many bytes as stat says it holds
for name in sorted(os.listdir(m)):
    p = os.path.join(m, name)
    size, got = os.stat(p).st_size, len(open(p, "rb").read())
    assert size == got, "%s: stat says %d bytes, a read gives %d" % (name, size, got)
EOF2
}

# Writes 1 MiB files into $1 (fsync, close) until ENOSPC; appends "sha256  name" of each file whose
# close succeeded to $2. Any other error, or no ENOSPC within 200 files, fails.
fill_until_full() {
    python3 - "$1" "$2" <<'EOF2'
import errno, hashlib, os, sys
m, out = sys.argv[1], sys.argv[2]
ok = open(out, "a")
n0 = len(os.listdir(m))
for i in range(n0, n0 + 200):
    data = os.urandom(1 << 20)
    try:
        fd = os.open("%s/f%03d" % (m, i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        ok.write("%s  f%03d\n" % (hashlib.sha256(data).hexdigest(), i))
        ok.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC, "f%03d: %s, expected ENOSPC" % (i, e)
        print("# ENOSPC at f%03d" % i)
        sys.exit(0)
sys.exit("200 MiB fit in a 64 MiB file system?")
EOF2
}

# Available KiB of the file system at $1.
avail_kb() {
    df -k --output=avail "$1" | tail -n 1 | tr -d ' '
}

# Waits up to 30 s for the file system at $1 to have at least $2 KiB available.
wait_avail() {
    local i
    for ((i = 0; i < 300; i++)); do
        [ "$(avail_kb "$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    echo "only $(avail_kb "$1") KiB available on $1 after 30 s, expected $2" >&2
    return 1
}

@test "full disk: rm frees the space, writes work again, and the data survives a remount on a full disk" {
    require_root
    mount_tmpfs "$T/small" size=64m
    DATA=$T/small/data
    mount_fs
    fill_until_full "$MNT" "$T/ok"
    [ "$(wc -l <"$T/ok")" -ge 30 ]
    pid_alive "$LSMFS_PID"
    # Full: adding fails with ENOSPC, and says so.
    run -1 bash -c "echo more >'$MNT/more'"
    [[ "$output" == *"No space left on device"* ]]
    # A remount on the full disk works, and every file whose close succeeded is intact.
    remount
    (cd "$MNT" && sha256sum -c --quiet "$T/ok")
    # rm works on the full disk, and its space comes back to the file system.
    rm "$MNT"/f*
    [ -z "$(ls -A "$MNT")" ]
    wait_avail "$T/small" $((40 * 1024))
    # Writing works again, without a remount.
    for i in $(seq 1 50); do
        echo again >"$MNT/again" 2>/dev/null && break
        sleep 0.1
    done
    assert_eq "$(cat "$MNT/again")" again
    remount
    assert_eq "$(ls "$MNT")" again
}

@test "full disk: when another program fills the disk, files can still be removed and the mount remounted" {
    require_root
    mount_tmpfs "$T/small" size=64m
    DATA=$T/small/data
    mount_fs
    for i in $(seq 1 8); do
        head -c 1M /dev/urandom >"$MNT/keep$i"
    done
    sync "$MNT"/keep*
    (cd "$MNT" && sha256sum keep*) >"$T/sums"
    # Another program takes every free byte beside the data directory.
    dd if=/dev/zero of="$T/small/hog" bs=1M 2>/dev/null || true
    [ "$(avail_kb "$T/small")" -lt 1024 ]
    rm "$MNT/keep1" "$MNT/keep2"
    sed -i '/keep[12]$/d' "$T/sums"
    remount
    (cd "$MNT" && sha256sum -c --quiet "$T/sums")
    [ ! -e "$MNT/keep1" ]
    rm "$MNT/keep3"
    rm "$T/small/hog"
    for i in $(seq 1 50); do
        echo back >"$MNT/back" 2>/dev/null && break
        sleep 0.1
    done
    assert_eq "$(cat "$MNT/back")" back
}
