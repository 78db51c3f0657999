/**
 * The Redis keys of one agent, from the templates swarm's Python `swarm.keys.SwarmKeys`
 * rendered into constants.ts (one definition of the layout). The bus plan in Redis
 * names the agent's own streams too; `BusClient` uses those and checks they agree.
 */
import { AGENT_MARK, KEY_TEMPLATES, SWARM_MARK } from "./constants.js";

export type KeyKind = keyof typeof KEY_TEMPLATES;

export function swarmKey(kind: KeyKind, swarm: string, agentId = ""): string {
  return KEY_TEMPLATES[kind].split(SWARM_MARK).join(swarm).split(AGENT_MARK).join(agentId);
}

export interface AgentKeys {
  bus: string;
  acl: string;
  outbox: string;
  inbox: string;
  receipts: string;
  deadLetter: string;
  breaker: string;
}

export function agentKeys(swarm: string, agentId: string): AgentKeys {
  return {
    bus: swarmKey("bus", swarm),
    acl: swarmKey("acl", swarm),
    outbox: swarmKey("outbox", swarm, agentId),
    inbox: swarmKey("inbox", swarm, agentId),
    receipts: swarmKey("receipts", swarm, agentId),
    deadLetter: swarmKey("agentDeadLetter", swarm, agentId),
    breaker: swarmKey("breaker", swarm, agentId),
  };
}
