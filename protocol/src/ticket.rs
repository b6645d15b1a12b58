//! Signed tickets: the lobby grants a join ticket, a shard hands a handoff ticket to a client
//! that crosses into a neighbour, and a resume ticket lets a client come back after a failure.
//!
//! A ticket is its [`TicketClaims`] plus an HMAC-SHA256 tag over their encoding, made with a
//! key shared by the lobby and the shards. Verification is local (no shared-state round trip)
//! and constant-time; each way a ticket can be wrong has its own [`TicketError`]. Single use is
//! enforced by whoever verifies it, by remembering the nonce until the expiry.

use crate::codec;
use crate::ids::{PlayerId, ShardId, ZoneId};
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Length of a ticket key in bytes.
pub const TICKET_KEY_LEN: usize = 32;

/// What a ticket lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TicketKind {
    /// Enter the named shard after routing by the lobby.
    Join,
    /// Move to the named shard after crossing a zone border.
    Handoff,
    /// Come back through the lobby after losing the connection.
    Resume,
}

impl fmt::Display for TicketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Join => "join",
            Self::Handoff => "handoff",
            Self::Resume => "resume",
        })
    }
}

/// What a ticket says. Signed whole.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TicketClaims {
    /// What the ticket is for.
    pub kind: TicketKind,
    /// Who holds it.
    pub player: PlayerId,
    /// The shard it admits to (for a resume ticket: the shard the player was on).
    pub shard: ShardId,
    /// The zone of that shard.
    pub zone: ZoneId,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// Random, unique per ticket: the verifier refuses a nonce it has seen.
    pub nonce: u64,
}

/// A ticket as it travels: the claims and their tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedTicket {
    /// The claims, readable by anyone; trusted only after [`TicketKey::verify`].
    pub claims: TicketClaims,
    /// HMAC-SHA256 of the encoded claims.
    pub tag: [u8; 32],
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// The tag does not match the claims: forged or altered.
    #[error("ticket signature is invalid (forged or altered)")]
    BadSignature,
    /// A ticket of another kind was presented.
    #[error("{got} ticket presented where a {expected} ticket is required")]
    WrongKind {
        /// The kind required here.
        expected: TicketKind,
        /// The kind presented.
        got: TicketKind,
    },
    /// The ticket admits to another shard.
    #[error("ticket is for shard {got}, this is shard {expected}")]
    WrongShard {
        /// This shard.
        expected: ShardId,
        /// The shard named in the ticket.
        got: ShardId,
    },
    /// The ticket's expiry has passed.
    #[error("ticket expired at {expired_at_ms} ms, now is {now_ms} ms")]
    Expired {
        /// Its expiry.
        expired_at_ms: u64,
        /// The verifier's clock.
        now_ms: u64,
    },
    /// The ticket was used before.
    #[error("ticket nonce {nonce:#x} was already used")]
    Replayed {
        /// The nonce seen twice.
        nonce: u64,
    },
    /// The claims could not be encoded for verification (cannot happen for decoded claims).
    #[error("ticket claims cannot be encoded: {0}")]
    Encoding(String),
}

/// Why a ticket key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketKeyError {
    /// The key is not 64 hexadecimal characters.
    #[error(
        "ticket key must be {expected} hexadecimal characters ({TICKET_KEY_LEN} bytes); got {got} characters"
    )]
    BadLength {
        /// Characters required.
        expected: usize,
        /// Characters given.
        got: usize,
    },
    /// The key holds a character that is not hexadecimal.
    #[error("ticket key has a non-hexadecimal character at position {position}")]
    NotHex {
        /// Zero-based position of the first bad character.
        position: usize,
    },
}

/// The shared secret that signs and verifies tickets.
#[derive(Clone)]
pub struct TicketKey(hmac::Key);

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKey(<redacted>)")
    }
}

impl TicketKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: &[u8; TICKET_KEY_LEN]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// A key from 64 hexadecimal characters (the form it takes in config and environment).
    pub fn from_hex(hex: &str) -> Result<Self, TicketKeyError> {
        Ok(Self::from_bytes(&parse_hex_32(hex)?))
    }

    /// A fresh random key (for `meridian dev`, where every role lives in one process).
    pub fn generate() -> Self {
        Self::from_bytes(&random_bytes())
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: TicketClaims) -> Result<SignedTicket, TicketError> {
        let body = codec::encode(&claims).map_err(|e| TicketError::Encoding(e.to_string()))?;
        let tag = hmac::sign(&self.0, &body);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Ok(SignedTicket { claims, tag: out })
    }

    /// Checks the signature (constant time), then the kind, the shard (when `shard` is given)
    /// and the expiry against `now_ms`. Returns the trusted claims.
    pub fn verify<'t>(
        &self,
        ticket: &'t SignedTicket,
        kind: TicketKind,
        shard: Option<&ShardId>,
        now_ms: u64,
    ) -> Result<&'t TicketClaims, TicketError> {
        let body =
            codec::encode(&ticket.claims).map_err(|e| TicketError::Encoding(e.to_string()))?;
        hmac::verify(&self.0, &body, &ticket.tag).map_err(|_| TicketError::BadSignature)?;
        let claims = &ticket.claims;
        if claims.kind != kind {
            return Err(TicketError::WrongKind {
                expected: kind,
                got: claims.kind,
            });
        }
        if let Some(expected) = shard
            && *expected != claims.shard
        {
            return Err(TicketError::WrongShard {
                expected: expected.clone(),
                got: claims.shard.clone(),
            });
        }
        if now_ms >= claims.expires_at_ms {
            return Err(TicketError::Expired {
                expired_at_ms: claims.expires_at_ms,
                now_ms,
            });
        }
        Ok(claims)
    }
}

/// 64 hexadecimal characters to 32 bytes (ticket keys, certificate fingerprints).
pub fn parse_hex_32(hex: &str) -> Result<[u8; 32], TicketKeyError> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err(TicketKeyError::BadLength {
            expected: 64,
            got: hex.chars().count(),
        });
    }
    let mut out = [0u8; 32];
    let digits = hex.as_bytes();
    for (i, byte) in out.iter_mut().enumerate() {
        let nibble = |pos: usize| {
            (digits[pos] as char)
                .to_digit(16)
                .ok_or(TicketKeyError::NotHex { position: pos })
        };
        let hi = nibble(2 * i)?;
        let lo = nibble(2 * i + 1)?;
        *byte = u8::try_from(hi * 16 + lo).expect("invariant: two hex digits fit a byte");
    }
    Ok(out)
}

/// 32 bytes as 64 lowercase hexadecimal characters.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Random bytes from the operating system (for keys and nonces).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("invariant: the operating system random source is available");
    out
}

/// A random ticket nonce.
pub fn random_nonce() -> u64 {
    u64::from_le_bytes(random_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(kind: TicketKind) -> TicketClaims {
        TicketClaims {
            kind,
            player: PlayerId(7),
            shard: ShardId::new("s1").expect("name"),
            zone: ZoneId::new("west").expect("name"),
            expires_at_ms: 10_000,
            nonce: 99,
        }
    }

    fn key() -> TicketKey {
        TicketKey::from_bytes(&[5; 32])
    }

    #[test]
    fn valid_ticket_verifies() {
        let t = key().sign(claims(TicketKind::Join)).expect("sign");
        let s1 = ShardId::new("s1").expect("name");
        let c = key()
            .verify(&t, TicketKind::Join, Some(&s1), 9_999)
            .expect("valid");
        assert_eq!(c.player, PlayerId(7));
    }

    #[test]
    fn each_failure_has_its_error() {
        let k = key();
        let s1 = ShardId::new("s1").expect("name");
        let s2 = ShardId::new("s2").expect("name");
        let t = k.sign(claims(TicketKind::Join)).expect("sign");
        assert_eq!(
            k.verify(&t, TicketKind::Join, Some(&s1), 10_000),
            Err(TicketError::Expired {
                expired_at_ms: 10_000,
                now_ms: 10_000
            })
        );
        assert_eq!(
            k.verify(&t, TicketKind::Handoff, Some(&s1), 0),
            Err(TicketError::WrongKind {
                expected: TicketKind::Handoff,
                got: TicketKind::Join
            })
        );
        assert_eq!(
            k.verify(&t, TicketKind::Join, Some(&s2), 0),
            Err(TicketError::WrongShard {
                expected: s2.clone(),
                got: s1.clone()
            })
        );
        let mut tampered = t.clone();
        tampered.claims.player = PlayerId(8);
        assert_eq!(
            k.verify(&tampered, TicketKind::Join, Some(&s1), 0),
            Err(TicketError::BadSignature)
        );
        let mut bad_tag = t.clone();
        bad_tag.tag[0] ^= 1;
        assert_eq!(
            k.verify(&bad_tag, TicketKind::Join, Some(&s1), 0),
            Err(TicketError::BadSignature)
        );
        let other = TicketKey::from_bytes(&[6; 32]);
        assert_eq!(
            other.verify(&t, TicketKind::Join, Some(&s1), 0),
            Err(TicketError::BadSignature)
        );
        // A forged ticket fails on its signature before anything else is looked at.
        let mut forged = t;
        forged.claims.kind = TicketKind::Resume;
        forged.claims.expires_at_ms = 0;
        assert_eq!(
            k.verify(&forged, TicketKind::Join, Some(&s2), 5),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn hex_keys() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        assert!(TicketKey::from_hex(hex).is_ok());
        assert_eq!(
            TicketKey::from_hex("abc").err(),
            Some(TicketKeyError::BadLength {
                expected: 64,
                got: 3
            })
        );
        let bad = format!("{}zz", &hex[..62]);
        assert_eq!(
            TicketKey::from_hex(&bad).err(),
            Some(TicketKeyError::NotHex { position: 62 })
        );
        assert_eq!(parse_hex_32(&to_hex(&[0xab; 32])), Ok([0xab; 32]));
    }
}
