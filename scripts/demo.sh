#!/usr/bin/env bash
# The main job, from a fresh machine: builds atlasfs, writes a demo store with the
# reference implementation (atlas-python 0.10), and mounts it with atlasfs.
#
#   scripts/demo.sh [STORE] [MOUNTPOINT]     (defaults: demo/store, demo/mnt)
#
# Unmount with: target/release/atlasfs unmount demo/mnt
# ATLASFS_DEMO_BIN=PATH uses that atlasfs binary instead of building one (the test
# of this script, tests/first_run.rs, runs inside cargo test).
set -euo pipefail
# STORE and MOUNTPOINT are relative to where the script was started.
STORE=$(realpath -m "${1:-$(dirname "$0")/../demo/store}")
MNT=$(realpath -m "${2:-$(dirname "$0")/../demo/mnt}")
cd "$(dirname "$0")/.."
ROOT=$PWD
# Paths shown in the closing hint: relative to the repository root when inside it.
rel() { realpath -m --relative-base="$ROOT" "$1"; }
# Only what the demo needs (the test suite's extras — pjdfstest, cargo-fuzz, moto,
# acl — are scripts/setup-test-env.sh's): fusermount3, and a venv in .venv with
# numpy and atlas-python 0.10 (which writes the demo store).
need_apt=()
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c 'import numpy, atlas; assert atlas.__version__ == "0.10.0"' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check numpy "atlas-python==0.10.0"
fi
if [ -n "${ATLASFS_DEMO_BIN:-}" ]; then
  BIN=$ATLASFS_DEMO_BIN
else
  cargo build --release --locked 2>&1 | tail -n 1
  BIN=target/release/atlasfs
fi
if [ ! -e "$STORE/atlas.json" ]; then
  .venv/bin/python scripts/make_demo_store.py "$STORE" 100
fi
mkdir -p "$MNT"
if grep -qs " $(realpath "$MNT") fuse" /proc/mounts; then "$BIN" unmount "$MNT"; fi
"$BIN" mount "$STORE" "$MNT"
echo "mounted $STORE at $MNT"
ls "$MNT" | head -5; echo "..."
ls -l "$MNT/station_000"
.venv/bin/python - "$MNT" <<'PY'
import sys, numpy as np
mnt = sys.argv[1]
t = np.load(f"{mnt}/station_000/temperature.npy")
g = np.load(f"{mnt}/grid/temperature.npy", mmap_mode="r")
print("station_000 temperature:", np.round(t[:6], 2), "...")
print("grid temperature", g.shape, g.dtype, "mean of a 10x10x4 window:", float(g[:10, :10, :4].mean()))
PY
# Every line below runs as printed, from the repository root (numpy is in the venv
# .venv: call .venv/bin/python, or first `source .venv/bin/activate`).
echo "try, from $ROOT (numpy is in the venv .venv; or first: source .venv/bin/activate):"
echo "  cd $ROOT"
echo "  ls $(rel "$MNT")"
echo "  .venv/bin/python -c 'import numpy as np; print(np.load(\"$(rel "$MNT")/station_001/pressure.npy\"))'"
echo "  $(rel "$BIN") ls $(rel "$STORE") station_001"
echo "unmount: $(rel "$BIN") unmount $(rel "$MNT")"
