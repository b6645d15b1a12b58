//! Property tests for every wire message:
//! - encode → decode is the identity (bare and framed);
//! - decoding arbitrary bytes, and mutations of valid encodings, returns a value or an error,
//!   never panics, and never allocates more than the frame limit (measured by a counting
//!   allocator on the decoding thread).
//!
//! Each property runs at least 1,000 cases. A failure prints proptest's seed and minimal input.

#![expect(
    unsafe_code,
    reason = "a counting global allocator measures decode allocations"
)]

use meridian_protocol::codec::{self, BoundedVec};
use meridian_protocol::control::*;
use meridian_protocol::datagram::*;
use meridian_protocol::frame::{self, DEFAULT_MAX_FRAME};
use meridian_protocol::handshake::{RejectMsg, RejectReason};
use meridian_protocol::lobby::*;
use meridian_protocol::ticket::{SignedTicket, TicketClaims, TicketKind};
use meridian_protocol::*;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;

// ---------------------------------------------------------------------------------------------
// Allocation measurement

struct CountingAlloc;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grow(n: usize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn shrink(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // While moving, both blocks exist.
        grow(new_size);
        shrink(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result and the most bytes it held allocated at once.
fn peak_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get) - base;
    (r, peak)
}

// ---------------------------------------------------------------------------------------------
// Strategies

fn name_id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,64}"
}
fn shard_id() -> impl Strategy<Value = ShardId> {
    name_id().prop_map(|s| ShardId::new(s).expect("valid by construction"))
}
fn zone_id() -> impl Strategy<Value = ZoneId> {
    name_id().prop_map(|s| ZoneId::new(s).expect("valid by construction"))
}
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
}
fn ticket() -> impl Strategy<Value = SignedTicket> {
    (
        prop_oneof![
            Just(TicketKind::Join),
            Just(TicketKind::Handoff),
            Just(TicketKind::Resume)
        ],
        any::<u64>(),
        shard_id(),
        zone_id(),
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(kind, p, shard, zone, expires_at_ms, nonce, tag)| SignedTicket {
                claims: TicketClaims {
                    kind,
                    player: PlayerId(p),
                    shard,
                    zone,
                    expires_at_ms,
                    nonce,
                },
                tag,
            },
        )
}
fn bounded<T: Debug, const N: usize>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = BoundedVec<T, N>> {
    proptest::collection::vec(s, 0..=N)
        .prop_map(|v| BoundedVec::try_from_vec(v).expect("len within bound"))
}
fn reject() -> impl Strategy<Value = RejectMsg> {
    let reason = prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(server, client)| RejectReason::VersionMismatch { server, client }),
        Just(RejectReason::Malformed),
        Just(RejectReason::BadTicket),
        Just(RejectReason::BadName),
        any::<u32>().prop_map(|retry_after_ms| RejectReason::Unavailable { retry_after_ms }),
        Just(RejectReason::Full),
    ];
    (reason, text(80)).prop_map(|(reason, detail)| RejectMsg { reason, detail })
}
fn candidate() -> impl Strategy<Value = ShardCandidateMsg> {
    (
        shard_id(),
        zone_id(),
        "[a-z-]{1,12}",
        "[a-z0-9.:]{1,40}",
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(shard, zone, region, addr, cert_sha256)| ShardCandidateMsg {
                shard,
                zone,
                region,
                addr,
                cert_sha256,
            },
        )
}
fn lobby_hello() -> impl Strategy<Value = LobbyHelloMsg> {
    (any::<u32>(), text(40), proptest::option::of(ticket())).prop_map(
        |(protocol_version, name, resume)| LobbyHelloMsg {
            protocol_version,
            name,
            resume,
        },
    )
}
fn lobby_request() -> impl Strategy<Value = LobbyRequestMsg> {
    let rtt = (shard_id(), any::<u32>()).prop_map(|(shard, rtt_us)| ShardRttMsg { shard, rtt_us });
    (
        bounded::<_, MAX_CANDIDATES>(rtt),
        proptest::option::of(text(20)),
    )
        .prop_map(|(rtts, party)| LobbyRequestMsg::Join(JoinRequestMsg { rtts, party }))
}
fn lobby_msg() -> impl Strategy<Value = LobbyMsg> {
    prop_oneof![
        (
            any::<u64>(),
            text(32),
            any::<u64>(),
            bounded::<_, MAX_CANDIDATES>(candidate())
        )
            .prop_map(
                |(p, name, score, shards)| LobbyMsg::Candidates(CandidatesMsg {
                    player: PlayerId(p),
                    profile: ProfileMsg { name, score },
                    shards,
                })
            ),
        (candidate(), ticket(), ticket()).prop_map(|(shard, ticket, resume)| LobbyMsg::Grant(
            JoinGrantMsg {
                shard,
                ticket,
                resume
            }
        )),
        reject().prop_map(LobbyMsg::Rejected),
    ]
}
fn shard_hello() -> impl Strategy<Value = ShardHelloMsg> {
    (any::<u32>(), ticket()).prop_map(|(protocol_version, ticket)| ShardHelloMsg {
        protocol_version,
        ticket,
    })
}
fn client_control() -> impl Strategy<Value = ClientControlMsg> {
    prop_oneof![
        Just(ClientControlMsg::Leave),
        text(MAX_CHAT_CHARS).prop_map(|text| ClientControlMsg::Chat { text })
    ]
}
fn shard_control() -> impl Strategy<Value = ShardControlMsg> {
    let coord = -1.0e6f32..1.0e6;
    let welcome = (
        any::<u64>(),
        any::<u32>(),
        shard_id(),
        zone_id(),
        (coord.clone(), coord.clone(), coord.clone(), coord),
        any::<u16>(),
        any::<u64>(),
    )
        .prop_map(
            |(p, e, shard, zone, (min_x, min_y, max_x, max_y), tick_hz, t)| {
                ShardControlMsg::Welcome(WelcomeMsg {
                    player: PlayerId(p),
                    entity: EntityId(e),
                    shard,
                    zone,
                    bounds: ZoneBoundsMsg {
                        min_x,
                        min_y,
                        max_x,
                        max_y,
                    },
                    tick_hz,
                    server_tick: Tick(t),
                })
            },
        );
    let kick_reason = prop_oneof![
        Just(KickReason::Malformed),
        Just(KickReason::InputFlood),
        Just(KickReason::SpeedLimit),
        Just(KickReason::Idle),
        Just(KickReason::Shutdown),
        Just(KickReason::Admin),
        Just(KickReason::ZoneLost),
        Just(KickReason::HandedOff),
        Just(KickReason::Draining),
    ];
    let neighbour = (zone_id(), shard_id(), text(64), any::<[u8; 32]>()).prop_map(
        |(zone, shard, addr, cert_sha256)| {
            ShardControlMsg::Neighbour(NeighbourMsg {
                zone,
                shard,
                addr,
                cert_sha256,
            })
        },
    );
    let handoff = (ticket(), shard_id(), zone_id(), text(64), any::<[u8; 32]>()).prop_map(
        |(ticket, shard, zone, addr, cert_sha256)| {
            ShardControlMsg::Handoff(HandoffMsg {
                ticket,
                shard,
                zone,
                addr,
                cert_sha256,
            })
        },
    );
    prop_oneof![
        welcome,
        reject().prop_map(ShardControlMsg::Rejected),
        (kick_reason, text(80))
            .prop_map(|(reason, detail)| ShardControlMsg::Kick(KickMsg { reason, detail })),
        (any::<u64>(), any::<u32>())
            .prop_map(|(total, delta)| ShardControlMsg::Score(ScoreMsg { total, delta })),
        (any::<u64>(), text(MAX_CHAT_CHARS)).prop_map(|(p, text)| ShardControlMsg::Chat(ChatMsg {
            from: PlayerId(p),
            text
        })),
        neighbour,
        handoff,
    ]
}
fn client_datagram() -> impl Strategy<Value = ClientDatagramMsg> {
    let frame = (any::<u32>(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(
        |(s, heading, throttle, buttons)| InputFrameMsg {
            seq: InputSeq(s),
            heading,
            throttle,
            buttons,
        },
    );
    prop_oneof![
        (
            proptest::option::of(any::<u64>().prop_map(Tick)),
            bounded::<_, MAX_REDUNDANT_INPUTS>(frame)
        )
            .prop_map(|(ack, inputs)| ClientDatagramMsg::Input(InputMsg { ack, inputs })),
        any::<u64>().prop_map(|nonce| ClientDatagramMsg::Ping(PingMsg { nonce })),
    ]
}
fn server_datagram() -> impl Strategy<Value = ServerDatagramMsg> {
    prop_oneof![
        (
            any::<u64>(),
            proptest::option::of(any::<u64>().prop_map(Tick)),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..1200),
        )
            .prop_map(|(t, baseline, a, payload)| ServerDatagramMsg::Snapshot(
                SnapshotMsg {
                    tick: Tick(t),
                    baseline,
                    input_ack: InputSeq(a),
                    payload,
                }
            )),
        (any::<u64>(), any::<u64>()).prop_map(|(nonce, t)| ServerDatagramMsg::Pong(PongMsg {
            nonce,
            server_tick: Tick(t)
        })),
    ]
}

// ---------------------------------------------------------------------------------------------
// Properties

fn check_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    msg: &T,
) -> Result<(), TestCaseError> {
    let bytes = codec::encode(msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T =
        codec::decode(&bytes, DEFAULT_MAX_FRAME).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, msg);
    let mut framed = Vec::new();
    frame::encode_frame(msg, DEFAULT_MAX_FRAME, &mut framed)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (back, used): (T, usize) = frame::decode_frame(&framed, DEFAULT_MAX_FRAME)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, msg);
    prop_assert_eq!(used, framed.len());
    Ok(())
}

/// Decodes `bytes` as every message type, bare and framed; each must return (no panic) and hold
/// at most the frame limit allocated at any moment.
fn check_decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    fn one<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
        let (_, peak) = peak_allocation(|| codec::decode::<T>(bytes, DEFAULT_MAX_FRAME).is_ok());
        prop_assert!(
            peak <= DEFAULT_MAX_FRAME,
            "{} allocated {peak} bytes",
            std::any::type_name::<T>()
        );
        let (_, peak) =
            peak_allocation(|| frame::try_decode_frame::<T>(bytes, DEFAULT_MAX_FRAME).is_ok());
        prop_assert!(
            peak <= DEFAULT_MAX_FRAME,
            "framed {} allocated {peak} bytes",
            std::any::type_name::<T>()
        );
        Ok(())
    }
    one::<LobbyHelloMsg>(bytes)?;
    one::<LobbyRequestMsg>(bytes)?;
    one::<LobbyMsg>(bytes)?;
    one::<ShardHelloMsg>(bytes)?;
    one::<ClientControlMsg>(bytes)?;
    one::<ShardControlMsg>(bytes)?;
    one::<ClientDatagramMsg>(bytes)?;
    one::<ServerDatagramMsg>(bytes)?;
    one::<SignedTicket>(bytes)?;
    let _ = handshake::peek_version(bytes);
    Ok(())
}

/// A valid encoding of some message, then damaged: bytes overwritten with values that make
/// varint lengths huge (0xFB..=0xFF tags), bytes cut, bytes inserted.
fn mutated_encoding() -> impl Strategy<Value = Vec<u8>> {
    let any_encoding = prop_oneof![
        lobby_hello().prop_map(|m| codec::encode(&m).expect("encode")),
        lobby_msg().prop_map(|m| codec::encode(&m).expect("encode")),
        shard_control().prop_map(|m| codec::encode(&m).expect("encode")),
        server_datagram().prop_map(|m| codec::encode(&m).expect("encode")),
        client_datagram().prop_map(|m| codec::encode(&m).expect("encode")),
    ];
    let edit = (
        any::<prop::sample::Index>(),
        prop_oneof![
            Just(0xFFu8),
            Just(0xFE),
            Just(0xFD),
            Just(0xFC),
            Just(0xFB),
            any::<u8>()
        ],
        0u8..3,
    );
    (any_encoding, proptest::collection::vec(edit, 1..6)).prop_map(|(mut bytes, edits)| {
        for (at, value, kind) in edits {
            if bytes.is_empty() {
                bytes.push(value);
                continue;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = value,
                1 => bytes.insert(i, value),
                _ => bytes.truncate(i),
            }
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn lobby_hello_round_trips(m in lobby_hello()) { check_round_trip(&m)?; }
    #[test]
    fn lobby_request_round_trips(m in lobby_request()) { check_round_trip(&m)?; }
    #[test]
    fn lobby_msg_round_trips(m in lobby_msg()) { check_round_trip(&m)?; }
    #[test]
    fn shard_hello_round_trips(m in shard_hello()) { check_round_trip(&m)?; }
    #[test]
    fn client_control_round_trips(m in client_control()) { check_round_trip(&m)?; }
    #[test]
    fn shard_control_round_trips(m in shard_control()) { check_round_trip(&m)?; }
    #[test]
    fn client_datagram_round_trips(m in client_datagram()) { check_round_trip(&m)?; }
    #[test]
    fn server_datagram_round_trips(m in server_datagram()) { check_round_trip(&m)?; }
    #[test]
    fn ticket_round_trips(m in ticket()) { check_round_trip(&m)?; }

    #[test]
    fn hello_version_is_readable_whatever_follows(m in lobby_hello(), s in shard_hello()) {
        prop_assert_eq!(handshake::peek_version(&codec::encode(&m).expect("encode")).ok(), Some(m.protocol_version));
        prop_assert_eq!(handshake::peek_version(&codec::encode(&s).expect("encode")).ok(), Some(s.protocol_version));
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overallocate(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check_decode_all(&bytes)?;
    }

    #[test]
    fn damaged_encodings_never_panic_nor_overallocate(bytes in mutated_encoding()) {
        check_decode_all(&bytes)?;
    }
}

/// The worst inputs by hand: every container claiming the largest length a varint can say.
#[test]
fn huge_length_claims_are_refused_cheaply() {
    for tag in [0xFBu8, 0xFC, 0xFD] {
        for prefix_len in 0..12 {
            let mut bytes = vec![0u8; prefix_len];
            bytes.push(tag);
            bytes.extend_from_slice(&[0xFF; 16]);
            check_decode_all(&bytes).expect("bounded");
        }
    }
}

/// The counting allocator does count: a 100 KiB allocation shows up.
#[test]
fn allocation_counter_counts() {
    let (v, peak) = peak_allocation(|| vec![1u8; 100 * 1024]);
    assert_eq!(v.len(), 100 * 1024);
    assert!(peak >= 100 * 1024, "{peak}");
}
