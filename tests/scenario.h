/* scenario.h - the scenario harness of suite "scenarios", shared with suite "snapshots". */
#ifndef TESTS_SCENARIO_H
#define TESTS_SCENARIO_H

#include <stdbool.h>
#include <stdint.h>

/*
 * A scenario runs one 5-node cluster for several rounds of concurrent client operations under
 * the row's faults, then checks the whole history for linearizability, every acknowledged
 * append for exactly-once presence, and every node's database for convergence (the comment at
 * the top of test_scenarios.c has the details). Knobs shared by every suite that runs
 * scenarios: RAFTKV_TEST_SEED, RAFTKV_SCENARIO_ROUNDS (default 3), RAFTKV_SCENARIO_MS (client
 * time per round, default 1500), RAFTKV_SCENARIO_TRACE=1.
 */

#define SCENARIO_NODES       5u
#define SCENARIO_MAX_CLIENTS 20u

/* A row of a matrix. */
typedef struct scenario_row {
	const char *name;
	unsigned clients; /* 1..SCENARIO_MAX_CLIENTS */
	bool unreliable;  /* drops 10%, duplicates 5%, reorders 10% (up to 20 ms) */
	bool persist; /* fault VFS, sync FULL, power cut and restart of every node after a round */
	bool partitions; /* a partitioner thread moves random splits */
} scenario_row;

/* What a suite adds to a row. All zero (or a NULL pointer): the scenarios suite's behaviour. */
typedef struct scenario_opts {
	/* Log GC policy (raftkv_options); gc_threshold 0 takes RAFTKV_SCENARIO_GC's policy
	 * (default 256, trailing a quarter, hard limit twice). */
	uint64_t gc_threshold;
	uint64_t gc_trailing;
	uint64_t gc_hard_limit;
	/*
	 * In each round one node falls behind: from a tenth of the round on it is crash-stopped
	 * (persist or partition rows) or isolated (other rows; a non-leader then), until the
	 * leader's log no longer holds the entry after the node's last one, or until nine tenths
	 * of the round at the latest; then it comes back and must catch up by snapshot, while
	 * the clients still run or, at the latest, before the final convergence.
	 */
	bool lagger;
	/* The GC bound (issue 5): at the end of each round, once the clients stopped and the
	 * network healed, every running node reaches applied - truncated <= 2 * gc_threshold
	 * within SCENARIO_GC_BOUND_TICKS ticks. */
	bool check_gc;
	/* At least one snapshot sent and installed over the whole run (counters of every node
	 * summed, banked before each node restart). */
	bool require_snapshot;
} scenario_opts;

/* The GC bound's allowance, in ticks of the cluster. The library states 0 (the bound holds
 * after each Ready of a node, raftkv.h); the allowance covers a node restarted with a longer
 * log (one tick per 10,000 excess entries) and the publication of its status. */
#define SCENARIO_GC_BOUND_TICKS 20u

/*
 * Runs row as one CUnit test: failures are CUnit assertion failures, each explained on stderr
 * with the seed. row_index salts the row's seed (distinct per row within a process). o may be
 * NULL. Borrowed: row and o, for the call.
 */
void scenario_run(const scenario_row *row, unsigned row_index, const scenario_opts *o);

/* CUnit suite init and cleanup for suites that call scenario_run: register (and release) the
 * fault-injecting VFS that persist rows use. 0 on success. */
int scenario_suite_init(void);
int scenario_suite_clean(void);

#endif
