// The two transition tables, edge by edge: every edge of each table is taken by a scenario below, run through the
// real coordinator, pipeline and recovery (an engine of records, nginx as a variable, real HTTP probes on
// loopback), and the last test fails when an edge is dead or a move took an edge the tables do not have.
import { createServer } from 'node:http'
import t, { type Test } from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget, type Target } from '../../agent/config/targets.js'
import { DeployCoordinator } from '../../agent/deploy/coordinator.js'
import { DeployPipeline } from '../../agent/deploy/pipeline.js'
import type { Instance } from '../../agent/deploy/runtime.js'
import { nextState, TRANSITIONS, type DeployKind, type DeployState } from '../../agent/deploy/states.js'
import type { DeployEvent } from '../../agent/deploy/transition.js'
import { createLogger } from '../../agent/observability/logger.js'
import { DeployStore, type Deploy } from '../../agent/store/deploys.js'
import { FakeRouter, FakeRuntime } from '../helpers/fake-runtime.js'
import { freePorts } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

const COMMIT = 'a'.repeat(40)
const taken = new Set<string>()
const edge = (kind: DeployKind, from: DeployState, to: DeployState) => `${kind}: ${from} → ${to}`
const record = (e: DeployEvent) => {
  if (e.type === 'state') taken.add(edge(e.deploy.kind, e.was, e.deploy.state))
}

t.test('nextState: refuses what a table does not have', async (t) => {
  t.equal(nextState('deploy', 'VERIFYING', 'SWITCHING'), 'SWITCHING')
  t.throws(() => nextState('deploy', 'QUEUED', 'SWITCHING'), { name: 'IllegalTransitionError' })
  t.throws(() => nextState('deploy', 'SUCCEEDED', 'ROLLING_BACK'), { name: 'IllegalTransitionError' }, 'terminal states are final')
  t.throws(
    () => nextState('deploy', 'BUILDING', 'ROLLING_BACK'),
    { name: 'IllegalTransitionError' },
    'before the switch a failure is FAILED, not a rollback',
  )
  t.throws(() => nextState('rollback', 'QUEUED', 'RESOLVING'), { name: 'IllegalTransitionError' }, 'a rollback builds nothing')
  t.throws(() => nextState('rollback', 'QUEUED', 'AWAITING_APPROVAL'), { name: 'IllegalTransitionError' })
})

/** HTTP servers on the env's ports whose health each test turns on and off. */
async function servers(t: Test, ports: number[]) {
  const healthy = new Map(ports.map((p) => [p, true]))
  for (const port of ports) {
    const server = createServer((_req, res) => {
      res.statusCode = healthy.get(port) ? 200 : 500
      res.end()
    })
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
    t.teardown(() => new Promise((resolve) => server.close(resolve)))
  }
  return healthy
}

async function rig(t: Test) {
  const dir = await tempDir(t)
  const ports = await freePorts(4)
  const [blue, green, heldBlue, heldGreen] = ports as [number, number, number, number]
  const healthy = await servers(t, ports)
  const config = parseConfig(
    `
audience: a
apps:
  web:
    repo: /srv/web.git
    migrate: { command: [migrate] }
    health: { path: /healthz, intervalMs: 10, timeoutMs: 300, healthyAfter: 1, deadlineSec: 1 }
    observe: { seconds: 1, intervalMs: 20, maxFailures: 0 }
    envs:
      production: { ref: "tag:v*", ports: [${blue}, ${green}], proxy: { upstreamFile: ${dir}/up.conf, drainMs: 0 } }
      held: { ref: "tag:v*", ports: [${heldBlue}, ${heldGreen}], requireApproval: true, proxy: { upstreamFile: ${dir}/held.conf, drainMs: 0 } }
`,
    {},
    'a',
    dir,
  )
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const live: Instance = {
    id: 'live',
    release: 'v1',
    commit: COMMIT,
    deployId: 'd_live',
    port: blue,
    image: 'web:production-v1',
    running: true,
    created: new Date(0),
  }
  const runtime = new FakeRuntime([live])
  runtime.keep('v1', COMMIT)
  const router = new FakeRouter(blue)
  let resolveFails = false
  let backupFails = false
  const pipeline = new DeployPipeline({
    store,
    runtime,
    repo: () => ({
      fetch: async () => undefined,
      resolveTag: async (tag) => {
        if (resolveFails) throw new Error(`no tag ${tag}`)
        return { commit: COMMIT, annotated: false }
      },
      resolveBranch: async () => COMMIT,
      isAncestor: async () => true,
      archive: () => ({}) as NodeJS.ReadableStream,
    }),
    tags: { check: () => undefined, record: async () => undefined },
    router: () => router,
    backup: async () => {
      if (backupFails) throw new Error('pg_dump failed')
      return 'b_1'
    },
    logger: createLogger({ level: 'silent' }),
    onDeployEvent: record,
  })
  const coordinator = new DeployCoordinator({
    config,
    store,
    pipeline: () => pipeline,
    runtime,
    router: () => router,
    logger: createLogger({ level: 'silent' }),
    onDeployEvent: record,
  })
  const target = findTarget(config, 'web', 'production')
  const deploy = (ref: string, kind: DeployKind = 'deploy', state?: DeployState) =>
    store.create({ app: 'web', env: 'production', ref, kind, state })
  const run = async (ref: string, over: Partial<Target['appConfig']> = {}, env: Partial<Target['envConfig']> = {}): Promise<Deploy> =>
    pipeline.run(await deploy(ref), { ...target, appConfig: { ...target.appConfig, ...over }, envConfig: { ...target.envConfig, ...env } })
  return {
    store,
    runtime,
    router,
    healthy,
    pipeline,
    coordinator,
    target,
    deploy,
    run,
    blue,
    green,
    live,
    failResolve: (on: boolean) => (resolveFails = on),
    failBackup: (on: boolean) => (backupFails = on),
  }
}

t.test('Deploy edges: the pipeline, before and after the switch', async (t) => {
  const r = await rig(t)
  t.equal((await r.run('v2')).state, 'SUCCEEDED', 'a good deploy with a migration')
  t.equal((await r.run('v3', { migrate: undefined })).state, 'SUCCEEDED', 'without a migration')
  t.equal((await r.run('v4', {}, { backupBeforeDeploy: true })).state, 'SUCCEEDED', 'with a backup first')
  r.failBackup(true)
  t.equal((await r.run('v5', {}, { backupBeforeDeploy: true })).error?.code, 'deploy_failed', 'a failed backup')
  r.failBackup(false)
  r.failResolve(true)
  t.equal((await r.run('v6')).state, 'FAILED', 'an unknown tag')
  r.failResolve(false)
  r.runtime.faults.build = () => true
  t.equal((await r.run('v7')).state, 'FAILED', 'a failed build')
  r.runtime.faults.build = undefined
  r.runtime.migration = { exitCode: 3, timedOut: false, logTail: ['boom'] }
  t.equal((await r.run('v8')).error?.code, 'migration_failed')
  r.runtime.migration = { exitCode: 0, timedOut: false, logTail: [] }
  const idle = () => (r.router.routed === r.blue ? r.green : r.blue)
  r.healthy.set(idle(), false)
  t.equal((await r.run('v9')).state, 'FAILED', 'a candidate never healthy')
  r.healthy.set(idle(), true)
  r.router.failSwitch = 1
  t.equal((await r.run('v10')).state, 'ROLLED_BACK', 'nginx -t refused the switch')
  // Goes bad once it is live: the observe window rolls it back.
  const before = r.router.routed as number
  const bad = idle()
  const watch = setInterval(() => {
    if (r.router.routed === bad) r.healthy.set(bad, false)
  }, 5)
  const rolled = await r.run('v11')
  clearInterval(watch)
  r.healthy.set(bad, true)
  t.equal(rolled.state, 'ROLLED_BACK', JSON.stringify(rolled.error))
  t.equal(r.router.routed, before, 'nginx is back on the replaced release')
  // With no replaced release to go back to, the bad one stays live and the deploy FAILED.
  r.runtime.list.splice(0)
  r.router.routed = null
  const lonely = r.blue
  const watchLonely = setInterval(() => {
    if (r.router.routed === lonely) r.healthy.set(lonely, false)
  }, 5)
  const failed = await r.run('v12')
  clearInterval(watchLonely)
  r.healthy.set(lonely, true)
  t.equal(failed.state, 'FAILED')
  t.match(failed.error?.message, /no previous release/)
})

t.test('Deploy edges: the coordinator (approval, queue, an env gone from the config)', async (t) => {
  const r = await rig(t)
  const held = await r.coordinator.request({ app: 'web', env: 'held', ref: 'v2' })
  t.equal(held.state, 'AWAITING_APPROVAL')
  const newer = await r.coordinator.request({ app: 'web', env: 'held', ref: 'v3' })
  t.equal(r.store.get(held.id)?.state, 'CANCELLED', 'a newer request supersedes the held one')
  await r.coordinator.approve(newer.id, 'release-manager')
  await r.coordinator.idle()
  t.equal(r.store.get(newer.id)?.state, 'SUCCEEDED')
  // One runs, one waits, a third replaces the waiting one.
  const first = await r.coordinator.request({ app: 'web', env: 'production', ref: 'v4' })
  const waiting = await r.coordinator.request({ app: 'web', env: 'production', ref: 'v5' })
  const replacing = await r.coordinator.request({ app: 'web', env: 'production', ref: 'v6' })
  await r.coordinator.idle()
  t.equal(r.store.get(waiting.id)?.state, 'CANCELLED')
  t.same(
    [first.id, replacing.id].map((id) => r.store.get(id)?.state),
    ['SUCCEEDED', 'SUCCEEDED'],
  )
  const rollback = await r.coordinator.rollback({ app: 'web', env: 'production', keyId: null })
  const waitingRollback = await r.coordinator.rollback({ app: 'web', env: 'production', to: 'v4', keyId: null })
  await r.coordinator.rollback({ app: 'web', env: 'production', to: 'v4', keyId: null })
  await r.coordinator.idle()
  t.equal(r.store.get(rollback.id)?.state, 'SUCCEEDED')
  t.equal(r.store.get(waitingRollback.id)?.state, 'CANCELLED')
})

// Regression: a deploy in OBSERVING whose env left the config could never leave OBSERVING (no such edge).
t.test('Deploy edges: recovery of an env gone from the config ends every unfinished state', async (t) => {
  const r = await rig(t)
  const states: DeployState[] = ['QUEUED', 'AWAITING_APPROVAL', 'SWITCHING', 'OBSERVING']
  const gone = await Promise.all(states.map((state) => r.store.create({ app: 'web', env: 'retired', ref: 'v2', state })))
  // A manual rollback is observed too: one in its observe window ends the same way.
  gone.push(await r.store.create({ app: 'web', env: 'retired', ref: 'v1', kind: 'rollback', state: 'OBSERVING' }))
  await r.coordinator.recover()
  t.same(
    gone.map((d) => r.store.get(d.id)?.state),
    ['CANCELLED', 'CANCELLED', 'FAILED', 'FAILED', 'FAILED'],
  )
  t.same(r.store.unfinished(), [], 'nothing is left unfinished')
})

t.test('Deploy edges: recovery after a crash in each state', async (t) => {
  const r = await rig(t)
  const recover = async (state: DeployState, kind: DeployKind = 'deploy', details: Record<string, string | number> = {}) => {
    const d = await r.deploy('v2', kind, state)
    const withDetails = Object.keys(details).length > 0 ? await r.store.transition(d.id, state, { details }) : d
    await r.pipeline.recover(withDetails, r.target)
    return r.store.get(d.id) as Deploy
  }
  t.equal((await recover('STARTING')).state, 'FAILED')
  // nginx already routes to a healthy candidate: the deploy is finished.
  const candidate: Instance = { ...r.live, id: 'cand', deployId: '', release: 'v2', port: r.green, created: new Date() }
  r.runtime.list.unshift(candidate)
  r.router.routed = r.green
  t.equal((await recover('SWITCHING', 'deploy', { candidateContainer: 'cand', previousPort: r.blue })).state, 'SUCCEEDED')
  // Routed to an unhealthy rollback candidate: back to the previous release.
  r.healthy.set(r.green, false)
  t.equal((await recover('SWITCHING', 'rollback', { candidateContainer: 'cand', previousPort: r.blue })).state, 'ROLLED_BACK')
  // The same with no previous release: nothing to go back to.
  r.router.routed = r.green
  r.runtime.list.splice(r.runtime.list.indexOf(r.live), 1)
  t.equal((await recover('SWITCHING', 'rollback', { candidateContainer: 'cand', previousPort: r.blue })).state, 'FAILED')
  t.equal((await recover('STARTING', 'rollback')).state, 'FAILED')
  r.healthy.set(r.green, true)
})

t.test('Rollback edges: a manual rollback that cannot start, verify or switch', async (t) => {
  const r = await rig(t)
  t.equal((await r.run('v2')).state, 'SUCCEEDED')
  const rollback = (to: string) => r.deploy(to, 'rollback').then((d) => r.pipeline.run(d, r.target))
  t.equal((await rollback('v0')).state, 'FAILED', 'no kept image')
  r.healthy.set(r.blue, false)
  t.equal((await rollback('v1')).state, 'FAILED', 'the kept release never gets healthy')
  r.healthy.set(r.blue, true)
  r.router.failSwitch = 1
  t.equal((await rollback('v1')).state, 'FAILED', 'nginx refused the switch')
  t.equal(r.router.routed, r.green, 'the live release still serves')
})

t.test('Rollback edges: a manual rollback is observed like a deploy', async (t) => {
  const r = await rig(t)
  t.equal((await r.run('v2')).state, 'SUCCEEDED')
  const rollback = (to: string) => r.deploy(to, 'rollback').then((d) => r.pipeline.run(d, r.target))
  const good = await rollback('v1')
  t.equal(good.state, 'SUCCEEDED', 'a kept release that stays healthy')
  t.ok(
    good.states.some((s) => s.state === 'OBSERVING'),
    'it went through the observe window',
  )
  // The rolled-back-to release goes bad once nginx routes to it: back to the release live before the rollback.
  const breakOnSwitch = (port: number) => {
    const watch = setInterval(() => {
      if (r.router.routed === port) r.healthy.set(port, false)
    }, 5)
    return () => {
      clearInterval(watch)
      r.healthy.set(port, true)
    }
  }
  const liveBefore = r.router.routed as number
  const badPort = liveBefore === r.blue ? r.green : r.blue
  let heal = breakOnSwitch(badPort)
  const rolledBack = await rollback('v2')
  heal()
  t.equal(rolledBack.state, 'ROLLED_BACK', JSON.stringify(rolledBack.error))
  t.equal(rolledBack.error?.code, 'observe_failed')
  t.equal(r.router.routed, liveBefore, 'nginx is back on the release live before the rollback')
  // Nothing was live before the rollback (its instance is gone): the bad release stays and the rollback FAILED.
  r.runtime.list.splice(0, r.runtime.list.length, ...r.runtime.list.filter((i) => i.port !== liveBefore))
  r.router.routed = null
  heal = breakOnSwitch(liveBefore)
  const lonely = await rollback('v1')
  heal()
  t.equal(lonely.state, 'FAILED', JSON.stringify(lonely.error))
  t.match(lonely.error?.message, /no previous release/)
})

t.test('Rollback edges: recovery of a rollback switched in and healthy', async (t) => {
  const r = await rig(t)
  const candidate: Instance = { ...r.live, id: 'cand', deployId: 'd_old', release: 'v0', port: r.green, created: new Date() }
  r.runtime.list.unshift(candidate)
  r.router.routed = r.green
  for (const state of ['SWITCHING', 'OBSERVING'] as const) {
    const d = await r.deploy('v0', 'rollback', state)
    const withDetails = await r.store.transition(d.id, state, { details: { candidateContainer: 'cand', previousPort: r.blue } })
    await r.pipeline.recover(withDetails, r.target)
    t.equal(r.store.get(d.id)?.state, 'SUCCEEDED', state)
  }
})

t.test('Every edge of both tables is taken, and no other', async (t) => {
  const table = new Set(
    (Object.entries(TRANSITIONS) as Array<[DeployKind, (typeof TRANSITIONS)[DeployKind]]>).flatMap(([kind, edges]) =>
      (Object.entries(edges) as Array<[DeployState, readonly DeployState[]]>).flatMap(([from, tos]) =>
        tos.map((to) => edge(kind, from, to)),
      ),
    ),
  )
  t.same(
    [...table].filter((e) => !taken.has(e)),
    [],
    'no dead edge',
  )
  t.same(
    [...taken].filter((e) => !table.has(e)),
    [],
    'no edge outside the tables',
  )
})

t.test("Deploy edges: the build and the migration get the app's CPU weight (low by default)", async (t) => {
  const r = await rig(t)
  t.equal((await r.run('v2')).state, 'SUCCEEDED')
  t.same([r.runtime.builds.at(-1)?.cpuShares, r.runtime.migrations.at(-1)?.cpuShares], [128, 128])
  const { build, migrate } = r.target.appConfig
  t.equal(
    (await r.run('v3', { build: { ...build, cpuShares: 512 }, migrate: migrate && { ...migrate, cpuShares: 256 } })).state,
    'SUCCEEDED',
  )
  t.same([r.runtime.builds.at(-1)?.cpuShares, r.runtime.migrations.at(-1)?.cpuShares], [512, 256])
})
