/* netsim.h - deterministic in-memory network of rawnodes over memory storage, for core tests. */
#ifndef NETSIM_H
#define NETSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

/*
 * A netsim holds N peers with ids 1..N. Each peer is a raft_rawnode over a
 * raft_memory_storage. The storage is the peer's "disk": it survives netsim_crash(), the
 * rawnode does not. Every Ready is handled as a real application would: send `messages`,
 * persist snapshot + entries + hard state into the storage, send `persisted_messages`, apply
 * committed entries (recorded in the peer's applied list), record read states, advance.
 *
 * Messages travel through one FIFO queue owned by the netsim. Nothing happens until a caller
 * asks: netsim_stabilize() delivers and handles Readies until no message is queued and no node
 * has a Ready. All randomness (drops) comes from the netsim's own seeded PRNG.
 *
 * Snapshots: tests create them with raft_memory_storage_create_snapshot()/_compact() on a
 * leader's storage. When a SNAPSHOT message is delivered (or dropped by a filter), the netsim
 * calls raft_rawnode_report_snapshot(sender, to, delivered) on the sender. When a follower's
 * Ready carries a snapshot, the netsim installs it into the storage and appends an applied
 * record with type NETSIM_APPLIED_SNAPSHOT, the snapshot's index and term, and its data.
 */
#define NETSIM_APPLIED_SNAPSHOT (-1)

typedef struct netsim netsim;

/* Per-peer record of what the state machine applied, for assertions. */
typedef struct netsim_applied {
	uint64_t index;
	uint64_t term;
	int type;
	size_t len;
	unsigned char data[64]; /* first min(len, 64) payload bytes */
} netsim_applied;

/* Options for netsim_new(). Zeroed fields take the defaults given. */
typedef struct netsim_options {
	size_t n;           /* number of peers, 1..RAFT_MAX_VOTERS */
	int election_tick;  /* default 10 */
	int heartbeat_tick; /* default 1 */
	bool pre_vote;      /* default false */
	bool check_quorum;  /* default false */
	bool disable_proposal_forwarding;
	uint64_t max_size_per_msg;             /* default 1 MiB (raft_config_init) */
	size_t max_inflight_msgs;              /* default 256 */
	uint64_t max_uncommitted_entries_size; /* default: raft_config_init */
	uint64_t max_committed_size_per_ready; /* default: raft_config_init */
	uint64_t seed;                         /* raft seed and netsim PRNG seed */
	/* Between ready() and advance(), sometimes deliver a few queued messages to the node and
	 * tick it, once before persisting and once after; and sometimes leave the Ready unwritten
	 * for up to three visits (a slow disk) while the node keeps receiving messages and ticks.
	 * A seeded stream of its own. */
	bool interleave;
	/* The hard state of a Ready with must_sync == false is only buffered: it becomes durable
	 * with the next must_sync Ready, and a crash loses it. */
	bool lazy_sync;
} netsim_options;

/*
 * Hook called for every message just before it is delivered. It may modify *m (e.g. change
 * fields) and returns how many times to deliver it: 0 drops, 1 delivers, 2 duplicates. It may
 * also call netsim_inject() to enqueue extra messages (e.g. to reorder).
 */
typedef int (*netsim_hook_fn)(void *ctx, netsim *ns, raft_message *m);

/* Creates a network; every peer starts as a fresh follower. Aborts the test on OOM. */
netsim *netsim_new(const netsim_options *opt);
void netsim_free(netsim *ns);

/* The live rawnode of peer id, or NULL when crashed. */
raft_rawnode *netsim_node(netsim *ns, uint64_t id);
/* The peer's storage ("disk"). */
raft_memory_storage *netsim_storage(netsim *ns, uint64_t id);
/* Status of peer id (zeroed status with role -1 when crashed). */
raft_status netsim_status(netsim *ns, uint64_t id);

/* Ticks one peer / every live peer once, without delivering anything. */
void netsim_tick(netsim *ns, uint64_t id);
void netsim_tick_all(netsim *ns);

/* Calls raft_rawnode_campaign on id, then stabilizes. */
void netsim_campaign(netsim *ns, uint64_t id);
/* Proposes data on id; returns the rawnode's status; then stabilizes. */
int netsim_propose(netsim *ns, uint64_t id, const void *data, size_t len);
/* Steps a message (copied) into m->to directly (not through the filters), then stabilizes. */
int netsim_step(netsim *ns, const raft_message *m);
/* Enqueues a copy of m for delivery through the filters; does not stabilize. */
void netsim_inject(netsim *ns, const raft_message *m);
/* Handles Readies and delivers messages until quiet. Returns messages delivered. */
size_t netsim_stabilize(netsim *ns);
/* Handles every pending Ready once and delivers only what is queued now (one "round"). */
size_t netsim_step_round(netsim *ns);

/* Faults. */
void netsim_cut(netsim *ns, uint64_t a, uint64_t b);                /* both directions */
void netsim_isolate(netsim *ns, uint64_t id);                       /* cut id from everyone */
void netsim_drop(netsim *ns, uint64_t from, uint64_t to, double p); /* one direction */
void netsim_ignore(netsim *ns, int msg_type);   /* drop every message of this type */
void netsim_recover(netsim *ns);                /* undo cut/isolate/drop/ignore */
void netsim_blackhole(netsim *ns, uint64_t id); /* peer swallows everything sent to it and
                                                   never acts (no ticks, no Readies) */
void netsim_set_hook(netsim *ns, netsim_hook_fn fn, void *ctx);

/* Observer called for every Ready of every peer after it was persisted into storage and before
 * raft_rawnode_advance(); for invariant checks. rd is borrowed. */
typedef void (*netsim_ready_fn)(void *ctx, netsim *ns, uint64_t id, const raft_ready *rd);
void netsim_set_observer(netsim *ns, netsim_ready_fn fn, void *ctx);

/* Crash-restart: the rawnode is freed (unpersisted state is lost, and so is any Ready not yet
 * handled, and with lazy_sync the buffered hard state); restart builds a new rawnode from the
 * storage with applied = last applied index. */
void netsim_crash(netsim *ns, uint64_t id);
void netsim_restart(netsim *ns, uint64_t id);
/* Arms (or disarms) a crash of id inside its next Ready: after `messages` are sent, before
 * anything is persisted, so a leader's APPENDs leave while its own entries are lost (thesis
 * §10.2.1). */
void netsim_crash_in_ready(netsim *ns, uint64_t id, bool armed);
/* Whether such a crash is armed and has not happened yet. */
bool netsim_crash_armed(netsim *ns, uint64_t id);

/* What peer id has applied, in order, since the netsim started (survives crashes). */
const netsim_applied *netsim_applied_list(netsim *ns, uint64_t id, size_t *n);
/* Read states peer id has received, in order. */
const raft_read_state *netsim_read_states(netsim *ns, uint64_t id, size_t *n);
/* Messages that were dequeued and dropped by a filter, counted. */
size_t netsim_dropped(netsim *ns);

/* What the fault options did, for summaries. */
typedef struct netsim_counters {
	size_t interleaved;      /* Readies during which messages or ticks were interleaved */
	size_t deferred;         /* Readies left unwritten across visits */
	size_t lost_hard_states; /* buffered (lazy_sync) hard states lost in crashes */
	size_t ready_crashes;    /* crashes inside a Ready (netsim_crash_in_ready) */
	size_t sent_then_lost;   /* ... of which sent APPENDs for entries the sender then lost */
} netsim_counters;
netsim_counters netsim_get_counters(netsim *ns);

/* Leader among live nodes with the highest term, or 0. */
uint64_t netsim_leader(netsim *ns);

#endif /* NETSIM_H */
