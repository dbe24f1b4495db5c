/* test_vfs_fault.c - STUB: registers no tests yet; replaced by the vfs_fault suite. */
#include "suites.h"

void test_register_vfs_fault(void)
{
}
