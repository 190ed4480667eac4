// The one way a deploy record changes state: checked against the table, journalled, logged with
// `{ deployId, state, was }`, and written into the deploy's own log.
import type { Logger } from '../observability/logger.js'
import type { Deploy, DeployStore, TransitionPatch } from '../store/deploys.js'
import { isTerminal, nextState, type DeployState } from './states.js'

export async function moveDeploy(store: DeployStore, logger: Logger, deploy: Deploy, state: DeployState, patch: Omit<TransitionPatch, 'terminal'> = {}): Promise<Deploy> {
  const was = deploy.state
  nextState(was, state)
  const moved = await store.transition(deploy.id, state, { ...patch, terminal: isTerminal(state) })
  const error = patch.error ? { error: patch.error } : {}
  logger.info({ app: deploy.app, env: deploy.env, deployId: deploy.id, state, was, ...error }, 'deploy state')
  await store.appendLog(deploy.id, { at: new Date().toISOString(), event: 'state', state, was, ...error })
  return moved
}
