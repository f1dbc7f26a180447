//! Layer footers (src/format/footer.rs): trailer, rkyv validation, version, and
//! the index the store builds over a footer (`Layer::from_footer`), which checks
//! every block and chunk address against the file size.
#![no_main]

mod limit;

use atlasfs::format::footer::{decode_footer, encode_footer};
use atlasfs::store::layer::Layer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = decode_footer(data) {
        let _ = Layer::from_footer(1, "a/data.af".into(), f.overlay_index, data.len() as u64, None, f.clone());
        // A decoded footer re-encodes to a footer that decodes to the same value
        // (compared as bytes: a NaN attribute is not equal to itself).
        let once = encode_footer(&f);
        assert_eq!(encode_footer(&decode_footer(&once).expect("re-encoded footer decodes")), once);
    }
});
