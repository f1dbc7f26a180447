//! The metadata file (src/store/meta.rs): all six `atlas.{json,msgpack}[.zst|.lz4]`
//! variants, decompression included. The first byte picks the variant.
#![no_main]

mod limit;

use atlasfs::store::meta::MetaFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let file = MetaFile::ALL[pick as usize % MetaFile::ALL.len()];
    if let Ok(m) = file.decode(rest) {
        // What decodes must save again (JSON refuses only non-finite floats).
        if let Ok(b) = file.encode(&m) {
            let _ = file.decode(&b).expect("re-encoded metadata decodes");
        }
    }
});
