//! All integration tests compile into one binary (ripgrep style); each module
//! covers one concern and drives the real binaries through `golive_tests`.

mod artifacts;
mod backup;
mod backup_db;
mod backup_engines;
mod config_paths;
mod cron_mode;
mod deploy;
mod deploy_migrate;
mod fanout;
mod first_run;
mod flags;
mod fuzz_regressions;
mod gate;
mod git_source;
mod hardening;
mod hardening_env;
mod hooks;
mod host_rollback;
mod logs;
mod maintenance;
mod metrics;
mod migrate;
mod migrate_engines;
mod packaging;
mod parallel;
mod preflight;
mod probes;
mod releases;
mod resume;
mod security;
mod ssh;
mod systemd;
mod walkthrough;
mod watchdog;
mod waves;
