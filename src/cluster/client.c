/* client.c - the client side of raftkv.h: calls, leader routing, retries, pooled sessions. */
#include "cluster/cluster.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "store/store.h"

/*
 * One operation is one `call`. Its `req` (the main request) is what peers see; a write that
 * needs a new session first runs a REGISTER phase with a second request, `reg`, because a
 * request is immutable once sent (request.h) and the write's epoch is only known afterwards.
 *
 * Life of a call:
 *   1. call_new: owned copies of key/value/end live in the call's tail (`data`).
 *   2. call_launch: takes a pooled session (writes), registers the call in the in-flight list
 *      (bounded by opts.max_inflight: RAFTKV_BUSY), prepares attempt 1 and pushes it from the
 *      caller's thread. A full mailbox before anything was pushed retracts the call: BUSY.
 *   3. Attempts: each attempt has a number; the peer passes it back with its reply. Only the
 *      current attempt's non-final replies (NOT_LEADER, RETRY) steer the call. Final replies
 *      (OK, NOT_FOUND, SESSION_EXPIRED, INVALID) complete it whatever their attempt: every
 *      attempt carries the same (client id, seq), so the session makes their results identical
 *      (Raft dissertation §6.3), and a read answered by an older attempt is still a read taken
 *      between invocation and completion.
 *   4. Completion, exactly once (`done` under cs->mu): the call leaves the list, returns its
 *      session, and wakes its blocking caller or, outside every client lock, runs the async
 *      callback.
 *
 * Routing: the leader hint (cs->leader) is learned from answers and NOT_LEADER redirects. A
 * NOT_LEADER naming another node is followed at once (at most n_nodes redirects in a row); no
 * hint, or RETRY, waits a backoff (about a tick, doubling to 100 ms, with jitter from the seeded
 * PRNG) and goes to the hint or the next node round-robin; an attempt without an answer for the
 * attempt timeout (max(2 election timeouts, 200 ms); 1 s under manual ticking) goes to the next
 * node. A stopped node (ROUTER_DOWN) is skipped at once.
 *
 * Timers: client_timer (ticker thread) resends due attempts and fails calls past their deadline
 * with RAFTKV_TIMEOUT. A blocking caller also drives its own call's timers from its condition
 * wait, so its deadline holds even if the ticker lags.
 *
 * References (request.refs of `req`): the in-flight registration holds one until the completer
 * has finished the completion (callback included); a blocking caller holds one until it has
 * copied the result; each job (an attempt being pushed outside the lock) holds one; each copy
 * pushed by the router holds one; `reg`, while alive, holds one. `reg` has its own count: the
 * registration's one (dropped at completion) plus the router's copies. The last release of
 * `req` frees the call (call_free), which touches no client state, so a peer may drop the last
 * copy after client_free.
 *
 * Locks: cs->timer_mu (serializes client_timer and client_shutdown, which use the calls'
 * batch fields) before cs->mu. Neither is held while calling the router or a user callback,
 * except that timer_mu is held across the timer's and shutdown's batches (those never block).
 */

#define NS_PER_MS      1000000ull
#define NS_PER_S       1000000000ull
#define BACKOFF_MAX_NS (100ull * NS_PER_MS)
/* An attempt without an answer is resent (same session and seq) to the next node after one
 * election timeout, and never sooner than this: by then a cut-off leader has stepped down
 * (check-quorum) and the others have elected a new one, and a request lost on the way costs
 * no more than that. A resend is harmless (the session applies the write once); only its cost
 * bounds how short this can be. */
#define ATTEMPT_MIN_NS   (100ull * NS_PER_MS)
#define ATTEMPT_HAND_NS  (1000ull * NS_PER_MS) /* manual ticking */
#define DEFAULT_INFLIGHT 4096u

#define CALL_OF(ptr, member) ((call *)(void *)((char *)(ptr)-offsetof(call, member)))

/* A client session (dissertation §6.3). Owned by the pool, or by the one call using it. */
typedef struct session {
	uint64_t client_id;   /* random, non-zero, unique across reopen */
	uint64_t epoch;       /* index of its REGISTER; 0 until registered */
	uint64_t next_seq;    /* from 1; one request in flight at a time, so low_seq = seq */
	struct session *next; /* pool link */
} session;

/* A scan reply copied out of the peer's buffers: one allocation, pairs then bytes. */
typedef struct scan_copy {
	request_pair *pairs; /* point into this block */
	size_t n_pairs;
	const void *next; /* NULL when the range ran out; points into this block */
	size_t next_len;
} scan_copy;

/* The owned result of a blocking call. */
typedef struct call_result {
	void *value; /* GET: malloc'd, NULL when empty */
	size_t value_len;
	scan_copy *scan; /* SCAN: malloc'd */
} call_result;

typedef enum call_phase { PHASE_REGISTER, PHASE_MAIN } call_phase;

typedef struct call call;

/* One attempt prepared under cs->mu and pushed outside it. Holds a reference on c->req. */
typedef struct send_job {
	call *c;
	request *r; /* &c->req or &c->reg */
	uint64_t to;
	uint64_t attempt;
	bool main; /* r is the main request */
} send_job;

enum { STEP_NONE, STEP_SEND, STEP_DONE };

struct call {
	request req; /* the operation; first member (call_free casts) */
	request reg; /* the REGISTER of a new session, when uses_reg */

	/* Immutable once launched. */
	raftkv *kv;
	client_state *cs;
	bool sync;
	bool write;
	bool uses_reg;
	raftkv_done_fn done_fn; /* async only */
	void *done_ctx;
	uint64_t deadline; /* cluster_now_ns() time of RAFTKV_TIMEOUT */

	/* Under cs->mu. Invariant: on the in-flight list iff launched and !done; retry_at != 0
	 * (a backoff pending) and attempt_deadline != 0 (an attempt awaited) never both. */
	call *prev, *next;
	call_phase phase;
	session *sess;    /* owned while the call runs; returned at completion */
	uint64_t attempt; /* current attempt number; replies to others are stale */
	uint64_t target;  /* node of the current attempt */
	uint64_t attempt_deadline;
	uint64_t retry_at;
	uint64_t backoff_ns;
	size_t redirects; /* NOT_LEADER redirects followed in a row */
	unsigned sending; /* main-request pushes in progress outside the lock */
	bool pushed;      /* the main request reached a mailbox at least once */
	bool done;
	int status;
	call_result result;
	pthread_cond_t cv; /* sync only, CLOCK_MONOTONIC: signalled at completion */

	/* Batch of client_timer / client_shutdown (under timer_mu). */
	call *batch_next;
	int batch_step;
	send_job batch_job;

	unsigned char data[]; /* key, then value (PUT/APPEND) or end (SCAN) */
};

struct client_state {
	pthread_mutex_t timer_mu;
	pthread_mutex_t mu;
	pthread_cond_t idle_cv; /* broadcast when active drops to 0 after shut */

	/* Under mu. */
	call *calls;        /* the in-flight list, newest first */
	size_t n_calls;     /* <= max_calls */
	size_t active;      /* callers inside a public operation */
	bool shut;          /* client_shutdown ran: nothing new is registered */
	session *pool;      /* registered sessions ready for reuse, a FIFO (session_put_locked) */
	session *pool_tail; /* last of pool, NULL when empty */
	size_t n_pool;      /* <= max_calls */
	uint64_t rng;       /* splitmix64 state, seeded from opts.seed */
	uint64_t rr;        /* last node picked round-robin */

	atomic_uint_fast64_t leader; /* leader hint, 0 for none */

	/* Immutable. */
	size_t n_nodes;
	size_t max_calls;
	uint64_t timeout_ns;
	uint64_t attempt_ns;
	uint64_t backoff_min_ns;
};

typedef struct op_args {
	int op;
	const void *key; /* SCAN: start */
	size_t key_len;
	const void *value; /* PUT/APPEND: value; SCAN: end */
	size_t value_len;
	size_t limit;
} op_args;

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* splitmix64; under cs->mu. */
static uint64_t rng_next(client_state *cs)
{
	cs->rng += 0x9e3779b97f4a7c15ULL;
	return mix64(cs->rng);
}

/* A random 64-bit value from the kernel (getrandom(2)), or /dev/urandom, or, failing both, the
 * clock and the address space mixed (still unique enough to never collide in practice). */
static uint64_t random_u64(void)
{
	static atomic_uint_fast64_t fallback;
	uint64_t v = 0;
	ssize_t n;
	FILE *f;

	do
		n = getrandom(&v, sizeof(v), 0);
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(v))
		return v;
	f = fopen("/dev/urandom", "rb");
	if (f != NULL) {
		size_t got = fread(&v, sizeof(v), 1, f);
		fclose(f);
		if (got == 1)
			return v;
	}
	return mix64(cluster_now_ns() ^ (uint64_t)(uintptr_t)&v ^
	             atomic_fetch_add(&fallback, 0x9e3779b97f4a7c15ULL));
}

static bool reply_final(enum request_status s)
{
	return s == REQUEST_OK || s == REQUEST_NOT_FOUND || s == REQUEST_SESSION_EXPIRED ||
	       s == REQUEST_INVALID;
}

static int status_of_reply(enum request_status s)
{
	switch (s) {
	case REQUEST_OK:
		return RAFTKV_OK;
	case REQUEST_NOT_FOUND:
		return RAFTKV_NOT_FOUND;
	case REQUEST_SESSION_EXPIRED:
		return RAFTKV_SESSION_EXPIRED;
	case REQUEST_INVALID:
		return RAFTKV_INVALID;
	default:
		return RAFTKV_TIMEOUT;
	}
}

static uint64_t node_next(const client_state *cs, uint64_t id)
{
	return id % cs->n_nodes + 1;
}

static bool node_valid(const client_state *cs, uint64_t id)
{
	return id >= 1 && id <= cs->n_nodes;
}

static void hint_set(client_state *cs, uint64_t id)
{
	if (node_valid(cs, id))
		atomic_store_explicit(&cs->leader, id, memory_order_relaxed);
}

/* Forgets the hint if it still names id. */
static void hint_clear(client_state *cs, uint64_t id)
{
	uint_fast64_t expected = id;

	atomic_compare_exchange_strong_explicit(&cs->leader, &expected, 0, memory_order_relaxed,
	                                        memory_order_relaxed);
}

/* First target of a call: the hint, else round-robin. Under cs->mu. */
static uint64_t node_pick(client_state *cs)
{
	uint64_t h = atomic_load_explicit(&cs->leader, memory_order_relaxed);

	if (h != 0)
		return h;
	cs->rr = node_next(cs, cs->rr);
	return cs->rr;
}

/* Target after a backoff: the hint, else the node after the last one tried. */
static uint64_t node_retry(client_state *cs, const call *c)
{
	uint64_t h = atomic_load_explicit(&cs->leader, memory_order_relaxed);

	return h != 0 ? h : node_next(cs, c->target);
}

/* Waits on cv until woken or until wake_ns (cluster_now_ns() time). cv uses CLOCK_MONOTONIC. */
static void cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t wake_ns)
{
	uint64_t now = cluster_now_ns(), rel, ns;
	struct timespec ts;

	if (wake_ns <= now)
		return;
	rel = wake_ns - now;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ns = (uint64_t)ts.tv_nsec + rel % NS_PER_S;
	ts.tv_sec += (time_t)(rel / NS_PER_S + ns / NS_PER_S);
	ts.tv_nsec = (long)(ns % NS_PER_S);
	pthread_cond_timedwait(cv, mu, &ts);
}

/* ------------------------------------------------------------------------------------------ */
/* Sessions (under cs->mu unless noted)                                                        */
/* ------------------------------------------------------------------------------------------ */

/* A new, unregistered session, owned by the caller (free()). Any thread, no lock. */
static session *session_new(void)
{
	session *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	do
		s->client_id = random_u64();
	while (s->client_id == 0);
	s->next_seq = 1;
	return s;
}

static session *session_pop_locked(client_state *cs)
{
	session *s = cs->pool;

	if (s != NULL) {
		cs->pool = s->next;
		if (cs->pool == NULL)
			cs->pool_tail = NULL;
		s->next = NULL;
		cs->n_pool--;
	}
	return s;
}

/*
 * Takes s back (ownership moves to the pool) or frees it: an unregistered, expired or surplus
 * session is not reused. Reuse after any outcome is safe: the next request's low_seq = seq
 * makes the session drop the old request's result and refuse it for ever (§6.3).
 *
 * The pool is first-in first-out so that every pooled session stays fresh: between a session's
 * return and its next use, at most the sessions queued ahead of it (< max_inflight) and the
 * calls then in flight write, so it never sits idle for the store's session TTL (a million log
 * entries) and a write never meets RAFTKV_SESSION_EXPIRED merely because its session sat at the
 * bottom of a stack after a burst.
 */
static void session_put_locked(client_state *cs, session *s, bool keep)
{
	if (s == NULL)
		return;
	if (!keep || s->epoch == 0 || cs->n_pool >= cs->max_calls) {
		free(s);
		return;
	}
	s->next = NULL;
	if (cs->pool_tail != NULL)
		cs->pool_tail->next = s;
	else
		cs->pool = s;
	cs->pool_tail = s;
	cs->n_pool++;
}

/* Gives the main request its session fields: a new seq, with every earlier one acknowledged.
 * Before the request is first sent (it is immutable afterwards). */
static void call_fill_session(call *c)
{
	session *s = c->sess;

	c->req.client_id = s->client_id;
	c->req.epoch = s->epoch;
	c->req.seq = s->next_seq++;
	c->req.low_seq = c->req.seq;
}

/* ------------------------------------------------------------------------------------------ */
/* Calls                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* on_free of req: the last reference is gone (any thread). Touches no client state. */
static void call_free(request *r)
{
	call *c = (call *)r;

	free(c->result.value);
	free(c->result.scan);
	if (c->sync)
		pthread_cond_destroy(&c->cv);
	free(c);
}

/* on_free of reg: drops the reference reg held on req. */
static void reg_free(request *r)
{
	request_release(&CALL_OF(r, reg)->req);
}

static void call_on_reply(request *r, uint64_t attempt, const request_reply *rep);
static void reg_on_reply(request *r, uint64_t attempt, const request_reply *rep);

static bool op_is_write(int op)
{
	return op == STORE_OP_PUT || op == STORE_OP_DELETE || op == STORE_OP_APPEND;
}

/*
 * A new call for a (borrowed, copied). References: the registration's, plus the caller's when
 * sync. On RAFTKV_OK *out is the caller's; RAFTKV_NOMEM otherwise.
 */
static int call_new(raftkv *kv, const op_args *a, bool sync, raftkv_done_fn done, void *ctx,
                    call **out)
{
	call *c = malloc(sizeof(*c) + a->key_len + a->value_len);
	pthread_condattr_t ca;
	int rv = 0;

	*out = NULL;
	if (c == NULL)
		return RAFTKV_NOMEM;
	memset(c, 0, sizeof(*c));
	if (sync) {
		if (pthread_condattr_init(&ca) != 0)
			goto fail;
		rv = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		if (rv == 0)
			rv = pthread_cond_init(&c->cv, &ca);
		pthread_condattr_destroy(&ca);
		if (rv != 0)
			goto fail;
	}
	if (a->key_len > 0)
		memcpy(c->data, a->key, a->key_len);
	if (a->value_len > 0)
		memcpy(c->data + a->key_len, a->value, a->value_len);
	c->kv = kv;
	c->cs = kv->client;
	c->sync = sync;
	c->write = op_is_write(a->op);
	c->done_fn = done;
	c->done_ctx = ctx;
	c->phase = PHASE_MAIN;
	c->backoff_ns = c->cs->backoff_min_ns;
	atomic_init(&c->req.refs, sync ? 2u : 1u);
	c->req.op = a->op;
	c->req.key = a->key_len > 0 ? c->data : NULL;
	c->req.key_len = a->key_len;
	c->req.value = a->value_len > 0 ? c->data + a->key_len : NULL;
	c->req.value_len = a->value_len;
	c->req.limit = a->limit;
	c->req.on_reply = call_on_reply;
	c->req.on_free = call_free;
	atomic_init(&c->reg.refs, 0u);
	c->reg.op = STORE_OP_REGISTER;
	c->reg.on_reply = reg_on_reply;
	c->reg.on_free = reg_free;
	*out = c;
	return RAFTKV_OK;
fail:
	free(c);
	return RAFTKV_NOMEM;
}

static void list_link(client_state *cs, call *c)
{
	c->prev = NULL;
	c->next = cs->calls;
	if (cs->calls != NULL)
		cs->calls->prev = c;
	cs->calls = c;
	cs->n_calls++;
}

static void list_unlink(client_state *cs, call *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		cs->calls = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	cs->n_calls--;
}

/*
 * Completes c with status (exactly once; c launched and not done), under cs->mu: unlinks it,
 * takes the result out of *res (may be NULL; ownership moves to c), returns the session and
 * wakes a blocking caller. The caller of this function is the completer: after unlocking it
 * must call call_finish (or call_drop for a retraction without callback).
 */
static void call_complete_locked(client_state *cs, call *c, int status, call_result *res)
{
	c->done = true;
	c->status = status;
	c->retry_at = 0;
	c->attempt_deadline = 0;
	list_unlink(cs, c);
	if (res != NULL) {
		c->result = *res;
		memset(res, 0, sizeof(*res));
	}
	session_put_locked(cs, c->sess, status != RAFTKV_SESSION_EXPIRED);
	c->sess = NULL;
	if (c->sync)
		pthread_cond_signal(&c->cv);
}

/* Drops the registration's references (the completer's, or a launch that failed). No lock. */
static void call_drop(call *c)
{
	if (c->uses_reg)
		request_release(&c->reg);
	request_release(&c->req);
}

/* The completer's last step, outside every client lock: the async callback (value borrowed
 * for it), then call_drop. c may be freed on return. */
static void call_finish(call *c, const void *value, size_t value_len)
{
	if (!c->sync)
		c->done_fn(c->done_ctx, c->status, value_len > 0 ? value : NULL, value_len);
	call_drop(c);
}

/* Whether the main request may have reached a peer (shutdown: TIMEOUT rather than CLOSED). */
static bool call_maybe_sent(const call *c)
{
	return c->pushed || c->sending > 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Attempts                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Starts attempt c->attempt + 1 of the current phase to node `to`, under cs->mu; fills *j.
 * retain: take the job's reference (false when a running job moves on to another node). */
static void job_prepare(client_state *cs, call *c, uint64_t to, uint64_t now, bool retain,
                        send_job *j)
{
	c->attempt++;
	c->target = to;
	c->attempt_deadline = now + cs->attempt_ns;
	c->retry_at = 0;
	j->main = c->phase == PHASE_MAIN;
	if (j->main)
		c->sending++;
	j->c = c;
	j->r = j->main ? &c->req : &c->reg;
	if (retain)
		request_retain(
		    j->r); /* a REGISTER job pins reg itself, so reg never revives from 0 */
	j->to = to;
	j->attempt = c->attempt;
}

/* Schedules the next attempt after a jittered, doubling backoff. Under cs->mu. */
static void backoff_schedule(client_state *cs, call *c, uint64_t now)
{
	uint64_t b = c->backoff_ns;

	c->retry_at = now + b / 2 + rng_next(cs) % (b / 2 + 1);
	c->attempt_deadline = 0;
	c->redirects = 0;
	c->backoff_ns = 2 * b < BACKOFF_MAX_NS ? 2 * b : BACKOFF_MAX_NS;
}

/*
 * Pushes j's attempt, on any thread, with no client lock held. ROUTER_DOWN moves on to the next
 * node at once, at most n_nodes times in a row, then backs off; ROUTER_FULL backs off, except
 * on the caller's first push (initial), where it returns true: nothing was pushed and the
 * caller retracts the call with RAFTKV_BUSY if nobody completed it meanwhile (call_retract),
 * and the job's reference passes to the caller. Otherwise drops the job's reference (c may be
 * freed on return).
 */
static bool job_run(client_state *cs, send_job *j, bool initial)
{
	call *c = j->c;
	size_t downs = 0;
	bool busy = false;

	for (;;) {
		int rc = router_send_request(c->kv->router, j->to, j->r, j->attempt);

		pthread_mutex_lock(&cs->mu);
		if (j->main) {
			c->sending--;
			if (rc == ROUTER_OK)
				c->pushed = true;
		}
		if (rc == ROUTER_OK || c->done || c->attempt != j->attempt)
			break;
		if (rc == ROUTER_DOWN && ++downs < cs->n_nodes) {
			hint_clear(cs, j->to);
			job_prepare(cs, c, node_next(cs, j->to), cluster_now_ns(), false, j);
			pthread_mutex_unlock(&cs->mu);
			continue;
		}
		if (rc == ROUTER_DOWN)
			hint_clear(cs, j->to);
		if (rc == ROUTER_FULL && initial)
			busy = true;
		else
			backoff_schedule(cs, c, cluster_now_ns());
		break;
	}
	pthread_mutex_unlock(&cs->mu);
	if (!busy)
		request_release(j->r);
	return busy;
}

/*
 * The timers of one call at time now, under cs->mu: past the deadline, completes it with
 * RAFTKV_TIMEOUT (STEP_DONE: the caller is the completer); a backoff that ran out, or an attempt
 * unanswered for the attempt timeout, prepares the next attempt in *j (STEP_SEND: the caller
 * runs it unlocked).
 */
static int call_step_locked(client_state *cs, call *c, uint64_t now, send_job *j)
{
	if (c->done)
		return STEP_NONE;
	if (now >= c->deadline) {
		call_complete_locked(cs, c, RAFTKV_TIMEOUT, NULL);
		return STEP_DONE;
	}
	if (c->retry_at != 0 && now >= c->retry_at) {
		job_prepare(cs, c, node_retry(cs, c), now, true, j);
		return STEP_SEND;
	}
	if (c->attempt_deadline != 0 && now >= c->attempt_deadline) {
		hint_clear(cs, c->target);
		job_prepare(cs, c, node_next(cs, c->target), now, true, j);
		return STEP_SEND;
	}
	return STEP_NONE;
}

/* ------------------------------------------------------------------------------------------ */
/* Replies (peer threads)                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Copies a scan reply (borrowed) into one malloc'd block. NULL on ENOMEM. */
static scan_copy *scan_copy_make(const request_reply *rep)
{
	size_t bytes = rep->next != NULL ? rep->next_len : 0;
	scan_copy *s;
	unsigned char *p;

	for (size_t i = 0; i < rep->n_pairs; i++)
		bytes += rep->pairs[i].key_len + rep->pairs[i].value_len;
	s = malloc(sizeof(*s) + rep->n_pairs * sizeof(request_pair) + bytes);
	if (s == NULL)
		return NULL;
	s->pairs = (request_pair *)(void *)(s + 1);
	s->n_pairs = rep->n_pairs;
	p = (unsigned char *)(s->pairs + rep->n_pairs);
	for (size_t i = 0; i < rep->n_pairs; i++) {
		const request_pair *in = &rep->pairs[i];
		request_pair *out = &s->pairs[i];

		out->key = p;
		out->key_len = in->key_len;
		if (in->key_len > 0)
			memcpy(p, in->key, in->key_len);
		p += in->key_len;
		out->value = p;
		out->value_len = in->value_len;
		if (in->value_len > 0)
			memcpy(p, in->value, in->value_len);
		p += in->value_len;
	}
	s->next = NULL;
	s->next_len = 0;
	if (rep->next != NULL) {
		if (rep->next_len > 0)
			memcpy(p, rep->next, rep->next_len);
		s->next = p;
		s->next_len = rep->next_len;
	}
	return s;
}

/* The owned copy of an OK reply a blocking caller needs (GET value, SCAN pairs). RAFTKV_OK or
 * RAFTKV_NOMEM. Unlocked: op and sync are immutable. */
static int result_make(const call *c, const request_reply *rep, call_result *res)
{
	if (c->req.op == REQUEST_OP_SCAN) {
		res->scan = scan_copy_make(rep);
		return res->scan != NULL ? RAFTKV_OK : RAFTKV_NOMEM;
	}
	if (c->req.op == STORE_OP_GET && rep->value_len > 0 && rep->value != NULL) {
		res->value = malloc(rep->value_len);
		if (res->value == NULL)
			return RAFTKV_NOMEM;
		memcpy(res->value, rep->value, rep->value_len);
		res->value_len = rep->value_len;
	}
	return RAFTKV_OK;
}

/* REGISTER answered OK: records the epoch (8 bytes, little-endian) and starts the write at the
 * node that answered (it is the leader). Under cs->mu. false for a malformed epoch. */
static bool call_begin_main(client_state *cs, call *c, const request_reply *rep, uint64_t now,
                            send_job *j)
{
	const unsigned char *p = rep->value;
	uint64_t epoch = 0;

	if (p == NULL || rep->value_len != 8)
		return false;
	for (int i = 7; i >= 0; i--)
		epoch = epoch << 8 | p[i];
	if (epoch == 0 || epoch > INT64_MAX)
		return false;
	c->sess->epoch = epoch;
	c->phase = PHASE_MAIN;
	c->redirects = 0;
	call_fill_session(c);
	job_prepare(cs, c, node_valid(cs, rep->node_id) ? rep->node_id : node_pick(cs), now, true,
	            j);
	return true;
}

/*
 * A reply to attempt `attempt` of c's request of phase `phase` (rep borrowed). Runs on the
 * answering peer's thread, or on the thread stopping it; never blocks: it holds cs->mu briefly
 * and may push a redirect or the write after a REGISTER (router pushes never block).
 */
static void reply_handle(call *c, call_phase phase, uint64_t attempt, const request_reply *rep)
{
	client_state *cs = c->cs;
	call_result res = {0};
	send_job job;
	bool send = false, finish = false;
	bool final = reply_final(rep->status);

	/* Copy before locking; if memory runs out the reply is ignored and the attempt times out.
	 */
	if (final && rep->status == REQUEST_OK && phase == PHASE_MAIN && c->sync &&
	    result_make(c, rep, &res) != RAFTKV_OK)
		goto out;
	pthread_mutex_lock(&cs->mu);
	if (c->done || c->phase != phase)
		goto unlock;
	if (final) {
		if (rep->status == REQUEST_OK || rep->status == REQUEST_NOT_FOUND)
			hint_set(cs, rep->node_id);
		if (phase == PHASE_MAIN || rep->status != REQUEST_OK) {
			call_complete_locked(cs, c, status_of_reply(rep->status), &res);
			finish = true;
		} else if (!(send = call_begin_main(cs, c, rep, cluster_now_ns(), &job))) {
			call_complete_locked(cs, c, RAFTKV_TIMEOUT, NULL);
			finish = true;
		}
		goto unlock;
	}
	if (attempt != c->attempt || c->retry_at != 0)
		goto unlock;
	if (rep->status == REQUEST_NOT_LEADER && node_valid(cs, rep->leader) &&
	    rep->leader != rep->node_id && c->redirects < cs->n_nodes) {
		c->redirects++;
		hint_set(cs, rep->leader);
		job_prepare(cs, c, rep->leader, cluster_now_ns(), true, &job);
		send = true;
	} else {
		hint_clear(cs, rep->node_id);
		backoff_schedule(cs, c, cluster_now_ns());
	}
unlock:
	pthread_mutex_unlock(&cs->mu);
out:
	free(res.value);
	free(res.scan);
	if (send)
		job_run(cs, &job, false);
	if (finish)
		call_finish(c, rep->status == REQUEST_OK && phase == PHASE_MAIN ? rep->value : NULL,
		            rep->status == REQUEST_OK && phase == PHASE_MAIN ? rep->value_len : 0);
}

/* on_reply of req (peer thread; the peer holds a reference on req meanwhile). */
static void call_on_reply(request *r, uint64_t attempt, const request_reply *rep)
{
	reply_handle((call *)r, PHASE_MAIN, attempt, rep);
}

/* on_reply of reg (peer thread; the copy's reference on reg keeps req alive too). */
static void reg_on_reply(request *r, uint64_t attempt, const request_reply *rep)
{
	reply_handle(CALL_OF(r, reg), PHASE_REGISTER, attempt, rep);
}

/* ------------------------------------------------------------------------------------------ */
/* Launching and waiting (caller threads)                                                     */
/* ------------------------------------------------------------------------------------------ */

static int launch_check_locked(const client_state *cs, raftkv *kv)
{
	if (cs->shut || atomic_load(&kv->closing))
		return RAFTKV_CLOSED;
	if (cs->n_calls >= cs->max_calls)
		return RAFTKV_BUSY;
	return RAFTKV_OK;
}

/* A write's session: a pooled one (then the write goes first), or a new one that the call
 * registers first (the REGISTER phase). */
static int call_take_session(client_state *cs, call *c)
{
	int rv;

	pthread_mutex_lock(&cs->mu);
	rv = launch_check_locked(cs, c->kv);
	if (rv == RAFTKV_OK && c->write)
		c->sess = session_pop_locked(cs);
	pthread_mutex_unlock(&cs->mu);
	if (rv != RAFTKV_OK || !c->write)
		return rv;
	if (c->sess == NULL) {
		c->sess = session_new();
		if (c->sess == NULL)
			return RAFTKV_NOMEM;
	}
	if (c->sess->epoch != 0) {
		call_fill_session(c);
		return RAFTKV_OK;
	}
	c->phase = PHASE_REGISTER;
	c->uses_reg = true;
	atomic_store_explicit(&c->reg.refs, 1u, memory_order_relaxed);
	request_retain(&c->req); /* held by reg until reg_free */
	c->reg.client_id = c->sess->client_id;
	return RAFTKV_OK;
}

/* The first push came back ROUTER_FULL: retracts c unless someone completed it meanwhile.
 * RAFTKV_BUSY when retracted (no callback), else RAFTKV_OK (the completion stands). Consumes
 * the reference of the failed job, which keeps c alive until here. */
static int call_retract(client_state *cs, call *c, request *job_ref)
{
	bool mine;

	pthread_mutex_lock(&cs->mu);
	mine = !c->done;
	if (mine)
		call_complete_locked(cs, c, RAFTKV_BUSY, NULL);
	pthread_mutex_unlock(&cs->mu);
	request_release(job_ref);
	if (mine)
		call_drop(c);
	return mine ? RAFTKV_BUSY : RAFTKV_OK;
}

/*
 * Registers c (fresh from call_new) and pushes its first attempt, on the caller's thread.
 * RAFTKV_OK: c runs; an async call's callback will follow; a sync caller waits (call_wait).
 * Otherwise (RAFTKV_CLOSED, RAFTKV_BUSY, RAFTKV_NOMEM) nothing was sent and no callback will
 * run; the registration's references are dropped (a sync caller still holds its own).
 */
static int call_launch(client_state *cs, call *c, uint64_t now)
{
	send_job j;
	int rv = call_take_session(cs, c);

	if (rv != RAFTKV_OK)
		goto fail;
	pthread_mutex_lock(&cs->mu);
	rv = launch_check_locked(cs, c->kv);
	if (rv != RAFTKV_OK) {
		session_put_locked(cs, c->sess, true);
		c->sess = NULL;
		pthread_mutex_unlock(&cs->mu);
		goto fail;
	}
	c->deadline = now + cs->timeout_ns;
	list_link(cs, c);
	job_prepare(cs, c, node_pick(cs), now, true, &j);
	pthread_mutex_unlock(&cs->mu);
	if (!job_run(cs, &j, true))
		return RAFTKV_OK;
	return call_retract(cs, c, j.r);
fail:
	if (c->sess != NULL) {
		free(c->sess); /* never pooled: new, or lost to a NOMEM path before the lock */
		c->sess = NULL;
	}
	call_drop(c);
	return rv;
}

/* The earliest time c's timers need attention. Under cs->mu. */
static uint64_t call_wake_time(const call *c)
{
	uint64_t t = c->deadline;

	if (c->retry_at != 0 && c->retry_at < t)
		t = c->retry_at;
	if (c->attempt_deadline != 0 && c->attempt_deadline < t)
		t = c->attempt_deadline;
	return t;
}

/* Blocks the caller until its sync call c is done, driving c's own timers meanwhile. */
static void call_wait(client_state *cs, call *c)
{
	bool finish = false;
	send_job j;

	pthread_mutex_lock(&cs->mu);
	while (!c->done) {
		cond_wait_until(&c->cv, &cs->mu, call_wake_time(c));
		if (c->done)
			break;
		switch (call_step_locked(cs, c, cluster_now_ns(), &j)) {
		case STEP_SEND:
			pthread_mutex_unlock(&cs->mu);
			job_run(cs, &j, false);
			pthread_mutex_lock(&cs->mu);
			break;
		case STEP_DONE:
			finish = true;
			break;
		default:
			break;
		}
	}
	pthread_mutex_unlock(&cs->mu);
	if (finish)
		call_finish(c, NULL, 0);
}

/* Entry of every public operation: RAFTKV_CLOSED once close began, else counts the caller as
 * active (client_shutdown waits for it to leave) and sets *out. */
static int client_enter(raftkv *kv, client_state **out)
{
	client_state *cs = kv->client;
	int rv = RAFTKV_OK;

	if (cs == NULL || atomic_load(&kv->closing))
		return RAFTKV_CLOSED;
	pthread_mutex_lock(&cs->mu);
	if (cs->shut || atomic_load(&kv->closing))
		rv = RAFTKV_CLOSED;
	else
		cs->active++;
	pthread_mutex_unlock(&cs->mu);
	*out = cs;
	return rv;
}

/* Exit of a public operation; cs may be freed by raftkv_close as soon as this returns. */
static void client_leave(client_state *cs)
{
	pthread_mutex_lock(&cs->mu);
	if (--cs->active == 0 && cs->shut)
		pthread_cond_broadcast(&cs->idle_cv);
	pthread_mutex_unlock(&cs->mu);
}

/*
 * Runs one blocking operation to completion on the caller's thread. Returns its status; when a
 * call ran, *out is it, done, with the caller's reference (the caller takes the result and
 * releases &(*out)->req); else *out is NULL. The caller has left the library on return.
 */
static int sync_run(raftkv *kv, const op_args *a, call **out)
{
	client_state *cs;
	call *c = NULL;
	int rv = client_enter(kv, &cs);

	*out = NULL;
	if (rv != RAFTKV_OK)
		return rv;
	rv = call_new(kv, a, true, NULL, NULL, &c);
	if (rv == RAFTKV_OK) {
		rv = call_launch(cs, c, cluster_now_ns());
		if (rv == RAFTKV_OK) {
			call_wait(cs, c);
			rv = c->status;
			*out = c;
		} else {
			request_release(&c->req);
		}
	}
	client_leave(cs);
	return rv;
}

/* Starts one asynchronous operation (see raftkv.h for the outcomes). */
static int async_run(raftkv *kv, const op_args *a, raftkv_done_fn done, void *ctx)
{
	client_state *cs;
	call *c;
	int rv = client_enter(kv, &cs);

	if (rv != RAFTKV_OK)
		return rv;
	rv = call_new(kv, a, false, done, ctx, &c);
	if (rv == RAFTKV_OK)
		rv = call_launch(cs, c, cluster_now_ns());
	client_leave(cs);
	return rv;
}

/* ------------------------------------------------------------------------------------------ */
/* The operations of raftkv.h                                                                 */
/* ------------------------------------------------------------------------------------------ */

static bool key_ok(const void *key, size_t len)
{
	return key != NULL && len > 0 && len <= RAFTKV_MAX_KEY;
}

static bool value_ok(const void *value, size_t len)
{
	return (value != NULL || len == 0) && len <= RAFTKV_MAX_VALUE;
}

/* Any caller thread; key and value borrowed (copied). */
static int write_sync(raftkv *kv, int op, const void *key, size_t key_len, const void *value,
                      size_t value_len)
{
	op_args a = {op, key, key_len, value, value_len, 0};
	call *c;
	int rv;

	if (kv == NULL || !key_ok(key, key_len) || !value_ok(value, value_len))
		return RAFTKV_INVALID;
	rv = sync_run(kv, &a, &c);
	if (c != NULL)
		request_release(&c->req);
	return rv;
}

int raftkv_put(raftkv *kv, const void *key, size_t key_len, const void *value, size_t value_len)
{
	return write_sync(kv, STORE_OP_PUT, key, key_len, value, value_len);
}

int raftkv_delete(raftkv *kv, const void *key, size_t key_len)
{
	return write_sync(kv, STORE_OP_DELETE, key, key_len, NULL, 0);
}

int raftkv_append(raftkv *kv, const void *key, size_t key_len, const void *value, size_t value_len)
{
	return write_sync(kv, STORE_OP_APPEND, key, key_len, value, value_len);
}

/* Any caller thread. On RAFTKV_OK *value is the caller's (raftkv_free; NULL when empty, so an
 * empty value and an absent key differ only by RAFTKV_OK vs RAFTKV_NOT_FOUND). */
int raftkv_get(raftkv *kv, const void *key, size_t key_len, void **value, size_t *value_len)
{
	op_args a = {STORE_OP_GET, key, key_len, NULL, 0, 0};
	call *c;
	int rv;

	if (kv == NULL || !key_ok(key, key_len) || value == NULL || value_len == NULL)
		return RAFTKV_INVALID;
	*value = NULL;
	*value_len = 0;
	rv = sync_run(kv, &a, &c);
	if (c == NULL)
		return rv;
	if (rv == RAFTKV_OK) {
		*value = c->result.value;
		*value_len = c->result.value_len;
		c->result.value = NULL;
	}
	request_release(&c->req);
	return rv;
}

/* Delivers s (borrowed) to fn on the caller's thread, no lock held, then the continuation. */
static int scan_deliver(const scan_copy *s, raftkv_scan_fn fn, void *ctx, void **next,
                        size_t *next_len)
{
	void *copy;

	for (size_t i = 0; i < s->n_pairs; i++) {
		const request_pair *p = &s->pairs[i];

		if (fn(ctx, p->key, p->key_len, p->value, p->value_len) != 0)
			return RAFTKV_OK;
	}
	if (s->next == NULL)
		return RAFTKV_OK;
	if (next != NULL) {
		copy = malloc(s->next_len > 0 ? s->next_len : 1);
		if (copy == NULL)
			return RAFTKV_NOMEM;
		memcpy(copy, s->next, s->next_len);
		*next = copy;
	}
	if (next_len != NULL)
		*next_len = s->next_len;
	return RAFTKV_OK;
}

/* Any caller thread. start/end borrowed (copied). fn runs after the library was left, so it
 * may call other raftkv operations. *next (if given) is the caller's (raftkv_free); RAFTKV_NOMEM
 * if it cannot be allocated after every pair was delivered. */
int raftkv_scan(raftkv *kv, const void *start, size_t start_len, const void *end, size_t end_len,
                size_t limit, raftkv_scan_fn fn, void *ctx, void **next, size_t *next_len)
{
	op_args a = {REQUEST_OP_SCAN, start, start_len, end, end_len, limit};
	call *c;
	int rv;

	if (next != NULL)
		*next = NULL;
	if (next_len != NULL)
		*next_len = 0;
	if (kv == NULL || fn == NULL || (start == NULL && start_len > 0) ||
	    start_len > RAFTKV_MAX_KEY || (end == NULL && end_len > 0) || end_len > RAFTKV_MAX_KEY)
		return RAFTKV_INVALID;
	rv = sync_run(kv, &a, &c);
	if (c == NULL)
		return rv;
	if (rv == RAFTKV_OK && c->result.scan != NULL)
		rv = scan_deliver(c->result.scan, fn, ctx, next, next_len);
	request_release(&c->req);
	return rv;
}

/* Any caller thread (or an async callback). key and value borrowed (copied). */
static int op_async(raftkv *kv, int op, const void *key, size_t key_len, const void *value,
                    size_t value_len, raftkv_done_fn done, void *ctx)
{
	op_args a = {op, key, key_len, value, value_len, 0};

	if (kv == NULL || done == NULL || !key_ok(key, key_len) || !value_ok(value, value_len))
		return RAFTKV_INVALID;
	return async_run(kv, &a, done, ctx);
}

int raftkv_put_async(raftkv *kv, const void *key, size_t key_len, const void *value,
                     size_t value_len, raftkv_done_fn done, void *ctx)
{
	return op_async(kv, STORE_OP_PUT, key, key_len, value, value_len, done, ctx);
}

int raftkv_get_async(raftkv *kv, const void *key, size_t key_len, raftkv_done_fn done, void *ctx)
{
	return op_async(kv, STORE_OP_GET, key, key_len, NULL, 0, done, ctx);
}

int raftkv_delete_async(raftkv *kv, const void *key, size_t key_len, raftkv_done_fn done, void *ctx)
{
	return op_async(kv, STORE_OP_DELETE, key, key_len, NULL, 0, done, ctx);
}

int raftkv_append_async(raftkv *kv, const void *key, size_t key_len, const void *value,
                        size_t value_len, raftkv_done_fn done, void *ctx)
{
	return op_async(kv, STORE_OP_APPEND, key, key_len, value, value_len, done, ctx);
}

/* ------------------------------------------------------------------------------------------ */
/* Hooks of cluster.c                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* raftkv_open's thread, before any node or the ticker runs. kv->opts is validated. */
int client_init(raftkv *kv)
{
	client_state *cs = calloc(1, sizeof(*cs));
	const raftkv_options *o = &kv->opts;
	uint64_t election_ns = (uint64_t)o->election_ticks * o->tick_ms * NS_PER_MS;

	if (cs == NULL)
		return RAFTKV_NOMEM;
	if (pthread_mutex_init(&cs->timer_mu, NULL) != 0)
		goto fail;
	if (pthread_mutex_init(&cs->mu, NULL) != 0)
		goto fail_timer_mu;
	if (pthread_cond_init(&cs->idle_cv, NULL) != 0)
		goto fail_mu;
	cs->n_nodes = o->n_nodes > 0 ? o->n_nodes : 1;
	cs->max_calls = o->max_inflight > 0 ? o->max_inflight : DEFAULT_INFLIGHT;
	cs->timeout_ns = (uint64_t)o->request_timeout_ms * NS_PER_MS;
	cs->attempt_ns = o->tick_ms == 0
	                     ? ATTEMPT_HAND_NS
	                     : (election_ns > ATTEMPT_MIN_NS ? election_ns : ATTEMPT_MIN_NS);
	cs->backoff_min_ns = (uint64_t)(o->tick_ms > 0 ? o->tick_ms : 1) * NS_PER_MS;
	if (cs->backoff_min_ns > BACKOFF_MAX_NS)
		cs->backoff_min_ns = BACKOFF_MAX_NS;
	cs->rng = mix64(o->seed ^ 0x434c49454e54ULL); /* "CLIENT" */
	atomic_init(&cs->leader, 0);
	kv->client = cs;
	return RAFTKV_OK;
fail_mu:
	pthread_mutex_destroy(&cs->mu);
fail_timer_mu:
	pthread_mutex_destroy(&cs->timer_mu);
fail:
	free(cs);
	return RAFTKV_NOMEM;
}

/* The ticker thread, every period (see the top of this file). Resends and completions run
 * after cs->mu is released; async callbacks run here, on the ticker thread. */
void client_timer(raftkv *kv, uint64_t now_ns)
{
	client_state *cs = kv->client;
	call *batch = NULL, *c, *next;

	if (cs == NULL)
		return;
	pthread_mutex_lock(&cs->timer_mu);
	pthread_mutex_lock(&cs->mu);
	for (c = cs->calls; c != NULL; c = next) {
		next = c->next;
		c->batch_step = call_step_locked(cs, c, now_ns, &c->batch_job);
		if (c->batch_step != STEP_NONE) {
			c->batch_next = batch;
			batch = c;
		}
	}
	pthread_mutex_unlock(&cs->mu);
	for (c = batch; c != NULL; c = next) {
		send_job j = c->batch_job;
		int step = c->batch_step;

		next = c->batch_next; /* c may be freed below */
		if (step == STEP_SEND)
			job_run(cs, &j, false);
		else
			call_finish(c, NULL, 0);
	}
	pthread_mutex_unlock(&cs->timer_mu);
}

/* raftkv_close's thread; kv->closing is already set. See cluster.h. */
void client_shutdown(raftkv *kv)
{
	client_state *cs = kv->client;
	call *batch = NULL, *c, *next;

	if (cs == NULL)
		return;
	pthread_mutex_lock(&cs->timer_mu);
	pthread_mutex_lock(&cs->mu);
	cs->shut = true;
	while ((c = cs->calls) != NULL) {
		call_complete_locked(cs, c, call_maybe_sent(c) ? RAFTKV_TIMEOUT : RAFTKV_CLOSED,
		                     NULL);
		c->batch_next = batch;
		batch = c;
	}
	pthread_mutex_unlock(&cs->mu);
	for (c = batch; c != NULL; c = next) {
		next = c->batch_next;
		call_finish(c, NULL, 0);
	}
	pthread_mutex_unlock(&cs->timer_mu);
	pthread_mutex_lock(&cs->mu);
	while (cs->active > 0)
		pthread_cond_wait(&cs->idle_cv, &cs->mu);
	pthread_mutex_unlock(&cs->mu);
}

/* raftkv_close's (or a failed raftkv_open's) thread, after client_shutdown, every node stop and
 * router_free. Calls still referenced elsewhere free themselves (call_free needs no state). */
void client_free(raftkv *kv)
{
	client_state *cs = kv->client;
	session *s;

	if (cs == NULL)
		return;
	while ((s = cs->pool) != NULL) {
		cs->pool = s->next;
		free(s);
	}
	pthread_cond_destroy(&cs->idle_cv);
	pthread_mutex_destroy(&cs->mu);
	pthread_mutex_destroy(&cs->timer_mu);
	free(cs);
	kv->client = NULL;
}
