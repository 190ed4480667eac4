// Fault: PostgreSQL stops (fast shutdown: every session is ended) on a server of the test's own, once while a
// migration holds a connection and once while pg_dump streams a backup. The migration's failure must fail the deploy
// with the old release serving and no migration container left; the backup's must leave no partial file and no
// manifest, keep the previous good backup listed and verifiable, release the lock, and be counted and listed.
import { execFile } from 'node:child_process'
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { findTarget } from '../../agent/config/targets.js'
import { buildTestAgent } from '../helpers/agent.js'
import { startAgentRig } from '../helpers/agent-rig.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { makeGitRepo } from '../helpers/git.js'
import { canRunPrivatePostgres, startPrivatePostgres } from '../helpers/private-pg.js'
import { sampleReleaseFiles } from '../helpers/sample-app.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
t.setTimeout(20 * 60_000)
const privatePg = skipUnless(await canRunPrivatePostgres(), 'a private PostgreSQL (root, postgres user, server binaries)')
const docker = skipUnless(await dockerAvailable(), 'docker')

// A long migration that works against the database step by step for 20 s and fails when the server goes away
// (busybox has no PostgreSQL client: each step opens a TCP connection to the server, as a client's query would).
const STEPPING_MIGRATION = [
  'set -u',
  'target=$(echo "$DATABASE_URL" | sed -E "s#^[a-z]+://([^@]*@)?([^/:]+):([0-9]+)/.*#\\2 \\3#")',
  'echo "migrating against $target"',
  'for step in $(seq 1 20); do',
  '  if ! nc -w 2 $target -e true; then echo "connection to the database lost during the migration (step $step)" >&2; exit 2; fi',
  '  sleep 1',
  'done',
  'echo migrated',
  '',
].join('\n')

t.test('Engine fault: PostgreSQL stops in the middle of a migration', { skip: privatePg || docker }, async (t) => {
  await ensureBaseImage()
  const server = await startPrivatePostgres(t)
  const rig = await startAgentRig(t, {
    repo: async (dir) =>
      (
        await makeGitRepo(join(dir, 'repo'), [
          { files: sampleReleaseFiles({}), tag: 'v1.0.0' },
          { files: sampleReleaseFiles({ migrate: STEPPING_MIGRATION }), tag: 'v1.1.0' },
        ])
      ).path,
    env: { database: { url: server.url() } },
    app: { smoke: [], migrate: { command: ['sh', '/migrate.sh'], timeoutSec: 60 } },
  })
  const first = await rig.waitFinished(await rig.startDeploy('v1.0.0'))
  t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))

  const id = await rig.startDeploy('v1.1.0')
  await rig.waitFor(id, (d) => d.state === 'MIGRATING' || d.finishedAt !== null)
  // Stop once the migration is under way against the server.
  const log = async () =>
    (await fetch(`${rig.url}/v1/deploys/${id}/log`, { headers: { authorization: `Bearer ${rig.keys.statusToken}` } })).text()
  await rig.waitFor(id, async (d) => d.finishedAt !== null || (await log()).includes('migrating against 127.0.0.1'))
  await new Promise((r) => setTimeout(r, 1_500))
  t.equal((await rig.getDeploy(id)).state, 'MIGRATING', 'the migration runs against the server')
  await server.stop('fast')
  const done = await rig.waitFinished(id)
  t.equal(done.state, 'FAILED')
  t.equal(done.error?.code, 'migration_failed', done.error?.message ?? 'no error')
  t.match(done.error?.message, /connection to the database lost/, "the error carries the migration's last lines")
  t.equal(await rig.served(), 'v1.0.0', 'the old release serves')
  const list = await rig.containers()
  t.notOk(
    list.some((l) => l.includes(' migrate ')),
    `no migration container is left: ${list.join('; ')}`,
  )
  t.equal(list.filter((l) => l.startsWith('running')).length, 1, 'one container runs')
  t.same(
    list.filter((l) => l.endsWith(` ${id}`)),
    [],
    'nothing of the failed deploy',
  )
  t.equal(await rig.statusLive(), 'v1.0.0')
})

t.test('Engine fault: PostgreSQL stops while pg_dump streams a backup', { skip: privatePg }, async (t) => {
  const server = await startPrivatePostgres(t)
  const dir = await tempDir(t)
  const backupsDir = join(dir, 'backups')
  const agent = await buildTestAgent(dir, {
    extra: {
      apps: {
        shop: { repo: '/srv/none.git', envs: { production: { ref: 'tag:v*', ports: [18101, 18102], database: { url: server.url() } } } },
      },
      backups: { dir: backupsDir, verify: 'full' },
    },
  })
  t.teardown(() => agent.close())
  const target = findTarget(agent.config, 'shop', 'production')
  const good = await agent.backups.take(target, 'manual')
  // Big enough that the dump streams for a while: pgbench's tables at scale 10 (a million accounts).
  await run(
    join(server.bin, 'pgbench'),
    [
      '--initialize',
      '--quiet',
      '--scale',
      '10',
      '--host',
      '127.0.0.1',
      '--port',
      String(server.port),
      '--username',
      'postgres',
      'postgres',
    ],
    {
      timeout: 600_000,
    },
  )

  const failed = agent.backups.take(target, 'manual')
  failed.catch(() => undefined)
  const partialGrowing = async () => {
    for (const f of await readdir(backupsDir))
      if (f.endsWith('.partial') && (await stat(join(backupsDir, f)).catch(() => null))?.size) return true
    return false
  }
  for (let i = 0; i < 600 && !(await partialGrowing()); i++) await new Promise((r) => setTimeout(r, 20))
  t.ok(await partialGrowing(), 'caught pg_dump streaming into its partial file')
  await server.stop('fast')
  await t.rejects(failed, { code: 'backup_failed' }, 'the backup is reported failed')

  const files = await readdir(backupsDir)
  t.same(
    files.filter((f) => f.endsWith('.partial') || f.endsWith('.tmp') || f.startsWith('.lock-')),
    [],
    `no partial, temp or lock file: ${files.join(', ')}`,
  )
  t.equal(files.filter((f) => f.endsWith('.manifest.json')).length, 1, "one manifest: the good backup's")
  const listed = (await agent.backups.list()).map((b) => (b.legacy ? b.file : b.id))
  t.same(listed, [good.id], 'only the previous good backup is listed')
  t.match(await agent.backups.verify(good.id), { ok: true }, 'and it still verifies')
  t.match(agent.backups.recentFailures()[0], { app: 'shop', env: 'production', kind: 'manual', error: { code: 'backup_failed' } })
  const token = { authorization: `Bearer ${agent.keys.statusToken}` }
  const listing = JSON.parse((await agent.app.inject({ url: '/v1/backups', headers: token })).body) as {
    failures: Array<{ error: { code: string } }>
  }
  t.equal(listing.failures[0]?.error.code, 'backup_failed', 'GET /v1/backups lists the failure')
  const metrics = (await agent.app.inject({ url: '/metrics', headers: token })).body
  t.match(metrics, /deploy_agent_backups_total\{app="shop",env="production",kind="manual",result="failed"\} 1/, 'the failure is counted')
  t.equal(
    JSON.parse((await agent.app.inject({ url: '/v1/status', headers: token })).body).apps.shop.envs.production.lastBackup?.id,
    good.id,
  )

  // The lock was released: with the server back, the next backup runs.
  await server.start()
  const next = await agent.backups.take(target, 'manual')
  t.match(next.verified, { ok: true }, 'the next backup is taken and verified')
})
