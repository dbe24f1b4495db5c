/* test_snapshots.c - CUnit suite "snapshots": log GC and snapshot transfer in whole clusters. */
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "cluster_fixture.h"
#include "raftkv.h"
#include "scenario.h"
#include "store/store.h"
#include "suites.h"

/*
 * Issue 5's cluster-level tests:
 *   - the 2C matrix over the scenario harness (scenario.h), with a log GC policy small enough
 *     that compaction and snapshots happen all the time, a lagging node in every round, and
 *     the GC bound and "at least one snapshot installed" checked on top of the harness's own
 *     checks (linearizability, exactly-once appends, convergence of every database);
 *   - the one-snapshot test: a 3-node cluster with gc_threshold 10, one node cut off while
 *     the others write and delete, then healed: it catches up through a snapshot, its
 *     truncated index never moves backwards, and its own database (read with the store API
 *     while it is stopped) holds the data, also after a restart;
 *   - the same catch-up with 30% of the snapshot chunks corrupted on the wire.
 * The soak knobs are the scenario suite's (RAFTKV_SCENARIO_ROUNDS, RAFTKV_SCENARIO_MS);
 * RAFTKV_TEST_SEED replays a run.
 */

/* ------------------------------------------------------------------------------------------ */
/* The 2C matrix                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* gc_threshold 50 (trailing 10, hard limit 100, the most allowed): every round compacts many
 * times, and a node left behind for about a hundred entries needs a snapshot. Not 100: the
 * unreliable rows commit only 150-250 entries per 1.5 s round (each lost client request costs
 * an election timeout), too few for a leader to pass a hard limit of 200 while the lagging
 * node is away. */
static const scenario_opts sn_2c_opts = {
    .gc_threshold = 50,
    .gc_trailing = 10,
    .gc_hard_limit = 100,
    .lagger = true,
    .check_gc = true,
    .require_snapshot = true,
};

/* Issue 5's table. Crash-restart is the harness's power cut of every node after each round
 * plus the lagger's crash-stop of one node within it. */
static const scenario_row sn_rows[] = {
    {"snapshot recover", 1, false, true, false},
    {"snapshot recover, many clients", 20, false, true, false},
    {"snapshot unreliable", 5, true, false, false},
    {"snapshot unreliable recover", 5, true, true, false},
    {"snapshot unreliable recover, concurrent partition", 5, true, true, true},
};

/* Seeds of these rows differ from the scenarios suite's rows 0..9. */
#define SN_ROW_SALT 100u

#define SN_ROW_TEST(i)                                                                             \
	static void test_2c_row_##i(void)                                                          \
	{                                                                                          \
		scenario_run(&sn_rows[i], SN_ROW_SALT + i, &sn_2c_opts);                           \
	}
SN_ROW_TEST(0)
SN_ROW_TEST(1)
SN_ROW_TEST(2)
SN_ROW_TEST(3)
SN_ROW_TEST(4)

/* ------------------------------------------------------------------------------------------ */
/* A small cluster with a lagging node                                                        */
/* ------------------------------------------------------------------------------------------ */

#define SN_NODES     3u
#define SN_PRE_KEYS  5u  /* "pre0".."pre4", written while every node runs */
#define SN_LAG_KEYS  40u /* "k00".."k39", written while the lagging node is away */
#define SN_VALUE_MAX 1024u
#define SN_KEY_MAX   16u
#define SN_ATTEMPTS  5u /* tries of one write that times out */

/* The expected contents: every key the tests write, its final value, or absent. */
typedef struct sn_expect {
	char key[SN_KEY_MAX];
	char val[SN_VALUE_MAX];
	size_t len;
	bool present;
} sn_expect;

/* "pre0".."pre4", "doomed", then "k00".."k39". */
#define SN_DOOMED    SN_PRE_KEYS
#define SN_N_EXPECT  (SN_PRE_KEYS + 1 + SN_LAG_KEYS)
#define SN_LAG_FIRST (SN_PRE_KEYS + 1)

/* A test's cluster and what it observed of the lagging node. Owned by the test. */
typedef struct sn_fix {
	char dir[256];
	raftkv *kv;          /* owned until raftkv_close; NULL after */
	uint64_t cluster_id; /* kv->cluster_id, for opening a node's database directly */
	size_t value_len;    /* bytes of each "k.." value */
	uint64_t lag;        /* the lagging node */
	uint64_t lag_last;   /* its last index when it went away */
	uint64_t target;     /* applied index of the leader after the last write */
	sn_expect expect[SN_N_EXPECT];
	/* The lagging node's first_index, sampled at every status change any wait saw (and
	 * after every write); 0 (not yet published) is skipped. */
	uint64_t first_max;
	uint64_t samples;
	bool backwards;
	uint64_t back_from, back_to;
	/* The lagging node's snapshot counters once it caught up (a restart zeroes them). */
	uint64_t received, received_bytes;
	/* The worst node seen by sn_goal_gc_bound. */
	uint64_t gc_id, gc_applied, gc_first;
} sn_fix;

/* Records the lagging node's first_index: the truncated index (first_index - 1) must never
 * move backwards, across snapshot installs, compactions and restarts. */
static void sn_sample(sn_fix *f, raftkv *kv)
{
	raftkv_status st;

	if (raftkv_node_status(kv, f->lag, &st) != RAFTKV_OK || st.role == RAFTKV_ROLE_STOPPED ||
	    st.first_index == 0)
		return;
	f->samples++;
	if (st.first_index >= f->first_max) {
		f->first_max = st.first_index;
	} else if (!f->backwards) {
		f->backwards = true;
		f->back_from = f->first_max;
		f->back_to = st.first_index;
	}
}

/* A goal of sn_wait. */
typedef bool (*sn_goal)(sn_fix *f, raftkv *kv);

typedef struct sn_wait_ctx {
	sn_fix *f;
	sn_goal goal;
} sn_wait_ctx;

static bool sn_wait_pred(void *ctx, raftkv *kv)
{
	sn_wait_ctx *w = ctx;

	sn_sample(w->f, kv);
	return w->goal(w->f, kv);
}

/* Waits up to cf_wait_ms() for goal, sampling the lagging node on every status change. */
static bool sn_wait(sn_fix *f, sn_goal goal)
{
	sn_wait_ctx w = {f, goal};

	return cluster_wait(f->kv, sn_wait_pred, &w, cf_wait_ms()) == RAFTKV_OK;
}

/* The leader's log no longer holds the entry after the lagging node's last one: only a
 * snapshot can catch it up (Raft paper §7). The hard limit makes this happen. */
static bool sn_goal_compacted(sn_fix *f, raftkv *kv)
{
	uint64_t leader = raftkv_leader(kv);

	if (leader == 0 || leader == f->lag)
		return false;
	return cf_status(kv, leader).first_index > f->lag_last + 1;
}

/* Every node runs, healthy, a leader exists, and every log is fully committed and applied at
 * one last index: nothing is on its way to the lagging node. */
static bool sn_goal_settled(sn_fix *f, raftkv *kv)
{
	raftkv_status first = cf_status(kv, 1);
	bool leader = false;

	(void)f;
	for (uint64_t id = 1; id <= SN_NODES; id++) {
		raftkv_status st = cf_status(kv, id);

		if (st.role < 0 || st.role == RAFTKV_ROLE_STOPPED || st.failed != RAFTKV_OK ||
		    st.last_index != first.last_index || st.commit != st.last_index ||
		    st.applied != st.last_index)
			return false;
		leader |= st.role == RAFTKV_ROLE_LEADER;
	}
	return leader;
}

/* The lagging node runs, healthy, and applied everything written. */
static bool sn_goal_caught_up(sn_fix *f, raftkv *kv)
{
	raftkv_status st = cf_status(kv, f->lag);

	return st.role >= 0 && st.role != RAFTKV_ROLE_STOPPED && st.failed == RAFTKV_OK &&
	       st.applied >= f->target;
}

/* Issue 5's GC bound on every running node: applied - truncated <= 2 * gc_threshold. */
static bool sn_goal_gc_bound(sn_fix *f, raftkv *kv)
{
	uint64_t bound = 2 * kv->opts.gc_threshold;
	bool ok = true;

	for (uint64_t id = 1; id <= SN_NODES; id++) {
		raftkv_status st = cf_status(kv, id);
		uint64_t truncated = st.first_index > 0 ? st.first_index - 1 : 0;

		if (st.role < 0 || st.role == RAFTKV_ROLE_STOPPED)
			continue;
		if (st.applied > truncated && st.applied - truncated > bound) {
			f->gc_id = id;
			f->gc_applied = st.applied;
			f->gc_first = st.first_index;
			ok = false;
		}
	}
	return ok;
}

static void sn_print_status(raftkv *kv)
{
	for (uint64_t id = 1; id <= SN_NODES; id++) {
		raftkv_status st = cf_status(kv, id);

		fprintf(stderr,
		        "  node %" PRIu64 ": role %d term %" PRIu64 " leader %" PRIu64
		        " commit %" PRIu64 " applied %" PRIu64 " log [%" PRIu64 ", %" PRIu64
		        "] snapshots sent %" PRIu64 " received %" PRIu64 " (%" PRIu64
		        " bytes) failed %d %s\n",
		        id, st.role, st.term, st.leader, st.commit, st.applied, st.first_index,
		        st.last_index, st.snapshots_sent, st.snapshots_received,
		        st.snapshot_bytes_received, st.failed, st.failure);
	}
}

/* The value of "k<i>": value_len bytes (at most SN_VALUE_MAX), "k<i>:" then letters that
 * depend on i. */
static size_t sn_lag_value(size_t i, size_t value_len, char out[SN_VALUE_MAX])
{
	int n = snprintf(out, SN_VALUE_MAX, "k%02zu:", i);

	if (value_len > SN_VALUE_MAX)
		value_len = SN_VALUE_MAX;

	for (size_t j = (size_t)n; j < value_len; j++)
		out[j] = (char)('a' + (i * 7 + j * 13) % 26);
	return value_len > (size_t)n ? value_len : (size_t)n;
}

/* Fills f->expect with the keys and the values they will hold at the end. */
static void sn_expect_init(sn_fix *f)
{
	for (size_t i = 0; i < SN_N_EXPECT; i++) {
		sn_expect *e = &f->expect[i];

		e->present = i != SN_DOOMED;
		if (i < SN_PRE_KEYS) {
			snprintf(e->key, sizeof e->key, "pre%zu", i);
			/* pre0 is overwritten while the node is away. */
			e->len = (size_t)snprintf(e->val, sizeof e->val, "pre%zu-%s", i,
			                          i == 0 ? "second" : "first");
		} else if (i == SN_DOOMED) {
			snprintf(e->key, sizeof e->key, "doomed");
		} else {
			snprintf(e->key, sizeof e->key, "k%02zu", i - SN_LAG_FIRST);
			e->len = sn_lag_value(i - SN_LAG_FIRST, f->value_len, e->val);
		}
	}
}

/* A put through the API, retried when its outcome is unknown (a put is idempotent). */
static bool sn_put(sn_fix *f, const char *key, const void *val, size_t len)
{
	int rv = RAFTKV_TIMEOUT;

	for (unsigned i = 0; i < SN_ATTEMPTS && rv == RAFTKV_TIMEOUT; i++)
		rv = raftkv_put(f->kv, key, strlen(key), val, len);
	if (rv != RAFTKV_OK)
		fprintf(stderr, "\nput %s: %s\n", key, raftkv_strerror(rv));
	sn_sample(f, f->kv);
	return rv == RAFTKV_OK;
}

/* Deletes key; a retry may find it gone already (RAFTKV_NOT_FOUND), which is fine. */
static bool sn_delete(sn_fix *f, const char *key)
{
	int rv = raftkv_delete(f->kv, key, strlen(key));

	for (unsigned i = 1; i < SN_ATTEMPTS && rv == RAFTKV_TIMEOUT; i++) {
		rv = raftkv_delete(f->kv, key, strlen(key));
		if (rv == RAFTKV_NOT_FOUND)
			rv = RAFTKV_OK;
	}
	if (rv != RAFTKV_OK)
		fprintf(stderr, "\ndelete %s: %s\n", key, raftkv_strerror(rv));
	sn_sample(f, f->kv);
	return rv == RAFTKV_OK;
}

/* Opens the cluster: 3 nodes, log GC at 10 entries (2 trailing, hard limit 20), chunk_size
 * bytes per snapshot chunk. */
static bool sn_open(sn_fix *f, const char *tag, size_t chunk_size, size_t value_len)
{
	raftkv_options o;

	memset(f, 0, sizeof *f);
	f->value_len = value_len;
	sn_expect_init(f);
	cf_options(&o, SN_NODES);
	o.gc_threshold = 10;
	o.gc_trailing = 2;
	o.gc_hard_limit = 20;
	o.snapshot_chunk_size = chunk_size;
	o.snapshot_window = 4;
	if (!cf_mkdtemp(f->dir, sizeof f->dir, tag))
		return false;
	f->kv = cf_open(f->dir, &o);
	if (f->kv == NULL)
		return false;
	f->cluster_id = f->kv->cluster_id;
	return true;
}

/* Writes "pre0".."pre4" and "doomed" (pre0 with its first value), and waits until every node
 * applied them, so that the lagging node holds "doomed" before it goes away. */
static bool sn_write_pre(sn_fix *f)
{
	for (size_t i = 0; i < SN_PRE_KEYS; i++) {
		char v[32];
		int n = snprintf(v, sizeof v, "pre%zu-first", i);

		if (!sn_put(f, f->expect[i].key, v, (size_t)n))
			return false;
	}
	if (!sn_put(f, "doomed", "soon gone", 9))
		return false;
	return cf_wait_converged(f->kv, NULL, 0, cf_wait_ms());
}

/* While the lagging node is away: "k00".."k39", the delete of "doomed", pre0's new value.
 * Then f->target is the leader's applied index. */
static bool sn_write_lagging(sn_fix *f)
{
	uint64_t leader;

	for (size_t i = SN_LAG_FIRST; i < SN_N_EXPECT; i++) {
		const sn_expect *e = &f->expect[i];

		if (!sn_put(f, e->key, e->val, e->len))
			return false;
		if (i == SN_LAG_FIRST + SN_LAG_KEYS / 2 && !sn_delete(f, "doomed"))
			return false;
	}
	if (!sn_put(f, "pre0", f->expect[0].val, f->expect[0].len))
		return false;
	if (raftkv_wait_leader(f->kv, cf_wait_ms(), &leader) != RAFTKV_OK || leader == f->lag)
		return false;
	f->target = cf_status(f->kv, leader).applied;
	return true;
}

/* Every expected key through the API (linearizable reads, at whichever node leads). */
static void sn_check_api(sn_fix *f, const char *when)
{
	for (size_t i = 0; i < SN_N_EXPECT; i++) {
		const sn_expect *e = &f->expect[i];
		void *v = NULL;
		size_t len = 0;
		int rv = raftkv_get(f->kv, e->key, strlen(e->key), &v, &len);

		if (e->present) {
			CU_ASSERT_EQUAL(rv, RAFTKV_OK);
			if (rv == RAFTKV_OK) {
				CU_ASSERT(len == e->len && memcmp(v, e->val, len) == 0);
				if (len != e->len || memcmp(v, e->val, len) != 0)
					fprintf(stderr, "\n%s: key %s: wrong value (%zu bytes)\n",
					        when, e->key, len);
			} else {
				fprintf(stderr, "\n%s: get %s: %s\n", when, e->key,
				        raftkv_strerror(rv));
			}
		} else {
			CU_ASSERT_EQUAL(rv, RAFTKV_NOT_FOUND);
			if (rv != RAFTKV_NOT_FOUND)
				fprintf(stderr, "\n%s: get %s (deleted): %s\n", when, e->key,
				        raftkv_strerror(rv));
		}
		raftkv_free(v);
	}
}

/*
 * The lagging node's own database, read with the store API while that node is stopped (no
 * other node touches its file): every expected key with its value, the deleted one absent,
 * and everything written applied.
 */
static void sn_check_store(sn_fix *f, const char *when)
{
	char path[400], err[256] = "";
	store_options so;
	store *s = NULL;
	int rv;

	snprintf(path, sizeof path, "%s/node-%" PRIu64 ".db", f->dir, f->lag);
	store_options_init(&so);
	so.cluster_id = f->cluster_id;
	so.node_id = f->lag;
	so.sync = STORE_SYNC_OFF;
	rv = store_open(path, &so, &s, err, sizeof err);
	CU_ASSERT_EQUAL(rv, STORE_OK);
	if (rv != STORE_OK) {
		fprintf(stderr, "\n%s: store_open(%s): %s: %s\n", when, path, store_strerror(rv),
		        err);
		return;
	}
	CU_ASSERT(store_applied_index(s) >= f->target);
	for (size_t i = 0; i < SN_N_EXPECT; i++) {
		const sn_expect *e = &f->expect[i];
		void *v = NULL;
		size_t len = 0;

		rv = store_get(s, e->key, strlen(e->key), &v, &len);
		if (e->present) {
			CU_ASSERT(rv == STORE_OK && len == e->len && memcmp(v, e->val, len) == 0);
		} else {
			CU_ASSERT_EQUAL(rv, STORE_ERR_NOT_FOUND);
		}
		if (e->present ? rv != STORE_OK || len != e->len || memcmp(v, e->val, len) != 0
		               : rv != STORE_ERR_NOT_FOUND)
			fprintf(stderr,
			        "\n%s: node %" PRIu64 "'s database: key %s: %s (%zu bytes)\n", when,
			        f->lag, e->key, rv == STORE_OK ? "present" : store_strerror(rv),
			        len);
		free(v);
	}
	store_close(s);
}

/* The truncated index of the lagging node never moved backwards. Prints what the test saw. */
static void sn_check_monotonic(sn_fix *f, const char *test)
{
	printf("\n%s: node %" PRIu64 " (last index %" PRIu64
	       " when it went away) caught up to %" PRIu64 " through %" PRIu64
	       " snapshot(s) of %" PRIu64 " bytes; its first index, sampled %" PRIu64
	       " times, rose to %" PRIu64 "\n",
	       test, f->lag, f->lag_last, f->target, f->received, f->received_bytes, f->samples,
	       f->first_max);
	CU_ASSERT(f->samples > 0);
	CU_ASSERT_FALSE(f->backwards);
	if (f->backwards)
		fprintf(stderr,
		        "\nnode %" PRIu64 "'s first index moved backwards, from %" PRIu64
		        " to %" PRIu64 "\n",
		        f->lag, f->back_from, f->back_to);
}

/* The GC bound once the writes stopped (within cf_wait_ms(): this test's policy is tiny). */
static void sn_check_gc_bound(sn_fix *f)
{
	bool gc_bound_holds = sn_wait(f, sn_goal_gc_bound);

	CU_ASSERT(gc_bound_holds);
	if (!gc_bound_holds) {
		fprintf(stderr,
		        "\nGC bound: node %" PRIu64 " applied %" PRIu64 " first index %" PRIu64
		        " (bound 2 * %" PRIu64 ")\n",
		        f->gc_id, f->gc_applied, f->gc_first, f->kv->opts.gc_threshold);
		sn_print_status(f->kv);
	}
}

/* Snapshots every node sent (completed transfers), and their bytes, resends included. */
static uint64_t sn_sent(raftkv *kv, uint64_t *bytes)
{
	uint64_t n = 0;

	*bytes = 0;
	for (uint64_t id = 1; id <= SN_NODES; id++) {
		raftkv_status st = cf_status(kv, id);

		n += st.snapshots_sent;
		*bytes += st.snapshot_bytes_sent;
	}
	return n;
}

/* Some node counts a completed transfer. It does when the receiver's DONE ack arrives, after
 * the install the lagging node's status shows. */
static bool sn_goal_sent(sn_fix *f, raftkv *kv)
{
	uint64_t bytes;

	(void)f;
	return sn_sent(kv, &bytes) >= 1;
}

/* The snapshot counters after the lagging node caught up: it received one (bytes too) and
 * some node sent one. Its truncated index is at least its old last index + 1: the entries it
 * lacked came in a snapshot, not in appends. */
static void sn_check_received(sn_fix *f)
{
	raftkv_status st;
	uint64_t sent, bytes;

	(void)sn_wait(f, sn_goal_sent);
	st = cf_status(f->kv, f->lag);
	sent = sn_sent(f->kv, &bytes);
	f->received = st.snapshots_received;
	f->received_bytes = st.snapshot_bytes_received;
	CU_ASSERT(st.snapshots_received >= 1);
	CU_ASSERT(st.snapshot_bytes_received > 0);
	CU_ASSERT(sent >= 1);
	CU_ASSERT(st.first_index > f->lag_last + 1);
	if (st.snapshots_received == 0 || sent == 0 || st.first_index <= f->lag_last + 1) {
		fprintf(stderr, "\nnode %" PRIu64 " caught up (its last index was %" PRIu64 "):\n",
		        f->lag, f->lag_last);
		sn_print_status(f->kv);
	}
}

/* Stops the lagging node, reads its database, and starts it again isolated: it must come
 * back with everything applied from its own file alone. Then heals. */
static void sn_restart_lagger(sn_fix *f, const char *when)
{
	int rv;

	CU_ASSERT_EQUAL(raftkv_node_stop(f->kv, f->lag), RAFTKV_OK);
	sn_check_store(f, when);
	CU_ASSERT_EQUAL(raftkv_isolate(f->kv, f->lag), RAFTKV_OK);
	rv = raftkv_node_start(f->kv, f->lag);
	CU_ASSERT_EQUAL(rv, RAFTKV_OK);
	if (rv != RAFTKV_OK) {
		fprintf(stderr, "\n%s: node %" PRIu64 " does not restart: %s\n", when, f->lag,
		        raftkv_strerror(rv));
		return;
	}
	CU_ASSERT(sn_wait(f, sn_goal_caught_up));
	CU_ASSERT_EQUAL(raftkv_heal(f->kv), RAFTKV_OK);
	CU_ASSERT(cf_wait_converged(f->kv, NULL, 0, cf_wait_ms()));
}

static void sn_close(sn_fix *f)
{
	raftkv_close(f->kv);
	f->kv = NULL;
	if (f->dir[0] != '\0')
		cf_rmtree(f->dir);
}

/* ------------------------------------------------------------------------------------------ */
/* The one-snapshot test                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* A step the rest of a test depends on: a failure ends the test (the cluster is closed at
 * `out`, which a CUnit fatal assertion would skip). */
#define SN_REQUIRE(cond, what)                                                                     \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			CU_FAIL(what);                                                             \
			fprintf(stderr, "\n%s: failed\n", what);                                   \
			if (f->kv != NULL)                                                         \
				sn_print_status(f->kv);                                            \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

/* Node 1 if it does not lead (leadership moves away from it first if it does), else another
 * follower. */
static uint64_t sn_pick_lagger(raftkv *kv)
{
	uint64_t leader = 0;

	if (raftkv_wait_leader(kv, cf_wait_ms(), &leader) != RAFTKV_OK)
		return 0;
	if (leader != 1)
		return 1;
	if (raftkv_transfer_leader(kv, 2) == RAFTKV_OK &&
	    cf_wait_role_not(kv, 1, RAFTKV_ROLE_LEADER, cf_wait_ms()) &&
	    raftkv_wait_leader(kv, cf_wait_ms(), &leader) == RAFTKV_OK && leader != 1)
		return 1;
	return 2;
}

static void test_one_snapshot(void)
{
	unsigned failures = CU_get_number_of_failures();
	sn_fix *f = calloc(1, sizeof *f);

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	SN_REQUIRE(sn_open(f, "snap1", 256u << 10, 8), "open a 3-node cluster");
	SN_REQUIRE(sn_write_pre(f), "the first writes");
	f->lag = sn_pick_lagger(f->kv);
	SN_REQUIRE(f->lag != 0, "a leader");
	SN_REQUIRE(sn_wait(f, sn_goal_settled), "every node holds and applied the same log");
	f->lag_last = cf_status(f->kv, f->lag).last_index;
	SN_REQUIRE(raftkv_isolate(f->kv, f->lag) == RAFTKV_OK, "raftkv_isolate");
	SN_REQUIRE(sn_write_lagging(f), "the writes while a node is cut off");
	/* An isolated follower appends nothing: its last index still bounds what it lacks. */
	CU_ASSERT_EQUAL(cf_status(f->kv, f->lag).last_index, f->lag_last);
	if (!sn_wait(f, sn_goal_compacted)) {
		CU_FAIL("the leader never compacted past the isolated node (hard limit 20)");
		sn_print_status(f->kv);
	}
	sn_check_gc_bound(f);
	CU_ASSERT_EQUAL(raftkv_heal(f->kv), RAFTKV_OK);
	if (!sn_wait(f, sn_goal_caught_up)) {
		CU_FAIL("the lagging node did not catch up");
		sn_print_status(f->kv);
		goto out;
	}
	sn_check_received(f);
	sn_check_api(f, "after the catch-up");
	/* Reads served by the lagging node's own state machine: it leads. */
	CU_ASSERT_EQUAL(raftkv_transfer_leader(f->kv, f->lag), RAFTKV_OK);
	sn_check_api(f, "with the caught-up node leading");
	sn_restart_lagger(f, "restart of the caught-up node");
	sn_check_api(f, "after its restart");
	sn_check_gc_bound(f);
	sn_check_monotonic(f, "one snapshot");
out:
	if (CU_get_number_of_failures() != failures)
		cf_report_seed("snapshots: one snapshot");
	sn_close(f);
	free(f);
}

/* ------------------------------------------------------------------------------------------ */
/* Corrupted chunks                                                                           */
/* ------------------------------------------------------------------------------------------ */

/*
 * A stopped follower catches up by a snapshot of some 40 chunks of 1 KiB while 30% of the
 * chunks arrive corrupted: every corrupt chunk must be detected (CRC) and sent again, and the
 * follower must install exactly the leader's data.
 */
static void test_corrupt_chunks(void)
{
	unsigned failures = CU_get_number_of_failures();
	sn_fix *f = calloc(1, sizeof *f);
	uint64_t leader = 0, bytes_sent = 0;
	router_stats rs;

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	SN_REQUIRE(sn_open(f, "snapcrc", 1024, 1000), "open a 3-node cluster");
	SN_REQUIRE(sn_write_pre(f), "the first writes");
	SN_REQUIRE(raftkv_wait_leader(f->kv, cf_wait_ms(), &leader) == RAFTKV_OK, "a leader");
	f->lag = leader % SN_NODES + 1;
	SN_REQUIRE(sn_wait(f, sn_goal_settled), "every node holds and applied the same log");
	f->lag_last = cf_status(f->kv, f->lag).last_index;
	SN_REQUIRE(raftkv_node_stop(f->kv, f->lag) == RAFTKV_OK, "raftkv_node_stop");
	/* Settled, it had nothing on its way; its final status (kept by the handle) agrees. */
	CU_ASSERT_EQUAL(cf_status(f->kv, f->lag).last_index, f->lag_last);
	SN_REQUIRE(sn_write_lagging(f), "the writes while a node is stopped");
	if (!sn_wait(f, sn_goal_compacted)) {
		CU_FAIL("the leader never compacted past the stopped node (hard limit 20)");
		sn_print_status(f->kv);
	}
	CU_ASSERT_EQUAL(raftkv_set_snapshot_corrupt_rate(f->kv, 0.3), RAFTKV_OK);
	SN_REQUIRE(raftkv_node_start(f->kv, f->lag) == RAFTKV_OK, "raftkv_node_start");
	if (!sn_wait(f, sn_goal_caught_up)) {
		CU_FAIL("the lagging node did not catch up under chunk corruption");
		sn_print_status(f->kv);
		goto out;
	}
	CU_ASSERT_EQUAL(raftkv_set_snapshot_corrupt_rate(f->kv, 0.0), RAFTKV_OK);
	sn_check_received(f);
	/* The fault did happen, and the damaged chunks were sent again: more bytes left the
	 * senders than the receiver staged. */
	router_stats_get(f->kv->router, &rs);
	CU_ASSERT(rs.corrupted > 0);
	sn_sent(f->kv, &bytes_sent);
	CU_ASSERT(bytes_sent > cf_status(f->kv, f->lag).snapshot_bytes_received);
	if (rs.corrupted == 0 || bytes_sent <= cf_status(f->kv, f->lag).snapshot_bytes_received)
		fprintf(stderr,
		        "\ncorrupted chunks: %" PRIu64 " of %" PRIu64 " chunks damaged, %" PRIu64
		        " bytes sent\n",
		        rs.corrupted, rs.chunks, bytes_sent);
	sn_check_api(f, "after a catch-up with corrupted chunks");
	sn_restart_lagger(f, "the node that caught up through corrupted chunks");
	printf("\ncorrupted chunks: %" PRIu64 " of %" PRIu64 " chunks damaged; %" PRIu64
	       " snapshot bytes sent for a file of %" PRIu64 "\n",
	       rs.corrupted, rs.chunks, bytes_sent, f->received_bytes);
	sn_check_monotonic(f, "corrupted chunks");
out:
	if (CU_get_number_of_failures() != failures)
		cf_report_seed("snapshots: corrupted chunks");
	sn_close(f);
	free(f);
}

void test_register_snapshots(void)
{
	CU_pSuite s = CU_add_suite("snapshots", scenario_suite_init, scenario_suite_clean);

	CU_add_test(s, "one snapshot", test_one_snapshot);
	CU_add_test(s, "corrupted chunks", test_corrupt_chunks);
	CU_add_test(s, sn_rows[0].name, test_2c_row_0);
	CU_add_test(s, sn_rows[1].name, test_2c_row_1);
	CU_add_test(s, sn_rows[2].name, test_2c_row_2);
	CU_add_test(s, sn_rows[3].name, test_2c_row_3);
	CU_add_test(s, sn_rows[4].name, test_2c_row_4);
}
