/* gc_policy.h - which log entries a leader's GC must keep for its followers (pure, testable). */
#ifndef RAFTKV_NODE_GC_POLICY_H
#define RAFTKV_NODE_GC_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "raft.h"

/*
 * The highest index a leader below the hard limit may compact to, starting from target:
 *   - a follower in snapshot state keeps its pending_snapshot: once installed, it continues
 *     from the entry after it, which must still be here (else the snapshot livelock: it
 *     finishes and needs another snapshot, forever);
 *   - a follower whose next entry is already gone (match + 1 < first_index) needs a snapshot
 *     whatever is kept, so its match holds nothing back (review F4: it used to freeze GC until
 *     the hard limit, which then protects no one);
 *   - any other follower keeps its match if active[i] says it answered recently. The caller
 *     decides "recently" over a span longer than one check-quorum window: recent_active alone
 *     is cleared at every check-quorum tick (Raft dissertation §6.2), right before a GC pass
 *     could run (review F3);
 *   - every snapshot this node is sending keeps its index (`sending`: the lowest, or
 *     UINT64_MAX), for the same reason as pending_snapshot.
 * st and active (st->n_peers flags, parallel to st->peers) are borrowed. The node itself
 * (st->id) is skipped.
 */
static inline uint64_t gc_policy_limit(const raft_status *st, const bool *active, uint64_t target,
                                       uint64_t sending)
{
	for (size_t i = 0; i < st->n_peers; i++) {
		const raft_peer_status *p = &st->peers[i];

		if (p->id == st->id)
			continue;
		if (p->state == RAFT_PROGRESS_SNAPSHOT) {
			if (p->pending_snapshot != 0 && p->pending_snapshot < target)
				target = p->pending_snapshot;
		} else if (p->match + 1 >= st->first_index && active[i] && p->match < target) {
			target = p->match;
		}
	}
	return sending < target ? sending : target;
}

#endif /* RAFTKV_NODE_GC_POLICY_H */
