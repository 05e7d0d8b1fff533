//! The command line (clap derive). Raw arguments only; commands validate them
//! into plans and requests before anything connects.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::output::Format;

#[derive(Parser)]
#[command(
    name = "golivectl",
    version,
    about = "golive controller: deploy, probe and roll back across golive agents over mutual TLS",
    after_help = "Exit codes: 0 done; 1 failed; 2 bad usage, config or input (nothing changed); 3 rolled back; 4 paused awaiting a decision."
)]
pub struct Cli {
    /// Output format: human lines, or JSON (one object, or NDJSON events for long commands).
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    /// Controller state directory (journal of deployments). Default:
    /// $GOLIVE_STATE_DIR, else $XDG_STATE_HOME/golive, else ~/.local/state/golive.
    #[arg(long, global = true)]
    pub state: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Issue or revoke certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Each agent's version, protocol, apps, current release and lock.
    Status {
        /// Plan file naming the hosts (default: ./golive.toml).
        plan: Option<PathBuf>,
    },
    /// Upload, stage and activate the plan's release on every host, probe it,
    /// and switch back if a probe fails (exit 3).
    Deploy {
        plan: PathBuf,
        /// Validate the plan and reach every agent, but change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Deploy outside the plan's `[window]`, as a hotfix; needs --reason.
        #[arg(long, requires = "reason")]
        hotfix: bool,
        /// Deploy even though preflight's blocking checks fail (forbidden
        /// text in the artifact, a required file missing, a database not
        /// answering, ...); needs --reason. The overridden checks are recorded.
        #[arg(long, requires = "reason")]
        force: bool,
        /// Why the hotfix cannot wait for the window, or why the deployment
        /// goes on over failing checks; recorded with the deployment
        /// (`golivectl show`).
        #[arg(long)]
        reason: Option<String>,
        /// Who approved this deployment (repeatable, one per person);
        /// recorded as decisions before it starts. `[deploy] approvals = N`
        /// in the plan requires N distinct names.
        #[arg(long = "approved-by", value_name = "NAME")]
        approved_by: Vec<String>,
        /// Carry on deployment ID after its controller was killed or lost:
        /// steps done are not sent again, unfinished ones are resubmitted
        /// under their keys (the agents reattach), then it continues or
        /// rolls back as the plan says. Takes the plan it started with.
        #[arg(long, value_name = "ID")]
        resume: Option<String>,
    },
    /// Run the app's probes on every host at once and print a host × probe
    /// matrix with a go/no-go verdict (critical or high failing: NO-GO).
    /// Exit 0 go, 1 no-go, 2 bad plan, unknown tag or a host refusing.
    Probe {
        plan: PathBuf,
        /// Only probes carrying this tag (repeatable: any of them), e.g.
        /// `--tag smoke --tag vertical:agroconecta`.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// The checks before a deploy, changing nothing: agents reachable and
    /// compatible, the app not locked, databases and backup room, release
    /// files, migrations, all probes, the deployment window and the release
    /// artifact scan. Exit 0 READY, 1 NOT READY, 2 bad plan.
    Preflight { plan: PathBuf },
    /// Roll a deployment back to the releases its hosts ran before it.
    Rollback {
        /// Deployment id (from `golivectl deploy` or `golivectl history`).
        id: String,
        /// Plan file for TLS and addresses (default: the plan the deployment used).
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Roll back only these hosts of the deployment (comma-separated);
        /// default: every host it switched, newest first.
        #[arg(long, value_delimiter = ',')]
        hosts: Option<Vec<String>>,
    },
    /// Record the go decision on a paused deployment (it continues), or on a
    /// watched one (each host's watchdog commits the release now).
    Go {
        /// Deployment id (from `golivectl deploy` or `golivectl history`).
        id: String,
        /// Who decides (recorded in the deployment record).
        #[arg(long)]
        by: String,
        /// Why, or anything the record should keep.
        #[arg(long)]
        note: Option<String>,
    },
    /// Record a no-go on a paused or watched deployment: its activated hosts
    /// are rolled back.
    #[command(name = "no-go")]
    NoGo {
        /// Deployment id (from `golivectl deploy` or `golivectl history`).
        id: String,
        /// Who decides (recorded in the deployment record).
        #[arg(long)]
        by: String,
        /// Why (required: the record says why the deployment was stopped).
        #[arg(long)]
        reason: String,
    },
    /// Recent deployments.
    History {
        /// Only the deployments of this plan's app (every other command
        /// takes the plan too).
        plan: Option<PathBuf>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// `html`: write an index page and each deployment's record page
        /// into `--dir` (default STATE/records) and print the index's path.
        #[arg(long, value_enum, default_value_t = RecordFormat::Markdown)]
        format: RecordFormat,
        /// Where `--format html` writes its files.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// One deployment's record: hosts, steps, probes, gate, decisions,
    /// watchdog, later actions.
    Show {
        id: String,
        /// `html`: one self-contained page (timeline, tables), written to
        /// `--out` (default STATE/records/ID.html); its path is printed.
        #[arg(long, value_enum, default_value_t = RecordFormat::Markdown)]
        format: RecordFormat,
        /// Where `--format html` writes the page.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Recent jobs on the plan's agents.
    Jobs {
        plan: PathBuf,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Reattach to a job on one host and follow its events until it ends.
    Follow {
        plan: PathBuf,
        /// Host name from the plan.
        #[arg(long)]
        host: String,
        job: u64,
    },
    /// Break a stale app lock (audited on the agent).
    Unlock {
        plan: PathBuf,
        #[arg(long)]
        reason: String,
    },
    /// Backups of the plan's app on every host: create, list, verify, restore.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// SQL migrations of the plan's app on every host (`[apps.APP.migrations]`
    /// in each agent's config): status, up, down.
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// Turn the plan's app's maintenance mode on or off on every host (flag
    /// file and/or commands, as each agent declares; checked when a check URL
    /// is set). `off` reports the downtime.
    Maintenance {
        #[arg(value_enum, value_name = "on|off")]
        switch: OnOff,
        plan: PathBuf,
        /// Why; journaled on the agents and written into the flag file.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Feature flags the app declares in each agent's config
    /// (`[apps.APP.flags]`): list them, or set one on every host.
    Flag {
        #[command(subcommand)]
        command: FlagCommand,
    },
    /// Run a command the app declares on every host, in plan order
    /// (`[apps.APP.commands.NAME]` in each agent's config); an unknown name
    /// is refused with the list of declared ones.
    Run {
        plan: PathBuf,
        /// The command's name, e.g. `cache-rebuild`.
        command: String,
    },
    /// A full local walkthrough on embedded defaults: PKI, agent, sample app,
    /// deploy, a failing deploy switched back, rollback. Nothing to configure.
    Demo {
        /// Keep the demo directory instead of deleting it.
        #[arg(long)]
        keep: bool,
    },
    /// Write a commented example plan (golive.toml) and agent config
    /// (agent.toml) to edit, and print the next steps.
    Init {
        /// Where to write them.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
    },
    /// Shell completions on stdout, e.g. `golivectl completions bash >
    /// ~/.local/share/bash-completion/completions/golivectl`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: golive_shared::clidoc::Shell,
    },
    /// Man pages: golivectl(1) on stdout, or with --dir golivectl.1 and one
    /// page per subcommand (golivectl-deploy.1, ...) written into DIR.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum FlagCommand {
    /// The declared flags and their values on every host.
    List { plan: PathBuf },
    /// Turn a declared flag on or off on every host.
    Set {
        plan: PathBuf,
        name: String,
        #[arg(value_enum, value_name = "on|off")]
        switch: OnOff,
        /// Rollout percentage, 0 to 100.
        #[arg(long, allow_negative_numbers = true, value_parser = percent)]
        percent: Option<u8>,
    },
}

/// `--percent`: the range is the message, whatever the number (issue 12:
/// `-5` was taken for an option and `300` got u8's range).
fn percent(text: &str) -> Result<u8, String> {
    let bad = || format!("{text:?} is not a percentage: use a whole number from 0 to 100");
    let n: i64 = text.trim().parse().map_err(|_| bad())?;
    u8::try_from(n).ok().filter(|p| *p <= 100).ok_or_else(bad)
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// Create the deployment CA in DIR (refuses to overwrite one).
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
}

#[derive(Subcommand)]
pub enum CertCommand {
    /// An agent certificate, valid for the given DNS names or IP addresses.
    Agent {
        name: String,
        #[arg(long, num_args = 1.., required = true)]
        san: Vec<String>,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// An operator certificate carrying a role: viewer, operator or admin.
    Operator {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Add a certificate (file) or serial (hex) to DIR/revoked.txt, the deny
    /// list agents reload on change.
    Revoke {
        cert_or_serial: String,
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Back up the app's declared databases and file sets on every host.
    Create {
        plan: PathBuf,
        /// Label kept in the backup id.
        #[arg(long, default_value = "manual")]
        label: String,
        /// Only these databases / file sets (repeatable); default all.
        #[arg(long)]
        only: Vec<String>,
        /// Verify right after (checksums and a test restore).
        #[arg(long)]
        verify: bool,
    },
    /// The backup catalog of every host.
    List { plan: PathBuf },
    /// Check a backup: checksums, and a test restore where the engine allows it.
    Verify {
        plan: PathBuf,
        id: String,
        /// Only on this host (default: every host that has the backup).
        #[arg(long)]
        host: Option<String>,
    },
    /// Restore a backup (a failed-state backup of what is there is taken first).
    /// Operators may restore a deployment's rollback point (--deployment);
    /// any other backup needs an admin certificate.
    Restore {
        plan: PathBuf,
        id: String,
        #[arg(long)]
        host: Option<String>,
        /// The deployment whose rollback point this backup is.
        #[arg(long)]
        deployment: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Applied and pending migrations of a release on every host.
    Status {
        plan: PathBuf,
        /// Release whose migrations to read (default: each host's current one).
        #[arg(long)]
        release: Option<String>,
    },
    /// Apply the release's pending migrations on every host.
    Up {
        plan: PathBuf,
        #[arg(long)]
        release: Option<String>,
    },
    /// Revert applied migrations down to a version on every host: says what
    /// the down migrations drop, takes a verified backup of the database,
    /// then reverts (with the release's down files, or the down texts the
    /// ledger stored for migrations ahead of the release).
    Down {
        plan: PathBuf,
        /// Version to go down to (0: revert all).
        #[arg(long)]
        to: u32,
        #[arg(long)]
        release: Option<String>,
        /// Only say what would be reverted and dropped; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The deployment this down undoes: recorded as a later action on
        /// it in the controller journal (`golivectl show ID`).
        #[arg(long)]
        deployment: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue12_percent_out_of_range_names_the_range() {
        for bad in ["-5", "101", "300", "ten", "2.5"] {
            let e = percent(bad).unwrap_err();
            assert!(e.contains("from 0 to 100"), "{bad}: {e}");
        }
        assert_eq!(percent("0"), Ok(0));
        assert_eq!(percent("100"), Ok(100));
        let e = Cli::try_parse_from([
            "golivectl",
            "flag",
            "set",
            "p.toml",
            "x",
            "on",
            "--percent",
            "-5",
        ])
        .err()
        .expect("refused")
        .to_string();
        assert!(e.contains("from 0 to 100"), "{e}");
    }
}

/// How `show` and `history` write the record (`--output json` gives JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordFormat {
    Markdown,
    Html,
}
