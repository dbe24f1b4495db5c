/* raft_internal.h - private types of the consensus core: the log, peer progress, the state machine.
 */
#ifndef RAFT_INTERNAL_H
#define RAFT_INTERNAL_H

#include "raft.h"

/* ------------------------------------------------------------------------------------------ */
/* Log: stable storage plus the unstable tail that the application has not yet persisted.     */
/* ------------------------------------------------------------------------------------------ */

/*
 * Invariants:
 *   - unstable entries are contiguous and start at `offset`; when has_snapshot, offset ==
 *     snapshot.metadata.index + 1;
 *   - entries below `offset` live in storage (or were compacted into a snapshot);
 *   - applied <= applying <= committed <= last index;
 *   - entries up to in_progress (< offset + n_unstable) were handed out in the outstanding Ready
 *     and are being persisted.
 */
typedef struct raft_log {
	const raft_storage *storage; /* borrowed from the config */

	bool has_snapshot;         /* an incoming snapshot not yet persisted */
	bool snapshot_in_progress; /* handed out in the outstanding Ready */
	raft_snapshot snapshot;    /* owned */

	raft_entry *unstable; /* owned, each entry owns its data */
	size_t n_unstable;
	size_t cap_unstable;
	uint64_t offset;      /* index of unstable[0] */
	uint64_t in_progress; /* last unstable index handed out in a Ready; offset - 1 if none */

	uint64_t committed; /* highest index known committed */
	uint64_t applying;  /* highest index handed out for applying */
	uint64_t applied;   /* highest index the application confirmed applied (advance) */

	uint64_t max_applying_size; /* bound on committed payload per Ready */
	int err;                    /* sticky fatal storage error; 0 while healthy */
} raft_log;

int log_init(raft_log *l, const raft_storage *storage, uint64_t max_applying_size);
void log_close(raft_log *l);
uint64_t log_first_index(raft_log *l);
uint64_t log_last_index(raft_log *l);
/* Term of entry i. Returns RAFT_OK, COMPACTED or UNAVAILABLE; other errors set l->err. */
int log_term(raft_log *l, uint64_t i, uint64_t *term);
/* Term of entry i, or 0 when it is not in the log. */
uint64_t log_term_or_zero(raft_log *l, uint64_t i);
uint64_t log_last_term(raft_log *l);
bool log_match_term(raft_log *l, uint64_t i, uint64_t term);
bool log_is_up_to_date(raft_log *l, uint64_t last_index, uint64_t term);
/* Copies of the entries in [lo, hi), within max_size bytes (at least one). Caller frees. */
int log_entries(raft_log *l, uint64_t lo, uint64_t hi, uint64_t max_size, raft_entry **out,
                size_t *n);
/* Appends copies of ents, truncating the unstable tail at ents[0].index. */
int log_append(raft_log *l, const raft_entry *ents, size_t n);
/* The follower's append: returns true and sets *last_new when (index, log_term) matches. */
bool log_maybe_append(raft_log *l, uint64_t index, uint64_t log_term, uint64_t commit,
                      const raft_entry *ents, size_t n, uint64_t *last_new);
bool log_maybe_commit(raft_log *l, uint64_t index, uint64_t term);
void log_commit_to(raft_log *l, uint64_t index);
/* Largest index <= index whose term is <= term (the leader's skip-a-term hint). */
uint64_t log_find_conflict_by_term(raft_log *l, uint64_t index, uint64_t term, uint64_t *hint_term);
/* Replaces the log with the snapshot (copied). */
int log_restore(raft_log *l, const raft_snapshot *snap);
/* Index of the last entry known to be on stable storage. */
uint64_t log_stable_last_index(raft_log *l);
/* The outstanding Ready's entries up to (index, term) are now durable. */
void log_stable_to(raft_log *l, uint64_t index, uint64_t term);
void log_stable_snapshot_to(raft_log *l, uint64_t index);
bool log_has_unhanded_entries(const raft_log *l);
bool log_has_next_committed(raft_log *l);
/* Copies of the committed entries not yet handed out, bounded by max_applying_size. */
int log_next_committed(raft_log *l, raft_entry **out, size_t *n);

/* ------------------------------------------------------------------------------------------ */
/* Progress: the leader's view of one follower (§5.3, and etcd's probe/replicate/snapshot).   */
/* ------------------------------------------------------------------------------------------ */

/* A ring of the last index of each APPEND in flight, oldest first. */
typedef struct raft_inflights {
	uint64_t *buf; /* owned; capacity `size` */
	size_t size;
	size_t start;
	size_t count;
} raft_inflights;

typedef struct raft_progress {
	uint64_t id;
	uint64_t match; /* invariant: match < next */
	uint64_t next;
	int state;                 /* RAFT_PROGRESS_* */
	bool probe_sent;           /* probe: an APPEND is out, wait for an answer or heartbeat */
	bool recent_active;        /* heard from in this check-quorum window */
	uint64_t pending_snapshot; /* snapshot index while in RAFT_PROGRESS_SNAPSHOT */
	raft_inflights inflights;
} raft_progress;

int progress_init(raft_progress *p, uint64_t id, uint64_t next, size_t max_inflight);
void progress_close(raft_progress *p);
void progress_reset(raft_progress *p, uint64_t next);
void progress_become_probe(raft_progress *p);
void progress_become_replicate(raft_progress *p);
void progress_become_snapshot(raft_progress *p, uint64_t snapshot_index);
bool progress_maybe_update(raft_progress *p, uint64_t n);
bool progress_maybe_decr_to(raft_progress *p, uint64_t rejected, uint64_t match_hint);
bool progress_is_paused(const raft_progress *p);
void progress_sent_append(raft_progress *p, uint64_t last_index, size_t n_entries);
bool inflights_full(const raft_inflights *in);
void inflights_free_le(raft_inflights *in, uint64_t index);
void inflights_free_first(raft_inflights *in);

/* ------------------------------------------------------------------------------------------ */
/* The state machine.                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* A growable array of messages owned by the raft until handed out in a Ready. */
typedef struct raft_msg_queue {
	raft_message *items;
	size_t n;
	size_t cap;
} raft_msg_queue;

/* A pending linearizable read (§6.4). */
typedef struct raft_read_request {
	uint64_t seq;     /* heartbeats carry the latest seq; an ack of seq s confirms all <= s */
	uint64_t index;   /* commit index when the request arrived */
	uint64_t from;    /* requester; self for local reads */
	uint64_t context; /* the application's request id */
	uint32_t acks;    /* bit i set: voter i acknowledged a heartbeat carrying >= seq */
} raft_read_request;

typedef struct raft_read_queue {
	raft_read_request *items;
	size_t n;
	size_t cap;
} raft_read_queue;

typedef struct raft {
	uint64_t id;
	uint64_t term;
	uint64_t vote;
	uint64_t lead;
	int state;
	raft_log log;

	raft_progress prs[RAFT_MAX_VOTERS]; /* voters, ascending by id */
	size_t n_prs;
	size_t max_inflight;
	int8_t votes[RAFT_MAX_VOTERS]; /* per voter: 0 unknown, 1 granted, -1 rejected */

	raft_msg_queue msgs;       /* may be sent before persisting */
	raft_msg_queue msgs_after; /* sent only after the Ready is persisted */
	raft_read_state *read_states;
	size_t n_read_states;
	size_t cap_read_states;

	raft_read_queue reads;         /* leader: reads awaiting heartbeat quorum */
	raft_read_queue pending_reads; /* leader: reads awaiting a commit in its term */
	uint64_t read_seq;

	int election_elapsed;
	int transfer_elapsed; /* ticks since the pending transfer started */
	int heartbeat_elapsed;
	int election_timeout;
	int heartbeat_timeout;
	int randomized_election_timeout;

	bool check_quorum;
	bool pre_vote;
	bool disable_proposal_forwarding;
	uint64_t lead_transferee;
	bool bcast_pending; /* leader: new entries or commit to broadcast at the next Ready, so a
	                       burst of proposals shares one APPEND per follower */
	uint64_t uncommitted_size;
	uint64_t max_uncommitted_size;
	uint64_t max_msg_size;

	uint64_t rng; /* splitmix64 state */
	raft_trace_fn trace;
	void *trace_ctx;
	int err; /* sticky fatal error: the node is stopped */
} raft;

int raft_init(raft *r, const raft_config *c);
void raft_close(raft *r);
int raft_step(raft *r, const raft_message *m);
/* Sends the broadcast that proposals and commit advances deferred. */
void raft_flush(raft *r);
void raft_tick(raft *r);
void raft_advance_applied(raft *r, uint64_t applied, uint64_t applied_size);
void raft_on_persisted(raft *r);
raft_progress *raft_progress_of(raft *r, uint64_t id);
int raft_report_snapshot(raft *r, uint64_t id, bool ok);
int raft_report_unreachable(raft *r, uint64_t id);
void raft_msg_queue_clear(raft_msg_queue *q);
void raft_tracef(raft *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Shared helpers (util.c). */
uint64_t util_rand(uint64_t *state);
int util_entry_copy(raft_entry *dst, const raft_entry *src);
uint64_t util_payload_size(const raft_entry *ents, size_t n);
uint64_t util_accounted_size(const raft_entry *ents, size_t n);

#endif /* RAFT_INTERNAL_H */
