//! The tailer against real files in temp dirs, with writer threads; every
//! wait is bounded.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::parse::format_time_local;
use super::tail::{IDLE_STOP, MAX_LINE, lock};
use super::*;

const NGINX_RT: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time"#;
const WINDOW: Duration = Duration::from_secs(300);

fn fmt() -> LogFormat {
    LogFormat::parse(NGINX_RT).unwrap()
}

fn line(unix: i64, status: u16, ms: u64) -> String {
    format!(
        "10.0.0.{} - - [{}] \"GET /p/{ms} HTTP/1.1\" {status} 123 \"-\" \"test \\\"agent\\\"\" {}.{:03}\n",
        ms % 250,
        format_time_local(unix, 120),
        ms / 1000,
        ms % 1000
    )
}

/// `n` lines stamped a few seconds ago; every tenth is a 503.
fn lines(n: usize) -> String {
    let now = tail::unix_now();
    (0..n)
        .map(|i| {
            line(
                now - 2,
                if i % 10 == 0 { 503 } else { 200 },
                5 + i as u64 % 40,
            )
        })
        .collect()
}

fn stats_of(path: &Path) -> WindowStats {
    stats(path, &fmt(), WINDOW).unwrap()
}

/// Polls `stats` until `done` holds, for at most 15 s.
fn wait_for(path: &Path, what: &str, done: impl Fn(&WindowStats) -> bool) -> WindowStats {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = stats_of(path);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    (dir, path)
}

#[test]
fn reads_back_the_existing_file_by_the_lines_own_time() {
    let (_dir, path) = temp();
    let now = tail::unix_now();
    let mut text = String::new();
    for i in 0..100 {
        text += &line(now - 7200 - i, 500, 900); // two hours old: outside
    }
    for i in 0..40u64 {
        let status = if i < 4 { 502 } else { 200 };
        text += &line(now - 60 - i as i64, status, 10 + i); // 10..49 ms
    }
    text += "this is not an access log line\n";
    std::fs::write(&path, &text).unwrap();
    let s = stats_of(&path);
    assert_eq!((s.requests, s.errors_5xx, s.unparsed_lines), (40, 4, 1));
    assert!((s.error_rate - 0.1).abs() < 1e-9);
    // Nearest rank 38 of 10..49 ms is 47 ms; the histogram is within 3.2 %.
    let p95 = s.p95_ms.unwrap();
    assert!((p95 - 47.0).abs() / 47.0 <= 1.0 / 32.0, "{p95}");
    assert_eq!(s.window_secs, 300);
    // A shorter window sees fewer of them.
    let short = stats(&path, &fmt(), Duration::from_secs(70)).unwrap();
    assert_eq!(short.requests, 10);
}

#[test]
fn follows_appends_and_holds_a_partial_line() {
    let (_dir, path) = temp();
    std::fs::write(&path, "").unwrap();
    assert_eq!(stats_of(&path).requests, 0);
    let text = lines(11);
    let (head, rest) = text.split_at(text.len() - 30);
    let writer = {
        let (path, head) = (path.clone(), head.to_string());
        thread::spawn(move || {
            for chunk in head.as_bytes().chunks(97) {
                append(&path, std::str::from_utf8(chunk).unwrap());
            }
        })
    };
    writer.join().unwrap();
    let s = wait_for(&path, "10 lines", |s| s.requests == 10);
    assert_eq!((s.errors_5xx, s.unparsed_lines), (1, 0));
    // The cut line is held, not counted as unparsed, until its newline.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (stats_of(&path).requests, stats_of(&path).unparsed_lines),
        (10, 0)
    );
    append(&path, rest);
    let s = wait_for(&path, "the 11th line", |s| s.requests == 11);
    assert_eq!(s.unparsed_lines, 0);
}

#[test]
fn rename_rotation_drains_the_old_file_and_reads_the_new() {
    let (dir, path) = temp();
    append(&path, &lines(50));
    assert_eq!(stats_of(&path).requests, 50);
    let writer = {
        let (path, rotated) = (path.clone(), dir.path().join("access.log.1"));
        thread::spawn(move || {
            // Like nginx: one descriptor, O_APPEND, kept across the rename
            // until the server is told to reopen its logs.
            let mut old = OpenOptions::new().append(true).open(&path).unwrap();
            for _ in 0..10 {
                old.write_all(lines(10).as_bytes()).unwrap();
                thread::sleep(Duration::from_millis(10));
            }
            std::fs::rename(&path, &rotated).unwrap();
            old.write_all(lines(20).as_bytes()).unwrap();
            thread::sleep(Duration::from_millis(200));
            let mut new = File::create(&path).unwrap();
            new.write_all(lines(30).as_bytes()).unwrap();
            // A late write to the old file after the new one exists.
            old.write_all(lines(5).as_bytes()).unwrap();
            for _ in 0..5 {
                new.write_all(lines(10).as_bytes()).unwrap();
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    writer.join().unwrap();
    let s = wait_for(&path, "every line of both files", |s| {
        s.requests >= 50 + 100 + 20 + 30 + 5 + 50
    });
    assert_eq!((s.requests, s.unparsed_lines), (255, 0));
    assert_eq!(s.errors_5xx, 5 + 10 + 2 + 3 + 1 + 5);
}

#[test]
fn truncate_rotation_reads_again_from_the_start() {
    let (_dir, path) = temp();
    append(&path, &lines(300));
    assert_eq!(stats_of(&path).requests, 300);
    let writer = {
        let path = path.clone();
        thread::spawn(move || {
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(lines(20).as_bytes()).unwrap();
            thread::sleep(Duration::from_millis(300));
            // copytruncate: the file is copied, then truncated in place;
            // the server keeps appending to the same descriptor.
            std::fs::copy(&path, path.with_extension("log.1")).unwrap();
            OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(0)
                .unwrap();
            for _ in 0..5 {
                f.write_all(lines(10).as_bytes()).unwrap();
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    writer.join().unwrap();
    let s = wait_for(&path, "the lines after the truncation", |s| {
        s.requests >= 370
    });
    assert_eq!((s.requests, s.unparsed_lines), (370, 0));
}

#[test]
fn a_log_created_later_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    // Neither the file nor its directory exist yet.
    let path = dir.path().join("nginx").join("access.log");
    let s = stats_of(&path);
    assert_eq!((s.requests, s.unparsed_lines), (0, 0));
    std::fs::create_dir(dir.path().join("nginx")).unwrap();
    append(&path, &lines(25));
    let s = wait_for(&path, "the new file's lines", |s| s.requests == 25);
    assert_eq!(s.errors_5xx, 3);
    // And once the directory is watched, appends are seen.
    append(&path, &lines(5));
    wait_for(&path, "5 more", |s| s.requests == 30);
}

#[test]
fn long_and_malformed_lines_are_counted_as_unparsed() {
    let (_dir, path) = temp();
    std::fs::write(&path, "").unwrap();
    assert_eq!(stats_of(&path).requests, 0);
    // A line longer than the cap, written in pieces, between good lines.
    append(&path, &lines(3));
    let long = "x".repeat(MAX_LINE / 3);
    for _ in 0..4 {
        append(&path, &long);
    }
    append(&path, "\n");
    append(&path, "\n"); // empty lines are ignored
    append(&path, "garbage\n");
    append(&path, &lines(3));
    let s = wait_for(&path, "6 lines", |s| s.requests == 6);
    assert_eq!(s.unparsed_lines, 2, "{s:?}");
}

#[test]
fn a_format_without_time_counts_by_arrival_and_skips_old_lines() {
    let (_dir, path) = temp();
    let format = LogFormat::parse(r#"$remote_addr "$request" $status"#).unwrap();
    std::fs::write(&path, "10.0.0.1 \"GET / HTTP/1.1\" 500\n".repeat(10)).unwrap();
    let ask = || stats(&path, &format, WINDOW).unwrap();
    assert_eq!(ask().requests, 0);
    append(&path, &"10.0.0.1 \"GET / HTTP/1.1\" 200\n".repeat(4));
    let deadline = Instant::now() + Duration::from_secs(15);
    while ask().requests < 4 {
        assert!(Instant::now() < deadline, "{:?}", ask());
        thread::sleep(Duration::from_millis(20));
    }
    let s = ask();
    assert_eq!((s.requests, s.errors_5xx, s.p95_ms), (4, 0, None));
}

#[test]
fn bad_paths_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = stats(dir.path(), &fmt(), WINDOW).unwrap_err();
    assert!(
        err.contains(&dir.path().display().to_string()) && err.contains("directory"),
        "{err}"
    );
    let err = stats(Path::new("logs/access.log"), &fmt(), WINDOW).unwrap_err();
    assert!(err.contains("relative"), "{err}");
}

#[test]
fn an_idle_tailer_stops_and_the_next_ask_starts_a_new_one() {
    let (_dir, path) = temp();
    append(&path, &lines(12));
    assert_eq!(stats_of(&path).requests, 12);
    let first = lock(&TAILERS)
        .iter()
        .find(|t| t.path == path)
        .cloned()
        .unwrap();
    // As if nobody had asked for IDLE_STOP: the next wake (the poll, 1 s)
    // ends the thread and removes it from the registry.
    *lock(&first.last_asked) = Instant::now() - IDLE_STOP - Duration::from_secs(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while *lock(&first.alive) {
        assert!(Instant::now() < deadline, "the idle tailer did not stop");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!lock(&TAILERS).iter().any(|t| Arc::ptr_eq(t, &first)));
    // The next ask reads the file back into a new window.
    let s = stats_of(&path);
    assert_eq!(s.requests, 12);
    assert!(!lock(&TAILERS).iter().any(|t| Arc::ptr_eq(t, &first)));
}

/// CPU ticks (utime + stime) of the tailer thread following `path`.
fn tailer_ticks(path: &Path) -> u64 {
    let tid = lock(&TAILERS)
        .iter()
        .find(|t| t.path == path)
        .and_then(|t| *lock(&t.tid))
        .expect("a running tailer for the path");
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Issue 11: the tailer follows its log through a rename onto the name and
/// through its directory being removed and re-created, and sleeps between
/// (its own reads never wake it).
#[test]
fn issue11_the_tailer_survives_a_recreated_directory_and_stays_idle() {
    let base = tempfile::tempdir().unwrap();
    let logs = base.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let path = logs.join("access.log");
    append(&path, &lines(10));
    assert_eq!(stats_of(&path).requests, 10);

    // Replaced by rename (an atomic rewrite, logrotate's `create`).
    let tmp = logs.join("access.log.new");
    append(&tmp, &lines(5));
    std::fs::rename(&tmp, &path).unwrap();
    wait_for(&path, "the renamed-in file", |s| s.requests == 15);
    let before = tailer_ticks(&path);
    thread::sleep(Duration::from_secs(3));
    let idle = tailer_ticks(&path) - before;
    assert!(idle <= 5, "{idle} ticks in 3 s after a rename");

    // The directory removed and re-created with a new log.
    std::fs::remove_dir_all(&logs).unwrap();
    thread::sleep(Duration::from_millis(300));
    std::fs::create_dir(&logs).unwrap();
    append(&path, &lines(7));
    wait_for(&path, "the log in the re-created directory", |s| {
        s.requests == 22
    });
    append(&path, &lines(3));
    wait_for(&path, "an append after the re-creation", |s| {
        s.requests == 25
    });
    let before = tailer_ticks(&path);
    thread::sleep(Duration::from_secs(3));
    let idle = tailer_ticks(&path) - before;
    assert!(
        idle <= 5,
        "{idle} ticks in 3 s after the directory came back"
    );
}
