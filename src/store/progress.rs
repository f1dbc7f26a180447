//! Progress of long store operations, for whoever shows it (the CLI's bars).
//!
//! The store never draws anything. A caller that wants progress runs the
//! operation inside [`scope`] with its own [`Progress`] sink; the store's loops
//! then report through it: [`start`] when a phase of known size begins (a flush
//! writing its sidecars, a compaction) and [`advance`] as bytes get done (a chunk
//! encoded by a write, read by a read, a piece of a sidecar uploaded, an array file
//! compacted). Outside a scope both are a no-op costing one task-local lookup, so
//! the mount's hot paths pay nothing measurable. The sink lives in a tokio
//! task-local: work the store hands to other tasks (read-ahead, block decodes)
//! reports nothing; the loops that report run in the caller's task.

use std::future::Future;
use std::sync::Arc;

/// Receives progress reports. Implementations must be cheap: `advance` is called
/// once per chunk.
pub trait Progress: Send + Sync {
    /// A phase begins: `what` in the user's words ("writing", "compacting") and
    /// its size in bytes (0 when unknown).
    fn start(&self, what: &str, total_bytes: u64);
    /// `bytes` more of the current phase are done.
    fn advance(&self, bytes: u64);
}

tokio::task_local! {
    static SINK: Arc<dyn Progress>;
}

/// Runs `f` with `sink` receiving the progress of the store operations it awaits.
pub async fn scope<F: Future>(sink: Arc<dyn Progress>, f: F) -> F::Output {
    SINK.scope(sink, f).await
}

/// Reports the start of a phase to the current scope's sink, if any.
pub fn start(what: &str, total_bytes: u64) {
    let _ = SINK.try_with(|s| s.start(what, total_bytes));
}

/// Reports bytes done to the current scope's sink, if any.
pub fn advance(bytes: u64) {
    let _ = SINK.try_with(|s| s.advance(bytes));
}

/// Spreads one unit of work's `bytes` over its steps (an array file's bytes over
/// the chunks a compaction copies): each [`step`](Share::step) reports its share,
/// and whatever is left is reported when the share is dropped, on every path.
pub struct Share {
    bytes: u64,
    parts: u64,
    done: u64,
    reported: u64,
}

impl Share {
    pub fn new(bytes: u64) -> Share {
        Share { bytes, parts: 0, done: 0, reported: 0 }
    }

    /// The number of steps, once known.
    pub fn set_parts(&mut self, parts: u64) {
        self.parts = parts;
    }

    /// One step done.
    pub fn step(&mut self) {
        self.done += 1;
        if self.parts == 0 {
            return;
        }
        let upto = (self.bytes as u128 * self.done.min(self.parts) as u128 / self.parts as u128) as u64;
        advance(upto - self.reported);
        self.reported = upto;
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        advance(self.bytes - self.reported);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<(String, u64)>>);
    impl Progress for Log {
        fn start(&self, what: &str, total: u64) {
            self.0.lock().unwrap().push((what.to_string(), total));
        }
        fn advance(&self, bytes: u64) {
            self.0.lock().unwrap().push(("+".to_string(), bytes));
        }
    }

    #[tokio::test]
    async fn reports_reach_the_scope_sink_only() {
        advance(5); // outside any scope: dropped
        let log = Arc::new(Log::default());
        scope(log.clone(), async {
            start("writing", 10);
            advance(4);
            tokio::task::yield_now().await;
            advance(6);
        })
        .await;
        advance(7);
        let log2 = Arc::new(Log::default());
        scope(log2.clone(), async {
            let mut share = Share::new(10);
            share.set_parts(3);
            share.step();
            share.step();
        })
        .await;
        let got: Vec<u64> = log2.0.lock().unwrap().iter().map(|(_, n)| *n).collect();
        assert_eq!(got, vec![3, 3, 4], "two steps of three, then the rest at drop");
        assert_eq!(*log.0.lock().unwrap(), vec![("writing".to_string(), 10), ("+".to_string(), 4), ("+".to_string(), 6)]);
    }
}
