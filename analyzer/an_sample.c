/*
 * analyzer/an_sample.c - the cheap look at a block: a spread-out sample's
 * byte histogram, 4-byte repetition and text share, magic bytes at the
 * start of a file, and the class they add up to.
 */
#include <string.h>

#include "analyzer/analyzer_i.h"

/*
 * The sample is up to 32 chunks of 128 bytes spread evenly over the block:
 * 4 KiB, i.e. 1/32 of a 128 KiB block and 1/8 of a 32 KiB one.  Chunks
 * rather than single bytes, so that 4-byte sequences are seen whole.
 */
#define AN_CHUNK 64
#define AN_SAMPLE_MAX 2048
#define AN_SMALL_SAMPLE 512
#define AN_HASH_BITS 11

/*
 * log2 without libm (the core does not link it): the exponent from the
 * bits, the mantissa m in [1, 2) through the atanh series of
 * ln(m) = 2 atanh((m - 1) / (m + 1)), which with |t| <= 1/3 and five
 * terms is good to 1e-6: plenty for an entropy estimate.
 */
static double an_log2(double x)
{
	union {
		double d;
		uint64_t u;
	} v = { .d = x };
	int e = (int)((v.u >> 52) & 0x7ff) - 1023;
	double m, t, t2;

	v.u = (v.u & ~(0x7ffull << 52)) | (1023ull << 52);
	m = v.d;
	t = (m - 1.0) / (m + 1.0);
	t2 = t * t;
	return e + 2.8853900817779268 * t *
		   (1.0 + t2 * (1.0 / 3 + t2 * (1.0 / 5 + t2 * (1.0 / 7 +
		    t2 / 9))));
}

static uint32_t load32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint32_t sum_range(const uint32_t *h, int lo, int hi)
{
	uint32_t s = 0;

	for (int i = lo; i <= hi; i++)
		s += h[i];
	return s;
}

/* Structure hints of a sample that is mostly text, from its histogram. */
static unsigned an_hints(const uint32_t *h, uint32_t n)
{
	double f = 1.0 / n;
	double brace = (h['{'] + h['}'] + h['['] + h[']']) * f;
	double quote = h['"'] * f, colon = h[':'] * f, nl = h['\n'] * f;
	double digits = sum_range(h, '0', '9') * f;
	double sep = (h[','] + h[';'] + h['\t'] + h['|']) * f;
	uint32_t lt = h['<'], gt = h['>'];
	unsigned hints = 0;

	if (brace >= 0.005 && quote >= 0.02 && colon >= 0.005)
		hints |= SQ_AN_HINT_JSON;
	if (lt * f >= 0.01 && gt * f >= 0.01 && lt <= 2 * gt && gt <= 2 * lt)
		hints |= SQ_AN_HINT_XML;
	if (sep >= 0.03 && nl >= 0.002 && digits >= 0.1)
		hints |= SQ_AN_HINT_CSV;
	if (digits >= 0.08 && colon >= 0.01 && nl >= 0.004)
		hints |= SQ_AN_HINT_LOG;
	return hints;
}

void sq_an_features(const void *src, size_t len, struct sq_an_features *ft)
{
	const unsigned char *p = src;
	uint32_t h[256], tab[1u << AN_HASH_BITS];
	uint32_t rep = 0, pos = 0, n = 0, k, nchunks, chunk, want;
	uint32_t printable, lead, cont, bad;
	double sum = 0.0;

	memset(ft, 0, sizeof(*ft));
	if (!len)
		return;
	memset(h, 0, sizeof(h));
	memset(tab, 0, sizeof(tab));
	if (len >= 4096)
		want = len / 8 < AN_SAMPLE_MAX ? (uint32_t)(len / 8) :
						  AN_SAMPLE_MAX;
	else
		/* Tail blocks: cost does not matter, a stable estimate does. */
		want = len < AN_SMALL_SAMPLE ? (uint32_t)len : AN_SMALL_SAMPLE;
	chunk = want < AN_CHUNK ? want : AN_CHUNK;
	nchunks = want / chunk;
	for (k = 0; k < nchunks; k++) {
		size_t off = nchunks == 1 ? 0 :
			     (size_t)k * (len - chunk) / (nchunks - 1);
		const unsigned char *c = p + off;
		uint32_t z0 = h[0], j;

		for (j = 0; j < chunk; j++)
			h[c[j]]++;
		if (h[0] - z0 == chunk)
			ft->zero_chunks++;
		/* Exact 4-byte values, so random data scores ~0; a collision
		 * only evicts, which undercounts a little. */
		for (j = 0; j + 4 <= chunk; j++) {
			uint32_t v = load32(c + j);
			uint32_t s = (v * 2654435761u) >> (32 - AN_HASH_BITS);

			if (tab[s] == v)
				rep++;
			else
				tab[s] = v;
			pos++;
		}
		n += chunk;
	}
	ft->sample_len = n;
	ft->chunks = nchunks;
	for (k = 0; k < 256; k++) {
		if (!h[k])
			continue;
		ft->distinct++;
		sum += h[k] * an_log2(h[k]);
	}
	/* Miller-Madow: a small sample underestimates the entropy by about
	 * (K - 1) / (2 N ln 2), enough to make 512 random bytes look
	 * compressible. */
	ft->entropy = an_log2(n) - sum / n +
		      (ft->distinct - 1) / (2.0 * n * 0.6931471805599453);
	if (ft->entropy > 8.0)
		ft->entropy = 8.0;
	if (ft->entropy < 0.0)
		ft->entropy = 0.0;
	ft->repeat = pos ? (double)rep / pos : 0.0;
	ft->zeros = (double)h[0] / n;

	printable = sum_range(h, 0x20, 0x7e) + h['\t'] + h['\n'] + h['\r'];
	cont = sum_range(h, 0x80, 0xbf);
	lead = sum_range(h, 0xc2, 0xf4);
	bad = h[0xc0] + h[0xc1] + sum_range(h, 0xf5, 0xff);
	/* UTF-8 from the histogram: every lead byte brings one to three
	 * continuation bytes (chunk edges cut a few sequences). */
	if (lead && !bad && cont >= lead - lead / 8 && cont <= 3 * lead + 4) {
		ft->hints |= SQ_AN_HINT_UTF8;
		printable += lead + cont;
	}
	ft->text = (double)printable / n;
	if (ft->text >= 0.9)
		ft->hints |= an_hints(h, n);
}

/* ---- magic bytes ---- */

struct an_magic {
	uint8_t off;
	uint8_t len;
	const char *bytes;
	int cls;
};

static const struct an_magic an_magics[] = {
	{ 0, 2, "\x1f\x8b", SQ_AN_CLASS_COMPRESSED },		/* gzip */
	{ 0, 4, "PK\x03\x04", SQ_AN_CLASS_COMPRESSED },		/* zip, office */
	{ 0, 8, "\x89PNG\r\n\x1a\n", SQ_AN_CLASS_COMPRESSED },
	{ 0, 3, "\xff\xd8\xff", SQ_AN_CLASS_COMPRESSED },	/* jpeg */
	{ 0, 6, "GIF87a", SQ_AN_CLASS_COMPRESSED },
	{ 0, 6, "GIF89a", SQ_AN_CLASS_COMPRESSED },
	{ 8, 4, "WEBP", SQ_AN_CLASS_COMPRESSED },		/* RIFF....WEBP */
	{ 8, 4, "AVI ", SQ_AN_CLASS_COMPRESSED },
	{ 0, 3, "ID3", SQ_AN_CLASS_COMPRESSED },		/* mp3 */
	{ 0, 2, "\xff\xfb", SQ_AN_CLASS_COMPRESSED },		/* mp3 frame */
	{ 0, 2, "\xff\xf3", SQ_AN_CLASS_COMPRESSED },
	{ 0, 2, "\xff\xf1", SQ_AN_CLASS_COMPRESSED },		/* aac adts */
	{ 4, 4, "ftyp", SQ_AN_CLASS_COMPRESSED },		/* mp4, mov, heic */
	{ 0, 4, "\x1a\x45\xdf\xa3", SQ_AN_CLASS_COMPRESSED },	/* mkv, webm */
	{ 0, 4, "OggS", SQ_AN_CLASS_COMPRESSED },
	{ 0, 4, "fLaC", SQ_AN_CLASS_COMPRESSED },
	{ 0, 4, "\x28\xb5\x2f\xfd", SQ_AN_CLASS_COMPRESSED },	/* zstd */
	{ 0, 6, "\xfd" "7zXZ\0", SQ_AN_CLASS_COMPRESSED },	/* xz */
	{ 0, 3, "BZh", SQ_AN_CLASS_COMPRESSED },
	{ 0, 6, "7z\xbc\xaf\x27\x1c", SQ_AN_CLASS_COMPRESSED },
	{ 0, 4, "\x04\x22\x4d\x18", SQ_AN_CLASS_COMPRESSED },	/* lz4 frame */
	{ 0, 6, "Rar!\x1a\x07", SQ_AN_CLASS_COMPRESSED },
	/* Text parts of a PDF are still compressed: blocks whose sample
	 * looks like text ignore the prior. */
	{ 0, 5, "%PDF-", SQ_AN_CLASS_COMPRESSED },
	{ 0, 16, "SQLite format 3\0", SQ_AN_CLASS_DATABASE },
	{ 0, 4, "\x7f" "ELF", SQ_AN_CLASS_BINARY },
	{ 0, 2, "MZ", SQ_AN_CLASS_BINARY },			/* PE */
	{ 0, 4, "\xcf\xfa\xed\xfe", SQ_AN_CLASS_BINARY },	/* Mach-O */
	{ 0, 8, "!<arch>\n", SQ_AN_CLASS_BINARY },		/* ar, .deb */
	{ 0, 4, "QFI\xfb", SQ_AN_CLASS_BINARY },		/* qcow2 */
	{ 0, 5, "<?xml", SQ_AN_CLASS_STRUCTURED },
	{ 0, 2, "#!", SQ_AN_CLASS_TEXT },
};

int sq_an_magic_class(const void *head, size_t len)
{
	const unsigned char *p = head;
	size_t i;

	for (i = 0; i < sizeof(an_magics) / sizeof(an_magics[0]); i++) {
		const struct an_magic *m = &an_magics[i];

		if ((size_t)m->off + m->len <= len &&
		    memcmp(p + m->off, m->bytes, m->len) == 0)
			return m->cls;
	}
	return SQ_AN_CLASS_UNKNOWN;
}

uint32_t sq_an_sqlite_page(const void *head, size_t len)
{
	const unsigned char *p = head;
	uint32_t ps;

	if (len < 100 || memcmp(p, "SQLite format 3", 16) != 0)
		return 0;
	ps = (uint32_t)p[16] << 8 | p[17];
	if (ps == 1)
		return 65536;
	/* A power of two from 512 to 32768, as the file format says. */
	if (ps < 512 || (ps & (ps - 1)))
		return 0;
	return ps;
}

/*
 * SQLite b-tree pages at every @page bytes of the block: a page type of
 * 2, 5, 10 or 13, a cell count and a content start inside the page.
 * Page 1 carries the 100-byte database header first.
 */
static bool an_db_pages(const struct sq_an_input *in, uint32_t page)
{
	uint32_t n = 0, hit = 0;
	size_t off;

	if (!page || page > in->len || in->len % page)
		return false;
	for (off = 0; off + page <= in->len; off += page) {
		const unsigned char *pg = in->src + off;
		uint32_t cells, start;

		if (in->block_idx == 0 && off == 0)
			pg += 100;
		n++;
		if (pg[0] != 2 && pg[0] != 5 && pg[0] != 10 && pg[0] != 13)
			continue;
		cells = (uint32_t)pg[3] << 8 | pg[4];
		start = (uint32_t)pg[5] << 8 | pg[6];
		if (cells * 2 < page && start <= page && pg[7] < 64)
			hit++;
	}
	return n && hit * 2 >= n;
}

int sq_an_classify(const struct sq_an_input *in, const struct sq_an_features *ft)
{
	bool flat = ft->repeat < 0.03 && !ft->zero_chunks;
	double reject = in->reject_bits;

	if (ft->text >= 0.9)
		return ft->hints & (SQ_AN_HINT_JSON | SQ_AN_HINT_CSV |
				    SQ_AN_HINT_XML | SQ_AN_HINT_LOG) ?
		       SQ_AN_CLASS_STRUCTURED : SQ_AN_CLASS_TEXT;
	/* A small media file (icons, thumbnails): its few bytes cannot show
	 * a high entropy, and a codec's own header eats what it saves. */
	if (in->prior == SQ_AN_CLASS_COMPRESSED && in->len < 4096 &&
	    ft->repeat < 0.08)
		return SQ_AN_CLASS_COMPRESSED;
	/* n bytes hold at most log2(n) bits of entropy each. */
	if (ft->sample_len < 256 && reject > 0.92 * an_log2(ft->sample_len))
		reject = 0.92 * an_log2(ft->sample_len);
	if (ft->entropy >= reject && flat)
		return in->prior == SQ_AN_CLASS_COMPRESSED ?
		       SQ_AN_CLASS_COMPRESSED : SQ_AN_CLASS_RANDOM;
	/* Media whose sample is merely close to hopeless: the prior decides,
	 * and the trials catch the files it gets wrong.  Container formats
	 * (png chunks, mp4 boxes) repeat a few short byte strings, so a
	 * little repetition does not make them compressible. */
	if (in->prior == SQ_AN_CLASS_COMPRESSED && !ft->zero_chunks &&
	    ft->repeat < 0.10 && ft->entropy >= reject - 0.5)
		return SQ_AN_CLASS_COMPRESSED;
	if (in->prior == SQ_AN_CLASS_DATABASE ||
	    an_db_pages(in, in->db_page ? in->db_page : 4096))
		return SQ_AN_CLASS_DATABASE;
	return SQ_AN_CLASS_BINARY;
}
