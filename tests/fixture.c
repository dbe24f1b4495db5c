/* fixture.c - a single rawnode over a memory storage, driven by hand, for the core's suites. */
#include <CUnit/CUnit.h>
#include <string.h>

#include "fixture.h"
#include "netsim.h"
const uint64_t all_peers[RAFT_MAX_VOTERS] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

void fx_init(fixture *fx)
{
	memset(fx, 0, sizeof(*fx));
	fx->ms = raft_memory_storage_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(fx->ms);
}

/* Appends entries 1..n with the given terms to the storage. */
void fx_log(fixture *fx, const uint64_t *terms, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		raft_entry e = {.type = RAFT_ENTRY_NORMAL, .term = terms[i], .index = i + 1};
		CU_ASSERT_EQUAL_FATAL(raft_memory_storage_append(fx->ms, &e, 1), RAFT_OK);
	}
}

void fx_hard_state(fixture *fx, uint64_t term, uint64_t vote, uint64_t commit)
{
	raft_hard_state hs = {.term = term, .vote = vote, .commit = commit};
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_set_hard_state(fx->ms, &hs), RAFT_OK);
}

void fx_config(fixture *fx, raft_config *c, uint64_t id, size_t n_peers)
{
	raft_config_init(c);
	c->id = id;
	c->peers = all_peers;
	c->n_peers = n_peers;
	c->storage = raft_memory_storage_interface(fx->ms);
}

void fx_start_with(fixture *fx, const raft_config *c)
{
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_new(c, &fx->rn), RAFT_OK);
}

void fx_start(fixture *fx, uint64_t id, size_t n_peers)
{
	raft_config c;
	fx_config(fx, &c, id, n_peers);
	fx_start_with(fx, &c);
}

void fx_clear_sent(fixture *fx)
{
	for (size_t i = 0; i < fx->n_sent; i++)
		raft_message_free(&fx->sent[i]);
	fx->n_sent = 0;
}

void fx_keep(fixture *fx, const raft_message *m, bool after_persist)
{
	if (fx->n_sent == FX_MAX_SENT) {
		CU_FAIL("fixture: too many messages");
		return;
	}
	CU_ASSERT_EQUAL_FATAL(raft_message_clone(&fx->sent[fx->n_sent], m), RAFT_OK);
	fx->sent_after_persist[fx->n_sent++] = after_persist;
}

void fx_persist(fixture *fx, const raft_ready *rd)
{
	if (rd->has_snapshot)
		CU_ASSERT_EQUAL(raft_memory_storage_apply_snapshot(fx->ms, &rd->snapshot), RAFT_OK);
	if (rd->n_entries > 0)
		CU_ASSERT_EQUAL(raft_memory_storage_append(fx->ms, rd->entries, rd->n_entries),
		                RAFT_OK);
	if (rd->has_hard_state)
		CU_ASSERT_EQUAL(raft_memory_storage_set_hard_state(fx->ms, &rd->hard_state),
		                RAFT_OK);
}

/* Handles Readies until none is left; fx->sent holds the messages they carried. */
void fx_drain(fixture *fx)
{
	fx_clear_sent(fx);
	for (int guard = 0; guard < 100 && raft_rawnode_has_ready(fx->rn); guard++) {
		raft_ready rd;
		CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(fx->rn, &rd), RAFT_OK);
		for (size_t i = 0; i < rd.n_messages; i++)
			fx_keep(fx, &rd.messages[i], false);
		fx_persist(fx, &rd);
		for (size_t i = 0; i < rd.n_persisted_messages; i++)
			fx_keep(fx, &rd.persisted_messages[i], true);
		CU_ASSERT_EQUAL(raft_rawnode_advance(fx->rn), RAFT_OK);
	}
}

void fx_free(fixture *fx)
{
	fx_clear_sent(fx);
	raft_rawnode_free(fx->rn);
	raft_memory_storage_free(fx->ms);
	memset(fx, 0, sizeof(*fx));
}

raft_status fx_status(fixture *fx)
{
	raft_status st;
	raft_rawnode_status(fx->rn, &st);
	return st;
}

raft_message msg(int type, uint64_t from, uint64_t to, uint64_t term)
{
	raft_message m;
	memset(&m, 0, sizeof(m));
	m.type = type;
	m.from = from;
	m.to = to;
	m.term = term;
	return m;
}

/* Steps m (borrowed) and drains the resulting Readies. */
int fx_step(fixture *fx, const raft_message *m)
{
	int rv = raft_rawnode_step(fx->rn, m);
	fx_drain(fx);
	return rv;
}

const raft_message *fx_find(const fixture *fx, int type, uint64_t to)
{
	for (size_t i = 0; i < fx->n_sent; i++)
		if (fx->sent[i].type == type && fx->sent[i].to == to)
			return &fx->sent[i];
	return NULL;
}

size_t fx_count(const fixture *fx, int type)
{
	size_t n = 0;
	for (size_t i = 0; i < fx->n_sent; i++)
		n += fx->sent[i].type == type ? 1 : 0;
	return n;
}

bool fx_sent_after_persist(const fixture *fx, const raft_message *m)
{
	return fx->sent_after_persist[m - fx->sent];
}

void fx_campaign(fixture *fx)
{
	CU_ASSERT_EQUAL(raft_rawnode_campaign(fx->rn), RAFT_OK);
	fx_drain(fx);
}

/* Makes node 1 of n_peers leader: campaigns, then grants votes until it wins. */
void fx_make_leader(fixture *fx)
{
	fx_campaign(fx);
	raft_status st = fx_status(fx);
	for (uint64_t from = 2; from <= st.n_peers && fx_status(fx).role != RAFT_LEADER; from++) {
		raft_message m = msg(RAFT_MSG_REQUEST_VOTE_RESPONSE, from, st.id, st.term);
		fx_step(fx, &m);
	}
	CU_ASSERT_EQUAL_FATAL(fx_status(fx).role, RAFT_LEADER);
}

void fx_tick(fixture *fx, int n)
{
	for (int i = 0; i < n; i++)
		CU_ASSERT_EQUAL(raft_rawnode_tick(fx->rn), RAFT_OK);
}

/* ------------------------------------------------------------------------------------------ */
/* Netsim helpers                                                                             */
/* ------------------------------------------------------------------------------------------ */

netsim *cluster(size_t n, uint64_t seed, bool pre_vote)
{
	netsim_options o;
	memset(&o, 0, sizeof(o));
	o.n = n;
	o.seed = seed;
	o.pre_vote = pre_vote;
	return netsim_new(&o);
}

uint64_t storage_last_index(raft_memory_storage *ms)
{
	const raft_storage *s = raft_memory_storage_interface(ms);
	uint64_t last = 0;
	CU_ASSERT_EQUAL(s->last_index(s->ctx, &last), RAFT_OK);
	return last;
}

uint64_t storage_term(raft_memory_storage *ms, uint64_t i)
{
	const raft_storage *s = raft_memory_storage_interface(ms);
	uint64_t term = 0;
	CU_ASSERT_EQUAL(s->term(s->ctx, i, &term), RAFT_OK);
	return term;
}

raft_peer_status peer_of(const raft_status *st, uint64_t id)
{
	raft_peer_status none;
	memset(&none, 0, sizeof(none));
	for (size_t i = 0; i < st->n_peers && i < RAFT_MAX_VOTERS; i++)
		if (st->peers[i].id == id)
			return st->peers[i];
	return none;
}

/* Lets the leader send one round of heartbeats and waits for the network to settle. */
void heartbeat(netsim *ns, uint64_t leader)
{
	netsim_tick(ns, leader);
	netsim_stabilize(ns);
}
