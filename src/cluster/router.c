/* router.c - the in-process transport: per-node mailbox slots, fault injection, held messages. */
#include "cluster/router.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node/node.h"
#include "node/snapxfer.h"

/* Largest node count router_new accepts; bounds the per-link rate matrix (n * n doubles). */
#define ROUTER_MAX_NODES 256u

#define NS_PER_MS 1000000u

/*
 * One destination. `mb` is the attached node's mailbox (borrowed from the caller of
 * router_attach) or NULL when the node is stopped.
 * Invariant: every push into `mb` happens while `lock` is held for reading, and `mb` changes only
 * under the write lock, so router_detach returning means no push to the old mailbox is in
 * progress or can start.
 */
typedef struct router_slot {
	pthread_rwlock_t lock;
	mailbox *mb;
} router_slot;

/* A delayed or reordered item. `buf` (malloc'd, `len` bytes: an encoded raft_message for
 * NODE_ITEM_RAFT, a snapxfer_chunk or snapxfer_ack for the snapshot kinds) is owned by the heap
 * until the delivery thread pops it, then by that delivery. */
typedef struct held_msg {
	uint64_t due_ns; /* CLOCK_MONOTONIC */
	uint64_t seq;    /* insertion order: equal due times leave in send order */
	uint64_t from;
	uint64_t to;
	int kind; /* NODE_ITEM_RAFT, NODE_ITEM_SNAP_CHUNK or NODE_ITEM_SNAP_ACK */
	void *buf;
	size_t len;
} held_msg;

/* What the fault model decided for one Raft message: how many copies, and each copy's hold. */
typedef struct raft_plan {
	int copies;          /* 0 (dropped), 1 or 2 (duplicated) */
	uint64_t hold_ns[2]; /* 0: deliver now */
} raft_plan;

struct router {
	size_t n;           /* node ids are 1..n; read-only after router_new */
	router_slot *slots; /* n slots, index id - 1; owned */

	/*
	 * True when any fault below is set. Written under `mu` (release), read without it (acquire)
	 * by the senders: while it reads false, a send takes no mutex. A send racing with the first
	 * fault setter may miss it, as if it had been sent just before.
	 */
	atomic_bool faulty;

	/* `mu` guards everything from here to `stop`. */
	pthread_mutex_t mu;
	pthread_cond_t
	    cv; /* CLOCK_MONOTONIC; signalled on a new earliest held message and on stop */

	/* Faults. Invariant: `faulty` == partitioned || drop > 0 || n_link_rates > 0 || dup > 0 ||
	 * delay_max_ns > 0 || (reorder > 0 && reorder_max_ns > 0) || corrupt > 0. */
	bool partitioned;
	unsigned char *in_group_a; /* n flags, owned; meaningful only while partitioned */
	double drop;
	double *link_drop;   /* n * n rates, [(from - 1) * n + (to - 1)], owned */
	size_t n_link_rates; /* entries of link_drop that are > 0 */
	double dup;
	uint64_t delay_min_ns;
	uint64_t delay_max_ns;
	double reorder;
	uint64_t reorder_max_ns;
	double corrupt; /* share of snapshot chunk copies damaged */
	uint64_t rng;   /* splitmix64 state, seeded by router_new */

	/* Held messages: a binary min-heap on (due_ns, seq), growing by doubling up to
	 * ROUTER_MAX_HELD entries; a message that would exceed that is dropped. Owned. */
	held_msg *heap;
	size_t heap_len;
	size_t heap_cap;
	size_t heap_bytes; /* sum of the held messages' lengths, at most ROUTER_MAX_HELD_BYTES */
	uint64_t heap_seq;

	bool stop; /* router_free asks the delivery thread to end */

	pthread_t thread;

	/* Counters (relaxed atomics). A snapshot of all of them is not atomic, and a push in
	 * progress may show in raft_delivered or requests before it fails and moves to dropped. */
	atomic_uint_least64_t raft_sent;
	atomic_uint_least64_t raft_delivered;
	atomic_uint_least64_t dropped;
	atomic_uint_least64_t duplicated;
	atomic_uint_least64_t held;
	atomic_uint_least64_t requests;
	atomic_uint_least64_t chunks;
	atomic_uint_least64_t acks;
	atomic_uint_least64_t corrupted;
};

static void stat_add(atomic_uint_least64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool valid_id(const router *r, uint64_t id)
{
	return id >= 1 && id <= r->n;
}

/* ---- PRNG (under mu) ---------------------------------------------------------------------- */

/* splitmix64 (Steele, Lea, Flood 2014): one 64-bit state, full period, good enough for faults. */
static uint64_t rng_next(router *r)
{
	uint64_t z = (r->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* True with probability rate. Rates of 0 and 1 draw nothing, so they do not shift the sequence
 * other faults see. */
static bool rng_chance(router *r, double rate)
{
	if (rate <= 0.0)
		return false;
	if (rate >= 1.0)
		return true;
	return (double)(rng_next(r) >> 11) * 0x1.0p-53 < rate;
}

/* Uniform in [lo, hi]. */
static uint64_t rng_range(router *r, uint64_t lo, uint64_t hi)
{
	if (hi <= lo)
		return lo;
	return lo + rng_next(r) % (hi - lo + 1);
}

static double clamp_rate(double rate)
{
	if (!(rate > 0.0)) /* also NaN */
		return 0.0;
	return rate > 1.0 ? 1.0 : rate;
}

/* ---- fault state (under mu) --------------------------------------------------------------- */

static void update_faulty(router *r)
{
	bool any = r->partitioned || r->drop > 0.0 || r->n_link_rates > 0 || r->dup > 0.0 ||
	           r->delay_max_ns > 0 || (r->reorder > 0.0 && r->reorder_max_ns > 0) ||
	           r->corrupt > 0.0;

	atomic_store_explicit(&r->faulty, any, memory_order_release);
}

/* Whether a partition separates from and to. An id outside 1..n (never a real sender) counts as
 * a member of group B. */
static bool link_cut(const router *r, uint64_t from, uint64_t to)
{
	bool a_from, a_to;

	if (!r->partitioned)
		return false;
	a_from = valid_id(r, from) && r->in_group_a[from - 1];
	a_to = valid_id(r, to) && r->in_group_a[to - 1];
	return a_from != a_to;
}

static double link_rate(const router *r, uint64_t from, uint64_t to)
{
	if (!valid_id(r, from) || !valid_id(r, to))
		return 0.0;
	return r->link_drop[(from - 1) * r->n + (to - 1)];
}

/* One copy's hold: a uniform delay in [min, max], plus, for a share `reorder` of the copies, a
 * uniform extra in [0, reorder max]. */
static uint64_t draw_hold(router *r)
{
	uint64_t hold = 0;

	if (r->delay_max_ns > 0)
		hold = rng_range(r, r->delay_min_ns, r->delay_max_ns);
	if (r->reorder_max_ns > 0 && rng_chance(r, r->reorder))
		hold += rng_range(r, 0, r->reorder_max_ns);
	return hold;
}

/* Decides the fate of a Raft message from -> to (to valid). Takes mu. */
static raft_plan plan_raft(router *r, uint64_t from, uint64_t to)
{
	raft_plan p = {1, {0, 0}};

	pthread_mutex_lock(&r->mu);
	if (link_cut(r, from, to) || rng_chance(r, r->drop) ||
	    rng_chance(r, link_rate(r, from, to))) {
		p.copies = 0;
		goto out;
	}
	if (rng_chance(r, r->dup))
		p.copies = 2;
	for (int i = 0; i < p.copies; i++)
		p.hold_ns[i] = draw_hold(r);
out:
	pthread_mutex_unlock(&r->mu);
	return p;
}

/* ---- pushing ------------------------------------------------------------------------------ */

/*
 * Pushes it to node id (valid) under the slot's read lock. ROUTER_OK (the mailbox took it.ptr),
 * ROUTER_DOWN or ROUTER_FULL (it.ptr is still the caller's). `counter` (may be NULL) is bumped
 * before the push and taken back if it fails: a consumer that popped the item finds it counted,
 * and once router_detach returns the counters account for every push into the old mailbox.
 */
static int push_item(router *r, uint64_t id, const mailbox_item *it, atomic_uint_least64_t *counter)
{
	router_slot *s = &r->slots[id - 1];
	int rc = ROUTER_DOWN;

	pthread_rwlock_rdlock(&s->lock);
	if (s->mb != NULL) {
		if (counter != NULL)
			stat_add(counter, 1);
		rc = mailbox_push(s->mb, it) == MAILBOX_OK ? ROUTER_OK : ROUTER_FULL;
		if (rc != ROUTER_OK && counter != NULL)
			atomic_fetch_sub_explicit(counter, 1, memory_order_relaxed);
	}
	pthread_rwlock_unlock(&s->lock);
	return rc;
}

/* Delivers an item of kind (buf owned by the caller until here; always consumed: pushed or
 * freed). */
static void deliver_item(router *r, uint64_t to, int kind, void *buf, size_t len)
{
	mailbox_item it = {kind, buf, len};

	if (push_item(r, to, &it, kind == NODE_ITEM_RAFT ? &r->raft_delivered : NULL) == ROUTER_OK)
		return;
	free(buf);
	stat_add(&r->dropped, 1);
}

/* ---- held messages (under mu) ------------------------------------------------------------- */

static bool held_before(const held_msg *a, const held_msg *b)
{
	return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static void heap_swap(held_msg *a, held_msg *b)
{
	held_msg t = *a;

	*a = *b;
	*b = t;
}

/* Adds m; false (nothing taken) when the heap is at ROUTER_MAX_HELD messages or
 * ROUTER_MAX_HELD_BYTES, or cannot grow. */
static bool heap_push(router *r, const held_msg *m)
{
	size_t i;

	if (m->len > ROUTER_MAX_HELD_BYTES - r->heap_bytes)
		return false;
	if (r->heap_len == r->heap_cap) {
		size_t cap = r->heap_cap == 0 ? 64 : r->heap_cap * 2;
		held_msg *h;

		if (r->heap_cap >= ROUTER_MAX_HELD)
			return false;
		if (cap > ROUTER_MAX_HELD)
			cap = ROUTER_MAX_HELD;
		h = realloc(r->heap, cap * sizeof(*h));
		if (h == NULL)
			return false;
		r->heap = h;
		r->heap_cap = cap;
	}
	i = r->heap_len++;
	r->heap_bytes += m->len;
	r->heap[i] = *m;
	r->heap[i].seq = r->heap_seq++;
	while (i > 0 && held_before(&r->heap[i], &r->heap[(i - 1) / 2])) {
		heap_swap(&r->heap[i], &r->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	return true;
}

/* Removes the earliest message (heap not empty) into *out. */
static void heap_pop(router *r, held_msg *out)
{
	size_t i = 0;

	*out = r->heap[0];
	r->heap_bytes -= out->len;
	r->heap[0] = r->heap[--r->heap_len];
	for (;;) {
		size_t l = 2 * i + 1, rr = l + 1, m = i;

		if (l < r->heap_len && held_before(&r->heap[l], &r->heap[m]))
			m = l;
		if (rr < r->heap_len && held_before(&r->heap[rr], &r->heap[m]))
			m = rr;
		if (m == i)
			break;
		heap_swap(&r->heap[i], &r->heap[m]);
		i = m;
	}
}

/* Holds buf (owned by the caller until here; always consumed: held or freed) for hold_ns. */
static void hold_item(router *r, uint64_t from, uint64_t to, int kind, void *buf, size_t len,
                      uint64_t hold_ns)
{
	held_msg m = {now_ns() + hold_ns, 0, from, to, kind, buf, len};
	bool ok;

	pthread_mutex_lock(&r->mu);
	ok = !r->stop && heap_push(r, &m);
	/* Wake the delivery thread only when its deadline moved earlier. */
	if (ok && r->heap[0].seq == r->heap_seq - 1)
		pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	if (ok) {
		stat_add(&r->held, 1);
		return;
	}
	free(buf);
	stat_add(&r->dropped, 1);
}

/*
 * The delivery thread. Sleeps until the earliest held message is due (or a new earlier one or
 * stop is signalled), pops every due message, and delivers each outside mu.
 * Decision: a held message is a message already "in the network". It is checked again when it
 * falls due: it is dropped if its destination is stopped then, or if a partition in force then
 * cuts its link (a partition that started and healed meanwhile does not eat it). Drop rates are
 * not drawn again. A node that restarted meanwhile receives it, as a real peer would receive a
 * late packet.
 */
static void *delivery_main(void *arg)
{
	router *r = arg;

	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		held_msg m;
		uint64_t now;
		bool cut;

		if (r->heap_len == 0) {
			pthread_cond_wait(&r->cv, &r->mu);
			continue;
		}
		now = now_ns();
		if (r->heap[0].due_ns > now) {
			struct timespec ts = {(time_t)(r->heap[0].due_ns / 1000000000u),
			                      (long)(r->heap[0].due_ns % 1000000000u)};

			pthread_cond_timedwait(&r->cv, &r->mu, &ts);
			continue;
		}
		heap_pop(r, &m);
		cut = link_cut(r, m.from, m.to);
		pthread_mutex_unlock(&r->mu);
		if (cut) {
			free(m.buf);
			stat_add(&r->dropped, 1);
		} else {
			deliver_item(r, m.to, m.kind, m.buf, m.len);
		}
		pthread_mutex_lock(&r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* Frees what router_new allocated; the thread is not running. n_slots: slots whose lock was
 * initialized. */
static void router_destroy(router *r, size_t n_slots)
{
	for (size_t i = 0; i < r->heap_len; i++)
		free(r->heap[i].buf);
	free(r->heap);
	for (size_t i = 0; i < n_slots; i++)
		pthread_rwlock_destroy(&r->slots[i].lock);
	free(r->slots);
	free(r->in_group_a);
	free(r->link_drop);
	free(r);
}

static int init_sync(router *r)
{
	pthread_condattr_t ca;
	int rc;

	rc = pthread_mutex_init(&r->mu, NULL);
	if (rc != 0)
		return rc;
	rc = pthread_condattr_init(&ca);
	if (rc != 0)
		goto fail_mu;
	rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(&r->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (rc != 0)
		goto fail_mu;
	return 0;
fail_mu:
	pthread_mutex_destroy(&r->mu);
	return rc;
}

router *router_new(size_t n_nodes, uint64_t seed)
{
	router *r;
	size_t n_slots = 0;
	int rc = ENOMEM;

	if (n_nodes == 0 || n_nodes > ROUTER_MAX_NODES) {
		errno = EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		goto fail_errno;
	r->n = n_nodes;
	r->rng = seed;
	r->slots = calloc(n_nodes, sizeof(*r->slots));
	r->in_group_a = calloc(n_nodes, 1);
	r->link_drop = calloc(n_nodes * n_nodes, sizeof(*r->link_drop));
	if (r->slots == NULL || r->in_group_a == NULL || r->link_drop == NULL)
		goto fail;
	for (; n_slots < n_nodes; n_slots++) {
		rc = pthread_rwlock_init(&r->slots[n_slots].lock, NULL);
		if (rc != 0)
			goto fail;
	}
	rc = init_sync(r);
	if (rc != 0)
		goto fail;
	rc = pthread_create(&r->thread, NULL, delivery_main, r);
	if (rc != 0)
		goto fail_sync;
	return r;
fail_sync:
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
fail:
	router_destroy(r, n_slots);
fail_errno:
	errno = rc == EAGAIN ? ENOMEM : rc;
	return NULL;
}

void router_free(router *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	router_destroy(r, r->n);
}

void router_attach(router *r, uint64_t id, mailbox *mb)
{
	if (r == NULL || !valid_id(r, id))
		return;
	pthread_rwlock_wrlock(&r->slots[id - 1].lock);
	r->slots[id - 1].mb = mb;
	pthread_rwlock_unlock(&r->slots[id - 1].lock);
}

void router_detach(router *r, uint64_t id)
{
	router_attach(r, id, NULL);
}

/* Draws the corrupt fault for one chunk copy (len bytes at c): flips one byte of its data and
 * leaves its crc alone. */
static void maybe_corrupt(router *r, snapxfer_chunk *c, size_t len)
{
	size_t at;

	if (len < sizeof(*c) || c->len == 0 || c->len > len - sizeof(*c) ||
	    !atomic_load_explicit(&r->faulty, memory_order_acquire))
		return;
	pthread_mutex_lock(&r->mu);
	if (!rng_chance(r, r->corrupt)) {
		pthread_mutex_unlock(&r->mu);
		return;
	}
	at = (size_t)(rng_next(r) % c->len);
	pthread_mutex_unlock(&r->mu);
	c->data[at] ^= 0x5a;
	stat_add(&r->corrupted, 1);
}

/* Sends the copies p plans of buf (len bytes, owned; consumed whatever happens): the second
 * copy, if any, is a fresh duplicate; each chunk copy draws the corrupt fault on its own; each
 * copy is held or delivered per its own hold time. */
static void dispatch_copies(router *r, uint64_t from, uint64_t to, int kind, void *buf, size_t len,
                            raft_plan *p)
{
	void *copy[2] = {buf, NULL};

	if (p->copies == 2) {
		stat_add(&r->duplicated, 1);
		copy[1] = malloc(len);
		if (copy[1] == NULL) {
			stat_add(&r->dropped, 1);
			p->copies = 1;
		} else {
			memcpy(copy[1], buf, len);
		}
	}
	for (int i = 0; i < p->copies; i++) {
		if (kind == NODE_ITEM_SNAP_CHUNK)
			maybe_corrupt(r, copy[i], len);
		if (p->hold_ns[i] > 0)
			hold_item(r, from, to, kind, copy[i], len, p->hold_ns[i]);
		else
			deliver_item(r, to, kind, copy[i], len);
	}
}

/* ---- sending ------------------------------------------------------------------------------ */

void router_send_raft(router *r, const raft_message *m)
{
	raft_plan p = {1, {0, 0}};
	void *buf = NULL;
	size_t len;

	if (r == NULL || m == NULL)
		return;
	stat_add(&r->raft_sent, 1);
	if (!valid_id(r, m->to)) {
		stat_add(&r->dropped, 1);
		return;
	}
	if (atomic_load_explicit(&r->faulty, memory_order_acquire))
		p = plan_raft(r, m->from, m->to);
	if (p.copies == 0) {
		stat_add(&r->dropped, 1);
		return;
	}
	if (raft_message_encode(m, &buf, &len) != RAFT_OK) {
		stat_add(&r->dropped, (uint64_t)p.copies);
		return;
	}
	dispatch_copies(r, m->from, m->to, NODE_ITEM_RAFT, buf, len, &p);
}

void router_send_snap(router *r, uint64_t from, uint64_t to, int kind, void *ptr, size_t len)
{
	raft_plan p = {1, {0, 0}};

	if (r == NULL || ptr == NULL) {
		free(ptr);
		return;
	}
	stat_add(kind == NODE_ITEM_SNAP_CHUNK ? &r->chunks : &r->acks, 1);
	if (!valid_id(r, to) || (kind != NODE_ITEM_SNAP_CHUNK && kind != NODE_ITEM_SNAP_ACK)) {
		free(ptr);
		stat_add(&r->dropped, 1);
		return;
	}
	if (atomic_load_explicit(&r->faulty, memory_order_acquire))
		p = plan_raft(r, from, to);
	if (p.copies == 0) {
		free(ptr);
		stat_add(&r->dropped, 1);
		return;
	}
	dispatch_copies(r, from, to, kind, ptr, len, &p);
}

/* Draws the global drop and duplicate faults for a client request: 0 (eaten), 1 or 2 copies. */
static int plan_request(router *r)
{
	int copies = 1;

	if (!atomic_load_explicit(&r->faulty, memory_order_acquire))
		return 1;
	pthread_mutex_lock(&r->mu);
	if (rng_chance(r, r->drop))
		copies = 0;
	else if (rng_chance(r, r->dup))
		copies = 2;
	pthread_mutex_unlock(&r->mu);
	return copies;
}

/*
 * Every copy pushed holds its own reference, taken before the push and given back if the push
 * fails, so the caller's reference is never touched. A stopped node is ROUTER_DOWN even when a
 * drop fault would have eaten the request. `dropped` counts the copies lost silently: those a
 * drop fault ate and a duplicate that did not fit.
 */
int router_send_request(router *r, uint64_t to, request *req, uint64_t attempt)
{
	mailbox_item it = {NODE_ITEM_REQUEST, req, attempt};
	router_slot *s;
	int copies, rc = ROUTER_DOWN;

	if (r == NULL || req == NULL || !valid_id(r, to))
		return ROUTER_DOWN;
	copies = plan_request(r);
	s = &r->slots[to - 1];
	pthread_rwlock_rdlock(&s->lock);
	if (s->mb == NULL)
		goto out;
	rc = ROUTER_OK;
	if (copies == 0) {
		stat_add(&r->dropped, 1);
		goto out;
	}
	if (copies == 2)
		stat_add(&r->duplicated, 1);
	for (int i = 0; i < copies; i++) {
		request_retain(req);
		stat_add(&r->requests, 1); /* before the push, as in push_item */
		if (mailbox_push(s->mb, &it) == MAILBOX_OK)
			continue;
		atomic_fetch_sub_explicit(&r->requests, 1, memory_order_relaxed);
		request_release(req); /* never the last: the caller holds one */
		if (i == 0) {
			rc = ROUTER_FULL;
			break;
		}
		stat_add(&r->dropped, 1);
	}
out:
	pthread_rwlock_unlock(&s->lock);
	return rc;
}

int router_send_control(router *r, uint64_t to, int kind, uint64_t arg)
{
	mailbox_item it = {kind, NULL, arg};

	if (r == NULL || !valid_id(r, to))
		return ROUTER_DOWN;
	return push_item(r, to, &it, NULL);
}

/* ---- fault controls ----------------------------------------------------------------------- */

void router_partition(router *r, const uint64_t *ids, size_t n)
{
	if (r == NULL || (ids == NULL && n > 0))
		return;
	pthread_mutex_lock(&r->mu);
	memset(r->in_group_a, 0, r->n);
	for (size_t i = 0; i < n; i++)
		if (valid_id(r, ids[i]))
			r->in_group_a[ids[i] - 1] = 1;
	r->partitioned = true;
	update_faulty(r);
	pthread_mutex_unlock(&r->mu);
}

void router_isolate(router *r, uint64_t id)
{
	router_partition(r, &id, 1);
}

/* Clears every fault. Messages already held still arrive when due (unless a stop cuts them). */
void router_heal(router *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	r->partitioned = false;
	memset(r->in_group_a, 0, r->n);
	r->drop = 0.0;
	memset(r->link_drop, 0, r->n * r->n * sizeof(*r->link_drop));
	r->n_link_rates = 0;
	r->dup = 0.0;
	r->delay_min_ns = r->delay_max_ns = 0;
	r->reorder = 0.0;
	r->reorder_max_ns = 0;
	r->corrupt = 0.0;
	update_faulty(r);
	pthread_mutex_unlock(&r->mu);
}

void router_set_drop_rate(router *r, double rate)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	r->drop = clamp_rate(rate);
	update_faulty(r);
	pthread_mutex_unlock(&r->mu);
}

void router_set_link_drop_rate(router *r, uint64_t from, uint64_t to, double rate)
{
	double *slot;

	if (r == NULL || !valid_id(r, from) || !valid_id(r, to))
		return;
	rate = clamp_rate(rate);
	pthread_mutex_lock(&r->mu);
	slot = &r->link_drop[(from - 1) * r->n + (to - 1)];
	if (*slot > 0.0)
		r->n_link_rates--;
	if (rate > 0.0)
		r->n_link_rates++;
	*slot = rate;
	update_faulty(r);
	pthread_mutex_unlock(&r->mu);
}

void router_set_duplicate_rate(router *r, double rate)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	r->dup = clamp_rate(rate);
	update_faulty(r);
	pthread_mutex_unlock(&r->mu);
}

/* min > max is read as [max, min]. */
void router_set_delay(router *r, unsigned min_ms, unsigned max_ms)
{
	if (r == NULL)
		return;
	if (min_ms > max_ms) {
		unsigned t = min_ms;

		min_ms = max_ms;
		max_ms = t;
	}
	pthread_mutex_lock(&r->mu);
	r->delay_min_ns = (uint64_t)min_ms * NS_PER_MS;
	r->delay_max_ns = (uint64_t)max_ms * NS_PER_MS;
	update_faulty(r);
	pthread_mutex_unlock(&r->mu);
}

void router_set_reorder(router *r, double rate, unsigned max_ms)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	r->reorder = clamp_rate(rate);
	r->reorder_max_ns = (uint64_t)max_ms * NS_PER_MS;
	update_faulty(r);
	pthread_mutex_unlock(&r->mu);
}

void router_set_corrupt_rate(router *r, double rate)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	r->corrupt = clamp_rate(rate);
	update_faulty(r);
	pthread_mutex_unlock(&r->mu);
}

void router_stats_get(router *r, router_stats *out)
{
	if (out == NULL)
		return;
	memset(out, 0, sizeof(*out));
	if (r == NULL)
		return;
	out->raft_sent = atomic_load_explicit(&r->raft_sent, memory_order_relaxed);
	out->raft_delivered = atomic_load_explicit(&r->raft_delivered, memory_order_relaxed);
	out->dropped = atomic_load_explicit(&r->dropped, memory_order_relaxed);
	out->duplicated = atomic_load_explicit(&r->duplicated, memory_order_relaxed);
	out->held = atomic_load_explicit(&r->held, memory_order_relaxed);
	out->requests = atomic_load_explicit(&r->requests, memory_order_relaxed);
	out->chunks = atomic_load_explicit(&r->chunks, memory_order_relaxed);
	out->acks = atomic_load_explicit(&r->acks, memory_order_relaxed);
	out->corrupted = atomic_load_explicit(&r->corrupted, memory_order_relaxed);
}
