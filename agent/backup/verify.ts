// Verifying a backup: the dump's sha256 and size match the manifest, and pg_restore reads the whole dump
// (`-f /dev/null`: `--list` only reads the table of contents and misses a truncated or corrupt data section).
// Method 'restore' goes further: the dump is restored into a scratch database `<db>_verify_<id>`, whose row counts
// must equal the rows the dump itself holds (counted in its COPY blocks); the scratch database is then dropped.
import { join } from 'node:path'
import { ValidationError } from '../errors.js'
import { countRows, createDatabaseLike, CopyRowCounter, dropDatabase } from '../pg/admin.js'
import { BackupError, describe } from './errors.js'
import { writeManifest, type Manifest, type Verification, type VerifyMethod } from './manifest.js'
import {
  connectionOf,
  derivedName,
  DEFAULT_TOOLS,
  onDatabase,
  toolEnv,
  type Connection,
  type DatabaseTarget,
  type PgTools,
} from '../pg/connection.js'
import { exitProblem, hashFile, runTool, type Written } from './proc.js'

export interface VerifyResult {
  ok: boolean
  reason?: string
  /** method 'restore': rows per table in the scratch database. */
  tables?: Record<string, number>
}

export interface VerifyOptions {
  /** Required for method 'restore': the server (and role) the scratch database is created with. */
  database?: DatabaseTarget
  tools?: Partial<PgTools>
  now?: () => Date
  /** Record the result in the manifest (default true). */
  record?: boolean
}

/**
 * Verifies the backup `manifest` describes and records the result in its manifest (an atomic rewrite; `manifest`
 * itself is not changed). A bad backup is a result `{ ok: false, reason }`, not an error; an error (BackupError
 * verify_failed) means verification could not be done — e.g. the scratch database could not be created — and
 * nothing is recorded.
 */
export async function verifyBackup(
  dir: string,
  manifest: Manifest,
  method: VerifyMethod,
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  if (method === 'restore' && options.database === undefined)
    throw new ValidationError("verify method 'restore' needs the database to restore beside")
  const result = await check(dir, manifest, method, options)
  if (options.record !== false) {
    const verified: Verification = { at: (options.now?.() ?? new Date()).toISOString(), method, ok: result.ok }
    if (result.reason !== undefined) verified.reason = result.reason
    if (result.tables !== undefined) verified.tables = result.tables
    await writeManifest(dir, { ...manifest, verified })
  }
  return result
}

async function check(dir: string, manifest: Manifest, method: VerifyMethod, options: VerifyOptions): Promise<VerifyResult> {
  const tools = { ...DEFAULT_TOOLS, ...options.tools }
  const path = join(dir, manifest.file)
  const integrity = await matchesRecord(path, manifest.bytes, manifest.sha256)
  if (integrity !== null) return { ok: false, reason: `dump ${integrity}` }
  if (manifest.files !== undefined) {
    const archive = join(dir, manifest.files.file)
    const archiveIntegrity = await matchesRecord(archive, manifest.files.bytes, manifest.files.sha256)
    if (archiveIntegrity !== null) return { ok: false, reason: `files archive ${archiveIntegrity}` }
    const listed = await runTool([tools.tar, '-tzf', archive], process.env)
    const problem = exitProblem(listed)
    if (problem !== null) return { ok: false, reason: `files archive: tar ${problem}: ${listed.stderr}` }
  }
  if (method === 'full') return fullRead(tools, path)
  return restoreCheck(tools, path, connectionOf(options.database as DatabaseTarget), manifest.id)
}

/** null when `path` has `bytes` bytes hashing to `sha256`, else what is wrong. */
export async function matchesRecord(path: string, bytes: number, sha256: string): Promise<string | null> {
  let actual: Written
  try {
    actual = await hashFile(path)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'is missing' : `cannot be read (${describe(err)})`
  }
  if (actual.bytes !== bytes) return `has ${actual.bytes} bytes, the manifest says ${bytes}`
  return actual.sha256 === sha256 ? null : `sha256 is ${actual.sha256}, the manifest says ${sha256}`
}

/** pg_restore reads every entry of the dump, data included, and writes the script to /dev/null. */
export async function fullRead(tools: PgTools, path: string): Promise<VerifyResult> {
  const exit = await runTool([tools.pgRestore, '-f', '/dev/null', path], process.env)
  const problem = exitProblem(exit)
  return problem === null ? { ok: true } : { ok: false, reason: `pg_restore ${problem}: ${exit.stderr}` }
}

async function restoreCheck(tools: PgTools, path: string, conn: Connection, id: string): Promise<VerifyResult> {
  // The full read, counting the rows the dump holds on the way.
  const counter = new CopyRowCounter()
  const read = await runTool([tools.pgRestore, '-f', '-', path], process.env, counter)
  const readProblem = exitProblem(read)
  if (readProblem !== null) return { ok: false, reason: `pg_restore ${readProblem}: ${read.stderr}` }

  const scratch = derivedName(conn.database, 'verify', id)
  try {
    await dropDatabase(conn, scratch) // a leftover of an interrupted verification of the same backup
    await createDatabaseLike(conn, scratch)
  } catch (err) {
    throw new BackupError('verify_failed', `cannot create the scratch database ${scratch}`, describe(err), { cause: err })
  }
  try {
    const target = onDatabase(conn, scratch)
    const restored = await runTool(
      [tools.pgRestore, '--no-owner', '--exit-on-error', '--no-password', `--dbname=${target.url}`, path],
      toolEnv(conn),
    )
    const problem = exitProblem(restored)
    if (problem !== null) return { ok: false, reason: `restore into ${scratch}: pg_restore ${problem}: ${restored.stderr}` }
    const tables = await countRows(conn, scratch)
    const differ = [...new Set([...Object.keys(tables), ...Object.keys(counter.tables)])]
      .filter((t) => (tables[t] ?? 0) !== (counter.tables[t] ?? 0))
      .map((t) => `${t}: ${tables[t] ?? 0} restored, ${counter.tables[t] ?? 0} in the dump`)
    return differ.length === 0 ? { ok: true, tables } : { ok: false, reason: `row counts differ: ${differ.join('; ')}`, tables }
  } catch (err) {
    throw new BackupError('verify_failed', `verifying in ${scratch} failed`, describe(err), { cause: err })
  } finally {
    await dropDatabase(conn, scratch).catch(() => {})
  }
}
