/* request.h - a client request on its way from a client to a peer thread, and the reply. */
#ifndef RAFTKV_NODE_REQUEST_H
#define RAFTKV_NODE_REQUEST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The client layer (src/cluster/client.c) builds one request per operation and sends it, once
 * per attempt, to a peer's mailbox as a NODE_ITEM_REQUEST item {ptr = request, arg = attempt}.
 * Several copies may be in flight at once (retries, a duplicating router); each copy holds one
 * reference. Everything but `refs` is immutable once the request is first sent, so peer threads
 * read it without locks.
 *
 * The peer that pops a copy answers it exactly once by calling on_reply (on the peer's thread;
 * the callback must not block), then drops the copy's reference with request_release(). A peer
 * that stops answers every copy it still holds with REQUEST_RETRY.
 */

/* Operations: the store's STORE_OP_PUT/DELETE/APPEND/GET/REGISTER values, plus a scan. */
enum { REQUEST_OP_SCAN = 100 };

/* Reply statuses. */
enum request_status {
	REQUEST_OK = 0,          /* done; for GET/SCAN the value or pairs are in the reply */
	REQUEST_NOT_FOUND,       /* GET: absent; DELETE: was absent */
	REQUEST_NOT_LEADER,      /* nothing proposed here; try reply.leader (0: unknown) */
	REQUEST_RETRY,           /* outcome unknown here (lost leadership, entry overwritten,
	                            peer stopping or failed, proposal dropped): retry */
	REQUEST_SESSION_EXPIRED, /* STORE_RESULT_SESSION_EXPIRED */
	REQUEST_INVALID,         /* STORE_RESULT_INVALID (e.g. append past the value limit) */
};

/* One key/value pair of a scan reply, borrowed for the on_reply call. */
typedef struct request_pair {
	const void *key;
	size_t key_len;
	const void *value;
	size_t value_len;
} request_pair;

typedef struct request_reply {
	enum request_status status;
	uint64_t node_id;  /* the peer answering */
	uint64_t leader;   /* REQUEST_NOT_LEADER: the leader that peer knows, 0 if none */
	const void *value; /* GET: the value (NULL when empty); REGISTER: the session epoch, 8 bytes
	                      little-endian; borrowed for the call */
	size_t value_len;
	const request_pair *pairs; /* SCAN: the pairs, in key order; borrowed for the call */
	size_t n_pairs;
	const void *next; /* SCAN: the first key not delivered, NULL when the range ran out */
	size_t next_len;
} request_reply;

typedef struct request request;
typedef void (*request_reply_fn)(request *r, uint64_t attempt, const request_reply *rep);
typedef void (*request_free_fn)(request *r);

struct request {
	atomic_uint refs;   /* copies in flight + the client's own reference */
	int op;             /* STORE_OP_* or REQUEST_OP_SCAN */
	uint64_t client_id; /* writes and REGISTER: the session; 0 for GET and SCAN */
	uint64_t epoch;     /* writes: the session's epoch */
	uint64_t seq;       /* writes: the request's sequence number */
	uint64_t low_seq;   /* writes: lowest seq the client still waits for */
	const void *key;    /* SCAN: start of the range */
	size_t key_len;
	const void *value; /* PUT/APPEND: the value; SCAN: end of the range (len 0: no end) */
	size_t value_len;
	size_t limit; /* SCAN: at most this many pairs (0: the peer's own cap) */
	request_reply_fn on_reply;
	request_free_fn on_free; /* called by the last request_release() */
};

static inline void request_retain(request *r)
{
	atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

static inline void request_release(request *r)
{
	if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
		r->on_free(r);
}

/* A peer's caps on one scan reply, whatever limit asks for. */
#define REQUEST_SCAN_MAX_PAIRS 1000u
#define REQUEST_SCAN_MAX_BYTES (4u << 20)

#endif /* RAFTKV_NODE_REQUEST_H */
