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

/// [`fold`] for floats without NaNs, in a loop the compiler vectorises: each value
/// maps to an integer key with the order of `total_cmp` (flip the magnitude bits of
/// negatives; the map is its own inverse), and null values (equal to the fill)
/// count for neither end. The big write's profile had the generic fold at ~10 % of
/// the daemon's CPU (docs/benchmarks.md §9).
macro_rules! float_fold {
    ($bytes:expr, $t:ty, $i:ty, $u:ty, $fill:expr) => {{
        const SHIFT: u32 = <$i>::BITS - 1;
        fn key(b: $i) -> $i {
            b ^ ((((b >> SHIFT) as $u) >> 1) as $i)
        }
        #[inline(always)]
        fn run(bytes: &[u8], is_null: impl Fn($t) -> bool) -> ($i, $i, u64) {
            let (mut lo, mut hi, mut n) = (<$i>::MAX, <$i>::MIN, 0u64);
            for c in bytes.chunks_exact(std::mem::size_of::<$t>()) {
                let v = <$t>::from_le_bytes(c.try_into().unwrap());
                let k = key(v.to_bits() as $i);
                let null = is_null(v);
                n += (!null) as u64;
                lo = if null { lo } else { lo.min(k) };
                hi = if null { hi } else { hi.max(k) };
            }
            (lo, hi, n)
        }
        let fill: Option<$t> = $fill;
        let (lo, hi, n) = match fill {
            None => run($bytes, |_| false),
            Some(f) if f.is_nan() => run($bytes, |v: $t| v.is_nan()),
            Some(f) => run($bytes, |v: $t| v == f),
        };
        let val = |k: $i| StatValue::Float(<$t>::from_bits(key(k) as $u) as f64);
        if n == 0 { ChunkSummary { min: None, max: None, non_null: 0 } } else { ChunkSummary { min: Some(val(lo)), max: Some(val(hi)), non_null: n } }
    }};
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
            let fast = match dtype {
                DType::Float32 => float_fold!(bytes, f32, i32, u32, f.map(|f| f as f32)),
                _ => float_fold!(bytes, f64, i64, u64, f),
            };
            // NaNs sort first or last in the total order: none at either end, none
            // at all, and the fast fold's answer is the one below.
            if fast.min.as_ref().is_none_or(|m| !matches!(m, StatValue::Float(x) if x.is_nan()))
                && fast.max.as_ref().is_none_or(|m| !matches!(m, StatValue::Float(x) if x.is_nan()))
            {
                return fast;
            }
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

    /// The vectorised float fold answers what the generic fold does.
    #[test]
    fn float_fast_path_equals_the_fold() {
        let specials = [0.0f64, -0.0, 1.5, -2.25, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE, -1e300, 7.0];
        let mut x = 0x1234_5678_9abc_def0u64;
        for case in 0..200 {
            let len = 1 + case % 37;
            let vals: Vec<f64> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x % 3 == 0 { specials[(x >> 8) as usize % specials.len()] } else { (x >> 11) as f64 / 1e9 - 4000.0 }
                })
                .collect();
            let nan_too = case % 5 == 0;
            let vals: Vec<f64> = vals.iter().enumerate().map(|(i, &v)| if nan_too && i == len / 2 { f64::NAN } else { v }).collect();
            for fill in [None, Some(FillValue::Float(0.0)), Some(FillValue::Float(f64::NAN)), Some(FillValue::Float(vals[0]))] {
                for dtype in [DType::Float32, DType::Float64] {
                    let cells = match dtype {
                        DType::Float32 => f32s(&vals.iter().map(|&v| v as f32).collect::<Vec<_>>()),
                        _ => Cells::Fixed { elsize: 8, bytes: vals.iter().flat_map(|v| v.to_le_bytes()).collect() },
                    };
                    let got = summarize(&dtype, fill.as_ref(), &cells);
                    let Cells::Fixed { bytes, .. } = &cells else { unreachable!() };
                    let f = match &fill {
                        Some(FillValue::Float(x)) => Some(if dtype == DType::Float32 { *x as f32 as f64 } else { *x }),
                        _ => None,
                    };
                    let all: Vec<f64> = match dtype {
                        DType::Float32 => le_iter!(bytes, f32).map(f64::from).collect(),
                        _ => le_iter!(bytes, f64).collect(),
                    };
                    let want =
                        fold(all.into_iter(), |v: f64| f.is_some_and(|f| if f.is_nan() { v.is_nan() } else { v == f }), |a, b| a.total_cmp(&b) == Ordering::Less, StatValue::Float);
                    let bits = |s: &ChunkSummary| (s.non_null, [&s.min, &s.max].map(|m| m.as_ref().map(|m| if let StatValue::Float(x) = m { x.to_bits() } else { 0 })));
                    assert_eq!(bits(&got), bits(&want), "case {case} {dtype:?} fill {fill:?}: {vals:?}");
                }
            }
        }
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
