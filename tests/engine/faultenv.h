/*
 * faultenv.h — the fault-injecting in-memory env that the engine's tests substitute for the POSIX
 * one (see faultenv.c). It lives with the tests, not in liblsm: nothing a program ships needs it.
 */
#ifndef LSM_FAULTENV_H
#define LSM_FAULTENV_H

#include "env.h"

lsm_env *faultenv_new(void);
void     faultenv_free(lsm_env *env);
/* Power loss: every file loses the bytes appended since its last sync, and each 4 KiB page of its
   synced length that was written over since then (pwrite) keeps its new or its old content, by a
   coin toss of the env's generator (faultenv_seed), independently of the other pages; every
   directory loses the creations, renames and unlinks made since its last sync_dir. Open files stay
   usable handles to the (now truncated) files; locks are released. Clears any armed fault. */
void     faultenv_power_loss(lsm_env *env);
/* After `after` more mutating calls (append, pwrite, preallocate, sync, rename, unlink, create,
   sync_dir), every mutating call fails with -err (EIO, ENOSPC) and changes nothing — the machine
   is "dead" — until faultenv_clear or faultenv_power_loss. err = 0 disarms. */
void     faultenv_fail_after(lsm_env *env, long after, int err);
/* A disk of that many bytes (0: no limit): writes and preallocations that would make the files
   of the live directories hold more fail with ENOSPC and change nothing; unlink gives space back.
   env->space reports what is left. */
void     faultenv_set_capacity(lsm_env *env, uint64_t bytes);
uint64_t faultenv_space_used(lsm_env *env);   /* bytes the live files hold */
/* As faultenv_fail_after, but only that one call fails; the calls after it work (a transient
   fault, such as a sync that failed once). */
void     faultenv_fail_once(lsm_env *env, long after, int err);
/* With short != 0, every append writes at most half of what it is given (at least 1 byte). */
void     faultenv_short_writes(lsm_env *env, int on);
void     faultenv_clear(lsm_env *env);
/* Seeds the generator behind power loss's coin tosses (a fixed seed is used until then). */
void     faultenv_seed(lsm_env *env, uint64_t seed);
long     faultenv_mutations(lsm_env *env);     /* mutating calls so far */
long     faultenv_syncs(lsm_env *env);         /* sync and sync_dir calls so far */
/* Flips (xor 0xff) the byte at off of path, as both live and durable content; -ENOENT if none. */
int      faultenv_corrupt(lsm_env *env, const char *path, uint64_t off);


#endif /* LSM_FAULTENV_H */
