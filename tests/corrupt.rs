//! Damaged stores and hostile input, through the library, the CLI and a real mount.
//!
//! Corrupted stores (`corrupt_*`): each test builds a store with the library, damages
//! exactly one file, then checks that
//!   (a) the library returns an error whose message names that file,
//!   (b) `atlasfs get` / `ls` / `info` print one clear line naming it and exit
//!       nonzero, without a panic, while unaffected arrays still come out,
//!   (c) through a real mount, reading an affected array gives EIO and a daemon log
//!       line naming the file, the daemon stays up (every read has a timeout), and
//!       unaffected arrays read back byte for byte; a store that cannot be opened at
//!       all makes `atlasfs mount` fail fast with the file's name.
//! Bad input (`hostile_*`, `names_*`): hostile `.npy` files copied into a mount are
//! refused with EINVAL on close (log: `rejected a written .npy; the store is
//! unchanged`), control characters and names over 255 bytes are refused (EINVAL,
//! ENAMETOOLONG) by the mount and by `atlasfs put`, and the store is checked to be
//! unchanged with the library and atlas-python 0.10.
//!
//! Needs /dev/fuse, fusermount3 and the venv of scripts/setup-test-env.sh.
//! Run: `cargo test --release --test corrupt -- --test-threads=2`

mod common;

use common::mount::{Mounted, bin, is_fuse_mount, require_fuse};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use atlasfs::format::cells::Cells;
use atlasfs::format::footer::{TRAILER_LEN, decode_footer, encode_footer};
use atlasfs::fs::npy;
use atlasfs::store::{Codec, DType, MetaFormat};
use atlasfs::{Atlas, StoreConfig};
use ndarray::{ArrayD, IxDyn};

/// Longest any single read or command through a mount may take before it counts as a hang.
const OP_TIMEOUT: &str = "30";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

// ------------------------------------------------------------------ the store

/// `t`: float64 (4, 6) in chunks of two rows, in datasets `a` and `b`; `u`: int32 (10,) in `a`;
/// `s`: strings in `b`. Corruptions hit `t`'s files; `u` and `s` must stay readable.
fn t_values(ds: &str) -> Vec<f64> {
    let base = if ds == "a" { 0.0 } else { 100.0 };
    (0..24).map(|i| base + i as f64 * 0.5).collect()
}
fn u_values() -> Vec<i32> {
    (0..10).map(|i| i * i - 7).collect()
}
fn s_values() -> Vec<String> {
    ["x", "", "yz", "été"].iter().map(|s| s.to_string()).collect()
}

fn build_store(store: &Path, config: StoreConfig, compact: bool) {
    rt().block_on(async {
        let mut atlas = Atlas::create_path(store, config).await.unwrap();
        for ds in ["a", "b"] {
            let mut v = atlas.create_dataset(ds).await.unwrap();
            v.define_array::<f64>("t", vec!["y".into(), "x".into()], vec![4, 6], Some(vec![2, 6]), None).await.unwrap();
            v.write_array("t", vec![0, 0], ArrayD::from_shape_vec(IxDyn(&[4, 6]), t_values(ds)).unwrap().view()).await.unwrap();
        }
        let mut a = atlas.open_dataset("a").await.unwrap();
        a.define_array::<i32>("u", vec!["i".into()], vec![10], None, None).await.unwrap();
        a.write_array("u", vec![0], ArrayD::from_shape_vec(IxDyn(&[10]), u_values()).unwrap().view()).await.unwrap();
        let mut b = atlas.open_dataset("b").await.unwrap();
        b.define_array::<String>("s", vec!["i".into()], vec![4], None, None).await.unwrap();
        b.write_array("s", vec![0], ArrayD::from_shape_vec(IxDyn(&[4]), s_values()).unwrap().view()).await.unwrap();
        atlas.flush().await.unwrap();
        if compact {
            atlas.compact().await.unwrap();
        }
    });
}

/// The exact `.npy` bytes the mount must serve for an unaffected array (np.save's bytes;
/// `npy::encode` is checked byte for byte against numpy in src/fs/npy.rs).
fn expected_npy(ds: &str, arr: &str) -> Vec<u8> {
    match arr {
        "t" => npy::encode(&DType::Float64, &[4, 6], &Cells::Fixed { elsize: 8, bytes: t_values(ds).iter().flat_map(|v| v.to_le_bytes()).collect() }).unwrap(),
        "u" => npy::encode(&DType::Int32, &[10], &Cells::Fixed { elsize: 4, bytes: u_values().iter().flat_map(|v| v.to_le_bytes()).collect() }).unwrap(),
        "s" => npy::encode(&DType::String, &[4], &Cells::Var(s_values().into_iter().map(String::into_bytes).collect())).unwrap(),
        _ => unreachable!(),
    }
}

/// Every file of a store directory with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "atlas.lock") {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

// ------------------------------------------------------------------ corruptions

/// The archive length in a layer or stats file's trailer.
fn archive_len(b: &[u8]) -> usize {
    u64::from_le_bytes(b[b.len() - TRAILER_LEN..b.len() - 4].try_into().unwrap()) as usize
}

fn rewrite(path: &Path, f: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    std::fs::write(path, f(b)).unwrap();
}

/// What one corruption does, and what the messages must say.
struct Case {
    /// The damaged file, relative to the store.
    file: &'static str,
    damage: fn(&Path),
    /// Also in every message: what is wrong.
    says: &'static str,
    config: StoreConfig,
    compact: bool,
    /// Whether `atlasfs info` (which reads every footer, not blocks) must fail too.
    info_fails: bool,
}

fn json() -> StoreConfig {
    StoreConfig::default()
}

fn msgpack_zst() -> StoreConfig {
    StoreConfig { codec: Codec::Zstd, meta_format: MetaFormat::MsgPack, meta_compression: Codec::Zstd }
}

fn run_cli(args: &[&std::ffi::OsStr]) -> Output {
    let out = Command::new("timeout").arg(OP_TIMEOUT).arg(bin()).args(args).env("NO_COLOR", "1").output().expect("spawn atlasfs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "atlasfs {args:?} panicked:\n{err}");
    assert_ne!(out.status.code(), Some(124), "atlasfs {args:?} hung for {OP_TIMEOUT} s");
    out
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// (b) for a command that must fail: nonzero, one `atlasfs: error:` line naming the file.
fn cli_fails_naming(args: &[&std::ffi::OsStr], file: &str, says: &str) {
    let out = run_cli(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "atlasfs {args:?} succeeded on a store with a damaged {file}");
    assert!(err.contains("atlasfs: error:") && err.contains(file) && err.contains(says), "atlasfs {args:?}: stderr must name {file} and say {says:?}:\n{err}");
}

/// A store whose metadata file is damaged: nothing opens, everything says which file.
fn check_unopenable(case: &Case) {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    build_store(&store, case.config, case.compact);
    (case.damage)(&store.join(case.file));
    // (a)
    let e = rt().block_on(Atlas::open_path(&store)).err().unwrap_or_else(|| panic!("Atlas::open_path succeeded with a damaged {}", case.file));
    let msg = e.to_string();
    assert!(msg.contains(case.file) && msg.contains(case.says), "open error must name {} and say {:?}: {msg}", case.file, case.says);
    // (b)
    let out = dir.path().join("out.npy");
    for args in [vec![os("ls"), store.as_os_str()], vec![os("info"), store.as_os_str()], vec![os("get"), store.as_os_str(), os("a/u"), os("-o"), out.as_os_str()]] {
        cli_fails_naming(&args, case.file, case.says);
    }
    // (c) `atlasfs mount` (background) must fail fast with the reason, leaving no mount.
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let t0 = Instant::now();
    let out = run_cli(&[os("mount"), store.as_os_str(), mp.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "atlasfs mount succeeded on a store with a damaged {}", case.file);
    assert!(t0.elapsed() < Duration::from_secs(15), "atlasfs mount took {:?} to fail", t0.elapsed());
    assert!(err.contains(case.file) && err.contains(case.says), "atlasfs mount must name {} and say {:?}:\n{err}", case.file, case.says);
    assert!(!is_fuse_mount(&mp.canonicalize().unwrap()), "a failed mount left {} mounted", mp.display());
    // nothing was repaired or rewritten behind the user's back
    let before = std::fs::read(store.join(case.file)).unwrap();
    let _ = run_cli(&[os("ls"), store.as_os_str()]);
    assert_eq!(std::fs::read(store.join(case.file)).unwrap(), before);
}

fn cut_half(p: &Path) {
    rewrite(p, |b| b[..b.len() / 2].to_vec());
}
fn garbage(p: &Path) {
    std::fs::write(p, b"\x00\xffnot metadata at all {{{").unwrap();
}

#[test]
fn corrupt_atlas_json_truncated() {
    check_unopenable(&Case { file: "atlas.json", damage: cut_half, says: "metadata error", config: json(), compact: false, info_fails: true });
}

#[test]
fn corrupt_atlas_json_garbage() {
    check_unopenable(&Case { file: "atlas.json", damage: garbage, says: "metadata error", config: json(), compact: false, info_fails: true });
}

#[test]
fn corrupt_msgpack_zst_truncated() {
    check_unopenable(&Case { file: "atlas.msgpack.zst", damage: cut_half, says: "zstd", config: msgpack_zst(), compact: false, info_fails: true });
}

#[test]
fn corrupt_msgpack_zst_garbage() {
    check_unopenable(&Case { file: "atlas.msgpack.zst", damage: garbage, says: "metadata error", config: msgpack_zst(), compact: false, info_fails: true });
}

/// A store that opens, with one of `t`'s files damaged: `t` fails everywhere with the
/// file's name; `u` and `s` (other array files) read back exactly.
fn check_array_file(case: &Case) {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    build_store(&store, case.config, case.compact);
    assert!(store.join(case.file).exists() || case.says.contains("missing"), "the fixture has no {}", case.file);
    (case.damage)(&store.join(case.file));
    let file = case.file;

    // (a) the library
    rt().block_on(async {
        let atlas = Atlas::open_path(&store).await.unwrap_or_else(|e| panic!("the store must open (metadata is intact): {e}"));
        for ds in ["a", "b"] {
            let e = atlas.open_dataset(ds).await.unwrap().read_array::<f64>("t", vec![], vec![]).await.err().unwrap_or_else(|| panic!("{ds}/t read despite a damaged {file}"));
            let msg = e.to_string();
            assert!(msg.contains(file) && msg.contains(case.says), "{ds}/t: the error must name {file} and say {:?}: {msg}", case.says);
        }
        let u = atlas.open_dataset("a").await.unwrap().read_array::<i32>("u", vec![], vec![]).await.unwrap().unwrap();
        assert_eq!(u.iter().copied().collect::<Vec<_>>(), u_values());
        let s = atlas.open_dataset("b").await.unwrap().read_array::<String>("s", vec![], vec![]).await.unwrap().unwrap();
        assert_eq!(s.iter().cloned().collect::<Vec<_>>(), s_values());
    });

    // (b) the CLI
    let out = dir.path().join("out.npy");
    cli_fails_naming(&[os("get"), store.as_os_str(), os("a/t"), os("-o"), out.as_os_str()], file, case.says);
    assert!(!out.exists(), "a failed get left {}", out.display());
    for (target, arr) in [("a/u", "u"), ("b/s", "s")] {
        let o = run_cli(&[os("get"), store.as_os_str(), os(target), os("-o"), out.as_os_str()]);
        assert!(o.status.success(), "atlasfs get {target} (not damaged) failed: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(&out).unwrap(), expected_npy(&target[..1], arr), "atlasfs get {target}");
    }
    let o = run_cli(&[os("ls"), store.as_os_str(), os("a")]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("float64"), "ls STORE a only needs the metadata: {}", String::from_utf8_lossy(&o.stderr));
    // `info` reads every footer: it reports a damaged one by name.
    if case.info_fails {
        cli_fails_naming(&[os("info"), store.as_os_str()], file, case.says);
    } else {
        let o = run_cli(&[os("info"), store.as_os_str()]);
        assert!(o.status.success(), "info reads no blocks: {}", String::from_utf8_lossy(&o.stderr));
    }

    // (c) a real mount
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let m = Mounted::start(&store, &mp, &["--read-only"]);
    for ds in ["a", "b"] {
        let p = m.mp().join(ds).join("t.npy");
        let o = timed(Command::new("cat").arg(&p));
        assert!(!o.status.success(), "cat {} succeeded despite a damaged {file}", p.display());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("Input/output error"), "cat {}: expected EIO, got: {err}", p.display());
        // the size still comes from the metadata
        assert_eq!(std::fs::metadata(&p).unwrap().len(), expected_npy(ds, "t").len() as u64);
    }
    for (ds, arr) in [("a", "u"), ("b", "s")] {
        let o = timed(Command::new("cat").arg(m.mp().join(ds).join(format!("{arr}.npy"))));
        assert!(o.status.success(), "cat {ds}/{arr}.npy (not damaged) failed: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout, expected_npy(ds, arr), "{ds}/{arr}.npy through the mount");
    }
    let o = timed(Command::new("ls").arg(m.mp().join("b")));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "s.npy\nt.npy\n");
    assert_alive(&m);
    let log = m.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN") && l.contains(file) && l.contains(case.says)),
        "the daemon log must have a warning naming {file} and saying {:?}:\n{log}",
        case.says
    );
    let log = m.log.clone();
    m.unmount();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

fn bad_magic(p: &Path) {
    rewrite(p, |mut b| {
        let n = b.len();
        b[n - 4..].copy_from_slice(b"XXXX");
        b
    });
}

fn footer_version_5(p: &Path) {
    rewrite(p, |b| {
        let mut f = decode_footer(&b).unwrap();
        f.version = 5;
        let data_end = b.len() - TRAILER_LEN - archive_len(&b);
        let mut out = b[..data_end].to_vec();
        out.extend_from_slice(&encode_footer(&f));
        out
    });
}

fn zero_chunk_shape(p: &Path) {
    // A footer that validates, whose layouts would divide every read by zero.
    rewrite(p, |b| {
        let mut f = decode_footer(&b).unwrap();
        for e in &mut f.entries {
            e.layout.storage.chunk_shape[0] = 0;
        }
        let data_end = b.len() - TRAILER_LEN - archive_len(&b);
        let mut out = b[..data_end].to_vec();
        out.extend_from_slice(&encode_footer(&f));
        out
    });
}

fn truncated_footer(p: &Path) {
    // The trailer survives, most of the archive it describes does not.
    rewrite(p, |b| b[b.len() - TRAILER_LEN - 10..].to_vec());
}

fn smash_archive(p: &Path) {
    // The trailer (length and magic) survives; the archive it frames is noise.
    rewrite(p, |mut b| {
        let n = b.len();
        let len = archive_len(&b);
        b[n - TRAILER_LEN - len..n - TRAILER_LEN].iter_mut().enumerate().for_each(|(i, x)| *x = (i as u8).wrapping_mul(37) ^ 0x5A);
        b
    });
}

fn smash_block(p: &Path) {
    // The footer stays valid; the first block's bytes are no zstd frame any more.
    rewrite(p, |mut b| {
        let blocks = b.len() - TRAILER_LEN - archive_len(&b);
        assert!(blocks >= 8, "no block data in {}", p.display());
        b[..8].copy_from_slice(&[0xA5; 8]);
        b
    });
}

fn remove(p: &Path) {
    std::fs::remove_file(p).unwrap();
}

/// (A *sidecar* without its trailer is taken for a torn write of a flush that never
/// completed and skipped with a warning; the base is never written torn.)
#[test]
fn corrupt_layer_bad_magic() {
    check_array_file(&Case { file: "t/data.af", damage: bad_magic, says: "invalid footer", config: json(), compact: true, info_fails: true });
}

#[test]
fn corrupt_layer_footer_version() {
    check_array_file(&Case { file: "t/data.af", damage: footer_version_5, says: "unsupported footer version 5", config: json(), compact: true, info_fails: true });
}

#[test]
fn corrupt_layer_zero_chunk_shape() {
    check_array_file(&Case { file: "t/data.af", damage: zero_chunk_shape, says: "chunk shape [0, 6]", config: json(), compact: true, info_fails: true });
}

#[test]
fn corrupt_layer_truncated_footer() {
    check_array_file(&Case { file: "t/data.af", damage: truncated_footer, says: "footer length", config: json(), compact: true, info_fails: true });
}

#[test]
fn corrupt_sidecar_footer() {
    check_array_file(&Case { file: "t/data.1.af", damage: smash_archive, says: "footer does not validate", config: json(), compact: false, info_fails: true });
}

#[test]
fn corrupt_block_does_not_decompress() {
    check_array_file(&Case { file: "t/data.af", damage: smash_block, says: "codec error", config: msgpack_zst(), compact: true, info_fails: false });
}

/// A sidecar without its base: the base (which holds the data after a compaction)
/// was lost. (A missing *sidecar* cannot be told from the gap an interrupted
/// compaction or an atlas 0.10 writer leaves in the numbering; see troubleshooting.md.)
#[test]
fn corrupt_missing_base_layer() {
    check_array_file(&Case { file: "t/data.af", damage: remove, says: "base layer is missing", config: json(), compact: false, info_fails: true });
}

/// A damaged `data.stats`: the statistics fail with its name, the data reads on.
#[test]
fn corrupt_stats_file() {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    build_store(&store, json(), true);
    let file = "t/data.stats";
    rewrite(&store.join(file), |b| b[..b.len() / 2].to_vec());
    rt().block_on(async {
        let atlas = Atlas::open_path(&store).await.unwrap();
        let a = atlas.open_dataset("a").await.unwrap();
        let e = a.try_array_stats("t").await.expect_err("stats from a damaged data.stats").to_string();
        assert!(e.contains(file), "the stats error must name {file}: {e}");
        let t = a.read_array::<f64>("t", vec![], vec![]).await.unwrap().unwrap();
        assert_eq!(t.iter().copied().collect::<Vec<_>>(), t_values("a"));
        assert!(a.try_array_stats("u").await.unwrap().is_some(), "u's stats are in another file");
    });
    let out = dir.path().join("out.npy");
    let o = run_cli(&[os("get"), store.as_os_str(), os("a/t"), os("-o"), out.as_os_str()]);
    assert!(o.status.success(), "get a/t needs no stats: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), expected_npy("a", "t"));
    let o = run_cli(&[os("info"), store.as_os_str()]);
    assert!(o.status.success(), "info needs no stats: {}", String::from_utf8_lossy(&o.stderr));

    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let m = Mounted::start(&store, &mp, &["--read-only", "--xattrs"]);
    let p = m.mp().join("a/t.npy");
    let o = timed(Command::new("getfattr").args(["-n", "user.atlas.stats", "--only-values"]).arg(&p));
    assert!(!o.status.success(), "getfattr user.atlas.stats succeeded with a damaged {file}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("Input/output error"), "getfattr: {}", String::from_utf8_lossy(&o.stderr));
    let o = timed(Command::new("getfattr").args(["-n", "user.atlas.stats", "--only-values"]).arg(m.mp().join("a/u.npy")));
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("row_count"), "u's stats: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&p).unwrap(), expected_npy("a", "t"), "a/t.npy with damaged stats");
    assert_alive(&m);
    assert!(m.log_text().lines().any(|l| l.contains("WARN") && l.contains(file)), "the daemon log must name {file}:\n{}", m.log_text());
    m.unmount();
}

// ------------------------------------------------------------------ hostile .npy files

/// A `.npy` file with this header dict (padded as numpy does) and data.
fn npy_file(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    let total = (10 + dict.len() + 1).div_ceil(64) * 64;
    h.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(total - 1, b' ');
    h.push(b'\n');
    h.extend_from_slice(data);
    h
}

fn dict(descr: &str, fortran: bool, shape: &str) -> String {
    format!("{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}", if fortran { "True" } else { "False" })
}

/// Hostile files and the reason the daemon log must give for each.
fn hostile_files(dir: &Path) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut v: Vec<(&'static str, Vec<u8>, &'static str)> = vec![
        ("bad magic", b"\x93NUMPX\x01\x00\x10\x00{}".to_vec(), "not a .npy file"),
        ("truncated header", npy_file(&dict("<f8", false, "(3,)"), &[0; 24])[..40].to_vec(), "truncated .npy file"),
        (
            "header length beyond the file",
            {
                let mut f = b"\x93NUMPY\x01\x00\xff\x7f".to_vec();
                f.extend_from_slice(dict("<f8", false, "(1,)").as_bytes());
                f
            },
            "truncated .npy file",
        ),
        (
            "header length field of 4 GiB",
            {
                let mut f = b"\x93NUMPY\x02\x00\xff\xff\xff\xff".to_vec();
                f.extend_from_slice(&[b' '; 64]);
                f
            },
            "too large",
        ),
        (
            "huge header (2 MiB)",
            {
                let text = format!("{}{}\n", dict("<f8", false, "(1,)"), " ".repeat(2 << 20));
                let mut f = b"\x93NUMPY\x02\x00".to_vec();
                f.extend_from_slice(&(text.len() as u32).to_le_bytes());
                f.extend_from_slice(text.as_bytes());
                f.extend_from_slice(&[0; 8]);
                f
            },
            "too large",
        ),
        ("shape (2**62,) of bytes", npy_file(&dict("|u1", false, "(4611686018427387904,)"), &[1, 2, 3]), "truncated .npy data"),
        ("shape (2**62,) of float64", npy_file(&dict("<f8", false, "(4611686018427387904,)"), &[0; 8]), "too large"),
        ("negative dimension", npy_file(&dict("<f8", false, "(-1,)"), &[]), "axis length -1"),
        ("shape product overflowing", npy_file(&dict("<i2", false, "(1099511627776, 1099511627776)"), &[]), "too large"),
        ("empty shape beyond u32", npy_file(&dict("<f8", false, "(0, 1099511627776)"), &[]), "limited to"),
        ("empty shape overflowing", npy_file(&dict("<f8", false, "(0, 4611686018427387904)"), &[]), "too large"),
        ("2**28 empty strings", npy_file(&dict("|S0", false, "(268435456,)"), &[]), "too large"),
        ("data shorter than the header says", npy_file(&dict("<i4", false, "(4,)"), &[0; 12]), "truncated .npy data"),
        ("trailing bytes", npy_file(&dict("<i4", false, "(1,)"), &[0; 12]), "8 unexpected bytes"),
        ("complex", npy_file(&dict("<c16", false, "(1,)"), &[0; 16]), "complex"),
        ("float16", npy_file(&dict("<f2", false, "(1,)"), &[0; 2]), "float16"),
        ("timedelta", npy_file(&dict("<m8[ns]", false, "(1,)"), &[0; 8]), "timedelta"),
        ("header is a list", npy_file("['descr', '<f8']", &[]), "not a dict"),
        ("header is not a literal", npy_file("__import__('os').system('true')", &[]), "malformed .npy header"),
        ("non-string descr", npy_file("{'descr': 8, 'fortran_order': False, 'shape': (1,), }", &[0; 8]), "descr is not a dtype string"),
    ];
    // numpy's own object (pickled) and structured arrays
    let obj = dir.join("object.npy");
    let st = dir.join("structured.npy");
    let py = format!(
        "import numpy as np; np.save({:?}, np.array([1, 'x', None], dtype=object), allow_pickle=True); np.save({:?}, np.zeros(2, dtype=[('a', '<i4'), ('b', '<f8')]))",
        obj.to_str().unwrap(),
        st.to_str().unwrap()
    );
    let o = Command::new(common::python()).args(["-c", &py]).output().unwrap();
    assert!(o.status.success(), "numpy: {}", String::from_utf8_lossy(&o.stderr));
    v.push(("pickled object array", std::fs::read(&obj).unwrap(), "object arrays (pickled Python objects)"));
    v.push(("structured dtype", std::fs::read(&st).unwrap(), "structured"));
    v
}

/// What atlas-python 0.10 sees in a store: datasets, arrays and `keep`'s values.
fn python_view(store: &Path) -> String {
    let py = format!(
        "import sys, types; sys.modules.setdefault('atlas.xarray', types.ModuleType('atlas.xarray'))\n\
         import atlas, json\n\
         a = atlas.Atlas.open({:?})\n\
         out = {{}}\n\
         for d in a.list_datasets():\n\
         \x20   v = a.open_dataset(d)\n\
         \x20   out[d] = {{n: v.read_array(n).tolist() for n in v.list_arrays()}}\n\
         print(json.dumps(out, sort_keys=True))",
        store.to_str().unwrap()
    );
    let o = Command::new(common::python()).args(["-c", &py]).output().unwrap();
    assert!(o.status.success(), "atlas-python: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn build_small(store: &Path) {
    rt().block_on(async {
        let mut atlas = Atlas::create_path(store, StoreConfig::default()).await.unwrap();
        let mut v = atlas.create_dataset("ds").await.unwrap();
        v.define_array::<f64>("keep", vec!["i".into()], vec![3], None, None).await.unwrap();
        v.write_array("keep", vec![0], ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.5, -2.0, 1e300]).unwrap().view()).await.unwrap();
        atlas.create_dataset("other").await.unwrap();
        atlas.flush().await.unwrap();
    });
}

fn keep_npy() -> Vec<u8> {
    npy::encode(&DType::Float64, &[3], &Cells::Fixed { elsize: 8, bytes: [1.5f64, -2.0, 1e300].iter().flat_map(|v| v.to_le_bytes()).collect() }).unwrap()
}

#[test]
fn hostile_npy_files_through_the_mount() {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    build_small(&store);
    let before_py = python_view(&store);
    let files = hostile_files(dir.path());
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let m = Mounted::start(&store, &mp, &[]);
    let mut problems = vec![];
    for (i, (what, bytes, reason)) in files.iter().enumerate() {
        let src = dir.path().join(format!("hostile-{i}.npy"));
        std::fs::write(&src, bytes).unwrap();
        // as a new array, and over an existing one
        for target in [format!("new{i}.npy"), "keep.npy".to_string()] {
            let dst = m.mp().join("ds").join(&target);
            let log_before = m.log_text().len();
            let o = timed(Command::new("cp").arg(&src).arg(&dst));
            let err = String::from_utf8_lossy(&o.stderr);
            if o.status.success() || !err.contains("Invalid argument") {
                problems.push(format!("{what} -> ds/{target}: cp must fail with EINVAL, got {} / {err}", o.status));
            }
            let log = m.log_text();
            let new_lines = &log[log_before.min(log.len())..];
            if !new_lines.lines().any(|l| l.contains("rejected a written .npy; the store is unchanged") && l.contains(reason)) {
                problems.push(format!("{what} -> ds/{target}: no log line 'rejected a written .npy' saying {reason:?}:\n{new_lines}"));
            }
        }
        let keep = timed(Command::new("cat").arg(m.mp().join("ds/keep.npy")));
        if keep.stdout != keep_npy() {
            problems.push(format!("{what}: ds/keep.npy changed after a rejected overwrite"));
        }
    }
    let names = timed(Command::new("ls").arg(m.mp().join("ds")));
    assert_eq!(String::from_utf8_lossy(&names.stdout), "keep.npy\n", "ds after the rejected files");
    assert_alive(&m);
    m.unmount();
    assert!(problems.is_empty(), "{} problems:\n  {}", problems.len(), problems.join("\n  "));
    // the store, by the library and by atlas-python
    rt().block_on(async {
        let atlas = Atlas::open_path(&store).await.unwrap();
        assert_eq!(atlas.list_datasets(), ["ds", "other"]);
        assert_eq!(atlas.list_arrays(), ["keep"]);
        let v = atlas.open_dataset("ds").await.unwrap().read_array::<f64>("keep", vec![], vec![]).await.unwrap().unwrap();
        assert_eq!(v.iter().copied().collect::<Vec<_>>(), [1.5, -2.0, 1e300]);
    });
    assert_eq!(python_view(&store), before_py, "atlas-python sees a changed store");
}

/// What the mount converts rather than refuses: big-endian, Fortran order, `<U10`.
#[test]
fn hostile_but_valid_npy_files_are_converted() {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    build_small(&store);
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let m = Mounted::start(&store, &mp, &[]);
    let be: Vec<u8> = [1i32, -2, 300].iter().flat_map(|v| v.to_be_bytes()).collect();
    let fo: Vec<u8> = [0u16, 3, 1, 4, 2, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut u10 = vec![];
    for s in ["hello", "", "wörld"] {
        let mut units: Vec<u32> = s.chars().map(|c| c as u32).collect();
        units.resize(10, 0);
        u10.extend(units.iter().flat_map(|u| u.to_le_bytes()));
    }
    let cases = [
        (
            "be.npy",
            npy_file(&dict(">i4", false, "(3,)"), &be),
            npy::encode(&DType::Int32, &[3], &Cells::Fixed { elsize: 4, bytes: [1i32, -2, 300].iter().flat_map(|v| v.to_le_bytes()).collect() }).unwrap(),
        ),
        (
            "fo.npy",
            npy_file(&dict("<u2", true, "(2, 3)"), &fo),
            npy::encode(&DType::UInt16, &[2, 3], &Cells::Fixed { elsize: 2, bytes: (0u16..6).flat_map(|v| v.to_le_bytes()).collect() }).unwrap(),
        ),
        (
            "u10.npy",
            npy_file(&dict("<U10", false, "(3,)"), &u10),
            npy::encode(&DType::String, &[3], &Cells::Var(vec![b"hello".to_vec(), vec![], "wörld".as_bytes().to_vec()])).unwrap(),
        ),
    ];
    for (name, bytes, want) in &cases {
        let src = dir.path().join(name);
        std::fs::write(&src, bytes).unwrap();
        let o = timed(Command::new("cp").arg(&src).arg(m.mp().join("ds").join(name)));
        assert!(o.status.success(), "cp {name}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(&std::fs::read(m.mp().join("ds").join(name)).unwrap(), want, "{name} read back (little-endian, C order, <U at its widest)");
    }
    m.unmount();
    let py = python_view(&store);
    assert!(py.contains(r#""be": [1, -2, 300]"#) && py.contains(r#""fo": [[0, 1, 2], [3, 4, 5]]"#) && py.contains(r#""u10": ["hello", "", "w\u00f6rld"]"#), "atlas-python: {py}");
}

// ------------------------------------------------------------------ names

#[test]
fn names_refused_by_the_mount() {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    build_small(&store);
    // A store that already holds names with control characters stays readable.
    rt().block_on(async {
        let mut atlas = Atlas::open_path(&store).await.unwrap();
        let mut v = atlas.create_dataset("odd\x01set").await.unwrap();
        v.define_array::<i32>("line\nbreak", vec!["i".into()], vec![2], None, None).await.unwrap();
        v.write_array("line\nbreak", vec![0], ArrayD::from_shape_vec(IxDyn(&[2]), vec![7, 8]).unwrap().view()).await.unwrap();
        atlas.flush().await.unwrap();
    });
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let m = Mounted::start(&store, &mp, &[]);
    let root = m.mp().to_path_buf();
    let listed: Vec<String> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(listed.contains(&"odd\x01set".to_string()), "readdir: {listed:?}");
    let odd = std::fs::read(root.join("odd\x01set/line\nbreak.npy")).unwrap();
    assert_eq!(odd, npy::encode(&DType::Int32, &[2], &Cells::Fixed { elsize: 4, bytes: [7i32, 8].iter().flat_map(|v| v.to_le_bytes()).collect() }).unwrap());

    let long = "d".repeat(256);
    let long_file = format!("{}.npy", "a".repeat(252));
    let cases: Vec<(String, Option<i32>, std::io::Result<()>)> = vec![
        ("mkdir a\\nb".into(), Some(libc::EINVAL), std::fs::create_dir(root.join("a\nb"))),
        ("mkdir \\x01".into(), Some(libc::EINVAL), std::fs::create_dir(root.join("\x01"))),
        ("mkdir tab\\tname".into(), Some(libc::EINVAL), std::fs::create_dir(root.join("tab\tname"))),
        ("mkdir of 256 bytes".into(), Some(libc::ENAMETOOLONG), std::fs::create_dir(root.join(&long))),
        ("create ds/a\\x01b.npy".into(), Some(libc::EINVAL), std::fs::File::create(root.join("ds/a\x01b.npy")).map(drop)),
        ("create ds/x\\ny.npy".into(), Some(libc::EINVAL), std::fs::File::create(root.join("ds/x\ny.npy")).map(drop)),
        ("create a 256-byte .npy name".into(), Some(libc::ENAMETOOLONG), std::fs::File::create(root.join("ds").join(&long_file)).map(drop)),
        ("rename ds/keep.npy to k\\nk.npy".into(), Some(libc::EINVAL), std::fs::rename(root.join("ds/keep.npy"), root.join("ds/k\nk.npy"))),
        ("rename ds to a 256-byte name".into(), Some(libc::ENAMETOOLONG), std::fs::rename(root.join("other"), root.join(&long))),
        ("mkdir ..".into(), Some(libc::EEXIST), std::fs::create_dir(root.join(".."))),
    ];
    let mut problems = vec![];
    for (what, want, got) in cases {
        let got = got.err();
        if got.as_ref().and_then(|e| e.raw_os_error()) != want {
            problems.push(format!("{what}: want errno {want:?}, got {got:?}"));
        }
    }
    // 255 bytes is still fine
    let ok = "e".repeat(255);
    std::fs::create_dir(root.join(&ok)).unwrap();
    std::fs::remove_dir(root.join(&ok)).unwrap();
    let listed: Vec<String> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, [".atlasfs", "ds", "odd\x01set", "other"], "top level after the refusals");
    let ds: Vec<String> = std::fs::read_dir(root.join("ds")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(ds, ["keep.npy"]);
    assert_eq!(std::fs::read(root.join("ds/keep.npy")).unwrap(), keep_npy());
    let log = m.log_text();
    assert!(log.contains("control characters") && log.contains("limited to 255 bytes"), "the daemon log must give the reasons:\n{log}");
    m.unmount();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    rt().block_on(async {
        let atlas = Atlas::open_path(&store).await.unwrap();
        assert_eq!(atlas.list_datasets(), ["ds", "other", "odd\x01set"]);
    });
}

#[test]
fn names_refused_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    build_small(&store);
    let src = dir.path().join("x.npy");
    std::fs::write(&src, keep_npy()).unwrap();
    let before = snapshot(&store);
    let long = "n".repeat(256);
    let long_arr = format!("ds/{}", "a".repeat(252));
    let cases: Vec<(String, &str)> = vec![
        ("ds/a/b".into(), "invalid name 'a/b'"),
        ("../t".into(), "invalid name '..'"),
        ("ds/..".into(), "invalid name '..'"),
        ("_x/t".into(), "invalid name '_x'"),
        ("ds/_t".into(), "invalid name '_t'"),
        ("ds/a\nb".into(), "control characters"),
        ("d\x01s/t".into(), "control characters"),
        ("ds/\x7f".into(), "control characters"),
        (format!("{long}/t"), "limited to 255 bytes"),
        (long_arr, "limited to 255 bytes"),
    ];
    for (target, says) in &cases {
        let o = run_cli(&[os("put"), store.as_os_str(), os(target), src.as_os_str()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "atlasfs put {target:?} succeeded");
        assert!(err.starts_with("atlasfs: error:") && err.contains(says), "atlasfs put {target:?}: stderr must say {says:?}:\n{err}");
        assert_eq!(err.lines().count(), 1, "one line, control characters escaped: {err:?}");
    }
    assert!(snapshot(&store) == before, "a refused put changed the store's files");
    // the longest accepted names work
    let ok = format!("{}/{}", "n".repeat(255), "a".repeat(251));
    let o = run_cli(&[os("put"), store.as_os_str(), os(&ok), src.as_os_str()]);
    assert!(o.status.success(), "put of 255-byte names: {}", String::from_utf8_lossy(&o.stderr));
}

// ------------------------------------------------------------------ helpers

/// Runs a command with the operation timeout; a hang fails the test.
fn timed(cmd: &mut Command) -> Output {
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let out = Command::new("timeout").arg(OP_TIMEOUT).arg(&prog).args(&args).output().unwrap_or_else(|e| panic!("spawn {prog:?}: {e}"));
    assert_ne!(out.status.code(), Some(124), "{prog:?} {args:?} hung for {OP_TIMEOUT} s: the daemon must answer");
    out
}

/// The daemon is still running and serving, and has not panicked.
fn assert_alive(m: &Mounted) {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", m.pid())).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("gone");
    assert!(!matches!(state, "Z" | "X" | "gone"), "the daemon exited (state {state}):\n{}", m.log_text());
    assert!(std::fs::read_dir(m.mp()).is_ok(), "the mount stopped answering");
    assert!(!m.log_text().contains("panicked"), "the daemon panicked:\n{}", m.log_text());
}
