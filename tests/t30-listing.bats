#!/usr/bin/env bats
# t30 — listing: a directory is a merged scan over the live memtable and every table on disk, with
# the newest version of each key winning and deleted keys hidden; names come out sorted, each once,
# however many readdir calls the kernel needs.  Databases are built offline with tools/lsmctl
# (through the public API) so the tables, overwrites and deletes are exactly the ones intended.

load helper

setup() {
    common_setup
}

teardown() {
    common_teardown
}

# Writes $T/load (lsmctl script commands: four generations of puts, overwrites and deletes, a flush
# after the first three, so three tables on disk and the last generation only in the log) and the
# expected results: $T/root (names in the mount root), $T/dir, $T/dir_sub (names in dir, dir/sub),
# $T/values (key<TAB>value for every live key).
make_history() {
    python3 - "$T" <<'EOF'
import random, sys
t = sys.argv[1]
rnd = random.Random(1234)
live, cmds = {}, []
def put(k, v):
    live[k] = v; cmds.append("put %s %s" % (k, v))
def delete(k):
    live.pop(k, None); cmds.append("del %s" % k)
# generation 1: base keys, a directory tree, names that sort around "dir/"
for i in range(600):
    put("k%04d" % i, "g1-%d" % i)
for i in range(150):
    put("dir/f%03d" % i, "d1-%d" % i)
for i in range(40):
    put("dir/sub/s%02d" % i, "s1-%d" % i)
for k in ("dir-x", "dir0", "dir.z", "dis"):
    put(k, "edge-" + k)
put("gone/only", "deleted later")
cmds.append("flush")
# generation 2: overwrite every 3rd, delete every 7th, new n-keys
for i in range(0, 600, 3):
    put("k%04d" % i, "g2-%d" % i)
for i in range(0, 600, 7):
    delete("k%04d" % i)
for i in range(200):
    put("n%04d" % i, "n2-%d" % i)
for i in range(0, 150, 5):
    delete("dir/f%03d" % i)
cmds.append("flush")
# generation 3: re-put some deleted keys, overwrite again, delete some n-keys
for i in range(0, 600, 14):
    put("k%04d" % i, "g3-%d" % i)
for i in range(1, 600, 10):
    put("k%04d" % i, "g3-%d" % i)
for i in range(0, 200, 4):
    delete("n%04d" % i)
delete("gone/only")
cmds.append("flush")
# generation 4 (log only -> memtable after open): more of everything, random order
ops = []
for i in range(0, 600, 11):
    ops.append(("put", "k%04d" % i, "g4-%d" % i))
for i in range(2, 600, 13):
    ops.append(("del", "k%04d" % i, None))
for i in range(100):
    ops.append(("put", "m%03d" % i, "m4-%d" % i))
for i in range(0, 200, 9):
    ops.append(("put", "n%04d" % i, "n4-%d" % i))
ops.append(("del", "dir/sub/s07", None))
ops.append(("del", "dis", None))
rnd.shuffle(ops)
for op, k, v in ops:
    put(k, v) if op == "put" else delete(k)
open(t + "/load", "w").write("\n".join(cmds) + "\n")
def names(prefix):
    out = set()
    for k in live:
        if k.startswith(prefix):
            out.add(k[len(prefix):].split("/")[0])
    return sorted(out, key=lambda s: s.encode())
for fname, prefix in (("root", ""), ("dir", "dir/"), ("dir_sub", "dir/sub/")):
    open(t + "/" + fname, "w").write("".join(n + "\n" for n in names(prefix)))
open(t + "/values", "w").write("".join("%s\t%s\n" % kv for kv in sorted(live.items())))
EOF
}

# Checks the mount against the expected files of make_history.
check_history() {
    LC_ALL=C ls -U "$MNT" | LC_ALL=C sort >"$T/got_root"
    diff "$T/root" "$T/got_root"
    LC_ALL=C ls "$MNT" >"$T/got_root_sorted"
    diff "$T/root" "$T/got_root_sorted"
    LC_ALL=C ls -U "$MNT/dir" >"$T/got_dir"
    diff "$T/dir" "$T/got_dir"                 # no name here is a prefix issue: raw order is sorted
    LC_ALL=C ls -U "$MNT/dir/sub" >"$T/got_sub"
    diff "$T/dir_sub" "$T/got_sub"
    [ ! -e "$MNT/gone" ]
    [ -d "$MNT/dir/sub" ]
    python3 - "$T/values" "$MNT" <<'EOF'
import sys
bad = []
for line in open(sys.argv[1]):
    k, v = line.rstrip("\n").split("\t")
    try:
        got = open(sys.argv[2] + "/" + k).read()
    except OSError as e:
        got = repr(e)
    if got != v:
        bad.append("%s: want %r got %r" % (k, v, got))
if bad:
    sys.exit("%d wrong values, e.g.\n%s" % (len(bad), "\n".join(bad[:10])))
EOF
}

# Changes the mount (deletes, overwrites, new keys in the root and in dir/) and rewrites the
# expected files to match, so that the next check also covers the daemon's own live memtable.
mutate_through_mount() {
    python3 - "$T" "$MNT" <<'EOF'
import os, sys
t, m = sys.argv[1], sys.argv[2]
live = dict(l.rstrip("\n").split("\t") for l in open(t + "/values"))
for k in sorted(live)[::5]:
    if not k.startswith("dir/sub/"):
        os.unlink(os.path.join(m, k)); del live[k]
for k in sorted(live)[1::7]:
    live[k] = "mnt-" + k
    with open(os.path.join(m, k), "w") as f: f.write(live[k])
for i in range(50):
    for k in ("new%03d" % i, "dir/new%03d" % i, "k%04da" % (i * 3)):
        live[k] = "mnt-new-" + k
        with open(os.path.join(m, k), "w") as f: f.write(live[k])
def names(prefix):
    return sorted({k[len(prefix):].split("/")[0] for k in live if k.startswith(prefix)},
                  key=lambda s: s.encode())
for fname, prefix in (("root", ""), ("dir", "dir/"), ("dir_sub", "dir/sub/")):
    open(t + "/" + fname, "w").write("".join(n + "\n" for n in names(prefix)))
open(t + "/values", "w").write("".join("%s\t%s\n" % kv for kv in sorted(live.items())))
EOF
}

@test "merged listing of keys from the API: 3 tables + live memtable, overwrites, deletes" {
    require_lsmctl
    make_history
    "$LSMCTL" -d "$DATA" script <"$T/load"
    "$LSMCTL" -d "$DATA" stats >"$T/stats"
    [ "$(awk '$1 == "tables" { print $2 }' "$T/stats")" -ge 3 ]
    [ "$(wc -l <"$T/root")" -gt 700 ]
    mount_fs -o memtable_size=64K
    check_history
    mutate_through_mount
    check_history
    remount -o memtable_size=64K
    check_history
}

@test "offline tool and mount agree byte for byte: files are values, keys are paths" {
    require_lsmctl
    head -c 100000 /dev/urandom >"$T/blob"
    printf 'api value' | "$LSMCTL" -d "$DATA" put 'user:123'
    "$LSMCTL" -d "$DATA" put 'logs/2026/app' <"$T/blob"
    mount_fs
    assert_eq "$(cat "$MNT/user:123")" "api value"
    [ -d "$MNT/logs" ] && [ -d "$MNT/logs/2026" ]
    cmp "$T/blob" "$MNT/logs/2026/app"
    assert_eq "$(ls "$MNT/logs/2026")" app
    printf 'from the mount' >"$MNT/written"
    mkdir -p "$MNT/a/b"
    cp "$T/blob" "$MNT/a/b/c"
    rm "$MNT/user:123"
    unmount_fs
    assert_eq "$("$LSMCTL" -d "$DATA" get written)" "from the mount"
    "$LSMCTL" -d "$DATA" get a/b/c >"$T/back"
    cmp "$T/blob" "$T/back"
    run "$LSMCTL" -d "$DATA" get 'user:123'
    [ "$status" -eq 1 ]
}

@test "API keys that cannot be paths are hidden (man lsmfs: Names); a file shadows keys below it" {
    require_lsmctl
    long=$(printf 'L%.0s' $(seq 1 256))
    for k in good d/ok file file/below /lead e//f trail/ . .. x/./y x/../y "$long" "d/$long"; do
        printf 'value of %s' "$k" | "$LSMCTL" -d "$DATA" put "$k"
    done
    mount_fs
    assert_eq "$(ls -A "$MNT" | tr '\n' ' ')" "d e file good trail x "
    assert_eq "$(ls -A "$MNT/d")" ok
    assert_eq "$(cat "$MNT/d/ok")" "value of d/ok"
    [ -f "$MNT/file" ]
    assert_eq "$(cat "$MNT/file")" "value of file"
    run cat "$MNT/file/below"
    [ "$status" -ne 0 ]
    for d in e trail x; do
        [ -d "$MNT/$d" ]
        assert_eq "$(ls -A "$MNT/$d")" ""
        run rmdir "$MNT/$d"
        [ "$status" -ne 0 ]
        [[ $output == *"Directory not empty"* ]]
    done
    unmount_fs
    for k in file/below /lead e//f x/./y x/../y "$long"; do
        assert_eq "$("$LSMCTL" -d "$DATA" get "$k")" "value of $k"
    done
}

@test "a few thousand files in one directory (several tables) list completely, each once" {
    mount_fs -o memtable_size=64K
    python3 - "$MNT/big" <<'EOF'
import os, sys
d = sys.argv[1]
os.mkdir(d)
for i in range(3000):
    with open("%s/file-%05d-%s" % (d, (i * 7919) % 3000, "x" * (i % 40)), "w") as f:
        f.write("%d\n" % i * 20)
EOF
    ls "$MNT/big" >"$T/l1"
    assert_eq "$(wc -l <"$T/l1")" 3000
    assert_eq "$(sort -u "$T/l1" | wc -l)" 3000
    ls -U "$MNT/big" | LC_ALL=C sort -c
    # delete every third through the mount, then check again after a remount
    ls "$MNT/big" | awk 'NR % 3 == 0' | (cd "$MNT/big" && xargs rm)
    assert_eq "$(ls "$MNT/big" | wc -l)" 2000
    remount -o memtable_size=64K
    assert_eq "$(ls "$MNT/big" | wc -l)" 2000
    assert_eq "$(ls -U "$MNT/big" | sort -u | wc -l)" 2000
    ls "$MNT/big" | awk 'NR % 3 == 0' | (cd "$MNT/big" && xargs cat) | wc -l >"$T/lines"
    [ "$(cat "$T/lines")" -gt 0 ]
}

@test "200000 keys from the API in one directory: listed completely, sorted, in one pass" {
    require_lsmctl
    python3 -c '
for i in range(200000):
    print("put big/k%07d v%d" % ((i * 7919) % 200000, i))
    if i == 100000:
        print("flush")
print("flush")
for i in range(0, 200000, 1000):
    print("del big/k%07d" % i)' | "$LSMCTL" -d "$DATA" script
    mount_fs
    start=$(date +%s)
    ls -U "$MNT/big" >"$T/list"
    elapsed=$(( $(date +%s) - start ))
    assert_eq "$(wc -l <"$T/list")" 199800
    LC_ALL=C sort -c -u "$T/list"
    [ "$elapsed" -lt 20 ] || { echo "listing 200000 names took ${elapsed}s: not one pass?" >&2; false; }
    [ ! -e "$MNT/big/k0001000" ]
    assert_eq "$(cat "$MNT/big/k0001001")" "v$(python3 -c 'print([i for i in range(200000) if (i * 7919) % 200000 == 1001][0])')"
}

@test "find walks a nested tree completely; du and ls -lR see every file" {
    mount_fs -o memtable_size=64K
    python3 - "$MNT/tree" "$T/expect" <<'EOF'
import os, sys
root, paths = sys.argv[1], []
for a in range(6):
    for b in range(5):
        d = "%s/a%d/b%d" % (root, a, b)
        os.makedirs(d)
        for c in range(40):
            p = "%s/f%02d" % (d, c)
            open(p, "w").write(p)
            paths.append(p)
os.makedirs(root + "/empty/deeper")
open(sys.argv[2], "w").write("".join(p + "\n" for p in sorted(paths)))
EOF
    find "$MNT/tree" -type f | LC_ALL=C sort >"$T/found"
    diff "$T/expect" "$T/found"
    assert_eq "$(find "$MNT/tree" -type d | wc -l)" $((1 + 6 + 30 + 2))
    assert_eq "$(ls -lR "$MNT/tree" | grep -c '^-')" 1200
    remount
    find "$MNT/tree" -type f | LC_ALL=C sort >"$T/found2"
    diff "$T/expect" "$T/found2"
    [ -d "$MNT/tree/empty/deeper" ]
}

@test "names that sort around '/' (p-x, p.x, p/, p0), explicit and implicit dirs: each once" {
    mount_fs -o memtable_size=64K
    python3 - "$MNT" <<'EOF'
import os, sys
m = sys.argv[1]
want_root = set()
def f(p):
    open(os.path.join(m, p), "w").write(p)
os.mkdir(m + "/p")                       # explicit directory with children
for i in range(400):
    f("p/in%03d" % i)
os.makedirs(m + "/q/deep")               # implicit parent? no: mkdir -p makes both explicit
f("q/deep/z")
for i in range(300):
    for pre in ("p-", "p.", "p0", "o", "pa"):
        f("%s%03d" % (pre, i)); want_root.add("%s%03d" % (pre, i))
for d in ("p+", "p-dir", "p0dir", "empty"):
    os.mkdir(os.path.join(m, d)); want_root.add(d)
want_root |= {"p", "q"}
def check():
    got = os.listdir(m)
    assert len(got) == len(set(got)), "duplicates: %s" % sorted(n for n in set(got) if got.count(n) > 1)[:5]
    assert set(got) == want_root, (sorted(want_root - set(got))[:5], sorted(set(got) - want_root)[:5])
    inner = os.listdir(m + "/p")
    assert sorted(inner) == ["in%03d" % i for i in range(400)], len(inner)
    assert os.listdir(m + "/q") == ["deep"] and os.listdir(m + "/empty") == []
check()
# empty the explicit dir p: it must stay (mkdir made it), and listed once
for i in range(400):
    os.unlink(m + "/p/in%03d" % i)
assert os.listdir(m + "/p") == []
got = os.listdir(m)
assert got.count("p") == 1 and len(got) == len(want_root)
EOF
    remount -o memtable_size=64K
    [ -d "$MNT/p" ]
    assert_eq "$(ls "$MNT" | wc -l)" 1506
    assert_eq "$(ls "$MNT" | sort -u | wc -l)" 1506
    rmdir "$MNT/p"
    [ ! -e "$MNT/p" ]
}

@test "a path longer than PATH_MAX (4096) through relative opens: created, listed, read back" {
    mount_fs
    python3 - "$MNT" <<'EOF'
import os, sys
m = sys.argv[1]
fd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
comp = "c" * 200
for depth in range(30):                  # 30 x 201 bytes: a 6 KB path
    os.mkdir(comp, dir_fd=fd)
    nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd); fd = nfd
w = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
os.write(w, b"deep value")
os.close(w)
os.close(fd)
EOF
    remount
    python3 - "$MNT" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
comp = "c" * 200
for depth in range(30):
    assert os.listdir(fd) == [comp], os.listdir(fd)
    nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd); fd = nfd
assert os.listdir(fd) == ["leaf"]
r = os.open("leaf", os.O_RDONLY, dir_fd=fd)
assert os.read(r, 100) == b"deep value"
EOF
}

@test "listing while the directory changes: untouched names appear exactly once" {
    mount_fs -o memtable_size=64K
    python3 - "$MNT/d" <<'EOF'
import os, sys
d = sys.argv[1]
os.mkdir(d)
keep = set()
for i in range(2000):
    name = "keep-%04d-%s" % (i, "p" * 60)
    open(os.path.join(d, name), "w").write("k")
    keep.add(name)
for i in range(0, 2000, 2):
    open(os.path.join(d, "tmp-%04d" % i), "w").write("t")
seen, n = [], 0
with os.scandir(d) as it:
    for e in it:
        seen.append(e.name)
        n += 1
        if n % 50 == 0:   # churn: delete some temporaries, create new names on both sides
            for j in range(n // 50 * 20, n // 50 * 20 + 20, 2):
                try:
                    os.unlink(os.path.join(d, "tmp-%04d" % j))
                except FileNotFoundError:
                    pass
            for j in range(5):
                open(os.path.join(d, "a-new-%d-%d" % (n, j)), "w").close()
                open(os.path.join(d, "z-new-%d-%d" % (n, j)), "w").close()
got = [s for s in seen if s.startswith("keep-")]
dups = len(got) - len(set(got))
missing = keep - set(got)
assert dups == 0, "%d names listed twice" % dups
assert not missing, "%d untouched names missing, e.g. %s" % (len(missing), sorted(missing)[:3])
EOF
}

# raw_put KEY VALUE...: puts each pair through the library (liblsm.so via ctypes) while nothing is
# mounted. Keys and values are Python bytes literals, so reserved keys ("\0a...") can be written.
raw_put() {
    # Under make check the library is built with AddressSanitizer, whose runtime must be loaded
    # before anything else in the process that loads it (python here).
    local asan
    asan=$(ldd "$REPO/engine/liblsm.so" | awk '/libasan/ { print $3 }')
    LD_PRELOAD=$asan ASAN_OPTIONS=${asan:+detect_leaks=0} \
    python3 - "$REPO/engine/liblsm.so" "$DATA" "$@" <<'EOF2'
import ast, ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
db = ctypes.c_void_p()
lib.lsm_open.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
lib.lsm_put.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                        ctypes.c_size_t]
lib.lsm_close.argtypes = [ctypes.c_void_p]
assert lib.lsm_open(sys.argv[2].encode(), None, ctypes.byref(db)) == 0
args = [ast.literal_eval(a) for a in sys.argv[3:]]
for k, v in zip(args[::2], args[1::2]):
    assert lib.lsm_put(db, k, len(k), v, len(v)) == 0
assert lib.lsm_close(db) == 0
EOF2
}

# An attribute record as lsmfs wrote it before it kept inode numbers: 32 bytes, version 1.
old_record() { # TYPE MODE -> a Python bytes literal
    python3 -c 'import struct, sys
print(repr(struct.pack("<BBHIIIqq", 1, int(sys.argv[1]), 0, int(sys.argv[2], 8), 0, 0,
                       1500000000 * 10**9, 1500000000 * 10**9)))' "$1" "$2"
}

# Checks that the inode of each name in directory $1 that readdir returns (d_ino) is its st_ino.
check_d_ino() {
    python3 - "$1" <<'EOF2'
import os, sys
d, bad = sys.argv[1], []
with os.scandir(d) as it:
    entries = list(it)   # the whole listing first: a lookup meanwhile would make it READDIRPLUS
for e in entries:
    st = os.stat(os.path.join(d, e.name), follow_symlinks=False)
    if e.inode() != st.st_ino:
        bad.append("%s: d_ino %d, st_ino %d" % (e.name, e.inode(), st.st_ino))
n = len(entries)
assert n > 0, "empty listing of " + d
assert not bad, "%d of %d differ in %s, e.g. %s" % (len(bad), n, d, bad[:3])
EOF2
}

@test "readdir's d_ino is st_ino: files, directories, symlinks, API keys, implicit directories" {
    require_root
    require_lsmctl
    for i in $(seq 1 40); do
        echo v | "$LSMCTL" -d "$DATA" put "big/api-$i"
        echo v | "$LSMCTL" -d "$DATA" put "big/implicit-$i/x"
    done
    echo v | "$LSMCTL" -d "$DATA" put rootapi
    mount_fs
    for i in $(seq 1 80); do echo "$i" >"$MNT/big/f-$i"; done
    for i in $(seq 1 40); do mkdir "$MNT/big/d-$i"; ln -s "f-$i" "$MNT/big/l-$i"; done
    # the first listing after a mount or a cache drop is READDIRPLUS only for its first reply; a
    # directory of 240 entries takes several, the rest being plain READDIR
    for d in "$MNT" "$MNT/big"; do check_d_ino "$d"; done
    echo 2 >/proc/sys/vm/drop_caches
    for d in "$MNT/big" "$MNT"; do check_d_ino "$d"; done
    remount
    for d in "$MNT/big" "$MNT"; do check_d_ino "$d"; done
}

@test "API keys without a record and records of older lsmfs get a stable st_ino, kept by rename and chmod" {
    require_root
    file=$(old_record 1 640)
    dir=$(old_record 2 750)
    raw_put "b'old'" "b'old value'" "b'\\x00aold'" "$file" \
            "b'\\x00dolddir/'" "$dir" "b'olddir/f'" "b'f'" "b'\\x00aolddir/f'" "$file" \
            "b'api'" "b'api value'" "b'impl/x'" "b'x'" "b'impl/sub/y'" "b'y'"
    mount_fs
    assert_eq "$(stat -c '%a %Y' "$MNT/old" "$MNT/olddir")" "640 1500000000
750 1500000000"
    names="old olddir olddir/f api impl impl/x impl/sub impl/sub/y"
    # shellcheck disable=SC2086 # a list of names
    before=$(cd "$MNT" && stat -c '%n %i' $names)
    echo 2 >/proc/sys/vm/drop_caches
    # shellcheck disable=SC2086
    assert_eq "$(cd "$MNT" && stat -c '%n %i' $names)" "$before"
    remount
    # shellcheck disable=SC2086
    assert_eq "$(cd "$MNT" && stat -c '%n %i' $names)" "$before"
    assert_eq "$(echo "$before" | awk '{ print $2 }' | sort | uniq -d)" ""
    mv "$MNT/old" "$MNT/old2"
    mv "$MNT/olddir" "$MNT/olddir2"
    chmod 600 "$MNT/api"
    mv "$MNT/impl" "$MNT/impl2"
    echo 2 >/proc/sys/vm/drop_caches
    moved=$(echo "$before" | sed 's/^old /old2 /; s/^olddir/olddir2/; s/^impl/impl2/')
    names2="old2 olddir2 olddir2/f api impl2 impl2/x impl2/sub impl2/sub/y"
    # shellcheck disable=SC2086
    assert_eq "$(cd "$MNT" && stat -c '%n %i' $names2)" "$moved"
    remount
    # shellcheck disable=SC2086
    assert_eq "$(cd "$MNT" && stat -c '%n %i' $names2)" "$moved"
    assert_eq "$(stat -c %a "$MNT/api")" 600
    # a new file takes a number no live file has
    echo n >"$MNT/new"
    # shellcheck disable=SC2086
    assert_eq "$(cd "$MNT" && stat -c '%i' new $names2 | sort | uniq -d)" ""
    check_d_ino "$MNT"
    check_d_ino "$MNT/impl2"
}

# Writes $T/gd.py, a module for the tests below: getdents(fd, size) reads one kernel buffer of
# size bytes (the getdents64 system call, so a test decides exactly where the kernel's position
# stops), entries(fd, size) the same as (name, d_off) pairs, read_all(fd, size) reads to the end, drop() drops the kernel's caches (page cache, which
# holds FUSE's cached listings, dentries and inodes), each_once(names, want) checks a listing.
write_getdents_py() {
    cat >"$T/gd.py" <<'EOF'
import collections, ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
SYS_getdents64 = {"x86_64": 217, "aarch64": 61, "riscv64": 61, "i686": 220}[os.uname().machine]
def entries(fd, size):
    buf = ctypes.create_string_buffer(size)
    n = libc.syscall(SYS_getdents64, fd, buf, size)
    if n < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    raw, p, out = buf.raw[:n], 0, []
    while p < n:
        ino, off, reclen, typ = struct.unpack_from("<QqHB", raw, p)
        out.append((raw[p + 19:p + reclen].split(b"\0", 1)[0].decode(), off))
        p += reclen
    return out
def getdents(fd, size):
    return [name for name, off in entries(fd, size)]
def read_all(fd, size):
    out = []
    while True:
        b = getdents(fd, size)
        if not b:
            return out
        out += b
def drop():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
def each_once(names, want):
    """Every name of want appears in names exactly once; returns what is wrong, or None."""
    c = collections.Counter(names)
    missing = sorted(n for n in want if c[n] == 0)
    twice = sorted(n for n in want if c[n] > 1)
    if missing or twice or c["."] != 1 or c[".."] != 1:
        return "%d missing (e.g. %s), %d twice (e.g. %s), '.' x%d, '..' x%d" % (
            len(missing), missing[:3], len(twice), twice[:3], c["."], c[".."])
    return None
EOF
}

# resume_after_change CHANGE [DIR]: reads about 1000 of the 4000 entries of $MNT/DIR (default d)
# through one open directory, after another open listed it whole (so the kernel holds its
# listing), runs CHANGE (python: d, first = names read, names = the 4000, removed = the set of
# names it removes), drops the caches, reads on; every name never removed must appear once.
resume_after_change() {
    write_getdents_py
    python3 - "$MNT/${2:-d}" "$T" "$1" <<'EOF'
import os, sys
sys.path.insert(0, sys.argv[2])
from gd import *
d = sys.argv[1]
os.mkdir(d)
names = ["f%05d" % i for i in range(4000)]
for n in names:
    open(os.path.join(d, n), "w").close()
assert len(os.listdir(d)) == 4000             # another open fills the kernel's cached listing
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
first = []
while len(first) < 1000:
    first += getdents(fd, 1000)               # a buffer that ends mid-reply
removed = set()
exec(sys.argv[3])
drop()
rest = read_all(fd, 1000)
os.close(fd)
bad = each_once(first + rest, set(names) - removed)
assert not bad, "after %d entries: %s" % (len(first), bad)
EOF
}

@test "resuming after the cache is dropped: entries read, then removed, skip nothing" {
    require_root
    mount_fs
    resume_after_change '
for n in first[2:]:
    os.unlink(os.path.join(d, n)); removed.add(n)'
}

@test "resuming after the cache is dropped: names created before the position repeat nothing" {
    require_root
    mount_fs
    resume_after_change '
for i in range(1000):
    open(os.path.join(d, "a%05d" % i), "w").close()'
}

@test "an offset kept from a closed open still places a new one (seekdir), entry and inode gone" {
    require_root
    mount_fs
    write_getdents_py
    python3 - "$MNT/d" "$T" <<'EOF'
import os, sys
sys.path.insert(0, sys.argv[2])
from gd import *
d = sys.argv[1]
os.mkdir(d)
names = ["n%05d" % i for i in range(3000)]
for n in names:
    open(os.path.join(d, n), "w").close()
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
got = []
while len(got) < 600:
    got += entries(fd, 4096)
name, off = got[500]                          # telldir() after name
os.close(fd)
for n in names[:400] + [name]:
    os.unlink(os.path.join(d, n))
for i in range(300):
    open(os.path.join(d, "a%05d" % i), "w").close()
drop()                                        # the kernel forgets the directory's inode too
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
os.lseek(fd, off, os.SEEK_SET)                # seekdir()
rest = read_all(fd, 4096)
want = names[names.index(name) + 1:]
assert rest == want, "after %s: %d names from %s, want %d from %s" % (
    name, len(rest), rest[:2], len(want), want[:1])
EOF
}

@test "with no table of offsets (dir_cookies=0) a pass finds the place; a lost place repeats" {
    require_root
    mount_fs -o dir_cookies=0
    resume_after_change '
for i in range(1000):
    open(os.path.join(d, "a%05d" % i), "w").close()' created
    run grep -q 'again from its first name' "$LOG"
    [ "$status" -eq 1 ]
    # the last name read is gone too: the listing starts over, and nothing is skipped
    resume_after_change '
for n in first[2:]:
    os.unlink(os.path.join(d, n)); removed.add(n)' removed
    grep -q 'listing removed/ again from its first name' "$LOG"
}

@test "listers, renamers and creators at once, caches dropped: stable names once per listing" {
    require_root
    mount_fs -o memtable_size=64K
    write_getdents_py
    python3 - "$MNT/d" "$T" <<'EOF'
import os, sys, threading, time
sys.path.insert(0, sys.argv[2])
from gd import *
d = sys.argv[1]
os.mkdir(d)
stable = set("s%04d-%s" % (i, "p" * (i % 30)) for i in range(2000))
for n in stable:
    open(os.path.join(d, n), "w").close()
stop, errors, listings = threading.Event(), [], [0]
def renamer(k):       # moves names from before the stable ones to after them and back
    i = 0
    while not stop.is_set():
        a, z = os.path.join(d, "a%d-%d" % (k, i % 200)), os.path.join(d, "z%d-%d" % (k, i % 200))
        if i < 200:
            open(a, "w").close()
        else:
            os.rename(z, a)
        os.rename(a, z)
        i += 1
def creator():        # new names everywhere among the stable ones, removed again later
    i = 0
    while not stop.is_set():
        open(os.path.join(d, "s%04d-new%d" % (i * 7 % 2000, i)), "w").close()
        if i >= 100:
            os.unlink(os.path.join(d, "s%04d-new%d" % ((i - 100) * 7 % 2000, i - 100)))
        i += 1
def lister(size):
    while not stop.is_set():
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        names = read_all(fd, size)
        os.close(fd)
        bad = each_once(names, stable)
        if bad:
            errors.append(bad)
        listings[0] += 1
threads = [threading.Thread(target=f, args=a) for f, a in
           ((renamer, (0,)), (renamer, (1,)), (creator, ()),
            (lister, (1000,)), (lister, (1500,)), (lister, (32768,)))]
for t in threads:
    t.start()
for i in range(10):   # a bounded number of drops
    time.sleep(0.3)
    drop()
stop.set()
for t in threads:
    t.join()
assert listings[0] >= 10, "only %d listings" % listings[0]
assert not errors, "%d of %d listings wrong, e.g. %s" % (len(errors), listings[0], errors[0])
EOF
}

@test "rm -rf of a directory of 110000 files while caches are dropped removes it all" {
    require_root
    require_lsmctl
    # more than the 100000 entries GNU rm (fts) reads before it starts removing
    python3 -c '
for i in range(110000):
    print("put big/f%06d v" % ((i * 7919) % 110000))' | "$LSMCTL" -d "$DATA" script
    mount_fs
    assert_eq "$(ls -U "$MNT/big" | wc -l)" 110000
    (for i in $(seq 1 12); do sleep 0.4; echo 3 >/proc/sys/vm/drop_caches; done) &
    dropper=$!
    CLEANUPS+=("kill $dropper 2>/dev/null; wait $dropper 2>/dev/null")
    run rm -rf "$MNT/big"
    kill "$dropper" 2>/dev/null || true
    wait "$dropper" 2>/dev/null || true
    if [ "$status" -ne 0 ]; then
        echo "rm -rf: $output; $(ls -U "$MNT/big" | wc -l) files left" >&2
        false
    fi
    [ ! -e "$MNT/big" ]
}
