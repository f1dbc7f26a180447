"""One process of the load test (tests/load.rs): a writer or a reader on one mount.

Usage:
  load_worker.py init   MOUNT                          the datasets and version 0 of every array
  load_worker.py writer MOUNT K SECS OUT.json          writer K (0 or 1) overwrites its arrays
  load_worker.py reader MOUNT R SECS OUT.json          reader R loads and mmap-slices every array
  load_worker.py verify MOUNT OUT.json...              after a remount: each array holds the
                                                       last version its writer fsynced

Every element of a written array is its version id, an int64 that names the writer,
the array and a sequence number, and the shape follows from the version, so a read
is checked against exactly one version: all elements equal, and the shape is the
one that version has. A mix of two versions (or a short read, or a header of one
version over data of another) is a torn read.

Writers replace a file the POSIX way under readers (LOAD_WRITE_MODE=rename, the
default: a hidden temp file, fsync, rename over, fsync the directory) or rewrite it
in place (LOAD_WRITE_MODE=inplace: open O_TRUNC, np.save, fsync, close; readers of
a file being rewritten in place see it truncated, on any filesystem, so that mode
runs without readers). Readers hold no lock. Output: JSON with latencies in seconds
per operation kind, errors and torn reads (each a one-line description).
"""

import json
import os
import random
import sys
import time

import numpy as np

WRITERS = 2
# How writers replace a file: "rename" (default) or "inplace" (see write_version).
MODE = os.environ.get("LOAD_WRITE_MODE", "rename")
# (dataset, array) each writer owns; "shared/s" is written by both.
OWN = ["big", "var"]
STATIC_SHAPE = (300, 1000)


def vid(writer, array_idx, seq):
    return ((writer + 1) * 100 + array_idx) * 1_000_000_000 + seq


def split(v):
    """(writer, array_idx, seq) of a version id."""
    top, seq = divmod(int(v), 1_000_000_000)
    w, a = divmod(top, 100)
    return w - 1, a, seq


def shape_of(array_idx, seq):
    if array_idx == 0:  # big: 4 MiB, fixed shape
        return (512, 1024)
    if array_idx == 1:  # var: 0.5 to 2.5 MiB, the shape changes with every version
        return (64 + (seq % 5) * 64, 1024)
    return (256, 1024)  # shared: 2 MiB


def targets():
    """(relative path, array_idx, owning writer or None for shared)."""
    out = []
    for k in range(WRITERS):
        for i, a in enumerate(OWN):
            out.append((f"w{k}/{a}.npy", i, k))
    out.append(("shared/s.npy", 2, None))
    return out


def write_version(path, v, mode="inplace"):
    """Writes version `v` to `path`, durably; returns (seconds in all, seconds in fsync).

    inplace: open(O_TRUNC), np.save, fsync, close. rename: the same into a hidden
    temp name beside it (rsync's `.name.XXXXXX`), then rename(2) over `path` and
    fsync the directory: the POSIX way to replace a file under readers.
    """
    w, a, seq = split(v)
    arr = np.full(shape_of(a, seq), v, dtype=np.int64)
    d, base = os.path.split(path)
    target = os.path.join(d, f".{base}.w{w}s{seq}") if mode == "rename" else path
    t0 = time.perf_counter()
    with open(target, "wb") as f:
        np.save(f, arr)
        f.flush()
        t1 = time.perf_counter()
        os.fsync(f.fileno())
        fs = time.perf_counter() - t1
    if mode == "rename":
        os.rename(target, path)
        t1 = time.perf_counter()
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fs += time.perf_counter() - t1
    return time.perf_counter() - t0, fs


def static_array():
    return np.arange(np.prod(STATIC_SHAPE), dtype=np.float64).reshape(STATIC_SHAPE)


def cmd_init(mount):
    for k in range(WRITERS):
        os.mkdir(os.path.join(mount, f"w{k}"))
    os.mkdir(os.path.join(mount, "shared"))
    os.mkdir(os.path.join(mount, "static"))
    for rel, a, owner in targets():
        write_version(os.path.join(mount, rel), vid(owner if owner is not None else 0, a, 0))
    np.save(os.path.join(mount, "static", "ro.npy"), static_array())
    with open(os.path.join(mount, ".atlasfs", "flush"), "w") as f:
        f.write("1")


def cmd_writer(mount, k, secs, out):
    k = int(k)
    deadline = time.monotonic() + float(secs)
    mine = [(rel, a) for rel, a, owner in targets() if owner in (k, None)]
    seq = {rel: 0 for rel, _ in mine}
    last = {}  # rel -> last version whose fsync returned
    lat = {"write": [], "fsync": []}
    errors = []
    n = 0
    while time.monotonic() < deadline:
        rel, a = mine[n % len(mine)]
        n += 1
        seq[rel] += 1
        v = vid(k, a, seq[rel])
        try:
            total, fs = write_version(os.path.join(mount, rel), v, MODE)
            lat["write"].append(total)
            lat["fsync"].append(fs)
            last[rel] = {"v": v, "done": time.time()}
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errors.append(f"writer {k}: write {rel} version {v}: {type(e).__name__}: {e}")
    json.dump({"role": "writer", "id": k, "lat": lat, "errors": errors, "torn": [], "last": last}, open(out, "w"))


def check(rel, a, owner, arr, whole):
    """A description of what is wrong with `arr` read from `rel`, or None."""
    if arr.dtype != np.int64:
        return f"{rel}: dtype {arr.dtype}"
    if arr.size == 0:
        return f"{rel}: empty read, shape {arr.shape}"
    flat = arr.reshape(-1)
    v = int(flat[0])
    if not (flat == v).all():
        others = sorted(set(int(x) for x in np.unique(flat)[:8]))
        return f"{rel}: torn: {len(np.unique(flat))} distinct values in one read, e.g. {others}"
    w, ai, seq = split(v)
    if ai != a or (owner is not None and w != owner) or w not in range(WRITERS):
        return f"{rel}: value {v} is no version of this array (writer {w}, array {ai}, seq {seq})"
    if whole and tuple(arr.shape) != shape_of(a, seq):
        return f"{rel}: shape {arr.shape} with the data of version {v} (writer {w} seq {seq}), whose shape is {shape_of(a, seq)}"
    return None


def mmap_one_open(path):
    """np.load(path, mmap_mode="r") through a single open(2).

    np.load with mmap_mode opens the path three times (header, header again,
    np.memmap), so under a concurrent rename it can pair one version's header with
    the next version's file on any filesystem; one descriptor reads one version.
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        return np.memmap(f, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=f.tell())


def cmd_reader(mount, r, secs, out):
    rng = random.Random(int(r))
    deadline = time.monotonic() + float(secs)
    tg = targets()
    want_static = static_array()
    lat = {"load": [], "mmap_slice": [], "stat": [], "static_load": []}
    errors, torn = [], []
    while time.monotonic() < deadline:
        roll = rng.random()
        rel, a, owner = rng.choice(tg)
        path = os.path.join(mount, rel)
        try:
            if roll < 0.45:
                t0 = time.perf_counter()
                arr = np.load(path)
                lat["load"].append(time.perf_counter() - t0)
                bad = check(rel, a, owner, arr, True)
            elif roll < 0.85:
                t0 = time.perf_counter()
                m = mmap_one_open(path)
                rows = m.shape[0]
                i = rng.randrange(rows)
                j = min(rows, i + rng.randint(1, 64))
                part = np.array(m[i:j])
                del m
                lat["mmap_slice"].append(time.perf_counter() - t0)
                bad = check(rel, a, owner, part, False)
            elif roll < 0.95:
                t0 = time.perf_counter()
                os.stat(path)
                os.listdir(os.path.dirname(path))
                lat["stat"].append(time.perf_counter() - t0)
                bad = None
            else:
                t0 = time.perf_counter()
                got = np.load(os.path.join(mount, "static", "ro.npy"))
                lat["static_load"].append(time.perf_counter() - t0)
                bad = None if (got.shape == want_static.shape and (got == want_static).all()) else "static/ro.npy: differs from what was written"
            if bad:
                torn.append(f"reader {r}: {bad}")
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errors.append(f"reader {r}: {rel}: {type(e).__name__}: {e}")
    json.dump({"role": "reader", "id": int(r), "lat": lat, "errors": errors, "torn": torn}, open(out, "w"))


def cmd_verify(mount, *outs):
    """After a remount: each array holds the version its writer(s) fsynced last."""
    last = {}
    for o in outs:
        d = json.load(open(o))
        if d["role"] != "writer":
            continue
        for rel, x in d["last"].items():
            last.setdefault(rel, []).append(x)
    errs = []
    for rel, a, owner in targets():
        cands = sorted(last.get(rel, []), key=lambda x: x["done"])
        got = np.load(os.path.join(mount, rel))
        bad = check(rel, a, owner, got, True)
        if bad:
            errs.append(bad)
            continue
        v = int(got.reshape(-1)[0])
        # The shared array: the later of the two writers' last fsyncs wins; they may
        # have overlapped, so either last version is right.
        ok = [c["v"] for c in cands] if owner is None else [cands[-1]["v"]] if cands else []
        if v not in ok:
            errs.append(f"{rel}: version {v} after remount, expected {' or '.join(map(str, ok))}")
    got = np.load(os.path.join(mount, "static", "ro.npy"))
    if not (got == static_array()).all():
        errs.append("static/ro.npy changed")
    if errs:
        print("\n".join(errs), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({rel: int(np.load(os.path.join(mount, rel)).reshape(-1)[0]) for rel, _, _ in targets()}))


def main():
    cmd, *args = sys.argv[1:]
    {"init": cmd_init, "writer": cmd_writer, "reader": cmd_reader, "verify": cmd_verify}[cmd](*args)


if __name__ == "__main__":
    main()
