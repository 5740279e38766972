//! `init` installs the global subscriber once, with a bounded queue whose drops are counted.
//! (Its own test binary: the subscriber and the recorder are process-wide.)

mod support;

use std::io;
use std::num::NonZeroUsize;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use support::Buffer;
use unite_telemetry::{LogOutput, OtlpMode, TelemetryConfig, TelemetryError, init, names};

/// A writer that blocks on its first write until released, so the queue fills up.
struct Gate {
    out: Buffer,
    release: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
    entered: mpsc::SyncSender<()>,
}

impl io::Write for Gate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(rx) = self.release.lock().unwrap().take() {
            let _ = self.entered.send(());
            let _ = rx.recv();
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn config() -> TelemetryConfig {
    TelemetryConfig::new("init-test").otlp(OtlpMode::Disabled)
}

#[test]
fn init_once_with_a_bounded_counted_queue() {
    // Bad settings fail before anything is installed.
    assert!(matches!(
        init(config().filter("info,=[{")),
        Err(TelemetryError::Filter(_))
    ));
    assert!(matches!(
        init(config().filter("my_crate=loud")),
        Err(TelemetryError::Filter(_))
    ));
    assert!(matches!(
        init(config().sampling_ratio(2.0)),
        Err(TelemetryError::InvalidConfig(_))
    ));

    let out = Buffer::default();
    let (release_tx, release_rx) = mpsc::channel();
    let (entered_tx, entered_rx) = mpsc::sync_channel(1);
    let gate = Gate {
        out: out.clone(),
        release: Arc::new(Mutex::new(Some(release_rx))),
        entered: entered_tx,
    };
    let guard = init(
        config()
            .filter("info")
            .output(LogOutput::writer(gate))
            .queue_capacity(NonZeroUsize::new(1).unwrap()),
    )
    .expect("first init succeeds");

    tracing::info!(n = 0, "first line, taken by the writer thread");
    entered_rx.recv().unwrap(); // the writer thread is now blocked inside write()
    for n in 1..=50 {
        tracing::info!(n, "queued or dropped");
    }
    // The writer holds one line and the queue one more: at least 49 of the 50 are dropped.
    let dropped = guard.dropped_log_lines();
    assert!(dropped >= 49, "dropped {dropped}");

    let metrics = guard.metrics().expect("prometheus on by default");
    let rendered = metrics.render();
    assert!(
        rendered.contains(&format!("{} {dropped}", names::TELEMETRY_LOG_DROPPED_TOTAL)),
        "{rendered}"
    );
    assert!(
        rendered.contains("# HELP unite_telemetry_log_dropped_total Log lines dropped"),
        "descriptions registered: {rendered}"
    );

    // A second init is refused.
    assert!(matches!(
        init(config()),
        Err(TelemetryError::AlreadyInitialized(_))
    ));

    release_tx.send(()).unwrap();
    drop(guard); // flushes what was queued
    let lines = out.lines();
    assert!(!lines.is_empty() && lines.len() <= 2, "{lines:?}");
    assert_eq!(
        lines[0]["message"],
        "first line, taken by the writer thread"
    );
    assert_eq!(lines[0]["n"], 0);
}
