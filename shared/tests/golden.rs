//! Golden encoded fixtures: the bytes of representative messages, checked in
//! under `tests/data/`. A failure here means the wire format changed: either
//! revert the change, or bump `PROTOCOL_VERSION` and regenerate the fixtures
//! with `GOLIVE_BLESS=1 cargo test -p golive-shared --test golden`.

use std::path::PathBuf;

use golive_shared::codec;
use golive_shared::protocol::*;

fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let job = JobInfo {
        id: 7,
        idempotency_key: "d1:web1:stage".into(),
        spec: JobSpec::Stage(StageRelease {
            app: "shop".into(),
            release: "v2".into(),
            artifact_sha256: "ab".repeat(32),
        }),
        state: JobState::Succeeded,
        submitted_by: "alice".into(),
        submitted_at: 1_795_412_882_000,
        finished_at: Some(1_795_412_883_000),
        result: Some(JobResult::Staged {
            release: "v2".into(),
            path: "/srv/shop/releases/v2".into(),
            files: 3,
            bytes: 1024,
            commit: None,
        }),
        error: None,
        deduplicated: false,
        error_code: None,
    };
    vec![
        (
            "request_hello.bin",
            codec::encode(&Request::Hello(HelloRequest {
                client_version: "0.1.0".into(),
            })),
        ),
        (
            "request_submit_rollback.bin",
            codec::encode(&Request::SubmitJob(SubmitJob {
                idempotency_key: "k".into(),
                lease: Some("00ff".into()),
                spec: JobSpec::Rollback(RollbackRelease {
                    app: "shop".into(),
                    to: None,
                    reason: "probe failed".into(),
                }),
            })),
        ),
        (
            "request_submit_host_rollback.bin",
            codec::encode(&Request::SubmitJob(SubmitJob {
                idempotency_key: "rollback:d1:web1".into(),
                lease: None,
                spec: JobSpec::HostRollback(HostRollback {
                    app: "shop".into(),
                    deployment: Some("d1".into()),
                    to: None,
                    reason: "watchdog: error rate above 5% for 2m".into(),
                    requested_by: RollbackRequester::Controller,
                    force: false,
                    restore: Some(RestorePolicy::Forbid),
                }),
            })),
        ),
        (
            "request_lock_acquire.bin",
            codec::encode(&Request::Lock(LockRequest::Acquire {
                app: "shop".into(),
                deployment: "d1".into(),
                ttl_secs: 120,
            })),
        ),
        (
            "response_job.bin",
            codec::encode(&Response::Job(job.clone())),
        ),
        (
            "response_events.bin",
            codec::encode(&Response::Events(JobEventsResponse {
                job,
                events: vec![
                    JobEvent {
                        seq: 1,
                        at: 5,
                        kind: EventKind::Log {
                            level: LogLevel::Info,
                            line: "stage started".into(),
                        },
                    },
                    JobEvent {
                        seq: 2,
                        at: 6,
                        kind: EventKind::Finished {
                            state: JobState::Succeeded,
                        },
                    },
                ],
            })),
        ),
        (
            "response_error_locked.bin",
            codec::encode(&Response::Error(ErrorBody::new(
                ErrorCode::Locked,
                "app shop is locked",
            ))),
        ),
        (
            "response_probes.bin",
            codec::encode(&Response::Probes(ProbeReport {
                app: "shop".into(),
                results: vec![ProbeResult {
                    name: "health".into(),
                    kind: "http".into(),
                    severity: Severity::Critical,
                    status: ProbeStatus::Fail,
                    value: Some("status 500".into()),
                    threshold: Some("status in [200]".into()),
                    duration_ms: 3,
                    message: "GET answered 500".into(),
                }],
            })),
        ),
        (
            "plain_error.bin",
            codec::encode_plain_error("protocol mismatch"),
        ),
        (
            "response_job_activated.bin",
            codec::encode(&Response::Job(JobInfo {
                spec: JobSpec::Activate(ActivateRelease {
                    app: "shop".into(),
                    release: "v2".into(),
                    rollback: RollbackPolicy::default(),
                }),
                result: Some(JobResult::Activated {
                    release: "v2".into(),
                    previous: Some("v1".into()),
                    availability: Some(Availability {
                        probe: "health".into(),
                        samples: 40,
                        failed: 11,
                        unavailable_ms: 1_100,
                        longest_ms: 1_100,
                        answering_at_start: true,
                        recovered: true,
                        in_maintenance: false,
                    }),
                }),
                ..job_activate_base()
            })),
        ),
        (
            "request_arm_watchdog.bin",
            codec::encode(&Request::ArmWatchdog(ArmWatchdog {
                app: "shop".into(),
                deployment: "20261202T101112Z-ab12cd".into(),
                spec: WatchdogSpec {
                    window_secs: 1800,
                    interval_ms: 10_000,
                    triggers: vec![Trigger {
                        name: "error-rate".into(),
                        probe: "access".into(),
                        condition: Condition::ErrorRateAbove { per_mille: 50 },
                        for_secs: 120,
                    }],
                    error_limit: 3,
                    confirm_within_secs: Some(900),
                    restore_allowed: false,
                },
            })),
        ),
    ]
}

/// The frame of an activate job (its spec and result are set by the fixture).
fn job_activate_base() -> JobInfo {
    JobInfo {
        id: 8,
        idempotency_key: "d1:web1:activate".into(),
        spec: JobSpec::Activate(ActivateRelease {
            app: "shop".into(),
            release: "v2".into(),
            rollback: RollbackPolicy::default(),
        }),
        state: JobState::Succeeded,
        submitted_by: "alice".into(),
        submitted_at: 1_795_412_884_000,
        finished_at: Some(1_795_412_886_000),
        result: None,
        error: None,
        deduplicated: false,
        error_code: None,
    }
}

#[test]
fn encodings_match_the_golden_fixtures() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let bless = std::env::var_os("GOLIVE_BLESS").is_some();
    let mut changed = Vec::new();
    for (name, bytes) in fixtures() {
        let path = dir.join(name);
        if bless {
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let golden = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with GOLIVE_BLESS=1 once", path.display()));
        if golden != bytes {
            changed.push(name);
        }
    }
    assert!(
        changed.is_empty(),
        "the wire encoding changed for {changed:?}: revert, or bump PROTOCOL_VERSION and re-bless"
    );
}

#[test]
fn golden_fixtures_decode() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    assert!(matches!(
        codec::decode::<Request>(&read("request_hello.bin")).unwrap(),
        Request::Hello(_)
    ));
    match codec::decode::<Response>(&read("response_job.bin")).unwrap() {
        Response::Job(j) => assert_eq!(j.idempotency_key, "d1:web1:stage"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        codec::decode::<Response>(&read("plain_error.bin")).unwrap_err(),
        codec::CodecError::Peer("protocol mismatch".into())
    );
    assert_eq!(
        codec::peek_version(&read("request_hello.bin")).unwrap(),
        PROTOCOL_VERSION
    );
}
