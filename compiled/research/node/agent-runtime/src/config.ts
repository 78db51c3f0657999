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

const AGENT_ID = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function port(raw: string | undefined, fallback: number): number {
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new Error(`environment AGENT_PORT=${JSON.stringify(raw)} is not a port (1..65535)`);
  }
  return value;
}

/** `compiled` with the environment's overrides (empty variables count as unset). */
export function configFromEnv(compiled: CompiledConfig, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const agentId = env.AGENT_ID || compiled.agentId;
  if (agentId.length > 63 || !AGENT_ID.test(agentId)) {
    throw new Error(`environment AGENT_ID=${JSON.stringify(agentId)} is not a valid agent id`);
  }
  return {
    ...compiled,
    agentId,
    host: env.AGENT_HOST || "127.0.0.1",
    port: port(env.AGENT_PORT, compiled.port),
    redisUrl: compiled.redisUrl === null ? null : env.REDIS_URL || compiled.redisUrl,
    registry: compiled.registry === null ? null : { ...compiled.registry, url: env.REGISTRY_URL || compiled.registry.url },
    token: env.SWARM_AGENT_TOKEN || null,
  };
}

/**
 * The address the HTTP server binds: `--host ADDR` on the command line (`swarm up --demo`
 * passes 127.0.0.1), else SWARM_LISTEN_HOST, else all interfaces (a container's).
 */
export function listenHost(env: NodeJS.ProcessEnv = process.env, argv: readonly string[] = process.argv): string {
  const flag = argv.indexOf("--host");
  if (flag >= 0 && argv[flag + 1]) return argv[flag + 1];
  return env.SWARM_LISTEN_HOST || "0.0.0.0";
}
