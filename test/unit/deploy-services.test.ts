// A release of several services through the pipeline, on the fake engine (members in memory, every start, stop and
// switch recorded in order) with real HTTP probes against loopback servers: the order of a switch for start-first
// and stop-first workers, and that a release stands or falls as one group.
import { createServer } from 'node:http'
import { Readable } from 'node:stream'
import t, { type Test } from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget } from '../../agent/config/targets.js'
import { DeployPipeline } from '../../agent/deploy/pipeline.js'
import type { Instance, Member } from '../../agent/deploy/runtime.js'
import { createLogger } from '../../agent/observability/logger.js'
import { DeployStore } from '../../agent/store/deploys.js'
import { FakeRouter, FakeRuntime, type RuntimeFaults, fakeSource } from '../helpers/fake-runtime.js'
import { freePorts } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

const COMMIT = 'a'.repeat(40)

async function serveHealthy(t: Test, port: number): Promise<void> {
  const server = createServer((_req, res) => res.end('ok'))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
}

/** The group a deploy of `release` left on `slot`: api and frontend on their ports, a start-first and a stop-first worker. */
function group(release: string, deployId: string, ports: { api: number; frontend: number }, running: boolean): Instance {
  const member = (service: string, port: number | null, order: Member['order']): Member => ({
    id: `${deployId}-${service}`,
    service,
    kind: port === null ? 'worker' : 'web',
    port,
    order,
    stopTimeoutSec: 10,
    running,
  })
  return {
    id: `${deployId}-api`,
    release,
    commit: COMMIT,
    deployId,
    port: ports.api,
    image: `shop:production-${release}`,
    running,
    created: new Date(0),
    members: [
      member('api', ports.api, null),
      member('frontend', ports.frontend, null),
      member('worker', null, 'start-first'),
      member('beat', null, 'stop-first'),
    ],
  }
}

async function setUp(t: Test, faults: RuntimeFaults = {}, frontend = '{ kind: web, health: { path: / } }') {
  const dir = await tempDir(t)
  const [apiBlue, apiGreen, feBlue, feGreen] = (await freePorts(4)) as [number, number, number, number]
  for (const port of [apiBlue, apiGreen, feBlue, feGreen]) await serveHealthy(t, port)
  const yaml = `
audience: a
apps:
  shop:
    repo: /srv/shop.git
    health: { path: /healthz, intervalMs: 10, timeoutMs: 500, healthyAfter: 1, deadlineSec: 3 }
    observe: { seconds: 1, intervalMs: 20, maxFailures: 0 }
    services:
      api: { kind: web }
      frontend: ${frontend}
      worker: { kind: worker, health: { startSec: 1 } }
      beat: { kind: worker, order: stop-first, health: { startSec: 1 } }
    envs:
      production:
        ref: "tag:v*"
        ports: { api: [${apiBlue}, ${apiGreen}], frontend: [${feBlue}, ${feGreen}] }
        proxy: { upstreamFile: ${dir}/upstream.conf, drainMs: 0 }
`
  const target = findTarget(parseConfig(yaml, {}, 'a', dir), 'shop', 'production')
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const previous = group('v1', 'd_old', { api: apiBlue, frontend: feBlue }, true)
  const runtime = new FakeRuntime([previous], faults)
  runtime.keep('v2', COMMIT)
  const router = new FakeRouter(apiBlue, runtime.ops)
  // Two stop-first workers of the env must never run at once: checked after every operation.
  const overlaps: string[][] = []
  const push = runtime.ops.push.bind(runtime.ops)
  runtime.ops.push = (...items: string[]) => {
    const n = push(...items)
    queueMicrotask(() => {
      const running = runtime.runningSingletons()
      if (running.length > 1) overlaps.push(running)
    })
    return n
  }
  const pipeline = new DeployPipeline({
    store,
    runtime,
    ...fakeSource(COMMIT, () => Readable.from([])),
    router: () => router,
    logger: createLogger({ level: 'silent' }),
  })
  const deploy = () => store.create({ app: 'shop', env: 'production', ref: 'v2', keyId: null })
  return { store, runtime, router, pipeline, target, previous, deploy, overlaps, apiBlue, apiGreen, feGreen }
}

/** Whether `first` happened before `then` in the recorded operations. */
const before = (ops: string[], first: string, then: string) => ops.indexOf(first) !== -1 && ops.indexOf(first) < ops.indexOf(then)

t.test('Pipeline services: a release starts every service, switches once, and moves stop-first workers old-off then new-on', async (t) => {
  const rig = await setUp(t)
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  const { ops } = rig.runtime
  t.same(ops.slice(0, 3), ['start v2/api', 'start v2/frontend', 'start v2/worker'], 'the stop-first worker is not started with the group')
  t.same(
    ops.filter((o) => o.startsWith('switch')),
    [`switch ${rig.apiGreen}`, `switch ${rig.apiGreen}`],
    'one switch moves every upstream; the end of the observe window takes the warm standby out of them',
  )
  t.same(
    rig.router.standbys.map((s) => s?.port),
    [rig.apiBlue, undefined],
  )
  // Traffic does not wait for the old scheduler to stop (seconds on a swarm): nginx first, then old off, new on.
  t.ok(before(ops, `switch ${rig.apiGreen}`, 'stop v1/beat'), 'the old stop-first worker stops after the switch')
  t.ok(before(ops, 'stop v1/beat', 'start v2/beat'), 'the new one starts after it has stopped')
  t.ok(before(ops, 'start v2/worker', 'stop v1/worker'), 'a start-first worker: new one up before the old one stops')
  t.same(rig.overlaps, [], 'never two stop-first workers at once')
  const live = rig.runtime.list.find((i) => i.release === 'v2')
  t.same(
    live?.members?.map((m) => [m.service, m.port, m.running]),
    [
      ['api', rig.apiGreen, true],
      ['frontend', rig.feGreen, true],
      ['worker', null, true],
      ['beat', null, true],
    ],
  )
  t.notOk(
    rig.previous.members?.some((m) => m.running),
    'every member of the replaced release is stopped',
  )
})

t.test('Pipeline services: a candidate whose worker dies leaves no member of it behind; the live release is untouched', async (t) => {
  const rig = await setUp(t, { deadWorker: (m) => m.id.startsWith('c-') && m.service === 'worker' })
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'FAILED')
  t.equal(done.error?.code, 'container_exited')
  t.same(rig.runtime.list, [rig.previous], 'the whole candidate group is gone')
  t.equal(rig.router.routed, rig.apiBlue)
  t.ok(
    rig.previous.members?.every((m) => m.running),
    'every old member still runs, its stop-first worker too',
  )
  t.notOk(rig.runtime.ops.includes('start v2/beat'), 'the candidate’s stop-first worker never ran')
})

t.test(
  'Pipeline services: a worker restarted by its restart policy is in the failed candidate’s log, whichever check failed',
  async (t) => {
    // The web checks see the group down; by the time the worker is looked at alone it runs again (restarted once).
    const rig = await setUp(t, { restartingWorker: (m) => m.id.startsWith('c-') && m.service === 'worker' })
    const done = await rig.pipeline.run(await rig.deploy(), rig.target)
    t.equal(done.state, 'FAILED')
    t.equal(done.error?.code, 'container_exited')
    t.match(await rig.store.readLog(done.id), /"event":"container-log","service":"worker"/, "the worker's output is in the deploy log")
  },
)

t.test('Pipeline services: a worker that dies while observed rolls the whole release back', async (t) => {
  const rig = await setUp(t, { deadWorker: (m) => m.id.startsWith('c-') && m.service === 'worker' && rig.router.routed === rig.apiGreen })
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
  t.equal(rig.router.routed, rig.apiBlue, 'nginx is back on the old release')
  const { ops } = rig.runtime
  t.ok(before(ops, `switch ${rig.apiBlue}`, 'stop v2/beat'), 'nginx goes back first')
  t.ok(before(ops, 'stop v2/beat', 'start v1/beat'), 'the new stop-first worker stops before the old one starts again')
  t.ok(
    rig.previous.members?.every((m) => m.running),
    'every old member runs again',
  )
  const bad = rig.runtime.list.find((i) => i.release === 'v2')
  t.notOk(
    bad?.members?.some((m) => m.running),
    'no member of the bad release runs',
  )
  t.same(rig.overlaps, [])
})

t.test('Pipeline services: a stop-first worker that fails at the switch puts the old release and its worker back', async (t) => {
  const rig = await setUp(t, { deadWorker: (m) => m.id.startsWith('c-') && m.service === 'beat' })
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'ROLLED_BACK')
  t.equal(done.error?.code, 'container_exited')
  t.equal(rig.router.routed, rig.apiBlue)
  t.ok(before(rig.runtime.ops, 'stop v2/beat', 'start v1/beat'), 'the new one stops before the old one starts again')
  t.ok(rig.previous.members?.every((m) => m.running))
  t.same(rig.runtime.list, [rig.previous], 'the candidate is removed')
  t.same(rig.overlaps, [])
})

t.test('Pipeline services: a service with a build of its own gets its own image; a rollback needs it kept', async (t) => {
  const rig = await setUp(t, {}, '{ kind: web, health: { path: / }, build: { context: frontend } }')
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.equal(rig.runtime.serviceImages.get('frontend:v2')?.ref, 'web-frontend:production-v2', 'built in BUILDING with the release')
  // v1's app image is kept but not its frontend's: the release is not whole, so it is no rollback target.
  rig.runtime.keep('v1', COMMIT)
  const rollback = await rig.store.create({ app: 'shop', env: 'production', ref: 'v1', keyId: null, kind: 'rollback' })
  const back = await rig.pipeline.run(rollback, rig.target)
  t.equal(back.state, 'FAILED')
  t.match(back.error, { code: 'not_found', message: /no kept image of service frontend/ })
  t.equal(rig.router.routed, rig.apiGreen, 'v2 stays live')
})
