// Types of wsedge.js (the browser client for wsedge protocol v1).

export type Priority = "low" | "normal" | "high" | "critical";
export type State = "connecting" | "connected" | "disconnected" | "closed";

export interface Options {
  /** A JWT for `?token=`; or use getToken. */
  token?: string;
  /** Called before every connect and `refreshBefore` ms before the token's `exp`. */
  getToken?: () => string | Promise<string>;
  /** First reconnect delay bound, ms (default 500). */
  minDelay?: number;
  /** Largest reconnect delay bound, ms (default 20000). */
  maxDelay?: number;
  /** Ms between the client's pings (default 10000). */
  heartbeat?: number;
  /** Reconnect when nothing was heard for heartbeat + grace ms (default 5000). */
  grace?: number;
  /** Ms before `exp` that a refreshed token is sent (default 30000). */
  refreshBefore?: number;
  /** Publishes and sends awaiting their ok, at most (default 1000). */
  bufferMax?: number;
  /** ...and at most these bytes of them (default 1 MiB). */
  bufferMaxBytes?: number;
  /** Ask for `wsedge.v1.lz4` (default false). */
  lz4?: boolean;
  /** Bytes of an lz4 message once decompressed, at most (default 16 MiB); a larger one is an `error` event and is not read. */
  maxMessageSize?: number;
  /** Ack direct messages that need it after the `message` handlers (default true). */
  autoAck?: boolean;
  /** A WebSocket class, where there is no global one. */
  WebSocket?: unknown;
}

export interface StateEvent {
  state: State;
  code?: number;
  reason?: string;
  /** Ms until the next attempt (disconnected). */
  delay?: number;
  attempt?: number;
}

export interface Position {
  epoch: string;
  offset: number;
}

export interface SubscribeOptions {
  group?: string;
  balance?: "least_loaded" | "round_robin";
  ack?: boolean;
  durable?: boolean;
  presence?: boolean;
  since?: Position;
  /** Resubscribe with `since` after a reconnect (default true). */
  recover?: boolean;
  /** Ack after the handler (default true); false: call message.ack() yourself. */
  autoAck?: boolean;
}

export interface DeliveryOptions {
  priority?: Priority;
  /** Deduplication id; generated when absent. */
  msgId?: string;
  persist?: boolean;
  deliverAt?: Date | string;
  delayMs?: number;
}

export interface Ok {
  op: "ok";
  ref: number;
  duplicate?: boolean;
  delivered?: number;
  scheduled?: string;
  [field: string]: unknown;
}

export declare class WsedgeError extends Error {
  code: string;
}

export declare class Message<T = unknown> {
  id: string;
  channel?: string;
  user?: string;
  from?: string | null;
  priority: Priority;
  offset?: number;
  epoch?: string;
  redelivered: number;
  needsAck: boolean;
  data: T;
  readonly settled: boolean;
  ack(): Promise<unknown>;
  nak(delayMs?: number): Promise<unknown>;
  term(reason?: string): Promise<unknown>;
}

type Handler = (message: Message) => void | Promise<void>;

export declare class Subscription {
  channel: string;
  options: SubscribeOptions;
  epoch?: string;
  offset?: number;
  active: boolean;
  ready: Promise<Subscription>;
  on(event: "recovery", fn: (e: { recovered: boolean } & Position) => void): () => void;
  on(event: "join" | "leave", fn: (e: { channel: string; user: string | null; connection: string }) => void): () => void;
  on(event: "error", fn: (e: WsedgeError) => void): () => void;
  unsubscribe(): Promise<unknown>;
}

export declare class Client {
  url: string;
  state: State;
  connection?: string;
  user?: string | null;
  readonly connected: boolean;
  on(event: "state" | State, fn: (e: StateEvent) => void): () => void;
  on(event: "message", fn: (m: Message) => void): () => void;
  on(event: "error", fn: (e: WsedgeError) => void): () => void;
  off(event: string, fn: (...args: any[]) => void): void;
  subscribe(channel: string, handler: Handler): Subscription;
  subscribe(channel: string, options: SubscribeOptions, handler?: Handler): Subscription;
  publish(channel: string, data: unknown, options?: DeliveryOptions): Promise<Ok>;
  send(user: string, data: unknown, options?: DeliveryOptions & { ack?: boolean }): Promise<Ok>;
  presence(channel: string): Promise<{ connections: number; users: string[]; truncated?: boolean }>;
  history(channel: string, options?: { limit?: number; since?: Position }): Promise<Position & { messages: unknown[] }>;
  cancel(id: string): Promise<Ok>;
  close(): void;
}

export declare function connect(url: string, options?: Options): Client;
export declare function matches(pattern: string, channel: string): boolean;
