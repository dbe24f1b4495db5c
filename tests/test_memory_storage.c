/* test_memory_storage.c - CUnit suite "memory_storage": the in-memory raft_storage. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"
#include "suites.h"

/* ---- helpers ---- */

/* Fills e with entry (index, term) whose payload is len bytes of the pattern ms_byte(index, k).
 * e->data is a new buffer owned by the caller. */
static uint8_t ms_byte(uint64_t index, size_t k)
{
	return (uint8_t)(index * 31 + k);
}

static void ms_make_entry(raft_entry *e, uint64_t index, uint64_t term, size_t len)
{
	memset(e, 0, sizeof(*e));
	e->index = index;
	e->term = term;
	e->len = len;
	if (len > 0) {
		uint8_t *p = malloc(len);

		CU_ASSERT_FATAL(p != NULL);
		for (size_t k = 0; k < len; k++)
			p[k] = ms_byte(index, k);
		e->data = p;
	}
}

/* Appends entries first .. first + n - 1 with terms[k] and len-byte payloads; returns the
 * status of the append. The temporary array is freed here. */
static int ms_append(raft_memory_storage *ms, uint64_t first, const uint64_t *terms, size_t n,
                     size_t len)
{
	raft_entry *e = calloc(n > 0 ? n : 1, sizeof(*e));
	int rv;

	CU_ASSERT_FATAL(e != NULL);
	for (size_t k = 0; k < n; k++)
		ms_make_entry(&e[k], first + k, terms[k], len);
	rv = raft_memory_storage_append(ms, e, n);
	raft_entries_free(e, n);
	return rv;
}

/* A storage holding entries 1..5 with terms 1, 1, 2, 3, 3 and 4-byte payloads. */
static const uint64_t ms_terms5[5] = {1, 1, 2, 3, 3};

static raft_memory_storage *ms_new5(void)
{
	raft_memory_storage *ms = raft_memory_storage_new();

	CU_ASSERT_FATAL(ms != NULL);
	CU_ASSERT_EQUAL_FATAL(ms_append(ms, 1, ms_terms5, 5, 4), RAFT_OK);
	return ms;
}

static uint64_t ms_first(raft_memory_storage *ms)
{
	const raft_storage *s = raft_memory_storage_interface(ms);
	uint64_t v = 0;

	CU_ASSERT_EQUAL(s->first_index(s->ctx, &v), RAFT_OK);
	return v;
}

static uint64_t ms_last(raft_memory_storage *ms)
{
	const raft_storage *s = raft_memory_storage_interface(ms);
	uint64_t v = 0;

	CU_ASSERT_EQUAL(s->last_index(s->ctx, &v), RAFT_OK);
	return v;
}

/* The status of term(i); on RAFT_OK *term holds the answer. */
static int ms_term(raft_memory_storage *ms, uint64_t i, uint64_t *term)
{
	const raft_storage *s = raft_memory_storage_interface(ms);

	return s->term(s->ctx, i, term);
}

/* term(i) succeeds with the expected term. */
static bool ms_term_is(raft_memory_storage *ms, uint64_t i, uint64_t want)
{
	uint64_t t = 0;

	return ms_term(ms, i, &t) == RAFT_OK && t == want;
}

/* The status of entries(lo, hi, max); *out and *n as returned. On error checks that nothing
 * was handed out. */
static int ms_entries(raft_memory_storage *ms, uint64_t lo, uint64_t hi, uint64_t max,
                      raft_entry **out, size_t *n)
{
	static raft_entry poison;
	const raft_storage *s = raft_memory_storage_interface(ms);
	int rv;

	*out = &poison;
	*n = 12345;
	rv = s->entries(s->ctx, lo, hi, max, out, n);
	if (rv != RAFT_OK) {
		CU_ASSERT_PTR_NULL(*out);
		CU_ASSERT_EQUAL(*n, 0);
	}
	return rv;
}

/* Whether entries[0..n) are exactly indexes first.. with the given terms and intact payloads of
 * len bytes each. */
static bool ms_entries_match(const raft_entry *e, size_t n, uint64_t first, const uint64_t *terms,
                             size_t len)
{
	for (size_t k = 0; k < n; k++) {
		const uint8_t *p = e[k].data;

		if (e[k].index != first + k || e[k].term != terms[k] || e[k].len != len ||
		    e[k].type != RAFT_ENTRY_NORMAL)
			return false;
		if ((len == 0) != (p == NULL))
			return false;
		for (size_t b = 0; b < len; b++) {
			if (p[b] != ms_byte(first + k, b))
				return false;
		}
	}
	return true;
}

/* entries(lo, hi, UINT64_MAX) returns hi - lo entries that match terms (indexed from lo). */
static bool ms_read_back(raft_memory_storage *ms, uint64_t lo, uint64_t hi, const uint64_t *terms,
                         size_t len)
{
	raft_entry *e = NULL;
	size_t n = 0;
	bool ok;

	if (ms_entries(ms, lo, hi, UINT64_MAX, &e, &n) != RAFT_OK)
		return false;
	ok = n == hi - lo && ms_entries_match(e, n, lo, terms, len);
	raft_entries_free(e, n);
	return ok;
}

/* ---- tests ---- */

static void test_fresh(void)
{
	raft_memory_storage *ms = raft_memory_storage_new();
	const raft_storage *s;
	raft_hard_state hs = {1, 1, 1};
	raft_conf_state cs;
	raft_snapshot snap;
	raft_entry *e;
	size_t n;
	uint64_t t;

	CU_ASSERT_FATAL(ms != NULL);
	s = raft_memory_storage_interface(ms);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_PTR_EQUAL(s->ctx, ms);
	CU_ASSERT_PTR_EQUAL(raft_memory_storage_interface(ms), s);
	CU_ASSERT_PTR_NULL(raft_memory_storage_interface(NULL));

	CU_ASSERT_EQUAL(ms_first(ms), 1);
	CU_ASSERT_EQUAL(ms_last(ms), 0);
	CU_ASSERT(ms_term_is(ms, 0, 0));
	CU_ASSERT_EQUAL(ms_term(ms, 1, &t), RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(ms_entries(ms, 1, 1, 0, &e, &n), RAFT_OK);
	CU_ASSERT_PTR_NULL(e);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_EQUAL(ms_entries(ms, 1, 2, 0, &e, &n), RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(ms_entries(ms, 0, 1, 0, &e, &n), RAFT_ERR_COMPACTED);

	memset(&cs, 0xA5, sizeof(cs));
	CU_ASSERT_EQUAL(s->initial_state(s->ctx, &hs, &cs), RAFT_OK);
	CU_ASSERT(hs.term == 0 && hs.vote == 0 && hs.commit == 0);
	CU_ASSERT_EQUAL(cs.n_voters, 0);

	memset(&snap, 0xA5, sizeof(snap));
	CU_ASSERT_EQUAL(s->snapshot(s->ctx, &snap), RAFT_OK);
	CU_ASSERT_EQUAL(snap.metadata.index, 0);
	CU_ASSERT_EQUAL(snap.metadata.term, 0);
	CU_ASSERT_EQUAL(snap.metadata.conf_state.n_voters, 0);
	CU_ASSERT_PTR_NULL(snap.data);
	CU_ASSERT_EQUAL(snap.len, 0);
	raft_memory_storage_free(ms);
}

static void test_append_and_read(void)
{
	raft_memory_storage *ms = ms_new5();
	raft_entry *e;
	size_t n;
	uint64_t t;

	CU_ASSERT_EQUAL(ms_first(ms), 1);
	CU_ASSERT_EQUAL(ms_last(ms), 5);
	CU_ASSERT(ms_term_is(ms, 0, 0));
	for (uint64_t i = 1; i <= 5; i++)
		CU_ASSERT(ms_term_is(ms, i, ms_terms5[i - 1]));
	CU_ASSERT_EQUAL(ms_term(ms, 6, &t), RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(ms_term(ms, UINT64_MAX, &t), RAFT_ERR_UNAVAILABLE);

	CU_ASSERT(ms_read_back(ms, 1, 6, ms_terms5, 4));
	CU_ASSERT(ms_read_back(ms, 2, 4, ms_terms5 + 1, 4));
	CU_ASSERT(ms_read_back(ms, 5, 6, ms_terms5 + 4, 4));
	CU_ASSERT_EQUAL(ms_entries(ms, 4, 4, 0, &e, &n), RAFT_OK);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_EQUAL(ms_entries(ms, 6, 6, 0, &e, &n), RAFT_OK);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_EQUAL(ms_entries(ms, 1, 7, UINT64_MAX, &e, &n), RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(ms_entries(ms, 6, 7, UINT64_MAX, &e, &n), RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(ms_entries(ms, 0, 3, UINT64_MAX, &e, &n), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(ms_entries(ms, 4, 3, UINT64_MAX, &e, &n), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(ms_entries(ms, 2, UINT64_MAX, UINT64_MAX, &e, &n), RAFT_ERR_UNAVAILABLE);
	raft_memory_storage_free(ms);
}

/* Storage keeps its own copies: neither the appended array nor a returned one aliases it. */
static void test_copies_are_independent(void)
{
	raft_memory_storage *ms = raft_memory_storage_new();
	raft_entry in[2], *out = NULL;
	size_t n = 0;
	const uint64_t terms[2] = {1, 1};

	CU_ASSERT_FATAL(ms != NULL);
	ms_make_entry(&in[0], 1, 1, 8);
	ms_make_entry(&in[1], 2, 1, 8);
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_append(ms, in, 2), RAFT_OK);
	((uint8_t *)in[0].data)[0] ^= 0xFF;
	in[1].term = 9;
	free(in[0].data);
	free(in[1].data);
	CU_ASSERT(ms_read_back(ms, 1, 3, terms, 8));

	CU_ASSERT_EQUAL_FATAL(ms_entries(ms, 1, 3, UINT64_MAX, &out, &n), RAFT_OK);
	CU_ASSERT_EQUAL_FATAL(n, 2);
	((uint8_t *)out[1].data)[7] ^= 0xFF;
	out[0].term = 7;
	raft_entries_free(out, n);
	CU_ASSERT(ms_read_back(ms, 1, 3, terms, 8));
	raft_memory_storage_free(ms);
}

static void test_overlapping_append_truncates(void)
{
	raft_memory_storage *ms = ms_new5();
	const uint64_t t44[2] = {4, 4};
	const uint64_t t5[1] = {5};
	const uint64_t want1[4] = {1, 1, 4, 4};
	const uint64_t want2[3] = {1, 5, 5};
	uint64_t t;

	/* [3 4] in a new term replaces 3..5 */
	CU_ASSERT_EQUAL(ms_append(ms, 3, t44, 2, 4), RAFT_OK);
	CU_ASSERT_EQUAL(ms_last(ms), 4);
	CU_ASSERT(ms_read_back(ms, 1, 5, want1, 4));
	CU_ASSERT_EQUAL(ms_term(ms, 5, &t), RAFT_ERR_UNAVAILABLE);

	/* an overlap truncates from its first entry even if that entry is the same */
	CU_ASSERT_EQUAL(ms_append(ms, 2, ms_terms5 + 1, 1, 4), RAFT_OK);
	CU_ASSERT_EQUAL(ms_last(ms), 2);
	CU_ASSERT(ms_read_back(ms, 1, 3, ms_terms5, 4));

	/* appending right after the last entry extends the log */
	CU_ASSERT_EQUAL(ms_append(ms, 3, t5, 1, 4), RAFT_OK);
	CU_ASSERT_EQUAL(ms_last(ms), 3);
	CU_ASSERT_EQUAL(ms_append(ms, 2, t5, 1, 4), RAFT_OK);
	CU_ASSERT_EQUAL(ms_append(ms, 3, t5, 1, 4), RAFT_OK);
	CU_ASSERT(ms_read_back(ms, 1, 4, want2, 4));

	/* replacing the whole log from index 1 */
	CU_ASSERT_EQUAL(ms_append(ms, 1, t44, 2, 0), RAFT_OK);
	CU_ASSERT_EQUAL(ms_last(ms), 2);
	CU_ASSERT(ms_read_back(ms, 1, 3, t44, 0));
	raft_memory_storage_free(ms);
}

static void test_append_invalid(void)
{
	raft_memory_storage *ms = ms_new5();
	raft_entry e[3];

	CU_ASSERT_EQUAL(ms_append(ms, 7, ms_terms5, 1, 4), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(ms_last(ms), 5);

	ms_make_entry(&e[0], 6, 3, 4);
	ms_make_entry(&e[1], 7, 3, 4);
	ms_make_entry(&e[2], 9, 3, 4);
	CU_ASSERT_EQUAL(raft_memory_storage_append(ms, e, 3), RAFT_ERR_INVALID);
	e[2].index = 7;
	CU_ASSERT_EQUAL(raft_memory_storage_append(ms, e, 3), RAFT_ERR_INVALID);
	e[2].index = 8;
	free(e[1].data);
	e[1].data = NULL;
	CU_ASSERT_EQUAL(raft_memory_storage_append(ms, e, 3), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(ms_last(ms), 5);
	CU_ASSERT(ms_read_back(ms, 1, 6, ms_terms5, 4));
	e[1].len = 0;
	CU_ASSERT_EQUAL(raft_memory_storage_append(ms, e, 3), RAFT_OK);
	CU_ASSERT_EQUAL(ms_last(ms), 8);
	free(e[0].data);
	free(e[2].data);

	/* an index sequence that would wrap around is not contiguous */
	ms_make_entry(&e[0], UINT64_MAX, 3, 0);
	ms_make_entry(&e[1], 0, 3, 0);
	CU_ASSERT_EQUAL(raft_memory_storage_append(ms, e, 2), RAFT_ERR_INVALID);

	CU_ASSERT_EQUAL(raft_memory_storage_append(ms, NULL, 0), RAFT_OK);
	CU_ASSERT_EQUAL(raft_memory_storage_append(ms, NULL, 1), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_memory_storage_append(NULL, e, 1), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(ms_last(ms), 8);
	raft_memory_storage_free(ms);
}

static void test_compact(void)
{
	raft_memory_storage *ms = ms_new5();
	raft_entry *e;
	size_t n;
	uint64_t t;

	CU_ASSERT_EQUAL(raft_memory_storage_compact(ms, 0), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(raft_memory_storage_compact(ms, 6), RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(raft_memory_storage_compact(ms, 3), RAFT_OK);
	CU_ASSERT_EQUAL(ms_first(ms), 4);
	CU_ASSERT_EQUAL(ms_last(ms), 5);
	CU_ASSERT(ms_term_is(ms, 3, 2));
	CU_ASSERT(ms_term_is(ms, 4, 3));
	CU_ASSERT_EQUAL(ms_term(ms, 2, &t), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(ms_term(ms, 0, &t), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(ms_entries(ms, 3, 5, UINT64_MAX, &e, &n), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(ms_entries(ms, 3, 3, UINT64_MAX, &e, &n), RAFT_ERR_COMPACTED);
	CU_ASSERT(ms_read_back(ms, 4, 6, ms_terms5 + 3, 4));

	CU_ASSERT_EQUAL(raft_memory_storage_compact(ms, 3), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(raft_memory_storage_compact(ms, 2), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(raft_memory_storage_compact(ms, 6), RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(ms_first(ms), 4);

	/* compacting everything leaves only the dummy: first = last + 1 */
	CU_ASSERT_EQUAL(raft_memory_storage_compact(ms, 5), RAFT_OK);
	CU_ASSERT_EQUAL(ms_first(ms), 6);
	CU_ASSERT_EQUAL(ms_last(ms), 5);
	CU_ASSERT(ms_term_is(ms, 5, 3));
	CU_ASSERT_EQUAL(ms_term(ms, 4, &t), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(ms_term(ms, 6, &t), RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(ms_entries(ms, 6, 6, 0, &e, &n), RAFT_OK);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_EQUAL(ms_entries(ms, 6, 7, 0, &e, &n), RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(raft_memory_storage_compact(ms, 5), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(raft_memory_storage_compact(NULL, 5), RAFT_ERR_INVALID);

	/* the log continues after the dummy */
	CU_ASSERT_EQUAL(ms_append(ms, 6, ms_terms5 + 4, 1, 4), RAFT_OK);
	CU_ASSERT(ms_read_back(ms, 6, 7, ms_terms5 + 4, 4));
	raft_memory_storage_free(ms);
}

static void test_append_around_compaction_point(void)
{
	raft_memory_storage *ms = ms_new5();
	const uint64_t t9[5] = {9, 9, 9, 9, 9};
	const uint64_t want[2] = {9, 9};

	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_compact(ms, 3), RAFT_OK);

	/* entirely at or below the compaction point: ignored */
	CU_ASSERT_EQUAL(ms_append(ms, 1, t9, 3, 4), RAFT_OK);
	CU_ASSERT_EQUAL(ms_first(ms), 4);
	CU_ASSERT_EQUAL(ms_last(ms), 5);
	CU_ASSERT(ms_term_is(ms, 3, 2));
	CU_ASSERT(ms_read_back(ms, 4, 6, ms_terms5 + 3, 4));

	/* straddling it: 2 and 3 are skipped, 4.. overwrite, the dummy keeps its term */
	CU_ASSERT_EQUAL(ms_append(ms, 2, t9, 4, 4), RAFT_OK);
	CU_ASSERT_EQUAL(ms_first(ms), 4);
	CU_ASSERT_EQUAL(ms_last(ms), 5);
	CU_ASSERT(ms_term_is(ms, 3, 2));
	CU_ASSERT(ms_read_back(ms, 4, 6, want, 4));

	CU_ASSERT_EQUAL(ms_append(ms, 3, t9, 5, 4), RAFT_OK);
	CU_ASSERT_EQUAL(ms_last(ms), 7);
	CU_ASSERT(ms_term_is(ms, 3, 2));
	raft_memory_storage_free(ms);
}

static void test_apply_snapshot(void)
{
	raft_memory_storage *ms = ms_new5();
	const raft_storage *s = raft_memory_storage_interface(ms);
	const uint64_t t4[2] = {4, 4};
	char payload[] = "snapshot-payload";
	raft_snapshot snap, got;
	raft_hard_state hs;
	raft_conf_state cs;
	raft_entry *e;
	size_t n;
	uint64_t t;

	memset(&snap, 0, sizeof(snap));
	snap.metadata.index = 10;
	snap.metadata.term = 4;
	snap.metadata.conf_state.n_voters = 3;
	snap.metadata.conf_state.voters[0] = 1;
	snap.metadata.conf_state.voters[1] = 2;
	snap.metadata.conf_state.voters[2] = 3;
	snap.data = payload;
	snap.len = sizeof(payload);
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_apply_snapshot(ms, &snap), RAFT_OK);
	payload[0] = 'X';

	CU_ASSERT_EQUAL(ms_first(ms), 11);
	CU_ASSERT_EQUAL(ms_last(ms), 10);
	CU_ASSERT(ms_term_is(ms, 10, 4));
	CU_ASSERT_EQUAL(ms_term(ms, 9, &t), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(ms_term(ms, 5, &t), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(ms_term(ms, 11, &t), RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(ms_entries(ms, 10, 11, 0, &e, &n), RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(ms_entries(ms, 11, 11, 0, &e, &n), RAFT_OK);

	CU_ASSERT_EQUAL(s->initial_state(s->ctx, &hs, &cs), RAFT_OK);
	CU_ASSERT_EQUAL(cs.n_voters, 3);
	CU_ASSERT(cs.voters[0] == 1 && cs.voters[1] == 2 && cs.voters[2] == 3);

	/* snapshot() hands out a deep copy of the data as it was applied */
	CU_ASSERT_EQUAL_FATAL(s->snapshot(s->ctx, &got), RAFT_OK);
	CU_ASSERT_EQUAL(got.metadata.index, 10);
	CU_ASSERT_EQUAL(got.metadata.term, 4);
	CU_ASSERT_EQUAL(got.metadata.conf_state.n_voters, 3);
	CU_ASSERT_EQUAL_FATAL(got.len, sizeof(payload));
	CU_ASSERT_PTR_NOT_EQUAL(got.data, payload);
	CU_ASSERT_STRING_EQUAL(got.data, "snapshot-payload");
	((char *)got.data)[1] = 'Y';
	raft_snapshot_clear(&got);
	CU_ASSERT_EQUAL_FATAL(s->snapshot(s->ctx, &got), RAFT_OK);
	CU_ASSERT_STRING_EQUAL(got.data, "snapshot-payload");
	raft_snapshot_clear(&got);

	/* older or equal snapshots are refused and change nothing */
	snap.metadata.index = 9;
	CU_ASSERT_EQUAL(raft_memory_storage_apply_snapshot(ms, &snap), RAFT_ERR_SNAP_OUT_OF_DATE);
	snap.metadata.index = 10;
	snap.metadata.term = 5;
	CU_ASSERT_EQUAL(raft_memory_storage_apply_snapshot(ms, &snap), RAFT_ERR_SNAP_OUT_OF_DATE);
	CU_ASSERT(ms_term_is(ms, 10, 4));
	CU_ASSERT_EQUAL(ms_last(ms), 10);

	/* the log resumes right after the snapshot, and only there */
	CU_ASSERT_EQUAL(ms_append(ms, 12, t4, 1, 4), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(ms_append(ms, 11, t4, 2, 4), RAFT_OK);
	CU_ASSERT(ms_read_back(ms, 11, 13, t4, 4));

	snap.len = 4;
	snap.data = NULL;
	snap.metadata.index = 20;
	CU_ASSERT_EQUAL(raft_memory_storage_apply_snapshot(ms, &snap), RAFT_ERR_INVALID);
	snap.len = 0;
	snap.metadata.conf_state.n_voters = RAFT_MAX_VOTERS + 1;
	CU_ASSERT_EQUAL(raft_memory_storage_apply_snapshot(ms, &snap), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_memory_storage_apply_snapshot(ms, NULL), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(ms_last(ms), 12);
	raft_memory_storage_free(ms);
}

/* A snapshot inside the current log still replaces all of it. */
static void test_apply_snapshot_inside_log(void)
{
	raft_memory_storage *ms = ms_new5();
	raft_snapshot snap;
	uint64_t t;

	memset(&snap, 0, sizeof(snap));
	snap.metadata.index = 3;
	snap.metadata.term = 7;
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_apply_snapshot(ms, &snap), RAFT_OK);
	CU_ASSERT_EQUAL(ms_first(ms), 4);
	CU_ASSERT_EQUAL(ms_last(ms), 3);
	CU_ASSERT(ms_term_is(ms, 3, 7));
	CU_ASSERT_EQUAL(ms_term(ms, 4, &t), RAFT_ERR_UNAVAILABLE);

	/* index 0 is "no snapshot" and never newer than anything */
	snap.metadata.index = 0;
	CU_ASSERT_EQUAL(raft_memory_storage_apply_snapshot(ms, &snap), RAFT_ERR_SNAP_OUT_OF_DATE);
	raft_memory_storage_free(ms);
}

static void test_create_snapshot(void)
{
	raft_memory_storage *ms = ms_new5();
	const raft_storage *s = raft_memory_storage_interface(ms);
	raft_conf_state cs = {.voters = {1, 2, 3}, .n_voters = 3}, got_cs;
	raft_hard_state hs;
	raft_snapshot got;

	CU_ASSERT_EQUAL(raft_memory_storage_create_snapshot(ms, 0, &cs, "abc", 3),
	                RAFT_ERR_SNAP_OUT_OF_DATE);
	CU_ASSERT_EQUAL(raft_memory_storage_create_snapshot(ms, 6, &cs, "abc", 3),
	                RAFT_ERR_UNAVAILABLE);
	CU_ASSERT_EQUAL(raft_memory_storage_create_snapshot(ms, 3, &cs, NULL, 3), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_memory_storage_create_snapshot(NULL, 3, &cs, "abc", 3),
	                RAFT_ERR_INVALID);

	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_create_snapshot(ms, 3, &cs, "abc", 3), RAFT_OK);
	cs.voters[0] = 99;
	CU_ASSERT_EQUAL_FATAL(s->snapshot(s->ctx, &got), RAFT_OK);
	CU_ASSERT_EQUAL(got.metadata.index, 3);
	CU_ASSERT_EQUAL(got.metadata.term, 2);
	CU_ASSERT_EQUAL(got.metadata.conf_state.n_voters, 3);
	CU_ASSERT_EQUAL(got.metadata.conf_state.voters[0], 1);
	CU_ASSERT_EQUAL_FATAL(got.len, 3);
	CU_ASSERT(memcmp(got.data, "abc", 3) == 0);
	raft_snapshot_clear(&got);
	CU_ASSERT_EQUAL(s->initial_state(s->ctx, &hs, &got_cs), RAFT_OK);
	CU_ASSERT_EQUAL(got_cs.n_voters, 3);
	CU_ASSERT_EQUAL(got_cs.voters[2], 3);

	/* creating a snapshot keeps the log */
	CU_ASSERT_EQUAL(ms_first(ms), 1);
	CU_ASSERT(ms_read_back(ms, 1, 6, ms_terms5, 4));

	CU_ASSERT_EQUAL(raft_memory_storage_create_snapshot(ms, 3, &cs, "x", 1),
	                RAFT_ERR_SNAP_OUT_OF_DATE);
	CU_ASSERT_EQUAL(raft_memory_storage_create_snapshot(ms, 2, &cs, "x", 1),
	                RAFT_ERR_SNAP_OUT_OF_DATE);

	/* NULL membership keeps the previous one; NULL data means none */
	CU_ASSERT_EQUAL_FATAL(raft_memory_storage_create_snapshot(ms, 5, NULL, NULL, 0), RAFT_OK);
	CU_ASSERT_EQUAL_FATAL(s->snapshot(s->ctx, &got), RAFT_OK);
	CU_ASSERT_EQUAL(got.metadata.index, 5);
	CU_ASSERT_EQUAL(got.metadata.term, 3);
	CU_ASSERT_EQUAL(got.metadata.conf_state.n_voters, 3);
	CU_ASSERT_EQUAL(got.metadata.conf_state.voters[0], 1);
	CU_ASSERT_PTR_NULL(got.data);
	CU_ASSERT_EQUAL(got.len, 0);
	raft_snapshot_clear(&got);

	/* the usual pairing: snapshot, then compact up to it */
	CU_ASSERT_EQUAL(raft_memory_storage_compact(ms, 5), RAFT_OK);
	CU_ASSERT_EQUAL(ms_first(ms), 6);
	CU_ASSERT(ms_term_is(ms, 5, 3));
	raft_memory_storage_free(ms);
}

/* A snapshot index above the current snapshot but below the compaction point has no known term
 * any more. */
static void test_create_snapshot_below_compaction(void)
{
	raft_memory_storage *ms = raft_memory_storage_new();
	const raft_storage *s = raft_memory_storage_interface(ms);
	const uint64_t terms[8] = {1, 1, 2, 2, 3, 3, 4, 4};
	raft_snapshot got;

	CU_ASSERT_FATAL(ms != NULL);
	CU_ASSERT_EQUAL_FATAL(ms_append(ms, 1, terms, 8, 2), RAFT_OK);
	CU_ASSERT_EQUAL(raft_memory_storage_create_snapshot(ms, 2, NULL, NULL, 0), RAFT_OK);
	CU_ASSERT_EQUAL(raft_memory_storage_compact(ms, 5), RAFT_OK);
	CU_ASSERT_EQUAL(raft_memory_storage_create_snapshot(ms, 3, NULL, "q", 1),
	                RAFT_ERR_COMPACTED);
	CU_ASSERT_EQUAL(raft_memory_storage_create_snapshot(ms, 5, NULL, "q", 1), RAFT_OK);
	CU_ASSERT_EQUAL_FATAL(s->snapshot(s->ctx, &got), RAFT_OK);
	CU_ASSERT_EQUAL(got.metadata.index, 5);
	CU_ASSERT_EQUAL(got.metadata.term, 3);
	raft_snapshot_clear(&got);
	raft_memory_storage_free(ms);
}

static void test_entries_max_size(void)
{
	raft_memory_storage *ms = ms_new5();
	const uint64_t t6[6] = {3, 3, 3, 3, 3, 3};
	const uint64_t zero_terms[3] = {4, 4, 4};
	struct {
		uint64_t max;
		size_t want;
	} cases[] = {
	    {0, 1},  {3, 1},  {4, 1},  {7, 1},  {8, 2},          {11, 2},
	    {12, 3}, {19, 4}, {20, 5}, {21, 5}, {UINT64_MAX, 5},
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		raft_entry *e = NULL;
		size_t n = 0;

		CU_ASSERT_EQUAL_FATAL(ms_entries(ms, 1, 6, cases[c].max, &e, &n), RAFT_OK);
		if (n != cases[c].want)
			fprintf(stderr, "max_size %llu: got %zu entries, want %zu\n",
			        (unsigned long long)cases[c].max, n, cases[c].want);
		CU_ASSERT_EQUAL(n, cases[c].want);
		CU_ASSERT(ms_entries_match(e, n, 1, ms_terms5, 4));
		raft_entries_free(e, n);
	}

	/* a first entry bigger than the limit is still returned, alone */
	CU_ASSERT_EQUAL(ms_append(ms, 6, t6, 1, 100), RAFT_OK);
	CU_ASSERT_EQUAL(ms_append(ms, 7, t6, 1, 1), RAFT_OK);
	{
		raft_entry *e = NULL;
		size_t n = 0;

		CU_ASSERT_EQUAL_FATAL(ms_entries(ms, 6, 8, 10, &e, &n), RAFT_OK);
		CU_ASSERT_EQUAL(n, 1);
		CU_ASSERT(ms_entries_match(e, n, 6, t6, 100));
		raft_entries_free(e, n);
	}

	/* empty payloads cost nothing */
	CU_ASSERT_EQUAL(ms_append(ms, 8, zero_terms, 3, 0), RAFT_OK);
	{
		raft_entry *e = NULL;
		size_t n = 0;

		CU_ASSERT_EQUAL_FATAL(ms_entries(ms, 8, 11, 0, &e, &n), RAFT_OK);
		CU_ASSERT_EQUAL(n, 3);
		CU_ASSERT(ms_entries_match(e, n, 8, zero_terms, 0));
		raft_entries_free(e, n);
	}
	raft_memory_storage_free(ms);
}

static void test_hard_state(void)
{
	raft_memory_storage *ms = raft_memory_storage_new();
	const raft_storage *s = raft_memory_storage_interface(ms);
	raft_hard_state hs = {.term = 7, .vote = 2, .commit = 5}, got;
	raft_conf_state cs;

	CU_ASSERT_FATAL(ms != NULL);
	CU_ASSERT_EQUAL(raft_memory_storage_set_hard_state(ms, &hs), RAFT_OK);
	hs.term = 100;
	CU_ASSERT_EQUAL(s->initial_state(s->ctx, &got, &cs), RAFT_OK);
	CU_ASSERT(got.term == 7 && got.vote == 2 && got.commit == 5);
	CU_ASSERT_EQUAL(raft_memory_storage_set_hard_state(ms, NULL), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(raft_memory_storage_set_hard_state(NULL, &hs), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(s->initial_state(s->ctx, NULL, &cs), RAFT_ERR_INVALID);
	raft_memory_storage_free(ms);
}

/* Counts how many of the six reads return status. */
static int ms_reads_failing_with(raft_memory_storage *ms, int status)
{
	const raft_storage *s = raft_memory_storage_interface(ms);
	raft_hard_state hs;
	raft_conf_state cs;
	raft_snapshot snap;
	raft_entry *e = NULL;
	size_t n = 0;
	uint64_t v;
	int count = 0, rv;

	count += s->initial_state(s->ctx, &hs, &cs) == status;
	rv = s->entries(s->ctx, 1, 3, UINT64_MAX, &e, &n);
	count += rv == status;
	if (rv == RAFT_OK)
		raft_entries_free(e, n);
	count += s->term(s->ctx, 1, &v) == status;
	count += s->first_index(s->ctx, &v) == status;
	count += s->last_index(s->ctx, &v) == status;
	rv = s->snapshot(s->ctx, &snap);
	count += rv == status;
	if (rv == RAFT_OK)
		raft_snapshot_clear(&snap);
	return count;
}

static void test_inject_error(void)
{
	raft_memory_storage *ms = ms_new5();
	const raft_storage *s = raft_memory_storage_interface(ms);
	raft_snapshot snap;

	CU_ASSERT_EQUAL(ms_reads_failing_with(ms, RAFT_OK), 6);

	raft_memory_storage_inject_error(ms, RAFT_ERR_IO, false);
	CU_ASSERT_EQUAL(ms_reads_failing_with(ms, RAFT_ERR_IO), 6);
	memset(&snap, 0xA5, sizeof(snap));
	CU_ASSERT_EQUAL(s->snapshot(s->ctx, &snap), RAFT_ERR_IO);
	CU_ASSERT_PTR_NULL(snap.data);
	/* writes are not affected */
	CU_ASSERT_EQUAL(ms_append(ms, 6, ms_terms5, 1, 4), RAFT_OK);

	raft_memory_storage_inject_error(ms, RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE, true);
	CU_ASSERT_EQUAL(ms_reads_failing_with(ms, RAFT_OK), 5);
	CU_ASSERT_EQUAL(s->snapshot(s->ctx, &snap), RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE);
	CU_ASSERT_EQUAL(ms_last(ms), 6);

	raft_memory_storage_inject_error(ms, RAFT_OK, false);
	CU_ASSERT_EQUAL(ms_reads_failing_with(ms, RAFT_OK), 6);
	raft_memory_storage_inject_error(ms, RAFT_OK, true);
	CU_ASSERT_EQUAL(ms_reads_failing_with(ms, RAFT_OK), 6);
	raft_memory_storage_inject_error(NULL, RAFT_ERR_IO, false);
	raft_memory_storage_free(ms);
}

static void test_null_arguments(void)
{
	raft_memory_storage *ms = ms_new5();
	const raft_storage *s = raft_memory_storage_interface(ms);
	raft_entry *e;
	size_t n;

	CU_ASSERT_EQUAL(s->term(s->ctx, 1, NULL), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(s->first_index(s->ctx, NULL), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(s->last_index(s->ctx, NULL), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(s->snapshot(s->ctx, NULL), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(s->entries(s->ctx, 1, 2, 0, NULL, &n), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(s->entries(s->ctx, 1, 2, 0, &e, NULL), RAFT_ERR_INVALID);
	CU_ASSERT_EQUAL(s->entries(NULL, 1, 2, 0, &e, &n), RAFT_ERR_INVALID);
	raft_memory_storage_free(NULL);
	raft_memory_storage_free(ms);
}

/* Many single-entry appends, interleaved compactions and a snapshot: the log stays exact. */
static void test_long_log(void)
{
	raft_memory_storage *ms = raft_memory_storage_new();
	const uint64_t total = 20000;
	size_t bad = 0;

	CU_ASSERT_FATAL(ms != NULL);
	for (uint64_t i = 1; i <= total; i++) {
		uint64_t term = 1 + i / 1000;

		if (ms_append(ms, i, &term, 1, (size_t)(i % 7)) != RAFT_OK)
			bad++;
		if (i % 5000 == 0 && raft_memory_storage_compact(ms, i - 100) != RAFT_OK)
			bad++;
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(ms_first(ms), total - 100 + 1);
	CU_ASSERT_EQUAL(ms_last(ms), total);
	for (uint64_t i = total - 100; i <= total; i++) {
		if (!ms_term_is(ms, i, 1 + i / 1000))
			bad++;
	}
	CU_ASSERT_EQUAL(bad, 0);
	{
		raft_entry *e = NULL;
		size_t n = 0;

		CU_ASSERT_EQUAL_FATAL(ms_entries(ms, total - 99, total + 1, UINT64_MAX, &e, &n),
		                      RAFT_OK);
		CU_ASSERT_EQUAL_FATAL(n, 100);
		for (size_t k = 0; k < n; k++) {
			uint64_t term = 1 + e[k].index / 1000;

			if (!ms_entries_match(&e[k], 1, total - 99 + k, &term,
			                      (size_t)(e[k].index % 7)))
				bad++;
		}
		raft_entries_free(e, n);
	}
	CU_ASSERT_EQUAL(bad, 0);
	raft_memory_storage_free(ms);
}

void test_register_memory_storage(void)
{
	CU_pSuite s = CU_add_suite("memory_storage", NULL, NULL);

	if (s == NULL)
		return;
	CU_add_test(s, "fresh storage", test_fresh);
	CU_add_test(s, "append and read back", test_append_and_read);
	CU_add_test(s, "copies are independent", test_copies_are_independent);
	CU_add_test(s, "overlapping append truncates", test_overlapping_append_truncates);
	CU_add_test(s, "invalid appends change nothing", test_append_invalid);
	CU_add_test(s, "compact", test_compact);
	CU_add_test(s, "append around the compaction point", test_append_around_compaction_point);
	CU_add_test(s, "apply snapshot", test_apply_snapshot);
	CU_add_test(s, "apply snapshot inside the log", test_apply_snapshot_inside_log);
	CU_add_test(s, "create snapshot", test_create_snapshot);
	CU_add_test(s, "create snapshot below the compaction point",
	            test_create_snapshot_below_compaction);
	CU_add_test(s, "entries max_size", test_entries_max_size);
	CU_add_test(s, "hard state", test_hard_state);
	CU_add_test(s, "inject error", test_inject_error);
	CU_add_test(s, "NULL arguments", test_null_arguments);
	CU_add_test(s, "long log with compactions", test_long_log);
}
