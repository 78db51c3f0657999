/**
 * Capped exponential backoff with full jitter, the same policy as swarm's Python
 * `swarm.backoff`: a wait is uniform over [0, min(cap, base * 2**failures)],
 * never below `floor`, so a fleet's retries spread out and a loop never spins.
 */
import { BACKOFF_MIN_DELAY } from "./constants.js";

export function backoffDelay(failures: number, base = 0.2, cap = 1.5, floor = BACKOFF_MIN_DELAY): number {
  const ceiling = Math.min(cap, base * 2 ** Math.min(failures, 32));
  const draw = Math.random() * ceiling;
  return Math.max(Math.min(floor, cap), Math.min(draw, cap));
}

/** Consecutive-failure counter of one retry loop; `reset()` after a success. */
export class Backoff {
  failures = 0;

  constructor(
    readonly base = 0.2,
    readonly cap = 1.5,
    readonly floor = BACKOFF_MIN_DELAY,
  ) {}

  /** Count one failure; the seconds to wait before the next attempt. */
  nextDelay(): number {
    const delay = backoffDelay(this.failures, this.base, this.cap, this.floor);
    this.failures += 1;
    return delay;
  }

  reset(): void {
    this.failures = 0;
  }
}

/** Resolves after `seconds`, or at once when `signal` aborts (never rejects). */
export function sleep(seconds: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, Math.max(0, seconds * 1000));
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
