/* test_storage_contract.c - suites "storage_contract_memory" and "storage_contract_sqlite": one
 * raft_storage contract, checked against the memory storage and the SQLite store alike. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "raft.h"
#include "store/store_internal.h"
#include "suites.h"

/* ---- backends ---- */

/* One storage under test. Only the fields of the current backend are used. */
typedef struct fixture {
	const struct backend *b;
	const raft_storage *st; /* refreshed after every reopen */
	raft_memory_storage *ms;
	store *s;
	char dir[64];
	char path[128];
} fixture;

/* How the contract drives a backend. apply_snapshot NULL: not available yet. */
typedef struct backend {
	const char *name;
	void (*setup)(fixture *f);
	void (*teardown)(fixture *f);
	int (*append)(fixture *f, const raft_entry *e, size_t n);
	int (*set_hard_state)(fixture *f, const raft_hard_state *hs, bool sync);
	int (*apply_snapshot)(fixture *f, const raft_snapshot *snap);
	int (*compact)(fixture *f, uint64_t i);
	void (*reopen)(fixture *f); /* NULL: nothing survives a reopen to check */
} backend;

static const backend *contract_backend; /* set by the running suite's init */
static fixture contract_fix;            /* set up and torn down around each test */

static void mem_setup(fixture *f)
{
	f->ms = raft_memory_storage_new();
	CU_ASSERT_FATAL(f->ms != NULL);
	f->st = raft_memory_storage_interface(f->ms);
}

static void mem_teardown(fixture *f)
{
	raft_memory_storage_free(f->ms);
	f->ms = NULL;
}

static int mem_append(fixture *f, const raft_entry *e, size_t n)
{
	return raft_memory_storage_append(f->ms, e, n);
}

static int mem_set_hard_state(fixture *f, const raft_hard_state *hs, bool sync)
{
	(void)sync;
	return raft_memory_storage_set_hard_state(f->ms, hs);
}

static int mem_apply_snapshot(fixture *f, const raft_snapshot *snap)
{
	return raft_memory_storage_apply_snapshot(f->ms, snap);
}

static int mem_compact(fixture *f, uint64_t i)
{
	return raft_memory_storage_compact(f->ms, i);
}

static const backend memory_backend = {
    .name = "memory",
    .setup = mem_setup,
    .teardown = mem_teardown,
    .append = mem_append,
    .set_hard_state = mem_set_hard_state,
    .apply_snapshot = mem_apply_snapshot,
    .compact = mem_compact,
    .reopen = NULL,
};

static void sql_open(fixture *f)
{
	store_options o;
	char err[512];
	int rv;

	store_options_init(&o);
	o.cluster_id = 0xc0ffee;
	o.node_id = 1;
	rv = store_open(f->path, &o, &f->s, err, sizeof(err));
	if (rv != STORE_OK)
		fprintf(stderr, "\nstore_open(%s): %d %s\n", f->path, rv, err);
	CU_ASSERT_EQUAL_FATAL(rv, STORE_OK);
	f->st = store_raft_storage(f->s);
	CU_ASSERT_FATAL(f->st != NULL);
	CU_ASSERT_EQUAL_FATAL(store_set_snapshot_dir(f->s, f->dir), STORE_OK);
}

static void sql_setup(fixture *f)
{
	snprintf(f->dir, sizeof(f->dir), "/tmp/raftkv-contract-XXXXXX");
	CU_ASSERT_FATAL(mkdtemp(f->dir) != NULL);
	snprintf(f->path, sizeof(f->path), "%s/node-1.db", f->dir);
	sql_open(f);
}

/* Removes every file in dir, then dir. */
static void dir_remove(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[512];

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static void sql_teardown(fixture *f)
{
	store_close(f->s);
	f->s = NULL;
	if (f->dir[0] != '\0')
		dir_remove(f->dir);
	f->dir[0] = '\0';
}

static int sql_append(fixture *f, const raft_entry *e, size_t n)
{
	raft_ready rd;

	memset(&rd, 0, sizeof(rd));
	rd.entries = (raft_entry *)e;
	rd.n_entries = n;
	rd.must_sync = true;
	return store_persist_ready(f->s, &rd);
}

static int sql_set_hard_state(fixture *f, const raft_hard_state *hs, bool sync)
{
	raft_ready rd;

	memset(&rd, 0, sizeof(rd));
	rd.has_hard_state = true;
	rd.hard_state = *hs;
	rd.must_sync = sync;
	return store_persist_ready(f->s, &rd);
}

/* Applies the log up to index through store_apply, so compaction may reach it. The entries are
 * not kv commands: each is applied as a rejected (malformed) command. */
static void sql_mark_applied(fixture *f, uint64_t index)
{
	uint64_t lo = store_applied_index(f->s) + 1;
	raft_entry *e = NULL;
	size_t n = 0;

	if (index < lo)
		return;
	CU_ASSERT_EQUAL_FATAL(f->st->entries(f->st->ctx, lo, index + 1, UINT64_MAX, &e, &n),
	                      RAFT_OK);
	CU_ASSERT_EQUAL(n, index + 1 - lo);
	CU_ASSERT_EQUAL(store_apply(f->s, e, n, NULL, NULL), STORE_OK);
	raft_entries_free(e, n);
	CU_ASSERT_EQUAL_FATAL(store_applied_index(f->s), index);
}

/* Calls store_compact until no rows up to i remain; *calls (may be NULL) counts the calls. */
static int sql_compact_all(store *s, uint64_t i, size_t chunk, int *calls)
{
	bool more = true;
	int rv = STORE_OK;

	while (rv == STORE_OK && more) {
		rv = store_compact(s, i, chunk, &more);
		if (calls != NULL)
			(*calls)++;
	}
	return rv;
}

/* Compacts in chunks of 3 rows so that multi-chunk GC runs on every compaction. */
static int sql_compact(fixture *f, uint64_t i)
{
	uint64_t last = 0;

	f->st->last_index(f->st->ctx, &last);
	if (i > f->s->truncated_index && i <= last)
		sql_mark_applied(f, i);
	return sql_compact_all(f->s, i, 3, NULL);
}

static void sql_reopen(fixture *f)
{
	store_close(f->s);
	f->s = NULL;
	f->st = NULL;
	sql_open(f);
}

#define SNAP_SOURCE_NODE 9
#define SNAP_WAIT_MS     10000 /* bound on waiting for one dump */
#define SNAP_WAIT_ROUNDS 3     /* dumps to wait for: one that ends unusable starts another */

/* Sets src's applied point and conf state directly, as applying entries up to it would. */
static void snap_source_set(store *src, const raft_snapshot_metadata *m)
{
	unsigned char conf[1 + 8 * RAFT_MAX_VOTERS];
	size_t len = store_conf_encode(&m->conf_state, conf, sizeof(conf));
	sqlite3_stmt *stmt = NULL;

	CU_ASSERT_FATAL(len > 0 && len <= sizeof(conf));
	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(src->db,
	                                         "UPDATE apply_state SET applied_index = ?1, "
	                                         "applied_term = ?2, conf_state = ?3 WHERE id = 1",
	                                         -1, &stmt, NULL),
	                      SQLITE_OK);
	sqlite3_bind_int64(stmt, 1, (sqlite3_int64)m->index);
	sqlite3_bind_int64(stmt, 2, (sqlite3_int64)m->term);
	sqlite3_bind_blob(stmt, 3, conf, (int)len, SQLITE_STATIC);
	CU_ASSERT_EQUAL(sqlite3_step(stmt), SQLITE_DONE);
	sqlite3_finalize(stmt);
	src->applied_index = m->index;
	src->applied_term = m->term;
	src->conf_state = m->conf_state;
}

/* Asks src for a snapshot; while one is being dumped, blocks until the dump ends and asks
 * again. On STORE_OK the caller owns out->data. */
static int snap_source_await(store *src, raft_snapshot *out)
{
	int rv = store_snapshot_request(src, out);

	for (int round = 0;
	     rv == RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE && round < SNAP_WAIT_ROUNDS; round++) {
		if (store_snapshot_wait(src, SNAP_WAIT_MS) != STORE_OK)
			break;
		rv = store_snapshot_request(src, out);
	}
	return rv;
}

/* Copies src's snapshot file id into dst's staging, as a transfer would. */
static void snap_stage(store *src, store *dst, const store_snapshot_id *id)
{
	unsigned char buf[8192];
	uint64_t size = 0, off = 0;
	char *path = NULL;
	FILE *fp;
	size_t n;

	CU_ASSERT_EQUAL_FATAL(store_snapshot_path(src, id, &path, &size), STORE_OK);
	fp = fopen(path, "rb");
	free(path);
	CU_ASSERT_FATAL(fp != NULL);
	CU_ASSERT_EQUAL_FATAL(store_staging_begin(dst, id), STORE_OK);
	while ((n = fread(buf, 1, sizeof(buf), fp)) > 0) {
		CU_ASSERT_EQUAL(store_staging_write(dst, id, off, buf, n), STORE_OK);
		off += n;
	}
	fclose(fp);
	CU_ASSERT_EQUAL(off, size);
	CU_ASSERT_EQUAL_FATAL(store_staging_finish(dst, id), STORE_OK);
}

/*
 * A snapshot with want's metadata, made the way a follower gets one: a source store (another
 * node in the same directory) whose applied point is want's dumps it, the file is staged into
 * the store under test, and a Ready carrying it is persisted.
 */
static int sql_apply_snapshot(fixture *f, const raft_snapshot *want)
{
	char path[160], err[512];
	raft_snapshot snap;
	store_snapshot_id id;
	store_options o;
	raft_ready rd;
	store *src = NULL;
	int rv;

	store_options_init(&o);
	o.cluster_id = 0xc0ffee;
	o.node_id = SNAP_SOURCE_NODE;
	snprintf(path, sizeof(path), "%s/node-%d.db", f->dir, SNAP_SOURCE_NODE);
	CU_ASSERT_EQUAL_FATAL(store_open(path, &o, &src, err, sizeof(err)), STORE_OK);
	CU_ASSERT_EQUAL_FATAL(store_set_snapshot_dir(src, f->dir), STORE_OK);
	snap_source_set(src, &want->metadata);
	memset(&snap, 0, sizeof(snap));
	CU_ASSERT_EQUAL_FATAL(snap_source_await(src, &snap), STORE_OK);
	CU_ASSERT_EQUAL(snap.metadata.index, want->metadata.index);
	CU_ASSERT_EQUAL(snap.metadata.term, want->metadata.term);
	CU_ASSERT_EQUAL_FATAL(store_snapshot_id_decode(snap.data, snap.len, &id), STORE_OK);
	snap_stage(src, f->s, &id);
	memset(&rd, 0, sizeof(rd));
	rd.has_snapshot = true;
	rd.snapshot = snap;
	rd.must_sync = true;
	rv = store_persist_ready(f->s, &rd);
	raft_snapshot_clear(&snap);
	store_close(src);
	return rv;
}

static const backend sqlite_backend = {
    .name = "sqlite",
    .setup = sql_setup,
    .teardown = sql_teardown,
    .append = sql_append,
    .set_hard_state = sql_set_hard_state,
    .apply_snapshot = sql_apply_snapshot,
    .compact = sql_compact,
    .reopen = sql_reopen,
};

static int suite_init_memory(void)
{
	contract_backend = &memory_backend;
	return 0;
}

static int suite_init_sqlite(void)
{
	contract_backend = &sqlite_backend;
	return 0;
}

static void fix_setup(void)
{
	memset(&contract_fix, 0, sizeof(contract_fix));
	contract_fix.b = contract_backend;
	contract_backend->setup(&contract_fix);
}

static void fix_teardown(void)
{
	contract_fix.b->teardown(&contract_fix);
}

/* ---- the model: what the storage must answer ---- */

#define MODEL_MAX 8192

/* Entries (trunc, last] have terms[i]; entry payloads are a function of (index, term). */
typedef struct model {
	uint64_t trunc, trunc_term, last;
	uint64_t terms[MODEL_MAX + 1];
	raft_hard_state hs;
	raft_conf_state cs;
} model;

static model contract_model;

static size_t payload_len(uint64_t index, uint64_t term)
{
	return (size_t)((index * 7 + term * 3) % 23);
}

static uint8_t payload_byte(uint64_t index, uint64_t term, size_t k)
{
	return (uint8_t)(index * 131 + term * 17 + k);
}

/* e->data: malloc'd, owned by the caller (raft_entries_free). */
static void entry_make(raft_entry *e, uint64_t index, uint64_t term)
{
	memset(e, 0, sizeof(*e));
	e->index = index;
	e->term = term;
	e->type = (index % 5 == 0) ? RAFT_ENTRY_CONF_CHANGE : RAFT_ENTRY_NORMAL;
	e->len = payload_len(index, term);
	if (e->len > 0) {
		uint8_t *p = malloc(e->len);

		CU_ASSERT_FATAL(p != NULL);
		for (size_t k = 0; k < e->len; k++)
			p[k] = payload_byte(index, term, k);
		e->data = p;
	}
}

static bool entry_matches(const raft_entry *e, uint64_t index, uint64_t term)
{
	const uint8_t *p = e->data;
	int type = (index % 5 == 0) ? RAFT_ENTRY_CONF_CHANGE : RAFT_ENTRY_NORMAL;

	if (e->index != index || e->term != term || e->type != type ||
	    e->len != payload_len(index, term) || (e->len > 0) != (e->data != NULL))
		return false;
	for (size_t k = 0; k < e->len; k++)
		if (p[k] != payload_byte(index, term, k))
			return false;
	return true;
}

/* ---- checks ---- */

static unsigned check_bad; /* mismatches found by the last check */

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			if (check_bad++ < 5) {                                                     \
				fprintf(stderr, "\n[%s] %s:%d: ", contract_fix.b->name, __FILE__,  \
				        __LINE__);                                                 \
				fprintf(stderr, __VA_ARGS__);                                      \
			}                                                                          \
		}                                                                                  \
	} while (0)

static void check_terms(const raft_storage *st, const model *m)
{
	uint64_t t;

	for (uint64_t i = m->trunc; i <= m->last; i++) {
		uint64_t want = i == m->trunc ? m->trunc_term : m->terms[i];
		int rv = st->term(st->ctx, i, &t);

		CHECK(rv == RAFT_OK && t == want, "term(%llu) = %d/%llu, want %llu\n",
		      (unsigned long long)i, rv, (unsigned long long)t, (unsigned long long)want);
	}
	if (m->trunc > 0)
		CHECK(st->term(st->ctx, m->trunc - 1, &t) == RAFT_ERR_COMPACTED,
		      "term below the dummy is not COMPACTED\n");
	CHECK(st->term(st->ctx, m->last + 1, &t) == RAFT_ERR_UNAVAILABLE,
	      "term past the last index is not UNAVAILABLE\n");
}

static void check_entries(const raft_storage *st, const model *m)
{
	raft_entry *e = NULL;
	size_t n = 0;
	int rv = st->entries(st->ctx, m->trunc + 1, m->last + 1, UINT64_MAX, &e, &n);

	CHECK(rv == RAFT_OK && n == m->last - m->trunc, "entries(all) = %d, n %zu\n", rv, n);
	for (size_t k = 0; rv == RAFT_OK && k < n; k++)
		CHECK(entry_matches(&e[k], m->trunc + 1 + k, m->terms[m->trunc + 1 + k]),
		      "entry %llu differs\n", (unsigned long long)(m->trunc + 1 + k));
	raft_entries_free(e, n);
	rv = st->entries(st->ctx, m->trunc, m->last + 1, UINT64_MAX, &e, &n);
	CHECK(rv == RAFT_ERR_COMPACTED && e == NULL && n == 0, "entries(dummy) = %d\n", rv);
	rv = st->entries(st->ctx, m->trunc + 1, m->last + 2, UINT64_MAX, &e, &n);
	CHECK(rv == RAFT_ERR_UNAVAILABLE && e == NULL && n == 0, "entries(past last) = %d\n", rv);
}

static void check_state(const raft_storage *st, const model *m)
{
	raft_hard_state hs;
	raft_conf_state cs;
	uint64_t first = 0, last = 0;

	CHECK(st->first_index(st->ctx, &first) == RAFT_OK && first == m->trunc + 1,
	      "first_index %llu, want %llu\n", (unsigned long long)first,
	      (unsigned long long)(m->trunc + 1));
	CHECK(st->last_index(st->ctx, &last) == RAFT_OK && last == m->last,
	      "last_index %llu, want %llu\n", (unsigned long long)last,
	      (unsigned long long)m->last);
	memset(&cs, 0xff, sizeof(cs));
	CHECK(st->initial_state(st->ctx, &hs, &cs) == RAFT_OK, "initial_state failed\n");
	CHECK(hs.term == m->hs.term && hs.vote == m->hs.vote && hs.commit == m->hs.commit,
	      "hard state (%llu, %llu, %llu)\n", (unsigned long long)hs.term,
	      (unsigned long long)hs.vote, (unsigned long long)hs.commit);
	CHECK(cs.n_voters == m->cs.n_voters &&
	          memcmp(cs.voters, m->cs.voters, cs.n_voters * sizeof(uint64_t)) == 0,
	      "conf state differs (%zu voters)\n", cs.n_voters);
}

/* Compares the storage with m, then (durable backends) reopens it and compares again. */
static void expect(fixture *f, const model *m)
{
	check_bad = 0;
	check_state(f->st, m);
	check_terms(f->st, m);
	check_entries(f->st, m);
	CU_ASSERT_EQUAL(check_bad, 0);
	if (f->b->reopen == NULL)
		return;
	f->b->reopen(f);
	check_bad = 0;
	check_state(f->st, m);
	check_terms(f->st, m);
	check_entries(f->st, m);
	CU_ASSERT_EQUAL(check_bad, 0);
}

/* ---- operations, applied to the backend and the model ---- */

/* Appends entries first .. first + n - 1, entry k with terms[k] (or term when terms is NULL),
 * and expects rv. On RAFT_OK the model follows the memory storage's rule: entries at or below
 * the dummy are skipped and the rest overwrite the log from their first index. */
static void op_append(fixture *f, model *m, uint64_t first, size_t n, const uint64_t *terms,
                      uint64_t term, int want)
{
	raft_entry *e = calloc(n, sizeof(*e));

	CU_ASSERT_FATAL(e != NULL && first + n - 1 <= MODEL_MAX);
	for (size_t k = 0; k < n; k++)
		entry_make(&e[k], first + k, terms != NULL ? terms[k] : term);
	CU_ASSERT_EQUAL(f->b->append(f, e, n), want);
	raft_entries_free(e, n);
	if (want != RAFT_OK || first + n - 1 <= m->trunc)
		return;
	for (size_t k = 0; k < n; k++)
		if (first + k > m->trunc)
			m->terms[first + k] = terms != NULL ? terms[k] : term;
	m->last = first + n - 1;
}

static void op_hard_state(fixture *f, model *m, uint64_t term, uint64_t vote, uint64_t commit,
                          bool sync)
{
	raft_hard_state hs = {term, vote, commit};

	CU_ASSERT_EQUAL(f->b->set_hard_state(f, &hs, sync), RAFT_OK);
	m->hs = hs;
}

static void op_compact(fixture *f, model *m, uint64_t i, int want)
{
	CU_ASSERT_EQUAL(f->b->compact(f, i), want);
	if (want != RAFT_OK)
		return;
	m->trunc_term = m->terms[i];
	m->trunc = i;
}

/* Applies a snapshot at (index, term) with voters 1 .. n_voters, if the backend can. */
static void op_snapshot(fixture *f, model *m, uint64_t index, uint64_t term, size_t n_voters)
{
	raft_snapshot snap;

	if (f->b->apply_snapshot == NULL)
		return;
	memset(&snap, 0, sizeof(snap));
	snap.metadata.index = index;
	snap.metadata.term = term;
	snap.metadata.conf_state.n_voters = n_voters;
	for (size_t k = 0; k < n_voters; k++)
		snap.metadata.conf_state.voters[k] = 1 + k;
	CU_ASSERT_EQUAL_FATAL(f->b->apply_snapshot(f, &snap), RAFT_OK);
	m->trunc = m->last = index;
	m->trunc_term = term;
	m->cs = snap.metadata.conf_state;
}

/* ---- the contract ---- */

static void test_fresh(void)
{
	fixture *f = &contract_fix;
	model *m = &contract_model;
	raft_entry *e = NULL;
	size_t n = 1;

	memset(m, 0, sizeof(*m));
	expect(f, m);
	CU_ASSERT_EQUAL(f->st->entries(f->st->ctx, 1, 1, 0, &e, &n), RAFT_OK);
	CU_ASSERT_PTR_NULL(e);
	CU_ASSERT_EQUAL(n, 0);
}

static void test_append_overwrite(void)
{
	static const uint64_t t5[] = {1, 1, 2, 2, 2};
	fixture *f = &contract_fix;
	model *m = &contract_model;

	memset(m, 0, sizeof(*m));
	op_append(f, m, 1, 5, t5, 0, RAFT_OK);
	expect(f, m);
	/* A conflicting suffix from 4 on is replaced, and the log grows past the old end. */
	op_append(f, m, 4, 3, NULL, 3, RAFT_OK);
	expect(f, m);
	op_append(f, m, 7, 2, NULL, 3, RAFT_OK);
	expect(f, m);
	/* An append inside the log cuts everything after it. */
	op_append(f, m, 3, 1, NULL, 4, RAFT_OK);
	CU_ASSERT_EQUAL(m->last, 3);
	expect(f, m);
	/* A gap is refused and changes nothing. */
	op_append(f, m, 5, 2, NULL, 4, RAFT_ERR_INVALID);
	expect(f, m);
}

static void test_compact_dummy_term(void)
{
	static const uint64_t t10[] = {1, 1, 2, 2, 3, 3, 3, 4, 5, 5};
	fixture *f = &contract_fix;
	model *m = &contract_model;

	memset(m, 0, sizeof(*m));
	op_append(f, m, 1, 10, t10, 0, RAFT_OK);
	op_compact(f, m, 4, RAFT_OK);
	expect(f, m); /* term(4) == 2 is the dummy; term(3) is COMPACTED */
	op_compact(f, m, 4, RAFT_ERR_COMPACTED);
	op_compact(f, m, 2, RAFT_ERR_COMPACTED);
	expect(f, m);
	op_compact(f, m, 10, RAFT_OK);
	CU_ASSERT_EQUAL(m->trunc_term, 5);
	expect(f, m); /* an empty log after the dummy: first 11, last 10 */
	/* Entries at or below the dummy are skipped; the rest append. */
	op_append(f, m, 9, 4, NULL, 6, RAFT_OK);
	CU_ASSERT_EQUAL(m->last, 12);
	expect(f, m);
	op_append(f, m, 13, 2, NULL, 6, RAFT_OK);
	op_compact(f, m, 11, RAFT_OK);
	expect(f, m);
}

static void test_entries_boundary(void)
{
	fixture *f = &contract_fix;
	model *m = &contract_model;
	const raft_storage *st;
	raft_entry *e = NULL;
	size_t n = 0;

	memset(m, 0, sizeof(*m));
	op_append(f, m, 1, 10, NULL, 2, RAFT_OK);
	op_compact(f, m, 5, RAFT_OK);
	expect(f, m);
	st = f->st;
	CU_ASSERT_EQUAL(st->entries(st->ctx, 5, 8, UINT64_MAX, &e, &n), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(st->entries(st->ctx, 1, 3, UINT64_MAX, &e, &n), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL_FATAL(st->entries(st->ctx, 6, 9, UINT64_MAX, &e, &n), RAFT_OK);
	CU_ASSERT_EQUAL(n, 3);
	for (size_t k = 0; k < n; k++)
		CU_ASSERT(entry_matches(&e[k], 6 + k, 2));
	raft_entries_free(e, n);
	CU_ASSERT_EQUAL_FATAL(st->entries(st->ctx, 6, 11, UINT64_MAX, &e, &n), RAFT_OK);
	CU_ASSERT_EQUAL(n, 5);
	raft_entries_free(e, n);
	CU_ASSERT_EQUAL(st->entries(st->ctx, 6, 12, UINT64_MAX, &e, &n), RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(st->entries(st->ctx, 8, 6, UINT64_MAX, &e, &n), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(st->entries(st->ctx, 6, 6, UINT64_MAX, &e, &n), RAFT_OK);
	CU_ASSERT_EQUAL(n, 0);
}

/* The number of entries from lo that fit max_size, by the contract's rule. */
static size_t fit_count(uint64_t lo, uint64_t hi, uint64_t term, uint64_t max_size)
{
	uint64_t total = payload_len(lo, term);
	size_t count = 1;

	while (lo + count < hi) {
		uint64_t len = payload_len(lo + count, term);

		if (len > max_size || total > max_size - len)
			break;
		total += len;
		count++;
	}
	return count;
}

static void test_max_size(void)
{
	fixture *f = &contract_fix;
	model *m = &contract_model;
	const raft_storage *st;

	memset(m, 0, sizeof(*m));
	op_append(f, m, 1, 40, NULL, 3, RAFT_OK);
	expect(f, m);
	st = f->st;
	for (uint64_t lo = 1; lo <= 40; lo += 3) {
		for (uint64_t max = 0; max <= 120; max += 7) {
			raft_entry *e = NULL;
			size_t n = 0;
			size_t want = fit_count(lo, 41, 3, max);

			CU_ASSERT_EQUAL_FATAL(st->entries(st->ctx, lo, 41, max, &e, &n), RAFT_OK);
			CU_ASSERT_EQUAL(n, want);
			CU_ASSERT(n >= 1);
			for (size_t k = 0; k < n; k++)
				CU_ASSERT(entry_matches(&e[k], lo + k, 3));
			raft_entries_free(e, n);
		}
	}
}

static void test_apply_snapshot(void)
{
	fixture *f = &contract_fix;
	model *m = &contract_model;

	if (f->b->apply_snapshot == NULL) {
		fprintf(stderr, "\n[%s] apply snapshot: not available yet, skipped ", f->b->name);
		return;
	}
	memset(m, 0, sizeof(*m));
	op_append(f, m, 1, 10, NULL, 2, RAFT_OK);
	op_hard_state(f, m, 2, 1, 10, true);
	/* Beyond the log: the log is replaced by the dummy at the snapshot. */
	op_snapshot(f, m, 20, 5, 3);
	expect(f, m);
	op_append(f, m, 21, 5, NULL, 6, RAFT_OK);
	/* Inside the log, the snapshot still wipes it: nothing above 23 survives. */
	op_snapshot(f, m, 23, 6, 1);
	CU_ASSERT_EQUAL(m->last, 23);
	expect(f, m);
	op_append(f, m, 24, 3, NULL, 7, RAFT_OK);
	expect(f, m);
}

static void test_hard_state(void)
{
	fixture *f = &contract_fix;
	model *m = &contract_model;

	memset(m, 0, sizeof(*m));
	op_hard_state(f, m, 1, 0, 0, true);
	expect(f, m);
	op_hard_state(f, m, 2, 3, 0, true);
	expect(f, m);
	op_append(f, m, 1, 4, NULL, 2, RAFT_OK);
	/* A commit-only change is persisted without a forced sync. */
	op_hard_state(f, m, 2, 3, 4, false);
	expect(f, m);
	op_hard_state(f, m, UINT64_MAX, UINT64_MAX - 1, UINT64_MAX - 2, true);
	expect(f, m);
}

/* More entries than the SQLite store's term cache holds, overwritten across its boundary. */
static void test_long_log(void)
{
	fixture *f = &contract_fix;
	model *m = &contract_model;

	memset(m, 0, sizeof(*m));
	for (uint64_t first = 1; first <= 5000; first += 500)
		op_append(f, m, first, 500, NULL, 1 + first / 700, RAFT_OK);
	op_append(f, m, 4500, 1500, NULL, 20, RAFT_OK);
	CU_ASSERT_EQUAL(m->last, 5999);
	op_compact(f, m, 1000, RAFT_OK);
	expect(f, m);
	op_append(f, m, 1200, 10, NULL, 21, RAFT_OK);
	expect(f, m);
}

static uint64_t rng_next(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* One seeded sequence of random appends (with overwrites), hard states and compactions. */
static void random_run(fixture *f, model *m, uint64_t seed, int steps)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
	uint64_t term = 1;

	memset(m, 0, sizeof(*m));
	for (int step = 0; step < steps; step++) {
		uint64_t r = rng_next(&x) % 10;

		if (r < 6) {
			uint64_t back = rng_next(&x) % 6;
			uint64_t first = m->last + 1 > back ? m->last + 1 - back : 1;
			size_t n = 1 + rng_next(&x) % 8;

			if (first <= m->trunc)
				first = m->trunc + 1;
			term += rng_next(&x) % 2;
			op_append(f, m, first, n, NULL, term, RAFT_OK);
		} else if (r < 8) {
			op_hard_state(f, m, term, rng_next(&x) % 4, m->last, rng_next(&x) % 2);
		} else if (r == 8 && rng_next(&x) % 3 == 0) {
			op_snapshot(f, m, m->trunc + 1 + rng_next(&x) % (m->last - m->trunc + 4),
			            term, 1 + rng_next(&x) % 3);
		} else if (m->last > m->trunc) {
			op_compact(f, m, m->trunc + 1 + rng_next(&x) % (m->last - m->trunc),
			           RAFT_OK);
		}
		expect(f, m);
	}
}

static void test_random(void)
{
	const char *env = getenv("RAFTKV_CONTRACT_SEED");
	uint64_t first = env != NULL ? strtoull(env, NULL, 0) : 1;
	int n_seeds = env != NULL ? 1 : 4;

	for (int k = 0; k < n_seeds; k++) {
		unsigned before = CU_get_number_of_failures();

		if (k > 0) {
			contract_fix.b->teardown(&contract_fix);
			contract_fix.b->setup(&contract_fix);
		}
		random_run(&contract_fix, &contract_model, first + (uint64_t)k, 60);
		if (CU_get_number_of_failures() != before)
			fprintf(stderr, "\n[%s] random: failed with RAFTKV_CONTRACT_SEED=%llu\n",
			        contract_fix.b->name, (unsigned long long)(first + (uint64_t)k));
	}
}

/* ---- SQLite-only parts of the contract ---- */

static int count_commit(void *ctx)
{
	(*(int *)ctx)++;
	return 0;
}

/* A Ready is one transaction; GC is one call and one transaction per chunk, each recording the
 * truncated index and term with its deletions. */
static void test_sqlite_transactions(void)
{
	fixture *f = &contract_fix;
	model *m = &contract_model;
	raft_entry e[100];
	raft_ready rd;
	int commits = 0, calls = 0;

	memset(m, 0, sizeof(*m));
	memset(&rd, 0, sizeof(rd));
	for (size_t k = 0; k < 100; k++)
		entry_make(&e[k], 1 + k, 7);
	rd.entries = e;
	rd.n_entries = 100;
	rd.has_hard_state = true;
	rd.hard_state = (raft_hard_state){7, 1, 0};
	rd.must_sync = true;
	sqlite3_commit_hook(f->s->db, count_commit, &commits);
	CU_ASSERT_EQUAL(store_persist_ready(f->s, &rd), STORE_OK);
	CU_ASSERT_EQUAL(commits, 1);
	for (size_t k = 0; k < 100; k++)
		free(e[k].data);
	for (uint64_t i = 1; i <= 100; i++)
		m->terms[i] = 7;
	m->last = 100;
	m->hs = rd.hard_state;

	sql_mark_applied(f, 50);
	commits = 0;
	CU_ASSERT_EQUAL(sql_compact_all(f->s, 50, 7, &calls), STORE_OK);
	CU_ASSERT_EQUAL(calls, 8); /* ceil(50 / 7) */
	CU_ASSERT_EQUAL(commits, 8);
	sqlite3_commit_hook(f->s->db, NULL, NULL);
	m->trunc = 50;
	m->trunc_term = 7;
	expect(f, m);
}

static void test_sqlite_compact_limits(void)
{
	fixture *f = &contract_fix;
	model *m = &contract_model;

	memset(m, 0, sizeof(*m));
	op_append(f, m, 1, 10, NULL, 1, RAFT_OK);
	sql_mark_applied(f, 5);
	CU_ASSERT_EQUAL(store_compact(f->s, 6, 0, NULL), STORE_ERR_INVALID);
	CU_ASSERT(strlen(store_errmsg(f->s)) > 0);
	CU_ASSERT_EQUAL(store_failed(f->s), STORE_OK);
	CU_ASSERT_EQUAL(store_compact(f->s, 5, 0, NULL), STORE_OK);
	CU_ASSERT_EQUAL(store_compact(f->s, 5, 0, NULL), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(store_compact(f->s, 3, 0, NULL), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(store_failed(f->s), STORE_OK);
	m->trunc = 5;
	m->trunc_term = 1;
	expect(f, m);
}

/* ---- registration ---- */

static void add_contract_tests(CU_pSuite s)
{
	CU_add_test(s, "fresh storage", test_fresh);
	CU_add_test(s, "append with overwrite", test_append_overwrite);
	CU_add_test(s, "compact and the dummy term", test_compact_dummy_term);
	CU_add_test(s, "entries across the compaction boundary", test_entries_boundary);
	CU_add_test(s, "entries max_size", test_max_size);
	CU_add_test(s, "apply snapshot wipes the log", test_apply_snapshot);
	CU_add_test(s, "hard state round trip", test_hard_state);
	CU_add_test(s, "long log", test_long_log);
	CU_add_test(s, "random operations", test_random);
}

void test_register_storage_contract(void)
{
	CU_pSuite mem = CU_add_suite_with_setup_and_teardown(
	    "storage_contract_memory", suite_init_memory, NULL, fix_setup, fix_teardown);
	CU_pSuite sql = CU_add_suite_with_setup_and_teardown(
	    "storage_contract_sqlite", suite_init_sqlite, NULL, fix_setup, fix_teardown);

	if (mem == NULL || sql == NULL)
		return;
	add_contract_tests(mem);
	add_contract_tests(sql);
	CU_add_test(sql, "one transaction per Ready and per GC chunk", test_sqlite_transactions);
	CU_add_test(sql, "compaction limits", test_sqlite_compact_limits);
}
