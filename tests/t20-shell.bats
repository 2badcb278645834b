#!/usr/bin/env bats
# t20 — the mount used from the shell: what `echo v > k`, cat, ls, rm, mv, cp, chmod, touch, mkdir,
# dd and friends do on lsmfs, each checked against what a POSIX filesystem gives.

load helper

setup() {
    common_setup
    mount_fs
    umask 022
}

teardown() {
    common_teardown
}

@test "echo > k, cat, >> append, shorter overwrite leaves no old tail" {
    echo v >"$MNT/k"
    assert_eq "$(cat "$MNT/k")" v
    echo w >>"$MNT/k"
    assert_eq "$(cat "$MNT/k")" "v
w"
    printf 'a long first value' >"$MNT/k"
    printf 'short' >"$MNT/k"
    assert_eq "$(cat "$MNT/k")" short
    assert_eq "$(stat -c %s "$MNT/k")" 5
    : >"$MNT/empty"
    assert_eq "$(stat -c %s "$MNT/empty")" 0
    [ -z "$(cat "$MNT/empty")" ]
}

@test "truncate grows with zeros and shrinks" {
    printf 'abc' >"$MNT/t"
    truncate -s 100000 "$MNT/t"
    assert_eq "$(stat -c %s "$MNT/t")" 100000
    { printf 'abc'; head -c 99997 /dev/zero; } >"$T/expect"
    cmp "$T/expect" "$MNT/t"
    truncate -s 2 "$MNT/t"
    assert_eq "$(cat "$MNT/t")" ab
    truncate -s 0 "$MNT/t"
    assert_eq "$(stat -c %s "$MNT/t")" 0
}

@test "ls lists sorted; readdir order itself is bytewise key order" {
    for n in zeta alpha 'Mid' 10 9 a.b a-b _u beta; do
        echo "$n" >"$MNT/$n"
    done
    expect=$(printf '%s\n' zeta alpha Mid 10 9 a.b a-b _u beta | LC_ALL=C sort)
    assert_eq "$(LC_ALL=C ls "$MNT")" "$expect"
    assert_eq "$(LC_ALL=C ls -U "$MNT")" "$expect"
    assert_eq "$(ls -a "$MNT" | grep -c '^\.\{1,2\}$')" 2
}

@test "rm removes the file; rm of a missing file says No such file" {
    echo 1 >"$MNT/a"
    echo 2 >"$MNT/b"
    rm "$MNT/a"
    [ ! -e "$MNT/a" ]
    assert_eq "$(ls "$MNT")" b
    run rm "$MNT/a"
    [ "$status" -ne 0 ]
    [[ $output == *"No such file or directory"* ]]
    run cat "$MNT/a"
    [ "$status" -ne 0 ]
}

@test "mv renames, moves between directories, replaces an existing target" {
    mkdir "$MNT/d1" "$MNT/d2"
    echo one >"$MNT/d1/f"
    mv "$MNT/d1/f" "$MNT/d1/g"
    [ ! -e "$MNT/d1/f" ]
    assert_eq "$(cat "$MNT/d1/g")" one
    mv "$MNT/d1/g" "$MNT/d2/h"
    assert_eq "$(ls "$MNT/d1")" ""
    assert_eq "$(cat "$MNT/d2/h")" one
    echo target >"$MNT/d2/t"
    mv "$MNT/d2/h" "$MNT/d2/t"
    assert_eq "$(cat "$MNT/d2/t")" one
    assert_eq "$(ls "$MNT/d2")" t
}

@test "mv of a directory with contents keeps the whole subtree" {
    mkdir -p "$MNT/src/sub/deeper"
    for i in 1 2 3; do echo "$i" >"$MNT/src/f$i"; done
    echo deep >"$MNT/src/sub/deeper/x"
    mv "$MNT/src" "$MNT/dst"
    [ ! -e "$MNT/src" ]
    assert_eq "$(cat "$MNT/dst/f2")" 2
    assert_eq "$(cat "$MNT/dst/sub/deeper/x")" deep
    assert_eq "$(cd "$MNT/dst" && find . | LC_ALL=C sort | tr '\n' ' ')" \
        ". ./f1 ./f2 ./f3 ./sub ./sub/deeper ./sub/deeper/x "
}

@test "cp and cp -r copy bytes" {
    head -c 50000 /dev/urandom >"$T/src"
    cp "$T/src" "$MNT/c"
    cmp "$T/src" "$MNT/c"
    cp "$MNT/c" "$MNT/c2"
    cmp "$T/src" "$MNT/c2"
    mkdir -p "$T/tree/x/y"
    echo p >"$T/tree/x/y/p"
    echo q >"$T/tree/q"
    cp -r "$T/tree" "$MNT/tree"
    diff -r "$T/tree" "$MNT/tree"
}

@test "stat: size, type and default modes follow the umask" {
    printf '12345' >"$MNT/f"
    mkdir "$MNT/d"
    assert_eq "$(stat -c '%s %a %F' "$MNT/f")" "5 644 regular file"
    assert_eq "$(stat -c '%a %F' "$MNT/d")" "755 directory"
    assert_eq "$(stat -c '%u %g' "$MNT/f")" "$(id -u) $(id -g)"
    umask 077
    echo x >"$MNT/private"
    assert_eq "$(stat -c %a "$MNT/private")" 600
    [ "$(stat -c %i "$MNT/f")" != "$(stat -c %i "$MNT/d")" ]
}

@test "touch -d and -m set mtime; a write moves mtime forward; touch creates empty files" {
    echo x >"$MNT/f"
    touch -d '2001-02-03 04:05:06 UTC' "$MNT/f"
    assert_eq "$(stat -c %Y "$MNT/f")" "$(date -d '2001-02-03 04:05:06 UTC' +%s)"
    touch -m -d '@1234567890' "$MNT/f"
    assert_eq "$(stat -c %Y "$MNT/f")" 1234567890
    assert_eq "$(cat "$MNT/f")" x
    echo more >>"$MNT/f"
    [ "$(stat -c %Y "$MNT/f")" -ge "$(( $(date +%s) - 60 ))" ]
    touch "$MNT/new"
    [ -f "$MNT/new" ]
    assert_eq "$(stat -c %s "$MNT/new")" 0
}

@test "chmod changes the mode of files and directories" {
    echo x >"$MNT/f"
    mkdir "$MNT/d"
    chmod 600 "$MNT/f"
    assert_eq "$(stat -c %a "$MNT/f")" 600
    chmod 4751 "$MNT/f"
    assert_eq "$(stat -c %a "$MNT/f")" 4751
    chmod 700 "$MNT/d"
    assert_eq "$(stat -c %a "$MNT/d")" 700
    assert_eq "$(cat "$MNT/f")" x
}

@test "chown (root) changes owner and group" {
    require_root
    echo x >"$MNT/f"
    mkdir "$MNT/d"
    chown 1234:5678 "$MNT/f"
    chown 42:43 "$MNT/d"
    assert_eq "$(stat -c '%u %g' "$MNT/f")" "1234 5678"
    assert_eq "$(stat -c '%u %g' "$MNT/d")" "42 43"
}

@test "mkdir -p, rmdir, ENOTEMPTY, rm -r" {
    mkdir -p "$MNT/a/b/c"
    [ -d "$MNT/a/b/c" ]
    echo f >"$MNT/a/b/c/f"
    run rmdir "$MNT/a/b/c"
    [ "$status" -ne 0 ]
    [[ $output == *"Directory not empty"* ]]
    run rmdir "$MNT/a"
    [ "$status" -ne 0 ]
    [[ $output == *"Directory not empty"* ]]
    rm "$MNT/a/b/c/f"
    rmdir "$MNT/a/b/c"
    [ ! -e "$MNT/a/b/c" ]
    assert_eq "$(ls "$MNT/a")" b
    mkdir -p "$MNT/a/b/c/d" "$MNT/a/e"
    for i in $(seq 1 50); do echo "$i" >"$MNT/a/b/c/d/$i"; done
    rm -r "$MNT/a"
    [ ! -e "$MNT/a" ]
    assert_eq "$(ls -A "$MNT")" ""
}

@test "errno of common mistakes: EEXIST, EISDIR, ENOTDIR, ENOENT" {
    mkdir "$MNT/d"
    echo x >"$MNT/f"
    run mkdir "$MNT/d"
    [[ $output == *"File exists"* ]]
    run mkdir "$MNT/f"
    [[ $output == *"File exists"* ]]
    run cat "$MNT/d"
    [[ $output == *"Is a directory"* ]]
    run rmdir "$MNT/f"
    [[ $output == *"Not a directory"* ]]
    run bash -c "echo y >'$MNT/f/sub'"
    [[ $output == *"Not a directory"* ]]
    run bash -c "echo y >'$MNT/nodir/sub'"
    [[ $output == *"No such file or directory"* ]]
    run rm "$MNT/d"
    [[ $output == *"Is a directory"* ]]
}

@test "binary 1 MiB and 5 MiB files from /dev/urandom read back identical" {
    head -c 1048576 /dev/urandom >"$T/r1"
    head -c 5242880 /dev/urandom >"$T/r5"
    cp "$T/r1" "$MNT/r1"
    dd if="$T/r5" of="$MNT/r5" bs=64k status=none
    cmp "$T/r1" "$MNT/r1"
    [ "$(du -k "$MNT/r1" | cut -f1)" -ge 1000 ]      # st_blocks is real: du and cp --sparse rely on it
    cmp "$T/r5" "$MNT/r5"
    # reads in the middle, at odd offsets
    python3 - "$T/r5" "$MNT/r5" <<'EOF'
import os, sys
a, b = os.open(sys.argv[1], os.O_RDONLY), os.open(sys.argv[2], os.O_RDONLY)
for off, n in ((777777, 100001), (1, 3), (5242870, 100), (4096 * 300 - 7, 70000)):
    assert os.pread(a, n, off) == os.pread(b, n, off), "pread mismatch at %d" % off
assert os.pread(b, 10, 5242880) == b""
EOF
    remount
    cmp "$T/r1" "$MNT/r1"
    cmp "$T/r5" "$MNT/r5"
}

# du_data: kilobytes the database directory takes on disk.
du_data() {
    du -sk "$DATA" | cut -f1
}

# wait_du_below KB: waits up to 15 s for the database to take less than KB kilobytes.
wait_du_below() {
    local i
    for ((i = 0; i < 150; i++)); do
        [ "$(du_data)" -lt "$1" ] && return 0
        sleep 0.1
    done
    echo "the database still takes $(du_data) KiB, expected less than $1" >&2
    return 1
}

@test "rm, mv over, rewriting of large files and renaming their directory give the space back" {
    mkdir "$MNT/keep"
    for i in 1 2 3 4 5 6; do head -c 8388608 /dev/urandom >"$MNT/big$i"; done
    for i in $(seq 1 100); do echo "small $i" >"$MNT/keep/s$i"; done
    cp "$MNT/big6" "$T/big6"
    sync
    full=$(du_data)
    [ "$full" -ge 49152 ]                      # 6 x 8 MiB are on disk
    rm "$MNT/big1" "$MNT/big2"
    wait_du_below $((full - 12288))            # at least 12 of their 16 MiB back
    mv "$MNT/big3" "$MNT/big4"                 # big4's old content is garbage now
    wait_du_below $((full - 20480))
    head -c 1000 /dev/urandom >"$MNT/big5"     # rewritten in place, much smaller
    wait_du_below $((full - 28672))
    # nothing else was lost
    cmp "$T/big6" "$MNT/big6"
    [ "$(stat -c %s "$MNT/big4")" = 8388608 ]
    [ "$(stat -c %s "$MNT/big5")" = 1000 ]
    [ "$(ls "$MNT/keep" | wc -l)" = 100 ]
    assert_eq "$(cat "$MNT/keep/s77")" "small 77"
    [ ! -e "$MNT/big1" ] && [ ! -e "$MNT/big3" ]
    # a directory renamed is copied to its new name: the old copies go too
    mkdir "$MNT/dir"
    mv "$MNT/big6" "$MNT/dir/big6"
    head -c 8388608 /dev/urandom >"$MNT/dir/big7"
    sync
    sleep 3                                    # what was noted before is merged by now
    moved=$(du_data)
    mv "$MNT/dir" "$MNT/dir2"
    wait_du_below $((moved + 4096))           # not the 16 MiB of a second copy
    cmp "$T/big6" "$MNT/dir2/big6"
    [ "$(stat -c %s "$MNT/dir2/big7")" = 8388608 ]
    [ ! -e "$MNT/dir" ]
    remount
    cmp "$T/big6" "$MNT/dir2/big6"
    [ "$(du_data)" -lt $((full - 20480)) ]
}

@test "rm -r of a tree of small files gives its disk space back within seconds" {
    mkdir -p "$MNT/tree/sub"
    head -c 8192 /dev/urandom >"$T/blob8k"
    for i in $(seq 1 600); do cp "$T/blob8k" "$MNT/tree/f$i"; cp "$T/blob8k" "$MNT/tree/sub/g$i"; done
    echo keep >"$MNT/other"
    sync
    full=$(du_data)
    [ "$full" -ge 9000 ]                       # 1200 x 8 KiB
    rm -r "$MNT/tree"
    wait_du_below $((full - 6144))             # at least 6 of the 9.4 MiB back
    [ ! -e "$MNT/tree" ]
    assert_eq "$(cat "$MNT/other")" keep
    remount
    [ ! -e "$MNT/tree" ]
    assert_eq "$(cat "$MNT/other")" keep
}

# sst_list: the table files of the database, one name per line.
sst_list() {
    (cd "$DATA" && ls -- *.sst 2>/dev/null | sort)
}

@test "an idle mount keeps no table that merges replaced: unmounting deletes none" {
    unmount_fs
    mount_fs -o memtable_size=64K
    mkdir "$MNT/d"
    for i in $(seq 1 3000); do echo "file $i" >"$MNT/d/f$i"; done
    # overwriting existing files takes no iterator: the pooled ones stay idle while these writes
    # make the engine flush and merge
    for i in $(seq 1 3000); do echo "file $i again" >"$MNT/d/f$i"; done
    # wait until merging is over: the table files stay the same for 3 s (at most 30 s)
    local prev="" cur stable=0 i
    for ((i = 0; i < 300 && stable < 30; i++)); do
        cur=$(sst_list)
        if [ "$cur" = "$prev" ]; then stable=$((stable + 1)); else stable=0; fi
        prev=$cur
        sleep 0.1
    done
    [ "$stable" -ge 30 ]
    [ "$(echo "$cur" | wc -l)" -ge 2 ]
    unmount_fs
    after=$(sst_list)
    if [ "$cur" != "$after" ]; then
        echo "tables deleted only at unmount: $(comm -23 <(echo "$cur") <(echo "$after") | tr '\n' ' ')" >&2
        false
    fi
    mount_fs
    [ "$(ls "$MNT/d" | wc -l)" = 3000 ]
    assert_eq "$(cat "$MNT/d/f2999")" "file 2999 again"
}

@test "names with spaces, UTF-8, shell-special characters and a newline" {
    names=('with space' 'ünïcödé-日本語' 'user:123' '$dollar' '*star?' '[br]' "quote'\"" \
           '-dash' '#hash' 'semi;amp&pipe|' 'back\slash' 'tab	tab' $'new\nline' '.hidden' '...')
    for n in "${names[@]}"; do
        printf '%s' "$n" >"$MNT/$n"
    done
    for n in "${names[@]}"; do
        assert_eq "$(cat "$MNT/$n")" "$n"
    done
    find "$MNT" -mindepth 1 -print0 | sort -z >"$T/found"
    for n in "${names[@]}"; do printf '%s\0' "$MNT/$n"; done | sort -z >"$T/expect"
    cmp "$T/expect" "$T/found"
    mkdir "$MNT/dir with space"
    echo in >"$MNT/dir with space/f ü"
    assert_eq "$(cat "$MNT/dir with space/f ü")" in
}

@test "255-byte name works; 256-byte name fails with File name too long" {
    n255=$(printf 'n%.0s' $(seq 1 255))
    n256=${n255}x
    echo ok >"$MNT/$n255"
    assert_eq "$(cat "$MNT/$n255")" ok
    assert_eq "$(ls "$MNT")" "$n255"
    run bash -c "echo no >'$MNT/$n256'"
    [ "$status" -ne 0 ]
    [[ $output == *"File name too long"* ]]
    run mkdir "$MNT/$n256"
    [ "$status" -ne 0 ]
    [[ $output == *"File name too long"* ]]
    run mv "$MNT/$n255" "$MNT/$n256"
    [ "$status" -ne 0 ]
    [[ $output == *"File name too long"* ]]
    # 255 bytes of UTF-8 (2-byte characters + 1) is also fine
    u=$(printf 'é%.0s' $(seq 1 127))a
    assert_eq "$(printf '%s' "$u" | wc -c)" 255
    echo u >"$MNT/$u"
    assert_eq "$(cat "$MNT/$u")" u
    assert_eq "$(ls "$MNT" | wc -l)" 2
}

@test "a large file just written is read by range: 4 KiB reads do not copy the whole value" {
    [ -w "/proc/$LSMFS_PID/clear_refs" ] || skip "no /proc/PID/clear_refs here"
    head -c $((60 << 20)) /dev/urandom >"$T/big"
    cp "$T/big" "$MNT/big"
    hwm() { awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$LSMFS_PID/status"; }
    echo 5 >"/proc/$LSMFS_PID/clear_refs"      # the peak is now what is resident
    before=$(hwm)
    for skip in 0 1000 5000 9000 15000; do
        dd if="$MNT/big" of="$T/piece" bs=4096 skip=$skip count=4 iflag=direct status=none
        cmp "$T/piece" <(dd if="$T/big" bs=4096 skip=$skip count=4 status=none)
    done
    grew=$(($(hwm) - before))
    # Copying the value whole for a read would add its 60 MiB at once.
    [ "$grew" -lt $((16 << 20)) ] || { echo "the daemon's peak grew by $grew bytes"; false; }
    cmp "$T/big" "$MNT/big"
}

@test "a new descriptor sees a writer's unclosed bytes: size and content agree (POSIX, as ext4)" {
    python3 - "$MNT" <<'PY'
import os, sys
m = sys.argv[1]
early = os.open(m + "/t", os.O_RDONLY | os.O_CREAT, 0o644)     # opened before the writes
fd = os.open(m + "/t", os.O_RDWR | os.O_TRUNC)
os.write(fd, b"hello world")
r = os.open(m + "/t", os.O_RDONLY)
assert os.fstat(r).st_size == 11, os.fstat(r).st_size
assert os.read(r, 99) == b"hello world"
assert os.pread(early, 99, 0) == b"hello world"
os.pwrite(fd, b"W", 0)
os.write(fd, b"!" * 100000)                    # grows past what the first reads saw
assert os.pread(r, 6, 0) == b"Wello "
assert os.fstat(r).st_size == 100011
assert len(os.pread(early, 200000, 0)) == 100011
for x in (fd, r, early):
    os.close(x)
assert open(m + "/t", "rb").read() == b"Wello world" + b"!" * 100000
PY
}

@test "shared mmap on the default mount: read-only and writable mappings see and make the file" {
    python3 - "$MNT" <<'PY'
import mmap, os, sys
m = sys.argv[1]
with open(m + "/mm", "wb") as f:
    f.write(b"a" * 10000)
fd = os.open(m + "/mm", os.O_RDWR)
w = mmap.mmap(fd, 10000, mmap.MAP_SHARED)
assert w[:3] == b"aaa"
w[4096:4101] = b"HELLO"                        # a store into the second page
rfd = os.open(m + "/mm", os.O_RDONLY)
r = mmap.mmap(rfd, 10000, mmap.MAP_SHARED, mmap.PROT_READ)
assert r[4096:4101] == b"HELLO", r[4096:4101]  # one page cache: the reader's mapping sees it
os.pwrite(fd, b"XY", 0)                        # a write(2) shows in both mappings
assert w[:2] == b"XY" and r[:2] == b"XY"
w.flush()
w.close(); r.close(); os.close(fd); os.close(rfd)
PY
    remount
    assert_eq "$(head -c 2 "$MNT/mm")" XY
    assert_eq "$(dd if="$MNT/mm" bs=1 skip=4096 count=5 status=none)" HELLO
    assert_eq "$(stat -c %s "$MNT/mm")" 10000
}

@test "close_to_open: a read-only descriptor sees the last flushed version; it refuses kernel_cache" {
    require_strict_close_to_open
    remount -o close_to_open
    python3 - "$MNT" <<'PY'
import os, sys
m = sys.argv[1]
fd = os.open(m + "/t", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"hello world")
r = os.open(m + "/t", os.O_RDONLY)
assert os.read(r, 99) == b"", "strict mode shows pending bytes"
os.close(fd)
r2 = os.open(m + "/t", os.O_RDONLY)
assert os.read(r2, 99) == b"hello world"
PY
    unmount_fs
    run "$LSMFS" -f -o close_to_open,kernel_cache "$DATA" "$MNT"
    [ "$status" -ne 0 ]
    [[ $output == *"close_to_open cannot be combined with kernel_cache"* ]]
}

@test "writes at offsets with gaps read as zeros (dd seek=)" {
    printf 'A' | dd of="$MNT/sparse" bs=1 seek=0 conv=notrunc status=none
    printf 'B' | dd of="$MNT/sparse" bs=1 seek=300000 conv=notrunc status=none
    printf 'C' | dd of="$MNT/sparse" bs=1 seek=5000 conv=notrunc status=none
    assert_eq "$(stat -c %s "$MNT/sparse")" 300001
    python3 - "$MNT/sparse" <<'EOF'
import sys
d = open(sys.argv[1], "rb").read()
want = bytearray(300001); want[0] = ord("A"); want[5000] = ord("C"); want[300000] = ord("B")
assert d == bytes(want), "gap bytes are not zeros"
EOF
    printf '0123456789' >"$MNT/mid"
    printf 'xy' | dd of="$MNT/mid" bs=1 seek=4 conv=notrunc status=none
    assert_eq "$(cat "$MNT/mid")" 0123xy6789
}

@test "O_EXCL refuses an existing file; O_APPEND always writes at the end" {
    echo old >"$MNT/e"
    python3 - "$MNT" <<'EOF'
import errno, os, sys
m = sys.argv[1]
try:
    os.open(m + "/e", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    raise SystemExit("O_EXCL open of an existing file succeeded")
except FileExistsError:
    pass
fd = os.open(m + "/x", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
os.write(fd, b"new")
os.close(fd)
assert open(m + "/x", "rb").read() == b"new"
assert os.stat(m + "/x").st_mode & 0o777 == 0o640
fd = os.open(m + "/x", os.O_WRONLY | os.O_APPEND)
os.lseek(fd, 0, os.SEEK_SET)
os.write(fd, b"+1")
os.write(fd, b"+2")
os.close(fd)
with open(m + "/x", "ab") as f:
    f.write(b"+3")
assert open(m + "/x", "rb").read() == b"new+1+2+3", open(m + "/x", "rb").read()
EOF
    run bash -c "set -C; echo again >'$MNT/e'"
    [ "$status" -ne 0 ]
    assert_eq "$(cat "$MNT/e")" old
}

@test "hard links are refused with EPERM; FIFOs, sockets and device nodes are kept, also across a remount" {
    echo x >"$MNT/f"
    run ln "$MNT/f" "$MNT/hard"
    [ "$status" -ne 0 ]
    assert_output_has_one_of "Operation not permitted"
    mkfifo -m 0640 "$MNT/fifo"
    # the FIFO carries bytes between two processes (the kernel's pipe)
    (echo through-the-fifo >"$MNT/fifo" &)
    assert_eq "$(timeout 10 cat "$MNT/fifo")" through-the-fifo
    python3 - "$MNT/sock" <<'EOF2'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(1)
c = socket.socket(socket.AF_UNIX)
c.connect(sys.argv[1])
a, _ = s.accept()
c.send(b"ping")
assert a.recv(4) == b"ping"
EOF2
    if [ "$(id -u)" = 0 ]; then
        mknod "$MNT/null" c 1 3
    fi
    remount
    assert_eq "$(stat -c '%F %a' "$MNT/fifo")" "fifo 640"
    assert_eq "$(stat -c '%F' "$MNT/sock")" socket
    if [ "$(id -u)" = 0 ]; then
        assert_eq "$(stat -c '%F %t:%T' "$MNT/null")" "character special file 1:3"
    fi
    assert_eq "$(find "$MNT" -type p)" "$MNT/fifo"
    assert_eq "$(find "$MNT" -type s)" "$MNT/sock"
    mv "$MNT/fifo" "$MNT/fifo2"
    assert_eq "$(stat -c '%F' "$MNT/fifo2")" fifo
    rm "$MNT/fifo2" "$MNT/sock"
    [ ! -e "$MNT/fifo2" ]
    assert_eq "$(cat "$MNT/f")" x
}

@test "symbolic links are kept, also across a remount" {
    echo target-bytes >"$MNT/t"
    ln -s t "$MNT/rel"
    ln -s /etc/hostname "$MNT/abs"
    mkdir "$MNT/d"
    ln -s ../t "$MNT/d/up"
    assert_eq "$(readlink "$MNT/rel")" t
    assert_eq "$(cat "$MNT/rel")" target-bytes
    assert_eq "$(cat "$MNT/d/up")" target-bytes
    [ -L "$MNT/abs" ]
    remount
    assert_eq "$(readlink "$MNT/abs")" /etc/hostname
    assert_eq "$(readlink "$MNT/d/up")" ../t
    assert_eq "$(cat "$MNT/rel")" target-bytes
    assert_eq "$(stat -c %F "$MNT/rel")" "symbolic link"
}

@test "extended attributes work (t25); fallocate grows, other modes fail with EOPNOTSUPP" {
    echo x >"$MNT/f"
    setfattr -n user.test -v 1 "$MNT/f"
    assert_eq "$(getfattr --only-values -n user.test "$MNT/f")" 1
    fallocate -l 1M "$MNT/f"
    assert_eq "$(stat -c %s "$MNT/f")" 1048576
    assert_eq "$(head -c 2 "$MNT/f" | od -An -c | tr -d ' ')" 'x\n'
    run fallocate -c -o 0 -l 4096 "$MNT/f"
    [ "$status" -ne 0 ]
    [[ $output == *"Operation not supported"* ]]
    assert_eq "$(stat -c %s "$MNT/f")" 1048576
}

@test "a copied executable runs from the mount; private mmap reads the file's bytes" {
    cp /bin/echo "$MNT/myecho"
    chmod 755 "$MNT/myecho"
    assert_eq "$("$MNT/myecho" hello from lsmfs)" "hello from lsmfs"
    head -c 200000 /dev/urandom >"$MNT/m"
    python3 - "$MNT/m" <<'EOF'
import mmap, sys
with open(sys.argv[1], "rb") as f:
    want = f.read()
    f.seek(0)
    m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    assert m[:] == want
EOF
}

@test "unlinked open file stays usable through its fd and does not come back; rename while open" {
    python3 - "$MNT" <<'EOF'
import os, sys
m = sys.argv[1]
fd = os.open(m + "/u", os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"before")
os.unlink(m + "/u")
os.write(fd, b"-after")
assert os.pread(fd, 100, 0) == b"before-after"
os.fsync(fd)
os.close(fd)
assert os.listdir(m) == [], os.listdir(m)
fd = os.open(m + "/r1", os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"one")
os.rename(m + "/r1", m + "/r2")
os.write(fd, b"two")
os.close(fd)
assert os.listdir(m) == ["r2"], os.listdir(m)
assert open(m + "/r2", "rb").read() == b"onetwo"
EOF
    remount
    assert_eq "$(ls -A "$MNT")" r2
    assert_eq "$(cat "$MNT/r2")" onetwo
}

@test "attributes (mode, uid, gid, mtime, ctime, size) persist across remount, the root's too" {
    require_root
    mkdir -p "$MNT/d/e"
    printf 'content' >"$MNT/d/f"
    chmod 640 "$MNT/d/f"
    chown 1001:1002 "$MNT/d/f"
    touch -d '1999-12-31 23:59:59 UTC' "$MNT/d/f"
    chmod 711 "$MNT/d/e"
    chown 7:8 "$MNT/d/e"
    touch -d '2010-06-01 12:00:00 UTC' "$MNT/d/e"
    chmod 750 "$MNT"
    chown 12:34 "$MNT"
    sleep 1.1
    fmt='%n %s %a %u %g %Y %Z %F'
    before=$(cd "$MNT" && stat -c "$fmt" d/f d/e .)
    remount
    after=$(cd "$MNT" && stat -c "$fmt" d/f d/e .)
    assert_eq "$after" "$before"
    assert_eq "$(cat "$MNT/d/f")" content
}

# "NAME INO" for each path given (relative to $MNT), one a line.
inos() {
    (cd "$MNT" && stat -c '%n %i' "$@")
}

@test "st_ino of files and directories stays across drop_caches, remount and rename (man lsmfs: Inode numbers)" {
    require_root
    mkdir -p "$MNT/d/sub"
    echo x >"$MNT/d/sub/f"
    echo y >"$MNT/top"
    ln -s top "$MNT/link"
    before=$(inos top link d d/sub d/sub/f)
    echo 2 >/proc/sys/vm/drop_caches
    assert_eq "$(inos top link d d/sub d/sub/f)" "$before"
    remount
    assert_eq "$(inos top link d d/sub d/sub/f)" "$before"
    mv "$MNT/top" "$MNT/top2"
    mv "$MNT/d" "$MNT/e"
    moved=$(echo "$before" | sed 's/^top /top2 /; s/^d\b/e/')
    assert_eq "$(inos top2 link e e/sub e/sub/f)" "$moved"
    echo 2 >/proc/sys/vm/drop_caches
    assert_eq "$(inos top2 link e e/sub e/sub/f)" "$moved"
    remount
    assert_eq "$(inos top2 link e e/sub e/sub/f)" "$moved"
    # a write and a chmod keep it too, and so does a move into another directory
    echo more >>"$MNT/top2"
    chmod 600 "$MNT/e/sub/f"
    mkdir "$MNT/z"
    mv "$MNT/e/sub" "$MNT/z/sub"
    assert_eq "$(inos top2 z/sub z/sub/f)" "$(echo "$moved" | grep -E '^(top2|e/sub|e/sub/f) ' |
        sed 's|^e/|z/|')"
}

@test "two live files never share an st_ino, across lookups, drop_caches, remounts and new files" {
    require_root
    mkdir "$MNT/a" "$MNT/b"
    for i in $(seq 1 60); do echo "$i" >"$MNT/a/f$i"; echo "$i" >"$MNT/b/g$i"; done
    mkdir "$MNT/a/dir1" "$MNT/b/dir2"
    # every observation of every name, in varying orders, with the caches dropped and the
    # daemon restarted in between, and files removed and made meanwhile
    (cd "$MNT" && find . -mindepth 1 | LC_ALL=C sort) >"$T/names"
    (cd "$MNT" && xargs stat -c '%i %n' <"$T/names") >"$T/seen"
    echo 2 >/proc/sys/vm/drop_caches
    (cd "$MNT" && tac "$T/names" | xargs stat -c '%i %n') >>"$T/seen"
    remount
    rm "$MNT/a/f7" "$MNT/b/g9"
    for i in $(seq 1 20); do echo new >"$MNT/b/new$i"; done
    mkdir "$MNT/newdir"
    (cd "$MNT" && find . -mindepth 1 | LC_ALL=C sort -r) >"$T/names"
    (cd "$MNT" && xargs stat -c '%i %n' <"$T/names") >>"$T/seen"
    remount
    (cd "$MNT" && shuf "$T/names" | xargs stat -c '%i %n') >>"$T/seen"
    sort -u "$T/seen" >"$T/pairs"
    # one number per name, one name per number
    assert_eq "$(awk '{ print $2 }' "$T/pairs" | sort | uniq -d | head -3)" ""
    assert_eq "$(awk '{ print $1 }' "$T/pairs" | sort | uniq -d | head -3)" ""
    [ "$(grep -c . "$T/pairs")" -ge 140 ]
    # the root is 1, and no other file is
    assert_eq "$(stat -c %i "$MNT")" 1
    run grep -c '^1 ' "$T/pairs"
    assert_eq "$output" 0
}

@test "max_file_size: with 1M, a 2M write fails with File too large; 1M exactly fits" {
    remount -o max_file_size=1M
    head -c 1048576 /dev/urandom >"$T/one"
    cp "$T/one" "$MNT/one"
    cmp "$T/one" "$MNT/one"
    run dd if=/dev/zero of="$MNT/two" bs=64k count=32 status=none
    [ "$status" -ne 0 ]
    [[ $output == *"File too large"* ]]
    run truncate -s 2M "$MNT/one"
    [ "$status" -ne 0 ]
    [[ $output == *"File too large"* ]]
    cmp "$T/one" "$MNT/one"
}

@test "no max_file_size by default: a file grows past the old 64M and 1G limits" {
    truncate -s $((64 * 1048576 + 1)) "$MNT/big"
    assert_eq "$(stat -c %s "$MNT/big")" $((64 * 1048576 + 1))
    dd if=/dev/zero of="$MNT/big" bs=4k count=1 seek=$((1 << 19)) conv=notrunc status=none
    assert_eq "$(stat -c %s "$MNT/big")" $(((1 << 31) + 4096))
    run truncate -s 17T "$MNT/big"
    [ "$status" -ne 0 ]
    [[ $output == *"File too large"* ]]
}

@test "dirty_limit: a directory rename above it fails with EXDEV and mv falls back to copying" {
    remount -o max_file_size=1M,dirty_limit=1M
    mkdir -p "$MNT/big/sub" "$MNT/small"
    for i in $(seq 1 12); do head -c 200000 /dev/urandom >"$MNT/big/sub/f$i"; done
    echo s >"$MNT/small/s"
    (cd "$MNT/big" && sha256sum sub/*) >"$T/sums"
    python3 - "$MNT" <<'EOF'
import errno, os, sys
m = sys.argv[1]
try:
    os.rename(m + "/big", m + "/big2")
    raise SystemExit("rename of a 2.4 MB tree with dirty_limit=1M succeeded")
except OSError as e:
    assert e.errno == errno.EXDEV, e
os.rename(m + "/small", m + "/small2")       # a small tree still moves in one batch
assert open(m + "/small2/s").read() == "s\n"
EOF
    mv "$MNT/big" "$MNT/moved"
    [ ! -e "$MNT/big" ]
    (cd "$MNT/moved" && sha256sum -c --quiet "$T/sums")
}

@test "dirty_limit: many files written at once beyond the memory budget all end up complete" {
    remount -o max_file_size=1M,dirty_limit=1M
    python3 - "$MNT" <<'EOF'
import hashlib, os, sys
m = sys.argv[1]
fds = [os.open("%s/w%d" % (m, i), os.O_WRONLY | os.O_CREAT, 0o644) for i in range(8)]
want = [b""] * 8
for chunk in range(16):                          # 8 files x 512 KiB, interleaved 32 KiB writes
    for i, fd in enumerate(fds):
        b = os.urandom(32768)
        os.write(fd, b)
        want[i] += b
for fd in fds:
    os.close(fd)
for i in range(8):
    got = open("%s/w%d" % (m, i), "rb").read()
    assert got == want[i], "w%d: %d bytes, want %d" % (i, len(got), len(want[i]))
open(m + "/../sums", "w").write("".join("%s  w%d\n" % (hashlib.sha256(w).hexdigest(), i) for i, w in enumerate(want)))
EOF
    remount
    (cd "$MNT" && sha256sum -c --quiet "$T/sums")
}

@test "df and stat -f work on the mount" {
    run df "$MNT"
    [ "$status" -eq 0 ]
    run stat -f -c %b "$MNT"
    [ "$status" -eq 0 ]
    [ "$output" -gt 0 ]
}
