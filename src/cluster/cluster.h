/* cluster.h - the raftkv handle's internals, shared by cluster.c, client.c and the tests. */
#ifndef RAFTKV_CLUSTER_CLUSTER_H
#define RAFTKV_CLUSTER_CLUSTER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster/router.h"
#include "node/node.h"
#include "raftkv.h"

/*
 * Threads of a handle: one per running node (node.c), the router's delivery thread (router.c),
 * and the ticker (cluster.c), which every tick_ms adds a tick to each running node and runs the
 * client timers (client_timer). Callers of the API run on their own threads.
 *
 * Lock order: nodes_mu, then status_mu; client locks (client.c) are never held while taking
 * nodes_mu. Node threads take status_mu only to publish a change (cluster_changed).
 */

typedef struct client_state client_state;

/* The cluster manifest, `raftkv.cluster` in the directory. */
#define CLUSTER_MANIFEST "raftkv.cluster"
/* The lock file: one handle at a time per directory (flock). */
#define CLUSTER_LOCK "raftkv.lock"

struct raftkv {
	raftkv_options opts; /* validated copy; opts.vfs points into vfs_name */
	char *vfs_name;      /* owned copy of the VFS name, or NULL */
	char *dir;           /* owned copy of the directory */
	uint64_t cluster_id;
	router *router;

	/* Node slots, index id - 1. nodes_mu serializes start/stop and guards the pointers; the
	 * ticker reads them under it. */
	pthread_mutex_t nodes_mu;
	node *nodes[RAFTKV_MAX_NODES];

	/* Status changes: status_gen counts them, status_cv is broadcast on each. */
	pthread_mutex_t status_mu;
	pthread_cond_t status_cv;
	uint64_t status_gen;

	/* The ticker thread and its stop signal (guarded by ticker_mu). */
	pthread_t ticker;
	bool ticker_started;
	pthread_mutex_t ticker_mu;
	pthread_cond_t ticker_cv;
	bool ticker_stop;

	atomic_bool closing; /* set first by raftkv_close: new calls return RAFTKV_CLOSED */
	client_state *client;
};

/* Called by a node thread after a status change (node_config.changed). */
void cluster_changed(void *ctx, uint64_t node_id);

/*
 * Waits until pred(ctx, kv) returns true, re-evaluating it after every status change of any
 * node, up to timeout_ms. RAFTKV_OK or RAFTKV_TIMEOUT. pred runs on the caller's thread with no
 * lock held. For tests and raftkv_wait_leader / raftkv_transfer_leader.
 */
int cluster_wait(raftkv *kv, bool (*pred)(void *ctx, raftkv *kv), void *ctx, unsigned timeout_ms);

/* Monotonic clock in nanoseconds. */
uint64_t cluster_now_ns(void);

/* ------------------------------------------------------------------------------------------ */
/* The client side (client.c)                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Creates kv->client. RAFTKV_OK or RAFTKV_NOMEM. */
int client_init(raftkv *kv);

/* The ticker's hook, every period: resends attempts that timed out, retries after backoff, and
 * fails calls past their deadline with RAFTKV_TIMEOUT. */
void client_timer(raftkv *kv, uint64_t now_ns);

/* raftkv_close's first step, after kv->closing is set and before any node stops: completes every
 * call in flight (RAFTKV_CLOSED if never sent, else RAFTKV_TIMEOUT), runs pending async
 * callbacks, and waits until every blocking caller has left the library. */
void client_shutdown(raftkv *kv);

/* Frees kv->client once no request references remain outside it (after every node stopped and
 * the router is freed). */
void client_free(raftkv *kv);

#endif /* RAFTKV_CLUSTER_CLUSTER_H */
