//! The outcome of one rate-limit check.

use std::time::Duration;

use serde::Serialize;

use crate::{EndpointClass, Tier};

/// Where a decision was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecisionSource {
    /// The shared budget in Redis.
    Shared,
    /// Decisions this instance reserved from the shared budget in an earlier round trip
    /// (see `SharedConfig::reserve_max`).
    Reserved,
    /// The in-process limiter of a limiter built without Redis.
    Local,
    /// The in-process limiter at this instance's share of the quota, because Redis was
    /// unreachable.
    Fallback,
    /// An admin override (exempt or block); nothing was counted.
    Override,
    /// Redis was unreachable and the limiter is fail-closed: refused without counting.
    Unavailable,
}

impl DecisionSource {
    /// `shared`, `reserved`, `local`, `fallback`, `override` or `unavailable`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DecisionSource::Shared => "shared",
            DecisionSource::Reserved => "reserved",
            DecisionSource::Local => "local",
            DecisionSource::Fallback => "fallback",
            DecisionSource::Override => "override",
            DecisionSource::Unavailable => "unavailable",
        }
    }
}

/// The answer to "may this request go ahead?", with everything the response headers need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// Requests per window of the quota applied (the `q` of `RateLimit-Policy`).
    pub limit: u32,
    /// The window of the quota applied (the `w` of `RateLimit-Policy`).
    pub window: Duration,
    /// Requests the key may still send at once (the `r` of `RateLimit`).
    pub remaining: u32,
    /// Time until the key's budget is whole again (the `t` of `RateLimit`).
    pub reset: Duration,
    /// When refused: how long to wait before the next request can be allowed.
    pub retry_after: Option<Duration>,
    /// The tier whose quota applied.
    pub tier: Tier,
    /// The endpoint class.
    pub class: EndpointClass,
    /// The policy name in the headers: the class (`default`, `ai`), or `override`
    /// (a custom quota), `exempt` or `blocked` (admin overrides).
    pub policy: &'static str,
    /// Where the decision was taken.
    pub source: DecisionSource,
    /// Violations in the key's current streak (0 when penalties are off).
    pub strikes: u32,
    /// Refused by a block (an escalating penalty or an admin block) rather than by the quota
    /// alone.
    pub blocked: bool,
}

impl Decision {
    /// The metrics `result` label: `allowed`, `limited` or `blocked`.
    #[must_use]
    pub const fn result(&self) -> &'static str {
        if self.allowed {
            "allowed"
        } else if self.blocked {
            "blocked"
        } else {
            "limited"
        }
    }
}
