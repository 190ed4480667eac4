// Issue 11's sample app of several services behind a real agent, nginx and PostgreSQL, built from git or pulled
// from a registry: an api with a migration that gets the database URL in the async driver's scheme, a frontend,
// a start-first worker with a mount of its own and a stop-first scheduler, and an uploads volume backed up and
// restored with the database. Also the checks both kinds of app must pass: request loops on both web services
// through a deploy and a manual rollback, `docker ps` sampled every 50 ms so two schedulers are never seen at once,
// a candidate that never gets healthy, a release rolled back by observing, and a restore of database and files.
import { execFile } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Test } from 'tap'
import { assembleDeploys } from '../../agent/deploy/assemble.js'
import { createLogger } from '../../agent/observability/logger.js'
import type { Deploy } from '../../agent/store/deploys.js'
import { buildTestAgent, signedInject, type TestAgent } from './agent.js'
import { ensureBaseImage, removeAppFromDocker } from './docker.js'
import { requestLoop } from './load.js'
import { createTempDatabase, query } from './pg.js'
import { sampleServices, SERVICE_TAGS, servicesEnvBehindNginx, type ServicesEnv } from './sample-services.js'
import { tempDir } from './tmp.js'
import { sampleEvery } from './sampler.js'

const run = promisify(execFile)

export interface ServicesRig {
  app: string
  env: string
  agent: TestAgent
  web: ServicesEnv
  /** The app's database. */
  db: string
  /** Host dirs: mounted by every service but the worker, and by the worker only. */
  uploads: string
  jobs: string
  token: { authorization: string }
  deploy(ref: string, pin?: { digest?: string }): Promise<Deploy>
  /** A manual rollback (`to`: a release; default the previous one). */
  rollBack(to?: string): Promise<Deploy>
  waitFinished(id: string, timeoutMs?: number): Promise<Deploy>
  /** A manual backup of the env (database and uploads), verified; answers its id. */
  backUp(): Promise<string>
  /** What nginx serves: the api's and the frontend's /version. */
  served(): Promise<string[]>
  /** `<service> <release>` of every running container of the app, sorted. */
  running(): Promise<string[]>
  /** Samples the running schedulers ("beat") every 50 ms until stopped; answers the most seen at once. */
  sampleSchedulers(): { stop(): Promise<{ most: number; seen: string[][] }> }
}

/**
 * The agent with the sample app, its source given by `source` (`repo`, or `image` + `registryAuth`) from the test
 * dir; everything is removed in `t`'s teardown.
 */
export async function startServicesRig(
  t: Test,
  app: string,
  kind: 'repo' | 'image',
  source: (dir: string) => Promise<Record<string, unknown>>,
): Promise<ServicesRig> {
  const env = 'production'
  await ensureBaseImage()
  const dir = await tempDir(t)
  // The app's database (its URL in the async driver's scheme) and its uploads, a host dir mounted into every
  // container but the worker's and backed up and restored with the database; the worker mounts a dir of its own.
  const db = await createTempDatabase(t)
  await query(db.name, 'CREATE TABLE notes (id int primary key, body text); INSERT INTO notes VALUES (1, $$in the backup$$)')
  await writeFile(join(dir, 'db.password'), 'postgres\n')
  const uploads = join(dir, 'uploads')
  const jobs = join(dir, 'jobs')
  await mkdir(uploads, { mode: 0o777 })
  await mkdir(jobs, { mode: 0o777 })
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
          ...(await source(dir)),
          migrate: { command: ['sh', '/app/migrate.sh'], timeoutSec: 30 },
          health: { path: '/healthz', intervalMs: 100, timeoutMs: 1000, healthyAfter: 2, deadlineSec: 10 },
          smoke: [{ path: '/version', expectStatus: 200 }],
          observe: { seconds: 5, intervalMs: 200, maxFailures: 2 },
          keepReleases: 3,
          services: sampleServices(kind, jobs),
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

  const token = { authorization: `Bearer ${agent.keys.statusToken}` }
  const waitFinished = async (id: string, timeoutMs = 120_000): Promise<Deploy> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const deploy = JSON.parse((await agent.app.inject({ url: `/v1/deploys/${id}`, headers: token })).body) as Deploy
      if (deploy.finishedAt) return deploy
      if (Date.now() > deadline) throw new Error(`deploy ${id} still ${deploy.state} after ${timeoutMs} ms`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  const request = async (what: string, url: string, body: Record<string, unknown>): Promise<Deploy> => {
    const res = await signedInject(agent, { url, body })
    if (res.statusCode !== 202) throw new Error(`${what}: ${res.statusCode} ${res.body}`)
    return waitFinished(JSON.parse(res.body).id)
  }
  const text = async (port: number, path: string) => (await (await fetch(`http://127.0.0.1:${port}${path}`)).text()).trim()
  const ps = async (...filters: string[]) => {
    const format = '{{.Label "deploy-agent.service"}} {{.Label "deploy-agent.release"}}'
    const args = ['ps', '--filter', `label=deploy-agent.app=${app}`, ...filters.flatMap((f) => ['--filter', f]), '--format', format]
    return (await run('docker', args)).stdout.split('\n').filter(Boolean).sort()
  }

  return {
    app,
    env,
    agent,
    web,
    db: db.name,
    uploads,
    jobs,
    token,
    waitFinished,
    deploy: (ref, pin = {}) => request(`deploy ${ref}`, `/v1/apps/${app}/envs/${env}/deploys`, { ref, ...pin }),
    rollBack: (to) => request('rollback', `/v1/apps/${app}/envs/${env}/rollback`, to === undefined ? {} : { to }),
    async backUp() {
      const started = await signedInject(agent, { url: '/v1/backups', body: { app, env } })
      if (started.statusCode !== 202) throw new Error(`backup: ${started.statusCode} ${started.body}`)
      const { id } = JSON.parse(started.body) as { id: string }
      const last = async () =>
        JSON.parse((await agent.app.inject({ url: '/v1/status', headers: token })).body).apps[app].envs[env].lastBackup as {
          id: string
        } | null
      for (let i = 0; i < 300 && (await last())?.id !== id; i++) await new Promise((r) => setTimeout(r, 100))
      if ((await last())?.id !== id) throw new Error(`backup ${id} did not complete`)
      return id
    },
    served: async () => [await text(web.nginx.port, '/version'), await text(web.frontendPort, '/version')],
    running: () => ps(),
    sampleSchedulers: () => sampleEvery(() => ps('label=deploy-agent.service=beat')),
  }
}

/** Every service of `release` running, as `running()` lists them. */
export const allRunning = (release: string) => ['api', 'beat', 'frontend', 'worker'].map((s) => `${s} ${release}`)
export const servedAs = (release: string) => [release, `front-${release}`]

/** `docker inspect --format <format>` of each running container of the app, by service. */
export async function inspectByService(app: string, format: string): Promise<Record<string, string>> {
  const { stdout } = await run('docker', ['ps', '--quiet', '--filter', `label=deploy-agent.app=${app}`])
  const ids = stdout.split('\n').filter(Boolean)
  const { stdout: lines } = await run('docker', [
    'inspect',
    '--format',
    `{{index .Config.Labels "deploy-agent.service"}}=${format}`,
    ...ids,
  ])
  return Object.fromEntries(
    lines
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(/=(.*)/s).slice(0, 2)),
  )
}

/** The first deploy's traces: the migration got the async-scheme URL and the api wrote the uploads volume. */
export async function checkFirstDeploy(t: Test, rig: ServicesRig): Promise<void> {
  t.same(await rig.served(), servedAs(SERVICE_TAGS.good), 'both web services are served through nginx')
  t.same(await rig.running(), allRunning(SERVICE_TAGS.good))
  t.match(
    await readFile(join(rig.uploads, 'database-url'), 'utf8'),
    new RegExp(`^postgresql\\+asyncpg://postgres:postgres@127\\.0\\.0\\.1:5432/${rig.db}\n$`),
    'the migration got the URL in the scheme the app expects, through the mounted uploads',
  )
  t.equal(await readFile(join(rig.uploads, 'api-started'), 'utf8'), `${SERVICE_TAGS.good}\n`, 'the api writes the uploads volume')
  t.same(
    await inspectByService(rig.app, '{{range .Mounts}}{{.Destination}} {{end}}'),
    { api: '/uploads ', frontend: '/uploads ', worker: '/jobs ', beat: '/uploads ' },
    "the worker mounts its own list instead of the app's",
  )
}

/** A deploy and a manual rollback under load on both web services fail no request; one scheduler at a time. */
export async function checkDeployAndRollbackUnderLoad(t: Test, rig: ServicesRig, pins: Record<string, string> = {}): Promise<void> {
  const schedulers = rig.sampleSchedulers()
  const api = requestLoop(`http://127.0.0.1:${rig.web.nginx.port}/version`, { concurrency: 2 })
  const frontend = requestLoop(`http://127.0.0.1:${rig.web.frontendPort}/version`, { concurrency: 2 })
  const digest = pins[SERVICE_TAGS.good2]
  const second = await rig.deploy(SERVICE_TAGS.good2, digest ? { digest } : {})
  t.equal(second.state, 'SUCCEEDED', JSON.stringify(second.error))
  t.same(await rig.served(), servedAs(SERVICE_TAGS.good2))
  t.same(await rig.running(), allRunning(SERVICE_TAGS.good2), 'every old member stopped')

  const rollback = await rig.rollBack()
  t.equal(rollback.state, 'SUCCEEDED', JSON.stringify(rollback.error))
  t.same(await rig.served(), servedAs(SERVICE_TAGS.good))
  t.same(await rig.running(), allRunning(SERVICE_TAGS.good), 'the whole group moved back')

  const [apiLoad, frontendLoad, beats] = await Promise.all([api.stop(), frontend.stop(), schedulers.stop()])
  t.ok(apiLoad.ok > 20 && frontendLoad.ok > 20, `${apiLoad.ok} api and ${frontendLoad.ok} frontend requests`)
  t.same([...apiLoad.failures, ...frontendLoad.failures], [], 'zero failed requests on both web services')
  t.same(beats.seen, [], 'never two schedulers running at once')
  t.equal(beats.most, 1)
}

/** A candidate whose worker exits fails and leaves no member of it; the live release keeps serving. */
export async function checkCandidateWorkerExits(t: Test, rig: ServicesRig): Promise<void> {
  const schedulers = rig.sampleSchedulers()
  const bad = await rig.deploy(SERVICE_TAGS.workerExits)
  t.equal(bad.state, 'FAILED')
  t.equal(bad.error?.code, 'container_exited')
  const { stdout } = await run('docker', ['ps', '--all', '--quiet', '--filter', `label=deploy-agent.deploy=${bad.id}`])
  t.equal(stdout.trim(), '', 'no container of the candidate remains')
  t.same(await rig.served(), servedAs(SERVICE_TAGS.good))
  t.same(await rig.running(), allRunning(SERVICE_TAGS.good))
  const beats = await schedulers.stop()
  t.equal(beats.most, 1, 'the candidate’s scheduler never ran')
  const log = (await rig.agent.app.inject({ url: `/v1/deploys/${bad.id}/log`, headers: rig.token })).body
  t.match(log, /cannot connect to the queue/, 'the failing worker’s output is in the deploy log')
}

/** One service failing while observed rolls every service back (the agent by itself); answers the deploy. */
export async function checkObserveRollsAllBack(t: Test, rig: ServicesRig): Promise<Deploy> {
  const schedulers = rig.sampleSchedulers()
  const bad = await rig.deploy(SERVICE_TAGS.frontendFailsAfterSwitch)
  t.equal(bad.state, 'ROLLED_BACK', JSON.stringify(bad.error))
  t.match(bad.error?.message, /^frontend: /)
  t.same(await rig.served(), servedAs(SERVICE_TAGS.good))
  t.same(await rig.running(), allRunning(SERVICE_TAGS.good))
  const beats = await schedulers.stop()
  t.same(beats.seen, [], 'never two schedulers running at once')
  return bad
}

/** A restore brings the database and the uploads back as they were in the backup; the live release keeps serving. */
export async function checkRestore(t: Test, rig: ServicesRig, backupId: string): Promise<void> {
  await query(rig.db, 'DELETE FROM notes; INSERT INTO notes VALUES (2, $$after the backup$$)')
  await writeFile(join(rig.uploads, 'photo.txt'), 'after the backup')
  const restored = await signedInject(rig.agent, { url: `/v1/backups/${backupId}/restore`, body: { confirm: backupId } })
  t.equal(restored.statusCode, 200, restored.body)
  t.same(await query(rig.db, 'SELECT id, body FROM notes ORDER BY id'), [{ id: 1, body: 'in the backup' }])
  t.equal(await readFile(join(rig.uploads, 'photo.txt'), 'utf8'), 'in the backup')
  t.same(await rig.served(), servedAs(SERVICE_TAGS.good), 'the live release kept serving')
}
