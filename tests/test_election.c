/* test_election.c - leader election, term rules and votes of the Raft core (CUnit suite). */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netsim.h"
#include "raft.h"
#include "suites.h"

#include "fixture.h"

static raft_message vote_req(uint64_t from, uint64_t to, uint64_t term, uint64_t log_term,
                             uint64_t index)
{
	raft_message m = msg(RAFT_MSG_REQUEST_VOTE, from, to, term);
	m.log_term = log_term;
	m.index = index;
	return m;
}

static bool all_follow(netsim *ns, size_t n, uint64_t leader)
{
	for (uint64_t id = 1; id <= n; id++) {
		raft_status st = netsim_status(ns, id);
		int want = id == leader ? RAFT_LEADER : RAFT_FOLLOWER;
		if (st.role != want || st.leader != leader)
			return false;
	}
	return true;
}

/* Ticks and stabilizes until one leader is followed by all n nodes; returns it, or 0. */
static uint64_t tick_until_stable_leader(netsim *ns, size_t n, int max_ticks)
{
	for (int t = 0; t < max_ticks; t++) {
		netsim_tick_all(ns);
		netsim_stabilize(ns);
		uint64_t leader = netsim_leader(ns);
		if (leader != 0 && all_follow(ns, n, leader))
			return leader;
	}
	return 0;
}

#define CHECK_SEED(cond, seed)                                                                     \
	do {                                                                                       \
		bool ok_ = (cond);                                                                 \
		if (!ok_)                                                                          \
			fprintf(stderr, "\n%s:%d: failed with seed %llu\n", __FILE__, __LINE__,    \
			        (unsigned long long)(seed));                                       \
		CU_ASSERT(ok_);                                                                    \
	} while (0)

/* ------------------------------------------------------------------------------------------ */
/* Starting                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void test_new_node_is_follower_at_term_zero(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 1, 3);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(st.term, 0);
	CU_ASSERT_EQUAL(st.vote, 0);
	CU_ASSERT_EQUAL(st.leader, 0);
	CU_ASSERT_EQUAL(st.commit, 0);
	CU_ASSERT_EQUAL(st.n_peers, 3);
	fx_free(&fx);
}

static void test_new_node_loads_hard_state(void)
{
	static const uint64_t terms[] = {1, 1, 2};
	fixture fx;
	fx_init(&fx);
	fx_log(&fx, terms, 3);
	fx_hard_state(&fx, 3, 2, 2);
	fx_start(&fx, 1, 3);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(st.term, 3);
	CU_ASSERT_EQUAL(st.vote, 2);
	CU_ASSERT_EQUAL(st.commit, 2);
	CU_ASSERT_EQUAL(st.last_index, 3);
	fx_free(&fx);
}

static void test_membership_from_storage_conf_state(void)
{
	fixture fx;
	fx_init(&fx);
	raft_snapshot snap;
	memset(&snap, 0, sizeof(snap));
	snap.metadata.index = 5;
	snap.metadata.term = 2;
	snap.metadata.conf_state.n_voters = 3;
	snap.metadata.conf_state.voters[0] = 1;
	snap.metadata.conf_state.voters[1] = 2;
	snap.metadata.conf_state.voters[2] = 3;
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_apply_snapshot(fx.ms, &snap), RAFT_OK);
	raft_config c;
	fx_config(&fx, &c, 2, 0);
	c.peers = NULL;
	fx_start_with(&fx, &c);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.n_peers, 3);
	uint64_t sum = 0;
	for (size_t i = 0; i < st.n_peers && i < RAFT_MAX_VOTERS; i++)
		sum += st.peers[i].id;
	CU_ASSERT_EQUAL(sum, 6);
	CU_ASSERT_EQUAL(st.last_index, 5);
	fx_free(&fx);
}

static void test_empty_conf_state_does_not_crash(void)
{
	fixture fx;
	fx_init(&fx);
	raft_config c;
	fx_config(&fx, &c, 1, 0);
	c.peers = NULL;
	int rv = raft_rawnode_new(&c, &fx.rn);
	CU_ASSERT(rv == RAFT_OK || rv == RAFT_ERR_INVALID);
	if (rv == RAFT_OK) {
		for (int t = 0; t < 30; t++)
			raft_rawnode_tick(fx.rn);
		fx_drain(&fx);
	} else {
		fx.rn = NULL;
	}
	fx_free(&fx);
}

/* ------------------------------------------------------------------------------------------ */
/* Timers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Ticks until the node starts an election (its term grows); returns the ticks taken. */
static int ticks_until_campaign(fixture *fx, int limit)
{
	uint64_t term = fx_status(fx).term;
	for (int t = 1; t <= limit; t++) {
		fx_tick(fx, 1);
		if (fx_status(fx).term != term)
			return t;
	}
	return -1;
}

static void check_timeout_histogram(const int *hist, int et, int out_of_range, uint64_t seed)
{
	CHECK_SEED(out_of_range == 0, seed);
	for (int v = et; v < 2 * et; v++)
		CHECK_SEED(hist[v] > 0, seed);
}

static void test_election_timeout_range_fresh_nodes(void)
{
	enum { ET = 10 };
	int hist[2 * ET] = {0};
	int out = 0;
	for (uint64_t seed = 0; seed < 1000; seed++) {
		fixture fx;
		fx_init(&fx);
		raft_config c;
		fx_config(&fx, &c, 1, 3);
		c.election_tick = ET;
		c.seed = seed;
		fx_start_with(&fx, &c);
		int t = ticks_until_campaign(&fx, 4 * ET);
		if (t >= ET && t < 2 * ET)
			hist[t]++;
		else
			out++;
		fx_free(&fx);
	}
	check_timeout_histogram(hist, ET, out, 0);
}

static void test_election_timeout_redrawn_as_candidate(void)
{
	enum { ET = 10 };
	int hist[2 * ET] = {0};
	int out = 0;
	fixture fx;
	fx_init(&fx);
	raft_config c;
	fx_config(&fx, &c, 1, 3);
	c.election_tick = ET;
	c.seed = 7;
	fx_start_with(&fx, &c);
	fx_campaign(&fx);
	for (int round = 0; round < 1000; round++) {
		int t = ticks_until_campaign(&fx, 4 * ET);
		fx_drain(&fx);
		if (t >= ET && t < 2 * ET)
			hist[t]++;
		else
			out++;
	}
	CU_ASSERT_EQUAL(fx_status(&fx).role, RAFT_CANDIDATE);
	CU_ASSERT_EQUAL(fx_status(&fx).term, 1001);
	check_timeout_histogram(hist, ET, out, 7);
	fx_free(&fx);
}

static void test_election_timeout_redrawn_as_follower(void)
{
	enum { ET = 10 };
	int hist[2 * ET] = {0};
	int out = 0;
	fixture fx;
	fx_init(&fx);
	raft_config c;
	fx_config(&fx, &c, 1, 3);
	c.election_tick = ET;
	c.seed = 11;
	fx_start_with(&fx, &c);
	for (int round = 0; round < 1000; round++) {
		raft_message hb = msg(RAFT_MSG_HEARTBEAT, 2, 1, fx_status(&fx).term + 1);
		fx_step(&fx, &hb);
		CU_ASSERT_EQUAL(fx_status(&fx).role, RAFT_FOLLOWER);
		int t = ticks_until_campaign(&fx, 4 * ET);
		fx_drain(&fx);
		if (t >= ET && t < 2 * ET)
			hist[t]++;
		else
			out++;
	}
	check_timeout_histogram(hist, ET, out, 11);
	fx_free(&fx);
}

/* Returns how many of the n nodes left the follower role on the first tick any did. */
static size_t first_timeout_crowd(netsim *ns, size_t n)
{
	for (int t = 0; t < 100; t++) {
		netsim_tick_all(ns);
		size_t crowd = 0;
		for (uint64_t id = 1; id <= n; id++)
			crowd += netsim_status(ns, id).role != RAFT_FOLLOWER ? 1 : 0;
		if (crowd > 0)
			return crowd;
	}
	return 0;
}

static void test_same_seed_nodes_rarely_time_out_together(void)
{
	size_t collisions = 0, never = 0;
	for (uint64_t round = 0; round < 1000; round++) {
		netsim *ns = cluster(5, round, false);
		size_t crowd = first_timeout_crowd(ns, 5);
		collisions += crowd > 1 ? 1 : 0;
		never += crowd == 0 ? 1 : 0;
		netsim_free(ns);
	}
	if (collisions > 300)
		fprintf(stderr, "\nsame-tick timeouts in %zu of 1000 rounds (seeds 0..999)\n",
		        collisions);
	CU_ASSERT_EQUAL(never, 0);
	CU_ASSERT(collisions <= 300);
}

static void test_leader_heartbeats_every_heartbeat_tick(void)
{
	fixture fx;
	fx_init(&fx);
	raft_config c;
	fx_config(&fx, &c, 1, 3);
	c.heartbeat_tick = 3;
	fx_start_with(&fx, &c);
	fx_make_leader(&fx);
	for (int period = 0; period < 3; period++) {
		fx_tick(&fx, 2);
		fx_drain(&fx);
		CU_ASSERT_EQUAL(fx_count(&fx, RAFT_MSG_HEARTBEAT), 0);
		fx_tick(&fx, 1);
		fx_drain(&fx);
		CU_ASSERT_EQUAL(fx_count(&fx, RAFT_MSG_HEARTBEAT), 2);
		const raft_message *hb = fx_find(&fx, RAFT_MSG_HEARTBEAT, 2);
		CU_ASSERT_PTR_NOT_NULL(hb);
		CU_ASSERT_PTR_NOT_NULL(fx_find(&fx, RAFT_MSG_HEARTBEAT, 3));
		if (hb != NULL) {
			CU_ASSERT_FALSE(fx_sent_after_persist(&fx, hb));
			CU_ASSERT_EQUAL(hb->term, 1);
			CU_ASSERT_EQUAL(hb->from, 1);
		}
	}
	CU_ASSERT_EQUAL(fx_status(&fx).role, RAFT_LEADER);
	fx_free(&fx);
}

static void test_follower_campaigns_after_timeout(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 1, 3);
	fx_tick(&fx, 9);
	CU_ASSERT_EQUAL(fx_status(&fx).role, RAFT_FOLLOWER);
	fx_tick(&fx, 10);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.role, RAFT_CANDIDATE);
	CU_ASSERT_EQUAL(st.term, 1);
	CU_ASSERT_EQUAL(st.vote, 1);
	fx_drain(&fx);
	CU_ASSERT_PTR_NOT_NULL(fx_find(&fx, RAFT_MSG_REQUEST_VOTE, 2));
	CU_ASSERT_PTR_NOT_NULL(fx_find(&fx, RAFT_MSG_REQUEST_VOTE, 3));
	fx_free(&fx);
}

/* ------------------------------------------------------------------------------------------ */
/* Local messages and proposals                                                               */
/* ------------------------------------------------------------------------------------------ */

typedef struct wire_audit {
	size_t messages;
	size_t local_types;
	size_t proposes;
	size_t bad_proposes;
} wire_audit;

static void audit_one(wire_audit *a, netsim *ns, uint64_t id, const raft_message *m)
{
	a->messages++;
	if (m->type == RAFT_MSG_HUP || m->type == RAFT_MSG_BEAT)
		a->local_types++;
	if (m->type != RAFT_MSG_PROPOSE)
		return;
	a->proposes++;
	raft_status st = netsim_status(ns, id);
	if (st.role != RAFT_FOLLOWER || st.leader == 0 || m->to != st.leader || m->from != id)
		a->bad_proposes++;
}

static void audit_ready(void *ctx, netsim *ns, uint64_t id, const raft_ready *rd)
{
	for (size_t i = 0; i < rd->n_messages; i++)
		audit_one(ctx, ns, id, &rd->messages[i]);
	for (size_t i = 0; i < rd->n_persisted_messages; i++)
		audit_one(ctx, ns, id, &rd->persisted_messages[i]);
}

static void test_local_messages_never_sent(void)
{
	wire_audit audit = {0};
	netsim *ns = cluster(3, 21, false);
	netsim_set_observer(ns, audit_ready, &audit);
	uint64_t leader = tick_until_stable_leader(ns, 3, 200);
	CU_ASSERT_NOT_EQUAL_FATAL(leader, 0);
	uint64_t follower = leader == 1 ? 2 : 1;
	CU_ASSERT_EQUAL(netsim_propose(ns, leader, "a", 1), RAFT_OK);
	CU_ASSERT_EQUAL(netsim_propose(ns, follower, "b", 1), RAFT_OK);
	for (int i = 0; i < 5; i++) {
		netsim_tick(ns, leader);
		netsim_stabilize(ns);
	}
	CU_ASSERT(audit.messages > 10);
	CU_ASSERT_EQUAL(audit.local_types, 0);
	CU_ASSERT_EQUAL(audit.proposes, 1);
	CU_ASSERT_EQUAL(audit.bad_proposes, 0);
	size_t n;
	const netsim_applied *ap = netsim_applied_list(ns, 3, &n);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	CU_ASSERT_EQUAL(ap[2].len, 1);
	CU_ASSERT_EQUAL(ap[2].data[0], 'b');
	netsim_free(ns);
}

static void test_step_refuses_local_types(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 1, 3);
	raft_message hup = msg(RAFT_MSG_HUP, 1, 1, 0);
	raft_message beat = msg(RAFT_MSG_BEAT, 1, 1, 0);
	CU_ASSERT_EQUAL(raft_rawnode_step(fx.rn, &hup), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_rawnode_step(fx.rn, &beat), RAFT_ERR_INVALID);
	fx_drain(&fx);
	CU_ASSERT_EQUAL(fx_status(&fx).term, 0);
	CU_ASSERT_EQUAL(fx_status(&fx).role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(fx.n_sent, 0);
	fx_free(&fx);
}

/* Starts node 2 of 3 as a follower of leader 1 in term 1. */
static void fx_start_follower_of_1(fixture *fx, bool forwarding)
{
	raft_config c;
	fx_config(fx, &c, 2, 3);
	c.disable_proposal_forwarding = !forwarding;
	fx_start_with(fx, &c);
	raft_message hb = msg(RAFT_MSG_HEARTBEAT, 1, 2, 1);
	fx_step(fx, &hb);
	CU_ASSERT_EQUAL_FATAL(fx_status(fx).leader, 1);
}

static void test_follower_forwards_proposal(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start_follower_of_1(&fx, true);
	CU_ASSERT_EQUAL(raft_rawnode_propose(fx.rn, "xyz", 3), RAFT_OK);
	fx_drain(&fx);
	const raft_message *p = fx_find(&fx, RAFT_MSG_PROPOSE, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	CU_ASSERT_EQUAL(p->from, 2);
	CU_ASSERT_EQUAL_FATAL(p->n_entries, 1);
	CU_ASSERT_EQUAL(p->entries[0].len, 3);
	CU_ASSERT_NSTRING_EQUAL(p->entries[0].data, "xyz", 3);
	CU_ASSERT_EQUAL(fx_status(&fx).last_index, 0);
	fx_free(&fx);
}

static void test_forwarding_disabled_drops_proposal(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start_follower_of_1(&fx, false);
	CU_ASSERT_EQUAL(raft_rawnode_propose(fx.rn, "xyz", 3), RAFT_ERR_PROPOSAL_DROPPED);
	fx_drain(&fx);
	CU_ASSERT_EQUAL(fx_count(&fx, RAFT_MSG_PROPOSE), 0);
	CU_ASSERT_EQUAL(fx_status(&fx).last_index, 0);
	fx_free(&fx);
}

static void test_forwarding_disabled_in_cluster(void)
{
	netsim_options o;
	memset(&o, 0, sizeof(o));
	o.n = 3;
	o.seed = 5;
	o.disable_proposal_forwarding = true;
	netsim *ns = netsim_new(&o);
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL_FATAL(netsim_leader(ns), 1);
	uint64_t last = netsim_status(ns, 1).last_index;
	CU_ASSERT_EQUAL(netsim_propose(ns, 2, "p", 1), RAFT_ERR_PROPOSAL_DROPPED);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).last_index, last);
	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "p", 1), RAFT_OK);
	CU_ASSERT_EQUAL(netsim_status(ns, 2).commit, last + 1);
	netsim_free(ns);
}

static void test_follower_without_leader_drops_proposal(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 2, 3);
	CU_ASSERT_EQUAL(raft_rawnode_propose(fx.rn, "x", 1), RAFT_ERR_PROPOSAL_DROPPED);
	fx_drain(&fx);
	CU_ASSERT_EQUAL(fx.n_sent, 0);
	CU_ASSERT_EQUAL(fx_status(&fx).last_index, 0);
	fx_free(&fx);
}

static void test_candidate_drops_proposal(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 1, 3);
	fx_campaign(&fx);
	CU_ASSERT_EQUAL_FATAL(fx_status(&fx).role, RAFT_CANDIDATE);
	CU_ASSERT_EQUAL(raft_rawnode_propose(fx.rn, "x", 1), RAFT_ERR_PROPOSAL_DROPPED);
	fx_drain(&fx);
	CU_ASSERT_EQUAL(fx_count(&fx, RAFT_MSG_PROPOSE), 0);
	CU_ASSERT_EQUAL(fx_count(&fx, RAFT_MSG_APPEND), 0);
	CU_ASSERT_EQUAL(fx_status(&fx).last_index, 0);
	CU_ASSERT_EQUAL(storage_last_index(fx.ms), 0);
	fx_free(&fx);
}

static void test_leader_ignores_hup(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 1, 3);
	fx_make_leader(&fx);
	fx_drain(&fx);
	CU_ASSERT_EQUAL(raft_rawnode_campaign(fx.rn), RAFT_OK);
	fx_drain(&fx);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.role, RAFT_LEADER);
	CU_ASSERT_EQUAL(st.term, 1);
	CU_ASSERT_EQUAL(fx_count(&fx, RAFT_MSG_REQUEST_VOTE), 0);
	fx_free(&fx);
}

/* ------------------------------------------------------------------------------------------ */
/* Term rules                                                                                 */
/* ------------------------------------------------------------------------------------------ */

enum { AS_FOLLOWER, AS_CANDIDATE, AS_LEADER };

/* Node 1 of 3 at term 1 in the given role. */
static void fx_start_in_role(fixture *fx, int role)
{
	fx_init(fx);
	if (role == AS_FOLLOWER)
		fx_hard_state(fx, 1, 0, 0);
	fx_start(fx, 1, 3);
	if (role == AS_CANDIDATE)
		fx_campaign(fx);
	if (role == AS_LEADER)
		fx_make_leader(fx);
	fx_drain(fx);
	CU_ASSERT_EQUAL_FATAL(fx_status(fx).term, 1);
}

static void check_higher_term_message(int role)
{
	static const int types[] = {RAFT_MSG_APPEND,
	                            RAFT_MSG_HEARTBEAT,
	                            RAFT_MSG_REQUEST_VOTE,
	                            RAFT_MSG_APPEND_RESPONSE,
	                            RAFT_MSG_REQUEST_VOTE_RESPONSE,
	                            RAFT_MSG_HEARTBEAT_RESPONSE};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		fixture fx;
		fx_start_in_role(&fx, role);
		raft_message m = msg(types[i], 2, 1, 2);
		if (types[i] == RAFT_MSG_REQUEST_VOTE) {
			m.log_term = 1;
			m.index = 10;
		}
		if (types[i] == RAFT_MSG_REQUEST_VOTE_RESPONSE)
			m.reject = true;
		fx_step(&fx, &m);
		raft_status st = fx_status(&fx);
		bool from_leader = types[i] == RAFT_MSG_APPEND || types[i] == RAFT_MSG_HEARTBEAT;
		if (st.role != RAFT_FOLLOWER || st.term != 2 || st.leader != (from_leader ? 2 : 0))
			fprintf(stderr, "\nrole %d, %s: role %d term %llu leader %llu\n", role,
			        raft_message_type_name(types[i]), st.role,
			        (unsigned long long)st.term, (unsigned long long)st.leader);
		CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
		CU_ASSERT_EQUAL(st.term, 2);
		CU_ASSERT_EQUAL(st.leader, from_leader ? 2 : 0);
		fx_free(&fx);
	}
}

static void test_follower_moves_to_higher_term(void)
{
	check_higher_term_message(AS_FOLLOWER);
}

static void test_candidate_moves_to_higher_term(void)
{
	check_higher_term_message(AS_CANDIDATE);
}

static void test_leader_moves_to_higher_term(void)
{
	check_higher_term_message(AS_LEADER);
}

static void test_lower_term_append_and_heartbeat_get_reply(void)
{
	static const int types[] = {RAFT_MSG_APPEND, RAFT_MSG_HEARTBEAT};
	for (size_t i = 0; i < 2; i++) {
		fixture fx;
		fx_init(&fx);
		fx_hard_state(&fx, 3, 0, 0);
		fx_start(&fx, 1, 3);
		raft_message m = msg(types[i], 2, 1, 2);
		fx_step(&fx, &m);
		CU_ASSERT_EQUAL(fx.n_sent, 1);
		if (fx.n_sent == 1) {
			CU_ASSERT_EQUAL(fx.sent[0].to, 2);
			CU_ASSERT_EQUAL(fx.sent[0].term, 3);
		}
		raft_status st = fx_status(&fx);
		CU_ASSERT_EQUAL(st.term, 3);
		CU_ASSERT_EQUAL(st.leader, 0);
		CU_ASSERT_EQUAL(st.last_index, 0);
		fx_free(&fx);
	}
}

static void test_lower_term_vote_dropped(void)
{
	fixture fx;
	fx_init(&fx);
	fx_hard_state(&fx, 3, 0, 0);
	fx_start(&fx, 1, 3);
	raft_message m = vote_req(2, 1, 2, 2, 10);
	fx_step(&fx, &m);
	CU_ASSERT_EQUAL(fx.n_sent, 0);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.term, 3);
	CU_ASSERT_EQUAL(st.vote, 0);
	fx_free(&fx);
}

static void test_lower_term_response_ignored_by_leader(void)
{
	static const uint64_t terms[] = {1, 1, 1};
	fixture fx;
	fx_init(&fx);
	fx_log(&fx, terms, 3);
	fx_hard_state(&fx, 1, 0, 0);
	fx_start(&fx, 1, 3);
	fx_make_leader(&fx);
	uint64_t term = fx_status(&fx).term;
	raft_message ack = msg(RAFT_MSG_APPEND_RESPONSE, 2, 1, term - 1);
	ack.index = 4;
	fx_step(&fx, &ack);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.role, RAFT_LEADER);
	CU_ASSERT_EQUAL(st.term, term);
	CU_ASSERT_EQUAL(peer_of(&st, 2).match, 0);
	CU_ASSERT_EQUAL(st.commit, 0);
	fx_free(&fx);
}

static void test_term_zero_message_is_local(void)
{
	fixture fx;
	fx_init(&fx);
	fx_hard_state(&fx, 4, 0, 0);
	fx_start(&fx, 1, 3);
	fx_make_leader(&fx);
	uint64_t last = fx_status(&fx).last_index;
	raft_entry e = {.type = RAFT_ENTRY_NORMAL, .data = "q", .len = 1};
	raft_message prop = msg(RAFT_MSG_PROPOSE, 2, 1, 0);
	prop.entries = &e;
	prop.n_entries = 1;
	CU_ASSERT_EQUAL(fx_step(&fx, &prop), RAFT_OK);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.last_index, last + 1);
	CU_ASSERT_EQUAL(st.term, 5);
	CU_ASSERT_EQUAL(storage_term(fx.ms, last + 1), 5);
	fx_free(&fx);
}

static void test_pre_vote_never_changes_term(void)
{
	fixture fx;
	fx_init(&fx);
	fx_hard_state(&fx, 3, 0, 0);
	raft_config c;
	fx_config(&fx, &c, 1, 3);
	c.pre_vote = true;
	fx_start_with(&fx, &c);
	raft_message pv = msg(RAFT_MSG_PRE_VOTE, 2, 1, 5);
	fx_step(&fx, &pv);
	const raft_message *r = fx_find(&fx, RAFT_MSG_PRE_VOTE_RESPONSE, 2);
	CU_ASSERT_PTR_NOT_NULL(r);
	if (r != NULL)
		CU_ASSERT_FALSE(r->reject);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.term, 3);
	CU_ASSERT_EQUAL(st.vote, 0);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	fx_free(&fx);
}

static void test_lower_term_pre_vote_rejected(void)
{
	fixture fx;
	fx_init(&fx);
	fx_hard_state(&fx, 3, 0, 0);
	raft_config c;
	fx_config(&fx, &c, 1, 3);
	c.pre_vote = true;
	fx_start_with(&fx, &c);
	raft_message pv = msg(RAFT_MSG_PRE_VOTE, 2, 1, 2);
	fx_step(&fx, &pv);
	const raft_message *r = fx_find(&fx, RAFT_MSG_PRE_VOTE_RESPONSE, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_TRUE(r->reject);
	CU_ASSERT_EQUAL(r->term, 3);
	CU_ASSERT_EQUAL(fx_status(&fx).term, 3);
	fx_free(&fx);
}

static void test_lease_ignores_higher_term_vote(void)
{
	for (int transfer = 0; transfer < 2; transfer++) {
		fixture fx;
		fx_init(&fx);
		raft_config c;
		fx_config(&fx, &c, 1, 3);
		c.check_quorum = true;
		fx_start_with(&fx, &c);
		raft_message hb = msg(RAFT_MSG_HEARTBEAT, 2, 1, 1);
		fx_step(&fx, &hb);
		raft_message v = vote_req(3, 1, 2, 0, 0);
		v.context = transfer ? RAFT_CONTEXT_TRANSFER : 0;
		fx_step(&fx, &v);
		raft_status st = fx_status(&fx);
		const raft_message *r = fx_find(&fx, RAFT_MSG_REQUEST_VOTE_RESPONSE, 3);
		if (transfer) {
			CU_ASSERT_EQUAL(st.term, 2);
			CU_ASSERT_EQUAL(st.vote, 3);
			CU_ASSERT_PTR_NOT_NULL(r);
			if (r != NULL)
				CU_ASSERT_FALSE(r->reject);
		} else {
			CU_ASSERT_EQUAL(st.term, 1);
			CU_ASSERT_EQUAL(st.leader, 2);
			CU_ASSERT_PTR_NULL(r);
		}
		fx_free(&fx);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Votes                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Steps a vote request into fx and returns whether a grant came back (-1: no answer). */
static int vote_answer(fixture *fx, const raft_message *req)
{
	fx_step(fx, req);
	const raft_message *r = fx_find(fx, RAFT_MSG_REQUEST_VOTE_RESPONSE, req->from);
	if (r == NULL)
		return -1;
	if (!r->reject)
		CU_ASSERT_TRUE(fx_sent_after_persist(fx, r));
	CU_ASSERT_EQUAL(r->from, fx_status(fx).id);
	return r->reject ? 0 : 1;
}

static void test_one_vote_per_term(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 1, 3);
	raft_message from2 = vote_req(2, 1, 1, 0, 0);
	raft_message from3 = vote_req(3, 1, 1, 0, 0);
	CU_ASSERT_EQUAL(vote_answer(&fx, &from2), 1);
	CU_ASSERT_EQUAL(vote_answer(&fx, &from3), 0);
	CU_ASSERT_EQUAL(vote_answer(&fx, &from2), 1);
	CU_ASSERT_EQUAL(fx_status(&fx).vote, 2);
	raft_hard_state hs;
	raft_conf_state cs;
	const raft_storage *s = raft_memory_storage_interface(fx.ms);
	CU_ASSERT_EQUAL(s->initial_state(s->ctx, &hs, &cs), RAFT_OK);
	CU_ASSERT_EQUAL(hs.term, 1);
	CU_ASSERT_EQUAL(hs.vote, 2);
	raft_message next_term = vote_req(3, 1, 2, 0, 0);
	CU_ASSERT_EQUAL(vote_answer(&fx, &next_term), 1);
	CU_ASSERT_EQUAL(fx_status(&fx).vote, 3);
	fx_free(&fx);
}

static void test_vote_requires_up_to_date_log(void)
{
	static const uint64_t voter_a[] = {1, 1};
	static const uint64_t voter_b[] = {1, 2};
	static const struct {
		const uint64_t *log;
		uint64_t log_term, index;
		int grant;
	} cases[] = {
	    {voter_a, 1, 1, 0}, {voter_a, 1, 2, 1}, {voter_a, 1, 3, 1}, {voter_a, 2, 1, 1},
	    {voter_a, 0, 0, 0}, {voter_b, 1, 3, 0}, {voter_b, 2, 1, 0}, {voter_b, 2, 2, 1},
	    {voter_b, 2, 5, 1}, {voter_b, 3, 1, 1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fixture fx;
		fx_init(&fx);
		fx_log(&fx, cases[i].log, 2);
		fx_hard_state(&fx, 2, 0, 0);
		fx_start(&fx, 1, 3);
		raft_message req = vote_req(2, 1, 3, cases[i].log_term, cases[i].index);
		int got = vote_answer(&fx, &req);
		if (got != cases[i].grant)
			fprintf(stderr, "\nvote case %zu: got %d want %d\n", i, got,
			        cases[i].grant);
		CU_ASSERT_EQUAL(got, cases[i].grant);
		CU_ASSERT_EQUAL(fx_status(&fx).term, 3);
		CU_ASSERT_EQUAL(fx_status(&fx).vote, cases[i].grant ? 2 : 0);
		fx_free(&fx);
	}
}

static void test_vote_request_carries_last_log(void)
{
	static const uint64_t terms[] = {1, 2, 2};
	fixture fx;
	fx_init(&fx);
	fx_log(&fx, terms, 3);
	fx_hard_state(&fx, 2, 0, 0);
	fx_start(&fx, 1, 3);
	fx_campaign(&fx);
	for (uint64_t to = 2; to <= 3; to++) {
		const raft_message *m = fx_find(&fx, RAFT_MSG_REQUEST_VOTE, to);
		CU_ASSERT_PTR_NOT_NULL_FATAL(m);
		CU_ASSERT_EQUAL(m->term, 3);
		CU_ASSERT_EQUAL(m->index, 3);
		CU_ASSERT_EQUAL(m->log_term, 2);
		CU_ASSERT_EQUAL(m->from, 1);
	}
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.role, RAFT_CANDIDATE);
	CU_ASSERT_EQUAL(st.vote, 1);
	fx_free(&fx);
}

static void test_candidate_and_leader_reject_same_term_votes(void)
{
	for (int role = AS_CANDIDATE; role <= AS_LEADER; role++) {
		fixture fx;
		fx_start_in_role(&fx, role);
		raft_message req = vote_req(3, 1, 1, 5, 50);
		CU_ASSERT_EQUAL(vote_answer(&fx, &req), 0);
		raft_status st = fx_status(&fx);
		CU_ASSERT_EQUAL(st.term, 1);
		CU_ASSERT_EQUAL(st.vote, 1);
		CU_ASSERT_EQUAL(st.role, role == AS_LEADER ? RAFT_LEADER : RAFT_CANDIDATE);
		fx_free(&fx);
	}
}

static void test_candidate_needs_majority_of_rejections(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 1, 5);
	fx_campaign(&fx);
	for (uint64_t from = 2; from <= 4; from++) {
		raft_message r = msg(RAFT_MSG_REQUEST_VOTE_RESPONSE, from, 1, 1);
		r.reject = true;
		fx_step(&fx, &r);
		int want = from < 4 ? RAFT_CANDIDATE : RAFT_FOLLOWER;
		CU_ASSERT_EQUAL(fx_status(&fx).role, want);
	}
	CU_ASSERT_EQUAL(fx_status(&fx).term, 1);
	fx_free(&fx);
}

static void test_candidate_needs_majority_of_grants(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 1, 5);
	fx_campaign(&fx);
	raft_message r = msg(RAFT_MSG_REQUEST_VOTE_RESPONSE, 2, 1, 1);
	fx_step(&fx, &r);
	fx_step(&fx, &r);
	CU_ASSERT_EQUAL(fx_status(&fx).role, RAFT_CANDIDATE);
	raft_message rej = msg(RAFT_MSG_REQUEST_VOTE_RESPONSE, 3, 1, 1);
	rej.reject = true;
	fx_step(&fx, &rej);
	CU_ASSERT_EQUAL(fx_status(&fx).role, RAFT_CANDIDATE);
	r.from = 4;
	fx_step(&fx, &r);
	CU_ASSERT_EQUAL(fx_status(&fx).role, RAFT_LEADER);
	CU_ASSERT_EQUAL(fx_status(&fx).term, 1);
	fx_free(&fx);
}

static void test_single_node_elects_itself(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 1, 1);
	fx_campaign(&fx);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.role, RAFT_LEADER);
	CU_ASSERT_EQUAL(st.term, 1);
	CU_ASSERT_EQUAL(st.leader, 1);
	fx_free(&fx);

	netsim *ns = cluster(1, 3, false);
	for (int t = 0; t < 20 && netsim_leader(ns) == 0; t++) {
		netsim_tick_all(ns);
		netsim_stabilize(ns);
	}
	CU_ASSERT_EQUAL(netsim_leader(ns), 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).term, 1);
	netsim_free(ns);
}

/* ------------------------------------------------------------------------------------------ */
/* Elections in a cluster                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void check_blackhole_election(bool pre_vote)
{
	static const struct {
		size_t n, holes;
		bool wins;
	} cases[] = {
	    {3, 0, true},  {3, 1, true}, {3, 2, false}, {4, 1, true},  {4, 2, false},
	    {4, 3, false}, {5, 1, true}, {5, 2, true},  {5, 3, false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		netsim *ns = cluster(cases[i].n, 100 + i, pre_vote);
		for (size_t h = 0; h < cases[i].holes; h++)
			netsim_blackhole(ns, cases[i].n - h);
		netsim_campaign(ns, 1);
		raft_status st = netsim_status(ns, 1);
		int lost_role = pre_vote ? RAFT_PRE_CANDIDATE : RAFT_CANDIDATE;
		if ((st.role == RAFT_LEADER) != cases[i].wins)
			fprintf(stderr, "\ncase %zu (n=%zu holes=%zu pre_vote=%d): role %d\n", i,
			        cases[i].n, cases[i].holes, pre_vote, st.role);
		CU_ASSERT_EQUAL(st.role, cases[i].wins ? RAFT_LEADER : lost_role);
		CU_ASSERT_EQUAL(st.term, cases[i].wins || !pre_vote ? 1 : 0);
		for (uint64_t id = 2; id <= cases[i].n - cases[i].holes; id++)
			CU_ASSERT_EQUAL(netsim_status(ns, id).leader, cases[i].wins ? 1 : 0);
		netsim_free(ns);
	}
}

static void test_election_with_blackholes(void)
{
	check_blackhole_election(false);
}

static void test_pre_vote_election_with_blackholes(void)
{
	check_blackhole_election(true);
}

static void test_leader_cycles_through_every_node(void)
{
	for (int pre_vote = 0; pre_vote < 2; pre_vote++) {
		netsim *ns = cluster(3, 31, pre_vote);
		for (int round = 0; round < 2; round++) {
			for (uint64_t c = 1; c <= 3; c++) {
				netsim_campaign(ns, c);
				CU_ASSERT(all_follow(ns, 3, c));
			}
		}
		CU_ASSERT_EQUAL(netsim_status(ns, 3).term, 6);
		netsim_free(ns);
	}
}

static void test_split_vote_resolved(void)
{
	for (uint64_t seed = 1; seed <= 20; seed++) {
		netsim *ns = cluster(4, seed, false);
		for (uint64_t a = 1; a <= 2; a++)
			for (uint64_t b = 3; b <= 4; b++)
				netsim_cut(ns, a, b);
		CU_ASSERT_EQUAL(raft_rawnode_campaign(netsim_node(ns, 1)), RAFT_OK);
		CU_ASSERT_EQUAL(raft_rawnode_campaign(netsim_node(ns, 3)), RAFT_OK);
		netsim_stabilize(ns);
		CHECK_SEED(netsim_status(ns, 1).role == RAFT_CANDIDATE, seed);
		CHECK_SEED(netsim_status(ns, 3).role == RAFT_CANDIDATE, seed);
		CHECK_SEED(netsim_status(ns, 2).vote == 1, seed);
		CHECK_SEED(netsim_status(ns, 4).vote == 3, seed);
		CHECK_SEED(netsim_leader(ns) == 0, seed);
		netsim_recover(ns);
		uint64_t leader = tick_until_stable_leader(ns, 4, 500);
		CHECK_SEED(leader != 0, seed);
		CHECK_SEED(netsim_status(ns, 1).term >= 2, seed);
		netsim_free(ns);
	}
}

static void test_dueling_candidates(void)
{
	netsim *ns = cluster(3, 41, false);
	netsim_cut(ns, 1, 3);
	netsim_campaign(ns, 1);
	netsim_campaign(ns, 3);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).role, RAFT_LEADER);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).role, RAFT_CANDIDATE);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).term, 1);
	netsim_recover(ns);
	/* 3's log is behind, so its term-2 election fails, but it deposes 1. */
	netsim_campaign(ns, 3);
	for (uint64_t id = 1; id <= 3; id++) {
		raft_status st = netsim_status(ns, id);
		CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
		CU_ASSERT_EQUAL(st.term, 2);
	}
	CU_ASSERT_EQUAL(netsim_status(ns, 1).commit, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 2).commit, 1);
	CU_ASSERT_EQUAL(storage_last_index(netsim_storage(ns, 1)), 1);
	CU_ASSERT_EQUAL(storage_last_index(netsim_storage(ns, 3)), 0);
	uint64_t leader = tick_until_stable_leader(ns, 3, 200);
	CU_ASSERT(leader == 1 || leader == 2);
	CU_ASSERT_EQUAL(storage_last_index(netsim_storage(ns, 3)), netsim_status(ns, 1).last_index);
	netsim_free(ns);
}

static void test_dueling_pre_candidates(void)
{
	netsim *ns = cluster(3, 43, true);
	netsim_cut(ns, 1, 3);
	netsim_campaign(ns, 1);
	netsim_campaign(ns, 3);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).role, RAFT_LEADER);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).role, RAFT_FOLLOWER);
	CU_ASSERT(netsim_status(ns, 3).term <= 1);
	netsim_recover(ns);
	/* Without the log needed to win, 3's pre-vote fails and nobody's term moves. */
	netsim_campaign(ns, 3);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).role, RAFT_LEADER);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).term, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 2).term, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).role, RAFT_FOLLOWER);
	CU_ASSERT(netsim_status(ns, 3).term <= 1);
	netsim_free(ns);
}

static void test_candidate_concedes_to_same_term_leader(void)
{
	netsim *ns = cluster(3, 47, false);
	netsim_isolate(ns, 1);
	netsim_campaign(ns, 1);
	netsim_campaign(ns, 3);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).role, RAFT_CANDIDATE);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).term, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).role, RAFT_LEADER);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).term, 1);
	netsim_recover(ns);
	heartbeat(ns, 3);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(netsim_propose(ns, 3, "force", 5), RAFT_OK);
	heartbeat(ns, 3);
	raft_status st = netsim_status(ns, 1);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(st.term, 1);
	CU_ASSERT_EQUAL(st.leader, 3);
	CU_ASSERT_EQUAL(st.last_index, 2);
	CU_ASSERT_EQUAL(st.commit, 2);
	size_t n;
	const netsim_applied *ap = netsim_applied_list(ns, 1, &n);
	CU_ASSERT_EQUAL_FATAL(n, 2);
	CU_ASSERT_EQUAL(ap[1].len, 5);
	CU_ASSERT_NSTRING_EQUAL(ap[1].data, "force", 5);
	netsim_free(ns);
}

static void test_stale_leader_steps_down_on_reply(void)
{
	netsim *ns = cluster(3, 53, false);
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL_FATAL(netsim_leader(ns), 1);
	netsim_isolate(ns, 1);
	netsim_campaign(ns, 2);
	CU_ASSERT_EQUAL(netsim_status(ns, 2).role, RAFT_LEADER);
	CU_ASSERT_EQUAL(netsim_status(ns, 2).term, 2);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).role, RAFT_LEADER);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).term, 1);
	netsim_recover(ns);
	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "stale", 5), RAFT_OK);
	raft_status st = netsim_status(ns, 1);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(st.term, 2);
	CU_ASSERT_EQUAL(netsim_status(ns, 2).role, RAFT_LEADER);
	/* The new leader's heartbeats find and repair the deposed leader's log. */
	CU_ASSERT_EQUAL(netsim_propose(ns, 2, "fresh", 5), RAFT_OK);
	heartbeat(ns, 2);
	heartbeat(ns, 2);
	for (uint64_t id = 1; id <= 3; id++) {
		size_t n;
		const netsim_applied *ap = netsim_applied_list(ns, id, &n);
		for (size_t i = 0; i < n; i++)
			CU_ASSERT(ap[i].len != 5 || memcmp(ap[i].data, "stale", 5) != 0);
		CU_ASSERT_EQUAL(netsim_status(ns, id).commit, 3);
		CU_ASSERT_EQUAL(storage_term(netsim_storage(ns, id), 3), 2);
	}
	netsim_free(ns);
}

static void test_isolated_candidate_rejoins(void)
{
	netsim *ns = cluster(3, 59, false);
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL_FATAL(netsim_leader(ns), 1);
	netsim_isolate(ns, 3);
	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "while-away", 10), RAFT_OK);
	for (int t = 0; t < 60; t++) {
		netsim_tick(ns, 3);
		netsim_stabilize(ns);
	}
	raft_status away = netsim_status(ns, 3);
	CU_ASSERT_EQUAL(away.role, RAFT_CANDIDATE);
	CU_ASSERT(away.term >= 3);
	CU_ASSERT_EQUAL(away.last_index, 1);
	netsim_recover(ns);
	uint64_t leader = tick_until_stable_leader(ns, 3, 300);
	CU_ASSERT(leader == 1 || leader == 2);
	CU_ASSERT(netsim_status(ns, 3).term >= away.term);
	CU_ASSERT_EQUAL(netsim_propose(ns, leader, "back", 4), RAFT_OK);
	heartbeat(ns, leader);
	raft_status ls = netsim_status(ns, leader);
	for (uint64_t id = 1; id <= 3; id++) {
		raft_status st = netsim_status(ns, id);
		CU_ASSERT_EQUAL(st.last_index, ls.last_index);
		CU_ASSERT_EQUAL(st.commit, ls.last_index);
	}
	size_t n;
	const netsim_applied *ap = netsim_applied_list(ns, 3, &n);
	CU_ASSERT_FATAL(n >= 3);
	CU_ASSERT_NSTRING_EQUAL(ap[1].data, "while-away", 10);
	CU_ASSERT_NSTRING_EQUAL(ap[n - 1].data, "back", 4);
	netsim_free(ns);
}

/* ------------------------------------------------------------------------------------------ */
/* Registration                                                                               */
/* ------------------------------------------------------------------------------------------ */

#define ADD(s, fn) CU_add_test(s, #fn, fn)

void test_register_election(void)
{
	CU_pSuite s = CU_add_suite("election", NULL, NULL);
	ADD(s, test_new_node_is_follower_at_term_zero);
	ADD(s, test_new_node_loads_hard_state);
	ADD(s, test_membership_from_storage_conf_state);
	ADD(s, test_empty_conf_state_does_not_crash);
	ADD(s, test_follower_campaigns_after_timeout);
	ADD(s, test_election_timeout_range_fresh_nodes);
	ADD(s, test_election_timeout_redrawn_as_candidate);
	ADD(s, test_election_timeout_redrawn_as_follower);
	ADD(s, test_same_seed_nodes_rarely_time_out_together);
	ADD(s, test_leader_heartbeats_every_heartbeat_tick);
	ADD(s, test_local_messages_never_sent);
	ADD(s, test_step_refuses_local_types);
	ADD(s, test_follower_forwards_proposal);
	ADD(s, test_forwarding_disabled_drops_proposal);
	ADD(s, test_forwarding_disabled_in_cluster);
	ADD(s, test_follower_without_leader_drops_proposal);
	ADD(s, test_candidate_drops_proposal);
	ADD(s, test_leader_ignores_hup);
	ADD(s, test_follower_moves_to_higher_term);
	ADD(s, test_candidate_moves_to_higher_term);
	ADD(s, test_leader_moves_to_higher_term);
	ADD(s, test_lower_term_append_and_heartbeat_get_reply);
	ADD(s, test_lower_term_vote_dropped);
	ADD(s, test_lower_term_response_ignored_by_leader);
	ADD(s, test_term_zero_message_is_local);
	ADD(s, test_pre_vote_never_changes_term);
	ADD(s, test_lower_term_pre_vote_rejected);
	ADD(s, test_lease_ignores_higher_term_vote);
	ADD(s, test_one_vote_per_term);
	ADD(s, test_vote_requires_up_to_date_log);
	ADD(s, test_vote_request_carries_last_log);
	ADD(s, test_candidate_and_leader_reject_same_term_votes);
	ADD(s, test_candidate_needs_majority_of_rejections);
	ADD(s, test_candidate_needs_majority_of_grants);
	ADD(s, test_single_node_elects_itself);
	ADD(s, test_election_with_blackholes);
	ADD(s, test_pre_vote_election_with_blackholes);
	ADD(s, test_leader_cycles_through_every_node);
	ADD(s, test_split_vote_resolved);
	ADD(s, test_dueling_candidates);
	ADD(s, test_dueling_pre_candidates);
	ADD(s, test_candidate_concedes_to_same_term_leader);
	ADD(s, test_stale_leader_steps_down_on_reply);
	ADD(s, test_isolated_candidate_rejoins);
}
