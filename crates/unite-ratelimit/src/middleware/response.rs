use std::cell::RefCell;
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use serde::Serialize;

use crate::Decision;

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn retry_secs(d: &Decision) -> u64 {
    ceil_secs(d.retry_after.unwrap_or(d.reset)).max(1)
}

/// Writes the rate-limit fields of `decision` into `headers`:
/// `RateLimit-Policy: "default";q=100;w=60`, `RateLimit: "default";r=42;t=17` (draft
/// `draft-ietf-httpapi-ratelimit-headers`, structured fields), the legacy `X-RateLimit-Limit`,
/// `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until reset, like `t`), and
/// `Retry-After` (seconds) when the request was refused.
pub fn apply_headers(headers: &mut HeaderMap, decision: &Decision) {
    let window = ceil_secs(decision.window).max(1);
    let reset = ceil_secs(decision.reset);
    headers.reserve(6);
    let (policy, limit) = policy_fields(decision.policy, decision.limit, window);
    let state = structured(
        decision.policy,
        "r=",
        decision.remaining.into(),
        "t=",
        reset,
    );
    if let Some(v) = policy {
        headers.insert(RATELIMIT_POLICY.clone(), v);
    }
    if let Some(v) = state {
        headers.insert(RATELIMIT.clone(), v);
    }
    headers.insert(X_RATELIMIT_LIMIT.clone(), limit);
    headers.insert(
        X_RATELIMIT_REMAINING.clone(),
        HeaderValue::from(decision.remaining),
    );
    headers.insert(X_RATELIMIT_RESET.clone(), HeaderValue::from(reset));
    if !decision.allowed {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_secs(decision)));
    }
}

/// The fields that depend on the policy alone: `RateLimit-Policy` (`None` when the name does
/// not make a valid field) and `X-RateLimit-Limit`. Each thread keeps the last pair it made:
/// one policy usually answers many requests in a row, and a clone of a kept value is a
/// reference count where a new one is an allocation and a formatting pass.
fn policy_fields(
    policy: &'static str,
    limit: u32,
    window: u64,
) -> (Option<HeaderValue>, HeaderValue) {
    struct Last {
        key: (&'static str, u32, u64),
        policy: Option<HeaderValue>,
        limit: HeaderValue,
    }
    thread_local! {
        static LAST: RefCell<Option<Last>> = const { RefCell::new(None) };
    }
    let key = (policy, limit, window);
    let make = || Last {
        key,
        policy: structured(policy, "q=", limit.into(), "w=", window),
        limit: HeaderValue::from(limit),
    };
    LAST.try_with(|last| {
        let mut last = last.borrow_mut();
        let last = match &mut *last {
            Some(l) if l.key == key => l,
            slot => slot.insert(make()),
        };
        (last.policy.clone(), last.limit.clone())
    })
    // While the thread's locals are torn down: made afresh.
    .unwrap_or_else(|_| {
        let Last { policy, limit, .. } = make();
        (policy, limit)
    })
}

/// `"<policy>";<a><x>;<b><y>` as a header value, written into a buffer on the stack rather than
/// through the formatting machinery: this runs for every response. `None` if it does not fit
/// (a policy name of over 80 bytes) or is not a valid header value.
fn structured(policy: &str, a: &str, x: u64, b: &str, y: u64) -> Option<HeaderValue> {
    let mut out = StackBuf::default();
    let mut n = itoa::Buffer::new();
    out.put(b"\"")?;
    out.put(policy.as_bytes())?;
    out.put(b"\";")?;
    out.put(a.as_bytes())?;
    out.put(n.format(x).as_bytes())?;
    out.put(b";")?;
    out.put(b.as_bytes())?;
    out.put(n.format(y).as_bytes())?;
    HeaderValue::from_bytes(out.bytes()).ok()
}

/// A small byte buffer on the stack.
struct StackBuf {
    buf: [u8; 128],
    len: usize,
}

impl Default for StackBuf {
    fn default() -> Self {
        Self {
            buf: [0; 128],
            len: 0,
        }
    }
}

impl StackBuf {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.buf.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    retry_after_s: u64,
}

/// The JSON body of a 429:
/// `{"error":{"code":"rate_limited","message":"…","retry_after_s":17}}`.
#[must_use]
pub fn too_many_requests_body(decision: &Decision) -> String {
    let retry = retry_secs(decision);
    let message = if decision.blocked {
        format!("Too many requests: this client is blocked for now. Retry in {retry} s.")
    } else {
        format!(
            "Too many requests: the limit is {} per {} s. Retry in {retry} s.",
            decision.limit,
            ceil_secs(decision.window).max(1)
        )
    };
    let body = Body {
        error: ErrorBody {
            code: "rate_limited",
            message,
            retry_after_s: retry,
        },
    };
    serde_json::to_string(&body).unwrap_or_else(|_| {
        format!(r#"{{"error":{{"code":"rate_limited","retry_after_s":{retry}}}}}"#)
    })
}

pub(crate) fn too_many_requests<B: From<String>>(decision: &Decision) -> Response<B> {
    let mut response = Response::new(B::from(too_many_requests_body(decision)));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    apply_headers(response.headers_mut(), decision);
    response
}

#[cfg(test)]
mod structured_tests {
    use super::{policy_fields, structured};

    #[test]
    fn policy_fields_follow_every_change_of_policy_limit_or_window() {
        let cases = [
            ("default", 100, 60, "\"default\";q=100;w=60"),
            ("default", 100, 60, "\"default\";q=100;w=60"),
            ("ai", 10, 60, "\"ai\";q=10;w=60"),
            ("default", 100, 60, "\"default\";q=100;w=60"),
            ("default", 5000, 60, "\"default\";q=5000;w=60"),
            ("default", 5000, 3600, "\"default\";q=5000;w=3600"),
        ];
        for (policy, limit, window, want) in cases {
            let (field, limit_field) = policy_fields(policy, limit, window);
            assert_eq!(field.unwrap().to_str().unwrap(), want);
            assert_eq!(limit_field.to_str().unwrap(), limit.to_string());
        }
        let (field, limit_field) = policy_fields("bad\nname", 7, 60);
        assert!(field.is_none());
        assert_eq!(limit_field.to_str().unwrap(), "7");
    }

    #[test]
    fn writes_the_structured_field_and_refuses_what_does_not_fit() {
        let v = structured("default", "r=", 42, "t=", u64::MAX).unwrap();
        assert_eq!(
            v.to_str().unwrap(),
            "\"default\";r=42;t=18446744073709551615"
        );
        let long = "p".repeat(100);
        assert!(structured(&long, "q=", u64::MAX, "w=", u64::MAX).is_none());
        assert!(structured("bad\nname", "q=", 1, "w=", 1).is_none());
    }
}
