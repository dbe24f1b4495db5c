/* netsim.c - deterministic in-memory network of rawnodes over memory storage, for core tests. */
#include "netsim.h"

#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NETSIM_MAX_ROUNDS 100000

typedef struct netsim_peer {
	raft_rawnode *rn;
	raft_memory_storage *storage;
	bool blackholed;
	bool crash_armed; /* crash inside the next Ready */
	bool deferred;    /* interleave: a Ready taken and not yet persisted (a slow disk) */
	raft_ready deferred_rd;
	int deferred_visits;
	bool has_lazy_hs; /* lazy_sync: a hard state written but not yet synced */
	raft_hard_state lazy_hs;
	uint64_t last_applied;
	netsim_applied *applied;
	size_t n_applied, cap_applied;
	raft_read_state *reads;
	size_t n_reads, cap_reads;
} netsim_peer;

struct netsim {
	netsim_options opt;
	size_t n;
	netsim_peer peers[RAFT_MAX_VOTERS + 1];
	uint64_t peer_ids[RAFT_MAX_VOTERS];
	double drop_p[RAFT_MAX_VOTERS + 1][RAFT_MAX_VOTERS + 1];
	bool ignored[RAFT_MSG_TYPE_COUNT];
	raft_message *queue; /* ring buffer */
	size_t q_head, q_len, q_cap;
	uint64_t prng;
	uint64_t interleave_prng; /* its own stream, so drops do not depend on interleaving */
	size_t dropped;
	netsim_counters counters;
	netsim_hook_fn hook;
	void *hook_ctx;
	netsim_ready_fn observer;
	void *observer_ctx;
};

static void *xrealloc(void *p, size_t size)
{
	void *q = realloc(p, size);
	if (q == NULL) {
		fprintf(stderr, "netsim: out of memory\n");
		abort();
	}
	return q;
}

static void check_ok(int rv, const char *what, uint64_t id)
{
	if (rv == RAFT_OK)
		return;
	fprintf(stderr, "netsim: %s on peer %llu failed: %s\n", what, (unsigned long long)id,
	        raft_strerror(rv));
	CU_FAIL("netsim: core call failed (see stderr)");
}

static uint64_t prng_next(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static double prng_unit(netsim *ns)
{
	return (double)(prng_next(&ns->prng) >> 11) / (double)(UINT64_C(1) << 53);
}

static uint64_t interleave_below(netsim *ns, uint64_t n)
{
	return prng_next(&ns->interleave_prng) % n;
}

static bool valid_id(const netsim *ns, uint64_t id)
{
	return id >= 1 && id <= ns->n;
}

static netsim_peer *peer_of(netsim *ns, uint64_t id)
{
	if (!valid_id(ns, id)) {
		fprintf(stderr, "netsim: no peer %llu\n", (unsigned long long)id);
		abort();
	}
	return &ns->peers[id];
}

static bool peer_acts(netsim *ns, uint64_t id)
{
	netsim_peer *p = peer_of(ns, id);
	return p->rn != NULL && !p->blackholed;
}

/* ---- message queue ---- */

static void queue_push(netsim *ns, const raft_message *m)
{
	if (ns->q_len == ns->q_cap) {
		size_t cap = ns->q_cap ? ns->q_cap * 2 : 64;
		raft_message *q = xrealloc(NULL, cap * sizeof(*q));
		for (size_t i = 0; i < ns->q_len; i++)
			q[i] = ns->queue[(ns->q_head + i) % ns->q_cap];
		free(ns->queue);
		ns->queue = q;
		ns->q_head = 0;
		ns->q_cap = cap;
	}
	raft_message *slot = &ns->queue[(ns->q_head + ns->q_len) % ns->q_cap];
	if (raft_message_clone(slot, m) != RAFT_OK) {
		fprintf(stderr, "netsim: out of memory cloning a message\n");
		abort();
	}
	ns->q_len++;
}

/* Moves the oldest message into *out (owned by the caller). */
static void queue_pop(netsim *ns, raft_message *out)
{
	*out = ns->queue[ns->q_head];
	ns->q_head = (ns->q_head + 1) % ns->q_cap;
	ns->q_len--;
}

/* Puts a just-popped message back at the tail (there is room), taking ownership. */
static void queue_requeue(netsim *ns, raft_message *m)
{
	ns->queue[(ns->q_head + ns->q_len) % ns->q_cap] = *m;
	ns->q_len++;
}

static void queue_purge_to(netsim *ns, uint64_t to)
{
	size_t count = ns->q_len;
	for (size_t i = 0; i < count; i++) {
		raft_message m;
		queue_pop(ns, &m);
		if (m.to == to) {
			raft_message_free(&m);
			ns->dropped++;
			continue;
		}
		queue_requeue(ns, &m);
	}
}

static void queue_clear(netsim *ns)
{
	raft_message m;
	while (ns->q_len > 0) {
		queue_pop(ns, &m);
		raft_message_free(&m);
	}
	free(ns->queue);
	ns->queue = NULL;
	ns->q_cap = 0;
}

/* ---- peers ---- */

static void start_peer(netsim *ns, uint64_t id)
{
	netsim_peer *p = peer_of(ns, id);
	raft_config c;
	raft_config_init(&c);
	c.id = id;
	c.peers = ns->peer_ids;
	c.n_peers = ns->n;
	c.election_tick = ns->opt.election_tick;
	c.heartbeat_tick = ns->opt.heartbeat_tick;
	c.storage = raft_memory_storage_interface(p->storage);
	c.applied = p->last_applied;
	c.pre_vote = ns->opt.pre_vote;
	c.check_quorum = ns->opt.check_quorum;
	c.disable_proposal_forwarding = ns->opt.disable_proposal_forwarding;
	c.seed = ns->opt.seed;
	if (ns->opt.max_size_per_msg)
		c.max_size_per_msg = ns->opt.max_size_per_msg;
	if (ns->opt.max_inflight_msgs)
		c.max_inflight_msgs = ns->opt.max_inflight_msgs;
	if (ns->opt.max_uncommitted_entries_size)
		c.max_uncommitted_entries_size = ns->opt.max_uncommitted_entries_size;
	if (ns->opt.max_committed_size_per_ready)
		c.max_committed_size_per_ready = ns->opt.max_committed_size_per_ready;
	int rv = raft_rawnode_new(&c, &p->rn);
	if (rv != RAFT_OK) {
		fprintf(stderr, "netsim: raft_rawnode_new(%llu): %s (seed %llu)\n",
		        (unsigned long long)id, raft_strerror(rv),
		        (unsigned long long)ns->opt.seed);
		abort();
	}
}

static void record_applied(netsim_peer *p, uint64_t index, uint64_t term, int type,
                           const void *data, size_t len)
{
	if (p->n_applied == p->cap_applied) {
		p->cap_applied = p->cap_applied ? p->cap_applied * 2 : 16;
		p->applied = xrealloc(p->applied, p->cap_applied * sizeof(*p->applied));
	}
	netsim_applied *a = &p->applied[p->n_applied++];
	memset(a, 0, sizeof(*a));
	a->index = index;
	a->term = term;
	a->type = type;
	a->len = len;
	if (data != NULL)
		memcpy(a->data, data, len < sizeof(a->data) ? len : sizeof(a->data));
	if (index > p->last_applied)
		p->last_applied = index;
}

static void record_read(netsim_peer *p, const raft_read_state *rs)
{
	if (p->n_reads == p->cap_reads) {
		p->cap_reads = p->cap_reads ? p->cap_reads * 2 : 8;
		p->reads = xrealloc(p->reads, p->cap_reads * sizeof(*p->reads));
	}
	p->reads[p->n_reads++] = *rs;
}

static void write_hard_state(netsim_peer *p, uint64_t id, const raft_hard_state *hs)
{
	check_ok(raft_memory_storage_set_hard_state(p->storage, hs), "set_hard_state", id);
}

/* With lazy_sync, a Ready that need not be synced only buffers its hard state. */
static bool buffer_ready(netsim *ns, netsim_peer *p, uint64_t id, const raft_ready *rd)
{
	if (!ns->opt.lazy_sync || rd->must_sync)
		return false;
	if (rd->has_snapshot || rd->n_entries > 0) {
		fprintf(stderr, "netsim: peer %llu: Ready with entries but must_sync == false\n",
		        (unsigned long long)id);
		CU_FAIL("netsim: must_sync missing");
		return false;
	}
	if (rd->has_hard_state) {
		p->lazy_hs = rd->hard_state;
		p->has_lazy_hs = true;
	}
	return true;
}

static void persist_ready(netsim *ns, netsim_peer *p, uint64_t id, const raft_ready *rd)
{
	if (buffer_ready(ns, p, id, rd))
		return;
	if (p->has_lazy_hs) /* an fsync makes everything written before it durable */
		write_hard_state(p, id, &p->lazy_hs);
	p->has_lazy_hs = false;
	if (rd->has_snapshot)
		check_ok(raft_memory_storage_apply_snapshot(p->storage, &rd->snapshot),
		         "apply_snapshot", id);
	if (rd->n_entries > 0)
		check_ok(raft_memory_storage_append(p->storage, rd->entries, rd->n_entries),
		         "append", id);
	if (rd->has_hard_state)
		write_hard_state(p, id, &rd->hard_state);
}

static void apply_ready(netsim_peer *p, const raft_ready *rd)
{
	if (rd->has_snapshot) {
		const raft_snapshot *s = &rd->snapshot;
		record_applied(p, s->metadata.index, s->metadata.term, NETSIM_APPLIED_SNAPSHOT,
		               s->data, s->len);
	}
	for (size_t i = 0; i < rd->n_committed_entries; i++) {
		const raft_entry *e = &rd->committed_entries[i];
		record_applied(p, e->index, e->term, e->type, e->data, e->len);
	}
	for (size_t i = 0; i < rd->n_read_states; i++)
		record_read(p, &rd->read_states[i]);
}

static size_t deliver_to(netsim *ns, uint64_t id, size_t max);

/* With `interleave`, sometimes steps a few queued messages into id and ticks it while its Ready
 * is outstanding. */
static void interleave(netsim *ns, uint64_t id)
{
	if (!ns->opt.interleave || interleave_below(ns, 4) != 0)
		return;
	size_t delivered = deliver_to(ns, id, 1 + (size_t)interleave_below(ns, 4));
	bool tick = interleave_below(ns, 3) == 0;
	if (tick)
		netsim_tick(ns, id);
	if (delivered > 0 || tick)
		ns->counters.interleaved++;
}

static bool sends_append(const raft_ready *rd)
{
	for (size_t i = 0; i < rd->n_messages; i++)
		if (rd->messages[i].type == RAFT_MSG_APPEND && rd->messages[i].n_entries > 0)
			return true;
	return false;
}

/* Persists, sends, applies and advances a Ready taken earlier. */
static void finish_ready(netsim *ns, uint64_t id, const raft_ready *rd)
{
	netsim_peer *p = peer_of(ns, id);
	persist_ready(ns, p, id, rd);
	for (size_t i = 0; i < rd->n_persisted_messages; i++)
		queue_push(ns, &rd->persisted_messages[i]);
	apply_ready(p, rd);
	if (ns->observer != NULL)
		ns->observer(ns->observer_ctx, ns, id, rd);
	interleave(ns, id);
	check_ok(raft_rawnode_advance(p->rn), "advance", id);
}

/* A deferred Ready (a slow disk) completes at one of the next visits, the third at the latest. */
static bool visit_deferred(netsim *ns, uint64_t id)
{
	netsim_peer *p = peer_of(ns, id);
	if (p->deferred_visits++ < 3 && interleave_below(ns, 2) == 0)
		return true;
	p->deferred = false;
	finish_ready(ns, id, &p->deferred_rd);
	return true;
}

/* Handles one Ready of peer id if it has one; returns whether it did. */
static bool handle_ready(netsim *ns, uint64_t id)
{
	netsim_peer *p = peer_of(ns, id);
	if (!peer_acts(ns, id))
		return false;
	if (p->deferred)
		return visit_deferred(ns, id);
	if (!raft_rawnode_has_ready(p->rn))
		return false;
	raft_ready rd;
	int rv = raft_rawnode_ready(p->rn, &rd);
	if (rv != RAFT_OK) {
		check_ok(rv, "ready", id);
		return false;
	}
	for (size_t i = 0; i < rd.n_messages; i++)
		queue_push(ns, &rd.messages[i]);
	if (p->crash_armed) {
		ns->counters.ready_crashes++;
		ns->counters.sent_then_lost += rd.n_entries > 0 && sends_append(&rd);
		netsim_crash(ns, id);
		return true;
	}
	interleave(ns, id);
	if (ns->opt.interleave && interleave_below(ns, 8) == 0) {
		ns->counters.deferred++;
		p->deferred = true;
		p->deferred_rd = rd;
		p->deferred_visits = 0;
		return true;
	}
	finish_ready(ns, id, &rd);
	return true;
}

static size_t handle_all_readies(netsim *ns)
{
	size_t handled = 0;
	for (uint64_t id = 1; id <= ns->n; id++)
		handled += handle_ready(ns, id) ? 1 : 0;
	return handled;
}

/* ---- delivery ---- */

static bool filtered_out(netsim *ns, const raft_message *m)
{
	if (m->type >= 0 && m->type < RAFT_MSG_TYPE_COUNT && ns->ignored[m->type])
		return true;
	if (!valid_id(ns, m->from) || !valid_id(ns, m->to))
		return true;
	if (ns->peers[m->from].blackholed)
		return true;
	double p = ns->drop_p[m->from][m->to];
	return p > 0 && (p >= 1.0 || prng_unit(ns) < p);
}

/* Steps m into its recipient; returns whether a live, acting node received it. */
static bool deliver_one(netsim *ns, const raft_message *m)
{
	if (!valid_id(ns, m->to) || !peer_acts(ns, m->to))
		return false;
	int rv = raft_rawnode_step(ns->peers[m->to].rn, m);
	if (rv != RAFT_OK && rv != RAFT_ERR_PROPOSAL_DROPPED)
		check_ok(rv, "step", m->to);
	return true;
}

static void report_snapshot(netsim *ns, const raft_message *m, bool delivered)
{
	if (m->type != RAFT_MSG_SNAPSHOT || !valid_id(ns, m->from) || !peer_acts(ns, m->from))
		return;
	check_ok(raft_rawnode_report_snapshot(ns->peers[m->from].rn, m->to, delivered),
	         "report_snapshot", m->from);
}

/* Delivers m (consumed) through the filters and the hook. */
static size_t deliver_message(netsim *ns, raft_message *m)
{
	int copies = 0;
	if (!filtered_out(ns, m))
		copies = ns->hook != NULL ? ns->hook(ns->hook_ctx, ns, m) : 1;
	size_t delivered = 0;
	for (int i = 0; i < copies; i++)
		delivered += deliver_one(ns, m) ? 1 : 0;
	if (delivered == 0)
		ns->dropped++;
	report_snapshot(ns, m, delivered > 0);
	raft_message_free(m);
	return delivered;
}

static size_t deliver_next(netsim *ns)
{
	raft_message m;
	queue_pop(ns, &m);
	return deliver_message(ns, &m);
}

/* Delivers the oldest `max` queued messages addressed to id; the others keep their order. */
static size_t deliver_to(netsim *ns, uint64_t id, size_t max)
{
	size_t count = ns->q_len, taken = 0, delivered = 0;
	for (size_t i = 0; i < count; i++) {
		raft_message m;
		queue_pop(ns, &m);
		if (m.to == id && taken < max) {
			taken++;
			delivered += deliver_message(ns, &m);
		} else {
			queue_requeue(ns, &m);
		}
	}
	return delivered;
}

/* ---- public API ---- */

netsim *netsim_new(const netsim_options *opt)
{
	if (opt->n < 1 || opt->n > RAFT_MAX_VOTERS) {
		fprintf(stderr, "netsim: bad peer count %zu\n", opt->n);
		abort();
	}
	netsim *ns = xrealloc(NULL, sizeof(*ns));
	memset(ns, 0, sizeof(*ns));
	ns->opt = *opt;
	if (ns->opt.election_tick == 0)
		ns->opt.election_tick = 10;
	if (ns->opt.heartbeat_tick == 0)
		ns->opt.heartbeat_tick = 1;
	ns->n = opt->n;
	ns->prng = opt->seed;
	ns->interleave_prng = opt->seed ^ UINT64_C(0x696e7465726c6561); /* "interlea" */
	for (size_t i = 0; i < ns->n; i++)
		ns->peer_ids[i] = i + 1;
	for (uint64_t id = 1; id <= ns->n; id++) {
		ns->peers[id].storage = raft_memory_storage_new();
		if (ns->peers[id].storage == NULL) {
			fprintf(stderr, "netsim: out of memory\n");
			abort();
		}
		start_peer(ns, id);
	}
	return ns;
}

void netsim_free(netsim *ns)
{
	if (ns == NULL)
		return;
	queue_clear(ns);
	for (uint64_t id = 1; id <= ns->n; id++) {
		netsim_peer *p = &ns->peers[id];
		raft_rawnode_free(p->rn);
		raft_memory_storage_free(p->storage);
		free(p->applied);
		free(p->reads);
	}
	free(ns);
}

raft_rawnode *netsim_node(netsim *ns, uint64_t id)
{
	return peer_of(ns, id)->rn;
}

raft_memory_storage *netsim_storage(netsim *ns, uint64_t id)
{
	return peer_of(ns, id)->storage;
}

raft_status netsim_status(netsim *ns, uint64_t id)
{
	raft_status st;
	memset(&st, 0, sizeof(st));
	netsim_peer *p = peer_of(ns, id);
	if (p->rn == NULL) {
		st.id = id;
		st.role = -1;
		return st;
	}
	raft_rawnode_status(p->rn, &st);
	return st;
}

void netsim_tick(netsim *ns, uint64_t id)
{
	if (peer_acts(ns, id))
		check_ok(raft_rawnode_tick(ns->peers[id].rn), "tick", id);
}

void netsim_tick_all(netsim *ns)
{
	for (uint64_t id = 1; id <= ns->n; id++)
		netsim_tick(ns, id);
}

void netsim_campaign(netsim *ns, uint64_t id)
{
	if (peer_acts(ns, id))
		check_ok(raft_rawnode_campaign(ns->peers[id].rn), "campaign", id);
	netsim_stabilize(ns);
}

int netsim_propose(netsim *ns, uint64_t id, const void *data, size_t len)
{
	int rv = RAFT_ERR_INVALID;
	if (peer_acts(ns, id))
		rv = raft_rawnode_propose(ns->peers[id].rn, data, len);
	netsim_stabilize(ns);
	return rv;
}

int netsim_step(netsim *ns, const raft_message *m)
{
	int rv = RAFT_ERR_INVALID;
	if (valid_id(ns, m->to) && peer_acts(ns, m->to))
		rv = raft_rawnode_step(ns->peers[m->to].rn, m);
	netsim_stabilize(ns);
	return rv;
}

void netsim_inject(netsim *ns, const raft_message *m)
{
	queue_push(ns, m);
}

size_t netsim_step_round(netsim *ns)
{
	handle_all_readies(ns);
	size_t now = ns->q_len;
	size_t delivered = 0;
	for (size_t i = 0; i < now && ns->q_len > 0; i++)
		delivered += deliver_next(ns);
	return delivered;
}

size_t netsim_stabilize(netsim *ns)
{
	size_t total = 0;
	for (int round = 0; round < NETSIM_MAX_ROUNDS; round++) {
		size_t handled = handle_all_readies(ns);
		if (handled == 0 && ns->q_len == 0)
			return total;
		total += netsim_step_round(ns);
	}
	fprintf(stderr, "netsim: no quiescence after %d rounds (seed %llu)\n", NETSIM_MAX_ROUNDS,
	        (unsigned long long)ns->opt.seed);
	CU_FAIL("netsim: network never became quiet");
	return total;
}

void netsim_cut(netsim *ns, uint64_t a, uint64_t b)
{
	peer_of(ns, a);
	peer_of(ns, b);
	ns->drop_p[a][b] = 1.0;
	ns->drop_p[b][a] = 1.0;
}

void netsim_isolate(netsim *ns, uint64_t id)
{
	for (uint64_t other = 1; other <= ns->n; other++)
		if (other != id)
			netsim_cut(ns, id, other);
}

void netsim_drop(netsim *ns, uint64_t from, uint64_t to, double p)
{
	peer_of(ns, from);
	peer_of(ns, to);
	ns->drop_p[from][to] = p;
}

void netsim_ignore(netsim *ns, int msg_type)
{
	if (msg_type >= 0 && msg_type < RAFT_MSG_TYPE_COUNT)
		ns->ignored[msg_type] = true;
}

void netsim_recover(netsim *ns)
{
	memset(ns->drop_p, 0, sizeof(ns->drop_p));
	memset(ns->ignored, 0, sizeof(ns->ignored));
}

void netsim_blackhole(netsim *ns, uint64_t id)
{
	peer_of(ns, id)->blackholed = true;
}

void netsim_set_hook(netsim *ns, netsim_hook_fn fn, void *ctx)
{
	ns->hook = fn;
	ns->hook_ctx = ctx;
}

void netsim_set_observer(netsim *ns, netsim_ready_fn fn, void *ctx)
{
	ns->observer = fn;
	ns->observer_ctx = ctx;
}

void netsim_crash(netsim *ns, uint64_t id)
{
	netsim_peer *p = peer_of(ns, id);
	raft_rawnode_free(p->rn);
	p->rn = NULL;
	p->crash_armed = false;
	p->deferred = false; /* the unwritten Ready died with the rawnode */
	if (p->has_lazy_hs)
		ns->counters.lost_hard_states++;
	p->has_lazy_hs = false;
	queue_purge_to(ns, id);
}

void netsim_crash_in_ready(netsim *ns, uint64_t id, bool armed)
{
	netsim_peer *p = peer_of(ns, id);
	p->crash_armed = armed && p->rn != NULL;
}

bool netsim_crash_armed(netsim *ns, uint64_t id)
{
	return peer_of(ns, id)->crash_armed;
}

void netsim_restart(netsim *ns, uint64_t id)
{
	if (peer_of(ns, id)->rn != NULL)
		netsim_crash(ns, id);
	start_peer(ns, id);
}

const netsim_applied *netsim_applied_list(netsim *ns, uint64_t id, size_t *n)
{
	netsim_peer *p = peer_of(ns, id);
	*n = p->n_applied;
	return p->applied;
}

const raft_read_state *netsim_read_states(netsim *ns, uint64_t id, size_t *n)
{
	netsim_peer *p = peer_of(ns, id);
	*n = p->n_reads;
	return p->reads;
}

size_t netsim_dropped(netsim *ns)
{
	return ns->dropped;
}

netsim_counters netsim_get_counters(netsim *ns)
{
	return ns->counters;
}

uint64_t netsim_leader(netsim *ns)
{
	uint64_t best = 0, best_term = 0;
	for (uint64_t id = 1; id <= ns->n; id++) {
		if (!peer_acts(ns, id))
			continue;
		raft_status st;
		raft_rawnode_status(ns->peers[id].rn, &st);
		if (st.role == RAFT_LEADER && (best == 0 || st.term > best_term)) {
			best = id;
			best_term = st.term;
		}
	}
	return best;
}
