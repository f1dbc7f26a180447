"""Helpers for tests/crash.rs.

Values are derived from (dataset, array, version) so that any reader can check them:
dataset "d<D>", array "a<A>", version V, shape S: an int64 array of shape S whose flat
element i is ((D*100 + A)*100000 + V)*1000000 + i. A torn mix of two versions, or a
prefix of one, never equals any version.

  crash_check.py check SPEC.json
      SPEC: [{"store": dir, "what": text, "datasets": [names],
              "arrays": {ds: {arr: [[V, shape], ...]}}}]. atlas-python 0.10 opens each
      store and must list exactly those datasets and arrays, each reading as one of
      its listed versions (a null version: it may read as "array not found").

  crash_check.py writer MOUNTPOINT SEED LOG [closes]
      Writes .npy files into MOUNTPOINT/d<D>/a<A>.npy until an operation fails (the
      daemon was killed), choosing operations from SEED. Before each operation it
      logs its intent, and after each fsync / .atlasfs/flush / .atlasfs/compact has
      returned it logs "A" (acknowledged), each line flushed at once:
        W D A V R,C   write version V of shape (R, C)
        D D A         unlink
        S             fsync of the file just written (then A)
        L             write .atlasfs/flush (then A)
        C             write .atlasfs/compact (then A)
        K T           the write or unlink just logged returned (its close, for a
                      write) at time.time() T: durable once a write-back flush that
                      started after T is done
      With "closes" it only writes and unlinks (no fsync, flush or compact): the
      write-back timer is then the only way anything reaches the store.
"""

import json
import os
import random
import sys

import numpy as np


def value(d, a, v, shape):
    n = int(np.prod(shape)) if len(shape) else 1
    base = ((d * 100 + a) * 100000 + v) * 1000000
    return (np.arange(n, dtype=np.int64) + base).reshape(shape)


def index(name, prefix):
    assert name.startswith(prefix) and name[len(prefix):].isdigit(), f"unexpected name {name!r}"
    return int(name[len(prefix):])


def check(spec_path):
    import atlas
    assert atlas.__version__ == "0.10.0", atlas.__version__
    with open(spec_path) as f:
        spec = json.load(f)
    errs = []
    for case in spec:
        what = case["what"]
        try:
            s = atlas.Atlas.open(case["store"])
            got = list(s.list_datasets())
            if sorted(got) != sorted(case["datasets"]):
                errs.append(f"{what}: datasets {sorted(got)}, expected {sorted(case['datasets'])}")
                continue
            for ds in got:
                view = s.open_dataset(ds)
                want = case["arrays"].get(ds, {})
                names = sorted(view.list_arrays())
                if names != sorted(want):
                    errs.append(f"{what}: {ds} has arrays {names}, expected {sorted(want)}")
                    continue
                for arr, versions in want.items():
                    try:
                        data = view.read_array(arr)
                    except RuntimeError as e:
                        # an unacknowledged delete (a crashed flush's tombstone) may show
                        if None in versions and "array not found" in str(e):
                            continue
                        raise
                    ok = False
                    for v, shape in (x for x in versions if x is not None):
                        exp = value(index(ds, "d"), index(arr, "a"), v, shape)
                        ok = ok or (data is not None and data.shape == exp.shape and data.dtype == exp.dtype and np.array_equal(data, exp))
                    if not ok:
                        got = None if data is None else (data.dtype, data.shape, data.reshape(-1)[:2].tolist())
                        errs.append(f"{what}: {ds}/{arr}: read {got}, expected one of the versions {versions}")
        except Exception as e:  # an unopenable store is the failure being looked for
            errs.append(f"{what}: atlas-python failed: {type(e).__name__}: {e}")
    if errs:
        raise SystemExit(f"{len(errs)} problem(s) of {len(spec)} stores:\n  " + "\n  ".join(errs[:40]))
    print(len(spec))


def writer(mp, seed, log_path, mode=""):
    import time
    rng = random.Random(seed)
    closes_only = mode == "closes"
    log = open(log_path, "a", buffering=1)

    def note(line):
        log.write(line + "\n")
        log.flush()

    versions = {}
    # The test lazily unmounts the killed daemon's mount; a writer between two
    # operations at that moment would go on writing into the bare directory
    # underneath and never stop. The mount's device number tells them apart.
    dev = os.stat(mp).st_dev
    try:
        while True:
            if os.stat(mp).st_dev != dev:
                note("X gone")
                return
            r = rng.random()
            d, a = rng.randrange(3), rng.randrange(4)
            path = os.path.join(mp, f"d{d}", f"a{a}.npy")
            if r < 0.70:
                v = versions.get((d, a), 0) + 1
                versions[(d, a)] = v
                # mostly small arrays; sometimes a few MiB, so a kill can land mid-write
                cols = rng.choice([3, 5, 8, 13]) if rng.random() < 0.75 else rng.randrange(20000, 300000)
                shape = (1 + v % 3, cols)
                os.makedirs(os.path.join(mp, f"d{d}"), exist_ok=True)
                note(f"W {d} {a} {v} {shape[0]},{shape[1]}")
                with open(path, "wb") as f:
                    np.save(f, value(d, a, v, shape))
                    if not closes_only and rng.random() < 0.3:
                        f.flush()
                        note("S")
                        os.fsync(f.fileno())
                        note("A")
                note(f"K {time.time():.6f}")
            elif r < 0.78:
                if os.path.exists(path):
                    note(f"D {d} {a}")
                    os.unlink(path)
                    note(f"K {time.time():.6f}")
            elif closes_only:
                continue
            elif r < 0.92:
                note("L")
                with open(os.path.join(mp, ".atlasfs", "flush"), "w") as f:
                    f.write("1")
                note("A")
            else:
                note("C")
                with open(os.path.join(mp, ".atlasfs", "compact"), "w") as f:
                    f.write("1")
                note("A")
    except OSError as e:
        note(f"X {e.errno}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "check":
        check(sys.argv[2])
    elif cmd == "writer":
        writer(sys.argv[2], int(sys.argv[3]), sys.argv[4], *sys.argv[5:6])
    else:
        raise SystemExit(f"unknown command {cmd}")
