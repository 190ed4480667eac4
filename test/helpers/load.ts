// A request loop through a proxy, as a well-behaved keep-alive client. When the connection is closed before
// any answer arrived — an idle keep-alive connection closed by nginx's old workers at a reload, or a connection an
// old worker accepted but had not read yet (nginx closes those too when it shuts a worker down) — the GET is sent
// again: HTTP allows this for idempotent requests whose connection closed before a response (RFC 9112 §9.3.1).
// Such retries are counted apart. Anything else — a refused connection, a timeout, a non-200 — counts as failed.
import { Agent, request } from 'node:http'

export interface LoopResult {
  ok: number
  /** requests sent again after their connection was closed before any answer */
  retried: number
  /** of those, on a fresh connection (the rest were reused keep-alive connections) */
  retriedFresh: number
  failures: string[]
}

function get(url: string, agent: Agent): Promise<{ status: number; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }))
      res.on('error', reject)
    })
    // An error here came before any answer; one on `res` came after it started and is never retried.
    req.on('error', (err) => reject(Object.assign(err, { reused: req.reusedSocket, beforeAnswer: true })))
    req.end()
  })
}

/** Runs `concurrency` loops of GET `url` until `stop()`; bounded by `maxRequests` in all. */
export function requestLoop(url: string, options: { concurrency?: number; maxRequests?: number } = {}) {
  const concurrency = options.concurrency ?? 4
  const maxRequests = options.maxRequests ?? 1_000_000
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency })
  const result: LoopResult = { ok: 0, retried: 0, retriedFresh: 0, failures: [] }
  let stopped = false
  let sent = 0
  const one = async (): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      try {
        const { status } = await get(url, agent)
        if (status === 200) result.ok++
        else result.failures.push(`HTTP ${status}`)
        return
      } catch (err) {
        const e = err as NodeJS.ErrnoException & { reused?: boolean; beforeAnswer?: boolean }
        const closedBeforeAnswer = e.beforeAnswer === true && (e.reused === true || e.code === 'ECONNRESET' || e.code === 'EPIPE')
        if (closedBeforeAnswer && attempt < concurrency + 1) {
          result.retried++
          if (!e.reused) result.retriedFresh++
          continue
        }
        result.failures.push(`${e.code ?? ''} ${e.message}`.trim())
        return
      }
    }
  }
  const loops = Array.from({ length: concurrency }, async () => {
    while (!stopped && sent++ < maxRequests) await one()
  })
  return {
    async stop(): Promise<LoopResult> {
      stopped = true
      await Promise.all(loops)
      agent.destroy()
      return result
    },
  }
}
