/* crc32c.c - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), slicing-by-8 tables. */
#include <pthread.h>

#include "store/store_internal.h"

#define CRC32C_POLY 0x82F63B78u

/* crc32c_table[0] is the classic byte table; crc32c_table[k][b] is the CRC of byte b followed
 * by k zero bytes. Built once, read-only afterwards. */
static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_build(void)
{
	for (uint32_t b = 0; b < 256; b++) {
		uint32_t c = b;

		for (int bit = 0; bit < 8; bit++)
			c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc32c_table[0][b] = c;
	}
	for (uint32_t b = 0; b < 256; b++) {
		uint32_t c = crc32c_table[0][b];

		for (int k = 1; k < 8; k++) {
			c = crc32c_table[0][c & 0xff] ^ (c >> 8);
			crc32c_table[k][b] = c;
		}
	}
}

static uint32_t crc32c_load_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Eight bytes at a time: the state is folded into the first four, the tables do the rest. */
static uint32_t crc32c_slice8(uint32_t c, const unsigned char *p)
{
	uint32_t lo = crc32c_load_le32(p) ^ c;
	uint32_t hi = crc32c_load_le32(p + 4);

	return crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff] ^
	       crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24] ^
	       crc32c_table[3][hi & 0xff] ^ crc32c_table[2][(hi >> 8) & 0xff] ^
	       crc32c_table[1][(hi >> 16) & 0xff] ^ crc32c_table[0][hi >> 24];
}

/* crc is the value returned for the preceding bytes (0 to start); buf is borrowed. */
uint32_t store_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t c = ~crc;

	pthread_once(&crc32c_once, crc32c_build);
	for (; len >= 8; len -= 8, p += 8)
		c = crc32c_slice8(c, p);
	for (; len > 0; len--, p++)
		c = crc32c_table[0][(c ^ *p) & 0xff] ^ (c >> 8);
	return ~c;
}
