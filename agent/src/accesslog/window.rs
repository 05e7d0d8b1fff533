//! The sliding window: per-second buckets (requests, 5xx, unparsed lines, a
//! latency histogram) in a ring of at most [`MAX_WINDOW_SECS`] seconds, so
//! memory is bounded whatever the traffic.
//!
//! Latencies go into a fixed log-linear histogram: exact below 16 µs, then 16
//! sub-buckets per power of two up to 2³² µs (71.6 min; longer latencies
//! count as that). A bucket is reported by its midpoint, so a percentile is
//! within 1/32 (3.2 %) of the exact value (the nearest-rank sample).
//!
//! The newest second collects into a dense histogram (an array increment per
//! line); when a later second starts it is compacted into the ring as a
//! sorted list of its non-empty buckets, 4 bytes each. So the ring holds at
//! most 3600 × (48 + 4 × 464) bytes (6.5 MiB) in theory; in practice a
//! second has a few dozen distinct buckets (the benchmark's figure is in
//! `docs/bench-accesslog.md`). Lines of earlier seconds (Apache
//! logs the request's start, so slow requests arrive late) go straight into
//! their ring slot.

/// Sub-buckets per power of two (4 bits of mantissa).
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Latencies from 2^(MAX_EXP+1) µs on are counted in the last bucket.
const MAX_EXP: u32 = 31;
/// Buckets 0..16 are exact µs; then 16 per power of two from 2^4 to 2^31.
pub(crate) const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) * SUB as usize;

/// The largest window the ring keeps (1 h).
pub const MAX_WINDOW_SECS: u64 = 3600;

/// Figures over one window, as returned by [`super::stats`].
#[derive(Clone, Debug, PartialEq)]
pub struct WindowStats {
    /// Parsed lines whose second falls in the window.
    pub requests: u64,
    /// Of those, status 500-599.
    pub errors_5xx: u64,
    /// `errors_5xx / requests`, 0 when there were no requests.
    pub error_rate: f64,
    /// 95th percentile (nearest rank) of the latencies in the window, in
    /// milliseconds, within 3.2 %; `None` without a latency field or lines.
    pub p95_ms: Option<f64>,
    /// The window these figures cover (the asked one, at most 1 h).
    pub window_secs: u64,
    /// Lines that did not follow the format (or were too long), by arrival.
    pub unparsed_lines: u64,
    /// Seconds since this log's tailer started (it reads back the existing
    /// file at start, so a timestamped window is filled at once).
    pub since_start_secs: u64,
    /// Parsed lines in the window left out of the figures above because
    /// their second falls in an excluded span (golive's maintenance).
    pub excluded_requests: u64,
    /// Of those, status 500-599 (the maintenance page's 503s).
    pub excluded_5xx: u64,
}

/// A span of time, `[from_ms, to_ms]` in unix milliseconds, whose requests
/// are left out of the figures (issue 12, part 12). Log lines carry whole
/// seconds, so a second that overlaps the span at all is left out whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Excluded {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Whether unix second `sec` overlaps any of `spans`.
fn excluded(sec: i64, spans: &[Excluded]) -> bool {
    let (start, end) = (sec.saturating_mul(1000), sec.saturating_mul(1000) + 999);
    spans.iter().any(|s| s.from_ms <= end && s.to_ms >= start)
}

/// Bucket index of a latency in µs.
#[inline]
pub(crate) fn bucket(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let e = 63 - us.leading_zeros();
    if e > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (us >> (e - SUB_BITS)) & (SUB - 1);
    ((e - SUB_BITS + 1) as usize) * SUB as usize + sub as usize
}

/// The value a bucket stands for: the midpoint of the integers it holds.
pub(crate) fn bucket_value_us(b: usize) -> f64 {
    if b < SUB as usize {
        return b as f64;
    }
    let e = (b / SUB as usize) as u32 + SUB_BITS - 1;
    let sub = (b % SUB as usize) as u64;
    let width = 1u64 << (e - SUB_BITS);
    let lower = (SUB + sub) << (e - SUB_BITS);
    lower as f64 + (width - 1) as f64 / 2.0
}

/// A sparse histogram entry packs the bucket index above a count of
/// [`COUNT_BITS`] bits: 4 bytes per non-empty bucket per second. A count
/// saturates at 8.4 M lines in one bucket in one second.
const COUNT_BITS: u32 = 23;
const COUNT_MAX: u32 = (1 << COUNT_BITS) - 1;
const EMPTY: i64 = i64::MIN;

/// One second in the ring (48 bytes plus its histogram).
#[derive(Clone)]
struct Slot {
    /// The unix second this slot holds; [`EMPTY`] when none.
    sec: i64,
    requests: u32,
    errors: u32,
    unparsed: u32,
    /// Lines golive's maintenance page answered (the marker field), kept
    /// apart from `requests` (issue 12, part 12), and their 5xx.
    marked: u32,
    marked_errors: u32,
    /// Non-empty histogram buckets, sorted by index, packed (see [`COUNT_BITS`]).
    hist: Box<[u32]>,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            sec: EMPTY,
            requests: 0,
            errors: 0,
            unparsed: 0,
            marked: 0,
            marked_errors: 0,
            hist: Box::default(),
        }
    }
}

impl Slot {
    fn reset(&mut self, sec: i64) {
        *self = Slot {
            sec,
            ..Slot::default()
        };
    }

    /// Adds `n` samples to bucket `b` (the late-line path: a reallocation
    /// when the bucket is new to this second).
    fn add_latency(&mut self, b: usize, n: u32) {
        match self
            .hist
            .binary_search_by_key(&(b as u32), |e| e >> COUNT_BITS)
        {
            Ok(i) => {
                let e = self.hist[i];
                let count = (e & COUNT_MAX).saturating_add(n).min(COUNT_MAX);
                self.hist[i] = (e & !COUNT_MAX) | count;
            }
            Err(i) => {
                let mut v = std::mem::take(&mut self.hist).into_vec();
                v.insert(i, ((b as u32) << COUNT_BITS) | n.min(COUNT_MAX));
                self.hist = v.into_boxed_slice();
            }
        }
    }

    fn latencies(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.hist
            .iter()
            .map(|e| ((e >> COUNT_BITS) as usize, e & COUNT_MAX))
    }
}

/// The newest second, collected densely.
struct Open {
    sec: Option<i64>,
    requests: u32,
    errors: u32,
    marked: u32,
    marked_errors: u32,
    hist: Box<[u32; BUCKETS]>,
    /// Whether any latency went into `hist` (skips compaction otherwise).
    has_latency: bool,
}

pub struct Window {
    slots: Vec<Slot>,
    open: Open,
}

impl Window {
    /// A ring for windows up to `secs` (clamped to 1..=[`MAX_WINDOW_SECS`]).
    pub fn new(secs: u64) -> Window {
        Window {
            slots: vec![Slot::default(); secs.clamp(1, MAX_WINDOW_SECS) as usize],
            open: Open {
                sec: None,
                requests: 0,
                errors: 0,
                marked: 0,
                marked_errors: 0,
                hist: Box::new([0; BUCKETS]),
                has_latency: false,
            },
        }
    }

    /// Seconds the ring holds.
    pub fn capacity(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Grows the ring to hold `secs` (at most [`MAX_WINDOW_SECS`]); what it
    /// holds is kept. Never shrinks.
    pub fn ensure_capacity(&mut self, secs: u64) {
        let secs = secs.clamp(1, MAX_WINDOW_SECS) as usize;
        if secs <= self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); secs]);
        for slot in old {
            if slot.sec != EMPTY {
                let i = self.index(slot.sec);
                self.slots[i] = slot;
            }
        }
    }

    fn index(&self, sec: i64) -> usize {
        sec.rem_euclid(self.slots.len() as i64) as usize
    }

    /// Whether `sec` is inside the ring as of `now`.
    fn keeps(&self, sec: i64, now: i64) -> bool {
        sec > now - self.slots.len() as i64
    }

    /// The ring slot for `sec`, cleared if it held an older second.
    fn slot(&mut self, sec: i64) -> &mut Slot {
        let i = self.index(sec);
        let slot = &mut self.slots[i];
        if slot.sec != sec {
            slot.reset(sec);
        }
        slot
    }

    /// Counts one parsed line. `sec` is the line's own time, or its arrival
    /// when the format has none; a time in the future counts as `now`, a time
    /// older than the ring counts nowhere.
    #[inline]
    pub fn add(&mut self, sec: i64, status: u16, latency_us: Option<u64>, now: i64) {
        let sec = sec.min(now);
        let error = u32::from((500..600).contains(&status));
        if self.open.sec == Some(sec) {
            let open = &mut self.open;
            open.requests += 1;
            open.errors += error;
            if let Some(us) = latency_us {
                open.hist[bucket(us)] += 1;
                open.has_latency = true;
            }
            return;
        }
        if !self.keeps(sec, now) {
            return;
        }
        if self.open.sec.is_none_or(|open| sec > open) {
            self.flush(now);
            self.open.sec = Some(sec);
            return self.add(sec, status, latency_us, now);
        }
        let slot = self.slot(sec);
        slot.requests += 1;
        slot.errors += error;
        if let Some(us) = latency_us {
            slot.add_latency(bucket(us), 1);
        }
    }

    /// Counts one line golive's maintenance page answered (its marker
    /// field, issue 12, part 12): apart from the error rate and p95, in
    /// the excluded figures, whatever the journal says.
    pub fn add_maintenance(&mut self, sec: i64, status: u16, now: i64) {
        let sec = sec.min(now);
        let error = u32::from((500..600).contains(&status));
        if self.open.sec == Some(sec) {
            self.open.marked += 1;
            self.open.marked_errors += error;
            return;
        }
        if !self.keeps(sec, now) {
            return;
        }
        if self.open.sec.is_none_or(|open| sec > open) {
            self.flush(now);
            self.open.sec = Some(sec);
            return self.add_maintenance(sec, status, now);
        }
        let slot = self.slot(sec);
        slot.marked += 1;
        slot.marked_errors += error;
    }

    /// Counts a line that did not parse, at its arrival second.
    pub fn add_unparsed(&mut self, now: i64) {
        self.slot(now).unparsed += 1;
    }

    /// Moves the open second into the ring (sparse).
    fn flush(&mut self, now: i64) {
        let Some(sec) = self.open.sec.take() else {
            return;
        };
        let (requests, errors) = (self.open.requests, self.open.errors);
        let (marked, marked_errors) = (self.open.marked, self.open.marked_errors);
        self.open.requests = 0;
        self.open.errors = 0;
        self.open.marked = 0;
        self.open.marked_errors = 0;
        let had_latency = std::mem::take(&mut self.open.has_latency);
        if !self.keeps(sec, now) {
            self.open.hist.fill(0);
            return;
        }
        let i = self.index(sec);
        let slot = &mut self.slots[i];
        if slot.sec != sec {
            slot.reset(sec);
        }
        slot.requests += requests;
        slot.errors += errors;
        slot.marked += marked;
        slot.marked_errors += marked_errors;
        if !had_latency {
            return;
        }
        if slot.hist.is_empty() {
            // The usual case: one exact allocation.
            slot.hist = self
                .open
                .hist
                .iter_mut()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(b, n)| ((b as u32) << COUNT_BITS) | std::mem::take(n).min(COUNT_MAX))
                .collect();
        } else {
            for (b, n) in self.open.hist.iter_mut().enumerate() {
                if *n > 0 {
                    slot.add_latency(b, std::mem::take(n));
                }
            }
        }
    }

    /// Figures for the `secs` seconds ending at `now` (inclusive).
    pub fn stats(&self, now: i64, secs: u64, since_start_secs: u64) -> WindowStats {
        self.stats_excluding(now, secs, since_start_secs, &[])
    }

    /// [`Window::stats`] with the seconds that overlap `exclude` counted
    /// apart (`excluded_requests`, `excluded_5xx`) instead of in the
    /// error rate and p95, as are the lines marked as golive's maintenance
    /// answers wherever they fall. Unparsed lines count wherever they fall.
    pub fn stats_excluding(
        &self,
        now: i64,
        secs: u64,
        since_start_secs: u64,
        exclude: &[Excluded],
    ) -> WindowStats {
        let secs = secs.clamp(1, MAX_WINDOW_SECS);
        let inside = |sec: i64| sec <= now && sec > now - secs as i64;
        let (mut requests, mut errors, mut unparsed) = (0u64, 0u64, 0u64);
        let (mut excluded_requests, mut excluded_5xx) = (0u64, 0u64);
        let mut hist = vec![0u64; BUCKETS];
        for slot in &self.slots {
            if slot.sec != EMPTY && inside(slot.sec) {
                unparsed += u64::from(slot.unparsed);
                excluded_requests += u64::from(slot.marked);
                excluded_5xx += u64::from(slot.marked_errors);
                if excluded(slot.sec, exclude) {
                    excluded_requests += u64::from(slot.requests);
                    excluded_5xx += u64::from(slot.errors);
                    continue;
                }
                requests += u64::from(slot.requests);
                errors += u64::from(slot.errors);
                for (b, n) in slot.latencies() {
                    hist[b] += u64::from(n);
                }
            }
        }
        if let Some(sec) = self.open.sec.filter(|s| inside(*s)) {
            excluded_requests += u64::from(self.open.marked);
            excluded_5xx += u64::from(self.open.marked_errors);
            if excluded(sec, exclude) {
                excluded_requests += u64::from(self.open.requests);
                excluded_5xx += u64::from(self.open.errors);
            } else {
                requests += u64::from(self.open.requests);
                errors += u64::from(self.open.errors);
                for (h, n) in hist.iter_mut().zip(self.open.hist.iter()) {
                    *h += u64::from(*n);
                }
            }
        }
        WindowStats {
            requests,
            errors_5xx: errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p95_ms: percentile_us(&hist, 0.95).map(|us| us / 1000.0),
            window_secs: secs,
            unparsed_lines: unparsed,
            since_start_secs,
            excluded_requests,
            excluded_5xx,
        }
    }

    /// Heap bytes held (for the benchmark's memory figure).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<[u32; BUCKETS]>()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self
                .slots
                .iter()
                .map(|s| std::mem::size_of_val(&*s.hist))
                .sum::<usize>()
    }
}

/// Nearest-rank percentile `q` of a histogram, as its bucket's value.
fn percentile_us(hist: &[u64], q: f64) -> Option<f64> {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (b, c) in hist.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_value_us(b));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_760_097_336;

    #[test]
    fn buckets_cover_the_range_with_bounded_error() {
        assert_eq!(BUCKETS, 464);
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(15), 15);
        assert_eq!(bucket(16), 16);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket((1 << 32) - 1), BUCKETS - 1);
        let mut prev = 0;
        let mut us = 1u64;
        while us < 1 << 32 {
            let b = bucket(us);
            assert!(b >= prev && b < BUCKETS, "{us}");
            prev = b;
            let err = (bucket_value_us(b) - us as f64).abs() / us as f64;
            assert!(
                err <= 1.0 / 32.0,
                "{us}µs → bucket {b} = {}",
                bucket_value_us(b)
            );
            us = us + 1 + us / 7;
        }
    }

    #[test]
    fn counts_and_error_rate_over_window_boundaries() {
        let mut w = Window::new(60);
        // 10 lines per second over the last 100 s; one 5xx per second.
        for age in 0..100 {
            for i in 0..10 {
                let status = if i == 0 { 503 } else { 200 };
                w.add(NOW - age, status, None, NOW);
            }
        }
        let s = w.stats(NOW, 60, 5);
        assert_eq!((s.requests, s.errors_5xx), (600, 60));
        assert!((s.error_rate - 0.1).abs() < 1e-12);
        assert_eq!((s.p95_ms, s.window_secs, s.since_start_secs), (None, 60, 5));
        // The window is (now - secs, now]: exactly `secs` seconds.
        assert_eq!(w.stats(NOW, 1, 0).requests, 10);
        assert_eq!(w.stats(NOW, 30, 0).requests, 300);
        // A second later the oldest second leaves the 30 s window.
        assert_eq!(w.stats(NOW + 1, 30, 0).requests, 290);
        // Beyond what the ring holds: the ring is 60 s.
        assert_eq!(w.stats(NOW, 3600, 0).requests, 600);
        // Long after, nothing is left; lines in the future count as now.
        assert_eq!(w.stats(NOW + 100, 60, 0).requests, 0);
        w.add(NOW + 500, 500, None, NOW + 100);
        assert_eq!(w.stats(NOW + 100, 1, 0).errors_5xx, 1);
        let empty = Window::new(60).stats(NOW, 60, 0);
        assert_eq!(
            (empty.requests, empty.error_rate, empty.p95_ms),
            (0, 0.0, None)
        );
    }

    /// Issue 12, part 12: seconds that overlap an excluded span (golive's
    /// maintenance) are counted apart, not in the error rate or p95.
    #[test]
    fn issue12_excluded_seconds_are_counted_apart() {
        let mut w = Window::new(60);
        for age in 0..30 {
            // Seconds NOW-20..=NOW-11 are a maintenance window: 503s, fast.
            let maintenance = (11..=20).contains(&age);
            for _ in 0..10 {
                let (status, us) = if maintenance {
                    (503, 100)
                } else {
                    (200, 50_000)
                };
                w.add(NOW - age, status, Some(us), NOW);
            }
        }
        let all = w.stats(NOW, 60, 0);
        assert_eq!((all.requests, all.errors_5xx), (300, 100));
        // On at NOW-20 s + 300 ms, off at NOW-12 s + 10 ms, plus the 1 s
        // margin: seconds NOW-20 ..= NOW-11 overlap it.
        let span = Excluded {
            from_ms: (NOW - 20) * 1000 + 300,
            to_ms: (NOW - 12) * 1000 + 10 + 1000,
        };
        let s = w.stats_excluding(NOW, 60, 0, &[span]);
        assert_eq!((s.requests, s.errors_5xx, s.error_rate), (200, 0, 0.0));
        assert_eq!((s.excluded_requests, s.excluded_5xx), (100, 100));
        assert!((s.p95_ms.unwrap() - 50.0).abs() < 2.0, "{s:?}");
        // The open (newest) second is excluded too when it overlaps.
        let now_span = Excluded {
            from_ms: NOW * 1000 + 999,
            to_ms: i64::MAX,
        };
        let s = w.stats_excluding(NOW, 60, 0, &[now_span]);
        assert_eq!((s.requests, s.excluded_requests), (290, 10));
    }

    #[test]
    fn late_lines_land_in_their_second_and_old_ones_nowhere() {
        let mut w = Window::new(10);
        w.add(NOW, 200, Some(1000), NOW);
        w.add(NOW - 3, 500, Some(2000), NOW); // late (Apache logs the start)
        w.add(NOW - 10, 500, Some(3000), NOW); // older than the ring
        w.add(NOW, 200, Some(1000), NOW);
        assert_eq!(w.stats(NOW, 10, 0).requests, 3);
        assert_eq!(w.stats(NOW, 10, 0).errors_5xx, 1);
        assert_eq!(w.stats(NOW, 3, 0).requests, 2);
        assert_eq!(w.stats(NOW, 4, 0).requests, 3);
        w.add_unparsed(NOW);
        w.add(NOW + 1, 200, None, NOW + 1); // flushes NOW into the slot holding the unparsed line
        let s = w.stats(NOW + 1, 10, 0);
        assert_eq!((s.requests, s.unparsed_lines), (4, 1));
        // Growing keeps what is there.
        w.ensure_capacity(120);
        assert_eq!(w.capacity(), 120);
        assert_eq!(w.stats(NOW + 1, 10, 0).requests, 4);
        w.ensure_capacity(10_000);
        assert_eq!(w.capacity(), MAX_WINDOW_SECS);
    }

    /// p95 from the histogram against the exact nearest-rank p95 of the same
    /// samples, for a heavy-tailed latency mix spread over a window.
    #[test]
    fn p95_is_within_the_documented_error() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20 {
            let mut w = Window::new(300);
            let mut exact = Vec::new();
            for i in 0..20_000u64 {
                // Mostly 2-80 ms, a tail up to ~20 s, some sub-ms.
                let us = match rnd() % 100 {
                    0..=4 => rnd() % 900,
                    5..=89 => 2_000 + rnd() % 78_000,
                    _ => 80_000 + (rnd() % 1000) * (rnd() % 20_000),
                };
                let age = (i * 7 + round) as i64 % 300;
                w.add(NOW - age, 200, Some(us), NOW);
                exact.push(us);
            }
            exact.sort_unstable();
            let want = exact[(0.95 * exact.len() as f64).ceil() as usize - 1] as f64 / 1000.0;
            let got = w.stats(NOW, 300, 0).p95_ms.unwrap();
            assert!(
                (got - want).abs() / want <= 1.0 / 32.0,
                "round {round}: p95 {got} ms, exact {want} ms"
            );
        }
    }

    /// Issue 12, part 12: lines marked as golive's maintenance answers are
    /// left out of the error rate and p95 wherever they fall (no journaled
    /// window needed), and counted apart; in an excluded span, once.
    #[test]
    fn issue12_marked_lines_are_counted_apart() {
        let mut w = Window::new(60);
        w.add(NOW - 5, 200, Some(1000), NOW);
        w.add_maintenance(NOW - 5, 503, NOW);
        w.add_maintenance(NOW - 3, 503, NOW);
        w.add(NOW - 3, 200, Some(2000), NOW);
        w.add_maintenance(NOW, 503, NOW);
        w.add_maintenance(NOW, 200, NOW);
        w.add(NOW, 502, Some(3000), NOW);
        let st = w.stats(NOW, 60, 0);
        assert_eq!((st.requests, st.errors_5xx), (3, 1), "{st:?}");
        assert_eq!((st.excluded_requests, st.excluded_5xx), (4, 3), "{st:?}");
        // A journaled span over NOW - 3: its plain lines join the excluded.
        let span = Excluded {
            from_ms: (NOW - 3) * 1000,
            to_ms: (NOW - 3) * 1000 + 10,
        };
        let st = w.stats_excluding(NOW, 60, 0, &[span]);
        assert_eq!((st.requests, st.excluded_requests), (2, 5), "{st:?}");
        // Flushed into the ring, the counts stay.
        w.add(NOW + 1, 200, None, NOW + 1);
        let st = w.stats(NOW + 1, 60, 0);
        assert_eq!((st.requests, st.excluded_requests), (4, 4), "{st:?}");
    }

    #[test]
    fn memory_is_bounded_by_the_ring() {
        let mut w = Window::new(MAX_WINDOW_SECS);
        for age in 0..2 * MAX_WINDOW_SECS as i64 {
            for us in [100, 1_000, 10_000, 100_000, 1_000_000] {
                w.add(NOW - age, 200, Some(us), NOW);
            }
        }
        // 3600 slots of 48 bytes, five 4-byte buckets in each but the
        // newest (still in the dense open second).
        assert_eq!(std::mem::size_of::<Slot>(), 48);
        assert_eq!(w.heap_bytes(), 3600 * 48 + 3599 * 5 * 4 + BUCKETS * 4);
        assert_eq!(w.stats(NOW, MAX_WINDOW_SECS, 0).requests, 5 * 3600);
    }
}
