"""Reference-model test driver for tests/model.rs (issue 14, "Proof that nothing is lost").

  model_check.py ATLASFS_BIN WORKDIR SEED STEPS

Runs a seeded random sequence of mkdir / np.save / r+ edit (mmap) / rename (file and
dataset) / unlink / rmdir / fsync / compact / remount against a real mount of a new
store, applying each to an in-memory model ({dataset: {array: ndarray}}), and after
every step compares the whole mount with the model (names, and every array's bytes
through np.load). Expected refusals (rmdir of a non-empty dataset: ENOTEMPTY) are part
of the model. On a mismatch it shrinks the sequence (drops steps one at a time while
the failure stays, each try on a fresh store) and exits 1 printing the shortest
failing sequence, one step a line. Prints "ok STEPS" on success.
"""

import errno
import os
import random
import shutil
import subprocess
import sys

import numpy as np


class Mismatch(Exception):
    pass


def gen(rng, steps):
    """A sequence of operations over a few names (so they collide)."""
    ops = []
    for i in range(steps):
        d, d2 = f"d{rng.randrange(3)}", f"d{rng.randrange(3)}"
        a, a2 = f"a{rng.randrange(3)}", f"a{rng.randrange(3)}"
        r = rng.random()
        if r < 0.12:
            ops.append(("mkdir", d))
        elif r < 0.42:
            shape = [rng.randrange(1, 5), rng.randrange(1, 6)]
            ops.append(("save", d, a, shape, rng.choice(["<i8", "<f4", "<u2"]), i))
        elif r < 0.52:
            ops.append(("edit", d, a, rng.randrange(0, 30), i))
        elif r < 0.60:
            ops.append(("rename", d, a, d2, a2))
        elif r < 0.64:
            ops.append(("rename_ds", d, f"d{3 + rng.randrange(2)}"))
        elif r < 0.72:
            ops.append(("unlink", d, a))
        elif r < 0.78:
            ops.append(("rmdir", d))
        elif r < 0.86:
            ops.append(("fsync", d, a))
        elif r < 0.92:
            ops.append(("compact",))
        else:
            ops.append(("remount",))
    return ops


class Run:
    def __init__(self, bin_, work):
        self.bin, self.work = bin_, work
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        self.store, self.mp = os.path.join(work, "store"), os.path.join(work, "mnt")
        os.makedirs(self.mp)
        self.model = {}
        subprocess.run([self.bin, "create", self.store], check=True, capture_output=True)
        self.mount()

    def cli(self, *args):
        r = subprocess.run([self.bin, *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise Mismatch(f"atlasfs {' '.join(args[:1])} exited {r.returncode}: {r.stderr.strip()}")

    def mount(self):
        self.cli("mount", self.store, self.mp, "--writeback-delay", "0.3", "--log-file", os.path.join(self.work, "daemon.log"))

    def unmount(self):
        self.cli("unmount", self.mp)

    def close(self):
        try:
            self.unmount()
        except Mismatch:
            subprocess.run(["fusermount3", "-uz", self.mp], capture_output=True)

    def p(self, *names):
        return os.path.join(self.mp, *names)

    def apply(self, op):
        m, kind = self.model, op[0]
        if kind == "mkdir":
            _, d = op
            try:
                os.mkdir(self.p(d))
                assert d not in m, f"mkdir {d} succeeded on an existing dataset"
                m[d] = {}
            except FileExistsError:
                assert d in m, f"mkdir {d}: EEXIST for a dataset the model lacks"
        elif kind == "save":
            _, d, a, shape, dt, i = op
            if d not in m:
                return
            arr = (np.arange(np.prod(shape)) + 1000 * i).astype(dt).reshape(shape)
            np.save(self.p(d, a + ".npy"), arr)
            m[d][a] = arr
        elif kind == "edit":
            _, d, a, k, i = op
            if a not in m.get(d, {}):
                return
            mm = np.load(self.p(d, a + ".npy"), mmap_mode="r+")
            flat = k % mm.size
            mm.reshape(-1)[flat] = i % 100 + 1
            mm.flush()
            del mm
            m[d][a].reshape(-1)[flat] = i % 100 + 1
        elif kind == "rename":
            _, d, a, d2, a2 = op
            if a not in m.get(d, {}) or d2 not in m or (d, a) == (d2, a2):
                return
            os.rename(self.p(d, a + ".npy"), self.p(d2, a2 + ".npy"))
            m[d2][a2] = m[d].pop(a)
        elif kind == "rename_ds":
            _, d, d2 = op
            if d not in m or d2 in m:
                return
            os.rename(self.p(d), self.p(d2))
            m[d2] = m.pop(d)
        elif kind == "unlink":
            _, d, a = op
            if a not in m.get(d, {}):
                return
            os.unlink(self.p(d, a + ".npy"))
            del m[d][a]
        elif kind == "rmdir":
            _, d = op
            if d not in m:
                return
            try:
                os.rmdir(self.p(d))
                assert not m[d], f"rmdir {d} succeeded with arrays {sorted(m[d])}"
                del m[d]
            except OSError as e:
                assert e.errno == errno.ENOTEMPTY and m[d], f"rmdir {d}: {e} (model: {sorted(m[d])})"
        elif kind == "fsync":
            _, d, a = op
            if a not in m.get(d, {}):
                return
            fd = os.open(self.p(d, a + ".npy"), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif kind == "compact":
            with open(self.p(".atlasfs", "compact"), "w") as f:
                f.write("1")
        elif kind == "remount":
            self.unmount()
            self.mount()

    def check(self):
        got = sorted(n for n in os.listdir(self.mp) if n != ".atlasfs")
        if got != sorted(self.model):
            raise Mismatch(f"datasets {got}, model {sorted(self.model)}")
        for d, arrays in self.model.items():
            names = sorted(os.listdir(self.p(d)))
            want = sorted(a + ".npy" for a in arrays)
            if names != want:
                raise Mismatch(f"{d}: files {names}, model {want}")
            for a, arr in arrays.items():
                x = np.load(self.p(d, a + ".npy"))
                if x.dtype != arr.dtype or x.shape != arr.shape or not np.array_equal(x, arr):
                    raise Mismatch(f"{d}/{a}.npy: {x.dtype}{x.shape} {x.reshape(-1)[:6]}, model {arr.dtype}{arr.shape} {arr.reshape(-1)[:6]}")


def run(bin_, work, ops):
    """None if the sequence holds, else (step index, message)."""
    r = Run(bin_, work)
    try:
        for i, op in enumerate(ops):
            try:
                r.apply(op)
                r.check()
            except (Mismatch, AssertionError, OSError) as e:
                return (i, f"{type(e).__name__}: {e}")
        return None
    finally:
        r.close()


def main():
    bin_, work, seed, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ops = gen(random.Random(seed), steps)
    failed = run(bin_, work, ops)
    if failed is None:
        print(f"ok {len(ops)}")
        return
    # Shrink: keep the prefix up to the failure, then drop steps while it still fails.
    ops = ops[: failed[0] + 1]
    i = 0
    while i < len(ops):
        trial = ops[:i] + ops[i + 1:]
        f = run(bin_, work, trial)
        if f is not None:
            ops, failed = trial[: f[0] + 1], f
        else:
            i += 1
    print(f"seed {seed}: {len(ops)} steps still fail: {failed[1]}")
    for op in ops:
        print("  ", op)
    sys.exit(1)


if __name__ == "__main__":
    main()
