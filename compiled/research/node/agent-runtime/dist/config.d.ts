/**
 * An agent's configuration: what the compiler wrote (src/config.ts of the agent) with
 * the environment's overrides, the same contract as a Python agent: AGENT_ID,
 * AGENT_HOST, AGENT_PORT, REDIS_URL, REGISTRY_URL, SWARM_AGENT_TOKEN.
 */
export interface RegistrySettings {
    url: string;
    ttlSeconds: number;
    heartbeatInterval: number;
}
/** What the compiler knows about the agent (src/config.ts). */
export interface CompiledConfig {
    swarm: string;
    agentId: string;
    agentName: string;
    version: string;
    role: string;
    capabilities: readonly string[];
    publishes: readonly string[];
    subscribes: readonly string[];
    port: number;
    /** null: the agent neither publishes nor subscribes (no bus connection). */
    redisUrl: string | null;
    /** null: `registry: false` in the spec. */
    registry: RegistrySettings | null;
}
export interface AgentConfig extends CompiledConfig {
    host: string;
    token: string | null;
}
/** `compiled` with the environment's overrides (empty variables count as unset). */
export declare function configFromEnv(compiled: CompiledConfig, env?: NodeJS.ProcessEnv): AgentConfig;
/**
 * The address the HTTP server binds: `--host ADDR` on the command line (`swarm up --demo`
 * passes 127.0.0.1), else SWARM_LISTEN_HOST, else all interfaces (a container's).
 */
export declare function listenHost(env?: NodeJS.ProcessEnv, argv?: readonly string[]): string;
