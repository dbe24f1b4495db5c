/* snapxfer.h - chunked, flow-controlled snapshot transfer: the sender and receiver machines. */
#ifndef RAFTKV_NODE_SNAPXFER_H
#define RAFTKV_NODE_SNAPXFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "store/store.h"

/*
 * A RAFT_MSG_SNAPSHOT carries only metadata: its snapshot.data is the encoded store_snapshot_id
 * (store.h). The file it names moves as chunks (DESIGN.md §4, "Snapshot transfer with flow
 * control"):
 *
 *   sender                                   receiver
 *   chunk {id, msg metadata, offset, len, crc32c, last}  ->  stage it if offset == staged
 *                                                             length and the crc is good
 *   <- ack {id, staged length (highest contiguous offset), PROGRESS | DONE | REJECT}
 *
 * Sender (leader). One transfer per follower; at most max_concurrent at once. At most `window`
 * chunks are sent beyond the acknowledged offset; each chunk is read with pread when it is sent,
 * so a transfer holds no buffer of its own: the chunks in flight (at most window x chunk_size
 * bytes per transfer, plus router duplicates) are all the memory it costs, whatever the file
 * size. A shared token bucket, refilled by bytes_per_tick on every tick, caps the rate. When
 * the acknowledged offset does not move for timeout_ticks ticks while chunks are out, the
 * sender goes back to the acknowledged offset (never to zero); a duplicate ack of the current
 * offset answering a chunk at or beyond that offset does the same at once, at most once per
 * advance (fast retransmit: the receiver drops anything past a gap, and a corrupt chunk). Acks
 * answering chunks below the acknowledged offset (duplicates) never rewind, so resends cannot
 * feed more resends. After max_timeouts timeouts in a row without progress, or a REJECT, it
 * gives up and reports failure; a DONE reports success. Once every byte is acknowledged only
 * DONE is missing, and the receiver may be installing (one transaction, proportional to the
 * file, during which it answers nothing): the sender then resends the last chunk at each
 * timeout and gives up only after max_timeouts x (1 + ceil(size / (window x chunk_size)))
 * of them.
 *
 * The window bound is the sender's own accounting, and so approximate on the wire: a rewind
 * sends again from the acknowledged offset while earlier copies of the same chunks may still
 * sit in the transport (the router's delay heap, the receiver's mailbox). Those copies are
 * bounded by the transport's own limits, and each round of them by a window, so the bytes of
 * one transfer in flight are a few x window x chunk_size at worst, never a function of the
 * file size. Every transfer ends in exactly one report, except
 * those cancelled (leadership lost: the core forgets snapshot states then) or replaced by a new
 * snapshot to the same follower (the core asked again, so it already left the old one).
 *
 * Receiver (follower). One snapshot at a time. A chunk of another id supersedes the current one
 * if it is newer: a higher message term, or the same term and a higher index, or the same index
 * with another id (a restarted sender's new nonce); or if the current one has been silent for
 * stale_ticks (its sender is gone). An older one is answered REJECT. store_staging_begin drops
 * the superseded staging and resumes a staging of the same id found on disk (a restarted
 * receiver). A chunk at exactly the staged length with a good crc is written durably; any other
 * (duplicate, out of order, corrupt) is dropped; either way the staged length is acknowledged.
 * The crc covers every header field as well as the data, so a damaged term, index, offset or
 * membership is dropped like damaged data. A chunk of the current snapshot id with a higher
 * term (a re-elected leader resending the same file) updates the term, commit and sender the
 * message will carry, and keeps the staging. When the staged length reaches the size,
 * store_staging_finish verifies the whole file and store_staging_meta gives its header, which
 * must match the chunks' index, term and membership (else: discard it, REJECT); then the
 * SNAPSHOT message is rebuilt from that metadata for the caller to step.
 *
 * After a power loss the staged length found on disk (store_staging_offset) may include a tail
 * that was written but never synced and so holds garbage or zeros; the receiver resumes after
 * it, and only store_staging_finish's file checksum catches it: the file is then discarded and
 * REJECTed, the sender reports failure, and the next attempt transfers the whole snapshot again
 * (a cost, never a wrong install). A process crash alone cannot tear the tail: every write is
 * made with pwrite and fdatasync before it is acknowledged. The caller then says whether the next
 * Ready installed it (snapxfer_receiver_resolve); DONE is acknowledged only then, and repeated to a
 * later chunk of that id only while it is still true (installed, or at or below the commit index;
 * else the snapshot is fetched again). If raft dropped the message unanswered (its term is stale),
 * the caller calls snapxfer_receiver_reject instead: REJECT, so the sender reports failure rather
 * than a success that installed nothing. A snapshot at or below the
 * caller's commit index is not fetched at all: raft would ignore it (Raft paper §7), so its
 * message is handed over at the first chunk and the transfer ends DONE with nothing staged.
 *
 * Both machines are plain data driven by the node thread: no threads, no clock (ticks come
 * from the caller), no locks.
 */

/* Largest chunk accepted (and the largest snapshot_chunk_size). */
#define SNAPXFER_MAX_CHUNK (64u << 20)

/* A chunk: one malloc'd block of sizeof(snapxfer_chunk) + len bytes. */
typedef struct snapxfer_chunk {
	uint64_t from;               /* sender node */
	uint64_t to;                 /* receiver node */
	uint64_t term;               /* the SNAPSHOT message's term */
	uint64_t commit;             /* its commit index */
	raft_snapshot_metadata meta; /* its snapshot metadata */
	store_snapshot_id id;        /* the snapshot (also its data, encoded) */
	uint64_t size;               /* the file's size */
	uint64_t offset;             /* of data[0] in the file */
	uint32_t len;                /* bytes in data */
	uint32_t crc;                /* CRC-32C of data */
	bool last;                   /* offset + len == size */
	unsigned char data[];
} snapxfer_chunk;

enum snapxfer_ack_status {
	SNAPXFER_ACK_PROGRESS = 0, /* offset bytes staged */
	SNAPXFER_ACK_DONE = 1,     /* installed, or ignored by raft as already covered */
	SNAPXFER_ACK_REJECT = 2,   /* superseded by a newer snapshot, or the file was corrupt */
};

typedef struct snapxfer_ack {
	uint64_t from; /* the receiver */
	uint64_t to;   /* the sender */
	store_snapshot_id id;
	uint64_t offset;  /* highest contiguous offset staged */
	uint64_t trigger; /* offset of the chunk this ack answers */
	int status;       /* snapxfer_ack_status */
} snapxfer_ack;

/* Computes c->crc over c->data. */
void snapxfer_chunk_seal(snapxfer_chunk *c);
/* Whether c->crc matches c->data. */
bool snapxfer_chunk_intact(const snapxfer_chunk *c);

/* ------------------------------------------------------------------------------------------ */
/* Sender                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Takes c (malloc'd, sizeof(*c) + c->len bytes): the callee sends or frees it. */
typedef void (*snapxfer_send_chunk_fn)(void *ctx, snapxfer_chunk *c);
/* raft_rawnode_report_snapshot(to, ok). */
typedef void (*snapxfer_report_fn)(void *ctx, uint64_t to, bool ok);

typedef struct snapxfer_sender_config {
	uint64_t self;
	size_t chunk_size;       /* 1..SNAPXFER_MAX_CHUNK */
	unsigned window;         /* >= 1 */
	unsigned max_concurrent; /* >= 1 */
	uint64_t bytes_per_tick; /* 0: no rate limit */
	unsigned timeout_ticks;  /* >= 1 */
	unsigned max_timeouts;   /* >= 1 */
	snapxfer_send_chunk_fn send_chunk;
	snapxfer_report_fn report;
	void *ctx;
} snapxfer_sender_config;

typedef struct snapxfer_sender_stats {
	uint64_t started;
	uint64_t completed; /* reported ok */
	uint64_t failed;    /* reported failed (timeouts, rejects, I/O) */
	uint64_t cancelled;
	uint64_t chunks_sent;
	uint64_t bytes_sent;        /* chunk payload, resends included */
	uint64_t rewinds;           /* go-backs to the acknowledged offset */
	uint64_t rewinds_to_zero;   /* those that resent from offset 0 (nothing acknowledged) */
	uint64_t max_rewind_offset; /* the highest offset a rewind resent from */
	unsigned peak_active;
	unsigned peak_inflight_chunks; /* most chunks beyond the ack in one transfer */
	uint64_t peak_inflight_bytes;  /* most bytes beyond the acks, all transfers together */
} snapxfer_sender_stats;

typedef struct snapxfer_sender snapxfer_sender;

/* cfg is copied. NULL on bad config or no memory. The caller owns it (snapxfer_sender_free). */
snapxfer_sender *snapxfer_sender_new(const snapxfer_sender_config *cfg);
/* Closes every file; reports nothing. NULL is fine. */
void snapxfer_sender_free(snapxfer_sender *s);

/* Statuses of snapxfer_sender_start. */
enum { SNAPXFER_OK = 0, SNAPXFER_BUSY = 1, SNAPXFER_BAD = 2, SNAPXFER_IO = 3 };

/*
 * Starts sending the file at path (borrowed) for the SNAPSHOT message m (borrowed) to m->to,
 * replacing any transfer to m->to (without a report), then sends the first window. SNAPXFER_BUSY
 * when max_concurrent others run, SNAPXFER_BAD for a message whose data is not a snapshot id,
 * SNAPXFER_IO when the file cannot be opened: nothing was started and nothing reported (the
 * caller reports the failure).
 */
int snapxfer_sender_start(snapxfer_sender *s, const raft_message *m, const char *path);

/* Handles an ack (borrowed); may report and send. Acks of no running transfer are ignored. */
void snapxfer_sender_on_ack(snapxfer_sender *s, const snapxfer_ack *a);

/* One tick: refills the bucket, counts timeouts (may report a failure), sends what it can. */
void snapxfer_sender_tick(snapxfer_sender *s);

/* Ends every transfer whose message term is not term, or all of them if !leader, without a
 * report. */
void snapxfer_sender_cancel_stale(snapxfer_sender *s, bool leader, uint64_t term);

/* Transfers running. */
unsigned snapxfer_sender_active(const snapxfer_sender *s);
/* Copies at most cap ids of running transfers into ids; returns how many. */
size_t snapxfer_sender_ids(const snapxfer_sender *s, store_snapshot_id *ids, size_t cap);
/* Lowest snapshot index being sent, or UINT64_MAX. */
uint64_t snapxfer_sender_min_index(const snapxfer_sender *s);
/* Whether a transfer to `to` runs; *acked (may be NULL) gets its acknowledged offset. */
bool snapxfer_sender_has(const snapxfer_sender *s, uint64_t to, uint64_t *acked);
void snapxfer_sender_stats_get(const snapxfer_sender *s, snapxfer_sender_stats *out);

/* ------------------------------------------------------------------------------------------ */
/* Receiver                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Sends a (borrowed; the callee copies it). */
typedef void (*snapxfer_send_ack_fn)(void *ctx, const snapxfer_ack *a);

typedef struct snapxfer_receiver_config {
	uint64_t self;
	store *store;         /* borrowed; its staging is the receiver's */
	unsigned stale_ticks; /* >= 1 */
	snapxfer_send_ack_fn send_ack;
	void *ctx;
} snapxfer_receiver_config;

typedef struct snapxfer_receiver_stats {
	uint64_t installed;      /* snapshots installed (resolve(true)) */
	uint64_t ignored;        /* resolved without an install */
	uint64_t bytes_received; /* bytes staged */
	uint64_t chunks_dropped; /* duplicates, out of order, stale */
	uint64_t corrupt;        /* chunks with a bad crc, and files failing finish */
	uint64_t superseded;     /* transfers dropped for a newer one */
} snapxfer_receiver_stats;

typedef struct snapxfer_receiver snapxfer_receiver;

snapxfer_receiver *snapxfer_receiver_new(const snapxfer_receiver_config *cfg);
void snapxfer_receiver_free(snapxfer_receiver *r);

/* Results of snapxfer_receiver_on_chunk (besides a negative store error that fail-stopped the
 * store). */
enum { SNAPXFER_RECV_MORE = 0, SNAPXFER_RECV_COMPLETE = 1 };

/*
 * Handles chunk c (borrowed) at tick `now`, for a node whose commit index is `commit`. On
 * SNAPXFER_RECV_COMPLETE *out is the SNAPSHOT message to step (the caller owns it:
 * raft_message_free), and the receiver waits for snapxfer_receiver_resolve. A negative store
 * error means the store failed (the caller fail-stops).
 */
int snapxfer_receiver_on_chunk(snapxfer_receiver *r, const snapxfer_chunk *c, uint64_t now,
                               uint64_t commit, raft_message *out);

/* Whether a stepped snapshot waits for resolve; *id (may be NULL) gets its id. */
bool snapxfer_receiver_pending(const snapxfer_receiver *r, store_snapshot_id *id);

/* After the Ready that followed the step: installed says whether it persisted the snapshot.
 * If not, the staging is discarded. Acks DONE either way. */
void snapxfer_receiver_resolve(snapxfer_receiver *r, bool installed);

/* After a step that raft dropped without any response (no Ready followed: the message's term
 * is below the node's): discards the staging and acks REJECT, so the sender reports failure. */
void snapxfer_receiver_reject(snapxfer_receiver *r);

/* Forgets the pending snapshot without an ack (the step failed); discards its staging. */
void snapxfer_receiver_abort(snapxfer_receiver *r);

void snapxfer_receiver_stats_get(const snapxfer_receiver *r, snapxfer_receiver_stats *out);

#endif /* RAFTKV_NODE_SNAPXFER_H */
