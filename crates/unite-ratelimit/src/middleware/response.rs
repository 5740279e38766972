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
    let policy = format!("\"{}\";q={};w={window}", decision.policy, decision.limit);
    let state = format!("\"{}\";r={};t={reset}", decision.policy, decision.remaining);
    if let Ok(v) = HeaderValue::try_from(policy) {
        headers.insert(RATELIMIT_POLICY.clone(), v);
    }
    if let Ok(v) = HeaderValue::try_from(state) {
        headers.insert(RATELIMIT.clone(), v);
    }
    headers.insert(X_RATELIMIT_LIMIT.clone(), HeaderValue::from(decision.limit));
    headers.insert(
        X_RATELIMIT_REMAINING.clone(),
        HeaderValue::from(decision.remaining),
    );
    headers.insert(X_RATELIMIT_RESET.clone(), HeaderValue::from(reset));
    if !decision.allowed {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_secs(decision)));
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
