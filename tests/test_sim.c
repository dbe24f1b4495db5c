/* test_sim.c - randomized Raft simulation over netsim with incremental safety checks. */
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "netsim.h"
#include "suites.h"

#define SIM_DEFAULT_SEEDS    1000
#define SIM_DEFAULT_EVENTS   5000
#define SIM_MAX_FAILED_SEEDS 5
#define SIM_POOL_CAP         32
#define SIM_HEAL_ROUNDS      1000
#define SIM_INDEX_LIMIT      (UINT64_C(1) << 22)
#define SIM_TERM_LIMIT       (UINT64_C(1) << 22)
#define SIM_PAYLOAD_MAX      136
#define SIM_SNAP_LEN         24
#define TERM_UNKNOWN         UINT64_MAX

/* ------------------------------------------------------------------------------------------ */
/* PRNG and hashing                                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef struct sim_rng {
	uint64_t state;
} sim_rng;

static uint64_t mix64(uint64_t x)
{
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static uint64_t rng_next(sim_rng *r)
{
	r->state += UINT64_C(0x9e3779b97f4a7c15);
	return mix64(r->state);
}

static uint64_t rng_below(sim_rng *r, uint64_t n)
{
	return n == 0 ? 0 : rng_next(r) % n;
}

static bool rng_chance(sim_rng *r, unsigned per_mille)
{
	return per_mille > 0 && rng_below(r, 1000) < per_mille;
}

static uint64_t hash_bytes(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * UINT64_C(0x100000001b3);
	return mix64(h ^ len);
}

static uint64_t entry_hash(const raft_entry *e)
{
	return mix64(hash_bytes(e->data, e->len) ^ ((uint64_t)e->type << 56));
}

static void put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void *grow_zeroed(void *p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return p;
	size_t ncap = *cap ? *cap : 64;
	while (ncap < need)
		ncap *= 2;
	unsigned char *q = realloc(p, ncap * elem);
	if (q == NULL)
		abort();
	memset(q + *cap * elem, 0, (ncap - *cap) * elem);
	*cap = ncap;
	return q;
}

/* ------------------------------------------------------------------------------------------ */
/* Invariant checker: pure bookkeeping, fed by the observer                                   */
/* ------------------------------------------------------------------------------------------ */

/* One distinct (index, term) entry seen persisted anywhere, with the term before it. */
typedef struct log_variant {
	uint64_t term;
	uint64_t hash;
	uint64_t prev_term;
	uint32_t next; /* 1-based index of the next variant at the same index, 0 = none */
} log_variant;

typedef struct index_slot {
	uint32_t variants; /* 1-based head of the variant list */
	bool committed;
	bool has_state;
	uint64_t commit_term;
	uint64_t commit_hash;
	uint64_t commit_obs_term; /* lowest term of a node seen applying it: >= its commit term */
	uint64_t state_hash;
	uint64_t state_count;
} index_slot;

typedef struct node_track {
	uint64_t sm_applied; /* state machine; survives crashes like netsim's applied list */
	uint64_t sm_count;
	uint64_t sm_hash;
	uint64_t run_commit; /* this run of the rawnode only */
	uint64_t run_applied;
	uint64_t durable_term; /* from persisted hard states */
	uint64_t durable_vote;
	uint64_t durable_commit;
	uint64_t checked_leader_term; /* term whose leader log was checked for completeness */
} node_track;

typedef struct checker {
	bool failed;
	char msg[512];
	index_slot *slots;
	size_t cap_slots;
	log_variant *variants;
	size_t n_variants;
	size_t cap_variants;
	uint64_t *leaders; /* by term */
	size_t cap_leaders;
	uint64_t *read_min; /* by read id - 1 */
	size_t n_reads;
	size_t cap_reads;
	uint64_t *proposal_index; /* by proposal id: first index it was applied at */
	size_t cap_proposals;
	uint64_t max_committed;
	node_track nodes[RAFT_MAX_VOTERS + 1];
} checker;

__attribute__((format(printf, 2, 3))) static void ck_fail(checker *ck, const char *fmt, ...)
{
	if (ck->failed)
		return;
	ck->failed = true;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ck->msg, sizeof ck->msg, fmt, ap);
	va_end(ap);
}

static void ck_free(checker *ck)
{
	free(ck->slots);
	free(ck->variants);
	free(ck->leaders);
	free(ck->read_min);
	free(ck->proposal_index);
	memset(ck, 0, sizeof *ck);
}

static index_slot *ck_slot(checker *ck, uint64_t index)
{
	if (index == 0 || index > SIM_INDEX_LIMIT) {
		ck_fail(ck, "log index %" PRIu64 " out of range", index);
		return NULL;
	}
	ck->slots = grow_zeroed(ck->slots, &ck->cap_slots, index + 1, sizeof *ck->slots);
	return &ck->slots[index];
}

static void ck_leader(checker *ck, uint64_t term, uint64_t id)
{
	if (term == 0 || term > SIM_TERM_LIMIT) {
		ck_fail(ck, "node %" PRIu64 " leads in impossible term %" PRIu64, id, term);
		return;
	}
	ck->leaders = grow_zeroed(ck->leaders, &ck->cap_leaders, term + 1, sizeof *ck->leaders);
	if (ck->leaders[term] == 0)
		ck->leaders[term] = id;
	else if (ck->leaders[term] != id)
		ck_fail(ck,
		        "election safety: two leaders in term %" PRIu64 ": %" PRIu64
		        " and %" PRIu64,
		        term, ck->leaders[term], id);
}

static void ck_variant_match(checker *ck, log_variant *lv, uint64_t id, uint64_t index,
                             uint64_t hash, uint64_t prev_term)
{
	if (lv->hash != hash) {
		ck_fail(ck,
		        "log matching: node %" PRIu64
		        " persisted a different entry at index %" PRIu64 " term %" PRIu64,
		        id, index, lv->term);
	} else if (prev_term != TERM_UNKNOWN && lv->prev_term != TERM_UNKNOWN &&
	           prev_term != lv->prev_term) {
		ck_fail(ck,
		        "log matching: node %" PRIu64 " has entry %" PRIu64 " term %" PRIu64
		        " after term %" PRIu64 ", another node after term %" PRIu64,
		        id, index, lv->term, prev_term, lv->prev_term);
	} else if (lv->prev_term == TERM_UNKNOWN) {
		lv->prev_term = prev_term;
	}
}

/* Records that node id persisted entry (index, term, hash) right after an entry of prev_term. */
static void ck_persisted(checker *ck, uint64_t id, uint64_t index, uint64_t term, uint64_t hash,
                         uint64_t prev_term)
{
	index_slot *sl = ck_slot(ck, index);
	if (sl == NULL)
		return;
	for (uint32_t v = sl->variants; v != 0; v = ck->variants[v - 1].next) {
		if (ck->variants[v - 1].term == term) {
			ck_variant_match(ck, &ck->variants[v - 1], id, index, hash, prev_term);
			return;
		}
	}
	ck->variants =
	    grow_zeroed(ck->variants, &ck->cap_variants, ck->n_variants + 1, sizeof *ck->variants);
	ck->variants[ck->n_variants] = (log_variant){term, hash, prev_term, sl->variants};
	sl->variants = (uint32_t)++ck->n_variants;
}

/* Records a committed entry seen applied by node id at obs_term. Returns true when leaders must
 * be (re)checked for it: it is new, or its bound on the commit term went down. */
static bool ck_committed(checker *ck, uint64_t id, uint64_t index, uint64_t term, uint64_t hash,
                         uint64_t obs_term)
{
	index_slot *sl = ck_slot(ck, index);
	if (sl == NULL)
		return false;
	if (index > ck->max_committed)
		ck->max_committed = index;
	if (!sl->committed) {
		sl->committed = true;
		sl->commit_term = term;
		sl->commit_hash = hash;
		sl->commit_obs_term = obs_term;
		return true;
	}
	if (sl->commit_term != term || sl->commit_hash != hash) {
		ck_fail(ck,
		        "node %" PRIu64 " applied a different entry at committed index %" PRIu64
		        " (term %" PRIu64 ", committed term %" PRIu64 ")",
		        id, index, term, sl->commit_term);
		return false;
	}
	if (obs_term < sl->commit_obs_term) {
		sl->commit_obs_term = obs_term;
		return true;
	}
	return false;
}

/* A snapshot at (index, term) stands for committed entries up to index. */
static void ck_snapshot_point(checker *ck, uint64_t id, uint64_t index, uint64_t term)
{
	index_slot *sl = ck_slot(ck, index);
	if (sl == NULL)
		return;
	if (sl->committed && sl->commit_term != term)
		ck_fail(ck,
		        "node %" PRIu64 " installed a snapshot at index %" PRIu64 " term %" PRIu64
		        ", but the entry committed there has term %" PRIu64,
		        id, index, term, sl->commit_term);
	if (index > ck->max_committed)
		ck->max_committed = index;
}

static void ck_state(checker *ck, uint64_t id, uint64_t index, uint64_t hash, uint64_t count)
{
	index_slot *sl = ck_slot(ck, index);
	if (sl == NULL)
		return;
	if (!sl->has_state) {
		sl->has_state = true;
		sl->state_hash = hash;
		sl->state_count = count;
	} else if (sl->state_hash != hash || sl->state_count != count) {
		ck_fail(ck,
		        "state machine of node %" PRIu64 " at applied index %" PRIu64
		        " differs: %" PRIu64 " entries, hash %016" PRIx64 "; elsewhere %" PRIu64
		        " entries, hash %016" PRIx64,
		        id, index, count, hash, sl->state_count, sl->state_hash);
	}
}

/* Commit and applied of one run of a rawnode never go down. */
static void ck_run_progress(checker *ck, uint64_t id, uint64_t commit, uint64_t applied)
{
	node_track *t = &ck->nodes[id];
	if (commit < t->run_commit)
		ck_fail(ck, "node %" PRIu64 " commit went back from %" PRIu64 " to %" PRIu64, id,
		        t->run_commit, commit);
	if (applied < t->run_applied)
		ck_fail(ck, "node %" PRIu64 " applied went back from %" PRIu64 " to %" PRIu64, id,
		        t->run_applied, applied);
	t->run_commit = commit;
	t->run_applied = applied;
}

static void ck_hard_state(checker *ck, uint64_t id, const raft_hard_state *hs)
{
	node_track *t = &ck->nodes[id];
	if (hs->term < t->durable_term)
		ck_fail(ck, "node %" PRIu64 " persisted term %" PRIu64 " after term %" PRIu64, id,
		        hs->term, t->durable_term);
	else if (hs->term == t->durable_term && t->durable_vote != 0 && hs->vote != t->durable_vote)
		ck_fail(ck,
		        "node %" PRIu64 " changed its vote in term %" PRIu64 " from %" PRIu64
		        " to %" PRIu64,
		        id, hs->term, t->durable_vote, hs->vote);
	if (hs->commit < t->durable_commit)
		ck_fail(ck, "node %" PRIu64 " persisted commit %" PRIu64 " after commit %" PRIu64,
		        id, hs->commit, t->durable_commit);
	t->durable_term = hs->term;
	t->durable_vote = hs->vote;
	t->durable_commit = hs->commit;
}

/* Registers a read request; its answer must cover everything committed so far. */
static uint64_t ck_read_request(checker *ck)
{
	ck->read_min =
	    grow_zeroed(ck->read_min, &ck->cap_reads, ck->n_reads + 1, sizeof *ck->read_min);
	ck->read_min[ck->n_reads] = ck->max_committed;
	return ++ck->n_reads;
}

static void ck_read_state(checker *ck, uint64_t id, const raft_read_state *rs)
{
	if (rs->context == 0 || rs->context > ck->n_reads) {
		ck_fail(ck, "node %" PRIu64 " got a read state for unknown request %" PRIu64, id,
		        rs->context);
		return;
	}
	uint64_t min = ck->read_min[rs->context - 1];
	if (rs->index < min)
		ck_fail(ck,
		        "read safety: node %" PRIu64 " read %" PRIu64 " answered at index %" PRIu64
		        ", but index %" PRIu64 " was committed before it was requested",
		        id, rs->context, rs->index, min);
}

/* ------------------------------------------------------------------------------------------ */
/* The simulation                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* What the runs exercised, for the summary line. */
typedef struct sim_stats {
	uint64_t events;
	uint64_t proposals;
	uint64_t committed;
	uint64_t reads;
	uint64_t reads_answered;
	uint64_t snapshots;
	uint64_t terms_led;
	uint64_t crashes;
	uint64_t interleaved;      /* Readies with steps or ticks between ready() and advance() */
	uint64_t deferred;         /* Readies left unwritten across netsim rounds */
	uint64_t lost_hard_states; /* unsynced hard states lost in crashes */
	uint64_t ready_crashes;    /* crashes after sending a Ready's messages, before persisting */
	uint64_t sent_then_lost;   /* ... where APPENDs left and the sender lost those entries */
} sim_stats;

typedef struct sim {
	checker ck;
	sim_stats stats;
	netsim *ns;
	sim_rng rng;
	uint64_t seed;
	size_t n;
	size_t event;
	char what[128];
	unsigned p_drop; /* per mille, applied by the delivery hook */
	unsigned p_dup;
	unsigned p_reorder;
	unsigned p_delay;
	raft_message pool[SIM_POOL_CAP]; /* delayed messages, re-injected later */
	size_t n_pool;
	uint64_t n_proposals;
	raft_conf_state conf;
	bool ready_crashes; /* some crashes happen inside a Ready */
	bool verbose;
	unsigned cu_failures; /* CUnit failures before this seed (netsim reports its own) */
} sim;

typedef void (*sim_event_fn)(sim *s);

typedef struct sim_event {
	unsigned weight; /* out of 1000 */
	sim_event_fn fn;
} sim_event;

static size_t payload_make(uint64_t seed, uint64_t pid, unsigned char *buf)
{
	sim_rng g = {mix64(seed ^ mix64(pid))};
	size_t len = 8 + (size_t)rng_below(&g, SIM_PAYLOAD_MAX - 8);
	put_u64(buf, pid);
	for (size_t i = 8; i < len; i += 8) {
		unsigned char word[8];
		put_u64(word, rng_next(&g));
		memcpy(buf + i, word, len - i < 8 ? len - i : 8);
	}
	return len;
}

static bool payload_valid(const sim *s, const raft_entry *e, uint64_t *pid)
{
	unsigned char buf[SIM_PAYLOAD_MAX];
	if (e->len < 8 || e->data == NULL)
		return false;
	*pid = get_u64(e->data);
	if (*pid == 0 || *pid > s->n_proposals)
		return false;
	size_t len = payload_make(s->seed, *pid, buf);
	return len == e->len && memcmp(buf, e->data, len) == 0;
}

static const raft_storage *sim_storage(sim *s, uint64_t id)
{
	return raft_memory_storage_interface(netsim_storage(s->ns, id));
}

static bool sim_status(sim *s, uint64_t id, raft_status *st)
{
	raft_rawnode *rn = netsim_node(s->ns, id);
	if (rn == NULL)
		return false;
	raft_rawnode_status(rn, st);
	return true;
}

/* True when the log in st holds (index, term), or has compacted it into its snapshot. */
static bool log_has(const raft_storage *st, uint64_t index, uint64_t term)
{
	uint64_t first, t;
	if (st->first_index(st->ctx, &first) != RAFT_OK)
		return false;
	if (index + 1 < first)
		return true;
	return st->term(st->ctx, index, &t) == RAFT_OK && t == term;
}

static void fail_incomplete_leader(sim *s, uint64_t id, uint64_t term, uint64_t index)
{
	const index_slot *sl = &s->ck.slots[index];
	ck_fail(&s->ck,
	        "leader completeness: leader %" PRIu64 " of term %" PRIu64 " lacks entry %" PRIu64
	        " (term %" PRIu64 "), seen committed by term %" PRIu64,
	        id, term, index, sl->commit_term, sl->commit_obs_term);
}

static void check_leader_log(sim *s, uint64_t id, uint64_t term)
{
	const raft_storage *st = sim_storage(s, id);
	uint64_t first = 1;
	st->first_index(st->ctx, &first);
	for (uint64_t index = first; index <= s->ck.max_committed; index++) {
		const index_slot *sl = &s->ck.slots[index];
		if (!sl->committed || sl->commit_obs_term >= term)
			continue;
		if (!log_has(st, index, sl->commit_term)) {
			fail_incomplete_leader(s, id, term, index);
			return;
		}
	}
}

/* A newly seen committed entry must already be in the logs of later, checked leaders. */
static void recheck_leaders(sim *s, uint64_t index)
{
	const index_slot *sl = &s->ck.slots[index];
	for (uint64_t j = 1; j <= s->n; j++) {
		uint64_t lterm = s->ck.nodes[j].checked_leader_term;
		raft_status st;
		if (lterm <= sl->commit_obs_term || !sim_status(s, j, &st))
			continue;
		if (st.role != RAFT_LEADER || st.term != lterm)
			continue;
		if (!log_has(sim_storage(s, j), index, sl->commit_term))
			fail_incomplete_leader(s, j, lterm, index);
	}
}

static void observe_leader(sim *s, uint64_t id, uint64_t term)
{
	ck_leader(&s->ck, term, id);
	if (s->ck.nodes[id].checked_leader_term == term)
		return;
	check_leader_log(s, id, term);
	s->ck.nodes[id].checked_leader_term = term;
}

/* Requests a follower forwards keep their origin in `from`, as in etcd. */
static bool is_relayed_request(int type)
{
	return type == RAFT_MSG_PROPOSE || type == RAFT_MSG_READ_INDEX ||
	       type == RAFT_MSG_TRANSFER_LEADER;
}

static void observe_messages(sim *s, uint64_t id, const raft_message *ms, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const raft_message *m = &ms[i];
		if (m->from != id && !is_relayed_request(m->type))
			ck_fail(&s->ck, "node %" PRIu64 " sends %s as node %" PRIu64, id,
			        raft_message_type_name(m->type), m->from);
		if (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
		    m->type == RAFT_MSG_SNAPSHOT)
			ck_leader(&s->ck, m->term, id);
	}
}

static void observe_snapshot(sim *s, uint64_t id, const raft_snapshot *snap)
{
	node_track *t = &s->ck.nodes[id];
	uint64_t index = snap->metadata.index;
	if (snap->len != SIM_SNAP_LEN || snap->data == NULL || get_u64(snap->data) != index) {
		ck_fail(&s->ck, "node %" PRIu64 " got snapshot %" PRIu64 " with foreign data", id,
		        index);
		return;
	}
	if (index <= t->sm_applied) {
		ck_fail(&s->ck,
		        "node %" PRIu64 " installs snapshot %" PRIu64
		        " at or below applied %" PRIu64,
		        id, index, t->sm_applied);
		return;
	}
	ck_snapshot_point(&s->ck, id, index, snap->metadata.term);
	t->sm_applied = index;
	t->sm_count = get_u64((const unsigned char *)snap->data + 8);
	t->sm_hash = get_u64((const unsigned char *)snap->data + 16);
	ck_state(&s->ck, id, index, t->sm_hash, t->sm_count);
}

static void observe_entries(sim *s, uint64_t id, const raft_entry *es, size_t n)
{
	const node_track *t = &s->ck.nodes[id];
	const raft_storage *st = sim_storage(s, id);
	if (n == 0)
		return;
	if (es[0].index <= t->durable_commit) {
		ck_fail(&s->ck,
		        "node %" PRIu64 " rewrites its log from index %" PRIu64
		        ", at or below its commit %" PRIu64,
		        id, es[0].index, t->durable_commit);
		return;
	}
	uint64_t prev = TERM_UNKNOWN;
	if (st->term(st->ctx, es[0].index - 1, &prev) != RAFT_OK)
		prev = TERM_UNKNOWN;
	for (size_t i = 0; i < n && !s->ck.failed; i++) {
		const raft_entry *e = &es[i];
		if (i > 0 && e->index != es[i - 1].index + 1)
			ck_fail(&s->ck, "node %" PRIu64 " persists a gap before index %" PRIu64, id,
			        e->index);
		if (prev != TERM_UNKNOWN && e->term < prev)
			ck_fail(&s->ck, "node %" PRIu64 " log term goes down at index %" PRIu64, id,
			        e->index);
		ck_persisted(&s->ck, id, e->index, e->term, entry_hash(e), prev);
		prev = e->term;
	}
}

static void apply_entry(sim *s, uint64_t id, uint64_t term, const raft_entry *e)
{
	node_track *t = &s->ck.nodes[id];
	uint64_t h = entry_hash(e), pid = 0;
	if (e->len > 0 && !payload_valid(s, e, &pid)) {
		ck_fail(&s->ck,
		        "node %" PRIu64 " applies index %" PRIu64 " with a payload nobody proposed",
		        id, e->index);
		return;
	}
	if (!log_has(sim_storage(s, id), e->index, e->term)) {
		ck_fail(&s->ck,
		        "node %" PRIu64 " applies index %" PRIu64 " term %" PRIu64
		        " that is not in its own log",
		        id, e->index, e->term);
		return;
	}
	if (ck_committed(&s->ck, id, e->index, e->term, h, term))
		recheck_leaders(s, e->index);
	if (e->len > 0) {
		t->sm_hash = mix64(t->sm_hash ^ h);
		t->sm_count++;
		if (s->ck.proposal_index[pid] == 0) {
			s->ck.proposal_index[pid] = e->index;
			s->stats.committed++;
		}
	}
	t->sm_applied = e->index;
	ck_state(&s->ck, id, e->index, t->sm_hash, t->sm_count);
}

static void observe_committed(sim *s, uint64_t id, uint64_t term, const raft_entry *es, size_t n)
{
	for (size_t i = 0; i < n && !s->ck.failed; i++) {
		uint64_t expect = s->ck.nodes[id].sm_applied + 1;
		if (es[i].index != expect) {
			ck_fail(&s->ck,
			        "node %" PRIu64 " applies index %" PRIu64 ", expected %" PRIu64, id,
			        es[i].index, expect);
			return;
		}
		apply_entry(s, id, term, &es[i]);
	}
}

static void sim_on_ready(void *ctx, netsim *ns, uint64_t id, const raft_ready *rd)
{
	sim *s = ctx;
	raft_status st;
	(void)ns;
	if (s->ck.failed || !sim_status(s, id, &st))
		return;
	observe_messages(s, id, rd->messages, rd->n_messages);
	observe_messages(s, id, rd->persisted_messages, rd->n_persisted_messages);
	if (rd->has_snapshot)
		observe_snapshot(s, id, &rd->snapshot);
	observe_entries(s, id, rd->entries, rd->n_entries);
	if (rd->has_hard_state)
		ck_hard_state(&s->ck, id, &rd->hard_state);
	observe_committed(s, id, st.term, rd->committed_entries, rd->n_committed_entries);
	for (size_t i = 0; i < rd->n_read_states; i++)
		ck_read_state(&s->ck, id, &rd->read_states[i]);
	s->stats.reads_answered += rd->n_read_states;
	s->stats.snapshots += rd->has_snapshot;
	if (st.role == RAFT_LEADER && !s->ck.failed)
		observe_leader(s, id, st.term);
}

static int sim_on_message(void *ctx, netsim *ns, raft_message *m)
{
	sim *s = ctx;
	if (s->n_pool < SIM_POOL_CAP && rng_chance(&s->rng, s->p_delay)) {
		if (raft_message_clone(&s->pool[s->n_pool], m) == RAFT_OK)
			s->n_pool++;
		return 0;
	}
	if (rng_chance(&s->rng, s->p_drop))
		return 0;
	if (rng_chance(&s->rng, s->p_reorder)) {
		netsim_inject(ns, m);
		return 0;
	}
	return rng_chance(&s->rng, s->p_dup) ? 2 : 1;
}

/* After every event: status-level invariants of every live node. */
static void check_nodes(sim *s)
{
	for (uint64_t id = 1; id <= s->n && !s->ck.failed; id++) {
		raft_status st;
		if (!sim_status(s, id, &st))
			continue;
		if (st.error != RAFT_OK)
			ck_fail(&s->ck, "node %" PRIu64 " stopped: %s", id,
			        raft_strerror(st.error));
		if (st.applied > st.commit || st.commit > st.last_index)
			ck_fail(&s->ck,
			        "node %" PRIu64 " has applied %" PRIu64 ", commit %" PRIu64
			        ", last index %" PRIu64,
			        id, st.applied, st.commit, st.last_index);
		if (st.role == RAFT_LEADER)
			ck_leader(&s->ck, st.term, id);
		ck_run_progress(&s->ck, id, st.commit, st.applied);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Events                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Crashed nodes, and nodes that will crash inside their next Ready. */
static size_t count_crashed(sim *s)
{
	size_t n = 0;
	for (uint64_t id = 1; id <= s->n; id++)
		n += netsim_node(s->ns, id) == NULL || netsim_crash_armed(s->ns, id);
	return n;
}

/* A random node that is live (want_live) or crashed, or 0 when there is none. */
static uint64_t pick_node(sim *s, bool want_live)
{
	uint64_t ids[RAFT_MAX_VOTERS];
	size_t n = 0;
	for (uint64_t id = 1; id <= s->n; id++)
		if ((netsim_node(s->ns, id) != NULL) == want_live)
			ids[n++] = id;
	return n == 0 ? 0 : ids[rng_below(&s->rng, n)];
}

static uint64_t pick_any(sim *s)
{
	return 1 + rng_below(&s->rng, s->n);
}

static void check_call(sim *s, const char *call, int rv)
{
	if (rv != RAFT_OK && rv != RAFT_ERR_PROPOSAL_DROPPED)
		ck_fail(&s->ck, "%s returned %s", call, raft_strerror(rv));
}

static void check_harness(sim *s)
{
	if (CU_get_number_of_failures() != s->cu_failures)
		ck_fail(&s->ck, "netsim reported a failed core call (see stderr above)");
}

static void ev_round(sim *s)
{
	snprintf(s->what, sizeof s->what, "deliver one round");
	netsim_step_round(s->ns);
}

static void ev_stabilize(sim *s)
{
	snprintf(s->what, sizeof s->what, "stabilize");
	netsim_stabilize(s->ns);
}

static void ev_tick_all(sim *s)
{
	snprintf(s->what, sizeof s->what, "tick all");
	netsim_tick_all(s->ns);
}

static void ev_tick_one(sim *s)
{
	uint64_t id = pick_node(s, true);
	snprintf(s->what, sizeof s->what, "tick node %" PRIu64, id);
	if (id != 0)
		netsim_tick(s->ns, id);
}

static void ev_propose(sim *s)
{
	unsigned char buf[SIM_PAYLOAD_MAX];
	uint64_t id = pick_node(s, true);
	if (id == 0)
		return;
	uint64_t pid = ++s->n_proposals;
	s->ck.proposal_index = grow_zeroed(s->ck.proposal_index, &s->ck.cap_proposals, pid + 1,
	                                   sizeof *s->ck.proposal_index);
	size_t len = payload_make(s->seed, pid, buf);
	snprintf(s->what, sizeof s->what, "propose #%" PRIu64 " (%zu bytes) on node %" PRIu64, pid,
	         len, id);
	check_call(s, "propose", raft_rawnode_propose(netsim_node(s->ns, id), buf, len));
}

static void ev_read(sim *s)
{
	uint64_t id = pick_node(s, true);
	if (id == 0)
		return;
	uint64_t rid = ck_read_request(&s->ck);
	snprintf(s->what, sizeof s->what, "read_index #%" PRIu64 " on node %" PRIu64, rid, id);
	check_call(s, "read_index", raft_rawnode_read_index(netsim_node(s->ns, id), rid));
}

static void ev_transfer(sim *s)
{
	uint64_t id = netsim_leader(s->ns);
	if (id == 0 || rng_chance(&s->rng, 300))
		id = pick_node(s, true);
	if (id == 0)
		return;
	uint64_t to = pick_any(s);
	snprintf(s->what, sizeof s->what, "transfer leadership on node %" PRIu64 " to %" PRIu64, id,
	         to);
	check_call(s, "transfer_leader", raft_rawnode_transfer_leader(netsim_node(s->ns, id), to));
}

static void partition_split(sim *s)
{
	uint64_t side = rng_next(&s->rng);
	for (uint64_t a = 1; a <= s->n; a++)
		for (uint64_t b = a + 1; b <= s->n; b++)
			if (((side >> a) & 1) != ((side >> b) & 1))
				netsim_cut(s->ns, a, b);
	snprintf(s->what, sizeof s->what, "partition by mask %#" PRIx64,
	         (side >> 1) & ((UINT64_C(1) << s->n) - 1));
}

static void ev_partition(sim *s)
{
	uint64_t a = pick_any(s), b = pick_any(s);
	switch (rng_below(&s->rng, 4)) {
	case 0:
		snprintf(s->what, sizeof s->what, "isolate node %" PRIu64, a);
		netsim_isolate(s->ns, a);
		break;
	case 1:
		snprintf(s->what, sizeof s->what, "cut %" PRIu64 " <-> %" PRIu64, a, b);
		if (a != b)
			netsim_cut(s->ns, a, b);
		break;
	case 2:
		snprintf(s->what, sizeof s->what, "drop %" PRIu64 " -> %" PRIu64, a, b);
		if (a != b)
			netsim_drop(s->ns, a, b, rng_chance(&s->rng, 500) ? 1.0 : 0.5);
		break;
	default:
		partition_split(s);
	}
}

static void ev_heal(sim *s)
{
	snprintf(s->what, sizeof s->what, "heal partitions");
	netsim_recover(s->ns);
}

static void ev_crash(sim *s)
{
	uint64_t id = pick_node(s, true);
	if (id == 0 || count_crashed(s) >= (s->n - 1) / 2)
		return;
	s->stats.crashes++;
	if (s->ready_crashes && rng_chance(&s->rng, 500)) {
		snprintf(s->what, sizeof s->what, "crash node %" PRIu64 " inside its next Ready",
		         id);
		netsim_crash_in_ready(s->ns, id, true);
		return;
	}
	snprintf(s->what, sizeof s->what, "crash node %" PRIu64, id);
	netsim_crash(s->ns, id);
}

/* Term and vote are always synced; a commit may be lost with an unsynced Ready. */
static void reload_durable_state(sim *s, uint64_t id)
{
	node_track *t = &s->ck.nodes[id];
	const raft_storage *st = sim_storage(s, id);
	raft_hard_state hs;
	raft_conf_state cs;
	if (st->initial_state(st->ctx, &hs, &cs) != RAFT_OK)
		return;
	if (hs.term != t->durable_term || hs.vote != t->durable_vote)
		ck_fail(&s->ck,
		        "node %" PRIu64 " restarts with term %" PRIu64 " vote %" PRIu64
		        ", but term %" PRIu64 " vote %" PRIu64 " were persisted",
		        id, hs.term, hs.vote, t->durable_term, t->durable_vote);
	if (hs.commit > t->durable_commit)
		ck_fail(&s->ck, "node %" PRIu64 " restarts with commit %" PRIu64 " never persisted",
		        id, hs.commit);
	t->durable_commit = hs.commit;
}

static void restart_node(sim *s, uint64_t id)
{
	node_track *t = &s->ck.nodes[id];
	if (netsim_node(s->ns, id) == NULL)
		reload_durable_state(s, id);
	netsim_restart(s->ns, id);
	t->run_commit = 0;
	t->run_applied = 0;
	t->checked_leader_term = 0;
}

static void ev_restart(sim *s)
{
	uint64_t id = pick_node(s, false);
	if (id == 0)
		return;
	snprintf(s->what, sizeof s->what, "restart node %" PRIu64, id);
	restart_node(s, id);
}

static void ev_compact(sim *s)
{
	unsigned char data[SIM_SNAP_LEN];
	uint64_t id = pick_node(s, true);
	const node_track *t = &s->ck.nodes[id];
	if (id == 0 || t->sm_applied == 0)
		return;
	raft_memory_storage *ms = netsim_storage(s->ns, id);
	uint64_t at = t->sm_applied;
	uint64_t keep = rng_chance(&s->rng, 500) ? 0 : rng_below(&s->rng, 16);
	uint64_t upto = at > keep ? at - keep : at;
	snprintf(s->what, sizeof s->what,
	         "snapshot node %" PRIu64 " at %" PRIu64 ", compact to %" PRIu64, id, at, upto);
	put_u64(data, at);
	put_u64(data + 8, t->sm_count);
	put_u64(data + 16, t->sm_hash);
	int rv = raft_memory_storage_create_snapshot(ms, at, &s->conf, data, sizeof data);
	if (rv != RAFT_OK && rv != RAFT_ERR_SNAP_OUT_OF_DATE)
		ck_fail(&s->ck, "create_snapshot(%" PRIu64 ") on node %" PRIu64 ": %s", at, id,
		        raft_strerror(rv));
	rv = raft_memory_storage_compact(ms, upto);
	if (rv != RAFT_OK && rv != RAFT_ERR_COMPACTED)
		ck_fail(&s->ck, "compact(%" PRIu64 ") on node %" PRIu64 ": %s", upto, id,
		        raft_strerror(rv));
}

static void ev_faults(sim *s)
{
	bool clean = rng_chance(&s->rng, 400);
	s->p_drop = clean ? 0 : (unsigned)rng_below(&s->rng, 150);
	s->p_dup = clean ? 0 : (unsigned)rng_below(&s->rng, 60);
	s->p_reorder = clean ? 0 : (unsigned)rng_below(&s->rng, 120);
	s->p_delay = clean ? 0 : (unsigned)rng_below(&s->rng, 30);
	snprintf(s->what, sizeof s->what,
	         "network faults (per mille): drop %u dup %u reorder %u delay %u", s->p_drop,
	         s->p_dup, s->p_reorder, s->p_delay);
}

static void release_pool(sim *s)
{
	for (size_t i = 0; i < s->n_pool; i++) {
		netsim_inject(s->ns, &s->pool[i]);
		raft_message_free(&s->pool[i]);
	}
	s->n_pool = 0;
}

static void ev_release(sim *s)
{
	snprintf(s->what, sizeof s->what, "deliver %zu delayed messages", s->n_pool);
	release_pool(s);
}

static void ev_unreachable(sim *s)
{
	uint64_t id = netsim_leader(s->ns), peer = pick_any(s);
	if (id == 0 || id == peer)
		return;
	snprintf(s->what, sizeof s->what, "leader %" PRIu64 " reports %" PRIu64 " unreachable", id,
	         peer);
	check_call(s, "report_unreachable",
	           raft_rawnode_report_unreachable(netsim_node(s->ns, id), peer));
}

static void ev_campaign(sim *s)
{
	uint64_t id = pick_node(s, true);
	if (id == 0)
		return;
	snprintf(s->what, sizeof s->what, "campaign on node %" PRIu64, id);
	check_call(s, "campaign", raft_rawnode_campaign(netsim_node(s->ns, id)));
}

static const sim_event sim_events[] = {
    {457, ev_round},  {190, ev_tick_all}, {30, ev_tick_one},  {170, ev_propose},
    {35, ev_read},    {8, ev_transfer},   {12, ev_partition}, {14, ev_heal},
    {6, ev_crash},    {14, ev_restart},   {20, ev_compact},   {10, ev_faults},
    {15, ev_release}, {12, ev_stabilize}, {4, ev_campaign},   {3, ev_unreachable},
};

static void sim_step(sim *s)
{
	uint64_t r = rng_below(&s->rng, 1000);
	size_t i = 0;
	while (i + 1 < sizeof sim_events / sizeof sim_events[0] && r >= sim_events[i].weight)
		r -= sim_events[i++].weight;
	snprintf(s->what, sizeof s->what, "nothing to do");
	sim_events[i].fn(s);
	if (s->verbose)
		printf("seed %" PRIu64 " event %zu: %s\n", s->seed, s->event, s->what);
	check_nodes(s);
	check_harness(s);
}

/* ------------------------------------------------------------------------------------------ */
/* One seed                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Drawn from a stream of their own, so seeds without them run as they always did. */
static void sim_fault_options(sim *s, netsim_options *o)
{
	sim_rng r = {mix64(s->seed ^ UINT64_C(0xfa0175fa0175fa01))};
	o->interleave = rng_chance(&r, 400);
	o->lazy_sync = rng_chance(&r, 400);
	s->ready_crashes = rng_chance(&r, 400);
}

static void sim_setup(sim *s, uint64_t seed, bool verbose)
{
	netsim_options o = {0};
	s->seed = seed;
	s->verbose = verbose;
	s->cu_failures = CU_get_number_of_failures();
	s->rng.state = mix64(seed ^ UINT64_C(0x5eed5eed5eed5eed));
	s->n = 3 + rng_below(&s->rng, 5);
	unsigned mode = (unsigned)rng_below(&s->rng, 10);
	o.n = s->n;
	o.pre_vote = mode >= 6 || mode == 2 || mode == 3;
	o.check_quorum = mode >= 6 || mode == 4 || mode == 5;
	o.election_tick = 8 + (int)rng_below(&s->rng, 8);
	o.heartbeat_tick = 1 + (int)rng_below(&s->rng, 3);
	if (rng_chance(&s->rng, 300))
		o.max_size_per_msg = 64 + rng_below(&s->rng, 512);
	if (rng_chance(&s->rng, 300))
		o.max_inflight_msgs = 1 + rng_below(&s->rng, 8);
	if (rng_chance(&s->rng, 200))
		o.max_committed_size_per_ready = 64 + rng_below(&s->rng, 1024);
	if (rng_chance(&s->rng, 200))
		o.max_uncommitted_entries_size = 1024 + rng_below(&s->rng, 8192);
	o.seed = seed;
	sim_fault_options(s, &o);
	s->conf.n_voters = s->n;
	for (size_t i = 0; i < s->n; i++)
		s->conf.voters[i] = i + 1;
	s->ns = netsim_new(&o);
	netsim_set_hook(s->ns, sim_on_message, s);
	netsim_set_observer(s->ns, sim_on_ready, s);
	if (verbose)
		printf("seed %" PRIu64 ": %zu nodes, pre_vote %d, check_quorum %d, election %d, "
		       "heartbeat %d, interleave %d, lazy_sync %d, ready crashes %d\n",
		       seed, s->n, o.pre_vote, o.check_quorum, o.election_tick, o.heartbeat_tick,
		       o.interleave, o.lazy_sync, s->ready_crashes);
}

static void sim_count_terms(sim *s)
{
	for (size_t term = 0; term < s->ck.cap_leaders; term++)
		s->stats.terms_led += s->ck.leaders[term] != 0;
}

static void stats_add(sim_stats *total, const sim_stats *s)
{
	total->events += s->events;
	total->proposals += s->proposals;
	total->committed += s->committed;
	total->reads += s->reads;
	total->reads_answered += s->reads_answered;
	total->snapshots += s->snapshots;
	total->terms_led += s->terms_led;
	total->crashes += s->crashes;
	total->interleaved += s->interleaved;
	total->deferred += s->deferred;
	total->lost_hard_states += s->lost_hard_states;
	total->ready_crashes += s->ready_crashes;
	total->sent_then_lost += s->sent_then_lost;
}

static void sim_count_faults(sim *s)
{
	netsim_counters c = netsim_get_counters(s->ns);
	s->stats.interleaved = c.interleaved;
	s->stats.deferred = c.deferred;
	s->stats.lost_hard_states = c.lost_hard_states;
	s->stats.ready_crashes = c.ready_crashes;
	s->stats.sent_then_lost = c.sent_then_lost;
}

static void sim_teardown(sim *s)
{
	for (size_t i = 0; i < s->n_pool; i++)
		raft_message_free(&s->pool[i]);
	netsim_free(s->ns);
	ck_free(&s->ck);
}

static bool sim_converged(sim *s, uint64_t *final)
{
	raft_status ls, st;
	uint64_t leader = netsim_leader(s->ns);
	if (leader == 0 || !sim_status(s, leader, &ls) || ls.commit != ls.last_index)
		return false;
	for (uint64_t id = 1; id <= s->n; id++) {
		if (!sim_status(s, id, &st) || st.term != ls.term || st.applied != ls.last_index ||
		    s->ck.nodes[id].sm_applied != ls.last_index)
			return false;
	}
	*final = ls.last_index;
	return true;
}

static void verify_final(sim *s, uint64_t final)
{
	const node_track *first = &s->ck.nodes[1];
	if (final < s->ck.max_committed)
		ck_fail(&s->ck, "converged at index %" PRIu64 " below committed index %" PRIu64,
		        final, s->ck.max_committed);
	for (uint64_t id = 2; id <= s->n; id++) {
		const node_track *t = &s->ck.nodes[id];
		if (t->sm_hash != first->sm_hash || t->sm_count != first->sm_count)
			ck_fail(&s->ck, "node %" PRIu64 " final state differs from node 1", id);
	}
	for (uint64_t pid = 1; pid <= s->n_proposals; pid++)
		if (s->ck.proposal_index[pid] > final)
			ck_fail(&s->ck,
			        "proposal #%" PRIu64 " committed at %" PRIu64
			        " is not applied everywhere",
			        pid, s->ck.proposal_index[pid]);
}

static void sim_heal(sim *s)
{
	uint64_t final = 0;
	s->p_drop = s->p_dup = s->p_reorder = s->p_delay = 0;
	release_pool(s);
	netsim_recover(s->ns);
	for (uint64_t id = 1; id <= s->n; id++) {
		netsim_crash_in_ready(s->ns, id, false);
		if (netsim_node(s->ns, id) == NULL)
			restart_node(s, id);
	}
	for (int round = 0; round < SIM_HEAL_ROUNDS && !s->ck.failed; round++) {
		snprintf(s->what, sizeof s->what, "healing round %d", round);
		netsim_tick_all(s->ns);
		netsim_stabilize(s->ns);
		check_nodes(s);
		check_harness(s);
		if (sim_converged(s, &final)) {
			verify_final(s, final);
			return;
		}
	}
	ck_fail(&s->ck, "no convergence after %d healing rounds", SIM_HEAL_ROUNDS);
}

static void report_failure(const sim *s, size_t events)
{
	char msg[900];
	snprintf(msg, sizeof msg,
	         "sim seed %" PRIu64 " event %zu (%s): %s [reproduce: RAFT_SIM_SEED_BASE=%" PRIu64
	         " RAFT_SIM_SEEDS=1 RAFT_SIM_EVENTS=%zu build/test_raftkv sim]",
	         s->seed, s->event, s->what, s->ck.msg, s->seed, events);
	fprintf(stderr, "\n%s\n", msg);
	CU_assertImplementation(CU_FALSE, __LINE__, msg, __FILE__, "", CU_FALSE);
}

static bool sim_run_seed(uint64_t seed, size_t events, bool verbose, sim_stats *total)
{
	sim *s = calloc(1, sizeof *s);
	if (s == NULL)
		abort();
	sim_setup(s, seed, verbose);
	while (s->event < events && !s->ck.failed) {
		s->event++;
		sim_step(s);
	}
	if (!s->ck.failed)
		sim_heal(s);
	bool ok = !s->ck.failed;
	if (!ok)
		report_failure(s, events);
	s->stats.events = s->event;
	s->stats.proposals = s->n_proposals;
	s->stats.reads = s->ck.n_reads;
	sim_count_terms(s);
	sim_count_faults(s);
	stats_add(total, &s->stats);
	sim_teardown(s);
	free(s);
	return ok;
}

static uint64_t env_u64(const char *name, uint64_t def)
{
	const char *v = getenv(name);
	char *end;
	if (v == NULL || *v == '\0')
		return def;
	unsigned long long x = strtoull(v, &end, 10);
	return *end == '\0' ? (uint64_t)x : def;
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_simulation(void)
{
	uint64_t seeds = env_u64("RAFT_SIM_SEEDS", SIM_DEFAULT_SEEDS);
	uint64_t base = env_u64("RAFT_SIM_SEED_BASE", 1);
	size_t events = (size_t)env_u64("RAFT_SIM_EVENTS", SIM_DEFAULT_EVENTS);
	bool verbose = getenv("RAFT_SIM_VERBOSE") != NULL;
	uint64_t ran = 0, failed = 0;
	sim_stats t = {0};
	double start = now_seconds();
	for (uint64_t seed = base; seed < base + seeds && failed < SIM_MAX_FAILED_SEEDS; seed++) {
		ran++;
		failed += !sim_run_seed(seed, events, verbose, &t);
	}
	double secs = now_seconds() - start;
	printf("\nsim: %" PRIu64 " seeds from %" PRIu64 " (%" PRIu64 " failed), %" PRIu64
	       " events in %.1f s (%.0f/s); %" PRIu64 "/%" PRIu64 " proposals committed, %" PRIu64
	       "/%" PRIu64 " reads answered, %" PRIu64 " snapshots installed, %" PRIu64
	       " terms led, %" PRIu64 " crashes (%" PRIu64 " inside a Ready, %" PRIu64
	       " after sending entries they lost, %" PRIu64 " unsynced hard states lost), %" PRIu64
	       " Readies interleaved, %" PRIu64 " deferred\n",
	       ran, base, failed, t.events, secs, (double)t.events / secs, t.committed, t.proposals,
	       t.reads_answered, t.reads, t.snapshots, t.terms_led, t.crashes, t.ready_crashes,
	       t.sent_then_lost, t.lost_hard_states, t.interleaved, t.deferred);
}

/* ------------------------------------------------------------------------------------------ */
/* The checkers themselves must be able to fail                                               */
/* ------------------------------------------------------------------------------------------ */

static void test_checker_committed_conflict(void)
{
	checker ck = {0};
	ck_committed(&ck, 1, 5, 2, 0xaa, 2);
	ck_committed(&ck, 2, 5, 2, 0xaa, 3);
	CU_ASSERT_FALSE(ck.failed);
	ck_committed(&ck, 3, 5, 3, 0xbb, 3);
	CU_ASSERT_TRUE(ck.failed);
	ck_free(&ck);
}

static void test_checker_two_leaders(void)
{
	checker ck = {0};
	ck_leader(&ck, 4, 1);
	ck_leader(&ck, 4, 1);
	ck_leader(&ck, 5, 2);
	CU_ASSERT_FALSE(ck.failed);
	ck_leader(&ck, 4, 3);
	CU_ASSERT_TRUE(ck.failed);
	ck_free(&ck);
}

static void test_checker_log_matching(void)
{
	checker ck = {0};
	ck_persisted(&ck, 1, 7, 3, 0x11, 2);
	ck_persisted(&ck, 2, 7, 3, 0x11, 2);
	ck_persisted(&ck, 3, 7, 4, 0x22, 3);
	CU_ASSERT_FALSE(ck.failed);
	ck_persisted(&ck, 3, 7, 3, 0x11, 1);
	CU_ASSERT_TRUE(ck.failed);
	ck_free(&ck);
	ck_persisted(&ck, 1, 7, 3, 0x11, 2);
	ck_persisted(&ck, 2, 7, 3, 0x12, 2);
	CU_ASSERT_TRUE(ck.failed);
	ck_free(&ck);
}

static void test_checker_state_and_progress(void)
{
	checker ck = {0};
	ck_state(&ck, 1, 9, 0x99, 4);
	ck_state(&ck, 2, 9, 0x99, 4);
	ck_run_progress(&ck, 1, 10, 9);
	CU_ASSERT_FALSE(ck.failed);
	ck_state(&ck, 3, 9, 0x98, 4);
	CU_ASSERT_TRUE(ck.failed);
	ck_free(&ck);
	ck_run_progress(&ck, 1, 10, 9);
	ck_run_progress(&ck, 1, 9, 9);
	CU_ASSERT_TRUE(ck.failed);
	ck_free(&ck);
}

static void test_checker_read_and_votes(void)
{
	checker ck = {0};
	raft_hard_state hs = {3, 1, 0};
	ck_committed(&ck, 1, 10, 2, 0xaa, 2);
	raft_read_state ok = {10, ck_read_request(&ck)};
	raft_read_state stale = {9, ck_read_request(&ck)};
	ck_read_state(&ck, 1, &ok);
	ck_hard_state(&ck, 1, &hs);
	CU_ASSERT_FALSE(ck.failed);
	ck_read_state(&ck, 1, &stale);
	CU_ASSERT_TRUE(ck.failed);
	ck_free(&ck);
	ck_hard_state(&ck, 1, &hs);
	hs.vote = 2;
	ck_hard_state(&ck, 1, &hs);
	CU_ASSERT_TRUE(ck.failed);
	ck_free(&ck);
}

void test_register_sim(void)
{
	CU_pSuite s = CU_add_suite("sim", NULL, NULL);
	if (s == NULL)
		return;
	CU_add_test(s, "checker: conflicting commits", test_checker_committed_conflict);
	CU_add_test(s, "checker: two leaders in a term", test_checker_two_leaders);
	CU_add_test(s, "checker: log matching", test_checker_log_matching);
	CU_add_test(s, "checker: state and progress", test_checker_state_and_progress);
	CU_add_test(s, "checker: read safety and votes", test_checker_read_and_votes);
	CU_add_test(s, "randomized simulation", test_simulation);
}
