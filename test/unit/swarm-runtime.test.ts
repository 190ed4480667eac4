// The swarm runtime's decisions on a candidate, against a fake SwarmEngine: a worker whose task exits has started
// (the health checks judge it, as on one box: container_exited, its output in the deploy log), while a task the
// engine rejects (an image no node can pull) fails the candidate at once, and every service made goes with it.
import t from 'tap'
import type { CandidateSpec, Runtime } from '../../agent/deploy/runtime.js'
import { SwarmRuntime } from '../../agent/deploy/swarm-runtime.js'
import type { ServiceDefinition, SwarmEngine, SwarmService, SwarmTask } from '../../agent/docker/swarm.js'

const DIGEST = `sha256:${'a'.repeat(64)}`

/** A one-node swarm whose services get the tasks `tasksOf` says (by service name) as soon as they are created. */
class FakeSwarm {
  readonly byId = new Map<string, SwarmService>()
  readonly taskList = new Map<string, SwarmTask[]>()
  readonly removed: string[] = []
  private next = 0
  constructor(private readonly tasksOf: (name: string, image: string) => Array<Partial<SwarmTask>> | null) {}

  /** The credentials each push and each service create was given. */
  readonly auths: Array<[string, unknown]> = []
  push = async (_source: string, _repo: string, _tag: string, _onLine: unknown, auth?: unknown) => {
    this.auths.push(['push', auth])
    return DIGEST
  }
  hostNetworkId = async () => 'host-net'
  localNodeId = async () => 'n1'
  nodes = async () => [{ id: 'n1', addr: '10.0.0.1', state: 'ready', availability: 'active' }]
  services = async () => [...this.byId.values()]
  service = async (id: string) => this.byId.get(id) ?? null
  tasks = async (id: string) => this.taskList.get(id) ?? []
  createService = async (def: ServiceDefinition, auth?: unknown) => {
    this.auths.push([def.name, auth])
    const id = `s${++this.next}`
    this.byId.set(id, { id, name: def.name, version: 1, labels: def.labels, replicas: def.replicas, image: def.image, created: new Date() })
    const running = Array.from({ length: def.replicas }, () => ({ state: 'running' }))
    const tasks = this.tasksOf(def.name, def.image) ?? running
    this.taskList.set(
      id,
      tasks.map((task, i) => ({
        id: `${id}-t${i}`,
        serviceId: id,
        nodeId: 'n1',
        desired: 'running',
        state: 'running',
        message: '',
        image: def.image,
        created: new Date(),
        ...task,
      })),
    )
    return id
  }
  scale = async (id: string, replicas: number) => {
    const s = this.byId.get(id)
    if (s) s.replicas = replicas
    if (replicas === 0) this.taskList.set(id, [])
  }
  /** What a task printed: its service's name and task id, for the tests to tell whose output they got. */
  taskLogLines = async function* (id: string) {
    yield { stream: 'stderr' as const, line: '' }
    for (const n of [1, 2, 3]) yield { stream: 'stderr' as const, line: `${id}: line ${n}` }
  }
  removeService = async (id: string) => {
    this.byId.delete(id)
    this.removed.push(id)
  }
}

function candidate(): CandidateSpec {
  return {
    app: 'shop',
    env: 'production',
    release: 'v2',
    commit: 'c0ffee',
    deployId: 'd-v2',
    image: 'shop:production-v2',
    port: 18001,
    services: [
      { name: 'api', kind: 'web', port: 18001, command: null, order: null, stopTimeoutSec: 10, index: 0 },
      { name: 'worker', kind: 'worker', port: null, command: ['sh', '/app/worker.sh'], order: 'start-first', stopTimeoutSec: 5, index: 1 },
    ],
    variables: [],
    container: {} as CandidateSpec['container'],
  }
}

const runtimeOn = (swarm: FakeSwarm) =>
  new SwarmRuntime({} as Runtime, swarm as unknown as SwarmEngine, {
    replicas: 1,
    registry: '127.0.0.1:5000',
    constraints: [],
    ports: [18001, 18002],
  })

t.test('SwarmRuntime: a candidate whose worker exits has started; its state says it died, for the health checks', async (t) => {
  const exited = { desired: 'shutdown', state: 'failed', message: 'task: non-zero exit (3)' }
  const swarm = new FakeSwarm((name) => (name.endsWith('_worker_blue') ? [exited, exited, exited, { state: 'starting' }] : null))
  const group = await runtimeOn(swarm).startCandidate(candidate())
  t.same(
    group.members?.map((m) => [m.service, m.running]),
    [
      ['api', true],
      ['worker', true],
    ],
  )
  t.same(group.members?.[0]?.hosts, ['127.0.0.1'], 'the api answers on this node')
  const worker = group.members?.[1]
  if (!worker) throw new Error('no worker member')
  const state = await runtimeOn(swarm).memberState(worker)
  t.equal(state.alive, false, 'the worker is not alive')
  t.equal(state.restartCount, 3, 'its exits count as restarts')
  t.same(swarm.removed, [], 'nothing removed: the pipeline discards the candidate with its output')
})

t.test('SwarmRuntime: a task the engine rejects fails the candidate at once; every service made goes', async (t) => {
  const swarm = new FakeSwarm((name) =>
    name.endsWith('_worker_blue') ? [{ desired: 'shutdown', state: 'rejected', message: 'No such image: 127.0.0.1:5000/shop' }] : null,
  )
  await t.rejects(runtimeOn(swarm).startCandidate(candidate()), { code: 'docker_error', message: /worker: task rejected: No such image/ })
  t.equal(swarm.removed.length, 2, 'the api and the worker are removed')
})

t.test("SwarmRuntime: a release's members list their tasks by node and state; a colour scaled to 0 has none", async (t) => {
  const swarm = new FakeSwarm((name) =>
    name.endsWith('_green')
      ? [{ nodeId: 'n2', state: 'running' }, { state: 'starting' }, { desired: 'shutdown', state: 'failed' }]
      : [{ state: 'running' }],
  )
  swarm.nodes = async () => [
    { id: 'n1', addr: '10.0.0.1', state: 'ready', availability: 'active' },
    { id: 'n2', addr: '10.0.0.2', state: 'ready', availability: 'active' },
  ]
  const runtime = runtimeOn(swarm)
  const blue = await runtime.startCandidate({ ...candidate(), release: 'v1', deployId: 'd-v1' })
  await runtime.retire(blue)
  // The green colour as the engine has it while it starts: one task running on n2, one starting on n1.
  for (const name of ['api', 'worker']) {
    const labels = { 'deploy-agent.release': 'v2', 'deploy-agent.deploy': 'd-v2', 'deploy-agent.service': name, 'deploy-agent.index': '0' }
    await swarm.createService({
      name: `shop_production_${name}_green`,
      labels: name === 'api' ? { ...labels, 'deploy-agent.port': '18002' } : labels,
      image: `127.0.0.1:5000/shop@${DIGEST}`,
      hostNetwork: 'host-net',
      env: [],
      replicas: 2,
      constraints: [],
      stopGraceSec: 10,
      updateOrder: 'start-first',
    })
  }
  const instances = await runtime.instances({ app: 'shop', env: 'production' })
  const tasks = (release: string) => instances.find((i) => i.release === release)?.members?.map((m) => [m.service, m.tasks])
  t.same(
    tasks('v2'),
    [
      [
        'api',
        [
          { node: 'n1', addr: '10.0.0.1', state: 'starting' },
          { node: 'n2', addr: '10.0.0.2', state: 'running' },
        ],
      ],
      [
        'worker',
        [
          { node: 'n1', addr: '10.0.0.1', state: 'starting' },
          { node: 'n2', addr: '10.0.0.2', state: 'running' },
        ],
      ],
    ],
    'the tasks the engine wants running, by node address (a failed one is history)',
  )
  t.same(
    tasks('v1'),
    [
      ['api', []],
      ['worker', []],
    ],
    'the kept colour, scaled to 0, has no task',
  )
})

t.test('SwarmRuntime: a web service whose tasks keep exiting fails as container_exited with the last task output', async (t) => {
  const exited = (n: number) => ({ id: `exit-${n}`, desired: 'shutdown', state: 'failed', message: 'task: non-zero exit (1)' })
  const swarm = new FakeSwarm((name) =>
    name.endsWith('_api_blue') ? [exited(1), exited(2), { ...exited(3), created: new Date(Date.now() + 1) }] : null,
  )
  const err = await runtimeOn(swarm)
    .startCandidate(candidate())
    .catch((e: unknown) => e)
  t.match(err, {
    code: 'container_exited',
    message: /^service api: task failed: task: non-zero exit \(1\); last lines:\nexit-3: line 1\nexit-3: line 2\nexit-3: line 3$/,
    service: 'api',
    lastLines: ['exit-3: line 1', 'exit-3: line 2', 'exit-3: line 3'],
  })
  t.equal(swarm.removed.length, 2, 'the api and the worker are removed')
})

t.test('SwarmRuntime: registry credentials, read once per candidate, go with the push and every service create', async (t) => {
  const swarm = new FakeSwarm(() => null)
  let reads = 0
  const auth = { username: 'ci', password: 'pw', serveraddress: '127.0.0.1:5000' }
  const runtime = new SwarmRuntime({} as Runtime, swarm as unknown as SwarmEngine, {
    replicas: 1,
    registry: '127.0.0.1:5000',
    constraints: [],
    ports: [18001, 18002],
    credentials: async () => {
      reads++
      return auth
    },
  })
  await runtime.startCandidate(candidate())
  t.same(swarm.auths, [
    ['push', auth],
    ['shop_production_api_blue', auth],
    ['shop_production_worker_blue', auth],
  ])
  t.equal(reads, 1, 'the password file is read at each deploy, once')
  const without = new FakeSwarm(() => null)
  await runtimeOn(without).startCandidate(candidate())
  t.same(
    without.auths,
    [
      ['push', undefined],
      ['shop_production_api_blue', undefined],
      ['shop_production_worker_blue', undefined],
    ],
    'no registryAuth: none',
  )
})

t.test('SwarmRuntime: a web service whose task just exited has not started yet, though its tasks run now', async (t) => {
  // A task that exits at once runs for an instant between restarts: a poll that catches it running is no proof.
  const exited = { desired: 'shutdown', state: 'failed', message: 'task: non-zero exit (1)', created: new Date() }
  const swarm = new FakeSwarm((name) => (name.endsWith('_api_blue') ? [{ state: 'running' }, exited] : null))
  const started = Date.now()
  await runtimeOn(swarm).startCandidate(candidate())
  t.ok(Date.now() - started >= 2_500, `started only once no task had exited for a while (${Date.now() - started} ms)`)
})
