/* store_internal.h - the store's private layout, schema, and the contracts between its modules. */
#ifndef RAFTKV_STORE_INTERNAL_H
#define RAFTKV_STORE_INTERNAL_H

#include <sqlite3.h>

#include "store/store.h"

/*
 * Modules (one file per concern):
 *   store.c     open/create/validate, pragmas, transactions, fail-stop, errors, checkpoints
 *   log.c       the raft_storage callbacks, store_persist_ready, store_compact, term cache
 *   kv.c        store_apply (kv rows, sessions, applied index), store_get, store_scan
 *   command.c   the versioned encoding of kv commands (command.h)
 *   snapshot.c  the dump (helper thread, own connection), file format, staging, install
 *
 * Each module keeps its prepared statements in its own struct, allocated by its _init and freed
 * by its _close, so modules never touch each other's statements.
 */

#define STORE_APPLICATION_ID 0x52664b56 /* "RfKV" */
#define STORE_SCHEMA_VERSION 1

/* The schema of version 1, executed inside the creation transaction of a new file. Integers
 * that hold uint64 values (ids, indexes, terms) are stored as their int64 bit pattern. */
#define STORE_SCHEMA_SQL                                                                           \
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"           \
	"CREATE TABLE hard_state(id INTEGER PRIMARY KEY CHECK (id = 1), term INTEGER NOT NULL,"    \
	" vote INTEGER NOT NULL, commit_index INTEGER NOT NULL);"                                  \
	"INSERT INTO hard_state VALUES (1, 0, 0, 0);"                                              \
	"CREATE TABLE raft_log(idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,"                    \
	" type INTEGER NOT NULL, data BLOB);"                                                      \
	"CREATE TABLE apply_state(id INTEGER PRIMARY KEY CHECK (id = 1),"                          \
	" applied_index INTEGER NOT NULL, applied_term INTEGER NOT NULL,"                          \
	" truncated_index INTEGER NOT NULL, truncated_term INTEGER NOT NULL,"                      \
	" conf_state BLOB NOT NULL);"                                                              \
	"INSERT INTO apply_state VALUES (1, 0, 0, 0, 0, x'00');"                                   \
	"CREATE TABLE kv(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;"                \
	"CREATE TABLE sessions(client_id INTEGER PRIMARY KEY, epoch INTEGER NOT NULL,"             \
	" last_index INTEGER NOT NULL, low_seq INTEGER NOT NULL);"                                 \
	"CREATE INDEX sessions_by_last ON sessions(last_index);"                                   \
	"CREATE TABLE session_results(client_id INTEGER NOT NULL, seq INTEGER NOT NULL,"           \
	" status INTEGER NOT NULL, value BLOB, PRIMARY KEY (client_id, seq)) WITHOUT ROWID;"

struct store_conn; /* store.c */
struct store_log;  /* log.c */
struct store_kv;   /* kv.c */
struct store_snap; /* snapshot.c */

/*
 * Invariants (all as of the last committed transaction):
 *   truncated_index <= applied_index <= commit (hard state) <= last_index, except that a
 *   freshly installed snapshot sets truncated = applied = its index;
 *   every raft_log row has idx in (truncated_index, last_index], contiguous;
 *   kv and sessions reflect exactly the entries up to applied_index.
 */
struct store {
	sqlite3 *db;        /* the node's connection; used on the owner thread only */
	char *path;         /* owned */
	store_options opt;  /* vfs string owned (copied) */
	int failed;         /* STORE_OK, or the error that fail-stopped the store */
	char errmsg[512];   /* detail of the last error */
	raft_storage iface; /* iface.ctx == this store */

	/* Cached durable state, updated only after a transaction commits. */
	raft_hard_state hard_state;
	raft_conf_state conf_state;
	uint64_t truncated_index;
	uint64_t truncated_term;
	uint64_t last_index;
	uint64_t applied_index;
	uint64_t applied_term;

	struct store_conn *conn; /* store.c: transaction statements, sync level, WAL size */
	struct store_log *log;
	struct store_kv *kv;
	struct store_snap *snap;
};

/* ---- store.c ---- */

/* Records a failure: sets errmsg from fmt and, for anything but STORE_ERR_INVALID /
 * STORE_ERR_NOT_FOUND / RAFT_ERR_COMPACTED, fail-stops the store. Returns the code given. */
int store_error(store *s, int rv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Maps a SQLite result code to a STORE_ERR_* code (SQLITE_FULL -> STORE_ERR_FULL, SQLITE_CORRUPT
 * and SQLITE_NOTADB -> STORE_ERR_CORRUPT, SQLITE_NOMEM -> STORE_ERR_NOMEM, else STORE_ERR_IO),
 * records sqlite3_errmsg and fail-stops. `what` names the operation. */
int store_sqlite_error(store *s, int rc, const char *what);
/* BEGIN IMMEDIATE; when sync is false under STORE_SYNC_FULL, the commit skips its fsync. */
int store_begin(store *s, bool sync);
/* COMMIT, restoring the connection's configured synchronous level afterwards. */
int store_commit(store *s);
/* ROLLBACK after a failure; never fails louder than the original error. */
void store_rollback(store *s);
/* Prepares sql on s->db into *stmt. */
int store_prepare(store *s, const char *sql, sqlite3_stmt **stmt);
/* Encodes / decodes a conf state for apply_state.conf_state: u8 count, then count u64 LE. */
size_t store_conf_encode(const raft_conf_state *cs, unsigned char *buf, size_t cap);
int store_conf_decode(const void *buf, size_t len, raft_conf_state *cs);

/* ---- log.c ---- */
int store_log_init(store *s);
void store_log_close(store *s);
/* Loads the cached durable state (hard state, apply state, last index, recent terms) from the
 * database. */
int store_log_load(store *s);
/* Terms term() had to read from SQLite since open (the term cache missed); for tests. */
uint64_t store_log_term_reads(store *s);

/* ---- kv.c ---- */
int store_kv_init(store *s);
void store_kv_close(store *s);

/* ---- snapshot.c ---- */
int store_snap_init(store *s);
void store_snap_close(store *s); /* joins the dump thread */
/* True while a dump holds its read transaction (checkpoints must wait). */
bool store_snap_dump_running(store *s);
/*
 * Inside persist_ready's open transaction: replaces kv, sessions and session_results with the
 * staged snapshot named by snap->data, and sets apply_state (applied and truncated index and
 * term = the snapshot's, conf state). Does not touch raft_log or hard_state and does not
 * commit. On error the caller rolls back.
 */
int store_snap_install_in_txn(store *s, const raft_snapshot *snap);
/* After that transaction committed: removes the staging file and updates caches it owns. */
void store_snap_installed(store *s, const raft_snapshot *snap);
/*
 * Whether store_snap_install_in_txn has a verified file for id (borrowed): a staging of id that
 * passed store_staging_finish since the store was opened (and is still there), or, when there
 * is no staging of id, a finished snapshot file this store made itself. Touches no file; for
 * checking a Ready's snapshot before its transaction begins.
 */
bool store_snap_is_ready(store *s, const store_snapshot_id *id);

/* ---- crc32c.c ---- */
uint32_t store_crc32c(uint32_t crc, const void *buf, size_t len);

#endif /* RAFTKV_STORE_INTERNAL_H */
