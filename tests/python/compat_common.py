"""Shared helpers for the atlas-python <-> atlasfs compatibility tests.

The expectations file (written by one side, checked by the other) is JSON:

    {
      "label": str,
      "meta_file": "atlas.json" | "atlas.msgpack.zst" | ...,
      "datasets": [name, ...]                 list_datasets(), insertion order
      "arrays":   [name, ...]                 list_arrays(), sorted
      "absent":   [[dataset, array], ...]     deleted arrays: read_array gives None
      "absent_datasets": [name, ...]          deleted datasets
      "data": {dataset: {
          "attributes": [[key, kind, value], ...]   in order; kind is one of
                                                    bool|int|float|string|timestamp
          "arrays": [name, ...]                     DatasetView.list_arrays() order
          "meta": {array: {
              "dtype": "uint8" | ... | "timestamp_nanoseconds" | "string",
              "shape": [...], "chunk_shape": [...], "dims": [...],
              "fill": null | {"kind": bool|int|uint|float|string|timestamp, "value": v},
              "stats": null | {"row_count", "null_count", "min", "max"},
              "values": [...]                       C order, flattened
          }}}}
    }

Encodings (exact and NaN-aware): float32 values are their u32 bit pattern,
float64 values, float attributes, float fills and float stats are f64 bit
patterns; timestamps are int64 nanoseconds; string stats are lists of bytes.
"""

import json
import struct
import sys
import types

import numpy as np

# `import atlas` also imports its xarray glue (atlas.xarray), which only registers
# the `ds.atlas` accessor and costs ~0.35 s of xarray imports per process. These
# tests use the core binding (atlas._atlas) only, so the glue is stubbed out.
sys.modules.setdefault("atlas.xarray", types.ModuleType("atlas.xarray"))

import atlas  # noqa: E402

INTS = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"]
FLOATS = ["float32", "float64"]
DTYPES = INTS + FLOATS + ["timestamp_nanoseconds", "string"]
NP = {
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "float32": np.float32, "float64": np.float64,
    "timestamp_nanoseconds": np.int64, "string": object,
}
NAT = -(2 ** 63)


def f64_bits(x):
    return struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def bits_f64(b):
    return struct.unpack("<d", struct.pack("<Q", int(b)))[0]


def is_nan_bits(b, width):
    if width == 32:
        return (b & 0x7F800000) == 0x7F800000 and (b & 0x007FFFFF) != 0
    return (b & 0x7FF0000000000000) == 0x7FF0000000000000 and (b & 0x000FFFFFFFFFFFFF) != 0


def fill_kind(dtype):
    if dtype.startswith("uint"):
        return "uint"
    if dtype.startswith("int"):
        return "int"
    if dtype in FLOATS:
        return "float"
    if dtype == "timestamp_nanoseconds":
        return "int"  # atlas-python 0.10 stores timestamp fills as FillValue::Int
    return "string"


# ---------------------------------------------------------------- encoding

def enc_values(dtype, arr):
    """A numpy array as read by atlas-python -> the flat JSON list."""
    a = np.ascontiguousarray(arr).reshape(-1)
    if dtype == "float32":
        return a.astype(np.float32).view(np.uint32).tolist()
    if dtype == "float64":
        return a.astype(np.float64).view(np.uint64).tolist()
    if dtype == "timestamp_nanoseconds":
        return a.view(np.int64).tolist() if a.dtype.kind == "M" else a.astype(np.int64).tolist()
    if dtype == "string":
        return [str(x) for x in a.tolist()]
    return [int(x) for x in a.tolist()]


def dec_values(dtype, vals, shape):
    """The flat JSON list -> a numpy array (the inverse of enc_values)."""
    if dtype == "float32":
        a = np.array(vals, dtype=np.uint32).view(np.float32)
    elif dtype == "float64":
        a = np.array(vals, dtype=np.uint64).view(np.float64)
    elif dtype == "string":
        a = np.empty(len(vals), dtype=object)
        a[:] = vals
    else:
        a = np.array(vals, dtype=NP[dtype])
    return a.reshape(shape)


def enc_stat(dtype, v):
    if v is None:
        return None
    if dtype in FLOATS:
        return f64_bits(v)
    if dtype == "string":
        return [int(b) for b in v]
    return int(v)


def enc_stats(dtype, st):
    if st is None:
        return None
    return {"row_count": int(st["row_count"]), "null_count": int(st["null_count"]),
            "min": enc_stat(dtype, st["min"]), "max": enc_stat(dtype, st["max"])}


def enc_fill(dtype, fv):
    if fv is None:
        return None
    kind = fill_kind(dtype)
    if kind == "float":
        return {"kind": kind, "value": f64_bits(fv)}
    if kind == "string":
        return {"kind": kind, "value": str(fv)}
    return {"kind": kind, "value": int(fv)}


def enc_attr(kind, v):
    if kind == "float":
        return f64_bits(v)
    if kind in ("int", "timestamp"):
        return int(v)
    return v


def attr_kind_of(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    return "string"


# ---------------------------------------------------------------- comparing

def same_value(dtype, a, b):
    """Equality of two encoded values; floats NaN-aware."""
    if dtype == "float32":
        return a == b or (is_nan_bits(a, 32) and is_nan_bits(b, 32))
    if dtype == "float64":
        return a == b or (is_nan_bits(a, 64) and is_nan_bits(b, 64))
    return a == b


def same_f64(a, b):
    return a == b or (is_nan_bits(a, 64) and is_nan_bits(b, 64))


def diff_values(dtype, want, got, shape, limit=6):
    """A list of mismatch descriptions between two flat encoded value lists."""
    if len(want) != len(got):
        return [f"{len(want)} values expected, {len(got)} read"]
    out = []
    for i, (w, g) in enumerate(zip(want, got)):
        if not same_value(dtype, w, g):
            idx = tuple(int(x) for x in np.unravel_index(i, shape)) if shape else ()
            out.append(f"at {idx}: expected {show(dtype, w)}, read {show(dtype, g)}")
            if len(out) >= limit:
                out.append("...")
                break
    return out


def show(dtype, v):
    if dtype == "float32":
        return repr(float(np.array([v], dtype=np.uint32).view(np.float32)[0]))
    if dtype == "float64":
        return repr(bits_f64(v))
    return repr(v)


def model_equal(dtype, want, got):
    """NaN-aware equality of two numpy arrays (values only)."""
    return not diff_values(dtype, enc_values(dtype, want), enc_values(dtype, got), want.shape)


# ---------------------------------------------------------------- dump / check

def dump_store(path, attr_kinds, label):
    """Reads a whole store with a fresh atlas-python handle into the expectations format.

    attr_kinds maps (dataset, key) to the attribute's on-disk kind; atlas-python
    returns timestamps as plain ints, so the kind comes from whoever wrote them.
    """
    a = atlas.Atlas.open(str(path))
    out = {"label": label, "datasets": a.list_datasets(), "arrays": a.list_arrays(), "data": {}}
    for ds in a.list_datasets():
        v = a.open_dataset(ds)
        attrs = []
        for k, val in v.attributes().items():
            kind = attr_kinds.get((ds, k)) or attr_kind_of(val)
            attrs.append([k, kind, enc_attr(kind, val)])
        meta = {}
        for name in v.list_arrays():
            m = v.array_meta(name)
            dt = m["dtype"]
            data = v.read_array(name)
            assert data is not None, f"{ds}/{name}: read_array gave None"
            assert list(data.shape) == list(m["shape"]), f"{ds}/{name}: read shape {data.shape} vs meta {m['shape']}"
            meta[name] = {
                "dtype": dt, "shape": list(m["shape"]), "chunk_shape": list(m["chunk_shape"]),
                "dims": list(m["dimension_names"]),
                "fill": enc_fill(dt, v.array_fill_value(name)),
                "stats": enc_stats(dt, v.array_stats(name)),
                "values": enc_values(dt, data),
            }
        out["data"][ds] = {"attributes": attrs, "arrays": v.list_arrays(), "meta": meta}
    return out


def check_store(path, exp):
    """Opens `path` with atlas-python and compares everything with `exp`; returns errors."""
    label = exp.get("label", str(path))
    errs = []

    def err(msg):
        errs.append(f"[{label}] {msg}")

    a = atlas.Atlas.open(str(path))
    if a.list_datasets() != exp["datasets"]:
        err(f"list_datasets: expected {exp['datasets']}, atlas-python read {a.list_datasets()}")
    if sorted(a.list_arrays()) != sorted(exp["arrays"]):
        err(f"list_arrays: expected {exp['arrays']}, atlas-python read {a.list_arrays()}")
    for ds in exp.get("absent_datasets", []):
        if a.dataset_exists(ds):
            err(f"deleted dataset {ds} still exists")
    for ds, name in exp.get("absent", []):
        if a.dataset_exists(ds) and a.open_dataset(ds).read_array(name) is not None:
            err(f"{ds}/{name}: deleted array still readable")
    for ds, dexp in exp["data"].items():
        if not a.dataset_exists(ds):
            err(f"dataset {ds} missing")
            continue
        v = a.open_dataset(ds)
        got_attrs = v.attributes()
        if list(got_attrs.keys()) != [k for k, _, _ in dexp["attributes"]]:
            err(f"{ds}: attribute keys {list(got_attrs.keys())}, expected {[k for k, _, _ in dexp['attributes']]}")
        for k, kind, want in dexp["attributes"]:
            if k not in got_attrs:
                continue
            g = got_attrs[k]
            pk = attr_kind_of(g)
            want_pk = {"timestamp": "int"}.get(kind, kind)
            if pk != want_pk:
                err(f"{ds}: attribute {k}: expected a {kind} ({want!r}), atlas-python read {type(g).__name__} {g!r}")
            elif kind == "float":
                if not same_f64(want, f64_bits(g)):
                    err(f"{ds}: attribute {k}: expected {bits_f64(want)!r}, read {g!r}")
            elif g != want:
                err(f"{ds}: attribute {k}: expected {want!r}, read {g!r}")
        if v.list_arrays() != dexp["arrays"]:
            err(f"{ds}: list_arrays {v.list_arrays()}, expected {dexp['arrays']}")
        for name, aexp in dexp["meta"].items():
            where = f"{ds}/{name}"
            dt = aexp["dtype"]
            m = v.array_meta(name)
            if m is None:
                err(f"{where}: array_meta is None")
                continue
            got_m = {"dtype": m["dtype"], "shape": list(m["shape"]), "chunk_shape": list(m["chunk_shape"]), "dims": list(m["dimension_names"])}
            want_m = {k: aexp[k] for k in ("dtype", "shape", "chunk_shape", "dims")}
            if got_m != want_m:
                err(f"{where}: array_meta {got_m}, expected {want_m}")
                continue
            # fill value: numeric value and Python type
            fv = v.array_fill_value(name)
            fexp = aexp["fill"]
            if fexp is None:
                if fv is not None:
                    err(f"{where}: fill value {fv!r}, expected none")
            elif fv is None:
                err(f"{where}: fill value missing, expected {fexp}")
            elif fexp["kind"] == "float" or isinstance(fv, float):
                want_f = bits_f64(fexp["value"]) if fexp["kind"] == "float" else float(fexp["value"])
                if not (isinstance(fv, (int, float)) and same_f64(f64_bits(want_f), f64_bits(fv))):
                    err(f"{where}: fill value {fv!r}, expected {want_f!r}")
            elif fv != fexp["value"] or isinstance(fv, bool) != (fexp["kind"] == "bool"):
                err(f"{where}: fill value {fv!r}, expected {fexp['value']!r} ({fexp['kind']})")
            # values
            data = v.read_array(name)
            if data is None:
                err(f"{where}: read_array gave None")
                continue
            want_np = {"string": "O", "timestamp_nanoseconds": "M"}.get(dt)
            if want_np is not None and data.dtype.kind != want_np:
                err(f"{where}: numpy dtype {data.dtype}, expected kind {want_np}")
            elif want_np is None and data.dtype != np.dtype(NP[dt]):
                err(f"{where}: numpy dtype {data.dtype}, expected {np.dtype(NP[dt])}")
            if list(data.shape) != aexp["shape"]:
                err(f"{where}: read shape {list(data.shape)}, expected {aexp['shape']}")
                continue
            for d in diff_values(dt, aexp["values"], enc_values(dt, data), tuple(aexp["shape"])):
                err(f"{where}: {d}")
            # a partial, over-sized read (clamped), as the Rust side also does
            if aexp["shape"]:
                start = [s // 3 for s in aexp["shape"]]
                part = v.read_array(name, start, aexp["shape"])
                full = dec_values(dt, aexp["values"], aexp["shape"])
                want_part = full[tuple(slice(s, None) for s in start)]
                for d in diff_values(dt, enc_values(dt, want_part), enc_values(dt, part), want_part.shape):
                    err(f"{where} from {start}: {d}")
            # stats
            got_st = enc_stats(dt, v.array_stats(name))
            want_st = aexp["stats"]
            if (got_st is None) != (want_st is None):
                err(f"{where}: stats {got_st}, expected {want_st}")
            elif want_st is not None:
                ok = got_st["row_count"] == want_st["row_count"] and got_st["null_count"] == want_st["null_count"]
                for k in ("min", "max"):
                    w, g = want_st[k], got_st[k]
                    if (w is None) != (g is None):
                        ok = False
                    elif w is not None:
                        ok = ok and (same_f64(w, g) if dt in FLOATS else w == g)
                if not ok:
                    err(f"{where}: stats {got_st}, expected {want_st}")
    return errs


def fail_if(errs, what):
    if errs:
        msg = f"{what}: {len(errs)} mismatch(es) between atlasfs and atlas-python 0.10:\n  " + "\n  ".join(errs[:60])
        if len(errs) > 60:
            msg += f"\n  ... and {len(errs) - 60} more"
        raise SystemExit(msg)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, allow_nan=False)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------- data and model

STRING_POOL = ["", "a", "héllo wörld", "日本語テキスト", "emoji 🎉🚀", "x" * 40, "tab\tand\nnewline", "nul\x00inside", "zz", "Zebra"]


def gen(dtype, shape, salt):
    """Deterministic test data of `shape` with edge values mixed in."""
    shape = tuple(shape)
    n = int(np.prod(shape)) if shape else 1
    i = np.arange(n, dtype=np.uint64)
    if dtype in INTS:
        t = np.dtype(NP[dtype])
        with np.errstate(over="ignore"):
            raw = i * np.uint64(0x9E3779B97F4A7C15) + np.uint64((salt * 0x2545F491 + 1) & 0xFFFFFFFF)
            raw ^= raw >> np.uint64(29)
        vals = raw.astype(t)
        info = np.iinfo(t)
        specials = [info.min, info.max, 0, 1]
    elif dtype in FLOATS:
        t = np.dtype(NP[dtype])
        vals = ((i.astype(np.float64) - n / 2.0) * 0.375 + salt * 1.25).astype(t)
        tiny = np.finfo(t).smallest_subnormal
        specials = [-0.0, np.inf, -np.inf, np.nan, tiny, np.finfo(t).max, 0.1]
    elif dtype == "timestamp_nanoseconds":
        vals = (np.int64(1_700_000_000_000_000_000) + i.astype(np.int64) * np.int64(1_000_000_007) + np.int64(salt * 13)).astype(np.int64)
        specials = [-1, 2 ** 63 - 1, 0, -1_500_000_000]
    else:
        vals = np.empty(n, dtype=object)
        for k in range(n):
            s = STRING_POOL[(k + salt) % len(STRING_POOL)]
            vals[k] = s + (str(k) if (k + salt) % 3 == 0 else "")
        specials = []
    for j, s in enumerate(specials):
        pos = (salt + j * 5) % n
        if j < n:
            vals[pos] = s
    return vals.reshape(shape)


class Model:
    """What every array should hold, kept beside the store as it is written."""

    def __init__(self):
        self.arrays = {}  # (ds, name) -> [dtype, numpy data]
        self.order = {}  # ds -> [array names]

    def define(self, view, name, dtype, dims, shape, chunk=None, fill=None):
        view.define_array(name, dtype, dims, shape, chunk_shape=chunk, fill_value=fill)
        t = NP[dtype]
        if dtype == "string":
            data = np.empty(shape, dtype=object)
            data[...] = ""  # string fills are ignored on read
        else:
            data = np.full(shape, fill if fill is not None else 0, dtype=t)
        self.arrays[(view.name, name)] = [dtype, data]
        self.order.setdefault(view.name, []).append(name)

    def write(self, view, name, start, data):
        dtype, model = self.arrays[(view.name, name)]
        if dtype == "string":
            data = np.asarray(data, dtype=object)
        view.write_array(name, list(start), np.array(data, order="C", copy=True))  # ascontiguousarray would make 0-D 1-D
        if model.ndim == 0:
            model[()] = data[()] if isinstance(data, np.ndarray) else data
        else:
            model[tuple(slice(s, s + n) for s, n in zip(start, data.shape))] = data

    def delete_array(self, view, name):
        view.delete_array(name)
        del self.arrays[(view.name, name)]
        self.order[view.name].remove(name)

    def delete_dataset(self, a, ds):
        a.delete_dataset(ds)
        for k in [k for k in self.arrays if k[0] == ds]:
            del self.arrays[k]
        self.order.pop(ds, None)

    def verify(self, path, what):
        """Reads every modelled array with a fresh handle; the peer must agree with the model."""
        a = atlas.Atlas.open(str(path))
        errs = []
        for (ds, name), (dtype, want) in self.arrays.items():
            got = a.open_dataset(ds).read_array(name)
            if got is None:
                errs.append(f"{ds}/{name}: read None")
                continue
            for d in diff_values(dtype, enc_values(dtype, want), enc_values(dtype, got), want.shape):
                errs.append(f"{ds}/{name}: {d}")
        for ds, names in self.order.items():
            got = a.open_dataset(ds).list_arrays()
            if got != names:
                errs.append(f"{ds}: list_arrays {got}, expected {names}")
        fail_if(errs, what)


def meta_file_name(fmt, comp):
    return "atlas." + ("msgpack" if fmt == "msgpack" else "json") + {"none": "", "zstd": ".zst", "lz4": ".lz4"}[comp]
