/*
 * engine/packer.h - packs closed small files into the pack store
 * (pack_store.h), in the background.  A file whose last writer closed it
 * is noted; about a second later (once tools like cp -a and rsync have set
 * its times and xattrs) a job on the background queue reads its container,
 * appends the image to a pack, and turns the container into a stub that
 * refers to it, unless the file changed or was opened meanwhile.
 *
 * The packer pins every inode it waits for (inode.h), so the kernel may
 * forget it meanwhile.  When the background queue stops (sq_wq_free()),
 * everything noted is packed at once.
 */
#ifndef SQ_PACKER_H
#define SQ_PACKER_H

struct sq_fs;
struct sq_inode;
struct sq_packer;
struct sq_wq;

/* Containers allocating at most this many 512-byte units are worth a
 * look: header and block 0's record (in slot 0 or 1) in a page each. */
#define SQ_PACK_SMALL_BLOCKS 16

/*
 * Starts packing the files of @fs (fs->pack open for writing) with jobs on
 * @wq (borrowed; it must outlive the packer's last job).  Returns 0, or
 * why BACKING cannot hold packed files (-EROFS, -EIO, -EPERM,
 * -EOPNOTSUPP: see sq_pack_enable()).
 */
int sq_packer_start(struct sq_fs *fs, struct sq_wq *wq,
		    struct sq_packer **out);
/* Frees the packer once its queue is stopped.  NULL-safe. */
void sq_packer_free(struct sq_packer *pk);
/* The last handle of @i that changed it was closed: pack it soon.  Any
 * thread, no lock held.  NULL-safe (@pk NULL: not packing). */
void sq_packer_note(struct sq_packer *pk, struct sq_inode *i);

#endif /* SQ_PACKER_H */
