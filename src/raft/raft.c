/* raft.c - the Raft state machine: roles, elections, replication, commit, reads, transfers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft_internal.h"

/* Bounds on queues that a peer could otherwise grow without limit. */
#define RAFT_MAX_PENDING_READS 4096
#define RAFT_MAX_READ_STATES   4096

static void raft_become_follower(raft *r, uint64_t term, uint64_t lead);
static bool raft_maybe_send_append(raft *r, raft_progress *pr, bool send_if_empty);

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

void raft_tracef(raft *r, const char *fmt, ...)
{
	if (r->trace == NULL)
		return;
	char line[256];
	int n = snprintf(line, sizeof(line), "[term %llu %s] ", (unsigned long long)r->term,
	                 raft_role_name(r->state));
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	r->trace(r->trace_ctx, r->id, line);
}

static void raft_fail(raft *r, int rv)
{
	if (r->err == 0) {
		r->err = rv;
		raft_tracef(r, "stopping: %s", raft_strerror(rv));
	}
}

static int raft_voter_index(const raft *r, uint64_t id)
{
	for (size_t i = 0; i < r->n_prs; i++)
		if (r->prs[i].id == id)
			return (int)i;
	return -1;
}

raft_progress *raft_progress_of(raft *r, uint64_t id)
{
	int i = raft_voter_index(r, id);
	return i < 0 ? NULL : &r->prs[i];
}

static size_t raft_quorum(const raft *r)
{
	return r->n_prs / 2 + 1;
}

static bool raft_promotable(const raft *r)
{
	return raft_voter_index(r, r->id) >= 0;
}

static void raft_reset_randomized_timeout(raft *r)
{
	uint64_t span = (uint64_t)r->election_timeout;
	r->randomized_election_timeout = r->election_timeout + (int)(util_rand(&r->rng) % span);
}

static bool raft_committed_in_term(raft *r)
{
	return log_term_or_zero(&r->log, r->log.committed) == r->term;
}

/* ------------------------------------------------------------------------------------------ */
/* Outgoing messages                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* Responses that promise durable state: they may leave only after the Ready is persisted. */
static bool raft_needs_persist(int type)
{
	return type == RAFT_MSG_REQUEST_VOTE || type == RAFT_MSG_REQUEST_VOTE_RESPONSE ||
	       type == RAFT_MSG_PRE_VOTE_RESPONSE || type == RAFT_MSG_APPEND_RESPONSE;
}

static int raft_queue_push(raft_msg_queue *q, raft_message *m)
{
	if (q->n == q->cap) {
		size_t ncap = q->cap ? q->cap * 2 : 8;
		raft_message *p = realloc(q->items, ncap * sizeof(*p));
		if (p == NULL)
			return RAFT_ERR_NOMEM;
		q->items = p;
		q->cap = ncap;
	}
	q->items[q->n++] = *m;
	memset(m, 0, sizeof(*m));
	return RAFT_OK;
}

void raft_msg_queue_clear(raft_msg_queue *q)
{
	for (size_t i = 0; i < q->n; i++)
		raft_message_free(&q->items[i]);
	free(q->items);
	memset(q, 0, sizeof(*q));
}

/* Queues m, taking ownership of what it points to (freed on failure too). `from` defaults to
 * this node; `term` to the current term, except for forwarded PROPOSE and READ_INDEX, which
 * travel as local messages (term 0). */
static void raft_send(raft *r, raft_message *m)
{
	if (m->from == 0)
		m->from = r->id;
	if (m->term == 0 && m->type != RAFT_MSG_PROPOSE && m->type != RAFT_MSG_READ_INDEX)
		m->term = r->term;
	raft_msg_queue *q = raft_needs_persist(m->type) ? &r->msgs_after : &r->msgs;
	if (raft_queue_push(q, m) != RAFT_OK) {
		raft_message_free(m);
		raft_fail(r, RAFT_ERR_NOMEM);
	}
}

static void raft_send_simple(raft *r, int type, uint64_t to, uint64_t term, bool reject)
{
	raft_message m = {.type = type, .to = to, .term = term, .reject = reject};
	raft_send(r, &m);
}

static void raft_push_read_state(raft *r, uint64_t index, uint64_t context)
{
	if (r->n_read_states == RAFT_MAX_READ_STATES)
		return; /* the application is not consuming Readies; the read times out and retries
		         */
	if (r->n_read_states == r->cap_read_states) {
		size_t ncap = r->cap_read_states ? r->cap_read_states * 2 : 8;
		raft_read_state *p = realloc(r->read_states, ncap * sizeof(*p));
		if (p == NULL) {
			raft_fail(r, RAFT_ERR_NOMEM);
			return;
		}
		r->read_states = p;
		r->cap_read_states = ncap;
	}
	r->read_states[r->n_read_states++] = (raft_read_state){index, context};
}

/* ------------------------------------------------------------------------------------------ */
/* Replication (leader)                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Sends the latest snapshot instead of entries that were compacted away (§7). */
static bool raft_send_snapshot(raft *r, raft_progress *pr)
{
	raft_message m = {.type = RAFT_MSG_SNAPSHOT, .to = pr->id};
	int rv = r->log.storage->snapshot(r->log.storage->ctx, &m.snapshot);
	if (rv == RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE) {
		raft_tracef(r, "snapshot for %llu temporarily unavailable",
		            (unsigned long long)pr->id);
		return false;
	}
	if (rv != RAFT_OK || m.snapshot.metadata.index == 0) {
		raft_snapshot_clear(&m.snapshot);
		raft_fail(r, rv != RAFT_OK ? rv : RAFT_ERR_IO);
		return false;
	}
	m.commit = r->log.committed;
	raft_tracef(r, "sending snapshot %llu/%llu to %llu",
	            (unsigned long long)m.snapshot.metadata.index,
	            (unsigned long long)m.snapshot.metadata.term, (unsigned long long)pr->id);
	progress_become_snapshot(pr, m.snapshot.metadata.index);
	raft_send(r, &m);
	return true;
}

/*
 * Sends an APPEND to pr with the entries from pr->next on, or a snapshot when they have been
 * compacted. Returns true if a message was sent. With send_if_empty false, nothing is sent when
 * there are no new entries (used to fill the pipeline).
 */
static bool raft_maybe_send_append(raft *r, raft_progress *pr, bool send_if_empty)
{
	if (progress_is_paused(pr))
		return false;
	raft_message m = {.type = RAFT_MSG_APPEND, .to = pr->id, .index = pr->next - 1};
	int rv = log_term(&r->log, m.index, &m.log_term);
	if (rv == RAFT_OK) {
		uint64_t last = log_last_index(&r->log);
		rv = log_entries(&r->log, pr->next, last + 1, r->max_msg_size, &m.entries,
		                 &m.n_entries);
	}
	if (rv == RAFT_ERR_COMPACTED)
		return raft_send_snapshot(r, pr);
	if (rv != RAFT_OK) {
		raft_fail(r, rv);
		return false;
	}
	if (m.n_entries == 0 && !send_if_empty)
		return false;
	m.commit = r->log.committed;
	uint64_t last_sent = m.n_entries ? m.entries[m.n_entries - 1].index : m.index;
	progress_sent_append(pr, last_sent, m.n_entries);
	raft_send(r, &m);
	return true;
}

static void raft_bcast_append(raft *r)
{
	for (size_t i = 0; i < r->n_prs && r->err == 0; i++)
		if (r->prs[i].id != r->id)
			raft_maybe_send_append(r, &r->prs[i], true);
}

/* §6.2 / figure 2: a heartbeat carries commit = min(match, commit), so a follower never
 * commits an index it may not hold yet. */
static void raft_send_heartbeat(raft *r, raft_progress *pr, uint64_t context)
{
	uint64_t commit = pr->match < r->log.committed ? pr->match : r->log.committed;
	raft_message m = {
	    .type = RAFT_MSG_HEARTBEAT, .to = pr->id, .commit = commit, .context = context};
	raft_send(r, &m);
}

static void raft_bcast_heartbeat(raft *r)
{
	uint64_t context = r->reads.n > 0 ? r->read_seq : 0;
	for (size_t i = 0; i < r->n_prs; i++)
		if (r->prs[i].id != r->id)
			raft_send_heartbeat(r, &r->prs[i], context);
}

static int raft_cmp_desc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? 1 : (x > y ? -1 : 0);
}

static void raft_release_pending_reads(raft *r);

/* Commits the highest index a quorum has matched, if it is of the current term (§5.4.2). */
static bool raft_maybe_commit(raft *r)
{
	uint64_t matches[RAFT_MAX_VOTERS];
	for (size_t i = 0; i < r->n_prs; i++)
		matches[i] = r->prs[i].match;
	qsort(matches, r->n_prs, sizeof(matches[0]), raft_cmp_desc);
	uint64_t index = matches[raft_quorum(r) - 1];
	if (!log_maybe_commit(&r->log, index, r->term))
		return false;
	raft_release_pending_reads(r);
	return true;
}

/* The leader's own entries are durable up to the stable index: count them now (thesis
 * §10.2.1). Its match never moves before that, so a crash cannot lose a "committed" entry. */
void raft_on_persisted(raft *r)
{
	if (r->state != RAFT_LEADER || r->err != 0)
		return;
	raft_progress *self = raft_progress_of(r, r->id);
	if (self == NULL)
		return;
	if (progress_maybe_update(self, log_stable_last_index(&r->log)) && raft_maybe_commit(r))
		r->bcast_pending = true;
}

void raft_flush(raft *r)
{
	if (!r->bcast_pending)
		return;
	r->bcast_pending = false;
	if (r->state == RAFT_LEADER && r->err == 0)
		raft_bcast_append(r);
}

void raft_advance_applied(raft *r, uint64_t applied, uint64_t applied_size)
{
	if (applied > r->log.applied)
		r->log.applied = applied;
	if (r->state == RAFT_LEADER)
		r->uncommitted_size =
		    applied_size < r->uncommitted_size ? r->uncommitted_size - applied_size : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Role changes                                                                               */
/* ------------------------------------------------------------------------------------------ */

static void raft_abort_transfer(raft *r)
{
	r->lead_transferee = 0;
	r->transfer_elapsed = 0;
}

static void raft_clear_reads(raft *r)
{
	r->reads.n = 0;
	r->pending_reads.n = 0;
}

static void raft_reset(raft *r, uint64_t term)
{
	if (r->term != term) {
		r->term = term;
		r->vote = 0;
	}
	r->lead = 0;
	r->bcast_pending = false;
	r->election_elapsed = 0;
	r->heartbeat_elapsed = 0;
	raft_reset_randomized_timeout(r);
	raft_abort_transfer(r);
	memset(r->votes, 0, sizeof(r->votes));
	uint64_t next = log_last_index(&r->log) + 1;
	for (size_t i = 0; i < r->n_prs; i++)
		progress_reset(&r->prs[i], next);
	r->uncommitted_size = 0;
	raft_clear_reads(r);
}

static void raft_become_follower(raft *r, uint64_t term, uint64_t lead)
{
	raft_reset(r, term);
	r->lead = lead;
	r->state = RAFT_FOLLOWER;
	raft_tracef(r, "became follower, leader %llu", (unsigned long long)lead);
}

static void raft_become_pre_candidate(raft *r)
{
	/* §9.6: no term change and no vote; only the timeout is redrawn. */
	r->state = RAFT_PRE_CANDIDATE;
	r->lead = 0;
	memset(r->votes, 0, sizeof(r->votes));
	raft_reset_randomized_timeout(r);
	raft_tracef(r, "became pre-candidate");
}

static void raft_become_candidate(raft *r)
{
	raft_reset(r, r->term + 1);
	r->vote = r->id;
	r->state = RAFT_CANDIDATE;
	raft_tracef(r, "became candidate");
}

static void raft_become_leader(raft *r)
{
	raft_reset(r, r->term);
	r->lead = r->id;
	r->state = RAFT_LEADER;
	raft_progress *self = raft_progress_of(r, r->id);
	progress_become_replicate(self);
	self->recent_active = true;
	/* §8: a new leader commits an empty entry of its own term to learn what is committed. */
	raft_entry empty = {
	    .type = RAFT_ENTRY_NORMAL, .term = r->term, .index = log_last_index(&r->log) + 1};
	if (log_append(&r->log, &empty, 1) != RAFT_OK)
		return;
	raft_tracef(r, "became leader at index %llu", (unsigned long long)empty.index);
	raft_bcast_append(r);
}

/* Records a vote and reports the election's outcome: 1 won, -1 lost, 0 pending. */
static int raft_poll(raft *r, uint64_t id, bool granted)
{
	int i = raft_voter_index(r, id);
	if (i >= 0 && r->votes[i] == 0)
		r->votes[i] = granted ? 1 : -1;
	size_t yes = 0, no = 0;
	for (size_t k = 0; k < r->n_prs; k++) {
		yes += r->votes[k] == 1;
		no += r->votes[k] == -1;
	}
	if (yes >= raft_quorum(r))
		return 1;
	if (no >= raft_quorum(r))
		return -1;
	return 0;
}

enum { CAMPAIGN_PRE_ELECTION, CAMPAIGN_ELECTION, CAMPAIGN_TRANSFER };

static void raft_campaign(raft *r, int kind)
{
	if (!raft_promotable(r))
		return;
	int vote_type;
	uint64_t term;
	if (kind == CAMPAIGN_PRE_ELECTION) {
		raft_become_pre_candidate(r);
		vote_type = RAFT_MSG_PRE_VOTE;
		term = r->term + 1; /* the pre-vote asks about the term we would move to */
	} else {
		raft_become_candidate(r);
		vote_type = RAFT_MSG_REQUEST_VOTE;
		term = r->term;
	}
	if (raft_poll(r, r->id, true) == 1) {
		/* A single voter wins at once. */
		if (kind == CAMPAIGN_PRE_ELECTION)
			raft_campaign(r, CAMPAIGN_ELECTION);
		else
			raft_become_leader(r);
		return;
	}
	uint64_t last = log_last_index(&r->log), last_term = log_last_term(&r->log);
	for (size_t i = 0; i < r->n_prs; i++) {
		if (r->prs[i].id == r->id)
			continue;
		raft_message m = {.type = vote_type,
		                  .to = r->prs[i].id,
		                  .term = term,
		                  .index = last,
		                  .log_term = last_term,
		                  .context = kind == CAMPAIGN_TRANSFER ? RAFT_CONTEXT_TRANSFER : 0};
		raft_send(r, &m);
	}
}

static void raft_hup(raft *r, int kind)
{
	if (r->state == RAFT_LEADER)
		return;
	if (kind == CAMPAIGN_ELECTION && r->pre_vote)
		kind = CAMPAIGN_PRE_ELECTION;
	raft_campaign(r, kind);
}

/* ------------------------------------------------------------------------------------------ */
/* Ticks                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static bool raft_quorum_active(raft *r)
{
	size_t active = 0;
	for (size_t i = 0; i < r->n_prs; i++) {
		if (r->prs[i].id == r->id || r->prs[i].recent_active)
			active++;
		if (r->prs[i].id != r->id)
			r->prs[i].recent_active = false;
	}
	return active >= raft_quorum(r);
}

static void raft_tick_election(raft *r)
{
	r->election_elapsed++;
	if (raft_promotable(r) && r->election_elapsed >= r->randomized_election_timeout) {
		r->election_elapsed = 0;
		raft_hup(r, CAMPAIGN_ELECTION);
	}
}

static void raft_tick_heartbeat(raft *r)
{
	r->heartbeat_elapsed++;
	r->election_elapsed++;
	if (r->election_elapsed >= r->election_timeout) {
		r->election_elapsed = 0;
		/* §6.2: a leader that cannot reach a quorum for an election timeout steps down. */
		if (r->check_quorum && !raft_quorum_active(r)) {
			raft_tracef(r, "lost contact with a quorum; stepping down");
			raft_become_follower(r, r->term, 0);
			return;
		}
	}
	/* Its own timer, so that transfer requests can never postpone the quorum check. */
	if (r->lead_transferee != 0 && ++r->transfer_elapsed >= r->election_timeout) {
		raft_tracef(r, "transfer to %llu timed out",
		            (unsigned long long)r->lead_transferee);
		raft_abort_transfer(r);
	}
	if (r->heartbeat_elapsed >= r->heartbeat_timeout) {
		r->heartbeat_elapsed = 0;
		raft_bcast_heartbeat(r);
	}
}

void raft_tick(raft *r)
{
	if (r->state == RAFT_LEADER)
		raft_tick_heartbeat(r);
	else
		raft_tick_election(r);
}

/* ------------------------------------------------------------------------------------------ */
/* Linearizable reads (§6.4)                                                                  */
/* ------------------------------------------------------------------------------------------ */

static int raft_read_queue_push(raft_read_queue *q, const raft_read_request *req)
{
	if (q->n == q->cap) {
		size_t ncap = q->cap ? q->cap * 2 : 8;
		raft_read_request *p = realloc(q->items, ncap * sizeof(*p));
		if (p == NULL)
			return RAFT_ERR_NOMEM;
		q->items = p;
		q->cap = ncap;
	}
	q->items[q->n++] = *req;
	return RAFT_OK;
}

static void raft_answer_read(raft *r, uint64_t from, uint64_t index, uint64_t context)
{
	if (from == r->id || from == 0) {
		raft_push_read_state(r, index, context);
		return;
	}
	raft_message m = {
	    .type = RAFT_MSG_READ_INDEX_RESPONSE, .to = from, .index = index, .context = context};
	raft_send(r, &m);
}

static void raft_leader_read(raft *r, uint64_t from, uint64_t context)
{
	raft_read_request req = {.index = r->log.committed, .from = from, .context = context};
	if (!raft_committed_in_term(r)) {
		/* The commit index of a new leader may be stale until its empty entry commits. */
		if (r->pending_reads.n < RAFT_MAX_PENDING_READS &&
		    raft_read_queue_push(&r->pending_reads, &req) != RAFT_OK)
			raft_fail(r, RAFT_ERR_NOMEM);
		return;
	}
	if (r->n_prs == 1) {
		raft_answer_read(r, from, r->log.committed, context);
		return;
	}
	if (r->reads.n >= RAFT_MAX_PENDING_READS)
		return;
	req.seq = ++r->read_seq;
	req.acks = 1u << raft_voter_index(r, r->id);
	if (raft_read_queue_push(&r->reads, &req) != RAFT_OK) {
		raft_fail(r, RAFT_ERR_NOMEM);
		return;
	}
	raft_bcast_heartbeat(r);
}

static void raft_release_pending_reads(raft *r)
{
	if (r->pending_reads.n == 0 || !raft_committed_in_term(r))
		return;
	raft_read_queue pending = r->pending_reads;
	memset(&r->pending_reads, 0, sizeof(r->pending_reads));
	for (size_t i = 0; i < pending.n; i++)
		raft_leader_read(r, pending.items[i].from, pending.items[i].context);
	free(pending.items);
}

static size_t raft_popcount(uint32_t x)
{
	size_t n = 0;
	for (; x; x &= x - 1)
		n++;
	return n;
}

/* A heartbeat ack carrying seq confirms every read registered at or before seq. */
static void raft_read_ack(raft *r, uint64_t from, uint64_t seq)
{
	int vi = raft_voter_index(r, from);
	if (vi < 0 || seq == 0)
		return;
	size_t confirmed = 0;
	for (size_t i = 0; i < r->reads.n; i++) {
		raft_read_request *req = &r->reads.items[i];
		if (req->seq > seq)
			break;
		req->acks |= 1u << vi;
		if (raft_popcount(req->acks) >= raft_quorum(r))
			confirmed = i + 1;
	}
	if (confirmed == 0)
		return;
	for (size_t i = 0; i < confirmed; i++)
		raft_answer_read(r, r->reads.items[i].from, r->reads.items[i].index,
		                 r->reads.items[i].context);
	memmove(r->reads.items, r->reads.items + confirmed,
	        (r->reads.n - confirmed) * sizeof(raft_read_request));
	r->reads.n -= confirmed;
}

/* ------------------------------------------------------------------------------------------ */
/* Leadership transfer (thesis §3.10)                                                         */
/* ------------------------------------------------------------------------------------------ */

static void raft_send_timeout_now(raft *r, uint64_t to)
{
	raft_tracef(r, "sending TIMEOUT_NOW to %llu", (unsigned long long)to);
	raft_send_simple(r, RAFT_MSG_TIMEOUT_NOW, to, 0, false);
}

static void raft_leader_transfer(raft *r, uint64_t transferee)
{
	raft_progress *pr = raft_progress_of(r, transferee);
	if (pr == NULL || transferee == r->id)
		return;
	if (r->lead_transferee == transferee)
		return;
	r->lead_transferee = transferee;
	r->transfer_elapsed = 0; /* the transfer must finish within one election timeout */
	raft_tracef(r, "transferring leadership to %llu", (unsigned long long)transferee);
	if (pr->match == log_last_index(&r->log))
		raft_send_timeout_now(r, transferee);
	else
		raft_maybe_send_append(r, pr, true);
}

/* ------------------------------------------------------------------------------------------ */
/* Leader                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static int raft_leader_propose(raft *r, const raft_message *m)
{
	if (raft_progress_of(r, r->id) == NULL || r->lead_transferee != 0 || m->n_entries == 0)
		return RAFT_ERR_PROPOSAL_DROPPED;
	for (size_t i = 0; i < m->n_entries; i++)
		if (m->entries[i].type != RAFT_ENTRY_NORMAL)
			return RAFT_ERR_PROPOSAL_DROPPED; /* membership is fixed in this version */
	uint64_t size = util_accounted_size(m->entries, m->n_entries);
	if (r->max_uncommitted_size > 0 && r->uncommitted_size > 0 &&
	    r->uncommitted_size + size > r->max_uncommitted_size)
		return RAFT_ERR_PROPOSAL_DROPPED;
	uint64_t last = log_last_index(&r->log);
	raft_entry *ents = malloc(m->n_entries * sizeof(*ents));
	if (ents == NULL) {
		raft_fail(r, RAFT_ERR_NOMEM);
		return RAFT_ERR_NOMEM;
	}
	for (size_t i = 0; i < m->n_entries; i++) {
		ents[i] = m->entries[i]; /* shallow: log_append copies the data */
		ents[i].term = r->term;
		ents[i].index = last + 1 + i;
	}
	int rv = log_append(&r->log, ents, m->n_entries);
	free(ents);
	if (rv != RAFT_OK)
		return rv;
	r->uncommitted_size += size;
	r->bcast_pending = true;
	return RAFT_OK;
}

static void raft_leader_append_response(raft *r, raft_progress *pr, const raft_message *m)
{
	pr->recent_active = true;
	if (m->reject) {
		uint64_t hint = m->reject_hint, hint_term;
		if (m->log_term > 0)
			hint = log_find_conflict_by_term(&r->log, m->reject_hint, m->log_term,
			                                 &hint_term);
		if (progress_maybe_decr_to(pr, m->index, hint)) {
			raft_tracef(r, "%llu rejected %llu, probing from %llu",
			            (unsigned long long)pr->id, (unsigned long long)m->index,
			            (unsigned long long)pr->next);
			if (pr->state == RAFT_PROGRESS_REPLICATE)
				progress_become_probe(pr);
			raft_maybe_send_append(r, pr, true);
		}
		return;
	}
	if (m->index > log_last_index(&r->log))
		return; /* acknowledges entries we never sent */
	bool was_paused = progress_is_paused(pr);
	bool probe_matched = pr->state == RAFT_PROGRESS_PROBE && pr->match == m->index;
	if (!progress_maybe_update(pr, m->index) && !probe_matched)
		return; /* stale ack */
	if (pr->state == RAFT_PROGRESS_PROBE) {
		progress_become_replicate(pr);
	} else if (pr->state == RAFT_PROGRESS_SNAPSHOT && pr->match >= pr->pending_snapshot) {
		progress_become_probe(pr);
		progress_become_replicate(pr);
	} else if (pr->state == RAFT_PROGRESS_REPLICATE) {
		inflights_free_le(&pr->inflights, m->index);
	}
	if (raft_maybe_commit(r))
		r->bcast_pending = true;
	else if (was_paused)
		raft_maybe_send_append(r, pr, true);
	while (r->err == 0 && raft_maybe_send_append(r, pr, false))
		;
	if (pr->id == r->lead_transferee && pr->match == log_last_index(&r->log))
		raft_send_timeout_now(r, pr->id);
}

static void raft_leader_heartbeat_response(raft *r, raft_progress *pr, const raft_message *m)
{
	pr->recent_active = true;
	pr->probe_sent = false;
	if (pr->state == RAFT_PROGRESS_REPLICATE && inflights_full(&pr->inflights))
		inflights_free_first(&pr->inflights);
	if (pr->match < log_last_index(&r->log))
		raft_maybe_send_append(r, pr, true);
	if (m->context != 0)
		raft_read_ack(r, pr->id, m->context);
}

int raft_report_snapshot(raft *r, uint64_t id, bool ok)
{
	raft_progress *pr = raft_progress_of(r, id);
	if (r->state != RAFT_LEADER || pr == NULL || pr->state != RAFT_PROGRESS_SNAPSHOT)
		return RAFT_OK;
	if (!ok)
		pr->pending_snapshot = 0;
	progress_become_probe(pr);
	/* Success: wait for the follower's ack. Failure: wait for a heartbeat, then retry. */
	pr->probe_sent = true;
	raft_tracef(r, "snapshot to %llu %s", (unsigned long long)id, ok ? "done" : "failed");
	return RAFT_OK;
}

int raft_report_unreachable(raft *r, uint64_t id)
{
	raft_progress *pr = raft_progress_of(r, id);
	if (r->state == RAFT_LEADER && pr != NULL && pr->state == RAFT_PROGRESS_REPLICATE)
		progress_become_probe(pr);
	return RAFT_OK;
}

static int raft_step_leader(raft *r, const raft_message *m)
{
	raft_progress *pr;
	switch (m->type) {
	case RAFT_MSG_PROPOSE:
		return raft_leader_propose(r, m);
	case RAFT_MSG_READ_INDEX:
		raft_leader_read(r, m->from, m->context);
		return RAFT_OK;
	case RAFT_MSG_TRANSFER_LEADER:
		raft_leader_transfer(r, m->from);
		return RAFT_OK;
	default:
		break;
	}
	pr = raft_progress_of(r, m->from);
	if (pr == NULL)
		return RAFT_OK;
	if (m->type == RAFT_MSG_APPEND_RESPONSE)
		raft_leader_append_response(r, pr, m);
	else if (m->type == RAFT_MSG_HEARTBEAT_RESPONSE)
		raft_leader_heartbeat_response(r, pr, m);
	return RAFT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Follower and candidate                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void raft_send_append_response(raft *r, uint64_t to, uint64_t index)
{
	raft_message resp = {.type = RAFT_MSG_APPEND_RESPONSE, .to = to, .index = index};
	raft_send(r, &resp);
}

static void raft_handle_append(raft *r, const raft_message *m)
{
	if (m->index < r->log.committed) {
		raft_send_append_response(r, m->from, r->log.committed);
		return;
	}
	uint64_t last_new;
	if (log_maybe_append(&r->log, m->index, m->log_term, m->commit, m->entries, m->n_entries,
	                     &last_new)) {
		raft_send_append_response(r, m->from, last_new);
		return;
	}
	if (r->log.err != 0)
		return;
	/* Reject with a hint: our last index at or below m->index whose term is <= m->log_term,
	 * so the leader can skip a whole term of mismatches in one round trip. */
	uint64_t last = log_last_index(&r->log);
	uint64_t hint_term;
	uint64_t hint = log_find_conflict_by_term(&r->log, m->index < last ? m->index : last,
	                                          m->log_term, &hint_term);
	raft_message resp = {.type = RAFT_MSG_APPEND_RESPONSE,
	                     .to = m->from,
	                     .index = m->index,
	                     .reject = true,
	                     .reject_hint = hint,
	                     .log_term = hint_term};
	raft_tracef(r, "rejecting append at %llu/%llu, hint %llu/%llu",
	            (unsigned long long)m->index, (unsigned long long)m->log_term,
	            (unsigned long long)hint, (unsigned long long)hint_term);
	raft_send(r, &resp);
}

static void raft_handle_heartbeat(raft *r, const raft_message *m)
{
	/* The leader sends min(match, commit); clamp anyway so a confused peer cannot stop us. */
	uint64_t last = log_last_index(&r->log);
	log_commit_to(&r->log, m->commit < last ? m->commit : last);
	raft_message resp = {
	    .type = RAFT_MSG_HEARTBEAT_RESPONSE, .to = m->from, .context = m->context};
	raft_send(r, &resp);
}

static bool raft_conf_has(const raft_conf_state *cs, uint64_t id)
{
	for (size_t i = 0; i < cs->n_voters; i++)
		if (cs->voters[i] == id)
			return true;
	return false;
}

static int raft_set_voters(raft *r, const uint64_t *ids, size_t n)
{
	for (size_t i = 0; i < r->n_prs; i++)
		progress_close(&r->prs[i]);
	r->n_prs = 0;
	uint64_t next = log_last_index(&r->log) + 1;
	for (size_t i = 0; i < n; i++) {
		int rv = progress_init(&r->prs[i], ids[i], next, r->max_inflight);
		if (rv != RAFT_OK)
			return rv;
		r->n_prs++;
	}
	memset(r->votes, 0, sizeof(r->votes));
	return RAFT_OK;
}

/* Installs an incoming snapshot into the log; false if it is stale or already covered. */
static bool raft_restore(raft *r, const raft_snapshot *s)
{
	const raft_snapshot_metadata *md = &s->metadata;
	if (md->index <= r->log.committed)
		return false;
	if (!raft_conf_has(&md->conf_state, r->id)) {
		raft_tracef(r, "ignoring snapshot %llu that does not include us",
		            (unsigned long long)md->index);
		return false;
	}
	if (log_match_term(&r->log, md->index, md->term)) {
		/* Our log already holds the snapshot's last entry: fast-forward commit only. */
		log_commit_to(&r->log, md->index);
		return false;
	}
	if (log_restore(&r->log, s) != RAFT_OK)
		return false;
	int rv = raft_set_voters(r, md->conf_state.voters, md->conf_state.n_voters);
	if (rv != RAFT_OK)
		raft_fail(r, rv);
	raft_tracef(r, "restored snapshot %llu/%llu", (unsigned long long)md->index,
	            (unsigned long long)md->term);
	return true;
}

static void raft_handle_snapshot(raft *r, const raft_message *m)
{
	if (raft_restore(r, &m->snapshot))
		raft_send_append_response(r, m->from, log_last_index(&r->log));
	else
		raft_send_append_response(r, m->from, r->log.committed);
}

static int raft_step_follower(raft *r, const raft_message *m)
{
	switch (m->type) {
	case RAFT_MSG_PROPOSE:
	case RAFT_MSG_READ_INDEX:
	case RAFT_MSG_TRANSFER_LEADER: {
		if (r->lead == 0)
			return m->type == RAFT_MSG_PROPOSE ? RAFT_ERR_PROPOSAL_DROPPED : RAFT_OK;
		if (m->type == RAFT_MSG_PROPOSE && r->disable_proposal_forwarding)
			return RAFT_ERR_PROPOSAL_DROPPED;
		raft_message fwd;
		int rv = raft_message_clone(&fwd, m);
		if (rv != RAFT_OK) {
			raft_fail(r, rv);
			return rv;
		}
		fwd.to = r->lead;
		if (fwd.from == 0)
			fwd.from = r->id;
		raft_send(r, &fwd);
		return RAFT_OK;
	}
	case RAFT_MSG_APPEND:
		r->election_elapsed = 0;
		r->lead = m->from;
		raft_handle_append(r, m);
		return RAFT_OK;
	case RAFT_MSG_HEARTBEAT:
		r->election_elapsed = 0;
		r->lead = m->from;
		raft_handle_heartbeat(r, m);
		return RAFT_OK;
	case RAFT_MSG_SNAPSHOT:
		r->election_elapsed = 0;
		r->lead = m->from;
		raft_handle_snapshot(r, m);
		return RAFT_OK;
	case RAFT_MSG_TIMEOUT_NOW:
		raft_tracef(r, "TIMEOUT_NOW from %llu: campaigning", (unsigned long long)m->from);
		raft_hup(r, CAMPAIGN_TRANSFER);
		return RAFT_OK;
	case RAFT_MSG_READ_INDEX_RESPONSE:
		raft_push_read_state(r, m->index, m->context);
		return RAFT_OK;
	default:
		return RAFT_OK;
	}
}

static int raft_step_candidate(raft *r, const raft_message *m)
{
	int my_resp = r->state == RAFT_PRE_CANDIDATE ? RAFT_MSG_PRE_VOTE_RESPONSE
	                                             : RAFT_MSG_REQUEST_VOTE_RESPONSE;
	switch (m->type) {
	case RAFT_MSG_PROPOSE:
		return RAFT_ERR_PROPOSAL_DROPPED;
	case RAFT_MSG_APPEND:
	case RAFT_MSG_HEARTBEAT:
	case RAFT_MSG_SNAPSHOT:
		/* A leader of our term exists: concede (§5.2). */
		raft_become_follower(r, r->term, m->from);
		return raft_step_follower(r, m);
	default:
		break;
	}
	if (m->type != my_resp || raft_progress_of(r, m->from) == NULL)
		return RAFT_OK;
	int outcome = raft_poll(r, m->from, !m->reject);
	if (outcome == 1) {
		if (r->state == RAFT_PRE_CANDIDATE)
			raft_campaign(r, CAMPAIGN_ELECTION);
		else
			raft_become_leader(r);
	} else if (outcome == -1) {
		raft_become_follower(r, r->term, 0);
	}
	return RAFT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Step                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static bool raft_is_vote_request(int type)
{
	return type == RAFT_MSG_REQUEST_VOTE || type == RAFT_MSG_PRE_VOTE;
}

/* The term rules, applied once for every role. Returns false when m must be dropped. */
static bool raft_step_term(raft *r, const raft_message *m)
{
	if (m->term == 0)
		return true; /* local message */
	if (m->term > r->term) {
		if (raft_is_vote_request(m->type)) {
			bool force = m->context == RAFT_CONTEXT_TRANSFER;
			bool in_lease = r->check_quorum && r->lead != 0 &&
			                r->election_elapsed < r->election_timeout;
			if (!force && in_lease) {
				raft_tracef(r, "ignoring vote from %llu: leader lease",
				            (unsigned long long)m->from);
				return false;
			}
		}
		if (m->type == RAFT_MSG_PRE_VOTE)
			return true; /* a pre-vote never changes our term */
		if (m->type == RAFT_MSG_PRE_VOTE_RESPONSE && !m->reject)
			return true; /* a granted pre-vote carries the term we would move to */
		bool from_leader = m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
		                   m->type == RAFT_MSG_SNAPSHOT;
		raft_become_follower(r, m->term, from_leader ? m->from : 0);
		return true;
	}
	if (m->term < r->term) {
		if (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT)
			/* Tell a stale leader our term so that it steps down. */
			raft_send_simple(r, RAFT_MSG_APPEND_RESPONSE, m->from, 0, false);
		else if (m->type == RAFT_MSG_PRE_VOTE)
			raft_send_simple(r, RAFT_MSG_PRE_VOTE_RESPONSE, m->from, 0, true);
		return false;
	}
	return true;
}

static void raft_handle_vote_request(raft *r, const raft_message *m)
{
	bool pre = m->type == RAFT_MSG_PRE_VOTE;
	int resp_type = pre ? RAFT_MSG_PRE_VOTE_RESPONSE : RAFT_MSG_REQUEST_VOTE_RESPONSE;
	bool can_vote =
	    r->vote == m->from || (r->vote == 0 && r->lead == 0) || (pre && m->term > r->term);
	if (can_vote && log_is_up_to_date(&r->log, m->index, m->log_term)) {
		/* A granted pre-vote answers in the requested term, so the pre-candidate can tell
		 * it from a stale rejection. */
		raft_send_simple(r, resp_type, m->from, pre ? m->term : r->term, false);
		if (!pre) {
			r->election_elapsed = 0;
			r->vote = m->from;
		}
		raft_tracef(r, "granted %s to %llu", pre ? "pre-vote" : "vote",
		            (unsigned long long)m->from);
	} else {
		raft_send_simple(r, resp_type, m->from, r->term, true);
	}
}

/* Rejects messages whose entries could break the log's invariants. */
/* Strictly below the bound, so that the next term or index (+1) still fits. */
static bool raft_index_ok(uint64_t v)
{
	return v < RAFT_MAX_INDEX;
}

static bool raft_message_is_sane(const raft_message *m)
{
	if (m->n_entries > 0 && m->entries == NULL)
		return false;
	if (!raft_index_ok(m->term) || !raft_index_ok(m->log_term) || !raft_index_ok(m->index) ||
	    !raft_index_ok(m->commit) || !raft_index_ok(m->reject_hint) ||
	    !raft_index_ok(m->snapshot.metadata.index) ||
	    !raft_index_ok(m->snapshot.metadata.term) || m->n_entries > RAFT_MAX_INDEX - m->index)
		return false;
	for (size_t i = 0; i < m->n_entries; i++) {
		const raft_entry *e = &m->entries[i];
		if (e->type != RAFT_ENTRY_NORMAL && e->type != RAFT_ENTRY_CONF_CHANGE)
			return false;
		if (e->len > 0 && e->data == NULL)
			return false;
		if (m->type != RAFT_MSG_APPEND)
			continue;
		if (e->index != m->index + 1 + i || e->term > m->term || e->term < m->log_term)
			return false;
		if (i > 0 && e->term < m->entries[i - 1].term)
			return false;
	}
	const raft_conf_state *cs = &m->snapshot.metadata.conf_state;
	if (m->type == RAFT_MSG_SNAPSHOT) {
		if (cs->n_voters > RAFT_MAX_VOTERS || m->snapshot.metadata.term > m->term ||
		    (m->snapshot.len > 0 && m->snapshot.data == NULL))
			return false;
		for (size_t i = 0; i < cs->n_voters; i++)
			if (cs->voters[i] == 0 || (i > 0 && cs->voters[i] <= cs->voters[i - 1]))
				return false;
	}
	return m->type >= 0 && m->type < RAFT_MSG_TYPE_COUNT;
}

static int raft_step_inner(raft *r, const raft_message *m)
{
	if (!raft_message_is_sane(m)) {
		raft_tracef(r, "dropping malformed %s from %llu", raft_message_type_name(m->type),
		            (unsigned long long)m->from);
		return RAFT_ERR_INVALID;
	}
	if (!raft_step_term(r, m))
		return RAFT_OK;
	switch (m->type) {
	case RAFT_MSG_HUP:
		raft_hup(r, CAMPAIGN_ELECTION);
		return RAFT_OK;
	case RAFT_MSG_BEAT:
		if (r->state == RAFT_LEADER)
			raft_bcast_heartbeat(r);
		return RAFT_OK;
	case RAFT_MSG_REQUEST_VOTE:
	case RAFT_MSG_PRE_VOTE:
		raft_handle_vote_request(r, m);
		return RAFT_OK;
	default:
		break;
	}
	switch (r->state) {
	case RAFT_LEADER:
		return raft_step_leader(r, m);
	case RAFT_FOLLOWER:
		return raft_step_follower(r, m);
	default:
		return raft_step_candidate(r, m);
	}
}

int raft_step(raft *r, const raft_message *m)
{
	if (r->err != 0)
		return RAFT_ERR_STOPPED;
	int rv = raft_step_inner(r, m);
	if (r->err == 0 && r->log.err != 0)
		raft_fail(r, r->log.err);
	return r->err != 0 ? r->err : rv;
}

/* ------------------------------------------------------------------------------------------ */
/* Construction                                                                               */
/* ------------------------------------------------------------------------------------------ */

static int raft_check_config(const raft_config *c)
{
	if (c->id == 0 || c->storage == NULL || c->heartbeat_tick < 1 ||
	    c->election_tick <= c->heartbeat_tick || c->max_inflight_msgs < 1 ||
	    c->n_peers > RAFT_MAX_VOTERS || (c->n_peers > 0 && c->peers == NULL))
		return RAFT_ERR_INVALID;
	const raft_storage *s = c->storage;
	if (!s->initial_state || !s->entries || !s->term || !s->first_index || !s->last_index ||
	    !s->snapshot)
		return RAFT_ERR_INVALID;
	return RAFT_OK;
}

static int raft_cmp_asc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : (x > y ? 1 : 0);
}

/* Membership from the config's peers, else from storage; sorted, without zero or duplicates. */
static int raft_load_voters(raft *r, const raft_config *c, const raft_conf_state *cs)
{
	uint64_t ids[RAFT_MAX_VOTERS];
	size_t n = c->n_peers > 0 ? c->n_peers : cs->n_voters;
	if (n > RAFT_MAX_VOTERS)
		return RAFT_ERR_INVALID;
	memcpy(ids, c->n_peers > 0 ? c->peers : cs->voters, n * sizeof(uint64_t));
	qsort(ids, n, sizeof(ids[0]), raft_cmp_asc);
	for (size_t i = 0; i < n; i++)
		if (ids[i] == 0 || (i > 0 && ids[i] == ids[i - 1]))
			return RAFT_ERR_INVALID;
	return raft_set_voters(r, ids, n);
}

static int raft_load_hard_state(raft *r, const raft_hard_state *hs)
{
	/* A commit below the snapshot index is stale but harmless: the snapshot is committed. */
	if (hs->commit > log_last_index(&r->log))
		return RAFT_ERR_CORRUPT;
	r->term = hs->term;
	r->vote = hs->vote;
	if (hs->commit > r->log.committed)
		r->log.committed = hs->commit;
	return RAFT_OK;
}

int raft_init(raft *r, const raft_config *c)
{
	raft_hard_state hs = {0};
	raft_conf_state cs = {0};
	int rv = raft_check_config(c);
	if (rv != RAFT_OK)
		return rv;
	memset(r, 0, sizeof(*r));
	r->id = c->id;
	r->election_timeout = c->election_tick;
	r->heartbeat_timeout = c->heartbeat_tick;
	r->max_inflight = c->max_inflight_msgs;
	r->max_msg_size = c->max_size_per_msg;
	r->max_uncommitted_size = c->max_uncommitted_entries_size;
	r->check_quorum = c->check_quorum;
	r->pre_vote = c->pre_vote;
	r->disable_proposal_forwarding = c->disable_proposal_forwarding;
	r->trace = c->trace;
	r->trace_ctx = c->trace_ctx;
	r->rng = c->seed ^ (c->id * UINT64_C(0xd6e8feb86659fd93));
	util_rand(&r->rng);

	rv = log_init(&r->log, c->storage, c->max_committed_size_per_ready);
	if (rv != RAFT_OK)
		goto fail;
	rv = c->storage->initial_state(c->storage->ctx, &hs, &cs);
	if (rv == RAFT_OK)
		rv = raft_load_voters(r, c, &cs);
	if (rv == RAFT_OK)
		rv = raft_load_hard_state(r, &hs);
	if (rv != RAFT_OK)
		goto fail;
	if (c->applied > 0) {
		/* Applied entries were committed even if a commit-only hard state (never synced)
		 * was lost; an applied index beyond the log, though, cannot be right. */
		if (c->applied > log_last_index(&r->log)) {
			rv = RAFT_ERR_INVALID;
			goto fail;
		}
		if (c->applied > r->log.committed)
			r->log.committed = c->applied;
		if (c->applied > r->log.applied)
			r->log.applied = r->log.applying = c->applied;
	}
	raft_become_follower(r, r->term, 0);
	if (r->log.err != 0) {
		rv = r->log.err;
		goto fail;
	}
	return RAFT_OK;
fail:
	raft_close(r);
	return rv;
}

void raft_close(raft *r)
{
	for (size_t i = 0; i < r->n_prs; i++)
		progress_close(&r->prs[i]);
	log_close(&r->log);
	raft_msg_queue_clear(&r->msgs);
	raft_msg_queue_clear(&r->msgs_after);
	free(r->read_states);
	free(r->reads.items);
	free(r->pending_reads.items);
	memset(r, 0, sizeof(*r));
}
