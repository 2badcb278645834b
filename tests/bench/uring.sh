# uring.sh — sourced by fsbench.sh and realbench.sh (POSIX sh): uring_param Y|N|restore sets
# the fuse module's enable_uring, which lsmfs -o uring needs (root only; a no-op otherwise). The
# value found first is kept in uring_saved, and "restore" puts it back; each script restores it in
# its exit trap too.
uring_saved=""
uring_param() {
    uring_f=/sys/module/fuse/parameters/enable_uring
    [ -w "$uring_f" ] || return 0
    [ -n "$uring_saved" ] || uring_saved=$(cat "$uring_f")
    if [ "$1" = restore ]; then echo "$uring_saved" >"$uring_f"; else echo "$1" >"$uring_f"; fi
}
