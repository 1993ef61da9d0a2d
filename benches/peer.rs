//! A minimal plain-fastwebsockets server, with no wsedge code, as the reference peer for
//! `scripts/compare-peer.sh`: `/echo` echoes every message; `/broadcast` sends every message
//! it receives to every `/broadcast` connection. Multi-threaded tokio, one task per connection
//! reading and one writing, a `tokio::sync::broadcast` channel for the fan-out.
//!
//! Usage: `fws-peer [ADDR]` (default 127.0.0.1:0); prints `fws-peer listening on ADDR`.

use std::convert::Infallible;

use bytes::Bytes;
use fastwebsockets::{upgrade, FragmentCollectorRead, Frame, OpCode, Payload};
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;

/// Messages a slow broadcast receiver may lag behind before it misses some.
const BROADCAST_CAPACITY: usize = 65_536;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("fws-peer listening on {}", listener.local_addr()?);
    let (tx, _) = broadcast::channel::<Bytes>(BROADCAST_CAPACITY);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, tx.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn handle(
    mut req: Request<hyper::body::Incoming>,
    tx: broadcast::Sender<Bytes>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let Ok((response, fut)) = upgrade::upgrade(&mut req) else {
        let mut r = Response::new(Empty::new());
        *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
        return Ok(r);
    };
    tokio::spawn(async move {
        let Ok(ws) = fut.await else { return };
        let (rx, mut writer) = ws.split(tokio::io::split);
        let mut reader = FragmentCollectorRead::new(rx);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<(OpCode, Bytes)>(1024);
        let broadcast_rx = (path == "/broadcast").then(|| tx.subscribe());
        // Writer: echo replies and broadcasts.
        let write = tokio::spawn(async move {
            let mut broadcast_rx = broadcast_rx;
            loop {
                let next = match &mut broadcast_rx {
                    Some(b) => tokio::select! {
                        m = out_rx.recv() => m,
                        m = b.recv() => match m {
                            Ok(bytes) => Some((OpCode::Text, bytes)),
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => None,
                        },
                    },
                    None => out_rx.recv().await,
                };
                let Some((opcode, bytes)) = next else { break };
                let frame = Frame::new(true, opcode, None, Payload::Borrowed(&bytes));
                if writer.write_frame(frame).await.is_err() {
                    break;
                }
            }
        });
        let mut obligated = |frame: Frame<'_>| {
            let out = out_tx.clone();
            let (opcode, bytes) = (frame.opcode, Bytes::copy_from_slice(&frame.payload));
            async move {
                out.send((opcode, bytes))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
            }
        };
        while let Ok(frame) = reader.read_frame(&mut obligated).await {
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => {
                    let bytes = Bytes::copy_from_slice(&frame.payload);
                    if path == "/broadcast" {
                        let _ = tx.send(bytes);
                    } else if out_tx.send((frame.opcode, bytes)).await.is_err() {
                        break;
                    }
                }
                _ => {}
            }
        }
        drop(out_tx);
        write.abort();
    });
    Ok(response)
}
