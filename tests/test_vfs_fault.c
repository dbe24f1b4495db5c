/* test_vfs_fault.c - CUnit suite "vfs_fault": the fault-injecting VFS over plain SQLite. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "suites.h"
#include "vfs_fault.h"

/* Rows per transaction and payload bytes per row of the test workload: a transaction spans
 * several pages, so a crash can cut it in the middle. */
#define VT_ROWS    4
#define VT_PAYLOAD 1500
#define VT_TXNS    12

typedef struct vt_ctx {
	char dir[256];
	char path[320];
	uint64_t seed;
} vt_ctx;

/* The base for test directories: $TMPDIR, else /dev/shm (fsync is free there), else /tmp. */
static const char *vt_tmp_base(void)
{
	const char *base = getenv("TMPDIR");
	struct stat sb;

	if (base != NULL && *base != '\0')
		return base;
	if (stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0)
		return "/dev/shm";
	return "/tmp";
}

static void vt_setup(vt_ctx *c, uint64_t seed, const char *file)
{
	snprintf(c->dir, sizeof(c->dir), "%s/raftkv-vfs-XXXXXX", vt_tmp_base());
	CU_ASSERT_FATAL(mkdtemp(c->dir) != NULL);
	snprintf(c->path, sizeof(c->path), "%s/%s", c->dir, file);
	c->seed = seed;
	vfs_fault_reset(seed);
}

static void vt_teardown(vt_ctx *c)
{
	DIR *d = opendir(c->dir);
	struct dirent *e;
	char p[600];

	vfs_fault_clear();
	while (d != NULL && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", c->dir, e->d_name);
		unlink(p);
	}
	if (d != NULL)
		closedir(d);
	rmdir(c->dir);
	vfs_fault_reset(0);
}

static sqlite3 *vt_open(const char *path)
{
	sqlite3 *db = NULL;
	int rc =
	    sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, VFS_FAULT_NAME);

	if (rc != SQLITE_OK) {
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	return db;
}

static int vt_exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* Opens path with the given journal mode and synchronous=FULL. */
static sqlite3 *vt_open_mode(const char *path, const char *journal)
{
	sqlite3 *db = vt_open(path);
	char sql[128];

	CU_ASSERT_FATAL(db != NULL);
	snprintf(sql, sizeof(sql), "PRAGMA journal_mode=%s; PRAGMA synchronous=FULL;", journal);
	CU_ASSERT_EQUAL_FATAL(vt_exec(db, sql), SQLITE_OK);
	return db;
}

/* The value of a one-column, one-row query, or -1 on error. */
static int64_t vt_query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int64_t v = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static bool vt_integrity_ok(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	bool ok = false;

	if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
	sqlite3_finalize(st);
	return ok;
}

static int vt_create_table(sqlite3 *db)
{
	return vt_exec(db, "CREATE TABLE t(txn INTEGER, k INTEGER, v BLOB, PRIMARY KEY (txn, k))");
}

/* Transaction txn inserts VT_ROWS rows whose payload is a function of (txn, k). */
static int vt_insert_txn(sqlite3 *db, int txn)
{
	char sql[256];

	snprintf(
	    sql, sizeof(sql),
	    "WITH RECURSIVE r(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM r WHERE k < %d) "
	    "INSERT INTO t SELECT %d, k, substr(hex(zeroblob(%d)) || printf('%%d.%%d', %d, k), "
	    "-%d) FROM r",
	    VT_ROWS - 1, txn, VT_PAYLOAD, txn, VT_PAYLOAD);
	return vt_exec(db, sql);
}

/* The number of complete transactions 1..j in t if t holds exactly those, else -1. */
static int vt_committed_prefix(sqlite3 *db)
{
	int64_t rows = vt_query_int(db, "SELECT count(*) FROM t");
	int64_t max = vt_query_int(db, "SELECT coalesce(max(txn), 0) FROM t");
	int64_t ok = vt_query_int(db, "SELECT count(*) FROM t WHERE v = substr(hex(zeroblob(1500))"
	                              " || printf('%d.%d', txn, k), -1500)");

	if (rows < 0 || max < 0 || rows != max * VT_ROWS || ok != rows)
		return -1;
	return (int)max;
}

/* Simulates the power cut: disk down, connection closed, unsynced data reverted. */
static void vt_crash(sqlite3 *db, vfs_fault_crash_mode mode)
{
	vfs_fault_power_off();
	CU_ASSERT_EQUAL(sqlite3_close(db), SQLITE_OK);
	CU_ASSERT_EQUAL(vfs_fault_crash(mode), SQLITE_OK);
}

static bool vt_exists(const char *path, off_t *size)
{
	struct stat sb;

	if (stat(path, &sb) != 0)
		return false;
	if (size != NULL)
		*size = sb.st_size;
	return true;
}

/* ---- byte-level semantics, through the VFS object itself ---- */

static sqlite3_file *vt_raw_open(const char *path)
{
	sqlite3_vfs *vfs = sqlite3_vfs_find(VFS_FAULT_NAME);
	sqlite3_file *f = calloc(1, (size_t)vfs->szOsFile);
	int out = 0;

	CU_ASSERT_FATAL(f != NULL);
	CU_ASSERT_EQUAL_FATAL(
	    vfs->xOpen(vfs, path, f,
	               SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_CREATE | SQLITE_OPEN_READWRITE, &out),
	    SQLITE_OK);
	return f;
}

static void vt_raw_close(sqlite3_file *f)
{
	f->pMethods->xClose(f);
	free(f);
}

static void vt_raw_fill(sqlite3_file *f, char ch, int len, sqlite3_int64 off)
{
	char *buf = malloc((size_t)len);

	CU_ASSERT_FATAL(buf != NULL);
	memset(buf, ch, (size_t)len);
	CU_ASSERT_EQUAL(f->pMethods->xWrite(f, buf, len, off), SQLITE_OK);
	free(buf);
}

/* Reads the whole file at path into a malloc'd buffer (owned by the caller). */
static unsigned char *vt_slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	unsigned char *buf = malloc(1 << 16);
	size_t n = 0;

	if (fp != NULL && buf != NULL)
		n = fread(buf, 1, 1 << 16, fp);
	if (fp != NULL)
		fclose(fp);
	*len = n;
	return buf;
}

/* Bytes [a, b) of buf are all ch. */
static bool vt_all(const unsigned char *buf, size_t a, size_t b, char ch)
{
	for (size_t i = a; i < b; i++)
		if (buf[i] != (unsigned char)ch)
			return false;
	return true;
}

/* Overwrites, a truncation and an append after the last sync all revert. */
static void test_raw_revert(void)
{
	vt_ctx c;
	sqlite3_file *f;
	unsigned char *buf;
	size_t len;

	vt_setup(&c, 12, "raw");
	f = vt_raw_open(c.path);
	vt_raw_fill(f, 'a', 4096, 0);
	CU_ASSERT_EQUAL(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
	vt_raw_fill(f, 'b', 1000, 100);
	CU_ASSERT_EQUAL(f->pMethods->xTruncate(f, 2048), SQLITE_OK);
	vt_raw_fill(f, 'c', 3000, 8192);
	vt_raw_close(f);
	CU_ASSERT_EQUAL(vfs_fault_crash(VFS_FAULT_CRASH_DROP), SQLITE_OK);
	buf = vt_slurp(c.path, &len);
	CU_ASSERT_EQUAL(len, 4096);
	CU_ASSERT(vt_all(buf, 0, len, 'a'));
	free(buf);
	vt_teardown(&c);
}

/* A torn write keeps a prefix of whole sectors of the last write only; over a few seeds both
 * a real tear and the extremes occur. */
static void test_raw_tear(void)
{
	static const size_t cuts[] = {300, 512, 1024, 1536, 2048, 2300};
	bool seen[6] = {false};

	for (uint64_t seed = 1; seed <= 40; seed++) {
		vt_ctx c;
		sqlite3_file *f;
		unsigned char *buf;
		size_t len, cut = 300;

		vt_setup(&c, seed, "raw");
		f = vt_raw_open(c.path);
		vt_raw_fill(f, 'a', 4096, 0);
		CU_ASSERT_EQUAL(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
		vt_raw_fill(f, 'x', 100, 3000);
		vt_raw_fill(f, 'b', 2000, 300);
		vt_raw_close(f);
		CU_ASSERT_EQUAL(vfs_fault_crash(VFS_FAULT_CRASH_TEAR), SQLITE_OK);
		buf = vt_slurp(c.path, &len);
		CU_ASSERT_EQUAL(len, 4096);
		while (cut < 2300 && buf[cut] == 'b')
			cut++;
		for (size_t i = 0; i < 6; i++)
			seen[i] = seen[i] || cuts[i] == cut;
		CU_ASSERT(vt_all(buf, 0, 300, 'a') && vt_all(buf, 300, cut, 'b') &&
		          vt_all(buf, cut, 4096, 'a'));
		free(buf);
		vt_teardown(&c);
	}
	for (size_t i = 0; i < 6; i++)
		CU_ASSERT(seen[i]);
}

/* Every unsynced sector is old or new, never mixed; the length is old or new. */
static void test_raw_scramble(void)
{
	int old_sectors = 0, new_sectors = 0;

	for (uint64_t seed = 1; seed <= 10; seed++) {
		vt_ctx c;
		sqlite3_file *f;
		unsigned char *buf;
		size_t len;

		vt_setup(&c, seed, "raw");
		f = vt_raw_open(c.path);
		vt_raw_fill(f, 'a', 8192, 0);
		CU_ASSERT_EQUAL(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
		vt_raw_fill(f, 'b', 8192, 0);
		vt_raw_fill(f, 'c', 1024, 8192);
		vt_raw_close(f);
		CU_ASSERT_EQUAL(vfs_fault_crash(VFS_FAULT_CRASH_SCRAMBLE), SQLITE_OK);
		buf = vt_slurp(c.path, &len);
		CU_ASSERT(len == 8192 || len == 9216);
		for (size_t a = 0; a < 8192; a += 512) {
			old_sectors += vt_all(buf, a, a + 512, 'a');
			new_sectors += vt_all(buf, a, a + 512, 'b');
			CU_ASSERT(vt_all(buf, a, a + 512, 'a') || vt_all(buf, a, a + 512, 'b'));
		}
		for (size_t a = 8192; a < len; a += 512)
			CU_ASSERT(vt_all(buf, a, a + 512, 'c') || vt_all(buf, a, a + 512, 0));
		free(buf);
		vt_teardown(&c);
	}
	CU_ASSERT(old_sectors > 0 && new_sectors > 0);
}

/* xDelete is durable: the file does not come back. */
static void test_raw_delete(void)
{
	sqlite3_vfs *vfs = sqlite3_vfs_find(VFS_FAULT_NAME);
	vt_ctx c;
	sqlite3_file *f;

	vt_setup(&c, 13, "raw");
	f = vt_raw_open(c.path);
	vt_raw_fill(f, 'a', 4096, 0);
	CU_ASSERT_EQUAL(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
	vt_raw_close(f);
	CU_ASSERT_EQUAL(vfs->xDelete(vfs, c.path, 0), SQLITE_OK);
	CU_ASSERT_EQUAL(vfs_fault_crash(VFS_FAULT_CRASH_DROP), SQLITE_OK);
	CU_ASSERT(!vt_exists(c.path, NULL));
	vt_teardown(&c);
}

/* ---- durability ---- */

static void vt_synced_survive(const char *journal)
{
	vt_ctx c;
	sqlite3 *db;

	vt_setup(&c, 1, "a.db");
	db = vt_open_mode(c.path, journal);
	CU_ASSERT_EQUAL(vt_create_table(db), SQLITE_OK);
	for (int i = 1; i <= VT_TXNS; i++)
		CU_ASSERT_EQUAL(vt_insert_txn(db, i), SQLITE_OK);
	vt_crash(db, VFS_FAULT_CRASH_DROP);
	db = vt_open_mode(c.path, journal);
	CU_ASSERT(vt_integrity_ok(db));
	CU_ASSERT_EQUAL(vt_committed_prefix(db), VT_TXNS);
	sqlite3_close(db);
	vt_teardown(&c);
}

static void test_synced_rows_survive(void)
{
	vt_synced_survive("WAL");
	vt_synced_survive("DELETE");
}

static void test_unsynced_rows_vanish(void)
{
	vfs_fault_stats before, after;
	vt_ctx c;
	sqlite3 *db;

	vt_setup(&c, 2, "a.db");
	db = vt_open_mode(c.path, "WAL");
	CU_ASSERT_EQUAL(vt_create_table(db), SQLITE_OK);
	for (int i = 1; i <= 5; i++)
		CU_ASSERT_EQUAL(vt_insert_txn(db, i), SQLITE_OK);
	CU_ASSERT_EQUAL(vt_exec(db, "PRAGMA synchronous=OFF"), SQLITE_OK);
	vfs_fault_stats_get(&before);
	for (int i = 6; i <= 10; i++)
		CU_ASSERT_EQUAL(vt_insert_txn(db, i), SQLITE_OK);
	vfs_fault_stats_get(&after);
	CU_ASSERT_EQUAL(after.syncs, before.syncs);
	CU_ASSERT(after.writes > before.writes);
	CU_ASSERT_EQUAL(vt_committed_prefix(db), 10);
	vt_crash(db, VFS_FAULT_CRASH_DROP);
	db = vt_open_mode(c.path, "WAL");
	CU_ASSERT(vt_integrity_ok(db));
	CU_ASSERT_EQUAL(vt_committed_prefix(db), 5);
	sqlite3_close(db);
	vt_teardown(&c);
}

/* A database created with synchronous=OFF never synced anything: after a crash its files are
 * gone or empty, and SQLite opens an empty database. Both outcomes occur over a few seeds. */
static void test_unsynced_new_file(void)
{
	int vanished = 0, emptied = 0;

	for (uint64_t seed = 1; seed <= 8; seed++) {
		vt_ctx c;
		sqlite3 *db;
		off_t size = 0;

		vt_setup(&c, seed, "a.db");
		db = vt_open(c.path);
		CU_ASSERT_FATAL(db != NULL);
		CU_ASSERT_EQUAL(vt_exec(db, "PRAGMA synchronous=OFF; PRAGMA journal_mode=WAL"),
		                SQLITE_OK);
		CU_ASSERT_EQUAL(vt_create_table(db), SQLITE_OK);
		CU_ASSERT_EQUAL(vt_insert_txn(db, 1), SQLITE_OK);
		vt_crash(db, VFS_FAULT_CRASH_DROP);
		if (!vt_exists(c.path, &size))
			vanished++;
		else if (size == 0)
			emptied++;
		else
			CU_FAIL("an unsynced new database kept data");
		db = vt_open(c.path);
		CU_ASSERT_FATAL(db != NULL);
		CU_ASSERT_EQUAL(vt_query_int(db, "SELECT count(*) FROM sqlite_master"), 0);
		sqlite3_close(db);
		vt_teardown(&c);
	}
	CU_ASSERT(vanished > 0);
	CU_ASSERT(emptied > 0);
}

/* ---- crash points ---- */

typedef struct vt_run {
	int acked;   /* transactions whose commit returned SQLITE_OK */
	bool failed; /* a commit failed (the disk went down) */
} vt_run;

/* Creates the table (synced), then with crash_k > 0 arms a crash after that many mutations
 * and runs the transactions until one fails. */
static vt_run vt_workload(const char *path, const char *journal, uint64_t crash_k, sqlite3 **out)
{
	sqlite3 *db = vt_open_mode(path, journal);
	vt_run r = {0, false};

	CU_ASSERT_EQUAL_FATAL(vt_create_table(db), SQLITE_OK);
	vfs_fault_stats_reset();
	if (crash_k > 0)
		vfs_fault_crash_after(VFS_FAULT_MUTATION, crash_k);
	for (int i = 1; i <= VT_TXNS && !r.failed; i++) {
		if (vt_insert_txn(db, i) == SQLITE_OK)
			r.acked++;
		else
			r.failed = true;
	}
	*out = db;
	return r;
}

static uint64_t vt_mutations(const vfs_fault_stats *st)
{
	return st->writes + st->syncs + st->truncates + st->deletes;
}

/* Crashes after each mutation of the workload in turn; the reopened database must pass the
 * integrity check and hold exactly the acknowledged transactions, or one more (the one whose
 * commit was durable but failed later, e.g. deleting the journal). */
static uint64_t vt_crash_points(const char *journal, vfs_fault_crash_mode mode, uint64_t seed)
{
	vfs_fault_stats st;
	vt_ctx c;
	sqlite3 *db;
	uint64_t total, torn = 0;

	vt_setup(&c, seed, "a.db");
	vt_workload(c.path, journal, 0, &db);
	vfs_fault_stats_get(&st);
	total = vt_mutations(&st);
	sqlite3_close(db);
	vt_teardown(&c);
	CU_ASSERT(total > VT_TXNS);
	for (uint64_t k = 1; k <= total; k++) {
		vt_setup(&c, seed * 1000003 + k, "a.db");
		vt_run r = vt_workload(c.path, journal, k, &db);
		vt_crash(db, mode);
		vfs_fault_stats_get(&st);
		torn += st.torn;
		db = vt_open_mode(c.path, journal);
		int j = vt_committed_prefix(db);
		bool ok = vt_integrity_ok(db) && j >= r.acked && j <= r.acked + (r.failed ? 1 : 0);
		if (!ok)
			printf("\nvfs_fault: %s mode %d seed %" PRIu64
			       " crash after mutation %" PRIu64 ": acked %d, found %d\n",
			       journal, (int)mode, c.seed, k, r.acked, j);
		CU_ASSERT(ok);
		sqlite3_close(db);
		vt_teardown(&c);
	}
	return torn;
}

static void test_crash_points_drop(void)
{
	vt_crash_points("WAL", VFS_FAULT_CRASH_DROP, 1);
	vt_crash_points("DELETE", VFS_FAULT_CRASH_DROP, 1);
}

static void test_crash_points_torn(void)
{
	uint64_t torn = 0;

	for (uint64_t seed = 1; seed <= 2; seed++) {
		torn += vt_crash_points("WAL", VFS_FAULT_CRASH_TEAR, seed);
		torn += vt_crash_points("DELETE", VFS_FAULT_CRASH_TEAR, seed);
	}
	CU_ASSERT(torn > 0);
}

static void test_crash_points_scramble(void)
{
	for (uint64_t seed = 1; seed <= 2; seed++) {
		vt_crash_points("WAL", VFS_FAULT_CRASH_SCRAMBLE, seed);
		vt_crash_points("DELETE", VFS_FAULT_CRASH_SCRAMBLE, seed);
	}
}

/* ---- injected errors ---- */

/* A database with the table and VT_TXNS synced transactions, open in WAL mode. */
static sqlite3 *vt_populated(vt_ctx *c, uint64_t seed)
{
	sqlite3 *db;

	vt_setup(c, seed, "a.db");
	db = vt_open_mode(c->path, "WAL");
	CU_ASSERT_EQUAL_FATAL(vt_create_table(db), SQLITE_OK);
	for (int i = 1; i <= VT_TXNS; i++)
		CU_ASSERT_EQUAL_FATAL(vt_insert_txn(db, i), SQLITE_OK);
	return db;
}

/* The transaction after the populated ones fails with want, the database keeps the earlier
 * ones, and the same transaction then succeeds. */
static void vt_fail_once(int mask, int rc, int want)
{
	vt_ctx c;
	sqlite3 *db = vt_populated(&c, 3);

	vfs_fault_fail_after(mask, 1, rc);
	CU_ASSERT_EQUAL(vt_insert_txn(db, VT_TXNS + 1), want);
	CU_ASSERT_EQUAL(sqlite3_extended_errcode(db), want);
	CU_ASSERT_EQUAL(vt_committed_prefix(db), VT_TXNS);
	CU_ASSERT_EQUAL(vt_insert_txn(db, VT_TXNS + 1), SQLITE_OK);
	CU_ASSERT_EQUAL(vt_committed_prefix(db), VT_TXNS + 1);
	CU_ASSERT(vt_integrity_ok(db));
	sqlite3_close(db);
	vt_teardown(&c);
}

static void test_fail_write(void)
{
	vt_fail_once(VFS_FAULT_WRITE, SQLITE_IOERR_WRITE, SQLITE_IOERR_WRITE);
	vt_fail_once(VFS_FAULT_WRITE, SQLITE_FULL, SQLITE_FULL);
}

static void test_fail_sync(void)
{
	vt_fail_once(VFS_FAULT_SYNC, SQLITE_IOERR_FSYNC, SQLITE_IOERR_FSYNC);
}

static void test_fail_read(void)
{
	vt_ctx c;
	sqlite3 *db = vt_populated(&c, 4);

	sqlite3_close(db);
	db = vt_open(c.path);
	CU_ASSERT_FATAL(db != NULL);
	vfs_fault_fail_after(VFS_FAULT_READ, 1, SQLITE_IOERR_READ);
	CU_ASSERT_EQUAL(vt_exec(db, "SELECT count(*) FROM t"), SQLITE_IOERR_READ);
	CU_ASSERT_EQUAL(vt_committed_prefix(db), VT_TXNS);
	sqlite3_close(db);
	vt_teardown(&c);
}

/* fail_after counts from the call: with n = (writes of one transaction) + 1, the first
 * transaction commits and the second fails. */
static void test_fail_nth(void)
{
	vfs_fault_stats st;
	vt_ctx c;
	sqlite3 *db = vt_populated(&c, 5);

	vfs_fault_stats_reset();
	CU_ASSERT_EQUAL(vt_insert_txn(db, VT_TXNS + 1), SQLITE_OK);
	vfs_fault_stats_get(&st);
	CU_ASSERT(st.writes >= 1);
	vfs_fault_fail_after(VFS_FAULT_WRITE, st.writes + 1, SQLITE_IOERR_WRITE);
	CU_ASSERT_EQUAL(vt_insert_txn(db, VT_TXNS + 2), SQLITE_OK);
	CU_ASSERT_EQUAL(vt_insert_txn(db, VT_TXNS + 3), SQLITE_IOERR_WRITE);
	CU_ASSERT_EQUAL(vt_insert_txn(db, VT_TXNS + 3), SQLITE_OK);
	vfs_fault_stats_get(&st);
	CU_ASSERT_EQUAL(st.faults, 1);
	sqlite3_close(db);
	vt_teardown(&c);
}

/* A full disk stays full until cleared. */
static void test_fail_sticky(void)
{
	vt_ctx c;
	sqlite3 *db = vt_populated(&c, 6);

	vfs_fault_fail_from(VFS_FAULT_WRITE, 1, SQLITE_FULL);
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(vt_insert_txn(db, VT_TXNS + 1), SQLITE_FULL);
	vfs_fault_clear();
	CU_ASSERT_EQUAL(vt_insert_txn(db, VT_TXNS + 1), SQLITE_OK);
	CU_ASSERT_EQUAL(vt_committed_prefix(db), VT_TXNS + 1);
	sqlite3_close(db);
	vt_teardown(&c);
}

/* After crash_after(SYNC, 1) the commit that synced succeeds, then every write and every open
 * fails until the crash; what was synced survives it. */
static void test_down_disk(void)
{
	vt_ctx c;
	sqlite3 *db = vt_populated(&c, 7), *other = NULL;
	char path2[400];

	vfs_fault_crash_after(VFS_FAULT_SYNC, 1);
	CU_ASSERT_EQUAL(vt_insert_txn(db, VT_TXNS + 1), SQLITE_OK);
	CU_ASSERT(vfs_fault_is_down());
	CU_ASSERT_EQUAL(vt_insert_txn(db, VT_TXNS + 2) & 0xff, SQLITE_IOERR);
	snprintf(path2, sizeof(path2), "%s/b.db", c.dir);
	CU_ASSERT_EQUAL(sqlite3_open_v2(path2, &other, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
	                                VFS_FAULT_NAME) &
	                    0xff,
	                SQLITE_CANTOPEN);
	sqlite3_close(other);
	CU_ASSERT_EQUAL(vfs_fault_crash(VFS_FAULT_CRASH_DROP), SQLITE_MISUSE);
	vt_crash(db, VFS_FAULT_CRASH_DROP);
	CU_ASSERT(!vfs_fault_is_down());
	db = vt_open_mode(c.path, "WAL");
	CU_ASSERT_EQUAL(vt_committed_prefix(db), VT_TXNS + 1);
	sqlite3_close(db);
	vt_teardown(&c);
}

/* ---- counters ---- */

static void test_counters(void)
{
	vfs_fault_stats st;
	vt_ctx c;
	sqlite3 *db = vt_populated(&c, 8);

	vfs_fault_stats_reset();
	for (int i = 1; i <= 10; i++)
		CU_ASSERT_EQUAL(vt_insert_txn(db, VT_TXNS + i), SQLITE_OK);
	vfs_fault_stats_get(&st);
	CU_ASSERT_EQUAL(st.syncs, 10);
	CU_ASSERT(st.writes >= 10);
	CU_ASSERT(st.bytes_written >= 10 * VT_ROWS * VT_PAYLOAD);
	CU_ASSERT_EQUAL(st.faults, 0);
	sqlite3_close(db);
	vfs_fault_stats_reset();
	db = vt_open(c.path);
	CU_ASSERT_EQUAL(vt_committed_prefix(db), VT_TXNS + 10);
	vfs_fault_stats_get(&st);
	CU_ASSERT(st.reads > 0);
	CU_ASSERT(st.opens >= 2);
	CU_ASSERT_EQUAL(st.writes, 0);
	sqlite3_close(db);
	vt_teardown(&c);
}

/* ---- files renamed outside SQLite ---- */

/* A database built as a.tmp and renamed to a.db keeps its durable image under the new name;
 * a.tmp does not come back. */
static void test_rename_followed(void)
{
	vt_ctx c;
	sqlite3 *db;
	char tmp[400];

	vt_setup(&c, 9, "a.db");
	snprintf(tmp, sizeof(tmp), "%s/a.tmp", c.dir);
	db = vt_open_mode(tmp, "DELETE");
	CU_ASSERT_EQUAL(vt_create_table(db), SQLITE_OK);
	CU_ASSERT_EQUAL(vt_insert_txn(db, 1), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_close(db), SQLITE_OK);
	CU_ASSERT_EQUAL_FATAL(rename(tmp, c.path), 0);
	CU_ASSERT_EQUAL(vfs_fault_crash(VFS_FAULT_CRASH_DROP), SQLITE_OK);
	CU_ASSERT(!vt_exists(tmp, NULL));

	db = vt_open_mode(c.path, "WAL");
	CU_ASSERT_EQUAL(vt_committed_prefix(db), 1);
	CU_ASSERT_EQUAL(vt_insert_txn(db, 2), SQLITE_OK);
	CU_ASSERT_EQUAL(vt_exec(db, "PRAGMA synchronous=OFF"), SQLITE_OK);
	CU_ASSERT_EQUAL(vt_insert_txn(db, 3), SQLITE_OK);
	vt_crash(db, VFS_FAULT_CRASH_DROP);
	CU_ASSERT(!vt_exists(tmp, NULL));
	db = vt_open_mode(c.path, "WAL");
	CU_ASSERT(vt_integrity_ok(db));
	CU_ASSERT_EQUAL(vt_committed_prefix(db), 2);
	sqlite3_close(db);
	vt_teardown(&c);
}

/* An unsynced change to a file that is then renamed is still reverted at the crash. */
static void test_rename_keeps_volatility(void)
{
	vt_ctx c;
	sqlite3 *db;
	char tmp[400];

	vt_setup(&c, 10, "a.db");
	snprintf(tmp, sizeof(tmp), "%s/a.tmp", c.dir);
	db = vt_open_mode(tmp, "DELETE");
	CU_ASSERT_EQUAL(vt_create_table(db), SQLITE_OK);
	CU_ASSERT_EQUAL(vt_insert_txn(db, 1), SQLITE_OK);
	CU_ASSERT_EQUAL(vt_exec(db, "PRAGMA synchronous=OFF"), SQLITE_OK);
	CU_ASSERT_EQUAL(vt_insert_txn(db, 2), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_close(db), SQLITE_OK);
	CU_ASSERT_EQUAL_FATAL(rename(tmp, c.path), 0);
	db = vt_open_mode(c.path, "DELETE");
	CU_ASSERT_EQUAL(vt_committed_prefix(db), 2);
	vt_crash(db, VFS_FAULT_CRASH_DROP);
	db = vt_open_mode(c.path, "DELETE");
	CU_ASSERT(vt_integrity_ok(db));
	CU_ASSERT_EQUAL(vt_committed_prefix(db), 1);
	sqlite3_close(db);
	vt_teardown(&c);
}

/* ---- threads ---- */

typedef struct vt_thread {
	pthread_t tid;
	const char *path;
	int txns;
	int failures;
} vt_thread;

static void *vt_writer(void *arg)
{
	vt_thread *t = arg;
	sqlite3 *db = vt_open(t->path);

	if (db == NULL || vt_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL") != 0 ||
	    vt_create_table(db) != SQLITE_OK)
		t->failures++;
	for (int i = 1; i <= t->txns && t->failures == 0; i++)
		t->failures += vt_insert_txn(db, i) != SQLITE_OK;
	sqlite3_close(db);
	return NULL;
}

/* Two writers on their own databases in parallel: every sync is counted, and a crash keeps
 * both databases whole. */
static void test_threads(void)
{
	vt_thread t[2];
	char paths[2][400];
	vfs_fault_stats st;
	vt_ctx c;

	vt_setup(&c, 11, "a.db");
	for (int i = 0; i < 2; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/t%d.db", c.dir, i);
		t[i] = (vt_thread){.path = paths[i], .txns = 30};
		CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i].tid, NULL, vt_writer, &t[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i].tid, NULL);
		CU_ASSERT_EQUAL(t[i].failures, 0);
	}
	vfs_fault_stats_get(&st);
	CU_ASSERT(st.syncs >= 2 * 30);
	CU_ASSERT_EQUAL(vfs_fault_crash(VFS_FAULT_CRASH_TEAR), SQLITE_OK);
	for (int i = 0; i < 2; i++) {
		sqlite3 *db = vt_open(paths[i]);
		CU_ASSERT(db != NULL && vt_integrity_ok(db));
		CU_ASSERT_EQUAL(vt_committed_prefix(db), 30);
		sqlite3_close(db);
	}
	vt_teardown(&c);
}

/* ---- registration ---- */

static int vt_suite_init(void)
{
	if (vfs_fault_register(NULL) != SQLITE_OK)
		return -1;
	vfs_fault_set_host_sync(false);
	return 0;
}

static int vt_suite_clean(void)
{
	vfs_fault_set_host_sync(true);
	vfs_fault_unregister();
	return 0;
}

void test_register_vfs_fault(void)
{
	CU_pSuite s = CU_add_suite("vfs_fault", vt_suite_init, vt_suite_clean);

	CU_add_test(s, "unsynced overwrite, truncate and append revert", test_raw_revert);
	CU_add_test(s, "a torn write keeps whole leading sectors", test_raw_tear);
	CU_add_test(s, "scrambled sectors are old or new", test_raw_scramble);
	CU_add_test(s, "xDelete is durable", test_raw_delete);
	CU_add_test(s, "synced rows survive a crash", test_synced_rows_survive);
	CU_add_test(s, "unsynced rows vanish", test_unsynced_rows_vanish);
	CU_add_test(s, "an unsynced new file vanishes or is empty", test_unsynced_new_file);
	CU_add_test(s, "crash after each mutation (drop)", test_crash_points_drop);
	CU_add_test(s, "crash after each mutation (torn write)", test_crash_points_torn);
	CU_add_test(s, "crash after each mutation (scrambled sectors)", test_crash_points_scramble);
	CU_add_test(s, "n-th write fails with IOERR_WRITE or FULL", test_fail_write);
	CU_add_test(s, "n-th sync fails", test_fail_sync);
	CU_add_test(s, "n-th read fails", test_fail_read);
	CU_add_test(s, "fail_after counts from the call", test_fail_nth);
	CU_add_test(s, "fail_from keeps failing until cleared", test_fail_sticky);
	CU_add_test(s, "a down disk refuses writes and opens", test_down_disk);
	CU_add_test(s, "counters", test_counters);
	CU_add_test(s, "renamed file keeps its durable image", test_rename_followed);
	CU_add_test(s, "renamed file keeps its unsynced changes volatile",
	            test_rename_keeps_volatility);
	CU_add_test(s, "threads", test_threads);
}
