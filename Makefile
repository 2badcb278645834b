# lsmfs — top-level build. `make` builds the library, the daemon and the tools; `make test` builds
# the tests too and runs them; `make install` needs neither cmocka nor LevelDB. See README.md.
CC       ?= cc
CFLAGS   ?= -O2 -g
CPPFLAGS ?=
LDFLAGS  ?=
PREFIX   ?= /usr/local
DESTDIR  ?=
PKG_CONFIG ?= pkg-config
FUSE_CFLAGS = $(shell $(PKG_CONFIG) --cflags fuse3)
FUSE_LIBS   = $(shell $(PKG_CONFIG) --libs fuse3)
CMOCKA_LIBS = -lcmocka
# Other engines for side-by-side benchmarks, when their Debian packages are installed.
BENCH_DEFS = $(if $(wildcard /usr/include/leveldb/c.h),-DHAVE_LEVELDB) \
             $(if $(wildcard /usr/include/rocksdb/c.h),-DHAVE_ROCKSDB)
BENCH_LIBS = $(if $(wildcard /usr/include/leveldb/c.h),-lleveldb) \
             $(if $(wildcard /usr/include/rocksdb/c.h),-lrocksdb)

WARN     = -Wall -Wextra -Wno-unused-parameter
XCFLAGS  = -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -pthread $(WARN)
LIBS     = -llz4 -lzstd -lxxhash -lpthread -lm

ENGINE_SRC = engine/util.c engine/env.c engine/wal.c engine/memtable.c engine/bloom.c \
             engine/cache.c engine/sst.c engine/iter.c engine/version.c engine/db.c \
             engine/compact.c engine/blob.c
FS_SRC     = fs/main.c fs/meta.c fs/ops.c fs/reclaim.c
ITOOLS     =
TOOLS      = $(ITOOLS) tools/lsmtool
TESTS      = tests/engine/test_bloom tests/engine/test_cache tests/engine/test_corrupt \
             tests/engine/test_crash tests/engine/test_db tests/engine/test_env \
             tests/engine/test_fault tests/engine/test_garbage tests/engine/test_iter \
             tests/engine/test_memtable tests/engine/test_model tests/engine/test_refresh \
             tests/engine/test_sst tests/engine/test_wal
TEST_HELPERS = tests/engine/helper_model.o tests/engine/faultenv.o
BENCHES    = tests/bench/db_bench tests/bench/fsbench

ENGINE_OBJ = $(ENGINE_SRC:.c=.o)
ENGINE_PIC = $(ENGINE_SRC:.c=.pic.o)
FS_OBJ     = $(FS_SRC:.c=.o)
OBJS = $(ENGINE_OBJ) $(ENGINE_PIC) $(FS_OBJ) $(TOOLS:=.o) $(TESTS:=.o) $(TEST_HELPERS) $(BENCHES:=.o)

COMPILE = $(CC) -Iengine $(CPPFLAGS) $(XCFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<
LINK    = $(CC) $(CFLAGS) $(LDFLAGS) -pthread

all: engine/liblsm.a engine/liblsm.so fs/lsmfs $(TOOLS)

engine/%.o: engine/%.c
	$(COMPILE)
engine/%.pic.o: engine/%.c
	$(COMPILE) -fPIC
fs/%.o: fs/%.c
	$(COMPILE) $(FUSE_CFLAGS)
tests/bench/%.o: tests/bench/%.c
	$(COMPILE) $(BENCH_DEFS)
%.o: %.c
	$(COMPILE)

engine/liblsm.a: $(ENGINE_OBJ)
	rm -f $@ && $(AR) rcs $@ $(ENGINE_OBJ)
engine/liblsm.so: $(ENGINE_PIC)
	$(LINK) -shared -Wl,-soname,liblsm.so.0 -o $@ $(ENGINE_PIC) $(LIBS)
fs/lsmfs: $(FS_OBJ) engine/liblsm.a
	$(LINK) -o $@ $(FS_OBJ) engine/liblsm.a $(FUSE_LIBS) $(LIBS)
$(TOOLS): %: %.o engine/liblsm.a
	$(LINK) -o $@ $@.o engine/liblsm.a $(LIBS)
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

# mount -t fuse.lsmfs works through mount.fuse3(8), which runs lsmfs from PATH.
install: engine/liblsm.a engine/liblsm.so fs/lsmfs
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	           $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 755 fs/lsmfs $(DESTDIR)$(PREFIX)/bin/lsmfs
	install -m 644 engine/liblsm.a $(DESTDIR)$(PREFIX)/lib/liblsm.a
	install -m 755 engine/liblsm.so $(DESTDIR)$(PREFIX)/lib/liblsm.so.0
	ln -sf liblsm.so.0 $(DESTDIR)$(PREFIX)/lib/liblsm.so
	install -m 644 engine/lsm.h $(DESTDIR)$(PREFIX)/include/lsm.h
	install -m 644 man/lsmfs.1 $(DESTDIR)$(PREFIX)/share/man/man1/lsmfs.1
	install -m 644 man/lsm-format.5 $(DESTDIR)$(PREFIX)/share/man/man5/lsm-format.5

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/lsmfs $(DESTDIR)$(PREFIX)/lib/liblsm.a \
	      $(DESTDIR)$(PREFIX)/lib/liblsm.so.0 $(DESTDIR)$(PREFIX)/lib/liblsm.so \
	      $(DESTDIR)$(PREFIX)/include/lsm.h $(DESTDIR)$(PREFIX)/share/man/man1/lsmfs.1 \
	      $(DESTDIR)$(PREFIX)/share/man/man5/lsm-format.5

clean:
	rm -rf build-san
	rm -f engine/*.o engine/*.d engine/liblsm.a engine/liblsm.so fs/*.o fs/*.d fs/lsmfs \
	      tools/*.o tools/*.d $(TOOLS) tests/engine/*.o tests/engine/*.d $(TESTS) \
	      tests/bench/*.o tests/bench/*.d $(BENCHES)

.PHONY: all test check bench install uninstall clean
-include $(OBJS:.o=.d)
