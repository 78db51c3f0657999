// Generated from swarm's Python definitions (swarm.keys, swarm.bus.routing, swarm.backoff,
// swarm.runtimes.python.agent_runtime, swarm.registry.client) by swarm.runtimes.node.render_constants.
// Do not edit: a test compares this file with what the Python values render.
export const KEY_TEMPLATES = {
    "acl": "swarm:{<swarm>}:acl",
    "agentDeadLetter": "swarm:{<swarm>}:dlq:@<agent>",
    "breaker": "swarm:{<swarm>}:breaker:<agent>",
    "bus": "swarm:{<swarm>}:bus",
    "inbox": "swarm:{<swarm>}:inbox:<agent>",
    "outbox": "swarm:{<swarm>}:outbox:<agent>",
    "receipts": "swarm:{<swarm>}:receipts:<agent>"
};
export const SWARM_MARK = "<swarm>";
export const AGENT_MARK = "<agent>";
export const ROUTER_GROUP = "router";
export const OUTBOX_FIELDS = [
    "content_type",
    "message_id",
    "payload",
    "topic"
];
export const INBOX_REQUIRED_FIELDS = [
    "topic",
    "message_id",
    "sender",
    "payload"
];
export const CONTENT_TYPE = "application/json";
export const MAX_MESSAGE_ID = 200;
export const BACKOFF_MIN_DELAY = 0.05;
export const BUS_RETRY_BASE = 0.5;
export const BUS_RETRY_CAP = 10.0;
export const REGISTRY_BASE_RETRY_DELAY = 0.2;
export const REGISTRY_MIN_RETRY_DELAY = 0.05;
export const REGISTRY_MAX_RETRY_DELAY = 1.5;
export const REGISTRY_MIN_ADOPTED_INTERVAL = 0.1;
