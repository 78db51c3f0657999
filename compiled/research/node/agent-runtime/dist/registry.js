/**
 * RegistryClient: registers the agent with the swarm registry and keeps its lease,
 * the same protocol and policy as swarm's Python `swarm.registry.client`:
 *
 * - `register()` POSTs /agents/register with the bearer SWARM_AGENT_TOKEN: agent_id,
 *   agent_name, host, port, ttl_seconds, version, role, capabilities, topics,
 *   health_url (http://AGENT_HOST:AGENT_PORT/health/live) and metadata;
 * - the loop heartbeats (POST /agents/<id>/heartbeat) every heartbeat interval, or
 *   faster when the registry's answer asks for it (never below 0.1 s);
 * - a 404 on heartbeat means the registry forgot the agent: it registers again;
 * - transient failures (network, timeouts, 5xx) are retried with capped exponential
 *   backoff and full jitter (cap min(1.5 s, interval)); refusals (4xx) on the slow
 *   interval cadence, since the catalog may change;
 * - `deregister()` stops the loop and DELETEs /agents/<id> (never throws).
 */
import { REGISTRY_BASE_RETRY_DELAY, REGISTRY_MAX_RETRY_DELAY, REGISTRY_MIN_ADOPTED_INTERVAL, REGISTRY_MIN_RETRY_DELAY, } from "./constants.js";
import { backoffDelay, sleep } from "./backoff.js";
import { describe, Logger } from "./log.js";
/** Network trouble or a 5xx: retried quickly. */
export class RegistryUnavailableError extends Error {
    name = "RegistryUnavailableError";
}
/** The registry refused (401/403/409/422 ...): retried on the slow cadence. */
export class RegistryRefusedError extends Error {
    status;
    name = "RegistryRefusedError";
    constructor(message, status) {
        super(message);
        this.status = status;
    }
}
const REQUEST_TIMEOUT_MS = 5000;
export class RegistryClient {
    config;
    registered = false;
    registrations = 0;
    heartbeats = 0;
    interval;
    baseUrl;
    loop = null;
    stop = null;
    log;
    constructor(config) {
        this.config = config;
        if (config.registry === null)
            throw new Error("the agent has no registry settings");
        if (!/^https?:\/\/[^\s/]+/.test(config.registry.url)) {
            throw new Error(`REGISTRY_URL must be an http(s) URL, got ${JSON.stringify(config.registry.url)}`);
        }
        this.baseUrl = config.registry.url.replace(/\/+$/, "");
        this.interval = config.registry.heartbeatInterval;
        this.log = new Logger(`swarm.registry.client.${config.agentId}`);
    }
    /** Seconds the loop waits between heartbeats. */
    get effectiveInterval() {
        return this.interval;
    }
    registerBody() {
        const c = this.config;
        return {
            agent_id: c.agentId,
            agent_name: c.agentName,
            host: c.host,
            port: c.port,
            ttl_seconds: c.registry?.ttlSeconds,
            version: c.version,
            role: c.role,
            capabilities: [...c.capabilities],
            topics: { publish: [...c.publishes], subscribe: [...c.subscribes] },
            health_url: `http://${c.host}:${c.port}/health/live`,
            metadata: { runtime: "node" },
        };
    }
    async register() {
        const response = await this.request("POST", "/agents/register", this.registerBody());
        if (response.status === 200 || response.status === 201) {
            this.registered = true;
            this.registrations += 1;
            this.adopt(await response.json().catch(() => null));
            this.log.info(`registered ${this.config.agentId} at ${this.config.host}:${this.config.port} (${response.status === 201 ? "new" : "unchanged"})`);
            return;
        }
        throw await refusal(response, "register");
    }
    /** Renew the lease once; false when the registry does not know the agent (404). */
    async heartbeat() {
        const response = await this.request("POST", `/agents/${this.config.agentId}/heartbeat`);
        if (response.status === 200) {
            this.registered = true;
            this.heartbeats += 1;
            this.adopt(await response.json().catch(() => null));
            return true;
        }
        if (response.status === 404) {
            await response.body?.cancel();
            this.registered = false;
            return false;
        }
        throw await refusal(response, "heartbeat");
    }
    /** Start the lease loop (registers first when not registered); idempotent. */
    start() {
        if (this.loop !== null)
            return;
        this.stop = new AbortController();
        this.loop = this.run(this.stop.signal);
    }
    async stopLoop() {
        this.stop?.abort();
        await this.loop;
        this.loop = null;
        this.stop = null;
    }
    /** Stop the loop and DELETE the registration; true if the registry removed it. Never throws. */
    async deregister() {
        await this.stopLoop();
        this.registered = false;
        try {
            const response = await this.request("DELETE", `/agents/${this.config.agentId}`);
            await response.body?.cancel();
            if ([200, 202, 204].includes(response.status)) {
                this.log.info(`deregistered ${this.config.agentId}`);
                return true;
            }
            if (response.status !== 404)
                this.log.error(`deregister ${this.config.agentId} refused: ${response.status}`);
            return false;
        }
        catch (error) {
            this.log.warning(`could not deregister ${this.config.agentId}: ${describe(error)}`);
            return false;
        }
    }
    adopt(answer) {
        if (typeof answer !== "object" || answer === null)
            return;
        const asked = answer.heartbeat_interval;
        if (typeof asked !== "number" || !(asked > 0))
            return;
        const configured = this.config.registry?.heartbeatInterval ?? asked;
        const interval = Math.max(REGISTRY_MIN_ADOPTED_INTERVAL, Math.min(configured, asked));
        if (interval !== this.interval) {
            this.log.info(`${this.config.agentId} heartbeats every ${interval}s (registry asks ${asked}s, configured ${configured}s)`);
            this.interval = interval;
        }
    }
    async run(signal) {
        while (!signal.aborted) {
            if (this.registered)
                await sleep(this.interval, signal);
            if (signal.aborted)
                return;
            await this.renewOrRegister(signal);
        }
    }
    async renewOrRegister(signal) {
        let failures = 0;
        while (!signal.aborted) {
            let delay;
            try {
                if (!this.registered) {
                    await this.register();
                    return;
                }
                if (await this.heartbeat())
                    return;
                this.log.warning(`registry does not know ${this.config.agentId} (404 on heartbeat); registering again`);
                continue;
            }
            catch (error) {
                if (error instanceof RegistryRefusedError) {
                    delay = Math.max(REGISTRY_MIN_RETRY_DELAY, this.interval);
                    this.log.error(`registry refused ${this.config.agentId}: ${describe(error)}; retrying in ${delay.toFixed(1)}s`);
                }
                else {
                    delay = backoffDelay(failures, REGISTRY_BASE_RETRY_DELAY, Math.min(REGISTRY_MAX_RETRY_DELAY, this.interval), REGISTRY_MIN_RETRY_DELAY);
                    this.log.warning(`registry unavailable for ${this.config.agentId} (${describe(error)}); retrying in ${delay.toFixed(2)}s`);
                }
            }
            failures += 1;
            await sleep(delay, signal);
        }
    }
    async request(method, path, body) {
        const headers = { accept: "application/json" };
        if (this.config.token)
            headers.authorization = `Bearer ${this.config.token}`;
        if (body !== undefined)
            headers["content-type"] = "application/json";
        let response;
        try {
            response = await fetch(this.baseUrl + path, {
                method,
                headers,
                body: body === undefined ? undefined : JSON.stringify(body),
                signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
            });
        }
        catch (error) {
            throw new RegistryUnavailableError(`${method} ${this.baseUrl}${path}: ${describe(error)}`);
        }
        if (response.status >= 500) {
            const detail = await response.text().catch(() => "");
            throw new RegistryUnavailableError(`${method} ${this.baseUrl}${path}: ${response.status} ${detail.slice(0, 200)}`);
        }
        return response;
    }
}
async function refusal(response, action) {
    const detail = await response.text().catch(() => "");
    return new RegistryRefusedError(`${action}: registry answered ${response.status}: ${detail.slice(0, 500)}`, response.status);
}
