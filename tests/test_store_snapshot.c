/* test_store_snapshot.c - CUnit suite "store_snapshot": CRC-32C, ids, dump, staging, install. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/command.h"
#include "store/store_internal.h"
#include "suites.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TS_SANITIZED 1
#else
#define TS_SANITIZED 0
#endif

#define TS_WAIT_MS       10000 /* bound on waiting for a dump */
#define TS_WRITE_PACE_MS 1     /* the concurrent writer's step while a dump runs (ts_await) */
#define TS_CLUSTER_ID    0x5eedULL
#define TS_TERM          3
#define TS_RESULT_SEQ    1000 /* session_results rows written by ts_write use seq 1000 + index */

static uint32_t ts_seed_value; /* printed at registration; RKV_TEST_SEED overrides */

/* ---- directories and stores ---- */

/* A fresh directory; the name is written into dir (at least 64 bytes). */
static void ts_dir_new(char *dir)
{
	strcpy(dir, "/tmp/rkv-snap-XXXXXX");
	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
}

/* Removes dir and every file in it. */
static void ts_dir_remove(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[512];

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

/* Counts the entries of dir whose name starts with prefix and ends with suffix. */
static int ts_dir_count(const char *dir, const char *prefix, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t pl = strlen(prefix), sl = strlen(suffix);
	int n = 0;

	CU_ASSERT_FATAL(d != NULL);
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name);

		if (l >= pl + sl && strncmp(e->d_name, prefix, pl) == 0 &&
		    strcmp(e->d_name + l - sl, suffix) == 0)
			n++;
	}
	closedir(d);
	return n;
}

static bool ts_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void ts_db_path(char *out, size_t cap, const char *dir, uint64_t node)
{
	snprintf(out, cap, "%s/node-%" PRIu64 ".db", dir, node);
}

/* Opens (creating) node's store in dir; cache_kib 0 for the default. The caller closes it. */
static store *ts_open(const char *dir, uint64_t node, int cache_kib)
{
	store_options o;
	char path[256], err[256];
	store *s = NULL;
	int rv;

	store_options_init(&o);
	o.cluster_id = TS_CLUSTER_ID;
	o.node_id = node;
	o.cache_size_kib = cache_kib;
	ts_db_path(path, sizeof(path), dir, node);
	rv = store_open(path, &o, &s, err, sizeof(err));
	if (rv != STORE_OK)
		printf("store_open %s: %s\n", path, err);
	CU_ASSERT_EQUAL_FATAL(rv, STORE_OK);
	CU_ASSERT_EQUAL_FATAL(store_set_snapshot_dir(s, dir), STORE_OK);
	return s;
}

static void ts_staging_path(char *out, size_t cap, const char *dir, uint64_t self,
                            const store_snapshot_id *id)
{
	snprintf(out, cap, "%s/staging-%" PRIu64 ".%" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%016" PRIx64,
	         dir, self, id->node_id, id->index, id->term, id->nonce);
}

/* ---- a test-only SQL connection that plays the state machine ---- */

/* Statements on a second connection to a store's file. Everything is bound as blobs or
 * integers exactly as kv.c stores them. */
typedef struct ts_sql {
	sqlite3 *db;
	sqlite3_stmt *put;     /* INSERT OR REPLACE INTO kv */
	sqlite3_stmt *session; /* INSERT OR REPLACE INTO sessions */
	sqlite3_stmt *result;  /* INSERT OR REPLACE INTO session_results */
	sqlite3_stmt *apply;   /* UPDATE apply_state */
} ts_sql;

static void ts_exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);

	if (rc != SQLITE_OK)
		printf("%s: %s\n", sql, err != NULL ? err : sqlite3_errstr(rc));
	sqlite3_free(err);
	CU_ASSERT_EQUAL_FATAL(rc, SQLITE_OK);
}

static void ts_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, st, NULL), SQLITE_OK);
}

static void ts_sql_open(ts_sql *t, const char *dir, uint64_t node)
{
	char path[256];

	memset(t, 0, sizeof(*t));
	ts_db_path(path, sizeof(path), dir, node);
	CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(path, &t->db, SQLITE_OPEN_READWRITE, NULL),
	                      SQLITE_OK);
	sqlite3_busy_timeout(t->db, 5000);
	ts_exec(t->db, "PRAGMA synchronous=OFF; PRAGMA cache_size=-1024");
	ts_prepare(t->db, "INSERT OR REPLACE INTO kv(key, value) VALUES (?1, ?2)", &t->put);
	ts_prepare(t->db, "INSERT OR REPLACE INTO sessions VALUES (?1, ?2, ?3, ?4)", &t->session);
	ts_prepare(t->db, "INSERT OR REPLACE INTO session_results VALUES (?1, ?2, ?3, ?4)",
	           &t->result);
	ts_prepare(t->db,
	           "UPDATE apply_state SET applied_index = ?1, applied_term = ?2,"
	           " conf_state = x'03010000000000000002000000000000000300000000000000'"
	           " WHERE id = 1",
	           &t->apply);
}

static void ts_sql_close(ts_sql *t)
{
	sqlite3_finalize(t->put);
	sqlite3_finalize(t->session);
	sqlite3_finalize(t->result);
	sqlite3_finalize(t->apply);
	CU_ASSERT_EQUAL(sqlite3_close(t->db), SQLITE_OK);
}

static void ts_step(sqlite3_stmt *st)
{
	CU_ASSERT_EQUAL_FATAL(sqlite3_step(st), SQLITE_DONE);
	sqlite3_reset(st);
}

static void ts_put(ts_sql *t, const void *key, size_t klen, const void *value, size_t vlen)
{
	static const char empty[1];

	sqlite3_bind_blob(t->put, 1, key, (int)klen, SQLITE_STATIC);
	sqlite3_bind_blob(t->put, 2, vlen > 0 ? value : empty, (int)vlen, SQLITE_STATIC);
	ts_step(t->put);
}

static void ts_session(ts_sql *t, uint64_t client, uint64_t epoch, uint64_t last, uint64_t low)
{
	sqlite3_bind_int64(t->session, 1, (sqlite3_int64)client);
	sqlite3_bind_int64(t->session, 2, (sqlite3_int64)epoch);
	sqlite3_bind_int64(t->session, 3, (sqlite3_int64)last);
	sqlite3_bind_int64(t->session, 4, (sqlite3_int64)low);
	ts_step(t->session);
}

/* value NULL stores SQL NULL. */
static void ts_result(ts_sql *t, uint64_t client, uint64_t seq, int status, const char *value)
{
	sqlite3_bind_int64(t->result, 1, (sqlite3_int64)client);
	sqlite3_bind_int64(t->result, 2, (sqlite3_int64)seq);
	sqlite3_bind_int(t->result, 3, status);
	if (value != NULL)
		sqlite3_bind_blob(t->result, 4, value, (int)strlen(value), SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(t->result, 4);
	ts_step(t->result);
}

static void ts_set_applied(ts_sql *t, uint64_t index)
{
	sqlite3_bind_int64(t->apply, 1, (sqlite3_int64)index);
	sqlite3_bind_int64(t->apply, 2, TS_TERM);
	ts_step(t->apply);
}

/* ---- the data model: seed rows, then one write per log index ---- */

/* Key i is "k%08u"; its seed value is value_len bytes (0: a length varying with i, including
 * empty) derived from the suite seed. */
static size_t ts_key(char *buf, uint32_t i)
{
	return (size_t)sprintf(buf, "k%08u", i);
}

static size_t ts_seed_val(unsigned char *buf, uint32_t i, size_t value_len)
{
	uint32_t x = ts_seed_value ^ (i * 2654435761u);
	size_t len = value_len > 0 ? value_len : (size_t)(x % 97);

	for (size_t k = 0; k < len; k++) {
		x = x * 1103515245u + 12345u;
		buf[k] = (unsigned char)(x >> 16);
	}
	return len;
}

/* The key written by log index j of a store seeded with n keys, and its value. */
static uint32_t ts_write_key(uint64_t j, uint32_t n)
{
	return (uint32_t)((j * 7919) % n);
}

static size_t ts_write_val(char *buf, uint64_t j)
{
	return (size_t)sprintf(buf, "v@%" PRIu64, j);
}

/* The membership ts_set_applied writes, as a conf state. */
static const raft_conf_state ts_voters = {.voters = {1, 2, 3}, .n_voters = 3};

/* Seeds n keys, 5 sessions and 15 session results, and sets applied = n, in one transaction
 * on t, the SQL connection to s's file; then records the membership through s, which refuses
 * to dump without one. Sessions: client c has epoch 10c, last_index c, low_seq c. Results:
 * (c, seq 1..3), status seq % 2, value NULL for seq 2 and "r<c>.<seq>" otherwise. */
static void ts_seed(store *s, ts_sql *t, uint32_t n, size_t value_len)
{
	unsigned char *val = malloc(value_len > 97 ? value_len : 97);
	char key[16], rv[32];

	CU_ASSERT_FATAL(val != NULL);
	ts_exec(t->db, "BEGIN IMMEDIATE");
	for (uint32_t i = 0; i < n; i++) {
		size_t kl = ts_key(key, i);

		ts_put(t, key, kl, val, ts_seed_val(val, i, value_len));
	}
	for (uint64_t c = 1; c <= 5; c++) {
		ts_session(t, c, 10 * c, c, c);
		for (uint64_t seq = 1; seq <= 3; seq++) {
			snprintf(rv, sizeof(rv), "r%" PRIu64 ".%" PRIu64, c, seq);
			ts_result(t, c, seq, (int)(seq % 2), seq == 2 ? NULL : rv);
		}
	}
	ts_set_applied(t, n);
	ts_exec(t->db, "COMMIT");
	free(val);
	CU_ASSERT_EQUAL_FATAL(store_set_conf_state(s, &ts_voters), STORE_OK);
}

/* Applies log index j (> n) in one transaction: overwrites one key, touches session 1 and
 * records a result for it, and moves applied to j. */
static void ts_write(ts_sql *t, uint32_t n, uint64_t j)
{
	char key[16], val[32];
	size_t kl = ts_key(key, ts_write_key(j, n));
	size_t vl = ts_write_val(val, j);

	ts_exec(t->db, "BEGIN IMMEDIATE");
	ts_put(t, key, kl, val, vl);
	ts_session(t, 1, 10, j, 1);
	ts_result(t, 1, TS_RESULT_SEQ + j, 0, val);
	ts_set_applied(t, j);
	ts_exec(t->db, "COMMIT");
}

/* Junk a store holds before an install replaces it. */
static void ts_seed_junk(ts_sql *t)
{
	ts_exec(t->db, "BEGIN IMMEDIATE");
	ts_put(t, "junk-a", 6, "x", 1);
	ts_put(t, "zzzz", 4, "y", 1);
	ts_session(t, 99, 1, 1, 1);
	ts_result(t, 99, 1, 1, "junk");
	ts_set_applied(t, 2);
	ts_exec(t->db, "COMMIT");
}

/* ---- checking a store's rows against the model ---- */

static sqlite3 *ts_reader(const char *dir, uint64_t node)
{
	char path[256];
	sqlite3 *db = NULL;

	ts_db_path(path, sizeof(path), dir, node);
	CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static int64_t ts_query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int64_t v;

	ts_prepare(db, sql, &st);
	CU_ASSERT_EQUAL_FATAL(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Checks the kv table of db is exactly the model at index `at` (seeded with n keys of
 * value_len, then ts_write for n+1 .. at). Returns the number of mismatching rows. */
static uint32_t ts_check_kv(sqlite3 *db, uint32_t n, size_t value_len, uint64_t at)
{
	uint64_t *last = calloc(n, sizeof(*last));
	unsigned char *want = malloc(value_len > 97 ? value_len : 97);
	sqlite3_stmt *st = NULL;
	uint32_t i = 0, bad = 0;
	char key[16];

	CU_ASSERT_FATAL(last != NULL && want != NULL);
	for (uint64_t j = n + 1; j <= at; j++)
		last[ts_write_key(j, n)] = j;
	ts_prepare(db, "SELECT key, value FROM kv ORDER BY key", &st);
	while (sqlite3_step(st) == SQLITE_ROW) {
		size_t kl = ts_key(key, i), wl;

		if (i < n && last[i] != 0)
			wl = ts_write_val((char *)want, last[i]);
		else
			wl = ts_seed_val(want, i, value_len);
		if (i >= n || (size_t)sqlite3_column_bytes(st, 0) != kl ||
		    memcmp(sqlite3_column_blob(st, 0), key, kl) != 0 ||
		    (size_t)sqlite3_column_bytes(st, 1) != wl ||
		    (wl > 0 && memcmp(sqlite3_column_blob(st, 1), want, wl) != 0))
			bad++;
		i++;
	}
	sqlite3_finalize(st);
	free(last);
	free(want);
	return bad + (i == n ? 0 : 1);
}

/* Checks sessions and session_results of db against the model at index `at`. */
static void ts_check_sessions(sqlite3 *db, uint32_t n, uint64_t at)
{
	uint64_t writes = at > n ? at - n : 0;
	sqlite3_stmt *st = NULL;
	char want[32];

	CU_ASSERT_EQUAL(ts_query_int(db, "SELECT count(*) FROM sessions"), 5);
	CU_ASSERT_EQUAL(ts_query_int(db, "SELECT last_index FROM sessions WHERE client_id = 1"),
	                (int64_t)(writes > 0 ? at : 1));
	CU_ASSERT_EQUAL(ts_query_int(db, "SELECT sum(epoch + last_index + low_seq) FROM sessions"
	                                 " WHERE client_id > 1"),
	                (2 + 3 + 4 + 5) * 12);
	CU_ASSERT_EQUAL(ts_query_int(db, "SELECT count(*) FROM session_results"),
	                (int64_t)(15 + writes));
	CU_ASSERT_EQUAL(ts_query_int(db, "SELECT count(*) FROM session_results WHERE value IS NULL"
	                                 " AND seq = 2 AND status = 0"),
	                5);
	ts_prepare(db, "SELECT client_id, seq, status, value FROM session_results WHERE seq <> 2",
	           &st);
	while (sqlite3_step(st) == SQLITE_ROW) {
		uint64_t c = (uint64_t)sqlite3_column_int64(st, 0);
		uint64_t seq = (uint64_t)sqlite3_column_int64(st, 1);

		if (seq >= TS_RESULT_SEQ)
			ts_write_val(want, seq - TS_RESULT_SEQ);
		else
			snprintf(want, sizeof(want), "r%" PRIu64 ".%" PRIu64, c, seq);
		CU_ASSERT_EQUAL(sqlite3_column_int(st, 2),
		                seq >= TS_RESULT_SEQ ? 0 : (int)(seq % 2));
		CU_ASSERT_EQUAL((size_t)sqlite3_column_bytes(st, 3), strlen(want));
		CU_ASSERT(memcmp(sqlite3_column_blob(st, 3), want, strlen(want)) == 0);
	}
	sqlite3_finalize(st);
}

/* Checks apply_state of db: applied and truncated at (index, TS_TERM), voters 1, 2, 3. */
static void ts_check_apply_state(sqlite3 *db, uint64_t index)
{
	CU_ASSERT_EQUAL(ts_query_int(db, "SELECT applied_index FROM apply_state"), (int64_t)index);
	CU_ASSERT_EQUAL(ts_query_int(db, "SELECT truncated_index FROM apply_state"),
	                (int64_t)index);
	CU_ASSERT_EQUAL(ts_query_int(db, "SELECT applied_term FROM apply_state"), TS_TERM);
	CU_ASSERT_EQUAL(ts_query_int(db, "SELECT truncated_term FROM apply_state"), TS_TERM);
	CU_ASSERT_EQUAL(ts_query_int(db, "SELECT conf_state = x'030100000000000000020000000000"
	                                 "00000300000000000000' FROM apply_state"),
	                1);
}

/* ---- snapshots ---- */

static long ts_elapsed_ms(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Asks for a snapshot until store_snapshot_request stops saying "temporarily unavailable",
 * blocking in store_snapshot_wait for the running dump to end before each new request (a dump
 * that ended without a usable file makes the request start another), for at most TS_WAIT_MS.
 * With between (the concurrent writer), calls it before each request and waits at most
 * TS_WRITE_PACE_MS at a time, so writes keep landing while the dump runs; the wait still
 * returns the moment the dump ends. Returns the last result; out is filled on STORE_OK. */
static int ts_await(store *s, raft_snapshot *out, void (*between)(void *), void *ctx)
{
	struct timespec t0;
	long left;
	int rv;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (between != NULL)
			between(ctx);
		rv = store_snapshot_request(s, out);
		if (rv != RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE)
			return rv;
		left = TS_WAIT_MS - ts_elapsed_ms(&t0);
		if (left <= 0) {
			printf("snapshot not ready after %d ms\n", TS_WAIT_MS);
			CU_FAIL("snapshot dump did not finish in time");
			return rv;
		}
		if (between != NULL && left > TS_WRITE_PACE_MS)
			left = TS_WRITE_PACE_MS;
		store_snapshot_wait(s, (unsigned)left);
	}
}

/* Makes a snapshot of s (no concurrent writes) and returns it in *out. */
static void ts_make_snapshot(store *s, raft_snapshot *out)
{
	CU_ASSERT_EQUAL_FATAL(store_snapshot_request(s, out),
	                      RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE);
	CU_ASSERT_EQUAL_FATAL(ts_await(s, out, NULL, NULL), STORE_OK);
}

static store_snapshot_id ts_snap_id(const raft_snapshot *snap)
{
	store_snapshot_id id;

	CU_ASSERT_EQUAL_FATAL(store_snapshot_id_decode(snap->data, snap->len, &id), STORE_OK);
	return id;
}

/* Stages the snapshot file src_id made by src into dst under dst_id, in chunks of chunk
 * bytes. */
static void ts_transfer_as(store *src, store *dst, const store_snapshot_id *src_id,
                           const store_snapshot_id *dst_id, size_t chunk)
{
	unsigned char *buf = malloc(chunk);
	uint64_t size = 0, off = 0;
	char *path = NULL;
	size_t n;
	FILE *f;

	CU_ASSERT_FATAL(buf != NULL);
	CU_ASSERT_EQUAL_FATAL(store_snapshot_path(src, src_id, &path, &size), STORE_OK);
	f = fopen(path, "rb");
	CU_ASSERT_FATAL(f != NULL);
	CU_ASSERT_EQUAL_FATAL(store_staging_begin(dst, dst_id), STORE_OK);
	while ((n = fread(buf, 1, chunk, f)) > 0) {
		CU_ASSERT_EQUAL_FATAL(store_staging_write(dst, dst_id, off, buf, n), STORE_OK);
		off += n;
	}
	CU_ASSERT_EQUAL(off, size);
	CU_ASSERT_EQUAL(store_staging_offset(dst, dst_id), size);
	fclose(f);
	free(path);
	free(buf);
}

static void ts_transfer(store *src, store *dst, const store_snapshot_id *id, size_t chunk)
{
	ts_transfer_as(src, dst, id, id, chunk);
}

/* Installs snap into s in one transaction, as persist_ready does. Returns the result; on
 * failure the transaction is rolled back. */
static int ts_install(store *s, const raft_snapshot *snap)
{
	int rv = store_begin(s, true);

	if (rv == STORE_OK)
		rv = store_snap_install_in_txn(s, snap);
	if (rv == STORE_OK)
		rv = store_commit(s);
	if (rv != STORE_OK) {
		store_rollback(s);
		return rv;
	}
	store_snap_installed(s, snap);
	return STORE_OK;
}

/* Flips one bit of the byte at offset off (from the end if off < 0) of path. */
static void ts_flip_byte(const char *path, long off)
{
	FILE *f = fopen(path, "r+b");
	int c;

	CU_ASSERT_FATAL(f != NULL);
	CU_ASSERT_EQUAL_FATAL(fseek(f, off, off < 0 ? SEEK_END : SEEK_SET), 0);
	c = fgetc(f);
	CU_ASSERT_FATAL(c != EOF);
	CU_ASSERT_EQUAL_FATAL(fseek(f, -1, SEEK_CUR), 0);
	fputc(c ^ 0x10, f);
	fclose(f);
}

/* ---- crafted snapshot files: any content, with a valid checksum ---- */

typedef struct ts_craft {
	unsigned char *p;
	size_t len, cap;
	uint64_t records;
} ts_craft;

static void ts_craft_put(ts_craft *c, const void *p, size_t n)
{
	if (c->len + n > c->cap) {
		c->cap = (c->len + n) * 2;
		c->p = realloc(c->p, c->cap);
		CU_ASSERT_FATAL(c->p != NULL);
	}
	if (n > 0)
		memcpy(c->p + c->len, p, n);
	c->len += n;
}

static void ts_craft_u32(ts_craft *c, uint32_t v)
{
	unsigned char b[4];

	for (int i = 0; i < 4; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	ts_craft_put(c, b, 4);
}

static void ts_craft_u64(ts_craft *c, uint64_t v)
{
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	ts_craft_put(c, b, 8);
}

/* Starts c (zeroed) with the header of id and voters 1, 2, 3. */
static void ts_craft_header(ts_craft *c, const store_snapshot_id *id)
{
	ts_craft_put(c, "RKVSNAP", 8);
	ts_craft_u32(c, 1);
	ts_craft_u32(c, 0);
	ts_craft_u64(c, id->node_id);
	ts_craft_u64(c, id->index);
	ts_craft_u64(c, id->term);
	ts_craft_u64(c, id->nonce);
	ts_craft_u32(c, 3);
	for (uint64_t v = 1; v <= 3; v++)
		ts_craft_u64(c, v);
}

/* A record whose value is head (hlen bytes) then vlen bytes of 'v'. */
static void ts_craft_record(ts_craft *c, unsigned char tag, const void *key, size_t klen,
                            const void *head, size_t hlen, size_t vlen)
{
	unsigned char *v = malloc(vlen + 1);

	CU_ASSERT_FATAL(v != NULL);
	memset(v, 'v', vlen);
	ts_craft_put(c, &tag, 1);
	ts_craft_u32(c, (uint32_t)klen);
	ts_craft_put(c, key, klen);
	ts_craft_u32(c, (uint32_t)(hlen + vlen));
	ts_craft_put(c, head, hlen);
	ts_craft_put(c, v, vlen);
	c->records++;
	free(v);
}

/* A session result record of (client 5, seq 1) whose value has vlen bytes. */
static void ts_craft_result(ts_craft *c, size_t vlen)
{
	unsigned char key[16] = {5, 0, 0, 0, 0, 0, 0, 0, 1}, head[9] = {0};

	head[8] = 1;
	ts_craft_record(c, 3, key, sizeof(key), head, sizeof(head), vlen);
}

/* Ends c with the trailer: end tag, record count and the CRC of everything before it. */
static void ts_craft_end(ts_craft *c)
{
	unsigned char end = 0xff;

	ts_craft_put(c, &end, 1);
	ts_craft_u64(c, c->records);
	ts_craft_u32(c, store_crc32c(0, c->p, c->len));
}

/* Stages c under id in s (begin and one write). */
static void ts_craft_stage(store *s, const store_snapshot_id *id, const ts_craft *c)
{
	CU_ASSERT_EQUAL_FATAL(store_staging_begin(s, id), STORE_OK);
	CU_ASSERT_EQUAL_FATAL(store_staging_write(s, id, 0, c->p, c->len), STORE_OK);
}

/* A valid crafted snapshot of id holding key "k" = "v". */
static void ts_craft_valid(ts_craft *c, const store_snapshot_id *id)
{
	memset(c, 0, sizeof(*c));
	ts_craft_header(c, id);
	ts_craft_record(c, 1, "k", 1, NULL, 0, 1);
	ts_craft_end(c);
}

/* Whether s holds key = value. */
static bool ts_has(store *s, const char *key, const char *value)
{
	void *v = NULL;
	size_t len = 0;
	bool ok = store_get(s, key, strlen(key), &v, &len) == STORE_OK && len == strlen(value) &&
	          memcmp(v, value, len) == 0;

	free(v);
	return ok;
}

/* The raft_snapshot naming id (voters 1, 2, 3); data points into enc. */
static raft_snapshot ts_snap_of(const store_snapshot_id *id, unsigned char enc[32])
{
	raft_snapshot snap = {0};

	store_snapshot_id_encode(id, enc);
	snap.metadata.index = id->index;
	snap.metadata.term = id->term;
	snap.metadata.conf_state = ts_voters;
	snap.data = enc;
	snap.len = STORE_SNAPSHOT_ID_SIZE;
	return snap;
}

/* ---- tests ---- */

static void test_crc32c_vectors(void)
{
	unsigned char b[32];
	const char *digits = "123456789";
	uint32_t c;

	CU_ASSERT_EQUAL(store_crc32c(0, digits, 9), 0xE3069283u);
	CU_ASSERT_EQUAL(store_crc32c(0, "", 0), 0u);
	CU_ASSERT_EQUAL(store_crc32c(0, "a", 1), 0xC1D04330u);
	/* RFC 3720 B.4 */
	memset(b, 0, sizeof(b));
	CU_ASSERT_EQUAL(store_crc32c(0, b, 32), 0x8A9136AAu);
	memset(b, 0xff, sizeof(b));
	CU_ASSERT_EQUAL(store_crc32c(0, b, 32), 0x62A8AB43u);
	for (int i = 0; i < 32; i++)
		b[i] = (unsigned char)i;
	CU_ASSERT_EQUAL(store_crc32c(0, b, 32), 0x46DD794Eu);
	for (int i = 0; i < 32; i++)
		b[i] = (unsigned char)(31 - i);
	CU_ASSERT_EQUAL(store_crc32c(0, b, 32), 0x113FDB5Cu);
	/* Incremental and unaligned use give the same value as one call. */
	for (size_t cut = 0; cut <= 9; cut++) {
		c = store_crc32c(0, digits, cut);
		CU_ASSERT_EQUAL(store_crc32c(c, digits + cut, 9 - cut), 0xE3069283u);
	}
	for (int i = 0; i < 32; i++)
		b[i] = (unsigned char)(31 - i);
	c = store_crc32c(0, b, 1);
	c = store_crc32c(c, b + 1, 30);
	CU_ASSERT_EQUAL(store_crc32c(c, b + 31, 1), 0x113FDB5Cu);
}

static void test_id_round_trip(void)
{
	store_snapshot_id id = {7, 0x0102030405060708ull, 9, 0xfedcba9876543210ull}, back;
	unsigned char buf[STORE_SNAPSHOT_ID_SIZE];

	store_snapshot_id_encode(&id, buf);
	CU_ASSERT_EQUAL(buf[0], 7);
	CU_ASSERT_EQUAL(buf[8], 0x08);
	CU_ASSERT_EQUAL(buf[15], 0x01);
	CU_ASSERT_EQUAL(buf[16], 9);
	CU_ASSERT_EQUAL(buf[24], 0x10);
	CU_ASSERT_EQUAL(buf[31], 0xfe);
	memset(&back, 0, sizeof(back));
	CU_ASSERT_EQUAL(store_snapshot_id_decode(buf, sizeof(buf), &back), STORE_OK);
	CU_ASSERT(back.node_id == id.node_id && back.index == id.index && back.term == id.term &&
	          back.nonce == id.nonce);
	CU_ASSERT_EQUAL(store_snapshot_id_decode(buf, 31, &back), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_snapshot_id_decode(buf, 33, &back), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_snapshot_id_decode(NULL, 32, &back), STORE_ERR_INVALID);
	memset(buf, 0, 8);
	CU_ASSERT_EQUAL(store_snapshot_id_decode(buf, sizeof(buf), &back), STORE_ERR_INVALID);
	/* NULL: zeros that decode refuses; no output buffer: nothing. */
	memset(buf, 0xaa, sizeof(buf));
	store_snapshot_id_encode(NULL, buf);
	CU_ASSERT(buf[0] == 0 && buf[31] == 0);
	CU_ASSERT_EQUAL(store_snapshot_id_decode(buf, sizeof(buf), &back), STORE_ERR_INVALID);
	store_snapshot_id_encode(&id, NULL);
}

/* The writer that runs between polls: one applied entry per call, up to a cap. */
typedef struct ts_writer {
	store *s;
	ts_sql *t;
	uint32_t n;
	uint64_t next;   /* the next index to write */
	uint64_t during; /* writes made while the dump held its read transaction */
} ts_writer;

static void ts_writer_step(void *ctx)
{
	ts_writer *w = ctx;
	bool before;

	if (w->next > w->n + 5000)
		return;
	before = store_snap_dump_running(w->s);
	ts_write(w->t, w->n, w->next++);
	if (before && store_snap_dump_running(w->s))
		w->during++;
}

/* The dump's metadata and data come from one index although the owner keeps applying: the
 * snapshot, installed elsewhere, equals the model at exactly its index. */
static void test_dump_consistent_under_writes(void)
{
	uint32_t n = TS_SANITIZED ? 20000 : 60000;
	raft_snapshot snap = {0};
	store_snapshot_id id;
	ts_writer w;
	ts_sql t, tb;
	store *a, *b;
	sqlite3 *rb;
	char dir[64];

	ts_dir_new(dir);
	a = ts_open(dir, 1, 0);
	ts_sql_open(&t, dir, 1);
	ts_seed(a, &t, n, 0);
	w = (ts_writer){a, &t, n, n + 1, 0};
	CU_ASSERT_EQUAL(store_snapshot_request(a, &snap),
	                RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE);
	CU_ASSERT_EQUAL_FATAL(ts_await(a, &snap, ts_writer_step, &w), STORE_OK);
	id = ts_snap_id(&snap);
	printf("\n  dump at index %" PRIu64 " of %" PRIu64 " written; %" PRIu64
	       " writes during the read transaction\n",
	       snap.metadata.index, w.next - 1, w.during);
	CU_ASSERT(snap.metadata.index >= n);
	CU_ASSERT(w.next - 1 >= snap.metadata.index + 2); /* writes ran while it dumped */
	CU_ASSERT(w.during > 0);
	CU_ASSERT_EQUAL(snap.metadata.term, TS_TERM);
	CU_ASSERT_EQUAL(snap.metadata.conf_state.n_voters, 3);
	CU_ASSERT_EQUAL(snap.metadata.conf_state.voters[2], 3);
	CU_ASSERT(id.node_id == 1 && id.index == snap.metadata.index && id.term == TS_TERM);
	CU_ASSERT_EQUAL(ts_dir_count(dir, "snap-1-", ".tmp"), 0);

	b = ts_open(dir, 2, 0);
	ts_sql_open(&tb, dir, 2);
	ts_seed_junk(&tb);
	ts_sql_close(&tb);
	ts_transfer(a, b, &id, 65000);
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_OK);
	CU_ASSERT_EQUAL(ts_install(b, &snap), STORE_OK);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);
	CU_ASSERT_EQUAL(b->applied_index, snap.metadata.index);
	CU_ASSERT_EQUAL(b->truncated_index, snap.metadata.index);
	CU_ASSERT_EQUAL(b->truncated_term, TS_TERM);
	CU_ASSERT_EQUAL(b->conf_state.n_voters, 3);
	CU_ASSERT_EQUAL(ts_dir_count(dir, "staging-2.", ""), 0);
	rb = ts_reader(dir, 2);
	CU_ASSERT_EQUAL(ts_check_kv(rb, n, 0, snap.metadata.index), 0);
	ts_check_sessions(rb, n, snap.metadata.index);
	ts_check_apply_state(rb, snap.metadata.index);
	sqlite3_close(rb);

	raft_snapshot_clear(&snap);
	ts_sql_close(&t);
	store_close(b);
	store_close(a);
	ts_dir_remove(dir);
}

/* A store seeded with 2000 keys (applied 2000) and its finished snapshot at 2000. */
typedef struct ts_fix {
	char dir[64];
	store *a;
	ts_sql t;
	raft_snapshot snap;
	store_snapshot_id id;
} ts_fix;

static void ts_fix_setup(ts_fix *f)
{
	memset(f, 0, sizeof(*f));
	ts_dir_new(f->dir);
	f->a = ts_open(f->dir, 1, 0);
	ts_sql_open(&f->t, f->dir, 1);
	ts_seed(f->a, &f->t, 2000, 0);
	ts_make_snapshot(f->a, &f->snap);
	f->id = ts_snap_id(&f->snap);
}

static void ts_fix_teardown(ts_fix *f)
{
	raft_snapshot_clear(&f->snap);
	ts_sql_close(&f->t);
	store_close(f->a);
	ts_dir_remove(f->dir);
}

/* Makes a second snapshot, at 2001, by compacting the log past the first one. */
static void ts_fix_second(ts_fix *f, raft_snapshot *snap, store_snapshot_id *id)
{
	ts_write(&f->t, 2000, 2001);
	f->a->truncated_index = 2001; /* as store_compact would after applying 2001 */
	ts_make_snapshot(f->a, snap);
	*id = ts_snap_id(snap);
}

/* "Temporarily unavailable" until the file is complete, then the same snapshot while the log
 * holds every entry after it, and a new dump once the log is truncated past it. */
static void test_request_lifecycle(void)
{
	raft_snapshot s2 = {0};
	store_snapshot_id id2;
	ts_fix f;

	ts_fix_setup(&f);
	CU_ASSERT_EQUAL(f.id.index, 2000);
	CU_ASSERT_EQUAL(f.snap.metadata.index, 2000);
	CU_ASSERT_FALSE(store_snap_dump_running(f.a));
	CU_ASSERT_EQUAL(ts_dir_count(f.dir, "snap-1-", ""), 1);
	CU_ASSERT_EQUAL(ts_dir_count(f.dir, "snap-1-", ".tmp"), 0);

	ts_write(&f.t, 2000, 2001);
	CU_ASSERT_EQUAL(store_snapshot_request(f.a, &s2), STORE_OK);
	id2 = ts_snap_id(&s2);
	CU_ASSERT(id2.nonce == f.id.nonce && id2.index == 2000);
	raft_snapshot_clear(&s2);

	f.a->truncated_index = 2001;
	CU_ASSERT_EQUAL(store_snapshot_request(f.a, &s2),
	                RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE);
	CU_ASSERT_EQUAL(ts_await(f.a, &s2, NULL, NULL), STORE_OK);
	id2 = ts_snap_id(&s2);
	CU_ASSERT_EQUAL(id2.index, 2001);
	CU_ASSERT(id2.nonce != f.id.nonce);
	CU_ASSERT_EQUAL(ts_dir_count(f.dir, "snap-1-", ""), 2);
	raft_snapshot_clear(&s2);
	ts_fix_teardown(&f);
}

static void ts_touch(const char *path)
{
	FILE *fp = fopen(path, "w");

	CU_ASSERT_FATAL(fp != NULL);
	fclose(fp);
}

/* gc keeps the latest snapshot and those named, drops the rest of this store's files and
 * stale temporaries, and never touches another store's files. */
static void test_gc(void)
{
	raft_snapshot s2 = {0}, s3 = {0};
	store_snapshot_id id2;
	char other[512], tmp[512];
	ts_fix f;

	ts_fix_setup(&f);
	ts_fix_second(&f, &s2, &id2);
	snprintf(tmp, sizeof(tmp), "%s/snap-1-5-1-00000000000000aa.tmp", f.dir);
	snprintf(other, sizeof(other), "%s/snap-9-5-1-00000000000000aa", f.dir);
	ts_touch(tmp);
	ts_touch(other);
	CU_ASSERT_EQUAL(ts_dir_count(f.dir, "snap-1-", ""), 3);
	store_snapshot_gc(f.a, &f.id, 1);
	CU_ASSERT_EQUAL(ts_dir_count(f.dir, "snap-1-", ""), 2);
	CU_ASSERT_FALSE(ts_exists(tmp));
	CU_ASSERT(ts_exists(other));
	store_snapshot_gc(f.a, NULL, 0);
	CU_ASSERT_EQUAL(ts_dir_count(f.dir, "snap-1-", ""), 1);
	CU_ASSERT_EQUAL(store_snapshot_path(f.a, &f.id, &(char *){NULL}, NULL),
	                STORE_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL(store_snapshot_request(f.a, &s3), STORE_OK);
	CU_ASSERT(ts_snap_id(&s3).nonce == id2.nonce);
	CU_ASSERT_EQUAL(store_failed(f.a), STORE_OK);
	raft_snapshot_clear(&s2);
	raft_snapshot_clear(&s3);
	ts_fix_teardown(&f);
}

/* After a restart the store makes a new snapshot with a new id, even at the same index; the
 * old file goes at the next gc. */
static void test_restart_new_id(void)
{
	raft_snapshot s2 = {0};
	store_snapshot_id id2;
	ts_fix f;

	ts_fix_setup(&f);
	store_close(f.a);
	f.a = ts_open(f.dir, 1, 0);
	ts_make_snapshot(f.a, &s2);
	id2 = ts_snap_id(&s2);
	CU_ASSERT_EQUAL(id2.index, 2000);
	CU_ASSERT(id2.nonce != f.id.nonce);
	store_snapshot_gc(f.a, NULL, 0);
	CU_ASSERT_EQUAL(ts_dir_count(f.dir, "snap-1-", ""), 1);
	CU_ASSERT_EQUAL(store_snapshot_path(f.a, &f.id, &(char *){NULL}, NULL),
	                STORE_ERR_NOT_FOUND);
	raft_snapshot_clear(&s2);
	ts_fix_teardown(&f);
}

/* Reads len bytes at off of the staged file of id in store self. */
static void ts_read_staged(const char *dir, uint64_t self, const store_snapshot_id *id, long off,
                           void *buf, size_t len)
{
	char path[512];
	FILE *f;

	ts_staging_path(path, sizeof(path), dir, self, id);
	f = fopen(path, "rb");
	CU_ASSERT_FATAL(f != NULL);
	CU_ASSERT_EQUAL_FATAL(fseek(f, off, SEEK_SET), 0);
	CU_ASSERT_EQUAL(fread(buf, 1, len, f), len);
	fclose(f);
}

static void test_staging_writes(void)
{
	store_snapshot_id id = {1, 10, 2, 0x1234}, other = {1, 11, 2, 0x99};
	unsigned char data[300], back[300];
	char dir[64];
	store *b;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 7 + 1);
	ts_dir_new(dir);
	b = ts_open(dir, 2, 0);
	CU_ASSERT_EQUAL(store_staging_offset(b, &id), 0);
	CU_ASSERT_EQUAL(store_staging_write(b, &id, 0, data, 10), STORE_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL(store_staging_begin(b, &id), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_offset(b, &id), 0);
	CU_ASSERT_EQUAL(store_staging_write(b, &id, 0, data, 100), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_write(b, &id, 100, data + 100, 50), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_offset(b, &id), 150);
	/* A duplicate is ignored, even with other bytes; a gap is refused. */
	CU_ASSERT_EQUAL(store_staging_write(b, &id, 100, "XXXXXXXXXX", 10), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_write(b, &id, 151, data + 151, 10), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_staging_offset(b, &id), 150);
	/* An overlapping resend adds only its new tail. */
	CU_ASSERT_EQUAL(store_staging_write(b, &id, 120, data + 120, 80), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_offset(b, &id), 200);
	/* Begin again with the same id resumes. */
	CU_ASSERT_EQUAL(store_staging_begin(b, &id), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_offset(b, &id), 200);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);

	/* The offset survives a restart, and writing resumes there. */
	store_close(b);
	b = ts_open(dir, 2, 0);
	CU_ASSERT_EQUAL(store_staging_offset(b, &id), 200);
	CU_ASSERT_EQUAL(store_staging_write(b, &id, 200, data + 200, 100), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_offset(b, &id), 300);
	ts_read_staged(dir, 2, &id, 0, back, sizeof(back));
	CU_ASSERT(memcmp(back, data, sizeof(data)) == 0);

	/* A newer snapshot supersedes: the older staging file is deleted. */
	CU_ASSERT_EQUAL(store_staging_begin(b, &other), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_offset(b, &id), 0);
	CU_ASSERT_EQUAL(ts_dir_count(dir, "staging-2.", ""), 1);
	CU_ASSERT_EQUAL(store_staging_write(b, &id, 300, data, 1), STORE_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL(store_staging_write(b, &other, 0, data, 5), STORE_OK);
	store_staging_discard(b, &other);
	CU_ASSERT_EQUAL(ts_dir_count(dir, "staging-2.", ""), 0);
	CU_ASSERT_EQUAL(store_staging_offset(b, &other), 0);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);

	store_close(b);
	ts_dir_remove(dir);
}

/* finish verifies the whole file: a flipped byte, a truncation and a file of another snapshot
 * are STORE_ERR_CORRUPT, and none of them fail-stops the store. */
static void test_staging_finish_detects_damage(void)
{
	raft_snapshot snap = {0};
	store_snapshot_id id, wrong;
	char dir[64], path[512];
	uint64_t size;
	ts_sql t;
	store *a, *b;

	ts_dir_new(dir);
	a = ts_open(dir, 1, 0);
	ts_sql_open(&t, dir, 1);
	ts_seed(a, &t, 500, 0);
	ts_sql_close(&t);
	ts_make_snapshot(a, &snap);
	id = ts_snap_id(&snap);
	b = ts_open(dir, 2, 0);
	ts_staging_path(path, sizeof(path), dir, 2, &id);

	/* Incomplete: the trailer is missing. */
	ts_transfer(a, b, &id, 4096);
	size = store_staging_offset(b, &id);
	CU_ASSERT_EQUAL_FATAL(truncate(path, (off_t)(size - 5)), 0);
	store_close(b);
	b = ts_open(dir, 2, 0);
	CU_ASSERT_EQUAL(store_staging_offset(b, &id), size - 5);
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_ERR_CORRUPT);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);

	/* Complete, with one bit flipped in the middle of the records. */
	store_staging_discard(b, &id);
	ts_transfer(a, b, &id, 1000);
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_OK);
	store_close(b);
	ts_flip_byte(path, (long)(size / 2));
	b = ts_open(dir, 2, 0);
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_ERR_CORRUPT);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);
	ts_flip_byte(path, (long)(size / 2));
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_OK);
	ts_flip_byte(path, -1);
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_ERR_CORRUPT);
	CU_ASSERT(strstr(store_errmsg(b), "checksum") != NULL);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);

	/* The right bytes staged under another id. */
	store_staging_discard(b, &id);
	wrong = id;
	wrong.nonce ^= 1;
	ts_transfer_as(a, b, &id, &wrong, 3000);
	store_close(b);
	b = ts_open(dir, 2, 0);
	CU_ASSERT_EQUAL(store_staging_offset(b, &wrong), size);
	CU_ASSERT_EQUAL(store_staging_finish(b, &wrong), STORE_ERR_CORRUPT);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);

	raft_snapshot_clear(&snap);
	store_close(b);
	store_close(a);
	ts_dir_remove(dir);
}

/* Every single flipped byte and every truncation of a small snapshot is refused by finish,
 * and the intact file still passes afterwards. */
static void test_every_damage_detected(void)
{
	raft_snapshot snap = {0};
	store_snapshot_id id;
	char dir[64], path[512];
	uint64_t size;
	int missed = 0;
	ts_sql t;
	store *a, *b;

	ts_dir_new(dir);
	a = ts_open(dir, 1, 0);
	ts_sql_open(&t, dir, 1);
	ts_seed(a, &t, 20, 0);
	ts_sql_close(&t);
	ts_make_snapshot(a, &snap);
	id = ts_snap_id(&snap);
	b = ts_open(dir, 2, 0);
	ts_transfer(a, b, &id, 512);
	size = store_staging_offset(b, &id);
	ts_staging_path(path, sizeof(path), dir, 2, &id);
	for (uint64_t off = 0; off < size; off++) {
		ts_flip_byte(path, (long)off);
		missed += store_staging_finish(b, &id) != STORE_ERR_CORRUPT;
		ts_flip_byte(path, (long)off);
	}
	CU_ASSERT_EQUAL(missed, 0);
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_OK);
	for (uint64_t len = size; len-- > 0;) {
		CU_ASSERT_EQUAL_FATAL(truncate(path, (off_t)len), 0);
		missed += store_staging_finish(b, &id) != STORE_ERR_CORRUPT;
	}
	CU_ASSERT_EQUAL(missed, 0);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);
	raft_snapshot_clear(&snap);
	store_close(b);
	store_close(a);
	ts_dir_remove(dir);
}

/* An install that fails midway (bad checksum at the end, after most rows went in) or before
 * (metadata mismatch) leaves the old state whole. */
static void test_install_failure_keeps_old_state(void)
{
	uint32_t n = 3000;
	raft_snapshot snap = {0}, bad = {0};
	store_snapshot_id id;
	char dir[64], path[512];
	ts_sql t;
	store *a, *b;
	sqlite3 *rb;

	ts_dir_new(dir);
	a = ts_open(dir, 1, 0);
	ts_sql_open(&t, dir, 1);
	ts_seed(a, &t, n, 0);
	ts_sql_close(&t);
	ts_make_snapshot(a, &snap);
	id = ts_snap_id(&snap);
	b = ts_open(dir, 2, 0);
	ts_sql_open(&t, dir, 2);
	ts_seed_junk(&t);
	ts_sql_close(&t);

	/* Metadata that differs from the file's. */
	ts_transfer(a, b, &id, 65536);
	CU_ASSERT_EQUAL(raft_snapshot_copy(&bad, &snap), RAFT_OK);
	bad.metadata.conf_state.n_voters = 2;
	CU_ASSERT_EQUAL(ts_install(b, &bad), STORE_ERR_CORRUPT);
	raft_snapshot_clear(&bad);
	store_close(b);

	/* A flipped byte late in the file: found by the checksum after the rows went in. */
	ts_staging_path(path, sizeof(path), dir, 2, &id);
	ts_flip_byte(path, -40);
	b = ts_open(dir, 2, 0);
	CU_ASSERT_EQUAL(ts_install(b, &snap), STORE_ERR_CORRUPT);
	CU_ASSERT_EQUAL(store_failed(b), STORE_ERR_CORRUPT);
	store_close(b);

	rb = ts_reader(dir, 2);
	CU_ASSERT_EQUAL(ts_query_int(rb, "SELECT count(*) FROM kv"), 2);
	CU_ASSERT_EQUAL(ts_query_int(rb, "SELECT count(*) FROM kv WHERE key = x'6a756e6b2d61'"), 1);
	CU_ASSERT_EQUAL(ts_query_int(rb, "SELECT count(*) FROM sessions WHERE client_id = 99"), 1);
	CU_ASSERT_EQUAL(ts_query_int(rb, "SELECT count(*) FROM session_results"), 1);
	CU_ASSERT_EQUAL(ts_query_int(rb, "SELECT applied_index FROM apply_state"), 2);
	CU_ASSERT_EQUAL(ts_query_int(rb, "SELECT truncated_index FROM apply_state"), 0);
	sqlite3_close(rb);

	/* After a restart, a good copy installs. */
	b = ts_open(dir, 2, 0);
	CU_ASSERT_EQUAL(b->applied_index, 2);
	store_staging_discard(b, &id);
	ts_transfer(a, b, &id, 65536);
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_OK);
	CU_ASSERT_EQUAL(ts_install(b, &snap), STORE_OK);
	rb = ts_reader(dir, 2);
	CU_ASSERT_EQUAL(ts_check_kv(rb, n, 0, n), 0);
	ts_check_sessions(rb, n, n);
	ts_check_apply_state(rb, n);
	sqlite3_close(rb);

	raft_snapshot_clear(&snap);
	store_close(b);
	store_close(a);
	ts_dir_remove(dir);
}

/* A snapshot of this store's own can be installed from its file (local use). */
static void test_install_own_file(void)
{
	raft_snapshot snap = {0};
	char dir[64];
	ts_sql t;
	store *a;
	sqlite3 *ra;

	ts_dir_new(dir);
	a = ts_open(dir, 1, 0);
	ts_sql_open(&t, dir, 1);
	ts_seed(a, &t, 100, 0);
	ts_make_snapshot(a, &snap);
	ts_write(&t, 100, 101);
	ts_write(&t, 100, 102);
	ts_sql_close(&t);
	CU_ASSERT_EQUAL(ts_install(a, &snap), STORE_OK);
	CU_ASSERT_EQUAL(a->applied_index, 100);
	ra = ts_reader(dir, 1);
	CU_ASSERT_EQUAL(ts_check_kv(ra, 100, 0, 100), 0);
	ts_check_sessions(ra, 100, 100);
	ts_check_apply_state(ra, 100);
	sqlite3_close(ra);
	CU_ASSERT_EQUAL(ts_dir_count(dir, "snap-1-", ""), 1);
	raft_snapshot_clear(&snap);
	store_close(a);
	ts_dir_remove(dir);
}

/* Through store_persist_ready, as a follower receives it: the staged snapshot replaces the
 * state, the log is empty at the snapshot index, and the staging file is gone. */
static void test_persist_ready_installs(void)
{
	raft_ready rd;
	raft_snapshot snap = {0};
	const raft_storage *rs;
	store_snapshot_id id;
	uint64_t first = 0, last = 0, term = 0;
	char dir[64];
	ts_sql t;
	store *a, *b;
	sqlite3 *rb;

	ts_dir_new(dir);
	a = ts_open(dir, 1, 0);
	ts_sql_open(&t, dir, 1);
	ts_seed(a, &t, 300, 0);
	ts_sql_close(&t);
	ts_make_snapshot(a, &snap);
	id = ts_snap_id(&snap);
	b = ts_open(dir, 2, 0);
	ts_transfer(a, b, &id, 4096);
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_OK);
	memset(&rd, 0, sizeof(rd));
	rd.has_snapshot = true;
	rd.snapshot = snap;
	rd.has_hard_state = true;
	rd.hard_state = (raft_hard_state){TS_TERM, 1, 300};
	rd.must_sync = true;
	CU_ASSERT_EQUAL(store_persist_ready(b, &rd), STORE_OK);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);
	rs = store_raft_storage(b);
	CU_ASSERT_EQUAL(rs->first_index(rs->ctx, &first), RAFT_OK);
	CU_ASSERT_EQUAL(rs->last_index(rs->ctx, &last), RAFT_OK);
	CU_ASSERT_EQUAL(rs->term(rs->ctx, 300, &term), RAFT_OK);
	CU_ASSERT(first == 301 && last == 300 && term == TS_TERM);
	CU_ASSERT_EQUAL(ts_dir_count(dir, "staging-2.", ""), 0);
	store_close(b);
	rb = ts_reader(dir, 2);
	CU_ASSERT_EQUAL(ts_check_kv(rb, 300, 0, 300), 0);
	ts_check_sessions(rb, 300, 300);
	ts_check_apply_state(rb, 300);
	CU_ASSERT_EQUAL(ts_query_int(rb, "SELECT count(*) FROM raft_log"), 0);
	sqlite3_close(rb);
	raft_snapshot_clear(&snap);
	store_close(a);
	ts_dir_remove(dir);
}

/* Reads the "<field>:  N kB" line of /proc/self/status; -1 if absent. */
static long ts_status_kib(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	size_t fl = strlen(field);
	char line[256];
	long v = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, field, fl) == 0 && line[fl] == ':')
			v = strtol(line + fl + 1, NULL, 10);
	fclose(f);
	return v;
}

/* Resets the peak RSS to the current RSS (Linux clear_refs "5") and returns it in KiB; if the
 * reset is not possible, returns the process's peak so far (getrusage). */
static long ts_rss_reset(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	struct rusage ru;

	if (f != NULL && fputs("5", f) >= 0 && fclose(f) == 0)
		return ts_status_kib("VmHWM");
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* The peak RSS in KiB since the last ts_rss_reset(). */
static long ts_rss_peak(void)
{
	long hwm = ts_status_kib("VmHWM");
	struct rusage ru;

	if (hwm >= 0)
		return hwm;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* Dump and install of many keys: peak RSS grows by far less than the data (the page caches
 * are 2 MiB per connection here). Sanitizer builds check correctness with fewer keys. */
static void test_memory_bounded(void)
{
	uint32_t n = TS_SANITIZED ? 30000 : 200000;
	size_t value_len = 200;
	raft_snapshot snap = {0};
	store_snapshot_id id;
	uint64_t size = 0;
	long rss0, grow_dump, grow_install;
	char dir[64], *path = NULL;
	ts_sql t;
	store *a, *b;
	sqlite3 *rb;

	ts_dir_new(dir);
	a = ts_open(dir, 1, 2048);
	b = ts_open(dir, 2, 2048);
	ts_sql_open(&t, dir, 1);
	ts_seed(a, &t, n, value_len);
	ts_sql_close(&t);
	rss0 = ts_rss_reset();
	ts_make_snapshot(a, &snap);
	grow_dump = ts_rss_peak() - rss0;
	id = ts_snap_id(&snap);
	CU_ASSERT_EQUAL_FATAL(store_snapshot_path(a, &id, &path, &size), STORE_OK);
	free(path);
	ts_transfer(a, b, &id, 256 * 1024);
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_OK);
	rss0 = ts_rss_reset();
	CU_ASSERT_EQUAL(ts_install(b, &snap), STORE_OK);
	grow_install = ts_rss_peak() - rss0;
	printf("\n  %u keys, file %" PRIu64
	       " KiB; peak RSS +%ld KiB dumping, +%ld KiB installing\n",
	       n, size / 1024, grow_dump, grow_install);
	CU_ASSERT(size > (uint64_t)n * value_len);
	if (!TS_SANITIZED) {
		CU_ASSERT((uint64_t)grow_dump * 1024 < size / 4);
		CU_ASSERT((uint64_t)grow_install * 1024 < size / 4);
	}
	rb = ts_reader(dir, 2);
	CU_ASSERT_EQUAL(ts_check_kv(rb, n, value_len, n), 0);
	sqlite3_close(rb);

	raft_snapshot_clear(&snap);
	store_close(b);
	store_close(a);
	ts_dir_remove(dir);
}

/* store_close stops a running dump, joins its thread and leaves no temporary file. */
static void test_close_stops_dump(void)
{
	uint32_t n = TS_SANITIZED ? 20000 : 60000;
	raft_snapshot snap = {0};
	char dir[64];
	ts_sql t;
	store *a;

	ts_dir_new(dir);
	a = ts_open(dir, 1, 0);
	ts_sql_open(&t, dir, 1);
	ts_seed(a, &t, n, 0);
	ts_sql_close(&t);
	CU_ASSERT_EQUAL(store_snapshot_request(a, &snap),
	                RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE);
	CU_ASSERT(store_snap_dump_running(a));
	store_close(a);
	CU_ASSERT_EQUAL(ts_dir_count(dir, "snap-1-", ".tmp"), 0);
	printf("\n  finished files after close: %d\n", ts_dir_count(dir, "snap-1-", ""));
	ts_dir_remove(dir);
}

/* A dump that fails on the helper thread (here: its directory is gone) fail-stops the store
 * at the next request, with the thread's reason in the message. */
static void test_failed_dump_fail_stops(void)
{
	raft_snapshot snap = {0};
	char dir[64], gone[96];
	ts_sql t;
	store *a;

	ts_dir_new(dir);
	a = ts_open(dir, 1, 0);
	ts_sql_open(&t, dir, 1);
	ts_seed(a, &t, 10, 0);
	ts_sql_close(&t);
	snprintf(gone, sizeof(gone), "%s/missing", dir);
	CU_ASSERT_EQUAL(store_set_snapshot_dir(a, gone), STORE_OK);
	CU_ASSERT_EQUAL(store_snapshot_request(a, &snap),
	                RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE);
	CU_ASSERT_EQUAL(ts_await(a, &snap, NULL, NULL), STORE_ERR_IO);
	CU_ASSERT_EQUAL(store_failed(a), STORE_ERR_IO);
	CU_ASSERT(strstr(store_errmsg(a), "snapshot dump") != NULL);
	CU_ASSERT_EQUAL(store_snapshot_request(a, &snap), STORE_ERR_FAILED);
	CU_ASSERT_EQUAL(store_staging_offset(a, &(store_snapshot_id){2, 1, 1, 1}), 0);
	store_close(a);
	ts_dir_remove(dir);
}

/* Bad arguments are refused without a fail-stop. */
static void test_bad_arguments(void)
{
	store_snapshot_id id = {1, 1, 1, 1}, zero = {0, 1, 1, 1};
	raft_snapshot snap = {0};
	unsigned char enc[32];
	char dir[64];
	store *b;

	ts_dir_new(dir);
	b = ts_open(dir, 2, 0);
	CU_ASSERT_EQUAL(store_snapshot_request(NULL, &snap), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_snapshot_request(b, NULL), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_staging_begin(b, NULL), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_staging_begin(b, &zero), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_staging_begin(b, &id), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_write(b, &id, 0, NULL, 4), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_staging_write(b, &id, UINT64_MAX, "ab", 2), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_set_snapshot_dir(b, dir), STORE_ERR_INVALID); /* staging in use */
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_ERR_CORRUPT);   /* empty file */
	store_staging_discard(b, &id);
	CU_ASSERT_EQUAL(store_set_snapshot_dir(b, NULL), STORE_ERR_INVALID);
	/* An install whose id is malformed, or names no file. */
	CU_ASSERT_EQUAL(ts_install(b, &snap), STORE_ERR_INVALID);
	store_snapshot_id_encode(&id, enc);
	snap.data = enc;
	snap.len = sizeof(enc);
	snap.metadata.index = 1;
	snap.metadata.term = 1;
	CU_ASSERT_EQUAL(ts_install(b, &snap), STORE_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);
	store_close(b);
	ts_dir_remove(dir);
}

/* One crafted case of test_record_sizes: a record no dump makes. */
typedef struct ts_bad_case {
	const char *what;
	void (*add)(ts_craft *c);
} ts_bad_case;

static void ts_bad_empty_key(ts_craft *c)
{
	ts_craft_record(c, 1, "", 0, NULL, 0, 9);
}

static void ts_bad_long_key(ts_craft *c)
{
	char *key = malloc(COMMAND_MAX_KEY + 1);

	CU_ASSERT_FATAL(key != NULL);
	memset(key, 'k', COMMAND_MAX_KEY + 1);
	ts_craft_record(c, 1, key, COMMAND_MAX_KEY + 1, NULL, 0, 1);
	free(key);
}

static void ts_bad_long_value(ts_craft *c)
{
	ts_craft_record(c, 1, "big", 3, NULL, 0, COMMAND_MAX_VALUE + 1);
}

static void ts_bad_long_result(ts_craft *c)
{
	ts_craft_result(c, COMMAND_MAX_VALUE + 1);
}

static void ts_bad_session(ts_craft *c)
{
	unsigned char key[8] = {5}, value[32] = {0};

	ts_craft_record(c, 2, key, sizeof(key), value, sizeof(value), 0);
}

/* Records of sizes the state machine never makes, in files with a valid checksum, fail
 * finish (STORE_ERR_CORRUPT, no fail-stop) and an install; records at the limits pass. */
static void test_record_sizes(void)
{
	static const ts_bad_case bad[] = {
	    {"empty kv key", ts_bad_empty_key},
	    {"kv key over COMMAND_MAX_KEY", ts_bad_long_key},
	    {"kv value over COMMAND_MAX_VALUE", ts_bad_long_value},
	    {"result value over COMMAND_MAX_VALUE", ts_bad_long_result},
	    {"session value of 32 bytes", ts_bad_session},
	};
	store_snapshot_id id = {1, 10, 2, 0};
	unsigned char enc[32], *key = malloc(COMMAND_MAX_KEY);
	raft_snapshot snap;
	void *v = NULL;
	size_t vlen = 0;
	char dir[64];
	ts_craft c;
	store *b;
	int rv;

	CU_ASSERT_FATAL(key != NULL);
	memset(key, 'k', COMMAND_MAX_KEY);
	ts_dir_new(dir);
	b = ts_open(dir, 2, 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&c, 0, sizeof(c));
		id.nonce = i + 1;
		ts_craft_header(&c, &id);
		ts_craft_record(&c, 1, "a", 1, NULL, 0, 1);
		bad[i].add(&c);
		ts_craft_end(&c);
		ts_craft_stage(b, &id, &c);
		rv = store_staging_finish(b, &id);
		if (rv != STORE_ERR_CORRUPT)
			printf("\n  finish accepted a file with a %s\n", bad[i].what);
		CU_ASSERT_EQUAL(rv, STORE_ERR_CORRUPT);
		CU_ASSERT(strstr(store_errmsg(b), "bad size") != NULL);
		CU_ASSERT_EQUAL(store_failed(b), STORE_OK);
		store_staging_discard(b, &id);
		free(c.p);
	}

	/* At the limits: a key of COMMAND_MAX_KEY, values of COMMAND_MAX_VALUE. */
	memset(&c, 0, sizeof(c));
	id.nonce = 100;
	ts_craft_header(&c, &id);
	ts_craft_record(&c, 1, key, COMMAND_MAX_KEY, NULL, 0, COMMAND_MAX_VALUE);
	ts_craft_result(&c, COMMAND_MAX_VALUE);
	ts_craft_end(&c);
	ts_craft_stage(b, &id, &c);
	free(c.p);
	CU_ASSERT_EQUAL(store_staging_finish(b, &id), STORE_OK);
	snap = ts_snap_of(&id, enc);
	CU_ASSERT_EQUAL(ts_install(b, &snap), STORE_OK);
	CU_ASSERT_EQUAL(store_get(b, key, COMMAND_MAX_KEY, &v, &vlen), STORE_OK);
	CU_ASSERT_EQUAL(vlen, COMMAND_MAX_VALUE);
	free(v);

	/* An install reads the same checks (here from an unfinished staging). */
	memset(&c, 0, sizeof(c));
	id = (store_snapshot_id){1, 20, 2, 200};
	ts_craft_header(&c, &id);
	ts_bad_long_value(&c);
	ts_craft_end(&c);
	ts_craft_stage(b, &id, &c);
	free(c.p);
	snap = ts_snap_of(&id, enc);
	CU_ASSERT_EQUAL(ts_install(b, &snap), STORE_ERR_CORRUPT);
	CU_ASSERT_EQUAL(b->applied_index, 10);
	free(key);
	store_close(b);
	ts_dir_remove(dir);
}

/* A store whose membership was never recorded refuses to make a snapshot (a follower would
 * ignore it) without failing; once recorded, the snapshot carries it. */
static void test_request_needs_membership(void)
{
	raft_snapshot snap = {0};
	char dir[64];
	store *a;

	ts_dir_new(dir);
	a = ts_open(dir, 1, 0);
	CU_ASSERT_EQUAL(store_snapshot_request(a, &snap), STORE_ERR_INVALID);
	CU_ASSERT(strstr(store_errmsg(a), "membership not recorded") != NULL);
	CU_ASSERT_EQUAL(store_failed(a), STORE_OK);
	CU_ASSERT_FALSE(store_snap_dump_running(a));
	CU_ASSERT_EQUAL(ts_dir_count(dir, "snap-1-", ""), 0);
	CU_ASSERT_EQUAL(store_set_conf_state(a, &ts_voters), STORE_OK);
	ts_make_snapshot(a, &snap);
	CU_ASSERT_EQUAL(snap.metadata.conf_state.n_voters, 3);
	CU_ASSERT_EQUAL(snap.metadata.conf_state.voters[0], 1);
	CU_ASSERT_EQUAL(snap.metadata.conf_state.voters[2], 3);
	raft_snapshot_clear(&snap);
	store_close(a);
	ts_dir_remove(dir);
}

/* The index of the newest snapshot finished since open, also when no request collected it. */
static void test_latest_index(void)
{
	raft_snapshot s2 = {0};
	store_snapshot_id id2;
	ts_fix f;

	ts_fix_setup(&f);
	CU_ASSERT_EQUAL(store_snapshot_latest_index(f.a), 2000);
	ts_fix_second(&f, &s2, &id2);
	CU_ASSERT_EQUAL(store_snapshot_latest_index(f.a), 2001);
	raft_snapshot_clear(&s2);
	store_close(f.a);
	f.a = ts_open(f.dir, 1, 0);
	CU_ASSERT_EQUAL(store_snapshot_latest_index(f.a), 0);
	CU_ASSERT_EQUAL(store_snapshot_request(f.a, &s2),
	                RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE);
	CU_ASSERT_EQUAL(store_snapshot_wait(f.a, TS_WAIT_MS), STORE_OK);
	CU_ASSERT_EQUAL(store_snapshot_latest_index(f.a), 2001);
	CU_ASSERT_EQUAL(store_snapshot_wait(f.a, 0), STORE_OK); /* no dump left to wait for */
	CU_ASSERT_EQUAL(store_snapshot_wait(NULL, 0), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_snapshot_latest_index(NULL), 0);
	ts_fix_teardown(&f);
}

/* is_ready: a staging once finish verified it (until discarded, damaged or after a restart),
 * or a snapshot file of the store's own; nothing else. */
static void test_snap_is_ready(void)
{
	store_snapshot_id bogus;
	store *b;
	ts_fix f;

	ts_fix_setup(&f);
	bogus = f.id;
	bogus.nonce ^= 1;
	CU_ASSERT(store_snap_is_ready(f.a, &f.id));
	CU_ASSERT_FALSE(store_snap_is_ready(f.a, &bogus));
	CU_ASSERT_FALSE(store_snap_is_ready(f.a, NULL));
	b = ts_open(f.dir, 2, 0);
	CU_ASSERT_FALSE(store_snap_is_ready(b, &f.id));
	ts_transfer(f.a, b, &f.id, 65536);
	CU_ASSERT_FALSE(store_snap_is_ready(b, &f.id));
	CU_ASSERT_EQUAL(store_staging_finish(b, &f.id), STORE_OK);
	CU_ASSERT(store_snap_is_ready(b, &f.id));
	store_close(b);
	b = ts_open(f.dir, 2, 0);
	CU_ASSERT_FALSE(store_snap_is_ready(b, &f.id));
	CU_ASSERT_EQUAL(store_staging_finish(b, &f.id), STORE_OK);
	CU_ASSERT(store_snap_is_ready(b, &f.id));
	store_staging_discard(b, &f.id);
	CU_ASSERT_FALSE(store_snap_is_ready(b, &f.id));
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);
	store_close(b);
	ts_fix_teardown(&f);
}

/* begin of another id replaces an unfinished staging but not a finished one a Ready may name
 * (the reviewer's case: it would kill the node at persist); once installed, discarded or at
 * or below the applied index, the finished one goes. */
static void test_begin_keeps_finished(void)
{
	store_snapshot_id a = {1, 10, 2, 1}, next = {1, 11, 2, 2}, low = {1, 5, 2, 3};
	unsigned char enc[32];
	char dir[64], path[512];
	raft_ready rd;
	ts_craft c;
	store *b;

	ts_dir_new(dir);
	b = ts_open(dir, 2, 0);
	ts_craft_valid(&c, &a);
	ts_craft_stage(b, &a, &c);
	CU_ASSERT_EQUAL(store_staging_finish(b, &a), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_begin(b, &next), STORE_ERR_INVALID);
	CU_ASSERT(strstr(store_errmsg(b), "finished") != NULL);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);
	ts_staging_path(path, sizeof(path), dir, 2, &a);
	CU_ASSERT(ts_exists(path));
	CU_ASSERT(store_snap_is_ready(b, &a));

	memset(&rd, 0, sizeof(rd));
	rd.has_snapshot = true;
	rd.snapshot = ts_snap_of(&a, enc);
	rd.has_hard_state = true;
	rd.hard_state = (raft_hard_state){2, 0, 10};
	rd.must_sync = true;
	CU_ASSERT_EQUAL(store_persist_ready(b, &rd), STORE_OK);
	CU_ASSERT_EQUAL(store_applied_index(b), 10);
	CU_ASSERT(ts_has(b, "k", "v"));
	free(c.p);

	/* A finished staging at or below the applied index is superseded. */
	ts_craft_valid(&c, &low);
	ts_craft_stage(b, &low, &c);
	free(c.p);
	CU_ASSERT_EQUAL(store_staging_finish(b, &low), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_begin(b, &next), STORE_OK);
	CU_ASSERT_EQUAL(ts_dir_count(dir, "staging-2.", ""), 1);
	CU_ASSERT_FALSE(store_snap_is_ready(b, &low));

	/* An explicit discard lets the next one begin. */
	ts_craft_valid(&c, &next);
	CU_ASSERT_EQUAL(store_staging_write(b, &next, 0, c.p, c.len), STORE_OK);
	free(c.p);
	CU_ASSERT_EQUAL(store_staging_finish(b, &next), STORE_OK);
	CU_ASSERT_EQUAL(store_staging_begin(b, &a), STORE_ERR_INVALID);
	store_staging_discard(b, &next);
	CU_ASSERT_EQUAL(store_staging_begin(b, &a), STORE_OK);
	CU_ASSERT_EQUAL(store_failed(b), STORE_OK);
	store_close(b);
	ts_dir_remove(dir);
}

void test_register_store_snapshot(void)
{
	CU_pSuite s = CU_add_suite("store_snapshot", NULL, NULL);
	const char *env = getenv("RKV_TEST_SEED");

	ts_seed_value = env != NULL ? (uint32_t)strtoul(env, NULL, 0) : (uint32_t)time(NULL);
	printf("store_snapshot: seed %u (RKV_TEST_SEED to repeat)\n", ts_seed_value);
	CU_add_test(s, "crc32c vectors", test_crc32c_vectors);
	CU_add_test(s, "snapshot id round trip", test_id_round_trip);
	CU_add_test(s, "dump is consistent under concurrent writes",
	            test_dump_consistent_under_writes);
	CU_add_test(s, "request lifecycle", test_request_lifecycle);
	CU_add_test(s, "gc", test_gc);
	CU_add_test(s, "a restart makes a new id", test_restart_new_id);
	CU_add_test(s, "staging writes, duplicates, gaps, resume, supersede", test_staging_writes);
	CU_add_test(s, "staging finish detects damage", test_staging_finish_detects_damage);
	CU_add_test(s, "every flipped byte and truncation is detected", test_every_damage_detected);
	CU_add_test(s, "failed install keeps the old state", test_install_failure_keeps_old_state);
	CU_add_test(s, "install from the store's own file", test_install_own_file);
	CU_add_test(s, "persist_ready installs a staged snapshot", test_persist_ready_installs);
	CU_add_test(s, "memory stays bounded", test_memory_bounded);
	CU_add_test(s, "close stops a running dump", test_close_stops_dump);
	CU_add_test(s, "a failed dump fail-stops the store", test_failed_dump_fail_stops);
	CU_add_test(s, "bad arguments", test_bad_arguments);
	CU_add_test(s, "record sizes are checked", test_record_sizes);
	CU_add_test(s, "no snapshot without a membership", test_request_needs_membership);
	CU_add_test(s, "latest snapshot index", test_latest_index);
	CU_add_test(s, "is_ready", test_snap_is_ready);
	CU_add_test(s, "begin keeps a finished staging", test_begin_keeps_finished);
}
