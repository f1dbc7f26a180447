#!/usr/bin/env bash
# The main job, from a fresh machine: builds atlasfs, writes a demo store with the
# reference implementation (atlas-python 0.10), and mounts it with atlasfs.
#
#   scripts/demo.sh [STORE] [MOUNTPOINT]     (defaults: demo/store, demo/mnt)
#
# Unmount with: target/release/atlasfs unmount demo/mnt
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:-demo/store}
MNT=${2:-demo/mnt}
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
cargo build --release --locked 2>&1 | tail -n 1
BIN=target/release/atlasfs
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
echo "try (numpy is in the venv .venv; or first: source .venv/bin/activate):"
echo "  ls $MNT"
echo "  .venv/bin/python -c 'import numpy as np; print(np.load(\"$MNT/station_001/pressure.npy\"))'"
echo "unmount: $BIN unmount $MNT"
