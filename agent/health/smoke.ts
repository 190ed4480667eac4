// Smoke checks on a candidate: each path must answer exactly its expected status. All checks run; the error names
// every one that did not.
import { HealthError } from './errors.js'
import { probeHttp } from './probe.js'

export interface SmokeCheck {
  path: string
  expectStatus: number
}

export interface SmokeResult extends SmokeCheck {
  ok: boolean
  /** The status received, or the network error. */
  got: number | string
  ms: number
}

export function joinUrl(baseUrl: string, path: string): string {
  return baseUrl.replace(/\/+$/, '') + (path.startsWith('/') ? path : `/${path}`)
}

export async function runSmoke(
  baseUrl: string,
  checks: readonly SmokeCheck[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<SmokeResult[]> {
  const results: SmokeResult[] = []
  for (const check of checks) {
    const r = await probeHttp(joinUrl(baseUrl, check.path), timeoutMs, signal)
    const got = r.status ?? r.error ?? 'no answer'
    results.push({ ...check, ok: got === check.expectStatus, got, ms: r.ms })
  }
  const failed = results.filter((r) => !r.ok)
  if (failed.length > 0) {
    const lines = failed.map((r) => `GET ${r.path}: expected ${r.expectStatus}, got ${r.got}`)
    throw new HealthError('smoke_failed', `smoke check failed: ${lines.join('; ')}`)
  }
  return results
}
