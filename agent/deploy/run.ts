// One running deploy as the pipeline's phases see it: its record, its log, and the only way it changes state.
import { AgentError, asDiskFull } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import type { Deploy, DeployDetails, DeployStore } from '../store/deploys.js'
import type { DeployState } from './states.js'
import { announce, moveDeploy, type DeployListener } from './transition.js'

export class DeployFailure extends AgentError {
  constructor(code: string, message: string) {
    super(code, 500, message)
  }
}

export type Failure = { code: string; message: string }

export interface RunDeps {
  store: DeployStore
  logger: Logger
  onDeployEvent?: DeployListener
}

export class DeployRun {
  private noteFailed = false

  constructor(
    private readonly deps: RunDeps,
    public deploy: Deploy,
    readonly logger: Logger,
  ) {}

  async move(
    state: DeployState,
    patch: { error?: Failure; commit?: string; release?: string; details?: DeployDetails } = {},
  ): Promise<void> {
    this.deploy = await moveDeploy(this.deps, this.deploy, state, patch)
  }

  probeFailed(): void {
    announce(this.deps, { type: 'probe_failed', deploy: this.deploy, phase: this.deploy.state })
  }

  async log(line: Record<string, unknown>, opts: { output?: boolean } = {}): Promise<void> {
    await this.deps.store.appendLog(this.deploy.id, { at: new Date().toISOString(), ...line }, opts)
  }

  /**
   * A log line nobody waits for (build output, probes): the first dropped when the log reaches its cap; a write
   * that fails (a full disk) is reported once, never thrown.
   */
  note(line: Record<string, unknown>): void {
    this.log(line, { output: true }).catch((err: unknown) => {
      if (this.noteFailed) return
      this.noteFailed = true
      this.logger.warn({ err }, 'could not write the deploy log; its lines are dropped')
    })
  }
}

/** A failure as the deploy record keeps it: an AgentError's code, a full disk's, or `fallbackCode`. */
export function asFailure(err: unknown, fallbackCode: string): Failure {
  const full = asDiskFull(err)
  if (full) return { code: full.code, message: full.message }
  if (err instanceof AgentError) return { code: err.code, message: err.message }
  return { code: fallbackCode, message: err instanceof Error ? err.message : String(err) }
}
