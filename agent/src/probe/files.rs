//! The file probe: a file exists, and with `max_age_secs` it was modified
//! recently enough — a heartbeat file a cron job touches (seed 000: "cron
//! more than 3h without running").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use golive_shared::config::FileProbe;

use super::{Check, age, blocking, bytes};

pub(super) async fn check(p: &FileProbe) -> Check {
    let p = p.clone();
    blocking(move || {
        let shown = p.path.display();
        let meta = match std::fs::metadata(&p.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Check::fail("missing", format!("{shown} does not exist"));
            }
            Err(e) => return Check::error(format!("cannot stat {shown}: {e}")),
        };
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        // A file from the future (clock skew) counts as brand new.
        let old = SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::ZERO);
        let at = golive_shared::timefmt::utc(
            modified
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or_default(),
        );
        let Some(max) = p.max_age_secs else {
            return Check::pass(
                format!("exists, {}", bytes(meta.len())),
                format!("{shown} exists (modified {at})"),
            );
        };
        let max = Duration::from_secs(max);
        Check::judge(
            old <= max,
            format!("age {}", age(old)),
            format!(
                "{shown} was modified {} ago (at {at}); at most {} allowed",
                age(old),
                age(max)
            ),
        )
    })
    .await
}
