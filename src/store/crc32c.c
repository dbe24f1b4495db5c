/* crc32c.c - STUB: replaced by a table-driven CRC-32C (Castagnoli). */
#include "store/store_internal.h"

uint32_t store_crc32c(uint32_t crc, const void *buf, size_t len)
{
	(void)buf;
	(void)len;
	return crc;
}
