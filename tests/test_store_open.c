/* test_store_open.c - CUnit suite "store_open": creating, validating and configuring a node's
 * database, refusing bad files untouched, and fail-stop on a failing disk. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store_internal.h"
#include "suites.h"
#include "vfs_fault.h"

#define OPEN_CLUSTER 0x5eed5eedULL

static char open_dir[64];   /* per-test temporary directory */
static char open_path[128]; /* open_dir/node-1.db */
static char open_err[512];  /* the last store_open message */

/* ---- fixture and file helpers ---- */

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

static void open_setup(void)
{
	snprintf(open_dir, sizeof(open_dir), "/tmp/raftkv-open-XXXXXX");
	CU_ASSERT_FATAL(mkdtemp(open_dir) != NULL);
	snprintf(open_path, sizeof(open_path), "%s/node-1.db", open_dir);
}

static void open_teardown(void)
{
	dir_remove(open_dir);
}

/* path + suffix in a static buffer (one use at a time). */
static const char *with_suffix(const char *path, const char *suffix)
{
	static char buf[160];

	snprintf(buf, sizeof(buf), "%s%s", path, suffix);
	return buf;
}

static bool file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* FNV-1a of the file's bytes, mixed with its size; 0 when it does not exist. */
static uint64_t file_digest(const char *path)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	unsigned char buf[4096];
	FILE *fp = fopen(path, "rb");
	size_t n, total = 0;

	if (fp == NULL)
		return 0;
	while ((n = fread(buf, 1, sizeof(buf), fp)) > 0) {
		for (size_t k = 0; k < n; k++)
			h = (h ^ buf[k]) * 0x100000001b3ULL;
		total += n;
	}
	fclose(fp);
	return h ^ total;
}

static void file_write(const char *path, const void *buf, size_t len)
{
	FILE *fp = fopen(path, "wb");

	CU_ASSERT_FATAL(fp != NULL);
	CU_ASSERT_EQUAL(fwrite(buf, 1, len, fp), len);
	fclose(fp);
}

static uint64_t rng_next(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void fill_random(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;

	for (size_t k = 0; k < len; k++)
		buf[k] = (unsigned char)rng_next(&x);
}

/* Runs sql on path with a plain connection; its close checkpoints and removes the WAL. */
static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;

	CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_close(db), SQLITE_OK);
}

/* The integer result of a one-row query on a plain read-only connection. */
static int64_t raw_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *stmt = NULL;
	int64_t v = -1;

	CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
	    sqlite3_step(stmt) == SQLITE_ROW)
		v = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return v;
}

/* The integer result of a one-row query on the store's own connection. */
static int64_t store_int(store *s, const char *sql)
{
	sqlite3_stmt *stmt = NULL;
	int64_t v = -1;

	if (sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL) == SQLITE_OK &&
	    sqlite3_step(stmt) == SQLITE_ROW)
		v = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return v;
}

static void opts(store_options *o, uint64_t cluster, uint64_t node)
{
	store_options_init(o);
	o->cluster_id = cluster;
	o->node_id = node;
}

static int open_as(const char *path, uint64_t cluster, uint64_t node, store **s)
{
	store_options o;

	opts(&o, cluster, node);
	return store_open(path, &o, s, open_err, sizeof(open_err));
}

/* Persists entries first .. first + n - 1 (term, len-byte payloads) and a hard state. */
static int persist_n(store *s, uint64_t first, size_t n, uint64_t term, size_t len)
{
	raft_entry *e = calloc(n, sizeof(*e));
	unsigned char *payload = calloc(1, len + 1);
	raft_ready rd;
	int rv;

	CU_ASSERT_FATAL(e != NULL && payload != NULL);
	memset(payload, 'x', len);
	for (size_t k = 0; k < n; k++)
		e[k] = (raft_entry){RAFT_ENTRY_NORMAL, term, first + k, len ? payload : NULL, len};
	memset(&rd, 0, sizeof(rd));
	rd.entries = e;
	rd.n_entries = n;
	rd.has_hard_state = true;
	rd.hard_state = (raft_hard_state){term, 1, first > 1 ? first - 1 : 0};
	rd.must_sync = true;
	rv = store_persist_ready(s, &rd);
	free(payload);
	free(e);
	return rv;
}

/* Persists a Ready holding only a hard state (term, vote 1, commit 0). */
static int persist_hard_state(store *s, uint64_t term, bool sync)
{
	raft_ready rd;

	memset(&rd, 0, sizeof(rd));
	rd.has_hard_state = true;
	rd.hard_state = (raft_hard_state){term, 1, 0};
	rd.must_sync = sync;
	return store_persist_ready(s, &rd);
}

/* A closed store at open_path holding n entries, its WAL checkpointed into the main file. */
static void make_db(size_t n)
{
	store *s = NULL;

	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	if (n > 0)
		CU_ASSERT_EQUAL_FATAL(persist_n(s, 1, n, 1, 200), STORE_OK);
	store_close(s);
	raw_exec(open_path, "PRAGMA wal_checkpoint(TRUNCATE)");
	CU_ASSERT_FALSE(file_exists(with_suffix(open_path, "-wal")));
}

/*
 * Opens open_path, which must be refused with want, a message, and no byte of the file or its
 * WAL changed. no_sidecars: the file must not even get a -wal or -shm (foreign files).
 */
static void expect_refused(uint64_t cluster, uint64_t node, int want, bool no_sidecars)
{
	uint64_t before = file_digest(open_path);
	uint64_t wal_before = file_digest(with_suffix(open_path, "-wal"));
	uint64_t empty = 0xcbf29ce484222325ULL; /* file_digest of an empty file */
	store *s = (store *)&s;
	int rv;

	open_err[0] = '\0';
	rv = open_as(open_path, cluster, node, &s);
	CU_ASSERT_EQUAL(rv, want);
	if (rv != want)
		fprintf(stderr, "\nstore_open: %d (%s), want %d\n", rv, open_err, want);
	CU_ASSERT_PTR_NULL(s);
	CU_ASSERT(strlen(open_err) > 0);
	CU_ASSERT_EQUAL(file_digest(open_path), before);
	/* SQLite may leave an empty -wal beside a file of ours that it read; never content. */
	CU_ASSERT(file_digest(with_suffix(open_path, "-wal")) == wal_before ||
	          (wal_before == 0 && file_digest(with_suffix(open_path, "-wal")) == empty));
	CU_ASSERT_FALSE(file_exists(with_suffix(open_path, ".tmp")));
	if (no_sidecars) {
		CU_ASSERT_FALSE(file_exists(with_suffix(open_path, "-wal")));
		CU_ASSERT_FALSE(file_exists(with_suffix(open_path, "-shm")));
	}
	if (rv == STORE_OK)
		store_close(s);
}

/* ---- creation and reopen ---- */

static void test_create(void)
{
	unsigned char h[100];
	FILE *fp;
	store *s = NULL;

	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(open_err[0], '\0');
	CU_ASSERT_FALSE(file_exists(with_suffix(open_path, ".tmp")));
	CU_ASSERT_FALSE(file_exists(with_suffix(open_path, ".tmp-wal")));
	CU_ASSERT_EQUAL(store_failed(s), STORE_OK);
	store_close(s);

	/* The main file alone is complete: header, schema and identity, in WAL mode. */
	fp = fopen(open_path, "rb");
	CU_ASSERT_FATAL(fp != NULL);
	CU_ASSERT_EQUAL(fread(h, 1, sizeof(h), fp), sizeof(h));
	fclose(fp);
	CU_ASSERT_EQUAL(memcmp(h, "SQLite format 3", 16), 0);
	CU_ASSERT_EQUAL(h[18], 2); /* WAL write version */
	CU_ASSERT_EQUAL(h[19], 2); /* WAL read version */
	CU_ASSERT_EQUAL(raw_int(open_path, "PRAGMA application_id"), STORE_APPLICATION_ID);
	CU_ASSERT_EQUAL(raw_int(open_path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	CU_ASSERT_EQUAL(raw_int(open_path, "SELECT value FROM meta WHERE key = 'cluster_id'"),
	                (int64_t)OPEN_CLUSTER);
	CU_ASSERT_EQUAL(raw_int(open_path, "SELECT value FROM meta WHERE key = 'node_id'"), 1);
	CU_ASSERT_EQUAL(raw_int(open_path, "SELECT count(*) FROM hard_state"), 1);
	CU_ASSERT_EQUAL(raw_int(open_path, "SELECT count(*) FROM apply_state"), 1);
}

static void test_reopen(void)
{
	const raft_storage *st;
	raft_hard_state hs;
	raft_conf_state cs;
	uint64_t last = 0, t = 0;
	store *s = NULL;

	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	CU_ASSERT_EQUAL(persist_n(s, 1, 20, 3, 10), STORE_OK);
	store_close(s);
	/* The state is in the WAL, as after a crash; without a wal-index, SQLite recovers it. */
	CU_ASSERT(file_digest(with_suffix(open_path, "-wal")) != 0);
	unlink(with_suffix(open_path, "-shm"));
	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	st = store_raft_storage(s);
	CU_ASSERT_EQUAL(st->last_index(st->ctx, &last), RAFT_OK);
	CU_ASSERT_EQUAL(last, 20);
	CU_ASSERT_EQUAL(st->term(st->ctx, 20, &t), RAFT_OK);
	CU_ASSERT_EQUAL(t, 3);
	CU_ASSERT_EQUAL(st->initial_state(st->ctx, &hs, &cs), RAFT_OK);
	CU_ASSERT_EQUAL(hs.term, 3);
	CU_ASSERT_EQUAL(hs.vote, 1);
	CU_ASSERT_EQUAL(cs.n_voters, 0);
	store_close(s);
}

/* Leaves at wal a WAL with committed frames of another database (a db with table t). */
static void make_foreign_wal(const char *wal)
{
	char other[160], cmd[400];
	sqlite3 *db = NULL;

	snprintf(other, sizeof(other), "%s/other.db", open_dir);
	CU_ASSERT_EQUAL_FATAL(sqlite3_open(other, &db), SQLITE_OK);
	sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	CU_ASSERT_EQUAL(sqlite3_exec(db,
	                             "PRAGMA journal_mode=WAL; CREATE TABLE t(x);"
	                             "INSERT INTO t VALUES (1), (2), (3)",
	                             NULL, NULL, NULL),
	                SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_close(db), SQLITE_OK);
	snprintf(cmd, sizeof(cmd), "%s-wal", other);
	CU_ASSERT_EQUAL_FATAL(rename(cmd, wal), 0);
}

/* A crash during creation leaves path.tmp (and maybe its WAL) but no path: the next open
 * builds a fresh file. A WAL left at path by an earlier database must not be replayed onto
 * the new one. */
static void test_create_after_crash(void)
{
	static const char junk[] = "half-built database";
	const raft_storage *st;
	uint64_t last = 1;
	store *s = NULL;

	file_write(with_suffix(open_path, ".tmp"), junk, sizeof(junk));
	file_write(with_suffix(open_path, ".tmp-wal"), junk, sizeof(junk));
	make_foreign_wal(with_suffix(open_path, "-wal"));
	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	CU_ASSERT_FALSE(file_exists(with_suffix(open_path, ".tmp")));
	CU_ASSERT_FALSE(file_exists(with_suffix(open_path, ".tmp-wal")));
	st = store_raft_storage(s);
	CU_ASSERT_EQUAL(st->last_index(st->ctx, &last), RAFT_OK);
	CU_ASSERT_EQUAL(last, 0);
	CU_ASSERT_EQUAL(store_int(s, "SELECT count(*) FROM sqlite_master WHERE name = 't'"), 0);
	CU_ASSERT_EQUAL(persist_n(s, 1, 3, 1, 5), STORE_OK);
	store_close(s);
	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	store_close(s);
}

static void test_bad_arguments(void)
{
	store_options o;
	store *s = (store *)&s;

	opts(&o, OPEN_CLUSTER, 0);
	CU_ASSERT_EQUAL(store_open(open_path, &o, &s, open_err, sizeof(open_err)),
	                STORE_ERR_INVALID);
	CU_ASSERT_PTR_NULL(s);
	CU_ASSERT_FALSE(file_exists(open_path));
	opts(&o, OPEN_CLUSTER, 1);
	CU_ASSERT_EQUAL(store_open(NULL, &o, &s, NULL, 0), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_open(open_path, NULL, &s, NULL, 0), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(
	    store_open("/nonexistent-raftkv-dir/node-1.db", &o, &s, open_err, sizeof(open_err)),
	    STORE_ERR_IO);
	CU_ASSERT(strlen(open_err) > 0);
	CU_ASSERT_PTR_NULL(s);
}

/* ---- bad files: each refused with its code, a message, and not one byte written ---- */

static void test_zero_length(void)
{
	file_write(open_path, "", 0);
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_NOT_OURS, true);
	CU_ASSERT(file_exists(open_path));
}

static void test_random_bytes(void)
{
	const char *env = getenv("RAFTKV_OPEN_SEED");
	uint64_t seed = env != NULL ? strtoull(env, NULL, 0) : 20240601;
	unsigned before = CU_get_number_of_failures();
	static unsigned char buf[65536];

	fill_random(buf, sizeof(buf), seed);
	file_write(open_path, buf, sizeof(buf));
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_NOT_OURS, true);
	/* Shorter than a header, too. */
	file_write(open_path, buf, 37);
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_NOT_OURS, true);
	if (CU_get_number_of_failures() != before)
		fprintf(stderr, "\nrandom bytes: failed with RAFTKV_OPEN_SEED=%llu\n",
		        (unsigned long long)seed);
}

static void test_other_application(void)
{
	raw_exec(open_path, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_NOT_OURS, true);
	CU_ASSERT(strstr(open_err, "application id") != NULL);
	unlink(open_path);
	/* A WAL-mode database with another application id and our very schema. */
	raw_exec(open_path,
	         "PRAGMA journal_mode=WAL; PRAGMA application_id=1234;" STORE_SCHEMA_SQL);
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_NOT_OURS, true);
}

static void test_newer_version(void)
{
	make_db(0);
	raw_exec(open_path, "PRAGMA user_version=2");
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_VERSION, true);
	CU_ASSERT(strstr(open_err, "version") != NULL);
	raw_exec(open_path, "PRAGMA user_version=0");
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_VERSION, true);
}

static void test_wrong_cluster_or_node(void)
{
	store *s = NULL;

	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	CU_ASSERT_EQUAL(persist_n(s, 1, 5, 1, 10), STORE_OK);
	store_close(s); /* leaves its WAL: the refusal must not touch that either */
	expect_refused(OPEN_CLUSTER + 1, 1, STORE_ERR_WRONG_NODE, false);
	CU_ASSERT(strstr(open_err, "cluster") != NULL);
	expect_refused(OPEN_CLUSTER, 2, STORE_ERR_WRONG_NODE, false);
	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	store_close(s);
}

static void file_truncate(const char *path, off_t size)
{
	CU_ASSERT_EQUAL_FATAL(truncate(path, size), 0);
}

static void test_truncated(void)
{
	struct stat st;

	make_db(400);
	CU_ASSERT_EQUAL_FATAL(stat(open_path, &st), 0);
	CU_ASSERT_FATAL(st.st_size > 16 * 4096);
	file_truncate(open_path, st.st_size / 2);
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_CORRUPT, true);
	CU_ASSERT(strstr(open_err, "truncated") != NULL);
	file_truncate(open_path, st.st_size / 2 - 1000);
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_CORRUPT, true);
	file_truncate(open_path, 60);
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_CORRUPT, true);
}

/* A page overwritten inside a file of the right size: only the integrity check sees it. */
static void test_corrupt_pages(void)
{
	static unsigned char junk[4096];
	struct stat st;
	int fd;

	make_db(400);
	CU_ASSERT_EQUAL_FATAL(stat(open_path, &st), 0);
	memset(junk, 0x5a, sizeof(junk));
	fd = open(open_path, O_WRONLY);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(pwrite(fd, junk, sizeof(junk), st.st_size - 2 * 4096),
	                (ssize_t)sizeof(junk));
	close(fd);
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_CORRUPT, false);
	CU_ASSERT(strstr(open_err, "quick_check") != NULL);
}

/* ---- configuration ---- */

static void test_pragmas(void)
{
	static const struct {
		store_sync sync;
		int level;
	} modes[] = {{STORE_SYNC_FULL, 2}, {STORE_SYNC_NORMAL, 1}, {STORE_SYNC_OFF, 0}};
	store_options o;
	store *s = NULL;

	for (size_t k = 0; k < 3; k++) {
		opts(&o, OPEN_CLUSTER, 1);
		o.sync = modes[k].sync;
		o.cache_size_kib = k == 0 ? 0 : 4096;
		CU_ASSERT_EQUAL_FATAL(store_open(open_path, &o, &s, open_err, sizeof(open_err)),
		                      STORE_OK);
		CU_ASSERT_EQUAL(store_int(s, "PRAGMA synchronous"), modes[k].level);
		CU_ASSERT_EQUAL(store_int(s, "PRAGMA secure_delete"), 0);
		CU_ASSERT_EQUAL(store_int(s, "PRAGMA cache_size"), k == 0 ? -16384 : -4096);
		CU_ASSERT_EQUAL(store_int(s, "PRAGMA wal_autocheckpoint"), 0);
		CU_ASSERT_EQUAL(store_int(s, "PRAGMA page_size"), 4096);
		CU_ASSERT_EQUAL(store_int(s, "PRAGMA journal_size_limit"), 4096 * 4096);
		/* A commit-only hard state skips its fsync without leaving the level lowered. */
		CU_ASSERT_EQUAL(persist_hard_state(s, 1 + k, false), STORE_OK);
		CU_ASSERT_EQUAL(store_int(s, "PRAGMA synchronous"), modes[k].level);
		store_close(s);
	}
}

static void test_commit_only_restores_sync(void)
{
	store *s = NULL;

	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	CU_ASSERT_EQUAL(persist_hard_state(s, 4, false), STORE_OK);
	CU_ASSERT_EQUAL(store_int(s, "PRAGMA synchronous"), 2);
	CU_ASSERT_EQUAL(store_int(s, "SELECT term FROM hard_state"), 4);
	CU_ASSERT_EQUAL(persist_hard_state(s, 5, true), STORE_OK);
	CU_ASSERT_EQUAL(store_int(s, "PRAGMA synchronous"), 2);
	store_close(s);
	CU_ASSERT_EQUAL(raw_int(open_path, "SELECT term FROM hard_state"), 5);
}

static off_t wal_size(void)
{
	struct stat st;

	return stat(with_suffix(open_path, "-wal"), &st) == 0 ? st.st_size : -1;
}

static void test_checkpoint(void)
{
	store_options o;
	store *s = NULL;

	opts(&o, OPEN_CLUSTER, 1);
	o.wal_limit_pages = 64;
	CU_ASSERT_EQUAL_FATAL(store_open(open_path, &o, &s, open_err, sizeof(open_err)), STORE_OK);
	/* Below a quarter of the limit nothing happens. */
	CU_ASSERT_EQUAL(persist_n(s, 1, 1, 1, 10), STORE_OK);
	CU_ASSERT_EQUAL(store_maybe_checkpoint(s), STORE_OK);
	CU_ASSERT(wal_size() > 0);
	/* Past the limit, with no dump running, the WAL is checkpointed and truncated. */
	CU_ASSERT_EQUAL(persist_n(s, 2, 400, 1, 1000), STORE_OK);
	CU_ASSERT(wal_size() > 64 * 4096);
	CU_ASSERT_EQUAL(store_maybe_checkpoint(s), STORE_OK);
	CU_ASSERT_EQUAL(wal_size(), 0);
	CU_ASSERT_EQUAL(store_int(s, "SELECT count(*) FROM raft_log"), 401);
	/* Between a quarter and the limit: PASSIVE, and the next commit restarts the WAL. */
	CU_ASSERT_EQUAL(persist_n(s, 402, 30, 1, 1000), STORE_OK);
	CU_ASSERT_EQUAL(store_maybe_checkpoint(s), STORE_OK);
	CU_ASSERT_EQUAL(persist_n(s, 432, 1, 1, 10), STORE_OK);
	CU_ASSERT(wal_size() > 0 && wal_size() < 60 * 4096);
	store_close(s);
}

/* ---- fail-stop ---- */

static void expect_failed_everywhere(store *s)
{
	const raft_storage *st = store_raft_storage(s);
	raft_entry *e = NULL;
	size_t n = 0;
	uint64_t v = 0;

	CU_ASSERT_EQUAL(persist_n(s, 1, 1, 1, 1), STORE_ERR_FAILED);
	CU_ASSERT_EQUAL(store_compact(s, 1, 0, NULL), STORE_ERR_FAILED);
	CU_ASSERT_EQUAL(store_maybe_checkpoint(s), STORE_ERR_FAILED);
	CU_ASSERT_EQUAL(st->term(st->ctx, 1, &v), STORE_ERR_FAILED);
	CU_ASSERT_EQUAL(st->last_index(st->ctx, &v), STORE_ERR_FAILED);
	CU_ASSERT_EQUAL(st->entries(st->ctx, 1, 2, 100, &e, &n), STORE_ERR_FAILED);
	CU_ASSERT_PTR_NULL(e);
}

/* A full disk (SQLite's own max_page_count path gives SQLITE_FULL) fail-stops the store with
 * STORE_ERR_FULL; nothing of the failed Ready is written, and a reopen works. */
static void test_disk_full(void)
{
	const raft_storage *st;
	raft_hard_state hs;
	raft_conf_state cs;
	uint64_t last = 0;
	char sql[64];
	store *s = NULL;

	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	CU_ASSERT_EQUAL(persist_n(s, 1, 10, 2, 100), STORE_OK);
	snprintf(sql, sizeof(sql), "PRAGMA max_page_count=%lld",
	         (long long)store_int(s, "PRAGMA page_count"));
	CU_ASSERT_EQUAL(sqlite3_exec(s->db, sql, NULL, NULL, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL(persist_n(s, 8, 200, 3, 1000), STORE_ERR_FULL);
	CU_ASSERT_EQUAL(store_failed(s), STORE_ERR_FULL);
	CU_ASSERT(strstr(store_errmsg(s), "full") != NULL);
	expect_failed_everywhere(s);
	CU_ASSERT_EQUAL(store_failed(s), STORE_ERR_FULL);
	store_close(s);

	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	st = store_raft_storage(s);
	CU_ASSERT_EQUAL(st->last_index(st->ctx, &last), RAFT_OK);
	CU_ASSERT_EQUAL(last, 10);
	CU_ASSERT_EQUAL(st->initial_state(st->ctx, &hs, &cs), RAFT_OK);
	CU_ASSERT_EQUAL(hs.term, 2);
	CU_ASSERT_EQUAL(store_int(s, "SELECT count(*) FROM raft_log WHERE term = 3"), 0);
	CU_ASSERT_EQUAL(persist_n(s, 8, 200, 3, 1000), STORE_OK);
	CU_ASSERT_EQUAL(st->last_index(st->ctx, &last), RAFT_OK);
	CU_ASSERT_EQUAL(last, 207);
	store_close(s);
}

/* Pages of a running store overwritten behind its back: the read that meets them fail-stops
 * the store with STORE_ERR_CORRUPT, and the next open refuses the file. */
static void test_corruption_while_running(void)
{
	static unsigned char junk[4096 * 64];
	const raft_storage *st;
	raft_entry *e = NULL;
	size_t n = 0;
	store *s = NULL;
	int fd, rv;

	make_db(0);
	CU_ASSERT_EQUAL_FATAL(open_as(open_path, OPEN_CLUSTER, 1, &s), STORE_OK);
	CU_ASSERT_EQUAL(persist_n(s, 1, 2000, 1, 400), STORE_OK);
	CU_ASSERT_EQUAL(
	    sqlite3_wal_checkpoint_v2(s->db, "main", SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
	    SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_exec(s->db, "PRAGMA cache_size=0", NULL, NULL, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_db_release_memory(s->db), SQLITE_OK);
	fill_random(junk, sizeof(junk), 11);
	fd = open(open_path, O_WRONLY);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(pwrite(fd, junk, sizeof(junk), 4096 * 8), (ssize_t)sizeof(junk));
	close(fd);
	st = store_raft_storage(s);
	rv = st->entries(st->ctx, 1, 2001, UINT64_MAX, &e, &n);
	CU_ASSERT_EQUAL(rv, STORE_ERR_CORRUPT);
	CU_ASSERT_PTR_NULL(e);
	CU_ASSERT_EQUAL(store_failed(s), STORE_ERR_CORRUPT);
	CU_ASSERT(strlen(store_errmsg(s)) > 0);
	expect_failed_everywhere(s);
	store_close(s);
	expect_refused(OPEN_CLUSTER, 1, STORE_ERR_CORRUPT, false);
}

/* ---- on the fault-injecting VFS ---- */

static int fault_suite_init(void)
{
	return vfs_fault_register(NULL) == SQLITE_OK ? 0 : 1;
}

static int fault_suite_clean(void)
{
	vfs_fault_unregister();
	return 0;
}

static void fault_setup(void)
{
	open_setup();
	vfs_fault_reset(1);
}

static void fault_teardown(void)
{
	vfs_fault_clear();
	open_teardown();
}

static int fault_open(store_sync sync, store **s)
{
	store_options o;

	opts(&o, OPEN_CLUSTER, 1);
	o.vfs = VFS_FAULT_NAME;
	o.sync = sync;
	return store_open(open_path, &o, s, open_err, sizeof(open_err));
}

static uint64_t syncs_since(void)
{
	vfs_fault_stats st;

	vfs_fault_stats_get(&st);
	vfs_fault_stats_reset();
	return st.syncs;
}

/* Applies the log up to index (its entries are malformed commands, rejected but applied). */
static void apply_upto(store *s, uint64_t index)
{
	const raft_storage *st = store_raft_storage(s);
	uint64_t lo = store_applied_index(s) + 1;
	raft_entry *e = NULL;
	size_t n = 0;

	CU_ASSERT_EQUAL_FATAL(st->entries(st->ctx, lo, index + 1, UINT64_MAX, &e, &n), RAFT_OK);
	CU_ASSERT_EQUAL(store_apply(s, e, n, NULL, NULL), STORE_OK);
	raft_entries_free(e, n);
	CU_ASSERT_EQUAL_FATAL(store_applied_index(s), index);
}

/* One fsync per Ready whatever its size, none for a commit-only hard state or for GC, one for
 * recording the membership. */
static void test_one_sync_per_ready(void)
{
	const raft_conf_state cs = {.voters = {1, 2, 3}, .n_voters = 3};
	store *s = NULL;

	CU_ASSERT_EQUAL_FATAL(fault_open(STORE_SYNC_FULL, &s), STORE_OK);
	CU_ASSERT_EQUAL(persist_n(s, 1, 1, 1, 256), STORE_OK);
	syncs_since();
	CU_ASSERT_EQUAL(store_set_conf_state(s, &cs), STORE_OK);
	CU_ASSERT_EQUAL(syncs_since(), 1);
	CU_ASSERT_EQUAL(persist_n(s, 2, 64, 1, 256), STORE_OK);
	CU_ASSERT_EQUAL(syncs_since(), 1);
	CU_ASSERT_EQUAL(persist_n(s, 66, 1024, 1, 256), STORE_OK);
	CU_ASSERT_EQUAL(syncs_since(), 1);
	CU_ASSERT_EQUAL(persist_hard_state(s, 2, false), STORE_OK);
	CU_ASSERT_EQUAL(syncs_since(), 0);
	apply_upto(s, 500);
	CU_ASSERT_EQUAL(syncs_since(), 0);
	for (bool more = true; more;)
		CU_ASSERT_EQUAL_FATAL(store_compact(s, 500, 100, &more), STORE_OK);
	CU_ASSERT_EQUAL(syncs_since(), 0);
	store_close(s);
	CU_ASSERT_EQUAL_FATAL(fault_open(STORE_SYNC_NORMAL, &s), STORE_OK);
	syncs_since();
	CU_ASSERT_EQUAL(persist_n(s, 1090, 64, 1, 256), STORE_OK);
	CU_ASSERT_EQUAL(syncs_since(), 0);
	store_close(s);
}

/* The state a reopen finds: last index and hard state term. */
static void reopen_state(uint64_t *last, uint64_t *term)
{
	const raft_storage *st;
	raft_hard_state hs;
	raft_conf_state cs;
	store *s = NULL;

	CU_ASSERT_EQUAL_FATAL(fault_open(STORE_SYNC_FULL, &s), STORE_OK);
	st = store_raft_storage(s);
	CU_ASSERT_EQUAL(st->last_index(st->ctx, last), RAFT_OK);
	CU_ASSERT_EQUAL(st->initial_state(st->ctx, &hs, &cs), RAFT_OK);
	*term = hs.term;
	/* The store works again once the cause is gone. */
	CU_ASSERT_EQUAL(persist_n(s, *last + 1, 5, *term + 1, 10), STORE_OK);
	store_close(s);
}

/* A failing write, sync or full disk in a Ready: the error comes back, the store fail-stops,
 * and a reopen finds the state before or (for a failed sync, whose WAL frames may have landed)
 * after that Ready, never a mix. */
static void test_io_errors(void)
{
	static const struct {
		int mask, rc, want;
		bool may_land;
	} cases[] = {
	    {VFS_FAULT_WRITE, SQLITE_IOERR_WRITE, STORE_ERR_IO, false},
	    {VFS_FAULT_SYNC, SQLITE_IOERR_FSYNC, STORE_ERR_IO, true},
	    {VFS_FAULT_WRITE, SQLITE_FULL, STORE_ERR_FULL, false},
	};

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		uint64_t last = 0, term = 0;
		store *s = NULL;

		unlink(open_path);
		unlink(with_suffix(open_path, "-wal"));
		unlink(with_suffix(open_path, "-shm"));
		CU_ASSERT_EQUAL_FATAL(fault_open(STORE_SYNC_FULL, &s), STORE_OK);
		CU_ASSERT_EQUAL(persist_n(s, 1, 10, 2, 100), STORE_OK);
		vfs_fault_fail_from(cases[k].mask, 1, cases[k].rc);
		CU_ASSERT_EQUAL(persist_n(s, 11, 20, 3, 100), cases[k].want);
		CU_ASSERT_EQUAL(store_failed(s), cases[k].want);
		CU_ASSERT(strlen(store_errmsg(s)) > 0);
		expect_failed_everywhere(s);
		store_close(s);
		vfs_fault_clear();
		reopen_state(&last, &term);
		if (last == 10)
			CU_ASSERT_EQUAL(term, 2)
		else
			CU_ASSERT(cases[k].may_land && last == 30 && term == 3);
	}
}

/* True when the fault armed before the last operation fired (and resets the counters). */
static bool fault_fired(void)
{
	vfs_fault_stats st;

	vfs_fault_stats_get(&st);
	vfs_fault_stats_reset();
	return st.faults > 0;
}

/* Opening an existing file while its n-th read fails, for every n that hits the open: each
 * open fails with an error and a message, or (SQLite retried) succeeds; the file is never
 * changed by a failed open, and a clean open works afterwards. */
static void test_open_read_errors(void)
{
	uint64_t before, n, failures = 0;
	store *s = NULL;
	int rv;

	make_db(50);
	before = file_digest(open_path);
	for (n = 1; n < 500; n++) {
		vfs_fault_stats_reset();
		vfs_fault_fail_after(VFS_FAULT_READ, n, SQLITE_IOERR_READ);
		rv = fault_open(STORE_SYNC_FULL, &s);
		vfs_fault_clear();
		if (rv == STORE_OK)
			store_close(s);
		if (!fault_fired())
			break;
		if (rv == STORE_OK)
			continue;
		failures++;
		CU_ASSERT(rv == STORE_ERR_IO || rv == STORE_ERR_CORRUPT);
		CU_ASSERT_PTR_NULL(s);
		CU_ASSERT(strlen(open_err) > 0);
		CU_ASSERT_EQUAL(file_digest(open_path), before);
	}
	CU_ASSERT(n < 500 && failures > 3);
	CU_ASSERT_EQUAL_FATAL(fault_open(STORE_SYNC_FULL, &s), STORE_OK);
	store_close(s);
}

/* Creating a file while its n-th write, sync, truncate or delete fails, for every n that hits
 * the creation: either the open fails with STORE_ERR_IO and leaves no file at the path, or
 * the file it made is complete and works. */
static void test_create_errors(void)
{
	uint64_t n, failures = 0;
	store *s = NULL;
	int rv;

	for (n = 1; n < 500; n++) {
		vfs_fault_stats_reset();
		vfs_fault_fail_after(VFS_FAULT_MUTATION, n, SQLITE_IOERR);
		rv = fault_open(STORE_SYNC_FULL, &s);
		vfs_fault_clear();
		if (!fault_fired()) {
			CU_ASSERT_EQUAL(rv, STORE_OK);
			store_close(s);
			break;
		}
		if (rv != STORE_OK) {
			failures++;
			CU_ASSERT_EQUAL(rv, STORE_ERR_IO);
			CU_ASSERT(strlen(open_err) > 0);
			CU_ASSERT_FALSE(file_exists(open_path));
			CU_ASSERT_FALSE(file_exists(with_suffix(open_path, ".tmp")));
			continue;
		}
		store_close(s);
		CU_ASSERT_EQUAL_FATAL(fault_open(STORE_SYNC_FULL, &s), STORE_OK);
		CU_ASSERT_EQUAL(persist_n(s, 1, 3, 1, 10), STORE_OK);
		store_close(s);
		unlink(open_path);
		unlink(with_suffix(open_path, "-wal"));
		unlink(with_suffix(open_path, "-shm"));
	}
	CU_ASSERT(n < 500 && failures > 10);
}

void test_register_store_open(void)
{
	CU_pSuite s = CU_add_suite_with_setup_and_teardown("store_open", NULL, NULL, open_setup,
	                                                   open_teardown);

	if (s == NULL)
		return;
	CU_add_test(s, "creates a new file via temp + rename", test_create);
	CU_add_test(s, "reopen keeps the state", test_reopen);
	CU_add_test(s, "creation after a crash mid-creation", test_create_after_crash);
	CU_add_test(s, "bad arguments", test_bad_arguments);
	CU_add_test(s, "zero-length file", test_zero_length);
	CU_add_test(s, "random bytes", test_random_bytes);
	CU_add_test(s, "another application's database", test_other_application);
	CU_add_test(s, "another schema version", test_newer_version);
	CU_add_test(s, "another cluster or node", test_wrong_cluster_or_node);
	CU_add_test(s, "truncated database", test_truncated);
	CU_add_test(s, "corrupt pages", test_corrupt_pages);
	CU_add_test(s, "pragmas per options", test_pragmas);
	CU_add_test(s, "commit-only hard state", test_commit_only_restores_sync);
	CU_add_test(s, "WAL checkpoint policy", test_checkpoint);
	CU_add_test(s, "disk full fail-stops", test_disk_full);
	CU_add_test(s, "corruption while running fail-stops", test_corruption_while_running);

	s = CU_add_suite_with_setup_and_teardown("store_open_faults", fault_suite_init,
	                                         fault_suite_clean, fault_setup, fault_teardown);
	if (s == NULL)
		return;
	CU_add_test(s, "one fsync per Ready", test_one_sync_per_ready);
	CU_add_test(s, "I/O errors and a full disk fail-stop", test_io_errors);
	CU_add_test(s, "read errors while opening", test_open_read_errors);
	CU_add_test(s, "write errors while creating", test_create_errors);
}
