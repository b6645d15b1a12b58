//! Codec bench: encode and decode a 1,200-byte snapshot datagram (the largest a client receives
//! on a typical path), and a framed control message, each beside its baseline: copying the same
//! bytes into a reused buffer, the floor any codec pays. Prints the ratios at the end.
//!
//! `cargo bench -p meridian-protocol --bench codec`

use criterion::{Criterion, Throughput};
use meridian_protocol::codec;
use meridian_protocol::control::{ScoreMsg, ShardControlMsg};
use meridian_protocol::datagram::{ServerDatagramMsg, SnapshotMsg};
use meridian_protocol::frame::{self, DEFAULT_MAX_FRAME};
use meridian_protocol::{InputSeq, Tick};
use std::hint::black_box;
use std::time::Instant;

/// A snapshot datagram whose encoding is 1,200 bytes.
fn snapshot() -> ServerDatagramMsg {
    let mut payload_len = 1200;
    loop {
        let msg = ServerDatagramMsg::Snapshot(SnapshotMsg {
            tick: Tick(1_234_567),
            baseline: Some(Tick(1_234_560)),
            input_ack: InputSeq(98_765),
            payload: (0..payload_len).map(|i| (i * 31 % 251) as u8).collect(),
        });
        let len = codec::encode(&msg).expect("encode").len();
        if len <= 1200 {
            return msg;
        }
        payload_len -= len - 1200;
    }
}

fn encode_snapshot(msg: &ServerDatagramMsg, buf: &mut Vec<u8>) {
    buf.clear();
    codec::encode_into(black_box(msg), buf).expect("encode");
}

fn decode_snapshot(bytes: &[u8]) -> ServerDatagramMsg {
    codec::decode(black_box(bytes), 2048).expect("decode")
}

fn copy_baseline(src: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(black_box(src));
}

fn copy_to_owned(src: &[u8]) -> Vec<u8> {
    black_box(src).to_vec()
}

fn benches(c: &mut Criterion) {
    let msg = snapshot();
    let bytes = codec::encode(&msg).expect("encode");
    assert_eq!(bytes.len(), 1200);
    let mut buf = Vec::with_capacity(2048);

    let mut g = c.benchmark_group("snapshot_1200B");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode", |b| b.iter(|| encode_snapshot(&msg, &mut buf)));
    g.bench_function("baseline_copy_into_reused", |b| {
        b.iter(|| copy_baseline(&bytes, &mut buf))
    });
    g.bench_function("decode", |b| b.iter(|| decode_snapshot(&bytes)));
    g.bench_function("baseline_copy_to_owned", |b| {
        b.iter(|| black_box(copy_to_owned(&bytes)))
    });
    g.finish();

    let score = ShardControlMsg::Score(ScoreMsg {
        total: 1_000_000,
        delta: 25,
    });
    let mut framed = Vec::new();
    frame::encode_frame(&score, DEFAULT_MAX_FRAME, &mut framed).expect("frame");
    let mut g = c.benchmark_group("control_frame");
    g.bench_function("encode_frame", |b| {
        b.iter(|| {
            buf.clear();
            frame::encode_frame(black_box(&score), DEFAULT_MAX_FRAME, &mut buf).expect("frame")
        })
    });
    g.bench_function("decode_frame", |b| {
        b.iter(|| {
            frame::decode_frame::<ShardControlMsg>(black_box(&framed), DEFAULT_MAX_FRAME)
                .expect("frame")
        })
    });
    g.finish();
}

/// Best mean time per call over a few rounds of `iters` calls, nanoseconds.
fn time(iters: u32, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() * 1e9 / f64::from(iters)
        })
        .fold(f64::INFINITY, f64::min)
}

fn print_ratios() {
    let msg = snapshot();
    let bytes = codec::encode(&msg).expect("encode");
    let mut buf = Vec::with_capacity(2048);
    let n = 200_000;
    let enc = time(n, || encode_snapshot(&msg, &mut buf));
    let enc_base = time(n, || copy_baseline(&bytes, &mut buf));
    let dec = time(n, || {
        black_box(decode_snapshot(&bytes));
    });
    let dec_base = time(n, || {
        black_box(copy_to_owned(&bytes));
    });
    println!("\nratios, measured side by side in this run (1,200-byte snapshot datagram):");
    println!(
        "  encode {enc:.1} ns vs copy into a reused buffer {enc_base:.1} ns: {:.1}x",
        enc / enc_base
    );
    println!(
        "  decode {dec:.1} ns vs copy to a new buffer {dec_base:.1} ns: {:.1}x",
        dec / dec_base
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    print_ratios();
}
