//! Fuzz-style properties of the correlation-id parsers and the correlation layer: arbitrary
//! input never panics, and whatever id comes out is always a valid one.
//!
//! 4,096 cases a property by default; `PROPTEST_CASES=10000000` for a long run (see
//! `docs/RELIABILITY.md`).

use std::convert::Infallible;

use http::{HeaderName, HeaderValue, Request, Response};
use proptest::prelude::*;
use tower::{Layer, ServiceExt};
use unite_telemetry::{CorrelationId, CorrelationLayer, IdSource, TraceParent};

/// Cases a property: `PROPTEST_CASES` when set, else a count that keeps CI fast.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 4096;
    }
    config.failure_persistence = None;
    config
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The checks every id handed out must pass, whatever came in.
fn assert_valid(id: &CorrelationId) -> Result<(), TestCaseError> {
    prop_assert!(is_lower_hex(id.as_str(), 32), "{:?}", id.as_str());
    prop_assert_ne!(id.trace_id(), 0);
    prop_assert_eq!(id.as_str(), format!("{:032x}", id.trace_id()));
    prop_assert!(is_lower_hex(id.span_id_str(), 16));
    prop_assert_ne!(id.span_id(), 0);
    let tp = TraceParent::parse(&id.traceparent());
    prop_assert!(
        tp.is_ok(),
        "own traceparent {:?} does not parse",
        id.traceparent()
    );
    prop_assert_eq!(tp.map(|t| t.trace_id()).ok(), Some(id.trace_id()));
    let again = CorrelationId::from_request_id(id.as_str());
    prop_assert_eq!(again.map(|a| a.trace_id()).ok(), Some(id.trace_id()));
    Ok(())
}

/// Strings near the accepted shapes, so the properties reach deep into the parsers: the right
/// alphabet and lengths around 32, 36 and 55, with the odd stray character.
fn near_id() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-fA-F-]{30,38}",
        "[0-9a-f]{8}-[0-9a-fA-F]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "0[0-9a-f]-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}",
        "00-[0-9a-fA-F]{30,34}-[0-9a-f]{14,18}-[0-9a-fx]{1,3}",
        "00-0{32}-[0-9a-f]{16}-01",
        "00-[0-9a-f]{32}-0{16}-01",
        "[0\\-a-f\u{e9}\u{0}\n ]{0,60}",
        ".{0,64}",
    ]
}

/// Header values as a client could send them: any bytes a `HeaderValue` accepts (visible
/// ASCII, tab, space, obs-text 0x80-0xFF), often close to an id.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        near_id().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..80),
    ]
    .prop_map(|bytes| {
        bytes
            .into_iter()
            .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
            .collect()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn traceparent_parse_never_panics_and_accepts_only_the_strict_form(s in near_id()) {
        if let Ok(tp) = TraceParent::parse(&s) {
            prop_assert_ne!(tp.trace_id(), 0);
            prop_assert_ne!(tp.parent_id(), 0);
            // Accepted means: exactly the canonical rendering of what was parsed.
            let canonical = format!("00-{:032x}-{:016x}-{:02x}", tp.trace_id(), tp.parent_id(), tp.flags());
            prop_assert_eq!(&s, &canonical);
            let id = CorrelationId::from_trace_parent(&tp);
            prop_assert_eq!(id.trace_id(), tp.trace_id());
            prop_assert_eq!(id.source(), IdSource::TraceParent);
            assert_valid(&id)?;
        }
    }

    #[test]
    fn request_id_parse_never_panics_and_yields_a_valid_id(s in near_id()) {
        if let Ok(id) = CorrelationId::from_request_id(&s) {
            assert_valid(&id)?;
            // The id is the input's hex digits, lowercased: nothing invented, nothing dropped.
            let digits: String = s.chars().filter(|&c| c != '-').collect::<String>().to_ascii_lowercase();
            prop_assert_eq!(id.as_str(), digits);
            prop_assert!(s.len() == 32 || s.len() == 36, "{:?}", s);
        }
    }

    #[test]
    fn the_layer_always_hands_out_a_valid_id_and_never_forwards_a_bad_one(
        traceparent in proptest::option::of(header_value()),
        request_id in proptest::option::of(header_value()),
        correlation_id in proptest::option::of(header_value()),
        trust in any::<bool>(),
    ) {
        let mut request = Request::builder().uri("/x").body(()).unwrap_or_default();
        let sent: Vec<(&str, Option<String>)> = [
            ("traceparent", &traceparent),
            ("x-request-id", &request_id),
            ("x-correlation-id", &correlation_id),
        ]
        .into_iter()
        .map(|(name, value)| {
            if let Some(bytes) = value
                && let Ok(v) = HeaderValue::from_bytes(bytes)
            {
                request.headers_mut().insert(HeaderName::from_static(name), v);
            }
            (name, value.as_ref().and_then(|b| String::from_utf8(b.clone()).ok()))
        })
        .collect();

        // The inner service answers what it was given: the id and the headers it saw.
        let inner = tower::service_fn(|req: Request<()>| async move {
            Ok::<_, Infallible>(Response::new((
                req.extensions().get::<CorrelationId>().copied(),
                req.headers().clone(),
            )))
        });
        let service = CorrelationLayer::new().trust_inbound(trust).layer(inner);
        let response = runtime().block_on(service.oneshot(request));
        let Ok(response) = response;
        let (id, seen) = response.body();
        let id = id.ok_or_else(|| TestCaseError::fail("no CorrelationId in the extensions"))?;
        assert_valid(&id)?;

        // Downstream sees the normalised id, and no inbound header that was refused.
        prop_assert_eq!(seen.get("x-request-id").and_then(|v| v.to_str().ok()), Some(id.as_str()));
        if let Some(v) = seen.get("traceparent") {
            let v = v.to_str().unwrap_or_default();
            prop_assert!(TraceParent::parse(v).is_ok(), "a malformed traceparent was forwarded: {:?}", v);
        }
        if let Some(v) = seen.get("x-correlation-id") {
            let v = v.to_str().unwrap_or_default();
            prop_assert!(CorrelationId::from_request_id(v).is_ok(), "forwarded: {:?}", v);
        }
        // The response says the same id, in both forms.
        prop_assert_eq!(
            response.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
            Some(id.as_str())
        );
        let tp = response.headers().get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default();
        prop_assert_eq!(TraceParent::parse(tp).map(|t| t.trace_id()).ok(), Some(id.trace_id()));
        // Where it came from is consistent with what was sent.
        match id.source() {
            IdSource::Generated => {}
            IdSource::TraceParent => prop_assert!(trust && sent[0].1.is_some()),
            IdSource::RequestId => prop_assert!(trust && sent[1].1.is_some()),
            IdSource::CorrelationId => prop_assert!(trust && sent[2].1.is_some()),
            _ => {}
        }
        if !trust {
            prop_assert_eq!(id.source(), IdSource::Generated);
        }
    }
}

/// One current-thread runtime per test thread, reused by every case.
fn runtime() -> &'static tokio::runtime::Runtime {
    thread_local! {
        static RT: &'static tokio::runtime::Runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime"),
        ));
    }
    RT.with(|rt| *rt)
}
