# lsmfs — top-level build. `make` builds the engine, the daemon and the tests; see README.md.
CC      ?= cc
CFLAGS  ?= -O2 -g
PREFIX  ?= /usr/local
DESTDIR ?=

WARN     = -Wall -Wextra -Wno-unused-parameter
XCFLAGS  = -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -pthread -MMD -MP $(WARN)
LIBS     = -lpthread -llz4 -lzstd -lxxhash -lm
FUSE_CFLAGS = $(shell pkg-config --cflags fuse3)
FUSE_LIBS   = $(shell pkg-config --libs fuse3)

ENGINE_SRC = engine/util.c engine/env.c engine/options.c engine/wal.c engine/memtable.c \
             engine/bloom.c engine/cache.c engine/sst.c engine/iter.c engine/version.c \
             engine/blob.c engine/table_cache.c engine/builder.c engine/db.c engine/recover.c \
             engine/write.c engine/flush.c engine/read.c engine/db_iter.c engine/compact_pick.c \
             engine/compact.c
ENGINE_OBJ = $(ENGINE_SRC:.c=.o)
ENGINE_PIC = $(ENGINE_SRC:.c=.pic.o)
FS_SRC     = $(wildcard fs/*.c)
FS_OBJ     = $(FS_SRC:.c=.o)
TEST_SRC   = $(wildcard tests/engine/test_*.c)
TEST_BIN   = $(TEST_SRC:.c=)
HELPER_SRC = $(wildcard tests/engine/helper_*.c) tests/engine/faultenv.c
TOOL_SRC   = $(wildcard tools/*.c)
TOOL_BIN   = $(TOOL_SRC:.c=)
BENCH_SRC  = $(wildcard tests/bench/*.c)
BENCH_BIN  = $(BENCH_SRC:.c=)

# Other engines for side-by-side benchmarks, when their Debian packages are installed.
BENCH_DEFS = $(if $(wildcard /usr/include/leveldb/c.h),-DHAVE_LEVELDB) \
             $(if $(wildcard /usr/include/rocksdb/c.h),-DHAVE_ROCKSDB)
BENCH_LIBS = $(if $(wildcard /usr/include/leveldb/c.h),-lleveldb) \
             $(if $(wildcard /usr/include/rocksdb/c.h),-lrocksdb)

all: engine/liblsm.a engine/liblsm.so fs/lsmfs $(TEST_BIN) $(TOOL_BIN) $(BENCH_BIN)

engine/%.o: engine/%.c
	$(CC) $(CFLAGS) $(XCFLAGS) -c -o $@ $<
engine/%.pic.o: engine/%.c
	$(CC) $(CFLAGS) $(XCFLAGS) -fPIC -c -o $@ $<
engine/liblsm.a: $(ENGINE_OBJ)
	rm -f $@ && ar rcs $@ $^
engine/liblsm.so: $(ENGINE_PIC)
	$(CC) $(CFLAGS) -shared -Wl,-soname,liblsm.so.0 -o $@ $^ $(LIBS)

fs/%.o: fs/%.c
	$(CC) $(CFLAGS) $(XCFLAGS) $(FUSE_CFLAGS) -Iengine -c -o $@ $<
fs/lsmfs: $(FS_OBJ) engine/liblsm.a
	$(CC) $(CFLAGS) -pthread -o $@ $(FS_OBJ) engine/liblsm.a $(FUSE_LIBS) $(LIBS)

tests/engine/test_%: tests/engine/test_%.c $(HELPER_SRC) engine/liblsm.a
	$(CC) $(CFLAGS) $(XCFLAGS) -Iengine -o $@ $< $(HELPER_SRC) engine/liblsm.a -lcmocka $(LIBS)

tools/%: tools/%.c engine/liblsm.a
	$(CC) $(CFLAGS) $(XCFLAGS) -Iengine -o $@ $< engine/liblsm.a $(LIBS)

tests/bench/%: tests/bench/%.c engine/liblsm.a
	$(CC) $(CFLAGS) $(XCFLAGS) $(BENCH_DEFS) -Iengine -o $@ $< engine/liblsm.a $(BENCH_LIBS) $(LIBS)

test: all
	sh tests/run-all.sh

# The same suites under AddressSanitizer + UndefinedBehaviorSanitizer, in a separate build tree.
check:
	rm -rf build-san && mkdir -p build-san
	git ls-files -z 2>/dev/null | xargs -0 -I{} cp --parents {} build-san/ 2>/dev/null || cp -r engine fs tests Makefile build-san/
	$(MAKE) -C build-san all CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
	cd build-san && LSM_SANITIZE=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 sh tests/run-all.sh
	rm -rf build-san

bench: all
	sh tests/bench/run.sh

# mount -t fuse.lsmfs works through mount.fuse3(8), which runs lsmfs from PATH.
install: all
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
	      $(TEST_BIN) tests/engine/*.d $(TOOL_BIN) tools/*.d $(BENCH_BIN) tests/bench/*.d

.PHONY: all test check bench install uninstall clean
-include $(ENGINE_SRC:.c=.d) $(FS_SRC:.c=.d)
