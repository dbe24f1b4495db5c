/* snapshot_rss.c - peak RSS of the process while a lagging node catches up on a large snapshot.
 *
 * Usage: build/snapshot-rss [KEYS] (default 3000 keys of 64 KiB: ~200 MB; 16000 is ~1 GiB).
 * Three nodes, sync OFF, gc_threshold 100: node 3 is isolated while the keys are written, then
 * healed; it can only catch up by a snapshot of the whole data set. Prints VmHWM before and
 * after: the transfer streams the file in chunks, so the peak must not grow with the data. */
#include "cluster/cluster.h"
#include "raftkv.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long hwm_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "VmHWM: %ld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}
static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}
static bool caught_up(void *ctx, raftkv *kv)
{
	raftkv_status a, c;
	(void)ctx;
	raftkv_node_status(kv, 1, &a);
	raftkv_node_status(kv, 3, &c);
	return c.snapshots_received > 0 && c.applied >= a.commit;
}
int main(int argc, char **argv)
{
	char dir[] = "/tmp/rss/dirXXXXXX";
	raftkv_options o;
	raftkv *kv;
	char err[256];
	int nkeys = argc > 1 ? atoi(argv[1]) : 3000;
	size_t vlen = 64 << 10;
	char *val = malloc(vlen);
	uint64_t l;
	if (val == NULL || mkdtemp(dir) == NULL) {
		perror("setup");
		return 1;
	}
	raftkv_options_init(&o);
	o.sync = RAFTKV_SYNC_OFF;
	o.tick_ms = 10;
	o.election_ticks = 50;
	o.heartbeat_ticks = 5;
	o.gc_threshold = 100;
	o.gc_trailing = 10;
	o.gc_hard_limit = 200;
	o.request_timeout_ms = 30000;
	if (raftkv_open(dir, &o, &kv, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	raftkv_wait_leader(kv, 10000, &l);
	if (l == 3)
		raftkv_transfer_leader(kv, 1);
	raftkv_isolate(kv, 3);
	long rss0 = rss_kib();
	for (int i = 0; i < nkeys; i++) {
		char k[32];
		memset(val, 'a' + i % 26, vlen);
		snprintf(k, sizeof k, "key%06d", i);
		if (raftkv_put(kv, k, strlen(k), val, vlen) != RAFTKV_OK) {
			fprintf(stderr, "put %d failed\n", i);
		}
	}
	long hwm_write = hwm_kib();
	printf("wrote %d x %zu B = %.0f MB; rss before %ld KiB, peak after writes %ld KiB\n", nkeys,
	       vlen, nkeys * (double)vlen / 1e6, rss0, hwm_write);
	raftkv_heal(kv);
	int rv = cluster_wait(kv, caught_up, NULL, 600000);
	raftkv_status st;
	raftkv_node_status(kv, 3, &st);
	printf("catch-up %s: node 3 snapshots received %llu, bytes %llu; peak RSS now %ld KiB (rss "
	       "%ld)\n",
	       rv == 0 ? "ok" : "TIMEOUT", (unsigned long long)st.snapshots_received,
	       (unsigned long long)st.snapshot_bytes_received, hwm_kib(), rss_kib());
	raftkv_close(kv);
	snprintf(err, sizeof err, "rm -rf %s", dir);
	free(val);
	return system(err) == 0 && rv == 0 ? 0 : 1;
}
