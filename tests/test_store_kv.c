/* test_store_kv.c - CUnit suite "store_kv": command encoding, the kv state machine, sessions. */
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "store/command.h"
#include "store/store.h"
#include "suites.h"

/* Layout facts of command format version 1, restated here so the tests check them. */
#define WIRE_HEADER      43 /* magic, version, op, 4 x u64, 2 x u32 */
#define WIRE_OFF_VERSION 1
#define WIRE_OFF_OP      2
#define WIRE_OFF_KEYLEN  35

#define MAX_RESULTS 4096

/* Sanitizers keep freed memory in quarantine, so RSS bounds hold in plain builds only. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KVT_SANITIZED 1
#else
#define KVT_SANITIZED 0
#endif

/* ---- helpers ---- */

/* splitmix64: a small deterministic PRNG so failures can be replayed from the printed seed. */
static uint64_t kvt_rand(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t kvt_seed(void)
{
	const char *env = getenv("RAFT_TEST_SEED");

	return env != NULL ? strtoull(env, NULL, 0) : UINT64_C(20240611);
}

/* A store in a fresh temporary directory. */
typedef struct kvt_db {
	char dir[64];
	char path[96];
	store_options opt;
	store *s;
} kvt_db;

static void kvt_reopen(kvt_db *d)
{
	char err[256] = "";

	store_close(d->s);
	d->s = NULL;
	CU_ASSERT_EQUAL_FATAL(store_open(d->path, &d->opt, &d->s, err, sizeof err), STORE_OK);
}

/* ttl and max_sessions 0 mean the defaults. */
static void kvt_open(kvt_db *d, uint64_t ttl, size_t max_sessions)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->dir, sizeof d->dir, "/tmp/raftkv-kv-XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(d->dir));
	snprintf(d->path, sizeof d->path, "%s/node-1.db", d->dir);
	store_options_init(&d->opt);
	d->opt.cluster_id = 7;
	d->opt.node_id = 1;
	d->opt.sync = STORE_SYNC_OFF;
	d->opt.session_ttl = ttl;
	d->opt.max_sessions = max_sessions;
	kvt_reopen(d);
}

/* Closes the store and removes its directory with everything the store left in it. */
static void kvt_close(kvt_db *d)
{
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal", ".tmp"};
	char p[128];

	store_close(d->s);
	d->s = NULL;
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		snprintf(p, sizeof p, "%s%s", d->path, suffixes[i]);
		unlink(p);
	}
	rmdir(d->dir);
}

/* Results collected by the apply callback, values copied. */
typedef struct kvt_results {
	store_result r[MAX_RESULTS];
	unsigned char *val[MAX_RESULTS];
	size_t n;
} kvt_results;

static void kvt_collect(void *ctx, const store_result *res)
{
	kvt_results *rs = ctx;

	CU_ASSERT_FATAL(rs->n < MAX_RESULTS);
	rs->r[rs->n] = *res;
	rs->val[rs->n] = malloc(res->value_len + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rs->val[rs->n]);
	if (res->value_len > 0)
		memcpy(rs->val[rs->n], res->value, res->value_len);
	rs->r[rs->n].value = rs->val[rs->n];
	rs->n++;
}

static void kvt_results_free(kvt_results *rs)
{
	for (size_t i = 0; i < rs->n; i++)
		free(rs->val[i]);
	rs->n = 0;
}

static kvt_results *kvt_results_new(void)
{
	kvt_results *rs = calloc(1, sizeof(*rs));

	CU_ASSERT_PTR_NOT_NULL_FATAL(rs);
	return rs;
}

static void kvt_results_del(kvt_results *rs)
{
	kvt_results_free(rs);
	free(rs);
}

/* A growing batch of entries, each owning its data. */
typedef struct kvt_batch {
	raft_entry e[256];
	size_t n;
} kvt_batch;

static void kvt_push_raw(kvt_batch *b, uint64_t index, int type, const void *data, size_t len)
{
	raft_entry *e = &b->e[b->n++];

	CU_ASSERT_FATAL(b->n <= 256);
	memset(e, 0, sizeof(*e));
	e->type = type;
	e->term = 1 + index / 100;
	e->index = index;
	e->len = len;
	if (len > 0) {
		e->data = malloc(len);
		CU_ASSERT_PTR_NOT_NULL_FATAL(e->data);
		memcpy(e->data, data, len);
	}
}

static void kvt_push(kvt_batch *b, uint64_t index, const store_command *c)
{
	void *buf;
	size_t len;

	CU_ASSERT_EQUAL_FATAL(command_encode(c, &buf, &len), STORE_OK);
	kvt_push_raw(b, index, RAFT_ENTRY_NORMAL, buf, len);
	free(buf);
}

static void kvt_batch_clear(kvt_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->e[i].data);
	b->n = 0;
}

static store_command kvt_cmd(int op, const char *key, const char *value)
{
	store_command c = {.op = op};

	c.key = key;
	c.key_len = key != NULL ? strlen(key) : 0;
	c.value = value;
	c.value_len = value != NULL ? strlen(value) : 0;
	return c;
}

static store_command kvt_client_cmd(int op, uint64_t client, uint64_t epoch, uint64_t seq,
                                    uint64_t low, const char *key, const char *value)
{
	store_command c = kvt_cmd(op, key, value);

	c.client_id = client;
	c.epoch = epoch;
	c.seq = seq;
	c.low_seq = low;
	return c;
}

static store_command kvt_register(uint64_t client)
{
	store_command c = {.op = STORE_OP_REGISTER, .client_id = client};

	return c;
}

/* Applies one command as entry `index`; returns store_apply's code. */
static int kvt_apply1(store *s, uint64_t index, const store_command *c, kvt_results *rs)
{
	kvt_batch b = {.n = 0};
	int rv;

	kvt_push(&b, index, c);
	rv = store_apply(s, b.e, b.n, kvt_collect, rs);
	kvt_batch_clear(&b);
	return rv;
}

/* The last result's status after applying c as entry index. */
static int kvt_status(store *s, uint64_t index, const store_command *c, kvt_results *rs)
{
	CU_ASSERT_EQUAL_FATAL(kvt_apply1(s, index, c, rs), STORE_OK);
	CU_ASSERT_FATAL(rs->n > 0 && rs->r[rs->n - 1].index == index);
	return rs->r[rs->n - 1].status;
}

static uint64_t kvt_le64(const void *p)
{
	const unsigned char *b = p;
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}

/* Registers client at entry index; returns the epoch from the result. */
static uint64_t kvt_do_register(store *s, uint64_t index, uint64_t client, kvt_results *rs)
{
	store_command c = kvt_register(client);

	CU_ASSERT_EQUAL_FATAL(kvt_status(s, index, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL_FATAL(rs->r[rs->n - 1].value_len, 8);
	return kvt_le64(rs->r[rs->n - 1].value);
}

/* Whether key holds exactly value (NULL: absent). */
static bool kvt_has(store *s, const char *key, const char *value)
{
	void *v = NULL;
	size_t len = 0;
	int rv = store_get(s, key, strlen(key), &v, &len);
	bool ok;

	if (value == NULL)
		return rv == STORE_ERR_NOT_FOUND && v == NULL;
	ok = rv == STORE_OK && len == strlen(value) && memcmp(v, value, len) == 0;
	free(v);
	return ok;
}

/* FNV-1a over every row of kv, sessions and session_results (read on a separate connection). */
static uint64_t kvt_state_hash(const char *path)
{
	static const char *const q[] = {
	    "SELECT key, value FROM kv ORDER BY key",
	    "SELECT client_id, epoch, last_index, low_seq FROM sessions ORDER BY client_id",
	    "SELECT client_id, seq, status, value FROM session_results ORDER BY client_id, seq",
	    "SELECT applied_index, applied_term FROM apply_state",
	};
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	sqlite3 *db = NULL;
	sqlite3_stmt *st;

	CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, q[i], -1, &st, NULL), SQLITE_OK);
		while (sqlite3_step(st) == SQLITE_ROW) {
			for (int c = 0; c < sqlite3_column_count(st); c++) {
				const unsigned char *p = sqlite3_column_blob(st, c);
				int n = sqlite3_column_bytes(st, c);

				h = (h ^ (uint64_t)sqlite3_column_type(st, c)) *
				    UINT64_C(0x100000001b3);
				for (int k = 0; k < n; k++)
					h = (h ^ p[k]) * UINT64_C(0x100000001b3);
				h = (h ^ (uint64_t)n) * UINT64_C(0x100000001b3);
			}
		}
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return h;
}

/* A single integer from a query on a separate connection. */
static int64_t kvt_query_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st;
	int64_t v = -1;

	CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static bool kvt_results_equal(const kvt_results *a, const kvt_results *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++) {
		const store_result *x = &a->r[i];
		const store_result *y = &b->r[i];

		if (x->index != y->index || x->term != y->term || x->client_id != y->client_id ||
		    x->seq != y->seq || x->op != y->op || x->status != y->status ||
		    x->value_len != y->value_len || memcmp(x->value, y->value, x->value_len) != 0)
			return false;
	}
	return true;
}

/* ---- command encoding ---- */

static void kvt_check_roundtrip(const store_command *c)
{
	store_command d;
	void *buf = NULL;
	void *again = NULL;
	size_t len = 0;
	size_t len2 = 0;

	CU_ASSERT_EQUAL_FATAL(command_encode(c, &buf, &len), STORE_OK);
	CU_ASSERT_EQUAL(len, command_encoded_size(c));
	CU_ASSERT_EQUAL(len, (size_t)WIRE_HEADER + c->key_len + c->value_len);
	CU_ASSERT_EQUAL_FATAL(command_decode(buf, len, &d), STORE_OK);
	CU_ASSERT_EQUAL(d.op, c->op);
	CU_ASSERT_EQUAL(d.client_id, c->client_id);
	CU_ASSERT_EQUAL(d.epoch, c->epoch);
	CU_ASSERT_EQUAL(d.seq, c->seq);
	CU_ASSERT_EQUAL(d.low_seq, c->low_seq);
	CU_ASSERT_EQUAL_FATAL(d.key_len, c->key_len);
	CU_ASSERT_EQUAL_FATAL(d.value_len, c->value_len);
	CU_ASSERT(d.key_len == 0 || memcmp(d.key, c->key, d.key_len) == 0);
	CU_ASSERT(d.value_len == 0 || memcmp(d.value, c->value, d.value_len) == 0);
	/* Borrowed pointers into the buffer, no copy. */
	CU_ASSERT(d.key_len == 0 ||
	          ((const char *)d.key > (char *)buf && (const char *)d.key < (char *)buf + len));
	CU_ASSERT_EQUAL_FATAL(command_encode(&d, &again, &len2), STORE_OK);
	CU_ASSERT(len2 == len && memcmp(again, buf, len) == 0);
	free(buf);
	free(again);
}

static void test_command_roundtrip(void)
{
	static const char bin[] = {'a', 0, (char)0xff, 'b'};
	store_command c;
	store_command d;
	unsigned char *big = calloc(1, COMMAND_MAX_VALUE);

	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	c = (store_command){.op = STORE_OP_NOOP};
	kvt_check_roundtrip(&c);
	c = kvt_register(UINT64_MAX);
	kvt_check_roundtrip(&c);
	c = kvt_cmd(STORE_OP_PUT, "k", "");
	kvt_check_roundtrip(&c);
	c = kvt_client_cmd(STORE_OP_PUT, 0x0102030405060708u, 9, INT64_MAX, 3, "key", "value");
	c.value = bin;
	c.value_len = sizeof bin;
	kvt_check_roundtrip(&c);
	c = kvt_client_cmd(STORE_OP_DELETE, 5, 1, 1, 1, "d", NULL);
	kvt_check_roundtrip(&c);
	c = kvt_client_cmd(STORE_OP_APPEND, 5, 1, 10, 10, "a", "tail");
	kvt_check_roundtrip(&c);
	c = kvt_cmd(STORE_OP_GET, "g", NULL);
	kvt_check_roundtrip(&c);
	/* Limits are inclusive. */
	c = kvt_cmd(STORE_OP_PUT, NULL, NULL);
	c.key = big;
	c.key_len = COMMAND_MAX_KEY;
	c.value = big;
	c.value_len = COMMAND_MAX_VALUE;
	kvt_check_roundtrip(&c);
	/* A zero-length entry is a NOOP. */
	memset(&d, 0xab, sizeof d);
	CU_ASSERT_EQUAL(command_decode(NULL, 0, &d), STORE_OK);
	CU_ASSERT_EQUAL(d.op, STORE_OP_NOOP);
	CU_ASSERT_EQUAL(d.client_id, 0);
	CU_ASSERT_EQUAL(d.key_len + d.value_len, 0);
	free(big);
}

/* Command shapes that break a rule. Rows whose only fault is a NULL pointer cannot be written
 * as bytes; the others are also written raw and must fail to decode. */
/* Positional: op, client_id, epoch, seq, low_seq, key, key_len, value, value_len. */
#define BIG_KEY   (COMMAND_MAX_KEY + 1)
#define BIG_VALUE (COMMAND_MAX_VALUE + 1)
#define I64_OVER  ((uint64_t)INT64_MAX + 1)
static const store_command kvt_bad_shapes[] = {
    {6, 0, 0, 0, 0, "k", 1, NULL, 0},
    {255, 0, 0, 0, 0, NULL, 0, NULL, 0},
    {STORE_OP_NOOP, 1, 0, 0, 0, NULL, 0, NULL, 0},
    {STORE_OP_NOOP, 0, 0, 1, 0, NULL, 0, NULL, 0},
    {STORE_OP_NOOP, 0, 0, 0, 0, "k", 1, NULL, 0},
    {STORE_OP_REGISTER, 0, 0, 0, 0, NULL, 0, NULL, 0},
    {STORE_OP_REGISTER, 1, 1, 1, 1, NULL, 0, NULL, 0},
    {STORE_OP_REGISTER, 1, 0, 0, 0, NULL, 0, "v", 1},
    {STORE_OP_PUT, 0, 0, 0, 0, NULL, 0, NULL, 0},
    {STORE_OP_PUT, 0, 0, 0, 0, NULL, 1, NULL, 0},
    {STORE_OP_PUT, 0, 0, 0, 0, "k", 1, NULL, 1},
    {STORE_OP_PUT, 0, 0, 0, 0, "k", BIG_KEY, NULL, 0},
    {STORE_OP_PUT, 0, 0, 0, 0, "k", 1, "v", BIG_VALUE},
    {STORE_OP_GET, 0, 0, 0, 0, "k", 1, "v", 1},
    {STORE_OP_GET, 0, 0, 0, 0, NULL, 0, NULL, 0},
    {STORE_OP_DELETE, 0, 0, 0, 0, "k", 1, "v", 1},
    {STORE_OP_DELETE, 0, 0, 0, 0, NULL, 0, NULL, 0},
    {STORE_OP_APPEND, 0, 0, 0, 0, NULL, 0, "v", 1},
    {STORE_OP_PUT, 0, 0, 1, 0, "k", 1, NULL, 0},
    {STORE_OP_PUT, 0, 1, 0, 0, "k", 1, NULL, 0},
    {STORE_OP_PUT, 0, 0, 0, 1, "k", 1, NULL, 0},
    {STORE_OP_PUT, 1, 0, 1, 1, "k", 1, NULL, 0},
    {STORE_OP_PUT, 1, 1, 0, 0, "k", 1, NULL, 0},
    {STORE_OP_PUT, 1, 1, 2, 3, "k", 1, NULL, 0},
    {STORE_OP_PUT, 1, 1, 1, 0, "k", 1, NULL, 0},
    {STORE_OP_PUT, 1, 1, I64_OVER, 1, "k", 1, NULL, 0},
    {STORE_OP_PUT, 1, I64_OVER, 1, 1, "k", 1, NULL, 0},
};

static void test_command_encode_rejects(void)
{
	const size_t n = sizeof(kvt_bad_shapes) / sizeof(kvt_bad_shapes[0]);
	void *buf = (void *)1;
	size_t len = 1;

	for (size_t i = 0; i < n; i++) {
		CU_ASSERT_EQUAL(command_encode(&kvt_bad_shapes[i], &buf, &len), STORE_ERR_INVALID);
		CU_ASSERT(buf == NULL && len == 0);
		CU_ASSERT_FALSE(command_valid(&kvt_bad_shapes[i]));
	}
	CU_ASSERT_EQUAL(command_encode(NULL, &buf, &len), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(command_encode(&kvt_bad_shapes[0], NULL, &len), STORE_ERR_INVALID);
}

/* Decodes buf and expects a rejection with *out zeroed. */
static void kvt_expect_corrupt(const void *buf, size_t len)
{
	store_command d;

	memset(&d, 0xab, sizeof d);
	CU_ASSERT_EQUAL(command_decode(buf, len, &d), STORE_ERR_CORRUPT);
	CU_ASSERT(d.op == 0 && d.client_id == 0 && d.key == NULL && d.value == NULL &&
	          d.key_len == 0 && d.value_len == 0);
}

static void kvt_put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void kvt_put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* Writes c's fields in the version 1 layout without any check (key bytes 'k', value bytes
 * 'v'), into a malloc'd buffer owned by the caller, with 2 spare zero bytes at the end. */
static unsigned char *kvt_frame(const store_command *c, size_t *len)
{
	unsigned char *b;

	*len = WIRE_HEADER + c->key_len + c->value_len;
	b = calloc(1, *len + 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	b[0] = COMMAND_MAGIC;
	b[WIRE_OFF_VERSION] = COMMAND_VERSION;
	b[WIRE_OFF_OP] = (unsigned char)c->op;
	kvt_put_u64(b + 3, c->client_id);
	kvt_put_u64(b + 11, c->epoch);
	kvt_put_u64(b + 19, c->seq);
	kvt_put_u64(b + 27, c->low_seq);
	kvt_put_u32(b + WIRE_OFF_KEYLEN, (uint32_t)c->key_len);
	memset(b + WIRE_OFF_KEYLEN + 4, 'k', c->key_len);
	kvt_put_u32(b + WIRE_OFF_KEYLEN + 4 + c->key_len, (uint32_t)c->value_len);
	memset(b + WIRE_HEADER + c->key_len, 'v', c->value_len);
	return b;
}

static void test_command_decode_rejects(void)
{
	store_command c = kvt_client_cmd(STORE_OP_PUT, 3, 2, 5, 4, "kkk", "vvvvv");
	const size_t off_vlen = WIRE_OFF_KEYLEN + 4 + 3;
	const uint32_t key_lens[] = {2, 4, 1u << 31, UINT32_MAX};
	const uint32_t value_lens[] = {0, 4, 6, UINT32_MAX};
	size_t len;
	unsigned char *b = kvt_frame(&c, &len);
	void *enc;
	size_t enc_len;

	/* The layout restated above is the encoder's: the unchecked frame equals the encoding. */
	CU_ASSERT_EQUAL_FATAL(command_encode(&c, &enc, &enc_len), STORE_OK);
	CU_ASSERT(enc_len == len && memcmp(enc, b, len) == 0);
	free(enc);
	/* Every truncation, a trailing byte, NULL with a length. */
	for (size_t i = 1; i < len; i++)
		kvt_expect_corrupt(b, i);
	kvt_expect_corrupt(b, len + 1);
	kvt_expect_corrupt(NULL, len);
	/* Magic, version, op. */
	b[0] ^= 1;
	kvt_expect_corrupt(b, len);
	b[0] ^= 1;
	b[WIRE_OFF_VERSION] = 2;
	kvt_expect_corrupt(b, len);
	b[WIRE_OFF_VERSION] = 0;
	kvt_expect_corrupt(b, len);
	b[WIRE_OFF_VERSION] = COMMAND_VERSION;
	for (int op = 6; op < 256; op += 25) {
		b[WIRE_OFF_OP] = (unsigned char)op;
		kvt_expect_corrupt(b, len);
	}
	b[WIRE_OFF_OP] = STORE_OP_PUT;
	/* Lengths that overrun the input, or that leave bytes over. */
	for (size_t i = 0; i < sizeof(key_lens) / sizeof(key_lens[0]); i++) {
		kvt_put_u32(b + WIRE_OFF_KEYLEN, key_lens[i]);
		kvt_expect_corrupt(b, len);
	}
	kvt_put_u32(b + WIRE_OFF_KEYLEN, 3);
	for (size_t i = 0; i < sizeof(value_lens) / sizeof(value_lens[0]); i++) {
		kvt_put_u32(b + off_vlen, value_lens[i]);
		kvt_expect_corrupt(b, len);
	}
	kvt_put_u32(b + off_vlen, 5);
	CU_ASSERT_EQUAL(command_decode(b, len, &c), STORE_OK);
	free(b);
	/* Every bad shape, written as bytes. */
	for (size_t i = 0; i < sizeof(kvt_bad_shapes) / sizeof(kvt_bad_shapes[0]); i++) {
		const store_command *bad = &kvt_bad_shapes[i];

		if ((bad->key == NULL && bad->key_len > 0) ||
		    (bad->value == NULL && bad->value_len > 0))
			continue;
		b = kvt_frame(bad, &len);
		kvt_expect_corrupt(b, len);
		free(b);
	}
	/* The limits themselves are accepted. */
	c = kvt_cmd(STORE_OP_APPEND, "k", "v");
	c.key_len = COMMAND_MAX_KEY;
	c.value_len = COMMAND_MAX_VALUE;
	b = kvt_frame(&c, &len);
	CU_ASSERT_EQUAL(command_decode(b, len, &c), STORE_OK);
	CU_ASSERT(c.key_len == COMMAND_MAX_KEY && c.value_len == COMMAND_MAX_VALUE);
	free(b);
}

/* A valid encoding, in a 2-byte-larger malloc'd buffer owned by the caller. */
static unsigned char *kvt_encode(const store_command *c, size_t *len)
{
	void *buf;
	unsigned char *big;

	CU_ASSERT_EQUAL_FATAL(command_encode(c, &buf, len), STORE_OK);
	big = calloc(1, *len + 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	memcpy(big, buf, *len);
	free(buf);
	return big;
}

/* Damages valid encodings at random: decode never crashes, never reads outside the buffer
 * (ASan), and whatever it accepts is canonical (re-encodes to the same bytes). */
static void test_command_fuzz(void)
{
	const uint64_t seed = kvt_seed();
	uint64_t rng = seed;
	store_command base[] = {
	    kvt_client_cmd(STORE_OP_PUT, 3, 2, 5, 4, "key", "value"),
	    kvt_cmd(STORE_OP_APPEND, "k", "v"),
	    kvt_cmd(STORE_OP_DELETE, "k", NULL),
	    kvt_register(9),
	    {.op = STORE_OP_NOOP},
	};
	size_t accepted = 0;

	printf("\n  store_kv fuzz seed %" PRIu64 " (RAFT_TEST_SEED)\n", seed);
	for (int iter = 0; iter < 20000; iter++) {
		size_t len;
		unsigned char *b = kvt_encode(&base[iter % 5], &len);
		unsigned char *exact;
		int flips = 1 + (int)(kvt_rand(&rng) % 4);
		store_command d;
		void *again = NULL;
		size_t len2 = 0;

		for (int f = 0; f < flips; f++)
			b[kvt_rand(&rng) % len] ^= (unsigned char)(1u << (kvt_rand(&rng) % 8));
		if (kvt_rand(&rng) % 4 == 0)
			len = kvt_rand(&rng) % (len + 2);
		exact = malloc(len > 0 ? len : 1);
		CU_ASSERT_PTR_NOT_NULL_FATAL(exact);
		memcpy(exact, b, len);
		if (command_decode(exact, len, &d) == STORE_OK && len > 0) {
			accepted++;
			CU_ASSERT_EQUAL(command_encode(&d, &again, &len2), STORE_OK);
			CU_ASSERT(len2 == len && memcmp(again, exact, len) == 0);
			free(again);
		}
		free(exact);
		free(b);
	}
	/* Some flips land in seq/value bytes and stay valid: both outcomes were exercised. */
	CU_ASSERT(accepted > 0 && accepted < 20000);
}

/* ---- the kv state machine ---- */

static void test_kv_operations(void)
{
	static const char bin1[] = {0, (char)0xff, 'a'};
	static const char bin2[] = {(char)0x80, 0};
	kvt_results *rs = kvt_results_new();
	kvt_batch b = {.n = 0};
	kvt_db d;
	store_command c;
	void *v;
	size_t len;

	kvt_open(&d, 0, 0);
	c = kvt_cmd(STORE_OP_GET, "a", NULL);
	CU_ASSERT_EQUAL(kvt_status(d.s, 1, &c, rs), STORE_RESULT_NOT_FOUND);
	c = kvt_cmd(STORE_OP_PUT, "a", "1");
	CU_ASSERT_EQUAL(kvt_status(d.s, 2, &c, rs), STORE_RESULT_OK);
	c = kvt_cmd(STORE_OP_PUT, "a", "22");
	CU_ASSERT_EQUAL(kvt_status(d.s, 3, &c, rs), STORE_RESULT_OK);
	c = kvt_cmd(STORE_OP_GET, "a", NULL);
	CU_ASSERT_EQUAL(kvt_status(d.s, 4, &c, rs), STORE_RESULT_OK);
	CU_ASSERT(rs->r[3].value_len == 2 && memcmp(rs->r[3].value, "22", 2) == 0);
	CU_ASSERT_EQUAL(rs->r[3].op, STORE_OP_GET);
	CU_ASSERT_EQUAL(rs->r[3].client_id, 0);
	c = kvt_cmd(STORE_OP_DELETE, "a", NULL);
	CU_ASSERT_EQUAL(kvt_status(d.s, 5, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL(kvt_status(d.s, 6, &c, rs), STORE_RESULT_NOT_FOUND);
	CU_ASSERT(kvt_has(d.s, "a", NULL));
	c = kvt_cmd(STORE_OP_APPEND, "b", "x");
	CU_ASSERT_EQUAL(kvt_status(d.s, 7, &c, rs), STORE_RESULT_OK);
	c = kvt_cmd(STORE_OP_APPEND, "b", "yz");
	CU_ASSERT_EQUAL(kvt_status(d.s, 8, &c, rs), STORE_RESULT_OK);
	CU_ASSERT(kvt_has(d.s, "b", "xyz"));
	/* An empty value is a value, not an absence. */
	c = kvt_cmd(STORE_OP_PUT, "e", "");
	CU_ASSERT_EQUAL(kvt_status(d.s, 9, &c, rs), STORE_RESULT_OK);
	CU_ASSERT(kvt_has(d.s, "e", ""));
	c = kvt_cmd(STORE_OP_GET, "e", NULL);
	CU_ASSERT_EQUAL(kvt_status(d.s, 10, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL(rs->r[rs->n - 1].value_len, 0);
	/* Binary bytes (NUL, invalid UTF-8) survive put and append. */
	c = kvt_cmd(STORE_OP_PUT, "bin", NULL);
	c.value = bin1;
	c.value_len = sizeof bin1;
	CU_ASSERT_EQUAL(kvt_status(d.s, 11, &c, rs), STORE_RESULT_OK);
	c.op = STORE_OP_APPEND;
	c.value = bin2;
	c.value_len = sizeof bin2;
	CU_ASSERT_EQUAL(kvt_status(d.s, 12, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL_FATAL(store_get(d.s, "bin", 3, &v, &len), STORE_OK);
	CU_ASSERT(len == 5 && memcmp(v, bin1, 3) == 0 && memcmp((char *)v + 3, bin2, 2) == 0);
	free(v);
	CU_ASSERT_EQUAL(store_applied_index(d.s), 12);
	CU_ASSERT_EQUAL(store_applied_term(d.s), 1);
	/* A NOOP entry (empty) advances applied and changes nothing. */
	kvt_push_raw(&b, 13, RAFT_ENTRY_NORMAL, NULL, 0);
	CU_ASSERT_EQUAL(store_apply(d.s, b.e, b.n, kvt_collect, rs), STORE_OK);
	CU_ASSERT(rs->r[rs->n - 1].op == STORE_OP_NOOP &&
	          rs->r[rs->n - 1].status == STORE_RESULT_OK);
	CU_ASSERT_EQUAL(store_applied_index(d.s), 13);
	kvt_batch_clear(&b);
	kvt_close(&d);
	kvt_results_del(rs);
}

static void test_kv_append_limit(void)
{
	kvt_results *rs = kvt_results_new();
	char *half = malloc(COMMAND_MAX_VALUE / 2 + 1);
	store_command c;
	void *v;
	size_t len;
	kvt_db d;

	CU_ASSERT_PTR_NOT_NULL_FATAL(half);
	memset(half, 'h', COMMAND_MAX_VALUE / 2);
	half[COMMAND_MAX_VALUE / 2] = '\0';
	kvt_open(&d, 0, 0);
	c = kvt_cmd(STORE_OP_APPEND, "k", half);
	CU_ASSERT_EQUAL(kvt_status(d.s, 1, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL(kvt_status(d.s, 2, &c, rs), STORE_RESULT_OK);
	/* Exactly COMMAND_MAX_VALUE now; one more byte is refused and changes nothing. */
	c = kvt_cmd(STORE_OP_APPEND, "k", "x");
	CU_ASSERT_EQUAL(kvt_status(d.s, 3, &c, rs), STORE_RESULT_INVALID);
	CU_ASSERT_EQUAL_FATAL(store_get(d.s, "k", 1, &v, &len), STORE_OK);
	CU_ASSERT_EQUAL(len, COMMAND_MAX_VALUE);
	free(v);
	CU_ASSERT_EQUAL(store_failed(d.s), STORE_OK);
	CU_ASSERT_EQUAL(store_applied_index(d.s), 3);
	kvt_close(&d);
	free(half);
	kvt_results_del(rs);
}

/* Records scanned keys as "k1,k2,..." (values checked against "v" + key). */
typedef struct kvt_scan_log {
	char keys[8192];
	size_t n;
	size_t stop_after; /* 0: never stop */
	bool bad_value;
} kvt_scan_log;

static int kvt_scan_fn(void *ctx, const void *key, size_t key_len, const void *value,
                       size_t value_len)
{
	kvt_scan_log *l = ctx;
	size_t used = strlen(l->keys);

	if (value_len != key_len + 1 || ((const char *)value)[0] != 'v' ||
	    memcmp((const char *)value + 1, key, key_len) != 0)
		l->bad_value = true;
	snprintf(l->keys + used, sizeof l->keys - used, "%s%.*s", used > 0 ? "," : "", (int)key_len,
	         (const char *)key);
	l->n++;
	return l->stop_after != 0 && l->n == l->stop_after;
}

/* Puts keys k000..k(n-1) with value "v" + key, in one apply of up to 256 entries each. */
static void kvt_fill(store *s, int n)
{
	kvt_batch b = {.n = 0};
	uint64_t index = store_applied_index(s);
	char key[16];
	char value[17];

	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof key, "k%03d", i);
		snprintf(value, sizeof value, "v%s", key);
		store_command c = kvt_cmd(STORE_OP_PUT, key, value);
		kvt_push(&b, ++index, &c);
		if (b.n == 256 || i == n - 1) {
			CU_ASSERT_EQUAL_FATAL(store_apply(s, b.e, b.n, NULL, NULL), STORE_OK);
			kvt_batch_clear(&b);
		}
	}
}

static void test_kv_scan(void)
{
	kvt_scan_log l = {.n = 0};
	void *from;
	void *next = NULL;
	size_t next_len = 0;
	size_t total = 0;
	kvt_db d;

	kvt_open(&d, 0, 0);
	kvt_fill(d.s, 10);
	/* [k003, k007) */
	CU_ASSERT_EQUAL(store_scan(d.s, "k003", 4, "k007", 4, 0, kvt_scan_fn, &l, &next, &next_len),
	                STORE_OK);
	CU_ASSERT_STRING_EQUAL(l.keys, "k003,k004,k005,k006");
	CU_ASSERT_PTR_NULL(next);
	CU_ASSERT_FALSE(l.bad_value);
	/* A start between keys; no end; limit cuts with a continuation key. */
	memset(&l, 0, sizeof l);
	CU_ASSERT_EQUAL(store_scan(d.s, "k0055", 5, NULL, 0, 2, kvt_scan_fn, &l, &next, &next_len),
	                STORE_OK);
	CU_ASSERT_STRING_EQUAL(l.keys, "k006,k007");
	CU_ASSERT_FATAL(next != NULL && next_len == 4);
	CU_ASSERT(memcmp(next, "k008", 4) == 0);
	/* Continuing gives the rest; a limit that ends exactly at the last key gives no next. */
	memset(&l, 0, sizeof l);
	from = next;
	CU_ASSERT_EQUAL(
	    store_scan(d.s, from, next_len, NULL, 0, 2, kvt_scan_fn, &l, &next, &next_len),
	    STORE_OK);
	free(from);
	CU_ASSERT_STRING_EQUAL(l.keys, "k008,k009");
	CU_ASSERT_PTR_NULL(next);
	/* The limit stops at end too: no continuation beyond the range. */
	memset(&l, 0, sizeof l);
	CU_ASSERT_EQUAL(store_scan(d.s, NULL, 0, "k002", 4, 2, kvt_scan_fn, &l, &next, &next_len),
	                STORE_OK);
	CU_ASSERT_STRING_EQUAL(l.keys, "k000,k001");
	CU_ASSERT_PTR_NULL(next);
	/* The callback stops the scan. */
	memset(&l, 0, sizeof l);
	l.stop_after = 3;
	CU_ASSERT_EQUAL(store_scan(d.s, NULL, 0, NULL, 0, 0, kvt_scan_fn, &l, &next, &next_len),
	                STORE_OK);
	CU_ASSERT_STRING_EQUAL(l.keys, "k000,k001,k002");
	CU_ASSERT_PTR_NULL(next);
	/* Empty and inverted ranges. */
	memset(&l, 0, sizeof l);
	CU_ASSERT_EQUAL(store_scan(d.s, "k005", 4, "k005", 4, 0, kvt_scan_fn, &l, NULL, NULL),
	                STORE_OK);
	CU_ASSERT_EQUAL(store_scan(d.s, "k009", 4, "k001", 4, 0, kvt_scan_fn, &l, NULL, NULL),
	                STORE_OK);
	CU_ASSERT_EQUAL(l.n, 0);
	/* Many keys cross internal batches; paging by 300 visits each key exactly once. */
	kvt_fill(d.s, 700);
	next = NULL;
	memset(&l, 0, sizeof l);
	CU_ASSERT_EQUAL(store_scan(d.s, NULL, 0, NULL, 0, 0, kvt_scan_fn, &l, NULL, NULL),
	                STORE_OK);
	CU_ASSERT_EQUAL(l.n, 700);
	do {
		size_t from_len = next_len;

		from = next;
		memset(&l, 0, sizeof l);
		CU_ASSERT_EQUAL_FATAL(store_scan(d.s, from, from_len, NULL, 0, 300, kvt_scan_fn, &l,
		                                 &next, &next_len),
		                      STORE_OK);
		free(from);
		total += l.n;
		CU_ASSERT(l.n == 300 || (l.n == 100 && next == NULL));
	} while (next != NULL);
	CU_ASSERT_EQUAL(total, 700);
	/* Bad arguments. */
	CU_ASSERT_EQUAL(store_scan(d.s, NULL, 0, NULL, 0, 0, NULL, NULL, NULL, NULL),
	                STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_scan(d.s, NULL, 3, NULL, 0, 0, kvt_scan_fn, &l, NULL, NULL),
	                STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(
	    store_scan(d.s, "k", COMMAND_MAX_KEY + 1, NULL, 0, 0, kvt_scan_fn, &l, NULL, NULL),
	    STORE_ERR_INVALID);
	kvt_close(&d);
}

static void test_kv_get_args(void)
{
	void *v = (void *)1;
	size_t len = 1;
	kvt_db d;

	kvt_open(&d, 0, 0);
	CU_ASSERT_EQUAL(store_get(d.s, "", 0, &v, &len), STORE_ERR_INVALID);
	CU_ASSERT(v == NULL && len == 0);
	CU_ASSERT_EQUAL(store_get(d.s, NULL, 1, &v, &len), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_get(d.s, "k", COMMAND_MAX_KEY + 1, &v, &len), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_get(d.s, "k", 1, NULL, &len), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_get(NULL, "k", 1, &v, &len), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_get(d.s, "k", 1, &v, &len), STORE_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL(store_apply(NULL, NULL, 0, NULL, NULL), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_apply(d.s, NULL, 1, NULL, NULL), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_apply(d.s, NULL, 0, NULL, NULL), STORE_OK);
	CU_ASSERT_EQUAL(store_failed(d.s), STORE_OK);
	kvt_close(&d);
}

/* ---- replay and durability ---- */

static void test_kv_replay_skipped(void)
{
	kvt_results *rs = kvt_results_new();
	kvt_batch b = {.n = 0};
	store_command c = kvt_cmd(STORE_OP_APPEND, "k", "x");
	kvt_db d;

	kvt_open(&d, 0, 0);
	for (uint64_t i = 1; i <= 3; i++)
		kvt_push(&b, i, &c);
	CU_ASSERT_EQUAL(store_apply(d.s, b.e, b.n, kvt_collect, rs), STORE_OK);
	CU_ASSERT_EQUAL(rs->n, 3);
	CU_ASSERT(kvt_has(d.s, "k", "xxx"));
	/* The same entries again: nothing applied, no callbacks. */
	CU_ASSERT_EQUAL(store_apply(d.s, b.e, b.n, kvt_collect, rs), STORE_OK);
	CU_ASSERT_EQUAL(rs->n, 3);
	CU_ASSERT(kvt_has(d.s, "k", "xxx"));
	/* An overlapping batch [2, 4] applies only 4. */
	kvt_batch_clear(&b);
	for (uint64_t i = 2; i <= 4; i++)
		kvt_push(&b, i, &c);
	CU_ASSERT_EQUAL(store_apply(d.s, b.e, b.n, kvt_collect, rs), STORE_OK);
	CU_ASSERT(rs->n == 4 && rs->r[3].index == 4);
	CU_ASSERT(kvt_has(d.s, "k", "xxxx"));
	/* A gap is refused without effect and without failing the store. */
	kvt_batch_clear(&b);
	kvt_push(&b, 6, &c);
	CU_ASSERT_EQUAL(store_apply(d.s, b.e, b.n, kvt_collect, rs), STORE_ERR_INVALID);
	CU_ASSERT_EQUAL(store_failed(d.s), STORE_OK);
	CU_ASSERT_EQUAL(store_applied_index(d.s), 4);
	CU_ASSERT(kvt_has(d.s, "k", "xxxx"));
	/* After reopen the stored applied index still guards against replay. */
	kvt_reopen(&d);
	CU_ASSERT_EQUAL(store_applied_index(d.s), 4);
	kvt_batch_clear(&b);
	for (uint64_t i = 1; i <= 5; i++)
		kvt_push(&b, i, &c);
	CU_ASSERT_EQUAL(store_apply(d.s, b.e, b.n, kvt_collect, rs), STORE_OK);
	CU_ASSERT(rs->n == 5 && rs->r[4].index == 5);
	CU_ASSERT(kvt_has(d.s, "k", "xxxxx"));
	kvt_batch_clear(&b);
	kvt_close(&d);
	kvt_results_del(rs);
}

/* The callback tries to re-enter store_apply; that is refused and the batch is unharmed. */
static int kvt_reentry_rv;
static store *kvt_reentry_store;

static void kvt_reenter(void *ctx, const store_result *res)
{
	raft_entry e = {.type = RAFT_ENTRY_NORMAL, .term = 1, .index = res->index + 100};

	(void)ctx;
	kvt_reentry_rv = store_apply(kvt_reentry_store, &e, 1, NULL, NULL);
}

static void test_kv_reopen(void)
{
	kvt_results *rs = kvt_results_new();
	kvt_batch b = {.n = 0};
	store_command c;
	kvt_db d;
	uint64_t h;

	kvt_open(&d, 0, 0);
	kvt_fill(d.s, 300);
	c = kvt_cmd(STORE_OP_DELETE, "k005", NULL);
	CU_ASSERT_EQUAL(kvt_status(d.s, 301, &c, rs), STORE_RESULT_OK);
	kvt_reentry_store = d.s;
	c = kvt_cmd(STORE_OP_PUT, "z", "1");
	CU_ASSERT_EQUAL(kvt_apply1(d.s, 302, &c, rs), STORE_OK);
	kvt_push(&b, 303, &c);
	CU_ASSERT_EQUAL(store_apply(d.s, b.e, b.n, kvt_reenter, NULL), STORE_OK);
	CU_ASSERT_EQUAL(kvt_reentry_rv, STORE_ERR_INVALID);
	kvt_batch_clear(&b);
	h = kvt_state_hash(d.path);
	kvt_reopen(&d);
	CU_ASSERT_EQUAL(store_applied_index(d.s), 303);
	CU_ASSERT_EQUAL(store_applied_term(d.s), 4);
	CU_ASSERT_EQUAL(kvt_state_hash(d.path), h);
	CU_ASSERT(kvt_has(d.s, "k004", "vk004"));
	CU_ASSERT(kvt_has(d.s, "k005", NULL));
	CU_ASSERT(kvt_has(d.s, "z", "1"));
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT applied_index FROM apply_state"), 303);
	kvt_close(&d);
	kvt_results_del(rs);
}

/* Runs sql on a separate connection to the store's file (schema changes for fault tests). */
static void kvt_exec_side(const char *path, const char *sql)
{
	sqlite3 *db = NULL;

	CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

/* A statement failing in the middle of a batch rolls the whole batch back, fail-stops the
 * store, leaves the applied index where it was and makes no callback. */
static void test_kv_failure_rolls_back(void)
{
	kvt_results *rs = kvt_results_new();
	store_command put_a = kvt_cmd(STORE_OP_PUT, "a", "1");
	store_command put_boom = kvt_cmd(STORE_OP_PUT, "boom", "1");
	store_command reg = kvt_register(4);
	kvt_batch b = {.n = 0};
	uint64_t h;
	kvt_db d;

	kvt_open(&d, 0, 0);
	kvt_do_register(d.s, 1, 3, rs);
	h = kvt_state_hash(d.path);
	kvt_exec_side(d.path, "CREATE TRIGGER boom BEFORE INSERT ON kv WHEN NEW.key = x'626f6f6d'"
	                      " BEGIN SELECT RAISE(ABORT, 'injected'); END");
	kvt_push(&b, 2, &put_a);
	kvt_push(&b, 3, &reg);
	kvt_push(&b, 4, &put_boom);
	CU_ASSERT_NOT_EQUAL(store_apply(d.s, b.e, b.n, kvt_collect, rs), STORE_OK);
	CU_ASSERT_EQUAL(rs->n, 1);
	CU_ASSERT_EQUAL(store_applied_index(d.s), 1);
	CU_ASSERT_NOT_EQUAL(store_failed(d.s), STORE_OK);
	CU_ASSERT_EQUAL(store_apply(d.s, b.e, 1, kvt_collect, rs), STORE_ERR_FAILED);
	CU_ASSERT_EQUAL(kvt_state_hash(d.path), h);
	/* Once the cause is gone, a reopened store applies the same batch. */
	store_close(d.s);
	d.s = NULL;
	kvt_exec_side(d.path, "DROP TRIGGER boom");
	kvt_reopen(&d);
	CU_ASSERT_EQUAL(store_applied_index(d.s), 1);
	CU_ASSERT(kvt_has(d.s, "a", NULL));
	CU_ASSERT_EQUAL(store_apply(d.s, b.e, b.n, kvt_collect, rs), STORE_OK);
	CU_ASSERT_EQUAL(rs->n, 4);
	CU_ASSERT(kvt_has(d.s, "a", "1") && kvt_has(d.s, "boom", "1"));
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM sessions"), 2);
	kvt_batch_clear(&b);
	kvt_close(&d);
	kvt_results_del(rs);
}

/* ---- GET results and memory ---- */

/* Reads the "<field>:  N kB" line of /proc/self/status; -1 if absent. */
static long kvt_status_kib(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	size_t fl = strlen(field);
	char line[256];
	long v = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, field, fl) == 0 && line[fl] == ':')
			v = strtol(line + fl + 1, NULL, 10);
	fclose(f);
	return v;
}

/* Resets the peak RSS to the current RSS (Linux clear_refs "5") and returns it in KiB; if the
 * reset is not possible, returns the process's peak so far (getrusage). */
static long kvt_rss_reset(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	struct rusage ru;

	if (f != NULL && fputs("5", f) >= 0 && fclose(f) == 0)
		return kvt_status_kib("VmHWM");
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* The peak RSS in KiB since the last kvt_rss_reset(). */
static long kvt_rss_peak(void)
{
	long hwm = kvt_status_kib("VmHWM");
	struct rusage ru;

	if (hwm >= 0)
		return hwm;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* Checks each GET result in place (no copy): in order, the expected value, and delivered only
 * once the transaction that applied it committed. */
typedef struct kvt_get_check {
	store *s;
	const unsigned char *want; /* the value every GET must return */
	size_t want_len;
	uint64_t next;          /* index of the next result expected */
	uint64_t first_applied; /* the applied index when the first result came */
	size_t bad;
} kvt_get_check;

static void kvt_check_get(void *ctx, const store_result *res)
{
	kvt_get_check *g = ctx;
	bool ok = res->index == g->next && res->op == STORE_OP_GET &&
	          res->status == STORE_RESULT_OK && res->value_len == g->want_len &&
	          memcmp(res->value, g->want, g->want_len) == 0 &&
	          store_applied_index(g->s) >= res->index;

	if (g->first_applied == 0)
		g->first_applied = store_applied_index(g->s);
	g->bad += !ok;
	g->next++;
}

/* A value of COMMAND_MAX_VALUE bytes; malloc'd. */
static unsigned char *kvt_big_value(void)
{
	unsigned char *v = malloc(COMMAND_MAX_VALUE);

	CU_ASSERT_FATAL(v != NULL);
	for (size_t i = 0; i < COMMAND_MAX_VALUE; i++)
		v[i] = (unsigned char)(i * 131 + i / 4099);
	return v;
}

/* Puts the big value at "big" as entry 1, and pushes n GETs of it from entry 2 on. */
static void kvt_big_gets(kvt_db *d, const unsigned char *big, size_t n, kvt_batch *b)
{
	store_command put = kvt_cmd(STORE_OP_PUT, "big", NULL);
	store_command get = kvt_cmd(STORE_OP_GET, "big", NULL);

	put.value = big;
	put.value_len = COMMAND_MAX_VALUE;
	kvt_push(b, 1, &put);
	CU_ASSERT_EQUAL_FATAL(store_apply(d->s, b->e, 1, NULL, NULL), STORE_OK);
	kvt_batch_clear(b);
	for (size_t i = 0; i < n; i++)
		kvt_push(b, 2 + i, &get);
}

/* 64 GETs of a 1 MiB value in one batch: results are delivered in order and whole, but the
 * batch commits in parts, so memory grows by a few MiB rather than 64. */
static void test_kv_get_memory_bounded(void)
{
	const size_t n = 64;
	unsigned char *big = kvt_big_value();
	kvt_batch b = {.n = 0};
	kvt_get_check g;
	long rss0, grow;
	kvt_db d;

	kvt_open(&d, 0, 0);
	kvt_big_gets(&d, big, n, &b);
	g = (kvt_get_check){.s = d.s, .want = big, .want_len = COMMAND_MAX_VALUE, .next = 2};
	rss0 = kvt_rss_reset();
	CU_ASSERT_EQUAL(store_apply(d.s, b.e, b.n, kvt_check_get, &g), STORE_OK);
	grow = kvt_rss_peak() - rss0;
	printf("\n  %zu GETs of %u bytes: peak RSS +%ld KiB\n", n, COMMAND_MAX_VALUE, grow);
	CU_ASSERT_EQUAL(g.bad, 0);
	CU_ASSERT_EQUAL(g.next, 2 + n);
	CU_ASSERT(g.first_applied >= 2 && g.first_applied < 1 + n);
	CU_ASSERT_EQUAL(store_applied_index(d.s), 1 + n);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT applied_index FROM apply_state"),
	                (int64_t)(1 + n));
	if (!KVT_SANITIZED)
		CU_ASSERT(grow < 24 * 1024);
	kvt_batch_clear(&b);
	kvt_close(&d);
	free(big);
}

/* A failure after the first part of a batch committed: that part stays applied with its
 * callbacks made, the rest is rolled back, and the applied index tells where it stopped. */
static void test_kv_batch_parts_atomic(void)
{
	store_command boom = kvt_cmd(STORE_OP_PUT, "boom", "1");
	unsigned char *big = kvt_big_value();
	kvt_batch b = {.n = 0};
	kvt_get_check g;
	uint64_t applied;
	kvt_db d;

	kvt_open(&d, 0, 0);
	kvt_big_gets(&d, big, 16, &b);
	kvt_push(&b, 18, &boom);
	kvt_exec_side(d.path, "CREATE TRIGGER boom BEFORE INSERT ON kv WHEN NEW.key = x'626f6f6d'"
	                      " BEGIN SELECT RAISE(ABORT, 'injected'); END");
	g = (kvt_get_check){.s = d.s, .want = big, .want_len = COMMAND_MAX_VALUE, .next = 2};
	CU_ASSERT_NOT_EQUAL(store_apply(d.s, b.e, b.n, kvt_check_get, &g), STORE_OK);
	applied = store_applied_index(d.s);
	CU_ASSERT(applied > 1 && applied < 18);
	CU_ASSERT_EQUAL(g.bad, 0);
	CU_ASSERT_EQUAL(g.next, applied + 1);
	store_close(d.s);
	d.s = NULL;
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT applied_index FROM apply_state"),
	                (int64_t)applied);
	kvt_exec_side(d.path, "DROP TRIGGER boom");
	kvt_reopen(&d);
	CU_ASSERT_EQUAL(store_apply(d.s, b.e, b.n, NULL, NULL), STORE_OK);
	CU_ASSERT_EQUAL(store_applied_index(d.s), 18);
	CU_ASSERT(kvt_has(d.s, "boom", "1"));
	kvt_batch_clear(&b);
	kvt_close(&d);
	free(big);
}

/* ---- sessions ---- */

static void test_session_duplicates(void)
{
	kvt_results *rs = kvt_results_new();
	store_command c;
	uint64_t epoch;
	kvt_db d;

	kvt_open(&d, 0, 0);
	epoch = kvt_do_register(d.s, 1, 42, rs);
	CU_ASSERT_EQUAL(epoch, 1);
	CU_ASSERT_EQUAL(rs->r[0].client_id, 42);
	CU_ASSERT_EQUAL(rs->r[0].op, STORE_OP_REGISTER);
	/* Registering again while live keeps the epoch. */
	CU_ASSERT_EQUAL(kvt_do_register(d.s, 2, 42, rs), 1);
	/* Three requests in flight, applied out of order: seq 3, then 1, then 2. */
	c = kvt_client_cmd(STORE_OP_APPEND, 42, epoch, 3, 1, "k", "c");
	CU_ASSERT_EQUAL(kvt_status(d.s, 3, &c, rs), STORE_RESULT_OK);
	c = kvt_client_cmd(STORE_OP_APPEND, 42, epoch, 1, 1, "k", "a");
	CU_ASSERT_EQUAL(kvt_status(d.s, 4, &c, rs), STORE_RESULT_OK);
	c = kvt_client_cmd(STORE_OP_GET, 42, epoch, 2, 1, "k", NULL);
	CU_ASSERT_EQUAL(kvt_status(d.s, 5, &c, rs), STORE_RESULT_OK);
	CU_ASSERT(rs->r[4].value_len == 2 && memcmp(rs->r[4].value, "ca", 2) == 0);
	CU_ASSERT(rs->r[4].client_id == 42 && rs->r[4].seq == 2);
	/* Retries of each: recorded results, nothing applied again. */
	c = kvt_client_cmd(STORE_OP_APPEND, 42, epoch, 3, 1, "k", "c");
	CU_ASSERT_EQUAL(kvt_status(d.s, 6, &c, rs), STORE_RESULT_OK);
	c = kvt_client_cmd(STORE_OP_APPEND, 42, epoch, 1, 1, "k", "a");
	CU_ASSERT_EQUAL(kvt_status(d.s, 7, &c, rs), STORE_RESULT_OK);
	CU_ASSERT(kvt_has(d.s, "k", "ca"));
	c = kvt_cmd(STORE_OP_PUT, "k", "changed");
	CU_ASSERT_EQUAL(kvt_status(d.s, 8, &c, rs), STORE_RESULT_OK);
	/* A retried GET returns the recorded value, not the current one. */
	c = kvt_client_cmd(STORE_OP_GET, 42, epoch, 2, 1, "k", NULL);
	CU_ASSERT_EQUAL(kvt_status(d.s, 9, &c, rs), STORE_RESULT_OK);
	CU_ASSERT(rs->r[8].value_len == 2 && memcmp(rs->r[8].value, "ca", 2) == 0);
	/* A recorded NOT_FOUND stays NOT_FOUND after the key appears. */
	c = kvt_client_cmd(STORE_OP_DELETE, 42, epoch, 4, 1, "gone", NULL);
	CU_ASSERT_EQUAL(kvt_status(d.s, 10, &c, rs), STORE_RESULT_NOT_FOUND);
	c = kvt_cmd(STORE_OP_PUT, "gone", "back");
	CU_ASSERT_EQUAL(kvt_status(d.s, 11, &c, rs), STORE_RESULT_OK);
	c = kvt_client_cmd(STORE_OP_DELETE, 42, epoch, 4, 1, "gone", NULL);
	CU_ASSERT_EQUAL(kvt_status(d.s, 12, &c, rs), STORE_RESULT_NOT_FOUND);
	CU_ASSERT(kvt_has(d.s, "gone", "back"));
	/* The recorded results survive a reopen. */
	kvt_reopen(&d);
	c = kvt_client_cmd(STORE_OP_APPEND, 42, epoch, 1, 1, "k", "a");
	CU_ASSERT_EQUAL(kvt_status(d.s, 13, &c, rs), STORE_RESULT_OK);
	CU_ASSERT(kvt_has(d.s, "k", "changed"));
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT last_index FROM sessions"), 13);
	kvt_close(&d);
	kvt_results_del(rs);
}

static void test_session_watermark(void)
{
	kvt_results *rs = kvt_results_new();
	store_command c;
	uint64_t epoch;
	kvt_db d;

	kvt_open(&d, 0, 0);
	epoch = kvt_do_register(d.s, 1, 7, rs);
	for (uint64_t seq = 1; seq <= 4; seq++) {
		c = kvt_client_cmd(STORE_OP_APPEND, 7, epoch, seq, 1, "k", "x");
		CU_ASSERT_EQUAL(kvt_status(d.s, 1 + seq, &c, rs), STORE_RESULT_OK);
	}
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM session_results"), 4);
	/* seq 5 acknowledges everything below 3: results 1 and 2 go. */
	c = kvt_client_cmd(STORE_OP_APPEND, 7, epoch, 5, 3, "k", "x");
	CU_ASSERT_EQUAL(kvt_status(d.s, 6, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM session_results"), 3);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT min(seq) FROM session_results"), 3);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT low_seq FROM sessions"), 3);
	/* A late retry of seq 1 (old watermark) is below the watermark: expired, not applied. */
	c = kvt_client_cmd(STORE_OP_APPEND, 7, epoch, 1, 1, "k", "x");
	CU_ASSERT_EQUAL(kvt_status(d.s, 7, &c, rs), STORE_RESULT_SESSION_EXPIRED);
	CU_ASSERT(kvt_has(d.s, "k", "xxxxx"));
	/* A retry of seq 3 still gets its recorded result; the watermark never falls. */
	c = kvt_client_cmd(STORE_OP_APPEND, 7, epoch, 3, 1, "k", "x");
	CU_ASSERT_EQUAL(kvt_status(d.s, 8, &c, rs), STORE_RESULT_OK);
	CU_ASSERT(kvt_has(d.s, "k", "xxxxx"));
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT low_seq FROM sessions"), 3);
	/* A request whose own seq is the new watermark trims everything older. */
	c = kvt_client_cmd(STORE_OP_APPEND, 7, epoch, 6, 6, "k", "x");
	CU_ASSERT_EQUAL(kvt_status(d.s, 9, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM session_results"), 1);
	CU_ASSERT(kvt_has(d.s, "k", "xxxxxx"));
	kvt_close(&d);
	kvt_results_del(rs);
}

static void test_session_unknown(void)
{
	kvt_results *rs = kvt_results_new();
	store_command c;
	uint64_t epoch;
	kvt_db d;

	kvt_open(&d, 0, 0);
	c = kvt_client_cmd(STORE_OP_PUT, 9, 1, 1, 1, "k", "v");
	CU_ASSERT_EQUAL(kvt_status(d.s, 1, &c, rs), STORE_RESULT_SESSION_EXPIRED);
	CU_ASSERT(rs->r[0].client_id == 9 && rs->r[0].seq == 1 && rs->r[0].op == STORE_OP_PUT);
	CU_ASSERT(kvt_has(d.s, "k", NULL));
	epoch = kvt_do_register(d.s, 2, 9, rs);
	CU_ASSERT_EQUAL(epoch, 2);
	/* The right client with another epoch (an earlier incarnation) is refused. */
	c = kvt_client_cmd(STORE_OP_PUT, 9, 1, 1, 1, "k", "v");
	CU_ASSERT_EQUAL(kvt_status(d.s, 3, &c, rs), STORE_RESULT_SESSION_EXPIRED);
	CU_ASSERT(kvt_has(d.s, "k", NULL));
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM session_results"), 0);
	c = kvt_client_cmd(STORE_OP_PUT, 9, epoch, 1, 1, "k", "v");
	CU_ASSERT_EQUAL(kvt_status(d.s, 4, &c, rs), STORE_RESULT_OK);
	CU_ASSERT(kvt_has(d.s, "k", "v"));
	kvt_close(&d);
	kvt_results_del(rs);
}

/* Applies empty (NOOP) entries up to and including index. */
static void kvt_pad(store *s, uint64_t index)
{
	kvt_batch b = {.n = 0};

	for (uint64_t i = store_applied_index(s) + 1; i <= index; i++) {
		kvt_push_raw(&b, i, RAFT_ENTRY_NORMAL, NULL, 0);
		if (b.n == 256 || i == index) {
			CU_ASSERT_EQUAL_FATAL(store_apply(s, b.e, b.n, NULL, NULL), STORE_OK);
			kvt_batch_clear(&b);
		}
	}
}

static void test_session_ttl(void)
{
	kvt_results *rs = kvt_results_new();
	store_command c;
	uint64_t e1;
	uint64_t e2;
	kvt_db d;

	kvt_open(&d, 10, 0);
	e1 = kvt_do_register(d.s, 1, 1, rs);
	kvt_pad(d.s, 4);
	c = kvt_client_cmd(STORE_OP_APPEND, 1, e1, 1, 1, "k", "a");
	CU_ASSERT_EQUAL(kvt_status(d.s, 5, &c, rs), STORE_RESULT_OK);
	/* last_index 5 + ttl 10 = 15: still live at 15 (this retry gets its recorded result). */
	kvt_pad(d.s, 14);
	CU_ASSERT_EQUAL(kvt_status(d.s, 15, &c, rs), STORE_RESULT_OK);
	CU_ASSERT(kvt_has(d.s, "k", "a"));
	/* Touched at 15, so expired at 26 and not before. */
	kvt_pad(d.s, 25);
	c = kvt_client_cmd(STORE_OP_APPEND, 1, e1, 2, 1, "k", "b");
	CU_ASSERT_EQUAL(kvt_status(d.s, 26, &c, rs), STORE_RESULT_SESSION_EXPIRED);
	CU_ASSERT(kvt_has(d.s, "k", "a"));
	/* Registering again starts a new incarnation and drops the old results; the old epoch
	 * stays refused. */
	e2 = kvt_do_register(d.s, 27, 1, rs);
	CU_ASSERT_EQUAL(e2, 27);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM session_results"), 0);
	c = kvt_client_cmd(STORE_OP_APPEND, 1, e1, 2, 1, "k", "b");
	CU_ASSERT_EQUAL(kvt_status(d.s, 28, &c, rs), STORE_RESULT_SESSION_EXPIRED);
	c = kvt_client_cmd(STORE_OP_APPEND, 1, e2, 1, 1, "k", "b");
	CU_ASSERT_EQUAL(kvt_status(d.s, 29, &c, rs), STORE_RESULT_OK);
	CU_ASSERT(kvt_has(d.s, "k", "ab"));
	kvt_close(&d);
	kvt_results_del(rs);
}

/*
 * One entry of a mixed workload: registrations, client requests with retries and moving
 * watermarks (some from stale or evicted sessions), and client-less appends. The generator
 * believes every REGISTER starts a new session, so it is sometimes wrong about the epoch.
 */
static void kvt_workload_entry(uint64_t *rng, uint64_t index, kvt_batch *b, uint64_t *epochs)
{
	uint64_t client = 1 + kvt_rand(rng) % 8;
	uint64_t seq = 1 + kvt_rand(rng) % 6;
	uint64_t low = 1 + kvt_rand(rng) % seq;
	int kind = (int)(kvt_rand(rng) % 7);
	char key[8];
	store_command c;

	snprintf(key, sizeof key, "k%u", (unsigned)(kvt_rand(rng) % 5));
	if (kind == 0) {
		c = kvt_register(client);
		epochs[client] = index;
	} else if (kind == 1) {
		c = kvt_cmd(STORE_OP_APPEND, key, "n");
	} else if (kind == 2 || kind == 3) {
		c = kvt_client_cmd(kind == 2 ? STORE_OP_GET : STORE_OP_DELETE, client,
		                   epochs[client] != 0 ? epochs[client] : 1, seq, low, key, NULL);
	} else {
		c = kvt_client_cmd(STORE_OP_APPEND, client,
		                   epochs[client] != 0 ? epochs[client] : 1, seq, low, key, "c");
	}
	kvt_push(b, index, &c);
}

/* Regenerates the workload of seed from index 1 and applies entries from..to to s in batches of
 * `batch` (1..256), collecting results. */
static void kvt_run_workload(store *s, uint64_t seed, uint64_t from, uint64_t to, size_t batch,
                             kvt_results *rs)
{
	uint64_t rng = seed;
	uint64_t epochs[9] = {0};
	kvt_batch b = {.n = 0};
	kvt_batch skip = {.n = 0};

	for (uint64_t index = 1; index <= to; index++) {
		kvt_workload_entry(&rng, index, index >= from ? &b : &skip, epochs);
		kvt_batch_clear(&skip);
		if (b.n == batch || (index == to && b.n > 0)) {
			CU_ASSERT_EQUAL_FATAL(store_apply(s, b.e, b.n, kvt_collect, rs), STORE_OK);
			kvt_batch_clear(&b);
		}
	}
}

/* Sessions expire at the same log positions however the entries are batched and whatever
 * restarts happen in between; the sweep deletes idle sessions at multiples of 1024. */
static void test_session_expiry_deterministic(void)
{
	const uint64_t seed = kvt_seed();
	kvt_results *ra = kvt_results_new();
	kvt_results *rb = kvt_results_new();
	size_t count[4] = {0};
	kvt_db a;
	kvt_db b;

	kvt_open(&a, 40, 5);
	kvt_open(&b, 40, 5);
	kvt_run_workload(a.s, seed, 1, 2100, 1, ra);
	kvt_run_workload(b.s, seed, 1, 1000, 64, rb);
	kvt_reopen(&b);
	kvt_run_workload(b.s, seed, 1001, 2100, 200, rb);
	CU_ASSERT_EQUAL(ra->n, 2100);
	CU_ASSERT_TRUE(kvt_results_equal(ra, rb));
	CU_ASSERT_EQUAL(kvt_state_hash(a.path), kvt_state_hash(b.path));
	for (size_t i = 0; i < ra->n; i++)
		count[ra->r[i].status]++;
	/* The workload exercises every outcome but INVALID. */
	CU_ASSERT(count[STORE_RESULT_OK] > 0 && count[STORE_RESULT_NOT_FOUND] > 0 &&
	          count[STORE_RESULT_SESSION_EXPIRED] > 0 && count[STORE_RESULT_INVALID] == 0);
	CU_ASSERT(kvt_query_int(a.path, "SELECT count(*) FROM sessions") <= 5);
	/* After the sweep at 2048, no session idle past the ttl at 2048 is left. */
	CU_ASSERT_EQUAL(kvt_query_int(a.path, "SELECT count(*) FROM sessions"
	                                      " WHERE last_index + 40 < 2048"),
	                0);
	kvt_close(&a);
	kvt_close(&b);
	kvt_results_del(ra);
	kvt_results_del(rb);
}

static void test_session_sweep(void)
{
	kvt_results *rs = kvt_results_new();
	store_command c = kvt_cmd(STORE_OP_PUT, "pad", "x");
	kvt_batch b = {.n = 0};
	uint64_t e;
	kvt_db d;

	kvt_open(&d, 100, 0);
	e = kvt_do_register(d.s, 1, 5, rs);
	kvt_do_register(d.s, 2, 6, rs);
	store_command w = kvt_client_cmd(STORE_OP_PUT, 5, e, 1, 1, "a", "b");
	CU_ASSERT_EQUAL(kvt_status(d.s, 3, &w, rs), STORE_RESULT_OK);
	/* Keep client 6 alive with a REGISTER at 1000; pad up to 1023. */
	for (uint64_t i = 4; i <= 1023; i++) {
		store_command r = kvt_register(6);

		kvt_push(&b, i, i == 1000 ? &r : &c);
		if (b.n == 256 || i == 1023) {
			CU_ASSERT_EQUAL_FATAL(store_apply(d.s, b.e, b.n, NULL, NULL), STORE_OK);
			kvt_batch_clear(&b);
		}
	}
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM sessions"), 2);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM session_results"), 1);
	CU_ASSERT_EQUAL(kvt_status(d.s, 1024, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM sessions"), 1);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT client_id FROM sessions"), 6);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM session_results"), 0);
	kvt_close(&d);
	kvt_results_del(rs);
}

static void test_session_max(void)
{
	kvt_results *rs = kvt_results_new();
	uint64_t epoch[6] = {0};
	store_command c;
	kvt_db d;

	kvt_open(&d, 0, 3);
	for (uint64_t client = 1; client <= 3; client++)
		epoch[client] = kvt_do_register(d.s, client, client, rs);
	/* Client 1 is used again, so client 2 is now the least recently used. */
	c = kvt_client_cmd(STORE_OP_PUT, 1, epoch[1], 1, 1, "k1", "v");
	CU_ASSERT_EQUAL(kvt_status(d.s, 4, &c, rs), STORE_RESULT_OK);
	epoch[4] = kvt_do_register(d.s, 5, 4, rs);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM sessions"), 3);
	c = kvt_client_cmd(STORE_OP_PUT, 2, epoch[2], 1, 1, "k2", "v");
	CU_ASSERT_EQUAL(kvt_status(d.s, 6, &c, rs), STORE_RESULT_SESSION_EXPIRED);
	CU_ASSERT(kvt_has(d.s, "k2", NULL));
	/* 3 is next out; 1 keeps its recorded result. */
	epoch[5] = kvt_do_register(d.s, 7, 5, rs);
	c = kvt_client_cmd(STORE_OP_PUT, 3, epoch[3], 1, 1, "k3", "v");
	CU_ASSERT_EQUAL(kvt_status(d.s, 8, &c, rs), STORE_RESULT_SESSION_EXPIRED);
	c = kvt_client_cmd(STORE_OP_PUT, 1, epoch[1], 1, 1, "k1", "v");
	CU_ASSERT_EQUAL(kvt_status(d.s, 9, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM session_results"), 1);
	/* The count survives a reopen: one more registration evicts exactly one (client 4). */
	kvt_reopen(&d);
	kvt_do_register(d.s, 10, 2, rs);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM sessions"), 3);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM sessions WHERE client_id = 4"),
	                0);
	kvt_close(&d);
	kvt_results_del(rs);
}

/* Applies APPENDs of "x" to "k" by client 7 (epoch e), seqs lo..hi with low_seq 1, from entry
 * *index on. */
static void kvt_appends(store *s, uint64_t e, uint64_t lo, uint64_t hi, uint64_t *index)
{
	kvt_batch b = {.n = 0};

	for (uint64_t seq = lo; seq <= hi; seq++) {
		store_command c = kvt_client_cmd(STORE_OP_APPEND, 7, e, seq, 1, "k", "x");

		kvt_push(&b, (*index)++, &c);
		if (b.n == 256 || seq == hi) {
			CU_ASSERT_EQUAL_FATAL(store_apply(s, b.e, b.n, NULL, NULL), STORE_OK);
			kvt_batch_clear(&b);
		}
	}
}

/* The length of k's value, or 0. */
static size_t kvt_len(store *s, const char *key)
{
	void *v = NULL;
	size_t len = 0;

	store_get(s, key, strlen(key), &v, &len);
	free(v);
	return len;
}

/* A client that never raises its watermark keeps at most COMMAND_MAX_INFLIGHT results: the
 * lowest seqs go, the watermark rises above them, and their retries are refused, not applied
 * again; every replica drops the same ones. A seq far ahead drags the window along. */
static void test_session_inflight_bound(void)
{
	const uint64_t extra = 10, total = COMMAND_MAX_INFLIGHT + extra;
	kvt_results *rs = kvt_results_new();
	uint64_t e, index = 2, index2 = 2;
	store_command c;
	kvt_db d, d2;

	kvt_open(&d, 0, 0);
	kvt_open(&d2, 0, 0);
	e = kvt_do_register(d.s, 1, 7, rs);
	kvt_do_register(d2.s, 1, 7, rs);
	kvt_appends(d.s, e, 1, total, &index);
	kvt_appends(d2.s, e, 1, total / 2, &index2);
	kvt_reopen(&d2);
	kvt_appends(d2.s, e, total / 2 + 1, total, &index2);
	CU_ASSERT_EQUAL(kvt_len(d.s, "k"), total);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM session_results"),
	                COMMAND_MAX_INFLIGHT);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT min(seq) FROM session_results"), extra + 1);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT low_seq FROM sessions"), extra + 1);
	CU_ASSERT_EQUAL(kvt_state_hash(d.path), kvt_state_hash(d2.path));
	/* Retries below the new watermark: refused; at or above it: the recorded result. */
	c = kvt_client_cmd(STORE_OP_APPEND, 7, e, 1, 1, "k", "x");
	CU_ASSERT_EQUAL(kvt_status(d.s, index++, &c, rs), STORE_RESULT_SESSION_EXPIRED);
	c.seq = extra;
	CU_ASSERT_EQUAL(kvt_status(d.s, index++, &c, rs), STORE_RESULT_SESSION_EXPIRED);
	c.seq = extra + 1;
	CU_ASSERT_EQUAL(kvt_status(d.s, index++, &c, rs), STORE_RESULT_OK);
	c.seq = total;
	CU_ASSERT_EQUAL(kvt_status(d.s, index++, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL(kvt_len(d.s, "k"), total);
	/* One more new request pushes out one more. */
	c.seq = total + 1;
	CU_ASSERT_EQUAL(kvt_status(d.s, index++, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL(kvt_len(d.s, "k"), total + 1);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM session_results"),
	                COMMAND_MAX_INFLIGHT);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT low_seq FROM sessions"), extra + 2);
	c.seq = extra + 1;
	CU_ASSERT_EQUAL(kvt_status(d.s, index++, &c, rs), STORE_RESULT_SESSION_EXPIRED);
	CU_ASSERT_EQUAL(kvt_len(d.s, "k"), total + 1);
	c.seq = 10 * total;
	CU_ASSERT_EQUAL(kvt_status(d.s, index++, &c, rs), STORE_RESULT_OK);
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT low_seq FROM sessions"),
	                (int64_t)(10 * total - COMMAND_MAX_INFLIGHT + 1));
	CU_ASSERT_EQUAL(kvt_query_int(d.path, "SELECT count(*) FROM session_results"), 1);
	c.seq = total;
	CU_ASSERT_EQUAL(kvt_status(d.s, index++, &c, rs), STORE_RESULT_SESSION_EXPIRED);
	CU_ASSERT_EQUAL(kvt_len(d.s, "k"), total + 2);
	CU_ASSERT_EQUAL(store_failed(d.s), STORE_OK);
	kvt_close(&d);
	kvt_close(&d2);
	kvt_results_del(rs);
}

/* Malformed commands and conf changes are INVALID on every replica alike, with no effect. */
static void test_kv_invalid_entries(void)
{
	static const unsigned char junk[] = {0x4b, 1, 2, 0, 0};
	kvt_results *ra = kvt_results_new();
	kvt_results *rb = kvt_results_new();
	store_command put = kvt_cmd(STORE_OP_PUT, "k", "v");
	store_command reg = kvt_register(3);
	kvt_batch b = {.n = 0};
	size_t len;
	unsigned char *trailing = kvt_encode(&put, &len);
	kvt_db da;
	kvt_db db;

	kvt_open(&da, 0, 0);
	kvt_open(&db, 0, 0);
	kvt_push(&b, 1, &reg);
	kvt_push_raw(&b, 2, RAFT_ENTRY_NORMAL, junk, sizeof junk);
	kvt_push_raw(&b, 3, RAFT_ENTRY_NORMAL, trailing, len + 1);
	kvt_push_raw(&b, 4, RAFT_ENTRY_CONF_CHANGE, trailing, len);
	kvt_push_raw(&b, 5, RAFT_ENTRY_CONF_CHANGE, NULL, 0);
	kvt_push_raw(&b, 6, 7, trailing, len);
	kvt_push(&b, 7, &put);
	CU_ASSERT_EQUAL(store_apply(da.s, b.e, b.n, kvt_collect, ra), STORE_OK);
	for (size_t i = 0; i < b.n; i++)
		CU_ASSERT_EQUAL(store_apply(db.s, &b.e[i], 1, kvt_collect, rb), STORE_OK);
	CU_ASSERT_EQUAL_FATAL(ra->n, 7);
	CU_ASSERT_TRUE(kvt_results_equal(ra, rb));
	for (size_t i = 1; i <= 5; i++) {
		CU_ASSERT_EQUAL(ra->r[i].status, STORE_RESULT_INVALID);
		CU_ASSERT_EQUAL(ra->r[i].client_id, 0);
		CU_ASSERT_EQUAL(ra->r[i].index, i + 1);
	}
	CU_ASSERT_EQUAL(ra->r[6].status, STORE_RESULT_OK);
	CU_ASSERT_EQUAL(store_applied_index(da.s), 7);
	CU_ASSERT_EQUAL(kvt_state_hash(da.path), kvt_state_hash(db.path));
	CU_ASSERT_EQUAL(kvt_query_int(da.path, "SELECT count(*) FROM kv"), 1);
	CU_ASSERT_EQUAL(store_failed(da.s), STORE_OK);
	kvt_batch_clear(&b);
	free(trailing);
	kvt_close(&da);
	kvt_close(&db);
	kvt_results_del(ra);
	kvt_results_del(rb);
}

void test_register_store_kv(void)
{
	CU_pSuite s = CU_add_suite("store_kv", NULL, NULL);

	if (s == NULL)
		return;
	CU_add_test(s, "command round trip", test_command_roundtrip);
	CU_add_test(s, "command encode rejects bad shapes", test_command_encode_rejects);
	CU_add_test(s, "command decode rejects malformed bytes", test_command_decode_rejects);
	CU_add_test(s, "command decode survives random damage", test_command_fuzz);
	CU_add_test(s, "put get delete append", test_kv_operations);
	CU_add_test(s, "append bounded by the value limit", test_kv_append_limit);
	CU_add_test(s, "scan range limit continuation", test_kv_scan);
	CU_add_test(s, "get and apply arguments", test_kv_get_args);
	CU_add_test(s, "replayed entries are skipped", test_kv_replay_skipped);
	CU_add_test(s, "data and applied index survive reopen", test_kv_reopen);
	CU_add_test(s, "a failing batch rolls back whole", test_kv_failure_rolls_back);
	CU_add_test(s, "duplicate requests return recorded results", test_session_duplicates);
	CU_add_test(s, "low watermark trims results", test_session_watermark);
	CU_add_test(s, "unknown session or epoch expires", test_session_unknown);
	CU_add_test(s, "session ttl", test_session_ttl);
	CU_add_test(s, "session sweep every 1024 entries", test_session_sweep);
	CU_add_test(s, "max sessions evicts least recently used", test_session_max);
	CU_add_test(s, "session expiry deterministic", test_session_expiry_deterministic);
	CU_add_test(s, "malformed and conf change entries invalid", test_kv_invalid_entries);
	CU_add_test(s, "GET results keep memory bounded", test_kv_get_memory_bounded);
	CU_add_test(s, "a batch commits in atomic parts", test_kv_batch_parts_atomic);
	CU_add_test(s, "session results bounded per client", test_session_inflight_bound);
}
