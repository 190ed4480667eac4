// Decisions for an app of workers only: no port names a group, its deploy id does, and the hand-over record (not
// nginx) says which group is live. Plans compared as text, and run on the fake engine: two stop-first workers of the
// env never run at once on any path.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import t, { type Test } from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget } from '../../agent/config/targets.js'
import { DeployCoordinator } from '../../agent/deploy/coordinator.js'
import { executeSteps } from '../../agent/deploy/execute.js'
import { HandOverFile } from '../../agent/deploy/handover.js'
import { DeployPipeline } from '../../agent/deploy/pipeline.js'
import { describePlan, describeSteps, planKeep, planRecovery, type Observed } from '../../agent/deploy/plan.js'
import { planPrune } from '../../agent/deploy/prune.js'
import type { Instance, Member } from '../../agent/deploy/runtime.js'
import { createLogger } from '../../agent/observability/logger.js'
import { DeployStore, type Deploy, type DeployState } from '../../agent/store/deploys.js'
import { fakeSource, FakeHandOver, FakeRuntime, type RuntimeFaults } from '../helpers/fake-runtime.js'
import { tempDir } from '../helpers/tmp.js'
import { deployIn } from '../helpers/deploy-record.js'

/** A group of workers of `release` (deploy `d-<release>`): a start-first worker and a stop-first `beat`. */
const group = (release: string, running: boolean, beatRunning = running, minutes = 0): Instance => {
  const member = (service: string, order: Member['order'], on: boolean): Member => ({
    id: `c-${release}-${service}`,
    service,
    kind: 'worker',
    port: null,
    order,
    stopTimeoutSec: 10,
    running: on,
  })
  return {
    id: `c-${release}-worker`,
    release,
    port: null,
    running: running || beatRunning,
    commit: 'c',
    deployId: `d-${release}`,
    image: 'i',
    created: new Date(minutes * 60_000),
    members: [member('worker', 'start-first', running), member('beat', 'stop-first', beatRunning)],
  }
}

const deploy = (state: DeployState, kind: 'deploy' | 'rollback' = 'deploy') =>
  deployIn(state, kind, { app: 'jobs', details: { candidatePort: null, previousPort: null, previousDeploy: 'd-v1' } })

const scene = (o: { handedTo: string | null; old: Instance; fresh: Instance; healthy?: boolean }): Observed => ({
  routedPort: null,
  handedTo: o.handedTo,
  candidates: [o.fresh],
  previous: o.old,
  candidateHealthy: o.healthy ?? false,
})

/** Runs the plan on the fake engine; answers the stop-first workers running after each step and the record. */
async function run(plan: ReturnType<typeof planRecovery>, old: Instance, fresh: Instance, handedTo: string | null) {
  const runtime = new FakeRuntime([fresh, old])
  const handOver = new FakeHandOver(handedTo)
  const seen: string[][] = []
  await executeSteps(plan.steps, {
    runtime,
    router: handOver,
    verify: async () => undefined,
    done: () => {
      seen.push(runtime.runningSingletons())
    },
  })
  return { seen, runtime, handOver }
}

t.test('planRecovery workers: handed over and healthy, the new group finishes; its beat starts after the old one stops', async (t) => {
  // A crash in SWITCHING after the hand-over: the old beat was stopped, the new one not started yet.
  const old = group('v1', true, false)
  const fresh = group('v2', true, false)
  const plan = planRecovery(deploy('SWITCHING'), scene({ handedTo: 'd-v2', old, fresh, healthy: true }))
  t.equal(
    describePlan(plan),
    [
      'switch v2@d-v2: make sure the hand-over record names it',
      'retire v1@d-v1: replaced by the live release',
      'start-singletons v2@d-v2: the live release runs its workers',
      '→ SUCCEEDED',
    ].join('\n'),
  )
  const { seen, handOver } = await run(plan, old, fresh, 'd-v2')
  t.equal(handOver.handedTo, 'd-v2')
  t.same(seen.at(-1), ['v2/beat'])
  t.ok(
    seen.every((s) => s.length <= 1),
    'never two stop-first workers',
  )
})

t.test('planRecovery workers: not handed over, or handed to an unhealthy group, the old group takes the work back', async (t) => {
  for (const [state, handedTo, healthy] of [
    ['OBSERVING', 'd-v2', false],
    ['ROLLING_BACK', 'd-v2', true],
    ['SWITCHING', 'd-v1', false],
  ] as const) {
    const old = group('v1', false)
    const fresh = group('v2', true, handedTo === 'd-v2')
    const plan = planRecovery(deploy(state), scene({ handedTo, old, fresh, healthy }))
    const text = describePlan(plan)
    t.match(text, /^stop-singletons v2@d-v2: /, state)
    t.match(text, /revive v1@d-v1: [^\n]*\nverify v1@d-v1: [^\n]*\nswitch v1@d-v1: [^\n]*\nstart-singletons v1@d-v1: /, state)
    const { seen, handOver, runtime } = await run(plan, old, fresh, handedTo)
    t.equal(handOver.handedTo, 'd-v1', state)
    t.same(seen.at(-1), ['v1/beat'], state)
    t.ok(runtime.removed.includes(fresh.id) || !fresh.running, `${state}: no worker of the new group runs`)
    t.ok(
      seen.every((s) => s.length <= 1),
      `${state}: never two stop-first workers (${JSON.stringify(seen)})`,
    )
  }
})

t.test('planRecovery workers: a crash before the hand-over removes the candidate; the live group is untouched', async (t) => {
  const old = group('v1', true, true)
  const fresh = group('v2', true, false)
  const plan = planRecovery(deploy('VERIFYING'), scene({ handedTo: 'd-v1', old, fresh }))
  t.equal(describePlan(plan), ['remove v2@d-v2: candidate of an interrupted deploy', '→ FAILED (interrupted)'].join('\n'))
})

t.test('planKeep workers: the live group is found by the hand-over record and its deploy id', async (t) => {
  const live = group('v1', false)
  const view = { instances: [group('v2', true, true, 5), live], routedPort: null, handedTo: 'd-v1', live: null, idlePort: null }
  const liveRelease = { release: 'v1', commit: 'c', port: null, deployId: 'd-v1', since: '' }
  t.same(describeSteps(planKeep(view, liveRelease)), [
    'revive v1@d-v1: the live release was found stopped (dockerd restarted?)',
    'start-singletons v1@d-v1: the live release runs its workers',
  ])
  live.running = true
  for (const m of live.members ?? []) m.running = true
  t.same(describeSteps(planKeep(view, liveRelease)), ['retire v2@d-v2: runs beside the live group (its retire after the hand-over failed)'])
  t.same(planKeep({ ...view, handedTo: 'd-v2' }, liveRelease), [], 'a group the record does not name is not started')
})

t.test('planPrune workers: the live group and the newest other one (the standby) stay', async (t) => {
  const image = (release: string, minutes: number) => ({
    release,
    commit: 'c',
    ref: `jobs:p-${release}`,
    created: new Date(minutes * 60_000),
  })
  const plan = planPrune({
    livePort: null,
    liveDeployId: 'd-v3',
    keepReleases: 2,
    instances: [group('v3', true, true, 30), group('v2', false, false, 20), group('v1', false, false, 10)],
    images: [image('v1', 10), image('v2', 20), image('v3', 30)],
  })
  t.same(
    plan.containers.map((c) => c.id),
    ['c-v1-worker'],
  )
  t.same(
    plan.images.map((i) => i.ref),
    ['jobs:p-v1'],
  )
})

/** A worker-only env on the fake engine: v1 live (handed to d-v1), v2's image kept; no router at all. */
async function pipelineRig(tt: Test, faults: RuntimeFaults = {}) {
  const dir = await tempDir(tt)
  const yaml = `
audience: a
apps:
  jobs:
    repo: /srv/jobs.git
    health: { intervalMs: 10, deadlineSec: 3 }
    observe: { seconds: 1, intervalMs: 20 }
    services:
      worker: { kind: worker, health: { startSec: 1 } }
      beat: { kind: worker, order: stop-first, health: { startSec: 1 } }
    envs:
      production: { ref: "tag:v*" }
`
  const target = findTarget(parseConfig(yaml, {}, 'a', dir), 'jobs', 'production')
  const store = await DeployStore.open(dir)
  tt.teardown(() => store.close())
  const previous = group('v1', true)
  const runtime = new FakeRuntime([previous], faults)
  runtime.keep('v2', COMMIT)
  const handOver = new FakeHandOver('d-v1', runtime.ops)
  const pipeline = new DeployPipeline({
    store,
    runtime,
    ...fakeSource(COMMIT, () => Readable.from([])),
    router: () => {
      throw new Error('a worker-only env has no nginx')
    },
    handOver: () => handOver,
    logger: createLogger({ level: 'silent' }),
  })
  const deploy = () => store.create({ app: 'jobs', env: 'production', ref: 'v2', keyId: null })
  return { store, runtime, handOver, pipeline, target, previous, deploy }
}

const COMMIT = 'a'.repeat(40)
const before = (ops: string[], first: string, then: string) => ops.indexOf(first) !== -1 && ops.indexOf(first) < ops.indexOf(then)

t.test('Pipeline workers: a release is handed over without nginx — start-first beside the old, stop-first after it', async (t) => {
  const rig = await pipelineRig(t)
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  const id = done.id
  const { ops } = rig.runtime
  t.equal(ops[0], 'start v2/worker', 'the stop-first worker is not started with the group')
  t.same(
    ops.filter((o) => o.startsWith('hand-over')),
    [`hand-over ${id}`],
  )
  t.ok(before(ops, `hand-over ${id}`, 'stop v1/beat'), 'the old stop-first worker stops after the hand-over')
  t.ok(before(ops, 'stop v1/beat', 'start v2/beat'), 'the new one starts after it has stopped')
  t.ok(before(ops, 'start v2/beat', 'stop v1/worker'), 'the old start-first worker stops once the new group is observed')
  t.equal(done.details.previousDeploy, 'd-v1', 'recovery can find the replaced group by its deploy id')
  t.notOk(
    rig.previous.members?.some((m) => m.running),
    'the replaced group is stopped',
  )
  t.same(rig.runtime.removed, [], 'the replaced group stays, stopped, as the standby')
})

t.test('Pipeline workers: a candidate whose worker dies leaves nothing behind; the live group keeps the work', async (t) => {
  const rig = await pipelineRig(t, { deadWorker: (m) => !m.id.startsWith('c-v1') && m.service === 'worker' })
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'FAILED')
  t.equal(done.error?.code, 'container_exited')
  t.same(rig.runtime.list, [rig.previous], 'the whole candidate group is gone')
  t.equal(rig.handOver.handedTo, 'd-v1')
  t.ok(rig.previous.members?.every((m) => m.running))
  t.notOk(rig.runtime.ops.includes('start v2/beat'), 'the candidate’s stop-first worker never ran')
})

t.test('Pipeline workers: a worker that dies while observed hands the work back to the old group', async (t) => {
  const rig = await pipelineRig(t, {
    deadWorker: (m) => !m.id.startsWith('c-v1') && m.service === 'worker' && rig.handOver.handedTo !== 'd-v1',
  })
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
  t.match(done.error?.message, /^worker: the worker exited or restarted/)
  t.equal(rig.handOver.handedTo, 'd-v1', 'the record names the old group again')
  t.ok(before(rig.runtime.ops, 'stop v2/beat', 'start v1/beat'), 'the new stop-first worker stops before the old one starts')
  t.ok(rig.previous.members?.every((m) => m.running))
  t.notOk(
    rig.runtime.list.find((i) => i.release === 'v2')?.members?.some((m) => m.running),
    'no member of the bad group runs',
  )
})

t.test('Pipeline workers: a manual rollback revives the kept group and hands the work back to it', async (t) => {
  const rig = await pipelineRig(t)
  t.equal((await rig.pipeline.run(await rig.deploy(), rig.target)).state, 'SUCCEEDED')
  rig.runtime.keep('v1', COMMIT)
  const rollback = await rig.store.create({ app: 'jobs', env: 'production', ref: 'v1', keyId: null, kind: 'rollback' })
  const back = await rig.pipeline.run(rollback, rig.target)
  t.equal(back.state, 'SUCCEEDED', JSON.stringify(back.error))
  t.equal(rig.handOver.handedTo, 'd-v1', 'the kept group keeps its deploy id')
  t.same(rig.runtime.revived, ['c-v1-worker'], 'its stopped containers, not new ones')
  t.ok(rig.previous.members?.every((m) => m.running))
  t.notOk(rig.runtime.list.find((i) => i.release === 'v2')?.members?.some((m) => m.running))
})

t.test('HandOverFile: no record before the first hand-over; the last deploy id handed to; a foreign file is refused', async (t) => {
  const dir = await tempDir(t)
  const record = new HandOverFile(join(dir, 'handover', 'jobs.production.json'))
  t.equal(await record.current(), null)
  await record.handTo('d-v1')
  await record.handTo('d-v2')
  t.equal(await record.current(), 'd-v2')
  await writeFile(record.path, '{"deployId": 7}\n')
  await t.rejects(record.current(), /is not a hand-over record of version 1/)
})

t.test('DeployCoordinator workers: start-up reads the live group from the hand-over record; the keeper looks after it', async (t) => {
  const dir = await tempDir(t)
  const config = parseConfig(
    `
audience: a
apps:
  jobs:
    repo: /srv/jobs.git
    services:
      worker: { kind: worker }
      beat: { kind: worker, order: stop-first }
    envs:
      production: { ref: "tag:v*" }
`,
    {},
    'a',
    dir,
  )
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const live = group('v1', false)
  const leftover = group('v2', true, false, 5)
  const runtime = new FakeRuntime([leftover, live])
  const coordinator = new DeployCoordinator({
    config,
    store,
    pipeline: () => ({ run: async (d: Deploy) => d, recover: async () => false }),
    runtime,
    router: () => {
      throw new Error('a worker-only env has no nginx')
    },
    handOver: () => new FakeHandOver('d-v1'),
    logger: createLogger({ level: 'silent' }),
  })
  await coordinator.recover()
  t.equal(coordinator.liveRelease('jobs', 'production'), null, 'the group the record names is stopped: nothing is live yet')
  live.running = true
  await coordinator.observeLive()
  t.match(coordinator.liveRelease('jobs', 'production'), { release: 'v1', port: null, deployId: 'd-v1' })
  live.running = false
  for (const m of live.members ?? []) m.running = false
  await coordinator.keep()
  t.same(runtime.revived, ['c-v1-worker'], 'the live group found stopped is started again')
  t.same(runtime.runningSingletons(), ['v1/beat'], 'with its stop-first worker')
  t.same(runtime.retired, [])
  await coordinator.keep()
  t.same(runtime.retired, ['c-v2-worker'], 'at the next look, a group running beside it is stopped')
})
