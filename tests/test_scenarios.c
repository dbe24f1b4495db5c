/* test_scenarios.c - CUnit suite "scenarios": the 5-node fault matrix, checked end to end. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "linearize.h"
#include "raftkv.h"
#include "scenario.h"
#include "store/store.h"
#include "suites.h"
#include "vfs_fault.h"

/*
 * Each row of the matrix (issue 4) runs one 5-node cluster for several rounds. In a round,
 * client threads share one handle and a small key space and run operations back to back while
 * the row's faults are on (drops, duplicates and reordering; a partitioner thread that moves a
 * random split every 100-300 ms). At the end of a round the network heals and the clients stop;
 * persist rows then cut the power (fault VFS, sync FULL) and restart every node.
 *
 * Two disjoint key sets:
 *   - mixed keys "m0".."m3": puts of unique values "p<client>.<n>|", appends of unique tokens
 *     "|<client>.<n>|", deletes, gets and scans: judged by the linearizability checker;
 *   - append-only keys "a<k>" (two at a time, more with more than 5 clients; moving on every
 *     SC_APPEND_EPOCH appends per two keys, so no value grows without bound in a soak):
 *     appends and gets only, the gets mostly of the keys in use and sometimes of older ones.
 *     A put would erase tokens, so only here can the final value show every acknowledged
 *     token exactly once, every unknown one at most once, none of the failed ones, and each
 *     client's acknowledged tokens in the order it issued them. These operations are recorded
 *     in the history too, so their gets are checked as well.
 * After the last round: final reads of every key (recorded), the token check, convergence of
 * every node to one applied index, then raftkv_close and a direct comparison of the node
 * databases through the store API, and last the linearizability check of the whole history.
 *
 * Knobs: RAFTKV_TEST_SEED (the base seed, printed), RAFTKV_SCENARIO_ROUNDS (default 3),
 * RAFTKV_SCENARIO_MS (client time per round, default 1500), RAFTKV_SCENARIO_GC (log GC
 * threshold; default 256 so that compaction and snapshot transfer happen; 0 keeps the library's
 * defaults), RAFTKV_SCENARIO_TRACE=1 (every node's Raft events on stderr).
 */

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SC_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define SC_SANITIZED 1
#endif
#endif
#ifdef SC_SANITIZED
#define SC_TICK_MS            10u
#define SC_REQUEST_TIMEOUT_MS 5000u
#define SC_SHORT_TIMEOUT_MS   1500u
#define SC_SLOWDOWN           4u
#else
#define SC_TICK_MS            5u
#define SC_REQUEST_TIMEOUT_MS 2000u
#define SC_SHORT_TIMEOUT_MS   300u
#define SC_SLOWDOWN           1u
#endif

#define SC_NODES          SCENARIO_NODES
#define SC_MAX_CLIENTS    SCENARIO_MAX_CLIENTS
#define SC_MIXED_KEYS     4u   /* "m0".."m3" */
#define SC_APPEND_KEYS    2u   /* append-only keys in use at a time, at least (sc_run.akeys) */
#define SC_APPEND_EPOCH   128u /* appends per SC_APPEND_KEYS keys before the next keys take over */
#define SC_FINAL_CLIENT   1000u
#define SC_MIN_OK         20u /* successful client operations a scenario must reach */
#define SC_MAX_ERR_LINES  30u
#define SC_FINAL_ATTEMPTS 5u
#define SC_LEADER_MS      (10000u * SC_SLOWDOWN)
#define SC_CONVERGE_MS    (20000u * SC_SLOWDOWN)
#define SC_KEY_MAX        24u

typedef scenario_row sc_row;

/* One append to an append-only key, as its client issued it. */
typedef struct sc_append {
	uint32_t key;      /* append-only key number (sc_akey_name) */
	uint64_t n;        /* the token's number; strictly increasing in issue order per client */
	lin_status status; /* the outcome the client saw */
	size_t hid;        /* its id in the history */
	bool pending;      /* an unknown outcome not yet completed (sc_resolve_unknown) */
	unsigned copies;   /* copies of the token in the key's final value (sc_parse_tokens) */
	size_t pos;        /* position of its last copy among the value's tokens */
} sc_append;

struct sc_run;

/* A client thread. Its fields are its own while it runs; the main thread reads them after
 * joining it. */
typedef struct sc_client {
	struct sc_run *run;
	uint64_t id;        /* client id in the history: 0..clients-1 */
	uint64_t rng;       /* splitmix64 state */
	uint64_t next_n;    /* number of the next put value or token; never reused, across rounds */
	sc_append *appends; /* owned; every append to an append-only key, in issue order */
	size_t n_appends, cap_appends;
	uint64_t ops, ok, unknown, failed, busy;
	pthread_t thread;
} sc_client;

/* One scenario run. Owned by scenario_run(). */
typedef struct sc_run {
	const sc_row *row;
	scenario_opts opts; /* a copy of the caller's, or all zero */
	uint64_t seed;
	unsigned rounds, round_ms;
	char dir[256];
	raftkv *kv;        /* owned until raftkv_close; NULL after */
	lin_history *hist; /* owned */
	/* Append-only keys in use at a time: SC_APPEND_KEYS, or 2 per 5 clients with more
	 * clients, so that about as many appenders race on one key as with 5 clients (20
	 * clients on 2 keys exhaust the checker: each order of their concurrent appends is a
	 * distinct value). aepoch: appends before the next akeys keys take over. Fixed by
	 * sc_setup. */
	uint32_t akeys;
	uint64_t aepoch;
	/* Appends to append-only keys issued so far, all clients together: the first aepoch go
	 * to keys 0..akeys-1, the next to the following akeys keys, and so on. */
	atomic_uint_fast64_t akey_appends;
	/* The current round: written by the main thread while no client runs. */
	unsigned round;
	/* End of the round: stop_mu is set under mu and broadcast on cv (the partitioner waits
	 * for it); stop mirrors it for the clients, which poll it between operations. */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* CLOCK_MONOTONIC: the partitioner's and the round's timers */
	bool stop_mu;
	atomic_bool stop;
	/* Watchdog: done is guarded by mu and broadcast on cv. */
	bool done;
	pthread_t watchdog;
	pthread_t partitioner_thread;
	sc_client clients[SC_MAX_CLIENTS];
	atomic_uint errors;
	uint64_t partitions, heals; /* the partitioner's changes (its own until joined) */
	/* The lagger thread (scenario_opts.lagger) of the current round; lags counts the rounds
	 * it left a node behind, passed those in which the leader compacted past that node's
	 * log (both its own until joined). */
	pthread_t lagger_thread;
	uint64_t lags, lags_passed;
	/* A node's counters restart from zero with it: each stop first adds that node's
	 * counters here (guarded by mu). sc_totals adds the running nodes' at the end. */
	uint64_t banked_sent, banked_received, banked_fsyncs;
	/* Totals over the nodes once converged, for the summary line. */
	uint64_t final_index, snapshots_sent, snapshots_received, fsyncs;
} sc_run;

static const char *const sc_mkeys[SC_MIXED_KEYS] = {"m0", "m1", "m2", "m3"};

/*
 * Why append-only keys change every SC_APPEND_EPOCH appends: the checker's model value of such
 * a key is its whole concatenation, and concurrent appends can be ordered in many ways between
 * two reads, each order a distinct value interned by the checker. A key that collects
 * thousands of tokens (as one key per round did) makes that memory explode (LIN_RESULT_TIMEOUT
 * "out of memory for values" after ~1,000 operations and 7 KB values), so each key takes a
 * bounded share of the appends, whatever the run's length.
 */
static void sc_akey_name(uint32_t k, char out[SC_KEY_MAX])
{
	snprintf(out, SC_KEY_MAX, "a%" PRIu32, k);
}

/* Number of append-only keys touched so far: those of every epoch begun. */
static uint32_t sc_akey_count(sc_run *run)
{
	uint64_t n = atomic_load(&run->akey_appends);

	return (uint32_t)((n + run->aepoch - 1) / run->aepoch * run->akeys);
}

/* ------------------------------------------------------------------------------------------ */
/* Utilities                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* splitmix64: the suite's only randomness, seeded from RAFTKV_TEST_SEED or the clock. */
static uint64_t sc_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static unsigned sc_below(uint64_t *s, unsigned n)
{
	return (unsigned)(sc_rand(s) % n);
}

static uint64_t sc_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* An unset or malformed variable gives dflt; 0 is a valid value. */
static uint64_t sc_env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	char *end;
	unsigned long long x;

	if (v == NULL || *v == '\0')
		return dflt;
	errno = 0;
	x = strtoull(v, &end, 0);
	if (errno != 0 || *end != '\0')
		return dflt;
	return (uint64_t)x;
}

static uint64_t sc_base_seed(void)
{
	static uint64_t seed;

	if (seed == 0)
		seed = sc_env_u64("RAFTKV_TEST_SEED", 0);
	if (seed == 0)
		seed = (sc_now_ns() ^ ((uint64_t)getpid() << 32)) | 1;
	return seed;
}

/* Waits on run->cv until deadline_ns (monotonic), or until *flag (if not NULL) is set; mu must
 * be held. */
static void sc_wait_until(sc_run *run, uint64_t deadline_ns, const bool *flag)
{
	struct timespec ts;

	while ((flag == NULL || !*flag) && sc_now_ns() < deadline_ns) {
		ts.tv_sec = (time_t)(deadline_ns / 1000000000u);
		ts.tv_nsec = (long)(deadline_ns % 1000000000u);
		pthread_cond_timedwait(&run->cv, &run->mu, &ts);
	}
}

/* Records a failure of the scenario, with a message on stderr (the first SC_MAX_ERR_LINES).
 * Thread-safe; CUnit asserts happen on the main thread from the count. */
static void sc_error(sc_run *run, const char *fmt, ...)
{
	unsigned n = atomic_fetch_add(&run->errors, 1);
	va_list ap;

	if (n >= SC_MAX_ERR_LINES)
		return;
	flockfile(stderr);
	fprintf(stderr,
	        "scenario '%s' (seed %" PRIu64 ", RAFTKV_TEST_SEED=%" PRIu64 "): ", run->row->name,
	        run->seed, sc_base_seed());
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

/* memcmp order, a proper prefix first. */
static int sc_keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static void sc_trace(void *ctx, uint64_t node_id, const char *line)
{
	(void)ctx;
	fprintf(stderr, "[node %" PRIu64 "] %s\n", node_id, line);
}

static void sc_print_status(sc_run *run)
{
	raftkv_status st;

	for (uint64_t id = 1; id <= SC_NODES; id++) {
		if (raftkv_node_status(run->kv, id, &st) != RAFTKV_OK) {
			fprintf(stderr, "  node %" PRIu64 ": no status\n", id);
			continue;
		}
		fprintf(stderr,
		        "  node %" PRIu64 ": role %d term %" PRIu64 " leader %" PRIu64
		        " commit %" PRIu64 " applied %" PRIu64 " log [%" PRIu64 ", %" PRIu64
		        "] mailbox %zu failed %d %s\n",
		        id, st.role, st.term, st.leader, st.commit, st.applied, st.first_index,
		        st.last_index, st.mailbox_depth, st.failed, st.failure);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Client operations                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* Backs off after RAFTKV_BUSY, which returns before anything was sent: without a pause the
 * client would spin on a full queue. */
static void sc_backoff(sc_client *c)
{
	struct timespec ts = {0, (long)(1 + sc_below(&c->rng, 4)) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Maps a client call's status to the history's outcome (raftkv.h "Outcomes"). not_found_ok:
 * for delete and get, RAFTKV_NOT_FOUND means the operation happened (the key was absent). */
static lin_status sc_outcome(sc_client *c, const char *op, int rv, bool not_found_ok)
{
	switch (rv) {
	case RAFTKV_OK:
		c->ok++;
		return LIN_OK;
	case RAFTKV_NOT_FOUND:
		if (!not_found_ok)
			break;
		c->ok++;
		return LIN_OK;
	case RAFTKV_TIMEOUT:
		c->unknown++;
		return LIN_UNKNOWN;
	case RAFTKV_BUSY:
		c->busy++;
		c->failed++;
		sc_backoff(c);
		return LIN_FAIL;
	default:
		break;
	}
	/* Valid input on an open handle: anything else is a library bug. */
	sc_error(c->run, "client %" PRIu64 ": %s returned %s (%d)", c->id, op, raftkv_strerror(rv),
	         rv);
	if (rv == RAFTKV_INVALID || rv == RAFTKV_CLOSED) {
		c->failed++;
		return LIN_FAIL;
	}
	c->unknown++;
	return LIN_UNKNOWN;
}

static void sc_put(sc_client *c, const char *key)
{
	sc_run *run = c->run;
	char val[48];
	int len = snprintf(val, sizeof(val), "p%" PRIu64 ".%" PRIu64 "|", c->id, c->next_n++);
	size_t id = lin_invoke(run->hist, c->id, LIN_PUT, key, strlen(key), val, (size_t)len);
	int rv = raftkv_put(run->kv, key, strlen(key), val, (size_t)len);

	lin_complete(run->hist, id, sc_outcome(c, "put", rv, false), NULL, 0);
}

/* Appends a fresh token to key. *n receives its number and *hid its history id. An unknown
 * outcome is left pending in the history when defer is set (see sc_resolve_unknown). */
static lin_status sc_append_token(sc_client *c, const char *key, bool defer, uint64_t *n,
                                  size_t *hid)
{
	sc_run *run = c->run;
	char tok[48];
	lin_status st;
	int len;
	int rv;

	*n = c->next_n++;
	len = snprintf(tok, sizeof(tok), "|%" PRIu64 ".%" PRIu64 "|", c->id, *n);
	*hid = lin_invoke(run->hist, c->id, LIN_APPEND, key, strlen(key), tok, (size_t)len);
	rv = raftkv_append(run->kv, key, strlen(key), tok, (size_t)len);
	st = sc_outcome(c, "append", rv, false);
	if (st != LIN_UNKNOWN || !defer)
		lin_complete(run->hist, *hid, st, NULL, 0);
	return st;
}

static void sc_delete(sc_client *c, const char *key)
{
	sc_run *run = c->run;
	size_t id = lin_invoke(run->hist, c->id, LIN_DELETE, key, strlen(key), NULL, 0);
	int rv = raftkv_delete(run->kv, key, strlen(key));

	lin_complete(run->hist, id, sc_outcome(c, "delete", rv, true), NULL, 0);
}

static void sc_get(sc_client *c, const char *key)
{
	sc_run *run = c->run;
	void *val = NULL;
	size_t len = 0;
	size_t id = lin_invoke(run->hist, c->id, LIN_GET, key, strlen(key), NULL, 0);
	int rv = raftkv_get(run->kv, key, strlen(key), &val, &len);
	lin_status st = sc_outcome(c, "get", rv, true);

	if (rv == RAFTKV_OK)
		lin_complete(run->hist, id, st, val != NULL ? val : "", len);
	else
		lin_complete(run->hist, id, st, NULL, 0);
	raftkv_free(val);
}

/* Appends to one of the append-only keys in use and remembers the token. */
static void sc_append_only(sc_client *c)
{
	sc_run *run = c->run;
	uint64_t epoch = atomic_fetch_add(&run->akey_appends, 1) / run->aepoch;
	uint32_t k = (uint32_t)(epoch * run->akeys) + sc_below(&c->rng, run->akeys);
	char key[SC_KEY_MAX];
	sc_append a = {.key = k};

	sc_akey_name(k, key);
	a.status = sc_append_token(c, key, true, &a.n, &a.hid);
	a.pending = a.status == LIN_UNKNOWN;
	if (c->n_appends == c->cap_appends) {
		size_t cap = c->cap_appends ? 2 * c->cap_appends : 256;
		sc_append *p = realloc(c->appends, cap * sizeof(*p));

		if (p == NULL) {
			fprintf(stderr, "scenarios: out of memory\n");
			abort();
		}
		c->appends = p;
		c->cap_appends = cap;
	}
	c->appends[c->n_appends++] = a;
}

/* A scan in progress: its range, what it delivered, and its history id. */
typedef struct sc_scan_ctx {
	sc_client *c;
	size_t id;
	const char *start, *end; /* end "" : no upper bound */
	size_t limit;
	size_t count;
	char last[SC_KEY_MAX];
	size_t last_len;
	bool bad; /* one contract violation reported already */
} sc_scan_ctx;

/* Checks each delivered pair against the contract (in range, ascending, within the limit)
 * and adds it to the scan's result. */
static int sc_scan_cb(void *ctx, const void *key, size_t key_len, const void *value,
                      size_t value_len)
{
	sc_scan_ctx *s = ctx;
	sc_run *run = s->c->run;
	const char *why = NULL;

	if (sc_keycmp(key, key_len, s->start, strlen(s->start)) < 0)
		why = "a key below the start";
	else if (s->end[0] != '\0' && sc_keycmp(key, key_len, s->end, strlen(s->end)) >= 0)
		why = "a key at or past the end";
	else if (s->count > 0 && sc_keycmp(key, key_len, s->last, s->last_len) <= 0)
		why = "keys out of order";
	else if (s->limit > 0 && s->count >= s->limit)
		why = "more keys than the limit";
	else if (key_len > sizeof(s->last))
		why = "a key never written";
	if (why != NULL && !s->bad) {
		s->bad = true;
		sc_error(run, "scan [%s, %s) limit %zu delivered %s: '%.*s'", s->start, s->end,
		         s->limit, why, (int)(key_len < 64 ? key_len : 64), (const char *)key);
	}
	if (key_len <= sizeof(s->last)) {
		memcpy(s->last, key, key_len);
		s->last_len = key_len;
	}
	s->count++;
	lin_scan_add(run->hist, s->id, key, key_len, value, value_len);
	return 0;
}

/* A scan over part of the mixed keys ("m" starts before all of them; an empty end means no
 * upper bound, and every key past "m" is a mixed one), sometimes with a limit. */
static void sc_scan(sc_client *c)
{
	static const char *const starts[] = {"m", "m0", "m1", "m2", "m3"};
	static const char *const ends[] = {"", "m1", "m2", "m3", "m4"};
	sc_run *run = c->run;
	unsigned a = sc_below(&c->rng, 5);
	unsigned b = a == 0 ? sc_below(&c->rng, 5) : a + sc_below(&c->rng, 5 - a);
	sc_scan_ctx s = {.c = c, .start = starts[a], .end = ends[b]}; /* ends[0]: unbounded */
	void *next = NULL;
	size_t next_len = 0;
	int rv;

	s.limit = sc_below(&c->rng, 2) ? 0 : 1 + sc_below(&c->rng, 3);
	s.id =
	    lin_invoke(run->hist, c->id, LIN_SCAN, s.start, strlen(s.start), s.end, strlen(s.end));
	rv = raftkv_scan(run->kv, s.start, strlen(s.start), s.end, strlen(s.end), s.limit,
	                 sc_scan_cb, &s, &next, &next_len);
	if (rv != RAFTKV_OK && s.count > 0)
		sc_error(run, "scan returned %s after delivering %zu keys", raftkv_strerror(rv),
		         s.count);
	if (rv == RAFTKV_OK && next != NULL) {
		/* The continuation is the first key not delivered: past the last one, in range. */
		if ((s.count > 0 && sc_keycmp(next, next_len, s.last, s.last_len) <= 0) ||
		    sc_keycmp(next, next_len, s.start, strlen(s.start)) < 0 ||
		    (s.end[0] != '\0' && sc_keycmp(next, next_len, s.end, strlen(s.end)) >= 0))
			sc_error(run, "scan [%s, %s) limit %zu: continuation '%.*s' out of place",
			         s.start, s.end, s.limit, (int)(next_len < 64 ? next_len : 64),
			         (const char *)next);
		else
			lin_scan_limit(run->hist, s.id, next, next_len);
	}
	raftkv_free(next);
	lin_complete(run->hist, s.id, sc_outcome(c, "scan", rv, false), NULL, 0);
}

/* A get of an append-only key: mostly of the keys taking appends now, sometimes of any earlier
 * one (which must have survived every crash since). */
static void sc_get_akey(sc_client *c)
{
	uint32_t n = sc_akey_count(c->run);
	char key[SC_KEY_MAX];
	uint32_t k;

	if (n == 0)
		n = c->run->akeys;
	if (sc_below(&c->rng, 4) == 0 || n <= c->run->akeys)
		k = sc_below(&c->rng, n);
	else
		k = n - c->run->akeys + sc_below(&c->rng, c->run->akeys);
	sc_akey_name(k, key);
	sc_get(c, key);
}

/* One random operation: mostly writes and reads on the mixed keys, a third on append-only
 * keys. */
static void sc_client_op(sc_client *c)
{
	unsigned r = sc_below(&c->rng, 100);
	const char *mkey = sc_mkeys[sc_below(&c->rng, SC_MIXED_KEYS)];
	uint64_t n;
	size_t hid;

	c->ops++;
	if (r < 18)
		sc_put(c, mkey);
	else if (r < 32)
		(void)sc_append_token(c, mkey, false, &n, &hid);
	else if (r < 37)
		sc_delete(c, mkey);
	else if (r < 55)
		sc_get(c, mkey);
	else if (r < 65)
		sc_scan(c);
	else if (r < 87)
		sc_append_only(c);
	else
		sc_get_akey(c);
}

static void *sc_client_main(void *arg)
{
	sc_client *c = arg;

	while (!atomic_load(&c->run->stop))
		sc_client_op(c);
	return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Faults                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void sc_check_rv(sc_run *run, const char *what, int rv)
{
	if (rv != RAFTKV_OK)
		sc_error(run, "%s returned %s (%d)", what, raftkv_strerror(rv), rv);
}

/* Adds node id's counters to the bank, before it stops (its counters restart from zero). A
 * snapshot counted between this read and the stop is lost: the totals can only be low. */
static void sc_bank(sc_run *run, uint64_t id)
{
	raftkv_status st;

	if (raftkv_node_status(run->kv, id, &st) != RAFTKV_OK || st.role == RAFTKV_ROLE_STOPPED)
		return;
	pthread_mutex_lock(&run->mu);
	run->banked_sent += st.snapshots_sent;
	run->banked_received += st.snapshots_received;
	run->banked_fsyncs += st.fsyncs;
	pthread_mutex_unlock(&run->mu);
}

static void sc_set_unreliable(sc_run *run)
{
	sc_check_rv(run, "raftkv_set_drop_rate", raftkv_set_drop_rate(run->kv, 0.1));
	sc_check_rv(run, "raftkv_set_duplicate_rate", raftkv_set_duplicate_rate(run->kv, 0.05));
	sc_check_rv(run, "raftkv_set_reorder", raftkv_set_reorder(run->kv, 0.1, 20));
}

/* Every 100-300 ms: a random split (a random group of 1..4 nodes against the rest, so one
 * side always holds a majority), or one time in four a heal. raftkv_heal also clears the
 * rates, so an unreliable row sets them again. */
static void *sc_partitioner_main(void *arg)
{
	sc_run *run = arg;
	uint64_t rng = run->seed ^ (0x5bd1e995ull * (run->round + 1)) ^ 0xabcdefull;
	uint64_t ids[SC_NODES];

	pthread_mutex_lock(&run->mu);
	for (;;) {
		uint64_t wait_ms = 100 + sc_below(&rng, 201);

		sc_wait_until(run, sc_now_ns() + wait_ms * 1000000u, &run->stop_mu);
		if (run->stop_mu)
			break;
		pthread_mutex_unlock(&run->mu);
		if (sc_below(&rng, 4) == 0) {
			run->heals++;
			sc_check_rv(run, "raftkv_heal", raftkv_heal(run->kv));
			if (run->row->unreliable)
				sc_set_unreliable(run);
		} else {
			size_t k = 1 + sc_below(&rng, SC_NODES - 1);

			for (size_t i = 0; i < SC_NODES; i++)
				ids[i] = i + 1;
			for (size_t i = SC_NODES - 1; i > 0; i--) {
				size_t j = sc_below(&rng, (unsigned)i + 1);
				uint64_t t = ids[i];

				ids[i] = ids[j];
				ids[j] = t;
			}
			run->partitions++;
			sc_check_rv(run, "raftkv_partition", raftkv_partition(run->kv, ids, k));
		}
		pthread_mutex_lock(&run->mu);
	}
	pthread_mutex_unlock(&run->mu);
	return NULL;
}

/*
 * A power cut of the whole cluster: the disk refuses writes first (so nothing reaches it while
 * the nodes go down), every node crash-stops, the fault VFS drops every unsynced write, and
 * every node restarts from its database alone. A node that cannot start lost or corrupted data
 * it had synced (or never synced data it relied on).
 */
static bool sc_crash_restart(sc_run *run)
{
	bool ok = true;
	int rc;

	for (uint64_t id = 1; id <= SC_NODES; id++)
		sc_bank(run, id);
	vfs_fault_power_off();
	for (uint64_t id = 1; id <= SC_NODES; id++)
		sc_check_rv(run, "raftkv_node_stop", raftkv_node_stop(run->kv, id));
	rc = vfs_fault_crash(VFS_FAULT_CRASH_DROP);
	if (rc != SQLITE_OK) {
		sc_error(run,
		         "round %u: vfs_fault_crash returned %d (a file still open after every "
		         "node stopped?)",
		         run->round, rc);
		vfs_fault_clear();
		ok = false;
	}
	for (uint64_t id = 1; id <= SC_NODES; id++) {
		int rv = raftkv_node_start(run->kv, id);

		if (rv != RAFTKV_OK) {
			sc_error(run,
			         "round %u: node %" PRIu64
			         " does not restart after a power cut: %s "
			         "(%d): it lost or corrupted durable data",
			         run->round, id, raftkv_strerror(rv), rv);
			ok = false;
		}
	}
	return ok;
}

static bool sc_wait_leader(sc_run *run, const char *when)
{
	uint64_t leader = 0;
	int rv = raftkv_wait_leader(run->kv, SC_LEADER_MS, &leader);

	if (rv == RAFTKV_OK && leader >= 1 && leader <= SC_NODES)
		return true;
	sc_error(run, "%s: no leader within %u ms (%s, leader %" PRIu64 ")", when, SC_LEADER_MS,
	         raftkv_strerror(rv), leader);
	sc_print_status(run);
	return false;
}

/* ------------------------------------------------------------------------------------------ */
/* The lagger and the GC bound (scenario_opts)                                                */
/* ------------------------------------------------------------------------------------------ */

#define SC_LAG_SLICE_MS 50u /* the lagger's wait re-checks the end of the round this often */

/* The node the lagger left behind. Owned by sc_lagger_main. */
typedef struct sc_lag {
	sc_run *run;
	uint64_t id;
	bool stopped;  /* crash-stopped, else isolated */
	uint64_t last; /* its last index, when stopped (an isolated node's is read each time) */
	bool passed;   /* the leader's log no longer holds the entry after `last` */
} sc_lag;

/* cluster_wait's predicate: the leader compacted past the lagging node's log, so only a
 * snapshot can catch it up (Raft dissertation §5.1: InstallSnapshot when the leader already
 * discarded the next entry it would send); or the round is over. */
static bool sc_lag_passed(void *ctx, raftkv *kv)
{
	sc_lag *l = ctx;
	uint64_t leader = raftkv_leader(kv), last = l->last;
	raftkv_status st, lst;

	if (atomic_load(&l->run->stop))
		return true;
	if (leader == 0 || leader == l->id || raftkv_node_status(kv, leader, &st) != RAFTKV_OK)
		return false;
	if (!l->stopped) {
		if (raftkv_node_status(kv, l->id, &lst) != RAFTKV_OK)
			return false;
		last = lst.last_index;
	}
	l->passed = st.first_index > last + 1;
	return l->passed;
}

/* A random node: any node when it will be crash-stopped, a non-leader when it will be
 * isolated (an isolated leader would still take client writes into its own log). */
static uint64_t sc_lag_pick(sc_run *run, uint64_t *rng, bool stopped)
{
	uint64_t leader = stopped ? 0 : raftkv_leader(run->kv);
	uint64_t id = 1 + sc_below(rng, SC_NODES);

	if (id == leader)
		id = id % SC_NODES + 1;
	return id;
}

/* One round's lagger (scenario_opts.lagger): see scenario.h. */
static void *sc_lagger_main(void *arg)
{
	sc_run *run = arg;
	uint64_t rng = run->seed ^ (0x9e3779b97f4a7c15ull * (run->round + 11)) ^ 0x1a66e4ull;
	uint64_t t0 = sc_now_ns();
	uint64_t back_ns = t0 + (uint64_t)run->round_ms * 900000u;
	sc_lag l = {.run = run, .stopped = run->row->persist || run->row->partitions};
	raftkv_status st;

	pthread_mutex_lock(&run->mu);
	sc_wait_until(run, t0 + (uint64_t)run->round_ms * 100000u, &run->stop_mu);
	pthread_mutex_unlock(&run->mu);
	if (atomic_load(&run->stop))
		return NULL;
	l.id = sc_lag_pick(run, &rng, l.stopped);
	if (l.stopped) {
		/* Its last index once stopped: a reading taken before the stop misses what it
		 * appended meanwhile, and the leader would seem to have compacted past it too
		 * early. The handle keeps a stopped node's final status. */
		sc_bank(run, l.id);
		sc_check_rv(run, "raftkv_node_stop (lagger)", raftkv_node_stop(run->kv, l.id));
		if (raftkv_node_status(run->kv, l.id, &st) == RAFTKV_OK)
			l.last = st.last_index;
	} else {
		sc_check_rv(run, "raftkv_isolate (lagger)", raftkv_isolate(run->kv, l.id));
	}
	while (!l.passed && !atomic_load(&run->stop) && sc_now_ns() < back_ns)
		(void)cluster_wait(run->kv, sc_lag_passed, &l, SC_LAG_SLICE_MS);
	if (l.stopped) {
		int rv = raftkv_node_start(run->kv, l.id);

		if (rv != RAFTKV_OK)
			sc_error(run,
			         "round %u: lagging node %" PRIu64 " does not restart: %s (%d)",
			         run->round, l.id, raftkv_strerror(rv), rv);
	} else {
		sc_check_rv(run, "raftkv_heal (lagger)", raftkv_heal(run->kv));
		if (run->row->unreliable)
			sc_set_unreliable(run);
	}
	run->lags++;
	if (l.passed)
		run->lags_passed++;
	return NULL;
}

/* The worst node seen by sc_gc_within. */
typedef struct sc_gc {
	uint64_t bound; /* 2 * gc_threshold */
	uint64_t id, applied, first_index;
} sc_gc;

/* cluster_wait's predicate: on every running node, applied - truncated <= bound, where the
 * truncated index is first_index - 1. */
static bool sc_gc_within(void *ctx, raftkv *kv)
{
	sc_gc *g = ctx;
	raftkv_status st;
	bool ok = true;

	for (uint64_t id = 1; id <= SC_NODES; id++) {
		uint64_t truncated;

		if (raftkv_node_status(kv, id, &st) != RAFTKV_OK || st.role == RAFTKV_ROLE_STOPPED)
			continue;
		truncated = st.first_index > 0 ? st.first_index - 1 : 0;
		if (st.applied > truncated && st.applied - truncated > g->bound) {
			g->id = id;
			g->applied = st.applied;
			g->first_index = st.first_index;
			ok = false;
		}
	}
	return ok;
}

/* The GC bound of issue 5, once the workload of a round stopped. */
static void sc_check_gc(sc_run *run)
{
	sc_gc g = {.bound = 2 * run->kv->opts.gc_threshold};
	unsigned ticks = SCENARIO_GC_BOUND_TICKS;
	unsigned ms = ticks * run->kv->opts.tick_ms;

	if (cluster_wait(run->kv, sc_gc_within, &g, ms) == RAFTKV_OK)
		return;
	sc_error(run,
	         "round %u: the GC bound fails %u ticks after the workload stopped: node %" PRIu64
	         " has applied %" PRIu64 ", first index %" PRIu64 " (applied - truncated = %" PRIu64
	         " > 2 * gc_threshold = %" PRIu64 ")",
	         run->round, ticks, g.id, g.applied, g.first_index,
	         g.applied - (g.first_index > 0 ? g.first_index - 1 : 0), g.bound);
	sc_print_status(run);
}

/* ------------------------------------------------------------------------------------------ */
/* Rounds                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Runs one round: faults on, clients for round_ms, then heal and stop. */
static bool sc_round(sc_run *run)
{
	const sc_row *row = run->row;
	bool partitioner = false, lagger = false;
	char when[32];

	snprintf(when, sizeof(when), "round %u start", run->round);
	if (!sc_wait_leader(run, when))
		return false;
	if (row->unreliable)
		sc_set_unreliable(run);
	atomic_store(&run->stop, false);
	pthread_mutex_lock(&run->mu);
	run->stop_mu = false;
	pthread_mutex_unlock(&run->mu);
	for (unsigned i = 0; i < row->clients; i++) {
		sc_client *c = &run->clients[i];

		if (pthread_create(&c->thread, NULL, sc_client_main, c) != 0) {
			fprintf(stderr, "scenarios: pthread_create failed\n");
			abort();
		}
	}
	if (row->partitions) {
		if (pthread_create(&run->partitioner_thread, NULL, sc_partitioner_main, run) != 0)
			abort();
		partitioner = true;
	}
	if (run->opts.lagger) {
		if (pthread_create(&run->lagger_thread, NULL, sc_lagger_main, run) != 0)
			abort();
		lagger = true;
	}
	pthread_mutex_lock(&run->mu);
	sc_wait_until(run, sc_now_ns() + (uint64_t)run->round_ms * 1000000u, NULL);
	atomic_store(&run->stop, true);
	run->stop_mu = true;
	pthread_cond_broadcast(&run->cv);
	pthread_mutex_unlock(&run->mu);
	if (partitioner)
		pthread_join(run->partitioner_thread, NULL);
	if (lagger)
		pthread_join(run->lagger_thread, NULL); /* its node runs again */
	/* Heal first, so that calls in flight finish by retrying instead of timing out. */
	sc_check_rv(run, "raftkv_heal", raftkv_heal(run->kv));
	for (unsigned i = 0; i < row->clients; i++)
		pthread_join(run->clients[i].thread, NULL);
	if (run->opts.check_gc)
		sc_check_gc(run);
	if (row->persist)
		return sc_crash_restart(run);
	return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Final state                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* A key's value as the final, linearizable read saw it. */
typedef struct sc_final {
	char key[SC_KEY_MAX];
	bool known; /* a final read succeeded */
	bool present;
	void *val; /* owned (raftkv_free); NULL when absent or empty */
	size_t len;
} sc_final;

/* Reads key once the cluster is healed and idle, retrying an unknown outcome; recorded in the
 * history under SC_FINAL_CLIENT. */
static void sc_final_read(sc_run *run, sc_final *f)
{
	int rv = RAFTKV_TIMEOUT;

	for (unsigned i = 0; i < SC_FINAL_ATTEMPTS && !f->known; i++) {
		size_t id = lin_invoke(run->hist, SC_FINAL_CLIENT, LIN_GET, f->key, strlen(f->key),
		                       NULL, 0);

		rv = raftkv_get(run->kv, f->key, strlen(f->key), &f->val, &f->len);
		if (rv == RAFTKV_OK) {
			f->known = f->present = true;
			lin_complete(run->hist, id, LIN_OK, f->val != NULL ? f->val : "", f->len);
		} else if (rv == RAFTKV_NOT_FOUND) {
			f->known = true;
			lin_complete(run->hist, id, LIN_OK, NULL, 0);
		} else {
			lin_complete(run->hist, id, rv == RAFTKV_TIMEOUT ? LIN_UNKNOWN : LIN_FAIL,
			             NULL, 0);
		}
	}
	if (!f->known)
		sc_error(run, "final get of '%s' failed %u times, last with %s", f->key,
		         SC_FINAL_ATTEMPTS, raftkv_strerror(rv));
}

/* Parses "c.n" (decimal numbers) from p[0..len). */
static bool sc_parse_token(const char *p, size_t len, uint64_t *c, uint64_t *n)
{
	uint64_t *out = c;
	size_t digits = 0;

	*c = *n = 0;
	for (size_t i = 0; i < len; i++) {
		if (p[i] == '.' && out == c && digits > 0) {
			out = n;
			digits = 0;
		} else if (p[i] >= '0' && p[i] <= '9' && digits < 18) {
			*out = *out * 10 + (uint64_t)(p[i] - '0');
			digits++;
		} else {
			return false;
		}
	}
	return out == n && digits > 0;
}

/* The append of client c with token number n, or NULL. Numbers grow in issue order. */
static sc_append *sc_find_append(sc_client *c, uint64_t n, size_t *at)
{
	size_t lo = 0, hi = c->n_appends;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c->appends[mid].n < n)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == c->n_appends || c->appends[lo].n != n)
		return NULL;
	*at = lo;
	return &c->appends[lo];
}

/* Parses append-only key k's final value as tokens "|c.n|", counting each token's copies and
 * noting its position in the appends that issued it. Returns whether the value parsed; a
 * token this run never appended to k is an error. */
static bool sc_parse_tokens(sc_run *run, uint32_t k, const sc_final *f)
{
	const char *v = f->val;
	size_t len = f->present ? f->len : 0;
	size_t p = 0, ntok = 0;

	while (p < len) {
		const char *end = p + 1 < len ? memchr(v + p + 1, '|', len - p - 1) : NULL;
		uint64_t c, n;
		size_t at;
		sc_append *a;

		if (v[p] != '|' || end == NULL ||
		    !sc_parse_token(v + p + 1, (size_t)(end - v) - p - 1, &c, &n)) {
			sc_error(run,
			         "append-only key '%s': no token at byte %zu of its value '%.*s'",
			         f->key, p, (int)(len - p < 80 ? len - p : 80), v + p);
			return false;
		}
		a = c < run->row->clients ? sc_find_append(&run->clients[c], n, &at) : NULL;
		if (a == NULL || a->key != k) {
			sc_error(run,
			         "append-only key '%s' holds token |%" PRIu64 ".%" PRIu64
			         "|, never appended to it",
			         f->key, c, n);
		} else {
			a->copies++;
			a->pos = ntok;
		}
		ntok++;
		p = (size_t)(end - v) + 1;
	}
	return true;
}

/*
 * The exactly-once check (dissertation §6.3: a retried write applies at most once), over the
 * keys whose final value parsed (conclusive[k]): an acknowledged token appears exactly once,
 * an unknown one at most once, a failed one never; and each client's acknowledged tokens
 * appear in the order it issued them.
 */
static void sc_check_appends(sc_run *run, const bool *conclusive, uint32_t n_keys)
{
	size_t *prev = calloc(n_keys + 1, sizeof(*prev)); /* 1 + position of the last ack'd */

	if (prev == NULL)
		abort();
	for (unsigned c = 0; c < run->row->clients; c++) {
		const sc_client *cl = &run->clients[c];

		memset(prev, 0, (n_keys + 1) * sizeof(*prev));
		for (size_t i = 0; i < cl->n_appends; i++) {
			const sc_append *a = &cl->appends[i];
			const char *bad = NULL;
			char key[SC_KEY_MAX];

			if (a->key >= n_keys || !conclusive[a->key])
				continue;
			sc_akey_name(a->key, key);
			if (a->status == LIN_OK && a->copies != 1)
				bad = a->copies == 0 ? "acknowledged, but lost"
				                     : "acknowledged, duplicated";
			else if (a->status == LIN_UNKNOWN && a->copies > 1)
				bad = "unknown outcome, duplicated";
			else if (a->status == LIN_FAIL && a->copies != 0)
				bad = "failed (never sent), yet applied";
			if (bad != NULL)
				sc_error(run,
				         "append-only key '%s': token |%u.%" PRIu64
				         "| %s (%u copies)",
				         key, c, a->n, bad, a->copies);
			if (a->status != LIN_OK || a->copies != 1)
				continue;
			if (prev[a->key] > a->pos)
				sc_error(run,
				         "append-only key '%s': client %u's acknowledged token "
				         "|%u.%" PRIu64 "| precedes one it acknowledged earlier",
				         key, c, c, a->n);
			prev[a->key] = a->pos + 1;
		}
	}
	free(prev);
}

/*
 * Completes the appends to append-only keys whose outcome was unknown, left pending so far.
 * Nothing but appends ever touches those keys, so a token missing from a key's final value
 * (read after every client finished, and itself part of the checked history) was never
 * applied before that read: LIN_FAIL. This is what the checker would conclude on its own, but
 * only after trying every subset of the unknown appends, which with hundreds of them on a key
 * exhausts its budget. A token present, or a key whose final value is not known as tokens
 * (conclusive[k] false, or conclusive NULL), stays LIN_UNKNOWN.
 */
static void sc_resolve_unknown(sc_run *run, const bool *conclusive, uint32_t n_keys)
{
	for (unsigned c = 0; c < run->row->clients; c++) {
		sc_client *cl = &run->clients[c];

		for (size_t i = 0; i < cl->n_appends; i++) {
			sc_append *a = &cl->appends[i];
			bool absent = conclusive != NULL && a->key < n_keys && conclusive[a->key] &&
			              a->copies == 0;

			if (!a->pending)
				continue;
			lin_complete(run->hist, a->hid, absent ? LIN_FAIL : LIN_UNKNOWN, NULL, 0);
			a->pending = false;
		}
	}
}

/* cluster_wait's predicate: every node running and healthy, one leader that all know, and
 * every node's last index, commit and applied index equal. */
static bool sc_converged(void *ctx, raftkv *kv)
{
	uint64_t *index = ctx;
	raftkv_status st;
	uint64_t leader = 0, want = 0;

	for (uint64_t id = 1; id <= SC_NODES; id++) {
		if (raftkv_node_status(kv, id, &st) != RAFTKV_OK ||
		    st.role == RAFTKV_ROLE_STOPPED || st.failed != RAFTKV_OK)
			return false;
		if (id == 1) {
			want = st.commit;
			leader = st.leader;
		}
		if (st.commit != want || st.applied != want || st.last_index != want ||
		    st.leader != leader || leader == 0)
			return false;
		if ((st.role == RAFTKV_ROLE_LEADER) != (id == leader))
			return false;
	}
	*index = want;
	return true;
}

/* A node database's kv contents, serialized as "klen:key=vlen:value;" (owned buffer). */
typedef struct sc_dump {
	char *p;
	size_t len, cap;
} sc_dump;

static void sc_dump_add(sc_dump *d, const void *b, size_t n)
{
	if (d->len + n > d->cap) {
		size_t cap = d->cap ? d->cap : 4096;

		while (cap < d->len + n)
			cap *= 2;
		d->p = realloc(d->p, cap);
		if (d->p == NULL)
			abort();
		d->cap = cap;
	}
	memcpy(d->p + d->len, b, n);
	d->len += n;
}

static int sc_dump_cb(void *ctx, const void *key, size_t key_len, const void *value,
                      size_t value_len)
{
	char hdr[48];
	int n = snprintf(hdr, sizeof(hdr), "%zu:", key_len);

	sc_dump_add(ctx, hdr, (size_t)n);
	sc_dump_add(ctx, key, key_len);
	n = snprintf(hdr, sizeof(hdr), "=%zu:", value_len);
	sc_dump_add(ctx, hdr, (size_t)n);
	sc_dump_add(ctx, value, value_len);
	sc_dump_add(ctx, ";", 1);
	return 0;
}

/* Opens node id's database directly (the cluster is closed) and dumps its kv table and applied
 * index. For node 1 it also compares each final read with the stored value. */
static bool sc_dump_node(sc_run *run, uint64_t cluster_id, uint64_t id, sc_dump *d,
                         uint64_t *applied, const sc_final *finals, size_t n_finals)
{
	char path[400], err[256] = "";
	store_options so;
	store *s = NULL;
	int rv;

	snprintf(path, sizeof(path), "%s/node-%" PRIu64 ".db", run->dir, id);
	store_options_init(&so);
	so.cluster_id = cluster_id;
	so.node_id = id;
	so.sync = run->row->persist ? STORE_SYNC_FULL : STORE_SYNC_OFF;
	so.vfs = run->row->persist ? VFS_FAULT_NAME : NULL;
	rv = store_open(path, &so, &s, err, sizeof(err));
	if (rv != STORE_OK) {
		sc_error(run, "store_open(%s) after close: %s: %s", path, store_strerror(rv), err);
		return false;
	}
	*applied = store_applied_index(s);
	rv = store_scan(s, NULL, 0, NULL, 0, 0, sc_dump_cb, d, NULL, NULL);
	if (rv != STORE_OK)
		sc_error(run, "store_scan of node %" PRIu64 ": %s", id, store_strerror(rv));
	for (size_t i = 0; rv == STORE_OK && id == 1 && i < n_finals; i++) {
		const sc_final *f = &finals[i];
		void *v = NULL;
		size_t vlen = 0;
		int g = store_get(s, f->key, strlen(f->key), &v, &vlen);

		if (f->known && (g == STORE_OK) != f->present &&
		    (g == STORE_OK || g == STORE_ERR_NOT_FOUND))
			sc_error(run, "key '%s': the final read saw it %s, node 1 stores it %s",
			         f->key, f->present ? "present" : "absent",
			         g == STORE_OK ? "present" : "absent");
		else if (f->known && g == STORE_OK &&
		         (vlen != f->len || memcmp(v, f->val, vlen) != 0))
			sc_error(run, "key '%s': the final read and node 1's database differ",
			         f->key);
		else if (g != STORE_OK && g != STORE_ERR_NOT_FOUND)
			sc_error(run, "store_get of '%s' on node 1: %s", f->key, store_strerror(g));
		free(v);
	}
	store_close(s);
	return rv == STORE_OK;
}

/* Every node's database holds the same kv contents at the same applied index. */
static void sc_compare_stores(sc_run *run, uint64_t cluster_id, uint64_t index,
                              const sc_final *finals, size_t n_finals)
{
	sc_dump first = {0};
	uint64_t first_applied = 0;

	if (!sc_dump_node(run, cluster_id, 1, &first, &first_applied, finals, n_finals))
		goto out;
	if (first_applied != index)
		sc_error(run,
		         "node 1's database is at applied index %" PRIu64
		         ", its status said %" PRIu64,
		         first_applied, index);
	for (uint64_t id = 2; id <= SC_NODES; id++) {
		sc_dump d = {0};
		uint64_t applied = 0;

		if (sc_dump_node(run, cluster_id, id, &d, &applied, NULL, 0)) {
			size_t at = 0;

			while (at < d.len && at < first.len && d.p[at] == first.p[at])
				at++;
			if (applied != first_applied)
				sc_error(run,
				         "node %" PRIu64 " is at applied index %" PRIu64
				         ", node 1 at %" PRIu64,
				         id, applied, first_applied);
			if (d.len != first.len || at < d.len)
				sc_error(run,
				         "node %" PRIu64
				         "'s kv data differs from node 1's at byte %zu "
				         "(%zu vs %zu bytes): '%.60s' vs '%.60s'",
				         id, at, d.len, first.len, at < d.len ? d.p + at : "",
				         at < first.len ? first.p + at : "");
		}
		free(d.p);
	}
out:
	free(first.p);
}

/* ------------------------------------------------------------------------------------------ */
/* A scenario                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Aborts the process if the scenario is still running past its budget: a hang in the library
 * would otherwise stall the whole test run silently. */
static void *sc_watchdog_main(void *arg)
{
	sc_run *run = arg;
	uint64_t budget_s =
	    (uint64_t)run->rounds * (run->round_ms / 1000 + 1 + 4 * SC_REQUEST_TIMEOUT_MS / 1000 +
	                             SC_LEADER_MS / 1000) +
	    SC_CONVERGE_MS / 1000 + 300;

	pthread_mutex_lock(&run->mu);
	sc_wait_until(run, sc_now_ns() + budget_s * 1000000000u, &run->done);
	if (!run->done) {
		fprintf(stderr,
		        "scenario '%s' (seed %" PRIu64 ", RAFTKV_TEST_SEED=%" PRIu64
		        "): still running after %" PRIu64 " s: a hang; aborting\n",
		        run->row->name, run->seed, sc_base_seed(), budget_s);
		abort();
	}
	pthread_mutex_unlock(&run->mu);
	return NULL;
}

/* A directory for the run: $TMPDIR, else /dev/shm, else /tmp. */
static bool sc_mkdtemp(char *dir, size_t len)
{
	const char *base = getenv("TMPDIR");
	struct stat sb;

	if (base == NULL || *base == '\0')
		base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) &&
		               access("/dev/shm", W_OK) == 0
		           ? "/dev/shm"
		           : "/tmp";
	snprintf(dir, len, "%s/raftkv-scenario-%ld-XXXXXX", base, (long)getpid());
	return mkdtemp(dir) != NULL;
}

static void sc_rmdir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[600];

	while (d != NULL && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	if (d != NULL)
		closedir(d);
	rmdir(dir);
}

static void sc_options(sc_run *run, raftkv_options *o)
{
	uint64_t gc = sc_env_u64("RAFTKV_SCENARIO_GC", 256);

	raftkv_options_init(o);
	o->n_nodes = SC_NODES;
	o->tick_ms = SC_TICK_MS;
	o->election_ticks = 30;
	o->heartbeat_ticks = 3;
	/* Partition rows give up sooner than a partition lasts, so some outcomes are unknown and
	 * the checker's handling of them is exercised against the real cluster. */
	o->request_timeout_ms = run->row->partitions ? SC_SHORT_TIMEOUT_MS : SC_REQUEST_TIMEOUT_MS;
	o->sync = run->row->persist ? RAFTKV_SYNC_FULL : RAFTKV_SYNC_OFF;
	o->vfs = run->row->persist ? VFS_FAULT_NAME : NULL;
	o->seed = run->seed;
	if (run->opts.gc_threshold != 0) {
		o->gc_threshold = run->opts.gc_threshold;
		o->gc_trailing = run->opts.gc_trailing;
		o->gc_hard_limit = run->opts.gc_hard_limit;
	} else if (gc >= 4) {
		o->gc_threshold = gc;
		o->gc_trailing = gc / 4;
		o->gc_hard_limit = 2 * gc;
	}
	if (sc_env_u64("RAFTKV_SCENARIO_TRACE", 0) != 0)
		o->trace = sc_trace;
}

/* Sets up run (dir, history, keys, clients) for row. */
static bool sc_setup(sc_run *run, const sc_row *row, unsigned row_index, const scenario_opts *o)
{
	pthread_condattr_t ca;
	uint64_t s = sc_base_seed() ^ (0x9e3779b97f4a7c15ull * (row_index + 1));

	run->row = row;
	if (o != NULL)
		run->opts = *o;
	run->seed = sc_rand(&s) | 1;
	run->rounds = (unsigned)sc_env_u64("RAFTKV_SCENARIO_ROUNDS", 3);
	run->round_ms = (unsigned)sc_env_u64("RAFTKV_SCENARIO_MS", 1500);
	if (run->rounds == 0)
		run->rounds = 1;
	atomic_init(&run->stop, false);
	atomic_init(&run->errors, 0);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&run->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&run->mu, NULL);
	atomic_init(&run->akey_appends, 0);
	run->akeys = (2 * row->clients + 4) / 5;
	if (run->akeys < SC_APPEND_KEYS)
		run->akeys = SC_APPEND_KEYS;
	run->aepoch = (uint64_t)SC_APPEND_EPOCH / SC_APPEND_KEYS * run->akeys;
	run->hist = lin_history_new();
	if (run->hist == NULL)
		return false;
	for (unsigned i = 0; i < row->clients; i++) {
		run->clients[i].run = run;
		run->clients[i].id = i;
		run->clients[i].rng = run->seed ^ (0x2545f4914f6cdd1dull * (i + 1));
	}
	printf("\nscenario '%s': seed %" PRIu64 " (RAFTKV_TEST_SEED=%" PRIu64 " replays)\n",
	       row->name, run->seed, sc_base_seed());
	fflush(stdout);
	return sc_mkdtemp(run->dir, sizeof(run->dir));
}

static void sc_teardown(sc_run *run)
{
	for (unsigned i = 0; i < SC_MAX_CLIENTS; i++)
		free(run->clients[i].appends);
	if (run->hist != NULL)
		lin_history_free(run->hist);
	pthread_cond_destroy(&run->cv);
	pthread_mutex_destroy(&run->mu);
}

/* Sums the nodes' counters for the summary line: the bank (nodes stopped before) and every
 * running node's. */
static void sc_totals(sc_run *run, uint64_t index)
{
	raftkv_status st;

	run->final_index = index;
	pthread_mutex_lock(&run->mu);
	run->snapshots_sent = run->banked_sent;
	run->snapshots_received = run->banked_received;
	run->fsyncs = run->banked_fsyncs;
	pthread_mutex_unlock(&run->mu);
	for (uint64_t id = 1; id <= SC_NODES; id++) {
		if (raftkv_node_status(run->kv, id, &st) != RAFTKV_OK)
			continue;
		run->snapshots_sent += st.snapshots_sent;
		run->snapshots_received += st.snapshots_received;
		run->fsyncs += st.fsyncs;
	}
}

/* After the last round: final reads, tokens, convergence, then close and compare the
 * databases. Closes run->kv. */
static void sc_final_checks(sc_run *run)
{
	uint32_t n_akeys = sc_akey_count(run);
	size_t n = SC_MIXED_KEYS + n_akeys;
	sc_final *finals = calloc(n, sizeof(*finals));
	bool *conclusive = calloc(n_akeys + 1, sizeof(*conclusive));
	uint64_t index = 0, cluster_id = run->kv->cluster_id;
	bool converged;

	if (finals == NULL || conclusive == NULL)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (i < SC_MIXED_KEYS)
			snprintf(finals[i].key, SC_KEY_MAX, "%s", sc_mkeys[i]);
		else
			sc_akey_name((uint32_t)(i - SC_MIXED_KEYS), finals[i].key);
		sc_final_read(run, &finals[i]);
	}
	for (uint32_t k = 0; k < n_akeys; k++)
		if (finals[SC_MIXED_KEYS + k].known)
			conclusive[k] = sc_parse_tokens(run, k, &finals[SC_MIXED_KEYS + k]);
	sc_check_appends(run, conclusive, n_akeys);
	sc_resolve_unknown(run, conclusive, n_akeys);
	free(conclusive);
	converged = cluster_wait(run->kv, sc_converged, &index, SC_CONVERGE_MS) == RAFTKV_OK;
	if (!converged) {
		sc_error(run, "nodes did not converge to one applied index within %u ms",
		         SC_CONVERGE_MS);
		sc_print_status(run);
	}
	sc_totals(run, index);
	if (run->opts.require_snapshot &&
	    (run->snapshots_sent == 0 || run->snapshots_received == 0))
		sc_error(run,
		         "no snapshot was sent and installed (sent %" PRIu64 ", received %" PRIu64
		         "; the lagger left a node behind in %" PRIu64
		         " rounds, the leader compacted past it in %" PRIu64 ")",
		         run->snapshots_sent, run->snapshots_received, run->lags, run->lags_passed);
	raftkv_close(run->kv);
	run->kv = NULL;
	if (converged)
		sc_compare_stores(run, cluster_id, index, finals, n);
	for (size_t i = 0; i < n; i++)
		raftkv_free(finals[i].val);
	free(finals);
}

/* Checks the whole history; prints the statistics line of the scenario. */
static void sc_check_history(sc_run *run, uint64_t started_ns)
{
	lin_check_options o;
	lin_stats st = {0};
	char *why = NULL;
	lin_result r;
	uint64_t ok = 0, unknown = 0, failed = 0, busy = 0, ops = 0;
	uint64_t t0 = sc_now_ns();

	sc_resolve_unknown(run, NULL, 0); /* any left: the run ended early */
	lin_check_options_init(&o);
	o.log = stderr;
	r = lin_check(run->hist, &o, &st, &why);
	if (r != LIN_RESULT_OK)
		sc_error(run, "the history is not proven linearizable: %s: %s", lin_result_name(r),
		         why != NULL ? why : "(no explanation)");
	free(why);
	for (unsigned i = 0; i < run->row->clients; i++) {
		const sc_client *c = &run->clients[i];

		ops += c->ops;
		ok += c->ok;
		unknown += c->unknown;
		failed += c->failed;
		busy += c->busy;
	}
	printf("scenario '%s': %u rounds x %u ms: %" PRIu64 " client ops (ok %" PRIu64
	       ", unknown %" PRIu64 ", failed %" PRIu64 ", busy %" PRIu64 "), partitions %" PRIu64
	       ", heals %" PRIu64 ", lags %" PRIu64 " (compacted past %" PRIu64
	       "); applied %" PRIu64 ", snapshots sent %" PRIu64 " received %" PRIu64
	       "; checker: %zu ops, %zu checked, %zu keys, %" PRIu64
	       " steps, max memo %zu, %.2f s; total %.1f s\n",
	       run->row->name, run->rounds, run->round_ms, ops, ok, unknown, failed, busy,
	       run->partitions, run->heals, run->lags, run->lags_passed, run->final_index,
	       run->snapshots_sent, run->snapshots_received, st.ops, st.checked, st.keys, st.steps,
	       st.max_memo, (double)(sc_now_ns() - t0) / 1e9,
	       (double)(sc_now_ns() - started_ns) / 1e9);
	fflush(stdout);
	if (ok < SC_MIN_OK)
		sc_error(run, "only %" PRIu64 " client operations succeeded (at least %u needed)",
		         ok, SC_MIN_OK);
	CU_ASSERT(ok >= SC_MIN_OK);
}

void scenario_run(const scenario_row *row, unsigned row_index, const scenario_opts *o)
{
	sc_run *run = calloc(1, sizeof(*run));
	char err[256] = "";
	raftkv_options opts;
	uint64_t started = sc_now_ns();
	int rv;

	if (row->clients == 0 || row->clients > SC_MAX_CLIENTS) {
		CU_FAIL("scenario row: clients out of range");
		free(run);
		return;
	}
	CU_ASSERT_PTR_NOT_NULL_FATAL(run);
	if (!sc_setup(run, row, row_index, o)) {
		CU_FAIL("scenario setup (memory, temporary directory)");
		goto out;
	}
	if (row->persist)
		vfs_fault_reset(run->seed);
	sc_options(run, &opts);
	rv = raftkv_open(run->dir, &opts, &run->kv, err, sizeof(err));
	if (rv != RAFTKV_OK) {
		sc_error(run, "raftkv_open(%s): %s: %s", run->dir, raftkv_strerror(rv), err);
		goto out;
	}
	if (pthread_create(&run->watchdog, NULL, sc_watchdog_main, run) != 0)
		abort();
	for (run->round = 0; run->round < run->rounds; run->round++)
		if (!sc_round(run))
			break;
	if (run->round == run->rounds && sc_wait_leader(run, "final checks"))
		sc_final_checks(run);
	if (run->kv != NULL) {
		raftkv_close(run->kv);
		run->kv = NULL;
	}
	sc_check_history(run, started);
	pthread_mutex_lock(&run->mu);
	run->done = true;
	pthread_cond_broadcast(&run->cv);
	pthread_mutex_unlock(&run->mu);
	pthread_join(run->watchdog, NULL);
out:
	if (atomic_load(&run->errors) == 0)
		sc_rmdir(run->dir);
	else if (run->dir[0] != '\0')
		fprintf(stderr, "scenario '%s': files kept in %s\n", row->name, run->dir);
	if (row->persist)
		vfs_fault_reset(0);
	CU_ASSERT_EQUAL(atomic_load(&run->errors), 0);
	sc_teardown(run);
	free(run);
}

/* ------------------------------------------------------------------------------------------ */
/* The matrix                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static const sc_row sc_rows[] = {
    {"basic", 1, false, false, false},
    {"concurrent", 5, false, false, false},
    {"unreliable", 5, true, false, false},
    {"many partitions, one client", 1, false, false, true},
    {"many partitions, many clients", 5, false, false, true},
    {"persist, one client", 1, false, true, false},
    {"persist, concurrent", 5, false, true, false},
    {"persist, concurrent, unreliable", 5, true, true, false},
    {"persist, partition", 5, false, true, true},
    {"persist, partition, unreliable", 5, true, true, true},
};

#define SC_ROW_TEST(i)                                                                             \
	static void test_row_##i(void)                                                             \
	{                                                                                          \
		scenario_run(&sc_rows[i], i, NULL);                                                \
	}
SC_ROW_TEST(0)
SC_ROW_TEST(1)
SC_ROW_TEST(2)
SC_ROW_TEST(3)
SC_ROW_TEST(4)
SC_ROW_TEST(5)
SC_ROW_TEST(6)
SC_ROW_TEST(7)
SC_ROW_TEST(8)
SC_ROW_TEST(9)

int scenario_suite_init(void)
{
	if (vfs_fault_register(NULL) != SQLITE_OK)
		return -1;
	vfs_fault_set_host_sync(false);
	return 0;
}

int scenario_suite_clean(void)
{
	vfs_fault_set_host_sync(true);
	vfs_fault_unregister();
	return 0;
}

void test_register_scenarios(void)
{
	static void (*const tests[])(void) = {test_row_0, test_row_1, test_row_2, test_row_3,
	                                      test_row_4, test_row_5, test_row_6, test_row_7,
	                                      test_row_8, test_row_9};
	CU_pSuite s = CU_add_suite("scenarios", scenario_suite_init, scenario_suite_clean);

	for (size_t i = 0; i < sizeof(sc_rows) / sizeof(sc_rows[0]); i++)
		CU_add_test(s, sc_rows[i].name, tests[i]);
}
