// What a deploy listener hears (metrics, error reporting): every state change of a deploy record, and every
// failed health probe. The deploy side announces them (deploy/transition.ts); observability only reads them.
import { isTerminal, type DeployState } from '../store/deploy-states.js'
import type { Deploy } from '../store/deploys.js'

export type DeployEvent =
  | { type: 'state'; deploy: Deploy; was: DeployState }
  /** `phase` is the deploy's state when the probe failed (VERIFYING, OBSERVING, ROLLING_BACK …). */
  | { type: 'probe_failed'; deploy: Deploy; phase: DeployState }

export type DeployListener = (event: DeployEvent) => void

/**
 * Whether `event` ends a deploy that an unconfirmed nginx reload failed: by its code, or (when an automatic
 * rollback's switch back was the one not confirmed, recorded as rollback_failed) by the proxy error's words.
 */
export function endedByUnconfirmedReload(event: DeployEvent): boolean {
  if (event.type !== 'state' || !isTerminal(event.deploy.state)) return false
  const error = event.deploy.error
  return error !== null && (error.code === 'proxy_reload_unconfirmed' || /\bnginx reload not confirmed\b/.test(error.message))
}
