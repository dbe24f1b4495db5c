/* router.h - the in-process transport between peers and clients, with fault injection. */
#ifndef RAFTKV_CLUSTER_ROUTER_H
#define RAFTKV_CLUSTER_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "node/mailbox.h"
#include "node/request.h"
#include "raft.h"

/*
 * The router knows, for each node id 1..n, the mailbox of the running node (attached) or
 * nothing (stopped: everything sent to it is dropped). It carries:
 *   - Raft messages, encoded with raft_message_encode (the receiver decodes them, so the wire
 *     format is exercised and a corrupted message is only ever hostile bytes);
 *   - client requests (a reference per delivered copy);
 *   - snapshot chunks and their acks (NODE_ITEM_SNAP_CHUNK, NODE_ITEM_SNAP_ACK; node/snapxfer.h),
 *     subject to the same faults as Raft messages between the same nodes;
 *   - control items (transfer, campaign).
 *
 * Faults (all off after router_new and router_heal):
 *   - partition: node ids in one group reach only their group; isolate(id) is the group {id};
 *   - drop: a global rate and a rate per directed link, applied to Raft messages; the global
 *     rate also drops client requests (the client's retry timer covers them);
 *   - duplicate: a rate; Raft messages and client requests are delivered twice;
 *   - delay: each Raft message is held for a uniform time in [min, max] ms; reorder: a share of
 *     Raft messages is held for up to max ms. Held messages sit in a bounded queue
 *     (ROUTER_MAX_HELD messages and ROUTER_MAX_HELD_BYTES; beyond that they are dropped) served
 *     by the router's own thread, which sleeps on a condition variable until the next one is
 *     due (no polling);
 *   - corrupt: a share of snapshot chunk copies gets one byte of its data flipped, with its crc
 *     left as it was (the receiver must notice).
 * Snapshot chunks and acks get every fault Raft messages get. Partitions and link drops apply to
 * Raft messages and snapshot items only: clients reach every running node. Fault decisions draw
 * from one PRNG seeded by router_new's seed, under a mutex.
 *
 * Thread safety: every function may be called from any thread. A push into a mailbox happens
 * under the destination's read lock; router_detach takes the write lock, so once it returns no
 * push to that mailbox is in progress or will happen.
 */

#define ROUTER_MAX_HELD       65536u
#define ROUTER_MAX_HELD_BYTES (64u << 20) /* and at most this many bytes of them */

typedef struct router router;

/* Statuses of router_send_request / router_send_control. */
enum { ROUTER_OK = 0, ROUTER_DOWN = 1, ROUTER_FULL = 2 };

/* Creates a router for nodes 1..n_nodes (none attached) and starts its delivery thread. NULL on
 * failure (ENOMEM, EINVAL). The caller owns it (router_free). */
router *router_new(size_t n_nodes, uint64_t seed);

/* Stops the delivery thread and frees the router and every held message. Detach every node
 * first. NULL is fine. */
void router_free(router *r);

/* Routes messages for id to mb (borrowed until router_detach). */
void router_attach(router *r, uint64_t id, mailbox *mb);

/* Stops routing to id; held messages for id are dropped when they fall due. */
void router_detach(router *r, uint64_t id);

/* Sends m (borrowed; encoded here) from m->from to m->to, subject to faults. Dropped silently
 * when the destination is stopped, cut off, or its mailbox is full. */
void router_send_raft(router *r, const raft_message *m);

/*
 * Delivers a client request to node `to` as NODE_ITEM_REQUEST with attempt. The router takes its
 * own reference for every copy it pushes (a duplicate is a second copy). ROUTER_OK when at least
 * one copy was pushed, or when a drop fault ate it (the client cannot tell: its timer retries);
 * ROUTER_DOWN when `to` is stopped or unknown; ROUTER_FULL when its mailbox is full. The
 * caller's reference is untouched in every case.
 */
int router_send_request(router *r, uint64_t to, request *req, uint64_t attempt);

/*
 * Sends a snapshot item from -> to: kind NODE_ITEM_SNAP_CHUNK (ptr a snapxfer_chunk of len bytes)
 * or NODE_ITEM_SNAP_ACK (ptr a snapxfer_ack). ptr (malloc'd, len bytes) is always consumed:
 * delivered as the item's ptr (the node frees it), held, or freed when dropped. A duplicate is a
 * copy of the len bytes. Faults as for Raft messages, plus corruption of chunks.
 */
void router_send_snap(router *r, uint64_t from, uint64_t to, int kind, void *ptr, size_t len);

/* Pushes a control item (NODE_ITEM_TRANSFER, NODE_ITEM_CAMPAIGN) with arg to node `to`, without
 * faults. ROUTER_OK, ROUTER_DOWN or ROUTER_FULL. */
int router_send_control(router *r, uint64_t to, int kind, uint64_t arg);

/* Faults. Ids outside 1..n are ignored (the cluster validates them). Rates are clamped to
 * [0, 1]. */
void router_partition(router *r, const uint64_t *ids, size_t n);
void router_isolate(router *r, uint64_t id);
void router_heal(router *r);
void router_set_drop_rate(router *r, double rate);
void router_set_link_drop_rate(router *r, uint64_t from, uint64_t to, double rate);
void router_set_duplicate_rate(router *r, double rate);
void router_set_delay(router *r, unsigned min_ms, unsigned max_ms);
void router_set_reorder(router *r, double rate, unsigned max_ms);
void router_set_corrupt_rate(router *r, double rate);

/* Counters since router_new. */
typedef struct router_stats {
	uint64_t raft_sent;      /* Raft messages handed to router_send_raft */
	uint64_t raft_delivered; /* copies pushed into a mailbox */
	uint64_t dropped;        /* by faults, stopped nodes or full mailboxes */
	uint64_t duplicated;
	uint64_t held;      /* delayed or reordered */
	uint64_t requests;  /* client request copies pushed */
	uint64_t chunks;    /* snapshot chunks handed to router_send_snap */
	uint64_t acks;      /* snapshot acks handed to router_send_snap */
	uint64_t corrupted; /* chunk copies the corrupt fault damaged */
} router_stats;
void router_stats_get(router *r, router_stats *out);

#endif /* RAFTKV_CLUSTER_ROUTER_H */
