//! `golivectl ca init` and `golivectl cert agent|operator|revoke`.

use golive_shared::identity::Role;
use serde_json::json;

use crate::cli::{CaCommand, CertCommand};
use crate::output::{Exit, Out, usage};
use crate::pki::{self, Issued, PkiError};

fn fail(e: PkiError) -> anyhow::Error {
    if e.is_usage_error() {
        usage(e.to_string())
    } else {
        e.into()
    }
}

fn report(out: Out, what: &str, issued: &Issued) {
    out.line(format!(
        "{what}: {} (key {}, serial {}, valid until {})",
        issued.cert_path.display(),
        issued.key_path.display(),
        issued.serial,
        issued.not_after
    ));
    out.event(&json!({
        "issued": what,
        "cert": issued.cert_path,
        "key": issued.key_path,
        "serial": issued.serial,
        "not_after": issued.not_after,
    }));
}

pub fn ca(out: Out, cmd: CaCommand) -> anyhow::Result<Exit> {
    match cmd {
        CaCommand::Init { dir, days } => {
            let issued = pki::ca_init(&dir, days).map_err(fail)?;
            report(out, "CA", &issued);
            out.line("Keep ca.key offline when you can; agents and operators only need ca.crt.");
            Ok(Exit::Done)
        }
    }
}

pub fn cert(out: Out, cmd: CertCommand) -> anyhow::Result<Exit> {
    match cmd {
        CertCommand::Agent {
            name,
            san,
            dir,
            days,
        } => {
            let issued = pki::issue_agent(&dir, &name, &san, days).map_err(fail)?;
            report(out, "agent certificate", &issued);
        }
        CertCommand::Operator {
            name,
            role,
            dir,
            days,
        } => {
            let role = match Role::parse(&role) {
                Some(r @ (Role::Viewer | Role::Operator | Role::Admin)) => r,
                _ => {
                    return Err(usage(format!(
                        "unknown role {role:?}: use viewer, operator or admin"
                    )));
                }
            };
            let issued = pki::issue_operator(&dir, &name, role, days).map_err(fail)?;
            report(out, &format!("{role} certificate"), &issued);
        }
        CertCommand::Revoke {
            cert_or_serial,
            dir,
        } => {
            let serial = pki::revoke(&dir, &cert_or_serial).map_err(fail)?;
            out.line(format!(
                "revoked serial {serial} in {}; agents whose tls.revoked points at a copy of it refuse it from their next request",
                dir.join(pki::REVOKED).display()
            ));
            out.event(&json!({ "revoked": serial }));
        }
    }
    Ok(Exit::Done)
}
