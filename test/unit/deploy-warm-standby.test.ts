// Warm standby (observe.warmStandby, default on): the replaced release keeps running out of nginx through OBSERVING,
// so a rollback in the window — automatic, or asked for by hand — is one switch back, with no start and no
// cold health checks; after a healthy window it stops. Fake runtime and router, real loopback probes.
import t, { type Test } from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DeployPipeline } from '../../agent/deploy/pipeline.js'
import { createLogger } from '../../agent/observability/logger.js'
import { MANAGED_HEADER, NginxUpstream, type UpstreamSwitch } from '../../agent/proxy/nginx.js'
import { fakeSource } from '../helpers/fake-runtime.js'
import { RIG_COMMIT, startPipelineRig } from '../helpers/pipeline-rig.js'
import { tempDir } from '../helpers/tmp.js'

interface Options {
  warmStandby?: boolean
  observeSeconds?: number
  /** The new release's health answer. */
  newHealth?: () => number
}

async function setUp(t: Test, options: Options = {}) {
  const warm = options.warmStandby === undefined ? '' : `, warmStandby: ${options.warmStandby}`
  /** Whether the replaced release had been stopped when OBSERVING began. */
  const retiredAtObserve: boolean[] = []
  const rig = await startPipelineRig(t, {
    health: '{ path: /healthz, intervalMs: 10, timeoutMs: 500, healthyAfter: 3, deadlineSec: 3 }',
    observe: `{ seconds: ${options.observeSeconds ?? 1}, intervalMs: 20, maxFailures: 1${warm} }`,
    ...(options.newHealth && { newHealth: options.newHealth }),
    watchTraffic: (runtime) => () => {
      retiredAtObserve.push(runtime.retired.includes('old'))
      return null
    },
  })
  return { ...rig, retiredAtObserve }
}

t.test('Warm standby: the replaced release runs through OBSERVING and stops after a healthy window', async (t) => {
  const rig = await setUp(t)
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.same(rig.retiredAtObserve, [false], 'still running when the window began (the default)')
  t.ok(rig.runtime.retired.includes('old'), 'stopped once the window ended')
  t.equal(rig.runtime.promoted.length, 1, 'the new release got the CPU weight of a serving one at the switch')
  t.notOk(rig.runtime.promoted.includes('old'))
  t.equal(rig.routed(), rig.green)
})

t.test('Warm standby off: the replaced release stops after the drain, before OBSERVING', async (t) => {
  const rig = await setUp(t, { warmStandby: false })
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.same(rig.retiredAtObserve, [true])
})

t.test('Warm standby: an automatic rollback switches back without starting or re-checking it at length', async (t) => {
  let bad = false
  const rig = await setUp(t, { observeSeconds: 30, newHealth: () => (bad ? 500 : 200) })
  const running = rig.pipeline.run(await rig.deploy(), rig.target)
  await waitFor(() => rig.store.list({ app: 'web', env: 'production' })[0]?.state === 'OBSERVING')
  bad = true
  const done = await running
  t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
  t.equal(done.error?.code, 'observe_failed')
  t.same(rig.runtime.revived, [], 'the standby was running: nothing to start')
  t.equal(rig.routed(), rig.blue)
  const log = (await rig.store.readLog(done.id)).split('\n').filter((line) => line !== '')
  const health = log.map((line) => JSON.parse(line) as { event?: string; port?: number }).filter((l) => l.event === 'health')
  t.ok(health.filter((l) => l.port === rig.green).length >= 3, 'the candidate got its full check (healthyAfter 3)')
  t.equal(health.filter((l) => l.port === rig.blue).length, 1, 'the standby one probe')
})

t.test('Warm standby: one that died in the window is started again and checked in full before the switch back', async (t) => {
  let bad = false
  const rig = await setUp(t, { observeSeconds: 30, newHealth: () => (bad ? 500 : 200) })
  const isAlive = rig.runtime.isAlive.bind(rig.runtime)
  rig.runtime.isAlive = async (instance, which) =>
    instance.release === rig.previous.release && bad && !rig.runtime.revived.length ? false : isAlive(instance, which)
  const running = rig.pipeline.run(await rig.deploy(), rig.target)
  await waitFor(() => rig.store.list({ app: 'web', env: 'production' })[0]?.state === 'OBSERVING')
  bad = true
  const done = await running
  t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
  t.equal(rig.runtime.revived.length, 1, 'started again')
  t.equal(rig.routed(), rig.blue)
  const log = (await rig.store.readLog(done.id)).split('\n').filter((line) => line !== '')
  const health = log.map((line) => JSON.parse(line) as { event?: string; port?: number; ok?: boolean }).filter((l) => l.event === 'health')
  t.ok(health.filter((l) => l.port === rig.blue && l.ok).length >= 3, 'then its full check (healthyAfter 3), as a stopped release gets')
})

t.test('Warm standby: a rollback asked for in the window ends it at once and switches back', async (t) => {
  const rig = await setUp(t, { observeSeconds: 60 })
  t.notOk(rig.pipeline.rollBackInWindow('d_nothing', 'x'), 'no deploy in its window: not taken')
  const deploy = await rig.deploy()
  const started = Date.now()
  const running = rig.pipeline.run(deploy, rig.target)
  await waitFor(() => rig.store.get(deploy.id)?.state === 'OBSERVING')
  t.ok(rig.pipeline.rollBackInWindow(deploy.id, 'rolled back by ops during the observe window'))
  const done = await running
  t.ok(Date.now() - started < 10_000, 'long before the 60 s window ends')
  t.equal(done.state, 'ROLLED_BACK')
  t.same(done.error, { code: 'rollback_requested', message: 'rolled back by ops during the observe window' })
  t.equal(rig.routed(), rig.blue, 'nginx routes to the replaced release again')
  t.same(rig.runtime.revived, [])
  t.notOk(rig.pipeline.rollBackInWindow(deploy.id, 'again'), 'the window is over')
})

t.test('Warm standby: a rollback checks the standby while ROLLING_BACK is journalled, and switches after both', async (t) => {
  const rig = await setUp(t, { observeSeconds: 60 })
  const events: string[] = []
  // A slow journal write (a busy disk): the standby's check need not wait for it, the switch must.
  const transition = rig.store.transition.bind(rig.store)
  rig.store.transition = async (id, state, patch) => {
    if (state !== 'ROLLING_BACK') return transition(id, state, patch)
    await new Promise((resolve) => setTimeout(resolve, 300))
    const moved = await transition(id, state, patch)
    events.push('ROLLING_BACK journalled')
    return moved
  }
  const isAlive = rig.runtime.isAlive.bind(rig.runtime)
  rig.runtime.isAlive = async (instance, which) => {
    if (instance.release === rig.previous.release) events.push('standby checked')
    return isAlive(instance, which)
  }
  const switchTo = rig.router.switchTo.bind(rig.router)
  rig.router.switchTo = async (port, placement, standby) => {
    events.push(`switch ${port}`)
    return switchTo(port, placement, standby)
  }
  const deploy = await rig.deploy()
  const running = rig.pipeline.run(deploy, rig.target)
  await waitFor(() => rig.store.get(deploy.id)?.state === 'OBSERVING')
  events.length = 0
  rig.pipeline.rollBackInWindow(deploy.id, 'by hand')
  const done = await running
  t.equal(done.state, 'ROLLED_BACK')
  const at = (event: string) => events.indexOf(event)
  t.ok(at('standby checked') !== -1 && at('standby checked') < at('ROLLING_BACK journalled'), events.join(', '))
  t.ok(at('ROLLING_BACK journalled') < at(`switch ${rig.blue}`), 'the switch waits for the journal')
})

/** The order of switches (with their standby), drains and stops, as the router and runtime see them. */
function trace(rig: Awaited<ReturnType<typeof setUp>>): string[] {
  const events: string[] = []
  const { router, runtime } = rig
  const switchTo = router.switchTo.bind(router)
  router.switchTo = async (port, placement, standby) => {
    const done = await switchTo(port, placement, standby)
    events.push(
      `switch ${port === rig.green ? 'green' : 'blue'}${standby ? ` standby ${standby.port === rig.blue ? 'blue' : standby.port}` : ''}`,
    )
    return done
  }
  ;(router as UpstreamSwitch).drained = async () => {
    events.push('drained')
    return true
  }
  const retire = runtime.retire.bind(runtime)
  runtime.retire = async (i) => {
    events.push(`retire ${i.id}`)
    return retire(i)
  }
  return events
}

t.test(
  'Warm standby: nginx retries on it through OBSERVING; after a healthy window the new release alone, then the drain, then the stop',
  async (t) => {
    const rig = await setUp(t)
    const order = trace(rig)
    const done = await rig.pipeline.run(await rig.deploy(), rig.target)
    t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
    t.same(order, ['switch green standby blue', 'switch green', 'drained', 'retire old'])
    t.same(rig.router.standbys[0], { port: rig.blue }, 'this host: no placement of its own')
    const log = (await rig.store.readLog(done.id)).split('\n').filter((line) => line !== '')
    const events = log.map((line) => JSON.parse(line) as Record<string, unknown>)
    t.same(
      events.filter((l) => l.event === 'switched' || l.event === 'standby-unlisted').map((l) => [l.event, l.port, l.standby]),
      [
        ['switched', rig.green, rig.blue],
        ['standby-unlisted', rig.green, rig.blue],
      ],
      'the deploy log says when the standby was in nginx and when it left',
    )
  },
)

t.test('Warm standby off: the switch names the new release alone, once', async (t) => {
  const rig = await setUp(t, { warmStandby: false })
  const events = trace(rig)
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.same(events, ['switch green', 'drained', 'retire old'])
})

t.test('Warm standby: the rollback writes the old release alone', async (t) => {
  let bad = false
  const rig = await setUp(t, { observeSeconds: 30, newHealth: () => (bad ? 500 : 200) })
  const events = trace(rig)
  const running = rig.pipeline.run(await rig.deploy(), rig.target)
  await waitFor(() => rig.store.list({ app: 'web', env: 'production' })[0]?.state === 'OBSERVING')
  bad = true
  const done = await running
  t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
  t.same(events, ['switch green standby blue', 'switch blue', 'drained', 'retire ' + String(rig.runtime.retired.at(-1))])
  t.equal(rig.runtime.retired.includes('old'), false, 'the standby serves again')
})

t.test('Warm standby: on a swarm its placement (the nodes running it) goes with it', async (t) => {
  const rig = await setUp(t)
  rig.previous.members = [
    {
      id: 'old',
      service: 'web',
      kind: 'web',
      port: rig.blue,
      order: null,
      stopTimeoutSec: 10,
      running: true,
      hosts: ['127.0.0.1', '127.0.0.2'],
    },
  ]
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.same(rig.router.standbys, [{ port: rig.blue, placement: new Map([[rig.blue, ['127.0.0.1', '127.0.0.2']]]) }, undefined])
})

t.test('Warm standby: a crash in OBSERVING is recovered from the file with the backup line (its primary is live)', async (t) => {
  const rig = await setUp(t)
  const file = join(await tempDir(t), 'upstream.conf')
  const nginx = new NginxUpstream({ upstreamFile: file, upstreamName: 'web_production', testCommand: ['true'], reloadCommand: ['true'] })
  const d = await rig.store.create({ app: 'web', env: 'production', ref: 'v2', keyId: null, state: 'OBSERVING' })
  rig.runtime.list.unshift({ ...rig.previous, id: 'cand', deployId: d.id, release: 'v2', port: rig.green, created: new Date() })
  // What the switch wrote before the agent stopped: the new release, and the warm standby as its backup.
  await writeFile(
    file,
    `${MANAGED_HEADER}\nupstream web_production { server 127.0.0.1:${rig.green} max_fails=0; server 127.0.0.1:${rig.blue} backup; }\n`,
  )
  const pipeline = new DeployPipeline({
    store: rig.store,
    runtime: rig.runtime,
    ...fakeSource(RIG_COMMIT),
    router: () => nginx,
    logger: createLogger({ level: 'silent' }),
  })
  const details = { candidateContainer: 'cand', candidatePort: rig.green, previousPort: rig.blue }
  await pipeline.recover(await rig.store.transition(d.id, 'OBSERVING', { details }), rig.target)
  t.equal(rig.store.get(d.id)?.state, 'SUCCEEDED', 'the healthy new release stays live')
  t.equal(await readFile(file, 'utf8'), nginx.render(rig.green), 'the file names it alone')
  t.ok(rig.runtime.retired.includes('old'), 'the standby is stopped')
})

async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  if (!condition()) throw new Error('condition never held')
}
