/* log.c - the raft log in SQLite: raft_storage callbacks, Ready persistence, log GC, term cache. */
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

/* Terms of the most recent entries kept in memory; a power of two. */
#define LOG_TERM_RING     4096
#define LOG_DEFAULT_CHUNK 10000

/*
 * The log module's statements (owned, finalized by store_log_close) and its term cache.
 * Invariant: ring[i % LOG_TERM_RING] is the term of entry i for every i in
 * [ring_lo, s->last_index]; s->truncated_index < ring_lo <= s->last_index + 1 and
 * s->last_index - ring_lo < LOG_TERM_RING. The range is empty when ring_lo == last_index + 1.
 */
struct store_log {
	sqlite3_stmt *select_range; /* idx, term, type, data of rows in [?1, ?2), by idx */
	sqlite3_stmt *select_term;  /* term of row ?1 */
	sqlite3_stmt *insert;       /* (idx, term, type, data) */
	sqlite3_stmt *delete_from;  /* rows with idx >= ?1 (a conflicting suffix) */
	sqlite3_stmt *delete_upto;  /* rows with idx <= ?1 (GC) */
	sqlite3_stmt *delete_all;   /* every row (a snapshot replaced the log) */
	sqlite3_stmt *save_hard;    /* hard_state = (?1, ?2, ?3) */
	sqlite3_stmt *save_trunc;   /* apply_state truncated index, term = ?1, ?2 */
	uint64_t term_reads;        /* terms read from SQLite (cache misses), for tests */
	uint64_t ring_lo;
	uint64_t ring[LOG_TERM_RING];
};

static void bind_u64(sqlite3_stmt *stmt, int col, uint64_t v)
{
	sqlite3_bind_int64(stmt, col, (sqlite3_int64)v);
}

static uint64_t column_u64(sqlite3_stmt *stmt, int col)
{
	return (uint64_t)sqlite3_column_int64(stmt, col);
}

/* Steps a statement that returns no rows, then resets it. */
static int log_run(store *s, sqlite3_stmt *stmt, const char *what)
{
	int rc = sqlite3_step(stmt);

	sqlite3_reset(stmt);
	if (rc != SQLITE_DONE)
		return store_sqlite_error(s, rc, what);
	return STORE_OK;
}

/* ---- the term cache ---- */

static void ring_put(struct store_log *l, uint64_t index, uint64_t term)
{
	l->ring[index & (LOG_TERM_RING - 1)] = term;
}

/* The lowest index the cache can hold: the last LOG_TERM_RING entries above the truncated
 * index. */
static uint64_t ring_floor(const store *s)
{
	uint64_t lo = s->truncated_index + 1;

	if (s->last_index >= LOG_TERM_RING && s->last_index - LOG_TERM_RING + 1 > lo)
		lo = s->last_index - LOG_TERM_RING + 1;
	return lo;
}

/* Drops cached terms that fall out of the window below last or below the truncated index. */
static void ring_trim(store *s)
{
	uint64_t lo = ring_floor(s);

	if (s->log->ring_lo < lo)
		s->log->ring_lo = lo;
}

/* Reads the term of entry i (truncated < i <= last) from SQLite. */
static int log_read_term(store *s, uint64_t i, uint64_t *term)
{
	sqlite3_stmt *stmt = s->log->select_term;
	int rc;

	s->log->term_reads++;
	bind_u64(stmt, 1, i);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		*term = column_u64(stmt, 0);
	sqlite3_reset(stmt);
	if (rc == SQLITE_DONE)
		return store_error(s, STORE_ERR_CORRUPT, "log row %llu is missing",
		                   (unsigned long long)i);
	if (rc != SQLITE_ROW)
		return store_sqlite_error(s, rc, "read term");
	return STORE_OK;
}

uint64_t store_log_term_reads(store *s)
{
	return s != NULL && s->log != NULL ? s->log->term_reads : 0;
}

/* Term of entry i for truncated <= i <= last, from the caches when possible. */
static int log_term_at(store *s, uint64_t i, uint64_t *term)
{
	if (i == s->truncated_index) {
		*term = s->truncated_term;
		return STORE_OK;
	}
	if (i >= s->log->ring_lo) {
		*term = s->log->ring[i & (LOG_TERM_RING - 1)];
		return STORE_OK;
	}
	return log_read_term(s, i, term);
}

/* ---- raft_storage callbacks; ctx is the store ---- */

/* hs, cs: written by value from the caches. */
static int log_initial_state(void *ctx, raft_hard_state *hs, raft_conf_state *cs)
{
	store *s = ctx;

	if (s == NULL || hs == NULL || cs == NULL)
		return STORE_ERR_INVALID;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	*hs = s->hard_state;
	*cs = s->conf_state;
	return STORE_OK;
}

/* Copies the current row of select_range into *e; e->data is malloc'd (NULL when empty). */
static int log_row_entry(store *s, sqlite3_stmt *stmt, raft_entry *e)
{
	const void *blob = sqlite3_column_blob(stmt, 3);
	size_t len = (size_t)sqlite3_column_bytes(stmt, 3);

	e->index = column_u64(stmt, 0);
	e->term = column_u64(stmt, 1);
	e->type = sqlite3_column_int(stmt, 2);
	e->data = NULL;
	e->len = 0;
	if (len == 0)
		return STORE_OK;
	if (blob == NULL)
		return store_error(s, STORE_ERR_NOMEM, "read entry %llu: out of memory",
		                   (unsigned long long)e->index);
	e->data = malloc(len);
	if (e->data == NULL)
		return store_error(s, STORE_ERR_NOMEM, "read entry: out of memory");
	memcpy(e->data, blob, len);
	e->len = len;
	return STORE_OK;
}

/* Grows *arr to hold at least need entries. */
static int log_reserve(store *s, raft_entry **arr, size_t *cap, size_t need, size_t max)
{
	raft_entry *grown;
	size_t next = *cap == 0 ? 16 : *cap * 2;

	if (need <= *cap)
		return STORE_OK;
	if (next > max)
		next = max;
	grown = realloc(*arr, next * sizeof(**arr));
	if (grown == NULL)
		return store_error(s, STORE_ERR_NOMEM, "read entries: out of memory");
	*arr = grown;
	*cap = next;
	return STORE_OK;
}

/* Reads rows [lo, hi) into a new array, stopping before max_size bytes of payload (but after
 * at least one entry). On STORE_OK the caller owns *out. */
static int log_read_range(store *s, uint64_t lo, uint64_t hi, uint64_t max_size, raft_entry **out,
                          size_t *n)
{
	sqlite3_stmt *stmt = s->log->select_range;
	raft_entry *arr = NULL;
	size_t cap = 0, count = 0;
	uint64_t total = 0;
	int rv = STORE_OK, rc;

	bind_u64(stmt, 1, lo);
	bind_u64(stmt, 2, hi);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		uint64_t len = (uint64_t)sqlite3_column_bytes(stmt, 3);

		if (count > 0 && (len > max_size || total > max_size - len))
			break;
		if (column_u64(stmt, 0) != lo + count) {
			rv = store_error(s, STORE_ERR_CORRUPT, "log row %llu is missing",
			                 (unsigned long long)(lo + count));
			goto cleanup;
		}
		rv = log_reserve(s, &arr, &cap, count + 1, (size_t)(hi - lo));
		if (rv != STORE_OK)
			goto cleanup;
		rv = log_row_entry(s, stmt, &arr[count]);
		if (rv != STORE_OK)
			goto cleanup;
		total += len;
		count++;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		rv = store_sqlite_error(s, rc, "read entries");
		goto cleanup;
	}
	if (rc == SQLITE_DONE && lo + count != hi) {
		rv = store_error(s, STORE_ERR_CORRUPT, "log row %llu is missing",
		                 (unsigned long long)(lo + count));
		goto cleanup;
	}
	sqlite3_reset(stmt);
	*out = arr;
	*n = count;
	return STORE_OK;

cleanup:
	sqlite3_reset(stmt);
	raft_entries_free(arr, count);
	return rv;
}

/*
 * On STORE_OK *out is a new malloc'd array of *n entries with malloc'd data, owned by the
 * caller (raft_entries_free()); NULL with *n 0 when lo == hi. On error *out is NULL, *n 0.
 */
static int log_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_size, raft_entry **out,
                       size_t *n)
{
	store *s = ctx;

	if (out == NULL || n == NULL)
		return STORE_ERR_INVALID;
	*out = NULL;
	*n = 0;
	if (s == NULL)
		return STORE_ERR_INVALID;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	if (lo <= s->truncated_index)
		return RAFT_ERR_COMPACTED;
	if (hi > 0 && hi - 1 > s->last_index)
		return RAFT_ERR_UNAVAILABLE;
	if (lo > hi)
		return STORE_ERR_INVALID;
	if (lo == hi)
		return STORE_OK;
	return log_read_range(s, lo, hi, max_size, out, n);
}

static int log_term(void *ctx, uint64_t i, uint64_t *term)
{
	store *s = ctx;

	if (s == NULL || term == NULL)
		return STORE_ERR_INVALID;
	*term = 0;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	if (i < s->truncated_index)
		return RAFT_ERR_COMPACTED;
	if (i > s->last_index)
		return RAFT_ERR_UNAVAILABLE;
	return log_term_at(s, i, term);
}

static int log_first_index(void *ctx, uint64_t *index)
{
	store *s = ctx;

	if (s == NULL || index == NULL)
		return STORE_ERR_INVALID;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	*index = s->truncated_index + 1;
	return STORE_OK;
}

static int log_last_index(void *ctx, uint64_t *index)
{
	store *s = ctx;

	if (s == NULL || index == NULL)
		return STORE_ERR_INVALID;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	*index = s->last_index;
	return STORE_OK;
}

/* On STORE_OK the caller owns out->data (raft_snapshot_clear()). */
static int log_snapshot(void *ctx, raft_snapshot *out)
{
	store *s = ctx;

	if (s == NULL || out == NULL)
		return STORE_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	return store_snapshot_request(s, out);
}

/* ---- init / load ---- */

static int log_prepare_all(store *s)
{
	struct store_log *l = s->log;
	const struct {
		sqlite3_stmt **stmt;
		const char *sql;
	} list[] = {
	    {&l->select_range, "SELECT idx, term, type, data FROM raft_log WHERE idx >= ?1 AND "
	                       "idx < ?2 ORDER BY idx"},
	    {&l->select_term, "SELECT term FROM raft_log WHERE idx = ?1"},
	    {&l->insert, "INSERT INTO raft_log (idx, term, type, data) VALUES (?1, ?2, ?3, ?4)"},
	    {&l->delete_from, "DELETE FROM raft_log WHERE idx >= ?1"},
	    {&l->delete_upto, "DELETE FROM raft_log WHERE idx <= ?1"},
	    {&l->delete_all, "DELETE FROM raft_log"},
	    {&l->save_hard,
	     "UPDATE hard_state SET term = ?1, vote = ?2, commit_index = ?3 WHERE id = 1"},
	    {&l->save_trunc,
	     "UPDATE apply_state SET truncated_index = ?1, truncated_term = ?2 WHERE id = 1"},
	};

	for (size_t k = 0; k < sizeof(list) / sizeof(list[0]); k++) {
		int rv = store_prepare(s, list[k].sql, list[k].stmt);

		if (rv != STORE_OK)
			return rv;
	}
	return STORE_OK;
}

/* Allocates s->log, prepares its statements and fills s->iface. On error the caller still
 * calls store_log_close(). */
int store_log_init(store *s)
{
	s->log = calloc(1, sizeof(*s->log));
	if (s->log == NULL)
		return store_error(s, STORE_ERR_NOMEM, "out of memory");
	s->iface.ctx = s;
	s->iface.initial_state = log_initial_state;
	s->iface.entries = log_entries;
	s->iface.term = log_term;
	s->iface.first_index = log_first_index;
	s->iface.last_index = log_last_index;
	s->iface.snapshot = log_snapshot;
	return log_prepare_all(s);
}

void store_log_close(store *s)
{
	struct store_log *l = s->log;

	if (l == NULL)
		return;
	sqlite3_finalize(l->select_range);
	sqlite3_finalize(l->select_term);
	sqlite3_finalize(l->insert);
	sqlite3_finalize(l->delete_from);
	sqlite3_finalize(l->delete_upto);
	sqlite3_finalize(l->delete_all);
	sqlite3_finalize(l->save_hard);
	sqlite3_finalize(l->save_trunc);
	free(l);
	s->log = NULL;
}

/* Runs a one-off query on s->db and hands its single row to fn; no row is STORE_ERR_CORRUPT. */
static int load_row(store *s, const char *sql, int (*fn)(store *s, sqlite3_stmt *stmt))
{
	sqlite3_stmt *stmt = NULL;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
	int rv;

	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		rv = fn(s, stmt);
	else if (rc == SQLITE_DONE)
		rv = store_error(s, STORE_ERR_CORRUPT, "no row: %s", sql);
	else
		rv = store_sqlite_error(s, rc, sql);
	sqlite3_finalize(stmt);
	return rv;
}

static int load_hard_state(store *s, sqlite3_stmt *stmt)
{
	s->hard_state.term = column_u64(stmt, 0);
	s->hard_state.vote = column_u64(stmt, 1);
	s->hard_state.commit = column_u64(stmt, 2);
	return STORE_OK;
}

static int load_apply_state(store *s, sqlite3_stmt *stmt)
{
	s->applied_index = column_u64(stmt, 0);
	s->applied_term = column_u64(stmt, 1);
	s->truncated_index = column_u64(stmt, 2);
	s->truncated_term = column_u64(stmt, 3);
	if (store_conf_decode(sqlite3_column_blob(stmt, 4), (size_t)sqlite3_column_bytes(stmt, 4),
	                      &s->conf_state) != STORE_OK)
		return store_error(s, STORE_ERR_CORRUPT, "apply_state.conf_state is malformed");
	if (s->truncated_index > s->applied_index)
		return store_error(s, STORE_ERR_CORRUPT, "truncated index %llu above applied %llu",
		                   (unsigned long long)s->truncated_index,
		                   (unsigned long long)s->applied_index);
	return STORE_OK;
}

/* Min and max idx of raft_log (each an O(log n) lookup); the log must start right after the
 * truncated index. */
static int load_bounds(store *s, sqlite3_stmt *stmt)
{
	uint64_t lo, hi;

	if (sqlite3_column_type(stmt, 0) == SQLITE_NULL) {
		s->last_index = s->truncated_index;
		return STORE_OK;
	}
	lo = column_u64(stmt, 0);
	hi = column_u64(stmt, 1);
	if (lo != s->truncated_index + 1 || hi < lo)
		return store_error(s, STORE_ERR_CORRUPT,
		                   "log rows [%llu, %llu] do not follow the truncated index %llu",
		                   (unsigned long long)lo, (unsigned long long)hi,
		                   (unsigned long long)s->truncated_index);
	s->last_index = hi;
	return STORE_OK;
}

/* Fills the term cache with the terms of the last LOG_TERM_RING entries (fewer when the log
 * is shorter), so term() after a reopen answers from memory like before it. */
static int load_ring(store *s)
{
	struct store_log *l = s->log;
	sqlite3_stmt *stmt = NULL;
	uint64_t next = ring_floor(s);
	int rc;

	l->ring_lo = s->last_index + 1;
	rc = sqlite3_prepare_v2(s->db,
	                        "SELECT idx, term FROM raft_log WHERE idx >= ?1 AND idx <= ?2 "
	                        "ORDER BY idx",
	                        -1, &stmt, NULL);
	if (rc == SQLITE_OK) {
		bind_u64(stmt, 1, next);
		bind_u64(stmt, 2, s->last_index);
		while ((rc = sqlite3_step(stmt)) == SQLITE_ROW && column_u64(stmt, 0) == next)
			ring_put(l, next++, column_u64(stmt, 1));
	}
	sqlite3_finalize(stmt);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return store_sqlite_error(s, rc, "load terms");
	if (next != s->last_index + 1)
		return store_error(s, STORE_ERR_CORRUPT, "log row %llu is missing",
		                   (unsigned long long)next);
	l->ring_lo = ring_floor(s);
	return STORE_OK;
}

int store_log_load(store *s)
{
	int rv;

	rv = load_row(s, "SELECT term, vote, commit_index FROM hard_state WHERE id = 1",
	              load_hard_state);
	if (rv == STORE_OK)
		rv =
		    load_row(s,
		             "SELECT applied_index, applied_term, truncated_index, truncated_term, "
		             "conf_state FROM apply_state WHERE id = 1",
		             load_apply_state);
	if (rv == STORE_OK)
		rv = load_row(s,
		              "SELECT (SELECT min(idx) FROM raft_log), (SELECT max(idx) FROM "
		              "raft_log)",
		              load_bounds);
	if (rv == STORE_OK)
		rv = load_ring(s);
	return rv;
}

/* ---- persisting a Ready ---- */

/*
 * Checks rd against the log it will land on (base_trunc, base_last: the truncated and last
 * index once any snapshot in rd is installed) and sets *ents, *n to the entries to write: those
 * at or below base_trunc are already compacted and skipped, as the memory storage does.
 */
static int persist_check(store *s, const raft_ready *rd, uint64_t base_trunc, uint64_t base_last,
                         const raft_entry **ents, size_t *n)
{
	size_t skip = 0;

	*ents = NULL;
	*n = 0;
	if (rd->n_entries > 0 && rd->entries == NULL)
		return store_error(s, STORE_ERR_INVALID, "persist: NULL entries");
	for (size_t k = 0; k < rd->n_entries; k++) {
		const raft_entry *e = &rd->entries[k];

		if ((e->len > 0 && e->data == NULL) || e->len > INT32_MAX ||
		    (k > 0 && e->index != rd->entries[k - 1].index + 1) || e->index == 0)
			return store_error(s, STORE_ERR_INVALID, "persist: bad entry at %zu", k);
		if (e->index <= base_trunc)
			skip = k + 1;
	}
	if (skip == rd->n_entries)
		return STORE_OK;
	if (rd->entries[skip].index > base_last + 1)
		return store_error(
		    s, STORE_ERR_INVALID, "persist: entry %llu leaves a gap after %llu",
		    (unsigned long long)rd->entries[skip].index, (unsigned long long)base_last);
	*ents = rd->entries + skip;
	*n = rd->n_entries - skip;
	return STORE_OK;
}

/* Checks rd's snapshot before anything is written, so that a Ready the store cannot install
 * is STORE_ERR_INVALID with the store healthy rather than a failed transaction. */
static int persist_check_snapshot(store *s, const raft_snapshot *snap)
{
	const raft_snapshot_metadata *m = &snap->metadata;
	store_snapshot_id id;

	if (m->index == UINT64_MAX || m->conf_state.n_voters > RAFT_MAX_VOTERS)
		return store_error(s, STORE_ERR_INVALID, "persist: bad snapshot metadata");
	if (store_snapshot_id_decode(snap->data, snap->len, &id) != STORE_OK ||
	    id.index != m->index || id.term != m->term)
		return store_error(s, STORE_ERR_INVALID,
		                   "persist: snapshot data is not the id of %llu/%llu",
		                   (unsigned long long)m->index, (unsigned long long)m->term);
	if (m->index <= s->applied_index || m->index <= s->truncated_index)
		return store_error(s, STORE_ERR_INVALID,
		                   "persist: snapshot at %llu is not above the applied index %llu",
		                   (unsigned long long)m->index,
		                   (unsigned long long)s->applied_index);
	if (!store_snap_is_ready(s, &id))
		return store_error(s, STORE_ERR_INVALID,
		                   "persist: no finished staging for snapshot %llu/%llu",
		                   (unsigned long long)m->index, (unsigned long long)m->term);
	return STORE_OK;
}

/* Installs the snapshot's state and drops the whole log: raft replaces its log with the
 * snapshot, and rows above it must not resurface after a restart. */
static int persist_snapshot(store *s, const raft_snapshot *snap)
{
	int rv = store_snap_install_in_txn(s, snap);

	if (rv != STORE_OK)
		return rv;
	return log_run(s, s->log->delete_all, "delete log");
}

static int persist_entries(store *s, const raft_entry *ents, size_t n, uint64_t base_last)
{
	struct store_log *l = s->log;
	int rv;

	if (ents[0].index <= base_last) {
		bind_u64(l->delete_from, 1, ents[0].index);
		rv = log_run(s, l->delete_from, "delete conflicting entries");
		if (rv != STORE_OK)
			return rv;
	}
	for (size_t k = 0; k < n; k++) {
		bind_u64(l->insert, 1, ents[k].index);
		bind_u64(l->insert, 2, ents[k].term);
		sqlite3_bind_int(l->insert, 3, ents[k].type);
		sqlite3_bind_blob(l->insert, 4, ents[k].data, (int)ents[k].len, SQLITE_STATIC);
		rv = log_run(s, l->insert, "insert entry");
		if (rv != STORE_OK)
			return rv;
	}
	return STORE_OK;
}

static int persist_hard_state(store *s, const raft_hard_state *hs)
{
	sqlite3_stmt *stmt = s->log->save_hard;

	bind_u64(stmt, 1, hs->term);
	bind_u64(stmt, 2, hs->vote);
	bind_u64(stmt, 3, hs->commit);
	return log_run(s, stmt, "save hard state");
}

/* After the commit: the caches follow what is now durable. */
static void persist_cache(store *s, const raft_ready *rd, const raft_entry *ents, size_t n)
{
	struct store_log *l = s->log;

	if (rd->has_snapshot) {
		const raft_snapshot_metadata *m = &rd->snapshot.metadata;

		s->truncated_index = m->index;
		s->truncated_term = m->term;
		s->applied_index = m->index;
		s->applied_term = m->term;
		s->last_index = m->index;
		s->conf_state = m->conf_state;
		l->ring_lo = m->index + 1;
	}
	if (n > 0) {
		if (l->ring_lo > ents[0].index)
			l->ring_lo = ents[0].index;
		for (size_t k = 0; k < n; k++)
			ring_put(l, ents[k].index, ents[k].term);
		s->last_index = ents[n - 1].index;
		ring_trim(s);
	}
	if (rd->has_hard_state)
		s->hard_state = rd->hard_state;
}

/* The writes of one Ready inside the open transaction. */
static int persist_writes(store *s, const raft_ready *rd, const raft_entry *ents, size_t n,
                          uint64_t base_last)
{
	int rv = STORE_OK;

	if (rd->has_snapshot)
		rv = persist_snapshot(s, &rd->snapshot);
	if (rv == STORE_OK && n > 0)
		rv = persist_entries(s, ents, n, base_last);
	if (rv == STORE_OK && rd->has_hard_state)
		rv = persist_hard_state(s, &rd->hard_state);
	return rv;
}

/* rd: borrowed. A malformed Ready is STORE_ERR_INVALID with nothing written and the store
 * healthy; any failure once the transaction began rolls back and fail-stops. */
int store_persist_ready(store *s, const raft_ready *rd)
{
	uint64_t base_trunc, base_last;
	const raft_entry *ents;
	size_t n;
	bool sync;
	int rv;

	if (s == NULL || rd == NULL)
		return STORE_ERR_INVALID;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	if (rd->has_snapshot) {
		rv = persist_check_snapshot(s, &rd->snapshot);
		if (rv != STORE_OK)
			return rv;
	}
	base_trunc = rd->has_snapshot ? rd->snapshot.metadata.index : s->truncated_index;
	base_last = rd->has_snapshot ? rd->snapshot.metadata.index : s->last_index;
	rv = persist_check(s, rd, base_trunc, base_last, &ents, &n);
	if (rv != STORE_OK)
		return rv;
	if (!rd->has_snapshot && n == 0 && !rd->has_hard_state)
		return STORE_OK;

	sync = rd->must_sync || rd->has_snapshot || n > 0;
	rv = store_begin(s, sync);
	if (rv == STORE_OK)
		rv = persist_writes(s, rd, ents, n, base_last);
	if (rv == STORE_OK)
		rv = store_commit(s);
	if (rv != STORE_OK) {
		store_rollback(s);
		if (s->failed == STORE_OK)
			s->failed = rv;
		return rv;
	}
	persist_cache(s, rd, ents, n);
	if (rd->has_snapshot)
		store_snap_installed(s, &rd->snapshot);
	return STORE_OK;
}

/* ---- log GC ---- */

/* Deletes rows up to upto and records (upto, its term) as the truncated point, in one
 * transaction. The term is read before the row goes. The commit skips its fsync: losing it in
 * a crash only brings back rows that are still valid, and truncated index and rows stay
 * together in one transaction. */
static int compact_chunk(store *s, uint64_t upto)
{
	struct store_log *l = s->log;
	uint64_t term;
	int rv;

	rv = log_term_at(s, upto, &term);
	if (rv != STORE_OK)
		return rv;
	rv = store_begin(s, false);
	if (rv != STORE_OK)
		return rv;
	bind_u64(l->delete_upto, 1, upto);
	rv = log_run(s, l->delete_upto, "delete compacted entries");
	if (rv == STORE_OK) {
		bind_u64(l->save_trunc, 1, upto);
		bind_u64(l->save_trunc, 2, term);
		rv = log_run(s, l->save_trunc, "save truncated index");
	}
	if (rv == STORE_OK)
		rv = store_commit(s);
	if (rv != STORE_OK) {
		store_rollback(s);
		return rv;
	}
	s->truncated_index = upto;
	s->truncated_term = term;
	ring_trim(s);
	return STORE_OK;
}

/* One chunk per call: the caller's thread is held for one transaction of at most chunk rows. */
int store_compact(store *s, uint64_t index, size_t chunk, bool *more)
{
	uint64_t upto = index;
	int rv;

	if (more != NULL)
		*more = false;
	if (s == NULL)
		return STORE_ERR_INVALID;
	if (s->failed != STORE_OK)
		return STORE_ERR_FAILED;
	if (index <= s->truncated_index)
		return store_error(s, RAFT_ERR_COMPACTED, "compact %llu: already compacted to %llu",
		                   (unsigned long long)index,
		                   (unsigned long long)s->truncated_index);
	if (index > s->applied_index || index > s->last_index)
		return store_error(s, STORE_ERR_INVALID,
		                   "compact %llu: beyond the applied index %llu or last index %llu",
		                   (unsigned long long)index, (unsigned long long)s->applied_index,
		                   (unsigned long long)s->last_index);
	if (chunk == 0)
		chunk = LOG_DEFAULT_CHUNK;
	if (index - s->truncated_index > chunk)
		upto = s->truncated_index + chunk;
	rv = compact_chunk(s, upto);
	if (rv == STORE_OK && more != NULL)
		*more = s->truncated_index < index;
	return rv;
}
