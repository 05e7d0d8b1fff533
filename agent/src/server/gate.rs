//! Admission of connections, before and after the TLS handshake (issue 11).
//!
//! A stranger must not be able to lock operators out: before this, a slot
//! was taken before the handshake and held through its timeout, and a few
//! hundred idle sockets from one peer made every `golivectl status` fail.
//! Now there are two pools:
//! - **handshakes in flight**, bounded globally and per source address (an
//!   IPv6 source by its /64); past either bound the accept loop closes the
//!   new socket at once (RST), so it never waits and the backlog never fills;
//! - **authenticated connections**, bounded globally and per certificate,
//!   taken only once the handshake proved who the peer is.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use golive_shared::config::Limits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The per-source key: an IPv4 address, or an IPv6 /64 (one host's usual
/// share; v4-mapped addresses count as their IPv4 address).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Counts per key, with the entry removed when it drops to zero (the map
/// holds only what is in flight).
struct Counts<K>(Mutex<HashMap<K, u32>>);

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new() -> Counts<K> {
        Counts(Mutex::new(HashMap::new()))
    }

    fn try_take(&self, key: &K, max: u32) -> bool {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, key: &K) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
    }
}

pub struct Gate {
    handshakes: Arc<Semaphore>,
    per_source_max: u32,
    per_source: Arc<Counts<IpAddr>>,
    connections: Arc<Semaphore>,
    max_connections: u32,
    per_peer_max: u32,
    per_peer: Arc<Counts<String>>,
}

/// Why a connection was closed before a request.
pub const SHED_HANDSHAKES: &str = "shed: limits.max_handshakes handshakes are in flight";
pub const SHED_SOURCE: &str =
    "shed: limits.max_handshakes_per_source handshakes are in flight from this address";
pub const SHED_CONNECTIONS: &str = "shed: limits.max_connections authenticated connections stayed open past the handshake deadline";
pub const SHED_PEER: &str =
    "shed: this certificate holds limits.max_connections_per_peer connections already";

/// One handshake's place; dropping it frees the place.
pub struct HandshakeSlot {
    _permit: OwnedSemaphorePermit,
    source: IpAddr,
    counts: Arc<Counts<IpAddr>>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.counts.give_back(&self.source);
    }
}

/// One authenticated connection's place.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    peer: String,
    counts: Arc<Counts<String>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counts.give_back(&self.peer);
    }
}

impl Gate {
    pub fn new(limits: &Limits) -> Gate {
        Gate {
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes as usize)),
            per_source_max: limits.max_handshakes_per_source.min(limits.max_handshakes),
            per_source: Arc::new(Counts::new()),
            connections: Arc::new(Semaphore::new(limits.max_connections as usize)),
            max_connections: limits.max_connections,
            per_peer_max: limits.max_connections_per_peer.min(limits.max_connections),
            per_peer: Arc::new(Counts::new()),
        }
    }

    /// A place for a handshake from `source` (a [`source_key`]), at once or
    /// not at all.
    pub fn handshake(&self, source: IpAddr) -> Result<HandshakeSlot, &'static str> {
        let permit = Arc::clone(&self.handshakes)
            .try_acquire_owned()
            .map_err(|_| SHED_HANDSHAKES)?;
        if !self.per_source.try_take(&source, self.per_source_max) {
            return Err(SHED_SOURCE);
        }
        Ok(HandshakeSlot {
            _permit: permit,
            source,
            counts: Arc::clone(&self.per_source),
        })
    }

    /// A place for an authenticated connection of the certificate with
    /// `fingerprint`; waits up to `wait` for a global place to free up.
    pub async fn connection(
        &self,
        fingerprint: &str,
        wait: Duration,
    ) -> Result<ConnectionSlot, &'static str> {
        if !self
            .per_peer
            .try_take(&fingerprint.to_string(), self.per_peer_max)
        {
            return Err(SHED_PEER);
        }
        let taken = tokio::time::timeout(wait, Arc::clone(&self.connections).acquire_owned()).await;
        match taken {
            Ok(Ok(permit)) => Ok(ConnectionSlot {
                _permit: permit,
                peer: fingerprint.to_string(),
                counts: Arc::clone(&self.per_peer),
            }),
            _ => {
                self.per_peer.give_back(&fingerprint.to_string());
                Err(SHED_CONNECTIONS)
            }
        }
    }

    /// Waits (up to `within`) until every authenticated connection ended.
    pub async fn drain(&self, within: Duration) {
        let _ =
            tokio::time::timeout(within, self.connections.acquire_many(self.max_connections)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(global: u32, per_source: u32) -> Limits {
        Limits {
            max_handshakes: global,
            max_handshakes_per_source: per_source,
            max_connections: 2,
            max_connections_per_peer: 1,
            ..Limits::default()
        }
    }

    #[test]
    fn issue11_handshakes_are_bounded_per_source_and_in_all() {
        let gate = Gate::new(&limits(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gate.handshake(a).unwrap();
        let _a2 = gate.handshake(a).unwrap();
        assert_eq!(gate.handshake(a).err(), Some(SHED_SOURCE));
        let _b1 = gate.handshake(b).unwrap();
        assert_eq!(gate.handshake(b).err(), Some(SHED_HANDSHAKES));
        drop(a1);
        assert!(gate.handshake(a).is_ok(), "a freed place is reused");
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let k = |s: &str| source_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::5"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::5"), k("2001:db8:1:3::5"));
        assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
    }

    #[tokio::test]
    async fn issue11_authenticated_connections_are_bounded_per_certificate() {
        let gate = Gate::new(&limits(3, 2));
        let wait = Duration::from_millis(100);
        let alice = gate.connection("alice", wait).await.unwrap();
        assert_eq!(gate.connection("alice", wait).await.err(), Some(SHED_PEER));
        let _bob = gate.connection("bob", wait).await.unwrap();
        assert_eq!(
            gate.connection("carol", wait).await.err(),
            Some(SHED_CONNECTIONS),
            "two connections in all"
        );
        drop(alice);
        assert!(gate.connection("carol", wait).await.is_ok());
    }
}
