//! The Grafana dashboard and the Prometheus rules in the workspace's `docs/` name only the
//! metrics of `unite_telemetry::names`, and the rules pass `promtool`.
//!
//! `promtool` comes from Debian's `prometheus` package. Without it these tests FAIL: rules
//! that were never checked must not look checked.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use unite_telemetry::names;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Every `unite_*` metric a PromQL expression names, with the label keys of its selector.
fn metrics_in(expr: &str) -> Vec<(String, Vec<String>)> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    while i < bytes.len() {
        if ident(bytes[i])
            && (i == 0 || !ident(bytes[i - 1]) && bytes[i - 1] != b'$' && bytes[i - 1] != b'.')
        {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("unite_") {
                let mut labels = Vec::new();
                if bytes.get(i) == Some(&b'{') {
                    let end = expr[i..].find('}').map(|e| i + e).expect("closed selector");
                    for matcher in split_matchers(&expr[i + 1..end]) {
                        let key: String = matcher
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !key.is_empty() {
                            labels.push(key);
                        }
                    }
                    i = end;
                }
                out.push((word.to_owned(), labels));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Splits `a="x",b=~"y|z"` on the commas outside quotes.
fn split_matchers(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Checks the names and selector labels of `expr`; returns the metrics it names.
fn check_expr(where_: &str, expr: &str) -> Vec<String> {
    let found = metrics_in(expr);
    for (metric, labels) in &found {
        assert!(
            names::is_known(metric),
            "{where_}: `{metric}` is not in unite_telemetry::names: {expr}"
        );
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| metric.strip_suffix(s).filter(|b| names::ALL.contains(b)))
            .unwrap_or(metric);
        let def = names::CATALOG.iter().find(|d| d.name == base).unwrap();
        for label in labels {
            let generic = ["job", "instance", "le"].contains(&label.as_str());
            assert!(
                generic || def.labels.contains(&label.as_str()),
                "{where_}: `{metric}` has no label `{label}` (it has {:?}): {expr}",
                def.labels
            );
        }
    }
    found.into_iter().map(|(m, _)| m).collect()
}

fn walk<'v>(v: &'v Value, key: Option<&str>, out: &mut Vec<(String, &'v str)>) {
    match v {
        Value::Object(map) => map.iter().for_each(|(k, v)| walk(v, Some(k), out)),
        Value::Array(items) => items.iter().for_each(|v| walk(v, key, out)),
        Value::String(s) if matches!(key, Some("expr" | "query" | "definition")) => {
            out.push((key.unwrap_or_default().to_owned(), s));
        }
        _ => {}
    }
}

#[test]
fn dashboard_is_valid_json_over_known_metrics_only() {
    let path = docs().join("dashboards/unite.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert_eq!(dashboard["title"], "Unite");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids: Vec<_> = panels
        .iter()
        .map(|p| p["id"].as_u64().expect("panel id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");

    let mut queries = Vec::new();
    walk(&dashboard, None, &mut queries);
    let exprs = queries.iter().filter(|(k, _)| k == "expr").count();
    assert!(exprs >= 20, "only {exprs} queries");
    let mut used = Vec::new();
    for (key, q) in &queries {
        used.extend(check_expr(&format!("dashboard {key}"), q));
    }
    for name in names::ALL {
        assert!(
            used.iter()
                .any(|u| u == name || u.strip_suffix("_bucket") == Some(name)),
            "the dashboard shows nothing of {name}"
        );
    }
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        for target in panel["targets"].as_array().expect("targets") {
            assert!(
                target["refId"].is_string() && target["expr"].is_string(),
                "{target}"
            );
        }
    }
}

fn rules_path() -> PathBuf {
    docs().join("alerts.yml")
}

#[test]
fn rules_parse_as_yaml_over_known_metrics_only() {
    let text = std::fs::read_to_string(rules_path()).expect("docs/alerts.yml");
    let rules: serde_norway::Value =
        serde_norway::from_str(&text).expect("the rules are valid YAML");
    let groups = rules["groups"].as_sequence().expect("groups");
    let mut alerts = Vec::new();
    for group in groups {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .expect("alerting rules only")
                .to_owned();
            let expr = rule["expr"].as_str().expect("expr");
            let metrics = check_expr(&name, expr);
            assert!(!metrics.is_empty(), "{name} names no Unite metric");
            assert!(
                rule["labels"]["severity"].is_string(),
                "{name} has no severity"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name} has no summary"
            );
            alerts.push(name);
        }
    }
    for wanted in [
        "UniteCircuitBreakerOpen",
        "UniteCacheHitRateLow",
        "UniteHotKeyDetected",
        "UniteTooManyRequestsRejected",
        "UniteHighLatencyP95",
    ] {
        assert!(alerts.iter().any(|a| a == wanted), "missing alert {wanted}");
    }
}

fn promtool(args: &[&str]) -> String {
    let output = match Command::new("promtool").args(args).output() {
        Ok(output) => output,
        Err(e) => panic!(
            "cannot run promtool ({e}). It checks docs/alerts.yml and is not optional: install \
             it with `apt-get install -y prometheus` (Debian's package ships promtool)."
        ),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_check_rules_passes() {
    let path = rules_path();
    let text = promtool(&["check", "rules", path.to_str().unwrap()]);
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Feeds series to the rules and checks which alerts fire (`promtool test rules`).
#[test]
fn promtool_rule_unit_tests_pass() {
    let rules = rules_path().canonicalize().unwrap();
    let tests = format!(
        r#"
rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'unite_breaker_state{{job="hub", name="postgres"}}'
        values: '0 0 2 2 2 2 2 2 2 2'
      - series: 'unite_breaker_state{{job="hub", name="redis"}}'
        values: '0 0 0 0 0 0 1 0 0 0'
    alert_rule_test:
      - eval_time: 2m
        alertname: UniteCircuitBreakerOpen
        exp_alerts: []
      - eval_time: 6m
        alertname: UniteCircuitBreakerOpen
        exp_alerts:
          - exp_labels: {{job: hub, name: postgres, severity: critical}}
            exp_annotations:
              summary: "Circuit breaker postgres is open"
              description: "Calls to postgres are being rejected at once; the backend is failing or slow."

  - interval: 1m
    input_series:
      - series: 'unite_cache_requests_total{{job="hub", layer="l1", result="hit"}}'
        values: '0+60x30'
      - series: 'unite_cache_requests_total{{job="hub", layer="l1", result="miss"}}'
        values: '0+90x30'
      - series: 'unite_cache_requests_total{{job="hub", layer="l2", result="hit"}}'
        values: '0+30x30'
      - series: 'unite_cache_requests_total{{job="healthy", layer="l1", result="hit"}}'
        values: '0+570x30'
      - series: 'unite_cache_requests_total{{job="healthy", layer="l1", result="miss"}}'
        values: '0+30x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: UniteCacheHitRateLow
        exp_alerts:
          - exp_labels: {{job: hub, severity: warning}}
            exp_annotations:
              summary: "Cache hit rate of hub is under 80%"
              description: "Fewer than 80% of lookups are served from L1 or L2; the database takes the rest."

  - interval: 1m
    input_series:
      - series: 'unite_hotkey_alerts_total{{job="hub"}}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 4m
        alertname: UniteHotKeyDetected
        exp_alerts:
          - exp_labels: {{job: hub, severity: warning}}
            exp_annotations:
              summary: "Hot keys detected on hub"
              description: "A key passed the per-minute access threshold; see /api/health/hotkeys for the keys."
      - eval_time: 12m
        alertname: UniteHotKeyDetected
        exp_alerts: []

  - interval: 1m
    input_series:
      - series: 'unite_http_requests_total{{job="hub", method="GET", route="/x", status="200"}}'
        values: '0+100x30'
      - series: 'unite_http_requests_total{{job="hub", method="GET", route="/x", status="429"}}'
        values: '0+20x30'
      - series: 'unite_http_requests_total{{job="calm", method="GET", route="/x", status="200"}}'
        values: '0+100x30'
      - series: 'unite_http_requests_total{{job="calm", method="GET", route="/x", status="429"}}'
        values: '0+1x30'
    alert_rule_test:
      - eval_time: 15m
        alertname: UniteTooManyRequestsRejected
        exp_alerts:
          - exp_labels: {{job: hub, severity: warning}}
            exp_annotations:
              summary: "More than 5% of requests to hub get 429"
              description: "Rate limiting rejects a large share of traffic: an abusive client, or quotas too low."

  - interval: 1m
    input_series:
      - series: 'unite_http_request_duration_seconds_bucket{{job="hub", method="GET", route="/slow", le="0.25"}}'
        values: '0+10x30'
      - series: 'unite_http_request_duration_seconds_bucket{{job="hub", method="GET", route="/slow", le="0.5"}}'
        values: '0+50x30'
      - series: 'unite_http_request_duration_seconds_bucket{{job="hub", method="GET", route="/slow", le="1"}}'
        values: '0+100x30'
      - series: 'unite_http_request_duration_seconds_bucket{{job="hub", method="GET", route="/slow", le="+Inf"}}'
        values: '0+100x30'
      - series: 'unite_http_request_duration_seconds_bucket{{job="hub", method="GET", route="/fast", le="0.25"}}'
        values: '0+100x30'
      - series: 'unite_http_request_duration_seconds_bucket{{job="hub", method="GET", route="/fast", le="+Inf"}}'
        values: '0+100x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: UniteHighLatencyP95
        exp_alerts:
          - exp_labels: {{job: hub, route: /slow, severity: warning}}
            exp_annotations:
              summary: "p95 latency of /slow is over 500 ms"
              description: "95th percentile of request duration on hub /slow has been above 500 ms for 10 minutes."
"#,
        rules = rules.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts_test.yml");
    std::fs::write(&file, tests).unwrap();
    let text = promtool(&["test", "rules", file.to_str().unwrap()]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn the_metric_scanner_finds_names_and_labels() {
    let found = metrics_in(
        r#"sum by (le) (rate(unite_x_bucket{job=~"$job",a="1,2",b!~"x"}[5m])) / unite_y"#,
    );
    assert_eq!(
        found,
        vec![
            (
                "unite_x_bucket".to_owned(),
                vec!["job".to_owned(), "a".to_owned(), "b".to_owned()]
            ),
            ("unite_y".to_owned(), vec![])
        ]
    );
}
