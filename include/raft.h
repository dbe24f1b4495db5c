/* raft.h - RaftKV's consensus core: a deterministic Raft state machine driven as a RawNode. */
#ifndef RAFT_H
#define RAFT_H

/*
 * The core does no I/O, reads no clock, starts no thread and keeps no global state. The
 * application drives it with three inputs and consumes one output:
 *
 *   raft_rawnode_tick()     once per tick of the application's clock;
 *   raft_rawnode_step()     for every message received from a peer;
 *   raft_rawnode_propose()  for new data;
 *
 *   raft_rawnode_ready()    what to persist, send and apply, then raft_rawnode_advance().
 *
 * Memory conventions, used everywhere below:
 *   - Every buffer this library hands to the caller was allocated with malloc().
 *   - "borrowed" means the callee reads the pointer during the call only; the caller keeps it.
 *   - A raft_entry owns its data; a raft_message owns its entries array and the snapshot data.
 *   - Entries arrays and messages are released with raft_entries_free() and
 *     raft_message_free(); a snapshot's data with raft_snapshot_clear().
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Status codes. Every function that can fail returns RAFT_OK or one of these. */
enum {
	RAFT_OK = 0,
	/* Storage: the requested index is at or below the compaction point. */
	RAFT_ERR_COMPACTED = -1,
	/* Storage: the requested index is above the last index. */
	RAFT_ERR_UNAVAILABLE = -2,
	/* Storage: a snapshot is being prepared; the leader will ask again later. */
	RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE = -3,
	/* Storage: a snapshot or compaction request is older than what storage already has. */
	RAFT_ERR_SNAP_OUT_OF_DATE = -4,
	/* The proposal was not accepted: no leader, transfer pending, or the size bound hit. */
	RAFT_ERR_PROPOSAL_DROPPED = -5,
	/* Storage failed (I/O, full disk). The rawnode stops; every later call returns
	 * RAFT_ERR_STOPPED so a broken node can never write a half state. */
	RAFT_ERR_IO = -6,
	/* A call with a bad argument (NULL, unknown peer, too many peers). */
	RAFT_ERR_INVALID = -7,
	/* malloc() failed. The rawnode stops, as with RAFT_ERR_IO. */
	RAFT_ERR_NOMEM = -8,
	/* The rawnode hit a fatal error earlier and refuses further work. */
	RAFT_ERR_STOPPED = -9,
	/* Bytes that are not a valid encoded message (raft_message_decode), or a stored state or
	 * peer message that breaks a protocol invariant, such as a commit beyond the log; in the
	 * latter case the node stops rather than corrupt its log. */
	RAFT_ERR_CORRUPT = -10,
};

/* A static, human-readable description of a status code. Never NULL. */
const char *raft_strerror(int rv);

/* ------------------------------------------------------------------------------------------ */
/* Log entries, state, snapshots                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Terms and indexes at or above this are refused in messages, so `+ 1` never wraps and every
 * value fits SQLite's signed 64-bit integers. */
#define RAFT_MAX_INDEX ((uint64_t)INT64_MAX)

/* The largest cluster the core supports. Membership is fixed-size so that conf states and
 * snapshot metadata can be copied by value. */
#define RAFT_MAX_VOTERS 16

/* Entry types. */
enum {
	RAFT_ENTRY_NORMAL = 0,      /* application data (or the empty entry of a new leader) */
	RAFT_ENTRY_CONF_CHANGE = 1, /* a membership change; RaftKV rejects them for now */
};

/* One log entry. */
typedef struct raft_entry {
	int type;       /* RAFT_ENTRY_NORMAL or RAFT_ENTRY_CONF_CHANGE */
	uint64_t term;  /* term of the leader that created the entry */
	uint64_t index; /* position in the log, 1-based */
	void *data;     /* payload, owned by the entry; NULL when len == 0 */
	size_t len;     /* payload size in bytes */
} raft_entry;

/* The state that must be on stable storage before messages that depend on it are sent. */
typedef struct raft_hard_state {
	uint64_t term;   /* current term (§5.1) */
	uint64_t vote;   /* candidate voted for in term, 0 for none (§5.2) */
	uint64_t commit; /* highest index known to be committed */
} raft_hard_state;

/* Cluster membership: the ids of the voters, ascending, without duplicates. */
typedef struct raft_conf_state {
	uint64_t voters[RAFT_MAX_VOTERS]; /* voter ids; node ids are 1-based */
	size_t n_voters;                  /* number of valid ids in voters */
} raft_conf_state;

/* What a snapshot stands for: the log up to (index, term) and the membership at that point. */
typedef struct raft_snapshot_metadata {
	raft_conf_state conf_state; /* membership as of index */
	uint64_t index;             /* last log index the snapshot covers */
	uint64_t term;              /* term of the entry at index */
} raft_snapshot_metadata;

/* A snapshot: metadata plus opaque application data (in RaftKV, a snapshot id). An index of 0
 * means "no snapshot". */
typedef struct raft_snapshot {
	raft_snapshot_metadata metadata; /* see raft_snapshot_metadata */
	void *data;                      /* opaque payload, owned by the struct; may be NULL */
	size_t len;                      /* payload size in bytes */
} raft_snapshot;

/* Frees each entry's data and then the array itself (allocated with malloc). NULL is fine. */
void raft_entries_free(raft_entry *entries, size_t n);

/* Frees snap->data and zeroes *snap. The struct itself stays the caller's. NULL is fine. */
void raft_snapshot_clear(raft_snapshot *snap);

/* Deep-copies src into *dst (data duplicated). On error *dst is zeroed.
 * Returns RAFT_OK or RAFT_ERR_NOMEM. */
int raft_snapshot_copy(raft_snapshot *dst, const raft_snapshot *src);

/* ------------------------------------------------------------------------------------------ */
/* Messages                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Message types. HUP, BEAT and PROPOSE are local inputs; HUP and BEAT never leave the node. */
enum {
	RAFT_MSG_HUP = 0,             /* local: start an election */
	RAFT_MSG_BEAT = 1,            /* local: a leader broadcasts heartbeats */
	RAFT_MSG_PROPOSE = 2,         /* new entries; forwarded by followers */
	RAFT_MSG_APPEND = 3,          /* leader -> follower: entries after (index, log_term) */
	RAFT_MSG_APPEND_RESPONSE = 4, /* follower -> leader: ack of index, or reject + hint */
	RAFT_MSG_REQUEST_VOTE = 5,    /* candidate -> voter, with last (index, log_term) */
	RAFT_MSG_REQUEST_VOTE_RESPONSE = 6, /* voter -> candidate: reject = false means granted */
	RAFT_MSG_SNAPSHOT = 7,              /* leader -> follower: install snapshot */
	RAFT_MSG_HEARTBEAT = 8,             /* leader -> follower: liveness and commit */
	RAFT_MSG_HEARTBEAT_RESPONSE = 9,    /* follower -> leader */
	RAFT_MSG_TRANSFER_LEADER = 10,      /* local or forwarded: hand leadership to `from` */
	RAFT_MSG_TIMEOUT_NOW = 11,          /* leader -> transferee: campaign now */
	RAFT_MSG_PRE_VOTE = 12,             /* pre-candidate -> voter, for term + 1 (§9.6) */
	RAFT_MSG_PRE_VOTE_RESPONSE = 13,    /* voter -> pre-candidate */
	RAFT_MSG_READ_INDEX = 14,           /* a linearizable read request (§6.4) */
	RAFT_MSG_READ_INDEX_RESPONSE = 15,  /* leader -> follower: index for a forwarded read */
	RAFT_MSG_TYPE_COUNT = 16            /* number of message types; not a type */
};

/* The `context` value that marks a vote request as part of a leadership transfer, so that voters
 * holding a leader lease still answer it. */
#define RAFT_CONTEXT_TRANSFER UINT64_C(0x5452414e53464552) /* "TRANSFER" */

/* A Raft message. Which fields mean something depends on type; unused fields are zero. */
typedef struct raft_message {
	int type;               /* RAFT_MSG_* */
	uint64_t to;            /* recipient id */
	uint64_t from;          /* sender id */
	uint64_t term;          /* sender's term; 0 for local messages */
	uint64_t log_term;      /* APPEND: term at index; votes: candidate's last term */
	uint64_t index;         /* APPEND: index preceding entries; votes: last index; responses:
	                           the acknowledged or rejected index */
	raft_entry *entries;    /* APPEND and PROPOSE payload, owned by the message */
	size_t n_entries;       /* number of entries */
	uint64_t commit;        /* leader's commit index (APPEND, HEARTBEAT, SNAPSHOT) */
	raft_snapshot snapshot; /* SNAPSHOT: metadata and data, data owned by the message */
	bool reject;            /* responses: true when the request was refused */
	uint64_t reject_hint;   /* APPEND_RESPONSE reject: the follower's best guess of a match */
	uint64_t context; /* RAFT_CONTEXT_TRANSFER on transfer votes; read id for READ_INDEX */
} raft_message;

/* Releases everything the message owns (entries, snapshot data), not the struct itself, and
 * zeroes it. NULL is fine. */
void raft_message_free(raft_message *m);

/* Deep-copies src into *dst. On error *dst is zeroed. Returns RAFT_OK or RAFT_ERR_NOMEM. */
int raft_message_clone(raft_message *dst, const raft_message *src);

/* The exact number of bytes raft_message_encode() writes for m. */
size_t raft_message_encoded_size(const raft_message *m);

/*
 * Serializes m into a newly allocated buffer. On success *buf (owned by the caller, release
 * with free()) holds *len bytes. The format is little-endian, versioned and length-checked.
 * Returns RAFT_OK, RAFT_ERR_INVALID (NULL argument, unknown type) or RAFT_ERR_NOMEM.
 */
int raft_message_encode(const raft_message *m, void **buf, size_t *len);

/*
 * Parses len bytes at buf into *m. Never trusts the input: any truncation, overflow, unknown
 * type, oversized count or trailing byte returns RAFT_ERR_CORRUPT. On success *m owns its
 * allocations (release with raft_message_free()); on error *m is zeroed and owns nothing.
 */
int raft_message_decode(const void *buf, size_t len, raft_message *m);

/* A static name for a message type ("APPEND"), or "UNKNOWN". */
const char *raft_message_type_name(int type);

/* ------------------------------------------------------------------------------------------ */
/* Storage interface                                                                          */
/* ------------------------------------------------------------------------------------------ */

/*
 * The durable log, read by the core. The core only reads through this interface; the
 * application writes to its storage itself when it handles a Ready. Functions are called only
 * on the thread that owns the rawnode, and return RAFT_OK or an error:
 *   RAFT_ERR_COMPACTED, RAFT_ERR_UNAVAILABLE, RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE where
 *   documented, and RAFT_ERR_IO (or any other code) for a failure, which stops the rawnode.
 * The struct is borrowed by raft_config and must outlive the rawnode.
 */
typedef struct raft_storage {
	void *ctx; /* passed as the first argument of every function */

	/* The saved hard state and membership. A fresh storage returns zeros. */
	int (*initial_state)(void *ctx, raft_hard_state *hs, raft_conf_state *cs);

	/*
	 * Entries in [lo, hi), cut so their total payload stays within max_size, but always at
	 * least one entry when lo < hi. On RAFT_OK, *out is a new malloc'd array of *n entries,
	 * each with malloc'd data; the caller owns it and frees it with raft_entries_free().
	 * RAFT_ERR_COMPACTED if lo <= the compaction index, RAFT_ERR_UNAVAILABLE if hi > last+1.
	 */
	int (*entries)(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_size, raft_entry **out,
	               size_t *n);

	/* Term of entry i, for i in [first_index - 1, last_index]. RAFT_ERR_COMPACTED below that
	 * range, RAFT_ERR_UNAVAILABLE above it. */
	int (*term)(void *ctx, uint64_t i, uint64_t *term);

	/* Index of the first entry that may still be read (compaction index + 1). */
	int (*first_index)(void *ctx, uint64_t *index);

	/* Index of the last entry (the compaction index when the log is empty). */
	int (*last_index)(void *ctx, uint64_t *index);

	/* The most recent snapshot. On RAFT_OK, *out is filled and the caller owns out->data
	 * (release with raft_snapshot_clear()). May return
	 * RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE while one is being built. */
	int (*snapshot)(void *ctx, raft_snapshot *out);
} raft_storage;

/* ------------------------------------------------------------------------------------------ */
/* Memory storage                                                                             */
/* ------------------------------------------------------------------------------------------ */

/*
 * An in-memory raft_storage, in the manner of etcd's MemoryStorage: entry 0 of its array is a
 * dummy holding the (index, term) of the compaction point, so term(first_index - 1) is known.
 * Not thread-safe; used by tests, the simulator and the micro-benchmark.
 */
typedef struct raft_memory_storage raft_memory_storage;

/* Creates an empty storage (compaction point (0, 0)). Owned by the caller; release with
 * raft_memory_storage_free(). Returns NULL when out of memory. */
raft_memory_storage *raft_memory_storage_new(void);

/* Frees the storage and everything it holds. NULL is fine. */
void raft_memory_storage_free(raft_memory_storage *ms);

/* The raft_storage view of ms, for raft_config.storage. Valid while ms lives. */
const raft_storage *raft_memory_storage_interface(raft_memory_storage *ms);

/*
 * Appends entries (copied; the array stays the caller's). Entries at or below the compaction
 * point are skipped; an entry that overlaps the existing log truncates it from there.
 * Entries must be contiguous and must not leave a gap after the last index
 * (RAFT_ERR_INVALID). Returns RAFT_OK, RAFT_ERR_INVALID or RAFT_ERR_NOMEM.
 */
int raft_memory_storage_append(raft_memory_storage *ms, const raft_entry *entries, size_t n);

/* Saves the hard state. */
int raft_memory_storage_set_hard_state(raft_memory_storage *ms, const raft_hard_state *hs);

/* Sets the membership that initial_state() reports (as a snapshot's conf state would), so a
 * node can be started with n_peers == 0 before any snapshot exists. RAFT_ERR_INVALID for more
 * than RAFT_MAX_VOTERS ids. */
int raft_memory_storage_set_conf_state(raft_memory_storage *ms, const raft_conf_state *cs);

/* Replaces the whole log with snap (data copied). RAFT_ERR_SNAP_OUT_OF_DATE if snap is not
 * newer than the current snapshot. */
int raft_memory_storage_apply_snapshot(raft_memory_storage *ms, const raft_snapshot *snap);

/*
 * Records a snapshot at index i (which must be <= last index) with the given membership and
 * data (copied; cs and data may be NULL). RAFT_ERR_SNAP_OUT_OF_DATE if i is not above the
 * current snapshot's index, RAFT_ERR_UNAVAILABLE if i is beyond the last index.
 */
int raft_memory_storage_create_snapshot(raft_memory_storage *ms, uint64_t i,
                                        const raft_conf_state *cs, const void *data, size_t len);

/* Discards entries before index i, which becomes the dummy entry. RAFT_ERR_COMPACTED if i is
 * at or below the compaction point, RAFT_ERR_UNAVAILABLE if beyond the last index. */
int raft_memory_storage_compact(raft_memory_storage *ms, uint64_t i);

/* Test hook: when set to a non-zero status, every read returns it (simulates a failing disk,
 * or RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE from snapshot() only when `snapshot_only`). */
void raft_memory_storage_inject_error(raft_memory_storage *ms, int status, bool snapshot_only);

/* ------------------------------------------------------------------------------------------ */
/* Configuration                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Optional tracing hook: called with one human-readable line per notable event (role changes,
 * elections, rejections, snapshots). The line is borrowed for the duration of the call. */
typedef void (*raft_trace_fn)(void *ctx, uint64_t id, const char *line);

/* Parameters of a rawnode. Fill with raft_config_init(), then set id, peers and storage. */
typedef struct raft_config {
	uint64_t id;           /* this node's id; must be non-zero */
	const uint64_t *peers; /* ids of all voters including id; borrowed during _new only. When
	                          n_peers is 0, membership comes from the storage's conf state */
	size_t n_peers;        /* number of ids in peers, at most RAFT_MAX_VOTERS */
	int election_tick;     /* ticks without a leader before an election; > heartbeat_tick */
	int heartbeat_tick;    /* ticks between a leader's heartbeats; >= 1 */
	const raft_storage *storage; /* borrowed; must outlive the rawnode */
	uint64_t applied; /* last applied index on restart; entries at or below it are never
	                     handed out again */
	uint64_t max_size_per_msg; /* payload bytes per APPEND; at least one entry is sent, so 0
	                              means one entry per APPEND */
	size_t max_inflight_msgs;  /* APPENDs in flight per follower in replicate state; >= 1 */
	uint64_t max_uncommitted_entries_size; /* leader drops proposals beyond this many
	                                          uncommitted payload bytes (an empty entry
	                                          counts 1); 0 = no limit */
	uint64_t max_committed_size_per_ready; /* payload bytes of committed entries per Ready;
	                                          at least one entry, so 0 means one per Ready */
	bool pre_vote;                         /* run a pre-vote before raising the term (§9.6) */
	bool check_quorum; /* leader steps down without a quorum's contact; leader lease */
	bool disable_proposal_forwarding; /* followers drop proposals instead of forwarding */
	uint64_t seed;       /* PRNG seed; mixed with id so nodes draw different timeouts */
	raft_trace_fn trace; /* optional tracing hook; NULL for silence */
	void *trace_ctx;     /* passed to trace */
} raft_config;

/* Fills *c with defaults: election 10 ticks, heartbeat 1, 1 MiB per message, 256 inflight,
 * 64 MiB uncommitted, 64 MiB committed per Ready, all switches off, seed 0. */
void raft_config_init(raft_config *c);

/* ------------------------------------------------------------------------------------------ */
/* RawNode                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Node roles. */
enum {
	RAFT_FOLLOWER = 0,
	RAFT_PRE_CANDIDATE = 1,
	RAFT_CANDIDATE = 2,
	RAFT_LEADER = 3,
};

/* A static name for a role ("LEADER"), or "UNKNOWN". */
const char *raft_role_name(int role);

/* Volatile state that the application may want to observe. */
typedef struct raft_soft_state {
	uint64_t leader; /* known leader id, 0 for none */
	int role;        /* RAFT_FOLLOWER ... RAFT_LEADER */
} raft_soft_state;

/* The answer to a read_index request: reads are linearizable once applied >= index. */
typedef struct raft_read_state {
	uint64_t index;   /* commit index at the time the read was confirmed */
	uint64_t context; /* the request id given to raft_rawnode_read_index() */
} raft_read_state;

/*
 * The work a rawnode asks the application to do. All pointers are owned by the rawnode and stay
 * valid, unchanged, until raft_rawnode_advance(), even if tick/step/propose are called in
 * between (their effects go to the next Ready). Handle it in this order:
 *   1. send `messages` (they may go out before persisting: the leader's APPEND/HEARTBEAT);
 *   2. persist in one atomic write: snapshot (if has_snapshot), then entries (truncating any
 *      conflicting suffix), then hard_state (if has_hard_state); sync if must_sync;
 *   3. send `persisted_messages` (votes and responses, which promise durable state);
 *   4. apply `committed_entries` (and the snapshot), serve read_states;
 *   5. call raft_rawnode_advance().
 */
typedef struct raft_ready {
	bool has_soft_state;        /* soft_state changed since the last Ready */
	raft_soft_state soft_state; /* valid when has_soft_state */
	bool has_hard_state;        /* hard_state changed since the last Ready */
	raft_hard_state hard_state; /* valid when has_hard_state */
	raft_entry *entries;        /* new entries to append to stable storage */
	size_t n_entries;
	bool has_snapshot;             /* a snapshot to install before entries */
	raft_snapshot snapshot;        /* valid when has_snapshot */
	raft_entry *committed_entries; /* entries to apply, in order */
	size_t n_committed_entries;
	raft_message *messages; /* may be sent before this Ready is persisted */
	size_t n_messages;
	raft_message *persisted_messages; /* may be sent only after this Ready is persisted */
	size_t n_persisted_messages;
	raft_read_state *read_states; /* confirmed read_index requests */
	size_t n_read_states;
	bool must_sync; /* entries, term or vote changed: fsync before step 3 */
} raft_ready;

/* Replication state of one follower, as seen by the leader. */
enum {
	RAFT_PROGRESS_PROBE = 0,     /* one APPEND per heartbeat until a match is found */
	RAFT_PROGRESS_REPLICATE = 1, /* pipelined APPENDs, bounded by the inflight window */
	RAFT_PROGRESS_SNAPSHOT = 2,  /* a snapshot is in flight; waits for report_snapshot */
};

/* One peer's progress (meaningful on a leader). */
typedef struct raft_peer_status {
	uint64_t id;               /* peer id */
	uint64_t match;            /* highest index known to be replicated on the peer */
	uint64_t next;             /* next index to send */
	int state;                 /* RAFT_PROGRESS_* */
	bool paused;               /* no APPEND will be sent until an ack or heartbeat */
	size_t inflight;           /* APPENDs sent and not yet acknowledged */
	bool recent_active;        /* heard from within the current check-quorum window */
	uint64_t pending_snapshot; /* snapshot index while in RAFT_PROGRESS_SNAPSHOT */
} raft_peer_status;

/* A snapshot of a rawnode's state, filled by raft_rawnode_status(). */
typedef struct raft_status {
	uint64_t id;              /* this node */
	int role;                 /* RAFT_FOLLOWER ... RAFT_LEADER */
	uint64_t term;            /* current term */
	uint64_t vote;            /* vote in the current term */
	uint64_t leader;          /* known leader, 0 for none */
	uint64_t commit;          /* commit index */
	uint64_t applied;         /* last index the application confirmed applied (advance) */
	uint64_t first_index;     /* first index still in the log */
	uint64_t last_index;      /* last index in the log */
	uint64_t lead_transferee; /* pending transfer target, 0 for none */
	size_t n_peers;           /* number of entries in peers */
	raft_peer_status peers[RAFT_MAX_VOTERS]; /* per voter, including this node */
	int error; /* RAFT_OK, or the fatal error that stopped the node */
} raft_status;

/* The rawnode: one Raft peer. Not thread-safe; one thread owns it. */
typedef struct raft_rawnode raft_rawnode;

/*
 * Creates a rawnode from c, loading hard state and membership from c->storage. c is borrowed;
 * the storage must outlive the node. On RAFT_OK, *out is owned by the caller (release with
 * raft_rawnode_free()). Returns RAFT_ERR_INVALID for a bad config, RAFT_ERR_NOMEM, or the
 * storage's error.
 */
int raft_rawnode_new(const raft_config *c, raft_rawnode **out);

/* Frees the rawnode, including any outstanding Ready. NULL is fine. */
void raft_rawnode_free(raft_rawnode *rn);

/* Advances the logical clock by one tick: election timeouts, heartbeats, check-quorum and
 * transfer timeouts all count ticks. */
int raft_rawnode_tick(raft_rawnode *rn);

/* Starts an election now (as if the election timeout fired). */
int raft_rawnode_campaign(raft_rawnode *rn);

/*
 * Proposes data (copied) as a new normal entry. A leader appends it; a follower forwards it to
 * the leader. Returns RAFT_ERR_PROPOSAL_DROPPED when there is no leader, forwarding is
 * disabled, a transfer is pending, or the uncommitted size bound is reached. Acceptance is not
 * commitment: watch the committed entries.
 */
int raft_rawnode_propose(raft_rawnode *rn, const void *data, size_t len);

/*
 * Feeds a received message (borrowed; step copies what it keeps). Returns RAFT_OK for messages
 * that the protocol ignores (stale terms, responses from unknown peers, messages addressed to
 * another node). Returns RAFT_ERR_INVALID, without stopping the node, for messages that no
 * correct peer sends: local types (HUP, BEAT: use campaign/tick), term 0 on anything but a
 * forwarded PROPOSE/READ_INDEX/TRANSFER_LEADER, `from` equal to this node or 0, terms or indexes
 * at or above RAFT_MAX_INDEX, entries that do not follow `index`. RAFT_ERR_PROPOSAL_DROPPED for a
 * forwarded proposal it cannot take. Any other error means the node stopped (see raft_status).
 */
int raft_rawnode_step(raft_rawnode *rn, const raft_message *m);

/* True when there is something in a Ready to handle. */
bool raft_rawnode_has_ready(raft_rawnode *rn);

/*
 * Fills *rd with the pending work (see raft_ready for ownership and order). Must be followed by
 * raft_rawnode_advance() before the next call; a second call without advance returns
 * RAFT_ERR_INVALID.
 */
int raft_rawnode_ready(raft_rawnode *rn, raft_ready *rd);

/*
 * Tells the rawnode that the last Ready was handled: entries and hard state are durable,
 * committed entries applied. Frees that Ready. On a leader, this is where its own entries start
 * counting toward commit.
 */
int raft_rawnode_advance(raft_rawnode *rn);

/* Fills *st. Cheap; never fails. */
void raft_rawnode_status(raft_rawnode *rn, raft_status *st);

/* The application could not deliver a snapshot (ok = false) or did (ok = true) to peer id. The
 * leader leaves the snapshot state: on success it waits for the follower's ack, on failure it
 * goes back to probing. */
int raft_rawnode_report_snapshot(raft_rawnode *rn, uint64_t id, bool ok);

/* The application could not reach peer id; a replicating follower goes back to probe. */
int raft_rawnode_report_unreachable(raft_rawnode *rn, uint64_t id);

/* Asks the leader to hand leadership to transferee (§3.10 of the dissertation). A follower
 * forwards the request to its leader. A transfer to self or to an unknown node is ignored. */
int raft_rawnode_transfer_leader(raft_rawnode *rn, uint64_t transferee);

/* Requests a linearizable read point, identified by ctx. The answer arrives in a later Ready as
 * a raft_read_state. Requests are silently dropped while no leader is known, on candidates, and
 * on a leader that loses leadership before answering; the application retries after a timeout.
 * A new leader holds requests until it has committed an entry of its own term (§6.4). */
int raft_rawnode_read_index(raft_rawnode *rn, uint64_t ctx);

#ifdef __cplusplus
}
#endif

#endif /* RAFT_H */
