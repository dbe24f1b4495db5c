/* test_rawnode.c - RawNode tests: start, restart, Ready contents and ordering, bounds, errors. */
#include <CUnit/CUnit.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"
#include "suites.h"

/* One rawnode driven by hand over a memory storage that plays its disk. */
typedef struct tnode {
	raft_memory_storage *ms;
	raft_rawnode *rn;
	raft_config cfg;
	uint64_t peers[RAFT_MAX_VOTERS];
} tnode;

static void tnode_setup(tnode *t, uint64_t id, size_t n_peers)
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
}

static void tnode_start(tnode *t)
{
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_new(&t->cfg, &t->rn), RAFT_OK);
}

static void tnode_init(tnode *t, uint64_t id, size_t n_peers)
{
	tnode_setup(t, id, n_peers);
	tnode_start(t);
}

static void tnode_free(tnode *t)
{
	raft_rawnode_free(t->rn);
	raft_memory_storage_free(t->ms);
	t->rn = NULL;
	t->ms = NULL;
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

/* Takes the pending Ready and persists it, as an application would before advance. */
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

static void propose(tnode *t, const char *data)
{
	CU_ASSERT_EQUAL(raft_rawnode_propose(t->rn, data, strlen(data)), RAFT_OK);
}

/* An APPEND from leader 1 to follower 2. */
static raft_message append_msg(uint64_t term, uint64_t prev_index, uint64_t prev_term,
                               raft_entry *ents, size_t n, uint64_t commit)
{
	return (raft_message){.type = RAFT_MSG_APPEND,
	                      .from = 1,
	                      .to = 2,
	                      .term = term,
	                      .index = prev_index,
	                      .log_term = prev_term,
	                      .entries = ents,
	                      .n_entries = n,
	                      .commit = commit};
}

static raft_message ack_msg(uint64_t from, uint64_t term, uint64_t index)
{
	return (raft_message){
	    .type = RAFT_MSG_APPEND_RESPONSE, .from = from, .to = 1, .term = term, .index = index};
}

static void store_entries(raft_memory_storage *ms, uint64_t lo, uint64_t hi, uint64_t term,
                          size_t len)
{
	unsigned char buf[64];
	CU_ASSERT_FATAL(len <= sizeof(buf));
	for (uint64_t i = lo; i <= hi; i++) {
		memset(buf, (int)i, len);
		raft_entry e = {.term = term, .index = i, .data = len ? buf : NULL, .len = len};
		CU_ASSERT_EQUAL_FATAL(raft_memory_storage_append(ms, &e, 1), RAFT_OK);
	}
}

static void store_hard_state(raft_memory_storage *ms, uint64_t term, uint64_t vote, uint64_t commit)
{
	raft_hard_state hs = {.term = term, .vote = vote, .commit = commit};
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_set_hard_state(ms, &hs), RAFT_OK);
}

static size_t count_msgs(const raft_message *msgs, size_t n, int type, uint64_t to)
{
	size_t count = 0;
	for (size_t i = 0; i < n; i++)
		if (msgs[i].type == type && (to == 0 || msgs[i].to == to))
			count++;
	return count;
}

static const raft_message *find_msg(const raft_message *msgs, size_t n, int type, uint64_t to)
{
	for (size_t i = 0; i < n; i++)
		if (msgs[i].type == type && msgs[i].to == to)
			return &msgs[i];
	return NULL;
}

static size_t count_any(const raft_ready *rd, int type, uint64_t to)
{
	return count_msgs(rd->messages, rd->n_messages, type, to) +
	       count_msgs(rd->persisted_messages, rd->n_persisted_messages, type, to);
}

static void expect_committed(const raft_ready *rd, uint64_t lo, uint64_t hi)
{
	CU_ASSERT_EQUAL_FATAL(rd->n_committed_entries, hi - lo + 1);
	for (size_t i = 0; i < rd->n_committed_entries; i++)
		CU_ASSERT_EQUAL(rd->committed_entries[i].index, lo + i);
}

/* Node 1 of an n-voter cluster wins an election at term 1 with grants from 2.. up to a quorum. */
static void make_leader(tnode *t, size_t n_voters)
{
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_campaign(t->rn), RAFT_OK);
	drain(t);
	uint64_t term = node_status(t).term;
	for (uint64_t id = 2; id <= n_voters / 2 + 1; id++)
		step(t, (raft_message){.type = RAFT_MSG_REQUEST_VOTE_RESPONSE,
		                       .from = id,
		                       .to = 1,
		                       .term = term});
	drain(t);
	CU_ASSERT_EQUAL_FATAL(node_status(t).role, RAFT_LEADER);
}

/* A growable byte buffer for comparing Readies byte for byte. */
typedef struct bytes {
	unsigned char *p;
	size_t len;
} bytes;

static void bytes_add(bytes *b, const void *data, size_t len)
{
	if (len == 0)
		return;
	b->p = realloc(b->p, b->len + len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b->p);
	memcpy(b->p + b->len, data, len);
	b->len += len;
}

static void bytes_add_u64(bytes *b, uint64_t v)
{
	bytes_add(b, &v, sizeof(v));
}

static void bytes_add_messages(bytes *b, const raft_message *msgs, size_t n)
{
	bytes_add_u64(b, n);
	for (size_t i = 0; i < n; i++) {
		void *buf = NULL;
		size_t len = 0;
		CU_ASSERT_EQUAL_FATAL(raft_message_encode(&msgs[i], &buf, &len), RAFT_OK);
		bytes_add_u64(b, len);
		bytes_add(b, buf, len);
		free(buf);
	}
}

static void bytes_add_entries(bytes *b, const raft_entry *ents, size_t n)
{
	bytes_add_u64(b, n);
	for (size_t i = 0; i < n; i++) {
		bytes_add_u64(b, (uint64_t)ents[i].type);
		bytes_add_u64(b, ents[i].term);
		bytes_add_u64(b, ents[i].index);
		bytes_add_u64(b, ents[i].len);
		bytes_add(b, ents[i].data, ents[i].len);
	}
}

static void bytes_add_ready(bytes *b, const raft_ready *rd)
{
	bytes_add_u64(b, rd->has_soft_state);
	if (rd->has_soft_state) {
		bytes_add_u64(b, rd->soft_state.leader);
		bytes_add_u64(b, (uint64_t)rd->soft_state.role);
	}
	bytes_add_u64(b, rd->has_hard_state);
	if (rd->has_hard_state) {
		bytes_add_u64(b, rd->hard_state.term);
		bytes_add_u64(b, rd->hard_state.vote);
		bytes_add_u64(b, rd->hard_state.commit);
	}
	bytes_add_entries(b, rd->entries, rd->n_entries);
	bytes_add_entries(b, rd->committed_entries, rd->n_committed_entries);
	bytes_add_messages(b, rd->messages, rd->n_messages);
	bytes_add_messages(b, rd->persisted_messages, rd->n_persisted_messages);
	bytes_add_u64(b, rd->must_sync);
}

/* Handles a pending Ready, if any, recording it into b. */
static void record_ready(tnode *t, bytes *b)
{
	if (!raft_rawnode_has_ready(t->rn))
		return;
	raft_ready rd;
	take_ready(t, &rd);
	bytes_add_ready(b, &rd);
	advance(t);
}

/* ---- starting ---------------------------------------------------------------------------- */

static void test_start_new_node(void)
{
	tnode t;
	tnode_init(&t, 2, 3);
	raft_status st = node_status(&t);
	CU_ASSERT_EQUAL(st.id, 2);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(st.term, 0);
	CU_ASSERT_EQUAL(st.vote, 0);
	CU_ASSERT_EQUAL(st.leader, 0);
	CU_ASSERT_EQUAL(st.commit, 0);
	CU_ASSERT_EQUAL(st.last_index, 0);
	CU_ASSERT_EQUAL(st.error, RAFT_OK);
	CU_ASSERT_EQUAL(st.n_peers, 3);
	for (uint64_t id = 1; id <= 3; id++)
		CU_ASSERT_EQUAL(peer_status(&t, id).id, id);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	tnode_free(&t);
}

static void test_start_membership_from_storage(void)
{
	tnode t;
	tnode_setup(&t, 2, 0);
	raft_snapshot snap = {.metadata = {.conf_state = {.voters = {1, 2, 3, 4}, .n_voters = 4},
	                                   .index = 5,
	                                   .term = 2}};
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_apply_snapshot(t.ms, &snap), RAFT_OK);
	tnode_start(&t);
	raft_status st = node_status(&t);
	CU_ASSERT_EQUAL(st.n_peers, 4);
	for (uint64_t id = 1; id <= 4; id++)
		CU_ASSERT_EQUAL(peer_status(&t, id).id, id);
	CU_ASSERT_EQUAL(st.first_index, 6);
	CU_ASSERT_EQUAL(st.last_index, 5);
	tnode_free(&t);
}

static void test_start_empty_conf_state(void)
{
	tnode t;
	tnode_setup(&t, 1, 0);
	int rv = raft_rawnode_new(&t.cfg, &t.rn);
	CU_ASSERT(rv == RAFT_OK || rv == RAFT_ERR_INVALID);
	if (rv != RAFT_OK) {
		tnode_free(&t);
		return;
	}
	CU_ASSERT_EQUAL(node_status(&t).n_peers, 0);
	for (int i = 0; i < 40; i++)
		raft_rawnode_tick(t.rn);
	raft_rawnode_campaign(t.rn);
	for (int i = 0; i < 10 && raft_rawnode_has_ready(t.rn); i++) {
		raft_ready rd;
		take_ready(&t, &rd);
		CU_ASSERT_EQUAL(rd.n_messages + rd.n_persisted_messages, 0);
		advance(&t);
	}
	CU_ASSERT_NOT_EQUAL(node_status(&t).role, RAFT_LEADER);
	tnode_free(&t);
}

/* ---- restarting -------------------------------------------------------------------------- */

static void test_restart_from_storage(void)
{
	tnode t;
	tnode_setup(&t, 1, 3);
	store_entries(t.ms, 1, 3, 1, 4);
	store_hard_state(t.ms, 2, 1, 2);
	tnode_start(&t);

	raft_status st = node_status(&t);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(st.term, 2);
	CU_ASSERT_EQUAL(st.vote, 1);
	CU_ASSERT_EQUAL(st.commit, 2);
	CU_ASSERT_EQUAL(st.last_index, 3);

	raft_ready rd;
	take_ready(&t, &rd);
	expect_committed(&rd, 1, 2);
	CU_ASSERT_EQUAL(rd.committed_entries[1].len, 4);
	CU_ASSERT_FALSE(rd.has_soft_state);
	CU_ASSERT_FALSE(rd.has_hard_state);
	CU_ASSERT_FALSE(rd.has_snapshot);
	CU_ASSERT_FALSE(rd.must_sync);
	CU_ASSERT_EQUAL(rd.n_entries, 0);
	CU_ASSERT_EQUAL(rd.n_messages, 0);
	CU_ASSERT_EQUAL(rd.n_persisted_messages, 0);
	advance(&t);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	CU_ASSERT_EQUAL(node_status(&t).applied, 2);
	tnode_free(&t);
}

static void test_restart_from_snapshot(void)
{
	tnode t;
	tnode_setup(&t, 1, 0);
	raft_snapshot snap = {.metadata = {.conf_state = {.voters = {1, 2, 3}, .n_voters = 3},
	                                   .index = 3,
	                                   .term = 1}};
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_apply_snapshot(t.ms, &snap), RAFT_OK);
	store_entries(t.ms, 4, 5, 1, 2);
	store_hard_state(t.ms, 1, 0, 5);
	tnode_start(&t);

	raft_status st = node_status(&t);
	CU_ASSERT_EQUAL(st.n_peers, 3);
	CU_ASSERT_EQUAL(st.first_index, 4);
	CU_ASSERT_EQUAL(st.last_index, 5);
	CU_ASSERT_EQUAL(st.commit, 5);

	raft_ready rd;
	take_ready(&t, &rd);
	expect_committed(&rd, 4, 5);
	CU_ASSERT_FALSE(rd.has_snapshot);
	CU_ASSERT_FALSE(rd.has_hard_state);
	CU_ASSERT_EQUAL(rd.n_messages + rd.n_persisted_messages, 0);
	advance(&t);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	CU_ASSERT_EQUAL(node_status(&t).applied, 5);
	tnode_free(&t);
}

static void test_restart_skips_applied(void)
{
	tnode t;
	tnode_setup(&t, 1, 3);
	store_entries(t.ms, 1, 5, 1, 3);
	store_hard_state(t.ms, 1, 0, 5);
	t.cfg.applied = 3;
	tnode_start(&t);
	CU_ASSERT_EQUAL(node_status(&t).applied, 3);

	raft_ready rd;
	take_ready(&t, &rd);
	expect_committed(&rd, 4, 5);
	advance(&t);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	tnode_free(&t);
}

/* ---- Ready contents ---------------------------------------------------------------------- */

static void test_ready_follower_append(void)
{
	tnode t;
	tnode_init(&t, 2, 3);
	raft_entry e[2] = {{.term = 1, .index = 1},
	                   {.term = 1, .index = 2, .data = "ab", .len = 2}};
	step(&t, append_msg(1, 0, 0, e, 2, 0));

	raft_ready rd;
	take_ready(&t, &rd);
	CU_ASSERT_TRUE(rd.has_soft_state);
	CU_ASSERT_EQUAL(rd.soft_state.leader, 1);
	CU_ASSERT_EQUAL(rd.soft_state.role, RAFT_FOLLOWER);
	CU_ASSERT_TRUE(rd.has_hard_state);
	CU_ASSERT_EQUAL(rd.hard_state.term, 1);
	CU_ASSERT_EQUAL(rd.hard_state.vote, 0);
	CU_ASSERT_EQUAL(rd.hard_state.commit, 0);
	CU_ASSERT_EQUAL_FATAL(rd.n_entries, 2);
	CU_ASSERT_EQUAL(rd.entries[1].index, 2);
	CU_ASSERT_EQUAL(rd.entries[1].len, 2);
	CU_ASSERT_EQUAL(memcmp(rd.entries[1].data, "ab", 2), 0);
	CU_ASSERT_EQUAL(rd.n_committed_entries, 0);
	CU_ASSERT_FALSE(rd.has_snapshot);
	CU_ASSERT_TRUE(rd.must_sync);
	CU_ASSERT_EQUAL(rd.n_messages, 0);
	CU_ASSERT_EQUAL_FATAL(rd.n_persisted_messages, 1);
	const raft_message *resp = &rd.persisted_messages[0];
	CU_ASSERT_EQUAL(resp->type, RAFT_MSG_APPEND_RESPONSE);
	CU_ASSERT_EQUAL(resp->to, 1);
	CU_ASSERT_EQUAL(resp->term, 1);
	CU_ASSERT_EQUAL(resp->index, 2);
	CU_ASSERT_FALSE(resp->reject);
	advance(&t);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));

	step(&t, (raft_message){
	             .type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 1, .commit = 2});
	take_ready(&t, &rd);
	CU_ASSERT_FALSE(rd.has_soft_state);
	CU_ASSERT_TRUE(rd.has_hard_state);
	CU_ASSERT_EQUAL(rd.hard_state.commit, 2);
	CU_ASSERT_EQUAL(rd.n_entries, 0);
	CU_ASSERT_FALSE(rd.must_sync);
	expect_committed(&rd, 1, 2);
	CU_ASSERT_EQUAL(count_any(&rd, RAFT_MSG_HEARTBEAT_RESPONSE, 1), 1);
	advance(&t);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	tnode_free(&t);
}

static void test_ready_leader_messages_before_persist(void)
{
	tnode t;
	tnode_init(&t, 1, 3);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_campaign(t.rn), RAFT_OK);
	raft_ready rd;
	take_ready(&t, &rd);
	CU_ASSERT_TRUE(rd.has_soft_state);
	CU_ASSERT_EQUAL(rd.soft_state.role, RAFT_CANDIDATE);
	CU_ASSERT_EQUAL(rd.soft_state.leader, 0);
	CU_ASSERT_TRUE(rd.has_hard_state);
	CU_ASSERT_EQUAL(rd.hard_state.term, 1);
	CU_ASSERT_EQUAL(rd.hard_state.vote, 1);
	CU_ASSERT_TRUE(rd.must_sync);
	CU_ASSERT_EQUAL(count_any(&rd, RAFT_MSG_REQUEST_VOTE, 2), 1);
	CU_ASSERT_EQUAL(count_any(&rd, RAFT_MSG_REQUEST_VOTE, 3), 1);
	advance(&t);

	step(&t,
	     (raft_message){.type = RAFT_MSG_REQUEST_VOTE_RESPONSE, .from = 2, .to = 1, .term = 1});
	take_ready(&t, &rd);
	CU_ASSERT_TRUE(rd.has_soft_state);
	CU_ASSERT_EQUAL(rd.soft_state.role, RAFT_LEADER);
	CU_ASSERT_EQUAL(rd.soft_state.leader, 1);
	CU_ASSERT_FALSE(rd.has_hard_state);
	CU_ASSERT_EQUAL_FATAL(rd.n_entries, 1);
	CU_ASSERT_EQUAL(rd.entries[0].index, 1);
	CU_ASSERT_EQUAL(rd.entries[0].term, 1);
	CU_ASSERT_EQUAL(rd.entries[0].len, 0);
	CU_ASSERT_TRUE(rd.must_sync);
	CU_ASSERT_EQUAL(count_msgs(rd.messages, rd.n_messages, RAFT_MSG_APPEND, 2), 1);
	CU_ASSERT_EQUAL(count_msgs(rd.messages, rd.n_messages, RAFT_MSG_APPEND, 3), 1);
	CU_ASSERT_EQUAL(rd.n_persisted_messages, 0);
	advance(&t);

	CU_ASSERT_EQUAL(raft_rawnode_tick(t.rn), RAFT_OK);
	take_ready(&t, &rd);
	CU_ASSERT_EQUAL(count_msgs(rd.messages, rd.n_messages, RAFT_MSG_HEARTBEAT, 2), 1);
	CU_ASSERT_EQUAL(count_msgs(rd.messages, rd.n_messages, RAFT_MSG_HEARTBEAT, 3), 1);
	CU_ASSERT_EQUAL(rd.n_persisted_messages, 0);
	CU_ASSERT_EQUAL(rd.n_entries, 0);
	CU_ASSERT_FALSE(rd.has_hard_state);
	CU_ASSERT_FALSE(rd.must_sync);
	advance(&t);
	tnode_free(&t);
}

static void test_ready_vote_response_after_persist(void)
{
	tnode t;
	tnode_init(&t, 1, 3);
	step(&t, (raft_message){.type = RAFT_MSG_REQUEST_VOTE, .from = 2, .to = 1, .term = 1});
	raft_ready rd;
	take_ready(&t, &rd);
	CU_ASSERT_EQUAL(rd.n_messages, 0);
	CU_ASSERT_EQUAL_FATAL(rd.n_persisted_messages, 1);
	CU_ASSERT_EQUAL(rd.persisted_messages[0].type, RAFT_MSG_REQUEST_VOTE_RESPONSE);
	CU_ASSERT_EQUAL(rd.persisted_messages[0].to, 2);
	CU_ASSERT_FALSE(rd.persisted_messages[0].reject);
	CU_ASSERT_TRUE(rd.has_hard_state);
	CU_ASSERT_EQUAL(rd.hard_state.term, 1);
	CU_ASSERT_EQUAL(rd.hard_state.vote, 2);
	CU_ASSERT_TRUE(rd.must_sync);
	advance(&t);
	tnode_free(&t);
}

static void test_ready_pre_vote_response_after_persist(void)
{
	tnode t;
	tnode_setup(&t, 1, 3);
	t.cfg.pre_vote = true;
	tnode_start(&t);
	step(&t, (raft_message){.type = RAFT_MSG_PRE_VOTE, .from = 2, .to = 1, .term = 1});
	raft_ready rd;
	take_ready(&t, &rd);
	CU_ASSERT_EQUAL(rd.n_messages, 0);
	CU_ASSERT_EQUAL_FATAL(rd.n_persisted_messages, 1);
	CU_ASSERT_EQUAL(rd.persisted_messages[0].type, RAFT_MSG_PRE_VOTE_RESPONSE);
	CU_ASSERT_EQUAL(rd.persisted_messages[0].term, 1);
	CU_ASSERT_FALSE(rd.persisted_messages[0].reject);
	CU_ASSERT_FALSE(rd.has_hard_state);
	CU_ASSERT_EQUAL(node_status(&t).term, 0);
	advance(&t);
	tnode_free(&t);
}

/* ---- step and tick between ready and advance --------------------------------------------- */

static bytes encode_all(const raft_message *msgs, size_t n)
{
	bytes b = {0};
	bytes_add_messages(&b, msgs, n);
	return b;
}

static void expect_same_bytes(const bytes *a, const bytes *b)
{
	CU_ASSERT_EQUAL_FATAL(a->len, b->len);
	CU_ASSERT_EQUAL(memcmp(a->p, b->p, a->len), 0);
}

static void test_step_between_ready_and_advance(void)
{
	tnode t;
	tnode_init(&t, 2, 3);
	raft_entry e1 = {.term = 1, .index = 1, .data = "one", .len = 3};
	step(&t, append_msg(1, 0, 0, &e1, 1, 0));
	raft_ready rd;
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(t.rn, &rd), RAFT_OK);
	raft_entry *entries = rd.entries;
	bytes before = encode_all(rd.persisted_messages, rd.n_persisted_messages);

	raft_entry e2 = {.term = 1, .index = 2, .data = "two", .len = 3};
	step(&t, append_msg(1, 1, 1, &e2, 1, 1));
	CU_ASSERT_EQUAL(raft_rawnode_tick(t.rn), RAFT_OK);

	CU_ASSERT_PTR_EQUAL(rd.entries, entries);
	CU_ASSERT_EQUAL_FATAL(rd.n_entries, 1);
	CU_ASSERT_EQUAL(rd.entries[0].index, 1);
	CU_ASSERT_EQUAL(memcmp(rd.entries[0].data, "one", 3), 0);
	CU_ASSERT_EQUAL(rd.hard_state.commit, 0);
	bytes after = encode_all(rd.persisted_messages, rd.n_persisted_messages);
	expect_same_bytes(&before, &after);
	persist(t.ms, &rd);
	advance(&t);

	take_ready(&t, &rd);
	CU_ASSERT_EQUAL_FATAL(rd.n_entries, 1);
	CU_ASSERT_EQUAL(rd.entries[0].index, 2);
	CU_ASSERT_EQUAL(rd.hard_state.commit, 1);
	expect_committed(&rd, 1, 1);
	const raft_message *resp =
	    find_msg(rd.persisted_messages, rd.n_persisted_messages, RAFT_MSG_APPEND_RESPONSE, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
	CU_ASSERT_EQUAL(resp->index, 2);
	advance(&t);
	free(before.p);
	free(after.p);
	tnode_free(&t);
}

static void test_tick_between_ready_and_advance(void)
{
	tnode t;
	tnode_init(&t, 1, 3);
	make_leader(&t, 3);
	step(&t, ack_msg(2, 1, 1));
	drain(&t);
	propose(&t, "payload");
	raft_ready rd;
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(t.rn, &rd), RAFT_OK);
	bytes before = encode_all(rd.messages, rd.n_messages);
	CU_ASSERT_EQUAL(count_msgs(rd.messages, rd.n_messages, RAFT_MSG_HEARTBEAT, 0), 0);

	CU_ASSERT_EQUAL(raft_rawnode_tick(t.rn), RAFT_OK);
	bytes after = encode_all(rd.messages, rd.n_messages);
	expect_same_bytes(&before, &after);
	CU_ASSERT_EQUAL(count_msgs(rd.messages, rd.n_messages, RAFT_MSG_HEARTBEAT, 0), 0);
	persist(t.ms, &rd);
	advance(&t);

	take_ready(&t, &rd);
	CU_ASSERT_EQUAL(count_msgs(rd.messages, rd.n_messages, RAFT_MSG_HEARTBEAT, 2), 1);
	CU_ASSERT_EQUAL(count_msgs(rd.messages, rd.n_messages, RAFT_MSG_HEARTBEAT, 3), 1);
	advance(&t);
	free(before.p);
	free(after.p);
	tnode_free(&t);
}

static void test_ready_twice_is_invalid(void)
{
	tnode t;
	tnode_init(&t, 1, 3);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_campaign(t.rn), RAFT_OK);
	raft_ready rd, again;
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(t.rn, &rd), RAFT_OK);
	CU_ASSERT_EQUAL(raft_rawnode_ready(t.rn, &again), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(rd.hard_state.term, 1);
	persist(t.ms, &rd);
	advance(&t);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	tnode_free(&t);
}

static void test_has_ready_false_after_advance(void)
{
	tnode t;
	tnode_init(&t, 2, 3);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	raft_entry e = {.term = 1, .index = 1};
	step(&t, append_msg(1, 0, 0, &e, 1, 1));
	CU_ASSERT_TRUE(raft_rawnode_has_ready(t.rn));
	drain(&t);
	CU_ASSERT_EQUAL(raft_rawnode_tick(t.rn), RAFT_OK);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	step(&t, append_msg(1, 0, 0, &e, 1, 1));
	CU_ASSERT_TRUE(raft_rawnode_has_ready(t.rn));
	drain(&t);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	tnode_free(&t);
}

/* ---- durability before commit (etcd#14370) ----------------------------------------------- */

/* Takes Readies until one carries entry `index`; checks it is not committed before advance. */
static void expect_commit_only_after_advance(tnode *t, uint64_t index)
{
	raft_ready rd;
	bool seen = false;
	for (int i = 0; i < 5 && !seen; i++) {
		take_ready(t, &rd);
		for (size_t k = 0; k < rd.n_entries; k++)
			seen = seen || rd.entries[k].index == index;
		for (size_t k = 0; k < rd.n_committed_entries; k++)
			CU_ASSERT(rd.committed_entries[k].index < index);
		if (seen) {
			CU_ASSERT_EQUAL(raft_rawnode_tick(t->rn), RAFT_OK);
			CU_ASSERT(node_status(t).commit < index);
		}
		advance(t);
	}
	CU_ASSERT_TRUE_FATAL(seen);
	take_ready(t, &rd);
	CU_ASSERT_TRUE(rd.has_hard_state);
	CU_ASSERT_EQUAL(rd.hard_state.commit, index);
	CU_ASSERT_EQUAL_FATAL(rd.n_committed_entries, 1);
	CU_ASSERT_EQUAL(rd.committed_entries[0].index, index);
	advance(t);
}

static void test_single_node_commits_after_advance(void)
{
	tnode t;
	tnode_init(&t, 1, 1);
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_campaign(t.rn), RAFT_OK);
	expect_commit_only_after_advance(&t, 1);
	CU_ASSERT_EQUAL(node_status(&t).role, RAFT_LEADER);
	propose(&t, "x");
	expect_commit_only_after_advance(&t, 2);
	CU_ASSERT_EQUAL(node_status(&t).commit, 2);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	tnode_free(&t);
}

/* ---- memory bounds ------------------------------------------------------------------------ */

/* Drains Readies, checking committed entries arrive in order from `first` within `limit`. */
static void expect_bounded_apply(tnode *t, uint64_t first, uint64_t last, uint64_t limit)
{
	uint64_t next = first;
	for (int round = 0; round < 50 && raft_rawnode_has_ready(t->rn); round++) {
		raft_ready rd;
		take_ready(t, &rd);
		uint64_t size = 0;
		for (size_t i = 0; i < rd.n_committed_entries; i++) {
			CU_ASSERT_EQUAL(rd.committed_entries[i].index, next);
			size += rd.committed_entries[i].len;
			next++;
		}
		CU_ASSERT(rd.n_committed_entries <= 1 || size <= limit);
		advance(t);
	}
	CU_ASSERT_EQUAL(next, last + 1);
}

static void test_committed_size_bounded_after_restart(void)
{
	tnode t;
	tnode_setup(&t, 1, 3);
	store_entries(t.ms, 1, 10, 1, 10);
	store_hard_state(t.ms, 1, 0, 10);
	t.cfg.max_committed_size_per_ready = 25;
	tnode_start(&t);
	expect_bounded_apply(&t, 1, 10, 25);
	tnode_free(&t);
}

static void test_committed_size_bounded_on_follower(void)
{
	tnode t;
	tnode_setup(&t, 2, 3);
	t.cfg.max_committed_size_per_ready = 25;
	tnode_start(&t);
	raft_entry e[10];
	char payload[10];
	memset(payload, 'p', sizeof(payload));
	for (size_t i = 0; i < 10; i++)
		e[i] = (raft_entry){.term = 1, .index = i + 1, .data = payload, .len = 10};
	step(&t, append_msg(1, 0, 0, e, 10, 0));
	drain(&t);
	step(&t, (raft_message){
	             .type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 1, .commit = 10});
	expect_bounded_apply(&t, 1, 10, 25);
	tnode_free(&t);
}

static void test_uncommitted_size_drops_proposals(void)
{
	tnode t;
	tnode_setup(&t, 1, 3);
	t.cfg.max_uncommitted_entries_size = 100;
	tnode_start(&t);
	make_leader(&t, 3);
	char data[40];
	memset(data, 'u', sizeof(data));
	CU_ASSERT_EQUAL(raft_rawnode_propose(t.rn, data, sizeof(data)), RAFT_OK);
	CU_ASSERT_EQUAL(raft_rawnode_propose(t.rn, data, sizeof(data)), RAFT_OK);
	uint64_t last = node_status(&t).last_index;
	CU_ASSERT_EQUAL(raft_rawnode_propose(t.rn, data, sizeof(data)), RAFT_ERR_PROPOSAL_DROPPED);
	CU_ASSERT_EQUAL(node_status(&t).last_index, last);
	CU_ASSERT_EQUAL(node_status(&t).error, RAFT_OK);
	drain(&t);

	step(&t, ack_msg(2, 1, last));
	drain(&t);
	CU_ASSERT_EQUAL(node_status(&t).commit, last);
	CU_ASSERT_EQUAL(raft_rawnode_propose(t.rn, data, sizeof(data)), RAFT_OK);
	drain(&t);
	tnode_free(&t);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void expect_stopped(tnode *t)
{
	raft_ready rd;
	raft_message hb = {.type = RAFT_MSG_HEARTBEAT, .from = 2, .to = 1, .term = 5};
	CU_ASSERT_EQUAL(raft_rawnode_tick(t->rn), RAFT_ERR_STOPPED);
	CU_ASSERT_EQUAL(raft_rawnode_step(t->rn, &hb), RAFT_ERR_STOPPED);
	CU_ASSERT_EQUAL(raft_rawnode_propose(t->rn, "x", 1), RAFT_ERR_STOPPED);
	CU_ASSERT_EQUAL(raft_rawnode_campaign(t->rn), RAFT_ERR_STOPPED);
	CU_ASSERT_EQUAL(raft_rawnode_ready(t->rn, &rd), RAFT_ERR_STOPPED);
	CU_ASSERT_EQUAL(node_status(t).error, RAFT_ERR_IO);
}

static void test_storage_error_stops_node(void)
{
	tnode t;
	tnode_setup(&t, 1, 3);
	store_entries(t.ms, 1, 3, 1, 4);
	store_hard_state(t.ms, 1, 0, 3);
	tnode_start(&t);
	raft_memory_storage_inject_error(t.ms, RAFT_ERR_IO, false);
	raft_ready rd;
	CU_ASSERT_NOT_EQUAL(raft_rawnode_ready(t.rn, &rd), RAFT_OK);
	expect_stopped(&t);
	raft_memory_storage_inject_error(t.ms, RAFT_OK, false);
	expect_stopped(&t);
	tnode_free(&t);
}

static void test_storage_error_at_start(void)
{
	tnode t;
	tnode_setup(&t, 1, 3);
	raft_memory_storage_inject_error(t.ms, RAFT_ERR_IO, false);
	CU_ASSERT_EQUAL(raft_rawnode_new(&t.cfg, &t.rn), RAFT_ERR_IO);
	tnode_free(&t);
}

static void expect_invalid_config(const raft_config *c)
{
	raft_rawnode *rn = NULL;
	CU_ASSERT_EQUAL(raft_rawnode_new(c, &rn), RAFT_ERR_INVALID);
	if (rn != NULL)
		raft_rawnode_free(rn);
}

static void test_bad_config(void)
{
	tnode t;
	tnode_setup(&t, 1, 3);
	raft_rawnode *rn = NULL;
	CU_ASSERT_EQUAL(raft_rawnode_new(NULL, &rn), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_rawnode_new(&t.cfg, NULL), RAFT_ERR_INVALID);

	uint64_t many[RAFT_MAX_VOTERS + 1];
	for (size_t i = 0; i < RAFT_MAX_VOTERS + 1; i++)
		many[i] = i + 1;
	raft_config bad[7];
	for (size_t i = 0; i < 7; i++)
		bad[i] = t.cfg;
	bad[0].id = 0;
	bad[1].peers = many;
	bad[1].n_peers = RAFT_MAX_VOTERS + 1;
	bad[2].heartbeat_tick = bad[2].election_tick;
	bad[3].heartbeat_tick = 0;
	bad[4].storage = NULL;
	bad[5].peers = NULL;
	bad[6].max_inflight_msgs = 0;
	for (size_t i = 0; i < 7; i++)
		expect_invalid_config(&bad[i]);
	tnode_free(&t);
}

static void test_bad_calls(void)
{
	tnode t;
	tnode_init(&t, 1, 3);
	raft_message hup = {.type = RAFT_MSG_HUP, .from = 1, .to = 1};
	raft_message beat = {.type = RAFT_MSG_BEAT, .from = 1, .to = 1};
	CU_ASSERT_EQUAL(raft_rawnode_step(t.rn, &hup), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_rawnode_step(t.rn, &beat), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_rawnode_step(t.rn, NULL), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_rawnode_ready(t.rn, NULL), RAFT_ERR_INVALID);
	raft_message hb = {.type = RAFT_MSG_HEARTBEAT, .from = 2, .to = 1, .term = 1};
	CU_ASSERT_EQUAL(raft_rawnode_step(NULL, &hb), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_rawnode_tick(NULL), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_rawnode_propose(NULL, "x", 1), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(node_status(&t).role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(node_status(&t).term, 0);
	CU_ASSERT_FALSE(raft_rawnode_has_ready(t.rn));
	tnode_free(&t);
}

/* ---- determinism and status -------------------------------------------------------------- */

static void run_script(tnode *t, bytes *out)
{
	for (int i = 0; i < 30; i++) {
		CU_ASSERT_EQUAL(raft_rawnode_tick(t->rn), RAFT_OK);
		record_ready(t, out);
	}
	uint64_t term = node_status(t).term;
	CU_ASSERT_FATAL(term > 0);
	step(t, (raft_message){
	            .type = RAFT_MSG_REQUEST_VOTE_RESPONSE, .from = 2, .to = 1, .term = term});
	record_ready(t, out);
	propose(t, "hello");
	record_ready(t, out);
	step(t, ack_msg(2, term, node_status(t).last_index));
	record_ready(t, out);
	for (int i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL(raft_rawnode_tick(t->rn), RAFT_OK);
		record_ready(t, out);
	}
	CU_ASSERT_EQUAL(node_status(t).role, RAFT_LEADER);
}

static void test_determinism(void)
{
	tnode a, b;
	tnode_setup(&a, 1, 3);
	tnode_setup(&b, 1, 3);
	a.cfg.seed = b.cfg.seed = 42;
	tnode_start(&a);
	tnode_start(&b);
	bytes out_a = {0}, out_b = {0};
	run_script(&a, &out_a);
	run_script(&b, &out_b);
	CU_ASSERT(out_a.len > 200);
	expect_same_bytes(&out_a, &out_b);
	free(out_a.p);
	free(out_b.p);
	tnode_free(&a);
	tnode_free(&b);
}

static void test_status_fields(void)
{
	tnode t;
	tnode_init(&t, 1, 3);
	make_leader(&t, 3);
	propose(&t, "x");
	drain(&t);
	step(&t, ack_msg(2, 1, 2));
	drain(&t);

	raft_status st = node_status(&t);
	CU_ASSERT_EQUAL(st.id, 1);
	CU_ASSERT_EQUAL(st.role, RAFT_LEADER);
	CU_ASSERT_EQUAL(st.term, 1);
	CU_ASSERT_EQUAL(st.vote, 1);
	CU_ASSERT_EQUAL(st.leader, 1);
	CU_ASSERT_EQUAL(st.commit, 2);
	CU_ASSERT_EQUAL(st.applied, 2);
	CU_ASSERT_EQUAL(st.first_index, 1);
	CU_ASSERT_EQUAL(st.last_index, 2);
	CU_ASSERT_EQUAL(st.lead_transferee, 0);
	CU_ASSERT_EQUAL(st.error, RAFT_OK);
	CU_ASSERT_EQUAL(st.n_peers, 3);
	CU_ASSERT_EQUAL(peer_status(&t, 1).match, 2);
	raft_peer_status p2 = peer_status(&t, 2);
	CU_ASSERT_EQUAL(p2.match, 2);
	CU_ASSERT_EQUAL(p2.next, 3);
	CU_ASSERT_EQUAL(p2.state, RAFT_PROGRESS_REPLICATE);
	CU_ASSERT_TRUE(p2.recent_active);
	raft_peer_status p3 = peer_status(&t, 3);
	CU_ASSERT_EQUAL(p3.match, 0);
	CU_ASSERT_EQUAL(p3.state, RAFT_PROGRESS_PROBE);
	tnode_free(&t);
}

void test_register_rawnode(void)
{
	CU_pSuite s = CU_add_suite("rawnode", NULL, NULL);
	CU_add_test(s, "start new node", test_start_new_node);
	CU_add_test(s, "start membership from storage", test_start_membership_from_storage);
	CU_add_test(s, "start empty conf state", test_start_empty_conf_state);
	CU_add_test(s, "restart from storage", test_restart_from_storage);
	CU_add_test(s, "restart from snapshot", test_restart_from_snapshot);
	CU_add_test(s, "restart skips applied", test_restart_skips_applied);
	CU_add_test(s, "ready follower append", test_ready_follower_append);
	CU_add_test(s, "ready leader messages before persist",
	            test_ready_leader_messages_before_persist);
	CU_add_test(s, "ready vote response after persist", test_ready_vote_response_after_persist);
	CU_add_test(s, "ready pre-vote response after persist",
	            test_ready_pre_vote_response_after_persist);
	CU_add_test(s, "step between ready and advance", test_step_between_ready_and_advance);
	CU_add_test(s, "tick between ready and advance", test_tick_between_ready_and_advance);
	CU_add_test(s, "ready twice is invalid", test_ready_twice_is_invalid);
	CU_add_test(s, "has_ready false after advance", test_has_ready_false_after_advance);
	CU_add_test(s, "single node commits after advance", test_single_node_commits_after_advance);
	CU_add_test(s, "committed size bounded after restart",
	            test_committed_size_bounded_after_restart);
	CU_add_test(s, "committed size bounded on follower",
	            test_committed_size_bounded_on_follower);
	CU_add_test(s, "uncommitted size drops proposals", test_uncommitted_size_drops_proposals);
	CU_add_test(s, "storage error stops node", test_storage_error_stops_node);
	CU_add_test(s, "storage error at start", test_storage_error_at_start);
	CU_add_test(s, "bad config", test_bad_config);
	CU_add_test(s, "bad calls", test_bad_calls);
	CU_add_test(s, "determinism", test_determinism);
	CU_add_test(s, "status fields", test_status_fields);
}
