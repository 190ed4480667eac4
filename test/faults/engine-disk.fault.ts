// Fault: the disk fills up. The agent's state dir (journal, deploy logs, git mirrors) sits on a small tmpfs that
// fills during a fetch, before a request, and in the middle of a build; the backup dir sits on another one that
// fills while pg_dump streams. Each time the operation must fail with a clear error, the old release keep serving,
// the agent keep answering, nothing partial stay behind, and everything work again once space is freed.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { signRequest } from '../../agent/auth/canonical.js'
import { takeBackup, verifyBackup } from '../../agent/backup/index.js'
import { findTarget } from '../../agent/config/targets.js'
import { buildTestAgent } from '../helpers/agent.js'
import { AUDIENCE, ed25519Key } from '../helpers/agent.js'
import { startAgentRig } from '../helpers/agent-rig.js'
import { canMountTmpfs, fillDisk, mountTmpfs } from '../helpers/disk.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { createTempDatabase, pgAvailable, query } from '../helpers/pg.js'
import { SAMPLE_TAGS } from '../helpers/sample-app.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const docker = skipUnless(await dockerAvailable(), 'docker')
const canMount = await canMountTmpfs()
const mountSkip = docker !== false ? docker : canMount ? false : 'mounting a tmpfs is not permitted here'
const pg = skipUnless(await pgAvailable(), 'PostgreSQL')
const pgMountSkip = pg !== false ? pg : canMount ? false : 'mounting a tmpfs is not permitted here'

const git = (cwd: string, args: string[]) =>
  run('git', args, { cwd, env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' } })

t.test('Engine fault: the state dir fills up during deploys', { skip: mountSkip }, async (t) => {
  await ensureBaseImage()
  const stateDir = join(await tempDir(t), 'state')
  await mkdir(stateDir)
  await mountTmpfs(t, stateDir, '24m')
  const rig = await startAgentRig(t, { config: () => ({ stateDir }), app: { smoke: [] } })
  const stillAnswers = async (what: string) => {
    t.equal((await fetch(`${rig.url}/healthz`)).status, 200, `${what}: /healthz answers`)
    t.equal(await rig.statusLive(), await rig.served(), `${what}: /v1/status answers and names the release nginx serves`)
  }
  const first = await rig.waitFinished(await rig.startDeploy(SAMPLE_TAGS.good))
  t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))

  await t.test('a fetch that runs out of space fails the deploy in RESOLVING', async (t) => {
    // A new release whose objects cannot fit in what is left.
    const repo = join(rig.dir, 'repo')
    await git(repo, ['checkout', '--quiet', SAMPLE_TAGS.good2, '--', '.'])
    await writeFile(join(repo, 'blob.bin'), randomBytes(4 * 1024 * 1024))
    await git(repo, ['add', '--all'])
    await git(repo, ['-c', 'user.name=t', '-c', 'user.email=t@t.invalid', 'commit', '--quiet', '-m', 'big'])
    await git(repo, ['tag', '--', 'v3.0.0'])
    const filler = await fillDisk(stateDir, 512 * 1024)
    const id = await rig.startDeploy('v3.0.0')
    const done = await rig.waitFinished(id)
    t.equal(done.state, 'FAILED')
    t.equal(done.error?.code, 'git_fetch_failed', done.error?.message ?? 'no error')
    t.match(done.error?.message, /No space left on device|ENOSPC/i, 'the error names the full disk')
    t.equal(await rig.served(), SAMPLE_TAGS.good, 'the old release serves')
    await stillAnswers('after the failed fetch')
    await rm(filler)
    const again = await rig.waitFinished(await rig.startDeploy('v3.0.0'))
    t.equal(again.state, 'SUCCEEDED', `the mirror is usable once space is back: ${JSON.stringify(again.error)}`)
    t.equal(await rig.served(), 'v3.0.0')
  })

  await t.test('a deploy requested on a full disk is refused or fails with disk_full; nothing changes', async (t) => {
    const filler = await fillDisk(stateDir)
    const before = await rig.served()
    const path = `/v1/apps/${rig.app}/envs/${rig.env}/deploys`
    const body = JSON.stringify({ ref: SAMPLE_TAGS.good2 })
    const headers = signRequest({ keyId: 'ci', key: ed25519Key(rig.keys), audience: AUDIENCE, method: 'POST', path, body })
    const res = await fetch(`${rig.url}${path}`, { method: 'POST', body, headers: { ...headers, 'content-type': 'application/json' } })
    const answer = (await res.json()) as { id?: string; error?: { code: string; message: string } }
    // The journal's last page may still take a short line (a full file system refuses new pages, not every byte).
    if (res.status === 202) {
      const done = await rig.waitFinished(answer.id as string)
      t.equal(done.state, 'FAILED', 'accepted into the journal, the deploy fails')
      t.equal(done.error?.code, 'disk_full', done.error?.message ?? 'no error')
    } else {
      t.equal(res.status, 507, JSON.stringify(answer))
      t.equal(answer.error?.code, 'disk_full')
    }
    t.equal(await rig.served(), before, 'nginx serves what it served')
    await stillAnswers('after the refused deploy')
    await rm(filler)
  })

  await t.test('the disk filling up mid-build: the deploy ends cleanly, the agent keeps serving and recovers', async (t) => {
    const before = await rig.served()
    const id = await rig.startDeploy(SAMPLE_TAGS.slowBuild)
    await rig.waitFor(id, (d) => d.state === 'BUILDING' || d.finishedAt !== null)
    const filler = await fillDisk(stateDir)
    const done = await rig.waitFinished(id)
    // Which write meets the full disk first depends on the slack in files' last pages: the end state must match it.
    if (done.state === 'SUCCEEDED') {
      t.equal(await rig.served(), SAMPLE_TAGS.slowBuild, 'a deploy that could journal every step is live')
    } else {
      t.equal(done.state, 'FAILED', JSON.stringify(done.error))
      t.equal(done.error?.code, 'disk_full', done.error?.message ?? 'no error')
      t.equal(await rig.served(), before, 'the old release serves')
      const list = await rig.containers()
      t.same(
        list.filter((l) => l.endsWith(` ${id}`)),
        [],
        `no container of the failed deploy: ${list.join('; ')}`,
      )
    }
    t.equal(rig.agent().child.exitCode, null, 'the agent is still running')
    await stillAnswers('after the build on a full disk')
    const running = (await rig.containers()).filter((l) => l.startsWith('running'))
    t.equal(running.length, 1, `one container runs: ${running.join('; ')}`)
    await rm(filler)
    // The journal is whole: a restart reads it and agrees.
    await rig.restart('SIGTERM')
    t.equal((await rig.waitFinished(id)).state, done.state, 'the restarted agent reads the same end state')
    const next = await rig.waitFinished(await rig.startDeploy(SAMPLE_TAGS.good2))
    t.equal(next.state, 'SUCCEEDED', JSON.stringify(next.error))
    t.equal(await rig.served(), SAMPLE_TAGS.good2)
  })
})

t.test('Engine fault: the backup dir fills up while pg_dump streams', { skip: pgMountSkip }, async (t) => {
  const dir = await tempDir(t)
  const backupsDir = join(dir, 'backups')
  await mkdir(backupsDir)
  await mountTmpfs(t, backupsDir, '2m')
  const db = await createTempDatabase(t)
  await query(db.name, 'CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes VALUES (1, $$keep me$$)')
  await writeFile(join(dir, 'db.password'), 'postgres\n')
  const url = `postgres://postgres@127.0.0.1:5432/${db.name}`
  const agent = await buildTestAgent(dir, {
    extra: {
      apps: {
        shop: {
          repo: '/srv/none.git',
          envs: { production: { ref: 'tag:v*', ports: [18101, 18102], database: { url, passwordFile: 'db.password' } } },
        },
      },
      // Retention that removes anything older than 30 days beyond the newest one, once it runs.
      backups: { dir: backupsDir, verify: 'full', retention: { days: 30, minKeep: 1, weekly: 0, monthly: 0 } },
    },
  })
  t.teardown(() => agent.close())
  const target = findTarget(agent.config, 'shop', 'production')
  const good = await agent.backups.take(target, 'manual')
  // A verified backup from 100 days ago: the next successful backup's retention run removes it.
  const old = await takeBackup({
    dir: backupsDir,
    app: 'shop',
    env: 'production',
    kind: 'nightly',
    database: { url, password: 'postgres' },
    locks: agent.backups.locks,
    now: () => new Date(Date.now() - 100 * 86_400_000),
  })
  t.same(await verifyBackup(backupsDir, old, 'full'), { ok: true })
  // ~8 MB of random hex: several times what is left on the 2 MB file system, even compressed.
  await query(
    db.name,
    'CREATE TABLE big AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) AS v FROM generate_series(1, 100000) g',
  )

  await t.rejects(
    agent.backups.take(target, 'manual'),
    { code: 'backup_failed', message: /ENOSPC|No space left/ },
    'the backup fails on the full disk',
  )
  const listed = (await agent.backups.list()).map((b) => (b.legacy ? b.file : b.id))
  t.ok(listed.includes(good.id) && listed.includes(old.id), 'both earlier backups are still listed')
  t.equal(listed.length, 2, `no other backup appeared: ${listed.join(', ')}`)
  for (const id of [good.id, old.id]) t.match(await agent.backups.verify(id), { ok: true }, `backup ${id} still verifies`)
  const files = await readdir(backupsDir)
  t.same(
    files.filter((f) => f.endsWith('.partial') || f.endsWith('.tmp') || f.startsWith('.lock-')),
    [],
    `no partial, temp or lock file: ${files.join(', ')}`,
  )
  t.match(
    agent.backups.recentFailures()[0],
    { app: 'shop', env: 'production', kind: 'manual', error: { code: 'backup_failed' } },
    'the failure is listed',
  )
  const token = { authorization: `Bearer ${agent.keys.statusToken}` }
  const metrics = (await agent.app.inject({ url: '/metrics', headers: token })).body
  t.match(metrics, /deploy_agent_backups_total\{app="shop",env="production",kind="manual",result="failed"\} 1/, 'the failure is counted')
  const status = JSON.parse((await agent.app.inject({ url: '/v1/status', headers: token })).body)
  t.equal(status.apps.shop.envs.production.lastBackup?.id, good.id, 'the last backup is still the good one')

  // The lock was released and retention really would have removed the old backup: with space back, it does.
  await query(db.name, 'DROP TABLE big')
  const next = await agent.backups.take(target, 'manual')
  const after = (await agent.backups.list()).map((b) => (b.legacy ? b.file : b.id))
  t.ok(after.includes(next.id) && after.includes(good.id), 'the new and the recent backups are kept')
  t.notOk(after.includes(old.id), 'a successful backup runs retention, which removes the old one')
})
