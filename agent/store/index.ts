// The state dir as one object: open it once at start-up, pass the parts to whoever needs them, close it on shutdown.
import { DeployStore, type DeployStoreOptions } from './deploys.js'
import { NonceStore, type NonceStoreOptions } from './nonces.js'

export { DeployStore, INITIAL_STATE } from './deploys.js'
export type { Deploy, DeployError, DeployStateEntry, DeployStoreOptions, ListQuery, NewDeploy, TransitionPatch } from './deploys.js'
export { DEPLOY_ID, isDeployId } from './deploy-id.js'
export { ensureDir, fsyncDir, writeFileAtomic } from '../files.js'
export { Journal, JOURNAL_FORMAT } from './journal.js'
export type { JournalOptions, JournalRecord, TornLine } from './journal.js'
export { NONCE_TTL_MS, NonceStore } from './nonces.js'
export type { NonceStoreOptions } from './nonces.js'

export interface StateStoreOptions {
  deploys?: DeployStoreOptions
  nonces?: NonceStoreOptions
}

export class StateStore {
  private constructor(
    readonly dir: string,
    readonly deploys: DeployStore,
    readonly nonces: NonceStore,
  ) {}

  static async open(stateDir: string, opts: StateStoreOptions = {}): Promise<StateStore> {
    const deploys = await DeployStore.open(stateDir, opts.deploys)
    try {
      return new StateStore(stateDir, deploys, await NonceStore.open(stateDir, opts.nonces))
    } catch (err) {
      await deploys.close()
      throw err
    }
  }

  async close(): Promise<void> {
    const results = await Promise.allSettled([this.deploys.close(), this.nonces.close()])
    const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected')
    if (failed) throw failed.reason
  }
}
