/* suites.h - the list of CUnit suites linked into the test runner. */
#ifndef TESTS_SUITES_H
#define TESTS_SUITES_H

/* X(name): tests/test_<name>.c defines `void test_register_<name>(void)`, which adds one or more
 * CUnit suites. Keep this list in the order suites should run. */
#define TEST_SUITES(X)                                                                             \
	X(codec)                                                                                   \
	X(memory_storage)                                                                          \
	X(election)                                                                                \
	X(replication)                                                                             \
	X(rawnode)                                                                                 \
	X(snapshot)                                                                                \
	X(flow)                                                                                    \
	X(features)                                                                                \
	X(sim)                                                                                     \
	X(robustness)                                                                              \
	X(vfs_fault)                                                                               \
	X(store_open)                                                                              \
	X(storage_contract)                                                                        \
	X(store_kv)                                                                                \
	X(store_snapshot)                                                                          \
	X(store_crash)                                                                             \
	X(store_review)                                                                            \
	X(mailbox)                                                                                 \
	X(router)                                                                                  \
	X(node)                                                                                    \
	X(snapxfer)                                                                                \
	X(cluster)                                                                                 \
	X(linearizability)                                                                         \
	X(scenarios)                                                                               \
	X(snapshots)

#define TEST_DECLARE(name) void test_register_##name(void);
TEST_SUITES(TEST_DECLARE)
#undef TEST_DECLARE

#endif
