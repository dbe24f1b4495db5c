/* test_mailbox.c - CUnit suite "mailbox": the peer mailbox's ring, eventcount and stress tests. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node/mailbox.h"
#include "suites.h"

/* Sanitizer builds run smaller defaults; RAFTKV_MAILBOX_OPS and RAFTKV_MAILBOX_ROUNDS override. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define MT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define MT_SANITIZED 1
#endif
#endif
#ifdef MT_SANITIZED
#define MT_DEFAULT_OPS    200000u
#define MT_DEFAULT_ROUNDS 50000u
#define MT_TINY_DIVISOR   8
#define MT_WATCHDOG_S     30
#else
#define MT_DEFAULT_OPS    4000000u
#define MT_DEFAULT_ROUNDS 100000u
#define MT_TINY_DIVISOR   32
#define MT_WATCHDOG_S     10
#endif
#define MT_MAX_PRODUCERS 8

static uint64_t mt_env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	char *end;
	unsigned long long x;

	if (v == NULL || *v == '\0')
		return dflt;
	errno = 0;
	x = strtoull(v, &end, 0);
	if (errno != 0 || *end != '\0' || x == 0)
		return dflt;
	return (uint64_t)x;
}

static uint64_t mt_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t mt_thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void mt_sleep_ns(long ns)
{
	struct timespec ts = {ns / 1000000000L, ns % 1000000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* splitmix64: the suite's only randomness, seeded from RAFTKV_MAILBOX_SEED or the clock. */
static uint64_t mt_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t mt_seed(const char *test)
{
	static uint64_t seed;

	if (seed == 0)
		seed = mt_env_u64("RAFTKV_MAILBOX_SEED",
		                  (mt_now_ns() ^ ((uint64_t)getpid() << 32)) | 1);
	printf("\nmailbox %s: seed %" PRIu64 " (RAFTKV_MAILBOX_SEED to replay)\n", test, seed);
	return seed;
}

static mailbox_item mt_item(int kind, void *ptr, uint64_t arg)
{
	mailbox_item it = {kind, ptr, arg};

	return it;
}

/* ---- single-thread semantics ---- */

static void test_create_capacity(void)
{
	static const size_t bad[] = {0, 1, 3, 6, 12, 1000, (size_t)MAILBOX_MAX_CAPACITY * 2};
	mailbox *mb;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		CU_ASSERT_PTR_NULL(mailbox_create(bad[i]));
		CU_ASSERT_EQUAL(errno, EINVAL);
	}
	mb = mailbox_create(2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(mb);
	CU_ASSERT_EQUAL(mailbox_capacity(mb), 2);
	CU_ASSERT_EQUAL(mailbox_depth(mb), 0);
	mailbox_destroy(mb);
	mailbox_destroy(NULL);
}

static void test_fifo_full_depth(void)
{
	mailbox *mb = mailbox_create(8);
	int owned[9];
	mailbox_item it;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mb);
	CU_ASSERT_EQUAL(mailbox_pop(mb, &it), MAILBOX_EMPTY);
	for (int i = 0; i < 8; i++) {
		it = mt_item(i % 3, &owned[i], 100u + (uint64_t)i);
		CU_ASSERT_EQUAL(mailbox_push(mb, &it), MAILBOX_OK);
		CU_ASSERT_EQUAL(mailbox_depth(mb), (size_t)i + 1);
	}
	/* Full: refused at once, nothing taken, the queue unchanged. */
	it = mt_item(7, &owned[8], 999);
	CU_ASSERT_EQUAL(mailbox_push(mb, &it), MAILBOX_FULL);
	CU_ASSERT_EQUAL(mailbox_push(mb, &it), MAILBOX_FULL);
	CU_ASSERT_EQUAL(mailbox_depth(mb), 8);
	/* One pop makes room for exactly one push. */
	CU_ASSERT_EQUAL_FATAL(mailbox_pop(mb, &it), MAILBOX_OK);
	CU_ASSERT_EQUAL(it.kind, 0);
	CU_ASSERT_PTR_EQUAL(it.ptr, &owned[0]);
	CU_ASSERT_EQUAL(it.arg, 100);
	it = mt_item(7, &owned[8], 108);
	CU_ASSERT_EQUAL(mailbox_push(mb, &it), MAILBOX_OK);
	CU_ASSERT_EQUAL(mailbox_push(mb, &it), MAILBOX_FULL);
	for (int i = 1; i <= 8; i++) {
		CU_ASSERT_EQUAL_FATAL(mailbox_pop(mb, &it), MAILBOX_OK);
		CU_ASSERT_EQUAL(it.kind, i == 8 ? 7 : i % 3);
		CU_ASSERT_PTR_EQUAL(it.ptr, &owned[i]);
		CU_ASSERT_EQUAL(it.arg, 100u + (uint64_t)i);
		CU_ASSERT_EQUAL(mailbox_depth(mb), 8u - (size_t)i);
	}
	CU_ASSERT_EQUAL(mailbox_pop(mb, &it), MAILBOX_EMPTY);
	CU_ASSERT_EQUAL(mailbox_pop(mb, &it), MAILBOX_EMPTY);
	CU_ASSERT_EQUAL(mailbox_depth(mb), 0);
	mailbox_destroy(mb);
}

/* Random batches in and out of small rings, so positions lap the ring many times. */
static void test_wraparound(void)
{
	uint64_t rng = mt_seed("wraparound");
	static const size_t caps[] = {2, 4, 16};

	for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
		size_t cap = caps[c];
		mailbox *mb = mailbox_create(cap);
		uint64_t in = 0, out = 0;
		mailbox_item it;

		CU_ASSERT_PTR_NOT_NULL_FATAL(mb);
		for (int round = 0; round < 20000; round++) {
			size_t n_in = (size_t)(mt_rand(&rng) % (cap + 2));
			size_t n_out = (size_t)(mt_rand(&rng) % (cap + 2));

			for (size_t i = 0; i < n_in; i++) {
				it = mt_item((int)(in % 5), NULL, in);
				if (in - out == cap) {
					CU_ASSERT_EQUAL_FATAL(mailbox_push(mb, &it), MAILBOX_FULL);
				} else {
					CU_ASSERT_EQUAL_FATAL(mailbox_push(mb, &it), MAILBOX_OK);
					in++;
				}
				CU_ASSERT_EQUAL_FATAL(mailbox_depth(mb), in - out);
			}
			for (size_t i = 0; i < n_out; i++) {
				if (in == out) {
					CU_ASSERT_EQUAL_FATAL(mailbox_pop(mb, &it), MAILBOX_EMPTY);
				} else {
					CU_ASSERT_EQUAL_FATAL(mailbox_pop(mb, &it), MAILBOX_OK);
					CU_ASSERT_EQUAL_FATAL(it.arg, out);
					CU_ASSERT_EQUAL_FATAL(it.kind, (int)(out % 5));
					out++;
				}
				CU_ASSERT_EQUAL_FATAL(mailbox_depth(mb), in - out);
			}
		}
		CU_ASSERT(in / cap > 1000); /* lapped the ring many times */
		mailbox_destroy(mb);
	}
}

/* Wait semantics on one thread: a stale key returns at once, a timeout is honoured. */
static void test_wait_single_thread(void)
{
	mailbox *mb = mailbox_create(4);
	mailbox_item it = mt_item(1, NULL, 1);
	uint64_t key, t0, dt;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mb);
	/* Nobody changed anything: a zero and a short timeout both time out. */
	key = mailbox_prepare_wait(mb);
	CU_ASSERT_EQUAL(mailbox_wait(mb, key, 0), MAILBOX_TIMEOUT);
	key = mailbox_prepare_wait(mb);
	t0 = mt_now_ns();
	CU_ASSERT_EQUAL(mailbox_wait(mb, key, 20000000), MAILBOX_TIMEOUT);
	dt = mt_now_ns() - t0;
	CU_ASSERT(dt >= 20000000);
	/* A notify or push after prepare ends the wait at once (the timeout only keeps a broken
	 * mailbox from hanging the suite). */
	key = mailbox_prepare_wait(mb);
	mailbox_notify(mb);
	t0 = mt_now_ns();
	CU_ASSERT_EQUAL(mailbox_wait(mb, key, (int64_t)MT_WATCHDOG_S * 1000000000), MAILBOX_OK);
	key = mailbox_prepare_wait(mb);
	CU_ASSERT_EQUAL(mailbox_push(mb, &it), MAILBOX_OK);
	CU_ASSERT_EQUAL(mailbox_wait(mb, key, (int64_t)MT_WATCHDOG_S * 1000000000), MAILBOX_OK);
	CU_ASSERT(mt_now_ns() - t0 < 1000000000u);
	/* Cancel withdraws the waiter; the next wait uses a fresh key. */
	key = mailbox_prepare_wait(mb);
	CU_ASSERT_EQUAL(mailbox_pop(mb, &it), MAILBOX_OK);
	mailbox_cancel_wait(mb);
	key = mailbox_prepare_wait(mb);
	CU_ASSERT_EQUAL(mailbox_wait(mb, key, 1000000), MAILBOX_TIMEOUT);
	/* A notify with nobody waiting is harmless. */
	mailbox_notify(mb);
	mailbox_destroy(mb);
}

/* ---- a parked consumer uses no CPU and is woken by notify ---- */

typedef struct mt_park {
	mailbox *mb;
	int rc;
	uint64_t cpu_ns;
	uint64_t wall_ns;
} mt_park;

static void *mt_park_thread(void *arg)
{
	mt_park *p = arg;
	uint64_t c0 = mt_thread_cpu_ns(), t0 = mt_now_ns();
	uint64_t key = mailbox_prepare_wait(p->mb);

	p->rc = mailbox_wait(p->mb, key, (int64_t)MT_WATCHDOG_S * 1000000000);
	p->cpu_ns = mt_thread_cpu_ns() - c0;
	p->wall_ns = mt_now_ns() - t0;
	return NULL;
}

static void test_park_no_cpu(void)
{
	mt_park p = {.mb = mailbox_create(4)};
	pthread_t th;

	CU_ASSERT_PTR_NOT_NULL_FATAL(p.mb);
	CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, mt_park_thread, &p), 0);
	mt_sleep_ns(200000000); /* 200 ms parked */
	mailbox_notify(p.mb);
	pthread_join(th, NULL);
	printf("\nmailbox park: woken after %.1f ms wall, %.3f ms CPU\n", p.wall_ns / 1e6,
	       p.cpu_ns / 1e6);
	CU_ASSERT_EQUAL(p.rc, MAILBOX_OK);
	CU_ASSERT(p.wall_ns >= 150000000);
	CU_ASSERT(p.cpu_ns < 50000000); /* a spinning waiter would burn ~200 ms */
	mailbox_destroy(p.mb);
}

/* ---- stress: many producers, one consumer ---- */

typedef struct mt_stress mt_stress;

typedef struct mt_producer {
	mt_stress *s;
	int id;
	pthread_t th;
	uint64_t full_retries;
	uint64_t spurious_notifies;
} mt_producer;

struct mt_stress {
	mailbox *mb;
	int n_producers;
	uint64_t per_producer;
	uint64_t seed;
	atomic_bool abort;
	mt_producer prod[MT_MAX_PRODUCERS];
};

/*
 * A producer pushes (id, 0), (id, 1), ... When the ring is full it backs off with a short
 * nanosleep (1 us doubling to 128 us). That is test-only load generation, not part of the
 * mailbox protocol: the node layer answers FULL with RAFTKV_BUSY or drops the message. Now and
 * then it also sends a spurious mailbox_notify and samples mailbox_depth from its own thread.
 */
static void *mt_producer_thread(void *arg)
{
	mt_producer *p = arg;
	mt_stress *s = p->s;
	uint64_t rng = s->seed ^ ((uint64_t)(p->id + 1) * 0x2545f4914f6cdd1dull);

	for (uint64_t i = 0; i < s->per_producer; i++) {
		mailbox_item it = mt_item(p->id, p, i);
		long backoff = 1000;

		while (mailbox_push(s->mb, &it) == MAILBOX_FULL) {
			if (atomic_load_explicit(&s->abort, memory_order_relaxed))
				return NULL;
			p->full_retries++;
			mt_sleep_ns(backoff);
			if (backoff < 128000)
				backoff *= 2;
		}
		if ((mt_rand(&rng) & 4095) == 0) {
			p->spurious_notifies++;
			mailbox_notify(s->mb);
			if (mailbox_depth(s->mb) > mailbox_capacity(s->mb))
				atomic_store(&s->abort, true);
		}
	}
	return NULL;
}

static void mt_stress_run(size_t capacity, int n_producers, uint64_t total, const char *name)
{
	mt_stress *s = calloc(1, sizeof(*s));
	uint64_t next[MT_MAX_PRODUCERS] = {0};
	uint64_t got = 0, parks = 0, parks_pending = 0, woken = 0, full = 0, spurious = 0;
	uint64_t t0, elapsed;
	char err[256] = "";
	mailbox_item it;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	s->mb = mailbox_create(capacity);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s->mb);
	s->n_producers = n_producers;
	s->per_producer = total / (uint64_t)n_producers;
	total = s->per_producer * (uint64_t)n_producers;
	s->seed = mt_seed(name);
	atomic_init(&s->abort, false);
	t0 = mt_now_ns();
	for (int i = 0; i < n_producers; i++) {
		s->prod[i].s = s;
		s->prod[i].id = i;
		CU_ASSERT_EQUAL_FATAL(
		    pthread_create(&s->prod[i].th, NULL, mt_producer_thread, &s->prod[i]), 0);
	}
	/* The consumer, on this thread, follows the documented loop. */
	while (got < total && err[0] == '\0') {
		int rc = mailbox_pop(s->mb, &it);

		if (rc == MAILBOX_EMPTY) {
			uint64_t key = mailbox_prepare_wait(s->mb);

			rc = mailbox_pop(s->mb, &it);
			if (rc == MAILBOX_OK) {
				mailbox_cancel_wait(s->mb);
			} else {
				/* Depth > 0 here means the head slot is claimed, not published. */
				if (mailbox_depth(s->mb) > 0)
					parks_pending++;
				parks++;
				if (mailbox_wait(s->mb, key, (int64_t)MT_WATCHDOG_S * 1000000000) ==
				    MAILBOX_TIMEOUT) {
					snprintf(err, sizeof(err),
					         "consumer not woken for %d s at %" PRIu64
					         " items (%s)",
					         MT_WATCHDOG_S, got,
					         mailbox_pop(s->mb, &it) == MAILBOX_OK
					             ? "lost wakeup: an item was ready"
					             : "producers stalled");
					break;
				}
				woken++;
				continue;
			}
		}
		if (it.kind < 0 || it.kind >= n_producers || it.ptr != &s->prod[it.kind]) {
			snprintf(err, sizeof(err), "corrupt item: kind %d", it.kind);
		} else if (it.arg != next[it.kind]) {
			snprintf(err, sizeof(err),
			         "producer %d: got seq %" PRIu64 ", expected %" PRIu64 " (%s)",
			         it.kind, it.arg, next[it.kind],
			         it.arg > next[it.kind] ? "lost or reordered" : "duplicated");
		} else {
			next[it.kind]++;
			got++;
		}
	}
	if (err[0] != '\0')
		atomic_store(&s->abort, true);
	for (int i = 0; i < n_producers; i++) {
		pthread_join(s->prod[i].th, NULL);
		full += s->prod[i].full_retries;
		spurious += s->prod[i].spurious_notifies;
	}
	elapsed = mt_now_ns() - t0;
	if (err[0] == '\0' && atomic_load(&s->abort))
		snprintf(err, sizeof(err), "a producer saw depth > capacity");
	/* Nothing left over, nothing missing. */
	if (err[0] == '\0' && mailbox_pop(s->mb, &it) != MAILBOX_EMPTY)
		snprintf(err, sizeof(err), "an extra item after all were received");
	for (int i = 0; err[0] == '\0' && i < n_producers; i++)
		if (next[i] != s->per_producer)
			snprintf(err, sizeof(err), "producer %d: %" PRIu64 " of %" PRIu64, i,
			         next[i], s->per_producer);
	printf("mailbox %s: %d producers x %" PRIu64 " = %" PRIu64 " items, capacity %zu: "
	       "%.2f s (%.2f M items/s); consumer parked %" PRIu64 " times (%" PRIu64
	       " on a claimed, unpublished head), woken %" PRIu64 "; FULL retries %" PRIu64
	       ", spurious notifies %" PRIu64 "\n",
	       name, n_producers, s->per_producer, total, capacity, elapsed / 1e9,
	       (double)got / (elapsed / 1e3), parks, parks_pending, woken, full, spurious);
	if (err[0] != '\0') {
		printf("mailbox %s FAILED (seed %" PRIu64 "): %s\n", name, s->seed, err);
		CU_FAIL(err);
	}
	CU_ASSERT_EQUAL(got, total);
	CU_ASSERT_EQUAL(mailbox_depth(s->mb), 0);
	mailbox_destroy(s->mb);
	free(s);
}

static void test_stress(void)
{
	uint64_t ops = mt_env_u64("RAFTKV_MAILBOX_OPS", MT_DEFAULT_OPS);

	mt_stress_run(1024, 4, ops, "stress");
}

/* A tiny ring with more producers: FULL all the time, a wakeup for almost every item, and heads
 * claimed but unpublished. Its rate is bounded by wakeup latency, hence fewer items. */
static void test_stress_tiny(void)
{
	uint64_t ops = mt_env_u64("RAFTKV_MAILBOX_OPS", MT_DEFAULT_OPS) / MT_TINY_DIVISOR;

	mt_stress_run(4, 8, ops, "stress-tiny");
}

/* ---- lost-wakeup ping-pong: each side parks with no timeout ---- */

/*
 * Two threads, each the consumer of its own mailbox, parked with no timeout. A lost wakeup
 * would hang them, so this thread is a watchdog: when the round counter has not moved for
 * MT_WATCHDOG_S seconds it raises `abort` and calls mailbox_notify on both mailboxes (which
 * wakes any parked side, as the protocol promises), and the test fails.
 */
typedef struct mt_pingpong {
	mailbox *a, *b; /* a: consumed by thread A; b: consumed by thread B */
	uint64_t rounds;
	bool ticker; /* A signals B by a counter plus mailbox_notify instead of a push */
	atomic_bool abort;
	atomic_uint_least64_t progress;
	atomic_uint_least64_t parks;
	atomic_int failed;
	atomic_int done;
	atomic_uint_least64_t ticks; /* ticker mode: A's counter, checked by B */
	pthread_mutex_t lock;
	pthread_cond_t cond;
} mt_pingpong;

/* Pops one item from mb for its consumer, parking with no timeout; false on abort. */
static bool mt_recv(mt_pingpong *pp, mailbox *mb, mailbox_item *it)
{
	for (;;) {
		uint64_t key;

		if (mailbox_pop(mb, it) == MAILBOX_OK)
			return true;
		key = mailbox_prepare_wait(mb);
		if (mailbox_pop(mb, it) == MAILBOX_OK) {
			mailbox_cancel_wait(mb);
			return true;
		}
		if (atomic_load(&pp->abort)) {
			mailbox_cancel_wait(mb);
			return false;
		}
		atomic_fetch_add_explicit(&pp->parks, 1, memory_order_relaxed);
		mailbox_wait(mb, key, -1);
	}
}

static void mt_finish(mt_pingpong *pp, bool ok)
{
	if (!ok)
		atomic_store(&pp->failed, 1);
	pthread_mutex_lock(&pp->lock);
	atomic_fetch_add(&pp->done, 1);
	pthread_cond_broadcast(&pp->cond);
	pthread_mutex_unlock(&pp->lock);
}

static void *mt_ping_thread(void *arg)
{
	mt_pingpong *pp = arg;
	mailbox_item it;
	bool ok = true;

	for (uint64_t r = 1; ok && r <= pp->rounds; r++) {
		if (pp->ticker) {
			atomic_store_explicit(&pp->ticks, r, memory_order_relaxed);
			mailbox_notify(pp->b);
		} else {
			it = mt_item(1, NULL, r);
			ok = mailbox_push(pp->b, &it) == MAILBOX_OK;
		}
		ok = ok && mt_recv(pp, pp->a, &it) && it.arg == r;
		atomic_store_explicit(&pp->progress, r, memory_order_relaxed);
	}
	mt_finish(pp, ok);
	return NULL;
}

/* Thread B: receives round r (an item, or the ticker counter) and answers with an item. */
static void *mt_pong_thread(void *arg)
{
	mt_pingpong *pp = arg;
	mailbox_item it;
	bool ok = true;

	for (uint64_t r = 1; ok && r <= pp->rounds; r++) {
		if (!pp->ticker) {
			ok = mt_recv(pp, pp->b, &it) && it.arg == r;
		} else {
			/* The ticker protocol: prepare, check the counter, then park. */
			for (;;) {
				uint64_t key = mailbox_prepare_wait(pp->b);
				uint64_t t = atomic_load_explicit(&pp->ticks, memory_order_relaxed);

				if (t != r - 1 || atomic_load(&pp->abort)) {
					mailbox_cancel_wait(pp->b);
					ok = t == r && !atomic_load(&pp->abort);
					break;
				}
				atomic_fetch_add_explicit(&pp->parks, 1, memory_order_relaxed);
				mailbox_wait(pp->b, key, -1);
			}
		}
		it = mt_item(2, NULL, r);
		ok = ok && mailbox_push(pp->a, &it) == MAILBOX_OK;
	}
	mt_finish(pp, ok);
	return NULL;
}

static void mt_pingpong_run(bool ticker, const char *name)
{
	mt_pingpong *pp = calloc(1, sizeof(*pp));
	pthread_t ta, tb;
	uint64_t last = 0, t0, elapsed;
	int stalled_s = 0;
	bool hung = false;

	CU_ASSERT_PTR_NOT_NULL_FATAL(pp);
	pp->a = mailbox_create(2);
	pp->b = mailbox_create(2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pp->a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pp->b);
	pp->rounds = mt_env_u64("RAFTKV_MAILBOX_ROUNDS", MT_DEFAULT_ROUNDS);
	pp->ticker = ticker;
	atomic_init(&pp->abort, false);
	atomic_init(&pp->progress, 0);
	atomic_init(&pp->parks, 0);
	atomic_init(&pp->failed, 0);
	atomic_init(&pp->done, 0);
	atomic_init(&pp->ticks, 0);
	pthread_mutex_init(&pp->lock, NULL);
	pthread_cond_init(&pp->cond, NULL);
	t0 = mt_now_ns();
	CU_ASSERT_EQUAL_FATAL(pthread_create(&ta, NULL, mt_ping_thread, pp), 0);
	CU_ASSERT_EQUAL_FATAL(pthread_create(&tb, NULL, mt_pong_thread, pp), 0);
	/* The watchdog: wake up once a second, fail after MT_WATCHDOG_S seconds without progress.
	 */
	pthread_mutex_lock(&pp->lock);
	while (atomic_load(&pp->done) < 2) {
		struct timespec dl;
		uint64_t now;

		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 1;
		pthread_cond_timedwait(&pp->cond, &pp->lock, &dl);
		now = atomic_load(&pp->progress);
		stalled_s = now == last ? stalled_s + 1 : 0;
		last = now;
		if (stalled_s >= MT_WATCHDOG_S && !hung) {
			hung = true;
			atomic_store(&pp->abort, true);
			mailbox_notify(pp->a);
			mailbox_notify(pp->b);
		}
	}
	pthread_mutex_unlock(&pp->lock);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	elapsed = mt_now_ns() - t0;
	printf("mailbox %s: %" PRIu64 " of %" PRIu64 " round trips in %.2f s (%.1f us each), "
	       "%" PRIu64 " parks with no timeout\n",
	       name, (uint64_t)atomic_load(&pp->progress), pp->rounds, elapsed / 1e9,
	       elapsed / 1e3 / (double)(last ? last : 1), (uint64_t)atomic_load(&pp->parks));
	if (hung)
		printf("mailbox %s FAILED: no progress for %d s at round %" PRIu64
		       " (lost wakeup)\n",
		       name, MT_WATCHDOG_S, last);
	CU_ASSERT_FALSE(hung);
	CU_ASSERT_EQUAL(atomic_load(&pp->failed), 0);
	CU_ASSERT_EQUAL(atomic_load(&pp->progress), pp->rounds);
	pthread_cond_destroy(&pp->cond);
	pthread_mutex_destroy(&pp->lock);
	mailbox_destroy(pp->a);
	mailbox_destroy(pp->b);
	free(pp);
}

static void test_pingpong_push(void)
{
	mt_pingpong_run(false, "ping-pong (push wakes)");
}

static void test_pingpong_notify(void)
{
	mt_pingpong_run(true, "ping-pong (notify wakes)");
}

void test_register_mailbox(void)
{
	CU_pSuite s = CU_add_suite("mailbox", NULL, NULL);

	if (s == NULL)
		return;
	CU_add_test(s, "create checks the capacity", test_create_capacity);
	CU_add_test(s, "FIFO, FULL, depth", test_fifo_full_depth);
	CU_add_test(s, "wrap-around with random batches", test_wraparound);
	CU_add_test(s, "wait: stale key, timeout, cancel", test_wait_single_thread);
	CU_add_test(s, "a parked consumer uses no CPU", test_park_no_cpu);
	CU_add_test(s, "stress: 4 producers, capacity 1024", test_stress);
	CU_add_test(s, "stress: 8 producers, capacity 4", test_stress_tiny);
	CU_add_test(s, "no lost wakeup: push ping-pong", test_pingpong_push);
	CU_add_test(s, "no lost wakeup: notify ping-pong", test_pingpong_notify);
}
