// One deploy, start to end: resolve the ref, back up, build, migrate, start the candidate on the idle port,
// verify it, switch nginx, observe, and roll back when it goes bad. Every state change is journalled before the
// side effect it announces; a failure before the switch leaves the live release untouched.
import { readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Target } from '../config/targets.js'
import { AgentError, asDiskFull, ConflictError, NotFoundError } from '../errors.js'
import { observe, runSmoke, waitHealthy, joinUrl, type ObserveOutcome } from '../health/index.js'
import type { Logger } from '../observability/logger.js'
import type { Deploy, DeployDetails, DeployStore } from '../store/deploys.js'
import { envSecretValues } from '../observability/scrub.js'
import { readEnvFile } from './envfile.js'
import type { ImageBuilder, SourceRepo, TagMemory } from './ports.js'
import type { Instance, Runtime } from './runtime.js'
import { envImages, imageTag, LABEL } from './runtime.js'
import { planPrune } from './prune.js'
import { describePlan, planRecovery } from './recovery.js'
import { isTerminal, type DeployState } from './states.js'
import { announce, moveDeploy, type DeployListener } from './transition.js'
import type { UpstreamSwitch } from '../proxy/nginx.js'

export class DeployFailure extends AgentError {
  constructor(code: string, message: string) {
    super(code, 500, message)
  }
}

export interface LiveRelease {
  release: string
  commit: string
  port: number
  deployId: string
  since: string
}

export interface PipelineDeps {
  store: DeployStore
  runtime: Runtime
  images: ImageBuilder
  repo(app: string): SourceRepo
  tags: TagMemory
  router(target: Target): UpstreamSwitch
  logger: Logger
  /** Takes a verified pre-deploy backup pinned to the release and answers its id. */
  backup?: (target: Target, release: string) => Promise<string>
  onLive?: (target: Target, live: LiveRelease) => void
  /** Hears every state change and failed health probe (metrics, error reporting). */
  onDeployEvent?: DeployListener
  /** Hears the secret values read at deploy time (env file values, database password) so they are scrubbed. */
  learnSecrets?: (values: string[]) => void
}

/** The longest the old release waits for the proxy's old workers (long requests, websockets) before it stops. */
const DRAIN_LIMIT_MS = 30_000

/** A release name usable in image tags and container labels: the tag name, or the short commit for branches. */
export function releaseName(kind: 'branch' | 'tag', ref: string, commit: string): string {
  return kind === 'tag' ? ref.replace(/[^A-Za-z0-9_.-]/g, '-') : commit.slice(0, 12)
}

/** One running deploy: its record, its log, and the only way it changes state. */
class DeployRun {
  /** Set once nginx routes to the candidate: from then on, failing means rolling back, never discarding it. */
  switched = false
  private noteFailed = false

  constructor(
    private readonly deps: PipelineDeps,
    public deploy: Deploy,
    readonly logger: Logger,
  ) {}

  async move(state: DeployState, patch: { error?: { code: string; message: string }; commit?: string; release?: string; details?: DeployDetails } = {}): Promise<void> {
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

function asFailure(err: unknown, fallbackCode: string): { code: string; message: string } {
  const full = asDiskFull(err)
  if (full) return { code: full.code, message: full.message }
  if (err instanceof AgentError) return { code: err.code, message: err.message }
  return { code: fallbackCode, message: err instanceof Error ? err.message : String(err) }
}

export class DeployPipeline {
  constructor(private readonly deps: PipelineDeps) {}

  /** Drives a QUEUED deploy (or rollback) to a terminal state; never throws for a deploy that fails. */
  async run(deploy: Deploy, target: Target): Promise<Deploy> {
    const run = new DeployRun(this.deps, deploy, this.deps.logger.child({ app: target.app, env: target.env, deployId: deploy.id }))
    run.logger.info({ kind: deploy.kind, ref: deploy.ref }, 'deploy started')
    try {
      if (deploy.kind === 'rollback') await this.rollBackByHand(run, target)
      else await this.deployRelease(run, target)
    } catch (err) {
      run.logger.error({ err }, 'deploy crashed')
      if (!isTerminal(run.deploy.state)) {
        // A journal that cannot be written (a full disk) keeps the last state it took; start-up recovery settles it.
        await run.move('FAILED', { error: asFailure(err, 'internal') }).catch((moveErr: unknown) => run.logger.error({ err: moveErr }, 'could not record the deploy as FAILED'))
      }
    }
    run.logger.info({ state: run.deploy.state }, 'deploy finished')
    return run.deploy
  }

  private async deployRelease(run: DeployRun, target: Target): Promise<void> {
    let candidate: Instance | null = null
    try {
      await run.move('RESOLVING')
      const { commit, release } = await this.resolve(run, target)
      if (target.envConfig.backupBeforeDeploy) {
        await run.move('BACKING_UP')
        await this.backUp(run, target, release)
      }
      await run.move('BUILDING', { commit, release })
      const image = await this.build(run, target, commit, release)
      if (target.appConfig.migrate) {
        await run.move('MIGRATING')
        await this.migrate(run, target, image)
      }
      const plan = await this.placement(target)
      await run.move('STARTING', { details: { candidatePort: plan.idlePort, previousPort: plan.live?.port ?? null, previousRelease: plan.live?.release ?? null } })
      candidate = await this.startOnIdlePort(run, target, plan, { image, release, commit })
      await run.move('VERIFYING', { details: { candidateContainer: candidate.id } })
      await this.verify(run, target, candidate)
      await this.switchAndObserve(run, target, candidate, plan.live)
    } catch (err) {
      // After the switch the candidate serves: only a journal that cannot be written gets here, and recovery settles it.
      if (isTerminal(run.deploy.state) || run.deploy.state === 'ROLLING_BACK' || run.switched) throw err
      const failure = asFailure(err, 'deploy_failed')
      run.logger.warn({ err }, 'deploy failed before the switch; the live release is untouched')
      if (candidate) await this.discard(run, candidate)
      await run.move('FAILED', { error: failure })
    }
  }

  private async resolve(run: DeployRun, target: Target): Promise<{ commit: string; release: string }> {
    const { ref, commit: pinned } = run.deploy
    const rule = target.envConfig.ref
    const repo = this.deps.repo(target.app)
    await repo.fetch()
    let commit: string
    if (rule.kind === 'tag') {
      commit = (await repo.resolveTag(ref)).commit
      if (pinned && pinned !== commit) throw new ConflictError('commit_mismatch', `tag ${ref} is ${commit}, not the requested ${pinned}`)
      this.deps.tags.check(target.app, ref, commit)
      await this.deps.tags.record(target.app, ref, commit)
    } else {
      const head = await repo.resolveBranch(ref)
      if (pinned && pinned !== head && !(await repo.isAncestor(pinned, head))) {
        throw new ConflictError('commit_not_on_branch', `commit ${pinned} is not on branch ${ref}`)
      }
      commit = pinned ?? head
    }
    const release = releaseName(rule.kind, ref, commit)
    await run.log({ event: 'resolved', ref, commit, release })
    return { commit, release }
  }

  /** The deploy stops here, before any change, if the backup fails. */
  private async backUp(run: DeployRun, target: Target, release: string): Promise<void> {
    if (!this.deps.backup) throw new DeployFailure('backup_unavailable', 'backupBeforeDeploy is set but this agent has no backup service')
    const backupId = await this.deps.backup(target, release)
    await run.log({ event: 'backup', backupId, pinnedBy: release })
  }

  private async build(run: DeployRun, target: Target, commit: string, release: string): Promise<string> {
    const tag = imageTag(target.app, target.env, release)
    const existing = await this.deps.images.inspectImage(tag)
    if (existing && existing.labels[LABEL.commit] === commit) {
      await run.log({ event: 'build', cached: true, image: tag })
      return tag
    }
    const { build } = target.appConfig
    let lines = 0 // only counted: a long build's output is in its log, not held here
    await this.deps.images.buildImage({
      context: this.deps.repo(target.app).archive(commit, build.context),
      dockerfile: build.dockerfile,
      tag,
      buildArgs: { ...build.args, VERSION: release },
      labels: { [LABEL.commit]: commit },
      timeoutMs: build.timeoutSec * 1000,
      onLine: (line) => {
        lines++
        run.note({ event: 'build', line })
      },
    })
    await run.log({ event: 'build', image: tag, lines })
    return tag
  }

  private async appEnvironment(target: Target): Promise<string[]> {
    const vars = await readEnvFile(target.envConfig.envFile)
    // The values just read may be newer than the scrubber's (an env file edited since the start or the last reload).
    const secrets = envSecretValues(vars)
    const db = target.envConfig.database
    if (db) {
      const url = new URL(db.url)
      if (db.passwordFile) url.password = encodeURIComponent((await readFile(db.passwordFile, 'utf8')).trim())
      secrets.push(decodeURIComponent(url.password))
      vars.push(`${db.envName}=${url.toString()}`)
    }
    this.deps.learnSecrets?.(secrets)
    return vars
  }

  private async migrate(run: DeployRun, target: Target, image: string): Promise<void> {
    const migrate = target.appConfig.migrate as NonNullable<Target['appConfig']['migrate']>
    const result = await this.deps.images.runOneOff({
      image,
      cmd: migrate.command,
      env: await this.appEnvironment(target),
      labels: { [LABEL.app]: target.app, [LABEL.env]: target.env, [LABEL.deploy]: run.deploy.id, [LABEL.role]: 'migrate' },
      timeoutMs: migrate.timeoutSec * 1000,
      onLine: (line) => run.note({ event: 'migrate', line }),
    })
    if (result.timedOut) throw new DeployFailure('migration_timeout', `migration ran past ${migrate.timeoutSec} s and was killed; last lines:\n${result.logTail.join('\n')}`)
    if (result.exitCode !== 0) throw new DeployFailure('migration_failed', `migration exited with ${result.exitCode}; last lines:\n${result.logTail.join('\n')}`)
    await run.log({ event: 'migrate', exitCode: 0 })
  }

  /** Where things run now: the live instance (nginx's port, running) and the idle port for the candidate. */
  private async placement(target: Target): Promise<{ live: Instance | null; idlePort: number; instances: Instance[] }> {
    const [instances, currentPort] = await Promise.all([this.deps.runtime.instances(target), this.deps.router(target).currentPort()])
    const [blue, green] = target.envConfig.ports
    const live = instances.find((i) => i.port === currentPort && i.running) ?? null
    const idlePort = currentPort === blue ? green : blue
    return { live, idlePort, instances }
  }

  /** Clears the idle port (stopped older releases, orphans) and starts the candidate there. */
  private async startOnIdlePort(run: DeployRun, target: Target, plan: { idlePort: number; instances: Instance[] }, release: { image: string; release: string; commit: string }): Promise<Instance> {
    for (const old of plan.instances.filter((i) => i.port === plan.idlePort)) {
      await this.deps.runtime.remove(old)
      await run.log({ event: 'removed', container: old.id, release: old.release, reason: 'frees the idle port' })
    }
    const candidate = await this.deps.runtime.startCandidate({
      app: target.app,
      env: target.env,
      release: release.release,
      commit: release.commit,
      deployId: run.deploy.id,
      image: release.image,
      port: plan.idlePort,
      variables: await this.appEnvironment(target),
    })
    await run.log({ event: 'started', container: candidate.id, port: plan.idlePort, release: release.release })
    return candidate
  }

  private async verify(run: DeployRun, target: Target, instance: Instance): Promise<void> {
    const { health, smoke } = target.appConfig
    const base = `http://127.0.0.1:${instance.port}`
    try {
      await waitHealthy({
        url: joinUrl(base, health.path),
        intervalMs: health.intervalMs,
        timeoutMs: health.timeoutMs,
        healthyAfter: health.healthyAfter,
        deadlineMs: health.deadlineSec * 1000,
        dockerHealth: () => this.deps.runtime.engineHealth(instance),
        containerRunning: () => this.deps.runtime.isAlive(instance),
        onResult: (r) => {
          if (!r.ok) run.probeFailed()
          run.note({ event: 'health', port: instance.port, ok: r.ok, status: r.status, error: r.error, streak: r.streak })
        },
      })
      if (smoke.length > 0) {
        const results = await runSmoke(base, smoke, health.timeoutMs)
        await run.log({ event: 'smoke', results })
      }
    } catch (err) {
      const tail = await this.deps.runtime.logTail(instance).catch(() => [])
      await run.log({ event: 'container-log', lines: tail })
      throw err
    }
  }

  /** Switches nginx to `candidate`, retires the old release, watches the new one; rolls back on failure. */
  private async switchAndObserve(run: DeployRun, target: Target, candidate: Instance, previous: Instance | null): Promise<void> {
    await run.move('SWITCHING')
    try {
      await this.deps.router(target).switchTo(candidate.port)
    } catch (err) {
      // The router restored the old upstream; the old release never stopped serving.
      await run.move('ROLLING_BACK', { error: asFailure(err, 'switch_failed') })
      await this.discard(run, candidate)
      await run.move('ROLLED_BACK')
      return
    }
    run.switched = true
    // From here nginx routes to the candidate: whatever fails (Docker, the disk, a probe), it is never discarded as
    // a failure before the switch would be; it is observed, and rolled back from like any release that went bad.
    let outcome: ObserveOutcome
    try {
      await run.log({ event: 'switched', port: candidate.port })
      if (previous) await this.retireAfterDrain(run, target, previous)
      await run.move('OBSERVING')
      const { observe: window, health } = target.appConfig
      outcome = await observe({
        url: joinUrl(`http://127.0.0.1:${candidate.port}`, health.path),
        seconds: window.seconds,
        intervalMs: window.intervalMs,
        timeoutMs: health.timeoutMs,
        maxFailures: window.maxFailures,
        // An engine that does not answer (dockerd restarting) says nothing about the app: the probes decide.
        containerAlive: () => this.deps.runtime.isAlive(candidate).catch(() => true),
        onResult: (r) => {
          if (r.ok) return
          run.probeFailed()
          run.note({ event: 'observe', ok: false, status: r.status, error: r.error, failures: r.failures })
        },
      })
    } catch (err) {
      run.logger.error({ err }, 'observing the new release failed')
      outcome = { healthy: false, reason: `observing the new release failed: ${asFailure(err, 'observe_failed').message}` }
    }
    if (outcome.healthy) {
      await this.finishLive(run, target, candidate)
      return
    }
    await this.rollBackAutomatically(run, target, candidate, previous, outcome.reason)
  }

  /** Stops the replaced release once the proxy's old workers have finished the requests they still had for it. */
  private async retireAfterDrain(run: DeployRun, target: Target, previous: Instance): Promise<void> {
    const drainMs = target.envConfig.proxy?.drainMs ?? 1000
    const started = Date.now()
    const [, drained] = await Promise.all([sleep(drainMs), this.deps.router(target).drained?.(DRAIN_LIMIT_MS) ?? Promise.resolve(false)])
    await this.deps.runtime.retire(previous)
    await run.log({ event: 'retired', container: previous.id, release: previous.release, afterMs: Date.now() - started, proxyDrained: drained })
  }

  private async rollBackAutomatically(run: DeployRun, target: Target, bad: Instance, previous: Instance | null, reason: string): Promise<void> {
    const error = { code: 'observe_failed', message: reason }
    await run.move('ROLLING_BACK', { error })
    if (!previous) {
      await run.move('FAILED', { error: { code: 'observe_failed', message: `${reason}; there is no previous release to roll back to, so it stays live` } })
      return
    }
    try {
      if (!(await this.deps.runtime.isAlive(previous))) await this.deps.runtime.revive(previous)
      await this.verify(run, target, previous)
      await this.deps.router(target).switchTo(previous.port)
      await run.log({ event: 'switched', port: previous.port, rollback: true })
      await this.retireAfterDrain(run, target, bad)
      this.deps.onLive?.(target, { release: previous.release, commit: previous.commit, port: previous.port, deployId: previous.deployId, since: new Date().toISOString() })
      await run.move('ROLLED_BACK', { error })
    } catch (err) {
      const failure = asFailure(err, 'rollback_failed')
      run.logger.error({ err }, 'automatic rollback failed')
      await run.move('FAILED', { error: { code: 'rollback_failed', message: `${reason}; rolling back failed too: ${failure.message}` } })
    }
  }

  private async finishLive(run: DeployRun, target: Target, live: Instance): Promise<void> {
    this.deps.onLive?.(target, { release: live.release, commit: live.commit, port: live.port, deployId: live.deployId, since: new Date().toISOString() })
    await this.prune(run, target, live).catch((err) => run.logger.warn({ err }, 'pruning old releases failed; they stay'))
    await run.move('SUCCEEDED')
  }

  /** Removes what `keepReleases` no longer keeps; the deploy has succeeded whatever happens here. */
  private async prune(run: DeployRun, target: Target, live: Instance): Promise<void> {
    const [images, instances] = await Promise.all([envImages(this.deps.images, target), this.deps.runtime.instances(target)])
    const plan = planPrune({ images, instances, livePort: live.port, keepReleases: target.appConfig.keepReleases })
    for (const c of plan.containers) {
      const instance = instances.find((i) => i.id === c.id)
      if (instance) await this.deps.runtime.remove(instance)
      await run.log({ event: 'pruned', container: c.id, release: c.release, reason: c.reason })
    }
    for (const img of plan.images) {
      await this.deps.images.removeImage(img.ref)
      await run.log({ event: 'pruned', image: img.ref, release: img.release, reason: img.reason })
    }
  }

  /** A manual rollback: the kept image of `ref` (a release name) on the idle port, verified, switched in. */
  private async rollBackByHand(run: DeployRun, target: Target): Promise<void> {
    const release = run.deploy.ref
    const image = imageTag(target.app, target.env, release)
    const details = await this.deps.images.inspectImage(image)
    if (!details) throw new NotFoundError(`release ${release} has no kept image ${image}`)
    const commit = details.labels[LABEL.commit] ?? ''
    const plan = await this.placement(target)
    await run.move('STARTING', { commit, release, details: { candidatePort: plan.idlePort, previousPort: plan.live?.port ?? null, previousRelease: plan.live?.release ?? null } })
    let candidate: Instance | null = plan.instances.find((i) => i.port === plan.idlePort && i.release === release) ?? null
    try {
      if (candidate) {
        // The stopped container of that release is still there: starting it is the fast path.
        if (!candidate.running) await this.deps.runtime.revive(candidate)
        await run.log({ event: 'revived', container: candidate.id, release })
      } else {
        candidate = await this.startOnIdlePort(run, target, plan, { image, release, commit })
      }
      await run.move('VERIFYING', { details: { candidateContainer: candidate.id } })
      await this.verify(run, target, candidate)
      await run.move('SWITCHING')
      await this.deps.router(target).switchTo(candidate.port)
    } catch (err) {
      if (candidate) await this.deps.runtime.retire(candidate).catch(() => undefined)
      await run.move('FAILED', { error: asFailure(err, 'rollback_failed') })
      return
    }
    await run.log({ event: 'switched', port: candidate.port })
    if (plan.live) await this.retireAfterDrain(run, target, plan.live)
    await this.finishLive(run, target, candidate)
  }

  /**
   * Drives a deploy the agent was running when it stopped to a safe end state, from what Docker and nginx show.
   * Returns true when the deploy had not started yet and should simply be queued again.
   */
  async recover(deploy: Deploy, target: Target): Promise<boolean> {
    const run = new DeployRun(this.deps, deploy, this.deps.logger.child({ app: target.app, env: target.env, deployId: deploy.id }))
    const [instances, routedPort] = await Promise.all([this.deps.runtime.instances(target), this.deps.router(target).currentPort()])
    const candidateId = deploy.details.candidateContainer
    const candidates = instances.filter((i) => i.deployId === deploy.id || i.id === candidateId)
    const previousPort = deploy.details.previousPort
    const previous = instances.find((i) => i.port === previousPort && !candidates.includes(i)) ?? null
    const candidate = candidates[0]
    let candidateHealthy = false
    if (candidate && candidate.port === routedPort) {
      candidateHealthy = await this.verify(run, target, candidate).then(
        () => true,
        () => false,
      )
    }
    const plan = planRecovery(deploy, { routedPort, candidates, previous, candidateHealthy })
    run.logger.warn({ plan: describePlan(plan) }, 'recovering an interrupted deploy')
    await run.log({ event: 'recovery', plan: describePlan(plan) })
    for (const step of plan.steps) {
      if (step.do === 'remove') await this.deps.runtime.remove(step.instance)
      else if (step.do === 'retire') await this.deps.runtime.retire(step.instance)
      else if (step.do === 'switch') await this.deps.router(target).switchTo(step.instance.port)
      else {
        if (!(await this.deps.runtime.isAlive(step.instance))) await this.deps.runtime.revive(step.instance)
        await this.verify(run, target, step.instance)
      }
      await run.log({ event: 'recovery-step', do: step.do, container: step.instance.id, release: step.instance.release, cause: step.cause })
    }
    const live = plan.steps.findLast((s) => s.do === 'switch')?.instance
    if (live) this.deps.onLive?.(target, { release: live.release, commit: live.commit, port: live.port, deployId: live.deployId, since: new Date().toISOString() })
    for (const [i, state] of plan.path.entries()) await run.move(state, i === plan.path.length - 1 && plan.error ? { error: plan.error } : {})
    return plan.requeue
  }

  private async discard(run: DeployRun, candidate: Instance): Promise<void> {
    const tail = await this.deps.runtime.logTail(candidate).catch(() => [])
    if (tail.length > 0) await run.log({ event: 'container-log', lines: tail })
    await this.deps.runtime.remove(candidate).catch((err) => run.logger.error({ err }, 'could not remove the candidate'))
    await run.log({ event: 'removed', container: candidate.id, reason: 'candidate discarded' })
  }
}
