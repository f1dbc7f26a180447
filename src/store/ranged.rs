//! Ranged reads of a layer file at the link's speed, not one connection's.
//!
//! An atlas block is up to ~8 MiB compressed. One GET of it pays a round trip and
//! then streams over one connection, which is slower than the link (a TCP window per
//! round trip; a server that serves one request on one core). So a range longer than
//! a part is split into parts fetched concurrently, each copied into place in one
//! buffer as it arrives, in whatever order the parts complete.
//!
//! The part size follows the bandwidth-delay product of one connection, as measured
//! on the requests made so far (moving averages of the time to the first byte and of
//! the rate a body streams at): a part streams for about as long as it waited to
//! start, so the wait is at most half of each request and the parts in flight keep
//! the link busy. Between [`MIN_PART`] and [`MAX_PART`]; [`START_PART`] until measured.
//! Requests in flight across the process are bounded by [`IN_FLIGHT`] permits.
//!
//! Failures: object_store retries each part (5xx, resets, short bodies) within
//! `--retries` and `--retry-timeout`; a part that still fails fails the range, and the
//! other parts are dropped with it. Dropping the future (an abandoned read-ahead)
//! drops every part in flight and returns their permits; nothing is left running.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};

/// Smallest part a range is split into.
pub const MIN_PART: u64 = 512 << 10;
/// Largest part: an 8 MiB block is always at least two requests.
pub const MAX_PART: u64 = 4 << 20;
/// Part size before anything was measured.
pub const START_PART: u64 = 1 << 20;
/// Ranged GETs in flight at once, across every layer of the process.
pub const IN_FLIGHT: usize = 32;

static PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(IN_FLIGHT);

/// Moving averages over the requests made so far: microseconds to the first byte,
/// and bytes per second of a body (sampled on bodies of at least `MIN_PART / 2`).
static TTFB_US: AtomicU64 = AtomicU64::new(0);
static RATE: AtomicU64 = AtomicU64::new(0);

fn average(a: &AtomicU64, sample: u64) {
    let old = a.load(Ordering::Relaxed);
    a.store(if old == 0 { sample } else { (old * 3 + sample) / 4 }, Ordering::Relaxed);
}

/// The part size for the link as measured: one connection's bandwidth-delay product.
pub fn part_size() -> u64 {
    let (t, r) = (TTFB_US.load(Ordering::Relaxed), RATE.load(Ordering::Relaxed));
    if t == 0 || r == 0 {
        return START_PART;
    }
    ((r as u128 * t as u128 / 1_000_000) as u64).clamp(MIN_PART, MAX_PART)
}

/// How `range` is cut into parts of about `part` bytes (the last ones evened out).
pub fn split(range: Range<u64>, part: u64) -> Vec<Range<u64>> {
    let len = range.end - range.start;
    let n = len.div_ceil(part.max(1)).max(1);
    let each = len.div_ceil(n);
    (0..n).map(|i| range.start + i * each..(range.start + (i + 1) * each).min(range.end)).filter(|r| !r.is_empty()).collect()
}

/// One ranged GET (conditional on `if_match`), measured for [`part_size`].
async fn get_one(store: &dyn ObjectStore, path: &Path, range: Range<u64>, if_match: Option<String>) -> object_store::Result<Bytes> {
    let _permit = PERMITS.acquire().await.expect("the semaphore is never closed");
    let t0 = Instant::now();
    let opts = GetOptions { range: Some(GetRange::Bounded(range)), if_match, ..Default::default() };
    let got = store.get_opts(path, opts).await?;
    let t1 = Instant::now();
    let bytes = got.bytes().await?;
    average(&TTFB_US, (t1 - t0).as_micros() as u64);
    let body = t1.elapsed().as_micros() as u64;
    if bytes.len() as u64 >= MIN_PART / 2 && body > 0 {
        average(&RATE, bytes.len() as u64 * 1_000_000 / body);
    }
    Ok(bytes)
}

/// Bytes `range` of `path`, in concurrent parts when it is longer than one part.
pub async fn get_range(store: &dyn ObjectStore, path: &Path, range: Range<u64>, if_match: Option<String>) -> object_store::Result<Bytes> {
    let parts = split(range.clone(), part_size());
    if parts.len() <= 1 {
        return get_one(store, path, range, if_match).await;
    }
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    let mut fetched = futures::stream::iter(parts.into_iter().map(|p| {
        let if_match = if_match.clone();
        async move { (p.clone(), get_one(store, path, p, if_match).await) }
    }))
    .buffer_unordered(IN_FLIGHT);
    while let Some((p, got)) = fetched.next().await {
        let got = got?;
        let at = (p.start - range.start) as usize;
        // A short part is left for the caller's length check; never written past.
        let n = got.len().min((p.end - p.start) as usize);
        buf[at..at + n].copy_from_slice(&got[..n]);
        if n < (p.end - p.start) as usize {
            buf.truncate(at + n);
            return Ok(Bytes::from(buf));
        }
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_into_even_parts_that_cover_them() {
        assert_eq!(split(0..10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(split(5..6, 4), vec![5..6]);
        let parts = split(100..(100 + (8 << 20) + 17), 1 << 20);
        assert_eq!(parts.len(), 9);
        assert_eq!(parts.first().unwrap().start, 100);
        assert_eq!(parts.last().unwrap().end, 100 + (8 << 20) + 17);
        assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
    }
}
