/* store.c - opens, creates and validates a node's database; pragmas, transactions, fail-stop. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store_internal.h"

#define STORE_DEFAULT_CACHE_KIB (16 * 1024)
#define STORE_DEFAULT_WAL_LIMIT 4096
#define STORE_PAGE_SIZE         4096 /* set at creation: PRAGMA page_size=4096 */
#define STORE_BUSY_TIMEOUT_MS   5000
#define HEADER_SIZE             100 /* the database header (fileformat2 §1.3) */
#define HEADER_MAGIC            "SQLite format 3"

/* store.c's state for the node's connection. Statements are owned; they are finalized before
 * the connection closes. */
struct store_conn {
	sqlite3_stmt *begin;    /* BEGIN IMMEDIATE: we are the only writer, so it never waits */
	sqlite3_stmt *commit;   /* COMMIT */
	sqlite3_stmt *rollback; /* ROLLBACK */
	bool lowered;           /* the open transaction runs at synchronous=NORMAL (no fsync) */
	int wal_frames;         /* frames in the WAL after the last commit (from the WAL hook) */
};

/* ---- errors ---- */

const char *store_strerror(int rv)
{
	switch (rv) {
	case STORE_ERR_NOT_OURS:
		return "not a RaftKV database";
	case STORE_ERR_VERSION:
		return "unsupported schema version";
	case STORE_ERR_WRONG_NODE:
		return "database belongs to another cluster or node";
	case STORE_ERR_FULL:
		return "disk full";
	case STORE_ERR_FAILED:
		return "store fail-stopped after an earlier error";
	case STORE_ERR_NOT_FOUND:
		return "not found";
	case STORE_ERR_CORRUPT:
		return "database or snapshot file is corrupt";
	default:
		return raft_strerror(rv);
	}
}

static bool error_is_benign(int rv)
{
	return rv == STORE_ERR_INVALID || rv == STORE_ERR_NOT_FOUND || rv == RAFT_ERR_COMPACTED;
}

/* s may be NULL (nothing is recorded then). */
int store_error(store *s, int rv, const char *fmt, ...)
{
	va_list ap;

	if (s == NULL)
		return rv;
	va_start(ap, fmt);
	vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
	va_end(ap);
	if (!error_is_benign(rv) && s->failed == STORE_OK)
		s->failed = rv;
	return rv;
}

static int sqlite_code_map(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_FULL:
		return STORE_ERR_FULL;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return STORE_ERR_CORRUPT;
	case SQLITE_NOMEM:
		return STORE_ERR_NOMEM;
	default:
		return STORE_ERR_IO;
	}
}

/* Records rc from a call on db (borrowed; may be other than s->db) and fail-stops s. */
static int conn_error(store *s, sqlite3 *db, int rc, const char *what)
{
	const char *detail = db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc);

	return store_error(s, sqlite_code_map(rc), "%.80s: %s (sqlite %d)", what, detail, rc);
}

int store_sqlite_error(store *s, int rc, const char *what)
{
	return conn_error(s, s != NULL ? s->db : NULL, rc, what);
}

const char *store_errmsg(store *s)
{
	return s == NULL ? "" : s->errmsg;
}

int store_failed(store *s)
{
	return s == NULL ? STORE_ERR_INVALID : s->failed;
}

void store_options_init(store_options *o)
{
	if (o == NULL)
		return;
	memset(o, 0, sizeof(*o));
	o->sync = STORE_SYNC_FULL;
}

/* ---- transactions ---- */

/* Runs a statement that returns no rows and resets it. */
static int stmt_run(store *s, sqlite3_stmt *stmt, const char *what)
{
	int rc = sqlite3_step(stmt);

	sqlite3_reset(stmt);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return store_sqlite_error(s, rc, what);
	return STORE_OK;
}

/* sql: a constant pragma. Pragmas act when prepared, so they are never kept prepared. */
static int conn_exec(store *s, sqlite3 *db, const char *sql)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	if (rc != SQLITE_OK)
		return conn_error(s, db, rc, sql);
	return STORE_OK;
}

int store_begin(store *s, bool sync)
{
	int rv;

	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	/* Under FULL a commit that need not be durable drops to NORMAL for this one transaction:
	 * in WAL mode that skips the commit's fsync while keeping WAL order, so the next synced
	 * commit makes it durable too. NORMAL and OFF never fsync at commit anyway. */
	if (!sync && s->opt.sync == STORE_SYNC_FULL) {
		rv = conn_exec(s, s->db, "PRAGMA synchronous=NORMAL");
		if (rv != STORE_OK)
			return rv;
		s->conn->lowered = true;
	}
	rv = stmt_run(s, s->conn->begin, "BEGIN");
	if (rv != STORE_OK)
		store_rollback(s);
	return rv;
}

/* Restores the configured synchronous level after a transaction that lowered it. */
static int conn_restore_sync(store *s)
{
	if (!s->conn->lowered)
		return STORE_OK;
	s->conn->lowered = false;
	return conn_exec(s, s->db, "PRAGMA synchronous=FULL");
}

int store_commit(store *s)
{
	int rv;

	if (s->failed != STORE_OK) {
		store_rollback(s);
		return STORE_ERR_FAILED;
	}
	rv = stmt_run(s, s->conn->commit, "COMMIT");
	if (rv != STORE_OK) {
		store_rollback(s);
		return rv;
	}
	return conn_restore_sync(s);
}

void store_rollback(store *s)
{
	if (s == NULL || s->db == NULL || s->conn == NULL)
		return;
	if (!sqlite3_get_autocommit(s->db)) {
		sqlite3_step(s->conn->rollback);
		sqlite3_reset(s->conn->rollback);
	}
	if (s->conn->lowered) {
		s->conn->lowered = false;
		if (sqlite3_exec(s->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK &&
		    s->failed == STORE_OK)
			s->failed = STORE_ERR_IO;
	}
}

/* *stmt: owned by the caller (sqlite3_finalize). Kept statements are marked persistent. */
int store_prepare(store *s, const char *sql, sqlite3_stmt **stmt)
{
	int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL);

	if (rc != SQLITE_OK) {
		*stmt = NULL;
		return store_sqlite_error(s, rc, sql);
	}
	return STORE_OK;
}

/* ---- conf state encoding ---- */

/* Returns the encoded size, 1 + 8 * n_voters; writes buf only when cap is large enough.
 * 0 for a conf state with more than RAFT_MAX_VOTERS ids. */
size_t store_conf_encode(const raft_conf_state *cs, unsigned char *buf, size_t cap)
{
	size_t need;

	if (cs == NULL || cs->n_voters > RAFT_MAX_VOTERS)
		return 0;
	need = 1 + 8 * cs->n_voters;
	if (buf == NULL || cap < need)
		return need;
	buf[0] = (unsigned char)cs->n_voters;
	for (size_t k = 0; k < cs->n_voters; k++)
		for (int b = 0; b < 8; b++)
			buf[1 + 8 * k + (size_t)b] = (unsigned char)(cs->voters[k] >> (8 * b));
	return need;
}

/* STORE_ERR_CORRUPT unless len is exactly 1 + 8 * count with count <= RAFT_MAX_VOTERS. */
int store_conf_decode(const void *buf, size_t len, raft_conf_state *cs)
{
	const unsigned char *p = buf;
	size_t n;

	memset(cs, 0, sizeof(*cs));
	if (p == NULL || len < 1)
		return STORE_ERR_CORRUPT;
	n = p[0];
	if (n > RAFT_MAX_VOTERS || len != 1 + 8 * n)
		return STORE_ERR_CORRUPT;
	for (size_t k = 0; k < n; k++) {
		uint64_t v = 0;

		for (int b = 7; b >= 0; b--)
			v = (v << 8) | p[1 + 8 * k + (size_t)b];
		cs->voters[k] = v;
	}
	cs->n_voters = n;
	return STORE_OK;
}

/* Ids must be non-zero and strictly increasing, as raft requires of a snapshot's. */
static bool conf_valid(const raft_conf_state *cs)
{
	if (cs->n_voters > RAFT_MAX_VOTERS)
		return false;
	for (size_t k = 0; k < cs->n_voters; k++)
		if (cs->voters[k] == 0 || (k > 0 && cs->voters[k] <= cs->voters[k - 1]))
			return false;
	return true;
}

/* Writes the encoded conf state (borrowed) in its own synced transaction. */
static int conf_save(store *s, const unsigned char *buf, size_t len)
{
	sqlite3_stmt *stmt = NULL;
	int rv = store_prepare(s, "UPDATE apply_state SET conf_state = ?1 WHERE id = 1", &stmt);

	if (rv == STORE_OK)
		rv = store_begin(s, true);
	if (rv == STORE_OK) {
		sqlite3_bind_blob(stmt, 1, buf, (int)len, SQLITE_STATIC);
		rv = stmt_run(s, stmt, "save conf state");
	}
	if (rv == STORE_OK)
		rv = store_commit(s);
	if (rv != STORE_OK)
		store_rollback(s);
	sqlite3_finalize(stmt);
	return rv;
}

/* cs: borrowed. The cache follows only once the commit succeeded. */
int store_set_conf_state(store *s, const raft_conf_state *cs)
{
	unsigned char buf[1 + 8 * RAFT_MAX_VOTERS];
	raft_conf_state copy;
	int rv;

	if (s == NULL)
		return STORE_ERR_INVALID;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	if (cs == NULL || !conf_valid(cs))
		return store_error(s, STORE_ERR_INVALID,
		                   "conf state: at most %d ids, non-zero, strictly increasing",
		                   RAFT_MAX_VOTERS);
	rv = conf_save(s, buf, store_conf_encode(cs, buf, sizeof(buf)));
	if (rv != STORE_OK)
		return rv;
	memset(&copy, 0, sizeof(copy));
	copy.n_voters = cs->n_voters;
	memcpy(copy.voters, cs->voters, cs->n_voters * sizeof(cs->voters[0]));
	s->conf_state = copy;
	return STORE_OK;
}

/* ---- files ---- */

/* Returns a malloc'd a + b, or NULL. */
static char *str_cat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *r = malloc(la + lb + 1);

	if (r == NULL)
		return NULL;
	memcpy(r, a, la);
	memcpy(r + la, b, lb + 1);
	return r;
}

/* Removes base + suffix; a missing file is fine. */
static int file_remove(store *s, const char *base, const char *suffix)
{
	char *p = str_cat(base, suffix);
	int rv = STORE_OK;

	if (p == NULL)
		return store_error(s, STORE_ERR_NOMEM, "out of memory");
	if (unlink(p) != 0 && errno != ENOENT)
		rv = store_error(s, STORE_ERR_IO, "unlink %s: %s", p, strerror(errno));
	free(p);
	return rv;
}

/* path names a file (dir = 0) or a directory (dir = 1) to fsync. */
static int file_fsync(store *s, const char *path, int dir)
{
	int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
	int rv = STORE_OK;

	if (fd < 0)
		return store_error(s, STORE_ERR_IO, "open %s: %s", path, strerror(errno));
	if (fsync(fd) != 0)
		rv = store_error(s, STORE_ERR_IO, "fsync %s: %s", path, strerror(errno));
	close(fd);
	return rv;
}

/* Fsyncs the directory holding path, so a rename in it is durable. */
static int dir_fsync(store *s, const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int rv;

	if (slash == NULL)
		return file_fsync(s, ".", 1);
	if (slash == path)
		return file_fsync(s, "/", 1);
	dir = strndup(path, (size_t)(slash - path));
	if (dir == NULL)
		return store_error(s, STORE_ERR_NOMEM, "out of memory");
	rv = file_fsync(s, dir, 1);
	free(dir);
	return rv;
}

/* ---- connections ---- */

/* Opens path on the configured VFS. On STORE_OK *db is owned by the caller. The connection is
 * used by one thread at a time, so SQLite's per-connection mutex is off. */
static int conn_open(store *s, const char *path, int flags, sqlite3 **db)
{
	int rc = sqlite3_open_v2(path, db, flags | SQLITE_OPEN_NOMUTEX, s->opt.vfs);

	if (rc != SQLITE_OK) {
		conn_error(s, *db, rc, "open");
		sqlite3_close(*db);
		*db = NULL;
		return sqlite_code_map(rc);
	}
	sqlite3_extended_result_codes(*db, 1);
	return STORE_OK;
}

/* Runs a one-row pragma and copies its text result into out (NUL-terminated). */
static int conn_pragma_text(store *s, sqlite3 *db, const char *sql, char *out, size_t cap)
{
	sqlite3_stmt *stmt = NULL;
	const char *text;
	int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	if (rc != SQLITE_ROW) {
		int rv = conn_error(s, db, rc, sql);

		sqlite3_finalize(stmt);
		return rv;
	}
	text = (const char *)sqlite3_column_text(stmt, 0);
	snprintf(out, cap, "%s", text != NULL ? text : "");
	sqlite3_finalize(stmt);
	return STORE_OK;
}

static int conn_wal_mode(store *s, sqlite3 *db)
{
	char mode[16];
	int rv = conn_pragma_text(s, db, "PRAGMA journal_mode=WAL", mode, sizeof(mode));

	if (rv == STORE_OK && strcmp(mode, "wal") != 0)
		rv = store_error(s, STORE_ERR_IO, "journal_mode=WAL refused (mode is %s)", mode);
	return rv;
}

/* ---- creation ---- */

static int create_schema(store *s, sqlite3 *db)
{
	sqlite3_stmt *stmt = NULL;
	char sql[96];
	int rv, rc;

	rv = conn_exec(s, db, "BEGIN IMMEDIATE;" STORE_SCHEMA_SQL);
	if (rv != STORE_OK)
		return rv;
	rc = sqlite3_prepare_v2(db, "INSERT INTO meta VALUES ('cluster_id', ?1), ('node_id', ?2)",
	                        -1, &stmt, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(stmt, 1, (sqlite3_int64)s->opt.cluster_id);
		sqlite3_bind_int64(stmt, 2, (sqlite3_int64)s->opt.node_id);
		rc = sqlite3_step(stmt);
	}
	sqlite3_finalize(stmt);
	if (rc != SQLITE_DONE)
		return conn_error(s, db, rc, "insert meta");
	snprintf(sql, sizeof(sql), "PRAGMA application_id=%d; PRAGMA user_version=%d; COMMIT",
	         STORE_APPLICATION_ID, STORE_SCHEMA_VERSION);
	return conn_exec(s, db, sql);
}

/* Fsyncs tmp after making sure nothing of it is left in a WAL, which the rename would leave
 * behind. */
static int create_check_no_wal(store *s, const char *tmp)
{
	char *wal = str_cat(tmp, "-wal");
	struct stat st;
	bool pending;

	if (wal == NULL)
		return store_error(s, STORE_ERR_NOMEM, "out of memory");
	pending = stat(wal, &st) == 0 && st.st_size > 0;
	free(wal);
	if (pending)
		return store_error(s, STORE_ERR_IO, "%s: WAL not checkpointed", tmp);
	return file_fsync(s, tmp, 0);
}

/* Builds the complete database in tmp: after this returns STORE_OK, tmp holds everything and
 * no WAL is needed to read it. */
static int create_tmp(store *s, const char *tmp)
{
	sqlite3 *db = NULL;
	int rv;

	rv = conn_open(s, tmp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &db);
	if (rv != STORE_OK)
		return rv;
	rv = conn_exec(s, db, "PRAGMA page_size=4096");
	if (rv == STORE_OK)
		rv = conn_wal_mode(s, db);
	if (rv == STORE_OK)
		rv = conn_exec(s, db, "PRAGMA synchronous=FULL");
	if (rv == STORE_OK)
		rv = create_schema(s, db);
	if (rv == STORE_OK)
		rv = conn_exec(s, db, "PRAGMA wal_checkpoint(TRUNCATE)");
	if (rv != STORE_OK) {
		sqlite3_close(db);
		return rv;
	}
	/* The last close checkpoints the WAL (fsynced, synchronous=FULL) and deletes it. */
	if (sqlite3_close(db) != SQLITE_OK)
		return store_error(s, STORE_ERR_IO, "close %s", tmp);
	return create_check_no_wal(s, tmp);
}

static void create_cleanup(store *s, const char *tmp)
{
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
	char saved[sizeof(s->errmsg)];
	int failed = s->failed;

	memcpy(saved, s->errmsg, sizeof(saved));
	for (size_t k = 0; k < sizeof(suffixes) / sizeof(suffixes[0]); k++)
		file_remove(s, tmp, suffixes[k]);
	memcpy(s->errmsg, saved, sizeof(saved));
	s->failed = failed;
}

/* Creates s->path as path.tmp, then renames it into place, so a crash at any point leaves
 * either no file or a complete one. A stale WAL or shm of an earlier file at path would be
 * replayed onto the new database, so it goes first. */
static int store_create(store *s)
{
	char *tmp = str_cat(s->path, ".tmp");
	int rv;

	if (tmp == NULL)
		return store_error(s, STORE_ERR_NOMEM, "out of memory");
	create_cleanup(s, tmp);
	rv = create_tmp(s, tmp);
	if (rv == STORE_OK)
		rv = file_remove(s, s->path, "-wal");
	if (rv == STORE_OK)
		rv = file_remove(s, s->path, "-shm");
	if (rv == STORE_OK && rename(tmp, s->path) != 0)
		rv = store_error(s, STORE_ERR_IO, "rename %s: %s", tmp, strerror(errno));
	if (rv == STORE_OK)
		rv = dir_fsync(s, s->path);
	if (rv != STORE_OK)
		create_cleanup(s, tmp);
	free(tmp);
	return rv;
}

/* ---- validation of an existing file (read-only connection) ---- */

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* True when path-wal exists with content. The VFS's xAccess(EXISTS) reports an empty file as
 * absent, which is what matters here. */
static bool wal_has_frames(store *s)
{
	sqlite3_vfs *vfs = sqlite3_vfs_find(s->opt.vfs);
	char *wal = str_cat(s->path, "-wal");
	int res = 1;

	if (vfs != NULL && wal != NULL && vfs->xAccess(vfs, wal, SQLITE_ACCESS_EXISTS, &res) != 0)
		res = 1;
	free(wal);
	return res != 0;
}

/* Reads the file's size and its first HEADER_SIZE bytes (zero-filled past the end) through
 * the VFS of the read-only connection db (borrowed). */
static int header_read(store *s, sqlite3 *db, unsigned char *h, sqlite3_int64 *size)
{
	sqlite3_file *f = NULL;

	memset(h, 0, HEADER_SIZE);
	if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK ||
	    f == NULL || f->pMethods == NULL)
		return store_error(s, STORE_ERR_IO, "%s: cannot read the file", s->path);
	if (f->pMethods->xFileSize(f, size) != SQLITE_OK)
		return store_error(s, STORE_ERR_IO, "%s: cannot size the file", s->path);
	if ((f->pMethods->xRead(f, h, HEADER_SIZE, 0) & 0xff) != SQLITE_OK && *size >= HEADER_SIZE)
		return store_error(s, STORE_ERR_IO, "%s: cannot read the header", s->path);
	return STORE_OK;
}

/* Is it a SQLite file, RaftKV's, of this schema version? application_id and user_version are
 * set at creation and checkpointed before the rename, so the main file's header holds them. */
static int header_check_identity(store *s, const unsigned char *h, sqlite3_int64 size)
{
	uint32_t app = be32(h + 68), version = be32(h + 60);

	if (size == 0)
		return store_error(s, STORE_ERR_NOT_OURS, "%s: empty file", s->path);
	if (memcmp(h, HEADER_MAGIC, sizeof(HEADER_MAGIC)) != 0)
		return store_error(s, STORE_ERR_NOT_OURS, "%s: not a SQLite database", s->path);
	if (size < HEADER_SIZE)
		return store_error(s, STORE_ERR_CORRUPT, "%s: truncated header (%lld bytes)",
		                   s->path, (long long)size);
	if (app != STORE_APPLICATION_ID)
		return store_error(s, STORE_ERR_NOT_OURS,
		                   "%s: application id 0x%08x is not RaftKV's (0x%08x)", s->path,
		                   app, STORE_APPLICATION_ID);
	if (version != STORE_SCHEMA_VERSION)
		return store_error(s, STORE_ERR_VERSION,
		                   "%s: schema version %u, this build reads version %d", s->path,
		                   version, STORE_SCHEMA_VERSION);
	return STORE_OK;
}

/* Does the file hold as many pages as its header says? The count is valid when its
 * version-valid-for matches the change counter. With WAL frames pending, a crash mid-checkpoint
 * may leave the file shorter than page 1 says and recovery finishes the job; otherwise a
 * shorter file lost its tail. */
static int header_check_size(store *s, const unsigned char *h, sqlite3_int64 size)
{
	uint32_t page_size = (uint32_t)h[16] << 8 | h[17];
	uint32_t pages = be32(h + 28);

	if (page_size == 1)
		page_size = 65536;
	if (page_size < 512 || (page_size & (page_size - 1)) != 0)
		return store_error(s, STORE_ERR_CORRUPT, "%s: bad page size %u", s->path,
		                   page_size);
	if (be32(h + 24) == be32(h + 92) && pages > 0 && (sqlite3_int64)pages * page_size > size &&
	    !wal_has_frames(s))
		return store_error(s, STORE_ERR_CORRUPT,
		                   "%s: truncated: %u pages of %u bytes, but %lld bytes on disk",
		                   s->path, pages, page_size, (long long)size);
	return STORE_OK;
}

/* Judges the header before any SQL runs, so a foreign or damaged file is refused without
 * SQLite opening (or creating) its WAL and shm. */
static int check_header(store *s, sqlite3 *db)
{
	unsigned char h[HEADER_SIZE];
	sqlite3_int64 size = 0;
	int rv = header_read(s, db, h, &size);

	if (rv == STORE_OK)
		rv = header_check_identity(s, h, size);
	if (rv == STORE_OK)
		rv = header_check_size(s, h, size);
	return rv;
}

/* PRAGMA quick_check: every page and b-tree is read, so this costs time in the file's size. */
static int check_quick(store *s, sqlite3 *db)
{
	char result[256], detail[sizeof(s->errmsg)];
	int rv = conn_pragma_text(s, db, "PRAGMA quick_check", result, sizeof(result));

	if (rv != STORE_OK) {
		memcpy(detail, s->errmsg, sizeof(detail));
		return store_error(s, rv, "%s: %s", s->path, detail);
	}
	if (strcmp(result, "ok") != 0)
		return store_error(s, STORE_ERR_CORRUPT, "%s: quick_check: %s", s->path, result);
	return STORE_OK;
}

/* Reads meta.key into *value. */
static int check_meta_value(store *s, sqlite3 *db, const char *key, uint64_t *value)
{
	sqlite3_stmt *stmt = NULL;
	int rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?1", -1, &stmt, NULL);
	int rv = STORE_OK;

	if (rc == SQLITE_OK) {
		sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
		rc = sqlite3_step(stmt);
	}
	if (rc == SQLITE_ROW)
		*value = (uint64_t)sqlite3_column_int64(stmt, 0);
	else if (rc == SQLITE_DONE)
		rv = store_error(s, STORE_ERR_CORRUPT, "%s: meta.%s is missing", s->path, key);
	else
		rv = store_error(
		    s, (rc & 0xff) == SQLITE_ERROR ? STORE_ERR_CORRUPT : sqlite_code_map(rc),
		    "%s: cannot read meta.%s: %s", s->path, key, sqlite3_errmsg(db));
	sqlite3_finalize(stmt);
	return rv;
}

static int check_meta(store *s, sqlite3 *db)
{
	uint64_t cluster = 0, node = 0;
	int rv = check_meta_value(s, db, "cluster_id", &cluster);

	if (rv == STORE_OK)
		rv = check_meta_value(s, db, "node_id", &node);
	if (rv != STORE_OK)
		return rv;
	if (cluster != s->opt.cluster_id || node != s->opt.node_id)
		return store_error(s, STORE_ERR_WRONG_NODE,
		                   "%s: belongs to cluster %016llx node %llu, not cluster %016llx "
		                   "node %llu",
		                   s->path, (unsigned long long)cluster, (unsigned long long)node,
		                   (unsigned long long)s->opt.cluster_id,
		                   (unsigned long long)s->opt.node_id);
	return STORE_OK;
}

/* Validates s->path on a read-only connection, so a file that is not ours is never written. */
static int store_check(store *s)
{
	sqlite3 *db = NULL;
	int rv = conn_open(s, s->path, SQLITE_OPEN_READONLY, &db);

	if (rv != STORE_OK)
		return rv;
	sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	rv = check_header(s, db);
	if (rv == STORE_OK)
		rv = check_quick(s, db);
	if (rv == STORE_OK)
		rv = check_meta(s, db);
	sqlite3_close(db);
	return rv;
}

/* ---- the node's read-write connection ---- */

static int conn_wal_hook(void *ctx, sqlite3 *db, const char *name, int frames)
{
	struct store_conn *c = ctx;

	(void)db;
	(void)name;
	c->wal_frames = frames;
	return SQLITE_OK;
}

static const char *sync_pragma(store_sync sync)
{
	switch (sync) {
	case STORE_SYNC_NORMAL:
		return "PRAGMA synchronous=NORMAL";
	case STORE_SYNC_OFF:
		return "PRAGMA synchronous=OFF";
	default:
		return "PRAGMA synchronous=FULL";
	}
}

/*
 * The pragmas of the node's connection, each chosen deliberately:
 *   locking_mode=NORMAL: EXCLUSIVE would lock out the snapshot dump's second connection.
 *   journal_mode=WAL: one append + fsync per commit; readers (the dump) never block us.
 *   synchronous per options (store.h says what NORMAL and OFF risk).
 *   secure_delete=OFF: Debian builds with SQLITE_SECURE_DELETE, which zeroes every deleted
 *     log row and kv value. That doubles the write bandwidth of log GC and buys nothing: the
 *     data is not secret from anyone who can read the file.
 *   cache_size: 16 MiB by default, enough for the hot log tail, the apply-state rows and the
 *     inner b-tree pages of the kv table; the OS page cache holds the rest.
 *   wal_autocheckpoint=0: store_maybe_checkpoint() checkpoints between Readies instead, so a
 *     checkpoint never lands inside a commit on the write path (the WAL hook tracks its size).
 *   journal_size_limit: a reset WAL is trimmed back to the checkpoint limit.
 */
static int conn_configure(store *s)
{
	char sql[96];
	int kib = s->opt.cache_size_kib > 0 ? s->opt.cache_size_kib : STORE_DEFAULT_CACHE_KIB;
	uint64_t limit = s->opt.wal_limit_pages ? s->opt.wal_limit_pages : STORE_DEFAULT_WAL_LIMIT;
	int rv;

	/* store_close() is a crash-stop on disk: no checkpoint at close; the WAL stays. */
	sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
	rv = conn_exec(s, s->db, "PRAGMA locking_mode=NORMAL");
	if (rv == STORE_OK)
		rv = conn_wal_mode(s, s->db);
	if (rv == STORE_OK)
		rv = conn_exec(s, s->db, sync_pragma(s->opt.sync));
	if (rv == STORE_OK)
		rv = conn_exec(s, s->db, "PRAGMA secure_delete=OFF");
	if (rv == STORE_OK) {
		snprintf(sql, sizeof(sql), "PRAGMA cache_size=-%d", kib);
		rv = conn_exec(s, s->db, sql);
	}
	if (rv == STORE_OK)
		rv = conn_exec(s, s->db, "PRAGMA wal_autocheckpoint=0");
	if (rv == STORE_OK) {
		snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit=%llu",
		         (unsigned long long)(limit * STORE_PAGE_SIZE));
		rv = conn_exec(s, s->db, sql);
	}
	if (rv != STORE_OK)
		return rv;
	sqlite3_wal_hook(s->db, conn_wal_hook, s->conn);
	return STORE_OK;
}

static int conn_prepare_txn(store *s)
{
	int rv = store_prepare(s, "BEGIN IMMEDIATE", &s->conn->begin);

	if (rv == STORE_OK)
		rv = store_prepare(s, "COMMIT", &s->conn->commit);
	if (rv == STORE_OK)
		rv = store_prepare(s, "ROLLBACK", &s->conn->rollback);
	return rv;
}

static int store_open_rw(store *s)
{
	int rv;

	s->conn = calloc(1, sizeof(*s->conn));
	if (s->conn == NULL)
		return store_error(s, STORE_ERR_NOMEM, "out of memory");
	rv = conn_open(s, s->path, SQLITE_OPEN_READWRITE, &s->db);
	if (rv == STORE_OK)
		rv = conn_configure(s);
	if (rv == STORE_OK)
		rv = conn_prepare_txn(s);
	return rv;
}

static void conn_close(store *s)
{
	if (s->conn != NULL) {
		sqlite3_finalize(s->conn->begin);
		sqlite3_finalize(s->conn->commit);
		sqlite3_finalize(s->conn->rollback);
	}
	if (s->db != NULL)
		sqlite3_close(s->db);
	s->db = NULL;
	free(s->conn);
	s->conn = NULL;
}

/* ---- open / close ---- */

static int store_alloc(const char *path, const store_options *opt, store **out)
{
	store *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (s == NULL)
		return STORE_ERR_NOMEM;
	s->opt = *opt;
	s->opt.vfs = NULL;
	s->path = strdup(path);
	if (opt->vfs != NULL)
		s->opt.vfs = strdup(opt->vfs);
	if (s->path == NULL || (opt->vfs != NULL && s->opt.vfs == NULL)) {
		free((char *)s->opt.vfs);
		free(s->path);
		free(s);
		return STORE_ERR_NOMEM;
	}
	*out = s;
	return STORE_OK;
}

static void store_free(store *s)
{
	conn_close(s);
	free((char *)s->opt.vfs);
	free(s->path);
	free(s);
}

/* Creates the file if absent, validates it, and opens the node's connection. */
static int store_open_file(store *s)
{
	struct stat st;
	int rv;

	if (stat(s->path, &st) != 0) {
		if (errno != ENOENT)
			return store_error(s, STORE_ERR_IO, "stat %s: %s", s->path,
			                   strerror(errno));
		rv = store_create(s);
		if (rv != STORE_OK)
			return rv;
	} else if (!S_ISREG(st.st_mode)) {
		return store_error(s, STORE_ERR_NOT_OURS, "%s: not a regular file", s->path);
	} else if (st.st_size == 0) {
		/* SQLite would happily turn an empty file into a database: refuse before it can. */
		return store_error(s, STORE_ERR_NOT_OURS, "%s: empty file", s->path);
	}
	rv = store_check(s);
	if (rv == STORE_OK)
		rv = store_open_rw(s);
	return rv;
}

/* Module initialisation in dependency order; *stage counts the modules that need closing. */
static int store_open_modules(store *s, int *stage)
{
	int rv = store_log_init(s);

	if (rv != STORE_OK)
		return rv;
	*stage = 1;
	rv = store_log_load(s);
	if (rv != STORE_OK)
		return rv;
	rv = store_kv_init(s);
	if (rv != STORE_OK)
		return rv;
	*stage = 2;
	rv = store_snap_init(s);
	if (rv != STORE_OK)
		return rv;
	*stage = 3;
	return STORE_OK;
}

static void store_close_modules(store *s, int stage)
{
	if (stage >= 3)
		store_snap_close(s);
	if (stage >= 2)
		store_kv_close(s);
	if (stage >= 1)
		store_log_close(s);
}

int store_open(const char *path, const store_options *opt, store **out, char *errmsg,
               size_t errmsg_len)
{
	store *s = NULL;
	int stage = 0;
	int rv;

	if (errmsg != NULL && errmsg_len > 0)
		errmsg[0] = '\0';
	if (out != NULL)
		*out = NULL;
	if (path == NULL || opt == NULL || out == NULL || opt->node_id == 0) {
		if (errmsg != NULL && errmsg_len > 0)
			snprintf(errmsg, errmsg_len, "store_open: bad argument");
		return STORE_ERR_INVALID;
	}
	rv = store_alloc(path, opt, &s);
	if (rv != STORE_OK) {
		if (errmsg != NULL && errmsg_len > 0)
			snprintf(errmsg, errmsg_len, "store_open: out of memory");
		return rv;
	}
	rv = store_open_file(s);
	if (rv == STORE_OK)
		rv = store_open_modules(s, &stage);
	if (rv != STORE_OK) {
		if (errmsg != NULL && errmsg_len > 0)
			snprintf(errmsg, errmsg_len, "%s",
			         s->errmsg[0] ? s->errmsg : store_strerror(rv));
		store_close_modules(s, stage);
		store_free(s);
		return rv;
	}
	*out = s;
	return STORE_OK;
}

void store_close(store *s)
{
	if (s == NULL)
		return;
	store_close_modules(s, 3);
	store_free(s);
}

const raft_storage *store_raft_storage(store *s)
{
	return s == NULL ? NULL : &s->iface;
}

/* ---- checkpoints ---- */

/*
 * Policy: below a quarter of the limit, nothing (the WAL is small and a checkpoint would cost
 * fsyncs for no gain). Above it, PASSIVE: copies what no reader pins, never waits, and lets
 * the next commit restart the WAL from its start. Above the limit, TRUNCATE: waits for readers
 * and shrinks the file to zero, unless a snapshot dump holds a read transaction (it would
 * block us), in which case PASSIVE again and the WAL grows until the dump ends.
 */
int store_maybe_checkpoint(store *s)
{
	uint64_t limit;
	int mode = SQLITE_CHECKPOINT_PASSIVE;
	int log = 0, done = 0, rc;

	if (s == NULL)
		return STORE_ERR_INVALID;
	limit = s->opt.wal_limit_pages ? s->opt.wal_limit_pages : STORE_DEFAULT_WAL_LIMIT;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	if ((uint64_t)s->conn->wal_frames < limit / 4)
		return STORE_OK;
	if ((uint64_t)s->conn->wal_frames >= limit && !store_snap_dump_running(s))
		mode = SQLITE_CHECKPOINT_TRUNCATE;
	rc = sqlite3_wal_checkpoint_v2(s->db, "main", mode, &log, &done);
	if (rc == SQLITE_BUSY)
		return STORE_OK;
	if (rc != SQLITE_OK)
		return store_sqlite_error(s, rc, "checkpoint");
	if (mode == SQLITE_CHECKPOINT_TRUNCATE || done == log)
		s->conn->wal_frames = 0;
	return STORE_OK;
}
