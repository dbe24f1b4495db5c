/* command.h - the versioned, little-endian encoding of a kv command inside a raft entry. */
#ifndef RAFTKV_STORE_COMMAND_H
#define RAFTKV_STORE_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/*
 * Format, version 1. Integers are little-endian and fixed-width, so a valid command has exactly
 * one encoding and decode(b) re-encodes to b (except the empty buffer, the other NOOP).
 *
 *   u8  magic (COMMAND_MAGIC)   u8  version (COMMAND_VERSION)   u8  op (STORE_OP_*)
 *   u64 client_id   u64 epoch   u64 seq   u64 low_seq
 *   u32 key length, then the key     u32 value length, then the value
 *
 * Nothing may follow the value. A zero-length entry is a NOOP.
 *
 * Shape rules, checked by both encode and decode (a violation is a malformed command):
 *   - NOOP: every other field zero or empty;
 *   - REGISTER: client_id != 0; epoch, seq, low_seq zero; key and value empty;
 *   - PUT, DELETE, APPEND, GET: key of 1..COMMAND_MAX_KEY bytes; value of at most
 *     COMMAND_MAX_VALUE bytes, and empty for DELETE and GET;
 *     with client_id == 0 (no session): epoch, seq, low_seq zero;
 *     with client_id != 0: 1 <= epoch, 1 <= low_seq <= seq, all <= INT64_MAX (they are stored
 *     as SQLite integers and compared there).
 */
#define COMMAND_MAGIC     0x4bu /* 'K' */
#define COMMAND_VERSION   1u
#define COMMAND_MAX_KEY   4096u
#define COMMAND_MAX_VALUE (1u << 20)
/* A session keeps the results of at most this many of its client's requests: those with seq in
 * [low_seq, low_seq + COMMAND_MAX_INFLIGHT). A request with a seq past that window first raises
 * the session's low watermark to seq - COMMAND_MAX_INFLIGHT + 1, dropping the results of the
 * oldest seqs (a retry of one is STORE_RESULT_SESSION_EXPIRED, never applied again), so a
 * client should keep fewer requests than this in flight. Part of the replicated state
 * machine. */
#define COMMAND_MAX_INFLIGHT 1024u
/* Bytes of a command with an empty key and value. */
#define COMMAND_HEADER_SIZE (3u + 4u * 8u + 4u + 4u)

/* A decoded command. key and value point into the buffer it was decoded from (or, for
 * encode, into the caller's memory); they may be NULL when their length is 0. */
typedef struct store_command {
	int op;             /* STORE_OP_* */
	uint64_t client_id; /* 0: no session */
	uint64_t epoch;     /* the session's epoch (its REGISTER's log index) */
	uint64_t seq;       /* the client's sequence number of this request */
	uint64_t low_seq;   /* lowest seq the client still waits for; results below it go */
	const void *key;
	size_t key_len;
	const void *value;
	size_t value_len;
} store_command;

/* Whether c (borrowed) satisfies the shape rules above. */
bool command_valid(const store_command *c);

/* Size of c's encoding; c borrowed and valid. */
size_t command_encoded_size(const store_command *c);

/*
 * Encodes c (borrowed). On STORE_OK *buf is a new malloc'd buffer of *len bytes owned by the
 * caller (free()). STORE_ERR_INVALID if c breaks a shape rule (or an argument is NULL),
 * STORE_ERR_NOMEM; on error *buf is NULL and *len 0.
 */
int command_encode(const store_command *c, void **buf, size_t *len);

/*
 * Decodes len bytes at buf (borrowed; may be NULL when len is 0) into *out without allocating:
 * out->key and out->value point into buf and live as long as it. Every field, length and shape
 * rule is checked. Returns STORE_OK, or STORE_ERR_CORRUPT with *out zeroed.
 */
int command_decode(const void *buf, size_t len, store_command *out);

#endif /* RAFTKV_STORE_COMMAND_H */
