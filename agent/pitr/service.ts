// Point-in-time recovery for every env with `database.pitr` enabled: its slot and supervised pg_receivewal, its base
// backups (at start-up when there is none, then on `pitr.baseBackup`), the restore point before each migration, and
// the restore to a point. Start-up never waits on a database: an unreachable one is retried in the background and
// fails only that env's PITR, never the agent.
import { createHash } from 'node:crypto'
import { readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { checkRestorePrivileges, dropRestoreLeftovers } from '../backup/restore.js'
import type { BackupService } from '../backup/service.js'
import { formatStamp } from '../backup/names.js'
import { backupDir } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { findTarget, type Target } from '../config/targets.js'
import type { Notice } from '../notify/notifier.js'
import type { Logger } from '../observability/logger.js'
import { connectionOf, type Connection } from '../pg/connection.js'
import { CronJob } from '../schedule/nightly.js'
import { listBaseBackups, removeBaseBackup, takeBaseBackup } from './base-backup.js'
import { PitrError } from './errors.js'
import { ensurePitrDirs, listWalFileInfos, listWalFiles, pitrPaths, pitrSlot, setAsideWal, type PitrPaths } from './paths.js'
import { commitNow, createRestorePoint, dropSlot, ensureSlot, flushedLsn, releaseSlot, waitFlushed } from './pg.js'
import { PitrMonitor, type PitrEnvStatus } from './monitor.js'
import { WalReceiver } from './receiver.js'
import { planSlotDrops, serverOf, SlotLedger } from './slots.js'
import { formatPitrPlan, planPitrRetention, type PitrRetentionPlan } from './retention.js'
import { recoverToDump, recoveryUser, removeWorkLeftovers, serverBinDir, type RunAs } from './recover.js'
import { planRecovery, type BaseBackupInfo, type DeployPoint, type PitrTarget } from './target.js'
import { windowGaps } from './window.js'

export interface PitrTools {
  pgReceivewal?: string
  pgBasebackup?: string
  pgDump?: string
  /** Where `postgres` is; default the newest /usr/lib/postgresql/<major>/bin. */
  binDir?: string
}

export interface PitrServiceOptions {
  config: Config
  logger: Logger
  backups: Pick<BackupService, 'databaseOf' | 'restoreFromDump'>
  /** The restore point a deploy of this env recorded (its details), or undefined when there is no such deploy. */
  deployPoint: (target: Target, deployId: string) => DeployPoint | undefined
  tools?: PitrTools
  /** How long a migration waits for the receiver to flush past its restore point; default 60 s. */
  flushTimeoutMs?: number
  receiverBackoffMs?: number
  /** The OS user of the recovery instance; default `postgres` when root, else the agent's own. */
  runAs?: RunAs
  /** Where a lost slot, a receiver down or a full WAL disk is announced (beside an error in the log). */
  notify?: (notice: Notice) => void
  /** How often each env's slot, receiver and WAL disk are checked; default 15 s. */
  healthIntervalMs?: number
  /** How long the receiver may not stream before it is announced down; default 5 min. */
  receiverDownAfterMs?: number
}

export interface PitrRestoreResult {
  target: string
  baseBackup: string
  database: string
  oldDatabase: string
  prerestore: string
  durationMs: number
}

interface EnvState {
  target: Target
  paths: PitrPaths
  receiver: WalReceiver | null
  cron: CronJob
  ready: Promise<void>
  monitor: PitrMonitor
  timer: NodeJS.Timeout | null
}

const RETRY_START_MS = 2_000
const RETRY_MAX_MS = 60_000
const HEALTH_INTERVAL_MS = 15_000
/** Five minutes: the receiver's back-off (up to 60 s) has then retried several times; shorter would page on a blip. */
const RECEIVER_DOWN_AFTER_MS = 5 * 60_000

export class PitrService {
  private readonly envs = new Map<string, EnvState>()
  /** What runs on an env's PITR files now: a restore reads the base backup and WAL that retention removes. */
  private readonly busy = new Map<string, 'restore' | 'retention'>()
  private stopped = false
  private readonly ledger: SlotLedger
  private slotCleanup: Promise<void> = Promise.resolve()
  /** Ends the start-up retries' waits at once on stop. */
  private readonly stopping = new AbortController()

  constructor(private readonly o: PitrServiceOptions) {
    this.ledger = new SlotLedger(o.config.stateDir)
  }

  /** The envs with PITR enabled, in config order. */
  targets(): Target[] {
    return Object.entries(this.o.config.apps).flatMap(([app, appConfig]) =>
      Object.entries(appConfig.envs)
        .filter(([, env]) => env.database?.pitr?.enabled === true)
        .map(([env]) => findTarget(this.o.config, app, env)),
    )
  }

  enabled(target: Target): boolean {
    return target.envConfig.database?.pitr?.enabled === true
  }

  paths(target: Target): PitrPaths {
    return pitrPaths(backupDir(this.o.config), target.app, target.env)
  }

  /** Starts every env's PITR in the background; `ready(target)` resolves once its receiver runs and a base backup exists. */
  start(): void {
    this.slotCleanup = this.dropForgottenSlots().catch((err: unknown) =>
      this.o.logger.error({ err }, 'could not read the record of the replication slots the agent made'),
    )
    for (const target of this.targets()) {
      const key = `${target.app}/${target.env}`
      const logger = this.o.logger.child({ app: target.app, env: target.env })
      const cron = new CronJob({
        name: `pitr-base-backup ${key}`,
        expression: (target.envConfig.database?.pitr as { baseBackup: string }).baseBackup,
        run: async () => {
          await this.baseBackup(target)
        },
        lastRunAt: async () => {
          const newest = (await listBaseBackups(this.paths(target).base)).at(-1)
          return newest ? new Date(newest.endTime) : null
        },
        logger,
      })
      const paths = this.paths(target)
      const monitor = new PitrMonitor({
        app: target.app,
        env: target.env,
        slot: pitrSlot(target),
        paths,
        conn: () => this.conn(target),
        receiver: () => this.receiver(target),
        logger,
        notify: this.o.notify,
        downAfterMs: this.o.receiverDownAfterMs ?? RECEIVER_DOWN_AFTER_MS,
      })
      const state: EnvState = { target, paths, receiver: null, cron, ready: Promise.resolve(), monitor, timer: null }
      state.ready = this.startEnv(state, logger)
      this.envs.set(key, state)
      // Checked from the start: a database that never answers is a receiver down too.
      state.timer = setInterval(() => void state.monitor.check(), this.o.healthIntervalMs ?? HEALTH_INTERVAL_MS)
      state.timer.unref()
      void state.ready.then(() => state.monitor.check())
    }
  }

  /** Resolves once the env's receiver runs and it has a base backup (tests, and a restore right after start-up). */
  async ready(target: Target): Promise<void> {
    await this.envs.get(`${target.app}/${target.env}`)?.ready
  }

  /** The env's PITR as last checked (recoverable window, receiver, slot, disk, problems); null before the first check. */
  status(target: Target): PitrEnvStatus | null {
    return this.envs.get(`${target.app}/${target.env}`)?.monitor.status ?? null
  }

  /** Every env's, for GET /v1/backups and the metrics. */
  statuses(): ({ app: string; env: string } & PitrEnvStatus)[] {
    return [...this.envs.values()].flatMap((s) => (s.monitor.status ? [{ app: s.target.app, env: s.target.env, ...s.monitor.status }] : []))
  }

  /** Checks the env now (tests, and a status asked for right after a change). */
  async check(target: Target): Promise<PitrEnvStatus | null> {
    return (await this.envs.get(`${target.app}/${target.env}`)?.monitor.check()) ?? null
  }

  receiver(target: Target): WalReceiver | null {
    return this.envs.get(`${target.app}/${target.env}`)?.receiver ?? null
  }

  /** `deploy-agent-pitr-<hash of the env's dir>-`: this env's recovery work dirs under the temp dir, and no one else's. */
  private workPrefix(target: Target): string {
    return `deploy-agent-pitr-${createHash('sha256').update(this.paths(target).root).digest('hex').slice(0, 12)}-`
  }

  /** What a restore cut short by a killed agent left: its dump beside the WAL, its recovery work dir. */
  private async removeLeftovers(state: EnvState, logger: Logger): Promise<void> {
    const dumps = (await readdir(state.paths.root).catch(() => [] as string[])).filter((n) => /^restore-.*\.dump$/.test(n))
    for (const name of dumps) await rm(join(state.paths.root, name), { force: true })
    const { dirs, stopped } = await removeWorkLeftovers(this.workPrefix(state.target))
    if (dumps.length + dirs.length > 0) logger.warn({ dumps, dirs, stopped }, 'removed what an interrupted PITR restore left')
  }

  private async startEnv(state: EnvState, logger: Logger): Promise<void> {
    const slot = pitrSlot(state.target)
    await this.removeLeftovers(state, logger).catch((err: unknown) => logger.error({ err }, 'could not remove PITR restore leftovers'))
    for (let wait = RETRY_START_MS; !this.stopped; wait = Math.min(wait * 2, RETRY_MAX_MS)) {
      try {
        const conn = await this.conn(state.target)
        await ensurePitrDirs(state.paths)
        // Recorded before it is made: a crash in between leaves a record of a slot that may not exist (harmless).
        const created = await ensureSlot(conn, slot, () =>
          this.ledger.add({
            slot,
            app: state.target.app,
            env: state.target.env,
            server: serverOf(conn.url),
            createdAt: new Date().toISOString(),
          }),
        )
        if (created) {
          logger.info({ slot }, 'replication slot created')
          const moved = await setAsideWal(state.paths.wal, formatStamp(new Date()))
          if (moved > 0) logger.warn({ files: moved }, 'a new slot starts a new stream: the WAL received before it was set aside')
        }
        if (this.stopped) return
        if (state.receiver === null) {
          // What a killed agent left on the server: its pg_receivewal holding the slot, a restore's side database.
          const pid = await releaseSlot(conn, slot)
          if (pid !== null) logger.warn({ slot, pid }, "ended the stream a previous agent's pg_receivewal left on the slot")
          const sides = await dropRestoreLeftovers(conn)
          if (sides.length > 0) logger.warn({ databases: sides }, 'dropped the side databases of an interrupted restore')
        }
        state.receiver ??= new WalReceiver({
          conn,
          slot,
          walDir: state.paths.wal,
          logger,
          pgReceivewal: this.o.tools?.pgReceivewal,
          backoffMs: this.o.receiverBackoffMs,
        })
        state.receiver.start()
        // A new slot reserves WAL from now on: what came before it (a lost or dropped slot's gap) is not received,
        // so recovery needs a base backup taken after it.
        if (created || (await listBaseBackups(state.paths.base)).length === 0) await this.baseBackup(state.target)
        state.cron.start()
        return
      } catch (err) {
        if (this.stopped) return
        logger.error({ err, retryInMs: wait }, 'PITR could not start for this env; retrying')
        // Not ref'd: a retry never keeps the process alive on its own; stop() ends the wait.
        await sleep(wait, undefined, { ref: false, signal: this.stopping.signal }).catch(() => undefined)
      }
    }
  }

  /** Stops the schedules and receivers, after letting a start-up step under way (a base backup) finish. */
  /** Resolves once start-up has dropped the slots of envs whose PITR was removed (tests). */
  async slotsSettled(): Promise<void> {
    await this.slotCleanup
  }

  /**
   * Drops the slots this agent created that no env with PITR uses any more (its PITR removed, the env gone, the slot
   * renamed): a forgotten slot keeps the server's WAL and fills its disk. A slot it cannot reach or drop (still
   * active) is logged as an error and tried again at the next start-up.
   */
  private async dropForgottenSlots(): Promise<void> {
    const envs = Object.entries(this.o.config.apps).flatMap(([app, appConfig]) =>
      Object.entries(appConfig.envs).map(([env, envConfig]) => {
        const target = findTarget(this.o.config, app, env)
        return {
          app,
          env,
          server: envConfig.database ? serverOf(envConfig.database.url) : null,
          slot: this.enabled(target) ? pitrSlot(target) : null,
        }
      }),
    )
    for (const { record, via } of planSlotDrops(await this.ledger.list(), envs)) {
      const logger = this.o.logger.child({ app: record.app, env: record.env, slot: record.slot, server: record.server })
      if (via === null) {
        logger.error(
          `replication slot ${record.slot} is no longer used but no env's database reaches ${record.server} to drop it; drop it there: SELECT pg_drop_replication_slot('${record.slot}')`,
        )
        continue
      }
      try {
        await dropSlot(await this.conn(findTarget(this.o.config, via.app, via.env)), record.slot)
        await this.ledger.remove(record)
        logger.warn('replication slot dropped: PITR is no longer configured for it')
      } catch (err) {
        logger.error({ err }, `could not drop the unused replication slot ${record.slot}; retried at the next start-up`)
      }
    }
  }

  async stop(): Promise<void> {
    await this.slotCleanup
    this.stopped = true
    this.stopping.abort()
    for (const state of this.envs.values()) {
      if (state.timer) clearInterval(state.timer)
      await state.ready
      await state.cron.stop()
      await state.receiver?.stop()
    }
  }

  async baseBackup(target: Target): Promise<BaseBackupInfo> {
    const logger = this.o.logger.child({ app: target.app, env: target.env })
    logger.info('base backup started')
    const paths = this.paths(target)
    await ensurePitrDirs(paths)
    const info = await takeBaseBackup(await this.conn(target), paths.base, this.o.tools?.pgBasebackup)
    logger.info({ baseBackup: info.id, endLsn: info.endLsn }, 'base backup finished')
    return info
  }

  /**
   * Before a migration: a named restore point and its position, once the receiver has flushed past it (so "before
   * this deploy" is always recoverable). Null for an env without PITR.
   */
  async restorePoint(target: Target, deployId: string): Promise<{ restorePoint: string; lsn: string } | null> {
    if (!this.enabled(target)) return null
    const conn = await this.conn(target)
    const point = await createRestorePoint(conn, `deploy_${deployId}`)
    await waitFlushed(conn, pitrSlot(target), point.lsn, this.o.flushTimeoutMs ?? 60_000)
    return point
  }

  /**
   * Restores the env's database to `point`: checks first (nothing changes when the target cannot be reached), then
   * recovers a private instance, dumps the database from it and restores that dump as a backup is restored.
   */
  async restore(
    target: Target,
    point: PitrTarget,
    onProgress: (step: string, detail?: Record<string, unknown>) => void = () => undefined,
  ): Promise<PitrRestoreResult> {
    if (!this.enabled(target)) throw new PitrError('pitr_disabled', `${target.app}/${target.env} has no database.pitr enabled`)
    const key = `${target.app}/${target.env}`
    this.claim(key, 'restore')
    const started = Date.now()
    const logger = this.o.logger.child({ app: target.app, env: target.env })
    const progress = (step: string, detail: Record<string, unknown> = {}) => {
      logger.info({ ...detail, step }, `PITR restore: ${step}`)
      onProgress(step, detail)
    }
    const paths = this.paths(target)
    const dumpPath = join(paths.root, `restore-${formatStamp(new Date())}-${process.pid}.dump`)
    try {
      const conn = await this.conn(target)
      const slot = pitrSlot(target)
      // A commit now: every earlier point then has a record after it to stop at, and the clock is the server's.
      const latest = await commitNow(conn)
      await waitFlushed(conn, slot, latest.lsn, this.o.flushTimeoutMs ?? 60_000)
      const bases = await listBaseBackups(paths.base)
      const plan = planRecovery({
        target: point,
        bases,
        flushedLsn: await flushedLsn(conn, slot),
        serverNow: latest.now,
        deploy: 'beforeDeploy' in point ? this.o.deployPoint(target, point.beforeDeploy) : undefined,
        gaps: windowGaps(bases, await listWalFileInfos(paths.wal)),
      })
      await checkRestorePrivileges(await this.o.backups.databaseOf(target), plan.described)
      progress('recovering', { target: plan.described, baseBackup: plan.base.id })
      await recoverToDump({
        baseDir: join(paths.base, plan.base.id),
        walDir: paths.wal,
        plan,
        database: conn.database,
        role: new URL(conn.url).username ? decodeURIComponent(new URL(conn.url).username) : 'postgres',
        dumpPath,
        binDir: this.o.tools?.binDir ?? (await serverBinDir()),
        pgDump: this.o.tools?.pgDump,
        workPrefix: this.workPrefix(target),
        runAs: this.o.runAs ?? (await recoveryUser()),
        onProgress: progress,
      })
      progress('restoring the dump')
      const result = await this.o.backups.restoreFromDump(target, dumpPath, `pitr:${plan.described}`)
      progress('done', { database: result.database, oldDatabase: result.oldDatabase })
      return {
        target: plan.described,
        baseBackup: plan.base.id,
        database: result.database,
        oldDatabase: result.oldDatabase,
        prerestore: result.prerestore.id,
        durationMs: Date.now() - started,
      }
    } finally {
      await rm(dumpPath, { force: true })
      this.busy.delete(key)
    }
  }

  /**
   * Applies retention to the env's base backups and WAL (`backups.retention.days`; see retention.ts); with `dryRun`
   * only the plan. Skipped while a restore of the env runs: it reads the base backup and WAL it chose.
   */
  async prune(target: Target, opts: { dryRun?: boolean } = {}): Promise<{ plan: PitrRetentionPlan; text: string }> {
    const key = `${target.app}/${target.env}`
    const paths = this.paths(target)
    const plan = planPitrRetention(await listBaseBackups(paths.base), await listWalFiles(paths.wal), this.o.config.backups.retention.days)
    if (opts.dryRun) return { plan, text: formatPitrPlan(plan) }
    this.claim(key, 'retention')
    try {
      const logger = this.o.logger.child({ app: target.app, env: target.env })
      for (const decision of plan.bases.filter((d) => !d.keep)) {
        await removeBaseBackup(paths.base, decision.id)
        logger.info({ baseBackup: decision.id }, 'base backup removed by retention')
      }
      for (const name of plan.removeWal) await rm(join(paths.wal, name), { force: true })
      if (plan.removeWal.length > 0)
        logger.info({ files: plan.removeWal.length, keptFrom: plan.keepWalFrom }, 'WAL before the oldest kept base backup removed')
    } finally {
      this.busy.delete(key)
    }
    return { plan, text: formatPitrPlan(plan) }
  }

  private claim(key: string, what: 'restore' | 'retention'): void {
    const running = this.busy.get(key)
    if (running !== undefined)
      throw new PitrError(
        'pitr_busy',
        `${what === 'restore' ? 'a PITR restore' : 'PITR retention'} of ${key} waits: its ${running} is running`,
      )
    this.busy.set(key, what)
  }

  /** Retention for every env with PITR (the nightly job): one env failing does not stop the others. */
  async pruneAll(): Promise<{ failed: number }> {
    let failed = 0
    for (const target of this.targets()) {
      await this.prune(target).catch((err: unknown) => {
        failed++
        this.o.logger.error({ err, app: target.app, env: target.env }, 'PITR retention failed; nothing more was removed')
      })
    }
    return { failed }
  }

  private async conn(target: Target): Promise<Connection> {
    return connectionOf(await this.o.backups.databaseOf(target))
  }
}
