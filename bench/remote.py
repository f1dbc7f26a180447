"""The remote workload (issue 15): atlasfs mounting an s3:// store against rclone mount
and s3fs mounting the same arrays as plain .npy objects, on one S3 server.

One moto server (scripts/s3-server.sh, loopback) holds one bucket, `bench`, with
  atlas-large/  an atlas store (zstd): big/data, float32, random (little compression)
  atlas-scan/   an atlas store (zstd): N datasets, each temperature (24,) float32
  npy/          the same arrays as plain objects: npy/big/data.npy, npy/ds_*/temperature.npy
Every program reaches the server through bench/s3proxy.py, which adds the same delay
to every request for all of them and counts requests and bytes: the counts next to
each time come from there. The data is uploaded directly (not through the proxy).

gen(): writes the local stores and .npy files (bench/gen.py calls it).
run(): measures (bench/bench.py calls it); records go into Results like the others.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

import common as C

BUCKET = "bench"
KEY = dict(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
SHAPES = {"full": dict(large=(512, 256, 1024), scan=1000, write=(256, 1024, 1024)),
          "quick": dict(large=(64, 256, 1024), scan=50, write=(16, 1024, 1024))}
CHUNKS = (16, 256, 1024)  # 16 MiB chunks of the 512 MiB array, as in the issue
DELAYS = tuple(int(x) for x in os.environ.get("BENCH_REMOTE_DELAYS", "0,50").split(","))  # ms added to every request
# BENCH_REMOTE_CASES=large,small: only those cases (a partial run for a look; the others are then missing)
# BENCH_REMOTE_WRITE_MIB=256: the write case at that size (float32, (MiB/4, 1024, 1024)) instead of the profile's
CASES = os.environ.get("BENCH_REMOTE_CASES", "large,small,scan,write,warm").split(",")
MiB = 1 << 20


# ---------------------------------------------------------------- data

def gen(quick, out):
    import atlas
    kw = dict(meta_format="msgpack", meta_compression="zstd")
    s = SHAPES[C.profile_name(quick)]
    shape = s["large"]
    (out / "npy" / "big").mkdir(parents=True)
    plain = np.lib.format.open_memmap(out / "npy" / "big" / "data.npy", mode="w+", dtype=np.float32, shape=shape)
    rng = np.random.default_rng(seed=0)
    with atlas.Atlas.create(str(out / "atlas-large"), codec="zstd", **kw) as a:
        d = a.create_dataset("big")
        d.define_array("data", "float32", ["z", "y", "x"], list(shape), chunk_shape=list(CHUNKS), fill_value=float("nan"))
        for z in range(0, shape[0], CHUNKS[0] * 4):
            v = rng.standard_normal((min(CHUNKS[0] * 4, shape[0] - z),) + shape[1:], dtype=np.float32)
            plain[z:z + len(v)] = v
            d.write_array("data", [z, 0, 0], v)
    plain.flush()
    del plain
    names = C.dataset_names(s["scan"])
    with atlas.Atlas.create(str(out / "atlas-scan"), codec="zstd", **kw) as a:
        for idx, name in enumerate(names):
            v = C.case_arrays("sensors", idx)["temperature"]
            d = a.create_dataset(name)
            d.define_array("temperature", "float32", ["time"], list(v.shape), fill_value=float("nan"))
            d.write_array("temperature", [0], v)
            (out / "npy" / name).mkdir(parents=True)
            np.save(out / "npy" / name / "temperature.npy", v)


# ---------------------------------------------------------------- processes

# Opt-in (BENCH_REMOTE_SERVERS=moto,s3s-fs), installed by bench/run.sh with
#   cargo install s3s-fs --version 0.14.1 --features binary --locked --root bench/data/tools
# s3s-fs 0.14.1 answers 500 InternalError to a suffix range longer than the object
# (`bytes=-65536` of a 108-byte data.af; S3 answers the whole object); atlasfs asks
# for listed files' tails as bounded ranges, and for a short data.af falls back to one.
# It also answers 500 to a HEAD of a key that is a directory on its disk (`npy`), which
# rclone sends for a mount root given without a trailing slash (see `rclone()`).
S3S_FS = C.DATA / "tools" / "bin" / "s3s-fs"


def free_port():
    import socket
    with socket.socket() as s_:
        s_.bind(("127.0.0.1", 0))
        return s_.getsockname()[1]


class Server:
    """An S3 server on loopback, moto (scripts/s3-server.sh) or s3s-fs (a directory
    served by the s3s crate's example server), and the proxy in front of it."""

    def __init__(self, kind="moto"):
        self.kind = kind
        self.procs = []

    def _spawn(self, cmd):
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        line = p.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{cmd[0:2]} did not start (printed {line!r})")
        return int(line.split()[1])

    def __enter__(self):
        if self.kind == "moto":
            self.moto = self._spawn(["bash", str(C.ROOT / "scripts" / "s3-server.sh"), "--until-eof", BUCKET])
        else:
            root = C.SCRATCH / "s3s-fs"
            shutil.rmtree(root, ignore_errors=True)
            (root / BUCKET).mkdir(parents=True)
            self.moto = free_port()
            p = subprocess.Popen([str(S3S_FS), "--host", "127.0.0.1", "--port", str(self.moto), "--access-key", "test",
                                  "--secret-key", "test", str(root)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=open(C.SCRATCH / "s3s-fs.log", "a"))
            self.procs.append(p)
            import socket
            deadline = time.time() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.moto), 1).close()
                    break
                except OSError:
                    if p.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"s3s-fs did not start (see {C.SCRATCH}/s3s-fs.log)")
                    time.sleep(0.05)
        self.port = self._spawn([sys.executable, str(C.BENCH / "s3proxy.py"), "--upstream", str(self.moto)])
        self.url = f"http://127.0.0.1:{self.port}"
        import boto3
        self.s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.moto}", aws_access_key_id="test",
                               aws_secret_access_key="test", region_name="us-east-1")
        return self

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.stdin.close()
                p.wait(30)
            except Exception:  # noqa: BLE001
                p.kill()
                p.wait()

    def upload(self, src, prefix):
        from boto3.s3.transfer import TransferConfig
        cfg = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=4)
        for dirpath, _, files in os.walk(src):
            for f in files:
                p = Path(dirpath) / f
                self.s3.upload_file(str(p), BUCKET, f"{prefix}/{p.relative_to(src)}", Config=cfg)

    def delete_prefix(self, prefix):
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})

    def ctl(self, what):
        req = urllib.request.Request(f"{self.url}/__proxy/{what}", method="GET" if what == "stats" else "POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def counts(self):
        st = self.ctl("stats")
        return {k: st[k] for k in ("GET", "LIST", "HEAD", "PUT", "POST", "DELETE", "bytes_down", "bytes_up") if st[k]}, st["trace"]


def vmhwm(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeerMount:
    """rclone mount / s3fs in the foreground as a child; unmounted and stopped by PID."""

    def __init__(self, mnt, cmd, env=None):
        self.mnt, self.cmd, self.env = Path(mnt), cmd, env

    def __enter__(self):
        self.mnt.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in {**os.environ, **(self.env or {})}.items() if v is not None}  # None: unset
        self.p = subprocess.Popen(self.cmd, env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(C.SCRATCH / f"{Path(self.cmd[0]).name}.log", "a"))
        self.pid = self.p.pid
        deadline = time.time() + 60
        while not os.path.ismount(self.mnt):
            if self.p.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{self.cmd[0]} did not mount (see {C.SCRATCH}/{Path(self.cmd[0]).name}.log)")
            time.sleep(0.02)
        os.listdir(self.mnt)  # answers
        return self

    def reset_peak(self):
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def peak(self):
        return vmhwm(self.pid)

    def __exit__(self, *exc):
        subprocess.run(["fusermount3", "-u", str(self.mnt)], stderr=subprocess.DEVNULL, check=False)
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)


# ---------------------------------------------------------------- the cases

def waves(trace, delay_ms):
    """Sequential round trips in a request trace: requests sent together reach the proxy
    within a few ms; one sent after an answer comes at least the added delay later."""
    n, last = 0, None
    for t, *_ in trace:
        if last is None or t - last > delay_ms / 2000:
            n += 1
            last = t
    return n


def servers():
    """moto; BENCH_REMOTE_SERVERS=moto,s3s-fs (comma-separated) measures those instead,
    keeping the other servers' last results."""
    return os.environ.get("BENCH_REMOTE_SERVERS", "moto").split(",")


def merge(old, new):
    """The remote results of this run, plus the last run's records of the (server, case)
    pairs not measured now (BENCH_REMOTE_SERVERS / BENCH_REMOTE_CASES: a partial run)."""
    if old:
        kinds = {r["codec"] for r in new["records"]}
        done = {(r["codec"], r["case"]) for r in new["records"]}
        new["records"] = [r for r in old["records"] if (r["codec"], r["case"]) not in done] + new["records"]
        new["notes"] = [n for n in old["notes"] if n not in new["notes"] and not any(k in n for k in kinds)] + new["notes"]
    return new


def run(quick, runs, res, B):
    """B: the bench module (Mount, MNT, timed, drop_caches, same)."""
    if "s3s-fs" in servers() and not S3S_FS.exists():
        raise SystemExit(f"bench: {S3S_FS.relative_to(C.ROOT)} is missing: cargo install s3s-fs --version 0.14.1 --features binary --locked --root bench/data/tools")
    for kind in servers():
        run_on(kind, quick, runs, res, B)


def run_on(kind, quick, runs, res, B):
    d = C.workload_dir(quick, "remote")
    s = SHAPES[C.profile_name(quick)]
    names = C.dataset_names(s["scan"])
    os.environ.update(KEY)
    scratch = C.SCRATCH / "remote"
    scratch.mkdir(parents=True, exist_ok=True)
    MNT = B.MNT
    if not shutil.which("rclone") or not shutil.which("s3fs"):
        raise SystemExit("bench: remote needs rclone and s3fs (bench/run.sh installs them: apt-get install rclone s3fs)")
    want_big = np.load(d / "npy" / "big" / "data.npy")
    want_small = {n: np.load(d / "npy" / n / "temperature.npy") for n in names}

    with Server(kind) as S:
        t = time.perf_counter()
        S.upload(d / "atlas-large", "atlas-large")
        S.upload(d / "atlas-scan", "atlas-scan")
        S.upload(d / "npy", "npy")
        res.notes.append(f"uploading the three prefixes to {kind} took {time.perf_counter() - t:.0f} s")
        passwd = scratch / "s3fs.passwd"
        passwd.write_text("test:test\n")
        passwd.chmod(0o600)
        rclone_env = dict(RCLONE_CONFIG_B_TYPE="s3", RCLONE_CONFIG_B_PROVIDER="Other", RCLONE_CONFIG_B_ENDPOINT=S.url,
                          RCLONE_CONFIG_B_ACCESS_KEY_ID="test", RCLONE_CONFIG_B_SECRET_ACCESS_KEY="test",
                          RCLONE_CONFIG_B_REGION="us-east-1", RCLONE_CONFIG_B_FORCE_PATH_STYLE="true",
                          # rclone 1.60 cannot use a custom CA bundle with its own transport, and the endpoint is http
                          AWS_CA_BUNDLE=None)

        def atlas(prefix, *extra):
            return B.Mount(f"s3://{BUCKET}/{prefix}", "--endpoint", S.url, *extra)

        def rclone(prefix, mode="off"):
            # The trailing slash: rclone HEADs a root without one to see whether it is a
            # file, and s3s-fs 0.14.1 answers 500 to a HEAD of a "directory" key, which
            # rclone retries with backoff for a minute before it mounts.
            return PeerMount(MNT, ["rclone", "mount", f"b:{BUCKET}/{prefix}/", str(MNT), "--vfs-cache-mode", mode,
                                   "--cache-dir", str(scratch / "rclone-cache"), "--vfs-write-back", "0s", "--s3-no-check-bucket",
                                   # multipart above 16 MiB: moto answers a wrong ETag to some large single PUTs,
                                   # and rclone then deletes the object ("corrupted on transfer: md5 hash differ")
                                   "--s3-upload-cutoff", "16M"], rclone_env)

        def s3fs(prefix):
            return PeerMount(MNT, ["s3fs", f"{BUCKET}:/{prefix}", str(MNT), "-f", "-o", f"url={S.url}", "-o", "use_path_request_style",
                                   "-o", f"passwd_file={passwd}", "-o", "endpoint=us-east-1"])

        def measure(mount, fn, check=None, after=None):
            """(seconds, requests, trace, peak RSS) of fn() right after `mount` is ready."""
            with mount as m:
                m.reset_peak()
                S.ctl("reset")
                dt, got = B.timed(fn)
                if after:
                    after()
                    dt = time.perf_counter() - t0[0]
                counts, trace = S.counts()
                if check:
                    check(got)
                del got
                return dt, counts, trace, m.peak()

        t0 = [0.0]

        def add(reader, case, delay, out, **extra):
            ts = [o[0] for o in out]
            i = ts.index(sorted(ts)[len(ts) // 2])
            r = res.add(reader, ts, "cold", case, kind, f"{delay} ms", max((o[3] or 0) for o in out) or None,
                        requests=out[i][1], **extra)
            r["trace"] = out[i][2][:60]
            return r

        for delay in DELAYS:
            S.ctl(f"delay/{delay}")
            # -- large array, cold, sequential np.load
            big = "big/data.npy"
            peers = [] if "large" not in CASES else [("atlasfs", lambda: atlas("atlas-large")), ("rclone", lambda: rclone("npy")), ("s3fs", lambda: s3fs("npy"))]
            out = {p: [] for p, _ in peers}
            for r in range(runs):
                for p, mk in peers:  # interleaved: a slow spell of the VM hits all alike
                    B.drop_caches()
                    chk = (lambda got, p=p: B.same(f"remote large {p}", got, want_big)) if r == 0 else None
                    out[p].append(measure(mk(), lambda: np.load(MNT / big), chk))
            for p, _ in peers:
                add(f"{p} np.load", "large", delay, out[p])

            # -- small array, cold: time to first byte and the whole np.load
            small = f"{names[0]}/temperature.npy"
            peers = [] if "small" not in CASES else [("atlasfs", lambda: atlas("atlas-scan")), ("rclone", lambda: rclone("npy")), ("s3fs", lambda: s3fs("npy"))]
            out = {p: [] for p, _ in peers}
            ttfb = {p: [] for p, _ in peers}
            for r in range(max(runs, 3) if peers else 0):
                for p, mk in peers:
                    def first_byte_then_load(p=p):
                        t = time.perf_counter()
                        with open(MNT / small, "rb") as f:
                            f.read(1)
                            ttfb[p].append(time.perf_counter() - t)
                            f.seek(0)
                            return np.load(f)
                    out[p].append(measure(mk(), first_byte_then_load, lambda got: B.same("remote small", got, want_small[names[0]])))
            for p, _ in peers:
                r_ = add(f"{p} np.load", "small", delay, out[p], ttfb=statistics.median(ttfb[p]), ttfbs=ttfb[p])
                if delay:
                    r_["round_trips"] = [waves(o[2], delay) for o in out[p]]

            # -- per-file scan of every dataset, cold; atlasfs also the stacked view
            files = [f"{n}/temperature.npy" for n in names]
            want_all = np.stack([want_small[n] for n in names])
            scan = lambda: [np.load(MNT / f) for f in files]
            peers = [] if "scan" not in CASES else [("atlasfs", lambda: atlas("atlas-scan"), scan), ("rclone", lambda: rclone("npy"), scan), ("s3fs", lambda: s3fs("npy"), scan),
                     ("atlasfs stacked", lambda: atlas("atlas-scan"), lambda: np.load(MNT / ".atlasfs" / "stacked" / "temperature.npy"))]
            if delay:  # s3fs makes several sequential requests per file: minutes at 50 ms each
                peers = [x for x in peers if x[0] != "s3fs"]
            out = {p[0]: [] for p in peers}
            scan_runs = runs if delay == 0 else 1  # ~1,000 sequential round trips per peer at 50 ms
            for r in range(scan_runs if peers else 0):
                for p, mk, fn in peers:
                    out[p].append(measure(mk(), fn, (lambda got, p=p: B.same(f"remote scan {p}", got, want_all)) if r == 0 else None))
            for p, _, _ in peers:
                add(f"{p} np.load" if p != "atlasfs stacked" else "atlasfs .atlasfs/stacked", "scan", delay, out[p])

            # -- np.save of the write array + fsync (rclone: until the object is uploaded)
            wshape = s["write"]
            if os.environ.get("BENCH_REMOTE_WRITE_MIB"):  # another size for the write case (a partial run)
                wshape = (int(os.environ["BENCH_REMOTE_WRITE_MIB"]) // 4, 1024, 1024)
            wdata = np.random.default_rng(seed=1).standard_normal(wshape, dtype=np.float32)
            nbytes = 128 + wdata.nbytes

            def save_fsync(path):
                def go():
                    t0[0] = time.perf_counter()
                    path.parent.mkdir(exist_ok=True)
                    with open(path, "wb") as f:
                        np.save(f, wdata)
                        f.flush()
                        os.fsync(f.fileno())
                return go

            def uploaded(key, size):
                def wait():
                    deadline = time.time() + 600
                    while time.time() < deadline:
                        try:
                            if S.s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size:
                                return
                        except Exception:  # noqa: BLE001 - not there yet
                            pass
                        time.sleep(0.05)
                    raise RuntimeError(f"rclone did not upload {key} within 600 s")
                return wait

            out = {"atlasfs": [], "rclone": [], "s3fs": []} if "write" in CASES else {}
            for r in range(runs if out else 0):
                for p in out:
                    prefix = f"w-{p}-{delay}-{r}"
                    f = MNT / "w" / "data.npy"
                    if p == "atlasfs":
                        o = measure(atlas(prefix, "--create"), save_fsync(f))
                    elif p == "rclone":
                        o = measure(rclone(prefix, "writes"), save_fsync(f), after=uploaded(f"{prefix}/w/data.npy", nbytes))
                    else:
                        o = measure(s3fs(prefix), save_fsync(f))
                    out[p].append(o)
                    if r == 0:  # what was written reads back (directly from the server, atlasfs through a new mount)
                        if p == "atlasfs":
                            with atlas(prefix):
                                B.same("remote write atlasfs", np.load(MNT / "w" / "data.npy"), wdata)
                        else:
                            try:
                                body = S.s3.get_object(Bucket=BUCKET, Key=f"{prefix}/w/data.npy")["Body"].read()
                            except S.s3.exceptions.NoSuchKey:
                                keys = [o["Key"] for o in S.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
                                raise SystemExit(f"bench: remote write {p}: {prefix}/w/data.npy is not in the bucket (it holds {keys})")
                            if len(body) != nbytes or body[-wdata.nbytes:] != wdata.tobytes():
                                raise SystemExit(f"bench: remote write {p}: the object differs from what was written")
                            del body
                    S.delete_prefix(prefix)
                    shutil.rmtree(scratch / "rclone-cache", ignore_errors=True)
            for p in out:
                add(f"{p} np.save + fsync", "write", delay, out[p])
            del wdata

            # -- warm: a second mount with --cache-dir, against a local store
            cache = scratch / "atlas-cache"
            o_warm, o_local = [], []
            for r in range(runs if "warm" in CASES else 0):
                shutil.rmtree(cache, ignore_errors=True)
                with atlas("atlas-large", "--cache-dir", str(cache)):
                    np.load(MNT / big)
                B.drop_caches()
                o_warm.append(measure(atlas("atlas-large", "--cache-dir", str(cache)), lambda: np.load(MNT / big),
                                      (lambda got: B.same("remote warm", got, want_big)) if r == 0 else None))
                B.drop_caches()
                with B.Mount(d / "atlas-large") as m:
                    m.reset_peak()
                    dt, got = B.timed(lambda: np.load(MNT / big))
                    o_local.append((dt, {}, [], m.peak()))
                    del got
            if o_warm:
                add("atlasfs np.load, second mount --cache-dir", "warm", delay, o_warm)
                add("atlasfs np.load, local store", "warm", delay, o_local)
        shutil.rmtree(scratch / "atlas-cache", ignore_errors=True)

    if kind == "moto":
        res.notes.append(f"large: one float32 array {s['large']} = {np.prod(s['large']) * 4 / MiB:.0f} MiB, chunks {CHUNKS}, standard normal "
                         f"(barely compressible), zstd; small/scan: {len(names)} datasets with temperature (24,) float32; "
                         f"write: {np.prod(wshape) * 4 / MiB:.0f} MiB float32")


# ---------------------------------------------------------------- targets and table

def targets(results, add, find):
    w = "remote"
    kinds = list(dict.fromkeys(r["codec"] for r in results.get(w, {}).get("records", [])))
    for kind, delay in ((k, d) for k in kinds for d in DELAYS):
        pt = f"{delay} ms"
        q = lambda case, reader: find(results, w, case=case, reader=reader, pattern=pt, codec=kind)
        lim = 1.0 if delay == 0 else 0.5
        at = f"{kind}, +{pt}"
        add(f"large cold ≤ {lim}× rclone", at, q("large", "atlasfs np.load"), q("large", "rclone np.load"), lim)
        add("scan per-file cold ≤ 1.0× rclone", at, q("scan", "atlasfs np.load"), q("scan", "rclone np.load"), 1.0)
        add("scan stacked cold ≤ 0.2× rclone per-file", at, q("scan", "atlasfs .atlasfs/stacked"), q("scan", "rclone np.load"), 0.2)
        add("np.save + fsync ≤ 1.0× rclone (uploaded)", at, q("write", "atlasfs np.save + fsync"),
            q("write", "rclone np.save + fsync"), 1.0)
        add("second mount --cache-dir ≤ 1.2× local store", at, q("warm", "atlasfs np.load, second mount --cache-dir"),
            q("warm", "atlasfs np.load, local store"), 1.2)
    for r in results.get(w, {}).get("records", []):
        if r["case"] == "small" and r["reader"] == "atlasfs np.load" and r["pattern"] == "50 ms":
            # sequential round trips before np.load had its bytes: waves of requests in the proxy's trace
            add("small cold: np.load ≤ 2 sequential round trips", f"{r['codec']}, +50 ms", max(r["round_trips"]), 1.0, 2.0, absolute=True, rt=True)


def fmt_req(c):
    if not c:
        return ""
    parts = [f"{k} {v}" for k, v in c.items() if not k.startswith("bytes")]
    by = [f"{d} {c[k] / MiB:.1f} MiB" for k, d in (("bytes_down", "↓"), ("bytes_up", "↑")) if c.get(k)]
    return ", ".join(parts + by)


def render(p, w, fmt_s):
    p("## 6. Remote: an s3:// store against rclone and s3fs\n")
    p(". ".join(w["notes"]) + f". Measured {w['date']}.\n")
    p("One moto server (`ThreadedMotoServer`, loopback) and one bucket: the atlas stores and the same arrays as plain `.npy` "
      "objects. atlasfs mounts the atlas store (`s3://…`, no `--cache-dir` unless said); rclone (`rclone mount --vfs-cache-mode off`, "
      "`writes` for the write case, with `--vfs-write-back 0s` and the time taken until the object is in the bucket) and s3fs "
      "(`-o use_path_request_style`, defaults otherwise) mount the plain objects. Every program goes through `bench/s3proxy.py`, which "
      "adds the stated delay to every request and counts the requests and bytes shown. Each run is a fresh mount; the large and "
      "warm cases drop the OS page cache first; peers interleaved run by run. *Peak RSS* is the mounting process's VmHWM.\n")
    p("| case | server | added delay | reader | time (median) | runs | requests (↓ bytes from / ↑ to the server) | peak RSS |")
    p("|---|---|---|---|---:|---:|---|---:|")
    for r in w["records"]:
        extra = f" (first byte {fmt_s(r['ttfb'])})" if r.get("ttfb") is not None else ""
        if r.get("round_trips"):
            extra += f"; {max(r['round_trips'])} sequential round trips"
        rss = f"{r['rss'] / MiB:.0f} MiB" if r.get("rss") else ""
        p(f"| {r['case']} | {r['codec']} | {r['pattern']} | {r['reader']} | {fmt_s(r['median'])}{extra} | {len(r['times'])} | {fmt_req(r.get('requests'))} | {rss} |")
    p("")
    for r in w["records"]:
        if r["case"] == "small" and r["reader"] == "atlasfs np.load" and r["pattern"] == "50 ms" and r.get("trace"):
            p(f"Request trace of the small cold read on {r['codec']} with 50 ms added (atlasfs; time since the mount was ready, s):\n")
            p("```")
            for t, kind, target, rng in r["trace"][:20]:
                p(f"{t:7.3f} {kind:4s} {target} {rng}")
            p("```\n")
