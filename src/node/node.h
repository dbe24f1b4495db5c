/* node.h - one Raft peer: a thread that owns a rawnode and a store and runs the Ready loop. */
#ifndef RAFTKV_NODE_NODE_H
#define RAFTKV_NODE_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node/mailbox.h"
#include "node/request.h"
#include "node/snapxfer.h"
#include "raft.h"
#include "raftkv.h"
#include "store/store.h"

/*
 * A node is one peer of the cluster. node_start() opens its store, builds its rawnode from the
 * store alone, and starts its thread, which loops:
 *
 *   1. drain the mailbox, at most cfg.drain_cap items per pass: step Raft messages, propose
 *      writes, start ReadIndex reads, answer requests a follower cannot take;
 *   2. call raft_rawnode_tick once for each tick the ticker added (node_add_ticks);
 *   3. if the rawnode has a Ready:
 *      a. send rd.messages (may go before persistence: the leader's APPENDs, so its fsync
 *         overlaps its followers');
 *      b. persist it in one store transaction (store_persist_ready);
 *      c. send rd.persisted_messages;
 *      d. apply rd.committed_entries (store_apply) and answer the writes waiting on them;
 *      e. record rd.read_states and answer every read whose index is now applied;
 *      f. advance; publish the status; compact the log (log GC, below); checkpoint the WAL if
 *         it is due;
 *   4. park on the mailbox when there is nothing to do (never spin).
 * Draining before each Ready is the group commit: one transaction, one fsync, for every proposal
 * that arrived meanwhile.
 *
 * Waiters. A write proposed as leader waits for the entry at (index, term) the proposal got. When
 * that index applies, the waiter gets the store's result if the applied entry has the same term
 * and carries the same (client id, seq); otherwise REQUEST_RETRY (its entry was overwritten):
 * never another client's result. Writes are never proposed on followers (REQUEST_NOT_LEADER).
 * Reads (GET, SCAN) take a ReadIndex on the leader and are answered from the local store once the
 * applied index reaches the read index; if leadership is lost before the read index is confirmed,
 * they get REQUEST_RETRY. A scan runs in one pass on the node thread, so it sees one applied
 * index.
 *
 * Log GC (etcd style: each peer decides locally, nothing goes through the log). After each
 * Ready and each pass with ticks, when applied - first_index >= gc_threshold, the node compacts
 * (store_compact) towards applied - gc_trailing, in one bounded transaction per pass. A leader
 * stops short of the match index of every follower that is recently active and not in snapshot
 * state, and of the index of every snapshot being sent, unless applied - first_index has reached
 * gc_hard_limit. Never past the applied index. See node.c (node_gc) for the bound.
 *
 * Snapshots (node/snapxfer.h). The storage the rawnode reads is the store's with snapshot()
 * wrapped: it says "temporarily unavailable" while snapshot_max_concurrent transfers run. An
 * outgoing RAFT_MSG_SNAPSHOT is not sent through cfg.send: it starts a chunked transfer whose
 * chunks go through cfg.send_item; its outcome is reported to the rawnode. Incoming chunks are
 * staged; the complete snapshot is stepped as a RAFT_MSG_SNAPSHOT and installed by the next
 * Ready (store_persist_ready).
 *
 * Failures. An error from the store or the rawnode fail-stops the node: it answers every request
 * with REQUEST_RETRY, sends nothing, persists nothing, reports the failure in its status, and
 * waits to be stopped.
 *
 * Threads: node_start, node_stop and node_free are called by the cluster (one caller at a time per
 * node); node_add_ticks, node_mailbox and node_status_get from any thread.
 */

/* Mailbox item kinds. */
enum node_item_kind {
	NODE_ITEM_RAFT = 1,       /* ptr: an encoded raft_message (malloc'd; the node frees it),
	                             arg: its length */
	NODE_ITEM_REQUEST = 2,    /* ptr: a request holding one reference for this copy, arg: the
	                             attempt number to pass back in on_reply */
	NODE_ITEM_TRANSFER = 3,   /* arg: the node id to hand leadership to (leader only) */
	NODE_ITEM_CAMPAIGN = 4,   /* start an election now (tests) */
	NODE_ITEM_SNAP_CHUNK = 5, /* ptr: a snapxfer_chunk (malloc'd, one block; the node frees
	                             it), arg: its length, sizeof(snapxfer_chunk) + data */
	NODE_ITEM_SNAP_ACK = 6,   /* ptr: a snapxfer_ack (malloc'd; the node frees it), arg: its
	                             length */
};

/* Sends one message from this node (borrowed; the callee copies or encodes it). Called on the
 * node thread. */
typedef void (*node_send_fn)(void *ctx, const raft_message *m);
/* Sends a snapshot item (NODE_ITEM_SNAP_CHUNK or NODE_ITEM_SNAP_ACK) of len bytes from `from` to
 * `to`; takes ptr (malloc'd): the callee delivers or frees it. Called on the node thread. */
typedef void (*node_send_item_fn)(void *ctx, uint64_t from, uint64_t to, int kind, void *ptr,
                                  size_t len);
/* Told after each Ready that changed the role, leader, term or applied index (on the node
 * thread; must not block for long). */
typedef void (*node_changed_fn)(void *ctx, uint64_t node_id);

typedef struct node_config {
	uint64_t id;             /* 1-based */
	const char *db_path;     /* the node's database, borrowed during node_start */
	const char *dir;         /* the cluster directory (snapshot files), borrowed likewise */
	store_options store;     /* cluster id, node id, sync, vfs... (copied) */
	int election_tick;       /* raft_config.election_tick */
	int heartbeat_tick;      /* raft_config.heartbeat_tick */
	uint64_t seed;           /* raft_config.seed */
	size_t mailbox_capacity; /* power of two */
	size_t drain_cap;        /* mailbox items per pass before the next Ready (0: 256) */
	/* Log GC, as raftkv_options documents it; gc_threshold 0 disables GC. gc_hard_limit 0
	 * means 2 * gc_threshold. */
	uint64_t gc_threshold;
	uint64_t gc_trailing;
	uint64_t gc_hard_limit;
	/* Snapshot transfer; 0 selects the default of each: chunk 256 KiB, window 8, 2 outgoing
	 * transfers, no rate limit, a progress timeout of max(2, election_tick / 2) ticks. */
	size_t snapshot_chunk_size;
	unsigned snapshot_window;
	unsigned snapshot_max_concurrent;
	uint64_t snapshot_bytes_per_tick; /* the rate limit, per tick */
	unsigned snapshot_timeout_ticks;
	node_send_fn send;
	node_send_item_fn send_item; /* snapshot chunks and acks; NULL: snapshots cannot be sent
	                                (each outgoing one is reported failed) */
	node_changed_fn changed;
	void *ctx;           /* passed to send, send_item and changed */
	raft_trace_fn trace; /* optional */
	void *trace_ctx;
} node_config;

typedef struct node node;

/*
 * Opens the store at cfg->db_path (creating nothing: the cluster created it), builds the rawnode
 * from it, creates the mailbox and starts the thread. cfg is borrowed. On RAFTKV_OK *out is the
 * caller's (node_stop then node_free). On error *out is NULL, errmsg receives the reason and the
 * status is RAFTKV_IO, RAFTKV_CORRUPT, RAFTKV_NOMEM or RAFTKV_INVALID.
 */
int node_start(const node_config *cfg, node **out, char *errmsg, size_t errmsg_len);

/* The node's mailbox: producers push NODE_ITEM_* items. Valid until node_free. */
mailbox *node_mailbox(node *n);

/*
 * Crash-stop: asks the thread to end, joins it, answers every request still queued or waiting
 * with REQUEST_RETRY, frees every queued item, frees the rawnode and closes the store without any
 * flush. The caller must first stop every producer (router_detach) so nothing is pushed after
 * the final drain. Idempotent.
 */
void node_stop(node *n);

/* Frees a stopped node (node_stop first). NULL is fine. */
void node_free(node *n);

/* Any thread: adds n ticks and wakes the node. The node merges pending ticks. */
void node_add_ticks(node *n, unsigned ticks);

/* Any thread: the status as of the node's last handled Ready (role RAFTKV_ROLE_STOPPED once
 * stopped). */
void node_status_get(node *n, raftkv_status *out);

#endif /* RAFTKV_NODE_NODE_H */
