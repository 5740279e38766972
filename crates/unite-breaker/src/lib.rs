#![doc = include_str!("../README.md")]

mod breaker;
mod clock;
mod config;
mod error;
mod state;
mod window;

pub use breaker::{CircuitBreaker, Permit};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Builder, Config, TIME_WINDOW_BUCKETS, Window};
pub use error::{CallError, ConfigError, Rejected};
pub use state::{BreakerSnapshot, Reason, State, StateChange};
