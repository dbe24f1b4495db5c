/* node.c - one Raft peer: a thread that drains its mailbox, ticks, and handles Readies. */
#include "node/node.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node/gc_policy.h"
#include "store/command.h"

#define NODE_DRAIN_CAP_DEFAULT       256u
#define NODE_MAILBOX_DEFAULT         4096u
#define NODE_MAX_INFLIGHT_MSGS       256u
#define NODE_MAX_SIZE_PER_MSG        (1ull << 20)
#define NODE_MAX_UNCOMMITTED         (64ull << 20)
#define NODE_MAX_COMMITTED_PER_READY (4ull << 20)
/* A read whose ReadIndex context has not come back within this many election timeouts is
 * answered REQUEST_RETRY: the rawnode drops read requests silently when its queue is full, so
 * this bounds how long a copy can sit here while the node stays leader. */
#define NODE_READ_EXPIRY_ELECTIONS 2u

/* Log rows one GC pass deletes, on top of the entries applied since the previous pass (see
 * node_gc). */
#define NODE_GC_ROWS 10000u

/* Snapshot transfer defaults (node_config zeros). 256 KiB chunks: large enough that the
 * per-chunk costs (one fdatasync on the receiver, one ack, one mailbox slot) are amortised over
 * a disk's sequential bandwidth (a 256 KiB fdatasync costs about as much as a 4 KiB one on SSDs),
 * small enough that window x chunk (2 MiB with the default window of 8) stays a trivial memory
 * bound per transfer and one pread never stalls the loop. A window of 8 keeps the pipe full while
 * the receiver fsyncs each chunk (about 8 fsync round trips of bandwidth-delay). */
#define NODE_SNAP_CHUNK_DEFAULT      (256u << 10)
#define NODE_SNAP_WINDOW_DEFAULT     8u
#define NODE_SNAP_CONCURRENT_DEFAULT 2u
#define NODE_SNAP_MAX_TIMEOUTS       5u /* progress timeouts in a row before giving up */
#define NODE_SNAP_STALE_ELECTIONS    2u /* a silent incoming transfer may be superseded */
#define NODE_SNAP_GC_ELECTIONS       1u /* period of store_snapshot_gc */
/* A follower last seen recent_active within this many election timeouts still counts as
 * active for log GC: longer than one check-quorum window, which clears recent_active. */
#define NODE_GC_ACTIVE_ELECTIONS 2u

/* A write proposed as leader, waiting for its entry (index, term) to apply. */
typedef struct node_waiter {
	uint64_t index;
	uint64_t term;
	uint64_t client_id;
	uint64_t seq;
	request *req; /* one reference, owned until answered */
	uint64_t attempt;
} node_waiter;

/* A ring of waiters. Invariant: indexes strictly increase from head to tail (a new waiter at or
 * below the tail's index first retires the tail: those entries were truncated). */
typedef struct node_waiters {
	node_waiter *buf; /* cap slots, malloc'd; owned by the node */
	size_t cap;       /* 0 or a power of two */
	size_t head;
	size_t n;
} node_waiters;

/* A linearizable read (GET or SCAN) waiting for its read index, then for the apply. */
typedef struct node_read {
	request *req; /* one reference, owned until answered */
	uint64_t attempt;
	uint64_t ctx;   /* its ReadIndex context; 0 until issued at the end of the drain pass */
	uint64_t term;  /* the leader's term when issued */
	uint64_t index; /* the read index, once has_index */
	bool has_index;
	uint64_t since; /* tick_count when issued */
} node_read;

/* Pending reads in arrival order. Invariant: ctx never decreases along the array, and the
 * unissued reads (ctx 0) form its tail. */
typedef struct node_reads {
	node_read *v; /* malloc'd, owned by the node */
	size_t n;
	size_t cap;
} node_reads;

struct node {
	uint64_t id;
	node_config
	    cfg; /* copy; db_path, dir and store.vfs cleared (borrowed in node_start only) */
	size_t drain_cap;
	store *store;     /* owned; closed by node_stop */
	raft_rawnode *rn; /* owned; freed by node_stop */
	mailbox *mb;      /* owned; destroyed by node_free */
	pthread_t thread;
	bool running;     /* thread started, not joined; touched by node_start/node_stop only */
	bool stopped;     /* node_stop done; likewise */
	atomic_bool stop; /* set by node_stop before its mailbox_notify */
	atomic_uint
	    ticks; /* added by node_add_ticks before its mailbox_notify; taken by the thread */

	/* Owned by the node thread (by node_start before it runs, node_stop after the join). */
	node_waiters waiters;
	node_reads reads;
	uint64_t next_ctx;   /* last ReadIndex context issued */
	uint64_t tick_count; /* ticks handled since start */
	int failed;          /* RAFTKV_OK, or the error that fail-stopped the node */
	char failure[128];
	bool failure_published;
	uint64_t proposals;
	uint64_t reads_served;
	uint64_t fsyncs;

	/* Snapshots and log GC; node thread only. */
	raft_storage storage;      /* the store's, snapshot() wrapped; ctx is the node */
	const raft_storage *inner; /* the store's own (valid while the store lives) */
	snapxfer_sender *sx_out;   /* owned; freed by node_stop */
	snapxfer_receiver *sx_in;  /* owned; freed by node_stop; borrows the store */
	unsigned snap_max;         /* outgoing transfers at once */
	/* Snapshots storage handed to the rawnode whose messages have not started a transfer yet
	 * (reset once the Ready holding those messages is sent): they count against snap_max. */
	unsigned snap_granted;
	/* Between raft_rawnode_ready and advance, reports to the rawnode wait here (deduplicated
	 * by peer, the last outcome wins) and are made after the advance. */
	bool in_ready;
	uint64_t deferred_to[RAFT_MAX_VOTERS];
	bool deferred_ok[RAFT_MAX_VOTERS];
	size_t n_deferred;
	uint64_t gc_mark; /* applied index at the previous node_gc */
	/* tick_count at which each peer (by id; 0: free slot) was last seen recent_active while
	 * this node led; see node_gc_active. */
	uint64_t gc_seen_id[RAFT_MAX_VOTERS];
	uint64_t gc_seen_tick[RAFT_MAX_VOTERS];
	uint64_t snap_gc_due; /* tick_count of the next store_snapshot_gc */

	/* Written by whoever owns the node's state (above), read by node_status_get. */
	pthread_mutex_t status_mu;
	raftkv_status status; /* guarded by status_mu */
};

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Maps a store (or core: they share the numbering) error to a RAFTKV_* code. */
static int node_map_err(int rv)
{
	switch (rv) {
	case STORE_ERR_NOT_OURS:
	case STORE_ERR_VERSION:
	case STORE_ERR_WRONG_NODE:
	case STORE_ERR_CORRUPT:
		return RAFTKV_CORRUPT;
	case STORE_ERR_NOMEM:
		return RAFTKV_NOMEM;
	case STORE_ERR_INVALID:
		return RAFTKV_INVALID;
	default:
		return RAFTKV_IO;
	}
}

static void node_errmsg(char *errmsg, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (errmsg == NULL || len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(errmsg, len, fmt, ap);
	va_end(ap);
}

static void node_trace(node *n, const char *line)
{
	if (n->cfg.trace != NULL)
		n->cfg.trace(n->cfg.trace_ctx, n->id, line);
}

/*
 * Records a fail-stop (the first cause wins). rv is the failing call's status. If the store has
 * fail-stopped, its own cause and message are reported, since a rawnode error caused by a storage
 * callback only says "I/O". The requests it holds are answered by node_release_all at the next
 * safe point of the loop, never from inside an iteration over them.
 */
static void node_fail(node *n, int rv, const char *what)
{
	int cause = store_failed(n->store);

	if (n->failed != RAFTKV_OK)
		return;
	if (cause != STORE_OK) {
		n->failed = node_map_err(cause);
		snprintf(n->failure, sizeof(n->failure), "%s: %s", what,
		         store_errmsg(n->store)[0] ? store_errmsg(n->store)
		                                   : store_strerror(cause));
	} else {
		n->failed = node_map_err(rv);
		snprintf(n->failure, sizeof(n->failure), "%s: %s", what, store_strerror(rv));
	}
	node_trace(n, n->failure);
}

/* After a rawnode call returned rv != RAFT_OK: fail-stop if the rawnode stopped; otherwise the
 * error was about the input (a message no correct peer sends, a dropped proposal). */
static void node_check_raft(node *n, int rv, const char *what)
{
	raft_status st;

	raft_rawnode_status(n->rn, &st);
	if (st.error != RAFT_OK)
		node_fail(n, st.error, what);
	else if (rv == RAFT_ERR_NOMEM || rv == RAFT_ERR_IO || rv == RAFT_ERR_STOPPED)
		node_fail(n, rv, what);
}

/* ------------------------------------------------------------------------------------------ */
/* Replies                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Answers one request copy and drops its reference (r is unusable afterwards). */
static void node_answer(node *n, request *r, uint64_t attempt, request_reply *rep)
{
	rep->node_id = n->id;
	if (r->on_reply != NULL)
		r->on_reply(r, attempt, rep);
	request_release(r);
}

static void node_answer_status(node *n, request *r, uint64_t attempt, enum request_status st,
                               uint64_t leader)
{
	request_reply rep = {.status = st, .leader = leader};

	node_answer(n, r, attempt, &rep);
}

/* ------------------------------------------------------------------------------------------ */
/* Waiters                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static node_waiter *node_waiters_at(node_waiters *q, size_t i)
{
	return &q->buf[(q->head + i) & (q->cap - 1)];
}

static node_waiter *node_waiters_front(node_waiters *q)
{
	return q->n > 0 ? node_waiters_at(q, 0) : NULL;
}

static node_waiter node_waiters_pop_front(node_waiters *q)
{
	node_waiter w = *node_waiters_at(q, 0);

	q->head = (q->head + 1) & (q->cap - 1);
	q->n--;
	return w;
}

static int node_waiters_grow(node_waiters *q)
{
	size_t ncap = q->cap != 0 ? q->cap * 2 : 64;
	node_waiter *nb = malloc(ncap * sizeof(*nb));

	if (nb == NULL)
		return RAFTKV_NOMEM;
	for (size_t i = 0; i < q->n; i++)
		nb[i] = *node_waiters_at(q, i);
	free(q->buf);
	q->buf = nb;
	q->cap = ncap;
	q->head = 0;
	return RAFTKV_OK;
}

/* Adds w (its request reference moves into the ring). Waiters at or above w's index were
 * overwritten by a later leadership of this node: their outcome is unknown. */
static int node_waiters_push(node *n, const node_waiter *w)
{
	node_waiters *q = &n->waiters;

	while (q->n > 0 && node_waiters_at(q, q->n - 1)->index >= w->index) {
		node_waiter old = *node_waiters_at(q, q->n - 1);

		q->n--;
		node_answer_status(n, old.req, old.attempt, REQUEST_RETRY, 0);
	}
	if (q->n == q->cap && node_waiters_grow(q) != RAFTKV_OK)
		return RAFTKV_NOMEM;
	*node_waiters_at(q, q->n) = *w;
	q->n++;
	return RAFTKV_OK;
}

/* The reply a waiter gets for its own entry's result. */
static void node_answer_result(node *n, const node_waiter *w, const store_result *res)
{
	request_reply rep = {.status = REQUEST_RETRY};

	switch (res->status) {
	case STORE_RESULT_OK:
		rep.status = REQUEST_OK;
		if (w->req->op == STORE_OP_REGISTER || w->req->op == STORE_OP_GET) {
			rep.value = res->value_len > 0 ? res->value : NULL;
			rep.value_len = res->value_len;
		}
		break;
	case STORE_RESULT_NOT_FOUND:
		rep.status = REQUEST_NOT_FOUND;
		break;
	case STORE_RESULT_SESSION_EXPIRED:
		rep.status = REQUEST_SESSION_EXPIRED;
		break;
	case STORE_RESULT_INVALID:
		rep.status = REQUEST_INVALID;
		break;
	}
	node_answer(n, w->req, w->attempt, &rep);
}

/*
 * store_apply's callback, once per applied entry in log order. Waiters below res->index were
 * skipped (their entries are gone). The waiter at res->index gets the result only if the entry
 * is its own: same term (by Log Matching, the same (index, term) is the same entry, Raft paper
 * §5.3) and the same (client id, seq); otherwise the outcome is unknown (REQUEST_RETRY). A
 * waiter never gets another client's result.
 */
static void node_on_applied(void *ctx, const store_result *res)
{
	node *n = ctx;
	node_waiter *front;

	while ((front = node_waiters_front(&n->waiters)) != NULL && front->index < res->index) {
		node_waiter w = node_waiters_pop_front(&n->waiters);

		node_answer_status(n, w.req, w.attempt, REQUEST_RETRY, 0);
	}
	if (front == NULL || front->index != res->index)
		return;
	node_waiter w = node_waiters_pop_front(&n->waiters);
	if (w.term == res->term && w.client_id == res->client_id && w.seq == res->seq)
		node_answer_result(n, &w, res);
	else
		node_answer_status(n, w.req, w.attempt, REQUEST_RETRY, 0);
}

/* Waiters at or below the applied index that no callback reached (an index that applied
 * without a callback, as a snapshot install does) have lost their entry. */
static void node_waiters_sweep(node *n)
{
	uint64_t applied = store_applied_index(n->store);
	node_waiter *front;

	while ((front = node_waiters_front(&n->waiters)) != NULL && front->index <= applied) {
		node_waiter w = node_waiters_pop_front(&n->waiters);

		node_answer_status(n, w.req, w.attempt, REQUEST_RETRY, 0);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Reads                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static int node_reads_push(node_reads *rs, request *r, uint64_t attempt)
{
	if (rs->n == rs->cap) {
		size_t ncap = rs->cap != 0 ? rs->cap * 2 : 64;
		node_read *nv = realloc(rs->v, ncap * sizeof(*nv));

		if (nv == NULL)
			return RAFTKV_NOMEM;
		rs->v = nv;
		rs->cap = ncap;
	}
	rs->v[rs->n++] = (node_read){.req = r, .attempt = attempt};
	return RAFTKV_OK;
}

/*
 * Issues one ReadIndex (Raft dissertation §6.4) for every read that arrived in this drain pass:
 * they share its context, so a burst of reads costs one heartbeat round. On a node that lost
 * leadership meanwhile they get REQUEST_NOT_LEADER.
 */
static void node_issue_reads(node *n)
{
	node_reads *rs = &n->reads;
	size_t first = rs->n;
	raft_status st;
	int rv;

	while (first > 0 && rs->v[first - 1].ctx == 0)
		first--;
	if (first == rs->n)
		return;
	raft_rawnode_status(n->rn, &st);
	if (st.role != RAFT_LEADER) {
		while (rs->n > first) {
			node_read *r = &rs->v[--rs->n];

			node_answer_status(n, r->req, r->attempt, REQUEST_NOT_LEADER, st.leader);
		}
		return;
	}
	rv = raft_rawnode_read_index(n->rn, ++n->next_ctx);
	if (rv != RAFT_OK) {
		while (rs->n > first) {
			node_read *r = &rs->v[--rs->n];

			node_answer_status(n, r->req, r->attempt, REQUEST_RETRY, 0);
		}
		node_check_raft(n, rv, "read index");
		return;
	}
	for (size_t i = first; i < rs->n; i++) {
		rs->v[i].ctx = n->next_ctx;
		rs->v[i].term = st.term;
		rs->v[i].since = n->tick_count;
	}
}

/* Gives the read index of each confirmed context to its reads. */
static void node_reads_record(node *n, const raft_read_state *states, size_t n_states)
{
	for (size_t k = 0; k < n_states; k++) {
		for (size_t i = 0; i < n->reads.n; i++) {
			node_read *r = &n->reads.v[i];

			if (r->ctx == states[k].context && !r->has_index) {
				r->index = states[k].index;
				r->has_index = true;
			}
		}
	}
}

/* Copies of the pairs a scan collects for one reply. */
typedef struct node_scan {
	request_pair *pairs; /* malloc'd; each pair's key and value share one malloc'd block,
	                        pointed to by key */
	size_t n;
	size_t cap;
	size_t bytes;
	void *next; /* malloc'd: the first key the byte cap kept out */
	size_t next_len;
	int err;
} node_scan;

static void node_scan_free(node_scan *sc)
{
	for (size_t i = 0; i < sc->n; i++)
		free((void *)sc->pairs[i].key);
	free(sc->pairs);
	free(sc->next);
}

static void *node_dup(const void *p, size_t len)
{
	void *d = malloc(len > 0 ? len : 1);

	if (d != NULL && len > 0)
		memcpy(d, p, len);
	return d;
}

/* store_scan callback: copies pairs until the byte cap, always at least one. */
static int node_scan_pair(void *ctx, const void *key, size_t key_len, const void *value,
                          size_t value_len)
{
	node_scan *sc = ctx;
	unsigned char *block;

	if (sc->n > 0 && sc->bytes + key_len + value_len > REQUEST_SCAN_MAX_BYTES) {
		sc->next = node_dup(key, key_len);
		sc->next_len = key_len;
		if (sc->next == NULL)
			sc->err = RAFTKV_NOMEM;
		return 1;
	}
	if (sc->n == sc->cap) {
		size_t ncap = sc->cap != 0 ? sc->cap * 2 : 16;
		request_pair *np = realloc(sc->pairs, ncap * sizeof(*np));

		if (np == NULL) {
			sc->err = RAFTKV_NOMEM;
			return 1;
		}
		sc->pairs = np;
		sc->cap = ncap;
	}
	block = malloc(key_len + value_len + 1);
	if (block == NULL) {
		sc->err = RAFTKV_NOMEM;
		return 1;
	}
	memcpy(block, key, key_len);
	if (value_len > 0)
		memcpy(block + key_len, value, value_len);
	sc->pairs[sc->n++] = (request_pair){block, key_len, block + key_len, value_len};
	sc->bytes += key_len + value_len;
	return 0;
}

/* Answers a scan from the local store: one pass on this thread, so at one applied index. */
static void node_serve_scan(node *n, request *r, uint64_t attempt)
{
	size_t limit =
	    r->limit != 0 && r->limit < REQUEST_SCAN_MAX_PAIRS ? r->limit : REQUEST_SCAN_MAX_PAIRS;
	node_scan sc = {.err = RAFTKV_OK};
	request_reply rep = {.status = REQUEST_OK};
	void *next = NULL;
	size_t next_len = 0;
	int rv;

	rv = store_scan(n->store, r->key, r->key_len, r->value_len > 0 ? r->value : NULL,
	                r->value_len, limit, node_scan_pair, &sc, &next, &next_len);
	if (rv != STORE_OK || sc.err != RAFTKV_OK) {
		rep.status = rv == STORE_ERR_INVALID ? REQUEST_INVALID : REQUEST_RETRY;
		if (rv != STORE_OK && rv != STORE_ERR_INVALID)
			node_fail(n, rv, "scan");
	} else {
		rep.pairs = sc.pairs;
		rep.n_pairs = sc.n;
		rep.next = next != NULL ? next : sc.next;
		rep.next_len = next != NULL ? next_len : sc.next_len;
		n->reads_served++;
	}
	node_answer(n, r, attempt, &rep);
	free(next);
	node_scan_free(&sc);
}

static void node_serve_get(node *n, request *r, uint64_t attempt)
{
	request_reply rep = {.status = REQUEST_OK};
	void *value = NULL;
	size_t len = 0;
	int rv = store_get(n->store, r->key, r->key_len, &value, &len);

	if (rv == STORE_OK) {
		rep.value = len > 0 ? value : NULL;
		rep.value_len = len;
		n->reads_served++;
	} else if (rv == STORE_ERR_NOT_FOUND) {
		rep.status = REQUEST_NOT_FOUND;
		n->reads_served++;
	} else if (rv == STORE_ERR_INVALID) {
		rep.status = REQUEST_INVALID;
	} else {
		rep.status = REQUEST_RETRY;
		node_fail(n, rv, "get");
	}
	node_answer(n, r, attempt, &rep);
	free(value);
}

/*
 * After a Ready: answers every read whose read index is applied; answers REQUEST_RETRY to reads
 * still without a read index once this node is no longer the leader of their term (the rawnode
 * forgot them), or once they waited NODE_READ_EXPIRY_ELECTIONS election timeouts. A read that
 * has its index stays valid whatever happens to leadership: the index was confirmed by a quorum
 * while this node led, and applying up to it needs no leader. Keeps the array's order.
 */
static void node_reads_service(node *n)
{
	uint64_t applied = store_applied_index(n->store);
	uint64_t expiry = (uint64_t)NODE_READ_EXPIRY_ELECTIONS * (uint64_t)n->cfg.election_tick;
	node_reads *rs = &n->reads;
	raft_status st;
	size_t keep = 0;

	raft_rawnode_status(n->rn, &st);
	for (size_t i = 0; i < rs->n; i++) {
		node_read r = rs->v[i];
		bool lost = st.role != RAFT_LEADER || st.term != r.term;

		if (n->failed != RAFTKV_OK || r.ctx == 0) {
			rs->v[keep++] = r;
		} else if (r.has_index && r.index <= applied) {
			if (r.req->op == REQUEST_OP_SCAN)
				node_serve_scan(n, r.req, r.attempt);
			else
				node_serve_get(n, r.req, r.attempt);
		} else if (!r.has_index && (lost || n->tick_count - r.since >= expiry)) {
			node_answer_status(n, r.req, r.attempt, REQUEST_RETRY, 0);
		} else {
			rs->v[keep++] = r;
		}
	}
	rs->n = keep;
}

/* Answers every waiter and read REQUEST_RETRY (stop, fail-stop). */
static void node_release_all(node *n)
{
	while (n->waiters.n > 0) {
		node_waiter w = node_waiters_pop_front(&n->waiters);

		node_answer_status(n, w.req, w.attempt, REQUEST_RETRY, 0);
	}
	for (size_t i = 0; i < n->reads.n; i++)
		node_answer_status(n, n->reads.v[i].req, n->reads.v[i].attempt, REQUEST_RETRY, 0);
	n->reads.n = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Status                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static int node_role(int raft_role)
{
	switch (raft_role) {
	case RAFT_LEADER:
		return RAFTKV_ROLE_LEADER;
	case RAFT_CANDIDATE:
		return RAFTKV_ROLE_CANDIDATE;
	case RAFT_PRE_CANDIDATE:
		return RAFTKV_ROLE_PRE_CANDIDATE;
	default:
		return RAFTKV_ROLE_FOLLOWER;
	}
}

/* Publishes the status; tells the cluster when something it waits on changed (notify). */
static void node_publish(node *n, bool notify)
{
	raftkv_status s;
	raft_status st;
	bool changed;

	raft_rawnode_status(n->rn, &st);
	memset(&s, 0, sizeof(s));
	s.id = n->id;
	s.role = node_role(st.role);
	s.term = st.term;
	s.leader = st.leader;
	s.commit = st.commit;
	s.applied = store_applied_index(n->store);
	s.first_index = st.first_index;
	s.last_index = st.last_index;
	s.proposals = n->proposals;
	s.reads = n->reads_served;
	s.fsyncs = n->fsyncs;
	if (n->sx_out != NULL) {
		snapxfer_sender_stats so;
		snapxfer_receiver_stats si;

		snapxfer_sender_stats_get(n->sx_out, &so);
		snapxfer_receiver_stats_get(n->sx_in, &si);
		s.snapshots_sent = so.completed;
		s.snapshot_bytes_sent = so.bytes_sent;
		s.snapshots_received = si.installed;
		s.snapshot_bytes_received = si.bytes_received;
	}
	s.failed = n->failed;
	memcpy(s.failure, n->failure, sizeof(s.failure));
	pthread_mutex_lock(&n->status_mu);
	changed = s.role != n->status.role || s.leader != n->status.leader ||
	          s.term != n->status.term || s.commit != n->status.commit ||
	          s.applied != n->status.applied || s.failed != n->status.failed ||
	          s.snapshots_sent != n->status.snapshots_sent ||
	          s.snapshots_received != n->status.snapshots_received;
	n->status = s;
	pthread_mutex_unlock(&n->status_mu);
	if (notify && changed && n->cfg.changed != NULL)
		n->cfg.changed(n->cfg.ctx, n->id);
}

/* At a safe point of the loop: a failed node answers everything it holds, and says so once. */
static void node_settle_failure(node *n)
{
	if (n->failed == RAFTKV_OK)
		return;
	node_release_all(n);
	if (!n->failure_published) {
		n->failure_published = true;
		node_publish(n, true);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Requests                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* The command a write request proposes (borrowing its key and value). */
static void node_command_of(const request *r, store_command *c)
{
	memset(c, 0, sizeof(*c));
	c->op = r->op;
	c->client_id = r->client_id;
	if (r->op == STORE_OP_REGISTER)
		return;
	c->epoch = r->epoch;
	c->seq = r->seq;
	c->low_seq = r->low_seq;
	c->key = r->key;
	c->key_len = r->key_len;
	if (r->op != STORE_OP_DELETE) {
		c->value = r->value;
		c->value_len = r->value_len;
	}
}

enum node_req_kind { NODE_REQ_BAD, NODE_REQ_WRITE, NODE_REQ_READ };

static bool node_range_key_ok(const void *key, size_t len)
{
	return len <= COMMAND_MAX_KEY && (len == 0 || key != NULL);
}

/* Classifies r by its shape: writes must form a valid command, reads valid keys. */
static enum node_req_kind node_request_kind(const request *r)
{
	store_command c;

	switch (r->op) {
	case STORE_OP_PUT:
	case STORE_OP_DELETE:
	case STORE_OP_APPEND:
	case STORE_OP_REGISTER:
		node_command_of(r, &c);
		return command_valid(&c) ? NODE_REQ_WRITE : NODE_REQ_BAD;
	case STORE_OP_GET:
		return r->key_len > 0 && node_range_key_ok(r->key, r->key_len) ? NODE_REQ_READ
		                                                               : NODE_REQ_BAD;
	case REQUEST_OP_SCAN:
		return node_range_key_ok(r->key, r->key_len) &&
		               node_range_key_ok(r->value, r->value_len)
		           ? NODE_REQ_READ
		           : NODE_REQ_BAD;
	default:
		return NODE_REQ_BAD;
	}
}

/* Proposes a write as leader; it then waits for its entry (index, term) to apply. */
static void node_propose(node *n, request *r, uint64_t attempt)
{
	store_command c;
	raft_status st;
	void *buf;
	size_t len;
	int rv;

	node_command_of(r, &c);
	rv = command_encode(&c, &buf, &len);
	if (rv != STORE_OK) {
		node_answer_status(n, r, attempt,
		                   rv == STORE_ERR_INVALID ? REQUEST_INVALID : REQUEST_RETRY, 0);
		return;
	}
	rv = raft_rawnode_propose(n->rn, buf, len);
	free(buf);
	if (rv != RAFT_OK) {
		node_answer_status(n, r, attempt, REQUEST_RETRY, 0);
		if (rv != RAFT_ERR_PROPOSAL_DROPPED)
			node_check_raft(n, rv, "propose");
		return;
	}
	n->proposals++;
	/* The leader appended the entry to its own log at once, in its current term. */
	raft_rawnode_status(n->rn, &st);
	node_waiter w = {.index = st.last_index,
	                 .term = st.term,
	                 .client_id = r->client_id,
	                 .seq = r->op == STORE_OP_REGISTER ? 0 : r->seq,
	                 .req = r,
	                 .attempt = attempt};
	if (node_waiters_push(n, &w) != RAFTKV_OK)
		node_answer_status(n, r, attempt, REQUEST_RETRY, 0);
}

/* Takes one request copy (its reference is now the node's). */
static void node_on_request(node *n, request *r, uint64_t attempt)
{
	enum node_req_kind kind;
	raft_status st;

	if (n->failed != RAFTKV_OK) {
		node_answer_status(n, r, attempt, REQUEST_RETRY, 0);
		return;
	}
	kind = node_request_kind(r);
	if (kind == NODE_REQ_BAD) {
		node_answer_status(n, r, attempt, REQUEST_INVALID, 0);
		return;
	}
	raft_rawnode_status(n->rn, &st);
	if (st.role != RAFT_LEADER) {
		node_answer_status(n, r, attempt, REQUEST_NOT_LEADER, st.leader);
		return;
	}
	if (kind == NODE_REQ_WRITE)
		node_propose(n, r, attempt);
	else if (node_reads_push(&n->reads, r, attempt) != RAFTKV_OK)
		node_answer_status(n, r, attempt, REQUEST_RETRY, 0);
}

/* Steps one encoded message (buf is malloc'd and freed here). Undecodable bytes are dropped. */
static void node_on_raft(node *n, void *buf, size_t len)
{
	raft_message m;
	int rv = raft_message_decode(buf, len, &m);

	free(buf);
	if (rv != RAFT_OK) {
		node_trace(n, "dropped an undecodable message");
		return;
	}
	if (m.type == RAFT_MSG_SNAPSHOT) {
		/* Snapshots arrive as chunks (node_on_chunk); a bare one names a file this node
		 * never staged, which the store would refuse to install. */
		node_trace(n, "dropped a SNAPSHOT message that came without its chunks");
	} else if (n->failed == RAFTKV_OK) {
		rv = raft_rawnode_step(n->rn, &m);
		if (rv != RAFT_OK)
			node_check_raft(n, rv, "step");
	}
	raft_message_free(&m);
}

/* ------------------------------------------------------------------------------------------ */
/* Snapshot transfer                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* raft_rawnode_report_snapshot, deferred past the advance while a Ready is outstanding. */
static void node_report_snapshot(void *ctx, uint64_t to, bool ok)
{
	node *n = ctx;
	size_t i;
	int rv;

	if (n->failed != RAFTKV_OK)
		return;
	if (!n->in_ready) {
		rv = raft_rawnode_report_snapshot(n->rn, to, ok);
		if (rv != RAFT_OK)
			node_check_raft(n, rv, "report snapshot");
		return;
	}
	for (i = 0; i < n->n_deferred && n->deferred_to[i] != to; i++)
		;
	if (i == RAFT_MAX_VOTERS)
		return; /* more peers than a cluster has: not a peer */
	n->deferred_to[i] = to;
	n->deferred_ok[i] = ok;
	if (i == n->n_deferred)
		n->n_deferred++;
}

static void node_flush_reports(node *n)
{
	size_t k = n->n_deferred;

	n->n_deferred = 0;
	for (size_t i = 0; i < k; i++)
		node_report_snapshot(n, n->deferred_to[i], n->deferred_ok[i]);
}

/* snapxfer's send_chunk: c (malloc'd) goes to the transport, which owns it from here. */
static void node_send_chunk(void *ctx, snapxfer_chunk *c)
{
	node *n = ctx;

	if (n->cfg.send_item == NULL) {
		free(c);
		return;
	}
	n->cfg.send_item(n->cfg.ctx, n->id, c->to, NODE_ITEM_SNAP_CHUNK, c, sizeof(*c) + c->len);
}

/* snapxfer's send_ack: a (borrowed) is copied for the transport. */
static void node_send_ack(void *ctx, const snapxfer_ack *a)
{
	node *n = ctx;
	snapxfer_ack *copy;

	if (n->cfg.send_item == NULL || (copy = malloc(sizeof(*copy))) == NULL)
		return; /* a lost ack: the sender resends */
	*copy = *a;
	n->cfg.send_item(n->cfg.ctx, n->id, a->to, NODE_ITEM_SNAP_ACK, copy, sizeof(*copy));
}

/*
 * The rawnode wants to send snapshot m (borrowed) to m->to: start (or restart) a chunked
 * transfer of its file. Anything that prevents it is reported as a failed snapshot, so the
 * follower leaves the snapshot state and is probed again.
 */
static void node_start_transfer(node *n, const raft_message *m)
{
	store_snapshot_id id;
	char *path = NULL;
	int rv = STORE_ERR_INVALID;

	if (n->cfg.send_item != NULL &&
	    store_snapshot_id_decode(m->snapshot.data, m->snapshot.len, &id) == STORE_OK)
		rv = store_snapshot_path(n->store, &id, &path, NULL);
	if (rv == STORE_OK)
		rv = snapxfer_sender_start(n->sx_out, m, path) == SNAPXFER_OK ? STORE_OK
		                                                              : STORE_ERR_IO;
	free(path);
	if (rv == STORE_OK)
		return;
	if (store_failed(n->store) != STORE_OK) {
		node_fail(n, rv, "sending a snapshot");
		return;
	}
	node_trace(n, "could not start a snapshot transfer");
	node_report_snapshot(n, m->to, false);
}

/* A chunk (c, len bytes, malloc'd; freed here). A complete snapshot is stepped into the rawnode;
 * the next Ready says whether it was installed (node_resolve_snapshot). */
static void node_on_chunk(node *n, snapxfer_chunk *c, size_t len)
{
	raft_message m;
	raft_status st;
	int rv;

	if (n->failed != RAFTKV_OK || len < sizeof(*c) || c->len != len - sizeof(*c)) {
		free(c);
		return;
	}
	raft_rawnode_status(n->rn, &st);
	rv = snapxfer_receiver_on_chunk(n->sx_in, c, n->tick_count, st.commit, &m);
	free(c);
	if (rv < 0) {
		node_fail(n, rv, "receiving a snapshot");
		return;
	}
	if (rv != SNAPXFER_RECV_COMPLETE)
		return;
	rv = raft_rawnode_step(n->rn, &m);
	raft_message_free(&m);
	if (rv != RAFT_OK) {
		snapxfer_receiver_abort(n->sx_in);
		node_check_raft(n, rv, "step snapshot");
		return;
	}
	/* Dropped without even a response, so its term is below ours (a higher term changes the
	 * hard state; a current one is always answered): no Ready will name it, and the sender,
	 * a deposed leader, must not count it as installed (review F1). */
	if (!raft_rawnode_has_ready(n->rn))
		snapxfer_receiver_reject(n->sx_in);
}

/* In the Ready after a snapshot was stepped, once it is persisted: installed if the Ready
 * carried that very snapshot; otherwise raft ignored it (at or below commit, or fast-forwarded)
 * and the staging is discarded. Either way the sender gets DONE. */
static void node_resolve_snapshot(node *n, const raft_ready *rd)
{
	store_snapshot_id want, got;
	bool installed;

	if (!snapxfer_receiver_pending(n->sx_in, &want))
		return;
	installed =
	    rd->has_snapshot &&
	    store_snapshot_id_decode(rd->snapshot.data, rd->snapshot.len, &got) == STORE_OK &&
	    got.node_id == want.node_id && got.index == want.index && got.term == want.term &&
	    got.nonce == want.nonce;
	snapxfer_receiver_resolve(n->sx_in, installed);
}

/* An ack (a, len bytes, malloc'd; freed here). A finished transfer shows in the status at once
 * (and wakes cluster waiters), since no Ready may follow it. */
static void node_on_ack(node *n, snapxfer_ack *a, size_t len)
{
	snapxfer_sender_stats before, after;

	if (n->failed == RAFTKV_OK && len == sizeof(*a)) {
		snapxfer_sender_stats_get(n->sx_out, &before);
		snapxfer_sender_on_ack(n->sx_out, a);
		snapxfer_sender_stats_get(n->sx_out, &after);
		if (after.completed != before.completed)
			node_publish(n, true);
	}
	free(a);
}

/* ---- the storage the rawnode reads: the store's, with snapshot() bounded ------------------ */

static int node_st_initial_state(void *ctx, raft_hard_state *hs, raft_conf_state *cs)
{
	const raft_storage *in = ((node *)ctx)->inner;

	return in->initial_state(in->ctx, hs, cs);
}

static int node_st_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_size, raft_entry **out,
                           size_t *n)
{
	const raft_storage *in = ((node *)ctx)->inner;

	return in->entries(in->ctx, lo, hi, max_size, out, n);
}

static int node_st_term(void *ctx, uint64_t i, uint64_t *term)
{
	const raft_storage *in = ((node *)ctx)->inner;

	return in->term(in->ctx, i, term);
}

static int node_st_first_index(void *ctx, uint64_t *index)
{
	const raft_storage *in = ((node *)ctx)->inner;

	return in->first_index(in->ctx, index);
}

static int node_st_last_index(void *ctx, uint64_t *index)
{
	const raft_storage *in = ((node *)ctx)->inner;

	return in->last_index(in->ctx, index);
}

/* At most snap_max outgoing transfers: further requests wait their turn, and the rawnode sees
 * "temporarily unavailable" and asks again at a later probe. The store says the same while it
 * dumps a new snapshot on its helper thread. */
static int node_st_snapshot(void *ctx, raft_snapshot *out)
{
	node *n = ctx;
	int rv;

	if (snapxfer_sender_active(n->sx_out) + n->snap_granted >= n->snap_max)
		return RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE;
	rv = n->inner->snapshot(n->inner->ctx, out);
	if (rv == RAFT_OK)
		n->snap_granted++;
	return rv;
}

static void node_storage_init(node *n)
{
	n->inner = store_raft_storage(n->store);
	n->storage = (raft_storage){.ctx = n,
	                            .initial_state = node_st_initial_state,
	                            .entries = node_st_entries,
	                            .term = node_st_term,
	                            .first_index = node_st_first_index,
	                            .last_index = node_st_last_index,
	                            .snapshot = node_st_snapshot};
}

/* ---- log GC ------------------------------------------------------------------------------- */

/*
 * Fills active[i] for st->peers[i]: seen recent_active within NODE_GC_ACTIVE_ELECTIONS
 * election timeouts. Records the sightings, so a follower stays active across the
 * check-quorum tick that clears recent_active (review F3). active has RAFT_MAX_VOTERS slots.
 */
static void node_gc_active(node *n, const raft_status *st, bool *active)
{
	uint64_t span = (uint64_t)NODE_GC_ACTIVE_ELECTIONS * (uint64_t)n->cfg.election_tick;

	for (size_t i = 0; i < st->n_peers && i < RAFT_MAX_VOTERS; i++) {
		uint64_t id = st->peers[i].id;
		size_t k, free_k = RAFT_MAX_VOTERS;

		for (k = 0; k < RAFT_MAX_VOTERS && n->gc_seen_id[k] != id; k++)
			if (n->gc_seen_id[k] == 0 && free_k == RAFT_MAX_VOTERS)
				free_k = k;
		if (k == RAFT_MAX_VOTERS && st->peers[i].recent_active &&
		    free_k < RAFT_MAX_VOTERS) {
			k = free_k;
			n->gc_seen_id[k] = id;
		}
		if (k < RAFT_MAX_VOTERS && st->peers[i].recent_active)
			n->gc_seen_tick[k] = n->tick_count;
		active[i] = st->peers[i].recent_active ||
		            (k < RAFT_MAX_VOTERS && n->tick_count - n->gc_seen_tick[k] <= span);
	}
}

/*
 * Log GC, decided by this peer alone (as etcd does: compaction is local state, nothing is
 * proposed). Called after every Ready (after the advance) and every pass that ran ticks. With
 * A the applied index, F the first log index, T gc_threshold, R gc_trailing, H gc_hard_limit
 * (T <= H <= 2T) and n the entries applied since the previous call:
 *   - A - F < T: nothing;
 *   - T <= A - F < H: compact towards A - R, a leader stopping at gc_policy_limit's bound;
 *   - A - F >= H: compact towards A - R whatever the followers need; a lagging follower then
 *     catches up by snapshot. Only here can the snapshot livelock happen: a follower whose
 *     snapshot transfer takes so long that the leader applies H - R more entries meanwhile
 *     finds the entries after its snapshot gone and needs a new one.
 * Each call deletes at most NODE_GC_ROWS + n rows. The bound: A - F < H after every call.
 * Proof: it held after the previous call (A - n - F < H); if now A - F >= H, this call deletes
 * min(NODE_GC_ROWS + n, A - R - F + 1) rows, leaving A - F <= max(R - 1, A - n - F - NODE_GC_ROWS)
 * < H. A changes only in a Ready, and every Ready is followed by a call, so A - truncated =
 * A - F + 1 <= H <= 2T holds whenever the node is between passes, and so at once when a
 * workload stops. After a restart with a longer log (a smaller threshold, or a log from before
 * GC), it takes ceil((A - F - H) / NODE_GC_ROWS) + 1 passes, each tick making one.
 */
static void node_gc(node *n)
{
	uint64_t applied, first, target, rows, hard;
	bool active[RAFT_MAX_VOTERS] = {false};
	raft_status st;
	bool more = false;
	int rv;

	if (n->cfg.gc_threshold == 0 || n->failed != RAFTKV_OK)
		return;
	applied = store_applied_index(n->store);
	rows = NODE_GC_ROWS + (applied > n->gc_mark ? applied - n->gc_mark : 0);
	n->gc_mark = applied;
	raft_rawnode_status(n->rn, &st);
	if (st.role == RAFT_LEADER)
		node_gc_active(n, &st, active); /* at every pass: it records sightings */
	first = st.first_index;
	if (applied < first || applied - first < n->cfg.gc_threshold)
		return;
	hard = n->cfg.gc_hard_limit != 0 ? n->cfg.gc_hard_limit : 2 * n->cfg.gc_threshold;
	target = applied - n->cfg.gc_trailing;
	if (applied - first < hard && st.role == RAFT_LEADER)
		target = gc_policy_limit(&st, active, target, snapxfer_sender_min_index(n->sx_out));
	if (target < first)
		return;
	rv = store_compact(n->store, target, rows, &more);
	if (rv == STORE_OK || rv == STORE_ERR_INVALID || rv == RAFT_ERR_COMPACTED)
		return; /* the refusals cannot happen here (target in [first, applied]) */
	node_fail(n, rv, "log GC");
}

/* Snapshot files: keep the ones being sent (and the store keeps its newest). */
static void node_snapshot_gc(node *n)
{
	store_snapshot_id keep[RAFT_MAX_VOTERS];
	size_t k;

	if (n->tick_count < n->snap_gc_due || n->failed != RAFTKV_OK)
		return;
	n->snap_gc_due = n->tick_count + (uint64_t)NODE_SNAP_GC_ELECTIONS * n->cfg.election_tick;
	k = snapxfer_sender_ids(n->sx_out, keep, RAFT_MAX_VOTERS);
	store_snapshot_gc(n->store, keep, k);
}

/* After a Ready: transfers of an earlier term or of a node no longer leader end unreported (the
 * rawnode reset every follower's progress when its role or term changed). */
static void node_cancel_stale_transfers(node *n)
{
	raft_status st;

	if (snapxfer_sender_active(n->sx_out) == 0)
		return;
	raft_rawnode_status(n->rn, &st);
	snapxfer_sender_cancel_stale(n->sx_out, st.role == RAFT_LEADER, st.term);
}

static void node_handle_item(node *n, const mailbox_item *it)
{
	int rv = RAFT_OK;

	switch (it->kind) {
	case NODE_ITEM_SNAP_CHUNK:
		node_on_chunk(n, it->ptr, (size_t)it->arg);
		return;
	case NODE_ITEM_SNAP_ACK:
		node_on_ack(n, it->ptr, (size_t)it->arg);
		return;
	case NODE_ITEM_RAFT:
		node_on_raft(n, it->ptr, (size_t)it->arg);
		return;
	case NODE_ITEM_REQUEST:
		node_on_request(n, it->ptr, it->arg);
		return;
	case NODE_ITEM_TRANSFER:
		if (n->failed == RAFTKV_OK)
			rv = raft_rawnode_transfer_leader(n->rn, it->arg);
		break;
	case NODE_ITEM_CAMPAIGN:
		if (n->failed == RAFTKV_OK)
			rv = raft_rawnode_campaign(n->rn);
		break;
	default:
		return; /* unknown kinds carry nothing the node could free */
	}
	if (rv != RAFT_OK)
		node_check_raft(n, rv, "control");
}

/* Frees or answers an item without any Raft work (stopping). */
static void node_discard_item(node *n, const mailbox_item *it)
{
	if (it->kind == NODE_ITEM_RAFT || it->kind == NODE_ITEM_SNAP_CHUNK ||
	    it->kind == NODE_ITEM_SNAP_ACK)
		free(it->ptr);
	else if (it->kind == NODE_ITEM_REQUEST)
		node_answer_status(n, it->ptr, it->arg, REQUEST_RETRY, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* The Ready loop                                                                             */
/* ------------------------------------------------------------------------------------------ */

static void node_send_all(node *n, const raft_message *ms, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		if (ms[i].type == RAFT_MSG_SNAPSHOT)
			node_start_transfer(n, &ms[i]);
		else
			n->cfg.send(n->cfg.ctx, &ms[i]);
	}
}

/* Handles one Ready in the order of node.h (3a-3f). Any failure fail-stops the node; the
 * outstanding Ready is then released by raft_rawnode_free. */
static void node_handle_ready(node *n)
{
	raft_ready rd;
	int rv = raft_rawnode_ready(n->rn, &rd);

	if (rv != RAFT_OK) {
		node_check_raft(n, rv, "ready");
		return;
	}
	n->in_ready = true;
	node_send_all(n, rd.messages, rd.n_messages);
	rv = store_persist_ready(n->store, &rd);
	if (rv != STORE_OK) {
		node_fail(n, rv, "persisting a Ready");
		return;
	}
	if (rd.must_sync && n->cfg.store.sync == STORE_SYNC_FULL)
		n->fsyncs++;
	node_resolve_snapshot(n, &rd);
	node_send_all(n, rd.persisted_messages, rd.n_persisted_messages);
	n->snap_granted = 0; /* every snapshot granted before this Ready has its transfer now */
	if (rd.has_snapshot)
		node_waiters_sweep(n);
	if (rd.n_committed_entries > 0) {
		rv = store_apply(n->store, rd.committed_entries, rd.n_committed_entries,
		                 node_on_applied, n);
		if (rv != STORE_OK) {
			node_fail(n, rv, "applying entries");
			return;
		}
		node_waiters_sweep(n);
	}
	node_reads_record(n, rd.read_states, rd.n_read_states);
	node_reads_service(n);
	if (n->failed != RAFTKV_OK)
		return;
	rv = raft_rawnode_advance(n->rn);
	n->in_ready = false;
	if (rv != RAFT_OK) {
		node_check_raft(n, rv, "advance");
		return;
	}
	node_flush_reports(n);
	node_cancel_stale_transfers(n);
	node_gc(n);
	if (n->failed != RAFTKV_OK)
		return;
	rv = store_maybe_checkpoint(n->store);
	if (rv != STORE_OK)
		node_fail(n, rv, "checkpoint");
	node_publish(n, true);
}

/* Runs the ticks added since the last pass, at most one election timeout's worth per pass; the
 * rest stay pending for the next pass, so a burst of ticks (a stalled node catching up, a large
 * raftkv_tick) is interleaved with Readies instead of queueing many heartbeat rounds at once. */
static void node_take_ticks(node *n)
{
	unsigned t = atomic_exchange_explicit(&n->ticks, 0, memory_order_acquire);
	unsigned cap = (unsigned)n->cfg.election_tick;

	if (t > cap) {
		atomic_fetch_add_explicit(&n->ticks, t - cap, memory_order_relaxed);
		t = cap;
	}
	if (n->failed != RAFTKV_OK)
		return;
	for (unsigned i = 0; i < t; i++) {
		int rv = raft_rawnode_tick(n->rn);

		n->tick_count++;
		if (rv != RAFT_OK) {
			node_check_raft(n, rv, "tick");
			if (n->failed != RAFTKV_OK)
				return;
		}
		snapxfer_sender_tick(n->sx_out);
	}
	if (t > 0) {
		node_gc(n);
		node_snapshot_gc(n);
	}
}

static bool node_has_ready(node *n)
{
	return n->failed == RAFTKV_OK && raft_rawnode_has_ready(n->rn);
}

/* Work that ends a park: see mailbox.h, whose protocol the park follows. */
static bool node_has_work(node *n)
{
	return atomic_load_explicit(&n->stop, memory_order_acquire) ||
	       atomic_load_explicit(&n->ticks, memory_order_acquire) != 0 || node_has_ready(n);
}

static void *node_main(void *arg)
{
	node *n = arg;
	mailbox_item it;

	while (!atomic_load_explicit(&n->stop, memory_order_acquire)) {
		size_t budget = n->drain_cap;

		while (budget > 0 && mailbox_pop(n->mb, &it) == MAILBOX_OK) {
			budget--;
			node_handle_item(n, &it);
		}
		node_take_ticks(n);
		if (n->failed == RAFTKV_OK)
			node_issue_reads(n);
		node_settle_failure(n);
		if (node_has_ready(n)) {
			node_handle_ready(n);
			node_settle_failure(n);
			continue;
		}
		if (budget == 0)
			continue;
		uint64_t key = mailbox_prepare_wait(n->mb);
		if (mailbox_pop(n->mb, &it) == MAILBOX_OK) {
			mailbox_cancel_wait(n->mb);
			node_handle_item(n, &it);
		} else if (node_has_work(n)) {
			mailbox_cancel_wait(n->mb);
		} else {
			mailbox_wait(n->mb, key, -1);
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Life cycle                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static int node_open_store(node *n, const node_config *cfg, char *errmsg, size_t errmsg_len)
{
	char msg[200];
	int rv;

	if (access(cfg->db_path, F_OK) != 0) {
		node_errmsg(errmsg, errmsg_len, "node %llu: %s: missing (%s)",
		            (unsigned long long)n->id, cfg->db_path, strerror(errno));
		return RAFTKV_IO;
	}
	msg[0] = '\0';
	rv = store_open(cfg->db_path, &n->cfg.store, &n->store, msg, sizeof(msg));
	if (rv != STORE_OK) {
		node_errmsg(errmsg, errmsg_len, "node %llu: %s", (unsigned long long)n->id,
		            msg[0] ? msg : store_strerror(rv));
		return node_map_err(rv);
	}
	if (cfg->dir != NULL && (rv = store_set_snapshot_dir(n->store, cfg->dir)) != STORE_OK) {
		node_errmsg(errmsg, errmsg_len, "node %llu: snapshot dir %s: %s",
		            (unsigned long long)n->id, cfg->dir, store_errmsg(n->store));
		return node_map_err(rv);
	}
	return RAFTKV_OK;
}

/* Builds the rawnode from the store alone: membership from its conf state (n_peers 0). */
static int node_new_rawnode(node *n, char *errmsg, size_t errmsg_len)
{
	raft_config c;
	int rv;

	raft_config_init(&c);
	c.id = n->id;
	c.election_tick = n->cfg.election_tick;
	c.heartbeat_tick = n->cfg.heartbeat_tick;
	c.storage = &n->storage;
	c.applied = store_applied_index(n->store);
	c.max_size_per_msg = NODE_MAX_SIZE_PER_MSG;
	c.max_inflight_msgs = NODE_MAX_INFLIGHT_MSGS;
	c.max_uncommitted_entries_size = NODE_MAX_UNCOMMITTED;
	c.max_committed_size_per_ready = NODE_MAX_COMMITTED_PER_READY;
	c.pre_vote = true;
	c.check_quorum = true;
	c.seed = n->cfg.seed;
	c.trace = n->cfg.trace;
	c.trace_ctx = n->cfg.trace_ctx;
	rv = raft_rawnode_new(&c, &n->rn);
	if (rv != RAFT_OK) {
		int cause = store_failed(n->store);

		node_errmsg(errmsg, errmsg_len, "node %llu: raft: %s", (unsigned long long)n->id,
		            cause != STORE_OK ? store_errmsg(n->store) : raft_strerror(rv));
		return node_map_err(cause != STORE_OK ? cause : rv);
	}
	return RAFTKV_OK;
}

/* The transfer machines, from the configuration (zeros select the defaults). */
static int node_new_snapxfer(node *n, char *errmsg, size_t errmsg_len)
{
	const node_config *c = &n->cfg;
	unsigned et = c->election_tick > 0 ? (unsigned)c->election_tick : 2u;
	snapxfer_sender_config so = {
	    .self = n->id,
	    .chunk_size =
	        c->snapshot_chunk_size != 0 ? c->snapshot_chunk_size : NODE_SNAP_CHUNK_DEFAULT,
	    .window = c->snapshot_window != 0 ? c->snapshot_window : NODE_SNAP_WINDOW_DEFAULT,
	    .max_concurrent = c->snapshot_max_concurrent != 0 ? c->snapshot_max_concurrent
	                                                      : NODE_SNAP_CONCURRENT_DEFAULT,
	    .bytes_per_tick = c->snapshot_bytes_per_tick,
	    .timeout_ticks = c->snapshot_timeout_ticks != 0 ? c->snapshot_timeout_ticks
	                     : et / 2 > 2                   ? et / 2
	                                                    : 2,
	    .max_timeouts = NODE_SNAP_MAX_TIMEOUTS,
	    .send_chunk = node_send_chunk,
	    .report = node_report_snapshot,
	    .ctx = n};
	snapxfer_receiver_config ro = {.self = n->id,
	                               .store = n->store,
	                               .stale_ticks = NODE_SNAP_STALE_ELECTIONS * et,
	                               .send_ack = node_send_ack,
	                               .ctx = n};

	n->snap_max = so.max_concurrent;
	n->sx_out = snapxfer_sender_new(&so);
	n->sx_in = snapxfer_receiver_new(&ro);
	if (n->sx_out != NULL && n->sx_in != NULL)
		return RAFTKV_OK;
	node_errmsg(errmsg, errmsg_len, "node %llu: snapshot transfer: bad options or no memory",
	            (unsigned long long)n->id);
	return so.chunk_size > SNAPXFER_MAX_CHUNK ? RAFTKV_INVALID : RAFTKV_NOMEM;
}

static void node_free_snapxfer(node *n)
{
	snapxfer_sender_free(n->sx_out);
	n->sx_out = NULL;
	snapxfer_receiver_free(n->sx_in);
	n->sx_in = NULL;
}

/* Frees everything node_start may have built; the thread is not running. */
static void node_destroy(node *n)
{
	node_free_snapxfer(n);
	raft_rawnode_free(n->rn);
	store_close(n->store);
	mailbox_destroy(n->mb);
	free(n->waiters.buf);
	free(n->reads.v);
	pthread_mutex_destroy(&n->status_mu);
	free(n);
}

int node_start(const node_config *cfg, node **out, char *errmsg, size_t errmsg_len)
{
	node *n;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (cfg == NULL || out == NULL || cfg->id == 0 || cfg->db_path == NULL ||
	    cfg->send == NULL || (cfg->store.node_id != 0 && cfg->store.node_id != cfg->id)) {
		node_errmsg(errmsg, errmsg_len, "node_start: invalid configuration");
		return RAFTKV_INVALID;
	}
	n = calloc(1, sizeof(*n));
	if (n == NULL) {
		node_errmsg(errmsg, errmsg_len, "node %llu: out of memory",
		            (unsigned long long)cfg->id);
		return RAFTKV_NOMEM;
	}
	pthread_mutex_init(&n->status_mu, NULL);
	n->id = cfg->id;
	n->cfg = *cfg;
	n->cfg.store.node_id = cfg->id;
	n->drain_cap = cfg->drain_cap != 0 ? cfg->drain_cap : NODE_DRAIN_CAP_DEFAULT;
	atomic_init(&n->stop, false);
	atomic_init(&n->ticks, 0);
	rc = node_open_store(n, cfg, errmsg, errmsg_len);
	n->cfg.db_path = NULL;
	n->cfg.dir = NULL;
	n->cfg.store.vfs = NULL;
	if (rc == RAFTKV_OK) {
		node_storage_init(n);
		rc = node_new_snapxfer(n, errmsg, errmsg_len);
	}
	if (rc == RAFTKV_OK)
		rc = node_new_rawnode(n, errmsg, errmsg_len);
	if (rc == RAFTKV_OK) {
		n->mb = mailbox_create(cfg->mailbox_capacity != 0 ? cfg->mailbox_capacity
		                                                  : NODE_MAILBOX_DEFAULT);
		if (n->mb == NULL) {
			rc = errno == EINVAL ? RAFTKV_INVALID : RAFTKV_NOMEM;
			node_errmsg(errmsg, errmsg_len, "node %llu: mailbox: %s",
			            (unsigned long long)n->id, strerror(errno));
		}
	}
	if (rc != RAFTKV_OK)
		goto fail;
	node_publish(n, false);
	rc = pthread_create(&n->thread, NULL, node_main, n);
	if (rc != 0) {
		node_errmsg(errmsg, errmsg_len, "node %llu: thread: %s", (unsigned long long)n->id,
		            strerror(rc));
		rc = RAFTKV_NOMEM;
		goto fail;
	}
	n->running = true;
	*out = n;
	return RAFTKV_OK;
fail:
	node_destroy(n);
	return rc;
}

mailbox *node_mailbox(node *n)
{
	return n != NULL ? n->mb : NULL;
}

void node_stop(node *n)
{
	mailbox_item it;

	if (n == NULL || n->stopped)
		return;
	if (n->running) {
		atomic_store_explicit(&n->stop, true, memory_order_release);
		mailbox_notify(n->mb);
		pthread_join(n->thread, NULL);
		n->running = false;
	}
	/* Producers were stopped by the caller, so every pushed item is published by now. */
	while (mailbox_pop(n->mb, &it) == MAILBOX_OK)
		node_discard_item(n, &it);
	node_release_all(n);
	node_publish(n, false); /* the last counters, for the status kept while stopped */
	node_free_snapxfer(n);
	raft_rawnode_free(n->rn);
	n->rn = NULL;
	store_close(n->store);
	n->store = NULL;
	pthread_mutex_lock(&n->status_mu);
	n->status.role = RAFTKV_ROLE_STOPPED;
	n->status.leader = 0;
	pthread_mutex_unlock(&n->status_mu);
	n->stopped = true;
}

void node_free(node *n)
{
	if (n == NULL)
		return;
	node_stop(n);
	node_destroy(n);
}

void node_add_ticks(node *n, unsigned ticks)
{
	if (n == NULL || ticks == 0)
		return;
	atomic_fetch_add_explicit(&n->ticks, ticks, memory_order_release);
	mailbox_notify(n->mb);
}

void node_status_get(node *n, raftkv_status *out)
{
	if (n == NULL || out == NULL)
		return;
	pthread_mutex_lock(&n->status_mu);
	*out = n->status;
	pthread_mutex_unlock(&n->status_mu);
	out->mailbox_depth = mailbox_depth(n->mb);
}
