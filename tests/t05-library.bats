#!/usr/bin/env bats
# t05 — liblsm as a library: the shared object exports exactly the API of lsm.h under the soname
# liblsm.so.1, and `make install` (from a clean tree, without building any test or benchmark) puts
# a library, header and pkg-config file that a program finds and runs with; uninstall removes them.
# No FUSE needed.

load helper

SO=$REPO/engine/liblsm.so

# The makes here are not part of the one running the suites (make test passes its flags down), and
# install where this file says, whatever the environment holds.
unset MAKEFLAGS MFLAGS MAKELEVEL DESTDIR PREFIX BINDIR LIBDIR INCDIR MANDIR PCDIR LDCONFIG

setup() {
    if [ ! -f "$SO" ]; then
        echo "$SO is not built: run make first" >&2
        return 1
    fi
}

# Writes to $1 a program that uses only lsm.h: open, put, get, close; it prints "apple = red".
write_prog() {
    cat >"$1" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <lsm.h>

int main(int argc, char **argv)
{
    lsm_db *db;
    void *val;
    size_t n;
    if (argc != 2 || lsm_open(argv[1], NULL, &db) != LSM_OK)
        return 1;
    if (lsm_put(db, "apple", 5, "red", 3) != LSM_OK || lsm_get(db, "apple", 5, &val, &n) != LSM_OK)
        return 2;
    printf("apple = %.*s\n", (int)n, (char *)val);
    free(val);
    return lsm_close(db) == LSM_OK ? 0 : 3;
}
EOF
}

# Names of the functions lsm.h declares, one a line: a declaration starts at column 0 with its
# type, and the first "(" on its line follows the function's name.
header_functions() {
    sed -nE 's/^([A-Za-z_][A-Za-z0-9_ *]*[ *])(lsm_[A-Za-z0-9_]+)\(.*/\2/p' "$REPO/engine/lsm.h" |
        LC_ALL=C sort -u
}

exported() {
    nm -D --defined-only "$SO" | awk '{ print $NF }' | LC_ALL=C sort -u
}

@test "liblsm.so exports no symbol outside the lsm_ prefix" {
    exported >"$BATS_TEST_TMPDIR/exported"
    [ -s "$BATS_TEST_TMPDIR/exported" ]
    if grep -v '^lsm_' "$BATS_TEST_TMPDIR/exported" >"$BATS_TEST_TMPDIR/bad"; then
        echo "liblsm.so exports $(wc -l <"$BATS_TEST_TMPDIR/bad") symbols outside lsm_*" \
             "(is the library built with -fvisibility=hidden?):" >&2
        sed 's/^/  /' "$BATS_TEST_TMPDIR/bad" >&2
        return 1
    fi
}

@test "every function lsm.h declares is marked LSM_API and exported by liblsm.so" {
    header_functions >"$BATS_TEST_TMPDIR/declared"
    grep -qx lsm_open "$BATS_TEST_TMPDIR/declared"     # the parse found the API at all
    [ "$(wc -l <"$BATS_TEST_TMPDIR/declared")" -ge 20 ]
    run grep -E '^[A-Za-z_][A-Za-z0-9_ *]*[ *]lsm_[A-Za-z0-9_]+\(' "$REPO/engine/lsm.h"
    [ "$status" -eq 0 ]
    unmarked=$(printf '%s\n' "$output" | grep -v '^LSM_API ' || true)
    if [ -n "$unmarked" ]; then
        printf 'declared in lsm.h without LSM_API:\n%s\n' "$unmarked" >&2
        return 1
    fi
    exported >"$BATS_TEST_TMPDIR/exported"
    missing=$(LC_ALL=C comm -23 "$BATS_TEST_TMPDIR/declared" "$BATS_TEST_TMPDIR/exported")
    if [ -n "$missing" ]; then
        printf 'declared in lsm.h but not exported by liblsm.so:\n%s\n' "$missing" >&2
        return 1
    fi
}

@test "liblsm.so exports nothing that lsm.h does not declare" {
    header_functions >"$BATS_TEST_TMPDIR/declared"
    exported >"$BATS_TEST_TMPDIR/exported"
    extra=$(LC_ALL=C comm -13 "$BATS_TEST_TMPDIR/declared" "$BATS_TEST_TMPDIR/exported")
    if [ -n "$extra" ]; then
        printf 'exported by liblsm.so but not declared in lsm.h:\n%s\n' "$extra" >&2
        return 1
    fi
}

@test "liblsm.so carries the soname liblsm.so.1" {
    run readelf -d "$SO"
    [ "$status" -eq 0 ]
    [[ $output == *"Library soname: [liblsm.so.1]"* ]]
}

@test "make install into DESTDIR from a clean tree builds no test and no other engine; a program built with pkg-config runs; uninstall removes it all" {
    command -v pkg-config >/dev/null || skip "pkg-config is not installed"
    T=$(mktemp -d "${BATS_TEST_TMPDIR:-/tmp}/lsm-install.XXXXXX")
    src=$T/src
    dest=$T/dest
    lib=$dest/usr/local/lib
    mkdir "$src" "$T/bin"
    cp -R "$REPO/Makefile" "$REPO/engine" "$REPO/fs" "$REPO/tools" "$REPO/man" "$REPO/tests" "$src/"
    make -s -C "$src" clean

    # A compiler that logs every command and refuses any source under tests/ (the cmocka suites,
    # their helpers, the benchmarks) and any mention of cmocka, LevelDB or RocksDB.
    realcc=$(command -v "${CC:-cc}")
    cat >"$T/bin/cc" <<EOF
#!/bin/sh
echo "\$*" >>"$T/cc.log"
case " \$* " in
*tests/* | *cmocka* | *leveldb* | *rocksdb*) echo "make install must not run: cc \$*" >&2; exit 1 ;;
esac
exec "$realcc" "\$@"
EOF
    chmod +x "$T/bin/cc"
    make -C "$src" -j"$(nproc)" install CC="$T/bin/cc" DESTDIR="$dest" PREFIX=/usr/local
    run grep -E 'tests/|cmocka|leveldb|rocksdb' "$T/cc.log"
    [ "$status" -eq 1 ]
    assert_eq "$(find "$src/tests" -name '*.o' | wc -l)" 0

    # exactly what install puts
    (cd "$dest" && find . \( -type f -o -type l \) | LC_ALL=C sort) >"$T/installed"
    cat >"$T/expected" <<'EOF'
./usr/local/bin/lsmctl
./usr/local/bin/lsmfs
./usr/local/include/lsm.h
./usr/local/lib/liblsm.a
./usr/local/lib/liblsm.so
./usr/local/lib/liblsm.so.1
./usr/local/lib/pkgconfig/liblsm.pc
./usr/local/share/man/man1/lsmctl.1
./usr/local/share/man/man1/lsmfs.1
./usr/local/share/man/man5/lsm-format.5
EOF
    diff "$T/expected" "$T/installed"
    assert_eq "$(readlink "$lib/liblsm.so")" liblsm.so.1

    # pkg-config over the staged tree: the sysroot maps /usr/local in liblsm.pc to $dest/usr/local
    export PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
    version=$(sed -n 's/.*define LSM_VERSION_STRING *"\([^"]*\)".*/\1/p' "$REPO/engine/lsm.h")
    assert_eq "$(pkg-config --modversion liblsm)" "$version"
    write_prog "$T/prog.c"
    # shellcheck disable=SC2046 # pkg-config prints a list of words
    "$realcc" -Wall -Werror -o "$T/prog" "$T/prog.c" $(pkg-config --cflags --libs liblsm)
    run env LD_LIBRARY_PATH="$lib" ldd "$T/prog"
    [[ $output == *"liblsm.so.1 => $lib/liblsm.so.1 "* ]]
    run env LD_LIBRARY_PATH="$lib" "$T/prog" "$T/db"
    [ "$status" -eq 0 ]
    assert_eq "$output" "apple = red"

    # the static library with Libs.private is enough too
    # shellcheck disable=SC2046
    "$realcc" -o "$T/prog-static" "$T/prog.c" $(pkg-config --cflags liblsm) \
        $(pkg-config --static --libs liblsm | sed "s|-llsm|$lib/liblsm.a|")
    run ldd "$T/prog-static"
    [[ $output != *liblsm* ]]
    run "$T/prog-static" "$T/db2"
    [ "$status" -eq 0 ]
    assert_eq "$output" "apple = red"

    make -C "$src" uninstall DESTDIR="$dest" PREFIX=/usr/local
    assert_eq "$(find "$dest" \( -type f -o -type l \))" ""
    rm -rf "$T"
}

@test "make install to the real root runs ldconfig: a program built with pkg-config runs at once (in a private mount namespace)" {
    require_root
    command -v unshare >/dev/null || skip "unshare is not installed"
    command -v pkg-config >/dev/null || skip "pkg-config is not installed"
    T=$(mktemp -d "${BATS_TEST_TMPDIR:-/tmp}/lsm-root.XXXXXX")
    mkdir "$T/etc-up" "$T/etc-work" "$T/usr-up" "$T/usr-work"
    unshare -m true 2>/dev/null || skip "cannot make a mount namespace here"
    # /etc (ld.so.cache) and /usr/local are overlays in the namespace: the machine's stay untouched
    write_prog "$T/prog.c"
    unset LD_LIBRARY_PATH PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
    # the tree's own build is installed: under make check it is instrumented, and ASan's runtime
    # must then come first in the program too
    san=
    if ldd "$SO" | grep -q libasan; then
        san="-fsanitize=address,undefined"
    fi
    run unshare -m sh -ec '
        mount -t overlay overlay -o lowerdir=/etc,upperdir=$1/etc-up,workdir=$1/etc-work /etc || exit 77
        mount -t overlay overlay -o lowerdir=/usr/local,upperdir=$1/usr-up,workdir=$1/usr-work /usr/local || exit 77
        make -s -C "$2" install >/dev/null
        cc $3 -o "$1/prog" "$1/prog.c" $(pkg-config --cflags --libs liblsm)
        "$1/prog" "$1/db"
        ldd "$1/prog" | grep -F "liblsm.so.1 => /usr/local/lib/liblsm.so.1"
        make -s -C "$2" uninstall >/dev/null
        if ldconfig -p | grep -F liblsm.so; then exit 1; fi
    ' sh "$T" "$REPO" "$san"
    [ "$status" -ne 77 ] || skip "overlay mounts are not available here"
    [ "$status" -eq 0 ] || { printf '%s\n' "$output" >&2; return 1; }
    [[ $output == *"apple = red"* ]]
    [[ $output == *"liblsm.so.1 => /usr/local/lib/liblsm.so.1"* ]]
    rm -rf "$T"
}
