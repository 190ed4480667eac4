// The pipeline's hook for the traffic verdict (proxy.accessLog): a verdict ends OBSERVING at once and rolls back
// with its reason; no verdict leaves the probes to decide. Fake runtime and router, real loopback probes.
import t, { type Test } from 'tap'
import type { Instance } from '../../agent/deploy/runtime.js'
import { startPipelineRig } from '../helpers/pipeline-rig.js'

async function setUp(t: Test, observeSeconds: number, verdict: (candidate: Instance) => Promise<string>) {
  const watched: Instance[] = []
  let stops = 0
  const rig = await startPipelineRig(t, {
    observe: `{ seconds: ${observeSeconds}, intervalMs: 20, maxFailures: 0 }`,
    watchTraffic: () => (_target, candidate) => {
      watched.push(candidate)
      return { failed: verdict(candidate), stop: () => void stops++ }
    },
  })
  return { ...rig, watched, stops: () => stops }
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
