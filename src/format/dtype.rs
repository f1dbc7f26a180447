//! Dtype facts and the `atlas.json` spelling of a dtype.
//!
//! `atlas.json` writes dtypes adjacently tagged: `{"type": "float32"}`, and for the
//! list types `{"type": "list", "args": {"child": …}}`. The unsigned tags carry an
//! underscore (`u_int16`) because 0.10 derived them by snake-casing `UInt16`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::DType;

impl DType {
    /// Bytes per element; `None` for variable-length types.
    pub fn element_size(&self) -> Option<usize> {
        Some(match self {
            DType::Bool | DType::Int8 | DType::UInt8 => 1,
            DType::Int16 | DType::UInt16 => 2,
            DType::Int32 | DType::UInt32 | DType::Float32 => 4,
            DType::Int64 | DType::UInt64 | DType::Float64 | DType::TimestampNs => 8,
            DType::String | DType::Binary | DType::List { .. } => return None,
            DType::FixedSizeList { child, size } => child.element_size()? * *size as usize,
        })
    }

    pub fn is_variable_length(&self) -> bool {
        self.element_size().is_none()
    }

    /// Whether this crate can define, read and write arrays of this dtype (`Binary`
    /// through the Rust API only, as in 0.10: it has no `.npy` form).
    pub fn is_supported(&self) -> bool {
        !matches!(self, DType::List { .. } | DType::FixedSizeList { .. })
    }

    /// The short user-facing name (as atlas-python spells it).
    pub fn name(&self) -> String {
        match self {
            DType::Bool => "bool".into(),
            DType::Int8 => "int8".into(),
            DType::Int16 => "int16".into(),
            DType::Int32 => "int32".into(),
            DType::Int64 => "int64".into(),
            DType::UInt8 => "uint8".into(),
            DType::UInt16 => "uint16".into(),
            DType::UInt32 => "uint32".into(),
            DType::UInt64 => "uint64".into(),
            DType::Float32 => "float32".into(),
            DType::Float64 => "float64".into(),
            DType::String => "string".into(),
            DType::Binary => "binary".into(),
            DType::TimestampNs => "timestamp_nanoseconds".into(),
            DType::FixedSizeList { child, size } => format!("fixed_size_list[{},{size}]", child.name()),
            DType::List { child } => format!("list[{}]", child.name()),
        }
    }
}

/// The serde proxy that gives `atlas.json` its dtype spelling.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "args", rename_all = "snake_case")]
enum DTypeRepr {
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
        child: Box<DTypeRepr>,
        size: u32,
    },
    List {
        child: Box<DTypeRepr>,
    },
    #[serde(rename = "timestamp_nanoseconds")]
    TimestampNs,
}

impl From<&DType> for DTypeRepr {
    fn from(d: &DType) -> Self {
        match d {
            DType::Bool => DTypeRepr::Bool,
            DType::Int8 => DTypeRepr::Int8,
            DType::Int16 => DTypeRepr::Int16,
            DType::Int32 => DTypeRepr::Int32,
            DType::Int64 => DTypeRepr::Int64,
            DType::UInt8 => DTypeRepr::UInt8,
            DType::UInt16 => DTypeRepr::UInt16,
            DType::UInt32 => DTypeRepr::UInt32,
            DType::UInt64 => DTypeRepr::UInt64,
            DType::Float32 => DTypeRepr::Float32,
            DType::Float64 => DTypeRepr::Float64,
            DType::String => DTypeRepr::String,
            DType::Binary => DTypeRepr::Binary,
            DType::FixedSizeList { child, size } => DTypeRepr::FixedSizeList { child: Box::new((&**child).into()), size: *size },
            DType::List { child } => DTypeRepr::List { child: Box::new((&**child).into()) },
            DType::TimestampNs => DTypeRepr::TimestampNs,
        }
    }
}

impl From<DTypeRepr> for DType {
    fn from(d: DTypeRepr) -> Self {
        match d {
            DTypeRepr::Bool => DType::Bool,
            DTypeRepr::Int8 => DType::Int8,
            DTypeRepr::Int16 => DType::Int16,
            DTypeRepr::Int32 => DType::Int32,
            DTypeRepr::Int64 => DType::Int64,
            DTypeRepr::UInt8 => DType::UInt8,
            DTypeRepr::UInt16 => DType::UInt16,
            DTypeRepr::UInt32 => DType::UInt32,
            DTypeRepr::UInt64 => DType::UInt64,
            DTypeRepr::Float32 => DType::Float32,
            DTypeRepr::Float64 => DType::Float64,
            DTypeRepr::String => DType::String,
            DTypeRepr::Binary => DType::Binary,
            DTypeRepr::FixedSizeList { child, size } => DType::FixedSizeList { child: Box::new((*child).into()), size },
            DTypeRepr::List { child } => DType::List { child: Box::new((*child).into()) },
            DTypeRepr::TimestampNs => DType::TimestampNs,
        }
    }
}

impl Serialize for DType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        DTypeRepr::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for DType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DTypeRepr::deserialize(d).map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_spelling_matches_atlas_010() {
        let cases = [
            (DType::UInt16, r#"{"type":"u_int16"}"#),
            (DType::Float32, r#"{"type":"float32"}"#),
            (DType::TimestampNs, r#"{"type":"timestamp_nanoseconds"}"#),
            (DType::List { child: Box::new(DType::Int8) }, r#"{"type":"list","args":{"child":{"type":"int8"}}}"#),
            (DType::FixedSizeList { child: Box::new(DType::Int16), size: 3 }, r#"{"type":"fixed_size_list","args":{"child":{"type":"int16"},"size":3}}"#),
        ];
        for (d, json) in cases {
            assert_eq!(serde_json::to_string(&d).unwrap(), json);
            assert_eq!(serde_json::from_str::<DType>(json).unwrap(), d);
        }
        assert_eq!(serde_json::from_str::<DType>(r#"{"type":"bool","args":null}"#).unwrap(), DType::Bool);
    }

    #[test]
    fn element_sizes() {
        assert_eq!(DType::FixedSizeList { child: Box::new(DType::Int16), size: 3 }.element_size(), Some(6));
        assert_eq!(DType::String.element_size(), None);
        assert_eq!(DType::TimestampNs.element_size(), Some(8));
    }
}
