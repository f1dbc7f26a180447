"""Writes a store with atlas-python 0.10 and pickles what atlas-python reads back.

usage: mount_store.py full|small STORE ORACLE_PICKLE   (STORE: a path, or s3://bucket/prefix, see mount_common.source)

full:  every dtype (u8..u64, i8..i64, f32, f64, timestamp_nanoseconds, string),
       chunked with edge chunks and unchunked, 0-D, fill values with unwritten
       regions, four flushes (several layers), one deleted array, an empty dataset,
       dataset attributes.
small: a few arrays for the edit / semantics scenarios (two flushes).

The pickle is {"arrays": {ds: {array: ndarray}}, "meta": {ds: {...}}}.
"""

import sys

import numpy as np

import atlas
from mount_common import read_store, save_pickle, source, store_meta

mode, store, out = sys.argv[1:4]
assert atlas.__version__ == "0.10.0", atlas.__version__

INTS = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"]
DTYPES = INTS + ["float32", "float64", "timestamp_nanoseconds", "string"]
NP = {d: getattr(np, d) for d in INTS + ["float32", "float64"]}
NP["timestamp_nanoseconds"] = np.int64
POOL = ["", "a", "héllo wörld", "日本語テキスト", "emoji 🎉🚀", "x" * 40, "tab\tand\nnewline", "nul\x00inside", "Zebra"]


def gen(dtype, shape, salt):
    n = int(np.prod(shape)) if shape else 1
    i = np.arange(n, dtype=np.int64)
    if dtype == "string":
        v = np.empty(n, dtype=object)
        for k in range(n):
            v[k] = POOL[(k + salt) % len(POOL)] + (str(k) if (k + salt) % 3 == 0 else "")
        return v.reshape(shape)
    if dtype == "timestamp_nanoseconds":
        v = 1_700_000_000_000_000_000 + i * 1_000_000_007 + salt * 13
        if n > 2:
            v[1] = -(2 ** 63)  # NaT
            v[2] = -1
        return v.astype(np.int64).reshape(shape)
    t = np.dtype(NP[dtype])
    if t.kind == "f":
        v = ((i.astype(np.float64) - n / 2.0) * 0.375 + salt * 1.25).astype(t)
        specials = [np.nan, np.inf, -np.inf, -0.0, np.finfo(t).smallest_subnormal, np.finfo(t).max]
    else:
        info = np.iinfo(t)
        v = ((i * 7919 + salt * 104729) % (int(info.max) - int(info.min) + 1 if info.bits < 64 else 2 ** 62) + (int(info.min) if info.bits < 64 else 0)).astype(t)
        specials = [info.min, info.max, 0]
    for j, s in enumerate(specials):
        if j < n:
            v[(salt + 5 * j) % n] = s
    return v.reshape(shape)


a = atlas.Atlas.create(source(store))

if mode == "full":
    obs = a.create_dataset("obs")
    grid = a.create_dataset("grid")
    a.create_dataset("empty_ds")
    obs.set_attribute("station", "De Bilt")
    obs.set_attribute("count", 42)
    obs.set_attribute("ratio", 0.5)
    obs.set_attribute("flag", True)
    C_FILL = {"uint8": 200, "uint16": 65535, "uint32": 7, "uint64": 2 ** 64 - 1, "int8": -128, "int16": -1,
              "int32": -(2 ** 31), "int64": 2 ** 63 - 1, "float32": float("nan"), "float64": float("nan"),
              "timestamp_nanoseconds": -(2 ** 63), "string": "zz"}
    U_FILL = {"uint32": 3, "int64": -9, "float32": 1.5, "float64": 3, "timestamp_nanoseconds": 5}
    for dt in DTYPES:
        obs.define_array(f"c_{dt}", dt, ["row", "col"], [5, 7], chunk_shape=[2, 3], fill_value=C_FILL[dt])
        obs.define_array(f"u_{dt}", dt, ["t"], [6], fill_value=U_FILL.get(dt))
        obs.define_array(f"z_{dt}", dt, [], [])
    obs.define_array("z_unwritten", "int16", [], [], fill_value=11)
    obs.define_array("never_written", "float32", ["x"], [3], chunk_shape=[2], fill_value=float("nan"))
    obs.define_array("cube", "int32", ["a", "b", "c"], [3, 4, 5], chunk_shape=[2, 3, 4], fill_value=-1)
    obs.define_array("doomed", "int64", ["i"], [4], chunk_shape=[2])
    grid.define_array("temp", "float64", ["y", "x"], [300, 200], chunk_shape=[64, 64], fill_value=float("nan"))
    grid.define_array("times", "timestamp_nanoseconds", ["y", "x"], [9, 11], chunk_shape=[4, 4])
    grid.define_array("labels", "string", ["k"], [13], chunk_shape=[5])

    # flush 1: partial writes, leaving unwritten (fill) chunks
    for k, dt in enumerate(DTYPES):
        obs.write_array(f"c_{dt}", [0, 0], np.array(gen(dt, (3, 5), 1 + k)))
        obs.write_array(f"u_{dt}", [1], np.array(gen(dt, (4,), 2 + k)))
        if dt != "uint32":  # z_uint32 stays unwritten (fill)
            obs.write_array(f"z_{dt}", [], np.array(gen(dt, (), 3 + k)))
    obs.write_array("cube", [1, 1, 1], np.array(gen("int32", (2, 2, 3), 4)))
    obs.write_array("doomed", [0], np.arange(4, dtype=np.int64))
    grid.write_array("temp", [0, 0], np.array(gen("float64", (150, 130), 5)))
    grid.write_array("times", [0, 0], np.array(gen("timestamp_nanoseconds", (9, 11), 6)))
    grid.write_array("labels", [0], np.array(gen("string", (9,), 7)))
    a.flush()
    # flush 2: overlapping writes across chunk boundaries (a second layer)
    for k, dt in enumerate(DTYPES):
        obs.write_array(f"c_{dt}", [2, 4], np.array(gen(dt, (2, 2), 20 + k)))
        obs.write_array(f"u_{dt}", [0], np.array(gen(dt, (2,), 40 + k)))
    grid.write_array("temp", [100, 120], np.array(gen("float64", (120, 75), 8)))
    obs.set_attribute("count", 43)
    a.flush()
    # flush 3: a delete
    obs.delete_array("doomed")
    a.flush()
    # flush 4: the edge row of chunks, and the last string
    for k, dt in enumerate(DTYPES):
        obs.write_array(f"c_{dt}", [4, 0], np.array(gen(dt, (1, 7), 60 + k)))
    grid.write_array("temp", [299, 0], np.array(gen("float64", (1, 200), 9)))
    grid.write_array("labels", [12], np.array(gen("string", (1,), 10)))
    a.flush()
elif mode == "small":
    ds = a.create_dataset("ds")
    other = a.create_dataset("other")
    ds.set_attribute("station", "De Bilt")
    ds.set_attribute("count", 42)
    ds.set_attribute("ratio", 0.5)
    ds.set_attribute("flag", True)
    ds.define_array("grid", "int32", ["y", "x"], [50, 40], chunk_shape=[16, 16], fill_value=-5)
    ds.define_array("temp", "float64", ["t"], [1000], chunk_shape=[128], fill_value=float("nan"))
    ds.define_array("bytes", "uint8", ["i"], [77], chunk_shape=[10])
    ds.define_array("names", "string", ["i"], [4])
    ds.define_array("when", "timestamp_nanoseconds", ["i"], [5], chunk_shape=[2])
    other.define_array("o1", "int64", ["i"], [6], chunk_shape=[4])
    ds.write_array("grid", [0, 0], (np.arange(40 * 40, dtype=np.int32).reshape(40, 40) * 3 - 100))  # rows 40..49 stay fill
    ds.write_array("temp", [0], np.linspace(-50, 50, 600).astype(np.float64))  # 600.. stay NaN
    ds.write_array("bytes", [0], (np.arange(77) % 256).astype(np.uint8))
    ds.write_array("names", [0], np.array(["one", "twö", "", "четыре"], dtype=object))
    ds.write_array("when", [0], np.array([0, 1, -1, 1_700_000_000_000_000_000, 5], dtype=np.int64))
    other.write_array("o1", [0], np.arange(6, dtype=np.int64) * -11)
    a.flush()
    ds.write_array("grid", [10, 10], np.full((5, 30), 7, dtype=np.int32))
    a.flush()
else:
    raise SystemExit(f"unknown mode {mode}")
a.close()

arrays = read_store(store)
absent = [["obs", "doomed"]] if mode == "full" else []
save_pickle(out, {"arrays": arrays, "meta": store_meta(store), "absent": absent})
print(sum(len(v) for v in arrays.values()), "arrays")
