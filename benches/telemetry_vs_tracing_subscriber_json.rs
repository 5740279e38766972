//! One event with five fields inside a request span, formatted as JSON into a sink:
//! unite-telemetry's layer against tracing-subscriber's own JSON layer, in the same run.
//! Both write synchronously to `io::sink`, so the formatter is what is measured.

use criterion::{Criterion, criterion_group, criterion_main};
use tracing::{info, info_span};
use tracing_subscriber::prelude::*;

const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

fn event_in_request_span(c: &mut Criterion, name: &str, dispatch: tracing::Dispatch) {
    tracing::dispatcher::with_default(&dispatch, || {
        let span = info_span!(
            "request",
            correlation_id = ID,
            trace_id = ID,
            span_id = SPAN,
            http.request.method = "GET",
            url.path = "/api/contacts/42"
        );
        let _entered = span.enter();
        c.bench_function(name, |b| {
            b.iter(|| {
                info!(
                    contact_id = 42u64,
                    cache = "l1",
                    hit = true,
                    elapsed_ms = 1.25f64,
                    user = %"u-1234",
                    "contact loaded"
                );
            });
        });
    });
}

fn logging(c: &mut Criterion) {
    let unite = tracing_subscriber::registry().with(unite_telemetry::json_layer(std::io::sink));
    event_in_request_span(
        c,
        "json_event_in_span/unite_telemetry",
        tracing::Dispatch::new(unite),
    );

    let bare = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::sink),
    );
    event_in_request_span(
        c,
        "json_event_in_span/tracing_subscriber_json",
        tracing::Dispatch::new(bare),
    );

    // For scale: the same layer told to leave the span out (so the line has no ids at all).
    let bare_no_span = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::sink),
    );
    event_in_request_span(
        c,
        "json_event_in_span/tracing_subscriber_json_without_span",
        tracing::Dispatch::new(bare_no_span),
    );
}

criterion_group!(benches, logging);
criterion_main!(benches);
