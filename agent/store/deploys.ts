// Deploy records and their logs in the state dir. `deploys.jsonl` holds events (created, state changed); the records
// are rebuilt from it on open, and every change is fsynced before the method resolves.
import { join } from 'node:path'
import { isDeployState, type DeployKind, type DeployState } from './deploy-states.js'
import { ConflictError, NotFoundError, ValidationError } from '../errors.js'
import { assertDeployId, isDeployId, newDeployId } from './deploy-id.js'
import type { Scrubber } from '../observability/scrub.js'
import { DeployLogs } from './deploy-logs.js'
import { ensureDir } from '../files.js'
import { Journal, JOURNAL_FORMAT, type JournalRecord, type TornLine } from './journal.js'

export interface DeployError {
  code: string
  message: string
}

export interface DeployStateEntry {
  state: DeployState
  at: string
}

/** Facts the pipeline records before a side effect, for recovery: ports, containers, the release it replaces. */
export type DeployDetails = Record<string, string | number | null>

export type { DeployKind, DeployState }

export interface Deploy {
  id: string
  kind: DeployKind
  app: string
  env: string
  ref: string
  commit: string | null
  release: string | null
  reason: string | null
  /** The key that requested the deploy (null: the agent itself, e.g. recovery). */
  keyId: string | null
  /** The key that approved it, for envs with requireApproval; null otherwise (the store always sets it). */
  approvedBy?: string | null
  state: DeployState
  states: DeployStateEntry[]
  error: DeployError | null
  createdAt: string
  finishedAt: string | null
  details: DeployDetails
}

export interface NewDeploy {
  kind?: DeployKind
  app: string
  env: string
  ref: string
  commit?: string | null
  reason?: string | null
  keyId?: string | null
  /** Defaults to QUEUED. */
  state?: DeployState
}

/** Fields left out are kept; `terminal: true` marks the deploy finished (no transition after that). */
export interface TransitionPatch {
  error?: DeployError | null
  commit?: string | null
  release?: string | null
  /** set once, on the move out of AWAITING_APPROVAL */
  approvedBy?: string
  terminal?: boolean
  /** merged into the record's details */
  details?: DeployDetails
}

export interface ListQuery {
  app?: string
  env?: string
  limit?: number
}

export interface DeployStoreOptions {
  /** Clock in ms since the epoch (createdAt, state times). */
  now?: () => number
  /** Id generator (tests); every id must match DEPLOY_ID. Default: `d_` + 12 random base32 characters. */
  newId?: () => string
  onTornLine?: (info: TornLine) => void
  /** A journal record that parsed but cannot be applied (unknown type or deploy, bad shape, newer format). */
  onSkippedRecord?: (record: JournalRecord, reason: string) => void
  /** Removes secrets from log lines and error messages before they are stored (both are served with the status token). */
  scrub?: Pick<Scrubber, 'text' | 'value'>
}

export const INITIAL_STATE: DeployState = 'QUEUED'

interface CreatedEvent {
  type: 'deploy.created'
  deploy: Deploy
}

interface StateEvent {
  type: 'deploy.state'
  id: string
  state: DeployState
  at: string
  error?: DeployError | null
  commit?: string | null
  release?: string | null
  approvedBy?: string
  terminal?: true
  details?: DeployDetails
}

type DeployEvent = CreatedEvent | StateEvent

const isString = (value: unknown): value is string => typeof value === 'string'
const isDeployStateString = (value: unknown): value is DeployState => isString(value) && isDeployState(value)
const isNullableString = (value: unknown): value is string | null => value === null || isString(value)
const isDeployError = (value: unknown): value is DeployError =>
  typeof value === 'object' && value !== null && isString((value as DeployError).code) && isString((value as DeployError).message)
const isStateEntry = (value: unknown): value is DeployStateEntry =>
  typeof value === 'object' &&
  value !== null &&
  isDeployStateString((value as DeployStateEntry).state) &&
  isString((value as DeployStateEntry).at)

function copyDeploy(deploy: Deploy): Deploy {
  return {
    ...deploy,
    states: deploy.states.map((entry) => ({ ...entry })),
    error: deploy.error && { code: deploy.error.code, message: deploy.error.message },
    details: { ...deploy.details },
  }
}

const isDetails = (value: unknown): value is DeployDetails =>
  typeof value === 'object' &&
  value !== null &&
  !Array.isArray(value) &&
  Object.values(value).every((v) => v === null || typeof v === 'string' || typeof v === 'number')

function isDeploy(value: unknown): value is Deploy {
  if (typeof value !== 'object' || value === null) return false
  const d = value as Record<keyof Deploy, unknown>
  return (
    isDeployId(d.id) &&
    [d.app, d.env, d.ref, d.createdAt].every(isString) &&
    isDeployStateString(d.state) &&
    [d.commit, d.release, d.reason, d.keyId, d.finishedAt].every(isNullableString) &&
    // Records written before approvals were attributed have no approvedBy (read as null): the format stays 1.
    (d.approvedBy === undefined || isNullableString(d.approvedBy)) &&
    Array.isArray(d.states) &&
    d.states.every(isStateEntry) &&
    (d.error === null || isDeployError(d.error)) &&
    (d.kind === 'deploy' || d.kind === 'rollback') &&
    isDetails(d.details)
  )
}

/** Why `event` cannot be applied to `deploys`, or undefined when it can. */
function rejectReason(deploys: ReadonlyMap<string, Deploy>, event: Record<string, unknown>): string | undefined {
  if (event.v !== JOURNAL_FORMAT) return `unsupported format v=${String(event.v)}`
  if (event.type === 'deploy.created') {
    if (!isDeploy(event.deploy)) return 'malformed deploy.created'
    return deploys.has(event.deploy.id) ? `duplicate deploy ${event.deploy.id}` : undefined
  }
  if (event.type === 'deploy.state') {
    const ok =
      isString(event.id) &&
      isDeployStateString(event.state) &&
      isString(event.at) &&
      [event.commit, event.release].every((v) => v === undefined || isNullableString(v))
    if (!ok || (event.error !== undefined && event.error !== null && !isDeployError(event.error))) return 'malformed deploy.state'
    if (event.details !== undefined && !isDetails(event.details)) return 'malformed deploy.state'
    if (event.approvedBy !== undefined && !isString(event.approvedBy)) return 'malformed deploy.state'
    return deploys.has(event.id as string) ? undefined : `deploy.state for unknown deploy ${String(event.id)}`
  }
  return `unknown record type ${JSON.stringify(event.type)}`
}

/** The one place a deploy record changes: replaying the journal and live writes both go through it. */
function applyEvent(deploys: Map<string, Deploy>, event: DeployEvent): void {
  if (event.type === 'deploy.created') {
    deploys.set(event.deploy.id, copyDeploy({ ...event.deploy, approvedBy: event.deploy.approvedBy ?? null }))
    return
  }
  const current = deploys.get(event.id) as Deploy
  deploys.set(event.id, {
    ...current,
    state: event.state,
    states: [...current.states, { state: event.state, at: event.at }],
    ...(event.commit !== undefined && { commit: event.commit }),
    ...(event.release !== undefined && { release: event.release }),
    ...(event.approvedBy !== undefined && { approvedBy: event.approvedBy }),
    ...(event.error !== undefined && { error: event.error && { code: event.error.code, message: event.error.message } }),
    ...(event.terminal && { finishedAt: event.at }),
    ...(event.details && { details: { ...current.details, ...event.details } }),
  })
}

export class DeployStore {
  readonly #journal: Journal
  readonly #logs: DeployLogs
  readonly #deploys: Map<string, Deploy>
  /** Ids of the deploys not finished yet, oldest first: `unfinished()` is read by every status request. */
  readonly #unfinished = new Set<string>()
  readonly #now: () => number
  readonly #newId: () => string
  readonly #scrub: Pick<Scrubber, 'text' | 'value'> | undefined

  private constructor(journal: Journal, logs: DeployLogs, deploys: Map<string, Deploy>, opts: DeployStoreOptions) {
    this.#journal = journal
    this.#logs = logs
    this.#deploys = deploys
    for (const deploy of deploys.values()) if (deploy.finishedAt === null) this.#unfinished.add(deploy.id)
    this.#now = opts.now ?? Date.now
    this.#newId = opts.newId ?? newDeployId
    this.#scrub = opts.scrub
  }

  /** Opens `<stateDir>/deploys.jsonl` (creating the state dir and `logs/`) and rebuilds the records from it. */
  static async open(stateDir: string, opts: DeployStoreOptions = {}): Promise<DeployStore> {
    const logDir = join(stateDir, 'logs')
    await ensureDir(logDir)
    const journal = await Journal.open(join(stateDir, 'deploys.jsonl'), { now: opts.now, onTornLine: opts.onTornLine })
    const deploys = new Map<string, Deploy>()
    for (const record of journal.records()) {
      const reason = rejectReason(deploys, record)
      if (reason === undefined) applyEvent(deploys, record as unknown as DeployEvent)
      else opts.onSkippedRecord?.(record, reason)
    }
    return new DeployStore(journal, new DeployLogs(logDir), deploys, opts)
  }

  /** Records a new deploy (durably) and returns it. */
  async create(input: NewDeploy): Promise<Deploy> {
    let id = this.#newId()
    while (this.#deploys.has(id)) id = this.#newId()
    assertDeployId(id)
    const createdAt = this.#timestamp()
    const state = input.state ?? INITIAL_STATE
    const deploy: Deploy = {
      id,
      kind: input.kind ?? 'deploy',
      app: input.app,
      env: input.env,
      ref: input.ref,
      commit: input.commit ?? null,
      release: null,
      reason: input.reason ?? null,
      keyId: input.keyId ?? null,
      approvedBy: null,
      state,
      states: [{ state, at: createdAt }],
      error: null,
      createdAt,
      finishedAt: null,
      details: {},
    }
    return this.#write({ type: 'deploy.created', deploy })
  }

  /** Moves a deploy to `state` (durably), merging `patch`. A finished deploy cannot move (ConflictError). */
  async transition(id: string, state: DeployState, patch: TransitionPatch = {}): Promise<Deploy> {
    if (!isDeployStateString(state)) throw new ValidationError(`unknown deploy state ${JSON.stringify(state)}`)
    const current = this.#deploys.get(id)
    if (!current) throw new NotFoundError(`no deploy ${id}`)
    if (current.finishedAt !== null) {
      throw new ConflictError('deploy_finished', `deploy ${id} finished as ${current.state}; it cannot move to ${state}`)
    }
    const event: StateEvent = { type: 'deploy.state', id, state, at: this.#timestamp() }
    if (patch.commit !== undefined) event.commit = patch.commit
    if (patch.release !== undefined) event.release = patch.release
    if (patch.approvedBy !== undefined) event.approvedBy = patch.approvedBy
    if (patch.error !== undefined)
      event.error = patch.error && { code: patch.error.code, message: this.#scrub?.text(patch.error.message) ?? patch.error.message }
    if (patch.terminal) event.terminal = true
    if (patch.details) event.details = { ...patch.details }
    const deploy = await this.#write(event)
    if (patch.terminal) {
      // The transition is already durable: a log that fails to flush must not make it look failed.
      await this.#logs.closeLog(id).catch(() => undefined)
    }
    return deploy
  }

  get(id: string): Deploy | undefined {
    const deploy = this.#deploys.get(id)
    return deploy && copyDeploy(deploy)
  }

  /** Newest first, optionally for one app and/or env, at most `limit`. */
  list(query: ListQuery = {}): Deploy[] {
    const limit = query.limit ?? Infinity
    const all = [...this.#deploys.values()]
    const out: Deploy[] = []
    for (let i = all.length - 1; i >= 0 && out.length < limit; i--) {
      const deploy = all[i] as Deploy
      if ((query.app === undefined || deploy.app === query.app) && (query.env === undefined || deploy.env === query.env)) {
        out.push(copyDeploy(deploy))
      }
    }
    return out
  }

  /** Deploys not finished yet, oldest first (the order recovery drives them in). */
  unfinished(): Deploy[] {
    return [...this.#unfinished].map((id) => copyDeploy(this.#deploys.get(id) as Deploy))
  }

  /**
   * Appends one NDJSON line to the deploy's log (not fsynced per line; flushed when the deploy finishes, or at once
   * after, or on close). `output` lines (build, migration, probes) are dropped first when the log reaches its cap.
   */
  async appendLog(id: string, line: object, opts: { output?: boolean } = {}): Promise<void> {
    this.#known(id)
    await this.#logs.append(id, this.#scrub?.value(line) ?? line, opts)
    // A line after the end (the final state's own line, late cleanup) reopened a log the terminal transition had
    // closed; nothing else would close it again, so flush and close it now (as that transition does).
    if (this.#deploys.get(id)?.finishedAt != null) await this.#logs.closeLog(id).catch(() => undefined)
  }

  /** The deploy's whole log so far; '' when it has none yet. */
  async readLog(id: string): Promise<string> {
    this.#known(id)
    return this.#logs.read(id)
  }

  /** Up to `max` bytes of the deploy's log from byte `offset`; empty at its end. */
  async readLogChunk(id: string, offset: number, max: number): Promise<Buffer> {
    this.#known(id)
    return this.#logs.readChunk(id, offset, max)
  }

  /** Resolves once the lines appended so far are in the file (a reader then sees them all). */
  async logSettled(id: string): Promise<void> {
    this.#known(id)
    await this.#logs.settled(id)
  }

  /** Flushes the logs and closes the journal, after every write already started. */
  async close(): Promise<void> {
    try {
      await this.#logs.close()
    } finally {
      await this.#journal.close()
    }
  }

  #known(id: string): void {
    assertDeployId(id)
    if (!this.#deploys.has(id)) throw new NotFoundError(`no deploy ${id}`)
  }

  #timestamp(): string {
    return new Date(this.#now()).toISOString()
  }

  /** Journals `event`, then applies it; appends resolve in call order, so events apply in file order. */
  async #write(event: DeployEvent): Promise<Deploy> {
    const id = event.type === 'deploy.created' ? event.deploy.id : event.id
    await this.#journal.append(event)
    applyEvent(this.#deploys, event)
    const deploy = this.#deploys.get(id) as Deploy
    if (deploy.finishedAt === null) this.#unfinished.add(id)
    else this.#unfinished.delete(id)
    return copyDeploy(deploy)
  }
}
