/*
 * meta/format.h - constants of the container on-disk format, mirroring
 * docs/FORMAT.md name for name.  All integers on disk are little-endian.
 */
#ifndef SQ_FORMAT_H
#define SQ_FORMAT_H

#include <stdint.h>

#define SQ_FMT_VERSION		5	/* written by this build */
#define SQ_FMT_VERSION_MIN	1	/* oldest version this build reads */

/* File header: 128 bytes at offset 0. */
#define SQ_FMT_MAGIC		"\x89SQZ\r\n\x1a\n"
#define SQ_FMT_MAGIC_LEN	8
#define SQ_FMT_HDR_SIZE		128
#define SQ_FMT_OFF_VERSION	8	/* u16 */
#define SQ_FMT_OFF_HDR_SIZE	10	/* u16, = 128 */
#define SQ_FMT_OFF_BLOCK_SHIFT	12	/* u8, 12..20 */
#define SQ_FMT_OFF_FLAGS	13	/* u8, 0 */
#define SQ_FMT_OFF_RESERVED	14	/* 34 bytes of 0 */
#define SQ_FMT_OFF_HDR_SUM	48	/* u64, XXH3-64 of bytes 0..47 */
#define SQ_FMT_OFF_SIZE_REC0	56	/* size record A */
#define SQ_FMT_OFF_SIZE_REC1	80	/* size record B */
#define SQ_FMT_SIZE_REC_LEN	24	/* u64 seq, u64 size, u64 XXH3-64 */
/* Version 5: the BACKING's volume id, twice, outside header_sum. */
#define SQ_FMT_OFF_VOLUME_ID	104	/* u64 */
#define SQ_FMT_OFF_VOLUME_ID2	112	/* u64, the same */

/* BACKING/.squeezefs/volume (section 12.1): 32 bytes. */
#define SQ_VOL_FILE		"volume"
#define SQ_VOL_MAGIC		"\x89SQV\r\n\x1a\n"
#define SQ_VOL_LEN		32
#define SQ_VOL_VERSION		1
#define SQ_VOL_OFF_VERSION	8	/* u16 */
#define SQ_VOL_OFF_FLAGS	10	/* u16 */
#define SQ_VOL_OFF_ID		16	/* u64, never 0 */
#define SQ_VOL_OFF_SUM		24	/* u64, XXH3-64 of bytes 0..23 */
#define SQ_VOL_FLAG_LEGACY	1	/* made over a pre-5 BACKING: strict */

#define SQ_FMT_MIN_BLOCK_SHIFT	12	/* 4 KiB */
#define SQ_FMT_MAX_BLOCK_SHIFT	20	/* 1 MiB */

/*
 * Block slots: block i has two slots k = 0, 1 at
 *   SQ_FMT_HDR_SIZE + (2 * i + k) * (block_size + SQ_FMT_SLOT_PAD).
 */
#define SQ_FMT_SLOT_PAD		4096

/* Record prefix (16 bytes) at the start of a slot, then the msgpack header,
 * then the payload. */
#define SQ_FMT_REC_MAGIC	"SQBK"
#define SQ_FMT_REC_PREFIX	16	/* magic[4] u16 hdr_len u16 0 u64 sum */
#define SQ_FMT_REC_HDR_MAX	256	/* longest msgpack header accepted */

/* Codec id of a record meaning "this block reads as zeros". */
#define SQ_FMT_CODEC_ZERO	255

#endif /* SQ_FORMAT_H */
