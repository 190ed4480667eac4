// Waits for a worker (a service without a port) to become healthy: its Docker HEALTHCHECK says healthy or, without
// one, it stays running — neither exiting nor restarting — for `startSec`. A crash that the restart policy hid
// between two looks still counts: the restart count moved.
import { systemClock, type Clock } from './clock.js'
import { HealthError, throwIfAborted } from './errors.js'
import type { ObserveOutcome } from './observe.js'
import type { DockerHealth } from './wait.js'

export interface WorkerState {
  /** Running and not restarting. */
  alive: boolean
  restartCount: number
  /** The HEALTHCHECK's word; null when the image has none. */
  health: DockerHealth
}

export interface WaitWorkerOptions {
  state: () => Promise<WorkerState>
  startSec: number
  /** Overall budget, from the call (a HEALTHCHECK may take longer than startSec). */
  deadlineMs: number
  intervalMs: number
  signal?: AbortSignal
  clock?: Clock
}

/** One look at the worker, and whether it died: not running, or restarted since the first look (`restarts`). */
async function look(state: () => Promise<WorkerState>, signal: AbortSignal | undefined, restarts: number | null) {
  throwIfAborted(signal)
  const now = await state()
  throwIfAborted(signal)
  return { now, died: !now.alive || now.restartCount !== (restarts ?? now.restartCount) }
}

export async function waitWorkerHealthy(options: WaitWorkerOptions): Promise<void> {
  const { state, startSec, deadlineMs, intervalMs, signal } = options
  const clock = options.clock ?? systemClock
  const start = clock.now()
  let restarts: number | null = null
  for (;;) {
    const { now, died } = await look(state, signal, restarts)
    restarts ??= now.restartCount
    if (died) throw new HealthError('container_exited', 'the worker exited or restarted before it became healthy')
    if (now.health === 'healthy') return
    if (now.health === 'unhealthy') throw new HealthError('health_check_failed', 'Docker reports the worker unhealthy')
    const elapsed = clock.now() - start
    if (now.health === null && elapsed >= startSec * 1000) return
    if (elapsed >= deadlineMs)
      throw new HealthError('health_check_failed', `the worker's HEALTHCHECK said ${now.health} until the deadline`)
    await clock.sleep(Math.min(intervalMs, Math.max(1, startSec * 1000 - elapsed)), signal)
  }
}

export interface ObserveWorkerOptions {
  state: () => Promise<WorkerState>
  seconds: number
  intervalMs: number
  signal?: AbortSignal
  clock?: Clock
}

/**
 * The observe window of a worker (an app of workers only has no probes): it must stay running, not restart and not
 * turn unhealthy for `seconds`. Cancelling rejects with an AbortError, as `observe` does.
 */
export async function observeWorker(options: ObserveWorkerOptions): Promise<ObserveOutcome> {
  const { state, seconds, intervalMs, signal } = options
  const clock = options.clock ?? systemClock
  const end = clock.now() + seconds * 1000
  let restarts: number | null = null
  for (;;) {
    const { now, died } = await look(state, signal, restarts)
    restarts ??= now.restartCount
    if (died) return { healthy: false, reason: 'the worker exited or restarted' }
    if (now.health === 'unhealthy') return { healthy: false, reason: 'Docker reports the worker unhealthy' }
    const left = end - clock.now()
    if (left <= 0) return { healthy: true }
    await clock.sleep(Math.min(intervalMs, left), signal)
  }
}
