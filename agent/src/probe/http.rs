//! The http(s) probe: one GET with hyper (HTTP/1.1) over TCP, or over rustls
//! for https, plus redirects when the probe follows them. Latency is the
//! whole exchange, redirects included. At most the first MiB of a body is
//! read: a probe checks health, it does not download.
//!
//! Transport trouble (refused connection, failed TLS handshake, an
//! untrusted certificate) is an `error`; an answer that is not the expected
//! one is a `fail`, listing everything that was wrong.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use golive_shared::config::{HttpProbe, ProbeUrl};
// The HTTP client is golive-shared's (the webhooks use it too): compiled
// once in the agent.
use golive_shared::http::{Answer, send, tls_config};
use http_body_util::{BodyExt, Empty};
use hyper::header;

use super::{Check, clip, ms};
use crate::accesslog::format::MAINTENANCE_HEADER;

pub(super) fn threshold(p: &HttpProbe) -> String {
    let mut parts = vec![format!("status in {:?}", p.expect_status)];
    if let Some(max) = p.max_latency_ms {
        parts.push(format!("≤ {max} ms"));
    }
    if let Some(b) = &p.body_contains {
        parts.push(format!("body contains {b:?}"));
    }
    for (pointer, value) in &p.json {
        parts.push(format!("{pointer} = {value}"));
    }
    for h in &p.headers {
        parts.push(format!("header {h}"));
    }
    for (h, v) in &p.header_contains {
        parts.push(format!("header {h} contains {v:?}"));
    }
    parts.join(", ")
}

pub(super) async fn check(p: &HttpProbe) -> Check {
    let mut url = match ProbeUrl::parse(&p.url) {
        Ok(u) => u,
        Err(e) => return Check::error(e),
    };
    let started = Instant::now();
    let mut tls: Option<Arc<rustls::ClientConfig>> = None;
    let mut hops = 0;
    let answer = loop {
        if url.https && tls.is_none() {
            match client_config(p).await {
                Ok(c) => tls = Some(c),
                Err(e) => return Check::error(format!("GET {url}: {e}")),
            }
        }
        let answer = match fetch(&url, tls.clone()).await {
            Ok(a) => a,
            Err(e) => return Check::error(format!("GET {url}: {e}")),
        };
        let location = answer
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok());
        if let (true, 301 | 302 | 303 | 307 | 308, Some(location)) =
            (p.follow_redirects, answer.status, location)
        {
            if hops == p.max_redirects {
                return Check::fail(
                    format!("status {}, {hops} redirects", answer.status),
                    format!(
                        "GET {}: still redirected after {hops} hops (the last to {location}); \
                         raise max_redirects or probe the final URL",
                        p.url
                    ),
                );
            }
            url = match url.join(location) {
                Ok(u) => u,
                Err(e) => return Check::error(format!("GET {url}: bad redirect: {e}")),
            };
            hops += 1;
            continue;
        }
        break answer;
    };
    let took = started.elapsed();
    let mut value = format!("status {}, {}", answer.status, ms(took));
    let mut asked = p.url.clone();
    if hops > 0 {
        value.push_str(&format!(
            ", {hops} redirect{}",
            if hops == 1 { "" } else { "s" }
        ));
        asked = format!("{} (→ {url})", p.url);
    }
    let failures = judge(p, &answer, took.as_millis() as u64);
    if failures.is_empty() {
        Check::pass(
            value,
            format!("GET {asked} answered {} in {}", answer.status, ms(took)),
        )
    } else if answer.headers.contains_key(MAINTENANCE_HEADER) {
        // golive's maintenance page (issue 12, part 12): the release cannot
        // be verified through it, so the probe does not pass, but it says
        // what answered, and an availability sample counts it as
        // maintenance, not as the app not answering.
        let mut c = Check::fail(
            format!("{value}, golive's maintenance page"),
            format!(
                "GET {asked}: golive's maintenance page answered ({} with {MAINTENANCE_HEADER}): \
                 the app is in maintenance, not down; the release is not verified through it \
                 (turn maintenance off, `golivectl maintenance off PLAN`, then probe again); {}",
                answer.status,
                failures.join("; ")
            ),
        );
        c.maintenance = true;
        c
    } else {
        Check::fail(value, format!("GET {asked}: {}", failures.join("; ")))
    }
}

/// Everything about the answer that is not what the probe expects.
fn judge(p: &HttpProbe, a: &Answer, took_ms: u64) -> Vec<String> {
    let mut failures = Vec::new();
    if !p.expect_status.contains(&a.status) {
        failures.push(format!(
            "answered {}, expected {}",
            a.status,
            p.expect_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if let Some(max) = p.max_latency_ms
        && took_ms > max
    {
        failures.push(format!("took {took_ms} ms, more than {max} ms"));
    }
    let partial = if a.truncated {
        " (only its first MiB was read)"
    } else {
        ""
    };
    if let Some(needle) = &p.body_contains
        && !String::from_utf8_lossy(&a.body).contains(needle.as_str())
    {
        failures.push(format!("body does not contain {needle:?}{partial}"));
    }
    if !p.json.is_empty() {
        match serde_json::from_slice::<serde_json::Value>(&a.body) {
            Err(e) => failures.push(format!("body is not JSON ({e}){partial}")),
            Ok(doc) => {
                for (pointer, want) in &p.json {
                    match doc.pointer(pointer) {
                        None => failures.push(format!("{pointer} is missing from the JSON body")),
                        Some(got) if !json_equals(got, want) => failures.push(format!(
                            "{pointer} is {}, expected {want}",
                            clip(&got.to_string(), 80)
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    for h in &p.headers {
        if !a.headers.contains_key(h.as_str()) {
            failures.push(format!("header {h} is missing"));
        }
    }
    for (h, want) in &p.header_contains {
        let values: Vec<&str> = a
            .headers
            .get_all(h.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let want_lower = want.to_ascii_lowercase();
        if values.is_empty() {
            failures.push(format!("header {h} is missing"));
        } else if !values
            .iter()
            .any(|v| v.to_ascii_lowercase().contains(&want_lower))
        {
            failures.push(format!(
                "header {h} is {:?}, expected it to contain {want:?}",
                clip(&values.join(", "), 120)
            ));
        }
    }
    failures
}

/// A JSON value equals the TOML value the config expects (numbers by value).
fn json_equals(got: &serde_json::Value, want: &toml::Value) -> bool {
    match want {
        toml::Value::String(s) => got.as_str() == Some(s.as_str()),
        toml::Value::Boolean(b) => got.as_bool() == Some(*b),
        toml::Value::Integer(i) => {
            got.as_i64() == Some(*i) || (got.as_f64() == Some(*i as f64) && !got.is_string())
        }
        toml::Value::Float(f) => got.as_f64() == Some(*f),
        _ => false,
    }
}

/// One request to `url`: connect, TLS when https, GET, read the answer.
async fn fetch(url: &ProbeUrl, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Answer, String> {
    let req = hyper::Request::get(url.path.as_str())
        .header(header::HOST, url.host_header())
        .header(header::USER_AGENT, "golive-agent probe")
        .header(header::ACCEPT, "*/*")
        .body(Empty::<Bytes>::new().boxed())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    send(url, tls, req).await
}

/// TLS 1.2 and 1.3 (a probed site may not speak 1.3 yet), ALPN http/1.1,
/// trusting the system roots, the probe's `ca_file`, or anything when
/// `tls_verify = false`.
async fn client_config(p: &HttpProbe) -> Result<Arc<rustls::ClientConfig>, String> {
    tls_config(p.tls_verify, p.ca_file.clone()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderMap;

    fn probe(extra: &str) -> HttpProbe {
        let text = format!("name = \"p\"\nurl = \"http://127.0.0.1:1/\"\n{extra}");
        toml::from_str(&text).unwrap()
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Answer {
            status,
            headers: map,
            body: Bytes::from(body.to_string()),
            truncated: false,
        }
    }

    #[test]
    fn every_unmet_expectation_is_listed() {
        let p = probe(
            "expect_status = [200, 204]\nmax_latency_ms = 100\nbody_contains = \"ok\"\n\
             json = { \"/status\" = \"ok\", \"/n\" = 3 }\nheaders = [\"X-Frame-Options\"]\n\
             header_contains = { \"Strict-Transport-Security\" = \"MAX-AGE=\" }",
        );
        let good = answer(
            200,
            &[
                ("x-frame-options", "DENY"),
                ("strict-transport-security", "max-age=31536000"),
            ],
            r#"{"status": "ok", "n": 3.0}"#,
        );
        assert_eq!(judge(&p, &good, 20), Vec::<String>::new());
        let bad = answer(
            503,
            &[("strict-transport-security", "includeSubDomains")],
            r#"{"status": "degraded"}"#,
        );
        let f = judge(&p, &bad, 250);
        assert_eq!(
            f,
            [
                "answered 503, expected 200 or 204",
                "took 250 ms, more than 100 ms",
                "body does not contain \"ok\"",
                "/n is missing from the JSON body",
                "/status is \"degraded\", expected \"ok\"",
                "header X-Frame-Options is missing",
                "header Strict-Transport-Security is \"includeSubDomains\", expected it to contain \"MAX-AGE=\"",
            ]
        );
        let f = judge(&p, &answer(200, &[], "<html>"), 1);
        assert!(f.iter().any(|m| m.starts_with("body is not JSON")), "{f:?}");
    }

    #[test]
    fn json_numbers_compare_by_value_not_by_type_of_text() {
        assert!(json_equals(&serde_json::json!(3), &toml::Value::Integer(3)));
        assert!(json_equals(
            &serde_json::json!(3.0),
            &toml::Value::Integer(3)
        ));
        assert!(!json_equals(
            &serde_json::json!("3"),
            &toml::Value::Integer(3)
        ));
        assert!(json_equals(
            &serde_json::json!(true),
            &toml::Value::Boolean(true)
        ));
        assert!(json_equals(
            &serde_json::json!(0.5),
            &toml::Value::Float(0.5)
        ));
    }
}
