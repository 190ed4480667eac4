// Restoring a backup without ever leaving the live database half-restored:
//   resolve the name safely → verify (sha256 + full read; legacy: gzip test) → take a pre-restore backup →
//   restore into a new database `<db>_restore_<rid>` → swap names in one transaction:
//   `<db>` → `<db>_old_<rid>`, `<db>_restore_<rid>` → `<db>`.
// `<rid>` is the pre-restore backup's id, so the old database and the backup of it carry the same id.
// The old database is kept (not dropped) and reported: it is the quickest way back, and dropping it is an
// operator's decision. A restore that fails before the swap drops `<db>_restore_<rid>`; the live database is as it was.
//
// A backup's files (its `.files.tar.gz`) come back with it (files-restore.ts): the archive is checked entry by entry
// before the pre-restore backup, extracted beside each path after the database is loaded, and swapped in right after
// the database swap (`<path>` → `<path>.old-<rid>`). A failure before the database swap leaves both as they were.
//
// The backup is loaded as a role of its own, `<db>_restore_<rid>`, created for the restore: no superuser, no
// CREATEDB/CREATEROLE, member of nothing, owner of `<db>_restore_<rid>` only, logged in with a random password. SQL
// in the backup can therefore reach no other database, role or file, whoever wrote it. Once loaded, what it created
// passes to the agent's role and the role is dropped. A legacy SQL script also reaches psql only after a
// `\restrict <random key>`, so psql refuses every backslash command in it (`\!`, `\connect`, ...).
//
// The agent's role needs CREATEDB and CREATEROLE (checked before anything happens) and must own the live database
// (to rename it). Before each swap attempt it ends the sessions it may end — its own role's client backends on the
// live database — and never those of superusers, other roles or autovacuum; while such sessions remain (55006
// object_in_use) it retries briefly, then gives up with database_busy. Database-level settings (ALTER DATABASE …
// SET, GRANT CONNECT) are not carried over by the dump.
import { randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { createGunzip } from 'node:zlib'
import { createDatabaseLike, createRestoreRole, dropDatabase, dropRole, restorePrivilegeProblem, takeBackFromRole } from '../pg/admin.js'
import { BackupError, describe } from './errors.js'
import {
  checkArchive,
  cleanFilesPath,
  discardSides,
  extractArchive,
  planFiles,
  sidePaths,
  swapProblems,
  swapSides,
  type SidePath,
} from './files-restore.js'
import { readManifest, type Manifest } from './manifest.js'
import { BACKUP_ID_PATTERN, resolveBackupPath, type ResolvedBackup } from './names.js'
import {
  asRole,
  connectionOf,
  derivedName,
  DEFAULT_TOOLS,
  onDatabase,
  psqlRestrictProblem,
  quoteIdent,
  sqlState,
  toolEnv,
  withClient,
  type Connection,
  type DatabaseTarget,
  type PgTools,
} from '../pg/connection.js'
import { exitProblem, runPiped, runTool, toolOutput, ToolError } from './proc.js'
import { RestrictedSqlScript } from './sql-guard.js'
import { verifyBackup } from './verify.js'

export type DumpFormat = 'custom' | 'sql.gz'

export interface RestoreOptions {
  dir: string
  /** A backup id, one of its file names, or a legacy file name. */
  idOrName: string
  database: DatabaseTarget
  /** Takes the pinned pre-restore backup of the live database (kind 'prerestore'); a failure stops the restore. */
  takePrerestore: () => Promise<Manifest>
  tools?: Partial<PgTools>
  /** The database the swap is run from — any but the live one; default `postgres`. */
  maintenanceDatabase?: string
  /** Swap attempts while the database is in use; default 10 × 200 ms. */
  retry?: { attempts: number; delayMs: number }
  /** The env's `files`: the archived paths restored (others in the archive are left alone). */
  files?: readonly string[]
}

export interface FilesRestoreResult {
  /** Each path restored, and where its previous content is kept (null: there was none). */
  restored: { path: string; old: string | null }[]
  /** Archived paths the env no longer lists: not restored. */
  skipped: string[]
}

export interface RestoreResult {
  backup: { id: string; file: string; format: DumpFormat }
  /** The live database, now holding the restored data. */
  database: string
  /** The previous live database, kept under this name. */
  oldDatabase: string
  prerestore: Manifest
  /** Null when the backup has no files archive. */
  files: FilesRestoreResult | null
  durationMs: number
}

export async function restoreBackup(options: RestoreOptions): Promise<RestoreResult> {
  const started = performance.now()
  const tools = { ...DEFAULT_TOOLS, ...options.tools }
  const resolved = await resolveBackupPath(options.dir, options.idOrName)
  const { id, format, manifest } = await checkBackup(options.dir, resolved, tools)
  // The files archive is read through before anything happens: a refused entry leaves everything as it was.
  const files = manifest?.files && {
    ...planFiles(manifest.files.paths, options.files ?? []),
    archive: join(options.dir, manifest.files.file),
    roots: manifest.files.paths.map(cleanFilesPath),
  }
  if (files && files.restore.length > 0) {
    await checkArchive(id, files.archive, files.roots)
    const problems = await swapProblems(files.restore)
    if (problems.length > 0)
      throw new BackupError('restore_failed', `cannot restore the files of ${id}; nothing was changed`, problems.join('; '))
  }
  const result = await restoreDump({ ...options, label: id, path: resolved.path, format, files: files ?? null })
  return {
    ...result,
    backup: { id, file: basename(resolved.path), format },
    durationMs: Math.round(performance.now() - started),
  }
}

/** A backup's files archive, checked: the paths to restore, those the env no longer lists, and its entries' roots. */
interface FilesPlan {
  restore: string[]
  skipped: string[]
  archive: string
  roots: string[]
}

export interface DumpRestoreOptions extends Omit<RestoreOptions, 'dir' | 'idOrName' | 'files'> {
  /** What is restored, for messages: a backup id, or a PITR target. */
  label: string
  /** A dump already checked by the caller (a verified backup, or a dump just made by PITR recovery). */
  path: string
  format: DumpFormat
  /** The backup's files, checked by the caller; extracted before the database swap and swapped in right after it. */
  files?: FilesPlan | null
}

/** Why the env's role cannot restore, checked before anything changes. */
export async function checkRestorePrivileges(database: DatabaseTarget, label: string): Promise<void> {
  const conn = connectionOf(database)
  const privileges = await restorePrivilegeProblem(conn).catch(
    (err: unknown) => `cannot check the privileges of the database role: ${describe(err)}`,
  )
  if (privileges !== null) throw new BackupError('restore_failed', `cannot restore ${label}; ${conn.database} is unchanged`, privileges)
}

/**
 * Drops what a restore of `conn`'s database cut short by a killed agent left: `<db>_restore_<id>` databases and their
 * roles (before the swap, the live database is as it was). One still in use (a restore under way) is left alone.
 * Answers the databases dropped.
 */
export async function dropRestoreLeftovers(conn: Connection): Promise<string[]> {
  const side = derivedName(conn.database, 'restore', '00000000').slice(0, -8)
  const isSide = (name: string) => name.startsWith(side) && BACKUP_ID_PATTERN.test(name.slice(side.length))
  const admin = onDatabase(conn, 'postgres')
  const { databases, roles } = await withClient(admin, async (client) => ({
    databases: (await client.query<{ name: string }>('SELECT datname AS name FROM pg_database')).rows.map((r) => r.name).filter(isSide),
    roles: (await client.query<{ name: string }>('SELECT rolname AS name FROM pg_roles')).rows.map((r) => r.name).filter(isSide),
  }))
  const dropped: string[] = []
  for (const name of databases) {
    const ok = await withClient(admin, (client) => client.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)}`)).then(
      () => true,
      (err: unknown) => {
        if (sqlState(err) === '55006') return false // in use
        throw err
      },
    )
    if (ok) dropped.push(name)
  }
  for (const role of roles.filter((r) => !databases.includes(r) || dropped.includes(r))) await dropRole(conn, role)
  return dropped
}

/**
 * The restore itself, from a checked dump: privileges, the pinned pre-restore backup, a restore role that owns only
 * `<db>_restore_<rid>`, the load, then the swap (and the files', when given). Shared by backup and PITR restores.
 */
export async function restoreDump(options: DumpRestoreOptions): Promise<Omit<RestoreResult, 'backup'>> {
  const started = performance.now()
  const tools = { ...DEFAULT_TOOLS, ...options.tools }
  const conn = connectionOf(options.database)
  const id = options.label
  const files = options.files ?? null
  await checkRestorePrivileges(options.database, id)

  const prerestore = await options.takePrerestore()
  const restoreDb = derivedName(conn.database, 'restore', prerestore.id)
  const oldDb = derivedName(conn.database, 'old', prerestore.id)
  // The role is named like the database it alone owns; roles and databases have separate names.
  const role = restoreDb
  const password = randomBytes(24).toString('hex')
  const sides: SidePath[] = files ? sidePaths(files.restore, prerestore.id) : []
  try {
    try {
      await createRestoreRole(conn, role, password)
      await createDatabaseLike(conn, restoreDb, role)
    } catch (err) {
      throw new BackupError('restore_failed', `cannot create ${restoreDb}`, describe(err), { cause: err })
    }
    await load(tools, asRole(onDatabase(conn, restoreDb), role, password), options.path, options.format)
    await takeBackFromRole(onDatabase(conn, restoreDb), role)
    await dropRole(conn, role)
    // Extracted beside the live paths before the database swap, swapped in right after it.
    if (files && sides.length > 0) await extractArchive(id, files.archive, files.roots, sides)
    await swap(
      onDatabase(conn, options.maintenanceDatabase ?? 'postgres'),
      conn.database,
      restoreDb,
      oldDb,
      options.retry ?? { attempts: 10, delayMs: 200 },
    )
  } catch (err) {
    await discardSides(sides)
    await dropDatabase(conn, restoreDb).catch(() => {})
    await dropRole(conn, role).catch(() => {})
    if (err instanceof BackupError) throw err
    throw new BackupError('restore_failed', `restoring ${id} into ${restoreDb} failed; ${conn.database} is unchanged`, describe(err), {
      cause: err,
    })
  }
  const restored = await swapSides(sides).catch((err: unknown) => {
    throw new BackupError(
      'files_restore_failed',
      `backup ${id}: the database was restored (the previous one is kept as ${oldDb}) but its files could not be swapped in; the files are as they were`,
      describe(err),
      { cause: err },
    )
  })
  return {
    database: conn.database,
    oldDatabase: oldDb,
    prerestore,
    files: files ? { restored, skipped: files.skipped } : null,
    durationMs: Math.round(performance.now() - started),
  }
}

/** Verifies the backup before anything else happens; its format comes from the file's first bytes. */
async function checkBackup(
  dir: string,
  resolved: ResolvedBackup,
  tools: PgTools,
): Promise<{ id: string; format: DumpFormat; manifest: Manifest | null }> {
  const id = resolved.format === 'agent' ? resolved.name.id : resolved.name.file
  const format = await sniffFormat(resolved.path)
  if (format === null) throw new BackupError('backup_invalid', `backup ${id} is neither a pg_dump custom-format dump nor gzip'd SQL`)
  // The name says what the file must be: a custom-format dump under a .sql.gz name would skip the manifest check.
  if (resolved.format === 'legacy' && format !== 'sql.gz')
    throw new BackupError('backup_invalid', `backup ${id} is not gzip'd SQL, as its name says`)
  if (resolved.format === 'agent' && format !== 'custom')
    throw new BackupError('backup_invalid', `backup ${id} is not a pg_dump custom-format dump, as its name says`)
  let manifest: Manifest | null = null
  if (resolved.format === 'agent') {
    manifest = await readManifest(dir, basename(resolved.manifestPath))
    const result = await verifyBackup(dir, manifest, 'full', { tools })
    if (!result.ok) throw new BackupError('backup_invalid', `backup ${id} failed verification`, result.reason ?? '')
  }
  if (format === 'sql.gz') {
    const exit = await runTool([tools.gzip, '-t', resolved.path], process.env)
    const problem = exitProblem(exit)
    if (problem !== null)
      throw new BackupError('backup_invalid', `backup ${id} is not a sound gzip file`, `gzip ${problem}: ${exit.stderr}`)
    const content = await sniffGzippedText(resolved.path)
    if (content !== null) throw new BackupError('backup_invalid', `backup ${id} is not gzip'd SQL`, content)
    const version = await toolOutput([tools.psql, '--version'], process.env).catch((err: unknown) => describe(err))
    const restrict = psqlRestrictProblem(version)
    if (restrict !== null) throw new BackupError('restore_failed', `cannot restore ${id}`, restrict)
  }
  return { id, format, manifest }
}

const SNIFF = 64 * 1024

/** What is wrong with the start of a gzip'd file as SQL text (a binary dump inside, a NUL byte), or null. */
async function sniffGzippedText(path: string): Promise<string | null> {
  const head: Buffer[] = []
  let bytes = 0
  const file = createReadStream(path)
  const stream = file.pipe(createGunzip())
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      head.push(chunk)
      bytes += chunk.length
      if (bytes >= SNIFF) break
    }
  } finally {
    stream.destroy()
    file.destroy()
  }
  const text = Buffer.concat(head).subarray(0, SNIFF)
  if (text.subarray(0, 5).toString('latin1') === 'PGDMP')
    return 'it holds a pg_dump custom-format dump; restore that with pg_restore, not as SQL'
  if (text.includes(0)) return 'it holds binary data (a NUL byte)'
  return null
}

export async function sniffFormat(path: string): Promise<DumpFormat | null> {
  const handle = await open(path, 'r')
  try {
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(5), 0, 5, 0)
    const magic = buffer.subarray(0, bytesRead)
    if (magic.toString('latin1') === 'PGDMP') return 'custom'
    if (magic[0] === 0x1f && magic[1] === 0x8b) return 'sql.gz'
    return null
  } finally {
    await handle.close()
  }
}

/** Loads the backup into `target`, the scratch database, connected as the restore role. */
async function load(tools: PgTools, target: Connection, path: string, format: DumpFormat): Promise<void> {
  const env = toolEnv(target)
  if (format === 'custom') {
    const exit = await runTool([tools.pgRestore, '--no-owner', '--exit-on-error', '--no-password', `--dbname=${target.url}`, path], env)
    const problem = exitProblem(exit)
    if (problem !== null) throw new ToolError('pg_restore', `pg_restore ${problem}`, exit.stderr)
    return
  }
  await runPiped(
    [tools.gzip, '-dc', path],
    new RestrictedSqlScript(),
    [tools.psql, '-X', '-q', '--no-password', '-v', 'ON_ERROR_STOP=1', `--dbname=${target.url}`],
    env,
  )
}

/**
 * Renames live → old and restored → live in one transaction, ending the agent role's own sessions first. Sessions it
 * may not end (other roles', superusers' when it is none) are waited for, `retry.attempts` × `retry.delayMs`,
 * without trying the rename: PostgreSQL itself waits up to 5 s inside a rename of a database in use, which is
 * worth it only for the sessions just ended (and autovacuum, which it ends itself).
 */
async function swap(
  admin: Connection,
  live: string,
  restored: string,
  old: string,
  retry: { attempts: number; delayMs: number },
): Promise<void> {
  await withClient(admin, async (client) => {
    for (let attempt = 1; ; attempt++) {
      await client.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = $1 AND usename = current_user AND backend_type = 'client backend' AND pid <> pg_backend_pid()`,
        [live],
      )
      const { rows: others } = await client.query<{ who: string }>(
        `SELECT coalesce(usename, '?') || ' (' || backend_type || ', pid ' || pid || ')' AS who FROM pg_stat_activity
          WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type <> 'autovacuum worker'
            AND NOT (usename = current_user AND backend_type = 'client backend')`,
        [live],
      )
      if (others.length === 0) {
        try {
          await client.query('BEGIN')
          await client.query(`ALTER DATABASE ${quoteIdent(live)} RENAME TO ${quoteIdent(old)}`)
          await client.query(`ALTER DATABASE ${quoteIdent(restored)} RENAME TO ${quoteIdent(live)}`)
          await client.query('COMMIT')
          return
        } catch (err) {
          await client.query('ROLLBACK').catch(() => {})
          if (sqlState(err) !== '55006') throw err
        }
      }
      if (attempt >= retry.attempts) {
        throw new BackupError(
          'database_busy',
          `${live} is still in use after ${attempt} attempts by sessions the agent may not end; nothing was swapped`,
          others.map((r) => r.who).join(', '),
        )
      }
      await sleep(retry.delayMs)
    }
  })
}
