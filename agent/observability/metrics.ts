// prom-client metrics on a registry owned by the app (no global default registry), so tests and several
// agents in one process do not share counters.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { isTerminal } from '../store/deploy-states.js'
import { endedByUnconfirmedReload, type DeployEvent } from './deploy-feed.js'
import type { Deploy } from '../store/deploys.js'

/** One env as the deploy side sees it at a scrape: deploys waiting in its lane and its live release. */
export interface EnvSnapshot {
  app: string
  env: string
  queued: number
  /** `nodes`: a swarm env's nodes serving it. */
  live: { release: string; commit: string; nodes?: string[] } | null
}

/** One PITR env as the metrics read it. */
export interface PitrSnapshot {
  app: string
  env: string
  receiveLagBytes: number | null
  walStatus: string | null
  safeWalSize: number | null
  walDiskFreeBytes: number | null
  receiver: { streaming: boolean }
}

export class Metrics {
  readonly registry = new Registry()
  readonly httpRequests = new Counter({
    name: 'deploy_agent_http_requests_total',
    help: 'HTTP requests answered, by route and status code',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  })
  readonly authFailures = new Counter({
    name: 'deploy_agent_auth_failures_total',
    help: 'Refused authentications, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })

  readonly backups = new Counter({
    name: 'deploy_agent_backups_total',
    help: 'Backups taken, by kind and result (ok, unverified, failed)',
    labelNames: ['app', 'env', 'kind', 'result'] as const,
    registers: [this.registry],
  })
  readonly backupLastSuccess = new Gauge({
    name: 'deploy_agent_backup_last_success_timestamp_seconds',
    help: 'When the last verified backup of the env completed',
    labelNames: ['app', 'env'] as const,
    registers: [this.registry],
  })
  readonly backupBytes = new Gauge({
    name: 'deploy_agent_backup_last_bytes',
    help: 'Size of the last backup of the env',
    labelNames: ['app', 'env'] as const,
    registers: [this.registry],
  })
  readonly backupDuration = new Histogram({
    name: 'deploy_agent_backup_duration_seconds',
    help: 'Time to take and verify a backup',
    labelNames: ['app', 'env', 'kind'] as const,
    buckets: [1, 5, 15, 60, 300, 900, 3600],
    registers: [this.registry],
  })

  readonly deploys = new Counter({
    name: 'deploy_agent_deploys_total',
    help: 'Deploys and rollbacks that ended, by kind (deploy, rollback) and terminal state',
    labelNames: ['app', 'env', 'kind', 'result'] as const,
    registers: [this.registry],
  })
  readonly deployPhaseDuration = new Histogram({
    name: 'deploy_agent_deploy_phase_duration_seconds',
    help: 'Time a deploy spent in each state, observed when it leaves the state',
    labelNames: ['app', 'env', 'phase'] as const,
    buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800],
    registers: [this.registry],
  })
  readonly rollbacks = new Counter({
    name: 'deploy_agent_rollbacks_total',
    help: 'Rollbacks that put an earlier release back: automatic (a deploy ended ROLLED_BACK) or manual (a rollback succeeded)',
    labelNames: ['app', 'env', 'trigger'] as const,
    registers: [this.registry],
  })
  readonly healthCheckFailures = new Counter({
    name: 'deploy_agent_health_check_failures_total',
    help: 'Failed health probes of deploys, by the state the deploy was in (VERIFYING, OBSERVING, ROLLING_BACK)',
    labelNames: ['app', 'env', 'phase'] as const,
    registers: [this.registry],
  })
  readonly proxyReloadUnconfirmed = new Counter({
    name: 'deploy_agent_proxy_reload_unconfirmed_total',
    help: 'Deploys and rollbacks ended by an nginx reload whose new workers never appeared (proxy.pidFile set)',
    labelNames: ['app', 'env'] as const,
    registers: [this.registry],
  })
  readonly upstreamResponses = new Counter({
    name: 'deploy_agent_upstream_responses_total',
    help: "Answers of each env's releases through nginx, read from proxy.accessLog, by class (1xx to 5xx, upstream-error)",
    labelNames: ['app', 'env', 'release', 'class'] as const,
    registers: [this.registry],
  })
  readonly deployQueueLength = new Gauge({
    name: 'deploy_agent_deploy_queue_length',
    help: "Deploys waiting in the env's lane behind the running one",
    labelNames: ['app', 'env'] as const,
    registers: [this.registry],
    collect: () => {
      this.deployQueueLength.reset()
      for (const { app, env, queued } of this.envs()) this.deployQueueLength.set({ app, env }, queued)
    },
  })
  readonly releaseInfo = new Gauge({
    name: 'deploy_agent_release_info',
    help: 'The live release of each env (value 1)',
    labelNames: ['app', 'env', 'release', 'commit'] as const,
    registers: [this.registry],
    collect: () => {
      this.releaseInfo.reset()
      for (const { app, env, live } of this.envs())
        if (live) this.releaseInfo.set({ app, env, release: live.release, commit: live.commit }, 1)
    },
  })

  readonly releaseNodes = new Gauge({
    name: 'deploy_agent_release_node_info',
    help: "A swarm env: each node (by address) serving the live release's primary web service (value 1)",
    labelNames: ['app', 'env', 'release', 'node'] as const,
    registers: [this.registry],
    collect: () => {
      this.releaseNodes.reset()
      for (const { app, env, live } of this.envs())
        for (const node of live?.nodes ?? []) this.releaseNodes.set({ app, env, release: live?.release ?? '', node }, 1)
    },
  })
  readonly pitrReceiveLag: Gauge<'app' | 'env'> = new Gauge({
    name: 'deploy_agent_pitr_receive_lag_bytes',
    help: "WAL the database server wrote that the env's pg_receivewal has not flushed yet (at the last check)",
    labelNames: ['app', 'env'] as const,
    registers: [this.registry],
    collect: (): void => this.setPitr(this.pitrReceiveLag, (s) => s.receiveLagBytes),
  })
  readonly pitrSlotWalStatus = new Gauge({
    name: 'deploy_agent_pitr_slot_wal_status',
    help: "1 for the env's replication slot wal_status (reserved, extended, unreserved, lost, or missing)",
    labelNames: ['app', 'env', 'status'] as const,
    registers: [this.registry],
    collect: () => {
      this.pitrSlotWalStatus.reset()
      for (const s of this.pitr()) if (s.walStatus !== null) this.pitrSlotWalStatus.set({ app: s.app, env: s.env, status: s.walStatus }, 1)
    },
  })
  readonly pitrSlotSafeWalSize: Gauge<'app' | 'env'> = new Gauge({
    name: 'deploy_agent_pitr_slot_safe_wal_size_bytes',
    help: "WAL the server may still write before the env's slot is lost (max_slot_wal_keep_size; absent without it)",
    labelNames: ['app', 'env'] as const,
    registers: [this.registry],
    collect: (): void => this.setPitr(this.pitrSlotSafeWalSize, (s) => s.safeWalSize),
  })
  readonly pitrWalDiskFree: Gauge<'app' | 'env'> = new Gauge({
    name: 'deploy_agent_pitr_wal_disk_free_bytes',
    help: "Free space on the filesystem of the env's WAL dir",
    labelNames: ['app', 'env'] as const,
    registers: [this.registry],
    collect: (): void => this.setPitr(this.pitrWalDiskFree, (s) => s.walDiskFreeBytes),
  })
  readonly pitrReceiverUp: Gauge<'app' | 'env'> = new Gauge({
    name: 'deploy_agent_pitr_receiver_up',
    help: "1 while the env's pg_receivewal streams from its slot, else 0",
    labelNames: ['app', 'env'] as const,
    registers: [this.registry],
    collect: (): void => this.setPitr(this.pitrReceiverUp, (s) => (s.receiver.streaming ? 1 : 0)),
  })

  /** Read at every scrape, so a replaced live release leaves no stale label set behind. */
  private envs: () => EnvSnapshot[] = () => []
  /** Each PITR env as last checked (the checks run on their own timer: a scrape never queries a database). */
  private pitr: () => PitrSnapshot[] = () => []

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'deploy_agent_' })
  }

  /** The deploy side's per-env view (queue length, live release). */
  watchEnvs(source: () => EnvSnapshot[]): void {
    this.envs = source
  }

  /** The PITR side's per-env health. */
  watchPitr(source: () => PitrSnapshot[]): void {
    this.pitr = source
  }

  private setPitr(gauge: Gauge<'app' | 'env'>, value: (s: PitrSnapshot) => number | null): void {
    gauge.reset()
    for (const s of this.pitr()) {
      const v = value(s)
      if (v !== null) gauge.set({ app: s.app, env: s.env }, v)
    }
  }

  text(): Promise<string> {
    return this.registry.metrics()
  }

  get contentType(): string {
    return this.registry.contentType
  }
}

/** Feeds the backup metrics from the backup service's events. */
export function recordBackup(
  metrics: Metrics,
  e: {
    target: { app: string; env: string }
    kind: string
    manifest?: { bytes: number; verified: { ok: boolean } | null }
    error?: unknown
    durationMs: number
  },
): void {
  const { app, env } = e.target
  const result = e.error ? 'failed' : e.manifest?.verified?.ok ? 'ok' : 'unverified'
  metrics.backups.inc({ app, env, kind: e.kind, result })
  metrics.backupDuration.observe({ app, env, kind: e.kind }, e.durationMs / 1000)
  if (e.manifest) metrics.backupBytes.set({ app, env }, e.manifest.bytes)
  if (result === 'ok') metrics.backupLastSuccess.set({ app, env }, Date.now() / 1000)
}

/** Seconds spent in the state a deploy just left: the last two entries of its state trail. */
function secondsInPreviousState(deploy: Deploy, was: string): number | null {
  const [entered, left] = deploy.states.slice(-2)
  if (!entered || !left || entered.state !== was) return null
  const seconds = (Date.parse(left.at) - Date.parse(entered.at)) / 1000
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null
}

/** Feeds the deploy metrics from the deploy listener (every state change and failed probe). */
export function recordDeploy(metrics: Metrics, e: DeployEvent): void {
  const { app, env, kind, state } = e.deploy
  if (e.type === 'probe_failed') {
    metrics.healthCheckFailures.inc({ app, env, phase: e.phase })
    return
  }
  const seconds = secondsInPreviousState(e.deploy, e.was)
  if (seconds !== null) metrics.deployPhaseDuration.observe({ app, env, phase: e.was }, seconds)
  if (!isTerminal(state)) return
  metrics.deploys.inc({ app, env, kind, result: state })
  if (endedByUnconfirmedReload(e)) metrics.proxyReloadUnconfirmed.inc({ app, env })
  if (state === 'ROLLED_BACK') metrics.rollbacks.inc({ app, env, trigger: 'automatic' })
  else if (kind === 'rollback' && state === 'SUCCEEDED') metrics.rollbacks.inc({ app, env, trigger: 'manual' })
}
