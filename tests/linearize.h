/* linearize.h - record a key-value client history from many threads and check linearizability. */
#ifndef TESTS_LINEARIZE_H
#define TESTS_LINEARIZE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * Recording. Each client operation is bracketed by lin_invoke() (just before the request is
 * issued) and lin_complete() (just after its outcome is known). Both stamp the operation with a
 * logical time: a 64-bit counter incremented under the history's mutex, so stamps are unique and
 * follow real time: when lin_complete(a) returns before lin_invoke(b) is called, a's completion
 * stamp is below b's invocation stamp. No wall clock is involved. Every call is thread-safe;
 * each holds the mutex only to append or update a record (byte copies are made before locking).
 *
 * Ownership: the history copies every key, value and result it is given; callers keep theirs.
 * lin_history_free() frees everything. Misuse (an unknown id, completing twice, lin_scan_add on
 * an op that is not a pending scan) and out-of-memory abort the process with a message: this is
 * test support, and a broken history must not be checked.
 *
 * Operations (key, value and result bytes; keys are compared with memcmp, shorter first):
 *   LIN_PUT     key = value.
 *   LIN_APPEND  key = current value ++ value (the value alone when the key is absent).
 *   LIN_DELETE  the key becomes absent.
 *   LIN_GET     result: the value, or absent (lin_complete with result == NULL). An empty
 *               present value is a non-NULL result with rlen 0.
 *   LIN_SCAN    key = start, value = end of the range [start, end); an end of length 0 means
 *               no upper bound. Its result is the (key, value) pairs added by lin_scan_add(),
 *               and lin_scan_limit() narrows the range actually covered when a limit cut the
 *               scan short.
 *
 * Outcomes (lin_complete's status):
 *   LIN_OK       the operation happened between its invocation and completion; its result is
 *                checked.
 *   LIN_FAIL     the operation definitely did not happen; it is ignored.
 *   LIN_UNKNOWN  a write may have taken effect at any time after its invocation (even after
 *                lin_complete), or never; an unknown read is ignored. An operation never
 *                completed is treated as LIN_UNKNOWN.
 */
typedef enum lin_op { LIN_PUT, LIN_APPEND, LIN_GET, LIN_DELETE, LIN_SCAN } lin_op;

typedef enum lin_status { LIN_OK, LIN_FAIL, LIN_UNKNOWN } lin_status;

typedef enum lin_result { LIN_RESULT_OK, LIN_RESULT_VIOLATION, LIN_RESULT_TIMEOUT } lin_result;

typedef struct lin_history lin_history;

lin_history *lin_history_new(void);
void lin_history_free(lin_history *h);

/* Records the invocation of op by client and returns the operation's id. value is ignored for
 * LIN_GET and LIN_DELETE; for LIN_SCAN it is the exclusive end of the range. */
size_t lin_invoke(lin_history *h, uint64_t client, lin_op op, const void *key, size_t klen,
                  const void *value, size_t vlen);
/* Adds one (key, value) pair to the result of the pending scan id. */
void lin_scan_add(lin_history *h, size_t id, const void *key, size_t klen, const void *value,
                  size_t vlen);
/* The pending scan id covered only [start, end): keys at or after end were not read. */
void lin_scan_limit(lin_history *h, size_t id, const void *end, size_t elen);
/* Records the outcome of id. result/rlen is a LIN_GET's result (NULL: absent); ignored
 * otherwise. */
void lin_complete(lin_history *h, size_t id, lin_status status, const void *result, size_t rlen);

/* Number of operations recorded so far. */
size_t lin_history_size(lin_history *h);

/*
 * Checking. The history is partitioned per key; the keys are the union of every key named by a
 * PUT, APPEND, DELETE or GET and every key a scan returned. An OK scan becomes, on each such key
 * in its covered range, a read of the value it returned for that key, or of "absent" when it
 * returned none. Each key is then searched independently for a linearization that respects
 * real-time order: Wing & Gong's depth-first search over the operations that may go next, with
 * Lowe's just-in-time list of invocations and returns, and a memo of visited (linearized set,
 * model value) pairs so that no node is searched twice (as Porcupine does). The model is one
 * key's value: absent or bytes, interned so that a node's value is an id.
 *
 * Unknown writes are what makes the search expensive: each may take effect anywhere after its
 * invocation, or never. The search skips moves that leaving an unknown write out dominates (an
 * unknown write that changes nothing, or whose effect an overwrite erases unread, or that no
 * pending read could have seen, or that a still pending twin with the same effect could make
 * instead); each rule keeps a linearization if one exists. See may_take() in linearize.c.
 * Write values that cannot be mistaken for one another (unique, delimited: no put value a prefix
 * of another, no append token inside another value or token, e.g. "p3.17|" and "|3.18|"):
 * the checker accepts every reading of an ambiguous value, which widens the search.
 *
 * Budgets, per key:
 *   max_steps   search steps (one step tries or skips one candidate, or backtracks once);
 *               exhausting it gives LIN_RESULT_TIMEOUT, which callers must treat as a failure.
 *   max_memory  bytes for the memo (each entry costs about 40 bytes plus a bitset of one bit
 *               per operation on the key, so max_memory / (40 + ops / 8) entries at most) and
 *               for the distinct model values met during the search. A full memo stops growing
 *               (the search stays correct, only less pruned, and may time out); a model value
 *               that does not fit gives LIN_RESULT_TIMEOUT. Arrays proportional to the number of
 *               operations on the key come on top.
 *
 * Limitation: a scan reads all its keys at one log index in the store, so a stronger check
 * would linearize every key of one scan at the same point. The per-key check does not: it can
 * accept a scan whose keys were read at different points (e.g. a torn multi-key view).
 */
typedef struct lin_check_options {
	uint64_t max_steps; /* default 10,000,000 */
	size_t max_memory;  /* default 256 MiB */
	FILE *log;          /* violations and timeouts are explained here; NULL: silent */
} lin_check_options;

typedef struct lin_stats {
	size_t ops;      /* operations recorded */
	size_t checked;  /* operations that took part in the search (OK ones, unknown writes) */
	size_t keys;     /* keys searched */
	uint64_t steps;  /* search steps over every key */
	size_t max_memo; /* memo entries used by the largest single-key search */
} lin_stats;

void lin_check_options_init(lin_check_options *opt);

/*
 * Checks h. It holds the history's mutex throughout, so recording threads block meanwhile;
 * operations still pending count as LIN_UNKNOWN. opt may be NULL for the defaults, stats NULL. When
 * explanation is non-NULL, *explanation receives a malloc'd text (the caller frees it) explaining a
 * violation or timeout, or NULL on LIN_RESULT_OK. Every key is checked; the result is VIOLATION if
 * any key violates, else TIMEOUT if any key ran out of budget, else OK.
 */
lin_result lin_check(lin_history *h, const lin_check_options *opt, lin_stats *stats,
                     char **explanation);

const char *lin_result_name(lin_result r);

#endif
