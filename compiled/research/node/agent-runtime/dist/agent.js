var __decorate = (this && this.__decorate) || function (decorators, target, key, desc) {
    var c = arguments.length, r = c < 3 ? target : desc === null ? desc = Object.getOwnPropertyDescriptor(target, key) : desc, d;
    if (typeof Reflect === "object" && typeof Reflect.decorate === "function") r = Reflect.decorate(decorators, target, key, desc);
    else for (var i = decorators.length - 1; i >= 0; i--) if (d = decorators[i]) r = (c < 3 ? d(r) : c > 3 ? d(target, key, r) : d(target, key)) || r;
    return c > 3 && r && Object.defineProperty(target, key, r), r;
};
var __metadata = (this && this.__metadata) || function (k, v) {
    if (typeof Reflect === "object" && typeof Reflect.metadata === "function") return Reflect.metadata(k, v);
};
var __param = (this && this.__param) || function (paramIndex, decorator) {
    return function (target, key) { decorator(target, key, paramIndex); }
};
var SwarmAgentModule_1;
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
import { Controller, Get, HttpException, Inject, Injectable, Module } from "@nestjs/common";
import { sleep } from "./backoff.js";
import { BusClient } from "./bus.js";
import { describe, Logger } from "./log.js";
import { RegistryClient } from "./registry.js";
export const AGENT_OPTIONS = Symbol("swarm-agent-options");
/** Seconds a stopping agent waits for a running handler before it deregisters and exits. */
export const SHUTDOWN_GRACE = 5;
let AgentService = class AgentService {
    options;
    /** Startup steps in the order /health/ready lists them, each saying whether it is done. */
    checks = new Map();
    registry;
    bus;
    log;
    stop = new AbortController();
    tasks = [];
    constructor(options) {
        this.options = options;
        const { config } = options;
        this.log = new Logger(`swarm.agent.${config.agentId}`);
        this.registry = config.registry === null ? null : new RegistryClient(config);
        this.bus = config.redisUrl === null ? null : new BusClient(config);
        const { registry, bus } = this;
        if (registry !== null)
            this.checks.set("registry", () => registry.registered);
        if (bus !== null)
            this.checks.set("bus", () => bus.connected);
    }
    get config() {
        return this.options.config;
    }
    pending() {
        return [...this.checks].filter(([, done]) => !done()).map(([name]) => name);
    }
    onModuleInit() {
        const { registry, bus } = this;
        if (registry !== null)
            this.tasks.push(this.startRegistration(registry));
        if (bus !== null)
            this.tasks.push(this.runBus(bus));
    }
    async startRegistration(registry) {
        try {
            await registry.register();
        }
        catch (error) {
            this.log.warning(`registering ${this.config.agentId} failed (${describe(error)}); the heartbeat loop keeps trying`);
        }
        if (!this.stop.signal.aborted)
            registry.start();
    }
    async runBus(bus) {
        if (!(await bus.connectWithRetry(this.stop.signal)))
            return;
        this.log.info(`connected to the bus of swarm ${this.config.swarm}`);
        if (this.config.subscribes.length > 0)
            await bus.run(this.options.handler, this.stop.signal);
    }
    async onModuleDestroy() {
        this.stop.abort();
        await this.registry?.stopLoop();
        await this.bus?.close(); // a blocked XREADGROUP ends at once
        // a handler still running gets a few seconds; its message stays pending (redelivered) if cut off
        await Promise.race([Promise.allSettled(this.tasks), sleep(SHUTDOWN_GRACE)]);
        await this.registry?.deregister();
    }
};
AgentService = __decorate([
    Injectable(),
    __param(0, Inject(AGENT_OPTIONS)),
    __metadata("design:paramtypes", [Object])
], AgentService);
export { AgentService };
let HealthController = class HealthController {
    agent;
    constructor(agent) {
        this.agent = agent;
    }
    health() {
        const { config, bus, registry } = this.agent;
        return {
            status: "ok",
            swarm: config.swarm,
            agent_id: config.agentId,
            version: config.version,
            runtime: "node",
            ready: this.agent.pending().length === 0,
            bus: bus === null ? null : { ...bus.stats },
            registry: registry === null ? null : { registrations: registry.registrations, heartbeats: registry.heartbeats },
        };
    }
    live() {
        return { status: "alive" };
    }
    ready() {
        const pending = this.agent.pending();
        if (pending.length > 0)
            throw new HttpException({ status: "starting", waiting_for: pending }, 503);
        return { status: "ready" };
    }
};
__decorate([
    Get(),
    __metadata("design:type", Function),
    __metadata("design:paramtypes", []),
    __metadata("design:returntype", Object)
], HealthController.prototype, "health", null);
__decorate([
    Get("live"),
    __metadata("design:type", Function),
    __metadata("design:paramtypes", []),
    __metadata("design:returntype", Object)
], HealthController.prototype, "live", null);
__decorate([
    Get("ready"),
    __metadata("design:type", Function),
    __metadata("design:paramtypes", []),
    __metadata("design:returntype", Object)
], HealthController.prototype, "ready", null);
HealthController = __decorate([
    Controller("health"),
    __param(0, Inject(AgentService)),
    __metadata("design:paramtypes", [AgentService])
], HealthController);
export { HealthController };
let SwarmAgentModule = SwarmAgentModule_1 = class SwarmAgentModule {
    static forRoot(config, handler) {
        return {
            module: SwarmAgentModule_1,
            controllers: [HealthController],
            providers: [{ provide: AGENT_OPTIONS, useValue: { config, handler } }, AgentService],
            exports: [AgentService],
        };
    }
};
SwarmAgentModule = SwarmAgentModule_1 = __decorate([
    Module({})
], SwarmAgentModule);
export { SwarmAgentModule };
