//! `[[waves]]` (issue 14): the plan's hosts cut into waves (canary, a
//! share, the rest), each switched and validated before the next starts.
//!
//! Pure: the raw tables and the plan's host names in, the waves out (host
//! indices in plan order), or every problem with its dotted key. The
//! sequencer runs them (`deployment/waves_run.rs`).

use std::time::Duration;

use serde::Deserialize;

/// The longest soak a wave may ask for: a deployment holds its locks
/// meanwhile.
pub const MAX_SOAK: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWave {
    /// Shown in the output and the journal, e.g. "canary".
    pub name: Option<String>,
    /// The hosts of this wave, by name.
    pub hosts: Option<Vec<String>>,
    /// Or a share of the plan's hosts (rounded up, at least one), taken in
    /// plan order after the hosts of earlier waves.
    pub percent: Option<u32>,
    /// Or every host in one of these groups (`groups = [...]` of a
    /// `[[hosts]]`) that an earlier wave did not take, in plan order.
    pub groups: Option<Vec<String>>,
    /// Time after the wave is validated, before the next wave starts,
    /// during which its hosts' probes are re-run; e.g. "30s", "5m".
    pub soak: Option<String>,
    /// Percent of the wave's hosts that may fail without stopping the
    /// deployment (each is rolled back on its own); default 0.
    pub max_fail: Option<u32>,
}

/// One wave of a validated plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    pub name: Option<String>,
    /// Indices into the plan's hosts, in plan order.
    pub hosts: Vec<usize>,
    pub soak: Option<Duration>,
    /// Percent of the wave's hosts allowed to fail.
    pub max_fail: u32,
}

impl Wave {
    /// How many of the wave's hosts may fail: `max_fail` percent of them,
    /// rounded down (a tolerance is never more than was asked for).
    pub fn allowed_failures(&self) -> usize {
        self.hosts.len() * self.max_fail as usize / 100
    }

    /// "wave 1/3 (canary)" or "wave 2/3".
    pub fn label(&self, n: usize, of: usize) -> String {
        match &self.name {
            Some(name) => format!("wave {n}/{of} ({name})"),
            None => format!("wave {n}/{of}"),
        }
    }
}

/// `percent` of `total` hosts, rounded up, at least one.
pub fn share(percent: u32, total: usize) -> usize {
    (total * percent as usize).div_ceil(100).max(1)
}

/// Cuts `hosts` (the plan's host names, in order) into the waves `raw`
/// asks for. No `[[waves]]`: no waves (the sequencer goes host by host).
/// The last wave given as a share (or as neither hosts nor a share) takes
/// every remaining host; hosts that explicit waves leave out get a final
/// implicit wave. `groups[i]` are the groups of `hosts[i]`. Errors:
/// `(dotted key, message)`, every one.
pub fn plan(
    raw: &[RawWave],
    hosts: &[String],
    groups: &[Vec<String>],
) -> Result<Vec<Wave>, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut taken = vec![false; hosts.len()];
    let mut waves = Vec::new();
    for (w, r) in raw.iter().enumerate() {
        let at = |k: &str| format!("waves.{w}.{k}");
        let last = w + 1 == raw.len();
        if let Some(name) = &r.name
            && (name.is_empty()
                || name.len() > 40
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            problems.push((
                at("name"),
                format!(
                    "{name:?} is not a wave name: use 1 to 40 letters, digits, '-' or '_', \
                     e.g. \"canary\""
                ),
            ));
        }
        let soak = match r.soak.as_deref().map(crate::watchdog::parse_duration_ms) {
            None => None,
            Some(Ok(ms)) if ms >= 1000 && Duration::from_millis(ms) <= MAX_SOAK => {
                Some(Duration::from_millis(ms))
            }
            Some(Ok(_)) => {
                problems.push((
                    at("soak"),
                    "use 1 second to 24 hours, e.g. \"30s\" or \"10m\"".into(),
                ));
                None
            }
            Some(Err(e)) => {
                problems.push((at("soak"), e));
                None
            }
        };
        let max_fail = r.max_fail.unwrap_or(0);
        if max_fail > 100 {
            problems.push((
                at("max_fail"),
                format!(
                    "{max_fail} is not a percent of the wave's hosts: use 0 (no host may fail, \
                     the default) to 100"
                ),
            ));
        }
        let mut mine = Vec::new();
        let ways = [r.hosts.is_some(), r.percent.is_some(), r.groups.is_some()];
        if ways.iter().filter(|&&w| w).count() > 1 {
            problems.push((
                at("hosts"),
                "a wave names its hosts, its groups or a percent, only one of them: keep \
                 `hosts = [...]`, `groups = [...]` or `percent = N`"
                    .into(),
            ));
            continue;
        }
        if let Some(wanted) = &r.groups {
            match by_groups(wanted, groups, &taken) {
                Ok(found) => {
                    for &i in &found {
                        taken[i] = true;
                    }
                    mine = found;
                }
                Err(message) => {
                    problems.push((at("groups"), message));
                    continue;
                }
            }
            waves.push(Wave {
                name: r.name.clone(),
                hosts: mine,
                soak,
                max_fail,
            });
            continue;
        }
        match (&r.hosts, r.percent) {
            (Some(_), Some(_)) => unreachable!("refused above"),
            (Some(names), None) => {
                if names.is_empty() {
                    problems.push((
                        at("hosts"),
                        "an empty wave: name at least one host, or remove the wave".into(),
                    ));
                }
                for name in names {
                    match hosts.iter().position(|h| h == name) {
                        None => problems.push((
                            at("hosts"),
                            format!("{name:?} is not a host of this plan: use a [[hosts]] name"),
                        )),
                        Some(i) if taken[i] => problems.push((
                            at("hosts"),
                            format!(
                                "{name:?} is already in an earlier wave (or twice in this one)"
                            ),
                        )),
                        Some(i) => {
                            taken[i] = true;
                            mine.push(i);
                        }
                    }
                }
                mine.sort_unstable();
            }
            (None, percent) => {
                let left: Vec<usize> = (0..hosts.len()).filter(|&i| !taken[i]).collect();
                let n = match percent {
                    Some(p) if !(1..=100).contains(&p) => {
                        problems.push((
                            at("percent"),
                            format!("{p} is not a share of the hosts: use 1 to 100"),
                        ));
                        continue;
                    }
                    Some(p) if !last => share(p, hosts.len()),
                    // The last wave takes every remaining host.
                    _ => left.len(),
                };
                if left.is_empty() {
                    problems.push((
                        at(if percent.is_some() {
                            "percent"
                        } else {
                            "hosts"
                        }),
                        "no host is left for this wave: earlier waves took all of them; \
                         remove this wave"
                            .into(),
                    ));
                    continue;
                }
                for &i in left.iter().take(n) {
                    taken[i] = true;
                    mine.push(i);
                }
            }
        }
        waves.push(Wave {
            name: r.name.clone(),
            hosts: mine,
            soak,
            max_fail,
        });
    }
    let rest: Vec<usize> = (0..hosts.len()).filter(|&i| !taken[i]).collect();
    if !raw.is_empty() && !rest.is_empty() {
        waves.push(Wave {
            name: None,
            hosts: rest,
            soak: None,
            max_fail: 0,
        });
    }
    if problems.is_empty() {
        Ok(waves)
    } else {
        Err(problems)
    }
}

/// The hosts not yet `taken` in any of the `wanted` groups, in plan order,
/// or why there are none.
fn by_groups(
    wanted: &[String],
    groups: &[Vec<String>],
    taken: &[bool],
) -> Result<Vec<usize>, String> {
    if wanted.is_empty() {
        return Err("an empty wave: name at least one group, or remove the wave".into());
    }
    let known = |g: &String| groups.iter().any(|of| of.contains(g));
    if let Some(unknown) = wanted.iter().find(|g| !known(g)) {
        let mut all: Vec<&String> = groups.iter().flatten().collect();
        all.sort_unstable();
        all.dedup();
        return Err(if all.is_empty() {
            format!(
                "{unknown:?} is not a group of this plan: no host has `groups = [...]`; add \
                 it to the [[hosts]] of that group"
            )
        } else {
            format!(
                "{unknown:?} is not a group of this plan: use one of {}, or add it to the \
                 [[hosts]] of that group",
                all.iter()
                    .map(|g| format!("{g:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    let found: Vec<usize> = (0..groups.len())
        .filter(|&i| !taken[i] && groups[i].iter().any(|g| wanted.contains(g)))
        .collect();
    if found.is_empty() {
        return Err(
            "no host of these groups is left for this wave: earlier waves took all \
                    of them; remove this wave"
                .into(),
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("web{i}")).collect()
    }

    fn wave(hosts: Option<&[&str]>, percent: Option<u32>) -> RawWave {
        RawWave {
            name: None,
            hosts: hosts.map(|h| h.iter().map(|s| s.to_string()).collect()),
            percent,
            groups: None,
            soak: None,
            max_fail: None,
        }
    }

    fn cut(raw: &[RawWave], n: usize) -> Vec<Vec<usize>> {
        plan(raw, &names(n), &vec![Vec::new(); n])
            .unwrap()
            .into_iter()
            .map(|w| w.hosts)
            .collect()
    }

    #[test]
    fn issue14_percent_rounds_up_and_takes_hosts_in_plan_order() {
        assert_eq!(share(1, 5), 1);
        assert_eq!(share(40, 5), 2);
        assert_eq!(share(25, 10), 3);
        assert_eq!(share(100, 3), 3);
        // canary 1 host -> 40% -> the rest, on 5 hosts.
        let raw = [
            wave(Some(&["web3"]), None),
            wave(None, Some(40)),
            wave(None, Some(100)),
        ];
        assert_eq!(cut(&raw, 5), vec![vec![2], vec![0, 1], vec![3, 4]]);
        // The last wave takes the rest whatever its share says.
        let raw = [wave(None, Some(1)), wave(None, Some(10))];
        assert_eq!(cut(&raw, 5), vec![vec![0], vec![1, 2, 3, 4]]);
        // Explicit waves that leave hosts out: a final implicit wave.
        let raw = [wave(Some(&["web1"]), None), wave(Some(&["web4"]), None)];
        assert_eq!(cut(&raw, 5), vec![vec![0], vec![3], vec![1, 2, 4]]);
        // No waves: none.
        assert!(cut(&[], 3).is_empty());
    }

    #[test]
    fn issue14_max_fail_is_a_share_rounded_down() {
        let w = |n: usize, max_fail| Wave {
            name: None,
            hosts: (0..n).collect(),
            soak: None,
            max_fail,
        };
        assert_eq!(w(2, 50).allowed_failures(), 1);
        assert_eq!(w(3, 50).allowed_failures(), 1);
        assert_eq!(w(1, 50).allowed_failures(), 0);
        assert_eq!(w(4, 0).allowed_failures(), 0);
        assert_eq!(w(4, 100).allowed_failures(), 4);
    }

    #[test]
    fn issue14_bad_waves_name_their_key() {
        let keys = |raw: &[RawWave], n| -> Vec<String> {
            plan(raw, &names(n), &vec![Vec::new(); n])
                .unwrap_err()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(keys(&[wave(Some(&["db9"]), None)], 2), ["waves.0.hosts"]);
        assert_eq!(
            keys(&[wave(Some(&["web1"]), Some(10))], 2),
            ["waves.0.hosts"]
        );
        assert_eq!(
            keys(
                &[wave(Some(&["web1"]), None), wave(Some(&["web1"]), None)],
                2
            ),
            ["waves.1.hosts"]
        );
        assert_eq!(keys(&[wave(None, Some(0))], 2), ["waves.0.percent"]);
        assert_eq!(
            keys(
                &[
                    wave(None, Some(100)),
                    wave(None, Some(50)),
                    wave(None, None)
                ],
                2
            ),
            ["waves.1.percent", "waves.2.hosts"]
        );
        let mut bad = wave(None, Some(50));
        bad.soak = Some("30".into());
        bad.max_fail = Some(101);
        bad.name = Some("can ary".into());
        assert_eq!(
            keys(&[bad], 2),
            ["waves.0.name", "waves.0.soak", "waves.0.max_fail"]
        );
    }

    #[test]
    fn issue14_a_wave_takes_the_hosts_of_its_groups_in_plan_order() {
        let tags = |t: &[&[&str]]| -> Vec<Vec<String>> {
            t.iter()
                .map(|g| g.iter().map(|s| s.to_string()).collect())
                .collect()
        };
        // web1 canary, web2..3 in "eu", web4..5 in "us": canary, eu, us.
        let groups = tags(&[&["canary", "eu"], &["eu"], &["eu"], &["us"], &["us"]]);
        let by = |g: &[&str]| RawWave {
            groups: Some(g.iter().map(|s| s.to_string()).collect()),
            ..wave(None, None)
        };
        let raw = [by(&["canary"]), by(&["eu"]), by(&["us"])];
        let cut: Vec<Vec<usize>> = plan(&raw, &names(5), &groups)
            .unwrap()
            .into_iter()
            .map(|w| w.hosts)
            .collect();
        assert_eq!(cut, vec![vec![0], vec![1, 2], vec![3, 4]]);
        // Groups mix with a share: the rest after the canary group.
        let raw = [by(&["canary"]), wave(None, Some(100))];
        let cut: Vec<Vec<usize>> = plan(&raw, &names(5), &groups)
            .unwrap()
            .into_iter()
            .map(|w| w.hosts)
            .collect();
        assert_eq!(cut, vec![vec![0], vec![1, 2, 3, 4]]);
        // An unknown group names the known ones; a drained group, and a
        // wave with two ways of choosing, are refused.
        let err = plan(&[by(&["asia"])], &names(5), &groups).unwrap_err();
        assert_eq!(err[0].0, "waves.0.groups");
        assert!(
            err[0].1.contains("\"canary\", \"eu\", \"us\""),
            "{}",
            err[0].1
        );
        let err = plan(&[by(&["eu"]), by(&["canary"])], &names(5), &groups).unwrap_err();
        assert_eq!(err[0].0, "waves.1.groups");
        let mut both = by(&["eu"]);
        both.percent = Some(10);
        let err = plan(&[both], &names(5), &groups).unwrap_err();
        assert_eq!(err[0].0, "waves.0.hosts");
    }
}
