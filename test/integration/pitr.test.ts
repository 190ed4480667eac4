// Point-in-time recovery against the real PostgreSQL on 127.0.0.1:5432 (test/helpers/pitr.ts: a role, database and
// slot of the test's own), a real pg_receivewal and pg_basebackup, a private recovery instance.
import { readdir, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { startAgent } from '../../agent/cli/serve.js'
import { listBaseBackups } from '../../agent/pitr/base-backup.js'
import { createLogger } from '../../agent/observability/logger.js'
import { skipUnless } from '../helpers/engines.js'
import { pgAvailable, query, queryAt, withClient } from '../helpers/pg.js'
import { beforeMigration, ids, insert, makePitrDatabase, pitrConfig, range, setUpPitr, startPitr } from '../helpers/pitr.js'
import { tempDir } from '../helpers/tmp.js'
import { signedInject, testConfigDocument, writeTestKeys, type TestAgent } from '../helpers/agent.js'
import { freePort } from '../helpers/ports.js'
import { canRunPrivatePostgres, startPrivatePostgres } from '../helpers/private-pg.js'

const skip = skipUnless(await pgAvailable(), 'PostgreSQL')
const privateSkip = skipUnless(await canRunPrivatePostgres(), 'a private PostgreSQL server (root, a postgres user, the server binaries)')

t.test('PITR: restore to before a destructive migration brings the rows back and drops its change', { skip }, async (t) => {
  const s = await setUpPitr(t)
  await s.sql("CREATE TABLE items (id int PRIMARY KEY, name text); CREATE TABLE notes (x text); INSERT INTO notes VALUES ('kept')")
  await insert(s, 1, 100)
  const point = await beforeMigration(s, 'd_migrate01')
  t.match(point, { restorePoint: 'deploy_d_migrate01', lsn: /^[0-9A-F]+\/[0-9A-F]+$/ })
  // The "migration": destroys data, then the app writes on.
  await s.sql('DROP TABLE notes; DELETE FROM items WHERE id > 10')
  await insert(s, 200, 205)
  const result = await s.pitr.restore(s.target, { beforeDeploy: 'd_migrate01' })
  t.match(result, { database: s.db, oldDatabase: new RegExp(`^${s.db}_old_`) })
  t.same(await ids(s.db), range(1, 100), 'every row written before the restore point is back, none after it')
  t.same(await query(s.db, 'SELECT x FROM notes'), [{ x: 'kept' }], 'the dropped table is back')
  t.same(await ids(result.oldDatabase), [...range(1, 10), ...range(200, 205)], 'the database as it was is kept aside')

  // A time: the rows committed before it, none after.
  await s.sql('TRUNCATE items')
  await insert(s, 1, 5)
  await new Promise((r) => setTimeout(r, 1100))
  const { rows } = await withClient(s.db, (c) =>
    c.query<{ at: string }>("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00' AS at"),
  )
  await new Promise((r) => setTimeout(r, 1100))
  await insert(s, 6, 9)
  await s.pitr.restore(s.target, { time: (rows[0] as { at: string }).at })
  t.same(await ids(s.db), range(1, 5))
})

t.test('PITR: a damaged compressed segment fails the restore with gzip’s words, and the live database stays', { skip }, async (t) => {
  const s = await setUpPitr(t)
  await s.sql('CREATE TABLE items (id int PRIMARY KEY, name text)')
  await insert(s, 1, 10)
  // Whole segments after the base backup: the receiver stores each gzip'd once it is complete.
  const wal = join(s.dir, 'backups', 'pitr', 'shop_prod', 'wal')
  const whole = async () => (await readdir(wal)).filter((n) => /^[0-9A-F]{24}\.gz$/.test(n)).sort()
  const before = (await whole()).length
  for (let i = 0; i < 3; i++) {
    await insert(s, 100 + i, 100 + i)
    await query('postgres', 'SELECT pg_switch_wal()')
  }
  for (let i = 0; i < 100 && (await whole()).length < before + 2; i++) await new Promise((r) => setTimeout(r, 100))
  const damaged = (await whole()).at(-2) as string
  await truncate(join(wal, damaged), 200)
  await insert(s, 200, 205)
  const { rows } = await withClient(s.db, (c) =>
    c.query<{ at: string }>("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00' AS at"),
  )
  const err = await s.pitr.restore(s.target, { time: (rows[0] as { at: string }).at }).catch((e: unknown) => e)
  t.match(err, { code: 'pitr_failed', message: new RegExp(`gzip: .*${damaged}: unexpected end of file`) })
  t.same(await ids(s.db), [...range(1, 10), 100, 101, 102, ...range(200, 205)], 'the live database is untouched')
})

t.test('PITR: unreachable targets are refused up front and change nothing', { skip }, async (t) => {
  const s = await setUpPitr(t)
  await s.sql('CREATE TABLE items (id int PRIMARY KEY, name text)')
  await insert(s, 1, 3)
  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => 'accepted',
      (err: { code?: string }) => err.code,
    )
  t.equal(await refusal(s.pitr.restore(s.target, { lsn: 'FF/0' })), 'pitr_target_unreachable', 'past the received WAL')
  t.equal(await refusal(s.pitr.restore(s.target, { time: '2999-01-01T00:00:00+00:00' })), 'pitr_target_unreachable', 'in the future')
  t.equal(await refusal(s.pitr.restore(s.target, { lsn: '0/1' })), 'pitr_target_unreachable', 'before the base backup')
  t.equal(await refusal(s.pitr.restore(s.target, { beforeDeploy: 'd_unknown000' })), 'pitr_unknown_deploy')
  s.points.set('d_nomigrate0', {})
  t.equal(await refusal(s.pitr.restore(s.target, { beforeDeploy: 'd_nomigrate0' })), 'pitr_target_unreachable', 'no restore point')
  t.same(await ids(s.db), [1, 2, 3])
  const dbs = await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${s.db}%' ORDER BY 1`)
  t.same(
    dbs.map((d) => d.datname),
    [s.db],
    'no side database was made',
  )
})

t.test('PITR: a receiver SIGKILLed is restarted and recovery stays exact', { skip }, async (t) => {
  const s = await setUpPitr(t)
  await s.sql('CREATE TABLE items (id int PRIMARY KEY, name text)')
  await insert(s, 1, 50)
  const receiver = s.pitr.receiver(s.target)
  const pid = receiver?.pid as number
  process.kill(pid, 'SIGKILL')
  await insert(s, 51, 60) // written while no receiver runs: the slot keeps it
  await beforeMigration(s, 'd_afterkill0')
  t.ok((receiver?.restarts ?? 0) >= 1, 'restarted')
  t.not(receiver?.pid, pid)
  await s.sql('DELETE FROM items')
  await s.pitr.restore(s.target, { beforeDeploy: 'd_afterkill0' })
  t.same(await ids(s.db), range(1, 60))
})

t.test('PITR: serve starts the receiver and a base backup, and the signed API restores to a time', { skip }, async (t) => {
  const user: { stop?: () => Promise<unknown> } = {}
  const d = await makePitrDatabase(t, user)
  const dir = await tempDir(t, 'deploy-agent-pitr-serve-')
  const keys = await writeTestKeys(dir)
  const port = await freePort()
  const configPath = join(dir, 'agent.yaml')
  const document = testConfigDocument(dir, { listen: { host: '127.0.0.1', port }, backups: { dir: join(dir, 'backups'), verify: 'none' } })
  const production = (document.apps as { web: { envs: { production: Record<string, unknown> } } }).web.envs.production
  production.database = { url: d.url, pitr: { slot: d.slot } }
  await writeFile(configPath, stringify(document))
  const agent = await startAgent(configPath, createLogger({ level: 'silent' }))
  user.stop = () => agent.close()
  const base = join(dir, 'backups', 'pitr', 'web_production', 'base')
  for (let i = 0; i < 300 && (await listBaseBackups(base)).length === 0; i++) await new Promise((r) => setTimeout(r, 100))
  t.equal((await listBaseBackups(base)).length, 1, 'a base backup at start-up')
  await d.sql('CREATE TABLE items (id int PRIMARY KEY, name text)')
  await insert(d, 1, 3)
  const [{ at }] = (await query<{ at: string }>(
    d.db,
    "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00' AS at",
  )) as [{ at: string }]
  await new Promise((r) => setTimeout(r, 50))
  await insert(d, 4, 6)
  const res = await signedInject({ app: agent.app, keys } as unknown as TestAgent, {
    url: '/v1/backups/pitr/restore',
    body: { app: 'web', env: 'production', target: { time: at }, confirm: 'web/production' },
  })
  t.equal(res.statusCode, 200, res.body)
  t.same(await ids(d.db), [1, 2, 3])
  // The env's window and health reach the status and the metrics (checked every 15 s; the first right after start-up).
  const bearer = { authorization: `Bearer ${keys.statusToken}` }
  const statusRes = await agent.app.inject({ url: '/v1/status', headers: bearer })
  t.equal(statusRes.statusCode, 200, statusRes.body)
  const status = JSON.parse(statusRes.body) as {
    apps: { web: { envs: { production: { pitr: { slot: string; window: { earliest: unknown } } | null } } } }
  }
  t.match(status.apps.web.envs.production.pitr, { slot: d.slot, window: { earliest: { baseBackup: /^\d{8}T\d{6}Z$/ } } })
  const metrics = (await agent.app.inject({ url: '/metrics', headers: bearer })).body
  t.match(metrics, /deploy_agent_pitr_receiver_up\{app="web",env="production"\} 1/)
  t.match(metrics, /deploy_agent_pitr_slot_wal_status\{app="web",env="production",status="reserved"\} 1/)
})

t.test('PITR: the database server restarted: the receiver reconnects and recovery stays exact', { skip: privateSkip }, async (t) => {
  const server = await startPrivatePostgres(t)
  await queryAt(server.url(), 'CREATE DATABASE app')
  const dir = await tempDir(t, 'deploy-agent-pitr-restart-')
  const config = pitrConfig(dir, { url: server.url('app'), slot: 'deploy_agent_shop_prod' })
  // Stopped before the server's own teardown, registered earlier, removes it.
  const { pitr, target, points } = await startPitr(config, (p) => t.teardown(() => p.stop()), { receiverBackoffMs: 100 })
  const sql = (text: string) => queryAt(server.url('app'), text)
  await sql('CREATE TABLE items (id int PRIMARY KEY, name text)')
  await insert({ sql }, 1, 20)
  await server.stop('fast')
  await server.start()
  await insert({ sql }, 21, 30)
  const point = await pitr.restorePoint(target, 'd_restart0001')
  points.set('d_restart0001', point ?? {})
  t.ok((pitr.receiver(target)?.restarts ?? 0) >= 1, 'the receiver was restarted')
  await sql('DELETE FROM items')
  await pitr.restore(target, { beforeDeploy: 'd_restart0001' })
  t.same(
    (await queryAt<{ id: number }>(server.url('app'), 'SELECT id FROM items ORDER BY id')).map((r) => r.id),
    range(1, 30),
  )
})
