#!/bin/sh
# deps.sh - checks for the Debian packages RaftKV needs; installs them when run as root.
# Usage: scripts/deps.sh [build] [format] [fuzz]   (default: build)
set -e
need=""
add() { need="$need $1"; }
[ $# -eq 0 ] && set -- build
for what in "$@"; do
	case "$what" in
	build)
		command -v gcc >/dev/null 2>&1 || add gcc
		command -v make >/dev/null 2>&1 || add make
		[ -f /usr/include/sqlite3.h ] || add libsqlite3-dev
		[ -f /usr/include/CUnit/CUnit.h ] || add libcunit1-dev
		;;
	format)
		command -v clang-format-14 >/dev/null 2>&1 || add clang-format-14
		;;
	fuzz)
		command -v clang >/dev/null 2>&1 || add clang
		ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 ||
			add libclang-rt-14-dev
		;;
	*)
		echo "deps: unknown group '$what' (build, format, fuzz)" >&2
		exit 2
		;;
	esac
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "deps: installing$need"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need
else
	echo "deps: missing packages. Run:  sudo apt-get update && sudo apt-get install -y$need" >&2
	exit 1
fi
