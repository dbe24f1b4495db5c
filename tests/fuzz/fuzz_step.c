/* fuzz_step.c - libFuzzer target: fuzz bytes drive a 3-node in-memory cluster operation by op. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"

/*
 * Input: one config byte, then operations. Each operation is an opcode byte followed by its
 * arguments. The cluster must never crash, leak or trip a sanitizer. While every message in
 * play came from the nodes themselves (no decoded fuzz bytes, no corrupted message), the run
 * is also checked for safety: committed entries arrive in index order on every node, and no
 * two nodes ever apply different entries at the same index.
 */

#define N         3
#define QUEUE_MAX 128
#define MAX_INDEX 4096

enum {
	OP_TICK,
	OP_CAMPAIGN,
	OP_PROPOSE,
	OP_READY,
	OP_ADVANCE,
	OP_DELIVER,
	OP_DROP,
	OP_DUPLICATE,
	OP_DECODE_STEP,
	OP_CORRUPT,
	OP_RESTART,
	OP_COMPACT,
	OP_REPORT,
	OP_TRANSFER,
	OP_READ_INDEX,
	OP_DELIVER_ALL,
	OP_COUNT
};

typedef struct input {
	const uint8_t *p;
	size_t n;
} input;

typedef struct committed {
	bool set;
	uint64_t term;
	uint64_t hash;
} committed;

typedef struct world {
	raft_config cfg;
	raft_rawnode *node[N + 1];
	raft_memory_storage *disk[N + 1];
	bool pending[N + 1]; /* a Ready was taken and handled, advance not called yet */
	uint64_t applied[N + 1];
	raft_message queue[QUEUE_MAX];
	size_t n_queue;
	bool byzantine; /* a message not produced by a node was stepped */
	committed log[MAX_INDEX];
} world;

static const uint64_t peers[N] = {1, 2, 3};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t take(input *in)
{
	if (in->n == 0)
		return 0;
	uint8_t b = *in->p;
	in->p++;
	in->n--;
	return b;
}

static uint64_t pick_node(input *in)
{
	return 1 + take(in) % N;
}

static void violation(const char *what, uint64_t id, uint64_t index)
{
	fprintf(stderr, "fuzz_step: safety violation on node %llu at index %llu: %s\n",
	        (unsigned long long)id, (unsigned long long)index, what);
	abort();
}

static uint64_t fnv1a(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * UINT64_C(0x100000001b3);
	return h;
}

static void enqueue(world *w, const raft_message *m)
{
	if (w->n_queue == QUEUE_MAX) {
		raft_message_free(&w->queue[0]);
		memmove(&w->queue[0], &w->queue[1], (QUEUE_MAX - 1) * sizeof(w->queue[0]));
		w->n_queue--;
	}
	if (raft_message_clone(&w->queue[w->n_queue], m) == RAFT_OK)
		w->n_queue++;
}

static void dequeue(world *w, size_t i, raft_message *out)
{
	*out = w->queue[i];
	memmove(&w->queue[i], &w->queue[i + 1], (w->n_queue - i - 1) * sizeof(w->queue[0]));
	w->n_queue--;
}

static void check_entry(world *w, uint64_t id, const raft_entry *e)
{
	if (w->byzantine)
		return;
	if (e->index != w->applied[id] + 1)
		violation("committed entries out of order", id, e->index);
	if (e->index >= MAX_INDEX)
		return;
	committed *c = &w->log[e->index];
	uint64_t h = fnv1a(e->data, e->len) ^ (uint64_t)e->type;
	if (!c->set) {
		c->set = true;
		c->term = e->term;
		c->hash = h;
	} else if (c->term != e->term || c->hash != h) {
		violation("two different entries committed at one index", id, e->index);
	}
}

/* Takes a Ready and does everything but advance: send, persist, send, apply. */
static void take_ready(world *w, uint64_t id)
{
	raft_ready rd;
	if (w->pending[id] || !raft_rawnode_has_ready(w->node[id]))
		return;
	if (raft_rawnode_ready(w->node[id], &rd) != RAFT_OK)
		return;
	w->pending[id] = true;
	for (size_t i = 0; i < rd.n_messages; i++)
		enqueue(w, &rd.messages[i]);
	int rv = RAFT_OK;
	if (rd.has_snapshot) {
		rv = raft_memory_storage_apply_snapshot(w->disk[id], &rd.snapshot);
		if (rv == RAFT_OK && rd.snapshot.metadata.index > w->applied[id])
			w->applied[id] = rd.snapshot.metadata.index;
	}
	if (rv == RAFT_OK && rd.n_entries > 0)
		rv = raft_memory_storage_append(w->disk[id], rd.entries, rd.n_entries);
	if (rv == RAFT_OK && rd.has_hard_state)
		rv = raft_memory_storage_set_hard_state(w->disk[id], &rd.hard_state);
	if (rv != RAFT_OK && !w->byzantine)
		violation("a Ready could not be persisted", id, 0);
	for (size_t i = 0; i < rd.n_persisted_messages; i++)
		enqueue(w, &rd.persisted_messages[i]);
	for (size_t i = 0; i < rd.n_committed_entries; i++) {
		check_entry(w, id, &rd.committed_entries[i]);
		w->applied[id] = rd.committed_entries[i].index;
	}
}

static void finish_ready(world *w, uint64_t id)
{
	if (!w->pending[id])
		return;
	w->pending[id] = false;
	(void)raft_rawnode_advance(w->node[id]);
}

static void start_node(world *w, uint64_t id)
{
	raft_config c = w->cfg;
	c.id = id;
	c.storage = raft_memory_storage_interface(w->disk[id]);
	c.applied = w->applied[id];
	w->node[id] = NULL;
	if (raft_rawnode_new(&c, &w->node[id]) != RAFT_OK)
		w->node[id] = NULL;
}

static void step_into(world *w, uint64_t id, const raft_message *m)
{
	if (w->node[id] != NULL)
		(void)raft_rawnode_step(w->node[id], m);
}

static void deliver(world *w, size_t i, int times)
{
	raft_message m;
	dequeue(w, i, &m);
	if (m.to >= 1 && m.to <= N)
		for (int k = 0; k < times; k++)
			step_into(w, m.to, &m);
	raft_message_free(&m);
}

static void op_propose(world *w, input *in)
{
	uint64_t id = pick_node(in);
	size_t len = take(in) % 32;
	if (len > in->n)
		len = in->n;
	if (w->node[id] != NULL)
		(void)raft_rawnode_propose(w->node[id], len ? in->p : NULL, len);
	in->p += len;
	in->n -= len;
}

static void op_decode_step(world *w, input *in)
{
	uint64_t id = pick_node(in);
	size_t len = take(in);
	raft_message m;
	if (len > in->n)
		len = in->n;
	if (raft_message_decode(in->p, len, &m) == RAFT_OK) {
		w->byzantine = true;
		step_into(w, id, &m);
		raft_message_free(&m);
	}
	in->p += len;
	in->n -= len;
}

/* Re-encodes a queued message, flips one byte, and replaces it if the result still decodes. */
static void op_corrupt(world *w, input *in)
{
	size_t i = take(in);
	size_t at = (size_t)take(in) << 8;
	at |= take(in);
	uint8_t flip = take(in) | 1;
	void *buf;
	size_t len;
	raft_message m;

	if (w->n_queue == 0)
		return;
	i %= w->n_queue;
	if (raft_message_encode(&w->queue[i], &buf, &len) != RAFT_OK)
		return;
	if (len > 0)
		((uint8_t *)buf)[at % len] ^= flip;
	if (raft_message_decode(buf, len, &m) == RAFT_OK) {
		w->byzantine = true;
		raft_message_free(&w->queue[i]);
		w->queue[i] = m;
	}
	free(buf);
}

static void op_restart(world *w, uint64_t id)
{
	raft_rawnode_free(w->node[id]);
	w->pending[id] = false;
	start_node(w, id);
}

/* Snapshots the node's state machine at its applied index and compacts the log behind it. */
static void op_compact(world *w, input *in)
{
	uint64_t id = pick_node(in);
	uint64_t back = take(in) % 4;
	raft_conf_state cs;
	memset(&cs, 0, sizeof(cs));
	cs.n_voters = N;
	memcpy(cs.voters, peers, sizeof(peers));
	if (w->applied[id] <= back)
		return;
	uint64_t at = w->applied[id] - back;
	(void)raft_memory_storage_create_snapshot(w->disk[id], at, &cs, "snap", 4);
	(void)raft_memory_storage_compact(w->disk[id], at);
}

static void run(world *w, input *in)
{
	while (in->n > 0) {
		uint8_t op = take(in) % OP_COUNT;
		uint64_t id;
		switch (op) {
		case OP_TICK:
			id = pick_node(in);
			if (w->node[id] != NULL)
				(void)raft_rawnode_tick(w->node[id]);
			break;
		case OP_CAMPAIGN:
			id = pick_node(in);
			if (w->node[id] != NULL)
				(void)raft_rawnode_campaign(w->node[id]);
			break;
		case OP_PROPOSE:
			op_propose(w, in);
			break;
		case OP_READY:
			id = pick_node(in);
			if (w->node[id] != NULL)
				take_ready(w, id);
			break;
		case OP_ADVANCE:
			id = pick_node(in);
			if (w->node[id] != NULL)
				finish_ready(w, id);
			break;
		case OP_DELIVER:
		case OP_DROP:
		case OP_DUPLICATE: {
			size_t i = take(in);
			if (w->n_queue == 0)
				break;
			i %= w->n_queue;
			if (op == OP_DROP) {
				raft_message m;
				dequeue(w, i, &m);
				raft_message_free(&m);
			} else {
				deliver(w, i, op == OP_DUPLICATE ? 2 : 1);
			}
			break;
		}
		case OP_DECODE_STEP:
			op_decode_step(w, in);
			break;
		case OP_CORRUPT:
			op_corrupt(w, in);
			break;
		case OP_RESTART:
			op_restart(w, pick_node(in));
			break;
		case OP_COMPACT:
			op_compact(w, in);
			break;
		case OP_REPORT: {
			id = pick_node(in);
			uint8_t arg = take(in);
			uint64_t peer = 1 + arg % N;
			if (w->node[id] == NULL)
				break;
			if (arg & 0x80)
				(void)raft_rawnode_report_unreachable(w->node[id], peer);
			else
				(void)raft_rawnode_report_snapshot(w->node[id], peer, arg & 0x40);
			break;
		}
		case OP_TRANSFER:
			id = pick_node(in);
			if (w->node[id] != NULL)
				(void)raft_rawnode_transfer_leader(w->node[id], take(in) % (N + 2));
			break;
		case OP_READ_INDEX:
			id = pick_node(in);
			if (w->node[id] != NULL)
				(void)raft_rawnode_read_index(w->node[id], take(in));
			break;
		case OP_DELIVER_ALL:
			for (id = 1; id <= N; id++) {
				if (w->node[id] != NULL) {
					take_ready(w, id);
					finish_ready(w, id);
				}
			}
			for (size_t k = w->n_queue; k > 0 && w->n_queue > 0; k--)
				deliver(w, 0, 1);
			break;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static world w;
	input in = {data, size};
	uint8_t flags = take(&in);

	memset(&w, 0, sizeof(w));
	raft_config_init(&w.cfg);
	w.cfg.peers = peers;
	w.cfg.n_peers = N;
	w.cfg.election_tick = 4 + (flags & 3);
	w.cfg.heartbeat_tick = 1;
	w.cfg.pre_vote = flags & 0x04;
	w.cfg.check_quorum = flags & 0x08;
	w.cfg.disable_proposal_forwarding = flags & 0x10;
	if (flags & 0x20) {
		w.cfg.max_size_per_msg = 16;
		w.cfg.max_inflight_msgs = 2;
		w.cfg.max_uncommitted_entries_size = 256;
		w.cfg.max_committed_size_per_ready = 32;
	}
	w.cfg.seed = flags >> 6;
	for (uint64_t id = 1; id <= N; id++) {
		w.disk[id] = raft_memory_storage_new();
		if (w.disk[id] == NULL)
			abort();
		start_node(&w, id);
	}

	run(&w, &in);

	for (uint64_t id = 1; id <= N; id++) {
		raft_rawnode_free(w.node[id]);
		raft_memory_storage_free(w.disk[id]);
	}
	for (size_t i = 0; i < w.n_queue; i++)
		raft_message_free(&w.queue[i]);
	return 0;
}
