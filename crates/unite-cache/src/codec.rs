//! Value codecs and the stored envelope (header + payload) shared by L1 and L2.

use fred::bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// How values are serialized for Redis (and weighed for L1).
///
/// The default, [`Codec::MessagePack`], is compact and self-describing: every serde feature
/// works with it (untagged enums, `skip_serializing_if`, `serde_json::Value`, …), and structs are
/// written with their field names so that adding a `#[serde(default)]` field does not invalidate
/// what is already cached. [`Codec::Json`] is easier to read with `redis-cli`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// MessagePack through `rmp-serde`, structs as maps (field names kept).
    #[default]
    MessagePack,
    /// JSON through `serde_json`.
    Json,
}

impl Codec {
    /// The id stored in the envelope header, so a payload written with another codec reads
    /// as a miss instead of garbage.
    const fn id(self) -> u8 {
        match self {
            Self::MessagePack => 1,
            Self::Json => 2,
        }
    }

    fn encode_into<T: Serialize + ?Sized>(self, value: &T, buf: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            Self::MessagePack => rmp_serde::encode::write_named(buf, value).map_err(Error::codec),
            Self::Json => serde_json::to_writer(buf, value).map_err(Error::codec),
        }
    }

    /// Serializes `value` as the cache writes a value's payload (what follows the entry's
    /// header in Redis).
    ///
    /// # Errors
    /// [`Error::Codec`] when serde refuses the value (a map with non-string keys in JSON, say).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, Error> {
        let mut buf = Vec::new();
        self.encode_into(value, &mut buf)?;
        Ok(buf)
    }

    /// Deserializes a payload written by [`Codec::encode`].
    ///
    /// # Errors
    /// [`Error::Codec`] for bytes that are not a `T` in this codec; never a panic, whatever the
    /// bytes.
    pub fn decode<T: DeserializeOwned>(self, payload: &[u8]) -> Result<T, Error> {
        match self {
            Self::MessagePack => rmp_serde::from_slice(payload).map_err(Error::codec),
            Self::Json => serde_json::from_slice(payload).map_err(Error::codec),
        }
    }

    /// Reads an entry as the cache stores it in Redis (a header, then the payload), for tools
    /// that inspect Redis directly: `Ok(None)` is a cached "not found".
    ///
    /// ```
    /// use unite_cache::Codec;
    /// assert!(Codec::MessagePack.decode_entry::<String>(b"not an entry").is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::Codec`] for bytes that are not an entry written with this codec (truncated,
    /// corrupt, another format or codec) or whose payload is not a `T`; never a panic.
    pub fn decode_entry<T: DeserializeOwned>(self, stored: &[u8]) -> Result<Option<T>, Error> {
        Envelope::parse(Bytes::copy_from_slice(stored), self)
            .ok_or_else(|| Error::codec("not a cache entry written with this codec"))?
            .decode(self)
    }
}

/// Envelope layout (little endian):
///
/// | bytes | field |
/// |---|---|
/// | 0 | magic / format version (`0xC1`) |
/// | 1 | flags: bit 0 = negative entry ("not found"), bits 4..7 = codec id |
/// | 2..10 | written-at, ms since the Unix epoch |
/// | 10..18 | expires-at (end of freshness), ms since the Unix epoch |
/// | 18.. | payload (empty for a negative entry) |
pub(crate) const HEADER_LEN: usize = 18;
const MAGIC: u8 = 0xC1;
const NEGATIVE: u8 = 0b1;

/// The times carried by an entry, identical in L1 and L2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Times {
    pub(crate) written_at: u64,
    pub(crate) expires_at: u64,
}

impl Times {
    /// Fresh: before `expires_at`.
    #[inline]
    pub(crate) fn is_fresh(&self, now: u64) -> bool {
        now < self.expires_at
    }

    /// Past `fraction` of its lifetime: due for a refresh-ahead.
    #[inline]
    pub(crate) fn is_due(&self, now: u64, fraction: f64) -> bool {
        let life = self.expires_at.saturating_sub(self.written_at);
        // Precision loss is irrelevant at millisecond TTLs below 2^52 ms.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let due_at = self.written_at + (life as f64 * fraction) as u64;
        now >= due_at
    }
}

/// An envelope read back and checked.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) times: Times,
    pub(crate) negative: bool,
    pub(crate) bytes: Bytes,
}

impl Envelope {
    /// Parses and checks the header. `None` = not something this codec wrote (corrupt,
    /// truncated, another format or another codec).
    pub(crate) fn parse(bytes: Bytes, codec: Codec) -> Option<Self> {
        if bytes.len() < HEADER_LEN || bytes[0] != MAGIC {
            return None;
        }
        let flags = bytes[1];
        if flags >> 4 != codec.id() || flags & 0b0000_1110 != 0 {
            return None;
        }
        let negative = flags & NEGATIVE != 0;
        if negative && bytes.len() != HEADER_LEN {
            return None;
        }
        let written_at = u64::from_le_bytes(bytes[2..10].try_into().ok()?);
        let expires_at = u64::from_le_bytes(bytes[10..18].try_into().ok()?);
        if expires_at < written_at {
            return None;
        }
        Some(Self {
            times: Times {
                written_at,
                expires_at,
            },
            negative,
            bytes,
        })
    }

    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// Decodes the payload; `Ok(None)` for a negative entry.
    pub(crate) fn decode<T: DeserializeOwned>(&self, codec: Codec) -> Result<Option<T>, Error> {
        if self.negative {
            Ok(None)
        } else {
            codec.decode(self.payload()).map(Some)
        }
    }
}

/// Encodes `value` (or a negative entry for `None`) into an envelope, refusing a payload over
/// `limit` bytes.
pub(crate) fn encode<T: Serialize + ?Sized>(
    codec: Codec,
    value: Option<&T>,
    times: Times,
    limit: usize,
) -> Result<Bytes, Error> {
    let mut buf = Vec::with_capacity(64);
    buf.push(MAGIC);
    buf.push(codec.id() << 4 | u8::from(value.is_none()));
    buf.extend_from_slice(&times.written_at.to_le_bytes());
    buf.extend_from_slice(&times.expires_at.to_le_bytes());
    if let Some(value) = value {
        codec.encode_into(value, &mut buf)?;
    }
    let size = buf.len() - HEADER_LEN;
    if size > limit {
        return Err(Error::ValueTooLarge { size, limit });
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        email: Option<String>,
    }

    const T: Times = Times {
        written_at: 1_000,
        expires_at: 61_000,
    };

    fn user() -> User {
        User {
            id: 7,
            name: "Ada".into(),
            email: None,
        }
    }

    #[test]
    fn round_trips_with_both_codecs() {
        for codec in [Codec::MessagePack, Codec::Json] {
            let bytes = encode(codec, Some(&user()), T, 1024).unwrap();
            let env = Envelope::parse(bytes, codec).unwrap();
            assert_eq!(env.times, T);
            assert!(!env.negative);
            assert_eq!(env.decode::<User>(codec).unwrap(), Some(user()));
        }
    }

    #[test]
    fn json_floats_round_trip_exactly() {
        // Found by tests/fuzz_props.rs: serde_json's default float parsing came back 1 ULP off.
        let x = -1.170_396_975_876_968_6e266_f64;
        let bytes = Codec::Json.encode(&x).unwrap();
        assert_eq!(
            Codec::Json.decode::<f64>(&bytes).unwrap().to_bits(),
            x.to_bits()
        );
    }

    #[test]
    fn negative_entries_have_no_payload() {
        let bytes = encode::<User>(Codec::MessagePack, None, T, 1024).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN);
        let env = Envelope::parse(bytes, Codec::MessagePack).unwrap();
        assert!(env.negative);
        assert_eq!(env.decode::<User>(Codec::MessagePack).unwrap(), None);
    }

    #[test]
    fn refuses_values_over_the_limit() {
        let big = "x".repeat(2000);
        match encode(Codec::MessagePack, Some(&big), T, 1000) {
            Err(Error::ValueTooLarge { size, limit }) => {
                assert!(size > 2000);
                assert_eq!(limit, 1000);
            }
            other => panic!("expected ValueTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn garbage_and_foreign_codecs_do_not_parse() {
        let json = encode(Codec::Json, Some(&user()), T, 1024).unwrap();
        assert!(Envelope::parse(json.clone(), Codec::MessagePack).is_none());
        assert!(
            Envelope::parse(
                Bytes::from_static(b"hello world, not an envelope"),
                Codec::Json
            )
            .is_none()
        );
        assert!(Envelope::parse(Bytes::from_static(b""), Codec::Json).is_none());
        assert!(Envelope::parse(json.slice(..HEADER_LEN - 1), Codec::Json).is_none());
        // A valid header over a payload that is not the type: parse passes, decode errors.
        let env = Envelope::parse(
            encode(Codec::Json, Some(&1_u8), T, 1024).unwrap(),
            Codec::Json,
        )
        .unwrap();
        assert!(env.decode::<User>(Codec::Json).is_err());
    }

    #[test]
    fn due_point_is_a_fraction_of_the_lifetime() {
        assert!(!T.is_due(45_000, 0.8));
        assert!(T.is_due(49_000, 0.8));
        assert!(T.is_fresh(60_999));
        assert!(!T.is_fresh(61_000));
    }
}
