/* cluster_fixture.h - helpers shared by the threaded suites that run whole raftkv clusters. */
#ifndef TESTS_CLUSTER_FIXTURE_H
#define TESTS_CLUSTER_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raftkv.h"

/*
 * Settings. Every test cluster runs fast but sane timers: tick_ms 5 (10 under a sanitizer;
 * RAFTKV_TEST_TICK_MS overrides), election 30 ticks, heartbeat 3 ticks, request timeout 3 s
 * (10 s under a sanitizer), sync off, and the suite seed. Waits for something that must happen
 * use cf_wait_ms(), which is far above any healthy latency: it only bounds a broken run.
 */

/* True in ASan/TSan builds. */
bool cf_sanitized(void);

/* The seed of this process's cluster tests: RAFTKV_TEST_SEED, else the clock; fixed on the first
 * call. Tests print it when they fail (cf_report_seed). */
uint64_t cf_seed(void);

/* Prints "<what>: failed with seed S (RAFTKV_TEST_SEED=S replays it)" to stderr. */
void cf_report_seed(const char *what);

/* splitmix64 step on *state. */
uint64_t cf_rand(uint64_t *state);

/* Tick length of test clusters in milliseconds. */
unsigned cf_tick_ms(void);

/* Upper bound, in milliseconds, for awaiting a condition that a healthy cluster reaches. */
unsigned cf_wait_ms(void);

/* raftkv_options_init, then the test settings above for n_nodes peers. */
void cf_options(raftkv_options *o, size_t n_nodes);

/* Creates /tmp/raftkv-<tag>-<pid>-XXXXXX (TMPDIR overrides /tmp) into path[len]. false on
 * failure. */
bool cf_mkdtemp(char *path, size_t len, const char *tag);

/* Removes path and everything below it. Errors are ignored. */
void cf_rmtree(const char *path);

/* raftkv_open(dir, o), then waits up to cf_wait_ms() for a leader. Returns the handle (close
 * with raftkv_close) or NULL after printing why to stderr. */
raftkv *cf_open(const char *dir, const raftkv_options *o);

/* raftkv_node_status of id; a zeroed status with role -1 if the call fails. */
raftkv_status cf_status(raftkv *kv, uint64_t id);

/* The number of nodes of kv (kv->opts.n_nodes). */
size_t cf_nodes(raftkv *kv);

/*
 * Waits up to timeout_ms until the running nodes agree: some running node is leader, and every
 * running node has commit == applied == the highest commit of any running node. With only ids
 * (n > 0) listed, only those nodes count. true when reached.
 */
bool cf_wait_converged(raftkv *kv, const uint64_t *ids, size_t n, unsigned timeout_ms);

/* Waits until one of ids[0..n) is leader; *leader (may be NULL) gets its id. true when
 * reached. */
bool cf_wait_leader_among(raftkv *kv, const uint64_t *ids, size_t n, unsigned timeout_ms,
                          uint64_t *leader);

/* Waits until node id's role differs from role. */
bool cf_wait_role_not(raftkv *kv, uint64_t id, int role, unsigned timeout_ms);

/*
 * A manual ticker for clusters opened with tick_ms 0: a thread that calls raftkv_tick(kv, 1)
 * every period_ms while not paused. Owned by the caller: cf_ticker_stop joins and frees it
 * (NULL is fine). Stop it before raftkv_close.
 */
typedef struct cf_ticker cf_ticker;
cf_ticker *cf_ticker_start(raftkv *kv, unsigned period_ms);
/* Pauses (true) or resumes ticking; returns once the thread gives no more ticks. */
void cf_ticker_pause(cf_ticker *t, bool paused);
void cf_ticker_stop(cf_ticker *t);

/* White-box: adds ticks to the listed running nodes only (node_add_ticks under nodes_mu), so a
 * test with tick_ms 0 can run one node's clock and not another's. */
void cf_tick_nodes(raftkv *kv, const uint64_t *ids, size_t n, unsigned ticks);

/*
 * White-box read probe: a GET for key sent straight to node `to` (router_send_request),
 * bypassing the client library's routing and retries, to see what that one node answers.
 * cf_probe_get returns NULL if the node is down, its mailbox full, or memory short.
 * cf_probe_wait waits up to timeout_ms for the node's first answer: true when answered, with
 * *status a REQUEST_* value (request.h) and the value copied into buf[cap] (*len its full
 * length). cf_probe_release drops the caller's reference; the probe is freed when the node has
 * dropped its own (a node answers every request it holds when it stops or closes).
 */
typedef struct cf_probe cf_probe;
cf_probe *cf_probe_get(raftkv *kv, uint64_t to, const void *key, size_t key_len);
bool cf_probe_wait(cf_probe *p, unsigned timeout_ms, int *status, void *buf, size_t cap,
                   size_t *len);
void cf_probe_release(cf_probe *p);

/*
 * Append tokens. Writer w's i-th token is "<w.i>" (cf_token writes it into buf, returns its
 * length). The outcome of each append is recorded as one of CF_OUT_*.
 */
enum { CF_OUT_NONE = 0, CF_OUT_ACKED = 1, CF_OUT_UNKNOWN = 2, CF_OUT_FAILED = 3 };
size_t cf_token(char *buf, size_t len, unsigned w, size_t i);

/* Maps a raftkv status to CF_OUT_*: OK acked, TIMEOUT and SESSION_EXPIRED unknown (an earlier
 * copy of the request may have applied; raftkv.h), anything else failed. */
int cf_outcome(int status);

/*
 * Checks a value built only of tokens: for writer w with outcomes out[0..n) (the other writers'
 * tokens are skipped), each acked token appears exactly once, each unknown token at most once,
 * no other token of w at all, and acked tokens appear in issue order. Returns true if so;
 * otherwise prints the first violation to stderr and returns false. A value that is not a
 * sequence of tokens fails.
 */
bool cf_check_tokens(const void *value, size_t len, unsigned w, const unsigned char *out, size_t n);

#endif
