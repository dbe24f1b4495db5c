/* log.c - the Raft log: stable entries read through raft_storage, plus the unstable tail. */
#include <stdlib.h>
#include <string.h>

#include "raft/raft_internal.h"

/* Errors the storage may legitimately return; anything else is fatal (RAFT_ERR_IO etc.). */
static bool log_is_soft_error(int rv)
{
	return rv == RAFT_ERR_COMPACTED || rv == RAFT_ERR_UNAVAILABLE;
}

static void log_fail(raft_log *l, int rv)
{
	if (l->err == 0)
		l->err = rv;
}

static uint64_t log_storage_first(raft_log *l)
{
	uint64_t i = 0;
	int rv = l->storage->first_index(l->storage->ctx, &i);
	if (rv != RAFT_OK)
		log_fail(l, rv);
	return i;
}

static uint64_t log_storage_last(raft_log *l)
{
	uint64_t i = 0;
	int rv = l->storage->last_index(l->storage->ctx, &i);
	if (rv != RAFT_OK)
		log_fail(l, rv);
	return i;
}

int log_init(raft_log *l, const raft_storage *storage, uint64_t max_applying_size)
{
	memset(l, 0, sizeof(*l));
	l->storage = storage;
	l->max_applying_size = max_applying_size;
	uint64_t first = log_storage_first(l);
	uint64_t last = log_storage_last(l);
	if (l->err != 0)
		return l->err;
	if (first == 0 || last + 1 < first)
		return RAFT_ERR_INVALID;
	l->offset = last + 1;
	l->in_progress = last;
	l->committed = first - 1;
	l->applying = first - 1;
	l->applied = first - 1;
	return RAFT_OK;
}

static void log_free_unstable(raft_log *l, size_t from)
{
	for (size_t i = from; i < l->n_unstable; i++)
		free(l->unstable[i].data);
	l->n_unstable = from;
}

void log_close(raft_log *l)
{
	log_free_unstable(l, 0);
	free(l->unstable);
	raft_snapshot_clear(&l->snapshot);
	memset(l, 0, sizeof(*l));
}

uint64_t log_first_index(raft_log *l)
{
	if (l->has_snapshot)
		return l->snapshot.metadata.index + 1;
	return log_storage_first(l);
}

uint64_t log_last_index(raft_log *l)
{
	if (l->n_unstable > 0)
		return l->offset + l->n_unstable - 1;
	if (l->has_snapshot)
		return l->snapshot.metadata.index;
	return log_storage_last(l);
}

int log_term(raft_log *l, uint64_t i, uint64_t *term)
{
	*term = 0;
	uint64_t first = log_first_index(l), last = log_last_index(l);
	if (l->err != 0)
		return l->err;
	if (i + 1 < first)
		return RAFT_ERR_COMPACTED;
	if (i > last)
		return RAFT_ERR_UNAVAILABLE;
	if (l->has_snapshot && i == l->snapshot.metadata.index) {
		*term = l->snapshot.metadata.term;
		return RAFT_OK;
	}
	if (l->n_unstable > 0 && i >= l->offset) {
		*term = l->unstable[i - l->offset].term;
		return RAFT_OK;
	}
	int rv = l->storage->term(l->storage->ctx, i, term);
	if (rv != RAFT_OK && !log_is_soft_error(rv))
		log_fail(l, rv);
	return rv;
}

uint64_t log_term_or_zero(raft_log *l, uint64_t i)
{
	uint64_t t;
	return log_term(l, i, &t) == RAFT_OK ? t : 0;
}

uint64_t log_last_term(raft_log *l)
{
	return log_term_or_zero(l, log_last_index(l));
}

bool log_match_term(raft_log *l, uint64_t i, uint64_t term)
{
	uint64_t t;
	return log_term(l, i, &t) == RAFT_OK && t == term;
}

/* §5.4.1: a log is more up to date if its last term is higher, or equal with a longer log. */
bool log_is_up_to_date(raft_log *l, uint64_t last_index, uint64_t term)
{
	uint64_t our_term = log_last_term(l);
	return term > our_term || (term == our_term && last_index >= log_last_index(l));
}

/* Grows *arr to hold at least need entries. */
static int log_reserve(raft_entry **arr, size_t *cap, size_t need)
{
	if (need <= *cap)
		return RAFT_OK;
	size_t ncap = *cap ? *cap * 2 : 16;
	while (ncap < need)
		ncap *= 2;
	raft_entry *p = realloc(*arr, ncap * sizeof(*p));
	if (p == NULL)
		return RAFT_ERR_NOMEM;
	*arr = p;
	*cap = ncap;
	return RAFT_OK;
}

/* Appends copies of unstable entries [lo, hi) to out while the size budget allows. */
static int log_copy_unstable(raft_log *l, uint64_t lo, uint64_t hi, uint64_t max_size,
                             uint64_t *size, raft_entry **out, size_t *n, size_t *cap)
{
	for (uint64_t i = lo; i < hi; i++) {
		const raft_entry *e = &l->unstable[i - l->offset];
		if (*n > 0 && *size + e->len > max_size)
			break;
		int rv = log_reserve(out, cap, *n + 1);
		if (rv == RAFT_OK)
			rv = util_entry_copy(&(*out)[*n], e);
		if (rv != RAFT_OK)
			return rv;
		(*n)++;
		*size += e->len;
	}
	return RAFT_OK;
}

int log_entries(raft_log *l, uint64_t lo, uint64_t hi, uint64_t max_size, raft_entry **out,
                size_t *n)
{
	raft_entry *ents = NULL;
	size_t count = 0, cap = 0;
	uint64_t size = 0;
	int rv = RAFT_OK;

	*out = NULL;
	*n = 0;
	if (lo >= hi)
		return RAFT_OK;
	uint64_t first = log_first_index(l), last = log_last_index(l);
	if (l->err != 0)
		return l->err;
	if (lo < first)
		return RAFT_ERR_COMPACTED;
	if (hi > last + 1)
		return RAFT_ERR_UNAVAILABLE;

	if (lo < l->offset) {
		uint64_t stable_hi = hi < l->offset ? hi : l->offset;
		rv = l->storage->entries(l->storage->ctx, lo, stable_hi, max_size, &ents, &count);
		if (rv != RAFT_OK) {
			if (rv != RAFT_ERR_COMPACTED)
				log_fail(l, rv == RAFT_ERR_UNAVAILABLE ? RAFT_ERR_IO : rv);
			return rv == RAFT_ERR_UNAVAILABLE ? RAFT_ERR_IO : rv;
		}
		cap = count;
		size = util_payload_size(ents, count);
		if (count < stable_hi - lo)
			goto done; /* the size bound cut the stable part */
	}
	if (hi > l->offset) {
		uint64_t from = lo > l->offset ? lo : l->offset;
		rv = log_copy_unstable(l, from, hi, max_size, &size, &ents, &count, &cap);
		if (rv != RAFT_OK)
			goto fail;
	}
done:
	*out = ents;
	*n = count;
	return RAFT_OK;
fail:
	raft_entries_free(ents, count);
	log_fail(l, rv);
	return rv;
}

/* Replaces the unstable tail from ents[0].index on with copies of ents. */
int log_append(raft_log *l, const raft_entry *ents, size_t n)
{
	if (n == 0)
		return RAFT_OK;
	uint64_t after = ents[0].index;
	if (after <= l->committed) {
		log_fail(l, RAFT_ERR_CORRUPT); /* never rewrite committed entries */
		return RAFT_ERR_CORRUPT;
	}
	if (after == l->offset + l->n_unstable) {
		/* plain append */
	} else if (after <= l->offset) {
		/* Replaces everything unstable; the stable suffix from `after` on conflicts and is
		 * truncated by the application when it persists these entries. */
		log_free_unstable(l, 0);
		l->offset = after;
	} else {
		log_free_unstable(l, after - l->offset);
	}
	if (l->in_progress >= after)
		l->in_progress = after - 1;

	int rv = log_reserve(&l->unstable, &l->cap_unstable, l->n_unstable + n);
	for (size_t i = 0; rv == RAFT_OK && i < n; i++) {
		rv = util_entry_copy(&l->unstable[l->n_unstable], &ents[i]);
		if (rv == RAFT_OK)
			l->n_unstable++;
	}
	if (rv != RAFT_OK)
		log_fail(l, rv);
	return rv;
}

/* The first entry of ents that conflicts with (or is missing from) the log, or 0. */
static uint64_t log_find_conflict(raft_log *l, const raft_entry *ents, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!log_match_term(l, ents[i].index, ents[i].term))
			return ents[i].index;
	return 0;
}

bool log_maybe_append(raft_log *l, uint64_t index, uint64_t log_term, uint64_t commit,
                      const raft_entry *ents, size_t n, uint64_t *last_new)
{
	if (!log_match_term(l, index, log_term))
		return false;
	*last_new = index + n;
	uint64_t conflict = log_find_conflict(l, ents, n);
	if (conflict != 0) {
		/* A follower truncates only at the first conflicting entry, and log_append refuses
		 * to go at or below commit. Entries before `conflict` are already ours. */
		size_t skip = (size_t)(conflict - (index + 1));
		if (log_append(l, ents + skip, n - skip) != RAFT_OK)
			return false;
	}
	log_commit_to(l, commit < *last_new ? commit : *last_new);
	return true;
}

void log_commit_to(raft_log *l, uint64_t index)
{
	if (index <= l->committed)
		return;
	if (index > log_last_index(l)) {
		log_fail(l, RAFT_ERR_CORRUPT); /* a commit beyond our log is a protocol violation */
		return;
	}
	l->committed = index;
}

/* §5.4.2 (figure 8): a leader only commits entries of its own term by counting replicas. */
bool log_maybe_commit(raft_log *l, uint64_t index, uint64_t term)
{
	if (index > l->committed && log_term_or_zero(l, index) == term) {
		log_commit_to(l, index);
		return l->err == 0;
	}
	return false;
}

uint64_t log_find_conflict_by_term(raft_log *l, uint64_t index, uint64_t term, uint64_t *hint_term)
{
	*hint_term = 0;
	if (index > log_last_index(l))
		return index;
	for (;;) {
		uint64_t t;
		if (log_term(l, index, &t) != RAFT_OK)
			return index;
		if (t <= term || index == 0) {
			*hint_term = t;
			return index;
		}
		index--;
	}
}

int log_restore(raft_log *l, const raft_snapshot *snap)
{
	raft_snapshot copy;
	int rv = raft_snapshot_copy(&copy, snap);
	if (rv != RAFT_OK) {
		log_fail(l, rv);
		return rv;
	}
	log_free_unstable(l, 0);
	raft_snapshot_clear(&l->snapshot);
	l->snapshot = copy;
	l->has_snapshot = true;
	l->snapshot_in_progress = false;
	l->offset = snap->metadata.index + 1;
	l->in_progress = snap->metadata.index;
	l->committed = snap->metadata.index;
	return RAFT_OK;
}

uint64_t log_stable_last_index(raft_log *l)
{
	if (l->n_unstable > 0 || l->has_snapshot)
		return l->offset - 1;
	return log_storage_last(l);
}

void log_stable_to(raft_log *l, uint64_t index, uint64_t term)
{
	if (index < l->offset || index >= l->offset + l->n_unstable)
		return;
	if (l->unstable[index - l->offset].term != term)
		return; /* truncated and replaced since the Ready was handed out */
	size_t drop = (size_t)(index - l->offset + 1);
	for (size_t i = 0; i < drop; i++)
		free(l->unstable[i].data);
	memmove(l->unstable, l->unstable + drop, (l->n_unstable - drop) * sizeof(raft_entry));
	l->n_unstable -= drop;
	l->offset = index + 1;
	/* Entries re-appended after a truncation may already be durable: never leave in_progress
	 * behind offset - 1 (rawnode_take_entries indexes from it). */
	if (l->in_progress < index)
		l->in_progress = index;
}

void log_stable_snapshot_to(raft_log *l, uint64_t index)
{
	if (l->has_snapshot && l->snapshot.metadata.index == index) {
		raft_snapshot_clear(&l->snapshot);
		l->has_snapshot = false;
		l->snapshot_in_progress = false;
	}
}

bool log_has_unhanded_entries(const raft_log *l)
{
	return l->n_unstable > 0 && l->offset + l->n_unstable - 1 > l->in_progress;
}

static uint64_t log_next_committed_lo(raft_log *l)
{
	uint64_t first = log_first_index(l);
	return l->applying + 1 > first ? l->applying + 1 : first;
}

bool log_has_next_committed(raft_log *l)
{
	return l->committed + 1 > log_next_committed_lo(l);
}

int log_next_committed(raft_log *l, raft_entry **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (!log_has_next_committed(l))
		return RAFT_OK;
	return log_entries(l, log_next_committed_lo(l), l->committed + 1, l->max_applying_size, out,
	                   n);
}
