//! Admission of a client: the ticket in its hello, verified locally (no shared-state round
//! trip), and refused if its nonce was seen before on this shard.

use meridian_protocol::ticket::TicketError;
use std::collections::HashMap;

/// Nonces of accepted tickets, kept until their tickets expire.
///
/// Covers replays against this shard; a ticket names one shard, so that is where it could be
/// replayed. The memory is bounded by the rate of admissions times the ticket lifetime.
#[derive(Debug, Default)]
pub struct NonceCache {
    seen: HashMap<u64, u64>,
    next_purge_ms: u64,
}

impl NonceCache {
    /// Records `nonce` (valid until `expires_at_ms`), or refuses it if already recorded.
    pub fn use_once(
        &mut self,
        nonce: u64,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), TicketError> {
        if now_ms >= self.next_purge_ms {
            self.seen.retain(|_, exp| *exp > now_ms);
            self.next_purge_ms = now_ms + 1_000;
        }
        match self.seen.get(&nonce) {
            Some(exp) if *exp > now_ms => Err(TicketError::Replayed { nonce }),
            _ => {
                self.seen.insert(nonce, expires_at_ms);
                Ok(())
            }
        }
    }

    /// Forgets `nonce`: its ticket was refused for a passing reason (shared state out of reach)
    /// after the nonce was recorded, so the client may present it again.
    pub fn forget(&mut self, nonce: u64) {
        self.seen.remove(&nonce);
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when none are remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_nonce_is_accepted_again() {
        let mut c = NonceCache::default();
        assert_eq!(c.use_once(9, 5_000, 0), Ok(()));
        c.forget(9);
        assert_eq!(c.use_once(9, 5_000, 10), Ok(()));
        assert_eq!(
            c.use_once(9, 5_000, 20),
            Err(TicketError::Replayed { nonce: 9 })
        );
    }

    #[test]
    fn replay_is_refused_until_expiry_then_forgotten() {
        let mut c = NonceCache::default();
        assert_eq!(c.use_once(1, 5_000, 0), Ok(()));
        assert_eq!(
            c.use_once(1, 5_000, 10),
            Err(TicketError::Replayed { nonce: 1 })
        );
        assert_eq!(c.use_once(2, 5_000, 10), Ok(()));
        // After expiry the ticket itself is refused as expired; the cache may forget it.
        assert_eq!(c.use_once(3, 9_000, 6_000), Ok(()));
        assert_eq!(c.len(), 1);
    }
}
