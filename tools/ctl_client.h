/*
 * ctl_client.h — lsmctl's side of the control socket of a mounted lsmfs (ctl_proto.h).
 */
#ifndef CTL_CLIENT_H
#define CTL_CLIENT_H

#include <stdio.h>

/* Hands argv ([global options...] COMMAND [ARGS...]) to the lsmfs serving datadir and relays what
   it prints to out and err. Returns the command's exit status, or -1 (errno set: ENOENT,
   ECONNREFUSED, ...) when no daemon listens on DATADIR/lsmfs.ctl. */
int   ctl_forward(const char *datadir, int argc, char **argv, FILE *out, FILE *err);

/* The DATADIR (the mount's source) of the lsmfs mounted at path, or NULL if path is not an lsmfs
   mount point. Caller frees. */
char *ctl_mount_datadir(const char *path);

#endif /* CTL_CLIENT_H */
