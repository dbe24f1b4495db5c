/* mailbox.c - bounded lock-free MPSC ring with per-slot sequence numbers, plus an eventcount. */
#include "node/mailbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* Keeps the producers' counter, the consumer's counter and the waiter state apart. */
#define MAILBOX_CACHELINE 64

/*
 * The ring.
 *
 * Positions are counters that only grow: `tail` is the next position a producer will claim,
 * `head` the next position the consumer will pop. Position p lives in cells[p & mask]. Each cell
 * has a sequence number that says whose turn it is:
 *   seq == p        free: the producer that claims position p may write it;
 *   seq == p + 1    published: the item of position p is ready for the consumer;
 *   seq == p + cap  consumed: free again, for position p + cap.
 * A producer reads tail, checks that its cell says "free for that position", claims the position
 * with a CAS on tail, writes the item and publishes by storing seq = p + 1. If the cell still
 * holds position p - cap (published or even only claimed, not yet consumed), the ring is full.
 * The consumer pops position head only when its cell says "published"; a claimed but unpublished
 * cell reads as empty, and the consumer parks: that producer's publish wakes it (below).
 * Capacity >= 2 keeps "published" (p + 1) and "consumed" (p + cap) apart.
 */
typedef struct mailbox_cell {
	atomic_size_t seq;
	mailbox_item item;
} mailbox_cell;

struct mailbox {
	/* Read-only after creation. */
	mailbox_cell *cells;
	size_t mask; /* capacity - 1 */
	/* Next position to claim; CAS by producers. */
	_Alignas(MAILBOX_CACHELINE) atomic_size_t tail;
	/* Next position to pop; written by the consumer only, read by mailbox_depth. */
	_Alignas(MAILBOX_CACHELINE) atomic_size_t head;
	/* The eventcount: threads between prepare_wait and the end of their wait or cancel, and the
	 * epoch, bumped (under lock) by every wake. Waiters sleep on cond under lock. */
	_Alignas(MAILBOX_CACHELINE) atomic_uint waiters;
	atomic_uint_least64_t epoch;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

/*
 * Why no wakeup is lost.
 *
 * The consumer parks only after this sequence (all on its own thread):
 *   C1  waiters += 1                      (seq_cst RMW, mailbox_prepare_wait)
 *   C2  key = epoch                       (acquire load, mailbox_prepare_wait)
 *   C3  load cells[head].seq, != head + 1 (seq_cst load, mailbox_pop says EMPTY)
 *   C4  lock; while (epoch == key) wait on cond; unlock; waiters -= 1   (mailbox_wait)
 * and a push of position p does:
 *   P1  store cells[p].seq = p + 1        (seq_cst store: publish)
 *   P2  if (waiters != 0)                 (seq_cst load)
 *   P3      lock; epoch += 1; broadcast; unlock   (mailbox_wake; the add is a release)
 *
 * Take p = head, the position C3 looked at. All of C1, C3, P1, P2 are seq_cst, so they sit in one
 * total order S consistent with program order. C3 did not see P1's value; P1 is the last seq_cst
 * store to that seq before any later pop, and the only other stores to it (the consumer's
 * "consumed" stores) happen before P1 (the producer read the last one before claiming), so C3
 * would have read p + 1 had P1 preceded C3 in S. Hence C3 precedes P1 in S, so
 * C1 < C3 < P1 < P2 in S, and P2 reads C1's increment or a later value of waiters. Every later
 * change is a +1/-1 pair of some waiter or this consumer's own -1 at the end of C4, so P2 reads
 * non-zero unless this wait has already ended, and P3 runs. Then:
 *   - if C2 read P3's bumped epoch, P3's release makes P1 happen before C3, and C3 would have
 *     seen the item: this case does not occur;
 *   - otherwise key is older than P3's epoch. The epoch changes only under the lock, which C4
 *     holds while it compares: if P3 took the lock first, C4 sees epoch != key and returns at
 *     once; if C4 did, the consumer is inside pthread_cond_wait when P3 broadcasts, and wakes.
 * Only the head position matters: the consumer pops until EMPTY before it prepares to wait, and
 * when it parks again, the producer of its new head notifies it by the same argument. A producer
 * that claimed a slot and was preempted before P1 thus costs the consumer a park, not a spin:
 * its P1..P3 come later and wake it. The epoch is 64 bits, so it never wraps back to a key.
 *
 * mailbox_notify uses an RMW instead of a seq_cst store (the event is the caller's own store E,
 * of any order, made before the call): N = fetch_add(waiters, 0) (seq_cst). N and C1 are RMWs on
 * the same object, so one of them reads the other's result:
 *   - C1 after N: every modification of waiters is an RMW, so C1 reads from N's release
 *     sequence, N synchronizes with C1, E happens before the consumer's re-check, which sees E;
 *   - N after C1: N reads a non-zero count (as above) and wakes the consumer as P3 does.
 */

/* The sign of seq - pos as a signed distance (positions are far closer than SIZE_MAX / 2, so
 * the unsigned difference tells it even after the counters wrap). */
static int mailbox_cmp(size_t seq, size_t pos)
{
	size_t d = seq - pos;

	if (d == 0)
		return 0;
	return d < (SIZE_MAX >> 1) ? 1 : -1;
}

static void mailbox_wake(mailbox *mb)
{
	pthread_mutex_lock(&mb->lock);
	atomic_fetch_add_explicit(&mb->epoch, 1, memory_order_release);
	pthread_cond_broadcast(&mb->cond);
	pthread_mutex_unlock(&mb->lock);
}

mailbox *mailbox_create(size_t capacity)
{
	mailbox *mb;
	pthread_condattr_t ca;
	size_t bytes;

	if (capacity < MAILBOX_MIN_CAPACITY || capacity > MAILBOX_MAX_CAPACITY ||
	    (capacity & (capacity - 1)) != 0) {
		errno = EINVAL;
		return NULL;
	}
	mb = aligned_alloc(MAILBOX_CACHELINE, sizeof(*mb));
	if (mb == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	bytes = capacity * sizeof(mailbox_cell);
	bytes = (bytes + MAILBOX_CACHELINE - 1) / MAILBOX_CACHELINE * MAILBOX_CACHELINE;
	mb->cells = aligned_alloc(MAILBOX_CACHELINE, bytes);
	if (mb->cells == NULL)
		goto fail_cells;
	mb->mask = capacity - 1;
	for (size_t i = 0; i < capacity; i++) {
		atomic_init(&mb->cells[i].seq, i);
		mb->cells[i].item = (mailbox_item){0};
	}
	atomic_init(&mb->tail, 0);
	atomic_init(&mb->head, 0);
	atomic_init(&mb->waiters, 0);
	atomic_init(&mb->epoch, 0);
	if (pthread_mutex_init(&mb->lock, NULL) != 0)
		goto fail_lock;
	if (pthread_condattr_init(&ca) != 0)
		goto fail_cond;
	if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&mb->cond, &ca) != 0) {
		pthread_condattr_destroy(&ca);
		goto fail_cond;
	}
	pthread_condattr_destroy(&ca);
	return mb;

fail_cond:
	pthread_mutex_destroy(&mb->lock);
fail_lock:
	free(mb->cells);
fail_cells:
	free(mb);
	errno = ENOMEM;
	return NULL;
}

void mailbox_destroy(mailbox *mb)
{
	if (mb == NULL)
		return;
	pthread_cond_destroy(&mb->cond);
	pthread_mutex_destroy(&mb->lock);
	free(mb->cells);
	free(mb);
}

int mailbox_push(mailbox *mb, const mailbox_item *item)
{
	size_t pos = atomic_load_explicit(&mb->tail, memory_order_relaxed);
	mailbox_cell *cell;
	int sign;

	for (;;) {
		cell = &mb->cells[pos & mb->mask];
		sign = mailbox_cmp(atomic_load_explicit(&cell->seq, memory_order_acquire), pos);
		if (sign == 0) {
			/* Free for pos: claim it. On failure pos becomes the current tail. */
			if (atomic_compare_exchange_strong_explicit(&mb->tail, &pos, pos + 1,
			                                            memory_order_relaxed,
			                                            memory_order_relaxed))
				break;
		} else if (sign < 0) {
			/* The cell still holds position pos - cap: not popped yet, the ring is
			 * full. */
			return MAILBOX_FULL;
		} else {
			/* Another producer claimed pos already: retry at the current tail. */
			pos = atomic_load_explicit(&mb->tail, memory_order_relaxed);
		}
	}
	cell->item = *item;
	/* P1 and P2 of the argument above; both must stay seq_cst. */
	atomic_store_explicit(&cell->seq, pos + 1, memory_order_seq_cst);
	if (atomic_load_explicit(&mb->waiters, memory_order_seq_cst) != 0)
		mailbox_wake(mb);
	return MAILBOX_OK;
}

int mailbox_pop(mailbox *mb, mailbox_item *out)
{
	size_t pos = atomic_load_explicit(&mb->head, memory_order_relaxed);
	mailbox_cell *cell = &mb->cells[pos & mb->mask];

	/* C3 of the argument above; must stay seq_cst. */
	if (atomic_load_explicit(&cell->seq, memory_order_seq_cst) != pos + 1)
		return MAILBOX_EMPTY;
	*out = cell->item;
	/* Hand the cell to the producer of pos + cap; the release orders our read of the item
	 * before its write. */
	atomic_store_explicit(&cell->seq, pos + mb->mask + 1, memory_order_release);
	atomic_store_explicit(&mb->head, pos + 1, memory_order_relaxed);
	return MAILBOX_OK;
}

size_t mailbox_depth(const mailbox *mb)
{
	/* Head first, so that tail >= head; the two loads are not one snapshot, so clamp to the
	 * capacity (and to 0, to be safe). */
	size_t head = atomic_load_explicit(&mb->head, memory_order_relaxed);
	size_t tail = atomic_load_explicit(&mb->tail, memory_order_relaxed);
	size_t d = tail - head;

	if (d > SIZE_MAX >> 1)
		return 0;
	return d > mb->mask + 1 ? mb->mask + 1 : d;
}

size_t mailbox_capacity(const mailbox *mb)
{
	return mb->mask + 1;
}

uint64_t mailbox_prepare_wait(mailbox *mb)
{
	/* C1 then C2 of the argument above. */
	atomic_fetch_add_explicit(&mb->waiters, 1, memory_order_seq_cst);
	return atomic_load_explicit(&mb->epoch, memory_order_acquire);
}

void mailbox_cancel_wait(mailbox *mb)
{
	atomic_fetch_sub_explicit(&mb->waiters, 1, memory_order_seq_cst);
}

/* The absolute CLOCK_MONOTONIC time timeout_ns (>= 0) from now. */
static struct timespec mailbox_deadline(int64_t timeout_ns)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(timeout_ns / 1000000000);
	ts.tv_nsec += (long)(timeout_ns % 1000000000);
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

int mailbox_wait(mailbox *mb, uint64_t key, int64_t timeout_ns)
{
	int rc = MAILBOX_OK;
	struct timespec deadline;

	if (timeout_ns >= 0)
		deadline = mailbox_deadline(timeout_ns);
	pthread_mutex_lock(&mb->lock);
	/* C4: the epoch only changes under the lock, so a wake either is visible here or finds us
	 * inside pthread_cond_(timed)wait. The loop absorbs spurious returns. */
	while (atomic_load_explicit(&mb->epoch, memory_order_relaxed) == key) {
		if (timeout_ns < 0) {
			pthread_cond_wait(&mb->cond, &mb->lock);
		} else if (pthread_cond_timedwait(&mb->cond, &mb->lock, &deadline) == ETIMEDOUT) {
			if (atomic_load_explicit(&mb->epoch, memory_order_relaxed) == key)
				rc = MAILBOX_TIMEOUT;
			break;
		}
	}
	pthread_mutex_unlock(&mb->lock);
	atomic_fetch_sub_explicit(&mb->waiters, 1, memory_order_seq_cst);
	return rc;
}

void mailbox_notify(mailbox *mb)
{
	/* N of the argument above: an RMW, so it reads the latest count of waiters. */
	if (atomic_fetch_add_explicit(&mb->waiters, 0, memory_order_seq_cst) != 0)
		mailbox_wake(mb);
}
