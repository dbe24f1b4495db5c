/* progress.c - the leader's per-follower replication state: probe, replicate, snapshot. */
#include <stdlib.h>
#include <string.h>

#include "raft/raft_internal.h"

int progress_init(raft_progress *p, uint64_t id, uint64_t next, size_t max_inflight)
{
	memset(p, 0, sizeof(*p));
	p->id = id;
	p->next = next;
	p->inflights.size = max_inflight;
	p->inflights.buf = malloc(max_inflight * sizeof(uint64_t));
	return p->inflights.buf ? RAFT_OK : RAFT_ERR_NOMEM;
}

void progress_close(raft_progress *p)
{
	free(p->inflights.buf);
	memset(p, 0, sizeof(*p));
}

static void inflights_reset(raft_inflights *in)
{
	in->start = 0;
	in->count = 0;
}

void progress_reset(raft_progress *p, uint64_t next)
{
	p->match = 0;
	p->next = next;
	p->state = RAFT_PROGRESS_PROBE;
	p->probe_sent = false;
	p->recent_active = false;
	p->pending_snapshot = 0;
	inflights_reset(&p->inflights);
}

static void progress_set_state(raft_progress *p, int state)
{
	p->probe_sent = false;
	p->pending_snapshot = 0;
	p->state = state;
	inflights_reset(&p->inflights);
}

/* From a snapshot the next probe starts after the snapshot; otherwise right after match. */
void progress_become_probe(raft_progress *p)
{
	if (p->state == RAFT_PROGRESS_SNAPSHOT) {
		uint64_t pending = p->pending_snapshot;
		progress_set_state(p, RAFT_PROGRESS_PROBE);
		p->next = (p->match + 1 > pending + 1) ? p->match + 1 : pending + 1;
	} else {
		progress_set_state(p, RAFT_PROGRESS_PROBE);
		p->next = p->match + 1;
	}
}

void progress_become_replicate(raft_progress *p)
{
	progress_set_state(p, RAFT_PROGRESS_REPLICATE);
	p->next = p->match + 1;
}

void progress_become_snapshot(raft_progress *p, uint64_t snapshot_index)
{
	progress_set_state(p, RAFT_PROGRESS_SNAPSHOT);
	p->pending_snapshot = snapshot_index;
}

/* An ack for index n. Returns false for a stale ack, which never moves match backwards. */
bool progress_maybe_update(raft_progress *p, uint64_t n)
{
	bool updated = false;
	if (p->match < n) {
		p->match = n;
		updated = true;
		p->probe_sent = false;
	}
	if (p->next < n + 1)
		p->next = n + 1;
	return updated;
}

/*
 * A rejection of the APPEND at index `rejected`; match_hint is where the follower's log may
 * match. Returns false when the rejection is stale (it answers an APPEND we no longer wait for).
 */
bool progress_maybe_decr_to(raft_progress *p, uint64_t rejected, uint64_t match_hint)
{
	if (p->state == RAFT_PROGRESS_REPLICATE) {
		if (rejected <= p->match)
			return false;
		p->next = p->match + 1; /* replicate: fall back to just after the known match */
		return true;
	}
	if (p->next == 0 || p->next - 1 != rejected)
		return false;
	uint64_t next = rejected < match_hint + 1 ? rejected : match_hint + 1;
	p->next = next > p->match + 1 ? next : p->match + 1;
	p->probe_sent = false;
	return true;
}

bool progress_is_paused(const raft_progress *p)
{
	switch (p->state) {
	case RAFT_PROGRESS_PROBE:
		return p->probe_sent;
	case RAFT_PROGRESS_REPLICATE:
		return inflights_full(&p->inflights);
	default:
		return true;
	}
}

static void inflights_add(raft_inflights *in, uint64_t index)
{
	if (in->count == in->size)
		return; /* callers check is_paused first; never overwrite */
	in->buf[(in->start + in->count) % in->size] = index;
	in->count++;
}

/* Records an APPEND carrying entries up to last_index (n_entries may be 0 for a commit-only
 * APPEND, which takes no inflight slot in replicate). */
void progress_sent_append(raft_progress *p, uint64_t last_index, size_t n_entries)
{
	if (p->state == RAFT_PROGRESS_REPLICATE) {
		if (n_entries > 0) {
			p->next = last_index + 1;
			inflights_add(&p->inflights, last_index);
		}
	} else if (p->state == RAFT_PROGRESS_PROBE) {
		p->probe_sent = true;
	}
}

bool inflights_full(const raft_inflights *in)
{
	return in->count == in->size;
}

void inflights_free_le(raft_inflights *in, uint64_t index)
{
	while (in->count > 0 && in->buf[in->start] <= index) {
		in->start = (in->start + 1) % in->size;
		in->count--;
	}
	if (in->count == 0)
		in->start = 0;
}

void inflights_free_first(raft_inflights *in)
{
	if (in->count > 0)
		inflights_free_le(in, in->buf[in->start]);
}
