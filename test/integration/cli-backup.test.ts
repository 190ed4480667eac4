// The backup commands end to end: the real binary against a real agent (`serve`) and the real PostgreSQL —
// backup (waits until stored and verified), backups (list, verify, prune --dry-run), restore (--yes, refusal
// without a terminal, a path instead of an id) and a backup of an env whose database is unreachable.
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { cliEnvFor, runCli, startServe } from '../helpers/cli.js'
import { skipUnless } from '../helpers/engines.js'
import { createTempDatabase, pgAvailable, query } from '../helpers/pg.js'
import { freePorts } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

const skip = skipUnless(await pgAvailable(), 'PostgreSQL')

const rows = async (db: string): Promise<string[]> =>
  (await query<{ row: string }>(db, "SELECT id || ':' || name AS row FROM items ORDER BY id")).map((r) => r.row)
const databasesLike = async (prefix: string): Promise<string[]> =>
  (await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${prefix}%' ORDER BY 1`)).map(
    (r) => r.datname,
  )

t.test('CLI backups: backup, list, status, restore, verify, prune against a real agent and PostgreSQL', { skip }, async (t) => {
  const dir = await tempDir(t)
  const keys = await writeTestKeys(dir)
  const db = await createTempDatabase(t)
  // What a restore leaves beside the live database (the old one, kept) or, on failure, a half-restored copy.
  t.teardown(async () => {
    for (const name of [...(await databasesLike(`${db.name}_old_`)), ...(await databasesLike(`${db.name}_restore_`))]) {
      await query('postgres', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    }
  })
  await query(
    db.name,
    "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); INSERT INTO items VALUES (1, 'apple'), (2, 'pear'), (3, 'plum')",
  )
  const original = await rows(db.name)

  const [port, p1, p2, p3, p4] = (await freePorts(5)) as [number, number, number, number, number]
  await writeFile(join(dir, 'db.password'), 'postgres\n', { mode: 0o600 })
  const backupsDir = join(dir, 'backups')
  const database = (url: string) => ({ url, passwordFile: join(dir, 'db.password') })
  const configPath = join(dir, 'agent.yaml')
  await writeFile(
    configPath,
    stringify(
      testConfigDocument(dir, {
        listen: { host: '127.0.0.1', port },
        apps: {
          shop: {
            repo: '/srv/none.git',
            envs: {
              production: { ref: 'tag:v*', ports: [p1, p2], database: database(`postgres://postgres@127.0.0.1:5432/${db.name}`) },
              staging: { ref: 'branch:main', ports: [p3, p4], database: database(`postgres://postgres@127.0.0.1:1/${db.name}`) },
            },
          },
        },
        backups: { dir: backupsDir, verify: 'full' },
      }),
    ),
  )
  const url = `http://127.0.0.1:${port}`
  const agent = await startServe(configPath, url)
  t.teardown(() => agent.stop('SIGKILL'))
  await agent.nightlyCatchUpDone()
  const env = cliEnvFor(url, keys.dir)
  const cli = (...args: string[]) => runCli(args, env)

  // backup: waits until the backup is stored and verified, then prints it.
  const taken = await cli('backup', 'shop', 'production')
  t.equal(taken.code, 0, taken.stderr)
  const id = /^([0-9a-f]{8})\s+shop\/production\s+\d+(\.\d)? k?B\s+verified \(full\)$/m.exec(taken.stdout)?.[1]
  if (id === undefined) throw new Error(`backup printed no verified id:\n${taken.stdout}\n${taken.stderr}`)

  const help = await cli('backup', '--help')
  t.equal(help.code, 0)
  t.match(help.stdout, /Example:\n {2}deploy-agent backup shop production/)

  // backups: the table, and the JSON that names the dump file.
  const listed = await cli('backups')
  t.equal(listed.code, 0, listed.stderr)
  t.match(listed.stdout, /^ID\s+APP\s+ENV\s+KIND\s+CREATED\s+SIZE\s+VERIFIED\s+PINNED\n/)
  t.match(
    listed.stdout,
    new RegExp(
      `^${id}\\s+shop\\s+production\\s+manual\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ\\s+\\d+(\\.\\d)? k?B\\s+yes\\s+-$`,
      'm',
    ),
  )
  const listedJson = await cli('backups', '--json', '--app', 'shop', '--env', 'production')
  t.equal(listedJson.code, 0, listedJson.stderr)
  const entry = (
    JSON.parse(listedJson.stdout) as { backups: Array<{ id: string; file: string; verified: { ok: boolean } | null }> }
  ).backups.find((b) => b.id === id)
  t.match(entry, { id, verified: { ok: true } })
  const filtered = await cli('backups', '--app', 'other')
  t.equal(filtered.stdout.trim().split('\n').length, 1, 'the filter is applied: only the header is left')

  const status = await cli('status', '--json')
  t.equal(status.code, 0, status.stderr)
  t.match(JSON.parse(status.stdout).apps.shop.envs.production.lastBackup, { id, verified: true })

  // restore --yes: the old rows are back; the previous database is kept under the printed name.
  await query(db.name, "DELETE FROM items WHERE id = 1; UPDATE items SET name = 'changed'; INSERT INTO items VALUES (9, 'new')")
  t.notSame(await rows(db.name), original)
  const restored = await cli('restore', id, '--yes')
  t.equal(restored.code, 0, restored.stderr)
  t.match(restored.stdout, new RegExp(`restored ${id} into ${db.name}`))
  t.same(await rows(db.name), original, 'the rows of the backup are back')
  const oldDb = /old database kept as (\S+)/.exec(restored.stdout)?.[1]
  const prerestore = /pre-restore backup: ([0-9a-f]{8})/.exec(restored.stdout)?.[1]
  t.ok(oldDb?.startsWith(`${db.name}_old_`), `old database named: ${oldDb}`)
  t.same(await databasesLike(oldDb ?? '?'), [oldDb], 'the old database exists')
  t.equal(
    (await query<{ n: number }>(oldDb as string, 'SELECT count(*)::int AS n FROM items WHERE name = $$changed$$'))[0]?.n,
    2,
    'and holds the data of before',
  )
  t.match(
    (await cli('backups')).stdout,
    new RegExp(`^${prerestore}\\s+shop\\s+production\\s+prerestore\\s.*\\byes\\s+restore:${id}$`, 'm'),
    'the pre-restore backup is listed, pinned',
  )

  // restore without --yes and no terminal: usage error, nothing touched.
  await query(db.name, "INSERT INTO items VALUES (10, 'after')")
  const before = { rows: await rows(db.name), dbs: await databasesLike(`${db.name}_`), files: (await readdir(backupsDir)).sort() }
  const refused = await cli('restore', id)
  t.equal(refused.code, 2, 'refused as bad usage')
  t.match(refused.stderr, /--yes/)
  t.same(
    { rows: await rows(db.name), dbs: await databasesLike(`${db.name}_`), files: (await readdir(backupsDir)).sort() },
    before,
    'nothing changed',
  )

  // backups verify: sound, then a flipped byte in the dump is caught.
  const verified = await cli('backups', 'verify', id)
  t.equal(verified.code, 0, verified.stderr)
  t.match(verified.stdout, new RegExp(`^${id}\\s+ok$`, 'm'))
  const dumpPath = join(backupsDir, entry?.file ?? '?')
  const bytes = await readFile(dumpPath)
  const at = Math.floor(bytes.length / 2)
  bytes[at] = (bytes[at] as number) ^ 0xff
  await writeFile(dumpPath, bytes)
  const corrupt = await cli('backups', 'verify', id)
  t.equal(corrupt.code, 1, 'a corrupt dump fails verification')
  t.match(corrupt.stdout, new RegExp(`^${id}\\s+FAILED: .*sha256`, 'm'))
  t.match((await cli('backups')).stdout, new RegExp(`^${id}\\s.*\\bno\\s+-$`, 'm'), 'listed as failed verification')

  const plan = await cli('backups', 'prune', 'shop', 'production', '--dry-run')
  t.equal(plan.code, 0, plan.stderr)
  t.match(plan.stdout, new RegExp(`^keep\\s+${prerestore}\\b`, 'm'))
  t.match(plan.stdout, /dry run: nothing was deleted/)
  t.ok((await readdir(backupsDir)).includes(entry?.file ?? '?'), 'a dry run deletes nothing')

  const path = await cli('restore', '../../etc/passwd', '--yes')
  t.not(path.code, 0, 'a path is no backup name')
  t.match(path.stderr, /not a backup name.*never a path/)
  t.same(await rows(db.name), before.rows)

  // An env whose database is unreachable: the command reports the agent's error, no file is left.
  const started = Date.now()
  const unreachable = await cli('backup', 'shop', 'staging')
  t.equal(unreachable.code, 1, 'the backup fails')
  t.match(unreachable.stderr, /failed: backup_failed: /)
  t.ok(Date.now() - started < 60_000, 'the failure is reported as soon as the agent knows it, not at the timeout')
  t.same(
    (await readdir(backupsDir)).filter((f) => f.startsWith('shop_staging_')),
    [],
    'no file of it is left',
  )
  t.equal((await fetch(`${url}/healthz`)).status, 200, 'the agent still serves')
  t.equal((await cli('backups', 'verify', prerestore ?? '?')).code, 0, "and the other env's backups are fine")
})
