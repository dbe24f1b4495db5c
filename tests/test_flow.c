/* test_flow.c - leader flow control: probe, replicate, the inflight window and message size. */
#include <CUnit/CUnit.h>
#include <string.h>

#include "netsim.h"
#include "raft.h"
#include "suites.h"

/* Leader 1 of a 5-voter cluster driven by hand; one follower's ack never commits anything, so
 * commit-driven broadcasts stay out of the way. */
typedef struct tnode {
	raft_memory_storage *ms;
	raft_rawnode *rn;
	raft_config cfg;
	uint64_t peers[5];
} tnode;

/* What the leader sent to peer 2 in one Ready. */
typedef struct sent {
	size_t appends;
	size_t heartbeats;
	uint64_t prev_index; /* index of the first APPEND */
	uint64_t first;      /* first entry index carried, 0 for none */
	uint64_t last;       /* last entry index carried, 0 for none */
	bool within_size;    /* every APPEND held one entry or stayed within max_size_per_msg */
} sent;

static void leader_setup(tnode *t)
{
	memset(t, 0, sizeof(*t));
	t->ms = raft_memory_storage_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t->ms);
	raft_config_init(&t->cfg);
	for (size_t i = 0; i < 5; i++)
		t->peers[i] = i + 1;
	t->cfg.id = 1;
	t->cfg.peers = t->peers;
	t->cfg.n_peers = 5;
	t->cfg.storage = raft_memory_storage_interface(t->ms);
}

static void persist(raft_memory_storage *ms, const raft_ready *rd)
{
	if (rd->n_entries > 0)
		CU_ASSERT_EQUAL(raft_memory_storage_append(ms, rd->entries, rd->n_entries),
		                RAFT_OK);
	if (rd->has_hard_state)
		CU_ASSERT_EQUAL(raft_memory_storage_set_hard_state(ms, &rd->hard_state), RAFT_OK);
}

static void add_append(sent *s, const raft_message *m, uint64_t max_size)
{
	uint64_t size = 0;
	for (size_t i = 0; i < m->n_entries; i++)
		size += m->entries[i].len;
	if (m->n_entries > 1 && size > max_size)
		s->within_size = false;
	if (s->appends++ == 0)
		s->prev_index = m->index;
	if (m->n_entries == 0)
		return;
	if (s->first == 0)
		s->first = m->entries[0].index;
	s->last = m->entries[m->n_entries - 1].index;
}

static void add_messages(sent *s, const raft_message *msgs, size_t n, uint64_t max_size)
{
	for (size_t i = 0; i < n; i++) {
		if (msgs[i].to != 2)
			continue;
		if (msgs[i].type == RAFT_MSG_APPEND)
			add_append(s, &msgs[i], max_size);
		else if (msgs[i].type == RAFT_MSG_HEARTBEAT)
			s->heartbeats++;
	}
}

/* Handles every pending Ready (persist, advance) and reports what went to peer 2. */
static sent flush(tnode *t)
{
	sent s = {.within_size = true};
	for (int i = 0; i < 10 && raft_rawnode_has_ready(t->rn); i++) {
		raft_ready rd;
		CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(t->rn, &rd), RAFT_OK);
		persist(t->ms, &rd);
		add_messages(&s, rd.messages, rd.n_messages, t->cfg.max_size_per_msg);
		add_messages(&s, rd.persisted_messages, rd.n_persisted_messages,
		             t->cfg.max_size_per_msg);
		CU_ASSERT_EQUAL_FATAL(raft_rawnode_advance(t->rn), RAFT_OK);
	}
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t->rn));
	return s;
}

static void step(tnode *t, raft_message m)
{
	CU_ASSERT_EQUAL(raft_rawnode_step(t->rn, &m), RAFT_OK);
}

static uint64_t term_of(tnode *t)
{
	raft_status st;
	raft_rawnode_status(t->rn, &st);
	return st.term;
}

static sent ack(tnode *t, uint64_t from, uint64_t index)
{
	step(t, (raft_message){.type = RAFT_MSG_APPEND_RESPONSE,
	                       .from = from,
	                       .to = 1,
	                       .term = term_of(t),
	                       .index = index});
	return flush(t);
}

static sent reject(tnode *t, uint64_t from, uint64_t index, uint64_t hint)
{
	step(t, (raft_message){.type = RAFT_MSG_APPEND_RESPONSE,
	                       .from = from,
	                       .to = 1,
	                       .term = term_of(t),
	                       .index = index,
	                       .reject = true,
	                       .reject_hint = hint});
	return flush(t);
}

static sent heartbeat_response(tnode *t, uint64_t from)
{
	step(t,
	     (raft_message){
	         .type = RAFT_MSG_HEARTBEAT_RESPONSE, .from = from, .to = 1, .term = term_of(t)});
	return flush(t);
}

static sent propose(tnode *t, size_t len)
{
	char data[64];
	CU_ASSERT_FATAL(len <= sizeof(data));
	memset(data, 'f', len);
	CU_ASSERT_EQUAL(raft_rawnode_propose(t->rn, data, len), RAFT_OK);
	return flush(t);
}

static raft_peer_status peer(tnode *t, uint64_t id)
{
	raft_status st;
	raft_rawnode_status(t->rn, &st);
	for (size_t i = 0; i < st.n_peers; i++)
		if (st.peers[i].id == id)
			return st.peers[i];
	CU_FAIL("peer missing from status");
	return (raft_peer_status){0};
}

static uint64_t last_index(tnode *t)
{
	raft_status st;
	raft_rawnode_status(t->rn, &st);
	return st.last_index;
}

/* Starts the node with t->cfg and wins the next term with votes from 2 and 3. */
static void leader_start(tnode *t)
{
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_new(&t->cfg, &t->rn), RAFT_OK);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_campaign(t->rn), RAFT_OK);
	flush(t);
	for (uint64_t id = 2; id <= 3; id++)
		step(t, (raft_message){.type = RAFT_MSG_REQUEST_VOTE_RESPONSE,
		                       .from = id,
		                       .to = 1,
		                       .term = term_of(t)});
	flush(t);
	raft_status st;
	raft_rawnode_status(t->rn, &st);
	CU_ASSERT_EQUAL_FATAL(st.role, RAFT_LEADER);
}

static void leader_init(tnode *t)
{
	leader_setup(t);
	leader_start(t);
}

static void leader_free(tnode *t)
{
	raft_rawnode_free(t->rn);
	raft_memory_storage_free(t->ms);
}

/* ---- probe ------------------------------------------------------------------------------- */

static void test_probe_one_append_per_heartbeat(void)
{
	tnode t;
	leader_init(&t);
	raft_peer_status p = peer(&t, 2);
	CU_ASSERT_EQUAL(p.state, RAFT_PROGRESS_PROBE);
	CU_ASSERT_TRUE(p.paused);
	CU_ASSERT_EQUAL(p.match, 0);
	uint64_t next = p.next;
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 3; i++)
			CU_ASSERT_EQUAL(propose(&t, 4).appends, 0);
		CU_ASSERT_EQUAL(raft_rawnode_tick(t.rn), RAFT_OK);
		sent beat = flush(&t);
		CU_ASSERT_EQUAL(beat.heartbeats, 1);
		sent resumed = heartbeat_response(&t, 2);
		CU_ASSERT_EQUAL(beat.appends + resumed.appends, 1);
		CU_ASSERT_EQUAL(beat.appends ? beat.prev_index : resumed.prev_index, next - 1);
		p = peer(&t, 2);
		CU_ASSERT_EQUAL(p.state, RAFT_PROGRESS_PROBE);
		CU_ASSERT_TRUE(p.paused);
		CU_ASSERT_EQUAL(p.next, next);
	}
	leader_free(&t);
}

static void test_probe_becomes_replicate_on_ack(void)
{
	tnode t;
	leader_init(&t);
	propose(&t, 4);
	propose(&t, 4);
	uint64_t last = last_index(&t);
	CU_ASSERT_EQUAL(last, 3);
	ack(&t, 2, last);
	raft_peer_status p = peer(&t, 2);
	CU_ASSERT_EQUAL(p.state, RAFT_PROGRESS_REPLICATE);
	CU_ASSERT_EQUAL(p.match, last);
	CU_ASSERT_EQUAL(p.next, last + 1);
	CU_ASSERT_FALSE(p.paused);
	CU_ASSERT_EQUAL(p.inflight, 0);
	CU_ASSERT_EQUAL(peer(&t, 3).state, RAFT_PROGRESS_PROBE);
	leader_free(&t);
}

/* ---- replicate: the inflight window ------------------------------------------------------ */

/* With a window of 3: peer 2 replicates, entries 2..4 are in flight, 5 and 6 wait. */
static void fill_window(tnode *t)
{
	leader_setup(t);
	t->cfg.max_inflight_msgs = 3;
	leader_start(t);
	CU_ASSERT_EQUAL(propose(t, 4).appends, 0);
	sent s = ack(t, 2, 1);
	CU_ASSERT_EQUAL(s.appends, 1);
	CU_ASSERT_EQUAL(s.prev_index, 1);
	CU_ASSERT_EQUAL(s.first, 2);
	CU_ASSERT_EQUAL(s.last, 2);
	CU_ASSERT_EQUAL(peer(t, 2).state, RAFT_PROGRESS_REPLICATE);
	CU_ASSERT_EQUAL(peer(t, 2).inflight, 1);
	for (uint64_t index = 3; index <= 4; index++) {
		s = propose(t, 4);
		CU_ASSERT_EQUAL(s.appends, 1);
		CU_ASSERT_EQUAL(s.first, index);
		CU_ASSERT_EQUAL(peer(t, 2).inflight, index - 1);
	}
	CU_ASSERT_TRUE(peer(t, 2).paused);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(propose(t, 4).appends, 0);
		CU_ASSERT_EQUAL(peer(t, 2).inflight, 3);
	}
	CU_ASSERT_EQUAL(last_index(t), 6);
	CU_ASSERT_EQUAL(peer(t, 2).next, 5);
}

static void test_window_fills_and_pauses(void)
{
	tnode t;
	fill_window(&t);
	CU_ASSERT_EQUAL(raft_rawnode_tick(t.rn), RAFT_OK);
	CU_ASSERT_EQUAL(flush(&t).appends, 0);
	raft_peer_status p = peer(&t, 2);
	CU_ASSERT_EQUAL(p.state, RAFT_PROGRESS_REPLICATE);
	CU_ASSERT_TRUE(p.paused);
	CU_ASSERT_EQUAL(p.match, 1);
	leader_free(&t);
}

static void test_acks_free_window(void)
{
	tnode t;
	fill_window(&t);
	sent s = ack(&t, 2, 2);
	CU_ASSERT_EQUAL(s.appends, 1);
	CU_ASSERT_EQUAL(s.first, 5);
	CU_ASSERT_EQUAL(s.last, 6);
	CU_ASSERT_EQUAL(peer(&t, 2).inflight, 3);
	CU_ASSERT_EQUAL(peer(&t, 2).match, 2);

	CU_ASSERT_EQUAL(ack(&t, 2, 6).first, 0);
	raft_peer_status p = peer(&t, 2);
	CU_ASSERT_EQUAL(p.inflight, 0);
	CU_ASSERT_FALSE(p.paused);
	CU_ASSERT_EQUAL(p.match, 6);
	CU_ASSERT_EQUAL(p.next, 7);
	CU_ASSERT_EQUAL(propose(&t, 4).first, 7);
	leader_free(&t);
}

static void test_heartbeat_response_resumes_paused_flow(void)
{
	tnode t;
	fill_window(&t);
	sent s = heartbeat_response(&t, 2);
	CU_ASSERT(s.appends >= 1);
	CU_ASSERT(peer(&t, 2).inflight <= 3);
	CU_ASSERT_EQUAL(peer(&t, 2).state, RAFT_PROGRESS_REPLICATE);
	leader_free(&t);
}

/* ---- message size ------------------------------------------------------------------------ */

/* Acks whatever reaches peer 2 until it matches the leader, checking every APPEND's size. */
static void replicate_to_2(tnode *t, sent first)
{
	sent s = first;
	for (int round = 0; round < 50 && s.last > peer(t, 2).match; round++) {
		CU_ASSERT_TRUE(s.within_size);
		s = ack(t, 2, s.last);
	}
	CU_ASSERT_TRUE(s.within_size);
	CU_ASSERT_EQUAL(peer(t, 2).match, last_index(t));
}

static void test_max_size_per_msg_limits_entries(void)
{
	tnode t;
	leader_setup(&t);
	t.cfg.max_size_per_msg = 10;
	leader_start(&t);
	for (int i = 0; i < 4; i++)
		propose(&t, 6);
	uint64_t next = peer(&t, 2).next;
	sent s = heartbeat_response(&t, 2);
	CU_ASSERT_EQUAL(s.appends, 1);
	CU_ASSERT_EQUAL(s.first, next);
	CU_ASSERT(s.last >= 1 && s.last < 5);
	replicate_to_2(&t, s);
	leader_free(&t);
}

static void test_max_size_per_msg_sends_at_least_one(void)
{
	tnode t;
	leader_setup(&t);
	t.cfg.max_size_per_msg = 1;
	leader_start(&t);
	for (int i = 0; i < 4; i++)
		propose(&t, 6);
	sent s = ack(&t, 2, 1);
	CU_ASSERT_EQUAL(peer(&t, 2).state, RAFT_PROGRESS_REPLICATE);
	CU_ASSERT(s.appends >= 1);
	CU_ASSERT_EQUAL(s.first, 2);
	replicate_to_2(&t, s);
	s = propose(&t, 6);
	CU_ASSERT_EQUAL(s.first, 6);
	CU_ASSERT_EQUAL(s.last, 6);
	leader_free(&t);
}

/* ---- stale responses and unreachable peers ----------------------------------------------- */

/* Peer 2 replicates and has matched entries 1..5. */
static void replicating_leader(tnode *t)
{
	leader_init(t);
	for (int i = 0; i < 4; i++)
		propose(t, 3);
	ack(t, 2, 5);
	raft_peer_status p = peer(t, 2);
	CU_ASSERT_EQUAL_FATAL(p.state, RAFT_PROGRESS_REPLICATE);
	CU_ASSERT_EQUAL_FATAL(p.match, 5);
	CU_ASSERT_EQUAL_FATAL(p.next, 6);
}

static void expect_progress(tnode *t, uint64_t id, int state, uint64_t match, uint64_t next)
{
	raft_peer_status p = peer(t, id);
	CU_ASSERT_EQUAL(p.state, state);
	CU_ASSERT_EQUAL(p.match, match);
	CU_ASSERT_EQUAL(p.next, next);
}

static void test_stale_ack_ignored(void)
{
	tnode t;
	replicating_leader(&t);
	CU_ASSERT_EQUAL(ack(&t, 2, 3).first, 0);
	expect_progress(&t, 2, RAFT_PROGRESS_REPLICATE, 5, 6);
	CU_ASSERT_EQUAL(ack(&t, 2, 5).first, 0);
	expect_progress(&t, 2, RAFT_PROGRESS_REPLICATE, 5, 6);
	leader_free(&t);
}

static void test_stale_rejection_ignored_in_replicate(void)
{
	tnode t;
	replicating_leader(&t);
	for (uint64_t index = 3; index <= 5; index++) {
		CU_ASSERT_EQUAL(reject(&t, 2, index, 1).first, 0);
		expect_progress(&t, 2, RAFT_PROGRESS_REPLICATE, 5, 6);
	}
	leader_free(&t);
}

/* Leader at term 2 over a log of five term-1 entries: probing peers start far ahead of match. */
static void leader_over_old_log(tnode *t)
{
	leader_setup(t);
	for (uint64_t i = 1; i <= 5; i++) {
		raft_entry e = {.term = 1, .index = i};
		CU_ASSERT_EQUAL_FATAL(raft_memory_storage_append(t->ms, &e, 1), RAFT_OK);
	}
	raft_hard_state hs = {.term = 1};
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_set_hard_state(t->ms, &hs), RAFT_OK);
	leader_start(t);
	CU_ASSERT_EQUAL_FATAL(term_of(t), 2);
}

static void test_stale_rejection_ignored_in_probe(void)
{
	tnode t;
	leader_over_old_log(&t);
	raft_peer_status p = peer(&t, 2);
	CU_ASSERT_EQUAL_FATAL(p.state, RAFT_PROGRESS_PROBE);
	CU_ASSERT_FATAL(p.next >= 6);
	uint64_t next = p.next;
	CU_ASSERT_EQUAL(reject(&t, 2, next - 3, 1).appends, 0);
	expect_progress(&t, 2, RAFT_PROGRESS_PROBE, 0, next);

	sent s = reject(&t, 2, next - 1, next - 3);
	expect_progress(&t, 2, RAFT_PROGRESS_PROBE, 0, next - 2);
	CU_ASSERT_EQUAL(s.appends, 1);
	CU_ASSERT_EQUAL(s.prev_index, next - 3);

	CU_ASSERT_EQUAL(reject(&t, 2, next - 1, 1).appends, 0);
	expect_progress(&t, 2, RAFT_PROGRESS_PROBE, 0, next - 2);
	leader_free(&t);
}

static void test_rejection_never_moves_next_below_match(void)
{
	tnode t;
	replicating_leader(&t);
	CU_ASSERT_EQUAL(raft_rawnode_report_unreachable(t.rn, 2), RAFT_OK);
	propose(&t, 3);
	expect_progress(&t, 2, RAFT_PROGRESS_PROBE, 5, 6);
	reject(&t, 2, 2, 0);
	expect_progress(&t, 2, RAFT_PROGRESS_PROBE, 5, 6);
	sent s = heartbeat_response(&t, 2);
	CU_ASSERT_EQUAL(s.appends, 1);
	CU_ASSERT_EQUAL(s.prev_index, 5);
	CU_ASSERT_EQUAL(s.first, 6);
	leader_free(&t);
}

static void test_report_unreachable_moves_to_probe(void)
{
	tnode t;
	replicating_leader(&t);
	CU_ASSERT_EQUAL(raft_rawnode_report_unreachable(t.rn, 2), RAFT_OK);
	expect_progress(&t, 2, RAFT_PROGRESS_PROBE, 5, 6);
	CU_ASSERT(propose(&t, 3).appends <= 1);
	CU_ASSERT_TRUE(peer(&t, 2).paused);
	CU_ASSERT_EQUAL(propose(&t, 3).appends, 0);
	CU_ASSERT_EQUAL(raft_rawnode_report_unreachable(t.rn, 2), RAFT_OK);
	CU_ASSERT_EQUAL(peer(&t, 2).state, RAFT_PROGRESS_PROBE);
	CU_ASSERT_EQUAL(ack(&t, 2, 7).first, 0);
	expect_progress(&t, 2, RAFT_PROGRESS_REPLICATE, 7, 8);
	leader_free(&t);
}

/* ---- over netsim ------------------------------------------------------------------------- */

static void test_small_window_catches_up(void)
{
	netsim_options opt = {.n = 3, .seed = 3, .max_inflight_msgs = 2, .max_size_per_msg = 16};
	netsim *ns = netsim_new(&opt);
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL_FATAL(netsim_leader(ns), 1);
	netsim_isolate(ns, 3);
	for (int i = 0; i < 40; i++)
		CU_ASSERT_EQUAL(netsim_propose(ns, 1, "0123456789", 10), RAFT_OK);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).last_index, 1);
	netsim_recover(ns);
	for (int i = 0; i < 60 && netsim_status(ns, 3).commit < 41; i++) {
		netsim_tick(ns, 1);
		netsim_stabilize(ns);
	}
	CU_ASSERT_EQUAL(netsim_status(ns, 3).commit, 41);
	size_t n = 0;
	const netsim_applied *applied = netsim_applied_list(ns, 3, &n);
	CU_ASSERT_EQUAL_FATAL(n, 41);
	for (size_t i = 0; i < n; i++)
		CU_ASSERT_EQUAL(applied[i].index, i + 1);
	netsim_free(ns);
}

void test_register_flow(void)
{
	CU_pSuite s = CU_add_suite("flow", NULL, NULL);
	CU_add_test(s, "probe sends one append per heartbeat", test_probe_one_append_per_heartbeat);
	CU_add_test(s, "probe becomes replicate on ack", test_probe_becomes_replicate_on_ack);
	CU_add_test(s, "window fills and pauses", test_window_fills_and_pauses);
	CU_add_test(s, "acks free the window", test_acks_free_window);
	CU_add_test(s, "heartbeat response resumes paused flow",
	            test_heartbeat_response_resumes_paused_flow);
	CU_add_test(s, "max_size_per_msg limits entries", test_max_size_per_msg_limits_entries);
	CU_add_test(s, "max_size_per_msg sends at least one",
	            test_max_size_per_msg_sends_at_least_one);
	CU_add_test(s, "stale ack ignored", test_stale_ack_ignored);
	CU_add_test(s, "stale rejection ignored in replicate",
	            test_stale_rejection_ignored_in_replicate);
	CU_add_test(s, "stale rejection ignored in probe", test_stale_rejection_ignored_in_probe);
	CU_add_test(s, "rejection never moves next below match",
	            test_rejection_never_moves_next_below_match);
	CU_add_test(s, "report_unreachable moves to probe", test_report_unreachable_moves_to_probe);
	CU_add_test(s, "small window catches up", test_small_window_catches_up);
}
