"""Measures atlasfs against what users would use instead and renders docs/benchmarks.md.

Reads what gen.py wrote. Every time is wall clock from time.perf_counter() around
the read (or write) itself, in this process, after imports; the median of --runs.
"cold" = a fresh mount (empty daemon cache, the store's files in the OS page cache);
"warm" = the same read again on that mount. The large array is also read "disk-cold"
(the OS page cache dropped first), an extra row.

usage: bench.py [--quick] [--only NAME[,NAME]] [--runs N] [--gridded-codecs zstd,lz4,none]
"""
import argparse
import atexit
import datetime
import gc
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import common as C
import latency
import remote

MNT = C.SCRATCH / "mnt"
# Every mount uses a private copy of the binary, taken at start: a rebuild of
# target/release/atlasfs during the run (cargo in the same tree) cannot mix two builds.
BIN = C.SCRATCH / "bin" / "atlasfs"
BIN_BUILT = None  # mtime of target/release/atlasfs when it was copied
MOUNT_DEFAULTS = {}  # `atlasfs mount --help` defaults of the binary measured
NPROC = os.cpu_count()
MiB = 1 << 20
_active = set()  # mounts to undo whatever happens


# ---------------------------------------------------------------- mount handling

def daemon_pid(mnt):
    """The daemon serving `mnt`: `atlasfs mount STORE MNT ... --foreground` (what the
    background mode re-executes itself as; tests/mount.rs finds it the same way)."""
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            args = Path(f"/proc/{e}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"atlasfs") and b"mount" in args and str(mnt).encode() in args and b"--foreground" in args:
            return int(e)
    return None


def force_unmount(mnt):
    subprocess.run(["fusermount3", "-u", "-z", str(mnt)], stderr=subprocess.DEVNULL, check=False)


class Mount:
    """`atlasfs mount STORE MNT` for a with-block; always unmounted on the way out."""

    def __init__(self, store, *extra):
        # a URL (s3://…) stays a string: Path() would fold its "//"
        self.store, self.extra = (store if "://" in str(store) else Path(store)), list(extra)

    def __enter__(self):
        MNT.mkdir(parents=True, exist_ok=True)
        cmd = [str(BIN), "mount", str(self.store), str(MNT), "--log-file", str(C.SCRATCH / "atlasfs.log"), *self.extra]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        self.mount_s = time.perf_counter() - t
        _active.add(MNT)
        self.pid = daemon_pid(MNT)
        if self.pid is None:
            self.unmount()
            raise RuntimeError(f"no atlasfs daemon found for {MNT}")
        return self

    def __exit__(self, *exc):
        self.unmount()

    def unmount(self):
        try:
            subprocess.run([str(BIN), "unmount", str(MNT)], check=True, timeout=300, stdout=subprocess.DEVNULL)
        except Exception as e:  # noqa: BLE001 - fall back to a lazy unmount, never leave it behind
            print(f"bench: atlasfs unmount failed ({e}); fusermount3 -u -z", file=sys.stderr)
            force_unmount(MNT)
        _active.discard(MNT)
        deadline = time.time() + 60
        while self.pid and Path(f"/proc/{self.pid}").exists() and time.time() < deadline:
            try:
                if ") Z " in Path(f"/proc/{self.pid}/stat").read_text():
                    break
            except OSError:
                break
            time.sleep(0.02)

    def counters(self):
        """The daemon's own counters (.atlasfs/stats): FUSE reads served, bytes decoded."""
        st = json.loads((MNT / ".atlasfs" / "stats").read_text())
        return dict(reads=st["reads"], decoded=st["cache"]["bytes_decoded"], misses=st["cache"]["misses"])

    def counted(self, fn):
        """(seconds, result, what the daemon did meanwhile) of fn(), less what reading
        the counters themselves costs (measured once per mount)."""
        if not hasattr(self, "_own"):
            self._own = {}
            self._own = self.counted(lambda: None)[2]
        before = self.counters()
        dt, res = timed(fn)
        after = self.counters()
        return dt, res, {k: after[k] - before[k] - self._own.get(k, 0) for k in after}

    def reset_peak(self):
        # "5" resets the peak RSS (VmHWM) to the current RSS (proc(5)).
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def peak(self):
        m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{self.pid}/status").read_text())
        return int(m.group(1)) * 1024


def cleanup_mounts():
    for mnt in list(_active):
        force_unmount(mnt)
        _active.discard(mnt)


def stale_scratch_mounts():
    """Mounts left under bench/data/scratch by a killed earlier run (ours only)."""
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        where = line.split()[1].replace("\\040", " ")
        if where.startswith(str(C.SCRATCH)):
            out.append(where)
    return out


# ---------------------------------------------------------------- helpers

def timed(fn):
    gc.collect()
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def prewarm(path):
    """Read every file under `path` once, so the OS page cache holds it."""
    for dirpath, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                while fh.read(8 * MiB):
                    pass


def drop_caches():
    if os.geteuid() != 0:
        return False
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3")
    return True


def mount_defaults():
    """{option: default} of `atlasfs mount`, as its --help states them."""
    text = subprocess.run([str(BIN), "mount", "--help"], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"--([\w-]+) <[^>]+>[^\n]*?\[default: ([^\]]+)\]", text))


def size_bytes(text):
    m = re.fullmatch(r"(\d+)([KMGT]?)", text)
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2)]


class Results:
    def __init__(self, workload):
        self.workload = workload
        self.records = []
        self.notes = []
        self.fuse = []
        self.profile = []

    def add(self, reader, times, state=None, case=None, codec=None, pattern=None, rss=None, **extra):
        r = dict(case=case, codec=codec, pattern=pattern, reader=reader, state=state,
                 times=[round(t, 6) for t in times], median=statistics.median(times), rss=rss, **extra)
        self.records.append(r)
        where = "/".join(str(x) for x in (case, codec, pattern) if x)
        print(f"  {where:24s} {reader:44s} {state or '':5s} {fmt_s(r['median']):>10s}" + (f"  rss {rss / MiB:.0f} MiB" if rss else ""), flush=True)
        return r


def fmt_s(s):
    if s is None:
        return "–"
    if s < 0.01:
        return f"{s * 1e3:.2f} ms"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fs_runs(fn, store, runs, check=None, extra=()):
    """(cold times, warm times, peak daemon RSS, daemon counters of the first cold and
    warm run) of fn() on fresh mounts of `store`."""
    cold, warm, rss, work = [], [], [], {}
    for r in range(runs):
        with Mount(store, *extra) as m:
            m.reset_peak()
            dt, res, w = m.counted(fn)
            cold.append(dt)
            if r == 0:
                work["cold"] = w
                if check:
                    check(res)
            del res
            dt, res, w = m.counted(fn)
            warm.append(dt)
            work.setdefault("warm", w)
            del res
            rss.append(m.peak())
    return cold, warm, max(rss), work


PERF = shutil.which("perf") is not None and os.geteuid() == 0


def fuse_requests(fn):
    """{request: count} of what the kernel sent this mount's daemon while fn() ran, from
    perf's fuse:fuse_request_send tracepoint; None without perf (or the tracepoint)."""
    if not PERF:
        return None
    conn = os.minor(os.stat(MNT).st_dev)  # a FUSE mount is the anonymous device 0:N, N its connection
    out = C.SCRATCH / "fuse.perf"
    p = subprocess.Popen(["perf", "record", "-q", "-e", "fuse:fuse_request_send", "-a", "-o", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # perf has no readiness signal
    try:
        fn()
    finally:
        time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        p.wait(60)
    text = subprocess.run(["perf", "script", "-i", str(out), "-F", "trace"], capture_output=True, text=True).stdout
    counts = {}
    for m in re.finditer(r"connection (\d+) req \d+ opcode \d+ \(FUSE_(\w+)\)", text):
        if int(m.group(1)) == conn:
            counts[m.group(2)] = counts.get(m.group(2), 0) + 1
    return counts or None


def trace_requests(res, what, files, store, fn, warm_too=False, extra=()):
    """Counts the FUSE requests of one untimed run of fn() on a fresh mount (and of a
    second, warm one), to show where the time of the timed runs goes."""
    if not PERF:
        return
    with Mount(store, *extra):
        # perf needs ~1 s to start, so the second run comes ~1 s after the first: with a
        # --ttl shorter than that it shows LOOKUPs an immediate warm run would not make.
        for state in ("cold", "again, ~1 s later") if warm_too else ("cold",):
            ops = fuse_requests(fn)
            if ops:
                res.fuse.append(dict(what=what, state=state, files=files, ops=ops))


def busy_core_check(res, case, codec, store, fn, runs):
    """The warm per-file loop again while another process keeps one core spinning.
    On an idle VM every FUSE round trip pays for waking an idle vCPU; this shows how
    much of the per-file time is that wake-up latency rather than work."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with Mount(store):
            fn()
            times = [timed(fn)[0] for _ in range(runs)]
    finally:
        spin.kill()
        spin.wait()
    res.add("atlasfs np.load per file, one core kept busy", times, "warm", case, codec, "full")


def daemon_cpu_ns(pid):
    """CPU time of every thread of `pid` so far, ns (schedstat: exact, not tick-rounded)."""
    total = 0
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return total


def syscall_profile(res, case, store, files, local_files, passes=3):
    """Where a warm per-file read goes: the median wall time of each system call
    np.load makes per file (open, the isatty ioctl of Python's open(), fstat, the
    read, close), on the mount and on local disk, and the daemon's CPU time per
    file. Timed one call at a time in this process, no tracer in the way."""
    def steps(paths):
        out = {k: [] for k in ("openat", "ioctl (isatty)", "fstat", "read", "close")}
        for _ in range(passes):
            for f in paths:
                t0 = time.perf_counter_ns()
                fd = os.open(f, os.O_RDONLY)
                t1 = time.perf_counter_ns()
                os.isatty(fd)
                t2 = time.perf_counter_ns()
                n = os.fstat(fd).st_size
                t3 = time.perf_counter_ns()
                os.read(fd, n)
                t4 = time.perf_counter_ns()
                os.close(fd)
                t5 = time.perf_counter_ns()
                for k, a, b in zip(out, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
                    out[k].append((b - a) / 1e3)
        return {k: statistics.median(v) for k, v in out.items()}

    steps(local_files)
    local = steps(local_files)
    with Mount(store) as m:
        steps(files)  # warm: the kernel has the pages and attributes
        cpu0 = daemon_cpu_ns(m.pid)
        mount = steps(files)
        cpu = (daemon_cpu_ns(m.pid) - cpu0) / 1e3 / (len(files) * passes)
    res.profile.append(dict(what=f"warm per-file read ({case})", local=local, mount=mount, daemon_cpu_us=cpu))


def listing_profile(res, tree, n, passes=2):
    """What `ls -l` does per entry (lstat, then getxattr of security.selinux,
    system.posix_acl_access, system.posix_acl_default), timed call by call on the
    local tree and on default and --xattrs mounts."""
    names = ("security.selinux", "system.posix_acl_access", "system.posix_acl_default")

    def steps(root):
        entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
        out = {k: [] for k in ("lstat", *(f"getxattr {x}" for x in names))}
        for _ in range(passes):
            for e in entries:
                p = os.path.join(root, e)
                t = time.perf_counter_ns()
                os.lstat(p)
                out["lstat"].append((time.perf_counter_ns() - t) / 1e3)
                for x in names:
                    t = time.perf_counter_ns()
                    try:
                        os.getxattr(p, x, follow_symlinks=False)
                    except OSError:
                        pass
                    out[f"getxattr {x}"].append((time.perf_counter_ns() - t) / 1e3)
        return {k: statistics.median(v) for k, v in out.items()}

    steps(tree)
    local = steps(tree)
    rows = {}
    for label, extra in (("mount", ()), ("mount --xattrs", ("--xattrs",))):
        with Mount(tree.parent / "atlas", *extra) as m:
            steps(MNT)
            cpu0 = daemon_cpu_ns(m.pid)
            rows[label] = steps(MNT)
            rows[label + " cpu"] = (daemon_cpu_ns(m.pid) - cpu0) / 1e3 / (n * passes)
    res.profile.append(dict(what="`ls -l` per entry (listing)", local=local, mount=rows["mount"], daemon_cpu_us=rows["mount cpu"],
                            mount_noxattrs=rows["mount --xattrs"], daemon_cpu_noxattrs_us=rows["mount --xattrs cpu"]))


def same(what, got, want):
    got = np.stack(got) if isinstance(got, list) else got
    if got.shape != want.shape or not np.array_equal(got, want):
        raise SystemExit(f"bench: {what} read different values than the plain .npy files")


# ---------------------------------------------------------------- 1. cross-dataset reads

def bench_case(case, quick, runs, codecs, res):
    import atlas
    import xarray as xr
    d = C.workload_dir(quick, case)
    c = C.CASES[case]
    names = C.dataset_names(C.SIZES[C.profile_name(quick)][case])
    sl = C.slice_of(c["shape"])
    start, sshape = [0] * len(sl), [s.stop for s in sl]
    var = C.READ_VAR
    fname = f"{var}.npy"

    def per_file(root, pattern):
        files = [root / n / fname for n in names]
        if pattern == "full":
            return lambda: [np.load(f) for f in files]
        return lambda: [np.array(np.load(f, mmap_mode="r")[sl]) for f in files]

    def stacked(pattern):
        f = MNT / ".atlasfs" / "stacked" / fname
        if pattern == "full":
            return lambda: np.load(f)
        return lambda: np.array(np.load(f, mmap_mode="r")[(slice(None),) + sl])

    prewarm(d / "npy")
    ref_full = np.stack([np.load(d / "npy" / n / fname) for n in names])
    ref = {"full": ref_full, "slice": np.ascontiguousarray(ref_full[(slice(None),) + sl])}

    for pattern in ("full", "slice"):
        fn = per_file(d / "npy", pattern)
        fn()
        res.add("plain .npy (local disk, warm)", [timed(fn)[0] for _ in range(runs)], "warm", case, None, pattern)

    for codec in codecs:
        store = d / f"atlas-{codec}"
        prewarm(store)
        for pattern in ("full", "slice"):
            chk = lambda got, p=pattern, w="atlasfs per-file": same(f"{case}/{codec} {w} {p}", got, ref[p])
            cold, warm, rss, work = fs_runs(per_file(MNT, pattern), store, runs, chk)
            res.add("atlasfs np.load per file", cold, "cold", case, codec, pattern, rss, daemon=work["cold"])
            res.add("atlasfs np.load per file", warm, "warm", case, codec, pattern, rss, daemon=work["warm"])
            chk = lambda got, p=pattern: same(f"{case}/{codec} stacked {p}", got, ref[p])
            cold, warm, rss, work = fs_runs(stacked(pattern), store, runs, chk)
            res.add("atlasfs .atlasfs/stacked", cold, "cold", case, codec, pattern, rss, daemon=work["cold"])
            res.add("atlasfs .atlasfs/stacked", warm, "warm", case, codec, pattern, rss, daemon=work["warm"])

            api = {
                "atlas-python read_array loop": (lambda a: [a.open_dataset(n).read_array(var) for n in names]) if pattern == "full"
                else (lambda a: [a.open_dataset(n).read_array(var, start, sshape) for n in names]),
                "atlas-python read_array_across_stacked": (lambda a: a.read_array_across_stacked(var, names)) if pattern == "full"
                else (lambda a: a.read_array_across_stacked(var, names, start, sshape)),
            }
            for reader, fn in api.items():
                same(f"{case}/{codec} {reader} {pattern}", fn(atlas.Atlas.open(str(store))), ref[pattern])  # also warms the page cache
                times = []
                for _ in range(runs):
                    a = atlas.Atlas.open(str(store))  # a fresh handle: empty block cache, like a fresh mount
                    times.append(timed(lambda: fn(a))[0])
                    del a
                res.add(reader, times, "cold", case, codec, pattern)

    if case == "sensors":
        busy_core_check(res, case, codecs[0], d / f"atlas-{codecs[0]}", per_file(MNT, "full"), runs)
    if case in ("sensors", "profile"):
        syscall_profile(res, case, d / f"atlas-{codecs[0]}", [MNT / n / fname for n in names], [d / "npy" / n / fname for n in names])
    store = d / f"atlas-{codecs[0]}"
    trace_requests(res, "`np.load` of every file", len(names), store, per_file(MNT, "full"), warm_too=True)
    trace_requests(res, "`np.load(mmap_mode='r')` + slice of every file", len(names), store, per_file(MNT, "slice"))
    trace_requests(res, "`np.load` of the stacked file", 1, store, stacked("full"))

    # zarr v3 (zstd level 3), one store per dataset, read the way atlas's own benchmark does.
    import warnings
    warnings.filterwarnings("ignore")
    paths = [str(d / "zarr" / f"{n}.zarr") for n in names]
    prewarm(d / "zarr")

    def zarr_read(pattern, paths=paths):
        # The "override" options skip comparing coordinates across the files: the
        # fastest way to stack identical datasets (xarray's own advice for speed).
        m = xr.open_mfdataset(paths, engine="zarr", combine="nested", concat_dim="dataset", parallel=True,
                              data_vars="all", coords="minimal", compat="override", join="override", consolidated=False)
        v = m[var]
        if pattern == "slice":
            v = v.isel({dim: s for dim, s in zip(c["dims"], sl)})
        return v.values

    zarr_read("full", paths[:8])  # one-time backend and dask start-up, outside the timing
    for pattern in ("full", "slice"):
        times = []
        for r in range(min(runs, C.ZARR_RUNS)):
            dt, got = timed(lambda: zarr_read(pattern))
            if r == 0:
                same(f"{case} zarr {pattern}", got, ref[pattern])
            times.append(dt)
        res.add("zarr v3 + xarray.open_mfdataset", times, "warm", case, None, pattern)
    why_n = " (not the spec's 1000: at 7.7 MB a dataset, three codecs plus the peers would not fit the time budget)" if case == "gridded" else ""
    res.notes.append(f"N = {len(names)} datasets{why_n}; `{var}` {c['vars'][0][1]} {c['shape']}, chunks {c['chunks'] or 'single'}; slice {tuple((s.start, s.stop) for s in sl)}")


# ---------------------------------------------------------------- 2. one large array

def decode_limit(codec, plain, res, runs):
    """Decoding alone, on 8 MiB blocks of the same data (atlas closes a block at 8 MiB),
    with the codec's Python binding: zstd level 3, lz4 block with size prefix, none = memcpy."""
    src = np.load(plain, mmap_mode="r").reshape(-1).view(np.uint8)
    block = 8 * MiB
    k = max(1, min(16, src.size // block))
    raw = [bytes(src[i * block:(i + 1) * block]) for i in range(k)]
    if codec == "zstd":
        import zstandard
        comp = [zstandard.ZstdCompressor(level=3).compress(b) for b in raw]
        dec = lambda b: zstandard.ZstdDecompressor().decompress(b)
    elif codec == "lz4":
        import lz4.block
        comp = [lz4.block.compress(b, store_size=True) for b in raw]
        dec = lz4.block.decompress
    else:
        comp = [np.frombuffer(b, np.uint8) for b in raw]
        dec = lambda b: b.copy()
    if bytes(dec(comp[0])) != raw[0]:
        raise SystemExit(f"bench: {codec} round trip failed")
    scale = src.size / (k * block)  # time for the whole array at the sampled rate
    one = [timed(lambda: [dec(b) for b in comp])[0] * scale for _ in range(max(3, runs))]
    with ThreadPoolExecutor(NPROC) as ex:
        many = [timed(lambda: list(ex.map(dec, comp)))[0] * scale for _ in range(max(3, runs))]
    ratio = sum(len(b) for b in raw) / sum(len(b) for b in comp)
    res.add("decoding alone, 1 thread", one, None, "large", codec, "full", ratio=round(ratio, 3))
    res.add(f"decoding alone, {NPROC} threads", many, None, "large", codec, "full", ratio=round(ratio, 3))


def bench_large(quick, runs, res):
    import atlas
    d = C.workload_dir(quick, "large")
    shape = tuple(C.SIZES[C.profile_name(quick)]["large"])
    plain = d / "npy" / "big" / "data.npy"
    f = MNT / "big" / "data.npy"
    can_drop = os.geteuid() == 0
    if not can_drop:
        res.notes.append("not root: the OS page cache cannot be dropped, so there are no disk-cold rows")

    want = np.load(plain, mmap_mode="r")
    # Rounds, each measuring every reader once, so that a slow spell of this VM (they
    # come and go over minutes) hits all readers alike instead of one of them.
    # Cold is issue 13's: a fresh mount (or a fresh atlas-python handle) with the
    # store's files read into the OS page cache first, for every reader alike. The
    # spool (--passthrough) is private to a mount and removed at unmount, so a fresh
    # mount never starts with one. "disk" runs drop the OS page cache first instead.
    plain_cold, plain_warm = [], []
    acc = {codec: dict(cold=[], warm=[], rss=[], work={}, api_cold=[], disk=[], api_disk=[]) for codec in C.CODECS}

    def fs_read(store, a_, state, r):
        with Mount(store) as m:
            m.reset_peak()
            dt, got, w = m.counted(lambda: np.load(f))
            a_[state].append(dt)
            if r == 0:
                a_["work"][state] = w
                same(f"large/{codec} atlasfs", got, want)
            del got
            if state == "cold":
                dt, got, w = m.counted(lambda: np.load(f))
                a_["warm"].append(dt)
                a_["work"].setdefault("warm", w)
                del got
            a_["rss"].append(m.peak())

    def api_read(store, a_, state, r):
        a = atlas.Atlas.open(str(store))  # a fresh handle: empty block cache, like a fresh mount
        dt, got = timed(lambda: a.open_dataset("big").read_array("data"))
        a_[state].append(dt)
        if r == 0:
            same(f"large/{codec} atlas-python", got, want)
        del got, a

    for r in range(runs):
        drop_caches()
        plain_cold.append(timed(lambda: np.load(plain))[0])
        plain_warm.append(timed(lambda: np.load(plain))[0])
        for codec in C.CODECS:
            store, a_ = d / f"atlas-{codec}", acc[codec]
            prewarm(store)
            fs_read(store, a_, "cold", r)
            prewarm(store)
            api_read(store, a_, "api_cold", r)
            if can_drop:
                drop_caches()
                fs_read(store, a_, "disk", r)
                drop_caches()
                api_read(store, a_, "api_disk", r)
    res.add("plain .npy (local disk, cold)", plain_cold, "cold", "large", None, "full")
    res.add("plain .npy (local disk, warm)", plain_warm, "warm", "large", None, "full")
    for codec in C.CODECS:
        a_ = acc[codec]
        res.add("atlasfs np.load", a_["cold"], "cold", "large", codec, "full", max(a_["rss"]), daemon=a_["work"]["cold"])
        res.add("atlasfs np.load", a_["warm"], "warm", "large", codec, "full", max(a_["rss"]), daemon=a_["work"]["warm"])
        res.add("atlas-python read_array", a_["api_cold"], "cold", "large", codec, "full")
        if a_["disk"]:
            res.add("atlasfs np.load", a_["disk"], "disk", "large", codec, "full", max(a_["rss"]), daemon=a_["work"]["disk"])
            res.add("atlas-python read_array", a_["api_disk"], "disk", "large", codec, "full")
        decode_limit(codec, plain, res, runs)
    prewarm(d / "atlas-zstd")
    trace_requests(res, "`np.load` of the array (zstd, store files in the page cache)", 1, d / "atlas-zstd", lambda: np.load(f))
    chunks = C.large_chunks(shape)
    res.notes.append(f"One float32 array {shape} = {np.prod(shape) * 4 / 2**30:.2f} GiB, chunks {chunks} (~4 MiB, the chunking the mount gives written arrays); "
                     f"values 15 + N(0, 5) from default_rng(seed=0), which compress little")


# ---------------------------------------------------------------- 3. listing

def bench_listing(quick, runs, res):
    d = C.workload_dir(quick, "listing")
    n = C.SIZES[C.profile_name(quick)]["listing"]
    store, tree = d / "atlas", d / "tree"
    prewarm(store)

    def sh(*args):
        return lambda: subprocess.run(list(args), stdout=subprocess.DEVNULL, check=True)

    for what, cmd in (("ls -l", ["ls", "-l"]), ("find", ["find"])):
        fn = sh(*cmd, str(tree))
        fn()
        res.add(f"{what}, local directory tree", [timed(fn)[0] for _ in range(runs)], "warm", "listing", None, what)

    mounts = []
    # `ls -l` asks every entry for its SELinux label and ACLs; without xattrs the
    # kernel stops asking, so that mode is measured too.
    for what, cmd, extra in (("ls -l", ["ls", "-l"], ()), ("find", ["find"], ()), ("ls -l --xattrs", ["ls", "-l"], ("--xattrs",))):
        chk = None
        if what == "ls -l":
            def chk(_):
                got = len([e for e in os.listdir(MNT) if not e.startswith(".")])  # .atlasfs is the control dir
                if got != n:
                    raise SystemExit(f"bench: the mount lists {got} datasets, expected {n}")
        cold, warm, rss = [], [], []
        for r in range(runs):
            with Mount(store, *extra) as m:
                if not extra:
                    mounts.append(m.mount_s)
                m.reset_peak()
                cold.append(timed(sh(*cmd, str(MNT)))[0])
                warm.append(timed(sh(*cmd, str(MNT)))[0])
                rss.append(m.peak())
                if chk and r == 0:
                    chk(None)
        res.add(f"{what}, atlasfs mount", cold, "cold", "listing", None, what, max(rss))
        res.add(f"{what}, atlasfs mount", warm, "warm", "listing", None, what, max(rss))
    res.add("atlasfs mount (command returns)", mounts, None, "listing", None, "mount")
    listing_profile(res, tree, n)
    trace_requests(res, "`ls -l` of the top level", n, store, sh("ls", "-l", str(MNT)))
    trace_requests(res, "`find` over everything", n, store, sh("find", str(MNT)))
    res.notes.append(f"{n} datasets with one float32 (24,) array each (atlas-python, zstd, msgpack+zstd metadata); "
                     f"the local tree holds the same {n} dirs × 1 .npy; `ls -l` lists the top level, `find` walks everything; "
                     f"output to /dev/null; default mount options (--ttl {MOUNT_DEFAULTS.get('ttl', '?')})")


# ---------------------------------------------------------------- 4. writes

def bench_writes(quick, runs, res):
    import atlas
    d = C.workload_dir(quick, "writes")
    n = C.SIZES[C.profile_name(quick)]["writes"]
    names = C.dataset_names(n)
    src = d / "src"
    prewarm(src)
    fs_t, api_t, local_t, rss = [], [], [], []
    for r in range(runs):
        store = C.SCRATCH / "w-store"
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
        subprocess.run(["sync"], check=True)
        with Mount(store, "--create") as m:
            m.reset_peak()

            def cp_fsync():
                subprocess.run(["cp", "-r", f"{src}/.", str(MNT)], check=True)
                fd = os.open(MNT / names[-1] / "temperature.npy", os.O_RDONLY)
                try:
                    os.fsync(fd)  # the mount's durability boundary: commits and flushes the whole store
                finally:
                    os.close(fd)

            fs_t.append(timed(cp_fsync)[0])
            rss.append(m.peak())
        if r == 0:  # what was copied in is what atlas-python reads back
            a = atlas.Atlas.open(str(store))
            if len(a.list_datasets()) != n:
                raise SystemExit(f"bench: the written store holds {len(a.list_datasets())} datasets, expected {n}")
            for nm in (names[0], names[-1]):
                same(f"writes {nm}", a.open_dataset(nm).read_array("temperature"), np.load(src / nm / "temperature.npy"))
            del a
        shutil.rmtree(store)

        target = C.SCRATCH / "w-atlas"
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["sync"], check=True)

        def api_write():
            a = atlas.Atlas.create(str(target), codec="zstd")
            for nm in names:
                v = np.load(src / nm / "temperature.npy")
                ds = a.create_dataset(nm)
                ds.define_array("temperature", "float32", ["dim_0", "dim_1"], list(v.shape))
                ds.write_array("temperature", [0, 0], v)
            a.flush()

        api_t.append(timed(api_write)[0])
        shutil.rmtree(target)

        target = C.SCRATCH / "w-local"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        subprocess.run(["sync"], check=True)

        def cp_sync():
            subprocess.run(["cp", "-r", f"{src}/.", str(target)], check=True)
            subprocess.run(["sync", "-f", str(target)], check=True)

        local_t.append(timed(cp_sync)[0])
        shutil.rmtree(target)
    res.add("atlasfs: cp -r + fsync", fs_t, None, "writes", "zstd", "write", max(rss))
    store = C.SCRATCH / "w-store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    trace_requests(res, "`cp -r` of every file + `fsync`", n, store, cp_fsync, extra=("--create",))
    shutil.rmtree(store, ignore_errors=True)
    res.add("atlas-python define+write+flush", api_t, None, "writes", "zstd", "write")
    res.add("local disk: cp -r + sync -f", local_t, None, "writes", None, "write")
    res.notes.append(f"{n} dataset dirs × 1 temperature.npy float32 (50, 168) (33.6 kB, the profile data) into an empty store "
                     f"(zstd, JSON metadata: what `mount --create` and Atlas.create make); atlas-python reads each source file with np.load")


# ---------------------------------------------------------------- 5. the zarr view

def bench_zarrview(quick, runs, res):
    """`.mean().compute()` of one variable over every dataset: xarray + dask through
    `.atlasfs/zarr/_stacked` against atlas-python's open_as_many_xarray_dataset."""
    import atlas
    import dask
    import xarray as xr
    import zarr  # noqa: F401  (imported here so that no timing pays for it)
    d = C.workload_dir(quick, "zarrview")
    n = C.SIZES[C.profile_name(quick)]["zarrview"]
    names = C.dataset_names(n)
    store = d / "atlas"
    prewarm(store)

    def via_atlas():
        a = atlas.Atlas.open(str(store))
        return float(a.open_as_many_xarray_dataset(names, concat_dim="dataset")[C.READ_VAR].mean().compute())

    def via_view(chunks):
        ds = xr.open_zarr(MNT / ".atlasfs" / "zarr" / "_stacked", mask_and_scale=False, chunks=chunks)
        assert ds.sizes["dataset"] == n, ds.sizes
        return float(ds[C.READ_VAR].mean().compute())

    want = via_atlas()  # also warms the page cache and the imports
    with Mount(store):
        via_view("auto")  # xarray's zarr backend and dask start-up, outside the timing
    # Interleaved rounds (atlas-python, then each way of opening the view, each on a
    # fresh mount): this shared machine's slow spells hit all readers alike.
    # chunks="auto" lets dask merge zarr chunks into larger tasks; {} = one dask task
    # per zarr chunk, open_zarr's default. A `_stacked` chunk spans many datasets
    # (~4 MiB), so either way there are a few tasks, not one per dataset.
    modes = (("chunks=\"auto\"", "auto"), ("default chunks", {}))
    peer, cold, warm, rss = [], {m: [] for m, _ in modes}, {m: [] for m, _ in modes}, {m: [] for m, _ in modes}
    for _ in range(runs):
        peer.append(timed(via_atlas)[0])
        for label, chunks in modes:
            with Mount(store) as m:
                m.reset_peak()
                dt, got = timed(lambda: via_view(chunks))
                cold[label].append(dt)
                warm[label].append(timed(lambda: via_view(chunks))[0])
                rss[label].append(m.peak())
            if abs(got - want) > 1e-4 * max(1.0, abs(want)):
                raise SystemExit(f"bench: zarr view mean {got} != atlas-python {want}")
    res.add("atlas-python open_as_many_xarray_dataset + mean", peer, "cold", "zarrview")
    for label, _ in modes:
        reader = f"atlasfs zarr view, xr.open_zarr({label}) + mean"
        res.add(reader, cold[label], "cold", "zarrview", rss=max(rss[label]))
        res.add(reader, warm[label], "warm", "zarrview", rss=max(rss[label]))
    res.notes.append(f"{n} datasets written by atlas-python `add_xarray_dataset` (the profile case's `{C.READ_VAR}`, "
                     f"float32 (50, 168), one chunk each, depth/time coordinates; zstd); `.mean().compute()` with dask's "
                     f"default scheduler ({dask.config.get('scheduler', 'threads')}); the view opened with "
                     "`xr.open_zarr(MOUNT/.atlasfs/zarr/_stacked, mask_and_scale=False, chunks=...)`, whose `_stacked` chunks "
                     "span ~4 MiB of datasets each (124 here: 9 chunk files); readers in interleaved rounds, each view run on a "
                     "fresh mount (cold), then again (warm); the target row is open_zarr's default chunks, docs/zarr.md's advice")


# ---------------------------------------------------------------- 6. a store of 50,000 datasets

def bench_bigstore(quick, runs, res):
    """One small change in a big store: `mkdir` + `np.save` of a (24,) f32 + `fsync`
    through the mount, against atlas-python's create + define + write + flush of the
    same change; the daemon's RSS after all the saves (issue 13: costs grow with the
    change, not the store)."""
    import atlas
    d = C.workload_dir(quick, "bigstore")
    n = C.SIZES[C.profile_name(quick)]["bigstore"]
    small = np.arange(24, dtype=np.float32)
    py_t, fs_t = [], []
    py_store, store = C.SCRATCH / "big-py", C.SCRATCH / "big-fs"
    for s in (py_store, store):
        shutil.rmtree(s, ignore_errors=True)
        shutil.copytree(d / "atlas", s)
    a = atlas.Atlas.open(str(py_store))
    with Mount(store) as m:
        rss_mounted = int([ln for ln in open(f"/proc/{m.pid}/status") if ln.startswith("VmRSS")][0].split()[1]) * 1024
        m.reset_peak()
        # Interleaved, change by change, so load on the shared machine falls on both alike.
        for i in range(runs):
            def change():
                ds = a.create_dataset(f"new_{i}")
                ds.define_array("x", "float32", ["t"], [24])
                ds.write_array("x", [0], small)
                a.flush()

            def save():
                os.mkdir(MNT / f"new_{i}")
                with open(MNT / f"new_{i}" / "x.npy", "wb") as f:
                    np.save(f, small)
                    f.flush()
                    os.fsync(f.fileno())
            py_t.append(timed(change)[0])
            fs_t.append(timed(save)[0])
        rss_after = int([ln for ln in open(f"/proc/{m.pid}/status") if ln.startswith("VmRSS")][0].split()[1]) * 1024
        peak = m.peak()
    del a
    shutil.rmtree(py_store)
    b = atlas.Atlas.open(str(store))
    same("bigstore last save", b.open_dataset(f"new_{runs - 1}").read_array("x"), small)
    if len(b.list_datasets()) != n + runs:
        raise SystemExit(f"bench: the big store holds {len(b.list_datasets())} datasets, expected {n + runs}")
    del b
    shutil.rmtree(store)
    res.add("atlasfs: mkdir + np.save + fsync", fs_t, None, "bigstore", "zstd", "write", peak, rss_mounted=rss_mounted, rss_after=rss_after)
    res.add("atlas-python create+define+write+flush", py_t, None, "bigstore", "zstd", "write")
    res.notes.append(f"a store of {n} datasets (each one (24,) float32; metadata file {C.dir_bytes(d / 'atlas') / 2**20:.0f} MiB with the data), "
                     f"{runs} changes of one new dataset each, in sequence on one mount / one atlas-python handle, the two interleaved change by change; RSS: after mount "
                     f"{rss_mounted / 2**20:.0f} MiB, after the {runs} saves {rss_after / 2**20:.0f} MiB")


# ---------------------------------------------------------------- 7. one large write

def thread_cpu_ns(pid):
    """{thread name: CPU ns so far} of every thread of `pid` (schedstat), names with
    their trailing digits folded together (tokio-runtime-w, fuse-worker-3 → fuse-worker-)."""
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (t / "comm").read_text().strip().rstrip("0123456789")
            out[name] = out.get(name, 0) + int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return out


def bench_bigwrite(quick, runs, res):
    """`np.save` of one large random float32 array + `fsync` into an empty zstd store
    through the mount, against the same save on ext4, `zstd -3 -T2` of the same bytes
    file to file (the encoder's limit on this machine), and atlas-python's
    define + write + flush; measured in interleaved rounds."""
    import atlas
    if shutil.which("zstd") is None:
        raise SystemExit("bench: the bigwrite workload needs the zstd CLI: apt-get install zstd (bench/run.sh does)")
    d = C.workload_dir(quick, "bigwrite")
    src = d / "data.npy"
    prewarm(d)
    arr = np.load(src)
    shape, nbytes = arr.shape, arr.nbytes
    chunks = C.large_chunks(shape)  # what the mount picks for a written array: whole rows, ~4 MiB
    C.SCRATCH.mkdir(parents=True, exist_ok=True)
    t = {k: [] for k in ("ext4", "zstd", "api", "fs", "fs_write", "fs_fsync")}
    rss, cpu, zsize = [], [], None
    for r in range(runs):
        out = C.SCRATCH / "bw-ext4.npy"

        def ext4():
            with open(out, "wb") as f:
                np.save(f, arr)
                f.flush()
                os.fsync(f.fileno())
        subprocess.run(["sync"], check=True)
        t["ext4"].append(timed(ext4)[0])
        out.unlink()

        z = C.SCRATCH / "bw.npy.zst"
        subprocess.run(["sync"], check=True)
        t["zstd"].append(timed(lambda: subprocess.run(["zstd", "-3", "-T2", "-q", "-f", str(src), "-o", str(z)], check=True))[0])
        zsize = z.stat().st_size
        z.unlink()

        target = C.SCRATCH / "bw-atlas"
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["sync"], check=True)

        def api():
            a = atlas.Atlas.create(str(target), codec="zstd")
            ds = a.create_dataset("big")
            ds.define_array("data", "float32", ["dim_0", "dim_1"], list(shape), chunk_shape=list(chunks))
            ds.write_array("data", [0, 0], arr)
            a.flush()
        t["api"].append(timed(api)[0])
        shutil.rmtree(target)

        store = C.SCRATCH / "bw-store"
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
        subprocess.run(["sync"], check=True)
        with Mount(store, "--create") as m:
            os.mkdir(MNT / "big")
            m.reset_peak()
            cpu0 = thread_cpu_ns(m.pid)
            marks = {}

            def save():
                with open(MNT / "big" / "data.npy", "wb") as f:
                    np.save(f, arr)
                    f.flush()
                    marks["written"] = time.perf_counter()
                    os.fsync(f.fileno())
                marks["synced"] = time.perf_counter()
            dt, _ = timed(save)
            t["fs"].append(dt)
            # The split from marks taken inside the timed call (a mark taken before
            # `timed` counted its own overhead as writing: fsync came out negative).
            t["fs_fsync"].append(marks["synced"] - marks["written"])
            t["fs_write"].append(dt - t["fs_fsync"][-1])
            cpu1 = thread_cpu_ns(m.pid)
            cpu.append({k: (v - cpu0.get(k, 0)) / 1e9 for k, v in cpu1.items() if v - cpu0.get(k, 0) > 1e7})
            rss.append(m.peak())
        if r == 0:  # what was saved through the mount is what atlas-python reads back
            a = atlas.Atlas.open(str(store))
            n0 = shape[0]
            for lo in sorted({0, n0 // 2, max(0, n0 - 2 * chunks[0])}):
                hi = min(n0, lo + 2 * chunks[0])
                same(f"bigwrite rows {lo}..{hi}", a.open_dataset("big").read_array("data", [lo, 0], [hi - lo, shape[1]]), arr[lo:hi])
            del a
        shutil.rmtree(store)
    res.add("ext4: np.save + fsync", t["ext4"], None, "bigwrite", None, "write")
    res.add("zstd -3 -T2 of the .npy, file to file", t["zstd"], None, "bigwrite", "zstd", "write", ratio=round(nbytes / zsize, 3))
    res.add("atlas-python define+write+flush", t["api"], None, "bigwrite", "zstd", "write")
    res.add("atlasfs: np.save + fsync", t["fs"], None, "bigwrite", "zstd", "write", max(rss),
            write_s=statistics.median(t["fs_write"]), fsync_s=statistics.median(t["fs_fsync"]), thread_cpu_s=cpu[len(cpu) // 2])
    res.notes.append(f"one float32 array {shape} = {nbytes / 2**30:g} GiB of uniform random values (default_rng(0).random), "
                     f"saved with `np.save` into an open file + `fsync`; atlas-python and the mount use chunks {chunks} (~4 MiB, "
                     f"whole rows: the mount's choice for a written array), codec zstd; `zstd -3 -T2 -f data.npy -o x.zst` reads "
                     f"the same file from the page cache (no fsync of its output); each writer once per round, {runs} rounds, "
                     f"outputs removed and `sync` run between writers")


# ---------------------------------------------------------------- targets and the document

def find(results, w, **kw):
    for r in results.get(w, {}).get("records", []):
        if all(r.get(k) == v for k, v in kw.items()):
            return r["median"]
    return None


def targets(results):
    """[(target, where, atlasfs, peer, ratio, limit, pass)]; ratios < limit pass."""
    rows = []

    def add(target, where, got, peer, limit, absolute=False, **key):
        if got is None or peer is None:
            return
        ratio = got if absolute else got / peer
        rows.append(dict(target=target, where=where, got=got, peer=peer, ratio=ratio, limit=limit, ok=ratio <= limit, absolute=absolute, **key))

    for case in C.CASES:
        for codec in C.CODECS:
            for pattern in ("full", "slice"):
                q = dict(case=case, codec=codec, pattern=pattern)
                per_file = find(results, case, reader="atlasfs np.load per file", state="warm", **q)
                per_file_cold = find(results, case, reader="atlasfs np.load per file", state="cold", **q)
                stack_cold = find(results, case, reader="atlasfs .atlasfs/stacked", state="cold", **q)
                plain = find(results, case, reader="plain .npy (local disk, warm)", pattern=pattern)
                apis = [find(results, case, reader=rd, **q) for rd in ("atlas-python read_array loop", "atlas-python read_array_across_stacked")]
                best = min([x for x in apis if x is not None], default=None)
                where = f"{case} {codec} {pattern}"
                add("per-file np.load (warm) ≤ 1.5× plain .npy (warm)", where, per_file, plain, 1.5, **q)
                add("per-file np.load (cold) ≤ 2× atlas-python best", where, per_file_cold, best, 2.0, **q)
                add("stacked view (cold) ≤ 0.5× atlas-python best", where, stack_cold, best, 0.5, **q)
    shape = results.get("large", {}).get("shape", [1, 1])
    nbytes = int(np.prod(shape)) * 4
    size = f"{nbytes / 2**30:g} GiB" if nbytes >= 2**30 else f"{nbytes / MiB:g} MiB"
    for codec in C.CODECS:
        q = dict(case="large", codec=codec)
        add("large cold ≤ 0.5× atlas-python read_array (cold)", f"{size} {codec}",
            find(results, "large", reader="atlasfs np.load", state="cold", **q), find(results, "large", reader="atlas-python read_array", state="cold", **q), 0.5)
        add("large warm ≤ 1.1× plain .npy (warm)", f"{size} {codec}",
            find(results, "large", reader="atlasfs np.load", state="warm", **q), find(results, "large", reader="plain .npy (local disk, warm)"), 1.1)
    add("ls -l (warm) ≤ 1.2× local tree", "listing", find(results, "listing", reader="ls -l, atlasfs mount", state="warm"),
        find(results, "listing", reader="ls -l, local directory tree"), 1.2)
    add("mount ≤ 0.3 s", "listing", find(results, "listing", reader="atlasfs mount (command returns)"), 1.0, 0.3, absolute=True)
    add("writes ≤ 1.0× atlas-python", "writes", find(results, "writes", reader="atlasfs: cp -r + fsync"),
        find(results, "writes", reader="atlas-python define+write+flush"), 1.0)
    # The view opened as docs/zarr.md recommends: open_zarr's default chunks (one dask
    # task per `_stacked` chunk of ~4 MiB); chunks="auto" is measured alongside.
    add("zarr view mean (cold) ≤ 1.0× atlas-python open_as_many + mean", "zarrview",
        find(results, "zarrview", reader="atlasfs zarr view, xr.open_zarr(default chunks) + mean", state="cold"),
        find(results, "zarrview", reader="atlas-python open_as_many_xarray_dataset + mean"), 1.0)
    add("50k-dataset store: one save ≤ 1.0× atlas-python's flush of it", "bigstore", find(results, "bigstore", reader="atlasfs: mkdir + np.save + fsync"),
        find(results, "bigstore", reader="atlas-python create+define+write+flush"), 1.0)
    bw = results.get("bigwrite", {}).get("shape")
    if bw:
        add("one large np.save + fsync ≤ 1.5× zstd -3 -T2 of the same bytes", f"{int(np.prod(bw)) * 4 / 2**30:g} GiB f32",
            find(results, "bigwrite", reader="atlasfs: np.save + fsync"), find(results, "bigwrite", reader="zstd -3 -T2 of the .npy, file to file"), 1.5)
    remote.targets(results, add, find)
    budget = results.get("_meta", {}).get("cache_budget")
    for w in C.WORKLOADS:
        # the remote workload also records its peers' RSS (rclone, s3fs): only atlasfs's counts here
        peak = max((r["rss"] for r in results.get(w, {}).get("records", []) if r.get("rss") and "atlasfs" in r["reader"]), default=None)
        # A big store's decoded metadata is the daemon's to hold (issue 13): the RSS
        # right after mount, which is mostly that, is added to the allowance.
        meta = max((r.get("rss_mounted", 0) for r in results.get(w, {}).get("records", [])), default=0)
        if budget and peak:
            allow = budget + 64 * MiB + meta
            rows.append(dict(target="daemon peak RSS ≤ cache budget + 64 MiB" + (" + RSS after mount" if meta else ""), where=w, got=peak / MiB, peer=None,
                             ratio=peak / allow, limit=1.0, ok=peak <= allow, absolute=False, mib=True, budget=budget / MiB))
    return rows


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor())
    mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) * 1024
    return dict(nproc=NPROC, cpu=cpu, ram_gib=round(mem / 2**30, 1), kernel=platform.release())


def versions():
    import atlas
    import dask
    import xarray
    import zarr
    out = dict(atlas_python=atlas.__version__, numpy=np.__version__, zarr=zarr.__version__, xarray=xarray.__version__, dask=dask.__version__,
               python=platform.python_version())
    for mod in ("zstandard", "lz4"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    try:
        # the tree as it is now; the binary may have been built from an older state
        out["commit"] = subprocess.run(["git", "-C", str(C.ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(C.ROOT), "status", "--porcelain", "--untracked-files=no", "src", "Cargo.toml", "Cargo.lock"],
                               capture_output=True, text=True).stdout.strip()
        out["commit"] += " (+ uncommitted changes under src/)" if dirty else ""
    except OSError:
        pass
    out["binary_built"] = BIN_BUILT
    return out


READER_ORDER = ["atlasfs np.load per file", "atlasfs .atlasfs/stacked", "atlas-python read_array loop",
                "atlas-python read_array_across_stacked", "plain .npy (local disk, warm)", "zarr v3 + xarray.open_mfdataset"]
READER_LABEL = {
    "atlasfs np.load per file": "atlasfs, `np.load` per file (slice: `mmap_mode='r'` + slice)",
    "atlasfs .atlasfs/stacked": "atlasfs, `.atlasfs/stacked/temperature.npy` (slice: mmap + `[:, …]`)",
    "atlas-python read_array loop": "atlas-python, loop of `view.read_array`",
    "atlas-python read_array_across_stacked": "atlas-python, `read_array_across_stacked`",
    "plain .npy (local disk, warm)": "plain `.npy` files on local disk (warm)",
    "zarr v3 + xarray.open_mfdataset": "zarr v3 (zstd 3) + `xarray.open_mfdataset` (warm)",
}


def num(x):
    """A count or an average count, short: 2, 0.14, 1465."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def render_profile(p, w):
    """The call-by-call tables of syscall_profile / listing_profile."""
    for r in w.get("profile") or []:
        cols = [("local disk", r["local"]), ("atlasfs mount", r["mount"])]
        if r.get("mount_noxattrs"):
            cols.append(("atlasfs --xattrs", r["mount_noxattrs"]))
        p(f"Where the time of a {r['what']} goes: the median wall time of each system call, timed one call at a time "
          "in the reading process (µs; warm: the kernel holds the pages and attributes).\n")
        p("| call | " + " | ".join(c for c, _ in cols) + " |")
        p("|---|" + "---:|" * len(cols))
        for k in r["local"]:
            p(f"| `{k}` | " + " | ".join(f"{v[k]:.1f}" for _, v in cols) + " |")
        p("| **sum** | " + " | ".join(f"**{sum(v.values()):.1f}**" for _, v in cols) + " |")
        cpu = f"{r['daemon_cpu_us']:.1f} µs"
        if r.get("mount_noxattrs"):
            cpu += f" (--xattrs: {r['daemon_cpu_noxattrs_us']:.1f} µs)"
        p(f"| *daemon CPU time per file, all threads* | | {cpu} |" + (" |" if r.get("mount_noxattrs") else ""))
        p("")


def render_fuse(p, w):
    """The FUSE requests table of one workload (empty without perf)."""
    rows = w.get("fuse") or []
    if not rows:
        return
    p("FUSE requests the kernel sent the daemon, per file (one untimed run, counted with perf's "
      "`fuse:fuse_request_send` tracepoint): this is where per-file time goes.\n")
    p("| operation | state | files | requests per file |")
    p("|---|---|---:|---|")
    for r in rows:
        n = r["files"]
        ops = ", ".join(f"{k} {num(v / n)}" for k, v in sorted(r["ops"].items(), key=lambda kv: -kv[1]))
        p(f"| {r['what']} | {r['state']} | {n} | {num(sum(r['ops'].values()) / n)}: {ops} |")
    p("")


# The section of docs/benchmarks.md each workload's results are rendered in.
SECTION = dict(sensors="§1", profile="§1", gridded="§1", large="§2", listing="§3", writes="§4", zarrview="§5",
               remote="§6", bigstore="§7", latency="§8", bigwrite="§9")


def render(results, out_path):
    meta = results["_meta"]
    L = []
    p = L.append
    p("# Benchmarks\n")
    runs = {w: v["runs"] for w, v in results.items() if w != "_meta"}
    by_n = {}
    for w, n in runs.items():
        by_n.setdefault(n, []).append(w)
    runs_text = "; ".join(f"{n} run{'s' if n != 1 else ''} for {', '.join(ws)}" for n, ws in sorted(by_n.items(), reverse=True))
    p("Generated by `bench/run.sh` (do not edit by hand): atlasfs against what users would use instead, "
      f"on the same data, written once by atlas-python 0.10. Every number is the median of several runs ({runs_text}; "
      f"zarr at most {C.ZARR_RUNS}), wall clock measured in the reading/writing process with `time.perf_counter` around "
      "the read or write itself, after imports.\n")
    m = meta["machine"]
    p(f"- **Machine:** {m['nproc']} cores (`nproc`), {m['cpu']}, {m['ram_gib']} GiB RAM, Linux {m['kernel']}")
    p(f"- **Date:** {meta['date']}; load average at start {meta['loadavg']} "
      "(other work on the machine shows up as noise)")
    v = meta["versions"]
    p(f"- **Software:** atlasfs {v.get('commit', '?')} (release binary built {v['binary_built']}), atlas-python {v['atlas_python']}, "
      f"numpy {v['numpy']}, zarr {v['zarr']}, xarray {v['xarray']}, dask {v['dask']}, Python {v['python']}")
    opts = ", ".join(f"`--{k} {v}`" for k, v in meta.get("mount_defaults", {}).items() if k in ("cache-size", "ttl", "metadata-ttl", "threads"))
    p(f"- **Mount:** the defaults ({opts}); the cache budget RSS is compared with is {meta['cache_budget'] // MiB} MiB")
    if meta.get("wall_s"):
        gen = f"; generating the data took {meta['gen_s'] / 60:.1f} min when it was written (cached since in `bench/data/`)" if meta.get("gen_s") else ""
        p(f"- **This run:** `{meta['command']}` took {meta['wall_s'] / 60:.1f} min, measurements {meta['bench_s'] / 60:.1f} min{gen}; "
          f"workloads measured: {', '.join(meta['workloads'])}")
    p("")
    p("**Which run each section comes from.** `--only` re-measures one workload and keeps the others' last results, "
      "so the sections below can be from different runs and binaries:\n")
    p("| section | workload | measured | binary | load average at start | runs |")
    p("|---|---|---|---|---|---:|")
    for w, v in results.items():
        if w != "_meta":
            p(f"| {SECTION.get(w, '')} | {w} | {v.get('date', '?')} | {v.get('commit', '?')} | {v.get('loadavg', '?')} | {v.get('runs', '?')} |")
    p("")
    header_notes = Path(__file__).with_name("header-notes.md")
    if header_notes.exists():
        p(header_notes.read_text().rstrip() + "\n")
    p("**Cold / warm.** *cold* = a fresh mount (`atlasfs unmount` + `atlasfs mount`) before the read, so the daemon's "
      "cache and the kernel's page cache of the mounted files are empty, while the store's own files are in the OS page cache; "
      "*warm* = the same read again on that mount. atlas-python gets a fresh `Atlas.open` handle for every run (its block cache empty, "
      "store files in the page cache), which is the same starting point as *cold*. Plain `.npy` and zarr are read once before timing (warm). "
      "Before every cold large-array run (atlasfs and atlas-python alike) the store's files are read once, so they are in the page cache; "
      "the *disk-cold* rows drop the OS page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`) first instead. "
      "A fresh mount never starts with a spool (`--passthrough`'s decoded copies are private to a mount and removed at unmount).\n")
    p("**How targets are judged.** Against a warm local peer (plain `.npy`, the local tree): atlasfs *warm*; against atlas-python "
      "(fresh handle): atlasfs *cold*. Both ratios are shown in the tables below.\n")

    rows = targets(results)
    verdict = lambda t: "PASS" if t["ok"] else "**MISS**"
    p("## Targets\n")
    p(f"{sum(t['ok'] for t in rows)} of {len(rows)} pass. Ratio = atlasfs ÷ peer; a target passes when the ratio is at most its limit.\n")
    cross = [t for t in rows if t.get("case") in C.CASES]
    if cross:
        cols = [(cd, pt) for cd in C.CODECS for pt in ("full", "slice")]
        p("| cross-dataset target | case | " + " | ".join(f"{cd} {pt}" for cd, pt in cols) + " |")
        p("|---|---|" + "---:|" * len(cols))
        for target in dict.fromkeys(t["target"] for t in cross):
            for case in C.CASES:
                cells = {(t["codec"], t["pattern"]): t for t in cross if t["target"] == target and t["case"] == case}
                if cells:
                    p(f"| {target} | {case} | " + " | ".join(f"{cells[k]['ratio']:.2f}× {verdict(cells[k])}" if k in cells else "–" for k in cols) + " |")
        p("")
    p("| target | where | atlasfs | peer | ratio | result |")
    p("|---|---|---:|---:|---:|---|")
    for t in rows:
        if t in cross:
            continue
        if t.get("mib"):
            p(f"| {t['target']} | {t['where']} | {t['got']:.0f} MiB | budget {t['budget']:.0f} MiB + 64 | {t['ratio']:.2f}× | {verdict(t)} |")
        elif t.get("rt"):
            p(f"| {t['target']} | {t['where']} | {t['got']:.0f} round trips | | | {verdict(t)} |")
        elif t["absolute"]:
            p(f"| {t['target']} | {t['where']} | {fmt_s(t['got'])} | | | {verdict(t)} |")
        else:
            p(f"| {t['target']} | {t['where']} | {fmt_s(t['got'])} | {fmt_s(t['peer'])} | {t['ratio']:.2f}× | {verdict(t)} |")
    p("")
    # Why the misses miss: hand-written (with the profiles behind it), kept next to
    # this script so a re-run does not drop it.
    misses = Path(__file__).with_name("misses.md")
    if misses.exists():
        p(misses.read_text().rstrip() + "\n")

    p("## 1. Cross-dataset reads\n")
    p("Every dataset's copy of `temperature`, full and the spec's 25 % slice (the first `int(0.25·len)` of every axis). "
      "Stores written by atlas-python 0.10 with `meta_format=\"msgpack\", meta_compression=\"zstd\"`, one store per codec. "
      "Per-file readers get the list of paths up front (no directory listing in the timing). "
      "zarr: `xr.open_mfdataset(paths, engine=\"zarr\", combine=\"nested\", concat_dim=\"dataset\", parallel=True, "
      "data_vars=\"all\", coords=\"minimal\", compat=\"override\", join=\"override\")[\"temperature\"]` (+ `.isel` for the slice) `.values`, "
      "timed including the open, as atlas's own benchmark does; the override options are xarray's fastest way to stack identical datasets. "
      "Ratio columns: atlasfs against plain `.npy` (warm) and against atlas-python's faster API.\n")
    for case in C.CASES:
        if case not in results:
            continue
        w = results[case]
        p(f"### {case}\n")
        p(". ".join(w["notes"]) + f". Measured {w['date']}.\n")
        codecs = [cd for cd in C.CODECS if any(r["codec"] == cd for r in w["records"])]
        head = "| reader | state | " + " | ".join(f"{cd} {pt}" for cd in codecs for pt in ("full", "slice")) + " |"
        p(head)
        p("|---|---|" + "---:|" * (2 * len(codecs)))
        for reader in READER_ORDER:
            states = sorted({r["state"] for r in w["records"] if r["reader"] == reader}, key=lambda s: (s != "cold", s))
            for st in states:
                cells = []
                for cd in codecs:
                    for pt in ("full", "slice"):
                        x = find(results, case, reader=reader, state=st, codec=cd, pattern=pt)
                        if x is None:
                            x = find(results, case, reader=reader, state=st, codec=None, pattern=pt)
                        cells.append(fmt_s(x))
                p(f"| {READER_LABEL[reader]} | {st} | " + " | ".join(cells) + " |")
        for reader, st, label in (("atlasfs np.load per file", "warm", "per-file warm ÷ plain .npy"),
                                  ("atlasfs np.load per file", "cold", "per-file cold ÷ atlas-python best"),
                                  ("atlasfs np.load per file", "warm", "per-file warm ÷ atlas-python best"),
                                  ("atlasfs .atlasfs/stacked", "cold", "stacked cold ÷ atlas-python best"),
                                  ("atlasfs .atlasfs/stacked", "warm", "stacked warm ÷ atlas-python best")):
            cells = []
            for cd in codecs:
                for pt in ("full", "slice"):
                    x = find(results, case, reader=reader, state=st, codec=cd, pattern=pt)
                    if "plain" in label:
                        peer = find(results, case, reader="plain .npy (local disk, warm)", pattern=pt)
                    else:
                        peer = min([y for y in (find(results, case, reader=rd, codec=cd, pattern=pt) for rd in
                                               ("atlas-python read_array loop", "atlas-python read_array_across_stacked")) if y is not None], default=None)
                    cells.append(f"{x / peer:.2f}×" if x and peer else "–")
            p(f"| *{label}* | | " + " | ".join(cells) + " |")
        for reader, label in (("atlasfs np.load per file", "per-file"), ("atlasfs .atlasfs/stacked", "stacked")):
            cells = []
            for cd in codecs:
                for pt in ("full", "slice"):
                    d_ = {r["state"]: r.get("daemon") for r in w["records"] if r["reader"] == reader and r["codec"] == cd and r["pattern"] == pt}
                    cells.append(" / ".join(f"{d_[st]['reads']} r, {num(d_[st]['decoded'] / MiB)} MiB" if d_.get(st) else "–" for st in ("cold", "warm")))
            p(f"| *daemon work, {label}: FUSE reads, MiB decoded (cold / warm)* | | " + " | ".join(cells) + " |")
        rss = []
        for cd in codecs:
            for pt in ("full", "slice"):
                xs = [r["rss"] for r in w["records"] if r["codec"] == cd and r["pattern"] == pt and r.get("rss")]
                rss.append(f"{max(xs) / MiB:.0f} MiB" if xs else "–")
        p("| *daemon peak RSS* | | " + " | ".join(rss) + " |")
        sizes = w.get("storage", {})
        if sizes:
            p("\nStorage: " + ", ".join(f"{k} {v / MiB:.1f} MiB" for k, v in sizes.items()) + ".")
        p("")
        busy = next((r for r in w["records"] if r["reader"] == "atlasfs np.load per file, one core kept busy"), None)
        if busy:
            idle = find(results, case, reader="atlasfs np.load per file", state="warm", codec=busy["codec"], pattern="full")
            why = (": much of each FUSE round trip on this VM is waking an idle vCPU (daemon thread and reader), not work, "
                   "so per-file numbers swing with background load" if busy["median"] < 0.7 * idle else "")
            p(f"**Wake-up latency.** The warm per-file loop ({busy['codec']}, full) takes {fmt_s(busy['median'])} while another "
              f"process keeps one core spinning, against {fmt_s(idle)} without it{why}.\n")
        render_fuse(p, w)
        render_profile(p, w)

    if "large" in results:
        w = results["large"]
        p("## 2. One large array\n")
        p(". ".join(w["notes"]) + f". Measured {w['date']}.\n")
        shape = tuple(w["shape"])
        nbytes = int(np.prod(shape)) * 4
        p("| reader | state | " + " | ".join(C.CODECS) + " |")
        p("|---|---|" + "---:|" * len(C.CODECS))
        order = [("atlasfs np.load", "cold"), ("atlasfs np.load", "warm"), ("atlas-python read_array", "cold"),
                 ("atlasfs np.load", "disk"), ("atlas-python read_array", "disk"),
                 ("plain .npy (local disk, warm)", "warm"), ("plain .npy (local disk, cold)", "cold"),
                 ("decoding alone, 1 thread", None), (f"decoding alone, {meta['machine']['nproc']} threads", None)]
        for reader, st in order:
            cells = []
            for cd in C.CODECS:
                x = find(results, "large", reader=reader, state=st, codec=cd) or find(results, "large", reader=reader, state=st, codec=None)
                cells.append(f"{fmt_s(x)} ({nbytes / x / 1e9:.2f} GB/s)" if x else "–")
            label = {"plain .npy (local disk, warm)": "plain `.npy` on local disk", "plain .npy (local disk, cold)": "plain `.npy` on local disk",
                     "atlasfs np.load": "atlasfs, `np.load` through the mount"}.get(reader, reader)
            p(f"| {label} | {({'disk': 'disk-cold'}).get(st, st or '')} | " + " | ".join(cells) + " |")
        cells = []
        for cd in C.CODECS:
            x = next((r.get("ratio") for r in w["records"] if r["codec"] == cd and r.get("ratio")), None)
            cells.append(f"{x:.3f}" if x else "–")
        p("| *compression ratio of the data (raw ÷ compressed)* | | " + " | ".join(cells) + " |")
        for reader, st, peer, pst, label in (("atlasfs np.load", "cold", "atlas-python read_array", "cold", "atlasfs cold ÷ atlas-python cold"),
                                             ("atlasfs np.load", "disk", "atlas-python read_array", "disk", "atlasfs disk-cold ÷ atlas-python disk-cold"),
                                             ("atlasfs np.load", "warm", "plain .npy (local disk, warm)", "warm", "atlasfs warm ÷ plain .npy warm"),
                                             ("atlasfs np.load", "warm", "atlas-python read_array", "cold", "atlasfs warm ÷ atlas-python cold")):
            cells = []
            for cd in C.CODECS:
                x = find(results, "large", reader=reader, state=st, codec=cd)
                y = find(results, "large", reader=peer, state=pst, codec=cd) or find(results, "large", reader=peer, state=pst, codec=None)
                cells.append(f"{x / y:.2f}×" if x and y else "–")
            p(f"| *{label}* | | " + " | ".join(cells) + " |")
        cells = []
        for cd in C.CODECS:
            d_ = {r["state"]: r.get("daemon") for r in w["records"] if r["reader"] == "atlasfs np.load" and r["codec"] == cd}
            cells.append(" / ".join(f"{d_[st]['reads']} r, {num(d_[st]['decoded'] / MiB)} MiB" if d_.get(st) else "–" for st in ("cold", "warm", "disk")))
        p("| *daemon work: FUSE reads, MiB decoded (cold / warm / disk-cold)* | | " + " | ".join(cells) + " |")
        cells = [f"{max(r['rss'] for r in w['records'] if r['codec'] == cd and r.get('rss')) / MiB:.0f} MiB" for cd in C.CODECS]
        p("| *daemon peak RSS* | | " + " | ".join(cells) + " |")
        p("\n*Decoding alone* is the limit a reader of this data cannot beat: the same data cut into 8 MiB blocks "
          "(atlas's block size), compressed with the codec (zstd level 3 with `zstandard`, lz4 block with size prefix with `lz4.block`), "
          f"then only the decompression timed, on one thread and on {meta['machine']['nproc']} threads, scaled from a sample "
          "of up to 128 MiB to the whole array. For `none` it is a memcpy of the blocks. `plain .npy … cold` shows what the disk itself gives after the cache drop.\n")
        if w.get("storage"):
            p("Storage: " + ", ".join(f"{k} {v / MiB:.0f} MiB" for k, v in w["storage"].items()) + ".\n")
        render_fuse(p, w)
        render_profile(p, w)

    if "listing" in results:
        w = results["listing"]
        p("## 3. Listing and mounting\n")
        p(". ".join(w["notes"]) + f". Measured {w['date']}.\n")
        p("| what | atlasfs cold (fresh mount) | atlasfs warm (again) | local tree | cold ÷ local | warm ÷ local | daemon peak RSS |")
        p("|---|---:|---:|---:|---:|---:|---:|")
        for what in ("ls -l", "ls -l --xattrs", "find"):
            c_ = find(results, "listing", reader=f"{what}, atlasfs mount", state="cold")
            w_ = find(results, "listing", reader=f"{what}, atlasfs mount", state="warm")
            loc = find(results, "listing", reader=f"{what.split(' --')[0]}, local directory tree")
            if c_ is None:
                continue
            rss = next((r["rss"] for r in w["records"] if r["reader"] == f"{what}, atlasfs mount" and r.get("rss")), None)
            p(f"| `{what}` | {fmt_s(c_)} | {fmt_s(w_)} | {fmt_s(loc)} | {c_ / loc:.2f}× | {w_ / loc:.2f}× | {rss / MiB:.0f} MiB |")
        p(f"| `atlasfs mount` returns | {fmt_s(find(results, 'listing', reader='atlasfs mount (command returns)'))} | | | | | |")
        p("")
        render_fuse(p, w)
        render_profile(p, w)

    if "writes" in results:
        w = results["writes"]
        p("## 4. Writes\n")
        p(". ".join(w["notes"]) + f". Measured {w['date']}.\n")
        api = find(results, "writes", reader="atlas-python define+write+flush")
        loc = find(results, "writes", reader="local disk: cp -r + sync -f")
        p("| writer | time | ÷ atlas-python | ÷ local cp | daemon peak RSS |")
        p("|---|---:|---:|---:|---:|")
        for r in w["records"]:
            rss = f"{r['rss'] / MiB:.0f} MiB" if r.get("rss") else ""
            p(f"| {r['reader']} | {fmt_s(r['median'])} | {r['median'] / api:.2f}× | {r['median'] / loc:.2f}× | {rss} |")
        p("\n`fsync` on one file of the mount commits and flushes the whole store (docs/semantics.md), so it is the mount's equivalent of `flush()`.\n")
        render_fuse(p, w)
        render_profile(p, w)

    if "zarrview" in results:
        w = results["zarrview"]
        p("## 5. The zarr view: xarray + dask over every dataset\n")
        p(". ".join(w["notes"]) + f". Measured {w['date']}. See [zarr.md](zarr.md).\n")
        api = find(results, "zarrview", reader="atlas-python open_as_many_xarray_dataset + mean")
        p("| reader | state | time | ÷ atlas-python | daemon peak RSS |")
        p("|---|---|---:|---:|---:|")
        for r in w["records"]:
            rss = f"{r['rss'] / MiB:.0f} MiB" if r.get("rss") else ""
            p(f"| {r['reader']} | {r['state'] or ''} | {fmt_s(r['median'])} | {r['median'] / api:.2f}× | {rss} |")
        p("")

    if "remote" in results:
        remote.render(p, results["remote"], fmt_s)
    # The remote figures so far come from partial runs, written by hand next to this
    # script (like misses.md) so a re-render keeps them.
    remote_notes = Path(__file__).with_name("remote-notes.md")
    if remote_notes.exists():
        if "remote" not in results:
            p("## 6. Remote: an `s3://` store against rclone and s3fs (issue 15)\n")
        p(remote_notes.read_text().rstrip() + "\n")

    if "bigstore" in results:
        w = results["bigstore"]
        p("## 7. One change in a store of 50,000 datasets\n")
        p(". ".join(w["notes"]) + f". Measured {w['date']}.\n")
        api = find(results, "bigstore", reader="atlas-python create+define+write+flush")
        p("| writer | time (median) | spread | ÷ atlas-python | daemon peak RSS |")
        p("|---|---:|---|---:|---:|")
        for r in w["records"]:
            rss = f"{r['rss'] / MiB:.0f} MiB" if r.get("rss") else ""
            p(f"| {r['reader']} | {fmt_s(r['median'])} | {fmt_s(min(r['times']))} – {fmt_s(max(r['times']))} | {r['median'] / api:.2f}× | {rss} |")
        p("\nWhere the time goes (perf of the daemon, 50,000 datasets, 2026-12-07 16:00): writing the 17 MB JSON metadata file "
          "(as atlas-python does), re-encoding the array's `data.stats`, merging the flushed metadata back into the live one, and "
          "a little JSON: a flush re-serialises only the datasets whose `Arc` changed and copies the others' text from the last "
          "file (`src/store/meta_json.rs`; encoding the whole file was 70–120 ms of a save), and compares the flushed and live "
          "metadata entry by entry by pointer before hashing any name. Before 2026-12-07 a flush also deep-cloned the metadata "
          "four times (750,000 allocations each), compared every dataset by encoding it, and read the file back to look for "
          "other writers (0.28 s against atlas-python's 0.09 s in issue 13; RSS 716 MiB after 100 saves).\n")

    if "latency" in results:
        latency.render(p, results["latency"], fmt_s)

    if "bigwrite" in results:
        w = results["bigwrite"]
        nbytes = int(np.prod(w["shape"])) * 4
        p("## 9. One large array written through the mount\n")
        p(". ".join(w["notes"]) + f". Measured {w['date']}.\n")
        z = find(results, "bigwrite", reader="zstd -3 -T2 of the .npy, file to file")
        p("| writer | time (median) | spread | ÷ zstd -T2 | GB/s | daemon peak RSS |")
        p("|---|---:|---|---:|---:|---:|")
        for r in w["records"]:
            rss = f"{r['rss'] / MiB:.0f} MiB" if r.get("rss") else ""
            p(f"| {r['reader']} | {fmt_s(r['median'])} | {fmt_s(min(r['times']))} – {fmt_s(max(r['times']))} | {r['median'] / z:.2f}× | "
              f"{nbytes / r['median'] / 1e9:.2f} | {rss} |")
        fs = next((r for r in w["records"] if r["reader"] == "atlasfs: np.save + fsync"), None)
        zr = next((r.get("ratio") for r in w["records"] if r.get("ratio")), None)
        if fs:
            cpu = ", ".join(f"`{k}` {v:.1f} s" for k, v in sorted(fs["thread_cpu_s"].items(), key=lambda kv: -kv[1]))
            p(f"\nThe atlasfs time splits into {fmt_s(fs['write_s'])} until `np.save` returned (the `WRITE`s) and "
              f"{fmt_s(fs['fsync_s'])} in `fsync` (the rest of the encoding, the commit, the flush that links or writes the sidecar); "
              f"daemon CPU time by thread (median round): {cpu}." + (f" The data compresses {zr:.3f}:1 with zstd -3." if zr else "") + "\n")
        p("Since branch `bigwrite2` (2026-12-07) a local store's flush links the encoder's block file into place as the sidecar instead of copying it, and float chunk statistics are computed by a vectorised loop. Interleaved A/B at 512 MiB (quick mode, medians of 3, load average 7–8): main 4fc4b96 9.73 s, `bigwrite2` 5.18 s, `zstd -3 -T2` 2.77 s (3.52× → 1.87×); `fsync` step 3.2 s → ≈ 0 s; daemon CPU 3.9 s → 2.1 s per save. One 4 GiB run at the end (load average 5.7): 18.55 s against `zstd -3 -T2`'s 12.15 s, 1.53× (2.55× before), `fsync` step ≈ 0 s, daemon CPU 17.3 s (`tokio-rt-worker` 14.4 s, `fuser-` 3.0 s; was 30 s). Profile and what is left: bench/misses.md.\n")

    p("## Reproducing\n")
    p("```sh\nbench/run.sh                 # everything (installs deps, builds, generates data once under bench/data/, measures, writes this file)\n"
      "bench/run.sh --quick         # small sizes, 1 run: a smoke test (writes bench/results/quick.md, not this file)\n"
      "bench/run.sh --only large    # one workload (sensors, profile, gridded, large, listing, writes, zarrview, bigstore, bigwrite, remote, latency); others keep their last results\n```\n")
    p("Raw numbers (every run) are in `bench/results/latest.json`.")
    out_path.write_text("\n".join(L) + "\n")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--runs", type=int)
    ap.add_argument("--gridded-codecs", default=",".join(C.CODECS))
    ap.add_argument("--render-only", action="store_true", help="re-render the document from the results JSON")
    args = ap.parse_args()
    only = [w for o in args.only for w in o.split(",") if w] or list(C.WORKLOADS)
    runs_of = lambda w: args.runs or C.RUNS[C.profile_name(args.quick)][w]
    results_dir = C.BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    json_path = results_dir / ("quick.json" if args.quick else "latest.json")
    doc_path = results_dir / "quick.md" if args.quick else C.ROOT / "docs" / "benchmarks.md"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    if args.render_only:
        render(results, doc_path)
        return
    for w in only:
        if w not in C.WORKLOADS:
            sys.exit(f"unknown workload {w!r}; expected one of {', '.join(C.WORKLOADS)}")
        if not C.is_complete(args.quick, w):
            sys.exit(f"no data for {w}: run bench/gen.py{' --quick' if args.quick else ''} first")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so finally/atexit unmount
    atexit.register(cleanup_mounts)
    for where in stale_scratch_mounts():
        print(f"bench: removing a stale mount at {where}", file=sys.stderr)
        force_unmount(where)
    shutil.rmtree(C.SCRATCH, ignore_errors=True)
    BIN.parent.mkdir(parents=True)
    global BIN_BUILT
    BIN_BUILT = datetime.datetime.fromtimestamp(C.BIN.stat().st_mtime).isoformat(timespec="seconds")
    shutil.copy2(C.BIN, BIN)
    MOUNT_DEFAULTS.update(mount_defaults())
    budget = size_bytes(MOUNT_DEFAULTS["cache-size"])

    old_remote = results.get("remote")
    t0, load0 = time.perf_counter(), os.getloadavg()
    try:
        for w in only:
            runs = runs_of(w)
            print(f"bench: {w} ({runs} runs)", flush=True)
            w_load = os.getloadavg()
            res = Results(w)
            if w in C.CASES:
                codecs = args.gridded_codecs.split(",") if w == "gridded" else list(C.CODECS)
                bench_case(w, args.quick, runs, codecs, res)
                if len(codecs) < len(C.CODECS):
                    res.notes.append(f"codecs measured: {', '.join(codecs)} only (time budget)")
                d = C.workload_dir(args.quick, w)
                storage = {f"atlas {cd}": C.dir_bytes(d / f"atlas-{cd}") for cd in codecs}
                storage.update({"plain .npy": C.dir_bytes(d / "npy"), "zarr": C.dir_bytes(d / "zarr")})
            elif w == "large":
                bench_large(args.quick, runs, res)
                d = C.workload_dir(args.quick, w)
                storage = {f"atlas {cd}": C.dir_bytes(d / f"atlas-{cd}") for cd in C.CODECS}
                storage["plain .npy"] = C.dir_bytes(d / "npy")
            elif w == "listing":
                bench_listing(args.quick, runs, res)
                storage = {}
            elif w == "bigstore":
                bench_bigstore(args.quick, runs, res)
                storage = {"atlas zstd": C.dir_bytes(C.workload_dir(args.quick, w) / "atlas")}
            elif w == "bigwrite":
                bench_bigwrite(args.quick, runs, res)
                storage = {}
            elif w == "remote":
                remote.run(args.quick, runs, res, sys.modules[__name__])
                storage = {k: C.dir_bytes(C.workload_dir(args.quick, w) / k) for k in ("atlas-large", "atlas-scan", "npy")}
            elif w == "latency":
                latency.run(args.quick, runs, res, sys.modules[__name__])
                storage = {}
            elif w == "zarrview":
                bench_zarrview(args.quick, runs, res)
                storage = {"atlas zstd": C.dir_bytes(C.workload_dir(args.quick, w) / "atlas")}
            else:
                bench_writes(args.quick, runs, res)
                storage = {}
            results[w] = dict(records=res.records, notes=res.notes, storage=storage, fuse=res.fuse, profile=res.profile,
                              date=datetime.datetime.now().isoformat(timespec="minutes"), runs=runs,
                              commit=versions().get("commit", "?"), loadavg=" ".join(f"{x:.2f}" for x in w_load))
            if w == "latency":
                results[w].update(latency=res.latency, probe=res.probe, machine=res.machine, loadavg=res.loadavg)
            if w == "remote":
                results[w] = remote.merge(old_remote, results[w])
            if w in ("large", "bigwrite"):
                results[w]["shape"] = list(C.SIZES[C.profile_name(args.quick)][w])
            json_path.write_text(json.dumps(results, indent=1) + "\n")  # keep what is done if a later workload fails
    finally:
        cleanup_mounts()
        shutil.rmtree(C.SCRATCH, ignore_errors=True)

    wall0 = os.environ.get("BENCH_T0")
    results["_meta"] = dict(
        date=datetime.datetime.now().astimezone().isoformat(timespec="minutes"), machine=machine(), versions=versions(),
        cache_budget=budget, mount_defaults=MOUNT_DEFAULTS, loadavg=" ".join(f"{x:.2f}" for x in load0),
        wall_s=(time.time() - float(wall0)) if wall0 else time.perf_counter() - t0, bench_s=time.perf_counter() - t0, workloads=only,
        gen_s=sum(float((C.workload_dir(args.quick, w) / ".gen_seconds").read_text()) for w in C.WORKLOADS
                  if (C.workload_dir(args.quick, w) / ".gen_seconds").exists()),
        command=os.environ.get("BENCH_CMD", "bench/bench.py " + " ".join(sys.argv[1:])).strip())
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    render(results, doc_path)
    print(f"bench: wrote {json_path.relative_to(C.ROOT)} and {doc_path.relative_to(C.ROOT)}")
    for t in targets(results):
        print(f"  {'PASS' if t['ok'] else 'MISS'}  {t['target']:52s} {t['where']:22s} {t['ratio']:.2f}")


if __name__ == "__main__":
    main()
