//! Handoff: the shard's side of moving players between zones, and what it shares with its
//! neighbours — the zone lease, fenced ownership claims, transfers and inbox notices, neighbour
//! discovery and border ghosts.
//!
//! The tick thread decides (the simulation reports a [`Crossing`](crate::sim::Crossing) when a
//! player passes a border plus the hysteresis margin and freezes the entity); the async
//! [`worker`] executes the effects against the [`Store`](meridian_cluster::Store) and reports
//! back as [`HandoffEvent`]s, which the tick thread drains without waiting. The tick never
//! waits on Redis: a transfer's answer arrives on a later tick, and until then the player stays
//! frozen at the border.
//!
//! One handoff, A → B:
//! 1. A's simulation freezes the player past the border and reports the crossing;
//! 2. A's worker runs the atomic transfer on the player's key (owner A at A's epoch → B, state
//!    written, sequence bumped) and signs a handoff ticket for B;
//! 3. A's tick thread sends the ticket to the client ([`HandoffMsg`]), removes the entity, and
//!    keeps the connection a grace period for the client to move; A's worker appends the notice
//!    to B's inbox stream;
//! 4. B spawns the player on whichever comes first: the client's hello with the ticket (B
//!    accepts the transfer on the player's key, reading the state A wrote) or the notice
//!    (accepted the same way, acknowledged after the spawn). The second one finds the player
//!    there and is ignored.
//!
//! If the transfer fails (B's zone has no live owner, Redis is out of reach, the record changed)
//! nothing was written: A unfreezes the player just inside its zone (the border acts as a wall)
//! and the crossing is retried once the player walks past it again.
//!
//! Files: [`worker`] (effects: transfers, releases, acks, the lease keeper, the inbox reader, the
//! neighbour watcher), [`ghosts`] (the batch format and its collection from the world view).

pub mod checkpoint;
pub mod ghosts;
pub mod worker;

use meridian_cluster::ownership::{HandoffNotice, Lease, PlayerState};
use meridian_cluster::world::WorldMap;
use meridian_protocol::control::{HandoffMsg, ShardControlMsg};
use meridian_protocol::{PlayerId, ShardId, ZoneId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Default lease time-to-live: a dead shard's zone is free again this long after its last
/// renewal.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);
/// How long a handed-off client may take to move before its old connection is closed.
pub const HANDED_OFF_GRACE: Duration = Duration::from_secs(5);
/// How long a player spawned from a notice waits for its client before it is saved and removed.
pub const ARRIVAL_GRACE: Duration = Duration::from_secs(10);
/// Lifetime of a handoff ticket.
pub const HANDOFF_TICKET_TTL: Duration = Duration::from_secs(15);
/// How long a player restored from its checkpoint (after a failover or a drain) waits for its
/// client before it is saved and released.
pub const RESUME_GRACE: Duration = Duration::from_secs(30);

/// Settings of the handoff machinery.
#[derive(Clone, Debug)]
pub struct HandoffConfig {
    /// Lease time-to-live; renewed every third of it.
    pub lease_ttl: Duration,
    /// Clients closer than this to a border with a neighbour are told about the neighbour's
    /// shard so that they connect early, world units.
    pub notice_distance: f32,
    /// How long a handed-off client may take to move.
    pub handed_off_grace: Duration,
    /// How long a player spawned from a notice waits for its client.
    pub arrival_grace: Duration,
    /// How often the neighbours' owners are looked up.
    pub neighbour_refresh: Duration,
    /// How long a player restored from its checkpoint waits for its client.
    pub resume_grace: Duration,
    /// Most player states queued for checkpointing while shared state is out of reach (the
    /// interval is the shard's `checkpoint_ms`).
    pub checkpoint_queue: usize,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            lease_ttl: DEFAULT_LEASE_TTL,
            notice_distance: 120.0,
            handed_off_grace: HANDED_OFF_GRACE,
            arrival_grace: ARRIVAL_GRACE,
            neighbour_refresh: Duration::from_millis(500),
            resume_grace: RESUME_GRACE,
            checkpoint_queue: checkpoint::DEFAULT_MAX_QUEUED,
        }
    }
}

/// What a shard needs to take part in a multi-zone world: shared state, the world map and the
/// settings. Without it a shard serves its zone alone and its edges are walls.
#[derive(Clone, Debug)]
pub struct ClusterLink {
    /// The registry (and through it the store).
    pub registry: meridian_cluster::Registry,
    /// The world map; it must list the shard's zone.
    pub world: Arc<WorldMap>,
    /// Settings.
    pub handoff: HandoffConfig,
}

/// A neighbouring zone's owner, as the neighbour watcher last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourInfo {
    /// The neighbouring zone.
    pub zone: ZoneId,
    /// The shard holding its lease.
    pub shard: ShardId,
    /// Its client address.
    pub addr: String,
    /// Its certificate hash.
    pub cert_sha256: [u8; 32],
}

/// What the tick thread asks the worker to do. Sent with `try_send`; a full queue fails the
/// step (a transfer then counts as failed and the player stays).
#[derive(Debug)]
pub enum HandoffCommand {
    /// Transfer a frozen player to the owner of `to_zone`.
    Transfer {
        /// The player.
        player: PlayerId,
        /// The neighbour number of the zone in the simulation's border config.
        neighbour: u16,
        /// The zone it walks into.
        to_zone: ZoneId,
        /// Its state at the border.
        state: PlayerState,
        /// The client's reliable event queue: the handoff message goes out the moment ownership
        /// moves, not at the next tick (the client starts switching up to a tick earlier).
        control: Option<mpsc::Sender<ShardControlMsg>>,
    },
    /// The player left this shard for good: clear its owner, saving its state.
    Release {
        /// The player.
        player: PlayerId,
        /// Its last state.
        state: Option<PlayerState>,
    },
    /// The lease was taken again (after an outage that may have lost shared state): claim
    /// these players again under the new epoch.
    Reclaim {
        /// Every player this shard simulates.
        players: Vec<PlayerId>,
    },
    /// A notice was handled (the player spawned, or it was a duplicate): acknowledge it.
    AckNotice {
        /// The stream entry id.
        id: String,
    },
}

/// What the worker reports to the tick thread.
#[derive(Debug)]
pub enum HandoffEvent {
    /// Ownership moved: tell the client, remove the entity.
    Transferred {
        /// The player.
        player: PlayerId,
        /// What to send the client.
        msg: HandoffMsg,
        /// The transfer sequence.
        seq: u64,
        /// The message was already queued to the client by the worker.
        delivered: bool,
    },
    /// The transfer did not happen; nothing was written. The player is unfrozen.
    TransferFailed {
        /// The player.
        player: PlayerId,
        /// Why, for the log.
        reason: String,
    },
    /// A notice from a neighbour, already accepted in shared state: spawn the player (unless
    /// its client arrived first), then acknowledge `id`.
    Notice {
        /// The stream entry id.
        id: String,
        /// The notice.
        notice: HandoffNotice,
        /// The state to spawn with (the one the transfer wrote).
        state: PlayerState,
    },
    /// The neighbours' owners changed: index = neighbour number, `None` = no live owner (the
    /// border is a wall).
    Neighbours(Vec<Option<NeighbourInfo>>),
    /// The zone lease was lost to another shard: stop serving the zone.
    LeaseLost {
        /// Who holds it now, if known.
        holder: Option<Lease>,
    },
    /// The lease is held again (after an outage, with a new epoch).
    LeaseRegained(Lease),
}
