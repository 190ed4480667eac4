// One HTTP health probe. A probe has three ends: passed, failed (status, refused, timed out: a result), or cancelled
// by the caller (an AbortError: not a result, and never counted as a failure).
import { abortError, throwIfAborted } from './errors.js'

export interface ProbeResult {
  ok: boolean
  status?: number
  error?: string
  ms: number
}

/** probeHttp's signature, for injecting a fake probe. */
export type ProbeFn = (url: string, timeoutMs: number, signal?: AbortSignal) => Promise<ProbeResult>

/** The callback health loops report to: each probe's result, as it lands. */
export type ProbeListener<Extra> = (result: ProbeResult & Extra) => void

function describe(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && err.name === 'TimeoutError') return `timed out after ${timeoutMs} ms`
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause
    if (cause instanceof Error && cause.message !== '') return cause.message
    return err.message
  }
  return String(err)
}

/** GETs `url`; ok iff the status is 2xx or 3xx (redirects are not followed). */
export async function probeHttp(url: string, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  throwIfAborted(signal)
  const started = performance.now()
  const elapsed = (): number => Math.round(performance.now() - started)
  const timeout = AbortSignal.timeout(Math.max(1, Math.ceil(timeoutMs)))
  try {
    const res = await fetch(url, {
      redirect: 'manual',
      signal: signal === undefined ? timeout : AbortSignal.any([timeout, signal]),
      headers: { 'user-agent': 'deploy-agent-health' },
    })
    await res.body?.cancel().catch(() => undefined)
    const ok = res.status >= 200 && res.status < 400
    return ok ? { ok, status: res.status, ms: elapsed() } : { ok, status: res.status, error: `HTTP ${res.status}`, ms: elapsed() }
  } catch (err) {
    if (signal?.aborted === true) throw abortError(signal)
    return { ok: false, error: describe(err, timeoutMs), ms: elapsed() }
  }
}
