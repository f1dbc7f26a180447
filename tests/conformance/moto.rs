//! A real S3-compatible server for the tests: moto, from the repository's venv,
//! started through scripts/s3-server.sh on 127.0.0.1 and a free port.
//!
//! The guard kills the server on drop. The server also exits when its stdin
//! closes, so it goes away even if the test process dies without unwinding.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;

pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "test";
pub const REGION: &str = "us-east-1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running moto server; killed when dropped.
pub struct MotoServer {
    child: Child,
    stdin: Option<ChildStdin>,
    pub port: u16,
    pub bucket: String,
}

impl MotoServer {
    /// Starts moto on 127.0.0.1 (a free port) with `bucket` created, and waits
    /// until it answers. Panics, saying what to run, when moto is not installed.
    pub fn start(bucket: &str) -> MotoServer {
        let moto = repo().join(".venv/bin/moto_server");
        let python = repo().join(".venv/bin/python");
        let ok = moto.is_file() && Command::new(&python).args(["-c", "import moto.server, boto3"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        assert!(
            ok,
            "{} (moto[server]) is missing: run scripts/setup-test-env.sh to install the test environment; the S3 conformance tests need a real S3-compatible server",
            moto.display()
        );

        let mut child = Command::new("bash")
            .arg(repo().join("scripts/s3-server.sh"))
            .args(["--port", "0", "--until-eof", bucket])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn scripts/s3-server.sh");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Reads to EOF so the server never writes into a closed or full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = line.strip_prefix("PORT ") {
                    let _ = tx.send(p.trim().parse::<u16>().ok());
                }
            }
        });
        let mut server = MotoServer { child, stdin, port: 0, bucket: bucket.to_string() };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(port)) => {
                    server.port = port;
                    break;
                }
                Ok(None) => panic!("scripts/s3-server.sh printed an unreadable port"),
                Err(_) => {
                    if let Ok(Some(status)) = server.child.try_wait() {
                        panic!("scripts/s3-server.sh exited with {status} before the server answered (stderr above); run scripts/setup-test-env.sh if moto is broken");
                    }
                    assert!(Instant::now() < deadline, "moto did not answer within 90 s");
                }
            }
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An object store for the bucket, configured explicitly (no environment).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_bucket_name(&self.bucket)
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .with_region(REGION)
                // The default already, spelt out: PutMode::Create sends If-None-Match: *,
                // which moto honours (412 → AlreadyExists).
                .with_conditional_put(S3ConditionalPut::ETagMatch)
                .build()
                .expect("build S3 store"),
        )
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A prefix no other test (or earlier run) uses.
pub fn unique_prefix(tag: &str) -> Path {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    Path::from(format!("{tag}/{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}
