//! The version handshake.
//!
//! The first frame a client sends on any stream is a hello message (a struct whose first field
//! is `protocol_version`), so its first bytes are the sender's [`PROTOCOL_VERSION`] as a bincode
//! varint whatever else the message holds. A peer reads that number with [`peek_version`]
//! before decoding the rest; on a mismatch it answers [`RejectMsg`] with
//! [`RejectReason::VersionMismatch`] naming both versions, then closes. The layout of that
//! prefix and of `RejectMsg` is frozen across versions.

use crate::PROTOCOL_VERSION;
use crate::codec::{self, CodecError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a peer refused a hello or a request. Sent before closing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectMsg {
    /// The reason, for programs.
    pub reason: RejectReason,
    /// The reason, for people.
    pub detail: String,
}

/// Machine-readable reasons for a refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The peers speak different protocol versions.
    VersionMismatch {
        /// The version of the side that refused.
        server: u32,
        /// The version the client announced.
        client: u32,
    },
    /// A message could not be decoded or broke a rule of the protocol.
    Malformed,
    /// A ticket was refused (forged, expired, wrong kind or shard, replayed).
    BadTicket,
    /// The player name is empty, too long or not printable.
    BadName,
    /// The service cannot take the request now; try again after the given delay.
    Unavailable {
        /// Suggested delay before retrying, milliseconds.
        retry_after_ms: u32,
    },
    /// The server is full.
    Full,
}

impl fmt::Display for RejectMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.reason, self.detail)
    }
}

impl RejectMsg {
    /// The refusal for a client of another protocol version.
    pub fn version_mismatch(client: u32) -> Self {
        Self {
            reason: RejectReason::VersionMismatch {
                server: PROTOCOL_VERSION,
                client,
            },
            detail: format!(
                "protocol version mismatch: this server speaks {PROTOCOL_VERSION}, the client speaks {client}"
            ),
        }
    }
}

/// Why a hello was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The hello does not start with a version number.
    #[error("hello does not start with a protocol version: {0}")]
    NoVersion(CodecError),
    /// The client speaks another version.
    #[error("protocol version mismatch: this side speaks {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u32,
        /// The peer's version.
        theirs: u32,
    },
}

/// Reads the protocol version at the start of a hello frame's payload.
pub fn peek_version(payload: &[u8]) -> Result<u32, HandshakeError> {
    codec::decode_prefix::<u32>(payload, codec::MIN_DECODE_LIMIT)
        .map(|(v, _)| v)
        .map_err(HandshakeError::NoVersion)
}

/// Checks that a hello frame's payload starts with our [`PROTOCOL_VERSION`].
pub fn check_version(payload: &[u8]) -> Result<(), HandshakeError> {
    let theirs = peek_version(payload)?;
    if theirs != PROTOCOL_VERSION {
        return Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lobby::LobbyHelloMsg;

    #[test]
    fn version_is_read_from_any_hello() {
        let hello = LobbyHelloMsg {
            protocol_version: 77,
            name: "ann".into(),
            resume: None,
        };
        let bytes = codec::encode(&hello).expect("encode");
        assert_eq!(peek_version(&bytes).expect("version"), 77);
        let err = check_version(&bytes).expect_err("mismatch");
        assert!(
            matches!(
                err,
                HandshakeError::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: 77
                }
            ),
            "{err}"
        );
        assert!(peek_version(&[]).is_err());
        let reject = RejectMsg::version_mismatch(77);
        assert!(
            reject.detail.contains("77") && reject.detail.contains(&PROTOCOL_VERSION.to_string())
        );
    }
}
