/* codec.c - the versioned, little-endian wire format of raft_message and its hardened decoder. */
#include <stdlib.h>
#include <string.h>

#include "raft.h"

/*
 * Wire format, version 1. Every integer is little-endian and fixed-width, so every message has
 * exactly one encoding and decode(b) re-encodes to b.
 *
 *   u8  magic (CODEC_MAGIC)          u8  version (CODEC_VERSION)
 *   u8  type (< RAFT_MSG_TYPE_COUNT) u8  reject (0 or 1)
 *   u64 to, from, term, log_term, index, commit, reject_hint, context
 *   u64 snapshot index, snapshot term
 *   u8  n_voters (<= RAFT_MAX_VOTERS), then u64 voters[n_voters], strictly ascending, non-zero
 *   u64 snapshot data length, then that many bytes
 *   u64 n_entries, then per entry:
 *       u8 type (RAFT_ENTRY_*), u64 term, u64 index, u64 data length, then that many bytes
 *
 * Nothing may follow the last entry.
 */
#define CODEC_MAGIC   0x52u /* 'R' */
#define CODEC_VERSION 1u

/* Bytes of an entry with no data: the smallest an encoded entry can be. */
#define CODEC_ENTRY_MIN_SIZE (1u + 3u * 8u)

/* Bytes before the voter ids: magic, version, type, reject, 8 message u64s, 2 snapshot u64s and
 * n_voters. */
#define CODEC_HEADER_SIZE (4u + 8u * 8u + 2u * 8u + 1u)

static const char *const codec_type_names[RAFT_MSG_TYPE_COUNT] = {
    [RAFT_MSG_HUP] = "HUP",
    [RAFT_MSG_BEAT] = "BEAT",
    [RAFT_MSG_PROPOSE] = "PROPOSE",
    [RAFT_MSG_APPEND] = "APPEND",
    [RAFT_MSG_APPEND_RESPONSE] = "APPEND_RESPONSE",
    [RAFT_MSG_REQUEST_VOTE] = "REQUEST_VOTE",
    [RAFT_MSG_REQUEST_VOTE_RESPONSE] = "REQUEST_VOTE_RESPONSE",
    [RAFT_MSG_SNAPSHOT] = "SNAPSHOT",
    [RAFT_MSG_HEARTBEAT] = "HEARTBEAT",
    [RAFT_MSG_HEARTBEAT_RESPONSE] = "HEARTBEAT_RESPONSE",
    [RAFT_MSG_TRANSFER_LEADER] = "TRANSFER_LEADER",
    [RAFT_MSG_TIMEOUT_NOW] = "TIMEOUT_NOW",
    [RAFT_MSG_PRE_VOTE] = "PRE_VOTE",
    [RAFT_MSG_PRE_VOTE_RESPONSE] = "PRE_VOTE_RESPONSE",
    [RAFT_MSG_READ_INDEX] = "READ_INDEX",
    [RAFT_MSG_READ_INDEX_RESPONSE] = "READ_INDEX_RESPONSE",
};

/* A bounded cursor over the input; p advances and left shrinks as fields are consumed. */
typedef struct codec_reader {
	const uint8_t *p;
	size_t left;
} codec_reader;

const char *raft_message_type_name(int type)
{
	if (type < 0 || type >= RAFT_MSG_TYPE_COUNT)
		return "UNKNOWN";
	return codec_type_names[type];
}

/* a + b, saturating at SIZE_MAX so an absurd in-memory length cannot wrap the total. */
static size_t codec_size_add(size_t a, size_t b)
{
	return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static bool codec_entry_type_valid(int type)
{
	return type == RAFT_ENTRY_NORMAL || type == RAFT_ENTRY_CONF_CHANGE;
}

/* The conf state invariant of raft.h: at most RAFT_MAX_VOTERS ids, non-zero, ascending, unique. */
static bool codec_conf_state_valid(const raft_conf_state *cs)
{
	if (cs->n_voters > RAFT_MAX_VOTERS)
		return false;
	for (size_t i = 0; i < cs->n_voters; i++) {
		if (cs->voters[i] == 0 || (i > 0 && cs->voters[i] <= cs->voters[i - 1]))
			return false;
	}
	return true;
}

/* Whether m (borrowed) can be encoded, i.e. whether its encoding would decode again. */
static bool codec_message_valid(const raft_message *m)
{
	if (m->type < 0 || m->type >= RAFT_MSG_TYPE_COUNT)
		return false;
	if (!codec_conf_state_valid(&m->snapshot.metadata.conf_state))
		return false;
	if (m->snapshot.len > 0 && m->snapshot.data == NULL)
		return false;
	if (m->n_entries > 0 && m->entries == NULL)
		return false;
	for (size_t i = 0; i < m->n_entries; i++) {
		const raft_entry *e = &m->entries[i];

		if (!codec_entry_type_valid(e->type) || (e->len > 0 && e->data == NULL))
			return false;
	}
	return true;
}

size_t raft_message_encoded_size(const raft_message *m)
{
	size_t size;
	size_t n_voters;

	if (m == NULL)
		return 0;
	n_voters = m->snapshot.metadata.conf_state.n_voters;
	if (n_voters > RAFT_MAX_VOTERS)
		n_voters = RAFT_MAX_VOTERS;
	size = CODEC_HEADER_SIZE + 8u * n_voters + 8u + 8u;
	size = codec_size_add(size, m->snapshot.len);
	if (m->entries == NULL)
		return size;
	for (size_t i = 0; i < m->n_entries; i++) {
		size = codec_size_add(size, CODEC_ENTRY_MIN_SIZE);
		size = codec_size_add(size, m->entries[i].len);
	}
	return size;
}

/* Writes v at *p (which must have room) and returns the position after it. */
static uint8_t *codec_put_u8(uint8_t *p, uint8_t v)
{
	*p = v;
	return p + 1;
}

static uint8_t *codec_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 8;
}

static uint8_t *codec_put_bytes(uint8_t *p, const void *data, size_t len)
{
	if (len > 0)
		memcpy(p, data, len);
	return p + len;
}

/* m: borrowed. On RAFT_OK *buf is a new malloc'd buffer owned by the caller; on error *buf is
 * NULL and *len 0. */
int raft_message_encode(const raft_message *m, void **buf, size_t *len)
{
	const raft_conf_state *cs;
	uint8_t *out;
	uint8_t *p;
	size_t size;

	if (buf == NULL || len == NULL)
		return RAFT_ERR_INVALID;
	*buf = NULL;
	*len = 0;
	if (m == NULL || !codec_message_valid(m))
		return RAFT_ERR_INVALID;
	size = raft_message_encoded_size(m);
	if (size == SIZE_MAX)
		return RAFT_ERR_NOMEM;
	out = malloc(size);
	if (out == NULL)
		return RAFT_ERR_NOMEM;

	cs = &m->snapshot.metadata.conf_state;
	p = codec_put_u8(out, CODEC_MAGIC);
	p = codec_put_u8(p, CODEC_VERSION);
	p = codec_put_u8(p, (uint8_t)m->type);
	p = codec_put_u8(p, m->reject ? 1 : 0);
	p = codec_put_u64(p, m->to);
	p = codec_put_u64(p, m->from);
	p = codec_put_u64(p, m->term);
	p = codec_put_u64(p, m->log_term);
	p = codec_put_u64(p, m->index);
	p = codec_put_u64(p, m->commit);
	p = codec_put_u64(p, m->reject_hint);
	p = codec_put_u64(p, m->context);
	p = codec_put_u64(p, m->snapshot.metadata.index);
	p = codec_put_u64(p, m->snapshot.metadata.term);
	p = codec_put_u8(p, (uint8_t)cs->n_voters);
	for (size_t i = 0; i < cs->n_voters; i++)
		p = codec_put_u64(p, cs->voters[i]);
	p = codec_put_u64(p, m->snapshot.len);
	p = codec_put_bytes(p, m->snapshot.data, m->snapshot.len);
	p = codec_put_u64(p, m->n_entries);
	for (size_t i = 0; i < m->n_entries; i++) {
		const raft_entry *e = &m->entries[i];

		p = codec_put_u8(p, (uint8_t)e->type);
		p = codec_put_u64(p, e->term);
		p = codec_put_u64(p, e->index);
		p = codec_put_u64(p, e->len);
		p = codec_put_bytes(p, e->data, e->len);
	}

	*buf = out;
	*len = (size_t)(p - out);
	return RAFT_OK;
}

/* Each reader consumes one field into *v and returns false, consuming nothing, when the input
 * is too short. */
static bool codec_get_u8(codec_reader *r, uint8_t *v)
{
	if (r->left < 1)
		return false;
	*v = r->p[0];
	r->p++;
	r->left--;
	return true;
}

static bool codec_get_u64(codec_reader *r, uint64_t *v)
{
	uint64_t x = 0;

	if (r->left < 8)
		return false;
	for (int i = 0; i < 8; i++)
		x |= (uint64_t)r->p[i] << (8 * i);
	*v = x;
	r->p += 8;
	r->left -= 8;
	return true;
}

static bool codec_get_bool(codec_reader *r, bool *v)
{
	uint8_t b;

	if (!codec_get_u8(r, &b) || b > 1)
		return false;
	*v = b == 1;
	return true;
}

/*
 * Reads a u64 length and then that many bytes into a new buffer. The length is checked
 * against the remaining input before anything is allocated. On RAFT_OK *data (owned by the
 * caller) is NULL when the length is 0. Returns RAFT_ERR_CORRUPT or RAFT_ERR_NOMEM otherwise.
 */
static int codec_get_blob(codec_reader *r, void **data, size_t *len)
{
	uint64_t n;

	*data = NULL;
	*len = 0;
	if (!codec_get_u64(r, &n) || n > r->left)
		return RAFT_ERR_CORRUPT;
	if (n == 0)
		return RAFT_OK;
	*data = malloc((size_t)n);
	if (*data == NULL)
		return RAFT_ERR_NOMEM;
	memcpy(*data, r->p, (size_t)n);
	*len = (size_t)n;
	r->p += n;
	r->left -= (size_t)n;
	return RAFT_OK;
}

/* Decodes the snapshot metadata and data into *snap, which m owns. */
static int codec_get_snapshot(codec_reader *r, raft_snapshot *snap)
{
	raft_conf_state *cs = &snap->metadata.conf_state;
	uint8_t n_voters;

	if (!codec_get_u64(r, &snap->metadata.index) || !codec_get_u64(r, &snap->metadata.term))
		return RAFT_ERR_CORRUPT;
	if (!codec_get_u8(r, &n_voters) || n_voters > RAFT_MAX_VOTERS)
		return RAFT_ERR_CORRUPT;
	cs->n_voters = n_voters;
	for (size_t i = 0; i < cs->n_voters; i++) {
		if (!codec_get_u64(r, &cs->voters[i]))
			return RAFT_ERR_CORRUPT;
	}
	if (!codec_conf_state_valid(cs))
		return RAFT_ERR_CORRUPT;
	return codec_get_blob(r, &snap->data, &snap->len);
}

/* Decodes the entry count and the entries into m. m->n_entries is set as soon as the zeroed
 * array exists, so raft_message_free() releases a half-decoded array correctly. */
static int codec_get_entries(codec_reader *r, raft_message *m)
{
	uint64_t n;
	int rv;

	if (!codec_get_u64(r, &n) || n > r->left / CODEC_ENTRY_MIN_SIZE)
		return RAFT_ERR_CORRUPT;
	if (n == 0)
		return RAFT_OK;
	m->entries = calloc((size_t)n, sizeof(*m->entries));
	if (m->entries == NULL)
		return RAFT_ERR_NOMEM;
	m->n_entries = (size_t)n;
	for (size_t i = 0; i < m->n_entries; i++) {
		raft_entry *e = &m->entries[i];
		uint8_t type;

		if (!codec_get_u8(r, &type) || !codec_entry_type_valid(type))
			return RAFT_ERR_CORRUPT;
		e->type = type;
		if (!codec_get_u64(r, &e->term) || !codec_get_u64(r, &e->index))
			return RAFT_ERR_CORRUPT;
		rv = codec_get_blob(r, &e->data, &e->len);
		if (rv != RAFT_OK)
			return rv;
	}
	return RAFT_OK;
}

/*
 * buf: borrowed, len bytes. m: its previous contents are overwritten, not freed. On RAFT_OK m
 * owns its entries and snapshot data (release with raft_message_free()). On any error *m is
 * zeroed and owns nothing. Returns RAFT_ERR_INVALID for a NULL argument, RAFT_ERR_NOMEM when
 * an allocation fails (never for a size the input did not back with bytes) and
 * RAFT_ERR_CORRUPT for bytes that are not exactly one valid version-1 message.
 */
int raft_message_decode(const void *buf, size_t len, raft_message *m)
{
	codec_reader r = {.p = buf, .left = len};
	uint8_t magic, version, type;
	int rv = RAFT_ERR_CORRUPT;

	if (m == NULL)
		return RAFT_ERR_INVALID;
	memset(m, 0, sizeof(*m));
	if (buf == NULL)
		return RAFT_ERR_INVALID;

	if (!codec_get_u8(&r, &magic) || magic != CODEC_MAGIC)
		goto cleanup;
	if (!codec_get_u8(&r, &version) || version != CODEC_VERSION)
		goto cleanup;
	if (!codec_get_u8(&r, &type) || type >= RAFT_MSG_TYPE_COUNT)
		goto cleanup;
	m->type = type;
	if (!codec_get_bool(&r, &m->reject))
		goto cleanup;
	if (!codec_get_u64(&r, &m->to) || !codec_get_u64(&r, &m->from) ||
	    !codec_get_u64(&r, &m->term) || !codec_get_u64(&r, &m->log_term) ||
	    !codec_get_u64(&r, &m->index) || !codec_get_u64(&r, &m->commit) ||
	    !codec_get_u64(&r, &m->reject_hint) || !codec_get_u64(&r, &m->context))
		goto cleanup;
	rv = codec_get_snapshot(&r, &m->snapshot);
	if (rv != RAFT_OK)
		goto cleanup;
	rv = codec_get_entries(&r, m);
	if (rv != RAFT_OK)
		goto cleanup;
	if (r.left != 0) {
		rv = RAFT_ERR_CORRUPT;
		goto cleanup;
	}
	return RAFT_OK;

cleanup:
	raft_message_free(m);
	return rv;
}
