//! The transport seam (issue 14, part 8): what the controller needs of a
//! way to one agent — call a request, upload an artifact with progress, a
//! session of kept-alive calls — as the [`Transport`] trait, and [`Link`],
//! the handle the plan's hosts, the sequencer and the commands use.
//!
//! The plan is data: each host's name, address, server name and ssh route.
//! A [`Connector`] makes a host's [`Link`] from them; [`TlsConnector`]
//! makes [`AgentClient`]s (mutual TLS over TCP, or over the system ssh),
//! which connect at their first call, not before. A later transport (SSH
//! without an agent port, say) is another `Transport`; the sequencer's unit
//! tests answer through a scripted one.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use golive_shared::protocol::{ArtifactInfo, Request, Response};

use crate::client::{AgentClient, ClientError, UploadProgress};

/// A transport call's answer, boxed so that the trait stays object-safe.
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send + 'a>>;

/// A way to one agent.
pub trait Transport: Send + Sync {
    /// One request and its answer; an agent's refusal is
    /// `Err(ClientError::Agent)`, with the agent's `ErrorCode`.
    fn call<'a>(&'a self, req: &'a Request) -> Answer<'a, Response>;

    /// Streams the file at `path` (`size` bytes, sha256 `sha256`) into the
    /// agent's content-addressed artifact store, telling `progress` the
    /// bytes sent so far.
    fn upload<'a>(
        &'a self,
        path: &'a Path,
        sha256: &'a str,
        size: u64,
        progress: Option<UploadProgress>,
    ) -> Answer<'a, ArtifactInfo>;

    /// Calls that share one kept-alive connection (where the transport has
    /// connections).
    fn session(&self) -> Box<dyn SessionCalls>;
}

/// The calls of a [`Session`].
pub trait SessionCalls: Send {
    fn call<'a>(&'a mut self, req: &'a Request) -> Answer<'a, Response>;
}

impl Transport for AgentClient {
    fn call<'a>(&'a self, req: &'a Request) -> Answer<'a, Response> {
        Box::pin(AgentClient::call(self, req))
    }

    fn upload<'a>(
        &'a self,
        path: &'a Path,
        sha256: &'a str,
        size: u64,
        progress: Option<UploadProgress>,
    ) -> Answer<'a, ArtifactInfo> {
        Box::pin(self.upload_with(path, sha256, size, progress))
    }

    fn session(&self) -> Box<dyn SessionCalls> {
        Box::new(AgentClient::session(self))
    }
}

impl SessionCalls for crate::client::Session {
    fn call<'a>(&'a mut self, req: &'a Request) -> Answer<'a, Response> {
        Box::pin(crate::client::Session::call(self, req))
    }
}

/// One agent as the controller reaches it: its name and address (for
/// messages and the record) and its transport. Cheap to clone; the clones
/// share the transport (and its kept-alive connections).
#[derive(Clone)]
pub struct Link {
    pub host: String,
    /// `HOST:PORT` as the plan gives it (the record keeps it).
    pub addr: String,
    /// The address as messages show it (with the ssh route, if any).
    shown: String,
    transport: Arc<dyn Transport>,
}

impl Link {
    pub fn new(host: &str, addr: &str, shown: &str, transport: Arc<dyn Transport>) -> Link {
        Link {
            host: host.into(),
            addr: addr.into(),
            shown: shown.into(),
            transport,
        }
    }

    /// One framed request and its answer; an agent refusal is `Err(Agent)`.
    pub async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        self.transport.call(req).await
    }

    /// Streams a file to the agent's content-addressed artifact store.
    pub async fn upload(
        &self,
        path: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<ArtifactInfo, ClientError> {
        self.transport.upload(path, sha256, size, None).await
    }

    /// [`Link::upload`], telling `progress` the bytes sent so far.
    pub async fn upload_with(
        &self,
        path: &Path,
        sha256: &str,
        size: u64,
        progress: Option<UploadProgress>,
    ) -> Result<ArtifactInfo, ClientError> {
        self.transport.upload(path, sha256, size, progress).await
    }

    /// Several calls on one kept-alive connection (`golivectl probe` asks
    /// for the catalog, then runs the probes).
    pub fn session(&self) -> Session {
        Session {
            link: self.clone(),
            calls: self.transport.session(),
        }
    }

    /// The address, and the ssh route when there is one, for messages.
    pub fn shown_addr(&self) -> String {
        self.shown.clone()
    }

    /// An answer of the wrong kind, as an error naming the host.
    pub fn unexpected(&self, resp: &Response) -> ClientError {
        ClientError::Transport {
            host: self.host.clone(),
            addr: self.shown.clone(),
            detail: format!("unexpected answer {resp:?}"),
        }
    }
}

/// Calls to one agent on one kept-alive connection.
pub struct Session {
    link: Link,
    calls: Box<dyn SessionCalls>,
}

impl Session {
    pub fn client(&self) -> &Link {
        &self.link
    }

    pub async fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.calls.call(req).await
    }
}

/// Where a plan's host is: what a [`Connector`] makes its [`Link`] from.
pub struct Address<'a> {
    pub name: &'a str,
    pub address: &'a str,
    /// Checked against the agent certificate's SANs; by default the host
    /// part of `address`.
    pub server_name: Option<&'a str>,
    /// Through the system ssh (issue 15).
    pub ssh: Option<Arc<crate::ssh::Route>>,
}

/// Makes a host's [`Link`] from its address. Nothing is connected here: a
/// transport connects at its first call.
pub trait Connector {
    /// `Err`: the address cannot be used (a server name that is not one).
    fn connect(&self, at: Address<'_>) -> Result<Link, String>;
}

/// The real connector: mutual TLS 1.3 with the plan's certificate, over
/// TCP or through ssh.
pub struct TlsConnector {
    pub tls: Arc<rustls::ClientConfig>,
}

impl Connector for TlsConnector {
    fn connect(&self, at: Address<'_>) -> Result<Link, String> {
        let client = AgentClient::new(at.name, at.address, at.server_name, Arc::clone(&self.tls))?;
        let client = match at.ssh {
            Some(route) => client.via_ssh(route),
            None => client,
        };
        Ok(Link::new(
            at.name,
            at.address,
            &client.shown_addr(),
            Arc::new(client),
        ))
    }
}
