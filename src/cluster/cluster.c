/* cluster.c - the raftkv handle: open/close, ticker thread, node stop/start, status, faults. */
#define _DEFAULT_SOURCE /* flock(2) */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "cluster/manifest.h"

#define NS_PER_MS          1000000ull
#define NS_PER_S           1000000000ull
#define IDLE_PERIOD_MS     10u  /* ticker period under manual ticking: client timers only */
#define NODE_DRAIN_CAP     256u /* mailbox items per pass of a node (node_config.drain_cap) */
#define MANUAL_RESEND_MS   100u /* transfer resend period when ticks are manual */
#define MAX_CHUNK_SIZE     (64u << 20)
#define MAX_ELECTION_TICKS (1u << 24) /* keeps 2 * election_tick inside an int */

/*
 * The handle as allocated. struct raftkv (cluster.h) is shared with client.c and the tests; the
 * fields below are this file's alone. kv is the first member, so a raftkv * is a
 * cluster_handle * (HANDLE).
 */
typedef struct cluster_handle {
	struct raftkv kv;
	/* Public control calls inside the library (enter/leave). raftkv_close sets kv.closing and
	 * then waits for 0 before freeing anything. Guarded by kv.status_mu; the last one out
	 * after closing broadcasts kv.status_cv. */
	unsigned callers;
	/* Status of each node as it was stopped (role RAFTKV_ROLE_STOPPED); reported while the node
	 * is stopped. Guarded by kv.nodes_mu. */
	raftkv_status last[RAFTKV_MAX_NODES];
	/* Serializes starting and stopping nodes (raftkv_node_start/stop, open, close). It is held
	 * while a node's thread is joined or its store opened, which take time, so kv.nodes_mu is
	 * not: that one guards only the slot pointers, and code on node threads (async callbacks,
	 * trace hooks calling raftkv_node_status or raftkv_leader) can always take it. Order:
	 * life_mu before nodes_mu. */
	pthread_mutex_t life_mu;
	/* An open descriptor of the directory's lock file, flock()ed exclusively for the handle's
	 * life: two handles on one directory would run two instances of each node over the same
	 * database, and could vote twice in one term. -1 when not held. */
	int lock_fd;
	/* INIT_* bits: which synchronization objects of kv exist (teardown of a failed open). */
	unsigned inited;
} cluster_handle;

#define HANDLE(kvp) ((cluster_handle *)(kvp))

enum {
	INIT_NODES_MU = 1u << 0,
	INIT_STATUS_MU = 1u << 1,
	INIT_STATUS_CV = 1u << 2,
	INIT_TICKER_MU = 1u << 3,
	INIT_TICKER_CV = 1u << 4,
	INIT_LIFE_MU = 1u << 5,
};

static void set_err(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (buf == NULL || len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------------------------------ */
/* Small public functions                                                                     */
/* ------------------------------------------------------------------------------------------ */

const char *raftkv_strerror(int rv)
{
	switch (rv) {
	case RAFTKV_OK:
		return "ok";
	case RAFTKV_NOT_FOUND:
		return "not found";
	case RAFTKV_TIMEOUT:
		return "timed out (outcome unknown)";
	case RAFTKV_INVALID:
		return "invalid argument";
	case RAFTKV_BUSY:
		return "busy (queue full)";
	case RAFTKV_CLOSED:
		return "handle is closing";
	case RAFTKV_IO:
		return "I/O error";
	case RAFTKV_CORRUPT:
		return "corrupt database or cluster file";
	case RAFTKV_NOMEM:
		return "out of memory";
	case RAFTKV_SESSION_EXPIRED:
		return "client session expired";
	default:
		return "unknown error";
	}
}

void raftkv_free(void *p)
{
	free(p);
}

void raftkv_options_init(raftkv_options *opts)
{
	if (opts == NULL)
		return;
	memset(opts, 0, sizeof *opts);
	opts->n_nodes = 3;
	opts->tick_ms = 10;
	opts->election_ticks = 100;
	opts->heartbeat_ticks = 10;
	opts->sync = RAFTKV_SYNC_FULL;
	opts->request_timeout_ms = 5000;
	opts->gc_threshold = 10000;
	opts->gc_trailing = 1000;
	opts->gc_hard_limit = 2 * opts->gc_threshold;
	opts->snapshot_chunk_size = 256u << 10;
	opts->snapshot_window = 8;
	opts->snapshot_max_concurrent = 2;
	opts->snapshot_rate_limit = 0;
	opts->mailbox_capacity = 4096;
	opts->max_inflight = 4096;
}

uint64_t cluster_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static struct timespec mono_timespec(uint64_t ns)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(ns / NS_PER_S);
	ts.tv_nsec = (long)(ns % NS_PER_S);
	return ts;
}

/* splitmix64's finalizer: spreads a seed so that related inputs give unrelated outputs. */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* A non-zero seed from the clocks and the pid, for opts.seed == 0. */
static uint64_t derive_seed(void)
{
	struct timespec rt;
	uint64_t x;

	clock_gettime(CLOCK_REALTIME, &rt);
	x = (uint64_t)rt.tv_sec * NS_PER_S + (uint64_t)rt.tv_nsec;
	x = mix64(x ^ ((uint64_t)getpid() << 40) ^ cluster_now_ns());
	return x != 0 ? x : 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Options                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static bool is_pow2(size_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

/* Raft timing, sizes and queues. RAFTKV_OK or RAFTKV_INVALID with the reason. */
static int check_core_options(const raftkv_options *o, char *errmsg, size_t len)
{
	if (o->n_nodes < 1 || o->n_nodes > RAFTKV_MAX_NODES) {
		set_err(errmsg, len, "n_nodes is %zu; it must be 1..%u", o->n_nodes,
		        RAFTKV_MAX_NODES);
		return RAFTKV_INVALID;
	}
	if (o->heartbeat_ticks < 1 || o->election_ticks <= o->heartbeat_ticks ||
	    o->election_ticks > MAX_ELECTION_TICKS) {
		set_err(
		    errmsg, len,
		    "election_ticks (%u) must exceed heartbeat_ticks (%u) >= 1, and be at most %u",
		    o->election_ticks, o->heartbeat_ticks, MAX_ELECTION_TICKS);
		return RAFTKV_INVALID;
	}
	if (o->request_timeout_ms == 0) {
		set_err(errmsg, len, "request_timeout_ms must be > 0");
		return RAFTKV_INVALID;
	}
	if (!is_pow2(o->mailbox_capacity) || o->mailbox_capacity < MAILBOX_MIN_CAPACITY ||
	    o->mailbox_capacity > MAILBOX_MAX_CAPACITY) {
		set_err(errmsg, len, "mailbox_capacity %zu must be a power of two in %u..%u",
		        o->mailbox_capacity, MAILBOX_MIN_CAPACITY, MAILBOX_MAX_CAPACITY);
		return RAFTKV_INVALID;
	}
	if (o->max_inflight == 0) {
		set_err(errmsg, len, "max_inflight must be > 0");
		return RAFTKV_INVALID;
	}
	if (o->sync != RAFTKV_SYNC_FULL && o->sync != RAFTKV_SYNC_NORMAL &&
	    o->sync != RAFTKV_SYNC_OFF) {
		set_err(errmsg, len, "sync %d is not a raftkv_sync value", (int)o->sync);
		return RAFTKV_INVALID;
	}
	return RAFTKV_OK;
}

/* Log GC and snapshot transfer (used from issue 5 on; checked now so a bad value never
 * reaches a node). */
static int check_gc_options(const raftkv_options *o, char *errmsg, size_t len)
{
	if (o->gc_threshold == 0 || o->gc_trailing >= o->gc_threshold) {
		set_err(errmsg, len,
		        "gc_trailing (%" PRIu64 ") must be below gc_threshold (%" PRIu64 ") > 0",
		        o->gc_trailing, o->gc_threshold);
		return RAFTKV_INVALID;
	}
	if (o->gc_hard_limit < o->gc_threshold || o->gc_threshold > UINT64_MAX / 2 ||
	    o->gc_hard_limit > 2 * o->gc_threshold) {
		set_err(errmsg, len,
		        "gc_hard_limit (%" PRIu64 ") must be in [gc_threshold, "
		        "2 * gc_threshold] (gc_threshold %" PRIu64 ")",
		        o->gc_hard_limit, o->gc_threshold);
		return RAFTKV_INVALID;
	}
	if (o->snapshot_chunk_size == 0 || o->snapshot_chunk_size > MAX_CHUNK_SIZE) {
		set_err(errmsg, len, "snapshot_chunk_size %zu must be 1..%u",
		        o->snapshot_chunk_size, MAX_CHUNK_SIZE);
		return RAFTKV_INVALID;
	}
	if (o->snapshot_window == 0 || o->snapshot_max_concurrent == 0) {
		set_err(errmsg, len, "snapshot_window and snapshot_max_concurrent must be > 0");
		return RAFTKV_INVALID;
	}
	return RAFTKV_OK;
}

/* dir must name an existing directory. */
static int check_dir(const char *dir, char *errmsg, size_t len)
{
	struct stat st;

	if (dir == NULL || dir[0] == '\0') {
		set_err(errmsg, len, "dir is NULL or empty");
		return RAFTKV_INVALID;
	}
	if (stat(dir, &st) != 0) {
		set_err(errmsg, len, "%s: %s", dir, strerror(errno));
		return errno == ENOENT || errno == ENOTDIR ? RAFTKV_INVALID : RAFTKV_IO;
	}
	if (!S_ISDIR(st.st_mode)) {
		set_err(errmsg, len, "%s is not a directory", dir);
		return RAFTKV_INVALID;
	}
	return RAFTKV_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Entering and leaving the library (control calls), status changes                           */
/* ------------------------------------------------------------------------------------------ */

/* Every public control call starts here: RAFTKV_OK (then leave() must follow), RAFTKV_INVALID
 * for NULL, RAFTKV_CLOSED once raftkv_close has started. */
static int enter(raftkv *kv)
{
	int rv = RAFTKV_OK;

	if (kv == NULL)
		return RAFTKV_INVALID;
	pthread_mutex_lock(&kv->status_mu);
	if (atomic_load(&kv->closing))
		rv = RAFTKV_CLOSED;
	else
		HANDLE(kv)->callers++;
	pthread_mutex_unlock(&kv->status_mu);
	return rv;
}

static void leave(raftkv *kv)
{
	pthread_mutex_lock(&kv->status_mu);
	if (--HANDLE(kv)->callers == 0 && atomic_load(&kv->closing))
		pthread_cond_broadcast(&kv->status_cv);
	pthread_mutex_unlock(&kv->status_mu);
}

void cluster_changed(void *ctx, uint64_t node_id)
{
	raftkv *kv = ctx;

	(void)node_id;
	pthread_mutex_lock(&kv->status_mu);
	kv->status_gen++;
	pthread_cond_broadcast(&kv->status_cv);
	pthread_mutex_unlock(&kv->status_mu);
}

/*
 * Reads status_gen before each evaluation of pred, so a change that lands while pred runs ends
 * the following wait at once. Returns RAFTKV_CLOSED (beyond the header's OK/TIMEOUT) when
 * raftkv_close starts, so that close never waits for a waiter's timeout.
 */
int cluster_wait(raftkv *kv, bool (*pred)(void *ctx, raftkv *kv), void *ctx, unsigned timeout_ms)
{
	const struct timespec deadline =
	    mono_timespec(cluster_now_ns() + (uint64_t)timeout_ms * NS_PER_MS);

	for (;;) {
		bool timed_out = false, closing;
		uint64_t gen;

		pthread_mutex_lock(&kv->status_mu);
		gen = kv->status_gen;
		closing = atomic_load(&kv->closing);
		pthread_mutex_unlock(&kv->status_mu);
		if (closing)
			return RAFTKV_CLOSED;
		if (pred(ctx, kv))
			return RAFTKV_OK;

		pthread_mutex_lock(&kv->status_mu);
		while (kv->status_gen == gen && !atomic_load(&kv->closing) && !timed_out)
			timed_out = pthread_cond_timedwait(&kv->status_cv, &kv->status_mu,
			                                   &deadline) == ETIMEDOUT;
		pthread_mutex_unlock(&kv->status_mu);
		if (timed_out)
			return pred(ctx, kv) ? RAFTKV_OK : RAFTKV_TIMEOUT;
	}
}

static bool valid_id(const raftkv *kv, uint64_t id)
{
	return id >= 1 && id <= kv->opts.n_nodes;
}

/* ------------------------------------------------------------------------------------------ */
/* Node databases, manifest, creation                                                         */
/* ------------------------------------------------------------------------------------------ */

/* `dir/node-<id>.db`, malloc'd (the caller's), or NULL. */
static char *node_db_path(const char *dir, uint64_t id)
{
	size_t n = strlen(dir) + 32;
	char *p = malloc(n);

	if (p != NULL)
		snprintf(p, n, "%s/node-%" PRIu64 ".db", dir, id);
	return p;
}

/* Whether path exists: 1 yes, 0 no, -1 error (errno set). */
static int file_exists(const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0)
		return 1;
	return errno == ENOENT ? 0 : -1;
}

static void fill_store_options(const raftkv *kv, uint64_t id, store_options *so)
{
	store_options_init(so);
	so->cluster_id = kv->cluster_id;
	so->node_id = id;
	switch (kv->opts.sync) {
	case RAFTKV_SYNC_NORMAL:
		so->sync = STORE_SYNC_NORMAL;
		break;
	case RAFTKV_SYNC_OFF:
		so->sync = STORE_SYNC_OFF;
		break;
	default:
		so->sync = STORE_SYNC_FULL;
		break;
	}
	so->vfs = kv->opts.vfs;
}

static int store_rv(int rv)
{
	switch (rv) {
	case STORE_OK:
		return RAFTKV_OK;
	case STORE_ERR_NOMEM:
		return RAFTKV_NOMEM;
	case STORE_ERR_INVALID:
		return RAFTKV_INVALID;
	case STORE_ERR_CORRUPT:
	case STORE_ERR_NOT_OURS:
	case STORE_ERR_VERSION:
	case STORE_ERR_WRONG_NODE:
		return RAFTKV_CORRUPT;
	default:
		return RAFTKV_IO;
	}
}

/* Creates node id's database if missing (an existing one must be this cluster's and this
 * node's) and records the membership 1..n_nodes in it. */
static int prepare_node_db(raftkv *kv, uint64_t id, char *errmsg, size_t len)
{
	raft_conf_state cs;
	store_options so;
	store *s = NULL;
	char why[256] = "";
	char *path = node_db_path(kv->dir, id);
	int rv;

	if (path == NULL) {
		set_err(errmsg, len, "out of memory");
		return RAFTKV_NOMEM;
	}
	fill_store_options(kv, id, &so);
	rv = store_open(path, &so, &s, why, sizeof why);
	if (rv == STORE_OK) {
		memset(&cs, 0, sizeof cs);
		for (size_t i = 0; i < kv->opts.n_nodes; i++)
			cs.voters[i] = i + 1;
		cs.n_voters = kv->opts.n_nodes;
		rv = store_set_conf_state(s, &cs);
		if (rv != STORE_OK)
			snprintf(why, sizeof why, "%s", store_errmsg(s));
		store_close(s);
	}
	if (rv != STORE_OK)
		set_err(errmsg, len, "creating %s: %s (%s)", path, why, store_strerror(rv));
	free(path);
	return store_rv(rv);
}

/* Creates every node database, then marks the manifest complete. Idempotent: it also finishes
 * a creation that a crash interrupted. */
static int finish_creation(raftkv *kv, char *errmsg, size_t len)
{
	cluster_manifest m = {kv->cluster_id, kv->opts.n_nodes, true};

	for (uint64_t id = 1; id <= kv->opts.n_nodes; id++) {
		int rv = prepare_node_db(kv, id, errmsg, len);
		if (rv != RAFTKV_OK)
			return rv;
	}
	return manifest_write(kv->dir, &m, errmsg, len);
}

/* A directory without a manifest: new cluster id, manifest (complete = 0), databases. */
static int create_cluster(raftkv *kv, char *errmsg, size_t len)
{
	cluster_manifest m;
	int rv;

	/* Node databases without a manifest are a damaged directory, not an empty one: creating a
	 * new cluster id would make them all foreign. */
	for (uint64_t id = 1; id <= RAFTKV_MAX_NODES; id++) {
		char *path = node_db_path(kv->dir, id);
		int e = path != NULL ? file_exists(path) : -1;
		if (e != 0) {
			set_err(errmsg, len, "%s: %s", path != NULL ? path : kv->dir,
			        e > 0 ? "exists but " CLUSTER_MANIFEST " is missing"
			              : "cannot check it");
			free(path);
			return e > 0 ? RAFTKV_CORRUPT : RAFTKV_IO;
		}
		free(path);
	}
	rv = manifest_random_id(&kv->cluster_id, errmsg, len);
	if (rv != RAFTKV_OK)
		return rv;
	m.cluster_id = kv->cluster_id;
	m.n_nodes = kv->opts.n_nodes;
	m.complete = false;
	rv = manifest_write(kv->dir, &m, errmsg, len);
	if (rv != RAFTKV_OK)
		return rv;
	return finish_creation(kv, errmsg, len);
}

/* Creates the cluster, finishes an interrupted creation, or checks the manifest of an existing
 * one; sets kv->cluster_id. */
static int prepare_cluster(raftkv *kv, char *errmsg, size_t len)
{
	cluster_manifest m;
	int rv = manifest_read(kv->dir, &m, errmsg, len);

	if (rv == RAFTKV_NOT_FOUND)
		return create_cluster(kv, errmsg, len);
	if (rv != RAFTKV_OK)
		return rv;
	if (m.n_nodes != kv->opts.n_nodes) {
		set_err(errmsg, len,
		        "%s holds a %" PRIu64 "-node cluster; n_nodes is %zu (membership "
		        "is fixed)",
		        kv->dir, m.n_nodes, kv->opts.n_nodes);
		return RAFTKV_INVALID;
	}
	kv->cluster_id = m.cluster_id;
	if (!m.complete)
		return finish_creation(kv, errmsg, len);
	return RAFTKV_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Nodes                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* node_config.send: every message a node sends goes through the router (and its faults). */
static void cluster_send(void *ctx, const raft_message *m)
{
	raftkv *kv = ctx;

	router_send_raft(kv->router, m);
}

/* node_config.send_item: snapshot chunks and acks go through the router as well. */
static void cluster_send_item(void *ctx, uint64_t from, uint64_t to, int kind, void *ptr,
                              size_t len)
{
	raftkv *kv = ctx;

	router_send_snap(kv->router, from, to, kind, ptr, len);
}

/* snapshot_rate_limit (bytes per second) as bytes per tick; manual ticking (tick_ms 0) counts
 * a tick as IDLE_PERIOD_MS. At least 1 when limited. */
static uint64_t snapshot_bytes_per_tick(const raftkv_options *o)
{
	uint64_t ms = o->tick_ms != 0 ? o->tick_ms : IDLE_PERIOD_MS;
	uint64_t per;

	if (o->snapshot_rate_limit == 0)
		return 0;
	per = o->snapshot_rate_limit / 1000u * ms + o->snapshot_rate_limit % 1000u * ms / 1000u;
	return per != 0 ? per : 1;
}

/*
 * Starts node id from its database and attaches it to the router. Caller holds life_mu (not
 * nodes_mu) and the slot is empty. The database must exist: the cluster created it, and a node that
 * lost its disk must not come back empty, since it could then vote twice in one term (Raft paper
 * §5.2: votes are durable state).
 */
static int start_node_locked(raftkv *kv, uint64_t id, char *errmsg, size_t len)
{
	node_config cfg;
	node *n = NULL;
	char why[256] = "";
	char *path = node_db_path(kv->dir, id);
	int rv, e;

	if (path == NULL) {
		set_err(errmsg, len, "out of memory");
		return RAFTKV_NOMEM;
	}
	e = file_exists(path);
	if (e <= 0) {
		set_err(errmsg, len, "%s: %s", path,
		        e == 0 ? "missing; a node that lost its database must not rejoin"
		               : strerror(errno));
		free(path);
		return e == 0 ? RAFTKV_CORRUPT : RAFTKV_IO;
	}
	memset(&cfg, 0, sizeof cfg);
	cfg.id = id;
	cfg.db_path = path;
	cfg.dir = kv->dir;
	fill_store_options(kv, id, &cfg.store);
	cfg.election_tick = (int)kv->opts.election_ticks;
	cfg.heartbeat_tick = (int)kv->opts.heartbeat_ticks;
	cfg.seed = kv->opts.seed;
	cfg.mailbox_capacity = kv->opts.mailbox_capacity;
	cfg.drain_cap = NODE_DRAIN_CAP;
	cfg.gc_threshold = kv->opts.gc_threshold;
	cfg.gc_trailing = kv->opts.gc_trailing;
	cfg.gc_hard_limit = kv->opts.gc_hard_limit;
	cfg.snapshot_chunk_size = kv->opts.snapshot_chunk_size;
	cfg.snapshot_window = kv->opts.snapshot_window;
	cfg.snapshot_max_concurrent = kv->opts.snapshot_max_concurrent;
	cfg.snapshot_bytes_per_tick = snapshot_bytes_per_tick(&kv->opts);
	cfg.send = cluster_send;
	cfg.send_item = cluster_send_item;
	cfg.changed = cluster_changed;
	cfg.ctx = kv;
	cfg.trace = kv->opts.trace;
	cfg.trace_ctx = kv->opts.trace_ctx;
	rv = node_start(&cfg, &n, why, sizeof why);
	if (rv != RAFTKV_OK) {
		set_err(errmsg, len, "node %" PRIu64 ": %s", id, why);
		free(path);
		return rv;
	}
	free(path);
	pthread_mutex_lock(&kv->nodes_mu);
	kv->nodes[id - 1] = n;
	pthread_mutex_unlock(&kv->nodes_mu);
	router_attach(kv->router, id, node_mailbox(n));
	return RAFTKV_OK;
}

/* Crash-stops node id if it runs, keeping its last status. Caller holds life_mu (not nodes_mu:
 * the join below waits for the node thread, which may be inside a callback that takes
 * nodes_mu). Detaching first means nothing is pushed into its mailbox after node_stop's final
 * drain. */
static void stop_node_locked(raftkv *kv, uint64_t id)
{
	raftkv_status *last = &HANDLE(kv)->last[id - 1];
	raftkv_status st;
	node *n;

	pthread_mutex_lock(&kv->nodes_mu);
	n = kv->nodes[id - 1];
	if (n != NULL) {
		node_status_get(n, last);
		last->role = RAFTKV_ROLE_STOPPED;
		last->mailbox_depth = 0;
		kv->nodes[id - 1] = NULL;
	}
	pthread_mutex_unlock(&kv->nodes_mu);
	if (n == NULL)
		return;
	router_detach(kv->router, id);
	node_stop(n);
	node_status_get(n, &st);
	st.id = id;
	st.role = RAFTKV_ROLE_STOPPED;
	st.mailbox_depth = 0;
	node_free(n);
	pthread_mutex_lock(&kv->nodes_mu);
	*last = st;
	pthread_mutex_unlock(&kv->nodes_mu);
}

/* The running leader in the highest term, or 0. Caller holds nodes_mu. */
static uint64_t leader_locked(raftkv *kv)
{
	uint64_t best = 0, best_term = 0;

	for (size_t i = 0; i < kv->opts.n_nodes; i++) {
		raftkv_status st;
		if (kv->nodes[i] == NULL)
			continue;
		node_status_get(kv->nodes[i], &st);
		if (st.role == RAFTKV_ROLE_LEADER && st.failed == RAFTKV_OK &&
		    (best == 0 || st.term > best_term)) {
			best = i + 1;
			best_term = st.term;
		}
	}
	return best;
}

static uint64_t current_leader(raftkv *kv)
{
	uint64_t id;

	pthread_mutex_lock(&kv->nodes_mu);
	id = leader_locked(kv);
	pthread_mutex_unlock(&kv->nodes_mu);
	return id;
}

static void add_ticks(raftkv *kv, unsigned ticks)
{
	pthread_mutex_lock(&kv->nodes_mu);
	for (size_t i = 0; i < kv->opts.n_nodes; i++)
		if (kv->nodes[i] != NULL)
			node_add_ticks(kv->nodes[i], ticks);
	pthread_mutex_unlock(&kv->nodes_mu);
}

/* ------------------------------------------------------------------------------------------ */
/* The ticker                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/*
 * Every period (tick_ms, or IDLE_PERIOD_MS under manual ticking, which adds no Raft tick) the
 * ticker adds the due ticks to every running node and runs the client timers. Deadlines are
 * absolute (next += period), so ticks do not drift with the time spent in each round.
 *
 * If the thread fell behind by k periods (the process was suspended, or starved), the k ticks
 * are added at once but capped at election_ticks / 2: a burst of a whole election timeout would
 * make every follower campaign at the same moment after a pause. The time beyond the cap is
 * forgotten; ticks only drive liveness (elections, heartbeats), never safety.
 */
static void *ticker_main(void *arg)
{
	raftkv *kv = arg;
	const bool manual = kv->opts.tick_ms == 0;
	const uint64_t period = (uint64_t)(manual ? IDLE_PERIOD_MS : kv->opts.tick_ms) * NS_PER_MS;
	const uint64_t cap = kv->opts.election_ticks / 2 > 0 ? kv->opts.election_ticks / 2 : 1;
	uint64_t next = cluster_now_ns() + period;

	pthread_mutex_lock(&kv->ticker_mu);
	while (!kv->ticker_stop) {
		uint64_t now = cluster_now_ns(), due;
		if (now < next) {
			struct timespec ts = mono_timespec(next);
			pthread_cond_timedwait(&kv->ticker_cv, &kv->ticker_mu, &ts);
			continue;
		}
		pthread_mutex_unlock(&kv->ticker_mu);
		due = (now - next) / period + 1;
		next += due * period;
		if (!manual)
			add_ticks(kv, (unsigned)(due < cap ? due : cap));
		client_timer(kv, now);
		pthread_mutex_lock(&kv->ticker_mu);
	}
	pthread_mutex_unlock(&kv->ticker_mu);
	return NULL;
}

static void ticker_stop(raftkv *kv)
{
	if (!kv->ticker_started)
		return;
	pthread_mutex_lock(&kv->ticker_mu);
	kv->ticker_stop = true;
	pthread_cond_signal(&kv->ticker_cv);
	pthread_mutex_unlock(&kv->ticker_mu);
	pthread_join(kv->ticker, NULL);
	kv->ticker_started = false;
}

/* ------------------------------------------------------------------------------------------ */
/* Open and close                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* Creates kv's mutexes and condition variables; the condition variables wait on
 * CLOCK_MONOTONIC, so wall-clock steps never stretch or cut a timeout. */
static int init_sync(cluster_handle *h)
{
	raftkv *kv = &h->kv;
	pthread_condattr_t ca;
	int rv = RAFTKV_NOMEM;

	if (pthread_condattr_init(&ca) != 0)
		return RAFTKV_NOMEM;
	if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0)
		goto out;
	if (pthread_mutex_init(&kv->nodes_mu, NULL) != 0)
		goto out;
	h->inited |= INIT_NODES_MU;
	if (pthread_mutex_init(&h->life_mu, NULL) != 0)
		goto out;
	h->inited |= INIT_LIFE_MU;
	if (pthread_mutex_init(&kv->status_mu, NULL) != 0)
		goto out;
	h->inited |= INIT_STATUS_MU;
	if (pthread_cond_init(&kv->status_cv, &ca) != 0)
		goto out;
	h->inited |= INIT_STATUS_CV;
	if (pthread_mutex_init(&kv->ticker_mu, NULL) != 0)
		goto out;
	h->inited |= INIT_TICKER_MU;
	if (pthread_cond_init(&kv->ticker_cv, &ca) != 0)
		goto out;
	h->inited |= INIT_TICKER_CV;
	rv = RAFTKV_OK;
out:
	pthread_condattr_destroy(&ca);
	return rv;
}

/* Fills the handle from validated options (borrowed; copied, with the VFS name and dir). */
static int init_handle(cluster_handle *h, const char *dir, const raftkv_options *opts)
{
	raftkv *kv = &h->kv;

	kv->opts = *opts;
	kv->opts.vfs = NULL;
	atomic_init(&kv->closing, false);
	for (size_t i = 0; i < RAFTKV_MAX_NODES; i++) {
		h->last[i].id = i + 1;
		h->last[i].role = RAFTKV_ROLE_STOPPED;
	}
	if (kv->opts.seed == 0)
		kv->opts.seed = derive_seed();
	kv->dir = strdup(dir);
	if (kv->dir == NULL)
		return RAFTKV_NOMEM;
	if (opts->vfs != NULL) {
		kv->vfs_name = strdup(opts->vfs);
		if (kv->vfs_name == NULL)
			return RAFTKV_NOMEM;
		kv->opts.vfs = kv->vfs_name;
	}
	return init_sync(h);
}

/* Stops and frees everything the handle holds, in the order of raftkv_close; also undoes a
 * partial raftkv_open. kv->closing is set and no control call is inside. */
static void teardown(raftkv *kv)
{
	cluster_handle *h = HANDLE(kv);

	if (kv->client != NULL)
		client_shutdown(kv);
	ticker_stop(kv);
	if (h->inited & INIT_LIFE_MU) {
		pthread_mutex_lock(&h->life_mu);
		for (uint64_t id = 1; id <= kv->opts.n_nodes; id++)
			stop_node_locked(kv, id);
		pthread_mutex_unlock(&h->life_mu);
	}
	router_free(kv->router);
	kv->router = NULL;
	if (kv->client != NULL)
		client_free(kv);
	if (h->inited & INIT_TICKER_CV)
		pthread_cond_destroy(&kv->ticker_cv);
	if (h->inited & INIT_TICKER_MU)
		pthread_mutex_destroy(&kv->ticker_mu);
	if (h->inited & INIT_STATUS_CV)
		pthread_cond_destroy(&kv->status_cv);
	if (h->inited & INIT_STATUS_MU)
		pthread_mutex_destroy(&kv->status_mu);
	if (h->inited & INIT_LIFE_MU)
		pthread_mutex_destroy(&h->life_mu);
	if (h->inited & INIT_NODES_MU)
		pthread_mutex_destroy(&kv->nodes_mu);
	if (h->lock_fd >= 0)
		close(h->lock_fd);
	free(kv->vfs_name);
	free(kv->dir);
	free(h);
}

/* Takes the directory's lock file (CLUSTER_LOCK), held until teardown closes it. flock() locks
 * belong to the open file description, so a second handle in this same process is refused too
 * (fcntl() locks would not be). */
static int lock_dir(cluster_handle *h, char *errmsg, size_t len)
{
	size_t n = strlen(h->kv.dir) + sizeof("/" CLUSTER_LOCK);
	char *path = malloc(n);
	int rv = RAFTKV_OK;

	if (path == NULL) {
		set_err(errmsg, len, "out of memory");
		return RAFTKV_NOMEM;
	}
	snprintf(path, n, "%s/%s", h->kv.dir, CLUSTER_LOCK);
	h->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (h->lock_fd < 0) {
		set_err(errmsg, len, "open %s: %s", path, strerror(errno));
		rv = RAFTKV_IO;
	} else if (flock(h->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		rv = errno == EWOULDBLOCK ? RAFTKV_BUSY : RAFTKV_IO;
		set_err(errmsg, len, "%s: %s", path,
		        rv == RAFTKV_BUSY ? "the cluster is open in another handle or process"
		                          : strerror(errno));
	}
	free(path);
	return rv;
}

/* Router, client, nodes, ticker: the running parts of an initialized handle. */
static int start_cluster(raftkv *kv, char *errmsg, size_t len)
{
	int rv;

	kv->router = router_new(kv->opts.n_nodes, mix64(kv->opts.seed ^ 0x524f55544552ULL));
	if (kv->router == NULL) {
		set_err(errmsg, len, "cannot create the router");
		return RAFTKV_NOMEM;
	}
	rv = client_init(kv);
	if (rv != RAFTKV_OK) {
		set_err(errmsg, len, "cannot create the client state: %s", raftkv_strerror(rv));
		return rv;
	}
	pthread_mutex_lock(&HANDLE(kv)->life_mu);
	for (uint64_t id = 1; id <= kv->opts.n_nodes && rv == RAFTKV_OK; id++)
		rv = start_node_locked(kv, id, errmsg, len);
	pthread_mutex_unlock(&HANDLE(kv)->life_mu);
	if (rv != RAFTKV_OK)
		return rv;
	rv = pthread_create(&kv->ticker, NULL, ticker_main, kv);
	if (rv != 0) {
		set_err(errmsg, len, "cannot start the ticker thread: %s", strerror(rv));
		return RAFTKV_NOMEM;
	}
	kv->ticker_started = true;
	return RAFTKV_OK;
}

int raftkv_open(const char *dir, const raftkv_options *opts, raftkv **out, char *errmsg,
                size_t errmsg_len)
{
	raftkv_options defaults;
	cluster_handle *h;
	int rv;

	set_err(errmsg, errmsg_len, "%s", "");
	if (out == NULL) {
		set_err(errmsg, errmsg_len, "out is NULL");
		return RAFTKV_INVALID;
	}
	*out = NULL;
	if (opts == NULL) {
		raftkv_options_init(&defaults);
		opts = &defaults;
	}
	rv = check_core_options(opts, errmsg, errmsg_len);
	if (rv == RAFTKV_OK)
		rv = check_gc_options(opts, errmsg, errmsg_len);
	if (rv == RAFTKV_OK)
		rv = check_dir(dir, errmsg, errmsg_len);
	if (rv != RAFTKV_OK)
		return rv;

	h = calloc(1, sizeof *h);
	if (h == NULL) {
		set_err(errmsg, errmsg_len, "out of memory");
		return RAFTKV_NOMEM;
	}
	h->lock_fd = -1;
	rv = init_handle(h, dir, opts);
	if (rv != RAFTKV_OK) {
		set_err(errmsg, errmsg_len, "out of memory");
		goto fail;
	}
	rv = lock_dir(h, errmsg, errmsg_len);
	if (rv == RAFTKV_OK)
		rv = prepare_cluster(&h->kv, errmsg, errmsg_len);
	if (rv == RAFTKV_OK)
		rv = start_cluster(&h->kv, errmsg, errmsg_len);
	if (rv != RAFTKV_OK)
		goto fail;
	*out = &h->kv;
	return RAFTKV_OK;
fail:
	atomic_store(&h->kv.closing, true);
	teardown(&h->kv);
	return rv;
}

void raftkv_close(raftkv *kv)
{
	cluster_handle *h = HANDLE(kv);

	if (kv == NULL)
		return;
	pthread_mutex_lock(&kv->status_mu);
	if (atomic_load(&kv->closing)) {
		pthread_mutex_unlock(&kv->status_mu);
		return;
	}
	atomic_store(&kv->closing, true);
	pthread_cond_broadcast(&kv->status_cv);
	while (h->callers > 0)
		pthread_cond_wait(&kv->status_cv, &kv->status_mu);
	pthread_mutex_unlock(&kv->status_mu);
	teardown(kv);
}

/* ------------------------------------------------------------------------------------------ */
/* Status and control                                                                         */
/* ------------------------------------------------------------------------------------------ */

int raftkv_node_status(raftkv *kv, uint64_t id, raftkv_status *out)
{
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	if (out == NULL || !valid_id(kv, id)) {
		rv = RAFTKV_INVALID;
	} else {
		pthread_mutex_lock(&kv->nodes_mu);
		if (kv->nodes[id - 1] != NULL)
			node_status_get(kv->nodes[id - 1], out);
		else
			*out = HANDLE(kv)->last[id - 1];
		pthread_mutex_unlock(&kv->nodes_mu);
	}
	leave(kv);
	return rv;
}

uint64_t raftkv_leader(raftkv *kv)
{
	uint64_t id;

	if (enter(kv) != RAFTKV_OK)
		return 0;
	id = current_leader(kv);
	leave(kv);
	return id;
}

/* cluster_wait predicate: some running node leads; remembers which. */
static bool have_leader(void *ctx, raftkv *kv)
{
	uint64_t *leader = ctx;

	*leader = current_leader(kv);
	return *leader != 0;
}

int raftkv_wait_leader(raftkv *kv, unsigned timeout_ms, uint64_t *id)
{
	uint64_t leader = 0;
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	rv = cluster_wait(kv, have_leader, &leader, timeout_ms);
	if (id != NULL)
		*id = rv == RAFTKV_OK ? leader : 0;
	leave(kv);
	return rv;
}

/* What raftkv_transfer_leader watches. */
typedef struct transfer_watch {
	uint64_t target; /* the node that should lead */
	uint64_t asked;  /* the leader the last request went to (0: none sent) */
	uint64_t leader; /* the leader now */
	bool stopped;    /* the target is stopped */
} transfer_watch;

/* cluster_wait predicate: something raftkv_transfer_leader must act on happened. */
static bool transfer_event(void *ctx, raftkv *kv)
{
	transfer_watch *t = ctx;

	pthread_mutex_lock(&kv->nodes_mu);
	t->stopped = kv->nodes[t->target - 1] == NULL;
	t->leader = leader_locked(kv);
	pthread_mutex_unlock(&kv->nodes_mu);
	return t->stopped || t->leader == t->target || t->leader != t->asked;
}

/*
 * Asks the current leader to transfer (dissertation §3.10) and waits. The request is sent again
 * when the leader changes, and after every election timeout, since a leader abandons a transfer
 * that has not completed within one (the target may have been behind or unreachable).
 */
int raftkv_transfer_leader(raftkv *kv, uint64_t id)
{
	transfer_watch t = {0};
	uint64_t deadline, resend_ms;
	bool sent = false;
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	if (!valid_id(kv, id)) {
		rv = RAFTKV_INVALID;
		goto out;
	}
	deadline = cluster_now_ns() + (uint64_t)kv->opts.request_timeout_ms * NS_PER_MS;
	resend_ms = kv->opts.tick_ms == 0 ? MANUAL_RESEND_MS
	                                  : (uint64_t)kv->opts.tick_ms * kv->opts.election_ticks;
	t.target = id;
	for (;;) {
		uint64_t now, slice;
		transfer_event(&t, kv);
		if (t.stopped) {
			rv = sent ? RAFTKV_TIMEOUT : RAFTKV_INVALID;
			break;
		}
		if (t.leader == id) {
			rv = RAFTKV_OK;
			break;
		}
		now = cluster_now_ns();
		if (now >= deadline) {
			rv = RAFTKV_TIMEOUT;
			break;
		}
		t.asked = t.leader;
		if (t.leader != 0) {
			router_send_control(kv->router, t.leader, NODE_ITEM_TRANSFER, id);
			sent = true;
		}
		slice = (deadline - now + NS_PER_MS - 1) / NS_PER_MS;
		if (slice > resend_ms)
			slice = resend_ms;
		if (cluster_wait(kv, transfer_event, &t, (unsigned)slice) == RAFTKV_CLOSED) {
			rv = sent ? RAFTKV_TIMEOUT : RAFTKV_CLOSED;
			break;
		}
	}
out:
	leave(kv);
	return rv;
}

int raftkv_tick(raftkv *kv, unsigned n)
{
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	/* Nodes run at most one election timeout of ticks per pass (node.c); capping here too
	 * keeps the per-node counters from wrapping. */
	if (n > kv->opts.election_ticks)
		n = kv->opts.election_ticks;
	if (n > 0)
		add_ticks(kv, n);
	leave(kv);
	return RAFTKV_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Faults                                                                                     */
/* ------------------------------------------------------------------------------------------ */

int raftkv_node_stop(raftkv *kv, uint64_t id)
{
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	if (!valid_id(kv, id)) {
		rv = RAFTKV_INVALID;
	} else {
		pthread_mutex_lock(&HANDLE(kv)->life_mu);
		stop_node_locked(kv, id);
		pthread_mutex_unlock(&HANDLE(kv)->life_mu);
		cluster_changed(kv, id);
	}
	leave(kv);
	return rv;
}

int raftkv_node_start(raftkv *kv, uint64_t id)
{
	char why[256];
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	if (!valid_id(kv, id)) {
		rv = RAFTKV_INVALID;
	} else {
		pthread_mutex_lock(&HANDLE(kv)->life_mu);
		if (kv->nodes[id - 1] == NULL) /* only life_mu holders write the slots */
			rv = start_node_locked(kv, id, why, sizeof why);
		pthread_mutex_unlock(&HANDLE(kv)->life_mu);
		cluster_changed(kv, id);
	}
	leave(kv);
	return rv;
}

/* Rates are shares in [0, 1]; NaN fails both comparisons. */
static bool rate_ok(double rate)
{
	return rate >= 0.0 && rate <= 1.0;
}

int raftkv_partition(raftkv *kv, const uint64_t *ids, size_t n)
{
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	if (ids == NULL || n == 0 || n > kv->opts.n_nodes)
		rv = RAFTKV_INVALID;
	for (size_t i = 0; rv == RAFTKV_OK && i < n; i++)
		if (!valid_id(kv, ids[i]))
			rv = RAFTKV_INVALID;
	if (rv == RAFTKV_OK)
		router_partition(kv->router, ids, n);
	leave(kv);
	return rv;
}

int raftkv_isolate(raftkv *kv, uint64_t id)
{
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	if (valid_id(kv, id))
		router_isolate(kv->router, id);
	else
		rv = RAFTKV_INVALID;
	leave(kv);
	return rv;
}

int raftkv_heal(raftkv *kv)
{
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	router_heal(kv->router);
	leave(kv);
	return RAFTKV_OK;
}

/* The body of the rate setters: validates rate and hands it to the router's setter. */
static int set_rate(raftkv *kv, double rate, void (*set)(router *r, double rate))
{
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	if (rate_ok(rate))
		set(kv->router, rate);
	else
		rv = RAFTKV_INVALID;
	leave(kv);
	return rv;
}

int raftkv_set_drop_rate(raftkv *kv, double rate)
{
	return set_rate(kv, rate, router_set_drop_rate);
}

int raftkv_set_link_drop_rate(raftkv *kv, uint64_t from, uint64_t to, double rate)
{
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	if (valid_id(kv, from) && valid_id(kv, to) && from != to && rate_ok(rate))
		router_set_link_drop_rate(kv->router, from, to, rate);
	else
		rv = RAFTKV_INVALID;
	leave(kv);
	return rv;
}

int raftkv_set_delay(raftkv *kv, unsigned min_ms, unsigned max_ms)
{
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	if (min_ms <= max_ms)
		router_set_delay(kv->router, min_ms, max_ms);
	else
		rv = RAFTKV_INVALID;
	leave(kv);
	return rv;
}

int raftkv_set_duplicate_rate(raftkv *kv, double rate)
{
	return set_rate(kv, rate, router_set_duplicate_rate);
}

int raftkv_set_snapshot_corrupt_rate(raftkv *kv, double rate)
{
	return set_rate(kv, rate, router_set_corrupt_rate);
}

int raftkv_set_reorder(raftkv *kv, double rate, unsigned max_ms)
{
	int rv = enter(kv);

	if (rv != RAFTKV_OK)
		return rv;
	if (rate_ok(rate))
		router_set_reorder(kv->router, rate, max_ms);
	else
		rv = RAFTKV_INVALID;
	leave(kv);
	return rv;
}
