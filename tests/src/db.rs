//! Real database servers for tests, each in a private temp directory on a
//! free loopback port, stopped and removed on drop (also when a test fails).
//!
//! - [`TestPostgres`]: PostgreSQL from `pg_config --bindir`, run as the
//!   `postgres` user when the tests run as root (the server refuses root).
//!   Local socket connections are `trust` (for the fixture's own SQL); TCP
//!   on 127.0.0.1 requires a password (what the agent uses).
//! - [`TestMariadb`]: `mariadbd` from the `mariadb-server` package.
//!
//! Both create a role `golive` with a random password (written to a 0600
//! file under the test's directory) owning a database `shop`, and hand out
//! the matching agent config ([`PostgresDb`], [`MariadbDb`]). Every wait is
//! bounded in time.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use golive_shared::config::{MariadbDb, PostgresDb};

use crate::{free_port, run_bounded};

/// A password unique to this process and moment, with characters that need
/// care in option files and SQL literals (`"`, `#`, `\`, `'`, space).
fn random_password(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{nanos:x}-{}", std::process::id())
}

/// Writes `content` to `path` with mode 0600.
pub fn write_private(path: &Path, content: &str) {
    std::fs::write(path, content).expect("write private file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// A private temp directory that other users (the `postgres` server user)
/// may traverse.
fn server_root(prefix: &str) -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("server temp dir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod server dir");
    root
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("server log")
}

/// Stops a server: `signal`, then SIGKILL after 10 s; always reaps.
fn stop_child(child: &mut Child, signal: nix::sys::signal::Signal) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, signal);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The PostgreSQL server programs' directory (`pg_config --bindir`, else
/// the newest `/usr/lib/postgresql/*/bin`).
pub fn pg_bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return dir;
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.retain(|d| d.join("initdb").is_file());
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("PostgreSQL server binaries (initdb) not found: install postgresql")
}

/// A PostgreSQL server on 127.0.0.1, with role `golive` (password, CREATEDB)
/// owning database `shop`.
pub struct TestPostgres {
    pub bindir: PathBuf,
    pub password: String,
    pub password_file: PathBuf,
    port: u16,
    sockdir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Removed (after the server stopped) when dropped.
    root: tempfile::TempDir,
}

impl TestPostgres {
    /// Initialises and starts a server; the password file goes in `dir`.
    pub fn start(dir: &Path) -> TestPostgres {
        let bindir = pg_bindir();
        let root = server_root("golive-pg-");
        let data = root.path().join("data");
        let sockdir = root.path().join("sock");
        let log = root.path().join("postgres.log");
        std::fs::create_dir(&data).expect("pg data dir");
        std::fs::create_dir(&sockdir).expect("pg socket dir");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        log_file(&log);
        let as_root = nix::unistd::geteuid().is_root();
        let owner = if as_root {
            let user = nix::unistd::User::from_name("postgres")
                .expect("look up user postgres")
                .expect("the `postgres` user exists (installed with the postgresql package)");
            for p in [&data, &sockdir, &log] {
                nix::unistd::chown(p, Some(user.uid), Some(user.gid)).expect("chown to postgres");
            }
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let (server_bin, root_path) = (bindir.clone(), root.path().to_path_buf());
        let server_cmd = |prog: &str| {
            let mut cmd = Command::new(server_bin.join(prog));
            if let Some((uid, gid)) = owner {
                // std drops supplementary groups when root sets a uid.
                cmd.uid(uid).gid(gid);
            }
            cmd.current_dir(&root_path).env("LC_ALL", "C");
            cmd
        };

        let mut initdb = server_cmd("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]);
        let run = run_bounded(initdb, Duration::from_secs(120));
        assert_eq!(run.code, 0, "initdb failed: {}", run.text());

        let password = random_password("pg pw\"#'\\");
        let password_file = dir.join("pg-golive.password");
        write_private(&password_file, &format!("{password}\n"));

        let mut pg = TestPostgres {
            bindir,
            password,
            password_file,
            port: 0,
            sockdir,
            log,
            child: None,
            root,
        };
        // The free port may be taken between the check and the bind: retry.
        for attempt in 0.. {
            pg.port = free_port("127.0.0.1");
            let log = log_file(&pg.log);
            let child = server_cmd("postgres")
                .arg("-D")
                .arg(&data)
                .args(["-p", &pg.port.to_string(), "-k"])
                .arg(&pg.sockdir)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "shared_buffers=16MB",
                    "-c",
                    "max_connections=30",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .expect("spawn postgres");
            pg.child = Some(child);
            if pg.wait_ready() {
                break;
            }
            let text = std::fs::read_to_string(&pg.log).unwrap_or_default();
            assert!(
                attempt < 3 && text.contains("could not bind"),
                "postgres did not start:\n{text}"
            );
        }
        let quoted = pg.password.replace('\'', "''");
        pg.psql_admin(
            "postgres",
            &format!("create role golive login createdb password '{quoted}'"),
        );
        pg.psql_admin("postgres", "create database shop owner golive");
        pg
    }

    /// Waits (≤ 30 s) until the server accepts connections; false if it exited.
    fn wait_ready(&mut self) -> bool {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("started");
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return false;
            }
            let ok = Command::new(self.bindir.join("pg_isready"))
                .arg("-h")
                .arg(&self.sockdir)
                .args(["-p", &self.port.to_string(), "-U", "postgres", "-t", "2"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return true;
            }
            if started.elapsed() > Duration::from_secs(30) {
                panic!(
                    "postgres not ready within 30 s:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's private directory (data, socket, log).
    pub fn server_dir(&self) -> &Path {
        self.root.path()
    }

    /// Runs SQL through the local socket (trust) as `user` in `dbname`;
    /// returns unaligned, tuples-only output. Panics on an SQL error.
    pub fn psql_as(&self, user: &str, dbname: &str, sql: &str) -> String {
        let cmd = self.psql_command(user, dbname, sql);
        let run = run_bounded(cmd, Duration::from_secs(60));
        assert_eq!(run.code, 0, "psql failed on {sql:?}: {}", run.text());
        run.stdout
    }

    /// The `psql` command [`TestPostgres::psql_as`] runs, for a test that
    /// needs a session of its own (e.g. one holding a lock); the caller
    /// spawns it and must kill it.
    pub fn psql_command(&self, user: &str, dbname: &str, sql: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join("psql"));
        cmd.arg("-h")
            .arg(&self.sockdir)
            .args(["-p", &self.port.to_string(), "-U", user, "-d", dbname])
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env_remove("PGPASSWORD");
        cmd
    }

    /// SQL as `golive` in `shop` (the app's own connection).
    pub fn psql(&self, sql: &str) -> String {
        self.psql_as("golive", "shop", sql)
    }

    /// SQL as the superuser `postgres` in `dbname`.
    pub fn psql_admin(&self, dbname: &str, sql: &str) -> String {
        self.psql_as("postgres", dbname, sql)
    }

    /// The agent's config for `shop` as `golive` over TCP with the password file.
    pub fn db_config(&self, name: &str) -> PostgresDb {
        PostgresDb {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: self.port,
            user: "golive".into(),
            dbname: "shop".into(),
            password_file: Some(self.password_file.clone()),
            bin_dir: Some(self.bindir.clone()),
            timeout_secs: 600,
        }
    }

    /// The same as an agent config `[[apps.APP.databases]]` table.
    pub fn database_toml(&self, app: &str, name: &str) -> String {
        format!(
            "[[apps.{app}.databases]]\nengine = \"postgres\"\nname = {name:?}\nhost = \"127.0.0.1\"\n\
             port = {}\nuser = \"golive\"\ndbname = \"shop\"\npassword_file = {:?}\nbin_dir = {:?}\n\n",
            self.port, self.password_file, self.bindir
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the postmaster stops its backends.
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, nix::sys::signal::Signal::SIGQUIT);
        }
    }
}

/// A MariaDB server on 127.0.0.1 and a private socket, with users
/// `golive`@`127.0.0.1` and `golive`@`localhost` (same password, all
/// privileges on `shop`). The fixture itself connects as root over the socket.
pub struct TestMariadb {
    pub password: String,
    pub password_file: PathBuf,
    port: u16,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    root: tempfile::TempDir,
}

/// `mariadbd`: PATH, else where Debian puts it.
fn mariadbd() -> PathBuf {
    for name in ["mariadbd", "mysqld"] {
        if let Some(p) = golive_shared::config::find_tool(&[name], None) {
            return p;
        }
        for dir in ["/usr/sbin", "/usr/libexec"] {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("mariadbd not found: install mariadb-server (scripts/test does)");
}

impl TestMariadb {
    /// Initialises and starts a server; the password file goes in `dir`.
    pub fn start(dir: &Path) -> TestMariadb {
        let root = server_root("golive-my-test-");
        let data = root.path().join("data");
        let socket = root.path().join("mysqld.sock");
        let log = root.path().join("mariadbd.log");
        let as_root = nix::unistd::geteuid().is_root();
        let user = if as_root {
            "root".to_string()
        } else {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .expect("current user name")
        };
        let install = ["mariadb-install-db", "mysql_install_db"]
            .iter()
            .find_map(|n| golive_shared::config::find_tool(&[n], None))
            .expect("mariadb-install-db not found: install mariadb-server (scripts/test does)");
        // A private tmpdir: servers sharing /tmp trip over each other's
        // temporary tables.
        let tmpdir = root.path().join("tmp");
        std::fs::create_dir(&tmpdir).expect("mariadb tmpdir");
        let mut cmd = Command::new(install);
        cmd.env("TMPDIR", &tmpdir)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .current_dir(root.path());
        let run = run_bounded(cmd, Duration::from_secs(180));
        assert_eq!(run.code, 0, "mariadb-install-db failed: {}", run.text());

        let password = random_password("my pw\"#'\\");
        let password_file = dir.join("mariadb-golive.password");
        write_private(&password_file, &format!("{password}\n"));

        let mut db = TestMariadb {
            password,
            password_file,
            port: 0,
            socket,
            log,
            child: None,
            root,
        };
        for attempt in 0.. {
            db.port = free_port("127.0.0.1");
            let _ = std::fs::remove_file(&db.socket);
            let log = log_file(&db.log);
            let child = Command::new(mariadbd())
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", db.socket.display()))
                .arg(format!(
                    "--pid-file={}",
                    db.root.path().join("mariadbd.pid").display()
                ))
                .arg(format!("--port={}", db.port))
                .arg(format!("--tmpdir={}", tmpdir.display()))
                .arg(format!("--user={user}"))
                .args([
                    "--bind-address=127.0.0.1",
                    "--skip-name-resolve",
                    "--innodb-use-native-aio=0",
                    "--innodb-buffer-pool-size=32M",
                    "--innodb-flush-log-at-trx-commit=2",
                    "--skip-log-bin",
                ])
                .current_dir(db.root.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .expect("spawn mariadbd");
            db.child = Some(child);
            if db.wait_ready() {
                break;
            }
            let text = db.log_text();
            assert!(
                attempt < 3 && text.contains("Address already in use"),
                "mariadbd did not start:\n{text}"
            );
        }
        let pw = db.password.replace('\\', "\\\\").replace('\'', "\\'");
        db.sql_in(
            "",
            &format!(
                "CREATE DATABASE shop CHARACTER SET utf8mb4; \
                 CREATE USER 'golive'@'127.0.0.1' IDENTIFIED BY '{pw}'; \
                 CREATE USER 'golive'@'localhost' IDENTIFIED BY '{pw}'; \
                 GRANT ALL ON shop.* TO 'golive'@'127.0.0.1'; \
                 GRANT ALL ON shop.* TO 'golive'@'localhost';"
            ),
        );
        db
    }

    /// Waits (≤ 60 s) until root can query over the socket; false if it exited.
    fn wait_ready(&mut self) -> bool {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("started");
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return false;
            }
            if self.socket.exists() {
                let ok = self
                    .client()
                    .args(["--connect-timeout=2", "-e", "SELECT 1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    return true;
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!("mariadbd not ready within 60 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn client(&self) -> Command {
        let tool = golive_shared::config::find_tool(&["mariadb", "mysql"], None)
            .expect("mariadb client not found: install mariadb-client");
        let mut cmd = Command::new(tool);
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--batch", "--skip-column-names"])
            .arg("--default-character-set=utf8mb4")
            .env_remove("MYSQL_PWD");
        cmd
    }

    /// Runs SQL as root in `database` (empty: none); returns batch output
    /// without column names. Panics on an SQL error.
    pub fn sql_in(&self, database: &str, sql: &str) -> String {
        let mut cmd = self.client();
        if !database.is_empty() {
            cmd.arg(format!("--database={database}"));
        }
        cmd.args(["-e", sql]);
        let run = run_bounded(cmd, Duration::from_secs(60));
        assert_eq!(run.code, 0, "mariadb failed on {sql:?}: {}", run.text());
        run.stdout
    }

    /// SQL as root in `shop`.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("shop", sql)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's config for `shop` as `golive` with the password file:
    /// over TCP, or over the socket when `via_socket`.
    pub fn db_config(&self, name: &str, via_socket: bool) -> MariadbDb {
        MariadbDb {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: self.port,
            socket: via_socket.then(|| self.socket.clone()),
            user: "golive".into(),
            database: "shop".into(),
            password_file: Some(self.password_file.clone()),
            bin_dir: None,
            timeout_secs: 600,
        }
    }

    /// The TCP config as an agent config `[[apps.APP.databases]]` table.
    pub fn database_toml(&self, app: &str, name: &str) -> String {
        format!(
            "[[apps.{app}.databases]]\nengine = \"mariadb\"\nname = {name:?}\nhost = \"127.0.0.1\"\n\
             port = {}\nuser = \"golive\"\ndatabase = \"shop\"\npassword_file = {:?}\n\n",
            self.port, self.password_file
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestMariadb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl TestMariadb {
    /// Runs SQL in `shop` as `golive` over TCP: the account the agent uses,
    /// so views and routines created here get the definer a restore by the
    /// agent can recreate. The password goes through `MYSQL_PWD`, not argv.
    /// Panics on an SQL error.
    pub fn sql_as_app(&self, sql: &str) -> String {
        let tool = golive_shared::config::find_tool(&["mariadb", "mysql"], None)
            .expect("mariadb client not found: install mariadb-client");
        let mut cmd = Command::new(tool);
        cmd.arg("--no-defaults")
            .args(["--protocol=TCP", "--host=127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .args([
                "--user=golive",
                "--database=shop",
                "--batch",
                "--skip-column-names",
            ])
            .arg("--default-character-set=utf8mb4")
            .args(["-e", sql])
            .env("MYSQL_PWD", &self.password);
        let run = run_bounded(cmd, Duration::from_secs(60));
        assert_eq!(
            run.code,
            0,
            "mariadb (golive) failed on {sql:?}: {}",
            run.text()
        );
        run.stdout
    }
}
