//! Fuzz-style properties of the configuration parser (`Config::from_vars`): arbitrary
//! environments never panic, a problem always names a known variable and never echoes a long
//! value whole, secrets never show, and an accepted configuration reads back the same from its
//! own `unite-hub config` lines.
//!
//! 4,096 cases a property by default; `PROPTEST_CASES=10000000` for a long run (see
//! `docs/RELIABILITY.md`).

use std::collections::BTreeMap;

use proptest::prelude::*;
use unite_hub::Config;

/// Cases a property: `PROPTEST_CASES` when set, else a count that keeps CI fast.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 4096;
    }
    config.failure_persistence = None;
    config
}

/// Every variable the service reads (`.env.example`).
const VARS: &[&str] = &[
    "BIND_ADDR",
    "DATABASE_URL",
    "DATABASE_POOL_MAX",
    "DATABASE_POOL_MIN",
    "DATABASE_CONNECT_TIMEOUT",
    "DATABASE_CHECKOUT_TIMEOUT",
    "DATABASE_STATEMENT_TIMEOUT",
    "DATABASE_TLS",
    "DATABASE_CA_FILE",
    "DATABASE_REPLICA_URLS",
    "DATABASE_REPLICA_MAX_LAG",
    "REDIS_URL",
    "REDIS_TIMEOUT",
    "ADMIN_TOKEN",
    "CACHE_NAMESPACE",
    "CACHE_TTL",
    "CACHE_L1_MAX_BYTES",
    "SESSION_TTL",
    "TRUSTED_PROXIES",
    "RATE_LIMIT_INSTANCES",
    "RATE_LIMIT_RESERVE",
    "MAX_BODY_BYTES",
    "REQUEST_TIMEOUT",
    "HEADER_READ_TIMEOUT",
    "SHUTDOWN_GRACE",
    "WARM_ON_START",
    "LOG_FORMAT",
    "RUST_LOG",
];

const DB_PASSWORD: &str = "db-Secret-Pw-7f3a9c";
const ADMIN_TOKEN: &str = "admin-Secret-Token-5e1b2d";

/// Values near what each kind of variable accepts, and anything at all.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        // numbers, durations (huge ones too), booleans
        "[0-9]{1,25}",
        "-?[0-9]{1,22}(ns|us|ms|s|m|h|d|w|M|y)?",
        "[0-9]{1,5}(ms|s) [0-9]{1,3}(ms|s)",
        prop_oneof![
            Just("true"),
            Just("off"),
            Just("Yes"),
            Just("json"),
            Just("PRETTY"),
            Just("verify-full"),
            Just("require"),
        ]
        .prop_map(str::to_owned),
        // addresses, networks, URLs
        "(127\\.0\\.0\\.1|\\[::1\\]|localhost|0\\.0\\.0\\.0):[0-9]{0,6}",
        "([0-9]{1,3}\\.){3}[0-9]{1,3}(/[0-9]{1,2})?(, ?([0-9a-f:]{2,12}|[0-9.]{7,15})(/[0-9]{1,3})?){0,3}",
        "(postgres|postgresql|redis|rediss|redis-sentinel|http)://([a-z]{1,6}(:[^@/ ]{0,12})?@)?[a-z0-9.]{1,12}(:[0-9]{1,5})?(/[a-z]{0,6})?(\\?[a-z=&%]{0,20})?",
        Just(String::new()),
        Just("   ".to_owned()),
    ]
}

/// An environment: the required secrets usually present, any subset of the other variables,
/// and the odd unknown one.
fn environment() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        proptest::collection::btree_map(proptest::sample::select(VARS), value(), 0..12),
        proptest::option::weighted(0.9, Just(())),
        proptest::option::weighted(0.9, Just(())),
        proptest::collection::btree_map("[A-Z_]{1,12}", value(), 0..3),
    )
        .prop_map(|(known, with_db, with_admin, unknown)| {
            let mut vars: BTreeMap<String, String> = unknown;
            vars.extend(known.into_iter().map(|(k, v)| (k.to_owned(), v)));
            if with_db.is_some() {
                vars.insert(
                    "DATABASE_URL".into(),
                    format!("postgres://app:{DB_PASSWORD}@127.0.0.1:5432/hub"),
                );
            }
            if with_admin.is_some() {
                vars.insert("ADMIN_TOKEN".into(), ADMIN_TOKEN.into());
            }
            vars
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_environment_parses_or_names_its_problems(vars in environment()) {
        match Config::from_vars(&vars) {
            Err(e) => {
                prop_assert!(!e.0.is_empty());
                for p in &e.0 {
                    prop_assert!(VARS.contains(&p.var), "unknown variable named: {}", p.var);
                }
                let text = e.to_string();
                prop_assert!(!text.contains(DB_PASSWORD) && !text.contains(ADMIN_TOKEN), "{}", text);
                // A bad value is quoted cut short (`{cut:?}…`): nothing over 24 characters
                // comes back whole. Compared in the quoted form the message uses, so that the
                // escaping of the cut (a `\` written as `\\`) is not mistaken for more of the
                // value, nor the closing quote for a `"` in it.
                for (name, value) in &vars {
                    let value = value.trim();
                    if value.chars().count() > 24 {
                        let quoted = format!("{value:?}");
                        let whole = &quoted[1..quoted.len() - 1];
                        prop_assert!(!text.contains(whole), "{} echoed whole: {}", name, text);
                    }
                }
            }
            Ok(config) => {
                let shown = format!("{config:?}\n{}", config.redacted_lines().join("\n"));
                prop_assert!(!shown.contains(DB_PASSWORD) && !shown.contains(ADMIN_TOKEN), "{}", shown);
                // `unite-hub config` lines (secrets put back) read as the same configuration.
                let mut again: BTreeMap<String, String> = config
                    .redacted_lines()
                    .iter()
                    .filter_map(|line| line.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                again.insert("DATABASE_URL".into(), config.database_url.clone());
                again.insert("ADMIN_TOKEN".into(), config.admin_token.clone());
                if !config.database_replica_urls.is_empty() {
                    again.insert("DATABASE_REPLICA_URLS".into(), config.database_replica_urls.join(","));
                }
                if let Some(url) = &config.redis_url {
                    again.insert("REDIS_URL".into(), url.clone());
                }
                let reread = Config::from_vars(&again);
                prop_assert!(reread.is_ok(), "{:?} from {:?}", reread.err(), again);
                let reread = reread.map(|c| c.redacted_lines()).unwrap_or_default();
                prop_assert_eq!(reread, config.redacted_lines());
            }
        }
    }
}
