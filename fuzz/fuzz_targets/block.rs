//! Block decompression and chunk decoding (src/format/codec.rs, cells.rs), driven
//! the way a corrupt layer drives them: the codec, the uncompressed size and the
//! element count come from a footer, the bytes from the file.
#![no_main]

mod limit;

use atlasfs::format::cells::Cells;
use atlasfs::format::codec::decompress_block;
use atlasfs::format::{CodecId, DType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let codec = match data[0] % 4 {
        0 => CodecId::None,
        1 => CodecId::Named("zstd".into()),
        2 => CodecId::Named("lz4".into()),
        _ => CodecId::Named("brotli".into()),
    };
    let dtype = match data[1] % 4 {
        0 => DType::Float64,
        1 => DType::String,
        2 => DType::Bool,
        _ => DType::FixedSizeList { child: Box::new(DType::Int16), size: 3 },
    };
    // A footer's u64 size and a chunk's element count, both untrusted.
    let size = u64::from_le_bytes(data[2..10].try_into().unwrap());
    let n = (size >> 32) as usize;
    if let Ok(raw) = decompress_block(&codec, &data[10..], size as usize) {
        let _ = Cells::decode(&dtype, &raw, n);
        let _ = Cells::decode(&dtype, &raw, raw.len() / 8);
    }
    let _ = Cells::decode(&dtype, &data[10..], n);
});
