/* manifest.h - the cluster manifest `raftkv.cluster`: cluster id, node count, creation state. */
#ifndef RAFTKV_CLUSTER_MANIFEST_H
#define RAFTKV_CLUSTER_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The manifest is a short text file, so an operator can read it with cat:
 *
 *	raftkv-cluster 1
 *	cluster_id 5f0c3a9e81d2b7c4
 *	nodes 3
 *	complete 1
 *	checksum 9a1e...            (FNV-1a 64 of the lines above)
 *
 * Its bytes must be exactly what manifest_write produces for the values it holds; anything else
 * (a torn file, an edited field, another format version) is RAFTKV_CORRUPT. It is replaced
 * atomically: written to `raftkv.cluster.tmp`, fsynced, renamed over, and the directory fsynced.
 *
 * Creation protocol (cluster.c): manifest with complete = 0, then every node database, then the
 * manifest with complete = 1. A crash in between leaves complete = 0, and the next open
 * finishes the creation; once complete = 1 a missing node database is corruption, never
 * something to recreate (a node that lost its disk could vote twice in one term).
 */

#define MANIFEST_FORMAT 1u

typedef struct cluster_manifest {
	uint64_t cluster_id; /* never 0 */
	uint64_t n_nodes;    /* 1..RAFTKV_MAX_NODES */
	bool complete;       /* every node database exists and records the membership */
} cluster_manifest;

/* Reads the manifest of dir (borrowed) into *m. RAFTKV_OK; RAFTKV_NOT_FOUND when dir has no
 * manifest; RAFTKV_CORRUPT when it fails a check; RAFTKV_IO. errmsg (may be NULL) receives the
 * reason on error. */
int manifest_read(const char *dir, cluster_manifest *m, char *errmsg, size_t errmsg_len);

/* Atomically replaces the manifest of dir with *m (both borrowed). RAFTKV_OK or RAFTKV_IO
 * (RAFTKV_INVALID for a zero cluster id or a bad node count), with the reason in errmsg. */
int manifest_write(const char *dir, const cluster_manifest *m, char *errmsg, size_t errmsg_len);

/* A fresh random cluster id (never 0) from /dev/urandom. RAFTKV_OK or RAFTKV_IO. */
int manifest_random_id(uint64_t *out, char *errmsg, size_t errmsg_len);

#endif /* RAFTKV_CLUSTER_MANIFEST_H */
