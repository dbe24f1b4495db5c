/* store_bench.c - store throughput (Ready persistence, apply) beside plain SQLite loops. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "raft.h"
#include "store/command.h"
#include "store/store.h"
/* For STORE_SCHEMA_SQL (the plain loops use the store's own tables) and s->db (to read the
 * pragmas the store chose). */
#include "store/store_internal.h"

#define ENTRY_SIZE         256
#define POOL_SIZE          1024 /* distinct payloads and values, reused */
#define APPLY_BATCH        64
#define N_KEYS             100000
#define KEY_SIZE           16
#define PRELOAD_BATCH      1024
#define TERM               3
#define MAX_ROUNDS         100
#define WARMUP_MAX_SECONDS 20.0
#define PATH_CAP           4096
#define COUNT_VFS          "store-bench-count"
#define N_PERSIST          3

static const size_t persist_batches[N_PERSIST] = {1, 64, 1024};

typedef struct options {
	double seconds; /* measured time per side and case, split over the rounds */
	int rounds;
	uint64_t seed;
	const char *parent; /* where the run's directory is made */
	bool keep;
	bool json;
} options;

/* One side's totals over its rounds. */
typedef struct tally {
	uint64_t entries;
	uint64_t batches;
	uint64_t syncs;
	double busy; /* seconds inside the measured calls */
	double best; /* entries/s of the best round */
} tally;

/* One measured side: prep (untimed, may be NULL) builds a batch, run (timed) writes it. Both
 * print their own error and return -1 on failure. */
typedef struct side {
	int (*prep)(void *ctx);
	int (*run)(void *ctx, size_t *n);
	void *ctx;
	tally t;     /* all rounds */
	tally round; /* the round in progress */
} side;

/* A plain SQLite connection with its prepared statements. */
typedef struct plain {
	sqlite3 *db;
	sqlite3_stmt *begin;
	sqlite3_stmt *commit;
	sqlite3_stmt *row;   /* one row of a batch */
	sqlite3_stmt *state; /* the one-row state update of a batch */
} plain;

typedef struct persist_ctx {
	size_t batch;
	const unsigned char *pool;
	raft_entry *ents;
	uint64_t next; /* index of the next entry */
	store *s;      /* the store side, or NULL */
	plain p;       /* the plain side */
} persist_ctx;

typedef struct apply_ctx {
	const unsigned char *keys; /* N_KEYS * KEY_SIZE */
	const unsigned char *pool;
	uint64_t rng;
	size_t batch;
	uint32_t key[PRELOAD_BATCH];
	uint32_t value[PRELOAD_BATCH];
	raft_entry ents[PRELOAD_BATCH];
	uint64_t client; /* 0: no session */
	uint64_t epoch;
	uint64_t seq;
	uint64_t next; /* plain side: index of the next entry */
	uint64_t bad;  /* results other than STORE_RESULT_OK */
	store *s;
	plain p;
} apply_ctx;

typedef struct settings {
	long long page_size, cache_size, secure_delete, autockpt, size_limit;
} settings;

typedef struct report {
	char dir[PATH_CAP];
	unsigned long fs_type;
	tally persist[N_PERSIST][2]; /* [batch][0: store, 1: plain] */
	tally apply[3];              /* no session, session, plain */
	settings store_set;
	long long plain_autockpt;
} report;

static uint64_t count_syncs;

/* ---- utilities ---- */

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

static void fill_random(unsigned char *buf, size_t len, uint64_t *state)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)splitmix64(state);
}

static int store_fail(store *s, const char *what, int rv)
{
	fprintf(stderr, "store-bench: %s: %s: %s\n", what, store_strerror(rv), store_errmsg(s));
	return -1;
}

static int sqlite_fail(sqlite3 *db, const char *what, int rc)
{
	fprintf(stderr, "store-bench: %s: %s (sqlite %d)\n", what,
	        db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc), rc);
	return -1;
}

/* out: PATH_CAP bytes. -1 (with a message) if the path does not fit. */
static int path_join(char *out, const char *dir, const char *name)
{
	int n = snprintf(out, PATH_CAP, "%s/%s", dir, name);

	if (n >= 0 && n < PATH_CAP)
		return 0;
	fprintf(stderr, "store-bench: path too long: %s/%s\n", dir, name);
	return -1;
}

/* ---- a VFS that counts syncs: the default VFS with every file's xSync wrapped ---- */

/* A copy of a real method table; files opened through the counting VFS point at m. */
typedef struct count_methods {
	sqlite3_io_methods m;
	const sqlite3_io_methods *real;
} count_methods;

#define COUNT_TABLES 8
static count_methods count_tables[COUNT_TABLES];
static size_t count_n_tables;
static sqlite3_vfs count_vfs;
static sqlite3_vfs *count_real;

static int count_sync(sqlite3_file *f, int flags)
{
	const count_methods *cm = (const count_methods *)f->pMethods;

	count_syncs++;
	return cm->real->xSync(f, flags);
}

static const sqlite3_io_methods *count_wrap(const sqlite3_io_methods *real)
{
	for (size_t k = 0; k < count_n_tables; k++)
		if (count_tables[k].real == real)
			return &count_tables[k].m;
	if (count_n_tables == COUNT_TABLES)
		return real;
	count_tables[count_n_tables].m = *real;
	count_tables[count_n_tables].m.xSync = count_sync;
	count_tables[count_n_tables].real = real;
	return &count_tables[count_n_tables++].m;
}

static int count_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
                      int *out_flags)
{
	int rc = count_real->xOpen(count_real, name, f, flags, out_flags);

	(void)vfs;
	if (f->pMethods != NULL)
		f->pMethods = count_wrap(f->pMethods);
	return rc;
}

static int count_vfs_register(void)
{
	count_real = sqlite3_vfs_find(NULL);
	if (count_real == NULL)
		return sqlite_fail(NULL, "no default VFS", SQLITE_ERROR);
	count_vfs = *count_real;
	count_vfs.zName = COUNT_VFS;
	count_vfs.xOpen = count_open;
	return sqlite3_vfs_register(&count_vfs, 0) == SQLITE_OK ? 0 : -1;
}

/* ---- the run's directory ---- */

static const char *fs_name(unsigned long type)
{
	switch (type) {
	case 0xEF53:
		return "ext2/ext3/ext4";
	case 0x58465342:
		return "xfs";
	case 0x9123683E:
		return "btrfs";
	case 0x2FC12FC1:
		return "zfs";
	case 0xF2F52010:
		return "f2fs";
	case 0x01021994:
		return "tmpfs";
	case 0x858458F6:
		return "ramfs";
	case 0x794C7630:
		return "overlayfs";
	case 0x6969:
		return "nfs";
	case 0x65735546:
		return "fuse";
	default:
		return "unknown";
	}
}

static bool fs_is_memory(unsigned long type)
{
	return type == 0x01021994 || type == 0x858458F6;
}

/* Makes a fresh directory under parent (created if missing) into r->dir. */
static int dir_create(const char *parent, report *r)
{
	struct statfs st;

	if (mkdir(parent, 0777) != 0 && errno != EEXIST)
		goto fail;
	if (path_join(r->dir, parent, "store-bench-XXXXXX") != 0) {
		r->dir[0] = '\0';
		return -1;
	}
	if (mkdtemp(r->dir) == NULL)
		goto fail;
	if (statfs(r->dir, &st) != 0) {
		fprintf(stderr, "store-bench: statfs %s: %s\n", r->dir, strerror(errno));
		rmdir(r->dir);
		r->dir[0] = '\0';
		return -1;
	}
	r->fs_type = (unsigned long)st.f_type;
	if (fs_is_memory(r->fs_type))
		fprintf(stderr, "store-bench: warning: %s is on %s, not a disk\n", r->dir,
		        fs_name(r->fs_type));
	return 0;
fail:
	fprintf(stderr, "store-bench: %s: %s\n", parent, strerror(errno));
	r->dir[0] = '\0';
	return -1;
}

/* Removes the files of the run's directory (it has no subdirectories), then the directory. */
static void dir_remove(const char *dir)
{
	char path[PATH_CAP];
	struct dirent *d;
	DIR *dp = opendir(dir);

	if (dp == NULL)
		return;
	while ((d = readdir(dp)) != NULL) {
		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		if (path_join(path, dir, d->d_name) == 0)
			unlink(path);
	}
	closedir(dp);
	if (rmdir(dir) != 0)
		fprintf(stderr, "store-bench: rmdir %s: %s\n", dir, strerror(errno));
}

/* ---- plain SQLite ---- */

static int plain_step(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc;
}

static void plain_close(plain *p)
{
	sqlite3_finalize(p->begin);
	sqlite3_finalize(p->commit);
	sqlite3_finalize(p->row);
	sqlite3_finalize(p->state);
	sqlite3_close(p->db);
	memset(p, 0, sizeof(*p));
}

static int plain_prepare(plain *p, const char *row_sql, const char *state_sql)
{
	int rc = sqlite3_prepare_v2(p->db, "BEGIN", -1, &p->begin, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(p->db, "COMMIT", -1, &p->commit, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(p->db, row_sql, -1, &p->row, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(p->db, state_sql, -1, &p->state, NULL);
	return rc;
}

/* A fresh database at path with the store's schema, in WAL mode at the given synchronous
 * level, with the store's page cache size and secure_delete; the rest is SQLite's default. */
static int plain_open(plain *p, const char *path, const char *sync, const settings *set,
                      const char *row_sql, const char *state_sql)
{
	char sql[256];
	int rc;

	memset(p, 0, sizeof(*p));
	rc = sqlite3_open_v2(path, &p->db,
	                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	                     COUNT_VFS);
	snprintf(sql, sizeof(sql),
	         "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA cache_size=%lld;"
	         " PRAGMA secure_delete=%lld;",
	         sync, set->cache_size, set->secure_delete);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(p->db, sql, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(p->db, STORE_SCHEMA_SQL, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = plain_prepare(p, row_sql, state_sql);
	if (rc == SQLITE_OK)
		return 0;
	sqlite_fail(p->db, path, rc);
	plain_close(p);
	return -1;
}

/* Runs the batch's state update and commits; rolls back on failure. */
static int plain_finish(plain *p, const char *what)
{
	int rc = plain_step(p->state);

	if (rc == SQLITE_DONE)
		rc = plain_step(p->commit);
	if (rc == SQLITE_DONE)
		return 0;
	sqlite_fail(p->db, what, rc);
	sqlite3_exec(p->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* ---- the store ---- */

static int bench_store_open(const char *path, store **s)
{
	store_options opt;
	char err[512];
	int rv;

	store_options_init(&opt);
	opt.cluster_id = 1;
	opt.node_id = 1;
	opt.vfs = COUNT_VFS;
	rv = store_open(path, &opt, s, err, sizeof(err));
	if (rv == STORE_OK)
		return 0;
	fprintf(stderr, "store-bench: open %s: %s: %s\n", path, store_strerror(rv), err);
	return -1;
}

static long long pragma_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	long long v = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void store_settings(store *s, settings *set)
{
	set->page_size = pragma_int(s->db, "PRAGMA page_size");
	set->cache_size = pragma_int(s->db, "PRAGMA cache_size");
	set->secure_delete = pragma_int(s->db, "PRAGMA secure_delete");
	set->autockpt = pragma_int(s->db, "PRAGMA wal_autocheckpoint");
	set->size_limit = pragma_int(s->db, "PRAGMA journal_size_limit");
}

/* ---- measurement ---- */

/* Adds the side's finished round to its totals. */
static void round_close(side *sd)
{
	tally *t = &sd->t, *r = &sd->round;
	double rate = r->busy > 0 ? (double)r->entries / r->busy : 0;

	t->entries += r->entries;
	t->batches += r->batches;
	t->syncs += r->syncs;
	t->busy += r->busy;
	if (rate > t->best)
		t->best = rate;
	memset(r, 0, sizeof(*r));
}

static int run_batch(side *sd)
{
	uint64_t syncs;
	size_t n = 0;
	double t0;

	if (sd->prep != NULL && sd->prep(sd->ctx) != 0)
		return -1;
	syncs = count_syncs;
	t0 = now();
	if (sd->run(sd->ctx, &n) != 0)
		return -1;
	sd->round.busy += now() - t0;
	sd->round.syncs += count_syncs - syncs;
	sd->round.entries += n;
	sd->round.batches++;
	return 0;
}

/* One round: the sides take turns batch by batch, the first rotating at every turn, so a slow
 * spell of the disk hits all of them alike. Each stops once it has run for `seconds`. */
static int run_round(side *sides, size_t n, double seconds)
{
	bool more = true;

	for (size_t turn = 0; more; turn++) {
		more = false;
		for (size_t k = 0; k < n; k++) {
			side *sd = &sides[(k + turn) % n];

			if (sd->round.busy >= seconds)
				continue;
			if (run_batch(sd) != 0)
				return -1;
			more = true;
		}
	}
	for (size_t k = 0; k < n; k++)
		round_close(&sides[k]);
	return 0;
}

/*
 * Untimed batches until the side's first WAL checkpoint (a batch with more syncs than its first
 * batch), so that the rounds see a recycled WAL, as a long-running node does, and not a fresh
 * one that grows: an fdatasync that extends a file also commits the file system's journal.
 */
static int warm_up(side *sd)
{
	double start = now();
	uint64_t first = 0;

	while (now() - start < WARMUP_MAX_SECONDS) {
		uint64_t before = sd->round.syncs;

		if (run_batch(sd) != 0)
			return -1;
		if (sd->round.batches == 1)
			first = sd->round.syncs;
		else if (sd->round.syncs - before > first)
			break;
	}
	memset(&sd->round, 0, sizeof(sd->round));
	return 0;
}

static int run_rounds(side *sides, size_t n, const options *o)
{
	for (size_t k = 0; k < n; k++)
		if (warm_up(&sides[k]) != 0)
			return -1;
	for (int r = 0; r < o->rounds; r++)
		if (run_round(sides, n, o->seconds / o->rounds) != 0)
			return -1;
	return 0;
}

/* ---- Ready persistence ---- */

static const unsigned char *payload(const unsigned char *pool, uint64_t i)
{
	return pool + (i % POOL_SIZE) * ENTRY_SIZE;
}

static int persist_store_prep(void *ctx)
{
	persist_ctx *c = ctx;

	for (size_t k = 0; k < c->batch; k++) {
		c->ents[k].type = RAFT_ENTRY_NORMAL;
		c->ents[k].term = TERM;
		c->ents[k].index = c->next + k;
		c->ents[k].data = (void *)payload(c->pool, c->next + k);
		c->ents[k].len = ENTRY_SIZE;
	}
	return 0;
}

/* One Ready as the node hands it over: new entries and a hard state whose commit advances. */
static int persist_store_run(void *ctx, size_t *n)
{
	persist_ctx *c = ctx;
	raft_ready rd;
	int rv;

	memset(&rd, 0, sizeof(rd));
	rd.has_hard_state = true;
	rd.hard_state = (raft_hard_state){.term = TERM, .vote = 1, .commit = c->next - 1};
	rd.entries = c->ents;
	rd.n_entries = c->batch;
	rd.must_sync = true;
	rv = store_persist_ready(c->s, &rd);
	if (rv == STORE_OK)
		rv = store_maybe_checkpoint(c->s);
	if (rv != STORE_OK)
		return store_fail(c->s, "persist", rv);
	c->next += c->batch;
	*n = c->batch;
	return 0;
}

static int persist_plain_run(void *ctx, size_t *n)
{
	persist_ctx *c = ctx;
	plain *p = &c->p;
	int rc = plain_step(p->begin);

	for (size_t k = 0; rc == SQLITE_DONE && k < c->batch; k++) {
		sqlite3_bind_int64(p->row, 1, (sqlite3_int64)(c->next + k));
		sqlite3_bind_int64(p->row, 2, TERM);
		sqlite3_bind_int(p->row, 3, RAFT_ENTRY_NORMAL);
		sqlite3_bind_blob(p->row, 4, payload(c->pool, c->next + k), ENTRY_SIZE,
		                  SQLITE_STATIC);
		rc = plain_step(p->row);
	}
	if (rc != SQLITE_DONE)
		return sqlite_fail(p->db, "plain insert", rc);
	sqlite3_bind_int64(p->state, 1, TERM);
	sqlite3_bind_int64(p->state, 2, 1);
	sqlite3_bind_int64(p->state, 3, (sqlite3_int64)(c->next - 1));
	if (plain_finish(p, "plain persist") != 0)
		return -1;
	c->next += c->batch;
	*n = c->batch;
	return 0;
}

/* Opens the two databases of one batch size. */
static int persist_open(const report *r, size_t batch, persist_ctx *c)
{
	char path[PATH_CAP], name[64];

	snprintf(name, sizeof(name), "persist-%zu.db", batch);
	if (path_join(path, r->dir, name) != 0 || bench_store_open(path, &c[0].s) != 0)
		return -1;
	snprintf(name, sizeof(name), "plain-persist-%zu.db", batch);
	if (path_join(path, r->dir, name) != 0)
		return -1;
	return plain_open(&c[1].p, path, "FULL", &r->store_set,
	                  "INSERT INTO raft_log (idx, term, type, data) VALUES (?1, ?2, ?3, ?4)",
	                  "UPDATE hard_state SET term = ?1, vote = ?2, commit_index = ?3"
	                  " WHERE id = 1");
}

static int persist_case(const options *o, report *r, const unsigned char *pool, size_t which)
{
	persist_ctx c[2];
	side sides[2];
	int rv = -1;

	memset(c, 0, sizeof(c));
	memset(sides, 0, sizeof(sides));
	for (int k = 0; k < 2; k++) {
		c[k] = (persist_ctx){.batch = persist_batches[which], .pool = pool, .next = 1};
		sides[k].ctx = &c[k];
	}
	c[0].ents = calloc(c[0].batch, sizeof(raft_entry));
	if (c[0].ents == NULL) {
		fprintf(stderr, "store-bench: out of memory\n");
		goto cleanup;
	}
	if (persist_open(r, c[0].batch, c) != 0)
		goto cleanup;
	sides[0].prep = persist_store_prep;
	sides[0].run = persist_store_run;
	sides[1].run = persist_plain_run;
	rv = run_rounds(sides, 2, o);
	r->persist[which][0] = sides[0].t;
	r->persist[which][1] = sides[1].t;
cleanup:
	store_close(c[0].s);
	plain_close(&c[1].p);
	free(c[0].ents);
	return rv;
}

/* Reads the store's settings from a scratch store, since the plain loops copy them, and
 * SQLite's default checkpoint threshold, which the plain loops keep. */
static int read_settings(report *r)
{
	char path[PATH_CAP];
	sqlite3 *db = NULL;
	store *s = NULL;

	if (path_join(path, r->dir, "settings.db") != 0 || bench_store_open(path, &s) != 0)
		return -1;
	store_settings(s, &r->store_set);
	store_close(s);
	if (sqlite3_open(":memory:", &db) == SQLITE_OK)
		r->plain_autockpt = pragma_int(db, "PRAGMA wal_autocheckpoint");
	sqlite3_close(db);
	return 0;
}

/* ---- apply ---- */

static void apply_cb(void *ctx, const store_result *res)
{
	apply_ctx *c = ctx;

	if (res->status != STORE_RESULT_OK)
		c->bad++;
}

static void apply_pick(apply_ctx *c)
{
	c->batch = APPLY_BATCH;
	for (size_t k = 0; k < c->batch; k++) {
		c->key[k] = (uint32_t)(splitmix64(&c->rng) % N_KEYS);
		c->value[k] = (uint32_t)(splitmix64(&c->rng) % POOL_SIZE);
	}
}

/* Encodes the picked rows as PUT commands into ents (data malloc'd, replaced each batch). */
static int apply_encode(apply_ctx *c)
{
	uint64_t index = store_applied_index(c->s) + 1;

	for (size_t k = 0; k < c->batch; k++) {
		store_command cmd = {.op = STORE_OP_PUT,
		                     .key = c->keys + (size_t)c->key[k] * KEY_SIZE,
		                     .key_len = KEY_SIZE,
		                     .value = payload(c->pool, c->value[k]),
		                     .value_len = ENTRY_SIZE};
		int rv;

		if (c->client != 0) {
			cmd.client_id = c->client;
			cmd.epoch = c->epoch;
			cmd.seq = cmd.low_seq = ++c->seq;
		}
		free(c->ents[k].data);
		c->ents[k] =
		    (raft_entry){.type = RAFT_ENTRY_NORMAL, .term = TERM, .index = index + k};
		rv = command_encode(&cmd, &c->ents[k].data, &c->ents[k].len);
		if (rv != STORE_OK)
			return store_fail(c->s, "command_encode", rv);
	}
	return 0;
}

static int apply_store_prep(void *ctx)
{
	apply_ctx *c = ctx;

	apply_pick(c);
	return apply_encode(c);
}

static int apply_store_run(void *ctx, size_t *n)
{
	apply_ctx *c = ctx;
	int rv = store_apply(c->s, c->ents, c->batch, apply_cb, c);

	if (rv == STORE_OK)
		rv = store_maybe_checkpoint(c->s);
	if (rv != STORE_OK)
		return store_fail(c->s, "apply", rv);
	*n = c->batch;
	return 0;
}

static int apply_plain_prep(void *ctx)
{
	apply_pick(ctx);
	return 0;
}

static int apply_plain_run(void *ctx, size_t *n)
{
	apply_ctx *c = ctx;
	plain *p = &c->p;
	int rc = plain_step(p->begin);

	for (size_t k = 0; rc == SQLITE_DONE && k < c->batch; k++) {
		sqlite3_bind_blob(p->row, 1, c->keys + (size_t)c->key[k] * KEY_SIZE, KEY_SIZE,
		                  SQLITE_STATIC);
		sqlite3_bind_blob(p->row, 2, payload(c->pool, c->value[k]), ENTRY_SIZE,
		                  SQLITE_STATIC);
		rc = plain_step(p->row);
	}
	if (rc != SQLITE_DONE)
		return sqlite_fail(p->db, "plain upsert", rc);
	c->next += c->batch;
	sqlite3_bind_int64(p->state, 1, (sqlite3_int64)(c->next - 1));
	sqlite3_bind_int64(p->state, 2, TERM);
	if (plain_finish(p, "plain apply") != 0)
		return -1;
	*n = c->batch;
	return 0;
}

/* Writes every key once, in key order (the key space is sorted), in batches of PRELOAD_BATCH,
 * through the side's own loop. */
static int apply_preload(apply_ctx *c, bool store_side)
{
	size_t n;

	for (uint32_t first = 0; first < N_KEYS; first += PRELOAD_BATCH) {
		c->batch = N_KEYS - first < PRELOAD_BATCH ? N_KEYS - first : PRELOAD_BATCH;
		for (size_t k = 0; k < c->batch; k++) {
			c->key[k] = first + (uint32_t)k;
			c->value[k] = (first + (uint32_t)k) % POOL_SIZE;
		}
		if (store_side && (apply_encode(c) != 0 || apply_store_run(c, &n) != 0))
			return -1;
		if (!store_side && apply_plain_run(c, &n) != 0)
			return -1;
	}
	return 0;
}

/* Opens client 1's session with a REGISTER; its epoch is the REGISTER's index. */
static int apply_register(apply_ctx *c)
{
	store_command cmd = {.op = STORE_OP_REGISTER, .client_id = 1};
	raft_entry e = {.type = RAFT_ENTRY_NORMAL, .term = TERM};
	int rv = command_encode(&cmd, &e.data, &e.len);

	e.index = store_applied_index(c->s) + 1;
	if (rv == STORE_OK)
		rv = store_apply(c->s, &e, 1, apply_cb, c);
	free(e.data);
	if (rv != STORE_OK)
		return store_fail(c->s, "register", rv);
	c->client = 1;
	c->epoch = e.index;
	return 0;
}

/* Each side has its own database, so none inherits another's cached pages or checkpoint debt. */
static int apply_open(const report *r, apply_ctx *c)
{
	char path[PATH_CAP];

	if (path_join(path, r->dir, "apply.db") != 0 || bench_store_open(path, &c[0].s) != 0)
		return -1;
	if (path_join(path, r->dir, "apply-session.db") != 0 ||
	    bench_store_open(path, &c[1].s) != 0)
		return -1;
	if (path_join(path, r->dir, "plain-apply.db") != 0)
		return -1;
	return plain_open(&c[2].p, path, "NORMAL", &r->store_set,
	                  "INSERT INTO kv(key, value) VALUES (?1, ?2)"
	                  " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
	                  "UPDATE apply_state SET applied_index = ?1, applied_term = ?2"
	                  " WHERE id = 1");
}

/* c[0]: store without a session, c[1]: store with one, c[2]: plain. */
static int apply_setup(const options *o, const report *r, const unsigned char *keys,
                       const unsigned char *pool, apply_ctx *c, side *sides)
{
	for (int k = 0; k < 3; k++) {
		memset(&c[k], 0, sizeof(c[k]));
		c[k].keys = keys;
		c[k].pool = pool;
		c[k].next = 1;
		sides[k] = (side){.prep = k < 2 ? apply_store_prep : apply_plain_prep,
		                  .run = k < 2 ? apply_store_run : apply_plain_run,
		                  .ctx = &c[k]};
	}
	if (apply_open(r, c) != 0 || apply_preload(&c[0], true) != 0 ||
	    apply_preload(&c[1], true) != 0 || apply_preload(&c[2], false) != 0 ||
	    apply_register(&c[1]) != 0)
		return -1;
	for (int k = 0; k < 3; k++)
		c[k].rng = o->seed ^ UINT64_C(0x5eed);
	return 0;
}

static int apply_case(const options *o, report *r, const unsigned char *keys,
                      const unsigned char *pool)
{
	static apply_ctx c[3];
	side sides[3];
	int rv = apply_setup(o, r, keys, pool, c, sides);

	if (rv == 0)
		rv = run_rounds(sides, 3, o);
	if (rv == 0 && c[0].bad + c[1].bad > 0) {
		fprintf(stderr, "store-bench: %" PRIu64 " applies did not return OK\n",
		        c[0].bad + c[1].bad);
		rv = -1;
	}
	for (int k = 0; k < 3; k++) {
		r->apply[k] = sides[k].t;
		for (size_t e = 0; e < PRELOAD_BATCH; e++)
			free(c[k].ents[e].data);
	}
	store_close(c[0].s);
	store_close(c[1].s);
	plain_close(&c[2].p);
	return rv;
}

/* ---- output ---- */

static double syncs_per_batch(const tally *t)
{
	return t->batches > 0 ? (double)t->syncs / (double)t->batches : 0;
}

static double mean(const tally *t)
{
	return t->busy > 0 ? (double)t->entries / t->busy : 0;
}

static double ratio(const tally *a, const tally *b)
{
	return mean(b) > 0 ? mean(a) / mean(b) : 0;
}

static double ratio_best(const tally *a, const tally *b)
{
	return b->best > 0 ? a->best / b->best : 0;
}

static void print_header(const options *o, const report *r)
{
	const settings *s = &r->store_set;

	printf("store-bench: seed %" PRIu64 ", %g s per side per case over %d round(s), the sides"
	       " taking turns batch by batch,\nafter an untimed warm-up up to each side's first WAL"
	       " checkpoint\n"
	       "e/s: entries / measured time over all rounds; best: ratio of the best rounds\n",
	       o->seed, o->seconds, o->rounds);
	printf("dir %s on %s (f_type 0x%lx), SQLite %s\n", r->dir, fs_name(r->fs_type), r->fs_type,
	       sqlite3_libversion());
	printf("store: page_size %lld, cache_size %lld (%lld KiB), secure_delete %lld,"
	       " wal_autocheckpoint %lld; store_maybe_checkpoint() after each batch,\n"
	       "       WAL limit %lld pages (journal_size_limit %lld)\n",
	       s->page_size, s->cache_size, s->cache_size < 0 ? -s->cache_size : 0,
	       s->secure_delete, s->autockpt, s->page_size > 0 ? s->size_limit / s->page_size : 0,
	       s->size_limit);
	printf("plain: the store's schema, cache_size and secure_delete; WAL, wal_autocheckpoint"
	       " %lld (default), prepared statements, one transaction per batch\n",
	       r->plain_autockpt);
}

static void print_row(const char *name, const tally *a, const tally *b)
{
	printf("%-11s %11.0f %11.0f %6.3f %6.3f %8.2f %8.2f\n", name, mean(a), mean(b), ratio(a, b),
	       ratio_best(a, b), syncs_per_batch(a), syncs_per_batch(b));
}

static void print_columns(const char *first)
{
	printf("%-11s %11s %11s %6s %6s %8s %8s\n", first, "store e/s", "plain e/s", "ratio",
	       "best", "syncs/b", "plain");
}

static void print_table(const options *o, const report *r)
{
	char name[32];

	print_header(o, r);
	printf("\nReady persistence: %d-byte entries, STORE_SYNC_FULL, must_sync"
	       " (plain: synchronous=FULL)\n",
	       ENTRY_SIZE);
	print_columns("batch");
	for (size_t k = 0; k < N_PERSIST; k++) {
		snprintf(name, sizeof(name), "%zu", persist_batches[k]);
		print_row(name, &r->persist[k][0], &r->persist[k][1]);
	}
	printf("\nApply: batches of %d PUTs, %d-byte keys over %d (preloaded), %d-byte values"
	       " (plain: upsert, synchronous=NORMAL)\n",
	       APPLY_BATCH, KEY_SIZE, N_KEYS, ENTRY_SIZE);
	print_columns("case");
	print_row("no session", &r->apply[0], &r->apply[2]);
	print_row("session", &r->apply[1], &r->apply[2]);
}

static void json_string(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void json_pair(const char *name, const tally *a, const tally *b)
{
	printf("{\"case\": \"%s\", \"store_eps\": %.0f, \"plain_eps\": %.0f, \"ratio\": %.4f,"
	       " \"store_best_eps\": %.0f, \"plain_best_eps\": %.0f, \"ratio_best\": %.4f,"
	       " \"store_syncs_per_batch\": %.3f, \"plain_syncs_per_batch\": %.3f,"
	       " \"store_entries\": %" PRIu64 ", \"plain_entries\": %" PRIu64 "}",
	       name, mean(a), mean(b), ratio(a, b), a->best, b->best, ratio_best(a, b),
	       syncs_per_batch(a), syncs_per_batch(b), a->entries, b->entries);
}

static void print_json(const options *o, const report *r)
{
	const settings *s = &r->store_set;
	char name[32];

	printf("{\"seed\": %" PRIu64 ", \"seconds\": %.3f, \"rounds\": %d, \"dir\": ", o->seed,
	       o->seconds, o->rounds);
	json_string(r->dir);
	printf(", \"fs\": \"%s\", \"fs_type\": %lu, \"sqlite\": \"%s\",\n", fs_name(r->fs_type),
	       r->fs_type, sqlite3_libversion());
	printf(
	    " \"store_settings\": {\"page_size\": %lld, \"cache_size\": %lld,"
	    " \"secure_delete\": %lld, \"wal_autocheckpoint\": %lld,"
	    " \"journal_size_limit\": %lld}, \"plain_wal_autocheckpoint\": %lld,\n \"persist\": [",
	    s->page_size, s->cache_size, s->secure_delete, s->autockpt, s->size_limit,
	    r->plain_autockpt);
	for (size_t k = 0; k < N_PERSIST; k++) {
		snprintf(name, sizeof(name), "batch %zu", persist_batches[k]);
		printf(k ? ",\n  " : "\n  ");
		json_pair(name, &r->persist[k][0], &r->persist[k][1]);
	}
	printf("],\n \"apply\": [\n  ");
	json_pair("no session", &r->apply[0], &r->apply[2]);
	printf(",\n  ");
	json_pair("session", &r->apply[1], &r->apply[2]);
	printf("]}\n");
}

/* ---- options and main ---- */

static void usage(FILE *f)
{
	fprintf(f, "usage: store-bench [--seconds S] [--rounds N] [--seed N] [--dir PARENT]"
	           " [--keep] [--json]\n"
	           "  --seconds S   measured time per side per case (default 3)\n"
	           "  --rounds N    alternating rounds the time is split into (default 3)\n"
	           "  --seed N      PRNG seed for payloads and keys (default 1)\n"
	           "  --dir PARENT  where the run's fresh directory is made (default build)\n"
	           "  --keep        keep the directory and its databases\n"
	           "  --json        print JSON instead of the table\n");
}

static int parse_number(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return errno != 0 || end == s || *end != '\0' ? -1 : 0;
}

/* An unsigned integer, decimal or 0x hex. */
static int parse_uint(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 0);
	return errno != 0 || end == s || *end != '\0' || *s == '-' ? -1 : 0;
}

/* Returns 0 to run, 1 after --help, -1 on a bad argument. */
static int parse_options(int argc, char **argv, options *o)
{
	uint64_t rounds = 3;

	*o = (options){.seconds = 3, .rounds = 3, .seed = 1, .parent = "build"};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has = i + 1 < argc;
		int bad = 0;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 1;
		} else if (strcmp(a, "--seconds") == 0 && has) {
			bad = parse_number(argv[++i], &o->seconds);
		} else if (strcmp(a, "--rounds") == 0 && has) {
			bad = parse_uint(argv[++i], &rounds);
		} else if (strcmp(a, "--seed") == 0 && has) {
			bad = parse_uint(argv[++i], &o->seed);
		} else if (strcmp(a, "--dir") == 0 && has) {
			o->parent = argv[++i];
		} else if (strcmp(a, "--keep") == 0) {
			o->keep = true;
		} else if (strcmp(a, "--json") == 0) {
			o->json = true;
		} else {
			bad = -1;
		}
		if (bad != 0 || !(o->seconds > 0) || rounds < 1 || rounds > MAX_ROUNDS) {
			fprintf(stderr, "store-bench: bad argument: %s\n", a);
			usage(stderr);
			return -1;
		}
	}
	o->rounds = (int)rounds;
	return 0;
}

static int key_cmp(const void *a, const void *b)
{
	return memcmp(a, b, KEY_SIZE);
}

/* Payload pool and key space (sorted), both from the seed. */
static int make_data(uint64_t seed, unsigned char **pool, unsigned char **keys)
{
	uint64_t state = seed;

	*pool = malloc((size_t)POOL_SIZE * ENTRY_SIZE);
	*keys = malloc((size_t)N_KEYS * KEY_SIZE);
	if (*pool == NULL || *keys == NULL) {
		fprintf(stderr, "store-bench: out of memory\n");
		return -1;
	}
	fill_random(*pool, (size_t)POOL_SIZE * ENTRY_SIZE, &state);
	fill_random(*keys, (size_t)N_KEYS * KEY_SIZE, &state);
	qsort(*keys, N_KEYS, KEY_SIZE, key_cmp);
	return 0;
}

static int run_all(const options *o, report *r, const unsigned char *pool,
                   const unsigned char *keys)
{
	if (read_settings(r) != 0)
		return -1;
	for (size_t k = 0; k < N_PERSIST; k++)
		if (persist_case(o, r, pool, k) != 0)
			return -1;
	return apply_case(o, r, keys, pool);
}

int main(int argc, char **argv)
{
	static report r;
	unsigned char *pool = NULL, *keys = NULL;
	options o;
	int rv = parse_options(argc, argv, &o);

	if (rv != 0)
		return rv > 0 ? 0 : 2;
	rv = 1;
	if (count_vfs_register() != 0 || make_data(o.seed, &pool, &keys) != 0)
		goto cleanup;
	if (dir_create(o.parent, &r) != 0 || run_all(&o, &r, pool, keys) != 0)
		goto cleanup;
	if (o.json)
		print_json(&o, &r);
	else
		print_table(&o, &r);
	rv = 0;
cleanup:
	if (r.dir[0] != '\0' && o.keep)
		fprintf(stderr, "store-bench: kept %s\n", r.dir);
	else if (r.dir[0] != '\0')
		dir_remove(r.dir);
	free(pool);
	free(keys);
	return rv;
}
