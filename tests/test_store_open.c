/* test_store_open.c - STUB: registers no tests yet; replaced by the store_open suite. */
#include "suites.h"

void test_register_store_open(void)
{
}
