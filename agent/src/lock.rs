//! App locks as leases: one deployment at a time per app.
//!
//! A lease has a deadline; the controller renews it while it works. A lease
//! past its deadline no longer blocks anyone, so a controller that died never
//! leaves an app locked for good. Breaking a live lock is an explicit,
//! audited operation (`golivectl unlock`).

use std::io::Read;

use golive_shared::names;
use golive_shared::protocol::{
    ErrorBody, ErrorCode, LockInfo, LockRequest, LockResponse, now_millis,
};
use golive_shared::timefmt::utc;

use crate::state::{Agent, internal};

/// Longest lease a controller may ask for; it renews to keep a lock longer.
const MAX_TTL_SECS: u32 = 3600;

pub fn handle(agent: &Agent, holder: &str, req: LockRequest) -> Result<LockResponse, ErrorBody> {
    let app = req.app().to_string();
    names::check_app_name(&app).map_err(|e| ErrorBody::new(ErrorCode::BadRequest, e))?;
    agent.known_app(&app)?;
    let now = now_millis();
    let held = agent.journal.lock(&app).map_err(internal)?;
    let live = held.as_ref().filter(|(info, _)| info.expires_at > now);
    match req {
        LockRequest::Acquire {
            deployment,
            ttl_secs,
            ..
        } => {
            let ttl = check_ttl(ttl_secs)?;
            if let Some((info, token)) = live {
                // Re-acquiring for the same deployment (a resumed controller)
                // renews instead of refusing.
                if info.deployment != deployment {
                    return Err(locked(agent, info));
                }
                let info = LockInfo {
                    expires_at: now + ttl,
                    ..info.clone()
                };
                agent.journal.put_lock(&info, token).map_err(internal)?;
                return Ok(LockResponse::Held {
                    token: token.clone(),
                    info,
                });
            }
            let info = LockInfo {
                app,
                deployment,
                holder: holder.to_string(),
                since: now,
                expires_at: now + ttl,
            };
            let token = new_token().map_err(internal)?;
            agent.journal.put_lock(&info, &token).map_err(internal)?;
            Ok(LockResponse::Held { token, info })
        }
        LockRequest::Renew {
            token, ttl_secs, ..
        } => {
            let ttl = check_ttl(ttl_secs)?;
            match held {
                Some((info, held_token)) if held_token == token => {
                    // Renewing an expired lease is fine as long as nobody
                    // took the lock in between (the token still matches).
                    let info = LockInfo {
                        expires_at: now + ttl,
                        ..info
                    };
                    agent.journal.put_lock(&info, &token).map_err(internal)?;
                    Ok(LockResponse::Held { token, info })
                }
                Some((info, _)) => Err(locked(agent, &info)),
                None => Err(ErrorBody::new(
                    ErrorCode::Locked,
                    format!(
                        "the lock on app {app} was released or broken; the deployment must stop"
                    ),
                )),
            }
        }
        LockRequest::Release { token, .. } => match held {
            Some((_, held_token)) if held_token == token => {
                agent.journal.delete_lock(&app).map_err(internal)?;
                Ok(LockResponse::Released)
            }
            Some((info, _)) => Err(locked(agent, &info)),
            None => Ok(LockResponse::Released),
        },
        LockRequest::Break { reason, .. } => {
            if reason.trim().is_empty() {
                return Err(ErrorBody::new(
                    ErrorCode::BadRequest,
                    "breaking a lock needs a reason (--reason TEXT); it is audited",
                ));
            }
            agent.journal.delete_lock(&app).map_err(internal)?;
            Ok(LockResponse::Broken {
                previous: held.map(|(info, _)| info),
            })
        }
    }
}

/// Refuses a mutating job on an app whose live lock the caller does not hold.
pub fn check_lease(agent: &Agent, app: &str, lease: Option<&str>) -> Result<(), ErrorBody> {
    let now = now_millis();
    match agent.journal.lock(app).map_err(internal)? {
        Some((info, token)) if info.expires_at > now && lease != Some(token.as_str()) => {
            Err(locked(agent, &info))
        }
        _ => Ok(()),
    }
}

fn check_ttl(ttl_secs: u32) -> Result<i64, ErrorBody> {
    if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("lock lease of {ttl_secs}s: use 1 to {MAX_TTL_SECS} seconds and renew"),
        ));
    }
    Ok(ttl_secs as i64 * 1000)
}

fn locked(agent: &Agent, info: &LockInfo) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Locked,
        format!(
            "app {} on agent {} is locked by deployment {}, started by {} at {} (lease expires {}); \
             wait for it to finish, or break the lock with `golivectl unlock PLAN --reason TEXT`",
            info.app,
            agent.config().agent.name,
            info.deployment,
            info.holder,
            utc(info.since),
            utc(info.expires_at)
        ),
    )
}

/// 128 random bits from the kernel, hex.
fn new_token() -> std::io::Result<String> {
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}
