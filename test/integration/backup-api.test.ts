// The backup endpoints on a real PostgreSQL: a manual backup in the background, the list, lastBackup in the
// status, re-verification, the retention dry run, and a restore that brings the old rows back.
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { findTarget } from '../../agent/config/targets.js'
import { buildTestAgent, signedInject, type TestAgent } from '../helpers/agent.js'
import { skipUnless } from '../helpers/engines.js'
import { createTempDatabase, pgAvailable, query } from '../helpers/pg.js'
import { tempDir } from '../helpers/tmp.js'

t.test('Backups over HTTP on a real PostgreSQL', { skip: skipUnless(await pgAvailable(), 'postgresql') }, async (t) => {
  const dir = await tempDir(t)
  const db = await createTempDatabase(t)
  await query(db.name, 'CREATE TABLE notes (id int primary key, body text); INSERT INTO notes VALUES (1, $$first$$), (2, $$second$$)')
  await writeFile(join(dir, 'db.password'), 'postgres\n')
  await mkdir(join(dir, 'uploads'))
  await writeFile(join(dir, 'uploads', 'photo.txt'), 'in the backup')
  t.teardown(async () => {
    const left = await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${db.name}\\_%'`)
    for (const row of left) await query('postgres', `DROP DATABASE IF EXISTS ${row.datname} WITH (FORCE)`)
  })
  const agent: TestAgent = await buildTestAgent(dir, {
    extra: {
      apps: {
        shop: {
          repo: '/srv/none.git',
          envs: {
            production: {
              ref: 'tag:v*',
              ports: [18101, 18102],
              database: { url: `postgres://postgres@127.0.0.1:5432/${db.name}`, passwordFile: 'db.password' },
              files: ['uploads'],
            },
            staging: { ref: 'branch:main', ports: [18103, 18104] },
          },
        },
      },
      backups: { dir: 'backups', verify: 'full' },
    },
  })
  t.teardown(() => agent.close())
  const token = { authorization: `Bearer ${agent.keys.statusToken}` }
  const list = async () =>
    JSON.parse((await agent.app.inject({ url: '/v1/backups', headers: token })).body).backups as Array<Record<string, unknown>>

  const started = await signedInject(agent, { url: '/v1/backups', body: { app: 'shop', env: 'production' } })
  t.equal(started.statusCode, 202, started.body)
  const { id } = JSON.parse(started.body) as { id: string }
  // Done when the status reports it as the env's last backup (verified, metrics counted); it is listed earlier.
  const lastBackup = async () =>
    JSON.parse((await agent.app.inject({ url: '/v1/status', headers: token })).body).apps.shop.envs.production.lastBackup
  for (let i = 0; i < 300 && (await lastBackup())?.id !== id; i++) await new Promise((r) => setTimeout(r, 100))
  const backup = (await list()).find((b) => b.id === id)
  t.ok(backup, 'the manual backup is listed once complete')
  t.equal(backup?.kind, 'manual')
  t.match(backup?.verified, { ok: true, method: 'full' })
  t.match(backup?.sha256, /^[0-9a-f]{64}$/)

  const status = JSON.parse((await agent.app.inject({ url: '/v1/status', headers: token })).body)
  t.match(status.apps.shop.envs.production.lastBackup, { id, verified: true })
  t.equal(status.apps.shop.envs.staging.lastBackup, null)

  const metrics = (await agent.app.inject({ url: '/metrics', headers: token })).body
  t.match(metrics, /deploy_agent_backups_total\{app="shop",env="production",kind="manual",result="ok"\} 1/)
  t.match(metrics, /deploy_agent_backup_last_success_timestamp_seconds\{app="shop",env="production"\} \d+/)

  const noDb = await signedInject(agent, { url: '/v1/backups', body: { app: 'shop', env: 'staging' } })
  t.equal(noDb.statusCode, 404, 'an env without a database has nothing to back up')

  const verified = await signedInject(agent, { url: `/v1/backups/${id}/verify`, body: {} })
  t.equal(verified.statusCode, 200, verified.body)
  t.equal(JSON.parse(verified.body).ok, true)

  const plan = await signedInject(agent, { url: '/v1/apps/shop/envs/production/backups/prune', body: { dryRun: true } })
  t.equal(plan.statusCode, 200, plan.body)
  t.match(JSON.parse(plan.body).text, new RegExp(`keep\\s+${id}`))

  await query(db.name, 'DELETE FROM notes WHERE id = 1; INSERT INTO notes VALUES (3, $$after the backup$$)')
  await writeFile(join(dir, 'uploads', 'photo.txt'), 'after the backup')
  const mismatch = await signedInject(agent, { url: `/v1/backups/${id}/restore`, body: { confirm: 'deadbeef' } })
  t.equal(mismatch.statusCode, 400, 'the body must repeat the id')
  const traversal = await signedInject(agent, { url: '/v1/backups/..%2F..%2Fetc%2Fpasswd/restore', body: { confirm: '../../etc/passwd' } })
  t.ok([400, 404].includes(traversal.statusCode), `a path is refused (${traversal.statusCode})`)
  const missing = await signedInject(agent, { url: '/v1/backups/0badc0de/restore', body: { confirm: '0badc0de' } })
  t.equal(missing.statusCode, 404)

  const restored = await signedInject(agent, { url: `/v1/backups/${id}/restore`, body: { confirm: id } })
  t.equal(restored.statusCode, 200, restored.body)
  const result = JSON.parse(restored.body) as {
    database: string
    oldDatabase: string
    prerestore: { id: string; kind: string; pinnedBy: string }
    files: { restored: { path: string; old: string }[] }
  }
  t.equal(await readFile(join(dir, 'uploads', 'photo.txt'), 'utf8'), 'in the backup', "the env's files are back too")
  t.same(result.files.restored, [{ path: join(dir, 'uploads'), old: join(dir, `uploads.old-${result.prerestore.id}`) }])
  t.equal(result.database, db.name)
  t.equal(result.prerestore.kind, 'prerestore')
  t.equal(result.prerestore.pinnedBy, `restore:${id}`)
  const rows = await query(db.name, 'SELECT id, body FROM notes ORDER BY id')
  t.same(
    rows,
    [
      { id: 1, body: 'first' },
      { id: 2, body: 'second' },
    ],
    'the rows of the backup are back',
  )
  const old = await query<{ n: number }>(result.oldDatabase, 'SELECT count(*)::int AS n FROM notes')
  t.equal(old[0]?.n, 2, 'the replaced database is kept under its old name')
  t.ok(
    (await list()).some((b) => b.kind === 'prerestore'),
    'the pre-restore backup is listed',
  )
})

t.test(
  'A pre-deploy backup waits behind a running backup of its env; a manual one is refused at once',
  { skip: skipUnless(await pgAvailable(), 'postgresql') },
  async (t) => {
    const dir = await tempDir(t)
    const db = await createTempDatabase(t)
    await query(db.name, 'CREATE TABLE notes (id int primary key)')
    const agent = await buildTestAgent(dir, {
      extra: {
        apps: {
          shop: {
            repo: '/srv/none.git',
            envs: {
              production: {
                ref: 'tag:v*',
                ports: [18101, 18102],
                database: { url: `postgres://postgres:postgres@127.0.0.1:5432/${db.name}` },
              },
            },
          },
        },
        backups: { dir: 'backups', verify: 'full' },
      },
    })
    t.teardown(() => agent.close())
    const target = findTarget(agent.config, 'shop', 'production')
    // What the nightly run holds while pg_dump streams.
    await mkdir(agent.backups.dir, { recursive: true })
    const releaseNightly = await agent.backups.locks.acquire(agent.backups.dir, 'shop', 'production')

    const predeploy = agent.backups.take(target, 'predeploy', { pinnedBy: 'v2' })
    await t.rejects(agent.backups.take(target, 'manual'), { code: 'backup_busy', statusCode: 409 }, 'an operator is told at once')
    await new Promise((r) => setTimeout(r, 1200))
    t.same(await agent.backups.list(), [], 'the pre-deploy backup has not started')
    const releasedAt = Math.floor(Date.now() / 1000) * 1000
    await releaseNightly()
    const taken = await predeploy
    t.match(taken, { kind: 'predeploy', pinnedBy: 'v2', verified: { ok: true } })
    t.ok(Date.parse(taken.createdAt) >= releasedAt, 'named when it really started, after the wait')
  },
)
