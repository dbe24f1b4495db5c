/* kv.c - the kv state machine: applies committed entries with exactly-once client sessions. */
#include <stdlib.h>
#include <string.h>

#include "store/command.h"
#include "store/store_internal.h"

#define KV_DEFAULT_SESSION_TTL  1000000u
#define KV_DEFAULT_MAX_SESSIONS 100000u
/* Sessions idle past their ttl are deleted at every log index that is a multiple of this. */
#define KV_SWEEP_INTERVAL 1024u
/* One scan batch holds at most this many rows, and stops adding rows past this many bytes. */
#define KV_SCAN_BATCH_ROWS  256u
#define KV_SCAN_BATCH_BYTES (8u << 20)
/* n_sessions_at when the session count is not known. */
#define KV_COUNT_UNKNOWN UINT64_MAX
/* An apply transaction commits, and its callbacks run, once the values it holds for them (GET
 * results) reach this many bytes; the rest of the batch goes on in a new transaction. */
#define KV_APPLY_RESULT_BUDGET (4u << 20)

enum kv_stmt {
	KV_GET,
	KV_PUT,
	KV_APPEND,
	KV_DELETE,
	KV_SCAN,
	KV_SCAN_END,
	KV_SAVE_APPLIED,
	KV_SESSION_GET,
	KV_SESSION_INSERT,
	KV_SESSION_TOUCH,
	KV_SESSION_DELETE,
	KV_SESSION_COUNT,
	KV_SESSION_LRU,
	KV_SESSION_SWEEP_RESULTS,
	KV_SESSION_SWEEP,
	KV_RESULT_GET,
	KV_RESULT_PUT,
	KV_RESULT_TRIM,
	KV_RESULT_DROP,
	KV_N_STMT
};

static const char *const kv_sql[KV_N_STMT] = {
    [KV_GET] = "SELECT value FROM kv WHERE key = ?1",
    [KV_PUT] = "INSERT INTO kv(key, value) VALUES (?1, ?2)"
               " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    /* In a UTF-8 database || copies blob bytes unchanged into a TEXT; the cast makes it a BLOB
     * again. The WHERE leaves an oversized result unwritten (0 changes). */
    [KV_APPEND] = "INSERT INTO kv(key, value) VALUES (?1, ?2)"
                  " ON CONFLICT(key) DO UPDATE SET value = CAST(value || excluded.value AS BLOB)"
                  " WHERE length(value) + length(excluded.value) <= ?3",
    [KV_DELETE] = "DELETE FROM kv WHERE key = ?1",
    [KV_SCAN] = "SELECT key, value FROM kv WHERE key >= ?1 ORDER BY key LIMIT ?2",
    [KV_SCAN_END] = "SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key"
                    " LIMIT ?3",
    [KV_SAVE_APPLIED] = "UPDATE apply_state SET applied_index = ?1, applied_term = ?2"
                        " WHERE id = 1",
    [KV_SESSION_GET] = "SELECT epoch, last_index, low_seq FROM sessions WHERE client_id = ?1",
    [KV_SESSION_INSERT] = "INSERT INTO sessions(client_id, epoch, last_index, low_seq)"
                          " VALUES (?1, ?2, ?2, 0)",
    [KV_SESSION_TOUCH] = "UPDATE sessions SET last_index = ?2, low_seq = ?3 WHERE client_id = ?1",
    [KV_SESSION_DELETE] = "DELETE FROM sessions WHERE client_id = ?1",
    [KV_SESSION_COUNT] = "SELECT count(*) FROM sessions",
    [KV_SESSION_LRU] = "SELECT client_id FROM sessions ORDER BY last_index, client_id LIMIT 1",
    [KV_SESSION_SWEEP_RESULTS] = "DELETE FROM session_results WHERE client_id IN"
                                 " (SELECT client_id FROM sessions WHERE last_index < ?1)",
    [KV_SESSION_SWEEP] = "DELETE FROM sessions WHERE last_index < ?1",
    [KV_RESULT_GET] = "SELECT status, value FROM session_results WHERE client_id = ?1"
                      " AND seq = ?2",
    [KV_RESULT_PUT] = "INSERT INTO session_results(client_id, seq, status, value)"
                      " VALUES (?1, ?2, ?3, ?4)",
    [KV_RESULT_TRIM] = "DELETE FROM session_results WHERE client_id = ?1 AND seq < ?2",
    [KV_RESULT_DROP] = "DELETE FROM session_results WHERE client_id = ?1",
};

/* The outcome of one applied entry, kept until its transaction's callbacks have run. */
typedef struct kv_outcome {
	store_result res;       /* res.value points into owned or epoch, or is NULL */
	void *owned;            /* malloc'd value (GET, or a recorded GET result); NULL otherwise */
	unsigned char epoch[8]; /* REGISTER's epoch, little-endian */
} kv_outcome;

/*
 * Invariants: n_sessions is the row count of the sessions table as of applied index
 * n_sessions_at (KV_COUNT_UNKNOWN: recount at the next apply; a snapshot install moves the
 * applied index and so forces a recount). out[0..cap_out) is scratch owned here, reused across
 * batches; `applying` is set while a batch and its callbacks run.
 */
struct store_kv {
	sqlite3_stmt *st[KV_N_STMT];
	uint64_t session_ttl;
	uint64_t max_sessions;
	uint64_t n_sessions;
	uint64_t n_sessions_at;
	kv_outcome *out;
	size_t cap_out;
	bool applying;
};

/* One store_apply in progress. Its session count is published only after the commit. */
typedef struct kv_batch {
	store *s;
	struct store_kv *kv;
	uint64_t n_sessions;
} kv_batch;

/* A sessions row. */
typedef struct kv_session {
	uint64_t epoch;      /* index of the REGISTER that created it */
	uint64_t last_index; /* index of the last entry that carried this client */
	uint64_t low_seq;    /* results below this seq are gone */
} kv_session;

/* One scan batch: rows copied out of SQLite so that no statement is open during callbacks. */
typedef struct kv_scan_batch {
	struct {
		unsigned char *buf; /* malloc'd: key bytes, then value bytes */
		size_t key_len;
		size_t value_len;
	} row[KV_SCAN_BATCH_ROWS];
	size_t n;
	void *next; /* malloc'd key of the first row after the batch, NULL if none */
	size_t next_len;
} kv_scan_batch;

/* ---- statements ---------------------------------------------------------------------------- */

/* Binding to a valid parameter index of a prepared statement cannot fail: integers need no
 * memory, and blobs are SQLITE_STATIC and far below SQLITE_LIMIT_LENGTH (keys and values are
 * bounded by COMMAND_MAX_KEY / COMMAND_MAX_VALUE, appends by the same limit). */
static void kv_bind_u64(sqlite3_stmt *st, int i, uint64_t v)
{
	sqlite3_bind_int64(st, i, (sqlite3_int64)v);
}

/* p is borrowed until the statement is next bound or finalized; an empty blob is bound as a
 * zero-length BLOB, never as NULL. */
static void kv_bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
	sqlite3_bind_blob(st, i, n > 0 ? p : "", (int)n, SQLITE_STATIC);
}

static uint64_t kv_column_u64(sqlite3_stmt *st, int col)
{
	return (uint64_t)sqlite3_column_int64(st, col);
}

/* Runs a statement that returns no row, then resets it. */
static int kv_exec(store *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_sqlite_error(s, rc, what);
	return STORE_OK;
}

/* Steps a query once. On STORE_OK *row tells whether a row is there; the caller reads it and
 * resets. With no row, or on error, the statement is already reset. */
static int kv_query(store *s, sqlite3_stmt *st, const char *what, bool *row)
{
	int rc = sqlite3_step(st);

	*row = rc == SQLITE_ROW;
	if (rc == SQLITE_ROW)
		return STORE_OK;
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_sqlite_error(s, rc, what);
	return STORE_OK;
}

/* Copies a blob column into a new buffer (owned by the caller; at least one byte, so that an
 * empty value is not NULL). */
static int kv_column_dup(store *s, sqlite3_stmt *st, int col, void **out, size_t *len)
{
	const void *p = sqlite3_column_blob(st, col);
	size_t n = (size_t)sqlite3_column_bytes(st, col);

	*out = NULL;
	*len = 0;
	if (n > 0 && p == NULL)
		return store_error(s, STORE_ERR_NOMEM, "reading a blob column");
	*out = malloc(n > 0 ? n : 1);
	if (*out == NULL)
		return store_error(s, STORE_ERR_NOMEM, "copying a %zu-byte value", n);
	if (n > 0)
		memcpy(*out, p, n);
	*len = n;
	return STORE_OK;
}

/* Allocates s->kv (owned by s until store_kv_close) and prepares its statements. On error
 * nothing is left allocated and s->kv is NULL. */
int store_kv_init(store *s)
{
	struct store_kv *kv = calloc(1, sizeof(*kv));
	int rv;

	if (kv == NULL)
		return store_error(s, STORE_ERR_NOMEM, "allocating the kv module");
	s->kv = kv;
	kv->session_ttl = s->opt.session_ttl ? s->opt.session_ttl : KV_DEFAULT_SESSION_TTL;
	kv->max_sessions = s->opt.max_sessions ? s->opt.max_sessions : KV_DEFAULT_MAX_SESSIONS;
	kv->n_sessions_at = KV_COUNT_UNKNOWN;
	for (int i = 0; i < KV_N_STMT; i++) {
		rv = store_prepare(s, kv_sql[i], &kv->st[i]);
		if (rv != STORE_OK)
			goto fail;
	}
	return STORE_OK;
fail:
	store_kv_close(s);
	return rv;
}

/* Finalizes the statements and frees s->kv. Safe on a partly initialised module. */
void store_kv_close(store *s)
{
	struct store_kv *kv = s != NULL ? s->kv : NULL;

	if (kv == NULL)
		return;
	for (int i = 0; i < KV_N_STMT; i++)
		sqlite3_finalize(kv->st[i]);
	free(kv->out);
	free(kv);
	s->kv = NULL;
}

/* ---- kv operations ------------------------------------------------------------------------- */

static int kv_put(kv_batch *b, const store_command *c, kv_outcome *o)
{
	sqlite3_stmt *st = b->kv->st[KV_PUT];

	kv_bind_blob(st, 1, c->key, c->key_len);
	kv_bind_blob(st, 2, c->value, c->value_len);
	o->res.status = STORE_RESULT_OK;
	return kv_exec(b->s, st, "kv put");
}

/* A value that would grow past COMMAND_MAX_VALUE is left alone and the append is INVALID. */
static int kv_append(kv_batch *b, const store_command *c, kv_outcome *o)
{
	sqlite3_stmt *st = b->kv->st[KV_APPEND];
	int rv;

	kv_bind_blob(st, 1, c->key, c->key_len);
	kv_bind_blob(st, 2, c->value, c->value_len);
	kv_bind_u64(st, 3, COMMAND_MAX_VALUE);
	rv = kv_exec(b->s, st, "kv append");
	if (rv != STORE_OK)
		return rv;
	o->res.status = sqlite3_changes(b->s->db) > 0 ? STORE_RESULT_OK : STORE_RESULT_INVALID;
	return STORE_OK;
}

static int kv_delete(kv_batch *b, const store_command *c, kv_outcome *o)
{
	sqlite3_stmt *st = b->kv->st[KV_DELETE];
	int rv;

	kv_bind_blob(st, 1, c->key, c->key_len);
	rv = kv_exec(b->s, st, "kv delete");
	if (rv != STORE_OK)
		return rv;
	o->res.status = sqlite3_changes(b->s->db) > 0 ? STORE_RESULT_OK : STORE_RESULT_NOT_FOUND;
	return STORE_OK;
}

/* Reads key into a new buffer (owned by the caller) or reports *found = false. */
static int kv_read(store *s, const void *key, size_t key_len, void **value, size_t *len,
                   bool *found)
{
	sqlite3_stmt *st = s->kv->st[KV_GET];
	int rv;

	*value = NULL;
	*len = 0;
	kv_bind_blob(st, 1, key, key_len);
	rv = kv_query(s, st, "kv get", found);
	if (rv != STORE_OK || !*found)
		return rv;
	rv = kv_column_dup(s, st, 0, value, len);
	sqlite3_reset(st);
	return rv;
}

static int kv_get(kv_batch *b, const store_command *c, kv_outcome *o)
{
	bool found;
	int rv = kv_read(b->s, c->key, c->key_len, &o->owned, &o->res.value_len, &found);

	o->res.value = o->owned;
	o->res.status = found ? STORE_RESULT_OK : STORE_RESULT_NOT_FOUND;
	return rv;
}

/* Executes a data command (PUT, DELETE, APPEND, GET) and sets o's status and value. */
static int kv_execute(kv_batch *b, const store_command *c, kv_outcome *o)
{
	switch (c->op) {
	case STORE_OP_PUT:
		return kv_put(b, c, o);
	case STORE_OP_APPEND:
		return kv_append(b, c, o);
	case STORE_OP_DELETE:
		return kv_delete(b, c, o);
	default:
		return kv_get(b, c, o);
	}
}

/* ---- sessions ------------------------------------------------------------------------------ */

static int kv_session_load(kv_batch *b, uint64_t client_id, kv_session *ss, bool *found)
{
	sqlite3_stmt *st = b->kv->st[KV_SESSION_GET];
	int rv;

	kv_bind_u64(st, 1, client_id);
	rv = kv_query(b->s, st, "session lookup", found);
	if (rv != STORE_OK || !*found)
		return rv;
	ss->epoch = kv_column_u64(st, 0);
	ss->last_index = kv_column_u64(st, 1);
	ss->low_seq = kv_column_u64(st, 2);
	sqlite3_reset(st);
	return STORE_OK;
}

/* Whether a session last used at last_index has expired by index: last_index + ttl < index. */
static bool kv_session_idle(const struct store_kv *kv, uint64_t last_index, uint64_t index)
{
	return index > kv->session_ttl && last_index < index - kv->session_ttl;
}

static int kv_session_touch(kv_batch *b, uint64_t client_id, const kv_session *ss)
{
	sqlite3_stmt *st = b->kv->st[KV_SESSION_TOUCH];

	kv_bind_u64(st, 1, client_id);
	kv_bind_u64(st, 2, ss->last_index);
	kv_bind_u64(st, 3, ss->low_seq);
	return kv_exec(b->s, st, "session update");
}

/* Deletes a session and all of its results. */
static int kv_session_drop(kv_batch *b, uint64_t client_id)
{
	sqlite3_stmt *results = b->kv->st[KV_RESULT_DROP];
	sqlite3_stmt *session = b->kv->st[KV_SESSION_DELETE];
	int rv;

	kv_bind_u64(results, 1, client_id);
	rv = kv_exec(b->s, results, "session results delete");
	if (rv != STORE_OK)
		return rv;
	kv_bind_u64(session, 1, client_id);
	rv = kv_exec(b->s, session, "session delete");
	if (rv == STORE_OK)
		b->n_sessions -= (uint64_t)sqlite3_changes(b->s->db);
	return rv;
}

/* Expires least recently used sessions (lowest last_index, then lowest id) while there are more
 * than max_sessions. */
static int kv_session_evict(kv_batch *b)
{
	sqlite3_stmt *st = b->kv->st[KV_SESSION_LRU];
	uint64_t victim;
	bool found;
	int rv;

	while (b->n_sessions > b->kv->max_sessions) {
		rv = kv_query(b->s, st, "session lru", &found);
		if (rv != STORE_OK)
			return rv;
		if (!found)
			return store_error(b->s, STORE_ERR_CORRUPT, "session count out of step");
		victim = kv_column_u64(st, 0);
		sqlite3_reset(st);
		rv = kv_session_drop(b, victim);
		if (rv != STORE_OK)
			return rv;
	}
	return STORE_OK;
}

/* At every KV_SWEEP_INTERVAL-th index, deletes the sessions idle past their ttl. */
static int kv_session_sweep(kv_batch *b, uint64_t index)
{
	sqlite3_stmt *results = b->kv->st[KV_SESSION_SWEEP_RESULTS];
	sqlite3_stmt *sessions = b->kv->st[KV_SESSION_SWEEP];
	uint64_t cutoff;
	int rv;

	if (index % KV_SWEEP_INTERVAL != 0 || index <= b->kv->session_ttl)
		return STORE_OK;
	cutoff = index - b->kv->session_ttl;
	kv_bind_u64(results, 1, cutoff);
	rv = kv_exec(b->s, results, "session results sweep");
	if (rv != STORE_OK)
		return rv;
	kv_bind_u64(sessions, 1, cutoff);
	rv = kv_exec(b->s, sessions, "session sweep");
	if (rv == STORE_OK)
		b->n_sessions -= (uint64_t)sqlite3_changes(b->s->db);
	return rv;
}

/* REGISTER: a live session keeps its epoch; otherwise a new one starts with epoch = index. */
static int kv_register(kv_batch *b, const store_command *c, uint64_t index, kv_outcome *o)
{
	sqlite3_stmt *st = b->kv->st[KV_SESSION_INSERT];
	kv_session ss;
	bool found;
	int rv = kv_session_load(b, c->client_id, &ss, &found);

	if (rv != STORE_OK)
		return rv;
	if (found && !kv_session_idle(b->kv, ss.last_index, index)) {
		ss.last_index = index;
		rv = kv_session_touch(b, c->client_id, &ss);
	} else {
		rv = found ? kv_session_drop(b, c->client_id) : STORE_OK;
		if (rv != STORE_OK)
			return rv;
		ss.epoch = index;
		kv_bind_u64(st, 1, c->client_id);
		kv_bind_u64(st, 2, index);
		rv = kv_exec(b->s, st, "session insert");
		if (rv != STORE_OK)
			return rv;
		b->n_sessions++;
		rv = kv_session_evict(b);
	}
	for (int i = 0; i < 8; i++)
		o->epoch[i] = (unsigned char)(ss.epoch >> (8 * i));
	o->res.value = o->epoch;
	o->res.value_len = sizeof(o->epoch);
	o->res.status = STORE_RESULT_OK;
	return rv;
}

/* Looks up the recorded result of (client, seq); when found, fills o with a copy of it. */
static int kv_result_load(kv_batch *b, const store_command *c, kv_outcome *o, bool *found)
{
	sqlite3_stmt *st = b->kv->st[KV_RESULT_GET];
	int rv;

	kv_bind_u64(st, 1, c->client_id);
	kv_bind_u64(st, 2, c->seq);
	rv = kv_query(b->s, st, "session result lookup", found);
	if (rv != STORE_OK || !*found)
		return rv;
	o->res.status = sqlite3_column_int(st, 0);
	if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
		rv = kv_column_dup(b->s, st, 1, &o->owned, &o->res.value_len);
		o->res.value = o->owned;
	}
	sqlite3_reset(st);
	return rv;
}

static int kv_result_save(kv_batch *b, const store_command *c, const kv_outcome *o)
{
	sqlite3_stmt *st = b->kv->st[KV_RESULT_PUT];

	kv_bind_u64(st, 1, c->client_id);
	kv_bind_u64(st, 2, c->seq);
	sqlite3_bind_int(st, 3, o->res.status);
	if (c->op == STORE_OP_GET && o->res.status == STORE_RESULT_OK)
		kv_bind_blob(st, 4, o->res.value, o->res.value_len);
	else
		sqlite3_bind_null(st, 4);
	return kv_exec(b->s, st, "session result insert");
}

static int kv_result_trim(kv_batch *b, uint64_t client_id, uint64_t low_seq)
{
	sqlite3_stmt *st = b->kv->st[KV_RESULT_TRIM];

	kv_bind_u64(st, 1, client_id);
	kv_bind_u64(st, 2, low_seq);
	return kv_exec(b->s, st, "session results trim");
}

/* Whether seq lies past the window of seqs whose results a session keeps. */
static bool kv_past_window(const kv_session *ss, uint64_t seq)
{
	return seq >= ss->low_seq && seq - ss->low_seq >= COMMAND_MAX_INFLIGHT;
}

/* Raises the watermark to low (above the current one) and drops the results below it. */
static int kv_session_raise(kv_batch *b, uint64_t client_id, kv_session *ss, uint64_t low)
{
	ss->low_seq = low;
	return kv_result_trim(b, client_id, low);
}

/*
 * A data command of a client (Raft dissertation §6.3): the session must be live with the
 * command's epoch; the watermark only rises and drops the results below it; a recorded result
 * is returned as it was; a seq below the watermark is never executed; anything else executes
 * once and is recorded. Results are kept for seqs in [low_seq, low_seq + COMMAND_MAX_INFLIGHT)
 * only: a seq past that window first drags the watermark up behind it, so a client never has
 * more than COMMAND_MAX_INFLIGHT results, and the bound costs no query.
 */
static int kv_session_execute(kv_batch *b, const store_command *c, uint64_t index, kv_outcome *o)
{
	kv_session ss;
	bool found;
	int rv = kv_session_load(b, c->client_id, &ss, &found);

	o->res.status = STORE_RESULT_SESSION_EXPIRED;
	if (rv != STORE_OK || !found || ss.epoch != c->epoch ||
	    kv_session_idle(b->kv, ss.last_index, index))
		return rv;
	if (c->low_seq > ss.low_seq)
		rv = kv_session_raise(b, c->client_id, &ss, c->low_seq);
	if (rv == STORE_OK && kv_past_window(&ss, c->seq))
		rv = kv_session_raise(b, c->client_id, &ss, c->seq - COMMAND_MAX_INFLIGHT + 1);
	if (rv != STORE_OK)
		return rv;
	rv = kv_result_load(b, c, o, &found);
	if (rv == STORE_OK && !found && c->seq >= ss.low_seq) {
		rv = kv_execute(b, c, o);
		if (rv == STORE_OK)
			rv = kv_result_save(b, c, o);
	}
	if (rv != STORE_OK)
		return rv;
	ss.last_index = index;
	return kv_session_touch(b, c->client_id, &ss);
}

/* ---- applying ------------------------------------------------------------------------------ */

/* Applies one entry inside the batch's transaction. A malformed command or a conf change is
 * INVALID with no effect; only a store failure is an error. */
static int kv_apply_entry(kv_batch *b, const raft_entry *e, kv_outcome *o)
{
	store_command c;
	int rv;

	memset(o, 0, sizeof(*o));
	o->res.index = e->index;
	o->res.term = e->term;
	o->res.op = STORE_OP_NOOP;
	rv = kv_session_sweep(b, e->index);
	if (rv != STORE_OK)
		return rv;
	if (e->type != RAFT_ENTRY_NORMAL || command_decode(e->data, e->len, &c) != STORE_OK) {
		o->res.status = STORE_RESULT_INVALID;
		return STORE_OK;
	}
	o->res.op = c.op;
	o->res.client_id = c.client_id;
	o->res.seq = c.seq;
	if (c.op == STORE_OP_NOOP)
		return STORE_OK;
	if (c.op == STORE_OP_REGISTER)
		return kv_register(b, &c, e->index, o);
	if (c.client_id == 0)
		return kv_execute(b, &c, o);
	return kv_session_execute(b, &c, e->index, o);
}

static int kv_save_applied(kv_batch *b, uint64_t index, uint64_t term)
{
	sqlite3_stmt *st = b->kv->st[KV_SAVE_APPLIED];
	int rv;

	kv_bind_u64(st, 1, index);
	kv_bind_u64(st, 2, term);
	rv = kv_exec(b->s, st, "apply state update");
	if (rv == STORE_OK && sqlite3_changes(b->s->db) != 1)
		return store_error(b->s, STORE_ERR_CORRUPT, "apply_state row missing");
	return rv;
}

/* Loads the session count inside the open transaction unless the cached one is current. */
static int kv_count_sessions(kv_batch *b)
{
	sqlite3_stmt *st = b->kv->st[KV_SESSION_COUNT];
	bool row;
	int rv;

	if (b->kv->n_sessions_at == b->s->applied_index) {
		b->n_sessions = b->kv->n_sessions;
		return STORE_OK;
	}
	rv = kv_query(b->s, st, "session count", &row);
	if (rv != STORE_OK)
		return rv;
	if (!row)
		return store_error(b->s, STORE_ERR_CORRUPT, "session count returned no row");
	b->n_sessions = kv_column_u64(st, 0);
	sqlite3_reset(st);
	return STORE_OK;
}

/* Ensures room for n outcomes in the scratch array. */
static int kv_reserve(store *s, size_t n)
{
	struct store_kv *kv = s->kv;
	kv_outcome *out;

	if (n <= kv->cap_out)
		return STORE_OK;
	if (n > SIZE_MAX / sizeof(*out))
		return store_error(s, STORE_ERR_NOMEM, "too many entries to apply: %zu", n);
	out = realloc(kv->out, n * sizeof(*out));
	if (out == NULL)
		return store_error(s, STORE_ERR_NOMEM, "allocating %zu apply results", n);
	kv->out = out;
	kv->cap_out = n;
	return STORE_OK;
}

static void kv_outcomes_free(struct store_kv *kv, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(kv->out[i].owned);
}

/* Entries to apply must follow the applied index without a gap. */
static int kv_check_contiguous(store *s, const raft_entry *ents, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (ents[i].index != s->applied_index + 1 + i)
			return store_error(s, STORE_ERR_INVALID,
			                   "apply: entry %llu does not follow applied index %llu",
			                   (unsigned long long)ents[i].index,
			                   (unsigned long long)s->applied_index);
	}
	return STORE_OK;
}

/*
 * One apply transaction: applies ents from the first on until all n are done or the values
 * held for the callbacks reach KV_APPLY_RESULT_BUDGET, and commits them with the applied index
 * of the last one. It may commit without an fsync under STORE_SYNC_FULL:
 *   - it holds only a deterministic function of the stored state and of committed entries,
 *     which are already durable in the log (and on a quorum), so losing it in a crash loses
 *     nothing: the stored applied index falls back with the data, and the replay of the log
 *     above it rebuilds the same rows, sessions and results;
 *   - kv rows, sessions and the applied index commit together, so they never come apart;
 *   - in WAL mode commits are appended in order, and after a crash recovery keeps a prefix of
 *     them (each frame's checksum chains to the one before), so no later commit becomes
 *     durable without this one: not the next synced Ready, and not a compaction up to the
 *     cached applied index, which is itself an unsynced commit and is durable only once a
 *     later fsync (of a Ready, a snapshot install or a checkpoint) covers both.
 * On STORE_OK, *n_done (>= 1) outcomes are filled and committed; on error everything of this
 * transaction is rolled back, and *n_done outcomes still need freeing.
 */
static int kv_apply_txn(store *s, const raft_entry *ents, size_t n, kv_batch *b, size_t *n_done)
{
	size_t held = 0;
	int rv = store_begin(s, false);

	*n_done = 0;
	if (rv != STORE_OK)
		return rv;
	rv = kv_count_sessions(b);
	while (rv == STORE_OK && *n_done < n && held < KV_APPLY_RESULT_BUDGET) {
		kv_outcome *o = &s->kv->out[*n_done];

		rv = kv_apply_entry(b, &ents[*n_done], o);
		(*n_done)++;
		held += o->owned != NULL ? o->res.value_len : 0;
	}
	if (rv == STORE_OK)
		rv = kv_save_applied(b, ents[*n_done - 1].index, ents[*n_done - 1].term);
	if (rv == STORE_OK)
		rv = store_commit(s);
	if (rv != STORE_OK)
		store_rollback(s);
	return rv;
}

/* After a transaction of n entries (last: its last entry) committed: updates the caches and
 * runs the callbacks. */
static void kv_publish(store *s, const kv_batch *b, const raft_entry *last, size_t n,
                       store_apply_fn cb, void *ctx)
{
	s->applied_index = last->index;
	s->applied_term = last->term;
	s->kv->n_sessions = b->n_sessions;
	s->kv->n_sessions_at = s->applied_index;
	for (size_t i = 0; cb != NULL && i < n; i++)
		cb(ctx, &s->kv->out[i].res);
}

/* Applies ents (contiguous, after the applied index) in as many transactions as the result
 * budget needs. A callback that moved the applied index (an install) ends the batch. */
static int kv_apply_all(store *s, const raft_entry *ents, size_t n, store_apply_fn cb, void *ctx)
{
	kv_batch b = {.s = s, .kv = s->kv};
	size_t done;
	int rv = STORE_OK;

	while (rv == STORE_OK && n > 0) {
		if (ents[0].index != s->applied_index + 1)
			return kv_check_contiguous(s, ents, 1);
		rv = kv_apply_txn(s, ents, n, &b, &done);
		if (rv == STORE_OK)
			kv_publish(s, &b, &ents[done - 1], done, cb, ctx);
		kv_outcomes_free(s->kv, done);
		ents += done;
		n -= done;
	}
	return rv;
}

/* ents: borrowed. Outcomes passed to cb are borrowed for the call; cb must not call
 * store_apply (STORE_ERR_INVALID). Skipped entries (index <= applied) get no callback. */
int store_apply(store *s, const raft_entry *ents, size_t n, store_apply_fn cb, void *ctx)
{
	size_t first = 0;
	int rv;

	if (s == NULL || s->kv == NULL || (n > 0 && ents == NULL) || s->kv->applying)
		return STORE_ERR_INVALID;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	while (first < n && ents[first].index <= s->applied_index)
		first++;
	if (first == n)
		return STORE_OK;
	ents += first;
	n -= first;
	rv = kv_check_contiguous(s, ents, n);
	if (rv == STORE_OK)
		rv = kv_reserve(s, n);
	if (rv != STORE_OK)
		return rv;
	s->kv->applying = true;
	rv = kv_apply_all(s, ents, n, cb, ctx);
	s->kv->applying = false;
	return rv;
}

/* The cached stored values, updated only after an apply or install transaction commits. */
uint64_t store_applied_index(store *s)
{
	return s != NULL ? s->applied_index : 0;
}

uint64_t store_applied_term(store *s)
{
	return s != NULL ? s->applied_term : 0;
}

/* ---- reads --------------------------------------------------------------------------------- */

static bool kv_key_arg_valid(const void *key, size_t len)
{
	return len <= COMMAND_MAX_KEY && (len == 0 || key != NULL);
}

/* key: borrowed. On STORE_OK *value is malloc'd and owned by the caller. */
int store_get(store *s, const void *key, size_t key_len, void **value, size_t *len)
{
	bool found;
	int rv;

	if (value != NULL)
		*value = NULL;
	if (len != NULL)
		*len = 0;
	if (s == NULL || s->kv == NULL || value == NULL || len == NULL || key_len == 0 ||
	    !kv_key_arg_valid(key, key_len))
		return STORE_ERR_INVALID;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	rv = kv_read(s, key, key_len, value, len, &found);
	if (rv == STORE_OK && !found)
		return STORE_ERR_NOT_FOUND;
	return rv;
}

static void kv_scan_batch_clear(kv_scan_batch *sb)
{
	for (size_t i = 0; i < sb->n; i++)
		free(sb->row[i].buf);
	free(sb->next);
	sb->n = 0;
	sb->next = NULL;
	sb->next_len = 0;
}

static int kv_scan_copy_row(store *s, sqlite3_stmt *st, kv_scan_batch *sb)
{
	const void *k = sqlite3_column_blob(st, 0);
	size_t kn = (size_t)sqlite3_column_bytes(st, 0);
	const void *v = sqlite3_column_blob(st, 1);
	size_t vn = (size_t)sqlite3_column_bytes(st, 1);
	unsigned char *buf;

	if ((kn > 0 && k == NULL) || (vn > 0 && v == NULL))
		return store_error(s, STORE_ERR_NOMEM, "reading a scanned row");
	buf = malloc(kn + vn + 1);
	if (buf == NULL)
		return store_error(s, STORE_ERR_NOMEM, "copying a scanned row");
	if (kn > 0)
		memcpy(buf, k, kn);
	if (vn > 0)
		memcpy(buf + kn, v, vn);
	sb->row[sb->n].buf = buf;
	sb->row[sb->n].key_len = kn;
	sb->row[sb->n].value_len = vn;
	sb->n++;
	return STORE_OK;
}

/*
 * Reads up to want rows with key >= from (and < end, if end) into sb, plus the key of the row
 * after them into sb->next. The statement is reset before returning, so no read transaction
 * stays open.
 */
static int kv_scan_read(store *s, const void *from, size_t from_len, const void *end,
                        size_t end_len, size_t want, kv_scan_batch *sb)
{
	sqlite3_stmt *st = s->kv->st[end != NULL ? KV_SCAN_END : KV_SCAN];
	size_t bytes = 0;
	bool row = true;
	int rv;

	kv_bind_blob(st, 1, from, from_len);
	if (end != NULL)
		kv_bind_blob(st, 2, end, end_len);
	kv_bind_u64(st, end != NULL ? 3 : 2, (uint64_t)want + 1);
	for (;;) {
		rv = kv_query(s, st, "kv scan", &row);
		if (rv != STORE_OK || !row)
			return rv;
		if (sb->n == want || bytes >= KV_SCAN_BATCH_BYTES)
			break;
		rv = kv_scan_copy_row(s, st, sb);
		if (rv != STORE_OK)
			goto done;
		bytes += sb->row[sb->n - 1].key_len + sb->row[sb->n - 1].value_len;
	}
	rv = kv_column_dup(s, st, 0, &sb->next, &sb->next_len);
done:
	sqlite3_reset(st);
	return rv;
}

/* Delivers sb's rows; true if fn asked to stop. */
static bool kv_scan_deliver(const kv_scan_batch *sb, store_scan_fn fn, void *ctx)
{
	for (size_t i = 0; i < sb->n; i++) {
		const unsigned char *buf = sb->row[i].buf;

		if (fn(ctx, buf, sb->row[i].key_len, buf + sb->row[i].key_len,
		       sb->row[i].value_len) != 0)
			return true;
	}
	return false;
}

/*
 * Scans in batches: each batch is read by one statement (its own implicit read transaction),
 * copied out and reset, and only then handed to fn, so fn runs with no statement or transaction
 * open and may call into the store; a store_apply made from fn shows in later batches.
 * start and end are borrowed. *next is the first key not delivered when the limit cut the scan
 * (malloc'd, owned by the caller), else NULL; fn stopping the scan leaves it NULL.
 */
int store_scan(store *s, const void *start, size_t start_len, const void *end, size_t end_len,
               size_t limit, store_scan_fn fn, void *ctx, void **next, size_t *next_len)
{
	kv_scan_batch sb = {.n = 0};
	void *cursor = NULL;
	size_t cursor_len = 0;
	size_t left = limit;
	bool stop = false;
	int rv = STORE_OK;

	if (next != NULL)
		*next = NULL;
	if (next_len != NULL)
		*next_len = 0;
	if (s == NULL || s->kv == NULL || fn == NULL || !kv_key_arg_valid(start, start_len) ||
	    !kv_key_arg_valid(end, end_len))
		return STORE_ERR_INVALID;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	do {
		size_t want = limit != 0 && left < KV_SCAN_BATCH_ROWS ? left : KV_SCAN_BATCH_ROWS;

		rv = kv_scan_read(s, cursor != NULL ? cursor : start,
		                  cursor != NULL ? cursor_len : start_len, end, end_len, want, &sb);
		if (rv != STORE_OK)
			break;
		stop = kv_scan_deliver(&sb, fn, ctx);
		left -= limit != 0 ? sb.n : 0;
		free(cursor);
		cursor = sb.next;
		cursor_len = sb.next_len;
		sb.next = NULL;
		kv_scan_batch_clear(&sb);
	} while (!stop && cursor != NULL && (limit == 0 || left > 0));
	if (rv == STORE_OK && !stop && cursor != NULL && next != NULL && next_len != NULL) {
		*next = cursor;
		*next_len = cursor_len;
		cursor = NULL;
	}
	kv_scan_batch_clear(&sb);
	free(cursor);
	return rv;
}
