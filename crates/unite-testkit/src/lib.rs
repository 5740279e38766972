#![doc = include_str!("../README.md")]

mod certs;
mod error;
mod ha;
mod postgres;
mod proxy;
mod redis;
mod servers;

pub use certs::TestCerts;
pub use error::Error;
pub use ha::{Failover, RedisClusterGroup, RedisSentinelGroup};
pub use postgres::TestPostgres;
pub use proxy::{FaultProxy, Mode};
pub use redis::TestRedis;
pub use servers::{PostgresOptions, PostgresServer, RedisOptions, RedisServer, free_port};

/// The command that starts the local Postgres and Redis, named in every "not reachable" message.
pub const START_SERVICES_HINT: &str = "scripts/services.sh up";

/// Default Postgres URL when `DATABASE_URL` is unset: the local server on its standard port.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Default Redis URL when `REDIS_URL` is unset: the local server on its standard port.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The Postgres URL tests use: `DATABASE_URL`, or [`DEFAULT_DATABASE_URL`].
#[must_use]
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// The Redis URL tests use: `REDIS_URL`, or [`DEFAULT_REDIS_URL`].
#[must_use]
pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned())
}

/// A short random lowercase hex string, for schema names and key prefixes.
pub(crate) fn random_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// Hides the password of a URL (`postgres://user:***@host/db`), so messages never show it.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x?sslmode=require"),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
