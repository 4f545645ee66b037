// SPDX-License-Identifier: MIT
/**
 * Bounded concurrency: `limit(task)` runs at most `concurrency` tasks at once, the others wait
 * in order. Used where thousands of independent reads would otherwise start together (opening
 * every backup of a root at once exhausts file descriptors and memory).
 */
export type Limiter = <T>(task: () => Promise<T>) => Promise<T>;

export function createLimiter(concurrency: number): Limiter {
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency ${concurrency}`);
  let running = 0;
  const queue: (() => void)[] = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (running >= concurrency) await new Promise<void>((resolvePromise) => queue.push(resolvePromise));
    else running++;
    try {
      return await task();
    } finally {
      // Hand the slot straight to the next waiter (running stays the same) or free it.
      if (queue.length > 0) queue.shift()?.();
      else running--;
    }
  };
}
