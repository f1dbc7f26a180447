//! The `.npy` reader (src/fs/npy.rs): header parsing from a slice and from a
//! reader, descr interpretation, and whole-file decoding (byte swaps, Fortran
//! transposition, strings), as the mount does for every written file.
#![no_main]

mod limit;

use atlasfs::fs::npy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let from_slice = npy::parse(data);
    let from_reader = npy::read_header(&mut &data[..]);
    // The two parsers must agree on what a header is.
    if let (Ok(a), Ok(b)) = (&from_slice, &from_reader) {
        assert_eq!(a, b, "parse and read_header disagree");
    }
    if let Ok(h) = from_slice {
        let _ = h.element_count();
        let _ = h.data_len();
        if let Ok(et) = h.element_type() {
            let mut rest = data[h.header_len.min(data.len())..].to_vec();
            if et.is_fixed_width() {
                let whole = rest.len() / et.itemsize.max(1) * et.itemsize;
                et.fix_in_place(&mut rest[..whole]);
            }
        }
        if let Ok(a) = npy::decode(data.to_vec()) {
            // What decodes must encode again (the mount serves it back).
            let _ = npy::encode(&a.dtype, &a.shape, &a.cells);
        }
    }
});
