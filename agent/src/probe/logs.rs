//! The access-log probe: the 5xx share and p95 latency over the last
//! `window_secs` of an nginx or Apache access log, from the tailer in
//! [`crate::accesslog`] (one per log, kept running while asked, rotation
//! handled). Requests answered during golive's maintenance of the app are
//! not an outage: they are left out and reported apart (issue 12, part 12;
//! the rule is [`crate::maintenance::excluded_spans`]).

use std::time::Duration;

use golive_shared::config::AccessLogProbe;

use super::{Check, blocking};
use crate::accesslog::{self, Excluded, LogFormat};

/// The probe's format, checked against its limits.
pub(super) fn compile(p: &AccessLogProbe) -> Result<LogFormat, String> {
    let format = LogFormat::parse(&p.format)?;
    if p.max_p95_ms.is_some() && !format.has_latency() {
        return Err(format!(
            "{:?} has no latency field, so max_p95_ms cannot be measured; log $request_time \
             (nginx) or %D (Apache) and name it in the format",
            p.format
        ));
    }
    Ok(format)
}

pub(super) fn threshold(p: &AccessLogProbe) -> String {
    let mut limits = Vec::new();
    if let Some(r) = p.max_error_rate_percent {
        limits.push(format!("5xx ≤ {r} %"));
    }
    if let Some(ms) = p.max_p95_ms {
        limits.push(format!("p95 ≤ {ms} ms"));
    }
    format!(
        "{} over {} s (judged from {} requests)",
        limits.join(", "),
        p.window_secs,
        p.min_requests
    )
}

pub(super) async fn check(p: &AccessLogProbe, maintenance: Vec<Excluded>) -> Check {
    let p = p.clone();
    blocking(move || {
        let format = match compile(&p) {
            Ok(f) => f,
            Err(e) => return Check::error(format!("format: {e}")),
        };
        let window = Duration::from_secs(p.window_secs);
        let st = match accesslog::stats_excluding(&p.path, &format, window, &maintenance) {
            Ok(s) => s,
            Err(e) => return Check::error(e),
        };
        let rate = st.error_rate * 100.0;
        let apart = if st.excluded_requests > 0 {
            format!(
                ", {} during golive's maintenance not counted",
                st.excluded_requests
            )
        } else {
            String::new()
        };
        let value = format!(
            "{rate:.2} % 5xx of {} requests{}{apart}",
            st.requests,
            st.p95_ms
                .map(|ms| format!(", p95 {ms:.0} ms"))
                .unwrap_or_default()
        );
        let apart = if st.excluded_requests > 0 {
            format!(
                "; {} request(s) answered during golive's maintenance ({} of them 5xx) are not \
                 counted",
                st.excluded_requests, st.excluded_5xx
            )
        } else {
            String::new()
        };
        let log = p.path.display();
        let unparsed = if st.unparsed_lines > 0 {
            format!(
                "; {} line(s) did not fit the format {:?}",
                st.unparsed_lines, p.format
            )
        } else {
            String::new()
        };
        let unparsed = format!("{apart}{unparsed}");
        if st.requests < p.min_requests {
            return Check::pass(
                value,
                format!(
                    "{log}: {} request(s) in the last {} s, fewer than min_requests = {}: \
                     too few to judge{unparsed}",
                    st.requests, st.window_secs, p.min_requests
                ),
            );
        }
        let mut over = Vec::new();
        if let Some(max) = p.max_error_rate_percent
            && rate > max
        {
            over.push(format!("5xx share {rate:.2} % is above {max} %"));
        }
        if let Some(max) = p.max_p95_ms {
            match st.p95_ms {
                Some(ms) if ms > max as f64 => {
                    over.push(format!("p95 {ms:.0} ms is above {max} ms"))
                }
                Some(_) => {}
                None => over.push("no latency was logged, so p95 is unknown".into()),
            }
        }
        let verdict = if over.is_empty() {
            "within limits".to_string()
        } else {
            over.join("; ")
        };
        Check::judge(
            over.is_empty(),
            value,
            format!(
                "{log}: {verdict} over the last {} s{unparsed}",
                st.window_secs
            ),
        )
    })
    .await
}
