#!/usr/bin/env bats
# t45 — files of any size (issue 17): a file larger than LSMFS_SMALL_MAX is written through the
# engine's value writer, a piece at a time, read by range, and may be sparse. These tests check
# sizes past the old 64 MiB / 1 GiB ceilings, that a small change to a big file costs what it
# writes (the daemon's write(2) bytes, /proc/PID/io wchar, stay small), that the daemon's memory
# stays bounded while a 2 GB file is copied, holes (du, SEEK_DATA/SEEK_HOLE, fallocate), reflink
# copies (copy_file_range), and crashes in the middle of a large write. Sparse files keep them
# small on disk.

load helper

setup() {
    common_setup
}

teardown() {
    common_teardown
}

# Bytes the daemon passed to write(2) and friends so far (its WAL, blob files and FUSE replies).
daemon_wchar() {
    awk '$1 == "wchar:" { print $2 }' /proc/"$LSMFS_PID"/io
}

# Disk KiB used by the data directory.
data_kb() {
    du -sk "$DATA" | cut -f1
}

@test "cp of a 3 GiB sparse file and of a 200 MB random file: cmp after a remount" {
    mount_fs
    truncate -s 3G "$T/sparse"
    head -c 1M /dev/urandom | dd of="$T/sparse" bs=1M seek=100 conv=notrunc status=none
    head -c 1M /dev/urandom | dd of="$T/sparse" bs=1M seek=3000 conv=notrunc status=none
    head -c 200M /dev/urandom >"$T/rand"
    cp "$T/sparse" "$MNT/sparse"
    cp "$T/rand" "$MNT/rand"
    cmp "$T/rand" "$MNT/rand"
    remount
    assert_eq "$(stat -c %s "$MNT/sparse")" $((3 << 30))
    cmp "$T/sparse" "$MNT/sparse"
    cmp "$T/rand" "$MNT/rand"
    # holes take no space: du of the sparse file is its 2 MiB of data, not 3 GiB
    [ "$(du -k "$MNT/sparse" | cut -f1)" -lt 4096 ]
    [ "$(data_kb)" -lt $((300 * 1024)) ]
}

@test "truncate -s 10G then a write at the end: size, content and du after a remount" {
    mount_fs
    truncate -s 10G "$MNT/f"
    printf 'tail-bytes' | dd of="$MNT/f" bs=1 seek=$((10 << 30)) conv=notrunc status=none
    remount
    assert_eq "$(stat -c %s "$MNT/f")" $(((10 << 30) + 10))
    assert_eq "$(tail -c 10 "$MNT/f")" tail-bytes
    assert_eq "$(dd if="$MNT/f" bs=1M skip=5000 count=1 status=none | tr -d '\0' | wc -c)" 0
    [ "$(du -k "$MNT/f" | cut -f1)" -lt 1024 ]
    [ "$(data_kb)" -lt $((64 * 1024)) ]
}

@test "appending one line to a 100 MB file writes the line, not the file" {
    mount_fs
    head -c 100M /dev/urandom >"$T/log"
    cp "$T/log" "$MNT/log"
    local before after
    before=$(daemon_wchar)
    echo "one more line" >>"$MNT/log"
    after=$(daemon_wchar)
    echo "one more line" >>"$T/log"
    echo "# the append made the daemon write $((after - before)) bytes" >&3
    [ $((after - before)) -lt $((4 << 20)) ]
    cmp "$T/log" "$MNT/log"
    remount
    cmp "$T/log" "$MNT/log"
}

@test "dd conv=notrunc into the middle of a 100 MB file rewrites only that range" {
    mount_fs
    head -c 100M /dev/urandom >"$T/model"
    cp "$T/model" "$MNT/f"
    head -c 1M /dev/urandom >"$T/piece"
    local before after
    before=$(daemon_wchar)
    dd if="$T/piece" of="$MNT/f" bs=64k seek=800 conv=notrunc status=none
    after=$(daemon_wchar)
    dd if="$T/piece" of="$T/model" bs=64k seek=800 conv=notrunc status=none
    echo "# the 1 MiB rewrite made the daemon write $((after - before)) bytes" >&3
    [ $((after - before)) -lt $((8 << 20)) ]
    cmp "$T/model" "$MNT/f"
    remount
    cmp "$T/model" "$MNT/f"
}

@test "two descriptors of a large file see each other's writes and truncates at once" {
    mount_fs
    python3 - "$MNT/f" <<'EOF'
import os, sys
p = sys.argv[1]
w = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
r = os.open(p, os.O_RDONLY)
data = os.urandom(3 << 20)
os.write(w, data)
assert os.fstat(r).st_size == len(data)
assert os.pread(r, 1 << 20, 1 << 20) == data[1 << 20:2 << 20]
os.ftruncate(w, 100000)
assert os.fstat(r).st_size == 100000
os.lseek(r, 0, 0)
assert os.read(r, 1 << 20) == data[:100000]
os.pwrite(w, b"end", 5 << 20)
assert os.pread(r, 8, (5 << 20) - 5) == b"\0" * 5 + b"end"
os.close(w)
assert os.stat(p).st_size == (5 << 20) + 3
os.close(r)
EOF
    remount
    assert_eq "$(stat -c %s "$MNT/f")" $(((5 << 20) + 3))
}

@test "sqlite3 on a 100 MB database: updates in place, integrity after a remount" {
    command -v sqlite3 >/dev/null || skip "sqlite3 is not installed"
    mount_fs
    sqlite3 "$MNT/db" <<'EOF'
PRAGMA page_size=4096;
CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000)
INSERT INTO t SELECT i, randomblob(100000) FROM c;
EOF
    [ "$(stat -c %s "$MNT/db")" -gt $((100 * 1000 * 1000)) ]
    local before after
    before=$(daemon_wchar)
    sqlite3 "$MNT/db" "UPDATE t SET v = randomblob(100) WHERE id = 500; INSERT INTO t VALUES (1001, 'x');"
    after=$(daemon_wchar)
    echo "# a small transaction made the daemon write $((after - before)) bytes" >&3
    [ $((after - before)) -lt $((16 << 20)) ]
    remount
    assert_eq "$(sqlite3 "$MNT/db" 'PRAGMA integrity_check;')" ok
    assert_eq "$(sqlite3 "$MNT/db" 'SELECT count(*), length(v) FROM t WHERE id = 500;')" "1|100"
    assert_eq "$(sqlite3 "$MNT/db" 'SELECT count(*) FROM t;')" 1001
}

@test "daemon memory stays under 2 x dirty_limit + 64 MiB while a 2 GB file is copied" {
    mount_fs -o dirty_limit=32M
    dd if=/dev/zero bs=1M count=2048 status=none | tr '\0' 'z' |
        dd of="$MNT/big" bs=1M iflag=fullblock status=none
    assert_eq "$(stat -c %s "$MNT/big")" $((2048 << 20))
    assert_eq "$(tail -c 3 "$MNT/big")" zzz
    local hwm
    hwm=$(awk '$1 == "VmHWM:" { print $2 }' /proc/"$LSMFS_PID"/status)
    echo "# peak daemon memory: $hwm KiB" >&3
    [ "$hwm" -lt $(((2 * 32 + 64) * 1024)) ]
    rm "$MNT/big"
}

@test "SIGKILL during a large copy, then fsync of a small file: the small file intact, the large one old or new" {
    mount_fs
    head -c 10M /dev/urandom >"$T/old"
    cp "$T/old" "$MNT/large"
    sync "$MNT/large"
    dd if=/dev/urandom of="$T/new" bs=1M count=300 status=none
    dd if="$T/new" of="$MNT/large" bs=1M status=none &
    local cp_pid=$!
    sleep 1
    head -c 300000 /dev/urandom >"$T/small"
    python3 - "$T/small" "$MNT/small" <<'EOF'
import os, sys
data = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
os.write(fd, data)
os.fsync(fd)
os.close(fd)
EOF
    kill_daemon
    wait "$cp_pid" 2>/dev/null || true
    mount_fs
    cmp "$T/small" "$MNT/small"
    cmp "$T/old" "$MNT/large" 2>/dev/null || cmp "$T/new" "$MNT/large"
}

@test "SEEK_DATA and SEEK_HOLE find the data of a sparse file" {
    mount_fs
    python3 - "$MNT/f" <<'EOF'
import os, sys
p = sys.argv[1]
fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
os.pwrite(fd, b"a" * 100000, 1 << 20)
os.pwrite(fd, b"b" * 100000, 8 << 20)
os.ftruncate(fd, 16 << 20)
os.close(fd)
fd = os.open(p, os.O_RDONLY)
d0 = os.lseek(fd, 0, os.SEEK_DATA)
h0 = os.lseek(fd, d0, os.SEEK_HOLE)
d1 = os.lseek(fd, h0, os.SEEK_DATA)
h1 = os.lseek(fd, d1, os.SEEK_HOLE)
assert d0 <= 1 << 20 and h0 >= (1 << 20) + 100000 and h0 < 8 << 20, (d0, h0)
assert d1 <= 8 << 20 and d1 >= h0 and h1 >= (8 << 20) + 100000 and h1 < 16 << 20, (d1, h1)
try:
    os.lseek(fd, h1, os.SEEK_DATA)
    raise SystemExit("SEEK_DATA in the trailing hole succeeded")
except OSError as e:
    assert e.errno == 6, e                  # ENXIO
assert os.lseek(fd, 0, os.SEEK_END) == 16 << 20
EOF
}

@test "fallocate: punch a hole (du shrinks, zeros read), grow with mode 0; other modes refused" {
    mount_fs
    head -c 20M /dev/urandom >"$T/model"
    cp "$T/model" "$MNT/f"
    fallocate -p -o 4M -l 8M "$MNT/f"
    fallocate -p -o 4M -l 8M "$T/model"
    cmp "$T/model" "$MNT/f"
    local kb
    kb=$(du -k "$MNT/f" | cut -f1)
    [ "$kb" -lt $((13 * 1024)) ]
    assert_eq "$(stat -c %s "$MNT/f")" $((20 << 20))
    fallocate -l 30M "$MNT/f"
    assert_eq "$(stat -c %s "$MNT/f")" $((30 << 20))
    run fallocate -c -o 0 -l 1M "$MNT/f"
    [ "$status" -ne 0 ]
    [[ $output == *"Operation not supported"* ]]
    remount
    truncate -s 30M "$T/model"
    cmp "$T/model" "$MNT/f"
}

@test "cp --reflink=auto of a large file shares its extents: no data written" {
    mount_fs
    head -c 100M /dev/urandom >"$MNT/a"
    sync "$MNT/a"
    local before after
    before=$(daemon_wchar)
    cp --reflink=auto "$MNT/a" "$MNT/b"
    after=$(daemon_wchar)
    echo "# the copy made the daemon write $((after - before)) bytes" >&3
    [ $((after - before)) -lt $((4 << 20)) ]
    cmp "$MNT/a" "$MNT/b"
    # the copy is a file of its own: changing it leaves the source alone
    echo changed | dd of="$MNT/b" bs=1 seek=1000 conv=notrunc status=none
    ! cmp -s "$MNT/a" "$MNT/b"
    remount
    cmp -n 1000 "$MNT/a" "$MNT/b"
    rm "$MNT/a"
    remount
    assert_eq "$(dd if="$MNT/b" bs=1 skip=1000 count=7 status=none)" changed
}

@test "max_file_size as a quota: EFBIG past it, fine below; the default has none" {
    mount_fs -o max_file_size=100M
    truncate -s 100M "$MNT/f"
    run truncate -s 101M "$MNT/f"
    [ "$status" -ne 0 ]
    [[ $output == *"File too large"* ]]
    run dd if=/dev/zero of="$MNT/f" bs=1M count=2 seek=99 conv=notrunc status=none
    [ "$status" -ne 0 ]
    [[ $output == *"File too large"* ]]
    assert_eq "$(stat -c %s "$MNT/f")" $((100 << 20))
    remount
    truncate -s 5T "$MNT/f"
    assert_eq "$(stat -c %s "$MNT/f")" $((5 << 40))
}

@test "statfs reports the file system that holds DATADIR" {
    mount_fs
    local want got
    want=$(stat -f -c '%S %b' "$T")
    got=$(stat -f -c '%S %b' "$MNT")
    assert_eq "$got" "$want"
}

@test "rename of a large file, over another one too, moves no data" {
    mount_fs
    head -c 100M /dev/urandom >"$T/a"
    cp "$T/a" "$MNT/a"
    head -c 1M /dev/urandom >"$MNT/b"
    local before after
    before=$(daemon_wchar)
    mv "$MNT/a" "$MNT/c"
    mv "$MNT/c" "$MNT/b"
    after=$(daemon_wchar)
    echo "# two renames made the daemon write $((after - before)) bytes" >&3
    [ $((after - before)) -lt $((4 << 20)) ]
    [ ! -e "$MNT/a" ] && [ ! -e "$MNT/c" ]
    cmp "$T/a" "$MNT/b"
    remount
    cmp "$T/a" "$MNT/b"
    assert_eq "$(ls "$MNT")" b
}

# A correctness check, not a timing: tests/bench/fsxgen checks every read against its model as it
# goes and the whole file at the end, and writes the model's final content beside the mount.
@test "fsxgen: 3000 random writes, reads, truncates, appends on the default mount and with -o writeback; the content survives a remount" {
    local fsx=$REPO/tests/bench/fsxgen opts mmap=-m modes=("" "-o writeback")
    if [ ! -x "$fsx" ]; then
        echo "$fsx is not built: run make tests/bench/fsxgen" >&2
        return 1
    fi
    # close_to_open has no shared mmap and does not combine with writeback
    case " ${LSMFS_TEST_OPTS:-} " in *close_to_open*) mmap= modes=("") ;; esac
    for opts in "${modes[@]}"; do
        # shellcheck disable=SC2086 # opts is a list of words
        mount_fs $opts
        "$fsx" -n 3000 -s 4242 $mmap -c "$T/model" "$MNT/f"
        # shellcheck disable=SC2086
        remount $opts
        assert_eq "$(stat -c %s "$MNT/f")" "$(stat -c %s "$T/model")"
        cmp "$T/model" "$MNT/f"
        unmount_fs
        rm -rf "$DATA" "$T/model"
    done
}
