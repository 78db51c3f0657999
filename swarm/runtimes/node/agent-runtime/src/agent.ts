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
import { Controller, Get, HttpException, Inject, Injectable, Module, type DynamicModule, type OnModuleDestroy, type OnModuleInit } from "@nestjs/common";

import { sleep } from "./backoff.js";
import { BusClient, type Handler } from "./bus.js";
import type { AgentConfig } from "./config.js";
import { describe, Logger } from "./log.js";
import { RegistryClient } from "./registry.js";

export const AGENT_OPTIONS = Symbol("swarm-agent-options");
/** Seconds a stopping agent waits for a running handler before it deregisters and exits. */
export const SHUTDOWN_GRACE = 5;

export interface AgentOptions {
  config: AgentConfig;
  handler: Handler;
}

@Injectable()
export class AgentService implements OnModuleInit, OnModuleDestroy {
  /** Startup steps in the order /health/ready lists them, each saying whether it is done. */
  readonly checks = new Map<string, () => boolean>();
  readonly registry: RegistryClient | null;
  readonly bus: BusClient | null;
  readonly log: Logger;
  private readonly stop = new AbortController();
  private readonly tasks: Promise<void>[] = [];

  constructor(@Inject(AGENT_OPTIONS) readonly options: AgentOptions) {
    const { config } = options;
    this.log = new Logger(`swarm.agent.${config.agentId}`);
    this.registry = config.registry === null ? null : new RegistryClient(config);
    this.bus = config.redisUrl === null ? null : new BusClient(config);
    const { registry, bus } = this;
    if (registry !== null) this.checks.set("registry", () => registry.registered);
    if (bus !== null) this.checks.set("bus", () => bus.connected);
  }

  get config(): AgentConfig {
    return this.options.config;
  }

  pending(): string[] {
    return [...this.checks].filter(([, done]) => !done()).map(([name]) => name);
  }

  onModuleInit(): void {
    const { registry, bus } = this;
    if (registry !== null) this.tasks.push(this.startRegistration(registry));
    if (bus !== null) this.tasks.push(this.runBus(bus));
  }

  private async startRegistration(registry: RegistryClient): Promise<void> {
    try {
      await registry.register();
    } catch (error) {
      this.log.warning(`registering ${this.config.agentId} failed (${describe(error)}); the heartbeat loop keeps trying`);
    }
    if (!this.stop.signal.aborted) registry.start();
  }

  private async runBus(bus: BusClient): Promise<void> {
    if (!(await bus.connectWithRetry(this.stop.signal))) return;
    this.log.info(`connected to the bus of swarm ${this.config.swarm}`);
    if (this.config.subscribes.length > 0) await bus.run(this.options.handler, this.stop.signal);
  }

  async onModuleDestroy(): Promise<void> {
    this.stop.abort();
    await this.registry?.stopLoop();
    await this.bus?.close(); // a blocked XREADGROUP ends at once
    // a handler still running gets a few seconds; its message stays pending (redelivered) if cut off
    await Promise.race([Promise.allSettled(this.tasks), sleep(SHUTDOWN_GRACE)]);
    await this.registry?.deregister();
  }
}

@Controller("health")
export class HealthController {
  constructor(@Inject(AgentService) private readonly agent: AgentService) {}

  @Get()
  health(): Record<string, unknown> {
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

  @Get("live")
  live(): Record<string, string> {
    return { status: "alive" };
  }

  @Get("ready")
  ready(): Record<string, string> {
    const pending = this.agent.pending();
    if (pending.length > 0) throw new HttpException({ status: "starting", waiting_for: pending }, 503);
    return { status: "ready" };
  }
}

@Module({})
export class SwarmAgentModule {
  static forRoot(config: AgentConfig, handler: Handler): DynamicModule {
    return {
      module: SwarmAgentModule,
      controllers: [HealthController],
      providers: [{ provide: AGENT_OPTIONS, useValue: { config, handler } }, AgentService],
      exports: [AgentService],
    };
  }
}
