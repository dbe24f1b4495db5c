/* test_router.c - CUnit suite "router": delivery, detach, faults, held messages, stress. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/router.h"
#include "node/mailbox.h"
#include "node/node.h"
#include "node/request.h"
#include "raft.h"
#include "suites.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define RT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define RT_SANITIZED 1
#endif
#endif
#ifdef RT_SANITIZED
#define RT_STRESS_OPS 6000u
#else
#define RT_STRESS_OPS 40000u
#endif

#define RT_MAX_NODES 5
#define RT_WAIT_NS   (30ll * 1000000000ll) /* only keeps a broken router from hanging the suite */
#define RT_MS        UINT64_C(1000000)

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t rt_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64, the tests' own randomness (the router has its own). */
static uint64_t rt_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* RAFTKV_ROUTER_SEED or dflt (0: from the clock). */
static uint64_t rt_seed(uint64_t dflt)
{
	const char *v = getenv("RAFTKV_ROUTER_SEED");

	if (v != NULL && *v != '\0')
		return strtoull(v, NULL, 0);
	if (dflt != 0)
		return dflt;
	return rt_now_ns() ^ ((uint64_t)getpid() << 32);
}

/* Prints the seed when the test that started with `failures` failures added one. */
static void rt_report_seed(const char *test, uint64_t seed, unsigned failures)
{
	if (CU_get_number_of_failures() != failures)
		printf("\nrouter %s: FAILED with seed %" PRIu64 " (RAFTKV_ROUTER_SEED to replay)\n",
		       test, seed);
}

/* Sends an APPEND from -> to whose index is `tag` and which carries one entry "tag=<tag>". */
static void rt_send(router *r, uint64_t from, uint64_t to, uint64_t tag)
{
	char data[32];
	raft_entry e = {0};
	raft_message m = {0};

	snprintf(data, sizeof(data), "tag=%" PRIu64, tag);
	e.type = RAFT_ENTRY_NORMAL;
	e.term = from * 10;
	e.index = tag + 1;
	e.data = data;
	e.len = strlen(data);
	m.type = RAFT_MSG_APPEND;
	m.from = from;
	m.to = to;
	m.term = from * 10;
	m.log_term = 3;
	m.index = tag;
	m.commit = 2;
	m.entries = &e;
	m.n_entries = 1;
	router_send_raft(r, &m);
}

/* Checks that an item is a Raft message built by rt_send for `to`, frees it, and returns its
 * tag and sender (UINT64_MAX when it is not). */
static uint64_t rt_check_raft(const mailbox_item *it, uint64_t to, uint64_t *from)
{
	raft_message m;
	char want[32];
	uint64_t tag = UINT64_MAX;

	CU_ASSERT_EQUAL_FATAL(it->kind, NODE_ITEM_RAFT);
	CU_ASSERT_EQUAL_FATAL(raft_message_decode(it->ptr, it->arg, &m), RAFT_OK);
	free(it->ptr);
	CU_ASSERT_EQUAL(m.type, RAFT_MSG_APPEND);
	CU_ASSERT_EQUAL(m.to, to);
	CU_ASSERT_EQUAL(m.term, m.from * 10);
	CU_ASSERT_EQUAL(m.log_term, 3);
	CU_ASSERT_EQUAL(m.commit, 2);
	CU_ASSERT_EQUAL_FATAL(m.n_entries, 1);
	snprintf(want, sizeof(want), "tag=%" PRIu64, m.index);
	CU_ASSERT_EQUAL(m.entries[0].index, m.index + 1);
	CU_ASSERT(m.entries[0].len == strlen(want) &&
	          memcmp(m.entries[0].data, want, m.entries[0].len) == 0);
	if (m.to == to)
		tag = m.index;
	if (from != NULL)
		*from = m.from;
	raft_message_free(&m);
	return tag;
}

/* Pops one item, waiting up to timeout_ns for it (mailbox wait protocol, no polling). */
static bool rt_wait_pop(mailbox *mb, mailbox_item *it, int64_t timeout_ns)
{
	uint64_t deadline = rt_now_ns() + (uint64_t)timeout_ns;

	for (;;) {
		uint64_t key, now;

		if (mailbox_pop(mb, it) == MAILBOX_OK)
			return true;
		key = mailbox_prepare_wait(mb);
		if (mailbox_pop(mb, it) == MAILBOX_OK) {
			mailbox_cancel_wait(mb);
			return true;
		}
		now = rt_now_ns();
		if (now >= deadline) {
			mailbox_cancel_wait(mb);
			return false;
		}
		mailbox_wait(mb, key, (int64_t)(deadline - now));
	}
}

/* Pops and frees every Raft item now in mb; returns their number. */
static unsigned rt_drain(mailbox *mb, uint64_t id)
{
	mailbox_item it;
	unsigned n = 0;

	while (mailbox_pop(mb, &it) == MAILBOX_OK) {
		rt_check_raft(&it, id, NULL);
		n++;
	}
	return n;
}

/* A router over n nodes, each attached to its own mailbox of capacity cap. */
typedef struct rt_net {
	router *r;
	size_t n;
	mailbox *mb[RT_MAX_NODES + 1]; /* index = node id */
} rt_net;

static bool rt_net_init(rt_net *net, size_t n, size_t cap, uint64_t seed)
{
	memset(net, 0, sizeof(*net));
	net->n = n;
	net->r = router_new(n, seed);
	if (net->r == NULL)
		return false;
	for (size_t i = 1; i <= n; i++) {
		net->mb[i] = mailbox_create(cap);
		if (net->mb[i] == NULL)
			return false;
		router_attach(net->r, i, net->mb[i]);
	}
	return true;
}

/* Detaches all, frees the router (and what it holds), drains and frees the mailboxes. */
static void rt_net_free(rt_net *net)
{
	for (size_t i = 1; i <= net->n; i++)
		router_detach(net->r, i);
	router_free(net->r);
	for (size_t i = 1; i <= net->n; i++) {
		if (net->mb[i] != NULL)
			rt_drain(net->mb[i], i);
		mailbox_destroy(net->mb[i]);
	}
}

/* A client request whose on_free counts its calls. */
typedef struct rt_req {
	request req;
	atomic_int freed;
} rt_req;

static void rt_req_free(request *r)
{
	rt_req *q = (rt_req *)r;

	atomic_fetch_add(&q->freed, 1);
}

static void rt_req_reply(request *r, uint64_t attempt, const request_reply *rep)
{
	(void)r;
	(void)attempt;
	(void)rep;
}

static void rt_req_init(rt_req *q)
{
	memset(q, 0, sizeof(*q));
	atomic_init(&q->req.refs, 1);
	atomic_init(&q->freed, 0);
	q->req.op = REQUEST_OP_SCAN;
	q->req.on_reply = rt_req_reply;
	q->req.on_free = rt_req_free;
}

static unsigned rt_refs(rt_req *q)
{
	return atomic_load(&q->req.refs);
}

/* Pops one item that must be a copy of q with this attempt, and drops its reference. */
static void rt_pop_request(mailbox *mb, rt_req *q, uint64_t attempt)
{
	mailbox_item it;

	CU_ASSERT_EQUAL_FATAL(mailbox_pop(mb, &it), MAILBOX_OK);
	CU_ASSERT_EQUAL_FATAL(it.kind, NODE_ITEM_REQUEST);
	CU_ASSERT_PTR_EQUAL_FATAL(it.ptr, &q->req);
	CU_ASSERT_EQUAL(it.arg, attempt);
	request_release(it.ptr);
}

/*
 * Sends one message over every directed pair (from != to) and records in got[from][to] which
 * arrived. Only for routers without holds: every push is done when router_send_raft returns.
 */
static void rt_matrix(rt_net *net, bool got[RT_MAX_NODES + 1][RT_MAX_NODES + 1])
{
	memset(got, 0, sizeof(bool) * (RT_MAX_NODES + 1) * (RT_MAX_NODES + 1));
	for (uint64_t f = 1; f <= net->n; f++)
		for (uint64_t t = 1; t <= net->n; t++)
			if (f != t)
				rt_send(net->r, f, t, f * 100 + t);
	for (uint64_t t = 1; t <= net->n; t++) {
		mailbox_item it;

		while (mailbox_pop(net->mb[t], &it) == MAILBOX_OK) {
			uint64_t from, tag = rt_check_raft(&it, t, &from);

			CU_ASSERT_EQUAL(tag, from * 100 + t);
			CU_ASSERT_FATAL(from >= 1 && from <= net->n);
			CU_ASSERT(!got[from][t]);
			got[from][t] = true;
		}
	}
}

/* Whether from reaches to when group A is the set bits of a_mask (bit id) and the rest is B;
 * a_mask 0 means no partition. */
static bool rt_same_side(uint64_t a_mask, uint64_t from, uint64_t to)
{
	return a_mask == 0 || (((a_mask >> from) & 1) == ((a_mask >> to) & 1));
}

/* Asserts the matrix: each directed pair delivered iff rt_same_side, minus the cut links. */
static void rt_expect_matrix(rt_net *net, const char *what, uint64_t a_mask,
                             const uint64_t (*cut)[2], size_t n_cut)
{
	bool got[RT_MAX_NODES + 1][RT_MAX_NODES + 1];

	rt_matrix(net, got);
	for (uint64_t f = 1; f <= net->n; f++) {
		for (uint64_t t = 1; t <= net->n; t++) {
			bool want = f != t && rt_same_side(a_mask, f, t);

			for (size_t i = 0; i < n_cut; i++)
				if (cut[i][0] == f && cut[i][1] == t)
					want = false;
			if (got[f][t] != want)
				printf("\nrouter matrix %s: %" PRIu64 " -> %" PRIu64 " %s\n", what,
				       f, t, want ? "lost" : "delivered");
			CU_ASSERT_EQUAL(got[f][t], want);
		}
	}
}

/* Asserts that no directed pair delivered anything. */
static void rt_expect_none(rt_net *net, const char *what)
{
	bool got[RT_MAX_NODES + 1][RT_MAX_NODES + 1];

	rt_matrix(net, got);
	for (uint64_t f = 1; f <= net->n; f++) {
		for (uint64_t t = 1; t <= net->n; t++) {
			if (got[f][t])
				printf("\nrouter matrix %s: %" PRIu64 " -> %" PRIu64 " delivered\n",
				       what, f, t);
			CU_ASSERT(!got[f][t]);
		}
	}
}

/* ---- delivery ----------------------------------------------------------------------------- */

static void test_new_free(void)
{
	errno = 0;
	CU_ASSERT_PTR_NULL(router_new(0, 1));
	CU_ASSERT_EQUAL(errno, EINVAL);
	router_free(NULL);
	router *r = router_new(3, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	router_free(r);
}

static void test_delivery_detach(void)
{
	rt_net net;
	router_stats st;
	rt_req q;
	mailbox_item it;

	rt_req_init(&q);
	CU_ASSERT_FATAL(rt_net_init(&net, 3, 64, 1));
	/* Every pair, content checked by decoding. */
	rt_expect_matrix(&net, "attached", 0, NULL, 0);
	router_stats_get(net.r, &st);
	CU_ASSERT_EQUAL(st.raft_sent, 6);
	CU_ASSERT_EQUAL(st.raft_delivered, 6);
	CU_ASSERT_EQUAL(st.dropped, 0);

	/* Node 2 stopped: nothing reaches it, requests and controls are ROUTER_DOWN. */
	router_detach(net.r, 2);
	for (uint64_t f = 1; f <= 3; f++)
		rt_send(net.r, f, 2, 7);
	CU_ASSERT_EQUAL(mailbox_pop(net.mb[2], &it), MAILBOX_EMPTY);
	router_stats_get(net.r, &st);
	CU_ASSERT_EQUAL(st.raft_sent, 9);
	CU_ASSERT_EQUAL(st.dropped, 3);
	CU_ASSERT_EQUAL(router_send_request(net.r, 2, &q.req, 1), ROUTER_DOWN);
	CU_ASSERT_EQUAL(router_send_control(net.r, 2, NODE_ITEM_CAMPAIGN, 0), ROUTER_DOWN);
	CU_ASSERT_EQUAL(mailbox_pop(net.mb[2], &it), MAILBOX_EMPTY);
	CU_ASSERT_EQUAL(rt_refs(&q), 1);
	/* Unknown ids. */
	CU_ASSERT_EQUAL(router_send_request(net.r, 0, &q.req, 1), ROUTER_DOWN);
	CU_ASSERT_EQUAL(router_send_request(net.r, 4, &q.req, 1), ROUTER_DOWN);
	CU_ASSERT_EQUAL(router_send_control(net.r, 9, NODE_ITEM_CAMPAIGN, 0), ROUTER_DOWN);
	rt_send(net.r, 1, 4, 1);
	rt_send(net.r, 1, 0, 1);
	router_attach(net.r, 0, net.mb[1]); /* ignored */
	router_attach(net.r, 4, net.mb[1]);
	rt_send(net.r, 1, 4, 1);
	CU_ASSERT_EQUAL(mailbox_pop(net.mb[1], &it), MAILBOX_EMPTY);
	CU_ASSERT_EQUAL(rt_refs(&q), 1);

	/* Requests and controls to a running node. */
	CU_ASSERT_EQUAL(router_send_request(net.r, 1, &q.req, 42), ROUTER_OK);
	CU_ASSERT_EQUAL(rt_refs(&q), 2);
	rt_pop_request(net.mb[1], &q, 42);
	CU_ASSERT_EQUAL(rt_refs(&q), 1);
	CU_ASSERT_EQUAL(router_send_control(net.r, 3, NODE_ITEM_TRANSFER, 2), ROUTER_OK);
	CU_ASSERT_EQUAL_FATAL(mailbox_pop(net.mb[3], &it), MAILBOX_OK);
	CU_ASSERT_EQUAL(it.kind, NODE_ITEM_TRANSFER);
	CU_ASSERT_EQUAL(it.arg, 2);

	/* Restarted: delivered again. */
	router_attach(net.r, 2, net.mb[2]);
	rt_expect_matrix(&net, "reattached", 0, NULL, 0);
	router_stats_get(net.r, &st);
	CU_ASSERT_EQUAL(st.requests, 1);
	rt_net_free(&net);
	request_release(&q.req);
	CU_ASSERT_EQUAL(atomic_load(&q.freed), 1);
}

/* A full mailbox: Raft messages are dropped (and freed: ASan), requests and controls FULL. */
static void test_full_mailbox(void)
{
	rt_net net;
	router_stats st;
	rt_req q;
	mailbox_item it;

	rt_req_init(&q);
	CU_ASSERT_FATAL(rt_net_init(&net, 2, 2, 1));
	for (uint64_t i = 0; i < 5; i++)
		rt_send(net.r, 2, 1, i);
	router_stats_get(net.r, &st);
	CU_ASSERT_EQUAL(st.raft_delivered, 2);
	CU_ASSERT_EQUAL(st.dropped, 3);
	CU_ASSERT_EQUAL(router_send_request(net.r, 1, &q.req, 1), ROUTER_FULL);
	CU_ASSERT_EQUAL(rt_refs(&q), 1);
	CU_ASSERT_EQUAL(router_send_control(net.r, 1, NODE_ITEM_CAMPAIGN, 0), ROUTER_FULL);
	/* The oldest two survived, in order. */
	CU_ASSERT_EQUAL_FATAL(mailbox_pop(net.mb[1], &it), MAILBOX_OK);
	CU_ASSERT_EQUAL(rt_check_raft(&it, 1, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(mailbox_pop(net.mb[1], &it), MAILBOX_OK);
	CU_ASSERT_EQUAL(rt_check_raft(&it, 1, NULL), 1);

	/* One free slot and a duplicate: the first copy goes in, the second is dropped. */
	CU_ASSERT_EQUAL(router_send_control(net.r, 1, NODE_ITEM_CAMPAIGN, 5), ROUTER_OK);
	router_set_duplicate_rate(net.r, 1.0);
	CU_ASSERT_EQUAL(router_send_request(net.r, 1, &q.req, 3), ROUTER_OK);
	CU_ASSERT_EQUAL(rt_refs(&q), 2);
	router_stats_get(net.r, &st);
	CU_ASSERT_EQUAL(st.requests, 1);
	CU_ASSERT_EQUAL(st.dropped, 4);
	CU_ASSERT_EQUAL_FATAL(mailbox_pop(net.mb[1], &it), MAILBOX_OK);
	CU_ASSERT_EQUAL(it.kind, NODE_ITEM_CAMPAIGN);
	CU_ASSERT_EQUAL(it.arg, 5);
	rt_pop_request(net.mb[1], &q, 3);
	CU_ASSERT_EQUAL(mailbox_pop(net.mb[1], &it), MAILBOX_EMPTY);
	CU_ASSERT_EQUAL(rt_refs(&q), 1);
	CU_ASSERT_EQUAL(atomic_load(&q.freed), 0);
	rt_net_free(&net);
	request_release(&q.req);
	CU_ASSERT_EQUAL(atomic_load(&q.freed), 1);
}

/* One reference per copy; the free callback runs once, after the very last release. */
static void test_request_refs(void)
{
	rt_net net;
	rt_req q;
	router_stats st;

	rt_req_init(&q);
	CU_ASSERT_FATAL(rt_net_init(&net, 2, 64, 1));
	router_set_duplicate_rate(net.r, 1.0);
	for (uint64_t a = 1; a <= 3; a++)
		CU_ASSERT_EQUAL(router_send_request(net.r, 2, &q.req, a), ROUTER_OK);
	CU_ASSERT_EQUAL(rt_refs(&q), 7);
	router_stats_get(net.r, &st);
	CU_ASSERT_EQUAL(st.requests, 6);
	CU_ASSERT_EQUAL(st.duplicated, 3);
	/* The client gives up first; the copies keep the request alive. */
	request_release(&q.req);
	for (uint64_t a = 1; a <= 3; a++) {
		rt_pop_request(net.mb[2], &q, a);
		CU_ASSERT_EQUAL(atomic_load(&q.freed), 0);
		rt_pop_request(net.mb[2], &q, a);
		CU_ASSERT_EQUAL(atomic_load(&q.freed), a == 3 ? 1 : 0);
	}
	CU_ASSERT_EQUAL(rt_refs(&q), 0);
	CU_ASSERT_EQUAL(atomic_load(&q.freed), 1);
	rt_net_free(&net);
}

/* ---- partitions and rates ----------------------------------------------------------------- */

static void test_partition_matrix(void)
{
	static const uint64_t g12[] = {1, 2}, g3[] = {3}, gbad[] = {0, 9, 2, 2};
	rt_net net;
	rt_req q;

	rt_req_init(&q);
	CU_ASSERT_FATAL(rt_net_init(&net, 5, 64, 1));
	rt_expect_matrix(&net, "none", 0, NULL, 0);
	router_partition(net.r, g12, 2);
	rt_expect_matrix(&net, "{1,2}", (1u << 1) | (1u << 2), NULL, 0);
	/* A new partition replaces the old one. */
	router_partition(net.r, g3, 1);
	rt_expect_matrix(&net, "{3}", 1u << 3, NULL, 0);
	router_isolate(net.r, 5);
	rt_expect_matrix(&net, "isolate 5", 1u << 5, NULL, 0);
	/* Clients and controls reach every running node. */
	CU_ASSERT_EQUAL(router_send_request(net.r, 5, &q.req, 9), ROUTER_OK);
	rt_pop_request(net.mb[5], &q, 9);
	CU_ASSERT_EQUAL(router_send_control(net.r, 5, NODE_ITEM_CAMPAIGN, 0), ROUTER_OK);
	{
		mailbox_item it;

		CU_ASSERT_EQUAL(mailbox_pop(net.mb[5], &it), MAILBOX_OK);
		CU_ASSERT_EQUAL(it.kind, NODE_ITEM_CAMPAIGN);
	}
	/* Unknown ids are ignored. */
	router_partition(net.r, gbad, 4);
	rt_expect_matrix(&net, "{0,9,2,2}", 1u << 2, NULL, 0);
	router_isolate(net.r, 7);
	rt_expect_matrix(&net, "isolate 7", 0x3e, NULL, 0); /* everyone in B: no cut */
	router_heal(net.r);
	rt_expect_matrix(&net, "healed", 0, NULL, 0);
	router_isolate(net.r, 1);
	router_heal(net.r);
	rt_expect_matrix(&net, "isolate then heal", 0, NULL, 0);
	rt_net_free(&net);
	request_release(&q.req);
	CU_ASSERT_EQUAL(atomic_load(&q.freed), 1);
}

static void test_link_drop(void)
{
	static const uint64_t cut1[][2] = {{1, 2}}, cut2[][2] = {{1, 2}, {3, 1}};
	rt_net net;
	rt_req q;

	rt_req_init(&q);
	CU_ASSERT_FATAL(rt_net_init(&net, 3, 64, 1));
	router_set_link_drop_rate(net.r, 1, 2, 1.0);
	rt_expect_matrix(&net, "1->2", 0, cut1, 1);
	router_set_link_drop_rate(net.r, 3, 1, 2.5); /* clamped to 1 */
	router_set_link_drop_rate(net.r, 0, 1, 1.0); /* ignored */
	router_set_link_drop_rate(net.r, 1, 4, 1.0);
	rt_expect_matrix(&net, "1->2, 3->1", 0, cut2, 2);
	/* Link rates do not touch clients. */
	CU_ASSERT_EQUAL(router_send_request(net.r, 2, &q.req, 1), ROUTER_OK);
	rt_pop_request(net.mb[2], &q, 1);
	router_set_link_drop_rate(net.r, 3, 1, 0.0);
	rt_expect_matrix(&net, "1->2 again", 0, cut1, 1);
	router_set_link_drop_rate(net.r, 1, 2, -3.0); /* clamped to 0 */
	rt_expect_matrix(&net, "no link rates", 0, NULL, 0);
	router_set_link_drop_rate(net.r, 2, 3, 1.0);
	router_partition(net.r, (const uint64_t[]){1}, 1);
	router_heal(net.r);
	rt_expect_matrix(&net, "healed", 0, NULL, 0);
	rt_net_free(&net);
	request_release(&q.req);
}

static void test_drop_rate(void)
{
	uint64_t seed = rt_seed(7);
	unsigned failures = CU_get_number_of_failures();
	rt_net net;
	router_stats st;
	rt_req q;
	mailbox_item it;
	unsigned got = 0;
	const unsigned n_half = 2000;

	rt_req_init(&q);
	CU_ASSERT_FATAL(rt_net_init(&net, 3, 256, seed));
	router_set_drop_rate(net.r, 1.0);
	rt_expect_none(&net, "drop all");
	router_stats_get(net.r, &st);
	CU_ASSERT_EQUAL(st.dropped, 6);
	CU_ASSERT_EQUAL(st.raft_delivered, 0);
	/* The global rate also eats client requests: OK, nothing pushed, no reference taken. */
	CU_ASSERT_EQUAL(router_send_request(net.r, 1, &q.req, 1), ROUTER_OK);
	CU_ASSERT_EQUAL(rt_refs(&q), 1);
	CU_ASSERT_EQUAL(mailbox_pop(net.mb[1], &it), MAILBOX_EMPTY);
	/* Controls never suffer faults. */
	CU_ASSERT_EQUAL(router_send_control(net.r, 1, NODE_ITEM_CAMPAIGN, 0), ROUTER_OK);
	CU_ASSERT_EQUAL(mailbox_pop(net.mb[1], &it), MAILBOX_OK);

	/* Half: some of each, never both fates for one message. */
	router_set_drop_rate(net.r, 0.5);
	for (unsigned i = 0; i < n_half; i++) {
		rt_send(net.r, 1, 2, i);
		if (i % 128 == 127)
			got += rt_drain(net.mb[2], 2);
	}
	got += rt_drain(net.mb[2], 2);
	router_stats_get(net.r, &st);
	printf("\nrouter drop 0.5: %u of %u delivered\n", got, n_half);
	CU_ASSERT(got > n_half / 4 && got < n_half * 3 / 4);
	CU_ASSERT_EQUAL(st.raft_delivered, got);
	CU_ASSERT_EQUAL(st.raft_sent, 6 + n_half);
	CU_ASSERT_EQUAL(st.dropped, 6 + 1 + (n_half - got));

	router_set_drop_rate(net.r, 9.0); /* clamped to 1 */
	rt_expect_none(&net, "drop clamped");
	router_set_drop_rate(net.r, -1.0); /* clamped to 0 */
	rt_expect_matrix(&net, "drop off", 0, NULL, 0);
	router_set_drop_rate(net.r, 1.0);
	router_heal(net.r);
	rt_expect_matrix(&net, "healed", 0, NULL, 0);
	rt_net_free(&net);
	request_release(&q.req);
	rt_report_seed("drop rate", seed, failures);
}

static void test_duplicate(void)
{
	rt_net net;
	router_stats st;
	mailbox_item it;

	CU_ASSERT_FATAL(rt_net_init(&net, 2, 64, 1));
	router_set_duplicate_rate(net.r, 1.0);
	for (uint64_t i = 0; i < 4; i++)
		rt_send(net.r, 1, 2, i);
	for (uint64_t i = 0; i < 4; i++) {
		CU_ASSERT_EQUAL_FATAL(mailbox_pop(net.mb[2], &it), MAILBOX_OK);
		CU_ASSERT_EQUAL(rt_check_raft(&it, 2, NULL), i);
		CU_ASSERT_EQUAL_FATAL(mailbox_pop(net.mb[2], &it), MAILBOX_OK);
		CU_ASSERT_EQUAL(rt_check_raft(&it, 2, NULL), i);
	}
	CU_ASSERT_EQUAL(mailbox_pop(net.mb[2], &it), MAILBOX_EMPTY);
	router_stats_get(net.r, &st);
	CU_ASSERT_EQUAL(st.raft_sent, 4);
	CU_ASSERT_EQUAL(st.raft_delivered, 8);
	CU_ASSERT_EQUAL(st.duplicated, 4);
	router_set_duplicate_rate(net.r, 0.0);
	rt_send(net.r, 1, 2, 9);
	CU_ASSERT_EQUAL(rt_drain(net.mb[2], 2), 1);
	rt_net_free(&net);
}

/* ---- held messages ------------------------------------------------------------------------ */

/* Delayed messages arrive, each exactly once, and never before the minimum delay. */
static void test_delay(void)
{
	uint64_t seed = rt_seed(11);
	unsigned failures = CU_get_number_of_failures();
	const unsigned n_msgs = 20;
	bool seen[20] = {false};
	rt_net net;
	router_stats st;
	mailbox_item it;
	uint64_t t0;

	CU_ASSERT_FATAL(rt_net_init(&net, 2, 64, seed));
	router_set_delay(net.r, 80, 30); /* read as [30, 80] */
	t0 = rt_now_ns();
	for (unsigned i = 0; i < n_msgs; i++)
		rt_send(net.r, 1, 2, i);
	router_stats_get(net.r, &st);
	CU_ASSERT_EQUAL(st.held, n_msgs);
	for (unsigned i = 0; i < n_msgs; i++) {
		uint64_t tag;

		CU_ASSERT_FATAL(rt_wait_pop(net.mb[2], &it, RT_WAIT_NS));
		CU_ASSERT(rt_now_ns() - t0 >= 30 * RT_MS);
		tag = rt_check_raft(&it, 2, NULL);
		CU_ASSERT_FATAL(tag < n_msgs);
		CU_ASSERT(!seen[tag]);
		seen[tag] = true;
	}
	router_stats_get(net.r, &st);
	CU_ASSERT_EQUAL(st.raft_delivered, n_msgs);
	CU_ASSERT_EQUAL(st.dropped, 0);
	/* Healed: immediate again. */
	router_heal(net.r);
	rt_send(net.r, 1, 2, 0);
	CU_ASSERT_EQUAL(rt_drain(net.mb[2], 2), 1);
	rt_net_free(&net);
	rt_report_seed("delay", seed, failures);
}

/*
 * A held message is checked again when it falls due: dropped if its destination stopped or a
 * partition cut its link meanwhile. A marker sent after them with the same fixed delay falls due
 * after them, and the single delivery thread handles held messages in due order, so once the
 * marker is in, their fate is sealed. The check is skipped (and said so) only when this thread
 * was stalled so long that the messages may have been delivered before the faults were set.
 */
static void test_held_recheck(void)
{
	const unsigned delay_ms = 300;
	rt_net net;
	router_stats st;
	mailbox_item it;
	uint64_t t0, t1;

	CU_ASSERT_FATAL(rt_net_init(&net, 4, 64, 1));
	router_set_delay(net.r, delay_ms, delay_ms);
	t0 = rt_now_ns();
	rt_send(net.r, 1, 2, 1); /* cut by the partition below */
	rt_send(net.r, 1, 3, 2); /* 3 stops */
	router_isolate(net.r, 2);
	router_detach(net.r, 3);
	t1 = rt_now_ns();
	rt_send(net.r, 4, 1, 3); /* the marker: 4 and 1 are both in group B */
	CU_ASSERT_FATAL(rt_wait_pop(net.mb[1], &it, RT_WAIT_NS));
	CU_ASSERT_EQUAL(rt_check_raft(&it, 1, NULL), 3);
	router_stats_get(net.r, &st);
	if (t1 - t0 < delay_ms * RT_MS) {
		CU_ASSERT_EQUAL(mailbox_pop(net.mb[2], &it), MAILBOX_EMPTY);
		CU_ASSERT_EQUAL(mailbox_pop(net.mb[3], &it), MAILBOX_EMPTY);
		CU_ASSERT_EQUAL(st.dropped, 2);
		CU_ASSERT_EQUAL(st.raft_delivered, 1);
	} else {
		printf("\nrouter held recheck: stalled %" PRIu64 " ms, check skipped\n",
		       (t1 - t0) / RT_MS);
	}
	CU_ASSERT_EQUAL(st.held, 3);
	rt_net_free(&net);
}

/*
 * Reordering: every message arrives exactly once, and some arrive out of order. With the fixed
 * seed the router's draws are fixed; an inversion is certain when a message held longer than
 * the whole send loop precedes one sent at once, so the inversion is asserted only when the
 * loop took under 100 ms (a share of the 400 ms maximum hold).
 */
static void test_reorder(void)
{
	uint64_t seed = rt_seed(42);
	unsigned failures = CU_get_number_of_failures();
	enum { N = 300 };
	bool seen[N] = {false};
	rt_net net;
	router_stats st;
	mailbox_item it;
	uint64_t t0, t1, last = 0;
	unsigned inversions = 0;

	CU_ASSERT_FATAL(rt_net_init(&net, 2, 512, seed));
	router_set_reorder(net.r, 0.5, 400);
	t0 = rt_now_ns();
	for (unsigned i = 0; i < N; i++)
		rt_send(net.r, 1, 2, i);
	t1 = rt_now_ns();
	for (unsigned i = 0; i < N; i++) {
		uint64_t tag;

		CU_ASSERT_FATAL(rt_wait_pop(net.mb[2], &it, RT_WAIT_NS));
		tag = rt_check_raft(&it, 2, NULL);
		CU_ASSERT_FATAL(tag < N);
		CU_ASSERT(!seen[tag]);
		seen[tag] = true;
		if (i > 0 && tag < last)
			inversions++;
		last = tag;
	}
	CU_ASSERT_EQUAL(mailbox_pop(net.mb[2], &it), MAILBOX_EMPTY);
	router_stats_get(net.r, &st);
	printf("\nrouter reorder: %" PRIu64 " of %d held, %u inversions, send loop %.1f ms\n",
	       st.held, N, inversions, (double)(t1 - t0) / 1e6);
	CU_ASSERT(st.held > 0 && st.held < N);
	CU_ASSERT_EQUAL(st.raft_delivered, N);
	if (t1 - t0 < 100 * RT_MS) {
		CU_ASSERT(inversions > 0);
	} else {
		printf("router reorder: send loop stalled, inversion check skipped\n");
	}
	rt_net_free(&net);
	rt_report_seed("reorder", seed, failures);
}

/* The held queue stops at ROUTER_MAX_HELD: the rest is dropped; router_free frees the held. */
static void test_held_bound(void)
{
	const unsigned extra = 100;
	rt_net net;
	router_stats st;
	mailbox_item it;
	raft_message m = {0};

	CU_ASSERT_FATAL(rt_net_init(&net, 2, 64, 1));
	router_set_delay(net.r, 600000, 600000); /* ten minutes */
	m.type = RAFT_MSG_HEARTBEAT;
	m.from = 1;
	m.to = 2;
	m.term = 1;
	for (unsigned i = 0; i < ROUTER_MAX_HELD + extra; i++)
		router_send_raft(net.r, &m);
	router_stats_get(net.r, &st);
	CU_ASSERT_EQUAL(st.held, ROUTER_MAX_HELD);
	CU_ASSERT_EQUAL(st.dropped, extra);
	CU_ASSERT_EQUAL(st.raft_delivered, 0);
	CU_ASSERT_EQUAL(mailbox_pop(net.mb[2], &it), MAILBOX_EMPTY);
	rt_net_free(&net); /* frees 65536 held buffers: ASan sees any leak */
}

/* ---- stress ------------------------------------------------------------------------------- */

#define RT_STRESS_NODES   3
#define RT_STRESS_SENDERS 4

typedef struct rt_stress rt_stress;

typedef struct rt_consumer {
	rt_stress *s;
	uint64_t id;
	pthread_t th;
	uint64_t raft, requests, controls, bad;
} rt_consumer;

typedef struct rt_sender {
	rt_stress *s;
	int idx;
	pthread_t th;
	rt_req q;
	uint64_t raft_sent;
	uint64_t bad_rc;
} rt_sender;

struct rt_stress {
	router *r;
	uint64_t seed;
	mailbox *mb[RT_STRESS_NODES + 1];
	atomic_bool stop;
	rt_consumer cons[RT_STRESS_NODES + 1];
	rt_sender snd[RT_STRESS_SENDERS];
};

static void rt_consume(rt_consumer *c, const mailbox_item *it)
{
	raft_message m;

	switch (it->kind) {
	case NODE_ITEM_RAFT:
		c->raft++;
		if (raft_message_decode(it->ptr, it->arg, &m) != RAFT_OK) {
			c->bad++;
		} else {
			if (m.to != c->id || m.n_entries != 1)
				c->bad++;
			raft_message_free(&m);
		}
		free(it->ptr);
		break;
	case NODE_ITEM_REQUEST:
		c->requests++;
		request_release(it->ptr);
		break;
	default:
		c->controls++;
		break;
	}
}

/* A peer stand-in: pops and parks (mailbox protocol) until stop, then drains. */
static void *rt_consumer_main(void *arg)
{
	rt_consumer *c = arg;
	mailbox *mb = c->s->mb[c->id];
	mailbox_item it;

	for (;;) {
		uint64_t key;

		while (mailbox_pop(mb, &it) == MAILBOX_OK)
			rt_consume(c, &it);
		if (atomic_load(&c->s->stop))
			break;
		key = mailbox_prepare_wait(mb);
		if (mailbox_pop(mb, &it) == MAILBOX_OK) {
			mailbox_cancel_wait(mb);
			rt_consume(c, &it);
		} else if (atomic_load(&c->s->stop)) {
			mailbox_cancel_wait(mb);
		} else {
			mailbox_wait(mb, key, -1);
		}
	}
	/* Every producer is detached: whatever was pushed is published. */
	while (mailbox_pop(mb, &it) == MAILBOX_OK)
		rt_consume(c, &it);
	return NULL;
}

/* One stop-restart, partition or fault change, drawn from x; the senders call it now and then. */
static void rt_chaos(rt_stress *s, uint64_t x)
{
	uint64_t id = 1 + x % RT_STRESS_NODES;

	switch ((x >> 8) % 6) {
	case 0:
		router_detach(s->r, id);
		router_attach(s->r, id, s->mb[id]);
		break;
	case 1:
		router_isolate(s->r, id);
		break;
	case 2: {
		uint64_t g[2] = {id, 1 + (x >> 16) % RT_STRESS_NODES};

		router_partition(s->r, g, 2);
		break;
	}
	case 3:
		router_heal(s->r);
		router_set_drop_rate(s->r, 0.05);
		router_set_duplicate_rate(s->r, 0.1);
		router_set_delay(s->r, 0, 2);
		router_set_reorder(s->r, 0.1, 3);
		break;
	case 4:
		router_set_link_drop_rate(s->r, id, 1 + (x >> 16) % RT_STRESS_NODES,
		                          (double)((x >> 24) % 3) / 2);
		break;
	default: {
		router_stats st;

		router_stats_get(s->r, &st);
		break;
	}
	}
}

static void *rt_sender_main(void *arg)
{
	rt_sender *sn = arg;
	rt_stress *s = sn->s;
	uint64_t rng = s->seed ^ ((uint64_t)(sn->idx + 1) * 0x2545f4914f6cdd1dull);

	for (unsigned i = 0; i < RT_STRESS_OPS; i++) {
		uint64_t x = rt_rand(&rng);
		uint64_t to = 1 + x % RT_STRESS_NODES;
		unsigned op = (unsigned)((x >> 16) % 100);

		if (op < 80) {
			uint64_t from =
			    1 + (to + (x >> 32) % (RT_STRESS_NODES - 1)) % RT_STRESS_NODES;

			rt_send(s->r, from, to, i);
			sn->raft_sent++;
		} else if (op < 95) {
			int rc = router_send_request(s->r, to, &sn->q.req, i);

			if (rc != ROUTER_OK && rc != ROUTER_DOWN && rc != ROUTER_FULL)
				sn->bad_rc++;
		} else {
			router_send_control(s->r, to, NODE_ITEM_CAMPAIGN, i);
		}
		if (i % 16 == 15)
			rt_chaos(s, rt_rand(&rng));
	}
	return NULL;
}

static void test_stress(void)
{
	rt_stress *s = calloc(1, sizeof(*s));
	unsigned failures = CU_get_number_of_failures();
	uint64_t raft = 0, requests = 0, bad = 0, raft_sent = 0;
	router_stats st;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	s->seed = rt_seed(0);
	printf("\nrouter stress: seed %" PRIu64 "\n", s->seed);
	s->r = router_new(RT_STRESS_NODES, s->seed);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s->r);
	atomic_init(&s->stop, false);
	router_set_drop_rate(s->r, 0.05);
	router_set_duplicate_rate(s->r, 0.1);
	router_set_delay(s->r, 0, 2);
	router_set_reorder(s->r, 0.1, 3);
	for (uint64_t id = 1; id <= RT_STRESS_NODES; id++) {
		s->mb[id] = mailbox_create(256);
		CU_ASSERT_PTR_NOT_NULL_FATAL(s->mb[id]);
		router_attach(s->r, id, s->mb[id]);
		s->cons[id] = (rt_consumer){.s = s, .id = id};
		CU_ASSERT_EQUAL_FATAL(
		    pthread_create(&s->cons[id].th, NULL, rt_consumer_main, &s->cons[id]), 0);
	}
	for (int i = 0; i < RT_STRESS_SENDERS; i++) {
		s->snd[i].s = s;
		s->snd[i].idx = i;
		rt_req_init(&s->snd[i].q);
		CU_ASSERT_EQUAL_FATAL(
		    pthread_create(&s->snd[i].th, NULL, rt_sender_main, &s->snd[i]), 0);
	}
	for (int i = 0; i < RT_STRESS_SENDERS; i++) {
		pthread_join(s->snd[i].th, NULL);
		raft_sent += s->snd[i].raft_sent;
		bad += s->snd[i].bad_rc;
	}
	/* No push can happen after the detaches; held messages left are dropped or freed. */
	for (uint64_t id = 1; id <= RT_STRESS_NODES; id++)
		router_detach(s->r, id);
	atomic_store(&s->stop, true);
	for (uint64_t id = 1; id <= RT_STRESS_NODES; id++) {
		mailbox_notify(s->mb[id]);
		pthread_join(s->cons[id].th, NULL);
		raft += s->cons[id].raft;
		requests += s->cons[id].requests;
		bad += s->cons[id].bad;
	}
	router_stats_get(s->r, &st);
	printf("router stress: %" PRIu64 " raft sent, %" PRIu64 " delivered, %" PRIu64
	       " held, %" PRIu64 " dropped, %" PRIu64 " duplicated, %" PRIu64 " request copies\n",
	       st.raft_sent, st.raft_delivered, st.held, st.dropped, st.duplicated, st.requests);
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(st.raft_sent, raft_sent);
	CU_ASSERT_EQUAL(st.raft_delivered, raft);
	CU_ASSERT_EQUAL(st.requests, requests);
	CU_ASSERT(raft > 0);
	router_free(s->r);
	for (int i = 0; i < RT_STRESS_SENDERS; i++) {
		CU_ASSERT_EQUAL(rt_refs(&s->snd[i].q), 1);
		CU_ASSERT_EQUAL(atomic_load(&s->snd[i].q.freed), 0);
		request_release(&s->snd[i].q.req);
		CU_ASSERT_EQUAL(atomic_load(&s->snd[i].q.freed), 1);
	}
	for (uint64_t id = 1; id <= RT_STRESS_NODES; id++)
		mailbox_destroy(s->mb[id]);
	rt_report_seed("stress", s->seed, failures);
	free(s);
}

void test_register_router(void)
{
	CU_pSuite s = CU_add_suite("router", NULL, NULL);

	if (s == NULL)
		return;
	CU_add_test(s, "new and free", test_new_free);
	CU_add_test(s, "delivery, detach, unknown ids", test_delivery_detach);
	CU_add_test(s, "full mailbox", test_full_mailbox);
	CU_add_test(s, "request references", test_request_refs);
	CU_add_test(s, "partition and isolate matrices", test_partition_matrix);
	CU_add_test(s, "link drop rates", test_link_drop);
	CU_add_test(s, "global drop rate", test_drop_rate);
	CU_add_test(s, "duplicates", test_duplicate);
	CU_add_test(s, "delay", test_delay);
	CU_add_test(s, "held messages rechecked when due", test_held_recheck);
	CU_add_test(s, "reorder", test_reorder);
	CU_add_test(s, "held queue bound", test_held_bound);
	CU_add_test(s, "stress: 4 senders, stops, partitions", test_stress);
}
