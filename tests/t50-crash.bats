#!/usr/bin/env bats
# t50 — crashes: the daemon is killed with SIGKILL (no chance to flush or close anything), the dead
# mount is detached, and the data directory is mounted again.  Every file whose fsync returned must
# be intact; no file may hold a torn value (part old, part new, or cut short).

load helper

setup() {
    common_setup
}

teardown() {
    common_teardown
}

# Self-checking file content: "LSMT <version> <length> <crc32>\n" + payload, where length and crc32
# cover the payload.  check.py verifies every file in a directory and prints name and version.
write_checker() {
    cat >"$T/selfcheck.py" <<'EOF'
import os, random, zlib
def make(name, version, rnd):
    n = rnd.choice((0, 1, 100, 4000, 4096, 20000, 70000))
    payload = (("%s:%d:" % (name, version)).encode() * (n // 8 + 2))[:n]
    return b"LSMT %d %d %08x\n" % (version, len(payload), zlib.crc32(payload)) + payload
def write_all(mnt, prefix, count, versions, rnd):
    """Writes files prefix00.. of every version in turn, each closed after its write."""
    for v in versions:
        for i in range(count):
            with open("%s/%s%02d" % (mnt, prefix, i), "wb") as f:
                f.write(make("%s%02d" % (prefix, i), v, rnd))
def check(data):
    """Returns the version, or raises ValueError for a torn or foreign value."""
    nl = data.find(b"\n")
    if not data.startswith(b"LSMT ") or nl < 0:
        raise ValueError("bad header %r (len %d)" % (data[:30], len(data)))
    _, version, length, crc = data[:nl].split(b" ")
    payload = data[nl + 1:]
    if len(payload) != int(length) or zlib.crc32(payload) != int(crc, 16):
        raise ValueError("torn: header %r, payload %d bytes" % (data[:nl], len(payload)))
    return int(version)
EOF
}

@test "fsynced files survive SIGKILL of the daemon (python fsync and dd conv=fsync)" {
    mount_fs -o memtable_size=64K
    mkdir "$MNT/d"
    python3 - "$MNT" "$T/expect" <<'EOF'
import hashlib, os, sys
m, out = sys.argv[1], open(sys.argv[2], "w")
for i in range(200):
    p = "%s/%s" % (m, ("f%03d" if i % 2 else "d/g%03d") % i)
    data = os.urandom(1 + (i * 997) % 9000)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.fsync(fd) if i % 3 else os.fdatasync(fd)
    os.close(fd)
    out.write("%s %s\n" % (hashlib.sha256(data).hexdigest(), p[len(m) + 1:]))
out.close()
EOF
    head -c 300000 /dev/urandom >"$T/big"
    dd if="$T/big" of="$MNT/big" bs=32k conv=fsync status=none
    echo "$(sha256sum <"$T/big" | cut -d' ' -f1) big" >>"$T/expect"
    kill_daemon
    not_mounted "$MNT"
    mount_fs -o memtable_size=64K
    (cd "$MNT" && sha256sum -c --quiet "$T/expect")
    assert_eq "$(ls "$MNT" | wc -l)" $((100 + 2))
}

@test "closed but never fsynced files after SIGKILL: each absent, empty (just created) or complete" {
    mount_fs
    write_checker
    python3 - "$MNT" "$T" <<'EOF'
import random, sys
sys.path.insert(0, sys.argv[2]); import selfcheck
selfcheck.write_all(sys.argv[1], "w", 60, (1, 2), random.Random(7))
EOF
    kill_daemon
    mount_fs
    python3 - "$MNT" "$T" <<'EOF'
import os, sys
sys.path.insert(0, sys.argv[2]); import selfcheck
names = os.listdir(sys.argv[1])
assert set(names) <= {"w%02d" % i for i in range(60)}, names
empty = 0
for n in names:
    data = open(os.path.join(sys.argv[1], n), "rb").read()
    if data:                      # an empty file is its creation, whose bytes were never synced
        selfcheck.check(data)
    else:
        empty += 1
print("# %d of 60 files survived, %d of them empty, the rest complete" % (len(names), empty))
EOF
}

@test "sync=close: every closed file survives SIGKILL with its last version" {
    mount_fs -o sync=close,memtable_size=64K
    write_checker
    python3 - "$MNT" "$T" <<'EOF'
import random, sys
sys.path.insert(0, sys.argv[2]); import selfcheck
selfcheck.write_all(sys.argv[1], "s", 40, range(1, 4), random.Random(11))
EOF
    kill_daemon
    mount_fs
    python3 - "$MNT" "$T" <<'EOF'
import os, sys
sys.path.insert(0, sys.argv[2]); import selfcheck
for i in range(40):
    v = selfcheck.check(open("%s/s%02d" % (sys.argv[1], i), "rb").read())
    assert v == 3, "s%02d: version %d after close of version 3" % (i, v)
EOF
}

@test "SIGKILL at random moments during overwrites: no torn value, fsynced versions kept" {
    write_checker
    rounds=6
    for round in $(seq 1 $rounds); do
        mount_fs -o memtable_size=64K
        # writer: overwrites 40 files with growing versions, in several write() calls each; after
        # an fsync returns, records "name version" (on the ordinary disk) as durable
        python3 - "$MNT" "$T" "$round" >"$T/writer.$round.log" 2>&1 3>&- 4>&- <<'EOF' &
import os, random, sys
sys.path.insert(0, sys.argv[2]); import selfcheck
m, t, rnd = sys.argv[1], sys.argv[2], random.Random(int(sys.argv[3]))
durable = open(t + "/durable", "a")
version = int(sys.argv[3]) * 100000
# names are opened relative to a descriptor of the mount's root, so that once the daemon is dead
# every call fails instead of landing in the directory under the detached mount
dfd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
assert os.fstat(dfd).st_dev != os.stat(t).st_dev, "mount point is not mounted"
open(t + "/writer.ready", "w").close()
try:
    while True:
        version += 1
        name = "f%02d" % rnd.randrange(40)
        data = selfcheck.make(name, version, rnd)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dfd)
        for i in range(0, len(data), 3000):
            os.write(fd, data[i:i + 3000])
        sync = rnd.random() < 0.2
        if sync:
            os.fsync(fd)
        os.close(fd)
        if sync:
            durable.write("%s %d\n" % (name, version)); durable.flush(); os.fsync(durable.fileno())
except OSError as e:
    print("writer stopped:", e)
EOF
        writer=$!
        CLEANUPS+=("kill -9 $writer 2>/dev/null")
        for i in $(seq 1 100); do
            [ -e "$T/writer.ready" ] || ! pid_alive "$writer" && break
            sleep 0.05
        done
        rm "$T/writer.ready"
        sleep "0.$((RANDOM % 9 + 1))"
        kill_daemon
        wait_gone "$writer" 100
        wait "$writer" || true
        grep -q 'writer stopped' "$T/writer.$round.log"
        mount_fs -o memtable_size=64K
        python3 - "$MNT" "$T" <<'EOF'
import os, sys
sys.path.insert(0, sys.argv[2]); import selfcheck
m, t = sys.argv[1], sys.argv[2]
need = {}
if os.path.exists(t + "/durable"):
    for line in open(t + "/durable"):
        name, v = line.split()
        need[name] = max(need.get(name, 0), int(v))
bad = []
for name in sorted(os.listdir(m)):
    try:
        data = open(os.path.join(m, name), "rb").read()
        if not data and name not in need:
            continue              # created, and no version of it was ever synced
        v = selfcheck.check(data)
    except (ValueError, OSError) as e:
        bad.append("%s: %s" % (name, e)); continue
    if v < need.get(name, 0):
        bad.append("%s: version %d but %d was fsynced" % (name, v, need[name]))
for name in need:
    if not os.path.exists(os.path.join(m, name)):
        bad.append("%s: fsynced, now missing" % name)
if bad:
    sys.exit("\n".join(bad))
print("checked %d files, %d with fsynced versions" % (len(os.listdir(m)), len(need)))
EOF
        unmount_fs
    done
    [ -s "$T/durable" ]
}

# start_writer ROUND SCRIPT: runs python SCRIPT (args MNT T ROUND) in the background on the mount,
# waits until it holds a descriptor of the mount (it creates $T/writer.ready), sets $writer.
start_writer() {
    python3 "$2" "$MNT" "$T" "$1" >"$T/writer.$1.log" 2>&1 3>&- 4>&- &
    writer=$!
    CLEANUPS+=("kill -9 $writer 2>/dev/null")
    for i in $(seq 1 100); do
        [ -e "$T/writer.ready" ] || ! pid_alive "$writer" && break
        sleep 0.05
    done
    rm -f "$T/writer.ready"
}

# stop_writer ROUND: after kill_daemon, the writer must stop by itself (its calls fail).
stop_writer() {
    wait_gone "$writer" 100
    wait "$writer" || true
    grep -q 'writer stopped' "$T/writer.$1.log" || { cat "$T/writer.$1.log" >&2; false; }
    sed "s/^/# /" "$T/writer.$1.log"
}

@test "SIGKILL during editor-style saves (temp, fsync, rename): the target is always complete" {
    write_checker
    cat >"$T/saver.py" <<'EOF'
import os, random, sys
sys.path.insert(0, sys.argv[2]); import selfcheck
m, t, rnd = sys.argv[1], sys.argv[2], random.Random(int(sys.argv[3]))
dfd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
assert os.fstat(dfd).st_dev != os.stat(t).st_dev, "mount point is not mounted"
durable = open(t + "/durable", "a")
version = int(sys.argv[3]) * 100000
open(t + "/writer.ready", "w").close()
try:
    while True:
        version += 1
        name = "doc%d" % rnd.randrange(5)
        tmp = ".%s.tmp%d" % (name, version)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
        os.write(fd, selfcheck.make(name, version, rnd))
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
        durable.write("%s %d\n" % (name, version)); durable.flush(); os.fsync(durable.fileno())
except OSError as e:
    print("writer stopped:", e)
EOF
    mount_fs
    python3 - "$MNT" "$T" <<'EOF'
import random, sys
sys.path.insert(0, sys.argv[2]); import selfcheck
rnd = random.Random(0)
for i in range(5):
    with open("%s/doc%d" % (sys.argv[1], i), "wb") as f:
        f.write(selfcheck.make("doc%d" % i, 0, rnd))
        f.flush(); __import__("os").fsync(f.fileno())
EOF
    for round in 1 2 3 4 5; do
        start_writer "$round" "$T/saver.py"
        sleep "0.$((RANDOM % 9 + 1))"
        kill_daemon
        stop_writer "$round"
        mount_fs
        python3 - "$MNT" "$T" <<'EOF'
import os, sys
sys.path.insert(0, sys.argv[2]); import selfcheck
m, t = sys.argv[1], sys.argv[2]
need = {}
for line in open(t + "/durable"):
    name, v = line.split()
    need[name] = max(need.get(name, 0), int(v))
for i in range(5):
    name = "doc%d" % i
    v = selfcheck.check(open(os.path.join(m, name), "rb").read())   # present and complete
    assert v >= need.get(name, 0), "%s: version %d, but %d was renamed into place and synced" % (name, v, need[name])
for n in os.listdir(m):
    if n.startswith("."):            # leftover temp: created (empty) or complete, never torn
        data = open(os.path.join(m, n), "rb").read()
        if data:
            selfcheck.check(data)
        os.unlink(os.path.join(m, n))
EOF
    done
    [ -s "$T/durable" ]
}

@test "SIGKILL during directory renames: the tree is whole under exactly one name" {
    cat >"$T/mover.py" <<'EOF'
import os, sys
m, t = sys.argv[1], sys.argv[2]
dfd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
assert os.fstat(dfd).st_dev != os.stat(t).st_dev, "mount point is not mounted"
open(t + "/writer.ready", "w").close()
names = ["A", "B", "C"]
n = 0
try:
    while True:
        n += 1
        src = [n for n in names if n in os.listdir(dfd)][0]
        dst = names[(names.index(src) + 1) % 3]
        os.rename(src, dst, src_dir_fd=dfd, dst_dir_fd=dfd)
except OSError as e:
    print("writer stopped after %d renames:" % n, e)
EOF
    mount_fs -o memtable_size=64K
    python3 - "$MNT/A" "$T/expect" <<'EOF'
import hashlib, os, sys
root, out = sys.argv[1], open(sys.argv[2], "w")
for d in range(10):
    os.makedirs("%s/d%d/e" % (root, d))
    for f in range(20):
        p = "d%d/%s%02d" % (d, "e/" if f % 2 else "", f)
        data = os.urandom(1000 + f)
        open(os.path.join(root, p), "wb").write(data)
        out.write("%s  %s\n" % (hashlib.sha256(data).hexdigest(), p))
EOF
    remount -o memtable_size=64K
    for round in 1 2 3 4; do
        start_writer "$round" "$T/mover.py"
        sleep "0.$((RANDOM % 9 + 1))"
        kill_daemon
        stop_writer "$round"
        mount_fs -o memtable_size=64K
        assert_eq "$(ls "$MNT" | wc -l)" 1
        (cd "$MNT"/* && sha256sum -c --quiet "$T/expect")
        assert_eq "$(find "$MNT" -type f | wc -l)" 200
    done
}

@test "SIGKILL: files fsynced before keep their st_ino, files made after never take a used one" {
    mount_fs
    mkdir "$MNT/d"
    for i in $(seq 1 30); do echo "$i" >"$MNT/d/f$i"; done
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$MNT/d/f30"
    (cd "$MNT" && stat -c '%i %n' d d/f*) | LC_ALL=C sort -k2 >"$T/before"
    # made after the sync: may be lost, but their numbers must not come back for new files
    for i in $(seq 1 30); do echo "$i" >"$MNT/d/late$i"; done
    (cd "$MNT" && stat -c '%i' d/late*) >"$T/late"
    kill_daemon
    mount_fs
    (cd "$MNT" && stat -c '%i %n' d d/f*) | LC_ALL=C sort -k2 >"$T/after"
    diff "$T/before" "$T/after"
    for i in $(seq 1 40); do echo "$i" >"$MNT/d/new$i"; done
    (cd "$MNT" && stat -c '%i' d d/*) >"$T/all"
    cat "$T/late" "$T/all" | sort | uniq -d >"$T/dups"
    # a late file that survived shows its own number twice (once in each list): not a reuse
    (cd "$MNT" && stat -c '%i' d/late* 2>/dev/null) | sort >"$T/survivors" || true
    assert_eq "$(comm -23 "$T/dups" "$T/survivors")" ""
}

@test "SIGKILL during sqlite3 transactions: database intact, every committed row kept" {
    cat >"$T/sql.py" <<'EOF'
import os, sqlite3, sys
m, t, rnd = sys.argv[1], sys.argv[2], int(sys.argv[3])
dfd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
assert os.fstat(dfd).st_dev != os.stat(t).st_dev, "mount point is not mounted"
os.chdir(dfd)                  # relative paths stay on the mount even after it is detached
c = sqlite3.connect("db.sqlite", isolation_level=None)
c.execute("pragma synchronous=extra")      # extra: the journal's unlink is synced (directory fsync) too
c.execute("create table if not exists t(k integer primary key, v text)")
durable = open(t + "/durable", "a")
open(t + "/writer.ready", "w").close()
n = rnd * 100000
try:
    while True:
        n += 1
        c.execute("begin")
        c.execute("insert into t values (?, ?)", (n, "row %d " % n + "p" * (n % 300)))
        c.execute("update t set v = v || 'u' where k % 50 = ?", (n % 50,))
        c.execute("commit")
        # sqlite ignores a directory it cannot open for its post-unlink sync (the daemon may be
        # dead by then), so the commit counts as durable only once our own directory fsync returns
        os.fsync(dfd)
        durable.write("%d\n" % n); durable.flush(); os.fsync(durable.fileno())
except (OSError, sqlite3.Error) as e:
    print("writer stopped:", e)
EOF
    for round in 1 2 3 4; do
        mount_fs
        start_writer "$round" "$T/sql.py"
        sleep "0.$((RANDOM % 9 + 1))"
        kill_daemon
        stop_writer "$round"
        mount_fs
        python3 - "$MNT" "$T" <<'EOF'
import sqlite3, sys
m, t = sys.argv[1], sys.argv[2]
c = sqlite3.connect(m + "/db.sqlite")
assert c.execute("pragma integrity_check").fetchone()[0] == "ok"
keys = {k for (k,) in c.execute("select k from t")}
committed = {int(l) for l in open(t + "/durable")}
lost = committed - keys
assert not lost, "%d committed rows lost, e.g. %s" % (len(lost), sorted(lost)[:5])
print("# %d rows, all %d committed ones present" % (len(keys), len(committed)))
c.close()
EOF
        unmount_fs
    done
}

@test "a descriptor open for reading keeps the version it opened across reads" {
    require_strict_close_to_open
    mount_fs -o close_to_open
    python3 - "$MNT" <<'EOF'
import os, sys
m = sys.argv[1]
old = b"O" * 300000
new = b"N" * 250000
with open(m + "/v", "wb") as f:
    f.write(old)
fd = os.open(m + "/v", os.O_RDONLY)
first = os.read(fd, 1000)
with open(m + "/v", "wb") as f:       # overwrite while the reader is open
    f.write(new)
rest = b""
while True:
    b = os.read(fd, 65536)
    if not b:
        break
    rest += b
os.close(fd)
assert first + rest == old, "reader saw %d bytes, %d of them old" % (len(first + rest), (first + rest).count(b"O"))
assert open(m + "/v", "rb").read() == new
EOF
}

@test "concurrent reader never sees a mixture of old and new bytes" {
    require_strict_close_to_open
    mount_fs -o close_to_open
    write_checker
    python3 - "$MNT" "$T" <<'EOF'
import os, random, sys, threading
sys.path.insert(0, sys.argv[2]); import selfcheck
m = sys.argv[1]
rnd = random.Random(3)
for i in range(5):
    with open("%s/c%d" % (m, i), "wb") as f:
        f.write(selfcheck.make("c%d" % i, 0, rnd))
stop, errors, reads = False, [], [0]
def reader():
    r = random.Random(4)
    while not stop and not errors:
        name = "%s/c%d" % (m, r.randrange(5))
        with open(name, "rb") as f:
            data = f.read()
        try:
            selfcheck.check(data)
            reads[0] += 1
        except ValueError as e:
            errors.append("%s: %s" % (name, e))
ths = [threading.Thread(target=reader) for _ in range(2)]
for th in ths: th.start()
for v in range(1, 400):
    i = rnd.randrange(5)
    data = selfcheck.make("c%d" % i, v, rnd)
    fd = os.open("%s/c%d" % (m, i), os.O_WRONLY | os.O_TRUNC)
    for off in range(0, len(data), 1000):
        os.write(fd, data[off:off + 1000])
    os.close(fd)
stop = True
for th in ths: th.join()
assert not errors, errors[:3]
assert reads[0] > 100, reads[0]
EOF
}
