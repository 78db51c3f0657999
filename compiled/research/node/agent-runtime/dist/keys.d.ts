/**
 * The Redis keys of one agent, from the templates swarm's Python `swarm.keys.SwarmKeys`
 * rendered into constants.ts (one definition of the layout). The bus plan in Redis
 * names the agent's own streams too; `BusClient` uses those and checks they agree.
 */
import { KEY_TEMPLATES } from "./constants.js";
export type KeyKind = keyof typeof KEY_TEMPLATES;
export declare function swarmKey(kind: KeyKind, swarm: string, agentId?: string): string;
export interface AgentKeys {
    bus: string;
    acl: string;
    outbox: string;
    inbox: string;
    receipts: string;
    deadLetter: string;
    breaker: string;
}
export declare function agentKeys(swarm: string, agentId: string): AgentKeys;
