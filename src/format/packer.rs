//! Lays chunks out in blocks the way atlas 0.10 does: raw chunk bytes are appended
//! to the open block in write order; once it holds 8 MiB or more it is compressed
//! and closed. Chunks never span blocks; a chunk addresses into the *decompressed*
//! block. Block ids run 0..n in file order and blocks sit back to back from offset 0.

use super::codec::BlockCompressor;
use super::{BlockId, BlockMeta, ChunkAddress, Codec};

/// Target decompressed block size (atlas 0.10: 8 MiB).
pub const BLOCK_TARGET: usize = 8 * 1024 * 1024;

#[derive(Debug)]
pub struct BlockPacker {
    codec: Codec,
    target: usize,
    open: Vec<u8>,
    /// The block being compressed, then the next `open`: block buffers (and the
    /// compressor's) are reused, not mapped afresh per 8 MiB block (see
    /// [`BlockCompressor`]).
    closing: Vec<u8>,
    compressor: BlockCompressor,
    /// Bytes of closed blocks, i.e. where the next closed block starts.
    closed_len: u64,
    pub blocks: Vec<BlockMeta>,
}

impl BlockPacker {
    pub fn new(codec: Codec) -> Self {
        Self::with_target(codec, BLOCK_TARGET)
    }

    pub fn with_target(codec: Codec, target: usize) -> Self {
        BlockPacker { codec, target, open: Vec::new(), closing: Vec::new(), compressor: BlockCompressor::default(), closed_len: 0, blocks: Vec::new() }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Id the open block will get when it closes.
    pub fn open_block_id(&self) -> u32 {
        self.blocks.len() as u32
    }

    /// The open (not yet compressed) block's bytes.
    pub fn open_block(&self) -> &[u8] {
        &self.open
    }

    /// Total bytes of closed blocks.
    pub fn closed_len(&self) -> u64 {
        self.closed_len
    }

    /// Appends one chunk. Returns its address and, when the append closed the block,
    /// the compressed block that the caller must write at the previous `closed_len()`.
    pub fn append(&mut self, raw: &[u8]) -> (ChunkAddress, Option<&[u8]>) {
        let addr = ChunkAddress { block_id: BlockId(self.open_block_id()), offset: self.open.len() as u32, size: raw.len() as u32 };
        self.open.extend_from_slice(raw);
        let closed = if self.open.len() >= self.target { self.close() } else { None };
        (addr, closed)
    }

    /// Records a block compressed elsewhere (`compressed_size` bytes, `raw_size`
    /// decompressed) as the next closed block, written by the caller at the current
    /// `closed_len()`. The open block must be empty: chunks never span blocks, and
    /// blocks stay in file order.
    pub fn push_closed(&mut self, compressed_size: u64, raw_size: u64) -> BlockId {
        assert!(self.open.is_empty(), "push_closed with an open block");
        let id = BlockId(self.blocks.len() as u32);
        self.blocks.push(BlockMeta { id, file_offset: self.closed_len, compressed_size, uncompressed_size: raw_size, codec: self.codec.id() });
        self.closed_len += compressed_size;
        id
    }

    /// Closes the open block if it holds anything; returns its compressed bytes
    /// (valid until the next call).
    pub fn close(&mut self) -> Option<&[u8]> {
        if self.open.is_empty() {
            return None;
        }
        std::mem::swap(&mut self.open, &mut self.closing);
        self.open.clear();
        let z = self.compressor.compress(self.codec, &self.closing);
        self.blocks.push(BlockMeta {
            id: BlockId(self.blocks.len() as u32),
            file_offset: self.closed_len,
            compressed_size: z.len() as u64,
            uncompressed_size: self.closing.len() as u64,
            codec: self.codec.id(),
        });
        self.closed_len += z.len() as u64;
        Some(z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::codec::decompress_block;

    #[test]
    fn blocks_close_at_target_and_chunks_never_span() {
        let mut p = BlockPacker::with_target(Codec::Lz4, 100);
        let mut file = vec![];
        let mut addrs = vec![];
        for i in 0..5u8 {
            let (a, closed) = p.append(&[i; 60]);
            addrs.push(a);
            if let Some(z) = closed {
                file.extend(z);
            }
        }
        file.extend(p.close().unwrap());
        // 60 → open, 120 → close; so blocks of 2,2,1 chunks
        assert_eq!(p.blocks.len(), 3);
        assert_eq!(addrs[1], ChunkAddress { block_id: BlockId(0), offset: 60, size: 60 });
        assert_eq!(addrs[4].block_id, BlockId(2));
        let b = &p.blocks[1];
        let raw = decompress_block(&b.codec, &file[b.file_offset as usize..(b.file_offset + b.compressed_size) as usize], b.uncompressed_size as usize).unwrap();
        assert_eq!(&raw[60..120], &[3u8; 60]);
        assert_eq!(p.blocks.last().unwrap().file_offset + p.blocks.last().unwrap().compressed_size, file.len() as u64);
    }
}
