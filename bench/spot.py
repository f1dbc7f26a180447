"""A spot check, not the benchmark: atlasfs (default mount: passthrough reads, no
xattrs) against the same .npy files on local disk, side by side, interleaved, 5 rounds,
medians and spreads. Per-file warm np.load of 1,000 small arrays, `ls -l` and
`ls -lR` of 1,000 dataset directories, warm np.load of a 512 MiB array.

usage: .venv/bin/python bench/spot.py target/release/atlasfs   (data under /tmp/m)
"""
import os, subprocess, sys, time, statistics, json
import numpy as np
B = sys.argv[1]; root = os.environ.get("SPOT_DIR", "/tmp/m"); N = 1000
store, local, mnt = f"{root}/store", f"{root}/local", f"{root}/mnt"
def sh(*a): subprocess.run(a, check=True, stdout=subprocess.DEVNULL)
if not os.path.exists(store):
    os.makedirs(local, exist_ok=True)
    sh(B, "create", store)
    os.makedirs(mnt, exist_ok=True)
    sh(B, "mount", store, mnt, "--writeback-delay", "0")
    for i in range(N):
        a = (np.arange(10_000, dtype=np.float32) + i)
        os.makedirs(f"{local}/ds{i:04d}", exist_ok=True)
        np.save(f"{local}/ds{i:04d}/temp.npy", a)
        os.mkdir(f"{mnt}/ds{i:04d}")
        np.save(f"{mnt}/ds{i:04d}/temp.npy", a)
    big = np.random.default_rng(0).random((128, 1024, 1024), dtype=np.float32)  # 512 MiB
    np.save(f"{local}/big.npy", big); os.mkdir(f"{mnt}/big"); np.save(f"{mnt}/big/x.npy", big); del big
    with open(f"{mnt}/.atlasfs/flush", "w") as f: f.write("1")
    sh(B, "unmount", mnt)
sh(B, "mount", store, mnt)
def per_file(base, sub):
    t = time.perf_counter()
    for i in range(N): np.load(f"{base}/ds{i:04d}/{sub}")
    return time.perf_counter() - t
def ls(base):
    t = time.perf_counter(); subprocess.run(["ls", "-l", base], check=True, stdout=subprocess.DEVNULL); return time.perf_counter() - t
def lsR(base):
    t = time.perf_counter(); subprocess.run(["ls", "-lR", base], check=True, stdout=subprocess.DEVNULL); return time.perf_counter() - t
def large(path):
    t = time.perf_counter(); np.load(path); return time.perf_counter() - t
# warm both (and fill the spool)
for _ in range(2):
    per_file(mnt, "temp.npy"); per_file(local, "temp.npy"); large(f"{mnt}/big/x.npy"); large(f"{local}/big.npy"); ls(mnt); lsR(mnt)
time.sleep(1)
res = {k: [] for k in ["pf_m", "pf_l", "ls_m", "ls_l", "lsR_m", "lsR_l", "big_m", "big_l"]}
for r in range(5):
    res["pf_l"].append(per_file(local, "temp.npy")); res["pf_m"].append(per_file(mnt, "temp.npy"))
    res["ls_l"].append(ls(local)); res["ls_m"].append(ls(mnt))
    res["lsR_l"].append(lsR(local)); res["lsR_m"].append(lsR(mnt))
    res["big_l"].append(large(f"{local}/big.npy")); res["big_m"].append(large(f"{mnt}/big/x.npy"))
st = json.load(open(f"{mnt}/.atlasfs/stats"))
sh(B, "unmount", mnt)
med = {k: statistics.median(v) for k, v in res.items()}
out = {"medians_s": med, "spread": {k: [min(v), max(v)] for k, v in res.items()},
       "ratios": {"per_file_warm": med["pf_m"] / med["pf_l"], "ls_l": med["ls_m"] / med["ls_l"], "ls_lR": med["lsR_m"] / med["lsR_l"], "large_warm_512MiB": med["big_m"] / med["big_l"]},
       "spool": st.get("spool"), "passthrough": st.get("passthrough")}
print(json.dumps(out, indent=1))
