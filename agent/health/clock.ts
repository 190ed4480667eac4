// Time as the health loops see it, injectable so tests decide how time passes.
import { setTimeout as delay } from 'node:timers/promises'
import { abortError } from './errors.js'

export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number
  /** Resolves after `ms`; rejects with an AbortError when `signal` aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>
}

export const systemClock: Clock = {
  now: () => performance.now(),
  async sleep(ms, signal) {
    try {
      await delay(ms, undefined, signal === undefined ? undefined : { signal })
    } catch (err) {
      throw signal?.aborted === true ? abortError(signal) : err
    }
  },
}
