/* kv.c - STUB: replaced by the kv state machine (store_apply, sessions, store_get/scan). */
#include "store/store_internal.h"

int store_kv_init(store *s)
{
	(void)s;
	return STORE_OK;
}

void store_kv_close(store *s)
{
	(void)s;
}
