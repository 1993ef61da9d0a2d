//! Criterion micro-benchmarks of wsedge's sans-IO hot paths: envelope parsing, frame decoding,
//! message encoding, lz4, and the outbox. Run: `cargo bench -p wsedge-benches`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::io::IoSlice;
use std::sync::Arc;

use wsedge::message::Published;
use wsedge::outbox::Outbox;
use wsedge::protocol::decoder::Decoder;
use wsedge::protocol::envelope;
use wsedge::protocol::{compress, frame, reply, Priority};
use wsedge::shard::channels::Channels;
use wsedge::shard::mailbox::Mailbox;

const PUBLISH: &str = r#"{"op":"publish","channel":"prices.eur-usd","priority":"high","ref":42,"data":{"bid":1.0841,"ask":1.0843,"ts":1732370000123,"venue":"XNAS","seq":918273}}"#;

fn envelope_parse(c: &mut Criterion) {
    let mut buffers = simd_json::Buffers::default();
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Bytes(PUBLISH.len() as u64));
    g.bench_function("parse_publish", |b| {
        b.iter_batched_ref(
            || PUBLISH.as_bytes().to_vec(),
            |buf| {
                let request = envelope::parse(buf, &mut buffers, 128).unwrap();
                black_box(request.op);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn frame_decode(c: &mut Criterion) {
    let wire: Vec<u8> = (0..64)
        .flat_map(|_| frame::encode_client(true, 1, PUBLISH.as_bytes(), [1, 2, 3, 4]))
        .collect();
    let mut g = c.benchmark_group("decoder");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("64_text_frames", |b| {
        let mut decoder = Decoder::new(1 << 20, 16_384);
        b.iter(|| {
            let mut input = &wire[..];
            while !input.is_empty() {
                black_box(decoder.decode(&mut input).unwrap());
            }
        })
    });
    g.finish();
}

fn message_encode(c: &mut Criterion) {
    let mut buf =
        br#"{"bid":1.0841,"ask":1.0843,"ts":1732370000123,"venue":"XNAS","seq":918273}"#.to_vec();
    let data = simd_json::to_borrowed_value(&mut buf).unwrap();
    c.bench_function("encode/message_frame", |b| {
        b.iter(|| {
            reply::message(
                black_box("prices.eur-usd"),
                "6744a3f1-0-1f",
                Priority::High,
                &data,
                80,
            )
        })
    });
}

fn lz4(c: &mut Criterion) {
    let text = format!(
        r#"{{"op":"message","channel":"c","id":"x","priority":"normal","data":[{}]}}"#,
        PUBLISH.repeat(24)
    );
    let mut g = c.benchmark_group("lz4");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("frame_4k", |b| {
        b.iter(|| compress::lz4_frame(black_box(text.as_bytes())))
    });
    g.finish();
}

fn outbox(c: &mut Criterion) {
    let frame = Bytes::from(frame::encode(frame::OpCode::Text, PUBLISH.as_bytes()).to_vec());
    let mut g = c.benchmark_group("outbox");
    g.throughput(Throughput::Elements(256));
    g.bench_function("push_gather_consume_256", |b| {
        let mut outbox = Outbox::new(4 << 20);
        b.iter(|| {
            for i in 0..256 {
                outbox.push(Priority::ALL[i % 4], frame.clone());
            }
            while !outbox.is_empty() {
                let written = {
                    let mut slices = [IoSlice::new(&[]); 256];
                    outbox.gather(64 << 10, &mut slices).1
                };
                outbox.consume(written);
            }
        })
    });
    g.finish();
}

/// What broadcasting a publish to a shard without subscribers costs that shard and the sender:
/// a lock-free queue push and pop plus a channel-index miss. Compared with a delivery (a
/// `writev` of ~2 µs on loopback), it is why wsedge forwards every publish to every shard
/// instead of tracking which shards subscribe.
fn forward_to_idle_shard(c: &mut Criterion) {
    let mailbox = Mailbox::new(1024, 1 << 30);
    let mut channels = Channels::default();
    let frame = frame::encode(frame::OpCode::Text, PUBLISH.as_bytes());
    let message = Arc::new(Published::new(
        "prices.eur-usd",
        Priority::Normal,
        frame,
        1024,
    ));
    c.bench_function("shard/forward_to_idle_shard", |b| {
        b.iter(|| {
            assert!(mailbox.reserve(message.frame.len()));
            mailbox.push_reserved(message.clone());
            let m = mailbox.try_pop().unwrap();
            black_box(channels.publish(&m, false, usize::MAX))
        })
    });
}

criterion_group!(
    benches,
    envelope_parse,
    frame_decode,
    message_encode,
    lz4,
    outbox,
    forward_to_idle_shard
);
criterion_main!(benches);
