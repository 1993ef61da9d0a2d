//! An upgraded connection's byte stream: plain TCP, or TCP under a rustls session. Both are
//! driven by socket readiness from the connection task: plain TCP writes the outbox's slices
//! with one vectored `writev`, TLS encrypts them into its send buffer (at most
//! [`crate::tls::TLS_BUFFER_LIMIT`]) and writes the records out.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};

use tokio::net::TcpStream;

/// The transport under a WebSocket connection.
pub enum Stream {
    Plain(TcpStream),
    Tls(TcpStream, Box<RefCell<rustls::ServerConnection>>),
}

impl Stream {
    /// A TLS stream continuing the session the HTTP phase began.
    pub fn tls(tcp: TcpStream, mut session: rustls::ServerConnection) -> Self {
        session.set_buffer_limit(Some(crate::tls::TLS_BUFFER_LIMIT));
        Stream::Tls(tcp, Box::new(RefCell::new(session)))
    }

    /// The TCP socket.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) | Stream::Tls(tcp, _) => tcp,
        }
    }

    /// Reads plaintext into `buf`: `Ok(0)` at the end of the stream, `WouldBlock` when nothing
    /// has arrived.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (tcp, session) = match self {
            Stream::Plain(tcp) => return tcp.try_read(buf),
            Stream::Tls(tcp, session) => (tcp, session),
        };
        let mut session = session.borrow_mut();
        loop {
            match session.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                result => return result,
            }
            if session.read_tls(&mut SocketIo(tcp))? == 0 {
                return Ok(0);
            }
            if let Err(e) = session.process_new_packets() {
                // Send the alert that says why, if the socket takes it.
                let _ = session.write_tls(&mut SocketIo(tcp));
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Writes the front of `slices`; returns the plaintext bytes taken (`WouldBlock` when none).
    /// With TLS, what was taken may still wait in the session: see [`Stream::has_buffered`].
    pub fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let (tcp, session) = match self {
            Stream::Plain(tcp) => return tcp.try_write_vectored(slices),
            Stream::Tls(tcp, session) => (tcp, session),
        };
        let mut session = session.borrow_mut();
        send_buffered(&mut session, tcp)?;
        let taken = session.writer().write_vectored(slices)?;
        match send_buffered(&mut session, tcp) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ if taken == 0 => Err(io::ErrorKind::WouldBlock.into()),
            _ => Ok(taken),
        }
    }

    /// Sends what a TLS session still holds; `WouldBlock` when the socket is full.
    pub fn flush_buffered(&self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(tcp, session) => send_buffered(&mut session.borrow_mut(), tcp),
        }
    }

    /// Whether a TLS session holds records not yet written to the socket.
    pub fn has_buffered(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(_, session) => session.borrow().wants_write(),
        }
    }

    /// Ends the TLS session (close_notify) if there is one; the caller then half-closes TCP.
    pub fn close_notify(&self) {
        if let Stream::Tls(tcp, session) = self {
            let mut session = session.borrow_mut();
            session.send_close_notify();
            let _ = send_buffered(&mut session, tcp);
        }
    }
}

/// Writes the session's records until it has none or the socket is full.
fn send_buffered(session: &mut rustls::ServerConnection, tcp: &TcpStream) -> io::Result<()> {
    while session.wants_write() {
        session.write_tls(&mut SocketIo(tcp))?;
    }
    Ok(())
}

/// Non-blocking reads and writes on a tokio socket, for rustls's `read_tls` / `write_tls`.
struct SocketIo<'a>(&'a TcpStream);

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
