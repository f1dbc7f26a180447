#!/usr/bin/env bash
# The whole benchmark in one command: installs what it needs, builds the release
# binary, writes the data once (cached under bench/data/), measures atlasfs and its
# peers side by side, and writes docs/benchmarks.md (+ bench/results/latest.json).
#
#   bench/run.sh                      everything (~15 min on 2 cores, first run included)
#   bench/run.sh --quick              small sizes, 1 run: a smoke test -> bench/results/quick.md
#   bench/run.sh --only large         one workload (sensors profile gridded large listing writes zarrview bigstore bigwrite remote latency,
#                                     comma-separated for several); the others keep their last results
#   bench/run.sh --runs 5             runs per measurement (default 5; 3 for gridded, large; --quick 1)
#   bench/run.sh --gridded-codecs zstd
#   BENCH_SKIP_BUILD=1 bench/run.sh   use target/release/atlasfs as it is
#   BENCH_REMOTE_DELAYS=50 BENCH_REMOTE_CASES=large,small bench/run.sh --only remote
#                                     part of the remote workload (atlasfs on s3:// vs rclone, s3fs; ~45 min in full on moto)
#
# Needs root for `echo 3 > /proc/sys/vm/drop_caches` (the large array's extra disk-cold
# rows); without it those rows are left out, and the document says so.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,17p' "$0"; exit 0 ;; esac
export BENCH_T0="$(date +%s.%N)" BENCH_CMD="bench/run.sh $*"

bash scripts/setup-test-env.sh   # .venv with numpy, atlas-python 0.10.0, moto; fuse3
if ! .venv/bin/python -c 'import zarr, xarray, dask, zstandard, lz4; assert int(zarr.__version__.split(".")[0]) >= 3' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check "zarr>=3" xarray dask zstandard lz4
fi
# the remote workload's peers: rclone mount and s3fs; the bigwrite workload's: the zstd CLI (Debian packages)
if ! command -v rclone >/dev/null || ! command -v s3fs >/dev/null || ! command -v zstd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone s3fs zstd >/dev/null
fi
# a second S3 server for the remote workload (BENCH_REMOTE_SERVERS=moto,s3s-fs), built once, loopback only
if [ ! -x bench/data/tools/bin/s3s-fs ]; then
  cargo install s3s-fs --version 0.14.1 --features binary --locked --root bench/data/tools 2>&1 | tail -n 2
fi
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  cargo build --release --locked 2>&1 | tail -n 3   # waits if another build holds the lock
  # the latency workload's FUSE-over-io_uring probe (a dev-only example, no product code)
  cargo build --release --locked --example fuse_uring_probe 2>&1 | tail -n 1
fi

cd bench
../.venv/bin/python gen.py "$@"
../.venv/bin/python bench.py "$@"
echo "bench: done in $(python3 -c "import time; print(f'{(time.time() - $BENCH_T0) / 60:.1f}')") min"
