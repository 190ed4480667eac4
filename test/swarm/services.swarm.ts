// An app of several services on the two-node swarm rig, driven by a real agent process over its signed API: a web
// service `api` on both nodes, a start-first `worker` and a stop-first `beat`, all from one image. A deploy under a
// request loop through nginx fails no request; the swarm's tasks, sampled every ~100 ms, never show two beats
// running at once (during a deploy and a manual rollback); a candidate whose worker exits at once fails and leaves
// no service behind; a release failing after the switch rolls every service back together. Traffic goes only to
// 127.0.0.1 and the worker's own address.
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { startAgentRig, type AgentRig } from '../helpers/agent-rig.js'
import { ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { requestLoop } from '../helpers/load.js'
import { makeSwarmServicesRepo, SWARM_SERVICE_TAGS as TAGS, SWARM_SERVICES } from '../helpers/sample-swarm.js'
import { canRunSwarmRig, startSwarmRig, type SwarmRig } from '../helpers/swarm.js'
import { sampleEvery } from '../helpers/sampler.js'

// The swarm suite runs its files one at a time (`npm run test:swarm`); the rig's lock still guards a run beside it.
t.setTimeout(1_500_000)
const skip = skipUnless(await canRunSwarmRig(), 'the two-node swarm rig (root, dockerd, iproute2, util-linux, docker-registry)')

const LABEL_APP = 'deploy-agent.app'

/** `<service>_<colour> <running tasks>/<replicas>` of each of the app's swarm services, from the tasks' own states. */
async function services(rig: SwarmRig, agent: AgentRig, filters: string[] = []): Promise<string[]> {
  const found = (await rig.manager.listServices({ filters: { label: [`${LABEL_APP}=${agent.app}`, ...filters] } })) as Array<{
    ID: string
    Spec?: { Name?: string; Mode?: { Replicated?: { Replicas?: number } } }
  }>
  const lines = await Promise.all(
    found.map(async (s) => {
      // A service removed since it was listed (a failed candidate going) has no task left.
      const tasks = (await rig.manager.listTasks({ filters: { service: [s.ID] } }).catch((err: { statusCode?: number }) => {
        if (err.statusCode === 404) return []
        throw err
      })) as Array<{ Status?: { State?: string } }>
      const running = tasks.filter((task) => task.Status?.State === 'running').length
      const name = (s.Spec?.Name ?? '').replace(`${agent.app}_${agent.env}_`, '')
      return `${name} ${running}/${s.Spec?.Mode?.Replicated?.Replicas ?? 0}`
    }),
  )
  return lines.sort()
}

/** The running tasks a `services()` line counts ("green 2/2" → 2). */
const runningIn = (line: string) => Number(/ (\d+)\//.exec(line)?.[1] ?? 0)

/** Running tasks of `service`'s colours in all. */
async function runningOf(rig: SwarmRig, agent: AgentRig, service: string): Promise<number> {
  const lines = await services(rig, agent, [`deploy-agent.service=${service}`])
  return lines.reduce((sum, l) => sum + runningIn(l), 0)
}

/** Samples the beat tasks running (both colours, one entry per task) every ~100 ms until stopped. */
const sampleBeats = (rig: SwarmRig, agent: AgentRig) =>
  sampleEvery(async () => {
    const lines = await services(rig, agent, ['deploy-agent.service=beat'])
    return lines.flatMap((l) => Array.from({ length: runningIn(l) }, () => l))
  }, 100)

t.test('Swarm services: web and workers on a two-node swarm', { skip, timeout: 600_000 }, async (t) => {
  await ensureBaseImage()
  const rig = await startSwarmRig(t, { heartbeatSeconds: 1 })
  const agent = await startAgentRig(t, {
    repo: (dir) => makeSwarmServicesRepo(join(dir, 'repo')).then((r) => r.path),
    env: { runtime: 'swarm', swarm: { replicas: 2, registry: rig.registry } },
    webService: 'api',
    app: {
      services: SWARM_SERVICES,
      health: { path: '/healthz', intervalMs: 100, timeoutMs: 1000, healthyAfter: 2, deadlineSec: 6 },
      observe: { seconds: 6, intervalMs: 200, maxFailures: 2 },
    },
  })
  const statusHeaders = { authorization: `Bearer ${agent.keys.statusToken}` }
  const deploy = async (ref: string) => agent.waitFinished(await agent.startDeploy(ref), 180_000)
  const livePort = async () => Number(/server 127\.0\.0\.1:(\d+);/.exec(await agent.upstream())?.[1])
  const versionAt = async (address: string, port: number) =>
    (await (await fetch(`http://${address}:${port}/version`, { signal: AbortSignal.timeout(2_000) })).text()).trim()

  await t.test('a first deploy runs the api on both nodes, the worker and the beat once', async (t) => {
    const done = await deploy(TAGS.v1)
    t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
    const port = await livePort()
    t.match(await agent.upstream(), `server ${rig.workerAddr}:${port};`, 'the worker node is in nginx')
    t.equal(await versionAt('127.0.0.1', port), TAGS.v1)
    t.equal(await versionAt(rig.workerAddr, port), TAGS.v1)
    t.equal(await agent.served(), TAGS.v1)
    t.same(await services(rig, agent), ['api_blue 2/2', 'beat_blue 1/1', 'worker_blue 1/1'])
    const status = (await (await fetch(`${agent.url}/v1/status`, { headers: statusHeaders })).json()) as {
      apps: Record<string, { envs: { production: { live: { services?: Array<{ name: string; kind: string; nodes?: string[] }> } } } }>
    }
    t.same(
      status.apps[agent.app]?.envs.production.live.services?.map((s) => [s.name, s.kind, s.nodes?.sort()]),
      [
        ['api', 'web', [rig.workerAddr, '127.0.0.1'].sort()],
        ['worker', 'worker', undefined],
        ['beat', 'worker', undefined],
      ],
      'status lists every service, and the nodes of the web one',
    )
  })

  await t.test('a deploy under a request loop fails no request; never two beats at once', async (t) => {
    const beats = sampleBeats(rig, agent)
    const loop = requestLoop(`http://127.0.0.1:${agent.nginx.port}/version`, { concurrency: 2 })
    const done = await deploy(TAGS.v2)
    const [load, seen] = await Promise.all([loop.stop(), beats.stop()])
    t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
    t.same(load.failures, [], `zero failed requests (${load.ok} answered)`)
    t.ok(load.ok > 20, `${load.ok} requests`)
    t.same(seen.seen, [], `never two beats running at once (${seen.looks} samples)`)
    t.equal(seen.most, 1, 'a beat ran')
    t.equal(await agent.served(), TAGS.v2)
    t.same(
      await services(rig, agent),
      ['api_blue 0/0', 'api_green 2/2', 'beat_blue 0/0', 'beat_green 1/1', 'worker_blue 0/0', 'worker_green 1/1'],
      'the old colour kept at 0',
    )
  })

  await t.test('a manual rollback moves every service back; never two beats at once', async (t) => {
    const beats = sampleBeats(rig, agent)
    const loop = requestLoop(`http://127.0.0.1:${agent.nginx.port}/version`, { concurrency: 2 })
    const started = Date.now()
    const res = await agent.signedPost(`/v1/apps/${agent.app}/envs/production/rollback`, {})
    t.equal(res.status, 202, await res.clone().text())
    while ((await agent.served()) !== TAGS.v1) {
      if (Date.now() - started > 60_000) throw new Error('the rollback never reached traffic')
      await sleep(20)
    }
    const trafficAt = Date.now()
    const toTraffic = trafficAt - started
    const done = await agent.waitFinished(((await res.json()) as { id: string }).id, 120_000)
    const [load, seen] = await Promise.all([loop.stop(), beats.stop()])
    t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
    // Traffic does not wait for the old beat to stop (~3.5 s on a swarm; 7–8.5 s to traffic when it did): it moves
    // first. 3.5–5 s measured here: revive, verify (the worker's startSec, 1 s), reload.
    const log = await (await fetch(`${agent.url}/v1/deploys/${done.id}/log`, { headers: statusHeaders })).text()
    const stopped = /\{[^\n]*"event":"stopped-workers"[^\n]*\}/.exec(log)?.[0]
    t.ok(stopped, 'the old beat was stopped')
    const stoppedAt = Date.parse((JSON.parse(stopped ?? '{}') as { at?: string }).at ?? '')
    t.ok(trafficAt < stoppedAt, `traffic moved (in ${toTraffic} ms) before the old beat had stopped`)
    t.same(load.failures, [], `zero failed requests (${load.ok} answered)`)
    t.same(seen.seen, [], `never two beats running at once (${seen.looks} samples)`)
    t.equal(await agent.served(), TAGS.v1)
    t.same(await services(rig, agent), [
      'api_blue 2/2',
      'api_green 0/0',
      'beat_blue 1/1',
      'beat_green 0/0',
      'worker_blue 1/1',
      'worker_green 0/0',
    ])
  })

  await t.test('a candidate whose worker exits at once fails and leaves no service; the live release serves', async (t) => {
    const beats = sampleBeats(rig, agent)
    const id = await agent.startDeploy(TAGS.workerExits)
    const done = await agent.waitFinished(id, 180_000)
    const seen = await beats.stop()
    t.equal(done.state, 'FAILED')
    t.equal(done.error?.code, 'container_exited', JSON.stringify(done.error))
    t.match(done.error?.message, /worker/, 'the failing service is named')
    const log = await (await fetch(`${agent.url}/v1/deploys/${id}/log`, { headers: statusHeaders })).text()
    t.match(log, /cannot connect to the queue/, 'the failing worker’s output is in the deploy log')
    t.same(await services(rig, agent, [`deploy-agent.deploy=${id}`]), [], 'no service of the candidate is left')
    t.equal(await agent.served(), TAGS.v1)
    t.same(await services(rig, agent), ['api_blue 2/2', 'beat_blue 1/1', 'worker_blue 1/1'])
    t.equal(seen.most, 1, 'the candidate’s beat never ran')
  })

  await t.test('a release failing after the switch rolls every service back together', async (t) => {
    const beats = sampleBeats(rig, agent)
    const done = await deploy(TAGS.failsAfterSwitch)
    const seen = await beats.stop()
    t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
    t.equal(await agent.served(), TAGS.v1)
    t.equal(await versionAt(rig.workerAddr, await livePort()), TAGS.v1, 'on both nodes')
    t.same(seen.seen, [], 'never two beats running at once')
    t.same(
      await services(rig, agent),
      ['api_blue 2/2', 'api_green 0/0', 'beat_blue 1/1', 'beat_green 0/0', 'worker_blue 1/1', 'worker_green 0/0'],
      'the bad release kept at 0, every service of the good one back',
    )
    t.equal(await runningOf(rig, agent, 'worker'), 1, 'one worker runs')
  })
})
