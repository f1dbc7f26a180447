//! Blocks encoded outside the array file, adopted into its pending layer.
//!
//! A writer that has the whole new version of an entry in hand (the mount's
//! pipelined encoder, `fs::core::encoder`) compresses its blocks on every core, into
//! a file of its own, while the bytes still arrive. The commit then only has to make
//! them part of the pending layer: [`ArrayFile::adopt_encoded`] appends the blocks
//! after the pending layer's closed blocks (the file itself becomes the spill file
//! when the pending layer holds nothing yet, so nothing is copied) and points the
//! entry's chunks at them, with the summaries taken at encode time. The blocks are
//! laid out exactly as the packer lays them out: whole chunks, back to back, ids in
//! file order; what the flush uploads is indistinguishable from a serial encode.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{ArrayFile, PendingEntry};
use crate::format::stats::ChunkSummary;
use crate::format::{BlockId, ChunkAddress, Codec};
use crate::store::{ErrorDetail, Result};

/// One block of [`EncodedBlocks`]: where it sits in their file, and its chunks.
#[derive(Debug, Clone)]
pub struct EncodedBlock {
    pub file_offset: u64,
    pub compressed_size: u64,
    pub raw_size: u64,
    /// (chunk coordinate, offset and size in the decompressed block, summary).
    /// Empty for a block whose chunks were superseded (written again later): it stays
    /// in the file as dead bytes, like the chunks a rollback leaves in the spill file.
    pub chunks: Vec<(Vec<u32>, u32, u32, ChunkSummary)>,
}

/// Compressed blocks of one entry's every chunk, back to back from offset 0 of `file`.
#[derive(Debug)]
pub struct EncodedBlocks {
    pub codec: Codec,
    pub file: File,
    /// In file order, covering `0..len` without gaps.
    pub blocks: Vec<EncodedBlock>,
    /// The multipart upload of `file` begun while encoding (`upload.rs`), kept if
    /// `file` becomes the spill file, else aborted.
    pub upload: Option<super::EarlyUpload>,
}

impl ArrayFile {
    /// Appends `enc`'s blocks to the pending layer and makes them `name`'s chunks
    /// (the entry must be defined in the pending layer already, as
    /// [`crate::store::DatasetView::replace_array`] does).
    pub fn adopt_encoded(&mut self, name: &str, enc: EncodedBlocks) -> Result<()> {
        if enc.codec != self.codec {
            return Err(ErrorDetail::Invalid(format!("blocks encoded with {:?} for an array file of {:?}", enc.codec, self.codec)).into());
        }
        let mut off = 0;
        for b in &enc.blocks {
            if b.file_offset != off {
                return Err(ErrorDetail::Invalid(format!("encoded blocks of {name:?} are not back to back at {off}")).into());
            }
            off += b.compressed_size;
        }
        let spec = self.pending.entries.get(name).map(|e| e.spec.clone()).ok_or_else(|| self.not_found(name))?;
        self.pending.close_block()?;
        let base = self.pending.packer.closed_len();
        if base == 0 && self.pending.spill.is_none() {
            self.pending.spill = Some(enc.file);
            *self.pending.upload.lock() = enc.upload;
        } else {
            // Another entry's blocks came first: copy ours after them.
            let spill = match &self.pending.spill {
                Some(f) => f,
                None => self.pending.spill.insert(super::spill_file(self.spill_dir.as_deref())?),
            };
            let mut buf = vec![0u8; 8 << 20];
            let mut at = 0;
            while at < off {
                let n = buf.len().min((off - at) as usize);
                enc.file.read_exact_at(&mut buf[..n], at)?;
                spill.write_all_at(&buf[..n], base + at)?;
                at += n as u64;
            }
        }
        let e = self.pending.entries.entry(name.to_string()).or_insert_with(|| PendingEntry::new(spec, false, false));
        for b in enc.blocks {
            let BlockId(id) = self.pending.packer.push_closed(b.compressed_size, b.raw_size);
            for (coord, offset, size, summary) in b.chunks {
                if e.chunks.insert(coord.clone(), ChunkAddress { block_id: BlockId(id), offset, size }).is_none() {
                    e.order.push(coord.clone());
                }
                e.summaries.insert(coord, summary);
            }
        }
        Ok(())
    }
}
