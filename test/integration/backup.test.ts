import { execFile, spawn } from 'node:child_process'
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { promisify } from 'node:util'
import { createGzip } from 'node:zlib'
import { createWriteStream } from 'node:fs'
import pg from 'pg'
import t from 'tap'
import {
  BackupLocks,
  cleanPartials,
  listBackups,
  readManifest,
  restoreBackup,
  takeBackup,
  verifyBackup,
  type DatabaseTarget,
  type Manifest,
} from '../../agent/backup/index.js'
import { matchesRecord } from '../../agent/backup/verify.js'
import { skipUnless } from '../helpers/engines.js'
import { createTempDatabase, pgAvailable, pgUrl, query } from '../helpers/pg.js'
import { tempDir } from '../helpers/tmp.js'

type Teardown = { teardown: (fn: () => unknown) => void }

const skip = skipUnless(await pgAvailable(), 'PostgreSQL')
const run = promisify(execFile)

const SEED = `
  CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, note text);
  INSERT INTO customers (name, note) VALUES ('ada', 'tab\there'), ('grace', E'line\\nbreak'), ('linus', NULL);
  CREATE SCHEMA billing;
  CREATE TABLE billing."Invoices" (id int PRIMARY KEY, customer int REFERENCES customers, cents bigint);
  INSERT INTO billing."Invoices" VALUES (1, 1, 1999), (2, 2, 4500);
  CREATE TABLE empty_table (x int);
`

/** The URL without its password, the password apart: the way the agent passes them. */
const target = (db: string): DatabaseTarget => ({ url: `postgres://postgres@127.0.0.1:5432/${db}`, password: 'postgres' })

async function seeded(t: Teardown): Promise<{ name: string }> {
  const db = await createTempDatabase(t)
  await query(db.name, SEED)
  return db
}

const dropLater = (t: Teardown, name: string): void => t.teardown(() => query('postgres', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`))
const databasesLike = async (prefix: string): Promise<string[]> =>
  (await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${prefix}%' ORDER BY 1`)).map(
    (r) => r.datname,
  )
const customers = async (db: string): Promise<string[]> =>
  (await query<{ row: string }>(db, "SELECT id || ':' || name || ':' || coalesce(note, 'NULL') AS row FROM customers ORDER BY id")).map(
    (r) => r.row,
  )

t.test('takeBackup: a dump and its manifest, listed, verified by a full read and by a scratch restore', { skip }, async (t) => {
  const db = await seeded(t)
  const dir = join(await tempDir(t), 'backups')
  const m = await takeBackup({
    dir,
    app: 'shop',
    env: 'prod',
    kind: 'manual',
    database: target(db.name),
    locks: new BackupLocks(),
    now: () => new Date('2027-02-03T04:05:06.789Z'),
  })

  t.match(m, {
    v: 1,
    app: 'shop',
    env: 'prod',
    kind: 'manual',
    createdAt: '2027-02-03T04:05:06Z',
    verified: null,
    pinnedBy: null,
    pgServerVersion: /^\d+/,
    pgDumpVersion: /pg_dump/,
  })
  t.equal(m.file, `shop_prod_20270203T040506Z_manual_${m.id}.dump`)
  t.notOk('files' in m)
  t.same((await readdir(dir)).sort(), [m.file, m.file.replace('.dump', '.manifest.json')])
  t.equal((await stat(join(dir, m.file))).mode & 0o777, 0o600)
  t.equal((await stat(dir)).mode & 0o777, 0o700)
  t.equal((await stat(join(dir, m.file))).size, m.bytes)
  t.equal(await matchesRecord(join(dir, m.file), m.bytes, m.sha256), null)
  t.equal((await readFile(join(dir, m.file))).subarray(0, 5).toString(), 'PGDMP')
  t.same(await listBackups(dir), [{ ...m, legacy: false }])

  t.same(await verifyBackup(dir, m, 'full'), { ok: true })
  const manifestName = m.file.replace('.dump', '.manifest.json')
  t.match((await readManifest(dir, manifestName)).verified, { method: 'full', ok: true, at: /Z$/ })

  const result = await verifyBackup(dir, m, 'restore', { database: target(db.name) })
  t.same(result, { ok: true, tables: { 'billing."Invoices"': 2, 'public.customers': 3, 'public.empty_table': 0 } })
  t.match((await readManifest(dir, manifestName)).verified, { method: 'restore', ok: true, tables: result.tables })
  t.same(await databasesLike(`${db.name}_verify_`), [], 'the scratch database is dropped')
  t.same(await cleanPartials(dir), [], 'a complete backup is not a leftover')
})

t.test('takeBackup: the password reaches pg_dump in PGPASSWORD, never in its arguments', { skip }, async (t) => {
  const db = await seeded(t)
  const tools = await tempDir(t)
  const pgDump = join(tools, 'pg_dump')
  await writeFile(
    pgDump,
    `#!/bin/sh\nprintf '%s\\n' "$@" >> ${tools}/argv\nprintf '%s' "$PGPASSWORD" > ${tools}/password\nexec pg_dump "$@"\n`,
    { mode: 0o755 },
  )
  const m = await takeBackup({
    dir: await tempDir(t),
    app: 'shop',
    env: 'prod',
    kind: 'manual',
    database: { url: pgUrl(db.name) },
    locks: new BackupLocks(),
    tools: { pgDump },
  })
  t.ok(m.bytes > 0)
  const argv = await readFile(join(tools, 'argv'), 'utf8')
  t.match(argv, `--dbname=postgres://postgres@127.0.0.1:5432/${db.name}`)
  t.notMatch(argv, ':postgres@', 'no password in argv')
  t.equal(await readFile(join(tools, 'password'), 'utf8'), 'postgres')
})

t.test('takeBackup: a ?password= in the database URL reaches pg_dump in PGPASSWORD, never in its arguments', { skip }, async (t) => {
  const db = await seeded(t)
  const tools = await tempDir(t)
  const pgDump = join(tools, 'pg_dump')
  await writeFile(
    pgDump,
    `#!/bin/sh\nprintf '%s\\n' "$@" >> ${tools}/argv\nprintf '%s' "$PGPASSWORD" > ${tools}/password\nexec pg_dump "$@"\n`,
    { mode: 0o755 },
  )
  const url = `postgres://postgres@127.0.0.1:5432/${db.name}?password=postgres`
  const m = await takeBackup({
    dir: await tempDir(t),
    app: 'shop',
    env: 'prod',
    kind: 'manual',
    database: { url },
    locks: new BackupLocks(),
    tools: { pgDump },
  })
  t.ok(m.bytes > 0, 'the real pg_dump authenticated with the password from PGPASSWORD')
  const argv = await readFile(join(tools, 'argv'), 'utf8')
  t.match(argv, `--dbname=postgres://postgres@127.0.0.1:5432/${db.name}\n`)
  t.notMatch(argv, /password=|:postgres@/, 'no password in argv')
  t.equal(await readFile(join(tools, 'password'), 'utf8'), 'postgres')
})

t.test('takeBackup: the files archive round-trips, hashed and listed in the manifest', { skip }, async (t) => {
  const db = await seeded(t)
  const root = await tempDir(t)
  const uploads = join(root, 'srv', 'uploads')
  await mkdir(join(uploads, 'nested', 'deeper'), { recursive: true })
  const binary = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 256))
  await writeFile(join(uploads, 'a.txt'), 'hello')
  await writeFile(join(uploads, 'nested', 'deeper', 'b.bin'), binary)
  await writeFile(join(uploads, '-rf'), 'a name like an option')
  const dir = join(root, 'backups')

  const m = await takeBackup({
    dir,
    app: 'shop',
    env: 'prod',
    kind: 'predeploy',
    database: target(db.name),
    files: [`${uploads}/`],
    locks: new BackupLocks(),
    pinnedBy: 'v1.2.3',
  })
  t.match(m, { pinnedBy: 'v1.2.3', files: { file: m.file.replace('.dump', '.files.tar.gz'), paths: [uploads] } })
  const archive = join(dir, m.files?.file ?? '')
  t.equal(await matchesRecord(archive, m.files?.bytes ?? -1, m.files?.sha256 ?? ''), null)
  t.equal((await stat(archive)).mode & 0o777, 0o600)
  t.same(await verifyBackup(dir, m, 'full'), { ok: true })

  const out = join(root, 'extracted')
  await mkdir(out)
  await run('tar', ['-xzf', archive, '-C', out])
  const copy = join(out, uploads)
  t.equal(await readFile(join(copy, 'a.txt'), 'utf8'), 'hello')
  t.same(await readFile(join(copy, 'nested', 'deeper', 'b.bin')), binary)
  t.equal(await readFile(join(copy, '-rf'), 'utf8'), 'a name like an option')
})

t.test('restoreBackup: data changed after the backup comes back, the old database is kept beside it', { skip }, async (t) => {
  const db = await seeded(t)
  const dir = await tempDir(t)
  const locks = new BackupLocks()
  const m = await takeBackup({ dir, app: 'shop', env: 'prod', kind: 'nightly', database: target(db.name), locks })
  const before = await customers(db.name)

  await query(
    db.name,
    `
    UPDATE customers SET name = 'changed' WHERE id = 1;
    DELETE FROM billing."Invoices" WHERE id = 2;
    INSERT INTO customers (name) VALUES ('newcomer');
    CREATE TABLE added_later (x int);`,
  )
  t.not((await customers(db.name)).join(), before.join())

  // A session of the agent's own role on the live database: it is ended so that the swap can happen.
  const session = new pg.Client({ connectionString: pgUrl(db.name) })
  session.on('error', () => {})
  await session.connect()
  t.teardown(() => session.end().catch(() => {}))

  let prerestoreCalls = 0
  const result = await restoreBackup({
    dir,
    idOrName: m.id,
    database: target(db.name),
    takePrerestore: () => {
      prerestoreCalls++
      return takeBackup({
        dir,
        app: 'shop',
        env: 'prod',
        kind: 'prerestore',
        pinnedBy: `restore:${m.id}`,
        database: target(db.name),
        locks,
      })
    },
  })
  dropLater(t, result.oldDatabase)

  t.equal(prerestoreCalls, 1)
  t.match(result, {
    backup: { id: m.id, file: m.file, format: 'custom' },
    database: db.name,
    oldDatabase: `${db.name}_old_${result.prerestore.id}`,
  })
  t.same(await customers(db.name), before, 'the backed-up rows are back')
  t.same(await query(db.name, 'SELECT id, customer, cents::int FROM billing."Invoices" ORDER BY id'), [
    { id: 1, customer: 1, cents: 1999 },
    { id: 2, customer: 2, cents: 4500 },
  ])
  t.same(await query(db.name, "SELECT 1 FROM pg_tables WHERE tablename = 'added_later'"), [])
  t.match(
    await customers(result.oldDatabase),
    ['1:changed:tab\there', /^2:grace/, '3:linus:NULL', '4:newcomer:NULL'],
    'the old database holds what was live',
  )
  t.same(await databasesLike(`${db.name}_restore_`), [])
  await t.rejects(session.query('SELECT 1'), "the agent role's session on the old database was ended")

  const listed = await listBackups(dir)
  t.same(
    listed.map((b) => [b.id, b.kind, b.pinnedBy]),
    [
      [result.prerestore.id, 'prerestore', `restore:${m.id}`],
      [m.id, 'nightly', null],
    ],
  )
  t.match(listed[1], { verified: { method: 'full', ok: true } }, 'restoring verified the backup first')
})

t.test('restoreBackup: a legacy backup_*.sql.gz from `pg_dump | gzip` restores', { skip }, async (t) => {
  const db = await seeded(t)
  const dir = await tempDir(t)
  const legacy = join(dir, 'backup_20240101_120000.sql.gz')
  const dump = spawn('pg_dump', ['--no-password', `--dbname=${target(db.name).url}`], { env: { ...process.env, PGPASSWORD: 'postgres' } })
  await pipeline(dump.stdout, createGzip(), createWriteStream(legacy))
  const before = await customers(db.name)
  await query(db.name, 'DELETE FROM billing."Invoices"; DELETE FROM customers')

  t.match(await listBackups(dir), [{ id: 'backup_20240101_120000.sql.gz', legacy: true, createdAt: '2024-01-01T12:00:00Z' }])
  const locks = new BackupLocks()
  const result = await restoreBackup({
    dir,
    idOrName: 'backup_20240101_120000.sql.gz',
    database: target(db.name),
    takePrerestore: () => takeBackup({ dir, app: 'shop', env: 'prod', kind: 'prerestore', database: target(db.name), locks }),
  })
  dropLater(t, result.oldDatabase)
  t.match(result.backup, { id: 'backup_20240101_120000.sql.gz', format: 'sql.gz' })
  t.same(await customers(db.name), before)
  t.same(await customers(result.oldDatabase), [])
})

export type { Manifest }
