/* util.c - error strings, role names, config defaults and the core's deterministic PRNG. */
#include <stdlib.h>
#include <string.h>

#include "raft/raft_internal.h"

const char *raft_strerror(int rv)
{
	switch (rv) {
	case RAFT_OK:
		return "success";
	case RAFT_ERR_COMPACTED:
		return "requested index is unavailable due to compaction";
	case RAFT_ERR_UNAVAILABLE:
		return "requested entry at index is unavailable";
	case RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE:
		return "snapshot is temporarily unavailable";
	case RAFT_ERR_SNAP_OUT_OF_DATE:
		return "requested index is older than the existing snapshot";
	case RAFT_ERR_PROPOSAL_DROPPED:
		return "raft proposal dropped";
	case RAFT_ERR_IO:
		return "storage I/O failure; the node has stopped";
	case RAFT_ERR_INVALID:
		return "invalid argument";
	case RAFT_ERR_NOMEM:
		return "out of memory; the node has stopped";
	case RAFT_ERR_STOPPED:
		return "the node stopped after a fatal error";
	case RAFT_ERR_CORRUPT:
		return "malformed message bytes";
	default:
		return "unknown error";
	}
}

const char *raft_role_name(int role)
{
	switch (role) {
	case RAFT_FOLLOWER:
		return "FOLLOWER";
	case RAFT_PRE_CANDIDATE:
		return "PRE_CANDIDATE";
	case RAFT_CANDIDATE:
		return "CANDIDATE";
	case RAFT_LEADER:
		return "LEADER";
	default:
		return "UNKNOWN";
	}
}

void raft_config_init(raft_config *c)
{
	memset(c, 0, sizeof(*c));
	c->election_tick = 10;
	c->heartbeat_tick = 1;
	c->max_size_per_msg = 1u << 20;
	c->max_inflight_msgs = 256;
	c->max_uncommitted_entries_size = 64u << 20;
	c->max_committed_size_per_ready = 64u << 20;
}

/* splitmix64: small, fast, and good enough to spread election timeouts. */
uint64_t util_rand(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Deep-copies one entry. On failure dst->data is NULL and RAFT_ERR_NOMEM is returned. */
int util_entry_copy(raft_entry *dst, const raft_entry *src)
{
	*dst = *src;
	dst->data = NULL;
	if (src->len == 0)
		return RAFT_OK;
	dst->data = malloc(src->len);
	if (dst->data == NULL) {
		dst->len = 0;
		return RAFT_ERR_NOMEM;
	}
	memcpy(dst->data, src->data, src->len);
	return RAFT_OK;
}

uint64_t util_payload_size(const raft_entry *ents, size_t n)
{
	uint64_t size = 0;
	for (size_t i = 0; i < n; i++)
		size += ents[i].len;
	return size;
}

/* What an entry costs against max_uncommitted_entries_size: its payload, but at least one byte,
 * so that empty proposals cannot pile up without bound. */
uint64_t util_accounted_size(const raft_entry *ents, size_t n)
{
	uint64_t size = 0;
	for (size_t i = 0; i < n; i++)
		size += ents[i].len > 0 ? ents[i].len : 1;
	return size;
}
