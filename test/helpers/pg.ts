import { randomBytes } from 'node:crypto'
import pg from 'pg'

const HOST = '127.0.0.1:5432'

/** The URL of `db` on the test server, as superuser postgres. */
export function pgUrl(db = 'postgres'): string {
  return `postgres://postgres:postgres@${HOST}/${db}`
}

/** Runs `fn` with a fresh connection to `url`, closed afterwards. */
export async function withClientAt<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/** Runs `fn` with a fresh superuser connection to `db`, closed afterwards. */
export function withClient<T>(db: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  return withClientAt(pgUrl(db), fn)
}

/** The rows of `text` on the server and database of `url` (a private server's), on a fresh connection. */
export function queryAt<R extends pg.QueryResultRow = Record<string, unknown>>(url: string, text: string): Promise<R[]> {
  return withClientAt(url, async (client) => (await client.query<R>(text)).rows)
}

const withAdmin = <T>(fn: (client: pg.Client) => Promise<T>): Promise<T> => withClient('postgres', fn)

/** The rows of `sql` run in `db`, on a fresh connection each time (a restore ends the sessions it may end). */
export async function query<R extends pg.QueryResultRow = Record<string, unknown>>(db: string, sql: string): Promise<R[]> {
  return withClient(db, async (client) => (await client.query<R>(sql)).rows)
}

/** True when the test PostgreSQL server accepts the postgres superuser. */
export async function pgAvailable(): Promise<boolean> {
  try {
    await withAdmin((c) => c.query('SELECT 1'))
    return true
  } catch {
    return false
  }
}

/** Creates a uniquely named empty database, dropped (connections and all) in `t`'s teardown. */
export async function createTempDatabase(t: { teardown: (fn: () => unknown) => void }): Promise<{ name: string; url: string }> {
  const name = `da_test_${process.pid}_${randomBytes(4).toString('hex')}`
  await withAdmin((c) => c.query(`CREATE DATABASE ${name}`))
  t.teardown(() => withAdmin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)))
  return { name, url: pgUrl(name) }
}
