//! Meridian wire protocol. Pure: no sockets, no async runtime, no clock of its own.
//!
//! What this crate owns:
//! - identities used on the wire ([`ids`]: [`PlayerId`], [`ShardId`], [`ZoneId`], [`EntityId`],
//!   [`Tick`], [`Epoch`], [`InputSeq`]);
//! - the message families of each link: client↔lobby ([`lobby`]), the client↔shard control
//!   stream ([`control`]) and client↔shard datagrams ([`datagram`]);
//! - the codec ([`codec`]: bincode 2 through serde, bounded decoding) and stream framing
//!   ([`frame`]: u32 length prefix, maximum frame size);
//! - the version handshake ([`handshake`]): every first frame of a stream starts with
//!   [`PROTOCOL_VERSION`];
//! - signed tickets ([`ticket`]: join, handoff and resume, HMAC-SHA256);
//! - quantization helpers ([`quantize`]);
//! - QUIC configuration shared by every role ([`quic`]: ALPN, certificates, pinning, transport).
//!   Its [`quic::bind_udp_socket`] is the one function here that touches the OS: it creates a
//!   plain UDP socket with large buffers for the shells to hand to their endpoint.

pub mod codec;
pub mod control;
pub mod datagram;
pub mod frame;
pub mod handshake;
pub mod ids;
pub mod lobby;
pub mod quantize;
pub mod quic;
pub mod snapshot;
#[cfg(feature = "stream")]
pub mod stream;
pub mod ticket;

pub use ids::{EntityId, Epoch, InputSeq, PlayerId, ShardId, Tick, ZoneId};

/// Version of the wire protocol. Bumped on any incompatible change of a message.
///
/// The first frame of every stream starts with this number (see [`handshake`]), so two peers of
/// different versions can always tell each other which versions they speak.
pub const PROTOCOL_VERSION: u32 = 1;
