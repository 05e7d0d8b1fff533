//! System probes, read straight from the kernel: `disk` (statvfs), `memory`
//! (`/proc/meminfo`), `load` (`/proc/loadavg`), `cpu` (two reads of
//! `/proc/stat`) and `process` (`/proc/PID/comm` and `cmdline`).
//!
//! No system-information crate: these are a handful of small text files,
//! and the agent's idle footprint is a target (README "Decisions").

use std::path::Path;
use std::time::Duration;

use golive_shared::config::{CpuProbe, DiskProbe, LoadProbe, MemoryProbe, ProcessProbe};

use super::{Check, blocking, bytes};

/// "≥ 10 % free, ≥ 5.0 GiB free".
pub(super) fn minimums(percent: Option<f64>, min_bytes: Option<u64>, what: &str) -> String {
    let mut parts = Vec::new();
    if let Some(p) = percent {
        parts.push(format!("≥ {p} % {what}"));
    }
    if let Some(b) = min_bytes {
        parts.push(format!("≥ {} {what}", bytes(b)));
    }
    parts.join(", ")
}

/// Whether `available` of `total` meets both minimums; and its percentage.
fn enough(available: u64, total: u64, percent: Option<f64>, min_bytes: Option<u64>) -> (bool, f64) {
    let pct = if total == 0 {
        0.0
    } else {
        available as f64 * 100.0 / total as f64
    };
    let ok = percent.is_none_or(|m| pct >= m) && min_bytes.is_none_or(|m| available >= m);
    (ok, pct)
}

pub(super) async fn disk(p: &DiskProbe) -> Check {
    let p = p.clone();
    blocking(move || {
        let st = match nix::sys::statvfs::statvfs(&p.path) {
            Ok(s) => s,
            Err(e) => {
                return Check::error(format!(
                    "cannot read the filesystem of {}: {e}",
                    p.path.display()
                ));
            }
        };
        let unit = st.fragment_size() as u64;
        let total = st.blocks() as u64 * unit;
        // What an unprivileged process can still write (root's reserve excluded).
        let free = st.blocks_available() as u64 * unit;
        let (ok, pct) = enough(free, total, p.min_free_percent, p.min_free_bytes);
        let value = format!("{pct:.1} % free ({} of {})", bytes(free), bytes(total));
        Check::judge(
            ok,
            value.clone(),
            format!("the filesystem of {} has {value}", p.path.display()),
        )
    })
    .await
}

pub(super) fn memory(p: &MemoryProbe) -> Check {
    let text = match std::fs::read_to_string("/proc/meminfo") {
        Ok(t) => t,
        Err(e) => return Check::error(format!("cannot read /proc/meminfo: {e}")),
    };
    let Some((total, available)) = parse_meminfo(&text) else {
        return Check::error("/proc/meminfo has no MemTotal and MemAvailable lines");
    };
    let (ok, pct) = enough(
        available,
        total,
        p.min_available_percent,
        p.min_available_bytes,
    );
    let value = format!(
        "{pct:.1} % available ({} of {})",
        bytes(available),
        bytes(total)
    );
    Check::judge(ok, value.clone(), format!("memory: {value}"))
}

/// (MemTotal, MemAvailable) in bytes.
fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

pub(super) fn load_threshold(p: &LoadProbe) -> String {
    let per = if p.per_cpu { " per CPU" } else { "" };
    [
        ("1m", p.max_load1),
        ("5m", p.max_load5),
        ("15m", p.max_load15),
    ]
    .iter()
    .filter_map(|(w, m)| m.map(|m| format!("load {w} ≤ {m}{per}")))
    .collect::<Vec<_>>()
    .join(", ")
}

pub(super) fn load(p: &LoadProbe) -> Check {
    let text = match std::fs::read_to_string("/proc/loadavg") {
        Ok(t) => t,
        Err(e) => return Check::error(format!("cannot read /proc/loadavg: {e}")),
    };
    let Some(loads) = parse_loadavg(&text) else {
        return Check::error(format!("cannot parse /proc/loadavg: {:?}", text.trim()));
    };
    let cpus = if p.per_cpu {
        match std::fs::read_to_string("/proc/stat")
            .ok()
            .map(|s| count_cpus(&s))
        {
            Some(n) if n > 0 => n,
            _ => return Check::error("cannot count the CPUs in /proc/stat"),
        }
    } else {
        1
    };
    let mut value = format!("load {:.2} {:.2} {:.2}", loads[0], loads[1], loads[2]);
    if p.per_cpu {
        value.push_str(&format!(" on {cpus} CPUs"));
    }
    let over: Vec<String> = [
        ("1m", p.max_load1),
        ("5m", p.max_load5),
        ("15m", p.max_load15),
    ]
    .iter()
    .zip(loads)
    .filter_map(|((w, max), load)| {
        let max = (*max)?;
        let load = load / cpus as f64;
        (load > max).then(|| format!("{w} {load:.2} > {max}"))
    })
    .collect();
    if over.is_empty() {
        Check::pass(value.clone(), value)
    } else {
        Check::fail(value.clone(), format!("{value}: {}", over.join(", ")))
    }
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|w| w.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// `cpuN` lines of /proc/stat.
fn count_cpus(stat: &str) -> usize {
    stat.lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count()
}

/// (busy, total) jiffies of all CPUs from the `cpu` line of /proc/stat.
/// Busy is everything but idle and iowait; guest time is already in user.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some((total - v[3] - v[4], total))
}

fn read_cpu_times() -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string("/proc/stat")
        .map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    cpu_times(&text).ok_or_else(|| "/proc/stat has no usable `cpu` line".to_string())
}

pub(super) async fn cpu(p: &CpuProbe) -> Check {
    let sample = Duration::from_millis(p.sample_ms);
    let before = match read_cpu_times() {
        Ok(t) => t,
        Err(e) => return Check::error(e),
    };
    tokio::time::sleep(sample).await;
    let after = match read_cpu_times() {
        Ok(t) => t,
        Err(e) => return Check::error(e),
    };
    let busy = after.0.saturating_sub(before.0);
    let total = after.1.saturating_sub(before.1);
    let pct = if total == 0 {
        0.0
    } else {
        busy as f64 * 100.0 / total as f64
    };
    let value = format!("{pct:.1} % busy over {} ms", p.sample_ms);
    Check::judge(
        pct <= p.max_percent,
        value.clone(),
        format!("cpu (all cores): {value}"),
    )
}

pub(super) async fn process(p: &ProcessProbe) -> Check {
    let p = p.clone();
    blocking(move || {
        let pids = match find_processes(Path::new("/proc"), &p.process) {
            Ok(found) => found,
            Err(e) => return Check::error(format!("cannot list processes in /proc: {e}")),
        };
        let n = pids.len();
        let mut shown: Vec<String> = pids.iter().take(5).map(u32::to_string).collect();
        if n > 5 {
            shown.push("…".into());
        }
        let value = format!("{n} running");
        let message = if n == 0 {
            format!("no process named {:?} is running", p.process)
        } else {
            format!(
                "{n} process(es) named {:?} running (pid {})",
                p.process,
                shown.join(", ")
            )
        };
        Check::judge(n >= p.min_count as usize, value, message)
    })
    .await
}

/// Pids of live (not zombie) processes named `name`: the kernel's name
/// (`comm`, cut to 15 bytes) or the base name of `argv[0]`.
fn find_processes(proc_dir: &Path, name: &str) -> std::io::Result<Vec<u32>> {
    let short = &name.as_bytes()[..name.len().min(15)];
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(proc_dir)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        // Processes come and go while we look: a vanished one just does not match.
        let comm = std::fs::read(dir.join("comm")).unwrap_or_default();
        let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
        let by_comm = comm == name.as_bytes() || (name.len() > 15 && comm == short);
        let matches = by_comm || {
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            let base = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
            !base.is_empty() && base == name.as_bytes()
        };
        if matches && !is_zombie(&dir) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// State `Z` in /proc/PID/stat (after the parenthesised name, which may
/// itself contain spaces and parentheses).
fn is_zombie(dir: &Path) -> bool {
    let stat = std::fs::read(dir.join("stat")).unwrap_or_default();
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return true;
    };
    stat.get(close + 2) == Some(&b'Z')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let meminfo =
            "MemTotal:        8000000 kB\nMemFree:  100 kB\nMemAvailable:    2000000 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some((8_000_000 * 1024, 2_000_000 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(
            parse_loadavg("0.52 0.61 0.70 1/234 5678\n"),
            Some([0.52, 0.61, 0.70])
        );
        assert_eq!(parse_loadavg("x"), None);
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n\
                    cpu1 50 0 25 400 25 0 0 0 0 0\nintr 1 2\n";
        assert_eq!(count_cpus(stat), 2);
        assert_eq!(cpu_times(stat), Some((150, 1000)));
    }

    #[test]
    fn thresholds_on_both_units() {
        assert_eq!(enough(50, 100, Some(40.0), None), (true, 50.0));
        assert!(!enough(50, 100, Some(60.0), None).0);
        assert!(!enough(50, 100, Some(40.0), Some(51)).0);
        assert!(enough(50, 100, None, Some(50)).0);
        assert_eq!(
            minimums(Some(10.0), Some(5 * 1024 * 1024 * 1024), "free"),
            "≥ 10 % free, ≥ 5.0 GiB free"
        );
    }

    #[test]
    fn finds_this_test_process_by_argv0_and_not_a_stranger() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        let found = find_processes(Path::new("/proc"), name).unwrap();
        assert!(found.contains(&me), "{name}: {found:?}");
        let none = find_processes(Path::new("/proc"), "no-such-process-golive").unwrap();
        assert!(none.is_empty());
    }
}
