//! The JSON line format, captured through a shared-buffer writer.

mod support;

use std::time::Duration;

use support::{Buffer, is_lower_hex, str_field};
use tracing::{Instrument, info, info_span, warn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::prelude::*;
use unite_telemetry::json_layer;

fn subscriber(buf: &Buffer) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::registry().with(json_layer(buf.clone()))
}

const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

#[test]
fn every_line_is_a_json_object_with_the_standard_keys() {
    let buf = Buffer::default();
    tracing::subscriber::with_default(subscriber(&buf), || {
        info!("plain");
        warn!(
            count = 3u64,
            ratio = 0.5,
            ok = true,
            neg = -7i64,
            big = 1u128 << 100,
            "with fields"
        );
        info!(text = "quote\" newline\n tab\t nul\0 é", dbg = ?vec!["a", "b"], "escapes");
        info!(
            nan = f64::NAN,
            inf = f64::INFINITY,
            min = i64::MIN,
            max = u64::MAX,
            zero = 0u64,
            "extremes"
        );
        let err = std::io::Error::other("disk \"full\"");
        info!(
            error = &err as &(dyn std::error::Error + 'static),
            "an error"
        );
        info!(
            level = "mine",
            target = "mine",
            timestamp = 1,
            "reserved names"
        );
    });
    let lines = buf.lines();
    assert_eq!(lines.len(), 6);
    for line in &lines {
        let ts = str_field(line, "timestamp").expect("timestamp");
        // RFC 3339, UTC: 2026-11-22T19:01:34.123456Z
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(
            ts.ends_with('Z') && &ts[4..5] == "-" && &ts[10..11] == "T",
            "{ts}"
        );
        assert!(str_field(line, "level").is_some());
        assert_eq!(str_field(line, "target"), Some("json_logs"));
        assert!(line.get("correlation_id").is_none(), "no span, no id");
    }
    assert_eq!(str_field(&lines[0], "message"), Some("plain"));
    assert_eq!(str_field(&lines[0], "level"), Some("INFO"));
    let l = &lines[1];
    assert_eq!(str_field(l, "level"), Some("WARN"));
    assert_eq!(l["count"], 3);
    assert_eq!(l["ratio"], 0.5);
    assert_eq!(l["ok"], true);
    assert_eq!(l["neg"], -7);
    assert!(
        buf.text().contains(&format!("\"big\":{}", 1u128 << 100)),
        "u128 written exactly"
    );
    assert_eq!(
        str_field(&lines[2], "text"),
        Some("quote\" newline\n tab\t nul\0 é")
    );
    assert_eq!(str_field(&lines[2], "dbg"), Some(r#"["a", "b"]"#));
    assert_eq!(str_field(&lines[3], "nan"), Some("NaN"));
    assert_eq!(str_field(&lines[3], "inf"), Some("inf"));
    assert_eq!(lines[3]["min"], i64::MIN);
    assert_eq!(lines[3]["max"], u64::MAX);
    assert_eq!(lines[3]["zero"], 0);
    assert_eq!(str_field(&lines[4], "error"), Some("disk \"full\""));
    let r = &lines[5];
    assert_eq!(
        str_field(r, "level"),
        Some("INFO"),
        "an event field cannot overwrite the level"
    );
    assert_eq!(str_field(r, "fields.level"), Some("mine"));
    assert_eq!(str_field(r, "fields.target"), Some("mine"));
    assert_eq!(r["fields.timestamp"], 1);
}

#[test]
fn ids_of_the_enclosing_span_are_lifted_to_the_top_level() {
    let buf = Buffer::default();
    tracing::subscriber::with_default(subscriber(&buf), || {
        let request = info_span!(
            "request",
            correlation_id = ID,
            trace_id = ID,
            span_id = SPAN,
            other = 1
        );
        let _r = request.enter();
        info!("in request");
        let child = info_span!("pool.query", db = "x");
        let _c = child.enter();
        info!(rows = 2, "in child span");
        // A nested span that declares only a span id inherits the rest.
        let inner = info_span!("inner", span_id = "1111111111111111");
        inner.in_scope(|| info!("in inner span"));
    });
    let lines = buf.lines();
    assert_eq!(lines.len(), 3);
    for line in &lines[..2] {
        assert_eq!(str_field(line, "correlation_id"), Some(ID));
        assert_eq!(str_field(line, "trace_id"), Some(ID));
        assert_eq!(str_field(line, "span_id"), Some(SPAN));
        assert!(line.get("other").is_none(), "only the ids are lifted");
    }
    assert_eq!(str_field(&lines[2], "correlation_id"), Some(ID));
    assert_eq!(str_field(&lines[2], "span_id"), Some("1111111111111111"));
}

#[test]
fn ids_recorded_after_creation_are_picked_up() {
    let buf = Buffer::default();
    tracing::subscriber::with_default(subscriber(&buf), || {
        let span = info_span!(
            "request",
            correlation_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty
        );
        span.in_scope(|| info!("before"));
        span.record("correlation_id", ID);
        span.in_scope(|| info!("after"));
    });
    let lines = buf.lines();
    assert!(lines[0].get("correlation_id").is_none());
    assert_eq!(str_field(&lines[1], "correlation_id"), Some(ID));
}

#[test]
fn an_id_recorded_again_replaces_only_itself() {
    let buf = Buffer::default();
    tracing::subscriber::with_default(subscriber(&buf), || {
        let span = info_span!(
            "request",
            correlation_id = ID,
            trace_id = ID,
            span_id = SPAN
        );
        span.record("span_id", "2222222222222222");
        span.in_scope(|| info!("after"));
    });
    let lines = buf.lines();
    assert_eq!(str_field(&lines[0], "correlation_id"), Some(ID));
    assert_eq!(str_field(&lines[0], "trace_id"), Some(ID));
    assert_eq!(str_field(&lines[0], "span_id"), Some("2222222222222222"));
}

#[test]
fn log_crate_records_use_their_real_target_without_log_fields() {
    let buf = Buffer::default();
    let _ = tracing_log::LogTracer::init();
    tracing::subscriber::with_default(subscriber(&buf), || {
        log::info!(target: "tokio_postgres::connection", "from the log crate");
    });
    let lines = buf.lines();
    let line = lines
        .iter()
        .find(|l| str_field(l, "message") == Some("from the log crate"))
        .expect("bridged line");
    assert_eq!(
        str_field(line, "target"),
        Some("tokio_postgres::connection")
    );
    assert!(
        line.as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("log.")),
        "{line}"
    );
}

struct Fixed;
impl FormatTime for Fixed {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str("2026-01-02T03:04:05.000006Z")
    }
}

#[test]
fn exact_line_with_a_fixed_clock() {
    let buf = Buffer::default();
    let subscriber = tracing_subscriber::registry()
        .with(unite_telemetry::json_layer_with_timer(buf.clone(), Fixed));
    tracing::subscriber::with_default(subscriber, || {
        info_span!(
            "request",
            correlation_id = ID,
            trace_id = ID,
            span_id = SPAN
        )
        .in_scope(|| info!(target: "app", user = 7, "hi"));
    });
    assert_eq!(
        buf.text(),
        format!(
            "{{\"timestamp\":\"2026-01-02T03:04:05.000006Z\",\"level\":\"INFO\",\"target\":\"app\",\
             \"correlation_id\":\"{ID}\",\"trace_id\":\"{ID}\",\"span_id\":\"{SPAN}\",\
             \"message\":\"hi\",\"user\":7}}\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spans_never_mix_ids() {
    use tracing::instrument::WithSubscriber;
    let buf = Buffer::default();
    let dispatch = tracing::Dispatch::new(subscriber(&buf));
    let mut tasks = Vec::new();
    for n in 0..64u32 {
        let id = format!("{:032x}", u128::from(n) + 1);
        let span = tracing::dispatcher::with_default(
            &dispatch,
            || info_span!("request", correlation_id = %id, trace_id = %id, span_id = "0000000000000001"),
        );
        let task = async move {
            for step in 0..5 {
                info!(expect = %id, step, "step");
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_micros(u64::from(n % 7))).await;
            }
        }
        .instrument(span)
        .with_subscriber(dispatch.clone());
        tasks.push(tokio::spawn(task));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let lines = buf.lines();
    assert_eq!(lines.len(), 64 * 5);
    for line in &lines {
        assert_eq!(
            str_field(line, "correlation_id"),
            str_field(line, "expect"),
            "{line}"
        );
        assert!(is_lower_hex(str_field(line, "trace_id").unwrap(), 32));
    }
}

#[tokio::test]
async fn the_id_survives_spawn_when_the_span_is_carried() {
    use tracing::instrument::WithSubscriber;
    let buf = Buffer::default();
    let _guard = tracing::subscriber::set_default(subscriber(&buf));
    let span = info_span!(
        "request",
        correlation_id = ID,
        trace_id = ID,
        span_id = SPAN
    );
    async {
        let carried = tokio::spawn(
            async { info!("spawned with the span") }
                .instrument(tracing::Span::current())
                .with_current_subscriber(),
        );
        let not_carried =
            tokio::spawn(async { info!("spawned without the span") }.with_current_subscriber());
        carried.await.unwrap();
        not_carried.await.unwrap();
    }
    .instrument(span)
    .await;
    let lines = buf.lines();
    let find = |m: &str| {
        lines
            .iter()
            .find(|l| str_field(l, "message") == Some(m))
            .unwrap()
            .clone()
    };
    assert_eq!(
        str_field(&find("spawned with the span"), "correlation_id"),
        Some(ID)
    );
    assert!(
        find("spawned without the span")
            .get("correlation_id")
            .is_none()
    );
}
