/* test_store_crash.c - CUnit suite "store_crash": the store under power cuts and I/O errors. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "raft.h"
#include "store/command.h"
#include "store/store.h"
#include "suites.h"
#include "vfs_fault.h"

/*
 * The suite runs a deterministic workload against a store on the fault-injecting VFS: Readies
 * with entries, hard-state changes (commit-only ones unsynced), conflicting suffixes, applies
 * of kv commands (and of malformed entries), compactions in chunks, WAL checkpoints, and one
 * snapshot install from a second store's dump. A model (cm_*) computes the state after every
 * transaction. The crash loop takes the disk down right after the k-th write, sync, truncate
 * or delete, for every k in turn, closes the store, reverts unsynced data (drop, torn write or
 * scrambled sectors, rotating), reopens, and checks that the store holds exactly one of the
 * states a crash may leave: the state after the last call the contract makes durable (a Ready
 * that must sync, an install), or a later one. The error loop fails the k-th write or sync
 * with SQLITE_IOERR or SQLITE_FULL instead and checks the fail-stop.
 *
 * Environment: RAFTKV_CRASH_STEPS (workload rounds, default CR_DEFAULT_ROUNDS),
 * RAFTKV_CRASH_SEEDS (workload seeds, default 2), RAFTKV_CRASH_SEED (first seed, default 1).
 */

#define CR_DEFAULT_ROUNDS 12
#define CR_CLUSTER        0x5eedc0de
#define CR_NODE           1
#define CR_PEER           2
#define CR_SNAP_INDEX     12 /* the peer's snapshot, installed in round CR_INSTALL_ROUND */
#define CR_SNAP_TERM      3
#define CR_INSTALL_ROUND  2
#define CR_KEYS           12
#define CR_MAX_VALUE      2000
#define CR_WAL_LIMIT      16    /* pages: checkpoints (passive and truncating) happen often */
#define CR_WAIT_MS        10000 /* bound on waiting for one dump */
#define CR_WAIT_ROUNDS    3     /* dumps to wait for: one that ends unusable starts another */

/* The membership both stores record: the peer's snapshot must name the node to install it. */
static const raft_conf_state cr_conf = {.voters = {CR_NODE, CR_PEER}, .n_voters = 2};

/* ------------------------------------------------------------------------------------------ */
/* Seeded randomness                                                                          */
/* ------------------------------------------------------------------------------------------ */

typedef struct cr_rng {
	uint64_t s;
} cr_rng;

static uint64_t cr_next(cr_rng *g)
{
	uint64_t z = (g->s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t cr_below(cr_rng *g, uint64_t n)
{
	return n == 0 ? 0 : cr_next(g) % n;
}

static uint64_t cr_env(const char *name, uint64_t def)
{
	const char *v = getenv(name);
	char *end;
	unsigned long long x;

	if (v == NULL || *v == '\0')
		return def;
	x = strtoull(v, &end, 10);
	return *end == '\0' && x > 0 ? (uint64_t)x : def;
}

/* ------------------------------------------------------------------------------------------ */
/* The model                                                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct cm_entry {
	uint64_t index;
	uint64_t term;
	int type;
	unsigned char *data; /* owned; NULL when len == 0 */
	size_t len;
} cm_entry;

typedef struct cm_pair {
	unsigned char *key; /* owned */
	size_t klen;
	unsigned char *val; /* owned; may be NULL when vlen == 0 */
	size_t vlen;
} cm_pair;

/* What the store must hold: every field the store exposes. Owns its arrays. */
typedef struct cm_state {
	raft_hard_state hs;
	raft_conf_state cs;
	uint64_t trunc_index;
	uint64_t trunc_term;
	uint64_t applied_index;
	uint64_t applied_term;
	cm_entry *log; /* entries trunc_index + 1 .. last, in order */
	size_t n_log;
	cm_pair *kv; /* sorted by key, memcmp then length */
	size_t n_kv;
} cm_state;

static void *cm_dup(const void *p, size_t len)
{
	void *q;

	if (len == 0)
		return NULL;
	q = malloc(len);
	CU_ASSERT_FATAL(q != NULL);
	memcpy(q, p, len);
	return q;
}

static void cm_free(cm_state *m)
{
	for (size_t i = 0; i < m->n_log; i++)
		free(m->log[i].data);
	for (size_t i = 0; i < m->n_kv; i++) {
		free(m->kv[i].key);
		free(m->kv[i].val);
	}
	free(m->log);
	free(m->kv);
	memset(m, 0, sizeof(*m));
}

/* dst (uninitialised) becomes a deep copy of src. */
static void cm_copy(cm_state *dst, const cm_state *src)
{
	*dst = *src;
	dst->log = calloc(src->n_log + 1, sizeof(cm_entry));
	dst->kv = calloc(src->n_kv + 1, sizeof(cm_pair));
	CU_ASSERT_FATAL(dst->log != NULL && dst->kv != NULL);
	for (size_t i = 0; i < src->n_log; i++) {
		dst->log[i] = src->log[i];
		dst->log[i].data = cm_dup(src->log[i].data, src->log[i].len);
	}
	for (size_t i = 0; i < src->n_kv; i++) {
		dst->kv[i] = src->kv[i];
		dst->kv[i].key = cm_dup(src->kv[i].key, src->kv[i].klen);
		dst->kv[i].val = cm_dup(src->kv[i].val, src->kv[i].vlen);
	}
}

static uint64_t cm_last(const cm_state *m)
{
	return m->n_log > 0 ? m->log[m->n_log - 1].index : m->trunc_index;
}

static const cm_entry *cm_entry_at(const cm_state *m, uint64_t index)
{
	if (index <= m->trunc_index || index > cm_last(m))
		return NULL;
	return &m->log[index - m->trunc_index - 1];
}

/* Drops the entries at and above index. */
static void cm_log_cut(cm_state *m, uint64_t index)
{
	while (m->n_log > 0 && m->log[m->n_log - 1].index >= index)
		free(m->log[--m->n_log].data);
}

static void cm_log_push(cm_state *m, const raft_entry *e)
{
	cm_entry *grown = realloc(m->log, (m->n_log + 1) * sizeof(*grown));

	CU_ASSERT_FATAL(grown != NULL);
	m->log = grown;
	m->log[m->n_log++] = (cm_entry){.index = e->index,
	                                .term = e->term,
	                                .type = e->type,
	                                .data = cm_dup(e->data, e->len),
	                                .len = e->len};
}

static int cm_key_cmp(const cm_pair *p, const void *key, size_t klen)
{
	size_t n = p->klen < klen ? p->klen : klen;
	int c = memcmp(p->key, key, n);

	if (c != 0)
		return c;
	return p->klen < klen ? -1 : p->klen > klen;
}

/* The position of key, or where it would go; *found tells which. */
static size_t cm_kv_find(const cm_state *m, const void *key, size_t klen, bool *found)
{
	size_t i = 0;

	while (i < m->n_kv && cm_key_cmp(&m->kv[i], key, klen) < 0)
		i++;
	*found = i < m->n_kv && cm_key_cmp(&m->kv[i], key, klen) == 0;
	return i;
}

/* Sets key to prefix (plen bytes) followed by suffix (slen bytes). */
static void cm_kv_set(cm_state *m, const void *key, size_t klen, const void *prefix, size_t plen,
                      const void *suffix, size_t slen)
{
	bool found;
	size_t i = cm_kv_find(m, key, klen, &found);
	unsigned char *val = plen + slen > 0 ? malloc(plen + slen) : NULL;

	CU_ASSERT_FATAL(plen + slen == 0 || val != NULL);
	if (plen > 0)
		memcpy(val, prefix, plen);
	if (slen > 0)
		memcpy(val + plen, suffix, slen);
	if (!found) {
		cm_pair *grown = realloc(m->kv, (m->n_kv + 1) * sizeof(*grown));

		CU_ASSERT_FATAL(grown != NULL);
		m->kv = grown;
		memmove(&m->kv[i + 1], &m->kv[i], (m->n_kv - i) * sizeof(*grown));
		m->kv[i] = (cm_pair){.key = cm_dup(key, klen), .klen = klen};
		m->n_kv++;
	}
	free(m->kv[i].val);
	m->kv[i].val = val;
	m->kv[i].vlen = plen + slen;
}

static void cm_kv_delete(cm_state *m, const void *key, size_t klen)
{
	bool found;
	size_t i = cm_kv_find(m, key, klen, &found);

	if (!found)
		return;
	free(m->kv[i].key);
	free(m->kv[i].val);
	memmove(&m->kv[i], &m->kv[i + 1], (m->n_kv - i - 1) * sizeof(cm_pair));
	m->n_kv--;
}

/* The kv effect of one committed entry (sessions are not modelled: the workload's commands
 * carry no client id). */
static void cm_apply_entry(cm_state *m, const cm_entry *e)
{
	store_command c;
	bool found;
	size_t i;

	m->applied_index = e->index;
	m->applied_term = e->term;
	if (e->type != RAFT_ENTRY_NORMAL || command_decode(e->data, e->len, &c) != STORE_OK ||
	    c.client_id != 0)
		return;
	if (c.op == STORE_OP_PUT) {
		cm_kv_set(m, c.key, c.key_len, NULL, 0, c.value, c.value_len);
	} else if (c.op == STORE_OP_DELETE) {
		cm_kv_delete(m, c.key, c.key_len);
	} else if (c.op == STORE_OP_APPEND) {
		i = cm_kv_find(m, c.key, c.key_len, &found);
		if (!found)
			cm_kv_set(m, c.key, c.key_len, NULL, 0, c.value, c.value_len);
		else if (m->kv[i].vlen + c.value_len <= COMMAND_MAX_VALUE)
			cm_kv_set(m, c.key, c.key_len, m->kv[i].val, m->kv[i].vlen, c.value,
			          c.value_len);
	}
}

/* Applies the entries in (applied, upto]. */
static void cm_apply_upto(cm_state *m, uint64_t upto)
{
	while (m->applied_index < upto)
		cm_apply_entry(m, cm_entry_at(m, m->applied_index + 1));
}

static void cm_persist(cm_state *m, const raft_ready *rd)
{
	if (rd->n_entries > 0)
		cm_log_cut(m, rd->entries[0].index);
	for (size_t i = 0; i < rd->n_entries; i++)
		cm_log_push(m, &rd->entries[i]);
	if (rd->has_hard_state)
		m->hs = rd->hard_state;
}

static void cm_compact(cm_state *m, uint64_t upto)
{
	const cm_entry *e = cm_entry_at(m, upto);
	size_t drop = (size_t)(upto - m->trunc_index);

	m->trunc_term = e->term;
	for (size_t i = 0; i < drop; i++)
		free(m->log[i].data);
	memmove(m->log, m->log + drop, (m->n_log - drop) * sizeof(cm_entry));
	m->n_log -= drop;
	m->trunc_index = upto;
}

/* A Ready carrying a snapshot whose state is snap (kv and metadata), then rd's hard state. */
static void cm_install(cm_state *m, const cm_state *snap, const raft_ready *rd)
{
	cm_state next;

	cm_copy(&next, snap);
	cm_log_cut(&next, 0);
	next.trunc_index = next.applied_index = rd->snapshot.metadata.index;
	next.trunc_term = next.applied_term = rd->snapshot.metadata.term;
	next.cs = rd->snapshot.metadata.conf_state;
	next.hs = rd->has_hard_state ? rd->hard_state : m->hs;
	cm_free(m);
	*m = next;
}

/* ---- comparing ---- */

static bool cm_entry_equal(const cm_entry *a, const cm_entry *b)
{
	return a->index == b->index && a->term == b->term && a->type == b->type &&
	       a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static bool cm_pair_equal(const cm_pair *a, const cm_pair *b)
{
	return a->klen == b->klen && a->vlen == b->vlen && memcmp(a->key, b->key, a->klen) == 0 &&
	       (a->vlen == 0 || memcmp(a->val, b->val, a->vlen) == 0);
}

/* Whether a equals b; if not, why (at most len bytes) names the first difference. */
static bool cm_equal(const cm_state *a, const cm_state *b, char *why, size_t len)
{
	if (memcmp(&a->hs, &b->hs, sizeof(a->hs)) != 0)
		snprintf(why, len,
		         "hard state (%" PRIu64 ",%" PRIu64 ",%" PRIu64 ") vs (%" PRIu64 ",%" PRIu64
		         ",%" PRIu64 ")",
		         a->hs.term, a->hs.vote, a->hs.commit, b->hs.term, b->hs.vote,
		         b->hs.commit);
	else if (a->cs.n_voters != b->cs.n_voters ||
	         memcmp(a->cs.voters, b->cs.voters, a->cs.n_voters * sizeof(uint64_t)) != 0)
		snprintf(why, len, "conf state");
	else if (a->trunc_index != b->trunc_index || a->trunc_term != b->trunc_term)
		snprintf(why, len,
		         "truncated (%" PRIu64 ",%" PRIu64 ") vs (%" PRIu64 ",%" PRIu64 ")",
		         a->trunc_index, a->trunc_term, b->trunc_index, b->trunc_term);
	else if (a->applied_index != b->applied_index || a->applied_term != b->applied_term)
		snprintf(why, len, "applied (%" PRIu64 ",%" PRIu64 ") vs (%" PRIu64 ",%" PRIu64 ")",
		         a->applied_index, a->applied_term, b->applied_index, b->applied_term);
	else if (a->n_log != b->n_log)
		snprintf(why, len, "last index %" PRIu64 " vs %" PRIu64, cm_last(a), cm_last(b));
	else if (a->n_kv != b->n_kv)
		snprintf(why, len, "%zu kv pairs vs %zu", a->n_kv, b->n_kv);
	else
		why[0] = '\0';
	for (size_t i = 0; why[0] == '\0' && i < a->n_log; i++)
		if (!cm_entry_equal(&a->log[i], &b->log[i]))
			snprintf(why, len, "log entry %" PRIu64, a->log[i].index);
	for (size_t i = 0; why[0] == '\0' && i < a->n_kv; i++)
		if (!cm_pair_equal(&a->kv[i], &b->kv[i]))
			snprintf(why, len, "kv pair %zu (%.*s)", i, (int)a->kv[i].klen,
			         a->kv[i].key);
	return why[0] == '\0';
}

/* ---- reading a store ---- */

static int cm_scan_pair(void *ctx, const void *key, size_t key_len, const void *value,
                        size_t value_len)
{
	cm_state *m = ctx;

	cm_kv_set(m, key, key_len, NULL, 0, value, value_len);
	return 0;
}

/* Reads everything s exposes into *m (zeroed first). Returns a store code; why says what
 * failed. */
static int cm_load(store *s, cm_state *m, char *why, size_t len)
{
	const raft_storage *st = store_raft_storage(s);
	raft_entry *ents = NULL;
	uint64_t first = 0, last = 0;
	size_t n = 0;
	int rv;

	memset(m, 0, sizeof(*m));
	rv = st->initial_state(st->ctx, &m->hs, &m->cs);
	if (rv == STORE_OK)
		rv = st->first_index(st->ctx, &first);
	if (rv == STORE_OK)
		rv = st->last_index(st->ctx, &last);
	if (rv == STORE_OK && (first == 0 || last + 1 < first))
		rv = STORE_ERR_CORRUPT;
	if (rv == STORE_OK)
		rv = st->term(st->ctx, first - 1, &m->trunc_term);
	if (rv == STORE_OK && last >= first)
		rv = st->entries(st->ctx, first, last + 1, UINT64_MAX, &ents, &n);
	if (rv == STORE_OK && n != last + 1 - first)
		rv = STORE_ERR_CORRUPT;
	snprintf(why, len, "reading the log: %s", store_strerror(rv));
	m->trunc_index = first - 1;
	for (size_t i = 0; rv == STORE_OK && i < n; i++)
		cm_log_push(m, &ents[i]);
	raft_entries_free(ents, n);
	m->applied_index = store_applied_index(s);
	m->applied_term = store_applied_term(s);
	if (rv == STORE_OK)
		rv = store_scan(s, NULL, 0, NULL, 0, 0, cm_scan_pair, m, NULL, NULL);
	if (rv != STORE_OK)
		snprintf(why, len, "reading the store: %s (%s)", store_strerror(rv),
		         store_errmsg(s));
	return rv;
}

/* The store's invariants (store_internal.h), checked on what it exposes. */
static bool cm_invariants(const cm_state *m, char *why, size_t len)
{
	if (m->trunc_index > m->applied_index || m->applied_index > m->hs.commit ||
	    m->hs.commit > cm_last(m))
		snprintf(why, len,
		         "truncated %" PRIu64 " <= applied %" PRIu64 " <= commit %" PRIu64
		         " <= last %" PRIu64 " broken",
		         m->trunc_index, m->applied_index, m->hs.commit, cm_last(m));
	else if (m->applied_index == m->trunc_index && m->applied_term != m->trunc_term)
		snprintf(why, len, "applied and truncated index equal, terms differ");
	else
		why[0] = '\0';
	for (size_t i = 0; why[0] == '\0' && i < m->n_log; i++) {
		uint64_t prev = i > 0 ? m->log[i - 1].term : m->trunc_term;

		if (m->log[i].term < prev || m->log[i].term > m->hs.term)
			snprintf(why, len,
			         "entry %" PRIu64 " has term %" PRIu64 " (previous %" PRIu64
			         ", hard state %" PRIu64 ")",
			         m->log[i].index, m->log[i].term, prev, m->hs.term);
	}
	return why[0] == '\0';
}

/* ------------------------------------------------------------------------------------------ */
/* Files                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* A directory for the suite: $TMPDIR, else /dev/shm (fsync is free there), else /tmp. Its
 * name carries the pid, so a cleanup of leftovers can spare the directories of live runs. */
static bool cr_mkdtemp(char *dir, size_t len)
{
	const char *base = getenv("TMPDIR");
	struct stat sb;

	if (base == NULL || *base == '\0')
		base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) &&
		               access("/dev/shm", W_OK) == 0
		           ? "/dev/shm"
		           : "/tmp";
	snprintf(dir, len, "%s/raftkv-crash-%ld-XXXXXX", base, (long)getpid());
	return mkdtemp(dir) != NULL;
}

/* Removes the files in dir whose names start with prefix ("" for all). */
static void cr_clean_dir(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[600];

	while (d != NULL && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || strncmp(e->d_name, prefix, strlen(prefix)) != 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	if (d != NULL)
		closedir(d);
}

static unsigned char *cr_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	long size;

	*len = 0;
	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)size);
		if (buf != NULL && fread(buf, 1, (size_t)size, f) == (size_t)size)
			*len = (size_t)size;
	}
	fclose(f);
	if (*len == 0) {
		free(buf);
		buf = NULL;
	}
	return buf;
}

static void cr_options(store_options *o, uint64_t node, const char *vfs)
{
	store_options_init(o);
	o->cluster_id = CR_CLUSTER;
	o->node_id = node;
	o->vfs = vfs;
	o->wal_limit_pages = CR_WAL_LIMIT;
}

/* ------------------------------------------------------------------------------------------ */
/* Workload data                                                                              */
/* ------------------------------------------------------------------------------------------ */

static void cr_fill_random(cr_rng *g, unsigned char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)cr_next(g);
}

/* A kv command (most entries), an empty entry, a malformed payload, a conf change (refused by
 * the kv machine), or a session registration. Fills e's type, data (malloc'd) and len. */
static void cr_gen_data(cr_rng *g, raft_entry *e)
{
	static const int ops[] = {STORE_OP_PUT,    STORE_OP_PUT,    STORE_OP_PUT,
	                          STORE_OP_APPEND, STORE_OP_APPEND, STORE_OP_DELETE,
	                          STORE_OP_DELETE, STORE_OP_GET};
	uint64_t kind = cr_below(g, 20);
	unsigned char value[CR_MAX_VALUE];
	char key[8];
	store_command c = {0};
	void *buf = NULL;
	size_t len = 0;

	e->type = kind == 18 ? RAFT_ENTRY_CONF_CHANGE : RAFT_ENTRY_NORMAL;
	if (kind < 14) {
		c.op = ops[cr_below(g, sizeof(ops) / sizeof(ops[0]))];
		snprintf(key, sizeof(key), "k%02d", (int)cr_below(g, CR_KEYS));
		c.key = key;
		c.key_len = strlen(key);
		if (c.op == STORE_OP_PUT || c.op == STORE_OP_APPEND) {
			c.value_len = (size_t)cr_below(g, CR_MAX_VALUE);
			cr_fill_random(g, value, c.value_len);
			c.value = value;
		}
	} else if (kind == 19) {
		c.op = STORE_OP_REGISTER;
		c.client_id = 1 + cr_below(g, 3);
	}
	if (kind < 14 || kind == 19) {
		CU_ASSERT_FATAL(command_encode(&c, &buf, &len) == STORE_OK);
	} else if (kind >= 16) {
		len = 1 + (size_t)cr_below(g, 40);
		buf = malloc(len);
		CU_ASSERT_FATAL(buf != NULL);
		cr_fill_random(g, buf, len);
	}
	e->data = buf;
	e->len = len;
}

/* n new entries from index first, all of term term; the array is owned by the caller
 * (raft_entries_free). */
static raft_entry *cr_gen_entries(cr_rng *g, uint64_t first, uint64_t term, size_t n)
{
	raft_entry *ents = calloc(n, sizeof(*ents));

	CU_ASSERT_FATAL(ents != NULL);
	for (size_t i = 0; i < n; i++) {
		ents[i].index = first + i;
		ents[i].term = term;
		cr_gen_data(g, &ents[i]);
	}
	return ents;
}

/* ------------------------------------------------------------------------------------------ */
/* The peer's snapshot                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* Made once: the peer store applies CR_SNAP_INDEX entries and dumps a snapshot; the node under
 * test installs it. Everything here is owned by the fixture. */
typedef struct cr_fixture {
	bool ready;
	char dir[256];
	unsigned char *file; /* the snapshot file's bytes */
	size_t file_len;
	store_snapshot_id id;
	unsigned char id_buf[STORE_SNAPSHOT_ID_SIZE];
	raft_snapshot_metadata meta;
	cm_state state; /* the peer's kv at the snapshot */
} cr_fixture;

static cr_fixture cr_fx;

/* Asks s for a snapshot; while one is being dumped, blocks until the dump ends and asks
 * again. On STORE_OK the caller owns out->data. */
static int cr_await_snapshot(store *s, raft_snapshot *out)
{
	int rv = store_snapshot_request(s, out);

	for (int round = 0;
	     rv == RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE && round < CR_WAIT_ROUNDS; round++) {
		if (store_snapshot_wait(s, CR_WAIT_MS) != STORE_OK)
			break;
		rv = store_snapshot_request(s, out);
	}
	return rv;
}

/* The peer's log and applies: entries 1..CR_SNAP_INDEX, terms rising to CR_SNAP_TERM. */
static void cr_peer_fill(store *s, cm_state *m)
{
	cr_rng g = {UINT64_C(0x9eed)};
	raft_ready rd = {0};
	raft_entry *ents = NULL;
	uint64_t n = CR_SNAP_INDEX;

	ents = calloc(n, sizeof(*ents));
	CU_ASSERT_FATAL(ents != NULL);
	for (uint64_t i = 0; i < n; i++) {
		ents[i].index = i + 1;
		ents[i].term = 1 + (i * CR_SNAP_TERM) / n;
		cr_gen_data(&g, &ents[i]);
	}
	rd.entries = ents;
	rd.n_entries = n;
	rd.has_hard_state = true;
	rd.hard_state = (raft_hard_state){.term = CR_SNAP_TERM, .vote = CR_PEER, .commit = n};
	rd.must_sync = true;
	CU_ASSERT_EQUAL_FATAL(store_set_conf_state(s, &cr_conf), STORE_OK);
	m->cs = cr_conf;
	CU_ASSERT_EQUAL_FATAL(store_persist_ready(s, &rd), STORE_OK);
	CU_ASSERT_EQUAL_FATAL(store_apply(s, ents, n, NULL, NULL), STORE_OK);
	cm_persist(m, &rd);
	cm_apply_upto(m, n);
	raft_entries_free(ents, n);
}

static void cr_fixture_take(cr_fixture *fx, store *s, const raft_snapshot *snap)
{
	char *path = NULL;

	CU_ASSERT_EQUAL_FATAL(store_snapshot_id_decode(snap->data, snap->len, &fx->id), STORE_OK);
	CU_ASSERT_EQUAL_FATAL(store_snapshot_path(s, &fx->id, &path, NULL), STORE_OK);
	fx->file = cr_read_file(path, &fx->file_len);
	free(path);
	CU_ASSERT_FATAL(fx->file != NULL);
	memcpy(fx->id_buf, snap->data, STORE_SNAPSHOT_ID_SIZE);
	fx->meta = snap->metadata;
	CU_ASSERT_EQUAL(fx->meta.index, CR_SNAP_INDEX);
	CU_ASSERT_EQUAL(fx->meta.term, CR_SNAP_TERM);
}

/* Builds the fixture once; the peer's kv must match the model's (the model's semantics are
 * the store's). */
static bool cr_fixture_get(void)
{
	cr_fixture *fx = &cr_fx;
	char path[800], why[160], err[256];
	raft_snapshot snap = {0};
	store_options o;
	store *s = NULL;
	cm_state got;

	if (fx->ready)
		return true;
	CU_ASSERT_FATAL(cr_mkdtemp(fx->dir, sizeof(fx->dir)));
	snprintf(path, sizeof(path), "%s/node-%d.db", fx->dir, CR_PEER);
	cr_options(&o, CR_PEER, NULL);
	CU_ASSERT_EQUAL_FATAL(store_open(path, &o, &s, err, sizeof(err)), STORE_OK);
	cr_peer_fill(s, &fx->state);
	CU_ASSERT_EQUAL_FATAL(cr_await_snapshot(s, &snap), STORE_OK);
	cr_fixture_take(fx, s, &snap);
	raft_snapshot_clear(&snap);
	CU_ASSERT_EQUAL_FATAL(cm_load(s, &got, why, sizeof(why)), STORE_OK);
	fx->ready = cm_equal(&got, &fx->state, why, sizeof(why));
	if (!fx->ready)
		printf("\nstore_crash: the peer differs from the model: %s\n", why);
	CU_ASSERT(fx->ready);
	cm_free(&got);
	store_close(s);
	return fx->ready;
}

static void cr_fixture_free(void)
{
	if (cr_fx.dir[0] != '\0') {
		cr_clean_dir(cr_fx.dir, "");
		rmdir(cr_fx.dir);
	}
	free(cr_fx.file);
	cm_free(&cr_fx.state);
	memset(&cr_fx, 0, sizeof(cr_fx));
}

/* ------------------------------------------------------------------------------------------ */
/* The workload                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* What a run exercised (counted on success). */
typedef struct cr_counts {
	uint64_t readies;
	uint64_t conflicts;
	uint64_t commit_only;
	uint64_t votes;
	uint64_t applies;
	uint64_t compactions;
	uint64_t installs;
	uint64_t stale_above_snapshot; /* log rows above the snapshot an install removed */
	uint64_t dumps;
} cr_counts;

/*
 * One run of the workload on the store under test. m is the state after the last successful
 * call; cand holds every state a crash may leave: cand[0] is the last durable one (the state
 * after the last call the contract makes durable), then the states after each later
 * transaction, including those of the call that failed (a commit whose fsync failed may still
 * be on disk). All owned.
 */
typedef struct cr_run {
	store *s;
	char dir[256];
	char path[300];
	cr_rng g;
	uint64_t seed;
	uint64_t rounds;
	cm_state m;
	cm_state *cand;
	size_t n_cand;
	int rv;             /* the first failure, STORE_OK while none */
	const char *failed; /* the call that failed */
	bool dumps;         /* also request snapshots of the store (helper thread) */
	cr_counts counts;
} cr_run;

static void cr_cand_push(cr_run *r, const cm_state *st)
{
	cm_state *grown = realloc(r->cand, (r->n_cand + 1) * sizeof(*grown));

	CU_ASSERT_FATAL(grown != NULL);
	r->cand = grown;
	cm_copy(&r->cand[r->n_cand++], st);
}

static void cr_cand_clear(cr_run *r)
{
	for (size_t i = 0; i < r->n_cand; i++)
		cm_free(&r->cand[i]);
	free(r->cand);
	r->cand = NULL;
	r->n_cand = 0;
}

/* After a call whose successful outcome is next (owned; taken or freed). */
static bool cr_after(cr_run *r, int rv, cm_state *next, bool durable, const char *what)
{
	if (rv != STORE_OK) {
		r->rv = rv;
		r->failed = what;
		cm_free(next);
		return false;
	}
	cm_free(&r->m);
	r->m = *next;
	if (durable) {
		cr_cand_clear(r);
		cr_cand_push(r, &r->m);
	}
	return true;
}

/* Persists rd; the model follows. */
static bool cr_persist(cr_run *r, const raft_ready *rd, const char *what)
{
	bool durable = rd->must_sync || rd->has_snapshot || rd->n_entries > 0;
	cm_state next;

	cm_copy(&next, &r->m);
	if (rd->has_snapshot)
		cm_install(&next, &cr_fx.state, rd);
	cm_persist(&next, rd);
	cr_cand_push(r, &next);
	return cr_after(r, store_persist_ready(r->s, rd), &next, durable, what);
}

/* Persists n generated entries from first, all of hs.term, with hard state hs. */
static bool cr_append_entries(cr_run *r, uint64_t first, size_t n, const raft_hard_state *hs)
{
	uint64_t last = cm_last(&r->m);
	raft_ready rd = {.must_sync = true, .n_entries = n, .hard_state = *hs};
	bool ok;

	rd.entries = cr_gen_entries(&r->g, first, hs->term, n);
	rd.has_hard_state = memcmp(hs, &r->m.hs, sizeof(*hs)) != 0;
	ok = cr_persist(r, &rd, first <= last ? "persist (conflicting suffix)" : "persist");
	raft_entries_free(rd.entries, rd.n_entries);
	r->counts.readies += ok;
	r->counts.conflicts += ok && first <= last;
	return ok;
}

/* A leader's entries: usually appended, sometimes (a new leader, a new term) overwriting the
 * uncommitted suffix. The commit index may move with them. */
static bool cr_append(cr_run *r)
{
	const cm_state *m = &r->m;
	uint64_t last = cm_last(m), first = last + 1;
	raft_hard_state hs = m->hs;
	size_t n;

	if (hs.term == 0)
		hs = (raft_hard_state){.term = 1, .vote = CR_NODE};
	if (last > m->hs.commit && cr_below(&r->g, 3) == 0) {
		first = m->hs.commit + 1 + cr_below(&r->g, last - m->hs.commit);
		hs.term++;
		hs.vote = 1 + cr_below(&r->g, 3);
	}
	n = 1 + (size_t)cr_below(&r->g, 5);
	hs.commit += cr_below(&r->g, 3);
	if (hs.commit > first + n - 1)
		hs.commit = first + n - 1;
	return cr_append_entries(r, first, n, &hs);
}

/* A vote in a new term: a hard state change that must be durable, without entries. */
static bool cr_vote(cr_run *r)
{
	raft_ready rd = {.has_hard_state = true, .hard_state = r->m.hs, .must_sync = true};

	rd.hard_state.term++;
	rd.hard_state.vote = 1 + cr_below(&r->g, 3);
	r->counts.votes++;
	return cr_persist(r, &rd, "persist (vote)");
}

/* A commit-only hard state change: no fsync required. */
static bool cr_commit_only(cr_run *r)
{
	uint64_t last = cm_last(&r->m), commit = r->m.hs.commit;
	raft_ready rd = {.has_hard_state = true, .hard_state = r->m.hs};

	if (commit >= last)
		return true;
	rd.hard_state.commit = commit + 1 + cr_below(&r->g, last - commit);
	r->counts.commit_only++;
	return cr_persist(r, &rd, "persist (commit only)");
}

/* Applies (applied, upto] in one call. */
static bool cr_apply_batch(cr_run *r, uint64_t upto)
{
	size_t n = (size_t)(upto - r->m.applied_index);
	raft_entry *ents = calloc(n, sizeof(*ents));
	cm_state next;
	int rv;

	CU_ASSERT_FATAL(ents != NULL);
	for (size_t i = 0; i < n; i++) {
		const cm_entry *e = cm_entry_at(&r->m, r->m.applied_index + 1 + i);

		ents[i] = (raft_entry){e->type, e->term, e->index, e->data, e->len};
	}
	cm_copy(&next, &r->m);
	cm_apply_upto(&next, upto);
	cr_cand_push(r, &next);
	rv = store_apply(r->s, ents, n, NULL, NULL);
	free(ents);
	r->counts.applies++;
	return cr_after(r, rv, &next, false, "apply");
}

/* Applies the committed entries, in one or two calls. */
static bool cr_apply(cr_run *r)
{
	uint64_t applied = r->m.applied_index, commit = r->m.hs.commit;
	uint64_t mid = applied + 1 + cr_below(&r->g, commit - applied);

	if (commit <= applied)
		return true;
	if (mid < commit && !cr_apply_batch(r, mid))
		return false;
	return cr_apply_batch(r, commit);
}

/* Compacts to a random applied index in chunks of 1 to 3 rows: one call and one transaction
 * each, as a node spreads a large GC over its loop. */
static bool cr_compact(cr_run *r)
{
	uint64_t trunc = r->m.trunc_index, applied = r->m.applied_index, upto, chunk;
	bool more = true;
	int rv = STORE_OK;
	cm_state next;

	if (applied <= trunc)
		return true;
	upto = trunc + 1 + cr_below(&r->g, applied - trunc);
	chunk = 1 + cr_below(&r->g, 3);
	cm_copy(&next, &r->m);
	while (next.trunc_index < upto) {
		uint64_t to = next.trunc_index + chunk < upto ? next.trunc_index + chunk : upto;

		cm_compact(&next, to);
		cr_cand_push(r, &next);
	}
	r->counts.compactions++;
	while (rv == STORE_OK && more)
		rv = store_compact(r->s, upto, (size_t)chunk, &more);
	return cr_after(r, rv, &next, false, "compact");
}

/* Starts a dump on the store's helper thread (it reads on its own connection while the
 * workload goes on), or takes a finished one. */
static void cr_dump(cr_run *r)
{
	raft_snapshot snap = {0};
	int rv = store_snapshot_request(r->s, &snap);

	r->counts.dumps += rv == STORE_OK;
	raft_snapshot_clear(&snap);
}

static bool cr_checkpoint(cr_run *r)
{
	cm_state next;

	if (r->dumps)
		cr_dump(r);
	cm_copy(&next, &r->m);
	return cr_after(r, store_maybe_checkpoint(r->s), &next, false, "checkpoint");
}

/* Stages the peer's snapshot (files outside SQLite, synced by the store) and persists the
 * Ready that carries it, with 0 to 2 new entries after it. */
static bool cr_install(cr_run *r)
{
	const cr_fixture *fx = &cr_fx;
	raft_ready rd = {.has_snapshot = true, .must_sync = true, .has_hard_state = true};
	int rv = store_staging_begin(r->s, &fx->id);
	bool ok;

	if (rv == STORE_OK)
		rv = store_staging_write(r->s, &fx->id, 0, fx->file, fx->file_len);
	if (rv == STORE_OK)
		rv = store_staging_finish(r->s, &fx->id);
	if (rv != STORE_OK) {
		r->rv = rv;
		r->failed = "staging";
		return false;
	}
	rd.snapshot.metadata = fx->meta;
	rd.snapshot.data = (void *)fx->id_buf;
	rd.snapshot.len = sizeof(fx->id_buf);
	rd.hard_state = r->m.hs;
	if (rd.hard_state.term < fx->meta.term)
		rd.hard_state = (raft_hard_state){.term = fx->meta.term, .vote = CR_PEER};
	rd.hard_state.commit = fx->meta.index;
	rd.n_entries = (size_t)cr_below(&r->g, 3);
	rd.entries = cr_gen_entries(&r->g, fx->meta.index + 1, rd.hard_state.term, rd.n_entries);
	r->counts.installs++;
	if (cm_last(&r->m) > fx->meta.index)
		r->counts.stale_above_snapshot += cm_last(&r->m) - fx->meta.index;
	ok = cr_persist(r, &rd, "persist (snapshot install)");
	raft_entries_free(rd.entries, rd.n_entries);
	return ok;
}

/* One round: in its round, entries past the snapshot's index (stale once it is installed)
 * and the install; else maybe a vote, entries, maybe a commit-only change, applies, maybe a
 * compaction, then a checkpoint if the WAL grew. */
static bool cr_round(cr_run *r, uint64_t round)
{
	uint64_t last = cm_last(&r->m);

	if (round == CR_INSTALL_ROUND && last <= cr_fx.meta.index &&
	    !cr_append_entries(r, last + 1, (size_t)(cr_fx.meta.index + 3 - last), &r->m.hs))
		return false;
	if (round == CR_INSTALL_ROUND)
		return cr_install(r) && cr_checkpoint(r);
	if (cr_below(&r->g, 6) == 0 && !cr_vote(r))
		return false;
	if (!cr_append(r))
		return false;
	if (cr_below(&r->g, 2) == 0 && !cr_commit_only(r))
		return false;
	if (cr_below(&r->g, 4) != 0 && !cr_apply(r))
		return false;
	if (cr_below(&r->g, 3) == 0 && !cr_compact(r))
		return false;
	return cr_checkpoint(r);
}

/* Records the membership, as a node does once when its cluster is created: durable. */
static bool cr_set_conf(cr_run *r)
{
	cm_state next;

	cm_copy(&next, &r->m);
	next.cs = cr_conf;
	cr_cand_push(r, &next);
	return cr_after(r, store_set_conf_state(r->s, &cr_conf), &next, true, "set conf state");
}

/* Runs the rounds until one call fails (r->rv) or all are done. */
static void cr_workload(cr_run *r)
{
	r->g.s = r->seed;
	if (!cr_set_conf(r))
		return;
	for (uint64_t i = 0; i < r->rounds; i++)
		if (!cr_round(r, i))
			return;
}

/* ------------------------------------------------------------------------------------------ */
/* Runs and checks                                                                            */
/* ------------------------------------------------------------------------------------------ */

static void cr_close(cr_run *r)
{
	store_close(r->s);
	r->s = NULL;
}

static int cr_open(cr_run *r, char *err, size_t len)
{
	store_options o;

	cr_options(&o, CR_NODE, VFS_FAULT_NAME);
	return store_open(r->path, &o, &r->s, err, len);
}

/* A fresh store in r->dir (files of an earlier run removed) with an empty model; vfs_seed
 * seeds the crash's choices. */
/* Whether r->dir vanished: removed from outside the process (a cleanup of /dev/shm while the
 * suite runs; nothing in the store or the suite removes it before the end). It is made again
 * so the loop goes on. */
static bool cr_dir_lost(const cr_run *r)
{
	struct stat sb;

	if (stat(r->dir, &sb) == 0)
		return false;
	printf("\nstore_crash: %s was removed from outside the test; made again\n", r->dir);
	CU_ASSERT_FATAL(mkdir(r->dir, 0700) == 0 || errno == EEXIST);
	return true;
}

/* Creates the store in an empty r->dir. No fault is armed yet, so a failure means the files
 * were removed from outside while the store was being created: one more attempt. */
static int cr_create(cr_run *r, uint64_t vfs_seed, char *err, size_t len)
{
	int rv = STORE_OK;

	for (int attempt = 0; attempt < 2; attempt++) {
		if (attempt > 0)
			printf("\nstore_crash: creating %s failed (%s); once more\n", r->path, err);
		cr_dir_lost(r);
		cr_clean_dir(r->dir, "");
		vfs_fault_reset(vfs_seed);
		rv = cr_open(r, err, len);
		if (rv == STORE_OK)
			break;
	}
	return rv;
}

static void cr_start(cr_run *r, uint64_t seed, uint64_t rounds, uint64_t vfs_seed)
{
	char err[256] = "";

	cr_close(r);
	cm_free(&r->m);
	cr_cand_clear(r);
	r->seed = seed;
	r->rounds = rounds;
	r->rv = STORE_OK;
	r->failed = NULL;
	memset(&r->counts, 0, sizeof(r->counts));
	if (cr_create(r, vfs_seed, err, sizeof(err)) != STORE_OK)
		printf("\nstore_crash: cannot create %s: %s\n", r->path, err);
	CU_ASSERT_FATAL(r->s != NULL);
	cr_cand_push(r, &r->m);
}

static uint64_t cr_mutations(void)
{
	vfs_fault_stats st;

	vfs_fault_stats_get(&st);
	return st.writes + st.syncs + st.truncates + st.deletes;
}

/* Which candidate the store holds, or -1 (why then compares with the last one). */
static long cr_match(const cr_run *r, const cm_state *got, char *why, size_t len)
{
	for (size_t i = r->n_cand; i-- > 0;)
		if (cm_equal(got, &r->cand[i], why, len))
			return (long)i;
	cm_equal(got, &r->cand[r->n_cand - 1], why, len);
	return -1;
}

/* The recovered store keeps working: replaying the committed entries above the applied index
 * gives the model's kv, and a new entry persists. */
static bool cr_resume(cr_run *r, const cm_state *base, char *why, size_t len)
{
	cm_state got;
	bool ok;

	cm_free(&r->m);
	cm_copy(&r->m, base);
	r->rv = STORE_OK;
	r->failed = NULL;
	ok = cr_apply(r) && cr_append(r) && cr_apply(r);
	if (!ok) {
		snprintf(why, len, "resume: %s failed: %s (%s)", r->failed, store_strerror(r->rv),
		         store_errmsg(r->s));
		return false;
	}
	if (cm_load(r->s, &got, why, len) != STORE_OK)
		return false;
	ok = cm_equal(&got, &r->m, why, len);
	cm_free(&got);
	return ok;
}

/* Reopens after a crash or an error and checks the store. Returns true if all is well. */
static bool cr_verify(cr_run *r, char *why, size_t len)
{
	char err[256] = "";
	cm_state got;
	long at;
	int rv = cr_open(r, err, sizeof(err));
	bool ok;

	if (rv != STORE_OK) {
		snprintf(why, len, "reopen: %s: %s", store_strerror(rv), err);
		return false;
	}
	if (cm_load(r->s, &got, why, len) != STORE_OK)
		return false;
	ok = cm_invariants(&got, why, len);
	at = ok ? cr_match(r, &got, why, len) : -1;
	if (at >= 0)
		ok = cr_resume(r, &r->cand[at], why, len);
	else
		ok = false;
	cm_free(&got);
	return ok;
}

/* Prints a failed check with what reproduces it. */
static void cr_report(const cr_run *r, const char *kind, uint64_t k, const char *why)
{
	printf("\nstore_crash: %s at mutation %" PRIu64 ", seed %" PRIu64 ", %" PRIu64
	       " rounds: the workload stopped at %s (%s); %zu candidate states; %s\n"
	       "  reproduce: RAFTKV_CRASH_SEED=%" PRIu64 " RAFTKV_CRASH_SEEDS=1 "
	       "RAFTKV_CRASH_STEPS=%" PRIu64 "\n",
	       kind, k, r->seed, r->rounds, r->failed ? r->failed : "the end",
	       store_strerror(r->rv), r->n_cand, why, r->seed, r->rounds);
}

/* Runs the whole workload once without faults; returns the mutations it makes. */
static uint64_t cr_dry_run(cr_run *r, uint64_t seed, uint64_t rounds)
{
	char why[256] = "";
	uint64_t n;

	cr_start(r, seed, rounds, seed);
	vfs_fault_stats_reset();
	cr_workload(r);
	n = cr_mutations();
	if (r->rv != STORE_OK)
		cr_report(r, "dry run", 0, why);
	CU_ASSERT_EQUAL(r->rv, STORE_OK);
	cr_close(r);
	CU_ASSERT_EQUAL(vfs_fault_crash(VFS_FAULT_CRASH_DROP), SQLITE_OK);
	if (!cr_verify(r, why, sizeof(why)))
		cr_report(r, "dry run", 0, why);
	cr_close(r);
	return n;
}

static void cr_run_init(cr_run *r)
{
	memset(r, 0, sizeof(*r));
	CU_ASSERT_FATAL(cr_mkdtemp(r->dir, sizeof(r->dir)));
	snprintf(r->path, sizeof(r->path), "%s/node-%d.db", r->dir, CR_NODE);
}

static void cr_run_free(cr_run *r)
{
	cr_close(r);
	cm_free(&r->m);
	cr_cand_clear(r);
	cr_clean_dir(r->dir, "");
	rmdir(r->dir);
}

/* ------------------------------------------------------------------------------------------ */
/* The loops                                                                                  */
/* ------------------------------------------------------------------------------------------ */

#define CR_MAX_REPORTS 5 /* failures printed per loop */

typedef struct cr_loop {
	uint64_t seed;
	uint64_t rounds;
	uint64_t stride;   /* fault points: 1, 1 + stride, ... (0 means 1) */
	bool dumps;        /* snapshot dumps run beside the workload */
	uint64_t points;   /* fault points tried */
	uint64_t failures; /* checks that failed */
	uint64_t lost;     /* points skipped: the directory was removed from outside */
} cr_loop;

/* After a crash or error at point k: verifies the reopened store, reporting a failure. */
static void cr_check_point(cr_run *r, cr_loop *l, const char *kind, uint64_t k)
{
	const char *failed = r->failed;
	int rv = r->rv;
	char why[512] = "";
	bool ok = cr_verify(r, why, sizeof(why));

	l->points++;
	if (ok)
		return;
	if (cr_dir_lost(r)) {
		l->lost++;
		return;
	}
	r->failed = failed;
	r->rv = rv;
	if (l->failures++ < CR_MAX_REPORTS)
		cr_report(r, kind, k, why);
}

static void cr_print_counts(const cr_counts *c, uint64_t mutations)
{
	printf("\n  workload: %" PRIu64 " mutations; %" PRIu64 " readies (%" PRIu64
	       " conflicting), %" PRIu64 " commit-only, %" PRIu64 " votes, %" PRIu64
	       " applies, %" PRIu64 " compactions, %" PRIu64 " installs (%" PRIu64
	       " stale rows above), %" PRIu64 " dumps",
	       mutations, c->readies, c->conflicts, c->commit_only, c->votes, c->applies,
	       c->compactions, c->installs, c->stale_above_snapshot, c->dumps);
}

/* Power cut right after the k-th mutation, for every k; the crash mode rotates. */
static void cr_crash_loop(cr_loop *l)
{
	static const vfs_fault_crash_mode modes[] = {VFS_FAULT_CRASH_DROP, VFS_FAULT_CRASH_TEAR,
	                                             VFS_FAULT_CRASH_SCRAMBLE};
	static const char *const names[] = {"crash (drop)", "crash (torn write)",
	                                    "crash (scrambled sectors)"};
	cr_run r;
	uint64_t total;

	cr_run_init(&r);
	r.dumps = l->dumps;
	total = cr_dry_run(&r, l->seed, l->rounds);
	cr_print_counts(&r.counts, total);
	CU_ASSERT(total > 0);
	for (uint64_t k = 1; k <= total; k += l->stride > 0 ? l->stride : 1) {
		size_t mode = (size_t)(k % 3);

		cr_start(&r, l->seed, l->rounds, l->seed * 1000003 + k);
		vfs_fault_crash_after(VFS_FAULT_MUTATION, k);
		cr_workload(&r);
		cr_close(&r);
		CU_ASSERT_EQUAL_FATAL(vfs_fault_crash(modes[mode]), SQLITE_OK);
		cr_check_point(&r, l, names[mode], k);
		cr_close(&r);
	}
	cr_run_free(&r);
}

/* Every call after a failure is refused: the store fail-stopped. */
static bool cr_fail_stopped(cr_run *r, int want)
{
	raft_ready rd = {.has_hard_state = true, .hard_state = r->m.hs};

	rd.hard_state.commit++;
	return store_failed(r->s) == want && store_persist_ready(r->s, &rd) == STORE_ERR_FAILED &&
	       store_apply(r->s, NULL, 0, NULL, NULL) == STORE_ERR_FAILED &&
	       store_compact(r->s, r->m.applied_index, 0, NULL) == STORE_ERR_FAILED &&
	       store_maybe_checkpoint(r->s) == STORE_ERR_FAILED;
}

typedef struct cr_fault {
	const char *name;
	int mask;
	int rc;   /* what the VFS returns */
	int want; /* what the store must return */
} cr_fault;

/* Operations of f's class in a dry run of l's workload. */
static uint64_t cr_fault_ops(cr_loop *l, const cr_fault *f)
{
	vfs_fault_stats st;
	cr_run r;

	cr_run_init(&r);
	cr_start(&r, l->seed, l->rounds, l->seed);
	vfs_fault_stats_reset();
	cr_workload(&r);
	vfs_fault_stats_get(&st);
	cr_run_free(&r);
	return f->mask == VFS_FAULT_READ   ? st.reads
	       : f->mask == VFS_FAULT_SYNC ? st.syncs
	                                   : st.writes;
}

/* The k-th operation of f's class fails, for k = 1, 1 + stride, ...: the call returns f->want,
 * the store fail-stops, and after a restart (every other time with a power cut too) the store
 * holds a state a crash may leave, and works. */
static void cr_error_loop(cr_loop *l, const cr_fault *f, uint64_t stride)
{
	uint64_t total = cr_fault_ops(l, f);
	cr_run r;

	cr_run_init(&r);
	for (uint64_t k = 1; k <= total; k += stride) {
		cr_start(&r, l->seed, l->rounds, l->seed * 1000003 + k);
		vfs_fault_fail_after(f->mask, k, f->rc);
		cr_workload(&r);
		if (r.rv != f->want || !cr_fail_stopped(&r, f->want)) {
			if (l->failures++ < CR_MAX_REPORTS)
				cr_report(&r, f->name, k, "wrong error, or no fail-stop");
			continue;
		}
		cr_close(&r);
		vfs_fault_clear();
		if (k % 2 == 0)
			CU_ASSERT_EQUAL_FATAL(vfs_fault_crash(VFS_FAULT_CRASH_DROP), SQLITE_OK);
		cr_check_point(&r, l, f->name, k);
		cr_close(&r);
	}
	cr_run_free(&r);
}

/* With the disk still full, a reopen either refuses cleanly (STORE_ERR_FULL) or opens a store
 * that reads a state a crash may leave and refuses the next write with STORE_ERR_FULL. */
static bool cr_reopen_full(cr_run *r, char *why, size_t len)
{
	char err[256] = "";
	cm_state got;
	int rv = cr_open(r, err, sizeof(err));
	bool ok;

	if (rv != STORE_OK) {
		snprintf(why, len, "reopen on a full disk: %s: %s", store_strerror(rv), err);
		return rv == STORE_ERR_FULL;
	}
	if (cm_load(r->s, &got, why, len) != STORE_OK)
		return false;
	ok = cr_match(r, &got, why, len) >= 0;
	cm_free(&got);
	cm_free(&r->m);
	cm_copy(&r->m, &r->cand[r->n_cand - 1]);
	r->rv = STORE_OK;
	if (ok && (cr_vote(r) || r->rv != STORE_ERR_FULL || !cr_fail_stopped(r, STORE_ERR_FULL))) {
		snprintf(why, len, "a write on a full disk: %s", store_strerror(r->rv));
		ok = false;
	}
	cr_close(r);
	return ok;
}

/* The disk fills up at the k-th write and stays full across a restart; then space comes back. */
static void cr_full_loop(cr_loop *l)
{
	static const cr_fault f = {"disk stays full", VFS_FAULT_WRITE, SQLITE_FULL, STORE_ERR_FULL};
	uint64_t total = cr_fault_ops(l, &f);
	char why[512];
	cr_run r;

	cr_run_init(&r);
	for (uint64_t k = 1; k <= total; k += l->stride > 0 ? l->stride : 1) {
		cr_start(&r, l->seed, l->rounds, l->seed * 1000003 + k);
		vfs_fault_fail_from(f.mask, k, f.rc);
		cr_workload(&r);
		bool ok = r.rv == f.want && cr_fail_stopped(&r, f.want);
		cr_close(&r);
		if (ok && !cr_reopen_full(&r, why, sizeof(why)))
			ok = false;
		else if (!ok)
			snprintf(why, sizeof(why), "wrong error, or no fail-stop");
		vfs_fault_clear();
		if (!ok && cr_dir_lost(&r)) {
			l->lost++;
			continue;
		}
		if (!ok && l->failures++ < CR_MAX_REPORTS)
			cr_report(&r, f.name, k, why);
		cr_check_point(&r, l, f.name, k);
		cr_close(&r);
	}
	cr_run_free(&r);
}

/* Power cut during the creation of a new store: reopening works and gives an empty store. */
static void cr_create_loop(cr_loop *l)
{
	cm_state empty = {0};
	char err[256];
	cr_run r;

	cr_run_init(&r);
	for (uint64_t k = 1;; k++) {
		cr_start(&r, l->seed, l->rounds, k);
		cr_close(&r);
		cr_clean_dir(r.dir, "");
		vfs_fault_crash_after(VFS_FAULT_MUTATION, k);
		bool created = cr_open(&r, err, sizeof(err)) == STORE_OK;
		bool down = vfs_fault_is_down();
		cr_close(&r);
		CU_ASSERT_EQUAL_FATAL(vfs_fault_crash((vfs_fault_crash_mode)(k % 3)), SQLITE_OK);
		cr_cand_clear(&r);
		cr_cand_push(&r, &empty);
		cr_check_point(&r, l, "crash during creation", k);
		if (created && !down)
			break;
	}
	cr_run_free(&r);
}

/* ------------------------------------------------------------------------------------------ */
/* Tests                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static uint64_t cr_seeds(uint64_t *first)
{
	*first = cr_env("RAFTKV_CRASH_SEED", 1);
	return cr_env("RAFTKV_CRASH_SEEDS", 2);
}

static uint64_t cr_rounds(void)
{
	return cr_env("RAFTKV_CRASH_STEPS", CR_DEFAULT_ROUNDS);
}

static void cr_summary(const char *what, const cr_loop *l)
{
	printf("\n  %s: seed %" PRIu64 ", %" PRIu64 " rounds, %" PRIu64 " points, %" PRIu64
	       " failed ",
	       what, l->seed, l->rounds, l->points, l->failures);
	if (l->lost > 0)
		printf("(%" PRIu64 " skipped: directory removed from outside) ", l->lost);
	CU_ASSERT_EQUAL(l->failures, 0);
}

static void test_crash_create(void)
{
	cr_loop l = {.seed = 1, .rounds = 1};

	cr_create_loop(&l);
	cr_summary("creation", &l);
}

static void test_crash_every_mutation(void)
{
	uint64_t first, seeds = cr_seeds(&first);

	if (!cr_fixture_get())
		return;
	for (uint64_t seed = first; seed < first + seeds; seed++) {
		cr_loop l = {.seed = seed, .rounds = cr_rounds()};

		cr_crash_loop(&l);
		cr_summary("power cuts", &l);
	}
}

/* The same with snapshot dumps on the helper thread: its timing makes the mutation count vary,
 * so this samples crash points instead of reproducing them exactly. */
static void test_crash_with_dumps(void)
{
	uint64_t first;

	cr_seeds(&first);
	if (!cr_fixture_get())
		return;
	cr_loop l = {.seed = first, .rounds = cr_rounds(), .stride = 7, .dumps = true};

	cr_crash_loop(&l);
	cr_summary("power cuts with dumps", &l);
}

static void cr_error_test(const cr_fault *f, uint64_t stride)
{
	uint64_t first, seeds = cr_seeds(&first);

	if (!cr_fixture_get())
		return;
	for (uint64_t seed = first; seed < first + seeds; seed++) {
		cr_loop l = {.seed = seed, .rounds = cr_rounds()};

		cr_error_loop(&l, f, stride);
		cr_summary(f->name, &l);
	}
}

static void test_error_write_ioerr(void)
{
	static const cr_fault f = {"write error", VFS_FAULT_WRITE, SQLITE_IOERR_WRITE,
	                           STORE_ERR_IO};

	cr_error_test(&f, 1);
}

static void test_error_write_full(void)
{
	static const cr_fault f = {"disk full", VFS_FAULT_WRITE, SQLITE_FULL, STORE_ERR_FULL};

	cr_error_test(&f, 1);
}

static void test_error_sync(void)
{
	static const cr_fault f = {"fsync error", VFS_FAULT_SYNC, SQLITE_IOERR_FSYNC, STORE_ERR_IO};

	cr_error_test(&f, 1);
}

static void test_error_read(void)
{
	static const cr_fault f = {"read error", VFS_FAULT_READ, SQLITE_IOERR_READ, STORE_ERR_IO};

	cr_error_test(&f, 1);
}

static void test_disk_stays_full(void)
{
	uint64_t first;

	cr_seeds(&first);
	if (!cr_fixture_get())
		return;
	cr_loop l = {.seed = first, .rounds = cr_rounds(), .stride = 5};

	cr_full_loop(&l);
	cr_summary("disk stays full", &l);
}

static int cr_suite_init(void)
{
	if (vfs_fault_register(NULL) != SQLITE_OK)
		return -1;
	vfs_fault_set_host_sync(false);
	return 0;
}

static int cr_suite_clean(void)
{
	cr_fixture_free();
	vfs_fault_set_host_sync(true);
	vfs_fault_unregister();
	return 0;
}

void test_register_store_crash(void)
{
	CU_pSuite s = CU_add_suite("store_crash", cr_suite_init, cr_suite_clean);

	CU_add_test(s, "power cut during creation", test_crash_create);
	CU_add_test(s, "power cut after every mutation", test_crash_every_mutation);
	CU_add_test(s, "power cut with snapshot dumps running", test_crash_with_dumps);
	CU_add_test(s, "write error fail-stops", test_error_write_ioerr);
	CU_add_test(s, "full disk fail-stops", test_error_write_full);
	CU_add_test(s, "disk that stays full across a restart", test_disk_stays_full);
	CU_add_test(s, "fsync error fail-stops", test_error_sync);
	CU_add_test(s, "read error fail-stops", test_error_read);
}
