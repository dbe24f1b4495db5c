/* test_store_crash.c - STUB: registers no tests yet; replaced by the store_crash suite. */
#include "suites.h"

void test_register_store_crash(void)
{
}
