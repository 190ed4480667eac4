// The deploy pipeline end to end on real engines: a temp git repo with tags, images built by the Docker engine,
// containers on host ports, a real nginx switched blue/green, and a request loop counting failures.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { assembleDeploys } from '../../agent/deploy/assemble.js'
import { createLogger } from '../../agent/observability/logger.js'
import type { Deploy } from '../../agent/store/deploys.js'
import { buildTestAgent, signedInject, type TestAgent } from '../helpers/agent.js'
import { dockerAvailable, ensureBaseImage, removeAppFromDocker } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import type { NginxInstance } from '../helpers/nginx.js'
import { requestLoop } from '../helpers/load.js'
import { createTempDatabase } from '../helpers/pg.js'
import { envBehindNginx, makeSampleRepo, SAMPLE_TAGS, sampleAppConfig, servedVersion } from '../helpers/sample-app.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const app = `shop-${randomBytes(3).toString('hex')}`
const env = 'production'

interface Fixture {
  agent: TestAgent
  nginx: NginxInstance
  repoPath: string
}

async function setUp(t: Test): Promise<Fixture> {
  await ensureBaseImage()
  const dir = await tempDir(t)
  const repo = await makeSampleRepo(join(dir, 'repo'))
  // The env has a database and backupBeforeDeploy: every deploy takes a verified pre-deploy backup first.
  const db = await createTempDatabase(t)
  const production = await envBehindNginx(t, dir, env, { backupBeforeDeploy: true, database: { url: db.url } })
  const agent = await buildTestAgent(dir, {
    extra: { apps: { [app]: sampleAppConfig(repo.path, { [env]: production.env }) } },
    deployments: (config, deploys, backups) => assembleDeploys(config, deploys, createLogger({ level: 'silent' }), { backups }),
  })
  t.teardown(async () => {
    await agent.close()
    await removeAppFromDocker(app)
  })
  return { agent, nginx: production.nginx, repoPath: repo.path }
}

const token = (f: Fixture) => ({ authorization: `Bearer ${f.agent.keys.statusToken}` })

async function getDeploy(f: Fixture, id: string): Promise<Deploy> {
  const res = await f.agent.app.inject({ url: `/v1/deploys/${id}`, headers: token(f) })
  return JSON.parse(res.body) as Deploy
}

async function waitFinished(f: Fixture, id: string, timeoutMs = 90_000): Promise<Deploy> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const deploy = await getDeploy(f, id)
    if (deploy.finishedAt) return deploy
    if (Date.now() > deadline) throw new Error(`deploy ${id} still ${deploy.state} after ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

async function deploy(f: Fixture, ref: string): Promise<Deploy> {
  const res = await signedInject(f.agent, { url: `/v1/apps/${app}/envs/${env}/deploys`, body: { ref } })
  if (res.statusCode !== 202) throw new Error(`deploy ${ref}: ${res.statusCode} ${res.body}`)
  return waitFinished(f, JSON.parse(res.body).id)
}

const served = (f: Fixture) => servedVersion(f.nginx)

async function log(f: Fixture, id: string): Promise<string> {
  return (await f.agent.app.inject({ url: `/v1/deploys/${id}/log`, headers: token(f) })).body
}

t.test('Deploy pipeline on real Docker, git and nginx', { skip: skipUnless(await dockerAvailable(), 'docker') }, async (t) => {
  const f = await setUp(t)

  const first = await deploy(f, SAMPLE_TAGS.good)
  t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))
  t.equal(await served(f), SAMPLE_TAGS.good, 'the first release is served through nginx')
  t.same(
    first.states.map((s) => s.state),
    ['QUEUED', 'RESOLVING', 'BACKING_UP', 'BUILDING', 'MIGRATING', 'STARTING', 'VERIFYING', 'SWITCHING', 'OBSERVING', 'SUCCEEDED'],
  )
  t.match(await log(f, first.id), /migrated to v1\.0\.0/, 'migration output is in the deploy log')
  const backups = (await f.agent.backups.list()).filter((b) => b.kind === 'predeploy')
  t.match(backups, [{ pinnedBy: SAMPLE_TAGS.good, verified: { ok: true } }], 'a verified pre-deploy backup pinned to the release')

  await t.test('a good deploy and a manual rollback under load fail no request', async (t) => {
    const load = requestLoop(`http://127.0.0.1:${f.nginx.port}/version`)
    const second = await deploy(f, SAMPLE_TAGS.good2)
    t.equal(second.state, 'SUCCEEDED', JSON.stringify(second.error))
    t.equal(await served(f), SAMPLE_TAGS.good2)

    const started = Date.now()
    const res = await signedInject(f.agent, { url: `/v1/apps/${app}/envs/${env}/rollback`, body: {} })
    t.equal(res.statusCode, 202, res.body)
    t.equal(JSON.parse(res.body).release, SAMPLE_TAGS.good, 'rolls back to the previous release by default')
    const rollback = await waitFinished(f, JSON.parse(res.body).id)
    t.equal(rollback.state, 'SUCCEEDED', JSON.stringify(rollback.error))
    t.equal(await served(f), SAMPLE_TAGS.good)
    t.comment(`manual rollback took ${Date.now() - started} ms (request to SUCCEEDED, including the drain)`)
    const { ok, retried, retriedFresh, failures } = await load.stop()
    t.ok(ok > 50, `the loop made ${ok} requests`)
    t.comment(
      `${ok} requests answered 200; ${retried} sent again after nginx closed the connection before answering (${retriedFresh} of them fresh connections)`,
    )
    t.same(failures, [], 'zero failed requests through nginx during deploy and rollback')
  })

  await t.test('a release that never gets healthy fails and the old one keeps serving', async (t) => {
    const bad = await deploy(f, SAMPLE_TAGS.neverHealthy)
    t.equal(bad.state, 'FAILED')
    t.equal(bad.error?.code, 'health_check_failed')
    t.equal(await served(f), SAMPLE_TAGS.good)
    const { stdout } = await run('docker', ['ps', '--all', '--quiet', '--filter', `label=deploy-agent.deploy=${bad.id}`])
    t.equal(stdout.trim(), '', 'the candidate container was removed')
    const res = await f.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/releases`, headers: token(f) })
    const releases = (JSON.parse(res.body) as { releases: Array<{ release: string; wasLive: boolean }> }).releases
    t.equal(
      releases.find((r) => r.release === SAMPLE_TAGS.neverHealthy)?.wasLive,
      false,
      'a release that never served is no default rollback target',
    )
    t.equal(releases.find((r) => r.release === SAMPLE_TAGS.good2)?.wasLive, true)
  })

  await t.test('a failing migration stops the deploy before anything starts', async (t) => {
    const bad = await deploy(f, SAMPLE_TAGS.badMigration)
    t.equal(bad.state, 'FAILED')
    t.equal(bad.error?.code, 'migration_failed')
    t.match(bad.error?.message, /relation users does not exist/)
    t.notOk(bad.states.some((s) => s.state === 'STARTING'))
    t.equal(await served(f), SAMPLE_TAGS.good)
  })

  await t.test('a failing build is caught from the build stream', async (t) => {
    const bad = await deploy(f, SAMPLE_TAGS.badBuild)
    t.equal(bad.state, 'FAILED')
    t.equal(bad.error?.code, 'build_failed')
    t.match(await log(f, bad.id), /compiling/, 'the build output is in the log')
    t.equal(await served(f), SAMPLE_TAGS.good)
  })

  await t.test('a release that breaks after the switch is rolled back automatically', async (t) => {
    const bad = await deploy(f, SAMPLE_TAGS.failsAfterSwitch)
    t.equal(bad.state, 'ROLLED_BACK', JSON.stringify(bad.error))
    t.equal(bad.error?.code, 'observe_failed')
    t.ok(bad.states.some((s) => s.state === 'OBSERVING'))
    t.equal(await served(f), SAMPLE_TAGS.good, 'traffic is back on the old release')
    const status = JSON.parse((await f.agent.app.inject({ url: '/v1/status', headers: token(f) })).body)
    t.equal(status.apps[app].envs[env].live.release, SAMPLE_TAGS.good)
  })

  await t.test('a manual rollback is observed: forced to a release that breaks after the switch, it is rolled back again', async (t) => {
    const url = `/v1/apps/${app}/envs/${env}/rollback`
    const refused = await signedInject(f.agent, { url, body: { to: SAMPLE_TAGS.failsAfterSwitch } })
    t.equal(refused.statusCode, 409, refused.body)
    t.match(JSON.parse(refused.body), { error: { code: 'never_live' } }, 'it never served: refused without force')
    // Its stopped container already deleted its /healthz; a fresh one from the kept image answers for a few seconds.
    const { stdout } = await run('docker', [
      'ps',
      '--all',
      '--quiet',
      '--filter',
      `label=deploy-agent.app=${app}`,
      '--filter',
      `label=deploy-agent.release=${SAMPLE_TAGS.failsAfterSwitch}`,
    ])
    for (const id of stdout.split('\n').filter((l) => l)) await run('docker', ['rm', '--force', id])
    const res = await signedInject(f.agent, { url, body: { to: SAMPLE_TAGS.failsAfterSwitch, force: true, reason: 'test' } })
    t.equal(res.statusCode, 202, res.body)
    const rollback = await waitFinished(f, JSON.parse(res.body).id)
    t.equal(rollback.state, 'ROLLED_BACK', JSON.stringify(rollback.error))
    t.equal(rollback.error?.code, 'observe_failed')
    t.same(
      rollback.states.map((s) => s.state),
      ['QUEUED', 'STARTING', 'VERIFYING', 'SWITCHING', 'OBSERVING', 'ROLLING_BACK', 'ROLLED_BACK'],
    )
    t.match(rollback.reason, /forced: release v1\.3\.0 never served/)
    t.equal(await served(f), SAMPLE_TAGS.good, 'traffic is back on the release live before the rollback')
    const status = JSON.parse((await f.agent.app.inject({ url: '/v1/status', headers: token(f) })).body)
    t.equal(status.apps[app].envs[env].live.release, SAMPLE_TAGS.good)
    const releases = JSON.parse((await f.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/releases`, headers: token(f) })).body) as {
      releases: Array<{ release: string; outcome: string | null; deployId: string | null }>
    }
    t.match(
      releases.releases.find((r) => r.release === SAMPLE_TAGS.failsAfterSwitch),
      { outcome: 'rolled_back', deployId: rollback.id },
      'releases shows how its last rollback ended',
    )
    t.match(
      releases.releases.find((r) => r.release === SAMPLE_TAGS.good),
      { outcome: 'live' },
    )
  })

  await t.test('a moved tag is refused', async (t) => {
    await run('git', ['-C', f.repoPath, '-c', 'user.name=t', '-c', 'user.email=t@t', 'tag', '--force', SAMPLE_TAGS.good2, 'HEAD'])
    const moved = await deploy(f, SAMPLE_TAGS.good2)
    t.equal(moved.state, 'FAILED')
    t.equal(moved.error?.code, 'tag_moved')
  })

  await t.test('keepReleases bounds the kept images; the live release is listed', async (t) => {
    const started = await signedInject(f.agent, { url: `/v1/apps/${app}/envs/${env}/deploys`, body: { ref: SAMPLE_TAGS.good3 } })
    const { id } = JSON.parse(started.body) as { id: string }
    // follow=1 streams the log until the deploy ends, so the answer holds the whole run.
    const followed = await f.agent.app.inject({ url: `/v1/deploys/${id}/log?follow=1`, headers: token(f) })
    t.equal(followed.headers['content-type'], 'application/x-ndjson')
    const events = followed.body
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { event: string; state?: string })
    t.same(
      events.filter((e) => e.event === 'state').map((e) => e.state),
      ['RESOLVING', 'BACKING_UP', 'BUILDING', 'MIGRATING', 'STARTING', 'VERIFYING', 'SWITCHING', 'OBSERVING', 'SUCCEEDED'],
    )
    const next = await getDeploy(f, id)
    t.equal(next.state, 'SUCCEEDED', JSON.stringify(next.error))
    const res = await f.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/releases`, headers: token(f) })
    const { releases } = JSON.parse(res.body) as { releases: Array<{ release: string; live: boolean }> }
    t.equal(releases.length, 3, 'keepReleases images are kept, no more')
    t.same(
      releases.filter((r) => r.live).map((r) => r.release),
      [SAMPLE_TAGS.good3],
    )
    t.ok(
      releases.some((r) => r.release === SAMPLE_TAGS.good),
      'the previous release stays for rollback',
    )
  })
})
