#![doc = include_str!("../README.md")]

mod client_ip;
mod config;
mod decision;
mod error;
mod limiter;
mod local;
pub mod metrics;
mod middleware;
mod overrides;
mod reserve;
mod shared;
mod subject;

pub use client_ip::TrustedProxies;
pub use config::{
    Config, EndpointClass, LocalConfig, PenaltyConfig, Quota, SharedConfig, Tier, TierQuotas, Tiers,
};
pub use decision::{Decision, DecisionSource};
pub use error::Error;
pub use limiter::{Builder, Check, RateLimitStats, RateLimiter};
pub use middleware::{
    RateLimitLayer, RateLimitService, ResponseFuture, apply_headers, too_many_requests_body,
};
pub use overrides::{Override, OverrideEntry};
pub use shared::{GCRA_SCRIPT, RedisGcra};
pub use subject::{ClientAddr, RateLimitSubject, Subject};
pub use unite_breaker::{Clock, ManualClock};
