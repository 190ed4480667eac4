// The agent process: load and check everything first (exit non-zero without listening on any problem), then
// listen; SIGHUP reloads the keyring (and teaches the scrubber its secrets), SIGTERM/SIGINT close gracefully.
import type { FastifyInstance } from 'fastify'
import { Authenticator } from '../auth/authenticator.js'
import { loadKeyring } from '../auth/keyring.js'
import { loadConfig } from '../config/load.js'
import { BackupService } from '../backup/service.js'
import { assembleDeploys } from '../deploy/assemble.js'
import { containerCpuShareWarning } from '../docker/cpu-share.js'
import { DockerEngine } from '../docker/engine.js'
import { buildApp } from '../http/app.js'
import { listenProxySocket } from '../http/socket.js'
import { loadTlsFiles } from '../http/tls.js'
import { CronJob } from '../schedule/nightly.js'
import { createLogger, type Logger } from '../observability/logger.js'
import { Notifier, reloadUnconfirmedNotice } from '../notify/notifier.js'
import { TrafficWatch } from '../observability/env-traffic.js'
import { Metrics, recordBackup, recordDeploy } from '../observability/metrics.js'
import { Scrubber } from '../observability/scrub.js'
import { backupReport, createErrorReporter, deployReport, knownSecrets, type ErrorReport } from '../observability/sentry.js'
import { ensureDir } from '../files.js'
import { PitrService } from '../pitr/service.js'
import { StateStore } from '../store/index.js'
import { VERSION } from '../version.js'

/** How often the agent checks that every env's live release still runs. */
const KEEP_LIVE_EVERY_MS = 5_000

export interface RunningAgent {
  app: FastifyInstance
  url: string
  close(): Promise<void>
}

function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

export async function startAgent(configPath: string, logger: Logger = createLogger()): Promise<RunningAgent> {
  const startedAt = new Date()
  const config = await loadConfig(configPath)
  const keyring = await loadKeyring(config)
  const https = await loadTlsFiles(config.listen)
  await ensureDir(config.stateDir)
  // One scrubber for everything that leaves: deploy records and logs, notifications, backup failures, Sentry.
  const scrubber = new Scrubber(await knownSecrets(config))
  const store = await StateStore.open(config.stateDir, {
    deploys: {
      onTornLine: (info) => logger.warn({ line: info.line, tail: info.tail }, 'journal had a torn line (power cut?); it was skipped'),
      scrub: scrubber,
    },
  })
  const metrics = new Metrics()
  const notifier = new Notifier(config.notify, logger, scrubber)
  const reporter = createErrorReporter(config, logger, VERSION, scrubber)
  const report = (found: ErrorReport | null) => {
    if (found) reporter.capture(found.err, found.tags)
  }
  const backups = new BackupService({
    config,
    logger,
    scrub: (text) => scrubber.text(text),
    onBackup: (event) => {
      recordBackup(metrics, event)
      report(backupReport(event, deployments.liveRelease(event.target.app, event.target.env)?.release ?? null))
      if (event.error)
        notifier.send({ event: 'backup.failed', app: event.target.app, env: event.target.env, reason: describeError(event.error) })
    },
    // No catch: when the kept releases cannot be read (Docker down), retention fails rather than guess the pins.
    keptReleases: async (target) => new Set((await deployments.releases(target)).map((r) => r.release)),
  })
  // A backup dir that cannot be read fails only the backups, never the agent.
  await backups.open().catch((err) => logger.error({ err }, 'could not open the backup dir'))
  // Counts each env's answers through nginx from its access log; `deployments` is read only once lines arrive.
  const traffic = new TrafficWatch({
    logger,
    metrics,
    notify: (notice) => notifier.send(notice),
    live: (app, env) => deployments.liveRelease(app, env),
  })
  // PITR starts its receivers after the agent listens; an unreachable database is retried in the background.
  const pitr = new PitrService({
    config,
    logger,
    backups,
    deployPoint: (target, id) => {
      const deploy = store.deploys.get(id)
      if (!deploy || deploy.app !== target.app || deploy.env !== target.env) return undefined
      return { restorePoint: deploy.details.restorePoint, lsn: deploy.details.lsn }
    },
    notify: (notice) => notifier.send(notice),
  })
  const docker = new DockerEngine()
  // The two sides need each other; the backup callbacks above run only once backups run, after this line.
  const deployments = await assembleDeploys(config, store.deploys, logger, {
    docker,
    backups,
    pitr,
    notify: (notice) => notifier.send(notice),
    onDeployEvent: (event) => {
      recordDeploy(metrics, event)
      report(deployReport(event))
      const reload = reloadUnconfirmedNotice(event)
      if (reload) notifier.send(reload)
    },
    learnSecrets: (values) => scrubber.learn(values),
    watchTraffic: (target, candidate) => traffic.check(target, candidate),
  })
  await traffic.sync(config)
  metrics.watchEnvs(() => deployments.envSnapshot())
  metrics.watchPitr(() => pitr.statuses())
  const nightly = new CronJob({
    name: 'nightly-backups',
    expression: config.backups.schedule,
    run: async () => {
      const { failed } = await backups.nightly()
      // PITR's base backups and WAL follow the same retention, on the same night.
      const pitrRetention = await pitr.pruneAll()
      if (failed > 0) throw new Error(`${failed} nightly backup(s) failed`)
      if (pitrRetention.failed > 0) throw new Error(`PITR retention failed for ${pitrRetention.failed} env(s)`)
    },
    lastRunAt: () => backups.lastNightlyAt(),
    logger,
  })
  const authenticator = new Authenticator({
    keyring,
    audience: config.audience,
    nonces: store.nonces,
    onFailure: (reason) => metrics.authFailures.inc({ reason }),
  })
  const app = await buildApp(
    {
      config,
      authenticator,
      deploys: store.deploys,
      deployments,
      backups,
      pitr,
      metrics,
      logger,
      version: VERSION,
      startedAt,
      scrub: (text) => scrubber.text(text),
    },
    { https },
  )

  const reloadKeyring = async () => {
    try {
      const fresh = await loadConfig(configPath)
      authenticator.reload(await loadKeyring(fresh))
      // Secrets rotated with the reload (HMAC secrets, the status token, env files) are scrubbed from now on.
      scrubber.learn(await knownSecrets(fresh))
      logger.info({ keys: authenticator.keyCount }, 'keyring reloaded')
      // Access logs added, moved or removed: their tailers follow the config.
      await traffic.sync(fresh)
    } catch (err) {
      logger.error({ err }, 'keyring reload failed; the previous keyring stays in use')
    }
  }
  const onHangup = () => void reloadKeyring()
  process.on('SIGHUP', onHangup)

  // The proxy socket first, so that an agent answering on TCP (what supervisors and tests wait for) serves both.
  await app.ready()
  const proxySocket = config.listen.socket ? await listenProxySocket(app, config.listen.socket) : undefined
  const address = await app.listen({ host: config.listen.host, port: config.listen.port }).catch(async (err: unknown) => {
    await proxySocket?.close()
    throw err
  })
  logger.info(
    { address, socket: config.listen.socket, version: VERSION, stateDir: config.stateDir, apps: Object.keys(config.apps) },
    'agent listening',
  )
  if (backups.targets().length > 0) {
    nightly.start()
    void nightly.catchUp().catch((err) => logger.error({ err }, 'nightly catch-up failed'))
  }
  pitr.start()
  if (Object.keys(config.apps).length > 0) {
    void containerCpuShareWarning(docker).then(
      (warning) => warning && logger.warn(warning),
      (err) => logger.debug({ err }, 'could not read how Docker places containers in cgroups'),
    )
  }
  // Recovery runs after the agent listens, so it serves even when Docker is slow or down; new deploys wait for it.
  const recovery = deployments.recover().then(
    () => logger.info('start-up recovery done'),
    (err) => logger.error({ err }, 'start-up recovery failed; deploys may need attention'),
  )
  // Keeps each env as its live release wants it (running after a dockerd restart, nothing else running beside it).
  let keeping = false
  const keeper = setInterval(() => {
    if (keeping) return
    keeping = true
    deployments.keep().finally(() => (keeping = false))
  }, KEEP_LIVE_EVERY_MS)
  keeper.unref()
  return {
    app,
    url: address,
    close: async () => {
      clearInterval(keeper)
      process.off('SIGHUP', onHangup)
      const socketClosed = proxySocket?.close()
      await app.close()
      await socketClosed
      await nightly.stop()
      await pitr.stop()
      await recovery
      // A running deploy is let finish so it ends in a safe state rather than being cut mid-switch.
      await deployments.idle()
      await traffic.close()
      await notifier.flush()
      await reporter.close()
      await store.close()
    },
  }
}

/** `deploy-agent serve`: runs until SIGTERM or SIGINT. */
export async function serve(configPath: string): Promise<void> {
  const logger = createLogger()
  const agent = await startAgent(configPath, logger)
  let closing = false
  const shutdown = (signal: string) => {
    if (closing) return
    closing = true
    logger.info({ signal }, 'shutting down')
    agent.close().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, 'shutdown failed')
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
}
