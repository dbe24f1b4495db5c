/* raft_microbench.c - core-only micro-benchmark: three rawnodes over memory storage, one thread. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raft.h"

#define N_NODES       3
#define LEADER        1
#define MAX_PAYLOAD   256
#define MAX_BATCH     128
#define TICK_EVERY    16   /* proposal rounds between two ticks of every node */
#define COMPACT_AFTER 8192 /* entries past the compaction point before compacting */
#define KEEP_ENTRIES  512  /* entries left behind the applied index by a compaction */

enum { TRANSPORT_ENCODE, TRANSPORT_CLONE };

/* A message in flight: encoded bytes, or a deep copy, depending on the transport. */
typedef struct packet {
	uint64_t to;
	void *buf;
	size_t len;
	raft_message msg;
} packet;

typedef struct queue {
	packet *items;
	size_t n, cap;
} queue;

typedef struct counters {
	uint64_t readies;
	uint64_t messages;
	uint64_t wire_bytes;
	uint64_t entries; /* normal entries applied on the leader */
	uint64_t bytes;   /* their payload bytes */
} counters;

typedef struct cluster {
	int transport;
	raft_rawnode *node[N_NODES + 1];
	raft_memory_storage *disk[N_NODES + 1];
	uint64_t applied[N_NODES + 1];
	uint64_t compacted[N_NODES + 1];
	uint64_t expect_seq[N_NODES + 1]; /* sequence number the next payload must carry */
	uint64_t next_seq;
	queue q, inflight;
	counters c;
	unsigned char payload[MAX_PAYLOAD];
} cluster;

typedef struct result {
	double seconds;
	uint64_t entries, bytes, readies, messages, wire_bytes;
} result;

static void die(const char *what, int rv)
{
	fprintf(stderr, "raft-microbench: %s: %s\n", what, raft_strerror(rv));
	exit(1);
}

static void fail(const char *what)
{
	fprintf(stderr, "raft-microbench: %s\n", what);
	exit(1);
}

static void check(int rv, const char *what)
{
	if (rv != RAFT_OK)
		die(what, rv);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static void fill_random(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t state = seed;
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)splitmix64(&state);
}

static void post(cluster *cl, const raft_message *m)
{
	if (cl->q.n == cl->q.cap) {
		size_t cap = cl->q.cap ? cl->q.cap * 2 : 64;
		packet *items = realloc(cl->q.items, cap * sizeof(*items));
		if (items == NULL)
			fail("out of memory");
		cl->q.items = items;
		cl->q.cap = cap;
	}
	packet *p = &cl->q.items[cl->q.n++];
	memset(p, 0, sizeof(*p));
	p->to = m->to;
	if (cl->transport == TRANSPORT_ENCODE) {
		check(raft_message_encode(m, &p->buf, &p->len), "encode");
		cl->c.wire_bytes += p->len;
	} else {
		check(raft_message_clone(&p->msg, m), "clone");
	}
	cl->c.messages++;
}

static void apply_entry(cluster *cl, uint64_t id, const raft_entry *e)
{
	if (e->index != cl->applied[id] + 1)
		fail("committed entries skip or repeat an index");
	cl->applied[id] = e->index;
	if (e->type != RAFT_ENTRY_NORMAL || e->len == 0)
		return;
	uint64_t seq;
	if (e->len < sizeof(seq))
		fail("committed entry shorter than a sequence number");
	memcpy(&seq, e->data, sizeof(seq));
	if (seq != cl->expect_seq[id])
		fail("committed payloads out of proposal order");
	cl->expect_seq[id]++;
	if (id == LEADER) {
		cl->c.entries++;
		cl->c.bytes += e->len;
	}
}

static void handle_ready(cluster *cl, uint64_t id)
{
	raft_rawnode *rn = cl->node[id];
	raft_memory_storage *disk = cl->disk[id];
	raft_ready rd;

	check(raft_rawnode_ready(rn, &rd), "ready");
	cl->c.readies++;
	for (size_t i = 0; i < rd.n_messages; i++)
		post(cl, &rd.messages[i]);
	if (rd.has_snapshot) {
		check(raft_memory_storage_apply_snapshot(disk, &rd.snapshot), "apply snapshot");
		cl->applied[id] = rd.snapshot.metadata.index;
		cl->compacted[id] = rd.snapshot.metadata.index;
	}
	if (rd.n_entries > 0)
		check(raft_memory_storage_append(disk, rd.entries, rd.n_entries), "append");
	if (rd.has_hard_state)
		check(raft_memory_storage_set_hard_state(disk, &rd.hard_state), "set hard state");
	for (size_t i = 0; i < rd.n_persisted_messages; i++)
		post(cl, &rd.persisted_messages[i]);
	for (size_t i = 0; i < rd.n_committed_entries; i++)
		apply_entry(cl, id, &rd.committed_entries[i]);
	check(raft_rawnode_advance(rn), "advance");
}

static void deliver_all(cluster *cl)
{
	queue batch = cl->q;
	cl->q = cl->inflight;
	cl->q.n = 0;
	for (size_t i = 0; i < batch.n; i++) {
		packet *p = &batch.items[i];
		if (p->to < 1 || p->to > N_NODES)
			fail("message to an unknown node");
		if (cl->transport == TRANSPORT_ENCODE) {
			check(raft_message_decode(p->buf, p->len, &p->msg), "decode");
			free(p->buf);
		}
		check(raft_rawnode_step(cl->node[p->to], &p->msg), "step");
		raft_message_free(&p->msg);
	}
	batch.n = 0;
	cl->inflight = batch;
}

/* Handles Readies and delivers messages until no node has anything left to do. */
static void pump(cluster *cl)
{
	for (;;) {
		bool busy = false;
		for (uint64_t id = 1; id <= N_NODES; id++) {
			if (raft_rawnode_has_ready(cl->node[id])) {
				handle_ready(cl, id);
				busy = true;
			}
		}
		if (cl->q.n > 0) {
			deliver_all(cl);
			busy = true;
		}
		if (!busy)
			return;
	}
}

static void maybe_compact(cluster *cl)
{
	for (uint64_t id = 1; id <= N_NODES; id++) {
		if (cl->applied[id] < cl->compacted[id] + COMPACT_AFTER + KEEP_ENTRIES)
			continue;
		uint64_t to = cl->applied[id] - KEEP_ENTRIES;
		check(raft_memory_storage_compact(cl->disk[id], to), "compact");
		cl->compacted[id] = to;
	}
}

static void tick_all(cluster *cl)
{
	for (uint64_t id = 1; id <= N_NODES; id++)
		check(raft_rawnode_tick(cl->node[id]), "tick");
}

static void cluster_init(cluster *cl, int transport, uint64_t seed)
{
	static const uint64_t peers[N_NODES] = {1, 2, 3};

	memset(cl, 0, sizeof(*cl));
	cl->transport = transport;
	fill_random(cl->payload, sizeof(cl->payload), seed);
	for (uint64_t id = 1; id <= N_NODES; id++) {
		cl->disk[id] = raft_memory_storage_new();
		if (cl->disk[id] == NULL)
			fail("out of memory");
		raft_config c;
		raft_config_init(&c);
		c.id = id;
		c.peers = peers;
		c.n_peers = N_NODES;
		c.storage = raft_memory_storage_interface(cl->disk[id]);
		c.seed = seed;
		check(raft_rawnode_new(&c, &cl->node[id]), "rawnode_new");
	}
	check(raft_rawnode_campaign(cl->node[LEADER]), "campaign");
	pump(cl);
	raft_status st;
	raft_rawnode_status(cl->node[LEADER], &st);
	if (st.role != RAFT_LEADER)
		fail("node 1 did not become leader");
}

static void cluster_free(cluster *cl)
{
	for (uint64_t id = 1; id <= N_NODES; id++) {
		raft_rawnode_free(cl->node[id]);
		raft_memory_storage_free(cl->disk[id]);
	}
	free(cl->q.items);
	free(cl->inflight.items);
}

static void propose_batch(cluster *cl, size_t payload, size_t batch)
{
	for (size_t i = 0; i < batch; i++) {
		uint64_t seq = cl->next_seq++;
		memcpy(cl->payload, &seq, sizeof(seq));
		check(raft_rawnode_propose(cl->node[LEADER], cl->payload, payload), "propose");
	}
}

static void run_raft(cluster *cl, size_t payload, size_t batch, double seconds, result *r)
{
	counters before = cl->c;
	uint64_t rounds = 0;
	double start = now(), t;

	do {
		propose_batch(cl, payload, batch);
		if (++rounds % TICK_EVERY == 0)
			tick_all(cl);
		pump(cl);
		maybe_compact(cl);
		t = now();
	} while (t - start < seconds);

	r->seconds = t - start;
	r->entries = cl->c.entries - before.entries;
	r->bytes = cl->c.bytes - before.bytes;
	r->readies = cl->c.readies - before.readies;
	r->messages = cl->c.messages - before.messages;
	r->wire_bytes = cl->c.wire_bytes - before.wire_bytes;
	if (r->entries != rounds * batch)
		fail("not every proposal was committed");
	for (uint64_t id = 1; id <= N_NODES; id++)
		if (cl->expect_seq[id] != cl->next_seq)
			fail("a follower did not apply every entry");
	raft_status st;
	raft_rawnode_status(cl->node[LEADER], &st);
	if (st.role != RAFT_LEADER)
		fail("node 1 lost leadership during the run");
}

/* The same entries (malloc'd and copied, as a proposal is) appended to three memory storages,
 * with the same compaction, and no Raft at all. */
static void run_baseline(size_t payload, size_t batch, double seconds, uint64_t seed, result *r)
{
	raft_memory_storage *disk[N_NODES];
	raft_entry entries[MAX_BATCH];
	unsigned char buf[MAX_PAYLOAD];
	uint64_t index = 0, compacted = 0, seq = 0;
	double start = now(), t;

	fill_random(buf, sizeof(buf), seed);
	for (int i = 0; i < N_NODES; i++)
		if ((disk[i] = raft_memory_storage_new()) == NULL)
			fail("out of memory");
	memset(r, 0, sizeof(*r));
	do {
		for (size_t i = 0; i < batch; i++) {
			memcpy(buf, &seq, sizeof(seq));
			seq++;
			entries[i].type = RAFT_ENTRY_NORMAL;
			entries[i].term = 1;
			entries[i].index = ++index;
			entries[i].len = payload;
			entries[i].data = malloc(payload);
			if (entries[i].data == NULL)
				fail("out of memory");
			memcpy(entries[i].data, buf, payload);
		}
		for (int i = 0; i < N_NODES; i++)
			check(raft_memory_storage_append(disk[i], entries, batch),
			      "baseline append");
		for (size_t i = 0; i < batch; i++)
			free(entries[i].data);
		if (index >= compacted + COMPACT_AFTER + KEEP_ENTRIES) {
			compacted = index - KEEP_ENTRIES;
			for (int i = 0; i < N_NODES; i++)
				check(raft_memory_storage_compact(disk[i], compacted),
				      "baseline compact");
		}
		r->entries += batch;
		r->bytes += batch * payload;
		t = now();
	} while (t - start < seconds);
	r->seconds = t - start;
	for (int i = 0; i < N_NODES; i++)
		raft_memory_storage_free(disk[i]);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: raft-microbench [--seconds S] [--seed N] [--transport encode|clone]\n"
	           "  --seconds S    total measuring time, split over the 6 cases (default 12);\n"
	           "                 each case spends 80%% on Raft and 20%% on the baseline\n"
	           "  --seed N       seed for the rawnodes and the payload bytes (default 1)\n"
	           "  --transport T  encode: messages cross as raft_message_encode/decode bytes\n"
	           "                 (default); clone: as raft_message_clone copies\n");
}

static double parse_seconds(const char *s)
{
	char *end;
	double v = strtod(s, &end);
	if (*s == '\0' || *end != '\0' || !(v > 0 && v < 86400)) {
		fprintf(stderr, "raft-microbench: bad --seconds '%s'\n", s);
		exit(2);
	}
	return v;
}

static uint64_t parse_seed(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);
	if (*s == '\0' || *end != '\0') {
		fprintf(stderr, "raft-microbench: bad --seed '%s'\n", s);
		exit(2);
	}
	return (uint64_t)v;
}

int main(int argc, char **argv)
{
	static const size_t payloads[] = {16, 256};
	static const size_t batches[] = {1, 16, 128};
	const size_t n_cases = 6;
	double seconds = 12;
	uint64_t seed = 1;
	int transport = TRANSPORT_ENCODE;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
			seconds = parse_seconds(argv[++i]);
		} else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
			seed = parse_seed(argv[++i]);
		} else if (strcmp(argv[i], "--transport") == 0 && i + 1 < argc) {
			const char *t = argv[++i];
			if (strcmp(t, "encode") == 0)
				transport = TRANSPORT_ENCODE;
			else if (strcmp(t, "clone") == 0)
				transport = TRANSPORT_CLONE;
			else {
				usage(stderr);
				return 2;
			}
		} else {
			usage(stderr);
			return 2;
		}
	}

	double per_case = seconds / (double)n_cases;
	printf(
	    "raft-microbench: 3 rawnodes over raft_memory_storage in one thread, node 1 leader\n");
	printf("  transport: %s\n",
	       transport == TRANSPORT_ENCODE
	           ? "encode (every message raft_message_encode'd, then decoded and stepped)"
	           : "clone (every message raft_message_clone'd, then stepped and freed)");
	printf("  each Ready: messages queued, entries + hard state appended to the node's memory "
	       "storage, committed entries checked in order on all 3 nodes; storages compacted "
	       "every %d entries\n",
	       COMPACT_AFTER);
	printf("  baseline: the same entries malloc'd+copied and appended to 3 memory storages, "
	       "no Raft\n");
	printf("  seed %" PRIu64 ", %.2f s per case (%.2f s Raft + %.2f s baseline)\n\n", seed,
	       per_case, per_case * 0.8, per_case * 0.2);
	printf("payload batch   entries/s       MB/s  readies/batch msgs/entry wire B/entry"
	       " | baseline entries/s       MB/s | raft/baseline\n");

	cluster cl;
	cluster_init(&cl, transport, seed);
	result warm;
	run_raft(&cl, 16, 16, 0.05, &warm);

	for (size_t p = 0; p < sizeof(payloads) / sizeof(payloads[0]); p++) {
		for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
			size_t payload = payloads[p], batch = batches[b];
			result r, base;
			run_raft(&cl, payload, batch, per_case * 0.8, &r);
			run_baseline(payload, batch, per_case * 0.2, seed, &base);
			double eps = (double)r.entries / r.seconds;
			double mbs = (double)r.bytes / r.seconds / 1e6;
			double beps = (double)base.entries / base.seconds;
			double bmbs = (double)base.bytes / base.seconds / 1e6;
			double batches_run = (double)r.entries / (double)batch;
			char wire[32] = "-";
			if (transport == TRANSPORT_ENCODE)
				snprintf(wire, sizeof(wire), "%.1f",
				         (double)r.wire_bytes / (double)r.entries);
			printf("%5zu B %5zu %11.0f %10.2f %14.2f %10.2f %11s | %18.0f %10.2f | "
			       "%12.3f\n",
			       payload, batch, eps, mbs, (double)r.readies / batches_run,
			       (double)r.messages / (double)r.entries, wire, beps, bmbs,
			       eps / beps);
			fflush(stdout);
		}
	}
	printf("\nchecked: %" PRIu64 " proposals committed and applied in order on all 3 nodes\n",
	       cl.next_seq);
	cluster_free(&cl);
	return 0;
}
