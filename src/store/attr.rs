//! Dataset attributes: five kinds on disk, serialised untagged. Reading tries
//! bool, then timestamp (any RFC 3339 string), then string, then int, then float,
//! as atlas 0.10 does, so a string that looks like a timestamp reloads as one.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Bool(bool),
    /// Nanoseconds since the Unix epoch, UTC.
    TimestampNanoseconds(i64),
    String(String),
    Int64(i64),
    Float64(f64),
}

impl Attr {
    /// The RFC 3339 form 0.10 writes: UTC, `Z`, shortest of 0/3/6/9 fractional digits.
    pub fn format_timestamp(ns: i64) -> String {
        DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    pub fn parse_timestamp(s: &str) -> Option<i64> {
        DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc).timestamp_nanos_opt()
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Attr::Bool(_) => "bool",
            Attr::TimestampNanoseconds(_) => "timestamp",
            Attr::String(_) => "string",
            Attr::Int64(_) => "int64",
            Attr::Float64(_) => "float64",
        }
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Bool(b) => write!(f, "{b}"),
            Attr::TimestampNanoseconds(ns) => f.write_str(&Attr::format_timestamp(*ns)),
            Attr::String(s) => f.write_str(s),
            Attr::Int64(i) => write!(f, "{i}"),
            Attr::Float64(x) => write!(f, "{x:?}"),
        }
    }
}

impl Serialize for Attr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Attr::Bool(b) => s.serialize_bool(*b),
            Attr::TimestampNanoseconds(ns) => s.serialize_str(&Attr::format_timestamp(*ns)),
            Attr::String(v) => s.serialize_str(v),
            Attr::Int64(i) => s.serialize_i64(*i),
            Attr::Float64(x) => s.serialize_f64(*x),
        }
    }
}

struct AttrVisitor;

impl<'de> Visitor<'de> for AttrVisitor {
    type Value = Attr;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a bool, string, integer or float attribute")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Attr, E> {
        Ok(Attr::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Attr, E> {
        Ok(Attr::Int64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Attr, E> {
        Ok(i64::try_from(v).map(Attr::Int64).unwrap_or(Attr::Float64(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Attr, E> {
        Ok(Attr::Float64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Attr, E> {
        Ok(Attr::parse_timestamp(v).map(Attr::TimestampNanoseconds).unwrap_or_else(|| Attr::String(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Attr, E> {
        // atlas 0.10 wrote NaN/Inf as JSON null and could then not open the store.
        // Reading it as NaN lets such a store open again.
        Ok(Attr::Float64(f64::NAN))
    }
}

impl<'de> Deserialize<'de> for Attr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Attr, D::Error> {
        d.deserialize_any(AttrVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms_match_010() {
        let cases = [
            (Attr::Bool(true), "true"),
            (Attr::Int64(42), "42"),
            (Attr::Float64(1.5), "1.5"),
            (Attr::Float64(2.0), "2.0"),
            (Attr::String("x".into()), "\"x\""),
            (Attr::TimestampNanoseconds(1_700_000_000_000_000_000), "\"2023-11-14T22:13:20Z\""),
            (Attr::TimestampNanoseconds(1_500_000_000), "\"1970-01-01T00:00:01.500Z\""),
        ];
        for (a, json) in cases {
            assert_eq!(serde_json::to_string(&a).unwrap(), json);
            assert_eq!(serde_json::from_str::<Attr>(json).unwrap(), a);
        }
    }

    #[test]
    fn untagged_order() {
        assert_eq!(serde_json::from_str::<Attr>("\"not-a-date\"").unwrap(), Attr::String("not-a-date".into()));
        assert_eq!(serde_json::from_str::<Attr>("\"2023-11-14T23:13:20+01:00\"").unwrap(), Attr::TimestampNanoseconds(1_700_000_000_000_000_000));
        assert_eq!(serde_json::from_str::<Attr>("18446744073709551615").unwrap(), Attr::Float64(u64::MAX as f64));
    }

    #[test]
    fn msgpack_round_trip_keeps_nan() {
        for a in [Attr::Bool(false), Attr::Int64(-5), Attr::Float64(f64::NAN), Attr::String("s".into()), Attr::TimestampNanoseconds(3)] {
            let b = rmp_serde::to_vec_named(&a).unwrap();
            let back: Attr = rmp_serde::from_slice(&b).unwrap();
            match (&a, &back) {
                (Attr::Float64(x), Attr::Float64(y)) => assert!(x.is_nan() && y.is_nan()),
                _ => assert_eq!(a, back),
            }
        }
    }
}
