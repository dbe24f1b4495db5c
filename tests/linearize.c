/* linearize.c - history recording and the per-key Wing & Gong linearizability search. */
#include "linearize.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define LIN_NEVER       UINT64_MAX
#define LIN_PENDING     (-1)
#define LIN_NONE        SIZE_MAX
#define LIN_NO_STATE    UINT32_MAX
#define LIN_SHOW_PREFIX 10
#define LIN_SHOW_CANDS  12
#define LIN_SHOW_KEYS   3

/* Rolling hash base: h(s ++ c) = h(s) * B + c + 1, so h(a ++ b) = h(a) * B^|b| + h(b). */
#define LIN_HASH_BASE UINT64_C(0x100000001b3)

typedef struct lin_pair {
	unsigned char *key;
	size_t klen;
	unsigned char *val;
	size_t vlen;
} lin_pair;

typedef struct lin_rec {
	uint64_t client;
	lin_op op;
	int status; /* lin_status, or LIN_PENDING */
	uint64_t inv, ret;
	unsigned char *key; /* SCAN: start */
	size_t klen;
	unsigned char *val; /* PUT, APPEND: value; SCAN: end (length 0: unbounded) */
	size_t vlen;
	unsigned char *res; /* GET: the value read, NULL when absent */
	size_t rlen;
	lin_pair *pairs; /* SCAN result */
	size_t npairs, cap_pairs;
	unsigned char *lim; /* SCAN: covered end set by lin_scan_limit */
	size_t limlen;
	bool limited;
} lin_rec;

struct lin_history {
	pthread_mutex_t mu;
	uint64_t clock;
	lin_rec *recs;
	size_t n, cap;
};

static void lin_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "linearize: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		lin_die("out of memory (%zu bytes)", n);
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		lin_die("out of memory (%zu bytes)", n);
	return q;
}

static unsigned char *dup_bytes(const void *p, size_t n)
{
	unsigned char *q;

	if (p == NULL && n > 0)
		lin_die("NULL pointer with length %zu", n);
	q = xmalloc(n);
	if (n > 0)
		memcpy(q, p, n);
	return q;
}

static int bytes_cmp(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* ------------------------------------------------------------------------------------------ */
/* Recording                                                                                  */
/* ------------------------------------------------------------------------------------------ */

lin_history *lin_history_new(void)
{
	lin_history *h = xmalloc(sizeof(*h));

	memset(h, 0, sizeof(*h));
	if (pthread_mutex_init(&h->mu, NULL) != 0)
		lin_die("pthread_mutex_init failed");
	return h;
}

void lin_history_free(lin_history *h)
{
	if (h == NULL)
		return;
	for (size_t i = 0; i < h->n; i++) {
		lin_rec *r = &h->recs[i];

		for (size_t j = 0; j < r->npairs; j++) {
			free(r->pairs[j].key);
			free(r->pairs[j].val);
		}
		free(r->pairs);
		free(r->key);
		free(r->val);
		free(r->res);
		free(r->lim);
	}
	free(h->recs);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

size_t lin_invoke(lin_history *h, uint64_t client, lin_op op, const void *key, size_t klen,
                  const void *value, size_t vlen)
{
	unsigned char *k, *v = NULL;
	lin_rec *r;
	size_t id;

	if (op != LIN_PUT && op != LIN_APPEND && op != LIN_GET && op != LIN_DELETE &&
	    op != LIN_SCAN)
		lin_die("lin_invoke: bad op %d", (int)op);
	k = dup_bytes(key, klen);
	if (op == LIN_PUT || op == LIN_APPEND || op == LIN_SCAN)
		v = dup_bytes(value, vlen);
	else
		vlen = 0;
	pthread_mutex_lock(&h->mu);
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 256;
		h->recs = xrealloc(h->recs, h->cap * sizeof(*h->recs));
	}
	id = h->n++;
	r = &h->recs[id];
	memset(r, 0, sizeof(*r));
	r->client = client;
	r->op = op;
	r->status = LIN_PENDING;
	r->key = k;
	r->klen = klen;
	r->val = v;
	r->vlen = vlen;
	r->inv = ++h->clock;
	r->ret = LIN_NEVER;
	pthread_mutex_unlock(&h->mu);
	return id;
}

/* The pending scan id; called with the mutex held. */
static lin_rec *pending_scan(lin_history *h, size_t id, const char *fn)
{
	if (id >= h->n || h->recs[id].op != LIN_SCAN || h->recs[id].status != LIN_PENDING)
		lin_die("%s: op %zu is not a pending scan", fn, id);
	return &h->recs[id];
}

void lin_scan_add(lin_history *h, size_t id, const void *key, size_t klen, const void *value,
                  size_t vlen)
{
	lin_pair p = {dup_bytes(key, klen), klen, dup_bytes(value, vlen), vlen};
	lin_rec *r;

	pthread_mutex_lock(&h->mu);
	r = pending_scan(h, id, "lin_scan_add");
	if (r->npairs == r->cap_pairs) {
		r->cap_pairs = r->cap_pairs ? r->cap_pairs * 2 : 8;
		r->pairs = xrealloc(r->pairs, r->cap_pairs * sizeof(*r->pairs));
	}
	r->pairs[r->npairs++] = p;
	pthread_mutex_unlock(&h->mu);
}

void lin_scan_limit(lin_history *h, size_t id, const void *end, size_t elen)
{
	unsigned char *e = dup_bytes(end, elen);
	unsigned char *old;
	lin_rec *r;

	pthread_mutex_lock(&h->mu);
	r = pending_scan(h, id, "lin_scan_limit");
	old = r->lim;
	r->lim = e;
	r->limlen = elen;
	r->limited = true;
	pthread_mutex_unlock(&h->mu);
	free(old);
}

void lin_complete(lin_history *h, size_t id, lin_status status, const void *result, size_t rlen)
{
	unsigned char *res = result != NULL ? dup_bytes(result, rlen) : NULL;
	lin_rec *r;

	if (status != LIN_OK && status != LIN_FAIL && status != LIN_UNKNOWN)
		lin_die("lin_complete: bad status %d", (int)status);
	pthread_mutex_lock(&h->mu);
	if (id >= h->n || h->recs[id].status != LIN_PENDING)
		lin_die("lin_complete: op %zu is unknown or already complete", id);
	r = &h->recs[id];
	r->status = (int)status;
	r->ret = ++h->clock;
	if (r->op == LIN_GET && status == LIN_OK) {
		r->res = res;
		r->rlen = rlen;
		res = NULL;
	}
	pthread_mutex_unlock(&h->mu);
	free(res);
}

size_t lin_history_size(lin_history *h)
{
	size_t n;

	pthread_mutex_lock(&h->mu);
	n = h->n;
	pthread_mutex_unlock(&h->mu);
	return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Explanations                                                                               */
/* ------------------------------------------------------------------------------------------ */

typedef struct strbuf {
	char *p;
	size_t len, cap;
} strbuf;

static void sb_printf(strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		lin_die("vsnprintf failed");
	if (sb->len + (size_t)n + 1 > sb->cap) {
		sb->cap = (sb->len + (size_t)n + 1) * 2;
		sb->p = xrealloc(sb->p, sb->cap);
	}
	va_start(ap, fmt);
	vsnprintf(sb->p + sb->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	sb->len += (size_t)n;
}

static void sb_raw(strbuf *sb, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '"' || p[i] == '\\')
			sb_printf(sb, "\\%c", p[i]);
		else if (p[i] >= 0x20 && p[i] < 0x7f)
			sb_printf(sb, "%c", p[i]);
		else
			sb_printf(sb, "\\x%02x", p[i]);
	}
}

/* A quoted, escaped rendering; long values show their head and tail. */
static void sb_bytes(strbuf *sb, const unsigned char *p, size_t n)
{
	sb_printf(sb, "\"");
	if (n <= 72) {
		sb_raw(sb, p, n);
	} else {
		sb_raw(sb, p, 24);
		sb_printf(sb, "\"...(%zu bytes)...\"", n - 56);
		sb_raw(sb, p + n - 32, 32);
	}
	sb_printf(sb, "\"");
}

static const char *op_name(lin_op op)
{
	static const char *const names[] = {"PUT", "APPEND", "GET", "DELETE", "SCAN"};

	return names[op];
}

/* One operation of the history; as_read shows a scan as its read (rv, or absent) of one key. */
static void sb_rec(strbuf *sb, const lin_rec *r, size_t id, bool as_read, const unsigned char *rv,
                   size_t rvlen, bool rabsent)
{
	sb_printf(sb, "op %zu client %" PRIu64 " %s ", id, r->client, op_name(r->op));
	if (r->op == LIN_SCAN) {
		sb_printf(sb, "[");
		sb_bytes(sb, r->key, r->klen);
		sb_printf(sb, ", ");
		if (r->limited)
			sb_bytes(sb, r->lim, r->limlen);
		else if (r->vlen > 0)
			sb_bytes(sb, r->val, r->vlen);
		else
			sb_printf(sb, "end");
		sb_printf(sb, ")");
		if (as_read) {
			sb_printf(sb, " read ");
			if (rabsent)
				sb_printf(sb, "absent");
			else
				sb_bytes(sb, rv, rvlen);
		} else {
			sb_printf(sb, " -> %zu pairs", r->npairs);
		}
	} else {
		sb_bytes(sb, r->key, r->klen);
		if (r->op == LIN_PUT || r->op == LIN_APPEND) {
			sb_printf(sb, " ");
			sb_bytes(sb, r->val, r->vlen);
		} else if (r->op == LIN_GET && r->status == LIN_OK) {
			sb_printf(sb, " -> ");
			if (r->res == NULL)
				sb_printf(sb, "absent");
			else
				sb_bytes(sb, r->res, r->rlen);
		}
	}
	if (r->ret == LIN_NEVER)
		sb_printf(sb, " [%" PRIu64 ", -]", r->inv);
	else
		sb_printf(sb, " [%" PRIu64 ", %" PRIu64 "]", r->inv, r->ret);
	sb_printf(sb, " %s\n", r->status == LIN_OK ? "ok" : "unknown");
}

/* ------------------------------------------------------------------------------------------ */
/* Per-key search                                                                             */
/* ------------------------------------------------------------------------------------------ */

enum { K_PUT, K_APPEND, K_DELETE, K_READ };

/* One operation on the key under check. The required ones (OK) come first in kcheck.ops, then
 * the unknown writes. */
typedef struct kop {
	size_t rec;
	int kind;
	uint32_t val; /* K_PUT: the value; K_READ: the value read (0: absent) */
	const unsigned char *rv;
	size_t rvlen;
	uint64_t apph, apppow; /* K_APPEND: hash of rv and LIN_HASH_BASE^rvlen */
	uint64_t inv, ret;     /* ret is LIN_NEVER for an unknown write */
	/* Its bit in the linearized-set bitset and its Zobrist hash; both 0 for unknown deletes. */
	uint64_t zob;
	size_t word;
	uint64_t mask;
	/* Unknown put or append: the latest one invoked before it with the same effect (or
	 * LIN_NONE), and how many reads that could have seen it are not linearized. */
	size_t twin, nobs;
	/* Required read: kcheck.obs[obs .. obs + n_obs) are the unknown writes it could have seen.
	 */
	size_t obs, n_obs;
	size_t call, retn; /* entry indexes, or LIN_NONE */
} kop;

/* An invocation or return. Required ops' entries form the main list (sentinel ent[0]); unknown
 * puts' and appends' invocations form the unknown list (sentinel ent[1]). Both are in time
 * order. Unknown deletes have no entries: kcheck.dels holds them. */
typedef struct kent {
	uint64_t t;
	size_t op;
	bool call;
	size_t prev, next;
} kent;

#define MAIN_HEAD 0
#define UNK_HEAD  1

/* A model value; id 0 is "absent". */
typedef struct vstate {
	unsigned char *b;
	size_t len;
	uint64_t h;
} vstate;

/* A visited search node: linearized set (its bitset lives in the arena at off; unknown deletes
 * are counted in kdel instead), value, taint. */
typedef struct memo_ent {
	uint64_t h;
	uint32_t state;
	bool taint;
	size_t kdel;
	size_t off;
} memo_ent;

typedef struct frame {
	size_t op;
	uint32_t prev;
	bool prev_taint;
	size_t bound; /* the return entry that bounded the choice of an unknown write */
} frame;

typedef struct kcheck {
	kop *ops;
	size_t n, nreq;
	kent *ent;
	size_t *dels; /* the unknown deletes, by invocation */
	size_t ndels;
	size_t *obs;

	vstate *st;
	size_t nst, capst;
	uint32_t *stab; /* interning table: id + 1, 0 for empty */
	size_t stab_cap;

	memo_ent *memo;
	size_t memo_n, memo_capn;
	uint32_t *mtab; /* memo index: entry + 1, 0 for empty */
	size_t mtab_cap;
	uint64_t *arena;
	bool memo_full;

	size_t words; /* bitset words */
	size_t mem_used, mem_max;
	bool oom;

	/* The deepest dead end: its prefix, value, the op that had to come next, candidates. */
	bool have_best;
	size_t *best;
	size_t best_n;
	uint32_t best_state;
	size_t best_blocked;
	size_t best_cands[LIN_SHOW_CANDS];
	size_t best_ncands;
} kcheck;

static bool mem_take(kcheck *kc, size_t n)
{
	if (kc->mem_used + n > kc->mem_max)
		return false;
	kc->mem_used += n;
	return true;
}

static uint64_t hash_bytes(const unsigned char *p, size_t n, uint64_t *pow)
{
	uint64_t h = 0, b = 1;

	for (size_t i = 0; i < n; i++) {
		h = h * LIN_HASH_BASE + p[i] + 1;
		b *= LIN_HASH_BASE;
	}
	if (pow != NULL)
		*pow = b;
	return h;
}

static size_t stab_slot(uint64_t h, size_t len, size_t cap)
{
	return (size_t)mix64(h ^ ((uint64_t)len * UINT64_C(0x9e3779b97f4a7c15))) & (cap - 1);
}

static bool stab_grow(kcheck *kc)
{
	size_t cap = kc->stab_cap ? kc->stab_cap * 2 : 1024;
	uint32_t *t;

	if (!mem_take(kc, cap * sizeof(*t)))
		return false;
	t = xmalloc(cap * sizeof(*t));
	memset(t, 0, cap * sizeof(*t));
	for (size_t id = 1; id < kc->nst; id++) {
		size_t s = stab_slot(kc->st[id].h, kc->st[id].len, cap);

		while (t[s] != 0)
			s = (s + 1) & (cap - 1);
		t[s] = (uint32_t)id + 1;
	}
	kc->mem_used -= kc->stab_cap * sizeof(*t);
	free(kc->stab);
	kc->stab = t;
	kc->stab_cap = cap;
	return true;
}

/* The id of the value a ++ b (hash h), created if new; LIN_NO_STATE when out of budget. */
static uint32_t intern2(kcheck *kc, const unsigned char *a, size_t alen, const unsigned char *b,
                        size_t blen, uint64_t h)
{
	size_t len = alen + blen, s;
	vstate *v;

	if ((kc->nst + 1) * 2 > kc->stab_cap && !stab_grow(kc))
		return LIN_NO_STATE;
	for (s = stab_slot(h, len, kc->stab_cap); kc->stab[s] != 0;
	     s = (s + 1) & (kc->stab_cap - 1)) {
		v = &kc->st[kc->stab[s] - 1];
		if (v->h == h && v->len == len && (alen == 0 || memcmp(v->b, a, alen) == 0) &&
		    (blen == 0 || memcmp(v->b + alen, b, blen) == 0))
			return kc->stab[s] - 1;
	}
	if (kc->nst >= UINT32_MAX - 1 || !mem_take(kc, len + sizeof(vstate)))
		return LIN_NO_STATE;
	if (kc->nst == kc->capst) {
		kc->capst *= 2;
		kc->st = xrealloc(kc->st, kc->capst * sizeof(*kc->st));
	}
	v = &kc->st[kc->nst];
	v->b = xmalloc(len);
	if (alen > 0)
		memcpy(v->b, a, alen);
	if (blen > 0)
		memcpy(v->b + alen, b, blen);
	v->len = len;
	v->h = h;
	kc->stab[s] = (uint32_t)kc->nst + 1;
	return (uint32_t)kc->nst++;
}

/* Applies op to state: false when op cannot take effect in it (a read that disagrees). */
static bool apply(kcheck *kc, const kop *o, uint32_t state, uint32_t *out)
{
	const vstate *cur;

	switch (o->kind) {
	case K_PUT:
		*out = o->val;
		return true;
	case K_DELETE:
		*out = 0;
		return true;
	case K_READ:
		*out = state;
		return state == o->val;
	default:
		cur = &kc->st[state];
		*out = intern2(kc, cur->b, cur->len, o->rv, o->rvlen, cur->h * o->apppow + o->apph);
		if (*out == LIN_NO_STATE) {
			kc->oom = true;
			return false;
		}
		return true;
	}
}

static uint64_t memo_hash(uint64_t zob, uint32_t state, bool taint)
{
	return mix64(zob ^ (((uint64_t)state * 2 + taint) * UINT64_C(0xd6e8feb86659fd93)));
}

static bool memo_grow(kcheck *kc)
{
	size_t cap = kc->mtab_cap ? kc->mtab_cap * 2 : 4096, capn = cap / 2;
	size_t more = (cap - kc->mtab_cap) * sizeof(*kc->mtab) +
	              (capn - kc->memo_capn) * (sizeof(*kc->memo) + kc->words * sizeof(uint64_t));
	uint32_t *t;

	if (capn >= UINT32_MAX || !mem_take(kc, more))
		return false;
	kc->memo = xrealloc(kc->memo, capn * sizeof(*kc->memo));
	kc->arena = xrealloc(kc->arena, capn * kc->words * sizeof(uint64_t));
	kc->memo_capn = capn;
	t = xmalloc(cap * sizeof(*t));
	memset(t, 0, cap * sizeof(*t));
	for (size_t i = 0; i < kc->memo_n; i++) {
		size_t s;

		for (s = kc->memo[i].h & (cap - 1); t[s] != 0; s = (s + 1) & (cap - 1))
			;
		t[s] = (uint32_t)i + 1;
	}
	free(kc->mtab);
	kc->mtab = t;
	kc->mtab_cap = cap;
	return true;
}

/*
 * Records the node (bits, state, taint, kdel), zob hashing bits. False when the search need not
 * go there: a node differing at most by fewer unknown deletes used was visited. That node is no
 * ancestor (between the two only deletes would have been linearized, and the first would have
 * made the value absent, the others no-ops), so its subtree was searched in full and failed;
 * with more deletes still pending, it had every option this one has. A full memo records
 * nothing and answers true.
 */
static bool memo_visit(kcheck *kc, const uint64_t *bits, uint64_t zob, uint32_t state, bool taint,
                       size_t kdel)
{
	uint64_t h = memo_hash(zob, state, taint);
	size_t s;

	if (!kc->memo_full && kc->memo_n == kc->memo_capn && !memo_grow(kc))
		kc->memo_full = true;
	if (kc->mtab_cap == 0)
		return true;
	for (s = h & (kc->mtab_cap - 1); kc->mtab[s] != 0; s = (s + 1) & (kc->mtab_cap - 1)) {
		memo_ent *m = &kc->memo[kc->mtab[s] - 1];

		if (m->h == h && m->state == state && m->taint == taint &&
		    memcmp(kc->arena + m->off, bits, kc->words * sizeof(uint64_t)) == 0) {
			if (m->kdel <= kdel)
				return false;
			m->kdel = kdel;
			return true;
		}
	}
	if (kc->memo_n == kc->memo_capn)
		return true;
	kc->memo[kc->memo_n] = (memo_ent){h, state, taint, kdel, kc->memo_n * kc->words};
	memcpy(kc->arena + kc->memo_n * kc->words, bits, kc->words * sizeof(uint64_t));
	kc->mtab[s] = (uint32_t)++kc->memo_n;
	return true;
}

static void unlink_ent(kent *e, size_t i)
{
	e[e[i].prev].next = e[i].next;
	e[e[i].next].prev = e[i].prev;
}

static void relink_ent(kent *e, size_t i)
{
	e[e[i].prev].next = i;
	e[e[i].next].prev = i;
}

/* Removes o's entries from their lists; unlift() undoes the last lift() not yet undone. */
static void lift(kcheck *kc, const kop *o)
{
	if (o->call != LIN_NONE)
		unlink_ent(kc->ent, o->call);
	if (o->retn != LIN_NONE)
		unlink_ent(kc->ent, o->retn);
}

static void unlift(kcheck *kc, const kop *o)
{
	if (o->retn != LIN_NONE)
		relink_ent(kc->ent, o->retn);
	if (o->call != LIN_NONE)
		relink_ent(kc->ent, o->call);
}

/* Linearizing required read r: the unknown writes it was the last pending reader of are of no
 * more use (see may_take), so they leave the unknown list; observers_pop() undoes it. */
static void observers_push(kcheck *kc, const uint64_t *bits, const kop *r)
{
	for (size_t i = 0; i < r->n_obs; i++) {
		kop *u = &kc->ops[kc->obs[r->obs + i]];

		if (--u->nobs == 0 && !(bits[u->word] & u->mask))
			unlink_ent(kc->ent, u->call);
	}
}

static void observers_pop(kcheck *kc, const uint64_t *bits, const kop *r)
{
	for (size_t i = r->n_obs; i-- > 0;) {
		kop *u = &kc->ops[kc->obs[r->obs + i]];

		if (u->nobs++ == 0 && !(bits[u->word] & u->mask))
			relink_ent(kc->ent, u->call);
	}
}

/* Called at a dead end (the return entry ret reached): remembers the deepest one. */
static void note_dead_end(kcheck *kc, const frame *stack, size_t depth, uint32_t state, size_t kdel,
                          size_t ret)
{
	const kent *e = kc->ent;

	if (kc->have_best && depth <= kc->best_n)
		return;
	kc->have_best = true;
	for (size_t i = 0; i < depth; i++)
		kc->best[i] = stack[i].op;
	kc->best_n = depth;
	kc->best_state = state;
	kc->best_blocked = e[ret].op;
	kc->best_ncands = 0;
	for (size_t i = e[MAIN_HEAD].next; i != ret && kc->best_ncands < LIN_SHOW_CANDS;
	     i = e[i].next)
		kc->best_cands[kc->best_ncands++] = e[i].op;
	for (size_t i = e[UNK_HEAD].next;
	     i != UNK_HEAD && e[i].t < e[ret].t && kc->best_ncands < LIN_SHOW_CANDS; i = e[i].next)
		kc->best_cands[kc->best_ncands++] = e[i].op;
	if (kdel < kc->ndels && kc->ops[kc->dels[kdel]].inv < e[ret].t &&
	    kc->best_ncands < LIN_SHOW_CANDS)
		kc->best_cands[kc->best_ncands++] = kc->dels[kdel];
}

static int kent_cmp(const void *a, const void *b)
{
	const kent *x = a, *y = b;

	return x->t < y->t ? -1 : x->t > y->t;
}

/* Builds the two entry lists of kc->ops. */
static void build_entries(kcheck *kc)
{
	size_t m = 2, last[2] = {MAIN_HEAD, UNK_HEAD};

	kc->ent = xmalloc((2 * kc->n + 2) * sizeof(*kc->ent));
	for (size_t i = 0; i < kc->n; i++) {
		const kop *o = &kc->ops[i];

		if (o->ret == LIN_NEVER && (o->kind == K_DELETE || o->nobs == 0))
			continue;
		kc->ent[m++] = (kent){o->inv, i, true, 0, 0};
		if (o->ret != LIN_NEVER)
			kc->ent[m++] = (kent){o->ret, i, false, 0, 0};
	}
	qsort(kc->ent + 2, m - 2, sizeof(*kc->ent), kent_cmp);
	kc->ent[MAIN_HEAD] = (kent){0, LIN_NONE, false, MAIN_HEAD, MAIN_HEAD};
	kc->ent[UNK_HEAD] = (kent){0, LIN_NONE, false, UNK_HEAD, UNK_HEAD};
	for (size_t e = 2; e < m; e++) {
		kop *o = &kc->ops[kc->ent[e].op];
		int list = o->ret == LIN_NEVER;

		kc->ent[e].prev = last[list];
		kc->ent[e].next = list;
		kc->ent[last[list]].next = e;
		kc->ent[list].prev = e;
		last[list] = e;
		if (kc->ent[e].call)
			o->call = e;
		else
			o->retn = e;
	}
}

/*
 * Whether the search may linearize o next, from value state (next after o) with the given
 * taint. Unknown writes make the search expensive (each may take effect anywhere after its
 * invocation, or never), so moves dominated by leaving an unknown write out are skipped; if a
 * linearization exists, one avoiding them all does too:
 *   - an unknown write that leaves the value as it is: whatever follows could follow without it;
 *   - a put or delete while tainted, i.e. with an unknown write linearized since the last read:
 *     the overwrite erases that write's effect before anything saw it, so the same sequence
 *     without it is valid and reaches the same value;
 *   - an unknown put or append whose every possible reader (a read returning after its
 *     invocation that saw a value starting with the put's value, or containing the appended
 *     bytes) is linearized: every value from it to the next overwrite carries its bytes, so no
 *     read may sit there (observers_push takes these out of the unknown list);
 *   - of unknown writes with the same effect (twins: all deletes, or equal values), any but the
 *     earliest invoked pending one: swapping twins changes nothing, so the ones used can always
 *     be the earliest ones. The unknown deletes used are thus the first kdel of kcheck.dels;
 *   - while tainted, a value that the next read cannot see (next_read_may_see): no overwrite
 *     may come first, so the next read sees this value, or it with more bytes appended.
 */
static bool may_take(const kcheck *kc, const uint64_t *bits, const kop *o, uint32_t state,
                     uint32_t next, bool taint)
{
	if (taint && (o->kind == K_PUT || o->kind == K_DELETE))
		return false;
	if (o->ret != LIN_NEVER)
		return true;
	if (o->twin != LIN_NONE && !(bits[kc->ops[o->twin].word] & kc->ops[o->twin].mask))
		return false;
	return next != state;
}

/*
 * Whether a read that may be the next one linearized could see value v or v with bytes
 * appended. Candidates are the pending reads invoked before the earliest pending read return,
 * which must come no later than that read.
 */
static bool next_read_may_see(const kcheck *kc, uint32_t v)
{
	const vstate *s = &kc->st[v];

	for (size_t e = kc->ent[MAIN_HEAD].next; e != MAIN_HEAD; e = kc->ent[e].next) {
		const kop *r = &kc->ops[kc->ent[e].op];

		if (r->kind != K_READ)
			continue;
		if (!kc->ent[e].call)
			return false;
		if (v == 0 || (r->val != 0 && r->rvlen >= s->len &&
		               (s->len == 0 || memcmp(r->rv, s->b, s->len) == 0)))
			return true;
	}
	return false;
}

enum { PH_MAIN, PH_UNKNOWN, PH_DELETE, PH_DEAD_END };

/*
 * The search proper: LIN_RESULT_OK when some linearization exists. From each node it tries the
 * required ops invoked before the first pending return (walking the main list from its head),
 * then the unknown puts and appends invoked before that return, then the next unknown delete;
 * then it backtracks. Required ops go first because unknown writes are seldom needed.
 */
static lin_result search(kcheck *kc, uint64_t max_steps, uint64_t *steps)
{
	frame *stack = xmalloc(kc->n * sizeof(*stack));
	uint64_t *bits = xmalloc(kc->words * sizeof(uint64_t));
	uint64_t zob = 0;
	uint32_t state = 0;
	bool taint = false;
	size_t kdel = 0, depth = 0, e = kc->ent[MAIN_HEAD].next, bound = LIN_NONE;
	int phase = PH_MAIN;
	kent *ent = kc->ent;
	lin_result res;

	memset(bits, 0, kc->words * sizeof(uint64_t));
	for (;;) {
		size_t cand, nkdel;
		uint32_t next;
		bool next_taint;
		const kop *o;

		if (*steps >= max_steps || kc->oom) {
			res = LIN_RESULT_TIMEOUT;
			break;
		}
		++*steps;
		if (phase == PH_MAIN) {
			if (e == MAIN_HEAD) {
				res = LIN_RESULT_OK;
				break;
			}
			if (!ent[e].call) {
				bound = e;
				phase = PH_UNKNOWN;
				e = ent[UNK_HEAD].next;
				continue;
			}
			cand = ent[e].op;
			e = ent[e].next;
		} else if (phase == PH_UNKNOWN) {
			if (e == UNK_HEAD || ent[e].t > ent[bound].t) {
				phase = PH_DELETE;
				continue;
			}
			cand = ent[e].op;
			e = ent[e].next;
		} else if (phase == PH_DELETE) {
			phase = PH_DEAD_END;
			if (kdel == kc->ndels || kc->ops[kc->dels[kdel]].inv > ent[bound].t)
				continue;
			cand = kc->dels[kdel];
		} else {
			note_dead_end(kc, stack, depth, state, kdel, bound);
			if (depth == 0) {
				res = LIN_RESULT_VIOLATION;
				break;
			}
			const frame f = stack[--depth];

			o = &kc->ops[f.op];
			if (o->kind == K_READ)
				observers_pop(kc, bits, o);
			unlift(kc, o);
			bits[o->word] &= ~o->mask;
			zob ^= o->zob;
			state = f.prev;
			taint = f.prev_taint;
			bound = f.bound;
			if (o->ret != LIN_NEVER) {
				phase = PH_MAIN;
				e = ent[o->call].next;
			} else if (o->kind != K_DELETE) {
				phase = PH_UNKNOWN;
				e = ent[o->call].next;
			} else {
				kdel--;
			}
			continue;
		}

		o = &kc->ops[cand];
		next_taint = o->ret == LIN_NEVER || (o->kind != K_READ && taint);
		nkdel = kdel + (o->ret == LIN_NEVER && o->kind == K_DELETE);
		if (!apply(kc, o, state, &next) || !may_take(kc, bits, o, state, next, taint) ||
		    (next_taint && !next_read_may_see(kc, next)))
			continue;
		bits[o->word] |= o->mask;
		if (!memo_visit(kc, bits, zob ^ o->zob, next, next_taint, nkdel)) {
			bits[o->word] &= ~o->mask;
			continue;
		}
		stack[depth++] = (frame){cand, state, taint, bound};
		zob ^= o->zob;
		state = next;
		taint = next_taint;
		kdel = nkdel;
		lift(kc, o);
		if (o->kind == K_READ)
			observers_push(kc, bits, o);
		phase = PH_MAIN;
		e = ent[MAIN_HEAD].next;
		bound = LIN_NONE;
	}
	free(stack);
	free(bits);
	return res;
}

static void kcheck_free(kcheck *kc)
{
	for (size_t i = 1; i < kc->nst; i++)
		free(kc->st[i].b);
	free(kc->st);
	free(kc->stab);
	free(kc->memo);
	free(kc->mtab);
	free(kc->arena);
	free(kc->ent);
	free(kc->best);
	free(kc->ops);
	free(kc->dels);
	free(kc->obs);
}

/* ------------------------------------------------------------------------------------------ */
/* Partitioning and the driver                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct kref {
	const unsigned char *p;
	size_t len;
} kref;

/* One operation's part on one key: the key's index, the record, and for reads what was read. */
typedef struct item {
	size_t key, rec;
	const unsigned char *rv;
	size_t rvlen;
	bool absent;
} item;

static int kref_cmp(const void *a, const void *b)
{
	const kref *x = a, *y = b;

	return bytes_cmp(x->p, x->len, y->p, y->len);
}

static int pair_cmp(const void *a, const void *b)
{
	const lin_pair *x = a, *y = b;

	return bytes_cmp(x->key, x->klen, y->key, y->klen);
}

/* The first index of keys[0..n) not below (p, len). */
static size_t lower_bound(const kref *keys, size_t n, const unsigned char *p, size_t len)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (bytes_cmp(keys[mid].p, keys[mid].len, p, len) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool is_write(lin_op op)
{
	return op == LIN_PUT || op == LIN_APPEND || op == LIN_DELETE;
}

/* Whether the record takes part in the check, and as what. */
static bool takes_part(const lin_rec *r)
{
	if (r->status == LIN_FAIL)
		return false;
	if (is_write(r->op))
		return true;
	return r->status == LIN_OK;
}

/* The end of the range a scan covered; NULL with *len 0 means unbounded. */
static const unsigned char *scan_end(const lin_rec *r, size_t *len)
{
	if (r->limited && (r->vlen == 0 || bytes_cmp(r->lim, r->limlen, r->val, r->vlen) < 0)) {
		*len = r->limlen;
		return r->lim;
	}
	*len = r->vlen;
	return r->vlen > 0 ? r->val : NULL;
}

/* Checks that an OK scan's pairs are distinct keys inside its range; sorts them. */
static bool scan_sane(lin_rec *r, size_t id, strbuf *out)
{
	size_t elen;
	const unsigned char *end = scan_end(r, &elen);
	bool ok = true;

	if (r->npairs > 1)
		qsort(r->pairs, r->npairs, sizeof(*r->pairs), pair_cmp);
	for (size_t j = 0; j < r->npairs && ok; j++) {
		const lin_pair *p = &r->pairs[j];

		if (bytes_cmp(p->key, p->klen, r->key, r->klen) < 0 ||
		    (end != NULL && bytes_cmp(p->key, p->klen, end, elen) >= 0)) {
			sb_printf(out, "scan returned key ");
			sb_bytes(out, p->key, p->klen);
			sb_printf(out, " outside its range:\n  ");
			ok = false;
		} else if (j > 0 && pair_cmp(p, p - 1) == 0) {
			sb_printf(out, "scan returned key ");
			sb_bytes(out, p->key, p->klen);
			sb_printf(out, " twice:\n  ");
			ok = false;
		}
	}
	if (!ok)
		sb_rec(out, r, id, false, NULL, 0, false);
	return ok;
}

static bool same_effect(const kop *a, const kop *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == K_PUT)
		return a->val == b->val;
	return a->kind == K_DELETE ||
	       (a->rvlen == b->rvlen && (a->rvlen == 0 || memcmp(a->rv, b->rv, a->rvlen) == 0));
}

static bool contains(const unsigned char *hay, size_t hlen, const unsigned char *needle,
                     size_t nlen)
{
	if (nlen == 0)
		return true;
	for (const unsigned char *p = hay; nlen <= hlen - (size_t)(p - hay);) {
		p = memchr(p, needle[0], hlen - nlen - (size_t)(p - hay) + 1);
		if (p == NULL)
			return false;
		if (memcmp(p, needle, nlen) == 0)
			return true;
		p++;
	}
	return false;
}

/* Whether read r could have seen unknown put or append w: it returned after w was invoked and
 * saw a value starting with the put's value, or containing the appended bytes. */
static bool observes(const kop *r, const kop *w)
{
	if (r->val == 0 || r->ret < w->inv)
		return false;
	if (w->kind == K_PUT)
		return r->rvlen >= w->rvlen && memcmp(r->rv, w->rv, w->rvlen) == 0;
	return contains(r->rv, r->rvlen, w->rv, w->rvlen);
}

/* Sets the unknown writes' twins (see may_take), kc->dels, and who observes whom. An unknown
 * delete takes no bit in the linearized-set bitset: the memo counts them. */
static void find_twins_and_observers(kcheck *kc)
{
	size_t nobs = 0, cap = 0;

	kc->dels = xmalloc((kc->n - kc->nreq + 1) * sizeof(*kc->dels));
	for (size_t i = kc->nreq; i < kc->n; i++) {
		kop *o = &kc->ops[i];

		o->twin = LIN_NONE;
		if (o->kind == K_DELETE) {
			size_t k = kc->ndels++;

			while (k > 0 && kc->ops[kc->dels[k - 1]].inv > o->inv) {
				kc->dels[k] = kc->dels[k - 1];
				k--;
			}
			kc->dels[k] = i;
			o->mask = 0;
			o->zob = 0;
			continue;
		}
		for (size_t j = kc->nreq; j < kc->n; j++) {
			const kop *t = &kc->ops[j];

			if (t->inv < o->inv && same_effect(o, t) &&
			    (o->twin == LIN_NONE || kc->ops[o->twin].inv < t->inv))
				o->twin = j;
		}
	}
	for (size_t r = 0; r < kc->nreq; r++) {
		kop *o = &kc->ops[r];

		o->obs = nobs;
		for (size_t w = kc->nreq; w < kc->n && o->kind == K_READ; w++) {
			if (kc->ops[w].kind == K_DELETE || !observes(o, &kc->ops[w]))
				continue;
			if (nobs == cap) {
				if (!mem_take(kc, (cap ? cap : 64) * sizeof(*kc->obs)))
					kc->oom = true;
				cap = cap ? cap * 2 : 64;
				kc->obs = xrealloc(kc->obs, cap * sizeof(*kc->obs));
			}
			kc->obs[nobs++] = w;
			kc->ops[w].nobs++;
		}
		o->n_obs = nobs - o->obs;
	}
}

/* Builds kc for the items of one key. */
static void kcheck_init(kcheck *kc, const lin_history *h, const item *it, size_t n, size_t mem_max)
{
	size_t nreq = 0, next[2];

	for (size_t i = 0; i < n; i++)
		nreq += h->recs[it[i].rec].status == LIN_OK;
	memset(kc, 0, sizeof(*kc));
	kc->n = n;
	kc->nreq = nreq;
	kc->words = n / 64 + 1;
	kc->mem_max = mem_max;
	next[0] = 0;
	next[1] = nreq;
	kc->ops = xmalloc(n * sizeof(*kc->ops));
	kc->best = xmalloc(n * sizeof(*kc->best));
	kc->capst = 64;
	kc->st = xmalloc(kc->capst * sizeof(*kc->st));
	kc->st[0] = (vstate){NULL, 0, 0};
	kc->nst = 1;
	for (size_t i = 0; i < n; i++) {
		const lin_rec *r = &h->recs[it[i].rec];
		bool unknown = r->status != LIN_OK;
		size_t j = next[unknown]++;
		kop *o = &kc->ops[j];

		memset(o, 0, sizeof(*o));
		o->rec = it[i].rec;
		o->inv = r->inv;
		o->ret = unknown ? LIN_NEVER : r->ret;
		o->zob = mix64(UINT64_C(0x243f6a8885a308d3) + j);
		o->word = j / 64;
		o->mask = UINT64_C(1) << (j % 64);
		o->call = LIN_NONE;
		o->retn = LIN_NONE;
		switch (r->op) {
		case LIN_PUT:
			o->kind = K_PUT;
			o->rv = r->val;
			o->rvlen = r->vlen;
			break;
		case LIN_APPEND:
			o->kind = K_APPEND;
			o->rv = r->val;
			o->rvlen = r->vlen;
			o->apph = hash_bytes(r->val, r->vlen, &o->apppow);
			break;
		case LIN_DELETE:
			o->kind = K_DELETE;
			break;
		default:
			o->kind = K_READ;
			o->rv = it[i].rv;
			o->rvlen = it[i].rvlen;
			break;
		}
		if (o->kind == K_PUT || (o->kind == K_READ && !it[i].absent)) {
			o->val = intern2(kc, o->rv, o->rvlen, NULL, 0,
			                 hash_bytes(o->rv, o->rvlen, NULL));
			if (o->val == LIN_NO_STATE)
				kc->oom = true;
		}
	}
	find_twins_and_observers(kc);
	build_entries(kc);
}

static void sb_kop(strbuf *sb, const lin_history *h, const kcheck *kc, size_t i)
{
	const kop *o = &kc->ops[i];

	sb_printf(sb, "    ");
	sb_rec(sb, &h->recs[o->rec], o->rec, true, o->rv, o->rvlen,
	       o->kind == K_READ && o->val == 0);
}

/* The deepest dead end the search met: where a violation shows. */
static void explain_dead_end(strbuf *sb, const lin_history *h, const kcheck *kc)
{
	const vstate *v = &kc->st[kc->best_state];
	size_t from = kc->best_n > LIN_SHOW_PREFIX ? kc->best_n - LIN_SHOW_PREFIX : 0;

	if (!kc->have_best)
		return;
	if (kc->best_n == 0) {
		sb_printf(sb, "  no operation can take effect first, with the key absent\n");
	} else {
		sb_printf(sb, "  deepest partial linearization: %zu operations, leaving ",
		          kc->best_n);
		if (kc->best_state == 0)
			sb_printf(sb, "the key absent");
		else
			sb_bytes(sb, v->b, v->len);
		sb_printf(sb, "; its last %zu:\n", kc->best_n - from);
		for (size_t i = from; i < kc->best_n; i++)
			sb_kop(sb, h, kc, kc->best[i]);
	}
	sb_printf(sb, "  then this operation had to take effect before it returned:\n");
	sb_kop(sb, h, kc, kc->best_blocked);
	sb_printf(sb, "  but none of the pending operations could go next (first %zu shown):\n",
	          kc->best_ncands);
	for (size_t i = 0; i < kc->best_ncands; i++)
		sb_kop(sb, h, kc, kc->best_cands[i]);
}

/* Explains why the key checked by kc got kr. */
static void explain_key(strbuf *sb, const lin_history *h, const kcheck *kc, const kref *key,
                        lin_result kr, uint64_t steps, const lin_check_options *opt)
{
	sb_printf(sb, "key ");
	sb_bytes(sb, key->p, key->len);
	if (kr == LIN_RESULT_VIOLATION) {
		sb_printf(sb, ": not linearizable (%zu operations on this key)\n", kc->n);
	} else {
		sb_printf(sb,
		          ": search budget exhausted, not a pass (%zu operations, %" PRIu64
		          " of %" PRIu64 " steps, %zu memo entries%s, %zu of %zu bytes%s)\n",
		          kc->n, steps, opt->max_steps, kc->memo_n,
		          kc->memo_full ? " (memo full)" : "", kc->mem_used, opt->max_memory,
		          kc->oom ? ", out of memory for values" : "");
		if (kc->have_best)
			sb_printf(sb, "  so far:\n");
	}
	explain_dead_end(sb, h, kc);
}

void lin_check_options_init(lin_check_options *opt)
{
	opt->max_steps = 10000000;
	opt->max_memory = (size_t)256 << 20;
	opt->log = NULL;
}

const char *lin_result_name(lin_result r)
{
	switch (r) {
	case LIN_RESULT_OK:
		return "linearizable";
	case LIN_RESULT_VIOLATION:
		return "VIOLATION";
	case LIN_RESULT_TIMEOUT:
		return "TIMEOUT";
	}
	return "?";
}

/* Adds the parts of record id to items. */
static void add_items(const lin_history *h, size_t id, const kref *keys, size_t nkeys, item **items,
                      size_t *n, size_t *cap)
{
	const lin_rec *r = &h->recs[id];
	size_t lo, hi, elen, j = 0;
	const unsigned char *end;

	if (r->op != LIN_SCAN) {
		lo = lower_bound(keys, nkeys, r->key, r->klen);
		hi = lo + 1;
	} else {
		end = scan_end(r, &elen);
		lo = lower_bound(keys, nkeys, r->key, r->klen);
		hi = end != NULL ? lower_bound(keys, nkeys, end, elen) : nkeys;
	}
	for (size_t k = lo; k < hi; k++) {
		item it = {k, id, NULL, 0, false};

		if (*n == *cap) {
			*cap = *cap ? *cap * 2 : 1024;
			*items = xrealloc(*items, *cap * sizeof(**items));
		}
		if (r->op == LIN_GET) {
			it.rv = r->res;
			it.rvlen = r->rlen;
			it.absent = r->res == NULL;
		} else if (r->op == LIN_SCAN) {
			while (j < r->npairs && bytes_cmp(r->pairs[j].key, r->pairs[j].klen,
			                                  keys[k].p, keys[k].len) < 0)
				j++;
			if (j < r->npairs && bytes_cmp(r->pairs[j].key, r->pairs[j].klen, keys[k].p,
			                               keys[k].len) == 0) {
				it.rv = r->pairs[j].val;
				it.rvlen = r->pairs[j].vlen;
			} else {
				it.absent = true;
			}
		}
		(*items)[(*n)++] = it;
	}
}

/* The sorted, distinct keys of the history. */
static kref *collect_keys(const lin_history *h, size_t *nkeys)
{
	size_t n = 0, cap = 64, m = 0;
	kref *k = xmalloc(cap * sizeof(*k));

	for (size_t i = 0; i < h->n; i++) {
		const lin_rec *r = &h->recs[i];
		size_t add = r->op == LIN_SCAN ? (r->status == LIN_OK ? r->npairs : 0) : 1;

		if (n + add > cap) {
			cap = (n + add) * 2;
			k = xrealloc(k, cap * sizeof(*k));
		}
		if (r->op != LIN_SCAN)
			k[n++] = (kref){r->key, r->klen};
		else
			for (size_t j = 0; j < add; j++)
				k[n++] = (kref){r->pairs[j].key, r->pairs[j].klen};
	}
	qsort(k, n, sizeof(*k), kref_cmp);
	for (size_t i = 0; i < n; i++)
		if (m == 0 || kref_cmp(&k[m - 1], &k[i]) != 0)
			k[m++] = k[i];
	*nkeys = m;
	return k;
}

lin_result lin_check(lin_history *h, const lin_check_options *opt, lin_stats *stats,
                     char **explanation)
{
	lin_check_options defaults;
	lin_stats st = {0};
	strbuf out = {0};
	lin_result res = LIN_RESULT_OK;
	size_t nkeys, nitems = 0, cap = 0, *start, shown = 0;
	item *items = NULL, *sorted;
	kref *keys;

	if (opt == NULL) {
		lin_check_options_init(&defaults);
		opt = &defaults;
	}
	pthread_mutex_lock(&h->mu);
	st.ops = h->n;
	keys = collect_keys(h, &nkeys);
	for (size_t i = 0; i < h->n; i++) {
		lin_rec *r = &h->recs[i];

		if (!takes_part(r))
			continue;
		st.checked++;
		if (r->op == LIN_SCAN && !scan_sane(r, i, &out))
			res = LIN_RESULT_VIOLATION;
		add_items(h, i, keys, nkeys, &items, &nitems, &cap);
	}

	start = xmalloc((nkeys + 1) * sizeof(*start));
	memset(start, 0, (nkeys + 1) * sizeof(*start));
	for (size_t i = 0; i < nitems; i++)
		start[items[i].key + 1]++;
	for (size_t k = 0; k < nkeys; k++)
		start[k + 1] += start[k];
	sorted = xmalloc(nitems * sizeof(*sorted));
	{
		size_t *fill = xmalloc((nkeys + 1) * sizeof(*fill));

		memcpy(fill, start, (nkeys + 1) * sizeof(*fill));
		for (size_t i = 0; i < nitems; i++)
			sorted[fill[items[i].key]++] = items[i];
		free(fill);
	}

	for (size_t k = 0; k < nkeys; k++) {
		size_t n = start[k + 1] - start[k];
		uint64_t steps = 0;
		lin_result kr;
		kcheck kc;

		if (n == 0)
			continue;
		st.keys++;
		kcheck_init(&kc, h, sorted + start[k], n, opt->max_memory);
		kr = kc.oom ? LIN_RESULT_TIMEOUT : search(&kc, opt->max_steps, &steps);
		st.steps += steps;
		if (kc.memo_n > st.max_memo)
			st.max_memo = kc.memo_n;
		if (kr != LIN_RESULT_OK && shown++ < LIN_SHOW_KEYS)
			explain_key(&out, h, &kc, &keys[k], kr, steps, opt);
		if (kr == LIN_RESULT_VIOLATION ||
		    (kr == LIN_RESULT_TIMEOUT && res == LIN_RESULT_OK))
			res = kr;
		kcheck_free(&kc);
	}
	pthread_mutex_unlock(&h->mu);
	if (shown > LIN_SHOW_KEYS)
		sb_printf(&out, "(%zu more keys failed)\n", shown - LIN_SHOW_KEYS);

	free(sorted);
	free(start);
	free(items);
	free(keys);
	if (res != LIN_RESULT_OK && opt->log != NULL)
		fprintf(opt->log, "linearizability check: %s\n%s", lin_result_name(res),
		        out.p != NULL ? out.p : "");
	if (stats != NULL)
		*stats = st;
	if (explanation != NULL)
		*explanation = res != LIN_RESULT_OK ? out.p : NULL;
	if (explanation == NULL || res == LIN_RESULT_OK)
		free(out.p);
	return res;
}
