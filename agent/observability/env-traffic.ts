// The live traffic of every env with `proxy.accessLog`: one tailer per env, started with the agent and kept in step
// with the config (SIGHUP). Each logged request is counted for the metric; during OBSERVING the new release's
// error rate can end the window early (`check`); after it, the live release's errors raise `observe.alert`s.
import type { Config } from '../config/schema.js'
import { envPorts } from '../config/services.js'
import type { Target } from '../config/targets.js'
import {
  classifyAnswers,
  isError,
  parseAccessLine,
  ReleaseTraffic,
  TrafficAlerts,
  type AccessRecord,
  type ResponseClass,
} from '../health/traffic.js'
import type { Notice } from '../notify/notifier.js'
import { AccessLogTail } from '../proxy/access-log.js'
import type { Logger } from './logger.js'
import type { Metrics } from './metrics.js'

export interface EnvTrafficDeps {
  logger: Logger
  metrics?: Pick<Metrics, 'upstreamResponses'>
  notify?: (notice: Notice) => void
  /** The env's live release (the one nginx routes to once a deploy has ended). */
  live: (app: string, env: string) => { release: string; port: number | null } | null
  pollMs?: number
}

/** A running OBSERVING check: `failed` resolves with the reason once the new release's error rate is too high. */
export interface TrafficCheck {
  failed: Promise<string>
  stop(): void
}

/** The longest answers wait for the release on their port to be known (the drain after a switch is shorter). */
const PENDING_MS = 60_000

type EnvSettings = Pick<Target, 'app' | 'env' | 'appConfig' | 'envConfig'>

class EnvTraffic {
  private readonly tail: AccessLogTail
  /** One sliding window per port of the env (bounded: the env's own ports), so a check also sees the drain. */
  private windows = new Map<number, ReleaseTraffic>()
  private alerts: TrafficAlerts | null = null
  private observing: { ports: number[]; release: string; fail: (reason: string) => void } | null = null
  /** The release last seen on each port, for the metric's label. */
  private readonly releases = new Map<number, string>()
  /**
   * Answers of an env port whose release is not known yet (the new release between the switch and OBSERVING),
   * held for their label until it is, at most PENDING_MS. Bounded: the env's ports × the classes.
   */
  private readonly pending = new Map<number, { since: number; counts: Map<ResponseClass, number> }>()
  private settings!: EnvSettings

  constructor(
    readonly path: string,
    settings: EnvSettings,
    private readonly deps: EnvTrafficDeps,
  ) {
    this.configure(settings)
    this.tail = new AccessLogTail({
      path,
      pollMs: deps.pollMs,
      logger: deps.logger.child({ app: settings.app, env: settings.env }),
      onLine: (line) => {
        const record = parseAccessLine(line)
        if (record) this.count(record)
      },
    })
  }

  start(): Promise<void> {
    return this.tail.start()
  }

  async stop(): Promise<void> {
    this.observing = null
    await this.tail.stop()
    this.flushPending(Infinity)
  }

  /** New limits or ports (a config reload) start the windows and alerts afresh. */
  configure(settings: EnvSettings): void {
    const { maxErrorRate, minRequests, alert } = settings.appConfig.observe
    const before = this.settings?.appConfig.observe
    const changed =
      !before ||
      before.maxErrorRate !== maxErrorRate ||
      before.minRequests !== minRequests ||
      JSON.stringify(before.alert) !== JSON.stringify(alert) ||
      envPorts(this.settings.envConfig).join() !== envPorts(settings.envConfig).join()
    this.settings = settings
    if (!changed) return
    this.windows = new Map(envPorts(settings.envConfig).map((p) => [p, new ReleaseTraffic(p, { maxErrorRate, minRequests })]))
    this.alerts = alert && (alert.errorsPerMinute !== undefined || alert.downMinutes !== undefined) ? new TrafficAlerts(alert) : null
  }

  /** Watches the new release's ports (one per web service) until `stop`. */
  check(ports: number[], release: string): TrafficCheck {
    let fail: (reason: string) => void = () => undefined
    const failed = new Promise<string>((resolve) => (fail = resolve))
    const observing = { ports, release, fail }
    this.observing = observing
    for (const port of ports) this.releases.set(port, release)
    this.flushPending(Date.now())
    return {
      failed,
      stop: () => {
        if (this.observing !== observing) return
        this.observing = null
        // The next live release is judged by its own traffic, not the one before it.
        this.alerts = this.alerts && new TrafficAlerts(this.settings.appConfig.observe.alert ?? {})
      },
    }
  }

  private releaseOn(port: number | null): string {
    if (port === null) return this.observing?.release ?? this.live()?.release ?? 'unknown'
    if (this.observing?.ports.includes(port)) return this.observing.release
    const live = this.live()
    if (live?.port === port) this.releases.set(port, live.release)
    return this.releases.get(port) ?? 'unknown'
  }

  private live(): { release: string; port: number | null } | null {
    return this.deps.live(this.settings.app, this.settings.env)
  }

  private count(record: AccessRecord): void {
    const { app, env } = this.settings
    const now = Date.now()
    this.flushPending(now)
    for (const answer of classifyAnswers(record)) {
      const release = this.releaseOn(answer.port)
      if (release === 'unknown' && answer.port !== null && this.windows.has(answer.port)) {
        const held = this.pending.get(answer.port) ?? { since: now, counts: new Map<ResponseClass, number>() }
        held.counts.set(answer.class, (held.counts.get(answer.class) ?? 0) + 1)
        this.pending.set(answer.port, held)
      } else this.deps.metrics?.upstreamResponses.inc({ app, env, release, class: answer.class })
    }
    let verdict: string | null = null
    for (const [port, window] of this.windows) {
      const reason = window.record(record)
      if (reason !== null && this.observing?.ports.includes(port)) verdict = reason
    }
    if (this.observing && verdict !== null) {
      this.observing.fail(verdict)
      return
    }
    if (!this.observing && this.alerts) this.alert(record)
  }

  /** Counts held for a port go out once its release is known, or as `unknown` after PENDING_MS. */
  private flushPending(now: number): void {
    const { app, env } = this.settings
    for (const [port, held] of this.pending) {
      const release = this.releaseOn(port)
      if (release === 'unknown' && now - held.since < PENDING_MS) continue
      this.pending.delete(port)
      for (const [cls, n] of held.counts) this.deps.metrics?.upstreamResponses.inc({ app, env, release, class: cls }, n)
    }
  }

  /** After OBSERVING: the live release's answers (and nginx's own errors) feed the alerts. */
  private alert(record: AccessRecord): void {
    const live = this.live()
    if (!live || !this.alerts) return
    for (const answer of classifyAnswers(record)) {
      if (answer.port !== live.port && answer.port !== null) continue
      for (const a of this.alerts.record(record.atMs, isError(answer.class))) {
        this.deps.logger.warn({ app: this.settings.app, env: this.settings.env, release: live.release, reason: a.reason }, 'traffic alert')
        this.deps.notify?.({
          event: a.kind === 'errors' ? 'traffic.errors' : 'traffic.down',
          app: this.settings.app,
          env: this.settings.env,
          release: live.release,
          reason: a.reason,
        })
      }
    }
  }
}

export class TrafficWatch {
  private readonly envs = new Map<string, EnvTraffic>()

  constructor(private readonly deps: EnvTrafficDeps) {}

  /** Starts a tailer for each env with an accessLog, stops those whose accessLog went away or moved. */
  async sync(config: Config): Promise<void> {
    const wanted = new Map<string, EnvSettings & { path: string }>()
    for (const [app, appConfig] of Object.entries(config.apps))
      for (const [env, envConfig] of Object.entries(appConfig.envs)) {
        const path = envConfig.proxy?.accessLog
        if (path) wanted.set(`${app}/${env}`, { app, env, appConfig, envConfig, path })
      }
    for (const [key, running] of this.envs) {
      const want = wanted.get(key)
      if (want?.path === running.path) continue
      this.envs.delete(key)
      await running.stop()
      this.deps.logger.info({ env: key, path: running.path }, 'stopped following the access log')
    }
    for (const [key, want] of wanted) {
      const running = this.envs.get(key)
      if (running) {
        running.configure(want)
        continue
      }
      const traffic = new EnvTraffic(want.path, want, this.deps)
      this.envs.set(key, traffic)
      await traffic.start()
      this.deps.logger.info({ app: want.app, env: want.env, path: want.path }, 'following the access log')
    }
  }

  /** Judges the release on `port` by its traffic until stopped; null when the env has no accessLog. */
  /** `candidate`: the new release; every web member's port is watched (the primary's alone without members). */
  check(
    target: { app: string; env: string },
    candidate: { port: number | null; release: string; members?: Array<{ port: number | null }> },
  ): TrafficCheck | null {
    const ports = (candidate.members ?? [candidate]).flatMap((m) => (m.port === null ? [] : [m.port]))
    return this.envs.get(`${target.app}/${target.env}`)?.check(ports, candidate.release) ?? null
  }

  async close(): Promise<void> {
    const running = [...this.envs.values()]
    this.envs.clear()
    await Promise.all(running.map((e) => e.stop()))
  }
}
