//! Agent log lines on stderr, one per event, UTC-stamped. Secrets never reach
//! these lines: the agent logs names, paths and outcomes, not config values.

use golive_shared::protocol::now_millis;
use golive_shared::timefmt::utc;

pub fn info(msg: &str) {
    eprintln!("{} INFO {msg}", utc(now_millis()));
}

pub fn warn(msg: &str) {
    eprintln!("{} WARN {msg}", utc(now_millis()));
}

pub fn error(msg: &str) {
    eprintln!("{} ERROR {msg}", utc(now_millis()));
}
