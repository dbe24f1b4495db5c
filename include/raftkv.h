/* raftkv.h - the embedding API of RaftKV: a replicated in-process key-value store. */
#ifndef RAFTKV_H
#define RAFTKV_H

/*
 * A RaftKV handle is a cluster of N peers (3 by default) inside this process. Each peer is one
 * thread with its own Raft state and its own SQLite database, `node-<id>.db`, in the cluster
 * directory. Peers talk through an in-process router that can inject faults. Every operation
 * below is linearizable and may be called from any number of threads at once.
 *
 *	raftkv_options opts;
 *	raftkv *kv;
 *	char err[256];
 *	raftkv_options_init(&opts);
 *	if (raftkv_open("/var/lib/mykv", &opts, &kv, err, sizeof err) != RAFTKV_OK)
 *		die(err);
 *	raftkv_put(kv, "k", 1, "v", 1);
 *	void *v; size_t n;
 *	if (raftkv_get(kv, "k", 1, &v, &n) == RAFTKV_OK)
 *		raftkv_free(v);
 *	raftkv_close(kv);
 *
 * Outcomes. RAFTKV_INVALID, RAFTKV_BUSY and RAFTKV_CLOSED are returned before anything was sent:
 * the operation did not happen. Once a request has been sent, every failure is RAFTKV_TIMEOUT:
 * the outcome is unknown (a retry that ran out of time, a leader change, a stopped node, or a
 * close). A write that returned RAFTKV_OK is durable on a majority of the peers (under
 * RAFTKV_SYNC_FULL, against power loss).
 *
 * Exactly-once writes. Each write carries a client id (a random 64-bit value, unique across
 * reopen) and a sequence number. The client library retries a write, with the same id and
 * number, at the leader a follower names, or at the next peer after a timeout; the replicated
 * client sessions (Raft dissertation §6.3) apply it at most once.
 *
 * Memory. Every buffer the library returns (values, continuation keys) was allocated by it and
 * is freed with raftkv_free(). Keys and values passed in are borrowed for the call and copied.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes: RAFTKV_OK or a negative error. raftkv_strerror() names them. */
enum {
	RAFTKV_OK = 0,
	RAFTKV_NOT_FOUND = -1,       /* get: no such key; delete: the key was absent */
	RAFTKV_TIMEOUT = -2,         /* sent, but no answer in time: outcome unknown */
	RAFTKV_INVALID = -3,         /* bad argument; nothing happened */
	RAFTKV_BUSY = -4,            /* a queue is full; nothing happened; retry later */
	RAFTKV_CLOSED = -5,          /* the handle is closing; nothing happened */
	RAFTKV_IO = -6,              /* an I/O error (open, a node's database) */
	RAFTKV_CORRUPT = -7,         /* a database or cluster file fails its checks */
	RAFTKV_NOMEM = -8,           /* out of memory */
	RAFTKV_SESSION_EXPIRED = -9, /* the write's client session had expired when it reached the
	                                log: this copy was not applied, but an earlier copy of the
	                                same request (a retry) may have been, so the outcome is
	                                unknown, as with RAFTKV_TIMEOUT */
};

/* A static, NUL-terminated name for rv ("unknown error" for anything else). */
const char *raftkv_strerror(int rv);

/* Limits, checked before anything is sent (RAFTKV_INVALID). */
#define RAFTKV_MAX_KEY   4096u      /* bytes; keys are 1..RAFTKV_MAX_KEY bytes */
#define RAFTKV_MAX_VALUE (1u << 20) /* bytes; also the limit on a value grown by append */
#define RAFTKV_MAX_NODES 7u         /* nodes per cluster */

/* How a node's commits reach the disk. */
typedef enum raftkv_sync {
	RAFTKV_SYNC_FULL = 0,   /* fsync on every commit of log entries: survives power loss */
	RAFTKV_SYNC_NORMAL = 1, /* fsync at WAL checkpoints only: survives a process crash; a power
	                           loss may lose acknowledged writes */
	RAFTKV_SYNC_OFF = 2,    /* never fsync: for benchmarks and tests; an OS crash may lose or
	                           corrupt anything */
} raftkv_sync;

/* Parameters of a cluster. Fill with raftkv_options_init(), then change what you need. */
typedef struct raftkv_options {
	/* Peers in the cluster, 1..RAFTKV_MAX_NODES (default 3). Fixed at creation: reopening a
	 * directory with another count is RAFTKV_INVALID. */
	size_t n_nodes;
	/* Length of one Raft tick in milliseconds (default 10). 0 selects manual ticking: no tick
	 * happens until raftkv_tick() is called (deterministic tests, sanitizer runs). */
	unsigned tick_ms;
	/* Ticks without a leader before a follower campaigns (default 100: 1 s, drawn at random
	 * from [1 s, 2 s)). It must stay far above the p99 of an fsync on a shared disk (tens of
	 * milliseconds), or a slow commit looks like a dead leader and starts an election storm.
	 * Must exceed heartbeat_ticks. */
	unsigned election_ticks;
	/* Ticks between a leader's heartbeats (default 10: 100 ms). */
	unsigned heartbeat_ticks;
	/* Durability of every node's database (default RAFTKV_SYNC_FULL). */
	raftkv_sync sync;
	/* How long a blocking operation may take, in milliseconds, retries included (default
	 * 5000). */
	unsigned request_timeout_ms;
	/* Log GC, decided by each node for itself: compact when applied - first_index >=
	 * gc_threshold (default 10,000), towards applied - gc_trailing (default 1,000;
	 * < gc_threshold), never past the applied index. A leader keeps the entries that a
	 * recently active follower, or a follower being sent a snapshot, still needs, unless
	 * applied - first_index reaches gc_hard_limit (default 2 * gc_threshold; in
	 * [gc_threshold, 2 * gc_threshold]): then it compacts anyway and that follower catches up
	 * by snapshot. Each pass deletes at most 10,000 log rows plus the entries applied since
	 * the previous pass, so the bound is
	 *	applied - truncated <= gc_hard_limit <= 2 * gc_threshold
	 * on every running node after each of its Readies; it therefore holds 0 ticks after a
	 * workload stops (a node restarted with a longer log needs one tick per 10,000 excess
	 * entries). Changing these on reopen is allowed. */
	uint64_t gc_threshold;
	uint64_t gc_trailing;
	uint64_t gc_hard_limit;
	/* Snapshot transfer: a lagging follower gets the leader's snapshot file in chunks of
	 * snapshot_chunk_size bytes (default 256 KiB: big enough to amortise the receiver's
	 * fsync and ack per chunk, small enough that window x chunk is a few MiB), with at most
	 * snapshot_window unacknowledged chunks per transfer (default 8), at most
	 * snapshot_max_concurrent outgoing transfers per node (default 2; more wait their turn),
	 * and at most snapshot_rate_limit bytes per second per node (default 0: no limit; a
	 * token bucket refilled every tick, a tick counting 10 ms under manual ticking). Memory
	 * per transfer is bounded by window x chunk size on each side, whatever the data size
	 * (the window is counted by the sender: after a resend, stale copies still in transit
	 * can make the bytes on the wire a few x window x chunk size for a moment). Lost or
	 * corrupt chunks are resent from the last acknowledged offset. After a power loss (not a
	 * process crash) a follower's partly received snapshot may end in unsynced bytes; its
	 * checksum then fails when complete and the snapshot is transferred again from the
	 * start. */
	size_t snapshot_chunk_size;
	unsigned snapshot_window;
	unsigned snapshot_max_concurrent;
	uint64_t snapshot_rate_limit;
	/* Slots in each node's mailbox, a power of two (default 4096). A full mailbox answers
	 * clients with RAFTKV_BUSY and drops Raft messages. */
	size_t mailbox_capacity;
	/* Asynchronous requests in flight per handle, at most (default 4096); more are
	 * RAFTKV_BUSY. Blocking calls count too. */
	size_t max_inflight;
	/* Seed of every PRNG in the cluster: election timeouts, router faults, retry jitter
	 * (default 0 derives one from the clock; tests pass theirs and print it). */
	uint64_t seed;
	/* SQLite VFS name for every node's database, or NULL for the default (tests use a
	 * fault-injecting VFS). */
	const char *vfs;
	/* Optional: called with one human-readable line per notable Raft event of any node, from
	 * that node's thread. NULL for silence. */
	void (*trace)(void *ctx, uint64_t node_id, const char *line);
	void *trace_ctx;
} raftkv_options;

/* Fills *opts with the defaults documented above. */
void raftkv_options_init(raftkv_options *opts);

typedef struct raftkv raftkv;

/*
 * Creates the cluster in dir (which must exist), or reopens the cluster found there, and starts
 * every node. A new cluster gets a random cluster id, recorded in `raftkv.cluster` and in every
 * node's database, so a database from another cluster or in another node's place is refused
 * (RAFTKV_CORRUPT). The directory is locked (flock on `raftkv.lock`) while the handle lives: a
 * second open of it, in this process or another, is RAFTKV_BUSY. opts is borrowed (NULL:
 * defaults). On RAFTKV_OK *out is the caller's; release
 * it with raftkv_close(). On error *out is NULL and errmsg (may be NULL) receives a
 * NUL-terminated reason of at most errmsg_len bytes. RAFTKV_INVALID for bad options or another
 * node count than the directory's.
 */
int raftkv_open(const char *dir, const raftkv_options *opts, raftkv **out, char *errmsg,
                size_t errmsg_len);

/*
 * Stops every thread and frees the handle. Calls in flight return at once: RAFTKV_CLOSED if
 * their request had not been sent yet, RAFTKV_TIMEOUT (outcome unknown) if it had; pending
 * asynchronous callbacks are called the same way before raftkv_close returns. Nothing is
 * flushed beyond what was already committed. Using kv after this call starts is undefined
 * (calls made while it runs return RAFTKV_CLOSED). NULL is a no-op.
 */
void raftkv_close(raftkv *kv);

/* Frees a buffer returned by the library. NULL is fine. */
void raftkv_free(void *p);

/* ------------------------------------------------------------------------------------------ */
/* Operations: blocking, linearizable, thread-safe                                            */
/* ------------------------------------------------------------------------------------------ */

/* key = value. */
int raftkv_put(raftkv *kv, const void *key, size_t key_len, const void *value, size_t value_len);

/* Reads key through the leader's ReadIndex (no log write). On RAFTKV_OK *value (raftkv_free)
 * holds *value_len bytes (NULL when 0). RAFTKV_NOT_FOUND when absent. */
int raftkv_get(raftkv *kv, const void *key, size_t key_len, void **value, size_t *value_len);

/* Removes key. RAFTKV_OK if it existed, RAFTKV_NOT_FOUND if it did not (it is absent either
 * way). */
int raftkv_delete(raftkv *kv, const void *key, size_t key_len);

/* key = key's value followed by value (value alone if key is absent), like Redis's APPEND.
 * RAFTKV_INVALID, with nothing changed, if the result would pass RAFTKV_MAX_VALUE. */
int raftkv_append(raftkv *kv, const void *key, size_t key_len, const void *value, size_t value_len);

/* Called by raftkv_scan once per key, on the caller's thread, with no lock or SQLite
 * transaction held. key and value are borrowed for the call. Return non-zero to stop. */
typedef int (*raftkv_scan_fn)(void *ctx, const void *key, size_t key_len, const void *value,
                              size_t value_len);

/*
 * Calls fn for the keys in [start, end) in memcmp order (end_len 0: no upper bound; start_len
 * 0: from the first key), at most limit keys (0: as many as one answer carries, up to 1,000 keys
 * or 4 MiB). Every key delivered comes from one read at one log index, which is linearizable.
 * *next and *next_len (both may be NULL) receive the continuation: the first key not delivered
 * when the limit cut the scan (raftkv_free it), or NULL when the range ran out or fn stopped.
 * Scanning on from *next is a new read at a later index. Errors as for raftkv_get; fn is
 * called only on RAFTKV_OK.
 */
int raftkv_scan(raftkv *kv, const void *start, size_t start_len, const void *end, size_t end_len,
                size_t limit, raftkv_scan_fn fn, void *ctx, void **next, size_t *next_len);

/* ------------------------------------------------------------------------------------------ */
/* Asynchronous operations (for benchmarks)                                                   */
/* ------------------------------------------------------------------------------------------ */

/*
 * The completion of an asynchronous operation: status as for the blocking call; for a get,
 * value (borrowed for the call; NULL when absent or empty) and value_len. The callback runs on
 * a library thread (a peer thread, the ticker thread, or the thread inside raftkv_close). It
 * must not block. It may start other asynchronous operations and call raftkv_node_status,
 * raftkv_leader, raftkv_tick, raftkv_free and raftkv_strerror; it must not call the blocking
 * operations, raftkv_wait_leader, raftkv_transfer_leader, raftkv_node_stop, raftkv_node_start
 * or raftkv_close (they wait for threads that may be waiting for the callback to return). The
 * trace hook has the same rules. Each accepted operation gets exactly one callback.
 */
typedef void (*raftkv_done_fn)(void *ctx, int status, const void *value, size_t value_len);

/* As the blocking calls, but return at once: RAFTKV_OK when the operation was accepted (the
 * callback will follow), or RAFTKV_INVALID / RAFTKV_BUSY (max_inflight reached) /
 * RAFTKV_CLOSED with no callback. */
int raftkv_put_async(raftkv *kv, const void *key, size_t key_len, const void *value,
                     size_t value_len, raftkv_done_fn done, void *ctx);
int raftkv_get_async(raftkv *kv, const void *key, size_t key_len, raftkv_done_fn done, void *ctx);
int raftkv_delete_async(raftkv *kv, const void *key, size_t key_len, raftkv_done_fn done,
                        void *ctx);
int raftkv_append_async(raftkv *kv, const void *key, size_t key_len, const void *value,
                        size_t value_len, raftkv_done_fn done, void *ctx);

/* ------------------------------------------------------------------------------------------ */
/* Status and control                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Roles in raftkv_status. */
enum {
	RAFTKV_ROLE_FOLLOWER = 0,
	RAFTKV_ROLE_PRE_CANDIDATE = 1,
	RAFTKV_ROLE_CANDIDATE = 2,
	RAFTKV_ROLE_LEADER = 3,
	RAFTKV_ROLE_STOPPED = 4, /* the node is stopped (raftkv_node_stop) */
};

/* A consistent-enough picture of one node, as of its last handled Ready. */
typedef struct raftkv_status {
	uint64_t id;
	int role;             /* RAFTKV_ROLE_* */
	uint64_t term;        /* current term */
	uint64_t leader;      /* the leader it knows, 0 for none */
	uint64_t commit;      /* commit index */
	uint64_t applied;     /* applied index */
	uint64_t first_index; /* first log index still stored */
	uint64_t last_index;  /* last log index */
	size_t mailbox_depth; /* items queued in its mailbox */
	uint64_t proposals;   /* writes it proposed as leader */
	uint64_t reads;       /* ReadIndex reads it answered */
	uint64_t fsyncs;      /* Ready transactions it committed with an fsync */
	uint64_t snapshots_sent;
	uint64_t snapshots_received;
	uint64_t snapshot_bytes_sent;
	uint64_t snapshot_bytes_received;
	int failed;        /* RAFTKV_OK, or the error that fail-stopped the node (RAFTKV_IO...) */
	char failure[128]; /* the reason when failed, else "" */
} raftkv_status;

/* Fills *out for node id (1..n_nodes). RAFTKV_INVALID for an unknown id or NULL. */
int raftkv_node_status(raftkv *kv, uint64_t id, raftkv_status *out);

/* The id of a running node that is leader in the highest term any running node knows, or 0. */
uint64_t raftkv_leader(raftkv *kv);

/* Waits until some running node is leader, up to timeout_ms. RAFTKV_OK with *id set (may be
 * NULL), RAFTKV_TIMEOUT, RAFTKV_CLOSED when the handle starts closing meanwhile, or
 * RAFTKV_INVALID for a NULL kv. */
int raftkv_wait_leader(raftkv *kv, unsigned timeout_ms, uint64_t *id);

/* Asks the leader to hand leadership to node id, and waits up to the request timeout for it to
 * happen: RAFTKV_OK, RAFTKV_TIMEOUT, RAFTKV_INVALID (unknown or stopped id), RAFTKV_CLOSED. */
int raftkv_transfer_leader(raftkv *kv, uint64_t id);

/* Adds n ticks to every running node (the only source of ticks when tick_ms is 0). n is capped
 * at election_ticks per call; a node runs at most that many pending ticks between two
 * Readies. */
int raftkv_tick(raftkv *kv, unsigned n);

/* ------------------------------------------------------------------------------------------ */
/* Faults                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/*
 * Crash-stops node id: its thread ends, its memory state is dropped, its database is closed
 * without any flush, and it receives nothing until started again. Requests it held end as
 * unknown for their clients, which retry elsewhere. RAFTKV_INVALID for an unknown id;
 * stopping a stopped node is RAFTKV_OK.
 */
int raftkv_node_stop(raftkv *kv, uint64_t id);

/* Restarts a stopped node from its database alone. Errors of opening the database are
 * returned (RAFTKV_IO, RAFTKV_CORRUPT); starting a running node is RAFTKV_OK. */
int raftkv_node_start(raftkv *kv, uint64_t id);

/* Network faults, applied to Raft messages between nodes (clients reach every running node).
 * Splits the nodes in ids[0..n) from the others: no message crosses. Replaces any partition. */
int raftkv_partition(raftkv *kv, const uint64_t *ids, size_t n);
/* Cuts node id off from every other node. */
int raftkv_isolate(raftkv *kv, uint64_t id);
/* Removes partitions and isolation, and every rate set below. */
int raftkv_heal(raftkv *kv);
/* Drops this share of messages (0.0 .. 1.0) on every link; client requests included. */
int raftkv_set_drop_rate(raftkv *kv, double rate);
/* Drops this share of the messages from node `from` to node `to` (directional). */
int raftkv_set_link_drop_rate(raftkv *kv, uint64_t from, uint64_t to, double rate);
/* Delays every Raft message by a uniform random time in [min_ms, max_ms] (0, 0: none), so
 * messages also overtake one another. */
int raftkv_set_delay(raftkv *kv, unsigned min_ms, unsigned max_ms);
/* Delivers this share of messages twice; client requests included. */
int raftkv_set_duplicate_rate(raftkv *kv, double rate);
/* Holds back this share of Raft messages for up to max_ms, so later ones overtake them. */
int raftkv_set_reorder(raftkv *kv, double rate, unsigned max_ms);
/* Flips one byte in this share of snapshot chunks (0.0 .. 1.0) without fixing their checksum;
 * the receiver detects it and the chunk is resent. Cleared by raftkv_heal. */
int raftkv_set_snapshot_corrupt_rate(raftkv *kv, double rate);

#ifdef __cplusplus
}
#endif

#endif /* RAFTKV_H */
