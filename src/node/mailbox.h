/* mailbox.h - a peer's bounded lock-free MPSC mailbox and its wakeup that cannot be lost. */
#ifndef RAFTKV_NODE_MAILBOX_H
#define RAFTKV_NODE_MAILBOX_H

#include <stddef.h>
#include <stdint.h>

/*
 * A mailbox is a fixed-capacity ring of mailbox_item records. Any number of threads may push;
 * exactly one thread, the consumer (the peer thread), pops and waits. Nothing in this module
 * blocks except mailbox_wait, and nothing spins waiting for another thread.
 *
 * The consumer's loop, which cannot miss an item or a mailbox_notify:
 *
 *	for (;;) {
 *		while (budget-- > 0 && mailbox_pop(mb, &it) == MAILBOX_OK)
 *			handle(&it);
 *		if (budget > 0 && !other_work()) {        // e.g. no pending ticks, not closing
 *			uint64_t key = mailbox_prepare_wait(mb);
 *			if (mailbox_pop(mb, &it) == MAILBOX_OK) {
 *				mailbox_cancel_wait(mb);
 *				handle(&it);
 *			} else if (other_work()) {
 *				mailbox_cancel_wait(mb);
 *			} else {
 *				mailbox_wait(mb, key, timeout_ns);
 *			}
 *		}
 *		...handle one Ready...
 *	}
 *
 * Any other thread that changes state the consumer checks in other_work() (the ticker adding
 * ticks, raftkv_close setting a flag) writes that state first and then calls mailbox_notify.
 *
 * Ownership of items: push copies the record into the ring. When push returns MAILBOX_OK, what
 * `ptr` points to belongs to the mailbox until the consumer pops it, and then to the consumer.
 * When push returns MAILBOX_FULL, nothing was taken: the caller still owns `ptr` (and answers a
 * client with RAFTKV_BUSY or drops a raft message). The mailbox never dereferences `ptr`.
 */

/* Results of mailbox operations. */
enum mailbox_status {
	MAILBOX_OK = 0,  /* done; for mailbox_wait: woken (or the key was already stale) */
	MAILBOX_FULL,    /* push: the ring is full, nothing was taken */
	MAILBOX_EMPTY,   /* pop: nothing can be popped now (empty, or the next item is not yet
	                  * published by its producer: park, its publish will wake you) */
	MAILBOX_TIMEOUT, /* wait: timeout_ns passed without a notification */
};

/* One record. The node layer defines the kinds (raft message, client request, snapshot chunk,
 * ...); `ptr` and `arg` mean what the kind says. */
typedef struct mailbox_item {
	int kind;
	void *ptr;
	uint64_t arg;
} mailbox_item;

typedef struct mailbox mailbox;

/* Smallest and largest capacities mailbox_create accepts (both powers of two). */
#define MAILBOX_MIN_CAPACITY 2u
#define MAILBOX_MAX_CAPACITY (1u << 24)

/* Creates an empty mailbox of `capacity` slots, a power of two in
 * [MAILBOX_MIN_CAPACITY, MAILBOX_MAX_CAPACITY]. Returns NULL with errno EINVAL for a bad
 * capacity, ENOMEM when out of memory. The caller owns the mailbox and frees it with
 * mailbox_destroy. */
mailbox *mailbox_create(size_t capacity);

/* Frees the mailbox. No other thread may use it any more, or be inside any mailbox call on it.
 * Items still queued are discarded without touching their `ptr`: the caller drains them first
 * (mailbox_pop until MAILBOX_EMPTY, with every producer stopped) if they own memory. NULL is a
 * no-op. */
void mailbox_destroy(mailbox *mb);

/* Any thread. Copies *item into the ring and returns MAILBOX_OK, or returns MAILBOX_FULL at once
 * when the ring is full (never blocks; ownership then stays with the caller). Wakes the consumer
 * if it may be parked. Lock-free: its claim is retried only when another producer's claim
 * succeeded in between. */
int mailbox_push(mailbox *mb, const mailbox_item *item);

/* Consumer only. Moves the oldest item into *out and returns MAILBOX_OK, or returns
 * MAILBOX_EMPTY when the next item is absent or claimed but not yet published (items of one
 * producer come out in the order it pushed them). Never blocks. */
int mailbox_pop(mailbox *mb, mailbox_item *out);

/* Any thread. The number of items claimed and not yet popped, clamped to [0, capacity]. It is a
 * snapshot that may be stale by the time it returns, and it counts claimed slots that pop cannot
 * return yet; use it for status and heuristics only. */
size_t mailbox_depth(const mailbox *mb);

/* Any thread. The capacity fixed at creation. */
size_t mailbox_capacity(const mailbox *mb);

/* Consumer (or any thread that wants to park on this mailbox). Announces a waiter and returns
 * the key for mailbox_wait. It must be followed by exactly one mailbox_wait or
 * mailbox_cancel_wait on the same thread. Between the two, the caller re-checks every condition
 * it waits for (mailbox_pop, its flags): a push or mailbox_notify that the re-check does not
 * see is guaranteed to end the following mailbox_wait. */
uint64_t mailbox_prepare_wait(mailbox *mb);

/* The caller of mailbox_prepare_wait, when its re-check found work: withdraws the waiter. */
void mailbox_cancel_wait(mailbox *mb);

/* The caller of mailbox_prepare_wait: parks until a push or mailbox_notify that came after the
 * prepare (or returns at once if one already did), or until timeout_ns nanoseconds (a negative
 * timeout waits without limit; 0 only checks). Returns MAILBOX_OK when woken, MAILBOX_TIMEOUT
 * otherwise. Wakeups may be spurious with respect to the caller's conditions (a notify for an
 * item already popped): the caller re-checks them. Withdraws the waiter before returning. */
int mailbox_wait(mailbox *mb, uint64_t key, int64_t timeout_ns);

/* Any thread. Wakes the consumer if it may be parked, for an event outside the queue; the caller
 * makes that event visible (any atomic store, or under any lock) before calling. Cheap when
 * nobody waits: a fence and one load. */
void mailbox_notify(mailbox *mb);

#endif
