/* test_snapshot.c - snapshot tests: follower restore rules, leader sending, retries, compaction. */
#include <CUnit/CUnit.h>
#include <string.h>

#include "netsim.h"
#include "raft.h"
#include "suites.h"

/* One rawnode driven by hand over a memory storage that plays its disk. */
typedef struct tnode {
	raft_memory_storage *ms;
	raft_rawnode *rn;
	raft_config cfg;
	uint64_t peers[RAFT_MAX_VOTERS];
} tnode;

static void tnode_init(tnode *t, uint64_t id, size_t n_peers)
{
	memset(t, 0, sizeof(*t));
	t->ms = raft_memory_storage_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t->ms);
	raft_config_init(&t->cfg);
	for (size_t i = 0; i < n_peers; i++)
		t->peers[i] = i + 1;
	t->cfg.id = id;
	t->cfg.peers = t->peers;
	t->cfg.n_peers = n_peers;
	t->cfg.storage = raft_memory_storage_interface(t->ms);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_new(&t->cfg, &t->rn), RAFT_OK);
}

static void tnode_free(tnode *t)
{
	raft_rawnode_free(t->rn);
	raft_memory_storage_free(t->ms);
}

static raft_status node_status(tnode *t)
{
	raft_status st;
	raft_rawnode_status(t->rn, &st);
	return st;
}

static raft_peer_status peer_status(tnode *t, uint64_t id)
{
	raft_status st = node_status(t);
	for (size_t i = 0; i < st.n_peers; i++)
		if (st.peers[i].id == id)
			return st.peers[i];
	CU_FAIL("peer missing from status");
	return (raft_peer_status){0};
}

static bool has_peer(tnode *t, uint64_t id)
{
	raft_status st = node_status(t);
	for (size_t i = 0; i < st.n_peers; i++)
		if (st.peers[i].id == id)
			return true;
	return false;
}

static void persist(raft_memory_storage *ms, const raft_ready *rd)
{
	if (rd->has_snapshot)
		CU_ASSERT_EQUAL(raft_memory_storage_apply_snapshot(ms, &rd->snapshot), RAFT_OK);
	if (rd->n_entries > 0)
		CU_ASSERT_EQUAL(raft_memory_storage_append(ms, rd->entries, rd->n_entries),
		                RAFT_OK);
	if (rd->has_hard_state)
		CU_ASSERT_EQUAL(raft_memory_storage_set_hard_state(ms, &rd->hard_state), RAFT_OK);
}

static void take_ready(tnode *t, raft_ready *rd)
{
	CU_ASSERT_TRUE_FATAL(raft_rawnode_has_ready(t->rn));
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(t->rn, rd), RAFT_OK);
	persist(t->ms, rd);
}

static void advance(tnode *t)
{
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_advance(t->rn), RAFT_OK);
}

static void drain(tnode *t)
{
	for (int i = 0; i < 100 && raft_rawnode_has_ready(t->rn); i++) {
		raft_ready rd;
		take_ready(t, &rd);
		advance(t);
	}
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t->rn));
}

static void step(tnode *t, raft_message m)
{
	CU_ASSERT_EQUAL(raft_rawnode_step(t->rn, &m), RAFT_OK);
}

static size_t count_msgs(const raft_message *msgs, size_t n, int type, uint64_t to)
{
	size_t count = 0;
	for (size_t i = 0; i < n; i++)
		if (msgs[i].type == type && msgs[i].to == to)
			count++;
	return count;
}

static size_t count_any(const raft_ready *rd, int type, uint64_t to)
{
	return count_msgs(rd->messages, rd->n_messages, type, to) +
	       count_msgs(rd->persisted_messages, rd->n_persisted_messages, type, to);
}

static const raft_message *find_any(const raft_ready *rd, int type, uint64_t to)
{
	for (size_t i = 0; i < rd->n_messages; i++)
		if (rd->messages[i].type == type && rd->messages[i].to == to)
			return &rd->messages[i];
	for (size_t i = 0; i < rd->n_persisted_messages; i++)
		if (rd->persisted_messages[i].type == type && rd->persisted_messages[i].to == to)
			return &rd->persisted_messages[i];
	return NULL;
}

/* ---- follower side ----------------------------------------------------------------------- */

static raft_conf_state voters3(uint64_t a, uint64_t b, uint64_t c)
{
	return (raft_conf_state){.voters = {a, b, c}, .n_voters = 3};
}

static raft_message snapshot_msg(uint64_t term, uint64_t index, uint64_t snap_term,
                                 raft_conf_state cs)
{
	return (raft_message){
	    .type = RAFT_MSG_SNAPSHOT,
	    .from = 1,
	    .to = 2,
	    .term = term,
	    .snapshot = {.metadata = {.conf_state = cs, .index = index, .term = snap_term},
	                 .data = "snap",
	                 .len = 4}};
}

/* Gives follower 2 the entries 1..n of term 1 from leader 1, committed up to commit. */
static void follower_log(tnode *t, size_t n, uint64_t commit)
{
	raft_entry e[8];
	CU_ASSERT_FATAL(n <= 8);
	for (size_t i = 0; i < n; i++)
		e[i] = (raft_entry){.term = 1, .index = i + 1};
	step(t, (raft_message){.type = RAFT_MSG_APPEND,
	                       .from = 1,
	                       .to = 2,
	                       .term = 1,
	                       .entries = e,
	                       .n_entries = n,
	                       .commit = commit});
	drain(t);
	CU_ASSERT_EQUAL(node_status(t).last_index, n);
	CU_ASSERT_EQUAL(node_status(t).commit, commit);
}

/* Steps msg into follower 2 and returns the index of its single APPEND_RESPONSE to 1. */
static uint64_t expect_ack(tnode *t, raft_message msg, raft_ready *rd)
{
	step(t, msg);
	take_ready(t, rd);
	CU_ASSERT_EQUAL_FATAL(count_any(rd, RAFT_MSG_APPEND_RESPONSE, 1), 1);
	const raft_message *resp = find_any(rd, RAFT_MSG_APPEND_RESPONSE, 1);
	CU_ASSERT_FALSE(resp->reject);
	return resp->index;
}

static void test_follower_restores_from_snapshot(void)
{
	tnode t;
	tnode_init(&t, 2, 3);
	raft_ready rd;
	uint64_t acked = expect_ack(&t, snapshot_msg(2, 11, 2, voters3(1, 2, 3)), &rd);
	CU_ASSERT_EQUAL(acked, 11);
	CU_ASSERT_TRUE_FATAL(rd.has_snapshot);
	CU_ASSERT_EQUAL(rd.snapshot.metadata.index, 11);
	CU_ASSERT_EQUAL(rd.snapshot.metadata.term, 2);
	CU_ASSERT_EQUAL_FATAL(rd.snapshot.len, 4);
	CU_ASSERT_EQUAL(memcmp(rd.snapshot.data, "snap", 4), 0);
	CU_ASSERT_TRUE(rd.has_hard_state);
	CU_ASSERT_EQUAL(rd.hard_state.commit, 11);
	CU_ASSERT_EQUAL(rd.n_entries, 0);
	CU_ASSERT_EQUAL(rd.n_committed_entries, 0);
	CU_ASSERT_EQUAL(node_status(&t).last_index, 11);
	CU_ASSERT_EQUAL(node_status(&t).commit, 11);
	advance(&t);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	CU_ASSERT_EQUAL(node_status(&t).applied, 11);
	CU_ASSERT_EQUAL(node_status(&t).first_index, 12);

	raft_entry next = {.term = 2, .index = 12, .data = "n", .len = 1};
	raft_message app = {.type = RAFT_MSG_APPEND,
	                    .from = 1,
	                    .to = 2,
	                    .term = 2,
	                    .index = 11,
	                    .log_term = 2,
	                    .entries = &next,
	                    .n_entries = 1,
	                    .commit = 12};
	CU_ASSERT_EQUAL(expect_ack(&t, app, &rd), 12);
	CU_ASSERT_EQUAL_FATAL(rd.n_committed_entries, 1);
	CU_ASSERT_EQUAL(rd.committed_entries[0].index, 12);
	advance(&t);
	tnode_free(&t);
}

static void test_stale_snapshot_ignored(void)
{
	tnode t;
	tnode_init(&t, 2, 3);
	follower_log(&t, 3, 3);
	const uint64_t stale[][2] = {{2, 1}, {3, 1}, {2, 2}, {3, 2}};
	for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
		raft_message m = snapshot_msg(2, stale[i][0], stale[i][1], voters3(1, 2, 3));
		raft_ready rd;
		CU_ASSERT_EQUAL(expect_ack(&t, m, &rd), 3);
		CU_ASSERT_FALSE(rd.has_snapshot);
		CU_ASSERT_EQUAL(rd.n_committed_entries, 0);
		advance(&t);
		raft_status st = node_status(&t);
		CU_ASSERT_EQUAL(st.first_index, 1);
		CU_ASSERT_EQUAL(st.last_index, 3);
		CU_ASSERT_EQUAL(st.commit, 3);
	}
	tnode_free(&t);
}

static void test_snapshot_fast_forward_keeps_log(void)
{
	tnode t;
	tnode_init(&t, 2, 3);
	follower_log(&t, 5, 2);
	raft_ready rd;
	uint64_t acked = expect_ack(&t, snapshot_msg(1, 4, 1, voters3(1, 2, 3)), &rd);
	CU_ASSERT(acked >= 4 && acked <= 5);
	CU_ASSERT_FALSE(rd.has_snapshot);
	CU_ASSERT_TRUE(rd.has_hard_state);
	CU_ASSERT_EQUAL(rd.hard_state.commit, 4);
	advance(&t);
	raft_status st = node_status(&t);
	CU_ASSERT_EQUAL(st.commit, 4);
	CU_ASSERT_EQUAL(st.first_index, 1);
	CU_ASSERT_EQUAL(st.last_index, 5);
	tnode_free(&t);
}

/* A vote request for term 9 from candidate `from` whose last entry is (index, log_term). */
static bool grants_vote(tnode *t, uint64_t from, uint64_t index, uint64_t log_term)
{
	step(t, (raft_message){.type = RAFT_MSG_REQUEST_VOTE,
	                       .from = from,
	                       .to = 2,
	                       .term = 9,
	                       .index = index,
	                       .log_term = log_term});
	raft_ready rd;
	take_ready(t, &rd);
	const raft_message *resp = find_any(&rd, RAFT_MSG_REQUEST_VOTE_RESPONSE, from);
	bool granted = resp != NULL && !resp->reject;
	advance(t);
	return granted;
}

static void test_snapshot_replaces_conflicting_log(void)
{
	tnode t;
	tnode_init(&t, 2, 3);
	follower_log(&t, 3, 1);
	raft_ready rd;
	CU_ASSERT_EQUAL(expect_ack(&t, snapshot_msg(2, 2, 2, voters3(1, 2, 3)), &rd), 2);
	CU_ASSERT_TRUE(rd.has_snapshot);
	CU_ASSERT_EQUAL(rd.snapshot.metadata.index, 2);
	CU_ASSERT_EQUAL(rd.snapshot.metadata.term, 2);
	advance(&t);
	raft_status st = node_status(&t);
	CU_ASSERT_EQUAL(st.last_index, 2);
	CU_ASSERT_EQUAL(st.commit, 2);
	CU_ASSERT_EQUAL(st.first_index, 3);
	CU_ASSERT_FALSE(grants_vote(&t, 3, 3, 1));
	CU_ASSERT_TRUE(grants_vote(&t, 1, 2, 2));
	tnode_free(&t);
}

static void expect_voters(tnode *t, const raft_conf_state *cs)
{
	raft_status st = node_status(t);
	CU_ASSERT_EQUAL(st.n_peers, cs->n_voters);
	for (size_t i = 0; i < cs->n_voters; i++)
		CU_ASSERT_TRUE(has_peer(t, cs->voters[i]));
}

static void test_snapshot_replaces_membership(void)
{
	raft_conf_state confs[] = {
	    voters3(2, 3, 4),
	    {.voters = {1, 2, 3, 4, 5}, .n_voters = 5},
	    {.voters = {2, 5}, .n_voters = 2},
	};
	for (size_t c = 0; c < sizeof(confs) / sizeof(confs[0]); c++) {
		tnode t;
		tnode_init(&t, 2, 3);
		raft_ready rd;
		expect_ack(&t, snapshot_msg(1, 5, 1, confs[c]), &rd);
		CU_ASSERT_TRUE(rd.has_snapshot);
		advance(&t);
		expect_voters(&t, &confs[c]);
		CU_ASSERT_EQUAL(has_peer(&t, 1), confs[c].voters[0] == 1);

		CU_ASSERT_EQUAL_FATAL(raft_rawnode_campaign(t.rn), RAFT_OK);
		take_ready(&t, &rd);
		for (uint64_t id = 1; id <= 5; id++)
			if (id != 2)
				CU_ASSERT_EQUAL(count_any(&rd, RAFT_MSG_REQUEST_VOTE, id),
				                has_peer(&t, id) ? 1u : 0u);
		advance(&t);
		tnode_free(&t);
	}
}

/* ---- leader side, by hand ---------------------------------------------------------------- */

/* Node 1 of {1,2,3}: leader at term 1 with entries 1..6 committed through peer 2, a snapshot
 * at 5 and the log compacted there. Peer 3 has never answered. */
static void compacted_leader(tnode *t)
{
	tnode_init(t, 1, 3);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_campaign(t->rn), RAFT_OK);
	drain(t);
	step(t,
	     (raft_message){.type = RAFT_MSG_REQUEST_VOTE_RESPONSE, .from = 2, .to = 1, .term = 1});
	drain(t);
	CU_ASSERT_EQUAL_FATAL(node_status(t).role, RAFT_LEADER);
	for (int i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(raft_rawnode_propose(t->rn, "e", 1), RAFT_OK);
	drain(t);
	step(t, (raft_message){
	            .type = RAFT_MSG_APPEND_RESPONSE, .from = 2, .to = 1, .term = 1, .index = 6});
	drain(t);
	CU_ASSERT_EQUAL_FATAL(node_status(t).commit, 6);
	raft_conf_state cs = voters3(1, 2, 3);
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_create_snapshot(t->ms, 5, &cs, "data", 4),
	                      RAFT_OK);
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_compact(t->ms, 5), RAFT_OK);
}

/* What the leader sent to peer 3 in one Ready. */
typedef struct sent_to_3 {
	size_t snapshots;
	size_t appends;
} sent_to_3;

/* Peer 3 answers a heartbeat; returns what the leader sent it in reply. */
static sent_to_3 heartbeat_response_from_3(tnode *t)
{
	sent_to_3 sent = {0};
	step(t, (raft_message){.type = RAFT_MSG_HEARTBEAT_RESPONSE, .from = 3, .to = 1, .term = 1});
	if (!raft_rawnode_has_ready(t->rn))
		return sent;
	raft_ready rd;
	take_ready(t, &rd);
	sent.snapshots = count_any(&rd, RAFT_MSG_SNAPSHOT, 3);
	sent.appends = count_any(&rd, RAFT_MSG_APPEND, 3);
	advance(t);
	return sent;
}

/* Peer 3 acks the snapshot index 5; the leader must follow with entry 6 after (5, term 1),
 * which it can only build from the dummy entry at the compaction point. */
static void expect_append_after_ack_from_3(tnode *t)
{
	step(t, (raft_message){
	            .type = RAFT_MSG_APPEND_RESPONSE, .from = 3, .to = 1, .term = 1, .index = 5});
	raft_ready rd;
	take_ready(t, &rd);
	CU_ASSERT_EQUAL(count_any(&rd, RAFT_MSG_SNAPSHOT, 3), 0);
	const raft_message *app = find_any(&rd, RAFT_MSG_APPEND, 3);
	CU_ASSERT_PTR_NOT_NULL_FATAL(app);
	CU_ASSERT_EQUAL(app->index, 5);
	CU_ASSERT_EQUAL(app->log_term, 1);
	CU_ASSERT_EQUAL_FATAL(app->n_entries, 1);
	CU_ASSERT_EQUAL(app->entries[0].index, 6);
	advance(t);
}

static void test_leader_sends_snapshot_when_compacted(void)
{
	tnode t;
	compacted_leader(&t);
	step(&t,
	     (raft_message){.type = RAFT_MSG_HEARTBEAT_RESPONSE, .from = 3, .to = 1, .term = 1});
	raft_ready rd;
	take_ready(&t, &rd);
	const raft_message *snap = find_any(&rd, RAFT_MSG_SNAPSHOT, 3);
	CU_ASSERT_PTR_NOT_NULL_FATAL(snap);
	CU_ASSERT_EQUAL(snap->term, 1);
	CU_ASSERT_EQUAL(snap->snapshot.metadata.index, 5);
	CU_ASSERT_EQUAL(snap->snapshot.metadata.term, 1);
	CU_ASSERT_EQUAL(snap->snapshot.metadata.conf_state.n_voters, 3);
	CU_ASSERT_EQUAL_FATAL(snap->snapshot.len, 4);
	CU_ASSERT_EQUAL(memcmp(snap->snapshot.data, "data", 4), 0);
	CU_ASSERT_EQUAL(count_any(&rd, RAFT_MSG_APPEND, 3), 0);
	advance(&t);
	raft_peer_status p3 = peer_status(&t, 3);
	CU_ASSERT_EQUAL(p3.state, RAFT_PROGRESS_SNAPSHOT);
	CU_ASSERT_EQUAL(p3.pending_snapshot, 5);
	tnode_free(&t);
}

static void test_leader_waits_for_report_snapshot(void)
{
	tnode t;
	compacted_leader(&t);
	CU_ASSERT_EQUAL(heartbeat_response_from_3(&t).snapshots, 1);
	for (int i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL(raft_rawnode_tick(t.rn), RAFT_OK);
		sent_to_3 sent = heartbeat_response_from_3(&t);
		CU_ASSERT_EQUAL(sent.snapshots, 0);
		CU_ASSERT_EQUAL(sent.appends, 0);
		CU_ASSERT_EQUAL(peer_status(&t, 3).state, RAFT_PROGRESS_SNAPSHOT);
	}
	CU_ASSERT_EQUAL(raft_rawnode_report_snapshot(t.rn, 3, true), RAFT_OK);
	CU_ASSERT_EQUAL(peer_status(&t, 3).state, RAFT_PROGRESS_PROBE);
	drain(&t);

	expect_append_after_ack_from_3(&t);
	raft_peer_status p3 = peer_status(&t, 3);
	CU_ASSERT_EQUAL(p3.state, RAFT_PROGRESS_REPLICATE);
	CU_ASSERT_EQUAL(p3.match, 5);
	tnode_free(&t);
}

static void test_report_snapshot_failure_retries(void)
{
	tnode t;
	compacted_leader(&t);
	CU_ASSERT_EQUAL(heartbeat_response_from_3(&t).snapshots, 1);
	CU_ASSERT_EQUAL(raft_rawnode_report_snapshot(t.rn, 3, false), RAFT_OK);
	raft_peer_status p3 = peer_status(&t, 3);
	CU_ASSERT_EQUAL(p3.state, RAFT_PROGRESS_PROBE);
	CU_ASSERT_EQUAL(p3.match, 0);
	drain(&t);
	CU_ASSERT_EQUAL(heartbeat_response_from_3(&t).snapshots, 1);
	CU_ASSERT_EQUAL(peer_status(&t, 3).state, RAFT_PROGRESS_SNAPSHOT);
	tnode_free(&t);
}

static void test_snapshot_temporarily_unavailable_retried(void)
{
	tnode t;
	compacted_leader(&t);
	raft_memory_storage_inject_error(t.ms, RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE, true);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(heartbeat_response_from_3(&t).snapshots, 0);
		CU_ASSERT_NOT_EQUAL(peer_status(&t, 3).state, RAFT_PROGRESS_SNAPSHOT);
	}
	raft_status st = node_status(&t);
	CU_ASSERT_EQUAL(st.error, RAFT_OK);
	CU_ASSERT_EQUAL(st.role, RAFT_LEADER);
	raft_memory_storage_inject_error(t.ms, RAFT_OK, false);
	CU_ASSERT_EQUAL(heartbeat_response_from_3(&t).snapshots, 1);
	CU_ASSERT_EQUAL(peer_status(&t, 3).state, RAFT_PROGRESS_SNAPSHOT);
	tnode_free(&t);
}

static void test_dummy_entry_term_used_for_append(void)
{
	tnode t;
	compacted_leader(&t);
	uint64_t term = 0, first = 0;
	const raft_storage *s = raft_memory_storage_interface(t.ms);
	CU_ASSERT_EQUAL(s->first_index(s->ctx, &first), RAFT_OK);
	CU_ASSERT_EQUAL(first, 6);
	CU_ASSERT_EQUAL(s->term(s->ctx, first - 1, &term), RAFT_OK);
	CU_ASSERT_EQUAL(term, 1);
	CU_ASSERT_EQUAL(s->term(s->ctx, first - 2, &term), RAFT_ERR_COMPACTED);

	expect_append_after_ack_from_3(&t);
	tnode_free(&t);
}

/* ---- multi-node, over netsim ------------------------------------------------------------- */

/* Three nodes; 1 leads and commits five proposals while 3 is cut off, then compacts its log at
 * its commit index. Returns that index. */
static uint64_t lagging_cluster(netsim **out)
{
	netsim_options opt = {.n = 3, .seed = 7};
	netsim *ns = netsim_new(&opt);
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL_FATAL(netsim_leader(ns), 1);
	netsim_isolate(ns, 3);
	for (int i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(netsim_propose(ns, 1, "lag", 3), RAFT_OK);
	uint64_t commit = netsim_status(ns, 1).commit;
	CU_ASSERT_EQUAL_FATAL(commit, 6);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).commit, 1);
	raft_conf_state cs = voters3(1, 2, 3);
	raft_memory_storage *ms = netsim_storage(ns, 1);
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_create_snapshot(ms, commit, &cs, "sm", 2),
	                      RAFT_OK);
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_compact(ms, commit), RAFT_OK);
	*out = ns;
	return commit;
}

static void heartbeat_until_caught_up(netsim *ns, uint64_t id)
{
	for (int i = 0; i < 20; i++) {
		if (netsim_status(ns, id).commit == netsim_status(ns, 1).commit)
			break;
		netsim_tick(ns, 1);
		netsim_stabilize(ns);
	}
	CU_ASSERT_EQUAL(netsim_status(ns, id).commit, netsim_status(ns, 1).commit);
	CU_ASSERT_EQUAL(netsim_status(ns, id).last_index, netsim_status(ns, 1).last_index);
}

/* Checks that id applied the snapshot at snap_index, then every entry after it up to last. */
static void expect_restored(netsim *ns, uint64_t id, uint64_t snap_index, uint64_t last)
{
	size_t n = 0;
	const netsim_applied *applied = netsim_applied_list(ns, id, &n);
	size_t at = n;
	for (size_t i = 0; i < n; i++)
		if (applied[i].type == NETSIM_APPLIED_SNAPSHOT)
			at = i;
	CU_ASSERT_FATAL(at < n);
	CU_ASSERT_EQUAL(applied[at].index, snap_index);
	CU_ASSERT_EQUAL_FATAL(n - at - 1, last - snap_index);
	for (size_t i = at + 1; i < n; i++)
		CU_ASSERT_EQUAL(applied[i].index, snap_index + (i - at));
}

static void test_slow_node_restored_by_snapshot_then_entries(void)
{
	netsim *ns;
	uint64_t snap_index = lagging_cluster(&ns);
	netsim_recover(ns);
	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "after", 5), RAFT_OK);
	heartbeat_until_caught_up(ns, 3);
	expect_restored(ns, 3, snap_index, snap_index + 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).first_index, snap_index + 1);
	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "more", 4), RAFT_OK);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).commit, snap_index + 2);
	netsim_free(ns);
}

static void test_dropped_snapshot_is_resent(void)
{
	netsim *ns;
	uint64_t snap_index = lagging_cluster(&ns);
	netsim_recover(ns);
	netsim_ignore(ns, RAFT_MSG_SNAPSHOT);
	size_t dropped = netsim_dropped(ns);
	for (int i = 0; i < 5 && netsim_dropped(ns) == dropped; i++) {
		netsim_tick(ns, 1);
		netsim_stabilize(ns);
	}
	CU_ASSERT_FATAL(netsim_dropped(ns) > dropped);
	CU_ASSERT_NOT_EQUAL(netsim_status(ns, 3).commit, snap_index);
	netsim_recover(ns);
	heartbeat_until_caught_up(ns, 3);
	expect_restored(ns, 3, snap_index, snap_index);
	netsim_free(ns);
}

void test_register_snapshot(void)
{
	CU_pSuite s = CU_add_suite("snapshot", NULL, NULL);
	CU_add_test(s, "follower restores from snapshot", test_follower_restores_from_snapshot);
	CU_add_test(s, "stale snapshot ignored", test_stale_snapshot_ignored);
	CU_add_test(s, "fast-forward keeps log", test_snapshot_fast_forward_keeps_log);
	CU_add_test(s, "replaces conflicting log", test_snapshot_replaces_conflicting_log);
	CU_add_test(s, "replaces membership", test_snapshot_replaces_membership);
	CU_add_test(s, "leader sends snapshot when compacted",
	            test_leader_sends_snapshot_when_compacted);
	CU_add_test(s, "leader waits for report_snapshot", test_leader_waits_for_report_snapshot);
	CU_add_test(s, "report_snapshot failure retries", test_report_snapshot_failure_retries);
	CU_add_test(s, "temporarily unavailable retried",
	            test_snapshot_temporarily_unavailable_retried);
	CU_add_test(s, "dummy entry term used for append", test_dummy_entry_term_used_for_append);
	CU_add_test(s, "slow node restored by snapshot then entries",
	            test_slow_node_restored_by_snapshot_then_entries);
	CU_add_test(s, "dropped snapshot is resent", test_dropped_snapshot_is_resent);
}
