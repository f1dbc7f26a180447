//! POSIX conformance where it applies: pjdfstest (the Rust rewrite, `cargo install
//! pjdfstest`, installed by scripts/setup-test-env.sh) run inside a dataset directory
//! of a real mount, its results compared with `tests/pjdfstest/expected-failures.txt`
//! (`NAME # reason, see docs/semantics.md#section`): a failure that is not listed, or
//! a listed case that passes, fails this test. Every reason must point at a section of
//! docs/semantics.md that exists.
//!
//! Today no case can run: pjdfstest's runner makes a base directory where it is
//! pointed and a directory per case inside that, with random file names, and atlasfs
//! has one level of directories (datasets) holding only `<array>.npy` files. The list
//! says so with `*` (the whole run), and this test checks that the run stops for that
//! reason and no other (mkdir in the dataset refused with EPERM, nothing left behind,
//! the mount still serving). Should the layout ever allow it, this test fails and asks
//! for one line per failing case instead.
//!
//! Run: `cargo test --release --test pjdfstest`

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mount::{Mounted, bin, wait_exit};

const RUN_LIMIT: Duration = Duration::from_secs(180);

/// The pjdfstest binary: `$PJDFSTEST`, else on PATH, else in ~/.cargo/bin.
fn pjdfstest() -> PathBuf {
    let cands: Vec<PathBuf> = std::env::var_os("PJDFSTEST")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join("pjdfstest")).collect::<Vec<_>>()).unwrap_or_default())
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/pjdfstest")))
        .collect();
    let found = cands.into_iter().find(|p| p.is_file());
    let p = found.unwrap_or_else(|| panic!("pjdfstest is not installed: run scripts/setup-test-env.sh (it runs `cargo install pjdfstest --locked`, which needs libacl1-dev)"));
    let ok = Command::new(&p).arg("-l").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "{} -l does not run: reinstall with scripts/setup-test-env.sh", p.display());
    p
}

/// GitHub-style anchors of the headings of a markdown file.
fn anchors(md: &str) -> Vec<String> {
    md.lines()
        .filter_map(|l| l.strip_prefix('#').map(|h| h.trim_start_matches('#').trim()))
        .map(|h| h.to_lowercase().chars().filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_').map(|c| if c == ' ' { '-' } else { c }).collect())
        .collect()
}

/// expected-failures.txt: case name → reason. Each reason must cite an existing
/// section of docs/semantics.md.
fn expected_failures() -> BTreeMap<String, String> {
    let path = common::repo().join("tests/pjdfstest/expected-failures.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sections = anchors(&std::fs::read_to_string(common::repo().join("docs/semantics.md")).unwrap());
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, reason) = line.split_once(" # ").unwrap_or_else(|| panic!("{}:{}: `NAME # reason, see docs/semantics.md#section` expected: {line}", path.display(), i + 1));
        let anchor = reason.split("docs/semantics.md#").nth(1).map(|a| a.split(|c: char| c.is_whitespace() || c == ',' || c == ')').next().unwrap().trim_end_matches('.'));
        let anchor = anchor.unwrap_or_else(|| panic!("{}:{}: the reason must cite docs/semantics.md#section: {line}", path.display(), i + 1));
        assert!(sections.iter().any(|s| s == anchor), "{}:{}: docs/semantics.md has no section #{anchor} (it has {sections:?})", path.display(), i + 1);
        assert!(out.insert(name.trim().to_string(), reason.trim().to_string()).is_none(), "{}: {name} is listed twice", path.display());
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// The per-case lines of pjdfstest's output (`NAME  ok|FAILED|skipped`).
fn parse_results(out: &str) -> BTreeMap<String, Outcome> {
    let mut res = BTreeMap::new();
    for line in out.lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(verdict), None) = (words.next(), words.next(), words.next()) else { continue };
        let outcome = match verdict {
            "ok" => Outcome::Passed,
            "FAILED" => Outcome::Failed,
            "skipped" => Outcome::Skipped,
            _ => continue,
        };
        if name.contains("::") {
            res.insert(name.to_string(), outcome);
        }
    }
    res
}

#[test]
fn pjdfstest_in_a_dataset_directory() {
    let pjd = pjdfstest();
    let expected = expected_failures();
    let dir = tempfile::Builder::new().prefix("atlasfs-pjdfstest").tempdir().unwrap();
    let store = dir.path().join("store");
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let st = Command::new(bin()).arg("create").arg(&store).status().unwrap();
    assert!(st.success(), "atlasfs create");
    let m = Mounted::start(&store, &mp, &[]);
    let ds = m.mp().join("pjd");
    std::fs::create_dir(&ds).expect("mkdir a dataset for pjdfstest");

    let out_path = dir.path().join("pjdfstest.out");
    let mut child = Command::new(&pjd)
        .arg("-c")
        .arg(common::repo().join("tests/pjdfstest/pjdfstest.toml"))
        .arg("-p")
        .arg(&ds)
        .current_dir(&ds)
        .env("NO_COLOR", "1")
        .env("CLICOLOR", "0")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(dir.path().join("pjdfstest.err")).unwrap())
        .spawn()
        .expect("spawn pjdfstest");
    let status = wait_exit(&mut child, RUN_LIMIT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("pjdfstest.err")).unwrap();
    let status = status.unwrap_or_else(|| panic!("pjdfstest did not finish within {RUN_LIMIT:?}; output so far:\n{stdout}\n{stderr}"));
    let results = parse_results(&stdout);
    let left: Vec<String> = std::fs::read_dir(&ds).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let root: Vec<String> = std::fs::read_dir(m.mp()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    m.unmount();
    let summary = stdout.lines().find(|l| l.starts_with("Summary")).unwrap_or("(no summary line)").to_string();
    let counts = |o: Outcome| results.values().filter(|&&r| r == o).count();
    println!(
        "pjdfstest: {} cases reported ({} passed, {} failed, {} skipped), exit {status}; {summary}",
        results.len(),
        counts(Outcome::Passed),
        counts(Outcome::Failed),
        counts(Outcome::Skipped)
    );

    if results.is_empty() {
        // No case ran: only right if the list says the run cannot start, for its reason.
        let why = expected.get("*").unwrap_or_else(|| panic!("pjdfstest ran no case (exit {status}) and expected-failures.txt does not say why (`*`):\n{stdout}\n{stderr}"));
        let base_refused = stderr.contains("Operation not permitted") && stderr.contains(ds.to_str().unwrap());
        assert!(
            status.code() == Some(1) && base_refused,
            "pjdfstest ran no case, but not for the listed reason ({why}): exit {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        assert!(left.is_empty(), "pjdfstest's refused run left {left:?} in the dataset");
        assert!(root.contains(&"pjd".to_string()) && root.len() == 2, "the mount's root after the run: {root:?}");
        println!("pjdfstest: the run stops as expected-failures.txt says: {why}");
        return;
    }
    let failing: Vec<&String> = results.iter().filter(|(_, r)| **r == Outcome::Failed).map(|(n, _)| n).collect();
    assert!(
        !expected.contains_key("*"),
        "pjdfstest now runs cases in a dataset directory ({} results): replace `*` in tests/pjdfstest/expected-failures.txt with one line per failing case:\n  {}",
        results.len(),
        failing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  ")
    );
    let unexpected_fail: Vec<&&String> = failing.iter().filter(|n| !expected.contains_key(n.as_str())).collect();
    let unexpected_pass: Vec<&String> = expected.keys().filter(|n| results.get(*n) == Some(&Outcome::Passed)).collect();
    let not_run: Vec<&String> = expected.keys().filter(|n| !results.contains_key(*n)).collect();
    assert!(
        unexpected_fail.is_empty() && unexpected_pass.is_empty() && not_run.is_empty(),
        "pjdfstest against expected-failures.txt:\n unexpected failures: {unexpected_fail:?}\n unexpected passes: {unexpected_pass:?}\n listed but not run: {not_run:?}\n--- output\n{stdout}"
    );
}

#[test]
fn result_lines_parse() {
    let out = "chmod::foo                    ok\nopen::bar       FAILED\n\tassertion failed\nlink::x   skipped\n\trequires features: y\n\nSummary: 1 failed, 1 skipped, 1 passed, 3 total";
    let r = parse_results(out);
    assert_eq!(r.len(), 3);
    assert_eq!(r["chmod::foo"], Outcome::Passed);
    assert_eq!(r["open::bar"], Outcome::Failed);
    assert_eq!(r["link::x"], Outcome::Skipped);
    assert!(anchors("## Per operation\n## Replacing files under readers").contains(&"replacing-files-under-readers".to_string()));
}
