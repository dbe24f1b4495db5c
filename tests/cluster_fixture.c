/* cluster_fixture.c - helpers shared by the threaded suites that run whole raftkv clusters. */
#include "cluster_fixture.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "node/request.h"
#include "store/store.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define CF_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define CF_SANITIZED 1
#endif
#endif

bool cf_sanitized(void)
{
#ifdef CF_SANITIZED
	return true;
#else
	return false;
#endif
}

static uint64_t cf_env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	char *end;
	unsigned long long x;

	if (v == NULL || *v == '\0')
		return dflt;
	errno = 0;
	x = strtoull(v, &end, 0);
	if (errno != 0 || *end != '\0')
		return dflt;
	return (uint64_t)x;
}

/* Set once, by cf_seed_init under cf_seed_once. */
static uint64_t cf_the_seed;
static pthread_once_t cf_seed_once = PTHREAD_ONCE_INIT;

static void cf_seed_init(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	cf_the_seed =
	    cf_env_u64("RAFTKV_TEST_SEED", (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^
	                                       ((uint64_t)getpid() << 32));
	if (cf_the_seed == 0)
		cf_the_seed = 1; /* 0 would ask raftkv for a clock seed */
}

uint64_t cf_seed(void)
{
	pthread_once(&cf_seed_once, cf_seed_init);
	return cf_the_seed;
}

void cf_report_seed(const char *what)
{
	fprintf(stderr,
	        "\n%s: failed with seed %" PRIu64 " (RAFTKV_TEST_SEED=%" PRIu64 " replays it)\n",
	        what, cf_seed(), cf_seed());
}

uint64_t cf_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

unsigned cf_tick_ms(void)
{
	uint64_t t = cf_env_u64("RAFTKV_TEST_TICK_MS", cf_sanitized() ? 10 : 5);

	return t == 0 || t > 1000 ? 5 : (unsigned)t;
}

unsigned cf_wait_ms(void)
{
	return cf_sanitized() ? 60000 : 20000;
}

void cf_options(raftkv_options *o, size_t n_nodes)
{
	raftkv_options_init(o);
	o->n_nodes = n_nodes;
	o->tick_ms = cf_tick_ms();
	o->election_ticks = 30;
	o->heartbeat_ticks = 3;
	o->sync = RAFTKV_SYNC_OFF;
	o->request_timeout_ms = cf_sanitized() ? 10000 : 3000;
	o->seed = cf_seed();
}

bool cf_mkdtemp(char *path, size_t len, const char *tag)
{
	const char *base = getenv("TMPDIR");
	int n;

	if (base == NULL || *base == '\0')
		base = "/tmp";
	n = snprintf(path, len, "%s/raftkv-%s-%ld-XXXXXX", base, tag, (long)getpid());
	if (n < 0 || (size_t)n >= len)
		return false;
	return mkdtemp(path) != NULL;
}

void cf_rmtree(const char *path)
{
	struct stat sb;
	DIR *d;
	struct dirent *e;
	char sub[1024];

	if (lstat(path, &sb) != 0)
		return;
	if (!S_ISDIR(sb.st_mode)) {
		unlink(path);
		return;
	}
	d = opendir(path);
	while (d != NULL && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < sizeof sub)
			cf_rmtree(sub);
	}
	if (d != NULL)
		closedir(d);
	rmdir(path);
}

raftkv *cf_open(const char *dir, const raftkv_options *o)
{
	raftkv *kv = NULL;
	char err[256] = "";
	int rv = raftkv_open(dir, o, &kv, err, sizeof err);

	if (rv != RAFTKV_OK) {
		fprintf(stderr, "\ncf_open(%s): %s: %s\n", dir, raftkv_strerror(rv), err);
		return NULL;
	}
	if (raftkv_wait_leader(kv, cf_wait_ms(), NULL) != RAFTKV_OK) {
		fprintf(stderr, "\ncf_open(%s): no leader\n", dir);
		raftkv_close(kv);
		return NULL;
	}
	return kv;
}

raftkv_status cf_status(raftkv *kv, uint64_t id)
{
	raftkv_status st;

	memset(&st, 0, sizeof st);
	if (raftkv_node_status(kv, id, &st) != RAFTKV_OK) {
		memset(&st, 0, sizeof st);
		st.role = -1;
	}
	return st;
}

size_t cf_nodes(raftkv *kv)
{
	return kv->opts.n_nodes;
}

/* The node set a predicate looks at: ids[0..n), or every node when n is 0. */
typedef struct cf_set {
	const uint64_t *ids;
	size_t n;
	uint64_t id;  /* cf_wait_role_not: the node */
	int role;     /* cf_wait_role_not: the role it must leave */
	uint64_t out; /* cf_wait_leader_among: the leader found */
} cf_set;

static size_t cf_set_size(const cf_set *s, raftkv *kv)
{
	return s->n > 0 ? s->n : cf_nodes(kv);
}

static uint64_t cf_set_id(const cf_set *s, size_t i)
{
	return s->n > 0 ? s->ids[i] : (uint64_t)i + 1;
}

static bool cf_converged_pred(void *ctx, raftkv *kv)
{
	cf_set *s = ctx;
	size_t n = cf_set_size(s, kv);
	raftkv_status st[RAFTKV_MAX_NODES];
	uint64_t max_commit = 0;
	bool leader = false, any = false;

	for (size_t i = 0; i < n && i < RAFTKV_MAX_NODES; i++) {
		st[i] = cf_status(kv, cf_set_id(s, i));
		if (st[i].role == RAFTKV_ROLE_STOPPED || st[i].role < 0)
			continue;
		any = true;
		leader |= st[i].role == RAFTKV_ROLE_LEADER;
		if (st[i].commit > max_commit)
			max_commit = st[i].commit;
	}
	if (!any || !leader)
		return false;
	for (size_t i = 0; i < n && i < RAFTKV_MAX_NODES; i++) {
		if (st[i].role == RAFTKV_ROLE_STOPPED || st[i].role < 0)
			continue;
		if (st[i].commit != max_commit || st[i].applied != max_commit)
			return false;
	}
	return true;
}

bool cf_wait_converged(raftkv *kv, const uint64_t *ids, size_t n, unsigned timeout_ms)
{
	cf_set s = {.ids = ids, .n = n};

	return cluster_wait(kv, cf_converged_pred, &s, timeout_ms) == RAFTKV_OK;
}

static bool cf_leader_among_pred(void *ctx, raftkv *kv)
{
	cf_set *s = ctx;

	for (size_t i = 0; i < cf_set_size(s, kv); i++) {
		uint64_t id = cf_set_id(s, i);

		if (cf_status(kv, id).role == RAFTKV_ROLE_LEADER) {
			s->out = id;
			return true;
		}
	}
	return false;
}

bool cf_wait_leader_among(raftkv *kv, const uint64_t *ids, size_t n, unsigned timeout_ms,
                          uint64_t *leader)
{
	cf_set s = {.ids = ids, .n = n};
	bool ok = cluster_wait(kv, cf_leader_among_pred, &s, timeout_ms) == RAFTKV_OK;

	if (leader != NULL)
		*leader = ok ? s.out : 0;
	return ok;
}

static bool cf_role_not_pred(void *ctx, raftkv *kv)
{
	cf_set *s = ctx;

	return cf_status(kv, s->id).role != s->role;
}

bool cf_wait_role_not(raftkv *kv, uint64_t id, int role, unsigned timeout_ms)
{
	cf_set s = {.id = id, .role = role};

	return cluster_wait(kv, cf_role_not_pred, &s, timeout_ms) == RAFTKV_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Manual ticker                                                                              */
/* ------------------------------------------------------------------------------------------ */

struct cf_ticker {
	raftkv *kv; /* borrowed */
	unsigned period_ms;
	pthread_t thread;
	/* mu guards paused and stop; a tick is given only with mu held, so once
	 * cf_ticker_pause(true) returns no tick is in progress. */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* CLOCK_MONOTONIC */
	bool paused;
	bool stop;
};

static void cf_deadline(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void *cf_ticker_main(void *arg)
{
	cf_ticker *t = arg;
	struct timespec next;

	pthread_mutex_lock(&t->mu);
	while (!t->stop) {
		if (t->paused) {
			pthread_cond_wait(&t->cv, &t->mu);
			continue;
		}
		raftkv_tick(t->kv, 1);
		/* The tick is the clock itself: waiting out the period is what it is for. */
		cf_deadline(&next, t->period_ms);
		while (!t->stop && !t->paused &&
		       pthread_cond_timedwait(&t->cv, &t->mu, &next) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

cf_ticker *cf_ticker_start(raftkv *kv, unsigned period_ms)
{
	cf_ticker *t = calloc(1, sizeof *t);
	pthread_condattr_t ca;

	if (t == NULL)
		return NULL;
	t->kv = kv;
	t->period_ms = period_ms == 0 ? 1 : period_ms;
	pthread_mutex_init(&t->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&t->thread, NULL, cf_ticker_main, t) != 0) {
		pthread_cond_destroy(&t->cv);
		pthread_mutex_destroy(&t->mu);
		free(t);
		return NULL;
	}
	return t;
}

void cf_ticker_pause(cf_ticker *t, bool paused)
{
	pthread_mutex_lock(&t->mu);
	t->paused = paused;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

void cf_ticker_stop(cf_ticker *t)
{
	if (t == NULL)
		return;
	pthread_mutex_lock(&t->mu);
	t->stop = true;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->thread, NULL);
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

/* ------------------------------------------------------------------------------------------ */
/* White-box helpers: per-node ticks and read probes                                         */
/* ------------------------------------------------------------------------------------------ */

void cf_tick_nodes(raftkv *kv, const uint64_t *ids, size_t n, unsigned ticks)
{
	pthread_mutex_lock(&kv->nodes_mu);
	for (size_t i = 0; i < n; i++)
		if (ids[i] >= 1 && ids[i] <= kv->opts.n_nodes && kv->nodes[ids[i] - 1] != NULL)
			node_add_ticks(kv->nodes[ids[i] - 1], ticks);
	pthread_mutex_unlock(&kv->nodes_mu);
}

#define CF_PROBE_KEY_MAX 256

struct cf_probe {
	request req; /* first member: the callbacks get &req */
	/* mu guards the answer; cv is broadcast when it arrives. */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* CLOCK_MONOTONIC */
	bool answered;
	int status;
	char value[CF_PROBE_KEY_MAX];
	size_t value_len;
	char key[CF_PROBE_KEY_MAX];
};

/* on_reply: the node thread's answer; keeps the first one. */
static void cf_probe_on_reply(request *r, uint64_t attempt, const request_reply *rep)
{
	cf_probe *p = (cf_probe *)(void *)r;

	(void)attempt;
	pthread_mutex_lock(&p->mu);
	if (!p->answered) {
		p->answered = true;
		p->status = (int)rep->status;
		p->value_len = rep->value_len;
		if (rep->value != NULL)
			memcpy(p->value, rep->value,
			       rep->value_len < sizeof p->value ? rep->value_len : sizeof p->value);
	}
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* on_free: the last reference (the caller's or a node's) is gone. */
static void cf_probe_on_free(request *r)
{
	cf_probe *p = (cf_probe *)(void *)r;

	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

cf_probe *cf_probe_get(raftkv *kv, uint64_t to, const void *key, size_t key_len)
{
	cf_probe *p;
	pthread_condattr_t ca;

	if (key_len == 0 || key_len > CF_PROBE_KEY_MAX || (p = calloc(1, sizeof *p)) == NULL)
		return NULL;
	memcpy(p->key, key, key_len);
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&p->req.refs, 1u);
	p->req.op = STORE_OP_GET;
	p->req.key = p->key;
	p->req.key_len = key_len;
	p->req.on_reply = cf_probe_on_reply;
	p->req.on_free = cf_probe_on_free;
	if (router_send_request(kv->router, to, &p->req, 1) != ROUTER_OK) {
		request_release(&p->req);
		return NULL;
	}
	return p;
}

bool cf_probe_wait(cf_probe *p, unsigned timeout_ms, int *status, void *buf, size_t cap,
                   size_t *len)
{
	struct timespec dl;
	bool ok;

	cf_deadline(&dl, timeout_ms);
	pthread_mutex_lock(&p->mu);
	while (!p->answered && pthread_cond_timedwait(&p->cv, &p->mu, &dl) != ETIMEDOUT)
		;
	ok = p->answered;
	if (ok) {
		if (status != NULL)
			*status = p->status;
		if (len != NULL)
			*len = p->value_len;
		if (buf != NULL)
			memcpy(buf, p->value, p->value_len < cap ? p->value_len : cap);
	}
	pthread_mutex_unlock(&p->mu);
	return ok;
}

void cf_probe_release(cf_probe *p)
{
	if (p != NULL)
		request_release(&p->req);
}

/* ------------------------------------------------------------------------------------------ */
/* Append tokens                                                                              */
/* ------------------------------------------------------------------------------------------ */

size_t cf_token(char *buf, size_t len, unsigned w, size_t i)
{
	int n = snprintf(buf, len, "<%u.%zu>", w, i);

	return n < 0 ? 0 : (size_t)n;
}

int cf_outcome(int status)
{
	if (status == RAFTKV_OK)
		return CF_OUT_ACKED;
	if (status == RAFTKV_TIMEOUT || status == RAFTKV_SESSION_EXPIRED)
		return CF_OUT_UNKNOWN;
	return CF_OUT_FAILED;
}

/* Parses "<w.i>" at p[0..len); returns its length, or 0 if p does not start with a token. */
static size_t cf_parse_token(const char *p, size_t len, unsigned long long *w,
                             unsigned long long *i)
{
	size_t k = 1;
	unsigned long long *cur = w;

	if (len < 5 || p[0] != '<')
		return 0;
	*w = *i = 0;
	for (; k < len && k < 48; k++) {
		char c = p[k];

		if (c >= '0' && c <= '9') {
			*cur = *cur * 10 + (unsigned long long)(c - '0');
		} else if (c == '.' && cur == w && k > 1) {
			cur = i;
		} else if (c == '>' && cur == i && p[k - 1] != '.') {
			return k + 1;
		} else {
			return 0;
		}
	}
	return 0;
}

static const char *cf_out_name(int o)
{
	switch (o) {
	case CF_OUT_ACKED:
		return "acked";
	case CF_OUT_UNKNOWN:
		return "unknown";
	case CF_OUT_FAILED:
		return "failed";
	default:
		return "never issued";
	}
}

bool cf_check_tokens(const void *value, size_t len, unsigned w, const unsigned char *out, size_t n)
{
	const char *p = value;
	unsigned *count = calloc(n + 1, sizeof *count);
	size_t pos = 0, last_acked = SIZE_MAX;
	bool ok = true;

	if (count == NULL)
		return false;
	while (ok && pos < len) {
		unsigned long long tw, ti;
		size_t k = cf_parse_token(p + pos, len - pos, &tw, &ti);

		if (k == 0) {
			fprintf(stderr, "\ntokens: garbage at byte %zu of %zu: \"%.*s\"\n", pos,
			        len, (int)(len - pos < 32 ? len - pos : 32), p + pos);
			ok = false;
			break;
		}
		pos += k;
		if (tw != w)
			continue;
		if (ti >= n || out[ti] == CF_OUT_NONE || out[ti] == CF_OUT_FAILED) {
			fprintf(stderr, "\ntokens: <%u.%llu> present but %s\n", w, ti,
			        ti >= n ? "never issued" : cf_out_name(out[ti]));
			ok = false;
			break;
		}
		if (++count[ti] > 1) {
			fprintf(stderr, "\ntokens: <%u.%llu> (%s) present %u times\n", w, ti,
			        cf_out_name(out[ti]), count[ti]);
			ok = false;
			break;
		}
		if (out[ti] == CF_OUT_ACKED) {
			if (last_acked != SIZE_MAX && ti < last_acked) {
				fprintf(stderr, "\ntokens: acked <%u.%llu> after acked <%u.%zu>\n",
				        w, ti, w, last_acked);
				ok = false;
				break;
			}
			last_acked = (size_t)ti;
		}
	}
	for (size_t i = 0; ok && i < n; i++) {
		if (out[i] == CF_OUT_ACKED && count[i] != 1) {
			fprintf(stderr, "\ntokens: acked <%u.%zu> missing\n", w, i);
			ok = false;
		}
	}
	free(count);
	return ok;
}
