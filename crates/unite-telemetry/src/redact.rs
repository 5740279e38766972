//! Keeping secrets out of `Debug` output and log lines.
//!
//! * [`redact_url`] hides the password of a URL (`postgres://app:***@db/app`), the values of
//!   secret-looking query parameters (`?token=***`), and the secret values of a libpq
//!   `key=value` connection string (`password=***`).
//! * [`redact_header`] hides the value of `Authorization`, `Cookie`, API-key and token headers
//!   (`Bearer ***`); [`RedactedHeaders`] does it for a whole `HeaderMap` in `Debug` output.
//! * [`Secret`] wraps a value whose `Debug` and `Display` print `***`; the value is reached
//!   only through [`Secret::expose`].
//!
//! All of them return the input borrowed when there is nothing to hide, and never fail: an
//! input they cannot make sense of is returned with every part that might be a secret hidden.

use std::borrow::Cow;
use std::fmt;

/// What a hidden secret is replaced with.
pub const REDACTED: &str = "***";

/// A value that must not be printed: its `Debug` and `Display` show `***`.
///
/// Use it for passwords, tokens and admin keys inside config structs, so that deriving
/// `Debug` on the struct stays safe.
///
/// ```
/// use unite_telemetry::Secret;
///
/// #[derive(Debug)]
/// struct Config {
///     admin_token: Secret<String>,
/// }
///
/// let config = Config { admin_token: Secret::new("s3cr3t".to_owned()) };
/// assert_eq!(format!("{config:?}"), r#"Config { admin_token: *** }"#);
/// assert_eq!(config.admin_token.expose(), "s3cr3t");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value. Every use is a deliberate, greppable decision to handle it.
    pub const fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the secret value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Whether a parameter, field or header name looks like it holds a secret.
///
/// Matching is by substring, case-insensitive, and deliberately broad (`pass`, `pwd`,
/// `secret`, `token`, `key`, `auth`, `cookie`, `session`, `credential`, `signature`):
/// hiding a harmless value costs little, printing a secret costs a lot.
#[must_use]
pub fn is_sensitive_name(name: &str) -> bool {
    const NEEDLES: [&str; 11] = [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "cookie",
        "session",
        "credential",
        "signature",
        "private",
    ];
    // Names are short; compare case-insensitively without allocating.
    NEEDLES
        .iter()
        .any(|needle| contains_ignore_ascii_case(name, needle))
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Hides the secrets in a URL or a libpq `key=value` connection string.
///
/// * `scheme://user:password@host…` → `scheme://user:***@host…` (also with several hosts,
///   and with a password that contains unescaped `/`, `?`, `#` or `@`);
/// * query parameters whose name looks secret ([`is_sensitive_name`]) → `name=***`;
/// * `host=db password='x y' sslkey=…` → `host=db password=*** sslkey=***`.
///
/// Returns the input borrowed when nothing had to be hidden.
///
/// ```
/// use unite_telemetry::redact_url;
///
/// assert_eq!(redact_url("postgres://app:hunter2@db:5432/app"), "postgres://app:***@db:5432/app");
/// assert_eq!(redact_url("rediss://:p@ss@cache:6380/0?token=abc&db=1"), "rediss://:***@cache:6380/0?token=***&db=1");
/// assert_eq!(redact_url("host=db user=app password='a b'"), "host=db user=app password=***");
/// assert!(matches!(redact_url("https://example.com/a"), std::borrow::Cow::Borrowed(_)));
/// ```
#[must_use]
pub fn redact_url(input: &str) -> Cow<'_, str> {
    match input.find("://") {
        Some(scheme_end) => redact_url_form(input, scheme_end + 3),
        None if input.contains('=') => redact_key_value_form(input),
        None => Cow::Borrowed(input),
    }
}

/// Byte ranges of `input` to replace with [`REDACTED`], in order and not overlapping.
type Ranges = Vec<(usize, usize)>;

fn apply<'a>(input: &'a str, ranges: &Ranges) -> Cow<'a, str> {
    if ranges.is_empty() {
        return Cow::Borrowed(input);
    }
    let mut out = String::with_capacity(input.len());
    let mut pos = 0;
    for &(start, end) in ranges {
        out.push_str(&input[pos..start]);
        out.push_str(REDACTED);
        pos = end;
    }
    out.push_str(&input[pos..]);
    Cow::Owned(out)
}

fn redact_url_form(input: &str, authority_start: usize) -> Cow<'_, str> {
    let rest = &input[authority_start..];
    let mut ranges = Ranges::new();

    // RFC 3986: the authority ends at the first '/', '?' or '#'; the userinfo is everything
    // before its last '@'.
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let userinfo_end = match authority.rfind('@') {
        Some(at) => Some(at),
        None => {
            // No '@' in the authority. If it has a ':' followed by something that is not a
            // port number, a password probably holds an unescaped '/', '?' or '#': then the
            // userinfo ends at the last '@' of the whole string.
            let suspicious = authority.find(':').is_some_and(|colon| {
                let port = &authority[colon + 1..];
                !port.bytes().all(|b| b.is_ascii_digit())
            }) || (authority.contains(':')
                && rest[..rest.find('?').unwrap_or(rest.len())].contains('@'));
            if suspicious { rest.rfind('@') } else { None }
        }
    };

    let mut tail_start = authority_len;
    if let Some(at) = userinfo_end {
        let userinfo = &rest[..at];
        if let Some(colon) = userinfo.find(':') {
            ranges.push((authority_start + colon + 1, authority_start + at));
        }
        // Continue after the host when the password swallowed what looked like the path.
        if at > authority_len {
            let after = &rest[at..];
            tail_start = at + after.find(['/', '?', '#']).unwrap_or(after.len());
        }
    }

    // Query parameters.
    let tail = &rest[tail_start..];
    if let Some(q) = tail.find('?') {
        let query_start = authority_start + tail_start + q + 1;
        let query_and_more = &input[query_start..];
        let query_len = query_and_more.find('#').unwrap_or(query_and_more.len());
        redact_pairs(
            input,
            query_start,
            query_start + query_len,
            b'&',
            &mut ranges,
        );
    }
    apply(input, &ranges)
}

/// Redacts `name=value` pairs separated by `sep` inside `input[start..end]`.
fn redact_pairs(input: &str, start: usize, end: usize, sep: u8, ranges: &mut Ranges) {
    let mut pos = start;
    while pos < end {
        let pair_end = input.as_bytes()[pos..end]
            .iter()
            .position(|&b| b == sep || (sep == b'&' && b == b';'))
            .map_or(end, |p| pos + p);
        let pair = &input[pos..pair_end];
        if let Some(eq) = pair.find('=')
            && is_sensitive_name(&pair[..eq])
            && eq + 1 < pair.len()
        {
            ranges.push((pos + eq + 1, pair_end));
        }
        pos = pair_end + 1;
    }
}

/// libpq form: `key = value` pairs separated by whitespace; values may be single-quoted with
/// backslash escapes.
fn redact_key_value_form(input: &str) -> Cow<'_, str> {
    let bytes = input.as_bytes();
    let mut ranges = Ranges::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &input[key_start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            // A bare word: not a pair. Skip it.
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            continue;
        }
        i += 1; // '='
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value_start = i;
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
        }
        if is_sensitive_name(key) && i > value_start {
            ranges.push((value_start, i));
        }
    }
    apply(input, &ranges)
}

/// Hides the value of a header that carries credentials.
///
/// `Authorization` / `Proxy-Authorization` keep their scheme (`Bearer ***`, `Basic ***`);
/// `Cookie`, `Set-Cookie` and any header whose name looks secret ([`is_sensitive_name`]:
/// `x-api-key`, `x-admin-token`…) become `***`. Other values are returned as they are.
///
/// ```
/// use unite_telemetry::redact_header;
///
/// assert_eq!(redact_header("Authorization", "Bearer eyJhbGciOi"), "Bearer ***");
/// assert_eq!(redact_header("x-admin-key", "k-123"), "***");
/// assert_eq!(redact_header("accept", "application/json"), "application/json");
/// ```
#[must_use]
pub fn redact_header<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    let is_auth = name.eq_ignore_ascii_case("authorization")
        || name.eq_ignore_ascii_case("proxy-authorization");
    if is_auth {
        let trimmed = value.trim_start();
        if let Some(space) = trimmed.find(' ') {
            let scheme = &trimmed[..space];
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Cow::Owned(format!("{scheme} {REDACTED}"));
            }
        }
        return Cow::Borrowed(REDACTED);
    }
    if is_sensitive_name(name) {
        return Cow::Borrowed(REDACTED);
    }
    Cow::Borrowed(value)
}

/// `Debug` view of an [`http::HeaderMap`] with every credential hidden by [`redact_header`].
///
/// ```
/// use http::HeaderMap;
/// use unite_telemetry::RedactedHeaders;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("authorization", "Bearer abc.def".parse().unwrap());
/// let shown = format!("{:?}", RedactedHeaders(&headers));
/// assert!(shown.contains("Bearer ***") && !shown.contains("abc.def"));
/// ```
pub struct RedactedHeaders<'a>(pub &'a http::HeaderMap);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            match value.to_str() {
                Ok(v) => map.entry(&name.as_str(), &redact_header(name.as_str(), v)),
                Err(_)
                    if is_sensitive_name(name.as_str()) || name == http::header::AUTHORIZATION =>
                {
                    map.entry(&name.as_str(), &REDACTED)
                }
                Err(_) => map.entry(&name.as_str(), &"<binary>"),
            };
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_password_hidden() {
        let cases = [
            ("postgres://app:hunter2@db/app", "postgres://app:***@db/app"),
            ("redis://:hunter2@cache:6379", "redis://:***@cache:6379"),
            (
                "postgres://u:p@h1:5432,h2:5432/db?sslmode=require",
                "postgres://u:***@h1:5432,h2:5432/db?sslmode=require",
            ),
            ("postgres://u:pa/ss@host/db", "postgres://u:***@host/db"),
            ("postgres://u:pa?ss@host/db", "postgres://u:***@host/db"),
            ("postgres://u:p@ss@host/db", "postgres://u:***@host/db"),
            ("postgres://u:1234/5@host/db", "postgres://u:***@host/db"),
            (
                "postgres://u:pa#ss@host/db?password=x",
                "postgres://u:***@host/db?password=***",
            ),
            (
                "https://host/p?api_key=abc&x=1;token=t#frag",
                "https://host/p?api_key=***&x=1;token=***#frag",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(redact_url(input), want, "{input}");
        }
    }

    #[test]
    fn nothing_to_hide_is_borrowed_and_unchanged() {
        for input in [
            "postgres://app@db/app",
            "https://example.com:8443/x?e=a@b.com",
            "https://host/path?sslmode=require",
            "not a url",
            "",
        ] {
            let out = redact_url(input);
            assert!(matches!(out, Cow::Borrowed(_)), "{input}");
            assert_eq!(out, input);
        }
    }

    #[test]
    fn key_value_form() {
        assert_eq!(
            redact_url("host=db port=5432 password=sekret user=app"),
            "host=db port=5432 password=*** user=app"
        );
        assert_eq!(
            redact_url(r"password = 'it\'s a secret' host=db"),
            "password = *** host=db"
        );
        assert_eq!(redact_url("password='unterminated"), "password=***");
        assert_eq!(redact_url("host=db"), "host=db");
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        for input in [
            "://",
            "://@",
            "a://:@",
            "x://u:@h",
            "password=",
            "=",
            "'",
            "a=b=c",
            "é://ü:ß@ö?ä=ö&pass=é",
        ] {
            let out = redact_url(input);
            assert!(!out.is_empty() || input.is_empty());
        }
        assert_eq!(
            redact_url("é://ü:ß@ö?ä=ö&pass=é"),
            "é://ü:***@ö?ä=ö&pass=***"
        );
    }

    #[test]
    fn headers() {
        assert_eq!(
            redact_header("AUTHORIZATION", "Basic dXNlcjpwYXNz"),
            "Basic ***"
        );
        assert_eq!(redact_header("authorization", "rawtoken"), "***");
        assert_eq!(redact_header("cookie", "sid=abc"), "***");
        assert_eq!(redact_header("X-Api-Key", "abc"), "***");
        assert_eq!(redact_header("x-request-id", "abc"), "abc");
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?} {s:#?}"), "*** *** ***");
        assert_eq!(*s.expose(), "hunter2");
        assert_eq!(Secret::from(5).into_inner(), 5);
    }
}
