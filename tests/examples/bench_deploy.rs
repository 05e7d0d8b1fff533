//! The deploy fan-out benchmark (issue 14), run by `scripts/bench-deploy`:
//! N real `golive-agent`s (release build) on distinct loopback addresses
//! (127.0.140.x), real mTLS, and the wall time of `golivectl deploy` of a
//! 1 MiB artifact (incompressible, new each run so it is really uploaded)
//! with a symlink switch and one http probe per host, to 10 and to 50
//! hosts, with `[deploy] parallel = 1` (one host after another) and the
//! default (10). RUNS (default 3) deployments each; the median is taken.
//!
//! Prints `key=value` lines. Every process started is stopped on drop.

use std::path::PathBuf;
use std::time::Instant;

use golive_tests::*;

const HOSTS: [usize; 2] = [10, 50];
const PARALLEL: [u32; 2] = [1, golivectl::plan::DEFAULT_PARALLEL];

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

fn median(v: &mut [i64]) -> i64 {
    v.sort();
    v[v.len() / 2]
}

/// From the controller journal: (ms from the deployment's start to its
/// first activation: the phases that overlap across hosts; ms from there to
/// its end: activation, probe and gate, host by host).
fn phases(ctl: &Ctl, run: &Run) -> (i64, i64) {
    let id = run
        .json_lines()
        .into_iter()
        .find(|v| v["event"] == "result")
        .and_then(|v| v["deployment"].as_str().map(str::to_string))
        .expect("deployment id");
    let db = rusqlite::Connection::open(ctl.state.join("golivectl.db")).expect("journal");
    db.query_row(
        "SELECT d.started_at, d.finished_at, MIN(s.started_at) FROM deployments d \
         JOIN steps s ON s.deployment = d.id AND s.step = 'activate' WHERE d.id = ?1",
        [&id],
        |r| {
            let (start, end, first): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            Ok((first - start, end - first))
        },
    )
    .expect("phases")
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let op = pki.operator("alice", "operator");
    let ctl = Ctl::new(dir.path());

    // One web server answers every host's probe: the probe is the
    // deployment's last step, its cost is the round trip, not the app.
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).expect("site dir");
    std::fs::write(site.join("health"), "ok\n").expect("health");
    let http = HttpApp::serve(&site, "127.0.140.254");
    let probe = format!("http://127.0.140.254:{}/health", http.port);

    let max = *HOSTS.iter().max().expect("hosts");
    let started = Instant::now();
    let agents: Vec<AgentProc> = (1..=max)
        .map(|i| {
            let name = format!("web{i:02}");
            let root = dir.path().join(&name).join("srv/shop");
            let mut spec = AgentSpec::new(&name, &format!("127.0.140.{i}"));
            spec.apps_toml = app_toml("shop", &root, &probe);
            AgentProc::start(dir.path(), &pki, &spec)
        })
        .collect();
    println!("agents={max}");
    println!("agents_started_ms={}", started.elapsed().as_millis());

    let mut seed = 0u64;
    for hosts in HOSTS {
        let refs: Vec<&AgentProc> = agents[..hosts].iter().collect();
        for parallel in PARALLEL {
            let (mut times, mut befores, mut afters) = (Vec::new(), Vec::new(), Vec::new());
            for run in 1..=runs {
                seed += 1;
                let id = format!("b{seed}");
                let art = dir.path().join(format!("dist/{id}.tar.gz"));
                let body = noise(seed);
                artifact(&art, &[("index.html", b"bench\n"), ("blob", &body)]);
                let plan: PathBuf = dir.path().join(format!("{id}.toml"));
                write_plan(&plan, &pki, &op, "shop", Some((&id, &art)), &refs);
                let mut text = std::fs::read_to_string(&plan).expect("plan");
                text.push_str(&format!("[deploy]\nparallel = {parallel}\n"));
                std::fs::write(&plan, text).expect("plan");
                let t = Instant::now();
                let r = ctl.run(&["--output", "json", "deploy", plan.to_str().expect("utf-8")]);
                let took = t.elapsed();
                assert_eq!(r.code, 0, "deploy {id} to {hosts}: {}", r.text());
                println!("run_{hosts}_{parallel}_{run}_ms={}", took.as_millis());
                times.push(took.as_millis() as i64);
                let (before, after) = phases(&ctl, &r);
                println!("before_{hosts}_{parallel}_{run}_ms={before}");
                befores.push(before);
                afters.push(after);
            }
            println!("median_{hosts}_{parallel}_ms={}", median(&mut times));
            println!(
                "median_before_{hosts}_{parallel}_ms={}",
                median(&mut befores)
            );
            println!("median_after_{hosts}_{parallel}_ms={}", median(&mut afters));
        }
    }
    println!("runs={runs}");
    println!(
        "artifact_bytes={}",
        std::fs::metadata(dir.path().join("dist/b1.tar.gz"))
            .map(|m| m.len())
            .unwrap_or(0)
    );
    drop(agents);
    drop(http);
}
