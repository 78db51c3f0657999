/**
 * BusClient: one node agent's side of swarm's mediated bus, the same plain Redis
 * commands as the Python `swarm.bus.EventBus` (key layout and field names from
 * constants.ts, rendered from the Python definitions):
 *
 * - `publish` is one XADD to the agent's outbox (fields topic, payload as JSON text,
 *   optionally message_id). The trusted router checks, dedups and delivers it: this
 *   client makes no ACL, dedup or breaker decision, so a refusal shows up in the
 *   router's receipts, never as a different verdict here.
 * - the consume loop reads the inbox with XREADGROUP (group = the agent's id) on its
 *   own connection, calls the handler and acks after it (and every publish it
 *   started) resolved: XACK + XDEL in one MULTI, so the inbox holds only unfinished
 *   work. A failed handler leaves the entry pending; entries idle longer than the
 *   visibility timeout are reclaimed with XAUTOCLAIM (one page per call), and one
 *   delivered more than max_deliveries times moves to `dlq:@<id>` with the reason,
 *   acked and deleted in the same MULTI. An entry that cannot be read (missing
 *   fields, not UTF-8, payload not JSON) is dead-lettered at its first delivery.
 * - settings (visibility timeout, max deliveries) and the agent's streams come from
 *   the bus plan `swarm bus apply` wrote to Redis (bus.json), re-read every few
 *   seconds, as the Python agents do.
 * - Redis Cluster: every key of a swarm is in one hash slot, so a plain client of the
 *   slot's master is all it takes. An agent's user has no CLUSTER rights, so, as the
 *   Python agents (swarm.redis_conn), it follows `MOVED <slot> <host>:<port>` alone:
 *   both connections move to that node (same user, password and db) and the command
 *   is sent again. A MULTI answered EXECABORT because of a MOVED reply moves the same
 *   way. A connection that fails while moved goes back to the URL's node (which
 *   redirects again, e.g. to a promoted replica after a failover); the callers' loops
 *   back off between attempts.
 */
import { hostname } from "node:os";

import { Redis } from "ioredis";

import { Backoff, sleep } from "./backoff.js";
import { BUS_RETRY_BASE, BUS_RETRY_CAP, CONTENT_TYPE, INBOX_REQUIRED_FIELDS, MAX_MESSAGE_ID } from "./constants.js";
import type { AgentConfig } from "./config.js";
import { agentKeys, type AgentKeys } from "./keys.js";
import { describe, Logger, quote } from "./log.js";

/** One inbox entry handed to the handler. */
export interface Message {
  topic: string;
  /** The inbox entry id (what the ack names). */
  entryId: string;
  messageId: string;
  sender: string;
  payload: unknown;
  contentType: string;
  /** 1 on the first delivery. */
  deliveries: number;
  /** The message's id in the topic's log. */
  topicEntryId: string;
}

export interface PublishOptions {
  /** 1-200 characters without whitespace; default `<agent id>:<outbox entry id>` (the router's). */
  messageId?: string;
}

export interface PublishResult {
  status: "accepted";
  outboxId: string;
  messageId: string;
}

export interface HandlerContext {
  agentId: string;
  /** XADD to the agent's outbox; the message is acked only after every publish started resolved. */
  publish(topic: string, payload: unknown, options?: PublishOptions): Promise<PublishResult>;
  log: Logger;
}

/** The spec's handler: called once per delivery; the message is acked after it resolves. */
export type Handler = (message: Message, ctx: HandlerContext) => unknown;

interface Settings {
  visibilityTimeout: number;
  maxDeliveries: number;
  digest: string;
}

/** Counters of the consume loop (tests and the benchmark read them through /health). */
export interface BusStats {
  delivered: number;
  redelivered: number;
  acked: number;
  failed: number;
  deadLettered: number;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });
const REFRESH_MS = 5000;
/** MOVED replies followed for one command before its error goes to the caller. */
const MAX_REDIRECTS = 5;

/** A Redis node: what a MOVED reply names. */
export interface Address {
  host: string;
  port: number;
}

/** The node a `MOVED <slot> <host>:<port>` error (or an EXECABORT caused by one) names, else null. */
export function movedTo(error: unknown, current?: Address): Address | null {
  if (!(error instanceof Error)) return null;
  const previous = (error as { previousErrors?: unknown }).previousErrors;
  if (error.message.startsWith("EXECABORT") && Array.isArray(previous)) {
    for (const inner of previous) {
      const address = movedTo(inner, current);
      if (address !== null) return address;
    }
    return null;
  }
  const match = /^MOVED \d+ (\S*):(\d+)$/u.exec(error.message.trim());
  if (match === null) return null;
  const host = match[1].replace(/^\[(.*)\]$/u, "$1");
  return { host: host === "" ? (current?.host ?? "127.0.0.1") : host, port: Number(match[2]) };
}

/** `url` with its host and port replaced by `address` (user, password, db and the rest kept). */
export function urlAt(url: string, address: Address): string {
  const parsed = new URL(url);
  parsed.hostname = address.host.includes(":") ? `[${address.host}]` : address.host;
  parsed.port = String(address.port);
  return parsed.toString();
}

function urlAddress(url: string): Address {
  const parsed = new URL(url);
  return { host: parsed.hostname.replace(/^\[(.*)\]$/u, "$1") || "127.0.0.1", port: Number(parsed.port || 6379) };
}

function same(a: Address, b: Address): boolean {
  return a.host === b.host && a.port === b.port;
}

/** An error of Redis itself (a reply), as opposed to the connection failing. */
function isReply(error: unknown): boolean {
  return error instanceof Error && (error.name === "ReplyError" || error.message.startsWith("EXECABORT"));
}

export class BusClient {
  connected = false;
  readonly stats: BusStats = { delivered: 0, redelivered: 0, acked: 0, failed: 0, deadLettered: 0 };
  readonly consumerName: string;
  private redis: Redis | null = null;
  private reader: Redis | null = null;
  /** The URL's node, where a connection goes when the node it was moved to fails. */
  private readonly seed: Address;
  /** Where both connections go: the seed, or the last node a MOVED reply named. */
  private target: Address;
  /** The last node a MOVED reply named (kept while the seed is tried). */
  private owner: Address | null = null;
  private redisAt: Address | null = null;
  private readerAt: Address | null = null;
  /** Set by close(): the errors of the connections it ends move nothing. */
  private closing = false;
  private keys: AgentKeys;
  private settings: Settings | null = null;
  private nextRefresh = 0;
  private reclaimCursor = "0-0";
  private reclaimMore = false;
  private readonly log: Logger;

  constructor(
    private readonly config: AgentConfig,
    readonly blockMs = 2000,
    readonly readCount = 32,
  ) {
    if (config.redisUrl === null) throw new Error("the agent has no bus (no REDIS_URL)");
    this.keys = agentKeys(config.swarm, config.agentId);
    this.consumerName = `${config.agentId}@${hostname()}:${process.pid}`;
    this.log = new Logger(`swarm.bus.${config.agentId}`);
    this.seed = this.target = urlAddress(config.redisUrl);
  }

  private client(): Redis {
    const url = this.config.redisUrl ?? "";
    const client = new Redis(same(this.target, this.seed) ? url : urlAt(url, this.target), {
      lazyConnect: true,
      enableReadyCheck: false, // an agent's Redis user may not run INFO
      connectTimeout: 2000,
      maxRetriesPerRequest: 2,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    });
    client.on("error", (error: unknown) => this.log.debug(`redis: ${describe(error)}`));
    return client;
  }

  /** Open the connections and load the bus plan; throws while Redis or the plan is not there. */
  async connect(): Promise<void> {
    this.closing = false;
    const redis = this.conn;
    if (redis.status === "wait") await redis.connect();
    await this.loadPlan(true);
    this.connected = true;
  }

  /** `connect()` retried with backoff until it succeeds or `signal` aborts. */
  async connectWithRetry(signal: AbortSignal): Promise<boolean> {
    const backoff = new Backoff(BUS_RETRY_BASE, BUS_RETRY_CAP);
    while (!signal.aborted) {
      try {
        await untilAborted(this.connect(), signal);
        return true;
      } catch (error) {
        if (signal.aborted) return false;
        const delay = backoff.nextDelay();
        this.log.warning(`connecting to the bus failed (${describe(error)}); retrying in ${delay.toFixed(2)}s`);
        await sleep(delay, signal);
      }
    }
    return false;
  }

  /** The command connection, made anew when the target moved since it was made. */
  private get conn(): Redis {
    if (this.redis !== null && this.redisAt !== null && !same(this.redisAt, this.target)) {
      this.redis.disconnect();
      this.redis = null;
    }
    if (this.redis === null) {
      this.redis = this.client();
      this.redisAt = { ...this.target };
    }
    return this.redis;
  }

  /** The blocking reader's connection, the same way. */
  private get readConn(): Redis {
    if (this.reader !== null && this.readerAt !== null && !same(this.readerAt, this.target)) {
      this.reader.disconnect();
      this.reader = null;
    }
    if (this.reader === null) {
      this.reader = this.client();
      this.readerAt = { ...this.target };
    }
    return this.reader;
  }

  /**
   * `command` on `connection()`, sent again to the node a MOVED reply names (up to
   * MAX_REDIRECTS times). A connection failure while moved sends the next command to
   * the URL's node (to be redirected again); one on the URL's node tries the last
   * owner next. Every other error goes to the caller as it is.
   */
  private async call<T>(connection: () => Redis, command: (redis: Redis) => Promise<T>): Promise<T> {
    for (let redirects = 0; ; redirects += 1) {
      const at = { ...this.target };
      try {
        return await command(connection());
      } catch (error) {
        const moved = movedTo(error, at);
        if (moved !== null) {
          this.owner = moved;
          if (!same(moved, this.target)) {
            this.log.info(`the swarm's slot is served by ${moved.host}:${moved.port} (MOVED from ${at.host}:${at.port}); following`);
            this.target = moved;
          }
          if (redirects < MAX_REDIRECTS) continue;
        } else if (!isReply(error) && !this.closing && same(at, this.target)) {
          const next = !same(at, this.seed) ? this.seed : this.owner;
          if (next !== null && !same(next, at)) {
            this.log.warning(`${at.host}:${at.port} failed (${describe(error)}); trying ${next.host}:${next.port} next`);
            this.target = next;
          }
        }
        throw error;
      }
    }
  }

  private cmd<T>(command: (redis: Redis) => Promise<T>): Promise<T> {
    return this.call(() => this.conn, command);
  }

  private async loadPlan(required: boolean): Promise<void> {
    const raw = await this.cmd((r) => r.get(this.keys.bus));
    this.nextRefresh = Date.now() + REFRESH_MS;
    if (raw === null) {
      if (required) {
        throw new Error(`the bus of swarm ${quote(this.config.swarm)} is not installed in Redis (no ${this.keys.bus}): run \`swarm bus apply compiled/${this.config.swarm}\``);
      }
      return;
    }
    let plan: {
      swarm?: unknown;
      spec_digest?: unknown;
      settings?: { visibility_timeout_seconds?: unknown; max_deliveries?: unknown };
      agents?: Record<string, { inbox?: unknown; outbox?: unknown; dead_letter_stream?: unknown; receipts?: unknown }>;
    };
    try {
      plan = JSON.parse(raw);
    } catch (error) {
      if (required) throw new Error(`bus settings in ${this.keys.bus} are not JSON: ${describe(error)}`);
      return;
    }
    if (this.settings !== null && plan.spec_digest === this.settings.digest) return;
    const rights = plan.agents?.[this.config.agentId];
    const vis = plan.settings?.visibility_timeout_seconds;
    const max = plan.settings?.max_deliveries;
    const problem =
      plan.swarm !== this.config.swarm ? `the bus plan is for swarm ${quote(plan.swarm)}`
      : rights === undefined ? `agent ${quote(this.config.agentId)} is not declared in swarm ${quote(this.config.swarm)}`
      : typeof vis !== "number" || typeof max !== "number" ? "the bus plan has no valid settings"
      : rights.inbox !== this.keys.inbox || rights.outbox !== this.keys.outbox || rights.dead_letter_stream !== this.keys.deadLetter
        ? "the bus plan names other streams for this agent than swarm's key layout (constants.ts is stale)"
        : null;
    if (problem !== null) {
      if (required) throw new Error(problem);
      this.log.warning(`${problem}; keeping the last good bus settings`);
      return;
    }
    this.settings = { visibilityTimeout: vis as number, maxDeliveries: max as number, digest: String(plan.spec_digest) };
  }

  private get current(): Settings {
    if (this.settings === null) throw new Error("BusClient is not connected: call connect() first");
    return this.settings;
  }

  /** One XADD to the outbox. The router decides the rest (see the receipts stream). */
  async publish(topic: string, payload: unknown, options: PublishOptions = {}): Promise<PublishResult> {
    const body = JSON.stringify(payload);
    if (body === undefined) throw new TypeError(`payload for ${quote(topic)} is not JSON-serialisable`);
    const fields = ["topic", topic, "payload", body];
    const mid = options.messageId;
    if (mid !== undefined) {
      if (mid.length < 1 || [...mid].length > MAX_MESSAGE_ID || /\s/u.test(mid)) {
        throw new RangeError(`message id ${quote(mid)} must be 1-${MAX_MESSAGE_ID} characters without whitespace`);
      }
      fields.push("message_id", mid);
    }
    const id = String(await this.cmd((r) => r.xadd(this.keys.outbox, "*", ...fields)));
    return { status: "accepted", outboxId: id, messageId: mid ?? `${this.config.agentId}:${id}` };
  }

  /** XACK + XDEL of one inbox entry in one MULTI. */
  async ack(entryId: string): Promise<void> {
    const replies = await this.cmd((r) => r
      .multi()
      .xack(this.keys.inbox, this.config.agentId, entryId)
      .xdel(this.keys.inbox, entryId)
      .exec());
    const failed = replies?.find(([error]) => error !== null);
    if (replies === null || failed !== undefined) throw new Error(`ack ${entryId} failed: ${describe(failed?.[0] ?? "transaction aborted")}`);
  }

  private async deadLetter(entryId: string, raw: Buffer[], deliveries: number, reason: string): Promise<void> {
    const extra = ["original_entry_id", entryId, "inbox", this.keys.inbox, "group", this.config.agentId,
      "deliveries", String(deliveries), "reason", reason];
    const replies = await this.cmd((r) => r
      .multi()
      .xadd(this.keys.deadLetter, "*", ...raw, ...extra)
      .xack(this.keys.inbox, this.config.agentId, entryId)
      .xdel(this.keys.inbox, entryId)
      .exec());
    const failed = replies?.find(([error]) => error !== null);
    if (replies === null || failed !== undefined) throw new Error(`dead-lettering ${entryId} failed: ${describe(failed?.[0] ?? "aborted")}`);
    this.stats.deadLettered += 1;
    this.log.warning(`dead-lettered inbox entry ${entryId} of ${this.config.agentId} to ${this.keys.deadLetter}: ${reason}`);
  }

  /** The entry as a Message, or null after dead-lettering it when it cannot be read. */
  private async message(entryId: string, raw: Buffer[] | null, deliveries: number): Promise<Message | null> {
    const fields = new Map<string, string>();
    const flat = raw ?? [];
    let problem: string | null = null;
    for (let i = 0; i + 1 < flat.length; i += 2) {
      try {
        fields.set(UTF8.decode(flat[i]), UTF8.decode(flat[i + 1]));
      } catch {
        problem = `field ${quote(flat[i].toString("latin1").slice(0, 80))} is not valid UTF-8`;
        break;
      }
    }
    let payload: unknown = null;
    if (problem === null) {
      const missing = INBOX_REQUIRED_FIELDS.filter((name) => !fields.has(name));
      if (missing.length > 0) problem = `missing field(s) ${missing.join(", ")}`;
    }
    if (problem === null) {
      try {
        payload = JSON.parse(fields.get("payload") ?? "");
      } catch (error) {
        problem = `payload is not JSON (${describe(error)})`;
      }
    }
    if (problem !== null) {
      await this.deadLetter(entryId, flat, deliveries, `unreadable entry: ${problem}`);
      return null;
    }
    return {
      topic: fields.get("topic") ?? "",
      entryId,
      messageId: fields.get("message_id") ?? "",
      sender: fields.get("sender") ?? "",
      payload,
      contentType: fields.get("content_type") ?? CONTENT_TYPE,
      deliveries,
      topicEntryId: fields.get("topic_entry_id") ?? "",
    };
  }

  /** One XAUTOCLAIM page of entries idle past the visibility timeout; over-delivered ones are dead-lettered. */
  async reclaim(): Promise<Message[]> {
    const { visibilityTimeout, maxDeliveries } = this.current;
    const idle = Math.max(1, Math.floor(visibilityTimeout * 1000));
    const reply = (await this.cmd((r) => r.callBuffer("XAUTOCLAIM", this.keys.inbox, this.config.agentId, this.consumerName,
      String(idle), this.reclaimCursor, "COUNT", String(this.readCount)))) as [Buffer, [Buffer, Buffer[] | null][], Buffer[]?];
    const cursor = reply[0].toString();
    this.reclaimCursor = cursor === "0-0" || cursor === "0" ? "0-0" : cursor;
    this.reclaimMore = this.reclaimCursor !== "0-0";
    const claimed = reply[1] ?? [];
    const out: Message[] = [];
    if (claimed.length === 0) return out;
    const ids = claimed.map(([id]) => id.toString());
    const counts = await this.deliveryCounts(ids);
    for (const [rawId, fields] of claimed) {
      const id = rawId.toString();
      const n = counts.get(id) ?? 1;
      if (n > maxDeliveries) {
        await this.deadLetter(id, fields ?? [], n, `not acked after ${n - 1} deliveries (max_deliveries ${maxDeliveries})`);
        continue;
      }
      const message = await this.message(id, fields, n);
      if (message !== null) {
        this.stats.redelivered += 1;
        out.push(message);
      }
    }
    return out;
  }

  private async deliveryCounts(ids: string[]): Promise<Map<string, number>> {
    const rows = (await this.cmd((r) => r.call("XPENDING", this.keys.inbox, this.config.agentId, ids[0], ids[ids.length - 1],
      String(ids.length + 1000), this.consumerName))) as [string, string, number, number][];
    return new Map(rows.map((row) => [String(row[0]), Number(row[3])]));
  }

  private async read(): Promise<Message[]> {
    const block = Math.max(1, Math.min(this.blockMs, Math.floor(this.current.visibilityTimeout * 500)));
    const reply = await this.call(() => this.readConn, async (r) => {
      if (r.status === "wait") await r.connect();
      return r.callBuffer("XREADGROUP", "GROUP", this.config.agentId, this.consumerName,
        "COUNT", String(this.readCount), "BLOCK", String(block), "STREAMS", this.keys.inbox, ">");
    });
    const out: Message[] = [];
    for (const [rawId, fields] of streamEntries(reply)) {
      const message = await this.message(rawId.toString(), fields, 1);
      if (message !== null) out.push(message);
    }
    return out;
  }

  /** Call the handler; ack once it and every publish it started resolved, else leave it for redelivery. */
  async handle(message: Message, handler: Handler): Promise<boolean> {
    const started: Promise<PublishResult>[] = [];
    const ctx: HandlerContext = {
      agentId: this.config.agentId,
      log: this.log,
      publish: (topic, payload, options) => {
        const publish = this.publish(topic, payload, options);
        started.push(publish);
        return publish;
      },
    };
    try {
      try {
        await handler(message, ctx);
      } finally {
        const results = await Promise.allSettled(started);
        const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
        if (failed !== undefined) throw failed.reason;
      }
    } catch (error) {
      this.stats.failed += 1;
      this.log.error(`handler failed on ${quote(message.messageId)} (${message.topic}): ${describe(error)}; left unacked for redelivery`);
      return false;
    }
    await this.ack(message.entryId);
    this.stats.acked += 1;
    return true;
  }

  /** Consume the inbox until `signal` aborts; Redis trouble is retried with backoff. */
  async run(handler: Handler, signal: AbortSignal): Promise<void> {
    const backoff = new Backoff(0.05, 2.0);
    let lastReclaim = -Infinity;
    while (!signal.aborted) {
      try {
        if (Date.now() >= this.nextRefresh) await this.loadPlan(false);
        let batch: Message[] = [];
        if (this.reclaimMore || Date.now() - lastReclaim >= this.current.visibilityTimeout * 500) {
          lastReclaim = Date.now();
          batch = await this.reclaim();
        }
        if (batch.length === 0) batch = await this.read();
        backoff.reset();
        for (const message of batch) {
          if (signal.aborted) return;
          this.stats.delivered += 1;
          await this.handle(message, handler);
        }
      } catch (error) {
        if (signal.aborted) return;
        const delay = backoff.nextDelay();
        this.log.warning(`consuming ${this.keys.inbox} interrupted (${describe(error)}); retrying in ${delay.toFixed(2)}s`);
        await sleep(delay, signal);
      }
    }
  }

  /** Close both connections (a blocked XREADGROUP ends at once). */
  async close(): Promise<void> {
    const clients = [this.reader, this.redis].filter((c): c is Redis => c !== null);
    this.reader = this.redis = null;
    this.readerAt = this.redisAt = null;
    this.closing = true;
    this.connected = false;
    for (const client of clients) client.disconnect();
  }
}

/** `promise`, or a rejection as soon as `signal` aborts (a connect ioredis keeps retrying never settles). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const abort = (): void => reject(new Error("stopped"));
    if (signal.aborted) abort();
    signal.addEventListener("abort", abort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", abort));
  });
}

type Entry = [Buffer, Buffer[] | null];

/**
 * The entries of an XREAD/XREADGROUP reply: a list of [stream, entries] pairs, or (as
 * ioredis 6 hands a one-stream reply over) the pairs flattened to stream, entries, ...
 */
export function streamEntries(reply: unknown): Entry[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  if (Buffer.isBuffer(reply[0]) || typeof reply[0] === "string") {
    const out: Entry[] = [];
    for (let i = 1; i < reply.length; i += 2) out.push(...((reply[i] ?? []) as Entry[]));
    return out;
  }
  return (reply as [Buffer, Entry[] | null][]).flatMap(([, entries]) => entries ?? []);
}

/** The default handler's one line per message: message id (quoted), topic, sender, delivery. */
export function logReceived(log: Logger, message: Message): void {
  log.info(`received ${quote(message.messageId)} on ${message.topic} from ${message.sender} (delivery ${message.deliveries})`);
}
