// Scratch databases beside the live one (`<db>_verify_<id>`, `<db>_restore_<id>`): create one like the live
// database, count its rows, drop it; and the restore role that owns only `<db>_restore_<id>` while a backup is
// loaded into it. Every statement runs from a session on the live database's server.
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import { onDatabase, quoteIdent, sqlState, withClient, type Connection } from './connection.js'

/**
 * Creates `name` from template0 with the encoding and locale of `conn`'s database, owned by the agent's role
 * (which needs CREATEDB) or by `owner`. Dumps restore into a database like the one they came from.
 */
export async function createDatabaseLike(conn: Connection, name: string, owner?: string): Promise<void> {
  await withClient(conn, async (client) => {
    const { rows } = await client.query<{ d: Record<string, unknown> }>(
      'SELECT to_jsonb(d) AS d FROM pg_database d WHERE datname = current_database()',
    )
    const db = rows[0]?.d ?? {}
    const literal = (v: unknown): string => client.escapeLiteral(String(v))
    const options = ['TEMPLATE template0']
    if (typeof db.encoding === 'number') {
      const { rows: enc } = await client.query<{ name: string }>('SELECT pg_encoding_to_char($1) AS name', [db.encoding])
      if (enc[0] !== undefined) options.push(`ENCODING ${literal(enc[0].name)}`)
    }
    if (typeof db.datcollate === 'string') options.push(`LC_COLLATE ${literal(db.datcollate)}`)
    if (typeof db.datctype === 'string') options.push(`LC_CTYPE ${literal(db.datctype)}`)
    const icuLocale = db.daticulocale ?? db.datlocale
    if (db.datlocprovider === 'i' && typeof icuLocale === 'string') options.push(`LOCALE_PROVIDER icu ICU_LOCALE ${literal(icuLocale)}`)
    if (owner !== undefined) options.push(`OWNER ${quoteIdent(owner)}`)
    await client.query(`CREATE DATABASE ${quoteIdent(name)} ${options.join(' ')}`)
  })
}

/**
 * Why the agent's role cannot restore, or null. A restore loads the backup as a new role that owns only the scratch
 * database, so the agent's role must create databases and roles (or be a superuser, which it should not be).
 */
export async function restorePrivilegeProblem(conn: Connection): Promise<string | null> {
  const { rows } = await withClient(conn, (client) =>
    client.query<{ name: string; super: boolean; createdb: boolean; createrole: boolean }>(
      'SELECT rolname AS name, rolsuper AS super, rolcreatedb AS createdb, rolcreaterole AS createrole FROM pg_roles WHERE rolname = current_user',
    ),
  )
  const me = rows[0]
  if (me === undefined || me.super) return null
  const missing = [me.createdb ? null : 'CREATEDB', me.createrole ? null : 'CREATEROLE'].filter((p) => p !== null)
  if (missing.length === 0) return null
  return `the database role ${me.name} needs ${missing.join(' and ')} to restore (a restore runs as a new role that owns only the scratch database); grant it with ALTER ROLE ${quoteIdent(me.name)} ${missing.join(' ')}`
}

/**
 * Creates the login role a backup is loaded as: no superuser, no CREATEDB/CREATEROLE, member of nothing, so the
 * script can reach no database but the one it will own. (It inherits: the only role it is in is the implicit
 * pg_database_owner of that database, which gives it the public schema.) The agent's role is made a member of it, which lets it
 * create that database for it and take its objects back. The password goes to the server as a SCRAM verifier,
 * so it appears in no server log.
 */
export async function createRestoreRole(conn: Connection, role: string, password: string): Promise<void> {
  await withClient(conn, async (client) => {
    await client.query(
      `CREATE ROLE ${quoteIdent(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD ${client.escapeLiteral(scramVerifier(password))}`,
    )
    await client.query(`GRANT ${quoteIdent(role)} TO CURRENT_USER`)
  })
}

/**
 * After a load: the restore role can no longer log in, its sessions are ended, and what it created in `conn`'s
 * database (the scratch one), the database itself included, now belongs to the agent's role. Database-level
 * settings it may have made are reset. The role is then empty and can be dropped.
 */
export async function takeBackFromRole(conn: Connection, role: string): Promise<void> {
  await withClient(conn, async (client) => {
    await client.query(`ALTER ROLE ${quoteIdent(role)} NOLOGIN`)
    await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [role])
    await client.query(`REASSIGN OWNED BY ${quoteIdent(role)} TO CURRENT_USER`)
    await client.query(`DROP OWNED BY ${quoteIdent(role)}`)
    await client.query(`ALTER DATABASE ${quoteIdent(conn.database)} RESET ALL`)
  })
}

export async function dropRole(conn: Connection, role: string): Promise<void> {
  await withClient(conn, (client) => client.query(`DROP ROLE IF EXISTS ${quoteIdent(role)}`))
}

/** PostgreSQL's SCRAM-SHA-256 verifier of `password` (RFC 5802/7677, as `CREATE ROLE … PASSWORD` stores it). */
function scramVerifier(password: string): string {
  const salt = randomBytes(16)
  const iterations = 4096
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256')
  const storedKey = createHash('sha256').update(createHmac('sha256', salted).update('Client Key').digest()).digest()
  const serverKey = createHmac('sha256', salted).update('Server Key').digest()
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`
}

/** Drops `name` if it exists; if sessions linger (our own, closing), retries with FORCE. */
export async function dropDatabase(conn: Connection, name: string): Promise<void> {
  await withClient(conn, async (client) => {
    try {
      await client.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)}`)
    } catch (err) {
      if (sqlState(err) !== '55006') throw err
      await client.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`)
    }
  })
}

export async function databaseExists(conn: Connection, name: string): Promise<boolean> {
  return withClient(conn, async (client) => {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])
    return rowCount === 1
  })
}

/**
 * Rows of every user table of database `name` (ordinary tables and partitions; not extension members), keyed
 * `schema.table` quoted as pg_dump writes them in its COPY statements.
 */
export async function countRows(conn: Connection, name: string): Promise<Record<string, number>> {
  return withClient(onDatabase(conn, name), async (client) => {
    const { rows: tables } = await client.query<{ key: string; nspname: string; relname: string }>(`
      SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS key, n.nspname, c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind = 'r'
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
       ORDER BY 1`)
    const counts: Record<string, number> = {}
    for (const t of tables) {
      const { rows } = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${quoteIdent(t.nspname)}.${quoteIdent(t.relname)}`)
      counts[t.key] = Number(rows[0]?.n ?? 0)
    }
    return counts
  })
}

const HEAD = 1024
const NEWLINE = 0x0a

/**
 * Reads pg_restore's SQL output (`pg_restore -f -`) and counts the data rows of each `COPY <table> … FROM stdin;`
 * block: one line per row up to the `\.` line. Only the first bytes of each line are kept, whatever the dump's size.
 */
export class CopyRowCounter extends Writable {
  readonly tables: Record<string, number> = {}
  private table: string | null = null
  private head: Buffer[] = []
  private headBytes = 0

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    let start = 0
    for (let nl = chunk.indexOf(NEWLINE, start); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
      this.keep(chunk.subarray(start, nl))
      this.line(Buffer.concat(this.head).toString('utf8'))
      this.head = []
      this.headBytes = 0
      start = nl + 1
    }
    this.keep(chunk.subarray(start))
    callback()
  }

  private keep(part: Buffer): void {
    if (this.headBytes >= HEAD || part.length === 0) return
    const kept = part.subarray(0, HEAD - this.headBytes)
    this.head.push(kept)
    this.headBytes += kept.length
  }

  private line(text: string): void {
    if (this.table !== null) {
      if (text === '\\.' || text === '\\.\r') this.table = null
      else this.tables[this.table] = (this.tables[this.table] ?? 0) + 1
      return
    }
    if (!text.startsWith('COPY ')) return
    const name = qualifiedName(text.slice(5))
    if (name !== null) {
      this.table = name
      this.tables[name] ??= 0
    }
  }
}

/** The leading `schema.table` of `text` (each part bare or "quoted" with "" escapes), as written. */
export function qualifiedName(text: string): string | null {
  let i = 0
  const part = (): boolean => {
    if (text[i] === '"') {
      for (i++; i < text.length; i++) {
        if (text[i] === '"') {
          if (text[i + 1] === '"') i++
          else return ++i > 0
        }
      }
      return false
    }
    const from = i
    while (i < text.length && /[A-Za-z0-9_$\u0080-\uffff]/.test(text[i] as string)) i++
    return i > from
  }
  if (!part()) return null
  if (text[i] === '.') {
    i++
    if (!part()) return null
  }
  return text.slice(0, i)
}
