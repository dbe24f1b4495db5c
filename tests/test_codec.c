/* test_codec.c - CUnit suite "codec": message clone/free and the wire encoder and decoder. */
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"
#include "suites.h"

/* Layout facts of wire format version 1, restated here so the tests check them. */
#define WIRE_MAGIC      0x52
#define WIRE_VERSION    1
#define WIRE_HEADER     85 /* bytes up to and including n_voters */
#define WIRE_ENTRY_MIN  25 /* type + term + index + length */
#define WIRE_OFF_TYPE   2
#define WIRE_OFF_REJECT 3
#define WIRE_OFF_VOTERS 84
#define WIRE_EMPTY_SIZE (WIRE_HEADER + 8 + 8)

/* ---- helpers ---- */

/* splitmix64: a small deterministic PRNG so failures can be replayed from the printed seed. */
static uint64_t codec_rand(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t codec_seed(void)
{
	const char *env = getenv("RAFT_TEST_SEED");

	return env != NULL ? strtoull(env, NULL, 0) : UINT64_C(20240607);
}

/* Returns a malloc'd buffer of len bytes filled from seed; the caller frees it. */
static void *codec_bytes(size_t len, uint8_t seed)
{
	uint8_t *p = malloc(len);

	if (p == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7);
	return p;
}

/* Fills *m (owned by the caller afterwards) with every field set to a distinct value, three
 * entries (one of them empty, one a conf change) and a snapshot with voters and data. */
static void codec_full_message(raft_message *m, int type)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
	m->to = 2;
	m->from = 3;
	m->term = 0x0102030405060708u;
	m->log_term = 41;
	m->index = 42;
	m->commit = 43;
	m->reject = true;
	m->reject_hint = 44;
	m->context = RAFT_CONTEXT_TRANSFER;
	m->snapshot.metadata.index = 100;
	m->snapshot.metadata.term = 7;
	m->snapshot.metadata.conf_state.n_voters = 3;
	m->snapshot.metadata.conf_state.voters[0] = 1;
	m->snapshot.metadata.conf_state.voters[1] = 2;
	m->snapshot.metadata.conf_state.voters[2] = UINT64_MAX;
	m->snapshot.len = 33;
	m->snapshot.data = codec_bytes(33, 9);
	m->n_entries = 3;
	m->entries = calloc(3, sizeof(raft_entry));
	CU_ASSERT_FATAL(m->entries != NULL && m->snapshot.data != NULL);
	for (size_t i = 0; i < 3; i++) {
		m->entries[i].term = 6 + i;
		m->entries[i].index = 43 + i;
	}
	m->entries[0].len = 5;
	m->entries[0].data = codec_bytes(5, 1);
	m->entries[2].type = RAFT_ENTRY_CONF_CHANGE;
	m->entries[2].len = 300;
	m->entries[2].data = codec_bytes(300, 2);
	CU_ASSERT_FATAL(m->entries[0].data != NULL && m->entries[2].data != NULL);
}

/* Fills *m with random fields, entries and snapshot drawn from *state; the caller owns it. */
static void codec_random_message(raft_message *m, uint64_t *state)
{
	raft_conf_state *cs = &m->snapshot.metadata.conf_state;
	uint64_t id = 0;

	memset(m, 0, sizeof(*m));
	m->type = (int)(codec_rand(state) % RAFT_MSG_TYPE_COUNT);
	m->to = codec_rand(state) % 8;
	m->from = codec_rand(state) % 8;
	m->term = codec_rand(state);
	m->log_term = codec_rand(state) % 100;
	m->index = codec_rand(state) % 1000;
	m->commit = codec_rand(state);
	m->reject = codec_rand(state) & 1;
	m->reject_hint = codec_rand(state) % 1000;
	m->context = codec_rand(state);
	m->snapshot.metadata.index = codec_rand(state) % 1000;
	m->snapshot.metadata.term = codec_rand(state) % 10;
	cs->n_voters = (size_t)(codec_rand(state) % (RAFT_MAX_VOTERS + 1));
	for (size_t i = 0; i < cs->n_voters; i++) {
		id += 1 + codec_rand(state) % 3;
		cs->voters[i] = id;
	}
	if (codec_rand(state) & 1) {
		m->snapshot.len = (size_t)(codec_rand(state) % 20);
		m->snapshot.data = m->snapshot.len ? codec_bytes(m->snapshot.len, 3) : NULL;
	}
	m->n_entries = (size_t)(codec_rand(state) % 5);
	m->entries = m->n_entries ? calloc(m->n_entries, sizeof(raft_entry)) : NULL;
	for (size_t i = 0; i < m->n_entries; i++) {
		raft_entry *e = &m->entries[i];

		e->type = (int)(codec_rand(state) & 1);
		e->term = codec_rand(state) % 10;
		e->index = m->index + 1 + i;
		e->len = (size_t)(codec_rand(state) % 12);
		e->data = e->len ? codec_bytes(e->len, (uint8_t)i) : NULL;
	}
}

static bool codec_entry_equal(const raft_entry *a, const raft_entry *b)
{
	if (a->type != b->type || a->term != b->term || a->index != b->index || a->len != b->len)
		return false;
	if (a->len == 0)
		return a->data == NULL && b->data == NULL;
	return memcmp(a->data, b->data, a->len) == 0;
}

static bool codec_snapshot_equal(const raft_snapshot *a, const raft_snapshot *b)
{
	const raft_conf_state *ca = &a->metadata.conf_state, *cb = &b->metadata.conf_state;

	if (a->metadata.index != b->metadata.index || a->metadata.term != b->metadata.term ||
	    ca->n_voters != cb->n_voters || a->len != b->len)
		return false;
	for (size_t i = 0; i < ca->n_voters; i++) {
		if (ca->voters[i] != cb->voters[i])
			return false;
	}
	if (a->len == 0)
		return a->data == NULL && b->data == NULL;
	return memcmp(a->data, b->data, a->len) == 0;
}

/* Deep, field-by-field equality; an empty payload must be NULL on both sides. */
static bool codec_message_equal(const raft_message *a, const raft_message *b)
{
	if (a->type != b->type || a->to != b->to || a->from != b->from || a->term != b->term ||
	    a->log_term != b->log_term || a->index != b->index || a->commit != b->commit ||
	    a->reject != b->reject || a->reject_hint != b->reject_hint ||
	    a->context != b->context || a->n_entries != b->n_entries)
		return false;
	if (!codec_snapshot_equal(&a->snapshot, &b->snapshot))
		return false;
	if (a->n_entries == 0)
		return a->entries == NULL && b->entries == NULL;
	for (size_t i = 0; i < a->n_entries; i++) {
		if (!codec_entry_equal(&a->entries[i], &b->entries[i]))
			return false;
	}
	return true;
}

static bool codec_message_is_zero(const raft_message *m)
{
	raft_message zero;

	memset(&zero, 0, sizeof(zero));
	return memcmp(m, &zero, sizeof(zero)) == 0;
}

/* A raft_message filled with garbage, to check that failing calls really zero it. */
static void codec_poison(raft_message *m)
{
	memset(m, 0xA5, sizeof(*m));
}

/* Decodes len bytes and reports whether that failed with RAFT_ERR_CORRUPT and a zeroed m. */
static bool codec_rejects(const void *buf, size_t len)
{
	raft_message m;
	int rv;

	codec_poison(&m);
	rv = raft_message_decode(buf, len, &m);
	if (rv == RAFT_OK)
		raft_message_free(&m);
	return rv == RAFT_ERR_CORRUPT && codec_message_is_zero(&m);
}

/* A hand-written encoder of the wire format, used to build hostile inputs byte by byte. */
typedef struct codec_builder {
	uint8_t buf[1024];
	size_t len;
} codec_builder;

static void codec_put8(codec_builder *b, uint8_t v)
{
	CU_ASSERT_FATAL(b->len < sizeof(b->buf));
	b->buf[b->len++] = v;
}

static void codec_put64(codec_builder *b, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		codec_put8(b, (uint8_t)(v >> (8 * i)));
}

/* Everything up to the entry count: a REQUEST_VOTE with the given voters and no snapshot data. */
static void codec_build_head(codec_builder *b, const uint64_t *voters, uint8_t n_voters)
{
	b->len = 0;
	codec_put8(b, WIRE_MAGIC);
	codec_put8(b, WIRE_VERSION);
	codec_put8(b, RAFT_MSG_REQUEST_VOTE);
	codec_put8(b, 0);
	for (int i = 0; i < 10; i++)
		codec_put64(b, (uint64_t)i + 1);
	codec_put8(b, n_voters);
	for (uint8_t i = 0; i < n_voters; i++)
		codec_put64(b, voters[i]);
	codec_put64(b, 0);
}

/* ---- tests ---- */

static void test_type_names(void)
{
	static const char *const expected[RAFT_MSG_TYPE_COUNT] = {
	    "HUP",
	    "BEAT",
	    "PROPOSE",
	    "APPEND",
	    "APPEND_RESPONSE",
	    "REQUEST_VOTE",
	    "REQUEST_VOTE_RESPONSE",
	    "SNAPSHOT",
	    "HEARTBEAT",
	    "HEARTBEAT_RESPONSE",
	    "TRANSFER_LEADER",
	    "TIMEOUT_NOW",
	    "PRE_VOTE",
	    "PRE_VOTE_RESPONSE",
	    "READ_INDEX",
	    "READ_INDEX_RESPONSE",
	};

	for (int t = 0; t < RAFT_MSG_TYPE_COUNT; t++)
		CU_ASSERT_STRING_EQUAL(raft_message_type_name(t), expected[t]);
	CU_ASSERT_STRING_EQUAL(raft_message_type_name(-1), "UNKNOWN");
	CU_ASSERT_STRING_EQUAL(raft_message_type_name(RAFT_MSG_TYPE_COUNT), "UNKNOWN");
	CU_ASSERT_STRING_EQUAL(raft_message_type_name(1000), "UNKNOWN");
}

static void test_roundtrip_every_type(void)
{
	for (int t = 0; t < RAFT_MSG_TYPE_COUNT; t++) {
		raft_message m, d;
		void *buf = NULL;
		size_t len = 0;

		codec_full_message(&m, t);
		CU_ASSERT_EQUAL_FATAL(raft_message_encode(&m, &buf, &len), RAFT_OK);
		CU_ASSERT_EQUAL(len, raft_message_encoded_size(&m));
		CU_ASSERT_EQUAL(len, WIRE_EMPTY_SIZE + 3 * 8 + 33 + 3 * WIRE_ENTRY_MIN + 5 + 300);
		CU_ASSERT_EQUAL(((uint8_t *)buf)[WIRE_OFF_TYPE], t);
		codec_poison(&d);
		CU_ASSERT_EQUAL_FATAL(raft_message_decode(buf, len, &d), RAFT_OK);
		CU_ASSERT(codec_message_equal(&m, &d));
		CU_ASSERT_PTR_NOT_EQUAL(d.entries, m.entries);
		CU_ASSERT_PTR_NOT_EQUAL(d.snapshot.data, m.snapshot.data);
		free(buf);
		raft_message_free(&d);
		raft_message_free(&m);
		CU_ASSERT(codec_message_is_zero(&m));
	}
}

static void test_roundtrip_empty(void)
{
	raft_message m, d;
	void *buf = NULL;
	size_t len = 0;

	memset(&m, 0, sizeof(m));
	m.type = RAFT_MSG_HEARTBEAT;
	m.commit = 5;
	CU_ASSERT_EQUAL_FATAL(raft_message_encode(&m, &buf, &len), RAFT_OK);
	CU_ASSERT_EQUAL(len, WIRE_EMPTY_SIZE);
	CU_ASSERT_EQUAL(raft_message_encoded_size(&m), WIRE_EMPTY_SIZE);
	CU_ASSERT_EQUAL_FATAL(raft_message_decode(buf, len, &d), RAFT_OK);
	CU_ASSERT(codec_message_equal(&m, &d));
	CU_ASSERT_PTR_NULL(d.entries);
	CU_ASSERT_PTR_NULL(d.snapshot.data);
	raft_message_free(&d);
	free(buf);
}

/* Pins the exact byte layout: a change to the format must be a deliberate version bump. */
static void test_golden_bytes(void)
{
	uint8_t data[2] = {0xAA, 0xBB};
	raft_entry e = {
	    .type = RAFT_ENTRY_CONF_CHANGE, .term = 2, .index = 3, .data = data, .len = 2};
	raft_message m;
	codec_builder want;
	void *buf = NULL;
	size_t len = 0;

	memset(&m, 0, sizeof(m));
	m.type = RAFT_MSG_APPEND;
	m.reject = true;
	m.to = 0x0102030405060708u;
	m.from = 2;
	m.term = 3;
	m.log_term = 4;
	m.index = 5;
	m.commit = 6;
	m.reject_hint = 7;
	m.context = 8;
	m.snapshot.metadata.index = 9;
	m.snapshot.metadata.term = 10;
	m.snapshot.metadata.conf_state.n_voters = 1;
	m.snapshot.metadata.conf_state.voters[0] = 11;
	m.entries = &e;
	m.n_entries = 1;

	want.len = 0;
	codec_put8(&want, WIRE_MAGIC);
	codec_put8(&want, WIRE_VERSION);
	codec_put8(&want, RAFT_MSG_APPEND);
	codec_put8(&want, 1);
	for (int i = 0; i < 8; i++)
		want.buf[want.len++] = (uint8_t)(8 - i);
	for (uint64_t v = 2; v <= 10; v++)
		codec_put64(&want, v);
	codec_put8(&want, 1);
	codec_put64(&want, 11);
	codec_put64(&want, 0);
	codec_put64(&want, 1);
	codec_put8(&want, RAFT_ENTRY_CONF_CHANGE);
	codec_put64(&want, 2);
	codec_put64(&want, 3);
	codec_put64(&want, 2);
	codec_put8(&want, 0xAA);
	codec_put8(&want, 0xBB);

	CU_ASSERT_EQUAL_FATAL(raft_message_encode(&m, &buf, &len), RAFT_OK);
	CU_ASSERT_EQUAL(len, want.len);
	CU_ASSERT(len == want.len && memcmp(buf, want.buf, len) == 0);
	free(buf);
}

static void test_encode_rejects_invalid(void)
{
	raft_message m;
	void *buf = (void *)&m;
	size_t len = 99;

	CU_ASSERT_EQUAL(raft_message_encode(NULL, &buf, &len), RAFT_ERR_INVALID);
	CU_ASSERT_PTR_NULL(buf);
	CU_ASSERT_EQUAL(len, 0);

	codec_full_message(&m, RAFT_MSG_APPEND);
	CU_ASSERT_EQUAL(raft_message_encode(&m, NULL, &len), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_message_encode(&m, &buf, NULL), RAFT_ERR_INVALID);

	m.type = RAFT_MSG_TYPE_COUNT;
	CU_ASSERT_EQUAL(raft_message_encode(&m, &buf, &len), RAFT_ERR_INVALID);
	CU_ASSERT_PTR_NULL(buf);
	m.type = -1;
	CU_ASSERT_EQUAL(raft_message_encode(&m, &buf, &len), RAFT_ERR_INVALID);
	m.type = RAFT_MSG_APPEND;

	m.entries[1].type = 2;
	CU_ASSERT_EQUAL(raft_message_encode(&m, &buf, &len), RAFT_ERR_INVALID);
	m.entries[1].type = RAFT_ENTRY_NORMAL;
	m.entries[1].len = 4;
	CU_ASSERT_EQUAL(raft_message_encode(&m, &buf, &len), RAFT_ERR_INVALID);
	m.entries[1].len = 0;

	m.snapshot.metadata.conf_state.n_voters = RAFT_MAX_VOTERS + 1;
	CU_ASSERT_EQUAL(raft_message_encode(&m, &buf, &len), RAFT_ERR_INVALID);
	m.snapshot.metadata.conf_state.n_voters = 3;
	m.snapshot.metadata.conf_state.voters[1] = 1;
	CU_ASSERT_EQUAL(raft_message_encode(&m, &buf, &len), RAFT_ERR_INVALID);
	m.snapshot.metadata.conf_state.voters[1] = 2;
	m.snapshot.metadata.conf_state.voters[0] = 0;
	CU_ASSERT_EQUAL(raft_message_encode(&m, &buf, &len), RAFT_ERR_INVALID);
	m.snapshot.metadata.conf_state.voters[0] = 1;

	CU_ASSERT_EQUAL_FATAL(raft_message_encode(&m, &buf, &len), RAFT_OK);
	CU_ASSERT_PTR_NOT_NULL(buf);
	free(buf);
	raft_message_free(&m);
	CU_ASSERT_EQUAL(raft_message_encoded_size(NULL), 0);
}

static void test_decode_null_arguments(void)
{
	raft_message m;
	uint8_t byte = WIRE_MAGIC;

	CU_ASSERT_EQUAL(raft_message_decode(&byte, 1, NULL), RAFT_ERR_INVALID);
	codec_poison(&m);
	CU_ASSERT_EQUAL(raft_message_decode(NULL, 10, &m), RAFT_ERR_INVALID);
	CU_ASSERT(codec_message_is_zero(&m));
	CU_ASSERT(codec_rejects(&byte, 0));
}

static void test_clone_equal_and_independent(void)
{
	raft_message m, c;

	codec_full_message(&m, RAFT_MSG_SNAPSHOT);
	codec_poison(&c);
	CU_ASSERT_EQUAL_FATAL(raft_message_clone(&c, &m), RAFT_OK);
	CU_ASSERT(codec_message_equal(&m, &c));
	CU_ASSERT_PTR_NOT_EQUAL(c.entries, m.entries);
	CU_ASSERT_PTR_NOT_EQUAL(c.entries[0].data, m.entries[0].data);
	CU_ASSERT_PTR_NOT_EQUAL(c.snapshot.data, m.snapshot.data);
	CU_ASSERT_PTR_NULL(c.entries[1].data);

	((uint8_t *)m.entries[0].data)[0] ^= 0xFF;
	((uint8_t *)m.snapshot.data)[0] ^= 0xFF;
	m.entries[2].term = 999;
	CU_ASSERT(!codec_message_equal(&m, &c));
	raft_message_free(&m);

	/* The clone must survive the original's release untouched (ASan checks the reads). */
	codec_full_message(&m, RAFT_MSG_SNAPSHOT);
	CU_ASSERT(codec_message_equal(&m, &c));
	raft_message_free(&m);
	raft_message_free(&c);
	CU_ASSERT(codec_message_is_zero(&c));
}

static void test_clone_empty_and_invalid(void)
{
	raft_message m, c;

	memset(&m, 0, sizeof(m));
	m.type = RAFT_MSG_HEARTBEAT_RESPONSE;
	m.to = 1;
	CU_ASSERT_EQUAL_FATAL(raft_message_clone(&c, &m), RAFT_OK);
	CU_ASSERT(codec_message_equal(&m, &c));
	CU_ASSERT_PTR_NULL(c.entries);
	raft_message_free(&c);

	m.n_entries = 2;
	codec_poison(&c);
	CU_ASSERT_EQUAL(raft_message_clone(&c, &m), RAFT_ERR_INVALID);
	CU_ASSERT(codec_message_is_zero(&c));

	m.n_entries = 0;
	m.snapshot.len = 5;
	codec_poison(&c);
	CU_ASSERT_EQUAL(raft_message_clone(&c, &m), RAFT_ERR_INVALID);
	CU_ASSERT(codec_message_is_zero(&c));

	codec_poison(&c);
	CU_ASSERT_EQUAL(raft_message_clone(&c, NULL), RAFT_ERR_INVALID);
	CU_ASSERT(codec_message_is_zero(&c));
	CU_ASSERT_EQUAL(raft_message_clone(NULL, &m), RAFT_ERR_INVALID);
}

/* A clone that fails half-way (second entry inconsistent) frees what it copied and zeroes dst;
 * ASan's leak check fails the run otherwise. */
static void test_clone_failure_releases_partial_copy(void)
{
	raft_message m, c;

	codec_full_message(&m, RAFT_MSG_APPEND);
	free(m.entries[2].data);
	m.entries[2].data = NULL;
	codec_poison(&c);
	CU_ASSERT_EQUAL(raft_message_clone(&c, &m), RAFT_ERR_INVALID);
	CU_ASSERT(codec_message_is_zero(&c));
	raft_message_free(&m);
}

static void test_snapshot_copy_and_clear(void)
{
	raft_snapshot s, c;

	memset(&s, 0, sizeof(s));
	s.metadata.index = 5;
	s.metadata.term = 2;
	s.metadata.conf_state.n_voters = 2;
	s.metadata.conf_state.voters[0] = 1;
	s.metadata.conf_state.voters[1] = 3;
	s.len = 4;
	s.data = codec_bytes(4, 40);
	CU_ASSERT_FATAL(s.data != NULL);

	CU_ASSERT_EQUAL_FATAL(raft_snapshot_copy(&c, &s), RAFT_OK);
	CU_ASSERT(codec_snapshot_equal(&s, &c));
	CU_ASSERT_PTR_NOT_EQUAL(c.data, s.data);
	raft_snapshot_clear(&s);
	CU_ASSERT_PTR_NULL(s.data);
	CU_ASSERT_EQUAL(s.len, 0);
	CU_ASSERT_EQUAL(s.metadata.index, 0);
	CU_ASSERT_EQUAL(s.metadata.conf_state.n_voters, 0);
	CU_ASSERT_EQUAL(((uint8_t *)c.data)[3], (uint8_t)(40 + 21));
	raft_snapshot_clear(&c);

	memset(&s, 0, sizeof(s));
	s.metadata.index = 8;
	CU_ASSERT_EQUAL(raft_snapshot_copy(&c, &s), RAFT_OK);
	CU_ASSERT_EQUAL(c.metadata.index, 8);
	CU_ASSERT_PTR_NULL(c.data);

	s.len = 3;
	memset(&c, 0xA5, sizeof(c));
	CU_ASSERT_EQUAL(raft_snapshot_copy(&c, &s), RAFT_ERR_INVALID);
	CU_ASSERT_PTR_NULL(c.data);
	CU_ASSERT_EQUAL(c.metadata.index, 0);
	raft_snapshot_clear(NULL);
}

static void test_free_null_and_empty(void)
{
	raft_message m;
	raft_entry *e = calloc(2, sizeof(*e));

	raft_entries_free(NULL, 0);
	raft_entries_free(NULL, 5);
	CU_ASSERT_FATAL(e != NULL);
	e[1].data = malloc(3);
	e[1].len = 3;
	raft_entries_free(e, 2);
	raft_message_free(NULL);
	memset(&m, 0, sizeof(m));
	raft_message_free(&m);
	CU_ASSERT(codec_message_is_zero(&m));
}

static void test_every_truncation_rejected(void)
{
	raft_message m;
	void *buf = NULL;
	size_t len = 0;
	size_t failures = 0;

	codec_full_message(&m, RAFT_MSG_APPEND);
	CU_ASSERT_EQUAL_FATAL(raft_message_encode(&m, &buf, &len), RAFT_OK);
	for (size_t cut = 0; cut < len; cut++) {
		/* A copy of exactly cut bytes, so ASan flags any read past the end. */
		void *prefix = malloc(cut > 0 ? cut : 1);

		CU_ASSERT_FATAL(prefix != NULL);
		memcpy(prefix, buf, cut);
		if (!codec_rejects(prefix, cut)) {
			fprintf(stderr, "truncation to %zu of %zu bytes was accepted\n", cut, len);
			failures++;
		}
		free(prefix);
	}
	CU_ASSERT_EQUAL(failures, 0);
	free(buf);
	raft_message_free(&m);
}

static void test_trailing_bytes_rejected(void)
{
	raft_message m;
	uint8_t *buf = NULL;
	void *raw = NULL;
	size_t len = 0;

	codec_full_message(&m, RAFT_MSG_PROPOSE);
	CU_ASSERT_EQUAL_FATAL(raft_message_encode(&m, &raw, &len), RAFT_OK);
	buf = realloc(raw, len + 8);
	CU_ASSERT_FATAL(buf != NULL);
	memset(buf + len, 0, 8);
	CU_ASSERT(codec_rejects(buf, len + 1));
	CU_ASSERT(codec_rejects(buf, len + 8));
	buf[len] = 0x52;
	CU_ASSERT(codec_rejects(buf, len + 1));
	free(buf);
	raft_message_free(&m);
}

static void test_bad_header_rejected(void)
{
	raft_message m;
	uint8_t *buf = NULL;
	void *raw = NULL;
	size_t len = 0;

	memset(&m, 0, sizeof(m));
	m.type = RAFT_MSG_READ_INDEX_RESPONSE;
	CU_ASSERT_EQUAL_FATAL(raft_message_encode(&m, &raw, &len), RAFT_OK);
	buf = raw;
	CU_ASSERT_EQUAL(buf[0], WIRE_MAGIC);
	CU_ASSERT_EQUAL(buf[1], WIRE_VERSION);

	buf[0] = 0x53;
	CU_ASSERT(codec_rejects(buf, len));
	buf[0] = WIRE_MAGIC;
	buf[1] = 0;
	CU_ASSERT(codec_rejects(buf, len));
	buf[1] = 2;
	CU_ASSERT(codec_rejects(buf, len));
	buf[1] = WIRE_VERSION;

	buf[WIRE_OFF_TYPE] = RAFT_MSG_TYPE_COUNT;
	CU_ASSERT(codec_rejects(buf, len));
	buf[WIRE_OFF_TYPE] = 0xFF;
	CU_ASSERT(codec_rejects(buf, len));
	buf[WIRE_OFF_TYPE] = RAFT_MSG_READ_INDEX_RESPONSE;

	buf[WIRE_OFF_REJECT] = 2;
	CU_ASSERT(codec_rejects(buf, len));
	buf[WIRE_OFF_REJECT] = 0xFF;
	CU_ASSERT(codec_rejects(buf, len));
	buf[WIRE_OFF_REJECT] = 1;
	CU_ASSERT_EQUAL(raft_message_decode(buf, len, &m), RAFT_OK);
	CU_ASSERT(m.reject);
	raft_message_free(&m);
	free(buf);
}

static void test_bad_entry_type_rejected(void)
{
	codec_builder b;

	codec_build_head(&b, NULL, 0);
	codec_put64(&b, 1);
	codec_put8(&b, 2);
	codec_put64(&b, 1);
	codec_put64(&b, 1);
	codec_put64(&b, 0);
	CU_ASSERT(codec_rejects(b.buf, b.len));
	b.buf[b.len - WIRE_ENTRY_MIN] = RAFT_ENTRY_CONF_CHANGE;
	CU_ASSERT(!codec_rejects(b.buf, b.len));
	b.buf[b.len - WIRE_ENTRY_MIN] = 0xFF;
	CU_ASSERT(codec_rejects(b.buf, b.len));
}

static void test_bad_voters_rejected(void)
{
	static const uint64_t sorted[RAFT_MAX_VOTERS + 1] = {1,  2,  3,  4,  5,  6,  7,  8, 9,
	                                                     10, 11, 12, 13, 14, 15, 16, 17};
	static const uint64_t unsorted[3] = {1, 5, 3};
	static const uint64_t duplicate[3] = {1, 3, 3};
	static const uint64_t zero[2] = {0, 3};
	codec_builder b;
	raft_message m;

	codec_build_head(&b, sorted, RAFT_MAX_VOTERS);
	codec_put64(&b, 0);
	CU_ASSERT_EQUAL_FATAL(raft_message_decode(b.buf, b.len, &m), RAFT_OK);
	CU_ASSERT_EQUAL(m.snapshot.metadata.conf_state.n_voters, RAFT_MAX_VOTERS);
	CU_ASSERT_EQUAL(m.snapshot.metadata.conf_state.voters[RAFT_MAX_VOTERS - 1], 16);
	raft_message_free(&m);

	codec_build_head(&b, sorted, RAFT_MAX_VOTERS + 1);
	codec_put64(&b, 0);
	CU_ASSERT(codec_rejects(b.buf, b.len));

	/* A count of 255 with no ids behind it must not read past the end of the buffer. */
	codec_build_head(&b, NULL, 0);
	b.buf[WIRE_OFF_VOTERS] = 0xFF;
	CU_ASSERT(codec_rejects(b.buf, b.len));

	codec_build_head(&b, unsorted, 3);
	codec_put64(&b, 0);
	CU_ASSERT(codec_rejects(b.buf, b.len));
	codec_build_head(&b, duplicate, 3);
	codec_put64(&b, 0);
	CU_ASSERT(codec_rejects(b.buf, b.len));
	codec_build_head(&b, zero, 2);
	codec_put64(&b, 0);
	CU_ASSERT(codec_rejects(b.buf, b.len));
}

/*
 * Counts and lengths the input does not back with bytes. A decoder that allocated before
 * checking would either fail with RAFT_ERR_NOMEM (plain build) or abort on an impossible
 * allocation (ASan), so asserting RAFT_ERR_CORRUPT pins the check-before-allocate rule.
 */
static void test_oversized_counts_rejected(void)
{
	static const uint64_t huge[] = {UINT64_MAX, UINT64_C(1) << 62, UINT64_C(1) << 40,
	                                UINT64_C(1) << 32, 1000};
	codec_builder b;
	raft_message m;
	size_t n_huge = sizeof(huge) / sizeof(huge[0]);

	for (size_t i = 0; i < n_huge; i++) {
		/* the entry count */
		codec_build_head(&b, NULL, 0);
		codec_put64(&b, huge[i]);
		codec_put8(&b, 0);
		CU_ASSERT_EQUAL(raft_message_decode(b.buf, b.len, &m), RAFT_ERR_CORRUPT);
		CU_ASSERT(codec_message_is_zero(&m));

		/* the snapshot data length (the 8 bytes before the entry count) */
		codec_build_head(&b, NULL, 0);
		b.len -= 8;
		codec_put64(&b, huge[i]);
		codec_put64(&b, 0);
		CU_ASSERT_EQUAL(raft_message_decode(b.buf, b.len, &m), RAFT_ERR_CORRUPT);

		/* an entry's data length */
		codec_build_head(&b, NULL, 0);
		codec_put64(&b, 1);
		codec_put8(&b, 0);
		codec_put64(&b, 1);
		codec_put64(&b, 1);
		codec_put64(&b, huge[i]);
		codec_put8(&b, 7);
		CU_ASSERT_EQUAL(raft_message_decode(b.buf, b.len, &m), RAFT_ERR_CORRUPT);
		CU_ASSERT(codec_message_is_zero(&m));
	}

	/* a data length one more than what is left */
	codec_build_head(&b, NULL, 0);
	codec_put64(&b, 1);
	codec_put8(&b, 0);
	codec_put64(&b, 1);
	codec_put64(&b, 1);
	codec_put64(&b, 4);
	codec_put8(&b, 1);
	codec_put8(&b, 2);
	codec_put8(&b, 3);
	CU_ASSERT(codec_rejects(b.buf, b.len));
	codec_put8(&b, 4);
	CU_ASSERT_EQUAL_FATAL(raft_message_decode(b.buf, b.len, &m), RAFT_OK);
	CU_ASSERT_EQUAL(m.entries[0].len, 4);
	CU_ASSERT_EQUAL(((uint8_t *)m.entries[0].data)[3], 4);
	raft_message_free(&m);
}

/* The entry count is bounded by the bytes left: exactly enough empty entries decode, one more
 * claimed entry than the bytes can hold is rejected. */
static void test_entry_count_boundary(void)
{
	codec_builder b;
	raft_message m;
	const uint64_t n = 10;

	codec_build_head(&b, NULL, 0);
	codec_put64(&b, n);
	for (uint64_t i = 0; i < n; i++) {
		codec_put8(&b, 0);
		codec_put64(&b, 1);
		codec_put64(&b, i + 1);
		codec_put64(&b, 0);
	}
	CU_ASSERT_EQUAL_FATAL(raft_message_decode(b.buf, b.len, &m), RAFT_OK);
	CU_ASSERT_EQUAL(m.n_entries, n);
	CU_ASSERT_EQUAL(m.entries[9].index, 10);
	CU_ASSERT_PTR_NULL(m.entries[9].data);
	raft_message_free(&m);

	b.buf[WIRE_EMPTY_SIZE - 8] = (uint8_t)(n + 1);
	CU_ASSERT(codec_rejects(b.buf, b.len));
	b.buf[WIRE_EMPTY_SIZE - 8] = (uint8_t)(n - 1);
	CU_ASSERT(codec_rejects(b.buf, b.len));
}

/* Random messages round-trip; the re-encoding of the decoded message is byte-identical. */
static void test_random_roundtrip(void)
{
	uint64_t seed = codec_seed(), state = seed;
	size_t failures = 0;

	for (int iter = 0; iter < 2000; iter++) {
		raft_message m, d;
		void *buf = NULL, *again = NULL;
		size_t len = 0, len2 = 0;

		codec_random_message(&m, &state);
		if (raft_message_encode(&m, &buf, &len) != RAFT_OK ||
		    raft_message_decode(buf, len, &d) != RAFT_OK) {
			failures++;
		} else {
			if (!codec_message_equal(&m, &d) ||
			    raft_message_encode(&d, &again, &len2) != RAFT_OK || len2 != len ||
			    memcmp(buf, again, len) != 0)
				failures++;
			raft_message_free(&d);
		}
		if (failures > 0) {
			fprintf(stderr,
			        "codec random round-trip failed: RAFT_TEST_SEED=%" PRIu64
			        " iteration %d\n",
			        seed, iter);
			raft_message_free(&m);
			free(buf);
			free(again);
			break;
		}
		raft_message_free(&m);
		free(buf);
		free(again);
	}
	CU_ASSERT_EQUAL(failures, 0);
}

/* Random byte flips, cuts and extensions of valid encodings: decode must either fail cleanly or
 * produce a message that re-encodes to exactly the mutated bytes. */
static void test_random_mutations(void)
{
	uint64_t seed = codec_seed(), state = seed ^ UINT64_C(0xdeadbeef);
	size_t failures = 0, accepted = 0;

	for (int iter = 0; iter < 20000 && failures == 0; iter++) {
		raft_message m, d;
		void *enc = NULL, *again = NULL;
		uint8_t *buf;
		size_t len = 0, len2 = 0;
		int rv;

		codec_random_message(&m, &state);
		CU_ASSERT_EQUAL_FATAL(raft_message_encode(&m, &enc, &len), RAFT_OK);
		raft_message_free(&m);
		buf = realloc(enc, len + 16);
		CU_ASSERT_FATAL(buf != NULL);
		for (int k = 0, flips = 1 + (int)(codec_rand(&state) % 4); k < flips; k++)
			buf[codec_rand(&state) % len] ^= (uint8_t)(1 + codec_rand(&state) % 255);
		switch (codec_rand(&state) % 4) {
		case 0:
			len = (size_t)(codec_rand(&state) % (len + 1));
			break;
		case 1:
			memset(buf + len, (int)(codec_rand(&state) & 0xFF), 16);
			len += 1 + (size_t)(codec_rand(&state) % 16);
			break;
		default:
			break;
		}

		codec_poison(&d);
		rv = raft_message_decode(buf, len, &d);
		if (rv == RAFT_OK) {
			accepted++;
			if (raft_message_encode(&d, &again, &len2) != RAFT_OK || len2 != len ||
			    memcmp(again, buf, len) != 0)
				failures++;
			raft_message_free(&d);
			free(again);
		} else if (rv != RAFT_ERR_CORRUPT || !codec_message_is_zero(&d)) {
			failures++;
		}
		if (failures > 0)
			fprintf(stderr,
			        "codec mutation failed: RAFT_TEST_SEED=%" PRIu64
			        " iteration %d rv %d\n",
			        seed, iter, rv);
		free(buf);
	}
	CU_ASSERT_EQUAL(failures, 0);
	/* Flipping only field bytes keeps a message valid often enough for this to hold. */
	CU_ASSERT(accepted > 0);
}

void test_register_codec(void)
{
	CU_pSuite s = CU_add_suite("codec", NULL, NULL);

	if (s == NULL)
		return;
	CU_add_test(s, "type names", test_type_names);
	CU_add_test(s, "round-trip of every message type", test_roundtrip_every_type);
	CU_add_test(s, "round-trip of an empty message", test_roundtrip_empty);
	CU_add_test(s, "golden bytes of format version 1", test_golden_bytes);
	CU_add_test(s, "encode rejects invalid messages", test_encode_rejects_invalid);
	CU_add_test(s, "decode NULL arguments", test_decode_null_arguments);
	CU_add_test(s, "clone is equal and independent", test_clone_equal_and_independent);
	CU_add_test(s, "clone of empty and invalid messages", test_clone_empty_and_invalid);
	CU_add_test(s, "failed clone releases its partial copy",
	            test_clone_failure_releases_partial_copy);
	CU_add_test(s, "snapshot copy and clear", test_snapshot_copy_and_clear);
	CU_add_test(s, "free of NULL and empty", test_free_null_and_empty);
	CU_add_test(s, "every truncation is rejected", test_every_truncation_rejected);
	CU_add_test(s, "trailing bytes are rejected", test_trailing_bytes_rejected);
	CU_add_test(s, "bad magic, version, type and bool", test_bad_header_rejected);
	CU_add_test(s, "unknown entry type", test_bad_entry_type_rejected);
	CU_add_test(s, "bad voter lists", test_bad_voters_rejected);
	CU_add_test(s, "oversized counts and lengths", test_oversized_counts_rejected);
	CU_add_test(s, "entry count bounded by remaining bytes", test_entry_count_boundary);
	CU_add_test(s, "random messages round-trip", test_random_roundtrip);
	CU_add_test(s, "random mutations never crash", test_random_mutations);
}
