// The coordinator's lanes and approvals with a real store and a pipeline the test finishes by hand.
import t, { type Test } from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import type { Target } from '../../agent/config/targets.js'
import { Authenticator } from '../../agent/auth/authenticator.js'
import type { LoadedKey } from '../../agent/auth/keyring.js'
import { DeployCoordinator } from '../../agent/deploy/coordinator.js'
import { createLogger } from '../../agent/observability/logger.js'
import type { Instance, Member, Runtime } from '../../agent/deploy/runtime.js'
import type { DeployEvent } from '../../agent/deploy/transition.js'
import type { Notice } from '../../agent/notify/notifier.js'
import { DeployStore, type Deploy, type DeployState } from '../../agent/store/deploys.js'
import { tempDir } from '../helpers/tmp.js'

const yaml = `
audience: a
apps:
  web:
    repo: /srv/web.git
    envs:
      staging: { ref: "branch:main", ports: [18001, 18002] }
      strict: { ref: "branch:main", ports: [18003, 18004], queue: reject }
      production: { ref: "tag:v*", ports: [18011, 18012], requireApproval: true }
`

/** A pipeline whose runs end only when the test says so (a finish that comes before the run got there counts). */
class ManualPipeline {
  readonly started: string[] = []
  private readonly finishers = new Map<string, () => void>()
  private readonly finishedEarly = new Set<string>()
  constructor(private readonly store: DeployStore) {}
  async run(deploy: Deploy, _target: Target): Promise<Deploy> {
    this.started.push(deploy.id)
    await this.store.transition(deploy.id, 'RESOLVING')
    if (!this.finishedEarly.has(deploy.id)) await new Promise<void>((resolve) => this.finishers.set(deploy.id, resolve))
    return this.store.transition(deploy.id, 'FAILED', { error: { code: 'test', message: 'ended by the test' }, terminal: true })
  }
  async recover(): Promise<boolean> {
    return false
  }
  finish(id: string): void {
    const finisher = this.finishers.get(id)
    if (finisher) finisher()
    else this.finishedEarly.add(id)
  }
}

async function setUp(t: Test, overrides: { runtime?: Partial<Runtime>; recover?: () => Promise<boolean> } = {}) {
  const dir = await tempDir(t)
  const config = parseConfig(yaml, {}, 'a', dir)
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const pipeline = new ManualPipeline(store)
  if (overrides.recover) pipeline.recover = overrides.recover
  const notices: Notice[] = []
  const events: DeployEvent[] = []
  const coordinator = new DeployCoordinator({
    notify: (n) => notices.push(n),
    onDeployEvent: (e) => events.push(e),
    config,
    store,
    pipeline: () => pipeline,
    runtime: (overrides.runtime ?? {}) as Runtime,
    router: () => ({ currentPort: async () => null, switchTo: async () => ({ previousPort: null }) }),
    logger: createLogger({ level: 'silent' }),
  })
  return { store, pipeline, coordinator, notices, events }
}

/** A kept image of web/production, as the runtime lists it: `minutes` after 2026-01-01 orders them. */
const keptImage = (release: string, minutes: number) => ({
  release,
  commit: 'c'.repeat(40),
  ref: `web:production-${release}`,
  created: new Date(Date.UTC(2026, 0, 1, 0, minutes)),
})

const tick = () => new Promise((r) => setTimeout(r, 20))

/** Waits until `done()` holds (no fixed delay: the journal's fsyncs are slow on a loaded machine). */
async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; !done(); i++) {
    if (i > 1000) throw new Error(`timed out waiting until ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

t.test('DeployCoordinator: one runs, one waits, a newer request replaces the waiting one', async (t) => {
  const { store, pipeline, coordinator } = await setUp(t)
  const first = await coordinator.request({ app: 'web', env: 'staging', ref: 'main' })
  const second = await coordinator.request({ app: 'web', env: 'staging', ref: 'main' })
  const third = await coordinator.request({ app: 'web', env: 'staging', ref: 'main' })
  await tick()
  t.same(pipeline.started, [first.id], 'only the first runs')
  t.equal(store.get(second.id)?.state, 'CANCELLED')
  t.equal(store.get(second.id)?.error?.code, 'superseded')
  t.equal(store.get(third.id)?.state, 'QUEUED')
  pipeline.finish(first.id)
  await until(() => pipeline.started.length === 2, 'the next deploy starts')
  t.same(pipeline.started, [first.id, third.id], 'the waiting one starts when the lane frees')
  const other = await coordinator.request({ app: 'web', env: 'production', ref: 'v1' })
  t.equal(other.state, 'AWAITING_APPROVAL', 'another env has its own lane')
  pipeline.finish(third.id)
  await coordinator.idle()
})

t.test('DeployCoordinator: queue: reject answers 409 while a deploy runs', async (t) => {
  const { pipeline, coordinator } = await setUp(t)
  const first = await coordinator.request({ app: 'web', env: 'strict', ref: 'main' })
  await t.rejects(coordinator.request({ app: 'web', env: 'strict', ref: 'main' }), { code: 'deploy_in_progress', statusCode: 409 })
  await tick()
  pipeline.finish(first.id)
  await coordinator.idle()
  const again = await coordinator.request({ app: 'web', env: 'strict', ref: 'main' })
  t.equal(again.state, 'QUEUED', 'accepted once the lane is free')
  await tick()
  pipeline.finish(again.id)
  await coordinator.idle()
})

t.test('DeployCoordinator: approval holds a deploy; a newer one supersedes it; approve starts it once', async (t) => {
  const { store, pipeline, coordinator } = await setUp(t)
  const older = await coordinator.request({ app: 'web', env: 'production', ref: 'v1.0.0', keyId: 'ci' })
  t.equal(older.state, 'AWAITING_APPROVAL')
  const newer = await coordinator.request({ app: 'web', env: 'production', ref: 'v1.0.1', keyId: 'ci' })
  t.equal(store.get(older.id)?.state, 'CANCELLED', 'the older held deploy is superseded')
  await tick()
  t.same(pipeline.started, [], 'nothing runs before approval')
  t.equal(store.get(newer.id)?.approvedBy, null, 'not approved yet')
  const approved = await coordinator.approve(newer.id, 'release-manager')
  t.equal(approved.state, 'QUEUED')
  t.equal(approved.approvedBy, 'release-manager', 'the record names the approving key')
  t.equal(approved.keyId, 'ci', 'and still the requesting one')
  await t.rejects(coordinator.approve(newer.id, 'release-manager'), { code: 'not_awaiting_approval' })
  await t.rejects(coordinator.approve('d_zzzzzzzzzzzz', 'release-manager'), { code: 'not_found' })
  await until(() => store.get(newer.id)?.state === 'RESOLVING', 'the approved deploy runs')
  t.same(pipeline.started, [newer.id])
  t.same(
    store.get(newer.id)?.states.map((s) => s.state),
    ['QUEUED', 'AWAITING_APPROVAL', 'QUEUED', 'RESOLVING'],
  )
  const log = (await store.readLog(newer.id))
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line))
  t.match(
    log,
    [
      { event: 'state', state: 'AWAITING_APPROVAL' },
      { event: 'state', state: 'QUEUED', was: 'AWAITING_APPROVAL', approvedBy: 'release-manager' },
    ],
    'the deploy log names the approver',
  )
  pipeline.finish(newer.id)
  await coordinator.idle()
})

t.test('DeployCoordinator: a deploy is notified when it starts and when it ends, with the reason', async (t) => {
  const { pipeline, coordinator, notices } = await setUp(t)
  const deploy = await coordinator.request({ app: 'web', env: 'staging', ref: 'main' })
  await tick()
  pipeline.finish(deploy.id)
  await coordinator.idle()
  t.match(notices, [
    { event: 'deploy.started', app: 'web', env: 'staging', id: deploy.id },
    { event: 'deploy.failed', app: 'web', env: 'staging', id: deploy.id, reason: 'ended by the test' },
  ])
  t.type(notices[1]?.durationMs, 'number')
})

t.test('DeployCoordinator: unknown app or env is 404', async (t) => {
  const { coordinator } = await setUp(t)
  await t.rejects(coordinator.request({ app: 'nope', env: 'staging', ref: 'main' }), { code: 'not_found' })
  await t.rejects(coordinator.request({ app: 'web', env: 'qa', ref: 'main' }), { code: 'not_found' })
})

t.test("DeployCoordinator: envSnapshot shows the waiting deploy per env; the listener hears the coordinator's own moves", async (t) => {
  const { store, pipeline, coordinator, events } = await setUp(t)
  const first = await coordinator.request({ app: 'web', env: 'staging', ref: 'main' })
  const second = await coordinator.request({ app: 'web', env: 'staging', ref: 'main' })
  const third = await coordinator.request({ app: 'web', env: 'staging', ref: 'main' })
  await tick()
  const queued = (env: string) => coordinator.envSnapshot().find((e) => e.env === env)?.queued
  t.same(
    coordinator
      .envSnapshot()
      .map((e) => e.env)
      .sort(),
    ['production', 'staging', 'strict'],
    'every configured env, busy or not',
  )
  t.equal(queued('staging'), 1, 'one waits behind the running one')
  t.equal(queued('production'), 0)
  const cancelled = events.find((e) => e.type === 'state' && e.deploy.id === second.id)
  t.match(
    cancelled,
    { type: 'state', was: 'QUEUED', deploy: { state: 'CANCELLED', error: { code: 'superseded' } } },
    'the superseded deploy is announced',
  )
  pipeline.finish(first.id)
  // The next run registers its finisher only after its first transition is on disk.
  await until(() => store.get(third.id)?.state === 'RESOLVING', 'the waiting one runs')
  t.equal(queued('staging'), 0, 'the waiting one runs now')
  pipeline.finish(third.id)
  await coordinator.idle()
})

// Regression (load fault, 1000 concurrent requests): place() cleared the waiting slot, awaited the cancellation of
// the replaced deploy, then took the slot — a request placed during that await was overwritten, neither run nor
// cancelled, and stayed QUEUED for ever (410 of 1000 in the fault run).
t.test('DeployCoordinator: concurrent requests under queue: replace leave exactly one waiting, the rest cancelled', async (t) => {
  const { store, pipeline, coordinator } = await setUp(t)
  const first = await coordinator.request({ app: 'web', env: 'staging', ref: 'main' })
  const flood = await Promise.all(Array.from({ length: 50 }, () => coordinator.request({ app: 'web', env: 'staging', ref: 'main' })))
  const states = flood.map((d) => store.get(d.id)?.state)
  t.equal(states.filter((s) => s === 'QUEUED').length, 1, 'exactly one waits')
  t.equal(states.filter((s) => s === 'CANCELLED').length, 49, 'every other one is superseded')
  const waiting = flood.find((d) => store.get(d.id)?.state === 'QUEUED') as Deploy
  await until(() => store.get(first.id)?.state === 'RESOLVING', 'it runs')
  pipeline.finish(first.id)
  await until(() => pipeline.started.length === 2, 'the next deploy starts')
  t.same(pipeline.started, [first.id, waiting.id], 'the one waiting runs next')
  await until(() => store.get(waiting.id)?.state === 'RESOLVING', 'it runs')
  pipeline.finish(waiting.id)
  await coordinator.idle()
  t.same(store.unfinished(), [], 'no deploy is left unfinished')
})

// Regression: refuseIfBusy checked the lane before awaiting the journal write, so concurrent requests to a free
// `queue: reject` lane all passed the check; the first ran and the others were queued and superseded.
t.test('DeployCoordinator: concurrent requests under queue: reject start one and refuse the rest with 409', async (t) => {
  const { store, pipeline, coordinator } = await setUp(t)
  const answers = await Promise.allSettled(
    Array.from({ length: 20 }, () => coordinator.request({ app: 'web', env: 'strict', ref: 'main' })),
  )
  const accepted = answers.filter((a): a is PromiseFulfilledResult<Deploy> => a.status === 'fulfilled').map((a) => a.value)
  const refused = answers.filter((a): a is PromiseRejectedResult => a.status === 'rejected').map((a) => (a.reason as { code: string }).code)
  t.equal(accepted.length, 1, 'one request is accepted')
  t.same(refused, Array(19).fill('deploy_in_progress'), 'the others are refused with deploy_in_progress')
  t.equal(store.list({ env: 'strict' }).length, 1, 'a refused request leaves no deploy record')
  t.same(pipeline.started, [accepted[0]?.id])
  await until(() => store.get(accepted[0]?.id as string)?.state === 'RESOLVING', 'it runs')
  pipeline.finish(accepted[0]?.id as string)
  await coordinator.idle()
  const again = await coordinator.request({ app: 'web', env: 'strict', ref: 'main' })
  t.equal(again.state, 'QUEUED', 'the lane is free again afterwards')
  await until(() => pipeline.started.length === 2, 'the new deploy starts')
  await until(() => store.get(again.id)?.state === 'RESOLVING', 'it runs')
  pipeline.finish(again.id)
  await coordinator.idle()
})

// Regression (fault suite, SIGKILL in MIGRATING): the leftover migration containers were removed after the deploys
// were recovered, so a deploy already read FAILED while its migration container still ran.
t.test('DeployCoordinator: recovery removes leftover migration containers before it settles any deploy', async (t) => {
  const order: string[] = []
  const runtime: Partial<Runtime> = {
    oneOffs: async (target) => {
      order.push(`list ${target.env}`)
      return target.env === 'staging' ? ['migrate-1'] : []
    },
    removeOneOff: async (id) => {
      order.push(`remove ${id}`)
    },
  }
  const { store, coordinator } = await setUp(t, {
    runtime,
    recover: async () => {
      order.push('recover deploy')
      return false
    },
  })
  await store.create({ app: 'web', env: 'staging', ref: 'main', state: 'MIGRATING' })
  await coordinator.recover()
  t.ok(order.indexOf('remove migrate-1') >= 0, 'the leftover is removed')
  t.ok(order.indexOf('remove migrate-1') < order.indexOf('recover deploy'), `removed before the deploy is settled: ${order.join(', ')}`)
})

t.test('DeployCoordinator: an app or env named after an Object.prototype property is unknown, and nothing is recorded', async (t) => {
  const { store, coordinator } = await setUp(t)
  await t.rejects(coordinator.request({ app: 'web', env: 'constructor', ref: 'main' }), { code: 'not_found' })
  await t.rejects(coordinator.request({ app: 'constructor', env: 'staging', ref: 'main' }), { code: 'not_found' })
  await t.rejects(coordinator.rollback({ app: 'web', env: 'constructor', keyId: null }), { code: 'not_found' })
  t.same(store.list(), [], 'no deploy was recorded')
})

t.test('DeployCoordinator: a rollback goes only to a release that served and whose ref the key may deploy', async (t) => {
  const runtime: Partial<Runtime> = {
    releases: async () => [keptImage('v3.0.0', 4), keptImage('v2.0.0', 3), keptImage('v1.5.0', 2), keptImage('v1.0.0', 1)],
  }
  const { store, pipeline, coordinator } = await setUp(t, { runtime })
  const history = async (ref: string, state: DeployState) => {
    const d = await store.create({ app: 'web', env: 'production', ref, keyId: 'ci' })
    await store.transition(d.id, state, { release: ref, terminal: true })
  }
  await history('v1.0.0', 'SUCCEEDED')
  await history('v1.5.0', 'FAILED') // built, never served
  await history('v2.0.0', 'SUCCEEDED')
  await history('v3.0.0', 'SUCCEEDED')
  coordinator.setLive(
    { app: 'web', env: 'production' },
    { release: 'v3.0.0', commit: 'c'.repeat(40), port: 18011, deployId: 'd_x', since: '' },
  )
  const auth = new Authenticator({ keyring: { keys: new Map(), statusToken: null }, audience: 'a', nonces: { remember: async () => true } })
  const key: LoadedKey = {
    id: 'ci-v1',
    material: { alg: 'hmac-sha256', secret: Buffer.alloc(32) },
    allow: { refs: ['v1.*', 'v3.*'], approve: false },
  }
  const asKey = (to?: string) =>
    coordinator.rollback({
      app: 'web',
      env: 'production',
      to,
      keyId: key.id,
      checkRelease: (r) => auth.authorizeRollback(key, { env: 'production', ...r }),
    })
  const before = store.list().length

  await t.rejects(asKey(), { code: 'forbidden', statusCode: 403 }, 'the default target (v2.0.0) is a ref the key may not deploy')
  await t.rejects(asKey('v2.0.0'), { code: 'forbidden', statusCode: 403, message: /v2\.0\.0/ }, 'named: refused too')
  await t.rejects(asKey('v1.5.0'), { code: 'never_live', statusCode: 409 }, 'a release that never served is no rollback target')
  t.equal(store.list().length, before, 'nothing was recorded')
  const back = await asKey('v1.0.0')
  t.match(back, { kind: 'rollback', ref: 'v1.0.0', keyId: 'ci-v1' }, 'a served release of an allowed ref')
  pipeline.finish(back.id)
  await coordinator.idle()
})

/** An env whose kept images and history the test writes: what `releases` and `rollback` read. */
async function withHistory(t: Test) {
  const runtime: Partial<Runtime> = {
    releases: async () => [
      keptImage('v3.0.0', 6),
      keptImage('v2.5.0', 5),
      keptImage('v2.0.0', 4),
      keptImage('v1.5.0', 3),
      keptImage('v1.0.0', 2),
      keptImage('v0.9.0', 1),
    ],
  }
  const set = await setUp(t, { runtime })
  const history = async (ref: string, state: DeployState, kind: 'deploy' | 'rollback' = 'deploy') => {
    const d = await set.store.create({ app: 'web', env: 'production', ref, keyId: 'ci', kind })
    return set.store.transition(d.id, state, { release: ref, terminal: true })
  }
  const ids = {
    v1: (await history('v1.0.0', 'SUCCEEDED')).id,
    v15: (await history('v1.5.0', 'FAILED')).id, // a failed migration: built, never served
    v2: (await history('v2.0.0', 'SUCCEEDED')).id,
    v25: (await history('v2.5.0', 'ROLLED_BACK')).id, // went bad in its observe window
    v3: (await history('v3.0.0', 'SUCCEEDED')).id,
    // v2.0.0 served once, but a rollback to it just went bad and was rolled back.
    v2back: (await history('v2.0.0', 'ROLLED_BACK', 'rollback')).id,
  }
  set.coordinator.setLive(
    { app: 'web', env: 'production' },
    { release: 'v3.0.0', commit: 'c'.repeat(40), port: 18011, deployId: ids.v3, since: '' },
  )
  return { ...set, ids }
}

t.test("DeployCoordinator: releases shows each release's outcome and the deploy it comes from", async (t) => {
  const { coordinator, ids } = await withHistory(t)
  const releases = await coordinator.releases({ app: 'web', env: 'production' } as Target)
  t.same(
    releases.map((r) => [r.release, r.outcome, r.deployId]),
    [
      ['v3.0.0', 'live', ids.v3],
      ['v2.5.0', 'rolled_back', ids.v25],
      ['v2.0.0', 'rolled_back', ids.v2back],
      ['v1.5.0', 'failed', ids.v15],
      ['v1.0.0', 'served', ids.v1],
      ['v0.9.0', null, null],
    ],
  )
})

t.test('DeployCoordinator: a rollback to a release that never served or was just rolled back needs force', async (t) => {
  const { store, pipeline, coordinator } = await withHistory(t)
  const rollback = (to?: string, force?: boolean) =>
    coordinator.rollback({ app: 'web', env: 'production', to, force, keyId: 'ops', reason: 'incident 42' })
  const before = store.list().length
  await t.rejects(rollback('v1.5.0'), { code: 'never_live', statusCode: 409, message: /--force/ })
  await t.rejects(rollback('v2.5.0'), { code: 'never_live', statusCode: 409 }, 'rolled back in its own deploy: it never served')
  await t.rejects(rollback('v2.0.0'), { code: 'last_failed', statusCode: 409, message: /rolled back/ }, 'its last rollback went bad')
  t.equal(store.list().length, before, 'nothing was recorded')

  const byDefault = await rollback()
  t.equal(byDefault.ref, 'v1.0.0', 'the default target skips releases whose last deploy failed')
  pipeline.finish(byDefault.id)
  await coordinator.idle()

  const forced = await rollback('v1.5.0', true)
  t.match(forced, { kind: 'rollback', ref: 'v1.5.0' })
  t.match(forced.reason, /incident 42/)
  t.match(forced.reason, /forced: release v1\.5\.0 never served/, 'the force and what it overrode are recorded')
  t.match(await store.readLog(forced.id), /"event":"forced"/)
  pipeline.finish(forced.id)
  await coordinator.idle()

  await t.rejects(
    coordinator.rollback({
      app: 'web',
      env: 'production',
      to: 'v1.5.0',
      force: true,
      keyId: 'ci',
      checkRelease: () => {
        throw new Error('key may not')
      },
    }),
    /key may not/,
    "force does not bypass the key's policy",
  )
})

t.test("DeployCoordinator: a swarm env's releases list their tasks by service and node (none when kept at 0)", async (t) => {
  const group = (release: string, port: number, tasks: Member['tasks']): Instance => ({
    id: `svc-${release}`,
    release,
    commit: 'c'.repeat(40),
    deployId: `d-${release}`,
    port,
    image: `127.0.0.1:5000/web@sha256:${'a'.repeat(64)}`,
    running: (tasks ?? []).length > 0,
    created: new Date(),
    members: [{ id: `svc-${release}`, service: 'web', kind: 'web', port, order: null, stopTimeoutSec: 10, running: true, tasks }],
  })
  const runtime: Partial<Runtime> = {
    releases: async () => [keptImage('v3.0.0', 3), keptImage('v2.0.0', 2), keptImage('v1.0.0', 1)],
    instances: async () => [
      group('v3.0.0', 18012, [
        { node: 'n1', addr: '10.0.0.1', state: 'running' },
        { node: 'n2', addr: '10.0.0.2', state: 'running' },
      ]),
      group('v2.0.0', 18011, []),
    ],
  }
  const { coordinator } = await setUp(t, { runtime })
  const swarmEnv = { app: 'web', env: 'production', envConfig: { runtime: 'swarm' } } as Target
  const releases = await coordinator.releases(swarmEnv)
  t.same(
    releases.map((r) => [r.release, r.tasks]),
    [
      [
        'v3.0.0',
        [
          { service: 'web', node: 'n1', addr: '10.0.0.1', state: 'running' },
          { service: 'web', node: 'n2', addr: '10.0.0.2', state: 'running' },
        ],
      ],
      ['v2.0.0', []],
      ['v1.0.0', null],
    ],
    'the live colour by node, the kept colour at 0 with none, an older release with no colour: null',
  )
  const onOneBox = await coordinator.releases({ app: 'web', env: 'production' } as Target)
  t.notOk('tasks' in (onOneBox[0] ?? {}), 'an env of containers has no tasks field')
})
