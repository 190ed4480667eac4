// One lane per app+env: at most one deploy runs and at most one waits (a newer request replaces the waiting one,
// which ends CANCELLED), or, with `queue: reject`, a request while one runs is refused with 409. Deploys of envs
// that require approval wait in AWAITING_APPROVAL outside the lane until approved.
import type { Config } from '../config/schema.js'
import { isWorkerOnly, primaryPorts, servicesOf, WEB_SERVICE } from '../config/services.js'
import { findTarget, hasTarget, type Target } from '../config/targets.js'
import type { ContainerLogLine } from '../docker/engine.js'
import { AgentError, ConflictError, NotFoundError } from '../errors.js'
import type { Notice } from '../notify/notifier.js'
import type { Logger } from '../observability/logger.js'
import type { UpstreamSwitch } from '../proxy/nginx.js'
import type { Deploy, DeployStore, NewDeploy } from '../store/deploys.js'
import { executeSteps } from './execute.js'
import type { HandOver } from './handover.js'
import { liveRelease, type LiveRelease } from './live.js'
import { envSwitch, observeEnv, type EnvSwitch } from './observe-env.js'
import { describeSteps, planKeep, planStartup, planUnknownEnv, type Step } from './plan.js'
import type { DeployPipeline } from './pipeline.js'
import { imageTag, membersOf, type Instance, type NodeTask, type Runtime } from './runtime.js'
import type { DeployState } from './states.js'
import { moveDeploy, type DeployListener } from './transition.js'

interface Lane {
  running: Promise<unknown> | null
  runningId: string | null
  waiting: Deploy | null
  /** A `queue: reject` request has passed the busy check and is being recorded: the lane is taken for it. */
  claimed: boolean
}

export interface ReleaseInfo {
  release: string
  commit: string
  image: string
  createdAt: string
  live: boolean
  /** It was live at some point (a deploy or rollback to it succeeded). */
  wasLive: boolean
  /**
   * How the newest finished deploy or rollback of it ended: live now, served (SUCCEEDED, since replaced), failed,
   * or rolled_back; null when no record says. Only a `served` release is a rollback target without force.
   */
  outcome: ReleaseOutcome | null
  /** That deploy's id (null with no record). */
  deployId: string | null
  /** An app with `services`: each service of the release with its image and whether its container runs now. */
  services?: Array<{ name: string; image: string; running: boolean | null }>
  /**
   * A swarm env: the tasks of the release's services, one per service and node. Null when none of its services is
   * on the swarm (only its image is kept); empty when its colour is kept scaled to 0.
   */
  tasks?: ReleaseTask[] | null
}

/** A task of a release on a swarm: its service, its node (id and advertised address) and the task's state. */
export interface ReleaseTask extends NodeTask {
  service: string
}

export type ReleaseOutcome = 'live' | 'served' | 'failed' | 'rolled_back'

export interface CoordinatorDeps {
  config: Config
  store: DeployStore
  /** Makes the pipeline, given where it reports a new live release (the coordinator's own setLive). */
  pipeline: (
    onLive: (target: { app: string; env: string }, live: LiveRelease) => void,
  ) => Pick<DeployPipeline, 'run' | 'recover'> & Partial<Pick<DeployPipeline, 'rollBackInWindow'>>
  runtime: Runtime
  /** An env's own runtime when it is not the host's containers (`runtime: swarm`). */
  runtimeFor?: (target: Target) => Runtime
  router(target: Target): UpstreamSwitch
  /** An app of workers only: the env's record of which group is live (it has no nginx). */
  handOver?(target: Target): HandOver
  logger: Logger
  notify?: (notice: Notice) => void
  /** Hears every state change (metrics, error reporting). */
  onDeployEvent?: DeployListener
}

const laneKey = (t: { app: string; env: string }) => `${t.app}/${t.env}`

/** A finished deploy's state as a release's outcome (CANCELLED deploys never ran it). */
const OUTCOMES = { SUCCEEDED: 'served', FAILED: 'failed', ROLLED_BACK: 'rolled_back' } as const

/** Why a kept release is no safe rollback target (its last deploy did not serve), or null when it is one. */
function unsafeTarget(kept: ReleaseInfo, env: string): { code: string; message: string } | null {
  if (!kept.wasLive) return { code: 'never_live', message: `release ${kept.release} never served in ${env}` }
  if (kept.outcome === 'failed' || kept.outcome === 'rolled_back')
    return {
      code: 'last_failed',
      message: `release ${kept.release} served in ${env}, but its last deploy ${kept.deployId} ${kept.outcome === 'failed' ? 'failed' : 'was rolled back'}`,
    }
  return null
}

export interface RollbackInput {
  app: string
  env: string
  /** a kept release; default: the newest one whose last deploy served and that is not live */
  to?: string
  /** Allows a release that never served or whose last deploy failed (the key's policy still applies). */
  force?: boolean
  keyId: string | null
  reason?: string | null
  /**
   * The requesting key's policy, asked before anything is recorded: may it put this release live again? `ref` is the
   * ref the release was deployed from (null when no deploy record says so). Throws to refuse.
   */
  checkRelease?: (release: { release: string; ref: string | null }) => void
}

/** The env has no running live release whose output could be shown. */
export class NoLiveReleaseError extends AgentError {
  constructor(message: string) {
    super('no_live_release', 404, message)
  }
}

export class UnknownServiceError extends AgentError {
  constructor(message: string) {
    super('unknown_service', 404, message)
  }
}

/** The service of an app without `services`. */
export { WEB_SERVICE }

export interface AppLogsInput {
  app: string
  env: string
  /** Default: the primary web service (`web` without services). */
  service?: string
  tail: number
  /** Unix seconds. */
  since?: number
  follow: boolean
  /** Ends a follow (the client went away). */
  signal?: AbortSignal
}

/** What the HTTP and CLI surface may ask of the deploy side. */
export interface Deployments {
  request(input: NewDeploy): Promise<Deploy>
  /** `approvedBy`: the approving key's id, recorded on the deploy and in its log. */
  approve(id: string, approvedBy: string): Promise<Deploy>
  rollback(input: RollbackInput): Promise<Deploy>
  releases(target: Target): Promise<ReleaseInfo[]>
  liveRelease(app: string, env: string): LiveRelease | null
  /** The output of the env's live instance of `service`; throws when there is none to show. */
  appLogs(input: AppLogsInput): Promise<AsyncIterable<ContainerLogLine>>
}

export class DeployCoordinator implements Deployments {
  private readonly lanes = new Map<string, Lane>()
  private readonly live = new Map<string, LiveRelease>()
  /** Deploys wait for start-up recovery, so they never act on an env that is still being put right. */
  private recovered: Promise<void> = Promise.resolve()

  private readonly pipeline: Pick<DeployPipeline, 'run' | 'recover'> & Partial<Pick<DeployPipeline, 'rollBackInWindow'>>

  constructor(private readonly deps: CoordinatorDeps) {
    this.pipeline = deps.pipeline(this.setLive)
  }

  /** The pipeline reports a new live release here. */
  readonly setLive = (target: { app: string; env: string }, live: LiveRelease): void => {
    this.live.set(laneKey(target), live)
  }

  liveRelease(app: string, env: string): LiveRelease | null {
    return this.live.get(laneKey({ app, env })) ?? null
  }

  private runtime(target: Target): Runtime {
    return this.deps.runtimeFor?.(target) ?? this.deps.runtime
  }

  async appLogs(input: AppLogsInput): Promise<AsyncIterable<ContainerLogLine>> {
    const target = findTarget(this.deps.config, input.app, input.env)
    const names = servicesOf(target).map((s) => s.name)
    // Default: the primary web service (`web` for an app without services).
    const service = input.service ?? (names[0] as string)
    if (!names.includes(service)) {
      const known = names.length === 1 ? `its one service is ${names[0]}` : `its services: ${names.join(', ')}`
      throw new UnknownServiceError(`${target.app}/${target.env} has no service "${service}" (${known})`)
    }
    // What runs now, read from the engine and nginx (not the remembered live release: it may have stopped since).
    const { live } = this.canBeLive(target) ? await observeEnv(this.runtime(target), this.switchOf(target), target) : { live: null }
    if (!live) throw new NoLiveReleaseError(`${target.app}/${target.env} has no live release running; deploy one first`)
    // A release from before services has one member, `web`: it is every service's output there is.
    const members = membersOf(live)
    const member = members.find((m) => m.service === service) ?? (members.length === 1 ? members[0] : undefined)
    if (!member) throw new NoLiveReleaseError(`the live release ${live.release} of ${target.app}/${target.env} has no ${service} container`)
    const { tail, since, follow, signal } = input
    return this.runtime(target).logs(member, { tail, since, follow, signal })
  }

  async request(input: NewDeploy): Promise<Deploy> {
    const target = findTarget(this.deps.config, input.app, input.env)
    if (!target.envConfig.requireApproval)
      return this.withLane(target, async () => this.enqueue(target, await this.deps.store.create({ ...input, kind: 'deploy' })))
    this.refuseIfBusy(target)
    const deploy = await this.deps.store.create({ ...input, kind: 'deploy' })
    for (const older of this.deps.store.unfinished()) {
      if (older.id !== deploy.id && older.app === deploy.app && older.env === deploy.env && older.state === 'AWAITING_APPROVAL') {
        await this.move(older, 'CANCELLED', { code: 'superseded', message: `replaced by ${deploy.id} before approval` })
      }
    }
    return this.move(deploy, 'AWAITING_APPROVAL')
  }

  async approve(id: string, approvedBy: string): Promise<Deploy> {
    const deploy = this.deps.store.get(id)
    if (!deploy) throw new NotFoundError(`no deploy ${id}`)
    if (deploy.state !== 'AWAITING_APPROVAL')
      throw new ConflictError('not_awaiting_approval', `deploy ${id} is ${deploy.state}, not AWAITING_APPROVAL`)
    const target = findTarget(this.deps.config, deploy.app, deploy.env)
    return this.withLane(target, async () => this.enqueue(target, await moveDeploy(this.deps, deploy, 'QUEUED', { approvedBy })))
  }

  /** Rolls back to `to` (a kept release) or to the newest kept release that is not live. */
  async rollback(input: RollbackInput): Promise<Deploy> {
    const target = findTarget(this.deps.config, input.app, input.env)
    const inWindow = await this.rollBackInWindow(target, input)
    if (inWindow) return inWindow
    const releases = await this.releases(target)
    // By default the newest release whose last deploy served; one whose deploy failed is no rollback target.
    const release = input.to ?? releases.find((r) => r.outcome === 'served')?.release
    if (!release) throw new NotFoundError(`${target.app}/${target.env} has no earlier live release to roll back to`)
    const kept = releases.find((r) => r.release === release)
    if (!kept) throw new NotFoundError(`${target.app}/${target.env} keeps no release "${release}"`)
    if (kept.live) throw new ConflictError('already_live', `release ${release} is already live`)
    // A rollback skips the build and the migrations: only a release known to have served is a safe way back,
    // unless the operator says otherwise (a fix in the database made an older release good again).
    const unsafe = unsafeTarget(kept, `${target.app}/${target.env}`)
    if (unsafe && !input.force) throw new ConflictError(unsafe.code, `${unsafe.message}; pass force (--force) to roll back to it anyway`)
    input.checkRelease?.({ release, ref: this.refOf(target, release) })
    const forced = unsafe ? `forced: ${unsafe.message}` : null
    const reason = [input.reason, forced].filter((r) => r).join('; ') || null
    return this.withLane(target, async () => {
      const deploy = await this.deps.store.create({
        kind: 'rollback',
        app: target.app,
        env: target.env,
        ref: release,
        keyId: input.keyId,
        reason,
      })
      if (unsafe)
        await this.deps.store.appendLog(deploy.id, {
          at: new Date().toISOString(),
          event: 'forced',
          code: unsafe.code,
          message: unsafe.message,
        })
      return this.enqueue(target, deploy)
    })
  }

  /**
   * A rollback asked for while a deploy (or rollback) of the env observes its new release, to the release it replaced
   * (the default target then): that deploy's window ends at once and it rolls back — one switch to the warm standby —
   * ending ROLLED_BACK (`rollback_requested`). Answers that deploy, or null when the request is an ordinary rollback.
   */
  private async rollBackInWindow(target: Target, input: RollbackInput): Promise<Deploy | null> {
    const runningId = this.lane(target).runningId
    const running = runningId ? this.deps.store.get(runningId) : undefined
    const replaced = running?.details.previousRelease
    if (!running || running.state !== 'OBSERVING' || typeof replaced !== 'string') return null
    if (input.to !== undefined && input.to !== replaced) return null
    input.checkRelease?.({ release: replaced, ref: this.refOf(target, replaced) })
    const by = input.keyId ? ` by ${input.keyId}` : ''
    const reason = `rolled back${by} during the observe window${input.reason ? `: ${input.reason}` : ''}`
    if (!this.pipeline.rollBackInWindow?.(running.id, reason)) return null
    await this.deps.store.appendLog(running.id, {
      at: new Date().toISOString(),
      event: 'rollback-requested',
      keyId: input.keyId,
      to: replaced,
      reason: input.reason ?? null,
    })
    // The record as the request found it (OBSERVING): by now it may already be rolling back.
    return running
  }

  /** Kept releases (images of the env), newest first, which one is live, and how each one's last deploy ended. */
  async releases(target: Target): Promise<ReleaseInfo[]> {
    // Callers that name only app and env (no config) get the releases without services.
    const services = (target.appConfig as Target['appConfig'] | undefined)?.services
    const swarm = (target.envConfig as Target['envConfig'] | undefined)?.runtime === 'swarm'
    const [images, groups] = await Promise.all([
      this.runtime(target).releases(target),
      services || swarm ? this.runtime(target).instances(target) : [],
    ])
    const live = this.liveRelease(target.app, target.env)
    const history = this.deps.store.list({ app: target.app, env: target.env }).filter((d) => d.release !== null)
    const served = new Set(history.filter((d) => d.state === 'SUCCEEDED').map((d) => d.release))
    return images.map((img) => {
      const isLive = live?.release === img.release
      // The newest finished deploy or rollback of the release (the list is newest first).
      const last = history.find((d) => d.release === img.release && d.finishedAt !== null && Object.hasOwn(OUTCOMES, d.state))
      return {
        release: img.release,
        commit: img.commit,
        image: img.ref,
        createdAt: img.created.toISOString(),
        live: isLive,
        wasLive: isLive || served.has(img.release),
        outcome: isLive ? 'live' : last ? OUTCOMES[last.state as keyof typeof OUTCOMES] : null,
        deployId: (isLive ? live?.deployId : undefined) ?? last?.id ?? null,
        ...(services ? { services: releaseServices(target, img.release, img.ref, groups) } : {}),
        ...(swarm ? { tasks: releaseTasks(img.release, groups) } : {}),
      }
    })
  }

  /** The ref the newest deploy of `release` in this env was made from; null when no record says. */
  private refOf(target: Target, release: string): string | null {
    return this.deps.store.list({ app: target.app, env: target.env }).find((d) => d.kind === 'deploy' && d.release === release)?.ref ?? null
  }

  /** Each configured env's waiting deploys and live release, read by the metrics at every scrape. */
  envSnapshot(): Array<{ app: string; env: string; queued: number; live: LiveRelease | null }> {
    return Object.entries(this.deps.config.apps).flatMap(([app, appConfig]) =>
      Object.keys(appConfig.envs).map((env) => ({
        app,
        env,
        queued: this.lanes.get(laneKey({ app, env }))?.waiting ? 1 : 0,
        live: this.liveRelease(app, env),
      })),
    )
  }

  /** Resolves when no deploy runs (for a graceful stop). */
  async idle(): Promise<void> {
    for (;;) {
      const running = [...this.lanes.values()].map((lane) => lane.running).filter((p) => p !== null)
      if (running.length === 0) return
      await Promise.allSettled(running)
    }
  }

  /**
   * Start-up: the live releases are read from Docker and nginx, every deploy left unfinished by a crash is driven
   * to a safe end (or queued again if it had not started), after leftover migration containers are removed.
   */
  recover(): Promise<void> {
    this.recovered = this.recoverNow()
    return this.recovered
  }

  private async recoverNow(): Promise<void> {
    await this.forEachEnv(
      this.liveEnvs().filter((target) => !isWorkerOnly(target)),
      async (target) => {
        if (await this.deps.router(target).ensureFile?.(primaryPorts(target)[0])) {
          this.deps.logger.info({ app: target.app, env: target.env }, 'wrote the upstream file nginx includes (no release is live yet)')
        }
      },
      'could not write the upstream file',
    )
    await this.observeLive()
    // No deploy runs yet: what a crash left behind goes first (a deploy recorded as FAILED must not leave its
    // migration container running behind it).
    await this.forEachEnv(
      this.allEnvs(),
      async (target) => this.execute(target, planStartup(await this.runtime(target).oneOffs(target))),
      'could not clean up the env at start-up',
    )
    for (const deploy of this.deps.store.unfinished()) {
      const logger = this.deps.logger.child({ app: deploy.app, env: deploy.env, deployId: deploy.id })
      try {
        const target = this.targetOf(deploy)
        if (!target) {
          const plan = planUnknownEnv(deploy)
          for (const state of plan.path) await this.move(deploy, state, plan.error ?? undefined)
          continue
        }
        if (await this.pipeline.recover(deploy, target)) await this.place(target, deploy)
      } catch (err) {
        logger.error({ err }, 'could not recover the deploy; it stays as it is')
      }
    }
  }

  /** The deploy's env as the config has it now, or null when the config no longer names it. */
  private targetOf(deploy: Deploy): Target | null {
    return hasTarget(this.deps.config, deploy.app, deploy.env) ? findTarget(this.deps.config, deploy.app, deploy.env) : null
  }

  /** Looks at what really runs (nginx's port, the running instance there) to know each env's live release. */
  async observeLive(): Promise<void> {
    for (const target of this.liveEnvs()) {
      const { live } = await observeEnv(this.runtime(target), this.switchOf(target), target)
      if (live) this.setLive(target, liveRelease(live, live.created))
    }
  }

  /**
   * Every few seconds (serve's keeper): in each env where no deploy runs, the live release found stopped is
   * started again, and a release still running out of nginx is stopped (plan.ts, planKeep).
   */
  async keep(): Promise<void> {
    await this.recovered.catch(() => undefined)
    await this.forEachEnv(
      this.liveEnvs(),
      async (target) => {
        if (this.lane(target).runningId) return
        const view = await observeEnv(this.runtime(target), this.switchOf(target), target)
        // A deploy may have started while the env was looked at: it owns the env then.
        if (!this.lane(target).runningId) await this.execute(target, planKeep(view, this.liveRelease(target.app, target.env)))
        // An engine that does not answer (dockerd restarting) is tried again at the next look.
      },
      'the keeper could not look after the env',
      'debug',
    )
  }

  private allEnvs(): Target[] {
    return Object.entries(this.deps.config.apps).flatMap(([app, appConfig]) =>
      Object.keys(appConfig.envs).map((env) => findTarget(this.deps.config, app, env)),
    )
  }

  /** The envs that can have a live release: those nginx switches, and those of apps of workers only. */
  private liveEnvs(): Target[] {
    return this.allEnvs().filter((target) => this.canBeLive(target))
  }

  private canBeLive(target: Target): boolean {
    return isWorkerOnly(target) || target.envConfig.proxy !== undefined
  }

  /** nginx's upstream, or for an app of workers only the hand-over record. */
  private switchOf(target: Target): EnvSwitch {
    return envSwitch(target, this.deps)
  }

  /** Runs `fn` for each env in turn; one env's failure is logged (at `level`) and does not stop the others. */
  private async forEachEnv(
    targets: Target[],
    fn: (target: Target) => Promise<void>,
    failure: string,
    level: 'error' | 'debug' = 'error',
  ): Promise<void> {
    for (const target of targets) {
      await fn(target).catch((err: unknown) => this.deps.logger[level]({ err, app: target.app, env: target.env }, failure))
    }
  }

  /** Runs an env's plan, logging it and each step with its cause. */
  private async execute(target: Target, steps: Step[]): Promise<void> {
    if (steps.length === 0) return
    this.deps.logger.warn({ app: target.app, env: target.env, plan: describeSteps(steps) }, 'putting the env right')
    await executeSteps(steps, {
      runtime: this.runtime(target),
      router: this.switchOf(target),
      verify: async () => undefined,
      done: (_step, text) => this.deps.logger.info({ app: target.app, env: target.env, step: text }, 'done'),
    })
  }

  private lane(target: Target): Lane {
    const key = laneKey(target)
    let lane = this.lanes.get(key)
    if (!lane) this.lanes.set(key, (lane = { running: null, runningId: null, waiting: null, claimed: false }))
    return lane
  }

  private refuseIfBusy(target: Target): void {
    const lane = this.lane(target)
    if (target.envConfig.queue !== 'reject') return
    if (lane.runningId)
      throw new ConflictError(
        'deploy_in_progress',
        `${target.app}/${target.env} is deploying ${lane.runningId}; this env's queue policy is reject`,
      )
    if (lane.claimed)
      throw new ConflictError(
        'deploy_in_progress',
        `${target.app}/${target.env} is starting another deploy; this env's queue policy is reject`,
      )
  }

  /**
   * Runs `enter` (record the deploy, then place it) with the busy check and, under `queue: reject`, the lane
   * claimed from the check until the deploy has started: the check and the start are separated by journal writes,
   * and concurrent requests must not all pass the check of a free lane.
   */
  private async withLane(target: Target, enter: () => Promise<Deploy>): Promise<Deploy> {
    this.refuseIfBusy(target)
    if (target.envConfig.queue !== 'reject') return enter()
    const lane = this.lane(target)
    lane.claimed = true
    try {
      return await enter()
    } finally {
      lane.claimed = false
    }
  }

  private async enqueue(target: Target, deploy: Deploy): Promise<Deploy> {
    await this.recovered.catch(() => undefined)
    return this.place(target, deploy)
  }

  /** Runs the deploy now if the lane is free, else makes it the one waiting deploy. */
  private async place(target: Target, deploy: Deploy): Promise<Deploy> {
    const lane = this.lane(target)
    if (!lane.runningId) {
      this.start(target, lane, deploy)
      return deploy
    }
    // The slot is taken before the replaced deploy's cancellation is awaited, so a request placed meanwhile
    // replaces this one in turn instead of being overwritten and left QUEUED for ever.
    const replaced = lane.waiting
    lane.waiting = deploy
    this.deps.logger.info({ app: target.app, env: target.env, deployId: deploy.id, behind: lane.runningId }, 'deploy queued')
    if (replaced) await this.move(replaced, 'CANCELLED', { code: 'superseded', message: `replaced in the queue by ${deploy.id}` })
    return deploy
  }

  private start(target: Target, lane: Lane, deploy: Deploy): void {
    lane.runningId = deploy.id
    this.deps.notify?.({
      event: 'deploy.started',
      app: deploy.app,
      env: deploy.env,
      release: deploy.release,
      commit: deploy.commit,
      id: deploy.id,
    })
    lane.running = this.pipeline
      .run(deploy, target)
      .then((done) => this.notifyFinished(done))
      .catch((err) => this.deps.logger.error({ err, deployId: deploy.id }, 'deploy lane failed'))
      .finally(() => {
        lane.runningId = null
        lane.running = null
        const next = lane.waiting
        lane.waiting = null
        if (next) this.start(target, lane, next)
      })
  }

  private notifyFinished(done: Deploy): void {
    const event = ({ SUCCEEDED: 'deploy.succeeded', FAILED: 'deploy.failed', ROLLED_BACK: 'deploy.rolled_back' } as const)[
      done.state as 'SUCCEEDED'
    ]
    if (!event) return
    const durationMs = done.finishedAt ? Date.parse(done.finishedAt) - Date.parse(done.createdAt) : undefined
    this.deps.notify?.({
      event,
      app: done.app,
      env: done.env,
      release: done.release,
      commit: done.commit,
      durationMs,
      reason: done.error?.message ?? null,
      id: done.id,
    })
  }

  private move(deploy: Deploy, state: DeployState, error?: { code: string; message: string }): Promise<Deploy> {
    return moveDeploy(this.deps, deploy, state, { error })
  }
}

/** The group that runs `release`: a running one first (a release deployed again may have both colours). */
function groupOf(release: string, groups: Instance[]): Instance | undefined {
  return groups.find((g) => g.release === release && g.running) ?? groups.find((g) => g.release === release)
}

/** Each service of a kept release: its image, and whether its container runs (null: the release has none now). */
function releaseServices(target: Target, release: string, appImage: string, groups: Instance[]) {
  const group = groupOf(release, groups)
  return servicesOf(target).map((s) => ({
    name: s.name,
    image: s.build ? imageTag(target.app, target.env, release, s.name) : appImage,
    running: group ? (membersOf(group).find((m) => m.service === s.name)?.running ?? false) : null,
  }))
}

/** Each service's tasks of the release on the swarm; null when no colour holds it. */
export function releaseTasks(release: string, groups: Instance[]): ReleaseTask[] | null {
  const group = groupOf(release, groups)
  return group ? membersOf(group).flatMap((m) => (m.tasks ?? []).map((task) => ({ service: m.service, ...task }))) : null
}
