"""A/B rounds for cold reads, not the benchmark: the 1 GiB array of bench/data/full/large
(or the stacked view of a cross-dataset case) read cold through one or more atlasfs
binaries and by atlas-python, interleaved, with medians, spreads and the daemon's
CPU time per thread (from /proc/PID/task/*/schedstat, summed by thread name).

"cold" is issue 13's: a fresh mount, the store's files in the OS page cache (read
once before every run, for every reader alike).

usage: .venv/bin/python bench/cold_ab.py [--rounds 3] [--codecs zstd,lz4,none]
           [--case large|sensors|profile|gridded] [--pattern full|slice] BIN[@--mount-opt=v...] [BIN2 ...]
"""
import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
import bench as B  # noqa: E402


def thread_cpu(pid):
    """{thread name: CPU seconds} of every thread of `pid`."""
    out = collections.Counter()
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (t / "comm").read_text().strip()
            ns = int((t / "schedstat").read_text().split()[0])
        except OSError:
            continue
        out[re.sub(r"[-_ ]?\d+$", "", name)] += ns / 1e9
    return out


def run_fs(binary, store, fn, extra):
    """(seconds, result, daemon thread CPU) of fn() on a fresh mount of `store`.
    `binary` may carry its own mount options: PATH@--opt=value@--opt2=value."""
    binary, *own = binary.split("@")
    extra = [*extra, *own]
    B.BIN = Path(binary)
    with B.Mount(store, *extra) as m:
        before = thread_cpu(m.pid)
        dt, got = B.timed(fn)
        after = thread_cpu(m.pid)
    return dt, got, {k: after[k] - before.get(k, 0) for k in after}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--codecs", default="zstd,lz4,none")
    ap.add_argument("--case", default="large")
    ap.add_argument("--pattern", default="full")
    ap.add_argument("--extra", default="", help="extra mount options, space-separated")
    a = ap.parse_args()
    import atlas
    extra = a.extra.split()
    B.MNT.mkdir(parents=True, exist_ok=True)
    d = C.workload_dir(False, a.case)
    if a.case == "large":
        want = np.load(d / "npy" / "big" / "data.npy", mmap_mode="r")
        f = B.MNT / "big" / "data.npy"
        fs_fn = lambda: np.load(f)
        api = {"atlas-python read_array": lambda s: atlas.Atlas.open(str(s)).open_dataset("big").read_array("data")}
    else:
        c = C.CASES[a.case]
        names = C.dataset_names(C.SIZES["full"][a.case])
        sl = C.slice_of(c["shape"])
        start, sshape = [0] * len(sl), [s.stop for s in sl]
        var = C.READ_VAR
        full = np.stack([np.load(d / "npy" / n / f"{var}.npy") for n in names])
        want = full if a.pattern == "full" else np.ascontiguousarray(full[(slice(None),) + sl])
        f = B.MNT / ".atlasfs" / "stacked" / f"{var}.npy"
        fs_fn = (lambda: np.load(f)) if a.pattern == "full" else (lambda: np.array(np.load(f, mmap_mode="r")[(slice(None),) + sl]))
        if a.pattern == "full":
            api = {"atlas-python read_array loop": lambda s: (lambda h: [h.open_dataset(n).read_array(var) for n in names])(atlas.Atlas.open(str(s))),
                   "atlas-python across_stacked": lambda s: (lambda h: h.read_array_across_stacked(var, names))(atlas.Atlas.open(str(s)))}
        else:
            api = {"atlas-python read_array loop": lambda s: (lambda h: [h.open_dataset(n).read_array(var, start, sshape) for n in names])(atlas.Atlas.open(str(s))),
                   "atlas-python across_stacked": lambda s: (lambda h: h.read_array_across_stacked(var, names, start, sshape))(atlas.Atlas.open(str(s)))}
    times = collections.defaultdict(list)
    cpu = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in range(a.rounds):
        for codec in a.codecs.split(","):
            store = d / f"atlas-{codec}"
            for i, binary in enumerate(a.bins):
                B.prewarm(store)
                dt, got, th = run_fs(binary, store, fs_fn, extra)
                if r == 0:
                    B.same(f"{codec} bin{i}", np.asarray(got), want)
                del got
                times[(codec, f"bin{i}")].append(dt)
                for k, v in th.items():
                    cpu[(codec, f"bin{i}")][k].append(v)
            for name, fn in api.items():
                B.prewarm(store)
                h_t = time.perf_counter()
                got = fn(store)
                dt = time.perf_counter() - h_t
                if r == 0 and a.case != "large" and name.endswith("loop"):
                    got = np.stack(got)
                if r == 0:
                    B.same(f"{codec} {name}", np.asarray(got), want)
                del got
                times[(codec, name)].append(dt)
    print(f"{a.case} {a.pattern}, {a.rounds} rounds, load {os.getloadavg()[0]:.1f}; bins: " + " ".join(f"bin{i}={b}" for i, b in enumerate(a.bins)))
    for codec in a.codecs.split(","):
        best_api = min(statistics.median(v) for (cd, n), v in times.items() if cd == codec and n.startswith("atlas-python"))
        for (cd, n), v in times.items():
            if cd != codec:
                continue
            m = statistics.median(v)
            line = f"  {codec:5s} {n:32s} median {m * 1e3:8.1f} ms  [{min(v) * 1e3:.1f} – {max(v) * 1e3:.1f}]  ÷ atlas-python best {m / best_api:.2f}×"
            if (cd, n) in cpu:
                th = {k: statistics.median(x) for k, x in cpu[(cd, n)].items() if statistics.median(x) > 0.001}
                line += "  cpu " + ", ".join(f"{k} {x * 1e3:.0f}" for k, x in sorted(th.items(), key=lambda kv: -kv[1]))
            print(line, flush=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        B.cleanup_mounts()
