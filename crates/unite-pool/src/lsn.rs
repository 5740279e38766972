//! `Lsn`: a position in the write-ahead log, as Postgres prints it (`16/B374D848`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A position in the primary's write-ahead log (a Postgres `pg_lsn`), ordered as the log is.
///
/// A [`Session`](crate::Session) keeps the `Lsn` of its last write so its reads stay on the
/// primary until a replica has replayed that far. Its text form is Postgres's own
/// (`"16/B374D848"`), also its serde form, so it can travel in a cookie or a header and come
/// back through [`Pool::session_after`](crate::Pool::session_after).
///
/// ```
/// let lsn: unite_pool::Lsn = "16/B374D848".parse().unwrap();
/// assert_eq!(lsn.to_string(), "16/B374D848");
/// assert!(lsn > "16/0".parse().unwrap());
/// assert!("not an lsn".parse::<unite_pool::Lsn>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(u64);

impl Lsn {
    /// The position from its 64-bit value.
    #[must_use]
    pub const fn from_u64(value: u64) -> Self {
        Self(value)
    }

    /// Its 64-bit value.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = Error;

    /// Parses `high/low`, two hexadecimal numbers of at most 8 digits each.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::config(
                "lsn",
                "is not a log position of the form `16/B374D848` (two hex numbers)",
            )
        };
        let (high, low) = s.split_once('/').ok_or_else(bad)?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 {
                return Err(bad());
            }
            u32::from_str_radix(p, 16).map_err(|_| bad())
        };
        Ok(Self((u64::from(part(high)?) << 32) | u64::from(part(low)?)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Lsn;

    #[test]
    fn parses_prints_and_orders() {
        let a: Lsn = "0/3000148".parse().unwrap();
        assert_eq!(a.as_u64(), 0x0300_0148);
        assert_eq!(a.to_string(), "0/3000148");
        let b: Lsn = "1/0".parse().unwrap();
        assert!(b > a);
        assert_eq!(Lsn::from_u64(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "x/1",
            "1/123456789",
            "1-2",
            "-1/2",
            "1/2/3",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        let json = serde_json::to_string(&lsn).unwrap();
        assert_eq!(json, "\"16/B374D848\"");
        assert_eq!(serde_json::from_str::<Lsn>(&json).unwrap(), lsn);
        assert!(serde_json::from_str::<Lsn>("\"16\"").is_err());
    }
}
