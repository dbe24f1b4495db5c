/* entry.c - release and deep-copy helpers for entries, snapshots and messages. */
#include <stdlib.h>
#include <string.h>

#include "raft.h"

/* Returns a malloc'd copy of len bytes at src (owned by the caller), or NULL when len is 0.
 * Sets *rv to RAFT_ERR_NOMEM when the allocation fails, and leaves it alone otherwise. */
static void *entry_dup_bytes(const void *src, size_t len, int *rv)
{
	void *copy;

	if (len == 0)
		return NULL;
	copy = malloc(len);
	if (copy == NULL) {
		*rv = RAFT_ERR_NOMEM;
		return NULL;
	}
	memcpy(copy, src, len);
	return copy;
}

void raft_entries_free(raft_entry *entries, size_t n)
{
	if (entries == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(entries[i].data);
	free(entries);
}

void raft_snapshot_clear(raft_snapshot *snap)
{
	if (snap == NULL)
		return;
	free(snap->data);
	memset(snap, 0, sizeof(*snap));
}

/*
 * dst: written, never read or freed first, so whatever it held before is not released; it must
 * not be src. On RAFT_OK dst->data is a new buffer owned by dst. src: borrowed.
 * A snapshot claiming len > 0 with no data is RAFT_ERR_INVALID.
 */
int raft_snapshot_copy(raft_snapshot *dst, const raft_snapshot *src)
{
	raft_snapshot copy;
	int rv = RAFT_OK;

	if (dst == NULL)
		return RAFT_ERR_INVALID;
	memset(&copy, 0, sizeof(copy));
	if (src == NULL || (src->len > 0 && src->data == NULL)) {
		rv = RAFT_ERR_INVALID;
		goto cleanup;
	}
	copy.metadata = src->metadata;
	copy.len = src->len;
	copy.data = entry_dup_bytes(src->data, src->len, &rv);
	if (rv != RAFT_OK)
		goto cleanup;
	*dst = copy;
	return RAFT_OK;

cleanup:
	memset(dst, 0, sizeof(*dst));
	return rv;
}

void raft_message_free(raft_message *m)
{
	if (m == NULL)
		return;
	raft_entries_free(m->entries, m->n_entries);
	free(m->snapshot.data);
	memset(m, 0, sizeof(*m));
}

/*
 * Copies n entries into a new array. On RAFT_OK *out (owned by the caller, release with
 * raft_entries_free()) is NULL when n is 0. src is borrowed. On error *out is NULL.
 */
static int entry_copy_array(raft_entry **out, const raft_entry *src, size_t n)
{
	raft_entry *copy = NULL;
	int rv = RAFT_OK;

	*out = NULL;
	if (n == 0)
		return RAFT_OK;
	if (src == NULL)
		return RAFT_ERR_INVALID;
	copy = calloc(n, sizeof(*copy));
	if (copy == NULL)
		return RAFT_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		if (src[i].len > 0 && src[i].data == NULL) {
			rv = RAFT_ERR_INVALID;
			goto cleanup;
		}
		copy[i] = src[i];
		copy[i].data = entry_dup_bytes(src[i].data, src[i].len, &rv);
		if (rv != RAFT_OK) {
			copy[i].data = NULL;
			goto cleanup;
		}
	}
	*out = copy;
	return RAFT_OK;

cleanup:
	raft_entries_free(copy, n);
	return rv;
}

/*
 * dst: written, never read or freed first; it must not be src. On RAFT_OK dst owns new copies of
 * the entries and the snapshot data. src: borrowed. Inconsistent input (entries or data
 * missing for a non-zero count or length) is RAFT_ERR_INVALID. On error *dst is zeroed.
 */
int raft_message_clone(raft_message *dst, const raft_message *src)
{
	raft_message copy;
	int rv;

	if (dst == NULL)
		return RAFT_ERR_INVALID;
	if (src == NULL) {
		memset(dst, 0, sizeof(*dst));
		return RAFT_ERR_INVALID;
	}
	copy = *src;
	copy.entries = NULL;
	copy.n_entries = 0;
	copy.snapshot.data = NULL;
	copy.snapshot.len = 0;

	rv = raft_snapshot_copy(&copy.snapshot, &src->snapshot);
	if (rv != RAFT_OK)
		goto cleanup;
	rv = entry_copy_array(&copy.entries, src->entries, src->n_entries);
	if (rv != RAFT_OK)
		goto cleanup;
	copy.n_entries = src->n_entries;
	*dst = copy;
	return RAFT_OK;

cleanup:
	raft_message_free(&copy);
	memset(dst, 0, sizeof(*dst));
	return rv;
}
