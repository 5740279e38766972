//! The JSON-lines event format.
//!
//! One line per event:
//!
//! ```text
//! {"timestamp":"2026-11-22T19:01:34.123456Z","level":"INFO","target":"unite_hub::contacts",
//!  "correlation_id":"4bf9…4736","trace_id":"4bf9…4736","span_id":"00f0…02b7",
//!  "message":"contact loaded","contact_id":42,"cache":"l1"}
//! ```
//!
//! (shown wrapped; each event is one line). `correlation_id`, `trace_id` and `span_id` come
//! from the nearest enclosing span that declares them (the correlation layer's request span)
//! and sit at the top level. The event's own fields follow at the top level too; one whose
//! name collides with a top-level key is written as `fields.<name>`.
//!
//! The formatter writes straight into the line buffer of `tracing-subscriber`'s fmt layer:
//! no intermediate JSON value, no per-event allocation. The ids of a span are rendered into
//! a JSON fragment once, when the span is created, and copied into each line.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::ops::Range;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::correlation::{CORRELATION_ID_FIELD, SPAN_ID_FIELD, TRACE_ID_FIELD};

/// Keys the formatter writes itself; an event field with one of these names is written as
/// `fields.<name>` so a line never has a duplicate key.
const RESERVED: [&str; 6] = [
    "timestamp",
    "level",
    "target",
    CORRELATION_ID_FIELD,
    TRACE_ID_FIELD,
    SPAN_ID_FIELD,
];

/// A `tracing` layer that writes JSON lines (see the [module docs](self)) to `make_writer`.
///
/// ```
/// use tracing_subscriber::prelude::*;
///
/// let subscriber = tracing_subscriber::registry().with(unite_telemetry::json_layer(std::io::sink));
/// tracing::subscriber::with_default(subscriber, || tracing::info!(answer = 42, "hello"));
/// ```
pub fn json_layer<S, W>(make_writer: W) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    json_layer_with_timer(make_writer, UtcTime)
}

/// The default clock of [`json_layer`]: the system time as RFC 3339 UTC with microseconds
/// (`2026-11-22T19:01:34.123456Z`), formatted into a stack buffer in one write.
#[derive(Debug, Clone, Copy, Default)]
pub struct UtcTime;

impl FormatTime for UtcTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        thread_local! {
            /// The last second formatted on this thread: only the microseconds change within it.
            static LAST: Cell<(u64, [u8; 27])> = const { Cell::new((u64::MAX, [0; 27])) };
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (secs, micros) = (now.as_secs(), now.subsec_micros());
        let (last_secs, mut buf) = LAST.get();
        if last_secs == secs {
            put_digits(&mut buf[20..26], u64::from(micros.min(999_999)));
        } else {
            rfc3339_micros(secs, micros, &mut buf);
            LAST.set((secs, buf));
        }
        w.write_str(std::str::from_utf8(&buf).unwrap_or("1970-01-01T00:00:00.000000Z"))
    }
}

fn put_digits(buf: &mut [u8], mut v: u64) {
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Formats seconds since the Unix epoch (plus microseconds) as `YYYY-MM-DDThh:mm:ss.uuuuuuZ`.
/// Years past 9999 are clamped to 9999-12-31T23:59:59.999999Z.
fn rfc3339_micros(secs: u64, micros: u32, buf: &mut [u8; 27]) -> &str {
    const MAX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let (secs, micros) = if secs > MAX_SECS {
        (MAX_SECS, 999_999)
    } else {
        (secs, micros.min(999_999))
    };
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Days to civil date (H. Hinnant's algorithm, shifted so that eras start on 0000-03-01).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);

    put_digits(&mut buf[0..4], year);
    buf[4] = b'-';
    put_digits(&mut buf[5..7], month);
    buf[7] = b'-';
    put_digits(&mut buf[8..10], day);
    buf[10] = b'T';
    put_digits(&mut buf[11..13], hour);
    buf[13] = b':';
    put_digits(&mut buf[14..16], minute);
    buf[16] = b':';
    put_digits(&mut buf[17..19], second);
    buf[19] = b'.';
    put_digits(&mut buf[20..26], u64::from(micros));
    buf[26] = b'Z';
    // Only ASCII digits and separators were written.
    std::str::from_utf8(buf).unwrap_or("1970-01-01T00:00:00.000000Z")
}

/// [`json_layer`] with another clock for the `timestamp` (any
/// [`FormatTime`] that writes an RFC 3339 UTC time, for example a fixed one in tests).
pub fn json_layer_with_timer<S, W, T>(
    make_writer: W,
    timer: T,
) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    T: FormatTime + Send + Sync + 'static,
{
    IdsLayer.and_then(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .fmt_fields(NoSpanFields)
            .event_format(JsonFormat { timer })
            .with_writer(make_writer),
    )
}

/// The id fields, in the order the fragment writes them.
const ID_FIELDS: [&str; 3] = [CORRELATION_ID_FIELD, TRACE_ID_FIELD, SPAN_ID_FIELD];

/// The ids a span carries, kept in the span's extensions: the JSON fragment every line in the
/// span copies, and where each (escaped) value sits in it, so that a child span inherits what
/// it does not declare. The fields' values are escaped straight into the fragment as they are
/// recorded, so a span that declares all three ids in order (the request span) allocates once;
/// inheriting or recording later writes the fragment afresh.
#[derive(Debug, Default, Clone)]
struct SpanIds {
    /// `,"correlation_id":"…","trace_id":"…","span_id":"…"` (the fields present).
    fragment: String,
    /// The escaped value of each of [`ID_FIELDS`] within `fragment`.
    values: [Option<Range<usize>>; 3],
}

impl SpanIds {
    fn is_complete(&self) -> bool {
        self.values.iter().all(Option::is_some)
    }

    fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// The escaped value of id `i`. The ranges come from [`push`](Self::push), which appends
    /// whole strings, so they always fall on character boundaries.
    fn value(&self, i: usize) -> Option<&str> {
        let r = self.values[i].clone()?;
        debug_assert!(self.fragment.get(r.clone()).is_some());
        self.fragment.get(r)
    }

    /// Appends `,"<name of id i>":"<what write appends>"`, and notes where the value is.
    fn push(&mut self, i: usize, write: impl FnOnce(&mut String)) {
        if self.fragment.capacity() == 0 {
            // The three ids of a request span fit without growing.
            self.fragment.reserve(160);
        }
        self.fragment.push_str(",\"");
        self.fragment.push_str(ID_FIELDS[i]);
        self.fragment.push_str("\":\"");
        let start = self.fragment.len();
        write(&mut self.fragment);
        self.values[i] = Some(start..self.fragment.len());
        self.fragment.push('"');
    }

    /// Whether `fragment` holds each present id once, in [`ID_FIELDS`] order, and nothing
    /// else (true as recorded from one span's fields, declared in that order).
    fn is_tidy(&self) -> bool {
        let mut end = 0;
        for (i, range) in self.values.iter().enumerate() {
            if let Some(r) = range {
                // `,"` name `":"` value `"`
                let key_start = r.start.wrapping_sub(ID_FIELDS[i].len() + 5);
                if key_start != end {
                    return false;
                }
                end = r.end + 1;
            }
        }
        end == self.fragment.len()
    }

    /// These ids, each missing one taken from `fallback`, written afresh in order.
    fn tidied(&self, fallback: Option<&SpanIds>) -> SpanIds {
        let values: [Option<&str>; 3] =
            std::array::from_fn(|i| self.value(i).or_else(|| fallback.and_then(|f| f.value(i))));
        let len: usize = values
            .iter()
            .zip(ID_FIELDS)
            .filter_map(|(v, name)| v.map(|v| name.len() + v.len() + 6))
            .sum();
        let mut out = SpanIds {
            fragment: String::with_capacity(len),
            values: Default::default(),
        };
        for (i, v) in values.into_iter().enumerate() {
            if let Some(v) = v {
                // Already escaped.
                out.push(i, |s| s.push_str(v));
            }
        }
        out
    }
}

fn declares_ids(fields: &tracing::field::FieldSet) -> bool {
    ID_FIELDS.iter().any(|name| fields.field(name).is_some())
}

/// Records the id fields of a span into a [`SpanIds`].
struct IdVisitor<'a>(&'a mut SpanIds);

fn id_index(field: &Field) -> Option<usize> {
    ID_FIELDS.iter().position(|name| *name == field.name())
}

impl Visit for IdVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(i) = id_index(field) {
            self.0.push(i, |s| push_escaped(s, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(i) = id_index(field) {
            self.0.push(i, |s| {
                let _ = write!(Escaper(s), "{value:?}");
            });
        }
    }
}

/// Captures `correlation_id` / `trace_id` / `span_id` of spans that declare them.
struct IdsLayer;

impl<S> Layer<S> for IdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !declares_ids(attrs.metadata().fields()) {
            return;
        }
        let mut ids = SpanIds::default();
        attrs.record(&mut IdVisitor(&mut ids));
        let Some(span) = ctx.span(id) else { return };
        let inherited = if ids.is_complete() {
            None
        } else {
            span.scope()
                .skip(1)
                .find_map(|s| s.extensions().get::<SpanIds>().map(|p| ids.tidied(Some(p))))
        };
        let ids = match inherited {
            Some(ids) => ids,
            None if ids.is_tidy() => ids,
            None => ids.tidied(None),
        };
        if ids.is_empty() {
            return;
        }
        span.extensions_mut().insert(ids);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut newer = SpanIds::default();
        values.record(&mut IdVisitor(&mut newer));
        if newer.is_empty() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        match ext.get_mut::<SpanIds>() {
            Some(ids) => *ids = newer.tidied(Some(ids)),
            None => ext.insert(newer.tidied(None)),
        }
    }
}

/// Span fields are not formatted by the fmt layer at all (the ids are captured by
/// [`IdsLayer`]); this saves a string per span.
struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: RecordFields>(&self, _writer: Writer<'writer>, _fields: R) -> fmt::Result {
        Ok(())
    }
}

/// The JSON event format (see the [module docs](self)).
struct JsonFormat<T> {
    timer: T,
}

thread_local! {
    /// The line being built: plain `String` pushes are inlined, where every write through
    /// the fmt layer's `Writer` is a dynamic call. The whole line then goes out in one write.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S, N, T> FormatEvent<S, N> for JsonFormat<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.format_line(ctx, &mut line, event)?;
                writer.write_str(&line)
            }
            // Re-entered (an event emitted while formatting): use a fresh buffer.
            Err(_) => {
                let mut line = String::new();
                self.format_line(ctx, &mut line, event)?;
                writer.write_str(&line)
            }
        })
    }
}

impl<T: FormatTime> JsonFormat<T> {
    fn format_line<S, N>(
        &self,
        ctx: &FmtContext<'_, S, N>,
        line: &mut String,
        event: &Event<'_>,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());

        line.push_str("{\"timestamp\":\"");
        self.timer.format_time(&mut Writer::new(line))?;
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push_str("\",\"target\":");
        push_json_str(line, meta.target());

        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                let ext = span.extensions();
                if let Some(ids) = ext.get::<SpanIds>() {
                    line.push_str(&ids.fragment);
                    break;
                }
            }
        }

        let mut visitor = JsonVisitor {
            line,
            result: Ok(()),
            skip_log_fields: normalized.is_some(),
        };
        event.record(&mut visitor);
        visitor.result?;
        line.push_str("}\n");
        Ok(())
    }
}

struct JsonVisitor<'a> {
    line: &'a mut String,
    /// A `Debug` or `Display` implementation of a field value may fail.
    result: fmt::Result,
    /// Events bridged from the `log` crate carry `log.*` fields that duplicate the metadata.
    skip_log_fields: bool,
}

impl JsonVisitor<'_> {
    /// Writes `,"name":` and returns whether the value should follow.
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.skip_log_fields && name.starts_with("log.") {
            return false;
        }
        self.line.push_str(if RESERVED.contains(&name) {
            ",\"fields."
        } else {
            ",\""
        });
        push_escaped(self.line, name);
        self.line.push_str("\":");
        true
    }

    fn quoted(&mut self, value: fmt::Arguments<'_>) {
        self.line.push('"');
        if let Err(e) = Escaper(&mut *self.line).write_fmt(value) {
            self.result = Err(e);
        }
        self.line.push('"');
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            if value.is_finite() {
                let _ = write!(self.line, "{value}");
            } else {
                let _ = write!(self.line, "\"{value}\"");
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            if value < 0 {
                self.line.push('-');
            }
            push_u64(self.line, value.unsigned_abs());
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            push_u64(self.line, value);
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        if self.key(field) {
            let _ = write!(self.line, "{value}");
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        if self.key(field) {
            let _ = write!(self.line, "{value}");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.line.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            push_json_str(self.line, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field) {
            self.quoted(format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.quoted(format_args!("{value:?}"));
        }
    }
}

/// Decimal digits of `v`, without the formatting machinery.
fn push_u64(line: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &d in &buf[i..] {
        line.push(char::from(d));
    }
}

/// What a byte turns into inside a JSON string: 0 = itself, `u` = `\u00XX`, else `\<c>`.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table
};

/// Appends `s` as a JSON string literal.
fn push_json_str(line: &mut String, s: &str) {
    line.push('"');
    push_escaped(line, s);
    line.push('"');
}

/// Appends `s` escaped for the inside of a JSON string.
fn push_escaped(line: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    // Fast path: skip whole 8-byte words that hold nothing to escape.
    let mut clean = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if word_needs_escape(u64::from_le_bytes(word)) {
            break;
        }
        clean += 8;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        // `b` is ASCII, so `i` is a char boundary.
        line.push_str(&s[start..i]);
        line.push('\\');
        if escape == b'u' {
            line.push_str("u00");
            line.push(char::from(HEX[usize::from(b >> 4)]));
            line.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            line.push(char::from(escape));
        }
        start = i + 1;
    }
    line.push_str(&s[start..]);
}

/// Whether any byte of `w` is below 0x20, `"` or `\\` (bit tricks on 8 bytes at once).
const fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte is below n (n <= 0x80) iff (byte - n) borrows into its high bit, with the high
    // bit clear before.
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let quote = (w ^ (ONES * b'"' as u64)).wrapping_sub(ONES) & !(w ^ (ONES * b'"' as u64)) & HIGH;
    let backslash =
        (w ^ (ONES * b'\\' as u64)).wrapping_sub(ONES) & !(w ^ (ONES * b'\\' as u64)) & HIGH;
    control | quote | backslash != 0
}

/// A `fmt::Write` adapter that escapes what passes through it for a JSON string.
struct Escaper<'a>(&'a mut String);

impl fmt::Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        let mut buf = [0u8; 27];
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 7, "2000-02-29T00:00:00.000007Z"),
            (1_709_208_000, 123_456, "2024-02-29T12:00:00.123456Z"),
            (1_798_761_599, 999_999, "2026-12-31T23:59:59.999999Z"),
            (4_102_444_800, 0, "2100-01-01T00:00:00.000000Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59.000000Z"),
            (u64::MAX, 5, "9999-12-31T23:59:59.999999Z"),
        ];
        for (secs, micros, want) in cases {
            assert_eq!(rfc3339_micros(secs, micros, &mut buf), want, "{secs}");
        }
    }

    #[test]
    fn rfc3339_agrees_with_tracing_subscriber_clock() {
        // Same clock, same format: read ours around theirs; unless a minute boundary passed
        // in between, all three agree up to the minute.
        let read = |timer: &dyn FormatTime| {
            let mut s = String::new();
            timer.format_time(&mut Writer::new(&mut s)).unwrap();
            s
        };
        loop {
            let before = read(&UtcTime);
            let theirs = read(&tracing_subscriber::fmt::time::SystemTime);
            let after = read(&UtcTime);
            assert_eq!(before.len(), 27);
            if before[..16] == after[..16] {
                assert_eq!(before[..16], theirs[..16], "{before} vs {theirs}");
                assert!(before <= after);
                break;
            }
        }
    }

    #[test]
    fn word_check_agrees_with_the_table() {
        // Every byte value in every position, against the byte-wise table.
        for pos in 0..8 {
            for b in 0..=255u8 {
                let mut word = *b"abcdefgh";
                word[pos] = b;
                let want = ESCAPE[usize::from(b)] != 0;
                assert_eq!(
                    word_needs_escape(u64::from_le_bytes(word)),
                    want,
                    "{b:#x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn escaping_produces_valid_json() {
        let nasty = "quote\" backslash\\ nl\n cr\r tab\t nul\0 bell\u{7} esc\u{1b} del\u{7f} é 💥";
        let mut out = String::new();
        push_json_str(&mut out, nasty);
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back, serde_json::Value::String(nasty.to_owned()));
        assert!(!out.contains('\n'));
    }

    fn fragment_object(ids: &SpanIds) -> serde_json::Map<String, serde_json::Value> {
        let json = format!("{{\"x\":0{}}}", ids.fragment);
        match serde_json::from_str(&json) {
            Ok(serde_json::Value::Object(map)) => map,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn span_ids_escape_inherit_and_keep_their_order() {
        // A child with only a span id (written as `record_debug` writes one), whose value
        // needs escapes.
        let mut child = SpanIds::default();
        child.push(2, |s| {
            let _ = write!(Escaper(s), "{:?}", "s\"1");
        });
        assert!(child.is_tidy());
        let mut parent = SpanIds::default();
        parent.push(0, |s| push_escaped(s, "corr\nid"));
        parent.push(1, |s| push_escaped(s, "trace"));
        parent.push(2, |s| push_escaped(s, "parent-span"));
        assert!(parent.is_tidy());

        let ids = child.tidied(Some(&parent));
        assert!(ids.is_tidy() && ids.is_complete());
        let map = fragment_object(&ids);
        assert_eq!(map["correlation_id"], "corr\nid");
        assert_eq!(map["trace_id"], "trace");
        // The child's own value wins; `Debug` of a `&str` quotes it.
        assert_eq!(map["span_id"], "\"s\\\"1\"");
        assert_eq!(map.len(), 4);
        let at = |key: &str| ids.fragment.find(key).unwrap();
        assert!(at("correlation_id") < at("trace_id") && at("trace_id") < at("span_id"));
        assert_eq!(ids.fragment.capacity(), ids.fragment.len(), "sized exactly");

        // Out of order or repeated: not tidy, and tidying fixes it.
        let mut messy = SpanIds::default();
        messy.push(2, |s| s.push('b'));
        messy.push(0, |s| s.push('a'));
        assert!(!messy.is_tidy());
        messy.push(0, |s| s.push('c'));
        let tidy = messy.tidied(None);
        assert!(tidy.is_tidy());
        assert_eq!(tidy.fragment, r#","correlation_id":"c","span_id":"b""#);
    }
}
