// Waits for a candidate to become healthy: `healthyAfter` passing probes in a row (a failure resets the streak)
// and, when Docker has a healthcheck for it, Docker saying 'healthy'. Fails at the deadline with the last reason,
// or at once when the container has exited. A probe still running at the deadline is
// cancelled, not counted: the error names the last real failure.
import { systemClock, type Clock } from './clock.js'
import { HealthError, isAbortError, throwIfAborted } from './errors.js'
import { probeHttp, type ProbeFn, type ProbeListener, type ProbeResult } from './probe.js'

export type DockerHealth = 'healthy' | 'unhealthy' | 'starting' | null

export interface WaitHealthyOptions {
  url: string
  intervalMs: number
  /** Timeout of one probe. */
  timeoutMs: number
  healthyAfter: number
  /** Overall budget, from the call. */
  deadlineMs: number
  /** Docker's view of the container's own healthcheck; null when it has none. */
  dockerHealth?: () => Promise<DockerHealth>
  containerRunning?: () => Promise<boolean>
  signal?: AbortSignal
  onResult?: ProbeListener<{ streak: number }>
  clock?: Clock
  probe?: ProbeFn
}

export async function waitHealthy(options: WaitHealthyOptions): Promise<void> {
  const { url, intervalMs, timeoutMs, healthyAfter, deadlineMs, dockerHealth, containerRunning, signal, onResult } = options
  const clock = options.clock ?? systemClock
  const probe = options.probe ?? probeHttp
  const deadline = clock.now() + deadlineMs
  let streak = 0
  let lastFailure = 'no probe answered'

  for (;;) {
    throwIfAborted(signal)
    // Docker's answers are read while the probe runs (a rollback to a warm standby waits for one probe, not three
    // calls in a row); Docker's health only for the probe that may end the streak.
    const running = settled(containerRunning?.())
    const health = streak + 1 >= healthyAfter ? settled(dockerHealth?.()) : undefined
    const result = await probeUntil(probe, url, timeoutMs, deadline - clock.now(), signal)
    if (running !== undefined && !(await running)) {
      throwIfAborted(signal)
      throw new HealthError('container_exited', `the container exited before it became healthy (last probe: ${lastFailure})`)
    }
    if (result === null) break // the deadline cut the probe: cancelled, not a failure
    if (result.ok) {
      streak++
    } else {
      streak = 0
      lastFailure = result.error ?? 'probe failed'
    }
    onResult?.({ ...result, streak })

    if (streak >= healthyAfter) {
      const docker = (await (health ?? settled(dockerHealth?.()))) ?? null
      throwIfAborted(signal)
      if (docker === null || docker === 'healthy') return
      lastFailure = `${healthyAfter} probes passed but Docker reports the container ${docker}`
    }

    const left = deadline - clock.now()
    if (left <= 0) break
    await clock.sleep(Math.min(intervalMs, left), signal)
  }
  throw new HealthError('health_check_failed', `${url} not healthy within ${deadlineMs} ms: ${lastFailure}`)
}

/** A call started ahead of its use: its rejection is handled where it is awaited, never reported unhandled before. */
function settled<T>(call: Promise<T> | undefined): Promise<T> | undefined {
  call?.catch(() => undefined)
  return call
}

// One probe, cancelled when the deadline comes (null then); a cancellation by the caller rejects with an AbortError.
async function probeUntil(
  probe: ProbeFn,
  url: string,
  timeoutMs: number,
  remainingMs: number,
  signal?: AbortSignal,
): Promise<ProbeResult | null> {
  const cut = new AbortController()
  const timer = setTimeout(() => cut.abort(), Math.max(0, remainingMs))
  try {
    return await probe(url, timeoutMs, signal === undefined ? cut.signal : AbortSignal.any([signal, cut.signal]))
  } catch (err) {
    throwIfAborted(signal)
    if (cut.signal.aborted && isAbortError(err)) return null
    throw err
  } finally {
    clearTimeout(timer)
  }
}
