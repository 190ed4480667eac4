// What the HTTP surface needs from the rest of the agent. buildApp decorates the fastify instance with it
// (`app.deps`), and each route file reads it from there: routes depend on this file, never on app.ts.
import type { Authenticator } from '../auth/authenticator.js'
import type { BackupService } from '../backup/service.js'
import type { Config } from '../config/schema.js'
import type { Deployments } from '../deploy/coordinator.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import type { PitrService } from '../pitr/service.js'
import type { DeployStore } from '../store/deploys.js'

export interface AppDeps {
  config: Config
  authenticator: Authenticator
  deploys: DeployStore
  deployments: Deployments
  backups: Backups
  /** Point-in-time recovery; absent in an agent built without it (its route then answers pitr_disabled). */
  pitr?: Pick<PitrService, 'restore' | 'prune' | 'enabled' | 'status' | 'statuses'>
  metrics: Metrics
  logger: Logger
  version: string
  startedAt: Date
  /** The shared scrubber's text form: what the agent sends out of the app's own output goes through it. */
  scrub: (text: string) => string
}

/** What the HTTP surface asks of the backup side. */
export type Backups = Pick<
  BackupService,
  'newId' | 'take' | 'list' | 'recentFailures' | 'verify' | 'prune' | 'restore' | 'restoreTarget' | 'ownerOf' | 'targets' | 'lastBackup'
>

declare module 'fastify' {
  interface FastifyInstance {
    deps: AppDeps
  }
}
