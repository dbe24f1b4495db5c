/* manifest.c - reads, validates and atomically writes the cluster manifest `raftkv.cluster`. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "cluster/manifest.h"

#define MANIFEST_MAX_BYTES 256 /* a valid manifest is about 100 bytes */
#define MANIFEST_TMP       CLUSTER_MANIFEST ".tmp"

static void set_err(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (buf == NULL || len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* FNV-1a, 64 bits: catches torn or edited files; the manifest has no adversary. */
static uint64_t fnv1a64(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* Renders m into buf (at least MANIFEST_MAX_BYTES); returns the length. */
static size_t render(const cluster_manifest *m, char *buf)
{
	int n = snprintf(buf, MANIFEST_MAX_BYTES,
	                 "raftkv-cluster %u\ncluster_id %016" PRIx64 "\nnodes %" PRIu64
	                 "\ncomplete %d\n",
	                 MANIFEST_FORMAT, m->cluster_id, m->n_nodes, m->complete ? 1 : 0);
	uint64_t sum = fnv1a64(buf, (size_t)n);

	n += snprintf(buf + n, MANIFEST_MAX_BYTES - (size_t)n, "checksum %016" PRIx64 "\n", sum);
	return (size_t)n;
}

/* dir + "/" + name, malloc'd (owned by the caller), or NULL. */
static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (p != NULL)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* Reads at most cap bytes of path into buf; *len gets the count. 0, or an errno value. */
static int read_small(const char *path, char *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;
	int err = 0;

	if (fd < 0)
		return errno;
	while (got < cap) {
		ssize_t r = read(fd, buf + got, cap - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = errno;
			break;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return err;
}

/* Parses buf (NUL-terminated, len bytes) into *m; RAFTKV_OK or RAFTKV_CORRUPT. The bytes must be
 * exactly the rendering of the values they hold, checksum included. */
static int parse(const char *buf, size_t len, cluster_manifest *m, char *errmsg, size_t errmsg_len)
{
	unsigned format = 0, complete = 0;
	uint64_t id = 0, nodes = 0, sum = 0;
	char again[MANIFEST_MAX_BYTES];

	if (sscanf(buf, "raftkv-cluster %u\n", &format) != 1) {
		set_err(errmsg, errmsg_len, "%s is not a RaftKV cluster manifest",
		        CLUSTER_MANIFEST);
		return RAFTKV_CORRUPT;
	}
	if (format != MANIFEST_FORMAT) {
		set_err(errmsg, errmsg_len, "%s has format %u; this build reads format %u",
		        CLUSTER_MANIFEST, format, MANIFEST_FORMAT);
		return RAFTKV_CORRUPT;
	}
	if (sscanf(buf,
	           "raftkv-cluster %*u\ncluster_id %16" SCNx64 "\nnodes %" SCNu64
	           "\ncomplete %u\nchecksum %16" SCNx64,
	           &id, &nodes, &complete, &sum) != 4 ||
	    complete > 1)
		goto bad;
	m->cluster_id = id;
	m->n_nodes = nodes;
	m->complete = complete == 1;
	if (render(m, again) != len || memcmp(again, buf, len) != 0)
		goto bad;
	if (id == 0 || nodes == 0 || nodes > RAFTKV_MAX_NODES) {
		set_err(errmsg, errmsg_len,
		        "%s: cluster id %016" PRIx64 " or node count %" PRIu64 " out of range",
		        CLUSTER_MANIFEST, id, nodes);
		return RAFTKV_CORRUPT;
	}
	return RAFTKV_OK;
bad:
	set_err(errmsg, errmsg_len, "%s is damaged (a field or its checksum does not match)",
	        CLUSTER_MANIFEST);
	return RAFTKV_CORRUPT;
}

int manifest_read(const char *dir, cluster_manifest *m, char *errmsg, size_t errmsg_len)
{
	char buf[MANIFEST_MAX_BYTES + 1];
	char *path = join(dir, CLUSTER_MANIFEST);
	size_t len = 0;
	int err;

	if (path == NULL) {
		set_err(errmsg, errmsg_len, "out of memory");
		return RAFTKV_NOMEM;
	}
	err = read_small(path, buf, sizeof buf, &len);
	free(path);
	if (err == ENOENT)
		return RAFTKV_NOT_FOUND;
	if (err != 0) {
		set_err(errmsg, errmsg_len, "read %s/%s: %s", dir, CLUSTER_MANIFEST, strerror(err));
		return RAFTKV_IO;
	}
	if (len > MANIFEST_MAX_BYTES || memchr(buf, '\0', len) != NULL) {
		set_err(errmsg, errmsg_len, "%s is not a RaftKV cluster manifest",
		        CLUSTER_MANIFEST);
		return RAFTKV_CORRUPT;
	}
	buf[len] = '\0';
	return parse(buf, len, m, errmsg, errmsg_len);
}

/* Writes all of buf to path and fsyncs it. 0 or an errno value. */
static int write_synced(const char *path, const char *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	size_t done = 0;
	int err = 0;

	if (fd < 0)
		return errno;
	while (done < len) {
		ssize_t w = write(fd, buf + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			err = errno;
			break;
		}
		done += (size_t)w;
	}
	if (err == 0 && fsync(fd) != 0)
		err = errno;
	if (close(fd) != 0 && err == 0)
		err = errno;
	return err;
}

/* Makes a rename in dir durable. 0 or an errno value. */
static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int err = 0;

	if (fd < 0)
		return errno;
	if (fsync(fd) != 0)
		err = errno;
	close(fd);
	return err;
}

int manifest_write(const char *dir, const cluster_manifest *m, char *errmsg, size_t errmsg_len)
{
	char buf[MANIFEST_MAX_BYTES];
	char *tmp = NULL, *path = NULL;
	const char *step = "write";
	size_t len;
	int err = 0, rv = RAFTKV_OK;

	if (m->cluster_id == 0 || m->n_nodes == 0 || m->n_nodes > RAFTKV_MAX_NODES) {
		set_err(errmsg, errmsg_len, "manifest: bad cluster id or node count");
		return RAFTKV_INVALID;
	}
	len = render(m, buf);
	tmp = join(dir, MANIFEST_TMP);
	path = join(dir, CLUSTER_MANIFEST);
	if (tmp == NULL || path == NULL) {
		set_err(errmsg, errmsg_len, "out of memory");
		rv = RAFTKV_NOMEM;
		goto out;
	}
	err = write_synced(tmp, buf, len);
	if (err == 0) {
		step = "rename";
		if (rename(tmp, path) != 0)
			err = errno;
	}
	if (err == 0) {
		step = "fsync the directory for";
		err = fsync_dir(dir);
	}
	if (err != 0) {
		set_err(errmsg, errmsg_len, "%s %s: %s", step, path, strerror(err));
		rv = RAFTKV_IO;
	}
out:
	free(tmp);
	free(path);
	return rv;
}

int manifest_random_id(uint64_t *out, char *errmsg, size_t errmsg_len)
{
	unsigned char b[8];
	size_t len = 0;
	uint64_t id = 0;

	/* A zero id is drawn with probability 2^-64; draw again rather than special-case it. */
	while (id == 0) {
		int err = read_small("/dev/urandom", (char *)b, sizeof b, &len);
		if (err == 0 && len != sizeof b)
			err = EIO;
		if (err != 0) {
			set_err(errmsg, errmsg_len, "read /dev/urandom: %s", strerror(err));
			return RAFTKV_IO;
		}
		for (size_t i = 0; i < sizeof b; i++)
			id = id << 8 | b[i];
	}
	*out = id;
	return RAFTKV_OK;
}
