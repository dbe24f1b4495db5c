/* test_store_snapshot.c - STUB: registers no tests yet; replaced by the store_snapshot suite. */
#include "suites.h"

void test_register_store_snapshot(void)
{
}
