// One GET through nginx on a fresh connection (no keep-alive: a socket kept by a worker retired by a reload would
// still reach the old upstream). For checks after a switch, and tests.
import { get } from 'node:http'

export interface ThroughResult {
  status: number
  body: string
}

const MAX_BODY = 64 * 1024

/** GETs `url` on a new connection; resolves with any status, rejects on a network error or after `timeoutMs`. */
export function probeThrough(url: string, timeoutMs: number): Promise<ThroughResult> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        if (body.length < MAX_BODY) body += chunk.slice(0, MAX_BODY - body.length)
      })
      res.on('end', () => {
        clearTimeout(timer)
        resolve({ status: res.statusCode ?? 0, body })
      })
      res.on('error', fail)
    })
    const timer = setTimeout(() => req.destroy(new Error(`GET ${url} timed out after ${timeoutMs} ms`)), timeoutMs)
    function fail(err: Error): void {
      clearTimeout(timer)
      reject(err)
    }
    req.on('error', fail)
  })
}
