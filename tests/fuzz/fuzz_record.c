/*
 * tests/fuzz/fuzz_record.c - libFuzzer target for the block record header
 * decoder (sq_rec_decode, meta/container_i.h).  Byte 0 picks the block
 * size (and, when >= 0x80, the generative mode), byte 1 the block index.
 *
 * Decode mode: the rest is the start of a slot.  A header that decodes
 * must re-encode to one that decodes to the same fields.
 * Generative mode: the rest drives a small msgpack writer that builds a
 * header docs/FORMAT.md calls valid (the seven keys in any order and any
 * integer encoding, mixed with unknown keys of any type and nesting); it
 * must decode as valid with exactly those fields.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "meta/container_i.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- generative mode ---- */

struct gen {
	const uint8_t *in, *in_end;	/* fuzzer bytes still to use */
	uint8_t out[SQ_REC_HEAD_MAX + 64];
	size_t len;			/* bytes written past the prefix */
	bool overflow;
};

static unsigned take8(struct gen *g)
{
	return g->in < g->in_end ? *g->in++ : 0;
}

static uint64_t take64(struct gen *g)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | take8(g);
	return v;
}

static void put(struct gen *g, const void *p, size_t n)
{
	if (g->len + n > SQ_FMT_REC_HDR_MAX) {
		g->overflow = true;
		return;
	}
	memcpy(g->out + SQ_FMT_REC_PREFIX + g->len, p, n);
	g->len += n;
}

static void put_be(struct gen *g, unsigned tag, uint64_t v, int nb)
{
	uint8_t b[9];

	b[0] = (uint8_t)tag;
	for (int i = 0; i < nb; i++)
		b[1 + i] = (uint8_t)(v >> (8 * (nb - 1 - i)));
	put(g, b, 1 + (size_t)nb);
}

/* A non-negative integer in any encoding that holds it. */
static void put_uint(struct gen *g, uint64_t v)
{
	unsigned how = take8(g) % 9;

	if (how == 0 && v < 0x80) {
		put_be(g, (unsigned)v, 0, 0);
	} else if (how <= 4) {		/* uint 8..64 */
		int nb = 1 << ((how ? how : 1) - 1);

		while (nb < 8 && (v >> (8 * nb)))
			nb *= 2;
		put_be(g, 0xcc + (unsigned)__builtin_ctz((unsigned)nb), v, nb);
	} else {			/* int 8..64 */
		int nb = 1 << (how - 5);

		while (nb < 8 && (v >> (8 * nb - 1)))
			nb *= 2;
		if (v >> 63)		/* no signed encoding holds it */
			put_be(g, 0xcf, v, 8);
		else
			put_be(g, 0xd0 + (unsigned)__builtin_ctz((unsigned)nb),
			       v, nb);
	}
}

static void put_int(struct gen *g, int64_t v)
{
	uint64_t u;
	int nb;

	if (v >= 0) {
		put_uint(g, (uint64_t)v);
		return;
	}
	memcpy(&u, &v, sizeof(u));
	if (v >= -32 && take8(g) % 2 == 0) {
		put_be(g, (unsigned)(u & 0xff), 0, 0);	/* negative fixint */
		return;
	}
	nb = 1 << (take8(g) % 4);
	while (nb < 8 && v < -((int64_t)1 << (8 * nb - 1)))
		nb *= 2;
	put_be(g, 0xd0 + (unsigned)__builtin_ctz((unsigned)nb),
	       nb == 8 ? u : u & ((UINT64_C(1) << (8 * nb)) - 1), nb);
}

static void put_str(struct gen *g, unsigned n, bool str8)
{
	uint8_t b[32];

	for (unsigned i = 0; i < n; i++)
		b[i] = (uint8_t)take8(g);
	if (str8)
		put_be(g, 0xd9, n, 1);
	else
		put_be(g, 0xa0 | n, 0, 0);
	put(g, b, n);
}

/* Any well-formed msgpack item, nested up to @depth. */
static void put_any(struct gen *g, int depth)
{
	unsigned t = take8(g), n;

	switch (t % 12) {
	case 0:				/* nil, false, true */
		put_be(g, (unsigned)"\xc0\xc2\xc3"[(t >> 4) % 3], 0, 0);
		break;
	case 1:
		put_uint(g, take64(g) >> (take8(g) % 64));
		break;
	case 2:
		put_int(g, -(int64_t)(take64(g) >> (1 + take8(g) % 63)) - 1);
		break;
	case 3:
		put_be(g, 0xca, take64(g) & 0xffffffff, 4);
		break;
	case 4:
		put_be(g, 0xcb, take64(g), 8);
		break;
	case 5:
		put_str(g, take8(g) % 8, t & 0x80);
		break;
	case 6:				/* bin 8 */
		n = take8(g) % 8;
		put_be(g, 0xc4, n, 1);
		for (unsigned i = 0; i < n; i++)
			put_be(g, take8(g), 0, 0);
		break;
	case 7:				/* fixext 1..16, ext 8; any type */
		n = take8(g) % 6;
		if (n < 5) {
			put_be(g, 0xd4 + n, 0, 0);
			n = 1u << n;
		} else {
			n = take8(g) % 8;
			put_be(g, 0xc7, n, 1);
		}
		put_be(g, take8(g), 0, 0);	/* type, -1 included */
		for (unsigned i = 0; i < n; i++)
			put_be(g, take8(g), 0, 0);
		break;
	case 8:
	case 9:				/* array / map, fix or 16 */
		n = depth > 0 ? take8(g) % 4 : 0;
		if (t & 0x80)
			put_be(g, t % 12 == 8 ? 0xdc : 0xde, n, 2);
		else
			put_be(g, (t % 12 == 8 ? 0x90 : 0x80) | n, 0, 0);
		for (unsigned i = 0; i < n * (t % 12 == 8 ? 1 : 2); i++)
			put_any(g, depth - 1);
		break;
	default:
		put_be(g, take8(g) & 0x7f, 0, 0);	/* positive fixint */
		break;
	}
}

/* An unknown key: anything but a 1-byte str naming one of ours. */
static void put_unknown_key(struct gen *g)
{
	size_t before = g->len;
	const uint8_t *k;

	put_any(g, 2);
	if (g->overflow)
		return;
	k = g->out + SQ_FMT_REC_PREFIX + before;
	if ((k[0] == 0xa1 && memchr("bgclrsx", k[1], 7)) ||
	    (k[0] == 0xd9 && k[1] == 1 && memchr("bgclrsx", k[2], 7)))
		g->out[SQ_FMT_REC_PREFIX + before + (k[0] == 0xa1 ? 1 : 2)] =
			'z';
}

static void generate(const uint8_t *data, size_t size, uint64_t idx,
		     uint32_t bs)
{
	static const int codecs[] = { 0, 1, 2, 3, 4, 255, 7, 200 };
	struct gen g = { .in = data, .in_end = data + size };
	struct sq_rec_hdr want, got;
	unsigned nextra = 0, order[7], emitted = 0;
	enum sq_slot_state st;
	char why[128];

	memset(&want, 0, sizeof(want));
	want.block = idx;
	want.gen = take64(&g) >> (take8(&g) % 64);
	if (want.gen == 0)
		want.gen = 1;
	want.codec = codecs[take8(&g) % 8];
	want.level = (int)(int32_t)(take64(&g) & 0xffffffff);
	want.raw_len = 1 + (uint32_t)(take64(&g) % bs);
	if (want.codec == SQ_FMT_CODEC_ZERO)
		want.stored_len = 0;
	else if (want.codec == 0)
		want.stored_len = want.raw_len;
	else
		want.stored_len = 1 + (uint32_t)(take64(&g) % bs);
	want.sum = take64(&g);

	/* Key order: a permutation of the seven, picked by the input. */
	for (unsigned i = 0; i < 7; i++)
		order[i] = i;
	for (unsigned i = 6; i > 0; i--) {
		unsigned j = take8(&g) % (i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	nextra = take8(&g) % 4;
	if (take8(&g) & 1)
		put_be(&g, 0x80 | (7 + nextra), 0, 0);
	else
		put_be(&g, 0xde, 7 + nextra, 2);
	for (unsigned e = 0; e < 7 + nextra; e++) {
		bool extra = emitted == 7 ||
			     (e - emitted < nextra && take8(&g) % 3 == 0);
		unsigned k;

		if (extra) {
			put_unknown_key(&g);
			put_any(&g, 2);
			continue;
		}
		k = order[emitted++];
		if (take8(&g) % 2)		/* fixstr or str 8 */
			put_be(&g, 0xa1, 0, 0);
		else
			put_be(&g, 0xd9, 1, 1);
		put_be(&g, (unsigned)"bgclrsx"[k], 0, 0);
		switch (k) {
		case 0: put_uint(&g, want.block); break;
		case 1: put_uint(&g, want.gen); break;
		case 2: put_uint(&g, (uint64_t)want.codec); break;
		case 3: put_int(&g, want.level); break;
		case 4: put_uint(&g, want.raw_len); break;
		case 5: put_uint(&g, want.stored_len); break;
		default: put_uint(&g, want.sum); break;
		}
	}
	if (g.overflow || emitted != 7 || g.len < 1)
		return;
	memcpy(g.out, SQ_FMT_REC_MAGIC, 4);
	sq_put_le16(g.out + 4, (uint16_t)g.len);
	sq_put_le16(g.out + 6, 0);
	sq_put_le64(g.out + 8, XXH3_64bits(g.out + SQ_FMT_REC_PREFIX, g.len));

	st = sq_rec_decode(g.out, SQ_FMT_REC_PREFIX + g.len, idx, bs, &got,
			   why, sizeof(why));
	if (st != SQ_SLOT_VALID)
		abort();		/* why says what the decoder disliked */
	if (got.block != want.block || got.gen != want.gen ||
	    got.codec != want.codec || got.level != want.level ||
	    got.raw_len != want.raw_len || got.stored_len != want.stored_len ||
	    got.sum != want.sum || got.hdr_len != g.len)
		abort();
}

/* ---- decode mode ---- */

static void decode(const uint8_t *data, size_t size, uint64_t idx,
		   uint32_t bs)
{
	struct sq_rec_hdr h, h2;
	uint8_t *buf, enc[SQ_REC_HEAD_MAX];
	enum sq_slot_state st;
	char why[128];
	ssize_t n;

	/* An exact-size copy, so ASan sees any read past the end. */
	buf = malloc(size ? size : 1);
	if (!buf)
		abort();
	memcpy(buf, data, size);

	memset(&h, 0, sizeof(h));
	st = sq_rec_decode(buf, size, idx, bs, &h, why, sizeof(why));
	if (st == SQ_SLOT_VALID) {
		if (h.block != idx || h.gen < 1 || h.raw_len < 1 ||
		    h.raw_len > bs || h.stored_len > bs ||
		    h.hdr_len < 1 || h.hdr_len > SQ_FMT_REC_HDR_MAX)
			abort();
		n = sq_rec_encode(&h, enc);
		if (n < SQ_FMT_REC_PREFIX || n > SQ_REC_HEAD_MAX)
			abort();
		memset(&h2, 0, sizeof(h2));
		if (sq_rec_decode(enc, (size_t)n, idx, bs, &h2, why,
				  sizeof(why)) != SQ_SLOT_VALID)
			abort();
		if (h2.block != h.block || h2.gen != h.gen ||
		    h2.codec != h.codec || h2.level != h.level ||
		    h2.raw_len != h.raw_len || h2.stored_len != h.stored_len ||
		    h2.sum != h.sum)
			abort();
	} else if (st != SQ_SLOT_EMPTY && st != SQ_SLOT_INVALID) {
		abort();
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t bs;
	uint64_t idx;

	if (size < 2)
		return 0;
	bs = (uint32_t)1 << (SQ_FMT_MIN_BLOCK_SHIFT + (data[0] & 0x7f) % 9);
	idx = data[1] % 4;
	if (data[0] & 0x80)
		generate(data + 2, size - 2, idx, bs);
	else
		decode(data + 2, size - 2, idx, bs);
	return 0;
}
