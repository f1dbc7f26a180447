//! The bytes of one chunk: fixed-width elements packed little-endian in C order, or,
//! for `String`/`Binary`, `N+1` u32 LE offsets (the first is 0) then the payload.

use super::{DType, FillValue, FormatError};

/// Decoded chunk (or region) contents.
#[derive(Debug, Clone, PartialEq)]
pub enum Cells {
    /// Little-endian packed elements of `elsize` bytes each.
    Fixed { elsize: usize, bytes: Vec<u8> },
    /// One byte string per element (UTF-8 for `String`).
    Var(Vec<Vec<u8>>),
}

impl Cells {
    pub fn len(&self) -> usize {
        match self {
            Cells::Fixed { elsize, bytes } => bytes.len() / elsize,
            Cells::Var(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` copies of the fill element of `dtype`.
    pub fn filled(dtype: &DType, fill: Option<&FillValue>, n: usize) -> Cells {
        match dtype.element_size() {
            Some(elsize) => {
                let one = fill_element(dtype, fill);
                let bytes = if one.iter().all(|&b| b == 0) { vec![0u8; n * elsize] } else { one.repeat(n) };
                Cells::Fixed { elsize, bytes }
            }
            // 0.10 ignores fills for variable-length types: unwritten cells read as "".
            None => Cells::Var(vec![Vec::new(); n]),
        }
    }

    /// Decodes a stored chunk that must hold exactly `n` elements.
    pub fn decode(dtype: &DType, raw: &[u8], n: usize) -> Result<Cells, FormatError> {
        match dtype.element_size() {
            Some(elsize) => {
                if n.checked_mul(elsize) != Some(raw.len()) {
                    return Err(FormatError::CorruptChunk(format!("chunk has {} bytes, expected {n} elements of {elsize} bytes", raw.len())));
                }
                Ok(Cells::Fixed { elsize, bytes: raw.to_vec() })
            }
            None => decode_var(raw, n).map(Cells::Var),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Cells::Fixed { bytes, .. } => bytes.clone(),
            Cells::Var(v) => encode_var(v),
        }
    }
}

pub fn encode_var(items: &[Vec<u8>]) -> Vec<u8> {
    let payload: usize = items.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(4 * (items.len() + 1) + payload);
    let mut off = 0u32;
    out.extend_from_slice(&0u32.to_le_bytes());
    for it in items {
        off += it.len() as u32;
        out.extend_from_slice(&off.to_le_bytes());
    }
    for it in items {
        out.extend_from_slice(it);
    }
    out
}

pub fn decode_var(raw: &[u8], n: usize) -> Result<Vec<Vec<u8>>, FormatError> {
    let bad = |why: &str| FormatError::CorruptChunk(format!("string chunk of {} bytes for {n} elements: {why}", raw.len()));
    // `n` comes from a chunk's shape, which a corrupt file can make anything.
    let Some(head) = n.checked_add(1).and_then(|m| m.checked_mul(4)) else { return Err(bad("the element count overflows")) };
    if raw.len() < head {
        return Err(bad("shorter than its offset table"));
    }
    let offs: Vec<usize> = raw[..head].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as usize).collect();
    if offs[0] != 0 || head + offs[n] != raw.len() || offs.windows(2).any(|w| w[0] > w[1]) {
        return Err(bad("offsets do not describe the payload"));
    }
    let data = &raw[head..];
    Ok(offs.windows(2).map(|w| data[w[0]..w[1]].to_vec()).collect())
}

/// One fill element of a fixed-width dtype, little-endian. Casts follow 0.10 (`as`).
pub fn fill_element(dtype: &DType, fill: Option<&FillValue>) -> Vec<u8> {
    use FillValue as F;
    macro_rules! int {
        ($t:ty, $($pat:pat => $v:expr),*) => {{
            let v: $t = match fill { $(Some($pat) => $v,)* _ => 0 as $t };
            v.to_le_bytes().to_vec()
        }};
    }
    match dtype {
        DType::UInt8 => int!(u8, F::UInt(x) => *x as u8, F::Int(x) => *x as u8, F::Float(x) => *x as u8, F::Bool(b) => *b as u8),
        DType::UInt16 => int!(u16, F::UInt(x) => *x as u16, F::Int(x) => *x as u16, F::Float(x) => *x as u16, F::Bool(b) => *b as u16),
        DType::UInt32 => int!(u32, F::UInt(x) => *x as u32, F::Int(x) => *x as u32, F::Float(x) => *x as u32, F::Bool(b) => *b as u32),
        DType::UInt64 => int!(u64, F::UInt(x) => *x, F::Int(x) => *x as u64, F::Float(x) => *x as u64, F::Bool(b) => *b as u64),
        DType::Int8 => int!(i8, F::Int(x) => *x as i8, F::UInt(x) => *x as i8, F::Float(x) => *x as i8),
        DType::Int16 => int!(i16, F::Int(x) => *x as i16, F::UInt(x) => *x as i16, F::Float(x) => *x as i16),
        DType::Int32 => int!(i32, F::Int(x) => *x as i32, F::UInt(x) => *x as i32, F::Float(x) => *x as i32),
        DType::Int64 => int!(i64, F::Int(x) => *x, F::UInt(x) => *x as i64, F::Float(x) => *x as i64),
        DType::Float32 => int!(f32, F::Float(x) => *x as f32, F::Int(x) => *x as f32, F::UInt(x) => *x as f32),
        DType::Float64 => int!(f64, F::Float(x) => *x, F::Int(x) => *x as f64, F::UInt(x) => *x as f64),
        DType::TimestampNs => int!(i64, F::TimestampNs(x) => *x, F::Int(x) => *x),
        DType::Bool => int!(u8, F::Bool(b) => *b as u8, F::Int(x) => (*x != 0) as u8, F::UInt(x) => (*x != 0) as u8),
        DType::FixedSizeList { child, size } => fill_element(child, fill).repeat(*size as usize),
        DType::String | DType::Binary | DType::List { .. } => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_layout_matches_010() {
        let items: Vec<Vec<u8>> = ["cat", "", "elephant"].iter().map(|s| s.as_bytes().to_vec()).collect();
        let raw = encode_var(&items);
        let mut want = vec![];
        for o in [0u32, 3, 3, 11] {
            want.extend_from_slice(&o.to_le_bytes());
        }
        want.extend_from_slice(b"catelephant");
        assert_eq!(raw, want);
        assert_eq!(decode_var(&raw, 3).unwrap(), items);
        assert!(decode_var(&raw, 2).is_err());
        assert!(decode_var(&raw[..raw.len() - 1], 3).is_err());
    }

    /// Element counts from a corrupt layout must not overflow into a small offset table.
    #[test]
    fn huge_element_counts_are_errors() {
        for n in [usize::MAX, usize::MAX / 4, usize::MAX / 2 + 1] {
            assert!(decode_var(&[0u8; 16], n).is_err(), "{n}");
            assert!(Cells::decode(&DType::Float64, &[0u8; 16], n).is_err(), "{n}");
        }
    }

    #[test]
    fn fill_casts() {
        assert_eq!(fill_element(&DType::Float32, Some(&FillValue::Int(-1))), (-1.0f32).to_le_bytes());
        assert_eq!(fill_element(&DType::UInt8, Some(&FillValue::Bool(true))), [1]);
        assert_eq!(fill_element(&DType::Int16, None), [0, 0]);
        assert_eq!(fill_element(&DType::TimestampNs, Some(&FillValue::TimestampNs(i64::MIN))), i64::MIN.to_le_bytes());
        let c = Cells::filled(&DType::Float64, Some(&FillValue::Float(f64::NAN)), 3);
        assert_eq!(c.len(), 3);
        assert_eq!(Cells::filled(&DType::String, Some(&FillValue::String("x".into())), 2), Cells::Var(vec![vec![], vec![]]));
    }
}
