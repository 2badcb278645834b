#!/usr/bin/env bats
# t40 — real programs on the mount: tar, rsync, cp -p, and the editor's "write a temporary file,
# fsync, rename over the target" save, plus renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE).

load helper

setup() {
    common_setup
    mount_fs
}

teardown() {
    common_teardown
}

# Makes $T/src: a small real tree (this repository's sources, test scripts and man pages) with a
# few modes, mtimes, an empty directory and an empty file.
make_tree() {
    mkdir "$T/src"
    (cd "$REPO" && find engine fs man tests -type f \( -name '*.[ch15]' -o -name '*.bats' \
        -o -name '*.bash' -o -name '*.sh' \) -exec cp --parents {} "$T/src/" \;)
    cp "$REPO/Makefile" "$T/src/"
    mkdir -p "$T/src/empty/dir"
    : >"$T/src/empty-file"
    head -c 300000 /dev/urandom >"$T/src/random.bin"
    chmod 750 "$T/src/engine"
    chmod 600 "$T/src/random.bin"
    touch -d '2020-02-02 02:02:02 UTC' "$T/src/random.bin" "$T/src/empty"
}

@test "tar x of a real tree: contents, modes and mtimes match the source" {
    make_tree
    tar -C "$T/src" -cf "$T/src.tar" .
    mkdir "$MNT/x"
    tar -C "$MNT/x" -xf "$T/src.tar"
    diff -r "$T/src" "$MNT/x"
    (cd "$T/src" && find . -printf '%p %m %T@\n' | LC_ALL=C sort) >"$T/attr.src"
    (cd "$MNT/x" && find . -mindepth 1 -printf '%p %m %T@\n' | LC_ALL=C sort) >"$T/attr.mnt"
    sed -i '/^\. /d' "$T/attr.src"
    # mtimes at whole seconds: tar keeps nanoseconds only with --format=posix
    sed -i 's/\.[0-9]*$//' "$T/attr.src" "$T/attr.mnt"
    diff "$T/attr.src" "$T/attr.mnt"
    remount
    diff -r "$T/src" "$MNT/x"
    (cd "$MNT/x" && find . -mindepth 1 -printf '%p %m %T@\n' | LC_ALL=C sort) | sed 's/\.[0-9]*$//' >"$T/attr.mnt2"
    diff "$T/attr.src" "$T/attr.mnt2"
    # and tar c from the mount reproduces the tree
    tar -C "$MNT/x" -cf "$T/back.tar" .
    mkdir "$T/back"
    tar -C "$T/back" -xf "$T/back.tar"
    diff -r "$T/src" "$T/back"
}

@test "four tar x in parallel into separate directories, then diff -r each" {
    make_tree
    tar -C "$T/src" -cf "$T/src.tar" .
    pids=()
    for i in 1 2 3 4; do
        mkdir "$MNT/p$i"
        tar -C "$MNT/p$i" -xf "$T/src.tar" 3>&- &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    for i in 1 2 3 4; do diff -r "$T/src" "$MNT/p$i"; done
    remount
    for i in 1 2 3 4; do diff -r "$T/src" "$MNT/p$i"; done
}

@test "tar x of /usr/include/linux and more while the kernel's caches are dropped: stat identity holds" {
    require_root
    [ -d /usr/include/linux ] || skip "/usr/include/linux is missing"
    # a few thousand files. tar checks a directory's st_dev and st_ino again when it sets the
    # directory's times, and a placeholder's when it puts a symlink with an absolute target (or
    # one with "..") in its place at the end, by which time the kernel may have forgotten both
    mkdir "$T/src"
    for d in linux asm-generic c++ x86_64-linux-gnu; do
        [ -d "/usr/include/$d" ] && cp -a "/usr/include/$d" "$T/src/"
    done
    for i in 1 2 3 4 5; do
        ln -s /usr/include/linux/types.h "$T/src/linux/abs-link-$i"
        ln -s ../types.h "$T/src/linux/netfilter/up-link-$i"
    done
    tar -C "$T/src" -cf "$T/src.tar" .
    mkdir "$MNT/inc"
    tar -C "$MNT/inc" -xf "$T/src.tar" 2>"$T/tar.err" 3>&- &
    tarpid=$!
    for _ in $(seq 1 50); do
        pid_alive "$tarpid" || break
        echo 2 >/proc/sys/vm/drop_caches
        sleep 0.02
    done
    rc=0
    wait "$tarpid" || rc=$?
    head -n 5 "$T/tar.err" >&2
    assert_eq "$rc" 0
    [ ! -s "$T/tar.err" ]
    # a placeholder left in place of a symlink shows as an empty regular file
    diff -r --no-dereference "$T/src" "$MNT/inc" | head -n 20 >&2
    diff -r -q --no-dereference "$T/src" "$MNT/inc"
}

@test "rsync -a copies a tree; a second rsync -a transfers nothing" {
    make_tree
    rsync -a "$T/src/" "$MNT/r/"
    diff -r "$T/src" "$MNT/r"
    run rsync -a --itemize-changes "$T/src/" "$MNT/r/"
    [ "$status" -eq 0 ]
    assert_eq "$output" ""
    run rsync -a --stats "$T/src/" "$MNT/r/"
    [[ $output == *"Number of regular files transferred: 0"* ]]
    remount
    run rsync -a --itemize-changes "$T/src/" "$MNT/r/"
    [ "$status" -eq 0 ]
    assert_eq "$output" ""
    # a change on the source is the only thing transferred
    echo changed >>"$T/src/empty-file"
    touch -d '2021-03-04 05:06:07 UTC' "$T/src/empty-file"   # a different second, whatever the clock
    run rsync -a --itemize-changes "$T/src/" "$MNT/r/"
    assert_eq "$output" ">f.st...... empty-file"
    diff -r "$T/src" "$MNT/r"
}

@test "cp -p keeps mode and mtime (and owner as root)" {
    echo data >"$T/f"
    chmod 640 "$T/f"
    touch -d '2011-11-11 11:11:11.123456789 UTC' "$T/f"
    cp -p "$T/f" "$MNT/f"
    assert_eq "$(stat -c '%a %Y %s' "$MNT/f")" "$(stat -c '%a %Y %s' "$T/f")"
    mkdir "$T/d"
    chmod 710 "$T/d"
    echo in >"$T/d/in"
    touch -d '2012-12-12 12:12:12 UTC' "$T/d/in" "$T/d"
    if [ "$(id -u)" = 0 ]; then chown -R 321:654 "$T/d"; fi
    cp -a "$T/d" "$MNT/d"
    assert_eq "$(stat -c '%a %Y %u %g' "$MNT/d" "$MNT/d/in")" "$(stat -c '%a %Y %u %g' "$T/d" "$T/d/in")"
    remount
    assert_eq "$(stat -c '%a %Y %s' "$MNT/f")" "$(stat -c '%a %Y %s' "$T/f")"
    assert_eq "$(stat -c '%a %Y %u %g' "$MNT/d" "$MNT/d/in")" "$(stat -c '%a %Y %u %g' "$T/d" "$T/d/in")"
}

@test "editor-style save: write temp, fsync, rename over the target" {
    printf 'version 1\n' >"$MNT/config"
    python3 - "$MNT" <<'EOF'
import os, sys
m = sys.argv[1]
target = os.path.join(m, "config")
for v in range(2, 30):
    tmp = os.path.join(m, ".config.swp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"version %d\n" % v + b"x" * (v * 100))
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, target)
    dfd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
    with open(target, "rb") as f:
        data = f.read()
    assert data.startswith(b"version %d\n" % v) and len(data) == len("version %d\n" % v) + v * 100
    assert not os.path.exists(tmp)
assert sorted(os.listdir(m)) == ["config"], os.listdir(m)
EOF
    remount
    assert_eq "$(head -n1 "$MNT/config")" "version 29"
    assert_eq "$(ls -A "$MNT")" config
}

@test "renameat2: RENAME_NOREPLACE refuses an existing target, RENAME_EXCHANGE swaps" {
    python3 - "$MNT" <<'EOF'
import ctypes, errno, os, sys
m = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, NOREPLACE, EXCHANGE = -100, 1, 2
def renameat2(a, b, flags):
    r = libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), flags)
    return 0 if r == 0 else ctypes.get_errno()
def put(p, s):
    with open(p, "w") as f:
        f.write(s)
def get(p):
    with open(p) as f:
        return f.read()
a, b, c = m + "/a", m + "/b", m + "/c"
put(a, "AAA"); put(b, "BBBBBB")
assert renameat2(a, b, NOREPLACE) == errno.EEXIST
assert get(a) == "AAA" and get(b) == "BBBBBB"
assert renameat2(a, c, NOREPLACE) == 0
assert not os.path.exists(a) and get(c) == "AAA"
assert renameat2(c, b, EXCHANGE) == 0
assert get(c) == "BBBBBB" and get(b) == "AAA"
assert os.stat(c).st_size == 6 and os.stat(b).st_size == 3
assert renameat2(c, m + "/missing", EXCHANGE) == errno.ENOENT
assert get(c) == "BBBBBB"
assert sorted(os.listdir(m)) == ["b", "c"], os.listdir(m)
EOF
    remount
    assert_eq "$(cat "$MNT/c")" BBBBBB
    assert_eq "$(cat "$MNT/b")" AAA
}

@test "renameat2 on directories: NOREPLACE move of a tree, EXCHANGE of a file and a directory" {
    python3 - "$MNT" <<'EOF'
import ctypes, errno, os, sys
m = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, NOREPLACE, EXCHANGE = -100, 1, 2
def renameat2(a, b, flags):
    r = libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), flags)
    return 0 if r == 0 else ctypes.get_errno()
def put(p, s):
    with open(p, "w") as f:
        f.write(s)
def get(p):
    with open(p) as f:
        return f.read()
os.makedirs(m + "/d/sub"); put(m + "/d/in", "inside"); put(m + "/d/sub/deep", "deep")
os.mkdir(m + "/e")
put(m + "/file", "plain")
assert renameat2(m + "/d", m + "/e", NOREPLACE) == errno.EEXIST
assert renameat2(m + "/d", m + "/e/f", NOREPLACE) == 0
assert get(m + "/e/f/in") == "inside" and get(m + "/e/f/sub/deep") == "deep"
assert not os.path.exists(m + "/d")
assert renameat2(m + "/file", m + "/e/f", EXCHANGE) == 0
assert get(m + "/e/f") == "plain"
assert get(m + "/file/in") == "inside" and get(m + "/file/sub/deep") == "deep"
assert sorted(os.listdir(m)) == ["e", "file"], os.listdir(m)
assert os.listdir(m + "/e") == ["f"]
EOF
    remount
    assert_eq "$(cat "$MNT/e/f")" plain
    assert_eq "$(cat "$MNT/file/sub/deep")" deep
    assert_eq "$(ls "$MNT/file")" "in
sub"
}

@test "git init, add, commit, fsck and clone inside the mount" {
    make_tree
    cp -r "$T/src" "$MNT/repo"
    g() { git -C "$MNT/repo" -c user.email=t@example.org -c user.name=t "$@"; }
    g init -q
    g add -A
    g commit -qm "import"
    g fsck --strict
    g gc -q
    g fsck --strict
    git clone -q "$MNT/repo" "$MNT/clone"
    diff -r -x .git -x empty "$T/src" "$MNT/clone"   # git keeps no empty directories
}

# sqlite_exercise MNT MODE...: builds a database per journal mode, 20 transactions of 200 rows.
sqlite_exercise() {
    python3 - "$@" <<'EOF'
import sqlite3, sys
m = sys.argv[1]
for mode in sys.argv[2:]:
    c = sqlite3.connect("%s/db-%s.sqlite" % (m, mode))
    assert c.execute("pragma journal_mode=%s" % mode).fetchone()[0] == mode
    c.execute("create table t(k integer primary key, v text)")
    for i in range(20):
        with c:
            c.executemany("insert into t(v) values (?)", [("x" * (i % 50) + str(j),) for j in range(200)])
        if i % 5 == 4:
            with c:
                c.execute("delete from t where k % 7 = ?", (i % 7,))
    c.close()
EOF
}

# sqlite_check MNT MODE...: every database passes integrity_check and holds the expected rows.
sqlite_check() {
    python3 - "$@" <<'EOF'
import sqlite3, sys
m = sys.argv[1]
for mode in sys.argv[2:]:
    c = sqlite3.connect("%s/db-%s.sqlite" % (m, mode))
    assert c.execute("pragma integrity_check").fetchone()[0] == "ok", mode
    keys = {k for (k,) in c.execute("select k from t")}
    want = set(range(1, 4001))
    for i in range(4, 20, 5):
        want -= {k for k in range(1, (i + 1) * 200 + 1) if k % 7 == i % 7}
    assert keys == want, (mode, len(keys), len(want))
    c.close()
EOF
}

@test "sqlite3 with a rollback journal (delete, truncate, persist): intact after a remount" {
    sqlite_exercise "$MNT" delete truncate persist
    sqlite_check "$MNT" delete truncate persist
    remount
    sqlite_check "$MNT" delete truncate persist
}

@test "sqlite3 in WAL mode on the default mount (shared mmap): intact after a remount" {
    sqlite_exercise "$MNT" wal
    sqlite_check "$MNT" wal
    remount
    sqlite_check "$MNT" wal
}

@test "sqlite3 in WAL mode with -o kernel_cache: intact after a remount" {
    remount -o kernel_cache
    sqlite_exercise "$MNT" wal
    sqlite_check "$MNT" wal
    remount -o kernel_cache
    sqlite_check "$MNT" wal
}

@test "git clone --no-local into the mount (through index-pack): fsck and contents" {
    make_tree
    g() { git -C "$T/repo" -c user.email=t@example.org -c user.name=t "$@"; }
    cp -r "$T/src" "$T/repo"
    # past transfer.unpackLimit (100 objects), so the clone runs index-pack, and a pack of MiBs
    mkdir "$T/repo/many"
    for i in $(seq 1 150); do echo "file $i" >"$T/repo/many/f$i"; done
    for i in 1 2 3 4; do head -c 3M /dev/urandom >"$T/repo/blob$i"; done
    g init -q
    g add -A
    g commit -qm "import"
    git clone -q --no-local "$T/repo" "$MNT/clone"
    git -C "$MNT/clone" fsck --strict
    diff -r -x .git -x empty "$T/repo" "$MNT/clone"
}

@test "two processes appending with O_APPEND to one log: every line intact, none lost" {
    python3 - "$MNT/log" <<'EOF'
import os, subprocess, sys
code = """
import os, sys
for i in range(400):
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (sys.argv[2] * 30 + "%05d\\n" % i).encode())
    if i % 2:
        os.close(fd)
    else:
        os.write(fd, (sys.argv[2] * 30 + "%05d\\n" % (i + 50000)).encode()); os.close(fd)
"""
ps = [subprocess.Popen([sys.executable, "-c", code, sys.argv[1], tag]) for tag in "AB"]
assert all(p.wait() == 0 for p in ps)
lines = open(sys.argv[1]).read().split("\n")
assert lines[-1] == "", "no trailing newline"
lines = lines[:-1]
bad = [l for l in lines if len(l) != 35 or l[:30] not in ("A" * 30, "B" * 30)]
assert not bad, bad[:3]
assert len(lines) == 1200, len(lines)
EOF
}

@test "8 threads of creates, writes, renames and unlinks in one directory: exact final state" {
    python3 - "$MNT" <<'EOF'
import os, sys, threading
m = sys.argv[1]
os.mkdir(m + "/shared")
errors = []
def worker(t):
    try:
        for i in range(150):
            a = "%s/shared/t%d-%03d" % (m, t, i)
            with open(a, "w") as f:
                f.write("%d:%d" % (t, i))
            if i % 3 == 0:
                os.rename(a, a + ".r")
            elif i % 3 == 1:
                os.unlink(a)
            os.stat(m + "/shared")
            os.listdir(m + "/shared") if i % 25 == 0 else None
    except Exception as e:
        errors.append("thread %d: %r" % (t, e))
ths = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
for th in ths: th.start()
for th in ths: th.join()
assert not errors, errors
want = set()
for t in range(8):
    for i in range(150):
        if i % 3 == 0: want.add("t%d-%03d.r" % (t, i))
        elif i % 3 == 2: want.add("t%d-%03d" % (t, i))
got = os.listdir(m + "/shared")
assert len(got) == len(set(got)) and set(got) == want, (len(got), len(want))
for n in got:
    t, i = n.split(".")[0][1:].split("-")
    assert open(m + "/shared/" + n).read() == "%d:%d" % (int(t), int(i)), n
EOF
    remount
    assert_eq "$(ls "$MNT/shared" | wc -l)" $(( 8 * 100 ))
}

@test "rename is atomic for readers: a concurrent reader sees old or new, never missing or mixed" {
    python3 - "$MNT" <<'EOF'
import os, sys, threading
m = sys.argv[1]
target = m + "/t"
with open(target, "wb") as f:
    f.write(b"A" * 20000)
stop, errors = False, []
def reader():
    while not stop:
        try:
            with open(target, "rb") as f:
                d = f.read()
        except FileNotFoundError:
            errors.append("target missing during rename"); return
        if len(d) != 20000 or d.count(d[:1]) != 20000:
            errors.append("mixed content %r..." % d[:40]); return
th = threading.Thread(target=reader); th.start()
for i in range(300):
    ch = b"ABCDEFGH"[i % 8:i % 8 + 1]
    with open(m + "/tmp", "wb") as f:
        f.write(ch * 20000)
    os.rename(m + "/tmp", target)
stop = True; th.join()
assert not errors, errors[0]
EOF
}
