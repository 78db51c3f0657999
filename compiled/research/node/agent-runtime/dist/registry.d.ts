import type { AgentConfig } from "./config.js";
/** Network trouble or a 5xx: retried quickly. */
export declare class RegistryUnavailableError extends Error {
    name: string;
}
/** The registry refused (401/403/409/422 ...): retried on the slow cadence. */
export declare class RegistryRefusedError extends Error {
    readonly status: number;
    name: string;
    constructor(message: string, status: number);
}
export declare class RegistryClient {
    private readonly config;
    registered: boolean;
    registrations: number;
    heartbeats: number;
    private interval;
    private readonly baseUrl;
    private loop;
    private stop;
    private readonly log;
    constructor(config: AgentConfig);
    /** Seconds the loop waits between heartbeats. */
    get effectiveInterval(): number;
    registerBody(): Record<string, unknown>;
    register(): Promise<void>;
    /** Renew the lease once; false when the registry does not know the agent (404). */
    heartbeat(): Promise<boolean>;
    /** Start the lease loop (registers first when not registered); idempotent. */
    start(): void;
    stopLoop(): Promise<void>;
    /** Stop the loop and DELETE the registration; true if the registry removed it. Never throws. */
    deregister(): Promise<boolean>;
    private adopt;
    private run;
    private renewOrRegister;
    private request;
}
