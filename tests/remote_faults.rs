//! Faults on the wire between atlasfs and S3: a fault-injecting HTTP proxy on
//! 127.0.0.1 in front of a real S3-compatible server (moto), and the real `atlasfs`
//! binary — CLI commands and `atlasfs mount` daemons — pointed at the proxy with
//! `--endpoint http://127.0.0.1:PORT`.
//!
//! The proxy picks a rule per request by method and path and answers it with a 503
//! or 500 (an S3 XML error body), resets the connection half-way through the
//! response, truncates the body (a clean close before Content-Length bytes), or
//! never answers. The tests show (issue 5, "Faults"):
//!
//! - transient faults are hidden by the retries: CLI commands succeed and reads return
//!   exact bytes; the proxy counts the requests that had to be repeated;
//! - a block GET that keeps failing gives `EIO` for that file only, within the bound
//!   `--request-timeout` / `--retries` / `--retry-timeout` set, while other files of
//!   the mount read; once the fault is lifted the file reads again;
//! - a request that is never answered gives `EIO` within the bound too; a reader
//!   stuck on it dies at SIGKILL, and the daemon unmounts and exits within a bound;
//! - a PUT that fails once during `fsync` is retried; one that keeps failing makes
//!   `fsync` fail with `EIO` and a log line, loses nothing, and the next `fsync` after
//!   the fault is lifted writes it all: atlas-python 0.10 reads it from the bucket.
//!
//! Run: `cargo test --release --test remote_faults -- --test-threads=2`

mod common;
#[path = "conformance/moto.rs"]
#[allow(dead_code)]
mod moto;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::Mounted;
use proxy::{Fault, Proxy, Rule};

// ------------------------------------------------------------------ the proxy

/// A fault-injecting HTTP/1.1 proxy: plain threads and sockets, one thread per
/// client connection, each request forwarded to the upstream on a fresh connection.
mod proxy {
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use parking_lot::Mutex;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Fault {
        /// Answer with this status and an S3 XML error body; the upstream never sees it.
        Status(u16),
        /// Forward, send the first half of the answer (head and body), then reset (RST)
        /// the connection.
        Reset,
        /// Forward, send the first half of the answer (the head promises it all), then close.
        Truncate,
        /// Read the request and never answer (until the client gives up).
        Stall,
    }

    /// Which requests a fault hits: `method` ("" for any) and a substring of the request
    /// target (path and query) followed by ` range=` and its Range header; `times`
    /// requests, then the rule is spent (`None`: forever).
    #[derive(Debug, Clone)]
    pub struct Rule {
        pub method: &'static str,
        pub path: String,
        pub fault: Fault,
        pub times: Option<u32>,
    }

    impl Rule {
        pub fn new(method: &'static str, path: &str, fault: Fault, times: Option<u32>) -> Rule {
            Rule { method, path: path.to_string(), fault, times }
        }
    }

    /// One request the proxy saw, and what it did with it.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub method: String,
        /// The path, without the query.
        pub path: String,
        pub query: String,
        pub fault: Option<Fault>,
    }

    #[derive(Default)]
    struct State {
        rules: Mutex<Vec<Rule>>,
        seen: Mutex<Vec<Seen>>,
        stop: AtomicBool,
    }

    pub struct Proxy {
        pub port: u16,
        upstream: u16,
        state: Arc<State>,
    }

    impl Proxy {
        pub fn start(upstream: u16) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1");
            let port = listener.local_addr().unwrap().port();
            listener.set_nonblocking(true).unwrap();
            let state = Arc::new(State::default());
            let st = state.clone();
            std::thread::spawn(move || {
                while !st.stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let st = st.clone();
                            std::thread::spawn(move || {
                                let _ = serve(conn, upstream, &st);
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            Proxy { port, upstream, state }
        }

        pub fn endpoint(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }

        pub fn upstream(&self) -> u16 {
            self.upstream
        }

        pub fn add(&self, rule: Rule) {
            self.state.rules.lock().push(rule);
        }

        /// Lifts every fault.
        pub fn clear(&self) {
            self.state.rules.lock().clear();
        }

        pub fn seen(&self) -> Vec<Seen> {
            self.state.seen.lock().clone()
        }

        pub fn reset_counts(&self) {
            self.state.seen.lock().clear();
        }

        /// Requests that a fault hit (each one the client had to repeat or give up on).
        pub fn faulted(&self) -> usize {
            self.state.seen.lock().iter().filter(|s| s.fault.is_some()).count()
        }

        pub fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
            self.state.seen.lock().iter().filter(|s| f(s)).count()
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            // Stalled connections notice within 100 ms and close.
            self.state.stop.store(true, Ordering::Relaxed);
        }
    }

    fn pick(state: &State, method: &str, path: &str) -> Option<Fault> {
        let mut rules = state.rules.lock();
        let r = rules.iter_mut().find(|r| (r.method.is_empty() || r.method == method) && path.contains(&r.path) && r.times != Some(0))?;
        if let Some(t) = &mut r.times {
            *t -= 1;
        }
        Some(r.fault)
    }

    struct Request {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn parse_head(head: &str) -> (String, Vec<(String, String)>) {
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or_default().to_string();
        let headers = lines.filter(|l| !l.is_empty()).filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
        (first, headers)
    }

    /// Decodes a chunked body; `None` while incomplete.
    fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![];
        loop {
            let eol = find(b, b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.split(';').next()?.trim(), 16).ok()?;
            b = &b[eol + 2..];
            if size == 0 {
                return Some(out);
            }
            if b.len() < size + 2 {
                return None;
            }
            out.extend_from_slice(&b[..size]);
            b = &b[size + 2..];
        }
    }

    /// Reads one request from a kept-alive client connection; `None` at EOF.
    fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Request>> {
        let mut chunk = [0u8; 64 * 1024];
        let head_end = loop {
            if let Some(i) = find(buf, b"\r\n\r\n") {
                break i;
            }
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let (first, headers) = parse_head(&head);
        let mut parts = first.split(' ');
        let (method, target) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
        let mut rest = buf.split_off(head_end + 4);
        std::mem::swap(buf, &mut rest); // buf: what follows the head
        let chunked = header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            loop {
                if let Some(b) = dechunk(buf) {
                    // (Trailers are not used by S3 clients; whatever follows the last chunk is the next request.)
                    let end = find(buf, b"0\r\n\r\n").map(|i| i + 5).unwrap_or(buf.len());
                    buf.drain(..end);
                    break b;
                }
                let n = conn.read(&mut chunk)?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        } else {
            let len: usize = header(&headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while buf.len() < len {
                let n = conn.read(&mut chunk)?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..len).collect()
        };
        let headers = headers.into_iter().filter(|(k, _)| !k.eq_ignore_ascii_case("transfer-encoding")).collect();
        Ok(Some(Request { method, target, headers, body }))
    }

    /// Sends `req` upstream on a fresh connection and returns (head, body) of the
    /// answer, re-framed with a Content-Length so the client connection can stay open.
    fn forward(req: &Request, upstream: u16) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
        up.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
        for (k, v) in &req.headers {
            if !k.eq_ignore_ascii_case("connection") && !k.eq_ignore_ascii_case("content-length") {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", req.body.len()));
        up.write_all(out.as_bytes())?;
        up.write_all(&req.body)?;
        let mut raw = vec![];
        up.read_to_end(&mut raw)?;
        let end = find(&raw, b"\r\n\r\n").ok_or_else(|| io::Error::other("upstream sent no response head"))?;
        let (first, headers) = parse_head(&String::from_utf8_lossy(&raw[..end]));
        let status = first.split(' ').nth(1).unwrap_or("502").to_string();
        let reason: String = first.splitn(3, ' ').nth(2).unwrap_or("").to_string();
        let mut body = raw[end + 4..].to_vec();
        if header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            body = dechunk(&body).ok_or_else(|| io::Error::other("upstream sent a broken chunked body"))?;
        }
        let is_head = req.method == "HEAD";
        if is_head {
            body.clear();
        }
        let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
        for (k, v) in &headers {
            let drop = ["transfer-encoding", "connection", "keep-alive"].iter().any(|h| k.eq_ignore_ascii_case(h)) || (!is_head && k.eq_ignore_ascii_case("content-length"));
            if !drop {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        if !is_head {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        Ok((head.into_bytes(), body))
    }

    fn error_response(status: u16) -> Vec<u8> {
        let (reason, code) = match status {
            503 => ("Service Unavailable", "SlowDown"),
            500 => ("Internal Server Error", "InternalError"),
            _ => ("Error", "InternalError"),
        };
        let body =
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>fault</RequestId></Error>");
        format!("HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    /// SO_LINGER 0: closing the socket sends RST instead of FIN.
    fn reset(conn: TcpStream) {
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on a socket we own, with a correctly sized `linger`.
        unsafe { libc::setsockopt(conn.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, &linger as *const _ as *const libc::c_void, std::mem::size_of::<libc::linger>() as u32) };
        drop(conn);
    }

    fn serve(mut conn: TcpStream, upstream: u16, state: &State) -> io::Result<()> {
        let mut buf = vec![];
        while let Some(req) = read_request(&mut conn, &mut buf)? {
            let (path, query) = req.target.split_once('?').map(|(p, q)| (p.to_string(), q.to_string())).unwrap_or((req.target.clone(), String::new()));
            // Rules see the target and the Range header: "… range=bytes=0-" aims at a part.
            let fault = pick(state, &req.method, &format!("{} range={}", req.target, header(&req.headers, "range").unwrap_or("")));
            state.seen.lock().push(Seen { method: req.method.clone(), path, query, fault });
            match fault {
                None => {
                    let (head, body) = forward(&req, upstream)?;
                    conn.write_all(&head)?;
                    conn.write_all(&body)?;
                }
                Some(Fault::Status(code)) => conn.write_all(&error_response(code))?,
                Some(f @ (Fault::Reset | Fault::Truncate)) => {
                    let (mut answer, body) = forward(&req, upstream)?;
                    answer.extend_from_slice(&body);
                    conn.write_all(&answer[..answer.len() / 2])?;
                    conn.flush()?;
                    std::thread::sleep(Duration::from_millis(20));
                    if f == Fault::Reset {
                        reset(conn);
                    } else {
                        let _ = conn.shutdown(Shutdown::Both);
                    }
                    return Ok(());
                }
                Some(Fault::Stall) => {
                    // Hold the connection until the client hangs up or the proxy stops.
                    conn.set_read_timeout(Some(Duration::from_millis(100)))?;
                    let mut b = [0u8; 4096];
                    while !state.stop.load(Ordering::Relaxed) {
                        match conn.read(&mut b) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                            Err(_) => break,
                        }
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ the world of one test

const BUCKET: &str = "faults";
const URL: &str = "s3://faults/store";
/// Tight bounds, so that a fault that cannot be retried away surfaces in seconds:
/// 2 s per request, 2 retries, 5 s for an operation with its retries.
const BOUNDS: [&str; 6] = ["--request-timeout", "2", "--retries", "2", "--retry-timeout", "5"];
/// The longest one operation may take under [`BOUNDS`]: attempts start until 5 s have
/// passed, and the last may take its full 2 s (plus backoff between attempts).
const BOUND: Duration = Duration::from_millis(7_500);

fn env() -> [(&'static str, &'static str); 3] {
    [("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY), ("AWS_REGION", moto::REGION)]
}

struct World {
    dir: tempfile::TempDir,
    proxy: Proxy,
    // Dropped last: the proxy forwards to it.
    server: moto::MotoServer,
}

impl World {
    fn start() -> World {
        common::mount::require_fuse();
        let server = moto::MotoServer::start(BUCKET);
        let proxy = Proxy::start(server.port);
        assert_eq!(proxy.upstream(), server.port);
        World { dir: tempfile::Builder::new().prefix("atlasfs-faults").tempdir().unwrap(), proxy, server }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// `atlasfs ARGS --endpoint PROXY BOUNDS`: (success, stdout, stderr, time taken).
    fn cli_raw(&self, args: &[&str], bounds: &[&str]) -> (bool, String, String, Duration) {
        let t = Instant::now();
        let out = Command::new(common::mount::bin()).args(args).args(["--endpoint", &self.proxy.endpoint()]).args(bounds).envs(env()).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned(), t.elapsed())
    }

    fn cli(&self, args: &[&str]) -> String {
        let (ok, out, err, _) = self.cli_raw(args, &BOUNDS);
        assert!(ok, "atlasfs {args:?} through the proxy failed: {err}");
        out
    }

    fn mount(&self, name: &str, extra: &[&str]) -> Mounted {
        let endpoint = self.proxy.endpoint();
        let mut args = vec!["--endpoint", &endpoint, "--metadata-ttl", "0", "--cache-size", "1M"];
        args.extend_from_slice(&BOUNDS);
        args.extend_from_slice(extra);
        Mounted::start_with(OsStr::new(URL), &self.mkdir(name), &args, &env())
    }

    /// A new store, mounted at `mnt`, with an empty dataset `ds`: the mount and its path.
    fn mount_new_store_with_ds(&self) -> (Mounted, PathBuf) {
        self.cli(&["create", URL]);
        let m = self.mount("mnt", &[]);
        let mp = m.mp().to_path_buf();
        std::fs::create_dir(mp.join("ds")).unwrap();
        (m, mp)
    }

    /// The bucket's objects under `store/`, copied into a local directory.
    fn bucket_copy(&self, name: &str) -> PathBuf {
        let copy = self.mkdir(name);
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            use futures::TryStreamExt;
            use object_store::ObjectStoreExt;
            let store = self.server.store();
            let prefix = object_store::path::Path::from("store");
            let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
            for o in objects {
                let rel: Vec<String> = o.location.prefix_match(&prefix).unwrap().map(|p| p.as_ref().to_string()).collect();
                let dest = rel.iter().fold(copy.clone(), |p, part| p.join(part));
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::write(&dest, store.get(&o.location).await.unwrap().bytes().await.unwrap()).unwrap();
            }
        });
        copy
    }
}

fn npy_f64(vals: &[f64]) -> Vec<u8> {
    use atlasfs::store::{Cells, DType};
    atlasfs::fs::npy::encode(&DType::Float64, &[vals.len()], &Cells::Fixed { elsize: 8, bytes: vals.iter().flat_map(|v| v.to_le_bytes()).collect() }).unwrap()
}

fn values(seed: usize, n: usize) -> Vec<f64> {
    (0..n).map(|k| (seed * 1_000_003 + k) as f64 * 0.25).collect()
}

/// `n` f64 in [1, 2) that do not compress.
fn noise(seed: u64, n: usize) -> Vec<f64> {
    (0..n as u64).map(|i| f64::from_bits(0x3ff0_0000_0000_0000 | ((i + seed * 1_000_003).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 12))).collect()
}

/// A store with d0/v (several blocks: 600,000 f64 in 100,000-element chunks), d0/w
/// and d1/w (50,000 f64 that do not compress: a block larger than the 64 KiB tail the
/// footer read brings, so reading it takes a block GET, but less than one part) and d1/u (small), written through the CLI with no
/// faults; returns the .npy bytes of the first three.
fn seed_store(w: &World) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let src = w.mkdir("src");
    // w's layers (random f64, 1.6 MB each) are over the 1 MiB below which a layer
    // comes whole with its footer: their blocks are fetched on read, where the faults are.
    let files = [("d0/v", values(1, 600_000)), ("d0/w", noise(2, 200_000)), ("d1/w", noise(3, 200_000)), ("d1/u", values(4, 10))];
    w.cli(&["create", URL]);
    let mut bytes = vec![];
    for (target, vals) in &files {
        let f = src.join(target.replace('/', "_") + ".npy");
        let b = npy_f64(vals);
        std::fs::write(&f, &b).unwrap();
        let mut args = vec!["put", URL, target, f.to_str().unwrap()];
        if target.ends_with("/v") {
            args.extend(["--chunks", "100000"]);
        }
        w.cli(&args);
        bytes.push(b);
    }
    let mut it = bytes.into_iter();
    (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
}

fn gets_of(w: &World, path: &str) -> usize {
    w.proxy.count(|s| s.method == "GET" && s.path.contains(path))
}

// ------------------------------------------------------------------ transient faults

/// Every kind of transient fault, on every kind of request the CLI and the daemon
/// make, is retried away: the commands succeed and the bytes are exact.
#[test]
fn transient_faults_are_hidden_by_retries() {
    let w = World::start();
    let (v, w0, _) = seed_store(&w);

    // CLI: a 503 on the metadata GET, a 500 on the LIST, a reset and a truncated body
    // on the array's GETs, a 503 on each PUT of a put.
    w.proxy.reset_counts();
    w.proxy.add(Rule::new("GET", "/faults/store/atlas.json", Fault::Status(503), Some(1)));
    w.proxy.add(Rule::new("GET", "list-type=2", Fault::Status(500), Some(1))); // the first LIST
    let (ok, out, err, took) = w.cli_raw(&["ls", URL], &BOUNDS);
    assert!(ok, "ls with a 503 metadata GET and a 500 LIST: {err}");
    assert_eq!(out.lines().map(str::trim).collect::<Vec<_>>(), ["d0", "d1"], "ls");
    let ls_faults = w.proxy.faulted();
    assert!(w.proxy.count(|s| s.query.contains("list-type=2")) >= 2, "the LIST was repeated: {:?}", w.proxy.seen());
    assert_eq!(ls_faults, 2, "both faults were hit: {:?}", w.proxy.seen());
    println!("ls: {} requests, {ls_faults} faulted and retried, {took:?}", w.proxy.seen().len());

    w.proxy.reset_counts();
    w.proxy.add(Rule::new("GET", "/faults/store/v/", Fault::Reset, Some(1)));
    w.proxy.add(Rule::new("GET", "/faults/store/v/", Fault::Truncate, Some(1)));
    w.proxy.add(Rule::new("GET", "/faults/store/v/", Fault::Status(503), Some(1)));
    let got = w.path("v_got.npy");
    let (ok, _, err, took) = w.cli_raw(&["get", URL, "d0/v", "-o", got.to_str().unwrap()], &BOUNDS);
    assert!(ok, "get with a reset, a truncated body and a 503 on the array file's GETs: {err}");
    assert!(std::fs::read(&got).unwrap() == v, "get returned other bytes than were put");
    assert_eq!(w.proxy.faulted(), 3, "all three faults were hit: {:?}", w.proxy.seen());
    println!("get d0/v: {} GETs of the array file, 3 faulted (reset, truncated, 503) and retried, {took:?}", gets_of(&w, "/store/v/"));

    w.proxy.reset_counts();
    w.proxy.add(Rule::new("PUT", "/faults/store/", Fault::Status(503), Some(2)));
    let src = w.path("src/new.npy");
    std::fs::write(&src, npy_f64(&values(9, 50))).unwrap();
    let (ok, _, err, _) = w.cli_raw(&["put", URL, "d2/x", src.to_str().unwrap()], &BOUNDS);
    assert!(ok, "put with two PUTs answered 503: {err}");
    let puts = w.proxy.count(|s| s.method == "PUT");
    assert_eq!(w.proxy.faulted(), 2, "{:?}", w.proxy.seen());
    println!("put d2/x: {puts} PUTs, 2 answered 503 and retried");
    let (ok, _, err, _) = w.cli_raw(&["get", URL, "d2/x", "-o", w.path("x_got.npy").to_str().unwrap()], &BOUNDS);
    assert!(ok && std::fs::read(w.path("x_got.npy")).unwrap() == npy_f64(&values(9, 50)), "the retried put stored the array: {err}");

    // The daemon: the first two GETs of every block of v answered 503, then a reset and
    // a truncated body for w; the reads are exact.
    let m = w.mount("mnt", &["--read-only"]);
    w.proxy.reset_counts();
    w.proxy.add(Rule::new("GET", "/faults/store/v/", Fault::Status(503), Some(2)));
    w.proxy.add(Rule::new("GET", "/faults/store/w/", Fault::Reset, Some(1)));
    w.proxy.add(Rule::new("GET", "/faults/store/w/", Fault::Truncate, Some(1)));
    let t = Instant::now();
    assert!(std::fs::read(m.mp().join("d0/v.npy")).unwrap() == v, "d0/v.npy through the mount, with 503s on its GETs");
    assert!(std::fs::read(m.mp().join("d0/w.npy")).unwrap() == w0, "d0/w.npy through the mount, after a reset and a truncated body");
    let took = t.elapsed();
    let (faulted, total) = (w.proxy.faulted(), w.proxy.count(|s| s.method == "GET"));
    assert_eq!(faulted, 4, "every injected fault was hit: {:?}", w.proxy.seen());
    println!("mount: read d0/v.npy (4.8 MB) and d0/w.npy in {took:?}: {total} GETs, {faulted} faulted (2×503, reset, truncated) and retried");
    assert!(!m.log_text().contains("WARN"), "retried faults must not surface as warnings:\n{}", m.log_text());
    m.unmount();
}

/// A big block is fetched as concurrent ranged parts; a part that fails (a 503, then
/// a truncated body) is retried on its own, and the read returns the exact bytes.
/// Read sequentially, the file's blocks come first from the read-ahead's streaming GET
/// (`bytes=0-…`): its 503 is retried, its truncated body cuts the stream short, and
/// the blocks it had not delivered are fetched again as ranged parts.
#[test]
fn a_failed_part_of_a_big_block_is_retried() {
    let w = World::start();
    let src = w.mkdir("src");
    w.cli(&["create", URL]);
    // 9.6 MB of f64 that do not compress: an ~8 MB block, more than one part.
    let vals: Vec<f64> = (0..1_200_000u64).map(|i| f64::from_bits(0x3ff0_0000_0000_0000 | (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 12))).collect();
    let want = npy_f64(&vals);
    let f = src.join("big.npy");
    std::fs::write(&f, &want).unwrap();
    w.cli(&["put", URL, "d0/big", f.to_str().unwrap(), "--chunks", "100000"]);
    let m = w.mount("mnt", &["--read-only"]);
    w.proxy.reset_counts();
    w.proxy.add(Rule::new("GET", "/faults/store/big/data.1.af range=bytes=0-", Fault::Status(503), Some(1)));
    w.proxy.add(Rule::new("GET", "/faults/store/big/data.1.af range=bytes=0-", Fault::Truncate, Some(1)));
    let t = Instant::now();
    assert!(std::fs::read(m.mp().join("d0/big.npy")).unwrap() == want, "d0/big.npy through the mount, with its first part failing twice");
    let took = t.elapsed();
    assert_eq!(w.proxy.faulted(), 2, "both faults hit the first part: {:?}", w.proxy.seen());
    let gets = gets_of(&w, "/store/big/data.1.af");
    // the footer's tail, at least two parts of the first block, the two failed attempts, the second block
    assert!(gets >= 5, "the first block should come in parts: {gets} GETs of the layer: {:?}", w.proxy.seen());
    println!("mount: read d0/big.npy (9.6 MB) in {took:?}: {gets} GETs of its layer, the first part failed twice (503, truncated) and was retried");
    assert!(!m.log_text().contains("WARN"), "retried faults must not surface as warnings:\n{}", m.log_text());
    m.unmount();
}

// ------------------------------------------------------------------ faults that do not go away

fn errno_of(r: std::io::Result<Vec<u8>>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// A block GET that keeps failing, and one that is never answered: EIO for that file
/// within the bound, the other files keep reading, and the file reads again once the
/// fault is lifted. A reader stuck on the stalled request dies at SIGKILL; the daemon
/// unmounts and exits within a bound while a request is stalled.
#[test]
fn lasting_faults_give_eio_for_the_affected_file_only_within_the_bound() {
    let w = World::start();
    let (v, w0, w1) = seed_store(&w);
    let m = w.mount("mnt", &[]);
    let mp = m.mp().to_path_buf();

    // 503 for every GET of w's array file (d0/w and d1/w share it).
    w.proxy.reset_counts();
    w.proxy.add(Rule::new("GET", "/faults/store/w/", Fault::Status(503), None));
    let t = Instant::now();
    let e = errno_of(std::fs::read(mp.join("d0/w.npy")));
    let took_503 = t.elapsed();
    assert_eq!(e, Some(libc::EIO), "a read whose GETs keep failing must give EIO");
    assert!(took_503 < BOUND, "EIO after {took_503:?}; the bound is {BOUND:?}");
    // Each object was asked for by one try and --retries 2 retries, per FUSE read (the
    // kernel asks again with a smaller read when its read-ahead fails).
    let tries = gets_of(&w, "/store/w/");
    let mut per_object = std::collections::BTreeMap::<String, usize>::new();
    for s in w.proxy.seen().into_iter().filter(|s| s.method == "GET" && s.path.contains("/store/w/")) {
        *per_object.entry(s.path).or_default() += 1;
    }
    assert!(!per_object.is_empty() && per_object.values().all(|n| n % 3 == 0), "1 + 2 retries per object and read: {per_object:?}");
    assert!(std::fs::read(mp.join("d0/v.npy")).unwrap() == v, "another file of the same dataset still reads");
    assert!(std::fs::metadata(mp.join("d1/w.npy")).is_ok(), "stat needs no data");
    assert!(m.log_text().contains("503"), "the daemon logs the failed read with the status:\n{}", m.log_text());
    w.proxy.clear();
    assert!(std::fs::read(mp.join("d0/w.npy")).unwrap() == w0, "once the fault is lifted the file reads");
    println!("permanent 503: EIO after {took_503:?} ({tries} GETs: {per_object:?}); other files read; the file reads once lifted");

    // A GET that is never answered: EIO within the bound.
    w.proxy.add(Rule::new("GET", "/faults/store/w/", Fault::Stall, None));
    let t = Instant::now();
    let e = errno_of(std::fs::read(mp.join("d1/w.npy")));
    let took_stall = t.elapsed();
    assert_eq!(e, Some(libc::EIO), "a read whose GET is never answered must give EIO");
    // The kernel asks twice when its read-ahead fails (the read-ahead, then one page),
    // and each request waits out the bound: read(2) fails within about 2 × BOUND.
    assert!(took_stall < 5 * BOUND / 2, "EIO after {took_stall:?}; the bound is {BOUND:?} per FUSE read, two reads");
    assert!(took_stall >= Duration::from_secs(2), "EIO after {took_stall:?}, before even one request timeout: was the request stalled?");
    assert!(std::fs::read(mp.join("d0/v.npy")).unwrap() == v, "another file still reads while requests stall");

    // A reader stuck on a stalled request: SIGKILL ends it, the daemon goes on.
    let mut reader = Command::new("dd").arg(format!("if={}", mp.join("d1/w.npy").display())).args(["of=/dev/null", "bs=1M"]).stderr(Stdio::null()).spawn().unwrap();
    let stalls = || w.proxy.count(|s| s.fault == Some(Fault::Stall));
    let before = stalls();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stalls() == before {
        assert!(Instant::now() < deadline, "the reader's GET never reached the proxy");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(reader.try_wait().unwrap().is_none(), "the reader should be blocked in read(2)");
    let t = Instant::now();
    reader.kill().unwrap();
    let st = common::mount::wait_exit(&mut reader, 2 * BOUND).expect("a reader blocked on a stalled request must die at SIGKILL");
    let took_kill = t.elapsed();
    assert!(!st.success());
    assert!(took_kill < BOUND, "SIGKILL took {took_kill:?} to end the reader");
    w.proxy.clear();
    assert!(std::fs::read(mp.join("d1/w.npy")).unwrap() == w1, "once the stall is lifted the file reads");
    println!("stalled GET: EIO after {took_stall:?}; a reader blocked on it exits {took_kill:?} after SIGKILL");

    // SIGTERM to the daemon while a reader waits on a stalled request (d1/u, never read
    // before, so not in the page cache): the mount goes and the daemon exits within the bound.
    w.proxy.add(Rule::new("GET", "/faults/store/u/", Fault::Stall, None));
    let mut reader = Command::new("cat").arg(mp.join("d1/u.npy")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let before = stalls();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stalls() == before {
        assert!(Instant::now() < deadline, "the reader's GET never reached the proxy");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let pid = m.pid();
    // SAFETY: kill(2) of the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let _ = common::mount::wait_exit(&mut reader, 2 * BOUND).expect("the reader ends once the daemon unmounts");
    let deadline = Instant::now() + 3 * BOUND;
    while common::mount::is_fuse_mount(&mp) {
        assert!(Instant::now() < deadline, "still mounted {:?} after SIGTERM with a stalled request", t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took_unmount = t.elapsed();
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(Instant::now() < deadline, "the daemon still runs {:?} after SIGTERM with a stalled request", t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took_exit = t.elapsed();
    assert!(took_exit < 5 * BOUND / 2, "the daemon took {took_exit:?} to exit after SIGTERM; the reader's two FUSE reads wait out the bound each");
    println!("SIGTERM with a stalled GET: unmounted after {took_unmount:?}, daemon exited after {took_exit:?}");
    drop(m);
}

// ------------------------------------------------------------------ write faults

/// A PUT that fails during fsync: once, it is retried; for good, fsync fails with EIO
/// and a log line; lifted, the next fsync writes everything, which atlas-python reads.
#[test]
fn write_faults_during_fsync() {
    let w = World::start();
    let (m, mp) = w.mount_new_store_with_ds();
    let write = |name: &str, vals: &[f64]| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(mp.join(format!("ds/{name}.npy")))?;
        f.write_all(&npy_f64(vals))?;
        f.sync_all()
    };

    // Transient: the first two PUTs of the flush answered 503.
    w.proxy.reset_counts();
    w.proxy.add(Rule::new("PUT", "/faults/store/", Fault::Status(503), Some(2)));
    write("a", &values(1, 5000)).expect("fsync with two PUTs answered 503 must succeed");
    let puts = w.proxy.count(|s| s.method == "PUT");
    assert_eq!(w.proxy.faulted(), 2, "{:?}", w.proxy.seen());
    println!("fsync with 2 PUTs answered 503: {puts} PUTs in all, 2 retried");

    // A PUT whose answer is lost: the server stored the object, the connection broke.
    w.proxy.reset_counts();
    w.proxy.add(Rule::new("PUT", "/faults/store/", Fault::Reset, Some(1)));
    // object_store does not retry a conditional PUT after the request went out (it is
    // not idempotent); atlasfs sends it again and reads the object back.
    write("r", &values(5, 300)).expect("fsync with a PUT whose answer was lost must succeed");
    let lost = w.proxy.seen().into_iter().find(|s| s.fault == Some(Fault::Reset)).expect("the reset was hit").path;
    let sent = w.proxy.count(|s| s.method == "PUT" && s.path == lost);
    assert_eq!(sent, 2, "the PUT that lost its answer is sent again: {:?}", w.proxy.seen());
    println!("fsync with a PUT whose answer was lost ({lost}): sent twice, then read back; fsync succeeded");
    // The same for the metadata file's update-if-match: the retry finds our own ETag gone.
    w.proxy.reset_counts();
    w.proxy.add(Rule::new("PUT", "/faults/store/atlas.json", Fault::Reset, Some(1)));
    write("m", &values(6, 30)).expect("fsync with a metadata PUT whose answer was lost must succeed");
    assert_eq!(w.proxy.faulted(), 1, "{:?}", w.proxy.seen());
    assert_eq!(w.proxy.count(|s| s.method == "PUT" && s.path.ends_with("/atlas.json")), 2, "{:?}", w.proxy.seen());
    println!("fsync with the metadata PUT's answer lost: sent twice (the retry's If-Match fails on our own write), read back; fsync succeeded");

    // Permanent: every PUT answered 503 → fsync fails, with a log line.
    w.proxy.add(Rule::new("PUT", "/faults/store/", Fault::Status(503), None));
    let t = Instant::now();
    let e = write("b", &values(2, 5000)).expect_err("fsync must fail while every PUT fails");
    let took = t.elapsed();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "fsync with failing PUTs: {e}");
    assert!(took < BOUND, "fsync failed after {took:?}; the bound is {BOUND:?}");
    let log = m.log_text();
    assert!(log.contains("WARN") && log.contains("Error performing PUT") && log.contains("op=\"fsync\" errno=5"), "a failed fsync logs a warning with the request:\n{log}");
    // Nothing acknowledged is lost: a was flushed; b is still there to read.
    assert!(std::fs::read(mp.join("ds/a.npy")).unwrap() == npy_f64(&values(1, 5000)), "ds/a.npy after the failed fsync");
    assert!(std::fs::read(mp.join("ds/b.npy")).unwrap() == npy_f64(&values(2, 5000)), "ds/b.npy (not yet stored) reads from the mount");
    let (ok, out, _, _) = w.cli_raw(&["ls", URL, "ds"], &BOUNDS);
    assert!(ok && out.contains('a') && !out.lines().any(|l| l.split_whitespace().next() == Some("b")), "the bucket holds a, not b:\n{out}");
    println!("fsync with every PUT answered 503: EIO after {took:?}, logged");

    // Lifted: the next fsync stores b too.
    w.proxy.clear();
    let f = std::fs::OpenOptions::new().write(true).open(mp.join("ds/b.npy")).unwrap();
    f.sync_all().expect("fsync once the PUTs succeed again");
    drop(f);
    write("c", &values(3, 10)).expect("a new file after the fault");
    m.unmount();

    // atlas-python 0.10 reads all of them from the bucket.
    let copy = w.bucket_copy("bucket_copy");
    let script = r#"
import sys, atlas, numpy as np
a = atlas.Atlas.open(sys.argv[1])
d = a.open_dataset("ds")
for name, seed, n in (("a", 1, 5000), ("b", 2, 5000), ("c", 3, 10), ("r", 5, 300), ("m", 6, 30)):
    got = d.read_array(name)
    want = (seed * 1_000_003 + np.arange(n)).astype(np.float64) * 0.25
    assert got.dtype == np.float64 and np.array_equal(got, want), (name, got[:5])
print(sorted(d.list_arrays()))
"#;
    let out = Command::new(common::python()).arg("-c").arg(script).arg(&copy).output().unwrap();
    assert!(out.status.success(), "atlas-python reading the bucket: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "['a', 'b', 'c', 'm', 'r']");
}

// ------------------------------------------------------------------ multipart while encoding

/// The multipart uploads open in the bucket (ListMultipartUploads, asked of moto directly).
fn open_uploads(w: &World) -> usize {
    let script = r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
print(len(s3.list_multipart_uploads(Bucket="faults").get("Uploads", [])))
"#;
    py(script, &[&w.server.port.to_string()]).trim().parse().expect("a count of uploads")
}

/// Runs an inline Python script; panics with its stderr on failure. Returns stdout.
fn py(script: &str, args: &[&str]) -> String {
    let out = Command::new(common::python()).arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (up to `BOUND`) for the aborts the daemon sends in the background.
fn no_open_uploads(w: &World) -> usize {
    let t = Instant::now();
    loop {
        let n = open_uploads(w);
        if n == 0 || t.elapsed() > BOUND {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A large `.npy` (over one PUT) written into an `s3://` mount goes up as multipart
/// parts while it is encoded, and the flush completes the upload: the bytes read
/// back exactly (numpy through a new mount, atlas-python from the bucket). A part
/// answered 503 once is retried; parts that keep failing fail the `fsync` with EIO
/// and a log line and leave no object and no open upload; a file removed before
/// its flush leaves no open upload either.
#[test]
fn a_large_write_uploads_as_parts_while_encoding() {
    let w = World::start();
    let (m, mp) = w.mount_new_store_with_ds();
    // 76 MiB of f64 that do not compress: over the 64 MiB single PUT, ~10 parts of 8 MiB.
    let n = 10_000_000;
    let big = npy_f64(&noise(7, n));
    let local = w.path("big.npy");
    std::fs::write(&local, &big).unwrap();
    let parts = |w: &World| w.proxy.count(|s| s.method == "PUT" && s.query.contains("partNumber="));
    let created = |w: &World| w.proxy.count(|s| s.method == "POST" && s.query.contains("uploads"));
    let write_open = |name: &str| -> std::fs::File {
        use std::io::Write;
        let mut f = std::fs::File::create(mp.join(format!("ds/{name}.npy"))).unwrap();
        for piece in big.chunks(1 << 20) {
            f.write_all(piece).unwrap();
        }
        f
    };

    // The upload begins in the background once the encoder knows the geometry, with
    // no fsync or close: wait for it (a generous deadline, not a timing assertion).
    let await_created = |w: &World| {
        let t = Instant::now();
        while created(w) == 0 && t.elapsed() < BOUND {
            std::thread::sleep(Duration::from_millis(50));
        }
        created(w)
    };

    // Parts while encoding, one answered 503 and retried.
    w.proxy.reset_counts();
    w.proxy.add(Rule::new("PUT", "partNumber=2&", Fault::Status(503), Some(1)));
    let f = write_open("a");
    let (created_before, parts_before) = (await_created(&w), parts(&w));
    f.sync_all().expect("fsync of a large array uploaded as parts");
    drop(f);
    let (all_parts, singles) = (parts(&w), w.proxy.count(|s| s.method == "PUT" && !s.query.contains("partNumber=") && s.path.ends_with(".af") && !s.path.ends_with("/data.af")));
    println!(
        "76 MiB np.save-like write: multipart created before fsync: {created_before}; parts before fsync {parts_before}, in all {all_parts} (1 answered 503 and retried); single-PUT sidecars {singles}"
    );
    assert_eq!(created_before, 1, "the multipart upload starts while the file is written: {:?}", w.proxy.seen());
    assert!(all_parts >= 10, "~10 parts of 8 MiB (+1 retried): {all_parts}");
    assert_eq!(singles, 0, "the sidecar is not also sent as one PUT: {:?}", w.proxy.seen());
    assert_eq!(w.proxy.faulted(), 1);
    assert_eq!(open_uploads(&w), 0, "the upload was completed");

    // Parts that keep failing: EIO and a log line, no object, no open upload.
    w.proxy.reset_counts();
    w.proxy.add(Rule::new("PUT", "partNumber=", Fault::Status(503), None));
    let f = write_open("b");
    let e = f.sync_all().expect_err("fsync must fail while every part fails");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "fsync with failing parts: {e}");
    let log = m.log_text();
    assert!(log.contains("WARN") && log.contains("op=\"fsync\" errno=5"), "a failed fsync logs a warning:\n{log}");
    assert_eq!(no_open_uploads(&w), 0, "a failed upload is aborted");
    let objects = w.proxy.count(|s| s.method == "POST" && s.query.starts_with("uploadId=") && s.fault.is_none());
    assert_eq!(objects, 0, "no multipart upload was completed while parts failed: {:?}", w.proxy.seen());
    // Lifted: the next fsync stores it (as a fresh upload).
    w.proxy.clear();
    f.sync_all().expect("fsync once the parts succeed again");
    drop(f);
    println!("parts answered 503 for good: fsync EIO, logged, upload aborted; the next fsync stored it");

    // A file removed before its flush: its upload is aborted.
    w.proxy.reset_counts();
    let f = write_open("c");
    let created_c = await_created(&w);
    std::fs::remove_file(mp.join("ds/c.npy")).unwrap();
    drop(f);
    assert_eq!(created_c, 1, "the upload of c started while it was written");
    assert_eq!(no_open_uploads(&w), 0, "removing the file before its flush aborts its upload");
    m.unmount();

    // Exact values: numpy through a new mount; atlas-python from the bucket's objects.
    let m = w.mount("mnt2", &[]);
    let script = r#"
import sys, numpy as np
want = np.load(sys.argv[1])
for name in ("a", "b"):
    got = np.load(f"{sys.argv[2]}/ds/{name}.npy")
    assert got.dtype == want.dtype and np.array_equal(got, want), name
print("ok")
"#;
    assert_eq!(py(script, &[local.to_str().unwrap(), m.mp().to_str().unwrap()]).trim(), "ok");
    m.unmount();
    let copy = w.bucket_copy("bucket_copy");
    let script = r#"
import sys, atlas, numpy as np
want = np.load(sys.argv[1])
d = atlas.Atlas.open(sys.argv[2]).open_dataset("ds")
for name in ("a", "b"):
    assert np.array_equal(d.read_array(name), want), name
print(sorted(d.list_arrays()))
"#;
    assert_eq!(py(script, &[local.to_str().unwrap(), copy.to_str().unwrap()]).trim(), "['a', 'b']");
}
