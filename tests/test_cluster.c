/* test_cluster.c - CUnit suite "cluster": the raftkv.h API on whole in-process clusters. */
#define _DEFAULT_SOURCE /* flock(2) */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "cluster_fixture.h"
#include "node/request.h"
#include "raftkv.h"
#include "suites.h"
#include "vfs_fault.h"

/*
 * Every test runs its own cluster in its own temporary directory. Assertions run on the CUnit
 * thread only; worker threads record what they saw and the test checks it afterwards. CHECK
 * records a failure and jumps to the test's cleanup (threads joined, handle closed, directory
 * removed), since a fatal CUnit assertion would leave threads running.
 */
#define CHECK(cond)                                                                                \
	do {                                                                                       \
		bool check_ok_ = (cond);                                                           \
		CU_assertImplementation(check_ok_ ? CU_TRUE : CU_FALSE, __LINE__, #cond, __FILE__, \
		                        "", CU_FALSE);                                             \
		if (!check_ok_)                                                                    \
			goto out;                                                                  \
	} while (0)

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

static int put_s(raftkv *kv, const char *k, const char *v)
{
	return raftkv_put(kv, k, strlen(k), v, strlen(v));
}

static int append_s(raftkv *kv, const char *k, const char *v)
{
	return raftkv_append(kv, k, strlen(k), v, strlen(v));
}

static int del_s(raftkv *kv, const char *k)
{
	return raftkv_delete(kv, k, strlen(k));
}

/* True when key holds exactly val[0..len). */
static bool value_is(raftkv *kv, const void *key, size_t key_len, const void *val, size_t len)
{
	void *v = NULL;
	size_t n = 0;
	int rv = raftkv_get(kv, key, key_len, &v, &n);
	bool ok = rv == RAFTKV_OK && n == len && (len == 0 || memcmp(v, val, len) == 0);

	if (!ok)
		fprintf(stderr, "\nvalue_is(%.*s): %s, %zu bytes (want %zu)\n",
		        (int)(key_len < 40 ? key_len : 40), (const char *)key, raftkv_strerror(rv),
		        n, len);
	raftkv_free(v);
	return ok;
}

static bool value_is_s(raftkv *kv, const char *k, const char *v)
{
	return value_is(kv, k, strlen(k), v, strlen(v));
}

static int get_status(raftkv *kv, const char *k)
{
	void *v = NULL;
	size_t n = 0;
	int rv = raftkv_get(kv, k, strlen(k), &v, &n);

	raftkv_free(v);
	return rv;
}

static uint64_t elapsed_ms(uint64_t since_ns)
{
	return (cluster_now_ns() - since_ns) / 1000000u;
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void cond_init_mono(pthread_cond_t *cv)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
}

/* The node ids 1..n except skip, into out; returns how many. */
static size_t others(size_t n, uint64_t skip, uint64_t *out)
{
	size_t k = 0;

	for (uint64_t id = 1; id <= n; id++)
		if (id != skip)
			out[k++] = id;
	return k;
}

/* ------------------------------------------------------------------------------------------ */
/* A test cluster: directory, options, handle, optional manual ticker                         */
/* ------------------------------------------------------------------------------------------ */

typedef struct tcl {
	char dir[256];
	raftkv_options o;
	raftkv *kv;        /* owned; NULL when closed */
	cf_ticker *ticker; /* owned; only when o.tick_ms is 0 */
	bool have_dir;
} tcl;

/* Creates the directory and fills the test options for n nodes. */
static bool tcl_init(tcl *t, const char *tag, size_t n)
{
	memset(t, 0, sizeof *t);
	cf_options(&t->o, n);
	t->have_dir = cf_mkdtemp(t->dir, sizeof t->dir, tag);
	if (!t->have_dir)
		fprintf(stderr, "\nmkdtemp(%s): %s\n", tag, strerror(errno));
	return t->have_dir;
}

/* Opens the cluster with t->o (starting a ticker first when tick_ms is 0) and waits for a
 * leader. */
static bool tcl_start(tcl *t)
{
	char err[256] = "";
	int rv = raftkv_open(t->dir, &t->o, &t->kv, err, sizeof err);

	if (rv != RAFTKV_OK) {
		fprintf(stderr, "\nraftkv_open(%s): %s: %s\n", t->dir, raftkv_strerror(rv), err);
		t->kv = NULL;
		return false;
	}
	if (t->o.tick_ms == 0) {
		t->ticker = cf_ticker_start(t->kv, cf_tick_ms());
		if (t->ticker == NULL)
			return false;
	}
	if (raftkv_wait_leader(t->kv, cf_wait_ms(), NULL) != RAFTKV_OK) {
		fprintf(stderr, "\n%s: no leader\n", t->dir);
		return false;
	}
	return true;
}

static bool tcl_open(tcl *t, const char *tag, size_t n)
{
	return tcl_init(t, tag, n) && tcl_start(t);
}

static void tcl_close(tcl *t)
{
	cf_ticker_stop(t->ticker);
	t->ticker = NULL;
	raftkv_close(t->kv);
	t->kv = NULL;
}

static void tcl_fini(tcl *t)
{
	tcl_close(t);
	if (t->have_dir)
		cf_rmtree(t->dir);
	t->have_dir = false;
}

/* The current leader (waiting for one). 0 if none appears. */
static uint64_t leader_of(raftkv *kv)
{
	uint64_t id = 0;

	if (raftkv_wait_leader(kv, cf_wait_ms(), &id) != RAFTKV_OK)
		return 0;
	return id;
}

/* Exactly one running node is leader and every other running node follows it in its term. */
static bool one_leader_pred(void *ctx, raftkv *kv)
{
	uint64_t *leader = ctx;
	raftkv_status st[RAFTKV_MAX_NODES];
	size_t n = cf_nodes(kv), leaders = 0;
	uint64_t l = 0, term = 0;

	for (size_t i = 0; i < n; i++) {
		st[i] = cf_status(kv, i + 1);
		if (st[i].role == RAFTKV_ROLE_LEADER) {
			leaders++;
			l = i + 1;
			term = st[i].term;
		}
	}
	if (leaders != 1)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (st[i].role == RAFTKV_ROLE_STOPPED || i + 1 == l)
			continue;
		if (st[i].role != RAFTKV_ROLE_FOLLOWER || st[i].leader != l || st[i].term != term)
			return false;
	}
	*leader = l;
	return true;
}

/* Node id's applied index reached *target. */
typedef struct applied_ctx {
	uint64_t id;
	uint64_t target;
} applied_ctx;

static bool applied_pred(void *ctx, raftkv *kv)
{
	applied_ctx *a = ctx;

	return cf_status(kv, a->id).applied >= a->target;
}

static bool wait_applied(raftkv *kv, uint64_t id, uint64_t target)
{
	applied_ctx a = {id, target};

	return cluster_wait(kv, applied_pred, &a, cf_wait_ms()) == RAFTKV_OK;
}

static bool any_leader_pred(void *ctx, raftkv *kv)
{
	(void)ctx;
	for (uint64_t id = 1; id <= cf_nodes(kv); id++)
		if (cf_status(kv, id).role == RAFTKV_ROLE_LEADER)
			return true;
	return false;
}

static bool no_leader_pred(void *ctx, raftkv *kv)
{
	return !any_leader_pred(ctx, kv);
}

static bool none_stopped(raftkv *kv)
{
	for (uint64_t id = 1; id <= cf_nodes(kv); id++)
		if (cf_status(kv, id).role == RAFTKV_ROLE_STOPPED)
			return false;
	return true;
}

/* ------------------------------------------------------------------------------------------ */
/* A writer thread: appends its tokens to one key (and optionally puts one key per op)        */
/* ------------------------------------------------------------------------------------------ */

typedef struct writer {
	raftkv *kv;             /* borrowed */
	unsigned id;            /* token writer id */
	const char *key;        /* the append key */
	bool puts;              /* also put "w<id>/<i>" = token */
	size_t cap;             /* ops at most; the thread ends after cap ops */
	unsigned char *out;     /* [cap] append outcomes (CF_OUT_*) */
	unsigned char *put_out; /* [cap] put outcomes, when puts */
	pthread_t thread;
	bool started;
	/* mu guards the fields below; cv is broadcast after each op. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t issued;  /* ops finished (their outcomes are recorded) */
	size_t acked;   /* appends acknowledged */
	int bad_status; /* first status other than OK / TIMEOUT, else 0 */
	bool stop;
	bool done;
} writer;

static void put_key(char *buf, size_t len, unsigned w, size_t i)
{
	snprintf(buf, len, "w%u/%06zu", w, i);
}

static void *writer_main(void *arg)
{
	writer *w = arg;
	char tok[48], key[48];

	for (size_t i = 0; i < w->cap; i++) {
		size_t tl = cf_token(tok, sizeof tok, w->id, i);
		int rv = raftkv_append(w->kv, w->key, strlen(w->key), tok, tl);
		int prv = RAFTKV_OK;
		bool stop;

		w->out[i] = (unsigned char)cf_outcome(rv);
		if (w->puts) {
			put_key(key, sizeof key, w->id, i);
			prv = raftkv_put(w->kv, key, strlen(key), tok, tl);
			w->put_out[i] = (unsigned char)cf_outcome(prv);
		}
		pthread_mutex_lock(&w->mu);
		w->issued = i + 1;
		w->acked += rv == RAFTKV_OK;
		if (w->bad_status == 0 && rv != RAFTKV_OK && rv != RAFTKV_TIMEOUT)
			w->bad_status = rv;
		if (w->bad_status == 0 && prv != RAFTKV_OK && prv != RAFTKV_TIMEOUT)
			w->bad_status = prv;
		stop = w->stop;
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
		if (stop)
			break;
	}
	pthread_mutex_lock(&w->mu);
	w->done = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static bool writer_start(writer *w, raftkv *kv, unsigned id, const char *key, bool puts, size_t cap)
{
	memset(w, 0, sizeof *w);
	w->kv = kv;
	w->id = id;
	w->key = key;
	w->puts = puts;
	w->cap = cap;
	w->out = calloc(cap, 1);
	w->put_out = calloc(cap, 1);
	pthread_mutex_init(&w->mu, NULL);
	cond_init_mono(&w->cv);
	if (w->out == NULL || w->put_out == NULL)
		return false;
	w->started = pthread_create(&w->thread, NULL, writer_main, w) == 0;
	return w->started;
}

/* Waits until the writer has at least target acked appends (or has ended). */
static bool writer_wait_acked(writer *w, size_t target)
{
	struct timespec dl;
	bool ok;

	deadline_in(&dl, cf_wait_ms());
	pthread_mutex_lock(&w->mu);
	while (w->acked < target && !w->done &&
	       pthread_cond_timedwait(&w->cv, &w->mu, &dl) != ETIMEDOUT)
		;
	ok = w->acked >= target;
	pthread_mutex_unlock(&w->mu);
	if (!ok)
		fprintf(stderr, "\nwriter %u: %zu acked, wanted %zu\n", w->id, w->acked, target);
	return ok;
}

static size_t writer_acked(writer *w)
{
	size_t a;

	pthread_mutex_lock(&w->mu);
	a = w->acked;
	pthread_mutex_unlock(&w->mu);
	return a;
}

/* Asks the writer to stop after its current op and joins it. */
static void writer_join(writer *w)
{
	if (w->started) {
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
		w->started = false;
	}
}

/* Joins without asking it to stop (it ends after cap ops). */
static void writer_finish(writer *w)
{
	if (w->started) {
		pthread_join(w->thread, NULL);
		w->started = false;
	}
}

static void writer_free(writer *w)
{
	writer_join(w);
	if (w->out != NULL || w->put_out != NULL) {
		pthread_cond_destroy(&w->cv);
		pthread_mutex_destroy(&w->mu);
	}
	free(w->out);
	free(w->put_out);
	w->out = w->put_out = NULL;
}

/* Checks the writer's append key through the cluster. */
static bool writer_check_tokens(writer *w)
{
	void *v = NULL;
	size_t n = 0;
	int rv = raftkv_get(w->kv, w->key, strlen(w->key), &v, &n);
	bool ok;

	if (rv == RAFTKV_NOT_FOUND) {
		n = 0;
	} else if (rv != RAFTKV_OK) {
		fprintf(stderr, "\nget(%s): %s\n", w->key, raftkv_strerror(rv));
		return false;
	}
	ok = cf_check_tokens(v, n, w->id, w->out, w->issued);
	raftkv_free(v);
	return ok;
}

/* Collects the writer's put keys present in the cluster (scan with continuation). */
typedef struct put_scan {
	writer *w;
	unsigned char *seen; /* [cap] */
	bool bad;
} put_scan;

static int put_scan_fn(void *ctx, const void *key, size_t key_len, const void *value,
                       size_t value_len)
{
	put_scan *ps = ctx;
	char k[64], tok[48];
	unsigned wid;
	size_t i;

	if (key_len >= sizeof k)
		goto bad;
	memcpy(k, key, key_len);
	k[key_len] = '\0';
	if (sscanf(k, "w%u/%zu", &wid, &i) != 2 || wid != ps->w->id || i >= ps->w->cap)
		goto bad;
	if (value_len != cf_token(tok, sizeof tok, wid, i) || memcmp(value, tok, value_len) != 0)
		goto bad;
	ps->seen[i]++;
	return 0;
bad:
	fprintf(stderr, "\nunexpected key %.*s\n", (int)(key_len < 60 ? key_len : 60),
	        (const char *)key);
	ps->bad = true;
	return 1;
}

/* Every acked put is present with its value, every failed one absent. */
static bool writer_check_puts(writer *w)
{
	put_scan ps = {.w = w, .seen = calloc(w->cap, 1)};
	char start[32], end[32];
	void *next = NULL, *from = NULL;
	size_t next_len = 0, from_len;
	bool ok = ps.seen != NULL;

	snprintf(start, sizeof start, "w%u/", w->id);
	snprintf(end, sizeof end, "w%u0", w->id); /* '0' follows '/' */
	from_len = strlen(start);
	while (ok) {
		int rv = raftkv_scan(w->kv, from != NULL ? from : start, from_len, end, strlen(end),
		                     100, put_scan_fn, &ps, &next, &next_len);

		raftkv_free(from);
		from = next;
		from_len = next_len;
		next = NULL;
		if (rv != RAFTKV_OK || ps.bad) {
			fprintf(stderr, "\nscan: %s\n", raftkv_strerror(rv));
			ok = false;
		}
		if (from == NULL)
			break;
	}
	raftkv_free(from);
	for (size_t i = 0; ok && i < w->issued; i++) {
		int o = w->put_out[i];

		if ((o == CF_OUT_ACKED && ps.seen[i] != 1) || (o == CF_OUT_FAILED && ps.seen[i]) ||
		    ps.seen[i] > 1) {
			fprintf(stderr, "\nput w%u/%zu: outcome %d, seen %u\n", w->id, i, o,
			        ps.seen[i]);
			ok = false;
		}
	}
	for (size_t i = w->issued; ok && i < w->cap; i++)
		ok = ps.seen[i] == 0;
	free(ps.seen);
	return ok;
}

/* ------------------------------------------------------------------------------------------ */
/* 1. Basic operations                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* Collects scanned pairs; stops after stop_after keys when that is non-zero. */
typedef struct scan_acc {
	size_t n;
	size_t stop_after;
	char keys[64][24];
	size_t key_lens[64];
	bool bad_value; /* a value that is not "v" + the key's last two characters, for s/ keys */
	bool unordered;
} scan_acc;

static int scan_acc_fn(void *ctx, const void *key, size_t key_len, const void *value,
                       size_t value_len)
{
	scan_acc *a = ctx;
	size_t kl = key_len < sizeof a->keys[0] - 1 ? key_len : sizeof a->keys[0] - 1;

	if (a->n > 0) {
		size_t pl = a->key_lens[a->n - 1] < kl ? a->key_lens[a->n - 1] : kl;
		int c = memcmp(a->keys[a->n - 1], key, pl);

		if (c > 0 || (c == 0 && a->key_lens[a->n - 1] >= key_len))
			a->unordered = true;
	}
	if (key_len == 4 && memcmp(key, "s/", 2) == 0) {
		const char *k = key;

		a->bad_value |= value_len != 3 || ((const char *)value)[0] != 'v' ||
		                memcmp((const char *)value + 1, k + 2, 2) != 0;
	}
	if (a->n < 64) {
		memcpy(a->keys[a->n], key, kl);
		a->keys[a->n][kl] = '\0';
		a->key_lens[a->n] = kl;
	}
	a->n++;
	return a->stop_after != 0 && a->n >= a->stop_after;
}

static bool next_is(const void *next, size_t next_len, const char *want)
{
	if (want == NULL)
		return next == NULL;
	return next != NULL && next_len == strlen(want) && memcmp(next, want, next_len) == 0;
}

static void test_basic(void)
{
	tcl t;
	raftkv *kv;
	void *v = NULL, *next = NULL;
	size_t n = 0, next_len = 0;
	char *big = NULL, *key = NULL, name[32];
	scan_acc acc;
	uint64_t rs = cf_seed();

	CHECK(tcl_open(&t, "cl-basic", 3));
	kv = t.kv;

	/* put / get / overwrite / missing keys */
	CHECK(put_s(kv, "k1", "v1") == RAFTKV_OK);
	CHECK(value_is_s(kv, "k1", "v1"));
	CHECK(put_s(kv, "k1", "v1b") == RAFTKV_OK);
	CHECK(value_is_s(kv, "k1", "v1b"));
	CHECK(get_status(kv, "nope") == RAFTKV_NOT_FOUND);
	CHECK(del_s(kv, "nope") == RAFTKV_NOT_FOUND);
	CHECK(get_status(kv, "nope") == RAFTKV_NOT_FOUND);

	/* append creates, then extends */
	CHECK(append_s(kv, "ap", "ab") == RAFTKV_OK);
	CHECK(value_is_s(kv, "ap", "ab"));
	CHECK(append_s(kv, "ap", "cd") == RAFTKV_OK);
	CHECK(value_is_s(kv, "ap", "abcd"));

	/* delete */
	CHECK(del_s(kv, "k1") == RAFTKV_OK);
	CHECK(get_status(kv, "k1") == RAFTKV_NOT_FOUND);
	CHECK(del_s(kv, "k1") == RAFTKV_NOT_FOUND);

	/* an empty value is a value: OK with NULL and 0 */
	CHECK(raftkv_put(kv, "empty", 5, "", 0) == RAFTKV_OK);
	v = (void *)&n;
	n = 99;
	CHECK(raftkv_get(kv, "empty", 5, &v, &n) == RAFTKV_OK);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_PTR_NULL(v);
	if (v != (void *)&n)
		raftkv_free(v);
	v = NULL;

	/* a value of RAFTKV_MAX_VALUE bytes, and an append past it changes nothing */
	big = malloc(RAFTKV_MAX_VALUE);
	CHECK(big != NULL);
	for (size_t i = 0; i < RAFTKV_MAX_VALUE; i++)
		big[i] = (char)(cf_rand(&rs) >> 56);
	CHECK(raftkv_put(kv, "big", 3, big, RAFTKV_MAX_VALUE) == RAFTKV_OK);
	CHECK(value_is(kv, "big", 3, big, RAFTKV_MAX_VALUE));
	CHECK(raftkv_append(kv, "big", 3, "x", 1) == RAFTKV_INVALID);
	CHECK(value_is(kv, "big", 3, big, RAFTKV_MAX_VALUE));

	/* up to the limit exactly: 11 bytes too many is refused, 10 fit */
	CHECK(raftkv_put(kv, "near", 4, big, RAFTKV_MAX_VALUE - 10) == RAFTKV_OK);
	CHECK(raftkv_append(kv, "near", 4, "0123456789X", 11) == RAFTKV_INVALID);
	CHECK(value_is(kv, "near", 4, big, RAFTKV_MAX_VALUE - 10));
	CHECK(raftkv_append(kv, "near", 4, "0123456789", 10) == RAFTKV_OK);
	memcpy(big + RAFTKV_MAX_VALUE - 10, "0123456789", 10);
	CHECK(value_is(kv, "near", 4, big, RAFTKV_MAX_VALUE));

	/* a key of RAFTKV_MAX_KEY bytes */
	key = malloc(RAFTKV_MAX_KEY);
	CHECK(key != NULL);
	for (size_t i = 0; i < RAFTKV_MAX_KEY; i++)
		key[i] = (char)('z' - (char)(i % 3));
	CHECK(raftkv_put(kv, key, RAFTKV_MAX_KEY, "bk", 2) == RAFTKV_OK);
	CHECK(value_is(kv, key, RAFTKV_MAX_KEY, "bk", 2));
	CHECK(raftkv_append(kv, key, RAFTKV_MAX_KEY, "2", 1) == RAFTKV_OK);
	CHECK(value_is(kv, key, RAFTKV_MAX_KEY, "bk2", 3));
	CHECK(raftkv_delete(kv, key, RAFTKV_MAX_KEY) == RAFTKV_OK);
	CHECK(raftkv_get(kv, key, RAFTKV_MAX_KEY, &v, &n) == RAFTKV_NOT_FOUND);

	/* scans: s/00..s/24 plus keys on both sides */
	for (int i = 0; i < 25; i++) {
		char val[16];

		snprintf(name, sizeof name, "s/%02d", i);
		snprintf(val, sizeof val, "v%02d", i);
		CHECK(put_s(kv, name, val) == RAFTKV_OK);
	}
	CHECK(put_s(kv, "a1", "x") == RAFTKV_OK);
	CHECK(put_s(kv, "a2", "x") == RAFTKV_OK);
	CHECK(put_s(kv, "t", "x") == RAFTKV_OK);

	/* limit + continuation over [s/, s0) */
	memset(&acc, 0, sizeof acc);
	CHECK(raftkv_scan(kv, "s/", 2, "s0", 2, 10, scan_acc_fn, &acc, &next, &next_len) ==
	      RAFTKV_OK);
	CHECK(acc.n == 10 && strcmp(acc.keys[0], "s/00") == 0 && strcmp(acc.keys[9], "s/09") == 0);
	CHECK(next_is(next, next_len, "s/10"));
	memset(&acc, 0, sizeof acc);
	{
		void *from = next;
		size_t from_len = next_len;

		int rv;

		next = NULL;
		rv = raftkv_scan(kv, from, from_len, "s0", 2, 10, scan_acc_fn, &acc, &next,
		                 &next_len);
		raftkv_free(from);
		CHECK(rv == RAFTKV_OK);
	}
	CHECK(acc.n == 10 && strcmp(acc.keys[0], "s/10") == 0 && strcmp(acc.keys[9], "s/19") == 0);
	CHECK(next_is(next, next_len, "s/20"));
	memset(&acc, 0, sizeof acc);
	{
		void *from = next;
		size_t from_len = next_len;

		int rv;

		next = (void *)&n;
		rv = raftkv_scan(kv, from, from_len, "s0", 2, 10, scan_acc_fn, &acc, &next,
		                 &next_len);
		raftkv_free(from);
		CHECK(rv == RAFTKV_OK);
	}
	CHECK(acc.n == 5 && strcmp(acc.keys[0], "s/20") == 0 && strcmp(acc.keys[4], "s/24") == 0);
	CHECK(next == NULL); /* the range ran out */
	CU_ASSERT_FALSE(acc.bad_value);
	CU_ASSERT_FALSE(acc.unordered);

	/* the callback stops the scan: no continuation */
	memset(&acc, 0, sizeof acc);
	acc.stop_after = 3;
	next = (void *)&n;
	CHECK(raftkv_scan(kv, "s/", 2, "s0", 2, 0, scan_acc_fn, &acc, &next, &next_len) ==
	      RAFTKV_OK);
	CHECK(acc.n == 3);
	CHECK(next == NULL);

	/* end bound is exclusive; NULL continuation pointers are fine */
	memset(&acc, 0, sizeof acc);
	CHECK(raftkv_scan(kv, "s/05", 4, "s/08", 4, 0, scan_acc_fn, &acc, NULL, NULL) == RAFTKV_OK);
	CHECK(acc.n == 3 && strcmp(acc.keys[0], "s/05") == 0 && strcmp(acc.keys[2], "s/07") == 0);

	/* empty start: from the first key */
	memset(&acc, 0, sizeof acc);
	CHECK(raftkv_scan(kv, NULL, 0, "a3", 2, 0, scan_acc_fn, &acc, NULL, NULL) == RAFTKV_OK);
	CHECK(acc.n == 2 && strcmp(acc.keys[0], "a1") == 0 && strcmp(acc.keys[1], "a2") == 0);

	/* everything: a1 a2 ap big empty near s/00..s/24 t */
	memset(&acc, 0, sizeof acc);
	next = (void *)&n;
	CHECK(raftkv_scan(kv, NULL, 0, NULL, 0, 0, scan_acc_fn, &acc, &next, &next_len) ==
	      RAFTKV_OK);
	CHECK(acc.n == 32);
	CHECK(next == NULL);
	CU_ASSERT_FALSE(acc.unordered);
	CU_ASSERT_STRING_EQUAL(acc.keys[3], "big");
	CU_ASSERT_STRING_EQUAL(acc.keys[31], "t");

	/* an empty or reversed range delivers nothing */
	memset(&acc, 0, sizeof acc);
	CHECK(raftkv_scan(kv, "s/05", 4, "s/05", 4, 0, scan_acc_fn, &acc, NULL, NULL) == RAFTKV_OK);
	CHECK(acc.n == 0);
	CHECK(raftkv_scan(kv, "t", 1, "a", 1, 0, scan_acc_fn, &acc, NULL, NULL) == RAFTKV_OK);
	CHECK(acc.n == 0);

	/* binary keys sort by memcmp: 0x00 first, 0xff last */
	CHECK(raftkv_put(kv, "\x00\x01", 2, "lo", 2) == RAFTKV_OK);
	CHECK(raftkv_put(kv, "\xff\x00", 2, "hi", 2) == RAFTKV_OK);
	CHECK(value_is(kv, "\x00\x01", 2, "lo", 2));
	memset(&acc, 0, sizeof acc);
	CHECK(raftkv_scan(kv, NULL, 0, NULL, 0, 0, scan_acc_fn, &acc, NULL, NULL) == RAFTKV_OK);
	CHECK(acc.n == 34);
	CU_ASSERT(acc.key_lens[0] == 2 && memcmp(acc.keys[0], "\x00\x01", 2) == 0);
	CU_ASSERT(acc.key_lens[33] == 2 && memcmp(acc.keys[33], "\xff\x00", 2) == 0);
	CU_ASSERT_FALSE(acc.unordered);

	/* past the last key: nothing */
	memset(&acc, 0, sizeof acc);
	CHECK(raftkv_scan(kv, "\xff\x01", 2, NULL, 0, 0, scan_acc_fn, &acc, NULL, NULL) ==
	      RAFTKV_OK);
	CHECK(acc.n == 0);
out:
	if (next != (void *)&n)
		raftkv_free(next);
	free(big);
	free(key);
	tcl_fini(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 2. Reopen, and files that are not this cluster's                                           */
/* ------------------------------------------------------------------------------------------ */

static const char *const db_suffixes[] = {"", "-wal", "-shm"};

static void path_of(char *buf, size_t len, const char *dir, const char *name, const char *suffix)
{
	snprintf(buf, len, "%s/%s%s", dir, name, suffix);
}

static bool file_exists(const char *dir, const char *name)
{
	char p[512];

	path_of(p, sizeof p, dir, name, "");
	return access(p, F_OK) == 0;
}

/* Renames dir/from{,-wal,-shm} to dir/to{...}. A missing -wal or -shm is fine; a stale one at
 * the destination is removed. */
static bool db_rename(const char *dir, const char *from, const char *to)
{
	char a[512], b[512];

	for (size_t i = 0; i < 3; i++) {
		path_of(a, sizeof a, dir, from, db_suffixes[i]);
		path_of(b, sizeof b, dir, to, db_suffixes[i]);
		unlink(b);
		if (rename(a, b) != 0 && (i == 0 || errno != ENOENT)) {
			fprintf(stderr, "\nrename %s %s: %s\n", a, b, strerror(errno));
			return false;
		}
	}
	return true;
}

static bool copy_file(const char *src, const char *dst)
{
	char buf[65536];
	int in = open(src, O_RDONLY), out = -1;
	ssize_t r = 0;
	bool ok = false;

	if (in < 0)
		return false;
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (out < 0)
		goto done;
	while ((r = read(in, buf, sizeof buf)) > 0)
		if (write(out, buf, (size_t)r) != r)
			goto done;
	ok = r == 0;
done:
	close(in);
	if (out >= 0)
		close(out);
	return ok;
}

/* Copies from_dir/name{,-wal} to to_dir/to_name{,-wal} (removing the destination's -wal and
 * -shm first). */
static bool db_copy(const char *from_dir, const char *name, const char *to_dir, const char *to_name)
{
	char a[512], b[512];

	for (size_t i = 0; i < 3; i++) {
		path_of(b, sizeof b, to_dir, to_name, db_suffixes[i]);
		unlink(b);
	}
	for (size_t i = 0; i < 2; i++) {
		path_of(a, sizeof a, from_dir, name, db_suffixes[i]);
		path_of(b, sizeof b, to_dir, to_name, db_suffixes[i]);
		if (access(a, F_OK) != 0 && i > 0)
			continue;
		if (!copy_file(a, b)) {
			fprintf(stderr, "\ncopy %s %s failed\n", a, b);
			return false;
		}
	}
	return true;
}

static bool write_file(const char *dir, const char *name, const void *data, size_t len)
{
	char p[512];
	int fd;
	bool ok;

	path_of(p, sizeof p, dir, name, "");
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return false;
	ok = write(fd, data, len) == (ssize_t)len;
	close(fd);
	return ok;
}

/* raftkv_open must fail with want (or any error when want is 0), leave *out NULL and give a
 * reason. */
static bool open_refused(const char *dir, const raftkv_options *o, int want)
{
	raftkv *kv = (raftkv *)&kv;
	char err[256] = "";
	int rv = raftkv_open(dir, o, &kv, err, sizeof err);

	if (rv == RAFTKV_OK) {
		fprintf(stderr, "\nraftkv_open(%s) succeeded; expected a refusal\n", dir);
		raftkv_close(kv);
		return false;
	}
	if (want != 0 && rv != want) {
		fprintf(stderr, "\nraftkv_open(%s): %s (%s), expected %s\n", dir,
		        raftkv_strerror(rv), err, raftkv_strerror(want));
		return false;
	}
	if (kv != NULL || err[0] == '\0') {
		fprintf(stderr, "\nraftkv_open(%s): %s with *out %p, message \"%s\"\n", dir,
		        raftkv_strerror(rv), (void *)kv, err);
		return false;
	}
	return true;
}

static bool reopen_keys_present(raftkv *kv, int n)
{
	char k[16], v[16];

	for (int i = 0; i < n; i++) {
		snprintf(k, sizeof k, "r%02d", i);
		snprintf(v, sizeof v, "val-%d", i);
		if (!value_is_s(kv, k, v))
			return false;
	}
	return true;
}

static void test_reopen(void)
{
	tcl t, f;
	raftkv_options o5;
	char k[16], v[16];
	const char garbage[] = "\x7f"
	                       "ELF not a manifest \x01\x02\x03 cluster_id zz nodes 3\n";

	memset(&f, 0, sizeof f);
	CHECK(tcl_init(&t, "cl-reopen", 3));
	t.o.sync = RAFTKV_SYNC_FULL;
	CHECK(tcl_start(&t));
	for (int i = 0; i < 20; i++) {
		snprintf(k, sizeof k, "r%02d", i);
		snprintf(v, sizeof v, "val-%d", i);
		CHECK(put_s(t.kv, k, v) == RAFTKV_OK);
	}
	tcl_close(&t);
	CHECK(file_exists(t.dir, "node-1.db") && file_exists(t.dir, "node-3.db"));
	CHECK(file_exists(t.dir, CLUSTER_MANIFEST));

	/* the same directory again: everything is there */
	CHECK(tcl_start(&t));
	CHECK(reopen_keys_present(t.kv, 20));
	tcl_close(&t);

	/* another node count */
	o5 = t.o;
	o5.n_nodes = 5;
	CHECK(open_refused(t.dir, &o5, RAFTKV_INVALID));
	o5.n_nodes = 1;
	CHECK(open_refused(t.dir, &o5, RAFTKV_INVALID));
	CHECK(!file_exists(t.dir, "node-4.db"));

	/* a database of another cluster in node 2's place */
	CHECK(tcl_open(&f, "cl-foreign", 3));
	CHECK(put_s(f.kv, "foreign", "yes") == RAFTKV_OK);
	tcl_close(&f);
	CHECK(db_rename(t.dir, "node-2.db", "keep-2.db"));
	CHECK(db_copy(f.dir, "node-2.db", t.dir, "node-2.db"));
	CHECK(open_refused(t.dir, &t.o, RAFTKV_CORRUPT));
	CHECK(db_rename(t.dir, "keep-2.db", "node-2.db"));

	/* node 1's and node 2's databases swapped */
	CHECK(db_rename(t.dir, "node-1.db", "swap.db"));
	CHECK(db_rename(t.dir, "node-2.db", "node-1.db"));
	CHECK(db_rename(t.dir, "swap.db", "node-2.db"));
	CHECK(open_refused(t.dir, &t.o, RAFTKV_CORRUPT));
	CHECK(db_rename(t.dir, "node-1.db", "swap.db"));
	CHECK(db_rename(t.dir, "node-2.db", "node-1.db"));
	CHECK(db_rename(t.dir, "swap.db", "node-2.db"));

	/* a node database missing from a complete cluster is not recreated */
	CHECK(db_rename(t.dir, "node-3.db", "keep-3.db"));
	CHECK(open_refused(t.dir, &t.o, 0));
	CHECK(!file_exists(t.dir, "node-3.db"));
	CHECK(db_rename(t.dir, "keep-3.db", "node-3.db"));

	/* a garbage manifest, then an empty one */
	CHECK(db_rename(t.dir, CLUSTER_MANIFEST, "keep.cluster"));
	CHECK(write_file(t.dir, CLUSTER_MANIFEST, garbage, sizeof garbage - 1));
	CHECK(open_refused(t.dir, &t.o, RAFTKV_CORRUPT));
	CHECK(write_file(t.dir, CLUSTER_MANIFEST, "", 0));
	CHECK(open_refused(t.dir, &t.o, RAFTKV_CORRUPT));
	CHECK(db_rename(t.dir, "keep.cluster", CLUSTER_MANIFEST));

	/* none of the refused opens damaged anything */
	CHECK(tcl_start(&t));
	CHECK(reopen_keys_present(t.kv, 20));
	CHECK(get_status(t.kv, "foreign") == RAFTKV_NOT_FOUND);
out:
	tcl_fini(&f);
	tcl_fini(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 3. Bad input for every public function                                                     */
/* ------------------------------------------------------------------------------------------ */

static atomic_int bad_callbacks;

static void bad_done(void *ctx, int status, const void *value, size_t value_len)
{
	(void)ctx;
	(void)status;
	(void)value;
	(void)value_len;
	atomic_fetch_add(&bad_callbacks, 1);
}

static int bad_scan_fn(void *ctx, const void *key, size_t key_len, const void *value,
                       size_t value_len)
{
	(void)key;
	(void)key_len;
	(void)value;
	(void)value_len;
	(*(int *)ctx)++;
	return 0;
}

static size_t dir_entries(const char *dir)
{
	size_t n = 0;
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d == NULL)
		return SIZE_MAX;
	while ((e = readdir(d)) != NULL)
		n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	closedir(d);
	return n;
}

/* Options that raftkv_open must refuse with RAFTKV_INVALID before touching dir. */
static bool bad_options_refused(const char *dir)
{
	raftkv_options o, base;
	bool ok = true;

	cf_options(&base, 3);
#define BAD(field_change)                                                                          \
	do {                                                                                       \
		o = base;                                                                          \
		field_change;                                                                      \
		if (!open_refused(dir, &o, RAFTKV_INVALID) || dir_entries(dir) != 0) {             \
			fprintf(stderr, "\nbad option accepted or dir touched: %s\n",              \
			        #field_change);                                                    \
			ok = false;                                                                \
		}                                                                                  \
	} while (0)
	BAD(o.n_nodes = 0);
	BAD(o.n_nodes = RAFTKV_MAX_NODES + 1);
	BAD(o.election_ticks = o.heartbeat_ticks);
	BAD(o.election_ticks = 2; o.heartbeat_ticks = 3);
	BAD(o.heartbeat_ticks = 0);
	BAD(o.mailbox_capacity = 1000);
	BAD(o.mailbox_capacity = 0);
	BAD(o.gc_trailing = o.gc_threshold);
	BAD(o.gc_trailing = o.gc_threshold + 1);
	BAD(o.gc_hard_limit = 2 * o.gc_threshold + 1);
	BAD(o.sync = (raftkv_sync)7);
#undef BAD
	return ok;
}

static void test_bad_input(void)
{
	tcl t;
	raftkv *kv, *out = NULL;
	raftkv_options o;
	raftkv_status st;
	char empty_dir[256] = "", missing[300], err[256], small[8];
	char *bigkey = calloc(RAFTKV_MAX_KEY + 1, 1), *bigval = calloc(RAFTKV_MAX_VALUE + 1, 1);
	void *v = NULL;
	size_t n = 0;
	int scanned = 0;
	uint64_t id, ids_bad0[] = {1, 0}, ids_bad4[] = {1, 4}, ids_ok[] = {1};
	const int codes[] = {RAFTKV_OK,    RAFTKV_NOT_FOUND,      RAFTKV_TIMEOUT, RAFTKV_INVALID,
	                     RAFTKV_BUSY,  RAFTKV_CLOSED,         RAFTKV_IO,      RAFTKV_CORRUPT,
	                     RAFTKV_NOMEM, RAFTKV_SESSION_EXPIRED};
	const size_t nc = sizeof codes / sizeof codes[0];
	const int unknown[] = {1, -10, -100, 12345, INT_MIN, INT_MAX};

	memset(&t, 0, sizeof t);
	atomic_store(&bad_callbacks, 0);
	CHECK(bigkey != NULL && bigval != NULL);
	memset(bigkey, 'k', RAFTKV_MAX_KEY + 1);

	/* raftkv_strerror: every code named, distinctly; anything else "unknown error" */
	for (size_t i = 0; i < nc; i++) {
		const char *s = raftkv_strerror(codes[i]);

		CHECK(s != NULL && s[0] != '\0' && strcmp(s, "unknown error") != 0);
		for (size_t j = 0; j < i; j++)
			CU_ASSERT(strcmp(s, raftkv_strerror(codes[j])) != 0);
	}
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
		CU_ASSERT_STRING_EQUAL(raftkv_strerror(unknown[i]), "unknown error");
	raftkv_free(NULL);
	raftkv_close(NULL);

	/* documented defaults */
	memset(&o, 0xa5, sizeof o);
	raftkv_options_init(&o);
	CU_ASSERT_EQUAL(o.n_nodes, 3);
	CU_ASSERT_EQUAL(o.tick_ms, 10);
	CU_ASSERT_EQUAL(o.election_ticks, 100);
	CU_ASSERT_EQUAL(o.heartbeat_ticks, 10);
	CU_ASSERT_EQUAL(o.sync, RAFTKV_SYNC_FULL);
	CU_ASSERT_EQUAL(o.request_timeout_ms, 5000);
	CU_ASSERT_EQUAL(o.gc_threshold, 10000);
	CU_ASSERT_EQUAL(o.gc_trailing, 1000);
	CU_ASSERT_EQUAL(o.gc_hard_limit, 20000);
	CU_ASSERT_EQUAL(o.snapshot_chunk_size, 256u * 1024u);
	CU_ASSERT_EQUAL(o.snapshot_window, 8);
	CU_ASSERT_EQUAL(o.snapshot_max_concurrent, 2);
	CU_ASSERT_EQUAL(o.snapshot_rate_limit, 0);
	CU_ASSERT_EQUAL(o.mailbox_capacity, 4096);
	CU_ASSERT_EQUAL(o.max_inflight, 4096);
	CU_ASSERT_EQUAL(o.seed, 0);
	CU_ASSERT_PTR_NULL(o.vfs);
	CU_ASSERT_PTR_NULL(o.trace);

	/* raftkv_open: bad options, NULL arguments, a directory that does not exist */
	CHECK(cf_mkdtemp(empty_dir, sizeof empty_dir, "cl-badopen"));
	CHECK(bad_options_refused(empty_dir));
	cf_options(&o, 3);
	out = (raftkv *)&out;
	CU_ASSERT_EQUAL(raftkv_open(empty_dir, &o, NULL, err, sizeof err), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_open(NULL, &o, &out, err, sizeof err), RAFTKV_INVALID);
	CU_ASSERT_PTR_NULL(out);
	CU_ASSERT_EQUAL(raftkv_open(NULL, &o, &out, NULL, 0), RAFTKV_INVALID);
	memset(small, 'x', sizeof small);
	CU_ASSERT_EQUAL(raftkv_open(NULL, &o, &out, small, sizeof small), RAFTKV_INVALID);
	CU_ASSERT(memchr(small, '\0', sizeof small) != NULL);
	CU_ASSERT_EQUAL(dir_entries(empty_dir), 0);
	snprintf(missing, sizeof missing, "%s/does/not/exist", empty_dir);
	CHECK(open_refused(missing, &o, 0));
	CU_ASSERT_EQUAL(dir_entries(empty_dir), 0);
	{
		char file[300];

		snprintf(file, sizeof file, "%s/plainfile", empty_dir);
		CHECK(write_file(empty_dir, "plainfile", "x", 1));
		CHECK(open_refused(file, &o, 0));
	}

	/* a live cluster with two keys */
	CHECK(tcl_open(&t, "cl-bad", 3));
	kv = t.kv;
	CHECK(put_s(kv, "k", "v") == RAFTKV_OK);
	CHECK(put_s(kv, "k2", "v2") == RAFTKV_OK);

	/* writes */
	CU_ASSERT_EQUAL(raftkv_put(NULL, "k", 1, "x", 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_put(kv, NULL, 1, "x", 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_put(kv, "k", 0, "x", 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_put(kv, bigkey, RAFTKV_MAX_KEY + 1, "x", 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_put(kv, "k", 1, bigval, RAFTKV_MAX_VALUE + 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_put(kv, "k", 1, NULL, 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_append(NULL, "k", 1, "x", 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_append(kv, NULL, 1, "x", 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_append(kv, "k", 0, "x", 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_append(kv, bigkey, RAFTKV_MAX_KEY + 1, "x", 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_append(kv, "k", 1, bigval, RAFTKV_MAX_VALUE + 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_append(kv, "k", 1, NULL, 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_delete(NULL, "k", 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_delete(kv, NULL, 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_delete(kv, "k", 0), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_delete(kv, bigkey, RAFTKV_MAX_KEY + 1), RAFTKV_INVALID);

	/* reads */
	CU_ASSERT_EQUAL(raftkv_get(NULL, "k", 1, &v, &n), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_get(kv, NULL, 1, &v, &n), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_get(kv, "k", 0, &v, &n), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_get(kv, bigkey, RAFTKV_MAX_KEY + 1, &v, &n), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_get(kv, "k", 1, NULL, &n), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_get(kv, "k", 1, &v, NULL), RAFTKV_INVALID);
	CU_ASSERT_PTR_NULL(v);
	CU_ASSERT_EQUAL(raftkv_scan(NULL, "a", 1, NULL, 0, 0, bad_scan_fn, &scanned, NULL, NULL),
	                RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_scan(kv, "a", 1, NULL, 0, 0, NULL, &scanned, NULL, NULL),
	                RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_scan(kv, NULL, 1, NULL, 0, 0, bad_scan_fn, &scanned, NULL, NULL),
	                RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_scan(kv, "a", 1, NULL, 1, 0, bad_scan_fn, &scanned, NULL, NULL),
	                RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_scan(kv, bigkey, RAFTKV_MAX_KEY + 1, NULL, 0, 0, bad_scan_fn,
	                            &scanned, NULL, NULL),
	                RAFTKV_INVALID);
	CU_ASSERT_EQUAL(scanned, 0);

	/* asynchronous calls: refused ones never call back */
	CU_ASSERT_EQUAL(raftkv_put_async(NULL, "k", 1, "x", 1, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_put_async(kv, NULL, 1, "x", 1, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_put_async(kv, "k", 0, "x", 1, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_put_async(kv, bigkey, RAFTKV_MAX_KEY + 1, "x", 1, bad_done, NULL),
	                RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_put_async(kv, "k", 1, bigval, RAFTKV_MAX_VALUE + 1, bad_done, NULL),
	                RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_put_async(kv, "k", 1, NULL, 1, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_put_async(kv, "k", 1, "x", 1, NULL, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_append_async(NULL, "k", 1, "x", 1, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_append_async(kv, NULL, 1, "x", 1, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_append_async(kv, "k", 0, "x", 1, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_append_async(kv, bigkey, RAFTKV_MAX_KEY + 1, "x", 1, bad_done, NULL),
	                RAFTKV_INVALID);
	CU_ASSERT_EQUAL(
	    raftkv_append_async(kv, "k", 1, bigval, RAFTKV_MAX_VALUE + 1, bad_done, NULL),
	    RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_append_async(kv, "k", 1, "x", 1, NULL, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_get_async(NULL, "k", 1, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_get_async(kv, NULL, 1, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_get_async(kv, "k", 0, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_get_async(kv, bigkey, RAFTKV_MAX_KEY + 1, bad_done, NULL),
	                RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_get_async(kv, "k", 1, NULL, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_delete_async(NULL, "k", 1, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_delete_async(kv, NULL, 1, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_delete_async(kv, "k", 0, bad_done, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_delete_async(kv, bigkey, RAFTKV_MAX_KEY + 1, bad_done, NULL),
	                RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_delete_async(kv, "k", 1, NULL, NULL), RAFTKV_INVALID);

	/* status and control */
	CU_ASSERT_EQUAL(raftkv_node_status(NULL, 1, &st), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_node_status(kv, 0, &st), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_node_status(kv, 4, &st), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_node_status(kv, 1, NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_leader(NULL), 0);
	CU_ASSERT_EQUAL(raftkv_wait_leader(NULL, 10, &id), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_transfer_leader(NULL, 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_transfer_leader(kv, 0), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_transfer_leader(kv, 4), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_tick(NULL, 1), RAFTKV_INVALID);

	/* faults */
	CU_ASSERT_EQUAL(raftkv_node_stop(NULL, 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_node_stop(kv, 0), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_node_stop(kv, 4), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_node_start(NULL, 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_node_start(kv, 0), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_node_start(kv, 4), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_isolate(NULL, 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_isolate(kv, 0), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_isolate(kv, 4), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_partition(NULL, ids_ok, 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_partition(kv, NULL, 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_partition(kv, ids_bad0, 2), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_partition(kv, ids_bad4, 2), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_heal(NULL), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_drop_rate(NULL, 0.1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_drop_rate(kv, -0.1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_drop_rate(kv, 1.5), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_drop_rate(kv, NAN), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_drop_rate(kv, INFINITY), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_link_drop_rate(NULL, 1, 2, 0.1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_link_drop_rate(kv, 0, 2, 0.1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_link_drop_rate(kv, 1, 0, 0.1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_link_drop_rate(kv, 4, 1, 0.1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_link_drop_rate(kv, 1, 4, 0.1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_link_drop_rate(kv, 1, 2, -1.0), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_link_drop_rate(kv, 1, 2, 2.0), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_link_drop_rate(kv, 1, 2, NAN), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_delay(NULL, 0, 0), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_delay(kv, 5, 1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_duplicate_rate(NULL, 0.1), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_duplicate_rate(kv, -0.5), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_duplicate_rate(kv, 1.01), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_duplicate_rate(kv, NAN), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_reorder(NULL, 0.1, 5), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_reorder(kv, -0.1, 5), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_reorder(kv, 1.5, 5), RAFTKV_INVALID);
	CU_ASSERT_EQUAL(raftkv_set_reorder(kv, NAN, 5), RAFTKV_INVALID);

	/* nothing changed: the same two keys, every node running and in step */
	{
		scan_acc acc;

		memset(&acc, 0, sizeof acc);
		CHECK(raftkv_scan(kv, NULL, 0, NULL, 0, 0, scan_acc_fn, &acc, NULL, NULL) ==
		      RAFTKV_OK);
		CU_ASSERT_EQUAL(acc.n, 2);
		CU_ASSERT_STRING_EQUAL(acc.keys[0], "k");
		CU_ASSERT_STRING_EQUAL(acc.keys[1], "k2");
	}
	CHECK(value_is_s(kv, "k", "v"));
	CHECK(value_is_s(kv, "k2", "v2"));
	CU_ASSERT(none_stopped(kv));
	CHECK(put_s(kv, "k3", "v3") == RAFTKV_OK);
	CU_ASSERT(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	CU_ASSERT_EQUAL(atomic_load(&bad_callbacks), 0);
	tcl_close(&t);
	CU_ASSERT_EQUAL(atomic_load(&bad_callbacks), 0);
out:
	tcl_fini(&t);
	if (empty_dir[0] != '\0')
		cf_rmtree(empty_dir);
	free(bigkey);
	free(bigval);
}

/* ------------------------------------------------------------------------------------------ */
/* 4. Status                                                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct totals {
	uint64_t proposals, reads;
} totals;

static totals sum_counters(raftkv *kv)
{
	totals s = {0, 0};

	for (uint64_t id = 1; id <= cf_nodes(kv); id++) {
		raftkv_status st = cf_status(kv, id);

		s.proposals += st.proposals;
		s.reads += st.reads;
	}
	return s;
}

/* The invariants every node's status keeps. */
static bool status_sane(raftkv *kv, uint64_t id, size_t mailbox_capacity)
{
	raftkv_status st = cf_status(kv, id);
	bool ok = st.id == id && st.commit >= st.applied && st.first_index <= st.last_index + 1 &&
	          st.last_index >= st.commit && st.mailbox_depth <= mailbox_capacity &&
	          st.failed == RAFTKV_OK && st.failure[0] == '\0' &&
	          (st.role == RAFTKV_ROLE_STOPPED || st.term >= 1) && st.role >= 0 &&
	          st.role <= RAFTKV_ROLE_STOPPED;

	if (!ok)
		fprintf(stderr,
		        "\nnode %" PRIu64 ": id %" PRIu64 " role %d term %" PRIu64
		        " commit %" PRIu64 " applied %" PRIu64 " first %" PRIu64 " last %" PRIu64
		        " depth %zu failed %d '%s'\n",
		        id, st.id, st.role, st.term, st.commit, st.applied, st.first_index,
		        st.last_index, st.mailbox_depth, st.failed, st.failure);
	return ok;
}

static void test_status(void)
{
	tcl t;
	raftkv *kv;
	uint64_t leader = 0, follower;
	totals before, after;
	char k[16];
	raftkv_status st, l_before;

	CHECK(tcl_init(&t, "cl-status", 3));
	t.o.sync = RAFTKV_SYNC_FULL;
	CHECK(tcl_start(&t));
	kv = t.kv;

	CHECK(cluster_wait(kv, one_leader_pred, &leader, cf_wait_ms()) == RAFTKV_OK);
	CHECK(leader >= 1 && leader <= 3);
	CU_ASSERT_EQUAL(raftkv_leader(kv), leader);
	for (uint64_t id = 1; id <= 3; id++)
		CU_ASSERT(status_sane(kv, id, t.o.mailbox_capacity));

	before = sum_counters(kv);
	l_before = cf_status(kv, leader);
	for (int i = 0; i < 20; i++) {
		snprintf(k, sizeof k, "st%02d", i);
		CHECK(put_s(kv, k, "x") == RAFTKV_OK);
	}
	CHECK(value_is_s(kv, "st07", "x"));
	/* a write after the read, so the Ready that counted the read has been published */
	CHECK(put_s(kv, "st-last", "x") == RAFTKV_OK);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	after = sum_counters(kv);
	CU_ASSERT(after.proposals >= before.proposals + 21);
	CU_ASSERT(after.reads >= before.reads + 1);
	leader = raftkv_leader(kv);
	CHECK(leader != 0);
	st = cf_status(kv, leader);
	CU_ASSERT(st.proposals >= 1);
	if (st.id == l_before.id && st.term == l_before.term) /* the same leadership throughout */
		CU_ASSERT(st.proposals >= l_before.proposals + 21);
	for (uint64_t id = 1; id <= 3; id++) {
		st = cf_status(kv, id);
		CU_ASSERT(status_sane(kv, id, t.o.mailbox_capacity));
		CU_ASSERT(st.fsyncs >= 1); /* sync FULL */
		CU_ASSERT(st.applied >= 22);
		CU_ASSERT_EQUAL(st.role == RAFTKV_ROLE_LEADER, id == leader);
	}

	/* a stopped node says so, and can neither lead nor be handed leadership */
	follower = leader % 3 + 1;
	CHECK(raftkv_node_stop(kv, follower) == RAFTKV_OK);
	CHECK(raftkv_node_stop(kv, follower) == RAFTKV_OK); /* idempotent */
	st = cf_status(kv, follower);
	CU_ASSERT_EQUAL(st.role, RAFTKV_ROLE_STOPPED);
	CU_ASSERT_EQUAL(st.id, follower);
	CU_ASSERT_EQUAL(raftkv_transfer_leader(kv, follower), RAFTKV_INVALID);
	CU_ASSERT_NOT_EQUAL(raftkv_leader(kv), follower);
	CHECK(put_s(kv, "while-stopped", "x") == RAFTKV_OK);
	CHECK(raftkv_node_start(kv, follower) == RAFTKV_OK);
	CHECK(raftkv_node_start(kv, follower) == RAFTKV_OK); /* idempotent */
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	CU_ASSERT(cf_status(kv, follower).role != RAFTKV_ROLE_STOPPED);
	for (uint64_t id = 1; id <= 3; id++)
		CU_ASSERT(status_sane(kv, id, t.o.mailbox_capacity));
out:
	tcl_fini(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 5. Leadership transfer                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void test_transfer(void)
{
	tcl t;
	raftkv *kv;
	char v[32];

	CHECK(tcl_open(&t, "cl-transfer", 3));
	kv = t.kv;
	CHECK(put_s(kv, "t", "0") == RAFTKV_OK);
	for (int round = 0; round < 2; round++) {
		for (uint64_t k = 1; k <= 3; k++) {
			uint64_t cur = leader_of(kv);

			CHECK(cur != 0);
			if (k == cur)
				continue;
			CHECK(raftkv_transfer_leader(kv, k) == RAFTKV_OK);
			CHECK(raftkv_leader(kv) == k);
			snprintf(v, sizeof v, "%d%" PRIu64, round, k);
			CHECK(put_s(kv, "t", v) == RAFTKV_OK);
			CHECK(value_is_s(kv, "t", v));
		}
	}
	/* handing leadership to the leader itself is a no-op */
	{
		uint64_t cur = leader_of(kv);

		CHECK(cur != 0);
		CHECK(raftkv_transfer_leader(kv, cur) == RAFTKV_OK);
		CHECK(raftkv_leader(kv) == cur);
	}
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
out:
	tcl_fini(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 6. The one-partition test (issue 4)                                                        */
/* ------------------------------------------------------------------------------------------ */

/* A probe that must not have been answered with data: either no answer within wait_ms, or
 * an answer other than REQUEST_OK. */
static bool probe_refused(cf_probe *p, unsigned wait_ms, bool must_answer)
{
	int status = -1;
	char buf[16];
	size_t len = 0;

	if (p == NULL)
		return false;
	if (!cf_probe_wait(p, wait_ms, &status, buf, sizeof buf, &len))
		return !must_answer;
	if (status == REQUEST_OK)
		fprintf(stderr, "\nan isolated leader answered a read: \"%.*s\"\n",
		        (int)(len < sizeof buf ? len : sizeof buf), buf);
	return status != REQUEST_OK;
}

/* A value read through the cluster: OK with this value, TIMEOUT, or a failure. Returns false
 * when the read is stale or broken. */
static bool read_latest(raftkv *kv, const char *key, const char *latest, size_t *oks)
{
	void *v = NULL;
	size_t n = 0;
	int rv = raftkv_get(kv, key, strlen(key), &v, &n);
	bool ok;

	if (rv == RAFTKV_TIMEOUT)
		return true;
	ok = rv == RAFTKV_OK && n == strlen(latest) && memcmp(v, latest, n) == 0;
	if (!ok)
		fprintf(stderr, "\nstale or failed read of %s: %s \"%.*s\" (latest \"%s\")\n", key,
		        raftkv_strerror(rv), (int)(n < 40 ? n : 40), v ? (const char *)v : "",
		        latest);
	*oks += ok;
	raftkv_free(v);
	return ok;
}

static void test_one_partition(void)
{
	tcl t;
	raftkv *kv;
	uint64_t l, o[4], majority[3], minority[2], old_side[2], new_side[3], nl = 0;
	uint64_t li0, l_commit, l_reads, l_term;
	raftkv_status st;
	size_t oks = 0;
	cf_probe *probe = NULL;

	CHECK(tcl_open(&t, "cl-part1", 5));
	kv = t.kv;
	CHECK(put_s(kv, "p", "v0") == RAFTKV_OK);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	l = raftkv_leader(kv);
	CHECK(l != 0);
	others(5, l, o);
	li0 = cf_status(kv, l).commit;
	CHECK(cf_status(kv, l).last_index == li0);

	/* leader + 2 | 2: a write commits on the majority side only */
	majority[0] = l;
	majority[1] = o[0];
	majority[2] = o[1];
	minority[0] = o[2];
	minority[1] = o[3];
	CHECK(raftkv_partition(kv, majority, 3) == RAFTKV_OK);
	CHECK(put_s(kv, "p", "v1") == RAFTKV_OK);
	CHECK(cf_wait_converged(kv, majority, 3, cf_wait_ms()));
	CHECK(cf_status(kv, l).commit > li0);
	for (size_t i = 0; i < 2; i++) {
		st = cf_status(kv, minority[i]);
		CU_ASSERT(st.applied <= li0);
		CU_ASSERT(st.commit <= li0);
		CU_ASSERT(st.last_index <= li0);
		CU_ASSERT_NOT_EQUAL(st.role, RAFTKV_ROLE_LEADER);
	}

	/* the old leader + 1 | 3: the old leader commits nothing and serves no read */
	st = cf_status(kv, l);
	l_commit = st.commit;
	l_reads = st.reads;
	l_term = st.term;
	old_side[0] = l;
	old_side[1] = minority[0];
	new_side[0] = o[0];
	new_side[1] = o[1];
	new_side[2] = minority[1];
	CHECK(raftkv_partition(kv, old_side, 2) == RAFTKV_OK);
	probe = cf_probe_get(kv, l, "p", 1);
	CHECK(probe != NULL);
	CHECK(cf_wait_leader_among(kv, new_side, 3, cf_wait_ms(), &nl));
	CU_ASSERT(cf_status(kv, nl).term > l_term);
	CHECK(put_s(kv, "p", "v2") == RAFTKV_OK);
	for (int i = 0; i < 5; i++)
		CU_ASSERT(read_latest(kv, "p", "v2", &oks));
	CU_ASSERT(oks >= 1);
	CU_ASSERT(cf_wait_role_not(kv, l, RAFTKV_ROLE_LEADER, cf_wait_ms()));
	CU_ASSERT(probe_refused(probe, cf_wait_ms(), true));
	CHECK(put_s(kv, "p", "v3") == RAFTKV_OK);
	CU_ASSERT(read_latest(kv, "p", "v3", &oks));
	st = cf_status(kv, l);
	CU_ASSERT_EQUAL(st.commit, l_commit);
	CU_ASSERT(st.applied <= l_commit);
	CU_ASSERT_EQUAL(st.reads, l_reads);
	/* its partner may learn what the old leader had committed (v1), nothing newer */
	st = cf_status(kv, minority[0]);
	CU_ASSERT(st.applied <= l_commit);
	CU_ASSERT(st.commit <= l_commit);

	/* healed, every node converges on the latest value */
	CHECK(raftkv_heal(kv) == RAFTKV_OK);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	CU_ASSERT(cf_status(kv, l).applied > l_commit);
	CU_ASSERT(cf_status(kv, minority[0]).applied > l_commit);
	CHECK(value_is_s(kv, "p", "v3"));
out:
	tcl_fini(&t);
	cf_probe_release(probe);
}

/* ------------------------------------------------------------------------------------------ */
/* 7. Leader crash during writes; 8. rolling restart                                          */
/* ------------------------------------------------------------------------------------------ */

static void test_leader_crash(void)
{
	tcl t;
	raftkv *kv;
	writer w;
	uint64_t ids[2];
	size_t acked;

	memset(&w, 0, sizeof w);
	CHECK(tcl_open(&t, "cl-crash", 3));
	kv = t.kv;
	CHECK(writer_start(&w, kv, 1, "log", true, 100000));
	CHECK(writer_wait_acked(&w, 10));
	for (int round = 0; round < 2; round++) {
		uint64_t l = raftkv_leader(kv), nl = 0;

		CHECK(l != 0);
		CHECK(raftkv_node_stop(kv, l) == RAFTKV_OK);
		CHECK(cf_wait_leader_among(kv, ids, others(3, l, ids), cf_wait_ms(), &nl));
		CU_ASSERT_NOT_EQUAL(nl, l);
		acked = writer_acked(&w);
		CHECK(writer_wait_acked(&w, acked + 10));
		CHECK(raftkv_node_start(kv, l) == RAFTKV_OK);
		acked = writer_acked(&w);
		CHECK(writer_wait_acked(&w, acked + 10));
	}
	writer_join(&w);
	CU_ASSERT_EQUAL(w.bad_status, 0);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	CU_ASSERT(writer_check_tokens(&w));
	CU_ASSERT(writer_check_puts(&w));
out:
	writer_free(&w);
	tcl_fini(&t);
}

static void test_rolling_restart(void)
{
	tcl t;
	raftkv *kv;
	writer w;
	uint64_t ids[2];
	size_t acked;

	memset(&w, 0, sizeof w);
	CHECK(tcl_open(&t, "cl-rolling", 3));
	kv = t.kv;
	CHECK(writer_start(&w, kv, 2, "roll", true, 100000));
	CHECK(writer_wait_acked(&w, 5));
	for (uint64_t id = 1; id <= 3; id++) {
		uint64_t target;

		CHECK(raftkv_node_stop(kv, id) == RAFTKV_OK);
		CHECK(cf_wait_leader_among(kv, ids, others(3, id, ids), cf_wait_ms(), NULL));
		acked = writer_acked(&w);
		CHECK(writer_wait_acked(&w, acked + 10));
		CHECK(raftkv_node_start(kv, id) == RAFTKV_OK);
		/* the restarted node catches up with what the leader had committed */
		target = cf_status(kv, leader_of(kv)).commit;
		CHECK(wait_applied(kv, id, target));
		acked = writer_acked(&w);
		CHECK(writer_wait_acked(&w, acked + 10));
	}
	writer_join(&w);
	CU_ASSERT_EQUAL(w.bad_status, 0);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	CU_ASSERT(writer_check_tokens(&w));
	CU_ASSERT(writer_check_puts(&w));
out:
	writer_free(&w);
	tcl_fini(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 9. An isolated old leader never serves a stale read                                        */
/* ------------------------------------------------------------------------------------------ */

typedef struct reader {
	raftkv *kv;            /* borrowed */
	atomic_bool new_acked; /* set once put "new" returned OK */
	pthread_t thread;
	bool started;
	/* mu guards the counters; cv is broadcast after each read. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	size_t after;    /* reads invoked after new_acked was set */
	size_t after_ok; /* ... that returned "new" */
	size_t stale;    /* ... that returned anything else (or NOT_FOUND) */
	size_t garbage;  /* reads, at any time, of a value that was never written */
	int bad_status;  /* a status other than OK / TIMEOUT, else 0 */
} reader;

static void *reader_main(void *arg)
{
	reader *r = arg;
	bool stop = false;

	while (!stop) {
		bool after = atomic_load(&r->new_acked);
		void *v = NULL;
		size_t n = 0;
		int rv = raftkv_get(r->kv, "x", 1, &v, &n);
		bool is_new = rv == RAFTKV_OK && n == 3 && memcmp(v, "new", 3) == 0;
		bool is_old = rv == RAFTKV_OK && n == 3 && memcmp(v, "old", 3) == 0;

		raftkv_free(v);
		pthread_mutex_lock(&r->mu);
		if (rv != RAFTKV_OK && rv != RAFTKV_TIMEOUT && r->bad_status == 0)
			r->bad_status = rv;
		r->garbage += rv == RAFTKV_OK && !is_new && !is_old;
		if (after) {
			r->after++;
			r->after_ok += is_new;
			r->stale += rv != RAFTKV_TIMEOUT && !is_new;
		}
		stop = r->stop;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
	}
	return NULL;
}

static void reader_stop(reader *r)
{
	if (!r->started)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	r->started = false;
}

static bool reader_wait_after(reader *r, size_t n)
{
	struct timespec dl;
	bool ok;

	deadline_in(&dl, cf_wait_ms());
	pthread_mutex_lock(&r->mu);
	while (r->after < n && pthread_cond_timedwait(&r->cv, &r->mu, &dl) != ETIMEDOUT)
		;
	ok = r->after >= n;
	pthread_mutex_unlock(&r->mu);
	return ok;
}

static void test_isolated_leader_reads(void)
{
	tcl t;
	raftkv *kv;
	reader r;
	uint64_t l, ids[2], nl = 0, a_l;
	raftkv_status st;
	cf_probe *probe = NULL;

	memset(&r, 0, sizeof r);
	pthread_mutex_init(&r.mu, NULL);
	cond_init_mono(&r.cv);
	CHECK(tcl_open(&t, "cl-isoread", 3));
	kv = t.kv;
	r.kv = kv;
	CHECK(put_s(kv, "x", "old") == RAFTKV_OK);
	CHECK(value_is_s(kv, "x", "old")); /* the client now knows the leader */
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	l = raftkv_leader(kv);
	CHECK(l != 0);
	a_l = cf_status(kv, l).applied;

	/* readers run against the old leader's view from the moment it is cut off */
	CHECK(raftkv_isolate(kv, l) == RAFTKV_OK);
	probe = cf_probe_get(kv, l, "x", 1);
	CHECK(probe != NULL);
	r.started = pthread_create(&r.thread, NULL, reader_main, &r) == 0;
	CHECK(r.started);
	CHECK(cf_wait_leader_among(kv, ids, others(3, l, ids), cf_wait_ms(), &nl));
	CHECK(put_s(kv, "x", "new") == RAFTKV_OK);
	atomic_store(&r.new_acked, true);
	CU_ASSERT(reader_wait_after(&r, 20));
	reader_stop(&r);
	CU_ASSERT_EQUAL(r.stale, 0);
	CU_ASSERT_EQUAL(r.garbage, 0);
	CU_ASSERT(r.after_ok >= 1);
	CU_ASSERT_EQUAL(r.bad_status, 0);
	for (int i = 0; i < 5; i++)
		CU_ASSERT(value_is_s(kv, "x", "new"));

	/* the old leader steps down (check quorum) and never applies the write while cut off */
	CU_ASSERT(cf_wait_role_not(kv, l, RAFTKV_ROLE_LEADER, cf_wait_ms()));
	CU_ASSERT(probe_refused(probe, cf_wait_ms(), true));
	st = cf_status(kv, l);
	CU_ASSERT(st.applied <= a_l);
	CU_ASSERT(st.commit <= a_l);

	CHECK(raftkv_heal(kv) == RAFTKV_OK);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	CU_ASSERT(cf_status(kv, l).applied > a_l);
	CU_ASSERT(value_is_s(kv, "x", "new"));
out:
	reader_stop(&r);
	pthread_cond_destroy(&r.cv);
	pthread_mutex_destroy(&r.mu);
	tcl_fini(&t);
	cf_probe_release(probe);
}

/*
 * Ticks the given nodes (only) until one of them leads. Every node first gets one election
 * timeout (their leases on the old leader expire), then one node, in turn, gets another: it
 * times out alone, so its pre-vote and vote are not split by a rival that timed out in the same
 * batch of ticks.
 */
static bool elect_among(raftkv *kv, const uint64_t *ids, size_t n, unsigned election_ticks)
{
	for (size_t round = 0; round < 20; round++) {
		cf_tick_nodes(kv, ids, n, election_ticks);
		cf_tick_nodes(kv, &ids[round % n], 1, election_ticks);
		if (cf_wait_leader_among(kv, ids, n, 2000, NULL))
			return true;
	}
	return false;
}

/*
 * Manual ticks, with the old leader's clock stopped: cut off, it still believes it leads, and
 * it must answer no read from its own state, not before a new leader exists and not after that
 * leader committed a newer value. Then it alone gets 2 * election_ticks ticks and must step
 * down on them (check quorum: one full election timeout without a quorum, after at most one
 * more already in progress), answering the reads it held without data.
 */
static void test_isolated_leader_steps_down(void)
{
	tcl t;
	raftkv *kv;
	uint64_t l, ids[2], a_l;
	raftkv_status st;
	cf_probe *p1 = NULL, *p2 = NULL;

	CHECK(tcl_init(&t, "cl-isostep", 3));
	t.o.tick_ms = 0;
	CHECK(tcl_start(&t));
	kv = t.kv;
	CHECK(put_s(kv, "x", "old") == RAFTKV_OK);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	cf_ticker_pause(t.ticker, true);
	l = raftkv_leader(kv);
	CHECK(l != 0);
	a_l = cf_status(kv, l).applied;
	CHECK(raftkv_isolate(kv, l) == RAFTKV_OK);

	/* a read at the cut-off leader waits for a quorum that never answers */
	p1 = cf_probe_get(kv, l, "x", 1);
	CHECK(p1 != NULL);
	CU_ASSERT(probe_refused(p1, 300, false));

	/* the others elect a leader and commit "new"; the old one hears nothing of it */
	CHECK(elect_among(kv, ids, others(3, l, ids), t.o.election_ticks));
	CHECK(put_s(kv, "x", "new") == RAFTKV_OK);
	CHECK(value_is_s(kv, "x", "new"));
	st = cf_status(kv, l);
	CHECK(st.role == RAFTKV_ROLE_LEADER); /* no tick, no step-down: the stale-leader window */
	CU_ASSERT(st.applied <= a_l);
	p2 = cf_probe_get(kv, l, "x", 1);
	CHECK(p2 != NULL);
	CU_ASSERT(probe_refused(p2, 300, false));
	CU_ASSERT(probe_refused(p1, 0, false));

	/* its own ticks alone make it step down */
	cf_tick_nodes(kv, &l, 1, 2 * t.o.election_ticks);
	CHECK(cf_wait_role_not(kv, l, RAFTKV_ROLE_LEADER, cf_wait_ms()));
	CU_ASSERT(probe_refused(p1, cf_wait_ms(), true));
	CU_ASSERT(probe_refused(p2, cf_wait_ms(), true));

	cf_ticker_pause(t.ticker, false);
	st = cf_status(kv, l);
	CU_ASSERT(st.applied <= a_l);
	CU_ASSERT(st.commit <= a_l);
	CHECK(raftkv_heal(kv) == RAFTKV_OK);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	CU_ASSERT(value_is_s(kv, "x", "new"));
out:
	if (t.ticker != NULL)
		cf_ticker_pause(t.ticker, false);
	tcl_fini(&t);
	cf_probe_release(p1);
	cf_probe_release(p2);
}

/* ------------------------------------------------------------------------------------------ */
/* 10. Duplicated and dropped deliveries apply writes once                                    */
/* ------------------------------------------------------------------------------------------ */

static void test_duplicates(void)
{
	tcl t;
	raftkv *kv;
	writer w, d[3];
	size_t acked = 0;

	memset(&w, 0, sizeof w);
	memset(d, 0, sizeof d);
	CHECK(tcl_open(&t, "cl-dup", 3));
	kv = t.kv;

	/* every message and every client request delivered twice */
	CHECK(raftkv_set_duplicate_rate(kv, 1.0) == RAFTKV_OK);
	CHECK(writer_start(&w, kv, 3, "dup", true, 60));
	writer_finish(&w);
	CU_ASSERT_EQUAL(w.bad_status, 0);
	CU_ASSERT_EQUAL(w.acked, w.cap);
	CU_ASSERT(writer_check_tokens(&w));
	CU_ASSERT(writer_check_puts(&w));
	/* a duplicated delete answers from its first application */
	CHECK(put_s(kv, "d", "1") == RAFTKV_OK);
	CU_ASSERT_EQUAL(del_s(kv, "d"), RAFTKV_OK);
	CU_ASSERT_EQUAL(del_s(kv, "d"), RAFTKV_NOT_FOUND);
	for (int i = 0; i < 3; i++)
		CHECK(append_s(kv, "d2", "a") == RAFTKV_OK);
	CU_ASSERT(value_is_s(kv, "d2", "aaa"));
	CHECK(raftkv_heal(kv) == RAFTKV_OK);

	/* 30% of every message lost, client requests included; three concurrent appenders */
	CHECK(raftkv_set_drop_rate(kv, 0.3) == RAFTKV_OK);
	for (unsigned i = 0; i < 3; i++)
		CHECK(writer_start(&d[i], kv, 10 + i, "drop", false, 20));
	for (unsigned i = 0; i < 3; i++) {
		writer_finish(&d[i]);
		CU_ASSERT_EQUAL(d[i].bad_status, 0);
		acked += d[i].acked;
	}
	CHECK(raftkv_heal(kv) == RAFTKV_OK);
	CU_ASSERT(acked >= 1);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	for (unsigned i = 0; i < 3; i++)
		CU_ASSERT(writer_check_tokens(&d[i]));
out:
	writer_free(&w);
	for (unsigned i = 0; i < 3; i++)
		writer_free(&d[i]);
	tcl_fini(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* Asynchronous completions                                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct actx {
	pthread_mutex_t mu; /* guards done */
	pthread_cond_t cv;  /* broadcast on each completion */
	size_t done;
} actx;

/* One asynchronous operation: how often and how it completed. */
typedef struct aslot {
	actx *a;
	atomic_int calls;
	atomic_int status;
	char val[32]; /* a get's value, when it fits */
	size_t len;
} aslot;

static void actx_init(actx *a)
{
	memset(a, 0, sizeof *a);
	pthread_mutex_init(&a->mu, NULL);
	cond_init_mono(&a->cv);
}

static void actx_destroy(actx *a)
{
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
}

static void aslot_done(void *ctx, int status, const void *value, size_t value_len)
{
	aslot *s = ctx;

	s->len = value_len;
	if (value != NULL && value_len < sizeof s->val)
		memcpy(s->val, value, value_len);
	atomic_store(&s->status, status);
	atomic_fetch_add(&s->calls, 1);
	pthread_mutex_lock(&s->a->mu);
	s->a->done++;
	pthread_cond_broadcast(&s->a->cv);
	pthread_mutex_unlock(&s->a->mu);
}

static bool actx_wait(actx *a, size_t n)
{
	struct timespec dl;
	bool ok;

	deadline_in(&dl, cf_wait_ms());
	pthread_mutex_lock(&a->mu);
	while (a->done < n && pthread_cond_timedwait(&a->cv, &a->mu, &dl) != ETIMEDOUT)
		;
	ok = a->done >= n;
	pthread_mutex_unlock(&a->mu);
	if (!ok)
		fprintf(stderr, "\nasync: %zu of %zu completions\n", a->done, n);
	return ok;
}

/* ------------------------------------------------------------------------------------------ */
/* 11. Close with calls in flight                                                             */
/* ------------------------------------------------------------------------------------------ */

enum { BLK_PUT, BLK_GET, BLK_APPEND, BLK_DELETE, BLK_SCAN, BLK_N };

typedef struct blk_shared {
	pthread_mutex_t mu; /* guards entered, returned */
	pthread_cond_t cv;
	size_t entered, returned;
} blk_shared;

typedef struct blk {
	raftkv *kv;
	int op;
	int rv;
	blk_shared *sh;
	pthread_t thread;
	bool started;
} blk;

static int blk_scan_fn(void *ctx, const void *key, size_t key_len, const void *value,
                       size_t value_len)
{
	(void)ctx;
	(void)key;
	(void)key_len;
	(void)value;
	(void)value_len;
	return 0;
}

static void *blk_main(void *arg)
{
	blk *b = arg;
	void *v = NULL;
	size_t n = 0;
	int rv = RAFTKV_INVALID;

	pthread_mutex_lock(&b->sh->mu);
	b->sh->entered++;
	pthread_cond_broadcast(&b->sh->cv);
	pthread_mutex_unlock(&b->sh->mu);
	switch (b->op) {
	case BLK_PUT:
		rv = put_s(b->kv, "blk-put", "x");
		break;
	case BLK_GET:
		rv = raftkv_get(b->kv, "k", 1, &v, &n);
		raftkv_free(v);
		break;
	case BLK_APPEND:
		rv = append_s(b->kv, "blk-app", "x");
		break;
	case BLK_DELETE:
		rv = del_s(b->kv, "k");
		break;
	case BLK_SCAN:
		rv = raftkv_scan(b->kv, NULL, 0, NULL, 0, 0, blk_scan_fn, NULL, NULL, NULL);
		break;
	}
	pthread_mutex_lock(&b->sh->mu);
	b->rv = rv;
	b->sh->returned++;
	pthread_cond_broadcast(&b->sh->cv);
	pthread_mutex_unlock(&b->sh->mu);
	return NULL;
}

/* Waits until *field (guarded by sh->mu) reaches n. */
static bool blk_wait(blk_shared *sh, size_t *field, size_t n)
{
	struct timespec dl;
	bool ok;

	deadline_in(&dl, cf_wait_ms());
	pthread_mutex_lock(&sh->mu);
	while (*field < n && pthread_cond_timedwait(&sh->cv, &sh->mu, &dl) != ETIMEDOUT)
		;
	ok = *field >= n;
	pthread_mutex_unlock(&sh->mu);
	return ok;
}

static void test_close_in_flight(void)
{
	enum { N_ASYNC = 10 };
	tcl t;
	raftkv *kv;
	blk_shared sh;
	blk b[BLK_N];
	actx a;
	aslot s[N_ASYNC];
	uint64_t half[2] = {1, 2}, t0;
	char key[32];

	memset(b, 0, sizeof b);
	memset(s, 0, sizeof s);
	memset(&sh, 0, sizeof sh);
	pthread_mutex_init(&sh.mu, NULL);
	cond_init_mono(&sh.cv);
	actx_init(&a);
	CHECK(tcl_init(&t, "cl-close", 4));
	/* far beyond the wait below: a call may only end because of the close */
	t.o.request_timeout_ms = 3 * cf_wait_ms();
	CHECK(tcl_start(&t));
	kv = t.kv;
	CHECK(put_s(kv, "k", "v") == RAFTKV_OK);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));

	/* 2 | 2: no majority anywhere, nothing can commit or be read */
	CHECK(raftkv_partition(kv, half, 2) == RAFTKV_OK);
	for (int i = 0; i < BLK_N; i++) {
		b[i].kv = kv;
		b[i].op = i;
		b[i].sh = &sh;
		b[i].rv = 1;
		b[i].started = pthread_create(&b[i].thread, NULL, blk_main, &b[i]) == 0;
		CHECK(b[i].started);
	}
	for (int i = 0; i < N_ASYNC; i++) {
		s[i].a = &a;
		snprintf(key, sizeof key, "async%d", i);
		CHECK(raftkv_put_async(kv, key, strlen(key), "x", 1, aslot_done, &s[i]) ==
		      RAFTKV_OK);
	}
	CHECK(blk_wait(&sh, &sh.entered, BLK_N));
	/* the calls are in flight while the cut-off leader notices it lost its quorum */
	CHECK(cluster_wait(kv, no_leader_pred, NULL, cf_wait_ms()) == RAFTKV_OK);
	pthread_mutex_lock(&sh.mu);
	CU_ASSERT_EQUAL(sh.returned, 0);
	pthread_mutex_unlock(&sh.mu);

	t0 = cluster_now_ns();
	raftkv_close(kv);
	t.kv = NULL;
	CU_ASSERT(elapsed_ms(t0) < cf_wait_ms());
	for (int i = 0; i < N_ASYNC; i++) {
		int st = atomic_load(&s[i].status);

		CU_ASSERT_EQUAL(atomic_load(&s[i].calls), 1);
		CU_ASSERT(st == RAFTKV_TIMEOUT || st == RAFTKV_CLOSED);
	}
	CU_ASSERT(blk_wait(&sh, &sh.returned, BLK_N));
	for (int i = 0; i < BLK_N; i++) {
		pthread_join(b[i].thread, NULL);
		b[i].started = false;
		if (b[i].rv != RAFTKV_TIMEOUT && b[i].rv != RAFTKV_CLOSED)
			fprintf(stderr, "\nblocked op %d returned %d\n", i, b[i].rv);
		CU_ASSERT(b[i].rv == RAFTKV_TIMEOUT || b[i].rv == RAFTKV_CLOSED);
	}
out:
	if (t.kv != NULL) {
		raftkv_heal(t.kv);
		tcl_close(&t);
	}
	for (int i = 0; i < BLK_N; i++)
		if (b[i].started)
			pthread_join(b[i].thread, NULL);
	tcl_fini(&t);
	actx_destroy(&a);
	pthread_cond_destroy(&sh.cv);
	pthread_mutex_destroy(&sh.mu);
}

/* ------------------------------------------------------------------------------------------ */
/* 12. The asynchronous API                                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct async_scan {
	size_t n;
	bool bad;
} async_scan;

static int async_scan_fn(void *ctx, const void *key, size_t key_len, const void *value,
                         size_t value_len)
{
	async_scan *as = ctx;
	char want_k[16], want_v[16];

	snprintf(want_k, sizeof want_k, "a/%04zu", as->n);
	snprintf(want_v, sizeof want_v, "v%zu", as->n);
	if (key_len != strlen(want_k) || memcmp(key, want_k, key_len) != 0 ||
	    value_len != strlen(want_v) || memcmp(value, want_v, value_len) != 0)
		as->bad = true;
	as->n++;
	return 0;
}

/* rv is what starting one asynchronous op returned: true when it was accepted and completions
 * have reached n. */
static bool async_one(actx *a, size_t n, int rv)
{
	return rv == RAFTKV_OK && actx_wait(a, n);
}

static void test_async(void)
{
	enum { N = 2000, SMALL = 8 };
	tcl t;
	raftkv *kv;
	actx a;
	aslot *s = calloc(N + 16, sizeof *s);
	char k[16], v[16];
	async_scan as = {0, false};
	void *from = NULL, *next = NULL;
	size_t from_len = 0, next_len = 0, base;
	uint64_t rs = cf_seed(), l, ids[2];

	actx_init(&a);
	memset(&t, 0, sizeof t);
	CHECK(s != NULL);
	for (size_t i = 0; i < N + 16; i++)
		s[i].a = &a;
	CHECK(tcl_open(&t, "cl-async", 3));
	kv = t.kv;

	for (size_t i = 0; i < N; i++) {
		snprintf(k, sizeof k, "a/%04zu", i);
		snprintf(v, sizeof v, "v%zu", i);
		CHECK(raftkv_put_async(kv, k, strlen(k), v, strlen(v), aslot_done, &s[i]) ==
		      RAFTKV_OK);
	}
	CHECK(actx_wait(&a, N));
	for (size_t i = 0; i < N; i++) {
		CU_ASSERT_EQUAL(atomic_load(&s[i].calls), 1);
		CU_ASSERT_EQUAL(atomic_load(&s[i].status), RAFTKV_OK);
	}
	for (;;) {
		int rv = raftkv_scan(kv, from != NULL ? from : "a/", from != NULL ? from_len : 2,
		                     "a0", 2, 0, async_scan_fn, &as, &next, &next_len);

		raftkv_free(from);
		from = next;
		from_len = next_len;
		next = NULL;
		CHECK(rv == RAFTKV_OK);
		if (from == NULL)
			break;
	}
	CU_ASSERT_EQUAL(as.n, N);
	CU_ASSERT_FALSE(as.bad);
	for (int i = 0; i < 20; i++) {
		size_t j = (size_t)(cf_rand(&rs) % N);

		snprintf(k, sizeof k, "a/%04zu", j);
		snprintf(v, sizeof v, "v%zu", j);
		CU_ASSERT(value_is_s(kv, k, v));
	}

	/* append, get, delete, get of a missing key, each asynchronous */
	CHECK(async_one(&a, N + 1, raftkv_append_async(kv, "aa", 2, "xy", 2, aslot_done, &s[N])));
	CU_ASSERT_EQUAL(atomic_load(&s[N].status), RAFTKV_OK);
	CHECK(async_one(&a, N + 2, raftkv_get_async(kv, "aa", 2, aslot_done, &s[N + 1])));
	CU_ASSERT_EQUAL(atomic_load(&s[N + 1].status), RAFTKV_OK);
	CU_ASSERT(s[N + 1].len == 2 && memcmp(s[N + 1].val, "xy", 2) == 0);
	CHECK(async_one(&a, N + 3, raftkv_delete_async(kv, "aa", 2, aslot_done, &s[N + 2])));
	CU_ASSERT_EQUAL(atomic_load(&s[N + 2].status), RAFTKV_OK);
	CHECK(async_one(&a, N + 4, raftkv_get_async(kv, "aa", 2, aslot_done, &s[N + 3])));
	CU_ASSERT_EQUAL(atomic_load(&s[N + 3].status), RAFTKV_NOT_FOUND);
	CHECK(async_one(&a, N + 5, raftkv_delete_async(kv, "aa", 2, aslot_done, &s[N + 4])));
	CU_ASSERT_EQUAL(atomic_load(&s[N + 4].status), RAFTKV_NOT_FOUND);
	tcl_close(&t);

	/* max_inflight 8: with no quorum the 8 stay in flight and the 9th call is refused */
	t.o.max_inflight = SMALL;
	CHECK(tcl_start(&t));
	kv = t.kv;
	CU_ASSERT(value_is_s(kv, "a/0042", "v42"));
	l = leader_of(kv);
	CHECK(l != 0);
	others(3, l, ids);
	CHECK(raftkv_node_stop(kv, l) == RAFTKV_OK);
	CHECK(raftkv_node_stop(kv, ids[0]) == RAFTKV_OK);
	base = N + 5;
	for (size_t i = 0; i < SMALL; i++) {
		snprintf(k, sizeof k, "b/%zu", i);
		CHECK(raftkv_put_async(kv, k, strlen(k), "x", 1, aslot_done, &s[base + i]) ==
		      RAFTKV_OK);
	}
	CU_ASSERT_EQUAL(raftkv_put_async(kv, "b/x", 3, "x", 1, aslot_done, &s[base + SMALL]),
	                RAFTKV_BUSY);
	CU_ASSERT_EQUAL(raftkv_get_async(kv, "b/x", 3, aslot_done, &s[base + SMALL]), RAFTKV_BUSY);
	CU_ASSERT_EQUAL(raftkv_append_async(kv, "b/x", 3, "x", 1, aslot_done, &s[base + SMALL]),
	                RAFTKV_BUSY);
	CU_ASSERT_EQUAL(raftkv_delete_async(kv, "b/x", 3, aslot_done, &s[base + SMALL]),
	                RAFTKV_BUSY);
	CU_ASSERT_EQUAL(put_s(kv, "b/x", "x"), RAFTKV_BUSY); /* blocking calls count too */
	CHECK(raftkv_node_start(kv, l) == RAFTKV_OK);
	CHECK(raftkv_node_start(kv, ids[0]) == RAFTKV_OK);
	CHECK(actx_wait(&a, base + SMALL));
	for (size_t i = 0; i < SMALL; i++) {
		int st = atomic_load(&s[base + i].status);

		CU_ASSERT_EQUAL(atomic_load(&s[base + i].calls), 1);
		CU_ASSERT(st == RAFTKV_OK || st == RAFTKV_TIMEOUT);
	}
	/* room again */
	CHECK(async_one(&a, base + SMALL + 1,
	                raftkv_put_async(kv, "b/y", 3, "y", 1, aslot_done, &s[base + SMALL + 1])));
	CU_ASSERT_EQUAL(atomic_load(&s[base + SMALL + 1].status), RAFTKV_OK);
	CU_ASSERT(value_is_s(kv, "b/y", "y"));
	tcl_close(&t);
	CU_ASSERT_EQUAL(atomic_load(&s[base + SMALL].calls), 0);
	CU_ASSERT_EQUAL(a.done, base + SMALL + 1);
out:
	raftkv_free(from);
	tcl_fini(&t);
	actx_destroy(&a);
	free(s);
}

/* ------------------------------------------------------------------------------------------ */
/* 13. Stopped nodes                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* put, get, append, delete and scan all succeed. */
static bool ops_work(raftkv *kv, const char *tag)
{
	char k[32];
	scan_acc acc;

	memset(&acc, 0, sizeof acc);
	snprintf(k, sizeof k, "op-%s", tag);
	return put_s(kv, k, "1") == RAFTKV_OK && value_is_s(kv, k, "1") &&
	       append_s(kv, k, "2") == RAFTKV_OK && value_is_s(kv, k, "12") &&
	       raftkv_scan(kv, "op-", 3, "op.", 3, 0, scan_acc_fn, &acc, NULL, NULL) == RAFTKV_OK &&
	       acc.n >= 1 && del_s(kv, k) == RAFTKV_OK && get_status(kv, k) == RAFTKV_NOT_FOUND;
}

static void test_stopped_nodes(void)
{
	tcl t;
	raftkv *kv;
	uint64_t l, ids[2], t0;
	int rv;

	CHECK(tcl_open(&t, "cl-stopped", 3));
	kv = t.kv;
	CHECK(put_s(kv, "k", "v") == RAFTKV_OK);

	/* one follower down */
	l = leader_of(kv);
	CHECK(l != 0);
	others(3, l, ids);
	CHECK(raftkv_node_stop(kv, ids[0]) == RAFTKV_OK);
	CU_ASSERT(ops_work(kv, "f"));
	CHECK(raftkv_node_start(kv, ids[0]) == RAFTKV_OK);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));

	/* the leader down */
	l = leader_of(kv);
	CHECK(l != 0);
	CHECK(raftkv_node_stop(kv, l) == RAFTKV_OK);
	CU_ASSERT(ops_work(kv, "l"));
	CHECK(raftkv_node_start(kv, l) == RAFTKV_OK);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));

	/* two of three down: calls time out, they do not hang */
	l = leader_of(kv);
	CHECK(l != 0);
	others(3, l, ids);
	CHECK(raftkv_node_stop(kv, l) == RAFTKV_OK);
	CHECK(raftkv_node_stop(kv, ids[0]) == RAFTKV_OK);
	CU_ASSERT_EQUAL(cf_status(kv, l).role, RAFTKV_ROLE_STOPPED);
	CU_ASSERT_EQUAL(cf_status(kv, ids[0]).role, RAFTKV_ROLE_STOPPED);
	t0 = cluster_now_ns();
	rv = put_s(kv, "lost", "x");
	CU_ASSERT_EQUAL(rv, RAFTKV_TIMEOUT);
	CU_ASSERT(elapsed_ms(t0) < t.o.request_timeout_ms + cf_wait_ms());
	t0 = cluster_now_ns();
	CU_ASSERT_EQUAL(get_status(kv, "k"), RAFTKV_TIMEOUT);
	CU_ASSERT(elapsed_ms(t0) < t.o.request_timeout_ms + cf_wait_ms());
	CHECK(raftkv_node_start(kv, l) == RAFTKV_OK);
	CHECK(raftkv_node_start(kv, ids[0]) == RAFTKV_OK);
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
	rv = get_status(kv, "lost");
	CU_ASSERT(rv == RAFTKV_OK || rv == RAFTKV_NOT_FOUND); /* its outcome was unknown */
	CU_ASSERT(value_is_s(kv, "k", "v"));
	CU_ASSERT(ops_work(kv, "all"));
out:
	tcl_fini(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 14. Manual ticks                                                                           */
/* ------------------------------------------------------------------------------------------ */

static void test_manual_ticks(void)
{
	tcl t;
	raftkv *kv;
	char err[256] = "";
	uint64_t id = 0;

	CHECK(tcl_init(&t, "cl-manual", 3));
	t.o.tick_ms = 0;
	CHECK(raftkv_open(t.dir, &t.o, &t.kv, err, sizeof err) == RAFTKV_OK);
	kv = t.kv;

	/* no ticks, no election */
	CU_ASSERT_EQUAL(cluster_wait(kv, any_leader_pred, NULL, 300), RAFTKV_TIMEOUT);
	CU_ASSERT_EQUAL(raftkv_wait_leader(kv, 100, &id), RAFTKV_TIMEOUT);
	CU_ASSERT_EQUAL(raftkv_leader(kv), 0);
	for (uint64_t n = 1; n <= 3; n++)
		CU_ASSERT_EQUAL(cf_status(kv, n).role, RAFTKV_ROLE_FOLLOWER);

	/* ticks elect one */
	t.ticker = cf_ticker_start(kv, cf_tick_ms());
	CHECK(t.ticker != NULL);
	CHECK(raftkv_wait_leader(kv, cf_wait_ms(), &id) == RAFTKV_OK);
	CU_ASSERT(id >= 1 && id <= 3);
	CHECK(put_s(kv, "m", "1") == RAFTKV_OK);
	CHECK(value_is_s(kv, "m", "1"));
	CHECK(cf_wait_converged(kv, NULL, 0, cf_wait_ms()));
out:
	tcl_fini(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* A watchdog for tests whose failure mode is a deadlock                                      */
/* ------------------------------------------------------------------------------------------ */

/* Aborts the process, loudly, unless watchdog_stop comes within secs: a deadlock then fails the
 * run instead of hanging it. */
typedef struct watchdog {
	const char *what; /* borrowed, static */
	unsigned secs;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu; /* guards done */
	pthread_cond_t cv;
	bool done;
} watchdog;

static void *watchdog_main(void *arg)
{
	watchdog *w = arg;
	struct timespec dl;

	deadline_in(&dl, w->secs * 1000u);
	pthread_mutex_lock(&w->mu);
	while (!w->done && pthread_cond_timedwait(&w->cv, &w->mu, &dl) != ETIMEDOUT)
		;
	if (!w->done) {
		fprintf(stderr, "\n%s: still running after %u s: deadlock; aborting\n", w->what,
		        w->secs);
		cf_report_seed(w->what);
		abort();
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static bool watchdog_start(watchdog *w, const char *what, unsigned secs)
{
	memset(w, 0, sizeof *w);
	w->what = what;
	w->secs = secs;
	pthread_mutex_init(&w->mu, NULL);
	cond_init_mono(&w->cv);
	w->started = pthread_create(&w->thread, NULL, watchdog_main, w) == 0;
	return w->started;
}

/* Disarms and joins the watchdog (fine on one that did not start). */
static void watchdog_stop(watchdog *w)
{
	if (!w->started)
		return;
	pthread_mutex_lock(&w->mu);
	w->done = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	w->started = false;
}

static unsigned watchdog_secs(void)
{
	return cf_sanitized() ? 180 : 60;
}

/* ------------------------------------------------------------------------------------------ */
/* 15. REGISTER resends racing completions (review of issue 4)                                */
/* ------------------------------------------------------------------------------------------ */

/*
 * A write on a new session first sends a REGISTER (the call's `reg` in client.c). An attempt is
 * prepared under the client lock and pushed outside it; the ticker pushes a whole batch of
 * resends (attempt timeouts, backoffs) that way. If the call completes meanwhile on another
 * thread (a blocking caller's deadline, a reply on a peer thread, a node stop answering what it
 * held, raftkv_close), `reg` may drop to zero references before the push, so the push must
 * hold a reference on `reg` itself. Holding one on the main request only let `reg` revive from
 * zero and be freed twice, over-releasing the call: a use-after-free.
 *
 * The load makes that window wide and frequent: thousands of asynchronous calls in flight
 * (large resend batches), blocking callers whose deadlines fall among the resends, a request
 * timeout of 1.5 attempt timeouts, drops, duplicates, a node restart every few dozen
 * completions, callbacks launching more operations (while raftkv_close runs too), and a new
 * handle every round: its client starts without sessions, and REGISTER-phase calls that time
 * out lose theirs, so REGISTERs keep coming. With the fix reverted TSan reports the race in
 * about 4 runs of 5; plain and ASan builds run too fast to hit it often, and check the rest:
 * one callback per accepted operation, documented statuses only, appends applied at most once.
 */
enum {
	CH_ROUNDS = 4,       /* handles opened in turn on one directory */
	CH_ASYNC = 3,        /* asynchronous worker threads per round */
	CH_SYNC = 8,         /* blocking worker threads per round */
	CH_WINDOW = 4000,    /* the workers' asynchronous operations in flight, at most */
	CH_RESTARTS = 6,     /* node stop/start pairs per round */
	CH_STEP = 50,        /* completions awaited between two fault steps */
	CH_TOKENS = 100000,  /* appends per blocking worker, at most */
	CH_ELECTION = 20,    /* election ticks, also the attempt timeout (100 ms; 200 ms with a
	                        sanitizer's 10 ms ticks) */
	CH_HEARTBEAT = 2,    /* heartbeat ticks */
	CH_TIMEOUT_MS = 300, /* request timeout */
	CH_FINAL_BURST = 64, /* asynchronous operations launched just before each close */
};

typedef struct churn {
	raftkv *kv;        /* borrowed: this round's handle; set before the workers start */
	atomic_bool stop;  /* the workers launch nothing more */
	atomic_bool chain; /* callbacks launch operations of their own; cleared once the handle is
	                      closed, so they also launch while raftkv_close runs */
	/* mu guards the fields below; cv is broadcast on each completion and on stop. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t outstanding; /* accepted asynchronous operations whose callback has not returned */
	size_t accepted;    /* asynchronous operations accepted this round */
	size_t called;      /* their callbacks this round */
	size_t finished;    /* completions of any kind, all rounds (pacing) */
	int bad_status;     /* first status no operation may end with, else 0 */
	const char *bad_what;
} churn;

/* A worker thread of one round: asynchronous launcher, or blocking appender of tokens. */
typedef struct churn_worker {
	churn *ch; /* borrowed */
	unsigned id;
	bool sync;
	uint64_t rng;
	unsigned char *out; /* [CH_TOKENS] append outcomes (CF_OUT_*), blocking workers */
	size_t issued;      /* appends with a recorded outcome; read after the join */
	pthread_t thread;
	bool started;
} churn_worker;

static void churn_bad_locked(churn *ch, int status, const char *what)
{
	if (ch->bad_status == 0) {
		ch->bad_status = status;
		ch->bad_what = what;
	}
}

/* Records one completion: a callback (callback true) or a blocking call's return. */
static void churn_note(churn *ch, int status, bool callback, bool ok)
{
	pthread_mutex_lock(&ch->mu);
	ch->finished++;
	if (callback) {
		ch->called++;
		ch->outstanding--;
	}
	if (!ok)
		churn_bad_locked(ch, status, callback ? "callback" : "blocking call");
	pthread_cond_broadcast(&ch->cv);
	pthread_mutex_unlock(&ch->mu);
}

static void churn_done(void *ctx, int status, const void *value, size_t value_len);

/* Starts one asynchronous operation: op 0 put, 1 append, 2 delete, 3 get, on key c/<k>. The
 * slot is counted before the launch, since the callback may run before the launch returns. */
static int churn_launch(churn *ch, unsigned op, unsigned k)
{
	char key[24];
	size_t kl = (size_t)snprintf(key, sizeof key, "c/%u", k % 24);
	int rv;

	pthread_mutex_lock(&ch->mu);
	ch->outstanding++;
	ch->accepted++;
	pthread_mutex_unlock(&ch->mu);
	switch (op % 4) {
	case 0:
		rv = raftkv_put_async(ch->kv, key, kl, "v", 1, churn_done, ch);
		break;
	case 1:
		rv = raftkv_append_async(ch->kv, key, kl, "a", 1, churn_done, ch);
		break;
	case 2:
		rv = raftkv_delete_async(ch->kv, key, kl, churn_done, ch);
		break;
	default:
		rv = raftkv_get_async(ch->kv, key, kl, churn_done, ch);
		break;
	}
	if (rv != RAFTKV_OK) {
		pthread_mutex_lock(&ch->mu);
		ch->outstanding--;
		ch->accepted--;
		if (rv != RAFTKV_BUSY && rv != RAFTKV_CLOSED)
			churn_bad_locked(ch, rv, "launch");
		pthread_cond_broadcast(&ch->cv);
		pthread_mutex_unlock(&ch->mu);
	}
	return rv;
}

/* The callback, on a library thread. Every fourth one launches an append of its own (a
 * re-entry the API allows), until the round's handle is closed. */
static void churn_done(void *ctx, int status, const void *value, size_t value_len)
{
	churn *ch = ctx;
	bool ok = status == RAFTKV_OK || status == RAFTKV_NOT_FOUND || status == RAFTKV_TIMEOUT ||
	          status == RAFTKV_CLOSED || status == RAFTKV_SESSION_EXPIRED;
	size_t n;

	(void)value;
	(void)value_len;
	pthread_mutex_lock(&ch->mu);
	n = ch->called;
	pthread_mutex_unlock(&ch->mu);
	if (n % 4 == 0 && atomic_load(&ch->chain))
		churn_launch(ch, 1, (unsigned)n);
	churn_note(ch, status, true, ok);
}

static void *churn_async_main(void *arg)
{
	churn_worker *w = arg;
	churn *ch = w->ch;

	while (!atomic_load(&ch->stop)) {
		uint64_t r = cf_rand(&w->rng);
		size_t seen;
		int rv;

		pthread_mutex_lock(&ch->mu);
		while (ch->outstanding >= CH_WINDOW && !atomic_load(&ch->stop))
			pthread_cond_wait(&ch->cv, &ch->mu);
		seen = ch->finished;
		pthread_mutex_unlock(&ch->mu);
		if (atomic_load(&ch->stop))
			break;
		rv = churn_launch(ch, (unsigned)r, (unsigned)(r >> 32));
		if (rv == RAFTKV_CLOSED)
			break;
		if (rv == RAFTKV_BUSY) { /* a full mailbox: wait for any completion */
			pthread_mutex_lock(&ch->mu);
			while (ch->finished == seen && !atomic_load(&ch->stop))
				pthread_cond_wait(&ch->cv, &ch->mu);
			pthread_mutex_unlock(&ch->mu);
		}
	}
	return NULL;
}

static bool churn_blocking_ok(int rv)
{
	return rv == RAFTKV_OK || rv == RAFTKV_NOT_FOUND || rv == RAFTKV_TIMEOUT ||
	       rv == RAFTKV_BUSY || rv == RAFTKV_SESSION_EXPIRED;
}

/* Appends its tokens to tok/<id>, with a read and a put of a fresh key in between. */
static void *churn_sync_main(void *arg)
{
	churn_worker *w = arg;
	churn *ch = w->ch;
	char key[24], pkey[40], tok[48];
	size_t kl = (size_t)snprintf(key, sizeof key, "tok/%u", w->id);

	for (size_t i = 0; i < CH_TOKENS && !atomic_load(&ch->stop); i++) {
		size_t tl = cf_token(tok, sizeof tok, w->id, i);
		int rv = raftkv_append(ch->kv, key, kl, tok, tl);
		void *v = NULL;
		size_t n = 0;

		w->out[i] = (unsigned char)cf_outcome(rv);
		w->issued = i + 1;
		churn_note(ch, rv, false, churn_blocking_ok(rv));
		if (i % 2 == 1) {
			rv = raftkv_get(ch->kv, key, kl, &v, &n);
			raftkv_free(v);
			churn_note(ch, rv, false, churn_blocking_ok(rv));
		} else {
			snprintf(pkey, sizeof pkey, "p/%u/%zu", w->id, i);
			rv = raftkv_put(ch->kv, pkey, strlen(pkey), tok, tl);
			churn_note(ch, rv, false, churn_blocking_ok(rv));
		}
	}
	return NULL;
}

static bool churn_worker_start(churn_worker *w, churn *ch, unsigned id, bool sync, uint64_t seed)
{
	w->ch = ch;
	w->id = id;
	w->sync = sync;
	w->rng = seed;
	if (sync && (w->out = calloc(CH_TOKENS, 1)) == NULL)
		return false;
	w->started =
	    pthread_create(&w->thread, NULL, sync ? churn_sync_main : churn_async_main, w) == 0;
	return w->started;
}

/* Asks every worker to stop and joins those of ws[0..n). */
static void churn_stop(churn *ch, churn_worker *ws, size_t n)
{
	atomic_store(&ch->stop, true);
	pthread_mutex_lock(&ch->mu);
	pthread_cond_broadcast(&ch->cv);
	pthread_mutex_unlock(&ch->mu);
	for (size_t i = 0; i < n; i++) {
		if (ws[i].started)
			pthread_join(ws[i].thread, NULL);
		ws[i].started = false;
	}
}

/* Waits until n more completions happened. Calls end by their deadline at the latest, so a
 * live cluster always gets there. */
static bool churn_progress(churn *ch, size_t n)
{
	struct timespec dl;
	size_t target;
	bool ok;

	deadline_in(&dl, cf_wait_ms());
	pthread_mutex_lock(&ch->mu);
	target = ch->finished + n;
	while (ch->finished < target && pthread_cond_timedwait(&ch->cv, &ch->mu, &dl) != ETIMEDOUT)
		;
	ok = ch->finished >= target;
	pthread_mutex_unlock(&ch->mu);
	if (!ok)
		fprintf(stderr, "\nchurn: no progress (%zu completions)\n", ch->finished);
	return ok;
}

/* One round on a fresh handle: faults, workers, restarts of random nodes, then a close with
 * asynchronous calls in flight. */
static bool churn_round(tcl *t, churn *ch, churn_worker *ws, unsigned round, uint64_t *rs)
{
	size_t nw = CH_ASYNC + CH_SYNC;

	if (!tcl_start(t))
		return false;
	ch->kv = t->kv;
	ch->accepted = ch->called = 0;
	atomic_store(&ch->stop, false);
	atomic_store(&ch->chain, true);
	if (raftkv_set_drop_rate(t->kv, 0.2) != RAFTKV_OK ||
	    raftkv_set_duplicate_rate(t->kv, 0.3) != RAFTKV_OK)
		return false;
	for (size_t i = 0; i < nw; i++)
		if (!churn_worker_start(&ws[i], ch, round * 10 + (unsigned)i + 1, i >= CH_ASYNC,
		                        cf_rand(rs)))
			return false;
	for (int k = 0; k < CH_RESTARTS; k++) {
		uint64_t id = 1 + cf_rand(rs) % 3;

		if (!churn_progress(ch, CH_STEP) || raftkv_node_stop(t->kv, id) != RAFTKV_OK ||
		    !churn_progress(ch, CH_STEP) || raftkv_node_start(t->kv, id) != RAFTKV_OK)
			return false;
	}
	if (!churn_progress(ch, CH_STEP))
		return false;
	churn_stop(ch, ws, nw);
	/* the workers are gone; these are surely in flight when the close starts */
	for (unsigned i = 0; i < CH_FINAL_BURST; i++)
		churn_launch(ch, i, i);
	tcl_close(t);
	atomic_store(&ch->chain, false);
	return true;
}

static void test_register_races(void)
{
	enum { NW = CH_ASYNC + CH_SYNC };
	tcl t;
	churn ch;
	churn_worker ws[CH_ROUNDS][NW];
	watchdog wd;
	uint64_t rs = cf_seed() ^ 0x7265676973746572ull; /* "register" */
	void *v = NULL;
	size_t n = 0;
	unsigned round = 0;

	memset(&t, 0, sizeof t);
	memset(ws, 0, sizeof ws);
	memset(&ch, 0, sizeof ch);
	pthread_mutex_init(&ch.mu, NULL);
	cond_init_mono(&ch.cv);
	CHECK(watchdog_start(&wd, "register resends racing completions", watchdog_secs()));
	CHECK(tcl_init(&t, "cl-regrace", 3));
	t.o.request_timeout_ms = CH_TIMEOUT_MS;
	t.o.election_ticks = CH_ELECTION;
	t.o.heartbeat_ticks = CH_HEARTBEAT;
	for (round = 0; round < CH_ROUNDS; round++) {
		CHECK(churn_round(&t, &ch, ws[round], round, &rs));
		/* each accepted operation was called back once, before the close returned */
		CU_ASSERT_EQUAL(ch.called, ch.accepted);
		CU_ASSERT_EQUAL(ch.outstanding, 0);
	}
	if (ch.bad_status != 0)
		fprintf(stderr, "\nregister races: %s ended with %s\n", ch.bad_what,
		        raftkv_strerror(ch.bad_status));
	CU_ASSERT_EQUAL(ch.bad_status, 0);

	/* Nothing is asserted about successes under that load: with thousands of calls in flight
	 * and a 300 ms timeout, a sanitizer build may time every one of them out. Without faults
	 * and with the usual timeout, the cluster works, and every token was appended at most
	 * once. */
	cf_options(&t.o, 3);
	CHECK(tcl_start(&t));
	CHECK(put_s(t.kv, "after", "x") == RAFTKV_OK);
	CHECK(cf_wait_converged(t.kv, NULL, 0, cf_wait_ms()));
	for (round = 0; round < CH_ROUNDS; round++) {
		for (size_t i = CH_ASYNC; i < NW; i++) {
			churn_worker *w = &ws[round][i];
			char key[24];
			int rv;

			snprintf(key, sizeof key, "tok/%u", w->id);
			rv = raftkv_get(t.kv, key, strlen(key), &v, &n);
			CHECK(rv == RAFTKV_OK || rv == RAFTKV_NOT_FOUND);
			CU_ASSERT(
			    cf_check_tokens(v, rv == RAFTKV_OK ? n : 0, w->id, w->out, w->issued));
			raftkv_free(v);
			v = NULL;
		}
	}
out:
	if (round < CH_ROUNDS)
		churn_stop(&ch, ws[round], NW); /* a failed round: its workers still run */
	tcl_fini(&t);
	watchdog_stop(&wd);
	for (round = 0; round < CH_ROUNDS; round++)
		for (size_t i = 0; i < NW; i++)
			free(ws[round][i].out);
	raftkv_free(v);
	pthread_cond_destroy(&ch.cv);
	pthread_mutex_destroy(&ch.mu);
}

/* ------------------------------------------------------------------------------------------ */
/* 16. Callbacks that read the status while the leader restarts (review of issue 4)           */
/* ------------------------------------------------------------------------------------------ */

/*
 * raftkv.h lets a callback call raftkv_node_status and raftkv_leader. Callbacks of writes run
 * on the leader's thread; stopping that leader joins its thread, so the stop must not hold the
 * lock those calls take while it joins (it did: a callback in raftkv_node_status and the stop
 * in pthread_join waited for each other forever). The watchdog turns such a hang into a
 * failure.
 */
enum { CB_WINDOW = 48, CB_ROUNDS = 6, CB_STEP = 30 };

typedef struct cbd {
	raftkv *kv;       /* borrowed */
	atomic_bool stop; /* callbacks launch nothing more */
	atomic_uint next_key;
	/* mu guards the fields below; cv is broadcast on each callback. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t outstanding;  /* accepted puts whose callback has not returned */
	size_t called;       /* callbacks */
	size_t status_calls; /* callbacks whose status and leader calls all answered sanely */
	size_t bad;          /* callbacks that saw an unexpected status or answer */
} cbd;

static void cbd_done(void *ctx, int status, const void *value, size_t value_len);

static int cbd_launch(cbd *d)
{
	char key[16];
	unsigned k = atomic_fetch_add(&d->next_key, 1);
	size_t kl = (size_t)snprintf(key, sizeof key, "cb/%u", k % 64);
	int rv;

	pthread_mutex_lock(&d->mu);
	d->outstanding++;
	pthread_mutex_unlock(&d->mu);
	rv = raftkv_put_async(d->kv, key, kl, "v", 1, cbd_done, d);
	if (rv != RAFTKV_OK) {
		pthread_mutex_lock(&d->mu);
		d->outstanding--;
		d->bad += rv != RAFTKV_BUSY;
		pthread_cond_broadcast(&d->cv);
		pthread_mutex_unlock(&d->mu);
	}
	return rv;
}

/* On a library thread, usually the leader's: reads every node's status and the leader, then
 * launches the next put before giving its own slot back, so outstanding never reaches zero
 * while a launch from here may still come (the test closes once it is zero). */
static void cbd_done(void *ctx, int status, const void *value, size_t value_len)
{
	cbd *d = ctx;
	raftkv_status st;
	uint64_t l = raftkv_leader(d->kv);
	bool ok = l <= 3;

	(void)value;
	(void)value_len;
	for (uint64_t id = 1; id <= 3; id++)
		ok = ok && raftkv_node_status(d->kv, id, &st) == RAFTKV_OK && st.id == id;
	ok = ok && raftkv_leader(d->kv) <= 3;
	if (!atomic_load(&d->stop))
		cbd_launch(d);
	pthread_mutex_lock(&d->mu);
	d->called++;
	d->status_calls += ok;
	d->bad += !ok || (status != RAFTKV_OK && status != RAFTKV_TIMEOUT &&
	                  status != RAFTKV_SESSION_EXPIRED);
	d->outstanding--;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

/* Waits until n more callbacks ran (or, with n 0, until none is outstanding). */
static bool cbd_wait(cbd *d, size_t n)
{
	struct timespec dl;
	size_t target;
	bool ok;

	deadline_in(&dl, cf_wait_ms());
	pthread_mutex_lock(&d->mu);
	target = d->called + n;
	while ((n > 0 ? d->called < target : d->outstanding > 0) &&
	       pthread_cond_timedwait(&d->cv, &d->mu, &dl) != ETIMEDOUT)
		;
	ok = n > 0 ? d->called >= target : d->outstanding == 0;
	pthread_mutex_unlock(&d->mu);
	if (!ok)
		fprintf(stderr, "\ncallbacks: %zu called, %zu outstanding\n", d->called,
		        d->outstanding);
	return ok;
}

static void test_callback_status_deadlock(void)
{
	tcl t;
	cbd d;
	watchdog wd;
	bool launched = false;

	memset(&t, 0, sizeof t);
	memset(&d, 0, sizeof d);
	pthread_mutex_init(&d.mu, NULL);
	cond_init_mono(&d.cv);
	CHECK(watchdog_start(&wd, "callbacks calling status during leader restarts",
	                     watchdog_secs()));
	CHECK(tcl_open(&t, "cl-cbdead", 3));
	d.kv = t.kv;
	launched = true;
	for (int i = 0; i < CB_WINDOW; i++)
		CHECK(cbd_launch(&d) == RAFTKV_OK);
	for (int round = 0; round < CB_ROUNDS; round++) {
		uint64_t l = leader_of(t.kv);

		CHECK(l != 0);
		CHECK(cbd_wait(&d, CB_STEP)); /* callbacks are running on the leader's thread */
		CHECK(raftkv_node_stop(t.kv, l) == RAFTKV_OK);
		CHECK(cbd_wait(&d, CB_STEP)); /* and on the next leader's */
		CHECK(raftkv_node_start(t.kv, l) == RAFTKV_OK);
	}
	atomic_store(&d.stop, true);
	CHECK(cbd_wait(&d, 0));
	CU_ASSERT_EQUAL(d.bad, 0);
	CU_ASSERT_EQUAL(d.status_calls, d.called);
	CU_ASSERT(d.called >= 2 * CB_ROUNDS * CB_STEP);
	CHECK(cf_wait_converged(t.kv, NULL, 0, cf_wait_ms()));
out:
	atomic_store(&d.stop, true);
	if (launched && t.kv != NULL)
		cbd_wait(&d, 0); /* no callback launches anything once the close starts */
	tcl_fini(&t);
	watchdog_stop(&wd);
	pthread_cond_destroy(&d.cv);
	pthread_mutex_destroy(&d.mu);
}

/* ------------------------------------------------------------------------------------------ */
/* 17. One handle per directory (review of issue 4)                                           */
/* ------------------------------------------------------------------------------------------ */

/* Two handles on one directory would run two instances of each node over one database (and
 * could vote twice in a term). The open holds an flock on raftkv.lock (raftkv.h). */
static void test_one_handle_per_dir(void)
{
	tcl t;
	char lock_path[512], alias[300];
	int fd = -1;

	CHECK(tcl_open(&t, "cl-lock", 3));
	CHECK(put_s(t.kv, "l", "1") == RAFTKV_OK);

	/* a second open, by the same path or another spelling of it, is refused with a reason */
	CHECK(open_refused(t.dir, &t.o, RAFTKV_BUSY));
	snprintf(alias, sizeof alias, "%s/.", t.dir);
	CHECK(open_refused(alias, &t.o, RAFTKV_BUSY));
	/* the lock is on raftkv.lock: another open file description (another process) cannot
	 * take it either */
	path_of(lock_path, sizeof lock_path, t.dir, CLUSTER_LOCK, "");
	fd = open(lock_path, O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0);
	CU_ASSERT(flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK);

	/* the first handle is unharmed */
	CU_ASSERT(none_stopped(t.kv));
	CHECK(value_is_s(t.kv, "l", "1"));
	CHECK(put_s(t.kv, "l", "2") == RAFTKV_OK);
	CHECK(value_is_s(t.kv, "l", "2"));
	CHECK(cf_wait_converged(t.kv, NULL, 0, cf_wait_ms()));
	for (uint64_t id = 1; id <= 3; id++)
		CU_ASSERT(status_sane(t.kv, id, t.o.mailbox_capacity));
	tcl_close(&t);

	/* closed, the lock is free; held by someone else, it refuses an open as the handle did */
	CHECK(flock(fd, LOCK_EX | LOCK_NB) == 0);
	CHECK(open_refused(t.dir, &t.o, RAFTKV_BUSY));
	CHECK(flock(fd, LOCK_UN) == 0);
	close(fd);
	fd = -1;

	/* opened again, the data is there and the cluster takes writes */
	CHECK(tcl_start(&t));
	CHECK(value_is_s(t.kv, "l", "2"));
	CHECK(put_s(t.kv, "l", "3") == RAFTKV_OK);
	CHECK(value_is_s(t.kv, "l", "3"));
out:
	if (fd >= 0)
		close(fd);
	tcl_fini(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 18. A fail-stopped leader is not reported as leader (review of issue 4)                    */
/* ------------------------------------------------------------------------------------------ */

static bool failed_pred(void *ctx, raftkv *kv)
{
	const uint64_t *id = ctx;

	return cf_status(kv, *id).failed != RAFTKV_OK;
}

/*
 * A node whose disk fails stops doing anything (fail-stop) but keeps the role it had, so its
 * status may still say leader. raftkv_leader and raftkv_wait_leader must not name it: no client
 * of it could be served. The fault VFS is one disk for every node, so the case is set up with
 * only the leader running: manual ticks (paused, so nothing steps down or campaigns), both
 * followers stopped, every write failing from then on, and a put: the leader's next persist
 * fails and it alone fail-stops, as leader. Then the disk comes back, the followers restart and
 * elect one of themselves, and a restart from its database brings the failed node back.
 */
static void test_failed_leader(void)
{
	tcl t;
	actx a;
	aslot s;
	raftkv_status st;
	uint64_t l = 0, ids[2], id = 0, nl = 0;
	bool vfs = false;

	memset(&t, 0, sizeof t);
	memset(&s, 0, sizeof s);
	actx_init(&a);
	s.a = &a;
	CHECK(vfs_fault_register(NULL) == SQLITE_OK);
	vfs = true;
	vfs_fault_reset(cf_seed());
	CHECK(tcl_init(&t, "cl-failstop", 3));
	t.o.tick_ms = 0;
	t.o.vfs = VFS_FAULT_NAME;
	CHECK(tcl_start(&t));
	CHECK(put_s(t.kv, "f", "before") == RAFTKV_OK);
	CHECK(cf_wait_converged(t.kv, NULL, 0, cf_wait_ms()));

	/* from here no node ticks, and only the leader runs */
	cf_ticker_pause(t.ticker, true);
	l = raftkv_leader(t.kv);
	CHECK(l != 0);
	others(3, l, ids);
	CHECK(raftkv_node_stop(t.kv, ids[0]) == RAFTKV_OK);
	CHECK(raftkv_node_stop(t.kv, ids[1]) == RAFTKV_OK);
	CHECK(raftkv_leader(t.kv) == l);
	vfs_fault_fail_from(VFS_FAULT_WRITE | VFS_FAULT_SYNC | VFS_FAULT_TRUNCATE, 1, SQLITE_IOERR);
	CHECK(raftkv_put_async(t.kv, "f", 1, "during", 6, aslot_done, &s) == RAFTKV_OK);
	CHECK(cluster_wait(t.kv, failed_pred, &l, cf_wait_ms()) == RAFTKV_OK);
	st = cf_status(t.kv, l);
	CU_ASSERT_EQUAL(st.failed, RAFTKV_IO);
	CU_ASSERT(st.failure[0] != '\0');
	CHECK(st.role == RAFTKV_ROLE_LEADER); /* it still believes it leads: the case at hand */

	/* the only node that says "leader" is failed: there is no leader */
	CU_ASSERT_EQUAL(raftkv_leader(t.kv), 0);
	CU_ASSERT_EQUAL(raftkv_wait_leader(t.kv, 300, &id), RAFTKV_TIMEOUT);

	/* disk back, followers restarted, ticks again: they elect one of themselves */
	vfs_fault_clear();
	CHECK(raftkv_node_start(t.kv, ids[0]) == RAFTKV_OK);
	CHECK(raftkv_node_start(t.kv, ids[1]) == RAFTKV_OK);
	cf_ticker_pause(t.ticker, false);
	CHECK(cf_wait_leader_among(t.kv, ids, 2, cf_wait_ms(), &nl));
	CHECK(raftkv_wait_leader(t.kv, cf_wait_ms(), &id) == RAFTKV_OK);
	CU_ASSERT_NOT_EQUAL(id, l);
	CU_ASSERT_NOT_EQUAL(raftkv_leader(t.kv), l);
	/* the put held by the failed leader was answered RETRY and retried elsewhere: it ends
	 * (applied or not) before the next write, which must not race it */
	CHECK(actx_wait(&a, 1));
	CU_ASSERT_EQUAL(atomic_load(&s.calls), 1);
	CU_ASSERT(atomic_load(&s.status) == RAFTKV_OK || atomic_load(&s.status) == RAFTKV_TIMEOUT);
	CHECK(put_s(t.kv, "f", "after") == RAFTKV_OK);
	CU_ASSERT_NOT_EQUAL(raftkv_leader(t.kv), l);
	CU_ASSERT_EQUAL(cf_status(t.kv, l).failed, RAFTKV_IO); /* still failed: no self-repair */

	/* restarted from its database, the failed node rejoins */
	CHECK(raftkv_node_stop(t.kv, l) == RAFTKV_OK);
	CHECK(raftkv_node_start(t.kv, l) == RAFTKV_OK);
	CHECK(cf_wait_converged(t.kv, NULL, 0, cf_wait_ms()));
	for (uint64_t i = 1; i <= 3; i++)
		CU_ASSERT(status_sane(t.kv, i, t.o.mailbox_capacity));
	CU_ASSERT(value_is_s(t.kv, "f", "after"));
out:
	if (t.ticker != NULL)
		cf_ticker_pause(t.ticker, false);
	if (vfs)
		vfs_fault_clear();
	tcl_fini(&t);
	if (vfs)
		vfs_fault_unregister();
	actx_destroy(&a);
}

/* ------------------------------------------------------------------------------------------ */
/* Registration                                                                               */
/* ------------------------------------------------------------------------------------------ */

static unsigned failures_before;

static void cluster_setup(void)
{
	failures_before = CU_get_number_of_failures();
}

static void cluster_teardown(void)
{
	if (CU_get_number_of_failures() != failures_before) {
		CU_pTest t = CU_get_current_test();

		cf_report_seed(t != NULL && t->pName != NULL ? t->pName : "cluster");
	}
}

void test_register_cluster(void)
{
	CU_pSuite s = CU_add_suite_with_setup_and_teardown("cluster", NULL, NULL, cluster_setup,
	                                                   cluster_teardown);

	if (s == NULL)
		return;
	CU_add_test(s, "basic operations", test_basic);
	CU_add_test(s, "reopen and foreign files", test_reopen);
	CU_add_test(s, "bad input", test_bad_input);
	CU_add_test(s, "node status", test_status);
	CU_add_test(s, "leadership transfer", test_transfer);
	CU_add_test(s, "one partition", test_one_partition);
	CU_add_test(s, "leader crash during writes", test_leader_crash);
	CU_add_test(s, "rolling restart", test_rolling_restart);
	CU_add_test(s, "isolated leader reads", test_isolated_leader_reads);
	CU_add_test(s, "isolated leader steps down", test_isolated_leader_steps_down);
	CU_add_test(s, "duplicates and drops", test_duplicates);
	CU_add_test(s, "close with calls in flight", test_close_in_flight);
	CU_add_test(s, "async API", test_async);
	CU_add_test(s, "stopped nodes", test_stopped_nodes);
	CU_add_test(s, "manual ticks", test_manual_ticks);
	CU_add_test(s, "register resends racing completions", test_register_races);
	CU_add_test(s, "callbacks calling status during leader restarts",
	            test_callback_status_deadlock);
	CU_add_test(s, "one handle per directory", test_one_handle_per_dir);
	CU_add_test(s, "fail-stopped leader not reported", test_failed_leader);
}
