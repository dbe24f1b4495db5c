/* example_embed.c - the README's embedding example, built and run by `make test` so it stays true.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "raftkv.h"

/* The README's example, with a fresh directory instead of /tmp/mykv and its result checked. */
static int example(const char *dir)
{
	raftkv_options opts;
	raftkv *kv;
	char err[256];
	void *v;
	size_t n;
	int ok = 0;

	raftkv_options_init(&opts); /* 3 nodes, sync FULL, 10 ms ticks, 1 s election timeout */
	if (raftkv_open(dir, &opts, &kv, err, sizeof err) != RAFTKV_OK) {
		fprintf(stderr, "open: %s\n", err);
		return 1;
	}
	raftkv_put(kv, "k", 1, "hello", 5);
	raftkv_append(kv, "k", 1, " world", 6);
	if (raftkv_get(kv, "k", 1, &v, &n) == RAFTKV_OK) {
		printf("%.*s\n", (int)n, (char *)v);
		ok = n == 11 && memcmp(v, "hello world", 11) == 0;
		raftkv_free(v);
	}
	raftkv_close(kv);
	return ok ? 0 : 1;
}

int main(void)
{
	char dir[] = "/tmp/raftkv-example-XXXXXX";
	char path[sizeof dir + 32];
	int rv;

	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	rv = example(dir);
	/* The cluster's files: the manifest, its lock, and per node a database with its WAL. */
	for (int id = 1; id <= 3; id++) {
		static const char *suffix[] = {"", "-wal", "-shm"};
		for (int i = 0; i < 3; i++) {
			snprintf(path, sizeof path, "%s/node-%d.db%s", dir, id, suffix[i]);
			unlink(path);
		}
	}
	snprintf(path, sizeof path, "%s/raftkv.cluster", dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/raftkv.lock", dir);
	unlink(path);
	if (rmdir(dir) != 0)
		fprintf(stderr, "note: %s not removed (unexpected files)\n", dir);
	return rv;
}
