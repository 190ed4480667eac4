// An open-loop load generator at a fixed rate (default 200 req/s), for counting failed requests through nginx while
// something switches behind it. Requests are fired on schedule whether or not earlier ones have answered, over a
// keep-alive agent, like a fleet of browsers would. It behaves like test/helpers/load.ts: a request that fails on a
// *reused* keep-alive connection before any answer (nginx's old workers close idle connections at a reload) is sent
// again on a fresh one (RFC 9112 §9.3.1; browsers and Node's docs do the same) and counted as a retry, not a failure.
// Everything else is counted: non-2xx answers (by status) and socket errors (by code), separately.
import { Agent, request } from 'node:http'

export interface RateLoadResult {
  /** requests fired by the schedule */
  sent: number
  ok: number
  non2xx: number
  statuses: Record<string, number>
  /** errors on a fresh connection (a retry is always on one), timeouts */
  socketErrors: number
  errors: Record<string, number>
  /** requests sent again after a reused keep-alive connection was found closed */
  retried: number
  /** 2xx bodies (trimmed) → count: which releases answered */
  served: Record<string, number>
  durationMs: number
  maxLatencyMs: number
  /** each failure (the first 2000): when its request was fired, when it failed (epoch ms) and what it was */
  failures: Array<{ firedAt: number; at: number; what: string }>
}

export interface RateLoadOptions {
  rate?: number
  maxSockets?: number
  timeoutMs?: number
  maxAttempts?: number
  /** Called with every final answer (status 0 for a socket error), for timelines of who answered when. */
  onAnswer?: (answer: { firedAt: number; at: number; status: number; body: string }) => void
}

interface Answer {
  status: number
  body: string
}

function get(url: string, agent: Agent, timeoutMs: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        if (body.length < 256) body += chunk
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', (err) => reject(Object.assign(err, { reused: false })))
    })
    req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error(`timed out after ${timeoutMs} ms`), { code: 'TIMEOUT' })))
    req.on('error', (err) => reject(Object.assign(err, { reused: req.reusedSocket })))
    req.end()
  })
}

const bump = (map: Record<string, number>, key: string) => {
  map[key] = (map[key] ?? 0) + 1
}

/** Starts firing GET `url` at `rate` per second until `stop()`, which waits for the requests in flight. */
export function rateLoad(url: string, options: RateLoadOptions = {}) {
  const rate = options.rate ?? 200
  const timeoutMs = options.timeoutMs ?? 5000
  const maxAttempts = options.maxAttempts ?? 3
  const agent = new Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 32 })
  // A retry goes out on a new connection, as the comment at the top says: after a reload several pooled idle
  // connections are closed at once, and another pooled one is likely closed too.
  const fresh = new Agent({ keepAlive: false })
  const result: RateLoadResult = {
    sent: 0,
    ok: 0,
    non2xx: 0,
    statuses: {},
    socketErrors: 0,
    errors: {},
    retried: 0,
    served: {},
    durationMs: 0,
    maxLatencyMs: 0,
    failures: [],
  }
  const fail = (firedAt: number, what: string) => {
    if (result.failures.length < 2000) result.failures.push({ firedAt, at: Date.now(), what })
  }
  const inFlight = new Set<Promise<void>>()
  const started = performance.now()

  const one = async (): Promise<void> => {
    const t0 = performance.now()
    const firedAt = Date.now()
    for (let attempt = 1; ; attempt++) {
      try {
        const { status, body } = await get(url, attempt === 1 ? agent : fresh, timeoutMs)
        options.onAnswer?.({ firedAt, at: Date.now(), status, body: body.trim() })
        if (status >= 200 && status < 300) {
          result.ok++
          bump(result.served, body.trim())
        } else {
          result.non2xx++
          bump(result.statuses, String(status))
          fail(firedAt, `HTTP ${status}`)
        }
        break
      } catch (err) {
        const e = err as NodeJS.ErrnoException & { reused?: boolean }
        if (e.reused === true && attempt < maxAttempts) {
          result.retried++
          continue
        }
        result.socketErrors++
        options.onAnswer?.({ firedAt, at: Date.now(), status: 0, body: e.code ?? e.message })
        bump(result.errors, e.code ?? e.message)
        fail(firedAt, `${e.code ?? e.message}${e.reused === true ? ' (reused socket)' : ''}`)
        break
      }
    }
    result.maxLatencyMs = Math.max(result.maxLatencyMs, performance.now() - t0)
  }

  const fire = (): void => {
    result.sent++
    const p = one().finally(() => inFlight.delete(p))
    inFlight.add(p)
  }
  // Fires every request that is due by now: the schedule does not slip when the event loop is late.
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - started) * rate) / 1000)
    while (result.sent < due) fire()
  }, 2)

  return {
    /** Requests answered so far (for waiting until the load is flowing). */
    get answered(): number {
      return result.ok + result.non2xx + result.socketErrors
    },
    async stop(): Promise<RateLoadResult> {
      clearInterval(timer)
      result.durationMs = performance.now() - started
      while (inFlight.size > 0) await Promise.allSettled([...inFlight])
      agent.destroy()
      fresh.destroy()
      return result
    },
  }
}
