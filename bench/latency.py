"""The latency workload (issue 13, item 2): what one FUSE request costs a user program.

Each request type is timed as the system call that sends it, one call at a time with
`time.perf_counter_ns` around it, on a real atlasfs mount with the default options
(GETATTR: `--ttl 0`, so every `fstat` asks the daemon), and the same call on the
same tree of plain `.npy` files on local disk (ext4) next to it. Median and p90 of
all calls of all runs (a fresh mount per run).

  LOOKUP       stat of a file whose name the kernel has not seen (its directory's is cached)
  GETATTR      fstat of an open file, `--ttl 0`
  OPEN         open(O_RDONLY) of an .npy whose name is cached
  IOCTL        isatty (TCGETS) on that fd: Python's open() asks it of every file
  READ         4 KiB pread at offset 0 after posix_fadvise(DONTNEED): the page is not cached
  RELEASE      close: read-only opens are answered FOPEN_NOFLUSH, so no FLUSH; RELEASE is queued
               in the background, close does not wait for it
  READDIRPLUS  os.listdir of a dataset directory (OPENDIR, READDIRPLUS, then a plain READDIR that
               finds the end, RELEASEDIR)
Which requests each call sends was checked with perf's fuse:fuse_request_send tracepoint.
  np.load      the whole warm per-file load, for scale

Then the FUSE-over-io_uring probe (examples/fuse_uring_probe.rs, built by run.sh):
a trivial in-memory filesystem served the classic way (threads reading /dev/fuse),
the same with a short busy-poll before blocking, over io_uring (one queue per CPU),
and over io_uring with a busy-poll; its open/isatty/close loop and np.load loop are
timed against the same files on ext4, in interleaved rounds (each round mounts each
mode afresh), median and spread over rounds.
"""
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common as C

PROBE = C.ROOT / "target" / "release" / "examples" / "fuse_uring_probe"
PROBE_MODES = ("classic", "classic-poll", "uring", "uring-poll")
PROBE_FILES = 200
OPS = ("LOOKUP", "GETATTR", "OPEN", "IOCTL", "READ", "RELEASE", "READDIRPLUS", "np.load")
SYSCALL = {"LOOKUP": "stat, name not cached", "GETATTR": "fstat, attributes expired (`--ttl 0`)", "OPEN": "open",
           "IOCTL": "isatty (ioctl TCGETS)", "READ": "pread 4 KiB, page not cached", "RELEASE": "close (no FLUSH: `FOPEN_NOFLUSH`)",
           "READDIRPLUS": "listdir of a dataset (+ OPENDIR, READDIR, RELEASEDIR)", "np.load": "np.load of one (24,) f32, warm"}


def us(t0, t1):
    return (t1 - t0) / 1e3


def p90(xs):
    return statistics.quantiles(xs, n=10)[8] if len(xs) >= 2 else xs[0]


def per_call(root, names, out, ttl0=False):
    """Appends µs per call to out[op]; `root` holds <name>/value.npy for each name.
    On a fresh mount the first stat of each file is its LOOKUP."""
    files = [os.path.join(root, n, "value.npy") for n in names]
    for n in names:  # the directories' own LOOKUPs, out of the way
        os.stat(os.path.join(root, n))
    if not ttl0:
        for f in files:
            t = time.perf_counter_ns()
            os.stat(f)
            out["LOOKUP"].append(us(t, time.perf_counter_ns()))
    for f in files:
        t0 = time.perf_counter_ns()
        fd = os.open(f, os.O_RDONLY)
        t1 = time.perf_counter_ns()
        if ttl0:
            os.fstat(fd)
            t2 = time.perf_counter_ns()
            os.fstat(fd)
            t3 = time.perf_counter_ns()
            out["GETATTR"].append(us(t2, t3))
            os.close(fd)
            continue
        os.isatty(fd)
        t2 = time.perf_counter_ns()
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        t3 = time.perf_counter_ns()
        os.pread(fd, 4096, 0)
        t4 = time.perf_counter_ns()
        os.close(fd)
        t5 = time.perf_counter_ns()
        out["OPEN"].append(us(t0, t1))
        out["IOCTL"].append(us(t1, t2))
        out["READ"].append(us(t3, t4))
        out["RELEASE"].append(us(t4, t5))
    if ttl0:
        return
    for n in names:
        d = os.path.join(root, n)
        t = time.perf_counter_ns()
        os.listdir(d)
        out["READDIRPLUS"].append(us(t, time.perf_counter_ns()))
    for f in files:
        np.load(f)
    for f in files:
        t = time.perf_counter_ns()
        np.load(f)
        out["np.load"].append(us(t, time.perf_counter_ns()))


def run(quick, runs, res, B):
    d = C.workload_dir(quick, "latency")
    n = C.SIZES[C.profile_name(quick)]["latency"]
    names = C.dataset_names(n)
    fs = {op: [] for op in OPS}
    loc = {op: [] for op in OPS}
    os.sync()  # DONTNEED drops clean pages only: a tree gen.py has just written is still dirty
    for _ in range(runs):
        with B.Mount(d / "atlas"):
            per_call(B.MNT, names, fs)
        with B.Mount(d / "atlas", "--ttl", "0"):
            per_call(B.MNT, names, fs, ttl0=True)
        per_call(d / "tree", names, loc)
        per_call(d / "tree", names, loc, ttl0=True)
    rows = []
    for op in OPS:
        rows.append(dict(op=op, syscall=SYSCALL[op], fs_median=statistics.median(fs[op]), fs_p90=p90(fs[op]),
                         local_median=statistics.median(loc[op]), local_p90=p90(loc[op]), calls=len(fs[op])))
        print(f"  {op:12s} atlasfs {rows[-1]['fs_median']:8.1f} µs (p90 {rows[-1]['fs_p90']:8.1f})   "
              f"ext4 {rows[-1]['local_median']:8.1f} µs (p90 {rows[-1]['local_p90']:8.1f})", flush=True)
    res.latency = rows
    res.notes.append(f"{n} datasets of one (24,) float32 `value` each (a 224-byte .npy), {runs} fresh mounts")
    res.probe = probe_rounds(quick) if PROBE.exists() else None
    if res.probe is None:
        print(f"bench: {PROBE} is missing (cargo build --release --example fuse_uring_probe): no io_uring rows", file=sys.stderr)
    res.machine = B.machine()
    res.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- the io_uring probe

class Probe:
    """fuse_uring_probe serving `mnt` in one mode until its stdin closes."""

    def __init__(self, mnt, mode, files):
        self.p = subprocess.Popen([str(PROBE), str(mnt), "--mode", mode, "--files", str(files)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if not line.startswith("ready"):
            self.close()
            raise RuntimeError(f"fuse_uring_probe --mode {mode} did not start (exit {self.p.returncode}); see its stderr above")

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def loops(paths, reps=5):
    """(µs per file of open + isatty + close, µs per file of np.load), warm: the median
    of `reps` passes over all files (a pass is short; one preempted pass is noise)."""
    for f in paths:
        np.load(f)
    o, l = [], []
    for _ in range(reps):
        t = time.perf_counter_ns()
        for f in paths:
            fd = os.open(f, os.O_RDONLY)
            os.isatty(fd)
            os.close(fd)
        t1 = time.perf_counter_ns()
        for f in paths:
            np.load(f)
        t2 = time.perf_counter_ns()
        o.append((t1 - t) / 1e3 / len(paths))
        l.append((t2 - t1) / 1e3 / len(paths))
    return statistics.median(o), statistics.median(l)


def probe_rounds(quick, rounds=None):
    rounds = rounds or (3 if quick else 9)
    mnt = C.SCRATCH / "probe-mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    local = Path(tempfile.mkdtemp(dir=C.SCRATCH, prefix="probe-local-"))
    names = [f"a{i}.npy" for i in range(PROBE_FILES)]
    with Probe(mnt, "classic", PROBE_FILES):  # the same bytes on ext4
        for nm in names:
            shutil.copyfile(mnt / nm, local / nm)
    got = {m: ([], []) for m in ("ext4", *PROBE_MODES)}
    for r in range(rounds):
        order = list(got)
        random.Random(r).shuffle(order)
        for m in order:
            if m == "ext4":
                o, l = loops([local / nm for nm in names])
            else:
                with Probe(mnt, m, PROBE_FILES):
                    o, l = loops([mnt / nm for nm in names])
            got[m][0].append(o)
            got[m][1].append(l)
    shutil.rmtree(local, ignore_errors=True)
    out = []
    for m, (o, l) in got.items():
        out.append(dict(mode=m, open_isatty_close=o, npload=l, rounds=rounds, files=PROBE_FILES))
        print(f"  probe {m:13s} open+isatty+close {statistics.median(o):7.1f} µs ({min(o):.1f}–{max(o):.1f})   "
              f"np.load {statistics.median(l):7.1f} µs ({min(l):.1f}–{max(l):.1f})", flush=True)
    return out


# ---------------------------------------------------------------- the document

PROBE_LABEL = {"ext4": "ext4 (local disk)", "classic": "(a) classic: threads reading /dev/fuse",
               "classic-poll": "(c) classic + busy-poll 50 µs before blocking",
               "uring": "(b) io_uring: one queue per CPU", "uring-poll": "(c) io_uring + busy-poll of the CQ 50 µs"}


def render(p, w, fmt_s):
    p("## 8. What one FUSE request costs (per-request latency)\n")
    m = w.get("machine") or {}
    p(f"Measured {w['date']} (`bench/run.sh --only latency`) on {m.get('nproc', '?')} cores, {m.get('cpu', '?')}, "
      f"Linux {m.get('kernel', '?')}; load average {w.get('loadavg', '?')}. " + ". ".join(w["notes"]) + ". "
      "Each request is timed as the one system call that sends it, call by call, in the reading process; "
      "median and p90 over every call (which requests each call sends was checked with perf's `fuse:fuse_request_send` "
      "tracepoint). *ext4* is the same call on the same files as plain `.npy` on local disk.\n")
    p("| request | system call | atlasfs median | atlasfs p90 | ext4 median | ext4 p90 | median ÷ ext4 |")
    p("|---|---|---:|---:|---:|---:|---:|")
    for r in w.get("latency", []):
        p(f"| {r['op']} | {r['syscall']} | {r['fs_median']:.1f} µs | {r['fs_p90']:.1f} µs | {r['local_median']:.1f} µs | "
          f"{r['local_p90']:.1f} µs | {r['fs_median'] / r['local_median']:.1f}× |")
    p("\nNotes: *READ* on ext4 reads the block from the disk (the VM's virtio disk), as `DONTNEED` dropped it; "
      "on the mount it is one `READ` round trip to the daemon (decoded block in its cache). *RELEASE*: a read-only "
      "open is answered `FOPEN_NOFLUSH`, so `close` sends no `FLUSH` and queues `RELEASE` without waiting for it; "
      "the daemon still has to wake for it. *np.load* warm = `OPEN` + `IOCTL` round trips waited for, `RELEASE` not; "
      "`LOOKUP`/`GETATTR` are answered from the kernel's caches within the TTL.\n")
    probe = w.get("probe")
    if probe:
        p(f"### FUSE over io_uring, measured\n")
        p(f"`examples/fuse_uring_probe.rs`: {probe[0]['files']} `.npy` files of (24,) float32 served from memory by a "
          "trivial filesystem, in each transport; the same files on ext4. Per file, warm; "
          f"{probe[0]['rounds']} interleaved rounds (each mode mounted afresh per round, in a shuffled order): median "
          "over rounds (each round's figure the median of 5 passes over all files), and min – max.\n")
        loc = next(x for x in probe if x["mode"] == "ext4")
        lo, ll = statistics.median(loc["open_isatty_close"]), statistics.median(loc["npload"])
        p("| transport | open + isatty + close | spread | ÷ ext4 | np.load | spread | ÷ ext4 |")
        p("|---|---:|---|---:|---:|---|---:|")
        for x in probe:
            o, l = x["open_isatty_close"], x["npload"]
            p(f"| {PROBE_LABEL.get(x['mode'], x['mode'])} | {statistics.median(o):.1f} µs | {min(o):.1f} – {max(o):.1f} | "
              f"{statistics.median(o) / lo:.2f}× | {statistics.median(l):.1f} µs | {min(l):.1f} – {max(l):.1f} | "
              f"{statistics.median(l) / ll:.2f}× |")
        p("")
    # The decision and the runs behind it: hand-written, kept next to this script so a
    # re-run does not drop it.
    note = Path(__file__).with_name("uring.md")
    if note.exists():
        p(note.read_text().rstrip() + "\n")
