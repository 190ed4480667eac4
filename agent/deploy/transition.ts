// The one way a deploy record changes state: checked against the table, journalled, logged with
// `{ deployId, state, was }`, written into the deploy's own log, and announced to the deploy listener (metrics,
// error reporting), which therefore sees every change the pipeline and the coordinator make.
import type { DeployEvent, DeployListener } from '../observability/deploy-feed.js'
import type { Logger } from '../observability/logger.js'
import type { Deploy, DeployStore, TransitionPatch } from '../store/deploys.js'
import { isTerminal, nextState, type DeployState } from './states.js'

export type { DeployEvent, DeployListener } from '../observability/deploy-feed.js'

export interface TransitionDeps {
  store: DeployStore
  logger: Logger
  onDeployEvent?: DeployListener
}

export async function moveDeploy(
  deps: TransitionDeps,
  deploy: Deploy,
  state: DeployState,
  patch: Omit<TransitionPatch, 'terminal'> = {},
): Promise<Deploy> {
  const was = deploy.state
  nextState(deploy.kind, was, state)
  const moved = await deps.store.transition(deploy.id, state, { ...patch, terminal: isTerminal(state) })
  // Announced as soon as the record shows it: a client that sees the deploy finished then sees it in the metrics.
  announce(deps, { type: 'state', deploy: moved, was })
  const error = patch.error ? { error: patch.error } : {}
  // Who let a held deploy go is part of its story: in the agent's log and the deploy's own.
  const approval = patch.approvedBy !== undefined ? { approvedBy: patch.approvedBy } : {}
  deps.logger.info({ app: deploy.app, env: deploy.env, deployId: deploy.id, state, was, ...approval, ...error }, 'deploy state')
  await deps.store.appendLog(deploy.id, { at: new Date().toISOString(), event: 'state', state, was, ...approval, ...error })
  return moved
}

/** A listener that throws must not fail the deploy it watches. */
export function announce(deps: Pick<TransitionDeps, 'logger' | 'onDeployEvent'>, event: DeployEvent): void {
  try {
    deps.onDeployEvent?.(event)
  } catch (err) {
    deps.logger.error({ err, deployId: event.deploy.id }, 'deploy listener failed')
  }
}
