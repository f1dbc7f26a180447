//! The filesystem core, driven directly (no FUSE): byte-range reads of `.npy`
//! files and of the stacked view against whole-file encodings, staged writes,
//! in-place overlays, and refusals.

use std::sync::Arc;

use atlasfs::fs::core::{CONTROL_DIR_INO, ROOT_INO, STACKED_DIR_INO};
use atlasfs::fs::{AtlasFs, FsConfig, npy};
use atlasfs::store::{Cells, Codec, DType, FillValue};
use atlasfs::{Atlas, StoreConfig};
use ndarray::{ArrayD, IxDyn};
use object_store::memory::InMemory;
use object_store::path::Path;

async fn fs_with_data() -> (AtlasFs, Vec<Vec<f32>>) {
    let mut a = Atlas::create(Arc::new(InMemory::new()), Path::default(), StoreConfig::default()).await.unwrap();
    let mut want = vec![];
    for i in 0..7 {
        let mut d = a.create_dataset(&format!("d{i}")).await.unwrap();
        d.define_array::<f32>("v", vec!["x".into(), "y".into()], vec![5, 6], Some(vec![2, 4]), None).await.unwrap();
        let vals: Vec<f32> = (0..30).map(|k| (i * 100 + k) as f32).collect();
        d.write_array("v", vec![0, 0], ArrayD::from_shape_vec(IxDyn(&[5, 6]), vals.clone()).unwrap().view()).await.unwrap();
        want.push(vals);
    }
    // a dataset whose copy has another shape is left out of the stack
    a.create_dataset("odd").await.unwrap().define_array::<f32>("v", vec!["x".into()], vec![3], None, None).await.unwrap();
    a.flush().await.unwrap();
    (AtlasFs::new(a, FsConfig::default()), want)
}

fn full_npy(shape: &[usize], vals: &[f32]) -> Vec<u8> {
    npy::encode(&DType::Float32, shape, &Cells::Fixed { elsize: 4, bytes: vals.iter().flat_map(|v| v.to_le_bytes()).collect() }).unwrap()
}

#[tokio::test]
async fn npy_byte_ranges_match_the_whole_file() {
    let (fs, want) = fs_with_data().await;
    let whole = full_npy(&[5, 6], &want[3]);
    let f = fs.lookup(fs.lookup(ROOT_INO, "d3").await.unwrap().ino, "v.npy").await.unwrap();
    assert_eq!(f.size, whole.len() as u64, "stat size is the exact .npy size");
    let o = fs.open(f.ino, libc::O_RDONLY).await.unwrap();
    for (off, len) in [(0, 4096), (0, 10), (120, 20), (127, 3), (128, 4), (129, 50), (130, 1), (200, 1000), (whole.len() as u64 - 1, 8), (whole.len() as u64, 8)] {
        let got = fs.read(o.fh, off, len).await.unwrap();
        let lo = (off as usize).min(whole.len());
        let hi = (lo + len as usize).min(whole.len());
        assert_eq!(got, &whole[lo..hi], "range {off}+{len}");
    }
    fs.release(o.fh).await.unwrap();
}

#[tokio::test]
async fn stacked_view_is_every_matching_copy() {
    let (fs, want) = fs_with_data().await;
    let names: Vec<String> = fs.readdir(STACKED_DIR_INO).await.unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["v.npy", "v.datasets"]);
    let listing = fs.lookup(STACKED_DIR_INO, "v.datasets").await.unwrap();
    let o = fs.open(listing.ino, libc::O_RDONLY).await.unwrap();
    let text = String::from_utf8(fs.read(o.fh, 0, 4096).await.unwrap()).unwrap();
    assert_eq!(text, "d0\nd1\nd2\nd3\nd4\nd5\nd6\n", "odd (another shape) is left out");
    let all: Vec<f32> = want.concat();
    let whole = full_npy(&[7, 5, 6], &all);
    let f = fs.lookup(STACKED_DIR_INO, "v.npy").await.unwrap();
    assert_eq!(f.size, whole.len() as u64);
    let o = fs.open(f.ino, libc::O_RDONLY).await.unwrap();
    let mut off = 0u64;
    // odd-sized reads walk across element, row and dataset boundaries
    while off < whole.len() as u64 {
        let got = fs.read(o.fh, off, 77).await.unwrap();
        let hi = (off as usize + 77).min(whole.len());
        assert_eq!(got, &whole[off as usize..hi], "offset {off}");
        off += 77;
    }
    assert!(fs.open(f.ino, libc::O_RDWR).await.is_err(), "the stack is read-only");
}

#[tokio::test]
async fn stacked_reads_with_read_ahead_and_fills_match_the_whole_file() {
    for codec in [Codec::Zstd, Codec::Uncompressed] {
        stacked_reads_match(codec).await;
    }
}

async fn stacked_reads_match(codec: Codec) {
    // Chunks of 16 rows; d3 writes only its first 20 rows (the rest read as its fill),
    // d5 writes nothing, and every other dataset all of its copy.
    let mut a = Atlas::create(Arc::new(InMemory::new()), Path::default(), StoreConfig { codec, ..StoreConfig::default() }).await.unwrap();
    let (n, rows, cols) = (12, 64, 32);
    let mut all = vec![];
    for i in 0..n {
        let mut d = a.create_dataset(&format!("d{i}")).await.unwrap();
        d.define_array::<f32>("v", vec!["x".into(), "y".into()], vec![rows, cols], Some(vec![16, cols]), Some(FillValue::Float(-9.0))).await.unwrap();
        let vals: Vec<f32> = (0..rows * cols).map(|k| (i * 10_000 + k) as f32).collect();
        let written = match i {
            3 => 20,
            5 => 0,
            _ => rows,
        };
        if written > 0 {
            d.write_array("v", vec![0, 0], ArrayD::from_shape_vec(IxDyn(&[written, cols]), vals[..written * cols].to_vec()).unwrap().view()).await.unwrap();
        }
        all.extend(vals[..written * cols].iter().copied().chain(std::iter::repeat_n(-9.0, (rows - written) * cols)));
    }
    a.flush().await.unwrap();
    let fs = AtlasFs::new(a, FsConfig::default());
    let whole = full_npy(&[n, rows, cols], &all);
    let f = fs.lookup(STACKED_DIR_INO, "v.npy").await.unwrap();
    assert_eq!(f.size, whole.len() as u64);
    let o = fs.open(f.ino, libc::O_RDONLY).await.unwrap();
    // Sequential reads (read ahead), a few swapped as concurrent kernel READs arrive,
    // then a seek back and unaligned reads.
    let step = 4096u64;
    let mut offsets: Vec<u64> = (0..whole.len() as u64).step_by(step as usize).collect();
    for k in (1..offsets.len() - 1).step_by(5) {
        offsets.swap(k, k + 1);
    }
    for off in offsets.into_iter().chain([130, 7, 50_000, 3]) {
        let got = fs.read(o.fh, off, step as u32 + 3).await.unwrap();
        let hi = (off + step + 3).min(whole.len() as u64) as usize;
        assert_eq!(got, &whole[off as usize..hi], "{codec:?} offset {off}");
    }
    fs.release(o.fh).await.unwrap();
}

#[tokio::test]
async fn staged_write_commits_on_close_and_bad_bytes_change_nothing() {
    let (fs, _) = fs_with_data().await;
    let d0 = fs.lookup(ROOT_INO, "d0").await.unwrap().ino;
    let new: Vec<f32> = (0..12).map(|x| x as f32 * 0.5).collect();
    let bytes = full_npy(&[3, 4], &new);
    let (_, o) = fs.create(d0, "w.npy", libc::O_WRONLY | libc::O_CREAT).await.unwrap();
    // written out of order, in pieces
    fs.write(o.fh, 100, &bytes[100..]).await.unwrap();
    fs.write(o.fh, 0, &bytes[..100]).await.unwrap();
    fs.flush(o.fh).await.unwrap();
    fs.release(o.fh).await.unwrap();
    let got = fs.atlas().open_dataset("d0").await.unwrap().read_array::<f32>("w", vec![], vec![]).await.unwrap().unwrap();
    assert_eq!(got.iter().copied().collect::<Vec<_>>(), new);
    assert_eq!(got.shape(), &[3, 4]);
    fs.fsync(None).await.unwrap();
    assert!(!fs.atlas().has_pending().await);

    // garbage over an existing array: close fails with EINVAL, the array is unchanged
    let v = fs.lookup(d0, "v.npy").await.unwrap();
    let o = fs.open(v.ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    fs.write(o.fh, 0, b"\x93NUMPY but not really").await.unwrap();
    let err = fs.flush(o.fh).await.unwrap_err();
    assert_eq!(err.errno, libc::EINVAL, "{err}");
    fs.release(o.fh).await.unwrap();
    let v = fs.atlas().open_dataset("d0").await.unwrap().read_array::<f32>("v", vec![], vec![]).await.unwrap().unwrap();
    assert_eq!(v[[0, 1]], 1.0);
    assert!(!fs.atlas().has_pending().await, "a rejected write leaves nothing pending");

    // names other than <array>.npy are refused
    assert_eq!(fs.create(d0, "notes.txt", libc::O_WRONLY).await.unwrap_err().errno, libc::EINVAL);
    assert_eq!(fs.create(d0, "_x.npy", libc::O_WRONLY).await.unwrap_err().errno, libc::EINVAL);
}

#[tokio::test]
async fn in_place_writes_touch_only_their_elements() {
    let (fs, want) = fs_with_data().await;
    let d2 = fs.lookup(ROOT_INO, "d2").await.unwrap().ino;
    let v = fs.lookup(d2, "v.npy").await.unwrap();
    let o = fs.open(v.ino, libc::O_RDWR).await.unwrap();
    let header = 128u64;
    // element 7 (row 1, col 1) and the last element
    fs.write(o.fh, header + 7 * 4, &(-1.0f32).to_le_bytes()).await.unwrap();
    fs.write(o.fh, header + 29 * 4, &(-2.0f32).to_le_bytes()).await.unwrap();
    // reads through the same descriptor see the overlay before close
    let seen = fs.read(o.fh, header + 7 * 4, 4).await.unwrap();
    assert_eq!(seen, (-1.0f32).to_le_bytes());
    assert_eq!(fs.write(o.fh, v.size, &[0; 4]).await.unwrap_err().errno, libc::EFBIG);
    fs.release(o.fh).await.unwrap();
    let got: Vec<f32> = fs.atlas().open_dataset("d2").await.unwrap().read_array::<f32>("v", vec![], vec![]).await.unwrap().unwrap().iter().copied().collect();
    let mut expect = want[2].clone();
    expect[7] = -1.0;
    expect[29] = -2.0;
    assert_eq!(got, expect);
}

#[tokio::test]
async fn read_only_refuses_every_change() {
    let (fs, _) = fs_with_data().await;
    let ro = AtlasFs::new(fs.atlas().clone(), FsConfig { read_only: true, ..FsConfig::default() });
    let d0 = ro.lookup(ROOT_INO, "d0").await.unwrap();
    assert_eq!(d0.perm, 0o755);
    assert_eq!(ro.mkdir(ROOT_INO, "new").await.unwrap_err().errno, libc::EROFS);
    assert_eq!(ro.unlink(d0.ino, "v.npy").await.unwrap_err().errno, libc::EROFS);
    assert_eq!(ro.rmdir(ROOT_INO, "odd").await.unwrap_err().errno, libc::EROFS);
    assert_eq!(ro.create(d0.ino, "x.npy", libc::O_WRONLY).await.unwrap_err().errno, libc::EROFS);
    let v = ro.lookup(d0.ino, "v.npy").await.unwrap();
    assert_eq!(v.perm, 0o444);
    assert_eq!(ro.open(v.ino, libc::O_RDWR).await.unwrap_err().errno, libc::EROFS);
    assert_eq!(ro.setxattr(d0.ino, "user.atlas.attr.k", b"1").await.unwrap_err().errno, libc::EROFS);
    assert!(ro.open(v.ino, libc::O_RDONLY).await.is_ok());
}

async fn read_all(fs: &AtlasFs, ds: &str, name: &str) -> Result<Vec<u8>, atlasfs::fs::FsError> {
    let dir = fs.lookup(ROOT_INO, ds).await?.ino;
    let f = fs.lookup(dir, name).await?;
    let o = fs.open(f.ino, libc::O_RDONLY).await?;
    let bytes = fs.read(o.fh, 0, f.size as u32).await?;
    fs.release(o.fh).await?;
    Ok(bytes)
}

/// Another writer's flushed changes reach the mount's view on refresh: a new
/// dataset, new values in an array the view had read, and a removed array.
#[tokio::test]
async fn refresh_picks_up_another_writers_flush() {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let mut a = Atlas::create(store.clone(), Path::default(), StoreConfig::default()).await.unwrap();
    let mut d = a.create_dataset("d").await.unwrap();
    for name in ["v", "gone"] {
        d.define_array::<i32>(name, vec!["x".into()], vec![3], None, None).await.unwrap();
        d.write_array(name, vec![0], ArrayD::from_shape_vec(IxDyn(&[3]), vec![1, 2, 3]).unwrap().view()).await.unwrap();
    }
    a.flush().await.unwrap();
    let fs = AtlasFs::new(Atlas::open(store.clone(), Path::default()).await.unwrap(), FsConfig::default());
    let before = read_all(&fs, "d", "v.npy").await.unwrap();
    assert!(fs.refresh().await.unwrap().is_empty(), "nothing changed yet");

    // The other writer: new values, a new dataset, a deleted array.
    let mut other = Atlas::open(store.clone(), Path::default()).await.unwrap();
    let mut od = other.open_dataset("d").await.unwrap();
    od.write_array("v", vec![1], ArrayD::from_shape_vec(IxDyn(&[1]), vec![20]).unwrap().view()).await.unwrap();
    od.delete_array("gone").await.unwrap();
    let mut n = other.create_dataset("new").await.unwrap();
    n.define_array::<f32>("w", vec!["x".into()], vec![2], None, None).await.unwrap();
    n.write_array("w", vec![0], ArrayD::from_shape_vec(IxDyn(&[2]), vec![5f32, 6.]).unwrap().view()).await.unwrap();
    other.flush().await.unwrap();

    assert_eq!(read_all(&fs, "d", "v.npy").await.unwrap(), before, "before a refresh the view is unchanged");
    assert_eq!(fs.refresh().await.unwrap(), ["d", "new"]);
    let after = read_all(&fs, "d", "v.npy").await.unwrap();
    let h = after.len() - 12;
    let vals: Vec<i32> = after[h..].chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(vals, [1, 20, 3], "the other writer's value");
    let names: Vec<String> = fs.readdir(ROOT_INO).await.unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"new".to_string()), "new dataset listed: {names:?}");
    assert_eq!(read_all(&fs, "new", "w.npy").await.unwrap(), full_npy(&[2], &[5., 6.]));
    let gone = read_all(&fs, "d", "gone.npy").await.err().expect("the deleted array is gone");
    assert_eq!(gone.errno, libc::ENOENT);
    let stats = fs.stats_json().await;
    assert!(stats.contains("\"refreshes\": 1"), "{stats}");
}

/// A directory read in pieces is listed once per pass: reads that continue a pass
/// see the listing it started with; a read from offset 0 lists afresh.
#[tokio::test]
async fn directory_reads_continue_one_listing() {
    let mut a = Atlas::create(Arc::new(InMemory::new()), Path::default(), StoreConfig::default()).await.unwrap();
    for i in 0..250 {
        a.create_dataset(&format!("ds{i:03}")).await.unwrap();
    }
    let fs = AtlasFs::new(a, FsConfig::default());
    let fh = fs.opendir(ROOT_INO).unwrap();
    let first = fs.readdir_handle(fh, ROOT_INO, 0).await.unwrap();
    assert_eq!(first.len(), 251, "250 datasets and .atlasfs");
    assert_eq!(first[1].0, "ds000");
    fs.mkdir(ROOT_INO, "late").await.unwrap();
    let cont = fs.readdir_handle(fh, ROOT_INO, 100).await.unwrap();
    assert!(Arc::ptr_eq(&first, &cont), "a continued read uses the pass's listing");
    let again = fs.readdir_handle(fh, ROOT_INO, 0).await.unwrap();
    assert_eq!(again.len(), 252);
    assert_eq!(again.last().unwrap().0, "late");
    fs.releasedir(fh);
    assert_eq!(fs.readdir_handle(fh, ROOT_INO, 0).await.err().map(|e| e.errno), Some(libc::EBADF));
}

/// A sequential reader gets read-ahead: after two consecutive reads at the start of
/// a two-block array, the second block is decoded too, before anyone asked for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_decode_the_next_blocks_ahead() {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let mut a = Atlas::create(store.clone(), Path::default(), StoreConfig::default()).await.unwrap();
    let mut d = a.create_dataset("d").await.unwrap();
    let (rows, cols) = (2048usize, 2048usize); // 16 MiB of f32: two 8 MiB blocks
    d.define_array::<f32>("big", vec!["r".into(), "c".into()], vec![rows, cols], Some(vec![256, cols]), None).await.unwrap();
    let vals: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    d.write_array("big", vec![0, 0], ArrayD::from_shape_vec(IxDyn(&[rows, cols]), vals).unwrap().view()).await.unwrap();
    a.flush().await.unwrap();
    let fs = AtlasFs::new(Atlas::open(store, Path::default()).await.unwrap(), FsConfig::default());
    let dir = fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    let f = fs.lookup(dir, "big.npy").await.unwrap();
    let o = fs.open(f.ino, libc::O_RDONLY).await.unwrap();
    let decoded = |fs: &AtlasFs| fs.atlas().block_cache().counters.bytes_decoded.load(std::sync::atomic::Ordering::Relaxed);
    let first = fs.read(o.fh, 0, 1 << 20).await.unwrap();
    let one_block = decoded(&fs);
    assert!(one_block > 0 && one_block <= 8 << 20, "the first read decodes one block ({one_block} bytes)");
    // The window doubles per sequential read (2, 4, 8 MiB): the third read's reaches
    // into the second block.
    let mut at = first.len() as u64;
    for _ in 0..2 {
        at += fs.read(o.fh, at, 1 << 20).await.unwrap().len() as u64;
    }
    assert_eq!(at, 3 << 20);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while decoded(&fs) < 16 << 20 {
        assert!(std::time::Instant::now() < deadline, "read-ahead did not decode the second block ({} bytes decoded)", decoded(&fs));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The data read ahead is what a later read returns.
    let far = fs.read(o.fh, f.size - 4, 4).await.unwrap();
    assert_eq!(f32::from_le_bytes(far.try_into().unwrap()), (rows * cols - 1) as f32);
    assert!(decoded(&fs) <= 16 << 20, "nothing decoded twice: {}", decoded(&fs));
    fs.release(o.fh).await.unwrap();
}

/// A descriptor open across a refresh that brings another writer's new version of
/// its array goes on reading the version it opened (whole, never a mix); a new open
/// reads the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_descriptors_keep_their_version_across_a_refresh() {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let mut a = Atlas::create(store.clone(), Path::default(), StoreConfig::default()).await.unwrap();
    let mut d = a.create_dataset("d").await.unwrap();
    d.define_array::<i32>("v", vec!["x".into()], vec![4], Some(vec![2]), None).await.unwrap();
    d.write_array("v", vec![0], ArrayD::from_shape_vec(IxDyn(&[4]), vec![1, 2, 3, 4]).unwrap().view()).await.unwrap();
    a.flush().await.unwrap();
    let fs = AtlasFs::new(Atlas::open(store.clone(), Path::default()).await.unwrap(), FsConfig::default());
    let dir = fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    let f = fs.lookup(dir, "v.npy").await.unwrap();
    let o = fs.open(f.ino, libc::O_RDONLY).await.unwrap();
    let head = (f.size - 16) as u32;
    let first = fs.read(o.fh, 0, head + 8).await.unwrap();

    let mut other = Atlas::open(store.clone(), Path::default()).await.unwrap();
    other.open_dataset("d").await.unwrap().write_array("v", vec![0], ArrayD::from_shape_vec(IxDyn(&[4]), vec![10, 20, 30, 40]).unwrap().view()).await.unwrap();
    other.flush().await.unwrap();
    assert_eq!(fs.refresh().await.unwrap(), ["d"]);

    let rest = fs.read(o.fh, (head + 8) as u64, 8).await.unwrap();
    let ints = |b: &[u8]| b.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
    let mut whole = first.clone();
    whole.extend_from_slice(&rest);
    assert_eq!(ints(&whole[head as usize..]), [1, 2, 3, 4], "the open descriptor reads the version it opened");
    assert_eq!(ints(&fs.read(o.fh, head as u64, 16).await.unwrap()), [1, 2, 3, 4], "re-reading it too");
    fs.release(o.fh).await.unwrap();
    let now = read_all(&fs, "d", "v.npy").await.unwrap();
    assert_eq!(ints(&now[head as usize..]), [10, 20, 30, 40], "a new open reads the new version");
}

/// Two truncating opens of one name each stage their own bytes: both writes succeed
/// and the last close wins, whole (they once shared one temp file: ENOENT, garbage).
#[tokio::test]
async fn two_truncating_writers_of_one_file_each_commit_whole() {
    let (fs, _) = fs_with_data().await;
    let d = fs.lookup(ROOT_INO, "d1").await.unwrap().ino;
    let f = fs.lookup(d, "v.npy").await.unwrap().ino;
    let (a, b) = (full_npy(&[4], &[1., 1., 1., 1.]), full_npy(&[2], &[2., 2.]));
    let oa = fs.open(f, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    let ob = fs.open(f, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    fs.write(oa.fh, 0, &a[..50]).await.unwrap();
    fs.write(ob.fh, 0, &b).await.unwrap();
    fs.write(oa.fh, 50, &a[50..]).await.unwrap();
    fs.flush(ob.fh).await.unwrap();
    fs.release(ob.fh).await.unwrap();
    assert_eq!(read_all(&fs, "d1", "v.npy").await.unwrap(), b, "the first close committed its own bytes");
    fs.flush(oa.fh).await.unwrap();
    fs.release(oa.fh).await.unwrap();
    assert_eq!(read_all(&fs, "d1", "v.npy").await.unwrap(), a, "the last close wins");
}

/// rename(2) of a temp file over an array: a descriptor opened before goes on reading
/// the version it opened (and fstat gives that version's size), and so does an open
/// that raced the rename; after that the replaced inode is stale (ESTALE makes the
/// kernel look the name up again); the name shows the new one.
#[tokio::test]
async fn a_descriptor_keeps_its_version_across_a_rename_over_it() {
    let (fs, want) = fs_with_data().await;
    let d = fs.lookup(ROOT_INO, "d2").await.unwrap().ino;
    let old = fs.lookup(d, "v.npy").await.unwrap();
    let before = full_npy(&[5, 6], &want[2]);
    let r = fs.open(old.ino, libc::O_RDONLY).await.unwrap();
    assert_eq!(fs.read(r.fh, 0, 100).await.unwrap(), &before[..100]);
    let new = full_npy(&[3], &[7., 8., 9.]);
    let (t, w) = fs.create(d, ".v.npy.tmp1", libc::O_WRONLY).await.unwrap();
    fs.write(w.fh, 0, &new).await.unwrap();
    fs.release(w.fh).await.unwrap();
    fs.rename(d, ".v.npy.tmp1", d, "v.npy").await.unwrap();
    assert_eq!(fs.read(r.fh, 100, 4096).await.unwrap(), &before[100..], "the rest of the version this descriptor opened");
    assert_eq!(fs.getattr(old.ino).await.unwrap().size, before.len() as u64, "fstat of the open descriptor");
    // an open whose path walk found the old inode just before the rename: the old file
    let late = fs.open(old.ino, libc::O_RDONLY).await.expect("a late open of the replaced inode");
    assert_eq!(fs.read(late.fh, 0, 4096).await.unwrap(), before, "a late open reads the old version");
    fs.release(late.fh).await.unwrap();
    assert_eq!(fs.open(old.ino, libc::O_WRONLY).await.err().map(|e| e.errno), Some(libc::ESTALE), "a write open of the replaced inode");
    let now = fs.lookup(d, "v.npy").await.unwrap();
    assert_eq!((now.ino, now.size), (t.ino, new.len() as u64), "the name is the temp file's inode, with its size");
    assert_eq!(read_all(&fs, "d2", "v.npy").await.unwrap(), new);
    fs.release(r.fh).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await; // the old version is kept 2 s for late opens
    assert_eq!(fs.getattr(old.ino).await.err().map(|e| e.errno), Some(libc::ESTALE), "once closed and past 2 s, the old inode is gone");
    assert_eq!(fs.open(old.ino, libc::O_RDONLY).await.err().map(|e| e.errno), Some(libc::ESTALE), "and opens of it are stale");
}

/// Opens racing back-to-back renames over one array, as the kernel sends them: a
/// path walk's LOOKUP, then OPEN of the inode it found; on ESTALE the kernel looks
/// the name up once more and opens again, and a second ESTALE reaches the program.
/// A replaced inode's old version must be kept for late opens *before* the inode is
/// forgotten, or an open can find neither (the load test once saw that ESTALE).
#[test]
fn opens_racing_renames_over_an_array_never_see_estale_twice() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Like the FUSE adapter: each request runs on its own thread, blocking on the
    // shared runtime, so requests interleave at the core's await points.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (fs, _) = rt.block_on(fs_with_data());
    let d = rt.block_on(fs.lookup(ROOT_INO, "d3")).unwrap().ino;
    let stop = AtomicBool::new(false);
    let (opens, twice) = std::thread::scope(|sc| {
        sc.spawn(|| {
            for k in 0..3000u32 {
                let tmp = format!(".v.npy.tmp{k}");
                rt.block_on(async {
                    let (_, w) = fs.create(d, &tmp, libc::O_WRONLY).await.unwrap();
                    fs.write(w.fh, 0, &full_npy(&[64], &[k as f32; 64])).await.unwrap();
                    fs.release(w.fh).await.unwrap();
                    fs.rename(d, &tmp, d, "v.npy").await.unwrap();
                });
            }
            stop.store(true, Ordering::Release);
        });
        let readers: Vec<_> = (0..3)
            .map(|_| {
                sc.spawn(|| {
                    let (mut opens, mut twice) = (0u32, 0u32);
                    while !stop.load(Ordering::Acquire) {
                        for retry in [false, true] {
                            let ino = rt.block_on(fs.lookup(d, "v.npy")).unwrap().ino;
                            match rt.block_on(fs.open(ino, libc::O_RDONLY)) {
                                Ok(o) => {
                                    let head = rt.block_on(fs.read(o.fh, 0, 16)).unwrap();
                                    assert_eq!(&head[..6], b"\x93NUMPY", "an open reads a whole .npy");
                                    rt.block_on(fs.release(o.fh)).unwrap();
                                    opens += 1;
                                    break;
                                }
                                Err(e) if e.errno == libc::ESTALE => twice += retry as u32,
                                Err(e) => panic!("open of v.npy: {e}"),
                            }
                        }
                    }
                    (opens, twice)
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).fold((0, 0), |(a, b), (o, t)| (a + o, b + t))
    });
    assert!(opens > 0, "the readers opened nothing");
    assert_eq!(twice, 0, "{twice} of {} opens got ESTALE after the kernel's retry", opens + twice);
}

/// A stored array renamed onto a new name, and across datasets over an array of
/// another shape and dtype, keeps its dtype, shape, chunk shape, fill value,
/// dimension names and values (it is committed from a staged copy of its bytes,
/// which carry none of the rest); a string array too; the source is gone.
#[tokio::test]
async fn a_stored_array_renamed_keeps_its_definition() {
    let (fs, _) = fs_with_data().await;
    let d1 = fs.atlas().open_dataset("d1").await.unwrap();
    d1.define_array_shared::<i16>("sparse", vec!["t".into(), "c".into()], vec![7, 3], Some(vec![2, 2]), Some(FillValue::Int(-9))).await.unwrap();
    d1.write_cells("sparse", &[1, 0], &[1, 3], &Cells::Fixed { elsize: 2, bytes: [1i16, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect() }).await.unwrap();
    d1.define_array_dtype("names", DType::String, vec!["n".into()], vec![3], None, None).await.unwrap();
    d1.write_cells("names", &[0], &[3], &Cells::Var(vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()])).await.unwrap();
    let schema = |ds: &str, a: &str| fs.atlas().dataset_meta(ds).unwrap().arrays.get(a).cloned();
    let (sparse, names) = (schema("d1", "sparse").unwrap(), schema("d1", "names").unwrap());
    let (sparse_npy, names_npy) = (read_all(&fs, "d1", "sparse.npy").await.unwrap(), read_all(&fs, "d1", "names.npy").await.unwrap());
    let d1_ino = fs.lookup(ROOT_INO, "d1").await.unwrap().ino;
    let d2_ino = fs.lookup(ROOT_INO, "d2").await.unwrap().ino;
    fs.rename(d1_ino, "sparse.npy", d1_ino, "moved.npy").await.unwrap();
    fs.rename(d1_ino, "moved.npy", d2_ino, "v.npy").await.unwrap();
    fs.rename(d1_ino, "names.npy", d2_ino, "labels.npy").await.unwrap();
    assert_eq!(schema("d2", "v"), Some(sparse), "definition kept");
    assert_eq!(schema("d2", "labels"), Some(names), "string array's definition kept");
    assert_eq!(fs.atlas().open_dataset("d2").await.unwrap().array_fill_value("v").await.unwrap(), Some(FillValue::Int(-9)));
    assert_eq!(read_all(&fs, "d2", "v.npy").await.unwrap(), sparse_npy, "values kept, fill included");
    assert_eq!(read_all(&fs, "d2", "labels.npy").await.unwrap(), names_npy);
    for gone in ["sparse", "moved", "names"] {
        assert_eq!(schema("d1", gone), None, "{gone} is gone");
        assert_eq!(fs.lookup(d1_ino, &format!("{gone}.npy")).await.err().map(|e| e.errno), Some(libc::ENOENT));
    }
}

/// numpy's own atomic replace (`np.save(".next.npy")` then `os.replace` onto the
/// array): the temp name is an array name, committed at its close, so the rename
/// moves a *stored* array over another. Every open must read one version whole, of
/// the size its lookup reported (the kernel's size for the inode): the copy once
/// went into the store before the name moved, so an open of the replaced inode in
/// between read the new version under the old size (a READ past the end: EINVAL,
/// seen as EIO on a passthrough mount) and its descriptor was never frozen.
#[test]
fn opens_racing_a_stored_array_renamed_over_read_one_version_of_their_size() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (fs, _) = rt.block_on(fs_with_data());
    let d = rt.block_on(fs.lookup(ROOT_INO, "d3")).unwrap().ino;
    let replace = |k: u32| {
        let n = 64 + 8 * (k % 40) as usize;
        rt.block_on(async {
            let (_, w) = fs.create(d, ".next.npy", libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
            fs.write(w.fh, 0, &full_npy(&[n], &vec![k as f32; n])).await.unwrap();
            fs.release(w.fh).await.unwrap();
            assert!(fs.atlas().dataset_meta("d3").unwrap().arrays.contains_key(".next"), "committed at close: a stored array is renamed");
            fs.rename(d, ".next.npy", d, "v.npy").await.unwrap();
        });
    };
    replace(0);
    let stop = AtomicBool::new(false);
    let opens = std::thread::scope(|sc| {
        sc.spawn(|| {
            (1..600).for_each(replace);
            stop.store(true, Ordering::Release);
        });
        let readers: Vec<_> = (0..3)
            .map(|_| {
                sc.spawn(|| {
                    let mut opens = 0u32;
                    while !stop.load(Ordering::Acquire) {
                        for retry in [false, true] {
                            let f = rt.block_on(fs.lookup(d, "v.npy")).unwrap();
                            match rt.block_on(fs.open(f.ino, libc::O_RDONLY)) {
                                Ok(o) => {
                                    // What the kernel asks for: up to the size it holds.
                                    let bytes = rt.block_on(fs.read(o.fh, 0, f.size as u32)).unwrap_or_else(|e| panic!("read of {} bytes: {e}", f.size));
                                    rt.block_on(fs.release(o.fh)).unwrap();
                                    assert_eq!(bytes.len() as u64, f.size, "a whole read of the size the lookup gave");
                                    let h = npy::read_header(&mut &bytes[..]).unwrap();
                                    assert_eq!(h.header_len + 4 * h.shape.iter().product::<usize>(), bytes.len(), "one version: its header's shape and its length agree");
                                    let first = f32::from_le_bytes(bytes[h.header_len..h.header_len + 4].try_into().unwrap());
                                    let last = f32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
                                    assert_eq!(first, last, "one version's values throughout");
                                    opens += 1;
                                    break;
                                }
                                Err(e) if e.errno == libc::ESTALE && !retry => {}
                                Err(e) => panic!("open of v.npy: {e}"),
                            }
                        }
                    }
                    opens
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).sum::<u32>()
    });
    assert!(opens > 100, "the readers opened v.npy {opens} times");
}

/// FORGET releases the zarr view's inodes (one per chunk key, so a `find` or a dask
/// scan of a big store would otherwise grow the table without bound): a walk of
/// the whole view by lookups, then a FORGET of each, leaves the table as it was;
/// failed lookups of absent chunk keys and plain listings take none; a READDIRPLUS
/// entry counts as a lookup; an inode goes only when every reference is given back.
#[tokio::test]
async fn zarr_inodes_are_released_on_forget() {
    let (fs, _) = fs_with_data().await;
    let zarr = fs.lookup(CONTROL_DIR_INO, "zarr").await.unwrap().ino;
    let base = fs.inode_count();
    let mut refs: std::collections::HashMap<u64, u64> = Default::default();
    let (mut dirs, mut files) = (vec![zarr], vec![]);
    while let Some(dir) = dirs.pop() {
        let listing = fs.readdir(dir).await.unwrap();
        assert_eq!(fs.inode_count(), base + refs.len(), "a listing takes no inode");
        for (name, _) in listing {
            let a = fs.lookup(dir, &name).await.unwrap();
            *refs.entry(a.ino).or_default() += 1;
            if a.kind == atlasfs::fs::core::Kind::Dir { dirs.push(a.ino) } else { files.push((dir, name, a.ino)) }
        }
    }
    assert!(files.len() > 40, "the walk reached the chunk files: {}", files.len());
    assert_eq!(fs.inode_count(), base + refs.len());
    // a chunk key past the grid, and one never written: ENOENT, no inode kept
    let mut parent = zarr;
    for name in ["d0", "v", "c", "0"] {
        parent = fs.lookup(parent, name).await.unwrap().ino;
        *refs.get_mut(&parent).expect("walked") += 1;
    }
    let row = parent;
    for absent in ["7", "x", "00"] {
        assert_eq!(fs.lookup(row, absent).await.err().map(|e| e.errno), Some(libc::ENOENT), "{absent}");
    }
    assert_eq!(fs.inode_count(), base + refs.len(), "failed lookups keep no inode");
    // a file looked up twice is released by the second FORGET only
    let (dir, name, ino) = files[0].clone();
    assert_eq!(fs.lookup(dir, &name).await.unwrap().ino, ino, "a live inode is reused");
    *refs.get_mut(&ino).unwrap() += 1;
    fs.forget(ino, 1);
    assert!(fs.getattr(ino).await.is_ok(), "one reference left");
    *refs.get_mut(&ino).unwrap() -= 1;
    for (&i, &n) in &refs {
        fs.forget(i, n);
    }
    assert_eq!(fs.inode_count(), base, "every zarr inode released");
    assert_eq!(fs.getattr(ino).await.err().map(|e| e.errno), Some(libc::ESTALE), "a released inode is stale");
    // READDIRPLUS: the entries the adapter sends are counted, and forgotten alike
    let d0 = fs.lookup(zarr, "d0").await.unwrap().ino;
    let listing = fs.readdir(d0).await.unwrap();
    assert_eq!(fs.inode_count(), base + 1);
    for (name, a) in &listing {
        fs.entry_sent(d0, name, a.ino);
        assert_eq!(fs.getattr(a.ino).await.unwrap().ino, a.ino, "{name}: a sent entry is live");
    }
    assert_eq!(fs.inode_count(), base + 1 + listing.len());
    for (_, a) in &listing {
        fs.forget(a.ino, 1);
    }
    fs.forget(d0, 1);
    assert_eq!(fs.inode_count(), base);
    // a node forgotten and looked up again: a new inode, the same content
    let again = fs.lookup(fs.lookup(zarr, "d0").await.unwrap().ino, "zarr.json").await.unwrap();
    assert!(again.size > 0 && again.ino != ino);
}

/// A file of `.atlasfs/zarr/` by path, `None` if it does not exist.
async fn zarr_file(fs: &AtlasFs, path: &str) -> Option<Vec<u8>> {
    let mut ino = fs.lookup(CONTROL_DIR_INO, "zarr").await.unwrap().ino;
    for name in path.split('/') {
        ino = fs.lookup(ino, name).await.ok()?.ino;
    }
    let o = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let bytes = fs.read(o.fh, 0, 1 << 30).await.unwrap();
    fs.release(o.fh).await.unwrap();
    Some(bytes)
}

/// A `_stacked` zarr chunk spans many datasets (as many as fit in ~4 MiB), each
/// read with its own chunking and fill: its bytes equal that box of the `.npy`
/// stack, whose datasets here are chunked two ways and filled two ways.
#[tokio::test]
async fn zarr_stacked_chunks_span_datasets() {
    let mut a = Atlas::create(Arc::new(InMemory::new()), Path::default(), StoreConfig::default()).await.unwrap();
    for (i, chunks, fill, rows) in [(0, [2, 4], None, 5), (1, [5, 6], None, 5), (2, [2, 4], Some(FillValue::Float(9.0)), 2), (3, [2, 4], None, 3)] {
        let mut d = a.create_dataset(&format!("d{i}")).await.unwrap();
        d.define_array::<f32>("v", vec!["x".into(), "y".into()], vec![5, 6], Some(chunks.to_vec()), fill).await.unwrap();
        let vals: Vec<f32> = (0..rows * 6).map(|k| (i * 100 + k) as f32).collect();
        d.write_array("v", vec![0, 0], ArrayD::from_shape_vec(IxDyn(&[rows, 6]), vals).unwrap().view()).await.unwrap();
    }
    a.flush().await.unwrap();
    // --zarr-stack-chunk 0: one dataset's chunk per zarr chunk.
    let one = AtlasFs::new(a.clone(), FsConfig { zarr_stack_chunk_bytes: 0, ..FsConfig::default() });
    let meta: serde_json::Value = serde_json::from_slice(&zarr_file(&one, "_stacked/v/zarr.json").await.unwrap()).unwrap();
    assert_eq!(meta["chunk_grid"]["configuration"]["chunk_shape"], serde_json::json!([1, 2, 4]), "--zarr-stack-chunk 0: one dataset per chunk");
    let c = zarr_file(&one, "_stacked/v/c/3/0/0").await.expect("d3 holds its first chunk");
    assert_eq!(&c[..4], &300f32.to_le_bytes(), "d3's first value");
    let fs = AtlasFs::new(a, FsConfig::default());
    let meta: serde_json::Value = serde_json::from_slice(&zarr_file(&fs, "_stacked/v/zarr.json").await.unwrap()).unwrap();
    assert_eq!(meta["chunk_grid"]["configuration"]["chunk_shape"], serde_json::json!([4, 2, 4]), "one chunk holds all four datasets");
    assert_eq!(meta["shape"], serde_json::json!([4, 5, 6]));
    let npy = {
        let ino = fs.lookup(STACKED_DIR_INO, "v.npy").await.unwrap().ino;
        let o = fs.open(ino, libc::O_RDONLY).await.unwrap();
        let b = fs.read(o.fh, 0, 1 << 20).await.unwrap();
        b[b.len() - 4 * 30 * 4..].to_vec()
    };
    let cell = |d: usize, x: usize, y: usize| &npy[(d * 30 + x * 6 + y) * 4..][..4];
    for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)] {
        let chunk = zarr_file(&fs, &format!("_stacked/v/c/0/{i}/{j}")).await.expect("present: d0 and d1 hold every chunk");
        assert_eq!(chunk.len(), 4 * 2 * 4 * 4, "full chunk shape, edges padded");
        for d in 0..4 {
            for x in 0..2 {
                for y in 0..4 {
                    let (gx, gy) = (i * 2 + x, j * 4 + y);
                    if gx < 5 && gy < 6 {
                        assert_eq!(&chunk[((d * 2 + x) * 4 + y) * 4..][..4], cell(d, gx, gy), "d{d} ({gx}, {gy})");
                    }
                }
            }
        }
    }
    assert!(zarr_file(&fs, "_stacked/v/c/1/0/0").await.is_none(), "past the dataset axis");
}
