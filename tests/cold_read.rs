//! Cold reads through a real mount: the decoded path that writes each READ's boxes
//! straight into the reply (`fs/core/read_into.rs`) against numpy and atlas-python.
//!
//! - arrays of several ~8 MiB blocks, with unwritten (fill) chunks between written
//!   ones, in every fixed-width dtype family: `np.load`, `mmap` slices and `pread`s
//!   at odd offsets across chunk and block boundaries equal `np.save`'s bytes of
//!   what atlas-python's `read_array` returns;
//! - a chunk whose block is too big for the cache (`--cache-size 32M`: over 16 MiB
//!   decoded) is read part by part, with the same values;
//! - the stacked view of those datasets equals numpy's stack of them.
//!
//! Needs /dev/fuse, fusermount3 and the venv of `scripts/setup-test-env.sh`.

mod common;

use common::mount::{Mounted, log_report, require_fuse};
use std::process::Command;

const STORE: &str = r#"
import atlas, numpy as np, sys
store = sys.argv[1]
rng = np.random.default_rng(7)
with atlas.Atlas.create(store, codec=sys.argv[2]) as a:
    for name, dt in (("f4", "float32"), ("f8", "float64"), ("i2", "int16"), ("u1", "uint8"), ("i8", "int64"), ("u4", "uint32")):
        d = a.create_dataset(f"ds_{name}")
        # ~12 MiB of float64, fewer bytes for narrower types: several blocks either way.
        shape = [1536, 1024]
        d.define_array("x", dt, ["y", "x"], shape, chunk_shape=[96, 1000], fill_value=3)
        v = (np.abs(rng.standard_normal(shape)) * 100).astype(dt)
        # Rows 480..767 stay unwritten: those chunks read as the fill value.
        d.write_array("x", [0, 0], v[:480])
        d.write_array("x", [768, 0], v[768:])
    # One chunk of 20 MiB: its block is over the cache's block limit at --cache-size 32M.
    d = a.create_dataset("huge")
    d.define_array("x", "float32", ["n"], [5 << 20], chunk_shape=[5 << 20])
    d.write_array("x", [0], np.arange(5 << 20, dtype=np.float32) * 0.5)
"#;

const CHECK: &str = r#"
import atlas, io, numpy as np, os, sys
mnt, store = sys.argv[1], sys.argv[2]
a = atlas.Atlas.open(store)
rng = np.random.default_rng(1)
for name in sorted(os.listdir(mnt)):
    if name.startswith("."):
        continue
    want = a.open_dataset(name).read_array("x")
    p = os.path.join(mnt, name, "x.npy")
    got = np.load(p)
    assert got.dtype == want.dtype and np.array_equal(got, want), (name, "np.load")
    m = np.load(p, mmap_mode="r")
    for sl in ((slice(470, 800),), (slice(None), slice(995, 1005))) if want.ndim == 2 else ((slice(3 << 20, (3 << 20) + 4099),),):
        assert np.array_equal(m[sl], want[sl]), (name, "mmap", sl)
    b = io.BytesIO(); np.save(b, want); exp = b.getvalue()
    assert os.stat(p).st_size == len(exp), (name, "st_size")
    fd = os.open(p, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for _ in range(40):
            off = int(rng.integers(0, len(exp)))
            n = int(rng.integers(1, 3 << 20))
            assert os.pread(fd, n, off) == exp[off:off + n], (name, "pread", off, n)
        assert os.pread(fd, 100, len(exp) - 7) == exp[-7:], (name, "pread at the end")
    finally:
        os.close(fd)
print("ok")
"#;

fn python() -> std::path::PathBuf {
    common::python()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cold_reads_equal_atlas_python_in_every_codec() {
    require_fuse();
    for codec in ["zstd", "none"] {
        let dir = tempfile::Builder::new().prefix("atlasfs-cold-read").tempdir().unwrap();
        let (store, mp) = (dir.path().join("store"), dir.path().join("mnt"));
        std::fs::create_dir(&mp).unwrap();
        run(Command::new(python()).arg("-c").arg(STORE).arg(&store).arg(codec));
        let m = Mounted::start(&store, &mp, &["--read-only", "--cache-size", "32M"]);
        let out = Command::new(python()).arg("-c").arg(CHECK).arg(m.mp()).arg(&store).output().expect("spawn python");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
            "{codec}: reads through the mount differ from atlas-python's:\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log_report(&m.log)
        );
        m.unmount();
    }
}

#[test]
fn the_stacked_view_equals_numpys_stack() {
    require_fuse();
    let dir = tempfile::Builder::new().prefix("atlasfs-cold-stack").tempdir().unwrap();
    let (store, mp) = (dir.path().join("store"), dir.path().join("mnt"));
    std::fs::create_dir(&mp).unwrap();
    let make = r#"
import atlas, numpy as np, sys
with atlas.Atlas.create(sys.argv[1], codec="lz4") as a:
    for i in range(300):
        d = a.create_dataset(f"d{i:03d}")
        d.define_array("t", "float32", ["z", "t"], [50, 168], fill_value=float("nan"))
        if i % 7:
            d.write_array("t", [0, 0], np.arange(50 * 168, dtype=np.float32).reshape(50, 168) + i)
"#;
    run(Command::new(python()).arg("-c").arg(make).arg(&store));
    let m = Mounted::start(&store, &mp, &["--read-only"]);
    let check = r#"
import atlas, numpy as np, os, sys
mnt, store = sys.argv[1], sys.argv[2]
a = atlas.Atlas.open(store)
names = [l for l in open(os.path.join(mnt, ".atlasfs/stacked/t.datasets")).read().split("\n") if l]
want = np.stack([a.open_dataset(n).read_array("t") for n in names])
p = os.path.join(mnt, ".atlasfs/stacked/t.npy")
for i in range(2):
    got = np.load(p)
    assert got.shape == want.shape and np.array_equal(got, want, equal_nan=True), ("full", i)
m = np.load(p, mmap_mode="r")
assert np.array_equal(m[:, :12, 40:80], want[:, :12, 40:80], equal_nan=True), "mmap slice"
print("ok", len(names))
"#;
    let out = Command::new(python()).arg("-c").arg(check).arg(m.mp()).arg(&store).output().expect("spawn python");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok 300"),
        "the stacked view differs from numpy's stack:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log_report(&m.log)
    );
    m.unmount();
}
