/* snapshot.c - snapshot files: their format, the dump on a helper thread, staging, install. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/command.h"
#include "store/store_internal.h"

/*
 * Snapshot file format, version 1. Every integer is little-endian.
 *
 *   header   magic "RKVSNAP\0" (8 bytes) | u32 version (1) | u32 flags (0)
 *            u64 node_id | u64 index | u64 term | u64 nonce      (the store_snapshot_id)
 *            u32 n_voters (<= RAFT_MAX_VOTERS) | n_voters x u64 voter (non-zero, distinct)
 *   records  u8 tag | u32 key_len | key | u32 value_len | value, one per table row:
 *              SNAP_TAG_KV       key: kv.key                 value: kv.value
 *              SNAP_TAG_SESSION  key: u64 client_id          value: u64 epoch, u64 last_index,
 *                                                                   u64 low_seq
 *              SNAP_TAG_RESULT   key: u64 client_id, u64 seq value: u64 status, u8 has_value,
 *                                                                   then the value bytes
 *   trailer  u8 SNAP_TAG_END | u64 number of records | u32 CRC-32C of every byte before it
 *
 * A reader checks the magic, version, flags, conf state, every tag and length (no length passes
 * the end of the file), the record sizes (kv keys of 1..COMMAND_MAX_KEY bytes and values of at
 * most COMMAND_MAX_VALUE, as the state machine makes them; session records of exactly 8 + 24
 * bytes; result records of 16 + 9 bytes plus a value of at most COMMAND_MAX_VALUE when
 * has_value is 1, none when it is 0), the record count, the CRC, and that the file ends right
 * after the trailer. The sizes are checked before anything is allocated for the record.
 *
 * Files, all in the snapshot directory (ids in decimal, the nonce in 16 hex digits):
 *   snap-<node>-<index>-<term>-<nonce>            a finished snapshot made by store <node>
 *   snap-<node>-<index>-<term>-<nonce>.tmp        one being dumped (renamed when complete)
 *   staging-<self>.<node>-<index>-<term>-<nonce>  snapshot id <node>-... being received by
 *                                                 store <self>
 * Several stores may share the directory: each touches only names carrying its own node id.
 */

#define SNAP_MAGIC        "RKVSNAP"
#define SNAP_VERSION      1
#define SNAP_HEADER_FIXED 52
#define SNAP_HEADER_MAX   (SNAP_HEADER_FIXED + 8 * RAFT_MAX_VOTERS)
#define SNAP_BUF_SIZE     (64 * 1024)
#define SNAP_CANCEL_EVERY 1024 /* rows between two looks at the cancel flag */
#define SNAP_BUSY_TIMEOUT 5000 /* ms the dump's connection waits on a locked WAL index */
#define SNAP_DUMP_CACHE   "PRAGMA cache_size = -2048" /* a one-pass scan needs little cache */
#define SNAP_TEMP_UNAVAIL RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE

enum { SNAP_TAG_KV = 1, SNAP_TAG_SESSION = 2, SNAP_TAG_RESULT = 3, SNAP_TAG_END = 0xff };

/* The install statements, prepared on s->db by store_snap_init. */
enum {
	SNAP_DEL_KV,
	SNAP_DEL_SESSIONS,
	SNAP_DEL_RESULTS,
	SNAP_INS_KV,
	SNAP_INS_SESSION,
	SNAP_INS_RESULT,
	SNAP_SET_APPLY,
	SNAP_N_STMT,
};

static const char *const snap_sql[SNAP_N_STMT] = {
    [SNAP_DEL_KV] = "DELETE FROM kv",
    [SNAP_DEL_SESSIONS] = "DELETE FROM sessions",
    [SNAP_DEL_RESULTS] = "DELETE FROM session_results",
    [SNAP_INS_KV] = "INSERT INTO kv(key, value) VALUES (?1, ?2)",
    [SNAP_INS_SESSION] = "INSERT INTO sessions(client_id, epoch, last_index, low_seq)"
                         " VALUES (?1, ?2, ?3, ?4)",
    [SNAP_INS_RESULT] = "INSERT INTO session_results(client_id, seq, status, value)"
                        " VALUES (?1, ?2, ?3, ?4)",
    [SNAP_SET_APPLY] = "UPDATE apply_state SET applied_index = ?1, applied_term = ?2,"
                       " truncated_index = ?1, truncated_term = ?2, conf_state = ?3 WHERE id = 1",
};

/* What a snapshot file says about itself. */
struct snap_meta {
	store_snapshot_id id;
	raft_conf_state conf;
};

/* A dump's input. Written by the owner before pthread_create, which orders it before the
 * thread's reads; read-only while the thread lives; freed by the owner after the join. */
struct snap_job {
	char *db_path;
	char *vfs; /* NULL: the default VFS */
	char *dir;
	uint64_t node_id;
	uint64_t nonce;
};

/* What the dump thread reports; guarded by store_snap.mu. */
struct snap_report {
	bool reading; /* set by the owner at start, cleared once the read transaction ended */
	bool done;    /* the thread is about to exit: join it; store_snap.ended is broadcast when
	                 this becomes true */
	int rv;       /* STORE_OK, a STORE_ERR_*, or SNAP_TEMP_UNAVAIL (busy, cancelled) */
	struct snap_meta meta; /* the finished file's, when rv == STORE_OK */
	char msg[256];
};

/* A staging being received; owner thread only. When active, fd is open on the file named by
 * id and len is its length: every byte below len is on disk (fsynced) at its offset. */
struct snap_staging {
	bool active;
	store_snapshot_id id;
	int fd;
	uint64_t len;
};

struct store_snap {
	/* Owner thread only. */
	char *dir;        /* owned; NULL until set or derived from the database path */
	bool thread_live; /* a dump thread was created and not joined yet */
	pthread_t thread; /* valid when thread_live */
	struct snap_job job;
	bool has_latest;         /* latest names the newest snapshot this store finished */
	struct snap_meta latest; /* since it was opened */
	uint64_t nonce_state;
	struct snap_staging stg;
	/* has_finished: the staging of `finished` passed store_staging_finish since open and its
	 * file is kept until it is installed, discarded, or superseded by the applied index; a
	 * Ready may name it. At most one at a time. */
	bool has_finished;
	store_snapshot_id finished;
	raft_conf_state finished_conf; /* the membership in finished's header, when has_finished */
	sqlite3_stmt *stmt[SNAP_N_STMT];

	/* Shared with the dump thread. */
	pthread_mutex_t mu;
	pthread_cond_t ended;      /* with mu, CLOCK_MONOTONIC: report.done became true */
	struct snap_report report; /* guarded by mu */
	atomic_bool cancel;        /* set by close: the dump stops at its next look */
};

/* ---- small helpers ---------------------------------------------------------------------- */

static void snap_put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void snap_put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t snap_get_u32(const unsigned char *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t snap_get_u64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static bool snap_id_equal(const store_snapshot_id *a, const store_snapshot_id *b)
{
	return a->node_id == b->node_id && a->index == b->index && a->term == b->term &&
	       a->nonce == b->nonce;
}

static bool snap_conf_equal(const raft_conf_state *a, const raft_conf_state *b)
{
	if (a->n_voters != b->n_voters)
		return false;
	for (size_t i = 0; i < a->n_voters; i++)
		if (a->voters[i] != b->voters[i])
			return false;
	return true;
}

/* errno -> store code. */
static int snap_errno_code(int e)
{
	if (e == ENOSPC || e == EDQUOT)
		return STORE_ERR_FULL;
	if (e == ENOMEM)
		return STORE_ERR_NOMEM;
	return STORE_ERR_IO;
}

/* A SQLite result code of the dump's connection -> store code. Lock contention is transient. */
static int snap_sqlite_code(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return SNAP_TEMP_UNAVAIL;
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

/* Thread-safe strerror into buf. */
static const char *snap_strerror(int e, char *buf, size_t len)
{
	if (strerror_r(e, buf, len) != 0)
		snprintf(buf, len, "errno %d", e);
	return buf;
}

/* Records a detail in s->errmsg without fail-stopping (a bad staged file is not a store
 * failure: the transfer fetches it again). Returns rv. */
static int snap_note(store *s, int rv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int snap_note(store *s, int rv, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
	va_end(ap);
	return rv;
}

/* Records an I/O failure of the owner thread (fail-stops unless benign). Returns its code. */
static int snap_fail_errno(store *s, int e, const char *what, const char *path)
{
	char buf[128];

	return store_error(s, snap_errno_code(e), "%s %s: %s", what, path,
	                   snap_strerror(e, buf, sizeof(buf)));
}

/* A malloc'd string formatted like printf, or NULL. */
static char *snap_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *snap_format(const char *fmt, ...)
{
	va_list ap;
	char *out;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	out = malloc((size_t)n + 1);
	if (out == NULL)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(out, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return out;
}

/* Path of the finished (suffix "") or temporary (".tmp") snapshot file for id; malloc'd. */
static char *snap_file_path(const char *dir, const store_snapshot_id *id, const char *suffix)
{
	return snap_format("%s/snap-%" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%016" PRIx64 "%s", dir,
	                   id->node_id, id->index, id->term, id->nonce, suffix);
}

/* Path of store self's staging file for id; malloc'd. */
static char *snap_staging_path(const char *dir, uint64_t self, const store_snapshot_id *id)
{
	return snap_format("%s/staging-%" PRIu64 ".%" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%016" PRIx64,
	                   dir, self, id->node_id, id->index, id->term, id->nonce);
}

/* Parses a decimal u64 (digits only, no overflow) at *p and advances *p. */
static bool snap_parse_dec(const char **p, uint64_t *v)
{
	const char *q = *p;
	uint64_t x = 0;

	if (*q < '0' || *q > '9')
		return false;
	for (; *q >= '0' && *q <= '9'; q++) {
		if (x > (UINT64_MAX - (uint64_t)(*q - '0')) / 10)
			return false;
		x = x * 10 + (uint64_t)(*q - '0');
	}
	*p = q;
	*v = x;
	return true;
}

/* Parses exactly 16 lower-case hex digits at *p and advances *p. */
static bool snap_parse_hex16(const char **p, uint64_t *v)
{
	uint64_t x = 0;

	for (int i = 0; i < 16; i++) {
		char c = (*p)[i];

		if (c >= '0' && c <= '9')
			x = x << 4 | (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			x = x << 4 | (uint64_t)(c - 'a' + 10);
		else
			return false;
	}
	*p += 16;
	*v = x;
	return true;
}

/* Parses "<node>-<index>-<term>-<nonce>" at name; returns what follows it, or NULL. */
static const char *snap_parse_id(const char *name, store_snapshot_id *id)
{
	const char *p = name;

	if (!snap_parse_dec(&p, &id->node_id) || *p++ != '-' || !snap_parse_dec(&p, &id->index) ||
	    *p++ != '-' || !snap_parse_dec(&p, &id->term) || *p++ != '-' ||
	    !snap_parse_hex16(&p, &id->nonce))
		return NULL;
	return p;
}

/* fsyncs a directory so that names created, renamed or removed in it survive a crash.
 * Returns 0 or an errno. */
static int snap_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int e = 0;

	if (fd < 0)
		return errno;
	if (fsync(fd) != 0)
		e = errno;
	close(fd);
	return e;
}

/* Writes all of buf at the file position. Returns 0 or an errno. */
static int snap_write_all(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Writes all of buf at offset off. Returns 0 or an errno. */
static int snap_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* 64-bit mixer (splitmix64 finaliser) for the nonce sequence. */
static uint64_t snap_mix64(uint64_t x)
{
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* A seed that differs across processes and restarts: /dev/urandom, mixed with the clock and
 * the pid in case it cannot be read. */
static uint64_t snap_seed(void)
{
	struct timespec ts;
	uint64_t seed = 0;
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		unsigned char b[8];

		if (read(fd, b, sizeof(b)) == (ssize_t)sizeof(b))
			seed = snap_get_u64(b);
		close(fd);
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	return seed ^ snap_mix64((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
	       snap_mix64((uint64_t)getpid() << 32);
}

static uint64_t snap_next_nonce(struct store_snap *sn)
{
	sn->nonce_state += 0x9e3779b97f4a7c15ull;
	return snap_mix64(sn->nonce_state);
}

/* The snapshot directory: the one set, else the database's own directory. Owned by sn. */
static const char *snap_dir(store *s)
{
	struct store_snap *sn = s->snap;
	const char *slash;

	if (sn->dir != NULL)
		return sn->dir;
	slash = s->path != NULL ? strrchr(s->path, '/') : NULL;
	if (slash == NULL)
		sn->dir = strdup(".");
	else if (slash == s->path)
		sn->dir = strdup("/");
	else
		sn->dir = snap_format("%.*s", (int)(slash - s->path), s->path);
	return sn->dir;
}

/* ---- snapshot ids ------------------------------------------------------------------------ */

/* out receives 32 bytes: node_id, index, term, nonce, each u64 LE. id and out are borrowed. A
 * NULL id writes 32 zero bytes (node id 0, which decode refuses); a NULL out writes nothing. */
void store_snapshot_id_encode(const store_snapshot_id *id, unsigned char out[32])
{
	if (out == NULL)
		return;
	if (id == NULL) {
		memset(out, 0, STORE_SNAPSHOT_ID_SIZE);
		return;
	}
	snap_put_u64(out, id->node_id);
	snap_put_u64(out + 8, id->index);
	snap_put_u64(out + 16, id->term);
	snap_put_u64(out + 24, id->nonce);
}

/* Decodes exactly STORE_SNAPSHOT_ID_SIZE bytes (borrowed) into *id. STORE_ERR_INVALID for
 * another length, NULL, or node id 0 (no store makes such an id). */
int store_snapshot_id_decode(const void *buf, size_t len, store_snapshot_id *id)
{
	const unsigned char *p = buf;

	if (buf == NULL || id == NULL || len != STORE_SNAPSHOT_ID_SIZE)
		return STORE_ERR_INVALID;
	if (snap_get_u64(p) == 0)
		return STORE_ERR_INVALID;
	id->node_id = snap_get_u64(p);
	id->index = snap_get_u64(p + 8);
	id->term = snap_get_u64(p + 16);
	id->nonce = snap_get_u64(p + 24);
	return STORE_OK;
}

/* ---- the format: writing ----------------------------------------------------------------- */

/* A buffered output file that checksums what it writes. buf (SNAP_BUF_SIZE bytes) is owned;
 * fd is borrowed. */
struct snap_writer {
	int fd;
	unsigned char *buf;
	size_t used;
	uint32_t crc; /* of every byte flushed so far */
};

/* Returns 0 or an errno. */
static int snap_writer_flush(struct snap_writer *w)
{
	int e;

	if (w->used == 0)
		return 0;
	w->crc = store_crc32c(w->crc, w->buf, w->used);
	e = snap_write_all(w->fd, w->buf, w->used);
	w->used = 0;
	return e;
}

/* Appends n bytes (borrowed). Returns 0 or an errno. */
static int snap_writer_put(struct snap_writer *w, const void *p, size_t n)
{
	const unsigned char *src = p;

	while (n > 0) {
		size_t k = SNAP_BUF_SIZE - w->used < n ? SNAP_BUF_SIZE - w->used : n;

		memcpy(w->buf + w->used, src, k);
		w->used += k;
		src += k;
		n -= k;
		if (w->used == SNAP_BUF_SIZE) {
			int e = snap_writer_flush(w);

			if (e != 0)
				return e;
		}
	}
	return 0;
}

/* Writes a record's tag, key and value length; the caller then puts value_len bytes. */
static int snap_writer_record(struct snap_writer *w, unsigned char tag, const void *key,
                              size_t key_len, size_t value_len)
{
	unsigned char b[5];
	int e;

	if (key_len > UINT32_MAX || value_len > UINT32_MAX)
		return EFBIG;
	b[0] = tag;
	snap_put_u32(b + 1, (uint32_t)key_len);
	e = snap_writer_put(w, b, 5);
	if (e == 0)
		e = snap_writer_put(w, key, key_len);
	snap_put_u32(b, (uint32_t)value_len);
	if (e == 0)
		e = snap_writer_put(w, b, 4);
	return e;
}

/* Encodes the header of m into buf (SNAP_HEADER_MAX bytes); returns its length. */
static size_t snap_header_encode(const struct snap_meta *m, unsigned char *buf)
{
	memcpy(buf, SNAP_MAGIC, 8);
	snap_put_u32(buf + 8, SNAP_VERSION);
	snap_put_u32(buf + 12, 0);
	snap_put_u64(buf + 16, m->id.node_id);
	snap_put_u64(buf + 24, m->id.index);
	snap_put_u64(buf + 32, m->id.term);
	snap_put_u64(buf + 40, m->id.nonce);
	snap_put_u32(buf + 48, (uint32_t)m->conf.n_voters);
	for (size_t i = 0; i < m->conf.n_voters; i++)
		snap_put_u64(buf + SNAP_HEADER_FIXED + 8 * i, m->conf.voters[i]);
	return SNAP_HEADER_FIXED + 8 * m->conf.n_voters;
}

/* ---- the format: reading ----------------------------------------------------------------- */

/* One record as read; key and value point into the reader's record buffer and stay valid
 * until the next read. */
struct snap_record {
	unsigned char tag;
	const unsigned char *key;
	size_t key_len;
	const unsigned char *value;
	size_t value_len;
};

/* A buffered input file that checksums what it consumes. Owns fd, buf and rec. Memory: the
 * read buffer plus the largest record. */
struct snap_reader {
	int fd;
	unsigned char *buf; /* SNAP_BUF_SIZE bytes; [pos, len) buffered, not yet consumed */
	size_t pos, len;
	uint64_t size;     /* the file's size when opened */
	uint64_t consumed; /* bytes consumed; <= size */
	uint32_t crc;      /* of the consumed bytes */
	uint64_t records;  /* records returned so far */
	unsigned char *rec;
	size_t rec_cap;
	const char *what; /* why the last call failed (static string) */
};

static void snap_reader_close(struct snap_reader *r)
{
	if (r->fd >= 0)
		close(r->fd);
	free(r->buf);
	free(r->rec);
	r->fd = -1;
	r->buf = NULL;
	r->rec = NULL;
}

/* Opens path (borrowed). On error the reader holds nothing, but must still be closed. */
static int snap_reader_open(struct snap_reader *r, const char *path)
{
	struct stat st;

	memset(r, 0, sizeof(*r));
	r->fd = open(path, O_RDONLY | O_CLOEXEC);
	r->what = "cannot open";
	if (r->fd < 0)
		return errno == ENOENT ? STORE_ERR_NOT_FOUND : snap_errno_code(errno);
	r->what = "cannot stat";
	if (fstat(r->fd, &st) != 0)
		return snap_errno_code(errno);
	r->size = (uint64_t)st.st_size;
	r->buf = malloc(SNAP_BUF_SIZE);
	r->what = "out of memory";
	return r->buf != NULL ? STORE_OK : STORE_ERR_NOMEM;
}

static int snap_reader_fill(struct snap_reader *r)
{
	ssize_t n;

	do
		n = read(r->fd, r->buf, SNAP_BUF_SIZE);
	while (n < 0 && errno == EINTR);
	r->what = n < 0 ? "read error" : "file shrank while read";
	if (n < 0)
		return snap_errno_code(errno);
	if (n == 0)
		return STORE_ERR_CORRUPT;
	r->pos = 0;
	r->len = (size_t)n;
	return STORE_OK;
}

/* Consumes n bytes into dst. STORE_ERR_CORRUPT if the file ends first. */
static int snap_reader_get(struct snap_reader *r, void *dst, size_t n)
{
	unsigned char *out = dst;

	if (n > r->size - r->consumed) {
		r->what = "truncated";
		return STORE_ERR_CORRUPT;
	}
	while (n > 0) {
		size_t k;

		if (r->pos == r->len) {
			int rv = snap_reader_fill(r);

			if (rv != STORE_OK)
				return rv;
		}
		k = r->len - r->pos < n ? r->len - r->pos : n;
		memcpy(out, r->buf + r->pos, k);
		r->crc = store_crc32c(r->crc, r->buf + r->pos, k);
		r->pos += k;
		r->consumed += k;
		out += k;
		n -= k;
	}
	return STORE_OK;
}

static int snap_reader_corrupt(struct snap_reader *r, const char *what)
{
	r->what = what;
	return STORE_ERR_CORRUPT;
}

static int snap_reader_header(struct snap_reader *r, struct snap_meta *m)
{
	unsigned char b[SNAP_HEADER_MAX];
	size_t n;
	int rv = snap_reader_get(r, b, SNAP_HEADER_FIXED);

	if (rv != STORE_OK)
		return rv;
	if (memcmp(b, SNAP_MAGIC, 8) != 0)
		return snap_reader_corrupt(r, "not a snapshot file");
	if (snap_get_u32(b + 8) != SNAP_VERSION || snap_get_u32(b + 12) != 0)
		return snap_reader_corrupt(r, "unknown format version or flags");
	m->id.node_id = snap_get_u64(b + 16);
	m->id.index = snap_get_u64(b + 24);
	m->id.term = snap_get_u64(b + 32);
	m->id.nonce = snap_get_u64(b + 40);
	n = snap_get_u32(b + 48);
	if (n > RAFT_MAX_VOTERS)
		return snap_reader_corrupt(r, "too many voters");
	rv = snap_reader_get(r, b + SNAP_HEADER_FIXED, 8 * n);
	if (rv != STORE_OK)
		return rv;
	m->conf.n_voters = n;
	for (size_t i = 0; i < n; i++) {
		m->conf.voters[i] = snap_get_u64(b + SNAP_HEADER_FIXED + 8 * i);
		if (m->conf.voters[i] == 0)
			return snap_reader_corrupt(r, "voter id 0");
		for (size_t k = 0; k < i; k++)
			if (m->conf.voters[k] == m->conf.voters[i])
				return snap_reader_corrupt(r, "duplicate voter");
	}
	return STORE_OK;
}

/* After the end tag: record count, CRC, and nothing after them. Returns STORE_OK. */
static int snap_reader_trailer(struct snap_reader *r)
{
	unsigned char b[8];
	uint32_t crc;
	int rv = snap_reader_get(r, b, 8);

	if (rv != STORE_OK)
		return rv;
	if (snap_get_u64(b) != r->records)
		return snap_reader_corrupt(r, "record count mismatch");
	crc = r->crc;
	rv = snap_reader_get(r, b, 4);
	if (rv != STORE_OK)
		return rv;
	if (snap_get_u32(b) != crc)
		return snap_reader_corrupt(r, "checksum mismatch");
	if (r->consumed != r->size)
		return snap_reader_corrupt(r, "bytes after the trailer");
	return STORE_OK;
}

/* Reads a u32 length that must fit in what is left of the file. */
static int snap_reader_len(struct snap_reader *r, size_t *len)
{
	unsigned char b[4];
	int rv = snap_reader_get(r, b, 4);

	if (rv != STORE_OK)
		return rv;
	*len = snap_get_u32(b);
	if (*len > r->size - r->consumed)
		return snap_reader_corrupt(r, "length past the end of the file");
	return STORE_OK;
}

static int snap_reader_reserve(struct snap_reader *r, size_t n)
{
	unsigned char *p;

	if (n <= r->rec_cap)
		return STORE_OK;
	p = realloc(r->rec, n);
	if (p == NULL) {
		r->what = "out of memory";
		return STORE_ERR_NOMEM;
	}
	r->rec = p;
	r->rec_cap = n;
	return STORE_OK;
}

/* Whether a record of tag (a known one) may have a key of n bytes. */
static bool snap_key_len_ok(unsigned char tag, size_t n)
{
	switch (tag) {
	case SNAP_TAG_KV:
		return n >= 1 && n <= COMMAND_MAX_KEY;
	case SNAP_TAG_SESSION:
		return n == 8;
	default:
		return n == 16;
	}
}

/* Whether a record of tag (a known one) may have a value of n bytes. */
static bool snap_value_len_ok(unsigned char tag, size_t n)
{
	switch (tag) {
	case SNAP_TAG_KV:
		return n <= COMMAND_MAX_VALUE;
	case SNAP_TAG_SESSION:
		return n == 24;
	default:
		return n >= 9 && n - 9 <= COMMAND_MAX_VALUE;
	}
}

/* Reads a length, checks it for the tag's key (or value), and reads that many bytes into the
 * record buffer at off. */
static int snap_reader_part(struct snap_reader *r, unsigned char tag, bool key, size_t off,
                            size_t *len)
{
	int rv = snap_reader_len(r, len);

	if (rv == STORE_OK && !(key ? snap_key_len_ok(tag, *len) : snap_value_len_ok(tag, *len)))
		rv = snap_reader_corrupt(r, key ? "record key of a bad size"
		                                : "record value of a bad size");
	if (rv == STORE_OK)
		rv = snap_reader_reserve(r, off + *len);
	if (rv == STORE_OK)
		rv = snap_reader_get(r, r->rec + off, *len);
	return rv;
}

/* A result record's has_value byte is 0 (no value bytes) or 1. */
static bool snap_result_valid(const struct snap_record *rec)
{
	return rec->value[8] == 1 || (rec->value[8] == 0 && rec->value_len == 9);
}

/* Reads the next record into *rec. Returns 1 for a record, 0 at the (verified) end of the
 * file, or a negative error with r->what set. */
static int snap_reader_next(struct snap_reader *r, struct snap_record *rec)
{
	size_t klen, vlen;
	int rv = snap_reader_get(r, &rec->tag, 1);

	if (rv == STORE_OK && rec->tag == SNAP_TAG_END)
		return snap_reader_trailer(r);
	if (rv == STORE_OK && rec->tag != SNAP_TAG_KV && rec->tag != SNAP_TAG_SESSION &&
	    rec->tag != SNAP_TAG_RESULT)
		rv = snap_reader_corrupt(r, "unknown record tag");
	if (rv == STORE_OK)
		rv = snap_reader_part(r, rec->tag, true, 0, &klen);
	if (rv == STORE_OK)
		rv = snap_reader_part(r, rec->tag, false, klen, &vlen);
	if (rv != STORE_OK)
		return rv;
	rec->key = r->rec;
	rec->key_len = klen;
	rec->value = r->rec + klen;
	rec->value_len = vlen;
	if (rec->tag == SNAP_TAG_RESULT && !snap_result_valid(rec))
		return snap_reader_corrupt(r, "malformed session result record");
	r->records++;
	return 1;
}

/* Reads the whole file at path (borrowed) and checks that its id is *id; *conf gets the
 * membership in its header. */
static int snap_verify_file(const char *path, const store_snapshot_id *id, raft_conf_state *conf,
                            const char **what)
{
	struct snap_reader r;
	struct snap_meta m;
	struct snap_record rec;
	int rv = snap_reader_open(&r, path);

	if (rv == STORE_OK)
		rv = snap_reader_header(&r, &m);
	if (rv == STORE_OK && !snap_id_equal(&m.id, id))
		rv = snap_reader_corrupt(&r, "the file is another snapshot");
	for (int n = 1; rv == STORE_OK && n == 1;) {
		n = snap_reader_next(&r, &rec);
		if (n < 0)
			rv = n;
	}
	if (rv == STORE_OK)
		*conf = m.conf;
	*what = r.what;
	snap_reader_close(&r);
	return rv;
}

/* ---- the dump (helper thread) ------------------------------------------------------------ */

/* One dump, on the dump thread's stack. Owns db, the writer's buffer and fd, and the paths;
 * borrows sn for its job (read-only), mu, report and cancel. */
struct snap_dump {
	struct store_snap *sn;
	sqlite3 *db;
	struct snap_writer w;
	struct snap_meta meta;
	char *tmp_path; /* NULL once renamed */
	char *final_path;
	uint64_t rows; /* records written */
	char msg[256];
};

static int snap_dump_sqlite(struct snap_dump *d, int rc, const char *what)
{
	snprintf(d->msg, sizeof(d->msg), "%s: %s", what,
	         d->db != NULL ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc));
	return snap_sqlite_code(rc);
}

static int snap_dump_errno(struct snap_dump *d, int e, const char *what)
{
	char buf[128];

	snprintf(d->msg, sizeof(d->msg), "%s: %s", what, snap_strerror(e, buf, sizeof(buf)));
	return snap_errno_code(e);
}

static int snap_dump_open_db(struct snap_dump *d)
{
	const struct snap_job *job = &d->sn->job;
	int rc = sqlite3_open_v2(job->db_path, &d->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
	                         job->vfs);

	if (rc == SQLITE_OK)
		rc = sqlite3_busy_timeout(d->db, SNAP_BUSY_TIMEOUT);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(d->db, SNAP_DUMP_CACHE, NULL, NULL, NULL);
	return rc == SQLITE_OK ? STORE_OK : snap_dump_sqlite(d, rc, "opening the dump connection");
}

/* Opens the read transaction; its first read fixes the metadata and the data alike. */
static int snap_dump_read_meta(struct snap_dump *d)
{
	const struct snap_job *job = &d->sn->job;
	sqlite3_stmt *st = NULL;
	int rv = STORE_OK;
	int rc = sqlite3_exec(d->db, "BEGIN", NULL, NULL, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(d->db,
		                        "SELECT applied_index, applied_term, conf_state"
		                        " FROM apply_state WHERE id = 1",
		                        -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		rv = snap_dump_sqlite(d, rc == SQLITE_DONE ? SQLITE_CORRUPT : rc,
		                      "reading apply_state");
		goto cleanup;
	}
	d->meta.id.node_id = job->node_id;
	d->meta.id.index = (uint64_t)sqlite3_column_int64(st, 0);
	d->meta.id.term = (uint64_t)sqlite3_column_int64(st, 1);
	d->meta.id.nonce = job->nonce;
	if (store_conf_decode(sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2),
	                      &d->meta.conf) != STORE_OK) {
		snprintf(d->msg, sizeof(d->msg), "apply_state holds a malformed conf state");
		rv = STORE_ERR_CORRUPT;
	}
cleanup:
	sqlite3_finalize(st);
	return rv;
}

static int snap_dump_create(struct snap_dump *d)
{
	const struct snap_job *job = &d->sn->job;
	unsigned char hdr[SNAP_HEADER_MAX];
	int e;

	d->tmp_path = snap_file_path(job->dir, &d->meta.id, ".tmp");
	d->final_path = snap_file_path(job->dir, &d->meta.id, "");
	d->w.buf = malloc(SNAP_BUF_SIZE);
	if (d->tmp_path == NULL || d->final_path == NULL || d->w.buf == NULL)
		return snap_dump_errno(d, ENOMEM, "allocating the dump");
	d->w.fd = open(d->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (d->w.fd < 0)
		return snap_dump_errno(d, errno, "creating the snapshot file");
	e = snap_writer_put(&d->w, hdr, snap_header_encode(&d->meta, hdr));
	return e == 0 ? STORE_OK : snap_dump_errno(d, e, "writing the snapshot file");
}

/* Row emitters: each writes the current row of st as one record. Return 0 or an errno. */
typedef int (*snap_emit_fn)(struct snap_writer *w, sqlite3_stmt *st);

static int snap_emit_kv(struct snap_writer *w, sqlite3_stmt *st)
{
	const void *key = sqlite3_column_blob(st, 0);
	size_t key_len = (size_t)sqlite3_column_bytes(st, 0);
	const void *value = sqlite3_column_blob(st, 1);
	size_t value_len = (size_t)sqlite3_column_bytes(st, 1);
	int e;

	if ((key == NULL && key_len > 0) || (value == NULL && value_len > 0))
		return ENOMEM;
	e = snap_writer_record(w, SNAP_TAG_KV, key, key_len, value_len);
	return e != 0 ? e : snap_writer_put(w, value, value_len);
}

static int snap_emit_session(struct snap_writer *w, sqlite3_stmt *st)
{
	unsigned char key[8], value[24];
	int e;

	snap_put_u64(key, (uint64_t)sqlite3_column_int64(st, 0));
	for (int i = 0; i < 3; i++)
		snap_put_u64(value + 8 * i, (uint64_t)sqlite3_column_int64(st, i + 1));
	e = snap_writer_record(w, SNAP_TAG_SESSION, key, sizeof(key), sizeof(value));
	return e != 0 ? e : snap_writer_put(w, value, sizeof(value));
}

static int snap_emit_result(struct snap_writer *w, sqlite3_stmt *st)
{
	unsigned char key[16], head[9];
	bool has_value = sqlite3_column_type(st, 3) != SQLITE_NULL;
	const void *value = has_value ? sqlite3_column_blob(st, 3) : NULL;
	size_t value_len = has_value ? (size_t)sqlite3_column_bytes(st, 3) : 0;
	int e;

	if (value == NULL && value_len > 0)
		return ENOMEM;
	snap_put_u64(key, (uint64_t)sqlite3_column_int64(st, 0));
	snap_put_u64(key + 8, (uint64_t)sqlite3_column_int64(st, 1));
	snap_put_u64(head, (uint64_t)sqlite3_column_int64(st, 2));
	head[8] = has_value ? 1 : 0;
	e = snap_writer_record(w, SNAP_TAG_RESULT, key, sizeof(key), sizeof(head) + value_len);
	if (e == 0)
		e = snap_writer_put(w, head, sizeof(head));
	return e != 0 ? e : snap_writer_put(w, value, value_len);
}

/* The tables a snapshot holds, each read in primary-key order (no sort, no temp storage). */
static const struct snap_table {
	const char *sql;
	snap_emit_fn emit;
} snap_tables[] = {
    {"SELECT key, value FROM kv ORDER BY key", snap_emit_kv},
    {"SELECT client_id, epoch, last_index, low_seq FROM sessions ORDER BY client_id",
     snap_emit_session},
    {"SELECT client_id, seq, status, value FROM session_results ORDER BY client_id, seq",
     snap_emit_result},
};

static int snap_dump_table(struct snap_dump *d, const struct snap_table *t)
{
	sqlite3_stmt *st = NULL;
	int rv = STORE_OK;
	int rc = sqlite3_prepare_v2(d->db, t->sql, -1, &st, NULL);

	if (rc != SQLITE_OK) {
		rv = snap_dump_sqlite(d, rc, t->sql);
		goto cleanup;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int e = t->emit(&d->w, st);

		if (e != 0) {
			rv = snap_dump_errno(d, e, "writing the snapshot file");
			goto cleanup;
		}
		if (++d->rows % SNAP_CANCEL_EVERY == 0 && atomic_load(&d->sn->cancel)) {
			snprintf(d->msg, sizeof(d->msg), "cancelled by store_close");
			rv = SNAP_TEMP_UNAVAIL;
			goto cleanup;
		}
	}
	if (rc != SQLITE_DONE)
		rv = snap_dump_sqlite(d, rc, t->sql);
cleanup:
	sqlite3_finalize(st);
	return rv;
}

/* Ends the read transaction and closes the connection: checkpoints may run again. */
static int snap_dump_end_read(struct snap_dump *d)
{
	int rc = sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL);

	if (rc != SQLITE_OK)
		return snap_dump_sqlite(d, rc, "ending the read transaction");
	sqlite3_close(d->db);
	d->db = NULL;
	pthread_mutex_lock(&d->sn->mu);
	d->sn->report.reading = false;
	pthread_mutex_unlock(&d->sn->mu);
	return STORE_OK;
}

static int snap_dump_trailer(struct snap_dump *d)
{
	unsigned char b[9];
	int e;

	b[0] = SNAP_TAG_END;
	snap_put_u64(b + 1, d->rows);
	e = snap_writer_put(&d->w, b, 9);
	if (e == 0)
		e = snap_writer_flush(&d->w);
	snap_put_u32(b, d->w.crc);
	if (e == 0)
		e = snap_writer_put(&d->w, b, 4);
	if (e == 0)
		e = snap_writer_flush(&d->w);
	if (e == 0 && fdatasync(d->w.fd) != 0)
		e = errno;
	return e == 0 ? STORE_OK : snap_dump_errno(d, e, "writing the snapshot trailer");
}

/* Gives the file its final name, durably. */
static int snap_dump_publish(struct snap_dump *d)
{
	int e = close(d->w.fd) != 0 ? errno : 0;

	d->w.fd = -1;
	if (e == 0 && rename(d->tmp_path, d->final_path) != 0)
		e = errno;
	if (e == 0) {
		free(d->tmp_path);
		d->tmp_path = NULL;
		e = snap_sync_dir(d->sn->job.dir);
	}
	return e == 0 ? STORE_OK : snap_dump_errno(d, e, "publishing the snapshot file");
}

static int snap_dump_run(struct snap_dump *d)
{
	int rv = snap_dump_open_db(d);

	if (rv == STORE_OK)
		rv = snap_dump_read_meta(d);
	if (rv == STORE_OK)
		rv = snap_dump_create(d);
	for (size_t i = 0; rv == STORE_OK && i < sizeof(snap_tables) / sizeof(snap_tables[0]); i++)
		rv = snap_dump_table(d, &snap_tables[i]);
	if (rv == STORE_OK)
		rv = snap_dump_end_read(d);
	if (rv == STORE_OK)
		rv = snap_dump_trailer(d);
	if (rv == STORE_OK)
		rv = snap_dump_publish(d);
	return rv;
}

/* The dump thread. arg is the store_snap (borrowed; it outlives the thread, whose join is in
 * store_snap_close or snap_collect). Reports through sn->report and exits. */
static void *snap_dump_main(void *arg)
{
	struct store_snap *sn = arg;
	struct snap_dump d;
	int rv;

	memset(&d, 0, sizeof(d));
	d.sn = sn;
	d.w.fd = -1;
	rv = snap_dump_run(&d);
	sqlite3_close(d.db); /* rolls back a read transaction left open by a failure */
	if (d.w.fd >= 0)
		close(d.w.fd);
	if (d.tmp_path != NULL)
		unlink(d.tmp_path);
	free(d.w.buf);
	free(d.tmp_path);
	free(d.final_path);
	pthread_mutex_lock(&sn->mu);
	sn->report.reading = false;
	sn->report.done = true;
	sn->report.rv = rv;
	sn->report.meta = d.meta;
	memcpy(sn->report.msg, d.msg, sizeof(d.msg));
	pthread_cond_broadcast(&sn->ended);
	pthread_mutex_unlock(&sn->mu);
	return NULL;
}

/* ---- the dump (owner thread) ------------------------------------------------------------- */

static void snap_job_free(struct snap_job *job)
{
	free(job->db_path);
	free(job->vfs);
	free(job->dir);
	memset(job, 0, sizeof(*job));
}

/* Joins a dump thread that has finished and takes its report: a finished file becomes the
 * latest snapshot. Returns STORE_OK, or the dump's failure (which fail-stops the store) unless
 * it was transient. */
static int snap_collect(store *s)
{
	struct store_snap *sn = s->snap;
	struct snap_report rep;

	if (!sn->thread_live)
		return STORE_OK;
	pthread_mutex_lock(&sn->mu);
	rep = sn->report;
	pthread_mutex_unlock(&sn->mu);
	if (!rep.done)
		return STORE_OK;
	pthread_join(sn->thread, NULL);
	sn->thread_live = false;
	snap_job_free(&sn->job);
	if (rep.rv == STORE_OK) {
		sn->latest = rep.meta;
		sn->has_latest = true;
		return STORE_OK;
	}
	if (rep.rv == SNAP_TEMP_UNAVAIL)
		return snap_note(s, STORE_OK, "snapshot dump: %s", rep.msg);
	return store_error(s, rep.rv, "snapshot dump: %s", rep.msg);
}

/* Starts a dump thread. A thread that cannot be created is transient: the next request
 * tries again. */
static int snap_dump_start(store *s)
{
	struct store_snap *sn = s->snap;
	const char *dir = snap_dir(s);
	char buf[128];
	int rc;

	sn->job.db_path = s->path != NULL ? strdup(s->path) : NULL;
	sn->job.dir = dir != NULL ? strdup(dir) : NULL;
	sn->job.vfs = s->opt.vfs != NULL ? strdup(s->opt.vfs) : NULL;
	if (sn->job.db_path == NULL || sn->job.dir == NULL ||
	    (s->opt.vfs != NULL && sn->job.vfs == NULL)) {
		snap_job_free(&sn->job);
		return store_error(s, STORE_ERR_NOMEM, "snapshot dump: out of memory");
	}
	sn->job.node_id = s->opt.node_id;
	sn->job.nonce = snap_next_nonce(sn);
	pthread_mutex_lock(&sn->mu);
	memset(&sn->report, 0, sizeof(sn->report));
	sn->report.reading = true;
	pthread_mutex_unlock(&sn->mu);
	atomic_store(&sn->cancel, false);
	rc = pthread_create(&sn->thread, NULL, snap_dump_main, sn);
	if (rc != 0) {
		pthread_mutex_lock(&sn->mu);
		sn->report.reading = false;
		pthread_mutex_unlock(&sn->mu);
		snap_job_free(&sn->job);
		return snap_note(s, STORE_OK, "snapshot dump: no thread: %s",
		                 snap_strerror(rc, buf, sizeof(buf)));
	}
	sn->thread_live = true;
	return STORE_OK;
}

/* The latest snapshot can be sent if the log still holds every entry after it and its file
 * is still there. */
static bool snap_latest_usable(store *s)
{
	struct store_snap *sn = s->snap;
	const char *dir = snap_dir(s);
	char *path;
	bool ok;

	if (!sn->has_latest || sn->latest.id.index < s->truncated_index || dir == NULL)
		return false;
	path = snap_file_path(dir, &sn->latest.id, "");
	ok = path != NULL && access(path, F_OK) == 0;
	free(path);
	if (!ok)
		sn->has_latest = false;
	return ok;
}

/* out->data becomes a malloc'd encoded id, owned by the caller. */
static int snap_fill(store *s, raft_snapshot *out)
{
	const struct snap_meta *m = &s->snap->latest;
	unsigned char *data = malloc(STORE_SNAPSHOT_ID_SIZE);

	if (data == NULL)
		return store_error(s, STORE_ERR_NOMEM, "snapshot request: out of memory");
	store_snapshot_id_encode(&m->id, data);
	memset(out, 0, sizeof(*out));
	out->metadata.conf_state = m->conf;
	out->metadata.index = m->id.index;
	out->metadata.term = m->id.term;
	out->data = data;
	out->len = STORE_SNAPSHOT_ID_SIZE;
	return STORE_OK;
}

/*
 * Returns the newest snapshot this store finished if its index is at or above the truncated
 * index (the log holds every entry after it, so a follower can continue from it), even when
 * applied has moved on: a busy node would otherwise never have a snapshot that is current.
 * Refused without a fail-stop while the membership is empty: a follower ignores a snapshot
 * that does not name it. out is untouched on error; on STORE_OK out->data is the caller's.
 */
int store_snapshot_request(store *s, raft_snapshot *out)
{
	int rv;

	if (s == NULL || s->snap == NULL)
		return STORE_ERR_INVALID;
	if (out == NULL)
		return store_error(s, STORE_ERR_INVALID, "snapshot request: NULL out");
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	if (s->conf_state.n_voters == 0)
		return store_error(s, STORE_ERR_INVALID,
		                   "membership not recorded: call store_set_conf_state");
	rv = snap_collect(s);
	if (rv != STORE_OK)
		return rv;
	if (snap_latest_usable(s))
		return snap_fill(s, out);
	if (!s->snap->thread_live)
		rv = snap_dump_start(s);
	return rv != STORE_OK ? rv : SNAP_TEMP_UNAVAIL;
}

/* Takes the report of a dump that has ended (which may fail-stop the store, as the next
 * request would) and returns the index of the latest snapshot, if any. */
uint64_t store_snapshot_latest_index(store *s)
{
	if (s == NULL || s->snap == NULL)
		return 0;
	if (s->failed == STORE_OK)
		snap_collect(s);
	return s->snap->has_latest ? s->snap->latest.id.index : 0;
}

/* Adds ms to *ts, normalized. */
static void snap_timespec_add_ms(struct timespec *ts, unsigned ms)
{
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/*
 * Blocks on sn->ended until the dump thread reports done or the deadline passes. thread_live
 * is owner-only, so it is read without mu; report.done is read under mu. Does not join or take
 * the report: the next request (or latest_index) does, so a failed dump fail-stops the store
 * there, as without this wait.
 */
int store_snapshot_wait(store *s, unsigned timeout_ms)
{
	struct store_snap *sn;
	struct timespec deadline;
	bool done;
	int rc = 0;

	if (s == NULL || s->snap == NULL)
		return STORE_ERR_INVALID;
	sn = s->snap;
	if (!sn->thread_live)
		return STORE_OK;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	snap_timespec_add_ms(&deadline, timeout_ms);
	pthread_mutex_lock(&sn->mu);
	while (!sn->report.done && rc == 0) /* 0 also on a spurious wakeup */
		rc = pthread_cond_timedwait(&sn->ended, &sn->mu, &deadline);
	done = sn->report.done;
	pthread_mutex_unlock(&sn->mu);
	return done ? STORE_OK : SNAP_TEMP_UNAVAIL;
}

bool store_snap_dump_running(store *s)
{
	bool reading;

	if (s == NULL || s->snap == NULL)
		return false;
	pthread_mutex_lock(&s->snap->mu);
	reading = s->snap->report.reading;
	pthread_mutex_unlock(&s->snap->mu);
	return reading;
}

/* dir is borrowed (copied). Refused while a dump or a staging uses the current directory. */
int store_set_snapshot_dir(store *s, const char *dir)
{
	struct store_snap *sn;
	char *copy;

	if (s == NULL || s->snap == NULL)
		return STORE_ERR_INVALID;
	sn = s->snap;
	if (dir == NULL || dir[0] == '\0')
		return store_error(s, STORE_ERR_INVALID, "snapshot dir: empty");
	if (sn->thread_live || sn->stg.active || sn->has_finished)
		return store_error(s, STORE_ERR_INVALID,
		                   "snapshot dir: in use by a dump or staging");
	copy = strdup(dir);
	if (copy == NULL)
		return store_error(s, STORE_ERR_NOMEM, "snapshot dir: out of memory");
	free(sn->dir);
	sn->dir = copy;
	sn->has_latest = false;
	return STORE_OK;
}

/* On STORE_OK *path is malloc'd (the caller's) and *size (may be NULL) the file's size. */
int store_snapshot_path(store *s, const store_snapshot_id *id, char **path, uint64_t *size)
{
	const char *dir;
	struct stat st;
	char *p;
	int rv = STORE_OK;

	if (s == NULL || s->snap == NULL)
		return STORE_ERR_INVALID;
	if (id == NULL || path == NULL)
		return store_error(s, STORE_ERR_INVALID, "snapshot path: NULL argument");
	*path = NULL;
	dir = snap_dir(s);
	p = dir != NULL ? snap_file_path(dir, id, "") : NULL;
	if (p == NULL)
		return store_error(s, STORE_ERR_NOMEM, "snapshot path: out of memory");
	if (stat(p, &st) != 0 && errno == ENOENT)
		rv = store_error(s, STORE_ERR_NOT_FOUND, "no snapshot file %s", p);
	else if (stat(p, &st) != 0)
		rv = snap_fail_errno(s, errno, "snapshot path: stat", p);
	if (rv != STORE_OK) {
		free(p);
		return rv;
	}
	*path = p;
	if (size != NULL)
		*size = (uint64_t)st.st_size;
	return STORE_OK;
}

/* True if the directory entry name is one of this store's snapshot files that gc removes. */
static bool snap_gc_doomed(store *s, const char *name, const store_snapshot_id *keep, size_t n_keep)
{
	struct store_snap *sn = s->snap;
	store_snapshot_id id;
	const char *rest;

	if (strncmp(name, "snap-", 5) != 0)
		return false;
	rest = snap_parse_id(name + 5, &id);
	if (rest == NULL || id.node_id != s->opt.node_id)
		return false;
	if (sn->thread_live && id.nonce == sn->job.nonce)
		return false; /* the running dump's, temporary or just renamed */
	if (strcmp(rest, ".tmp") == 0)
		return true;
	if (rest[0] != '\0' || (sn->has_latest && snap_id_equal(&id, &sn->latest.id)))
		return false;
	for (size_t i = 0; i < n_keep; i++)
		if (snap_id_equal(&id, &keep[i]))
			return false;
	return true;
}

/* Removes this store's snapshot files except the latest it finished since it was opened,
 * those in keep (borrowed; the ones being sent), and the running dump's; and stale .tmp
 * files. Files of other stores in the directory are left alone. Best effort. */
void store_snapshot_gc(store *s, const store_snapshot_id *keep, size_t n_keep)
{
	const char *dir;
	struct dirent *e;
	DIR *d;

	if (s == NULL || s->snap == NULL || (keep == NULL && n_keep > 0))
		return;
	if (s->failed != STORE_OK || snap_collect(s) != STORE_OK)
		return;
	dir = snap_dir(s);
	d = dir != NULL ? opendir(dir) : NULL;
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		char *path;

		if (!snap_gc_doomed(s, e->d_name, keep, n_keep))
			continue;
		path = snap_format("%s/%s", dir, e->d_name);
		if (path != NULL)
			unlink(path);
		free(path);
	}
	closedir(d);
}

/* ---- staging (receiver) ------------------------------------------------------------------ */

static void snap_staging_close(struct snap_staging *g)
{
	if (g->fd >= 0)
		close(g->fd);
	memset(g, 0, sizeof(*g));
	g->fd = -1;
}

/* Whether id's staging passed finish and is kept for a Ready that may name it. */
static bool snap_staging_is_finished(const struct store_snap *sn, const store_snapshot_id *id)
{
	return sn->has_finished && snap_id_equal(&sn->finished, id);
}

/* Whether a finished staging other than id's may still be named by a Ready: its index is above
 * the applied index, so it was neither installed nor superseded. */
static bool snap_staging_pending_other(const store *s, const store_snapshot_id *id)
{
	const struct store_snap *sn = s->snap;

	return sn->has_finished && !snap_id_equal(&sn->finished, id) &&
	       sn->finished.index > s->applied_index;
}

/* Refuses an operation that would drop or replace the pending finished staging. */
static int snap_staging_refuse(store *s, const char *op)
{
	const store_snapshot_id *f = &s->snap->finished;

	return store_error(s, STORE_ERR_INVALID,
	                   "staging %s: snapshot %" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%016" PRIx64
	                   " is finished but not installed (applied index %" PRIu64
	                   "); install it or store_staging_discard it first",
	                   op, f->node_id, f->index, f->term, f->nonce, s->applied_index);
}

static int snap_staging_check(store *s, const store_snapshot_id *id)
{
	if (s == NULL || s->snap == NULL)
		return STORE_ERR_INVALID;
	if (id == NULL || id->node_id == 0)
		return store_error(s, STORE_ERR_INVALID, "staging: bad snapshot id");
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	return snap_dir(s) != NULL ? STORE_OK
	                           : store_error(s, STORE_ERR_NOMEM, "staging: out of memory");
}

/* Opens path (borrowed), creating it durably if create. On STORE_OK *fd and *len are set. */
static int snap_staging_open(store *s, const char *path, bool create, int *fd, uint64_t *len)
{
	struct stat st;
	int e = 0;

	*fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
	if (*fd < 0 && errno == ENOENT && !create)
		return store_error(s, STORE_ERR_NOT_FOUND, "no staging %s", path);
	if (*fd < 0)
		e = errno;
	else if (fstat(*fd, &st) != 0)
		e = errno;
	else if (create && fsync(*fd) != 0)
		e = errno;
	else if (create)
		e = snap_sync_dir(snap_dir(s));
	if (e == 0) {
		*len = (uint64_t)st.st_size;
		return STORE_OK;
	}
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
	return snap_fail_errno(s, e, "staging", path);
}

/* Makes id's staging the active one, opening its file (creating it if create): the state is
 * found on disk after a restart. STORE_ERR_NOT_FOUND if there is no file and !create. The
 * previously active staging's file stays on disk. */
static int snap_staging_attach(store *s, const store_snapshot_id *id, bool create)
{
	struct snap_staging *g = &s->snap->stg;
	char *path;
	uint64_t len = 0;
	int fd = -1;
	int rv;

	if (g->active && snap_id_equal(&g->id, id))
		return STORE_OK;
	path = snap_staging_path(snap_dir(s), s->opt.node_id, id);
	if (path == NULL)
		return store_error(s, STORE_ERR_NOMEM, "staging: out of memory");
	rv = snap_staging_open(s, path, create, &fd, &len);
	free(path);
	if (rv != STORE_OK)
		return rv;
	snap_staging_close(g);
	g->active = true;
	g->id = *id;
	g->fd = fd;
	g->len = len;
	return STORE_OK;
}

/* Removes every staging file of this store but keep's. Best effort: a file that survives is
 * removed by the next begin. */
static void snap_staging_drop_others(store *s, const store_snapshot_id *keep)
{
	struct snap_staging *g = &s->snap->stg;
	const char *dir = snap_dir(s);
	char prefix[48];
	size_t plen;
	struct dirent *e;
	bool removed = false;
	DIR *d;

	if (g->active && !snap_id_equal(&g->id, keep))
		snap_staging_close(g);
	if (s->snap->has_finished && !snap_id_equal(&s->snap->finished, keep))
		s->snap->has_finished = false;
	plen = (size_t)snprintf(prefix, sizeof(prefix), "staging-%" PRIu64 ".", s->opt.node_id);
	d = opendir(dir);
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		store_snapshot_id id;
		const char *rest;
		char *path;

		if (strncmp(e->d_name, prefix, plen) != 0)
			continue;
		rest = snap_parse_id(e->d_name + plen, &id);
		if (rest == NULL || rest[0] != '\0' || snap_id_equal(&id, keep))
			continue;
		path = snap_format("%s/%s", dir, e->d_name);
		removed |= path != NULL && unlink(path) == 0;
		free(path);
	}
	closedir(d);
	if (removed)
		snap_sync_dir(dir);
}

/*
 * Starts (or resumes, for the same id) staging id. Any other unfinished staging of this store
 * is deleted, whatever its id: a newer snapshot supersedes an older one, and which transfer to
 * take is the transfer layer's decision (it sees the terms), so an older id is not refused
 * either: a refusal could leave the receiver stuck behind a staging whose sender is gone. A
 * finished staging above the applied index is not deleted (a Ready may name it): that is
 * STORE_ERR_INVALID until it is installed or discarded.
 */
int store_staging_begin(store *s, const store_snapshot_id *id)
{
	int rv = snap_staging_check(s, id);

	if (rv != STORE_OK)
		return rv;
	if (snap_staging_pending_other(s, id))
		return snap_staging_refuse(s, "begin");
	snap_staging_drop_others(s, id);
	return snap_staging_attach(s, id, true);
}

/*
 * Writes buf (borrowed) at offset and fsyncs before returning. The staged length is
 * contiguous: a write must start at or below it. Bytes below it are not rewritten (a duplicate
 * or overlapping resend is STORE_OK); a gap is STORE_ERR_INVALID; no staging for id is
 * STORE_ERR_NOT_FOUND. Neither fail-stops; an I/O error does.
 */
int store_staging_write(store *s, const store_snapshot_id *id, uint64_t offset, const void *buf,
                        size_t len)
{
	struct snap_staging *g;
	uint64_t skip;
	int e, rv = snap_staging_check(s, id);

	if (rv == STORE_OK && ((buf == NULL && len > 0) || len > UINT64_MAX - offset))
		rv = store_error(s, STORE_ERR_INVALID, "staging write: bad buffer");
	if (rv == STORE_OK)
		rv = snap_staging_attach(s, id, false);
	if (rv != STORE_OK)
		return rv;
	g = &s->snap->stg;
	if (offset > g->len)
		return store_error(s, STORE_ERR_INVALID,
		                   "staging write at %" PRIu64 " leaves a gap after %" PRIu64,
		                   offset, g->len);
	if (offset + len <= g->len)
		return STORE_OK;
	if (snap_staging_is_finished(s->snap, id))
		return store_error(s, STORE_ERR_INVALID, "staging write past a finished snapshot");
	skip = g->len - offset;
	e = snap_pwrite_all(g->fd, (const unsigned char *)buf + skip, len - skip, g->len);
	if (e == 0 && fdatasync(g->fd) != 0)
		e = errno;
	if (e != 0)
		return snap_fail_errno(s, e, "staging write", "to the staging file");
	g->len = offset + len;
	return STORE_OK;
}

/* The staged (durable, contiguous) length of id's staging, found on disk after a restart; 0
 * if there is none. After a crash the length may include bytes written but not yet synced;
 * they were written at their offsets, and finish's checksum catches anything else. */
uint64_t store_staging_offset(store *s, const store_snapshot_id *id)
{
	if (snap_staging_check(s, id) != STORE_OK || snap_staging_attach(s, id, false) != STORE_OK)
		return 0;
	return s->snap->stg.len;
}

/* Records the outcome of verifying id's staging. */
static void snap_staging_mark(struct store_snap *sn, const store_snapshot_id *id, bool ok)
{
	if (ok) {
		sn->has_finished = true;
		sn->finished = *id;
	} else if (snap_staging_is_finished(sn, id)) {
		sn->has_finished = false;
	}
}

/* Verifies the whole staged file: format, record sizes, checksum, and that it is snapshot id.
 * A failure is STORE_ERR_CORRUPT (not a store failure; the caller discards and fetches again).
 * Refused (STORE_ERR_INVALID) while another finished staging is pending, as in begin. */
int store_staging_finish(store *s, const store_snapshot_id *id)
{
	raft_conf_state conf = {0};
	const char *what = NULL;
	char *path;
	int rv = snap_staging_check(s, id);

	if (rv == STORE_OK && snap_staging_pending_other(s, id))
		rv = snap_staging_refuse(s, "finish");
	if (rv == STORE_OK)
		rv = snap_staging_attach(s, id, false);
	if (rv != STORE_OK)
		return rv;
	path = snap_staging_path(snap_dir(s), s->opt.node_id, id);
	if (path == NULL)
		return store_error(s, STORE_ERR_NOMEM, "staging finish: out of memory");
	rv = snap_verify_file(path, id, &conf, &what);
	if (rv == STORE_ERR_CORRUPT)
		snap_note(s, rv, "staged snapshot %s: %s", path, what);
	else if (rv != STORE_OK)
		store_error(s, rv, "staged snapshot %s: %s", path, what);
	snap_staging_mark(s->snap, id, rv == STORE_OK);
	if (rv == STORE_OK)
		s->snap->finished_conf = conf;
	free(path);
	return rv;
}

/* The header of id's finished staging, as store_staging_finish read it. */
int store_staging_meta(store *s, const store_snapshot_id *id, raft_snapshot_metadata *meta)
{
	if (s == NULL || s->snap == NULL || id == NULL || meta == NULL)
		return STORE_ERR_INVALID;
	if (!snap_staging_is_finished(s->snap, id))
		return STORE_ERR_NOT_FOUND;
	meta->index = id->index;
	meta->term = id->term;
	meta->conf_state = s->snap->finished_conf;
	return STORE_OK;
}

/* Deletes id's staging file, active or only on disk. Other stagings are left alone. */
void store_staging_discard(store *s, const store_snapshot_id *id)
{
	struct snap_staging *g;
	const char *dir;
	char *path;

	if (s == NULL || s->snap == NULL || id == NULL)
		return;
	g = &s->snap->stg;
	if (g->active && snap_id_equal(&g->id, id))
		snap_staging_close(g);
	snap_staging_mark(s->snap, id, false);
	dir = snap_dir(s);
	path = dir != NULL ? snap_staging_path(dir, s->opt.node_id, id) : NULL;
	if (path != NULL)
		unlink(path);
	free(path);
}

/* Mirrors snap_install_source: a staging file of id is used if it exists, so it must be the
 * finished one; otherwise only a finished snapshot file of this store's own will do. */
bool store_snap_is_ready(store *s, const store_snapshot_id *id)
{
	const char *dir;
	char *path;
	bool staged, ok;

	if (s == NULL || s->snap == NULL || id == NULL || id->node_id == 0)
		return false;
	dir = snap_dir(s);
	path = dir != NULL ? snap_staging_path(dir, s->opt.node_id, id) : NULL;
	staged = path != NULL && access(path, F_OK) == 0;
	free(path);
	if (staged)
		return snap_staging_is_finished(s->snap, id);
	if (dir == NULL || id->node_id != s->opt.node_id)
		return false;
	path = snap_file_path(dir, id, "");
	ok = path != NULL && access(path, F_OK) == 0;
	free(path);
	return ok;
}

/* ---- install ----------------------------------------------------------------------------- */

static const unsigned char snap_empty_blob[1];

/* Binds n bytes (borrowed until the statement is reset) as a blob, never as NULL. */
static int snap_bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
	return sqlite3_bind_blob64(st, i, n > 0 ? p : snap_empty_blob, n, SQLITE_STATIC);
}

/* Steps a statement that returns no row, then resets it. A constraint violation means the
 * file holds a duplicate row. */
static int snap_step(store *s, sqlite3_stmt *st, int bind_rc, const char *what)
{
	int rc = bind_rc == SQLITE_OK ? sqlite3_step(st) : bind_rc;

	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return STORE_OK;
	if ((rc & 0xff) == SQLITE_CONSTRAINT)
		return store_error(s, STORE_ERR_CORRUPT, "snapshot install: %s: duplicate row",
		                   what);
	return store_sqlite_error(s, rc, what);
}

static int snap_install_kv(store *s, const struct snap_record *rec)
{
	sqlite3_stmt *st = s->snap->stmt[SNAP_INS_KV];
	int rc = snap_bind_blob(st, 1, rec->key, rec->key_len);

	if (rc == SQLITE_OK)
		rc = snap_bind_blob(st, 2, rec->value, rec->value_len);
	return snap_step(s, st, rc, "snapshot install: kv row");
}

static int snap_install_session(store *s, const struct snap_record *rec)
{
	sqlite3_stmt *st = s->snap->stmt[SNAP_INS_SESSION];
	int rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)snap_get_u64(rec->key));

	for (int i = 0; i < 3 && rc == SQLITE_OK; i++)
		rc = sqlite3_bind_int64(st, i + 2, (sqlite3_int64)snap_get_u64(rec->value + 8 * i));
	return snap_step(s, st, rc, "snapshot install: session row");
}

static int snap_install_result(store *s, const struct snap_record *rec)
{
	sqlite3_stmt *st = s->snap->stmt[SNAP_INS_RESULT];
	int rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)snap_get_u64(rec->key));

	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)snap_get_u64(rec->key + 8));
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, (sqlite3_int64)snap_get_u64(rec->value));
	if (rc == SQLITE_OK && rec->value[8] == 1)
		rc = snap_bind_blob(st, 4, rec->value + 9, rec->value_len - 9);
	else if (rc == SQLITE_OK)
		rc = sqlite3_bind_null(st, 4);
	return snap_step(s, st, rc, "snapshot install: session result row");
}

/* The file holding snapshot id: this store's staging of it, else (local use and tests) a
 * finished snapshot made by this store. *path is malloc'd, the caller's. */
static int snap_install_source(store *s, const store_snapshot_id *id, char **path)
{
	const char *dir = snap_dir(s);
	char *p = dir != NULL ? snap_staging_path(dir, s->opt.node_id, id) : NULL;

	if (p != NULL && access(p, F_OK) != 0 && id->node_id == s->opt.node_id) {
		free(p);
		p = snap_file_path(dir, id, "");
	}
	*path = p;
	return p != NULL ? STORE_OK : store_error(s, STORE_ERR_NOMEM, "install: out of memory");
}

/* Opens the file and checks its header against the id and the snapshot's metadata. */
static int snap_install_open(store *s, struct snap_reader *r, const char *path,
                             const store_snapshot_id *id, const raft_snapshot_metadata *md)
{
	struct snap_meta m;
	int rv = snap_reader_open(r, path);

	if (rv == STORE_OK)
		rv = snap_reader_header(r, &m);
	if (rv == STORE_OK && !snap_id_equal(&m.id, id))
		rv = snap_reader_corrupt(r, "the file is another snapshot");
	if (rv == STORE_OK && (m.id.index != md->index || m.id.term != md->term ||
	                       !snap_conf_equal(&m.conf, &md->conf_state)))
		rv = snap_reader_corrupt(r, "its metadata differs from the snapshot's");
	if (rv != STORE_OK)
		return store_error(s, rv, "snapshot install from %s: %s", path, r->what);
	return STORE_OK;
}

static int snap_install_records(store *s, struct snap_reader *r, const char *path)
{
	struct snap_record rec;
	int n, rv = STORE_OK;

	while (rv == STORE_OK && (n = snap_reader_next(r, &rec)) == 1) {
		if (rec.tag == SNAP_TAG_KV)
			rv = snap_install_kv(s, &rec);
		else if (rec.tag == SNAP_TAG_SESSION)
			rv = snap_install_session(s, &rec);
		else
			rv = snap_install_result(s, &rec);
	}
	if (rv == STORE_OK && n < 0)
		rv = store_error(s, n, "snapshot install from %s: %s", path, r->what);
	return rv;
}

static int snap_install_apply_state(store *s, const raft_snapshot_metadata *md)
{
	sqlite3_stmt *st = s->snap->stmt[SNAP_SET_APPLY];
	unsigned char conf[1 + 8 * RAFT_MAX_VOTERS];
	size_t n = store_conf_encode(&md->conf_state, conf, sizeof(conf));
	int rc;

	if (n == 0 || n > sizeof(conf))
		return store_error(s, STORE_ERR_INVALID, "snapshot install: bad conf state");
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)md->index);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)md->term);
	if (rc == SQLITE_OK)
		rc = snap_bind_blob(st, 3, conf, n);
	return snap_step(s, st, rc, "snapshot install: apply_state");
}

/*
 * Inside the caller's transaction: empties kv, sessions and session_results, loads the
 * snapshot's rows from its file (memory: one read buffer and the largest record), and sets
 * apply_state. The file's id and metadata must equal snap's (STORE_ERR_CORRUPT otherwise) and
 * it is verified as it is read, so a bad file fails before the caller commits. snap borrowed.
 */
int store_snap_install_in_txn(store *s, const raft_snapshot *snap)
{
	struct snap_reader r = {.fd = -1};
	store_snapshot_id id;
	char *path = NULL;
	int rv;

	if (s == NULL || s->snap == NULL)
		return STORE_ERR_INVALID;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	if (snap == NULL || store_snapshot_id_decode(snap->data, snap->len, &id) != STORE_OK)
		return store_error(s, STORE_ERR_INVALID, "snapshot install: bad snapshot id");
	rv = snap_install_source(s, &id, &path);
	if (rv == STORE_OK)
		rv = snap_install_open(s, &r, path, &id, &snap->metadata);
	for (int i = SNAP_DEL_KV; rv == STORE_OK && i <= SNAP_DEL_RESULTS; i++)
		rv = snap_step(s, s->snap->stmt[i], SQLITE_OK, snap_sql[i]);
	if (rv == STORE_OK)
		rv = snap_install_records(s, &r, path);
	if (rv == STORE_OK)
		rv = snap_install_apply_state(s, &snap->metadata);
	snap_reader_close(&r);
	free(path);
	return rv;
}

/*
 * After the install transaction committed: sets the caches this module owns for an install
 * (applied and truncated index and term, conf state; last_index and the hard state are the
 * log's) and deletes the staging file. snap borrowed.
 */
void store_snap_installed(store *s, const raft_snapshot *snap)
{
	store_snapshot_id id;

	if (s == NULL || snap == NULL)
		return;
	s->applied_index = snap->metadata.index;
	s->applied_term = snap->metadata.term;
	s->truncated_index = snap->metadata.index;
	s->truncated_term = snap->metadata.term;
	s->conf_state = snap->metadata.conf_state;
	if (store_snapshot_id_decode(snap->data, snap->len, &id) == STORE_OK)
		store_staging_discard(s, &id);
}

/* ---- lifetime ---------------------------------------------------------------------------- */

/* Initializes cv on CLOCK_MONOTONIC, so a wall-clock step moves no deadline. 0 or an errno. */
static int snap_cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t attr;
	int rc = pthread_condattr_init(&attr);

	if (rc != 0)
		return rc;
	rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(cv, &attr);
	pthread_condattr_destroy(&attr);
	return rc;
}

/* Allocates s->snap and prepares the install statements on s->db. */
int store_snap_init(store *s)
{
	struct store_snap *sn = calloc(1, sizeof(*sn));
	int rv = STORE_OK;

	if (sn == NULL)
		return store_error(s, STORE_ERR_NOMEM, "snapshot: out of memory");
	if (pthread_mutex_init(&sn->mu, NULL) != 0) {
		free(sn);
		return store_error(s, STORE_ERR_NOMEM, "snapshot: no mutex");
	}
	if (snap_cond_init(&sn->ended) != 0) {
		pthread_mutex_destroy(&sn->mu);
		free(sn);
		return store_error(s, STORE_ERR_NOMEM, "snapshot: no condition variable");
	}
	atomic_init(&sn->cancel, false);
	sn->stg.fd = -1;
	sn->nonce_state = snap_seed();
	s->snap = sn;
	for (int i = 0; rv == STORE_OK && i < SNAP_N_STMT; i++)
		rv = store_prepare(s, snap_sql[i], &sn->stmt[i]);
	if (rv != STORE_OK)
		store_snap_close(s);
	return rv;
}

/* Stops a running dump (it notices within SNAP_CANCEL_EVERY rows and removes its temporary
 * file), joins it, and frees everything. Call before s->db is closed. */
void store_snap_close(store *s)
{
	struct store_snap *sn;

	if (s == NULL || s->snap == NULL)
		return;
	sn = s->snap;
	atomic_store(&sn->cancel, true);
	if (sn->thread_live)
		pthread_join(sn->thread, NULL);
	snap_job_free(&sn->job);
	for (int i = 0; i < SNAP_N_STMT; i++)
		sqlite3_finalize(sn->stmt[i]);
	snap_staging_close(&sn->stg);
	free(sn->dir);
	pthread_cond_destroy(&sn->ended);
	pthread_mutex_destroy(&sn->mu);
	free(sn);
	s->snap = NULL;
}
