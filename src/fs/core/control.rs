//! The control files under `.atlasfs/`: compact, flush, stats.

use super::*;

impl AtlasFs {
    /// Runs a compaction now (flushing first).
    pub async fn compact(&self) -> FsResult<()> {
        self.writable()?;
        self.atlas.compact_shared().await?;
        // Compaction rewrites every array file; spool files are rebuilt from the new ones.
        if let Some(s) = &self.spool {
            s.clear();
        }
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters.last_compaction_unix.store(unix_now(), Ordering::Relaxed);
        Ok(())
    }

    /// JSON counters for `.atlasfs/stats`.
    pub async fn stats_json(&self) -> String {
        let writeback = self.writeback_stats().await;
        let c = &self.counters;
        let bc = &self.atlas.block_cache().counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let v = serde_json::json!({
            "store": self.atlas.location(),
            "datasets": self.atlas.list_datasets().len(),
            "cache": {
                "hits": l(&bc.hits), "misses": l(&bc.misses),
                "bytes_fetched": l(&bc.bytes_fetched), "bytes_decoded": l(&bc.bytes_decoded),
                "decoded_bytes_held": self.atlas.block_cache().weighted_size(),
                "pooled_bytes": self.atlas.block_cache().pooled_bytes(),
            },
            "disk_cache": self.atlas.block_cache().disk.as_ref().map(|d| serde_json::json!({
                "hits": l(&d.counters.hits), "misses": l(&d.counters.misses),
                "bytes_written": l(&d.counters.bytes_written), "evictions": l(&d.counters.evictions),
                "bytes_held": d.size(),
            })),
            "reads": l(&c.reads), "bytes_read": l(&c.bytes_read),
            "writes": l(&c.writes), "bytes_written": l(&c.bytes_written),
            "arrays_committed": l(&c.commits),
            "files_being_written": self.staged.lock().len(),
            "flushes": l(&c.flushes), "refreshes": l(&c.refreshes), "last_flush_unix": l(&c.last_flush_unix),
            "compactions": l(&c.compactions), "last_compaction_unix": l(&c.last_compaction_unix),
            "passthrough": self.passthrough_enabled(),
            "spool": self.spool.as_ref().map(|s| serde_json::json!({
                "dir": s.path().display().to_string(), "budget": s.budget(), "bytes_held": s.used(), "files": s.len(),
                "hits": l(&s.counters.hits), "fills": l(&s.counters.misses), "built": l(&s.counters.built),
                "evicted": l(&s.counters.evicted), "damaged": l(&s.counters.damaged), "failed_writes": l(&s.counters.failed),
            })),
            "writeback": writeback,
            "auto_compaction": self.autocompact_stats(),
            "encoder": self.encoder_stats(),
        });
        let mut s = serde_json::to_string_pretty(&v).expect("json");
        s.push('\n');
        s
    }
}
