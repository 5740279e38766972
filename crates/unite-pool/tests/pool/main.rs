//! Tests against a real Postgres (through `unite-testkit`): queries, transactions, timeouts,
//! the breaker under faults, TLS, configuration and statistics.

mod config;
mod faults;
mod pgbouncer;
mod queries;
mod stats;
mod support;
mod tls;
