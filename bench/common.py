"""What gen.py writes and bench.py reads: workload shapes, sizes, paths, data.

Data follows atlas-python's own benchmark (spec §5.5): dataset `idx` draws its
values from `default_rng(seed=idx)` as `baseline + N(0, scale)`, humidity clipped
to 0..100, hourly timestamps from 2024-01-01, float32 linspace for other axes.
"""
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA = BENCH / "data"
SCRATCH = DATA / "scratch"  # mountpoints, write targets, logs: wiped each run
BIN = ROOT / "target" / "release" / "atlasfs"

# Bump when anything below changes what gen.py writes: stale caches are rebuilt.
DATA_VERSION = "atlasfs-bench-data 2"

CODECS = ("zstd", "lz4", "none")
WORKLOADS = ("sensors", "profile", "gridded", "large", "listing", "writes", "zarrview", "bigstore", "bigwrite", "remote", "latency")
READ_VAR = "temperature"  # the variable the cross-dataset reads fetch from every dataset

_WEATHER = [("temperature", "float32", 15.0, 5.0), ("pressure", "float64", 1013.0, 8.0), ("humidity", "float32", 60.0, 15.0)]
CASES = {
    "sensors": dict(dims=("time",), shape=(24,), chunks=None, vars=_WEATHER, attr="station_id"),
    "profile": dict(dims=("depth", "time"), shape=(50, 168), chunks=None,
                    vars=[("temperature", "float32", 10.0, 3.0), ("salinity", "float32", 35.0, 0.5)], attr="cast_id"),
    "gridded": dict(dims=("lon", "lat", "time"), shape=(100, 100, 48), chunks=(50, 50, 24), vars=_WEATHER, attr="grid_id"),
}

# gridded is 7.7 MB per dataset; N=100 keeps generation + three codecs inside the
# time budget (the spec's N=1000 would be 7.7 GB per store).
SIZES = {
    "full": dict(sensors=1000, profile=1000, gridded=100, large=(16384, 16384), listing=10000, writes=1000, zarrview=1000, bigstore=50000,
                 bigwrite=(65536, 16384), remote="large (512, 256, 1024), scan 1000", latency=300),
    "quick": dict(sensors=50, profile=50, gridded=6, large=(2048, 8192), listing=500, writes=100, zarrview=50, bigstore=2000,
                  bigwrite=(8192, 16384), remote="large (64, 256, 1024), scan 50", latency=50),
}
# Runs per measurement (medians): more where a run is cheap and noise is large;
# zarr's open_mfdataset takes ~15 s over 1000 stores, so it gets at most ZARR_RUNS.
RUNS = {
    "full": dict(sensors=5, profile=5, gridded=3, large=3, listing=5, writes=5, zarrview=5, bigstore=100, bigwrite=3, remote=3, latency=3),
    "quick": dict(sensors=1, profile=1, gridded=1, large=1, listing=1, writes=1, zarrview=1, bigstore=10, bigwrite=1, remote=1, latency=1),
}
ZARR_RUNS = 3


def profile_name(quick):
    return "quick" if quick else "full"


def workload_dir(quick, name):
    return DATA / profile_name(quick) / name


def dataset_names(n):
    width = max(4, len(str(n - 1)))
    return [f"ds_{i:0{width}d}" for i in range(n)]


def large_chunks(shape):
    """Whole-row chunks of ~4 MiB, the chunking the mount gives a written array."""
    rows = max(1, (4 << 20) // (shape[1] * 4))
    return (rows, shape[1])


def case_arrays(case, idx):
    """{variable: ndarray} of dataset `idx` of a cross-dataset case."""
    c = CASES[case]
    rng = np.random.default_rng(seed=idx)
    out = {}
    for name, dtype, base, scale in c["vars"]:
        v = base + rng.normal(0.0, scale, c["shape"])
        if name == "humidity":
            v = np.clip(v, 0.0, 100.0)
        out[name] = v.astype(dtype)
    return out


def case_coords(case):
    """{coordinate: ndarray}, one per dimension, shared by every dataset of the case."""
    c = CASES[case]
    out = {}
    for dim, n in zip(c["dims"], c["shape"]):
        if dim == "time":
            out[dim] = np.datetime64("2024-01-01T00:00", "ns") + np.arange(n) * np.timedelta64(1, "h")
        else:
            lo, hi = {"depth": (0, 1000), "lon": (-180, 180), "lat": (-90, 90)}[dim]
            out[dim] = np.linspace(lo, hi, n, dtype=np.float32)
    return out


def slice_of(shape, fraction=0.25):
    """The spec's read slice: the first int(fraction·len) elements of every axis."""
    return tuple(slice(0, max(1, int(fraction * s))) for s in shape)


def marker_text(quick, name):
    return json.dumps({"version": DATA_VERSION, "workload": name, "size": SIZES[profile_name(quick)][name]})


def is_complete(quick, name):
    m = workload_dir(quick, name) / ".complete"
    return m.exists() and m.read_text() == marker_text(quick, name)


def dir_bytes(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total
