//! Rust element types that map onto atlas dtypes, and their cell conversions.

use crate::format::DType;
use crate::format::cells::Cells;

/// A Rust type that can be an array element. Fixed-width types are stored
/// little-endian; `String` as UTF-8 cells.
pub trait ArrayElement: Clone + Send + Sync + 'static {
    const DTYPE: DType;
    fn to_cells<'a>(items: impl Iterator<Item = &'a Self>) -> Cells;
    /// Panics never: `cells` come from an entry whose dtype is `Self::DTYPE`.
    fn from_cells(cells: Cells) -> Vec<Self>;
}

/// Nanoseconds since the Unix epoch, UTC; byte-identical to `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimestampNs(pub i64);

impl TimestampNs {
    pub fn new(ns: i64) -> Self {
        TimestampNs(ns)
    }
    pub fn nanos(self) -> i64 {
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
                    Cells::Fixed { bytes, .. } => bytes.chunks_exact(std::mem::size_of::<$t>()).map(|c| <$t>::from_le_bytes(c.try_into().unwrap())).collect(),
                    Cells::Var(_) => unreachable!("fixed-width dtype holds fixed cells"),
                }
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
}
