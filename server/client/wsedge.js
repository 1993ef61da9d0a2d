// wsedge.js: the browser client for wsedge (protocol v1, server/PROTOCOL.md). One ES module, no
// dependencies; the server serves it at GET /client/wsedge.js, and a bundler can import it.
// Types: wsedge.d.ts beside it.
//
// What it does for the application:
// - reconnects with full-jitter exponential backoff (0.5 s doubling to 20 s by default);
// - a watchdog: it pings every `heartbeat` ms and reconnects when nothing at all arrived for
//   `heartbeat` + `grace` ms (a dead link is noticed in seconds, not when TCP gives up);
// - tokens: `getToken()` is called before every connect and again `refreshBefore` ms before the
//   token's `exp`, and the new token is sent with the `refresh` op;
// - resubscribes after a reconnect, with `since` (the last epoch and offset seen) on channels
//   with history, so missed messages are replayed; when the server cannot (`recovered:false`)
//   the subscription's `recovery` event says so, it is never hidden;
// - publishes and sends carry a `msg_id` (generated unless given) and stay buffered (bounded by
//   `bufferMax` messages and `bufferMaxBytes`) until the server's `ok`: made while disconnected
//   or lost with a connection, they are sent again after the reconnect, and the server's dedup
//   window turns a repeat into `duplicate`, so each is published once;
// - acks for `ack` subscriptions and acknowledged sends: after the handler returns (or its
//   promise resolves) unless the handler settled the message itself with `ack()`, `nak(ms)` or
//   `term(reason)`; a handler that throws naks it;
// - lz4 (`wsedge.v1.lz4`), when `lz4: true`: large messages arrive compressed.

const DEFAULTS = {
  token: undefined, // a JWT; or getToken
  getToken: undefined, // async () => JWT, called before each connect and before expiry
  minDelay: 500, // ms, first reconnect delay bound
  maxDelay: 20000, // ms, largest reconnect delay bound
  heartbeat: 10000, // ms between the client's pings
  grace: 5000, // ms: reconnect when nothing was heard for heartbeat + grace
  refreshBefore: 30000, // ms before `exp` that a refreshed token is sent
  bufferMax: 1000, // publishes and sends waiting for their ok, at most
  bufferMaxBytes: 1 << 20, // and at most these bytes of them
  lz4: false,
  maxMessageSize: 16 << 20, // bytes of an lz4 message decompressed, at most (else an `error`, and it is skipped)
  WebSocket: undefined, // a WebSocket class, for runtimes without a global one
};

/** An error answer from the server (`code` as in PROTOCOL.md), or a client-side refusal. */
export class WsedgeError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "WsedgeError";
    this.code = code;
  }
}

/** Connects to `url` (ws:// or wss://, path /ws) and keeps connecting; see Client. */
export function connect(url, options = {}) {
  return new Client(url, options);
}

/** A tiny event emitter. */
class Emitter {
  constructor() {
    this._handlers = new Map();
  }
  /** Calls `fn` for each `event`; returns a function that stops it. */
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this.off(event, fn);
  }
  off(event, fn) {
    this._handlers.get(event)?.delete(fn);
  }
  _emit(event, value) {
    for (const fn of this._handlers.get(event) ?? []) {
      try {
        fn(value);
      } catch (e) {
        console.error(`wsedge: a '${event}' handler threw`, e);
      }
    }
  }
}

/** Whether subscription `pattern` (NATS `*` and `>`) matches `channel`. */
export function matches(pattern, channel) {
  if (pattern === channel) return true;
  const p = pattern.split(".");
  const c = channel.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return i === p.length - 1 && c.length > i;
    if (i >= c.length || (p[i] !== "*" && p[i] !== c[i])) return false;
  }
  return p.length === c.length;
}

/** The `exp` (Unix seconds) of a JWT, or undefined. */
function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "===".slice((part.length + 3) % 4))).exp;
  } catch {
    return undefined;
  }
}

const randomId = () =>
  Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");

/**
 * A delivered message. `data` is the payload; `channel` (published) or `user` and `from`
 * (direct); `offset`/`epoch` with history; `redelivered` counts earlier attempts. When
 * `needsAck`, settle it with one of `ack()`, `nak(delayMs)` or `term(reason)` (or let the
 * handler's return do it).
 */
export class Message {
  constructor(client, frame) {
    this._client = client;
    this._settled = !frame.ack;
    this.id = frame.id;
    this.channel = frame.channel;
    this.user = frame.user;
    this.from = frame.from;
    this.priority = frame.priority;
    this.offset = frame.offset;
    this.epoch = frame.epoch;
    this.redelivered = frame.redelivered ?? 0;
    this.needsAck = frame.ack === true;
    this.data = frame.data;
  }
  get settled() {
    return this._settled;
  }
  ack() {
    return this._settle({ op: "ack", id: this.id });
  }
  nak(delayMs = 0) {
    return this._settle({ op: "nak", id: this.id, delay_ms: delayMs });
  }
  term(reason) {
    return this._settle(reason === undefined ? { op: "term", id: this.id } : { op: "term", id: this.id, reason });
  }
  _settle(request) {
    if (this._settled) return Promise.resolve();
    this._settled = true;
    // Not buffered: after a reconnect the server redelivers what was not settled.
    return this._client._request(request, { buffer: false });
  }
}

/** One subscription; events: `recovery` ({recovered, epoch, offset}), `join`, `leave`, `error`. */
class Subscription extends Emitter {
  constructor(client, channel, options, handler) {
    super();
    this._client = client;
    this.channel = channel;
    this.options = options;
    this.handler = handler;
    this.epoch = options.since?.epoch;
    this.offset = options.since?.offset;
    this.active = true;
    /** Resolves once the first subscribe is confirmed; rejects with its error. */
    this.ready = new Promise((resolve, reject) => {
      this._ready = { resolve, reject };
    });
  }
  /** Ends the subscription (the `unsubscribe` op when connected). */
  unsubscribe() {
    if (!this.active) return Promise.resolve();
    this.active = false;
    this._client._subs.delete(this._key());
    const request = { op: "unsubscribe", channel: this.channel };
    if (this.options.group) request.group = this.options.group;
    return this._client.connected ? this._client._request(request, { buffer: false }) : Promise.resolve();
  }
  _key() {
    return `${this.channel}\u0000${this.options.group ?? ""}`;
  }
  _frame() {
    const o = this.options;
    const frame = { op: "subscribe", channel: this.channel };
    if (o.group) frame.group = o.group;
    if (o.balance) frame.balance = o.balance;
    if (o.ack) frame.ack = true;
    if (o.durable) frame.durable = true;
    if (o.presence) frame.presence = true;
    if (o.recover !== false && this.epoch !== undefined && !o.ack && !o.group) {
      frame.since = { epoch: this.epoch, offset: this.offset ?? 0 };
    }
    return frame;
  }
  _subscribed(answer, askedSince) {
    if (answer.epoch !== undefined) {
      const lost = answer.recovered === false;
      if (askedSince) this._emit("recovery", { recovered: !lost, epoch: answer.epoch, offset: answer.offset });
      // After a recovery the replayed messages move the position (the ok may come before
      // them: it travels in the critical lane); otherwise it starts at the ok's.
      if (lost || this.offset === undefined || answer.epoch !== this.epoch) {
        this.epoch = answer.epoch;
        this.offset = answer.offset;
      }
    }
    this._ready.resolve(this);
  }
  /** Whether `frame` is new to this subscription (drops a replayed message already seen). */
  _fresh(frame) {
    if (frame.offset === undefined || this.options.ack || this.options.group) return true;
    if (frame.epoch === this.epoch && this.offset !== undefined && frame.offset <= this.offset) return false;
    this.epoch = frame.epoch;
    this.offset = frame.offset;
    return true;
  }
}

/**
 * A connection that keeps itself connected. Events: `state` ({state, code, reason, delay}) and
 * one per state (`connecting`, `connected`, `disconnected`, `closed`); `message` (direct
 * messages, as Message); `error` (an error frame no request is waiting for).
 */
export class Client extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.state = "disconnected";
    this.connection = undefined; // the server's connection id, once welcomed
    this.user = undefined;
    this._subs = new Map(); // key -> Subscription
    this._pending = new Map(); // ref -> {frame, resolve, reject, bytes, buffer}
    this._bufferedBytes = 0;
    this._ref = 0;
    this._idPrefix = randomId();
    this._msgSeq = 0;
    this._attempt = 0;
    this._timers = {};
    this._ws = undefined;
    this._token = this.options.token;
    this._closed = false;
    this._open();
  }

  get connected() {
    return this.state === "connected";
  }

  /**
   * Subscribes `handler(message)` to `channel` (a name or a pattern). Options: `group`,
   * `balance`, `ack`, `durable`, `presence`, `since` ({epoch, offset}), `recover` (default
   * true), `autoAck` (default true). Returns the Subscription (await `.ready`).
   */
  subscribe(channel, options = {}, handler = () => {}) {
    if (typeof options === "function") [options, handler] = [{}, options];
    const sub = new Subscription(this, channel, options, handler);
    const key = sub._key();
    if (this._subs.has(key)) throw new WsedgeError("already_subscribed", `already subscribed to ${channel}`);
    this._subs.set(key, sub);
    if (this.connected) this._subscribe(sub);
    return sub;
  }

  /**
   * Publishes `data` to `channel`. Options: `priority`, `msgId` (generated otherwise: resends
   * are deduplicated by it), `persist`, `deliverAt` (Date or RFC 3339), `delayMs`. Resolves to
   * the server's `ok` (with `duplicate`, `scheduled` when they apply).
   */
  publish(channel, data, options = {}) {
    return this._request(this._withDelivery({ op: "publish", channel, data }, options), { buffer: true });
  }

  /** Sends `data` to `user`'s connections. Options as publish, plus `ack`. */
  send(user, data, options = {}) {
    const frame = this._withDelivery({ op: "send", user, data }, options);
    if (options.ack) frame.ack = true;
    return this._request(frame, { buffer: true });
  }

  /** Who is subscribed to `channel`: {connections, users}. */
  presence(channel) {
    return this._request({ op: "presence", channel }, { buffer: true });
  }

  /** The channel's kept messages: options `limit`, `since` ({epoch, offset}). */
  history(channel, options = {}) {
    const frame = { op: "history", channel };
    if (options.limit !== undefined) frame.limit = options.limit;
    if (options.since) frame.since = options.since;
    return this._request(frame, { buffer: true });
  }

  /** Cancels a scheduled send or publish by the id its `ok` gave. */
  cancel(id) {
    return this._request({ op: "cancel", id }, { buffer: true });
  }

  /** Closes for good: pending requests are rejected, nothing reconnects. */
  close() {
    this._closed = true;
    this._clearTimers();
    const ws = this._ws;
    this._detach();
    ws?.close(1000, "client closed");
    this._setState("closed", { code: 1000, reason: "client closed" });
    for (const p of this._pending.values()) p.reject(new WsedgeError("closed", "the client was closed"));
    this._pending.clear();
    this._bufferedBytes = 0;
  }

  _withDelivery(frame, o) {
    frame.msg_id = o.msgId ?? `${this._idPrefix}-${++this._msgSeq}`;
    if (o.priority) frame.priority = o.priority;
    if (o.persist) frame.persist = true;
    if (o.deliverAt) frame.deliver_at = o.deliverAt instanceof Date ? o.deliverAt.toISOString() : o.deliverAt;
    if (o.delayMs !== undefined) frame.delay_ms = o.delayMs;
    return frame;
  }

  /** Sends `frame` with a fresh ref; resolves with the answer or rejects with its error. */
  _request(frame, { buffer }) {
    if (this._closed) return Promise.reject(new WsedgeError("closed", "the client was closed"));
    frame.ref = ++this._ref;
    const text = JSON.stringify(frame);
    if (buffer) {
      const o = this.options;
      if (this._pending.size >= o.bufferMax || this._bufferedBytes + text.length > o.bufferMaxBytes) {
        return Promise.reject(
          new WsedgeError("buffer_full", `${this._pending.size} requests (${this._bufferedBytes} bytes) await an answer`),
        );
      }
    } else if (!this.connected) {
      return Promise.reject(new WsedgeError("disconnected", "not connected"));
    }
    return new Promise((resolve, reject) => {
      this._pending.set(frame.ref, { text, resolve, reject, bytes: text.length, buffer });
      this._bufferedBytes += text.length;
      if (this.connected) this._ws.send(text);
    });
  }

  async _open() {
    if (this._closed) return;
    this._setState("connecting", { attempt: this._attempt });
    try {
      if (this.options.getToken) this._token = await this.options.getToken();
    } catch (e) {
      this._scheduleReconnect({ code: 0, reason: `getToken failed: ${e}` });
      return;
    }
    if (this._closed) return;
    let url = this.url;
    if (this._token) url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(this._token);
    const WS = this.options.WebSocket ?? globalThis.WebSocket;
    let ws;
    try {
      ws = new WS(url, this.options.lz4 ? ["wsedge.v1.lz4", "wsedge.v1"] : ["wsedge.v1"]);
    } catch (e) {
      this._scheduleReconnect({ code: 0, reason: String(e) });
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._heard();
    ws.onmessage = (event) => this._onFrame(event.data);
    ws.onclose = (event) => this._lost({ code: event.code, reason: event.reason || "connection closed" });
    ws.onerror = () => {}; // a close follows
    this._timers.watchdog = setInterval(() => this._watch(), Math.min(this.options.heartbeat, 1000));
  }

  _heard() {
    this._lastHeard = Date.now();
  }

  /** Pings when quiet; reconnects when nothing was heard for heartbeat + grace. */
  _watch() {
    const o = this.options;
    const quiet = Date.now() - this._lastHeard;
    if (quiet > o.heartbeat + o.grace) {
      const ws = this._ws;
      this._lost({ code: 4000, reason: `nothing heard for ${quiet} ms` });
      try {
        ws?.close(4000, "watchdog");
      } catch {}
    } else if (this.connected && Date.now() - (this._lastPing ?? 0) >= o.heartbeat) {
      this._lastPing = Date.now();
      this._ws.send('{"op":"ping"}');
    }
  }

  _onFrame(data) {
    this._heard();
    let frame;
    try {
      frame = JSON.parse(typeof data === "string" ? data : lz4Text(data, this.options.maxMessageSize));
    } catch (e) {
      this._emit("error", new WsedgeError("bad_frame", `unreadable frame: ${e}`));
      return;
    }
    switch (frame.op) {
      case "welcome":
        this._welcomed(frame);
        break;
      case "message":
        this._deliver(frame);
        break;
      case "join":
      case "leave":
        for (const sub of this._subs.values()) if (sub.channel === frame.channel) sub._emit(frame.op, frame);
        break;
      case "pong":
        break;
      default:
        this._answer(frame);
    }
  }

  _welcomed(frame) {
    this.connection = frame.connection;
    this.user = frame.user;
    this._attempt = 0;
    this._setState("connected", {});
    this._scheduleRefresh();
    // Subscriptions first, so a resent publish reaches this client's own subscriptions too.
    for (const sub of this._subs.values()) this._subscribe(sub);
    for (const p of this._pending.values()) if (p.buffer) this._ws.send(p.text);
  }

  _subscribe(sub) {
    const frame = sub._frame();
    frame.ref = ++this._ref;
    const askedSince = frame.since !== undefined;
    this._pending.set(frame.ref, {
      text: null, // not resent: the subscription itself is, after a reconnect
      bytes: 0,
      resolve: (answer) => sub._subscribed(answer, askedSince),
      reject: (e) => {
        this._subs.delete(sub._key());
        sub.active = false;
        sub._emit("error", e);
        sub._ready.reject(e);
      },
    });
    this._ws.send(JSON.stringify(frame));
  }

  _answer(frame) {
    const p = frame.ref === undefined ? undefined : this._pending.get(frame.ref);
    if (!p) {
      if (frame.op === "error") this._emit("error", new WsedgeError(frame.code, frame.message));
      return;
    }
    this._pending.delete(frame.ref);
    this._bufferedBytes -= p.bytes;
    if (frame.op === "error") p.reject(new WsedgeError(frame.code, frame.message));
    else p.resolve(frame);
  }

  async _deliver(frame) {
    const message = new Message(this, frame);
    const handlers = [];
    if (frame.channel === undefined) {
      handlers.push((m) => this._emit("message", m));
    } else {
      for (const sub of this._subs.values()) {
        if (sub.active && matches(sub.channel, frame.channel) && (!!sub.options.ack === message.needsAck)) {
          if (!sub._fresh(frame)) return;
          handlers.push(sub.handler);
        }
      }
    }
    try {
      for (const handler of handlers) await handler(message);
      if (message.needsAck && !message.settled && this._autoAck(frame)) await message.ack();
    } catch (e) {
      if (e instanceof WsedgeError && e.code === "disconnected") return; // redelivered later
      if (message.needsAck && !message.settled) message.nak(0).catch(() => {});
      else console.error("wsedge: a message handler threw", e);
    }
  }

  _autoAck(frame) {
    if (frame.channel === undefined) return this.options.autoAck !== false;
    for (const sub of this._subs.values()) {
      if (sub.options.ack && matches(sub.channel, frame.channel)) return sub.options.autoAck !== false;
    }
    return true;
  }

  _scheduleRefresh() {
    clearTimeout(this._timers.refresh);
    const exp = this._token && tokenExpiry(this._token);
    if (!exp || !this.options.getToken) return;
    const wait = Math.max(exp * 1000 - Date.now() - this.options.refreshBefore, 1000);
    this._timers.refresh = setTimeout(async () => {
      try {
        const token = await this.options.getToken();
        await this._request({ op: "refresh", token }, { buffer: false });
        this._token = token;
        this._scheduleRefresh();
      } catch (e) {
        this._emit("error", e instanceof WsedgeError ? e : new WsedgeError("refresh_failed", String(e)));
      }
    }, wait);
  }

  /** The connection is gone: forget it and reconnect after a backoff. */
  _lost(why) {
    if (!this._ws) return;
    this._detach();
    // Answers to subscribes and settles will not come; buffered requests are resent later.
    for (const [ref, p] of this._pending) {
      if (!p.buffer) {
        this._pending.delete(ref);
        this._bufferedBytes -= p.bytes;
        if (p.text !== null) p.reject(new WsedgeError("disconnected", why.reason));
      }
    }
    this._scheduleReconnect(why);
  }

  _detach() {
    const ws = this._ws;
    this._ws = undefined;
    clearInterval(this._timers.watchdog);
    clearTimeout(this._timers.refresh);
    if (ws) ws.onmessage = ws.onclose = ws.onerror = null;
  }

  _scheduleReconnect(why) {
    if (this._closed) return;
    const o = this.options;
    // Full jitter: uniformly between minDelay and min(maxDelay, minDelay * 2^attempt).
    const cap = Math.min(o.maxDelay, o.minDelay * 2 ** this._attempt);
    const delay = Math.round(o.minDelay + Math.random() * Math.max(0, cap - o.minDelay));
    this._attempt++;
    this._setState("disconnected", { ...why, delay });
    this._timers.reconnect = setTimeout(() => this._open(), delay);
  }

  _clearTimers() {
    for (const t of Object.values(this._timers)) {
      clearTimeout(t);
      clearInterval(t);
    }
  }

  _setState(state, detail) {
    this.state = state;
    const event = { state, ...detail };
    this._emit("state", event);
    this._emit(state, event);
  }
}

/**
 * The text of a `wsedge.v1.lz4` binary frame: 4 bytes of length (LE), then an lz4 block.
 * Throws, before allocating, when the length is over `max` (code `too_big`).
 */
function lz4Text(buffer, max) {
  const src = new Uint8Array(buffer);
  if (src.length < 4) throw new Error("lz4 frame shorter than its length");
  const size = (src[0] | (src[1] << 8) | (src[2] << 16) | (src[3] << 24)) >>> 0;
  if (size > max) throw new WsedgeError("too_big", `an lz4 message of ${size} bytes (maxMessageSize ${max})`);
  const out = new Uint8Array(size);
  let i = 4;
  let o = 0;
  while (i < src.length) {
    const token = src[i++];
    let literals = token >> 4;
    if (literals === 15) for (let b = 255; b === 255; literals += b) b = src[i++];
    out.set(src.subarray(i, i + literals), o);
    i += literals;
    o += literals;
    if (i >= src.length) break;
    const offset = src[i] | (src[i + 1] << 8);
    i += 2;
    let length = token & 15;
    if (length === 15) for (let b = 255; b === 255; length += b) b = src[i++];
    length += 4;
    if (offset === 0 || offset > o || o + length > size) throw new Error("corrupt lz4 block");
    for (let k = 0; k < length; k++, o++) out[o] = out[o - offset];
  }
  if (o !== size) throw new Error("lz4 block shorter than its length");
  return new TextDecoder().decode(out);
}
