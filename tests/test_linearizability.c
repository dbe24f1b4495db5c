/* test_linearizability.c - CUnit suite "linearizability": the history checker of linearize.h. */
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "linearize.h"
#include "suites.h"

/* ------------------------------------------------------------------------------------------ */
/* Hand-written histories                                                                     */
/* ------------------------------------------------------------------------------------------ */

static size_t t_put(lin_history *h, uint64_t c, const char *k, const char *v)
{
	return lin_invoke(h, c, LIN_PUT, k, strlen(k), v, strlen(v));
}

static size_t t_append(lin_history *h, uint64_t c, const char *k, const char *v)
{
	return lin_invoke(h, c, LIN_APPEND, k, strlen(k), v, strlen(v));
}

static size_t t_get(lin_history *h, uint64_t c, const char *k)
{
	return lin_invoke(h, c, LIN_GET, k, strlen(k), NULL, 0);
}

static size_t t_del(lin_history *h, uint64_t c, const char *k)
{
	return lin_invoke(h, c, LIN_DELETE, k, strlen(k), NULL, 0);
}

/* end "" is unbounded. */
static size_t t_scan(lin_history *h, uint64_t c, const char *start, const char *end)
{
	return lin_invoke(h, c, LIN_SCAN, start, strlen(start), end, strlen(end));
}

static void t_pair(lin_history *h, size_t id, const char *k, const char *v)
{
	lin_scan_add(h, id, k, strlen(k), v, strlen(v));
}

static void t_ok(lin_history *h, size_t id)
{
	lin_complete(h, id, LIN_OK, NULL, 0);
}

/* v NULL: the get found nothing. */
static void t_got(lin_history *h, size_t id, const char *v)
{
	lin_complete(h, id, LIN_OK, v, v != NULL ? strlen(v) : 0);
}

static void t_unknown(lin_history *h, size_t id)
{
	lin_complete(h, id, LIN_UNKNOWN, NULL, 0);
}

/* Checks h, asserts the result is want, prints the explanation when it is not or when show is
 * set, asserts a violation's explanation names key, and frees h. */
static void t_expect(lin_history *h, lin_result want, const char *key, bool show)
{
	char *why = NULL;
	lin_result got = lin_check(h, NULL, NULL, &why);

	CU_ASSERT_EQUAL(got, want);
	if (got != want || show)
		printf("\n[%s, expected %s]\n%s", lin_result_name(got), lin_result_name(want),
		       why != NULL ? why : "");
	CU_ASSERT_EQUAL(why == NULL, got == LIN_RESULT_OK);
	if (want == LIN_RESULT_VIOLATION && got == want && key != NULL) {
		char quoted[64];

		snprintf(quoted, sizeof quoted, "key \"%s\"", key);
		CU_ASSERT_PTR_NOT_NULL(strstr(why, quoted));
	}
	free(why);
	lin_history_free(h);
}

static void test_sequential(void)
{
	lin_history *h = lin_history_new();
	size_t s;

	t_ok(h, t_put(h, 1, "x", "1"));
	t_got(h, t_get(h, 1, "x"), "1");
	t_ok(h, t_append(h, 1, "x", "2"));
	t_got(h, t_get(h, 1, "x"), "12");
	t_ok(h, t_del(h, 1, "x"));
	t_got(h, t_get(h, 1, "x"), NULL);
	t_ok(h, t_append(h, 1, "x", "3"));
	t_got(h, t_get(h, 1, "x"), "3");
	t_ok(h, t_put(h, 1, "y", ""));
	t_got(h, t_get(h, 1, "y"), "");
	s = t_scan(h, 1, "a", "z");
	t_pair(h, s, "x", "3");
	t_pair(h, s, "y", "");
	t_ok(h, s);
	CU_ASSERT_EQUAL(lin_history_size(h), 11);
	t_expect(h, LIN_RESULT_OK, NULL, false);
}

/* Two overlapping puts and an overlapping get: the get may see either value, or neither. */
static void test_concurrent_either_order(void)
{
	const char *reads[] = {"1", "2", NULL};

	for (size_t i = 0; i < 3; i++) {
		lin_history *h = lin_history_new();
		size_t p1 = t_put(h, 1, "a", "1");
		size_t p2 = t_put(h, 2, "a", "2");
		size_t g = t_get(h, 3, "a");

		t_ok(h, p2);
		t_ok(h, p1);
		t_got(h, g, reads[i]);
		t_expect(h, LIN_RESULT_OK, NULL, false);
	}
	for (size_t i = 0; i < 2; i++) {
		lin_history *h = lin_history_new();
		size_t p1 = t_put(h, 1, "a", "1");
		size_t p2 = t_put(h, 2, "a", "2");

		t_ok(h, p1);
		t_ok(h, p2);
		t_got(h, t_get(h, 3, "a"), reads[i]);
		t_got(h, t_get(h, 3, "a"), reads[i]);
		t_expect(h, LIN_RESULT_OK, NULL, false);
	}
}

static void test_unknown_took_effect(void)
{
	lin_history *h = lin_history_new();
	size_t p;

	t_ok(h, t_put(h, 1, "a", "1"));
	t_unknown(h, t_put(h, 2, "a", "2"));
	t_got(h, t_get(h, 3, "a"), "2");
	t_expect(h, LIN_RESULT_OK, NULL, false);

	/* It takes effect after its client gave up on it. */
	h = lin_history_new();
	p = t_append(h, 2, "a", "t");
	t_got(h, t_get(h, 3, "a"), NULL);
	t_unknown(h, p);
	t_got(h, t_get(h, 3, "a"), NULL);
	t_got(h, t_get(h, 3, "a"), "t");
	t_got(h, t_get(h, 3, "a"), "t");
	t_expect(h, LIN_RESULT_OK, NULL, false);
}

static void test_unknown_never_took_effect(void)
{
	lin_history *h = lin_history_new();

	t_ok(h, t_put(h, 1, "a", "1"));
	t_unknown(h, t_put(h, 2, "a", "2"));
	t_unknown(h, t_append(h, 2, "a", "x"));
	t_unknown(h, t_del(h, 2, "a"));
	t_got(h, t_get(h, 3, "a"), "1");
	t_got(h, t_get(h, 3, "a"), "1");
	/* Failed operations did not happen; a pending one may never happen. */
	lin_complete(h, t_put(h, 1, "a", "9"), LIN_FAIL, NULL, 0);
	(void)t_append(h, 4, "a", "p");
	t_got(h, t_get(h, 3, "a"), "1");
	/* An unknown read tells nothing. */
	lin_complete(h, t_get(h, 3, "a"), LIN_UNKNOWN, "zzz", 3);
	t_expect(h, LIN_RESULT_OK, NULL, false);
}

static void test_appends_interleaved(void)
{
	lin_history *h = lin_history_new();
	size_t a = t_append(h, 1, "k", "a");
	size_t b = t_append(h, 2, "k", "b");
	size_t g1 = t_get(h, 4, "k");
	size_t c = t_append(h, 3, "k", "c");

	t_got(h, g1, "b");
	t_ok(h, a);
	t_got(h, t_get(h, 4, "k"), "bca");
	t_ok(h, c);
	t_ok(h, b);
	t_got(h, t_get(h, 4, "k"), "bca");
	t_ok(h, t_append(h, 1, "k", "d"));
	t_got(h, t_get(h, 4, "k"), "bcad");
	t_expect(h, LIN_RESULT_OK, NULL, false);
}

static void test_scans_consistent(void)
{
	lin_history *h = lin_history_new();
	size_t s, p;

	t_ok(h, t_put(h, 1, "a", "1"));
	t_ok(h, t_put(h, 1, "b", "2"));
	s = t_scan(h, 2, "a", "c");
	t_pair(h, s, "b", "2");
	t_pair(h, s, "a", "1");
	t_ok(h, s);
	t_ok(h, t_del(h, 1, "a"));
	s = t_scan(h, 2, "a", "c");
	t_pair(h, s, "b", "2");
	t_ok(h, s);
	/* A put concurrent with two scans: the first sees it, so the second must too. */
	p = t_put(h, 1, "c", "3");
	s = t_scan(h, 2, "", "");
	t_pair(h, s, "b", "2");
	t_pair(h, s, "c", "3");
	t_ok(h, s);
	s = t_scan(h, 3, "b", "d");
	t_pair(h, s, "b", "2");
	t_pair(h, s, "c", "3");
	t_ok(h, s);
	t_ok(h, p);
	/* A scan cut short by its limit covered only [a, c): it says nothing about c. */
	s = t_scan(h, 2, "a", "");
	t_pair(h, s, "b", "2");
	lin_scan_limit(h, s, "c", 1);
	t_ok(h, s);
	/* A scan of a range holding no key. */
	s = t_scan(h, 2, "x", "y");
	t_ok(h, s);
	t_expect(h, LIN_RESULT_OK, NULL, false);
}

static void test_stale_read(void)
{
	lin_history *h = lin_history_new();
	size_t p2;

	t_ok(h, t_put(h, 1, "x", "1"));
	t_ok(h, t_put(h, 2, "x", "2"));
	t_got(h, t_get(h, 3, "x"), "1");
	t_expect(h, LIN_RESULT_VIOLATION, "x", true);

	/* Reads go back in time: a later read sees an older value than an earlier read. */
	h = lin_history_new();
	t_ok(h, t_put(h, 1, "x", "1"));
	p2 = t_put(h, 2, "x", "2");
	t_got(h, t_get(h, 3, "x"), "2");
	t_got(h, t_get(h, 3, "x"), "1");
	t_ok(h, p2);
	t_expect(h, LIN_RESULT_VIOLATION, "x", false);
}

static void test_lost_write(void)
{
	lin_history *h = lin_history_new();

	t_ok(h, t_append(h, 1, "x", "a"));
	t_ok(h, t_append(h, 2, "x", "b"));
	t_got(h, t_get(h, 3, "x"), "a");
	t_expect(h, LIN_RESULT_VIOLATION, "x", false);

	h = lin_history_new();
	t_ok(h, t_put(h, 1, "x", "1"));
	t_ok(h, t_del(h, 2, "x"));
	t_got(h, t_get(h, 3, "x"), "1");
	t_expect(h, LIN_RESULT_VIOLATION, "x", false);
}

static void test_duplicated_write(void)
{
	lin_history *h = lin_history_new();

	t_ok(h, t_append(h, 1, "x", "a"));
	t_ok(h, t_append(h, 2, "x", "b"));
	t_got(h, t_get(h, 3, "x"), "abb");
	t_expect(h, LIN_RESULT_VIOLATION, "x", false);

	h = lin_history_new();
	t_unknown(h, t_append(h, 1, "x", "t"));
	t_got(h, t_get(h, 3, "x"), "tt");
	t_expect(h, LIN_RESULT_VIOLATION, "x", false);
}

static void test_value_never_written(void)
{
	lin_history *h = lin_history_new();
	size_t p1 = t_put(h, 1, "a", "1");
	size_t p2 = t_put(h, 2, "a", "2");

	t_ok(h, p1);
	t_ok(h, p2);
	t_got(h, t_get(h, 3, "a"), "3");
	t_expect(h, LIN_RESULT_VIOLATION, "a", false);

	/* An empty value is not an absent one. */
	h = lin_history_new();
	t_ok(h, t_put(h, 1, "e", ""));
	t_got(h, t_get(h, 3, "e"), NULL);
	t_expect(h, LIN_RESULT_VIOLATION, "e", false);

	/* A key that nobody wrote. */
	h = lin_history_new();
	t_got(h, t_get(h, 3, "ghost"), "boo");
	t_expect(h, LIN_RESULT_VIOLATION, "ghost", false);
}

static void test_scan_missing_put(void)
{
	lin_history *h = lin_history_new();
	size_t s;

	t_ok(h, t_put(h, 1, "a", "1"));
	t_ok(h, t_put(h, 1, "b", "2"));
	s = t_scan(h, 2, "a", "z");
	t_pair(h, s, "a", "1");
	t_ok(h, s);
	t_expect(h, LIN_RESULT_VIOLATION, "b", true);

	/* A scan that returns a key it did not cover, or one key twice. */
	h = lin_history_new();
	t_ok(h, t_put(h, 1, "a", "1"));
	t_ok(h, t_put(h, 1, "q", "2"));
	s = t_scan(h, 2, "a", "m");
	t_pair(h, s, "a", "1");
	t_pair(h, s, "q", "2");
	t_ok(h, s);
	t_expect(h, LIN_RESULT_VIOLATION, NULL, false);
	h = lin_history_new();
	t_ok(h, t_put(h, 1, "a", "1"));
	s = t_scan(h, 2, "a", "m");
	t_pair(h, s, "a", "1");
	t_pair(h, s, "a", "1");
	t_ok(h, s);
	t_expect(h, LIN_RESULT_VIOLATION, NULL, false);
}

/* A put, then 16 unknown appends and 8 unknown deletes, then reads of last[0..n). */
static lin_history *many_unknown(const char *const *reads, size_t n)
{
	lin_history *h = lin_history_new();
	size_t ids[24];
	char tok[8];

	t_ok(h, t_put(h, 1, "k", "s|"));
	for (size_t i = 0; i < 24; i++) {
		snprintf(tok, sizeof tok, "|%zu|", i);
		ids[i] = i < 16 ? t_append(h, 2 + i, "k", tok) : t_del(h, 2 + i, "k");
	}
	for (size_t i = 0; i < 24; i++)
		t_unknown(h, ids[i]);
	for (size_t i = 0; i < n; i++)
		t_got(h, t_get(h, 99, "k"), reads[i]);
	return h;
}

/* Unknown writes in numbers, taken in any order or not at all, but each at most once. */
static void test_many_unknown(void)
{
	const char *ok[] = {"s||3||7||1|", NULL, "|5||9|", "|5||9||15|", NULL, "|2|"};
	const char *twice[] = {"s||3||7||1|", NULL, "|5||5|"};
	const char *again[] = {"s||3||7||1|", "s||3|"};
	const char *no_put[] = {"s||3|", NULL, "s||4|"};

	t_expect(many_unknown(ok, 6), LIN_RESULT_OK, NULL, false);
	t_expect(many_unknown(twice, 3), LIN_RESULT_VIOLATION, "k", false);
	t_expect(many_unknown(again, 2), LIN_RESULT_VIOLATION, "k", false);
	t_expect(many_unknown(no_put, 3), LIN_RESULT_VIOLATION, "k", false);
}

/* Twelve concurrent appends and one read of them: in call order, found at once; in reverse
 * order, a linearization exists but a small budget runs out first. */
static lin_history *appends_then_read(bool reverse)
{
	lin_history *h = lin_history_new();
	char v[8], all[64] = "";
	size_t ids[12];

	for (size_t i = 0; i < 12; i++) {
		snprintf(v, sizeof v, "%zu", i);
		ids[i] = t_append(h, i, "k", v);
	}
	for (size_t i = 0; i < 12; i++) {
		snprintf(v, sizeof v, "%zu", reverse ? 11 - i : i);
		strcat(all, v);
		t_ok(h, ids[i]);
	}
	t_got(h, t_get(h, 99, "k"), all);
	return h;
}

/* An exhausted budget is a timeout, never a pass. */
static void test_timeout(void)
{
	lin_history *h = appends_then_read(false);
	lin_check_options opt;
	char *why = NULL;

	CU_ASSERT_EQUAL(lin_check(h, NULL, NULL, NULL), LIN_RESULT_OK);
	lin_check_options_init(&opt);
	opt.max_memory = 1;
	CU_ASSERT_EQUAL(lin_check(h, &opt, NULL, NULL), LIN_RESULT_TIMEOUT);
	lin_history_free(h);

	h = appends_then_read(true);
	lin_check_options_init(&opt);
	opt.max_steps = 10000;
	CU_ASSERT_EQUAL(lin_check(h, &opt, NULL, &why), LIN_RESULT_TIMEOUT);
	CU_ASSERT_PTR_NOT_NULL(why);
	CU_ASSERT_PTR_NOT_NULL(why != NULL ? strstr(why, "budget") : NULL);
	free(why);
	lin_history_free(h);
}

/* ------------------------------------------------------------------------------------------ */
/* Generated histories                                                                        */
/* ------------------------------------------------------------------------------------------ */

static uint64_t lt_rand(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t lt_seed(void)
{
	const char *env = getenv("RAFT_TEST_SEED");

	return env != NULL ? strtoull(env, NULL, 0) : UINT64_C(20240615);
}

static bool lt_chance(uint64_t *rng, unsigned pct)
{
	return lt_rand(rng) % 100 < pct;
}

typedef struct gbuf {
	char *p;
	size_t len, cap;
	bool present;
} gbuf;

static void gbuf_set(gbuf *b, const char *p, size_t n, bool present)
{
	if (n + 1 > b->cap) {
		b->cap = (n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		if (b->p == NULL)
			abort();
	}
	if (n > 0)
		memcpy(b->p, p, n);
	b->len = n;
	b->present = present;
}

static void gbuf_add(gbuf *b, const char *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		if (b->p == NULL)
			abort();
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->present = true;
}

/* How to corrupt one read (the mutate-th OK get, counted from 0). */
typedef enum { MUT_NONE, MUT_NEVER_WRITTEN, MUT_EARLIER_VALUE } mut_mode;

typedef struct gen_opts {
	uint64_t seed;
	size_t nops, nkeys, nclients;
	unsigned scan_pct, unknown_pct, fail_pct;
	mut_mode mut;
	size_t mutate;
} gen_opts;

enum { C_IDLE, C_INVOKED, C_APPLIED };

typedef struct gclient {
	int state;
	size_t id;
	lin_op op;
	size_t key, end; /* key indexes; scan: [key, end) */
	size_t limit;    /* scan: pairs returned at most, 0 for no limit */
	char val[32];
	gbuf res; /* the get's result at its linearization point */
} gclient;

/* An unknown write still in flight after its client gave up on it. */
typedef struct orphan {
	lin_op op;
	size_t key;
	char val[32];
} orphan;

typedef struct gen {
	gen_opts o;
	uint64_t rng;
	lin_history *h;
	gbuf *kv, *prev; /* each key's value, and its value before its last write */
	gclient *c;
	orphan *orph;
	size_t norph, issued, gets;
	uint64_t serial;
} gen;

static void key_name(char *buf, size_t n, size_t k)
{
	snprintf(buf, n, "k%02u", (unsigned)(k % 100));
}

static void model_write(gen *g, lin_op op, size_t k, const char *v)
{
	gbuf_set(&g->prev[k], g->kv[k].p, g->kv[k].len, g->kv[k].present);
	if (op == LIN_PUT)
		gbuf_set(&g->kv[k], v, strlen(v), true);
	else if (op == LIN_APPEND)
		gbuf_add(&g->kv[k], v, strlen(v));
	else
		gbuf_set(&g->kv[k], NULL, 0, false);
}

/* The linearization point of client c's operation. */
static void model_apply(gen *g, gclient *c)
{
	char name[16];

	if (c->op == LIN_GET) {
		gbuf_set(&c->res, g->kv[c->key].p, g->kv[c->key].len, g->kv[c->key].present);
	} else if (c->op == LIN_SCAN) {
		size_t found = 0;

		for (size_t k = c->key; k < c->end; k++) {
			if (!g->kv[k].present)
				continue;
			key_name(name, sizeof name, k);
			if (c->limit > 0 && found == c->limit) {
				lin_scan_limit(g->h, c->id, name, strlen(name));
				break;
			}
			lin_scan_add(g->h, c->id, name, strlen(name), g->kv[k].p, g->kv[k].len);
			found++;
		}
	} else {
		model_write(g, c->op, c->key, c->val);
	}
}

static void gen_invoke(gen *g, gclient *c, uint64_t cid)
{
	uint64_t r = lt_rand(&g->rng) % 100;
	char name[16], end[16];

	c->key = lt_rand(&g->rng) % g->o.nkeys;
	key_name(name, sizeof name, c->key);
	c->val[0] = '\0';
	if (r < g->o.scan_pct) {
		c->op = LIN_SCAN;
		c->end = c->key + 1 + lt_rand(&g->rng) % (g->o.nkeys - c->key);
		key_name(end, sizeof end, c->end);
		c->limit = lt_chance(&g->rng, 30) ? 1 + lt_rand(&g->rng) % 3 : 0;
		c->id = lin_invoke(g->h, cid, LIN_SCAN, name, strlen(name), end,
		                   c->end == g->o.nkeys ? 0 : strlen(end));
		return;
	}
	r = lt_rand(&g->rng) % 100;
	c->op = r < 35 ? LIN_GET : r < 60 ? LIN_PUT : r < 92 ? LIN_APPEND : LIN_DELETE;
	if (c->op == LIN_PUT)
		snprintf(c->val, sizeof c->val, "p%" PRIu64 ".%" PRIu64 "|", cid, ++g->serial);
	else if (c->op == LIN_APPEND)
		snprintf(c->val, sizeof c->val, "|%" PRIu64 ".%" PRIu64 "|", cid, ++g->serial);
	c->id = lin_invoke(g->h, cid, c->op, name, strlen(name), c->val, strlen(c->val));
}

static void gen_complete(gen *g, gclient *c)
{
	const gbuf *r = &c->res;

	if (c->op != LIN_GET) {
		lin_complete(g->h, c->id, LIN_OK, NULL, 0);
		return;
	}
	if (g->gets++ == g->o.mutate && g->o.mut == MUT_NEVER_WRITTEN) {
		lin_complete(g->h, c->id, LIN_OK, "#never#", 7);
		return;
	}
	if (g->gets - 1 == g->o.mutate && g->o.mut == MUT_EARLIER_VALUE)
		r = &g->prev[c->key];
	lin_complete(g->h, c->id, LIN_OK, r->present ? r->p : NULL, r->len);
}

/* One scheduling step of client c. */
static void gen_step(gen *g, size_t ci)
{
	gclient *c = &g->c[ci];
	bool write;

	switch (c->state) {
	case C_IDLE:
		if (g->issued < g->o.nops) {
			g->issued++;
			gen_invoke(g, c, ci + 1);
			c->state = C_INVOKED;
		}
		return;
	case C_INVOKED:
		write = c->op == LIN_PUT || c->op == LIN_APPEND || c->op == LIN_DELETE;
		if (lt_chance(&g->rng, g->o.fail_pct)) {
			lin_complete(g->h, c->id, LIN_FAIL, NULL, 0);
			c->state = C_IDLE;
		} else if (write && lt_chance(&g->rng, g->o.unknown_pct)) {
			lin_complete(g->h, c->id, LIN_UNKNOWN, NULL, 0);
			if (lt_chance(&g->rng, 50)) {
				orphan *o = &g->orph[g->norph++];

				o->op = c->op;
				o->key = c->key;
				memcpy(o->val, c->val, sizeof o->val);
			}
			c->state = C_IDLE;
		} else {
			model_apply(g, c);
			c->state = C_APPLIED;
		}
		return;
	default:
		write = c->op == LIN_PUT || c->op == LIN_APPEND || c->op == LIN_DELETE;
		if (write && lt_chance(&g->rng, g->o.unknown_pct))
			lin_complete(g->h, c->id, LIN_UNKNOWN, NULL, 0);
		else
			gen_complete(g, c);
		c->state = C_IDLE;
	}
}

/*
 * Simulates o->nclients clients over a shared model and records their history in a new
 * lin_history (the caller frees it); *gets receives the number of OK gets. Each operation takes
 * effect on the model at one point between its invocation and completion (its true
 * linearization point, in a sequential execution); the seeded scheduling of the clients
 * stretches invocations and completions around those points, so histories are linearizable by
 * construction. Unknown writes take effect before their completion, later (orphans), or never.
 * Put values and append tokens are unique and delimited ("p3.17|", "|3.18|").
 */
static lin_history *gen_history(const gen_opts *o, size_t *gets)
{
	gen g = {0};
	bool busy = true;

	g.o = *o;
	g.rng = o->seed;
	g.h = lin_history_new();
	g.kv = calloc(o->nkeys, sizeof(*g.kv));
	g.prev = calloc(o->nkeys, sizeof(*g.prev));
	g.c = calloc(o->nclients, sizeof(*g.c));
	g.orph = calloc(o->nops + 1, sizeof(*g.orph));
	if (g.kv == NULL || g.prev == NULL || g.c == NULL || g.orph == NULL)
		abort();
	while (busy || g.issued < o->nops) {
		gen_step(&g, lt_rand(&g.rng) % o->nclients);
		if (g.norph > 0 && lt_chance(&g.rng, 5)) {
			size_t i = lt_rand(&g.rng) % g.norph;

			model_write(&g, g.orph[i].op, g.orph[i].key, g.orph[i].val);
			g.orph[i] = g.orph[--g.norph];
		}
		busy = false;
		for (size_t i = 0; i < o->nclients; i++)
			busy |= g.c[i].state != C_IDLE;
	}
	for (size_t k = 0; k < o->nkeys; k++) {
		free(g.kv[k].p);
		free(g.prev[k].p);
	}
	for (size_t i = 0; i < o->nclients; i++)
		free(g.c[i].res.p);
	free(g.kv);
	free(g.prev);
	free(g.c);
	free(g.orph);
	*gets = g.gets;
	return g.h;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

#define LT_SEEDS 40

/* Generated histories pass; a read of a value never written fails; a read of an earlier value
 * usually fails (not asserted: it may be legal). */
static void test_random_histories(void)
{
	uint64_t base = lt_seed(), ops = 0;
	size_t stale = 0, stale_caught = 0;
	lin_check_options opt;

	lin_check_options_init(&opt);
	opt.log = stdout;
	printf("\nlinearizability random: seeds %" PRIu64 "..%" PRIu64 " (RAFT_TEST_SEED)", base,
	       base + LT_SEEDS - 1);
	for (uint64_t s = base; s < base + LT_SEEDS; s++) {
		gen_opts o = {s, 300, 1 + s % 4, 1 + s % 5, 8, 4, 3, MUT_NONE, 0};
		size_t gets;
		lin_history *h = gen_history(&o, &gets);
		lin_stats st;
		lin_result r = lin_check(h, &opt, &st, NULL);

		if (r != LIN_RESULT_OK)
			printf("seed %" PRIu64 ": unmutated history: %s\n", s, lin_result_name(r));
		CU_ASSERT_EQUAL(r, LIN_RESULT_OK);
		ops += st.checked;
		lin_history_free(h);
		if (gets == 0)
			continue;

		o.mut = MUT_NEVER_WRITTEN;
		o.mutate = (size_t)(lt_rand(&(uint64_t){s}) % gets);
		h = gen_history(&o, &gets);
		r = lin_check(h, NULL, NULL, NULL);
		if (r != LIN_RESULT_VIOLATION)
			printf("seed %" PRIu64 ": read %zu of a value never written: %s\n", s,
			       o.mutate, lin_result_name(r));
		CU_ASSERT_EQUAL(r, LIN_RESULT_VIOLATION);
		lin_history_free(h);

		o.mut = MUT_EARLIER_VALUE;
		h = gen_history(&o, &gets);
		stale++;
		stale_caught += lin_check(h, NULL, NULL, NULL) == LIN_RESULT_VIOLATION;
		lin_history_free(h);
	}
	printf("; %" PRIu64 " ops checked; reads of an earlier value caught %zu/%zu\n", ops,
	       stale_caught, stale);
}

/* Checks one generated history and prints how long it took. */
static void perf_run(const gen_opts *o)
{
	size_t gets;
	lin_history *h = gen_history(o, &gets);
	lin_check_options opt;
	lin_stats st;
	double t0, ms;
	lin_result r;

	lin_check_options_init(&opt);
	opt.log = stdout;
	t0 = now_ms();
	r = lin_check(h, &opt, &st, NULL);
	ms = now_ms() - t0;
	CU_ASSERT_EQUAL(r, LIN_RESULT_OK);
	printf("\nlinearizability perf: seed %" PRIu64 ", %zu ops (%zu checked), %zu keys, %zu "
	       "clients, %u%% unknown: %.1f ms, %" PRIu64 " steps, largest memo %zu",
	       o->seed, st.ops, st.checked, st.keys, o->nclients, o->unknown_pct, ms, st.steps,
	       st.max_memo);
	lin_history_free(h);
}

static void test_performance(void)
{
	gen_opts many_keys = {lt_seed(), 4000, 10, 5, 5, 3, 2, MUT_NONE, 0};
	gen_opts few_keys = {lt_seed(), 4000, 3, 5, 5, 10, 2, MUT_NONE, 0};

	perf_run(&many_keys);
	perf_run(&few_keys);
	printf("\n");
}

/* ------------------------------------------------------------------------------------------ */
/* Recording from threads                                                                     */
/* ------------------------------------------------------------------------------------------ */

#define LT_THREADS        5
#define LT_THREAD_OPS     400
#define LT_THREAD_KEYS    3
#define LT_THREAD_VAL_MAX (LT_THREADS * LT_THREAD_OPS * 8)

typedef struct lt_shared {
	pthread_mutex_t mu;
	lin_history *h;
	char val[LT_THREAD_KEYS][LT_THREAD_VAL_MAX];
	size_t len[LT_THREAD_KEYS];
	bool present[LT_THREAD_KEYS];
	uint64_t seed;
} lt_shared;

typedef struct lt_thread {
	lt_shared *sh;
	uint64_t client;
} lt_thread;

static void *lt_client(void *arg)
{
	lt_thread *t = arg;
	lt_shared *sh = t->sh;
	uint64_t rng = sh->seed ^ (t->client * UINT64_C(0x9e3779b97f4a7c15));
	char key[8], tok[32], got[LT_THREAD_VAL_MAX];

	for (size_t i = 0; i < LT_THREAD_OPS; i++) {
		size_t k = lt_rand(&rng) % LT_THREAD_KEYS, glen = 0, id;
		bool append = lt_chance(&rng, 50), present = false;

		snprintf(key, sizeof key, "t%zu", k);
		snprintf(tok, sizeof tok, "|%" PRIu64 ".%zu|", t->client, i);
		id = append ? lin_invoke(sh->h, t->client, LIN_APPEND, key, strlen(key), tok,
		                         strlen(tok))
		            : lin_invoke(sh->h, t->client, LIN_GET, key, strlen(key), NULL, 0);
		pthread_mutex_lock(&sh->mu);
		if (append) {
			memcpy(sh->val[k] + sh->len[k], tok, strlen(tok));
			sh->len[k] += strlen(tok);
			sh->present[k] = true;
		} else {
			present = sh->present[k];
			glen = sh->len[k];
			memcpy(got, sh->val[k], glen);
		}
		pthread_mutex_unlock(&sh->mu);
		lin_complete(sh->h, id, LIN_OK, present ? got : NULL, glen);
	}
	return NULL;
}

/* Clients on real threads over a mutex-protected map: recording is thread-safe and the
 * history checks out. */
static void test_threads(void)
{
	static lt_shared sh;
	pthread_t tid[LT_THREADS];
	lt_thread t[LT_THREADS];
	lin_check_options opt;
	lin_stats st;
	lin_result r;

	memset(&sh, 0, sizeof sh);
	pthread_mutex_init(&sh.mu, NULL);
	sh.h = lin_history_new();
	sh.seed = lt_seed();
	for (size_t i = 0; i < LT_THREADS; i++) {
		t[i] = (lt_thread){&sh, i + 1};
		CU_ASSERT_EQUAL_FATAL(pthread_create(&tid[i], NULL, lt_client, &t[i]), 0);
	}
	for (size_t i = 0; i < LT_THREADS; i++)
		pthread_join(tid[i], NULL);
	CU_ASSERT_EQUAL(lin_history_size(sh.h), LT_THREADS * LT_THREAD_OPS);
	lin_check_options_init(&opt);
	opt.log = stdout;
	r = lin_check(sh.h, &opt, &st, NULL);
	CU_ASSERT_EQUAL(r, LIN_RESULT_OK);
	CU_ASSERT_EQUAL(st.checked, LT_THREADS * LT_THREAD_OPS);
	lin_history_free(sh.h);
	pthread_mutex_destroy(&sh.mu);
}

void test_register_linearizability(void)
{
	CU_pSuite s = CU_add_suite("linearizability", NULL, NULL);

	CU_add_test(s, "a sequential history", test_sequential);
	CU_add_test(s, "overlapping puts: either order", test_concurrent_either_order);
	CU_add_test(s, "an unknown write that took effect", test_unknown_took_effect);
	CU_add_test(s, "unknown, failed and pending writes that never took effect",
	            test_unknown_never_took_effect);
	CU_add_test(s, "interleaved appends", test_appends_interleaved);
	CU_add_test(s, "scans consistent with writes", test_scans_consistent);
	CU_add_test(s, "a stale read is a violation", test_stale_read);
	CU_add_test(s, "a lost write is a violation", test_lost_write);
	CU_add_test(s, "a duplicated append is a violation", test_duplicated_write);
	CU_add_test(s, "a value never written is a violation", test_value_never_written);
	CU_add_test(s, "a scan missing a completed put is a violation", test_scan_missing_put);
	CU_add_test(s, "many unknown writes", test_many_unknown);
	CU_add_test(s, "an exhausted budget is a timeout", test_timeout);
	CU_add_test(s, "generated histories, and mutated reads", test_random_histories);
	CU_add_test(s, "a few thousand operations", test_performance);
	CU_add_test(s, "recording from threads", test_threads);
}
