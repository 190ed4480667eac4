// The deploy state machine of DESIGN.md: states as a string union and two transition tables, one for a deploy and
// one for a manual rollback. A deploy moves only through `nextState`, so an illegal transition is a bug that
// throws, never a silent jump. Every edge is taken somewhere (test/unit/deploy-states.test.ts checks which).
import { type DeployKind, type DeployState } from '../store/deploy-states.js'

export { DEPLOY_STATES, isDeployState, isTerminal, TERMINAL_STATES, type DeployKind, type DeployState } from '../store/deploy-states.js'

export type TransitionTable = Readonly<Partial<Record<DeployState, readonly DeployState[]>>>

/**
 * A deploy: before the switch every failure is FAILED and nothing changed; from the switch on, a failure rolls
 * back. Recovery at start-up may end any unfinished state: FAILED (interrupted, or its env left the config), or
 * SUCCEEDED when the switched-in release is found live and healthy.
 */
export const DEPLOY_TRANSITIONS: TransitionTable = {
  QUEUED: ['AWAITING_APPROVAL', 'RESOLVING', 'CANCELLED'],
  AWAITING_APPROVAL: ['QUEUED', 'CANCELLED'],
  RESOLVING: ['BACKING_UP', 'BUILDING', 'FAILED'],
  BACKING_UP: ['BUILDING', 'FAILED'],
  BUILDING: ['MIGRATING', 'STARTING', 'FAILED'],
  MIGRATING: ['STARTING', 'FAILED'],
  STARTING: ['VERIFYING', 'FAILED'],
  VERIFYING: ['SWITCHING', 'FAILED'],
  SWITCHING: ['OBSERVING', 'ROLLING_BACK', 'SUCCEEDED', 'FAILED'],
  OBSERVING: ['SUCCEEDED', 'ROLLING_BACK', 'FAILED'],
  ROLLING_BACK: ['ROLLED_BACK', 'FAILED'],
}

/**
 * A manual rollback: a kept release started on the idle port, verified, switched in, then observed like a deploy.
 * It fails (the live release untouched) until its switch; once switched, a release that goes bad in the observe
 * window is rolled back to the one that was live before the rollback, and recovery rolls an interrupted one back
 * when nginx already routes to it unhealthy.
 */
export const ROLLBACK_TRANSITIONS: TransitionTable = {
  QUEUED: ['STARTING', 'CANCELLED', 'FAILED'],
  STARTING: ['VERIFYING', 'FAILED'],
  VERIFYING: ['SWITCHING', 'FAILED'],
  SWITCHING: ['OBSERVING', 'SUCCEEDED', 'ROLLING_BACK', 'FAILED'],
  OBSERVING: ['SUCCEEDED', 'ROLLING_BACK', 'FAILED'],
  ROLLING_BACK: ['ROLLED_BACK', 'FAILED'],
}

export const TRANSITIONS: Readonly<Record<DeployKind, TransitionTable>> = { deploy: DEPLOY_TRANSITIONS, rollback: ROLLBACK_TRANSITIONS }

export class IllegalTransitionError extends Error {
  constructor(kind: DeployKind, from: string, to: string) {
    super(`illegal ${kind} transition ${from} → ${to}`)
    this.name = 'IllegalTransitionError'
  }
}

/** Returns `to` when the kind's table allows `from → to`, else throws. */
export function nextState(kind: DeployKind, from: DeployState, to: DeployState): DeployState {
  if (!TRANSITIONS[kind][from]?.includes(to)) throw new IllegalTransitionError(kind, from, to)
  return to
}
