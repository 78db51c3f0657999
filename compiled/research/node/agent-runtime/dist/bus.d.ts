import type { AgentConfig } from "./config.js";
import { Logger } from "./log.js";
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
/** Counters of the consume loop (tests and the benchmark read them through /health). */
export interface BusStats {
    delivered: number;
    redelivered: number;
    acked: number;
    failed: number;
    deadLettered: number;
}
/** A Redis node: what a MOVED reply names. */
export interface Address {
    host: string;
    port: number;
}
/** The node a `MOVED <slot> <host>:<port>` error (or an EXECABORT caused by one) names, else null. */
export declare function movedTo(error: unknown, current?: Address): Address | null;
/** `url` with its host and port replaced by `address` (user, password, db and the rest kept). */
export declare function urlAt(url: string, address: Address): string;
export declare class BusClient {
    private readonly config;
    readonly blockMs: number;
    readonly readCount: number;
    connected: boolean;
    readonly stats: BusStats;
    readonly consumerName: string;
    private redis;
    private reader;
    /** The URL's node, where a connection goes when the node it was moved to fails. */
    private readonly seed;
    /** Where both connections go: the seed, or the last node a MOVED reply named. */
    private target;
    /** The last node a MOVED reply named (kept while the seed is tried). */
    private owner;
    private redisAt;
    private readerAt;
    /** Set by close(): the errors of the connections it ends move nothing. */
    private closing;
    private keys;
    private settings;
    private nextRefresh;
    private reclaimCursor;
    private reclaimMore;
    private readonly log;
    constructor(config: AgentConfig, blockMs?: number, readCount?: number);
    private client;
    /** Open the connections and load the bus plan; throws while Redis or the plan is not there. */
    connect(): Promise<void>;
    /** `connect()` retried with backoff until it succeeds or `signal` aborts. */
    connectWithRetry(signal: AbortSignal): Promise<boolean>;
    /** The command connection, made anew when the target moved since it was made. */
    private get conn();
    /** The blocking reader's connection, the same way. */
    private get readConn();
    /**
     * `command` on `connection()`, sent again to the node a MOVED reply names (up to
     * MAX_REDIRECTS times). A connection failure while moved sends the next command to
     * the URL's node (to be redirected again); one on the URL's node tries the last
     * owner next. Every other error goes to the caller as it is.
     */
    private call;
    private cmd;
    private loadPlan;
    private get current();
    /** One XADD to the outbox. The router decides the rest (see the receipts stream). */
    publish(topic: string, payload: unknown, options?: PublishOptions): Promise<PublishResult>;
    /** XACK + XDEL of one inbox entry in one MULTI. */
    ack(entryId: string): Promise<void>;
    private deadLetter;
    /** The entry as a Message, or null after dead-lettering it when it cannot be read. */
    private message;
    /** One XAUTOCLAIM page of entries idle past the visibility timeout; over-delivered ones are dead-lettered. */
    reclaim(): Promise<Message[]>;
    private deliveryCounts;
    private read;
    /** Call the handler; ack once it and every publish it started resolved, else leave it for redelivery. */
    handle(message: Message, handler: Handler): Promise<boolean>;
    /** Consume the inbox until `signal` aborts; Redis trouble is retried with backoff. */
    run(handler: Handler, signal: AbortSignal): Promise<void>;
    /** Close both connections (a blocked XREADGROUP ends at once). */
    close(): Promise<void>;
}
type Entry = [Buffer, Buffer[] | null];
/**
 * The entries of an XREAD/XREADGROUP reply: a list of [stream, entries] pairs, or (as
 * ioredis 6 hands a one-stream reply over) the pairs flattened to stream, entries, ...
 */
export declare function streamEntries(reply: unknown): Entry[];
/** The default handler's one line per message: message id (quoted), topic, sender, delivery. */
export declare function logReceived(log: Logger, message: Message): void;
export {};
