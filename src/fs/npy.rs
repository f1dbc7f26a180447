//! NumPy `.npy` files, both ways, hand-written so the bytes are exact.
//!
//! Writing: [`header_bytes`] produces the header byte for byte as `np.save` does
//! (format 1.0 unless the header needs more than 65535 bytes, then 2.0), so a
//! file's size is known from the metadata alone. [`encode_to`] writes a whole file
//! from store cells; strings become `<U{maxchars}` (no pickle).
//!
//! Reading: [`parse`] / [`read_header`] read the header strictly, and
//! [`decode_payload`] turns the data into store cells (C order, little-endian):
//! big-endian data is byte-swapped, Fortran order is transposed, `|b1` is
//! normalised to 0/1, `<U{n}` (UTF-32) and `|S{n}` (UTF-8, NUL-padded) become
//! string cells. Everything atlas cannot hold is refused with an [`NpyError`].

use std::io::{Read, Write};

use crate::format::DType;
use crate::format::cells::Cells;

/// The six bytes every `.npy` file starts with.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Headers are padded so the data starts at a multiple of this.
const ALIGN: usize = 64;
/// numpy pads the header so the first axis can grow in place to this many digits.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// Longest header [`parse`] accepts (numpy's own safe-load limit is 10,000).
pub const MAX_HEADER_LEN: usize = 1 << 20;
/// Most elements accepted for zero-width string dtypes (`|S0`, `<U0`), which have no
/// data to bound the element count: each becomes an empty string of 24 bytes in
/// memory, so a 128-byte file must not be able to ask for gigabytes (1 << 28 did).
pub const MAX_EMPTY_ELEMENTS: usize = 1 << 20;

/// Why a `.npy` file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("not a .npy file (it does not start with \\x93NUMPY)")]
    BadMagic,
    #[error("unsupported .npy format version {0}.{1} (supported: 1.0, 2.0, 3.0)")]
    UnsupportedVersion(u8, u8),
    #[error("truncated .npy file: {0}")]
    Truncated(String),
    #[error("malformed .npy header: {0}")]
    Malformed(String),
    #[error("unsupported dtype {descr}: {why}")]
    UnsupportedDType { descr: String, why: String },
    #[error("shape {0:?} is too large")]
    ShapeOverflow(Vec<usize>),
    #[error("truncated .npy data: the header promises {expected} bytes of data, the file has {actual}")]
    ShortPayload { expected: usize, actual: usize },
    #[error("{0} unexpected bytes after the array data")]
    TrailingBytes(usize),
    #[error("element {index}: {why}")]
    BadElement { index: usize, why: String },
    #[error("dtype {0} has no .npy form")]
    NoNpyForm(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = NpyError> = std::result::Result<T, E>;

/// The header of a `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub version: (u8, u8),
    /// The dtype descriptor, e.g. `<f4`.
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
    /// Bytes before the data: magic, version, length field and header text.
    pub header_len: usize,
}

impl NpyHeader {
    /// Elements in the array (the product of the shape; 1 for 0-D).
    pub fn element_count(&self) -> Result<usize> {
        self.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| NpyError::ShapeOverflow(self.shape.clone()))
    }

    /// What the descr means for atlas (an error if atlas cannot hold it).
    pub fn element_type(&self) -> Result<ElementType> {
        element_type(&self.descr)
    }

    /// Bytes of data the header promises.
    pub fn data_len(&self) -> Result<usize> {
        let et = self.element_type()?;
        self.element_count()?.checked_mul(et.itemsize).ok_or_else(|| NpyError::ShapeOverflow(self.shape.clone()))
    }
}

/// A decoded array: its atlas dtype, shape and C-order little-endian cells.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub cells: Cells,
}

/// How the elements of one descr are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Plain numbers: swap units of the whole item size.
    Number,
    Bool,
    /// `U{n}`: n UTF-32 code units.
    Unicode,
    /// `S{n}`: n bytes.
    Bytes,
}

/// What an element descr means for atlas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementType {
    pub dtype: DType,
    /// Bytes per element in the file.
    pub itemsize: usize,
    /// Whether multi-byte values are big-endian in the file.
    pub big_endian: bool,
    kind: Kind,
}

impl ElementType {
    /// Whether elements are fixed-width numbers or bools (not strings), so that
    /// C-order data can be converted slab by slab with [`Self::fix_in_place`].
    pub fn is_fixed_width(&self) -> bool {
        matches!(self.kind, Kind::Number | Kind::Bool)
    }

    /// Whether C-order data of this type is already in store form (no byte swap,
    /// no bool normalisation).
    pub fn is_store_form(&self) -> bool {
        self.kind == Kind::Number && (!self.big_endian || self.itemsize == 1)
    }

    /// Converts C-order fixed-width data (whole elements) to store form in place:
    /// swaps big-endian values, normalises bools to 0/1. Strings are left alone.
    /// Whether [`Self::fix_in_place`] leaves every byte as it is (little-endian or
    /// single-byte numbers), so the stored bytes are the file's bytes.
    pub fn fix_is_identity(&self) -> bool {
        self.kind == Kind::Number && !(self.big_endian && self.itemsize > 1)
    }

    pub fn fix_in_place(&self, data: &mut [u8]) {
        let unit = self.swap_unit();
        if self.big_endian && unit > 1 && self.kind == Kind::Number {
            data.chunks_exact_mut(unit).for_each(<[u8]>::reverse);
        }
        if self.kind == Kind::Bool {
            data.iter_mut().for_each(|b| *b = (*b != 0) as u8);
        }
    }

    /// Size of the units that byte order applies to.
    fn swap_unit(&self) -> usize {
        match self.kind {
            Kind::Number => self.itemsize,
            Kind::Unicode => 4,
            Kind::Bool | Kind::Bytes => 1,
        }
    }
}

/// The npy descr of a fixed-width atlas dtype (strings are `<U{n}`, see [`encode_strings`]).
pub fn descr_for(dtype: &DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Bool => "|b1",
        DType::Int8 => "|i1",
        DType::Int16 => "<i2",
        DType::Int32 => "<i4",
        DType::Int64 => "<i8",
        DType::UInt8 => "|u1",
        DType::UInt16 => "<u2",
        DType::UInt32 => "<u4",
        DType::UInt64 => "<u8",
        DType::Float32 => "<f4",
        DType::Float64 => "<f8",
        DType::TimestampNs => "<M8[ns]",
        DType::String | DType::Binary | DType::List { .. } | DType::FixedSizeList { .. } => return None,
    })
}

/// Interprets a descr string such as `<f4`, `>i2`, `|b1`, `<M8[ns]`, `<U7`, `|S3`.
pub fn element_type(descr: &str) -> Result<ElementType> {
    let unsupported = |why: &str| Err(NpyError::UnsupportedDType { descr: descr.to_string(), why: why.to_string() });
    let (order, rest) = match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('=', descr),
    };
    let big_endian = order == '>' || (order == '=' && cfg!(target_endian = "big"));
    let number = |dtype: DType, itemsize: usize| Ok(ElementType { dtype, itemsize, big_endian, kind: Kind::Number });
    let sized = |digits: &str| -> Option<usize> { if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) { digits.parse().ok() } else { None } };
    match rest {
        "b1" => Ok(ElementType { dtype: DType::Bool, itemsize: 1, big_endian, kind: Kind::Bool }),
        "i1" => number(DType::Int8, 1),
        "i2" => number(DType::Int16, 2),
        "i4" => number(DType::Int32, 4),
        "i8" => number(DType::Int64, 8),
        "u1" => number(DType::UInt8, 1),
        "u2" => number(DType::UInt16, 2),
        "u4" => number(DType::UInt32, 4),
        "u8" => number(DType::UInt64, 8),
        "f4" => number(DType::Float32, 4),
        "f8" => number(DType::Float64, 8),
        "M8[ns]" => number(DType::TimestampNs, 8),
        "f2" | "e" => unsupported("float16 is not supported (convert to float32)"),
        _ if rest.starts_with('f') || rest.starts_with('g') => unsupported("extended-precision floats are not supported"),
        _ if rest.starts_with('c') => unsupported("complex numbers are not supported"),
        _ if rest.starts_with('O') => unsupported("object arrays (pickled Python objects) are not supported"),
        _ if rest.starts_with("M8") => unsupported("datetime64 is supported only with unit [ns]"),
        _ if rest.starts_with("m8") => unsupported("timedelta64 is not supported"),
        _ if rest.starts_with('V') => unsupported("structured and void dtypes are not supported"),
        _ if rest.starts_with('U') => match sized(&rest[1..]).and_then(|n| n.checked_mul(4).map(|b| (n, b))) {
            Some((_, itemsize)) => Ok(ElementType { dtype: DType::String, itemsize, big_endian, kind: Kind::Unicode }),
            None => unsupported("unicode strings need a length (U{n})"),
        },
        _ if rest.starts_with('S') || rest.starts_with('a') => match sized(&rest[1..]) {
            Some(itemsize) => Ok(ElementType { dtype: DType::String, itemsize, big_endian, kind: Kind::Bytes }),
            None => unsupported("byte strings need a length (S{n})"),
        },
        _ => unsupported("not a dtype atlas can store (supported: bool, int8..int64, uint8..uint64, float32, float64, datetime64[ns], U and S strings)"),
    }
}

/// Python's `repr` of a str, for the ASCII descrs we write.
fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr` of a tuple of ints.
fn py_shape_repr(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [a] => format!("({a},)"),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// The header of a C-order `.npy` file, byte for byte as `np.save` writes it.
pub fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let mut dict = format!("{{'descr': {}, 'fortran_order': False, 'shape': {}, }}", py_str_repr(descr), py_shape_repr(shape));
    if let Some(first) = shape.first() {
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(first.to_string().len())));
    }
    let hlen = dict.len() + 1; // the final newline
    let pad = |prefix: usize| ALIGN - (prefix + hlen) % ALIGN;
    let (major, len_field) =
        if hlen + pad(10) <= u16::MAX as usize { (1u8, ((hlen + pad(10)) as u16).to_le_bytes().to_vec()) } else { (2u8, ((hlen + pad(12)) as u32).to_le_bytes().to_vec()) };
    let padlen = pad(8 + len_field.len());
    let mut out = Vec::with_capacity(8 + len_field.len() + hlen + padlen);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[major, 0]);
    out.extend_from_slice(&len_field);
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + padlen, b' ');
    out.push(b'\n');
    out
}

/// A Python literal, as far as `.npy` headers use them.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

/// A small recursive-descent parser for the header dict (`ast.literal_eval`'s subset).
struct LitParser {
    s: Vec<char>,
    i: usize,
}

impl LitParser {
    const MAX_DEPTH: usize = 32;

    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_whitespace()) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.peek() {
            Some(x) if x == c => {
                self.i += 1;
                Ok(())
            }
            Some(x) => Err(format!("expected {c:?} at offset {}, found {x:?}", self.i)),
            None => Err(format!("expected {c:?}, found the end of the header")),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Lit, String> {
        if depth > Self::MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        match self.peek() {
            None => Err("unexpected end of the header".into()),
            Some(q @ ('\'' | '"')) => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    match self.s.get(self.i).copied() {
                        None => return Err("unterminated string".into()),
                        Some('\\') => {
                            let c = self.s.get(self.i + 1).copied().ok_or("unterminated string")?;
                            out.push(match c {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                c => c,
                            });
                            self.i += 2;
                        }
                        Some(c) if c == q => {
                            self.i += 1;
                            return Ok(Lit::Str(out));
                        }
                        Some(c) => {
                            out.push(c);
                            self.i += 1;
                        }
                    }
                }
            }
            Some(c) if c == '-' || c == '+' || c.is_ascii_digit() => {
                let start = self.i;
                self.i += 1;
                while self.s.get(self.i).is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
                let text: String = self.s[start..self.i].iter().collect();
                // Python 2 wrote longs as `3L`.
                if self.s.get(self.i).is_some_and(|c| *c == 'L' || *c == 'l') {
                    self.i += 1;
                }
                text.parse::<i128>().map(Lit::Int).map_err(|_| format!("bad integer {text:?}"))
            }
            Some('(') => self.seq(')', depth).map(|(items, comma)| if items.len() == 1 && !comma { items.into_iter().next().unwrap() } else { Lit::Tuple(items) }),
            Some('[') => self.seq(']', depth).map(|(items, _)| Lit::List(items)),
            Some('{') => {
                self.i += 1;
                let mut items = vec![];
                loop {
                    if self.peek() == Some('}') {
                        self.i += 1;
                        return Ok(Lit::Dict(items));
                    }
                    let k = self.value(depth + 1)?;
                    self.expect(':')?;
                    let v = self.value(depth + 1)?;
                    items.push((k, v));
                    match self.peek() {
                        Some(',') => self.i += 1,
                        Some('}') => {}
                        _ => return Err(format!("expected ',' or '}}' at offset {}", self.i)),
                    }
                }
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    self.i += 1;
                }
                let word: String = self.s[start..self.i].iter().collect();
                match word.as_str() {
                    "True" => Ok(Lit::Bool(true)),
                    "False" => Ok(Lit::Bool(false)),
                    "None" => Ok(Lit::None),
                    _ => Err(format!("unexpected name {word:?}")),
                }
            }
            Some(c) => Err(format!("unexpected {c:?} at offset {}", self.i)),
        }
    }

    /// Items up to `close`; also says whether a comma followed the last one.
    fn seq(&mut self, close: char, depth: usize) -> Result<(Vec<Lit>, bool), String> {
        self.i += 1;
        let mut items = vec![];
        let mut comma = false;
        loop {
            if self.peek() == Some(close) {
                self.i += 1;
                return Ok((items, comma));
            }
            items.push(self.value(depth + 1)?);
            comma = false;
            match self.peek() {
                Some(',') => {
                    self.i += 1;
                    comma = true;
                }
                Some(c) if c == close => {}
                _ => return Err(format!("expected ',' or {close:?} at offset {}", self.i)),
            }
        }
    }
}

fn parse_dict(text: &str) -> Result<(String, bool, Vec<usize>)> {
    let bad = |m: String| NpyError::Malformed(m);
    let mut p = LitParser { s: text.chars().collect(), i: 0 };
    let lit = p.value(0).map_err(bad)?;
    if p.peek().is_some() {
        return Err(bad(format!("unexpected text after the header dict at offset {}", p.i)));
    }
    let Lit::Dict(items) = lit else { return Err(bad("the header is not a dict".into())) };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (k, v) in items {
        let Lit::Str(k) = k else { return Err(bad(format!("non-string key {k:?}"))) };
        let slot = match k.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            _ => return Err(bad(format!("unexpected key {k:?} (expected descr, fortran_order, shape)"))),
        };
        if slot.replace(v).is_some() {
            return Err(bad(format!("key {k:?} given twice")));
        }
    }
    let descr = match descr {
        Some(Lit::Str(s)) => s,
        Some(Lit::List(_)) => return Err(NpyError::UnsupportedDType { descr: "(structured)".into(), why: "structured dtypes are not supported".into() }),
        Some(other) => return Err(bad(format!("descr is not a dtype string: {other:?}"))),
        None => return Err(bad("no 'descr' key".into())),
    };
    let fortran = match fortran {
        Some(Lit::Bool(b)) => b,
        Some(other) => return Err(bad(format!("fortran_order is not a bool: {other:?}"))),
        None => return Err(bad("no 'fortran_order' key".into())),
    };
    let shape = match shape {
        Some(Lit::Tuple(items)) => items
            .into_iter()
            .map(|d| match d {
                Lit::Int(n) => usize::try_from(n).map_err(|_| bad(format!("shape has the axis length {n}"))),
                other => Err(bad(format!("shape has a non-integer entry {other:?}"))),
            })
            .collect::<Result<Vec<usize>>>()?,
        Some(other) => return Err(bad(format!("shape is not a tuple: {other:?}"))),
        None => return Err(bad("no 'shape' key".into())),
    };
    Ok((descr, fortran, shape))
}

/// Reads a header from the start of `bytes` (the data may follow, or not).
pub fn parse(bytes: &[u8]) -> Result<NpyHeader> {
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] {
        return Err(NpyError::BadMagic);
    }
    if bytes.len() < 8 {
        return Err(NpyError::Truncated(format!("{} bytes, shorter than the magic and version", bytes.len())));
    }
    let version = (bytes[6], bytes[7]);
    let len_size = match version {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        (a, b) => return Err(NpyError::UnsupportedVersion(a, b)),
    };
    let Some(len_field) = bytes.get(8..8 + len_size) else { return Err(NpyError::Truncated("the header length is cut off".into())) };
    let hlen = if len_size == 2 { u16::from_le_bytes([len_field[0], len_field[1]]) as usize } else { u32::from_le_bytes(len_field.try_into().unwrap()) as usize };
    if hlen > MAX_HEADER_LEN {
        return Err(NpyError::Malformed(format!("a header of {hlen} bytes is too large")));
    }
    let start = 8 + len_size;
    let Some(raw) = bytes.get(start..start + hlen) else {
        return Err(NpyError::Truncated(format!("the header promises {hlen} bytes, the file has {}", bytes.len() - start)));
    };
    let text: String = if version.0 == 3 {
        std::str::from_utf8(raw).map_err(|_| NpyError::Malformed("header is not UTF-8".into()))?.to_string()
    } else {
        raw.iter().map(|&b| b as char).collect()
    };
    let (descr, fortran_order, shape) = parse_dict(&text)?;
    Ok(NpyHeader { version, descr, fortran_order, shape, header_len: start + hlen })
}

fn read_fully<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| if e.kind() == std::io::ErrorKind::UnexpectedEof { NpyError::Truncated(format!("{what} is cut off")) } else { NpyError::Io(e) })
}

/// Reads exactly the header from `r`, leaving it at the first data byte.
pub fn read_header<R: Read>(r: &mut R) -> Result<NpyHeader> {
    let mut buf = vec![0u8; 8];
    let got = r.read(&mut buf[..6])?;
    if got == 0 {
        return Err(NpyError::Truncated("the file is empty".into()));
    }
    if buf[..got] != MAGIC[..got] {
        return Err(NpyError::BadMagic);
    }
    read_fully(r, &mut buf[got..8], "the magic and version")?;
    if buf[..6] != MAGIC[..] {
        return Err(NpyError::BadMagic);
    }
    let len_size = if (buf[6], buf[7]) == (1, 0) { 2 } else { 4 };
    if !matches!((buf[6], buf[7]), (1, 0) | (2, 0) | (3, 0)) {
        return Err(NpyError::UnsupportedVersion(buf[6], buf[7]));
    }
    buf.resize(8 + len_size, 0);
    read_fully(r, &mut buf[8..], "the header length")?;
    let hlen = if len_size == 2 { u16::from_le_bytes([buf[8], buf[9]]) as usize } else { u32::from_le_bytes(buf[8..12].try_into().unwrap()) as usize };
    if hlen > MAX_HEADER_LEN {
        return Err(NpyError::Malformed(format!("a header of {hlen} bytes is too large")));
    }
    let start = buf.len();
    buf.resize(start + hlen, 0);
    read_fully(r, &mut buf[start..], "the header")?;
    parse(&buf)
}

/// Reorders a Fortran-order (first axis fastest) buffer into C order.
fn fortran_to_c(data: &[u8], shape: &[usize], elsize: usize) -> Vec<u8> {
    let rank = shape.len();
    let n: usize = shape.iter().product();
    if rank <= 1 || n == 0 || elsize == 0 {
        return data.to_vec();
    }
    let mut fstride = vec![0usize; rank];
    let mut acc = 1;
    for (s, d) in fstride.iter_mut().zip(shape) {
        *s = acc;
        acc *= d;
    }
    let mut out = Vec::with_capacity(n * elsize);
    let mut idx = vec![0usize; rank];
    let mut off = 0usize; // F-order element offset of idx (with idx[rank-1] = 0)
    let (last_len, last_stride) = (shape[rank - 1], fstride[rank - 1]);
    loop {
        for t in 0..last_len {
            let o = (off + t * last_stride) * elsize;
            out.extend_from_slice(&data[o..o + elsize]);
        }
        // Odometer over the axes before the last, last-but-one fastest.
        let mut j = rank - 1;
        loop {
            if j == 0 {
                return out;
            }
            j -= 1;
            idx[j] += 1;
            off += fstride[j];
            if idx[j] < shape[j] {
                break;
            }
            off -= fstride[j] * shape[j];
            idx[j] = 0;
        }
    }
}

/// Reads a whole `.npy` file (header and data) into cells.
pub fn decode(mut file: Vec<u8>) -> Result<NpyArray> {
    let header = parse(&file)?;
    file.drain(..header.header_len);
    decode_payload(&header, file)
}

/// Turns the data that follows `header` into C-order little-endian cells.
/// `data` must be exactly the promised length.
pub fn decode_payload(header: &NpyHeader, mut data: Vec<u8>) -> Result<NpyArray> {
    let et = header.element_type()?;
    let n = header.element_count()?;
    let expected = header.data_len()?;
    if data.len() < expected {
        return Err(NpyError::ShortPayload { expected, actual: data.len() });
    }
    if data.len() > expected {
        return Err(NpyError::TrailingBytes(data.len() - expected));
    }
    if et.itemsize == 0 && n > MAX_EMPTY_ELEMENTS {
        return Err(NpyError::ShapeOverflow(header.shape.clone()));
    }
    let unit = et.swap_unit();
    if et.big_endian && unit > 1 {
        data.chunks_exact_mut(unit).for_each(<[u8]>::reverse);
    }
    if et.kind == Kind::Bool {
        data.iter_mut().for_each(|b| *b = (*b != 0) as u8);
    }
    if header.fortran_order {
        data = fortran_to_c(&data, &header.shape, et.itemsize);
    }
    let cells = match et.kind {
        Kind::Number => Cells::Fixed { elsize: et.itemsize, bytes: data },
        Kind::Bool => Cells::Fixed { elsize: 1, bytes: data },
        Kind::Unicode | Kind::Bytes if et.itemsize == 0 => Cells::Var(vec![Vec::new(); n]),
        Kind::Unicode => Cells::Var(
            data.chunks_exact(et.itemsize)
                .enumerate()
                .map(|(index, item)| {
                    let units: Vec<u32> = item.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
                    let used = units.iter().rposition(|&u| u != 0).map_or(0, |p| p + 1);
                    units[..used]
                        .iter()
                        .map(|&u| char::from_u32(u).ok_or_else(|| NpyError::BadElement { index, why: format!("invalid code point {u:#x} in a U string") }))
                        .collect::<Result<String>>()
                        .map(String::into_bytes)
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        Kind::Bytes => Cells::Var(
            data.chunks_exact(et.itemsize)
                .enumerate()
                .map(|(index, item)| {
                    let used = item.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                    match std::str::from_utf8(&item[..used]) {
                        Ok(_) => Ok(item[..used].to_vec()),
                        Err(_) => Err(NpyError::BadElement { index, why: "an S string is not UTF-8 text (atlas strings are UTF-8)".into() }),
                    }
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    Ok(NpyArray { dtype: et.dtype, shape: header.shape.clone(), cells })
}

/// String cells (UTF-8, decoded lossily) as a `<U{maxchars}` descr and its
/// UTF-32LE, NUL-padded data. `maxchars` is at least 1, as in numpy.
pub fn encode_strings(items: &[Vec<u8>]) -> (String, Vec<u8>) {
    let texts: Vec<std::borrow::Cow<'_, str>> = items.iter().map(|b| String::from_utf8_lossy(b)).collect();
    let width = texts.iter().map(|t| t.chars().count()).max().unwrap_or(0).max(1);
    let mut out = Vec::with_capacity(texts.len() * width * 4);
    for t in &texts {
        let mut used = 0;
        for c in t.chars() {
            out.extend_from_slice(&(c as u32).to_le_bytes());
            used += 1;
        }
        out.resize(out.len() + (width - used) * 4, 0);
    }
    (format!("<U{width}"), out)
}

/// Writes a whole C-order `.npy` file for `cells` of `dtype` and `shape`.
/// Returns the bytes written.
pub fn encode_to<W: Write>(w: &mut W, dtype: &DType, shape: &[usize], cells: &Cells) -> Result<u64> {
    let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| NpyError::ShapeOverflow(shape.to_vec()))?;
    if cells.len() != n && !matches!(cells, Cells::Fixed { elsize: 0, .. }) {
        return Err(NpyError::Invalid(format!("{} cells for shape {shape:?}", cells.len())));
    }
    let (header, strings);
    let data: &[u8] = match (dtype, cells) {
        (DType::String, Cells::Var(items)) => {
            let (descr, bytes) = encode_strings(items);
            header = header_bytes(&descr, shape);
            strings = bytes;
            &strings
        }
        (_, Cells::Fixed { elsize, bytes }) if dtype.element_size() == Some(*elsize) => {
            let descr = descr_for(dtype).ok_or_else(|| NpyError::NoNpyForm(dtype.name()))?;
            header = header_bytes(descr, shape);
            bytes
        }
        _ => return Err(NpyError::NoNpyForm(dtype.name())),
    };
    w.write_all(&header)?;
    w.write_all(data)?;
    Ok((header.len() + data.len()) as u64)
}

/// [`encode_to`] into a new buffer.
pub fn encode(dtype: &DType, shape: &[usize], cells: &Cells) -> Result<Vec<u8>> {
    let mut out = vec![];
    encode_to(&mut out, dtype, shape, cells)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numpy 2.4's `np.save` headers, copied from its output.
    fn numpy_header(dict: &str) -> Vec<u8> {
        let mut h = vec![];
        h.extend_from_slice(b"\x93NUMPY\x01\x00");
        let total = (10 + dict.len() + 1).div_ceil(64) * 64;
        let total = if (10 + dict.len() + 1) % 64 == 0 { total + 64 } else { total };
        h.extend_from_slice(&((total - 10) as u16).to_le_bytes());
        h.extend_from_slice(dict.as_bytes());
        h.resize(total - 1, b' ');
        h.push(b'\n');
        h
    }

    #[test]
    fn headers_match_numpy() {
        let cases: [(&str, &[usize], &[u8]); 4] = [
            ("<f4", &[4, 6], b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (4, 6), }                                                          \n"),
            ("<f8", &[], b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (), }                                                              \n"),
            ("|b1", &[5], b"\x93NUMPY\x01\x00v\x00{'descr': '|b1', 'fortran_order': False, 'shape': (5,), }                                                            \n"),
            (
                "<f8",
                &[0, 1_000_000_000_000],
                b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (0, 1000000000000), }                                              \n",
            ),
        ];
        for (descr, shape, want) in cases {
            let got = header_bytes(descr, shape);
            assert_eq!(got, want, "{descr} {shape:?}:\n{}", String::from_utf8_lossy(&got));
            assert_eq!(got.len() % 64, 0);
        }
        let twenty = [1usize; 20];
        let got = header_bytes("|u1", &twenty);
        assert_eq!(got.len(), 192);
        assert_eq!(&got[8..10], &[0xb6, 0]);
        // Exact alignment gives a full extra 64 bytes of padding, as numpy does.
        for rank in 0..40 {
            let shape = vec![3usize; rank];
            let got = header_bytes("<i2", &shape);
            let mut dict = format!("{{'descr': '<i2', 'fortran_order': False, 'shape': {}, }}", py_shape_repr(&shape));
            if rank > 0 {
                dict.push_str(&" ".repeat(20));
            }
            assert_eq!(got, numpy_header(&dict), "rank {rank}");
        }
    }

    #[test]
    fn version_2_for_huge_headers() {
        let descr = "x".repeat(70_000);
        let h = header_bytes(&descr, &[3]);
        assert_eq!(&h[..8], b"\x93NUMPY\x02\x00");
        let hlen = u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize;
        assert_eq!(hlen + 12, h.len());
        assert_eq!(h.len() % 64, 0);
        assert_eq!(*h.last().unwrap(), b'\n');
        let parsed = parse(&h).unwrap();
        assert_eq!((parsed.version, parsed.descr.len(), parsed.shape.as_slice(), parsed.header_len), ((2, 0), 70_000, &[3usize][..], h.len()));
    }

    #[test]
    fn headers_round_trip() {
        for shape in [vec![], vec![0], vec![7], vec![2, 3, 4], vec![usize::MAX, 0]] {
            for descr in ["<f4", "|b1", "<M8[ns]", "<U12"] {
                let h = header_bytes(descr, &shape);
                let p = parse(&h).unwrap();
                assert_eq!(p, NpyHeader { version: (1, 0), descr: descr.into(), fortran_order: false, shape: shape.clone(), header_len: h.len() });
                assert_eq!(read_header(&mut &h[..]).unwrap(), p);
            }
        }
    }

    fn file(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut f = numpy_header(dict);
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn reads_little_endian_c_order() {
        let data: Vec<u8> = [1i32, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = decode(file("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", &data)).unwrap();
        assert_eq!(a, NpyArray { dtype: DType::Int32, shape: vec![3], cells: Cells::Fixed { elsize: 4, bytes: data } });
    }

    #[test]
    fn swaps_big_endian() {
        let be: Vec<u8> = [1i32, -2, 300].iter().flat_map(|v| v.to_be_bytes()).collect();
        let le: Vec<u8> = [1i32, -2, 300].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = decode(file("{\"descr\": \">i4\", \"fortran_order\": False, \"shape\": (3,)}", &be)).unwrap();
        assert_eq!(a.cells, Cells::Fixed { elsize: 4, bytes: le });
        let be: Vec<u8> = [1.5f64, -0.25].iter().flat_map(|v| v.to_be_bytes()).collect();
        let a = decode(file("{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }", &be)).unwrap();
        assert_eq!(a.cells, Cells::Fixed { elsize: 8, bytes: [1.5f64, -0.25].iter().flat_map(|v| v.to_le_bytes()).collect() });
    }

    #[test]
    fn transposes_fortran_order() {
        // a[i][j] = 3i + j, stored first axis fastest.
        let f: Vec<u8> = [0u8, 3, 1, 4, 2, 5].to_vec();
        let a = decode(file("{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3), }", &f)).unwrap();
        assert_eq!(a.cells, Cells::Fixed { elsize: 1, bytes: vec![0, 1, 2, 3, 4, 5] });
        // 3-D, two-byte elements, against the index formula.
        let shape = [3usize, 4, 5];
        let mut fdata = vec![0u8; 60 * 2];
        for i in 0..3 {
            for j in 0..4 {
                for k in 0..5 {
                    let c = (i * 20 + j * 5 + k) as u16;
                    let fo = i + 3 * (j + 4 * k);
                    fdata[fo * 2..fo * 2 + 2].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
        let a = decode(file("{'descr': '>u2', 'fortran_order': True, 'shape': (3, 4, 5), }", &fdata)).unwrap();
        let want: Vec<u8> = (0u16..60).flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(a.cells, Cells::Fixed { elsize: 2, bytes: want });
        assert_eq!(a.shape, shape);
    }

    #[test]
    fn bools_times_and_strings() {
        let a = decode(file("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", &[0, 1, 7])).unwrap();
        assert_eq!((a.dtype, a.cells), (DType::Bool, Cells::Fixed { elsize: 1, bytes: vec![0, 1, 1] }));
        let a = decode(file("{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (), }", &i64::MIN.to_le_bytes())).unwrap();
        assert_eq!((a.dtype, a.shape.len(), a.cells.len()), (DType::TimestampNs, 0, 1));

        let mut u = vec![];
        for s in ["hé", "", "日本"] {
            let mut units: Vec<u32> = s.chars().map(|c| c as u32).collect();
            units.resize(2, 0);
            u.extend(units.iter().flat_map(|x| x.to_be_bytes()));
        }
        let a = decode(file("{'descr': '>U2', 'fortran_order': False, 'shape': (3,), }", &u)).unwrap();
        assert_eq!(a.cells, Cells::Var(vec!["hé".into(), vec![], "日本".as_bytes().to_vec()]));

        let a = decode(file("{'descr': '|S3', 'fortran_order': False, 'shape': (2,), }", b"ab\0xyz")).unwrap();
        assert_eq!((a.dtype, a.cells), (DType::String, Cells::Var(vec![b"ab".to_vec(), b"xyz".to_vec()])));
        let e = decode(file("{'descr': '|S1', 'fortran_order': False, 'shape': (1,), }", b"\xff")).unwrap_err();
        assert!(matches!(e, NpyError::BadElement { index: 0, .. }), "{e}");
        let e = decode(file("{'descr': '<U1', 'fortran_order': False, 'shape': (1,), }", &0xD800u32.to_le_bytes())).unwrap_err();
        assert!(matches!(e, NpyError::BadElement { .. }), "{e}");
        let a = decode(file("{'descr': '|S0', 'fortran_order': False, 'shape': (2, 2), }", b"")).unwrap();
        assert_eq!(a.cells, Cells::Var(vec![vec![]; 4]));
    }

    #[test]
    fn strings_encode_as_unicode() {
        let items: Vec<Vec<u8>> = ["cat", "", "éléphant"].iter().map(|s| s.as_bytes().to_vec()).collect();
        let (descr, bytes) = encode_strings(&items);
        assert_eq!(descr, "<U8");
        assert_eq!(bytes.len(), 3 * 8 * 4);
        let mut f = header_bytes(&descr, &[3]);
        f.extend_from_slice(&bytes);
        assert_eq!(decode(f).unwrap().cells, Cells::Var(items));
        assert_eq!(encode_strings(&[vec![], vec![]]).0, "<U1");
        assert_eq!(encode_strings(&[]), ("<U1".to_string(), vec![]));
    }

    #[test]
    fn encodes_whole_files() {
        let cells = Cells::Fixed { elsize: 8, bytes: [1.0f64, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect() };
        let f = encode(&DType::Float64, &[2, 1], &cells).unwrap();
        let a = decode(f).unwrap();
        assert_eq!((a.dtype, a.shape, a.cells), (DType::Float64, vec![2, 1], cells));
        assert!(matches!(encode(&DType::Binary, &[1], &Cells::Var(vec![vec![1]])), Err(NpyError::NoNpyForm(_))));
        assert!(encode(&DType::Float64, &[3], &Cells::Fixed { elsize: 8, bytes: vec![0; 16] }).is_err());
    }

    #[test]
    fn refuses_what_atlas_cannot_hold() {
        for (descr, what) in [
            ("|O", "object"),
            ("<c16", "complex"),
            ("<c8", "complex"),
            ("<f2", "float16"),
            ("<M8[s]", "[ns]"),
            ("<M8", "[ns]"),
            ("<m8[ns]", "timedelta"),
            ("|V8", "void"),
            ("<f16", "extended"),
            ("<q", "not a dtype"),
        ] {
            let e = decode(file(&format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}"), &[0; 16])).unwrap_err();
            assert!(matches!(&e, NpyError::UnsupportedDType { .. }) && e.to_string().contains(what), "{descr}: {e}");
        }
        let e = decode(file("{'descr': [('a', '<i4'), ('b', '<f8')], 'fortran_order': False, 'shape': (1,), }", &[0; 12])).unwrap_err();
        assert!(e.to_string().contains("structured"), "{e}");
    }

    #[test]
    fn refuses_malformed_files() {
        let ok = file("{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }", &[1, 0, 2, 0]);
        decode(ok.clone()).unwrap();
        // Every strict prefix fails cleanly.
        for cut in 0..ok.len() {
            let e = decode(ok[..cut].to_vec()).unwrap_err();
            assert!(matches!(e, NpyError::Truncated(_) | NpyError::ShortPayload { .. } | NpyError::BadMagic), "cut {cut}: {e}");
        }
        let mut extra = ok.clone();
        extra.push(0);
        assert!(matches!(decode(extra), Err(NpyError::TrailingBytes(1))));
        assert!(matches!(decode(b"PK\x03\x04 not npy".to_vec()), Err(NpyError::BadMagic)));
        let mut v4 = ok.clone();
        v4[6] = 4;
        assert!(matches!(decode(v4), Err(NpyError::UnsupportedVersion(4, 0))));
        for dict in [
            "{'descr': '<i2', 'shape': (2,), }",
            "{'descr': '<i2', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
            "{'descr': '<i2', 'fortran_order': 0, 'shape': (2,), }",
            "{'descr': '<i2', 'fortran_order': False, 'shape': [2], }",
            "{'descr': '<i2', 'fortran_order': False, 'shape': (-2,), }",
            "{'descr': '<i2', 'fortran_order': False, 'shape': (2.5,), }",
            "{'descr': '<i2', 'fortran_order': False, 'shape': (2,), } trailing",
            "{'descr': '<i2', 'fortran_order': False, 'shape': (2,), 'shape': (2,)}",
            "{'descr': '<i2' 'fortran_order': False}",
            "{'descr': '<i2",
            "['descr']",
            "",
            &("(".repeat(100) + &")".repeat(100)),
        ] {
            let e = decode(file(dict, &[1, 0, 2, 0])).unwrap_err();
            assert!(matches!(e, NpyError::Malformed(_)), "{dict}: {e}");
        }
        let e = decode(file("{'descr': '<i8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", &[])).unwrap_err();
        assert!(matches!(e, NpyError::ShapeOverflow(_)), "{e}");
        let e = decode(file("{'descr': '<i8', 'fortran_order': False, 'shape': (3037000500, 3037000500), }", &[])).unwrap_err();
        assert!(matches!(e, NpyError::ShapeOverflow(_)), "{e}");
        let e = decode(file("{'descr': '|S0', 'fortran_order': False, 'shape': (1000000000000,), }", &[])).unwrap_err();
        assert!(matches!(e, NpyError::ShapeOverflow(_)), "{e}");
        // 2**28 empty strings from a 128-byte file were 6 GiB of Vec headers.
        let e = decode(file("{'descr': '|S0', 'fortran_order': False, 'shape': (268435456,), }", &[])).unwrap_err();
        assert!(matches!(e, NpyError::ShapeOverflow(_)), "{e}");
        assert_eq!(decode(file("{'descr': '<U0', 'fortran_order': False, 'shape': (1024, 1024), }", &[])).unwrap().cells.len(), MAX_EMPTY_ELEMENTS);
        let e = decode(file("{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }", &[1, 0, 2, 0])).unwrap_err();
        assert!(matches!(e, NpyError::ShortPayload { expected: 6, actual: 4 }), "{e}");
        // A header length beyond the limit is refused before anything is allocated.
        let mut huge = b"\x93NUMPY\x02\x00".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&huge), Err(NpyError::Malformed(_))));
        assert!(matches!(read_header(&mut &huge[..]), Err(NpyError::Malformed(_))));
    }

    #[test]
    fn slab_conversion_matches_whole_decoding() {
        for (descr, raw) in
            [(">i4", [0u8, 0, 1, 2, 255, 255, 255, 254].to_vec()), ("|b1", vec![0, 2, 1, 0, 9, 0, 0, 1]), ("<u2", vec![1, 2, 3, 4, 5, 6, 7, 8]), (">u1", vec![9; 8])]
        {
            let et = element_type(descr).unwrap();
            assert!(et.is_fixed_width());
            let whole = decode(file(&format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}", 8 / et.itemsize), &raw)).unwrap();
            let mut slab = raw.clone();
            et.fix_in_place(&mut slab);
            assert_eq!(whole.cells, Cells::Fixed { elsize: et.itemsize, bytes: slab.clone() }, "{descr}");
            assert_eq!(et.is_store_form(), slab == raw, "{descr}");
        }
        assert!(!element_type("<U3").unwrap().is_fixed_width());
        assert!(!element_type("|b1").unwrap().is_store_form());
        assert!(element_type("<f8").unwrap().is_store_form());
    }

    #[test]
    fn python2_headers() {
        let a = decode(file("{'descr': '<i2', 'fortran_order': False, 'shape': (2L,), }", &[1, 0, 2, 0])).unwrap();
        assert_eq!(a.shape, vec![2]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), cut in 0usize..200, flip in 0usize..200, val in proptest::prelude::any::<u8>()) {
            let _ = decode(bytes);
            let mut f = file("{'descr': '>u2', 'fortran_order': True, 'shape': (3, 2), }", &[0; 12]);
            let at = flip % f.len();
            f[at] = val;
            let keep = f.len().saturating_sub(cut % 40);
            f.truncate(keep);
            let _ = decode(f.clone());
            let _ = read_header(&mut &f[..]);
        }
    }
}
