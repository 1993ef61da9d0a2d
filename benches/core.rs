//! Criterion micro-benchmarks of wsedge's sans-IO hot paths: envelope parsing, frame decoding,
//! message encoding, lz4, and the outbox. Run: `cargo bench -p wsedge-benches`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::io::IoSlice;
use std::sync::Arc;

use wsedge_core::auth::Permissions;
use wsedge_core::broker::{Action, Broker, BrokerConfig, Effects, Peer};
use wsedge_core::ids::ConnId;
use wsedge_core::message::Published;
use wsedge_core::outbox::Outbox;
use wsedge_core::protocol::decoder::Decoder;
use wsedge_core::protocol::envelope;
use wsedge_core::protocol::{compress, frame, reply, Priority};

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

/// The broker's routing of one publish: to a shard without subscribers of the channel (every
/// shard gets every publish, so this is what a publish costs the shards that do not care), and
/// to 1,000 subscribers, effects applied (counted here; queued on connections by a shard).
fn broker_publish(c: &mut Criterion) {
    let mut effects = Effects::default();
    let mut broker = Broker::new(BrokerConfig {
        shard: 0,
        shards: 1,
        presence_max_users: 1000,
        max_subscriptions: 16,
        max_batch_bytes: 64 << 10,
        delivery: Default::default(),
        history: Default::default(),
        boot: 0,
    });
    let peer = Peer {
        lz4: false,
        user: None,
        permissions: Arc::new(Permissions::all()),
    };
    for n in 0..1000 {
        broker.connect(ConnId::new(0, n), peer.clone());
        broker
            .subscribe(ConnId::new(0, n), "fan", false, &mut effects)
            .unwrap();
    }
    let frame = frame::encode(frame::OpCode::Text, PUBLISH.as_bytes());
    let message = |channel| {
        Arc::new(Published::new(
            channel,
            Priority::Normal,
            frame.clone(),
            1024,
        ))
    };
    let (idle, fan) = (message("prices.eur-usd"), message("fan"));
    effects.drain(|_| {});
    let mut g = c.benchmark_group("broker");
    g.bench_function("publish_no_subscribers", |b| {
        b.iter(|| {
            broker.publish(&idle, false, &mut effects);
            black_box(effects.is_empty())
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("publish_1000_subscribers", |b| {
        b.iter(|| {
            broker.publish(&fan, false, &mut effects);
            let mut delivered = 0;
            effects.drain(|action| {
                if let Action::Deliver { to, .. } = action {
                    delivered += to.len();
                }
            });
            black_box(delivered)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    envelope_parse,
    frame_decode,
    message_encode,
    lz4,
    outbox,
    broker_publish
);
criterion_main!(benches);
