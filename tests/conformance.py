#!/usr/bin/env python3
"""conformance.py — POSIX/Linux conformance cases for a mounted directory (stdlib only).

Written from POSIX.1-2017 and the Linux man pages (open(2), read(2), write(2), truncate(2),
unlink(2), rename(2), mkdir(2), rmdir(2), symlink(2), readlink(2), chmod(2), chown(2),
utimensat(2), stat(2), access(2), mknod(2), copy_file_range(2), seekdir(3), inode(7)): for each
syscall lsmfs supports, the errno of each error case and which timestamps and link counts change;
and for those it does not (link(2), mknod(2) of anything but a regular file, bind(2) of a
UNIX-domain socket, fallocate(2), O_TMPFILE), the errno it gives instead.

  conformance.py run DIR [CASE...]   runs the cases (as root) in fresh subdirectories of DIR and
                                     prints one line per case: "CASE <name> <outcome>"
  conformance.py compare LSMFS TMPFS compares two outputs of `run`: prints the table, every case
                                     that differs, and exits 1 when a difference is neither
                                     documented in lsmfs(1) nor a known bug

An outcome is a short deterministic string: "ok" or an errno name, then what was observed, e.g.
"ok mode=0100640 pm+pc+" (pm/pc: the parent's mtime/ctime changed (+) or not (=); m/c: the
object's). Cases that act as another user fork, drop to uid/gid 65534 and report back through a
pipe; the mount must allow other users (-o allow_other).
"""
import ctypes
import errno
import os
import socket
import stat
import sys
import time

OTHER = 65534                      # nobody / nogroup
UMASK = 0o022

# Cases whose outcome on lsmfs differs from tmpfs because lsmfs does not do it, with the section
# of lsmfs(1) that says so.
DOCUMENTED = {
    "atime_kept": "lsmfs(1) STANDARDS; KEYS AS FILES, Attributes (access times are not kept)",
    "link_hard": "lsmfs(1) STANDARDS; KEYS AS FILES, Not supported (hard links)",
    "fallocate_direct": "lsmfs(1) STANDARDS; KEYS AS FILES, Not supported (fallocate(2))",
    "rename_whiteout": "lsmfs(1) STANDARDS (RENAME_WHITEOUT leaves a device node: EINVAL)",
    "o_tmpfile": "lsmfs(1) STANDARDS (O_TMPFILE: EOPNOTSUPP)",
}
# ... and those that differ only with -o writeback (LSMFS_TEST_OPTS="-o writeback"), where the
# kernel keeps a file's times and writes reach lsmfs from its write-back, not from the writer.
DOCUMENTED_WRITEBACK = {
    "write_other_clears_sgid_no_gexec": "lsmfs(1) STANDARDS (with -o writeback)",
    "truncate_same_size": "lsmfs(1) STANDARDS (with -o writeback)",
}
if "writeback" in os.environ.get("LSMFS_TEST_OPTS", ""):
    DOCUMENTED.update(DOCUMENTED_WRITEBACK)
# Bugs not fixed yet: their difference does not fail the run, but is shown.
KNOWN_BUGS = {
}

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4


def renameat2(a, b, flags):
    if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), ctypes.c_uint(flags)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


def utimensat(path, a, m, flags=0):
    """a, m: (sec, nsec) pairs or UTIME_NOW / UTIME_OMIT (then sec is ignored)."""
    ts = (timespec * 2)()
    for i, t in enumerate((a, m)):
        if isinstance(t, tuple):
            ts[i].tv_sec, ts[i].tv_nsec = t
        else:
            ts[i].tv_sec, ts[i].tv_nsec = 0, t
    if libc.utimensat(AT_FDCWD, path.encode(), ts, flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def attempt(fn, *a, **kw):
    """'ok' (or what fn returns) or the errno name fn raised."""
    try:
        r = fn(*a, **kw)
        return "ok" if r is None or not isinstance(r, str) else r
    except OSError as e:
        return ename(e)


def as_other(fn, uid=OTHER, gid=OTHER, groups=(OTHER,)):
    """Runs fn as another user in a forked child; returns attempt(fn)'s string."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            res = attempt(fn)
        except BaseException as e:  # noqa: BLE001 - reported as the outcome
            res = "EXC:" + type(e).__name__
        os.write(w, res.encode())
        os._exit(0)
    os.close(w)
    out = b""
    while True:
        b = os.read(r, 4096)
        if not b:
            break
        out += b
    os.close(r)
    os.waitpid(pid, 0)
    return out.decode()


def tick():
    time.sleep(0.012)   # tmpfs stamps with the coarse clock (a jiffy): make changes visible


def times(p):
    st = os.lstat(p)
    return (st.st_mtime_ns, st.st_ctime_ns)


def changed(before, p, tag=""):
    after = times(p)
    return "%sm%s%sc%s" % (tag, "+" if after[0] != before[0] else "=", tag,
                           "+" if after[1] != before[1] else "=")


def put(p, data=b"", mode=0o644):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.write(fd, data)
    os.close(fd)
    os.chmod(p, mode)


def append(p):
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"x")
    os.close(fd)


def get(p):
    with open(p, "rb") as f:
        return f.read()


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


LONG = "n" * 256

# ---- open(2) ----


@case
def open_creat_new(d):
    t = times(d)
    tick()
    fd = os.open(d + "/f", os.O_CREAT | os.O_WRONLY, 0o666)
    st = os.fstat(fd)
    os.close(fd)
    return "ok mode=%o nlink=%d uid=%d size=%d %s" % (st.st_mode, st.st_nlink, st.st_uid,
                                                      st.st_size, changed(t, d, "p"))


@case
def open_creat_excl_exists(d):
    put(d + "/f")
    return attempt(os.open, d + "/f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)


@case
def open_creat_excl_dir(d):
    os.mkdir(d + "/s")
    return attempt(os.open, d + "/s", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)


@case
def open_creat_excl_symlink(d):
    os.symlink("nowhere", d + "/l")
    return attempt(os.open, d + "/l", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)


@case
def open_creat_dangling_symlink(d):
    os.symlink("target", d + "/l")
    fd = os.open(d + "/l", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    return "ok target=%s" % stat.S_ISREG(os.lstat(d + "/target").st_mode)


@case
def open_noent(d):
    return attempt(os.open, d + "/nope", os.O_RDONLY)


@case
def open_creat_noent_parent(d):
    return attempt(os.open, d + "/nodir/f", os.O_CREAT | os.O_WRONLY, 0o644)


@case
def open_notdir_component(d):
    put(d + "/f")
    return attempt(os.open, d + "/f/x", os.O_RDONLY)


@case
def open_dir_wronly(d):
    os.mkdir(d + "/s")
    return attempt(os.open, d + "/s", os.O_WRONLY)


@case
def open_dir_creat(d):
    os.mkdir(d + "/s")
    return attempt(os.open, d + "/s", os.O_CREAT | os.O_RDWR, 0o644)


@case
def open_directory_on_file(d):
    put(d + "/f")
    return attempt(os.open, d + "/f", os.O_RDONLY | os.O_DIRECTORY)


@case
def open_nametoolong(d):
    return attempt(os.open, d + "/" + LONG, os.O_CREAT | os.O_WRONLY, 0o644)


@case
def open_nofollow_symlink(d):
    put(d + "/f")
    os.symlink("f", d + "/l")
    return attempt(os.open, d + "/l", os.O_RDONLY | os.O_NOFOLLOW)


@case
def open_symlink_loop(d):
    os.symlink("b", d + "/a")
    os.symlink("a", d + "/b")
    return attempt(os.open, d + "/a", os.O_RDONLY)


@case
def open_trunc(d):
    put(d + "/f", b"data")
    t = times(d + "/f")
    tick()
    fd = os.open(d + "/f", os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    return "ok size=%d %s" % (os.stat(d + "/f").st_size, changed(t, d + "/f"))


@case
def open_trunc_empty(d):
    put(d + "/f")
    t = times(d + "/f")
    tick()
    fd = os.open(d + "/f", os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    return "ok " + changed(t, d + "/f")


@case
def open_append(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_WRONLY | os.O_APPEND)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"de")
    os.pwrite(fd, b"fg", 0)      # Linux: pwrite on O_APPEND appends (BUGS in pwrite(2))
    os.close(fd)
    return "ok " + get(d + "/f").decode()


@case
def open_eacces_other(d):
    put(d + "/f", b"x", 0o600)
    return as_other(lambda: os.close(os.open(d + "/f", os.O_RDONLY)))


@case
def open_creat_eacces_other(d):
    os.chmod(d, 0o755)
    return as_other(lambda: os.close(os.open(d + "/f", os.O_CREAT | os.O_WRONLY, 0o644)))


@case
def open_search_eacces_other(d):
    os.mkdir(d + "/s", 0o700)
    put(d + "/s/f", b"x", 0o644)
    return as_other(lambda: os.close(os.open(d + "/s/f", os.O_RDONLY)))


@case
def open_creat_owner_other(d):
    os.chmod(d, 0o777)

    def f():
        fd = os.open(d + "/f", os.O_CREAT | os.O_WRONLY, 0o644)
        st = os.fstat(fd)
        os.close(fd)
        return "ok uid=%d gid=%d" % (st.st_uid, st.st_gid)
    return as_other(f)


@case
def open_creat_setgid_dir(d):
    os.mkdir(d + "/s")
    os.chown(d + "/s", 0, 100)
    os.chmod(d + "/s", 0o2775)
    put(d + "/s/f")
    os.mkdir(d + "/s/sub")
    f, s = os.stat(d + "/s/f"), os.stat(d + "/s/sub")
    return "ok fgid=%d subgid=%d submode=%o" % (f.st_gid, s.st_gid, s.st_mode)

# ---- read(2), write(2), pread(2), pwrite(2) ----


@case
def write_read_back(d):
    fd = os.open(d + "/f", os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"hello")
    os.pwrite(fd, b"X", 10)
    st = os.fstat(fd)
    r = os.pread(fd, 100, 0)
    os.close(fd)
    return "ok size=%d %r" % (st.st_size, r)


@case
def write_times(d):
    put(d + "/f", b"abc")
    t, tp = times(d + "/f"), times(d)
    tick()
    fd = os.open(d + "/f", os.O_WRONLY)
    os.write(fd, b"x")
    os.close(fd)
    return "ok %s %s" % (changed(t, d + "/f"), changed(tp, d, "p"))


@case
def write_fstat_times(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_WRONLY)
    t = times(d + "/f")
    tick()
    os.write(fd, b"x")
    st = os.fstat(fd)
    os.close(fd)
    return "ok m%s c%s" % ("+" if st.st_mtime_ns != t[0] else "=",
                           "+" if st.st_ctime_ns != t[1] else "=")


@case
def read_times(d):
    put(d + "/f", b"abc")
    t = times(d + "/f")
    tick()
    get(d + "/f")
    return "ok " + changed(t, d + "/f")


@case
def write_ebadf_rdonly(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_RDONLY)
    try:
        return attempt(os.write, fd, b"x")
    finally:
        os.close(fd)


@case
def read_ebadf_wronly(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_WRONLY)
    try:
        return attempt(os.read, fd, 1)
    finally:
        os.close(fd)


@case
def read_dir(d):
    fd = os.open(d, os.O_RDONLY)
    try:
        return attempt(os.read, fd, 10)
    finally:
        os.close(fd)


@case
def pread_negative(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_RDONLY)
    try:
        return attempt(os.pread, fd, 1, -1)
    finally:
        os.close(fd)


@case
def pwrite_negative(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_WRONLY)
    try:
        return attempt(os.pwrite, fd, b"x", -1)
    finally:
        os.close(fd)


@case
def read_past_end(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_RDONLY)
    r = os.pread(fd, 10, 100)
    os.close(fd)
    return "ok %r" % r


@case
def write_other_clears_suid(d):
    put(d + "/f", b"abc", 0o6777)
    os.chmod(d + "/f", 0o6777)
    r = as_other(lambda: append(d + "/f"))
    return "%s mode=%o" % (r, os.stat(d + "/f").st_mode)


@case
def write_other_clears_sgid_no_gexec(d):
    put(d + "/f", b"abc")
    os.chmod(d + "/f", 0o6766)
    r = as_other(lambda: append(d + "/f"))
    return "%s mode=%o" % (r, os.stat(d + "/f").st_mode)


@case
def write_root_keeps_suid(d):
    put(d + "/f", b"abc")
    os.chmod(d + "/f", 0o6755)
    fd = os.open(d + "/f", os.O_WRONLY)
    os.write(fd, b"x")
    os.close(fd)
    return "ok mode=%o" % os.stat(d + "/f").st_mode


@case
def truncate_other_clears_suid(d):
    put(d + "/f", b"abc")
    os.chmod(d + "/f", 0o6777)
    r = as_other(lambda: os.truncate(d + "/f", 1))
    return "%s mode=%o" % (r, os.stat(d + "/f").st_mode)

@case
def truncate_other_clears_sgid_no_gexec(d):
    put(d + "/f", b"abc")
    os.chmod(d + "/f", 0o2666)
    r = as_other(lambda: os.truncate(d + "/f", 1))
    return "%s mode=%o" % (r, os.stat(d + "/f").st_mode)


@case
def write_other_member_keeps_sgid_no_gexec(d):
    put(d + "/f", b"abc")
    os.chown(d + "/f", 0, OTHER)
    os.chmod(d + "/f", 0o2666)
    r = as_other(lambda: append(d + "/f"))
    return "%s mode=%o" % (r, os.stat(d + "/f").st_mode)

# ---- truncate(2), ftruncate(2) ----


@case
def truncate_grow_shrink(d):
    put(d + "/f", b"abc")
    t = times(d + "/f")
    tick()
    os.truncate(d + "/f", 6)
    a = get(d + "/f")
    c1 = changed(t, d + "/f")
    t = times(d + "/f")
    tick()
    os.truncate(d + "/f", 1)
    return "ok %r %s %r %s" % (a, c1, get(d + "/f"), changed(t, d + "/f"))


@case
def truncate_same_size(d):
    put(d + "/f", b"abc")
    t = times(d + "/f")
    tick()
    os.truncate(d + "/f", 3)
    return "ok " + changed(t, d + "/f")


@case
def ftruncate_same_size(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_WRONLY)
    t = times(d + "/f")
    tick()
    os.ftruncate(fd, 3)
    os.close(fd)
    return "ok " + changed(t, d + "/f")


@case
def ftruncate_rdonly(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_RDONLY)
    try:
        return attempt(os.ftruncate, fd, 1)
    finally:
        os.close(fd)


@case
def truncate_dir(d):
    return attempt(os.truncate, d, 0)


@case
def truncate_negative(d):
    put(d + "/f", b"abc")
    return attempt(os.truncate, d + "/f", -1)


@case
def truncate_noent(d):
    return attempt(os.truncate, d + "/nope", 0)


@case
def truncate_eacces_other(d):
    put(d + "/f", b"abc", 0o644)
    return as_other(lambda: os.truncate(d + "/f", 0))

# ---- unlink(2) ----


@case
def unlink_file(d):
    put(d + "/f", b"abc")
    t = times(d)
    tick()
    os.unlink(d + "/f")
    return "ok %s %s" % (changed(t, d, "p"), attempt(os.lstat, d + "/f"))


@case
def unlink_symlink(d):
    put(d + "/f", b"abc")
    os.symlink("f", d + "/l")
    os.unlink(d + "/l")
    return "ok f=%s" % attempt(os.lstat, d + "/f")


@case
def unlink_noent(d):
    return attempt(os.unlink, d + "/nope")


@case
def unlink_dir(d):
    os.mkdir(d + "/s")
    return attempt(os.unlink, d + "/s")


@case
def unlink_notdir(d):
    put(d + "/f")
    return attempt(os.unlink, d + "/f/x")


@case
def unlink_nametoolong(d):
    return attempt(os.unlink, d + "/" + LONG)


@case
def unlink_open_fstat(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_RDWR)
    os.unlink(d + "/f")
    st = os.fstat(fd)
    r = os.pread(fd, 10, 0)
    os.close(fd)
    return "ok nlink=%d %r" % (st.st_nlink, r)


@case
def unlink_eacces_other(d):
    os.chmod(d, 0o755)
    put(d + "/f", b"abc", 0o666)
    return as_other(lambda: os.unlink(d + "/f"))


@case
def unlink_sticky_other(d):
    os.chmod(d, 0o1777)
    put(d + "/f", b"abc", 0o666)
    return as_other(lambda: os.unlink(d + "/f"))

# ---- rename(2), renameat2(2) ----


@case
def rename_file(d):
    put(d + "/a", b"abc")
    ino = os.stat(d + "/a").st_ino
    t, tf = times(d), times(d + "/a")
    tick()
    os.rename(d + "/a", d + "/b")
    st = os.stat(d + "/b")
    return "ok %s %s same_ino=%s a=%s" % (changed(t, d, "p"), changed(tf, d + "/b"),
                                          st.st_ino == ino, attempt(os.lstat, d + "/a"))


@case
def rename_dir_ctime(d):
    os.mkdir(d + "/a")
    tf = times(d + "/a")
    tick()
    os.rename(d + "/a", d + "/b")
    return "ok " + changed(tf, d + "/b")


@case
def rename_cross_dir(d):
    os.mkdir(d + "/x")
    os.mkdir(d + "/y")
    put(d + "/x/f", b"abc")
    tx, ty = times(d + "/x"), times(d + "/y")
    tick()
    os.rename(d + "/x/f", d + "/y/f")
    return "ok %s %s" % (changed(tx, d + "/x", "s"), changed(ty, d + "/y", "t"))


@case
def rename_subdir_nlink(d):
    os.mkdir(d + "/x")
    os.mkdir(d + "/y")
    os.mkdir(d + "/x/s")
    a = (os.stat(d + "/x").st_nlink, os.stat(d + "/y").st_nlink)
    os.rename(d + "/x/s", d + "/y/s")
    b = (os.stat(d + "/x").st_nlink, os.stat(d + "/y").st_nlink)
    return "ok before=%s after=%s" % (a, b)


@case
def rename_over_file(d):
    put(d + "/a", b"new")
    put(d + "/b", b"old")
    fd = os.open(d + "/b", os.O_RDONLY)
    t = times(d)
    tick()
    os.rename(d + "/a", d + "/b")
    st = os.fstat(fd)
    r = os.pread(fd, 10, 0)
    os.close(fd)
    return "ok %r nlink_old=%d old=%r %s" % (get(d + "/b"), st.st_nlink, r, changed(t, d, "p"))


@case
def rename_dir_over_empty_dir(d):
    os.mkdir(d + "/a")
    os.mkdir(d + "/b")
    put(d + "/a/f")
    os.rename(d + "/a", d + "/b")
    return "ok %s nlink=%d" % (sorted(os.listdir(d + "/b")), os.stat(d).st_nlink)


@case
def rename_dir_over_nonempty(d):
    os.mkdir(d + "/a")
    os.mkdir(d + "/b")
    put(d + "/b/f")
    return attempt(os.rename, d + "/a", d + "/b")


@case
def rename_dir_over_file(d):
    os.mkdir(d + "/a")
    put(d + "/b")
    return attempt(os.rename, d + "/a", d + "/b")


@case
def rename_file_over_dir(d):
    put(d + "/a")
    os.mkdir(d + "/b")
    return attempt(os.rename, d + "/a", d + "/b")


@case
def rename_dir_into_self(d):
    os.mkdir(d + "/a")
    return attempt(os.rename, d + "/a", d + "/a/b")


@case
def rename_noent(d):
    return attempt(os.rename, d + "/nope", d + "/b")


@case
def rename_notdir(d):
    put(d + "/f")
    return attempt(os.rename, d + "/f/x", d + "/b")


@case
def rename_nametoolong(d):
    put(d + "/a")
    return attempt(os.rename, d + "/a", d + "/" + LONG)


@case
def rename_same(d):
    put(d + "/a", b"abc")
    os.rename(d + "/a", d + "/a")
    return "ok %r" % get(d + "/a")


@case
def rename_noreplace_exists(d):
    put(d + "/a")
    put(d + "/b")
    return attempt(renameat2, d + "/a", d + "/b", RENAME_NOREPLACE)


@case
def rename_noreplace_new(d):
    put(d + "/a", b"abc")
    renameat2(d + "/a", d + "/b", RENAME_NOREPLACE)
    return "ok %r" % get(d + "/b")


@case
def rename_exchange(d):
    put(d + "/a", b"A")
    os.mkdir(d + "/b")
    ia, ib = os.stat(d + "/a").st_ino, os.stat(d + "/b").st_ino
    t = times(d)
    tick()
    renameat2(d + "/a", d + "/b", RENAME_EXCHANGE)
    return "ok b=%r a_dir=%s inos=%s %s" % (
        get(d + "/b"), stat.S_ISDIR(os.stat(d + "/a").st_mode),
        (os.stat(d + "/a").st_ino, os.stat(d + "/b").st_ino) == (ib, ia), changed(t, d, "p"))


@case
def rename_exchange_noent(d):
    put(d + "/a")
    return attempt(renameat2, d + "/a", d + "/b", RENAME_EXCHANGE)


@case
def rename_exchange_noreplace(d):
    put(d + "/a")
    put(d + "/b")
    return attempt(renameat2, d + "/a", d + "/b", RENAME_EXCHANGE | RENAME_NOREPLACE)


@case
def rename_bad_flags(d):
    put(d + "/a")
    return attempt(renameat2, d + "/a", d + "/b", 8)


@case
def rename_whiteout(d):
    put(d + "/a")
    return attempt(renameat2, d + "/a", d + "/b", RENAME_WHITEOUT)


@case
def rename_eacces_other(d):
    os.chmod(d, 0o755)
    put(d + "/a")
    return as_other(lambda: os.rename(d + "/a", d + "/b"))

# ---- mkdir(2), rmdir(2) ----


@case
def mkdir_new(d):
    t = times(d)
    n = os.stat(d).st_nlink
    tick()
    os.mkdir(d + "/s", 0o777)
    st = os.stat(d + "/s")
    return "ok mode=%o nlink=%d parent_nlink=%+d %s" % (st.st_mode, st.st_nlink,
                                                        os.stat(d).st_nlink - n,
                                                        changed(t, d, "p"))


@case
def mkdir_exists(d):
    os.mkdir(d + "/s")
    return attempt(os.mkdir, d + "/s")


@case
def mkdir_exists_file(d):
    put(d + "/f")
    return attempt(os.mkdir, d + "/f")


@case
def mkdir_exists_symlink(d):
    os.symlink("nowhere", d + "/l")
    return attempt(os.mkdir, d + "/l")


@case
def mkdir_noent(d):
    return attempt(os.mkdir, d + "/x/y")


@case
def mkdir_notdir(d):
    put(d + "/f")
    return attempt(os.mkdir, d + "/f/y")


@case
def mkdir_nametoolong(d):
    return attempt(os.mkdir, d + "/" + LONG)


@case
def mkdir_eacces_other(d):
    os.chmod(d, 0o755)
    return as_other(lambda: os.mkdir(d + "/s"))


@case
def dir_nlink_subdirs(d):
    os.mkdir(d + "/s")
    os.mkdir(d + "/s/a")
    os.mkdir(d + "/s/b")
    put(d + "/s/f")
    os.symlink("f", d + "/s/l")
    os.mkdir(d + "/s/a/deeper")
    return "ok nlink=%d" % os.stat(d + "/s").st_nlink


@case
def rmdir_ok(d):
    os.mkdir(d + "/s")
    n = os.stat(d).st_nlink
    t = times(d)
    tick()
    os.rmdir(d + "/s")
    return "ok parent_nlink=%+d %s" % (os.stat(d).st_nlink - n, changed(t, d, "p"))


@case
def rmdir_nonempty(d):
    os.mkdir(d + "/s")
    put(d + "/s/f")
    return attempt(os.rmdir, d + "/s")


@case
def rmdir_file(d):
    put(d + "/f")
    return attempt(os.rmdir, d + "/f")


@case
def rmdir_noent(d):
    return attempt(os.rmdir, d + "/nope")


@case
def rmdir_dot(d):
    os.mkdir(d + "/s")
    return attempt(os.rmdir, d + "/s/.")


@case
def rmdir_dotdot(d):
    os.mkdir(d + "/s")
    return attempt(os.rmdir, d + "/s/..")


@case
def rmdir_open_fstat(d):
    os.mkdir(d + "/s")
    fd = os.open(d + "/s", os.O_RDONLY)
    os.rmdir(d + "/s")
    st = os.fstat(fd)
    os.close(fd)
    return "ok nlink=%d" % st.st_nlink

# ---- symlink(2), readlink(2) ----


@case
def symlink_new(d):
    t = times(d)
    tick()
    os.symlink("some/target", d + "/l")
    st = os.lstat(d + "/l")
    return "ok %s mode=%o size=%d nlink=%d %s" % (os.readlink(d + "/l"), st.st_mode, st.st_size,
                                                  st.st_nlink, changed(t, d, "p"))


@case
def symlink_exists(d):
    put(d + "/f")
    return attempt(os.symlink, "x", d + "/f")


@case
def symlink_noent_parent(d):
    return attempt(os.symlink, "x", d + "/nodir/l")


@case
def symlink_nametoolong(d):
    return attempt(os.symlink, "x", d + "/" + LONG)


@case
def symlink_long_target(d):
    r = attempt(os.symlink, "t" * 4095, d + "/l")
    return r + (" len=%d" % len(os.readlink(d + "/l")) if r == "ok" else "")


@case
def symlink_follow(d):
    put(d + "/f", b"abc")
    os.symlink("f", d + "/l")
    return "ok %r %s" % (get(d + "/l"), stat.S_ISREG(os.stat(d + "/l").st_mode))


@case
def readlink_file(d):
    put(d + "/f")
    return attempt(os.readlink, d + "/f")


@case
def readlink_noent(d):
    return attempt(os.readlink, d + "/nope")


@case
def stat_symlink_loop(d):
    os.symlink("l", d + "/l")
    return attempt(os.stat, d + "/l")

# ---- chmod(2) ----


@case
def chmod_ok(d):
    put(d + "/f", b"abc")
    t = times(d + "/f")
    tick()
    os.chmod(d + "/f", 0o4711)
    return "ok mode=%o %s" % (os.stat(d + "/f").st_mode, changed(t, d + "/f"))


@case
def chmod_dir(d):
    os.mkdir(d + "/s")
    t = times(d + "/s")
    tick()
    os.chmod(d + "/s", 0o1700)
    return "ok mode=%o %s" % (os.stat(d + "/s").st_mode, changed(t, d + "/s"))


@case
def chmod_eperm_other(d):
    put(d + "/f", b"abc", 0o666)
    return as_other(lambda: os.chmod(d + "/f", 0o777))


@case
def chmod_owner_other(d):
    put(d + "/f", b"abc", 0o644)
    os.chown(d + "/f", OTHER, OTHER)
    return as_other(lambda: os.chmod(d + "/f", 0o600)) + " mode=%o" % os.stat(d + "/f").st_mode


@case
def chmod_sgid_nonmember(d):
    put(d + "/f", b"abc", 0o644)
    os.chown(d + "/f", OTHER, 0)
    r = as_other(lambda: os.chmod(d + "/f", 0o2755))
    return r + " mode=%o" % os.stat(d + "/f").st_mode


@case
def chmod_noent(d):
    return attempt(os.chmod, d + "/nope", 0o644)

# ---- chown(2), lchown(2) ----


@case
def chown_ok(d):
    put(d + "/f", b"abc")
    t = times(d + "/f")
    tick()
    os.chown(d + "/f", 1, 2)
    st = os.stat(d + "/f")
    return "ok %d:%d %s" % (st.st_uid, st.st_gid, changed(t, d + "/f"))


@case
def chown_clears_suid(d):
    put(d + "/f", b"abc")
    os.chmod(d + "/f", 0o6755)
    os.chown(d + "/f", 1, 1)
    return "ok mode=%o" % os.stat(d + "/f").st_mode


@case
def chown_clears_suid_sgid_no_gexec(d):
    put(d + "/f", b"abc")
    os.chmod(d + "/f", 0o6745)
    os.chown(d + "/f", 1, 1)
    return "ok mode=%o" % os.stat(d + "/f").st_mode


@case
def chown_dir_keeps_sgid(d):
    os.mkdir(d + "/s")
    os.chmod(d + "/s", 0o2755)
    os.chown(d + "/s", 1, 1)
    return "ok mode=%o" % os.stat(d + "/s").st_mode


@case
def chown_noop(d):
    put(d + "/f", b"abc")
    t = times(d + "/f")
    tick()
    os.chown(d + "/f", -1, -1)
    return "ok " + changed(t, d + "/f")


@case
def chown_eperm_other(d):
    put(d + "/f", b"abc", 0o666)
    return as_other(lambda: os.chown(d + "/f", OTHER, OTHER))


@case
def chown_owner_group_other(d):
    put(d + "/f", b"abc", 0o644)
    os.chown(d + "/f", OTHER, 0)
    r = as_other(lambda: os.chown(d + "/f", -1, OTHER))
    return r + " gid=%d" % os.stat(d + "/f").st_gid


@case
def chown_owner_foreign_group_other(d):
    put(d + "/f", b"abc", 0o644)
    os.chown(d + "/f", OTHER, OTHER)
    return as_other(lambda: os.chown(d + "/f", -1, 0))


@case
def lchown_symlink(d):
    put(d + "/f")
    os.symlink("f", d + "/l")
    os.lchown(d + "/l", 3, 4)
    a, b = os.lstat(d + "/l"), os.stat(d + "/f")
    return "ok l=%d:%d f=%d:%d" % (a.st_uid, a.st_gid, b.st_uid, b.st_gid)

# ---- utimensat(2) ----


@case
def utimens_set(d):
    put(d + "/f", b"abc")
    t = times(d + "/f")
    tick()
    utimensat(d + "/f", (1000000000, 5), (1100000000, 123456789))
    st = os.stat(d + "/f")
    return "ok m=%d %s" % (st.st_mtime_ns, changed(t, d + "/f")[2:])


@case
def atime_kept(d):
    put(d + "/f", b"abc")
    utimensat(d + "/f", (1000000000, 5), (1100000000, 7))
    return "ok a=%d" % os.stat(d + "/f").st_atime_ns


@case
def utimens_now(d):
    put(d + "/f", b"abc")
    utimensat(d + "/f", (1000000000, 0), (1000000000, 0))
    t = times(d + "/f")
    tick()
    utimensat(d + "/f", UTIME_NOW, UTIME_NOW)
    return "ok " + changed(t, d + "/f")


@case
def utimens_omit(d):
    put(d + "/f", b"abc")
    t = times(d + "/f")
    tick()
    utimensat(d + "/f", UTIME_OMIT, UTIME_OMIT)
    return "ok " + changed(t, d + "/f")


@case
def utimens_omit_mtime(d):
    put(d + "/f", b"abc")
    t = times(d + "/f")
    tick()
    utimensat(d + "/f", (1000000000, 0), UTIME_OMIT)
    return "ok " + changed(t, d + "/f")


@case
def utimens_symlink_nofollow(d):
    put(d + "/f")
    os.symlink("f", d + "/l")
    utimensat(d + "/l", (1000000000, 0), (1000000000, 0), AT_SYMLINK_NOFOLLOW)
    return "ok l=%d f_old=%s" % (os.lstat(d + "/l").st_mtime_ns // 10**9,
                                 os.stat(d + "/f").st_mtime_ns // 10**9 == 1000000000)


@case
def utimens_dir(d):
    os.mkdir(d + "/s")
    utimensat(d + "/s", (1000000000, 0), (1000000000, 1))
    return "ok m=%d" % os.stat(d + "/s").st_mtime_ns


@case
def utimens_einval(d):
    put(d + "/f")
    return attempt(utimensat, d + "/f", (0, 1000000000), (0, 0))


@case
def utimens_noent(d):
    return attempt(utimensat, d + "/nope", UTIME_NOW, UTIME_NOW)


@case
def utimens_now_other_writable(d):
    put(d + "/f", b"abc", 0o666)
    return as_other(lambda: utimensat(d + "/f", UTIME_NOW, UTIME_NOW))


@case
def utimens_now_other_readonly(d):
    put(d + "/f", b"abc", 0o644)
    return as_other(lambda: utimensat(d + "/f", UTIME_NOW, UTIME_NOW))


@case
def utimens_set_other(d):
    put(d + "/f", b"abc", 0o666)
    return as_other(lambda: utimensat(d + "/f", (1, 0), (1, 0)))

# ---- stat(2) ----


@case
def stat_file(d):
    put(d + "/f", b"12345", 0o640)
    st = os.stat(d + "/f")
    return "ok mode=%o nlink=%d uid=%d gid=%d size=%d" % (st.st_mode, st.st_nlink, st.st_uid,
                                                          st.st_gid, st.st_size)


@case
def stat_ino(d):
    put(d + "/a")
    put(d + "/b")
    os.mkdir(d + "/s")
    inos = [os.stat(d + "/" + n).st_ino for n in ("a", "b", "s")]
    fd = os.open(d + "/a", os.O_RDONLY)
    same = os.fstat(fd).st_ino == inos[0]
    os.close(fd)
    listed = {e.name: e.inode() for e in os.scandir(d)}
    return "ok distinct=%s fstat=%s dino=%s" % (len(set(inos)) == 3, same,
                                                [listed[n] for n in ("a", "b", "s")] == inos)


@case
def stat_noent(d):
    return attempt(os.stat, d + "/nope")


@case
def stat_notdir(d):
    put(d + "/f")
    return attempt(os.stat, d + "/f/x")


@case
def stat_nametoolong(d):
    return attempt(os.stat, d + "/" + LONG)


@case
def stat_empty_dir(d):
    os.mkdir(d + "/s")
    st = os.stat(d + "/s")
    return "ok nlink=%d dot_ino=%s" % (st.st_nlink, os.stat(d + "/s/.").st_ino == st.st_ino)


@case
def stat_dotdot(d):
    os.mkdir(d + "/s")
    return "ok %s" % (os.stat(d + "/s/..").st_ino == os.stat(d).st_ino)

# ---- access(2) ----


@case
def access_root_x_noexec(d):
    put(d + "/f", b"", 0o644)
    return "ok" if os.access(d + "/f", os.X_OK) else "EACCES"


@case
def access_root_x_someexec(d):
    put(d + "/f", b"", 0o744)
    return "ok" if os.access(d + "/f", os.X_OK) else "EACCES"


@case
def access_other(d):
    put(d + "/f", b"", 0o604)
    return as_other(lambda: "R=%s W=%s X=%s" % (os.access(d + "/f", os.R_OK),
                                                os.access(d + "/f", os.W_OK),
                                                os.access(d + "/f", os.X_OK)))


@case
def access_noent(d):
    return "ok" if os.access(d + "/nope", os.F_OK) else "ENOENT"

# ---- ctime on metadata changes of the object itself ----


@case
def ctime_on_rename_target_replaced_dir(d):
    os.mkdir(d + "/s")
    put(d + "/s/a", b"x")
    put(d + "/s/b", b"y")
    t = times(d + "/s")
    tick()
    os.rename(d + "/s/a", d + "/s/b")
    return "ok " + changed(t, d + "/s", "p")

# ---- more: what a removed or open object does, modes, permissions, paths ----


@case
def create_fails_parent_times(d):
    put(d + "/f")
    os.mkdir(d + "/s")
    t = times(d)
    tick()
    r = [attempt(os.open, d + "/f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
         attempt(os.mkdir, d + "/s"), attempt(os.unlink, d + "/nope"),
         attempt(os.rename, d + "/nope", d + "/x"), attempt(os.rmdir, d + "/f")]
    return " ".join(r) + " " + changed(t, d, "p")


@case
def mkdir_in_removed_dir(d):
    os.mkdir(d + "/s")
    fd = os.open(d + "/s", os.O_RDONLY)
    os.rmdir(d + "/s")
    try:
        r = [attempt(os.mkdir, "x", dir_fd=fd),
             attempt(lambda: os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))),
             attempt(os.symlink, "t", "l", dir_fd=fd)]
    finally:
        os.close(fd)
    return " ".join(r) + " s=" + attempt(os.lstat, d + "/s")


@case
def unlinked_open_file_ops(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_RDWR)
    os.unlink(d + "/f")
    r = [attempt(os.write, fd, b"XY"), attempt(os.ftruncate, fd, 5), attempt(os.fchmod, fd, 0o600)]
    st = os.fstat(fd)
    data = os.pread(fd, 10, 0)
    os.close(fd)
    return "%s size=%d mode=%o %r f=%s" % (" ".join(r), st.st_size, st.st_mode, data,
                                           attempt(os.lstat, d + "/f"))


@case
def replaced_open_file_write(d):
    put(d + "/a", b"new")
    put(d + "/b", b"old")
    fd = os.open(d + "/b", os.O_RDWR)
    os.rename(d + "/a", d + "/b")
    os.pwrite(fd, b"OLD", 0)
    data = os.pread(fd, 10, 0)
    os.close(fd)
    return "ok fd=%r b=%r" % (data, get(d + "/b"))


@case
def creat_mode_suid(d):
    fd = os.open(d + "/f", os.O_CREAT | os.O_WRONLY, 0o4755)
    os.close(fd)
    return "ok mode=%o" % os.stat(d + "/f").st_mode


@case
def mkdir_sticky(d):
    os.mkdir(d + "/s", 0o1777)
    return "ok mode=%o" % os.stat(d + "/s").st_mode


@case
def futimens_fd(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_RDONLY)
    os.utime(fd, ns=(1000000000000000000, 1000000000000000001))
    st = os.fstat(fd)
    os.close(fd)
    return "ok m=%d" % st.st_mtime_ns


@case
def fchown_fchmod_fd(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_RDONLY)
    os.fchmod(fd, 0o600)
    os.fchown(fd, 5, 6)
    st = os.fstat(fd)
    os.close(fd)
    return "ok mode=%o %d:%d" % (st.st_mode, st.st_uid, st.st_gid)


@case
def chmod_via_symlink(d):
    put(d + "/f", b"abc", 0o644)
    os.symlink("f", d + "/l")
    os.chmod(d + "/l", 0o600)
    os.truncate(d + "/l", 1)
    return "ok f=%o l=%o %r" % (os.stat(d + "/f").st_mode, os.lstat(d + "/l").st_mode,
                                get(d + "/f"))


@case
def rename_symlink(d):
    os.symlink("tgt", d + "/l")
    os.rename(d + "/l", d + "/m")
    return "ok %s %o" % (os.readlink(d + "/m"), os.lstat(d + "/m").st_mode)


@case
def rename_over_symlink(d):
    put(d + "/a", b"A")
    os.symlink("a", d + "/l")
    os.rename(d + "/a", d + "/l")
    return "ok %o %r" % (os.lstat(d + "/l").st_mode, get(d + "/l"))


@case
def trailing_slash(d):
    put(d + "/f")
    os.mkdir(d + "/s")
    r = [attempt(os.stat, d + "/f/"), attempt(os.rename, d + "/f", d + "/g/"),
         attempt(os.open, d + "/s/", os.O_CREAT | os.O_WRONLY, 0o644),
         attempt(os.unlink, d + "/f/"), attempt(os.rmdir, d + "/s/")]
    return " ".join(r)


@case
def eloop_component(d):
    os.symlink("l", d + "/l")
    return attempt(os.stat, d + "/l/x")


@case
def path_too_long(d):
    return attempt(os.stat, d + "/" + "/".join(["x" * 200] * 25))


@case
def statvfs_namemax(d):
    return "ok %d" % os.statvfs(d).f_namemax


@case
def readdir_types(d):
    put(d + "/f")
    os.mkdir(d + "/s")
    os.symlink("f", d + "/l")
    return "ok " + " ".join("%s:%d%d%d" % (e.name, e.is_file(follow_symlinks=False),
                                           e.is_dir(follow_symlinks=False), e.is_symlink())
                            for e in sorted(os.scandir(d), key=lambda e: e.name))


@case
def rmdir_nonempty_subdir_nlink(d):
    os.mkdir(d + "/s")
    os.mkdir(d + "/s/t")
    r = attempt(os.rmdir, d + "/s")
    return "%s nlink=%d" % (r, os.stat(d + "/s").st_nlink)


@case
def symlink_eacces_other(d):
    os.chmod(d, 0o755)
    return as_other(lambda: os.symlink("x", d + "/l"))


@case
def rmdir_sticky_other(d):
    os.chmod(d, 0o1777)
    os.mkdir(d + "/s", 0o777)
    return as_other(lambda: os.rmdir(d + "/s"))


@case
def rename_sticky_other(d):
    os.chmod(d, 0o1777)
    put(d + "/a", b"", 0o666)
    return as_other(lambda: os.rename(d + "/a", d + "/b"))


@case
def rename_dir_unwritable_other(d):
    os.chmod(d, 0o777)
    os.mkdir(d + "/x", 0o777)
    os.mkdir(d + "/x/s", 0o755)   # root's: the other user cannot update its ".."
    os.mkdir(d + "/y", 0o777)
    return as_other(lambda: os.rename(d + "/x/s", d + "/y/s"))


@case
def open_trunc_eacces_other(d):
    put(d + "/f", b"abc", 0o644)
    return as_other(lambda: os.open(d + "/f", os.O_RDONLY | os.O_TRUNC) and None)


@case
def write_after_chmod_000(d):
    put(d + "/f", b"abc", 0o666)

    def f():
        fd = os.open(d + "/f", os.O_RDWR)
        os.chmod(d + "/f", 0) if os.getuid() == 0 else None
        os.write(fd, b"Z")
        os.close(fd)
    r = as_other(f)
    return r + " %r" % get(d + "/f")


@case
def access_other_dir(d):
    os.mkdir(d + "/s", 0o751)
    return as_other(lambda: "R=%s W=%s X=%s" % (os.access(d + "/s", os.R_OK),
                                                os.access(d + "/s", os.W_OK),
                                                os.access(d + "/s", os.X_OK)))


@case
def rename_dir_cross_parent_times(d):
    os.mkdir(d + "/x")
    os.mkdir(d + "/y")
    os.mkdir(d + "/x/s")
    tx, ty = times(d + "/x"), times(d + "/y")
    tick()
    os.rename(d + "/x/s", d + "/y/s")
    return "ok %s %s dotdot=%s" % (changed(tx, d + "/x", "s"), changed(ty, d + "/y", "t"),
                                   os.stat(d + "/y/s/..").st_ino == os.stat(d + "/y").st_ino)


@case
def ctime_same_value_changes(d):
    put(d + "/f", b"abc", 0o644)
    out = []
    for op in (lambda: os.chmod(d + "/f", 0o644), lambda: os.chown(d + "/f", 0, 0),
               lambda: os.utime(d + "/f", ns=(10**18, 10**18)),
               lambda: os.utime(d + "/f", ns=(10**18, 10**18))):
        t = times(d + "/f")
        tick()
        op()
        out.append(changed(t, d + "/f"))
    return "ok " + " ".join(out)


@case
def unlink_open_ctime(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_RDONLY)
    t = os.fstat(fd)
    tick()
    os.unlink(d + "/f")
    st = os.fstat(fd)
    os.close(fd)
    return "ok c%s" % ("+" if st.st_ctime_ns != t.st_ctime_ns else "=")


@case
def rename_onto_ancestor(d):
    os.mkdir(d + "/a")
    os.mkdir(d + "/a/b")
    return attempt(os.rename, d + "/a/b", d + "/a")


@case
def mkdir_mode_zero(d):
    os.mkdir(d + "/s", 0)
    fd = os.open(d + "/f", os.O_CREAT | os.O_RDWR, 0)
    os.write(fd, b"ok")
    os.close(fd)
    return "ok %o %o %r" % (os.stat(d + "/s").st_mode, os.stat(d + "/f").st_mode, get(d + "/f"))


@case
def o_tmpfile(d):
    return attempt(lambda: os.close(os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600)))


@case
def rename_file_times_of_replaced_open(d):
    put(d + "/a", b"A")
    put(d + "/b", b"B")
    fd = os.open(d + "/b", os.O_RDONLY)
    t = os.fstat(fd)
    tick()
    os.rename(d + "/a", d + "/b")
    st = os.fstat(fd)
    os.close(fd)
    return "ok c%s" % ("+" if st.st_ctime_ns != t.st_ctime_ns else "=")


# ---- mknod(2) of a regular file, copy_file_range(2), seekdir(3), O_PATH, posix_fallocate(3):
# what libfuse's test_syscalls also checks ----


@case
def mknod_reg(d):
    os.mknod(d + "/f", stat.S_IFREG | 0o640)
    os.mknod(d + "/g", 0o600)               # no type: a regular file (mknod(2))
    st, sg = os.stat(d + "/f"), os.stat(d + "/g")
    return "ok %o %o size=%d nlink=%d" % (st.st_mode, sg.st_mode, st.st_size, st.st_nlink)


@case
def mknod_exists(d):
    put(d + "/f")
    return attempt(os.mknod, d + "/f", stat.S_IFREG | 0o600)


@case
def copy_file_range_unflushed(d):
    # the source is still open for writing: its bytes were never flushed
    a = os.open(d + "/a", os.O_CREAT | os.O_RDWR, 0o644)
    os.write(a, b"abcdefghijklmnopqrstuvwxyz")
    b = os.open(d + "/b", os.O_CREAT | os.O_WRONLY, 0o644)
    n = os.copy_file_range(a, b, 26, 0, 0)
    m = os.copy_file_range(a, b, 10, 20, 30)  # past the end of the source: 6 bytes
    os.close(a)
    os.close(b)
    return "ok %d %d %r" % (n, m, get(d + "/b"))


class dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


@case
def seekdir_back(d):
    # telldir before every entry, read to the end, then seekdir back to each, last first
    os.mkdir(d + "/s")
    for n in ("f1", "f2", "f3"):
        put(d + "/s/" + n)
    libc.opendir.restype = libc.readdir.restype = ctypes.c_void_p
    libc.readdir.argtypes = libc.telldir.argtypes = libc.closedir.argtypes = [ctypes.c_void_p]
    libc.telldir.restype = ctypes.c_long
    libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
    dp = libc.opendir((d + "/s").encode())
    seen = []
    while True:
        off = libc.telldir(dp)
        e = libc.readdir(dp)
        if not e:
            break
        seen.append((off, dirent.from_address(e).d_name))
    bad = 0
    for off, name in reversed(seen):
        libc.seekdir(dp, off)
        e = libc.readdir(dp)
        bad += not e or dirent.from_address(e).d_name != name
    libc.closedir(dp)
    return "ok entries=%d wrong=%d" % (len(seen), bad)


@case
def opath_unlinked_fstat(d):
    put(d + "/f", b"abc", 0o640)
    fd = os.open(d + "/f", os.O_PATH)
    os.unlink(d + "/f")
    st = os.fstat(fd)
    os.close(fd)
    return "ok nlink=%d size=%d mode=%o" % (st.st_nlink, st.st_size, st.st_mode)


@case
def posix_fallocate_grows(d):
    # glibc writes zeros itself where the filesystem has no fallocate(2)
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_RDWR)
    os.posix_fallocate(fd, 0, 100)
    os.close(fd)
    return "ok size=%d %r" % (os.stat(d + "/f").st_size, get(d + "/f")[:5])


# ---- what lsmfs does not keep ----


@case
def link_hard(d):
    put(d + "/f")
    return attempt(os.link, d + "/f", d + "/g")


def special(path):
    """What stat and a listing say of a special file: type, permissions, st_rdev, size, d_type."""
    st = os.lstat(path)
    d, name = os.path.split(path)
    ent = [e for e in os.scandir(d) if e.name == name][0]
    kinds = [k for k, f in (("file", ent.is_file), ("dir", ent.is_dir),
                            ("link", ent.is_symlink)) if f(follow_symlinks=False)]
    return "type=%o perm=%o rdev=%d,%d size=%d listed=%s" % (
        stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), os.major(st.st_rdev),
        os.minor(st.st_rdev), st.st_size, ",".join(kinds) or "other")


@case
def mknod_fifo(d):
    r = attempt(os.mkfifo, d + "/p", 0o640)
    if r != "ok":
        return r
    # bytes pass through it (the kernel's pipe, not the file system)
    rfd = os.open(d + "/p", os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(d + "/p", os.O_WRONLY)
    os.write(wfd, b"through")
    got = os.read(rfd, 100)
    os.close(wfd)
    os.close(rfd)
    return "ok %s read=%r" % (special(d + "/p"), got)


@case
def mknod_chr(d):
    r = attempt(os.mknod, d + "/c", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    return r if r != "ok" else "ok " + special(d + "/c")


@case
def mknod_blk(d):
    r = attempt(os.mknod, d + "/b", stat.S_IFBLK | 0o660, os.makedev(7, 200))
    return r if r != "ok" else "ok " + special(d + "/b")


@case
def mknod_sock(d):
    r = attempt(os.mknod, d + "/s", stat.S_IFSOCK | 0o600)
    return r if r != "ok" else "ok " + special(d + "/s")


@case
def bind_unix_socket(d):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        r = attempt(s.bind, d + "/s")
        if r != "ok":
            return r
        s.listen(1)
        c.connect(d + "/s")
        a, _ = s.accept()
        c.send(b"hello")
        got = a.recv(10)
        a.close()
        return "ok %s got=%r" % (special(d + "/s"), got)
    finally:
        c.close()
        s.close()


@case
def special_rename_unlink(d):
    os.mkfifo(d + "/p")
    os.rename(d + "/p", d + "/q")
    r = special(d + "/q")
    os.unlink(d + "/q")
    return "ok %s gone=%s" % (r, not os.path.exists(d + "/q"))


@case
def fallocate_direct(d):
    put(d + "/f", b"abc")
    fd = os.open(d + "/f", os.O_RDWR)
    r = libc.fallocate(fd, 0, ctypes.c_int64(0), ctypes.c_int64(100))
    e = ctypes.get_errno()
    os.close(fd)
    return "ok" if r == 0 else errno.errorcode.get(e, str(e))


def run(root, names):
    os.umask(UMASK)
    os.chmod(root, 0o755)
    chosen = [c for c in CASES if not names or c.__name__ in names]
    reach = as_other(lambda: os.stat(root) and None)
    if reach != "ok":
        # every case as another user would fail alike on both sides and prove nothing
        sys.stderr.write("conformance.py: uid %d cannot reach %s (%s): make every directory "
                         "above it searchable\n" % (OTHER, root, reach))
        return 2
    for i, c in enumerate(chosen):
        d = os.path.join(root, "c%03d" % i)
        os.mkdir(d)
        os.chmod(d, 0o755)
        try:
            out = c(d)
        except OSError as e:
            out = "SETUP-FAILED " + ename(e)
        except Exception as e:  # noqa: BLE001 - shown as the outcome
            out = "SETUP-FAILED " + type(e).__name__ + ": " + str(e)
        print("CASE %s %s" % (c.__name__, out), flush=True)
    return 0


def load(path):
    res = {}
    with open(path) as f:
        for line in f:
            if line.startswith("CASE "):
                name, _, out = line[5:].rstrip("\n").partition(" ")
                res[name] = out
    return res


def compare(lpath, tpath):
    lsm, tmp = load(lpath), load(tpath)
    names = sorted(set(lsm) | set(tmp))
    same = documented = bugs = broken = 0
    failures = []
    for n in names:
        a, b = lsm.get(n, "(missing)"), tmp.get(n, "(missing)")
        if any(x in a + b for x in ("SETUP-FAILED", "EXC:", "(missing)")):
            broken += 1
            failures.append(n)
            print("BROKEN %s: lsmfs %s | tmpfs %s" % (n, a, b))
        elif a == b:
            same += 1
            if n in DOCUMENTED or n in KNOWN_BUGS:
                print("note: %s now matches tmpfs: drop it from the lists" % n)
        elif n in DOCUMENTED:
            documented += 1
            print("documented %s: lsmfs %s | tmpfs %s  [%s]" % (n, a, b, DOCUMENTED[n]))
        elif n in KNOWN_BUGS:
            bugs += 1
            print("known bug %s: lsmfs %s | tmpfs %s  [%s]" % (n, a, b, KNOWN_BUGS[n]))
        else:
            failures.append(n)
            print("DIFFERS %s: lsmfs %s | tmpfs %s" % (n, a, b))
    print("# lsmfs vs tmpfs: %d cases, %d same, %d differ (%d documented, %d known bugs, "
          "%d undocumented)%s" % (len(names), same, len(names) - same - broken, documented, bugs,
                                  len(failures) - broken,
                                  ", %d broken" % broken if broken else ""))
    return 1 if failures else 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "run":
        return run(argv[2], set(argv[3:]))
    if len(argv) == 4 and argv[1] == "compare":
        return compare(argv[2], argv[3])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
