//! Who is being limited.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::Tier;

/// The identity a quota is counted against: a client IP (anonymous traffic) or a user id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// An anonymous client, by IP address.
    Ip(IpAddr),
    /// A signed-in user, by id.
    User(Arc<str>),
}

impl Subject {
    /// A user subject.
    #[must_use]
    pub fn user(id: impl Into<Arc<str>>) -> Self {
        Self::User(id.into())
    }
}

impl From<IpAddr> for Subject {
    fn from(ip: IpAddr) -> Self {
        Self::Ip(ip)
    }
}

/// `ip:<address>` or `user:<id>`: the form used in Redis keys and override targets.
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Ip(ip) => write!(f, "ip:{ip}"),
            Subject::User(id) => write!(f, "user:{id}"),
        }
    }
}

/// The request extension an authentication layer sets for a signed-in user; the rate-limit
/// layer then counts the request against the user and their tier instead of the client IP.
///
/// ```
/// use unite_ratelimit::{RateLimitSubject, Tier};
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(RateLimitSubject::new("user-42", Tier::Pro));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimitSubject {
    /// The user id.
    pub user_id: Arc<str>,
    /// The user's tier.
    pub tier: Tier,
}

impl RateLimitSubject {
    /// A signed-in user of `tier`.
    #[must_use]
    pub fn new(user_id: impl Into<Arc<str>>, tier: Tier) -> Self {
        Self {
            user_id: user_id.into(),
            tier,
        }
    }
}

/// A request extension carrying the peer address of the connection, for servers other than
/// axum (with axum, point the layer at `ConnectInfo<SocketAddr>`; see
/// [`RateLimitLayer::peer_addr_with`](crate::RateLimitLayer::peer_addr_with)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);
