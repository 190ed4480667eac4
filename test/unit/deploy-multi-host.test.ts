// A release that serves on several addresses (a swarm: one task per node) is checked on each: every address must
// pass its health checks before the switch, nginx lists them all, and one address failing in the observe window
// rolls the release back. Fake runtime and router; real probes of servers on 127.0.0.2 and 127.0.0.3.
import { createServer } from 'node:http'
import t, { type Test } from 'tap'
import { startPipelineRig } from '../helpers/pipeline-rig.js'

const NODES = ['127.0.0.2', '127.0.0.3']

/** A server on `host`:`port` answering `status()`. */
async function serveOn(t: Test, host: string, port: number, status: () => number): Promise<void> {
  const server = createServer((_req, res) => {
    res.statusCode = status()
    res.end('ok')
  })
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  await new Promise<void>((resolve) => server.listen(port, host, resolve))
}

async function setUp(t: Test, statusOf: (host: string) => () => number) {
  const rig = await startPipelineRig(t, {
    health: '{ path: /healthz, intervalMs: 10, timeoutMs: 300, healthyAfter: 2, deadlineSec: 1 }',
    observe: '{ seconds: 1, intervalMs: 20, maxFailures: 1 }',
    // The loopback server of the green port fails: only the nodes' addresses may be probed.
    newHealth: () => 500,
  })
  rig.runtime.candidateHosts = NODES
  for (const host of NODES) await serveOn(t, host, rig.green, statusOf(host))
  return rig
}

t.test('Several addresses: each is checked, and nginx gets them all', async (t) => {
  const rig = await setUp(t, () => () => 200)
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.same([...(rig.router.placements.at(-1)?.entries() ?? [])], [[rig.green, NODES]], 'one server per address')
  const log = (await rig.store.readLog(done.id))
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { event?: string; host?: string })
  t.same([...new Set(log.filter((l) => l.event === 'health').map((l) => l.host))].sort(), NODES, 'probes named each address')
})

t.test('Several addresses: one that never gets healthy keeps the old release, never switched', async (t) => {
  const rig = await setUp(t, (host) => () => (host === '127.0.0.3' ? 503 : 200))
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'FAILED')
  t.equal(rig.routed(), rig.blue, 'nginx still routes to the old release')
  t.same(rig.router.placements, [], 'no switch was attempted')
})

t.test('Several addresses: one failing in the observe window rolls the release back, naming the address', async (t) => {
  let switched = false
  const rig = await setUp(t, (host) => () => (host === '127.0.0.2' && switched ? 500 : 200))
  const deploy = await rig.deploy()
  const run = rig.pipeline.run(deploy, rig.target)
  while (rig.routed() !== rig.green) await new Promise((r) => setTimeout(r, 5))
  switched = true
  const done = await run
  t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
  t.match(done.error?.message, /on 127\.0\.0\.2/)
  t.equal(rig.routed(), rig.blue)
})
