#!/usr/bin/env bats
# t25 — extended attributes (issue 15): setfattr/getfattr, the setxattr(2) flags and errnos as on
# ext4 and tmpfs, namespaces, attributes following their file through renames and leaving with it,
# a remount, and cp -a / rsync -X copying them in.

load helper

setup() {
    common_setup
    mount_fs
    umask 022
}

teardown() {
    common_teardown
}

# xattr_errno PATH NAME VALUE FLAGS: the errno name os.setxattr gives ("ok" when it succeeds).
xattr_errno() {
    python3 - "$@" <<'EOF'
import errno, os, sys
path, name, value, flags = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
try:
    os.setxattr(path, name, value.encode(), flags)
    print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
EOF
}

@test "setfattr/getfattr round trip: text, binary with NUL bytes, empty, a 64 KiB value" {
    echo x >"$MNT/f"
    setfattr -n user.text -v hello "$MNT/f"
    assert_eq "$(getfattr --only-values -n user.text "$MNT/f")" hello
    setfattr -n user.bin -v 0x00ff00017f "$MNT/f"
    assert_eq "$(getfattr -e hex -n user.bin "$MNT/f" | grep ^user.bin)" "user.bin=0x00ff00017f"
    setfattr -n user.empty "$MNT/f"
    assert_eq "$(python3 -c 'import os,sys; print(repr(os.getxattr(sys.argv[1], "user.empty")))' "$MNT/f")" "b''"
    python3 - "$MNT/f" <<'EOF'
import os, sys
v = os.urandom(65536)
os.setxattr(sys.argv[1], "user.big", v)
assert os.getxattr(sys.argv[1], "user.big") == v
EOF
    # the file's bytes are untouched
    assert_eq "$(cat "$MNT/f")" x
    assert_eq "$(stat -c %s "$MNT/f")" 2
}

@test "XATTR_CREATE, XATTR_REPLACE, ENODATA, ERANGE probing and the size limits" {
    echo x >"$MNT/f"
    assert_eq "$(xattr_errno "$MNT/f" user.a 1 1)" ok          # XATTR_CREATE, new
    assert_eq "$(xattr_errno "$MNT/f" user.a 2 1)" EEXIST      # XATTR_CREATE, exists
    assert_eq "$(xattr_errno "$MNT/f" user.b 2 2)" ENODATA     # XATTR_REPLACE, absent
    assert_eq "$(xattr_errno "$MNT/f" user.a 3 2)" ok          # XATTR_REPLACE, exists
    assert_eq "$(getfattr --only-values -n user.a "$MNT/f")" 3
    assert_eq "$(xattr_errno "$MNT/f" user.a 4 0)" ok          # no flag: either way
    assert_eq "$(getfattr --only-values -n user.a "$MNT/f")" 4
    python3 - "$MNT/f" <<'EOF'
import errno, os, sys
f = sys.argv[1]
def err(fn, *a):
    try:
        fn(*a)
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"
assert err(os.getxattr, f, "user.none") == "ENODATA", err(os.getxattr, f, "user.none")
assert err(os.removexattr, f, "user.none") == "ENODATA"
# size 0 probes the length; a buffer too small is ERANGE
os.setxattr(f, "user.ten", b"0123456789")
lib = __import__("ctypes").CDLL(None, use_errno=True)
import ctypes
assert lib.getxattr(f.encode(), b"user.ten", None, 0) == 10
buf = ctypes.create_string_buffer(4)
assert lib.getxattr(f.encode(), b"user.ten", buf, 4) == -1 and ctypes.get_errno() == errno.ERANGE
n = lib.listxattr(f.encode(), None, 0)
assert n == len(b"user.a\0user.ten\0"), n
assert lib.listxattr(f.encode(), buf, 4) == -1 and ctypes.get_errno() == errno.ERANGE
# limits as on ext4 and tmpfs: value up to 64 KiB, name up to 255 bytes
assert err(os.setxattr, f, "user.v", b"x" * 65536) == "ok"
assert err(os.setxattr, f, "user.v", b"x" * 65537) == "E2BIG"
assert err(os.setxattr, f, "user." + "n" * 250, b"") == "ok"
assert err(os.setxattr, f, "user." + "n" * 251, b"") == "ERANGE"
assert err(os.removexattr, f, "user.ten") == "ok"
assert err(os.getxattr, f, "user.ten") == "ENODATA"
EOF
}

@test "listxattr; namespaces: user, trusted, security kept; system.posix_acl_* and others EOPNOTSUPP" {
    echo x >"$MNT/f"
    setfattr -n user.one -v 1 "$MNT/f"
    setfattr -n user.two -v 2 "$MNT/f"
    setfattr -n trusted.t -v 3 "$MNT/f"
    setfattr -n security.s -v 4 "$MNT/f"
    assert_eq "$(getfattr -m - --absolute-names "$MNT/f" | grep -v '^#' | grep . | sort | tr '\n' ' ')" \
        "security.s trusted.t user.one user.two "
    run setfattr -n system.posix_acl_access -v 0x02000000 "$MNT/f"
    [ "$status" -ne 0 ]
    [[ $output == *"Operation not supported"* ]]
    run getfattr -n system.posix_acl_access "$MNT/f"
    [[ $output == *"Operation not supported"* ]]
    run setfattr -n other.x -v 1 "$MNT/f"
    [[ $output == *"Operation not supported"* ]]
    # an unprivileged user sees neither trusted.* nor may set it
    if command -v setpriv >/dev/null; then
        chmod 666 "$MNT/f"
        assert_eq "$(setpriv --reuid=65534 --regid=65534 --clear-groups getfattr -m - --absolute-names "$MNT/f" | grep -c trusted)" 0
        run setpriv --reuid=65534 --regid=65534 --clear-groups setfattr -n trusted.u -v 1 "$MNT/f"
        [ "$status" -ne 0 ]
    fi
}

@test "directories and the root hold attributes; user.* on a symlink is EPERM, trusted.* works" {
    mkdir "$MNT/d"
    setfattr -n user.d -v dv "$MNT/d"
    setfattr -n user.root -v rv "$MNT"
    assert_eq "$(getfattr --only-values -n user.d "$MNT/d")" dv
    assert_eq "$(getfattr --only-values -n user.root "$MNT")" rv
    echo x >"$MNT/target"
    ln -s target "$MNT/ln"
    run setfattr -h -n user.l -v 1 "$MNT/ln"
    [ "$status" -ne 0 ]
    [[ $output == *"Operation not permitted"* ]]
    setfattr -h -n trusted.l -v lv "$MNT/ln"
    assert_eq "$(getfattr -h --only-values -n trusted.l "$MNT/ln")" lv
    run getfattr -n trusted.l "$MNT/target"     # follows the link: the target has none
    [ "$status" -ne 0 ]
    # an implicit directory (a key below it only) that gets an attribute stays once emptied
    mkdir -p "$MNT/i"
    echo y >"$MNT/i/k"
    setfattr -n user.i -v iv "$MNT/i"
    rm "$MNT/i/k"
    assert_eq "$(getfattr --only-values -n user.i "$MNT/i")" iv
}

@test "attributes survive a remount and never show in a listing" {
    echo x >"$MNT/f"
    mkdir "$MNT/d"
    setfattr -n user.a -v 1 "$MNT/f"
    setfattr -n user.b -v 2 "$MNT/d"
    setfattr -n user.c -v 3 "$MNT"
    remount
    assert_eq "$(getfattr --only-values -n user.a "$MNT/f")" 1
    assert_eq "$(getfattr --only-values -n user.b "$MNT/d")" 2
    assert_eq "$(getfattr --only-values -n user.c "$MNT")" 3
    assert_eq "$(ls -A "$MNT" | tr '\n' ' ')" "d f "
    assert_eq "$(ls -A "$MNT/d" | wc -l)" 0
    assert_eq "$(find "$MNT" | sort | tr '\n' ' ')" "$MNT $MNT/d $MNT/f "
    rmdir "$MNT/d"      # its own attributes do not make a directory non-empty
    assert_eq "$(ls -A "$MNT" | tr '\n' ' ')" "f "
}

@test "attributes travel with a file rename, over a target, and with RENAME_EXCHANGE" {
    echo a >"$MNT/a"
    echo b >"$MNT/b"
    setfattr -n user.who -v a "$MNT/a"
    setfattr -n user.onlyb -v b "$MNT/b"
    mv "$MNT/a" "$MNT/moved"
    assert_eq "$(getfattr --only-values -n user.who "$MNT/moved")" a
    echo a2 >"$MNT/a"
    assert_eq "$(getfattr -d "$MNT/a")" ""
    # over a target: the target's attributes go with it
    mv "$MNT/moved" "$MNT/b"
    assert_eq "$(getfattr -d --absolute-names "$MNT/b" | grep user | tr '\n' ' ')" 'user.who="a" '
    # exchange
    setfattr -n user.who -v c "$MNT/a"
    python3 - "$MNT/a" "$MNT/b" <<'EOF'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
if libc.renameat2(AT_FDCWD, sys.argv[1].encode(), AT_FDCWD, sys.argv[2].encode(), RENAME_EXCHANGE):
    raise OSError(ctypes.get_errno(), "renameat2")
EOF
    assert_eq "$(getfattr --only-values -n user.who "$MNT/a")" a
    assert_eq "$(getfattr --only-values -n user.who "$MNT/b")" c
    assert_eq "$(cat "$MNT/a")" a
    assert_eq "$(cat "$MNT/b")" a2
}

@test "attributes travel with a directory rename, for the directory and everything below it" {
    mkdir -p "$MNT/top/sub"
    echo f >"$MNT/top/f"
    echo g >"$MNT/top/sub/g"
    setfattr -n user.top -v t "$MNT/top"
    setfattr -n user.sub -v s "$MNT/top/sub"
    setfattr -n user.f -v f "$MNT/top/f"
    setfattr -n user.g -v g "$MNT/top/sub/g"
    mkdir "$MNT/dest"
    mv "$MNT/top" "$MNT/dest/new"
    assert_eq "$(getfattr --only-values -n user.top "$MNT/dest/new")" t
    assert_eq "$(getfattr --only-values -n user.sub "$MNT/dest/new/sub")" s
    assert_eq "$(getfattr --only-values -n user.f "$MNT/dest/new/f")" f
    assert_eq "$(getfattr --only-values -n user.g "$MNT/dest/new/sub/g")" g
    # nothing stays at the old paths
    mkdir -p "$MNT/top/sub"
    echo again >"$MNT/top/f"
    assert_eq "$(getfattr -d -R "$MNT/top" 2>&1)" ""
    remount
    assert_eq "$(getfattr --only-values -n user.g "$MNT/dest/new/sub/g")" g
    assert_eq "$(getfattr -d -R "$MNT/top" 2>&1)" ""
}

@test "attributes go with unlink and rmdir: a new file or directory of the same name has none" {
    echo x >"$MNT/f"
    setfattr -n user.a -v 1 "$MNT/f"
    rm "$MNT/f"
    echo y >"$MNT/f"
    assert_eq "$(getfattr -d "$MNT/f")" ""
    mkdir "$MNT/d"
    setfattr -n user.d -v 1 "$MNT/d"
    rmdir "$MNT/d"
    mkdir "$MNT/d"
    assert_eq "$(getfattr -d "$MNT/d")" ""
    remount
    assert_eq "$(getfattr -d "$MNT/f")" ""
    assert_eq "$(getfattr -d "$MNT/d")" ""
}

@test "a new attribute changes ctime, not mtime" {
    echo x >"$MNT/f"
    touch -d '2001-01-01 00:00:00' "$MNT/f"
    local m0 c0
    m0=$(stat -c %Y "$MNT/f")
    c0=$(stat -c %Z "$MNT/f")
    sleep 1.1
    setfattr -n user.a -v 1 "$MNT/f"
    assert_eq "$(stat -c %Y "$MNT/f")" "$m0"
    [ "$(stat -c %Z "$MNT/f")" -gt "$c0" ]
}

@test "cp -a and rsync -aX copy attributes in from a tmpfs" {
    require_root
    mount_tmpfs "$T/src" size=16m
    mkdir -p "$T/src/tree/sub"
    echo f >"$T/src/tree/f"
    echo g >"$T/src/tree/sub/g"
    setfattr -n user.f -v fv "$T/src/tree/f"
    setfattr -n user.bin -v 0x000102 "$T/src/tree/sub/g"
    setfattr -n user.dir -v dv "$T/src/tree/sub"
    cp -a "$T/src/tree" "$MNT/cp"
    rsync -aX "$T/src/tree/" "$MNT/rs/"
    for d in cp rs; do
        assert_eq "$(getfattr --only-values -n user.f "$MNT/$d/f")" fv
        assert_eq "$(getfattr -e hex -n user.bin "$MNT/$d/sub/g" | grep ^user)" "user.bin=0x000102"
        assert_eq "$(getfattr --only-values -n user.dir "$MNT/$d/sub")" dv
    done
    # and back out, unchanged
    mkdir "$T/src/back"
    rsync -aX "$MNT/rs/" "$T/src/back/"
    assert_eq "$(getfattr --only-values -n user.f "$T/src/back/f")" fv
}

@test "a write removes security.capability, also from a file written before (the kernel's S_NOSEC mark)" {
    command -v setcap >/dev/null || skip "setcap (libcap2-bin) not installed"
    printf 'one\n' >"$MNT/f"
    printf 'two\n' >>"$MNT/f"         # the kernel has seen f without capabilities
    setcap cap_net_raw+ep "$MNT/f"
    [ "$(getcap "$MNT/f" | awk '{ print $2 }')" = "cap_net_raw=ep" ]
    printf 'three\n' >>"$MNT/f"
    [ -z "$(getcap "$MNT/f")" ]
    [ "$(cat "$MNT/f")" = "$(printf 'one\ntwo\nthree')" ]
    # and on a file the kernel has just looked up, after a remount
    setcap cap_net_raw+ep "$MNT/f"
    unmount_fs
    mount_fs
    printf 'four\n' >>"$MNT/f"
    [ -z "$(getcap "$MNT/f")" ]
}
