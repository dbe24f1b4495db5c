/* main.c - CUnit test runner: registers every suite in suites.h and runs them. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "suites.h"

int main(int argc, char **argv)
{
	if (CU_initialize_registry() != CUE_SUCCESS) {
		fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
		return 2;
	}
#define TEST_REGISTER(name) test_register_##name();
	TEST_SUITES(TEST_REGISTER)
#undef TEST_REGISTER
	if (CU_get_error() != CUE_SUCCESS) {
		fprintf(stderr, "CUnit registration: %s\n", CU_get_error_msg());
		CU_cleanup_registry();
		return 2;
	}
	CU_basic_set_mode(getenv("TEST_VERBOSE") ? CU_BRM_VERBOSE : CU_BRM_NORMAL);
	/* `build/test_raftkv SUITE` runs one suite. */
	if (argc > 1) {
		CU_pSuite s = CU_get_suite(argv[1]);
		if (s == NULL) {
			fprintf(stderr, "no suite named '%s'\n", argv[1]);
			CU_cleanup_registry();
			return 2;
		}
		CU_basic_run_suite(s);
	} else {
		CU_basic_run_tests();
	}
	unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed() +
	                  CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	return failed == 0 ? 0 : 1;
}
