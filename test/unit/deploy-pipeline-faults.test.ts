// The pipeline under engine faults, with a real store and real HTTP probes against loopback servers but a fake
// runtime, image builder, repo and router: what happens when Docker stops answering after the switch, or the disk
// refuses the deploy log.
import { createServer, type Server } from 'node:http'
import t, { type Test } from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget } from '../../agent/config/targets.js'
import { DeployPipeline } from '../../agent/deploy/pipeline.js'
import type { CandidateSpec, Instance, Runtime } from '../../agent/deploy/runtime.js'
import { createLogger } from '../../agent/observability/logger.js'
import { DeployStore } from '../../agent/store/deploys.js'
import { freePorts } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

const COMMIT = 'a'.repeat(40)

function serveHealthy(t: Test, port: number): Promise<Server> {
  const server = createServer((_req, res) => res.end('ok'))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)))
}

const engineDown = () => Object.assign(new Error('connect ENOENT /var/run/docker.sock'), { code: 'ENOENT' })
const diskFull = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })

/** A runtime of plain records; `faults` make single operations throw. */
class FakeRuntime implements Runtime {
  readonly removed: string[] = []
  readonly retired: string[] = []
  constructor(
    readonly list: Instance[],
    readonly faults: { isAlive?: (i: Instance) => boolean; retire?: (i: Instance) => boolean } = {},
  ) {}
  async instances() { return this.list }
  async startCandidate(spec: CandidateSpec): Promise<Instance> {
    const instance = { id: `c-${spec.deployId}`, release: spec.release, commit: spec.commit, deployId: spec.deployId, port: spec.port, image: spec.image, running: true, created: new Date() }
    this.list.unshift(instance)
    return instance
  }
  async isAlive(i: Instance) {
    if (this.faults.isAlive?.(i)) throw engineDown()
    return i.running
  }
  async engineHealth() { return null }
  async retire(i: Instance) {
    if (this.faults.retire?.(i)) throw engineDown()
    i.running = false
    this.retired.push(i.id)
  }
  async revive(i: Instance) { i.running = true }
  async remove(i: Instance) {
    this.removed.push(i.id)
    this.list.splice(this.list.indexOf(i), 1)
  }
  async logTail() { return [] }
}

async function setUp(t: Test, faults: ConstructorParameters<typeof FakeRuntime>[1] = {}) {
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
    observe: { seconds: 1, intervalMs: 20, maxFailures: 0 }
    envs:
      production:
        ref: "tag:v*"
        ports: [${blue}, ${green}]
        proxy: { upstreamFile: ${dir}/upstream.conf, drainMs: 0 }
`
  const config = parseConfig(yaml, {}, 'a', dir)
  const target = findTarget(config, 'web', 'production')
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const previous: Instance = { id: 'old', release: 'v1', commit: COMMIT, deployId: 'd_old', port: blue, image: 'web:production-v1', running: true, created: new Date(0) }
  const runtime = new FakeRuntime([previous], faults)
  let routed: number | null = blue
  const pipeline = new DeployPipeline({
    store,
    runtime,
    images: {
      buildImage: async () => ({ imageId: 'x' }),
      inspectImage: async (ref) => ({ id: ref, tags: [ref], labels: { 'deploy-agent.commit': COMMIT }, created: new Date(), healthcheck: false }),
      runOneOff: async () => ({ exitCode: 0, timedOut: false, logTail: [] }),
      listImages: async () => [],
      removeImage: async () => undefined,
    },
    repo: () => ({
      fetch: async () => undefined,
      resolveTag: async () => ({ commit: COMMIT, annotated: false }),
      resolveBranch: async () => COMMIT,
      isAncestor: async () => true,
      archive: () => { throw new Error('no build expected') },
    }),
    tags: { check: () => undefined, record: async () => undefined },
    router: () => ({
      currentPort: async () => routed,
      switchTo: async (port) => {
        const previousPort = routed
        routed = port
        return { previousPort }
      },
    }),
    logger: createLogger({ level: 'silent' }),
  })
  const deploy = () => store.create({ app: 'web', env: 'production', ref: 'v2', keyId: null })
  return { store, runtime, pipeline, target, previous, deploy, routed: () => routed, blue, green }
}

t.test('Pipeline: Docker not answering during OBSERVING leaves the switched-in release live (the probes decide)', async (t) => {
  // The engine goes away once nginx routes to the new release.
  const rig = await setUp(t, { isAlive: () => rig.routed() === rig.green })
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.equal(rig.routed(), rig.green, 'nginx routes to the new release')
  t.same(rig.runtime.removed, [], 'the live candidate is never removed')
})

t.test('Pipeline: a failure after the switch rolls back to the old release, never discards the routed candidate', async (t) => {
  // Stopping the old release fails (dockerd went away during the drain), after nginx already routes to the new one.
  let failOnce = true
  const rig = await setUp(t, { retire: (i) => i.id === 'old' && failOnce && !(failOnce = false) })
  const done = await rig.pipeline.run(await rig.deploy(), rig.target)
  t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
  t.equal(done.error?.code, 'observe_failed')
  t.match(done.error?.message, /observing the new release failed: .*ENOENT/)
  t.equal(rig.routed(), rig.blue, 'nginx routes back to the old release')
  t.same(rig.runtime.removed, [], 'nothing was removed while nginx routed to it')
  t.ok(rig.previous.running, 'the old release runs')
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
