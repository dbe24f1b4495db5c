/* command.c - encodes and strictly decodes the kv commands carried in raft entries. */
#include "store/command.h"

#include <stdlib.h>
#include <string.h>

/* A bounded cursor over the input; p advances and left shrinks as fields are consumed. */
typedef struct command_reader {
	const uint8_t *p;
	size_t left;
} command_reader;

static bool command_is_data_op(int op)
{
	return op == STORE_OP_PUT || op == STORE_OP_DELETE || op == STORE_OP_APPEND ||
	       op == STORE_OP_GET;
}

static bool command_no_session_fields(const store_command *c)
{
	return c->epoch == 0 && c->seq == 0 && c->low_seq == 0;
}

static bool command_session_fields_valid(const store_command *c)
{
	if (c->client_id == 0)
		return command_no_session_fields(c);
	return c->epoch >= 1 && c->epoch <= INT64_MAX && c->low_seq >= 1 && c->low_seq <= c->seq &&
	       c->seq <= INT64_MAX;
}

static bool command_data_valid(const store_command *c)
{
	bool value_allowed = c->op == STORE_OP_PUT || c->op == STORE_OP_APPEND;

	if (c->key_len == 0 || c->key_len > COMMAND_MAX_KEY || c->key == NULL)
		return false;
	if (c->value_len > (value_allowed ? COMMAND_MAX_VALUE : 0))
		return false;
	if (c->value_len > 0 && c->value == NULL)
		return false;
	return command_session_fields_valid(c);
}

bool command_valid(const store_command *c)
{
	if (c == NULL)
		return false;
	if (command_is_data_op(c->op))
		return command_data_valid(c);
	if (c->key_len != 0 || c->value_len != 0 || !command_no_session_fields(c))
		return false;
	if (c->op == STORE_OP_NOOP)
		return c->client_id == 0;
	return c->op == STORE_OP_REGISTER && c->client_id != 0;
}

size_t command_encoded_size(const store_command *c)
{
	return COMMAND_HEADER_SIZE + c->key_len + c->value_len;
}

/* Each writer stores one field at p (which must have room) and returns the position after it. */
static uint8_t *command_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 8;
}

static uint8_t *command_put_blob(uint8_t *p, const void *data, size_t len)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(len >> (8 * i));
	if (len > 0)
		memcpy(p + 4, data, len);
	return p + 4 + len;
}

int command_encode(const store_command *c, void **buf, size_t *len)
{
	uint8_t *out;
	uint8_t *p;

	if (buf == NULL || len == NULL)
		return STORE_ERR_INVALID;
	*buf = NULL;
	*len = 0;
	if (!command_valid(c))
		return STORE_ERR_INVALID;
	out = malloc(command_encoded_size(c));
	if (out == NULL)
		return STORE_ERR_NOMEM;
	out[0] = COMMAND_MAGIC;
	out[1] = COMMAND_VERSION;
	out[2] = (uint8_t)c->op;
	p = command_put_u64(out + 3, c->client_id);
	p = command_put_u64(p, c->epoch);
	p = command_put_u64(p, c->seq);
	p = command_put_u64(p, c->low_seq);
	p = command_put_blob(p, c->key, c->key_len);
	p = command_put_blob(p, c->value, c->value_len);
	*buf = out;
	*len = (size_t)(p - out);
	return STORE_OK;
}

/* Each reader consumes one field and returns false, consuming nothing, when the input is too
 * short. */
static bool command_get_u8(command_reader *r, uint8_t *v)
{
	if (r->left < 1)
		return false;
	*v = r->p[0];
	r->p++;
	r->left--;
	return true;
}

static bool command_get_u64(command_reader *r, uint64_t *v)
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

/* A u32 length and then that many bytes, checked against the remaining input; *data borrows
 * the input and is NULL for an empty blob. */
static bool command_get_blob(command_reader *r, const void **data, size_t *len)
{
	uint32_t n = 0;

	if (r->left < 4)
		return false;
	for (int i = 0; i < 4; i++)
		n |= (uint32_t)r->p[i] << (8 * i);
	if (n > r->left - 4)
		return false;
	*data = n > 0 ? r->p + 4 : NULL;
	*len = n;
	r->p += 4 + (size_t)n;
	r->left -= 4 + (size_t)n;
	return true;
}

static bool command_read(command_reader *r, store_command *c)
{
	uint8_t magic;
	uint8_t version;
	uint8_t op;

	if (!command_get_u8(r, &magic) || magic != COMMAND_MAGIC)
		return false;
	if (!command_get_u8(r, &version) || version != COMMAND_VERSION)
		return false;
	if (!command_get_u8(r, &op))
		return false;
	c->op = op;
	return command_get_u64(r, &c->client_id) && command_get_u64(r, &c->epoch) &&
	       command_get_u64(r, &c->seq) && command_get_u64(r, &c->low_seq) &&
	       command_get_blob(r, &c->key, &c->key_len) &&
	       command_get_blob(r, &c->value, &c->value_len);
}

int command_decode(const void *buf, size_t len, store_command *out)
{
	command_reader r = {.p = buf, .left = len};

	if (out == NULL)
		return STORE_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (len == 0)
		return STORE_OK;
	if (buf == NULL || !command_read(&r, out) || r.left != 0 || !command_valid(out)) {
		memset(out, 0, sizeof(*out));
		return STORE_ERR_CORRUPT;
	}
	return STORE_OK;
}
