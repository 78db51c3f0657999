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
export declare class BusClient {
    private readonly config;
    readonly blockMs: number;
    readonly readCount: number;
    connected: boolean;
    readonly stats: BusStats;
    readonly consumerName: string;
    private redis;
    private reader;
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
    private get conn();
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
