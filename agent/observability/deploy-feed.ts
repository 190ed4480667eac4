// What a deploy listener hears (metrics, error reporting): every state change of a deploy record, and every
// failed health probe. The deploy side announces them (deploy/transition.ts); observability only reads them.
import type { DeployState } from '../store/deploy-states.js'
import type { Deploy } from '../store/deploys.js'

export type DeployEvent =
  | { type: 'state'; deploy: Deploy; was: DeployState }
  /** `phase` is the deploy's state when the probe failed (VERIFYING, OBSERVING, ROLLING_BACK …). */
  | { type: 'probe_failed'; deploy: Deploy; phase: DeployState }

export type DeployListener = (event: DeployEvent) => void
