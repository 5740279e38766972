//! Admin overrides: exempt, custom quota, block; stored in a Redis hash, cached locally.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::clients::{Client, WithOptions};
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface, LuaInterface};
use fred::types::config::Options;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{EndpointClass, Error, Quota, Subject};

/// What an override does to a subject's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Override {
    /// Never limited, never counted.
    Exempt,
    /// Every request refused (429), without touching Redis.
    Block,
    /// A custom quota for the `default` class, and optionally for the `ai` class (which keeps
    /// the tier's quota when `ai` is `None`).
    Quota {
        /// The quota of ordinary endpoints.
        default: Quota,
        /// The quota of the `ai` class, if it differs from the tier's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ai: Option<Quota>,
    },
}

impl Override {
    /// A custom quota for the default class only.
    #[must_use]
    pub const fn quota(default: Quota) -> Self {
        Self::Quota { default, ai: None }
    }

    /// The custom quota for `class`, if this override sets one.
    #[must_use]
    pub const fn quota_for(&self, class: EndpointClass) -> Option<Quota> {
        match (self, class) {
            (Override::Quota { default, .. }, EndpointClass::Default) => Some(*default),
            (Override::Quota { ai, .. }, EndpointClass::Ai) => *ai,
            _ => None,
        }
    }
}

/// One override: who, what, until when, and why.
///
/// ```
/// use std::time::Duration;
/// use unite_ratelimit::{Override, OverrideEntry, Subject};
///
/// let entry = OverrideEntry::new(Subject::user("abuser-7"), Override::Block)
///     .expires_in(Duration::from_secs(3600))
///     .reason("credential stuffing");
/// assert!(entry.is_live(std::time::SystemTime::now()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OverrideEntry {
    /// The subject it applies to (`ip:<addr>` or `user:<id>` when serialized).
    #[serde(with = "subject_string")]
    pub subject: Subject,
    /// What it does.
    pub rule: Override,
    /// When it stops applying (`None`: until cleared). Serialized as Unix milliseconds.
    #[serde(
        default,
        rename = "expires_at_ms",
        with = "unix_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<SystemTime>,
    /// A note for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl OverrideEntry {
    /// An override of `subject` with no expiry and no reason.
    #[must_use]
    pub fn new(subject: Subject, rule: Override) -> Self {
        Self {
            subject,
            rule,
            expires_at: None,
            reason: None,
        }
    }

    /// Expires `ttl` from now (by this machine's wall clock).
    #[must_use]
    pub fn expires_in(self, ttl: Duration) -> Self {
        Self {
            expires_at: SystemTime::now().checked_add(ttl),
            ..self
        }
    }

    /// Expires at `at`.
    #[must_use]
    pub fn expires_at(self, at: SystemTime) -> Self {
        Self {
            expires_at: Some(at),
            ..self
        }
    }

    /// A note for operators.
    #[must_use]
    pub fn reason(self, reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..self
        }
    }

    /// Whether the override still applies at `now`.
    #[must_use]
    pub fn is_live(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// `ip:<addr>` or `user:<id>`.
impl FromStr for Subject {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if let Some(ip) = s.strip_prefix("ip:") {
            return ip
                .parse::<IpAddr>()
                .map(Subject::Ip)
                .map_err(|_| Error::Override(format!("`{ip}` is not an IP address")));
        }
        if let Some(id) = s.strip_prefix("user:")
            && !id.is_empty()
        {
            return Ok(Subject::user(id));
        }
        Err(Error::Override(format!(
            "subject `{s}` must look like `ip:<address>` or `user:<id>`"
        )))
    }
}

mod subject_string {
    use super::*;

    pub(super) fn serialize<S: Serializer>(subject: &Subject, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(subject)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Subject, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod unix_ms {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => {
                let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
                s.serialize_u64(u64::try_from(ms).unwrap_or(u64::MAX))
            }
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?
            .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms))))
    }
}

/// The local copy of the overrides, split by subject kind so lookups never allocate.
#[derive(Debug, Default)]
pub(crate) struct OverrideSet {
    ips: HashMap<IpAddr, OverrideEntry>,
    users: HashMap<Arc<str>, OverrideEntry>,
}

impl OverrideSet {
    pub(crate) fn from_entries(entries: impl IntoIterator<Item = OverrideEntry>) -> Self {
        let mut set = Self::default();
        for e in entries {
            set.insert(e);
        }
        set
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.users.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.ips.len() + self.users.len()
    }

    pub(crate) fn get(&self, subject: &Subject) -> Option<&OverrideEntry> {
        match subject {
            Subject::Ip(ip) => self.ips.get(ip),
            Subject::User(id) => self.users.get(&**id),
        }
    }

    pub(crate) fn insert(&mut self, e: OverrideEntry) {
        match &e.subject {
            Subject::Ip(ip) => {
                self.ips.insert(*ip, e);
            }
            Subject::User(id) => {
                self.users.insert(Arc::clone(id), e);
            }
        }
    }

    pub(crate) fn remove(&mut self, subject: &Subject) -> bool {
        match subject {
            Subject::Ip(ip) => self.ips.remove(ip).is_some(),
            Subject::User(id) => self.users.remove(&**id).is_some(),
        }
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &OverrideEntry> {
        self.ips.values().chain(self.users.values())
    }

    pub(crate) fn clone_set(&self) -> Self {
        Self {
            ips: self.ips.clone(),
            users: self.users.clone(),
        }
    }
}

const SET_SCRIPT: &str = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
                          return redis.call('INCR', KEYS[2])";
const CLEAR_SCRIPT: &str = "local n = 0 \
                            for i = 1, #ARGV do n = n + redis.call('HDEL', KEYS[1], ARGV[i]) end \
                            if n > 0 then redis.call('INCR', KEYS[2]) end \
                            return n";

/// The overrides in Redis: a hash (field = subject, value = JSON entry) and a version counter
/// bumped on every change: `<prefix>{overrides}` and `<prefix>{overrides}:version` (one hash
/// tag, so the scripts that touch both are cluster-safe).
#[derive(Clone)]
pub(crate) struct OverrideStore {
    client: WithOptions<Client>,
    hash: String,
    version: String,
    timeout: Duration,
}

impl fmt::Debug for OverrideStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OverrideStore")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl OverrideStore {
    pub(crate) fn new(client: Client, prefix: &str, timeout: Duration) -> Self {
        let options = Options {
            timeout: Some(timeout),
            ..Options::default()
        };
        let tag = format!("{prefix}{{overrides}}");
        Self {
            client: client.with_options(&options),
            version: format!("{tag}:version"),
            hash: tag,
            timeout,
        }
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    pub(crate) async fn set(&self, entry: &OverrideEntry) -> Result<(), Error> {
        let value = serde_json::to_string(entry).map_err(|e| Error::Override(e.to_string()))?;
        let field = entry.subject.to_string();
        self.bounded(self.client.eval::<i64, _, _, _>(
            SET_SCRIPT,
            vec![self.hash.clone(), self.version.clone()],
            vec![field, value],
        ))
        .await
        .map(drop)
    }

    pub(crate) async fn clear(&self, subjects: &[Subject]) -> Result<u64, Error> {
        if subjects.is_empty() {
            return Ok(0);
        }
        let fields: Vec<String> = subjects.iter().map(ToString::to_string).collect();
        let n = self
            .bounded(self.client.eval::<i64, _, _, _>(
                CLEAR_SCRIPT,
                vec![self.hash.clone(), self.version.clone()],
                fields,
            ))
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn version(&self) -> Result<i64, Error> {
        let v: Option<i64> = self.bounded(self.client.get(&self.version)).await?;
        Ok(v.unwrap_or(0))
    }

    /// Every entry in Redis; malformed ones are skipped with a warning.
    pub(crate) async fn load(&self) -> Result<Vec<OverrideEntry>, Error> {
        let all: HashMap<String, String> = self.bounded(self.client.hgetall(&self.hash)).await?;
        let mut out = Vec::with_capacity(all.len());
        for (field, value) in all {
            match serde_json::from_str::<OverrideEntry>(&value) {
                Ok(e) if e.subject.to_string() == field => out.push(e),
                Ok(_) => tracing::warn!(
                    field,
                    "rate-limit override stored under the wrong subject; skipped"
                ),
                Err(error) => {
                    tracing::warn!(field, %error, "malformed rate-limit override in redis; skipped");
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    #[test]
    fn entries_round_trip_through_json() {
        let q = Quota::per_minute(NonZeroU32::new(5000).unwrap());
        for e in [
            OverrideEntry::new(Subject::user("u:1{x}"), Override::Exempt),
            OverrideEntry::new("ip:2001:db8::1".parse().unwrap(), Override::Block)
                .expires_at(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
                .reason("abuse"),
            OverrideEntry::new(
                "ip:10.0.0.1".parse().unwrap(),
                Override::Quota {
                    default: q,
                    ai: Some(q),
                },
            ),
        ] {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(
                serde_json::from_str::<OverrideEntry>(&json).unwrap(),
                e,
                "{json}"
            );
        }
        let json = r#"{"subject":"user:9","rule":{"kind":"quota","default":{"limit":7}}}"#;
        let e: OverrideEntry = serde_json::from_str(json).unwrap();
        assert_eq!(
            e.rule
                .quota_for(EndpointClass::Default)
                .unwrap()
                .limit()
                .get(),
            7
        );
        assert_eq!(e.rule.quota_for(EndpointClass::Ai), None);
        assert!(
            serde_json::from_str::<OverrideEntry>(
                r#"{"subject":"user:9","rule":{"kind":"quota","default":{"limit":0}}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn subjects_parse_strictly() {
        assert_eq!(
            "ip:127.0.0.1".parse::<Subject>().unwrap(),
            Subject::Ip([127, 0, 0, 1].into())
        );
        assert_eq!("user:a:b".parse::<Subject>().unwrap(), Subject::user("a:b"));
        for bad in ["ip:nope", "user:", "42", ""] {
            assert!(bad.parse::<Subject>().is_err(), "{bad}");
        }
    }

    #[test]
    fn set_lookup_respects_kind_and_expiry() {
        let past = UNIX_EPOCH + Duration::from_secs(1);
        let set = OverrideSet::from_entries([
            OverrideEntry::new(Subject::user("1.2.3.4"), Override::Block),
            OverrideEntry::new("ip:1.2.3.4".parse().unwrap(), Override::Exempt).expires_at(past),
        ]);
        assert_eq!(set.len(), 2);
        let ip = set.get(&"ip:1.2.3.4".parse().unwrap()).unwrap();
        assert_eq!(ip.rule, Override::Exempt);
        assert!(!ip.is_live(SystemTime::now()));
        assert_eq!(
            set.get(&Subject::user("1.2.3.4")).unwrap().rule,
            Override::Block
        );
        assert!(set.get(&Subject::user("other")).is_none());
    }
}
