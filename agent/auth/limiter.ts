// Counts events (authentication failures; verifications forced by a blocked client) per client in a fixed window;
// a client past the limit is blocked until its window ends. Other clients are unaffected. What a blocked client
// may still do is the Authenticator's policy.
export interface FailureLimiterOptions {
  maxFailures: number
  windowMs: number
  now?: () => number
  /** bound on tracked addresses, so a flood from many addresses cannot grow memory without limit */
  maxTracked?: number
}

export class FailureLimiter {
  private readonly windows = new Map<string, { failures: number; resetAt: number }>()
  private readonly now: () => number
  private readonly maxTracked: number

  constructor(private readonly options: FailureLimiterOptions) {
    this.now = options.now ?? Date.now
    this.maxTracked = options.maxTracked ?? 10_000
  }

  get windowMs(): number {
    return this.options.windowMs
  }

  /** How many addresses are tracked now (never more than `maxTracked`). */
  get tracked(): number {
    return this.windows.size
  }

  /** Seconds until the address may try again, or 0 when it is not blocked. */
  retryAfterSec(address: string): number {
    const window = this.windows.get(address)
    if (!window) return 0
    const remainingMs = window.resetAt - this.now()
    if (remainingMs <= 0) {
      this.windows.delete(address)
      return 0
    }
    return window.failures >= this.options.maxFailures ? Math.ceil(remainingMs / 1000) : 0
  }

  recordFailure(address: string): void {
    const now = this.now()
    const window = this.windows.get(address)
    if (window && window.resetAt > now) {
      window.failures += 1
      return
    }
    if (this.windows.size >= this.maxTracked) this.evictExpired(now)
    this.windows.set(address, { failures: 1, resetAt: now + this.options.windowMs })
  }

  private evictExpired(now: number): void {
    for (const [address, window] of this.windows) if (window.resetAt <= now) this.windows.delete(address)
    if (this.windows.size < this.maxTracked) return
    // Still full: forget the oldest tenth (Map keeps insertion order) rather than grow — a batch, so a flood from
    // many addresses costs one scan per tenth, not one per request — and addresses not blocked yet go first, so
    // failures from many other addresses do not set a blocked one free.
    const keep = this.maxTracked - Math.max(1, Math.ceil(this.maxTracked / 10))
    for (const [address, window] of this.windows) {
      if (this.windows.size <= keep) return
      if (window.failures < this.options.maxFailures) this.windows.delete(address)
    }
    for (const address of this.windows.keys()) {
      if (this.windows.size <= keep) return
      this.windows.delete(address)
    }
  }
}
