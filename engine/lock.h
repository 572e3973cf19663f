/*
 * engine/lock.h - BACKING/.squeezefs/lock guards BACKING against two
 * daemons (or a daemon and fsck, export), which would corrupt both views.
 * Two locks on it:
 *
 *   - flock(): held for the owner's whole life, by a daemon until it has
 *     stored its last block and exited, by fsck while it runs;
 *   - an OFD write lock on byte 0: held by a daemon only while its mount
 *     serves requests.
 *
 * umount returns as soon as the kernel has detached the mount; the daemon
 * then stores what it still holds, which may take a while.  A new owner
 * that finds the flock taken but byte 0 free waits for that instead of
 * failing: `umount; mount` works as on any filesystem.  Byte 0 taken (and
 * a squeezefs mount of BACKING in mountinfo, named "squeezefs:BACKING")
 * means a live mount: refused at once.
 */
#ifndef SQ_LOCK_H
#define SQ_LOCK_H

#include <stdbool.h>

/* How long sq_lock_take() waits for a daemon that is storing its last
 * blocks: a full cache stored at a slow disk's pace. */
#define SQ_LOCK_WAIT_SECS 300

/*
 * Flocks BACKING/.squeezefs/lock (made if missing) for the caller's
 * lifetime, waiting while a daemon that is no longer mounted still holds
 * it (storing its last blocks; after a second it says so on stderr,
 * prefixed with @who, unless that is NULL).  @root_fd: BACKING (O_PATH,
 * borrowed); @backing: its canonical path, to see whether a holder is
 * still mounted.  Returns the fd (the caller closes it to let go), or
 * -errno: -EWOULDBLOCK when BACKING is mounted, -ETIMEDOUT when the holder
 * does not let go within minutes.
 */
int sq_lock_take(int root_fd, const char *backing, const char *who);
/* Marks (or, @on false, unmarks) BACKING as served by a live mount, on
 * the fd sq_lock_take() returned.  0 or -errno. */
int sq_lock_serve(int fd, bool on);
/* Unescapes /proc/self/mountinfo's octal escapes (\040 for a space) in
 * place. */
void sq_lock_unescape(char *s);

#endif /* SQ_LOCK_H */
