//! Health probes declared in the agent config, run concurrently, each under
//! its own timeout. Issue 2 ships the http probe; the other kinds of SPEC §6
//! are listed under "Not built yet" in the README.

use std::time::{Duration, Instant};

use bytes::Bytes;
use golive_shared::config::{AppConfig, HttpProbe, ProbeConfig};
use golive_shared::protocol::{ProbeReport, ProbeResult, ProbeStatus};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

/// Bodies beyond this are not read: a probe checks health, it does not download.
const MAX_PROBE_BODY: usize = 1024 * 1024;

pub async fn run_app(app_name: &str, app: &AppConfig, tags: &[String]) -> ProbeReport {
    let mut set = tokio::task::JoinSet::new();
    let selected: Vec<ProbeConfig> = app
        .probes
        .iter()
        .filter(|p| tags.is_empty() || p.tags().iter().any(|t| tags.contains(t)))
        .cloned()
        .collect();
    for (i, probe) in selected.into_iter().enumerate() {
        set.spawn(async move { (i, run_one(&probe).await) });
    }
    let mut results: Vec<(usize, ProbeResult)> = set.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    ProbeReport {
        app: app_name.to_string(),
        results: results.into_iter().map(|(_, r)| r).collect(),
    }
}

pub async fn run_one(probe: &ProbeConfig) -> ProbeResult {
    match probe {
        ProbeConfig::Http(p) => http(p).await,
    }
}

async fn http(p: &HttpProbe) -> ProbeResult {
    let started = Instant::now();
    let threshold = Some(format!(
        "status in {:?}{}",
        p.expect_status,
        p.body_contains
            .as_ref()
            .map(|b| format!(", body contains {b:?}"))
            .unwrap_or_default()
    ));
    let result = match tokio::time::timeout(Duration::from_millis(p.timeout_ms), get(&p.url)).await
    {
        Err(_) => Err(format!("no answer within {} ms", p.timeout_ms)),
        Ok(r) => r,
    };
    let (status, value, message) = match result {
        Err(e) => (ProbeStatus::Error, None, format!("GET {}: {e}", p.url)),
        Ok((code, body)) => {
            let value = Some(format!("status {code}"));
            if !p.expect_status.contains(&code) {
                (
                    ProbeStatus::Fail,
                    value,
                    format!("GET {} answered {code}", p.url),
                )
            } else if let Some(needle) = &p.body_contains
                && !String::from_utf8_lossy(&body).contains(needle.as_str())
            {
                (
                    ProbeStatus::Fail,
                    value,
                    format!("GET {} body does not contain {needle:?}", p.url),
                )
            } else {
                (
                    ProbeStatus::Pass,
                    value,
                    format!("GET {} answered {code}", p.url),
                )
            }
        }
    };
    ProbeResult {
        name: p.name.clone(),
        kind: "http".into(),
        severity: p.severity,
        status,
        value,
        threshold,
        duration_ms: started.elapsed().as_millis() as u64,
        message,
    }
}

/// A plain HTTP/1.1 GET; returns the status and at most [`MAX_PROBE_BODY`] bytes.
async fn get(url: &str) -> Result<(u16, Bytes), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "only http:// URLs are supported".to_string())?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let stream = tokio::net::TcpStream::connect(&target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "golive-agent probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_PROBE_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    driver.abort();
    Ok((status, body))
}
