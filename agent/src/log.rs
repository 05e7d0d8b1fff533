//! Agent log lines, one per event, UTC-stamped: on stderr, or in the
//! size-rotated log file when one is set ([`crate::logfile`], cron mode).
//! Secrets never reach these lines: the agent logs names, paths and
//! outcomes, not config values.

use golive_shared::protocol::now_millis;
use golive_shared::timefmt::utc;

fn line(level: &str, msg: &str) {
    let text = format!("{} {level} {msg}", utc(now_millis()));
    if !crate::logfile::write(&text) {
        eprintln!("{text}");
    }
}

pub fn info(msg: &str) {
    line("INFO", msg);
}

pub fn warn(msg: &str) {
    line("WARN", msg);
}

pub fn error(msg: &str) {
    line("ERROR", msg);
}
