"""Shared helpers for the real-mount tests (tests/mount.rs).

The oracle is atlas-python 0.10: what its read_array returns is what every
MOUNT/<dataset>/<array>.npy must hold. Comparisons are exact: floats by bit
pattern (so NaN payloads and -0.0 count), timestamps as int64 nanoseconds
(the mount must show them as datetime64[ns]), strings as Python str (the mount
shows them as a <U array, atlas-python as an object array).
"""

import os
import pickle

import numpy as np


def kind_of(a):
    """'string', 'timestamp', 'float', or 'plain' for a numpy array."""
    a = np.asarray(a)
    if a.dtype.kind in "OUS":
        return "string"
    if a.dtype.kind == "M":
        return "timestamp"
    if a.dtype.kind == "f":
        return "float"
    return "plain"


def diff(where, want, got, got_dtype=None, strings="U"):
    """Exact comparison of the oracle `want` with `got` (read through the mount).

    `got_dtype` is the dtype the mount must show (default: want's own dtype, with
    timestamps as datetime64[ns] and strings as any <U; `strings="O"` for what
    atlas-python reads). Returns error strings.
    """
    want = np.asarray(want)
    got = np.asarray(got)
    errs = []
    if tuple(got.shape) != tuple(want.shape):
        return [f"{where}: shape {got.shape}, expected {want.shape}"]
    k = kind_of(want)
    if k == "string":
        if got.dtype.kind != strings:
            return [f"{where}: dtype {got.dtype}, expected a {'<U' if strings == 'U' else 'object'} string array"]
        w = [str(x) for x in want.reshape(-1).tolist()]
        g = [str(x) for x in got.reshape(-1).tolist()]
        bad = [i for i, (x, y) in enumerate(zip(w, g)) if x != y]
        if bad:
            errs.append(f"{where}: {len(bad)} strings differ, first at flat {bad[0]}: expected {w[bad[0]]!r}, read {g[bad[0]]!r}")
        return errs
    if k == "timestamp":
        if got.dtype != np.dtype("<M8[ns]") and got.dtype != np.dtype("M8[ns]"):
            return [f"{where}: dtype {got.dtype}, expected datetime64[ns]"]
        w, g = want.view(np.int64).reshape(-1), got.view(np.int64).reshape(-1)
    else:
        expect = np.dtype(got_dtype) if got_dtype is not None else want.dtype
        if got.dtype != expect:
            return [f"{where}: dtype {got.dtype}, expected {expect}"]
        if k == "float":
            bits = {4: np.uint32, 8: np.uint64}[want.dtype.itemsize]
            w = np.ascontiguousarray(want).view(bits).reshape(-1)
            g = np.ascontiguousarray(got.astype(want.dtype)).view(bits).reshape(-1)
        else:
            w, g = want.reshape(-1), got.astype(want.dtype).reshape(-1)
    bad = np.flatnonzero(w != g)
    if bad.size:
        i = int(bad[0])
        idx = tuple(int(x) for x in np.unravel_index(i, want.shape)) if want.shape else ()
        errs.append(f"{where}: {bad.size} of {w.size} elements differ, first at {idx}: expected {want.reshape(-1)[i]!r}, read {got.reshape(-1)[i]!r}")
    return errs


def fail_if(errs, what):
    """Exits with the problems; with MOUNT_CHECK_PROBLEMS=<file> set, appends them there
    (one JSON string a line) and returns, so the caller's scenario can go on."""
    soft = os.environ.get("MOUNT_CHECK_PROBLEMS")
    if errs and soft:
        import json
        with open(soft, "a", encoding="utf-8") as f:
            for e in errs:
                f.write(json.dumps(f"{what}: {e}") + "\n")
        return
    if errs:
        msg = f"{what}: {len(errs)} problem(s):\n  " + "\n  ".join(errs[:80])
        if len(errs) > 80:
            msg += f"\n  ... and {len(errs) - 80} more"
        raise SystemExit(msg)


def source(store):
    """What atlas-python's Atlas.open / Atlas.create take for STORE: a local path, or for
    `s3://bucket/prefix` an obstore S3Store reached with the AWS_* environment
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)."""
    store = str(store)
    if not store.startswith("s3://"):
        return store
    import warnings
    try:
        from obstore.store import S3Store
    except ImportError:
        raise SystemExit("obstore is missing (atlas-python[cloud]): run scripts/setup-test-env.sh")
    bucket, _, prefix = store[len("s3://"):].partition("/")
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    opts = dict(prefix=prefix, access_key_id=os.environ["AWS_ACCESS_KEY_ID"], secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                region=os.environ.get("AWS_REGION", "us-east-1"))
    if endpoint:
        opts.update(endpoint=endpoint, client_options={"allow_http": endpoint.startswith("http://")})
    # atlas-python rebuilds the handle from its config and says so; that is expected.
    warnings.filterwarnings("ignore", message="Successfully reconstructed a store")
    return S3Store(bucket, **opts)


def read_store(path):
    """{dataset: {array: ndarray}} as atlas-python 0.10 reads the store (a fresh handle)."""
    import atlas
    assert atlas.__version__ == "0.10.0", atlas.__version__
    a = atlas.Atlas.open(source(path))
    out = {}
    for ds in a.list_datasets():
        v = a.open_dataset(ds)
        out[ds] = {}
        for name in v.list_arrays():
            data = v.read_array(name)
            assert data is not None, f"{ds}/{name}: atlas-python read None"
            out[ds][name] = data
    return out


def store_meta(path):
    """{dataset: {"attributes": {...}, "arrays": {array: array_meta}}} from atlas-python."""
    import atlas
    a = atlas.Atlas.open(source(path))
    out = {}
    for ds in a.list_datasets():
        v = a.open_dataset(ds)
        out[ds] = {"attributes": v.attributes(), "arrays": {n: v.array_meta(n) for n in v.list_arrays()}}
    return out


def save_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def load_pickle(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def npy_files(d):
    return sorted(n for n in os.listdir(d) if n.endswith(".npy"))


def check_dir_against(root, oracle, what, mmap=True):
    """Every array of `oracle` ({ds: {arr: ndarray}}) read from root/ds/arr.npy."""
    errs = []
    for ds, arrays in oracle.items():
        d = os.path.join(root, ds)
        try:
            listed = npy_files(d)
        except OSError as e:
            errs.append(f"{what}: ls {d}: {e}")
            continue
        want_names = sorted(f"{n}.npy" for n in arrays)
        if listed != want_names:
            errs.append(f"{what}: ls {d}: {listed}, expected {want_names}")
        for name, want in arrays.items():
            p = os.path.join(d, f"{name}.npy")
            where = f"{what} {ds}/{name}.npy"
            try:
                errs += diff(where, want, np.load(p))
                if mmap:
                    m = np.load(p, mmap_mode="r")
                    errs += diff(where + " (mmap_mode='r')", want, np.array(m))
                    del m
            except Exception as e:  # noqa: BLE001 - reported as a test failure
                errs.append(f"{where}: {type(e).__name__}: {e}")
    return errs


# ------------------------------------------------------------ data written through the mount

def write_set():
    """The arrays scenario 2 writes with np.save: name -> array as saved."""
    rng = np.random.default_rng(1234)
    f32 = (rng.standard_normal((37, 53)) * 1000).astype(np.float32)
    f32[0, 0], f32[1, 2], f32[36, 52], f32[5, 5] = np.nan, np.inf, -np.inf, -0.0
    i64 = (np.arange(1000, dtype=np.int64) - 500) * 0x1234_5678_9ABC
    i64[0], i64[-1] = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    flag = (np.arange(21).reshape(7, 3) % 3 == 0)
    when = np.array([1_700_000_000_000_000_000 + k * 3_600_000_000_123 for k in range(12)], dtype="datetime64[ns]")
    when[3] = np.datetime64("NaT")
    be = np.arange(-15, 15, dtype=">i4").reshape(5, 6) * 1_000_003
    fort = np.asfortranarray(np.arange(20, dtype=np.float64).reshape(4, 5) / 7.0)
    assert fort.flags.f_contiguous and not fort.flags.c_contiguous
    words = np.array([["alpha", "βeta", "日本語"], ["", "emoji 🎉", "tab\tx"]])
    big = np.arange(700 * 1000, dtype=np.float64).reshape(700, 1000) * 0.5  # > 4 MiB: several chunks and slabs
    return {"f32": f32, "i64": i64, "flag": flag, "when": when, "be_i4": be, "fort": fort, "words": words, "big": big, "scalar": np.array(2.5, dtype=np.float64)}


def as_store_dtype(a):
    """What the store (and so a re-read) holds for a saved array: native byte order, C order."""
    a = np.asarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return np.array(a, order="C", copy=True)  # ascontiguousarray would make 0-D 1-D


def rsync_set():
    return {"r1": np.arange(10, dtype=np.int16), "r2": np.linspace(0, 1, 33, dtype=np.float64).reshape(3, 11), "r3": np.array(["x", "yy", "zzz"])}


def cat_array():
    return np.arange(5, dtype="<u2") * 1000


def cp_set():
    return {"c1": np.arange(24, dtype=np.uint32).reshape(2, 3, 4), "c2": np.full((3,), -7, dtype=np.int8)}
