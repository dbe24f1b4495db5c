/* rawnode.c - the RawNode interface: inputs into the state machine, Ready out, advance back. */
#include <stdlib.h>
#include <string.h>

#include "raft/raft_internal.h"

struct raft_rawnode {
	raft r;
	raft_soft_state prev_soft; /* as last reported in a Ready */
	raft_hard_state prev_hard; /* as last reported in a Ready (or loaded at start) */

	/* The outstanding Ready and what it owns, valid from ready() until advance(). */
	bool outstanding;
	raft_ready rd;
	raft_msg_queue rd_msgs;
	raft_msg_queue rd_msgs_after;
	uint64_t rd_last_index;    /* last entry handed out for persisting, 0 if none */
	uint64_t rd_last_term;     /* its term */
	uint64_t rd_applying;      /* last committed index handed out */
	uint64_t rd_applying_size; /* payload bytes of the committed entries handed out */
};

/* Every entry point refuses work once the node stopped on a fatal error. */
static int rawnode_check(raft_rawnode *rn, int rv)
{
	if (rn->r.err == 0 && rn->r.log.err != 0)
		rn->r.err = rn->r.log.err;
	if (rn->r.err != 0)
		return rv == RAFT_ERR_STOPPED ? rv : rn->r.err;
	return rv;
}

int raft_rawnode_new(const raft_config *c, raft_rawnode **out)
{
	if (c == NULL || out == NULL)
		return RAFT_ERR_INVALID;
	*out = NULL;
	raft_rawnode *rn = calloc(1, sizeof(*rn));
	if (rn == NULL)
		return RAFT_ERR_NOMEM;
	int rv = raft_init(&rn->r, c);
	if (rv != RAFT_OK) {
		free(rn);
		return rv;
	}
	/* The first Ready after a restart carries no soft or hard state, only what must be
	 * (re)applied. */
	rn->prev_soft = (raft_soft_state){rn->r.lead, rn->r.state};
	rn->prev_hard = (raft_hard_state){rn->r.term, rn->r.vote, rn->r.log.committed};
	*out = rn;
	return RAFT_OK;
}

static void rawnode_release_ready(raft_rawnode *rn)
{
	raft_entries_free(rn->rd.entries, rn->rd.n_entries);
	raft_entries_free(rn->rd.committed_entries, rn->rd.n_committed_entries);
	raft_snapshot_clear(&rn->rd.snapshot);
	raft_msg_queue_clear(&rn->rd_msgs);
	raft_msg_queue_clear(&rn->rd_msgs_after);
	free(rn->rd.read_states);
	memset(&rn->rd, 0, sizeof(rn->rd));
	rn->outstanding = false;
}

void raft_rawnode_free(raft_rawnode *rn)
{
	if (rn == NULL)
		return;
	rawnode_release_ready(rn);
	raft_close(&rn->r);
	free(rn);
}

int raft_rawnode_tick(raft_rawnode *rn)
{
	if (rn == NULL)
		return RAFT_ERR_INVALID;
	if (rn->r.err != 0)
		return RAFT_ERR_STOPPED;
	raft_tick(&rn->r);
	return rawnode_check(rn, RAFT_OK);
}

int raft_rawnode_campaign(raft_rawnode *rn)
{
	if (rn == NULL)
		return RAFT_ERR_INVALID;
	raft_message m = {.type = RAFT_MSG_HUP, .from = rn->r.id};
	return rawnode_check(rn, raft_step(&rn->r, &m));
}

int raft_rawnode_propose(raft_rawnode *rn, const void *data, size_t len)
{
	if (rn == NULL || (data == NULL && len > 0))
		return RAFT_ERR_INVALID;
	raft_entry e = {.type = RAFT_ENTRY_NORMAL, .data = (void *)data, .len = len};
	raft_message m = {
	    .type = RAFT_MSG_PROPOSE, .from = rn->r.id, .entries = &e, .n_entries = 1};
	return rawnode_check(rn, raft_step(&rn->r, &m));
}

/*
 * Only forwarded requests (PROPOSE, READ_INDEX, TRANSFER_LEADER) may travel without a term; any
 * other term-0 message would otherwise pass the term rules as "local". A message claiming to be
 * from this node could move its own progress (etcd#14370 by spoofing).
 */
static bool rawnode_is_acceptable(const raft_rawnode *rn, const raft_message *m)
{
	if (m->type == RAFT_MSG_TRANSFER_LEADER)
		return true; /* `from` names the transferee, which may be this node */
	if (m->from == 0)
		return false; /* a read state with a forged origin could answer a local request */
	if (m->term == 0)
		return m->type == RAFT_MSG_PROPOSE || m->type == RAFT_MSG_READ_INDEX;
	return m->from != rn->r.id;
}

int raft_rawnode_step(raft_rawnode *rn, const raft_message *m)
{
	if (rn == NULL || m == NULL || m->type == RAFT_MSG_HUP || m->type == RAFT_MSG_BEAT)
		return RAFT_ERR_INVALID;
	if (rn->r.err != 0)
		return RAFT_ERR_STOPPED;
	if (m->to != 0 && m->to != rn->r.id)
		return RAFT_OK; /* misrouted; not ours to act on */
	if (!rawnode_is_acceptable(rn, m))
		return RAFT_ERR_INVALID;
	return rawnode_check(rn, raft_step(&rn->r, m));
}

static raft_soft_state rawnode_soft(const raft_rawnode *rn)
{
	return (raft_soft_state){rn->r.lead, rn->r.state};
}

static raft_hard_state rawnode_hard(const raft_rawnode *rn)
{
	return (raft_hard_state){rn->r.term, rn->r.vote, rn->r.log.committed};
}

static bool rawnode_soft_changed(const raft_rawnode *rn)
{
	raft_soft_state s = rawnode_soft(rn);
	return s.leader != rn->prev_soft.leader || s.role != rn->prev_soft.role;
}

static bool rawnode_hard_changed(const raft_rawnode *rn)
{
	raft_hard_state h = rawnode_hard(rn);
	return h.term != rn->prev_hard.term || h.vote != rn->prev_hard.vote ||
	       h.commit != rn->prev_hard.commit;
}

bool raft_rawnode_has_ready(raft_rawnode *rn)
{
	if (rn == NULL || rn->r.err != 0 || rn->outstanding)
		return false;
	raft *r = &rn->r;
	return rawnode_soft_changed(rn) || rawnode_hard_changed(rn) ||
	       (r->log.has_snapshot && !r->log.snapshot_in_progress) ||
	       log_has_unhanded_entries(&r->log) || log_has_next_committed(&r->log) ||
	       r->msgs.n > 0 || r->msgs_after.n > 0 || r->n_read_states > 0 ||
	       (r->bcast_pending && r->state == RAFT_LEADER);
}

/* Copies the unstable entries not yet handed out. */
static int rawnode_take_entries(raft_rawnode *rn)
{
	raft_log *l = &rn->r.log;
	if (!log_has_unhanded_entries(l))
		return RAFT_OK;
	size_t from = l->in_progress + 1 > l->offset ? (size_t)(l->in_progress + 1 - l->offset) : 0;
	size_t n = l->n_unstable - from;
	raft_entry *ents = calloc(n, sizeof(*ents));
	if (ents == NULL)
		return RAFT_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		if (util_entry_copy(&ents[i], &l->unstable[from + i]) != RAFT_OK) {
			raft_entries_free(ents, i);
			return RAFT_ERR_NOMEM;
		}
	}
	rn->rd.entries = ents;
	rn->rd.n_entries = n;
	rn->rd_last_index = ents[n - 1].index;
	rn->rd_last_term = ents[n - 1].term;
	l->in_progress = rn->rd_last_index;
	return RAFT_OK;
}

static int rawnode_take_snapshot(raft_rawnode *rn)
{
	raft_log *l = &rn->r.log;
	if (!l->has_snapshot || l->snapshot_in_progress)
		return RAFT_OK;
	int rv = raft_snapshot_copy(&rn->rd.snapshot, &l->snapshot);
	if (rv != RAFT_OK)
		return rv;
	rn->rd.has_snapshot = true;
	l->snapshot_in_progress = true;
	if (l->applying < l->snapshot.metadata.index)
		l->applying = l->snapshot.metadata.index;
	return RAFT_OK;
}

static int rawnode_take_committed(raft_rawnode *rn)
{
	raft_log *l = &rn->r.log;
	int rv = log_next_committed(l, &rn->rd.committed_entries, &rn->rd.n_committed_entries);
	if (rv != RAFT_OK)
		return rv;
	size_t n = rn->rd.n_committed_entries;
	if (n > 0) {
		l->applying = rn->rd.committed_entries[n - 1].index;
		rn->rd_applying_size = util_accounted_size(rn->rd.committed_entries, n);
	}
	rn->rd_applying = l->applying;
	return RAFT_OK;
}

static void rawnode_take_messages(raft_rawnode *rn)
{
	raft *r = &rn->r;
	rn->rd_msgs = r->msgs;
	rn->rd_msgs_after = r->msgs_after;
	memset(&r->msgs, 0, sizeof(r->msgs));
	memset(&r->msgs_after, 0, sizeof(r->msgs_after));
	rn->rd.messages = rn->rd_msgs.items;
	rn->rd.n_messages = rn->rd_msgs.n;
	rn->rd.persisted_messages = rn->rd_msgs_after.items;
	rn->rd.n_persisted_messages = rn->rd_msgs_after.n;
	rn->rd.read_states = r->read_states;
	rn->rd.n_read_states = r->n_read_states;
	r->read_states = NULL;
	r->n_read_states = 0;
	r->cap_read_states = 0;
}

int raft_rawnode_ready(raft_rawnode *rn, raft_ready *rd)
{
	if (rn == NULL || rd == NULL)
		return RAFT_ERR_INVALID;
	if (rn->r.err != 0)
		return RAFT_ERR_STOPPED;
	if (rn->outstanding)
		return RAFT_ERR_INVALID;
	raft_flush(&rn->r);
	if (rawnode_check(rn, RAFT_OK) != RAFT_OK)
		return rn->r.err;
	memset(&rn->rd, 0, sizeof(rn->rd));
	rn->rd_last_index = rn->rd_last_term = rn->rd_applying_size = 0;

	if (rawnode_soft_changed(rn)) {
		rn->rd.has_soft_state = true;
		rn->rd.soft_state = rawnode_soft(rn);
		rn->prev_soft = rn->rd.soft_state;
	}
	if (rawnode_hard_changed(rn)) {
		raft_hard_state h = rawnode_hard(rn);
		rn->rd.has_hard_state = true;
		rn->rd.hard_state = h;
		/* A commit-only change need not be synced: the log can recompute it. */
		rn->rd.must_sync = h.term != rn->prev_hard.term || h.vote != rn->prev_hard.vote;
		rn->prev_hard = h;
	}
	int rv = rawnode_take_snapshot(rn);
	if (rv == RAFT_OK)
		rv = rawnode_take_entries(rn);
	if (rv == RAFT_OK)
		rv = rawnode_take_committed(rn);
	if (rv != RAFT_OK) {
		rawnode_release_ready(rn);
		if (rn->r.err == 0)
			rn->r.err = rn->r.log.err ? rn->r.log.err : rv;
		return rn->r.err;
	}
	rn->rd.must_sync = rn->rd.must_sync || rn->rd.n_entries > 0 || rn->rd.has_snapshot;
	rawnode_take_messages(rn);
	rn->outstanding = true;
	*rd = rn->rd;
	return RAFT_OK;
}

int raft_rawnode_advance(raft_rawnode *rn)
{
	if (rn == NULL || !rn->outstanding)
		return RAFT_ERR_INVALID;
	raft *r = &rn->r;
	if (r->err != 0) {
		rawnode_release_ready(rn);
		return RAFT_ERR_STOPPED;
	}
	if (rn->rd.has_snapshot) {
		log_stable_snapshot_to(&r->log, rn->rd.snapshot.metadata.index);
		if (r->log.applied < rn->rd.snapshot.metadata.index)
			r->log.applied = rn->rd.snapshot.metadata.index;
	}
	if (rn->rd.n_entries > 0)
		log_stable_to(&r->log, rn->rd_last_index, rn->rd_last_term);
	raft_advance_applied(r, rn->rd_applying, rn->rd_applying_size);
	rawnode_release_ready(rn);
	if (r->err == 0)
		raft_on_persisted(r);
	return rawnode_check(rn, RAFT_OK);
}

void raft_rawnode_status(raft_rawnode *rn, raft_status *st)
{
	memset(st, 0, sizeof(*st));
	if (rn == NULL)
		return;
	raft *r = &rn->r;
	st->id = r->id;
	st->role = r->state;
	st->term = r->term;
	st->vote = r->vote;
	st->leader = r->lead;
	st->commit = r->log.committed;
	st->applied = r->log.applied;
	st->first_index = log_first_index(&r->log);
	st->last_index = log_last_index(&r->log);
	st->lead_transferee = r->lead_transferee;
	st->error = r->err;
	st->n_peers = r->n_prs;
	for (size_t i = 0; i < r->n_prs; i++) {
		const raft_progress *p = &r->prs[i];
		st->peers[i] = (raft_peer_status){.id = p->id,
		                                  .match = p->match,
		                                  .next = p->next,
		                                  .state = p->state,
		                                  .paused = progress_is_paused(p),
		                                  .inflight = p->inflights.count,
		                                  .recent_active = p->recent_active,
		                                  .pending_snapshot = p->pending_snapshot};
	}
}

int raft_rawnode_report_snapshot(raft_rawnode *rn, uint64_t id, bool ok)
{
	if (rn == NULL)
		return RAFT_ERR_INVALID;
	if (rn->r.err != 0)
		return RAFT_ERR_STOPPED;
	return rawnode_check(rn, raft_report_snapshot(&rn->r, id, ok));
}

int raft_rawnode_report_unreachable(raft_rawnode *rn, uint64_t id)
{
	if (rn == NULL)
		return RAFT_ERR_INVALID;
	if (rn->r.err != 0)
		return RAFT_ERR_STOPPED;
	return raft_report_unreachable(&rn->r, id);
}

int raft_rawnode_transfer_leader(raft_rawnode *rn, uint64_t transferee)
{
	if (rn == NULL || transferee == 0)
		return RAFT_ERR_INVALID;
	raft_message m = {.type = RAFT_MSG_TRANSFER_LEADER, .from = transferee};
	return rawnode_check(rn, raft_step(&rn->r, &m));
}

int raft_rawnode_read_index(raft_rawnode *rn, uint64_t ctx)
{
	if (rn == NULL)
		return RAFT_ERR_INVALID;
	raft_message m = {.type = RAFT_MSG_READ_INDEX, .from = rn->r.id, .context = ctx};
	return rawnode_check(rn, raft_step(&rn->r, &m));
}
