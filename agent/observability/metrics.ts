// prom-client metrics on a registry owned by the app (no global default registry), so tests and several
// agents in one process do not share counters.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

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

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'deploy_agent_' })
  }

  text(): Promise<string> {
    return this.registry.metrics()
  }

  get contentType(): string {
    return this.registry.contentType
  }
}

/** Feeds the backup metrics from the backup service's events. */
export function recordBackup(metrics: Metrics, e: { target: { app: string; env: string }; kind: string; manifest?: { bytes: number; verified: { ok: boolean } | null }; error?: unknown; durationMs: number }): void {
  const { app, env } = e.target
  const result = e.error ? 'failed' : e.manifest?.verified?.ok ? 'ok' : 'unverified'
  metrics.backups.inc({ app, env, kind: e.kind, result })
  metrics.backupDuration.observe({ app, env, kind: e.kind }, e.durationMs / 1000)
  if (e.manifest) metrics.backupBytes.set({ app, env }, e.manifest.bytes)
  if (result === 'ok') metrics.backupLastSuccess.set({ app, env }, Date.now() / 1000)
}
