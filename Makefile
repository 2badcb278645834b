# lsmfs — top-level build. `make` builds the library, the daemon and the tools; `make test` builds
# the tests too and runs them; `make install` needs neither cmocka nor LevelDB. See README.md.
CC       ?= cc
CFLAGS   ?= -O2 -g
CPPFLAGS ?=
LDFLAGS  ?=
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
LIBDIR   ?= $(PREFIX)/lib
INCDIR   ?= $(PREFIX)/include
MANDIR   ?= $(PREFIX)/share/man
PCDIR    ?= $(LIBDIR)/pkgconfig
DESTDIR  ?=
LDCONFIG ?= ldconfig
PKG_CONFIG ?= pkg-config
FUSE_CFLAGS = $(shell $(PKG_CONFIG) --cflags fuse3)
FUSE_LIBS   = $(shell $(PKG_CONFIG) --libs fuse3)
URING_LIBS  = $(shell $(PKG_CONFIG) --libs liburing)
CMOCKA_LIBS = -lcmocka
# Other engines for side-by-side benchmarks, when their Debian packages are installed.
BENCH_DEFS = $(if $(wildcard /usr/include/leveldb/c.h),-DHAVE_LEVELDB) \
             $(if $(wildcard /usr/include/rocksdb/c.h),-DHAVE_ROCKSDB)
BENCH_LIBS = $(if $(wildcard /usr/include/leveldb/c.h),-lleveldb) \
             $(if $(wildcard /usr/include/rocksdb/c.h),-lrocksdb)

WARN     = -Wall -Wextra -Wno-unused-parameter
XCFLAGS  = -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -pthread $(WARN)
LIBS     = -llz4 -lzstd -lxxhash -lpthread -lm
# Library objects export only what lsm.h marks LSM_API.
LIBFLAGS = -fvisibility=hidden -DLSM_BUILDING_LIBRARY
SONAME   = liblsm.so.1
VERSION  = $(shell sed -n 's/.*define LSM_VERSION_STRING *"\([^"]*\)".*/\1/p' engine/lsm.h)

ENGINE_SRC = engine/util.c engine/env.c engine/options.c engine/wal.c engine/memtable.c \
             engine/bloom.c engine/cache.c engine/sst.c engine/iter.c engine/version.c \
             engine/blob.c engine/table_cache.c engine/builder.c engine/db.c engine/recover.c \
             engine/write.c engine/flush.c engine/read.c engine/db_iter.c engine/compact_pick.c \
             engine/compact.c engine/space.c engine/extent.c engine/checkpoint.c \
             engine/check.c engine/repair.c engine/logger.c
FS_SRC     = fs/main.c fs/pool.c fs/ops.c fs/dir.c fs/cookie.c fs/inode.c fs/keys.c fs/reclaim.c fs/log.c \
             fs/xattr.c fs/stats.c fs/notify.c fs/control.c fs/view.c fs/uring.c tools/ctl_cmd.c tools/ctl_snapshot.c
ITOOLS     = tools/lsmctl
TOOLS      = $(ITOOLS)
TESTS      = tests/engine/test_bloom tests/engine/test_cache tests/engine/test_corrupt \
             tests/engine/test_crash tests/engine/test_db tests/engine/test_env \
             tests/engine/test_fault tests/engine/test_garbage tests/engine/test_iter \
             tests/engine/test_memtable tests/engine/test_model tests/engine/test_refresh \
             tests/engine/test_space tests/engine/test_sst tests/engine/test_wal \
             tests/engine/test_extent tests/engine/test_ctl tests/engine/test_api
TEST_HELPERS = tests/engine/helper_model.o tests/engine/faultenv.o
BENCHES    = tests/bench/db_bench tests/bench/fsbench tests/bench/extent_bench \
             tests/bench/append_bench \
             tests/bench/bigbench tests/bench/fsxgen

# What `make install` puts, each listed once; ITOOLS are tools installed with their man page.
ILIBS  = engine/liblsm.a engine/liblsm.so
IPROGS = fs/lsmfs $(ITOOLS)
IDOCS  = man/lsmfs.1 man/lsmctl.1 man/lsm-format.5

ENGINE_OBJ = $(ENGINE_SRC:.c=.o)
ENGINE_PIC = $(ENGINE_SRC:.c=.pic.o)
FS_OBJ     = $(FS_SRC:.c=.o)
CTL_OBJ    = tools/ctl_cmd.o tools/ctl_snapshot.o tools/ctl_client.o
OBJS = $(ENGINE_OBJ) $(ENGINE_PIC) $(FS_OBJ) $(TOOLS:=.o) $(CTL_OBJ) $(TESTS:=.o) $(TEST_HELPERS) $(BENCHES:=.o)

COMPILE = $(CC) -Iengine $(CPPFLAGS) $(XCFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<
LINK    = $(CC) $(CFLAGS) $(LDFLAGS) -pthread

all: $(ILIBS) fs/lsmfs $(TOOLS)

engine/%.o: engine/%.c
	$(COMPILE) $(LIBFLAGS)
engine/%.pic.o: engine/%.c
	$(COMPILE) $(LIBFLAGS) -fPIC
fs/%.o: fs/%.c
	$(COMPILE) $(FUSE_CFLAGS)
tests/bench/%.o: tests/bench/%.c
	$(COMPILE) $(BENCH_DEFS)
%.o: %.c
	$(COMPILE)

engine/liblsm.a: $(ENGINE_OBJ)
	rm -f $@ && $(AR) rcs $@ $(ENGINE_OBJ)
engine/liblsm.so: $(ENGINE_PIC)
	$(LINK) -shared -Wl,-soname,$(SONAME) -o $@ $(ENGINE_PIC) $(LIBS)
fs/lsmfs: $(FS_OBJ) engine/liblsm.a
	$(LINK) -o $@ $(FS_OBJ) engine/liblsm.a $(FUSE_LIBS) $(URING_LIBS) $(LIBS)
# The commands live in tools/ctl_cmd.c, which lsmfs will link too.
$(TOOLS): %: %.o $(CTL_OBJ) engine/liblsm.a
	$(LINK) -o $@ $@.o $(CTL_OBJ) engine/liblsm.a $(LIBS)
$(TESTS): %: %.o $(TEST_HELPERS) engine/liblsm.a
	$(LINK) -o $@ $@.o $(TEST_HELPERS) engine/liblsm.a $(CMOCKA_LIBS) $(LIBS)
$(BENCHES): %: %.o engine/liblsm.a
	$(LINK) -o $@ $@.o engine/liblsm.a $(BENCH_LIBS) $(LIBS)

# The benchmarks are built (not run) so that they keep compiling.
test: all $(TESTS) $(BENCHES)
	sh tests/run-all.sh

# The same suites under AddressSanitizer + UndefinedBehaviorSanitizer, in a separate build tree
# made of the files git tracks.
check:
	rm -rf build-san && mkdir -p build-san
	git ls-files -z 2>/dev/null | xargs -0 -I{} cp --parents {} build-san/ 2>/dev/null || cp -r engine fs tools man tests Makefile build-san/
	$(MAKE) -C build-san all $(TESTS) $(BENCHES) CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
	cd build-san && LSM_SANITIZE=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 sh tests/run-all.sh
	rm -rf build-san

bench: all $(BENCHES)
	sh tests/bench/run.sh

# mount -t fuse.lsmfs works through mount.fuse3(8), which runs lsmfs from PATH. ldconfig makes a
# program linked with `pkg-config --libs liblsm` find liblsm.so.1 at once (not for DESTDIR stagings).
install: $(ILIBS) $(IPROGS)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PCDIR) $(DESTDIR)$(INCDIR) \
	           $(addprefix $(DESTDIR)$(MANDIR)/man,$(sort $(subst .,,$(suffix $(IDOCS)))))
	install -m 755 $(IPROGS) $(DESTDIR)$(BINDIR)/
	install -m 644 engine/liblsm.a $(DESTDIR)$(LIBDIR)/liblsm.a
	install -m 755 engine/liblsm.so $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/liblsm.so
	install -m 644 engine/lsm.h $(DESTDIR)$(INCDIR)/lsm.h
	for m in $(IDOCS); do install -m 644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/ || exit 1; done
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCDIR)' '' 'Name: liblsm' \
	    'Description: embeddable, crash-safe LSM-tree key-value engine' 'Version: $(VERSION)' \
	    'Libs: -L$${libdir} -llsm' 'Libs.private: $(LIBS)' 'Cflags: -I$${includedir}' \
	    >$(DESTDIR)$(PCDIR)/liblsm.pc
	[ -n "$(DESTDIR)" ] || $(LDCONFIG) || echo "make install: $(LDCONFIG) failed (not root?)" >&2

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(IPROGS))) \
	      $(DESTDIR)$(LIBDIR)/liblsm.a $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/liblsm.so \
	      $(DESTDIR)$(PCDIR)/liblsm.pc $(DESTDIR)$(INCDIR)/lsm.h
	for m in $(notdir $(IDOCS)); do rm -f $(DESTDIR)$(MANDIR)/man$${m##*.}/$$m; done
	[ -n "$(DESTDIR)" ] || $(LDCONFIG) || echo "make uninstall: $(LDCONFIG) failed (not root?)" >&2

clean:
	rm -rf build-san
	rm -f engine/*.o engine/*.d engine/liblsm.a engine/liblsm.so fs/*.o fs/*.d fs/lsmfs \
	      tools/*.o tools/*.d $(TOOLS) tests/engine/*.o tests/engine/*.d $(TESTS) \
	      tests/bench/*.o tests/bench/*.d $(BENCHES)

.PHONY: all test check bench install uninstall clean
-include $(OBJS:.o=.d)
