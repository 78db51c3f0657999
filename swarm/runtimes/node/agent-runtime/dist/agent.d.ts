/**
 * The NestJS side: `SwarmAgentModule.forRoot(config, handler)` gives an agent its
 * health endpoints and, through `AgentService`'s lifecycle hooks, its registry lease
 * and bus loop:
 *
 * - onModuleInit starts, in the background, the registration (first attempt now,
 *   then the heartbeat loop, which keeps trying while the registry is down) and the
 *   bus (connect with backoff, then consume the inbox when the agent subscribes);
 * - onModuleDestroy (SIGTERM/SIGINT with shutdown hooks enabled) stops the loop,
 *   deregisters and closes the Redis connections;
 * - GET /health (status, swarm, agent_id, version, ready), /health/live (the
 *   process answers) and /health/ready (200 once registered and the bus is
 *   connected, else 503 with what it waits for), as the Python agents answer.
 */
import { type DynamicModule, type OnModuleDestroy, type OnModuleInit } from "@nestjs/common";
import { BusClient, type Handler } from "./bus.js";
import type { AgentConfig } from "./config.js";
import { Logger } from "./log.js";
import { RegistryClient } from "./registry.js";
export declare const AGENT_OPTIONS: unique symbol;
/** Seconds a stopping agent waits for a running handler before it deregisters and exits. */
export declare const SHUTDOWN_GRACE = 5;
export interface AgentOptions {
    config: AgentConfig;
    handler: Handler;
}
export declare class AgentService implements OnModuleInit, OnModuleDestroy {
    readonly options: AgentOptions;
    /** Startup steps in the order /health/ready lists them, each saying whether it is done. */
    readonly checks: Map<string, () => boolean>;
    readonly registry: RegistryClient | null;
    readonly bus: BusClient | null;
    readonly log: Logger;
    private readonly stop;
    private readonly tasks;
    constructor(options: AgentOptions);
    get config(): AgentConfig;
    pending(): string[];
    onModuleInit(): void;
    private startRegistration;
    private runBus;
    onModuleDestroy(): Promise<void>;
}
export declare class HealthController {
    private readonly agent;
    constructor(agent: AgentService);
    health(): Record<string, unknown>;
    live(): Record<string, string>;
    ready(): Record<string, string>;
}
export declare class SwarmAgentModule {
    static forRoot(config: AgentConfig, handler: Handler): DynamicModule;
}
