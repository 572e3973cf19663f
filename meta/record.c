/*
 * meta/record.c - the block record header: a 16-byte prefix and a small
 * msgpack map (docs/FORMAT.md, "Block record").  Encoding goes through
 * msgpack-c; decoding is a hand-written reader over at most 256 bytes, so
 * that hostile input can never make a library allocate what a length
 * field claims (msgpack-c sizes a map or array from its header).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <msgpack.h>
#include <xxhash.h>

#include "meta/container_i.h"

struct fixed_buf {
	uint8_t *p;
	size_t len;
	size_t cap;
};

static int fixed_write(void *data, const char *buf, size_t len)
{
	struct fixed_buf *fb = data;

	if (len > fb->cap - fb->len)
		return -1;
	memcpy(fb->p + fb->len, buf, len);
	fb->len += len;
	return 0;
}

static int pack_key(msgpack_packer *pk, const char *key)
{
	if (msgpack_pack_str(pk, 1))
		return -1;
	return msgpack_pack_str_body(pk, key, 1);
}

ssize_t sq_rec_encode(struct sq_rec_hdr *h, uint8_t *out)
{
	struct fixed_buf fb = {
		.p = out + SQ_FMT_REC_PREFIX,
		.cap = SQ_FMT_REC_HDR_MAX,
	};
	msgpack_packer pk;
	int err = 0;

	msgpack_packer_init(&pk, &fb, fixed_write);
	/* Key order is fixed so that equal headers encode to equal bytes. */
	err |= msgpack_pack_map(&pk, 7);
	err |= pack_key(&pk, "b");
	err |= msgpack_pack_uint64(&pk, h->block);
	err |= pack_key(&pk, "g");
	err |= msgpack_pack_uint64(&pk, h->gen);
	err |= pack_key(&pk, "c");
	err |= msgpack_pack_unsigned_int(&pk, (unsigned)h->codec);
	err |= pack_key(&pk, "l");
	err |= msgpack_pack_int(&pk, h->level);
	err |= pack_key(&pk, "r");
	err |= msgpack_pack_uint32(&pk, h->raw_len);
	err |= pack_key(&pk, "s");
	err |= msgpack_pack_uint32(&pk, h->stored_len);
	err |= pack_key(&pk, "x");
	err |= msgpack_pack_uint64(&pk, h->sum);
	if (err || fb.len == 0)
		return -EINVAL;

	h->hdr_len = (uint16_t)fb.len;
	memcpy(out, SQ_FMT_REC_MAGIC, 4);
	sq_put_le16(out + 4, h->hdr_len);
	sq_put_le16(out + 6, 0);
	sq_put_le64(out + 8, XXH3_64bits(out + SQ_FMT_REC_PREFIX, fb.len));
	return (ssize_t)(SQ_FMT_REC_PREFIX + fb.len);
}

/* ---- decoding ---- */

enum mp_kind { MP_NIL, MP_BOOL, MP_INT, MP_FLOAT, MP_STR, MP_BIN, MP_EXT,
	       MP_ARRAY, MP_MAP };

struct mp_item {
	enum mp_kind kind;
	bool neg;		/* MP_INT: value is negative (in i) */
	uint64_t u;		/* MP_INT, non-negative */
	int64_t i;		/* MP_INT, negative */
	uint32_t n;		/* STR/BIN/EXT: byte length; ARRAY/MAP: count */
	const uint8_t *data;	/* STR/BIN/EXT payload */
};

struct mp_cur {
	const uint8_t *p;
	const uint8_t *end;
};

static uint64_t get_be(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Takes @n bytes from the cursor, or NULL when fewer remain. */
static const uint8_t *take(struct mp_cur *c, size_t n)
{
	const uint8_t *p = c->p;

	if ((size_t)(c->end - c->p) < n)
		return NULL;
	c->p += n;
	return p;
}

/*
 * Reads one item's type byte and fixed fields; STR/BIN/EXT bodies are
 * consumed too, ARRAY/MAP elements are not.  Returns 0 or -1 on truncated
 * or reserved (0xc1) input.
 */
static int mp_next(struct mp_cur *c, struct mp_item *it)
{
	const uint8_t *p = take(c, 1);
	const uint8_t *q;
	uint8_t t;
	int len_bytes = 0;

	if (!p)
		return -1;
	t = *p;
	memset(it, 0, sizeof(*it));
	if (t <= 0x7f) {
		it->kind = MP_INT;
		it->u = t;
		return 0;
	}
	if (t >= 0xe0) {
		it->kind = MP_INT;
		it->neg = true;
		it->i = (int8_t)t;
		return 0;
	}
	if (t >= 0x80 && t <= 0x8f) {
		it->kind = MP_MAP;
		it->n = t & 0x0f;
		return 0;
	}
	if (t >= 0x90 && t <= 0x9f) {
		it->kind = MP_ARRAY;
		it->n = t & 0x0f;
		return 0;
	}
	if (t >= 0xa0 && t <= 0xbf) {
		it->kind = MP_STR;
		it->n = t & 0x1f;
		goto body;
	}
	switch (t) {
	case 0xc0:
		it->kind = MP_NIL;
		return 0;
	case 0xc2:
	case 0xc3:
		it->kind = MP_BOOL;
		return 0;
	case 0xc4: case 0xc5: case 0xc6:	/* bin 8/16/32 */
		it->kind = MP_BIN;
		len_bytes = 1 << (t - 0xc4);
		break;
	case 0xc7: case 0xc8: case 0xc9:	/* ext 8/16/32 */
		it->kind = MP_EXT;
		len_bytes = 1 << (t - 0xc7);
		break;
	case 0xca:
		it->kind = MP_FLOAT;
		return take(c, 4) ? 0 : -1;
	case 0xcb:
		it->kind = MP_FLOAT;
		return take(c, 8) ? 0 : -1;
	case 0xcc: case 0xcd: case 0xce: case 0xcf: {	/* uint 8..64 */
		int nb = 1 << (t - 0xcc);

		q = take(c, nb);
		if (!q)
			return -1;
		it->kind = MP_INT;
		it->u = get_be(q, nb);
		return 0;
	}
	case 0xd0: case 0xd1: case 0xd2: case 0xd3: {	/* int 8..64 */
		int nb = 1 << (t - 0xd0);
		uint64_t v;
		int64_t s;

		q = take(c, nb);
		if (!q)
			return -1;
		v = get_be(q, nb);
		/* Sign-extend from nb bytes without shifting into the sign. */
		if (nb < 8 && (v >> (8 * nb - 1)))
			v |= ~UINT64_C(0) << (8 * nb);
		memcpy(&s, &v, sizeof(s));
		it->kind = MP_INT;
		if (s < 0) {
			it->neg = true;
			it->i = s;
		} else {
			it->u = (uint64_t)s;
		}
		return 0;
	}
	case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:	/* fixext */
		it->kind = MP_EXT;
		return take(c, 1 + ((size_t)1 << (t - 0xd4))) ? 0 : -1;
	case 0xd9: case 0xda: case 0xdb:	/* str 8/16/32 */
		it->kind = MP_STR;
		len_bytes = 1 << (t - 0xd9);
		break;
	case 0xdc: case 0xdd:			/* array 16/32 */
	case 0xde: case 0xdf:			/* map 16/32 */
		it->kind = t <= 0xdd ? MP_ARRAY : MP_MAP;
		q = take(c, t & 1 ? 4 : 2);
		if (!q)
			return -1;
		it->n = (uint32_t)get_be(q, t & 1 ? 4 : 2);
		return 0;
	default:				/* 0xc1: never used */
		return -1;
	}
	q = take(c, (size_t)len_bytes);
	if (!q)
		return -1;
	it->n = (uint32_t)get_be(q, len_bytes);
	if (it->kind == MP_EXT && !take(c, 1))	/* ext type byte */
		return -1;
body:
	it->data = take(c, it->n);
	return it->data ? 0 : -1;
}

/*
 * Skips @pending items (and everything nested in them) without recursion:
 * containers add their elements to the count.  Every item takes at least a
 * byte, so a count beyond the bytes left is rejected before it can grow.
 */
static int mp_skip(struct mp_cur *c, uint64_t pending)
{
	struct mp_item it;

	while (pending) {
		if (pending > (uint64_t)(c->end - c->p))
			return -1;
		if (mp_next(c, &it))
			return -1;
		pending--;
		if (it.kind == MP_ARRAY)
			pending += it.n;
		else if (it.kind == MP_MAP)
			pending += 2 * (uint64_t)it.n;
	}
	return 0;
}

static void say(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void say(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (!why || !whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

static const char rec_keys[] = "bgclrsx";

enum sq_slot_state sq_rec_decode(const uint8_t *buf, size_t n, uint64_t idx,
				 uint32_t bs, struct sq_rec_hdr *h, char *why,
				 size_t whylen)
{
	static const uint8_t zeros[SQ_FMT_REC_PREFIX];
	struct mp_cur c;
	struct mp_item m, k, v;
	unsigned seen = 0;
	uint64_t sum;
	uint16_t hdr_len;

	/*
	 * An all-zero prefix is a slot never written, punched, or one whose
	 * first write died after the payload and before the header.
	 */
	if (n < SQ_FMT_REC_PREFIX) {
		for (size_t i = 0; i < n; i++) {
			if (buf[i]) {
				say(why, whylen, "record prefix cut short "
				    "by end of file (%zu bytes)", n);
				return SQ_SLOT_INVALID;
			}
		}
		return SQ_SLOT_EMPTY;
	}
	if (!memcmp(buf, zeros, SQ_FMT_REC_PREFIX))
		return SQ_SLOT_EMPTY;
	if (memcmp(buf, SQ_FMT_REC_MAGIC, 4)) {
		say(why, whylen, "record magic %02x%02x%02x%02x != \"SQBK\"",
		    buf[0], buf[1], buf[2], buf[3]);
		return SQ_SLOT_INVALID;
	}
	hdr_len = sq_get_le16(buf + 4);
	if (hdr_len < 1 || hdr_len > SQ_FMT_REC_HDR_MAX) {
		say(why, whylen, "header length %u not in 1..%u", hdr_len,
		    SQ_FMT_REC_HDR_MAX);
		return SQ_SLOT_INVALID;
	}
	if (sq_get_le16(buf + 6)) {
		say(why, whylen, "reserved prefix field 0x%04x != 0",
		    sq_get_le16(buf + 6));
		return SQ_SLOT_INVALID;
	}
	if (n < (size_t)SQ_FMT_REC_PREFIX + hdr_len) {
		say(why, whylen, "header cut short by end of file "
		    "(%zu of %u bytes)", n - SQ_FMT_REC_PREFIX, hdr_len);
		return SQ_SLOT_INVALID;
	}
	sum = XXH3_64bits(buf + SQ_FMT_REC_PREFIX, hdr_len);
	if (sum != sq_get_le64(buf + 8)) {
		say(why, whylen, "header checksum 0x%016llx, expected 0x%016llx",
		    (unsigned long long)sum,
		    (unsigned long long)sq_get_le64(buf + 8));
		return SQ_SLOT_INVALID;
	}

	memset(h, 0, sizeof(*h));
	h->hdr_len = hdr_len;
	c.p = buf + SQ_FMT_REC_PREFIX;
	c.end = c.p + hdr_len;
	if (mp_next(&c, &m) || m.kind != MP_MAP) {
		say(why, whylen, "header is not a msgpack map");
		return SQ_SLOT_INVALID;
	}
	for (uint32_t e = 0; e < m.n; e++) {
		const char *kp;
		unsigned bit;

		/* A map entry takes two bytes at least. */
		if (c.end - c.p < 2 || mp_next(&c, &k))
			goto malformed;
		kp = NULL;
		if (k.kind == MP_STR && k.n == 1 && k.data[0])
			kp = strchr(rec_keys, k.data[0]);
		if (!kp) {			/* unknown key: ignored */
			/*
			 * mp_next() read only the key's head: an array or
			 * map key still has its elements to skip, then the
			 * value.
			 */
			uint64_t pending = 1;

			if (k.kind == MP_ARRAY)
				pending += k.n;
			else if (k.kind == MP_MAP)
				pending += 2 * (uint64_t)k.n;
			if (mp_skip(&c, pending))
				goto malformed;
			continue;
		}
		bit = 1u << (kp - rec_keys);
		if (seen & bit) {
			say(why, whylen, "key \"%c\" appears twice", *kp);
			return SQ_SLOT_INVALID;
		}
		seen |= bit;
		if (mp_next(&c, &v))
			goto malformed;
		if (v.kind != MP_INT || (v.neg && *kp != 'l')) {
			say(why, whylen, "key \"%c\" is not a%s integer", *kp,
			    *kp == 'l' ? "n" : " non-negative");
			return SQ_SLOT_INVALID;
		}
		switch (*kp) {
		case 'b':
			h->block = v.u;
			break;
		case 'g':
			h->gen = v.u;
			break;
		case 'c':
			if (v.u > 255)
				goto range;
			h->codec = (int)v.u;
			break;
		case 'l':
			if (v.neg ? v.i < INT32_MIN : v.u > INT32_MAX)
				goto range;
			h->level = v.neg ? (int)v.i : (int)v.u;
			break;
		case 'r':
			if (v.u > UINT32_MAX)
				goto range;
			h->raw_len = (uint32_t)v.u;
			break;
		case 's':
			if (v.u > UINT32_MAX)
				goto range;
			h->stored_len = (uint32_t)v.u;
			break;
		case 'x':
			h->sum = v.u;
			break;
		}
		continue;
range:
		say(why, whylen, "key \"%c\" out of range", *kp);
		return SQ_SLOT_INVALID;
	}
	if (c.p != c.end) {
		say(why, whylen, "%zu stray bytes after the header map",
		    (size_t)(c.end - c.p));
		return SQ_SLOT_INVALID;
	}
	if (seen != (1u << (sizeof(rec_keys) - 1)) - 1) {
		for (unsigned i = 0; i < sizeof(rec_keys) - 1; i++) {
			if (!(seen & (1u << i))) {
				say(why, whylen, "key \"%c\" missing",
				    rec_keys[i]);
				break;
			}
		}
		return SQ_SLOT_INVALID;
	}

	if (h->block != idx) {
		say(why, whylen, "record is for block %llu",
		    (unsigned long long)h->block);
		return SQ_SLOT_INVALID;
	}
	if (h->gen < 1) {
		say(why, whylen, "generation 0");
		return SQ_SLOT_INVALID;
	}
	if (h->raw_len < 1 || h->raw_len > bs) {
		say(why, whylen, "raw length %u not in 1..%u", h->raw_len, bs);
		return SQ_SLOT_INVALID;
	}
	if (h->codec == SQ_FMT_CODEC_ZERO) {
		if (h->stored_len != 0) {
			say(why, whylen, "zero record with stored length %u",
			    h->stored_len);
			return SQ_SLOT_INVALID;
		}
	} else if (h->stored_len < 1 || h->stored_len > bs ||
		   (h->codec == 0 && h->stored_len != h->raw_len)) {
		say(why, whylen, "stored length %u invalid for raw length %u "
		    "and codec %d", h->stored_len, h->raw_len, h->codec);
		return SQ_SLOT_INVALID;
	}
	return SQ_SLOT_VALID;

malformed:
	say(why, whylen, "malformed msgpack in header");
	return SQ_SLOT_INVALID;
}
