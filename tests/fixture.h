/* fixture.h - a single rawnode over a memory storage, driven by hand, for the core's suites. */
#ifndef TESTS_FIXTURE_H
#define TESTS_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netsim.h"
#include "raft.h"

#define FX_MAX_SENT 512

/* Voter ids 1..16; a config takes the first n_peers of them. */
extern const uint64_t all_peers[RAFT_MAX_VOTERS];

typedef struct fixture {
	raft_memory_storage *ms;
	raft_rawnode *rn;
	raft_message sent[FX_MAX_SENT]; /* messages of the last drain, both lists */
	bool sent_after_persist[FX_MAX_SENT];
	size_t n_sent;
} fixture;

void fx_init(fixture *fx);
void fx_log(fixture *fx, const uint64_t *terms, size_t n);
void fx_hard_state(fixture *fx, uint64_t term, uint64_t vote, uint64_t commit);
void fx_config(fixture *fx, raft_config *c, uint64_t id, size_t n_peers);
void fx_start_with(fixture *fx, const raft_config *c);
void fx_start(fixture *fx, uint64_t id, size_t n_peers);
void fx_clear_sent(fixture *fx);
void fx_keep(fixture *fx, const raft_message *m, bool after_persist);
void fx_persist(fixture *fx, const raft_ready *rd);
void fx_drain(fixture *fx);
void fx_free(fixture *fx);
raft_status fx_status(fixture *fx);
raft_message msg(int type, uint64_t from, uint64_t to, uint64_t term);

int fx_step(fixture *fx, const raft_message *m);
const raft_message *fx_find(const fixture *fx, int type, uint64_t to);
size_t fx_count(const fixture *fx, int type);
bool fx_sent_after_persist(const fixture *fx, const raft_message *m);
void fx_campaign(fixture *fx);
void fx_make_leader(fixture *fx);
void fx_tick(fixture *fx, int n);
netsim *cluster(size_t n, uint64_t seed, bool pre_vote);

uint64_t storage_last_index(raft_memory_storage *ms);
uint64_t storage_term(raft_memory_storage *ms, uint64_t i);
raft_peer_status peer_of(const raft_status *st, uint64_t id);
void heartbeat(netsim *ns, uint64_t leader);

#endif
