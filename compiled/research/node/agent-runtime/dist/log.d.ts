/**
 * One log line per event on stderr, `<ISO time> <LEVEL> <logger>: <message>` like the
 * Python agents' logging format. Values an agent does not control (message ids,
 * topics, errors) are passed through `quote`, so a control character in them
 * cannot forge a log line. SWARM_LOG_LEVEL sets the threshold (default INFO).
 */
declare const LEVELS: {
    readonly DEBUG: 10;
    readonly INFO: 20;
    readonly WARNING: 30;
    readonly ERROR: 40;
};
export type Level = keyof typeof LEVELS;
/** A value as a JSON string literal: quotes it and escapes control characters. */
export declare function quote(value: unknown): string;
export declare class Logger {
    readonly name: string;
    private readonly min;
    constructor(name: string);
    log(level: Level, message: string): void;
    debug(message: string): void;
    info(message: string): void;
    warning(message: string): void;
    error(message: string): void;
}
/** An error's message, escaped for a log line. */
export declare function describe(error: unknown): string;
export {};
