//! What a flush commits must agree with itself at every instant: the metadata
//! file it writes and the sidecars it writes are one snapshot, even while other
//! tasks define, replace and delete arrays. A fresh handle on the directory
//! (what a process started after a `kill -9` would see) must read every array
//! the metadata declares, at any moment, not only between flushes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{ArrayDef, Atlas, Cells, DType, StoreConfig};

fn cells(d: usize, a: usize, v: u64, n: usize) -> Cells {
    let base = ((d as i64 * 100 + a as i64) * 100_000 + v as i64) * 1_000_000;
    Cells::Fixed { elsize: 8, bytes: (0..n as i64).flat_map(|i| (base + i).to_le_bytes()).collect() }
}

/// Every declared array of every dataset reads whole, as one version it could hold.
async fn check(path: &std::path::Path) -> Result<usize, String> {
    let a = Atlas::open_path(path).await.map_err(|e| format!("open: {e}"))?;
    let mut n = 0;
    for ds in a.list_datasets() {
        let view = a.open_dataset(&ds).await.map_err(|e| format!("{ds}: {e}"))?;
        for arr in view.list_arrays() {
            let schema = view.array_meta(&arr).expect("listed");
            let (shape, got) =
                view.read_cells(&arr, &[], &[]).await.map_err(|e| format!("{ds}/{arr} (declared {:?}): {e}", schema.shape))?.ok_or(format!("{ds}/{arr} vanished"))?;
            let Cells::Fixed { bytes, .. } = got else { return Err(format!("{ds}/{arr}: not fixed-width")) };
            let first = i64::from_le_bytes(bytes[..8].try_into().unwrap());
            let v = (first / 1_000_000) % 100_000;
            if shape[0] != 1 + (v as usize % 3) || cells(ds[1..].parse().unwrap(), arr[1..].parse().unwrap(), v as u64, bytes.len() / 8).encode() != bytes {
                return Err(format!("{ds}/{arr}: shape {shape:?} does not hold version {v} whole"));
            }
            n += 1;
        }
    }
    Ok(n)
}

#[test]
fn a_fresh_handle_always_reads_what_the_metadata_declares() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(3).enable_all().build().unwrap();
    let iters: usize = std::env::var("ATLASFS_FLUSH_RACE_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(40_000);
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let atlas = Atlas::create_path(&path, StoreConfig::default()).await.unwrap();
        for d in 0..3 {
            atlas.create_dataset_shared(&format!("d{d}")).await.unwrap();
        }
        atlas.flush_shared().await.unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let atlas = atlas.clone();
            tokio::spawn(async move {
                let mut versions = std::collections::HashMap::new();
                let mut seed = 0x9e3779b97f4a7c15u64;
                let mut rnd = move |n: u64| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed % n
                };
                for _ in 0..iters {
                    let (d, a) = (rnd(3) as usize, rnd(4) as usize);
                    let view = atlas.open_dataset(&format!("d{d}")).await.unwrap();
                    let name = format!("a{a}");
                    if rnd(10) < 2 {
                        if view.list_arrays().contains(&name) {
                            view.delete_array_shared(&name).await.unwrap();
                        }
                    } else {
                        let v = versions.entry((d, a)).or_insert(0u64);
                        *v += 1;
                        let shape = vec![1 + (*v as usize % 3), [3, 5, 8][rnd(3) as usize]];
                        let n = shape.iter().product();
                        let def = ArrayDef { dtype: DType::Int64, dimension_names: vec!["r".into(), "c".into()], shape: shape.clone(), chunk_shape: None, fill: None };
                        view.replace_array(&name, def, [Ok((vec![0, 0], shape, cells(d, a, *v, n)))]).await.unwrap();
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        let flusher = {
            let (atlas, done) = (atlas.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Acquire) {
                    atlas.flush_shared().await.unwrap();
                    // What a flush leaves stays on disk until the next one: long
                    // enough for the checker to see it (as a crash would keep it).
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut checks = 0;
        while !writer.is_finished() {
            if let Err(e) = check(&path).await {
                done.store(true, Ordering::Release);
                panic!("after {checks} good checks, a fresh handle could not read what the metadata declares: {e}");
            }
            checks += 1;
        }
        done.store(true, Ordering::Release);
        writer.await.unwrap();
        flusher.await.unwrap();
        atlas.flush_shared().await.unwrap();
        assert!(check(&path).await.unwrap() > 0, "nothing was left to check");
        assert!(checks > 5, "only {checks} checks ran while writing");
    });
}
