/** @swarm-gitops/agent-runtime: what every node agent of a swarm shares (see each module). */
export { AGENT_OPTIONS, AgentService, HealthController, SwarmAgentModule, type AgentOptions } from "./agent.js";
export { Backoff, backoffDelay, sleep } from "./backoff.js";
export {
  BusClient,
  logReceived,
  streamEntries,
  type BusStats,
  type Handler,
  type HandlerContext,
  type Message,
  type PublishOptions,
  type PublishResult,
} from "./bus.js";
export { configFromEnv, listenHost, type AgentConfig, type CompiledConfig, type RegistrySettings } from "./config.js";
export * as constants from "./constants.js";
export { agentKeys, swarmKey, type AgentKeys, type KeyKind } from "./keys.js";
export { describe, Logger, quote, type Level } from "./log.js";
export { RegistryClient, RegistryRefusedError, RegistryUnavailableError } from "./registry.js";
