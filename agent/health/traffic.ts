// Judging a release by the answers nginx logged for it (the `deploy_agent` JSON log_format): pure decisions, no I/O.
// A line names every upstream nginx tried for the request ($upstream_addr "a, b" with $upstream_status "502, 200";
// " : " between upstream groups); each tried port gets one answer, classed by what that port gave.

export type ResponseClass = '1xx' | '2xx' | '3xx' | '4xx' | '5xx' | 'upstream-error'

/** One access log line, as the `deploy_agent` log_format writes it. */
export interface AccessRecord {
  /** When nginx logged the request (its end), epoch milliseconds. */
  atMs: number
  status: number
  upstreamAddr: string
  upstreamStatus: string
}

/** What one upstream (by port; null when nginx had no address: no live upstream) answered to one request. */
export interface Answer {
  port: number | null
  class: ResponseClass
}

/** Parses one line; null for anything that is not a `deploy_agent` line (another format, a torn line). */
export function parseAccessLine(line: string): AccessRecord | null {
  let v: unknown
  try {
    v = JSON.parse(line)
  } catch {
    return null
  }
  if (typeof v !== 'object' || v === null) return null
  const { msec, status, upstream_addr: addr, upstream_status: upstream } = v as Record<string, unknown>
  if (typeof msec !== 'number' || typeof status !== 'number' || !Number.isInteger(status)) return null
  return {
    atMs: Math.round(msec * 1000),
    status,
    upstreamAddr: typeof addr === 'string' ? addr : '',
    upstreamStatus: typeof upstream === 'string' ? upstream : '',
  }
}

/** `$upstream_*` lists: ", " between servers tried in one group, " : " between groups (internal redirects). */
function entries(list: string): string[] {
  return list
    .split(/\s+:\s+|,\s*/)
    .map((e) => e.trim())
    .filter((e) => e !== '')
}

/** `127.0.0.1:18011` or `[::1]:18011` → its port; a unix socket or an upstream group's name → null. */
function portOf(addr: string | undefined): number | null {
  const m = /^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):(\d{1,5})$/.exec(addr ?? '')
  return m ? Number(m[1]) : null
}

function classOf(status: number): ResponseClass {
  if (status >= 500) return '5xx'
  if (status >= 400) return '4xx'
  if (status >= 300) return '3xx'
  if (status >= 200) return '2xx'
  return '1xx'
}

/**
 * The answers of one request. nginx records 502 (could not connect, bad answer) or 504 (timed out) for an upstream
 * that gave no answer of its own, and "-" when it got none at all: those are upstream errors (an app that itself
 * answers 502 or 504 is counted the same, and is an error either way). A request nginx answered without any
 * upstream counts only when it is such an error (no live upstream); 499 is the client leaving, not the release.
 */
export function classifyAnswers(r: AccessRecord): Answer[] {
  const addrs = entries(r.upstreamAddr)
  const statuses = entries(r.upstreamStatus)
  if (statuses.length === 0) return r.status === 502 || r.status === 504 ? [{ port: portOf(addrs.at(-1)), class: 'upstream-error' }] : []
  const byPort = new Map<number | null, ResponseClass>()
  statuses.forEach((s, i) => {
    const code = /^\d{3}$/.test(s) ? Number(s) : null
    let cls: ResponseClass
    if (code === null) cls = r.status === 499 ? '4xx' : 'upstream-error'
    else if (code === 502 || code === 504) cls = 'upstream-error'
    else cls = classOf(code)
    const port = portOf(addrs[i])
    byPort.delete(port) // the last try of a port is its answer
    byPort.set(port, cls)
  })
  return [...byPort].map(([port, cls]) => ({ port, class: cls }))
}

export function isError(cls: ResponseClass): boolean {
  return cls === '5xx' || cls === 'upstream-error'
}

/** Counts in a sliding window kept as fixed slots (bounded memory whatever the request rate). */
export class SlidingCounts {
  private readonly slots: { slot: number; total: number; errors: number }[]
  private latest = -Infinity

  constructor(
    readonly windowMs: number,
    private readonly slotMs: number,
  ) {
    this.slots = Array.from({ length: Math.max(1, Math.ceil(windowMs / slotMs)) }, () => ({ slot: -Infinity, total: 0, errors: 0 }))
  }

  add(atMs: number, error: boolean): void {
    const slot = Math.floor(atMs / this.slotMs)
    if (slot <= Math.floor(this.latest / this.slotMs) - this.slots.length) return // already out of the window
    this.latest = Math.max(this.latest, atMs)
    const cell = this.slots[slot % this.slots.length] as { slot: number; total: number; errors: number }
    if (cell.slot !== slot) Object.assign(cell, { slot, total: 0, errors: 0 })
    cell.total++
    if (error) cell.errors++
  }

  /** Totals of the slots within the window that ends at `nowMs` (default: the latest sample). */
  counts(nowMs = this.latest): { total: number; errors: number } {
    const now = Math.floor(nowMs / this.slotMs)
    let total = 0
    let errors = 0
    for (const cell of this.slots) {
      if (cell.slot > now - this.slots.length && cell.slot <= now) {
        total += cell.total
        errors += cell.errors
      }
    }
    return { total, errors }
  }
}

export interface ErrorRateLimits {
  /** 0..1: a larger share of errors fails the release. */
  maxErrorRate: number
  /** The fewest answers in the window the rate is judged on. */
  minRequests: number
}

export const TRAFFIC_WINDOW_MS = 2000
const TRAFFIC_SLOT_MS = 100

function percent(share: number): string {
  return `${Math.round(share * 1000) / 10}%`
}

/**
 * The OBSERVING verdict from traffic: the new release's answers (its port; and nginx's own "no live upstream"
 * errors, since nginx routes only to it) in a sliding 2 s window. Answers why it failed, or null.
 */
export class ReleaseTraffic {
  private readonly window: SlidingCounts
  /** The latest time logged for any port: the window ends there, so old answers of this port age out. */
  private nowMs = -Infinity

  constructor(
    readonly port: number,
    private readonly limits: ErrorRateLimits,
    windowMs = TRAFFIC_WINDOW_MS,
  ) {
    this.window = new SlidingCounts(windowMs, Math.min(TRAFFIC_SLOT_MS, windowMs))
  }

  record(r: AccessRecord): string | null {
    this.nowMs = Math.max(this.nowMs, r.atMs)
    for (const a of classifyAnswers(r)) if (a.port === this.port || a.port === null) this.window.add(r.atMs, isError(a.class))
    const { total, errors } = this.window.counts(this.nowMs)
    if (total < this.limits.minRequests || errors / total <= this.limits.maxErrorRate) return null
    return (
      `the error rate of the new release's answers through nginx was ${percent(errors / total)} ` +
      `(${errors} of ${total} in ${this.window.windowMs / 1000} s were 5xx or upstream errors), more than maxErrorRate ${percent(this.limits.maxErrorRate)}`
    )
  }
}

export interface AlertLimits {
  errorsPerMinute?: number | undefined
  downMinutes?: number | undefined
}

export interface TrafficAlert {
  kind: 'errors' | 'down'
  reason: string
}

/**
 * Alerts on the live release's traffic: more than `errorsPerMinute` errors in the last minute, or nothing but errors
 * for longer than `downMinutes`. Each fires once, and again only after it has cleared.
 */
export class TrafficAlerts {
  private readonly minute = new SlidingCounts(60_000, 1000)
  private failingSince: number | null = null
  private errorsRaised = false
  private downRaised = false

  constructor(private readonly limits: AlertLimits) {}

  record(atMs: number, error: boolean): TrafficAlert[] {
    const alerts: TrafficAlert[] = []
    this.minute.add(atMs, error)
    const { errorsPerMinute, downMinutes } = this.limits
    if (errorsPerMinute !== undefined) {
      const { errors } = this.minute.counts()
      if (errors > errorsPerMinute && !this.errorsRaised) {
        this.errorsRaised = true
        alerts.push({ kind: 'errors', reason: `${errors} 5xx or upstream errors in the last minute (more than ${errorsPerMinute})` })
      } else if (errors <= errorsPerMinute) this.errorsRaised = false
    }
    if (!error) {
      this.failingSince = null
      this.downRaised = false
    } else {
      this.failingSince ??= atMs
      if (downMinutes !== undefined && !this.downRaised && atMs - this.failingSince > downMinutes * 60_000) {
        this.downRaised = true
        const minutes = Math.floor((atMs - this.failingSince) / 60_000)
        alerts.push({
          kind: 'down',
          reason: `every request for ${minutes} min got a 5xx or upstream error (longer than ${downMinutes} min)`,
        })
      }
    }
    return alerts
  }
}
