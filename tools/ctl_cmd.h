/*
 * ctl_cmd.h — the commands of lsmctl(1), run on a database handle someone else opened.
 *
 * lsmctl's main() opens a DATADIR and calls ctl_run; lsmfs links the same file and calls ctl_run
 * with the handle it has open, for a command that reached it through its control socket, so a
 * command behaves the same offline and on a mounted file system. ctl_run uses only lsm.h and libc,
 * keeps no global state, never calls exit, and reads and writes only the streams it is given.
 *
 * For the daemon: link tools/ctl_cmd.o, and for each command received call
 * ctl_run_io(db, argc, argv, NULL, out, err) with out and err writing to the client (argv without
 * lsmctl's own -d/-w options, as lsmctl_forward will send it), then send back the status. Run
 * only CTL_MODE_READ and CTL_MODE_MAINTAIN commands (ctl_command_mode tells): CTL_MODE_WRITE ones
 * would change keys behind lsmfs's inodes and the kernel's caches, and repair needs the directory
 * to itself. Before a backup, write back the files lsmfs holds dirty, so that the copy has what
 * close() and fsync() have promised. check reads the whole database: run it on a worker thread.
 */
#ifndef CTL_CMD_H
#define CTL_CMD_H

#include <stdio.h>
#include "lsm.h"

/* Exit statuses, as lsmctl(1) documents them. */
enum {
    CTL_EXIT_OK = 0,
    CTL_EXIT_NOTFOUND = 1,   /* get/del: the key has no value */
    CTL_EXIT_USAGE = 2,      /* bad command line or malformed input */
    CTL_EXIT_DAMAGED = 3,    /* check found damage; repair lost data; load met a damaged stream */
    CTL_EXIT_BUSY = 4,       /* the DATADIR is held by another process (a mounted lsmfs) */
    CTL_EXIT_ERROR = 5       /* any other failure (I/O, no database, out of memory) */
};

/* How a command uses the database: what lsmctl opens it with, and what a daemon that serves
   commands on its own handle may run. */
enum {
    CTL_MODE_UNKNOWN = -1,   /* not a command */
    CTL_MODE_READ = 0,       /* reads only (get scan dump backup check stats): open read-only;
                                safe on a mounted file system's handle */
    CTL_MODE_WRITE = 1,      /* changes keys (put del load script): open read-write. On a mounted
                                file system's handle it would change files behind lsmfs's inode
                                and kernel caches: a daemon must refuse it */
    CTL_MODE_OFFLINE = 2,    /* works on the directory itself, without a handle (repair) */
    CTL_MODE_MAINTAIN = 3    /* rewrites tables but no key (compact flush): open read-write; safe
                                on a mounted file system's handle */
};

/* The mode of the command named in argv (after any leading global options such as --hex);
   CTL_MODE_UNKNOWN if there is none. */
int ctl_command_mode(int argc, char **argv);

/* Runs one command: argv is [global options...] COMMAND [ARGS...] (argv[0] is not a program name;
   argv is not modified). Results go to out, messages to err; progress goes to err when it is a
   terminal. put without a VALUE, load and script read their data from stdin (see ctl_run_io).
   db must be open read-write for CTL_MODE_WRITE commands (a read-only handle refuses their writes:
   CTL_EXIT_ERROR). Returns a CTL_EXIT_* status. CTL_MODE_OFFLINE commands are not run here
   (ctl_repair is): they give CTL_EXIT_USAGE. Thread-safe as lsm_db is: several calls may share
   db. */
int ctl_run(lsm_db *db, int argc, char **argv, FILE *out, FILE *err);

/* The same with the data of put, load and script read from in (NULL: those commands fail with
   CTL_EXIT_USAGE, as a daemon without the caller's stdin wants). */
int ctl_run_io(lsm_db *db, int argc, char **argv, FILE *in, FILE *out, FILE *err);

/* lsmctl repair: lsm_repair on dir, reporting each loss to out. Returns a CTL_EXIT_* status. */
int ctl_repair(const char *dir, FILE *out, FILE *err);

/* The command summary, for usage messages. */
void ctl_usage(FILE *f);

#endif /* CTL_CMD_H */
