// Hostile legacy backups against a real PostgreSQL: a backup_*.sql.gz is input from whoever could write the backup
// directory, and the restore must neither run their shell commands nor reach any database but its own scratch one.
import { spawn } from 'node:child_process'
import { access, chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { gzipSync } from 'node:zlib'
import { readFile } from 'node:fs/promises'
import t, { type Test } from 'tap'
import { BackupLocks, restoreBackup, takeBackup, type DatabaseTarget, type RestoreOptions } from '../../agent/backup/index.js'
import { skipUnless } from '../helpers/engines.js'
import { createTempDatabase, pgAvailable, pgUrl, query } from '../helpers/pg.js'
import { tempDir } from '../helpers/tmp.js'

const skip = skipUnless(await pgAvailable(), 'PostgreSQL')
const SCRIPT = resolve(import.meta.dirname, '../../scripts/restore_postgresql_backup.sh')
const LEGACY = 'backup_20240301_040000.sql.gz'

const target = (db: string, user = 'postgres', password = 'postgres'): DatabaseTarget => ({
  url: `postgres://${user}@127.0.0.1:5432/${db}`,
  password,
})

interface Rig {
  live: string
  other: string
  dir: string
  markers: string
  locks: BackupLocks
  user: string
  password: string
}

/** A live database and another one on the same server, and a marker directory the server's user may write too. */
async function rig(t: Test, as?: { user: string; password: string }): Promise<Rig> {
  const user = as?.user ?? 'postgres'
  const password = as?.password ?? 'postgres'
  const { name: live } = await createTempDatabase(t)
  const { name: other } = await createTempDatabase(t)
  if (as) await query('postgres', `ALTER DATABASE ${live} OWNER TO ${user}; ALTER DATABASE ${other} OWNER TO ${user}`)
  await query(
    live,
    `CREATE TABLE items (id int PRIMARY KEY, label text); INSERT INTO items VALUES (1, 'one'), (2, 'two');${as ? ` ALTER TABLE items OWNER TO ${user}` : ''}`,
  )
  await query(other, "CREATE TABLE victim (x text); INSERT INTO victim VALUES ('untouched')")
  const markers = await mkdtemp(join(tmpdir(), 'deploy-agent-marker-'))
  await chmod(markers, 0o777) // COPY … TO PROGRAM would run as the server's user
  t.teardown(async () => {
    await rm(markers, { recursive: true, force: true })
    for (const name of await leftovers(live)) await query('postgres', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    for (const role of await leftoverRoles(live)) await query('postgres', `DROP ROLE IF EXISTS "${role}"`)
  })
  return { live, other, dir: await tempDir(t), markers, locks: new BackupLocks(), user, password }
}

const leftovers = async (db: string): Promise<string[]> =>
  (await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${db}\\_%' ORDER BY 1`)).map(
    (r) => r.datname,
  )
const leftoverRoles = async (db: string): Promise<string[]> =>
  (await query<{ rolname: string }>('postgres', `SELECT rolname FROM pg_roles WHERE rolname LIKE '${db}\\_%' ORDER BY 1`)).map(
    (r) => r.rolname,
  )
const exists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  )
const state = async (r: Rig): Promise<unknown> => ({
  live: await query(r.live, 'SELECT to_jsonb(i)::text AS row FROM items i ORDER BY 1'),
  liveTables: await query(r.live, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"),
  other: await query(r.other, 'SELECT x FROM victim'),
  superusers: await query('postgres', 'SELECT rolname FROM pg_roles WHERE rolsuper ORDER BY 1'),
})

function options(r: Rig, calls: { prerestore: number }, extra: Partial<RestoreOptions> = {}): RestoreOptions {
  return {
    dir: r.dir,
    idOrName: LEGACY,
    database: target(r.live, r.user, r.password),
    takePrerestore: () => {
      calls.prerestore++
      return takeBackup({
        dir: r.dir,
        app: 'shop',
        env: 'prod',
        kind: 'prerestore',
        database: target(r.live, r.user, r.password),
        locks: r.locks,
      })
    },
    ...extra,
  }
}

/** Dumps that reached psql's shell, another database or superuser powers on the code before the fix. */
const RESTRICTED = /backslash commands are restricted/
const HOSTILE: Record<string, [(r: Rig) => string, RegExp]> = {
  'a \\! in the middle of a line': [(r) => `CREATE TABLE items (id int);\nSELECT 1; \\! touch ${join(r.markers, 'midline')}\n`, RESTRICTED],
  'a \\connect to another database': [(r) => `CREATE TABLE items (id int);\n\\connect ${r.other}\nDROP TABLE victim;\n`, RESTRICTED],
  'a fake COPY … FROM stdin; in a string': [
    (r) =>
      `CREATE TABLE items (id int);\nSELECT '\nCOPY items (id) FROM stdin;\n';\n\\! touch ${join(r.markers, 'string')}\n\\connect ${r.other}\nDROP TABLE victim;\n`,
    RESTRICTED,
  ],
  'a fake COPY … FROM stdin; in a comment': [
    (r) => `/*\nCOPY items (id) FROM stdin;\n*/\n\\! touch ${join(r.markers, 'comment')}\n`,
    RESTRICTED,
  ],
  'a \\restrict line of its own': [(r) => `\\unrestrict x\n\\restrict x\nSELECT 2; \\! touch ${join(r.markers, 'restrict')}\n`, RESTRICTED],
  'plain SQL using superuser powers': [
    (r) => `CREATE TABLE items (id int);\nCOPY (SELECT 1) TO PROGRAM 'touch ${join(r.markers, 'program')}';\n`,
    /must be superuser or have privileges of the pg_execute_server_program role/,
  ],
  'plain SQL dropping another database': [(r) => `CREATE TABLE items (id int);\nDROP DATABASE ${r.other};\n`, /must be owner of database/],
  'plain SQL making a superuser': [
    (r) => `CREATE TABLE items (id int);\nCREATE ROLE ${r.live}_evil SUPERUSER LOGIN PASSWORD 'x';\n`,
    /must be superuser to create superusers/,
  ],
}

async function assertHarmless(t: Test, r: Rig, before: unknown): Promise<void> {
  for (const name of ['midline', 'string', 'comment', 'restrict', 'program'])
    t.notOk(await exists(join(r.markers, name)), `no ${name} marker`)
  t.same(await state(r), before, 'the live database, the other database and the superusers are as they were')
  t.same(await leftovers(r.live), [], 'no scratch or old database is left')
  t.same(await leftoverRoles(r.live), [], 'no restore role is left')
}

t.test('restoreBackup: a hostile legacy dump runs no shell command and touches no other database', { skip }, async (t) => {
  for (const [what, [sql, why]] of Object.entries(HOSTILE)) {
    await t.test(what, async (t) => {
      const r = await rig(t)
      await writeFile(join(r.dir, LEGACY), gzipSync(sql(r)))
      const before = await state(r)
      const err = await restoreBackup(options(r, { prerestore: 0 })).then(
        () => null,
        (e: unknown) => e,
      )
      t.match(err, { code: 'restore_failed', message: /unchanged.*psql exited with status 3/s })
      t.match((err as Error | null)?.message, why)
      await assertHarmless(t, r, before)
    })
  }
})

t.test("restoreBackup: a legacy file that is not gzip'd SQL is refused before anything happens", { skip }, async (t) => {
  const r = await rig(t)
  const dump = await takeBackup({ dir: r.dir, app: 'shop', env: 'prod', kind: 'manual', database: target(r.live), locks: r.locks })
  const custom = await readFile(join(r.dir, dump.file))
  const cases: Record<string, Buffer> = {
    'a custom-format dump renamed .sql.gz': custom,
    "a gzip'd custom-format dump": gzipSync(custom),
    'not gzip at all': Buffer.from('SELECT 1;\n'),
    'binary inside the gzip': gzipSync(Buffer.from('SELECT 1;\n\0\0\0')),
  }
  for (const [what, bytes] of Object.entries(cases)) {
    await writeFile(join(r.dir, LEGACY), bytes)
    const calls = { prerestore: 0 }
    await t.rejects(restoreBackup(options(r, calls)), { code: 'backup_invalid', statusCode: 422, message: /not gzip'd SQL|neither/ }, what)
    t.equal(calls.prerestore, 0, `${what}: no pre-restore backup was taken`)
  }
  t.same(await leftovers(r.live), [])
})

t.test('restoreBackup: a psql without \\restrict is refused for legacy SQL, naming the version needed', { skip }, async (t) => {
  const r = await rig(t)
  await writeFile(join(r.dir, LEGACY), gzipSync('CREATE TABLE items (id int);\n'))
  const bin = await tempDir(t)
  const psql = join(bin, 'psql')
  await writeFile(psql, '#!/bin/sh\n[ "$1" = "--version" ] && { echo "psql (PostgreSQL) 15.13"; exit 0; }\nexec psql "$@"\n')
  await chmod(psql, 0o755)
  const calls = { prerestore: 0 }
  await t.rejects(restoreBackup(options(r, calls, { tools: { psql } })), {
    code: 'restore_failed',
    message: /psql 15\.13.*\\restrict.*15\.14/s,
  })
  t.equal(calls.prerestore, 0)
})

t.test(
  'restoreBackup: an agent role that is no superuser restores legacy SQL through its restore role; without CREATEROLE it is told what to grant',
  { skip },
  async (t) => {
    const user = `da_test_agent_${process.pid}`
    await query('postgres', `DROP ROLE IF EXISTS ${user}; CREATE ROLE ${user} LOGIN PASSWORD 'pw' CREATEDB`)
    t.teardown(() => query('postgres', `DROP ROLE IF EXISTS ${user}`))
    const r = await rig(t, { user, password: 'pw' })
    t.teardown(() => query('postgres', `DROP OWNED BY ${user}`).catch(() => {}))
    // What `pg_dump | gzip` of the live database writes, owner statements included.
    const dump = await new Promise<Buffer>((done, fail) => {
      const child = spawn('pg_dump', ['--no-password', `--dbname=${pgUrl(r.live)}`])
      const out: Buffer[] = []
      child.stdout.on('data', (d: Buffer) => out.push(d))
      child.on('error', fail)
      child.on('close', () => done(Buffer.concat(out)))
    })
    t.match(dump.toString(), new RegExp(`OWNER TO ${user};`))
    await writeFile(join(r.dir, LEGACY), gzipSync(dump))
    await query(r.live, "UPDATE items SET label = 'changed'")

    const calls = { prerestore: 0 }
    await t.rejects(restoreBackup(options(r, calls)), {
      code: 'restore_failed',
      message: new RegExp(`CREATEROLE.*ALTER ROLE "${user}" CREATEROLE`, 's'),
    })
    t.equal(calls.prerestore, 0, 'refused before the pre-restore backup')

    await query('postgres', `ALTER ROLE ${user} CREATEROLE`)
    const result = await restoreBackup(options(r, calls))
    t.same(await query(r.live, 'SELECT id, label FROM items ORDER BY id'), [
      { id: 1, label: 'one' },
      { id: 2, label: 'two' },
    ])
    t.same(
      await query(r.live, "SELECT tableowner FROM pg_tables WHERE tablename = 'items'"),
      [{ tableowner: user }],
      'the restored tables belong to the agent role',
    )
    t.same(await query('postgres', `SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = '${r.live}'`), [
      { owner: user },
    ])
    t.same(await leftoverRoles(r.live), [], 'the restore role is gone')
    await query('postgres', `DROP DATABASE IF EXISTS "${result.oldDatabase}" WITH (FORCE)`)
  },
)

/** Runs the shell recipe; never rejects. */
function runScript(args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((done) => {
    const child = spawn('bash', [SCRIPT, ...args], { env: { ...process.env, ...env } })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('close', (code) => done({ code, stderr }))
    child.stdin.end()
  })
}

t.test('restore_postgresql_backup.sh: a hostile legacy dump runs no shell command and touches no other database', { skip }, async (t) => {
  for (const [what, [sql, why]] of Object.entries(HOSTILE)) {
    await t.test(what, async (t) => {
      const r = await rig(t)
      const env = { DATABASE_URL: pgUrl(r.live), PGPASSWORD: '' }
      await writeFile(join(r.dir, LEGACY), gzipSync(sql(r)))
      const before = await state(r)
      const out = await runScript([join(r.dir, LEGACY), '--yes', '--app', 'shop', '--env', 'prod'], env)
      t.equal(out.code, 1, out.stderr)
      t.match(out.stderr, why)
      t.match(out.stderr, /the SQL restore failed/)
      await assertHarmless(t, r, before)
    })
  }
})

t.test("restore_postgresql_backup.sh: a legacy file that is not gzip'd SQL is refused", { skip }, async (t) => {
  const r = await rig(t)
  const dump = await takeBackup({ dir: r.dir, app: 'shop', env: 'prod', kind: 'manual', database: target(r.live), locks: r.locks })
  const custom = await readFile(join(r.dir, dump.file))
  const env = { DATABASE_URL: pgUrl(r.live), PGPASSWORD: '' }
  for (const bytes of [custom, gzipSync(custom)]) {
    await writeFile(join(r.dir, LEGACY), bytes)
    const out = await runScript([join(r.dir, LEGACY), '--yes', '--app', 'shop', '--env', 'prod'], env)
    t.equal(out.code, 1)
    t.match(out.stderr, /not gzip'd SQL/)
  }
  t.same(await leftovers(r.live), [])
})

t.test(
  'restore_postgresql_backup.sh: an agent role that is no superuser restores `pg_dump | gzip` through its restore role; without CREATEROLE it is told what to grant',
  { skip },
  async (t) => {
    const user = `da_test_script_${process.pid}`
    await query('postgres', `DROP ROLE IF EXISTS ${user}; CREATE ROLE ${user} LOGIN PASSWORD 'pw' CREATEDB`)
    t.teardown(() => query('postgres', `DROP ROLE IF EXISTS ${user}`))
    const r = await rig(t, { user, password: 'pw' })
    t.teardown(() => query('postgres', `DROP OWNED BY ${user}`).catch(() => {}))
    const dump = await new Promise<Buffer>((done, fail) => {
      const child = spawn('pg_dump', ['--no-password', `--dbname=${pgUrl(r.live)}`])
      const out: Buffer[] = []
      child.stdout.on('data', (d: Buffer) => out.push(d))
      child.on('error', fail)
      child.on('close', () => done(Buffer.concat(out)))
    })
    await writeFile(join(r.dir, LEGACY), gzipSync(dump))
    await query(r.live, "UPDATE items SET label = 'changed'")
    const env = { DATABASE_URL: `postgres://${user}:pw@127.0.0.1:5432/${r.live}`, PGPASSWORD: '' }
    const args = [join(r.dir, LEGACY), '--yes', '--app', 'shop', '--env', 'prod']

    const refused = await runScript(args, env)
    t.equal(refused.code, 1)
    t.match(refused.stderr, new RegExp(`lacks CREATEROLE, which a restore needs.*ALTER ROLE "${user}" CREATEROLE`))
    t.same(await query(r.live, 'SELECT id, label FROM items ORDER BY id'), [
      { id: 1, label: 'changed' },
      { id: 2, label: 'changed' },
    ])

    await query('postgres', `ALTER ROLE ${user} CREATEROLE`)
    const out = await runScript(args, env)
    t.equal(out.code, 0, out.stderr)
    t.same(await query(r.live, 'SELECT id, label FROM items ORDER BY id'), [
      { id: 1, label: 'one' },
      { id: 2, label: 'two' },
    ])
    t.same(
      await query(r.live, "SELECT tableowner FROM pg_tables WHERE tablename = 'items'"),
      [{ tableowner: user }],
      'the restored tables belong to the agent role',
    )
    t.same(await query('postgres', `SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = '${r.live}'`), [
      { owner: user },
    ])
    t.same(await leftoverRoles(r.live), [], 'the restore role is gone')
  },
)
