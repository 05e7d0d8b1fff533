//! Benchmark driver for the access-log parser and tailer (issue 5: 1M
//! lines/s on one core). Run by `scripts/bench-accesslog`, which builds it in
//! release and formats the figures; an example, so the agent binary does
//! not carry it.
//!
//! - `generate PATH LINES`: a realistic combined + `$request_time` log whose
//!   lines are stamped over the last 50 minutes.
//! - `parse PATH`: single-thread parse + window of the whole file from
//!   memory, best of 3 (`key=value` lines on stdout).
//! - `tail PATH`: the real tailer: the first ask on the existing file (it
//!   reads back the last 16 MiB), then a copy of the file appended to an
//!   empty log as fast as it can be written, until every line is counted.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use golive_agent::accesslog::parse::format_time_local;
use golive_agent::accesslog::tail::{BACKREAD, feed_lines};
use golive_agent::accesslog::{self, LogFormat, MAX_WINDOW_SECS, Window};

const FORMAT: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time"#;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["generate", path, lines] => match lines.parse() {
            Ok(n) => generate(Path::new(path), n),
            Err(_) => Err(format!("LINES must be a number, not {lines:?}")),
        },
        ["parse", path] => parse(Path::new(path)),
        ["tail", path] => tail(Path::new(path)),
        _ => Err("usage: bench_accesslog generate PATH LINES | parse PATH | tail PATH".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_accesslog: {e}");
            ExitCode::from(2)
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// xorshift64*: reproducible, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:143.0) Gecko/20100101 Firefox/143.0",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
    "Prometheus/2.53.0",
];
const PATHS: &[&str] = &[
    "/",
    "/es/tienda",
    "/es/producto/zapatilla-running-{}",
    "/node/{}",
    "/api/v1/cart/{}/items",
    "/search?q=camiseta+azul&page={}",
    "/sites/default/files/styles/large/public/{}.jpg?itok=Xy3kQ9zA",
    "/core/misc/drupal.js?v=10.3.{}",
    "/user/login",
    "/health",
];
const REFERERS: &[&str] = &[
    "-",
    "https://www.google.com/",
    "https://shop.example/es/tienda",
    "https://shop.example/es/producto/zapatilla-running-42",
];

fn generate(path: &Path, lines: u64) -> Result<(), String> {
    let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let span = 50 * 60;
    let start = now() - span;
    for i in 0..lines {
        let t = start + (i * span as u64 / lines) as i64;
        let status = match rng.below(1000) {
            0..=9 => rng.pick(&["500", "502", "503", "504"]),
            10..=39 => "404",
            40..=99 => "304",
            100..=129 => "301",
            _ => "200",
        };
        // Mostly 5-120 ms, a tail to several seconds.
        let ms = match rng.below(100) {
            0..=89 => 5 + rng.below(115),
            90..=98 => 120 + rng.below(900),
            _ => 1000 + rng.below(8000),
        };
        let path_tpl = rng.pick(PATHS);
        let request_path = path_tpl.replace("{}", &rng.below(5000).to_string());
        let method = if rng.below(10) == 0 { "POST" } else { "GET" };
        writeln!(
            out,
            "{}.{}.{}.{} - {} [{}] \"{method} {request_path} HTTP/1.1\" {status} {} \"{}\" \"{}\" {}.{:03}",
            10 + rng.below(200),
            rng.below(256),
            rng.below(256),
            1 + rng.below(254),
            if rng.below(50) == 0 { "alice" } else { "-" },
            format_time_local(t, 120),
            rng.below(200_000),
            rng.pick(REFERERS),
            rng.pick(AGENTS),
            ms / 1000,
            ms % 1000,
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    out.flush()
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn read_all(path: &Path) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(data)
}

fn parse(path: &Path) -> Result<(), String> {
    let data = read_all(path)?;
    let format = LogFormat::parse(FORMAT)?;
    let lines = count_lines(&data);
    let mut best = Duration::MAX;
    let mut best_cpu = f64::MAX;
    let mut last = None;
    for _ in 0..3 {
        let mut window = Window::new(MAX_WINDOW_SECS);
        let cpu0 = cpu_secs(Path::new("/proc/thread-self"));
        let t0 = Instant::now();
        let used = feed_lines(&format, &mut window, &data, now());
        let took = t0.elapsed();
        let cpu1 = cpu_secs(Path::new("/proc/thread-self"));
        assert_eq!(used, data.len());
        best = best.min(took);
        if let (Some(a), Some(b)) = (cpu0, cpu1) {
            best_cpu = best_cpu.min(b - a);
        }
        last = Some(window);
    }
    let window = last.expect("three runs");
    let s = window.stats(now(), MAX_WINDOW_SECS, 0);
    if s.requests != lines as u64 || s.unparsed_lines != 0 {
        return Err(format!(
            "counted {} requests and {} unparsed of {lines} lines",
            s.requests, s.unparsed_lines
        ));
    }
    let secs = best.as_secs_f64();
    println!("lines={lines}");
    println!("bytes={}", data.len());
    println!("parse_secs={secs:.4}");
    println!("parse_lines_per_sec={:.0}", lines as f64 / secs);
    println!(
        "parse_mib_per_sec={:.1}",
        data.len() as f64 / secs / 1048576.0
    );
    println!("ns_per_line={:.1}", secs * 1e9 / lines as f64);
    if best_cpu < f64::MAX {
        println!("parse_cpu_secs={best_cpu:.2}");
        println!(
            "parse_lines_per_cpu_sec={:.0}",
            lines as f64 / best_cpu.max(0.01)
        );
    }
    println!("window_heap_bytes={}", window.heap_bytes());
    println!("error_rate={:.4}", s.error_rate);
    println!("p95_ms={:.1}", s.p95_ms.unwrap_or(f64::NAN));
    Ok(())
}

fn count_lines(data: &[u8]) -> usize {
    data.iter().filter(|c| **c == b'\n').count()
}

fn tail(path: &Path) -> Result<(), String> {
    let format = LogFormat::parse(FORMAT)?;
    let window = Duration::from_secs(MAX_WINDOW_SECS);
    let data = read_all(path)?;
    let lines = count_lines(&data) as u64;

    // 1. First ask on the existing file: the back-read of its last 16 MiB.
    let t0 = Instant::now();
    let s = accesslog::stats(path, &format, window)?;
    let first_ask = t0.elapsed();
    let tail_len = (data.len() as u64).min(BACKREAD) as usize;
    let backread_lines = count_lines(&data[data.len() - tail_len..]) as u64;
    println!("backread_bytes={tail_len}");
    println!("backread_lines={}", s.requests);
    println!("first_ask_secs={:.4}", first_ask.as_secs_f64());
    if s.requests + 1 < backread_lines {
        return Err(format!(
            "the back-read counted {} of {backread_lines} lines",
            s.requests
        ));
    }

    // 2. Following: append a copy to an empty log as fast as possible.
    let live: PathBuf = path.with_extension("live.log");
    File::create(&live).map_err(|e| format!("cannot create {}: {e}", live.display()))?;
    let s = accesslog::stats(&live, &format, window)?;
    assert_eq!(s.requests, 0);
    let cpu0 = tailer_cpu_secs_of_newest();
    let t0 = Instant::now();
    let mut out = OpenOptions::new()
        .append(true)
        .open(&live)
        .map_err(|e| format!("cannot open {}: {e}", live.display()))?;
    for chunk in data.chunks(1 << 20) {
        out.write_all(chunk)
            .map_err(|e| format!("cannot write {}: {e}", live.display()))?;
    }
    let written = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    let s = loop {
        let s = accesslog::stats(&live, &format, window)?;
        if s.requests >= lines || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = t0.elapsed();
    let cpu = tailer_cpu_secs_of_newest().zip(cpu0).map(|(a, b)| a - b);
    if s.requests != lines {
        return Err(format!(
            "the tailer counted {} of {lines} lines in 300 s",
            s.requests
        ));
    }
    println!("follow_lines={lines}");
    println!("follow_write_secs={:.4}", written.as_secs_f64());
    println!("follow_secs={:.4}", took.as_secs_f64());
    println!(
        "follow_lines_per_sec={:.0}",
        lines as f64 / took.as_secs_f64()
    );
    if let Some(cpu) = cpu {
        println!("follow_cpu_secs={cpu:.2}");
        println!(
            "follow_lines_per_cpu_sec={:.0}",
            lines as f64 / cpu.max(0.01)
        );
    }
    Ok(())
}

/// CPU seconds used so far by the newest tailer thread (found by its name
/// in /proc; thread ids grow, so the newest has the largest).
fn tailer_cpu_secs_of_newest() -> Option<f64> {
    let mut newest = None;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "accesslog-tail" {
            let tid: u64 = task.file_name().to_str()?.parse().ok()?;
            if newest.as_ref().is_none_or(|(t, _)| tid > *t) {
                newest = Some((tid, task.path()));
            }
        }
    }
    cpu_secs(&newest?.1)
}

/// User + system CPU seconds of the task at `dir` (`/proc/.../task/TID` or
/// `/proc/thread-self`), from its stat line; USER_HZ is 100 on Linux.
fn cpu_secs(dir: &Path) -> Option<f64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
