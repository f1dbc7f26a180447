//! Rust element types that map onto atlas dtypes, and their cell conversions.

use crate::format::cells::{self, Cells};
use crate::format::{DType, FillValue};

/// A Rust type that can be an array element. Fixed-width types are stored
/// little-endian; `String` and `Vec<u8>` as length-prefixed cells.
///
/// The required items are atlas-rust 0.10's (`DTYPE`, `encode_chunk`,
/// `decode_chunk`, `fill_element`), so a 0.10 program's own implementation builds
/// unchanged. The store moves elements as [`Cells`]; `to_cells`/`from_cells` derive
/// those from the chunk encoding, and the built-in types override them with direct
/// conversions.
pub trait ArrayElement: Clone + Send + Sync + 'static {
    const DTYPE: DType;
    /// A chunk's worth of values in the on-disk byte form (fixed-width: packed
    /// little-endian; variable-length: `N+1` u32 offsets, then the bytes).
    fn encode_chunk(values: &[Self]) -> Vec<u8>;
    /// The inverse of [`encode_chunk`](Self::encode_chunk).
    fn decode_chunk(bytes: &[u8]) -> Vec<Self>;
    /// The element unwritten cells read as, given the array's fill value.
    fn fill_element(fill: Option<&FillValue>) -> Self {
        Self::from_cells(Cells::filled(&Self::DTYPE, fill, 1)).pop().expect("one fill element")
    }
    #[doc(hidden)]
    fn to_cells<'a>(items: impl Iterator<Item = &'a Self>) -> Cells {
        let values: Vec<Self> = items.cloned().collect();
        let n = values.len();
        Cells::decode(&Self::DTYPE, &Self::encode_chunk(&values), n).expect("encode_chunk gives the chunk form of its dtype")
    }
    /// Panics never: `cells` come from an entry whose dtype is `Self::DTYPE`.
    #[doc(hidden)]
    fn from_cells(cells: Cells) -> Vec<Self> {
        Self::decode_chunk(&cells.encode())
    }
}

/// Nanoseconds since the Unix epoch, UTC; byte-identical to `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimestampNs(pub i64);

impl TimestampNs {
    pub const fn new(ns: i64) -> Self {
        TimestampNs(ns)
    }
    pub const fn nanos(self) -> i64 {
        self.0
    }
}

impl From<i64> for TimestampNs {
    fn from(v: i64) -> Self {
        TimestampNs(v)
    }
}

impl From<TimestampNs> for i64 {
    fn from(v: TimestampNs) -> Self {
        v.0
    }
}

macro_rules! fixed {
    ($t:ty, $d:expr) => {
        impl ArrayElement for $t {
            const DTYPE: DType = $d;
            fn to_cells<'a>(items: impl Iterator<Item = &'a Self>) -> Cells {
                Cells::Fixed { elsize: std::mem::size_of::<$t>(), bytes: items.flat_map(|x| x.to_le_bytes()).collect() }
            }
            fn from_cells(cells: Cells) -> Vec<Self> {
                match cells {
                    Cells::Fixed { bytes, .. } => Self::decode_chunk(&bytes),
                    Cells::Var(_) => unreachable!("fixed-width dtype holds fixed cells"),
                }
            }
            fn encode_chunk(values: &[Self]) -> Vec<u8> {
                values.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            fn decode_chunk(bytes: &[u8]) -> Vec<Self> {
                bytes.chunks_exact(std::mem::size_of::<$t>()).map(|c| <$t>::from_le_bytes(c.try_into().unwrap())).collect()
            }
        }
    };
}

fixed!(u8, DType::UInt8);
fixed!(u16, DType::UInt16);
fixed!(u32, DType::UInt32);
fixed!(u64, DType::UInt64);
fixed!(i8, DType::Int8);
fixed!(i16, DType::Int16);
fixed!(i32, DType::Int32);
fixed!(i64, DType::Int64);
fixed!(f32, DType::Float32);
fixed!(f64, DType::Float64);

impl ArrayElement for TimestampNs {
    const DTYPE: DType = DType::TimestampNs;
    fn to_cells<'a>(items: impl Iterator<Item = &'a Self>) -> Cells {
        Cells::Fixed { elsize: 8, bytes: items.flat_map(|x| x.0.to_le_bytes()).collect() }
    }
    fn from_cells(cells: Cells) -> Vec<Self> {
        i64::from_cells(cells).into_iter().map(TimestampNs).collect()
    }
    fn encode_chunk(values: &[Self]) -> Vec<u8> {
        values.iter().flat_map(|x| x.0.to_le_bytes()).collect()
    }
    fn decode_chunk(bytes: &[u8]) -> Vec<Self> {
        i64::decode_chunk(bytes).into_iter().map(TimestampNs).collect()
    }
}

/// One byte, 0 or 1 (atlas 0.10 describes bool but cannot write it).
impl ArrayElement for bool {
    const DTYPE: DType = DType::Bool;
    fn to_cells<'a>(items: impl Iterator<Item = &'a Self>) -> Cells {
        Cells::Fixed { elsize: 1, bytes: items.map(|&b| b as u8).collect() }
    }
    fn from_cells(cells: Cells) -> Vec<Self> {
        u8::from_cells(cells).into_iter().map(|b| b != 0).collect()
    }
    fn encode_chunk(values: &[Self]) -> Vec<u8> {
        values.iter().map(|&b| b as u8).collect()
    }
    fn decode_chunk(bytes: &[u8]) -> Vec<Self> {
        bytes.iter().map(|&b| b != 0).collect()
    }
}

impl ArrayElement for String {
    const DTYPE: DType = DType::String;
    fn to_cells<'a>(items: impl Iterator<Item = &'a Self>) -> Cells {
        Cells::Var(items.map(|s| s.as_bytes().to_vec()).collect())
    }
    fn from_cells(cells: Cells) -> Vec<Self> {
        match cells {
            // 0.10 decodes lossily; so do we.
            Cells::Var(v) => v.into_iter().map(|b| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())).collect(),
            Cells::Fixed { .. } => unreachable!("string dtype holds variable cells"),
        }
    }
    fn encode_chunk(values: &[Self]) -> Vec<u8> {
        cells::encode_var(&values.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>())
    }
    fn decode_chunk(bytes: &[u8]) -> Vec<Self> {
        Self::from_cells(Cells::Var(decode_var_all(bytes)))
    }
}

/// Variable-length bytes (`DType::Binary`), as 0.10 has them.
impl ArrayElement for Vec<u8> {
    const DTYPE: DType = DType::Binary;
    fn to_cells<'a>(items: impl Iterator<Item = &'a Self>) -> Cells {
        Cells::Var(items.cloned().collect())
    }
    fn from_cells(cells: Cells) -> Vec<Self> {
        match cells {
            Cells::Var(v) => v,
            Cells::Fixed { .. } => unreachable!("binary dtype holds variable cells"),
        }
    }
    fn encode_chunk(values: &[Self]) -> Vec<u8> {
        cells::encode_var(values)
    }
    fn decode_chunk(bytes: &[u8]) -> Vec<Self> {
        decode_var_all(bytes)
    }
}

/// Decodes a whole variable-length chunk: the element count is where the offsets end
/// (the first offset is 0, so the header is `4 * (N + 1)` bytes and the last offset
/// is the payload's length). Malformed bytes decode to nothing.
fn decode_var_all(bytes: &[u8]) -> Vec<Vec<u8>> {
    let off = |i: usize| bytes.get(4 * i..4 * i + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
    let mut n = 0;
    while let Some(o) = off(n + 1) {
        if 4 * (n + 2) + o == bytes.len() {
            return cells::decode_var(bytes, n + 1).unwrap_or_default();
        }
        n += 1;
    }
    vec![]
}
