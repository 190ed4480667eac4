// The observe window after a switch: probe for `seconds`; more than `maxFailures` failed probes, or the container no
// longer alive, makes the release unhealthy (the caller rolls back). Cancelling rejects with an AbortError.
import { systemClock, type Clock } from './clock.js'
import { throwIfAborted } from './errors.js'
import { probeHttp, type ProbeFn, type ProbeListener } from './probe.js'

export interface ObserveOptions {
  url: string
  seconds: number
  intervalMs: number
  timeoutMs: number
  maxFailures: number
  /** False when the container has exited or is restarting. */
  containerAlive?: () => Promise<boolean>
  /** The reason given when `containerAlive` says no (default: the container exited or is restarting). */
  deadReason?: string
  signal?: AbortSignal
  onResult?: ProbeListener<{ failures: number }>
  clock?: Clock
  probe?: ProbeFn
}

export type ObserveOutcome = { healthy: true } | { healthy: false; reason: string }

export async function observe(options: ObserveOptions): Promise<ObserveOutcome> {
  const { url, seconds, intervalMs, timeoutMs, maxFailures, containerAlive, signal, onResult } = options
  const clock = options.clock ?? systemClock
  const probe = options.probe ?? probeHttp
  const end = clock.now() + seconds * 1000
  let probes = 0
  let failures = 0

  const alive = async (): Promise<boolean> => {
    if (containerAlive === undefined) return true
    const result = await containerAlive()
    throwIfAborted(signal)
    return result
  }
  const dead = { healthy: false, reason: options.deadReason ?? 'the container exited or is restarting' } as const

  for (;;) {
    throwIfAborted(signal)
    if (!(await alive())) return dead
    const result = await probe(url, timeoutMs, signal)
    probes++
    if (!result.ok) failures++
    onResult?.({ ...result, failures })
    if (failures > maxFailures) {
      return {
        healthy: false,
        reason: `${failures} of ${probes} probes failed (more than maxFailures ${maxFailures}); last: ${result.error ?? 'probe failed'}`,
      }
    }
    const left = end - clock.now()
    if (left <= 0) break
    await clock.sleep(Math.min(intervalMs, left), signal)
  }
  return (await alive()) ? { healthy: true } : dead
}
