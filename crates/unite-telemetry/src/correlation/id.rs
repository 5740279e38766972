//! The correlation id (= W3C trace id) and the `traceparent` header.

use std::fmt;

use crate::TelemetryError;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Where a request's [`CorrelationId`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdSource {
    /// A valid W3C `traceparent` header: the request continues the caller's trace.
    TraceParent,
    /// A valid `x-request-id` header.
    RequestId,
    /// A valid `x-correlation-id` header.
    CorrelationId,
    /// None was sent (or inbound ids are not trusted, or the ones sent were malformed):
    /// a fresh random id.
    Generated,
}

/// A parsed W3C `traceparent` header (version `00`).
///
/// Parsing is strict, as the W3C Trace Context spec asks: exactly 55 characters, version
/// `00`, lowercase hex, a non-zero trace id and parent id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value. The error says what was wrong, never what was sent.
    ///
    /// ```
    /// use unite_telemetry::TraceParent;
    ///
    /// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// assert_eq!(tp.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
    /// assert!(tp.is_sampled());
    /// assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_err());
    /// assert!(TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_err());
    /// ```
    pub fn parse(value: &str) -> Result<Self, TelemetryError> {
        let b = value.as_bytes();
        if b.len() != 55 {
            return Err(TelemetryError::InvalidId(
                "traceparent must be 55 characters",
            ));
        }
        if &b[..2] != b"00" {
            return Err(TelemetryError::InvalidId("unsupported traceparent version"));
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TelemetryError::InvalidId("malformed traceparent"));
        }
        let trace_id = parse_lower_hex(&b[3..35]).ok_or(TelemetryError::InvalidId(
            "traceparent trace id is not lowercase hex",
        ))?;
        let parent_id = parse_lower_hex(&b[36..52]).ok_or(TelemetryError::InvalidId(
            "traceparent parent id is not lowercase hex",
        ))?;
        let flags = parse_lower_hex(&b[53..55]).ok_or(TelemetryError::InvalidId(
            "traceparent flags are not lowercase hex",
        ))?;
        if trace_id == 0 {
            return Err(TelemetryError::InvalidId(
                "traceparent trace id is all zeros",
            ));
        }
        if parent_id == 0 {
            return Err(TelemetryError::InvalidId(
                "traceparent parent id is all zeros",
            ));
        }
        // The widths above bound the values: 16 hex digits fit u64, 2 fit u8.
        Ok(Self {
            trace_id,
            parent_id: parent_id as u64,
            flags: flags as u8,
        })
    }

    /// The 128-bit trace id.
    #[must_use]
    pub const fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The caller's span id.
    #[must_use]
    pub const fn parent_id(&self) -> u64 {
        self.parent_id
    }

    /// The trace flags byte.
    #[must_use]
    pub const fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller sampled (recorded) this trace.
    #[must_use]
    pub const fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

fn parse_lower_hex(digits: &[u8]) -> Option<u128> {
    let mut v: u128 = 0;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(n);
    }
    Some(v)
}

fn parse_any_hex(digits: &[u8]) -> Option<u128> {
    let mut v: u128 = 0;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(n);
    }
    Some(v)
}

/// Parses an `x-request-id` / `x-correlation-id` value into a 128-bit id: 32 hex digits, or a
/// UUID (`8-4-4-4-12` hex digits with hyphens), either case; never all zeros.
pub(crate) fn parse_request_id(value: &str) -> Result<u128, TelemetryError> {
    let b = value.as_bytes();
    let id = match b.len() {
        32 => parse_any_hex(b).ok_or(TelemetryError::InvalidId("request id is not hex"))?,
        36 => {
            if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
                return Err(TelemetryError::InvalidId("request id is not a UUID"));
            }
            let mut digits = [0u8; 32];
            let mut n = 0;
            for &c in b.iter().filter(|&&c| c != b'-') {
                if n == 32 {
                    return Err(TelemetryError::InvalidId("request id is not a UUID"));
                }
                digits[n] = c;
                n += 1;
            }
            if n != 32 {
                return Err(TelemetryError::InvalidId("request id is not a UUID"));
            }
            parse_any_hex(&digits).ok_or(TelemetryError::InvalidId("request id is not hex"))?
        }
        _ => {
            return Err(TelemetryError::InvalidId(
                "request id must be 32 hex digits or a UUID",
            ));
        }
    };
    if id == 0 {
        return Err(TelemetryError::InvalidId("request id is all zeros"));
    }
    Ok(id)
}

fn encode_hex<const N: usize>(mut v: u128) -> [u8; N] {
    let mut out = [b'0'; N];
    for slot in out.iter_mut().rev() {
        *slot = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
    out
}

fn ascii(bytes: &[u8]) -> &str {
    // Only ever called on buffers filled from `HEX`, which are ASCII.
    std::str::from_utf8(bytes).unwrap_or_default()
}

pub(crate) fn random_nonzero_u128() -> u128 {
    loop {
        let v: u128 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

pub(crate) fn random_nonzero_u64() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

/// A request's correlation id, which is also its W3C / OpenTelemetry trace id: 32 lowercase
/// hex digits. It carries the id of the request's own span too, for the `traceparent` the
/// response returns.
///
/// The correlation layer puts one in every request's extensions; handlers read it with
/// `req.extensions().get::<CorrelationId>()` (or axum's `Extension<CorrelationId>`).
///
/// ```
/// use unite_telemetry::{CorrelationId, IdSource};
///
/// let id = CorrelationId::from_request_id("6F9619FF-8B86-D011-B42D-00CF4FC964FF").unwrap();
/// assert_eq!(id.as_str(), "6f9619ff8b86d011b42d00cf4fc964ff");
/// assert_eq!(id.source(), IdSource::RequestId);
/// assert_eq!(id.traceparent().len(), 55);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CorrelationId {
    trace_id: u128,
    span_id: u64,
    parent_span_id: Option<u64>,
    sampled: bool,
    source: IdSource,
    replaced: bool,
    hex: [u8; 32],
    span_hex: [u8; 16],
}

impl CorrelationId {
    /// A fresh random id (and a fresh span id).
    #[must_use]
    pub fn generate() -> Self {
        Self::new(
            random_nonzero_u128(),
            random_nonzero_u64(),
            None,
            false,
            IdSource::Generated,
        )
    }

    /// Continues the trace of a `traceparent`: same trace id, a new span id whose parent is the
    /// caller's span, the caller's sampling decision.
    #[must_use]
    pub fn from_trace_parent(tp: &TraceParent) -> Self {
        Self::new(
            tp.trace_id,
            random_nonzero_u64(),
            Some(tp.parent_id),
            tp.is_sampled(),
            IdSource::TraceParent,
        )
    }

    /// Parses an `x-request-id` value: 32 hex digits or a UUID, either case, not all zeros.
    /// A UUID maps to its 32 hex digits, lowercased.
    pub fn from_request_id(value: &str) -> Result<Self, TelemetryError> {
        let trace_id = parse_request_id(value)?;
        Ok(Self::new(
            trace_id,
            random_nonzero_u64(),
            None,
            false,
            IdSource::RequestId,
        ))
    }

    pub(crate) fn new(
        trace_id: u128,
        span_id: u64,
        parent_span_id: Option<u64>,
        sampled: bool,
        source: IdSource,
    ) -> Self {
        Self {
            trace_id,
            span_id,
            parent_span_id,
            sampled,
            source,
            replaced: false,
            hex: encode_hex::<32>(trace_id),
            span_hex: encode_hex::<16>(u128::from(span_id)),
        }
    }

    pub(crate) fn with_source(mut self, source: IdSource) -> Self {
        self.source = source;
        self
    }

    pub(crate) fn with_replaced(mut self, replaced: bool) -> Self {
        self.replaced = replaced;
        self
    }

    pub(crate) fn with_span(mut self, trace_id: u128, span_id: u64, sampled: bool) -> Self {
        self.trace_id = trace_id;
        self.span_id = span_id;
        self.sampled = sampled;
        self.hex = encode_hex::<32>(trace_id);
        self.span_hex = encode_hex::<16>(u128::from(span_id));
        self
    }

    /// The id as 32 lowercase hex digits (the trace id).
    #[must_use]
    pub fn as_str(&self) -> &str {
        ascii(&self.hex)
    }

    /// The 128-bit trace id.
    #[must_use]
    pub const fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The id of the request's span.
    #[must_use]
    pub const fn span_id(&self) -> u64 {
        self.span_id
    }

    /// The request span's id as 16 lowercase hex digits.
    #[must_use]
    pub fn span_id_str(&self) -> &str {
        ascii(&self.span_hex)
    }

    /// The caller's span id, when the request came with a valid `traceparent`.
    #[must_use]
    pub const fn parent_span_id(&self) -> Option<u64> {
        self.parent_span_id
    }

    /// Whether the trace is sampled (recorded by OpenTelemetry, or by the caller).
    #[must_use]
    pub const fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// Where the id came from.
    #[must_use]
    pub const fn source(&self) -> IdSource {
        self.source
    }

    /// Whether the request carried a malformed id that was discarded.
    #[must_use]
    pub const fn was_replaced(&self) -> bool {
        self.replaced
    }

    /// The `traceparent` value for this request's span:
    /// `00-<trace id>-<span id>-<flags>`.
    #[must_use]
    pub fn traceparent(&self) -> String {
        let mut buf = [0u8; 55];
        self.write_traceparent(&mut buf);
        ascii(&buf).to_owned()
    }

    pub(crate) fn write_traceparent(&self, buf: &mut [u8; 55]) {
        buf[..3].copy_from_slice(b"00-");
        buf[3..35].copy_from_slice(&self.hex);
        buf[35] = b'-';
        buf[36..52].copy_from_slice(&self.span_hex);
        buf[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CorrelationId")
            .field("id", &self.as_str())
            .field("span_id", &self.span_id_str())
            .field("sampled", &self.sampled)
            .field("source", &self.source)
            .field("replaced", &self.replaced)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_valid() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.parent_id(), 0x00f0_67aa_0ba9_02b7);
        assert_eq!(tp.flags(), 1);
        let id = CorrelationId::from_trace_parent(&tp);
        assert_eq!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(id.parent_span_id(), Some(0x00f0_67aa_0ba9_02b7));
        assert!(id.is_sampled());
        let out = id.traceparent();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert_ne!(
            &out[36..52],
            "00f067aa0ba902b7",
            "the response names our span, not the caller's"
        );
        assert_eq!(TraceParent::parse(&out).unwrap().trace_id(), tp.trace_id());
    }

    #[test]
    fn traceparent_rejects() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00-4bf92f3577b34da6a3ce929d0e0e47\n6-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0é736-00f067aa0ba902b7-01",
        ];
        for b in bad {
            assert!(TraceParent::parse(b).is_err(), "{b:?}");
        }
    }

    #[test]
    fn request_ids() {
        let a = parse_request_id("0af7651916cd43dd8448eb211c80319c").unwrap();
        assert_eq!(a, 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c);
        let b = parse_request_id("0AF76519-16CD-43DD-8448-EB211C80319C").unwrap();
        assert_eq!(a, b);
        for bad in [
            "",
            "abc",
            "00000000000000000000000000000000",
            "00000000-0000-0000-0000-000000000000",
            "0af7651916cd43dd8448eb211c80319c0",
            "0af76519-16cd-43dd-8448eb211c80319c",
            "0af76519-16cd-43dd-8448-eb211c80319-",
            "0af76519-16cd-43dd-8448-eb211c8031-9c",
            "0af7651916cd43dd8448eb211c80319\u{7}",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert!(parse_request_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_well_formed_and_distinct() {
        let a = CorrelationId::generate();
        let b = CorrelationId::generate();
        assert_ne!(a.trace_id(), b.trace_id());
        for id in [a, b] {
            assert_eq!(id.as_str().len(), 32);
            assert!(
                id.as_str()
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            );
            assert_eq!(id.span_id_str().len(), 16);
            assert_eq!(parse_request_id(id.as_str()).unwrap(), id.trace_id());
            assert!(!id.is_sampled());
            assert_eq!(id.traceparent().len(), 55);
        }
        assert_eq!(a.to_string(), a.as_str());
    }
}
