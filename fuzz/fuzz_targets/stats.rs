//! `data.stats` (src/format/footer.rs `decode_stats`): trailer and rkyv validation.
#![no_main]

mod limit;

use atlasfs::format::footer::{decode_stats, encode_stats};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = decode_stats(data) {
        // Compared as bytes: a NaN min or max is not equal to itself.
        let once = encode_stats(&s);
        assert_eq!(encode_stats(&decode_stats(&once).expect("re-encoded stats decode")), once);
    }
});
