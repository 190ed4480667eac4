import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { chmod, copyFile, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { gzipSync } from 'node:zlib'
import pg from 'pg'
import t, { type Test } from 'tap'
import {
  BackupLocks,
  listBackups,
  lockFileName,
  restoreBackup,
  takeBackup,
  verifyBackup,
  type DatabaseTarget,
  type Manifest,
  type RestoreOptions,
} from '../../agent/backup/index.js'
import { matchesRecord } from '../../agent/backup/verify.js'
import { canMountTmpfs } from '../helpers/disk.js'
import { skipUnless } from '../helpers/engines.js'
import { createTempDatabase, pgAvailable, query } from '../helpers/pg.js'
import { tempDir } from '../helpers/tmp.js'

type Teardown = { teardown: (fn: () => unknown) => void }

const skip = skipUnless(await pgAvailable(), 'PostgreSQL')
const run = promisify(execFile)

const mountSkip = skip !== false ? skip : (await canMountTmpfs()) ? false : 'mounting a tmpfs is not permitted here'

const target = (db: string): DatabaseTarget => ({ url: `postgres://postgres@127.0.0.1:5432/${db}`, password: 'postgres' })

/** A database with a few tables, and one backup of it already taken into a fresh directory. */
async function rig(
  t: Teardown,
  dirIn?: string,
): Promise<{ db: string; dir: string; locks: BackupLocks; earlier: Manifest; take: (extra?: object) => Promise<Manifest> }> {
  const { name: db } = await createTempDatabase(t)
  await query(
    db,
    `
    CREATE TABLE items (id int PRIMARY KEY, label text);
    INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 2000) g;
    CREATE TABLE notes (body text); INSERT INTO notes VALUES ('keep me');`,
  )
  const dir = dirIn ?? (await tempDir(t))
  const locks = new BackupLocks()
  const take = (extra: object = {}): Promise<Manifest> =>
    takeBackup({ dir, app: 'shop', env: 'prod', kind: 'manual', database: target(db), locks, ...extra })
  return { db, dir, locks, earlier: await take(), take }
}

/** Earlier backups are listed and hash as their manifests say; nothing partial or manifest-less is left behind. */
async function assertIntact(t: Test, dir: string, earlier: Manifest[]): Promise<void> {
  const listed = await listBackups(dir)
  for (const m of earlier) {
    t.ok(
      listed.some((b) => b.id === m.id),
      `backup ${m.id} is still listed`,
    )
    t.equal(await matchesRecord(join(dir, m.file), m.bytes, m.sha256), null, `backup ${m.id} is intact`)
  }
  const files = await readdir(dir)
  t.same(
    files.filter((f) => f.endsWith('.partial') || f.endsWith('.tmp')),
    [],
    'no partial or temp file remains',
  )
  const dumps = files.filter((f) => f.endsWith('.dump') || f.endsWith('.files.tar.gz'))
  const orphans = dumps.filter((f) => !files.includes(f.replace(/\.(dump|files\.tar\.gz)$/, '.manifest.json')))
  t.same(orphans, [], 'no dump without its manifest remains')
  t.same(
    files.filter((f) => f.startsWith('.lock-')),
    [],
    'no lock file remains',
  )
}

/** What the live database holds, to show a failed restore left it as it was. */
const fingerprint = async (db: string): Promise<unknown> => ({
  tables: (await query(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")).map((r) => r.tablename),
  items: await query(db, 'SELECT count(*)::int AS n, sum(id)::int AS s FROM items'),
  notes: await query(db, 'SELECT body FROM notes'),
})
const leftovers = async (db: string): Promise<string[]> =>
  (await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${db}\\_%' ORDER BY 1`)).map(
    (r) => r.datname,
  )

async function script(t: Teardown, name: string, body: string): Promise<string> {
  const path = join(await tempDir(t), name)
  await writeFile(path, `#!/bin/sh\n${body}\n`)
  await chmod(path, 0o755)
  return path
}

function restoreOptions(
  rig: { db: string; dir: string; locks: BackupLocks },
  idOrName: string,
  calls: { prerestore: number },
): RestoreOptions {
  return {
    dir: rig.dir,
    idOrName,
    database: target(rig.db),
    takePrerestore: () => {
      calls.prerestore++
      return takeBackup({ dir: rig.dir, app: 'shop', env: 'prod', kind: 'prerestore', database: target(rig.db), locks: rig.locks })
    },
  }
}

t.test('takeBackup: pg_dump killed mid-stream fails the backup and leaves nothing of it', { skip }, async (t) => {
  const r = await rig(t)
  const pgDump = await script(
    t,
    'pg_dump',
    ['[ "$1" = "--version" ] && exec pg_dump --version', 'pg_dump "$@" | head -c 1000', 'echo "about to die" >&2', 'kill -KILL $$'].join(
      '\n',
    ),
  )
  const err = await r.take({ tools: { pgDump } }).then(
    () => null,
    (e: unknown) => e,
  )
  t.match(err, { code: 'backup_failed', statusCode: 500, message: /pg_dump was killed by SIGKILL.*about to die/s })
  await assertIntact(t, r.dir, [r.earlier])
  t.equal((await listBackups(r.dir)).length, 1)
})

t.test('takeBackup: pg_dump exiting non-zero after writing fails the backup with its stderr', { skip }, async (t) => {
  const r = await rig(t)
  const pgDump = await script(
    t,
    'pg_dump',
    '[ "$1" = "--version" ] && exec pg_dump --version\nprintf PGDMP-half\necho "pg_dump: error: query failed" >&2\nexit 1',
  )
  await t.rejects(r.take({ tools: { pgDump } }), { code: 'backup_failed', message: /exited with status 1: pg_dump: error: query failed/ })
  await assertIntact(t, r.dir, [r.earlier])
})

t.test('takeBackup: an aborted backup kills pg_dump and leaves nothing of it', { skip }, async (t) => {
  const r = await rig(t)
  const pgDump = await script(t, 'pg_dump', '[ "$1" = "--version" ] && exec pg_dump --version\nprintf PGDMP-started\nexec sleep 30')
  const controller = new AbortController()
  const started = Date.now()
  setTimeout(() => controller.abort(), 300)
  await t.rejects(r.take({ tools: { pgDump }, signal: controller.signal }), { code: 'backup_failed', message: /pg_dump was cancelled/ })
  t.ok(Date.now() - started < 10_000, 'without waiting for pg_dump')
  await assertIntact(t, r.dir, [r.earlier])
})

t.test('takeBackup: an unreachable database fails the backup, and only it', { skip }, async (t) => {
  const r = await rig(t)
  const wrongPort = { url: `postgres://postgres@127.0.0.1:1/${r.db}`, password: 'postgres' }
  await t.rejects(r.take({ database: wrongPort }), { code: 'backup_failed', message: /unreachable.*ECONNREFUSED/ })
  const wrongDb = target(`${r.db}_missing`)
  await t.rejects(r.take({ database: wrongDb }), { code: 'backup_failed', message: /does not exist/ })
  await assertIntact(t, r.dir, [r.earlier])
  t.ok(await r.take(), 'the next backup works')
})

t.test('takeBackup: a full disk fails the backup and removes its partial', { skip: mountSkip }, async (t) => {
  const mountPoint = await mkdtemp(join(tmpdir(), 'deploy-agent-tmpfs-'))
  await run('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', mountPoint])
  t.teardown(async () => {
    await run('umount', [mountPoint])
    await rm(mountPoint, { recursive: true, force: true })
  })
  const r = await rig(t, mountPoint) // the small earlier backup fits
  // ~8 MB of random hex: several times what is left on the 1 MB file system even compressed.
  await query(
    r.db,
    'CREATE TABLE big AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) AS v FROM generate_series(1, 100000) g',
  )
  await t.rejects(r.take(), { code: 'backup_failed', message: /No space left on device|ENOSPC/ })
  await assertIntact(t, r.dir, [r.earlier])
  t.same(await verifyBackup(r.dir, r.earlier, 'full'), { ok: true }, 'the earlier backup still verifies')
})

t.test('verifyBackup: a bit flipped in a stored dump is caught, and such a backup is never restored', { skip }, async (t) => {
  const r = await rig(t)
  const path = join(r.dir, r.earlier.file)
  const bytes = await readFile(path)
  const middle = Math.floor(bytes.length / 2)
  bytes.writeUInt8(bytes.readUInt8(middle) ^ 0x04, middle)
  await writeFile(path, bytes)

  const result = await verifyBackup(r.dir, r.earlier, 'full')
  t.match(result, { ok: false, reason: /sha256 is [0-9a-f]{64}, the manifest says/ })
  t.match((await listBackups(r.dir))[0], { id: r.earlier.id, verified: { ok: false, method: 'full' } })

  const before = await fingerprint(r.db)
  const calls = { prerestore: 0 }
  await t.rejects(restoreBackup(restoreOptions(r, r.earlier.id, calls)), { code: 'backup_invalid', statusCode: 422 })
  t.equal(calls.prerestore, 0, 'no pre-restore backup for a restore that cannot happen')
  t.same(await fingerprint(r.db), before)
  t.same(await leftovers(r.db), [])
})

t.test('verifyBackup: a truncated dump passes pg_restore --list but not the full read', { skip }, async (t) => {
  const r = await rig(t)
  const path = join(r.dir, r.earlier.file)
  const copy = join(await tempDir(t), 'copy.dump')
  await copyFile(path, copy)
  await truncate(path, Math.floor(r.earlier.bytes * 0.7))
  // Make the manifest agree with the truncated file, so that only the full read can tell.
  const cut = await readFile(path)
  const { createHash } = await import('node:crypto')
  const lying: Manifest = { ...r.earlier, bytes: cut.length, sha256: createHash('sha256').update(cut).digest('hex') }

  await run('pg_restore', ['--list', path]) // succeeds: the table of contents is intact
  const result = await verifyBackup(r.dir, lying, 'full')
  t.match(result, { ok: false, reason: /pg_restore exited with status 1/ })
  t.match(await verifyBackup(r.dir, r.earlier, 'full'), { ok: false, reason: /has \d+ bytes, the manifest says/ })
  await copyFile(copy, path)
  t.same(await verifyBackup(r.dir, r.earlier, 'full'), { ok: true })
})

t.test('takeBackup: two backups of one app+env at once: one runs, the other is refused with backup_busy', { skip }, async (t) => {
  const r = await rig(t)
  const results = await Promise.allSettled([r.take(), r.take()])
  const done = results.flatMap((x) => (x.status === 'fulfilled' ? [x.value] : []))
  t.equal(done.length, 1)
  t.match(
    results.find((x) => x.status === 'rejected'),
    { reason: { code: 'backup_busy', statusCode: 409 } },
  )
  await assertIntact(t, r.dir, [r.earlier, ...done])
  // Another app+env is not held up.
  t.ok(await takeBackup({ dir: r.dir, app: 'shop', env: 'staging', kind: 'manual', database: target(r.db), locks: r.locks }))
})

t.test('takeBackup: a lock held by another live process is busy; one left by a dead process is taken over', { skip }, async (t) => {
  const r = await rig(t)
  const lock = join(r.dir, lockFileName('shop', 'prod'))
  const live = spawn('sleep', ['60'])
  t.teardown(() => void live.kill())
  await writeFile(lock, `${live.pid}\n`)
  await t.rejects(r.take(), { code: 'backup_busy', message: new RegExp(`pid ${live.pid}`) })
  t.equal(await readFile(lock, 'utf8'), `${live.pid}\n`, "the other process's lock is left alone")

  const dead = spawn(process.execPath, ['-e', ''])
  await once(dead, 'exit')
  await writeFile(lock, `${dead.pid}\n`)
  const m = await r.take()
  await assertIntact(t, r.dir, [r.earlier, m])
})

t.test('restoreBackup: names outside the backup directory or of no backup are refused before anything happens', { skip }, async (t) => {
  const r = await rig(t)
  const before = await fingerprint(r.db)
  const calls = { prerestore: 0 }
  for (const name of ['../../etc/passwd', '/etc/passwd', '..', 'a/../../b', 'x\0y']) {
    await t.rejects(restoreBackup(restoreOptions(r, name, calls)), { code: 'invalid_request', statusCode: 400 }, JSON.stringify(name))
  }
  for (const name of ['deadbeef', 'shop_prod_20270101T000000Z_manual_deadbeef.dump', 'backup_20200101_000000.sql.gz', 'passwd']) {
    await t.rejects(restoreBackup(restoreOptions(r, name, calls)), { code: 'not_found', statusCode: 404 }, name)
  }
  t.equal(calls.prerestore, 0)
  t.same(await fingerprint(r.db), before)
  t.same(await leftovers(r.db), [])
  await assertIntact(t, r.dir, [r.earlier])
})

t.test('restoreBackup: SQL failing half way leaves the live database untouched and drops the scratch one', { skip }, async (t) => {
  const r = await rig(t)
  const name = 'backup_20240301_020000.sql.gz'
  await writeFile(
    join(r.dir, name),
    gzipSync(
      [
        'CREATE TABLE items (id int PRIMARY KEY, label text);',
        "INSERT INTO items VALUES (1, 'from legacy');",
        'CREATE TABLE legacy_only (x int);',
        'SELECT * FROM no_such_table;',
        "INSERT INTO items VALUES (2, 'never reached');",
        '',
      ].join('\n'),
    ),
  )
  const before = await fingerprint(r.db)
  const calls = { prerestore: 0 }
  await t.rejects(restoreBackup(restoreOptions(r, name, calls)), {
    code: 'restore_failed',
    message: new RegExp(`${r.db} is unchanged.*psql exited with status 3.*no_such_table`, 's'),
  })
  t.equal(calls.prerestore, 1, 'the pre-restore backup had been taken')
  t.same(await fingerprint(r.db), before)
  t.same(await leftovers(r.db), [], `no ${r.db}_restore_… or _old_… database`)
  await assertIntact(t, r.dir, [r.earlier])
})

t.test('restoreBackup: pg_restore failing half way changes nothing', { skip }, async (t) => {
  const r = await rig(t)
  // The real pg_restore creates the tables, then the "restore" fails before any data.
  const pgRestore = await script(
    t,
    'pg_restore',
    [
      'case "$*" in *--dbname=*) pg_restore --section=pre-data "$@" && echo "pg_restore: error: could not execute query: boom" >&2; exit 1;; esac',
      'exec pg_restore "$@"',
    ].join('\n'),
  )
  const before = await fingerprint(r.db)
  const calls = { prerestore: 0 }
  await t.rejects(restoreBackup({ ...restoreOptions(r, r.earlier.id, calls), tools: { pgRestore } }), {
    code: 'restore_failed',
    message: /boom/,
  })
  t.same(await fingerprint(r.db), before)
  t.same(await leftovers(r.db), [])
})

t.test('restoreBackup: a legacy script that would \\connect elsewhere is refused', { skip }, async (t) => {
  const r = await rig(t)
  const name = 'backup_20240301_030000.sql.gz'
  await writeFile(join(r.dir, name), gzipSync(`CREATE TABLE x (id int);\n\\connect ${r.db}\nDROP TABLE items;\n`))
  const before = await fingerprint(r.db)
  await t.rejects(restoreBackup(restoreOptions(r, name, { prerestore: 0 })), {
    code: 'restore_failed',
    message: /backslash commands are restricted/,
  })
  t.same(await fingerprint(r.db), before)
  t.same(await leftovers(r.db), [])
})

t.test('restoreBackup: sessions of another role keep the database busy: nothing is swapped', { skip }, async (t) => {
  const r = await rig(t)
  const role = `da_test_role_${process.pid}`
  await query('postgres', `DROP ROLE IF EXISTS ${role}; CREATE ROLE ${role} LOGIN PASSWORD 'pw'`)
  const other = new pg.Client({ connectionString: `postgres://${role}:pw@127.0.0.1:5432/${r.db}` })
  other.on('error', () => {})
  await other.connect()
  t.teardown(async () => {
    await other.end().catch(() => {})
    await query('postgres', `DROP ROLE IF EXISTS ${role}`)
  })
  const before = await fingerprint(r.db)
  const err = await restoreBackup({ ...restoreOptions(r, r.earlier.id, { prerestore: 0 }), retry: { attempts: 3, delayMs: 50 } }).then(
    () => null,
    (e: unknown) => e,
  )
  t.match(err, { code: 'database_busy', statusCode: 409, message: new RegExp(`after 3 attempts.*${role}`, 's') })
  t.same((await other.query('SELECT 1 AS one')).rows, [{ one: 1 }], "the other role's session was not ended")
  t.same(await fingerprint(r.db), before)
  t.same(await leftovers(r.db), [])
})
