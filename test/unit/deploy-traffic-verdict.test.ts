// The pipeline's hook for the traffic verdict (proxy.accessLog): a verdict ends OBSERVING at once and rolls back
// with its reason; no verdict leaves the probes to decide. Fake runtime and router, real loopback probes.
import { createServer } from 'node:http'
import t, { type Test } from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget } from '../../agent/config/targets.js'
import { DeployPipeline } from '../../agent/deploy/pipeline.js'
import type { Instance } from '../../agent/deploy/runtime.js'
import { createLogger } from '../../agent/observability/logger.js'
import { DeployStore } from '../../agent/store/deploys.js'
import { FakeRouter, FakeRuntime, fakeSource } from '../helpers/fake-runtime.js'
import { freePorts } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

const COMMIT = 'a'.repeat(40)

async function serveHealthy(t: Test, port: number): Promise<void> {
  const server = createServer((_req, res) => res.end('ok'))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
}

async function setUp(t: Test, observeSeconds: number, verdict: (candidate: Instance) => Promise<string>) {
  const dir = await tempDir(t)
  const [blue, green] = (await freePorts(2)) as [number, number]
  await serveHealthy(t, blue)
  await serveHealthy(t, green)
  const yaml = `
audience: a
apps:
  web:
    repo: /srv/web.git
    health: { path: /healthz, intervalMs: 10, timeoutMs: 500, healthyAfter: 1, deadlineSec: 3 }
    smoke: []
    observe: { seconds: ${observeSeconds}, intervalMs: 20, maxFailures: 0 }
    envs:
      production:
        ref: "tag:v*"
        ports: [${blue}, ${green}]
        proxy: { upstreamFile: ${dir}/upstream.conf, drainMs: 0 }
`
  const target = findTarget(parseConfig(yaml, {}, 'a', dir), 'web', 'production')
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const previous: Instance = {
    id: 'old',
    release: 'v1',
    commit: COMMIT,
    deployId: 'd_old',
    port: blue,
    image: 'web:production-v1',
    running: true,
    created: new Date(0),
  }
  const runtime = new FakeRuntime([previous])
  runtime.keep('v2', COMMIT)
  const router = new FakeRouter(blue)
  const watched: Instance[] = []
  let stops = 0
  const pipeline = new DeployPipeline({
    store,
    runtime,
    ...fakeSource(COMMIT),
    router: () => router,
    logger: createLogger({ level: 'silent' }),
    watchTraffic: (_target, candidate) => {
      watched.push(candidate)
      return { failed: verdict(candidate), stop: () => void stops++ }
    },
  })
  const deploy = () => store.create({ app: 'web', env: 'production', ref: 'v2', keyId: null })
  return { pipeline, target, deploy, routed: () => router.routed, blue, green, watched, stops: () => stops }
}

t.test('Pipeline: a traffic verdict ends OBSERVING at once and rolls back with its reason', async (t) => {
  const reason = 'the error rate of the new release was 80%'
  const rig = await setUp(t, 60, () => new Promise((resolve) => setTimeout(() => resolve(reason), 100)))
  const started = Date.now()
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
  t.same(done.error, { code: 'observe_failed', message: reason })
  t.ok(Date.now() - started < 10_000, 'long before the 60 s window ends')
  t.equal(rig.routed(), rig.blue, 'nginx routes to the previous release again')
  t.same(
    rig.watched.map((i) => i.port),
    [rig.green],
    'the new release, on its port, was watched',
  )
  t.equal(rig.stops(), 1, 'the watch is stopped')
})

t.test('Pipeline: without a verdict the probes decide and the watch stops with the window', async (t) => {
  const rig = await setUp(t, 1, () => new Promise<string>(() => undefined))
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.equal(rig.routed(), rig.green)
  t.equal(rig.stops(), 1)
})
