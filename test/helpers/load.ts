// A request loop through a proxy, as a well-behaved keep-alive client: when a request fails on a *reused*
// connection before any answer (the server closed that idle connection, as nginx's old workers do at a reload),
// it is retried — HTTP allows this for idempotent requests (RFC 9112 §9.3.1) and Node's docs recommend it;
// browsers do the same. Anything else — an error on a fresh connection, a non-200 — counts as failed.
import { Agent, request } from 'node:http'

export interface LoopResult {
  ok: number
  /** requests sent again after a reused connection was found closed */
  retried: number
  failures: string[]
}

function get(url: string, agent: Agent): Promise<{ status: number; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }))
      res.on('error', reject)
    })
    req.on('error', (err) => reject(Object.assign(err, { reused: req.reusedSocket })))
    req.end()
  })
}

/** Runs `concurrency` loops of GET `url` until `stop()`; bounded by `maxRequests` in all. */
export function requestLoop(url: string, options: { concurrency?: number; maxRequests?: number } = {}) {
  const concurrency = options.concurrency ?? 4
  const maxRequests = options.maxRequests ?? 1_000_000
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency })
  const result: LoopResult = { ok: 0, retried: 0, failures: [] }
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
        const e = err as NodeJS.ErrnoException & { reused?: boolean }
        if (e.reused && attempt < concurrency + 1) {
          result.retried++
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
