// The swarm runtime on the two-node rig (this host's dockerd as manager, a second dockerd in a network namespace as
// worker, a registry both reach as 127.0.0.1:<port>), driven by a real agent process over its signed API: a
// release runs on both nodes by digest, nginx lists both nodes and switches with no failed request, a release
// unhealthy on one node never switches, one failing after the switch on one node rolls back on both, a manual
// rollback scales the kept colour back up, and the worker node dying while a release is new rolls it back. The
// releases list each colour's tasks by node; a release that exits at once fails with its output.
// Traffic goes only to 127.0.0.1 and the worker's own address.
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { startAgentRig } from '../helpers/agent-rig.js'
import { ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { requestLoop } from '../helpers/load.js'
import type { ReleaseTask } from '../../agent/deploy/coordinator.js'
import { CRASH_WORDS, makeSwarmRepo, SWARM_TAGS, swarmServices } from '../helpers/sample-swarm.js'
import { canRunSwarmRig, startSwarmRig, type SwarmRig } from '../helpers/swarm.js'

// The swarm suite runs its files one at a time (`npm run test:swarm`); the rig's lock still guards a run beside it.
t.setTimeout(1_500_000)
const skip = skipUnless(await canRunSwarmRig(), 'the two-node swarm rig (root, dockerd, iproute2, util-linux, docker-registry)')

async function versionAt(address: string, port: number): Promise<string> {
  const res = await fetch(`http://${address}:${port}/version`, { signal: AbortSignal.timeout(2_000) })
  return (await res.text()).trim()
}

t.test('Swarm runtime on a two-node swarm', { skip, timeout: 600_000 }, async (t) => {
  await ensureBaseImage()
  const rig: SwarmRig = await startSwarmRig(t, { heartbeatSeconds: 1 })
  const agent = await startAgentRig(t, {
    repo: (dir) => makeSwarmRepo(join(dir, 'repo'), rig.workerAddr).then((r) => r.path),
    env: { runtime: 'swarm', swarm: { replicas: 2, registry: rig.registry } },
    app: {
      health: { path: '/healthz', intervalMs: 100, timeoutMs: 1000, healthyAfter: 2, deadlineSec: 6 },
      observe: { seconds: 6, intervalMs: 200, maxFailures: 2 },
    },
  })
  const deploy = async (ref: string) => agent.waitFinished(await agent.startDeploy(ref), 180_000)
  const livePort = async () => Number(/server 127\.0\.0\.1:(\d+);/.exec(await agent.upstream())?.[1])

  await t.test('a tag runs on both nodes by digest, and nginx lists both', async (t) => {
    const done = await deploy(SWARM_TAGS.v1)
    t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
    const upstream = await agent.upstream()
    const port = await livePort()
    t.match(upstream, `server 127.0.0.1:${port};`, 'the manager’s task is on loopback')
    t.match(upstream, `server ${rig.workerAddr}:${port};`, 'the worker’s on its own address')
    t.equal(await versionAt('127.0.0.1', port), SWARM_TAGS.v1, 'the manager’s task answers')
    t.equal(await versionAt(rig.workerAddr, port), SWARM_TAGS.v1, 'the worker’s task answers on its own address')
    t.equal(await agent.served(), SWARM_TAGS.v1)
    t.same(await swarmServices(agent), ['blue 2/2'])
    const status = (await (
      await fetch(`${agent.url}/v1/status`, { headers: { authorization: `Bearer ${agent.keys.statusToken}` } })
    ).json()) as { apps: Record<string, { envs: { production: { live: { nodes?: string[] } } } }> }
    t.same(status.apps[agent.app]?.envs.production.live.nodes?.sort(), [rig.workerAddr, '127.0.0.1'].sort(), 'status shows the nodes')
    const image = (
      await agent.docker([
        'service',
        'inspect',
        `${agent.app}_production_web_blue`,
        '--format',
        '{{.Spec.TaskTemplate.ContainerSpec.Image}}',
      ])
    ).trim()
    t.match(
      image,
      new RegExp(`^${rig.registry.replace(/\./g, '\\.')}/${agent.app}@sha256:[0-9a-f]{64}$`),
      'run by digest from the registry',
    )
  })

  await t.test('a deploy under a request loop through nginx fails no request; the old colour is kept at 0', async (t) => {
    const loop = requestLoop(`http://127.0.0.1:${agent.nginx.port}/version`, { concurrency: 2 })
    const done = await deploy(SWARM_TAGS.v2)
    const load = await loop.stop()
    t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
    t.same(load.failures, [], `zero failed requests (${load.ok} answered)`)
    t.ok(load.ok > 20, `${load.ok} requests`)
    const port = await livePort()
    t.equal(await versionAt(rig.workerAddr, port), SWARM_TAGS.v2)
    t.same(await swarmServices(agent), ['blue 0/0', 'green 2/2'], 'blue kept for a rollback, scaled to 0')
    const res = await fetch(`${agent.url}/v1/apps/${agent.app}/envs/production/releases`, {
      headers: { authorization: `Bearer ${agent.keys.statusToken}` },
    })
    const { releases } = (await res.json()) as { releases: Array<{ release: string; live: boolean; tasks?: ReleaseTask[] | null }> }
    const tasksOf = (release: string) => releases.find((r) => r.release === release)?.tasks
    t.same(
      tasksOf(SWARM_TAGS.v2)
        ?.map((task) => `${task.service} ${task.node} ${task.addr} ${task.state}`)
        .sort(),
      [`web ${rig.nodes.managerId} ${rig.managerAddr} running`, `web ${rig.nodes.workerId} ${rig.workerAddr} running`].sort(),
      'releases: the live one’s tasks, one per node',
    )
    t.same(tasksOf(SWARM_TAGS.v1), [], 'the kept colour, scaled to 0, has none')
  })

  await t.test('a release unhealthy on one node never switches; its services go', async (t) => {
    const done = await deploy(SWARM_TAGS.unhealthyOnWorker)
    t.equal(done.state, 'FAILED')
    t.match(done.error?.message, new RegExp(rig.workerAddr.replace(/\./g, '\\.')), 'the failing node is named')
    t.equal(await agent.served(), SWARM_TAGS.v2)
    t.same(await swarmServices(agent), ['green 2/2'], 'the candidate colour was removed')
  })

  await t.test('a release whose command exits at once fails with its output in the error and the log', async (t) => {
    const done = await deploy(SWARM_TAGS.crashes)
    t.equal(done.state, 'FAILED')
    t.equal(done.error?.code, 'container_exited', JSON.stringify(done.error))
    t.match(done.error?.message, /service web: task failed: .*; last lines:\n/)
    t.match(done.error?.message, CRASH_WORDS, 'the error has the app’s words')
    const log = await (
      await fetch(`${agent.url}/v1/deploys/${done.id}/log`, { headers: { authorization: `Bearer ${agent.keys.statusToken}` } })
    ).text()
    t.match(log, new RegExp(`"event":"container-log".*${CRASH_WORDS}`), 'and so has the deploy log')
    t.equal(await agent.served(), SWARM_TAGS.v2)
    t.same(await swarmServices(agent), ['green 2/2'], 'the candidate colour was removed')
  })

  await t.test('a manual rollback scales the kept colour back up: traffic moves in under 3 s', async (t) => {
    // A kept colour is needed: v1 was removed to make room for the failed candidate, so deploy v3 first.
    t.equal((await deploy(SWARM_TAGS.v3)).state, 'SUCCEEDED')
    const loop = requestLoop(`http://127.0.0.1:${agent.nginx.port}/version`, { concurrency: 2 })
    t.teardown(() => loop.stop()) // a failure below must not leave the loop running until its million requests
    const started = Date.now()
    const res = await agent.signedPost(`/v1/apps/${agent.app}/envs/production/rollback`, {})
    t.equal(res.status, 202, await res.clone().text())
    const { id } = (await res.json()) as { id: string }
    while ((await agent.served()) !== SWARM_TAGS.v2) {
      if (Date.now() - started > 30_000) throw new Error('the rollback never reached traffic')
      await sleep(20)
    }
    const toTraffic = Date.now() - started
    const done = await agent.waitFinished(id, 120_000)
    const load = await loop.stop()
    t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
    t.ok(toTraffic < 3_000, `rollback reached traffic in ${toTraffic} ms`)
    t.same(load.failures, [], `zero failed requests (${load.ok} answered)`)
    t.equal(await versionAt(rig.workerAddr, await livePort()), SWARM_TAGS.v2, 'on both nodes')
  })

  await t.test('a release failing after the switch on one node is rolled back on both', async (t) => {
    const done = await deploy(SWARM_TAGS.failsOnWorker)
    t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
    t.match(done.error?.message, new RegExp(`on ${rig.workerAddr.replace(/\./g, '\\.')}`))
    const port = await livePort()
    t.equal(await versionAt('127.0.0.1', port), SWARM_TAGS.v2)
    t.equal(await versionAt(rig.workerAddr, port), SWARM_TAGS.v2)
    t.equal(await agent.served(), SWARM_TAGS.v2)
  })

  await t.test('the worker node dying while a release is new rolls it back to the nodes that are left', async (t) => {
    const id = await agent.startDeploy(SWARM_TAGS.v3)
    await agent.waitFor(id, (d) => d.state === 'OBSERVING' || d.finishedAt !== null, 180_000)
    await rig.killWorker()
    const done = await agent.waitFinished(id, 120_000)
    t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
    t.match(done.error?.message, /a node running it went down/, 'the reason says what happened')
    t.equal(await agent.served(), SWARM_TAGS.v2, 'the previous release serves from the manager')
    t.notMatch(await agent.upstream(), new RegExp(rig.workerAddr.replace(/\./g, '\\.')), 'the dead node is out of nginx')
    await rig.startWorker()
  })
})
