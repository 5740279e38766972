//! `build()` refuses bad configurations and names the field at fault.

use std::time::Duration;

use unite_breaker::{Builder, CircuitBreaker, Config, ConfigError, Window};

fn field(b: Builder) -> &'static str {
    match b.build() {
        Err(e) => e.field(),
        Ok(_) => panic!("expected the configuration to be refused"),
    }
}

fn base() -> Builder {
    CircuitBreaker::builder()
}

#[test]
fn defaults_build() {
    let b = base().build().expect("the default configuration is valid");
    assert_eq!(b.config(), &Config::default());
    assert_eq!(b.name(), "default");
    assert!(Config::default().validate().is_ok());
}

#[test]
fn thresholds_must_be_rates() {
    for bad in [1.5, 0.0, -0.1, f64::NAN, f64::INFINITY] {
        assert_eq!(
            field(base().failure_rate_threshold(bad)),
            "failure_rate_threshold",
            "{bad}"
        );
        assert_eq!(
            field(base().slow_call_rate_threshold(bad)),
            "slow_call_rate_threshold",
            "{bad}"
        );
    }
    assert!(base().failure_rate_threshold(1.0).build().is_ok());
    assert!(base().slow_call_rate_threshold(0.01).build().is_ok());
}

#[test]
fn window_must_not_be_empty() {
    assert_eq!(field(base().window(Window::Count(0))), "window");
    assert_eq!(field(base().window(Window::Time(Duration::ZERO))), "window");
    assert!(
        base()
            .window(Window::Time(Duration::from_secs(10)))
            .build()
            .is_ok()
    );
}

#[test]
fn minimum_calls_must_be_reachable() {
    assert_eq!(field(base().minimum_calls(0)), "minimum_calls");
    assert_eq!(
        field(base().window(Window::Count(10)).minimum_calls(11)),
        "minimum_calls"
    );
    assert!(
        base()
            .window(Window::Count(10))
            .minimum_calls(10)
            .build()
            .is_ok()
    );
    // A time window has no fixed size: any minimum is reachable.
    assert!(
        base()
            .window(Window::Time(Duration::from_secs(1)))
            .minimum_calls(1000)
            .build()
            .is_ok()
    );
}

#[test]
fn half_open_calls_must_be_positive() {
    assert_eq!(field(base().half_open_calls(0)), "half_open_calls");
}

#[test]
fn open_durations_must_be_ordered() {
    assert_eq!(field(base().open_duration(Duration::ZERO)), "open_duration");
    assert_eq!(
        field(
            base()
                .open_duration(Duration::from_secs(10))
                .max_open_duration(Duration::from_secs(5))
        ),
        "max_open_duration"
    );
    assert!(
        base()
            .open_duration(Duration::from_secs(10))
            .max_open_duration(Duration::from_secs(10))
            .build()
            .is_ok()
    );
}

#[test]
fn other_fields() {
    assert_eq!(field(base().backoff_multiplier(0.5)), "backoff_multiplier");
    assert_eq!(
        field(base().backoff_multiplier(f64::NAN)),
        "backoff_multiplier"
    );
    assert_eq!(
        field(base().slow_call_duration(Duration::ZERO)),
        "slow_call_duration"
    );
    assert_eq!(field(base().name("")), "name");
    assert_eq!(field(base().event_capacity(0)), "event_capacity");
}

#[test]
fn message_names_field_and_value() {
    let err = base().failure_rate_threshold(1.5).build().unwrap_err();
    assert!(matches!(
        err,
        ConfigError::Invalid {
            field: "failure_rate_threshold",
            ..
        }
    ));
    let text = err.to_string();
    assert!(
        text.contains("`failure_rate_threshold`") && text.contains("1.5"),
        "{text}"
    );
}

#[test]
fn whole_config_then_setters() {
    let mut config = Config::default();
    config.name = "redis".into();
    config.half_open_calls = 2;
    let b = base().config(config).minimum_calls(5).build().unwrap();
    assert_eq!(b.name(), "redis");
    assert_eq!(b.config().half_open_calls, 2);
    assert_eq!(b.config().minimum_calls, 5);
}

#[test]
fn open_wait_grows_and_caps() {
    let mut c = Config::default();
    c.open_duration = Duration::from_millis(500);
    c.max_open_duration = Duration::from_secs(3);
    c.backoff_multiplier = 2.0;
    let waits: Vec<_> = (1..=6).map(|n| c.open_wait(n).as_millis()).collect();
    assert_eq!(waits, [500, 1000, 2000, 3000, 3000, 3000]);
    assert_eq!(
        c.open_wait(u32::MAX),
        Duration::from_secs(3),
        "huge exponents cap, no overflow"
    );
    c.backoff_multiplier = 1.0;
    assert_eq!(c.open_wait(100), Duration::from_millis(500));
}
