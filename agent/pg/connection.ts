// The PostgreSQL facade (as git/ and proxy/ are for git and nginx): connection targets, the environment pg tools
// run with (the password travels in PGPASSWORD, never in argv), short-lived pg clients, and names derived from a
// database's name. Statements on databases and roles are in admin.ts; the backup engine uses both.
import type pg from 'pg'
import { ValidationError } from '../errors.js'

/** A database as the engine is given it: the env's `database.url`, and the password read from its passwordFile. */
export interface DatabaseTarget {
  url: string
  /** Overrides a password in the URL. */
  password?: string
}

/** The paths of the tools the engine runs; tests substitute wrappers. */
export interface PgTools {
  pgDump: string
  pgRestore: string
  psql: string
  tar: string
  gzip: string
}

export const DEFAULT_TOOLS: PgTools = { pgDump: 'pg_dump', pgRestore: 'pg_restore', psql: 'psql', tar: 'tar', gzip: 'gzip' }

export interface Connection {
  /** The URL without its password: what may appear in argv and logs. */
  url: string
  password: string | undefined
  database: string
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

export function connectionOf(target: DatabaseTarget): Connection {
  let url: URL
  try {
    url = new URL(target.url)
  } catch {
    throw new ValidationError('database url must be a postgres://user@host[:port]/dbname URL')
  }
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''))
  if (!/^postgres(ql)?:$/.test(url.protocol) || !IDENTIFIER.test(database)) {
    throw new ValidationError('database url must be a postgres://user@host[:port]/dbname URL')
  }
  // libpq also reads `?password=` from the query (and lets it override the user-info): both leave the URL, so
  // neither reaches a tool's argv; the last copy wins as in libpq.
  const fromQuery = url.searchParams.getAll('password').at(-1)
  const fromUserinfo = url.password === '' ? undefined : decodeURIComponent(url.password)
  url.password = ''
  if (fromQuery !== undefined) url.searchParams.delete('password')
  const fromUrl = fromQuery ?? fromUserinfo
  return { url: url.toString(), password: target.password ?? fromUrl, database }
}

/** The same server and role, another database. */
export function onDatabase(conn: Connection, database: string): Connection {
  const url = new URL(conn.url)
  url.pathname = `/${database}`
  return { ...conn, url: url.toString(), database }
}

/** The same server and database, as another role (the restore role). */
export function asRole(conn: Connection, user: string, password: string): Connection {
  const url = new URL(conn.url)
  url.username = encodeURIComponent(user)
  return { ...conn, url: url.toString(), password }
}

/** The first release of each major version whose psql has `\restrict` (CVE-2025-8714); 18 and later all have it. */
const RESTRICT_SINCE: Readonly<Record<number, number>> = { 13: 22, 14: 19, 15: 14, 16: 10, 17: 6 }

/**
 * Why the psql of `psql --version` cannot be trusted with a legacy SQL backup (it has no `\restrict`, so nothing
 * stops a backslash command in the script), or null when it can.
 */
export function psqlRestrictProblem(versionOutput: string): string | null {
  const match = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?/.exec(versionOutput)
  const needed = 'psql 13.22, 14.19, 15.14, 16.10, 17.6 or 18 and later (they have \\restrict)'
  if (match === null) return `cannot tell the version of psql from "${versionOutput.slice(0, 80)}"; a legacy SQL restore needs ${needed}`
  const major = Number(match[1])
  const minor = Number(match[2] ?? 0)
  const since = RESTRICT_SINCE[major]
  if (major >= 18 || (since !== undefined && minor >= since)) return null
  return `psql ${match[1]}${match[2] === undefined ? '' : `.${match[2]}`} has no \\restrict, which a legacy SQL restore needs to keep the script from running psql commands; install ${needed}`
}

/** The environment of a pg tool: the agent's own, plus the password and a connect timeout. */
export function toolEnv(conn: Connection): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PGCONNECT_TIMEOUT: process.env.PGCONNECT_TIMEOUT ?? '10' }
  if (conn.password !== undefined) env.PGPASSWORD = conn.password
  return env
}

/** pg is loaded on first use: an agent with no database to back up never pays its start-up time and memory. */
let pgModule: Promise<typeof import('pg')> | undefined

/** Runs `fn` with a client connected to `conn`, always closing it. */
export async function withClient<T>(conn: Connection, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const url = new URL(conn.url)
  if (conn.password !== undefined) url.password = encodeURIComponent(conn.password)
  const { Client } = (await (pgModule ??= import('pg'))).default
  const client = new Client({ connectionString: url.toString(), connectionTimeoutMillis: 10_000 })
  client.on('error', () => {}) // a terminated session reports through the pending query, not as a crash
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end().catch(() => {})
  }
}

/** `<db>_<tag>_<id>`, the database part shortened so the whole stays within PostgreSQL's 63-byte limit. */
export function derivedName(database: string, tag: string, id: string): string {
  const suffix = `_${tag}_${id}`
  return `${database.slice(0, 63 - suffix.length)}${suffix}`
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

/** The SQLSTATE of a pg error, if any. */
export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined
}
