/* test_robustness.c - regression tests for the Raft core's defences against hostile input. */
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"
#include "suites.h"

#define RB_MAX_SENT    256
#define RB_MAX_ENTRIES 8

/* ------------------------------------------------------------------------------------------ */
/* Fixture: one rawnode over a memory storage, driven by hand                                 */
/* ------------------------------------------------------------------------------------------ */

static const uint64_t rb_peers[RAFT_MAX_VOTERS] = {1, 2,  3,  4,  5,  6,  7,  8,
                                                   9, 10, 11, 12, 13, 14, 15, 16};

typedef struct rb_node {
	raft_memory_storage *ms;
	raft_rawnode *rn;
	raft_config cfg;
	raft_message sent[RB_MAX_SENT]; /* messages of the Readies handled since the last clear */
	size_t n_sent;
} rb_node;

static void rb_setup(rb_node *t, uint64_t id, size_t n_peers)
{
	memset(t, 0, sizeof(*t));
	t->ms = raft_memory_storage_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t->ms);
	raft_config_init(&t->cfg);
	t->cfg.id = id;
	t->cfg.peers = rb_peers;
	t->cfg.n_peers = n_peers;
	t->cfg.storage = raft_memory_storage_interface(t->ms);
}

static void rb_start(rb_node *t)
{
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_new(&t->cfg, &t->rn), RAFT_OK);
}

static void rb_init(rb_node *t, uint64_t id, size_t n_peers)
{
	rb_setup(t, id, n_peers);
	rb_start(t);
}

static void rb_clear_sent(rb_node *t)
{
	for (size_t i = 0; i < t->n_sent; i++)
		raft_message_free(&t->sent[i]);
	t->n_sent = 0;
}

static void rb_free(rb_node *t)
{
	rb_clear_sent(t);
	raft_rawnode_free(t->rn);
	raft_memory_storage_free(t->ms);
	memset(t, 0, sizeof(*t));
}

static raft_status rb_status(rb_node *t)
{
	raft_status st;
	raft_rawnode_status(t->rn, &st);
	return st;
}

static raft_peer_status rb_peer(rb_node *t, uint64_t id)
{
	raft_status st = rb_status(t);
	for (size_t i = 0; i < st.n_peers; i++)
		if (st.peers[i].id == id)
			return st.peers[i];
	CU_FAIL("peer missing from status");
	return (raft_peer_status){0};
}

static void rb_keep(rb_node *t, const raft_message *ms, size_t n)
{
	for (size_t i = 0; i < n && t->n_sent < RB_MAX_SENT; i++)
		CU_ASSERT_EQUAL_FATAL(raft_message_clone(&t->sent[t->n_sent++], &ms[i]), RAFT_OK);
}

static void rb_persist(rb_node *t, const raft_ready *rd)
{
	if (rd->has_snapshot)
		CU_ASSERT_EQUAL(raft_memory_storage_apply_snapshot(t->ms, &rd->snapshot), RAFT_OK);
	if (rd->n_entries > 0)
		CU_ASSERT_EQUAL(raft_memory_storage_append(t->ms, rd->entries, rd->n_entries),
		                RAFT_OK);
	if (rd->has_hard_state)
		CU_ASSERT_EQUAL(raft_memory_storage_set_hard_state(t->ms, &rd->hard_state),
		                RAFT_OK);
}

/* Takes the pending Ready and keeps its messages; the caller persists and advances. */
static void rb_ready(rb_node *t, raft_ready *rd)
{
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(t->rn, rd), RAFT_OK);
	rb_keep(t, rd->messages, rd->n_messages);
	rb_keep(t, rd->persisted_messages, rd->n_persisted_messages);
}

static void rb_handle(rb_node *t)
{
	raft_ready rd;
	rb_ready(t, &rd);
	rb_persist(t, &rd);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_advance(t->rn), RAFT_OK);
}

static void rb_drain(rb_node *t)
{
	for (int guard = 0; guard < 100 && raft_rawnode_has_ready(t->rn); guard++)
		rb_handle(t);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t->rn));
}

static raft_message rb_msg(int type, uint64_t from, uint64_t to, uint64_t term)
{
	raft_message m;
	memset(&m, 0, sizeof(m));
	m.type = type;
	m.from = from;
	m.to = to;
	m.term = term;
	return m;
}

static raft_message rb_ack(uint64_t from, uint64_t to, uint64_t term, uint64_t index)
{
	raft_message m = rb_msg(RAFT_MSG_APPEND_RESPONSE, from, to, term);
	m.index = index;
	return m;
}

static int rb_step(rb_node *t, raft_message m)
{
	return raft_rawnode_step(t->rn, &m);
}

static const raft_message *rb_find(const rb_node *t, int type, uint64_t to)
{
	for (size_t i = 0; i < t->n_sent; i++)
		if (t->sent[i].type == type && t->sent[i].to == to)
			return &t->sent[i];
	return NULL;
}

/* Node t (id 1) campaigns and wins with votes from 2.., then hands out its first Readies. */
static void rb_make_leader(rb_node *t)
{
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_campaign(t->rn), RAFT_OK);
	rb_drain(t);
	raft_status st = rb_status(t);
	for (uint64_t from = 2; from <= st.n_peers && rb_status(t).role != RAFT_LEADER; from++)
		rb_step(t, rb_msg(RAFT_MSG_REQUEST_VOTE_RESPONSE, from, st.id, st.term));
	CU_ASSERT_EQUAL_FATAL(rb_status(t).role, RAFT_LEADER);
	rb_drain(t);
	rb_clear_sent(t);
}

static uint64_t rb_stored_term(rb_node *t, uint64_t index)
{
	const raft_storage *s = t->cfg.storage;
	uint64_t term = UINT64_MAX;
	if (s->term(s->ctx, index, &term) != RAFT_OK)
		return UINT64_MAX;
	return term;
}

static uint64_t rb_stored_last(rb_node *t)
{
	const raft_storage *s = t->cfg.storage;
	uint64_t last = 0;
	CU_ASSERT_EQUAL(s->last_index(s->ctx, &last), RAFT_OK);
	return last;
}

/* Entries 1..n of term `term`, written to storage before the node starts. */
static void rb_store_log(rb_node *t, uint64_t n, uint64_t term)
{
	for (uint64_t i = 1; i <= n; i++) {
		raft_entry e = {.type = RAFT_ENTRY_NORMAL, .term = term, .index = i};
		CU_ASSERT_EQUAL_FATAL(raft_memory_storage_append(t->ms, &e, 1), RAFT_OK);
	}
}

static void rb_store_hard_state(rb_node *t, uint64_t term, uint64_t vote, uint64_t commit)
{
	raft_hard_state hs = {.term = term, .vote = vote, .commit = commit};
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_set_hard_state(t->ms, &hs), RAFT_OK);
}

/* ------------------------------------------------------------------------------------------ */
/* Entry batches whose payload names their (index, term)                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct rb_batch {
	raft_entry e[RB_MAX_ENTRIES];
	char data[RB_MAX_ENTRIES][24];
	size_t n;
} rb_batch;

static size_t rb_payload(char *buf, size_t cap, uint64_t index, uint64_t term)
{
	return (size_t)snprintf(buf, cap, "%" PRIu64 "@%" PRIu64, index, term);
}

static void rb_batch_add(rb_batch *b, uint64_t index, uint64_t term)
{
	CU_ASSERT_FATAL(b->n < RB_MAX_ENTRIES);
	raft_entry *e = &b->e[b->n];
	e->type = RAFT_ENTRY_NORMAL;
	e->index = index;
	e->term = term;
	e->data = b->data[b->n];
	e->len = rb_payload(b->data[b->n], sizeof b->data[b->n], index, term);
	b->n++;
}

/* An APPEND after (prev, prev_term) carrying b's entries. */
static raft_message rb_append(uint64_t from, uint64_t to, uint64_t term, uint64_t prev,
                              uint64_t prev_term, rb_batch *b)
{
	raft_message m = rb_msg(RAFT_MSG_APPEND, from, to, term);
	m.index = prev;
	m.log_term = prev_term;
	m.entries = b != NULL ? b->e : NULL;
	m.n_entries = b != NULL ? b->n : 0;
	return m;
}

static bool rb_entry_is(const raft_entry *e, uint64_t index, uint64_t term)
{
	char want[24];
	size_t len = rb_payload(want, sizeof want, index, term);
	return e->index == index && e->term == term && e->len == len &&
	       memcmp(e->data, want, len) == 0;
}

static bool rb_stored_entry_is(rb_node *t, uint64_t index, uint64_t term)
{
	const raft_storage *s = t->cfg.storage;
	raft_entry *e = NULL;
	size_t n = 0;
	bool ok = s->entries(s->ctx, index, index + 1, UINT64_MAX, &e, &n) == RAFT_OK && n == 1 &&
	          rb_entry_is(&e[0], index, term);
	raft_entries_free(e, n);
	return ok;
}

/* ------------------------------------------------------------------------------------------ */
/* 1. Truncate and re-append while a Ready is outstanding                                     */
/* ------------------------------------------------------------------------------------------ */

/* Follower 2 holds 1..5 (term 2) durably. */
static void rb_follower_with_five(rb_node *t)
{
	rb_batch b = {0};
	rb_init(t, 2, 5);
	for (uint64_t i = 1; i <= 5; i++)
		rb_batch_add(&b, i, 2);
	CU_ASSERT_EQUAL(rb_step(t, rb_append(1, 2, 2, 0, 0, &b)), RAFT_OK);
	rb_drain(t);
	rb_clear_sent(t);
}

static void test_reappend_after_truncate_with_outstanding_ready(void)
{
	rb_node t;
	rb_batch b6 = {0}, b3 = {0}, b4 = {0};
	raft_ready rd;
	rb_follower_with_five(&t);
	rb_batch_add(&b6, 6, 2);
	rb_batch_add(&b6, 7, 2);
	CU_ASSERT_EQUAL(rb_step(&t, rb_append(1, 2, 2, 5, 2, &b6)), RAFT_OK);
	rb_ready(&t, &rd);
	CU_ASSERT_EQUAL_FATAL(rd.n_entries, 2);
	/* While 6..7 are being written: leader 3 of term 3 overwrites 6, then leader 4 of term 4
	 * restores the original 6..7 and adds 8. */
	rb_batch_add(&b3, 6, 3);
	CU_ASSERT_EQUAL(rb_step(&t, rb_append(3, 2, 3, 5, 2, &b3)), RAFT_OK);
	rb_batch_add(&b4, 6, 2);
	rb_batch_add(&b4, 7, 2);
	rb_batch_add(&b4, 8, 4);
	CU_ASSERT_EQUAL(rb_step(&t, rb_append(4, 2, 4, 5, 2, &b4)), RAFT_OK);
	rb_persist(&t, &rd);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_advance(t.rn), RAFT_OK);

	rb_clear_sent(&t);
	rb_ready(&t, &rd);
	CU_ASSERT_EQUAL_FATAL(rd.n_entries, 1);
	CU_ASSERT_TRUE(rb_entry_is(&rd.entries[0], 8, 4));
	rb_persist(&t, &rd);
	CU_ASSERT_EQUAL(raft_rawnode_advance(t.rn), RAFT_OK);
	const raft_message *ack = rb_find(&t, RAFT_MSG_APPEND_RESPONSE, 4);
	CU_ASSERT_FATAL(ack != NULL);
	CU_ASSERT_FALSE(ack->reject);
	CU_ASSERT_EQUAL(ack->index, 8);
	rb_drain(&t);

	raft_status st = rb_status(&t);
	CU_ASSERT_EQUAL(st.error, RAFT_OK);
	CU_ASSERT_EQUAL(st.term, 4);
	CU_ASSERT_EQUAL(st.leader, 4);
	CU_ASSERT_EQUAL(st.last_index, 8);
	CU_ASSERT_EQUAL(rb_stored_last(&t), 8);
	for (uint64_t i = 1; i <= 7; i++)
		CU_ASSERT_TRUE(rb_stored_entry_is(&t, i, 2));
	CU_ASSERT_TRUE(rb_stored_entry_is(&t, 8, 4));
	rb_free(&t);
}

/* The same, but the new leader restores only entry 6: entry 7 of the old Ready must go. */
static void test_shorter_reappend_with_outstanding_ready(void)
{
	rb_node t;
	rb_batch b6 = {0}, b3 = {0}, b4 = {0};
	raft_ready rd;
	rb_follower_with_five(&t);
	rb_batch_add(&b6, 6, 2);
	rb_batch_add(&b6, 7, 2);
	rb_step(&t, rb_append(1, 2, 2, 5, 2, &b6));
	rb_ready(&t, &rd);
	rb_batch_add(&b3, 6, 3);
	rb_batch_add(&b3, 7, 3);
	CU_ASSERT_EQUAL(rb_step(&t, rb_append(3, 2, 3, 5, 2, &b3)), RAFT_OK);
	rb_batch_add(&b4, 6, 2);
	rb_batch_add(&b4, 7, 4);
	CU_ASSERT_EQUAL(rb_step(&t, rb_append(4, 2, 4, 5, 2, &b4)), RAFT_OK);
	rb_persist(&t, &rd);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_advance(t.rn), RAFT_OK);
	rb_ready(&t, &rd);
	CU_ASSERT_FATAL(rd.n_entries >= 1);
	CU_ASSERT_TRUE(rb_entry_is(&rd.entries[rd.n_entries - 1], 7, 4));
	rb_persist(&t, &rd);
	CU_ASSERT_EQUAL(raft_rawnode_advance(t.rn), RAFT_OK);
	rb_drain(&t);
	CU_ASSERT_EQUAL(rb_status(&t).last_index, 7);
	CU_ASSERT_EQUAL(rb_stored_last(&t), 7);
	CU_ASSERT_TRUE(rb_stored_entry_is(&t, 6, 2));
	CU_ASSERT_TRUE(rb_stored_entry_is(&t, 7, 4));
	rb_free(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 1b. Randomized: APPENDs from competing leaders interleaved with ready/persist/advance      */
/* ------------------------------------------------------------------------------------------ */

#define FZ_SEEDS    300
#define FZ_STEPS    400
#define FZ_LEADERS  24
#define FZ_MAX_LOG  64
#define FZ_FOLLOWER 2

/* A leader's log as a list of entry terms; entry i's payload is "i@term". */
typedef struct fz_log {
	uint64_t term; /* the leader's term */
	uint64_t terms[FZ_MAX_LOG + 1];
	size_t len;
} fz_log;

typedef struct fz {
	uint64_t seed, rng;
	size_t step;
	rb_node t;
	fz_log leaders[FZ_LEADERS];
	size_t n_leaders;
	fz_log model; /* what the follower's log must be; .term is its term */
	bool outstanding, persisted;
	raft_ready rd;
	bool failed;
} fz;

static uint64_t fz_next(fz *f)
{
	uint64_t z = (f->rng += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t fz_below(fz *f, uint64_t n)
{
	return n == 0 ? 0 : fz_next(f) % n;
}

static void fz_check(fz *f, bool ok, const char *what)
{
	if (ok || f->failed)
		return;
	f->failed = true;
	fprintf(stderr, "\nrobustness fuzz seed %" PRIu64 " step %zu: %s\n", f->seed, f->step,
	        what);
	CU_FAIL("append/ready interleaving broke the log (seed on stderr)");
}

/* A new leader of a higher term: a prefix of some log, plus one or two entries of its own. */
static void fz_new_leader(fz *f)
{
	if (f->n_leaders == FZ_LEADERS)
		return;
	const fz_log *base = f->n_leaders > 0 ? &f->leaders[fz_below(f, f->n_leaders)] : &f->model;
	uint64_t top = f->model.term;
	for (size_t i = 0; i < f->n_leaders; i++)
		top = f->leaders[i].term > top ? f->leaders[i].term : top;
	fz_log *l = &f->leaders[f->n_leaders++];
	*l = *base;
	l->term = top + 1;
	l->len = (size_t)fz_below(f, base->len + 1);
	for (uint64_t k = 1 + fz_below(f, 2); k > 0 && l->len < FZ_MAX_LOG; k--)
		l->terms[++l->len] = l->term;
}

static void fz_extend(fz *f)
{
	fz_log *l = &f->leaders[fz_below(f, f->n_leaders)];
	for (uint64_t k = 1 + fz_below(f, 3); k > 0 && l->len < FZ_MAX_LOG; k--)
		l->terms[++l->len] = l->term;
}

/* The follower rules of Figure 2 on the model, for an APPEND it accepts. */
static void fz_model_append(fz *f, const fz_log *l, size_t prev, size_t n)
{
	fz_log *m = &f->model;
	if (l->term < m->term)
		return;
	m->term = l->term;
	if (prev > m->len || m->terms[prev] != l->terms[prev])
		return;
	for (size_t i = prev + 1; i <= prev + n; i++) {
		if (i <= m->len && m->terms[i] == l->terms[i])
			continue;
		m->len = i - 1;
		for (; i <= prev + n; i++)
			m->terms[++m->len] = l->terms[i];
	}
}

static void fz_send_append(fz *f)
{
	size_t recent = f->n_leaders < 2 ? f->n_leaders : 2;
	size_t pick =
	    f->n_leaders - 1 - (size_t)fz_below(f, fz_below(f, 2) ? recent : f->n_leaders);
	const fz_log *l = &f->leaders[pick];
	size_t prev = (size_t)fz_below(f, l->len + 1);
	size_t n = (size_t)fz_below(f, l->len - prev + 1);
	rb_batch b = {0};
	n = n > 4 ? 4 : n;
	for (size_t i = prev + 1; i <= prev + n; i++)
		rb_batch_add(&b, i, l->terms[i]);
	raft_message m = rb_append(100 + pick, FZ_FOLLOWER, l->term, prev, l->terms[prev], &b);
	fz_check(f, raft_rawnode_step(f->t.rn, &m) == RAFT_OK, "APPEND refused");
	fz_model_append(f, l, prev, n);
}

static bool fz_storage_matches(fz *f, size_t upto)
{
	for (size_t i = 1; i <= upto; i++)
		if (!rb_stored_entry_is(&f->t, i, f->model.terms[i]))
			return false;
	return true;
}

/* At ready(): everything before the handed-out entries is durable, and they end the log. */
static void fz_take_ready(fz *f)
{
	if (f->outstanding || !raft_rawnode_has_ready(f->t.rn))
		return;
	fz_check(f, raft_rawnode_ready(f->t.rn, &f->rd) == RAFT_OK, "ready failed");
	f->outstanding = !f->failed;
	f->persisted = false;
	size_t first = f->rd.n_entries > 0 ? (size_t)f->rd.entries[0].index : f->model.len + 1;
	fz_check(f, first >= 1 && first <= f->model.len + 1, "Ready entries out of range");
	if (f->failed)
		return;
	fz_check(f, f->rd.n_entries == f->model.len + 1 - first,
	         "Ready does not hand out the whole unstable tail");
	for (size_t i = 0; i < f->rd.n_entries && !f->failed; i++)
		fz_check(f, rb_entry_is(&f->rd.entries[i], first + i, f->model.terms[first + i]),
		         "Ready hands out an entry the log does not hold");
	fz_check(f, fz_storage_matches(f, first - 1), "durable prefix differs from the log");
	if (f->rd.n_entries == 0)
		fz_check(f, rb_stored_last(&f->t) == f->model.len, "stale durable tail");
}

static void fz_persist(fz *f)
{
	if (f->outstanding && !f->persisted)
		rb_persist(&f->t, &f->rd);
	f->persisted = true;
}

static void fz_advance(fz *f)
{
	if (!f->outstanding)
		return;
	fz_persist(f);
	f->outstanding = false;
	fz_check(f, raft_rawnode_advance(f->t.rn) == RAFT_OK, "advance failed");
}

static void fz_settle(fz *f)
{
	fz_advance(f);
	for (int guard = 0; guard < 16 && !f->failed && raft_rawnode_has_ready(f->t.rn); guard++) {
		fz_take_ready(f);
		fz_advance(f);
	}
	fz_check(f, rb_stored_last(&f->t) == f->model.len, "durable log length differs");
	fz_check(f, fz_storage_matches(f, f->model.len), "durable log differs");
}

static void fz_event(fz *f)
{
	uint64_t r = fz_below(f, 100);
	if (r < 8 || f->n_leaders == 0)
		fz_new_leader(f);
	else if (r < 18)
		fz_extend(f);
	else if (r < 58)
		fz_send_append(f);
	else if (r < 72)
		fz_take_ready(f);
	else if (r < 78)
		fz_persist(f);
	else if (r < 94)
		fz_advance(f);
	else if (r < 99)
		fz_check(f, raft_rawnode_tick(f->t.rn) == RAFT_OK, "tick failed");
	else
		fz_settle(f);
	raft_status st = rb_status(&f->t);
	if (st.term > f->model.term)
		f->model.term = st.term; /* it campaigned */
	fz_check(f, st.error == RAFT_OK, "node stopped");
	fz_check(f, st.last_index == f->model.len, "log length differs from the model");
}

static bool fz_run(uint64_t seed)
{
	fz *f = calloc(1, sizeof *f);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	f->seed = f->rng = seed;
	rb_setup(&f->t, FZ_FOLLOWER, 5);
	f->t.cfg.seed = seed;
	rb_start(&f->t);
	for (f->step = 1; f->step <= FZ_STEPS && !f->failed; f->step++)
		fz_event(f);
	if (!f->failed)
		fz_settle(f);
	f->outstanding = false;
	bool ok = !f->failed;
	rb_free(&f->t);
	free(f);
	return ok;
}

static void test_random_truncation_interleaving(void)
{
	for (uint64_t seed = 1; seed <= FZ_SEEDS && fz_run(seed); seed++)
		;
}

/* ------------------------------------------------------------------------------------------ */
/* 2-4. Messages no correct peer sends are refused without effect                             */
/* ------------------------------------------------------------------------------------------ */

/* Node 1 of 3, candidate in term 2 (voted for itself), everything persisted. */
static void rb_candidate(rb_node *t)
{
	rb_init(t, 1, 3);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_campaign(t->rn), RAFT_OK);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_campaign(t->rn), RAFT_OK);
	rb_drain(t);
	rb_clear_sent(t);
	raft_status st = rb_status(t);
	CU_ASSERT_EQUAL_FATAL(st.role, RAFT_CANDIDATE);
	CU_ASSERT_EQUAL_FATAL(st.term, 2);
	CU_ASSERT_EQUAL_FATAL(st.vote, 1);
}

static void test_term_zero_refused_by_candidate(void)
{
	rb_node t;
	rb_batch b = {0};
	rb_candidate(&t);
	CU_ASSERT_EQUAL(rb_step(&t, rb_msg(RAFT_MSG_HEARTBEAT, 3, 1, 0)), RAFT_ERR_INVALID);
	rb_batch_add(&b, 1, 0);
	CU_ASSERT_EQUAL(rb_step(&t, rb_append(3, 1, 0, 0, 0, &b)), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(rb_step(&t, rb_msg(RAFT_MSG_SNAPSHOT, 3, 1, 0)), RAFT_ERR_INVALID);
	raft_status st = rb_status(&t);
	CU_ASSERT_EQUAL(st.role, RAFT_CANDIDATE);
	CU_ASSERT_EQUAL(st.term, 2);
	CU_ASSERT_EQUAL(st.vote, 1);
	CU_ASSERT_EQUAL(st.leader, 0);
	CU_ASSERT_EQUAL(st.last_index, 0);
	/* Its vote in term 2 is taken: a rival candidate of term 2 is refused. */
	CU_ASSERT_EQUAL(rb_step(&t, rb_msg(RAFT_MSG_REQUEST_VOTE, 2, 1, 2)), RAFT_OK);
	rb_drain(&t);
	const raft_message *resp = rb_find(&t, RAFT_MSG_REQUEST_VOTE_RESPONSE, 2);
	CU_ASSERT_FATAL(resp != NULL);
	CU_ASSERT_TRUE(resp->reject);
	CU_ASSERT_EQUAL(resp->term, 2);
	CU_ASSERT_EQUAL(rb_status(&t).vote, 1);
	rb_free(&t);
}

/* Follower 2 of 3 with check_quorum, leader 1 of term 1, entries 1..2 durable, commit 0. */
static void rb_lease_follower(rb_node *t)
{
	rb_batch b = {0};
	rb_setup(t, 2, 3);
	t->cfg.check_quorum = true;
	rb_start(t);
	rb_batch_add(&b, 1, 1);
	rb_batch_add(&b, 2, 1);
	CU_ASSERT_EQUAL(rb_step(t, rb_append(1, 2, 1, 0, 0, &b)), RAFT_OK);
	rb_drain(t);
	rb_clear_sent(t);
}

static void test_term_zero_append_refused_by_follower(void)
{
	rb_node t;
	rb_batch b = {0};
	rb_lease_follower(&t);
	for (int i = 0; i < t.cfg.election_tick - 1; i++)
		CU_ASSERT_EQUAL(raft_rawnode_tick(t.rn), RAFT_OK);
	rb_batch_add(&b, 1, 0);
	CU_ASSERT_EQUAL(rb_step(&t, rb_append(3, 2, 0, 0, 0, &b)), RAFT_ERR_INVALID);
	raft_status st = rb_status(&t);
	CU_ASSERT_EQUAL(st.term, 1);
	CU_ASSERT_EQUAL(st.leader, 1);
	CU_ASSERT_EQUAL(st.last_index, 2);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	/* The lease was not renewed: one more tick ends it, so a vote for term 5 is answered. */
	CU_ASSERT_EQUAL(raft_rawnode_tick(t.rn), RAFT_OK);
	raft_message vote = rb_msg(RAFT_MSG_REQUEST_VOTE, 3, 2, 5);
	vote.index = 2;
	vote.log_term = 1;
	CU_ASSERT_EQUAL(rb_step(&t, vote), RAFT_OK);
	rb_drain(&t);
	const raft_message *resp = rb_find(&t, RAFT_MSG_REQUEST_VOTE_RESPONSE, 3);
	CU_ASSERT_FATAL(resp != NULL);
	CU_ASSERT_FALSE(resp->reject);
	CU_ASSERT_EQUAL(rb_stored_term(&t, 1), 1);
	CU_ASSERT_EQUAL(rb_stored_last(&t), 2);
	rb_free(&t);
}

static void test_ack_from_self_refused(void)
{
	rb_node t;
	rb_init(&t, 1, 3);
	rb_make_leader(&t);
	uint64_t term = rb_status(&t).term;
	CU_ASSERT_EQUAL(rb_step(&t, rb_ack(2, 1, term, 1)), RAFT_OK);
	rb_drain(&t);
	CU_ASSERT_EQUAL_FATAL(rb_status(&t).commit, 1);
	CU_ASSERT_EQUAL(raft_rawnode_propose(t.rn, "x", 1), RAFT_OK); /* index 2, not durable */
	CU_ASSERT_EQUAL(rb_step(&t, rb_ack(2, 1, term, 2)), RAFT_OK);
	CU_ASSERT_EQUAL(rb_step(&t, rb_ack(1, 1, term, 2)), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(rb_peer(&t, 1).match, 1);
	CU_ASSERT_EQUAL(rb_status(&t).commit, 1);
	rb_drain(&t); /* the leader persists entry 2: now it counts */
	CU_ASSERT_EQUAL(rb_peer(&t, 1).match, 2);
	CU_ASSERT_EQUAL(rb_status(&t).commit, 2);
	rb_free(&t);
}

static void test_from_zero_refused(void)
{
	rb_node t;
	rb_batch b = {0};
	rb_lease_follower(&t);
	CU_ASSERT_EQUAL(rb_step(&t, rb_msg(RAFT_MSG_HEARTBEAT, 0, 2, 1)), RAFT_ERR_INVALID);
	rb_batch_add(&b, 3, 1);
	CU_ASSERT_EQUAL(rb_step(&t, rb_append(0, 2, 1, 2, 1, &b)), RAFT_ERR_INVALID);
	raft_message vote = rb_msg(RAFT_MSG_REQUEST_VOTE, 0, 2, 7);
	vote.index = 2;
	vote.log_term = 1;
	CU_ASSERT_EQUAL(rb_step(&t, vote), RAFT_ERR_INVALID);
	raft_status st = rb_status(&t);
	CU_ASSERT_EQUAL(st.term, 1);
	CU_ASSERT_EQUAL(st.leader, 1);
	CU_ASSERT_EQUAL(st.last_index, 2);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	rb_free(&t);
}

static void test_values_above_max_index_refused(void)
{
	rb_node t;
	rb_batch b = {0};
	rb_lease_follower(&t);
	CU_ASSERT_EQUAL(rb_step(&t, rb_msg(RAFT_MSG_HEARTBEAT, 3, 2, UINT64_MAX)),
	                RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(rb_step(&t, rb_msg(RAFT_MSG_HEARTBEAT, 3, 2, RAFT_MAX_INDEX + 1)),
	                RAFT_ERR_INVALID);
	raft_message snap = rb_msg(RAFT_MSG_SNAPSHOT, 3, 2, 5);
	snap.snapshot.metadata = (raft_snapshot_metadata){{{1, 2, 3}, 3}, UINT64_MAX, 5};
	CU_ASSERT_EQUAL(rb_step(&t, snap), RAFT_ERR_INVALID);
	rb_batch_add(&b, RAFT_MAX_INDEX + 1, 1);
	CU_ASSERT_EQUAL(rb_step(&t, rb_append(1, 2, 1, RAFT_MAX_INDEX, 1, &b)), RAFT_ERR_INVALID);
	b.n = 0;
	rb_batch_add(&b, 0, 1); /* UINT64_MAX + 1 wrapped */
	CU_ASSERT_EQUAL(rb_step(&t, rb_append(1, 2, 1, UINT64_MAX, 1, &b)), RAFT_ERR_INVALID);
	raft_message hb = rb_msg(RAFT_MSG_HEARTBEAT, 1, 2, 1);
	hb.commit = UINT64_MAX;
	CU_ASSERT_EQUAL(rb_step(&t, hb), RAFT_ERR_INVALID);
	raft_status st = rb_status(&t);
	CU_ASSERT_EQUAL(st.error, RAFT_OK);
	CU_ASSERT_EQUAL(st.term, 1);
	CU_ASSERT_EQUAL(st.commit, 0);
	CU_ASSERT_EQUAL(st.first_index, 1);
	CU_ASSERT_EQUAL(st.last_index, 2);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	/* The term still moves on normally. */
	CU_ASSERT_EQUAL(raft_rawnode_campaign(t.rn), RAFT_OK);
	CU_ASSERT_EQUAL(rb_status(&t).term, 2);
	rb_drain(&t);
	rb_free(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 5. Acks and commits beyond the log                                                         */
/* ------------------------------------------------------------------------------------------ */

static void test_ack_beyond_last_index_ignored(void)
{
	rb_node t;
	rb_init(&t, 1, 3);
	rb_make_leader(&t);
	uint64_t term = rb_status(&t).term;
	CU_ASSERT_EQUAL(rb_step(&t, rb_ack(2, 1, term, 1000)), RAFT_OK);
	rb_drain(&t);
	raft_status st = rb_status(&t);
	CU_ASSERT_EQUAL(st.error, RAFT_OK);
	CU_ASSERT_EQUAL(st.role, RAFT_LEADER);
	CU_ASSERT_EQUAL(st.commit, 0);
	CU_ASSERT_EQUAL(rb_peer(&t, 2).match, 0);
	CU_ASSERT_EQUAL(rb_step(&t, rb_ack(2, 1, term, 1)), RAFT_OK);
	rb_drain(&t);
	CU_ASSERT_EQUAL(rb_peer(&t, 2).match, 1);
	CU_ASSERT_EQUAL(rb_status(&t).commit, 1);
	rb_free(&t);
}

static void test_heartbeat_commit_clamped_to_log(void)
{
	rb_node t;
	rb_lease_follower(&t);
	raft_message hb = rb_msg(RAFT_MSG_HEARTBEAT, 1, 2, 1);
	hb.commit = 10;
	CU_ASSERT_EQUAL(rb_step(&t, hb), RAFT_OK);
	rb_drain(&t);
	raft_status st = rb_status(&t);
	CU_ASSERT_EQUAL(st.error, RAFT_OK);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(st.commit, 2);
	CU_ASSERT_EQUAL(st.applied, 2);
	CU_ASSERT_PTR_NOT_NULL(rb_find(&t, RAFT_MSG_HEARTBEAT_RESPONSE, 1));
	rb_free(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 6-7. Restarts: reads of a single voter, applied above a lost commit                        */
/* ------------------------------------------------------------------------------------------ */

/* Log 1..10 of term 1 and hard state (1, 1, commit 8): the last commit-only write was lost. */
static void rb_restart_setup(rb_node *t, size_t n_peers)
{
	rb_setup(t, 1, n_peers);
	rb_store_log(t, 10, 1);
	rb_store_hard_state(t, 1, 1, 8);
}

static void test_single_voter_read_waits_for_own_term(void)
{
	rb_node t;
	raft_ready rd;
	rb_restart_setup(&t, 1);
	rb_start(&t);
	rb_drain(&t);
	CU_ASSERT_EQUAL(raft_rawnode_campaign(t.rn), RAFT_OK);
	CU_ASSERT_EQUAL_FATAL(rb_status(&t).role, RAFT_LEADER);
	CU_ASSERT_EQUAL(raft_rawnode_read_index(t.rn, 42), RAFT_OK);
	rb_ready(&t, &rd);
	CU_ASSERT_EQUAL(rd.n_read_states, 0);
	rb_persist(&t, &rd);
	CU_ASSERT_EQUAL(raft_rawnode_advance(t.rn), RAFT_OK);
	rb_ready(&t, &rd);
	CU_ASSERT_EQUAL_FATAL(rd.n_read_states, 1);
	CU_ASSERT_EQUAL(rd.read_states[0].context, 42);
	CU_ASSERT(rd.read_states[0].index >= 10);
	CU_ASSERT_EQUAL(rd.read_states[0].index, 11);
	rb_persist(&t, &rd);
	CU_ASSERT_EQUAL(raft_rawnode_advance(t.rn), RAFT_OK);
	/* Once its term has a commit, reads are answered at once. */
	CU_ASSERT_EQUAL(raft_rawnode_read_index(t.rn, 43), RAFT_OK);
	rb_ready(&t, &rd);
	CU_ASSERT_EQUAL_FATAL(rd.n_read_states, 1);
	CU_ASSERT_EQUAL(rd.read_states[0].index, 11);
	rb_persist(&t, &rd);
	CU_ASSERT_EQUAL(raft_rawnode_advance(t.rn), RAFT_OK);
	rb_free(&t);
}

static void test_applied_above_lost_commit(void)
{
	rb_node t;
	raft_ready rd;
	rb_restart_setup(&t, 3);
	t.cfg.applied = 10;
	rb_start(&t);
	raft_status st = rb_status(&t);
	CU_ASSERT_EQUAL(st.commit, 10);
	CU_ASSERT_EQUAL(st.applied, 10);
	while (raft_rawnode_has_ready(t.rn)) {
		rb_ready(&t, &rd);
		CU_ASSERT_EQUAL(rd.n_committed_entries, 0);
		rb_persist(&t, &rd);
		CU_ASSERT_EQUAL_FATAL(raft_rawnode_advance(t.rn), RAFT_OK);
	}
	rb_free(&t);
}

static void test_applied_beyond_log_invalid(void)
{
	rb_node t;
	rb_restart_setup(&t, 3);
	t.cfg.applied = 11;
	CU_ASSERT_EQUAL(raft_rawnode_new(&t.cfg, &t.rn), RAFT_ERR_INVALID);
	CU_ASSERT_PTR_NULL(t.rn);
	rb_free(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 8-9. Leader bounds: check-quorum under transfer requests, empty proposals                  */
/* ------------------------------------------------------------------------------------------ */

static void rb_tick(rb_node *t)
{
	CU_ASSERT_EQUAL(raft_rawnode_tick(t->rn), RAFT_OK);
	rb_drain(t);
	rb_clear_sent(t);
}

static void test_transfers_do_not_postpone_check_quorum(void)
{
	rb_node t;
	rb_setup(&t, 1, 3);
	t.cfg.check_quorum = true;
	rb_start(&t);
	rb_make_leader(&t);
	int et = t.cfg.election_tick;
	uint64_t term = rb_status(&t).term;
	/* Followers answer until the quorum check at tick et has passed; then silence. */
	for (int i = 1; i < et; i++) {
		rb_tick(&t);
		rb_step(&t, rb_msg(RAFT_MSG_HEARTBEAT_RESPONSE, 2, 1, term));
		rb_step(&t, rb_msg(RAFT_MSG_HEARTBEAT_RESPONSE, 3, 1, term));
	}
	rb_tick(&t);
	CU_ASSERT_EQUAL_FATAL(rb_status(&t).role, RAFT_LEADER);
	for (int i = 1; i <= et; i++) {
		if (i % 3 == 1) {
			uint64_t to = (uint64_t)(i / 3 % 2 + 2);
			CU_ASSERT_EQUAL(rb_step(&t, rb_msg(RAFT_MSG_TRANSFER_LEADER, to, 1, term)),
			                RAFT_OK);
			CU_ASSERT_EQUAL(rb_status(&t).lead_transferee, to);
		}
		if (i == et)
			CU_ASSERT_EQUAL(rb_status(&t).role, RAFT_LEADER);
		rb_tick(&t);
	}
	raft_status st = rb_status(&t);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(st.term, term);
	CU_ASSERT_EQUAL(st.lead_transferee, 0);
	rb_free(&t);
}

static void test_empty_proposals_bounded(void)
{
	rb_node t;
	int accepted = 0;
	rb_setup(&t, 1, 3);
	t.cfg.max_uncommitted_entries_size = 16;
	rb_start(&t);
	rb_make_leader(&t);
	for (int i = 0; i < 1000; i++) {
		int rv = raft_rawnode_propose(t.rn, NULL, 0);
		CU_ASSERT(rv == RAFT_OK || rv == RAFT_ERR_PROPOSAL_DROPPED);
		accepted += rv == RAFT_OK;
		if (i % 50 == 0)
			rb_drain(&t);
	}
	CU_ASSERT_EQUAL(accepted, 16);
	rb_drain(&t);
	raft_status st = rb_status(&t);
	CU_ASSERT_EQUAL(st.last_index, 17);
	CU_ASSERT_EQUAL(st.commit, 0);
	/* Once they commit and apply, the budget is free again. */
	CU_ASSERT_EQUAL(rb_step(&t, rb_ack(2, 1, st.term, st.last_index)), RAFT_OK);
	rb_drain(&t);
	CU_ASSERT_EQUAL(rb_status(&t).applied, 17);
	CU_ASSERT_EQUAL(raft_rawnode_propose(t.rn, NULL, 0), RAFT_OK);
	rb_drain(&t);
	rb_free(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* 10. A stopped node refuses every call                                                      */
/* ------------------------------------------------------------------------------------------ */

static void rb_expect_stopped(rb_node *t)
{
	raft_ready rd;
	raft_message hb = rb_msg(RAFT_MSG_HEARTBEAT, 2, 1, 9);
	raft_message misrouted = rb_msg(RAFT_MSG_HEARTBEAT, 2, 9, 9);
	CU_ASSERT_NOT_EQUAL(rb_status(t).error, RAFT_OK);
	CU_ASSERT_EQUAL(raft_rawnode_ready(t->rn, &rd), RAFT_ERR_STOPPED);
	CU_ASSERT_EQUAL(raft_rawnode_tick(t->rn), RAFT_ERR_STOPPED);
	CU_ASSERT_EQUAL(raft_rawnode_campaign(t->rn), RAFT_ERR_STOPPED);
	CU_ASSERT_EQUAL(raft_rawnode_propose(t->rn, "x", 1), RAFT_ERR_STOPPED);
	CU_ASSERT_EQUAL(raft_rawnode_read_index(t->rn, 1), RAFT_ERR_STOPPED);
	CU_ASSERT_EQUAL(raft_rawnode_step(t->rn, &hb), RAFT_ERR_STOPPED);
	CU_ASSERT_EQUAL(raft_rawnode_step(t->rn, &misrouted), RAFT_ERR_STOPPED);
}

static void test_stopped_node_refuses_advance(void)
{
	rb_node t;
	raft_ready rd;
	rb_init(&t, 1, 3);
	CU_ASSERT_EQUAL(rb_step(&t, rb_msg(RAFT_MSG_HEARTBEAT, 2, 1, 1)), RAFT_OK);
	rb_ready(&t, &rd);
	raft_memory_storage_inject_error(t.ms, RAFT_ERR_IO, false);
	CU_ASSERT_EQUAL(raft_rawnode_campaign(t.rn), RAFT_ERR_IO);
	CU_ASSERT_EQUAL(raft_rawnode_advance(t.rn), RAFT_ERR_STOPPED);
	rb_expect_stopped(&t);
	rb_free(&t);
}

static void test_stopped_inside_ready(void)
{
	rb_node t;
	raft_ready rd;
	rb_init(&t, 1, 3);
	rb_make_leader(&t);
	CU_ASSERT_EQUAL(rb_step(&t, rb_ack(2, 1, rb_status(&t).term, 1)), RAFT_OK);
	rb_drain(&t);
	CU_ASSERT_EQUAL(raft_rawnode_propose(t.rn, "x", 1), RAFT_OK);
	raft_memory_storage_inject_error(t.ms, RAFT_ERR_IO, false);
	CU_ASSERT_EQUAL(raft_rawnode_ready(t.rn, &rd), RAFT_ERR_IO);
	rb_expect_stopped(&t);
	rb_free(&t);
}

void test_register_robustness(void)
{
	CU_pSuite s = CU_add_suite("robustness", NULL, NULL);
	if (s == NULL)
		return;
	CU_add_test(s, "re-append after truncation with a Ready outstanding",
	            test_reappend_after_truncate_with_outstanding_ready);
	CU_add_test(s, "shorter re-append with a Ready outstanding",
	            test_shorter_reappend_with_outstanding_ready);
	CU_add_test(s, "random truncations interleaved with Readies",
	            test_random_truncation_interleaving);
	CU_add_test(s, "term-0 messages refused by a candidate",
	            test_term_zero_refused_by_candidate);
	CU_add_test(s, "term-0 APPEND refused by a follower",
	            test_term_zero_append_refused_by_follower);
	CU_add_test(s, "ack from self refused", test_ack_from_self_refused);
	CU_add_test(s, "messages from 0 refused", test_from_zero_refused);
	CU_add_test(s, "terms and indexes above RAFT_MAX_INDEX refused",
	            test_values_above_max_index_refused);
	CU_add_test(s, "ack beyond the last index ignored", test_ack_beyond_last_index_ignored);
	CU_add_test(s, "heartbeat commit clamped to the log", test_heartbeat_commit_clamped_to_log);
	CU_add_test(s, "single voter reads wait for its term's commit",
	            test_single_voter_read_waits_for_own_term);
	CU_add_test(s, "applied above a lost commit", test_applied_above_lost_commit);
	CU_add_test(s, "applied beyond the log is invalid", test_applied_beyond_log_invalid);
	CU_add_test(s, "transfer requests do not postpone check-quorum",
	            test_transfers_do_not_postpone_check_quorum);
	CU_add_test(s, "empty proposals are bounded", test_empty_proposals_bounded);
	CU_add_test(s, "stopped node refuses advance", test_stopped_node_refuses_advance);
	CU_add_test(s, "node stopped inside ready", test_stopped_inside_ready);
}
