//! The wire codec: a small frame header followed by a bincode body.
//!
//! A frame is `b"GOLV"`, the protocol version as a little-endian `u16`, a kind
//! byte, then the payload. The header is fixed forever so that two peers of
//! different protocol versions can always tell each other apart and say so,
//! naming both versions (pueue only warns here; we refuse).
//!
//! Kind `0` carries a bincode-encoded value of the frame's protocol version.
//! Kind `1` carries a plain UTF-8 error message, which any version can read:
//! it is how a peer answers a frame it cannot decode.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol::PROTOCOL_VERSION;

const MAGIC: &[u8; 4] = b"GOLV";
const HEADER_LEN: usize = 7;
const KIND_MESSAGE: u8 = 0;
const KIND_PLAIN_ERROR: u8 = 1;

/// Upper bound for any decoded value; the HTTP layer caps bodies earlier, this
/// guards allocations driven by length prefixes inside a small body.
const DECODE_LIMIT: usize = 16 * 1024 * 1024;

/// Content type used on every golive HTTP body.
pub const CONTENT_TYPE: &str = "application/x-golive";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("the body is not a golive message (no GOLV header); is this a golive endpoint?")]
    NotGolive,
    #[error(
        "protocol mismatch: the peer speaks golive protocol {theirs}, this side speaks {ours}; \
         upgrade the older of golivectl and golive-agent so both speak the same protocol"
    )]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("malformed golive message: {0}")]
    Malformed(String),
    /// The peer answered with a plain error frame.
    #[error("{0}")]
    Peer(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

fn header(kind: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.push(kind);
    out
}

/// Encodes a value as a framed message of this protocol version.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = header(KIND_MESSAGE);
    // Encoding our own types into a Vec cannot fail: no I/O, no limit on write.
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .expect("encoding a golive message into memory");
    out
}

/// Encodes a plain error frame that a peer of any version can read.
pub fn encode_plain_error(message: &str) -> Vec<u8> {
    let mut out = header(KIND_PLAIN_ERROR);
    out.extend_from_slice(message.as_bytes());
    out
}

/// Reads the protocol version of a frame without decoding its body.
pub fn peek_version(bytes: &[u8]) -> Result<u16, CodecError> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(CodecError::NotGolive);
    }
    Ok(u16::from_le_bytes([bytes[4], bytes[5]]))
}

/// Decodes a framed message, refusing other protocol versions by name.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let theirs = peek_version(bytes)?;
    let kind = bytes[6];
    let payload = &bytes[HEADER_LEN..];
    if kind == KIND_PLAIN_ERROR {
        return Err(CodecError::Peer(
            String::from_utf8_lossy(payload).into_owned(),
        ));
    }
    if theirs != PROTOCOL_VERSION {
        return Err(CodecError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    if kind != KIND_MESSAGE {
        return Err(CodecError::Malformed(format!("unknown frame kind {kind}")));
    }
    let (value, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes after the message",
            payload.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{HelloRequest, Request};

    #[test]
    fn round_trip() {
        let req = Request::Hello(HelloRequest {
            client_version: "1.2.3".into(),
        });
        let bytes = encode(&req);
        assert_eq!(decode::<Request>(&bytes).unwrap(), req);
    }

    #[test]
    fn other_version_is_named() {
        let mut bytes = encode(&Request::Hello(HelloRequest {
            client_version: "x".into(),
        }));
        bytes[4] = 99;
        bytes[5] = 0;
        let err = decode::<Request>(&bytes).unwrap_err();
        assert_eq!(
            err,
            CodecError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 99
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("protocol 99") && text.contains(&format!("speaks {PROTOCOL_VERSION}"))
        );
    }

    #[test]
    fn garbage_and_trailing_bytes_are_refused() {
        assert_eq!(
            decode::<Request>(b"hello").unwrap_err(),
            CodecError::NotGolive
        );
        let mut bytes = encode(&Request::Hello(HelloRequest {
            client_version: "x".into(),
        }));
        bytes.push(0);
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(CodecError::Malformed(_))
        ));
        let mut header_only = header(KIND_MESSAGE);
        header_only.extend_from_slice(&[0xff; 3]);
        assert!(matches!(
            decode::<Request>(&header_only),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn plain_error_is_readable_across_versions() {
        let mut bytes = encode_plain_error("nope");
        bytes[4] = 42;
        assert_eq!(
            decode::<Request>(&bytes).unwrap_err(),
            CodecError::Peer("nope".into())
        );
    }
}
