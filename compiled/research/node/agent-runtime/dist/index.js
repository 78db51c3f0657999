/** @swarm-gitops/agent-runtime: what every node agent of a swarm shares (see each module). */
export { AGENT_OPTIONS, AgentService, HealthController, SwarmAgentModule } from "./agent.js";
export { Backoff, backoffDelay, sleep } from "./backoff.js";
export { BusClient, logReceived, streamEntries, } from "./bus.js";
export { configFromEnv, listenHost } from "./config.js";
export * as constants from "./constants.js";
export { agentKeys, swarmKey } from "./keys.js";
export { describe, Logger, quote } from "./log.js";
export { RegistryClient, RegistryRefusedError, RegistryUnavailableError } from "./registry.js";
