// The deploy state machine of DESIGN.md: states as a string union and one transition table. The pipeline moves
// a deploy only through `nextState`, so an illegal transition is a bug that throws, never a silent jump.
export const DEPLOY_STATES = [
  'QUEUED',
  'AWAITING_APPROVAL',
  'RESOLVING',
  'BACKING_UP',
  'BUILDING',
  'MIGRATING',
  'STARTING',
  'VERIFYING',
  'SWITCHING',
  'OBSERVING',
  'ROLLING_BACK',
  'SUCCEEDED',
  'FAILED',
  'ROLLED_BACK',
  'CANCELLED',
] as const

export type DeployState = (typeof DEPLOY_STATES)[number]

export const TERMINAL_STATES: ReadonlySet<DeployState> = new Set(['SUCCEEDED', 'FAILED', 'ROLLED_BACK', 'CANCELLED'])

const TRANSITIONS: Record<DeployState, readonly DeployState[]> = {
  QUEUED: ['AWAITING_APPROVAL', 'RESOLVING', 'STARTING', 'CANCELLED', 'FAILED'],
  AWAITING_APPROVAL: ['QUEUED', 'CANCELLED', 'FAILED'],
  RESOLVING: ['BACKING_UP', 'BUILDING', 'FAILED', 'CANCELLED'],
  BACKING_UP: ['BUILDING', 'FAILED'],
  BUILDING: ['MIGRATING', 'STARTING', 'FAILED'],
  MIGRATING: ['STARTING', 'FAILED'],
  STARTING: ['VERIFYING', 'FAILED'],
  VERIFYING: ['SWITCHING', 'FAILED'],
  // A manual rollback ends at the switch (or fails there); a deploy goes on to watch the new release.
  SWITCHING: ['OBSERVING', 'SUCCEEDED', 'ROLLING_BACK', 'FAILED'],
  OBSERVING: ['SUCCEEDED', 'ROLLING_BACK'],
  ROLLING_BACK: ['ROLLED_BACK', 'FAILED'],
  SUCCEEDED: [],
  FAILED: [],
  ROLLED_BACK: [],
  CANCELLED: [],
}

export class IllegalTransitionError extends Error {
  constructor(from: string, to: string) {
    super(`illegal deploy transition ${from} → ${to}`)
    this.name = 'IllegalTransitionError'
  }
}

export function isDeployState(value: string): value is DeployState {
  return (DEPLOY_STATES as readonly string[]).includes(value)
}

/** Returns `to` when the table allows `from → to`, else throws. */
export function nextState(from: string, to: DeployState): DeployState {
  if (!isDeployState(from) || !TRANSITIONS[from].includes(to)) throw new IllegalTransitionError(from, to)
  return to
}

export function isTerminal(state: string): boolean {
  return TERMINAL_STATES.has(state as DeployState)
}
