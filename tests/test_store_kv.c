/* test_store_kv.c - STUB: registers no tests yet; replaced by the store_kv suite. */
#include "suites.h"

void test_register_store_kv(void)
{
}
