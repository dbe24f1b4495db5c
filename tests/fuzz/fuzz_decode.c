/* fuzz_decode.c - libFuzzer target: raft_message_decode on hostile bytes, with a re-encode check.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_fail(const char *what)
{
	fprintf(stderr, "fuzz_decode: %s\n", what);
	abort();
}

static bool fuzz_is_zero(const raft_message *m)
{
	raft_message zero;

	memset(&zero, 0, sizeof(zero));
	return memcmp(m, &zero, sizeof(zero)) == 0;
}

/*
 * data: borrowed from libFuzzer. A rejected input must leave the message zeroed. An accepted one
 * must re-encode to exactly the input bytes (the format is canonical), and the re-encoding must
 * decode again to a message that encodes the same way. Everything allocated is freed here, so
 * LeakSanitizer catches leaks in either direction.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	raft_message m, again;
	void *enc = NULL, *enc2 = NULL;
	size_t len = 0, len2 = 0;
	int rv;

	rv = raft_message_decode(data, size, &m);
	if (rv != RAFT_OK) {
		if (rv != RAFT_ERR_CORRUPT && rv != RAFT_ERR_INVALID)
			fuzz_fail("unexpected decode error");
		if (!fuzz_is_zero(&m))
			fuzz_fail("failed decode left the message non-zero");
		return 0;
	}
	if (raft_message_encoded_size(&m) != size)
		fuzz_fail("encoded_size differs from the input size");
	if (raft_message_encode(&m, &enc, &len) != RAFT_OK)
		fuzz_fail("a decoded message does not encode");
	if (len != size || memcmp(enc, data, size) != 0)
		fuzz_fail("re-encoding differs from the input");
	if (raft_message_decode(enc, len, &again) != RAFT_OK)
		fuzz_fail("re-encoding does not decode");
	if (raft_message_encode(&again, &enc2, &len2) != RAFT_OK || len2 != len ||
	    memcmp(enc2, enc, len) != 0)
		fuzz_fail("second round-trip differs");

	free(enc);
	free(enc2);
	raft_message_free(&again);
	raft_message_free(&m);
	if (!fuzz_is_zero(&m))
		fuzz_fail("raft_message_free did not zero the message");
	return 0;
}
