/* test_store_review.c - CUnit suite "store_review": regressions for the SQLite store review
 * (conf state, a snapshot reaching a raft follower, Ready validation, chunked GC, term cache). */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "raft.h"
#include "store/command.h"
#include "store/store_internal.h"
#include "suites.h"

#define RV_CLUSTER     0x7e71e3ULL
#define RV_WAIT_MS     10000 /* bound on waiting for one dump */
#define RV_WAIT_ROUNDS 3     /* dumps to wait for: one that ends unusable starts another */
#define RV_TERM_RING   4096  /* log.c's LOG_TERM_RING */
#define RV_GC_ROWS     10000
#define RV_GC_CHUNK    1000
#define RV_RING_ROWS   6000
#define RV_KV_ENTRIES  20

static const raft_conf_state rv_conf = {.voters = {1, 2, 3}, .n_voters = 3};

/* The test's directory (subdirectories a/ and b/ hold one store each). */
static char rv_dir[64];

/* ---- directories and stores ---- */

static void rv_remove_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];

	while (d != NULL && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		if (unlink(p) != 0)
			rmdir(p);
	}
	if (d != NULL)
		closedir(d);
}

static void rv_setup(void)
{
	char sub[96];

	snprintf(rv_dir, sizeof(rv_dir), "/tmp/raftkv-review-XXXXXX");
	CU_ASSERT_FATAL(mkdtemp(rv_dir) != NULL);
	snprintf(sub, sizeof(sub), "%s/a", rv_dir);
	CU_ASSERT_FATAL(mkdir(sub, 0755) == 0);
	snprintf(sub, sizeof(sub), "%s/b", rv_dir);
	CU_ASSERT_FATAL(mkdir(sub, 0755) == 0);
}

static void rv_teardown(void)
{
	char sub[96];

	snprintf(sub, sizeof(sub), "%s/a", rv_dir);
	rv_remove_files(sub);
	snprintf(sub, sizeof(sub), "%s/b", rv_dir);
	rv_remove_files(sub);
	rv_remove_files(rv_dir);
	rmdir(rv_dir);
}

/* Opens (creating) node's store in rv_dir/<sub>, its snapshot directory too. The caller closes
 * it. */
static store *rv_open(const char *sub, uint64_t node)
{
	char path[160], dir[128], err[256];
	store_options o;
	store *s = NULL;
	int rv;

	snprintf(dir, sizeof(dir), "%s/%s", rv_dir, sub);
	snprintf(path, sizeof(path), "%s/node-%" PRIu64 ".db", dir, node);
	store_options_init(&o);
	o.cluster_id = RV_CLUSTER;
	o.node_id = node;
	rv = store_open(path, &o, &s, err, sizeof(err));
	if (rv != STORE_OK)
		printf("\nstore_open %s: %s\n", path, err);
	CU_ASSERT_EQUAL_FATAL(rv, STORE_OK);
	CU_ASSERT_EQUAL_FATAL(store_set_snapshot_dir(s, dir), STORE_OK);
	return s;
}

static store *rv_reopen(store *s, const char *sub)
{
	uint64_t node = s->opt.node_id;

	store_close(s);
	return rv_open(sub, node);
}

/* ---- the log and the state machine ---- */

/* A PUT of key-<index> = value-<index>, without a session; e->data is malloc'd. */
static void rv_put_entry(raft_entry *e, uint64_t index, uint64_t term)
{
	char key[32], value[32];
	store_command c = {.op = STORE_OP_PUT};
	size_t len = 0;

	snprintf(key, sizeof(key), "key-%04" PRIu64, index);
	snprintf(value, sizeof(value), "value-%" PRIu64, index);
	c.key = key;
	c.key_len = strlen(key);
	c.value = value;
	c.value_len = strlen(value);
	memset(e, 0, sizeof(*e));
	e->index = index;
	e->term = term;
	e->type = RAFT_ENTRY_NORMAL;
	CU_ASSERT_EQUAL_FATAL(command_encode(&c, &e->data, &len), STORE_OK);
	e->len = len;
}

/* Persists entries [first, first + n) of term, PUTs if puts else empty (no-ops), with hard
 * state (term, vote 1, commit). */
static void rv_persist(store *s, uint64_t first, size_t n, uint64_t term, uint64_t commit,
                       bool puts)
{
	raft_entry *e = calloc(n, sizeof(*e));
	raft_ready rd;

	CU_ASSERT_FATAL(e != NULL);
	for (size_t k = 0; k < n; k++) {
		if (puts) {
			rv_put_entry(&e[k], first + k, term);
			continue;
		}
		e[k].index = first + k;
		e[k].term = term;
	}
	memset(&rd, 0, sizeof(rd));
	rd.entries = e;
	rd.n_entries = n;
	rd.has_hard_state = true;
	rd.hard_state = (raft_hard_state){.term = term, .vote = 1, .commit = commit};
	rd.must_sync = true;
	CU_ASSERT_EQUAL_FATAL(store_persist_ready(s, &rd), STORE_OK);
	for (size_t k = 0; k < n; k++)
		free(e[k].data);
	free(e);
}

/* Applies the log up to index, read back through raft_storage. */
static void rv_apply(store *s, uint64_t index)
{
	const raft_storage *st = store_raft_storage(s);
	uint64_t lo = store_applied_index(s) + 1;
	raft_entry *e = NULL;
	size_t n = 0;

	CU_ASSERT_EQUAL_FATAL(st->entries(st->ctx, lo, index + 1, UINT64_MAX, &e, &n), RAFT_OK);
	CU_ASSERT_EQUAL_FATAL(store_apply(s, e, n, NULL, NULL), STORE_OK);
	raft_entries_free(e, n);
	CU_ASSERT_EQUAL_FATAL(store_applied_index(s), index);
}

static void rv_compact_all(store *s, uint64_t index)
{
	bool more = true;

	while (more)
		CU_ASSERT_EQUAL_FATAL(store_compact(s, index, 0, &more), STORE_OK);
}

static bool rv_conf_equal(const raft_conf_state *a, const raft_conf_state *b)
{
	if (a->n_voters != b->n_voters)
		return false;
	for (size_t k = 0; k < a->n_voters; k++)
		if (a->voters[k] != b->voters[k])
			return false;
	return true;
}

static raft_conf_state rv_initial_conf(store *s)
{
	const raft_storage *st = store_raft_storage(s);
	raft_hard_state hs;
	raft_conf_state cs;

	memset(&cs, 0, sizeof(cs));
	CU_ASSERT_EQUAL(st->initial_state(st->ctx, &hs, &cs), RAFT_OK);
	return cs;
}

static raft_hard_state rv_hard_state(store *s)
{
	const raft_storage *st = store_raft_storage(s);
	raft_hard_state hs;
	raft_conf_state cs;

	memset(&hs, 0, sizeof(hs));
	CU_ASSERT_EQUAL(st->initial_state(st->ctx, &hs, &cs), RAFT_OK);
	return hs;
}

/* FNV-1a over every (key, value) of the kv table, in key order, and their count. */
typedef struct rv_digest {
	uint64_t hash;
	size_t rows;
} rv_digest;

static void rv_hash(rv_digest *d, const void *p, size_t len)
{
	const unsigned char *b = p;

	for (size_t k = 0; k < sizeof(len); k++)
		d->hash = (d->hash ^ ((len >> (8 * k)) & 0xff)) * 0x100000001b3ULL;
	for (size_t k = 0; k < len; k++)
		d->hash = (d->hash ^ b[k]) * 0x100000001b3ULL;
}

static int rv_digest_row(void *ctx, const void *key, size_t key_len, const void *value,
                         size_t value_len)
{
	rv_digest *d = ctx;

	rv_hash(d, key, key_len);
	rv_hash(d, value, value_len);
	d->rows++;
	return 0;
}

static rv_digest rv_kv_digest(store *s)
{
	rv_digest d = {0xcbf29ce484222325ULL, 0};
	void *next = NULL;
	size_t next_len = 0;

	CU_ASSERT_EQUAL(store_scan(s, NULL, 0, NULL, 0, 0, rv_digest_row, &d, &next, &next_len),
	                STORE_OK);
	CU_ASSERT_PTR_NULL(next);
	free(next);
	return d;
}

/* ---- snapshots ---- */

/* Asks s's raft_storage for a snapshot; while one is being dumped, blocks until the dump ends
 * (at most RV_WAIT_MS) and asks again. On STORE_OK the caller owns out->data. */
static int rv_await_snapshot(store *s, raft_snapshot *out)
{
	const raft_storage *st = store_raft_storage(s);
	int rv = st->snapshot(st->ctx, out);

	for (int round = 0;
	     rv == RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE && round < RV_WAIT_ROUNDS; round++) {
		if (store_snapshot_wait(s, RV_WAIT_MS) != STORE_OK)
			break;
		rv = st->snapshot(st->ctx, out);
	}
	if (rv != STORE_OK)
		printf("\nno snapshot (waited for at most %d dumps, %d ms each): %s (%s)\n",
		       RV_WAIT_ROUNDS, RV_WAIT_MS, store_strerror(rv), store_errmsg(s));
	return rv;
}

/* Copies bytes [0, upto) of src's snapshot file id into dst's staging (upto UINT64_MAX: all
 * of it, then finish), as a transfer would. */
static void rv_stage(store *src, store *dst, const store_snapshot_id *id, uint64_t upto)
{
	unsigned char buf[4096];
	uint64_t size = 0, off = 0;
	char *path = NULL;
	FILE *fp;
	size_t n;

	CU_ASSERT_EQUAL_FATAL(store_snapshot_path(src, id, &path, &size), STORE_OK);
	fp = fopen(path, "rb");
	free(path);
	CU_ASSERT_FATAL(fp != NULL);
	CU_ASSERT_EQUAL_FATAL(store_staging_begin(dst, id), STORE_OK);
	while (off < upto && (n = fread(buf, 1, sizeof(buf), fp)) > 0) {
		if (n > upto - off)
			n = (size_t)(upto - off);
		CU_ASSERT_EQUAL_FATAL(store_staging_write(dst, id, off, buf, n), STORE_OK);
		off += n;
	}
	fclose(fp);
	if (upto == UINT64_MAX) {
		CU_ASSERT_EQUAL_FATAL(off, size);
		CU_ASSERT_EQUAL_FATAL(store_staging_finish(dst, id), STORE_OK);
	}
}

/* Store A, node 1 of {1, 2, 3}: RV_KV_ENTRIES PUTs applied and compacted away, so a follower
 * that lacks them can only catch up from a snapshot; *snap receives A's (caller owns data). */
static store *rv_leader_with_snapshot(raft_snapshot *snap, store_snapshot_id *id)
{
	const raft_storage *st;
	store *a = rv_open("a", 1);
	raft_entry *e = NULL;
	uint64_t first = 0;
	size_t n = 0;

	CU_ASSERT_EQUAL_FATAL(store_set_conf_state(a, &rv_conf), STORE_OK);
	rv_persist(a, 1, RV_KV_ENTRIES, 1, RV_KV_ENTRIES, true);
	rv_apply(a, RV_KV_ENTRIES);
	rv_compact_all(a, RV_KV_ENTRIES);
	st = store_raft_storage(a);
	CU_ASSERT_EQUAL(st->first_index(st->ctx, &first), RAFT_OK);
	CU_ASSERT_EQUAL(first, RV_KV_ENTRIES + 1);
	CU_ASSERT_EQUAL(st->entries(st->ctx, 1, 2, UINT64_MAX, &e, &n), RAFT_ERR_COMPACTED);
	memset(snap, 0, sizeof(*snap));
	CU_ASSERT_EQUAL_FATAL(rv_await_snapshot(a, snap), STORE_OK);
	CU_ASSERT_EQUAL_FATAL(store_snapshot_id_decode(snap->data, snap->len, id), STORE_OK);
	return a;
}

/* ---- 1. conf state ---- */

/* store_set_conf_state is durable, reported by initial_state, and carried by a dump. */
static void test_conf_state_recorded(void)
{
	raft_snapshot snap;
	raft_conf_state got;
	store *s = rv_open("a", 1);

	CU_ASSERT_EQUAL(rv_initial_conf(s).n_voters, 0);
	CU_ASSERT_EQUAL_FATAL(store_set_conf_state(s, &rv_conf), STORE_OK);
	got = rv_initial_conf(s);
	CU_ASSERT(rv_conf_equal(&got, &rv_conf));
	s = rv_reopen(s, "a");
	got = rv_initial_conf(s);
	CU_ASSERT(rv_conf_equal(&got, &rv_conf));

	rv_persist(s, 1, 3, 1, 3, true);
	rv_apply(s, 3);
	memset(&snap, 0, sizeof(snap));
	CU_ASSERT_EQUAL_FATAL(rv_await_snapshot(s, &snap), STORE_OK);
	CU_ASSERT_EQUAL(snap.metadata.index, 3);
	CU_ASSERT(rv_conf_equal(&snap.metadata.conf_state, &rv_conf));
	raft_snapshot_clear(&snap);
	store_close(s);
}

/* A bad conf state is STORE_ERR_INVALID, changes nothing, and does not fail-stop. */
static void test_conf_state_refused(void)
{
	raft_conf_state bad[4];
	raft_conf_state got;
	store *s = rv_open("a", 1);

	memset(bad, 0, sizeof(bad));
	bad[0].n_voters = RAFT_MAX_VOTERS + 1;
	bad[1] = (raft_conf_state){.voters = {1, 3, 2}, .n_voters = 3};
	bad[2] = (raft_conf_state){.voters = {1, 2, 2}, .n_voters = 3};
	bad[3] = (raft_conf_state){.voters = {0, 1, 2}, .n_voters = 3};
	CU_ASSERT_EQUAL_FATAL(store_set_conf_state(s, &rv_conf), STORE_OK);
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
		CU_ASSERT_EQUAL(store_set_conf_state(s, &bad[k]), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_set_conf_state(s, NULL), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_set_conf_state(NULL, &rv_conf), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_failed(s), STORE_OK);
	s = rv_reopen(s, "a");
	got = rv_initial_conf(s);
	CU_ASSERT(rv_conf_equal(&got, &rv_conf));
	store_close(s);
}

/* Feeds snap to a raft follower (node 2 of {1, 2, 3}) over b, as leader 1's RAFT_MSG_SNAPSHOT
 * in term 1, and persists the Ready it makes, which must carry the snapshot. */
static void rv_follower_install(store *b, const raft_snapshot *snap)
{
	uint64_t peers[] = {1, 2, 3};
	raft_rawnode *rn = NULL;
	raft_config c;
	raft_message m;
	raft_ready rd;

	raft_config_init(&c);
	c.id = 2;
	c.peers = peers;
	c.n_peers = 3;
	c.storage = store_raft_storage(b);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_new(&c, &rn), RAFT_OK);
	memset(&m, 0, sizeof(m));
	m.type = RAFT_MSG_SNAPSHOT;
	m.from = 1;
	m.to = 2;
	m.term = 1;
	m.commit = snap->metadata.index;
	m.snapshot = *snap;
	CU_ASSERT_EQUAL(raft_rawnode_step(rn, &m), RAFT_OK);
	CU_ASSERT_FATAL(raft_rawnode_has_ready(rn));
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(rn, &rd), RAFT_OK);
	CU_ASSERT_FATAL(rd.has_snapshot);
	CU_ASSERT_EQUAL(rd.snapshot.metadata.index, snap->metadata.index);
	CU_ASSERT_EQUAL(store_persist_ready(b, &rd), STORE_OK);
	CU_ASSERT_EQUAL(raft_rawnode_advance(rn), RAFT_OK);
	raft_rawnode_free(rn);
}

/* End to end: A's snapshot, requested through raft_storage and staged on B, reaches a real
 * raft follower over B, whose Ready installs it through store_persist_ready. */
static void test_snapshot_reaches_raft_follower(void)
{
	store_snapshot_id id;
	raft_snapshot snap;
	raft_conf_state got;
	rv_digest da, db;
	store *a = rv_leader_with_snapshot(&snap, &id);
	store *b = rv_open("b", 2);

	CU_ASSERT(rv_conf_equal(&snap.metadata.conf_state, &rv_conf));
	rv_stage(a, b, &id, UINT64_MAX);
	rv_follower_install(b, &snap);
	CU_ASSERT_EQUAL(store_applied_index(b), RV_KV_ENTRIES);
	da = rv_kv_digest(a);
	db = rv_kv_digest(b);
	CU_ASSERT_EQUAL(da.rows, RV_KV_ENTRIES);
	CU_ASSERT_EQUAL(db.rows, da.rows);
	CU_ASSERT_EQUAL(db.hash, da.hash);
	b = rv_reopen(b, "b");
	db = rv_kv_digest(b);
	CU_ASSERT_EQUAL(db.hash, da.hash);
	got = rv_initial_conf(b);
	CU_ASSERT(rv_conf_equal(&got, &rv_conf));
	raft_snapshot_clear(&snap);
	store_close(b);
	store_close(a);
}

/* ---- 2. a Ready whose snapshot cannot be installed ---- */

/* rd carries snap and a hard state of term 9: it must be refused with STORE_ERR_INVALID,
 * nothing written and the store healthy. */
static void rv_expect_refused(store *s, const raft_snapshot *snap, const char *what)
{
	raft_hard_state before = rv_hard_state(s);
	uint64_t applied = store_applied_index(s);
	raft_ready rd;
	int rv;

	memset(&rd, 0, sizeof(rd));
	rd.has_snapshot = true;
	rd.snapshot = *snap;
	rd.has_hard_state = true;
	rd.hard_state = (raft_hard_state){.term = 9, .vote = 0, .commit = snap->metadata.index};
	rd.must_sync = true;
	rv = store_persist_ready(s, &rd);
	if (rv != STORE_ERR_INVALID || store_failed(s) != STORE_OK)
		printf("\n%s: persist gave %d, store_failed %d (%s)\n", what, rv, store_failed(s),
		       store_errmsg(s));
	CU_ASSERT_EQUAL(rv, STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_failed(s), STORE_OK);
	CU_ASSERT_EQUAL(rv_hard_state(s).term, before.term);
	CU_ASSERT_EQUAL(store_applied_index(s), applied);
}

static void test_ready_bad_snapshot_refused(void)
{
	static unsigned char junk[] = "junk";
	store_snapshot_id id;
	raft_snapshot snap, bad;
	store *a = rv_leader_with_snapshot(&snap, &id);
	store *b = rv_open("b", 2);
	raft_ready rd;

	bad = snap;
	bad.data = junk;
	bad.len = sizeof(junk) - 1;
	rv_expect_refused(b, &bad, "data that is not an id");
	bad.data = NULL;
	bad.len = 0;
	rv_expect_refused(b, &bad, "no data");
	bad = snap;
	bad.metadata.term = snap.metadata.term + 1;
	rv_expect_refused(b, &bad, "an id of another snapshot");
	rv_expect_refused(b, &snap, "no staging");
	rv_stage(a, b, &id, 100);
	rv_expect_refused(b, &snap, "an unfinished staging");

	/* Nothing of that reached the disk, and the same snapshot installs once staged. */
	b = rv_reopen(b, "b");
	CU_ASSERT_EQUAL(rv_hard_state(b).term, 0);
	CU_ASSERT_EQUAL(store_staging_offset(b, &id), 100);
	rv_stage(a, b, &id, UINT64_MAX);
	memset(&rd, 0, sizeof(rd));
	rd.has_snapshot = true;
	rd.snapshot = snap;
	rd.must_sync = true;
	CU_ASSERT_EQUAL(store_persist_ready(b, &rd), STORE_OK);
	CU_ASSERT_EQUAL(store_applied_index(b), RV_KV_ENTRIES);

	/* Not above the applied index: already there (and an older one would roll it back). */
	rv_expect_refused(b, &snap, "a snapshot at the applied index");
	rv_expect_refused(a, &snap, "the leader's own snapshot at its applied index");
	raft_snapshot_clear(&snap);
	store_close(b);
	store_close(a);
}

/* A snapshot below the applied index (the store moved on since it was dumped) is refused
 * rather than rolling kv and the applied index back. */
static void test_ready_old_snapshot_refused(void)
{
	raft_snapshot snap;
	store *s = rv_open("a", 1);
	rv_digest before;

	CU_ASSERT_EQUAL_FATAL(store_set_conf_state(s, &rv_conf), STORE_OK);
	rv_persist(s, 1, 10, 1, 10, true);
	rv_apply(s, 5);
	memset(&snap, 0, sizeof(snap));
	CU_ASSERT_EQUAL_FATAL(rv_await_snapshot(s, &snap), STORE_OK);
	CU_ASSERT_EQUAL(snap.metadata.index, 5);
	rv_apply(s, 10);
	before = rv_kv_digest(s);
	rv_expect_refused(s, &snap, "a snapshot below the applied index");
	CU_ASSERT_EQUAL(rv_kv_digest(s).hash, before.hash);
	CU_ASSERT_EQUAL(store_applied_index(s), 10);
	raft_snapshot_clear(&snap);
	store_close(s);
}

/* ---- 3. log GC, one chunk per call ---- */

static int rv_count_commit(void *ctx)
{
	(*(int *)ctx)++;
	return 0;
}

static uint64_t rv_sql_u64(store *s, const char *sql)
{
	sqlite3_stmt *stmt = NULL;
	uint64_t v = UINT64_MAX;

	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL), SQLITE_OK);
	if (sqlite3_step(stmt) == SQLITE_ROW)
		v = (uint64_t)sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return v;
}

/* The store holds the log (trunc, RV_GC_ROWS] of term 2, in memory and on disk alike. */
static void rv_expect_truncated(store *s, uint64_t trunc)
{
	const raft_storage *st = store_raft_storage(s);
	uint64_t first = 0, last = 0, term = 0;
	raft_entry *e = NULL;
	size_t n = 0;

	CU_ASSERT_EQUAL(st->first_index(st->ctx, &first), RAFT_OK);
	CU_ASSERT_EQUAL(first, trunc + 1);
	CU_ASSERT_EQUAL(st->last_index(st->ctx, &last), RAFT_OK);
	CU_ASSERT_EQUAL(last, RV_GC_ROWS);
	CU_ASSERT_EQUAL(st->term(st->ctx, trunc, &term), RAFT_OK);
	CU_ASSERT_EQUAL(term, 2);
	CU_ASSERT_EQUAL(st->term(st->ctx, trunc - 1, &term), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(rv_sql_u64(s, "SELECT count(*) FROM raft_log"), RV_GC_ROWS - trunc);
	CU_ASSERT_EQUAL(rv_sql_u64(s, "SELECT truncated_index FROM apply_state"), trunc);
	CU_ASSERT_EQUAL(rv_sql_u64(s, "SELECT truncated_term FROM apply_state"), 2);
	if (trunc < RV_GC_ROWS) {
		CU_ASSERT_EQUAL(st->entries(st->ctx, first, first + 1, 0, &e, &n), RAFT_OK);
		CU_ASSERT_EQUAL(n, 1);
		raft_entries_free(e, n);
	}
}

/* A GC of 10,000 rows in chunks of 1,000 takes ten calls of one transaction each; *more says
 * whether to call again; a reopen half-way resumes where it stopped. */
static void test_compact_one_chunk_per_call(void)
{
	store *s = rv_open("a", 1);
	bool more = false;
	int commits = 0;

	rv_persist(s, 1, RV_GC_ROWS, 2, RV_GC_ROWS, false);
	rv_apply(s, RV_GC_ROWS);
	for (uint64_t call = 1; call <= RV_GC_ROWS / RV_GC_CHUNK; call++) {
		commits = 0;
		sqlite3_commit_hook(s->db, rv_count_commit, &commits);
		CU_ASSERT_EQUAL_FATAL(store_compact(s, RV_GC_ROWS, RV_GC_CHUNK, &more), STORE_OK);
		sqlite3_commit_hook(s->db, NULL, NULL);
		CU_ASSERT_EQUAL(commits, 1);
		CU_ASSERT_EQUAL(more, call < RV_GC_ROWS / RV_GC_CHUNK);
		rv_expect_truncated(s, call * RV_GC_CHUNK);
		if (call == 4) {
			s = rv_reopen(s, "a");
			rv_expect_truncated(s, call * RV_GC_CHUNK);
		}
	}
	more = true;
	CU_ASSERT_EQUAL(store_compact(s, RV_GC_ROWS, RV_GC_CHUNK, &more), RAFT_ERR_COMPACTED);
	CU_ASSERT_FALSE(more);
	CU_ASSERT_EQUAL(store_failed(s), STORE_OK);
	store_close(s);
}

/* ---- 4. the term cache after a reopen ---- */

static uint64_t rv_ring_term(uint64_t index)
{
	return 1 + (index - 1) / 1000;
}

/* term(i) for i in [lo, hi] gives rv_ring_term(i) and reads SQLite `reads` times. */
static void rv_expect_terms(store *s, uint64_t lo, uint64_t hi, uint64_t reads)
{
	const raft_storage *st = store_raft_storage(s);
	uint64_t before = store_log_term_reads(s), term = 0;

	for (uint64_t i = lo; i <= hi; i++) {
		CU_ASSERT_EQUAL(st->term(st->ctx, i, &term), RAFT_OK);
		CU_ASSERT_EQUAL(term, rv_ring_term(i));
	}
	CU_ASSERT_EQUAL(store_log_term_reads(s) - before, reads);
}

/* After a reopen, term() answers the last RV_TERM_RING entries from memory as before it. */
static void test_term_cache_warm_after_reopen(void)
{
	store *s = rv_open("a", 1);
	uint64_t cached = RV_RING_ROWS - RV_TERM_RING + 1;

	rv_persist(s, 1, 100, 1, 100, false);
	s = rv_reopen(s, "a");
	rv_expect_terms(s, 1, 100, 0);

	for (uint64_t first = 101; first <= RV_RING_ROWS;) {
		uint64_t end = rv_ring_term(first) * 1000;

		rv_persist(s, first, (size_t)(end - first + 1), rv_ring_term(first), end, false);
		first = end + 1;
	}
	rv_expect_terms(s, cached, RV_RING_ROWS, 0);
	s = rv_reopen(s, "a");
	rv_expect_terms(s, cached, RV_RING_ROWS, 0);
	rv_expect_terms(s, cached - 10, cached - 1, 10);

	/* The window never reaches below the truncated index. */
	rv_apply(s, 4500);
	rv_compact_all(s, 4500);
	s = rv_reopen(s, "a");
	rv_expect_terms(s, 4500, RV_RING_ROWS, 0);
	store_close(s);
}

void test_register_store_review(void)
{
	CU_pSuite s =
	    CU_add_suite_with_setup_and_teardown("store_review", NULL, NULL, rv_setup, rv_teardown);

	CU_add_test(s, "conf state is recorded, kept and dumped", test_conf_state_recorded);
	CU_add_test(s, "a bad conf state is refused", test_conf_state_refused);
	CU_add_test(s, "a snapshot reaches a raft follower", test_snapshot_reaches_raft_follower);
	CU_add_test(s, "a Ready with a bad snapshot is refused", test_ready_bad_snapshot_refused);
	CU_add_test(s, "a snapshot below the applied index is refused",
	            test_ready_old_snapshot_refused);
	CU_add_test(s, "GC runs one chunk per call", test_compact_one_chunk_per_call);
	CU_add_test(s, "the term cache is warm after a reopen", test_term_cache_warm_after_reopen);
}
