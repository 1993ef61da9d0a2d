//! Test support: the real `wsedge` binary on port 0, and small clients.
#![allow(dead_code)]

pub mod browser;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take before the test fails.
pub const STEP: Duration = Duration::from_secs(20);

/// A `wsedge` process listening on 127.0.0.1 with a kernel-chosen port.
pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    /// Its store's directory (a fresh one under the temp dir unless `STORE_PATH` was given).
    pub store: std::path::PathBuf,
    /// The store is this server's own: removed when it is dropped.
    owns_store: bool,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.owns_store {
            let _ = self.child.start_kill();
            let _ = std::fs::remove_dir_all(&self.store);
        }
    }
}

/// A server to kill and restart mid-test on the same store (and, with `("LISTEN", addr)`
/// pushed, the same port): 2 shards and durable channel history in `store`.
pub fn durable_history(store: &str) -> Vec<(&str, &str)> {
    vec![
        ("SERVER_SHARDS", "2"),
        ("HISTORY_SIZE", "10000"),
        ("HISTORY_DURABLE", "true"),
        ("STORE_PATH", store),
    ]
}

/// A directory no other test server uses.
pub fn fresh_store_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("wsedge-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl TestServer {
    /// Starts the binary with `WSEDGE_*` overrides (e.g. `("SERVER_SHARDS", "2")`); two are
    /// not config: `("LISTEN", addr)` listens on `addr` instead of a free port, and
    /// `("STORE_PATH", dir)` uses that store and leaves it in place when dropped.
    pub async fn start(overrides: &[(&str, &str)]) -> Result<TestServer> {
        Self::start_with_nofile(overrides, None).await
    }

    /// As [`TestServer::start`], with the open-file limit (soft and hard) set to `nofile`.
    pub async fn start_with_nofile(
        overrides: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Result<TestServer> {
        // WSEDGE_TEST_BINARY runs the tests against another build, with its own embedded config
        // (e.g. to see a test fail without the code it covers).
        let mut cmd = match std::env::var_os("WSEDGE_TEST_BINARY") {
            Some(binary) => Command::new(binary),
            None => {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsedge"));
                cmd.env(
                    "WSEDGE_CONFIG",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../config/wsedge.toml"),
                );
                cmd
            }
        };
        cmd.env_remove("WSEDGE_TEST_BINARY");
        if let Some(n) = nofile {
            // SAFETY: the closure only calls setrlimit, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let listen = overrides
            .iter()
            .find(|(key, _)| *key == "LISTEN")
            .map_or("127.0.0.1:0", |(_, addr)| *addr);
        cmd.args(["--listen", listen])
            .env("WSEDGE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let given = overrides.iter().find(|(key, _)| *key == "STORE_PATH");
        let owns_store = given.is_none();
        let store = given.map_or_else(fresh_store_dir, |(_, path)| path.into());
        cmd.env("WSEDGE_STORE_PATH", &store);
        for (key, value) in overrides.iter().filter(|(key, _)| *key != "LISTEN") {
            cmd.env(format!("WSEDGE_{key}"), value);
        }
        let mut child = cmd.spawn().context("spawning wsedge")?;
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(STEP, lines.next_line())
            .await
            .context("wsedge did not start")??
            .context("wsedge exited before listening")?;
        let addr = line
            .split_whitespace()
            .nth(3)
            .with_context(|| format!("unexpected first line {line:?}"))?
            .parse()?;
        Ok(TestServer {
            child,
            addr,
            store,
            owns_store,
        })
    }

    /// Kills the process with SIGKILL (a crash: nothing is flushed) and waits for it.
    pub async fn kill9(mut self) -> Result<()> {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) on the PID of our own child process.
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            bail!("kill failed");
        }
        tokio::time::timeout(STEP, self.child.wait()).await??;
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> Result<std::process::ExitStatus> {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) on the PID of our own child process.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("kill failed");
        }
        Ok(tokio::time::timeout(STEP, self.child.wait()).await??)
    }

    /// `GET path` over plain HTTP/1.1; returns (status, body).
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        self.http("GET", path, &[]).await
    }

    /// `METHOD path` with `headers` ("Name: value" lines) over plain HTTP/1.1; returns
    /// (status, body).
    pub async fn http(&self, method: &str, path: &str, headers: &[&str]) -> Result<(u16, String)> {
        self.http_body(method, path, headers, "").await
    }

    /// As [`TestServer::http`], with `body` (sent with its length unless the method is GET
    /// and the body empty).
    pub async fn http_body(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &str,
    ) -> Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(self.addr).await?;
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        if method != "GET" || !body.is_empty() {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body);
        s.write_all(request.as_bytes()).await?;
        let mut out = String::new();
        tokio::time::timeout(STEP, s.read_to_string(&mut out)).await??;
        let status = out
            .split_whitespace()
            .nth(1)
            .context("no status")?
            .parse()?;
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Ok((status, body))
    }

    pub async fn health(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.get("/health").await?.1)?)
    }
}

/// The HS256 secret the identity tests give the server (`AUTH_HS256_SECRET`).
pub const SECRET: &str = "a test secret of at least 32 bytes!";

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 JWT of `claims`, signed with `secret`.
pub fn sign(claims: &Value, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
}

/// A token of [`SECRET`] for `user`, valid for `seconds`.
pub fn token(user: &str, seconds: u64) -> String {
    sign(&json!({"sub": user, "exp": unix_now() + seconds}), SECRET)
}

/// Starts the binary with `overrides` expecting it to refuse; returns what it printed on stderr.
pub async fn start_error(overrides: &[(&str, &str)]) -> Result<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsedge"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("WSEDGE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if !overrides.iter().any(|(key, _)| *key == "STORE_PATH") {
        cmd.env("WSEDGE_STORE_PATH", fresh_store_dir());
    }
    for (key, value) in overrides {
        cmd.env(format!("WSEDGE_{key}"), value);
    }
    let output = tokio::time::timeout(STEP, cmd.spawn()?.wait_with_output())
        .await
        .context("the server started")??;
    if output.status.success() {
        bail!("the server exited with success");
    }
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A WebSocket upgrade request for `path`, as raw bytes.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// Sends `request` on a new socket and reads the response head (up to the blank line).
pub async fn raw_request(server: &TestServer, request: &[u8]) -> Result<(TcpStream, String)> {
    raw_request_from(server, "127.0.0.1", request).await
}

/// As [`raw_request`], from the source address `source` (any of 127.0.0.0/8).
pub async fn raw_request_from(
    server: &TestServer,
    source: &str,
    request: &[u8],
) -> Result<(TcpStream, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    let mut s = socket.connect(server.addr).await?;
    s.write_all(request).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(
            tokio::time::timeout(STEP, s.read_u8())
                .await
                .context("no response")??,
        );
    }
    Ok((s, String::from_utf8_lossy(&head).into_owned()))
}

/// Opens a raw WebSocket on `/ws` and returns the socket after the 101 response (the welcome
/// frame is still unread).
pub async fn raw_upgrade(server: &TestServer) -> Result<TcpStream> {
    let (s, head) = raw_request(server, upgrade_request("/ws").as_bytes()).await?;
    if !head.starts_with("HTTP/1.1 101") {
        bail!("expected 101, got {head}");
    }
    Ok(s)
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    wsedge_core::protocol::frame::encode_client(fin, opcode, payload, [1, 2, 3, 4])
}

/// A masked client text frame holding a whole message.
pub fn masked_text(payload: &[u8]) -> Vec<u8> {
    client_frame(true, 1, payload)
}

/// Reads one server frame from a raw socket: (opcode, payload).
pub async fn read_frame(s: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let (b0, b1) = (s.read_u8().await?, s.read_u8().await?);
    let len = match b1 & 0x7f {
        126 => s.read_u16().await? as usize,
        127 => s.read_u64().await? as usize,
        n => n as usize,
    };
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await?;
    Ok((b0 & 0x0f, payload))
}

/// Reads server frames from a raw socket until a close frame: (opcode, payload) each.
pub async fn read_until_close(mut s: TcpStream) -> Result<Vec<(u8, Vec<u8>)>> {
    let mut frames = Vec::new();
    loop {
        let frame = read_frame(&mut s).await?;
        let close = frame.0 == 0x8;
        frames.push(frame);
        if close {
            return Ok(frames);
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol v1 client that has read its welcome.
pub struct Client {
    pub ws: Ws,
    pub shard: u64,
    pub connection: String,
    /// The welcome's `user` (null when anonymous).
    pub user: Value,
}

impl Client {
    pub async fn connect(server: &TestServer) -> Result<Client> {
        Self::connect_with(server, None).await
    }

    /// Connects to `/ws`, asking for `subprotocol` if given.
    pub async fn connect_with(server: &TestServer, subprotocol: Option<&str>) -> Result<Client> {
        let mut request = server.url("/ws").into_client_request()?;
        if let Some(p) = subprotocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p)?);
        }
        Self::connect_request(request).await
    }

    /// Connects with `request` (any path, query and headers) and reads the welcome.
    pub async fn connect_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<Client> {
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        let mut client = Client {
            ws,
            shard: 0,
            connection: String::new(),
            user: Value::Null,
        };
        let welcome = client.recv_json().await?;
        assert_eq!(welcome["op"], "welcome", "{welcome}");
        assert_eq!(welcome["protocol"], 1);
        client.shard = welcome["shard"].as_u64().context("shard")?;
        client.connection = welcome["connection"]
            .as_str()
            .context("connection")?
            .to_string();
        client.user = welcome["user"].clone();
        Ok(client)
    }

    /// Connects to `/ws?token=<token>`.
    pub async fn connect_with_token(server: &TestServer, token: &str) -> Result<Client> {
        let url = server.url(&format!("/ws?token={token}"));
        Self::connect_request(url.as_str().into_client_request()?).await
    }

    /// A connection of `user` (a [`token`] valid for 10 minutes) on `shard`.
    pub async fn user_on_shard(server: &TestServer, user: &str, shard: u64) -> Result<Client> {
        let token = token(user, 600);
        for _ in 0..200 {
            let c = Self::connect_with_token(server, &token).await?;
            if c.shard == shard {
                return Ok(c);
            }
            // Closed, not dropped, so that it no longer counts as one of the user's connections.
            c.close().await?;
        }
        bail!("no connection landed on shard {shard}")
    }

    /// A client on `shard` (connects until the kernel's SO_REUSEPORT hash lands one there).
    pub async fn connect_on_shard(server: &TestServer, shard: u64) -> Result<Client> {
        for _ in 0..200 {
            let c = Client::connect(server).await?;
            if c.shard == shard {
                return Ok(c);
            }
        }
        bail!("no connection landed on shard {shard}")
    }

    pub async fn send(&mut self, v: Value) -> Result<()> {
        Ok(self.ws.send(Message::text(v.to_string())).await?)
    }

    pub async fn send_raw(&mut self, m: Message) -> Result<()> {
        Ok(self.ws.send(m).await?)
    }

    /// The next data or close message (pings and pongs skipped).
    pub async fn recv(&mut self) -> Result<Message> {
        loop {
            let m = tokio::time::timeout(STEP, self.ws.next())
                .await
                .context("timed out waiting for a message")?;
            match m.context("stream ended")?? {
                Message::Ping(_) | Message::Pong(_) => continue,
                m => return Ok(m),
            }
        }
    }

    pub async fn recv_json(&mut self) -> Result<Value> {
        match self.recv().await? {
            Message::Text(t) => Ok(serde_json::from_str(&t)?),
            other => bail!("expected a text frame, got {other:?}"),
        }
    }

    /// Sends `request` with `ref` and expects `{"op":"ok","ref":...}`.
    pub async fn request_ok(&mut self, mut request: Value, reference: &str) -> Result<()> {
        request["ref"] = json!(reference);
        self.send(request).await?;
        let reply = self.recv_json().await?;
        if reply != json!({"op": "ok", "ref": reference}) {
            bail!("expected ok for {reference}, got {reply}");
        }
        Ok(())
    }

    pub async fn subscribe(&mut self, channel: &str) -> Result<()> {
        self.request_ok(json!({"op": "subscribe", "channel": channel}), "sub")
            .await
    }

    /// Closes the connection and waits for the server's close frame: by then the server has
    /// dropped the connection from its shard.
    pub async fn close(mut self) -> Result<()> {
        self.ws.close(None).await?;
        while !self.recv().await?.is_close() {}
        Ok(())
    }

    /// Expects a close frame and returns its code and reason.
    pub async fn expect_close(&mut self) -> Result<(u16, String)> {
        loop {
            match self.recv().await? {
                Message::Close(Some(CloseFrame { code, reason })) => {
                    return Ok((code.into(), reason.to_string()))
                }
                Message::Close(None) => bail!("close without a code"),
                _ => continue,
            }
        }
    }
}
