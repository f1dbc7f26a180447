"""Rename churn on one passthrough file: 2 writers replace MOUNT/shared/s.npy by
rename(2) as fast as they can while 4 readers np.load it (whole, and through mmap).
Prints each failed open (UTC time, reader, errno) and the number of reads.

    python tests/python/passthrough_churn.py MOUNT SECONDS

A diagnostic for the passthrough I/O-mode races (docs/troubleshooting.md, "Input/output
error opening an array on a --passthrough mount"); not part of the suite. numpy's
mmap_mode opens the path twice, so a header of one version with the size of another
(ValueError) is the reader's own race, as on a local disk, and is not counted.
"""
import os, sys, time, numpy as np, multiprocessing as mp, datetime
mnt = sys.argv[1]; secs = float(sys.argv[2])
d = os.path.join(mnt, "shared"); os.makedirs(d, exist_ok=True)
target = os.path.join(d, "s.npy")
np.save(target, np.full(300000, -1, dtype=np.int64))
def writer(k):
    end = time.time() + secs; seq = 0
    while time.time() < end:
        seq += 1
        tmp = os.path.join(d, f".tmp{k}.npy")
        with open(tmp, "wb") as f:
            np.save(f, np.full(200000 + 1000 * (seq % 50), k * 1000000 + seq, dtype=np.int64)); f.flush(); os.fsync(f.fileno())
        os.rename(tmp, target)
def reader(r):
    end = time.time() + secs; errs = []
    n = 0
    while time.time() < end:
        try:
            if n % 2: np.load(target)
            else:
                m = np.load(target, mmap_mode="r"); _ = m[:10].copy(); del m
        except ValueError:
            pass
        except OSError as e:
            errs.append(f"{datetime.datetime.now(datetime.timezone.utc).isoformat()} reader {r} {e.errno} {e.strerror}")
        n += 1
    return errs, n
if __name__ == "__main__":
    with mp.Pool(6) as p:
        ws = [p.apply_async(writer, (k,)) for k in range(2)]
        rs = [p.apply_async(reader, (r,)) for r in range(4)]
        for w in ws: w.get()
        tot = 0
        for r in rs:
            errs, n = r.get(); tot += n
            for e in errs: print(e)
        print("reads", tot)
