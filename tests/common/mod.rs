//! Helpers shared by the integration tests: the Python oracle, temp dirs, and
//! [`mount`]: a real FUSE mount of the `atlasfs` binary that cleans up after itself.
#![allow(dead_code)]

pub mod mount;

use std::path::PathBuf;
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv Python with numpy and atlas-python 0.10 (the compatibility oracle).
/// Panics with what to run when it is missing: a missing peer is a failure, not a skip.
pub fn python() -> PathBuf {
    let p = std::env::var_os("ATLASFS_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"));
    let ok = Command::new(&p).args(["-c", "import numpy, atlas; assert atlas.__version__ == '0.10.0'"]).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "{} lacks numpy and atlas-python 0.10.0: run scripts/setup-test-env.sh (or set ATLASFS_PYTHON)", p.display());
    p
}

/// Runs a Python script from tests/python with arguments; panics with its output on failure.
/// Returns stdout.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python()).arg(repo().join("tests/python").join(script)).args(args).output().expect("spawn python");
    assert!(out.status.success(), "python {script} {args:?} failed:\n--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Like [`run_python`], but checks the interpreter (a ~0.5 s import) only once per
/// test binary, for suites that start many Python processes.
pub fn run_python_checked_once(script: &str, args: &[&str]) -> String {
    static PY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let py = PY.get_or_init(python);
    let out = Command::new(py).arg(repo().join("tests/python").join(script)).args(args).env("PYTHONDONTWRITEBYTECODE", "1").output().expect("spawn python");
    assert!(out.status.success(), "python {script} {args:?} failed:\n--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
