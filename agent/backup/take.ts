// Taking a backup: pg_dump -Fc streamed through a hash into `<name>.dump.partial` → fsync → rename → fsync dir,
// then the files archive the same way, then the manifest — written last, it is what makes the backup exist.
// A failure removes this backup's own files and nothing else.
import { rename, rm } from 'node:fs/promises'
import { isAbsolute, join, normalize } from 'node:path'
import { ValidationError } from '../errors.js'
import { ensureDir, fsyncDir, listDir } from '../files.js'
import { BackupError, describe } from './errors.js'
import { BackupLocks } from './lock.js'
import { writeManifest, type ArchiveRecord, type Manifest } from './manifest.js'
import { backupBaseName, backupFileName, newBackupId, parseBackupName, type BackupKind } from './names.js'
import { connectionOf, DEFAULT_TOOLS, toolEnv, withClient, type Connection, type DatabaseTarget, type PgTools } from '../pg/connection.js'
import { captureToFile, toolOutput, type Written } from './proc.js'

export interface TakeBackupOptions {
  dir: string
  app: string
  env: string
  kind: BackupKind
  database: DatabaseTarget
  /** Absolute paths archived beside the dump (`files` of the env). A missing path fails the backup. */
  files?: readonly string[]
  /** The release (or restore) this backup belongs to; retention keeps it while that release is kept. */
  pinnedBy?: string | null
  /** The process's one BackupLocks: a second backup of the same app+env fails with backup_busy. */
  locks: BackupLocks
  /** How long to wait for another backup of the same app+env to finish before failing with backup_busy (0). */
  waitIfBusyMs?: number
  onWait?: () => void
  now?: () => Date
  tools?: Partial<PgTools>
  /** Aborting kills pg_dump / tar; the backup then fails (backup_failed, "was cancelled") and leaves nothing. */
  signal?: AbortSignal
  /** The backup's id when the caller announced it before starting (a manual backup answers 202 with it). */
  id?: string
}

/** Takes one backup and returns its manifest; throws BackupError backup_failed (or backup_busy) and leaves nothing. */
export async function takeBackup(options: TakeBackupOptions): Promise<Manifest> {
  const { dir, app, env, kind } = options
  const tools = { ...DEFAULT_TOOLS, ...options.tools }
  const conn = connectionOf(options.database)
  const archivePaths = checkPaths(options.files ?? [])
  const id = options.id ?? newBackupId()

  await ensureDir(dir).catch((err) => {
    throw new BackupError('backup_failed', `cannot create the backup directory ${dir}`, describe(err), { cause: err })
  })
  const release = await options.locks.acquire(dir, app, env, { waitMs: options.waitIfBusyMs, onWait: options.onWait })
  // Named after the lock is taken: a backup that waited is as new as the data it holds.
  const createdAt = new Date(Math.floor((options.now?.() ?? new Date()).getTime() / 1000) * 1000)
  const base = backupBaseName({ app, env, createdAt, kind, id })
  const started = performance.now()
  const placed: string[] = []
  try {
    const pgEnv = toolEnv(conn)
    // The versions only go into the manifest: looked up beside the dump, they add nothing to its time.
    const versions = Promise.all([
      serverVersion(conn),
      toolOutput([tools.pgDump, '--version'], pgEnv).catch((err) => {
        throw new BackupError('backup_failed', 'pg_dump is not usable', describe(err))
      }),
    ])
    versions.catch(() => undefined) // awaited below, after the dump; not an unhandled rejection meanwhile
    const dumpFile = backupFileName(base, 'dump')
    const dump = await capture(dir, dumpFile, [tools.pgDump, '--format=custom', '--no-password', `--dbname=${conn.url}`], pgEnv, {
      signal: options.signal,
    }).catch(async (err: unknown) => {
      // An unreachable server or a broken pg_dump is said more clearly by the lookups than by pg_dump's exit.
      throw (
        (await versions.then(
          () => null,
          (lookupError: unknown) => lookupError,
        )) ?? err
      )
    })
    placed.push(join(dir, dumpFile))
    const [pgServerVersion, pgDumpVersion] = await versions

    let files: ArchiveRecord | undefined
    if (archivePaths.length > 0) {
      const file = backupFileName(base, 'files')
      // Paths are archived relative to / (`./srv/app/uploads`), so they restore to where they were; the `./` also
      // keeps a path from ever being read as an option. GNU tar's status 1 only means a file changed while read.
      const argv = [tools.tar, '-czf', '-', '-C', '/', ...archivePaths.map((p) => `.${p}`)]
      const written = await capture(dir, file, argv, process.env, { okCodes: [0, 1], signal: options.signal })
      placed.push(join(dir, file))
      files = { file, ...written, paths: archivePaths }
    }

    const manifest: Manifest = {
      v: 1,
      id,
      app,
      env,
      kind,
      createdAt: createdAt.toISOString().replace('.000Z', 'Z'),
      file: dumpFile,
      bytes: dump.bytes,
      sha256: dump.sha256,
      pgServerVersion,
      pgDumpVersion,
      durationMs: Math.round(performance.now() - started),
      verified: null,
      pinnedBy: options.pinnedBy ?? null,
      ...(files === undefined ? {} : { files }),
    }
    placed.push(join(dir, backupFileName(base, 'manifest'))) // removed too should anything after its rename fail
    await writeManifest(dir, manifest).catch((err) => {
      throw new BackupError('backup_failed', 'writing the manifest failed', describe(err), { cause: err })
    })
    return manifest
  } catch (err) {
    for (const path of placed) await rm(path, { force: true })
    if (placed.length > 0) await fsyncDir(dir).catch(() => {})
    if (err instanceof BackupError) throw err
    throw new BackupError('backup_failed', `backup of ${app}/${env} failed`, describe(err), { cause: err })
  } finally {
    await release()
  }
}

/** `argv`'s stdout → `<file>.partial` (0600, hashed, fsynced) → renamed to `file` → directory fsynced. */
async function capture(
  dir: string,
  file: string,
  argv: string[],
  env: NodeJS.ProcessEnv,
  options: { okCodes?: number[]; signal?: AbortSignal },
): Promise<Written> {
  const partial = join(dir, `${file}.partial`)
  const written = await captureToFile(argv, env, partial, options)
  try {
    await rename(partial, join(dir, file))
  } catch (err) {
    await rm(partial, { force: true })
    throw err
  }
  await fsyncDir(dir)
  return written
}

async function serverVersion(conn: Connection): Promise<string> {
  try {
    return await withClient(conn, async (client) => {
      const { rows } = await client.query<{ server_version: string }>('SHOW server_version')
      return rows[0]?.server_version ?? 'unknown'
    })
  } catch (err) {
    throw new BackupError('backup_failed', `database ${conn.database} is unreachable`, describe(err), { cause: err })
  }
}

function checkPaths(paths: readonly string[]): string[] {
  return paths.map((p) => {
    const path = normalize(p).replace(/\/+$/, '')
    if (!isAbsolute(p) || p.includes('\0') || path === '') throw new ValidationError(`files: "${p}" must be an absolute path below /`)
    return path
  })
}

/**
 * Start-up clean-up: removes what interrupted backups left in `dir` — `*.partial` files, manifest temp files, lock
 * temp files, and dumps or archives whose manifest was never written — except for app+envs whose lock is held.
 * Other files (legacy backups, anything unknown) are never touched. Returns the names removed.
 */
export async function cleanPartials(dir: string, locks = new BackupLocks()): Promise<string[]> {
  const entries = await listDir(dir)
  const present = new Set(entries)
  const removed: string[] = []
  for (const entry of entries) {
    const owner = leftoverOwner(entry, present)
    if (owner === null || (await locks.isLocked(dir, owner.app, owner.env))) continue
    await rm(join(dir, entry), { force: true })
    removed.push(entry)
  }
  if (removed.length > 0) await fsyncDir(dir)
  return removed
}

/** The app+env of a file an interrupted backup left behind, or null for anything else. */
function leftoverOwner(entry: string, present: ReadonlySet<string>): { app: string; env: string } | null {
  const lockTemp = /^\.lock-([a-z][a-z0-9-]*)_([a-z][a-z0-9-]*)\.[0-9a-f]{12}\.tmp$/.exec(entry)
  if (lockTemp !== null) return { app: lockTemp[1] as string, env: lockTemp[2] as string }
  const manifestTemp = /^\.(.+\.manifest\.json)\.[0-9a-f]{12}\.tmp$/.exec(entry)
  if (manifestTemp !== null) return parseBackupName(manifestTemp[1] as string)
  if (entry.endsWith('.partial')) {
    const name = parseBackupName(entry.slice(0, -'.partial'.length))
    return name !== null && name.part !== 'manifest' && entry.startsWith(backupFileName(name.base, name.part)) ? name : null
  }
  const name = parseBackupName(entry)
  const orphan =
    name !== null &&
    name.part !== 'manifest' &&
    entry === backupFileName(name.base, name.part) &&
    !present.has(backupFileName(name.base, 'manifest'))
  return orphan ? name : null
}
