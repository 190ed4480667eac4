import type { Deploy, DeployState } from '../../agent/store/deploys.js'

/** A deploy record of release v2 (after v1) caught in `state`, for the recovery plans' unit tests; `over` changes it. */
export function deployIn(state: DeployState, kind: 'deploy' | 'rollback' = 'deploy', over: Partial<Deploy> = {}): Deploy {
  return {
    id: 'd-v2',
    kind,
    app: 'shop',
    env: 'prod',
    ref: 'v2',
    commit: null,
    release: 'v2',
    reason: null,
    keyId: null,
    state,
    states: [],
    error: null,
    createdAt: '',
    finishedAt: null,
    details: { candidatePort: 18002, previousPort: 18001 },
    ...over,
  }
}
