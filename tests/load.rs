//! Load on one mount: 8 reader and 2 writer processes for `ATLASFS_LOAD_SECS`
//! (default 60) seconds, then the figures.
//!
//! Writers (tests/python/load_worker.py) replace their arrays over and over with
//! versioned content (every element is the version id; the shape follows from it):
//! write a hidden temp file, fsync, rename(2) it over `<array>.npy`, fsync the
//! directory, the way to replace a file under readers on any POSIX filesystem. Both
//! writers also replace one shared array. Readers `np.load` whole files, mmap them
//! and copy a slice, stat and list, and load an array nobody writes; every read must
//! be exactly one written version (no mix of two, no header of one over the data of
//! another, no short read). Then a remount must show each array's last fsynced
//! version. A second, short phase has both writers rewrite the same files in place
//! (open O_TRUNC) at once: no errors, and each file ends whole.
//!
//! Reported (printed and written to `target/reliability/load.json`): operations
//! done, p50/p90/p99/max latency per kind, errors and torn reads (both must be 0),
//! and the daemon's peak RSS (VmHWM). Timings are reported, not asserted.
//!
//! Run: `cargo test --release --test load -- --nocapture` (`ATLASFS_LOAD_SECS=15` for
//! a quick run; `ATLASFS_LOAD_MOUNT_ARGS="--passthrough-min 0"` adds mount options).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::{Mounted, bin, wait_exit};

const READERS: usize = 8;
const WRITERS: usize = 2;
/// Seconds of the in-place phase.
const INPLACE_SECS: u64 = 5;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn load_secs() -> u64 {
    std::env::var("ATLASFS_LOAD_SECS").ok().map(|v| v.parse().unwrap_or_else(|_| panic!("ATLASFS_LOAD_SECS={v:?} is not a number of seconds"))).unwrap_or(60)
}

/// Extra `atlasfs mount` options from `ATLASFS_LOAD_MOUNT_ARGS` (split on blanks).
fn mount_args() -> Vec<String> {
    std::env::var("ATLASFS_LOAD_MOUNT_ARGS").unwrap_or_default().split_whitespace().map(String::from).collect()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| common::repo().join("target"))
}

/// A worker process of load_worker.py, killed if the test fails before it ends.
struct Worker {
    child: Option<Child>,
    what: String,
    out: PathBuf,
    err: PathBuf,
}

impl Worker {
    fn spawn(py: &Path, args: &[&str], out: PathBuf, env: &[(&str, &str)]) -> Worker {
        let err = out.with_extension("stderr");
        let child = Command::new(py)
            .arg(common::repo().join("tests/python/load_worker.py"))
            .args(args)
            .arg(&out)
            .envs(env.iter().copied())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn load_worker.py");
        Worker { child: Some(child), what: args[..2].join(" "), out, err }
    }

    /// Waits for the worker; panics with its stderr if it did not finish cleanly.
    fn finish(mut self, limit: Duration) -> serde_json::Value {
        let mut child = self.child.take().unwrap();
        let st = wait_exit(&mut child, limit);
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let stderr = std::fs::read_to_string(&self.err).unwrap_or_default();
        let st = st.unwrap_or_else(|| panic!("load worker '{}' still ran {limit:?} after its deadline; stderr:\n{stderr}", self.what));
        assert!(st.success(), "load worker '{}' failed ({st}); stderr:\n{stderr}", self.what);
        let text = std::fs::read_to_string(&self.out).unwrap_or_else(|e| panic!("load worker '{}' left no {}: {e}", self.what, self.out.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("load worker '{}': {} is not JSON: {e}", self.what, self.out.display()))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_py(py: &Path, args: &[&str]) -> String {
    let out = Command::new(py).arg(common::repo().join("tests/python/load_worker.py")).args(args).output().expect("spawn load_worker.py");
    assert!(out.status.success(), "load_worker.py {args:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// p50/p90/p99/max in milliseconds of a latency sample in seconds.
fn percentiles(mut xs: Vec<f64>) -> serde_json::Value {
    if xs.is_empty() {
        return serde_json::json!({ "n": 0 });
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| (xs[((q * xs.len() as f64) as usize).min(xs.len() - 1)] * 1e5).round() / 100.0;
    serde_json::json!({ "n": xs.len(), "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": (xs[xs.len() - 1] * 1e5).round() / 100.0 })
}

/// Errors and torn reads of the workers' reports, and latencies by operation kind.
fn gather(reports: &[serde_json::Value]) -> (Vec<String>, Vec<String>, BTreeMap<String, Vec<f64>>) {
    let (mut errors, mut torn, mut lat) = (vec![], vec![], BTreeMap::<String, Vec<f64>>::new());
    for r in reports {
        errors.extend(r["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()));
        torn.extend(r["torn"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()));
        for (op, xs) in r["lat"].as_object().unwrap() {
            lat.entry(op.clone()).or_default().extend(xs.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()));
        }
    }
    (errors, torn, lat)
}

fn first(msgs: &[String], n: usize) -> String {
    let mut out: Vec<&str> = msgs.iter().take(n).map(|m| m.as_str()).collect();
    if msgs.len() > n {
        out.push("…");
    }
    out.join("\n  ")
}

#[test]
fn readers_and_writers_on_one_mount() {
    common::mount::require_fuse();
    let py = common::python();
    let secs = load_secs();
    let dir = tempfile::Builder::new().prefix("atlasfs-load").tempdir().unwrap();
    let store = dir.path().join("store");
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let st = Command::new(bin()).arg("create").arg(&store).status().unwrap();
    assert!(st.success(), "atlasfs create {}", store.display());
    // warn, not debug: a debug line per request would make the log the bottleneck
    let quiet = [("RUST_LOG", "atlasfs=warn")];
    let extra = mount_args();
    let extra: Vec<&str> = extra.iter().map(|a| a.as_str()).collect();
    let m = Mounted::start_with(store.as_os_str(), &mp, &extra, &quiet);
    let mnt = m.mp().to_path_buf();
    run_py(&py, &["init", s(&mnt)]);
    let rss_before = m.status_kb("VmRSS").unwrap_or(0);

    // ---- phase 1: 8 readers, 2 writers replacing by rename
    let secs_s = secs.to_string();
    let started = Instant::now();
    let mut workers = vec![];
    for k in 0..WRITERS {
        workers.push(Worker::spawn(&py, &["writer", s(&mnt), &k.to_string(), &secs_s], dir.path().join(format!("writer{k}.json")), &[("LOAD_WRITE_MODE", "rename")]));
    }
    for r in 0..READERS {
        workers.push(Worker::spawn(&py, &["reader", s(&mnt), &r.to_string(), &secs_s], dir.path().join(format!("reader{r}.json")), &[]));
    }
    let mut rss_max_sampled = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        rss_max_sampled = rss_max_sampled.max(m.status_kb("VmRSS").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(500));
    }
    let reports: Vec<serde_json::Value> = workers.into_iter().map(|w| w.finish(Duration::from_secs(120))).collect();
    let wall = started.elapsed().as_secs_f64();
    let peak_rss_kb = m.status_kb("VmHWM").expect("the daemon's VmHWM in /proc/PID/status");
    let (errors, torn, lat) = gather(&reports);
    let writer_reports: Vec<PathBuf> = (0..WRITERS).map(|k| dir.path().join(format!("writer{k}.json"))).collect();
    m.unmount();

    // every array holds its last fsynced version after a remount
    let m = Mounted::start_with(store.as_os_str(), &mp, &["--read-only"], &quiet);
    let mut args = vec!["verify".to_string(), s(m.mp()).to_string()];
    args.extend(writer_reports.iter().map(|p| s(p).to_string()));
    let after_remount = run_py(&py, &args.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    m.unmount();

    // ---- phase 2: both writers rewrite the same files in place at once
    let m = Mounted::start_with(store.as_os_str(), &mp, &extra, &quiet);
    let mnt = m.mp().to_path_buf();
    let inplace: Vec<Worker> = (0..WRITERS)
        .map(|k| {
            Worker::spawn(&py, &["writer", s(&mnt), &k.to_string(), &INPLACE_SECS.to_string()], dir.path().join(format!("inplace{k}.json")), &[("LOAD_WRITE_MODE", "inplace")])
        })
        .collect();
    let inplace_reports: Vec<serde_json::Value> = inplace.into_iter().map(|w| w.finish(Duration::from_secs(120))).collect();
    let (inplace_errors, _, inplace_lat) = gather(&inplace_reports);
    m.unmount();
    let m = Mounted::start_with(store.as_os_str(), &mp, &["--read-only"], &quiet);
    let mut args = vec!["verify".to_string(), s(m.mp()).to_string()];
    args.extend((0..WRITERS).map(|k| s(&dir.path().join(format!("inplace{k}.json"))).to_string()));
    run_py(&py, &args.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    m.unmount();

    // ---- report
    let count = |op: &str| lat.get(op).map_or(0, |v| v.len());
    let reads = count("load") + count("mmap_slice") + count("static_load");
    let writes = count("write");
    let report = serde_json::json!({
        "seconds": secs,
        "wall_seconds": (wall * 10.0).round() / 10.0,
        "readers": READERS,
        "writers": WRITERS,
        "reads": reads,
        "writes": writes,
        "stats_and_listings": count("stat"),
        "reads_per_second": (reads as f64 / wall).round(),
        "writes_per_second": ((writes as f64 / wall) * 10.0).round() / 10.0,
        "errors": errors.len(),
        "torn_reads": torn.len(),
        "latency": lat.iter().map(|(op, xs)| (op.clone(), percentiles(xs.clone()))).collect::<BTreeMap<_, _>>(),
        "daemon_peak_rss_mib": (peak_rss_kb as f64 / 1024.0).round(),
        "daemon_rss_after_setup_mib": (rss_before as f64 / 1024.0).round(),
        "daemon_rss_max_sampled_mib": (rss_max_sampled as f64 / 1024.0).round(),
        "last_versions_after_remount": serde_json::from_str::<serde_json::Value>(after_remount.trim()).unwrap_or(serde_json::Value::Null),
        "inplace_phase": {
            "seconds": INPLACE_SECS,
            "writes": inplace_lat.get("write").map_or(0, |v| v.len()),
            "errors": inplace_errors.len(),
            "latency": inplace_lat.iter().map(|(op, xs)| (op.clone(), percentiles(xs.clone()))).collect::<BTreeMap<_, _>>(),
        },
        "arrays": "per writer: big (512x1024 int64, 4 MiB), var (64..320 x 1024 int64, shape changes every version); shared (256x1024, both writers); static (300x1000 f64, read only)",
    });
    let text = serde_json::to_string_pretty(&report).unwrap();
    println!("load report:\n{text}");
    let out = target_dir().join("reliability");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("load.json"), &text).unwrap();
    println!("written to {}", out.join("load.json").display());

    assert!(reads > 0 && writes > 0, "the load did nothing: {reads} reads, {writes} writes");
    assert!(errors.is_empty(), "{} errors under load:\n  {}", errors.len(), first(&errors, 20));
    assert!(torn.is_empty(), "{} torn reads under load:\n  {}", torn.len(), first(&torn, 20));
    assert!(inplace_errors.is_empty(), "{} errors from two writers rewriting the same files in place:\n  {}", inplace_errors.len(), first(&inplace_errors, 20));
}
