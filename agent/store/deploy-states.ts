// The states a deploy record can be in (DESIGN.md). The records hold them; the transition tables that move a
// deploy between them are the deploy side's (deploy/states.ts).
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
export type DeployKind = 'deploy' | 'rollback'

export const TERMINAL_STATES: ReadonlySet<DeployState> = new Set(['SUCCEEDED', 'FAILED', 'ROLLED_BACK', 'CANCELLED'])

export function isDeployState(value: string): value is DeployState {
  return (DEPLOY_STATES as readonly string[]).includes(value)
}

export function isTerminal(state: DeployState): boolean {
  return TERMINAL_STATES.has(state)
}
