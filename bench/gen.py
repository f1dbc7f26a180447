"""Writes the benchmark data once, under bench/data/{full,quick}/<workload>/.

Every store is written by atlas-python 0.10, so atlasfs, atlas-python and the
peers all read the same bytes. A workload whose `.complete` marker matches
common.marker_text() is reused as is; anything else is rebuilt from scratch.

usage: gen.py [--quick] [--only NAME[,NAME]]
"""
import argparse
import contextlib
import multiprocessing
import os
import shutil
import sys
import time

import numpy as np

import common as C

ATLAS_STORE_KW = dict(meta_format="msgpack", meta_compression="zstd")  # as atlas's own benchmark writes


def save_npy_tree(root, names, arrays_of):
    for name in names:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for var, a in arrays_of(name).items():
            np.save(d / f"{var}.npy", a)


def gen_case(case, n, out):
    """Three atlas-python stores (one per codec), the same arrays as a plain .npy tree,
    and one zarr v3 store per dataset (the peer atlas's benchmark compares with)."""
    import atlas
    c = C.CASES[case]
    names = C.dataset_names(n)
    coords = C.case_coords(case)
    with contextlib.ExitStack() as stack:
        stores = [stack.enter_context(atlas.Atlas.create(str(out / f"atlas-{codec}"), codec=codec, **ATLAS_STORE_KW)) for codec in C.CODECS]
        for idx, name in enumerate(names):
            arrays = C.case_arrays(case, idx)
            for a in stores:
                d = a.create_dataset(name)
                for dim, v in coords.items():
                    if v.dtype.kind == "M":
                        d.define_array(dim, "timestamp_nanoseconds", [dim], [len(v)])
                        d.write_array(dim, [0], v.view(np.int64))
                    else:
                        d.define_array(dim, "float32", [dim], [len(v)], fill_value=float("nan"))
                        d.write_array(dim, [0], v)
                for var, v in arrays.items():
                    chunks = list(c["chunks"]) if c["chunks"] else None
                    d.define_array(var, str(v.dtype), list(c["dims"]), list(v.shape), chunk_shape=chunks, fill_value=float("nan"))
                    d.write_array(var, [0] * v.ndim, v)
                d.set_attribute(c["attr"], idx)
        # leaving the with-block flushes each store once, as atlas's benchmark does
    save_npy_tree(out / "npy", names, lambda name: {**coords, **C.case_arrays(case, names.index(name))})
    (out / "zarr").mkdir()
    # zarr+xarray writes are slow (~15 ms a store); spread them over the cores.
    jobs = [(case, n, list(range(k, n, os.cpu_count())), str(out / "zarr")) for k in range(os.cpu_count())]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        pool.map(write_zarr, jobs)


def write_zarr(job):
    import warnings
    import xarray as xr
    from zarr.codecs import ZstdCodec
    warnings.filterwarnings("ignore")
    case, n, idxs, out = job
    c = C.CASES[case]
    names = C.dataset_names(n)
    coords = C.case_coords(case)
    for idx in idxs:
        arrays = C.case_arrays(case, idx)
        ds = xr.Dataset({v: (c["dims"], a) for v, a in arrays.items()}, coords=coords, attrs={c["attr"]: idx})
        enc = {v: {"compressors": [ZstdCodec(level=3)]} for v in ds.variables}  # zstd level 3, as atlas's benchmark
        if c["chunks"]:
            for v in arrays:
                enc[v]["chunks"] = c["chunks"]
        ds.to_zarr(os.path.join(out, f"{names[idx]}.zarr"), zarr_format=3, encoding=enc, consolidated=False, mode="w")


def gen_large(shape, out):
    """One f32 array of `shape` (1 GiB in the full profile) in three atlas-python stores
    and as a plain .npy, written slab by slab so memory stays small."""
    import atlas
    chunks = C.large_chunks(shape)
    rng = np.random.default_rng(seed=0)
    (out / "npy" / "big").mkdir(parents=True)
    plain = np.lib.format.open_memmap(out / "npy" / "big" / "data.npy", mode="w+", dtype=np.float32, shape=shape)
    slab = chunks[0] * max(1, (64 << 20) // (chunks[0] * shape[1] * 4))  # ~64 MiB, chunk-aligned
    with contextlib.ExitStack() as stack:
        views = []
        for codec in C.CODECS:
            a = stack.enter_context(atlas.Atlas.create(str(out / f"atlas-{codec}"), codec=codec, **ATLAS_STORE_KW))
            d = a.create_dataset("big")
            d.define_array("data", "float32", ["y", "x"], list(shape), chunk_shape=list(chunks), fill_value=float("nan"))
            views.append(d)
        for r0 in range(0, shape[0], slab):
            rows = min(slab, shape[0] - r0)
            v = np.float32(15.0) + np.float32(5.0) * rng.standard_normal((rows, shape[1]), dtype=np.float32)
            plain[r0:r0 + rows] = v
            for d in views:
                d.write_array("data", [r0, 0], v)
    plain.flush()
    del plain


def gen_listing(n, out):
    """n datasets with one small array each (atlas-python), and the same tree on local disk."""
    import atlas
    names = C.dataset_names(n)
    with atlas.Atlas.create(str(out / "atlas"), codec="zstd", **ATLAS_STORE_KW) as a:
        for idx, name in enumerate(names):
            v = (15.0 + np.random.default_rng(seed=idx).normal(0.0, 5.0, 24)).astype(np.float32)
            d = a.create_dataset(name)
            d.define_array("value", "float32", ["time"], [24], fill_value=float("nan"))
            d.write_array("value", [0], v)
    save_npy_tree(out / "tree", names, lambda name: {"value": (15.0 + np.random.default_rng(seed=names.index(name)).normal(0.0, 5.0, 24)).astype(np.float32)})


def gen_writes(n, out):
    """The files the write benchmark copies: n dataset dirs holding one profile-like
    temperature.npy each (the profile case's own data)."""
    names = C.dataset_names(n)
    save_npy_tree(out / "src", names, lambda name: {"temperature": C.case_arrays("profile", names.index(name))["temperature"]})


def gen_zarrview(n, out):
    """The zarr-view case: n datasets written with add_xarray_dataset, each the profile
    case's temperature (depth × time, float32) with its coordinates, one store (zstd)."""
    import atlas
    import xarray as xr
    coords = C.case_coords("profile")
    names = C.dataset_names(n)
    with atlas.Atlas.create(str(out / "atlas")) as a:
        for i, name in enumerate(names):
            t = C.case_arrays("profile", i)["temperature"]
            a.add_xarray_dataset(xr.Dataset({"temperature": (("depth", "time"), t)}, coords=coords, attrs={"cast_id": i}), name)


def gen_bigstore(n, out):
    """A store of n datasets, each one (24,) float32 array: the metadata file is what
    grows (17 MB of JSON at 50,000), the case for costs that grow with the store."""
    import atlas
    a = atlas.Atlas.create(str(out / "atlas"))
    for i, name in enumerate(C.dataset_names(n)):
        d = a.create_dataset(name)
        d.define_array("x", "float32", ["t"], [24])
        d.write_array("x", [0], np.arange(24, dtype=np.float32) + i)
        if i % 5000 == 4999:
            a.flush()
    a.flush()


def gen_bigwrite(shape, out):
    """The array the large-write workload saves: uniform random float32 (4 GiB in the
    full profile), as a plain .npy written slab by slab; the bench loads it whole."""
    rng = np.random.default_rng(seed=0)
    a = np.lib.format.open_memmap(out / "data.npy", mode="w+", dtype=np.float32, shape=shape)
    slab = max(1, (64 << 20) // (shape[1] * 4))
    for r0 in range(0, shape[0], slab):
        a[r0:r0 + slab] = rng.random((min(slab, shape[0] - r0), shape[1]), dtype=np.float32)
    a.flush()
    del a


def generate(quick, name):
    out = C.workload_dir(quick, name)
    if C.is_complete(quick, name):
        print(f"gen: {name}: cached at {out.relative_to(C.ROOT)}", flush=True)
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    size = C.SIZES[C.profile_name(quick)][name]
    t = time.perf_counter()
    if name in C.CASES:
        gen_case(name, size, out)
    elif name == "large":
        gen_large(tuple(size), out)
    elif name == "listing":
        gen_listing(size, out)
    elif name == "writes":
        gen_writes(size, out)
    elif name == "zarrview":
        gen_zarrview(size, out)
    elif name == "bigstore":
        gen_bigstore(size, out)
    elif name == "bigwrite":
        gen_bigwrite(tuple(size), out)
    elif name == "latency":
        gen_listing(size, out)  # the same shape: n datasets of one small array, and the tree
    elif name == "remote":
        import remote
        remote.gen(quick, out)
    (out / ".gen_seconds").write_text(f"{time.perf_counter() - t:.1f}\n")  # reported in the document
    (out / ".complete").write_text(C.marker_text(quick, name))
    print(f"gen: {name}: written in {time.perf_counter() - t:.1f} s ({C.dir_bytes(out) / 2**20:.0f} MiB)", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", action="append", default=[])
    args, _ = ap.parse_known_args()  # run.sh passes bench.py's options too
    only = [w for o in args.only for w in o.split(",") if w] or list(C.WORKLOADS)
    bad = [w for w in only if w not in C.WORKLOADS]
    if bad:
        sys.exit(f"unknown workload {bad}; expected one of {', '.join(C.WORKLOADS)}")
    import atlas
    assert atlas.__version__ == "0.10.0", atlas.__version__
    for name in only:
        generate(args.quick, name)


if __name__ == "__main__":
    main()
