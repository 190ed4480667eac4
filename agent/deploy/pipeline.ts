// One deploy, start to end, as named steps with one failure policy per phase (the kamal-proxy way: create the
// target and wait until it is healthy, install it, drain the replaced one):
//   prepare   RESOLVING, BACKING_UP, BUILDING, MIGRATING   nothing has changed: a failure is FAILED
//   candidate STARTING, VERIFYING                          the candidate is removed: FAILED, the live release untouched
//   switch    SWITCHING                                    nginx keeps the old upstream: ROLLED_BACK
//   retire    (after the drain)                            a failure is logged; the keeper stops it later
//   observe   OBSERVING                                    a failure rolls back to the replaced release
// A manual rollback is the candidate, switch, retire and observe phases with a kept release. Every state change is
// journalled before the side effect it announces. An app of workers only runs the same phases without nginx: its
// groups have no port, the "switch" is the hand-over of the work (the stop-first workers, and the hand-over record
// that names the live group by its deploy id), and its observe window watches each worker's life.
import { isWorkerOnly, primaryPorts, servicesOf, type ServiceSpec } from '../config/services.js'
import { containerSettings, type Target } from '../config/targets.js'
import { AgentError, NotFoundError } from '../errors.js'
import {
  isAbortError,
  joinUrl,
  observe,
  observeWorker,
  runSmoke,
  systemClock,
  waitHealthy,
  waitWorkerHealthy,
  type Clock,
  type ObserveOutcome,
} from '../health/index.js'
import type { Logger } from '../observability/logger.js'
import type { UpstreamSwitch } from '../proxy/nginx.js'
import type { Deploy, DeployStore } from '../store/deploys.js'
import { executeSteps } from './execute.js'
import type { HandOver } from './handover.js'
import { liveRelease, type LiveRelease } from './live.js'
import { envSwitch, isRouted, observeEnv, routeTo, type EnvSwitch, type EnvView } from './observe-env.js'
import { describePlan, planRecovery } from './plan.js'
import { appEnvironment, prepareRelease, runnableImage, type Prepared, type PrepareDeps } from './prepare.js'
import { planPrune } from './prune.js'
import { asFailure, DeployRun } from './run.js'
import {
  coreMembers,
  hostsOf,
  imageTag,
  MemberExitedError,
  membersOf,
  singletonsOf,
  type Instance,
  type Member,
  type Runtime,
} from './runtime.js'
import { isTerminal } from './states.js'
import type { DeployListener } from './transition.js'

export type { LiveRelease } from './live.js'

export { DeployFailure } from './run.js'
export { releaseName } from './prepare.js'

export interface PipelineDeps extends PrepareDeps {
  store: DeployStore
  router(target: Target): UpstreamSwitch
  /** An app of workers only: the env's record of which group is live (it has no nginx). */
  handOver?(target: Target): HandOver
  logger: Logger
  /** Time for the drain and the health probes; the system clock by default. */
  clock?: Clock
  onLive?: (target: Target, live: LiveRelease) => void
  /** Hears every state change and failed health probe (metrics, error reporting). */
  onDeployEvent?: DeployListener
  /** Judges the new release by its real traffic (proxy.accessLog) while OBSERVING; null when the env has none. */
  watchTraffic?: (target: Target, candidate: Instance) => { failed: Promise<string>; stop(): void } | null
}

/** How OBSERVING ended: healthy, or a reason to roll back (`code`: observe_failed unless said otherwise). */
type Verdict = ObserveOutcome | RollbackVerdict
interface RollbackVerdict {
  healthy: false
  reason: string
  code: string
}

/** Why a release serving on several nodes is no longer alive (one address's probes are not what found it). */
const SWARM_DEAD = 'a task of the release stopped, or a node running it went down'

/** The longest the old release waits for the proxy's old workers (long requests, websockets) before it stops. */
const DRAIN_LIMIT_MS = 30_000

export class DeployPipeline {
  private readonly clock: Clock

  /** Deploys and rollbacks in their observe window: calling one's entry ends the window with a rollback. */
  private readonly windows = new Map<string, (verdict: RollbackVerdict) => void>()

  constructor(private readonly deps: PipelineDeps) {
    this.clock = deps.clock ?? systemClock
  }

  /**
   * A rollback asked for while `deployId` observes its release: the window ends at once and the release it replaced
   * goes back into nginx (a warm standby: one upstream write and reload). False when it is not in its window.
   */
  rollBackInWindow(deployId: string, reason: string): boolean {
    const end = this.windows.get(deployId)
    end?.({ healthy: false, reason, code: 'rollback_requested' })
    return end !== undefined
  }

  /** nginx's upstream, or for an app of workers only the hand-over record. */
  private switchOf(target: Target): EnvSwitch {
    return envSwitch(target, this.deps)
  }

  /** Drives a QUEUED deploy (or rollback) to a terminal state; never throws for a deploy that fails. */
  async run(deploy: Deploy, target: Target): Promise<Deploy> {
    const run = this.startRun(deploy, target)
    run.logger.info({ kind: deploy.kind, ref: deploy.ref }, 'deploy started')
    try {
      if (deploy.kind === 'rollback') await this.rollBackByHand(run, target)
      else await this.deployRelease(run, target)
    } catch (err) {
      // Each phase settles its own failures: only a journal that cannot be written (or a bug) gets here.
      run.logger.error({ err }, 'deploy crashed')
      if (!isTerminal(run.deploy.state)) {
        // A journal that cannot be written (a full disk) keeps the last state it took; start-up recovery settles it.
        await run
          .move('FAILED', { error: asFailure(err, 'internal') })
          .catch((moveErr: unknown) => run.logger.error({ err: moveErr }, 'could not record the deploy as FAILED'))
      }
    }
    run.logger.info({ state: run.deploy.state }, 'deploy finished')
    return run.deploy
  }

  /** The runtime of the env: its own (a swarm) or the host's containers. */
  private runtime(target: Target): Runtime {
    return this.deps.runtimeFor?.(target) ?? this.deps.runtime
  }

  private startRun(deploy: Deploy, target: Target): DeployRun {
    return new DeployRun(this.deps, deploy, this.deps.logger.child({ app: target.app, env: target.env, deployId: deploy.id }))
  }

  private async deployRelease(run: DeployRun, target: Target): Promise<void> {
    const prepared = await this.settle(run, 'deploy_failed', () => prepareRelease(this.deps, run, target))
    if (!prepared) return
    let candidate: Instance | null = null
    const placed = await this.settle(
      run,
      'deploy_failed',
      async () => {
        const env = await observeEnv(this.runtime(target), this.switchOf(target), target)
        await run.move('STARTING', { details: startDetails(env) })
        candidate = await this.startOnIdlePort(run, target, env, prepared)
        await run.log({ event: 'started', container: candidate.id, port: candidate.port, release: candidate.release })
        await run.move('VERIFYING', { details: { candidateContainer: candidate.id } })
        await this.verify(run, target, candidate)
        return { candidate, previous: env.live }
      },
      async () => {
        if (candidate) await this.discard(run, target, candidate)
      },
    )
    if (!placed) return
    const { candidate: started, previous } = placed
    if (!(await this.switchTo(run, target, started, previous))) return
    await this.observeSwitched(run, target, started, previous)
  }

  /**
   * After a switch: OBSERVING decides between the release now live and the one it replaced. With a warm standby
   * (`observe.warmStandby`, the default) the replaced release keeps running, as nginx's backup of the new one
   * (`standbyOf`), until the window ends, so a rollback in it — automatic or by hand — is one upstream write and
   * reload; without, it stops after the drain. A healthy window ends by writing the new release alone, and the
   * standby stops once the proxy workers that may still retry on it are gone.
   */
  private async observeSwitched(run: DeployRun, target: Target, live: Instance, replaced: Instance | null): Promise<void> {
    const switchedAt = this.clock.now()
    const warm = target.appConfig.observe.warmStandby
    // A rollback asked for from here on ends the window; asked for earlier, it waits in the queue.
    let byHand!: (verdict: RollbackVerdict) => void
    const rolledBackByHand = new Promise<RollbackVerdict>((resolve) => (byHand = resolve))
    this.windows.set(run.deploy.id, byHand)
    let outcome: Verdict
    try {
      if (replaced && !warm) await this.retireReplaced(run, target, replaced)
      await run.move('OBSERVING')
      outcome = await this.watch(run, target, live, rolledBackByHand)
    } finally {
      this.windows.delete(run.deploy.id)
    }
    if (!outcome.healthy) return await this.rollBackAutomatically(run, target, live, replaced, outcome, warm)
    if (replaced && warm) {
      const listed = standbyOf(target, replaced) !== null
      if (listed) await this.unlistStandby(run, target, live, replaced)
      await this.retireReplaced(run, target, replaced, listed ? undefined : switchedAt)
    }
    await this.finishLive(run, target, live)
  }

  /**
   * The failure policy of the phases before the switch: `body`'s failure is cleaned up by `undo`, recorded as
   * FAILED, and answered with null. Nothing nginx routes to has changed.
   */
  private async settle<T>(run: DeployRun, fallbackCode: string, body: () => Promise<T>, undo?: () => Promise<void>): Promise<T | null> {
    try {
      return await body()
    } catch (err) {
      run.logger.warn({ err }, 'deploy failed before the switch; the live release is untouched')
      await undo?.()
      await run.move('FAILED', { error: asFailure(err, fallbackCode) })
      return null
    }
  }

  /**
   * Clears the idle port (stopped older releases, orphans) and starts the candidate there. The caller holds the
   * instance before it logs anything, so a log write that fails (a full disk) cannot leave the candidate running.
   */
  private async startOnIdlePort(run: DeployRun, target: Target, env: EnvView, release: Prepared): Promise<Instance> {
    // A group of workers only needs no port: nothing to free.
    for (const old of env.instances.filter((i) => env.idlePort !== null && i.port === env.idlePort)) {
      await this.runtime(target).remove(old)
      await run.log({ event: 'removed', container: old.id, release: old.release, reason: 'frees the idle port' })
    }
    const services = target.appConfig.services && candidateServices(target, env.idlePort, release.serviceImages ?? {})
    const candidate = await this.runtime(target)
      .startCandidate({
        app: target.app,
        env: target.env,
        release: release.release,
        commit: release.commit,
        deployId: run.deploy.id,
        image: release.image,
        port: env.idlePort,
        services,
        variables: await appEnvironment(this.deps, target),
        container: containerSettings(target),
      })
      .catch(async (err: unknown) => {
        // A member that kept exiting as it started (a swarm's crash loop; the runtime removed the group): its
        // output goes in the log, as a candidate container's that exits does. Best effort: the disk may be full.
        if (err instanceof MemberExitedError)
          await run
            .log({ event: 'container-log', ...(services && services.length > 1 ? { service: err.service } : {}), lines: err.lastLines })
            .catch(() => undefined)
        throw err
      })
    return candidate
  }

  /**
   * Health (and smoke) checks of a group: every web member on its port, every worker by its HEALTHCHECK or by
   * staying up for `startSec`. `core`: the members that start with the group; `singletons`: its stop-first workers,
   * checked once the switch has started them. The first failure cancels the other checks and is thrown.
   */
  /** `quick`: one passing probe per web service and no smoke checks (a release that was serving a moment ago). */
  private async verify(
    run: DeployRun,
    target: Target,
    instance: Instance,
    which: 'core' | 'singletons' = 'core',
    quick = false,
  ): Promise<void> {
    const members = which === 'core' ? coreMembers(instance) : singletonsOf(instance)
    const services = servicesOf(target)
    const cancel = new AbortController()
    let failed: Member | null = null
    try {
      await Promise.all(
        members.map((m) =>
          this.verifyMember(run, target, serviceFor(services, m), instance, m, cancel.signal, quick).catch((err: unknown) => {
            failed ??= m
            cancel.abort()
            throw err
          }),
        ),
      )
    } catch (err) {
      // The output of the member that failed and of every member that died (a dead worker fails the web checks too).
      // One its restart policy has started again since is running now, but it died: its restarts tell.
      for (const m of members) {
        const dead =
          m !== failed &&
          (await this.runtime(target)
            .memberState(m)
            .then(
              (s) => !s.alive || s.restartCount > 0,
              () => true,
            ))
        if (m !== failed && !dead) continue
        const tail = await this.runtime(target)
          .logTail(m)
          .catch(() => [])
        await run.log({ event: 'container-log', ...(membersOf(instance).length > 1 ? { service: m.service } : {}), lines: tail })
      }
      throw err
    }
  }

  private async verifyMember(
    run: DeployRun,
    target: Target,
    spec: ServiceSpec,
    group: Instance,
    member: Member,
    signal: AbortSignal,
    quick: boolean,
  ): Promise<void> {
    const { health, smoke } = spec
    if (member.port === null) {
      await waitWorkerHealthy({
        state: () => this.runtime(target).memberState(member),
        startSec: health.startSec,
        deadlineMs: health.deadlineSec * 1000,
        intervalMs: health.intervalMs,
        clock: this.clock,
        signal,
      })
      await run.log({ event: 'worker-healthy', service: member.service, container: member.id })
      return
    }
    // Every address the member serves on must pass (a swarm: each node running one of its tasks).
    await Promise.all(
      hostsOf(member).map(async (host) => {
        const base = `http://${host}:${member.port}`
        await waitHealthy({
          url: joinUrl(base, health.path),
          intervalMs: health.intervalMs,
          timeoutMs: health.timeoutMs,
          healthyAfter: quick ? 1 : health.healthyAfter,
          deadlineMs: health.deadlineSec * 1000,
          clock: this.clock,
          signal,
          dockerHealth: () => this.runtime(target).engineHealth(member),
          // The group stands or falls together: a worker that dies while the web services warm up fails them too.
          containerRunning: () => this.runtime(target).isAlive(group),
          onResult: (r) => {
            if (!r.ok) run.probeFailed()
            run.note({
              event: 'health',
              port: member.port,
              ...hostField(member, host),
              ok: r.ok,
              status: r.status,
              error: r.error,
              streak: r.streak,
            })
          },
        })
        if (smoke.length > 0 && !quick) {
          const results = await runSmoke(base, smoke, health.timeoutMs)
          await run.log({ event: 'smoke', ...hostField(member, host), results })
        }
      }),
    )
  }

  /**
   * Moves traffic and the stop-first workers from `from` to `to`: nginx switches every upstream at once, then
   * `from`'s stop-first workers stop (SIGTERM, then SIGKILL after their stopTimeoutSec), then `to`'s start and must
   * become healthy — never two of them running at once. A failure puts `from` back (its upstreams, its workers)
   * before it is thrown. `standby`: `from` stays in nginx as the backup of `to` (a warm standby, `standbyOf`).
   */
  private async switchGroups(run: DeployRun, target: Target, from: Instance | null, to: Instance, standby = false): Promise<void> {
    const router = this.switchOf(target)
    let switched = false
    try {
      await routeTo(router, to, standby ? from : null)
      switched = true
      // It serves now: the CPU weight of a live release. A failure leaves it at a build's weight, which only matters
      // when the host is busy: logged, never a reason to undo a switch.
      await this.runtime(target)
        .promote(to)
        .catch((err: unknown) => run.logger.warn({ err }, 'could not give the live release its CPU weight'))
      // After the switch, not before: traffic need not wait for the old scheduler to stop (seconds on a swarm).
      if (from && singletonsOf(from).length > 0) {
        await this.runtime(target).stopSingletons(from)
        await run.log({ event: 'stopped-workers', release: from.release, services: singletonsOf(from).map((m) => m.service) })
      }
      if (singletonsOf(to).length > 0) {
        await this.runtime(target).startSingletons(to)
        await this.verify(run, target, to, 'singletons')
        await run.log({ event: 'started-workers', release: to.release, services: singletonsOf(to).map((m) => m.service) })
      }
    } catch (err) {
      await this.runtime(target)
        .stopSingletons(to)
        .catch((e: unknown) => run.logger.error({ err: e }, 'could not stop the new workers'))
      if (from) {
        if (switched) await routeTo(router, from).catch((e: unknown) => run.logger.error({ err: e }, 'could not switch back'))
        await this.runtime(target)
          .startSingletons(from)
          .catch((e: unknown) => run.logger.error({ err: e }, 'could not start the old workers'))
      }
      throw err
    }
  }

  /**
   * SWITCHING. A switch that fails leaves nginx on the old upstream (the router restores it): the old release never
   * stopped serving, so the candidate goes and the deploy is ROLLED_BACK. Answers whether nginx now routes to it.
   */
  private async switchTo(run: DeployRun, target: Target, candidate: Instance, previous: Instance | null): Promise<boolean> {
    // Until SWITCHING is journalled nothing has changed: a failure there (a full disk) is the candidate phase's.
    const journalled = await this.settle(
      run,
      'deploy_failed',
      () => run.move('SWITCHING').then(() => true),
      () => this.discard(run, target, candidate),
    )
    if (!journalled) return false
    const standby = standbyOf(target, previous)
    try {
      await this.switchGroups(run, target, previous, candidate, standby !== null)
    } catch (err) {
      await run.move('ROLLING_BACK', { error: asFailure(err, 'switch_failed') })
      await this.discard(run, target, candidate)
      await run.move('ROLLED_BACK')
      return false
    }
    await run.log({ event: 'switched', port: candidate.port, ...(standby && { standby: standby.port }) })
    return true
  }

  /**
   * The end of a healthy window with a warm standby: nginx's file names the new release alone again. A failure is
   * logged and the standby still stops (a backup that refuses is what nginx had without one).
   */
  private async unlistStandby(run: DeployRun, target: Target, live: Instance, standby: Instance): Promise<void> {
    try {
      await routeTo(this.switchOf(target), live)
      await run.log({ event: 'standby-unlisted', port: live.port, standby: standby.port, release: standby.release })
    } catch (err) {
      run.logger.warn({ err }, 'could not take the warm standby out of nginx')
      await run.log({ event: 'standby-unlist-failed', standby: standby.port, error: asFailure(err, 'switch_failed').message })
    }
  }

  /**
   * Stops the replaced release once the proxy's old workers have finished the requests they still had for it. A
   * failure here never reverts a healthy release: it is logged, and the keeper stops the instance later.
   */
  private async retireReplaced(run: DeployRun, target: Target, replaced: Instance, switchedAt?: number): Promise<void> {
    try {
      await this.retireAfterDrain(run, target, replaced, switchedAt)
    } catch (err) {
      run.logger.warn({ err, container: replaced.id }, 'could not stop the replaced release; the keeper retries')
      await run.log({
        event: 'retire-failed',
        container: replaced.id,
        release: replaced.release,
        error: asFailure(err, 'retire_failed').message,
      })
    }
  }

  /** `switchedAt`: the drain began then (a warm standby retired after OBSERVING waits only for what is left of it). */
  private async retireAfterDrain(run: DeployRun, target: Target, replaced: Instance, switchedAt?: number): Promise<void> {
    // Workers have no requests in flight to wait for.
    const workers = isWorkerOnly(target)
    const drainMs = workers ? 0 : (target.envConfig.proxy?.drainMs ?? 1000)
    const started = this.clock.now()
    const [, drained] = await Promise.all([
      this.clock.sleep(Math.max(0, drainMs - (switchedAt === undefined ? 0 : started - switchedAt))),
      (!workers && this.deps.router(target).drained?.(DRAIN_LIMIT_MS)) || Promise.resolve(false),
    ])
    await this.runtime(target).retire(replaced)
    await run.log({
      event: 'retired',
      container: replaced.id,
      release: replaced.release,
      afterMs: Math.round(this.clock.now() - started),
      proxyDrained: drained,
    })
  }

  /**
   * OBSERVING: every web service's probes and every member's life decide, unless the release's real traffic fails it
   * first (then the window ends at once with that reason); the first service that fails ends the window for all.
   * An error while watching is a failed watch, never a crash.
   */
  private async watch(run: DeployRun, target: Target, candidate: Instance, byHand: Promise<RollbackVerdict>): Promise<Verdict> {
    const services = servicesOf(target)
    const cancel = new AbortController()
    const endedByHand = byHand.then((verdict) => {
      cancel.abort()
      return verdict
    })
    const traffic = this.deps.watchTraffic?.(target, candidate) ?? null
    const failedByTraffic = traffic?.failed.then((reason): ObserveOutcome => {
      cancel.abort()
      return { healthy: false, reason }
    })
    const watchOne = async (member: Member, host: string): Promise<ObserveOutcome> => {
      const { observe: window, health } = serviceFor(services, member)
      const outcome = await (member.port === null
        ? observeWorker({
            state: () => this.runtime(target).memberState(member),
            seconds: window.seconds,
            intervalMs: window.intervalMs,
            clock: this.clock,
            signal: cancel.signal,
          })
        : this.observeWeb(run, target, candidate, member, host, window, health, cancel.signal))
      if (!outcome.healthy) cancel.abort()
      return outcome
    }
    // A group of workers only has no probes: each worker's own life decides.
    const web = membersOf(candidate).filter((m) => m.port !== null)
    const members = web.length > 0 ? web : membersOf(candidate)
    const several = members.length > 1
    // Every web service on every address it serves on (a swarm: each node): the first one failing ends the window.
    const watched = members.flatMap((m) => (m.port === null ? [{ m, host: '' }] : hostsOf(m).map((host) => ({ m, host }))))
    try {
      const probes = Promise.all(
        watched.map(({ m, host }) =>
          watchOne(m, host).then(
            (o) => namedVerdict(o, m, host, several),
            (err: unknown): ObserveOutcome => {
              if (isAbortError(err) && cancel.signal.aborted) return { healthy: true } // another check failed first
              throw err
            },
          ),
        ),
      ).then((outcomes): ObserveOutcome => outcomes.find((o) => !o.healthy) ?? { healthy: true })
      return await Promise.race([probes, endedByHand, ...(failedByTraffic ? [failedByTraffic] : [])])
    } catch (err) {
      run.logger.error({ err }, 'observing the new release failed')
      return { healthy: false, reason: `observing the new release failed: ${asFailure(err, 'observe_failed').message}` }
    } finally {
      cancel.abort()
      traffic?.stop()
    }
  }

  /** One web member's probes through the observe window; the group's every member must stay alive meanwhile. */
  private observeWeb(
    run: DeployRun,
    target: Target,
    candidate: Instance,
    member: Member,
    host: string,
    window: ServiceSpec['observe'],
    health: ServiceSpec['health'],
    signal: AbortSignal,
  ): Promise<ObserveOutcome> {
    return observe({
      url: joinUrl(`http://${host}:${member.port}`, health.path),
      seconds: window.seconds,
      intervalMs: window.intervalMs,
      timeoutMs: health.timeoutMs,
      maxFailures: window.maxFailures,
      clock: this.clock,
      signal,
      // An engine that does not answer (dockerd restarting) says nothing about the app: the probes decide.
      containerAlive: () =>
        this.runtime(target)
          .isAlive(candidate, 'all')
          .catch(() => true),
      ...(member.hosts && { deadReason: SWARM_DEAD }),
      onResult: (r) => {
        if (r.ok) return
        run.probeFailed()
        run.note({
          event: 'observe',
          service: member.service,
          ...hostField(member, host),
          ok: false,
          status: r.status,
          error: r.error,
          failures: r.failures,
        })
      },
    })
  }

  private async rollBackAutomatically(
    run: DeployRun,
    target: Target,
    bad: Instance,
    previous: Instance | null,
    verdict: { reason: string; code?: string },
    warm = false,
  ): Promise<void> {
    const { reason, code = 'observe_failed' } = verdict
    const error = { code, message: reason }
    // The release to go back to is made ready while ROLLING_BACK is journalled: both come before the switch and
    // neither needs the other (the checks read, or start a stopped release out of nginx).
    const ready = previous ? this.readyToRollBackTo(run, target, previous, warm) : null
    ready?.catch(() => undefined) // awaited below; must not go unhandled meanwhile
    await run.move('ROLLING_BACK', { error })
    if (!previous) {
      await run.move('FAILED', {
        error: { code, message: `${reason}; there is no previous release to roll back to, so it stays live` },
      })
      return
    }
    try {
      await ready
      await this.switchGroups(run, target, bad, previous)
      await run.log({ event: 'switched', port: previous.port, rollback: true })
    } catch (err) {
      const failure = asFailure(err, 'rollback_failed')
      run.logger.error({ err }, 'automatic rollback failed')
      await run.move('FAILED', { error: { code: 'rollback_failed', message: `${reason}; rolling back failed too: ${failure.message}` } })
      return
    }
    this.deps.onLive?.(target, liveRelease(previous))
    await this.retireReplaced(run, target, bad)
    await run.move('ROLLED_BACK', { error })
  }

  private async readyToRollBackTo(run: DeployRun, target: Target, previous: Instance, warm: boolean): Promise<void> {
    // A warm standby served seconds ago: one passing probe, read beside Docker's word that it runs, is proof enough.
    if (warm) {
      const exited = (err: unknown) => err instanceof AgentError && err.code === 'container_exited'
      const ready = await this.verify(run, target, previous, 'core', true).then(
        () => true,
        (err: unknown) => (exited(err) ? false : Promise.reject(err)),
      )
      if (ready) return
    }
    // A standby that died (its output is in the log) or a release stopped after the drain: started and checked in full.
    const alive = await this.runtime(target).isAlive(previous)
    if (!alive) await this.runtime(target).revive(previous)
    await this.verify(run, target, previous, 'core', alive && !warm)
  }

  private async finishLive(run: DeployRun, target: Target, live: Instance): Promise<void> {
    this.deps.onLive?.(target, liveRelease(live))
    await this.prune(run, target, live).catch((err) => run.logger.warn({ err }, 'pruning old releases failed; they stay'))
    await run.move('SUCCEEDED')
  }

  /** Removes what `keepReleases` no longer keeps; the deploy has succeeded whatever happens here. */
  private async prune(run: DeployRun, target: Target, live: Instance): Promise<void> {
    const [images, instances] = await Promise.all([this.runtime(target).releases(target), this.runtime(target).instances(target)])
    const plan = planPrune({
      images,
      instances,
      livePort: live.port,
      liveDeployId: live.deployId,
      keepReleases: target.appConfig.keepReleases,
    })
    for (const c of plan.containers) {
      const instance = instances.find((i) => i.id === c.id)
      if (instance) await this.runtime(target).remove(instance)
      await run.log({ event: 'pruned', container: c.id, release: c.release, reason: c.reason })
    }
    for (const img of plan.images) {
      // The images of services with their own build go with the release's (a missing one is fine).
      for (const s of servicesOf(target).filter((x) => x.build))
        await this.runtime(target).removeImage(imageTag(target.app, target.env, img.release, s.name))
      await this.runtime(target).removeImage(img.ref)
      await run.log({ event: 'pruned', image: img.ref, release: img.release, reason: img.reason })
    }
  }

  /**
   * A manual rollback: the kept image of `ref` (a release name) on the idle port — its stopped container when it
   * is still there — verified, switched in and observed like a deploy. Until the switch a failure leaves it
   * stopped, as a standby; once switched, a release that goes bad in the observe window is rolled back to the one
   * that was live before the rollback.
   */
  private async rollBackByHand(run: DeployRun, target: Target): Promise<void> {
    const release = run.deploy.ref
    const kept = await this.runtime(target).releaseImage(target, release)
    if (!kept) throw new NotFoundError(`release ${release} has no kept image`)
    // A release is kept only when every image of it is: a service with its own build needs its own too.
    const serviceImages: Record<string, string> = {}
    for (const s of servicesOf(target).filter((x) => x.build)) {
      const image = await this.runtime(target).releaseImage(target, release, s.name)
      if (!image) throw new NotFoundError(`release ${release} has no kept image of service ${s.name}`)
      serviceImages[s.name] = image.ref
    }
    const env = await observeEnv(this.runtime(target), this.switchOf(target), target)
    await run.move('STARTING', { commit: kept.commit, release, details: startDetails(env) })
    // Its stopped group, when still there: on the idle port, or (workers only, no port) any group but the live one.
    const keptHere = (i: Instance) => (env.idlePort === null ? i !== env.live && i.port === null : i.port === env.idlePort)
    let candidate: Instance | null = env.instances.find((i) => keptHere(i) && i.release === release) ?? null
    const switched = await this.settle(
      run,
      'rollback_failed',
      async () => {
        if (candidate) {
          // The stopped container of that release is still there: starting it is the fast path.
          if (!candidate.running) await this.runtime(target).revive(candidate)
          await run.log({ event: 'revived', container: candidate.id, release })
        } else {
          candidate = await this.startOnIdlePort(run, target, env, {
            image: runnableImage(target, kept),
            release,
            commit: kept.commit,
            serviceImages,
          })
          await run.log({ event: 'started', container: candidate.id, port: candidate.port, release })
        }
        await run.move('VERIFYING', { details: { candidateContainer: candidate.id } })
        await this.verify(run, target, candidate)
        await run.move('SWITCHING')
        await this.switchGroups(run, target, env.live, candidate, standbyOf(target, env.live) !== null)
        return candidate
      },
      async () => {
        if (candidate)
          await this.runtime(target)
            .retire(candidate)
            .catch(() => undefined)
      },
    )
    if (!switched) return
    const standby = standbyOf(target, env.live)
    await run.log({ event: 'switched', port: switched.port, ...(standby && { standby: standby.port }) })
    // A kept release is no proof it still works (a dependency moved since): the same window as a deploy decides.
    await this.observeSwitched(run, target, switched, env.live)
  }

  /**
   * Drives a deploy the agent was running when it stopped to a safe end state, from what the engine and nginx
   * show. Returns true when the deploy had not started yet and should simply be queued again.
   */
  async recover(deploy: Deploy, target: Target): Promise<boolean> {
    const run = this.startRun(deploy, target)
    const router = this.switchOf(target)
    const env = await observeEnv(this.runtime(target), router, target)
    const candidateId = deploy.details.candidateContainer
    const candidates = env.instances.filter((i) => i.deployId === deploy.id || i.id === candidateId)
    // The replaced group: on the port it served from, or (workers only) by its deploy id.
    const wasPrevious = (i: Instance) =>
      i.port === null ? i.deployId === deploy.details.previousDeploy : i.port === deploy.details.previousPort
    const previous = env.instances.find((i) => wasPrevious(i) && !candidates.includes(i)) ?? null
    const candidate = candidates[0]
    const candidateHealthy =
      candidate !== undefined &&
      isRouted(candidate, env) &&
      (await this.verify(run, target, candidate).then(
        () => true,
        () => false,
      ))
    const plan = planRecovery(deploy, { routedPort: env.routedPort, handedTo: env.handedTo, candidates, previous, candidateHealthy })
    run.logger.warn({ plan: describePlan(plan) }, 'recovering an interrupted deploy')
    await run.log({ event: 'recovery', plan: describePlan(plan) })
    await executeSteps(plan.steps, {
      runtime: this.runtime(target),
      router,
      verify: (instance) => this.verify(run, target, instance),
      done: (step, text) => run.log({ event: 'recovery-step', do: step.do, step: text, cause: step.cause }),
    })
    const live = plan.steps.findLast((s) => s.do === 'switch')?.instance
    if (live) this.deps.onLive?.(target, liveRelease(live))
    for (const [i, state] of plan.path.entries())
      await run.move(state, i === plan.path.length - 1 && plan.error ? { error: plan.error } : {})
    return plan.requeue
  }

  /** Removes a candidate that will not serve; its log lines are best effort (the disk may be what failed). */
  private async discard(run: DeployRun, target: Target, candidate: Instance): Promise<void> {
    const tail = await this.runtime(target)
      .logTail(candidate)
      .catch(() => [])
    if (tail.length > 0) await run.log({ event: 'container-log', lines: tail }).catch(() => undefined)
    await this.runtime(target)
      .remove(candidate)
      .catch((err) => run.logger.error({ err }, 'could not remove the candidate'))
    await run.log({ event: 'removed', container: candidate.id, reason: 'candidate discarded' }).catch(() => undefined)
  }
}

/**
 * A failed watch names its service (a group of several) and its address (a member on several nodes); a group that
 * died (SWARM_DEAD) is no one address's failure.
 */
function namedVerdict(o: ObserveOutcome, m: Member, host: string, several: boolean): ObserveOutcome {
  if (o.healthy) return o
  const names = [several ? m.service : '', m.hosts && o.reason !== SWARM_DEAD ? `on ${host}` : ''].filter(Boolean)
  return names.length === 0 ? o : { healthy: false, reason: `${names.join(' ')}: ${o.reason}` }
}

/**
 * The release a switch keeps in nginx as the backup of the new one while it is observed: the replaced one when
 * `observe.warmStandby` is on and it has a port (a group of workers only has no nginx). nginx retries on it what
 * the new release fails, so clients do not see the bad window.
 */
function standbyOf(target: Target, replaced: Instance | null): Instance | null {
  return target.appConfig.observe.warmStandby && replaced !== null && replaced.port !== null ? replaced : null
}

/** Names the address of a probe in the log when the member serves on several (a swarm). */
function hostField(member: Member, host: string): { host?: string } {
  return member.hosts === undefined ? {} : { host }
}

/** The config of a member's service; a member of a service no longer configured gets the primary's checks. */
function serviceFor(services: ServiceSpec[], member: Member): ServiceSpec {
  return services.find((s) => s.name === member.service) ?? (services[0] as ServiceSpec)
}

/** The details STARTING records: where the candidate goes and which group it replaces (recovery reads them). */
function startDetails(env: EnvView) {
  return {
    candidatePort: env.idlePort,
    previousPort: env.live?.port ?? null,
    previousRelease: env.live?.release ?? null,
    // A group of workers only has no port: its deploy id names it.
    ...(env.live && env.live.port === null ? { previousDeploy: env.live.deployId } : {}),
  }
}

/** The members a candidate on `primaryPort`'s slot gets: every web service on its port of that slot (none: workers). */
function candidateServices(target: Target, primaryPort: number | null, images: Record<string, string>) {
  const slot = primaryPort === null ? -1 : primaryPorts(target).indexOf(primaryPort)
  return servicesOf(target).map((s) => ({
    image: images[s.name],
    name: s.name,
    kind: s.kind,
    port: s.ports?.[slot] ?? null,
    command: s.command,
    order: s.order,
    stopTimeoutSec: s.stopTimeoutSec,
    index: s.index,
    container: containerSettings(target, s.name),
  }))
}
