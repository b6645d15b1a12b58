//! `meridian client --shard`: straight to a shard with a join ticket the client mints itself
//! with the shard's ticket key. Development only, until the lobby exists (which then issues the
//! tickets). Pure: the clock and the randomness come in as arguments; `main` runs the result.

use meridian_client::config::{ClientConfig, ConfigError, parse_cert_sha256};
use meridian_client::demo::DemoOptions;
use meridian_protocol::PlayerId;
use meridian_protocol::quic::QuicConfig;
use meridian_protocol::ticket::{
    SignedTicket, TicketClaims, TicketError, TicketKey, TicketKeyError, TicketKind,
};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a minted join ticket is valid: the client uses it at once.
pub const JOIN_TICKET_TTL_MS: u64 = 30_000;

/// Why a direct-to-shard client could not be set up. After `ClientConfig::validate` and the
/// mode checks of `main`, only a ticket that cannot be signed is expected here.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// The configuration has no `--shard`.
    #[error("no --shard to connect to")]
    NoShard,
    /// The configuration has no `--ticket-key`.
    #[error("--shard needs --ticket-key, the key shared with the shard")]
    NoTicketKey,
    /// The configuration has no `--cert-sha256`.
    #[error("--shard needs --cert-sha256, the shard's certificate fingerprint")]
    NoPin,
    /// A field was refused (certificate pin, shard id, zone).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ticket key is not 64 hexadecimal characters (its value is never shown).
    #[error("invalid ticket key (--ticket-key / MERIDIAN_TICKET_KEY): {0}")]
    TicketKey(#[from] TicketKeyError),
    /// The join ticket could not be signed.
    #[error("cannot sign the join ticket: {0}")]
    Sign(#[from] TicketError),
}

/// The randomness of one join ticket: who the player is, and the ticket's single-use nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TicketDraw {
    /// The player the ticket admits (a fresh identity per run, until the lobby assigns them).
    pub player: PlayerId,
    /// The ticket's nonce.
    pub nonce: u64,
}

impl TicketDraw {
    /// Fresh random values from the operating system.
    pub fn random() -> Self {
        use meridian_protocol::ticket::random_nonce;
        Self {
            player: PlayerId(random_nonce()),
            nonce: random_nonce(),
        }
    }
}

/// What `meridian_client::demo::run` needs to play on `config.shard`: the pin and a join
/// ticket for `config.shard_id` / `config.zone`, signed with `config.ticket_key`, valid for
/// [`JOIN_TICKET_TTL_MS`] from `now_ms` (milliseconds since the Unix epoch).
pub fn direct_options(
    config: &ClientConfig,
    now_ms: u64,
    draw: TicketDraw,
) -> Result<DemoOptions, DirectError> {
    let shard: SocketAddr = config.shard.ok_or(DirectError::NoShard)?;
    let key = TicketKey::from_hex(
        config
            .ticket_key
            .as_deref()
            .ok_or(DirectError::NoTicketKey)?,
    )?;
    let cert_sha256 = parse_cert_sha256(config.cert_sha256.as_deref().ok_or(DirectError::NoPin)?)?;
    let ticket: SignedTicket = key.sign(TicketClaims {
        kind: TicketKind::Join,
        player: draw.player,
        shard: config.shard_id()?,
        zone: config.zone_id()?,
        expires_at_ms: now_ms.saturating_add(JOIN_TICKET_TTL_MS),
        nonce: draw.nonce,
    })?;
    Ok(DemoOptions {
        shard,
        cert_sha256,
        ticket,
        duration: config.duration_s.map(Duration::from_secs),
        quic: QuicConfig::default(),
        via_lobby: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_protocol::{ShardId, ZoneId};

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const PIN: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    const NOW_MS: u64 = 1_700_000_000_000;
    const DRAW: TicketDraw = TicketDraw {
        player: PlayerId(42),
        nonce: 7,
    };

    fn config() -> ClientConfig {
        ClientConfig {
            shard: Some("127.0.0.1:7000".parse().expect("literal")),
            cert_sha256: Some(PIN.into()),
            ticket_key: Some(KEY.into()),
            shard_id: "eu-1".into(),
            zone: "west".into(),
            duration_s: Some(3),
            ..ClientConfig::default()
        }
    }

    #[test]
    fn the_ticket_admits_to_the_named_shard_for_thirty_seconds() {
        let cfg = config();
        cfg.validate().expect("valid config");
        let opts = direct_options(&cfg, NOW_MS, DRAW).expect("options");
        assert_eq!(opts.shard, cfg.shard.expect("set"));
        assert_eq!(opts.cert_sha256, parse_cert_sha256(PIN).expect("pin"));
        assert_eq!(opts.duration, Some(Duration::from_secs(3)));
        let key = TicketKey::from_hex(KEY).expect("key");
        let shard = ShardId::new("eu-1").expect("name");
        let claims = key
            .verify(&opts.ticket, TicketKind::Join, Some(&shard), NOW_MS)
            .expect("the shard accepts it");
        assert_eq!(
            claims,
            &TicketClaims {
                kind: TicketKind::Join,
                player: PlayerId(42),
                shard: shard.clone(),
                zone: ZoneId::new("west").expect("name"),
                expires_at_ms: NOW_MS + 30_000,
                nonce: 7,
            }
        );
        let later = NOW_MS + JOIN_TICKET_TTL_MS;
        assert!(matches!(
            key.verify(&opts.ticket, TicketKind::Join, Some(&shard), later),
            Err(TicketError::Expired { .. })
        ));
    }

    #[test]
    fn another_key_or_shard_refuses_it() {
        let opts = direct_options(&config(), NOW_MS, DRAW).expect("options");
        let other = TicketKey::from_hex(PIN).expect("key");
        assert_eq!(
            other.verify(&opts.ticket, TicketKind::Join, None, NOW_MS),
            Err(TicketError::BadSignature)
        );
        let key = TicketKey::from_hex(KEY).expect("key");
        let elsewhere = ShardId::new("shard-1").expect("name");
        assert!(matches!(
            key.verify(&opts.ticket, TicketKind::Join, Some(&elsewhere), NOW_MS),
            Err(TicketError::WrongShard { .. })
        ));
    }

    #[test]
    fn draws_differ() {
        assert_ne!(TicketDraw::random(), TicketDraw::random());
    }

    #[test]
    fn missing_pieces_are_named() {
        let no_key = ClientConfig {
            ticket_key: None,
            ..config()
        };
        assert!(matches!(
            direct_options(&no_key, NOW_MS, DRAW),
            Err(DirectError::NoTicketKey)
        ));
        let no_pin = ClientConfig {
            cert_sha256: None,
            ..config()
        };
        assert!(matches!(
            direct_options(&no_pin, NOW_MS, DRAW),
            Err(DirectError::NoPin)
        ));
        let bad_key = ClientConfig {
            ticket_key: Some("abc".into()),
            ..config()
        };
        let err = direct_options(&bad_key, NOW_MS, DRAW).expect_err("bad key");
        assert!(err.to_string().contains("--ticket-key"), "{err}");
    }
}
