/*
 * ctl_snapshot.h — named snapshots of a database in DATADIR/snapshots/NAME (ctl_snapshot.c).
 */
#ifndef CTL_SNAPSHOT_H
#define CTL_SNAPSHOT_H

#include <stdio.h>
#include "lsm.h"

#define CTL_SNAPSHOT_DIR "snapshots"    /* below DATADIR */

/* Whether name may name a snapshot: 1 to 255 bytes, no '/', not "." or "..". */
int ctl_snapshot_name_ok(const char *name);

/* lsmctl snapshot: argv is "snapshot" create NAME | list | delete NAME. db (open on datadir; may be
   NULL for list and delete) is checkpointed for create. Returns a CTL_EXIT_* status. */
int ctl_snapshot(lsm_db *db, const char *datadir, int argc, char **argv, FILE *out, FILE *err);

#endif /* CTL_SNAPSHOT_H */
