//! The task that owns the connection: connects (and reconnects, with full-jitter backoff),
//! resubscribes with recovery, resends what awaits an answer, watches for silence, refreshes
//! the token, and routes what arrives. The application talks to it through [`Command`]s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::command::{server_error, str_of, Command, Pending, Reply};
use crate::error::Error;
use crate::lz4::lz4_text;
use crate::message::{Event, Message};
use crate::options::Options;
use crate::pattern::matches;
use crate::sub::{key, refresh_deadline, Sub};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = futures_util::stream::SplitSink<Ws, Frame>;

/// Why a connection ended: (close code or 0, reason).
type Why = (u16, String);

pub(crate) struct Driver {
    url: String,
    options: Options,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For the token refresh's answer; weak, so the task ends when the last [`crate::Client`]
    /// is dropped.
    commands_tx: mpsc::WeakUnboundedSender<Command>,
    /// Acks, naks and terms from [`Message`]s: sent now or never (the server redelivers).
    settles: mpsc::UnboundedReceiver<Map<String, Value>>,
    settles_tx: mpsc::UnboundedSender<Map<String, Value>>,
    events: broadcast::Sender<Event>,
    connected: Arc<AtomicBool>,
    /// Bytes delivered to subscriptions and not yet taken.
    queued: Arc<AtomicUsize>,
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    subs: Vec<Sub>,
    direct: Option<mpsc::UnboundedSender<Message>>,
    next_ref: u64,
    attempt: u32,
    token: Option<String>,
    closed: bool,
    rng: u64,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        url: String,
        options: Options,
        commands: mpsc::UnboundedReceiver<Command>,
        commands_tx: mpsc::WeakUnboundedSender<Command>,
        events: broadcast::Sender<Event>,
        connected: Arc<AtomicBool>,
        queued: Arc<AtomicUsize>,
    ) -> Driver {
        let (settles_tx, settles) = mpsc::unbounded_channel();
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Driver {
            url,
            token: options.token.clone(),
            options,
            commands,
            commands_tx,
            settles,
            settles_tx,
            events,
            connected,
            queued,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            subs: Vec::new(),
            direct: None,
            next_ref: 0,
            attempt: 0,
            closed: false,
            rng: seed | 1,
        }
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Connects, serves, and reconnects after a backoff, until closed.
    pub(crate) async fn run(mut self) {
        while !self.closed {
            self.emit(Event::Connecting {
                attempt: self.attempt,
            });
            let (code, reason) = match self.connect().await {
                Ok(ws) => self.serve(ws).await,
                Err(e) => (0, e),
            };
            self.lost();
            if self.closed {
                break;
            }
            let retry_in = self.backoff();
            self.emit(Event::Disconnected {
                code,
                reason,
                retry_in,
            });
            let sleep = tokio::time::sleep(retry_in);
            tokio::pin!(sleep);
            while !self.closed {
                tokio::select! {
                    () = &mut sleep => break,
                    // Settles are dropped: the server redelivers what was not settled.
                    _ = self.settles.recv() => {}
                    command = self.commands.recv() => {
                        // Without a connection nothing is sent, so nothing can fail.
                        let _ = self.command(command, None).await;
                    }
                }
            }
        }
        for (_, p) in std::mem::take(&mut self.pending) {
            if let Reply::Request(tx) = p.reply {
                let _ = tx.send(Err(Error::Closed));
            }
        }
        self.emit(Event::Closed);
    }

    /// Full jitter: uniform between `min_delay` and `min(max_delay, min_delay * 2^attempt)`.
    fn backoff(&mut self) -> Duration {
        let o = &self.options;
        let cap = o
            .min_delay
            .saturating_mul(1 << self.attempt.min(16))
            .min(o.max_delay);
        self.attempt += 1;
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span = cap.saturating_sub(o.min_delay);
        o.min_delay + span.mul_f64((self.rng % 1_000_001) as f64 / 1e6)
    }

    async fn connect(&mut self) -> Result<Ws, String> {
        if let Some(get) = self.options.get_token.clone() {
            self.token = Some(get().await.map_err(|e| format!("get_token: {e}"))?);
        }
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let protocols = match self.options.lz4 {
            true => "wsedge.v1.lz4, wsedge.v1",
            false => "wsedge.v1",
        };
        let headers = request.headers_mut();
        headers.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(protocols),
        );
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the token is not a valid header value".to_string())?;
            headers.insert("authorization", value);
        }
        let within = self.options.heartbeat + self.options.grace;
        let config = Some(self.options.websocket_config());
        let connect = tokio_tungstenite::connect_async_with_config(request, config, false);
        match tokio::time::timeout(within, connect).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection within {within:?}")),
        }
    }

    /// One connection, until it ends.
    async fn serve(&mut self, ws: Ws) -> Why {
        let (mut sink, mut stream) = ws.split();
        let mut welcomed = false;
        let mut last_heard = Instant::now();
        let mut last_ping = Instant::now();
        let mut tick = tokio::time::interval(self.options.heartbeat.min(Duration::from_secs(1)));
        let mut refresh_at = self.refresh_at();
        loop {
            tokio::select! {
                frame = stream.next() => {
                    last_heard = Instant::now();
                    let text = match frame {
                        Some(Ok(Frame::Text(text))) => text.into_bytes(),
                        Some(Ok(Frame::Binary(bytes))) => match lz4_text(&bytes, self.options.max_message_size) {
                            Ok(text) => text,
                            Err(why) => return why,
                        },
                        Some(Ok(Frame::Close(frame))) => {
                            return frame.map_or((1005, "closed".into()), |f| (f.code.into(), f.reason.into_owned()));
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return (0, e.to_string()),
                        None => return (1006, "connection closed".into()),
                    };
                    if let Err(why) = self.on_frame(&text, &mut sink, &mut welcomed).await {
                        return why;
                    }
                    if self.queued.load(Ordering::Relaxed) > self.options.max_queued_bytes {
                        let _ = sink.close().await;
                        return (0, "the application is not taking its messages (max_queued_bytes)".into());
                    }
                }
                command = self.commands.recv() => {
                    let ready = welcomed.then_some(&mut sink);
                    if let Err(e) = self.command(command, ready).await {
                        return (0, e);
                    }
                    if self.closed {
                        let close = CloseFrame { code: CloseCode::Normal, reason: "client closed".into() };
                        let _ = sink.send(Frame::Close(Some(close))).await;
                        return (1000, "client closed".into());
                    }
                }
                Some(frame) = self.settles.recv() => {
                    if welcomed {
                        if let Err(e) = sink.send(Frame::text(Value::Object(frame).to_string())).await {
                            return (0, e.to_string());
                        }
                    }
                }
                _ = tick.tick() => {
                    let quiet = last_heard.elapsed();
                    if quiet > self.options.heartbeat + self.options.grace {
                        return (4000, format!("nothing heard for {} ms", quiet.as_millis()));
                    }
                    if welcomed && last_ping.elapsed() >= self.options.heartbeat {
                        last_ping = Instant::now();
                        if let Err(e) = sink.send(Frame::text(r#"{"op":"ping"}"#)).await {
                            return (0, e.to_string());
                        }
                    }
                    if refresh_at.is_some_and(|at| Instant::now() >= at) {
                        refresh_at = None;
                        self.fetch_token();
                    }
                }
            }
        }
    }

    /// When to fetch a fresh token: `refresh_before` ahead of the current one's `exp`.
    fn refresh_at(&self) -> Option<Instant> {
        self.options.get_token.as_ref()?;
        refresh_deadline(self.token.as_deref()?, self.options.refresh_before)
    }

    /// Calls `get_token` off the connection's task; the token comes back as a command.
    fn fetch_token(&self) {
        let (Some(get), Some(tx), events) = (
            self.options.get_token.clone(),
            self.commands_tx.upgrade(),
            self.events.clone(),
        ) else {
            return;
        };
        tokio::spawn(async move {
            match get().await {
                Ok(token) => {
                    let _ = tx.send(Command::Refresh(token));
                }
                Err(e) => {
                    let _ = events.send(Event::Error(Error::Invalid(format!("get_token: {e}"))));
                }
            }
        });
    }

    async fn on_frame(
        &mut self,
        text: &[u8],
        sink: &mut Sink,
        welcomed: &mut bool,
    ) -> Result<(), Why> {
        let Ok(Value::Object(frame)) = serde_json::from_slice::<Value>(text) else {
            return Err((
                1007,
                "the server sent a frame that is not a JSON object".into(),
            ));
        };
        match frame.get("op").and_then(Value::as_str).unwrap_or("") {
            "welcome" => {
                *welcomed = true;
                self.attempt = 0;
                self.connected.store(true, Ordering::Relaxed);
                let connection = frame
                    .get("connection")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                self.emit(Event::Connected { connection });
                // Subscriptions first, so a resent publish reaches this client's own too.
                for i in 0..self.subs.len() {
                    self.send_subscribe(i, sink).await?;
                }
                let resend: Vec<String> = self
                    .pending
                    .values()
                    .filter_map(|p| p.text.clone())
                    .collect();
                for text in resend {
                    sink.send(Frame::text(text))
                        .await
                        .map_err(|e| (0, e.to_string()))?;
                }
            }
            "message" => self.deliver(&frame, text.len()),
            "join" | "leave" => self.emit(Event::Presence {
                channel: str_of(&frame, "channel"),
                joined: frame.get("op") == Some(&json!("join")),
                user: frame.get("user").and_then(Value::as_str).map(String::from),
                connection: str_of(&frame, "connection"),
            }),
            "pong" => {}
            _ => self.answer(frame),
        }
        Ok(())
    }

    fn deliver(&mut self, frame: &Map<String, Value>, bytes: usize) {
        let message = Message::from_frame(frame, bytes, self.settles_tx.clone());
        let Some(channel) = message.channel.clone() else {
            if let Some(direct) = &self.direct {
                self.queued.fetch_add(bytes, Ordering::Relaxed);
                let _ = direct.send(message);
            }
            return;
        };
        let (epoch, offset) = (message.epoch.clone(), message.offset);
        for sub in &mut self.subs {
            if matches(&sub.channel, &channel) && sub.options.ack == message.needs_ack {
                if !sub.fresh(epoch.as_deref(), offset) {
                    continue;
                }
                self.queued.fetch_add(bytes, Ordering::Relaxed);
                let copy = Message::from_frame(frame, bytes, self.settles_tx.clone());
                let _ = sub.messages.send(copy);
            }
        }
    }

    fn answer(&mut self, frame: Map<String, Value>) {
        let error = frame.get("op") == Some(&json!("error"));
        let Some(p) = frame
            .get("ref")
            .and_then(Value::as_u64)
            .and_then(|r| self.pending.remove(&r))
        else {
            if error {
                self.emit(Event::Error(server_error(&frame)));
            }
            return;
        };
        self.pending_bytes -= p.text.as_ref().map_or(0, String::len);
        match p.reply {
            Reply::Request(tx) => {
                let _ = tx.send(if error {
                    Err(server_error(&frame))
                } else {
                    Ok(Value::Object(frame))
                });
            }
            Reply::Ignore if error => self.emit(Event::Error(server_error(&frame))),
            Reply::Ignore => {}
            Reply::Subscribe { key, asked_since } => {
                self.subscribed(&key, asked_since, &frame, error)
            }
        }
    }

    fn subscribed(
        &mut self,
        key: &str,
        asked_since: bool,
        frame: &Map<String, Value>,
        error: bool,
    ) {
        let Some(i) = self.subs.iter().position(|s| s.key() == key) else {
            return;
        };
        if error {
            let sub = self.subs.remove(i);
            if let Some(first) = sub.first {
                let _ = first.send(Err(server_error(frame)));
            } else {
                self.emit(Event::Error(server_error(frame)));
            }
            return;
        }
        let sub = &mut self.subs[i];
        if let (Some(epoch), Some(offset)) = (
            frame.get("epoch").and_then(Value::as_str),
            frame.get("offset").and_then(Value::as_u64),
        ) {
            let lost = frame.get("recovered") == Some(&Value::Bool(false));
            let event = asked_since.then(|| Event::Recovery {
                channel: sub.channel.clone(),
                recovered: !lost,
            });
            // After a recovery the replayed messages move the position (the ok may come first:
            // it travels in the critical lane); otherwise it starts at the ok's.
            let other_epoch = sub.position.as_ref().is_none_or(|(e, _)| e != epoch);
            if lost || other_epoch {
                sub.position = Some((epoch.to_string(), offset));
            }
            if let Some(event) = event {
                self.emit(event);
            }
        }
        if let Some(first) = self.subs[i].first.take() {
            let _ = first.send(Ok(()));
        }
    }

    async fn send_subscribe(&mut self, i: usize, sink: &mut Sink) -> Result<(), Why> {
        let sub = &self.subs[i];
        let resume = if sub.options.no_recover {
            None
        } else {
            sub.position.as_ref()
        };
        let mut frame = sub.options.frame(&sub.channel, resume);
        let asked_since = frame.contains_key("since");
        let key = sub.key();
        self.next_ref += 1;
        frame.insert("ref".into(), self.next_ref.into());
        self.pending.insert(
            self.next_ref,
            Pending {
                text: None,
                reply: Reply::Subscribe { key, asked_since },
            },
        );
        sink.send(Frame::text(Value::Object(frame).to_string()))
            .await
            .map_err(|e| (0, e.to_string()))
    }

    /// Carries out `command` (`None`: the client is gone); `sink` when welcomed.
    async fn command(
        &mut self,
        command: Option<Command>,
        sink: Option<&mut Sink>,
    ) -> Result<(), String> {
        let Some(command) = command else {
            self.closed = true;
            return Ok(());
        };
        match command {
            Command::Close => self.closed = true,
            Command::Request { frame, reply } => {
                self.request(frame, Reply::Request(reply), true, sink)
                    .await?
            }
            Command::Refresh(token) => {
                self.token = Some(token.clone());
                let frame = json!({"op": "refresh", "token": token});
                let Value::Object(frame) = frame else {
                    unreachable!()
                };
                self.request(frame, Reply::Ignore, false, sink).await?;
            }
            Command::Direct(messages) => self.direct = Some(messages),
            Command::Subscribe {
                channel,
                options,
                messages,
                reply,
            } => {
                let key = key(&channel, options.group.as_deref());
                if self.subs.iter().any(|s| s.key() == key) {
                    let _ = reply.send(Err(Error::Invalid(format!(
                        "already subscribed to {channel}"
                    ))));
                    return Ok(());
                }
                let position = options.since.clone();
                self.subs.push(Sub {
                    channel,
                    options,
                    messages,
                    position,
                    first: Some(reply),
                });
                if let Some(sink) = sink {
                    self.send_subscribe(self.subs.len() - 1, sink)
                        .await
                        .map_err(|(_, e)| e)?;
                }
            }
            Command::Unsubscribe {
                channel,
                group,
                reply,
            } => {
                let key = key(&channel, group.as_deref());
                self.subs.retain(|s| s.key() != key);
                let mut frame = Map::new();
                frame.insert("op".into(), "unsubscribe".into());
                frame.insert("channel".into(), channel.into());
                if let Some(group) = group {
                    frame.insert("group".into(), group.into());
                }
                match sink {
                    Some(sink) => {
                        self.request(frame, Reply::Request(reply), false, Some(sink))
                            .await?
                    }
                    None => {
                        let _ = reply.send(Ok(Value::Null));
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends `frame` with a fresh ref (now, when connected); `buffer`: kept and resent after a
    /// reconnect until answered, within `buffer_max` and `buffer_max_bytes`.
    async fn request(
        &mut self,
        mut frame: Map<String, Value>,
        reply: Reply,
        buffer: bool,
        sink: Option<&mut Sink>,
    ) -> Result<(), String> {
        self.next_ref += 1;
        frame.insert("ref".into(), self.next_ref.into());
        let text = Value::Object(frame).to_string();
        let o = &self.options;
        let refuse = if !buffer && sink.is_none() {
            Some(Error::Disconnected)
        } else if buffer
            && (self.pending.len() >= o.buffer_max
                || self.pending_bytes + text.len() > o.buffer_max_bytes)
        {
            Some(Error::BufferFull(self.pending.len()))
        } else {
            None
        };
        if let Some(error) = refuse {
            if let Reply::Request(tx) = reply {
                let _ = tx.send(Err(error));
            }
            return Ok(());
        }
        if let Some(sink) = sink {
            sink.send(Frame::text(text.clone()))
                .await
                .map_err(|e| e.to_string())?;
        }
        self.pending_bytes += if buffer { text.len() } else { 0 };
        let text = buffer.then_some(text);
        self.pending.insert(self.next_ref, Pending { text, reply });
        Ok(())
    }

    /// The connection is gone: answers that will not come are forgotten (buffered requests
    /// stay, to be resent).
    fn lost(&mut self) {
        self.connected.store(false, Ordering::Relaxed);
        let gone: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.text.is_none())
            .map(|(r, _)| *r)
            .collect();
        for r in gone {
            if let Some(Pending {
                reply: Reply::Request(tx),
                ..
            }) = self.pending.remove(&r)
            {
                let _ = tx.send(Err(Error::Disconnected));
            }
        }
    }
}
