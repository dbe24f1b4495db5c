/* snapshot.c - STUB: replaced by the snapshot dump, file format, staging and install. */
#include "store/store_internal.h"

int store_snap_init(store *s)
{
	(void)s;
	return STORE_OK;
}

void store_snap_close(store *s)
{
	(void)s;
}

bool store_snap_dump_running(store *s)
{
	(void)s;
	return false;
}

int store_snap_install_in_txn(store *s, const raft_snapshot *snap)
{
	(void)snap;
	return store_error(s, STORE_ERR_INVALID, "snapshot install not implemented");
}

void store_snap_installed(store *s, const raft_snapshot *snap)
{
	(void)s;
	(void)snap;
}

int store_snapshot_request(store *s, raft_snapshot *out)
{
	(void)s;
	(void)out;
	return RAFT_ERR_SNAPSHOT_TEMPORARILY_UNAVAILABLE;
}
