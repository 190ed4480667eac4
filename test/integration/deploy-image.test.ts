// Prebuilt images end to end: a real registry (Debian's docker-registry on a loopback port, htpasswd auth), images
// built and pushed through the Docker API, pulled by the agent by tag, run by digest behind a real nginx — and the
// refusals: a pinned digest that differs, a tag pushed again, a wrong registry password. No password in any log.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { assembleDeploys } from '../../agent/deploy/assemble.js'
import { createLogger } from '../../agent/observability/logger.js'
import type { Deploy } from '../../agent/store/deploys.js'
import { buildTestAgent, signedInject, type TestAgent } from '../helpers/agent.js'
import { dockerAvailable, ensureBaseImage, removeAppFromDocker } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { requestLoop } from '../helpers/load.js'
import type { NginxInstance } from '../helpers/nginx.js'
import { registryAvailable, startRegistry, type TestRegistry } from '../helpers/registry.js'
import { envBehindNginx, sampleAppConfig, servedVersion } from '../helpers/sample-app.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const app = `img-${randomBytes(3).toString('hex')}`
const env = 'production'

interface Fixture {
  agent: TestAgent
  nginx: NginxInstance
  registry: TestRegistry
  /** Every line the agent logged. */
  logged: string[]
  digests: Record<string, string>
}

async function setUp(t: Test): Promise<Fixture> {
  await ensureBaseImage()
  const dir = await tempDir(t)
  const registry = await startRegistry(t, dir)
  const digests = {
    v1: (await registry.push(`${app}/api`, 'v1', 'v1')).digest,
    v2: (await registry.push(`${app}/api`, 'v2', 'v2')).digest,
  }
  const production = await envBehindNginx(t, dir, env)
  const { repo: _none, ...sample } = sampleAppConfig(
    '',
    { [env]: production.env },
    { observe: { seconds: 1, intervalMs: 200, maxFailures: 2 } },
  )
  const appConfig = {
    ...sample,
    image: `${registry.host}/${app}/api`,
    registryAuth: { username: registry.username, passwordFile: registry.passwordFile },
  }
  const logged: string[] = []
  const logger = createLogger({ level: 'debug' }, { write: (line: string) => void logged.push(line) })
  const agent = await buildTestAgent(dir, {
    extra: { apps: { [app]: appConfig } },
    logger,
    deployments: (config, deploys, backups) => assembleDeploys(config, deploys, logger, { backups }),
  })
  t.teardown(async () => {
    await agent.close()
    await removeAppFromDocker(app)
  })
  return { agent, nginx: production.nginx, registry, logged, digests }
}

const token = (f: Fixture) => ({ authorization: `Bearer ${f.agent.keys.statusToken}` })

async function waitFinished(f: Fixture, id: string, timeoutMs = 90_000): Promise<Deploy> {
  for (const deadline = Date.now() + timeoutMs; ; await new Promise((r) => setTimeout(r, 100))) {
    const deploy = JSON.parse((await f.agent.app.inject({ url: `/v1/deploys/${id}`, headers: token(f) })).body) as Deploy
    if (deploy.finishedAt) return deploy
    if (Date.now() > deadline) throw new Error(`deploy ${id} still ${deploy.state} after ${timeoutMs} ms`)
  }
}

async function deploy(f: Fixture, body: { ref: string; digest?: string }): Promise<Deploy> {
  const res = await signedInject(f.agent, { url: `/v1/apps/${app}/envs/${env}/deploys`, body })
  if (res.statusCode !== 202) throw new Error(`deploy ${body.ref}: ${res.statusCode} ${res.body}`)
  return waitFinished(f, JSON.parse(res.body).id)
}

const deployLog = async (f: Fixture, id: string) => (await f.agent.app.inject({ url: `/v1/deploys/${id}/log`, headers: token(f) })).body

/** The image the running container of `release` was created from, as Docker recorded it. */
async function runningImage(release: string): Promise<string> {
  const labels = [`label=deploy-agent.app=${app}`, `label=deploy-agent.release=${release}`, 'status=running']
  const { stdout } = await run('docker', ['ps', ...labels.flatMap((l) => ['--filter', l]), '--format', '{{.ID}}'])
  const { stdout: image } = await run('docker', ['inspect', '--format', '{{.Config.Image}}', stdout.trim()])
  return image.trim()
}

t.test(
  'Deploy from a registry: prebuilt images by tag and digest',
  { skip: skipUnless((await dockerAvailable()) && (await registryAvailable()), 'docker and docker-registry') },
  async (t) => {
    const f = await setUp(t)

    const first = await deploy(f, { ref: 'v1' })
    t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))
    t.equal(await servedVersion(f.nginx), 'v1', 'v1 pulled by its tag and served through nginx')
    t.equal(first.commit, f.digests.v1, 'the deploy record holds the digest the tag resolved to')
    t.equal(first.release, 'v1')
    const firstLog = await deployLog(f, first.id)
    t.match(firstLog, `"event":"resolved","ref":"v1","digest":"${f.digests.v1}"`)
    t.match(firstLog, /"event":"build","pulled":true/, 'BUILDING says pulled')
    t.match(firstLog, /migrated to v1/, 'the migration ran from the pulled image')
    t.match(await runningImage('v1'), /^sha256:[0-9a-f]{64}$/, 'the container runs by image id, not by a tag')
    const { stdout: names } = await run('docker', ['images', '--digests', '--filter', `reference=${f.registry.host}/${app}/*`])
    t.equal(names.trim().split('\n').length, 1, `no registry name is left behind (only the header):\n${names}`)

    await t.test('a deploy pinned to its digest, under load, fails no request', async (t) => {
      const load = requestLoop(`http://127.0.0.1:${f.nginx.port}/version`)
      const second = await deploy(f, { ref: 'v2', digest: f.digests.v2 })
      t.equal(second.state, 'SUCCEEDED', JSON.stringify(second.error))
      t.equal(await servedVersion(f.nginx), 'v2')
      const { ok, failures } = await load.stop()
      t.ok(ok > 20, `${ok} requests`)
      t.same(failures, [], 'zero failed requests')
    })

    await t.test('a pinned digest other than the tag has is refused; the live release keeps serving', async (t) => {
      const bad = await deploy(f, { ref: 'v1', digest: f.digests.v2 })
      t.equal(bad.state, 'FAILED')
      t.equal(bad.error?.code, 'digest_mismatch')
      t.match(bad.error?.message, `is ${f.digests.v1}, not the pinned ${f.digests.v2}`)
      t.notOk(
        bad.states.some((s) => s.state === 'STARTING'),
        'nothing started',
      )
      t.equal(await servedVersion(f.nginx), 'v2')
    })

    await t.test('a tag pushed again with other content is refused (tag_moved)', async (t) => {
      const moved = await f.registry.push(`${app}/api`, 'v1', 'v1-rebuilt')
      t.not(moved.digest, f.digests.v1)
      const bad = await deploy(f, { ref: 'v1' })
      t.equal(bad.state, 'FAILED')
      t.equal(bad.error?.code, 'tag_moved')
      t.match(bad.error?.message, `${f.digests.v1}`)
      t.equal(await servedVersion(f.nginx), 'v2')
    })

    await t.test('a wrong registry password is a clear error, and no password is written anywhere', async (t) => {
      const wrong = `wrong-${randomBytes(8).toString('hex')}`
      await writeFile(f.registry.passwordFile, `${wrong}\n`)
      t.teardown(() => writeFile(f.registry.passwordFile, `${f.registry.password}\n`))
      const bad = await deploy(f, { ref: 'v2' })
      t.equal(bad.state, 'FAILED')
      t.equal(bad.error?.code, 'registry_unauthorized', JSON.stringify(bad.error))
      t.match(bad.error?.message, f.registry.host, 'names the registry')
      t.equal(await servedVersion(f.nginx), 'v2')
      const everything = [
        ...f.logged,
        JSON.stringify(f.agent.deploys.list({ app })),
        ...(await Promise.all(f.agent.deploys.list({ app }).map((d) => deployLog(f, d.id)))),
      ].join('\n')
      t.ok(f.logged.length > 20, `${f.logged.length} agent log lines checked`)
      t.notOk(everything.includes(f.registry.password), 'the registry password is in no log line, record or error')
      t.notOk(everything.includes(wrong), 'nor the wrong one')
    })

    await t.test('a rollback needs no registry: the kept image is local', async (t) => {
      await f.registry.stop()
      const res = await signedInject(f.agent, { url: `/v1/apps/${app}/envs/${env}/rollback`, body: { to: 'v1' } })
      t.equal(res.statusCode, 202, res.body)
      const rollback = await waitFinished(f, JSON.parse(res.body).id)
      t.equal(rollback.state, 'SUCCEEDED', JSON.stringify(rollback.error))
      t.equal(await servedVersion(f.nginx), 'v1')
      t.equal(rollback.commit, f.digests.v1, 'the kept image is the one first pulled')
      t.match(await runningImage('v1'), /^sha256:[0-9a-f]{64}$/, 'run by image id')
      const releases = await f.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/releases`, headers: token(f) })
      t.match(JSON.parse(releases.body).releases, [
        { release: 'v2', commit: f.digests.v2 },
        { release: 'v1', commit: f.digests.v1, live: true },
      ])
    })
  },
)
