"""The zarr v3 view (.atlasfs/zarr/) against atlas-python 0.10's xarray mapping.

usage:
  zarr_check.py write STORE            atlas-python writes the store (xarray + plain API)
  zarr_check.py check STORE MOUNT      compares the view with atlas-python, reads it
                                       with tensorstore, checks EROFS and freshness
  zarr_check.py many STORE N           N small datasets for the laziness check
  zarr_check.py lazy STORE MOUNT N     opens _stacked of N datasets, prints stats deltas
  zarr_check.py refresh STORE MOUNT N  another writer adds a dataset; the view shows it

The oracle is `Atlas.open_as_xarray_dataset` / `open_as_many_xarray_dataset`; the view
is opened as docs/zarr.md recommends: `xr.open_zarr(path, mask_and_scale=False)`.
"""

import errno
import json
import os
import sys

import numpy as np
import pandas as pd
import xarray as xr

try:
    import atlas
    import tensorstore as ts
    import zarr
    import dask  # noqa: F401
except ImportError as e:  # a missing peer is a failure, not a skip
    sys.exit(f"{e}: install zarr>=3, xarray, dask and tensorstore with scripts/setup-test-env.sh")

assert int(zarr.__version__.split(".")[0]) >= 3, zarr.__version__
NAT = -(2 ** 63)
INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
# Explicit fills, some at the type's edge; float/timestamp/string use the defaults
# (NaN, NaT, "") in one dataset and explicit ones in another.
FILLS = {"int8": -128, "int16": -1, "int32": 7, "int64": 2 ** 63 - 1, "uint8": 200,
         "uint16": 65535, "uint32": 3, "uint64": 2 ** 64 - 1, "float32": 1.5, "float64": -2.25,
         "timestamp_nanoseconds": 5, "string": ""}


def open_view(mp, name):
    return xr.open_zarr(os.path.join(mp, ".atlasfs", "zarr", name), mask_and_scale=False)


def xr_dataset(seed, nt=5):
    rng = np.random.default_rng(seed)
    time = pd.date_range("2020-01-01", periods=nt, freq="D").values.astype("datetime64[ns]")
    when = time.copy()
    when[1] = np.datetime64("NaT")
    temp = rng.random((nt, 7)).astype("float32")
    temp[0, 0] = np.nan
    return xr.Dataset(
        {
            "temp": (("time", "x"), temp, {"units": "K", "valid_range": [0.0, 1.0], "scale": 1.5, "ok": True, "meta": {"a": [1, 2]}}),
            "count": (("time", "x"), rng.integers(0, 100, (nt, 7)).astype("int32"), {"_FillValue": np.int32(-1)}),
            "wide": (("time", "x"), rng.integers(0, 2 ** 40, (nt, 7)).astype("uint64")),
            "when": (("time",), when),
            "scalar": ((), np.float64(3.5)),
            "byte": (("x",), np.arange(7, dtype="int8")),
        },
        # Strings as a (non-dimension) coordinate: atlas-python's open_as_many cannot
        # stack string data variables (read_array_across_stacked has no String).
        coords={"time": time, "x": np.arange(7, dtype="int64"), "station": (("x",), np.array(["a", "bé", "", "ddd", "e", "f", "g"], dtype=object))},
        attrs={"title": "xarray-written", "n": 3, "pi": 3.14159, "flag": False, "nan": float("nan"),
               "list": [1, 2, 3], "nested": {"k": "v"}, "empty": ""},
    )


def write(store):
    # msgpack metadata: JSON metadata cannot hold the NaN attribute (0.10's D7).
    a = atlas.Atlas.create(store, meta_format="msgpack")
    # Through add_xarray_dataset: chunked (edge chunks) and unchunked variables.
    chunks = {"temp": [2, 3], "count": [2, 4], "wide": [5, 7], "station": [3], "when": [2], "x": [4]}
    for i, name in enumerate(["xa", "xb", "xc"]):
        a.add_xarray_dataset(xr_dataset(i), name, chunks=chunks)
    # Same variables, another shape: left out of _stacked.
    a.add_xarray_dataset(xr_dataset(9, nt=3), "xshort", chunks=chunks)
    # Through the plain API: every dtype, chunked, unchunked and 0-D, explicit and
    # default fills, partly written (unwritten chunks read as the fill), attributes
    # of every kind, no `_pyatlas_coords` (coordinates by the 1-D-named-like-its-dim rule).
    v = a.create_dataset("plain")
    v.set_attribute("b", True)
    v.set_attribute("i", -7)
    v.set_attribute("big", 2 ** 63 - 1)
    v.set_attribute("f", 0.1)
    v.set_attribute("s", "KNMI — station ü")
    v.set_attribute("t", 1_700_000_000_123_456_789, dtype="timestamp_ns")
    v.set_attribute("j", 'json:{"x": [1, 2.5, null]}')
    v.set_attribute("int8_c.long_name", "per-variable attribute")
    v.define_array("x", dtype="int64", dims=["x"], shape=[10])
    v.write_array("x", start=[0], data=np.arange(10, dtype="int64") * 10)
    rng = np.random.default_rng(5)
    for dt in INTS + ["float32", "float64", "timestamp_nanoseconds", "string"]:
        short = {"timestamp_nanoseconds": "ts"}.get(dt, dt)
        if dt == "string":
            data = np.array([f"s{k}" * (k % 3) for k in range(60)], dtype=object).reshape(6, 10)
        elif dt == "timestamp_nanoseconds":
            data = rng.integers(0, 2 ** 62, (6, 10)).astype("int64")
        elif dt.startswith("float"):
            data = rng.standard_normal((6, 10)).astype(dt)
        else:
            info = np.iinfo(dt)
            data = rng.integers(info.min, info.max, (6, 10), dtype=dt, endpoint=True)
        # chunked 4x4 (edge chunks 2x2), written on rows 0..3 only: chunks c/1/* absent
        v.define_array(f"{short}_c", dtype=dt, dims=["y", "x"], shape=[6, 10], chunk_shape=[4, 4], fill_value=FILLS[dt])
        v.write_array(f"{short}_c", start=[0, 0], data=data[:4])
        # unchunked, default fill
        v.define_array(f"{short}_u", dtype=dt, dims=["y", "x"], shape=[6, 10])
        v.write_array(f"{short}_u", start=[0, 0], data=data)
        # 0-D
        v.define_array(f"{short}_0", dtype=dt, dims=[], shape=[])
        v.write_array(f"{short}_0", start=[], data=np.array(data[0, 0], dtype=data.dtype) if dt != "string" else np.array("zero", dtype=object))
    # A string fill other than "": the one attribute the view cannot carry.
    v.define_array("str_fill", dtype="string", dims=["x"], shape=[10], chunk_shape=[4], fill_value="zz")
    v.write_array("str_fill", start=[0], data=np.array(list("abcd"), dtype=object))
    # Defined, never written: every chunk absent, every cell the fill.
    v.define_array("ghost", dtype="float64", dims=["y", "x"], shape=[6, 10], chunk_shape=[3, 5], fill_value=-9.0)
    a.flush()


def same(got, want):
    got, want = np.asarray(got), np.asarray(want)
    if want.dtype.kind == "O":
        return got.shape == want.shape and [str(x) for x in got.ravel()] == [str(x) for x in want.ravel()]
    if want.dtype.kind == "M" or got.dtype.kind == "M":  # NaT != NaT: compare the int64 nanoseconds
        got, want = got.astype("datetime64[ns]").view("int64"), want.astype("datetime64[ns]").view("int64")
    return np.array_equal(got.astype(want.dtype), want, equal_nan=want.dtype.kind == "f")


def check_identical(got, want, what):
    try:
        xr.testing.assert_identical(got, want)
    except AssertionError as e:
        raise AssertionError(f"{what}: the view differs from atlas-python:\n{e}") from None


def check(store, mp):
    a = atlas.Atlas.open(store)
    names = a.list_datasets()
    zroot = os.path.join(mp, ".atlasfs", "zarr")
    assert sorted(os.listdir(zroot)) == sorted(["_stacked", *names]), os.listdir(zroot)
    # 1. every dataset: identical to open_as_xarray_dataset
    for n in names:
        want = a.open_as_xarray_dataset(n)
        if n == "plain":
            # The pinned difference: xarray's zarr reader cannot decode a `_FillValue`
            # of a string variable, so the view leaves it out; all else is identical.
            assert want["str_fill"].attrs == {"_FillValue": "zz"}, want["str_fill"].attrs
            want["str_fill"].attrs = {}
            got = open_view(mp, n)
            assert got["str_fill"].attrs == {} and list(got["str_fill"].values) == list("abcd") + [""] * 6
        check_identical(open_view(mp, n), want, n)
    print(f"identical: {len(names)} datasets")

    # 2. _stacked: identical to open_as_many_xarray_dataset(the included names); the
    #    datasets left out are named in one attribute, the only difference.
    st = open_view(mp, "_stacked")
    excluded = st.attrs["atlasfs_excluded_datasets"]
    assert excluded == ["xshort", "plain"], excluded
    included = [n for n in names if n not in excluded]
    assert list(st["dataset"].values) == included
    want = a.open_as_many_xarray_dataset(included, concat_dim="dataset")
    check_identical(st.drop_attrs(deep=False).assign_attrs({k: v for k, v in st.attrs.items() if k != "atlasfs_excluded_datasets"}), want, "_stacked")
    assert set(st.data_vars) == set(want.data_vars) and st["temp"].dims == ("dataset", "time", "x")
    print(f"stacked identical over {len(included)} datasets, excluded {excluded}")

    # 3. the view as zarr: chunk keys, absent chunks, edge padding, 0-D, dtypes
    pz = os.path.join(zroot, "plain")
    assert not os.path.exists(os.path.join(pz, "int8_c", "c", "1", "0")), "an unwritten chunk must be absent"
    assert os.path.exists(os.path.join(pz, "int8_c", "c", "0", "2"))
    assert os.path.getsize(os.path.join(pz, "int8_c", "c", "0", "2")) == 16, "edge chunks are full chunk shape"
    assert os.path.exists(os.path.join(pz, "int8_0", "c"))
    assert not os.path.exists(os.path.join(pz, "ghost", "c", "0", "0"))
    assert sorted(os.listdir(os.path.join(pz, "int8_c", "c", "0"))) == ["0", "1", "2"]
    assert os.listdir(os.path.join(pz, "ghost", "c", "0")) == []
    g = zarr.open_group(pz, mode="r")
    meta = json.load(open(os.path.join(pz, "zarr.json")))
    assert meta["consolidated_metadata"]["metadata"]["int8_c"]["data_type"] == "int8"
    view = a.open_dataset("plain")
    for name in view.list_arrays():
        want = view.read_array(name)
        got = g[name][...]
        if view.array_meta(name)["dtype"] == "timestamp_nanoseconds":
            got = got.view("int64")
        assert same(got, want), name
        assert list(g[name].chunks) == [max(1, c) for c in view.array_meta(name)["chunk_shape"]], name
    ds = open_view(mp, "plain")
    assert ds["ts_c"].dtype == np.dtype("datetime64[ns]") and ds["string_c"].dtype.kind in "OTU"
    assert ds["int8_c"].attrs["long_name"] == "per-variable attribute"
    assert ds.attrs["j"] == {"x": [1, 2.5, None]} and ds.attrs["t"] == 1_700_000_000_123_456_789
    print(f"zarr-python: {len(view.list_arrays())} arrays of plain equal")

    # 4. a second implementation: tensorstore (its zarr3 driver) reads the numeric arrays
    checked = strings = 0
    for n in ["plain", "xa"]:
        v = a.open_dataset(n)
        for name in v.list_arrays():
            dt = v.array_meta(name)["dtype"]
            spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": os.path.join(zroot, n, name) + "/"}}
            if dt == "string":
                # tensorstore's zarr3 driver has no string data type (docs/zarr.md,
                # "Readers checked"): it refuses the array; zarr-python reads it.
                try:
                    ts.open(spec, read=True).result()
                except ValueError as e:
                    assert "string data type is not one of the supported" in str(e), e
                else:
                    raise AssertionError(f"tensorstore opened the string array {n}/{name}: update docs/zarr.md")
                assert same(zarr.open_array(os.path.join(zroot, n, name), mode="r")[...], v.read_array(name)), (n, name)
                strings += 1
                continue
            t = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": os.path.join(zroot, n, name) + "/"}}, read=True).result()
            got = t.read().result()
            want = v.read_array(name)
            assert same(got, want), (n, name)
            checked += 1
    t = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": os.path.join(zroot, "_stacked", "temp") + "/"}}, read=True).result()
    assert same(t.read().result(), a.read_array_across_stacked("temp", included))
    assert strings >= 4, strings
    print(f"tensorstore: {checked + 1} arrays equal; {strings} string arrays refused (zarr-python reads them)")

    # 5. read-only: every write under the view is EROFS
    def erofs(f, *args):
        try:
            f(*args)
        except OSError as e:
            assert e.errno == errno.EROFS, (f, args, e)
            return
        raise AssertionError(f"{f.__name__}{args} succeeded under the zarr view")
    erofs(lambda p: open(p, "r+b"), os.path.join(pz, "zarr.json"))
    erofs(lambda p: open(p, "wb"), os.path.join(pz, "new.json"))
    erofs(os.mkdir, os.path.join(pz, "newdir"))
    erofs(os.unlink, os.path.join(pz, "int8_0", "c"))
    erofs(os.rmdir, os.path.join(pz, "ghost"))
    erofs(os.rename, os.path.join(pz, "zarr.json"), os.path.join(pz, "z2.json"))
    erofs(os.truncate, os.path.join(pz, "zarr.json"), 0)
    erofs(os.mkdir, os.path.join(zroot, "newgroup"))
    print("EROFS for writes")

    # 6. a change through the mount shows in the view at the next read of zarr.json
    before = open_view(mp, "xa")
    np.save(os.path.join(mp, "xa", "extra.npy"), np.arange(4, dtype="float64"))
    np.save(os.path.join(mp, "xa", "byte.npy"), np.full(7, 9, dtype="int8"))
    meta = json.load(open(os.path.join(zroot, "xa", "zarr.json")))
    assert "extra" in meta["consolidated_metadata"]["metadata"], "new array missing from the view"
    after = open_view(mp, "xa")
    assert "extra" not in before and list(after["extra"].values) == [0, 1, 2, 3]
    assert (after["byte"].values == 9).all(), after["byte"].values
    print("changes through the mount show in the view")


# 50 kB chunks: a `_stacked` chunk spans 83 datasets (~4 MiB, STACK_CHUNK_BYTES in
# src/fs/zarr.rs), so 100 datasets make two chunks along `dataset`, the last partial.
V_SHAPE, V_CHUNK = [50, 500], [25, 500]
STACK_CHUNK_BYTES = 4 << 20


def many(store, n):
    a = atlas.Atlas.create(store)
    t = np.arange(50, dtype="int64")
    for i in range(n):
        v = a.create_dataset(f"d{i:04d}")
        v.define_array("t", dtype="int64", dims=["t"], shape=[50])
        v.write_array("t", start=[0], data=t)
        v.define_array("v", dtype="float32", dims=["t", "z"], shape=V_SHAPE, chunk_shape=V_CHUNK)
        v.write_array("v", start=[0, 0], data=np.full(V_SHAPE, i, dtype="float32"))
        v.set_attribute("_pyatlas_coords", '["t"]')
    a.flush()


def stats(mp):
    return json.load(open(os.path.join(mp, ".atlasfs", "stats")))


def lazy(store, mp, n):
    s0 = stats(mp)
    st = open_view(mp, "_stacked")
    s1 = stats(mp)
    k = min(n, STACK_CHUNK_BYTES // (np.prod(V_CHUNK) * 4))
    assert st["v"].shape == (n, *V_SHAPE), st["v"].shape
    assert st["v"].chunks[0] == (k,) * (n // k) + ((n % k,) if n % k else ()), (k, st["v"].chunks[0])
    # Opening reads zarr.json (consolidated), the `dataset` names and the index
    # coordinate `t` xarray loads eagerly: a few reads, one block, whatever n is.
    reads = s1["reads"] - s0["reads"] - 1  # minus the read of stats itself
    misses = s1["cache"]["misses"] - s0["cache"]["misses"]
    assert reads <= 8 and misses <= 1, f"opening _stacked of {n} datasets: {reads} reads, {misses} block loads"
    mean = float(st["v"].mean().compute())
    s2 = stats(mp)
    assert abs(mean - (n - 1) / 2) < 1e-6, mean
    assert s2["cache"]["misses"] - s1["cache"]["misses"] >= 1
    print(f"open _stacked of {n}: {reads} FUSE reads, {misses} block loads; mean: {s2['reads'] - s1['reads']} reads")


def refresh(store, mp, n):
    """Another writer (atlas-python, on the store itself) adds a dataset; the mount,
    started with --metadata-ttl, shows it in the view once it has refreshed."""
    import time
    a = atlas.Atlas.open(store)
    v = a.create_dataset("zz_new")
    v.define_array("t", dtype="int64", dims=["t"], shape=[50])
    v.write_array("t", start=[0], data=np.arange(50, dtype="int64"))
    v.define_array("v", dtype="float32", dims=["t", "z"], shape=V_SHAPE, chunk_shape=V_CHUNK)
    v.write_array("v", start=[0, 0], data=np.full(V_SHAPE, -1, dtype="float32"))
    v.set_attribute("_pyatlas_coords", '["t"]')
    a.flush()
    deadline = time.monotonic() + 60  # a bound on the wait, not a speed check
    while not os.path.exists(os.path.join(mp, ".atlasfs", "zarr", "zz_new", "zarr.json")):
        assert time.monotonic() < deadline, "the new dataset never showed in the zarr view"
        time.sleep(0.2)
    st = open_view(mp, "_stacked")
    assert st.sizes["dataset"] == n + 1 and str(st["dataset"].values[-1]) == "zz_new", st["dataset"].values
    assert float(st["v"].sel(dataset="zz_new").mean()) == -1.0
    print("another writer's dataset shows in the view after --metadata-ttl")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "write":
        write(sys.argv[2])
    elif cmd == "check":
        check(sys.argv[2], sys.argv[3])
    elif cmd == "many":
        many(sys.argv[2], int(sys.argv[3]))
    elif cmd == "lazy":
        lazy(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "refresh":
        refresh(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)
