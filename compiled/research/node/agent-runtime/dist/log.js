/**
 * One log line per event on stderr, `<ISO time> <LEVEL> <logger>: <message>` like the
 * Python agents' logging format. Values an agent does not control (message ids,
 * topics, errors) are passed through `quote`, so a control character in them
 * cannot forge a log line. SWARM_LOG_LEVEL sets the threshold (default INFO).
 */
const LEVELS = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40 };
function threshold() {
    const wanted = (process.env.SWARM_LOG_LEVEL ?? "INFO").toUpperCase();
    return wanted in LEVELS ? LEVELS[wanted] : LEVELS.INFO;
}
/** A value as a JSON string literal: quotes it and escapes control characters. */
export function quote(value) {
    return JSON.stringify(String(value));
}
export class Logger {
    name;
    min = threshold();
    constructor(name) {
        this.name = name;
    }
    log(level, message) {
        if (LEVELS[level] < this.min)
            return;
        process.stderr.write(`${new Date().toISOString()} ${level} ${this.name}: ${message}\n`);
    }
    debug(message) {
        this.log("DEBUG", message);
    }
    info(message) {
        this.log("INFO", message);
    }
    warning(message) {
        this.log("WARNING", message);
    }
    error(message) {
        this.log("ERROR", message);
    }
}
/** An error's message, escaped for a log line. */
export function describe(error) {
    const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    return JSON.stringify(text).slice(1, -1);
}
