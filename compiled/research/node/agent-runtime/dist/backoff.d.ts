export declare function backoffDelay(failures: number, base?: number, cap?: number, floor?: number): number;
/** Consecutive-failure counter of one retry loop; `reset()` after a success. */
export declare class Backoff {
    readonly base: number;
    readonly cap: number;
    readonly floor: number;
    failures: number;
    constructor(base?: number, cap?: number, floor?: number);
    /** Count one failure; the seconds to wait before the next attempt. */
    nextDelay(): number;
    reset(): void;
}
/** Resolves after `seconds`, or at once when `signal` aborts (never rejects). */
export declare function sleep(seconds: number, signal?: AbortSignal): Promise<void>;
