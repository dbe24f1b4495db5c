/* snapxfer.c - chunked, flow-controlled snapshot transfer: the sender and receiver machines. */
#include "node/snapxfer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* For store_crc32c, the store's CRC-32C: the chunk checksum is the one the snapshot file's own
 * trailer uses, so one implementation serves both. */
#include "store/store_internal.h"

static bool snapxfer_id_equal(const store_snapshot_id *a, const store_snapshot_id *b)
{
	return a->node_id == b->node_id && a->index == b->index && a->term == b->term &&
	       a->nonce == b->nonce;
}

static unsigned char *snapxfer_put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		*p++ = (unsigned char)(v >> (8 * i));
	return p;
}

/* CRC-32C of every field of c but crc itself, then of its data. The header is serialised
 * field by field (little-endian, no padding), so the checksum does not depend on the struct
 * layout; at most RAFT_MAX_VOTERS voters are covered (receiver_chunk_ok refuses more). */
static uint32_t snapxfer_chunk_crc(const snapxfer_chunk *c)
{
	unsigned char h[8 * (15 + RAFT_MAX_VOTERS)];
	unsigned char *p = h;
	size_t nv = c->meta.conf_state.n_voters;

	if (nv > RAFT_MAX_VOTERS)
		nv = RAFT_MAX_VOTERS;
	p = snapxfer_put_u64(p, c->from);
	p = snapxfer_put_u64(p, c->to);
	p = snapxfer_put_u64(p, c->term);
	p = snapxfer_put_u64(p, c->commit);
	p = snapxfer_put_u64(p, c->meta.index);
	p = snapxfer_put_u64(p, c->meta.term);
	p = snapxfer_put_u64(p, c->meta.conf_state.n_voters);
	for (size_t i = 0; i < nv; i++)
		p = snapxfer_put_u64(p, c->meta.conf_state.voters[i]);
	p = snapxfer_put_u64(p, c->id.node_id);
	p = snapxfer_put_u64(p, c->id.index);
	p = snapxfer_put_u64(p, c->id.term);
	p = snapxfer_put_u64(p, c->id.nonce);
	p = snapxfer_put_u64(p, c->size);
	p = snapxfer_put_u64(p, c->offset);
	p = snapxfer_put_u64(p, ((uint64_t)c->len << 1) | (c->last ? 1u : 0u));
	return store_crc32c(store_crc32c(0, h, (size_t)(p - h)), c->data, c->len);
}

void snapxfer_chunk_seal(snapxfer_chunk *c)
{
	c->crc = snapxfer_chunk_crc(c);
}

bool snapxfer_chunk_intact(const snapxfer_chunk *c)
{
	return snapxfer_chunk_crc(c) == c->crc;
}

static bool snapxfer_conf_equal(const raft_conf_state *a, const raft_conf_state *b)
{
	if (a->n_voters != b->n_voters || a->n_voters > RAFT_MAX_VOTERS)
		return false;
	for (size_t i = 0; i < a->n_voters; i++)
		if (a->voters[i] != b->voters[i])
			return false;
	return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Sender                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/*
 * One outgoing transfer. Invariants while active: fd is open on the snapshot file (owned);
 * acked <= size and next <= size; the chunks in flight are those covering [acked, next), at most
 * cfg.window of them. next < acked only when acked == size and the last chunk is being resent
 * because DONE did not come (sender_rewind).
 */
typedef struct snapxfer_out {
	bool active;
	uint64_t to;
	uint64_t term;
	uint64_t commit;
	raft_snapshot_metadata meta;
	store_snapshot_id id;
	int fd;
	uint64_t size;
	uint64_t acked;    /* highest offset the receiver acknowledged */
	uint64_t next;     /* next offset to send */
	unsigned idle;     /* ticks without progress while something is outstanding */
	unsigned timeouts; /* timeouts in a row without progress */
	uint64_t waits;    /* timeouts waiting for DONE once acked == size (sender_patience) */
	bool rewound;      /* went back to acked since the last progress */
} snapxfer_out;

struct snapxfer_sender {
	snapxfer_sender_config cfg;
	snapxfer_out *outs; /* cfg.max_concurrent slots, owned */
	size_t rr;          /* slot served first by the next pump, for fairness */
	uint64_t tokens;    /* bytes the bucket allows now; <= cap (meaningful when rate-limited) */
	uint64_t cap; /* bucket size: max(chunk_size, bytes_per_tick), so a chunk always fits */
	snapxfer_sender_stats st;
};

snapxfer_sender *snapxfer_sender_new(const snapxfer_sender_config *cfg)
{
	snapxfer_sender *s;

	if (cfg == NULL || cfg->chunk_size == 0 || cfg->chunk_size > SNAPXFER_MAX_CHUNK ||
	    cfg->window == 0 || cfg->max_concurrent == 0 || cfg->timeout_ticks == 0 ||
	    cfg->max_timeouts == 0 || cfg->send_chunk == NULL || cfg->report == NULL)
		return NULL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->outs = calloc(cfg->max_concurrent, sizeof(*s->outs));
	if (s->outs == NULL) {
		free(s);
		return NULL;
	}
	s->cfg = *cfg;
	for (unsigned i = 0; i < cfg->max_concurrent; i++)
		s->outs[i].fd = -1;
	s->cap = cfg->bytes_per_tick > cfg->chunk_size ? cfg->bytes_per_tick : cfg->chunk_size;
	s->tokens = s->cap;
	return s;
}

static void sender_close(snapxfer_out *o)
{
	if (o->fd >= 0)
		close(o->fd);
	memset(o, 0, sizeof(*o));
	o->fd = -1;
}

void snapxfer_sender_free(snapxfer_sender *s)
{
	if (s == NULL)
		return;
	for (unsigned i = 0; i < s->cfg.max_concurrent; i++)
		sender_close(&s->outs[i]);
	free(s->outs);
	free(s);
}

static snapxfer_out *sender_find(snapxfer_sender *s, uint64_t to)
{
	for (unsigned i = 0; i < s->cfg.max_concurrent; i++)
		if (s->outs[i].active && s->outs[i].to == to)
			return &s->outs[i];
	return NULL;
}

/* Ends o with its one report. */
static void sender_finish(snapxfer_sender *s, snapxfer_out *o, bool ok)
{
	uint64_t to = o->to;

	sender_close(o);
	if (ok)
		s->st.completed++;
	else
		s->st.failed++;
	s->cfg.report(s->cfg.ctx, to, ok);
}

/* Chunks beyond the acknowledged offset. next < acked only while the last chunk is resent to
 * ask again for a lost DONE (sender_rewind): nothing beyond the ack then. */
static uint64_t sender_inflight_chunks(const snapxfer_sender *s, const snapxfer_out *o)
{
	if (o->next <= o->acked)
		return 0;
	return (o->next - o->acked + s->cfg.chunk_size - 1) / s->cfg.chunk_size;
}

static void sender_note_peaks(snapxfer_sender *s)
{
	uint64_t bytes = 0;
	unsigned active = 0;

	for (unsigned i = 0; i < s->cfg.max_concurrent; i++) {
		const snapxfer_out *o = &s->outs[i];
		uint64_t chunks;

		if (!o->active)
			continue;
		active++;
		bytes += o->next > o->acked ? o->next - o->acked : 0;
		chunks = sender_inflight_chunks(s, o);
		if (chunks > s->st.peak_inflight_chunks)
			s->st.peak_inflight_chunks = (unsigned)chunks;
	}
	if (bytes > s->st.peak_inflight_bytes)
		s->st.peak_inflight_bytes = bytes;
	if (active > s->st.peak_active)
		s->st.peak_active = active;
}

/* Reads len bytes at off into buf. 0 or an errno (EIO for a file that shrank). */
static int sender_pread(int fd, unsigned char *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		if (n == 0)
			return EIO;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Sends o's next chunk if the window and the bucket allow. true if one was sent. */
static bool sender_send_one(snapxfer_sender *s, snapxfer_out *o)
{
	uint64_t left = o->size - o->next;
	size_t len = left < s->cfg.chunk_size ? (size_t)left : s->cfg.chunk_size;
	snapxfer_chunk *c;

	if (o->next >= o->size || sender_inflight_chunks(s, o) >= s->cfg.window)
		return false;
	if (s->cfg.bytes_per_tick > 0 && s->tokens < len)
		return false;
	c = malloc(sizeof(*c) + len);
	if (c == NULL || sender_pread(o->fd, c->data, len, o->next) != 0) {
		free(c);
		sender_finish(s, o, false);
		return false;
	}
	c->from = s->cfg.self;
	c->to = o->to;
	c->term = o->term;
	c->commit = o->commit;
	c->meta = o->meta;
	c->id = o->id;
	c->size = o->size;
	c->offset = o->next;
	c->len = (uint32_t)len;
	c->last = o->next + len == o->size;
	snapxfer_chunk_seal(c);
	if (s->cfg.bytes_per_tick > 0)
		s->tokens -= len;
	o->next += len;
	s->st.chunks_sent++;
	s->st.bytes_sent += len;
	sender_note_peaks(s);
	s->cfg.send_chunk(s->cfg.ctx, c);
	return true;
}

/* Sends what the windows and the bucket allow, one chunk per transfer per round. */
static void sender_pump(snapxfer_sender *s)
{
	unsigned n = s->cfg.max_concurrent;
	bool sent = true;

	while (sent) {
		sent = false;
		for (unsigned k = 0; k < n; k++) {
			snapxfer_out *o = &s->outs[(s->rr + k) % n];

			if (o->active && sender_send_one(s, o))
				sent = true;
		}
		s->rr = (s->rr + 1) % n;
	}
}

int snapxfer_sender_start(snapxfer_sender *s, const raft_message *m, const char *path)
{
	store_snapshot_id id;
	snapxfer_out *o;
	struct stat st;
	int fd;

	if (s == NULL || m == NULL || path == NULL || m->type != RAFT_MSG_SNAPSHOT ||
	    store_snapshot_id_decode(m->snapshot.data, m->snapshot.len, &id) != STORE_OK ||
	    id.index != m->snapshot.metadata.index || id.term != m->snapshot.metadata.term)
		return SNAPXFER_BAD;
	o = sender_find(s, m->to);
	if (o != NULL) {
		sender_close(o);
		s->st.cancelled++;
	}
	for (unsigned i = 0; o == NULL && i < s->cfg.max_concurrent; i++)
		if (!s->outs[i].active)
			o = &s->outs[i];
	if (o == NULL)
		return SNAPXFER_BUSY;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return SNAPXFER_IO;
	if (fstat(fd, &st) != 0 || st.st_size <= 0) {
		close(fd);
		return SNAPXFER_IO;
	}
	memset(o, 0, sizeof(*o));
	o->active = true;
	o->to = m->to;
	o->term = m->term;
	o->commit = m->commit;
	o->meta = m->snapshot.metadata;
	o->id = id;
	o->fd = fd;
	o->size = (uint64_t)st.st_size;
	s->st.started++;
	sender_note_peaks(s);
	sender_pump(s);
	return SNAPXFER_OK;
}

/* Goes back to the acknowledged offset; when everything is acknowledged but DONE has not come,
 * to the last chunk, whose arrival makes the receiver answer again. */
static void sender_rewind(snapxfer_sender *s, snapxfer_out *o)
{
	o->next = o->acked;
	if (o->acked >= o->size)
		o->next = o->size - (o->size < s->cfg.chunk_size ? o->size : s->cfg.chunk_size);
	o->rewound = true;
	s->st.rewinds++;
	if (o->next == 0)
		s->st.rewinds_to_zero++;
	if (o->next > s->st.max_rewind_offset)
		s->st.max_rewind_offset = o->next;
}

void snapxfer_sender_on_ack(snapxfer_sender *s, const snapxfer_ack *a)
{
	snapxfer_out *o;

	if (s == NULL || a == NULL || a->to != s->cfg.self)
		return;
	o = sender_find(s, a->from);
	if (o == NULL || !snapxfer_id_equal(&o->id, &a->id))
		return;
	if (a->status == SNAPXFER_ACK_DONE || a->status == SNAPXFER_ACK_REJECT) {
		sender_finish(s, o, a->status == SNAPXFER_ACK_DONE);
		sender_pump(s);
		return;
	}
	if (a->offset > o->size)
		return;
	if (a->offset > o->acked) {
		o->acked = a->offset;
		if (o->next < o->acked)
			o->next = o->acked;
		o->idle = 0;
		o->timeouts = 0;
		o->rewound = false;
	} else if (a->offset == o->acked && a->trigger >= o->acked && o->next > o->acked &&
	           !o->rewound) {
		sender_rewind(s, o);
	}
	sender_pump(s);
}

/*
 * Timeouts a transfer waits for DONE once every byte is acknowledged: max_timeouts for each
 * window's worth of the file, plus max_timeouts. Silence then is no sign of a dead receiver:
 * it is installing, one transaction whose length grows with the file, during which its thread
 * answers nothing (F2 of the review: a fixed limit made large installs fail and the leader
 * compact past them). The resent last chunk asks a restarted receiver to answer again.
 */
static uint64_t sender_patience(const snapxfer_sender *s, const snapxfer_out *o)
{
	uint64_t span = (uint64_t)s->cfg.window * s->cfg.chunk_size;

	return (uint64_t)s->cfg.max_timeouts * (1 + (o->size + span - 1) / span);
}

void snapxfer_sender_tick(snapxfer_sender *s)
{
	if (s == NULL)
		return;
	if (s->cfg.bytes_per_tick > 0)
		s->tokens = s->cap - s->tokens < s->cfg.bytes_per_tick
		                ? s->cap
		                : s->tokens + s->cfg.bytes_per_tick;
	for (unsigned i = 0; i < s->cfg.max_concurrent; i++) {
		snapxfer_out *o = &s->outs[i];

		if (!o->active)
			continue;
		if (o->next == o->acked && o->acked < o->size) {
			o->idle = 0; /* nothing out: waiting for the bucket, not for the receiver */
			continue;
		}
		if (++o->idle < s->cfg.timeout_ticks)
			continue;
		o->idle = 0;
		if (o->acked >= o->size) {
			if (++o->waits >= sender_patience(s, o))
				sender_finish(s, o, false);
			else
				sender_rewind(s, o);
			continue;
		}
		if (++o->timeouts >= s->cfg.max_timeouts) {
			sender_finish(s, o, false);
			continue;
		}
		sender_rewind(s, o);
	}
	sender_pump(s);
}

void snapxfer_sender_cancel_stale(snapxfer_sender *s, bool leader, uint64_t term)
{
	if (s == NULL)
		return;
	for (unsigned i = 0; i < s->cfg.max_concurrent; i++) {
		snapxfer_out *o = &s->outs[i];

		if (o->active && (!leader || o->term != term)) {
			sender_close(o);
			s->st.cancelled++;
		}
	}
}

unsigned snapxfer_sender_active(const snapxfer_sender *s)
{
	unsigned n = 0;

	for (unsigned i = 0; s != NULL && i < s->cfg.max_concurrent; i++)
		n += s->outs[i].active;
	return n;
}

size_t snapxfer_sender_ids(const snapxfer_sender *s, store_snapshot_id *ids, size_t cap)
{
	size_t n = 0;

	for (unsigned i = 0; s != NULL && i < s->cfg.max_concurrent && n < cap; i++)
		if (s->outs[i].active)
			ids[n++] = s->outs[i].id;
	return n;
}

uint64_t snapxfer_sender_min_index(const snapxfer_sender *s)
{
	uint64_t min = UINT64_MAX;

	for (unsigned i = 0; s != NULL && i < s->cfg.max_concurrent; i++)
		if (s->outs[i].active && s->outs[i].meta.index < min)
			min = s->outs[i].meta.index;
	return min;
}

bool snapxfer_sender_has(const snapxfer_sender *s, uint64_t to, uint64_t *acked)
{
	for (unsigned i = 0; s != NULL && i < s->cfg.max_concurrent; i++) {
		if (s->outs[i].active && s->outs[i].to == to) {
			if (acked != NULL)
				*acked = s->outs[i].acked;
			return true;
		}
	}
	return false;
}

void snapxfer_sender_stats_get(const snapxfer_sender *s, snapxfer_sender_stats *out)
{
	if (out == NULL)
		return;
	memset(out, 0, sizeof(*out));
	if (s != NULL)
		*out = s->st;
}

/* ------------------------------------------------------------------------------------------ */
/* Receiver                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* The transfer being received: the metadata of its SNAPSHOT message and the file's size. */
typedef struct snapxfer_in {
	uint64_t from;
	uint64_t term;
	uint64_t commit;
	raft_snapshot_metadata meta;
	store_snapshot_id id;
	uint64_t size;
} snapxfer_in;

/*
 * Invariants: has_cur when a transfer is being received; then staged is its staging's durable
 * contiguous length (0 when no_stage), and cur.term/commit/from are those of the newest-term
 * chunk of it seen (a re-elected leader resends the same snapshot id in a higher term).
 * pending implies has_cur: its message was handed out and resolve is awaited; nothing is staged
 * meanwhile. has_done names the last transfer resolved with DONE, so a late chunk of it is
 * answered DONE again (its first DONE may have been lost) while that is still true: it was
 * installed (done_installed) or its index is at or below the commit index.
 */
struct snapxfer_receiver {
	snapxfer_receiver_config cfg;
	bool has_cur;
	snapxfer_in cur;
	uint64_t staged;
	uint64_t last_seen; /* tick of cur's last chunk */
	bool pending;
	bool no_stage; /* cur was at or below the commit index: nothing fetched */
	bool has_done;
	bool done_installed;
	snapxfer_in done;
	snapxfer_receiver_stats st;
};

snapxfer_receiver *snapxfer_receiver_new(const snapxfer_receiver_config *cfg)
{
	snapxfer_receiver *r;

	if (cfg == NULL || cfg->store == NULL || cfg->stale_ticks == 0 || cfg->send_ack == NULL)
		return NULL;
	r = calloc(1, sizeof(*r));
	if (r != NULL)
		r->cfg = *cfg;
	return r;
}

void snapxfer_receiver_free(snapxfer_receiver *r)
{
	free(r);
}

static void receiver_ack(snapxfer_receiver *r, const snapxfer_in *t, uint64_t offset,
                         uint64_t trigger, int status)
{
	snapxfer_ack a = {.from = r->cfg.self,
	                  .to = t->from,
	                  .id = t->id,
	                  .offset = offset,
	                  .trigger = trigger,
	                  .status = status};

	r->cfg.send_ack(r->cfg.ctx, &a);
}

/* Whether c is well formed and addressed to this receiver. */
static bool receiver_chunk_ok(const snapxfer_receiver *r, const snapxfer_chunk *c)
{
	const raft_conf_state *cs = &c->meta.conf_state;

	if (cs->n_voters == 0 || cs->n_voters > RAFT_MAX_VOTERS)
		return false;
	for (size_t i = 0; i < cs->n_voters; i++)
		if (cs->voters[i] == 0 || (i > 0 && cs->voters[i] <= cs->voters[i - 1]))
			return false; /* raft_step refuses it (raft.c, raft_message_is_sane) */
	return c->to == r->cfg.self && c->from != 0 && c->from != r->cfg.self &&
	       c->id.node_id != 0 && c->id.index == c->meta.index && c->id.term == c->meta.term &&
	       c->meta.index != 0 && c->meta.term <= c->term && c->size > 0 &&
	       c->len <= SNAPXFER_MAX_CHUNK && c->offset <= c->size &&
	       c->len <= c->size - c->offset && c->last == (c->offset + c->len == c->size) &&
	       (c->len > 0 || c->last);
}

static snapxfer_in receiver_in_of(const snapxfer_chunk *c)
{
	snapxfer_in t = {.from = c->from,
	                 .term = c->term,
	                 .commit = c->commit,
	                 .meta = c->meta,
	                 .id = c->id,
	                 .size = c->size};
	return t;
}

/* Whether c's snapshot supersedes the current one (ids differ). A higher term wins (a newer
 * leader); within a term the higher index, or another id of the same index (a restarted
 * sender's new nonce). */
static bool receiver_newer(const snapxfer_receiver *r, const snapxfer_chunk *c)
{
	return c->term > r->cur.term ||
	       (c->term == r->cur.term && c->meta.index >= r->cur.meta.index);
}

/* The SNAPSHOT message of t, for the caller to step. */
static int receiver_message(const snapxfer_receiver *r, const snapxfer_in *t, raft_message *out)
{
	unsigned char *data = malloc(STORE_SNAPSHOT_ID_SIZE);

	memset(out, 0, sizeof(*out));
	if (data == NULL)
		return STORE_ERR_NOMEM;
	store_snapshot_id_encode(&t->id, data);
	out->type = RAFT_MSG_SNAPSHOT;
	out->to = r->cfg.self;
	out->from = t->from;
	out->term = t->term;
	out->commit = t->commit;
	out->snapshot.metadata = t->meta;
	out->snapshot.data = data;
	out->snapshot.len = STORE_SNAPSHOT_ID_SIZE;
	return STORE_OK;
}

/* Adopts c's snapshot as the current transfer: nothing to fetch if raft would ignore it,
 * else begins (or resumes, after a restart) its staging. */
static int receiver_adopt(snapxfer_receiver *r, const snapxfer_chunk *c, uint64_t commit)
{
	int rv;

	if (r->has_cur)
		r->st.superseded++;
	r->has_cur = false;
	if (c->meta.index <= commit) {
		r->cur = receiver_in_of(c);
		r->has_cur = true;
		r->no_stage = true;
		r->staged = 0;
		return STORE_OK;
	}
	rv = store_staging_begin(r->cfg.store, &c->id);
	if (rv != STORE_OK)
		return rv;
	r->cur = receiver_in_of(c);
	r->has_cur = true;
	r->no_stage = false;
	r->staged = store_staging_offset(r->cfg.store, &c->id);
	if (r->staged > r->cur.size)
		r->staged = r->cur.size; /* finish will find it corrupt */
	return STORE_OK;
}

/* Stages c if it is the next contiguous piece. Returns a store error that fail-stopped. */
static int receiver_stage(snapxfer_receiver *r, const snapxfer_chunk *c)
{
	int rv;

	if (c->offset != r->staged || c->len == 0) {
		r->st.chunks_dropped++;
		return STORE_OK;
	}
	rv = store_staging_write(r->cfg.store, &c->id, c->offset, c->data, c->len);
	if (rv == STORE_OK) {
		r->staged += c->len;
		r->st.bytes_received += c->len;
		return STORE_OK;
	}
	if (store_failed(r->cfg.store) != STORE_OK)
		return rv;
	r->has_cur = false; /* the staging went away: the next chunk begins it again */
	return STORE_OK;
}

/* Whether the finished staging's header says what the chunks' metadata says: raft installs the
 * metadata it is stepped with, the store the file's header (review F5). */
static bool receiver_meta_matches(snapxfer_receiver *r)
{
	raft_snapshot_metadata m;

	if (store_staging_meta(r->cfg.store, &r->cur.id, &m) != STORE_OK)
		return false;
	return m.index == r->cur.meta.index && m.term == r->cur.meta.term &&
	       snapxfer_conf_equal(&m.conf_state, &r->cur.meta.conf_state);
}

/* All bytes are staged: verifies the file. COMPLETE, MORE (rejected), or a store failure. */
static int receiver_complete(snapxfer_receiver *r, uint64_t trigger, raft_message *out)
{
	int rv = store_staging_finish(r->cfg.store, &r->cur.id);

	if (rv == STORE_OK && !receiver_meta_matches(r))
		rv = STORE_ERR_CORRUPT;
	if (rv == STORE_ERR_CORRUPT) {
		r->st.corrupt++;
		store_staging_discard(r->cfg.store, &r->cur.id);
		receiver_ack(r, &r->cur, 0, trigger, SNAPXFER_ACK_REJECT);
		r->has_cur = false;
		return SNAPXFER_RECV_MORE;
	}
	if (rv != STORE_OK) {
		if (store_failed(r->cfg.store) != STORE_OK)
			return rv;
		receiver_ack(r, &r->cur, r->staged, trigger, SNAPXFER_ACK_PROGRESS);
		return SNAPXFER_RECV_MORE;
	}
	rv = receiver_message(r, &r->cur, out);
	if (rv != STORE_OK)
		return rv;
	/* Everything is acknowledged before the install (which answers nothing until it ends),
	 * so the sender knows it waits for DONE only (sender_patience). */
	receiver_ack(r, &r->cur, r->staged, trigger, SNAPXFER_ACK_PROGRESS);
	r->pending = true;
	return SNAPXFER_RECV_COMPLETE;
}

int snapxfer_receiver_on_chunk(snapxfer_receiver *r, const snapxfer_chunk *c, uint64_t now,
                               uint64_t commit, raft_message *out)
{
	int rv;

	if (r == NULL || c == NULL || out == NULL)
		return STORE_ERR_INVALID;
	if (!receiver_chunk_ok(r, c)) {
		r->st.chunks_dropped++;
		return SNAPXFER_RECV_MORE;
	}
	if (!snapxfer_chunk_intact(c)) {
		/* Nothing in it can be trusted; a chunk of the current transfer (by its id, which
		 * may itself be damaged: the ack then names a transfer the sender does not run)
		 * gets the staged length back, for the sender's fast retransmit. */
		r->st.corrupt++;
		if (r->has_cur && !r->pending && !r->no_stage &&
		    snapxfer_id_equal(&r->cur.id, &c->id))
			receiver_ack(r, &r->cur, r->staged, c->offset, SNAPXFER_ACK_PROGRESS);
		return SNAPXFER_RECV_MORE;
	}
	if (r->has_done && snapxfer_id_equal(&r->done.id, &c->id)) {
		if (r->done_installed || r->done.meta.index <= commit) {
			snapxfer_in t = r->done;

			t.from = c->from; /* the sender asking now (a re-elected or new leader) */
			receiver_ack(r, &t, t.size, c->offset, SNAPXFER_ACK_DONE);
			return SNAPXFER_RECV_MORE;
		}
		r->has_done = false; /* ignored then, but needed now: fetch it again */
	}
	if (r->has_cur && snapxfer_id_equal(&r->cur.id, &c->id) && c->term > r->cur.term) {
		/* The same snapshot from a leader of a later term (re-elected; storage handed it
		 * the same file): keep the staging, step it with the new term (review F1). */
		r->cur.term = c->term;
		r->cur.commit = c->commit;
		r->cur.from = c->from;
	}
	if (!r->has_cur || !snapxfer_id_equal(&r->cur.id, &c->id)) {
		if (r->has_cur && r->pending) {
			r->st.chunks_dropped++; /* resolved within this pass; the sender resends */
			return SNAPXFER_RECV_MORE;
		}
		if (r->has_cur && !receiver_newer(r, c) &&
		    now - r->last_seen < r->cfg.stale_ticks) {
			snapxfer_in t = receiver_in_of(c);

			r->st.chunks_dropped++;
			receiver_ack(r, &t, 0, c->offset, SNAPXFER_ACK_REJECT);
			return SNAPXFER_RECV_MORE;
		}
		rv = receiver_adopt(r, c, commit);
		if (rv != STORE_OK)
			return store_failed(r->cfg.store) != STORE_OK ? rv : SNAPXFER_RECV_MORE;
	}
	r->last_seen = now;
	if (r->pending) {
		receiver_ack(r, &r->cur, r->staged, c->offset, SNAPXFER_ACK_PROGRESS);
		return SNAPXFER_RECV_MORE;
	}
	if (r->no_stage) {
		rv = receiver_message(r, &r->cur, out);
		if (rv != STORE_OK)
			return rv;
		r->pending = true;
		return SNAPXFER_RECV_COMPLETE;
	}
	rv = receiver_stage(r, c);
	if (rv != STORE_OK)
		return rv;
	if (!r->has_cur)
		return SNAPXFER_RECV_MORE;
	if (r->staged >= r->cur.size)
		return receiver_complete(r, c->offset, out);
	receiver_ack(r, &r->cur, r->staged, c->offset, SNAPXFER_ACK_PROGRESS);
	return SNAPXFER_RECV_MORE;
}

bool snapxfer_receiver_pending(const snapxfer_receiver *r, store_snapshot_id *id)
{
	if (r == NULL || !r->pending)
		return false;
	if (id != NULL)
		*id = r->cur.id;
	return true;
}

void snapxfer_receiver_resolve(snapxfer_receiver *r, bool installed)
{
	if (r == NULL || !r->pending)
		return;
	if (installed) {
		r->st.installed++;
	} else {
		r->st.ignored++;
		if (!r->no_stage)
			store_staging_discard(r->cfg.store, &r->cur.id);
	}
	receiver_ack(r, &r->cur, r->cur.size, r->cur.size, SNAPXFER_ACK_DONE);
	r->done = r->cur;
	r->has_done = true;
	r->done_installed = installed;
	r->has_cur = false;
	r->pending = false;
}

void snapxfer_receiver_reject(snapxfer_receiver *r)
{
	if (r == NULL || !r->pending)
		return;
	r->st.ignored++;
	if (!r->no_stage)
		store_staging_discard(r->cfg.store, &r->cur.id);
	receiver_ack(r, &r->cur, 0, r->cur.size, SNAPXFER_ACK_REJECT);
	r->has_cur = false;
	r->pending = false;
}

void snapxfer_receiver_abort(snapxfer_receiver *r)
{
	if (r == NULL || !r->pending)
		return;
	if (!r->no_stage)
		store_staging_discard(r->cfg.store, &r->cur.id);
	r->has_cur = false;
	r->pending = false;
}

void snapxfer_receiver_stats_get(const snapxfer_receiver *r, snapxfer_receiver_stats *out)
{
	if (out == NULL)
		return;
	memset(out, 0, sizeof(*out));
	if (r != NULL)
		*out = r->st;
}
