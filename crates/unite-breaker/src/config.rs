//! Breaker configuration and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::{CircuitBreaker, Clock, ConfigError};

/// Number of buckets a time-based window is split into; calls age out one bucket at a time.
pub const TIME_WINDOW_BUCKETS: u32 = 20;

/// The sliding window over which failure and slow-call rates are judged while closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The last N calls.
    Count(u32),
    /// The calls of the last duration, kept in [`TIME_WINDOW_BUCKETS`] buckets: a call leaves
    /// the window between `d - d/20` and `d` after it completed.
    Time(Duration),
}

/// The settings of a breaker. Build one with [`CircuitBreaker::builder`]; read it back with
/// [`CircuitBreaker::config`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Label for events and metrics. Default `"default"`.
    pub name: String,
    /// Open when the failure rate of the window is at or above this (`0.0 < t <= 1.0`).
    /// Default `0.5`.
    pub failure_rate_threshold: f64,
    /// Open when the slow-call rate of the window is at or above this (`0.0 < t <= 1.0`).
    /// Default `1.0`.
    pub slow_call_rate_threshold: f64,
    /// A call that takes longer than this is slow. Default 60 s.
    pub slow_call_duration: Duration,
    /// The sliding window. Default `Window::Count(100)`.
    pub window: Window,
    /// The window is not judged before it holds this many calls. Default 20.
    pub minimum_calls: u32,
    /// The first wait in Open. Default 5 s.
    pub open_duration: Duration,
    /// The cap of the wait in Open as it grows on repeated opens. Default 60 s.
    pub max_open_duration: Duration,
    /// Each consecutive open (without a successful close in between) waits this many times
    /// longer than the last (`>= 1.0`). Default `2.0`.
    pub backoff_multiplier: f64,
    /// The number of trial calls let through in HalfOpen. Default 10.
    pub half_open_calls: u32,
    /// Capacity of the state-change broadcast channel. Default 64.
    pub event_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration: Duration::from_secs(60),
            window: Window::Count(100),
            minimum_calls: 20,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(60),
            backoff_multiplier: 2.0,
            half_open_calls: 10,
            event_capacity: 64,
        }
    }
}

impl Config {
    /// Checks every field; the error names the first field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::invalid("name", "must not be empty"));
        }
        check_rate("failure_rate_threshold", self.failure_rate_threshold)?;
        check_rate("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.slow_call_duration.is_zero() {
            return Err(ConfigError::invalid(
                "slow_call_duration",
                "must be greater than zero",
            ));
        }
        match self.window {
            Window::Count(0) => {
                return Err(ConfigError::invalid(
                    "window",
                    "Count(0): the window holds no calls",
                ));
            }
            Window::Time(d) if d.is_zero() => {
                return Err(ConfigError::invalid(
                    "window",
                    "Time(0s): the window spans no time",
                ));
            }
            Window::Count(_) | Window::Time(_) => {}
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::invalid("minimum_calls", "must be at least 1"));
        }
        if let Window::Count(n) = self.window
            && self.minimum_calls > n
        {
            return Err(ConfigError::invalid(
                "minimum_calls",
                format!(
                    "({}) exceeds the window size ({n}): the breaker could never open",
                    self.minimum_calls
                ),
            ));
        }
        if self.open_duration.is_zero() {
            return Err(ConfigError::invalid(
                "open_duration",
                "must be greater than zero",
            ));
        }
        if self.max_open_duration < self.open_duration {
            return Err(ConfigError::invalid(
                "max_open_duration",
                format!(
                    "({:?}) is shorter than open_duration ({:?})",
                    self.max_open_duration, self.open_duration
                ),
            ));
        }
        if !(self.backoff_multiplier.is_finite() && self.backoff_multiplier >= 1.0) {
            return Err(ConfigError::invalid(
                "backoff_multiplier",
                format!(
                    "must be a finite number >= 1.0, got {}",
                    self.backoff_multiplier
                ),
            ));
        }
        if self.half_open_calls == 0 {
            return Err(ConfigError::invalid(
                "half_open_calls",
                "must be at least 1",
            ));
        }
        if self.event_capacity == 0 || self.event_capacity > usize::MAX / 2 {
            return Err(ConfigError::invalid(
                "event_capacity",
                "must be at least 1 (and at most usize::MAX / 2)",
            ));
        }
        Ok(())
    }

    /// The wait in Open after `consecutive_opens` opens in a row (1 for the first).
    ///
    /// `open_duration * backoff_multiplier^(consecutive_opens - 1)`, capped at
    /// `max_open_duration`.
    #[must_use]
    pub fn open_wait(&self, consecutive_opens: u32) -> Duration {
        if consecutive_opens <= 1 {
            return self.open_duration.min(self.max_open_duration);
        }
        let exp = i32::try_from(consecutive_opens - 1).unwrap_or(i32::MAX);
        let secs = self.open_duration.as_secs_f64() * self.backoff_multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max_open_duration.as_secs_f64() {
            self.max_open_duration
        } else {
            // `secs` is finite, positive and below a valid `Duration`, so this cannot fail.
            Duration::try_from_secs_f64(secs)
                .unwrap_or(self.max_open_duration)
                .min(self.max_open_duration)
        }
    }
}

fn check_rate(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            format!("must be in (0.0, 1.0], got {value}"),
        ))
    }
}

/// Builds a [`CircuitBreaker`]; start with [`CircuitBreaker::builder`].
#[must_use = "a builder does nothing until `build` is called"]
#[derive(Clone, Default)]
pub struct Builder {
    config: Config,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("clock", &self.clock)
            .finish()
    }
}

impl Builder {
    /// A builder holding [`Config::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from a whole [`Config`] (the setters below then override single fields).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Label for events and metrics, e.g. `"postgres"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Open when the window's failure rate is at or above `threshold` (`0.0 < t <= 1.0`).
    pub fn failure_rate_threshold(mut self, threshold: f64) -> Self {
        self.config.failure_rate_threshold = threshold;
        self
    }

    /// Open when the window's slow-call rate is at or above `threshold` (`0.0 < t <= 1.0`).
    pub fn slow_call_rate_threshold(mut self, threshold: f64) -> Self {
        self.config.slow_call_rate_threshold = threshold;
        self
    }

    /// A call taking longer than `duration` is slow.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.config.slow_call_duration = duration;
        self
    }

    /// The sliding window judged while closed.
    pub fn window(mut self, window: Window) -> Self {
        self.config.window = window;
        self
    }

    /// The window is not judged before it holds `calls` calls.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.config.minimum_calls = calls;
        self
    }

    /// The first wait in Open.
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.config.open_duration = duration;
        self
    }

    /// The cap of the wait in Open as it grows with repeated opens.
    pub fn max_open_duration(mut self, duration: Duration) -> Self {
        self.config.max_open_duration = duration;
        self
    }

    /// Growth factor of the wait between consecutive opens (`>= 1.0`; `1.0` = constant).
    pub fn backoff_multiplier(mut self, multiplier: f64) -> Self {
        self.config.backoff_multiplier = multiplier;
        self
    }

    /// The number of trial calls let through in HalfOpen.
    pub fn half_open_calls(mut self, calls: u32) -> Self {
        self.config.half_open_calls = calls;
        self
    }

    /// Capacity of the state-change broadcast channel (a slow subscriber then sees
    /// `RecvError::Lagged`).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.config.event_capacity = capacity;
        self
    }

    /// The time source; defaults to [`SystemClock`](crate::SystemClock). Use
    /// [`ManualClock`](crate::ManualClock) in tests.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the configuration and builds the breaker.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first field at fault.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        self.config.validate()?;
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(crate::SystemClock::new()));
        Ok(CircuitBreaker::from_parts(self.config, clock))
    }
}
