//! The fan-out benchmark (issue 14, part 9), run by `scripts/bench-fanout`:
//! N real `golive-agent`s (release build) on loopback addresses
//! 127.0.150.1-250, 127.0.151.1-250, ..., real mTLS, and in the same run
//! the wall time of
//! - `golivectl status` beside `bare_fanout status` (one fresh mTLS
//!   connection and one request per agent, nothing else: the stack's limit),
//! - `golivectl probe` beside `bare_fanout probe APP`,
//! - `golivectl deploy` of a 1 MiB artifact (new each run: really uploaded)
//!   with a symlink switch and one http probe per host, in one wave of all
//!   hosts (`[[waves]] percent = 100`, `[deploy] parallel` = N, at most
//!   64: on a shared 2-core machine, 256 concurrent uploads and stages
//!   starve the agents' TLS handshakes), for N up to `DEPLOY_MAX` (default
//!   500),
//!
//! for each N given as arguments (default 10 100 500); RUNS (default 3) of
//! each, median. Prints a markdown table on stdout, with each row's
//! per-host marginal cost (the growth from the previous N, per added
//! host). Every agent's pid is written to `$PIDFILE` when set, so the
//! script can stop them even if this process dies; they are stopped on
//! drop too.
//!
//! `HOLD=FILE` (profiling by hand): start the agents, install once, write
//! the golivectl command and a few fresh deploy plans per N to FILE as
//! shell variables, and keep the agents up until FILE is removed (at most
//! an hour); nothing is timed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use golive_tests::*;

/// 1 MiB of bytes that do not compress (xorshift), different per `seed`.
fn noise(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..1024 * 1024 / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Wall time of a command that must succeed, in ms.
fn timed(mut c: Command, what: &str) -> f64 {
    let t = Instant::now();
    let r = run_bounded(
        {
            c.stdout(std::process::Stdio::piped());
            c
        },
        Duration::from_secs(600),
    );
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(r.code, 0, "{what}: {}", r.text());
    ms
}

/// python's threading http.server with a listen backlog of 1024: the
/// default (5) drops the SYNs of a burst of probes, which then wait for the
/// client's 1 s retransmission, and the bench would measure that.
struct Site {
    port: u16,
    child: KillOnDrop,
}

impl Site {
    fn serve(dir: &Path, ip: &str) -> Site {
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let script = "import functools, http.server as h, sys\n\
            class S(h.ThreadingHTTPServer):\n    request_queue_size = 1024\n\
            class Q(h.SimpleHTTPRequestHandler):\n    def log_message(self, *a): pass\n\
            S((sys.argv[1], int(sys.argv[2])), functools.partial(Q, directory=sys.argv[3])).serve_forever()\n";
        let child = Command::new("python3")
            .args(["-c", script, ip, &port.to_string()])
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn python3");
        let child = KillOnDrop(child);
        let started = Instant::now();
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the probe site did not listen on {ip}:{port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Site { port, child }
    }
}

/// One figure: N, golive's median ms, the bare client's (when there is one).
type Cell = (usize, f64, Option<f64>);

fn addr_of(i: usize) -> String {
    format!("127.0.{}.{}", 150 + (i - 1) / 250, (i - 1) % 250 + 1)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn main() {
    let mut ns: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("host counts, e.g. 10 100 500"))
        .collect();
    if ns.is_empty() {
        ns = vec![10, 100, 500];
    }
    ns.sort();
    ns.dedup();
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let deploy_max: usize = std::env::var("DEPLOY_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let bare = std::env::current_exe()
        .expect("own path")
        .with_file_name("bare_fanout");
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());
    let mut pidfile = std::env::var_os("PIDFILE").map(|p| {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .expect("pid file")
    });

    // One web server answers every host's probe (the probe's cost is the
    // round trip, not the app).
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).expect("site dir");
    std::fs::write(site.join("health"), "ok\n").expect("health");
    let http = Site::serve(&site, "127.0.149.254");
    if let Some(f) = pidfile.as_mut() {
        let _ = writeln!(f, "{}", http.child.0.id());
    }
    let probe = format!("http://127.0.149.254:{}/health", http.port);

    let max = *ns.last().expect("a host count");
    let started = Instant::now();
    let mut agents: Vec<AgentProc> = Vec::new();
    for i in 1..=max {
        let name = format!("web{i:03}");
        let root = dir.path().join(&name).join("srv/shop");
        let mut spec = AgentSpec::new(&name, &addr_of(i));
        spec.apps_toml = app_toml("shop", &root, &probe);
        let a = AgentProc::start(dir.path(), &pki, &spec);
        if let (Some(f), Some(pid)) = (pidfile.as_mut(), a.pid()) {
            let _ = writeln!(f, "{pid}");
        }
        agents.push(a);
    }
    eprintln!(
        "{max} agents started in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut seed = 0u64;
    let mut plan_for = |hosts: usize, release: bool, parallel: usize| -> PathBuf {
        seed += 1;
        let id = format!("r{seed}");
        let refs: Vec<&AgentProc> = agents[..hosts].iter().collect();
        let plan = dir.path().join(format!("{id}.toml"));
        let art = dir.path().join(format!("dist/{id}.tar.gz"));
        if release {
            artifact(&art, &[("health", b"ok\n"), ("blob", &noise(seed))]);
        }
        write_plan(
            &plan,
            &pki,
            &op,
            "shop",
            release.then_some((id.as_str(), art.as_path())),
            &refs,
        );
        if release {
            let mut text = std::fs::read_to_string(&plan).expect("plan");
            text.push_str(&format!(
                "[deploy]\nparallel = {parallel}\n\n[[waves]]\npercent = 100\n"
            ));
            std::fs::write(&plan, text).expect("plan");
        }
        plan
    };

    // A first install everywhere (nothing live before: no sampling, probes
    // n/a), so the probes below have a live release to look at.
    let first = plan_for(max, true, 32);
    timed(ctl.cmd(&["deploy", s(&first)]), "first install");

    // HOLD=FILE (for profiling by hand): write the commands to FILE and
    // keep the agents up until FILE is removed (at most an hour).
    if let Some(hold) = std::env::var_os("HOLD") {
        let hold = PathBuf::from(hold);
        let mut text = format!(
            "# agents: {max}; remove this file to stop them\nCTL='{} --state {}'\nDIR='{}'\n",
            s(&bin("golivectl")),
            s(&ctl.state),
            s(dir.path())
        );
        for n in &ns {
            for k in 1..=6 {
                let plan = plan_for(*n, true, (*n).min(64));
                text.push_str(&format!("PLAN{n}_{k}='{}'\n", s(&plan)));
            }
        }
        std::fs::write(&hold, text).expect("hold file");
        eprintln!("holding until {} is removed", hold.display());
        let until = Instant::now() + Duration::from_secs(3600);
        while hold.exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
        }
        return;
    }

    let bare_cmd = |what: &[&str], hosts: usize| {
        let mut c = Command::new(&bare);
        c.arg(pki.ca()).arg(&op.0).arg(&op.1).args(what);
        for a in &agents[..hosts] {
            c.arg(a.addr.to_string());
        }
        c
    };
    let mut rows: Vec<(&str, Vec<Cell>)> = vec![
        ("`golivectl status`", Vec::new()),
        ("`golivectl probe`", Vec::new()),
        ("1 MiB deploy, one wave", Vec::new()),
    ];
    for &n in &ns {
        let plan = plan_for(n, false, 0);
        let mut m = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
        for _ in 0..runs {
            m[0].0.push(timed(ctl.cmd(&["status", s(&plan)]), "status"));
            m[0].1.push(timed(bare_cmd(&["status"], n), "bare status"));
            m[1].0.push(timed(ctl.cmd(&["probe", s(&plan)]), "probe"));
            m[1].1
                .push(timed(bare_cmd(&["probe", "shop"], n), "bare probe"));
        }
        for (k, (g, b)) in m.into_iter().enumerate() {
            rows[k].1.push((n, median(g), Some(median(b))));
        }
        if n <= deploy_max {
            let mut d = Vec::new();
            for _ in 0..runs {
                let plan = plan_for(n, true, n.min(64));
                d.push(timed(ctl.cmd(&["deploy", s(&plan)]), "deploy"));
            }
            rows[2].1.push((n, median(d), None));
        }
        eprintln!("N = {n} done");
    }

    println!(
        "| what | N | golive (median) | bare limit (median) | golive / bare | golive per added host |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, cells) in &rows {
        let mut prev: Option<(usize, f64)> = None;
        for &(n, g, b) in cells {
            let marginal = match prev {
                None => g / n as f64,
                Some((pn, pg)) => (g - pg) / (n - pn) as f64,
            };
            prev = Some((n, g));
            println!(
                "| {label} | {n} | {:.0} ms | {} | {} | {:.2} ms |",
                g,
                b.map(|b| format!("{b:.0} ms")).unwrap_or("—".into()),
                b.map(|b| format!("{:.1}×", g / b)).unwrap_or("—".into()),
                marginal
            );
        }
    }
    println!();
    println!(
        "runs={runs} agents={max} started_s={:.1}",
        started.elapsed().as_secs_f64()
    );
    drop(agents);
    drop(http);
}
