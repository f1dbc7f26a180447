//! atlasfs as a drop-in for atlas-rust 0.10's API (issue 16): 0.10 programs built,
//! unchanged, against atlasfs under the name `atlas`, then run.
//!
//! - `written_for_010`: tests/api_compat, our own program in 0.10's form (every public
//!   item of 0.10, its doc examples, the spec's §6 checklist).
//! - `atlas_rust_010_own_tests_and_examples`: atlas-rust 0.10.0's own integration
//!   tests and examples, fetched from the crate registry with cargo at run time
//!   (never committed here) and copied into a scratch crate whose `atlas` is atlasfs.
//!
//! Both build with every warning an error (`[lints.rust] warnings = "deny"` in their
//! manifests, as `-D warnings` in CI, without rebuilding the dependencies as a
//! changed `RUSTFLAGS` would): a 0.10 program's `let mut` must not draw `unused_mut`.
//!
//! Both build in their own workspaces with one target directory, target/api_compat,
//! kept between runs; versions are pinned by copying our Cargo.lock. The first run
//! compiles the dependencies once (a few minutes); later runs only atlasfs and the
//! tests. Needs network access to the crate registry, as building atlasfs does.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    repo().join("target/api_compat")
}

fn cargo(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo {args:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Sums `test result: ok. N passed; M failed` lines.
fn counts(output: &str) -> (usize, usize) {
    let mut passed = 0;
    let mut failed = 0;
    for line in output.lines().filter(|l| l.starts_with("test result:")) {
        let num = |word: &str| {
            line.split(';').find_map(|part| {
                part.trim().trim_start_matches("test result: ok.").trim_start_matches("test result: FAILED.").trim().strip_suffix(word)?.trim().parse::<usize>().ok()
            })
        };
        passed += num("passed").unwrap_or(0);
        failed += num("failed").unwrap_or(0);
    }
    (passed, failed)
}

/// Our Cargo.lock next to a scratch manifest, so its dependencies resolve to the
/// versions atlasfs is built and tested with.
fn pin_versions(crate_dir: &Path) {
    std::fs::copy(repo().join("Cargo.lock"), crate_dir.join("Cargo.lock")).expect("copy Cargo.lock");
}

#[test]
fn written_for_010() {
    let dir = repo().join("tests/api_compat");
    pin_versions(&dir);
    let (ok, out) = cargo(&dir, &["test", "--release"]);
    let (passed, failed) = counts(&out);
    eprintln!("{out}");
    assert!(ok, "tests/api_compat (a program written for atlas-rust 0.10) did not build or pass against atlasfs; output above");
    assert!(passed >= 15 && failed == 0, "expected every test of tests/api_compat to run and pass: {passed} passed, {failed} failed");
}

/// Where cargo put atlas-rust 0.10.0's published source (fetched on first use).
fn fetch_010() -> PathBuf {
    let dir = target_dir().join("fetch-atlas-rust-0.10.0");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), "[package]\nname = \"fetch010\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n[workspace]\n\n[dependencies]\natlas-rust = \"=0.10.0\"\n")
        .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    let (ok, out) = cargo(&dir, &["fetch"]);
    assert!(ok, "cargo fetch of atlas-rust 0.10.0 failed (is the crate registry reachable?):\n{out}");
    let meta = Command::new(env!("CARGO")).args(["metadata", "--format-version", "1"]).current_dir(&dir).output().expect("cargo metadata");
    assert!(meta.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&meta.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&meta.stdout).expect("cargo metadata JSON");
    let manifest = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "atlas-rust" && p["version"] == "0.10.0")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("atlas-rust 0.10.0 in cargo metadata");
    Path::new(manifest).parent().unwrap().to_path_buf()
}

fn copy_rs(from: &Path, to: &Path) -> Vec<String> {
    std::fs::create_dir_all(to).unwrap();
    let mut names = vec![];
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rs") {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
            names.push(p.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    names.sort();
    names
}

#[test]
fn atlas_rust_010_own_tests_and_examples() {
    let src = fetch_010();
    let dir = target_dir().join("atlas-rust-0.10.0-against-atlasfs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    let tests = copy_rs(&src.join("tests"), &dir.join("tests"));
    let examples = copy_rs(&src.join("examples"), &dir.join("examples"));
    // 0.10's own dev-dependencies and what its tests and examples import.
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"atlas010_own\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n[workspace]\n\n[lints.rust]\nwarnings = \"deny\"\n\n\
             [dependencies]\natlas = {{ package = \"atlasfs\", path = {:?}, default-features = false }}\n\n\
             [dev-dependencies]\nndarray = \"0.17\"\nobject_store = {{ version = \"0.13\", default-features = false, features = [\"fs\"] }}\n\
             tempfile = \"3\"\ntokio = {{ version = \"1\", features = [\"rt\", \"rt-multi-thread\", \"macros\"] }}\n",
            repo().display().to_string()
        ),
    )
    .unwrap();
    pin_versions(&dir);

    let (ok, out) = cargo(&dir, &["test", "--release", "--tests"]);
    let (passed, failed) = counts(&out);
    eprintln!("{out}");
    assert!(ok, "atlas-rust 0.10.0's tests ({tests:?}) did not build or pass against atlasfs; output above");
    let (ok, out) = cargo(&dir, &["build", "--release", "--examples"]);
    assert!(ok, "atlas-rust 0.10.0's examples ({examples:?}) did not build against atlasfs:\n{out}");
    let mut ran = vec![];
    for ex in &examples {
        let bin = target_dir().join("release/examples").join(ex);
        let out = Command::new(&bin).output().unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "atlas-rust 0.10.0's example {ex} failed against atlasfs:\n{text}");
        ran.push(ex.clone());
    }
    eprintln!("atlas-rust 0.10.0 against atlasfs: test files {tests:?}: {passed} passed, {failed} failed; examples built and ran: {ran:?}");
    assert!(passed >= 14 && failed == 0 && ran.len() == 3, "{passed} passed, {failed} failed, examples {ran:?}");
}
