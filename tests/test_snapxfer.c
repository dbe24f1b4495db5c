/* test_snapxfer.c - CUnit suite "snapxfer": the chunk protocol over real stores, and a smoke run.
 */
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "cluster_fixture.h"
#include "node/gc_policy.h"
#include "node/snapxfer.h"
#include "raft.h"
#include "raftkv.h"
#include "store/command.h"
#include "store/store.h"
#include "suites.h"

/*
 * The harness (sx_*) drives the snapxfer machines directly, as the node thread would: a source
 * store (node 1) with real data makes a real snapshot file; a sender streams it to a receiver
 * over a destination store (node 2) through a test network, a queue of chunks and a queue of
 * acks, where each test decides the fate of every chunk and ack (deliver, drop, duplicate,
 * corrupt, reorder). When the receiver completes, the harness installs the snapshot into the
 * destination store through store_persist_ready, as the next Ready would, and checks the data.
 * Ticks are counted by the harness: no clock, no threads, so every run is deterministic for its
 * seed. The last test runs a 3-node cluster through raftkv.h.
 */

#define SX_CLUSTER_ID 0x736e617078666572ull
#define SX_MAX_ROUNDS 200000u
#define SX_TIMEOUT    4u /* sender timeout in ticks */
#define SX_MAX_TO     5u /* timeouts before giving up */
#define SX_STALE      50u

static uint64_t sx_seed_value;

static uint64_t sx_seed(void)
{
	const char *v = getenv("RAFTKV_TEST_SEED");

	if (sx_seed_value == 0) {
		sx_seed_value = v != NULL && *v != '\0' ? strtoull(v, NULL, 0) : 0;
		if (sx_seed_value == 0)
			sx_seed_value = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	}
	return sx_seed_value;
}

static uint64_t sx_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ------------------------------------------------------------------------------------------ */
/* Stores                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static store *sx_open(const char *dir, uint64_t id)
{
	char path[512], err[256];
	store_options o;
	store *s = NULL;

	snprintf(path, sizeof(path), "%s/node-%" PRIu64 ".db", dir, id);
	store_options_init(&o);
	o.cluster_id = SX_CLUSTER_ID;
	o.node_id = id;
	o.sync = STORE_SYNC_OFF;
	if (store_open(path, &o, &s, err, sizeof(err)) != STORE_OK) {
		fprintf(stderr, "store_open %s: %s\n", path, err);
		return NULL;
	}
	if (store_set_snapshot_dir(s, dir) != STORE_OK) {
		store_close(s);
		return NULL;
	}
	return s;
}

static size_t sx_key(char *buf, uint64_t i)
{
	return (size_t)snprintf(buf, 32, "key-%06" PRIu64, i);
}

static unsigned char sx_byte(uint64_t i, size_t k)
{
	return (unsigned char)((i * 131u + k * 7u) & 0xff);
}

/* Appends and applies entries first..first+count-1 (term 1): PUT key-i = value_len bytes. */
static void sx_write(store *s, uint64_t first, uint64_t count, size_t value_len)
{
	raft_entry *ents = calloc(count, sizeof(*ents));
	unsigned char *val = malloc(value_len);
	raft_ready rd;
	char key[32];

	CU_ASSERT_FATAL(ents != NULL && val != NULL);
	for (uint64_t k = 0; k < count; k++) {
		uint64_t i = first + k;
		store_command c = {.op = STORE_OP_PUT};

		for (size_t b = 0; b < value_len; b++)
			val[b] = sx_byte(i, b);
		c.key = key;
		c.key_len = sx_key(key, i);
		c.value = val;
		c.value_len = value_len;
		ents[k].index = i;
		ents[k].term = 1;
		CU_ASSERT_EQUAL_FATAL(command_encode(&c, &ents[k].data, &ents[k].len), STORE_OK);
	}
	memset(&rd, 0, sizeof(rd));
	rd.entries = ents;
	rd.n_entries = count;
	rd.has_hard_state = true;
	rd.hard_state = (raft_hard_state){.term = 1, .vote = 1, .commit = first + count - 1};
	rd.must_sync = true;
	CU_ASSERT_EQUAL_FATAL(store_persist_ready(s, &rd), STORE_OK);
	CU_ASSERT_EQUAL_FATAL(store_apply(s, ents, count, NULL, NULL), STORE_OK);
	raft_entries_free(ents, count);
	free(val);
}

/* Asks for a snapshot until the dump is done. */
static void sx_snapshot(store *s, raft_snapshot *out)
{
	int rv;

	for (int i = 0; i < 1000; i++) {
		rv = store_snapshot_request(s, out);
		if (rv != RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE)
			break;
		store_snapshot_wait(s, 10000);
	}
	CU_ASSERT_EQUAL_FATAL(rv, STORE_OK);
}

static store_snapshot_id sx_id(const raft_snapshot *snap)
{
	store_snapshot_id id;

	CU_ASSERT_EQUAL_FATAL(store_snapshot_id_decode(snap->data, snap->len, &id), STORE_OK);
	return id;
}

/* Whether the destination has key-i with its value for i in [first, last]. */
static bool sx_has_data(store *s, uint64_t first, uint64_t last, size_t value_len)
{
	char key[32];

	for (uint64_t i = first; i <= last; i++) {
		void *v = NULL;
		size_t len = 0;
		bool ok;

		if (store_get(s, key, sx_key(key, i), &v, &len) != STORE_OK)
			return false;
		ok = len == value_len;
		for (size_t b = 0; ok && b < len; b++)
			ok = ((unsigned char *)v)[b] == sx_byte(i, b);
		free(v);
		if (!ok)
			return false;
	}
	return true;
}

static bool sx_staging_exists(const char *dir, uint64_t self, const store_snapshot_id *id)
{
	char path[512];

	snprintf(path, sizeof(path),
	         "%s/staging-%" PRIu64 ".%" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%016" PRIx64, dir,
	         self, id->node_id, id->index, id->term, id->nonce);
	return access(path, F_OK) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The harness                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* SX_TAMPER: the chunk's term is raised after sealing (a damaged header). SX_RESEAL_CONF: its
 * membership is changed and the chunk sealed again (a sender sending metadata that does not
 * match its file). */
enum { SX_DELIVER, SX_DROP, SX_DUP, SX_CORRUPT, SX_TAMPER, SX_RESEAL_CONF };

typedef struct sx_h sx_h;
/* The fate of the nth chunk put on the network (0-based). */
typedef int (*sx_chunk_fate)(sx_h *h, const snapxfer_chunk *c, unsigned nth);
/* Whether to drop the nth ack. */
typedef bool (*sx_ack_drop)(sx_h *h, const snapxfer_ack *a, unsigned nth);

typedef struct sx_sender {
	sx_h *h;
	snapxfer_sender *s;
	uint64_t self;
	unsigned reports;
	bool last_ok;
	/* Window check at every send: chunks beyond the ack, never more than the window. */
	unsigned max_beyond;
	bool window_broken;
} sx_sender;

struct sx_h {
	char dir[256];
	store *src;
	store *dst;
	snapxfer_receiver *rcv;
	sx_sender snd[4]; /* by node id; 1 and 3 are senders */
	size_t chunk;
	unsigned window;
	uint64_t bytes_per_tick;

	snapxfer_chunk **q; /* chunks in flight (owned) */
	size_t nq, capq;
	snapxfer_ack *acks; /* acks in flight */
	size_t na, capa;
	size_t max_net_bytes; /* most chunk payload bytes on the network at once */

	uint64_t now;       /* ticks */
	unsigned sent_n;    /* chunks put on the network */
	unsigned acks_n;    /* acks sent */
	sx_chunk_fate fate; /* NULL: deliver */
	sx_ack_drop ack_drop;
	bool reorder;
	bool reordered; /* at least one pair was swapped (the first chance always swaps) */
	uint64_t rng;
	uint64_t commit; /* the destination's commit index, as passed to the receiver */

	unsigned completes; /* SNAPXFER_RECV_COMPLETE seen */
	unsigned installs;
	uint64_t installed_index;
	store_snapshot_id installed_id;
	bool install_failed;
	bool no_install;         /* resolve(false) instead of installing */
	bool stale_step;         /* raft drops the step unanswered: snapxfer_receiver_reject */
	uint64_t last_step_term; /* term of the last message handed out to step */
	int fdrop_nth;           /* used by some fates */
};

static void sx_send_chunk(void *ctx, snapxfer_chunk *c)
{
	sx_sender *sd = ctx;
	sx_h *h = sd->h;
	uint64_t acked = 0;
	size_t bytes = 0;

	if (snapxfer_sender_has(sd->s, c->to, &acked)) {
		unsigned beyond =
		    (unsigned)((c->offset + c->len - acked + h->chunk - 1) / h->chunk);

		if (beyond > sd->max_beyond)
			sd->max_beyond = beyond;
		if (beyond > h->window)
			sd->window_broken = true;
	}
	if (h->nq == h->capq) {
		h->capq = h->capq ? 2 * h->capq : 64;
		h->q = realloc(h->q, h->capq * sizeof(*h->q));
		CU_ASSERT_FATAL(h->q != NULL);
	}
	h->q[h->nq++] = c;
	h->sent_n++;
	for (size_t i = 0; i < h->nq; i++)
		bytes += h->q[i]->len;
	if (bytes > h->max_net_bytes)
		h->max_net_bytes = bytes;
}

static void sx_report(void *ctx, uint64_t to, bool ok)
{
	sx_sender *sd = ctx;

	CU_ASSERT_EQUAL(to, 2);
	sd->reports++;
	sd->last_ok = ok;
}

static void sx_send_ack(void *ctx, const snapxfer_ack *a)
{
	sx_h *h = ctx;

	if (h->na == h->capa) {
		h->capa = h->capa ? 2 * h->capa : 64;
		h->acks = realloc(h->acks, h->capa * sizeof(*h->acks));
		CU_ASSERT_FATAL(h->acks != NULL);
	}
	h->acks[h->na++] = *a;
	h->acks_n++;
}

static void sx_new_receiver(sx_h *h)
{
	snapxfer_receiver_config rc = {
	    .self = 2, .store = h->dst, .stale_ticks = SX_STALE, .send_ack = sx_send_ack, .ctx = h};

	h->rcv = snapxfer_receiver_new(&rc);
	CU_ASSERT_FATAL(h->rcv != NULL);
}

static void sx_new_sender(sx_h *h, uint64_t self, unsigned max_concurrent)
{
	sx_sender *sd = &h->snd[self];
	snapxfer_sender_config sc = {.self = self,
	                             .chunk_size = h->chunk,
	                             .window = h->window,
	                             .max_concurrent = max_concurrent,
	                             .bytes_per_tick = h->bytes_per_tick,
	                             .timeout_ticks = SX_TIMEOUT,
	                             .max_timeouts = SX_MAX_TO,
	                             .send_chunk = sx_send_chunk,
	                             .report = sx_report,
	                             .ctx = sd};

	snapxfer_sender_free(sd->s);
	memset(sd, 0, sizeof(*sd));
	sd->h = h;
	sd->self = self;
	sd->s = snapxfer_sender_new(&sc);
	CU_ASSERT_FATAL(sd->s != NULL);
}

/* A harness with a source store holding entries 1..n (value_len bytes each) and an empty
 * destination. */
static sx_h *sx_new(uint64_t n, size_t value_len, size_t chunk, unsigned window)
{
	static const raft_conf_state voters = {.voters = {1, 2, 3}, .n_voters = 3};
	sx_h *h = calloc(1, sizeof(*h));

	CU_ASSERT_FATAL(h != NULL);
	CU_ASSERT_FATAL(cf_mkdtemp(h->dir, sizeof(h->dir), "snapxfer"));
	h->src = sx_open(h->dir, 1);
	h->dst = sx_open(h->dir, 2);
	CU_ASSERT_FATAL(h->src != NULL && h->dst != NULL);
	CU_ASSERT_EQUAL_FATAL(store_set_conf_state(h->src, &voters), STORE_OK);
	CU_ASSERT_EQUAL_FATAL(store_set_conf_state(h->dst, &voters), STORE_OK);
	sx_write(h->src, 1, n, value_len);
	h->chunk = chunk;
	h->window = window;
	h->rng = sx_seed();
	sx_new_receiver(h);
	return h;
}

static void sx_free(sx_h *h)
{
	for (size_t i = 0; i < h->nq; i++)
		free(h->q[i]);
	free(h->q);
	free(h->acks);
	for (int i = 0; i < 4; i++)
		snapxfer_sender_free(h->snd[i].s);
	snapxfer_receiver_free(h->rcv);
	store_close(h->src);
	store_close(h->dst);
	cf_rmtree(h->dir);
	free(h);
}

/* The SNAPSHOT message the core would send for snap, at term. */
static raft_message sx_msg(const raft_snapshot *snap, uint64_t from, uint64_t term)
{
	raft_message m = {.type = RAFT_MSG_SNAPSHOT, .from = from, .to = 2, .term = term};

	m.commit = snap->metadata.index;
	m.snapshot = *snap; /* borrowed */
	return m;
}

static void sx_start(sx_h *h, uint64_t self, const raft_snapshot *snap, uint64_t term)
{
	raft_message m = sx_msg(snap, self, term);
	store_snapshot_id id = sx_id(snap);
	char *path = NULL;

	CU_ASSERT_EQUAL_FATAL(store_snapshot_path(h->src, &id, &path, NULL), STORE_OK);
	CU_ASSERT_EQUAL_FATAL(snapxfer_sender_start(h->snd[self].s, &m, path), SNAPXFER_OK);
	free(path);
}

/* Installs the completed snapshot as the next Ready would, and resolves. */
static void sx_install(sx_h *h, raft_message *m)
{
	raft_ready rd;

	memset(&rd, 0, sizeof(rd));
	rd.has_snapshot = true;
	rd.snapshot = m->snapshot;
	rd.has_hard_state = true;
	rd.hard_state =
	    (raft_hard_state){.term = m->term, .vote = 0, .commit = m->snapshot.metadata.index};
	rd.must_sync = true;
	if (store_persist_ready(h->dst, &rd) != STORE_OK) {
		fprintf(stderr, "install: %s\n", store_errmsg(h->dst));
		h->install_failed = true;
		snapxfer_receiver_resolve(h->rcv, false);
		return;
	}
	h->installs++;
	h->commit = m->snapshot.metadata.index;
	h->installed_index = m->snapshot.metadata.index;
	h->installed_id = sx_id(&m->snapshot);
	snapxfer_receiver_resolve(h->rcv, true);
}

static void sx_deliver_chunk(sx_h *h, snapxfer_chunk *c)
{
	raft_message m;
	int rv = snapxfer_receiver_on_chunk(h->rcv, c, h->now, h->commit, &m);

	CU_ASSERT(rv >= 0);
	if (rv != SNAPXFER_RECV_COMPLETE)
		return;
	h->completes++;
	CU_ASSERT_EQUAL(m.type, RAFT_MSG_SNAPSHOT);
	CU_ASSERT_EQUAL(m.to, 2);
	CU_ASSERT_EQUAL(m.from, c->from);
	CU_ASSERT_EQUAL(m.term, c->term);
	CU_ASSERT_EQUAL(m.snapshot.metadata.index, c->meta.index);
	h->last_step_term = m.term;
	if (h->stale_step)
		snapxfer_receiver_reject(h->rcv);
	else if (h->no_install || m.snapshot.metadata.index <= h->commit)
		snapxfer_receiver_resolve(h->rcv, false);
	else
		sx_install(h, &m);
	raft_message_free(&m);
}

/* Delivers the chunks on the network, each per the fate, then the acks. */
static void sx_round(sx_h *h)
{
	snapxfer_chunk **batch = h->q;
	size_t n = h->nq;
	snapxfer_ack *acks;
	size_t na;

	h->q = NULL;
	h->nq = h->capq = 0;
	if (h->reorder) {
		for (size_t i = 0; i + 1 < n; i += 2) {
			if (!h->reordered || sx_rand(&h->rng) % 2 == 0) {
				snapxfer_chunk *t = batch[i];

				batch[i] = batch[i + 1];
				batch[i + 1] = t;
				h->reordered = true;
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		snapxfer_chunk *c = batch[i];
		int fate =
		    h->fate != NULL ? h->fate(h, c, h->sent_n - (unsigned)(n - i)) : SX_DELIVER;

		if (fate == SX_CORRUPT && c->len > 0)
			c->data[sx_rand(&h->rng) % c->len] ^= 0x01;
		if (fate == SX_TAMPER)
			c->term++;
		if (fate == SX_RESEAL_CONF) {
			c->meta.conf_state.voters[2] = 4; /* {1, 2, 4}: the file says {1, 2, 3} */
			snapxfer_chunk_seal(c);
		}
		if (fate != SX_DROP)
			sx_deliver_chunk(h, c);
		if (fate == SX_DUP)
			sx_deliver_chunk(h, c);
		free(c);
	}
	free(batch);
	acks = h->acks;
	na = h->na;
	h->acks = NULL;
	h->na = h->capa = 0;
	for (size_t i = 0; i < na; i++) {
		unsigned nth = h->acks_n - (unsigned)(na - i);

		if (h->ack_drop != NULL && h->ack_drop(h, &acks[i], nth))
			continue;
		if (acks[i].to < 4 && h->snd[acks[i].to].s != NULL)
			snapxfer_sender_on_ack(h->snd[acks[i].to].s, &acks[i]);
	}
	free(acks);
}

static void sx_tick(sx_h *h)
{
	h->now++;
	for (int i = 0; i < 4; i++)
		if (h->snd[i].s != NULL)
			snapxfer_sender_tick(h->snd[i].s);
}

/* Runs until sender self reported (or the network is empty and until_idle), ticking whenever
 * nothing is in flight. Returns the rounds taken. */
static unsigned sx_run(sx_h *h, uint64_t self)
{
	unsigned rounds = 0;

	while (h->snd[self].reports == 0 && rounds < SX_MAX_ROUNDS) {
		rounds++;
		if (h->nq == 0 && h->na == 0)
			sx_tick(h);
		else
			sx_round(h);
	}
	CU_ASSERT(rounds < SX_MAX_ROUNDS);
	return rounds;
}

/* A transfer of the source's snapshot by sender 1, run to its report under the harness's faults.
 * Checks the outcome: reported ok, installed, the data there, the window never exceeded. */
static void sx_transfer_ok(sx_h *h, raft_snapshot *snap, uint64_t n, size_t value_len)
{
	snapxfer_sender_stats st;

	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, snap);
	sx_start(h, 1, snap, 1);
	sx_run(h, 1);
	snapxfer_sender_stats_get(h->snd[1].s, &st);
	CU_ASSERT_EQUAL(h->snd[1].reports, 1);
	CU_ASSERT(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->installs, 1);
	CU_ASSERT_FALSE(h->install_failed);
	CU_ASSERT_EQUAL(h->installed_index, n);
	CU_ASSERT_EQUAL(store_applied_index(h->dst), n);
	CU_ASSERT(sx_has_data(h->dst, 1, n, value_len));
	CU_ASSERT_FALSE(h->snd[1].window_broken);
	CU_ASSERT(st.peak_inflight_chunks <= h->window);
	CU_ASSERT_EQUAL(snapxfer_sender_active(h->snd[1].s), 0);
	CU_ASSERT_EQUAL(st.completed, 1);
	CU_ASSERT_EQUAL(st.failed, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Chunk protocol tests                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* A multi-MB snapshot with 64 KiB chunks and a window of 4: the sender never has more than 4
 * chunks (256 KiB) out, the network never holds more, and no buffer scales with the file. */
static void test_clean_and_bounded(void)
{
	sx_h *h = sx_new(64, 64u << 10, 64u << 10, 4);
	raft_snapshot snap;
	snapxfer_sender_stats st;
	snapxfer_receiver_stats rs;
	uint64_t size = 0;
	char *path = NULL;
	store_snapshot_id id;

	sx_transfer_ok(h, &snap, 64, 64u << 10);
	id = sx_id(&snap);
	CU_ASSERT_EQUAL(store_snapshot_path(h->src, &id, &path, &size), STORE_OK);
	free(path);
	snapxfer_sender_stats_get(h->snd[1].s, &st);
	snapxfer_receiver_stats_get(h->rcv, &rs);
	CU_ASSERT(size > (4u << 20));
	CU_ASSERT(st.peak_inflight_bytes <= 4u * (64u << 10));
	CU_ASSERT(h->max_net_bytes <= 4u * (64u << 10));
	CU_ASSERT_EQUAL(st.bytes_sent, size); /* nothing resent without faults */
	CU_ASSERT_EQUAL(st.rewinds, 0);
	CU_ASSERT_EQUAL(rs.bytes_received, size);
	CU_ASSERT_EQUAL(rs.installed, 1);
	CU_ASSERT_EQUAL(rs.corrupt, 0);
	/* The staging went into the store in the install. */
	CU_ASSERT_FALSE(sx_staging_exists(h->dir, 2, &id));
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* Drops the first transmission of chunk 3 and a seeded 10% of the chunks after it. */
static int sx_fate_lossy(sx_h *h, const snapxfer_chunk *c, unsigned nth)
{
	(void)nth;
	if (c->offset == 3 * h->chunk && h->fdrop_nth++ == 0)
		return SX_DROP;
	if (c->offset <= 3 * h->chunk)
		return SX_DELIVER; /* so that chunk 3's loss is the first */
	return sx_rand(&h->rng) % 10 == 0 ? SX_DROP : SX_DELIVER;
}

static void test_lost_chunks(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_sender_stats st;

	h->fate = sx_fate_lossy;
	sx_transfer_ok(h, &snap, 32, 8u << 10);
	snapxfer_sender_stats_get(h->snd[1].s, &st);
	CU_ASSERT(st.rewinds >= 1);
	/* Resent from the acknowledged offset, never from the start. */
	CU_ASSERT(st.max_rewind_offset >= 3 * h->chunk);
	CU_ASSERT_EQUAL(st.rewinds_to_zero, 0);
	raft_snapshot_clear(&snap);
	sx_free(h);
}

static int sx_fate_dup(sx_h *h, const snapxfer_chunk *c, unsigned nth)
{
	(void)h;
	(void)c;
	return nth % 2 == 0 ? SX_DUP : SX_DELIVER;
}

static void test_duplicated_chunks(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_receiver_stats rs;
	uint64_t size = 0;
	char *path = NULL;
	store_snapshot_id id;

	h->fate = sx_fate_dup;
	sx_transfer_ok(h, &snap, 32, 8u << 10);
	snapxfer_receiver_stats_get(h->rcv, &rs);
	id = sx_id(&snap);
	CU_ASSERT_EQUAL(store_snapshot_path(h->src, &id, &path, &size), STORE_OK);
	free(path);
	CU_ASSERT(rs.chunks_dropped > 0);
	CU_ASSERT_EQUAL(rs.bytes_received, size); /* each byte staged once */
	raft_snapshot_clear(&snap);
	sx_free(h);
}

static void test_reordered_chunks(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_receiver_stats rs;

	h->reorder = true;
	sx_transfer_ok(h, &snap, 32, 8u << 10);
	snapxfer_receiver_stats_get(h->rcv, &rs);
	CU_ASSERT(rs.chunks_dropped > 0); /* some arrived past a gap and were dropped */
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* Drops acks 2..5: the sender stalls with a full window, times out, and resends from the last
 * offset it saw acknowledged (2 chunks in), not from zero. */
static bool sx_ack_drop_middle(sx_h *h, const snapxfer_ack *a, unsigned nth)
{
	(void)h;
	(void)a;
	return nth >= 2 && nth <= 5;
}

static void test_lost_acks(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_sender_stats st;

	h->ack_drop = sx_ack_drop_middle;
	sx_transfer_ok(h, &snap, 32, 8u << 10);
	snapxfer_sender_stats_get(h->snd[1].s, &st);
	CU_ASSERT(st.rewinds >= 1);
	CU_ASSERT(st.max_rewind_offset >= 2 * h->chunk);
	CU_ASSERT(h->now >= SX_TIMEOUT); /* it took a timeout */
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* Drops the first DONE: the sender, everything acknowledged, times out and resends the last
 * chunk; the receiver, which installed it already, answers DONE again. */
static bool sx_ack_drop_done(sx_h *h, const snapxfer_ack *a, unsigned nth)
{
	(void)nth;
	return a->status == SNAPXFER_ACK_DONE && h->fdrop_nth++ == 0;
}

static void test_lost_done(void)
{
	sx_h *h = sx_new(16, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_sender_stats st;

	h->ack_drop = sx_ack_drop_done;
	sx_transfer_ok(h, &snap, 16, 8u << 10);
	snapxfer_sender_stats_get(h->snd[1].s, &st);
	CU_ASSERT_EQUAL(h->fdrop_nth, 2); /* one DONE dropped, the second one arrived */
	CU_ASSERT(st.rewinds >= 1);
	CU_ASSERT(h->now >= SX_TIMEOUT);
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* Corrupts the first transmission of chunk 2 and a seeded 5% of the chunks after it. */
static int sx_fate_corrupt(sx_h *h, const snapxfer_chunk *c, unsigned nth)
{
	(void)nth;
	if (c->offset == 2 * h->chunk && h->fdrop_nth++ == 0)
		return SX_CORRUPT;
	if (c->offset <= 2 * h->chunk)
		return SX_DELIVER; /* so that chunk 2's damage is the first */
	return sx_rand(&h->rng) % 20 == 0 ? SX_CORRUPT : SX_DELIVER;
}

static void test_corrupt_chunk(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_sender_stats st;
	snapxfer_receiver_stats rs;

	h->fate = sx_fate_corrupt;
	sx_transfer_ok(h, &snap, 32, 8u << 10);
	snapxfer_sender_stats_get(h->snd[1].s, &st);
	snapxfer_receiver_stats_get(h->rcv, &rs);
	CU_ASSERT(rs.corrupt >= 1);
	CU_ASSERT(st.max_rewind_offset >= 2 * h->chunk);
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* The receiver crashes halfway: its memory goes, its store is reopened, the chunks in flight are
 * lost. The new receiver resumes from the staged offset: it stages only the rest. */
static void test_receiver_restart(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_receiver_stats rs;
	uint64_t size = 0, staged, rounds = 0;
	char *path = NULL;
	store_snapshot_id id;

	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	id = sx_id(&snap);
	CU_ASSERT_EQUAL_FATAL(store_snapshot_path(h->src, &id, &path, &size), STORE_OK);
	free(path);
	sx_start(h, 1, &snap, 1);
	while (rounds++ < 1000) {
		snapxfer_receiver_stats_get(h->rcv, &rs);
		if (rs.bytes_received >= size / 2)
			break;
		sx_round(h);
	}
	staged = rs.bytes_received;
	CU_ASSERT_FATAL(staged > 0 && staged < size);
	/* Crash. */
	snapxfer_receiver_free(h->rcv);
	store_close(h->dst);
	for (size_t i = 0; i < h->nq; i++)
		free(h->q[i]);
	h->nq = 0;
	h->na = 0;
	h->dst = sx_open(h->dir, 2);
	CU_ASSERT_FATAL(h->dst != NULL);
	CU_ASSERT(store_staging_offset(h->dst, &id) >= staged);
	sx_new_receiver(h);
	sx_run(h, 1);
	CU_ASSERT(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->installs, 1);
	CU_ASSERT(sx_has_data(h->dst, 1, 32, 8u << 10));
	snapxfer_receiver_stats_get(h->rcv, &rs);
	CU_ASSERT(rs.bytes_received <= size - staged); /* resumed, not restarted */
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* The sender crashes halfway and comes back with a new snapshot (new nonce) and a new term: the
 * receiver drops the old staging and takes the new one. */
static void test_sender_restart(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot snap, snap2;
	store_snapshot_id id, id2;
	snapxfer_receiver_stats rs;
	unsigned rounds = 0;

	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	id = sx_id(&snap);
	sx_start(h, 1, &snap, 1);
	for (rounds = 0; rounds < 3; rounds++)
		sx_round(h);
	CU_ASSERT_FATAL(sx_staging_exists(h->dir, 2, &id));
	CU_ASSERT_EQUAL(h->installs, 0);
	/* Crash of the sender: its memory and the chunks in flight are gone. */
	for (size_t i = 0; i < h->nq; i++)
		free(h->q[i]);
	h->nq = 0;
	h->na = 0;
	store_close(h->src);
	h->src = sx_open(h->dir, 1);
	CU_ASSERT_FATAL(h->src != NULL);
	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap2);
	id2 = sx_id(&snap2);
	CU_ASSERT_EQUAL(id2.index, id.index);
	CU_ASSERT_NOT_EQUAL(id2.nonce, id.nonce); /* a new id */
	sx_start(h, 1, &snap2, 2);
	sx_run(h, 1);
	CU_ASSERT(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->installs, 1);
	CU_ASSERT_EQUAL(h->installed_id.nonce, id2.nonce);
	CU_ASSERT_FALSE(sx_staging_exists(h->dir, 2, &id));
	snapxfer_receiver_stats_get(h->rcv, &rs);
	CU_ASSERT_EQUAL(rs.superseded, 1);
	CU_ASSERT(sx_has_data(h->dst, 1, 32, 8u << 10));
	raft_snapshot_clear(&snap);
	raft_snapshot_clear(&snap2);
	sx_free(h);
}

/* Two snapshots race for one follower: sender 1 (term 1, index 32) is superseded by sender 3
 * (term 2, a newer snapshot at index 40); sender 1 gets REJECT and reports failure, and its
 * late chunks do not bring its snapshot back. */
static void test_newer_supersedes(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot old_snap, new_snap;
	store_snapshot_id old_id;
	bool more = false;

	sx_new_sender(h, 1, 2);
	sx_new_sender(h, 3, 2);
	sx_snapshot(h->src, &old_snap);
	old_id = sx_id(&old_snap);
	sx_start(h, 1, &old_snap, 1);
	sx_round(h);
	sx_round(h);
	CU_ASSERT_FATAL(sx_staging_exists(h->dir, 2, &old_id));
	/* A newer snapshot: more entries, and the log compacted past the old one. */
	sx_write(h->src, 33, 8, 8u << 10);
	CU_ASSERT_EQUAL_FATAL(store_compact(h->src, 39, 0, &more), STORE_OK);
	sx_snapshot(h->src, &new_snap);
	CU_ASSERT_EQUAL_FATAL(new_snap.metadata.index, 40);
	sx_start(h, 3, &new_snap, 2);
	sx_run(h, 3);
	CU_ASSERT(h->snd[3].last_ok);
	CU_ASSERT_EQUAL(h->installs, 1);
	CU_ASSERT_EQUAL(h->installed_index, 40);
	CU_ASSERT_FALSE(sx_staging_exists(h->dir, 2, &old_id));
	sx_run(h, 1);
	CU_ASSERT_EQUAL(h->snd[1].reports, 1);
	CU_ASSERT_FALSE(h->snd[1].last_ok); /* rejected (or timed out): reported either way */
	CU_ASSERT_EQUAL(h->installs, 1);
	CU_ASSERT_EQUAL(store_applied_index(h->dst), 40);
	CU_ASSERT(sx_has_data(h->dst, 1, 40, 8u << 10));
	raft_snapshot_clear(&old_snap);
	raft_snapshot_clear(&new_snap);
	sx_free(h);
}

/* A snapshot at or below the follower's commit is not fetched: its message is stepped at the
 * first chunk (raft ignores it) and the transfer ends DONE with nothing staged. */
static void test_older_than_commit(void)
{
	sx_h *h = sx_new(16, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_receiver_stats rs;
	store_snapshot_id id;

	h->commit = 100;
	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	id = sx_id(&snap);
	sx_start(h, 1, &snap, 1);
	sx_run(h, 1);
	CU_ASSERT(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->completes, 1);
	CU_ASSERT_EQUAL(h->installs, 0);
	snapxfer_receiver_stats_get(h->rcv, &rs);
	CU_ASSERT_EQUAL(rs.bytes_received, 0);
	CU_ASSERT_EQUAL(rs.ignored, 1);
	CU_ASSERT_FALSE(sx_staging_exists(h->dir, 2, &id));
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* A completed snapshot that raft ignores is discarded and still acknowledged DONE. */
static void test_ignored_discarded(void)
{
	sx_h *h = sx_new(16, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	store_snapshot_id id;

	h->no_install = true;
	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	id = sx_id(&snap);
	sx_start(h, 1, &snap, 1);
	sx_run(h, 1);
	CU_ASSERT(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->completes, 1);
	CU_ASSERT_FALSE(sx_staging_exists(h->dir, 2, &id));
	raft_snapshot_clear(&snap);
	sx_free(h);
}

static int sx_fate_drop_all(sx_h *h, const snapxfer_chunk *c, unsigned nth)
{
	(void)h;
	(void)c;
	(void)nth;
	return SX_DROP;
}

/* Nothing gets through: the sender gives up after SX_MAX_TO timeouts and reports failure once,
 * so the core leaves the snapshot state. */
static void test_timeout_reports_failure(void)
{
	sx_h *h = sx_new(16, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_sender_stats st;

	h->fate = sx_fate_drop_all;
	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	sx_start(h, 1, &snap, 1);
	sx_run(h, 1);
	CU_ASSERT_EQUAL(h->snd[1].reports, 1);
	CU_ASSERT_FALSE(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->now, (uint64_t)SX_TIMEOUT * SX_MAX_TO);
	CU_ASSERT_EQUAL(snapxfer_sender_active(h->snd[1].s), 0);
	snapxfer_sender_stats_get(h->snd[1].s, &st);
	CU_ASSERT_EQUAL(st.failed, 1);
	for (int i = 0; i < 20; i++)
		sx_tick(h);
	CU_ASSERT_EQUAL(h->snd[1].reports, 1); /* exactly once */
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* A corrupt file (every chunk intact, the file itself damaged at the source) fails the
 * receiver's finish: REJECT, the staging discarded, the sender reports failure. */
static int sx_fate_damage_file(sx_h *h, const snapxfer_chunk *c, unsigned nth)
{
	(void)h;
	(void)nth;
	if (c->offset == 0) {
		snapxfer_chunk *w = (snapxfer_chunk *)c;

		w->data[c->len / 2] ^= 0x10;
		snapxfer_chunk_seal(w);
	}
	return SX_DELIVER;
}

static void test_corrupt_file_rejected(void)
{
	sx_h *h = sx_new(16, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	store_snapshot_id id;
	snapxfer_receiver_stats rs;

	h->fate = sx_fate_damage_file;
	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	id = sx_id(&snap);
	sx_start(h, 1, &snap, 1);
	sx_run(h, 1);
	CU_ASSERT_EQUAL(h->snd[1].reports, 1);
	CU_ASSERT_FALSE(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->installs, 0);
	CU_ASSERT_EQUAL(h->completes, 0);
	CU_ASSERT_FALSE(sx_staging_exists(h->dir, 2, &id));
	snapxfer_receiver_stats_get(h->rcv, &rs);
	CU_ASSERT(rs.corrupt >= 1);
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* The rate limit in tick terms: after t ticks at most cap + t * bytes_per_tick bytes went out
 * (cap = max(chunk, bytes_per_tick), the bucket), and the transfer took at least
 * (size - cap) / bytes_per_tick ticks. */
static void test_rate_limit(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_sender_stats st;
	uint64_t size = 0, cap;
	char *path = NULL;
	store_snapshot_id id;
	unsigned rounds = 0;

	h->bytes_per_tick = 4u << 10;
	cap = h->chunk;
	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	id = sx_id(&snap);
	CU_ASSERT_EQUAL_FATAL(store_snapshot_path(h->src, &id, &path, &size), STORE_OK);
	free(path);
	sx_start(h, 1, &snap, 1);
	while (h->snd[1].reports == 0 && rounds++ < SX_MAX_ROUNDS) {
		if (h->nq == 0 && h->na == 0)
			sx_tick(h);
		else
			sx_round(h);
		snapxfer_sender_stats_get(h->snd[1].s, &st);
		CU_ASSERT(st.bytes_sent <= cap + h->now * h->bytes_per_tick);
	}
	CU_ASSERT(h->snd[1].last_ok);
	CU_ASSERT(h->now >= (size - cap) / h->bytes_per_tick);
	CU_ASSERT(sx_has_data(h->dst, 1, 32, 8u << 10));
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* max_concurrent transfers at once: another start is BUSY; restarting one to the same follower
 * replaces it. */
static void test_concurrency_limit(void)
{
	sx_h *h = sx_new(8, 1024, 16u << 10, 4);
	raft_snapshot snap;
	raft_message m;
	store_snapshot_id id;
	char *path = NULL;

	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	id = sx_id(&snap);
	CU_ASSERT_EQUAL_FATAL(store_snapshot_path(h->src, &id, &path, NULL), STORE_OK);
	m = sx_msg(&snap, 1, 1);
	CU_ASSERT_EQUAL(snapxfer_sender_start(h->snd[1].s, &m, path), SNAPXFER_OK);
	m.to = 3;
	CU_ASSERT_EQUAL(snapxfer_sender_start(h->snd[1].s, &m, path), SNAPXFER_OK);
	m.to = 4;
	CU_ASSERT_EQUAL(snapxfer_sender_start(h->snd[1].s, &m, path), SNAPXFER_BUSY);
	m.to = 3;
	CU_ASSERT_EQUAL(snapxfer_sender_start(h->snd[1].s, &m, path), SNAPXFER_OK);
	CU_ASSERT_EQUAL(snapxfer_sender_active(h->snd[1].s), 2);
	CU_ASSERT_EQUAL(snapxfer_sender_min_index(h->snd[1].s), 8);
	snapxfer_sender_cancel_stale(h->snd[1].s, true, 2);
	CU_ASSERT_EQUAL(snapxfer_sender_active(h->snd[1].s), 0);
	CU_ASSERT_EQUAL(h->snd[1].reports, 0); /* cancelled, not reported */
	m.to = 2;
	m.snapshot.len = 3; /* not a snapshot id */
	CU_ASSERT_EQUAL(snapxfer_sender_start(h->snd[1].s, &m, path), SNAPXFER_BAD);
	free(path);
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* Every fault at once, seeded: drops, duplicates, corruption, reordering and lost acks. */
static int sx_fate_mixed(sx_h *h, const snapxfer_chunk *c, unsigned nth)
{
	uint64_t r = sx_rand(&h->rng) % 20;

	(void)c;
	(void)nth;
	return r == 0 ? SX_DROP : r == 1 ? SX_DUP : r == 2 ? SX_CORRUPT : SX_DELIVER;
}

static bool sx_ack_drop_some(sx_h *h, const snapxfer_ack *a, unsigned nth)
{
	(void)a;
	(void)nth;
	return sx_rand(&h->rng) % 10 == 0;
}

static void test_mixed_faults(void)
{
	for (int run = 0; run < 4; run++) {
		sx_h *h = sx_new(48, 8u << 10, 16u << 10, 3);
		raft_snapshot snap;

		h->rng += (uint64_t)run;
		h->fate = sx_fate_mixed;
		h->ack_drop = sx_ack_drop_some;
		h->reorder = true;
		sx_new_sender(h, 1, 2);
		sx_snapshot(h->src, &snap);
		sx_start(h, 1, &snap, 1);
		sx_run(h, 1);
		if (!h->snd[1].last_ok || h->snd[1].window_broken) {
			snapxfer_sender_stats st;
			snapxfer_receiver_stats rs;

			snapxfer_sender_stats_get(h->snd[1].s, &st);
			snapxfer_receiver_stats_get(h->rcv, &rs);
			fprintf(stderr,
			        "mixed faults run %d: gave up (seed %" PRIu64 ") chunks %" PRIu64
			        " rewinds %" PRIu64 " ticks %" PRIu64 " staged %" PRIu64
			        " dropped %" PRIu64 " corrupt %" PRIu64 "\n",
			        run, sx_seed(), st.chunks_sent, st.rewinds, h->now,
			        rs.bytes_received, rs.chunks_dropped, rs.corrupt);
		}
		/* A lossy run may give up (5 timeouts in a row): then the core retries with a
		 * new transfer, which this loop does too. */
		for (int retry = 0; retry < 5 && !h->snd[1].last_ok; retry++) {
			h->snd[1].reports = 0;
			sx_start(h, 1, &snap, 1);
			sx_run(h, 1);
		}
		CU_ASSERT(h->snd[1].last_ok);
		CU_ASSERT_FALSE(h->snd[1].window_broken);
		CU_ASSERT(h->snd[1].max_beyond <= 3);
		CU_ASSERT(sx_has_data(h->dst, 1, 48, 8u << 10));
		raft_snapshot_clear(&snap);
		sx_free(h);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Regressions of review 5                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Delivers the first two chunks put on the network; drops the rest. */
static int sx_fate_first_two(sx_h *h, const snapxfer_chunk *c, unsigned nth)
{
	(void)h;
	(void)c;
	return nth < 2 ? SX_DELIVER : SX_DROP;
}

/* F1: leader 1 sends snapshot A in term 5; two chunks arrive; it loses leadership (cancelled,
 * no report), is re-elected in term 7 and sends the same A. The receiver keeps its staging but
 * steps the message with term 7 (a term-5 one would be dropped by raft, forever). */
static void test_same_id_new_term(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_receiver_stats rs;

	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	sx_start(h, 1, &snap, 5);
	h->fate = sx_fate_first_two;
	sx_round(h);
	CU_ASSERT_EQUAL(h->completes, 0);
	snapxfer_sender_cancel_stale(h->snd[1].s, false, 0);
	CU_ASSERT_EQUAL(h->snd[1].reports, 0);
	h->fate = NULL;
	sx_start(h, 1, &snap, 7);
	sx_run(h, 1);
	snapxfer_receiver_stats_get(h->rcv, &rs);
	CU_ASSERT_EQUAL(h->completes, 1);
	CU_ASSERT_EQUAL(h->last_step_term, 7);
	CU_ASSERT_EQUAL(h->installs, 1);
	CU_ASSERT(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(rs.superseded, 0); /* the staging was kept, not begun again */
	CU_ASSERT_EQUAL(store_applied_index(h->dst), 32);
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* F1: a snapshot raft dropped as stale is REJECTed (reported failed, not ok), and a snapshot
 * resolved without an install is not answered DONE again later while it is still above the
 * commit index: it is fetched and stepped again. */
static void test_stale_step_rejected_then_refetched(void)
{
	sx_h *h = sx_new(16, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	store_snapshot_id id;

	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	id = sx_id(&snap);
	h->stale_step = true;
	sx_start(h, 1, &snap, 3);
	sx_run(h, 1);
	CU_ASSERT_EQUAL(h->snd[1].reports, 1);
	CU_ASSERT_FALSE(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->completes, 1);
	CU_ASSERT_FALSE(sx_staging_exists(h->dir, 2, &id));
	/* Ignored (not installed) with the commit index still below it. */
	h->stale_step = false;
	h->no_install = true;
	h->snd[1].reports = 0;
	sx_start(h, 1, &snap, 4);
	sx_run(h, 1);
	CU_ASSERT(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->completes, 2);
	/* Asked again: fetched and stepped again, and installed this time. */
	h->no_install = false;
	h->snd[1].reports = 0;
	sx_start(h, 1, &snap, 4);
	sx_run(h, 1);
	CU_ASSERT(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->completes, 3);
	CU_ASSERT_EQUAL(h->installs, 1);
	CU_ASSERT_EQUAL(store_applied_index(h->dst), 16);
	/* Asked once more: installed, so DONE at once with nothing stepped. */
	h->snd[1].reports = 0;
	sx_start(h, 1, &snap, 4);
	sx_run(h, 1);
	CU_ASSERT(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->completes, 3);
	raft_snapshot_clear(&snap);
	sx_free(h);
}

static bool sx_ack_hold_done(sx_h *h, const snapxfer_ack *a, unsigned nth)
{
	(void)nth;
	return a->status == SNAPXFER_ACK_DONE && h->fdrop_nth != 0;
}

/* F2: everything acknowledged, DONE slow to come (the receiver installing): the sender keeps
 * waiting well past max_timeouts x timeout, resending the last chunk, and reports ok once when
 * DONE arrives. */
static void test_slow_done_not_given_up(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_sender_stats st;
	uint64_t acked = 0, size = 0, t0;
	store_snapshot_id id;
	char *path = NULL;

	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	id = sx_id(&snap);
	CU_ASSERT_EQUAL_FATAL(store_snapshot_path(h->src, &id, &path, &size), STORE_OK);
	free(path);
	h->ack_drop = sx_ack_hold_done;
	h->fdrop_nth = 1;
	sx_start(h, 1, &snap, 1);
	for (unsigned r = 0; r < SX_MAX_ROUNDS && (h->nq > 0 || h->na > 0); r++)
		sx_round(h);
	CU_ASSERT_FATAL(snapxfer_sender_has(h->snd[1].s, 2, &acked));
	CU_ASSERT_EQUAL(acked, size);
	t0 = h->now;
	while (h->now - t0 < 3ull * SX_MAX_TO * SX_TIMEOUT) {
		sx_tick(h);
		while (h->nq > 0 || h->na > 0)
			sx_round(h);
	}
	CU_ASSERT_EQUAL(h->snd[1].reports, 0);
	CU_ASSERT(snapxfer_sender_has(h->snd[1].s, 2, NULL));
	h->fdrop_nth = 0; /* DONE gets through now */
	sx_run(h, 1);
	CU_ASSERT_EQUAL(h->snd[1].reports, 1);
	CU_ASSERT(h->snd[1].last_ok);
	snapxfer_sender_stats_get(h->snd[1].s, &st);
	CU_ASSERT_EQUAL(st.completed, 1);
	CU_ASSERT_EQUAL(st.failed, 0);
	CU_ASSERT_EQUAL(h->installs, 1);
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* F2: a receiver that never answers DONE is still given up on, after the scaled patience. */
static void test_done_patience_bounded(void)
{
	sx_h *h = sx_new(16, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;

	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	h->ack_drop = sx_ack_hold_done;
	h->fdrop_nth = 1;
	sx_start(h, 1, &snap, 1);
	sx_run(h, 1);
	CU_ASSERT_EQUAL(h->snd[1].reports, 1);
	CU_ASSERT_FALSE(h->snd[1].last_ok);
	CU_ASSERT(h->now > (uint64_t)SX_MAX_TO * SX_TIMEOUT);
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* A leader of term 2 (node 1) whose log starts at `first`, with peers 2 and 3. */
static raft_status sx_gc_status(uint64_t first)
{
	raft_status st;

	memset(&st, 0, sizeof(st));
	st.id = 1;
	st.role = RAFT_LEADER;
	st.term = 2;
	st.first_index = first;
	st.n_peers = 3;
	for (size_t i = 0; i < 3; i++) {
		st.peers[i].id = i + 1;
		st.peers[i].state = RAFT_PROGRESS_REPLICATE;
		st.peers[i].match = 1000;
	}
	return st;
}

/* F3/F4: the leader's GC limit. */
static void test_gc_policy(void)
{
	raft_status st = sx_gc_status(100);
	bool active[RAFT_MAX_VOTERS] = {true, true, true};

	/* Everyone caught up: the target stands; the node itself never counts. */
	st.peers[0].match = 10;
	CU_ASSERT_EQUAL(gc_policy_limit(&st, active, 900, UINT64_MAX), 900);
	/* A replicating follower lagging, with recent_active just cleared by check quorum but
	 * seen recently (active): its match is kept (F3). */
	st.peers[1].match = 500;
	st.peers[1].recent_active = false;
	CU_ASSERT_EQUAL(gc_policy_limit(&st, active, 900, UINT64_MAX), 500);
	/* Not seen for long: not held for. */
	active[1] = false;
	CU_ASSERT_EQUAL(gc_policy_limit(&st, active, 900, UINT64_MAX), 900);
	active[1] = true;
	/* A probing follower whose next entry is gone needs a snapshot anyway: ignored (F4). */
	st.peers[1].state = RAFT_PROGRESS_PROBE;
	st.peers[1].match = 50;
	CU_ASSERT_EQUAL(gc_policy_limit(&st, active, 900, UINT64_MAX), 900);
	/* Its next entry is the first one still here: kept. */
	st.peers[1].match = 99;
	CU_ASSERT_EQUAL(gc_policy_limit(&st, active, 900, UINT64_MAX), 99);
	/* In snapshot state: its pending snapshot is kept, whatever its match. */
	st.peers[1].state = RAFT_PROGRESS_SNAPSHOT;
	st.peers[1].match = 0;
	st.peers[1].pending_snapshot = 700;
	active[1] = false;
	CU_ASSERT_EQUAL(gc_policy_limit(&st, active, 900, UINT64_MAX), 700);
	/* A transfer running for a lower snapshot. */
	CU_ASSERT_EQUAL(gc_policy_limit(&st, active, 900, 650), 650);
	/* Never raises the target. */
	CU_ASSERT_EQUAL(gc_policy_limit(&st, active, 300, UINT64_MAX), 300);
}

/* The third chunk's term raised after sealing. */
static int sx_fate_tamper_third(sx_h *h, const snapxfer_chunk *c, unsigned nth)
{
	(void)h;
	(void)c;
	return nth == 2 ? SX_TAMPER : SX_DELIVER;
}

/* F5: a chunk with a damaged header field is dropped like a corrupt one and resent; the
 * snapshot is stepped with the true term. */
static void test_tampered_header_dropped(void)
{
	sx_h *h = sx_new(32, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_receiver_stats rs;

	h->fate = sx_fate_tamper_third;
	sx_transfer_ok(h, &snap, 32, 8u << 10);
	snapxfer_receiver_stats_get(h->rcv, &rs);
	CU_ASSERT(rs.corrupt >= 1);
	CU_ASSERT_EQUAL(h->last_step_term, 1);
	raft_snapshot_clear(&snap);
	sx_free(h);
}

static int sx_fate_reseal_conf(sx_h *h, const snapxfer_chunk *c, unsigned nth)
{
	(void)h;
	(void)c;
	(void)nth;
	return SX_RESEAL_CONF;
}

/* F5: chunks whose (sealed) membership disagrees with the file's header: REJECT before any
 * step, the staging discarded, the sender reports failure, and the store stays healthy. */
static void test_meta_mismatch_rejected(void)
{
	sx_h *h = sx_new(16, 8u << 10, 16u << 10, 4);
	raft_snapshot snap;
	snapxfer_receiver_stats rs;
	store_snapshot_id id;

	h->fate = sx_fate_reseal_conf;
	sx_new_sender(h, 1, 2);
	sx_snapshot(h->src, &snap);
	id = sx_id(&snap);
	sx_start(h, 1, &snap, 1);
	sx_run(h, 1);
	snapxfer_receiver_stats_get(h->rcv, &rs);
	CU_ASSERT_EQUAL(h->snd[1].reports, 1);
	CU_ASSERT_FALSE(h->snd[1].last_ok);
	CU_ASSERT_EQUAL(h->completes, 0);
	CU_ASSERT_EQUAL(h->installs, 0);
	CU_ASSERT(rs.corrupt >= 1);
	CU_ASSERT_EQUAL(store_failed(h->dst), STORE_OK);
	CU_ASSERT_FALSE(sx_staging_exists(h->dir, 2, &id));
	CU_ASSERT_EQUAL(store_applied_index(h->dst), 0);
	raft_snapshot_clear(&snap);
	sx_free(h);
}

/* ------------------------------------------------------------------------------------------ */
/* Cluster smoke                                                                              */
/* ------------------------------------------------------------------------------------------ */

static bool sx_pred_received(void *ctx, raftkv *kv)
{
	return cf_status(kv, *(uint64_t *)ctx).snapshots_received >= 1;
}

/* Some node counted a transfer as completed: its DONE reaches the leader after the follower
 * published its install, so it is awaited rather than assumed. */
static bool sx_pred_sent(void *ctx, raftkv *kv)
{
	uint64_t sent = 0;

	(void)ctx;
	for (uint64_t id = 1; id <= 3; id++)
		sent += cf_status(kv, id).snapshots_sent;
	return sent >= 1;
}

/* 3 nodes, gc_threshold 10: a follower isolated while 50 keys are written catches up by
 * snapshot once healed, has every key (read through it as leader), and every node keeps
 * applied - truncated <= 2 * gc_threshold. */
static void test_cluster_smoke(void)
{
	raftkv_options o;
	raftkv *kv;
	char dir[256], key[32], val[32];
	uint64_t leader = 0, lag, sent = 0;
	raftkv_status st;
	bool ok;

	CU_ASSERT_FATAL(cf_mkdtemp(dir, sizeof(dir), "snapxfer-smoke"));
	cf_options(&o, 3);
	o.gc_threshold = 10;
	o.gc_trailing = 2;
	o.gc_hard_limit = 20;
	o.snapshot_chunk_size = 4096;
	o.snapshot_window = 2;
	kv = cf_open(dir, &o);
	CU_ASSERT_FATAL(kv != NULL);
	CU_ASSERT_EQUAL_FATAL(raftkv_wait_leader(kv, cf_wait_ms(), &leader), RAFTKV_OK);
	lag = leader == 1 ? 2 : 1;
	CU_ASSERT_EQUAL(raftkv_isolate(kv, lag), RAFTKV_OK);
	for (int i = 0; i < 50; i++) {
		snprintf(key, sizeof(key), "k%02d", i);
		snprintf(val, sizeof(val), "v%02d", i);
		if (raftkv_put(kv, key, strlen(key), val, strlen(val)) != RAFTKV_OK) {
			CU_FAIL("put");
			break;
		}
	}
	CU_ASSERT_EQUAL(raftkv_heal(kv), RAFTKV_OK);
	ok = cluster_wait(kv, sx_pred_received, &lag, cf_wait_ms()) == RAFTKV_OK &&
	     cf_wait_converged(kv, NULL, 0, cf_wait_ms()) &&
	     cluster_wait(kv, sx_pred_sent, NULL, cf_wait_ms()) == RAFTKV_OK;
	CU_ASSERT(ok);
	st = cf_status(kv, lag);
	CU_ASSERT(st.snapshots_received >= 1);
	CU_ASSERT(st.snapshot_bytes_received > 0);
	CU_ASSERT(st.first_index > 1);
	for (uint64_t id = 1; id <= 3; id++) {
		raftkv_status s = cf_status(kv, id);

		CU_ASSERT(s.applied + 1 - s.first_index <= 2 * o.gc_threshold);
		sent += s.snapshots_sent;
	}
	CU_ASSERT(sent >= 1);
	/* The data, read through the caught-up node as leader. */
	CU_ASSERT_EQUAL(raftkv_transfer_leader(kv, lag), RAFTKV_OK);
	for (int i = 0; i < 50; i++) {
		void *v = NULL;
		size_t len = 0;

		snprintf(key, sizeof(key), "k%02d", i);
		snprintf(val, sizeof(val), "v%02d", i);
		CU_ASSERT_EQUAL(raftkv_get(kv, key, strlen(key), &v, &len), RAFTKV_OK);
		CU_ASSERT(len == strlen(val) && v != NULL && memcmp(v, val, len) == 0);
		raftkv_free(v);
	}
	if (!ok)
		cf_report_seed("snapxfer cluster smoke");
	raftkv_close(kv);
	cf_rmtree(dir);
}

void test_register_snapxfer(void)
{
	CU_pSuite s = CU_add_suite("snapxfer", NULL, NULL);

	printf("snapxfer seed %" PRIu64 " (RAFTKV_TEST_SEED)\n", sx_seed());
	CU_add_test(s, "clean transfer, window and memory bounded", test_clean_and_bounded);
	CU_add_test(s, "lost chunks resent from the acked offset", test_lost_chunks);
	CU_add_test(s, "duplicated chunks", test_duplicated_chunks);
	CU_add_test(s, "reordered chunks", test_reordered_chunks);
	CU_add_test(s, "lost acks: timeout, resume from the acked offset", test_lost_acks);
	CU_add_test(s, "lost DONE: the last chunk is resent", test_lost_done);
	CU_add_test(s, "corrupt chunk detected and resent", test_corrupt_chunk);
	CU_add_test(s, "receiver restart resumes from its staged offset", test_receiver_restart);
	CU_add_test(s, "sender restart: new id, old staging dropped", test_sender_restart);
	CU_add_test(s, "a newer snapshot supersedes an older transfer", test_newer_supersedes);
	CU_add_test(s, "a snapshot at or below commit is not fetched", test_older_than_commit);
	CU_add_test(s, "an ignored snapshot is discarded", test_ignored_discarded);
	CU_add_test(s, "timeouts end in one failure report", test_timeout_reports_failure);
	CU_add_test(s, "a corrupt file is rejected", test_corrupt_file_rejected);
	CU_add_test(s, "rate limit in ticks", test_rate_limit);
	CU_add_test(s, "concurrency limit", test_concurrency_limit);
	CU_add_test(s, "every fault at once", test_mixed_faults);
	CU_add_test(s, "F1: the same snapshot id in a later term", test_same_id_new_term);
	CU_add_test(s, "F1: a stale step is rejected; an ignored one is fetched again",
	            test_stale_step_rejected_then_refetched);
	CU_add_test(s, "F2: a slow DONE is waited for", test_slow_done_not_given_up);
	CU_add_test(s, "F2: a DONE that never comes ends in failure", test_done_patience_bounded);
	CU_add_test(s, "F3/F4: leader GC limit", test_gc_policy);
	CU_add_test(s, "F5: a tampered header is dropped", test_tampered_header_dropped);
	CU_add_test(s, "F5: metadata not matching the file is rejected",
	            test_meta_mismatch_rejected);
	CU_add_test(s, "cluster: isolated follower catches up by snapshot", test_cluster_smoke);
}
