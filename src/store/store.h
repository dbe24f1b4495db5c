/* store.h - one node's SQLite database: raft log, hard state, apply state, kv data, sessions. */
#ifndef RAFTKV_STORE_H
#define RAFTKV_STORE_H

/*
 * Every peer owns one store, `node-<id>.db`, used from the peer's own thread only (the snapshot
 * dump runs on a helper thread of the store, over its own connection). The store:
 *   - implements the core's raft_storage (store_raft_storage());
 *   - persists a Ready in one transaction (store_persist_ready());
 *   - applies committed entries to the kv state machine in one transaction (store_apply());
 *   - garbage-collects the log (store_compact());
 *   - dumps and installs snapshots (store_snapshot_*, store_staging_*).
 *
 * Failure model: any SQLite error on a read or write path fail-stops the store (argument errors
 * such as STORE_ERR_INVALID do not). Every later call returns STORE_ERR_FAILED, store_failed()
 * reports the original cause, and nothing more is written. A transaction is either committed whole
 * or rolled back, so a failed store never holds half a state; reopening after the cause is gone
 * works.
 *
 * Errors are negative and share the core's numbering where they mean the same thing (I/O,
 * corruption, out of memory, invalid argument), so a raft_storage callback can return them as
 * they are. store_strerror() names them; store_errmsg() gives the detail of the last error.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

enum {
	STORE_OK = 0,
	STORE_ERR_IO = RAFT_ERR_IO,           /* SQLite or file I/O failure */
	STORE_ERR_INVALID = RAFT_ERR_INVALID, /* bad argument */
	STORE_ERR_NOMEM = RAFT_ERR_NOMEM,
	STORE_ERR_CORRUPT = RAFT_ERR_CORRUPT, /* the file or a snapshot fails a check */
	STORE_ERR_NOT_OURS = -20,   /* not a RaftKV database (application id, empty file) */
	STORE_ERR_VERSION = -21,    /* a RaftKV database of another schema version */
	STORE_ERR_WRONG_NODE = -22, /* belongs to another cluster id or node id */
	STORE_ERR_FULL = -23,       /* the disk is full (SQLITE_FULL) */
	STORE_ERR_FAILED = -24,     /* the store fail-stopped earlier; see store_failed() */
	STORE_ERR_NOT_FOUND = -25,  /* no such key / no such staging */
};

const char *store_strerror(int rv);

/* How commits reach the disk. */
typedef enum store_sync {
	STORE_SYNC_FULL = 0,   /* fsync at every commit: survives power loss (the default) */
	STORE_SYNC_NORMAL = 1, /* WAL fsync at checkpoint only: survives a process crash; a power
	                          loss may lose the last commits, acknowledged ones included */
	STORE_SYNC_OFF = 2,    /* no fsync at all: a benchmark mode; an OS crash can lose or
	                          corrupt anything */
} store_sync;

typedef struct store_options {
	uint64_t cluster_id; /* must match the file's; chosen when the cluster is created */
	uint64_t node_id;    /* must match the file's; non-zero */
	store_sync sync;     /* STORE_SYNC_FULL by default */
	const char *vfs;     /* SQLite VFS name; NULL for the default (tests: fault VFS) */
	int cache_size_kib;  /* page cache per connection; 0 for the default (16 MiB) */
	/* session_ttl and max_sessions define the replicated state machine: every replica of a
	 * cluster must use the same values, or their states diverge. */
	uint64_t session_ttl;     /* a client session expires after this many log entries without
	                             a request from it; 0 for the default (1,000,000) */
	size_t max_sessions;      /* at most this many live sessions; the least recently used one
	                             expires first; 0 for the default (100,000) */
	uint64_t wal_limit_pages; /* checkpoint when the WAL passes this size; 0: default 4096 */
} store_options;

/* Fills defaults: sync FULL, default VFS, zeros meaning "default" elsewhere. */
void store_options_init(store_options *o);

typedef struct store store;

/*
 * Opens path, creating it if it does not exist. A new file is built as path + ".tmp", synced
 * and renamed into place, so a crash never leaves an empty or half-built database. An existing
 * file is checked (application id, schema version, cluster id, node id, and PRAGMA quick_check,
 * which reads every page: opening costs time in the file's size) and refused without being
 * written to: STORE_ERR_NOT_OURS, STORE_ERR_VERSION,
 * STORE_ERR_WRONG_NODE or STORE_ERR_CORRUPT. On STORE_OK *out is owned by the caller (release
 * with store_close()). On error *out is NULL and errmsg (may be NULL) receives the reason, a
 * NUL-terminated message of at most errmsg_len bytes.
 */
int store_open(const char *path, const store_options *opt, store **out, char *errmsg,
               size_t errmsg_len);

/* Closes the database without any extra flush (a crash-stop looks the same on disk), stops the
 * snapshot helper thread, and frees the store. NULL is fine. */
void store_close(store *s);

/* The detail of the last error, or "" (owned by the store, valid until the next call). */
const char *store_errmsg(store *s);

/* STORE_OK while healthy, else the error that fail-stopped the store. */
int store_failed(store *s);

/* The raft_storage view, for raft_config.storage. Valid while s lives. Its functions return
 * the core's codes (COMPACTED, UNAVAILABLE, SNAPSHOT_TEMPORARILY_UNAVAILABLE) or a STORE_ERR_*
 * failure, which stops the rawnode. Entries are allocated with malloc; see raft.h. */
const raft_storage *store_raft_storage(store *s);

/*
 * Persists rd in one transaction: the snapshot if rd->has_snapshot, then entries (deleting any
 * conflicting suffix first), then the hard state. Commits once; under STORE_SYNC_FULL with an
 * fsync when rd->must_sync or rd carries entries or a snapshot (a commit-only hard state skips
 * it). rd is borrowed.
 * A snapshot's data must be the encoded id of that snapshot (same index and term), its index
 * above the applied index, and its file ready to install: this store's staging of it passed
 * store_staging_finish, or it is a snapshot this store made. A Ready that breaks this, or holds
 * malformed entries or a gap, is STORE_ERR_INVALID with nothing written and the store healthy.
 */
int store_persist_ready(store *s, const raft_ready *rd);

/* ------------------------------------------------------------------------------------------ */
/* The kv state machine                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Command operations carried in RAFT_ENTRY_NORMAL entries (see command.h). */
enum {
	STORE_OP_NOOP = 0,     /* empty entries (a new leader's) and no-ops */
	STORE_OP_REGISTER = 1, /* opens a client session; its result carries the epoch */
	STORE_OP_PUT = 2,
	STORE_OP_DELETE = 3,
	STORE_OP_APPEND = 4, /* appends value to the key's value, creating it if absent */
	STORE_OP_GET = 5,    /* a read through the log */
};

/* Per-command outcome, recorded in the session and returned on retries. */
enum {
	STORE_RESULT_OK = 0,
	STORE_RESULT_NOT_FOUND = 1,       /* GET/DELETE of a missing key */
	STORE_RESULT_SESSION_EXPIRED = 2, /* not applied by this command: the session, or this
	                                     request's recorded result, is gone (expired, evicted,
	                                     below the low watermark, or pushed out of the
	                                     COMMAND_MAX_INFLIGHT window); whether an earlier copy
	                                     of the request was applied is unknown */
	STORE_RESULT_INVALID = 3,         /* malformed command; rejected on every replica alike */
};

/* The outcome of one applied entry, passed to the apply callback. */
typedef struct store_result {
	uint64_t index;     /* log index of the entry */
	uint64_t term;      /* its term */
	uint64_t client_id; /* 0 for entries without a client (no-ops, malformed) */
	uint64_t seq;       /* the client's sequence number */
	int op;             /* STORE_OP_* */
	int status;         /* STORE_RESULT_* */
	const void *value;  /* GET's value, REGISTER's epoch (8 bytes LE); borrowed, valid during
	                       the callback only */
	size_t value_len;
} store_result;

/* Called once per applied entry, in log order, after the transaction that applied it
 * committed. */
typedef void (*store_apply_fn)(void *ctx, const store_result *res);

/*
 * Applies committed entries (borrowed): kv rows, sessions, and the applied index and term.
 * Entries at or below the stored applied index are skipped, so a replay after a crash never
 * applies anything twice. The batch commits in one transaction, or in several when the values
 * held for the callbacks (GET results) pass a few MiB, so memory stays bounded whatever the
 * batch: each transaction covers a run of consecutive entries and stores the applied index of
 * its last one, atomically, and its callbacks run right after its commit, before the next
 * transaction begins. Under STORE_SYNC_FULL the commits skip their fsync: the durable log
 * replays anything lost, and WAL ordering keeps data and applied index together.
 * cb may be NULL; it must not call store_apply (STORE_ERR_INVALID). If it moves the applied
 * index itself (a snapshot install), the rest of the batch is STORE_ERR_INVALID. Skipped
 * entries get no callback. A gap after the applied index is STORE_ERR_INVALID without a
 * fail-stop. On an error, transactions committed before it stay, with their callbacks made;
 * store_applied_index() tells how far the batch got. An APPEND whose result would exceed
 * COMMAND_MAX_VALUE gives STORE_RESULT_INVALID and changes nothing.
 */
int store_apply(store *s, const raft_entry *ents, size_t n, store_apply_fn cb, void *ctx);

/* The stored applied index and its term. */
uint64_t store_applied_index(store *s);
uint64_t store_applied_term(store *s);

/* Reads key from the local state machine. On STORE_OK *value (malloc'd, owned by the caller)
 * holds *len bytes; STORE_ERR_NOT_FOUND if absent. */
int store_get(store *s, const void *key, size_t key_len, void **value, size_t *len);

/* Calls fn for each key in [start, end) in memcmp order (end NULL: no upper bound), at most
 * limit keys (0: no limit). fn returns non-zero to stop. Keys and values are borrowed for the
 * call. *next (malloc'd, may be NULL) receives the first key not delivered when the limit cut
 * the scan; it is NULL when the range ran out or fn stopped the scan. Rows are read in batches
 * with no statement open during fn, so a long scan is not one snapshot of the data. */
typedef int (*store_scan_fn)(void *ctx, const void *key, size_t key_len, const void *value,
                             size_t value_len);
int store_scan(store *s, const void *start, size_t start_len, const void *end, size_t end_len,
               size_t limit, store_scan_fn fn, void *ctx, void **next, size_t *next_len);

/* ------------------------------------------------------------------------------------------ */
/* Log GC                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/*
 * Deletes log rows up to and including index, at most `chunk` rows (0: default 10,000) in one
 * transaction per call, and records the truncated index and term in the same transaction.
 * *more (may be NULL) is set when rows up to index remain: the caller calls again later, so a
 * large GC never stalls the write path for long. The commit skips its fsync (a crash can only
 * bring back rows that are still valid). Refuses (STORE_ERR_INVALID) to pass the applied or the
 * last index; RAFT_ERR_COMPACTED if index is at or below the truncated index. Neither
 * fail-stops.
 */
int store_compact(store *s, uint64_t index, size_t chunk, bool *more);

/*
 * Records the cluster's membership (apply_state.conf_state) in its own synced transaction;
 * initial_state() reports it from then on. Called once when a cluster is created, since
 * membership is fixed in this version; snapshots carry it to followers, which ignore a snapshot
 * that does not name them. cs is borrowed; at most RAFT_MAX_VOTERS ids, non-zero and strictly
 * increasing, else STORE_ERR_INVALID (no fail-stop).
 */
int store_set_conf_state(store *s, const raft_conf_state *cs);

/* Checkpoints the WAL by its size (wal_limit_pages): nothing below a quarter of the limit; a
 * PASSIVE checkpoint above it; at the limit a TRUNCATE one, unless a snapshot dump holds a read
 * transaction (then PASSIVE, and the WAL grows until the dump ends). SQLite's autocheckpoint is
 * off: the WAL stays bounded only if the node calls this between Readies. */
int store_maybe_checkpoint(store *s);

/* ------------------------------------------------------------------------------------------ */
/* Snapshots                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/*
 * A snapshot id: what raft_snapshot.data carries between peers. The data itself lives in a
 * file and moves separately, in chunks.
 */
typedef struct store_snapshot_id {
	uint64_t node_id; /* the node that made it */
	uint64_t index;   /* applied index it captures */
	uint64_t term;    /* term of that index */
	uint64_t nonce;   /* distinguishes two snapshots of one node at one index (restarts) */
} store_snapshot_id;
#define STORE_SNAPSHOT_ID_SIZE 32
/* A NULL id encodes as 32 zero bytes (node id 0, which decode refuses); a NULL out is a
 * no-op. */
void store_snapshot_id_encode(const store_snapshot_id *id, unsigned char out[32]);
int store_snapshot_id_decode(const void *buf, size_t len, store_snapshot_id *id);

/* Directory for snapshot and staging files (the cluster directory). Set once after open. */
int store_set_snapshot_dir(store *s, const char *dir);

/*
 * The raft_storage snapshot() callback's work: if a finished snapshot file at or above the
 * truncated index exists (the log holds every entry after it), fills *out (data = encoded
 * store_snapshot_id, owned by the caller) and returns STORE_OK; otherwise starts a dump on the
 * helper thread (if none runs) and returns RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE. The dump
 * reads applied index, term and conf state and the kv and session tables inside one read
 * transaction on its own connection, writes `snap-<node>-<index>` with a checksum through a bounded
 * buffer, then ends the transaction. While no membership is recorded (conf state with no
 * voters: store_set_conf_state() was never called and no snapshot was installed) it returns
 * STORE_ERR_INVALID, without a fail-stop and without dumping: a follower ignores a snapshot
 * whose membership does not name it.
 */
int store_snapshot_request(store *s, raft_snapshot *out);

/*
 * Waits until no snapshot dump is running (the one in progress, if any, has finished or failed),
 * up to timeout_ms. STORE_OK, or RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE on timeout. Any
 * thread that owns the store (the store's owner thread). The dump thread signals its end, so
 * this blocks without polling and returns as soon as the dump ends. It does not take the
 * dump's outcome: the next store_snapshot_request() (or store_snapshot_latest_index()) does,
 * and a failed dump fail-stops the store there. STORE_OK at once when no dump was started (or
 * its outcome was already taken), also on a failed store; STORE_ERR_INVALID if s is NULL.
 */
int store_snapshot_wait(store *s, unsigned timeout_ms);

/* Index of the newest snapshot finished since this store was opened, or 0. Log GC should not
 * compact past it while a follower may still need the entries after it. Takes the outcome of
 * a dump that has ended, as store_snapshot_request() would (a failed dump fail-stops). */
uint64_t store_snapshot_latest_index(store *s);

/* Path (malloc'd, owned by the caller) and size of a finished snapshot file, for the sender. */
int store_snapshot_path(store *s, const store_snapshot_id *id, char **path, uint64_t *size);

/* Deletes snapshot files other than the newest finished one and those named in keep. */
void store_snapshot_gc(store *s, const store_snapshot_id *keep, size_t n_keep);

/*
 * Staging of a snapshot being received. One staging per store at a time: beginning any other
 * snapshot discards the current staging if it is unfinished (the transfer layer decides which
 * transfer wins). A staging that passed store_staging_finish() is kept for the Ready that may
 * name it: beginning or finishing another id is STORE_ERR_INVALID (no fail-stop) while the
 * finished one is above the applied index, until it is installed (store_persist_ready) or
 * dropped with store_staging_discard(); one at or below the applied index is superseded and
 * deleted. "Finished" lasts while the store is open: after a restart call finish again. Chunks
 * are written durably (fsync) at their offset and must arrive in order;
 * store_staging_offset() tells where to resume after a restart.
 */
int store_staging_begin(store *s, const store_snapshot_id *id);
int store_staging_write(store *s, const store_snapshot_id *id, uint64_t offset, const void *buf,
                        size_t len);
/* The staged length for id, or 0 if there is no staging for id. */
uint64_t store_staging_offset(store *s, const store_snapshot_id *id);
/* Verifies the complete staged file (checksum, metadata, record sizes within the command
 * limits). STORE_ERR_CORRUPT, without a fail-stop, if it fails. */
int store_staging_finish(store *s, const store_snapshot_id *id);
/* The metadata in the header of id's staging (index, term and membership; index and term are
 * the id's, which finish checked against the header), once it passed store_staging_finish:
 * the receiver compares it with the SNAPSHOT message before stepping it. STORE_ERR_NOT_FOUND
 * if id's staging is not finished (none, failed, discarded, or the store reopened since). *meta
 * is the caller's. */
int store_staging_meta(store *s, const store_snapshot_id *id, raft_snapshot_metadata *meta);
/* Drops the staging for id (raft ignored or superseded it). */
void store_staging_discard(store *s, const store_snapshot_id *id);

#endif /* RAFTKV_STORE_H */
