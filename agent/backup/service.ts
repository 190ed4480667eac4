// The backups of the envs in the config: take (then verify as `backups.verify` says, then apply retention),
// list, re-verify, prune and restore. The engine modules do the work; this decides which database, which
// directory, which pins, and keeps the last backup of each env at hand for /v1/status.
import { readFile, rm } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { backupDir } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { findTarget, type Target } from '../config/targets.js'
import { AgentError, NotFoundError, ValidationError } from '../errors.js'
import type { Logger } from '../observability/logger.js'
import { BackupError } from './errors.js'
import { listBackups, type AgentBackup, type BackupEntry } from './list.js'
import { BackupLocks } from './lock.js'
import { manifestFileName, readManifest, type Manifest } from './manifest.js'
import { newBackupId, resolveBackupPath, type BackupKind } from './names.js'
import type { DatabaseTarget } from '../pg/connection.js'
import { restoreBackup, restoreDump, type RestoreResult } from './restore.js'
import { formatPlan, planRetention, type RetentionDecision } from './retention.js'
import { cleanPartials, takeBackup } from './take.js'
import { verifyBackup, type VerifyResult } from './verify.js'

export interface LastBackup {
  id: string
  createdAt: string
  verified: boolean | null
}

/** A backup that failed: kept (the last few) so that whoever started it in the background can learn why. */
export interface FailedBackup {
  id: string | null
  app: string
  env: string
  kind: BackupKind
  at: string
  error: { code: string; message: string }
}

const RECENT_FAILURES = 20

export interface BackupEvents {
  /** A backup finished (verified or not) or failed; `id` is given on a failure when it was chosen up front (manual). */
  onBackup?: (event: { target: Target; kind: BackupKind; manifest?: Manifest; error?: unknown; durationMs: number; id?: string }) => void
}

export interface BackupServiceOptions extends BackupEvents {
  config: Config
  logger: Logger
  /** Releases the deploy side still keeps for an env: their pre-deploy backups are pinned. */
  keptReleases?: (target: Target) => Promise<Set<string>>
  /** Removes secrets from a failure's message (pg tool stderr) before it is kept for the status API. */
  scrub?: (text: string) => string
}

const PRERESTORE_PIN = 'restore:'
/**
 * How long a deploy's or a restore's own backup waits behind another backup of the same env (a nightly run, an
 * operator's) before failing: long enough for a large nightly dump, short of hanging a deploy forever.
 */
const BUSY_WAIT_MS = 30 * 60_000
/** The kinds that wait for a running backup instead of failing at once with backup_busy. */
const WAITING_KINDS: ReadonlySet<BackupKind> = new Set(['predeploy', 'prerestore'])

export class BackupService {
  readonly dir: string
  readonly locks = new BackupLocks()
  private readonly last = new Map<string, LastBackup>()
  private readonly failed: FailedBackup[] = []

  constructor(private readonly o: BackupServiceOptions) {
    this.dir = backupDir(o.config)
  }

  /** Start-up: leftovers of a crash are removed, and the last backup of each env is read for the status. */
  async open(): Promise<void> {
    const removed = await cleanPartials(this.dir, this.locks)
    if (removed.length > 0) this.o.logger.warn({ removed }, 'removed partial backup files left by a crash')
    for (const entry of await this.list()) {
      if (entry.legacy) continue
      const key = `${entry.app}/${entry.env}`
      if (!this.last.has(key)) this.last.set(key, lastOf(entry))
    }
  }

  /** The envs that have a database, in config order. */
  targets(): Target[] {
    return Object.entries(this.o.config.apps).flatMap(([app, appConfig]) =>
      Object.entries(appConfig.envs)
        .filter(([, env]) => env.database)
        .map(([env]) => findTarget(this.o.config, app, env)),
    )
  }

  /** The most recent failed backups, newest first. */
  recentFailures(): readonly FailedBackup[] {
    return this.failed
  }

  lastBackup(app: string, env: string): LastBackup | null {
    return this.last.get(`${app}/${env}`) ?? null
  }

  list(): Promise<BackupEntry[]> {
    return listBackups(this.dir, { onSkip: (file, reason) => this.o.logger.warn({ file, reason }, 'ignored a backup file') })
  }

  /** A new id for a backup that is announced before it runs. */
  newId(): string {
    return newBackupId()
  }

  /**
   * Takes, verifies (per `backups.verify`) and, once verified, applies retention for the env. Throws on failure;
   * a failed backup leaves nothing behind and never removes a good one.
   */
  async take(target: Target, kind: BackupKind, opts: { pinnedBy?: string | null; id?: string } = {}): Promise<Manifest> {
    const started = Date.now()
    const logger = this.o.logger.child({ app: target.app, env: target.env, kind })
    logger.info('backup started')
    try {
      const database = await this.database(target)
      let manifest = await takeBackup({
        dir: this.dir,
        app: target.app,
        env: target.env,
        kind,
        database,
        files: target.envConfig.files,
        pinnedBy: opts.pinnedBy ?? null,
        locks: this.locks,
        id: opts.id,
        waitIfBusyMs: WAITING_KINDS.has(kind) ? BUSY_WAIT_MS : 0,
        onWait: () => logger.info('another backup of this env is running; waiting for it to finish'),
      })
      const method = this.o.config.backups.verify
      if (method !== 'none') {
        const result = await verifyBackup(this.dir, manifest, method, { database })
        manifest = await readManifest(this.dir, manifestFileName(manifest))
        if (!result.ok)
          throw new BackupError('verify_failed', `backup ${manifest.id} failed verification: ${result.reason ?? 'unknown reason'}`)
      }
      this.last.set(`${target.app}/${target.env}`, lastOf(manifest))
      logger.info({ backupId: manifest.id, bytes: manifest.bytes, verified: manifest.verified?.ok ?? null }, 'backup finished')
      this.o.onBackup?.({ target, kind, manifest, durationMs: Date.now() - started })
      if (manifest.verified?.ok) await this.prune(target).catch((err) => logger.error({ err }, 'retention failed; nothing was removed'))
      return manifest
    } catch (err) {
      logger.error({ err }, 'backup failed')
      const error = err instanceof AgentError ? { code: err.code, message: err.message } : { code: 'backup_failed', message: String(err) }
      error.message = this.o.scrub?.(error.message) ?? error.message
      this.failed.unshift({ id: opts.id ?? null, app: target.app, env: target.env, kind, at: new Date().toISOString(), error })
      this.failed.length = Math.min(this.failed.length, RECENT_FAILURES)
      this.o.onBackup?.({ target, kind, error: err, durationMs: Date.now() - started, id: opts.id })
      throw err
    }
  }

  /** The retention plan for an env; with `dryRun` nothing is removed. */
  async prune(target: Target, opts: { dryRun?: boolean } = {}): Promise<{ plan: RetentionDecision[]; text: string }> {
    const entries = (await this.list()).filter((e): e is AgentBackup => !e.legacy && e.app === target.app && e.env === target.env)
    const pins = (await this.o.keptReleases?.(target)) ?? new Set<string>()
    // Pre-restore backups are the way back from a restore: retention never removes them; an operator may.
    for (const e of entries) if (e.pinnedBy?.startsWith(PRERESTORE_PIN)) pins.add(e.pinnedBy)
    const plan = planRetention(
      entries.map((e) => ({ id: e.id, createdAt: new Date(e.createdAt), verified: e.verified?.ok === true, pinnedBy: e.pinnedBy })),
      this.o.config.backups.retention,
      pins,
    )
    if (!opts.dryRun) {
      for (const decision of plan.filter((d) => !d.keep)) {
        const entry = entries.find((e) => e.id === decision.id) as AgentBackup
        // The manifest goes first: a backup without its manifest does not exist, so a crash here loses nothing usable.
        await rm(join(this.dir, manifestFileName(entry)), { force: true })
        await rm(join(this.dir, entry.file), { force: true })
        if (entry.files) await rm(join(this.dir, entry.files.file), { force: true })
        this.o.logger.info(
          { app: target.app, env: target.env, backupId: entry.id, reasons: decision.reasons },
          'backup removed by retention',
        )
      }
    }
    return { plan, text: formatPlan(plan) }
  }

  /** The app and env a stored backup belongs to; null for a legacy file, which names none. */
  async ownerOf(idOrName: string): Promise<{ app: string; env: string } | null> {
    const resolved = await resolveBackupPath(this.dir, idOrName)
    if (resolved.format !== 'agent') return null
    const manifest = await readManifest(this.dir, basename(resolved.manifestPath))
    return { app: manifest.app, env: manifest.env }
  }

  /** Re-checks a stored backup (sha256 and a full read, or a scratch restore when so configured). */
  async verify(id: string): Promise<VerifyResult> {
    const resolved = await resolveBackupPath(this.dir, id)
    if (resolved.format !== 'agent') throw new ValidationError(`${id} is a legacy file: it has no manifest to verify against`)
    const manifest = await readManifest(this.dir, basename(resolved.manifestPath))
    const method = this.o.config.backups.verify === 'restore' ? 'restore' : 'full'
    const target = this.targetOf(manifest.app, manifest.env)
    return verifyBackup(this.dir, manifest, method, { database: method === 'restore' ? await this.database(target) : undefined })
  }

  /**
   * The env a restore of `idOrName` goes into: an agent backup's own (the request may only repeat it); for a legacy
   * file, which names none, `target`'s, or when it names none and exactly one env has a database, that one. The
   * caller authorises this env, not what the request named.
   */
  async restoreTarget(idOrName: string, target: { app?: string; env?: string } = {}): Promise<Target> {
    const { app, env } = target
    if ((app === undefined) !== (env === undefined)) throw new ValidationError('name both app and env of the restore, or neither')
    const resolved = await resolveBackupPath(this.dir, idOrName)
    if (resolved.format === 'agent') {
      const manifest = await readManifest(this.dir, basename(resolved.manifestPath))
      if ((app && app !== manifest.app) || (env && env !== manifest.env)) {
        throw new ValidationError(`backup ${manifest.id} belongs to ${manifest.app}/${manifest.env}, not ${app}/${env}`)
      }
      return this.targetOf(manifest.app, manifest.env)
    }
    if (app !== undefined && env !== undefined) return this.targetOf(app, env)
    const all = this.targets()
    if (all.length !== 1 || all[0] === undefined)
      throw new ValidationError(`${idOrName} is a legacy backup that names no app or env; say which with { app, env }`)
    return all[0]
  }

  /** Restores a backup into `target` (from restoreTarget): verify, a pinned pre-restore backup, restore beside, swap. */
  async restore(idOrName: string, target: { app?: string; env?: string } = {}): Promise<RestoreResult> {
    const env_ = await this.restoreTarget(idOrName, target)
    const logger = this.o.logger.child({ app: env_.app, env: env_.env, backupId: idOrName })
    logger.warn('restore started')
    const result = await restoreBackup({
      dir: this.dir,
      idOrName,
      database: await this.database(env_),
      files: env_.envConfig.files,
      takePrerestore: () => this.take(env_, 'prerestore', { pinnedBy: `${PRERESTORE_PIN}${idOrName}` }),
    })
    logger.warn(
      { database: result.database, oldDatabase: result.oldDatabase, prerestore: result.prerestore.id, files: result.files },
      'restore finished',
    )
    return result
  }

  /**
   * Restores a dump made elsewhere (a PITR recovery's) into `target` exactly as a backup is restored: a pinned
   * pre-restore backup, a side database, the swap. `label` names what is restored in messages and the pin.
   */
  async restoreFromDump(target: Target, path: string, label: string): Promise<Omit<RestoreResult, 'backup'>> {
    const logger = this.o.logger.child({ app: target.app, env: target.env })
    const result = await restoreDump({
      label,
      path,
      format: 'custom',
      database: await this.database(target),
      takePrerestore: () => this.take(target, 'prerestore', { pinnedBy: `${PRERESTORE_PIN}${label}` }),
    })
    logger.warn({ database: result.database, oldDatabase: result.oldDatabase, prerestore: result.prerestore.id, label }, 'restore finished')
    return result
  }

  /** The env's database as pg tools get it (its password read from passwordFile). */
  databaseOf(target: Target): Promise<DatabaseTarget> {
    return this.database(target)
  }

  /** Every env with a database, one after the other; failures are reported and do not stop the others. */
  async nightly(): Promise<{ ok: number; failed: number }> {
    let ok = 0
    let failed = 0
    for (const target of this.targets()) {
      await this.take(target, 'nightly').then(
        () => ok++,
        () => failed++,
      )
    }
    return { ok, failed }
  }

  /** When the last nightly run completed: the newest nightly backup of any env. */
  async lastNightlyAt(): Promise<Date | null> {
    const newest = (await this.list()).find((e) => !e.legacy && e.kind === 'nightly')
    return newest ? new Date(newest.createdAt) : null
  }

  private targetOf(app: string, env: string): Target {
    const target = findTarget(this.o.config, app, env)
    if (!target.envConfig.database) throw new NotFoundError(`${app}/${env} has no database`)
    return target
  }

  private async database(target: Target): Promise<DatabaseTarget> {
    const db = target.envConfig.database
    if (!db) throw new NotFoundError(`${target.app}/${target.env} has no database`)
    const password = db.passwordFile ? (await readFile(db.passwordFile, 'utf8')).trim() : undefined
    return { url: db.url, password }
  }
}

function lastOf(entry: Manifest): LastBackup {
  return { id: entry.id, createdAt: entry.createdAt, verified: entry.verified ? entry.verified.ok : null }
}
