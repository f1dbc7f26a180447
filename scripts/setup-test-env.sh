#!/usr/bin/env bash
# Installs everything the test suite needs, idempotently:
#   - Debian packages: fuse3 (fusermount3), rsync, attr (getfattr), libacl1-dev and
#     acl (for pjdfstest), util-linux (setpriv)
#   - pjdfstest (cargo install), the POSIX conformance suite
#   - cargo-fuzz (cargo install), for the fuzz targets in fuzz/ (scripts/fuzz.sh)
#   - a Python venv at .venv with numpy, atlas-python 0.10.0 (the compatibility
#     oracle) with its cloud extra (obstore, so that it reads and writes S3 too) and
#     moto[server] (a real S3-compatible server for object-store tests), and for the
#     zarr view's tests (tests/zarr_view.rs) zarr>=3, xarray, dask and tensorstore
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
command -v rsync >/dev/null || need_apt+=(rsync)
command -v getfattr >/dev/null || need_apt+=(attr)
# pjdfstest (tests/pjdfstest.rs) links libacl; setpriv (tests/permissions.rs) is util-linux
dpkg -s libacl1-dev >/dev/null 2>&1 || need_apt+=(libacl1-dev)
command -v setfacl >/dev/null || need_apt+=(acl)
command -v setpriv >/dev/null || need_apt+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import numpy, atlas, moto, obstore; assert atlas.__version__ == "0.10.0"' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check numpy "atlas-python[cloud]==0.10.0" "moto[server]"
fi
if ! .venv/bin/python -c 'import zarr, xarray, dask, tensorstore; assert int(zarr.__version__.split(".")[0]) >= 3' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check "zarr>=3" xarray dask tensorstore
fi
# pjdfstest, the POSIX conformance suite (its Rust rewrite), for tests/pjdfstest.rs
if ! command -v pjdfstest >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/pjdfstest" ]; then
  cargo install pjdfstest --locked
fi
# cargo-fuzz (libFuzzer), for scripts/fuzz.sh; it builds with `cargo +nightly` when
# that toolchain is installed and otherwise with stable and RUSTC_BOOTSTRAP=1.
if ! command -v cargo-fuzz >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz" ]; then
  cargo install cargo-fuzz --locked
fi
echo "test environment ready: $(.venv/bin/python -c 'import atlas, numpy; print("atlas", atlas.__version__, "numpy", numpy.__version__)')"
