//! `golive-agent bridge` (issue 15): relays its standard input and output
//! to this host's own agent, for a controller that reaches the host through
//! an SSH server that refuses forwarding (`ssh_mode = "bridge"`).
//!
//! It is no way around mutual TLS: it connects only to the listen address
//! of the agent config it is given, and carries bytes; the controller's TLS
//! session runs through it to the agent, which authenticates and authorises
//! the client certificate as for any connection. The SSH account that runs
//! it could open that TCP port anyway.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use golive_shared::config::AgentConfig;

/// How long the agent may take to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Once the controller's side has closed, how long the agent's last bytes
/// may take before the bridge ends anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(
        "cannot connect to the agent at {addr} (agent.listen): {source}; is `golive-agent serve` \
         running with this config?"
    )]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Where the bridge connects: the config's listen address, with a wildcard
/// address (`0.0.0.0`, `::`) replaced by loopback.
pub fn target(config: &AgentConfig) -> SocketAddr {
    let mut addr = config.listen_addr();
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    addr
}

/// Relays `input` → the agent and the agent → `output` until the agent
/// closes the connection, or the input ends and the agent's answer has
/// drained (at most `DRAIN_TIMEOUT` later).
pub fn relay(
    addr: SocketAddr,
    mut input: impl Read + Send + 'static,
    mut output: impl Write,
) -> Result<(), BridgeError> {
    let socket = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|source| BridgeError::Connect { addr, source })?;
    let _ = socket.set_nodelay(true);
    let mut up = socket
        .try_clone()
        .map_err(|source| BridgeError::Connect { addr, source })?;
    // Upstream on a thread of its own: a blocking read of stdin cannot be
    // interrupted, and the process ends when the agent's side ends.
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if up.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = up.shutdown(Shutdown::Write);
        let _ = up.set_read_timeout(Some(DRAIN_TIMEOUT));
    });
    let mut down = socket;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match down.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => {
                if output.write_all(&buf[..n]).is_err() || output.flush().is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::net::TcpListener;

    #[test]
    fn issue15_the_bridge_relays_both_ways_and_ends_with_the_agent() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"answer to ").unwrap();
            s.write_all(&got).unwrap();
        });
        let mut out = Vec::new();
        relay(addr, Cursor::new(b"hello".to_vec()), &mut out).unwrap();
        server.join().unwrap();
        assert_eq!(out, b"answer to hello");
    }

    #[test]
    fn issue15_no_agent_is_a_clear_error() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = relay(addr, Cursor::new(Vec::new()), Vec::new()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("cannot connect to the agent at {addr}"))
                && text.contains("golive-agent serve"),
            "{text}"
        );
    }
}
