"""What tests/mount.rs checks through a mounted atlasfs (and, after unmount, with atlas-python).

usage: mount_check.py COMMAND ARGS...

  read MOUNT ORACLE [COPY_ROOT]       every array: np.load, np.load(mmap_mode='r'), exact .npy
                                      bytes, st_size, random preads; listings; absent arrays;
                                      copies under COPY_ROOT too. Prints {path: size} as JSON.
  write MOUNT SRCDIR ORACLE_OUT       np.save of many dtypes into MOUNT/wds; sources for cp/rsync/cat
  readback MOUNT ORACLE               what `write` + cp + rsync + cat left, read through the mount
  store STORE ORACLE [--skip DS/ARR]... [--attr DS.KEY=JSON]...
                                      atlas-python 0.10 reads the unmounted store: values, dtypes,
                                      shapes, names; attributes with their Python types
  edit MOUNT ORACLE_IN ORACLE_OUT     in-place edits through np.load(mmap_mode='r+') and pwrite
  semantics MOUNT ORACLE_IN ORACLE_OUT  errno of mkdir/rmdir/unlink/rename/create/close, xattrs
  readonly MOUNT ORACLE               a --read-only mount: EROFS for every change, reads work
  compact MOUNT ORACLE_IN ORACLE_OUT  compaction with readers holding files open, stats
  durable MOUNT ORACLE_OUT fsync|plain  writes that must survive kill -9 (fsync) or SIGTERM (plain)
"""

import copy
import errno
import io
import json
import os
import random
import sys
import time

import numpy as np

from mount_common import (as_store_dtype, cat_array, check_dir_against, cp_set, diff, fail_if, kind_of,
                          load_pickle, npy_files, rsync_set, save_pickle, source, write_set)


def expected_bytes(want):
    """The exact bytes of the mount's .npy rendering of `want`: what np.save writes for it."""
    a = np.asarray(want)
    if kind_of(a) == "string":
        flat = [str(x) for x in a.reshape(-1).tolist()]
        a = np.array(flat, dtype=f"<U{max([len(s) for s in flat] + [1])}").reshape(a.shape)
    buf = io.BytesIO()
    np.save(buf, np.array(a, order="C", copy=True))
    return buf.getvalue()


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def expect_errno(errs, what, want, fn, *args):
    """Runs fn(*args); it must fail with errno `want`."""
    try:
        fn(*args)
    except OSError as e:
        if e.errno != want:
            errs.append(f"{what}: failed with {errno.errorcode.get(e.errno, e.errno)} ({e}), expected {errno.errorcode[want]}")
        return
    errs.append(f"{what}: succeeded, expected {errno.errorcode[want]}")


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def check_bytes(errs, where, path, want):
    """Whole-file bytes, st_size and random preads (page cache dropped) against np.save's bytes."""
    exp = expected_bytes(want)
    st = os.stat(path)
    with open(path, "rb") as f:
        data = f.read()
    if st.st_size != len(data):
        errs.append(f"{where}: st_size {st.st_size}, but {len(data)} bytes read")
    if data != exp:
        i = first_diff(data, exp)
        errs.append(f"{where}: {len(data)} bytes differ from np.save's {len(exp)} at offset {i}: read {data[i:i + 16]!r}, expected {exp[i:i + 16]!r}")
        return st.st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        rng = random.Random(len(exp))
        for _ in range(12):
            off = rng.randrange(0, len(exp) + 2)
            n = rng.randrange(1, 9000)
            got = os.pread(fd, n, off)
            if got != exp[off:off + n]:
                errs.append(f"{where}: pread({n}, {off}) gave {len(got)} bytes, differing from the expected {len(exp[off:off + n])} at {first_diff(got, exp[off:off + n])}")
                break
    finally:
        os.close(fd)
    return st.st_size


def check_stacked(errs, mount, oracle, root_listing):
    """.atlasfs/stacked: per array, every dataset whose copy has the first copy's dtype and
    shape (datasets in the root listing's order), as one (n, *shape) array."""
    order = [d for d in root_listing if d in oracle]
    want = {}
    for ds in order:
        for name, a in oracle[ds].items():
            a = np.asarray(a)
            first = want.setdefault(name, (a.dtype, a.shape, []))
            if kind_of(a) != "string" and first[0] == a.dtype and first[1] == a.shape:
                first[2].append(ds)
    want = {n: v for n, v in want.items() if kind_of(np.empty(0, v[0])) != "string"}
    sdir = os.path.join(mount, ".atlasfs", "stacked")
    listed = sorted(os.listdir(sdir))
    expect = sorted([f"{n}.npy" for n in want] + [f"{n}.datasets" for n in want])
    if listed != expect:
        errs.append(f"ls .atlasfs/stacked: {listed}, expected {expect}")
        return
    for name, (dtype, shape, names) in want.items():
        with open(os.path.join(sdir, f"{name}.datasets")) as f:
            got_names = f.read().split("\n")[:-1]
        if got_names != names:
            errs.append(f"stacked/{name}.datasets: {got_names}, expected {names}")
            continue
        exp = np.stack([np.asarray(oracle[d][name]) for d in names])
        path = os.path.join(sdir, f"{name}.npy")
        whole = np.load(path)
        mm = np.load(path, mmap_mode="r")
        if whole.dtype != exp.dtype or whole.shape != exp.shape or not np.array_equal(whole, exp, equal_nan=exp.dtype.kind in "fcmM"):
            errs.append(f"stacked/{name}.npy: {whole.dtype}{whole.shape} differs from the stack of {names}")
        elif exp.ndim > 1 and not np.array_equal(mm[:, :max(1, exp.shape[1] // 4)], exp[:, :max(1, exp.shape[1] // 4)], equal_nan=exp.dtype.kind in "fcmM"):
            errs.append(f"stacked/{name}.npy: an mmap slice differs")
        if os.stat(path).st_size != len(expected_bytes(exp)):
            errs.append(f"stacked/{name}.npy: st_size {os.stat(path).st_size}, np.save writes {len(expected_bytes(exp))}")
        del mm


def check_read(mount, oracle, absent=(), copy_root=None, extra_root_names=()):
    errs = check_dir_against(mount, oracle, "mount")
    sizes = {}
    for ds, arrays in oracle.items():
        for name, want in arrays.items():
            sizes[f"{ds}/{name}.npy"] = check_bytes(errs, f"mount {ds}/{name}.npy", os.path.join(mount, ds, f"{name}.npy"), want)
    root = sorted(os.listdir(mount))
    want_root = sorted(list(oracle) + [".atlasfs"] + list(extra_root_names))
    if root != want_root:
        errs.append(f"ls {mount}: {root}, expected {want_root}")
    ctl = sorted(os.listdir(os.path.join(mount, ".atlasfs")))
    if ctl != ["compact", "flush", "stacked", "stats", "zarr"]:
        errs.append(f"ls .atlasfs: {ctl}")
    check_stacked(errs, mount, oracle, root)
    for ds, name in absent:
        p = os.path.join(mount, ds, f"{name}.npy")
        if os.path.exists(p):
            errs.append(f"{ds}/{name}.npy (a deleted array) exists")
        expect_errno(errs, f"open {ds}/{name}.npy (a deleted array)", errno.ENOENT, open, p, "rb")
    if copy_root is not None:
        copied = {ds: oracle[ds] for ds in sorted(os.listdir(copy_root))}
        if not copied:
            errs.append(f"{copy_root} is empty")
        errs += check_dir_against(copy_root, copied, "copy")
        for ds, arrays in copied.items():
            for name, want in arrays.items():
                p = os.path.join(copy_root, ds, f"{name}.npy")
                with open(p, "rb") as f:
                    if f.read() != expected_bytes(want):
                        errs.append(f"copy {ds}/{name}.npy: bytes differ from np.save's")
    return errs, sizes


def cmd_read(mount, oracle_path, copy_root=None):
    o = load_pickle(oracle_path)
    errs, sizes = check_read(mount, o["arrays"], o.get("absent", []), copy_root)
    fail_if(errs, "reading through the mount")
    print(json.dumps(sizes))


# ------------------------------------------------------------------ scenario 2: writes

def cmd_write(mount, src, oracle_out):
    errs = []
    os.mkdir(os.path.join(mount, "wds"))
    saved = write_set()
    for name, a in saved.items():
        np.save(os.path.join(mount, "wds", f"{name}.npy"), a)
    # read straight back
    for name, a in saved.items():
        p = os.path.join(mount, "wds", f"{name}.npy")
        want = as_store_dtype(a)
        try:
            errs += diff(f"wds/{name}.npy", want, np.load(p))
            check_bytes(errs, f"wds/{name}.npy", p, want)
        except Exception as e:  # noqa: BLE001
            errs.append(f"wds/{name}.npy: {type(e).__name__}: {e}")
    # an existing array overwritten with another dtype and shape
    over = os.path.join(mount, "wds", "over.npy")
    np.save(over, np.arange(10, dtype=np.int16))
    np.save(over, np.arange(12, dtype=np.float64).reshape(3, 4) / 8)
    saved["over"] = np.arange(12, dtype=np.float64).reshape(3, 4) / 8
    try:
        errs += diff("wds/over.npy (overwritten)", saved["over"], np.load(over))
        check_bytes(errs, "wds/over.npy (overwritten)", over, saved["over"])
    except Exception as e:  # noqa: BLE001
        errs.append(f"wds/over.npy (overwritten): {type(e).__name__}: {e}")
    # sources for cp -r, rsync -a and cat
    for sub, arrays in (("cpsrc", cp_set()), ("rsyncsrc", rsync_set())):
        os.makedirs(os.path.join(src, sub))
        for name, a in arrays.items():
            np.save(os.path.join(src, sub, f"{name}.npy"), a)
    np.save(os.path.join(src, "cat.npy"), cat_array())
    # a second rsync run replaces r1 (another dtype and shape) through a temp file
    rsync2 = dict(rsync_set())
    rsync2["r1"] = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    os.makedirs(os.path.join(src, "rsyncsrc2"))
    for name, a in rsync2.items():
        np.save(os.path.join(src, "rsyncsrc2", f"{name}.npy"), a)
    oracle = {"wds": {n: as_store_dtype(a) for n, a in saved.items()}, "cpds": cp_set(), "rsyncds": rsync2}
    oracle["wds"]["cat"] = cat_array()
    oracle["newds"] = {}  # made by `mkdir` from the test
    save_pickle(oracle_out, {"arrays": oracle, "absent": []})
    fail_if(errs, "np.save into the mount, read back")


def cmd_readback(mount, oracle_path):
    o = load_pickle(oracle_path)
    errs, _ = check_read(mount, o["arrays"], o.get("absent", []))
    fail_if(errs, "reading back what was written through the mount")


# ------------------------------------------------------------------ atlas-python after unmount

def dtype_name(a):
    k = kind_of(a)
    if k == "string":
        return "string"
    if k == "timestamp":
        return "timestamp_nanoseconds"
    return np.asarray(a).dtype.name


def cmd_store(store, oracle_path, opts):
    import atlas
    skip = set()
    attrs = []
    i = 0
    while i < len(opts):
        if opts[i] == "--skip":
            skip.add(tuple(opts[i + 1].split("/")))
        elif opts[i] == "--attr":
            k, v = opts[i + 1].split("=", 1)
            ds, key = k.split(".", 1)
            attrs.append((ds, key, json.loads(v)))
        else:
            raise SystemExit(f"unknown option {opts[i]}")
        i += 2
    o = load_pickle(oracle_path)
    oracle = o["arrays"]
    errs = []
    a = atlas.Atlas.open(source(store))
    if sorted(a.list_datasets()) != sorted(oracle):
        errs.append(f"atlas-python list_datasets {sorted(a.list_datasets())}, expected {sorted(oracle)}")
    for ds, arrays in oracle.items():
        if not a.dataset_exists(ds):
            errs.append(f"atlas-python: dataset {ds} missing")
            continue
        v = a.open_dataset(ds)
        if sorted(v.list_arrays()) != sorted(arrays):
            errs.append(f"atlas-python {ds}.list_arrays {sorted(v.list_arrays())}, expected {sorted(arrays)}")
        for name, want in arrays.items():
            if (ds, name) in skip:
                continue
            where = f"atlas-python {ds}/{name}"
            m = v.array_meta(name)
            if m is None:
                errs.append(f"{where}: no such array")
                continue
            if m["dtype"] != dtype_name(want) or list(m["shape"]) != list(np.shape(want)):
                errs.append(f"{where}: dtype {m['dtype']} shape {list(m['shape'])}, expected {dtype_name(want)} {list(np.shape(want))}")
            try:
                got = v.read_array(name)
            except Exception as e:  # noqa: BLE001
                errs.append(f"{where}: read_array raised {type(e).__name__}: {e}")
                continue
            if got is None:
                errs.append(f"{where}: read_array gave None")
                continue
            errs += diff(where, want, got, strings="O")
    for ds, absent in o.get("absent", []):
        if a.dataset_exists(ds) and a.open_dataset(ds).read_array(absent) is not None:
            errs.append(f"atlas-python: deleted array {ds}/{absent} is still readable")
    for ds, key, want in attrs:
        got = a.open_dataset(ds).attributes().get(key, "<missing>")
        if got != want or type(got) is not type(want):
            errs.append(f"atlas-python {ds} attribute {key}: {got!r} ({type(got).__name__}), expected {want!r} ({type(want).__name__})")
    fail_if(errs, f"atlas-python 0.10 reading {store} after unmount")


# ------------------------------------------------------------------ scenario 3: in-place edits

def cmd_edit(mount, oracle_in, oracle_out):
    o = load_pickle(oracle_in)
    exp = copy.deepcopy(o["arrays"])
    errs = []
    p = os.path.join(mount, "ds", "grid.npy")
    size_before = os.stat(p).st_size
    m = np.load(p, mmap_mode="r+")
    if not isinstance(m, np.memmap) or m.dtype != np.int32 or m.shape != (50, 40):
        errs.append(f"mmap_mode='r+' gave {type(m).__name__} {m.dtype} {m.shape}")
    edits = {(0, 0): 123456, (45, 39): -777, (20, 17): 1, (12, 12): 99, (49, 0): 2 ** 31 - 1}
    for idx, val in edits.items():  # first chunk, a fill-only edge chunk, the later layer, the last row
        m[idx] = val
        exp["ds"]["grid"][idx] = val
    m.flush()
    del m
    # a second, non-mmap path: pwrite into an existing file opened read-write
    p2 = os.path.join(mount, "ds", "temp.npy")
    hl = os.stat(p2).st_size - 1000 * 8
    new = np.arange(200, dtype="<f8") * -0.25
    with open(p2, "r+b") as f:
        f.seek(hl + 100 * 8)  # elements 100..300 cross the chunk boundaries at 128 and 256
        f.write(new.tobytes())
        f.seek(hl + 999 * 8)  # the last element, in a never-written (NaN fill) chunk
        f.write(np.array([42.0], dtype="<f8").tobytes())
    exp["ds"]["temp"][100:300] = new
    exp["ds"]["temp"][999] = 42.0
    if os.stat(p).st_size != size_before:
        errs.append(f"grid.npy size changed from {size_before} to {os.stat(p).st_size}")
    # refused in-place writes: the array stays as it was
    fd = os.open(p, os.O_RDWR)
    expect_errno(errs, "pwrite past the end of grid.npy", errno.EFBIG, os.pwrite, fd, b"12345678", size_before)
    os.close(fd)  # nothing was written: no error
    fd = os.open(p, os.O_RDWR)
    os.pwrite(fd, b"X", 20)  # inside the header text
    expect_errno(errs, "close after changing grid.npy's header in place", errno.EINVAL, os.close, fd)
    fd = os.open(os.path.join(mount, "ds", "names.npy"), os.O_RDWR)
    os.pwrite(fd, b"\0\0\0\0", 132)  # a string array's data
    expect_errno(errs, "close after an in-place write to a string array", errno.EINVAL, os.close, fd)
    e2, _ = check_read(mount, exp)
    errs += e2
    # exactly the edited elements differ from before
    g = np.load(p)
    changed = sorted(tuple(int(x) for x in ix) for ix in np.argwhere(g != o["arrays"]["ds"]["grid"]))
    if changed != sorted(edits):
        errs.append(f"grid.npy: changed elements {changed}, expected exactly {sorted(edits)}")
    save_pickle(oracle_out, {"arrays": exp, "absent": []})
    fail_if(errs, "in-place edits through the mount")


# ------------------------------------------------------------------ scenario 4: semantics

def cmd_semantics(mount, oracle_in, oracle_out):
    o = load_pickle(oracle_in)
    exp = copy.deepcopy(o["arrays"])
    errs = []
    M = lambda *p: os.path.join(mount, *p)  # noqa: E731

    # datasets: names, emptiness
    expect_errno(errs, "mkdir _x (invalid dataset name)", errno.EINVAL, os.mkdir, M("_x"))
    if os.path.exists(M("_x")):
        errs.append("_x exists after a refused mkdir")
    os.mkdir(M("newds"))
    if not os.path.isdir(M("newds")) or os.listdir(M("newds")) != []:
        errs.append(f"newds after mkdir: isdir={os.path.isdir(M('newds'))}")
    expect_errno(errs, "mkdir newds again", errno.EEXIST, os.mkdir, M("newds"))
    expect_errno(errs, "mkdir inside a dataset", errno.EPERM, os.mkdir, M("ds", "sub"))
    expect_errno(errs, "rmdir other (not empty)", errno.ENOTEMPTY, os.rmdir, M("other"))
    os.rmdir(M("newds"))
    if os.path.exists(M("newds")) or "newds" in os.listdir(mount):
        errs.append("newds still there after rmdir")

    # files that are not arrays
    expect_errno(errs, "create ds/notes.txt", errno.EINVAL, open, M("ds", "notes.txt"), "w")
    expect_errno(errs, "create ds/_bad.npy", errno.EINVAL, open, M("ds", "_bad.npy"), "wb")
    expect_errno(errs, "create a file at the top level", errno.EPERM, open, M("top.npy"), "wb")
    if "notes.txt" in os.listdir(M("ds")):
        errs.append("notes.txt is listed after a refused create")

    # unlink
    os.unlink(M("ds", "bytes.npy"))
    del exp["ds"]["bytes"]
    if os.path.exists(M("ds", "bytes.npy")) or "bytes.npy" in os.listdir(M("ds")):
        errs.append("bytes.npy still there after unlink")
    expect_errno(errs, "unlink bytes.npy twice", errno.ENOENT, os.unlink, M("ds", "bytes.npy"))

    # renames: within a dataset, into another dataset, of a dataset. The new name
    # must work at once (the kernel keeps the renamed inode under the new name).
    def now(what, fn, *args):
        try:
            fn(*args)
        except OSError as e:
            errs.append(f"right after {what}: {fn.__name__}{args}: {e}")

    os.rename(M("ds", "grid.npy"), M("ds", "grid2.npy"))
    exp["ds"]["grid2"] = exp["ds"].pop("grid")
    now("rename ds/grid.npy -> ds/grid2.npy", np.load, M("ds", "grid2.npy"))
    os.rename(M("ds", "grid2.npy"), M("other", "grid3.npy"))
    exp["other"]["grid3"] = exp["ds"].pop("grid2")
    now("rename ds/grid2.npy -> other/grid3.npy", np.load, M("other", "grid3.npy"))
    os.rename(M("other"), M("renamed"))
    exp["renamed"] = exp.pop("other")
    now("rename other -> renamed (a dataset)", os.listdir, M("renamed"))
    now("rename other -> renamed (a dataset)", np.load, M("renamed", "o1.npy"))
    if os.path.exists(M("other")):
        errs.append("dataset other still exists after being renamed")
    expect_errno(errs, "rename an array to notes.txt", errno.EINVAL, os.rename, M("ds", "temp.npy"), M("ds", "notes.txt"))

    # a .npy that does not parse: close() fails with EINVAL; nothing changes
    f = open(M("ds", "x.npy"), "wb")
    f.write(b"this is not a .npy file at all" * 10)
    expect_errno(errs, "close of garbage written to ds/x.npy", errno.EINVAL, f.close)
    f = open(M("ds", "temp.npy"), "wb")  # an existing array, truncated and overwritten
    f.write(b"\x93NUMPY garbage")
    expect_errno(errs, "close of garbage written over ds/temp.npy", errno.EINVAL, f.close)
    f = open(M("ds", "names.npy"), "wb")  # a valid header but too little data
    buf = io.BytesIO()
    np.save(buf, np.arange(10, dtype=np.int64))
    f.write(buf.getvalue()[:-8])
    expect_errno(errs, "close of a truncated .npy over ds/names.npy", errno.EINVAL, f.close)
    if "x.npy" in os.listdir(M("ds")):
        errs.append(f"x.npy is listed after its rejected close: {os.listdir(M('ds'))}")
    # np.save writes the data through a dup'd descriptor (ndarray.tofile) and ignores
    # that close's error: the refusal must still reach np.save's own close.
    expect_errno(errs, "np.save of a complex64 array (no atlas dtype)", errno.EINVAL, np.save, M("ds", "cplx.npy"), np.zeros(4, np.complex64))
    if "cplx.npy" in os.listdir(M("ds")):
        errs.append(f"cplx.npy is listed after np.save failed: {os.listdir(M('ds'))}")
    # an array's name is a directory of the store, percent-encoded: '%' takes 3 bytes
    expect_errno(errs, "create an array named 86 × '%'", errno.ENAMETOOLONG, np.save, M("ds", "%" * 86 + ".npy"), np.arange(3))
    # the same name written again, validly, right after a rejected close
    f = open(M("ds", "y.npy"), "wb")
    f.write(b"garbage")
    expect_errno(errs, "close of garbage written to ds/y.npy", errno.EINVAL, f.close)
    y = np.arange(5, dtype=np.float32)
    try:
        np.save(M("ds", "y.npy"), y)
    except OSError as e:
        errs.append(f"np.save ds/y.npy right after a rejected close of ds/y.npy: {e}")
        time.sleep(1.2)  # entry TTL: then the name is looked up afresh
        np.save(M("ds", "y.npy"), y)
    exp["ds"]["y"] = y

    # fsync'd then removed / renamed: the store must follow
    with open(M("ds", "synced.npy"), "wb") as f:
        np.save(f, np.arange(7, dtype=np.int16))
        f.flush()
        os.fsync(f.fileno())
    with open(M("ds", "synced2.npy"), "wb") as f:
        np.save(f, np.arange(3, dtype=np.uint16))
        f.flush()
        os.fsync(f.fileno())
    os.unlink(M("ds", "synced.npy"))
    os.rename(M("ds", "synced2.npy"), M("ds", "moved.npy"))
    exp["ds"]["moved"] = np.arange(3, dtype=np.uint16)
    listed = npy_files(M("ds"))
    if "synced.npy" in listed or "synced2.npy" in listed or "moved.npy" not in listed:
        errs.append(f"after fsync + unlink/rename: ls ds gives {listed}")

    # xattrs: dataset attributes as JSON, array facts
    want_attr = {"station": "De Bilt", "count": 42, "ratio": 0.5, "flag": True}
    for k, v in want_attr.items():
        try:
            raw = os.getxattr(M("ds"), f"user.atlas.attr.{k}")
            if json.loads(raw) != v or type(json.loads(raw)) is not type(v):
                errs.append(f"getxattr ds user.atlas.attr.{k}: {raw!r}, expected JSON {json.dumps(v)}")
        except OSError as e:
            errs.append(f"getxattr ds user.atlas.attr.{k}: {e}")
    names = sorted(os.listxattr(M("ds")))
    if names != sorted(f"user.atlas.attr.{k}" for k in want_attr):
        errs.append(f"listxattr ds: {names}")
    os.setxattr(M("ds"), "user.atlas.attr.month", b"3")
    if os.getxattr(M("ds"), "user.atlas.attr.month") != b"3":
        errs.append(f"getxattr month after setxattr: {os.getxattr(M('ds'), 'user.atlas.attr.month')!r}")
    expect_errno(errs, "getxattr of a missing attribute", errno.ENODATA, os.getxattr, M("ds"), "user.atlas.attr.nope")
    arr = M("ds", "temp.npy")
    for k, v in (("dtype", "float64"), ("shape", [1000]), ("chunk_shape", [128])):
        try:
            raw = os.getxattr(arr, f"user.atlas.{k}")
            if json.loads(raw) != v:
                errs.append(f"getxattr temp.npy user.atlas.{k}: {raw!r}, expected {json.dumps(v)}")
        except OSError as e:
            errs.append(f"getxattr temp.npy user.atlas.{k}: {e}")
    g3 = M("renamed", "grid3.npy")
    for k, v in (("dtype", "int32"), ("shape", [50, 40]), ("chunk_shape", [16, 16])):
        try:
            raw = os.getxattr(g3, f"user.atlas.{k}")
            if json.loads(raw) != v:
                errs.append(f"getxattr grid3.npy user.atlas.{k}: {raw!r}, expected {json.dumps(v)}")
        except OSError as e:
            errs.append(f"getxattr grid3.npy user.atlas.{k}: {e}")
    expect_errno(errs, "setxattr on an array", errno.EPERM, os.setxattr, arr, "user.atlas.dtype", b'"int8"')

    e2, _ = check_read(mount, exp)
    errs += e2
    save_pickle(oracle_out, {"arrays": exp, "absent": [["ds", "bytes"], ["ds", "grid"], ["ds", "x"], ["ds", "synced"], ["ds", "synced2"]]})
    fail_if(errs, "filesystem semantics")


def cmd_readonly(mount, oracle_path):
    o = load_pickle(oracle_path)
    errs = []
    M = lambda *p: os.path.join(mount, *p)  # noqa: E731
    R = errno.EROFS
    expect_errno(errs, "ro: mkdir", R, os.mkdir, M("newds"))
    expect_errno(errs, "ro: create ds/new.npy", R, open, M("ds", "new.npy"), "wb")
    expect_errno(errs, "ro: open ds/temp.npy for writing", R, open, M("ds", "temp.npy"), "r+b")
    expect_errno(errs, "ro: truncate ds/temp.npy", R, open, M("ds", "temp.npy"), "wb")
    expect_errno(errs, "ro: unlink ds/temp.npy", R, os.unlink, M("ds", "temp.npy"))
    expect_errno(errs, "ro: rename ds/temp.npy", R, os.rename, M("ds", "temp.npy"), M("ds", "t2.npy"))
    expect_errno(errs, "ro: rename dataset", R, os.rename, M("ds"), M("ds2"))
    expect_errno(errs, "ro: rmdir other", R, os.rmdir, M("other"))
    expect_errno(errs, "ro: setxattr", R, os.setxattr, M("ds"), "user.atlas.attr.month", b"3")
    expect_errno(errs, "ro: write .atlasfs/compact", R, write_file, M(".atlasfs", "compact"), b"1")
    e2, _ = check_read(mount, o["arrays"])
    errs += e2
    st = os.stat(M("ds", "temp.npy"))
    if st.st_mode & 0o222:
        errs.append(f"ro: temp.npy mode {oct(st.st_mode)} has write bits")
    fail_if(errs, "read-only mount")


# ------------------------------------------------------------------ scenario 5: compaction

def cmd_compact(mount, oracle_in, oracle_out):
    o = load_pickle(oracle_in)
    exp = copy.deepcopy(o["arrays"])
    errs = []
    M = lambda *p: os.path.join(mount, *p)  # noqa: E731
    # a pending write, so the compaction has something unflushed to include
    added = np.arange(300, dtype=np.float32).reshape(20, 15) / 3
    np.save(M("grid", "added.npy"), added)
    exp["grid"]["added"] = added
    # readers holding files open across the compactions
    held = {k: np.load(M(*k.split("/")), mmap_mode="r") for k in ("grid/temp.npy", "obs/c_float64.npy", "obs/c_string.npy")}
    before = {k: np.array(v) for k, v in held.items()}
    fd = os.open(M("grid", "temp.npy"), os.O_RDONLY)
    raw_before = os.pread(fd, 1 << 20, 0)
    for round_ in (1, 2):
        write_file(M(".atlasfs", "compact"), b"1")
        for k, v in held.items():
            errs += diff(f"compaction {round_}: held mmap {k}", before[k], np.array(v))
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if os.pread(fd, 1 << 20, 0) != raw_before:
            errs.append(f"compaction {round_}: pread on a descriptor held open across it gives different bytes")
        e2, _ = check_read(mount, exp, o.get("absent", []))
        errs += [f"after compaction {round_}: {e}" for e in e2]
    os.close(fd)
    del held
    with open(M(".atlasfs", "stats")) as f:
        text = f.read()
    try:
        st = json.loads(text)
    except ValueError as e:
        errs.append(f".atlasfs/stats is not JSON ({e}): {text!r}")
        st = {}
    for k in ("reads", "bytes_read", "writes", "bytes_written", "arrays_committed", "flushes", "compactions", "cache", "datasets", "files_being_written"):
        if k not in st:
            errs.append(f"stats lacks {k}: {sorted(st)}")
    if st.get("compactions") != 2:
        errs.append(f"stats compactions = {st.get('compactions')}, expected 2")
    if st.get("datasets") != len(exp):
        errs.append(f"stats datasets = {st.get('datasets')}, expected {len(exp)}")
    if not (isinstance(st.get("reads"), int) and st["reads"] > 0 and st.get("bytes_read", 0) > 0):
        errs.append(f"stats reads/bytes_read not counted: {st.get('reads')}, {st.get('bytes_read')}")
    if st.get("arrays_committed") != 1 or st.get("files_being_written") != 0:
        errs.append(f"stats arrays_committed = {st.get('arrays_committed')} (expected 1), files_being_written = {st.get('files_being_written')} (expected 0)")
    if os.stat(M(".atlasfs", "stats")).st_size <= 0:
        errs.append("stats has size 0 in stat()")
    save_pickle(oracle_out, {"arrays": exp, "absent": o.get("absent", [])})
    fail_if(errs, "compaction through .atlasfs/compact")


# ------------------------------------------------------------------ scenario 6: durability

def cmd_durable(mount, oracle_out, mode):
    M = lambda *p: os.path.join(mount, *p)  # noqa: E731
    errs = []
    os.mkdir(M("dur"))
    arrays = {"a1": np.arange(1000, dtype=np.int64) * 3, "a2": np.linspace(-1, 1, 4096).reshape(64, 64), "a3": np.array(["s", "tt", "üüü"])}
    if mode == "fsync":
        for name in ("a1", "a2"):
            with open(M("dur", f"{name}.npy"), "wb") as f:
                np.save(f, arrays[name])
                f.flush()
                os.fsync(f.fileno())
        np.save(M("dur", "a3.npy"), arrays["a3"])
        write_file(M(".atlasfs", "flush"), b"1")  # the other durability boundary
        with open(M(".atlasfs", "stats")) as f:
            st = json.load(f)
        if st.get("files_being_written") != 0:
            errs.append(f"after fsync'd files were closed, stats files_being_written = {st.get('files_being_written')} (expected 0)")
        if st.get("flushes", 0) < 3:
            errs.append(f"stats flushes = {st.get('flushes')}, expected >= 3 (two fsyncs and a write to .atlasfs/flush)")
    else:
        for name, a in arrays.items():
            np.save(M("dur", f"{name}.npy"), a)
    for name, a in arrays.items():
        errs += diff(f"dur/{name}.npy", a, np.load(M("dur", f"{name}.npy")))
    save_pickle(oracle_out, {"arrays": {"dur": arrays}, "absent": []})
    fail_if(errs, f"writes before the daemon is stopped ({mode})")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "read":
        cmd_read(*args)
    elif cmd == "write":
        cmd_write(*args)
    elif cmd == "readback":
        cmd_readback(*args)
    elif cmd == "store":
        cmd_store(args[0], args[1], args[2:])
    elif cmd == "edit":
        cmd_edit(*args)
    elif cmd == "semantics":
        cmd_semantics(*args)
    elif cmd == "readonly":
        cmd_readonly(*args)
    elif cmd == "compact":
        cmd_compact(*args)
    elif cmd == "durable":
        cmd_durable(*args)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
