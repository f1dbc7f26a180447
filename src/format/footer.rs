//! The rkyv archive at the end of every `.af` layer file and of `data.stats`.
//!
//! These types mirror array-format 0.10's footer field for field. Names are ours;
//! what is fixed on disk is the *order* of fields and enum variants, the integer
//! widths, and the `Vec` / `Option` / `Box` shapes. rkyv is built with
//! `pointer_width_64`, so relative pointers and lengths are 64-bit, as 0.10 wrote them.
//!
//! Framing (both file kinds): `[data blocks][archive][archive_len: u64 LE][magic]`.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::FormatError;

/// Footer layout version written and accepted by atlas 0.10 (0.11 moved to 5).
pub const FOOTER_VERSION: u32 = 4;
pub const LAYER_MAGIC: &[u8; 4] = b"ARRF";
pub const STATS_MAGIC: &[u8; 4] = b"ARST";
/// `archive_len` + magic.
pub const TRAILER_LEN: usize = 12;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct Footer {
    pub version: u32,
    pub blocks: Vec<BlockMeta>,
    /// One entry per dataset that this layer mentions (atlas keys entries by dataset name).
    pub entries: Vec<EntryMeta>,
    pub attr_keys: Vec<String>,
    pub attr_values: Vec<AttributeValue>,
    pub overlay_index: u32,
    pub base_file_hint: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockId(pub u32);

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct BlockMeta {
    pub id: BlockId,
    pub file_offset: u64,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub codec: CodecId,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum CodecId {
    None,
    /// `"zstd"` or `"lz4"` in files written by atlas 0.10.
    Named(String),
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct EntryMeta {
    /// The dataset name (array-format calls this the array name).
    pub name: String,
    pub dtype: DType,
    pub layout: ArrayLayout,
    pub fill_value: Option<FillValue>,
    pub deleted: bool,
    pub attributes: Attributes,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct ArrayLayout {
    pub shape: Vec<u32>,
    pub dimension_names: Vec<String>,
    pub storage: StorageLayout,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct StorageLayout {
    pub chunk_shape: Vec<u32>,
    pub chunks: Vec<ChunkEntry>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct ChunkEntry {
    pub coord: Vec<u32>,
    pub address: ChunkAddress,
}

/// Where a chunk's bytes sit inside the *decompressed* block.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkAddress {
    pub block_id: BlockId,
    pub offset: u32,
    pub size: u32,
}

/// Element types. Variant order is part of the on-disk contract.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(
    __C: rkyv::validation::ArchiveContext,
    __C::Error: rkyv::rancor::Source,
)))]
pub enum DType {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    String,
    Binary,
    FixedSizeList {
        #[rkyv(omit_bounds)]
        child: Box<DType>,
        size: u32,
    },
    List {
        #[rkyv(omit_bounds)]
        child: Box<DType>,
    },
    TimestampNs,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub enum FillValue {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
    TimestampNs(i64),
}

impl PartialEq for FillValue {
    /// Floats compare by bit pattern, so a NaN fill equals a NaN fill.
    fn eq(&self, other: &Self) -> bool {
        use FillValue::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (String(a), String(b)) => a == b,
            (TimestampNs(a), TimestampNs(b)) => a == b,
            _ => false,
        }
    }
}

/// Per-entry attribute index pairs; atlas never uses them and always writes `U16([])`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub enum Attributes {
    U16(Vec<(u16, u16)>),
    U32(Vec<(u32, u32)>),
    U64(Vec<(u64, u64)>),
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub enum AttributeValue {
    Bool(bool),
    Int8(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    UInt8(u8),
    UInt16(u16),
    UInt32(u32),
    UInt64(u64),
    Float32(f32),
    Float64(f64),
    String(String),
}

/// `data.stats`: one record per entry, keyed by dataset name. No version field in 0.10.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct StatsFile {
    pub entries: Vec<EntryStats>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct EntryStats {
    /// The dataset name.
    pub name: String,
    pub min: Option<StatValue>,
    pub max: Option<StatValue>,
    pub null_count: u64,
    pub row_count: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub enum StatValue {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bytes(Vec<u8>),
    TimestampNs(i64),
}

impl Footer {
    pub fn empty() -> Self {
        Footer { version: FOOTER_VERSION, blocks: vec![], entries: vec![], attr_keys: vec![], attr_values: vec![], overlay_index: 0, base_file_hint: String::new() }
    }
}

fn frame(archive: &[u8], magic: &[u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(archive.len() + TRAILER_LEN);
    out.extend_from_slice(archive);
    out.extend_from_slice(&(archive.len() as u64).to_le_bytes());
    out.extend_from_slice(magic);
    out
}

/// Footer archive plus trailer, to be appended after a layer's blocks.
pub fn encode_footer(footer: &Footer) -> Vec<u8> {
    let archive = rkyv::to_bytes::<rancor::Error>(footer).expect("footer serialisation cannot fail");
    frame(&archive, LAYER_MAGIC)
}

pub fn encode_stats(stats: &StatsFile) -> Vec<u8> {
    let archive = rkyv::to_bytes::<rancor::Error>(stats).expect("stats serialisation cannot fail");
    frame(&archive, STATS_MAGIC)
}

/// Reads the 12-byte trailer: returns the archive length after checking the magic.
pub fn trailer_archive_len(trailer: &[u8], magic: &[u8; 4]) -> Result<u64, FormatError> {
    if trailer.len() < TRAILER_LEN {
        return Err(FormatError::InvalidFooter(format!("file is {} bytes, shorter than the 12-byte trailer", trailer.len())));
    }
    let t = &trailer[trailer.len() - TRAILER_LEN..];
    if &t[8..12] != magic {
        return Err(FormatError::InvalidFooter(format!("bad magic {:?}, expected {:?}", String::from_utf8_lossy(&t[8..12]), String::from_utf8_lossy(magic))));
    }
    Ok(u64::from_le_bytes(t[0..8].try_into().unwrap()))
}

/// `tail` must end with the trailer and contain the whole archive.
fn archive_slice<'a>(tail: &'a [u8], magic: &[u8; 4]) -> Result<&'a [u8], FormatError> {
    let len = trailer_archive_len(tail, magic)?;
    let need = len.checked_add(TRAILER_LEN as u64).ok_or_else(|| FormatError::InvalidFooter("footer length overflows".into()))?;
    if need > tail.len() as u64 {
        return Err(FormatError::InvalidFooter(format!("footer of {len} bytes does not fit in {} bytes", tail.len())));
    }
    let end = tail.len() - TRAILER_LEN;
    Ok(&tail[end - len as usize..end])
}

fn aligned(bytes: &[u8]) -> AlignedVec<16> {
    let mut v = AlignedVec::<16>::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

/// Decodes and validates a layer footer from the tail of a file.
pub fn decode_footer(tail: &[u8]) -> Result<Footer, FormatError> {
    let buf = aligned(archive_slice(tail, LAYER_MAGIC)?);
    let footer = rkyv::from_bytes::<Footer, rancor::Error>(&buf).map_err(|e| FormatError::InvalidFooter(format!("footer does not validate: {e}")))?;
    if footer.version != FOOTER_VERSION {
        return Err(FormatError::UnsupportedVersion(footer.version));
    }
    Ok(footer)
}

pub fn decode_stats(bytes: &[u8]) -> Result<StatsFile, FormatError> {
    let buf = aligned(archive_slice(bytes, STATS_MAGIC)?);
    rkyv::from_bytes::<StatsFile, rancor::Error>(&buf).map_err(|e| FormatError::InvalidFooter(format!("stats file does not validate: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 108-byte empty base file that atlas 0.10 creates on first touch.
    const EMPTY_BASE_HEX: &str = "0400000000000000f8ffffffffffffff0000000000000000e8ffffffffffffff0000000000000000d8ffffffffffffff0000000000000000c8ffffffffffffff00000000000000000000000000000000ffffffffffffffffffffffffffffffff600000000000000041525246";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn empty_footer_is_byte_identical_to_atlas_010() {
        let bytes = encode_footer(&Footer::empty());
        assert_eq!(bytes.len(), 108);
        assert_eq!(hex(&bytes), EMPTY_BASE_HEX);
        assert_eq!(decode_footer(&bytes).unwrap(), Footer::empty());
    }

    #[test]
    fn footer_round_trips_with_entries() {
        let mut f = Footer::empty();
        f.overlay_index = 3;
        f.base_file_hint = "temperature/data.af".into();
        f.blocks.push(BlockMeta { id: BlockId(0), file_offset: 0, compressed_size: 10, uncompressed_size: 40, codec: CodecId::Named("zstd".into()) });
        f.entries.push(EntryMeta {
            name: "jan".into(),
            dtype: DType::FixedSizeList { child: Box::new(DType::Int16), size: 3 },
            layout: ArrayLayout {
                shape: vec![4, 6],
                dimension_names: vec!["x".into(), "y".into()],
                storage: StorageLayout {
                    chunk_shape: vec![2, 4],
                    chunks: vec![ChunkEntry { coord: vec![0, 1], address: ChunkAddress { block_id: BlockId(0), offset: 8, size: 16 } }],
                },
            },
            fill_value: Some(FillValue::Float(f64::NAN)),
            deleted: false,
            attributes: Attributes::U16(vec![]),
        });
        let bytes = encode_footer(&f);
        assert_eq!(decode_footer(&bytes).unwrap(), f);
    }

    #[test]
    fn rejects_bad_magic_version_and_truncation() {
        let mut bytes = encode_footer(&Footer::empty());
        assert!(matches!(decode_footer(&bytes[..50]), Err(FormatError::InvalidFooter(_))));
        let mut f = Footer::empty();
        f.version = 5;
        assert!(matches!(decode_footer(&encode_footer(&f)), Err(FormatError::UnsupportedVersion(5))));
        let n = bytes.len();
        bytes[n - 1] = b'X';
        assert!(matches!(decode_footer(&bytes), Err(FormatError::InvalidFooter(_))));
    }

    #[test]
    fn stats_round_trip() {
        let s = StatsFile {
            entries: vec![EntryStats { name: "a".into(), min: Some(StatValue::Float(1.0)), max: Some(StatValue::Bytes(b"zz".to_vec())), null_count: 2, row_count: 6 }],
        };
        assert_eq!(decode_stats(&encode_stats(&s)).unwrap(), s);
    }
}
