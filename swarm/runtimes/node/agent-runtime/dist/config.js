const AGENT_ID = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
function port(raw, fallback) {
    if (raw === undefined || raw === "")
        return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < 1 || value > 65535) {
        throw new Error(`environment AGENT_PORT=${JSON.stringify(raw)} is not a port (1..65535)`);
    }
    return value;
}
/** `compiled` with the environment's overrides (empty variables count as unset). */
export function configFromEnv(compiled, env = process.env) {
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
export function listenHost(env = process.env, argv = process.argv) {
    const flag = argv.indexOf("--host");
    if (flag >= 0 && argv[flag + 1])
        return argv[flag + 1];
    return env.SWARM_LISTEN_HOST || "0.0.0.0";
}
