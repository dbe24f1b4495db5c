/* test_replication.c - log replication, commit and follower append rules of the core (CUnit). */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netsim.h"
#include "raft.h"
#include "suites.h"

#include "fixture.h"

#define CHECK_SEED(cond, seed)                                                                     \
	do {                                                                                       \
		bool ok_ = (cond);                                                                 \
		if (!ok_)                                                                          \
			fprintf(stderr, "\n%s:%d: failed with seed %llu\n", __FILE__, __LINE__,    \
			        (unsigned long long)(seed));                                       \
		CU_ASSERT(ok_);                                                                    \
	} while (0)

/* ------------------------------------------------------------------------------------------ */
/* Replication helpers                                                                        */
/* ------------------------------------------------------------------------------------------ */

static raft_message append_msg(uint64_t term, uint64_t index, uint64_t log_term,
                               raft_entry *entries, size_t n, uint64_t commit)
{
	raft_message m = msg(RAFT_MSG_APPEND, 2, 1, term);
	m.index = index;
	m.log_term = log_term;
	m.entries = entries;
	m.n_entries = n;
	m.commit = commit;
	return m;
}

/* Fills out[] with entries index+1.. carrying the given terms (no payload). */
static size_t make_entries(raft_entry *out, uint64_t index, const uint64_t *terms, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		out[i].type = RAFT_ENTRY_NORMAL;
		out[i].index = index + 1 + i;
		out[i].term = terms[i];
	}
	return n;
}

static bool log_equals(raft_memory_storage *ms, const uint64_t *terms, size_t n)
{
	if (storage_last_index(ms) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (storage_term(ms, i + 1) != terms[i])
			return false;
	return true;
}

static bool logs_match(raft_memory_storage *a, raft_memory_storage *b)
{
	uint64_t last = storage_last_index(a);
	if (storage_last_index(b) != last)
		return false;
	for (uint64_t i = 1; i <= last; i++)
		if (storage_term(a, i) != storage_term(b, i))
			return false;
	return true;
}

static void fx_ack(fixture *fx, uint64_t from, uint64_t index)
{
	raft_message m = msg(RAFT_MSG_APPEND_RESPONSE, from, 1, fx_status(fx).term);
	m.index = index;
	fx_step(fx, &m);
}

static void fx_propose(fixture *fx, const char *data)
{
	CU_ASSERT_EQUAL(raft_rawnode_propose(fx->rn, data, strlen(data)), RAFT_OK);
	fx_drain(fx);
}

/* Leader 1 of n whose empty entry (index 1) every follower has acknowledged. */
static void fx_start_committed_leader(fixture *fx, size_t n)
{
	fx_init(fx);
	fx_start(fx, 1, n);
	fx_make_leader(fx);
	fx_drain(fx);
	for (uint64_t id = 2; id <= n; id++)
		fx_ack(fx, id, 1);
	CU_ASSERT_EQUAL_FATAL(fx_status(fx).commit, 1);
}

static bool applied_contains(netsim *ns, uint64_t id, const char *data)
{
	size_t n, len = strlen(data);
	const netsim_applied *ap = netsim_applied_list(ns, id, &n);
	for (size_t i = 0; i < n; i++)
		if (ap[i].len == len && memcmp(ap[i].data, data, len) == 0)
			return true;
	return false;
}

/* Writes a log and hard state into a peer's disk and restarts it from there. */
static void preload(netsim *ns, uint64_t id, const uint64_t *terms, size_t n, uint64_t term,
                    uint64_t vote)
{
	raft_memory_storage *ms = netsim_storage(ns, id);
	for (size_t i = 0; i < n; i++) {
		raft_entry e = {.type = RAFT_ENTRY_NORMAL, .term = terms[i], .index = i + 1};
		CU_ASSERT_EQUAL_FATAL(raft_memory_storage_append(ms, &e, 1), RAFT_OK);
	}
	raft_hard_state hs = {.term = term, .vote = vote, .commit = 0};
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_set_hard_state(ms, &hs), RAFT_OK);
	netsim_restart(ns, id);
}

/* ------------------------------------------------------------------------------------------ */
/* A new leader                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* An APPEND must describe the leader's log: (index, log_term) and contiguous entries. */
static void check_append_matches_log(const raft_message *m, const uint64_t *terms, size_t n)
{
	CU_ASSERT_FATAL(m->index <= n);
	CU_ASSERT_EQUAL(m->log_term, m->index == 0 ? 0 : terms[m->index - 1]);
	for (size_t i = 0; i < m->n_entries; i++) {
		CU_ASSERT_EQUAL(m->entries[i].index, m->index + 1 + i);
		if (m->entries[i].index <= n)
			CU_ASSERT_EQUAL(m->entries[i].term, terms[m->entries[i].index - 1]);
	}
	CU_ASSERT_EQUAL(m->index + m->n_entries, n);
}

static void test_new_leader_appends_empty_entry(void)
{
	static const uint64_t terms[] = {1, 1};
	static const uint64_t leader_log[] = {1, 1, 2};
	fixture fx;
	fx_init(&fx);
	fx_log(&fx, terms, 2);
	fx_hard_state(&fx, 1, 0, 0);
	fx_start(&fx, 1, 3);
	fx_campaign(&fx);
	raft_message grant = msg(RAFT_MSG_REQUEST_VOTE_RESPONSE, 2, 1, 2);
	CU_ASSERT_EQUAL(raft_rawnode_step(fx.rn, &grant), RAFT_OK);

	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL_FATAL(st.role, RAFT_LEADER);
	CU_ASSERT_EQUAL(st.last_index, 3);
	CU_ASSERT(peer_of(&st, 1).match < 3);
	for (uint64_t id = 2; id <= 3; id++) {
		CU_ASSERT_EQUAL(peer_of(&st, id).match, 0);
		CU_ASSERT(peer_of(&st, id).next >= 1 && peer_of(&st, id).next <= 4);
	}

	raft_ready rd;
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(fx.rn, &rd), RAFT_OK);
	CU_ASSERT_EQUAL_FATAL(rd.n_entries, 1);
	CU_ASSERT_EQUAL(rd.entries[0].index, 3);
	CU_ASSERT_EQUAL(rd.entries[0].term, 2);
	CU_ASSERT_EQUAL(rd.entries[0].len, 0);
	CU_ASSERT_PTR_NULL(rd.entries[0].data);
	size_t appends = 0;
	for (size_t i = 0; i < rd.n_messages; i++) {
		if (rd.messages[i].type != RAFT_MSG_APPEND)
			continue;
		appends++;
		CU_ASSERT_EQUAL(rd.messages[i].commit, 0);
		check_append_matches_log(&rd.messages[i], leader_log, 3);
	}
	CU_ASSERT_EQUAL(appends, 2);
	for (size_t i = 0; i < rd.n_persisted_messages; i++)
		CU_ASSERT_NOT_EQUAL(rd.persisted_messages[i].type, RAFT_MSG_APPEND);
	fx_persist(&fx, &rd);
	CU_ASSERT_EQUAL(raft_rawnode_advance(fx.rn), RAFT_OK);
	fx_drain(&fx);
	st = fx_status(&fx);
	CU_ASSERT_EQUAL(peer_of(&st, 1).match, 3);
	CU_ASSERT_EQUAL(st.commit, 0);
	fx_free(&fx);
}

/* Handles one Ready by hand; checks nothing is committed beyond what was durable before it. */
static void ready_commit_after_persist(fixture *fx, uint64_t *durable, uint64_t *committed)
{
	raft_ready rd;
	CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(fx->rn, &rd), RAFT_OK);
	if (rd.has_hard_state) {
		CU_ASSERT(rd.hard_state.commit <= *durable);
		if (rd.hard_state.commit > *committed)
			*committed = rd.hard_state.commit;
	}
	for (size_t i = 0; i < rd.n_committed_entries; i++)
		CU_ASSERT(rd.committed_entries[i].index <= *durable);
	fx_persist(fx, &rd);
	if (rd.n_entries > 0)
		*durable = rd.entries[rd.n_entries - 1].index;
	CU_ASSERT_EQUAL(raft_rawnode_advance(fx->rn), RAFT_OK);
}

static void test_single_node_commits_only_after_persist(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 1, 1);
	CU_ASSERT_EQUAL(raft_rawnode_campaign(fx.rn), RAFT_OK);
	uint64_t durable = 0, committed = 0;
	for (int i = 0; i < 10 && raft_rawnode_has_ready(fx.rn); i++)
		ready_commit_after_persist(&fx, &durable, &committed);
	CU_ASSERT_EQUAL(committed, 1);
	CU_ASSERT_EQUAL(fx_status(&fx).commit, 1);
	CU_ASSERT_EQUAL(raft_rawnode_propose(fx.rn, "x", 1), RAFT_OK);
	CU_ASSERT_EQUAL(raft_rawnode_propose(fx.rn, "y", 1), RAFT_OK);
	for (int i = 0; i < 10 && raft_rawnode_has_ready(fx.rn); i++)
		ready_commit_after_persist(&fx, &durable, &committed);
	CU_ASSERT_EQUAL(durable, 3);
	CU_ASSERT_EQUAL(committed, 3);
	fx_free(&fx);
}

/* ------------------------------------------------------------------------------------------ */
/* Commit                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void test_commit_waits_for_majority(void)
{
	static const struct {
		size_t n;
		uint64_t acks[4];
		bool commits;
	} cases[] = {
	    {1, {0}, true},    {3, {0}, false},         {3, {2}, true},    {3, {2, 3}, true},
	    {5, {0}, false},   {5, {2}, false},         {5, {2, 3}, true}, {5, {2, 3, 4}, true},
	    {5, {4, 5}, true}, {5, {2, 3, 4, 5}, true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fixture fx;
		fx_start_committed_leader(&fx, cases[i].n);
		fx_propose(&fx, "data");
		CU_ASSERT_EQUAL(fx_status(&fx).last_index, 2);
		for (size_t a = 0; a < 4 && cases[i].acks[a] != 0; a++)
			fx_ack(&fx, cases[i].acks[a], 2);
		uint64_t commit = fx_status(&fx).commit;
		if ((commit == 2) != cases[i].commits)
			fprintf(stderr, "\ncommit case %zu: commit %llu\n", i,
			        (unsigned long long)commit);
		CU_ASSERT_EQUAL(commit, cases[i].commits ? 2 : 1);
		fx_free(&fx);
	}
}

static void test_old_term_entry_not_committed_by_counting(void)
{
	static const uint64_t terms[] = {1, 2};
	fixture fx;
	fx_init(&fx);
	fx_log(&fx, terms, 2);
	fx_hard_state(&fx, 2, 0, 0);
	fx_start(&fx, 1, 3);
	fx_make_leader(&fx);
	fx_drain(&fx);
	CU_ASSERT_EQUAL(fx_status(&fx).term, 3);
	CU_ASSERT_EQUAL(fx_status(&fx).last_index, 3);
	/* Entry 2 (term 2) is now on a majority, but it is not of the leader's term. */
	fx_ack(&fx, 2, 2);
	fx_ack(&fx, 3, 2);
	CU_ASSERT_EQUAL(fx_status(&fx).commit, 0);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(peer_of(&st, 2).match, 2);
	/* Once the term-3 entry is on a majority, everything before it commits too. */
	fx_ack(&fx, 2, 3);
	CU_ASSERT_EQUAL(fx_status(&fx).commit, 3);
	fx_free(&fx);
}

static void test_commit_advance_sent_to_followers(void)
{
	fixture fx;
	fx_start_committed_leader(&fx, 3);
	fx_propose(&fx, "data");
	fx_ack(&fx, 2, 2);
	CU_ASSERT_EQUAL(fx_status(&fx).commit, 2);
	for (uint64_t to = 2; to <= 3; to++) {
		const raft_message *m = fx_find(&fx, RAFT_MSG_APPEND, to);
		CU_ASSERT_PTR_NOT_NULL(m);
		if (m != NULL)
			CU_ASSERT_EQUAL(m->commit, 2);
	}
	CU_ASSERT_EQUAL(fx_count(&fx, RAFT_MSG_APPEND), 2);
	fx_free(&fx);
}

static void test_follower_commit_bounded_by_verified(void)
{
	static const uint64_t log3[] = {1, 1, 1};
	static const uint64_t t2[] = {2};
	static const uint64_t t1[] = {1};
	static const struct {
		uint64_t index, log_term;
		const uint64_t *terms;
		size_t n;
		uint64_t commit, want;
	} cases[] = {
	    {1, 1, NULL, 0, 3, 1}, {3, 1, NULL, 0, 3, 3}, {2, 1, NULL, 0, 10, 2},
	    {1, 1, t2, 1, 5, 2},   {3, 1, t1, 1, 2, 2},   {3, 1, t1, 1, 9, 4},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fixture fx;
		fx_init(&fx);
		fx_log(&fx, log3, 3);
		fx_hard_state(&fx, 1, 0, 0);
		fx_start(&fx, 1, 3);
		raft_entry ents[4];
		size_t n = make_entries(ents, cases[i].index, cases[i].terms, cases[i].n);
		raft_message m =
		    append_msg(2, cases[i].index, cases[i].log_term, ents, n, cases[i].commit);
		fx_step(&fx, &m);
		uint64_t commit = fx_status(&fx).commit;
		if (commit != cases[i].want)
			fprintf(stderr, "\nfollower commit case %zu: %llu\n", i,
			        (unsigned long long)commit);
		CU_ASSERT_EQUAL(commit, cases[i].want);
		fx_free(&fx);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Appending on a follower                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct append_case {
	const char *name;
	uint64_t index, log_term;
	uint64_t terms[3];
	size_t n;
	bool reject;
	uint64_t want[3];
	size_t n_want;
} append_case;

static void run_append_case(const append_case *c)
{
	static const uint64_t initial[] = {1, 2};
	fixture fx;
	fx_init(&fx);
	fx_log(&fx, initial, 2);
	fx_hard_state(&fx, 2, 0, 0);
	fx_start(&fx, 1, 3);
	raft_entry ents[3];
	size_t n = make_entries(ents, c->index, c->terms, c->n);
	raft_message m = append_msg(4, c->index, c->log_term, ents, n, 0);
	fx_step(&fx, &m);
	bool ok = log_equals(fx.ms, c->want, c->n_want);
	const raft_message *r = fx_find(&fx, RAFT_MSG_APPEND_RESPONSE, 2);
	if (!ok || r == NULL || r->reject != c->reject)
		fprintf(stderr, "\nappend case '%s' failed\n", c->name);
	CU_ASSERT_TRUE(ok);
	CU_ASSERT_EQUAL(fx_status(&fx).last_index, c->n_want);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(r->reject, c->reject);
	CU_ASSERT_EQUAL(r->term, 4);
	if (c->reject) {
		CU_ASSERT(r->reject_hint <= 2);
	} else {
		CU_ASSERT_TRUE(fx_sent_after_persist(&fx, r));
	}
	if (!c->reject && c->index + c->n >= 2)
		CU_ASSERT_EQUAL(r->index, c->index + c->n);
	fx_free(&fx);
}

static void test_follower_append_cases(void)
{
	static const append_case cases[] = {
	    {"follower shorter", 2, 2, {3}, 1, false, {1, 2, 3}, 3},
	    {"conflict in the middle", 1, 1, {3, 4}, 2, false, {1, 3, 4}, 3},
	    {"conflict at the start", 0, 0, {3}, 1, false, {3}, 1},
	    {"identical", 0, 0, {1, 2}, 2, false, {1, 2}, 2},
	    {"identical suffix", 1, 1, {2}, 1, false, {1, 2}, 2},
	    {"follower longer", 0, 0, {1}, 1, false, {1, 2}, 2},
	    {"heartbeat-like", 2, 2, {0}, 0, false, {1, 2}, 2},
	    {"gap after follower log", 3, 2, {0}, 0, true, {1, 2}, 2},
	    {"term mismatch", 2, 3, {0}, 0, true, {1, 2}, 2},
	    {"far ahead", 9, 4, {4}, 1, true, {1, 2}, 2},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_append_case(&cases[i]);
}

static void test_duplicate_append_never_removes_entries(void)
{
	static const uint64_t log3[] = {1, 1, 1};
	fixture fx;
	fx_init(&fx);
	fx_hard_state(&fx, 1, 0, 0);
	fx_start(&fx, 1, 3);
	raft_entry all[3], first[1];
	make_entries(all, 0, log3, 3);
	make_entries(first, 0, log3, 1);
	raft_message full = append_msg(1, 0, 0, all, 3, 1);
	raft_message old = append_msg(1, 0, 0, first, 1, 0);
	fx_step(&fx, &full);
	fx_step(&fx, &old);
	fx_step(&fx, &full);
	fx_step(&fx, &old);
	CU_ASSERT_TRUE(log_equals(fx.ms, log3, 3));
	CU_ASSERT_EQUAL(fx_status(&fx).commit, 1);
	fx_free(&fx);
}

static void test_follower_never_truncates_committed(void)
{
	static const uint64_t log3[] = {1, 1, 1};
	static const uint64_t t2[] = {2};
	fixture fx;
	fx_init(&fx);
	fx_log(&fx, log3, 3);
	fx_hard_state(&fx, 1, 0, 3);
	fx_start(&fx, 1, 3);
	raft_entry first[1];
	make_entries(first, 0, log3, 1);
	raft_message stale = append_msg(1, 0, 0, first, 1, 0);
	fx_step(&fx, &stale);
	const raft_message *r = fx_find(&fx, RAFT_MSG_APPEND_RESPONSE, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_FALSE(r->reject);
	CU_ASSERT(r->index >= 1);
	CU_ASSERT_TRUE(log_equals(fx.ms, log3, 3));
	/* A (bogus) conflict at or below commit must not cut committed entries either. */
	raft_entry bogus[1];
	make_entries(bogus, 1, t2, 1);
	raft_message bad = append_msg(2, 1, 1, bogus, 1, 3);
	fx_step(&fx, &bad);
	CU_ASSERT_TRUE(log_equals(fx.ms, log3, 3));
	CU_ASSERT_EQUAL(fx_status(&fx).commit, 3);
	fx_free(&fx);
}

/* ------------------------------------------------------------------------------------------ */
/* Heartbeats and progress                                                                    */
/* ------------------------------------------------------------------------------------------ */

static void test_heartbeat_commit_is_min_of_match_and_commit(void)
{
	fixture fx;
	fx_init(&fx);
	fx_start(&fx, 1, 3);
	fx_make_leader(&fx);
	fx_drain(&fx);
	fx_ack(&fx, 3, 1);
	fx_propose(&fx, "a");
	fx_propose(&fx, "b");
	fx_ack(&fx, 3, 3);
	CU_ASSERT_EQUAL_FATAL(fx_status(&fx).commit, 3);
	fx_tick(&fx, 1);
	fx_drain(&fx);
	const raft_message *hb2 = fx_find(&fx, RAFT_MSG_HEARTBEAT, 2);
	const raft_message *hb3 = fx_find(&fx, RAFT_MSG_HEARTBEAT, 3);
	CU_ASSERT_PTR_NOT_NULL_FATAL(hb2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(hb3);
	CU_ASSERT_EQUAL(hb2->commit, 0);
	CU_ASSERT_EQUAL(hb3->commit, 3);
	/* A lagging follower's heartbeat response makes the leader send it entries. */
	raft_message resp = msg(RAFT_MSG_HEARTBEAT_RESPONSE, 2, 1, 1);
	fx_step(&fx, &resp);
	const raft_message *app = fx_find(&fx, RAFT_MSG_APPEND, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(app);
	CU_ASSERT_EQUAL(app->index + app->n_entries, 3);
	fx_ack(&fx, 2, 1);
	fx_tick(&fx, 1);
	fx_drain(&fx);
	hb2 = fx_find(&fx, RAFT_MSG_HEARTBEAT, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(hb2);
	CU_ASSERT_EQUAL(hb2->commit, 1);
	fx_free(&fx);
}

static void test_unknown_heartbeat_context_ignored(void)
{
	fixture fx;
	fx_start_committed_leader(&fx, 3);
	raft_message resp = msg(RAFT_MSG_HEARTBEAT_RESPONSE, 2, 1, 1);
	resp.context = 42; /* answers a read this leader never started (e.g. before a restart) */
	CU_ASSERT_EQUAL(fx_step(&fx, &resp), RAFT_OK);
	raft_status st = fx_status(&fx);
	CU_ASSERT_EQUAL(st.role, RAFT_LEADER);
	CU_ASSERT_EQUAL(st.error, RAFT_OK);
	CU_ASSERT_EQUAL(st.commit, 1);
	fx_propose(&fx, "still works");
	fx_ack(&fx, 2, 2);
	CU_ASSERT_EQUAL(fx_status(&fx).commit, 2);
	fx_free(&fx);
}

static void test_stale_ack_does_not_move_progress_back(void)
{
	fixture fx;
	fx_start_committed_leader(&fx, 3);
	fx_propose(&fx, "a");
	fx_propose(&fx, "b");
	fx_ack(&fx, 2, 3);
	raft_status st = fx_status(&fx);
	raft_peer_status before = peer_of(&st, 2);
	CU_ASSERT_EQUAL(before.match, 3);
	CU_ASSERT_EQUAL(before.next, 4);
	CU_ASSERT_EQUAL(before.state, RAFT_PROGRESS_REPLICATE);
	fx_ack(&fx, 2, 2);
	raft_message stale_reject = msg(RAFT_MSG_APPEND_RESPONSE, 2, 1, 1);
	stale_reject.reject = true;
	stale_reject.index = 1;
	fx_step(&fx, &stale_reject);
	st = fx_status(&fx);
	CU_ASSERT_EQUAL(peer_of(&st, 2).match, 3);
	CU_ASSERT_EQUAL(peer_of(&st, 2).next, 4);
	CU_ASSERT_EQUAL(peer_of(&st, 2).state, RAFT_PROGRESS_REPLICATE);
	CU_ASSERT_EQUAL(st.commit, 3);
	fx_free(&fx);
}

static void test_stale_probe_rejection_ignored(void)
{
	static const uint64_t terms[] = {1, 1};
	fixture fx;
	fx_init(&fx);
	fx_log(&fx, terms, 2);
	fx_hard_state(&fx, 1, 0, 0);
	fx_start(&fx, 1, 3);
	fx_make_leader(&fx);
	fx_drain(&fx);
	raft_status st = fx_status(&fx);
	raft_peer_status p = peer_of(&st, 3);
	CU_ASSERT_EQUAL_FATAL(p.state, RAFT_PROGRESS_PROBE);
	CU_ASSERT_FATAL(p.next >= 2);
	raft_message rej = msg(RAFT_MSG_APPEND_RESPONSE, 3, 1, 2);
	rej.reject = true;
	rej.index = p.next - 2; /* not the probe in flight (next - 1) */
	fx_step(&fx, &rej);
	st = fx_status(&fx);
	CU_ASSERT_EQUAL(peer_of(&st, 3).next, p.next);
	rej.index = p.next - 1;
	fx_step(&fx, &rej);
	st = fx_status(&fx);
	CU_ASSERT(peer_of(&st, 3).next < p.next);
	CU_ASSERT_EQUAL(peer_of(&st, 3).match, 0);
	fx_free(&fx);
}

static void test_uncommitted_size_limit(void)
{
	char big[60];
	memset(big, 'u', sizeof(big));
	fixture fx;
	fx_init(&fx);
	raft_config c;
	fx_config(&fx, &c, 1, 3);
	c.max_uncommitted_entries_size = 100;
	fx_start_with(&fx, &c);
	fx_make_leader(&fx);
	fx_drain(&fx);
	fx_ack(&fx, 2, 1);
	CU_ASSERT_EQUAL(raft_rawnode_propose(fx.rn, big, sizeof(big)), RAFT_OK);
	CU_ASSERT_EQUAL(raft_rawnode_propose(fx.rn, big, sizeof(big)), RAFT_ERR_PROPOSAL_DROPPED);
	fx_drain(&fx);
	CU_ASSERT_EQUAL(fx_status(&fx).last_index, 2);
	fx_ack(&fx, 2, 2);
	CU_ASSERT_EQUAL(fx_status(&fx).commit, 2);
	CU_ASSERT_EQUAL(raft_rawnode_propose(fx.rn, big, sizeof(big)), RAFT_OK);
	fx_drain(&fx);
	CU_ASSERT_EQUAL(fx_status(&fx).last_index, 3);
	fx_free(&fx);
}

static void test_committed_size_per_ready(void)
{
	char payload[40];
	memset(payload, 'c', sizeof(payload));
	fixture fx;
	fx_init(&fx);
	raft_config c;
	fx_config(&fx, &c, 1, 1);
	c.max_committed_size_per_ready = 100;
	fx_start_with(&fx, &c);
	fx_campaign(&fx);
	for (int i = 0; i < 10; i++)
		CU_ASSERT_EQUAL(raft_rawnode_propose(fx.rn, payload, sizeof(payload)), RAFT_OK);
	uint64_t next_index = 2;
	int readies_with_commits = 0;
	for (int guard = 0; guard < 50 && raft_rawnode_has_ready(fx.rn); guard++) {
		raft_ready rd;
		CU_ASSERT_EQUAL_FATAL(raft_rawnode_ready(fx.rn, &rd), RAFT_OK);
		size_t bytes = 0;
		for (size_t i = 0; i < rd.n_committed_entries; i++) {
			bytes += rd.committed_entries[i].len;
			CU_ASSERT_EQUAL(rd.committed_entries[i].index, next_index);
			next_index++;
		}
		CU_ASSERT(rd.n_committed_entries <= 1 || bytes <= 100);
		readies_with_commits += rd.n_committed_entries > 0 ? 1 : 0;
		fx_persist(&fx, &rd);
		CU_ASSERT_EQUAL(raft_rawnode_advance(fx.rn), RAFT_OK);
	}
	CU_ASSERT_EQUAL(next_index, 12);
	CU_ASSERT(readies_with_commits >= 4);
	fx_free(&fx);
}

/* ------------------------------------------------------------------------------------------ */
/* Replication in a cluster                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void count_rejections(void *ctx, netsim *ns, uint64_t id, const raft_ready *rd)
{
	size_t *count = ctx;
	(void)ns;
	for (size_t i = 0; i < rd->n_persisted_messages; i++) {
		const raft_message *m = &rd->persisted_messages[i];
		if (id == 2 && m->type == RAFT_MSG_APPEND_RESPONSE && m->reject)
			(*count)++;
	}
	for (size_t i = 0; i < rd->n_messages; i++) {
		const raft_message *m = &rd->messages[i];
		if (id == 2 && m->type == RAFT_MSG_APPEND_RESPONSE && m->reject)
			(*count)++;
	}
}

static void test_figure7_follower_logs_converge(void)
{
	static const uint64_t leader[] = {1, 1, 1, 4, 4, 5, 5, 6, 6, 6};
	static const struct {
		const char *name;
		uint64_t terms[12];
		size_t n;
	} followers[] = {
	    {"a", {1, 1, 1, 4, 4, 5, 5, 6, 6}, 9},
	    {"b", {1, 1, 1, 4}, 4},
	    {"c", {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6}, 11},
	    {"d", {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7}, 12},
	    {"e", {1, 1, 1, 4, 4, 4, 4}, 7},
	    {"f", {1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3}, 11},
	};
	for (size_t i = 0; i < sizeof(followers) / sizeof(followers[0]); i++) {
		netsim *ns = cluster(3, 70 + i, false);
		preload(ns, 1, leader, 10, 7, 0);
		preload(ns, 2, followers[i].terms, followers[i].n, 7, 0);
		preload(ns, 3, leader, 10, 7, 0);
		size_t rejections = 0;
		netsim_set_observer(ns, count_rejections, &rejections);
		netsim_campaign(ns, 1);
		CU_ASSERT_EQUAL(netsim_leader(ns), 1);
		heartbeat(ns, 1);
		bool same = logs_match(netsim_storage(ns, 1), netsim_storage(ns, 2));
		raft_status st = netsim_status(ns, 2);
		if (!same || rejections > 3)
			fprintf(stderr, "\nfigure 7 (%s): same=%d rejections=%zu\n",
			        followers[i].name, same, rejections);
		CU_ASSERT_TRUE(same);
		CU_ASSERT_EQUAL(st.last_index, 11);
		CU_ASSERT_EQUAL(st.commit, 11);
		CU_ASSERT_EQUAL(storage_term(netsim_storage(ns, 2), 11), 8);
		CU_ASSERT(rejections <= 3);
		size_t n1, n2;
		netsim_applied_list(ns, 1, &n1);
		netsim_applied_list(ns, 2, &n2);
		CU_ASSERT_EQUAL(n1, 11);
		CU_ASSERT_EQUAL(n2, 11);
		netsim_free(ns);
	}
}

static void test_new_leader_overwrites_newer_uncommitted(void)
{
	static const uint64_t t1[] = {1};
	static const uint64_t t2[] = {2};
	static const uint64_t want[] = {1, 3};
	netsim *ns = cluster(5, 81, false);
	preload(ns, 1, t1, 1, 1, 0);
	preload(ns, 2, t1, 1, 1, 0);
	preload(ns, 3, t2, 1, 2, 3);
	preload(ns, 4, NULL, 0, 2, 3);
	preload(ns, 5, NULL, 0, 2, 3);
	/* Term 2: 4 and 5 already voted for 3, and 3's log is newer: 1 loses. */
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).term, 2);
	/* Term 3: 2, 4 and 5 vote for 1. */
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL_FATAL(netsim_leader(ns), 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).term, 3);
	heartbeat(ns, 1);
	for (uint64_t id = 1; id <= 5; id++) {
		CU_ASSERT_TRUE(log_equals(netsim_storage(ns, id), want, 2));
		CU_ASSERT_EQUAL(netsim_status(ns, id).commit, 2);
	}
	size_t n;
	const netsim_applied *ap = netsim_applied_list(ns, 3, &n);
	CU_ASSERT_EQUAL_FATAL(n, 2);
	CU_ASSERT_EQUAL(ap[0].term, 1);
	CU_ASSERT_EQUAL(ap[1].term, 3);
	netsim_free(ns);
}

static void test_minority_proposal_never_commits(void)
{
	netsim *ns = cluster(5, 83, false);
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL_FATAL(netsim_leader(ns), 1);
	for (uint64_t a = 1; a <= 2; a++)
		for (uint64_t b = 3; b <= 5; b++)
			netsim_cut(ns, a, b);
	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "lost", 4), RAFT_OK);
	for (int t = 0; t < 5; t++)
		heartbeat(ns, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).last_index, 2);
	CU_ASSERT_EQUAL(netsim_status(ns, 2).last_index, 2);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).commit, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 2).commit, 1);
	netsim_campaign(ns, 3);
	CU_ASSERT_EQUAL_FATAL(netsim_status(ns, 3).role, RAFT_LEADER);
	CU_ASSERT_EQUAL(netsim_propose(ns, 3, "won", 3), RAFT_OK);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).commit, 3);
	netsim_recover(ns);
	heartbeat(ns, 3);
	heartbeat(ns, 3);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).role, RAFT_FOLLOWER);
	for (uint64_t id = 1; id <= 5; id++) {
		CU_ASSERT_FALSE(applied_contains(ns, id, "lost"));
		CU_ASSERT_TRUE(applied_contains(ns, id, "won"));
		CU_ASSERT_EQUAL(storage_term(netsim_storage(ns, id), 2), 2);
		CU_ASSERT_EQUAL(netsim_status(ns, id).commit, 3);
	}
	netsim_free(ns);
}

static void test_proposal_to_lone_candidate_dropped(void)
{
	static const struct {
		size_t n, holes;
	} cases[] = {{3, 2}, {5, 3}, {4, 2}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		netsim *ns = cluster(cases[i].n, 90 + i, false);
		for (size_t h = 0; h < cases[i].holes; h++)
			netsim_blackhole(ns, cases[i].n - h);
		netsim_campaign(ns, 1);
		CU_ASSERT_EQUAL(netsim_status(ns, 1).role, RAFT_CANDIDATE);
		CU_ASSERT_EQUAL(netsim_propose(ns, 1, "p", 1), RAFT_ERR_PROPOSAL_DROPPED);
		CU_ASSERT_EQUAL(netsim_status(ns, 1).last_index, 0);
		CU_ASSERT_EQUAL(storage_last_index(netsim_storage(ns, 1)), 0);
		for (uint64_t id = 1; id <= cases[i].n; id++)
			CU_ASSERT_EQUAL(netsim_status(ns, id).commit, 0);
		netsim_free(ns);
	}
}

static void test_heartbeat_catches_up_isolated_node(void)
{
	netsim *ns = cluster(3, 87, false);
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL_FATAL(netsim_leader(ns), 1);
	netsim_isolate(ns, 3);
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(netsim_propose(ns, 1, "abc", 3), RAFT_OK);
	CU_ASSERT_EQUAL(netsim_status(ns, 2).commit, 4);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).last_index, 1);
	netsim_recover(ns);
	netsim_stabilize(ns);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).last_index, 1);
	heartbeat(ns, 1);
	raft_status st = netsim_status(ns, 3);
	CU_ASSERT_EQUAL(st.last_index, 4);
	CU_ASSERT_EQUAL(st.commit, 4);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(st.term, 1);
	CU_ASSERT_TRUE(logs_match(netsim_storage(ns, 1), netsim_storage(ns, 3)));
	size_t n;
	netsim_applied_list(ns, 3, &n);
	CU_ASSERT_EQUAL(n, 4);
	netsim_free(ns);
}

static void test_old_messages_from_deposed_leader_ignored(void)
{
	static const uint64_t want[] = {1, 2, 3, 3};
	netsim *ns = cluster(3, 89, false);
	netsim_campaign(ns, 1);
	netsim_campaign(ns, 2);
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL_FATAL(netsim_leader(ns), 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).term, 3);
	raft_entry old_entry = {.type = RAFT_ENTRY_NORMAL, .term = 2, .index = 3};
	raft_message app = msg(RAFT_MSG_APPEND, 2, 1, 2);
	app.index = 2;
	app.log_term = 2;
	app.entries = &old_entry;
	app.n_entries = 1;
	app.commit = 3;
	netsim_step(ns, &app);
	raft_message hb = msg(RAFT_MSG_HEARTBEAT, 2, 3, 2);
	hb.commit = 3;
	netsim_step(ns, &hb);
	raft_message vote = msg(RAFT_MSG_REQUEST_VOTE, 2, 3, 2);
	vote.index = 10;
	vote.log_term = 2;
	netsim_step(ns, &vote);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).role, RAFT_LEADER);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).term, 3);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).vote, 1);
	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "somedata", 8), RAFT_OK);
	for (uint64_t id = 1; id <= 3; id++) {
		CU_ASSERT_TRUE(log_equals(netsim_storage(ns, id), want, 4));
		CU_ASSERT_EQUAL(netsim_status(ns, id).commit, 4);
		CU_ASSERT_TRUE(applied_contains(ns, id, "somedata"));
	}
	netsim_free(ns);
}

static bool applied_strictly_increasing(netsim *ns, uint64_t id)
{
	size_t n;
	const netsim_applied *ap = netsim_applied_list(ns, id, &n);
	for (size_t i = 1; i < n; i++)
		if (ap[i].index <= ap[i - 1].index)
			return false;
	return true;
}

static void test_restarted_follower_catches_up(void)
{
	netsim *ns = cluster(3, 91, false);
	netsim_campaign(ns, 1);
	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "before", 6), RAFT_OK);
	heartbeat(ns, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).commit, 2);
	netsim_crash(ns, 3);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).role, -1);
	CU_ASSERT_PTR_NULL(netsim_node(ns, 3));
	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "during", 6), RAFT_OK);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).commit, 3);
	netsim_restart(ns, 3);
	raft_status st = netsim_status(ns, 3);
	CU_ASSERT_EQUAL(st.role, RAFT_FOLLOWER);
	CU_ASSERT_EQUAL(st.term, 1);
	CU_ASSERT_EQUAL(st.last_index, 2);
	heartbeat(ns, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 3).commit, 3);
	CU_ASSERT_TRUE(logs_match(netsim_storage(ns, 1), netsim_storage(ns, 3)));
	CU_ASSERT_TRUE(applied_contains(ns, 3, "during"));
	CU_ASSERT_TRUE(applied_strictly_increasing(ns, 3));
	size_t n;
	netsim_applied_list(ns, 3, &n);
	CU_ASSERT_EQUAL(n, 3);
	netsim_free(ns);
}

static void test_lossy_links_still_converge(void)
{
	for (uint64_t seed = 1; seed <= 10; seed++) {
		netsim *ns = cluster(3, seed, false);
		netsim_campaign(ns, 1);
		CHECK_SEED(netsim_leader(ns) == 1, seed);
		netsim_drop(ns, 1, 2, 0.5);
		netsim_drop(ns, 3, 1, 0.5);
		for (int i = 0; i < 10; i++) {
			CHECK_SEED(netsim_propose(ns, 1, "lossy", 5) == RAFT_OK, seed);
			heartbeat(ns, 1);
		}
		CHECK_SEED(netsim_dropped(ns) > 0, seed);
		netsim_recover(ns);
		heartbeat(ns, 1);
		heartbeat(ns, 1);
		for (uint64_t id = 1; id <= 3; id++) {
			CHECK_SEED(netsim_status(ns, id).commit == 11, seed);
			CHECK_SEED(applied_strictly_increasing(ns, id), seed);
		}
		CHECK_SEED(logs_match(netsim_storage(ns, 1), netsim_storage(ns, 2)), seed);
		CHECK_SEED(logs_match(netsim_storage(ns, 1), netsim_storage(ns, 3)), seed);
		netsim_free(ns);
	}
}

static void test_ignored_acks_block_commit(void)
{
	netsim *ns = cluster(3, 93, false);
	netsim_campaign(ns, 1);
	netsim_ignore(ns, RAFT_MSG_APPEND_RESPONSE);
	CU_ASSERT_EQUAL(netsim_propose(ns, 1, "held", 4), RAFT_OK);
	heartbeat(ns, 1);
	CU_ASSERT_EQUAL(netsim_status(ns, 2).last_index, 2);
	CU_ASSERT_EQUAL(netsim_status(ns, 1).commit, 1);
	netsim_recover(ns);
	heartbeat(ns, 1);
	heartbeat(ns, 1);
	for (uint64_t id = 1; id <= 3; id++)
		CU_ASSERT_EQUAL(netsim_status(ns, id).commit, 2);
	netsim_free(ns);
}

#define CHAOS_DELAYED UINT64_C(0xdead)

typedef struct chaos {
	uint64_t prng;
	size_t duplicated, delayed;
} chaos;

static uint64_t chaos_next(chaos *c)
{
	c->prng ^= c->prng << 13;
	c->prng ^= c->prng >> 7;
	c->prng ^= c->prng << 17;
	return c->prng;
}

/* Duplicates every third APPEND and sends every fourth message (heartbeats aside, whose context
 * carries read ids) once to the back of the queue, marking it in `context`. */
static int chaos_hook(void *ctx, netsim *ns, raft_message *m)
{
	chaos *c = ctx;
	if (m->type == RAFT_MSG_HEARTBEAT || m->type == RAFT_MSG_HEARTBEAT_RESPONSE)
		return 1;
	if (m->context == CHAOS_DELAYED) {
		m->context = 0;
		return 1;
	}
	uint64_t r = chaos_next(c);
	if (r % 4 == 0 && m->context == 0) {
		m->context = CHAOS_DELAYED;
		netsim_inject(ns, m);
		c->delayed++;
		return 0;
	}
	if (m->type == RAFT_MSG_APPEND && r % 3 == 0) {
		c->duplicated++;
		return 2;
	}
	return 1;
}

static void test_duplicated_and_reordered_messages(void)
{
	for (uint64_t seed = 1; seed <= 10; seed++) {
		chaos c = {.prng = seed * 0x9e3779b97f4a7c15ULL};
		netsim *ns = cluster(5, seed, false);
		netsim_campaign(ns, 1);
		CHECK_SEED(netsim_leader(ns) == 1, seed);
		netsim_set_hook(ns, chaos_hook, &c);
		for (int i = 0; i < 20; i++) {
			CHECK_SEED(netsim_propose(ns, 1, "chaos", 5) == RAFT_OK, seed);
			if (i % 5 == 0)
				heartbeat(ns, 1);
		}
		netsim_set_hook(ns, NULL, NULL);
		heartbeat(ns, 1);
		heartbeat(ns, 1);
		CHECK_SEED(c.duplicated > 0 && c.delayed > 0, seed);
		for (uint64_t id = 1; id <= 5; id++) {
			size_t n;
			netsim_applied_list(ns, id, &n);
			CHECK_SEED(n == 21, seed);
			CHECK_SEED(applied_strictly_increasing(ns, id), seed);
			CHECK_SEED(logs_match(netsim_storage(ns, 1), netsim_storage(ns, id)), seed);
		}
		netsim_free(ns);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Registration                                                                               */
/* ------------------------------------------------------------------------------------------ */

#define ADD(s, fn) CU_add_test(s, #fn, fn)

void test_register_replication(void)
{
	CU_pSuite s = CU_add_suite("replication", NULL, NULL);
	ADD(s, test_new_leader_appends_empty_entry);
	ADD(s, test_single_node_commits_only_after_persist);
	ADD(s, test_commit_waits_for_majority);
	ADD(s, test_old_term_entry_not_committed_by_counting);
	ADD(s, test_commit_advance_sent_to_followers);
	ADD(s, test_follower_commit_bounded_by_verified);
	ADD(s, test_follower_append_cases);
	ADD(s, test_duplicate_append_never_removes_entries);
	ADD(s, test_follower_never_truncates_committed);
	ADD(s, test_heartbeat_commit_is_min_of_match_and_commit);
	ADD(s, test_unknown_heartbeat_context_ignored);
	ADD(s, test_stale_ack_does_not_move_progress_back);
	ADD(s, test_stale_probe_rejection_ignored);
	ADD(s, test_uncommitted_size_limit);
	ADD(s, test_committed_size_per_ready);
	ADD(s, test_figure7_follower_logs_converge);
	ADD(s, test_new_leader_overwrites_newer_uncommitted);
	ADD(s, test_minority_proposal_never_commits);
	ADD(s, test_proposal_to_lone_candidate_dropped);
	ADD(s, test_heartbeat_catches_up_isolated_node);
	ADD(s, test_old_messages_from_deposed_leader_ignored);
	ADD(s, test_restarted_follower_catches_up);
	ADD(s, test_lossy_links_still_converge);
	ADD(s, test_ignored_acks_block_commit);
	ADD(s, test_duplicated_and_reordered_messages);
}
