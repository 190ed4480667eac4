// The pipeline under engine faults, with a real store and real HTTP probes against loopback servers but a fake
// runtime, image builder, repo and router: what happens when Docker stops answering after the switch, or the disk
// refuses the deploy log.
import t, { type Test } from 'tap'
import type { RuntimeFaults } from '../helpers/fake-runtime.js'
import { startPipelineRig } from '../helpers/pipeline-rig.js'

const diskFull = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })

const setUp = (t: Test, faults: RuntimeFaults = {}) => startPipelineRig(t, { faults })

t.test('Pipeline: Docker not answering during OBSERVING leaves the switched-in release live (the probes decide)', async (t) => {
  // The engine goes away once nginx routes to the new release.
  const rig = await setUp(t, { isAlive: () => rig.routed() === rig.green })
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.equal(rig.routed(), rig.green, 'nginx routes to the new release')
  t.same(rig.runtime.removed, [], 'the live candidate is never removed')
})

// Regression (issue: a drain problem reverted a healthy release): stopping the replaced release sat inside the
// observe window's failure policy, so an engine failing while retiring v1 rolled a healthy v2 back.
t.test('Pipeline: a failure to stop the replaced release never rolls back the healthy new one', async (t) => {
  const rig = await setUp(t, { retire: (i) => i.id === 'old' })
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.equal(rig.routed(), rig.green, 'nginx routes to the new release')
  t.same(rig.runtime.removed, [], 'nothing was removed')
  t.ok(rig.previous.running, 'the replaced release still runs (out of nginx), for the keeper to stop')
  const log = await rig.store.readLog(done.id)
  t.match(log, /"event":"retire-failed".*ENOENT/, 'the deploy log says why it still runs')
})

t.test('Pipeline: deploy log lines the disk refuses never crash the agent; the deploy goes on', async (t) => {
  const rig = await setUp(t)
  const appendLog = rig.store.appendLog.bind(rig.store)
  rig.store.appendLog = async (id, line) => {
    if (['health', 'observe'].includes((line as { event?: string }).event ?? '')) throw diskFull()
    return appendLog(id, line)
  }
  const rejections: unknown[] = []
  const onRejection = (reason: unknown) => rejections.push(reason)
  process.on('unhandledRejection', onRejection)
  t.teardown(() => process.off('unhandledRejection', onRejection))
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.same(rejections, [], 'no unhandled rejection')
})

t.test('Pipeline: a full disk under a step fails the deploy with disk_full, before the switch', async (t) => {
  const rig = await setUp(t)
  const appendLog = rig.store.appendLog.bind(rig.store)
  rig.store.appendLog = async (id, line) => {
    if ((line as { event?: string }).event === 'resolved') throw diskFull()
    return appendLog(id, line)
  }
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'FAILED')
  t.equal(done.error?.code, 'disk_full')
  t.match(done.error?.message, /the disk is full: ENOSPC/)
  t.equal(rig.routed(), rig.blue, 'routing is untouched')
})

// Regression (fault suite, the disk filling up mid-build): the candidate was started but the write of its
// `started` line met the full disk before the pipeline held it, so it was left running beside the live release.
t.test('Pipeline: a full disk right after the candidate starts removes the candidate', async (t) => {
  const rig = await setUp(t)
  const appendLog = rig.store.appendLog.bind(rig.store)
  rig.store.appendLog = async (id, line, opts) => {
    if (['started', 'container-log', 'removed'].includes((line as { event?: string }).event ?? '')) throw diskFull()
    return appendLog(id, line, opts)
  }
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'FAILED')
  t.equal(done.error?.code, 'disk_full')
  t.same(rig.runtime.removed, [`c-${done.id}`], 'the candidate is removed though none of its log lines could be written')
  t.equal(rig.routed(), rig.blue, 'routing is untouched')
})

t.test('Pipeline: a full disk when SWITCHING is journalled removes the verified candidate; nginx never moved', async (t) => {
  const rig = await setUp(t)
  const transition = rig.store.transition.bind(rig.store)
  rig.store.transition = async (id, state, patch) => {
    if (state === 'SWITCHING') throw diskFull()
    return transition(id, state, patch)
  }
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'FAILED')
  t.equal(done.error?.code, 'disk_full')
  t.same(rig.runtime.removed, [`c-${done.id}`], 'the candidate is removed')
  t.equal(rig.routed(), rig.blue, 'routing is untouched')
})
