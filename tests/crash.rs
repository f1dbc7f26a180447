//! Crash at any point (issue 6, "Reliability"): whatever moment a writer dies at, the
//! store opens, every value acknowledged before the crash reads back exactly, a later
//! unacknowledged write reads as one whole written version or not at all (never a torn
//! mix), atlas-python 0.10 opens the store and reads the same, and the next flush and
//! compaction complete.
//!
//! 1. [`daemon_sigkill_loop`]: a real mount; a Python writer (`tests/python/crash_check.py
//!    writer`) saves `.npy` files, fsyncs some, writes `.atlasfs/flush` and
//!    `.atlasfs/compact`, logging each acknowledgement after it returned; the daemon is
//!    SIGKILLed at a seeded random moment.
//! 2. [`cli_sigkill_loop`]: `atlasfs put` / `rm` / `compact`, each SIGKILLed at a random
//!    moment (or left to finish: an exit 0 is the acknowledgement).
//! 3. [`fault_injection_matrix`]: in process, on a memory and a local-directory store,
//!    for every mutation index N of a write+flush+compaction sequence: that mutation
//!    fails, or tears (a strict prefix of the payload is stored, then an error), or
//!    tears silently (reported as a success); every later mutation fails (the process
//!    died). The store is then reopened without the wrapper.
//!
//! Values: dataset `d<D>`, array `a<A>`, version `V` of shape `S` is the int64 array
//! whose flat element `i` is `((D*100 + A)*100000 + V)*1000000 + i` (see
//! `crash_check.py`), so every reader can tell which version it got.
//!
//! Seeds are printed. `ATLASFS_CRASH_SEED=<n>` reruns one iteration of each loop,
//! `ATLASFS_CRASH_ITERS=<n>` sets the iteration count, `ATLASFS_LONG=1` runs many more.
//! Run: `cargo test --release --test crash -- --test-threads=2 --nocapture`

mod common;
mod faults;

use common::mount::{bin, fusermount, is_fuse_mount, wait_exit};

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atlasfs::Atlas;
use faults::{Fault, FaultAt};
use ndarray::{ArrayD, IxDyn};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

// ------------------------------------------------------------------ seeds, values, model

/// SplitMix64: small, seedable, the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// The seeds of one loop: `ATLASFS_CRASH_SEED` alone, or `ATLASFS_CRASH_ITERS` (default
/// `default`, `long` with `ATLASFS_LONG=1`) seeds drawn from the clock. Printed.
fn seeds(what: &str, default: usize, long: usize) -> Vec<u64> {
    if let Ok(s) = std::env::var("ATLASFS_CRASH_SEED") {
        let seed = s.trim().parse().unwrap_or_else(|_| panic!("ATLASFS_CRASH_SEED={s:?} is not a u64"));
        eprintln!("{what}: seed {seed} (ATLASFS_CRASH_SEED)");
        return vec![seed];
    }
    let n = match std::env::var("ATLASFS_CRASH_ITERS") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("ATLASFS_CRASH_ITERS={s:?} is not a count")),
        Err(_) if std::env::var("ATLASFS_LONG").is_ok_and(|v| v == "1") => long,
        Err(_) => default,
    };
    let mut r = Rng(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 ^ what.len() as u64);
    let seeds: Vec<u64> = (0..n).map(|_| r.next() % 1_000_000_000).collect();
    eprintln!("{what}: {n} iterations, seeds {seeds:?} (rerun one with ATLASFS_CRASH_SEED=<seed>)");
    seeds
}

type Key = (usize, usize);

/// What a (dataset, array) holds: nothing, or version `v` of `shape`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum St {
    Absent,
    V(u32, Vec<usize>),
}

fn ds_name(d: usize) -> String {
    format!("d{d}")
}

fn arr_name(a: usize) -> String {
    format!("a{a}")
}

fn values(k: Key, v: u32, shape: &[usize]) -> Vec<i64> {
    let base = ((k.0 as i64 * 100 + k.1 as i64) * 100_000 + v as i64) * 1_000_000;
    (0..shape.iter().product::<usize>() as i64).map(|i| base + i).collect()
}

/// Acknowledged state and what happened since: after a crash each key must read as its
/// acknowledged state or as one of the states written after it.
#[derive(Debug, Default, Clone)]
struct Model {
    acked: BTreeMap<Key, St>,
    since: BTreeMap<Key, Vec<St>>,
    current: BTreeMap<Key, St>,
}

impl Model {
    fn set(&mut self, k: Key, s: St) {
        self.current.insert(k, s.clone());
        self.since.entry(k).or_default().push(s);
    }
    /// Everything so far is durable (a flush, an fsync returned).
    fn ack_all(&mut self) {
        self.acked = self.current.clone();
        self.since.clear();
    }
    /// One key's latest state is durable (a CLI command exited 0).
    fn ack_key(&mut self, k: Key) {
        if let Some(s) = self.current.get(&k) {
            self.acked.insert(k, s.clone());
        }
        self.since.remove(&k);
    }
    fn allowed(&self) -> BTreeMap<Key, Vec<St>> {
        let mut out: BTreeMap<Key, Vec<St>> = BTreeMap::new();
        for k in self.acked.keys().chain(self.since.keys()) {
            let mut v = vec![self.acked.get(k).cloned().unwrap_or(St::Absent)];
            v.extend(self.since.get(k).into_iter().flatten().cloned());
            out.insert(*k, v);
        }
        out
    }
}

/// What a store holds, as read with our API: every listed dataset and its arrays.
#[derive(Debug, Clone, PartialEq, Default)]
struct Observed {
    datasets: Vec<String>,
    arrays: BTreeMap<Key, (u32, Vec<usize>)>,
}

fn parse_index(name: &str, prefix: char) -> Option<usize> {
    name.strip_prefix(prefix)?.parse().ok()
}

/// Reads every array of the store and matches it against the allowed states.
async fn observe(a: &Atlas, allowed: &BTreeMap<Key, Vec<St>>, ctx: &str) -> Result<Observed, String> {
    let mut obs = Observed { datasets: a.list_datasets(), ..Default::default() };
    let mut problems = vec![];
    for ds in &obs.datasets {
        let d = parse_index(ds, 'd').ok_or_else(|| format!("{ctx}: unexpected dataset {ds:?}"))?;
        let view = a.open_dataset(ds).await.map_err(|e| format!("{ctx}: open_dataset {ds}: {e}"))?;
        for arr in view.list_arrays() {
            let k = (d, parse_index(&arr, 'a').ok_or_else(|| format!("{ctx}: unexpected array {ds}/{arr}"))?);
            let data: ArrayD<i64> = match view.read_array::<i64>(&arr, vec![], vec![]).await {
                Ok(Some(x)) => x.into_owned(),
                Ok(None) => {
                    problems.push(format!("{ds}/{arr}: listed but reads as None"));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{ds}/{arr}: read failed: {e}"));
                    continue;
                }
            };
            let shape = data.shape().to_vec();
            let flat: Vec<i64> = data.iter().copied().collect();
            let cands = allowed.get(&k).cloned().unwrap_or_default();
            match cands.iter().find_map(|s| match s {
                St::V(v, sh) if *sh == shape && values(k, *v, sh) == flat => Some(*v),
                _ => None,
            }) {
                Some(v) => {
                    obs.arrays.insert(k, (v, shape));
                }
                None => problems.push(format!(
                    "{ds}/{arr}: shape {shape:?}, first values {:?}: none of the allowed states {cands:?} (a torn mix, lost data or a resurrected version)",
                    &flat[..flat.len().min(3)]
                )),
            }
        }
    }
    for (k, cands) in allowed {
        if !obs.arrays.contains_key(k) && !cands.contains(&St::Absent) && !problems.iter().any(|p| p.starts_with(&format!("{}/{}:", ds_name(k.0), arr_name(k.1)))) {
            problems.push(format!("{}/{}: missing, but it must be one of {cands:?}", ds_name(k.0), arr_name(k.1)));
        }
    }
    if problems.is_empty() { Ok(obs) } else { Err(format!("{ctx}:\n  {}", problems.join("\n  "))) }
}

/// The allowed states that are exactly `obs` (for checks after a recovery).
fn exactly(obs: &Observed, keys: impl IntoIterator<Item = Key>) -> BTreeMap<Key, Vec<St>> {
    let mut out: BTreeMap<Key, Vec<St>> = keys.into_iter().map(|k| (k, vec![St::Absent])).collect();
    for (k, (v, sh)) in &obs.arrays {
        out.insert(*k, vec![St::V(*v, sh.clone())]);
    }
    out
}

/// One atlas-python check: the store must list the datasets and arrays of `obs`, each
/// array reading as its observed version or, with `allowed`, as any allowed version.
fn py_case(store: &FsPath, what: &str, obs: &Observed, allowed: Option<&BTreeMap<Key, Vec<St>>>) -> serde_json::Value {
    let mut arrays: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for ds in &obs.datasets {
        arrays.insert(ds.clone(), serde_json::json!({}));
    }
    for ((d, a), (v, sh)) in &obs.arrays {
        let mut versions = vec![serde_json::json!([v, sh])];
        for s in allowed.and_then(|al| al.get(&(*d, *a))).into_iter().flatten() {
            versions.push(match s {
                St::V(v, sh) => serde_json::json!([v, sh]),
                St::Absent => serde_json::Value::Null,
            });
        }
        arrays.get_mut(&ds_name(*d)).expect("observed arrays belong to listed datasets").as_object_mut().unwrap().insert(arr_name(*a), serde_json::json!(versions));
    }
    serde_json::json!({"store": store, "what": what, "datasets": obs.datasets, "arrays": arrays})
}

/// Runs atlas-python 0.10 over every case; panics with its findings.
fn py_check(cases: &[serde_json::Value], dir: &FsPath) {
    let spec = dir.join(format!("py-spec-{}.json", std::process::id()));
    std::fs::write(&spec, serde_json::to_vec(cases).unwrap()).unwrap();
    let out = common::run_python_checked_once("crash_check.py", &["check", spec.to_str().unwrap()]);
    assert_eq!(out.trim(), cases.len().to_string(), "atlas-python checked every store");
}

fn copy_dir(from: &FsPath, to: &FsPath) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

/// A temp dir, kept (and printed) with `ATLASFS_CRASH_KEEP=1` to look at the stores.
fn tempdir(prefix: &str) -> tempfile::TempDir {
    let mut d = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    if std::env::var("ATLASFS_CRASH_KEEP").is_ok_and(|v| v == "1") {
        eprintln!("keeping {}", d.path().display());
        d.disable_cleanup(true);
    }
    d
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

// ------------------------------------------------------------------ 3. fault injection, in process

#[derive(Debug, Clone)]
enum Op {
    Write(Key, u32, Vec<usize>),
    Delete(Key),
    DeleteDataset(usize),
    Flush,
    Compact,
}

fn gen_ops(rng: &mut Rng, n: usize, versions: &mut BTreeMap<Key, u32>) -> Vec<Op> {
    let mut ops = vec![];
    for _ in 0..n {
        let k = (rng.below(3) as usize, rng.below(3) as usize);
        let r = rng.below(100);
        ops.push(if r < 50 {
            let v = versions.entry(k).or_insert(0);
            *v += 1;
            Op::Write(k, *v, vec![1 + (*v as usize % 3), [3, 4, 7, 9][rng.below(4) as usize]])
        } else if r < 60 {
            Op::Delete(k)
        } else if r < 64 {
            Op::DeleteDataset(k.0)
        } else if r < 84 {
            Op::Flush
        } else {
            Op::Compact
        });
    }
    ops
}

/// Applies one operation with the API; `Ok(true)` when it was a flush or compaction that returned Ok.
async fn apply(a: &Atlas, op: &Op, m: &mut Model) -> atlasfs::Result<bool> {
    match op {
        Op::Write(k, v, shape) => {
            let ds = ds_name(k.0);
            let mut view = if a.dataset_exists(&ds) { a.open_dataset(&ds).await? } else { a.create_dataset_shared(&ds).await? };
            let arr = arr_name(k.1);
            let data = ArrayD::from_shape_vec(IxDyn(shape), values(*k, *v, shape)).unwrap();
            // Same geometry: overwrite in place (a new layer over the old chunks); else replace.
            let same = view.array_meta(&arr).is_some_and(|s| s.shape == *shape);
            if !same {
                if view.array_meta(&arr).is_some() {
                    view.delete_array(&arr).await?;
                }
                view.define_array::<i64>(&arr, vec!["r".into(), "c".into()], shape.clone(), Some(vec![1, 4]), None).await?;
            }
            view.write_array(&arr, vec![0, 0], data.view()).await?;
            m.set(*k, St::V(*v, shape.clone()));
            Ok(false)
        }
        Op::Delete(k) => {
            let ds = ds_name(k.0);
            if a.dataset_exists(&ds) && a.open_dataset(&ds).await?.array_meta(&arr_name(k.1)).is_some() {
                a.open_dataset(&ds).await?.delete_array(&arr_name(k.1)).await?;
                m.set(*k, St::Absent);
            }
            Ok(false)
        }
        Op::DeleteDataset(d) => {
            if a.dataset_exists(&ds_name(*d)) {
                let arrays = a.open_dataset(&ds_name(*d)).await?.list_arrays();
                a.delete_dataset_shared(&ds_name(*d)).await?;
                for arr in arrays {
                    m.set((*d, parse_index(&arr, 'a').unwrap()), St::Absent);
                }
            }
            Ok(false)
        }
        Op::Flush => a.flush_shared().await.map(|_| true),
        Op::Compact => a.compact_shared().await.map(|_| true),
    }
}

/// A store backend for the matrix: memory, or a local directory.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Memory,
    Local,
}

struct Under {
    store: Arc<dyn ObjectStore>,
    dir: Option<PathBuf>,
}

impl Under {
    fn new(b: Backend, root: &FsPath, name: &str) -> Under {
        match b {
            Backend::Memory => Under { store: Arc::new(InMemory::new()), dir: None },
            Backend::Local => {
                let dir = root.join(name);
                std::fs::create_dir_all(&dir).unwrap();
                Under { store: Arc::new(LocalFileSystem::new_with_prefix(&dir).unwrap()), dir: Some(dir) }
            }
        }
    }
}

/// The lock file a "dead" in-process writer left: in a real crash its pid is gone and
/// the next writer breaks it at once (the SIGKILL loops cover that); here the pid is
/// ours and alive, so the test removes it as the dead holder's. A torn lock (a prefix
/// of our line) is ours too; a real one would be broken after 30 s.
async fn clear_own_lock(s: &Arc<dyn ObjectStore>) {
    let p = Path::from("atlas.lock");
    if let Ok(got) = s.get(&p).await {
        let body = got.bytes().await.unwrap();
        let mine = format!("pid {} ", std::process::id());
        if mine.as_bytes().starts_with(&body[..body.len().min(mine.len())]) {
            s.delete(&p).await.unwrap();
        }
    }
}

/// One crash case: the prefix (no faults), then the faulted sequence with `fault` at
/// mutation `at`; returns the mutation count of the faulted part when nothing fired.
/// On a local directory, returns atlas-python cases to check.
async fn crash_case(b: Backend, root: &FsPath, seed: u64, at: u64, fault: Fault, keep: f64, py: &mut Vec<serde_json::Value>) -> Result<u64, String> {
    let name = format!("s{seed}-{at}-{fault:?}");
    let ctx = format!("{b:?} seed {seed}, {fault:?} at mutation {at} (keep {keep:.2})");
    let under = Under::new(b, root, &name);
    let mut rng = Rng(seed);
    let mut versions = BTreeMap::new();
    let prefix = gen_ops(&mut rng, 8, &mut versions);
    let mut faulted = gen_ops(&mut rng, 14, &mut versions);
    faulted.extend([Op::Flush, Op::Compact]);
    let mut m = Model::default();
    {
        let a = Atlas::create(under.store.clone(), Path::default(), Default::default()).await.map_err(|e| format!("{ctx}: create: {e}"))?;
        for op in prefix.iter().chain([&Op::Flush]) {
            if apply(&a, op, &mut m).await.map_err(|e| format!("{ctx}: unfaulted prefix {op:?}: {e}"))? {
                m.ack_all();
            }
        }
    }
    // The metadata file goes through a conditional PUT on memory (as on S3): atomic.
    let atomic: &[&str] = if b == Backend::Memory { &["atlas.json"] } else { &[] };
    let wrapped = FaultAt::new(under.store.clone(), at, fault, keep, atomic);
    let state = wrapped.state.clone();
    {
        let a = Atlas::open(wrapped, Path::default()).await.map_err(|e| format!("{ctx}: open: {e}"))?;
        for op in &faulted {
            let before = state.hit().is_some();
            match apply(&a, op, &mut m).await {
                // A silent tear inside this flush means the store lied: not an acknowledgement.
                Ok(true) if !(fault == Fault::TearSilently && state.hit().is_some()) => m.ack_all(),
                Ok(_) => {}
                Err(_) => break,
            }
            if before || state.hit().is_some() {
                break; // the process died with the fault
            }
        }
    }
    let Some(hit) = state.hit() else { return Ok(state.mutations()) };
    let ctx = format!("{ctx}, hit: {hit}");
    clear_own_lock(&under.store).await;
    let allowed = m.allowed();
    let a = Atlas::open(under.store.clone(), Path::default()).await.map_err(|e| format!("{ctx}: the store does not open after the crash: {e}"))?;
    let obs = observe(&a, &allowed, &format!("{ctx}: after the crash")).await?;
    drop(a);
    if let (Some(dir), Fault::Fail) = (&under.dir, fault) {
        // atlas-python on the crashed store itself (a copy: recovery changes it)
        let copy = root.join(format!("{name}-crashed"));
        copy_dir(dir, &copy);
        // atlas 0.10 has no commit point: it reads a crashed flush's sidecar (an
        // unacknowledged but whole version, or a tombstone: "array not found") until
        // atlasfs's next compaction drops it.
        py.push(py_case(&copy, &format!("{ctx}: after the crash"), &obs, Some(&allowed)));
    }
    // Recovery: a new writer writes, flushes and compacts; everything reads the same.
    let mut a = Atlas::open(under.store.clone(), Path::default()).await.map_err(|e| format!("{ctx}: reopen: {e}"))?;
    let k = (0, 0);
    let shape = vec![2, 5];
    let mut rec = Model::default();
    apply(&a, &Op::Write(k, 90_000, shape.clone()), &mut rec).await.map_err(|e| format!("{ctx}: recovery write: {e}"))?;
    a.flush().await.map_err(|e| format!("{ctx}: the flush after the crash failed: {e}"))?;
    a.compact().await.map_err(|e| format!("{ctx}: the compaction after the crash failed: {e}"))?;
    drop(a);
    let mut want = obs.clone();
    want.arrays.insert(k, (90_000, shape));
    if !want.datasets.contains(&ds_name(0)) {
        want.datasets.push(ds_name(0));
    }
    let a = Atlas::open(under.store.clone(), Path::default()).await.map_err(|e| format!("{ctx}: the store does not open after recovery: {e}"))?;
    let again = observe(&a, &exactly(&want, allowed.keys().copied()), &format!("{ctx}: after recovery")).await?;
    if again.arrays != want.arrays {
        return Err(format!("{ctx}: after recovery the store reads {:?}, expected {:?}", again.arrays, want.arrays));
    }
    if let Some(dir) = &under.dir {
        py.push(py_case(dir, &format!("{ctx}: after recovery"), &again, None));
    }
    Ok(state.mutations())
}

#[test]
fn fault_injection_matrix() {
    let root = tempdir("atlasfs-crash-faults");
    let rt = rt();
    let started = Instant::now();
    let mut py = vec![];
    let mut failures = vec![];
    let mut cases = 0;
    for seed in seeds("fault_injection_matrix", 3, 20) {
        for b in [Backend::Memory, Backend::Local] {
            // The length of the faulted sequence: a run with the fault past its end.
            let total = rt.block_on(crash_case(b, root.path(), seed, u64::MAX, Fault::Fail, 0.0, &mut py)).unwrap_or_else(|e| panic!("{e}"));
            assert!(total > 4, "seed {seed}: the faulted sequence makes only {total} mutations");
            let mut keep_rng = Rng(seed ^ 0x5eed);
            for at in 0..total {
                for fault in [Fault::Fail, Fault::TearThenFail, Fault::TearSilently] {
                    let keep = [0.0, 0.5, 0.97, (keep_rng.below(1000) as f64) / 1000.0][keep_rng.below(4) as usize];
                    cases += 1;
                    if let Err(e) = rt.block_on(crash_case(b, root.path(), seed, at, fault, keep, &mut py)) {
                        failures.push(e);
                    }
                }
            }
            eprintln!("seed {seed} {b:?}: {total} mutations, {} cases so far, {:.1}s", cases, started.elapsed().as_secs_f64());
        }
    }
    assert!(failures.is_empty(), "{} of {cases} crash cases failed:\n{}", failures.len(), failures.join("\n"));
    py_check(&py, root.path());
    eprintln!("fault_injection_matrix: {cases} cases, {} atlas-python checks, {:.1}s", py.len(), started.elapsed().as_secs_f64());
}

// ------------------------------------------------------------------ processes

/// A child process killed (and reaped) on drop: no test leaves one behind.
struct Reaped(Option<Child>);

impl Reaped {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Daemon {
    child: Reaped,
    mp: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(store: &FsPath, mp: &FsPath, extra: &[&str], log: PathBuf) -> Daemon {
        assert!(FsPath::new("/dev/fuse").exists(), "/dev/fuse is missing: the crash tests need FUSE (a container needs --device /dev/fuse --cap-add SYS_ADMIN)");
        assert!(Command::new("fusermount3").arg("-V").output().is_ok(), "fusermount3 is not installed (Debian package fuse3): run scripts/setup-test-env.sh");
        let mp = mp.canonicalize().unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin())
            .arg("mount")
            .arg(store)
            .arg(&mp)
            .arg("--foreground")
            .args(extra)
            // The write-back timer's "flush done" lines say what became durable.
            .env("RUST_LOG", "atlasfs=info,atlasfs::fs::core::writeback=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn atlasfs mount");
        let mut d = Daemon { child: Reaped(Some(child)), mp, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_fuse_mount(&d.mp) {
            if let Ok(Some(st)) = d.child.child().try_wait() {
                panic!("atlasfs mount exited ({st}) before mounting:\n{}", d.log_text());
            }
            assert!(Instant::now() < deadline, "{} was not mounted after 20 s:\n{}", d.mp.display(), d.log_text());
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::read_dir(&d.mp).unwrap_or_else(|e| panic!("readdir of the new mount: {e}\n{}", d.log_text()));
        d
    }

    fn log_text(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL; the stale mount is cleared.
    fn kill9(mut self) -> String {
        let c = self.child.child();
        c.kill().expect("SIGKILL the daemon");
        c.wait().unwrap();
        self.child.0 = None;
        assert!(fusermount("-uz", &self.mp) || !is_fuse_mount(&self.mp), "fusermount3 -uz of the killed daemon's mount failed");
        self.log_text()
    }

    /// A clean unmount: flushes; the daemon must exit 0.
    fn unmount(mut self) {
        let out = Command::new(bin()).arg("unmount").arg(&self.mp).output().unwrap();
        assert!(out.status.success(), "atlasfs unmount failed: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log_text());
        let st = wait_exit(self.child.child(), Duration::from_secs(30)).unwrap_or_else(|| panic!("the daemon did not exit after unmount:\n{}", self.log_text()));
        assert!(st.success(), "the daemon exited with {st}:\n{}", self.log_text());
        self.child.0 = None;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.0.is_some() && is_fuse_mount(&self.mp) && !fusermount("-u", &self.mp) {
            fusermount("-uz", &self.mp);
        }
        if let Some(c) = self.child.0.as_mut()
            && wait_exit(c, Duration::from_secs(10)).is_none()
        {
            let _ = c.kill();
        }
        if is_fuse_mount(&self.mp) {
            fusermount("-uz", &self.mp);
        }
    }
}

/// When the last write-back flush that completed had started (unix seconds), from a
/// daemon log: everything closed before that instant is durable.
fn writeback_durable_before(daemon_log: &str) -> f64 {
    daemon_log
        .lines()
        .filter(|l| l.contains("write-back flush done"))
        .filter_map(|l| l.split("started_unix=").nth(1)?.split_whitespace().next()?.trim_matches('"').parse::<f64>().ok())
        .fold(f64::NEG_INFINITY, f64::max)
}

/// The writer's log (see crash_check.py) as a model; also whether it ended on an error.
/// A write or unlink that returned (`K T`) before `durable_before` is acknowledged, with
/// everything before it: a write-back flush that started after it completed.
fn model_from_log(text: &str, durable_before: f64) -> (Model, Option<String>) {
    let mut m = Model::default();
    let mut ended = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| f[i].parse::<usize>().unwrap_or_else(|_| panic!("bad writer log line {line:?}"));
        match f.first().copied() {
            Some("W") => {
                let shape: Vec<usize> = f[4].split(',').map(|x| x.parse().unwrap()).collect();
                m.set((n(1), n(2)), St::V(n(3) as u32, shape));
            }
            Some("D") => m.set((n(1), n(2)), St::Absent),
            Some("A") => m.ack_all(),
            Some("K") => {
                let t: f64 = f[1].parse().unwrap_or_else(|_| panic!("bad writer log line {line:?}"));
                if t < durable_before {
                    m.ack_all();
                }
            }
            Some("S" | "L" | "C") => {}
            Some("X") => ended = Some(line.to_string()),
            _ => panic!("bad writer log line {line:?}"),
        }
    }
    (m, ended)
}

/// Checks a crashed store: our API (acknowledged values exact), atlas-python (opens,
/// lists the same, whole versions); then recovery: `recover` flushes and compacts
/// (and writes version 90000 of d0/a0), and both readers must read the same exactly.
fn check_crashed(rt: &tokio::runtime::Runtime, store: &FsPath, allowed: &BTreeMap<Key, Vec<St>>, ctx: &str, recover: impl FnOnce()) {
    let obs = rt.block_on(async {
        let a = Atlas::open_path(store).await.unwrap_or_else(|e| panic!("{ctx}: the store does not open after the kill: {e}"));
        observe(&a, allowed, &format!("{ctx}: after the kill")).await.unwrap_or_else(|e| panic!("{e}"))
    });
    let copy = store.with_extension("crashed");
    copy_dir(store, &copy);
    recover();
    let mut want = obs.clone();
    want.arrays.insert((0, 0), (90_000, vec![2, 5]));
    let again = rt.block_on(async {
        let a = Atlas::open_path(store).await.unwrap_or_else(|e| panic!("{ctx}: the store does not open after recovery: {e}"));
        observe(&a, &exactly(&want, allowed.keys().copied()), &format!("{ctx}: after recovery")).await.unwrap_or_else(|e| panic!("{e}"))
    });
    assert_eq!(again.arrays, want.arrays, "{ctx}: after recovery");
    py_check(&[py_case(&copy, &format!("{ctx}: after the kill"), &obs, Some(allowed)), py_case(store, &format!("{ctx}: after recovery"), &again, None)], store.parent().unwrap());
}

fn write_npy(path: &FsPath, k: Key, v: u32, shape: &[usize]) {
    let mut bytes = atlasfs::fs::npy::header_bytes("<i8", shape);
    for x in values(k, v, shape) {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

// ------------------------------------------------------------------ 1. the daemon, SIGKILLed

#[test]
fn daemon_sigkill_loop() {
    let rt = rt();
    let started = Instant::now();
    let seeds = seeds("daemon_sigkill_loop", 10, 100);
    for (i, &seed) in seeds.iter().enumerate() {
        let t0 = Instant::now();
        let root = tempdir("atlasfs-crash-daemon");
        let (store, mp) = (root.path().join("store"), root.path().join("mnt"));
        std::fs::create_dir_all(&mp).unwrap();
        let mut rng = Rng(seed);
        let d = Daemon::start(&store, &mp, &["--create"], root.path().join("daemon.log"));
        let log = root.path().join("writer.log");
        let mut writer = Reaped(Some(
            Command::new(common::python())
                .arg(common::repo().join("tests/python/crash_check.py"))
                .args(["writer", mp.canonicalize().unwrap().to_str().unwrap(), &seed.to_string(), log.to_str().unwrap()])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        let kill_at = Duration::from_millis(400 + rng.below(2600));
        std::thread::sleep(kill_at);
        if let Ok(Some(st)) = writer.child().try_wait() {
            panic!("seed {seed}: the writer exited ({st}) before the kill:\n{}\n{}", std::fs::read_to_string(&log).unwrap_or_default(), d.log_text());
        }
        let daemon_log = d.kill9();
        let full = std::fs::read_to_string(root.path().join("daemon.log")).unwrap_or_default();
        let st = wait_exit(writer.child(), Duration::from_secs(30)).unwrap_or_else(|| panic!("seed {seed}: the writer hung after the daemon died"));
        writer.0 = None;
        let text = std::fs::read_to_string(&log).unwrap();
        let (m, ended) = model_from_log(&text, writeback_durable_before(&full));
        assert!(ended.is_some(), "seed {seed}: the writer ended ({st}) without an I/O error: {}", text.lines().last().unwrap_or(""));
        assert!(!daemon_log.contains("panicked"), "seed {seed}: the daemon panicked:\n{daemon_log}");
        let acks = text.lines().filter(|l| *l == "A").count();
        let ctx = format!("daemon seed {seed} (killed after {kill_at:?}, {} writer steps, {acks} acknowledged)", text.lines().count());
        check_crashed(&rt, &store, &m.allowed(), &ctx, || {
            // The next mount clears nothing by hand: it flushes, compacts, takes a write.
            let d = Daemon::start(&store, &mp, &[], root.path().join("daemon2.log"));
            let mp = d.mp.clone();
            std::fs::write(mp.join(".atlasfs/flush"), b"1").unwrap_or_else(|e| panic!("{ctx}: .atlasfs/flush after the kill: {e}\n{}", d.log_text()));
            std::fs::write(mp.join(".atlasfs/compact"), b"1").unwrap_or_else(|e| panic!("{ctx}: .atlasfs/compact after the kill: {e}\n{}", d.log_text()));
            std::fs::create_dir_all(mp.join("d0")).unwrap();
            let f = mp.join("d0/a0.npy");
            let tmp = root.path().join("new.npy");
            write_npy(&tmp, (0, 0), 90_000, &[2, 5]);
            std::fs::copy(&tmp, &f).unwrap();
            std::fs::File::open(&f).unwrap().sync_all().unwrap();
            std::fs::write(mp.join(".atlasfs/compact"), b"1").unwrap();
            d.unmount();
        });
        eprintln!("daemon iteration {i} seed {seed}: killed after {kill_at:?}, {acks} acknowledgements, ok in {:.1}s", t0.elapsed().as_secs_f64());
    }
    eprintln!("daemon_sigkill_loop: {} iterations in {:.1}s", seeds.len(), started.elapsed().as_secs_f64());
}

/// The write-back timer under SIGKILL (issue 14): a writer that only writes and unlinks
/// (no fsync, no flush), the daemon killed at a random moment. Every write or unlink
/// that returned before a write-back flush started that then completed (the daemon's
/// "write-back flush done" lines) must read back exactly; with delay 0 every returned
/// close is durable. Each crashed store is also opened and read by atlas-python.
/// 50 iterations (~2 min; 3.4 min on a loaded 2-core VM); `ATLASFS_LONG=1` runs 1,000.
#[test]
fn writeback_sigkill_loop() {
    let rt = rt();
    let started = Instant::now();
    let seeds = seeds("writeback_sigkill_loop", 50, 1000);
    let (mut roots, mut py, mut acked_total, mut old_unacked) = (vec![], vec![], 0usize, 0usize);
    for (i, &seed) in seeds.iter().enumerate() {
        let t0 = Instant::now();
        let root = tempdir("atlasfs-crash-writeback");
        let (store, mp) = (root.path().join("store"), root.path().join("mnt"));
        std::fs::create_dir_all(&mp).unwrap();
        let mut rng = Rng(seed);
        let delay = [0.0, 0.2, 0.5][rng.below(3) as usize];
        let d = Daemon::start(&store, &mp, &["--create", "--writeback-delay", &delay.to_string()], root.path().join("daemon.log"));
        let log = root.path().join("writer.log");
        let mut writer = Reaped(Some(
            Command::new(common::python())
                .arg(common::repo().join("tests/python/crash_check.py"))
                .args(["writer", mp.canonicalize().unwrap().to_str().unwrap(), &seed.to_string(), log.to_str().unwrap(), "closes"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        let kill_at = Duration::from_millis(500 + rng.below(1000));
        std::thread::sleep(kill_at);
        if let Ok(Some(st)) = writer.child().try_wait() {
            panic!("seed {seed}: the writer exited ({st}) before the kill:\n{}\n{}", std::fs::read_to_string(&log).unwrap_or_default(), d.log_text());
        }
        let killed_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let daemon_log = d.kill9();
        let full = std::fs::read_to_string(root.path().join("daemon.log")).unwrap_or_default();
        wait_exit(writer.child(), Duration::from_secs(30)).unwrap_or_else(|| panic!("seed {seed}: the writer hung after the daemon died"));
        writer.0 = None;
        assert!(!daemon_log.contains("panicked"), "seed {seed}: the daemon panicked:\n{daemon_log}");
        let text = std::fs::read_to_string(&log).unwrap();
        let durable_before = if delay == 0.0 { f64::INFINITY } else { writeback_durable_before(&full) };
        let (m, _) = model_from_log(&text, durable_before);
        // Closes older than the delay that no completed flush covered (a flush still
        // under way at the kill): reported, not failed (see docs/reliability.md).
        old_unacked += text.lines().filter_map(|l| l.strip_prefix("K ")?.parse::<f64>().ok()).filter(|&t| t >= durable_before && t < killed_unix - delay).count();
        acked_total += m.acked.len();
        let ctx = format!("write-back seed {seed} (delay {delay} s, killed after {kill_at:?}, {} writer steps)", text.lines().count());
        let obs = rt.block_on(async {
            let a = Atlas::open_path(&store).await.unwrap_or_else(|e| panic!("{ctx}: the store does not open after the kill: {e}"));
            observe(&a, &m.allowed(), &ctx).await.unwrap_or_else(|e| panic!("{e}\n{}", daemon_log))
        });
        py.push(py_case(&store, &ctx, &obs, Some(&m.allowed())));
        roots.push(root);
        eprintln!("write-back iteration {i} seed {seed}: delay {delay} s, killed after {kill_at:?}, {} keys acknowledged, ok in {:.1}s", m.acked.len(), t0.elapsed().as_secs_f64());
    }
    assert!(acked_total > 0, "no write-back flush acknowledged anything in {} iterations: the timer never fired", seeds.len());
    let dir = tempdir("atlasfs-crash-writeback-py");
    py_check(&py, dir.path());
    eprintln!(
        "writeback_sigkill_loop: {} iterations in {:.1}s, {acked_total} keys acknowledged by write-back, {old_unacked} closes older than the delay still in a flush under way at the kill",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------ 2. the CLI, SIGKILLed

/// Runs `atlasfs ARGS`, SIGKILLing it after `kill_after` if it is still running.
/// Returns whether it completed (exit 0); a failure that is not our kill panics.
fn cli_maybe_killed(args: &[&str], kill_after: Option<Duration>, ctx: &str) -> bool {
    let mut c = Reaped(Some(Command::new(bin()).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()));
    let st = match kill_after.and_then(|t| if wait_exit(c.child(), t).is_none() { Some(()) } else { None }) {
        Some(()) => {
            c.child().kill().unwrap();
            c.child().wait().unwrap();
            c.0 = None;
            return false;
        }
        None => c.child().wait().unwrap(),
    };
    let mut err = String::new();
    std::io::Read::read_to_string(c.child().stderr.as_mut().unwrap(), &mut err).unwrap();
    c.0 = None;
    assert!(st.success(), "{ctx}: atlasfs {args:?} failed ({st}): {err}");
    true
}

#[test]
fn cli_sigkill_loop() {
    let rt = rt();
    let started = Instant::now();
    let seeds = seeds("cli_sigkill_loop", 12, 150);
    let (mut kills, mut runs) = (0, 0);
    for (i, &seed) in seeds.iter().enumerate() {
        let t0 = Instant::now();
        let root = tempdir("atlasfs-crash-cli");
        let store = root.path().join("store");
        let s = store.to_str().unwrap().to_string();
        cli_maybe_killed(&["create", &s], None, "create");
        let mut rng = Rng(seed);
        let mut m = Model::default();
        let mut versions: BTreeMap<Key, u32> = BTreeMap::new();
        for step in 0..14 {
            let ctx = format!("cli seed {seed} step {step}");
            // Most commands are killed at a random moment (a small put takes 5-20 ms, a big one ~60).
            let kill = rng.chance(0.7).then(|| Duration::from_micros(rng.below(20_000)));
            let k = (rng.below(3) as usize, rng.below(3) as usize);
            let r = rng.below(100);
            let target = format!("{}/{}", ds_name(k.0), arr_name(k.1));
            runs += 1;
            if r < 65 {
                let v = versions.entry(k).or_insert(0);
                *v += 1;
                let cols = if rng.chance(0.8) { [3, 5, 8][rng.below(3) as usize] } else { 50_000 + rng.below(250_000) as usize };
                let shape = vec![1 + *v as usize % 3, cols];
                let file = root.path().join(format!("{target}.{v}.npy").replace('/', "-"));
                write_npy(&file, k, *v, &shape);
                m.set(k, St::V(*v, shape));
                let chunks = if rng.chance(0.5) { vec!["--chunks".to_string(), format!("1,{}", 1 + cols / 3)] } else { vec![] };
                let mut args = vec!["put", &s, &target, file.to_str().unwrap()];
                args.extend(chunks.iter().map(String::as_str));
                if cli_maybe_killed(&args, kill, &ctx) {
                    m.ack_key(k);
                } else {
                    kills += 1;
                }
            } else if r < 80 {
                // only an array that is surely there (rm of a missing one is an error)
                if m.acked.get(&k).is_some_and(|s| matches!(s, St::V(..))) && !m.since.contains_key(&k) {
                    m.set(k, St::Absent);
                    if cli_maybe_killed(&["rm", &s, &target], kill, &ctx) {
                        m.ack_key(k);
                    } else {
                        kills += 1;
                    }
                }
            } else if !cli_maybe_killed(&["compact", &s], kill, &ctx) {
                kills += 1;
            }
        }
        let ctx = format!("cli seed {seed}");
        check_crashed(&rt, &store, &m.allowed(), &ctx, || {
            cli_maybe_killed(&["compact", &s], None, &format!("{ctx}: compaction after the kills"));
            let file = root.path().join("new.npy");
            write_npy(&file, (0, 0), 90_000, &[2, 5]);
            cli_maybe_killed(&["put", &s, "d0/a0", file.to_str().unwrap()], None, &format!("{ctx}: put after the kills"));
            cli_maybe_killed(&["compact", &s], None, &format!("{ctx}: second compaction"));
        });
        eprintln!("cli iteration {i} seed {seed}: ok in {:.1}s", t0.elapsed().as_secs_f64());
    }
    eprintln!("cli_sigkill_loop: {} iterations, {runs} commands, {kills} killed, {:.1}s", seeds.len(), started.elapsed().as_secs_f64());
}

// ------------------------------------------------------------------ the bugs the matrix found, one by one

/// Runs `ops` on a copy of the local store `from` through a [`FaultAt`] aimed at the
/// first mutation of a path ending with `target`; returns what the fault hit.
fn fault_on(rt: &tokio::runtime::Runtime, from: &FsPath, to: &FsPath, target: &str, fault: Fault, ops: &[Op]) -> String {
    copy_dir(from, to);
    let under: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(to).unwrap());
    let wrapped = FaultAt::on_path(under.clone(), target, fault, 0.5);
    let state = wrapped.state.clone();
    rt.block_on(async {
        let a = Atlas::open(wrapped, Path::default()).await.unwrap();
        for op in ops {
            if apply(&a, op, &mut Model::default()).await.is_err() || state.hit().is_some() {
                break;
            }
        }
        clear_own_lock(&under).await;
    });
    state.hit().unwrap_or_else(|| panic!("no mutation of {target} in {ops:?}"))
}

/// Before the fix: a flush that died between its sidecars and its metadata file left a
/// sidecar that the metadata does not describe; the acknowledged array then read with
/// the unacknowledged shape ("read region outside"), an unacknowledged delete hid it,
/// and a compaction made the unacknowledged version permanent. Torn layer files (a store
/// whose PUT is not atomic) made the whole array unreadable, and a torn metadata file
/// the whole store.
#[test]
fn crashed_flush_leftovers_are_set_aside_and_compacted_away() {
    let rt = rt();
    let root = tempdir("atlasfs-crash-leftovers");
    let base = root.path().join("base");
    let v1 = |k: Key, shape: &[usize]| Op::Write(k, 1, shape.to_vec());
    rt.block_on(async {
        let a = Atlas::create_path(&base, Default::default()).await.unwrap();
        for op in [v1((0, 0), &[2, 3]), v1((0, 1), &[1, 4]), v1((1, 0), &[1, 5]), Op::Flush] {
            apply(&a, &op, &mut Model::default()).await.unwrap();
        }
    });
    let acked = Observed { datasets: vec!["d0".into(), "d1".into()], arrays: [((0, 0), (1, vec![2, 3])), ((0, 1), (1, vec![1, 4])), ((1, 0), (1, vec![1, 5]))].into() };
    // The unacknowledged flush: a new shape for d0/a0, a delete of d0/a1, an in-place write of d1/a0.
    let ops = [Op::Write((0, 0), 2, vec![3, 5]), Op::Delete((0, 1)), Op::Write((1, 0), 2, vec![1, 5]), Op::Flush];
    let mut allowed = exactly(&acked, []);
    allowed.get_mut(&(1, 0)).unwrap().push(St::V(2, vec![1, 5])); // same grid: visible, whole
    let cases = [
        ("atlas.lock", Fault::Fail),
        ("atlas.json", Fault::Fail),
        ("atlas.json.saving", Fault::TearSilently),
        ("a0/data.2.af", Fault::TearThenFail),
        ("a1/data.2.af", Fault::TearSilently),
    ];
    let mut py = vec![];
    for (i, (target, fault)) in cases.into_iter().enumerate() {
        let store = root.path().join(format!("case{i}"));
        let hit = fault_on(&rt, &base, &store, target, fault, &ops);
        let ctx = format!("{fault:?} at {hit}");
        let (obs, files_before) = rt.block_on(async {
            let a = Atlas::open_path(&store).await.unwrap_or_else(|e| panic!("{ctx}: does not open: {e}"));
            (observe(&a, &allowed, &ctx).await.unwrap_or_else(|e| panic!("{e}")), list_files(&store))
        });
        assert_eq!(obs.arrays[&(0, 0)], (1, vec![2, 3]), "{ctx}: the acknowledged shape of d0/a0");
        assert_eq!(obs.arrays[&(0, 1)], (1, vec![1, 4]), "{ctx}: d0/a1, whose delete was not acknowledged");
        rt.block_on(async { Atlas::open_path(&store).await.unwrap().compact().await.unwrap_or_else(|e| panic!("{ctx}: compaction: {e}")) });
        let files_after = list_files(&store);
        // one layer per array file; a stray atlas.json.saving is harmless (the next save replaces it)
        assert!(
            files_after.iter().all(|f| f.ends_with("/data.af") || f.ends_with("/data.stats") || f.starts_with("atlas.json")),
            "{ctx}: left after compaction: {files_after:?} (before: {files_before:?})"
        );
        let again =
            rt.block_on(async { observe(&Atlas::open_path(&store).await.unwrap(), &exactly(&obs, []), &format!("{ctx}, compacted")).await.unwrap_or_else(|e| panic!("{e}")) });
        assert_eq!(again, obs, "{ctx}: compaction changed what the store reads");
        py.push(py_case(&store, &format!("{ctx}, compacted"), &again, None));
    }
    py_check(&py, root.path());
}

/// Every file under `dir`, relative, sorted.
fn list_files(dir: &FsPath) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(list_files(&e.path()).into_iter().map(|f| format!("{}/{f}", e.file_name().to_string_lossy())));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}
