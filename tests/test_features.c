/* test_features.c - pre-vote, check-quorum, leadership transfer, ReadIndex and term-rule tests. */
#include <CUnit/CUnit.h>
#include <stdlib.h>
#include <string.h>

#include "netsim.h"
#include "raft.h"
#include "suites.h"

#define ELECTION     10
#define MAX_CAPTURE  512
#define MAX_READS    32
#define MAX_RECORDS  4096
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------------------------------ */
/* A single rawnode driven by hand over memory storage                                        */
/* ------------------------------------------------------------------------------------------ */

typedef struct solo {
	raft_memory_storage *ms;
	raft_rawnode *rn;
	raft_message msgs[MAX_CAPTURE]; /* messages of the Readies since the last action */
	bool after_persist[MAX_CAPTURE];
	size_t n_msgs;
	raft_read_state reads[MAX_READS]; /* every read state since the node was created */
	size_t n_reads;
	bool hard_state_changed; /* a Ready since the last action carried a hard state */
} solo;

typedef struct solo_opts {
	uint64_t id;
	size_t n; /* voters are 1..n */
	bool pre_vote;
	bool check_quorum;
	raft_hard_state hs;        /* saved in storage before the node starts */
	const uint64_t *log_terms; /* terms of entries 1..n_log, saved before the node starts */
	size_t n_log;
} solo_opts;

static void seed_log(raft_memory_storage *ms, const uint64_t *terms, size_t n)
{
	raft_entry ents[16];
	CU_ASSERT_FATAL(n <= ARRAY_LEN(ents));
	memset(ents, 0, sizeof(ents));
	for (size_t i = 0; i < n; i++) {
		ents[i].type = RAFT_ENTRY_NORMAL;
		ents[i].term = terms[i];
		ents[i].index = i + 1;
	}
	if (n > 0)
		CU_ASSERT_EQUAL_FATAL(raft_memory_storage_append(ms, ents, n), RAFT_OK);
}

static void capture(solo *s, const raft_message *m, size_t n, bool after_persist)
{
	for (size_t i = 0; i < n; i++) {
		CU_ASSERT_FATAL(s->n_msgs < MAX_CAPTURE);
		CU_ASSERT_EQUAL_FATAL(raft_message_clone(&s->msgs[s->n_msgs], &m[i]), RAFT_OK);
		s->after_persist[s->n_msgs++] = after_persist;
	}
}

static void persist(solo *s, const raft_ready *rd)
{
	if (rd->has_snapshot)
		CU_ASSERT_EQUAL(raft_memory_storage_apply_snapshot(s->ms, &rd->snapshot), RAFT_OK);
	if (rd->n_entries > 0)
		CU_ASSERT_EQUAL(raft_memory_storage_append(s->ms, rd->entries, rd->n_entries),
		                RAFT_OK);
	if (rd->has_hard_state) {
		CU_ASSERT_EQUAL(raft_memory_storage_set_hard_state(s->ms, &rd->hard_state),
		                RAFT_OK);
		s->hard_state_changed = true;
	}
}

static void record_reads(solo *s, const raft_ready *rd)
{
	for (size_t i = 0; i < rd->n_read_states; i++) {
		CU_ASSERT_FATAL(s->n_reads < MAX_READS);
		s->reads[s->n_reads++] = rd->read_states[i];
	}
}

/* Handles every pending Ready as an application would, keeping its messages and read states. */
static void drain(solo *s)
{
	for (int guard = 0; raft_rawnode_has_ready(s->rn); guard++) {
		raft_ready rd;
		CU_ASSERT_FATAL(guard < 100);
		CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(s->rn, &rd), RAFT_OK);
		capture(s, rd.messages, rd.n_messages, false);
		persist(s, &rd);
		capture(s, rd.persisted_messages, rd.n_persisted_messages, true);
		record_reads(s, &rd);
		CU_ASSERT_EQUAL_FATAL(raft_rawnode_advance(s->rn), RAFT_OK);
	}
}

static void forget(solo *s)
{
	for (size_t i = 0; i < s->n_msgs; i++)
		raft_message_free(&s->msgs[i]);
	s->n_msgs = 0;
	s->hard_state_changed = false;
}

static solo *solo_new(const solo_opts *o)
{
	uint64_t peers[RAFT_MAX_VOTERS];
	raft_config c;
	solo *s = calloc(1, sizeof(*s));

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	s->ms = raft_memory_storage_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(s->ms);
	seed_log(s->ms, o->log_terms, o->n_log);
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_set_hard_state(s->ms, &o->hs), RAFT_OK);
	for (size_t i = 0; i < o->n; i++)
		peers[i] = i + 1;
	raft_config_init(&c);
	c.id = o->id;
	c.peers = peers;
	c.n_peers = o->n;
	c.election_tick = ELECTION;
	c.heartbeat_tick = 1;
	c.storage = raft_memory_storage_interface(s->ms);
	c.pre_vote = o->pre_vote;
	c.check_quorum = o->check_quorum;
	c.seed = 42;
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_new(&c, &s->rn), RAFT_OK);
	drain(s);
	forget(s);
	return s;
}

static void solo_free(solo *s)
{
	forget(s);
	raft_rawnode_free(s->rn);
	raft_memory_storage_free(s->ms);
	free(s);
}

static raft_status solo_status(solo *s)
{
	raft_status st;
	raft_rawnode_status(s->rn, &st);
	return st;
}

static raft_message msg(int type, uint64_t from, uint64_t to, uint64_t term)
{
	raft_message m;
	memset(&m, 0, sizeof(m));
	m.type = type;
	m.from = from;
	m.to = to;
	m.term = term;
	return m;
}

/* Steps m; afterwards the captured messages are exactly what this step produced. */
static void solo_step(solo *s, const raft_message *m)
{
	forget(s);
	CU_ASSERT_EQUAL(raft_rawnode_step(s->rn, m), RAFT_OK);
	drain(s);
}

static void solo_tick(solo *s, int ticks)
{
	forget(s);
	for (int i = 0; i < ticks; i++) {
		CU_ASSERT_EQUAL(raft_rawnode_tick(s->rn), RAFT_OK);
		drain(s);
	}
}

static void solo_campaign(solo *s)
{
	forget(s);
	CU_ASSERT_EQUAL(raft_rawnode_campaign(s->rn), RAFT_OK);
	drain(s);
}

static void solo_read(solo *s, uint64_t ctx)
{
	forget(s);
	CU_ASSERT_EQUAL(raft_rawnode_read_index(s->rn, ctx), RAFT_OK);
	drain(s);
}

/* The last captured message of type to `to` (0 = anyone), or NULL. */
static const raft_message *find_msg(const solo *s, int type, uint64_t to)
{
	const raft_message *found = NULL;
	for (size_t i = 0; i < s->n_msgs; i++)
		if (s->msgs[i].type == type && (to == 0 || s->msgs[i].to == to))
			found = &s->msgs[i];
	return found;
}

static size_t count_msgs(const solo *s, int type)
{
	size_t n = 0;
	for (size_t i = 0; i < s->n_msgs; i++)
		n += s->msgs[i].type == type;
	return n;
}

/* A vote or pre-vote answer from `from`; term is the term the answer carries. */
static void solo_vote_reply(solo *s, int type, uint64_t from, uint64_t term, bool reject)
{
	raft_message m = msg(type, from, solo_status(s).id, term);
	m.reject = reject;
	solo_step(s, &m);
}

/* Grants from the other voters, one by one, until the node changes role. */
static void grant_until_role_change(solo *s, int type, uint64_t term, size_t n)
{
	raft_status st = solo_status(s);
	for (uint64_t id = 1; id <= n && solo_status(s).role == st.role; id++)
		if (id != st.id)
			solo_vote_reply(s, type, id, term, false);
}

/* Makes the node leader through a (pre-)election in which only the needed voters answer. */
static void solo_elect(solo *s, size_t n)
{
	uint64_t before = solo_status(s).term;

	solo_campaign(s);
	if (solo_status(s).role == RAFT_PRE_CANDIDATE)
		grant_until_role_change(s, RAFT_MSG_PRE_VOTE_RESPONSE, before + 1, n);
	if (solo_status(s).role == RAFT_CANDIDATE)
		grant_until_role_change(s, RAFT_MSG_REQUEST_VOTE_RESPONSE, before + 1, n);
	CU_ASSERT_EQUAL_FATAL(solo_status(s).role, RAFT_LEADER);
	CU_ASSERT_EQUAL_FATAL(solo_status(s).term, before + 1);
}

/* `from` acknowledges the leader's whole log. */
static void solo_ack_log(solo *s, uint64_t from)
{
	raft_status st = solo_status(s);
	raft_message m = msg(RAFT_MSG_APPEND_RESPONSE, from, st.id, st.term);
	m.index = st.last_index;
	solo_step(s, &m);
}

/* A leader of term 1 whose empty entry is committed by acks from a bare majority of voters. */
static solo *solo_committed_leader(size_t n)
{
	solo *s = solo_new(&(solo_opts){.id = 1, .n = n});
	solo_elect(s, n);
	solo_ack_log(s, 2);
	if (n > 3)
		solo_ack_log(s, 3);
	CU_ASSERT_EQUAL_FATAL(solo_status(s).commit, solo_status(s).last_index);
	return s;
}

/* Context of the last captured HEARTBEAT to `to`; asserts there is one. */
static uint64_t heartbeat_ctx(const solo *s, uint64_t to)
{
	const raft_message *hb = find_msg(s, RAFT_MSG_HEARTBEAT, to);
	CU_ASSERT_PTR_NOT_NULL_FATAL(hb);
	return hb->context;
}

static void solo_heartbeat_ack(solo *s, uint64_t from, uint64_t ctx)
{
	raft_status st = solo_status(s);
	raft_message m = msg(RAFT_MSG_HEARTBEAT_RESPONSE, from, st.id, st.term);
	m.context = ctx;
	solo_step(s, &m);
}

/* Every voter in 2..n answers the heartbeat it was last sent, if any. */
static void solo_ack_heartbeats(solo *s, size_t n)
{
	uint64_t ctx[RAFT_MAX_VOTERS + 1];
	bool sent[RAFT_MAX_VOTERS + 1];

	for (uint64_t id = 2; id <= n; id++) {
		const raft_message *hb = find_msg(s, RAFT_MSG_HEARTBEAT, id);
		sent[id] = hb != NULL;
		ctx[id] = hb ? hb->context : 0;
	}
	for (uint64_t id = 2; id <= n; id++)
		if (sent[id])
			solo_heartbeat_ack(s, id, ctx[id]);
}

/* A follower (id 1 of 3) of leader 2 at term 2, which just heard a heartbeat. */
static solo *solo_follower_of_2(bool pre_vote, bool check_quorum)
{
	static const uint64_t log[] = {1};
	solo *s = solo_new(&(solo_opts){.id = 1,
	                                .n = 3,
	                                .pre_vote = pre_vote,
	                                .check_quorum = check_quorum,
	                                .hs = {.term = 1},
	                                .log_terms = log,
	                                .n_log = 1});
	raft_message hb = msg(RAFT_MSG_HEARTBEAT, 2, 1, 2);
	solo_step(s, &hb);
	CU_ASSERT_EQUAL_FATAL(solo_status(s).leader, 2);
	CU_ASSERT_EQUAL_FATAL(solo_status(s).term, 2);
	return s;
}

static raft_message vote_request(int type, uint64_t from, uint64_t term, uint64_t log_term,
                                 uint64_t index)
{
	raft_message m = msg(type, from, 1, term);
	m.log_term = log_term;
	m.index = index;
	return m;
}

/* ------------------------------------------------------------------------------------------ */
/* Netsim helpers                                                                             */
/* ------------------------------------------------------------------------------------------ */

static netsim *cluster(size_t n, bool pre_vote, bool check_quorum)
{
	netsim_options o;
	memset(&o, 0, sizeof(o));
	o.n = n;
	o.election_tick = ELECTION;
	o.heartbeat_tick = 1;
	o.pre_vote = pre_vote;
	o.check_quorum = check_quorum;
	o.seed = 7;
	return netsim_new(&o);
}

/* The configuration the store runs with. */
static netsim *store_cluster(size_t n)
{
	return cluster(n, true, true);
}

static void elect(netsim *ns, uint64_t id)
{
	netsim_campaign(ns, id);
	CU_ASSERT_EQUAL_FATAL(netsim_leader(ns), id);
}

static void run_ticks(netsim *ns, int ticks)
{
	for (int i = 0; i < ticks; i++) {
		netsim_tick_all(ns);
		netsim_stabilize(ns);
	}
}

static uint64_t ns_term(netsim *ns, uint64_t id)
{
	return netsim_status(ns, id).term;
}

static int ns_role(netsim *ns, uint64_t id)
{
	return netsim_status(ns, id).role;
}

static const raft_peer_status *peer_of(const raft_status *st, uint64_t id)
{
	for (size_t i = 0; i < st->n_peers; i++)
		if (st->peers[i].id == id)
			return &st->peers[i];
	CU_FAIL_FATAL("peer missing from status");
	return NULL;
}

static void propose_ok(netsim *ns, uint64_t id, const char *data)
{
	CU_ASSERT_EQUAL(netsim_propose(ns, id, data, strlen(data)), RAFT_OK);
}

static bool applied_data(netsim *ns, uint64_t id, const char *data)
{
	size_t n, len = strlen(data);
	const netsim_applied *a = netsim_applied_list(ns, id, &n);
	for (size_t i = 0; i < n; i++)
		if (a[i].type == RAFT_ENTRY_NORMAL && a[i].len == len &&
		    memcmp(a[i].data, data, len) == 0)
			return true;
	return false;
}

static const raft_read_state *find_read(netsim *ns, uint64_t id, uint64_t ctx)
{
	size_t n;
	const raft_read_state *rs = netsim_read_states(ns, id, &n);
	for (size_t i = 0; i < n; i++)
		if (rs[i].context == ctx)
			return &rs[i];
	return NULL;
}

/* Ticks until a leader is known by every node at one term; returns it (0 if none). */
static uint64_t settle(netsim *ns, size_t n, int max_ticks)
{
	for (int i = 0; i < max_ticks; i++) {
		uint64_t lead = netsim_leader(ns);
		bool agreed = lead != 0;
		for (uint64_t id = 1; id <= n && agreed; id++) {
			raft_status st = netsim_status(ns, id);
			agreed = st.leader == lead && st.term == ns_term(ns, lead);
		}
		if (agreed)
			return lead;
		run_ticks(ns, 1);
	}
	return 0;
}

static void transfer(netsim *ns, uint64_t on, uint64_t target)
{
	CU_ASSERT_EQUAL(raft_rawnode_transfer_leader(netsim_node(ns, on), target), RAFT_OK);
	netsim_stabilize(ns);
}

/* A message log kept by the netsim hook, plus the state of both ends at the first TIMEOUT_NOW. */
typedef struct recorder {
	raft_message recs[MAX_RECORDS]; /* shallow: entries and snapshot data dropped */
	size_t n;
	bool saw_timeout_now;
	raft_status tn_sender;
	raft_status tn_target;
} recorder;

static int record_hook(void *ctx, netsim *ns, raft_message *m)
{
	recorder *r = ctx;
	if (r->n < MAX_RECORDS) {
		raft_message *copy = &r->recs[r->n++];
		*copy = *m;
		copy->entries = NULL;
		copy->snapshot.data = NULL;
	}
	if (m->type == RAFT_MSG_TIMEOUT_NOW && !r->saw_timeout_now) {
		r->saw_timeout_now = true;
		r->tn_sender = netsim_status(ns, m->from);
		r->tn_target = netsim_status(ns, m->to);
	}
	return 1;
}

static recorder *record(netsim *ns)
{
	recorder *r = calloc(1, sizeof(*r));
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	netsim_set_hook(ns, record_hook, r);
	return r;
}

static void stop_recording(netsim *ns, recorder *r)
{
	netsim_set_hook(ns, NULL, NULL);
	free(r);
}

/* Delivered messages of type from `from` to `to` (0 = any). */
static size_t rec_count(const recorder *r, int type, uint64_t from, uint64_t to)
{
	size_t n = 0;
	for (size_t i = 0; i < r->n; i++)
		n += r->recs[i].type == type && (from == 0 || r->recs[i].from == from) &&
		     (to == 0 || r->recs[i].to == to);
	return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Pre-vote                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void test_prevote_isolated_node_keeps_term(void)
{
	netsim *ns = cluster(3, true, false);
	elect(ns, 1);
	uint64_t term = ns_term(ns, 1);

	netsim_isolate(ns, 3);
	for (int round = 0; round < 5; round++) {
		run_ticks(ns, 2 * ELECTION);
		CU_ASSERT_EQUAL(ns_term(ns, 3), term);
		CU_ASSERT_EQUAL(ns_role(ns, 3), RAFT_PRE_CANDIDATE);
	}
	CU_ASSERT_EQUAL(netsim_leader(ns), 1);
	CU_ASSERT_EQUAL(ns_term(ns, 1), term);
	netsim_free(ns);
}

static void test_prevote_rejoin_does_not_depose_leader(void)
{
	netsim *ns = cluster(3, true, false);
	elect(ns, 1);
	uint64_t term = ns_term(ns, 1);

	netsim_isolate(ns, 3);
	propose_ok(ns, 1, "while-away");
	run_ticks(ns, 3 * ELECTION);
	netsim_recover(ns);
	run_ticks(ns, 3 * ELECTION);

	CU_ASSERT_EQUAL(netsim_leader(ns), 1);
	for (uint64_t id = 1; id <= 3; id++)
		CU_ASSERT_EQUAL(ns_term(ns, id), term);
	CU_ASSERT_EQUAL(ns_role(ns, 3), RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).leader, 1);
	CU_ASSERT(applied_data(ns, 3, "while-away"));
	netsim_free(ns);
}

/* With an equal log only the lease stops the pre-vote; the store runs with both switches. */
static void test_prevote_rejoin_equal_log_with_check_quorum(void)
{
	netsim *ns = store_cluster(3);
	elect(ns, 1);
	uint64_t term = ns_term(ns, 1);

	netsim_isolate(ns, 3);
	run_ticks(ns, 3 * ELECTION);
	netsim_recover(ns);
	netsim_campaign(ns, 3);
	CU_ASSERT_EQUAL(ns_role(ns, 1), RAFT_LEADER);
	for (uint64_t id = 1; id <= 3; id++)
		CU_ASSERT_EQUAL(ns_term(ns, id), term);

	run_ticks(ns, 2 * ELECTION);
	CU_ASSERT_EQUAL(netsim_leader(ns), 1);
	CU_ASSERT_EQUAL(ns_term(ns, 1), term);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).leader, 1);
	netsim_free(ns);
}

static void test_prevote_never_changes_voter_term(void)
{
	static const uint64_t log[] = {1, 2};
	solo *s = solo_new(&(solo_opts){.id = 1,
	                                .n = 3,
	                                .pre_vote = true,
	                                .hs = {.term = 2, .vote = 3},
	                                .log_terms = log,
	                                .n_log = 2});
	raft_message m = vote_request(RAFT_MSG_PRE_VOTE, 2, 3, 2, 2);
	solo_step(s, &m);

	const raft_message *r = find_msg(s, RAFT_MSG_PRE_VOTE_RESPONSE, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_FALSE(r->reject);
	CU_ASSERT_EQUAL(r->term, 3);
	raft_status st = solo_status(s);
	CU_ASSERT_EQUAL(st.term, 2);
	CU_ASSERT_EQUAL(st.vote, 3);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	CU_ASSERT_FALSE(s->hard_state_changed);
	solo_free(s);
}

static solo *precandidate_of_5(void)
{
	static const uint64_t log[] = {1};
	solo *s = solo_new(&(solo_opts){
	    .id = 1, .n = 5, .pre_vote = true, .hs = {.term = 1}, .log_terms = log, .n_log = 1});
	solo_campaign(s);
	CU_ASSERT_EQUAL_FATAL(solo_status(s).role, RAFT_PRE_CANDIDATE);
	return s;
}

static void test_prevote_requests_next_term_without_raising_own(void)
{
	solo *s = precandidate_of_5();

	CU_ASSERT_EQUAL(solo_status(s).term, 1);
	CU_ASSERT_EQUAL(count_msgs(s, RAFT_MSG_PRE_VOTE), 4);
	CU_ASSERT_EQUAL(count_msgs(s, RAFT_MSG_REQUEST_VOTE), 0);
	for (size_t i = 0; i < s->n_msgs; i++) {
		if (s->msgs[i].type != RAFT_MSG_PRE_VOTE)
			continue;
		CU_ASSERT_EQUAL(s->msgs[i].term, 2);
		CU_ASSERT_EQUAL(s->msgs[i].log_term, 1);
		CU_ASSERT_EQUAL(s->msgs[i].index, 1);
	}
	solo_free(s);
}

static void test_prevote_granted_future_term_does_not_demote(void)
{
	solo *s = precandidate_of_5();

	solo_vote_reply(s, RAFT_MSG_PRE_VOTE_RESPONSE, 2, 2, false);
	CU_ASSERT_EQUAL(solo_status(s).role, RAFT_PRE_CANDIDATE);
	CU_ASSERT_EQUAL(solo_status(s).term, 1);
	CU_ASSERT_EQUAL(count_msgs(s, RAFT_MSG_REQUEST_VOTE), 0);

	solo_vote_reply(s, RAFT_MSG_PRE_VOTE_RESPONSE, 3, 2, false);
	CU_ASSERT_EQUAL(solo_status(s).role, RAFT_CANDIDATE);
	CU_ASSERT_EQUAL(solo_status(s).term, 2);
	CU_ASSERT_EQUAL(solo_status(s).vote, 1);
	CU_ASSERT_EQUAL(count_msgs(s, RAFT_MSG_REQUEST_VOTE), 4);
	const raft_message *rv = find_msg(s, RAFT_MSG_REQUEST_VOTE, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rv);
	CU_ASSERT_EQUAL(rv->term, 2);
	CU_ASSERT_NOT_EQUAL(rv->context, RAFT_CONTEXT_TRANSFER);
	solo_free(s);
}

static void test_prevote_majority_rejection_reverts_to_follower(void)
{
	solo *s = precandidate_of_5();

	solo_vote_reply(s, RAFT_MSG_PRE_VOTE_RESPONSE, 2, 1, true);
	solo_vote_reply(s, RAFT_MSG_PRE_VOTE_RESPONSE, 3, 1, true);
	CU_ASSERT_EQUAL(solo_status(s).role, RAFT_PRE_CANDIDATE);
	solo_vote_reply(s, RAFT_MSG_PRE_VOTE_RESPONSE, 4, 1, true);
	CU_ASSERT_EQUAL(solo_status(s).role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(solo_status(s).term, 1);
	solo_free(s);
}

static void test_prevote_rejection_with_higher_term_demotes(void)
{
	solo *s = precandidate_of_5();

	solo_vote_reply(s, RAFT_MSG_PRE_VOTE_RESPONSE, 2, 4, true);
	CU_ASSERT_EQUAL(solo_status(s).role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(solo_status(s).term, 4);
	CU_ASSERT_EQUAL(solo_status(s).leader, 0);
	solo_free(s);
}

static void test_prevote_lower_term_gets_explicit_rejection(void)
{
	static const uint64_t log[] = {1, 1};
	solo *s = solo_new(&(solo_opts){
	    .id = 1, .n = 3, .pre_vote = true, .hs = {.term = 5}, .log_terms = log, .n_log = 2});
	raft_message m = vote_request(RAFT_MSG_PRE_VOTE, 2, 3, 1, 2);
	solo_step(s, &m);

	const raft_message *r = find_msg(s, RAFT_MSG_PRE_VOTE_RESPONSE, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_TRUE(r->reject);
	CU_ASSERT_EQUAL(r->term, 5);
	CU_ASSERT_EQUAL(solo_status(s).term, 5);
	solo_free(s);
}

static void test_prevote_respects_log_up_to_date(void)
{
	static const uint64_t log[] = {1, 1, 2};
	static const struct {
		uint64_t log_term, index;
		bool reject;
	} cases[] = {
	    {1, 5, true},  /* longer log, older last term */
	    {2, 2, true},  /* same last term, shorter */
	    {2, 3, false}, /* identical */
	    {2, 4, false}, /* same last term, longer */
	    {3, 1, false}, /* newer last term */
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		solo *s = solo_new(&(solo_opts){.id = 1,
		                                .n = 3,
		                                .pre_vote = true,
		                                .hs = {.term = 2},
		                                .log_terms = log,
		                                .n_log = 3});
		raft_message m =
		    vote_request(RAFT_MSG_PRE_VOTE, 2, 3, cases[i].log_term, cases[i].index);
		solo_step(s, &m);
		const raft_message *r = find_msg(s, RAFT_MSG_PRE_VOTE_RESPONSE, 2);
		CU_ASSERT_PTR_NOT_NULL_FATAL(r);
		CU_ASSERT_EQUAL(r->reject, cases[i].reject);
		CU_ASSERT_EQUAL(solo_status(s).term, 2);
		CU_ASSERT_EQUAL(solo_status(s).vote, 0);
		solo_free(s);
	}
}

static void test_prevote_stale_log_cannot_win(void)
{
	netsim *ns = cluster(3, true, false);
	elect(ns, 1);
	uint64_t term = ns_term(ns, 1);

	netsim_isolate(ns, 3);
	propose_ok(ns, 1, "x");
	propose_ok(ns, 1, "y");
	netsim_recover(ns);
	netsim_isolate(ns, 1);
	netsim_campaign(ns, 3);
	CU_ASSERT_NOT_EQUAL(ns_role(ns, 3), RAFT_LEADER);
	CU_ASSERT_NOT_EQUAL(ns_role(ns, 3), RAFT_CANDIDATE);
	CU_ASSERT_EQUAL(ns_term(ns, 3), term);
	CU_ASSERT_EQUAL(ns_term(ns, 2), term);

	netsim_campaign(ns, 2);
	CU_ASSERT_EQUAL(netsim_leader(ns), 2);
	CU_ASSERT_EQUAL(ns_term(ns, 2), term + 1);
	propose_ok(ns, 2, "z");
	CU_ASSERT(applied_data(ns, 3, "y"));
	CU_ASSERT(applied_data(ns, 3, "z"));
	netsim_free(ns);
}

static void test_prevote_single_node_elects_at_once(void)
{
	netsim *ns = cluster(1, true, true);
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL(ns_role(ns, 1), RAFT_LEADER);
	CU_ASSERT_EQUAL(ns_term(ns, 1), 1);
	netsim_free(ns);
}

/* ------------------------------------------------------------------------------------------ */
/* Check-quorum, the leader lease and the term rules                                          */
/* ------------------------------------------------------------------------------------------ */

static void test_cq_isolated_leader_steps_down(void)
{
	netsim *ns = store_cluster(3);
	elect(ns, 1);

	netsim_isolate(ns, 1);
	run_ticks(ns, ELECTION - 1);
	CU_ASSERT_EQUAL(ns_role(ns, 1), RAFT_LEADER);
	run_ticks(ns, ELECTION + 1);
	CU_ASSERT_EQUAL(ns_role(ns, 1), RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).leader, 0);
	uint64_t lead = netsim_leader(ns);
	CU_ASSERT(lead == 2 || lead == 3);
	netsim_free(ns);
}

static void test_cq_leader_steps_down_after_exactly_one_timeout(void)
{
	solo *s = solo_new(&(solo_opts){.id = 1, .n = 3, .check_quorum = true});
	solo_elect(s, 3);
	uint64_t term = solo_status(s).term;

	solo_tick(s, ELECTION - 1);
	CU_ASSERT_EQUAL(solo_status(s).role, RAFT_LEADER);
	solo_tick(s, 1);
	CU_ASSERT_EQUAL(solo_status(s).role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(solo_status(s).term, term);
	CU_ASSERT_EQUAL(solo_status(s).leader, 0);
	solo_free(s);
}

static void test_cq_leader_in_contact_stays(void)
{
	solo *s = solo_new(&(solo_opts){.id = 1, .n = 3, .check_quorum = true});
	solo_elect(s, 3);
	uint64_t term = solo_status(s).term;

	for (int i = 0; i < 4 * ELECTION; i++) {
		solo_tick(s, 1);
		solo_heartbeat_ack(s, 2, heartbeat_ctx(s, 2));
	}
	CU_ASSERT_EQUAL(solo_status(s).role, RAFT_LEADER);
	CU_ASSERT_EQUAL(solo_status(s).term, term);
	solo_free(s);
}

static void test_cq_majority_side_leader_stays(void)
{
	netsim *ns = store_cluster(5);
	elect(ns, 1);
	uint64_t term = ns_term(ns, 1);

	netsim_isolate(ns, 4);
	netsim_isolate(ns, 5);
	run_ticks(ns, 5 * ELECTION);
	CU_ASSERT_EQUAL(netsim_leader(ns), 1);
	CU_ASSERT_EQUAL(ns_term(ns, 1), term);
	propose_ok(ns, 1, "still-serving");
	CU_ASSERT(applied_data(ns, 3, "still-serving"));
	netsim_free(ns);
}

static void assert_lease_ignores(int type, bool pre_vote)
{
	solo *s = solo_follower_of_2(pre_vote, true);
	raft_message m = vote_request(type, 3, 3, 1, 1);
	solo_step(s, &m);

	CU_ASSERT_EQUAL(s->n_msgs, 0);
	raft_status st = solo_status(s);
	CU_ASSERT_EQUAL(st.term, 2);
	CU_ASSERT_EQUAL(st.leader, 2);
	CU_ASSERT_EQUAL(st.vote, 0);
	solo_free(s);
}

static void test_cq_lease_ignores_request_vote(void)
{
	assert_lease_ignores(RAFT_MSG_REQUEST_VOTE, false);
}

static void test_cq_lease_ignores_pre_vote(void)
{
	assert_lease_ignores(RAFT_MSG_PRE_VOTE, true);
}

static void test_cq_transfer_mark_bypasses_lease(void)
{
	solo *s = solo_follower_of_2(true, true);
	raft_message m = vote_request(RAFT_MSG_REQUEST_VOTE, 3, 3, 1, 1);
	m.context = RAFT_CONTEXT_TRANSFER;
	solo_step(s, &m);

	raft_status st = solo_status(s);
	CU_ASSERT_EQUAL(st.term, 3);
	CU_ASSERT_EQUAL(st.vote, 3);
	CU_ASSERT_EQUAL(st.leader, 0);
	const raft_message *r = find_msg(s, RAFT_MSG_REQUEST_VOTE_RESPONSE, 3);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_FALSE(r->reject);
	CU_ASSERT_EQUAL(r->term, 3);
	CU_ASSERT_TRUE(s->after_persist[r - s->msgs]);
	solo_free(s);
}

static void test_cq_no_lease_without_known_leader(void)
{
	static const uint64_t log[] = {1};
	solo *s = solo_new(&(solo_opts){.id = 1,
	                                .n = 3,
	                                .check_quorum = true,
	                                .hs = {.term = 2},
	                                .log_terms = log,
	                                .n_log = 1});
	raft_message m = vote_request(RAFT_MSG_REQUEST_VOTE, 3, 3, 1, 1);
	solo_step(s, &m);

	CU_ASSERT_EQUAL(solo_status(s).term, 3);
	CU_ASSERT_EQUAL(solo_status(s).vote, 3);
	const raft_message *r = find_msg(s, RAFT_MSG_REQUEST_VOTE_RESPONSE, 3);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_FALSE(r->reject);
	solo_free(s);
}

static void test_cq_rejoining_higher_term_node_cannot_disrupt(void)
{
	netsim *ns = cluster(3, false, true);
	elect(ns, 1);
	uint64_t term = ns_term(ns, 1);

	netsim_isolate(ns, 3);
	propose_ok(ns, 1, "before");
	run_ticks(ns, 3 * ELECTION);
	CU_ASSERT_FATAL(ns_term(ns, 3) > term);

	netsim_recover(ns);
	netsim_campaign(ns, 3);
	CU_ASSERT_EQUAL(ns_role(ns, 1), RAFT_LEADER);
	CU_ASSERT_EQUAL(ns_term(ns, 1), term);
	CU_ASSERT_EQUAL(ns_term(ns, 2), term);
	CU_ASSERT_EQUAL(netsim_status(ns, 2).leader, 1);
	CU_ASSERT_NOT_EQUAL(netsim_status(ns, 2).vote, 3);

	uint64_t lead = settle(ns, 3, 20 * ELECTION);
	CU_ASSERT_FATAL(lead == 1 || lead == 2);
	propose_ok(ns, lead, "after");
	for (uint64_t id = 1; id <= 3; id++) {
		CU_ASSERT(applied_data(ns, id, "before"));
		CU_ASSERT(applied_data(ns, id, "after"));
	}
	netsim_free(ns);
}

static void test_term_lower_append_and_heartbeat_get_reply(void)
{
	static const uint64_t log[] = {1};
	static const int types[] = {RAFT_MSG_APPEND, RAFT_MSG_HEARTBEAT};
	for (size_t i = 0; i < ARRAY_LEN(types); i++) {
		solo *s = solo_new(&(solo_opts){.id = 1,
		                                .n = 3,
		                                .pre_vote = true,
		                                .check_quorum = true,
		                                .hs = {.term = 5},
		                                .log_terms = log,
		                                .n_log = 1});
		raft_message m = msg(types[i], 2, 1, 3);
		m.log_term = 1;
		m.index = 1;
		solo_step(s, &m);

		CU_ASSERT_EQUAL(s->n_msgs, 1);
		CU_ASSERT_EQUAL(s->msgs[0].to, 2);
		CU_ASSERT_EQUAL(s->msgs[0].term, 5);
		CU_ASSERT_EQUAL(solo_status(s).term, 5);
		CU_ASSERT_EQUAL(solo_status(s).leader, 0);
		solo_free(s);
	}
}

static void test_term_stale_leader_steps_down_on_reply(void)
{
	solo *s = solo_new(&(solo_opts){.id = 1, .n = 3, .pre_vote = true, .check_quorum = true});
	solo_elect(s, 3);
	raft_message m = msg(RAFT_MSG_APPEND_RESPONSE, 2, 1, 7);
	solo_step(s, &m);

	CU_ASSERT_EQUAL(solo_status(s).role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(solo_status(s).term, 7);
	CU_ASSERT_EQUAL(solo_status(s).leader, 0);
	solo_free(s);
}

static void test_term_lower_term_other_messages_dropped(void)
{
	static const uint64_t log[] = {1};
	solo *s = solo_new(
	    &(solo_opts){.id = 1, .n = 3, .hs = {.term = 5}, .log_terms = log, .n_log = 1});
	raft_message vote = vote_request(RAFT_MSG_REQUEST_VOTE, 2, 3, 1, 1);
	solo_step(s, &vote);
	CU_ASSERT_EQUAL(s->n_msgs, 0);

	raft_message resp = msg(RAFT_MSG_APPEND_RESPONSE, 2, 1, 4);
	resp.index = 1;
	solo_step(s, &resp);
	CU_ASSERT_EQUAL(s->n_msgs, 0);

	raft_status st = solo_status(s);
	CU_ASSERT_EQUAL(st.term, 5);
	CU_ASSERT_EQUAL(st.vote, 0);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	solo_free(s);
}

static void test_term_higher_term_sets_leader_only_from_leader_messages(void)
{
	static const uint64_t log[] = {1};
	solo *s = solo_new(
	    &(solo_opts){.id = 1, .n = 3, .hs = {.term = 1}, .log_terms = log, .n_log = 1});
	raft_message hb = msg(RAFT_MSG_HEARTBEAT, 2, 1, 2);
	solo_step(s, &hb);
	CU_ASSERT_EQUAL(solo_status(s).term, 2);
	CU_ASSERT_EQUAL(solo_status(s).leader, 2);

	raft_message vote = vote_request(RAFT_MSG_REQUEST_VOTE, 3, 3, 1, 1);
	solo_step(s, &vote);
	CU_ASSERT_EQUAL(solo_status(s).term, 3);
	CU_ASSERT_EQUAL(solo_status(s).leader, 0);

	raft_message app = msg(RAFT_MSG_APPEND, 2, 1, 4);
	app.log_term = 1;
	app.index = 1;
	solo_step(s, &app);
	CU_ASSERT_EQUAL(solo_status(s).term, 4);
	CU_ASSERT_EQUAL(solo_status(s).leader, 2);
	CU_ASSERT_EQUAL(solo_status(s).role, RAFT_FOLLOWER);
	solo_free(s);
}

static void test_term_zero_message_is_local(void)
{
	solo *s = solo_follower_of_2(true, true);
	raft_entry ent = {.type = RAFT_ENTRY_NORMAL, .data = "p", .len = 1};
	raft_message m = msg(RAFT_MSG_PROPOSE, 1, 0, 0);
	m.entries = &ent;
	m.n_entries = 1;
	solo_step(s, &m);

	const raft_message *fwd = find_msg(s, RAFT_MSG_PROPOSE, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(fwd);
	CU_ASSERT_EQUAL_FATAL(fwd->n_entries, 1);
	CU_ASSERT_EQUAL(fwd->entries[0].len, 1);
	CU_ASSERT_EQUAL(solo_status(s).term, 2);
	CU_ASSERT_EQUAL(solo_status(s).leader, 2);
	solo_free(s);
}

static void test_report_unreachable_moves_replicate_to_probe(void)
{
	solo *s = solo_new(&(solo_opts){.id = 1, .n = 3});
	solo_elect(s, 3);
	solo_ack_log(s, 2);
	raft_status st = solo_status(s);
	CU_ASSERT_EQUAL_FATAL(peer_of(&st, 2)->state, RAFT_PROGRESS_REPLICATE);
	CU_ASSERT_EQUAL(peer_of(&st, 3)->state, RAFT_PROGRESS_PROBE);

	CU_ASSERT_EQUAL(raft_rawnode_report_unreachable(s->rn, 2), RAFT_OK);
	CU_ASSERT_EQUAL(raft_rawnode_report_unreachable(s->rn, 3), RAFT_OK);
	st = solo_status(s);
	CU_ASSERT_EQUAL(peer_of(&st, 2)->state, RAFT_PROGRESS_PROBE);
	CU_ASSERT_EQUAL(peer_of(&st, 2)->match, st.last_index);
	CU_ASSERT_EQUAL(peer_of(&st, 2)->next, st.last_index + 1);
	CU_ASSERT_EQUAL(peer_of(&st, 3)->state, RAFT_PROGRESS_PROBE);
	CU_ASSERT_EQUAL(st.role, RAFT_LEADER);
	solo_free(s);
}

/* ------------------------------------------------------------------------------------------ */
/* Leadership transfer (pre-vote and check-quorum on)                                         */
/* ------------------------------------------------------------------------------------------ */

static void test_transfer_to_up_to_date_follower(void)
{
	netsim *ns = store_cluster(3);
	elect(ns, 1);
	run_ticks(ns, 1);
	uint64_t term = ns_term(ns, 1);
	recorder *r = record(ns);

	transfer(ns, 1, 2);
	CU_ASSERT_EQUAL(netsim_leader(ns), 2);
	CU_ASSERT_EQUAL(ns_term(ns, 2), term + 1);
	CU_ASSERT_EQUAL(ns_role(ns, 1), RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).leader, 2);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).leader, 2);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).lead_transferee, 0);
	CU_ASSERT_EQUAL(rec_count(r, RAFT_MSG_TIMEOUT_NOW, 1, 2), 1);
	/* node 3 holds a lease from node 1 and still answers the marked request */
	CU_ASSERT_EQUAL(rec_count(r, RAFT_MSG_REQUEST_VOTE_RESPONSE, 3, 2), 1);
	stop_recording(ns, r);

	propose_ok(ns, 2, "new-leader");
	CU_ASSERT(applied_data(ns, 3, "new-leader"));
	netsim_free(ns);
}

static void test_transfer_target_skips_prevote_and_marks_votes(void)
{
	netsim *ns = store_cluster(3);
	elect(ns, 1);
	run_ticks(ns, 1);
	uint64_t term = ns_term(ns, 1);
	recorder *r = record(ns);

	transfer(ns, 1, 3);
	CU_ASSERT_EQUAL(netsim_leader(ns), 3);
	CU_ASSERT_EQUAL(rec_count(r, RAFT_MSG_PRE_VOTE, 3, 0), 0);
	CU_ASSERT_EQUAL(rec_count(r, RAFT_MSG_REQUEST_VOTE, 3, 0), 2);
	for (size_t i = 0; i < r->n; i++) {
		if (r->recs[i].type != RAFT_MSG_REQUEST_VOTE)
			continue;
		CU_ASSERT_EQUAL(r->recs[i].context, RAFT_CONTEXT_TRANSFER);
		CU_ASSERT_EQUAL(r->recs[i].term, term + 1);
	}
	stop_recording(ns, r);
	netsim_free(ns);
}

static void test_transfer_timeout_now_campaigns_at_once(void)
{
	static const uint64_t log[] = {1};
	solo *s = solo_new(&(solo_opts){.id = 2,
	                                .n = 3,
	                                .pre_vote = true,
	                                .check_quorum = true,
	                                .hs = {.term = 1},
	                                .log_terms = log,
	                                .n_log = 1});
	raft_message hb = msg(RAFT_MSG_HEARTBEAT, 1, 2, 1);
	solo_step(s, &hb);
	raft_message tn = msg(RAFT_MSG_TIMEOUT_NOW, 1, 2, 1);
	solo_step(s, &tn);

	CU_ASSERT_EQUAL(solo_status(s).role, RAFT_CANDIDATE);
	CU_ASSERT_EQUAL(solo_status(s).term, 2);
	CU_ASSERT_EQUAL(count_msgs(s, RAFT_MSG_PRE_VOTE), 0);
	CU_ASSERT_EQUAL(count_msgs(s, RAFT_MSG_REQUEST_VOTE), 2);
	for (size_t i = 0; i < s->n_msgs; i++)
		if (s->msgs[i].type == RAFT_MSG_REQUEST_VOTE)
			CU_ASSERT_EQUAL(s->msgs[i].context, RAFT_CONTEXT_TRANSFER);
	solo_free(s);
}

static void test_transfer_to_lagging_follower_catches_up_first(void)
{
	netsim *ns = store_cluster(3);
	elect(ns, 1);
	uint64_t term = ns_term(ns, 1);

	netsim_isolate(ns, 3);
	propose_ok(ns, 1, "a");
	propose_ok(ns, 1, "b");
	propose_ok(ns, 1, "c");
	netsim_recover(ns);
	CU_ASSERT_FATAL(netsim_status(ns, 3).last_index < netsim_status(ns, 1).last_index);

	recorder *r = record(ns);
	transfer(ns, 1, 3);
	for (int i = 0; i < ELECTION / 2 && netsim_leader(ns) != 3; i++)
		run_ticks(ns, 1);
	CU_ASSERT_EQUAL(netsim_leader(ns), 3);
	CU_ASSERT(ns_term(ns, 3) > term);
	CU_ASSERT_FATAL(r->saw_timeout_now);
	CU_ASSERT_EQUAL(peer_of(&r->tn_sender, 3)->match, r->tn_sender.last_index);
	CU_ASSERT_EQUAL(r->tn_target.last_index, r->tn_sender.last_index);
	stop_recording(ns, r);
	CU_ASSERT(applied_data(ns, 3, "c"));
	netsim_free(ns);
}

/* Leader 1 with a transfer to an isolated node 3 pending; returns the leader's term. */
static uint64_t pending_transfer_to_isolated(netsim *ns)
{
	elect(ns, 1);
	uint64_t term = ns_term(ns, 1);
	netsim_isolate(ns, 3);
	transfer(ns, 1, 3);
	CU_ASSERT_EQUAL_FATAL(netsim_status(ns, 1).lead_transferee, 3);
	CU_ASSERT_EQUAL_FATAL(ns_role(ns, 1), RAFT_LEADER);
	return term;
}

static void test_transfer_drops_proposals_while_pending(void)
{
	netsim *ns = store_cluster(3);
	pending_transfer_to_isolated(ns);

	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "dropped", 7), RAFT_ERR_PROPOSAL_DROPPED);
	run_ticks(ns, ELECTION / 2);
	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "dropped", 7), RAFT_ERR_PROPOSAL_DROPPED);
	CU_ASSERT_FALSE(applied_data(ns, 1, "dropped"));
	CU_ASSERT_FALSE(applied_data(ns, 2, "dropped"));
	netsim_free(ns);
}

static void test_transfer_aborts_after_election_timeout(void)
{
	netsim *ns = store_cluster(3);
	uint64_t term = pending_transfer_to_isolated(ns);

	run_ticks(ns, ELECTION - 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).lead_transferee, 3);
	run_ticks(ns, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).lead_transferee, 0);
	CU_ASSERT_EQUAL(ns_role(ns, 1), RAFT_LEADER);
	CU_ASSERT_EQUAL(ns_term(ns, 1), term);
	propose_ok(ns, 1, "accepted");
	CU_ASSERT(applied_data(ns, 2, "accepted"));
	netsim_free(ns);
}

static void test_transfer_to_self_or_unknown_is_ignored(void)
{
	static const uint64_t targets[] = {1, 9};
	netsim *ns = store_cluster(3);
	elect(ns, 1);
	uint64_t term = ns_term(ns, 1);
	recorder *r = record(ns);

	for (size_t i = 0; i < ARRAY_LEN(targets); i++) {
		int rv = raft_rawnode_transfer_leader(netsim_node(ns, 1), targets[i]);
		CU_ASSERT(rv == RAFT_OK || rv == RAFT_ERR_INVALID);
		netsim_stabilize(ns);
		raft_status st = netsim_status(ns, 1);
		CU_ASSERT_EQUAL(st.lead_transferee, 0);
		CU_ASSERT_EQUAL(st.role, RAFT_LEADER);
		CU_ASSERT_EQUAL(st.term, term);
		CU_ASSERT_EQUAL(st.error, RAFT_OK);
	}
	CU_ASSERT_EQUAL(rec_count(r, RAFT_MSG_TIMEOUT_NOW, 0, 0), 0);
	stop_recording(ns, r);
	propose_ok(ns, 1, "still-open");
	CU_ASSERT(applied_data(ns, 2, "still-open"));
	netsim_free(ns);
}

static void test_transfer_forwarded_by_follower(void)
{
	netsim *ns = store_cluster(3);
	elect(ns, 1);
	run_ticks(ns, 1);
	uint64_t term = ns_term(ns, 1);
	recorder *r = record(ns);

	transfer(ns, 3, 3);
	CU_ASSERT_EQUAL(netsim_leader(ns), 3);
	CU_ASSERT_EQUAL(ns_term(ns, 3), term + 1);
	CU_ASSERT(rec_count(r, RAFT_MSG_TRANSFER_LEADER, 0, 1) >= 1);

	run_ticks(ns, 1);
	transfer(ns, 1, 2);
	CU_ASSERT_EQUAL(netsim_leader(ns), 2);
	CU_ASSERT_EQUAL(ns_term(ns, 2), term + 2);
	CU_ASSERT(rec_count(r, RAFT_MSG_TRANSFER_LEADER, 0, 3) >= 1);
	stop_recording(ns, r);
	netsim_free(ns);
}

static void test_transfer_repeated_to_same_target_is_ignored(void)
{
	netsim *ns = store_cluster(3);
	pending_transfer_to_isolated(ns);

	run_ticks(ns, 4);
	transfer(ns, 1, 3);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).lead_transferee, 3);
	/* the deadline still counts from the first request */
	run_ticks(ns, ELECTION - 4 - 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).lead_transferee, 3);
	run_ticks(ns, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).lead_transferee, 0);
	CU_ASSERT_EQUAL(ns_role(ns, 1), RAFT_LEADER);
	netsim_free(ns);
}

static void test_transfer_to_other_target_replaces_pending(void)
{
	netsim *ns = store_cluster(3);
	uint64_t term = pending_transfer_to_isolated(ns);

	CU_ASSERT_EQUAL(raft_rawnode_transfer_leader(netsim_node(ns, 1), 2), RAFT_OK);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).lead_transferee, 2);
	netsim_stabilize(ns);
	CU_ASSERT_EQUAL(netsim_leader(ns), 2);
	CU_ASSERT_EQUAL(ns_term(ns, 2), term + 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).leader, 2);
	netsim_free(ns);
}

/* ------------------------------------------------------------------------------------------ */
/* ReadIndex                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static void test_read_waits_for_heartbeat_quorum(void)
{
	solo *s = solo_committed_leader(5);
	uint64_t commit = solo_status(s).commit;

	solo_read(s, 42);
	CU_ASSERT_EQUAL(s->n_reads, 0);
	uint64_t ctx2 = heartbeat_ctx(s, 2), ctx3 = heartbeat_ctx(s, 3);
	CU_ASSERT_PTR_NOT_NULL(find_msg(s, RAFT_MSG_HEARTBEAT, 4));
	CU_ASSERT_PTR_NOT_NULL(find_msg(s, RAFT_MSG_HEARTBEAT, 5));

	solo_heartbeat_ack(s, 2, ctx2);
	CU_ASSERT_EQUAL(s->n_reads, 0);
	solo_heartbeat_ack(s, 3, ctx3);
	CU_ASSERT_EQUAL_FATAL(s->n_reads, 1);
	CU_ASSERT_EQUAL(s->reads[0].context, 42);
	CU_ASSERT_EQUAL(s->reads[0].index, commit);
	solo_free(s);
}

static void test_read_ignores_ack_of_earlier_heartbeat(void)
{
	solo *s = solo_committed_leader(3);

	solo_tick(s, 1);
	uint64_t before = heartbeat_ctx(s, 2);
	solo_read(s, 7);
	uint64_t after = heartbeat_ctx(s, 2);

	solo_heartbeat_ack(s, 2, before);
	CU_ASSERT_EQUAL(s->n_reads, 0);
	solo_heartbeat_ack(s, 2, after);
	CU_ASSERT_EQUAL_FATAL(s->n_reads, 1);
	CU_ASSERT_EQUAL(s->reads[0].context, 7);
	solo_free(s);
}

/* The old-term entry at index 2 is not committed when the new leader of term 2 takes over: the
 * read waits for the leader's own empty entry, then for a fresh heartbeat quorum. */
static void test_read_waits_for_commit_in_leader_term(void)
{
	static const uint64_t log[] = {1, 1};
	solo *s = solo_new(&(solo_opts){
	    .id = 1, .n = 3, .hs = {.term = 1, .commit = 1}, .log_terms = log, .n_log = 2});
	solo_elect(s, 3);
	uint64_t own = solo_status(s).last_index;

	solo_read(s, 7);
	solo_ack_heartbeats(s, 3);
	solo_tick(s, 1);
	solo_ack_heartbeats(s, 3);
	CU_ASSERT_EQUAL(s->n_reads, 0);
	CU_ASSERT(solo_status(s).commit < own);

	solo_ack_log(s, 2);
	CU_ASSERT_EQUAL_FATAL(solo_status(s).commit, own);
	CU_ASSERT_EQUAL(s->n_reads, 0);
	solo_ack_heartbeats(s, 3);
	CU_ASSERT_EQUAL_FATAL(s->n_reads, 1);
	CU_ASSERT_EQUAL(s->reads[0].context, 7);
	CU_ASSERT_EQUAL(s->reads[0].index, own);
	solo_free(s);
}

static void test_read_later_ack_answers_earlier_reads_in_order(void)
{
	solo *s = solo_committed_leader(3);
	uint64_t commit = solo_status(s).commit;

	solo_read(s, 11);
	solo_read(s, 12);
	uint64_t second = heartbeat_ctx(s, 2);
	CU_ASSERT_EQUAL(s->n_reads, 0);

	solo_heartbeat_ack(s, 2, second);
	CU_ASSERT_EQUAL_FATAL(s->n_reads, 2);
	CU_ASSERT_EQUAL(s->reads[0].context, 11);
	CU_ASSERT_EQUAL(s->reads[1].context, 12);
	CU_ASSERT_EQUAL(s->reads[0].index, commit);
	CU_ASSERT_EQUAL(s->reads[1].index, commit);
	solo_free(s);
}

static void test_read_ack_for_earlier_read_leaves_later_pending(void)
{
	solo *s = solo_committed_leader(3);

	solo_read(s, 21);
	uint64_t first = heartbeat_ctx(s, 2);
	solo_read(s, 22);
	uint64_t second = heartbeat_ctx(s, 2);

	solo_heartbeat_ack(s, 2, first);
	CU_ASSERT_EQUAL_FATAL(s->n_reads, 1);
	CU_ASSERT_EQUAL(s->reads[0].context, 21);
	solo_heartbeat_ack(s, 2, second);
	CU_ASSERT_EQUAL_FATAL(s->n_reads, 2);
	CU_ASSERT_EQUAL(s->reads[1].context, 22);
	solo_free(s);
}

static void test_read_single_node_answers_at_once(void)
{
	solo *s = solo_new(&(solo_opts){.id = 1, .n = 1});
	solo_campaign(s);
	CU_ASSERT_EQUAL_FATAL(solo_status(s).role, RAFT_LEADER);
	CU_ASSERT_EQUAL_FATAL(solo_status(s).commit, solo_status(s).last_index);

	forget(s);
	CU_ASSERT_EQUAL(raft_rawnode_read_index(s->rn, 5), RAFT_OK);
	CU_ASSERT_TRUE(raft_rawnode_has_ready(s->rn));
	drain(s);
	CU_ASSERT_EQUAL_FATAL(s->n_reads, 1);
	CU_ASSERT_EQUAL(s->reads[0].context, 5);
	CU_ASSERT_EQUAL(s->reads[0].index, solo_status(s).commit);
	CU_ASSERT_EQUAL(s->n_msgs, 0);
	solo_free(s);
}

static void test_read_without_leader_is_dropped(void)
{
	solo *s = solo_new(&(solo_opts){.id = 1, .n = 3});
	solo_read(s, 3);
	CU_ASSERT_EQUAL(s->n_reads, 0);
	CU_ASSERT_EQUAL(s->n_msgs, 0);
	solo_free(s);
}

static void test_read_forwarded_by_follower(void)
{
	netsim *ns = store_cluster(3);
	elect(ns, 1);
	propose_ok(ns, 1, "w");
	uint64_t commit = netsim_status(ns, 1).commit;
	recorder *r = record(ns);

	CU_ASSERT_EQUAL(raft_rawnode_read_index(netsim_node(ns, 2), 99), RAFT_OK);
	netsim_stabilize(ns);
	const raft_read_state *rs = find_read(ns, 2, 99);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rs);
	CU_ASSERT_EQUAL(rs->index, commit);
	CU_ASSERT_PTR_NULL(find_read(ns, 1, 99));
	CU_ASSERT(rec_count(r, RAFT_MSG_READ_INDEX, 0, 1) >= 1);
	CU_ASSERT_EQUAL(rec_count(r, RAFT_MSG_READ_INDEX_RESPONSE, 1, 2), 1);
	stop_recording(ns, r);
	netsim_free(ns);
}

static void test_read_on_deposed_leader_never_served(void)
{
	netsim *ns = cluster(3, false, false);
	elect(ns, 1);
	netsim_isolate(ns, 1);
	netsim_campaign(ns, 2);
	CU_ASSERT_EQUAL_FATAL(netsim_leader(ns), 2);
	propose_ok(ns, 2, "newer");
	uint64_t newer = netsim_status(ns, 2).commit;
	CU_ASSERT_EQUAL_FATAL(ns_role(ns, 1), RAFT_LEADER);

	CU_ASSERT_EQUAL(raft_rawnode_read_index(netsim_node(ns, 1), 77), RAFT_OK);
	netsim_stabilize(ns);
	run_ticks(ns, 3 * ELECTION);
	CU_ASSERT_PTR_NULL(find_read(ns, 1, 77));

	netsim_recover(ns);
	run_ticks(ns, 2 * ELECTION);
	for (uint64_t id = 1; id <= 3; id++) {
		const raft_read_state *rs = find_read(ns, id, 77);
		CU_ASSERT(rs == NULL || rs->index >= newer);
	}
	netsim_free(ns);
}

static void test_reads_answered_in_order_with_own_contexts(void)
{
	netsim *ns = store_cluster(3);
	elect(ns, 1);
	raft_rawnode *lead = netsim_node(ns, 1);
	uint64_t floor[3];

	for (uint64_t ctx = 1; ctx <= 3; ctx++) {
		floor[ctx - 1] = netsim_status(ns, 1).commit;
		CU_ASSERT_EQUAL(raft_rawnode_read_index(lead, 100 + ctx), RAFT_OK);
		CU_ASSERT_EQUAL(raft_rawnode_propose(lead, "x", 1), RAFT_OK);
	}
	netsim_stabilize(ns);

	size_t n;
	const raft_read_state *rs = netsim_read_states(ns, 1, &n);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	for (size_t i = 0; i < n; i++) {
		CU_ASSERT_EQUAL(rs[i].context, 101 + i);
		CU_ASSERT(rs[i].index >= floor[i]);
		CU_ASSERT(i == 0 || rs[i].index >= rs[i - 1].index);
		CU_ASSERT(rs[i].index <= netsim_status(ns, 1).commit);
	}
	netsim_free(ns);
}

static void test_read_index_covers_acknowledged_writes(void)
{
	static const char *writes[] = {"w1", "w2", "w3", "w4", "w5"};
	netsim *ns = store_cluster(3);
	elect(ns, 1);

	netsim_isolate(ns, 3);
	for (size_t i = 0; i < ARRAY_LEN(writes); i++) {
		propose_ok(ns, 1, writes[i]);
		CU_ASSERT_FATAL(applied_data(ns, 1, writes[i]));
	}
	uint64_t acked = netsim_status(ns, 1).commit;
	netsim_recover(ns);
	CU_ASSERT_FATAL(netsim_status(ns, 3).commit < acked);

	CU_ASSERT_EQUAL(raft_rawnode_read_index(netsim_node(ns, 3), 500), RAFT_OK);
	netsim_stabilize(ns);
	const raft_read_state *rs = find_read(ns, 3, 500);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rs);
	CU_ASSERT(rs->index >= acked);
	run_ticks(ns, 2);
	CU_ASSERT(netsim_status(ns, 3).applied >= rs->index);
	CU_ASSERT(applied_data(ns, 3, "w5"));
	netsim_free(ns);
}

/* ------------------------------------------------------------------------------------------ */
/* Registration                                                                               */
/* ------------------------------------------------------------------------------------------ */

typedef struct test_case {
	const char *name;
	CU_TestFunc fn;
} test_case;

static const test_case prevote_tests[] = {
    {"isolated node keeps its term", test_prevote_isolated_node_keeps_term},
    {"rejoin does not depose leader", test_prevote_rejoin_does_not_depose_leader},
    {"rejoin with equal log and check-quorum", test_prevote_rejoin_equal_log_with_check_quorum},
    {"pre-vote never changes voter term", test_prevote_never_changes_voter_term},
    {"pre-vote asks for term+1", test_prevote_requests_next_term_without_raising_own},
    {"granted future-term response keeps pre-candidate",
     test_prevote_granted_future_term_does_not_demote},
    {"majority rejection reverts to follower", test_prevote_majority_rejection_reverts_to_follower},
    {"higher-term rejection demotes", test_prevote_rejection_with_higher_term_demotes},
    {"lower-term pre-vote explicitly rejected", test_prevote_lower_term_gets_explicit_rejection},
    {"pre-vote respects log up-to-dateness", test_prevote_respects_log_up_to_date},
    {"stale log cannot win a pre-vote", test_prevote_stale_log_cannot_win},
    {"single node elects at once", test_prevote_single_node_elects_at_once},
};

static const test_case check_quorum_tests[] = {
    {"isolated leader steps down", test_cq_isolated_leader_steps_down},
    {"leader steps down after one timeout", test_cq_leader_steps_down_after_exactly_one_timeout},
    {"leader in contact stays", test_cq_leader_in_contact_stays},
    {"majority-side leader stays", test_cq_majority_side_leader_stays},
    {"lease ignores REQUEST_VOTE", test_cq_lease_ignores_request_vote},
    {"lease ignores PRE_VOTE", test_cq_lease_ignores_pre_vote},
    {"transfer mark bypasses lease", test_cq_transfer_mark_bypasses_lease},
    {"no lease without known leader", test_cq_no_lease_without_known_leader},
    {"higher-term rejoiner cannot disrupt", test_cq_rejoining_higher_term_node_cannot_disrupt},
    {"term: lower APPEND/HEARTBEAT get a reply", test_term_lower_append_and_heartbeat_get_reply},
    {"term: stale leader steps down on reply", test_term_stale_leader_steps_down_on_reply},
    {"term: other lower-term messages dropped", test_term_lower_term_other_messages_dropped},
    {"term: leader set only by leader messages",
     test_term_higher_term_sets_leader_only_from_leader_messages},
    {"term: term-0 message is local", test_term_zero_message_is_local},
    {"report_unreachable moves replicate to probe",
     test_report_unreachable_moves_replicate_to_probe},
};

static const test_case transfer_tests[] = {
    {"to up-to-date follower", test_transfer_to_up_to_date_follower},
    {"target skips pre-vote and marks votes", test_transfer_target_skips_prevote_and_marks_votes},
    {"TIMEOUT_NOW campaigns at once", test_transfer_timeout_now_campaigns_at_once},
    {"lagging follower caught up first", test_transfer_to_lagging_follower_catches_up_first},
    {"proposals dropped while pending", test_transfer_drops_proposals_while_pending},
    {"aborts after election timeout", test_transfer_aborts_after_election_timeout},
    {"to self or unknown is ignored", test_transfer_to_self_or_unknown_is_ignored},
    {"forwarded by follower", test_transfer_forwarded_by_follower},
    {"repeat to same target ignored", test_transfer_repeated_to_same_target_is_ignored},
    {"other target replaces pending", test_transfer_to_other_target_replaces_pending},
};

static const test_case read_index_tests[] = {
    {"waits for heartbeat quorum", test_read_waits_for_heartbeat_quorum},
    {"ignores ack of earlier heartbeat", test_read_ignores_ack_of_earlier_heartbeat},
    {"waits for commit in leader term", test_read_waits_for_commit_in_leader_term},
    {"later ack answers earlier reads in order",
     test_read_later_ack_answers_earlier_reads_in_order},
    {"earlier ack leaves later read pending", test_read_ack_for_earlier_read_leaves_later_pending},
    {"single node answers at once", test_read_single_node_answers_at_once},
    {"without leader is dropped", test_read_without_leader_is_dropped},
    {"forwarded by follower", test_read_forwarded_by_follower},
    {"deposed leader never serves", test_read_on_deposed_leader_never_served},
    {"answered in order with own contexts", test_reads_answered_in_order_with_own_contexts},
    {"covers acknowledged writes", test_read_index_covers_acknowledged_writes},
};

static void add_suite(const char *name, const test_case *tests, size_t n)
{
	CU_pSuite suite = CU_add_suite(name, NULL, NULL);
	if (suite == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		CU_add_test(suite, tests[i].name, tests[i].fn);
}

void test_register_features(void)
{
	add_suite("prevote", prevote_tests, ARRAY_LEN(prevote_tests));
	add_suite("check_quorum", check_quorum_tests, ARRAY_LEN(check_quorum_tests));
	add_suite("transfer", transfer_tests, ARRAY_LEN(transfer_tests));
	add_suite("read_index", read_index_tests, ARRAY_LEN(read_index_tests));
}
