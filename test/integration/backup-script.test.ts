import { spawn } from 'node:child_process'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { gzipSync } from 'node:zlib'
import t, { type Test } from 'tap'
import { BackupLocks, listBackups, takeBackup, type Manifest } from '../../agent/backup/index.js'
import { skipUnless } from '../helpers/engines.js'
import { createTempDatabase, pgAvailable, pgUrl, query } from '../helpers/pg.js'
import { tempDir } from '../helpers/tmp.js'

const skip = skipUnless(await pgAvailable(), 'PostgreSQL')
const SCRIPT = resolve(import.meta.dirname, '../../scripts/restore_postgresql_backup.sh')

/** Runs the script with `args`, `input` on stdin; never rejects. */
function script(args: string[], env: Record<string, string>, input = ''): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    // SCRIPT_AS=<user>: run it as that OS user (the test runs as root).
    const as = env.SCRIPT_AS !== undefined ? ['setpriv', `--reuid=${env.SCRIPT_AS}`, '--regid=nogroup', '--clear-groups'] : []
    const [command, ...argv] = [...as, 'bash', SCRIPT, ...args] as [string, ...string[]]
    const child = spawn(command, argv, { env: { ...process.env, ...env } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('close', (code) => done({ code, stdout, stderr }))
    child.stdin.end(input)
  })
}

const rows = async (db: string): Promise<unknown[]> => query(db, 'SELECT id, label FROM items ORDER BY id')
const leftovers = async (db: string): Promise<string[]> =>
  (await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${db}\\_%' ORDER BY 1`)).map(
    (r) => r.datname,
  )

async function rig(t: Test): Promise<{ db: string; dir: string; env: Record<string, string>; backup: Manifest }> {
  const { name: db } = await createTempDatabase(t)
  t.teardown(async () => {
    for (const name of await leftovers(db)) await query('postgres', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
  })
  await query(db, "CREATE TABLE items (id int PRIMARY KEY, label text); INSERT INTO items VALUES (1, 'one'), (2, 'two')")
  const dir = await tempDir(t)
  const backup = await takeBackup({
    dir,
    app: 'shop',
    env: 'prod',
    kind: 'nightly',
    database: { url: pgUrl(db) },
    locks: new BackupLocks(),
  })
  await query(db, "UPDATE items SET label = 'changed'; INSERT INTO items VALUES (3, 'three')")
  // The password is in the URL on purpose: the script moves it to PGPASSWORD.
  return { db, dir, backup, env: { DATABASE_URL: pgUrl(db), PGPASSWORD: '' } }
}

t.test(
  'restore_postgresql_backup.sh: restores an agent dump, keeps the old database, leaves a listed pre-restore backup',
  { skip },
  async (t) => {
    const r = await rig(t)
    const out = await script([join(r.dir, r.backup.file), '--yes'], r.env)
    t.equal(out.code, 0, out.stderr)
    t.same(await rows(r.db), [
      { id: 1, label: 'one' },
      { id: 2, label: 'two' },
    ])
    const old = /kept as (\S+);/.exec(out.stdout)?.[1] ?? ''
    t.match(old, new RegExp(`^${r.db}_old_[0-9a-f]{8}$`))
    t.same(await rows(old), [
      { id: 1, label: 'changed' },
      { id: 2, label: 'changed' },
      { id: 3, label: 'three' },
    ])
    t.same(await leftovers(r.db), [old])
    const listed = await listBackups(r.dir)
    t.match(
      listed.map((b) => [b.kind, b.pinnedBy]),
      [
        ['prerestore', `restore:${r.backup.id}`],
        ['nightly', null],
      ],
      'the manifest it wrote is valid',
    )
    t.equal(old, `${r.db}_old_${listed[0]?.id}`)
    t.same(
      (await readdir(r.dir)).filter((f) => f.startsWith('.') || f.endsWith('.partial')),
      [],
    )
  },
)

t.test(
  "restore_postgresql_backup.sh: a ?password= in DATABASE_URL goes to PGPASSWORD, never into a pg tool's argv",
  { skip },
  async (t) => {
    const r = await rig(t)
    // Every pg tool the script runs through PATH records its argv, then runs the real one.
    const bin = await tempDir(t)
    const log = join(bin, 'argv')
    for (const tool of ['psql', 'pg_dump', 'pg_restore']) {
      await writeFile(join(bin, tool), `#!/bin/sh\nprintf '%s\\n' "$0" "$@" >> '${log}'\nPATH='${process.env.PATH}' exec ${tool} "$@"\n`, {
        mode: 0o755,
      })
    }
    const url = `postgres://postgres@127.0.0.1:5432/${r.db}?sslmode=disable&password=postgres`
    const out = await script([join(r.dir, r.backup.file), '--yes'], { ...r.env, DATABASE_URL: url, PATH: `${bin}:${process.env.PATH}` })
    t.equal(out.code, 0, out.stderr)
    t.same(
      await rows(r.db),
      [
        { id: 1, label: 'one' },
        { id: 2, label: 'two' },
      ],
      'restored with the password from the query',
    )
    const argv = await readFile(log, 'utf8')
    t.match(argv, `/psql\n`, 'the wrappers ran')
    t.match(argv, `/${r.db}?sslmode=disable\n`, 'other parameters stay in the URL')
    t.notMatch(argv, /password=/, 'no password in any argv')
  },
)

t.test('restore_postgresql_backup.sh: without --yes, a wrong answer changes nothing', { skip }, async (t) => {
  const r = await rig(t)
  const before = await rows(r.db)
  const out = await script([join(r.dir, r.backup.file)], r.env, 'no\n')
  t.equal(out.code, 3)
  t.match(out.stderr, /Type the database name to confirm/)
  t.same(await rows(r.db), before)
  t.equal((await listBackups(r.dir)).length, 1, 'no pre-restore backup either')
  const confirmed = await script([join(r.dir, r.backup.file)], r.env, `${r.db}\n`)
  t.equal(confirmed.code, 0, confirmed.stderr)
})

t.test('restore_postgresql_backup.sh: a corrupt dump is refused before anything happens', { skip }, async (t) => {
  const r = await rig(t)
  const path = join(r.dir, r.backup.file)
  const bytes = await readFile(path)
  bytes.writeUInt8(bytes.readUInt8(100) ^ 1, 100)
  await writeFile(path, bytes)
  const out = await script([path, '--yes'], r.env)
  t.equal(out.code, 1)
  t.match(out.stderr, /does not match the sha256/)
  t.equal((await listBackups(r.dir)).length, 1)
})

t.test(
  'restore_postgresql_backup.sh: legacy SQL failing half way, or a \\connect, leaves the live database as it was',
  { skip },
  async (t) => {
    const r = await rig(t)
    const before = await rows(r.db)
    const failing = join(r.dir, 'backup_20240301_020000.sql.gz')
    await writeFile(
      failing,
      gzipSync("CREATE TABLE items (id int, label text);\nINSERT INTO items VALUES (9, 'legacy');\nSELECT * FROM no_such_table;\n"),
    )
    // No agent dump of this database beside it: nothing names the pre-restore backup.
    const out = await script([failing, '--yes'], { ...r.env, BACKUP_DIR: await tempDir(t) })
    t.equal(out.code, 1, 'legacy without --app/--env, and no agent dump of the database, is refused')
    t.match(out.stderr, /no agent backup readable in .* holds database .*: pass --app APP --env ENV/)
    const failed = await script([failing, '--yes', '--app', 'shop', '--env', 'prod'], r.env)
    t.equal(failed.code, 1)
    t.match(failed.stderr, /no_such_table[\s\S]*the SQL restore failed/)
    const connecting = join(r.dir, 'backup_20240301_030000.sql.gz')
    await writeFile(connecting, gzipSync(`CREATE TABLE x (id int);\n\\connect ${r.db}\nDROP TABLE items;\n`))
    const refused = await script([connecting, '--yes', '--app', 'shop', '--env', 'prod'], r.env)
    t.equal(refused.code, 1)
    t.match(refused.stderr, /backslash commands are restricted/)
    t.same(await rows(r.db), before)
    t.same(await leftovers(r.db), [])
    t.same(
      (await readdir(r.dir)).filter((f) => f.startsWith('.') || f.endsWith('.partial')),
      [],
    )
  },
)

/**
 * A team's setup: the backup role (owner of the database, CREATEDB CREATEROLE) and, when `separateApp`, an app role
 * with only CONNECT and table rights, password `p@ss`; a legacy `backup_…sql.gz` from plain pg_dump in the agent's
 * backup directory beside the agent's own dumps of shop/prod.
 */
async function teamRig(t: Test, separateApp: boolean) {
  const r = await rig(t)
  const tag = r.db.slice('da_test_'.length)
  const owner = `da_owner_${tag}`
  const app = separateApp ? `da_app_${tag}` : owner
  t.teardown(async () => {
    for (const name of [...(await leftovers(r.db)), r.db]) await query('postgres', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    for (const role of new Set([app, owner])) await query('postgres', `DROP OWNED BY "${role}"; DROP ROLE IF EXISTS "${role}"`)
  })
  await query(
    'postgres',
    `CREATE ROLE "${owner}" LOGIN CREATEDB CREATEROLE PASSWORD 'owner-secret'; ALTER DATABASE "${r.db}" OWNER TO "${owner}"`,
  )
  await query(r.db, `ALTER TABLE items OWNER TO "${owner}"`)
  if (separateApp) {
    await query('postgres', `CREATE ROLE "${app}" LOGIN PASSWORD 'p@ss'`)
    await query(r.db, `GRANT SELECT, INSERT, UPDATE, DELETE ON items TO "${app}"`)
  } else await query('postgres', `ALTER ROLE "${owner}" PASSWORD 'p@ss'`)
  // The legacy file: what the old shell script made (plain pg_dump | gzip) of the state before the changes.
  await query(r.db, "UPDATE items SET label = 'legacy'")
  const legacy = join(r.dir, 'backup_20261201_030000.sql.gz')
  const dump = await new Promise<Buffer>((done, fail) => {
    const chunks: Buffer[] = []
    const child = spawn('pg_dump', ['--dbname', pgUrl(r.db)])
    child.stdout.on('data', (d: Buffer) => chunks.push(d))
    child.on('error', fail)
    child.on('close', (code) => (code === 0 ? done(Buffer.concat(chunks)) : fail(new Error(`pg_dump exited ${code}`))))
  })
  await writeFile(legacy, gzipSync(dump))
  await query(r.db, "UPDATE items SET label = 'changed'")
  // The app's own URL as its env file has it: driver scheme, URL-encoded password, asyncpg-only parameters.
  const url = `postgresql+asyncpg://${app}:p%40ss@127.0.0.1:5432/${r.db}?prepared_statement_cache_size=0&ssl=disable`
  return { ...r, owner, app, legacy, env: { DATABASE_URL: url, PGPASSWORD: '' } }
}

t.test(
  "restore_postgresql_backup.sh: the app's own DATABASE_URL (driver scheme, encoded password, asyncpg parameters) restores a legacy file at the first try",
  { skip },
  async (t) => {
    const r = await teamRig(t, false)
    const out = await script([r.legacy, '--yes'], r.env)
    t.equal(out.code, 0, out.stderr)
    t.match(out.stderr, /ignoring prepared_statement_cache_size in DATABASE_URL/, 'says which parameters libpq is not given')
    t.same(await rows(r.db), [
      { id: 1, label: 'legacy' },
      { id: 2, label: 'legacy' },
      { id: 3, label: 'legacy' },
    ])
    const listed = await listBackups(r.dir)
    t.match(
      listed.filter((b) => b.kind === 'prerestore').map((b) => [b.app, b.env, b.pinnedBy]),
      [['shop', 'prod', 'restore:backup_20261201_030000.sql.gz']],
      'the pre-restore backup is named after the only app+env whose dumps hold this database',
    )
  },
)

t.test(
  'restore_postgresql_backup.sh: an app role that may not restore fails once, before anything, naming the backup role to use',
  { skip },
  async (t) => {
    const r = await teamRig(t, true)
    const out = await script([r.legacy, '--yes'], r.env)
    t.equal(out.code, 1)
    t.match(out.stderr, `role ${r.app} may not restore ${r.db}`)
    t.match(out.stderr, `--db-user ${r.owner}`, 'names the role that owns the database')
    t.notMatch(out.stderr, /ALTER ROLE/, 'does not tell the app role to be granted more')
    t.equal((await listBackups(r.dir)).filter((b) => b.kind === 'prerestore').length, 0, 'no pre-restore backup')
    t.same(await leftovers(r.db), [])
    t.same(
      (await rows(r.db)).map((row) => (row as { label: string }).label),
      ['changed', 'changed', 'changed'],
      'the live database untouched',
    )
    const passwordFile = join(await tempDir(t), 'owner.password')
    await writeFile(passwordFile, 'owner-secret\n')
    const again = await script([r.legacy, '--yes', '--db-user', r.owner, '--password-file', passwordFile], r.env)
    t.equal(again.code, 0, again.stderr)
    t.same(
      (await rows(r.db)).map((row) => (row as { label: string }).label),
      ['legacy', 'legacy', 'legacy'],
    )
    const grants = await query<{ ok: boolean }>(r.db, `SELECT has_table_privilege('${r.app}', 'items', 'SELECT') AS ok`)
    t.same(grants, [{ ok: true }], "the app role keeps its rights on the restored tables (the dump's GRANTs)")
  },
)

t.test(
  'restore_postgresql_backup.sh: run as an OS user who can neither see the backup nor write the directory, every problem is named at once',
  { skip: skip || (process.getuid?.() !== 0 ? 'needs root to run the script as nobody' : false) },
  async (t) => {
    const r = await teamRig(t, true)
    // `bash` as nobody: the rig's temp dir is root's and 0700, as the agent's backup directory is the agent's.
    const out = await script([r.legacy, '--yes'], { ...r.env, SCRIPT_AS: 'nobody' })
    t.equal(out.code, 1)
    t.match(out.stderr, /OS user nobody cannot look into \/tmp\/\S+: run this as its owner \(sudo -u root DATABASE_URL=… /)
    t.match(out.stderr, /OS user nobody cannot write the pre-restore backup into .*: run this as its owner \(sudo -u root/)
    t.match(out.stderr, `role ${r.app} may not restore ${r.db}`)
    t.match(out.stderr, /restore: nothing done\n$/)
    t.same(await leftovers(r.db), [])
  },
)
