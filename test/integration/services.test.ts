// A release of several services end to end on real Docker, git, nginx and PostgreSQL (issue 11's sample app): an
// api with a migration that gets the database URL in the async driver's scheme, a frontend with its own build,
// both behind one nginx (both upstreams in the env's one file), a start-first worker and a stop-first scheduler,
// and an uploads volume backed up and restored with the database. Request loops on both web
// services count failures during a deploy and a manual rollback, and `docker ps`, sampled every 50 ms, proves two
// schedulers never run at once.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { assembleDeploys } from '../../agent/deploy/assemble.js'
import { createLogger } from '../../agent/observability/logger.js'
import type { Deploy } from '../../agent/store/deploys.js'
import { buildTestAgent, signedInject, type TestAgent } from '../helpers/agent.js'
import { dockerAvailable, ensureBaseImage, removeAppFromDocker } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { requestLoop } from '../helpers/load.js'
import { createTempDatabase, pgAvailable, query } from '../helpers/pg.js'
import { makeServicesRepo, SAMPLE_SERVICES, SERVICE_TAGS, servicesEnvBehindNginx, type ServicesEnv } from '../helpers/sample-services.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const app = `multi-${randomBytes(3).toString('hex')}`
const env = 'production'

interface Fixture {
  agent: TestAgent
  web: ServicesEnv
  db: string
  uploads: string
}

async function setUp(t: Test): Promise<Fixture> {
  await ensureBaseImage()
  const dir = await tempDir(t)
  const repo = await makeServicesRepo(join(dir, 'repo'))
  // The app's database (its URL in the async driver's scheme) and its uploads, a host dir mounted into every
  // container and backed up and restored with the database.
  const db = await createTempDatabase(t)
  await query(db.name, 'CREATE TABLE notes (id int primary key, body text); INSERT INTO notes VALUES (1, $$in the backup$$)')
  await writeFile(join(dir, 'db.password'), 'postgres\n')
  const uploads = join(dir, 'uploads')
  await mkdir(uploads, { mode: 0o777 })
  await writeFile(join(uploads, 'photo.txt'), 'in the backup')
  t.teardown(async () => {
    const left = await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${db.name}\\_%'`)
    for (const row of left) await query('postgres', `DROP DATABASE IF EXISTS ${row.datname} WITH (FORCE)`)
  })
  const web = await servicesEnvBehindNginx(t, dir, env, {
    database: {
      url: `postgres://postgres@127.0.0.1:5432/${db.name}`,
      passwordFile: 'db.password',
      appUrlScheme: 'postgresql+asyncpg',
    },
    files: [uploads],
  })
  const agent = await buildTestAgent(dir, {
    extra: {
      apps: {
        [app]: {
          repo: repo.path,
          migrate: { command: ['sh', '/app/migrate.sh'], timeoutSec: 30 },
          health: { path: '/healthz', intervalMs: 100, timeoutMs: 1000, healthyAfter: 2, deadlineSec: 10 },
          smoke: [{ path: '/version', expectStatus: 200 }],
          observe: { seconds: 5, intervalMs: 200, maxFailures: 2 },
          keepReleases: 3,
          services: SAMPLE_SERVICES,
          volumes: [`${uploads}:/uploads`],
          envs: { [env]: web.env },
        },
      },
      backups: { dir: 'backups', verify: 'full' },
    },
    deployments: (config, deploys) => assembleDeploys(config, deploys, createLogger({ level: 'silent' })),
  })
  t.teardown(async () => {
    await agent.close()
    await removeAppFromDocker(app)
  })
  return { agent, web, db: db.name, uploads }
}

const token = (f: Fixture) => ({ authorization: `Bearer ${f.agent.keys.statusToken}` })

async function waitFinished(f: Fixture, id: string, timeoutMs = 120_000): Promise<Deploy> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const deploy = JSON.parse((await f.agent.app.inject({ url: `/v1/deploys/${id}`, headers: token(f) })).body) as Deploy
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

/** A manual backup of the env (database and uploads), verified; answers its id. */
async function backUp(f: Fixture): Promise<string> {
  const started = await signedInject(f.agent, { url: '/v1/backups', body: { app, env } })
  if (started.statusCode !== 202) throw new Error(`backup: ${started.statusCode} ${started.body}`)
  const { id } = JSON.parse(started.body) as { id: string }
  const last = async () =>
    JSON.parse((await f.agent.app.inject({ url: '/v1/status', headers: token(f) })).body).apps[app].envs[env].lastBackup as {
      id: string
    } | null
  for (let i = 0; i < 300 && (await last())?.id !== id; i++) await new Promise((r) => setTimeout(r, 100))
  if ((await last())?.id !== id) throw new Error(`backup ${id} did not complete`)
  return id
}

async function text(port: number, path: string): Promise<string> {
  return (await (await fetch(`http://127.0.0.1:${port}${path}`)).text()).trim()
}
const served = async (f: Fixture) => [await text(f.web.nginx.port, '/version'), await text(f.web.frontendPort, '/version')]

/** `<service> <release>` of every running container of the app. */
async function running(): Promise<string[]> {
  const format = '{{.Label "deploy-agent.service"}} {{.Label "deploy-agent.release"}}'
  const { stdout } = await run('docker', ['ps', '--filter', `label=deploy-agent.app=${app}`, '--format', format])
  return stdout.split('\n').filter(Boolean).sort()
}

/** Samples the running schedulers ("beat") every 50 ms until stopped; answers the most seen at once. */
function sampleSchedulers() {
  let stopped = false
  let most = 0
  const seen: string[][] = []
  const loop = (async () => {
    while (!stopped) {
      const { stdout } = await run('docker', [
        'ps',
        '--filter',
        `label=deploy-agent.app=${app}`,
        '--filter',
        'label=deploy-agent.service=beat',
        '--format',
        '{{.Label "deploy-agent.release"}}',
      ])
      const now = stdout.split('\n').filter(Boolean)
      if (now.length > most) most = now.length
      if (now.length > 1) seen.push(now)
      await new Promise((r) => setTimeout(r, 50))
    }
  })()
  return {
    async stop() {
      stopped = true
      await loop
      return { most, seen }
    },
  }
}

t.test(
  'Services on real Docker, git and nginx',
  { skip: skipUnless((await dockerAvailable()) && (await pgAvailable()), 'docker and postgresql') },
  async (t) => {
    const f = await setUp(t)
    const first = await deploy(f, SERVICE_TAGS.good)
    t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))
    t.same(await served(f), [SERVICE_TAGS.good, `front-${SERVICE_TAGS.good}`], 'both web services are served through nginx')
    t.same(await running(), ['api v1.0.0', 'beat v1.0.0', 'frontend v1.0.0', 'worker v1.0.0'])
    t.match(
      await readFile(join(f.uploads, 'database-url'), 'utf8'),
      new RegExp(`^postgresql\\+asyncpg://postgres:postgres@127\\.0\\.0\\.1:5432/${f.db}\n$`),
      'the migration got the URL in the scheme the app expects, through the mounted uploads',
    )
    t.equal(await readFile(join(f.uploads, 'api-started'), 'utf8'), `${SERVICE_TAGS.good}\n`, 'the api writes the uploads volume')
    const backupId = await backUp(f)

    await t.test('status and releases list every service of the release; app logs pick one by name', async (t) => {
      const status = JSON.parse((await f.agent.app.inject({ url: '/v1/status', headers: token(f) })).body)
      const live = status.apps[app].envs[env].live
      const ports = f.web.env.ports as { api: number[]; frontend: number[] }
      t.same(
        live.services.map((s: { name: string; kind: string; port: number | null }) => [s.name, s.kind, s.port]),
        [
          ['api', 'web', live.port],
          ['frontend', 'web', ports.frontend[ports.api.indexOf(live.port)]],
          ['worker', 'worker', null],
          ['beat', 'worker', null],
        ],
      )
      const releases = JSON.parse((await f.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/releases`, headers: token(f) })).body)
      t.same(releases.releases[0].services, [
        { name: 'api', image: `${app}:${env}-${SERVICE_TAGS.good}`, running: true },
        { name: 'frontend', image: `${app}-frontend:${env}-${SERVICE_TAGS.good}`, running: true },
        { name: 'worker', image: `${app}:${env}-${SERVICE_TAGS.good}`, running: true },
        { name: 'beat', image: `${app}:${env}-${SERVICE_TAGS.good}`, running: true },
      ])
      const logs = await f.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/logs?service=beat&tail=10`, headers: token(f) })
      t.equal(logs.statusCode, 200, logs.body)
      t.match(logs.body, /"line":"start \d+"/, "the scheduler's own output")
      const unknown = await f.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/logs?service=cron`, headers: token(f) })
      t.equal(unknown.json().error.code, 'unknown_service')
      t.match(unknown.json().error.message, /its services: api, frontend, worker, beat/)
    })

    await t.test('a deploy and a manual rollback under load on both web services fail no request; one scheduler at a time', async (t) => {
      const schedulers = sampleSchedulers()
      const api = requestLoop(`http://127.0.0.1:${f.web.nginx.port}/version`, { concurrency: 2 })
      const frontend = requestLoop(`http://127.0.0.1:${f.web.frontendPort}/version`, { concurrency: 2 })
      const second = await deploy(f, SERVICE_TAGS.good2)
      t.equal(second.state, 'SUCCEEDED', JSON.stringify(second.error))
      t.same(await served(f), [SERVICE_TAGS.good2, `front-${SERVICE_TAGS.good2}`])
      t.same(await running(), ['api v1.1.0', 'beat v1.1.0', 'frontend v1.1.0', 'worker v1.1.0'], 'every old member stopped')

      const res = await signedInject(f.agent, { url: `/v1/apps/${app}/envs/${env}/rollback`, body: {} })
      t.equal(res.statusCode, 202, res.body)
      const rollback = await waitFinished(f, JSON.parse(res.body).id)
      t.equal(rollback.state, 'SUCCEEDED', JSON.stringify(rollback.error))
      t.same(await served(f), [SERVICE_TAGS.good, `front-${SERVICE_TAGS.good}`])
      t.same(await running(), ['api v1.0.0', 'beat v1.0.0', 'frontend v1.0.0', 'worker v1.0.0'], 'the whole group moved back')

      const [apiLoad, frontendLoad, beats] = await Promise.all([api.stop(), frontend.stop(), schedulers.stop()])
      t.ok(apiLoad.ok > 20 && frontendLoad.ok > 20, `${apiLoad.ok} api and ${frontendLoad.ok} frontend requests`)
      t.same([...apiLoad.failures, ...frontendLoad.failures], [], 'zero failed requests on both web services')
      t.same(beats.seen, [], 'never two schedulers running at once')
      t.equal(beats.most, 1)
    })

    await t.test('a candidate whose worker exits fails and leaves no member of it; the live release keeps serving', async (t) => {
      const schedulers = sampleSchedulers()
      const bad = await deploy(f, SERVICE_TAGS.workerExits)
      t.equal(bad.state, 'FAILED')
      t.equal(bad.error?.code, 'container_exited')
      const { stdout } = await run('docker', ['ps', '--all', '--quiet', '--filter', `label=deploy-agent.deploy=${bad.id}`])
      t.equal(stdout.trim(), '', 'no container of the candidate remains')
      t.same(await served(f), [SERVICE_TAGS.good, `front-${SERVICE_TAGS.good}`])
      t.same(await running(), ['api v1.0.0', 'beat v1.0.0', 'frontend v1.0.0', 'worker v1.0.0'])
      const beats = await schedulers.stop()
      t.equal(beats.most, 1, 'the candidate’s scheduler never ran')
      const log = (await f.agent.app.inject({ url: `/v1/deploys/${bad.id}/log`, headers: token(f) })).body
      t.match(log, /cannot connect to the queue/, 'the failing worker’s output is in the deploy log')
    })

    await t.test('one service failing while observed rolls every service back', async (t) => {
      const schedulers = sampleSchedulers()
      const bad = await deploy(f, SERVICE_TAGS.frontendFailsAfterSwitch)
      const { stdout: images } = await run('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}', `${app}-frontend`])
      t.ok(images.includes(`${app}-frontend:${env}-${SERVICE_TAGS.frontendFailsAfterSwitch}`), 'the frontend has its own image')
      t.equal(bad.state, 'ROLLED_BACK', JSON.stringify(bad.error))
      t.match(bad.error?.message, /^frontend: /)
      t.same(await served(f), [SERVICE_TAGS.good, `front-${SERVICE_TAGS.good}`])
      t.same(await running(), ['api v1.0.0', 'beat v1.0.0', 'frontend v1.0.0', 'worker v1.0.0'])
      const beats = await schedulers.stop()
      t.same(beats.seen, [], 'never two schedulers running at once')
    })

    await t.test('a restore brings the database and the uploads back as they were in the backup', async (t) => {
      await query(f.db, 'DELETE FROM notes; INSERT INTO notes VALUES (2, $$after the backup$$)')
      await writeFile(join(f.uploads, 'photo.txt'), 'after the backup')
      const restored = await signedInject(f.agent, { url: `/v1/backups/${backupId}/restore`, body: { confirm: backupId } })
      t.equal(restored.statusCode, 200, restored.body)
      t.same(await query(f.db, 'SELECT id, body FROM notes ORDER BY id'), [{ id: 1, body: 'in the backup' }])
      t.equal(await readFile(join(f.uploads, 'photo.txt'), 'utf8'), 'in the backup')
      t.same(await served(f), [SERVICE_TAGS.good, `front-${SERVICE_TAGS.good}`], 'the live release kept serving')
    })
  },
)
