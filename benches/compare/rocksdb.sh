#!/usr/bin/env bash
# The peer comparison with RocksDB among the peers, linked to Debian's RocksDB (7.8.3):
# installs librocksdb-dev and libclang-dev when missing (apt-get, as root), builds
# streamlog-compare with its `rocksdb` feature, and runs it with the flags given
# (default: every peer, report into docs/).
set -euo pipefail
cd "$(dirname "$0")/../.."
lib=/usr/lib/x86_64-linux-gnu
if [ ! -e "$lib/librocksdb.so" ] || ! ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1; then
    apt-get install -y librocksdb-dev libclang-dev
fi
export ROCKSDB_LIB_DIR="$lib" ROCKSDB_INCLUDE_DIR=/usr/include
# The report names this script as the command of the run.
export STREAMLOG_COMPARE_VIA=benches/compare/rocksdb.sh
cargo build --release -p streamlog-compare --features rocksdb
if [ "$#" -eq 0 ]; then
    set -- --out docs
fi
exec target/release/streamlog-compare "$@"
