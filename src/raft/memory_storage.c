/* memory_storage.c - an in-memory raft_storage with a dummy entry at the compaction point. */
#include <stdlib.h>
#include <string.h>

#include "raft.h"

/* Capacity of a fresh entries array; it doubles from there. */
#define MS_INITIAL_CAPACITY 16

/*
 * ents[0] is a dummy entry whose (index, term) is the compaction point; it never holds data.
 * ents[1 .. n_ents - 1] are the live entries, with ents[k].index == ents[0].index + k.
 * snap is the latest snapshot; its conf state is the one initial_state() reports.
 */
struct raft_memory_storage {
	raft_storage iface; /* iface.ctx == this storage */
	raft_hard_state hard_state;
	raft_snapshot snap;          /* owns snap.data */
	raft_entry *ents;            /* owns the array and every entry's data */
	size_t n_ents;               /* >= 1: the dummy is always there */
	size_t cap;                  /* allocated slots in ents */
	int injected;                /* non-zero: the status reads return */
	bool injected_snapshot_only; /* when set, only snapshot() returns injected */
};

static uint64_t ms_offset(const raft_memory_storage *ms)
{
	return ms->ents[0].index;
}

static uint64_t ms_last(const raft_memory_storage *ms)
{
	return ms->ents[0].index + (ms->n_ents - 1);
}

/* The status a read other than snapshot() returns before doing anything. */
static int ms_read_status(const raft_memory_storage *ms)
{
	return ms->injected_snapshot_only ? RAFT_OK : ms->injected;
}

/* Makes room for at least need entries, doubling the capacity so appends are amortized O(1).
 * On error the array is unchanged. */
static int ms_reserve(raft_memory_storage *ms, size_t need)
{
	raft_entry *grown;
	size_t cap = ms->cap;

	if (need <= cap)
		return RAFT_OK;
	while (cap < need) {
		if (cap > SIZE_MAX / 2 / sizeof(*ms->ents))
			return RAFT_ERR_NOMEM;
		cap *= 2;
	}
	grown = realloc(ms->ents, cap * sizeof(*ms->ents));
	if (grown == NULL)
		return RAFT_ERR_NOMEM;
	ms->ents = grown;
	ms->cap = cap;
	return RAFT_OK;
}

/* Gives back memory after a compaction or snapshot left most of a large array unused. A failed
 * shrink is harmless: the old, larger array stays. */
static void ms_shrink(raft_memory_storage *ms)
{
	raft_entry *shrunk;
	size_t cap = ms->cap;

	while (cap > MS_INITIAL_CAPACITY && ms->n_ents < cap / 4)
		cap /= 2;
	if (cap == ms->cap)
		return;
	shrunk = realloc(ms->ents, cap * sizeof(*ms->ents));
	if (shrunk == NULL)
		return;
	ms->ents = shrunk;
	ms->cap = cap;
}

/* Frees the data of ents[from .. n_ents - 1] and drops them from the log. */
static void ms_truncate(raft_memory_storage *ms, size_t from)
{
	for (size_t k = from; k < ms->n_ents; k++)
		free(ms->ents[k].data);
	ms->n_ents = from;
}

/* Copies e's payload into a new buffer that *data owns; NULL for an empty payload. */
static int ms_dup_data(const raft_entry *e, void **data)
{
	*data = NULL;
	if (e->len == 0)
		return RAFT_OK;
	*data = malloc(e->len);
	if (*data == NULL)
		return RAFT_ERR_NOMEM;
	memcpy(*data, e->data, e->len);
	return RAFT_OK;
}

/* ---- raft_storage callbacks; ctx is the raft_memory_storage. ---- */

/* hs, cs: written by value. */
static int ms_initial_state(void *ctx, raft_hard_state *hs, raft_conf_state *cs)
{
	raft_memory_storage *ms = ctx;
	int rv;

	if (ms == NULL || hs == NULL || cs == NULL)
		return RAFT_ERR_INVALID;
	rv = ms_read_status(ms);
	if (rv != RAFT_OK)
		return rv;
	*hs = ms->hard_state;
	*cs = ms->snap.metadata.conf_state;
	return RAFT_OK;
}

/*
 * On RAFT_OK *out is a new array of *n entries with copied data, owned by the caller (release
 * with raft_entries_free()); it is NULL with *n 0 when lo == hi. On error *out is NULL, *n 0.
 * lo > hi is RAFT_ERR_INVALID. The total payload stays within max_size, except that the first
 * entry is returned whatever its size.
 */
static int ms_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_size, raft_entry **out,
                      size_t *n)
{
	raft_memory_storage *ms = ctx;
	raft_entry *copy = NULL;
	uint64_t offset, total;
	size_t first, count;
	int rv;

	if (out == NULL || n == NULL)
		return RAFT_ERR_INVALID;
	*out = NULL;
	*n = 0;
	if (ms == NULL)
		return RAFT_ERR_INVALID;
	rv = ms_read_status(ms);
	if (rv != RAFT_OK)
		return rv;
	offset = ms_offset(ms);
	if (lo <= offset)
		return RAFT_ERR_COMPACTED;
	if (hi > 0 && hi - 1 > ms_last(ms))
		return RAFT_ERR_UNAVAILABLE;
	if (lo > hi)
		return RAFT_ERR_INVALID;
	if (lo == hi)
		return RAFT_OK;

	first = (size_t)(lo - offset);
	total = ms->ents[first].len;
	count = 1;
	while (count < hi - lo) {
		uint64_t len = ms->ents[first + count].len;

		if (len > max_size || total > max_size - len)
			break;
		total += len;
		count++;
	}

	copy = calloc(count, sizeof(*copy));
	if (copy == NULL)
		return RAFT_ERR_NOMEM;
	for (size_t k = 0; k < count; k++) {
		const raft_entry *src = &ms->ents[first + k];

		copy[k] = *src;
		rv = ms_dup_data(src, &copy[k].data);
		if (rv != RAFT_OK)
			goto cleanup;
	}
	*out = copy;
	*n = count;
	return RAFT_OK;

cleanup:
	raft_entries_free(copy, count);
	return rv;
}

static int ms_term(void *ctx, uint64_t i, uint64_t *term)
{
	raft_memory_storage *ms = ctx;
	int rv;

	if (ms == NULL || term == NULL)
		return RAFT_ERR_INVALID;
	*term = 0;
	rv = ms_read_status(ms);
	if (rv != RAFT_OK)
		return rv;
	if (i < ms_offset(ms))
		return RAFT_ERR_COMPACTED;
	if (i > ms_last(ms))
		return RAFT_ERR_UNAVAILABLE;
	*term = ms->ents[i - ms_offset(ms)].term;
	return RAFT_OK;
}

static int ms_first_index(void *ctx, uint64_t *index)
{
	raft_memory_storage *ms = ctx;
	int rv;

	if (ms == NULL || index == NULL)
		return RAFT_ERR_INVALID;
	rv = ms_read_status(ms);
	if (rv != RAFT_OK)
		return rv;
	*index = ms_offset(ms) + 1;
	return RAFT_OK;
}

static int ms_last_index(void *ctx, uint64_t *index)
{
	raft_memory_storage *ms = ctx;
	int rv;

	if (ms == NULL || index == NULL)
		return RAFT_ERR_INVALID;
	rv = ms_read_status(ms);
	if (rv != RAFT_OK)
		return rv;
	*index = ms_last(ms);
	return RAFT_OK;
}

/* On RAFT_OK *out is a deep copy whose data the caller owns (raft_snapshot_clear()); on error
 * *out is zeroed. */
static int ms_snapshot(void *ctx, raft_snapshot *out)
{
	raft_memory_storage *ms = ctx;

	if (ms == NULL || out == NULL)
		return RAFT_ERR_INVALID;
	if (ms->injected != RAFT_OK) {
		memset(out, 0, sizeof(*out));
		return ms->injected;
	}
	return raft_snapshot_copy(out, &ms->snap);
}

/* ---- public API ---- */

raft_memory_storage *raft_memory_storage_new(void)
{
	raft_memory_storage *ms = calloc(1, sizeof(*ms));

	if (ms == NULL)
		return NULL;
	ms->ents = calloc(MS_INITIAL_CAPACITY, sizeof(*ms->ents));
	if (ms->ents == NULL) {
		free(ms);
		return NULL;
	}
	ms->cap = MS_INITIAL_CAPACITY;
	ms->n_ents = 1;
	ms->iface.ctx = ms;
	ms->iface.initial_state = ms_initial_state;
	ms->iface.entries = ms_entries;
	ms->iface.term = ms_term;
	ms->iface.first_index = ms_first_index;
	ms->iface.last_index = ms_last_index;
	ms->iface.snapshot = ms_snapshot;
	return ms;
}

void raft_memory_storage_free(raft_memory_storage *ms)
{
	if (ms == NULL)
		return;
	ms_truncate(ms, 0);
	free(ms->ents);
	raft_snapshot_clear(&ms->snap);
	free(ms);
}

/* The returned struct lives inside ms; the caller must not free it. */
const raft_storage *raft_memory_storage_interface(raft_memory_storage *ms)
{
	return ms == NULL ? NULL : &ms->iface;
}

/*
 * entries: borrowed; every payload is copied. Entries at or below the compaction point are
 * skipped, the rest overwrite the log from their first index on. All or nothing: on any error
 * the log is unchanged.
 */
int raft_memory_storage_append(raft_memory_storage *ms, const raft_entry *entries, size_t n)
{
	uint64_t first_new, skip, at;
	size_t keep, count;
	void **data = NULL;
	int rv;

	if (ms == NULL || (n > 0 && entries == NULL))
		return RAFT_ERR_INVALID;
	for (size_t k = 0; k < n; k++) {
		if (entries[k].len > 0 && entries[k].data == NULL)
			return RAFT_ERR_INVALID;
		if (k > 0 && (entries[k - 1].index == UINT64_MAX ||
		              entries[k].index != entries[k - 1].index + 1))
			return RAFT_ERR_INVALID;
	}
	if (n == 0)
		return RAFT_OK;

	first_new = ms_offset(ms) + 1;
	if (entries[n - 1].index < first_new)
		return RAFT_OK;
	skip = entries[0].index < first_new ? first_new - entries[0].index : 0;
	at = entries[skip].index;
	if (at > ms_last(ms) + 1)
		return RAFT_ERR_INVALID;
	keep = (size_t)(at - ms_offset(ms));
	count = n - (size_t)skip;

	data = calloc(count, sizeof(*data));
	if (data == NULL)
		return RAFT_ERR_NOMEM;
	for (size_t k = 0; k < count; k++) {
		rv = ms_dup_data(&entries[skip + k], &data[k]);
		if (rv != RAFT_OK)
			goto cleanup;
	}
	if (count > SIZE_MAX - keep) {
		rv = RAFT_ERR_NOMEM;
		goto cleanup;
	}
	rv = ms_reserve(ms, keep + count);
	if (rv != RAFT_OK)
		goto cleanup;

	ms_truncate(ms, keep);
	for (size_t k = 0; k < count; k++) {
		ms->ents[keep + k] = entries[skip + k];
		ms->ents[keep + k].data = data[k];
	}
	ms->n_ents = keep + count;
	free(data);
	return RAFT_OK;

cleanup:
	for (size_t k = 0; k < count; k++)
		free(data[k]);
	free(data);
	return rv;
}

/* hs: borrowed, copied by value. */
int raft_memory_storage_set_hard_state(raft_memory_storage *ms, const raft_hard_state *hs)
{
	if (ms == NULL || hs == NULL)
		return RAFT_ERR_INVALID;
	ms->hard_state = *hs;
	return RAFT_OK;
}

/* cs: borrowed, copied by value into the current snapshot's metadata. */
int raft_memory_storage_set_conf_state(raft_memory_storage *ms, const raft_conf_state *cs)
{
	if (ms == NULL || cs == NULL || cs->n_voters > RAFT_MAX_VOTERS)
		return RAFT_ERR_INVALID;
	ms->snap.metadata.conf_state = *cs;
	return RAFT_OK;
}

/*
 * snap: borrowed; its data is copied. Drops every entry: the log becomes just the dummy at
 * (snap index, snap term). A conf state with more than RAFT_MAX_VOTERS ids, or an index of
 * UINT64_MAX (no room for a next entry), is RAFT_ERR_INVALID.
 * On error nothing changes.
 */
int raft_memory_storage_apply_snapshot(raft_memory_storage *ms, const raft_snapshot *snap)
{
	raft_snapshot copy;
	int rv;

	if (ms == NULL || snap == NULL || snap->metadata.index == UINT64_MAX ||
	    snap->metadata.conf_state.n_voters > RAFT_MAX_VOTERS)
		return RAFT_ERR_INVALID;
	if (snap->metadata.index <= ms->snap.metadata.index)
		return RAFT_ERR_SNAP_OUT_OF_DATE;
	rv = raft_snapshot_copy(&copy, snap);
	if (rv != RAFT_OK)
		return rv;

	raft_snapshot_clear(&ms->snap);
	ms->snap = copy;
	ms_truncate(ms, 1);
	memset(&ms->ents[0], 0, sizeof(ms->ents[0]));
	ms->ents[0].index = snap->metadata.index;
	ms->ents[0].term = snap->metadata.term;
	ms_shrink(ms);
	return RAFT_OK;
}

/*
 * cs: borrowed, copied by value; NULL keeps the current snapshot's membership. data: borrowed,
 * len bytes copied; NULL only with len 0. Keeps the log as it is. Besides the documented
 * codes, an index that is above the current snapshot but already compacted away (so its term
 * is unknown) is RAFT_ERR_COMPACTED. On error nothing changes.
 */
int raft_memory_storage_create_snapshot(raft_memory_storage *ms, uint64_t i,
                                        const raft_conf_state *cs, const void *data, size_t len)
{
	raft_snapshot next;

	if (ms == NULL || (data == NULL && len > 0) ||
	    (cs != NULL && cs->n_voters > RAFT_MAX_VOTERS))
		return RAFT_ERR_INVALID;
	if (i <= ms->snap.metadata.index)
		return RAFT_ERR_SNAP_OUT_OF_DATE;
	if (i > ms_last(ms))
		return RAFT_ERR_UNAVAILABLE;
	if (i < ms_offset(ms))
		return RAFT_ERR_COMPACTED;

	memset(&next, 0, sizeof(next));
	next.metadata.index = i;
	next.metadata.term = ms->ents[i - ms_offset(ms)].term;
	next.metadata.conf_state = cs != NULL ? *cs : ms->snap.metadata.conf_state;
	if (len > 0) {
		next.data = malloc(len);
		if (next.data == NULL)
			return RAFT_ERR_NOMEM;
		memcpy(next.data, data, len);
		next.len = len;
	}
	raft_snapshot_clear(&ms->snap);
	ms->snap = next;
	return RAFT_OK;
}

/* Entry i becomes the dummy: its data is freed, its (index, term) kept. On error nothing
 * changes. */
int raft_memory_storage_compact(raft_memory_storage *ms, uint64_t i)
{
	size_t cut;

	if (ms == NULL)
		return RAFT_ERR_INVALID;
	if (i <= ms_offset(ms))
		return RAFT_ERR_COMPACTED;
	if (i > ms_last(ms))
		return RAFT_ERR_UNAVAILABLE;

	cut = (size_t)(i - ms_offset(ms));
	for (size_t k = 0; k <= cut; k++)
		free(ms->ents[k].data);
	memmove(&ms->ents[0], &ms->ents[cut], (ms->n_ents - cut) * sizeof(*ms->ents));
	ms->n_ents -= cut;
	ms->ents[0].data = NULL;
	ms->ents[0].len = 0;
	ms->ents[0].type = RAFT_ENTRY_NORMAL;
	ms_shrink(ms);
	return RAFT_OK;
}

/* status 0 clears the injection. */
void raft_memory_storage_inject_error(raft_memory_storage *ms, int status, bool snapshot_only)
{
	if (ms == NULL)
		return;
	ms->injected = status;
	ms->injected_snapshot_only = status != RAFT_OK && snapshot_only;
}
