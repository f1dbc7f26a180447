//! Per-entry statistics as atlas 0.10 defines them: min/max over written elements
//! that differ from the fill, `row_count` = product of the shape (1 for 0-D), and
//! `null_count` = `row_count` − written non-fill elements, so unwritten cells count
//! as null even without a fill value.
//!
//! Stats are summarised per chunk ([`ChunkSummary`]) so that a flush can combine the
//! summaries of freshly written chunks (computed while the data was in hand) with
//! those of older chunks, instead of re-reading everything.

use std::cmp::Ordering;

use super::cells::Cells;
use super::{DType, EntryStats, FillValue, StatValue};

/// Min, max and the count of non-null elements of one chunk.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChunkSummary {
    pub min: Option<StatValue>,
    pub max: Option<StatValue>,
    pub non_null: u64,
}

fn cmp_stat(a: &StatValue, b: &StatValue) -> Ordering {
    use StatValue::*;
    match (a, b) {
        (Int(x), Int(y)) | (TimestampNs(x), TimestampNs(y)) => x.cmp(y),
        (UInt(x), UInt(y)) => x.cmp(y),
        (Float(x), Float(y)) => x.total_cmp(y),
        (Bytes(x), Bytes(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

impl ChunkSummary {
    pub fn merge(&mut self, other: &ChunkSummary) {
        self.non_null += other.non_null;
        if let Some(m) = &other.min
            && self.min.as_ref().is_none_or(|cur| cmp_stat(m, cur) == Ordering::Less)
        {
            self.min = Some(m.clone());
        }
        if let Some(m) = &other.max
            && self.max.as_ref().is_none_or(|cur| cmp_stat(m, cur) == Ordering::Greater)
        {
            self.max = Some(m.clone());
        }
    }

    pub fn into_stats(self, name: &str, shape: &[usize]) -> EntryStats {
        let rows: u64 = shape.iter().map(|&s| s as u64).product();
        EntryStats { name: name.to_string(), min: self.min, max: self.max, null_count: rows.saturating_sub(self.non_null), row_count: rows }
    }
}

/// Folds values into a summary, skipping those `is_null` says equal the fill.
fn fold<T: Copy>(vals: impl Iterator<Item = T>, is_null: impl Fn(T) -> bool, less: impl Fn(T, T) -> bool, wrap: impl Fn(T) -> StatValue) -> ChunkSummary {
    let mut lo: Option<T> = None;
    let mut hi: Option<T> = None;
    let mut n = 0u64;
    for v in vals {
        if is_null(v) {
            continue;
        }
        n += 1;
        if lo.is_none_or(|l| less(v, l)) {
            lo = Some(v);
        }
        if hi.is_none_or(|h| less(h, v)) {
            hi = Some(v);
        }
    }
    ChunkSummary { min: lo.map(&wrap), max: hi.map(&wrap), non_null: n }
}

macro_rules! le_iter {
    ($bytes:expr, $t:ty) => {
        $bytes.chunks_exact(std::mem::size_of::<$t>()).map(|c| <$t>::from_le_bytes(c.try_into().unwrap()))
    };
}

/// Summarises one chunk's cells.
pub fn summarize(dtype: &DType, fill: Option<&FillValue>, cells: &Cells) -> ChunkSummary {
    use FillValue as F;
    let int_fill = match fill {
        Some(F::Int(x)) => Some(*x as i128),
        Some(F::UInt(x)) => Some(*x as i128),
        _ => None,
    };
    match (dtype, cells) {
        (DType::Int8 | DType::Int16 | DType::Int32 | DType::Int64, Cells::Fixed { bytes, .. }) => {
            let nul = |v: i64| int_fill.is_some_and(|f| f == v as i128 || (dtype != &DType::Int64 && cast_signed(f, dtype) == v));
            let vals: Box<dyn Iterator<Item = i64>> = match dtype {
                DType::Int8 => Box::new(bytes.iter().map(|&b| b as i8 as i64)),
                DType::Int16 => Box::new(le_iter!(bytes, i16).map(i64::from)),
                DType::Int32 => Box::new(le_iter!(bytes, i32).map(i64::from)),
                _ => Box::new(le_iter!(bytes, i64)),
            };
            fold(vals, nul, |a, b| a < b, StatValue::Int)
        }
        (DType::UInt8 | DType::UInt16 | DType::UInt32 | DType::UInt64 | DType::Bool, Cells::Fixed { bytes, .. }) => {
            let f = match (dtype, fill) {
                (DType::Bool, Some(F::Bool(b))) => Some(*b as u64),
                (DType::Bool, _) => None,
                (_, _) => int_fill.map(|f| cast_unsigned(f, dtype)),
            };
            let vals: Box<dyn Iterator<Item = u64>> = match dtype {
                DType::UInt8 | DType::Bool => Box::new(bytes.iter().map(|&b| b as u64)),
                DType::UInt16 => Box::new(le_iter!(bytes, u16).map(u64::from)),
                DType::UInt32 => Box::new(le_iter!(bytes, u32).map(u64::from)),
                _ => Box::new(le_iter!(bytes, u64)),
            };
            fold(vals, |v| f == Some(v), |a, b| a < b, StatValue::UInt)
        }
        (DType::Float32 | DType::Float64, Cells::Fixed { bytes, .. }) => {
            let f = match fill {
                Some(F::Float(x)) => Some(if *dtype == DType::Float32 { *x as f32 as f64 } else { *x }),
                _ => None,
            };
            let nul = |v: f64| f.is_some_and(|f| if f.is_nan() { v.is_nan() } else { v == f });
            let vals: Box<dyn Iterator<Item = f64>> = match dtype {
                DType::Float32 => Box::new(le_iter!(bytes, f32).map(f64::from)),
                _ => Box::new(le_iter!(bytes, f64)),
            };
            fold(vals, nul, |a, b| a.total_cmp(&b) == Ordering::Less, StatValue::Float)
        }
        (DType::TimestampNs, Cells::Fixed { bytes, .. }) => {
            let f = match fill {
                Some(F::TimestampNs(x)) | Some(F::Int(x)) => Some(*x),
                _ => None,
            };
            fold(le_iter!(bytes, i64), |v| f == Some(v), |a, b| a < b, StatValue::TimestampNs)
        }
        (DType::String | DType::Binary, Cells::Var(items)) => {
            let f = match fill {
                Some(F::String(s)) => Some(s.as_bytes()),
                _ => None,
            };
            let mut s = ChunkSummary::default();
            for it in items {
                if f == Some(it.as_slice()) {
                    continue;
                }
                s.merge(&ChunkSummary { min: Some(StatValue::Bytes(it.clone())), max: Some(StatValue::Bytes(it.clone())), non_null: 1 });
            }
            s
        }
        _ => ChunkSummary::default(),
    }
}

/// A signed fill as the array's element type sees it (0.10 compares after an `as` cast).
fn cast_signed(f: i128, dtype: &DType) -> i64 {
    match dtype {
        DType::Int8 => f as i8 as i64,
        DType::Int16 => f as i16 as i64,
        DType::Int32 => f as i32 as i64,
        _ => f as i64,
    }
}

fn cast_unsigned(f: i128, dtype: &DType) -> u64 {
    match dtype {
        DType::UInt8 => f as u8 as u64,
        DType::UInt16 => f as u16 as u64,
        DType::UInt32 => f as u32 as u64,
        _ => f as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Cells {
        Cells::Fixed { elsize: 4, bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
    fn i32s(v: &[i32]) -> Cells {
        Cells::Fixed { elsize: 4, bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }

    #[test]
    fn float_stats() {
        let s = summarize(&DType::Float32, None, &f32s(&[1.0, 3.0, 2.0, 4.0])).into_stats("a", &[4]);
        assert_eq!((s.row_count, s.null_count, s.min, s.max), (4, 0, Some(StatValue::Float(1.0)), Some(StatValue::Float(4.0))));
    }

    #[test]
    fn int_fill_counts_nulls() {
        let s = summarize(&DType::Int32, Some(&FillValue::Int(-1)), &i32s(&[5, -1, 7, -1, 2, 9])).into_stats("a", &[6]);
        assert_eq!((s.row_count, s.null_count, s.min, s.max), (6, 2, Some(StatValue::Int(2)), Some(StatValue::Int(9))));
        let s = summarize(&DType::Int32, None, &i32s(&[5, -1, 7, 9])).into_stats("a", &[4]);
        assert_eq!((s.null_count, s.min), (0, Some(StatValue::Int(-1))));
    }

    #[test]
    fn nan_fill_matches_any_nan() {
        let c = Cells::Fixed { elsize: 8, bytes: [1.0f64, f64::NAN, 3.0, f64::NAN].iter().flat_map(|x| x.to_le_bytes()).collect() };
        let s = summarize(&DType::Float64, Some(&FillValue::Float(f64::NAN)), &c).into_stats("a", &[4]);
        assert_eq!((s.null_count, s.min, s.max), (2, Some(StatValue::Float(1.0)), Some(StatValue::Float(3.0))));
    }

    #[test]
    fn unwritten_cells_are_null_and_summaries_merge() {
        let mut a = summarize(&DType::Int32, None, &i32s(&[3, 4]));
        a.merge(&summarize(&DType::Int32, None, &i32s(&[-7])));
        let s = a.into_stats("x", &[2, 3]);
        assert_eq!((s.row_count, s.null_count, s.min, s.max), (6, 3, Some(StatValue::Int(-7)), Some(StatValue::Int(4))));
    }

    #[test]
    fn string_stats_are_bytes() {
        let c = Cells::Var(vec![b"b".to_vec(), b"a".to_vec(), b"".to_vec()]);
        let s = summarize(&DType::String, Some(&FillValue::String(String::new())), &c).into_stats("x", &[3]);
        assert_eq!((s.null_count, s.min, s.max), (1, Some(StatValue::Bytes(b"a".to_vec())), Some(StatValue::Bytes(b"b".to_vec()))));
    }
}
