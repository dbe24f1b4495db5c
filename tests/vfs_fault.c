/* vfs_fault.c - a fault-injecting SQLite VFS shim: durable images, power cuts, I/O errors. */
#include "vfs_fault.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VF_SECTOR     512
#define VF_MAX_FAULTS 8
#define VF_ALIGN8(x)  (((x) + 7) & ~(size_t)7)

/* Files whose content SQLite expects to survive a crash. */
#define VF_TRACKED_TYPES                                                                           \
	(SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_SUPER_JOURNAL |              \
	 SQLITE_OPEN_WAL)

/* One tracked file. Owned by the file list of vf_state. */
typedef struct vf_node {
	struct vf_node *next;
	char *path; /* owned */
	dev_t dev;
	ino_t ino;
	int type;           /* SQLITE_OPEN_MAIN_DB, ... */
	int open_count;     /* vf_files pointing here */
	bool orphan;        /* deleted or replaced while open; freed at the last close */
	bool durable;       /* false: created through the shim and never synced */
	unsigned char *img; /* durable image, img_len bytes (owned) */
	size_t img_len;
	size_t img_cap;
	unsigned char *dirty; /* bitmap of 512-byte sectors changed since the last sync (owned) */
	size_t dirty_nsec;    /* sectors the bitmap covers */
} vf_node;

typedef struct vf_fault {
	bool armed;
	bool crash;  /* take the disk down after the operation instead of failing it */
	bool sticky; /* keep failing once reached */
	int mask;
	uint64_t left; /* matching operations until this one fires (1: the next) */
	int rc;
} vf_fault;

/* The registered VFS's state: the only global of the shim. */
typedef struct vf_state {
	pthread_mutex_t mu;
	int users;
	char name[64];
	sqlite3_vfs vfs;
	sqlite3_vfs *real;
	bool tracking;
	bool host_sync; /* forward xSync to the real VFS */
	bool down;
	vf_node *nodes;
	vf_fault faults[VF_MAX_FAULTS];
	vf_node *last_node; /* most recent unsynced write, the one a TEAR crash may keep in part */
	sqlite3_int64 last_off;
	int last_len;
	uint64_t rng;
	vfs_fault_stats stats;
} vf_state;

static vf_state vf = {.mu = PTHREAD_MUTEX_INITIALIZER, .tracking = true, .host_sync = true};

/* An open file: our header, then the real VFS's file at vf_real(). */
typedef struct vf_file {
	sqlite3_file base;
	vf_node *node; /* NULL for untracked files */
} vf_file;

static sqlite3_file *vf_real(sqlite3_file *f)
{
	return (sqlite3_file *)((char *)f + VF_ALIGN8(sizeof(vf_file)));
}

static uint64_t vf_rand(void)
{
	uint64_t z = (vf.rng += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static void vf_lock(void)
{
	pthread_mutex_lock(&vf.mu);
}

static void vf_unlock(void)
{
	pthread_mutex_unlock(&vf.mu);
}

/* ---- faults ---- */

static int vf_down_rc(int cls)
{
	switch (cls) {
	case VFS_FAULT_WRITE:
		return SQLITE_IOERR_WRITE;
	case VFS_FAULT_SYNC:
		return SQLITE_IOERR_FSYNC;
	case VFS_FAULT_TRUNCATE:
		return SQLITE_IOERR_TRUNCATE;
	case VFS_FAULT_DELETE:
		return SQLITE_IOERR_DELETE;
	default:
		return SQLITE_IOERR;
	}
}

/* Counts one operation of class cls against the armed faults (mutex held). Returns the error
 * to inject, or SQLITE_OK; sets *crash when the disk must go down after the operation. */
static int vf_gate(int cls, bool *crash)
{
	int rc = SQLITE_OK;

	*crash = false;
	if (vf.down && cls != VFS_FAULT_READ) {
		vf.stats.faults++;
		return vf_down_rc(cls);
	}
	for (int i = 0; i < VF_MAX_FAULTS; i++) {
		vf_fault *f = &vf.faults[i];

		if (!f->armed || !(f->mask & cls))
			continue;
		if (f->left > 1) {
			f->left--;
			continue;
		}
		if (f->crash) {
			*crash = true;
			f->armed = false;
		} else {
			if (rc == SQLITE_OK)
				rc = f->rc;
			f->armed = f->sticky;
		}
	}
	if (rc != SQLITE_OK)
		vf.stats.faults++;
	return rc;
}

static void vf_arm(int mask, uint64_t n, int rc, bool sticky, bool crash)
{
	vf_lock();
	for (int i = 0; i < VF_MAX_FAULTS; i++) {
		vf_fault *f = &vf.faults[i];

		if (f->armed && !(f->mask == mask && f->crash == crash))
			continue;
		*f = (vf_fault){.armed = true,
		                .crash = crash,
		                .sticky = sticky,
		                .mask = mask,
		                .left = n > 0 ? n : 1,
		                .rc = rc};
		break;
	}
	vf_unlock();
}

/* ---- the file table ---- */

static vf_node *vf_node_find_path(const char *path)
{
	for (vf_node *n = vf.nodes; n != NULL; n = n->next)
		if (!n->orphan && strcmp(n->path, path) == 0)
			return n;
	return NULL;
}

static vf_node *vf_node_find_inode(dev_t dev, ino_t ino)
{
	for (vf_node *n = vf.nodes; n != NULL; n = n->next)
		if (!n->orphan && n->dev == dev && n->ino == ino)
			return n;
	return NULL;
}

static void vf_node_free(vf_node *n)
{
	free(n->path);
	free(n->img);
	free(n->dirty);
	free(n);
}

/* Unlinks n from the table and frees it. */
static void vf_node_remove(vf_node *n)
{
	for (vf_node **p = &vf.nodes; *p != NULL; p = &(*p)->next) {
		if (*p == n) {
			*p = n->next;
			break;
		}
	}
	if (vf.last_node == n)
		vf.last_node = NULL;
	vf_node_free(n);
}

/* Forgets n: at once if closed, at its last close otherwise. */
static void vf_node_forget(vf_node *n)
{
	if (vf.last_node == n)
		vf.last_node = NULL;
	if (n->open_count > 0)
		n->orphan = true;
	else
		vf_node_remove(n);
}

static void vf_forget_closed(void)
{
	vf_node *n = vf.nodes;

	while (n != NULL) {
		vf_node *next = n->next;

		if (n->open_count == 0)
			vf_node_remove(n);
		n = next;
	}
}

static int vf_img_reserve(vf_node *n, size_t len)
{
	if (len <= n->img_cap)
		return SQLITE_OK;
	size_t cap = n->img_cap > 0 ? n->img_cap : 4096;
	while (cap < len)
		cap *= 2;
	unsigned char *p = realloc(n->img, cap);
	if (p == NULL)
		return SQLITE_NOMEM;
	n->img = p;
	n->img_cap = cap;
	return SQLITE_OK;
}

static void vf_dirty_clear(vf_node *n)
{
	if (n->dirty != NULL)
		memset(n->dirty, 0, (n->dirty_nsec + 7) / 8);
}

static bool vf_dirty_test(const vf_node *n, size_t sec)
{
	return sec < n->dirty_nsec && (n->dirty[sec / 8] >> (sec % 8)) & 1;
}

/* Marks the sectors of [off, off + len) as changed since the last sync. */
static int vf_dirty_mark(vf_node *n, uint64_t off, uint64_t len)
{
	if (len == 0)
		return SQLITE_OK;
	size_t first = (size_t)(off / VF_SECTOR);
	size_t last = (size_t)((off + len - 1) / VF_SECTOR);
	if (last >= n->dirty_nsec) {
		size_t nsec = n->dirty_nsec > 0 ? n->dirty_nsec : 64;
		while (nsec <= last)
			nsec *= 2;
		unsigned char *p = realloc(n->dirty, (nsec + 7) / 8);
		if (p == NULL)
			return SQLITE_NOMEM;
		memset(p + (n->dirty_nsec + 7) / 8, 0, (nsec + 7) / 8 - (n->dirty_nsec + 7) / 8);
		n->dirty = p;
		n->dirty_nsec = nsec;
	}
	for (size_t s = first; s <= last; s++)
		n->dirty[s / 8] |= (unsigned char)(1u << (s % 8));
	return SQLITE_OK;
}

/* Reads the whole file at path into n's durable image and clears the dirty map. */
static int vf_img_load(vf_node *n, int fd)
{
	struct stat sb;
	size_t done = 0;

	if (fstat(fd, &sb) != 0)
		return SQLITE_IOERR;
	if (vf_img_reserve(n, (size_t)sb.st_size) != SQLITE_OK)
		return SQLITE_NOMEM;
	while (done < (size_t)sb.st_size) {
		ssize_t r = pread(fd, n->img + done, (size_t)sb.st_size - done, (off_t)done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return SQLITE_IOERR;
		done += (size_t)r;
	}
	n->img_len = done;
	vf_dirty_clear(n);
	return SQLITE_OK;
}

static int vf_img_load_path(vf_node *n)
{
	int fd = open(n->path, O_RDONLY);
	int rc;

	if (fd < 0)
		return SQLITE_IOERR;
	rc = vf_img_load(n, fd);
	close(fd);
	return rc;
}

static vf_node *vf_node_new(const char *path, const struct stat *sb, int type, bool existed)
{
	vf_node *n = calloc(1, sizeof(*n));

	if (n == NULL)
		return NULL;
	n->path = strdup(path);
	if (n->path == NULL)
		goto fail;
	n->dev = sb->st_dev;
	n->ino = sb->st_ino;
	n->type = type;
	n->durable = existed;
	if (existed && vf_img_load_path(n) != SQLITE_OK)
		goto fail;
	n->next = vf.nodes;
	vf.nodes = n;
	return n;
fail:
	vf_node_free(n);
	return NULL;
}

/* The node for a file just opened at path (mutex held): the known one, one renamed there
 * outside SQLite (same inode), or a new one. */
static vf_node *vf_node_attach(const char *path, int type, bool existed)
{
	struct stat sb;
	vf_node *n;

	if (stat(path, &sb) != 0)
		return NULL;
	n = vf_node_find_path(path);
	if (n != NULL && (!existed || n->dev != sb.st_dev || n->ino != sb.st_ino)) {
		vf_node_forget(n);
		n = NULL;
	}
	if (n == NULL && existed) {
		struct stat old;

		n = vf_node_find_inode(sb.st_dev, sb.st_ino);
		if (n != NULL && stat(n->path, &old) == 0 && old.st_dev == sb.st_dev &&
		    old.st_ino == sb.st_ino)
			n = NULL;
		if (n != NULL) {
			char *p = strdup(path);
			if (p == NULL)
				return NULL;
			free(n->path);
			n->path = p;
		}
	}
	if (n == NULL)
		n = vf_node_new(path, &sb, type, existed);
	if (n != NULL)
		n->open_count++;
	return n;
}

/* After a successful xSync: makes the current content of the file durable (mutex held). */
static int vf_node_capture(vf_node *n, sqlite3_file *real)
{
	sqlite3_int64 size;
	size_t len, old = n->img_len;
	int rc = real->pMethods->xFileSize(real, &size);

	if (rc != SQLITE_OK)
		return rc;
	len = (size_t)size;
	if (vf_img_reserve(n, len) != SQLITE_OK)
		return SQLITE_NOMEM;
	for (size_t sec = 0; sec * VF_SECTOR < len;) {
		size_t a = sec * VF_SECTOR, b;

		if (a < old && !vf_dirty_test(n, sec)) {
			sec++;
			continue;
		}
		while (sec * VF_SECTOR < len && (sec * VF_SECTOR >= old || vf_dirty_test(n, sec)))
			sec++;
		b = sec * VF_SECTOR < len ? sec * VF_SECTOR : len;
		rc = real->pMethods->xRead(real, n->img + a, (int)(b - a), (sqlite3_int64)a);
		if (rc != SQLITE_OK)
			return rc;
	}
	n->img_len = len;
	n->durable = true;
	vf_dirty_clear(n);
	if (vf.last_node == n)
		vf.last_node = NULL;
	return SQLITE_OK;
}

/* ---- the crash ---- */

static int vf_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t w = pwrite(fd, p, len, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return SQLITE_IOERR;
		p += w;
		len -= (size_t)w;
		off += (uint64_t)w;
	}
	return SQLITE_OK;
}

static int vf_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	unsigned char *p = buf;

	while (len > 0) {
		ssize_t r = pread(fd, p, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return SQLITE_IOERR;
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return SQLITE_OK;
}

/* Writes the durable bytes of [a, b) back, zeros where the durable image is shorter. */
static int vf_restore_range(vf_node *n, int fd, size_t a, size_t b)
{
	static const unsigned char zeros[VF_SECTOR];
	int rc = SQLITE_OK;

	if (a < n->img_len) {
		size_t e = b < n->img_len ? b : n->img_len;
		rc = vf_pwrite_all(fd, n->img + a, e - a, a);
		a = e;
	}
	while (rc == SQLITE_OK && a < b) {
		size_t e = b - a < VF_SECTOR ? b : a + VF_SECTOR;
		rc = vf_pwrite_all(fd, zeros, e - a, a);
		a = e;
	}
	return rc;
}

/* The end of the run of changed sectors that starts at sec, at most lim. */
static size_t vf_dirty_run_end(const vf_node *n, size_t sec, size_t lim)
{
	while (sec < lim && vf_dirty_test(n, sec))
		sec++;
	return sec;
}

/* Reverts n to its durable image: length, then every changed sector. */
static int vf_crash_drop(vf_node *n, int fd)
{
	size_t lim = (n->img_len + VF_SECTOR - 1) / VF_SECTOR;

	if (ftruncate(fd, (off_t)n->img_len) != 0)
		return SQLITE_IOERR;
	for (size_t sec = 0; sec < lim; sec++) {
		if (!vf_dirty_test(n, sec))
			continue;
		size_t end = vf_dirty_run_end(n, sec, lim);
		size_t b = end * VF_SECTOR < n->img_len ? end * VF_SECTOR : n->img_len;
		int rc = vf_restore_range(n, fd, sec * VF_SECTOR, b);
		if (rc != SQLITE_OK)
			return rc;
		sec = end;
	}
	return SQLITE_OK;
}

/* The DROP crash, then a seeded prefix of the last unsynced write (read before the revert). */
static int vf_crash_tear(vf_node *n, int fd)
{
	uint64_t off = (uint64_t)vf.last_off, end = off + (uint64_t)vf.last_len;
	unsigned char *buf = NULL;
	size_t pieces = 0, keep;
	uint64_t cut = off;
	int rc;

	if (vf.last_node != n || vf.last_len <= 0)
		return vf_crash_drop(n, fd);
	buf = malloc((size_t)vf.last_len);
	if (buf == NULL)
		return SQLITE_NOMEM;
	rc = vf_pread_all(fd, buf, (size_t)vf.last_len, off);
	if (rc == SQLITE_OK)
		rc = vf_crash_drop(n, fd);
	if (rc != SQLITE_OK)
		goto cleanup;
	for (uint64_t p = off; p < end; p = (p / VF_SECTOR + 1) * VF_SECTOR)
		pieces++;
	keep = (size_t)(vf_rand() % (pieces + 1));
	for (size_t i = 0; i < keep; i++)
		cut = (cut / VF_SECTOR + 1) * VF_SECTOR;
	if (cut > end)
		cut = end;
	if (keep > 0 && keep < pieces)
		vf.stats.torn++;
	rc = vf_pwrite_all(fd, buf, (size_t)(cut - off), off);
cleanup:
	free(buf);
	return rc;
}

/* Each changed sector keeps its new content or reverts; the length is the old or the new. */
static int vf_crash_scramble(vf_node *n, int fd)
{
	struct stat sb;
	size_t cur, len;

	if (fstat(fd, &sb) != 0)
		return SQLITE_IOERR;
	cur = (size_t)sb.st_size;
	len = (vf_rand() & 1) ? n->img_len : cur;
	if (len > cur) {
		if (ftruncate(fd, (off_t)len) != 0)
			return SQLITE_IOERR;
		int rc = vf_restore_range(n, fd, cur, len);
		if (rc != SQLITE_OK)
			return rc;
	}
	size_t lim = cur < len ? cur : len;
	for (size_t sec = 0; sec * VF_SECTOR < lim; sec++) {
		if (!vf_dirty_test(n, sec) || (vf_rand() & 1))
			continue;
		size_t a = sec * VF_SECTOR, b = a + VF_SECTOR < lim ? a + VF_SECTOR : lim;
		int rc = vf_restore_range(n, fd, a, b);
		if (rc != SQLITE_OK)
			return rc;
	}
	if (len < cur && ftruncate(fd, (off_t)len) != 0)
		return SQLITE_IOERR;
	return SQLITE_OK;
}

static void vf_unlink_shm(const vf_node *n)
{
	size_t len = strlen(n->path);
	char *shm;

	if (n->type != SQLITE_OPEN_MAIN_DB)
		return;
	shm = malloc(len + 5);
	if (shm == NULL)
		return;
	memcpy(shm, n->path, len);
	memcpy(shm + len, "-shm", 5);
	unlink(shm);
	free(shm);
}

/* A never-synced file vanishes or stays empty. Returns true if the node is gone. */
static bool vf_crash_unsynced(vf_node *n)
{
	if (vf_rand() & 1) {
		unlink(n->path);
		return true;
	}
	if (truncate(n->path, 0) != 0)
		return true;
	n->durable = true;
	n->img_len = 0;
	vf_dirty_clear(n);
	return false;
}

/* Applies the crash to one file. Sets *gone when the node must be dropped. */
static int vf_crash_node(vf_node *n, vfs_fault_crash_mode mode, bool *gone)
{
	struct stat sb;
	int fd, rc;

	*gone = true;
	if (stat(n->path, &sb) != 0 || sb.st_dev != n->dev || sb.st_ino != n->ino)
		return SQLITE_OK;
	vf_unlink_shm(n);
	if (!n->durable) {
		*gone = vf_crash_unsynced(n);
		return SQLITE_OK;
	}
	*gone = false;
	fd = open(n->path, O_RDWR);
	if (fd < 0)
		return SQLITE_IOERR;
	if (mode == VFS_FAULT_CRASH_TEAR)
		rc = vf_crash_tear(n, fd);
	else if (mode == VFS_FAULT_CRASH_SCRAMBLE)
		rc = vf_crash_scramble(n, fd);
	else
		rc = vf_crash_drop(n, fd);
	if (rc == SQLITE_OK && mode == VFS_FAULT_CRASH_DROP)
		vf_dirty_clear(n);
	else if (rc == SQLITE_OK)
		rc = vf_img_load(n, fd);
	close(fd);
	return rc;
}

/* ---- sqlite3_io_methods ---- */

static int vf_close(sqlite3_file *f)
{
	vf_file *vfile = (vf_file *)f;
	sqlite3_file *real = vf_real(f);
	int rc;

	vf_lock();
	rc = real->pMethods->xClose(real);
	if (vfile->node != NULL && --vfile->node->open_count == 0 && vfile->node->orphan)
		vf_node_remove(vfile->node);
	vfile->node = NULL;
	vf_unlock();
	return rc;
}

static int vf_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
	sqlite3_file *real = vf_real(f);
	bool crash;
	int rc;

	vf_lock();
	vf.stats.reads++;
	rc = vf_gate(VFS_FAULT_READ, &crash);
	vf.down = vf.down || crash;
	vf_unlock();
	if (rc != SQLITE_OK)
		return rc;
	return real->pMethods->xRead(real, buf, amt, off);
}

static int vf_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
	vf_node *n = ((vf_file *)f)->node;
	sqlite3_file *real = vf_real(f);
	bool crash;
	int rc;

	vf_lock();
	vf.stats.writes++;
	rc = vf_gate(VFS_FAULT_WRITE, &crash);
	if (rc == SQLITE_OK)
		rc = real->pMethods->xWrite(real, buf, amt, off);
	if (rc == SQLITE_OK) {
		vf.stats.bytes_written += (uint64_t)amt;
		if (n != NULL && vf.tracking) {
			rc = vf_dirty_mark(n, (uint64_t)off, (uint64_t)amt);
			vf.last_node = n;
			vf.last_off = off;
			vf.last_len = amt;
		}
	}
	vf.down = vf.down || crash;
	vf_unlock();
	return rc;
}

static int vf_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	vf_node *n = ((vf_file *)f)->node;
	sqlite3_file *real = vf_real(f);
	bool crash;
	int rc;

	vf_lock();
	vf.stats.truncates++;
	rc = vf_gate(VFS_FAULT_TRUNCATE, &crash);
	if (rc == SQLITE_OK)
		rc = real->pMethods->xTruncate(real, size);
	if (rc == SQLITE_OK && n != NULL && vf.tracking) {
		if ((size_t)size < n->img_len)
			rc = vf_dirty_mark(n, (uint64_t)size, n->img_len - (uint64_t)size);
		if (vf.last_node == n)
			vf.last_node = NULL;
	}
	vf.down = vf.down || crash;
	vf_unlock();
	return rc;
}

static int vf_sync(sqlite3_file *f, int flags)
{
	vf_node *n = ((vf_file *)f)->node;
	sqlite3_file *real = vf_real(f);
	bool crash;
	int rc;

	vf_lock();
	vf.stats.syncs++;
	rc = vf_gate(VFS_FAULT_SYNC, &crash);
	if (rc == SQLITE_OK && vf.host_sync)
		rc = real->pMethods->xSync(real, flags);
	if (rc == SQLITE_OK && n != NULL && vf.tracking)
		rc = vf_node_capture(n, real);
	vf.down = vf.down || crash;
	vf_unlock();
	return rc;
}

static int vf_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	sqlite3_file *real = vf_real(f);

	return real->pMethods->xFileSize(real, size);
}

static int vf_lock_file(sqlite3_file *f, int level)
{
	sqlite3_file *real = vf_real(f);

	return real->pMethods->xLock(real, level);
}

static int vf_unlock_file(sqlite3_file *f, int level)
{
	sqlite3_file *real = vf_real(f);

	return real->pMethods->xUnlock(real, level);
}

static int vf_check_reserved(sqlite3_file *f, int *out)
{
	sqlite3_file *real = vf_real(f);

	return real->pMethods->xCheckReservedLock(real, out);
}

static int vf_file_control(sqlite3_file *f, int op, void *arg)
{
	sqlite3_file *real = vf_real(f);

	return real->pMethods->xFileControl(real, op, arg);
}

static int vf_sector_size(sqlite3_file *f)
{
	sqlite3_file *real = vf_real(f);

	return real->pMethods->xSectorSize(real);
}

static int vf_device_characteristics(sqlite3_file *f)
{
	sqlite3_file *real = vf_real(f);

	return real->pMethods->xDeviceCharacteristics(real);
}

static int vf_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
	sqlite3_file *real = vf_real(f);

	return real->pMethods->xShmMap(real, pg, pgsz, extend, pp);
}

static int vf_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
	sqlite3_file *real = vf_real(f);

	return real->pMethods->xShmLock(real, offset, n, flags);
}

static void vf_shm_barrier(sqlite3_file *f)
{
	sqlite3_file *real = vf_real(f);

	real->pMethods->xShmBarrier(real);
}

static int vf_shm_unmap(sqlite3_file *f, int delete_flag)
{
	sqlite3_file *real = vf_real(f);

	return real->pMethods->xShmUnmap(real, delete_flag);
}

/* Version 2 at most: forwarding the wal-index, never offering memory-mapped pages (xFetch), so
 * every page read goes through vf_read and its faults. */
#define VF_IO_METHODS(version)                                                                     \
	{                                                                                          \
		.iVersion = (version), .xClose = vf_close, .xRead = vf_read, .xWrite = vf_write,   \
		.xTruncate = vf_truncate, .xSync = vf_sync, .xFileSize = vf_file_size,             \
		.xLock = vf_lock_file, .xUnlock = vf_unlock_file,                                  \
		.xCheckReservedLock = vf_check_reserved, .xFileControl = vf_file_control,          \
		.xSectorSize = vf_sector_size,                                                     \
		.xDeviceCharacteristics = vf_device_characteristics,                               \
		.xShmMap = (version) >= 2 ? vf_shm_map : NULL,                                     \
		.xShmLock = (version) >= 2 ? vf_shm_lock : NULL,                                   \
		.xShmBarrier = (version) >= 2 ? vf_shm_barrier : NULL,                             \
		.xShmUnmap = (version) >= 2 ? vf_shm_unmap : NULL,                                 \
	}

static const sqlite3_io_methods vf_io_v1 = VF_IO_METHODS(1);
static const sqlite3_io_methods vf_io_v2 = VF_IO_METHODS(2);

/* ---- sqlite3_vfs ---- */

static int vf_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
	vf_file *vfile = (vf_file *)f;
	sqlite3_file *real = vf_real(f);
	bool track = name != NULL && (flags & VF_TRACKED_TYPES) != 0;
	struct stat sb;
	bool existed;
	int rc;

	(void)vfs;
	f->pMethods = NULL;
	vfile->node = NULL;
	vf_lock();
	vf.stats.opens++;
	if (vf.down) {
		vf.stats.faults++;
		rc = SQLITE_CANTOPEN;
		goto cleanup;
	}
	existed = name != NULL && stat(name, &sb) == 0;
	rc = vf.real->xOpen(vf.real, name, real, flags, out_flags);
	if (rc != SQLITE_OK)
		goto cleanup;
	if (track && vf.tracking) {
		vfile->node = vf_node_attach(name, flags & VF_TRACKED_TYPES, existed);
		if (vfile->node == NULL) {
			real->pMethods->xClose(real);
			rc = SQLITE_IOERR_NOMEM;
			goto cleanup;
		}
	}
	f->pMethods = real->pMethods->iVersion >= 2 ? &vf_io_v2 : &vf_io_v1;
cleanup:
	vf_unlock();
	return rc;
}

static int vf_delete(sqlite3_vfs *vfs, const char *name, int dir_sync)
{
	bool crash;
	int rc;

	(void)vfs;
	vf_lock();
	vf.stats.deletes++;
	rc = vf_gate(VFS_FAULT_DELETE, &crash);
	if (rc == SQLITE_OK)
		rc = vf.real->xDelete(vf.real, name, dir_sync);
	if (rc == SQLITE_OK || rc == SQLITE_IOERR_DELETE_NOENT) {
		vf_node *n = vf_node_find_path(name);
		if (n != NULL)
			vf_node_forget(n);
	}
	vf.down = vf.down || crash;
	vf_unlock();
	return rc;
}

static int vf_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	(void)vfs;
	return vf.real->xAccess(vf.real, name, flags, out);
}

static int vf_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	(void)vfs;
	return vf.real->xFullPathname(vf.real, name, n, out);
}

static void *vf_dl_open(sqlite3_vfs *vfs, const char *name)
{
	(void)vfs;
	return vf.real->xDlOpen(vf.real, name);
}

static void vf_dl_error(sqlite3_vfs *vfs, int n, char *msg)
{
	(void)vfs;
	vf.real->xDlError(vf.real, n, msg);
}

static void (*vf_dl_sym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	(void)vfs;
	return vf.real->xDlSym(vf.real, h, sym);
}

static void vf_dl_close(sqlite3_vfs *vfs, void *h)
{
	(void)vfs;
	vf.real->xDlClose(vf.real, h);
}

static int vf_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return vf.real->xRandomness(vf.real, n, out);
}

static int vf_sleep(sqlite3_vfs *vfs, int us)
{
	(void)vfs;
	return vf.real->xSleep(vf.real, us);
}

static int vf_current_time(sqlite3_vfs *vfs, double *out)
{
	(void)vfs;
	return vf.real->xCurrentTime(vf.real, out);
}

static int vf_get_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return vf.real->xGetLastError != NULL ? vf.real->xGetLastError(vf.real, n, out) : 0;
}

static int vf_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	(void)vfs;
	return vf.real->xCurrentTimeInt64(vf.real, out);
}

static int vf_set_system_call(sqlite3_vfs *vfs, const char *name, sqlite3_syscall_ptr p)
{
	(void)vfs;
	return vf.real->xSetSystemCall(vf.real, name, p);
}

static sqlite3_syscall_ptr vf_get_system_call(sqlite3_vfs *vfs, const char *name)
{
	(void)vfs;
	return vf.real->xGetSystemCall(vf.real, name);
}

static const char *vf_next_system_call(sqlite3_vfs *vfs, const char *name)
{
	(void)vfs;
	return vf.real->xNextSystemCall(vf.real, name);
}

/* Fills vf.vfs from the real VFS (mutex held). */
static void vf_vfs_init(sqlite3_vfs *real, const char *name)
{
	int version = real->iVersion < 3 ? real->iVersion : 3;

	vf.real = real;
	snprintf(vf.name, sizeof(vf.name), "%s", name);
	vf.vfs = (sqlite3_vfs){
	    .iVersion = version,
	    .szOsFile = (int)(VF_ALIGN8(sizeof(vf_file)) + (size_t)real->szOsFile),
	    .mxPathname = real->mxPathname,
	    .zName = vf.name,
	    .xOpen = vf_open,
	    .xDelete = vf_delete,
	    .xAccess = vf_access,
	    .xFullPathname = vf_full_pathname,
	    .xDlOpen = vf_dl_open,
	    .xDlError = vf_dl_error,
	    .xDlSym = vf_dl_sym,
	    .xDlClose = vf_dl_close,
	    .xRandomness = vf_randomness,
	    .xSleep = vf_sleep,
	    .xCurrentTime = vf_current_time,
	    .xGetLastError = vf_get_last_error,
	    .xCurrentTimeInt64 = version >= 2 ? vf_current_time_int64 : NULL,
	    .xSetSystemCall = version >= 3 ? vf_set_system_call : NULL,
	    .xGetSystemCall = version >= 3 ? vf_get_system_call : NULL,
	    .xNextSystemCall = version >= 3 ? vf_next_system_call : NULL,
	};
}

/* ---- the public API ---- */

int vfs_fault_register(const char *name)
{
	sqlite3_vfs *real;
	int rc = SQLITE_OK;

	if (name == NULL)
		name = VFS_FAULT_NAME;
	if (strlen(name) >= sizeof(vf.name))
		return SQLITE_MISUSE;
	real = sqlite3_vfs_find(NULL);
	if (real == NULL)
		return SQLITE_ERROR;
	vf_lock();
	if (vf.users > 0) {
		rc = strcmp(vf.name, name) == 0 ? SQLITE_OK : SQLITE_MISUSE;
		vf.users += rc == SQLITE_OK;
		vf_unlock();
		return rc;
	}
	vf_vfs_init(real, name);
	vf_unlock();
	rc = sqlite3_vfs_register(&vf.vfs, 0);
	if (rc == SQLITE_OK) {
		vf_lock();
		vf.users = 1;
		vf_unlock();
	}
	return rc;
}

void vfs_fault_unregister(void)
{
	vf_lock();
	if (vf.users == 0 || --vf.users > 0) {
		vf_unlock();
		return;
	}
	vf_forget_closed();
	vf_unlock();
	sqlite3_vfs_unregister(&vf.vfs);
}

void vfs_fault_reset(uint64_t seed)
{
	vf_lock();
	vf_forget_closed();
	memset(vf.faults, 0, sizeof(vf.faults));
	memset(&vf.stats, 0, sizeof(vf.stats));
	vf.down = false;
	vf.last_node = NULL;
	vf.rng = seed;
	vf_unlock();
}

void vfs_fault_set_tracking(bool on)
{
	vf_lock();
	vf_forget_closed();
	vf.tracking = on;
	vf_unlock();
}

void vfs_fault_set_host_sync(bool on)
{
	vf_lock();
	vf.host_sync = on;
	vf_unlock();
}

void vfs_fault_fail_after(int mask, uint64_t n, int rc)
{
	vf_arm(mask, n, rc, false, false);
}

void vfs_fault_fail_from(int mask, uint64_t n, int rc)
{
	vf_arm(mask, n, rc, true, false);
}

void vfs_fault_crash_after(int mask, uint64_t n)
{
	vf_arm(mask, n, SQLITE_OK, false, true);
}

void vfs_fault_power_off(void)
{
	vf_lock();
	vf.down = true;
	vf_unlock();
}

bool vfs_fault_is_down(void)
{
	bool down;

	vf_lock();
	down = vf.down;
	vf_unlock();
	return down;
}

void vfs_fault_clear(void)
{
	vf_lock();
	memset(vf.faults, 0, sizeof(vf.faults));
	vf.down = false;
	vf_unlock();
}

static bool vf_any_open(void)
{
	for (vf_node *n = vf.nodes; n != NULL; n = n->next)
		if (n->open_count > 0)
			return true;
	return false;
}

int vfs_fault_crash(vfs_fault_crash_mode mode)
{
	int rc = SQLITE_OK;

	vf_lock();
	if (!vf.tracking || vf_any_open()) {
		vf_unlock();
		return SQLITE_MISUSE;
	}
	for (vf_node *n = vf.nodes, *next; n != NULL; n = next) {
		bool gone;
		int r = vf_crash_node(n, mode, &gone);

		next = n->next;
		if (r != SQLITE_OK && rc == SQLITE_OK)
			rc = r;
		if (gone)
			vf_node_remove(n);
	}
	memset(vf.faults, 0, sizeof(vf.faults));
	vf.down = false;
	vf.last_node = NULL;
	vf.stats.crashes++;
	vf_unlock();
	return rc;
}

void vfs_fault_stats_get(vfs_fault_stats *out)
{
	vf_lock();
	*out = vf.stats;
	vf_unlock();
}

void vfs_fault_stats_reset(void)
{
	vf_lock();
	memset(&vf.stats, 0, sizeof(vf.stats));
	vf_unlock();
}
