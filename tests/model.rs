//! Reference model (issue 14, "Proof that nothing is lost"): seeded random sequences of
//! mkdir / `np.save` / `r+` edits (mmap) / rename (files and datasets) / unlink / rmdir /
//! fsync / compact / remount against a real mount (write-back delay 0.3 s), compared
//! with an in-memory model after every step: the names, and every array's bytes
//! through `np.load`. The driver is `tests/python/model_check.py`; on a mismatch it
//! shrinks the sequence (drops steps while the failure stays, each try on a fresh
//! store) and the failure message lists the shortest failing sequence, a step a line.
//!
//! Default: 10 sequences of 100 steps (~10 s). `ATLASFS_LONG=1`: 100 of 300.
//! `ATLASFS_MODEL_SEED=<n>` reruns one sequence (seeds are printed).
//! Run: `cargo test --release --test model -- --nocapture`

mod common;

use std::process::Command;
use std::time::Instant;

#[test]
fn random_sequences_match_the_model() {
    common::mount::require_fuse();
    let long = std::env::var("ATLASFS_LONG").is_ok_and(|v| v == "1");
    let (cases, steps) = if long { (100, 300) } else { (10, 100) };
    let seeds: Vec<u64> = match std::env::var("ATLASFS_MODEL_SEED") {
        Ok(s) => vec![s.trim().parse().unwrap_or_else(|_| panic!("ATLASFS_MODEL_SEED={s:?} is not a number"))],
        Err(_) => {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
            (0..cases).map(|i| (t.wrapping_mul(6364136223846793005).wrapping_add(i)) % 1_000_000_007).collect()
        }
    };
    eprintln!("model: {} sequences of {steps} steps, seeds {seeds:?} (rerun one with ATLASFS_MODEL_SEED=<seed>)", seeds.len());
    let py = common::python();
    let tmp = tempfile::Builder::new().prefix("atlasfs-model").tempdir().unwrap();
    let started = Instant::now();
    for seed in &seeds {
        let work = tmp.path().join(format!("s{seed}"));
        let out = Command::new(&py)
            .arg(common::repo().join("tests/python/model_check.py"))
            .args([common::mount::bin(), work.to_str().unwrap(), &seed.to_string(), &steps.to_string()])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("spawn python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim() == format!("ok {steps}"),
            "seed {seed}: the mount and the model differ\n{stdout}\n{}\n(daemon log: {})",
            String::from_utf8_lossy(&out.stderr),
            work.join("daemon.log").display()
        );
    }
    eprintln!("model: {} sequences of {steps} steps matched in {:.1}s", seeds.len(), started.elapsed().as_secs_f64());
}
