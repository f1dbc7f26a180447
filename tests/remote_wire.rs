//! A remote store as the daemon sees it: a real FUSE mount, served in this process,
//! over a real S3-compatible server (moto on 127.0.0.1) behind a wrapper that counts
//! requests, adds latency and injects failures.
//!
//! - one array read across 1,000 datasets costs GETs in proportion to the array's
//!   blocks and layers, not to the datasets (the counts are printed);
//! - with 20 ms added to every request it still completes, with the same bytes;
//! - a failing block read gives EIO for the file it belongs to only, within a bounded
//!   time, and the mount keeps serving the other files.

mod common;

#[path = "conformance/moto.rs"]
#[allow(dead_code)]
mod moto;

use std::fmt;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atlasfs::fs::{AtlasFs, FsConfig};
use atlasfs::fuse::MountConfig;
use atlasfs::{Atlas, StoreConfig};
use futures::StreamExt;
use futures::stream::BoxStream;
use ndarray::{ArrayD, IxDyn};
use object_store::path::Path;
use object_store::{CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result};

/// Counts and delays requests; fails GETs of paths containing `fail_on`.
#[derive(Debug, Default)]
struct Wire {
    gets: AtomicU64,
    heads: AtomicU64,
    lists: AtomicU64,
    puts: AtomicU64,
    /// Bytes returned by GETs.
    bytes: AtomicU64,
    latency_ms: AtomicU64,
    /// When set, GETs wait 0–16 ms more, differently each, so that requests sent
    /// together complete out of order.
    jitter: std::sync::atomic::AtomicBool,
    /// GETs sent and not yet answered.
    in_flight: AtomicU64,
    /// Body bytes the daemon has taken from GET answers so far (as they stream).
    body_bytes: AtomicU64,
    /// When set, each body chunk is held 1 ms per 8 KiB (a slow link: ~8 MiB/s).
    slow_body: std::sync::atomic::AtomicBool,
    fail_on: parking_lot::Mutex<Option<String>>,
    /// When each request started and ended, with what it was.
    spans: parking_lot::Mutex<Vec<(Instant, Instant, String)>>,
}

#[derive(Debug)]
struct WiredStore {
    inner: Arc<dyn ObjectStore>,
    wire: Arc<Wire>,
}

impl fmt::Display for WiredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wired({})", self.inner)
    }
}

impl Wire {
    async fn delay(&self) {
        let ms = self.latency_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    fn reset(&self) {
        for c in [&self.gets, &self.heads, &self.lists, &self.puts, &self.bytes] {
            c.store(0, Ordering::Relaxed);
        }
        self.spans.lock().clear();
    }

    fn span(&self, start: Instant, what: String) {
        self.spans.lock().push((start, Instant::now(), what));
    }

    /// Sequential round trips since the last reset: the longest chain of requests
    /// each started after the one before it had ended (requests in flight together
    /// are one round trip). Returns the chain's length and its requests.
    fn round_trips(&self) -> (usize, Vec<String>) {
        self.round_trips_of("")
    }

    /// [`Self::round_trips`] among the requests whose description contains `what`.
    fn round_trips_of(&self, what: &str) -> (usize, Vec<String>) {
        let mut spans: Vec<_> = self.spans.lock().iter().filter(|s| s.2.contains(what)).cloned().collect();
        spans.sort_by_key(|s| s.0);
        let mut best: Vec<(usize, Option<usize>)> = vec![];
        for i in 0..spans.len() {
            let prev = (0..i).filter(|&j| spans[j].1 <= spans[i].0).max_by_key(|&j| best[j].0);
            best.push((prev.map_or(1, |j| best[j].0 + 1), prev));
        }
        let Some(mut at) = (0..spans.len()).max_by_key(|&i| best[i].0) else { return (0, vec![]) };
        let mut chain = vec![spans[at].2.clone()];
        while let Some(p) = best[at].1 {
            chain.push(spans[p].2.clone());
            at = p;
        }
        chain.reverse();
        (chain.len(), chain)
    }

    fn counts(&self) -> String {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!("GET {} ({} bytes) HEAD {} LIST {} PUT {}", l(&self.gets), l(&self.bytes), l(&self.heads), l(&self.lists), l(&self.puts))
    }
}

#[async_trait]
impl ObjectStore for WiredStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.wire.puts.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        self.wire.delay().await;
        let r = self.inner.put_opts(location, payload, opts).await;
        self.wire.span(t, format!("PUT {location}"));
        r
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.wire.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.head {
            self.wire.heads.fetch_add(1, Ordering::Relaxed);
        } else {
            self.wire.gets.fetch_add(1, Ordering::Relaxed);
        }
        let t = Instant::now();
        self.wire.delay().await;
        if self.wire.jitter.load(Ordering::Relaxed) {
            let n = self.wire.gets.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(n * 7919 % 17)).await;
        }
        if let Some(f) = self.wire.fail_on.lock().clone()
            && location.as_ref().contains(&f)
        {
            return Err(object_store::Error::Generic { store: "Wired", source: format!("injected failure reading {location}").into() });
        }
        let what = format!("{} {location} {:?}", if options.head { "HEAD" } else { "GET" }, options.range);
        self.wire.in_flight.fetch_add(1, Ordering::Relaxed);
        let got = self.inner.get_opts(location, options).await;
        self.wire.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.wire.span(t, what);
        let mut got = got?;
        self.wire.bytes.fetch_add(got.range.end - got.range.start, Ordering::Relaxed);
        if let object_store::GetResultPayload::Stream(body) = std::mem::replace(&mut got.payload, object_store::GetResultPayload::Stream(futures::stream::empty().boxed())) {
            let wire = self.wire.clone();
            got.payload = object_store::GetResultPayload::Stream(
                body.then(move |c| {
                    let wire = wire.clone();
                    async move {
                        if let Ok(b) = &c {
                            if wire.slow_body.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(b.len().div_ceil(8 << 10) as u64)).await;
                            }
                            wire.body_bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        }
                        c
                    }
                })
                .boxed(),
            );
        }
        Ok(got)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.wire.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.wire.lists.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        self.wire.delay().await;
        let r = self.inner.list_with_delimiter(prefix).await;
        self.wire.span(t, format!("LIST {prefix:?}"));
        r
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.wire.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.copy_opts(from, to, options).await
    }
}

/// A FUSE mount of `atlas`, served by this process until dropped.
struct InProcessMount {
    mp: tempfile::TempDir,
    unmounter: Option<fuser::SessionUnmounter>,
    serve: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl InProcessMount {
    fn start(atlas: Atlas, rt: &tokio::runtime::Runtime) -> InProcessMount {
        let mp = tempfile::Builder::new().prefix("atlasfs-wire-mnt").tempdir().unwrap();
        let core = Arc::new(AtlasFs::new(atlas, FsConfig::default()));
        let cfg = MountConfig { read_only: true, allow_other: false, threads: 4, fs_name: "atlasfs:wired".into(), xattrs: true };
        let mut sess = atlasfs::fuse::session(core, rt.handle().clone(), mp.path(), &cfg).expect("mount (needs /dev/fuse and fusermount3: run scripts/setup-test-env.sh)");
        let unmounter = sess.unmount_callable();
        let serve = std::thread::spawn(move || sess.run());
        std::fs::read_dir(mp.path()).expect("the in-process mount answers");
        InProcessMount { mp, unmounter: Some(unmounter), serve: Some(serve) }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.mp.path().join(rel)
    }
}

impl Drop for InProcessMount {
    fn drop(&mut self) {
        if let Some(mut u) = self.unmounter.take()
            && u.unmount().is_err()
        {
            let _ = std::process::Command::new("fusermount3").arg("-uz").arg(self.mp.path()).status();
        }
        if let Some(t) = self.serve.take() {
            let _ = t.join();
        }
    }
}

const N: usize = 1000;

fn values(i: usize) -> Vec<f32> {
    (0..24).map(|k| (i * 100 + k) as f32).collect()
}

fn npy_f32(bytes: &[u8], n: usize) -> Vec<f32> {
    bytes[bytes.len() - 4 * n..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Reads every dataset's `v.npy`, checking values; returns how long it took.
fn read_all(m: &InProcessMount) -> Duration {
    let t = Instant::now();
    for i in 0..N {
        let got = std::fs::read(m.path(&format!("d{i:04}/v.npy"))).unwrap_or_else(|e| panic!("read d{i:04}/v.npy: {e}"));
        assert_eq!(npy_f32(&got, 24), values(i), "d{i:04}/v.npy");
    }
    t.elapsed()
}

#[test]
fn one_array_across_1000_datasets_over_a_counted_slow_failing_wire() {
    assert!(FsPath::new("/dev/fuse").exists(), "/dev/fuse is missing: this test mounts a real FUSE filesystem");
    let server = moto::MotoServer::start("wire");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let wire = Arc::new(Wire::default());
    let store: Arc<dyn ObjectStore> = Arc::new(WiredStore { inner: server.store(), wire: wire.clone() });
    let prefix = Path::from("store");

    // 1,000 datasets sharing `v` (f32 (24,)), written in two flushes (two layers);
    // dataset d0000 also has `w`, which the failure case breaks.
    rt.block_on(async {
        let mut a = Atlas::create(store.clone(), prefix.clone(), StoreConfig::default()).await.unwrap();
        for i in 0..N {
            let mut d = a.create_dataset(&format!("d{i:04}")).await.unwrap();
            d.define_array::<f32>("v", vec!["t".into()], vec![24], None, None).await.unwrap();
            d.write_array("v", vec![0], ArrayD::from_shape_vec(IxDyn(&[24]), values(i)).unwrap().view()).await.unwrap();
            if i == N / 2 {
                a.flush().await.unwrap();
            }
        }
        let mut d = a.open_dataset("d0000").await.unwrap();
        d.define_array::<f32>("w", vec!["t".into()], vec![3], None, None).await.unwrap();
        d.write_array("w", vec![0], ArrayD::from_shape_vec(IxDyn(&[3]), vec![7f32, 8., 9.]).unwrap().view()).await.unwrap();
        a.flush().await.unwrap();
    });

    // Reading every copy of `v`: requests in proportion to layers and blocks.
    wire.reset();
    let atlas = rt.block_on(Atlas::open(store.clone(), prefix.clone())).unwrap();
    let open_counts = wire.counts();
    assert_eq!(wire.gets.load(Ordering::Relaxed), 1, "opening a store is one metadata GET: {open_counts}");
    assert_eq!(wire.lists.load(Ordering::Relaxed), 1, "and one listing: {open_counts}");
    let m = InProcessMount::start(atlas, &rt);
    let took = read_all(&m);
    let per_file = wire.counts();
    let gets = wire.gets.load(Ordering::Relaxed);
    // 1 metadata GET; for `v`: a footer GET per layer (3: the empty base and two
    // sidecars, plus a second ranged GET where a footer passes 64 KiB), the stats
    // file, and one GET per block (one per layer here).
    assert!(gets <= 12, "1,000 files of one array cost {per_file} — GETs must follow blocks, not datasets");
    let stacked = std::fs::read(m.path(".atlasfs/stacked/v.npy")).unwrap();
    let all: Vec<f32> = npy_f32(&stacked, N * 24);
    assert_eq!(&all[..24], &values(0)[..]);
    assert_eq!(&all[(N - 1) * 24..], &values(N - 1)[..]);
    assert_eq!(wire.gets.load(Ordering::Relaxed), gets, "the stacked view is served from the blocks already fetched");
    println!("one array across {N} datasets over S3: open {open_counts}; then {N} files in {took:?}: {per_file}");
    drop(m);

    // 20 ms on every request: slower, same bytes.
    wire.reset();
    wire.latency_ms.store(20, Ordering::Relaxed);
    let t = Instant::now();
    let atlas = rt.block_on(Atlas::open(store.clone(), prefix.clone())).unwrap();
    let m = InProcessMount::start(atlas, &rt);
    let took = read_all(&m);
    println!("with 20 ms per request: open + {N} files in {:?} ({took:?} reading): {}", t.elapsed(), wire.counts());
    assert!(t.elapsed() < Duration::from_secs(60), "1,000 files with 20 ms latency took {:?}", t.elapsed());
    drop(m);

    // A block that cannot be read: EIO for that file only; the mount keeps serving.
    wire.latency_ms.store(0, Ordering::Relaxed);
    let atlas = rt.block_on(Atlas::open(store.clone(), prefix.clone())).unwrap();
    let m = InProcessMount::start(atlas, &rt);
    *wire.fail_on.lock() = Some("store/w/".into());
    let t = Instant::now();
    let e = std::fs::read(m.path("d0000/w.npy")).expect_err("a read whose blocks cannot be fetched must fail");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "failed block read: {e}");
    assert!(t.elapsed() < Duration::from_secs(30), "the failure took {:?} to surface", t.elapsed());
    assert_eq!(npy_f32(&std::fs::read(m.path("d0000/v.npy")).unwrap(), 24), values(0), "other files still read");
    assert!(std::fs::metadata(m.path("d0000/w.npy")).is_ok(), "stat needs no data and still works");
    // Once the store answers again, so does the file.
    *wire.fail_on.lock() = None;
    assert_eq!(npy_f32(&std::fs::read(m.path("d0000/w.npy")).unwrap(), 3), [7., 8., 9.], "the file reads once the store does");
    drop(m);
}

/// `--cache-dir`: a second mount of the same bucket reads its blocks from local
/// disk; a damaged entry is refetched, never served.
#[test]
fn a_cache_dir_serves_the_next_mount_from_disk() {
    assert!(FsPath::new("/dev/fuse").exists(), "/dev/fuse is missing: this test mounts a real FUSE filesystem");
    let server = moto::MotoServer::start("diskcache");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let wire = Arc::new(Wire::default());
    let store: Arc<dyn ObjectStore> = Arc::new(WiredStore { inner: server.store(), wire: wire.clone() });
    let prefix = Path::from("store");
    // 24 MiB of f32 that barely compresses, in 1 MiB chunks: several ~8 MiB blocks.
    let n = 6 << 20;
    let big: Vec<f32> = (0..n as u64).map(|i| f32::from_bits(0x3f80_0000 | ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 41) as u32))).collect();
    rt.block_on(async {
        let mut a = Atlas::create(store.clone(), prefix.clone(), StoreConfig::default()).await.unwrap();
        let mut d = a.create_dataset("big").await.unwrap();
        d.define_array::<f32>("x", vec!["i".into()], vec![n], Some(vec![1 << 18]), None).await.unwrap();
        d.write_array("x", vec![0], ArrayD::from_shape_vec(IxDyn(&[n]), big.clone()).unwrap().view()).await.unwrap();
        a.flush().await.unwrap();
    });
    let cache_dir = tempfile::tempdir().unwrap();
    let options = || atlasfs::StoreOptions { disk_cache: Some((cache_dir.path().to_path_buf(), 1 << 30)), ..Default::default() };
    let read = |m: &InProcessMount| {
        let got = std::fs::read(m.path("big/x.npy")).unwrap();
        assert!(npy_f32(&got, n) == big, "big/x.npy differs from what was written");
    };

    wire.reset();
    let atlas = rt.block_on(Atlas::open_with(store.clone(), prefix.clone(), options())).unwrap();
    let m = InProcessMount::start(atlas, &rt);
    read(&m);
    drop(m);
    let (cold_gets, cold_bytes) = (wire.gets.load(Ordering::Relaxed), wire.bytes.load(Ordering::Relaxed));
    let cold = wire.counts();
    // Block GETs are ranged (`Bounded`; a big block in several parts, or a run of
    // blocks streamed); the footers' are the last 64 KiB (no footer here passes that).
    let ranged = |w: &Wire| w.spans.lock().iter().filter(|s| bounded_len(&s.2).is_some_and(|n| n > 64 << 10)).count() as u64;
    let cold_block_gets = ranged(&wire);
    // The sidecar's footer read (the array was written in one flush: an empty base and
    // `data.1.af`), a bounded range of the listed size: kept on disk too.
    let sidecar_tail_gets = wire.spans.lock().iter().filter(|s| s.2.contains("data.1.af") && bounded_len(&s.2).is_some_and(|n| n <= 64 << 10)).count() as u64;
    assert_eq!(sidecar_tail_gets, 1, "the first mount reads the sidecar's footer once: {cold}");

    // A fresh process's view: new store handle, new memory cache, same directory.
    wire.reset();
    let atlas = rt.block_on(Atlas::open_with(store.clone(), prefix.clone(), options())).unwrap();
    let m = InProcessMount::start(atlas.clone(), &rt);
    read(&m);
    let hits = atlas.block_cache().disk.as_ref().unwrap().counters.hits.load(Ordering::Relaxed);
    drop(m);
    let warm = wire.counts();
    let (trips, chain) = wire.round_trips_of("store/x/");
    println!(
        "24 MiB array over S3: first mount {cold}; second mount with --cache-dir {warm}, {trips} sequential round trips for the array file ({chain:?}); {hits} entries from disk"
    );
    assert!(hits >= 4, "the second mount should find its blocks and the sidecar's footer on disk ({hits} hits)");
    assert_eq!(ranged(&wire), 0, "every block was found on disk: {cold} then {warm}");
    assert_eq!(wire.gets.load(Ordering::Relaxed), cold_gets - cold_block_gets - sidecar_tail_gets, "every block and footer found on disk is its GETs saved: {cold} then {warm}");
    assert_eq!(trips, 1, "with the sidecar's footer on disk the open is one round trip (LIST, base tail, stats together): {chain:?}");
    assert!(wire.bytes.load(Ordering::Relaxed) < cold_bytes / 10, "the second mount should fetch only metadata and footers: {cold} then {warm}");
    drop(atlas);

    // Damage every entry: each is a miss (checksum), refetched, and the data is right.
    for sub in std::fs::read_dir(cache_dir.path()).unwrap().flatten().filter(|e| e.file_name().len() == 2) {
        for e in std::fs::read_dir(sub.path()).unwrap().flatten() {
            let mut b = std::fs::read(e.path()).unwrap();
            let last = b.len() - 1;
            b[last] ^= 0xff;
            std::fs::write(e.path(), b).unwrap();
        }
    }
    wire.reset();
    let atlas = rt.block_on(Atlas::open_with(store.clone(), prefix.clone(), options())).unwrap();
    let m = InProcessMount::start(atlas, &rt);
    read(&m);
    drop(m);
    assert!(ranged(&wire) >= hits && wire.bytes.load(Ordering::Relaxed) >= cold_bytes * 9 / 10, "damaged entries are refetched: {cold} then {}", wire.counts());
}

/// A read that needs several adjacent blocks of one layer fetches them with one
/// ranged GET per run (up to 8 MiB), not one per block.
#[test]
fn adjacent_blocks_of_one_read_are_fetched_together() {
    let server = moto::MotoServer::start("coalesce");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let wire = Arc::new(Wire::default());
    let store: Arc<dyn ObjectStore> = Arc::new(WiredStore { inner: server.store(), wire: wire.clone() });
    let prefix = Path::from("store");
    // 48 MiB of f32 that compresses well: six ~8 MiB blocks of ~300 kB each, adjacent
    // (1.9 MB in all: over the 1 MiB below which the footer read brings the whole file, blocks too).
    let n = 12 << 20;
    let data: Vec<f32> = (0..n as u64).map(|i| ((i / 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as f32).collect();
    rt.block_on(async {
        let mut a = Atlas::create(store.clone(), prefix.clone(), StoreConfig::default()).await.unwrap();
        let mut d = a.create_dataset("d").await.unwrap();
        d.define_array::<f32>("x", vec!["i".into()], vec![n], Some(vec![1 << 18]), None).await.unwrap();
        d.write_array("x", vec![0], ArrayD::from_shape_vec(IxDyn(&[n]), data.clone()).unwrap().view()).await.unwrap();
        a.flush().await.unwrap();
    });
    rt.block_on(async {
        let a = Atlas::open(store.clone(), prefix.clone()).await.unwrap();
        let d = a.open_dataset("d").await.unwrap();
        // Opening the array file alone (footers, stats) is the baseline.
        d.read_array::<f32>("x", vec![0], vec![1]).await.unwrap();
        let blocks = a.info().await.unwrap();
        wire.reset();
        let got = d.read_array::<f32>("x", vec![0], vec![n]).await.unwrap().unwrap();
        assert!(got.as_slice().unwrap() == &data[..], "x differs from what was written");
        let gets = wire.gets.load(Ordering::Relaxed);
        println!("48 MiB in six adjacent blocks: {} after the first block was cached; {:?}", wire.counts(), blocks.arrays);
        assert_eq!(gets, 1, "the five uncached adjacent blocks should come in one GET: {}", wire.counts());
    });
}

/// A small array, cold: `np.load` through a fresh mount, once the mount is ready,
/// waits for at most 2 sequential round trips (the LIST of the array's directory
/// goes with the tail of `data.af`, which holds a small array's blocks, and the
/// stats file; then the sidecar, whole when it is small, blocks included), and 1 once
/// the array is compacted into its base. Counted on the wire, so a regression fails here.
#[test]
fn a_small_array_cold_is_at_most_two_round_trips() {
    assert!(FsPath::new("/dev/fuse").exists(), "/dev/fuse is missing: this test mounts a real FUSE filesystem");
    let py = common::python();
    let server = moto::MotoServer::start("smallcold");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let wire = Arc::new(Wire::default());
    let store: Arc<dyn ObjectStore> = Arc::new(WiredStore { inner: server.store(), wire: wire.clone() });
    let prefix = Path::from("store");
    let vals: Vec<f64> = (0..300).map(|i| i as f64 * 0.5).collect();
    rt.block_on(async {
        let mut a = Atlas::create(store.clone(), prefix.clone(), StoreConfig::default()).await.unwrap();
        let mut d = a.create_dataset("d").await.unwrap();
        d.define_array::<f64>("x", vec!["i".into(), "j".into()], vec![100, 3], Some(vec![40, 3]), None).await.unwrap();
        d.write_array("x", vec![0, 0], ArrayD::from_shape_vec(IxDyn(&[100, 3]), vals.clone()).unwrap().view()).await.unwrap();
        a.flush().await.unwrap();
    });
    // 10 ms on every request, so that requests in flight together overlap clearly.
    wire.latency_ms.store(10, Ordering::Relaxed);
    let cold_load = |case: &str, most: usize| {
        let atlas = rt.block_on(Atlas::open(store.clone(), prefix.clone())).unwrap();
        let m = InProcessMount::start(atlas, &rt);
        wire.reset();
        let code = format!("import numpy as np; a = np.load({:?}); assert a.shape == (100, 3), a.shape; print(repr(a.ravel().tolist()))", m.path("d/x.npy").display().to_string());
        let out = std::process::Command::new(&py).args(["-c", &code]).output().expect("spawn python");
        assert!(out.status.success(), "np.load failed: {}", String::from_utf8_lossy(&out.stderr));
        let got: Vec<f64> = String::from_utf8_lossy(&out.stdout).trim().trim_matches(['[', ']']).split(", ").map(|v| v.parse().unwrap()).collect();
        assert_eq!(got, vals, "{case}: np.load returned other values");
        let (n, chain) = wire.round_trips();
        println!("small array cold, {case}: {n} sequential round trips ({chain:?}); {}", wire.counts());
        assert!(n <= most, "{case}: np.load of a small array cold waited for {n} sequential round trips (at most {most}): {chain:?}; {}", wire.counts());
        drop(m);
    };
    cold_load("base and one sidecar", 2);
    rt.block_on(async { Atlas::open(store.clone(), prefix.clone()).await.unwrap().compact().await.unwrap() });
    cold_load("compacted", 1);
    // An array file shared by 1,000 datasets: its footer (~230 kB) outgrows the
    // 64 KiB tail; the small blocks before it come with the rest of the footer.
    rt.block_on(async {
        let mut a = Atlas::open(store.clone(), prefix.clone()).await.unwrap();
        add_datasets_with_x(&mut a, 'e').await;
        a.flush().await.unwrap();
        a.compact().await.unwrap();
    });
    cold_load("compacted, footer of 1,000 datasets", 2);
    // The same in a sidecar: 1,000 more datasets and `d/x` again in one flush. The
    // LIST gives the sidecar's size, small enough to fetch whole in the second round
    // trip, alongside the rest of the base's footer; its tail first would be a third.
    rt.block_on(async {
        let mut a = Atlas::open(store.clone(), prefix.clone()).await.unwrap();
        add_datasets_with_x(&mut a, 'f').await;
        let mut d = a.open_dataset("d").await.unwrap();
        d.write_array("x", vec![0, 0], ArrayD::from_shape_vec(IxDyn(&[100, 3]), vals.clone()).unwrap().view()).await.unwrap();
        a.flush().await.unwrap();
    });
    cold_load("base and a sidecar of 1,000 datasets", 2);
}

/// 1,000 datasets `<tag>0000`.. each with a (1, 3) f64 `x` of its number.
async fn add_datasets_with_x(a: &mut Atlas, tag: char) {
    for i in 0..1000 {
        let mut e = a.create_dataset(&format!("{tag}{i:04}")).await.unwrap();
        e.define_array::<f64>("x", vec!["i".into(), "j".into()], vec![1, 3], None, None).await.unwrap();
        e.write_array("x", vec![0, 0], ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![i as f64; 3]).unwrap().view()).await.unwrap();
    }
}

/// The length of the `Bounded(a..b)` range a span's description names.
fn bounded_len(what: &str) -> Option<u64> {
    let r = what.split("Bounded(").nth(1)?.split(')').next()?;
    let (a, b) = r.split_once("..")?;
    Some(b.parse::<u64>().ok()? - a.parse::<u64>().ok()?)
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n.div_ceil(8))
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .take(n)
        .collect()
}

/// Large blocks are fetched as concurrent ranged parts, which complete out of
/// order (every GET waits a different extra 0–16 ms): reads through the mount
/// return exactly the stored values for every fixed-width dtype and for chunkings
/// with partial edge chunks. Then a read-ahead its reader abandons: its requests
/// end, none start after, and the cache stays within its budget.
#[test]
fn concurrent_parts_read_exact_values_for_every_dtype_and_chunking() {
    use atlasfs::store::{Cells, DType};
    assert!(FsPath::new("/dev/fuse").exists(), "/dev/fuse is missing: this test mounts a real FUSE filesystem");
    let server = moto::MotoServer::start("parts");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let wire = Arc::new(Wire::default());
    let store: Arc<dyn ObjectStore> = Arc::new(WiredStore { inner: server.store(), wire: wire.clone() });
    let prefix = Path::from("store");
    // (array, dtype, element size, shape, chunk shape): three ~9.6 MB arrays of random
    // bytes (an ~8 MB block each, at least two parts) and small ones of every other dtype.
    let cases: Vec<(&str, DType, usize, Vec<usize>, Vec<usize>)> = vec![
        ("f64", DType::Float64, 8, vec![1_200_000], vec![100_000]),
        ("f32", DType::Float32, 4, vec![1024, 2304], vec![300, 500]),
        ("i16", DType::Int16, 2, vec![40, 200, 600], vec![7, 64, 128]),
        ("u8", DType::UInt8, 1, vec![3_000_000], vec![1 << 20]),
        ("i8", DType::Int8, 1, vec![1000, 37], vec![128, 16]),
        ("i32", DType::Int32, 4, vec![1000, 37], vec![128, 16]),
        ("i64", DType::Int64, 8, vec![1000, 37], vec![128, 16]),
        ("u16", DType::UInt16, 2, vec![1000, 37], vec![128, 16]),
        ("u32", DType::UInt32, 4, vec![1000, 37], vec![128, 16]),
        ("u64", DType::UInt64, 8, vec![1000, 37], vec![128, 16]),
    ];
    let mut expected = vec![];
    rt.block_on(async {
        let mut a = Atlas::create(store.clone(), prefix.clone(), StoreConfig::default()).await.unwrap();
        let d = a.create_dataset("d").await.unwrap();
        for (seed, (name, dtype, el, shape, chunks)) in cases.iter().enumerate() {
            let cells = Cells::Fixed { elsize: *el, bytes: random_bytes(shape.iter().product::<usize>() * el, seed as u64 + 1) };
            let dims = (0..shape.len()).map(|i| format!("d{i}")).collect();
            d.define_array_dtype(name, dtype.clone(), dims, shape.clone(), Some(chunks.clone()), None).await.unwrap();
            d.write_cells(name, &vec![0; shape.len()], shape, &cells).await.unwrap();
            expected.push((*name, atlasfs::fs::npy::encode(dtype, shape, &cells).unwrap()));
        }
        a.flush().await.unwrap();
    });

    wire.jitter.store(true, Ordering::Relaxed);
    // Sequential readers: the read-ahead streams runs of blocks, which readers wait for.
    let atlas = rt.block_on(Atlas::open(store.clone(), prefix.clone())).unwrap();
    let m = InProcessMount::start(atlas, &rt);
    wire.reset();
    for (name, want) in &expected {
        let got = std::fs::read(m.path(&format!("d/{name}.npy"))).unwrap();
        assert!(got == *want, "d/{name}.npy differs from what was written ({} bytes, {} expected)", got.len(), want.len());
    }
    let streamed = wire.spans.lock().iter().filter(|s| s.2.starts_with("GET store/f64/") && bounded_len(&s.2).is_some_and(|n| n > 8 << 20)).count();
    assert!(streamed >= 1, "the f64 array's blocks should be streamed in one long GET: {}", wire.counts());
    println!("{} arrays read exactly through streamed read-ahead: {}", expected.len(), wire.counts());
    drop(m);
    // Random readers (backwards, 1 MiB at a time: no read-ahead): big blocks in parts.
    let atlas = rt.block_on(Atlas::open(store.clone(), prefix.clone())).unwrap();
    let m = InProcessMount::start(atlas, &rt);
    wire.reset();
    for (name, want) in &expected {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(m.path(&format!("d/{name}.npy"))).unwrap();
        let mut got = vec![0u8; want.len()];
        let step = 1 << 20;
        for at in (0..want.len()).step_by(step).rev() {
            let end = (at + step).min(want.len());
            f.read_exact_at(&mut got[at..end], at as u64).unwrap();
        }
        assert!(got == *want, "d/{name}.npy read backwards differs from what was written");
    }
    // The big blocks went as parts, and parts sent together completed out of order.
    let spans = wire.spans.lock().clone();
    let parts: Vec<_> = spans.iter().filter(|s| s.2.starts_with("GET store/f64/") && s.2.contains("Bounded")).collect();
    assert!(parts.len() >= 3, "the f64 array's two blocks should be fetched in at least three ranged GETs: {parts:?}");
    let start_of = |w: &str| -> u64 { w.rsplit("Bounded(").next().unwrap().split("..").next().unwrap().parse().unwrap() };
    let ranged: Vec<_> = spans.iter().filter(|s| s.2.contains("Bounded")).collect();
    let out_of_order = ranged.iter().any(|a| ranged.iter().any(|b| a.2.split(' ').nth(1) == b.2.split(' ').nth(1) && start_of(&a.2) < start_of(&b.2) && a.0 <= b.0 && a.1 > b.1));
    assert!(out_of_order, "no part completed before one of a lower range sent before it: {ranged:?}");
    println!("{} arrays read exactly through concurrent parts: {}; f64: {} ranged GETs", expected.len(), wire.counts(), parts.len());
    drop(m);

    // An abandoned read-ahead: a reader that reads the start of i16 sequentially,
    // which opens the read-ahead window, and goes away.
    wire.jitter.store(false, Ordering::Relaxed);
    let atlas = rt.block_on(Atlas::open(store.clone(), prefix.clone())).unwrap();
    let m = InProcessMount::start(atlas.clone(), &rt);
    wire.reset();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(m.path("d/i16.npy")).unwrap();
        let mut buf = vec![0u8; 128 << 10];
        for i in 0..4u64 {
            f.read_exact_at(&mut buf, i * (128 << 10)).unwrap();
        }
    }
    let t = Instant::now();
    while wire.in_flight.load(Ordering::Relaxed) > 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "requests of an abandoned read-ahead still in flight after 60 s: {}", wire.counts());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let settled = wire.counts();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(wire.counts(), settled, "requests went on after the read-ahead's reader left");
    assert_eq!(wire.in_flight.load(Ordering::Relaxed), 0);
    let budget = atlasfs::StoreOptions::default().block_cache_bytes;
    let held = atlas.block_cache().weighted_size() + atlas.block_cache().pooled_bytes();
    assert!(held <= budget, "the cache holds {held} bytes after the read-ahead, over its {budget}-byte budget");
    let fetched = wire.bytes.load(Ordering::Relaxed);
    assert!(fetched <= 11 << 20, "an abandoned read-ahead of a 9.6 MB array fetched {fetched} bytes");
    println!("abandoned read-ahead: {settled}; cache holds {held} bytes");
    drop(m);
}

/// A read-ahead its reader abandons is cancelled when the file closes: on a slow link
/// (~8 MiB/s), a reader reads the first 512 KiB of a 48 MiB array sequentially (the
/// window opens and one streaming GET is asked for all of it) and closes the file.
/// After a grace period no more body bytes flow, no stream is open, only a few
/// blocks' worth came, and the cache is within its budget.
#[test]
fn an_abandoned_read_ahead_stops_when_the_file_closes() {
    use atlasfs::store::stream_fetch::stream_counts;
    use atlasfs::store::{Cells, DType};
    assert!(FsPath::new("/dev/fuse").exists(), "/dev/fuse is missing: this test mounts a real FUSE filesystem");
    let server = moto::MotoServer::start("abandon");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let wire = Arc::new(Wire::default());
    let store: Arc<dyn ObjectStore> = Arc::new(WiredStore { inner: server.store(), wire: wire.clone() });
    let prefix = Path::from("store");
    let len = 48usize << 20;
    rt.block_on(async {
        let mut a = Atlas::create(store.clone(), prefix.clone(), StoreConfig::default()).await.unwrap();
        let d = a.create_dataset("d").await.unwrap();
        d.define_array_dtype("big", DType::UInt8, vec!["x".into()], vec![len], Some(vec![4 << 20]), None).await.unwrap();
        d.write_cells("big", &[0], &[len], &Cells::Fixed { elsize: 1, bytes: random_bytes(len, 7) }).await.unwrap();
        a.flush().await.unwrap();
    });
    let atlas = rt.block_on(Atlas::open(store.clone(), prefix.clone())).unwrap();
    let m = InProcessMount::start(atlas.clone(), &rt);
    wire.slow_body.store(true, Ordering::Relaxed);
    let cancelled_before = stream_counts().1;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(m.path("d/big.npy")).unwrap();
        let mut buf = vec![0u8; 128 << 10];
        for i in 0..4u64 {
            f.read_exact_at(&mut buf, i * (128 << 10)).unwrap();
        }
    }
    let asked: u64 = wire.spans.lock().iter().filter(|s| s.2.starts_with("GET store/big/")).filter_map(|s| bounded_len(&s.2)).sum();
    std::thread::sleep(Duration::from_millis(500));
    let settled = wire.body_bytes.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1000));
    let body = wire.body_bytes.load(Ordering::Relaxed);
    let (open, cancelled) = stream_counts();
    println!("abandoned read-ahead: GETs asked for {asked} bytes; {body} body bytes came; {} stream(s) cancelled; {}", cancelled - cancelled_before, wire.counts());
    assert_eq!(body, settled, "body bytes still flowing 0.5 s after the reader closed the file: {}", wire.counts());
    assert_eq!(open, 0, "a read-ahead stream is still open after its reader closed the file");
    assert!(cancelled > cancelled_before, "closing the file cancelled no read-ahead stream");
    assert!(asked >= 32 << 20, "the read-ahead should have asked for most of the array in one stream ({asked} bytes): {}", wire.counts());
    assert!(body <= 20 << 20, "an abandoned read-ahead took {body} body bytes of the {asked} it asked for");
    let budget = atlasfs::StoreOptions::default().block_cache_bytes;
    let held = atlas.block_cache().weighted_size() + atlas.block_cache().pooled_bytes();
    assert!(held <= budget, "the cache holds {held} bytes after the read-ahead, over its {budget}-byte budget");
    drop(m);
}
