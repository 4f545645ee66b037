// SPDX-License-Identifier: MIT
/**
 * When the mount last answered a client's request, so that background work (a diff's parent
 * search and build, docs/architecture.md) starts in a quiet moment instead of in the middle of a
 * burst of lookups: a first `ls -l`, or Explorer opening a folder, is a few dozen requests that
 * share this thread and the thread pool with whatever else runs.
 */
export class ForegroundActivity {
  private last = Number.NEGATIVE_INFINITY;

  /** A client request arrived. Costs a clock read. */
  touch(): void {
    this.last = performance.now();
  }

  /**
   * Resolves once `quietMs` have passed without a request (and at least `quietMs` from now), or
   * after `maxWaitMs` whatever the traffic: a client that polls forever must not starve the work.
   */
  async quiet(quietMs: number, maxWaitMs: number): Promise<void> {
    const started = performance.now();
    let wait = quietMs;
    for (;;) {
      await afterDelay(wait);
      const now = performance.now();
      const idle = now - this.last;
      if (idle >= quietMs || now - started >= maxWaitMs) return;
      wait = Math.min(quietMs - idle, maxWaitMs - (now - started));
    }
  }
}

/** Resolves after `ms`; the timer does not keep the process alive (an unmount need not wait for it). */
function afterDelay(ms: number): Promise<void> {
  return new Promise((resolvePromise) => {
    setTimeout(resolvePromise, ms).unref();
  });
}
