/* vfs_fault.h - a fault-injecting SQLite VFS for tests: simulated power cuts and I/O errors. */
#ifndef TESTS_VFS_FAULT_H
#define TESTS_VFS_FAULT_H

#include <stdbool.h>
#include <stdint.h>

/*
 * A shim over the default SQLite VFS (sqlite3_vfs_find(NULL) at registration). Every call is
 * forwarded to it; on the way the shim counts operations, injects errors, and remembers, for
 * each file it tracks, the file's durable image: its content as of its last xSync.
 *
 * Tracked files: those opened by name as a main database, rollback journal, super-journal or
 * WAL. A file is identified by its path and inode; a file renamed outside SQLite (rename(2))
 * keeps its durable image under the new name, which the shim notices when SQLite next opens
 * the new path. Temporary files and the -shm wal-index (memory-mapped, rebuilt by SQLite's
 * recovery) are not tracked; a crash deletes each tracked database's -shm.
 *
 * Durability model (vfs_fault_crash):
 *   - xSync of a file makes its whole current content and length durable, and also its
 *     directory entry if the file was created through the shim. Nothing else is durable:
 *     xWrite and xTruncate since the file's last xSync are volatile.
 *   - Directory operations are durable at once: xDelete, and renames or unlinks done outside
 *     SQLite. A file that was created through the shim and never synced is, at a crash, either
 *     removed or left empty (seeded choice), as a real file system may do either.
 *   - Files that existed before the shim first opened them are durable as found.
 *   - A crash reverts every tracked file to its durable image, then applies the crash mode:
 *     VFS_FAULT_CRASH_DROP  nothing unsynced survives;
 *     VFS_FAULT_CRASH_TEAR  the most recent unsynced write survives in part: a seeded number
 *                           (0..all) of its leading pieces, cut at 512-byte sector boundaries;
 *     VFS_FAULT_CRASH_SCRAMBLE  every unsynced 512-byte sector independently keeps its new
 *                           content or reverts, and the length is the old or the new one
 *                           (seeded): unsynced writes reach the disk partly and in any order.
 *     Tearing stays within the written range, as SQLite's POWERSAFE_OVERWRITE assumes.
 *   - A crash needs every file of the shim closed (the crashed process is gone): first make
 *     the disk refuse writes (vfs_fault_crash_after or vfs_fault_power_off), then close the
 *     connections, then call vfs_fault_crash().
 *
 * Faults: vfs_fault_fail_after() makes the n-th matching operation from now fail with a given
 * code, without touching the file. vfs_fault_crash_after() lets the n-th matching operation
 * happen and then takes the disk down: every later write, sync, truncate, delete and open
 * fails (SQLITE_IOERR_* or SQLITE_CANTOPEN) and changes nothing, as if power had been cut
 * right after that operation. Reads keep working.
 *
 * State: all of it (file table, faults, counters, PRNG) lives in one static structure behind a
 * mutex, the registered VFS's state; calls are thread-safe. Register once per process user
 * (calls nest); unregister frees everything once the last user is gone.
 */

/* Operation classes, combined as a mask for faults. */
enum {
	VFS_FAULT_READ = 1 << 0,
	VFS_FAULT_WRITE = 1 << 1,
	VFS_FAULT_SYNC = 1 << 2,
	VFS_FAULT_TRUNCATE = 1 << 3,
	VFS_FAULT_DELETE = 1 << 4,
	/* Everything that can change a file: the crash points of a crash loop. */
	VFS_FAULT_MUTATION =
	    VFS_FAULT_WRITE | VFS_FAULT_SYNC | VFS_FAULT_TRUNCATE | VFS_FAULT_DELETE,
};

typedef enum vfs_fault_crash_mode {
	VFS_FAULT_CRASH_DROP = 0,
	VFS_FAULT_CRASH_TEAR = 1,
	VFS_FAULT_CRASH_SCRAMBLE = 2,
} vfs_fault_crash_mode;

/* Operation counters since registration or vfs_fault_stats_reset(). */
typedef struct vfs_fault_stats {
	uint64_t opens;
	uint64_t reads;
	uint64_t writes;
	uint64_t syncs;
	uint64_t truncates;
	uint64_t deletes;
	uint64_t bytes_written;
	uint64_t faults;  /* operations failed by vfs_fault_fail_after/_from or a down disk */
	uint64_t crashes; /* vfs_fault_crash() calls */
	uint64_t torn;    /* writes that a crash kept in part */
} vfs_fault_stats;

/* The name used when vfs_fault_register() is given NULL. */
#define VFS_FAULT_NAME "faultfs"

/*
 * Registers the shim under name (NULL: VFS_FAULT_NAME), not as the default VFS. Nested calls
 * count users and must use the same name. Returns a SQLite result code.
 */
int vfs_fault_register(const char *name);

/* Drops one user; the last one unregisters the VFS and frees all state. Files must be closed. */
void vfs_fault_unregister(void);

/* Forgets every closed file, clears faults and the down state, zeroes the counters and seeds
 * the PRNG used by crashes. Call at the start of each test. */
void vfs_fault_reset(uint64_t seed);

/* With tracking off (it is on by default), the shim only counts and injects faults: no durable
 * images, and vfs_fault_crash() refuses. For benchmarks. Change it with no file open. */
void vfs_fault_set_tracking(bool on);

/* With host sync off, xSync updates the durable images but does not reach the host's fsync:
 * the model, not the host disk, decides what a crash keeps, and tests run much faster. On by
 * default (benchmarks counting syncs want the real cost). */
void vfs_fault_set_host_sync(bool on);

/* The n-th (n >= 1) operation matching mask from now fails with rc, once. */
void vfs_fault_fail_after(int mask, uint64_t n, int rc);

/* Like vfs_fault_fail_after, but that operation and every later matching one fail with rc
 * (a disk that stays full) until vfs_fault_clear(). */
void vfs_fault_fail_from(int mask, uint64_t n, int rc);

/* The n-th (n >= 1) operation matching mask from now happens, then the disk goes down. */
void vfs_fault_crash_after(int mask, uint64_t n);

/* Takes the disk down now. */
void vfs_fault_power_off(void);

/* True once the disk went down (until vfs_fault_crash or vfs_fault_clear). */
bool vfs_fault_is_down(void);

/* Cancels pending faults and brings a down disk back up without any crash. */
void vfs_fault_clear(void);

/*
 * Simulates the power cut: with every file closed, reverts each tracked file to its durable
 * image as described above, deletes the -shm files, clears faults and the down state. Returns
 * SQLITE_OK, SQLITE_MISUSE if a file is still open or tracking is off, or SQLITE_IOERR if the
 * host file system failed.
 */
int vfs_fault_crash(vfs_fault_crash_mode mode);

/* Copies the counters into *out. */
void vfs_fault_stats_get(vfs_fault_stats *out);

/* Zeroes the counters. */
void vfs_fault_stats_reset(void);

#endif /* TESTS_VFS_FAULT_H */
