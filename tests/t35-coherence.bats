#!/usr/bin/env bats
# t35-coherence.bats — the kernel's caches never show a stale file, name, attribute or listing.
#
# lsmfs lets the kernel keep file pages across opens, names, negative names and attributes for an
# hour, and directory listings until the directory changes (man lsmfs: CACHING). Each test here
# makes changes through the mount and checks, from other processes (cat, stat, ls, wc, python),
# that they are seen at once: contents, sizes, mtimes, truncates, appends, overwrites, renames,
# deletes, listings, mmap readers. Each runs every mode itself (default, writeback, close_to_open,
# nokernel_cache, and mt: libfuse's multi-threaded loop instead of one serving thread), so
# LSMFS_TEST_OPTS does not apply here, and each runs its steps twice: with
# warm caches, and with the kernel's caches dropped once in the middle.

load helper

setup() {
    common_setup
}

teardown() {
    common_teardown
}

MODES=(default writeback close_to_open nokernel_cache mt)

# mount_mode MODE [OPTIONS...]: mounts $DATA with that mode's options only.
mount_mode() {
    local mode=$1
    shift
    if [ "$mode" = default ]; then
        LSMFS_TEST_OPTS='' mount_fs "$@"
    else
        LSMFS_TEST_OPTS='' mount_fs -o "$mode" "$@"
    fi
}

# drop_if N: drops the kernel's caches when N is "drop" (the second pass of each test).
drop_if() {
    if [ "$1" = drop ] && [ "$(id -u)" = 0 ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
}

# check WHAT GOT WANT: fails naming the mode and step.
check() {
    if [ "$2" != "$3" ]; then
        printf '%s [%s, %s]\n  expected: %q\n       got: %q\n' "$1" "$MODE" "$PASS" "$3" "$2" >&2
        return 1
    fi
}

# expect FILE: FILE on the mount holds exactly the bytes of $T/want, as cat, wc -c, stat and a
# python reader (each its own process) see it.
expect() {
    local size
    size=$(stat -c %s "$T/want")
    check "$1: stat size" "$(stat -c %s "$MNT/$1")" "$size"
    check "$1: wc -c" "$(wc -c <"$MNT/$1")" "$size"
    if ! cmp -s "$T/want" <(cat "$MNT/$1"); then
        check "$1: content" "$(od -c "$MNT/$1" | head -n 5)" "$(od -c "$T/want" | head -n 5)"
    fi
    check "$1: python" "$(python3 -c 'import sys; print(len(open(sys.argv[1], "rb").read()))' \
        "$MNT/$1")" "$size"
}

# The file steps, run in $MNT/$MODE-$PASS-f for one mode and pass.
file_steps() {
    local f=$MODE-$PASS-f
    printf 'one\n' >"$MNT/$f"
    printf 'one\n' >"$T/want"
    expect "$f"
    touch -d @1000000000 "$MNT/$f"
    check "touch -d: mtime" "$(stat -c %Y "$MNT/$f")" 1000000000
    drop_if "$PASS"
    printf 'two-two\n' >"$MNT/$f"                       # overwrite (O_TRUNC), longer
    printf 'two-two\n' >"$T/want"
    expect "$f"
    [ "$(stat -c %Y "$MNT/$f")" -gt 1000000000 ] || check "overwrite: mtime" "$(stat -c %Y "$MNT/$f")" "now"
    printf 'x\n' >>"$MNT/$f"                            # append
    printf 'two-two\nx\n' >"$T/want"
    expect "$f"
    printf 'ab' >"$MNT/$f"                              # overwrite, shorter
    printf 'ab' >"$T/want"
    expect "$f"
    truncate -s 1 "$MNT/$f"
    truncate -s 1 "$T/want"
    expect "$f"
    truncate -s 5000 "$MNT/$f"                          # grows with zeros
    truncate -s 5000 "$T/want"
    expect "$f"
    printf 'MID' | dd of="$MNT/$f" bs=1 seek=4096 conv=notrunc status=none
    printf 'MID' | dd of="$T/want" bs=1 seek=4096 conv=notrunc status=none
    expect "$f"
    # a writer that has not closed yet: seen at once, except by close_to_open's readers
    exec 8<>"$MNT/$f"    # (bats keeps 3 for itself)
    printf 'OPEN' >&8
    printf 'OPEN' | dd of="$T/want" bs=1 conv=notrunc status=none
    if [ "$MODE" != close_to_open ]; then
        expect "$f"
        check "open writer: stat" "$(stat -c %s "$MNT/$f")" 5000
    fi
    exec 8>&-
    expect "$f"
}

@test "files: contents, sizes, mtimes, overwrites, appends, truncates are seen at once, open or closed" {
    for MODE in "${MODES[@]}"; do
        mount_mode "$MODE"
        for PASS in warm drop; do
            file_steps
        done
        unmount_fs
    done
}

# The name and listing steps, in $MNT/$MODE-$PASS for one mode and pass.
name_steps() {
    local d=$MNT/$MODE-$PASS
    mkdir "$d"
    ls "$d" >/dev/null
    run stat "$d/n"                                     # a negative entry, cached
    [ "$status" -ne 0 ]
    echo new >"$d/n"
    check "created after a failed lookup" "$(cat "$d/n")" new
    check "listed" "$(ls "$d")" n
    echo a >"$d/a"
    echo bb >"$d/b"
    cat "$d/a" "$d/b" >/dev/null
    check "ls" "$(ls "$d" | tr '\n' ' ')" "a b n "
    mv "$d/a" "$d/b"                                    # rename over a file
    check "renamed over: content" "$(cat "$d/b")" a
    check "renamed over: size" "$(stat -c %s "$d/b")" 2
    run stat "$d/a"
    [ "$status" -ne 0 ]
    check "ls after rename" "$(ls "$d" | tr '\n' ' ')" "b n "
    drop_if "$PASS"
    rm "$d/b"
    run cat "$d/b"
    [ "$status" -ne 0 ]
    check "ls after rm" "$(ls "$d" | tr '\n' ' ')" "n "
    mkdir "$d/d1" "$d/d2"
    echo x >"$d/d1/x"
    ls "$d/d1" "$d/d2" >/dev/null
    touch -d @1000000000 "$d/d2"
    local links
    links=$(stat -c %h "$d")
    mv "$d/d1/x" "$d/d2/x"                              # across directories
    check "source listing" "$(ls -A "$d/d1")" ""
    check "target listing" "$(ls -A "$d/d2")" x
    [ "$(stat -c %Y "$d/d2")" -gt 1000000000 ] || check "target dir mtime" "$(stat -c %Y "$d/d2")" now
    mv "$d/d2" "$d/d3"                                  # a directory
    check "moved dir listing" "$(ls "$d/d3")" x
    check "moved dir file" "$(cat "$d/d3/x")" x
    run stat "$d/d2"
    [ "$status" -ne 0 ]
    check "ls after dir rename" "$(ls "$d" | tr '\n' ' ')" "d1 d3 n "
    mkdir "$d/d4"
    check "nlink after mkdir" "$(stat -c %h "$d")" $((links + 1))
    rmdir "$d/d4" "$d/d1"
    check "nlink after rmdir" "$(stat -c %h "$d")" $((links - 1))
    for i in $(seq 1 40); do echo "$i" >"$d/d3/f$i"; done
    check "40 created" "$(ls "$d/d3" | wc -l)" 41
    drop_if "$PASS"
    rm "$d"/d3/f1*
    check "11 removed" "$(ls "$d/d3" | wc -l)" 30
    printf '12345678' >>"$d/d3/f2"
    check "ls -l size after a write" "$(ls -l "$d/d3" | awk '$NF == "f2" { print $5 }')" 10
    ln -s f2 "$d/d3/link"
    check "symlink listed" "$(ls "$d/d3" | grep -c '^link$')" 1
    check "symlink read" "$(cat "$d/d3/link")" "$(cat "$d/d3/f2")"
}

@test "names and listings: creates, renames, deletes, directory moves are seen at once by ls, stat, cat" {
    for MODE in "${MODES[@]}"; do
        mount_mode "$MODE"
        for PASS in warm drop; do
            name_steps
        done
        unmount_fs
    done
}

@test "mmap readers see writes, truncates and appends made by another process at once" {
    for MODE in "${MODES[@]}"; do
        mount_mode "$MODE"
        run python3 - "$MNT/m" "$MODE" <<'EOF'
import mmap, os, subprocess, sys
path, mode = sys.argv[1], sys.argv[2]
with open(path, "wb") as f:
    f.write(b"a" * 8192)
fd = os.open(path, os.O_RDONLY)
try:
    m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ)
except OSError as e:
    assert mode == "close_to_open", "mmap: %s" % e    # close_to_open: direct I/O, no MAP_SHARED
    print("no mmap")
    sys.exit(0)
assert m[:4] == b"aaaa"
def other(code):
    subprocess.run([sys.executable, "-c", code, path], check=True)
other("import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); os.pwrite(fd, b'WXYZ', 4096); os.close(fd)")
assert m[4096:4100] == b"WXYZ", "a write by another process: %r" % m[4096:4100]
other("import os, sys; os.truncate(sys.argv[1], 6000)")
other("import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND); os.write(fd, b'tail'); os.close(fd)")
assert m[4096:4100] == b"WXYZ" and m[5990:6000] == b"a" * 10, "after a truncate"
assert os.stat(path).st_size == 6004
with open(path, "rb") as f:
    assert f.read()[-6:] == b"aatail"
m.close()
os.close(fd)
print("ok")
EOF
        check "mmap reader" "$status $output" "0 $([ "$MODE" = close_to_open ] && echo 'no mmap' || echo ok)"
        unmount_fs
    done
}

@test "a write-back that lsmfs refuses leaves no reader with bytes the file does not hold" {
    # max_file_size makes lsmfs refuse a file grown past it. With write(2) going through the
    # daemon the write itself is short; with the writeback cache the kernel took the bytes and
    # the write-back fails, so close(2) reports it, and the kernel must drop the pages it holds:
    # at once for a reader that opens the file after, and within moments for one that had it
    # open already.
    local seen_old seen_new told stored
    for MODE in "${MODES[@]}"; do
        mount_mode "$MODE" -o max_file_size=8K
        run python3 - "$MNT/big" <<'EOF'
import os, sys
path = sys.argv[1]
open(path, "wb").close()
import time
rfd = os.open(path, os.O_RDONLY)
fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
err = []
try:
    n = os.write(fd, b"a" * 12288)
    if n != 12288:
        err.append("short")
except OSError as e:
    err.append(e.strerror)
try:
    os.close(fd)
except OSError as e:
    err.append(e.strerror)
# a descriptor open already sees the pages dropped once the notify thread's invalidation lands,
# moments after close returns (close(2) fails before any FLUSH reaches lsmfs): wait up to 2 s
for i in range(200):
    old = os.pread(rfd, 20000, 0).replace(b"\0", b"")
    if not old:
        break
    time.sleep(0.01)
new = open(path, "rb").read().replace(b"\0", b"")   # (an open drops stale pages for all)
print(len(old), len(new), " ".join(err) or "no error")
EOF
        [ "$status" -eq 0 ]
        read -r seen_old seen_new told <<<"$output"
        [[ $told != "no error" ]] || check "the writer is told" "$told" "an error"
        unmount_fs
        mount_mode "$MODE"
        stored=$(tr -d '\0' <"$MNT/big" | wc -c)
        # (close_to_open's reader keeps the version it opened: the empty file)
        [ "$MODE" = close_to_open ] ||
            check "bytes an open reader sees that are not stored" "$seen_old" "$stored"
        check "bytes a new reader sees that are not stored" "$seen_new" "$stored"
        [ "$stored" -le 8192 ]
        rm "$MNT/big"
        unmount_fs
    done
}

# count_ops OPCODE: how many requests of that opcode the daemon's debug log shows so far.
# How many requests of opcode $1 the daemon's debug log (-d) shows. libfuse prints a request
# while serving it, after the kernel may already have gone on, so the count is taken once the
# log has stopped growing (for 0.3 s; at most 5 s), never while earlier requests are still
# being printed.
count_ops() {
    local size last=-1 still=0 i
    for ((i = 0; i < 50 && still < 3; i++)); do
        size=$(stat -c %s "$LOG")
        if [ "$size" = "$last" ]; then still=$((still + 1)); else still=0; fi
        last=$size
        sleep 0.1
    done
    grep -c "opcode: $1 " "$LOG" || true
}

@test "what stays cached: pages across opens, listings, negative names; each refreshed after a change" {
    for MODE in default nokernel_cache; do
        : >"$LOG"
        mount_mode "$MODE" -d
        rm -rf "$MNT/d"
        mkdir "$MNT/d"
        printf 'cached\n' >"$MNT/d/f"
        cat "$MNT/d/f" >/dev/null
        ls "$MNT/d" >/dev/null
        run stat "$MNT/d/none"
        local reads lists lookups
        reads=$(count_ops READ)
        lists=$(($(count_ops READDIR) + $(count_ops READDIRPLUS) + $(count_ops OPENDIR)))
        lookups=$(count_ops LOOKUP)
        check "cat" "$(cat "$MNT/d/f")" cached
        check "ls" "$(ls "$MNT/d")" f
        run stat "$MNT/d/none"
        [ "$status" -ne 0 ]
        check "negative lookup asked again" "$(count_ops LOOKUP)" "$lookups"
        check "listing read again" "$(($(count_ops READDIR) + $(count_ops READDIRPLUS) + $(count_ops OPENDIR)))" "$lists"
        if [ "$MODE" = default ]; then
            check "pages read again" "$(count_ops READ)" "$reads"
        else
            [ "$(count_ops READ)" -gt "$reads" ] || check "nokernel_cache reads again" "$(count_ops READ)" "more"
        fi
        # after a change each is asked for again, and right
        printf 'changed!\n' >"$MNT/d/f"
        echo n >"$MNT/d/none"
        check "cat after a change" "$(cat "$MNT/d/f")" 'changed!'
        check "ls after a change" "$(ls "$MNT/d" | tr '\n' ' ')" "f none "
        check "created name" "$(cat "$MNT/d/none")" n
        unmount_fs
    done
}

@test "rename over, and unlink of, a file open for reading: the descriptor keeps its bytes, new opens see the new" {
    for MODE in "${MODES[@]}"; do
        mount_mode "$MODE"
        run python3 - "$MNT" "$MODE" <<'EOF'
import os, sys
d, mode = sys.argv[1] + "/" + sys.argv[2], sys.argv[2]
os.mkdir(d)
def put(name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
def drop():
    if os.getuid() == 0:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
put("target", b"old" * 3000)
put("src", b"new" * 2000)
fd = os.open(os.path.join(d, "target"), os.O_RDONLY)
assert os.pread(fd, 9000, 0) == b"old" * 3000           # cached by the kernel
os.rename(os.path.join(d, "src"), os.path.join(d, "target"))
drop()
assert os.pread(fd, 9000, 0) == b"old" * 3000, "the open descriptor lost its file"
assert os.fstat(fd).st_nlink == 0, "a file replaced by a rename still has a link"
assert open(os.path.join(d, "target"), "rb").read() == b"new" * 2000
assert os.stat(os.path.join(d, "target")).st_size == 6000
assert sorted(os.listdir(d)) == ["target"]
os.unlink(os.path.join(d, "target"))
drop()
assert os.fstat(fd).st_nlink == 0
assert os.pread(fd, 9000, 0) == b"old" * 3000
assert not os.path.exists(os.path.join(d, "target"))
assert os.listdir(d) == []
put("target", b"third")                                   # the name again, a new file
assert open(os.path.join(d, "target"), "rb").read() == b"third"
assert os.pread(fd, 9000, 0) == b"old" * 3000
os.close(fd)
print("ok")
EOF
        check "open reader across rename and unlink" "$status $output" "0 ok"
        unmount_fs
    done
}

@test "root's own mount: no GETATTR of the directory before each change, and root's checks still hold" {
    [ "$(id -u)" = 0 ] || skip "needs root"
    : >"$LOG"
    mount_mode default -d
    mkdir "$MNT/d"
    for i in 1 2 3 4 5; do echo x >"$MNT/d/f$i"; done
    local getattrs
    getattrs=$(count_ops GETATTR)
    python3 -c 'import os, sys
d = sys.argv[1]
for i in range(1, 6): os.unlink(d + "/f%d" % i)
for i in range(6, 11): os.close(os.open(d + "/f%d" % i, os.O_CREAT | os.O_WRONLY, 0o644))
for i in range(6, 11): os.rename(d + "/f%d" % i, d + "/g%d" % i)' "$MNT/d"
    check "GETATTRs for 15 changes in one directory" "$(count_ops GETATTR)" "$getattrs"
    # what ext4 refuses root is refused here too: executing, or access(X_OK) on, a file no
    # execute bit is set on; the rest root may do
    printf '#!/bin/sh\necho ran\n' >"$MNT/d/s"
    chmod 644 "$MNT/d/s"
    run "$MNT/d/s"
    [ "$status" -ne 0 ]
    [[ "$output" == *"Permission denied"* ]] || check "exec of a 0644 file" "$output" "Permission denied"
    check "access(X_OK) of a 0644 file" "$(python3 -c 'import os, sys; print(os.access(sys.argv[1], os.X_OK))' "$MNT/d/s")" False
    chmod 700 "$MNT/d/s"
    check "exec of a 0700 file" "$("$MNT/d/s")" ran
    chmod 0 "$MNT/d/s" "$MNT/d"
    check "root reads a mode-0 file in a mode-0 directory" "$(head -c 9 "$MNT/d/s")" '#!/bin/sh'
    check "access(W_OK) for root" "$(python3 -c 'import os, sys; print(os.access(sys.argv[1], os.W_OK))' "$MNT/d/s")" True
    chmod 755 "$MNT/d"
    grep " $MNT " /proc/mounts | grep -q default_permissions && check "default_permissions in /proc/mounts" yes no
    unmount_fs
    # with allow_other other users may come in, and the kernel checks again
    mount_mode default -o allow_other
    grep " $MNT " /proc/mounts | grep -q default_permissions ||
        check "default_permissions with allow_other" no yes
    mkdir -m 755 "$MNT/r"
    run setpriv --reuid=65534 --regid=65534 --clear-groups touch "$MNT/r/x"
    [ "$status" -ne 0 ]
    [ ! -e "$MNT/r/x" ]
    unmount_fs
}
