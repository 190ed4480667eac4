// What the load fault tests need beyond the request loop: raw HTTP from a chosen source address (node:http, so a
// flood can come from 127.0.0.2 while CI signs from 127.0.0.1), signed headers, a process's RSS and open file
// descriptors read from /proc, and percentiles for the figures they print.
import { readdir, readFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { signRequest } from '../../agent/auth/canonical.js'
import { AUDIENCE, ed25519Key, type TestKeys } from './agent.js'

export interface HttpAnswer {
  status: number
  body: string
  headers: Record<string, string | string[] | undefined>
}

export interface HttpOptions {
  method?: 'GET' | 'POST'
  headers?: Record<string, string>
  body?: string
  agent?: Agent
  /** the client socket's source address, e.g. 127.0.0.2 */
  localAddress?: string
  /** a unix socket to connect to instead of the URL's host and port */
  socketPath?: string
}

/** One HTTP request; rejects only on a transport error, never on a status. */
export function httpRequest(url: string, o: HttpOptions = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: o.method ?? 'GET', headers: o.headers, agent: o.agent, localAddress: o.localAddress, socketPath: o.socketPath },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => (body += chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(o.body)
  })
}

/** Headers of a request signed with the test Ed25519 key (a fresh nonce each call), plus the JSON content type. */
export function signedHeaders(keys: TestKeys, method: 'GET' | 'POST', path: string, body = ''): Record<string, string> {
  const headers = signRequest({ keyId: keys.ed25519.id, key: ed25519Key(keys), audience: AUDIENCE, method, path, body })
  return body === '' ? headers : { ...headers, 'content-type': 'application/json' }
}

/** The value below which `p` (0..1) of `values` lie (nearest rank); NaN for none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] as number
}

/** Resident set size of `pid` in MB (VmRSS). */
export async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = /VmRSS:\s+(\d+)/.exec(status)?.[1]
  if (kb === undefined) throw new Error(`no VmRSS in /proc/${pid}/status`)
  return Number(kb) / 1024
}

/** How many file descriptors `pid` has open. */
export async function openFds(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length
}

/** Counts of `items` by `key`, as a plain object (for t.same and printing). */
export function countBy<T>(items: readonly T[], key: (item: T) => string | number): Record<string, number> {
  const out: Record<string, number> = {}
  for (const item of items) out[key(item)] = (out[key(item)] ?? 0) + 1
  return out
}
