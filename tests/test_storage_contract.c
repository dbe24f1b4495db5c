/* test_storage_contract.c - STUB: registers no tests yet; replaced by the storage_contract suite. */
#include "suites.h"

void test_register_storage_contract(void)
{
}
