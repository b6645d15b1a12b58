//! Client ↔ shard datagrams (QUIC unreliable datagrams): inputs up, snapshots down, and pings
//! for round-trip measurement. Any of them may be lost, duplicated or reordered, so each
//! carries what makes it useful on its own: inputs repeat the last few, snapshots name the
//! baseline they are a delta against.

use crate::codec::BoundedVec;
use crate::ids::{InputSeq, Tick};
use serde::{Deserialize, Serialize};

/// Most inputs one datagram carries (the newest and the ones before it, for redundancy).
pub const MAX_REDUNDANT_INPUTS: usize = 8;
/// Decode limit for a datagram: larger than any path's datagram size.
pub const MAX_DATAGRAM_BYTES: usize = 64 * 1024;

/// Client → shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientDatagramMsg {
    /// Player inputs and the acknowledgement of the last snapshot received.
    Input(InputMsg),
    /// A round-trip probe; answered by [`ServerDatagramMsg::Pong`].
    Ping(PingMsg),
}

/// Inputs, newest last, with acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputMsg {
    /// Tick of the newest snapshot the client has applied; the shard encodes deltas against it.
    pub ack: Option<Tick>,
    /// The newest inputs in sequence order, the newest last.
    pub inputs: BoundedVec<InputFrameMsg, MAX_REDUNDANT_INPUTS>,
}

/// One tick's worth of player intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InputFrameMsg {
    /// Sequence number, one per client tick.
    pub seq: InputSeq,
    /// Direction of movement, quantized with [`crate::quantize::angle_to_byte`].
    pub heading: u8,
    /// Fraction of full speed, 0 (stand still) to 255 (full speed).
    pub throttle: u8,
    /// Button bit set.
    pub buttons: u8,
}

/// A round-trip probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingMsg {
    /// Echoed back.
    pub nonce: u64,
}

/// Shard → client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerDatagramMsg {
    /// World state around the client.
    Snapshot(SnapshotMsg),
    /// The answer to a ping.
    Pong(PongMsg),
}

/// One tick's view of the world for one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMsg {
    /// The tick it shows.
    pub tick: Tick,
    /// The snapshot it is a delta against; `None` for a full snapshot.
    pub baseline: Option<Tick>,
    /// The newest input of this client the shard has applied.
    pub input_ack: InputSeq,
    /// Entity states, in the replication encoding (quantized, delta against `baseline`).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// The answer to a ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PongMsg {
    /// The ping's nonce.
    pub nonce: u64,
    /// The shard's tick when it answered.
    pub server_tick: Tick,
}
