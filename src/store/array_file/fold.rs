//! Folding: automatic compaction of one array file, off the request path.
//!
//! Design (see docs/format.md#automatic-compaction for why each state reads the same).
//! - A fold rewrites the base and a *prefix* of the sidecars (`data.af`, `data.1.af`
//!   … `data.j.af`) as one new base, and leaves every newer sidecar in place above it.
//!   Folding a prefix never changes what a reader resolves: the new base holds, for
//!   every entry live as of sidecar j, exactly the chunks the walk down to the base
//!   found before, and the sidecars above j are read first as before.
//! - The prefix ends before the first sidecar that may not be committed yet: one set
//!   aside or torn (`ignored`), one a refresh just loaded that an open descriptor may
//!   still read without (`recent`), one holding another writer's version of a dataset
//!   with changes pending here (`clashes`), and — for sidecars another process wrote —
//!   one not older than the metadata file (no metadata commit has followed it yet; the
//!   times are both the store's). Sidecars this process committed are settled.
//! - Nothing is held locked while the new base is built and uploaded (under a temporary
//!   name): reads and writes of the array go on. The array file's write lock is taken
//!   only to check that the folded layers are still the ones held, rename the new base
//!   over `data.af` and swap the layers in memory. The folded sidecars are then
//!   deleted lowest first, as explicit compaction does (every remaining set is a
//!   suffix, which reads the same), and `data.stats` is left alone: a fold changes no
//!   value.
//! - Until they are deleted the folded sidecars are listed as ignored, so a refresh
//!   (a flush's) does not take them for another writer's new layers.
//! - Coordination with other compactors (another daemon) is the caller's: the lease in
//!   [`crate::store::lease`], checked before the rename and before the deletes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::*;

/// Temporary name of a new base being uploaded by a fold (not `data.af.compacting`,
/// which explicit compaction uses).
const FOLD_TMP: &str = "data.af.folding";

/// What one fold will rewrite: the layers held when it was planned.
pub struct FoldPlan {
    store: Arc<dyn ObjectStore>,
    cache: Arc<BlockCache>,
    codec: Codec,
    dir: Path,
    layers: Vec<Arc<Layer>>,
}

/// The new base, built: its blocks in a temp file, and its footer.
pub struct FoldedBase {
    footer: Footer,
    spill: File,
    data_len: u64,
}

/// One object of the array file's directory as listed: ETag and last change.
pub type Listed = BTreeMap<u32, (Option<String>, DateTime<Utc>)>;

impl FoldPlan {
    /// Sidecars this fold removes.
    pub fn sidecars(&self) -> usize {
        self.layers.len() - 1
    }

    /// Builds the new base from the planned layers (no lock held).
    pub async fn build(&self) -> Result<FoldedBase> {
        let layers = &self.layers;
        // Live entries in first-seen order; a delete drops one, a re-define re-appends it.
        let mut order: IndexMap<String, ()> = IndexMap::new();
        for l in layers {
            for e in &l.footer.entries {
                if e.deleted {
                    order.shift_remove(&e.name);
                } else if !order.contains_key(&e.name) {
                    order.insert(e.name.clone(), ());
                }
            }
        }
        let mut packer = BlockPacker::new(self.codec);
        let mut spill = tempfile::tempfile()?;
        let mut entries = vec![];
        for name in order.keys() {
            // The walk of `resolve`, over the planned layers only (no pending layer).
            let (spec, held) = live_layers(layers.iter().rev(), name, None);
            let Some(spec) = spec else { continue };
            let grid = spec.grid();
            let mut seen = HashSet::new();
            let mut chunks = vec![];
            for l in held.iter().rev() {
                let e = l.entry(name).expect("held layers mention the entry");
                for c in &e.layout.storage.chunks {
                    if !grid.contains(&c.coord) || !seen.insert(c.coord.clone()) {
                        continue;
                    }
                    // The newest held layer with this chunk has its current bytes.
                    let (l, a) = held.iter().find_map(|l| l.chunk(name, &c.coord).map(|a| (*l, a))).expect("a held layer has it");
                    let b = l.block(a.block_id.0).expect("addresses were validated when the layer was indexed").clone();
                    let block = self.cache.layer_block(&*self.store, l, &b).await?;
                    let raw = block.slice(a.offset as usize..(a.offset + a.size) as usize);
                    let (address, closed) = packer.append(&raw);
                    if let Some(z) = closed {
                        spill.write_all(z)?;
                    }
                    chunks.push(ChunkEntry { coord: c.coord.clone(), address });
                }
            }
            entries.push(spec.to_meta(name, false, chunks));
        }
        if let Some(z) = packer.close() {
            spill.write_all(z)?;
        }
        let mut footer = Footer::empty();
        footer.blocks = packer.blocks.clone();
        footer.entries = entries;
        footer.attr_keys = layers.iter().flat_map(|l| l.footer.attr_keys.clone()).collect();
        footer.attr_values = layers.iter().flat_map(|l| l.footer.attr_values.clone()).collect();
        if footer.attr_keys.len() != footer.attr_values.len() {
            footer.attr_keys.clear();
            footer.attr_values.clear();
        }
        Ok(FoldedBase { footer, spill, data_len: packer.closed_len() })
    }

    fn tmp(&self) -> Path {
        self.dir.clone().join(FOLD_TMP)
    }

    /// Uploads the new base under its temporary name (one PUT, or a multipart upload
    /// for a large one) and checks the size the store kept.
    pub async fn upload(&self, built: &FoldedBase) -> Result<u64> {
        let tail = encode_footer(&built.footer);
        let tmp = self.tmp();
        let want = built.data_len + tail.len() as u64;
        if want <= SINGLE_PUT_LIMIT {
            let mut body = vec![0u8; built.data_len as usize];
            built.spill.read_exact_at(&mut body, 0)?;
            body.extend_from_slice(&tail);
            self.store.put(&tmp, PutPayload::from(body)).await?;
        } else {
            let upload = self.store.put_multipart(&tmp).await?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, 8 * 1024 * 1024);
            let mut off = 0u64;
            while off < built.data_len {
                let len = (8u64 << 20).min(built.data_len - off);
                let mut buf = vec![0u8; len as usize];
                built.spill.read_exact_at(&mut buf, off)?;
                w.wait_for_capacity(4).await?;
                w.write(&buf);
                off += len;
            }
            w.write(&tail);
            w.finish().await?;
        }
        let got = self.store.head(&tmp).await?.size;
        if got != want {
            let source = crate::format::FormatError::Invalid(format!("the store kept {got} of the {want} bytes written"));
            return Err(ErrorDetail::Corrupt { path: tmp.to_string(), source }.into());
        }
        Ok(want)
    }

    /// Removes the temporary base of a fold that stopped before its rename.
    pub async fn discard(&self) {
        let _ = self.store.delete(&self.tmp()).await;
    }

    /// Deletes the folded sidecars, lowest first (each remaining set is a suffix of
    /// the old stack over the new base, which reads the same).
    pub async fn delete_folded(&self, lease: &crate::store::lease::Lease) -> Result<()> {
        for l in &self.layers[1..] {
            lease.check(std::time::Duration::from_secs(5)).await?;
            match self.store.delete(&l.path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl ArrayFile {
    /// Committed sidecars held (set-aside and torn files not counted).
    pub fn sidecar_count(&self) -> usize {
        self.layers.iter().filter(|l| l.overlay > 0).count()
    }

    /// The fold to make now, if at least one sidecar can be folded: the base and the
    /// longest prefix of sidecars that are settled (module notes). `listed` is a LIST
    /// of the directory just made, `meta_modified` when the metadata file last changed.
    pub fn fold_plan(&self, listed: &Listed, meta_modified: Option<DateTime<Utc>>) -> Option<FoldPlan> {
        if self.staged.is_some() {
            return None;
        }
        let base = self.layers.first().filter(|l| l.overlay == 0)?;
        let same = |l: &Layer| listed.get(&l.overlay).is_some_and(|(tag, _)| l.e_tag.is_none() || tag.is_none() || *tag == l.e_tag);
        if !same(base) {
            return None; // replaced since we read it: the next refresh catches up first
        }
        let held: BTreeSet<u32> = self.layers.iter().map(|l| l.overlay).collect();
        let mut stop = u32::MAX;
        stop = stop.min(self.ignored.keys().next().copied().unwrap_or(u32::MAX));
        stop = stop.min(self.recent.values().flatten().min().copied().unwrap_or(u32::MAX));
        stop = stop.min(self.clashes.values().flatten().min().copied().unwrap_or(u32::MAX));
        // A listed sidecar we do not hold (written since our last refresh) below a held one.
        stop = stop.min(listed.keys().find(|n| **n > 0 && !held.contains(n)).copied().unwrap_or(u32::MAX));
        let mut take = vec![base.clone()];
        for l in self.layers.iter().skip(1) {
            if l.overlay >= stop || !same(l) {
                break;
            }
            let lm = listed.get(&l.overlay).map(|(_, t)| *t);
            let settled = self.committed_here.contains(&l.overlay) || matches!((lm, meta_modified), (Some(s), Some(m)) if s < m);
            if !settled {
                break;
            }
            take.push(l.clone());
        }
        (take.len() >= 2).then(|| FoldPlan { store: self.store.clone(), cache: self.cache.clone(), codec: self.codec, dir: self.dir.clone(), layers: take })
    }

    /// Under the write lock: renames the uploaded base over `data.af` and swaps it in
    /// for the folded layers, if they are still the ones held (the fold's `Ok(false)`
    /// otherwise: nothing changed on the store). The folded sidecars are then listed
    /// as ignored until [`Self::forget_folded`].
    pub async fn install_fold(&mut self, plan: &FoldPlan, built: FoldedBase, size: u64, lease: &crate::store::lease::Lease) -> Result<bool> {
        let n = plan.layers.len();
        if self.staged.is_some() || self.layers.len() < n || self.layers[..n].iter().zip(&plan.layers).any(|(a, b)| a.id != b.id) {
            return Ok(false);
        }
        lease.check(std::time::Duration::from_secs(10)).await?;
        let base = self.dir.clone().join(BASE_NAME);
        self.store.rename(&plan.tmp(), &base).await?;
        let e_tag = self.store.head(&base).await?.e_tag;
        let layer = Arc::new(Layer::from_footer(next_layer_id(), base, 0, size, e_tag, built.footer)?);
        let old: Vec<Arc<Layer>> = self.layers.splice(0..n, [layer]).collect();
        for l in old {
            self.cache.forget_layer(l.id);
            if l.overlay > 0 {
                self.committed_here.remove(&l.overlay);
                self.ignored.insert(l.overlay, (l.path.clone(), l.e_tag.clone()));
            }
        }
        self.base_exists = true;
        Ok(true)
    }

    /// After a flush whose metadata write failed: no sidecar counts as committed by
    /// this process any more (each is folded once a later metadata write follows it).
    pub fn forget_committed_here(&mut self) {
        self.committed_here.clear();
    }

    /// After the folded sidecars were deleted: they are no longer ignored.
    pub fn forget_folded(&mut self, plan: &FoldPlan) {
        for l in &plan.layers[1..] {
            if self.ignored.get(&l.overlay).is_some_and(|(p, _)| *p == l.path) {
                self.ignored.remove(&l.overlay);
            }
        }
    }
}

/// The layer files of a LIST of an array file's directory, by overlay number.
pub fn listed(objects: &[object_store::ObjectMeta]) -> Listed {
    let mut out = Listed::new();
    for o in objects {
        let n = match o.location.filename() {
            Some(BASE_NAME) => 0,
            Some(name) => match sidecar_number(name) {
                Some(n) => n,
                None => continue,
            },
            None => continue,
        };
        out.insert(n, (o.e_tag.clone(), o.last_modified));
    }
    out
}
