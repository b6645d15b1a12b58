//! Bad input from clients over real QUIC: each case is counted, answered with a reason, and
//! leaves the shard and its other clients unharmed.

mod common;

use bytes::Bytes;
use common::*;
use meridian_client::session::{SessionEvent, connect_pinned};
use meridian_protocol::codec::{self, BoundedVec};
use meridian_protocol::control::{KickReason, ShardControlMsg, ShardHelloMsg};
use meridian_protocol::datagram::{ClientDatagramMsg, InputFrameMsg, InputMsg};
use meridian_protocol::frame::DEFAULT_MAX_FRAME;
use meridian_protocol::handshake::RejectReason;
use meridian_protocol::quic::QuicConfig;
use meridian_protocol::stream;
use meridian_protocol::{InputSeq, PROTOCOL_VERSION};
use meridian_shard::metrics::ShardMetrics as M;
use std::time::Duration;

async fn raw(shard: &meridian_shard::server::ShardHandle) -> quinn::Connection {
    connect_pinned(
        &endpoint(),
        shard.local_addr,
        shard.cert_sha256,
        &QuicConfig::default(),
    )
    .await
    .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_version_is_answered_with_both_versions() {
    let shard = start_shard("0,0,100,100", |t| t.sim.npcs = 0).await;
    let conn = raw(&shard).await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let mut buf = Vec::new();
    let hello = ShardHelloMsg {
        protocol_version: PROTOCOL_VERSION + 98,
        ticket: ticket_for(&shard, 1),
    };
    stream::write_frame(&mut send, &hello, DEFAULT_MAX_FRAME, &mut buf)
        .await
        .expect("send");
    let reply: Option<ShardControlMsg> = stream::read_frame(&mut recv, DEFAULT_MAX_FRAME, &mut buf)
        .await
        .expect("reply");
    match reply {
        Some(ShardControlMsg::Rejected(r)) => {
            assert_eq!(
                r.reason,
                RejectReason::VersionMismatch {
                    server: PROTOCOL_VERSION,
                    client: PROTOCOL_VERSION + 98
                }
            );
            assert!(
                r.detail.contains(&(PROTOCOL_VERSION + 98).to_string()),
                "{}",
                r.detail
            );
        }
        other => panic!("expected a version rejection, got {other:?}"),
    }
    assert_eq!(M::get(&shard.metrics().rejected_version), 1);
    shard.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_garbage_hello_is_refused() {
    let shard = start_shard("0,0,100,100", |t| t.sim.npcs = 0).await;
    // A header announcing 10 MiB.
    let conn = raw(&shard).await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&(10u32 << 20).to_be_bytes())
        .await
        .expect("send");
    let mut buf = Vec::new();
    let reply: Option<ShardControlMsg> = stream::read_frame(&mut recv, DEFAULT_MAX_FRAME, &mut buf)
        .await
        .expect("reply");
    assert!(
        matches!(&reply, Some(ShardControlMsg::Rejected(r)) if r.reason == RejectReason::Malformed && r.detail.contains("exceeds")),
        "{reply:?}"
    );
    // Garbage of the right size.
    let conn = raw(&shard).await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let mut frame = 8u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    send.write_all(&frame).await.expect("send");
    let reply: Option<ShardControlMsg> = stream::read_frame(&mut recv, DEFAULT_MAX_FRAME, &mut buf)
        .await
        .expect("reply");
    assert!(
        matches!(&reply, Some(ShardControlMsg::Rejected(r)) if r.reason == RejectReason::Malformed),
        "{reply:?}"
    );
    assert_eq!(M::get(&shard.metrics().rejected_malformed_frame), 2);
    shard.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_get_a_client_kicked_and_spare_the_others() {
    let shard = start_shard("0,0,100,100", |t| t.sim.npcs = 0).await;
    let ep = endpoint();
    let mut bad = join(&ep, &shard, 10).await;
    let mut good = join(&ep, &shard, 11).await;
    for i in 0..40u8 {
        // Sending fails once the shard has kicked the client: that is the point.
        let _ = bad
            .connection()
            .send_datagram(Bytes::from(vec![0xff, i, 0xff]));
        if i % 7 == 0 {
            // The well-behaved client keeps to the tick rate.
            let _ = good.send_input(0.0, 0.0, 0);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let kick = next_kick(&mut bad, Duration::from_secs(5)).await;
    assert_eq!(kick.map(|k| k.reason), Some(KickReason::Malformed));
    assert!(M::get(&shard.metrics().datagrams_malformed) >= 21);
    let before = good.stats().snapshots;
    assert!(
        wait_until(Duration::from_secs(3), || {
            let _ = good.send_input(0.0, 0.0, 0);
            good.stats().snapshots > before + 5
        })
        .await
    );
    assert!(
        good.try_event()
            .is_none_or(|e| !matches!(e, SessionEvent::Kicked(_)))
    );
    shard.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_flood_is_rejected_then_kicked() {
    let shard = start_shard("0,0,100,100", |t| t.sim.npcs = 0).await;
    let ep = endpoint();
    let mut s = join(&ep, &shard, 20).await;
    // Eight new inputs per datagram, a datagram every 2 ms: ~130 times the tick rate.
    let mut seq = 1u32;
    let kicked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frames: Vec<InputFrameMsg> = (0..8)
                .map(|k| InputFrameMsg {
                    seq: InputSeq(seq + k),
                    heading: 0,
                    throttle: 255,
                    buttons: 0,
                })
                .collect();
            seq += 8;
            let msg = ClientDatagramMsg::Input(InputMsg {
                ack: None,
                inputs: BoundedVec::try_from_vec(frames).expect("8 fit"),
            });
            if s.connection()
                .send_datagram(Bytes::from(codec::encode(&msg).expect("encode")))
                .is_err()
            {
                break None;
            }
            if let Some(SessionEvent::Kicked(k)) = s.try_event() {
                break Some(k);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("kicked in time");
    let kick = match kicked {
        Some(k) => k,
        None => match s.next_event().await {
            Some(SessionEvent::Kicked(k)) => k,
            other => panic!("expected a kick, got {other:?}"),
        },
    };
    assert_eq!(kick.reason, KickReason::InputFlood);
    assert!(M::get(&shard.metrics().inputs_rejected_flood) >= 60);
    shard.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speed_stays_within_the_limit_whatever_the_client_sends() {
    let shard = start_shard("0,0,1000,1000", |t| {
        t.sim.npcs = 0;
        t.sim.pickups = 0;
    })
    .await;
    let max_speed = meridian_shard::sim::SimConfig::default().max_speed;
    let ep = endpoint();
    let mut s = join(&ep, &shard, 30).await;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let _ = s.send_input(0.0, 0.0, 0);
            s.with_world(|w| w.entity(s.entity()).is_some())
        })
        .await
    );
    // Two inputs per tick at full throttle (within the burst allowance, beyond the rate).
    let start = s.with_world(|w| w.entity(s.entity()).expect("own").pos);
    let t0 = tokio::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        let _ = s.send_input(0.0, 1.0, 0);
        let _ = s.send_input(0.0, 1.0, 0);
        tokio::time::sleep(Duration::from_millis(33)).await;
    }
    let elapsed = t0.elapsed().as_secs_f32();
    let end = s.with_world(|w| w.entity(s.entity()).expect("own").pos);
    let dist = ((end[0] - start[0]).powi(2) + (end[1] - start[1]).powi(2)).sqrt();
    assert!(dist > 1.0, "the player moved ({dist})");
    assert!(
        dist <= max_speed * elapsed + 0.5,
        "moved {dist} in {elapsed} s; limit {max_speed}/s"
    );
    shard.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frame_over_the_limit_after_welcome_gets_a_kick() {
    let shard = start_shard("0,0,100,100", |t| t.sim.npcs = 0).await;
    let conn = raw(&shard).await;
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let mut buf = Vec::new();
    let hello = ShardHelloMsg {
        protocol_version: PROTOCOL_VERSION,
        ticket: ticket_for(&shard, 40),
    };
    stream::write_frame(&mut send, &hello, DEFAULT_MAX_FRAME, &mut buf)
        .await
        .expect("send");
    let welcome: Option<ShardControlMsg> =
        stream::read_frame(&mut recv, DEFAULT_MAX_FRAME, &mut buf)
            .await
            .expect("reply");
    assert!(
        matches!(welcome, Some(ShardControlMsg::Welcome(_))),
        "{welcome:?}"
    );
    // A header announcing a frame of 1 MiB, beyond the 64 KiB limit.
    send.write_all(&(1u32 << 20).to_be_bytes())
        .await
        .expect("send");
    let kick = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream::read_frame::<ShardControlMsg>(&mut recv, DEFAULT_MAX_FRAME, &mut buf)
                .await
            {
                Ok(Some(ShardControlMsg::Kick(k))) => return Some(k),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("kick in time")
    .expect("a kick frame before the stream ends");
    assert_eq!(kick.reason, KickReason::Malformed);
    assert!(kick.detail.contains("exceeds"), "{}", kick.detail);
    assert_eq!(M::get(&shard.metrics().rejected_malformed_frame), 1);
    shard.shutdown().await;
}
