/* example_ready_loop.c - the README's example: three raft_rawnodes driven by hand. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "raft.h"

#define N        3
#define NET_SIZE 256

static raft_rawnode *node[N + 1];
static raft_memory_storage *disk[N + 1];
static raft_message net[NET_SIZE]; /* messages in flight, owned here */
static size_t n_net;
static int n_applied;

/* A real transport would encode the message; a full network drops it, which Raft tolerates. */
static void net_send(const raft_message *m)
{
	if (n_net < NET_SIZE && raft_message_clone(&net[n_net], m) == RAFT_OK)
		n_net++;
}

static int handle_ready(uint64_t id)
{
	raft_ready rd;
	int rv = raft_rawnode_ready(node[id], &rd);
	if (rv != RAFT_OK)
		return rv;

	/* 1. The leader's APPEND and HEARTBEAT may leave before its own write. */
	for (size_t i = 0; i < rd.n_messages; i++)
		net_send(&rd.messages[i]);

	/* 2. Persist snapshot, entries, hard state (one transaction; fsync if rd.must_sync). */
	if (rd.has_snapshot)
		rv = raft_memory_storage_apply_snapshot(disk[id], &rd.snapshot);
	if (rv == RAFT_OK && rd.n_entries > 0)
		rv = raft_memory_storage_append(disk[id], rd.entries, rd.n_entries);
	if (rv == RAFT_OK && rd.has_hard_state)
		rv = raft_memory_storage_set_hard_state(disk[id], &rd.hard_state);
	if (rv != RAFT_OK)
		return rv;

	/* 3. Votes and append responses promise durable state: send them only now. */
	for (size_t i = 0; i < rd.n_persisted_messages; i++)
		net_send(&rd.persisted_messages[i]);

	/* 4. Apply committed entries to the state machine. */
	for (size_t i = 0; i < rd.n_committed_entries; i++) {
		const raft_entry *e = &rd.committed_entries[i];
		if (e->type == RAFT_ENTRY_NORMAL && e->len > 0) {
			printf("node %" PRIu64 " applies index %" PRIu64 ": %.*s\n", id, e->index,
			       (int)e->len, (const char *)e->data);
			n_applied++;
		}
	}

	/* 5. Hand the Ready back; this frees it. */
	return raft_rawnode_advance(node[id]);
}

static int run(void)
{
	const uint64_t peers[N] = {1, 2, 3};
	int rv;

	for (uint64_t id = 1; id <= N; id++) {
		if ((disk[id] = raft_memory_storage_new()) == NULL)
			return RAFT_ERR_NOMEM;
		raft_config c;
		raft_config_init(&c);
		c.id = id;
		c.peers = peers;
		c.n_peers = N;
		c.storage = raft_memory_storage_interface(disk[id]);
		c.seed = 42;
		if ((rv = raft_rawnode_new(&c, &node[id])) != RAFT_OK)
			return rv;
	}

	bool proposed = false;
	for (int round = 0; round < 1000 && n_applied < N; round++) {
		for (uint64_t id = 1; id <= N; id++)
			if ((rv = raft_rawnode_tick(node[id])) != RAFT_OK)
				return rv;

		raft_message inbox[NET_SIZE];
		size_t n_inbox = n_net;
		memcpy(inbox, net, n_net * sizeof(net[0]));
		n_net = 0;
		for (size_t i = 0; i < n_inbox; i++) {
			if (rv == RAFT_OK && inbox[i].to >= 1 && inbox[i].to <= N)
				rv = raft_rawnode_step(node[inbox[i].to], &inbox[i]);
			raft_message_free(&inbox[i]);
		}
		if (rv != RAFT_OK)
			return rv;

		for (uint64_t id = 1; id <= N; id++)
			if (raft_rawnode_has_ready(node[id]) && (rv = handle_ready(id)) != RAFT_OK)
				return rv;

		raft_status st;
		raft_rawnode_status(node[1], &st);
		if (!proposed && st.leader != 0)
			proposed = raft_rawnode_propose(node[st.leader], "hello", 5) == RAFT_OK;
	}
	return n_applied == N ? RAFT_OK : RAFT_ERR_UNAVAILABLE;
}

int main(void)
{
	int rv = run();
	for (uint64_t id = 1; id <= N; id++) {
		raft_rawnode_free(node[id]);
		raft_memory_storage_free(disk[id]);
	}
	for (size_t i = 0; i < n_net; i++)
		raft_message_free(&net[i]);
	if (rv != RAFT_OK) {
		fprintf(stderr, "example: %s\n", raft_strerror(rv));
		return 1;
	}
	printf("example: all %d nodes applied the entry\n", N);
	return 0;
}
