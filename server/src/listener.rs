//! Listening sockets: one per shard on the same address with SO_REUSEPORT (the kernel spreads
//! new connections across shards), and the accept loop, which backs off when out of descriptors.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::shard::Shard;

/// Pause after an accept error caused by resource exhaustion (EMFILE, ENFILE, ENOBUFS, ENOMEM).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds `count` listeners on `addr`. With port 0 the first picks the port, the rest share it.
pub fn bind(
    addr: SocketAddr,
    backlog: u32,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(addr, backlog)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind_one(addr, backlog)?);
    }
    Ok(all)
}

fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Accepts connections forever, serving each on this shard.
pub async fn accept_loop(listener: tokio::net::TcpListener, shard: Rc<Shard>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(crate::http::serve(stream, shard.clone()));
            }
            Err(e) if is_exhaustion(&e) => {
                tracing::warn!(
                    shard = shard.index,
                    "accept: {e}; pausing {ACCEPT_BACKOFF:?}"
                );
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(e) => tracing::debug!(shard = shard.index, "accept: {e}"),
        }
    }
}

fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
