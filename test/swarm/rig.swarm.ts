// The two-node swarm rig (scripts/swarm-rig.sh through test/helpers/swarm.ts) on the real engines: both nodes ready
// and told apart by id and address, a service run by digest from the rig's registry with host networking and one
// task per node answering on each node's address, the worker killed (Down) and started again (Ready), its lock, and a
// `stop()` that leaves the host as it found it. Traffic goes only to 127.0.0.1 and the worker's own address.
import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { access, readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import Docker from 'dockerode'
import t from 'tap'
import { ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { freePort } from '../helpers/ports.js'
import { acquireRigLock, canRunSwarmRig, startSwarmRig, SWARM_RIG_SCRIPT, type SwarmRig } from '../helpers/swarm.js'

const run = promisify(execFile)
// The swarm suite runs its files one at a time (`npm run test:swarm`); the rig's lock still guards a run beside it.
t.setTimeout(1_500_000)
const skip = skipUnless(await canRunSwarmRig(), 'the two-node swarm rig (root, dockerd, iproute2, util-linux, docker-registry)')
const gone = (path: string): Promise<boolean> =>
  access(path).then(
    () => false,
    () => true,
  )

async function get(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) })
  if (res.status !== 200) throw new Error(`${url} answered ${res.status}`)
  return (await res.text()).trim()
}

async function eventually<T>(what: string, fn: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return await fn()
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what}: ${(err as Error).message}`, { cause: err })
      await sleep(200)
    }
  }
}

async function networkExists(name: string): Promise<boolean> {
  return (await new Docker().listNetworks({ filters: { name: [name] } })).some((n) => n.Name === name)
}

// The fields of a task read here (@types/dockerode's Task has none of them).
interface SwarmTask {
  NodeID?: string
  Status?: { State?: string }
  Spec?: { ContainerSpec?: { Image?: string } }
}

/** The service's running tasks by node id, once `count` of them run on distinct nodes. */
async function runningTasks(rig: SwarmRig, service: string, count: number): Promise<Map<string, SwarmTask>> {
  return await eventually(`${count} running tasks of ${service}`, async () => {
    const tasks = (await rig.manager.listTasks({ filters: { service: [service], 'desired-state': ['running'] } })) as unknown as SwarmTask[]
    const running = new Map(tasks.filter((task) => task.Status?.State === 'running').map((task) => [task.NodeID as string, task]))
    if (running.size !== count)
      throw new Error(`${running.size} running: ${tasks.map((task) => `${task.NodeID} ${task.Status?.State}`).join(', ')}`)
    return running
  })
}

t.test('Swarm rig: the lock is freed when its holder dies', { skip }, async (t) => {
  // A holder in another process, SIGKILLed while it holds the lock: no release ever runs.
  const helper = new URL('../helpers/swarm.ts', import.meta.url).pathname
  const holder = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      `const { acquireRigLock } = await import(${JSON.stringify(helper)}); await acquireRigLock(600_000); console.log('held'); setInterval(() => {}, 1000)`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  t.teardown(() => void holder.kill('SIGKILL'))
  await new Promise<void>((resolve, reject) => {
    holder.stdout.once('data', () => resolve())
    holder.once('exit', (code) => reject(new Error(`the holder exited with ${code} before taking the lock`)))
  })
  await t.rejects(acquireRigLock(1_000), /was not free within 1 s/, 'held by the other process')
  holder.kill('SIGKILL')
  const lock = await acquireRigLock(10_000)
  t.pass('taken once the holder died')
  await lock.release()
})

t.test('Swarm rig: two nodes, a service by digest on both, the worker down and back, and nothing left after', { skip }, async (t) => {
  await ensureBaseImage()
  const gwbridgeBefore = await networkExists('docker_gwbridge')
  const started = Date.now()
  const rig = await startSwarmRig(t)
  t.comment(`rig up in ${Date.now() - started} ms`)
  const { managerId, workerId } = rig.nodes

  // Both nodes ready, told apart by id and address (not hostname, though unshare --uts gave the worker its own).
  const manager = await rig.manager.getNode(managerId).inspect()
  const worker = await rig.manager.getNode(workerId).inspect()
  t.match(manager, { Status: { State: 'ready', Addr: rig.managerAddr }, Spec: { Role: 'manager' }, ManagerStatus: { Leader: true } })
  t.match(worker, { Status: { State: 'ready', Addr: rig.workerAddr }, Spec: { Role: 'worker' } })
  t.not(manager.Description?.Hostname, worker.Description?.Hostname, 'the nodes have their own hostnames')
  t.equal((await rig.worker.info()).Swarm.NodeID, workerId, 'the worker socket is the worker node')
  // The script run by hand (without the helper's lock) refuses to touch the rig a test holds.
  const { DAR_SWARM_LOCK_HELD: _held, ...env } = process.env
  const refused = await run('bash', [SWARM_RIG_SCRIPT, 'down'], { env }).then(
    () => '',
    (err: { stderr?: string }) => err.stderr ?? '',
  )
  t.match(refused, /a test is using the swarm rig/, '`down` by hand is refused')
  t.equal(await rig.nodeState(workerId), 'ready', 'the rig is still up')

  // An image pushed through the API, run by digest: one image string for both nodes.
  const { image } = await rig.push('rigtest/web', 'v1', 'v1')
  t.match(image, new RegExp(`^${rig.registry}/rigtest/web@sha256:[0-9a-f]{64}$`))
  const port = await freePort()
  const name = `rigtest-${randomBytes(3).toString('hex')}`
  const service = await rig.manager.createService({
    Name: name,
    TaskTemplate: {
      ContainerSpec: { Image: image, Env: [`PORT=${port}`, 'NODE_ID={{.Node.ID}}'], StopGracePeriod: 10_000_000_000 },
      Networks: [{ Target: await rig.hostNetworkId() }],
      Placement: { MaxReplicas: 1 },
    },
    Mode: { Replicated: { Replicas: 2 } },
  })
  const tasks = await runningTasks(rig, name, 2)
  t.same([...tasks.keys()].sort(), [managerId, workerId].sort(), 'one task per node')
  for (const task of tasks.values()) t.equal(task.Spec?.ContainerSpec?.Image, image, 'run by digest')
  // Each node's task answers on that node's address, and says which node it is on.
  t.equal(await eventually('the manager task', () => get(`http://127.0.0.1:${port}/node`)), managerId)
  t.equal(await eventually('the worker task', () => get(`http://${rig.workerAddr}:${port}/node`)), workerId)
  t.equal(rig.addressOf(workerId), rig.workerAddr)
  t.equal(await get(`http://${rig.addressOf(managerId)}:${port}/version`), 'v1')

  // The worker's dockerd SIGKILLed: the manager marks the node down, while its task's process lives on and answers.
  // Started again, it is the same node, ready, and its task is replaced.
  await rig.killWorker()
  t.comment(`worker down after ${await rig.waitForNode(workerId, 'down', 30_000)} ms`)
  t.equal(await rig.nodeState(managerId), 'ready')
  t.equal(await get(`http://${rig.workerAddr}:${port}/node`), workerId, "a killed dockerd's task still answers")
  await rig.startWorker()
  t.comment(`worker ready after ${await rig.waitForNode(workerId, 'ready', 30_000)} ms`)
  t.equal((await rig.worker.info()).Swarm.NodeID, workerId, 'rejoined as the same node')
  await runningTasks(rig, name, 2)
  t.equal(await eventually('the worker task again', () => get(`http://${rig.workerAddr}:${port}/node`)), workerId)

  // The whole machine down (tasks too): nothing answers on the worker until it is back.
  await rig.killWorker({ tasks: true })
  await t.rejects(get(`http://${rig.workerAddr}:${port}/node`), 'the worker task died with it')
  await rig.waitForNode(workerId, 'down', 30_000)
  await rig.startWorker()
  await rig.waitForNode(workerId, 'ready', 30_000)
  await runningTasks(rig, name, 2)
  t.equal(await eventually('the worker task after the machine came back', () => get(`http://${rig.workerAddr}:${port}/node`)), workerId)
  await rig.manager.getService(service.id).remove()

  // down(): the swarm left, no namespace, veth, worker dockerd, socket or gwbridge, no image from the rig's registry.
  // The lock is held through the checks: another test file waiting for the rig would otherwise build it at once.
  const workerPid = Number((await readFile('/run/dar-swarm/w1/docker.pid', 'utf8')).trim())
  const stopping = Date.now()
  await rig.down()
  t.comment(`rig down in ${Date.now() - stopping} ms`)
  t.equal((await rig.manager.info()).Swarm.LocalNodeState, 'inactive', 'the host dockerd left the swarm')
  t.ok(await gone('/run/netns/dar-w1'), 'no namespace')
  t.ok(await gone('/sys/class/net/dar-w1h'), 'no veth')
  t.ok(await gone(rig.workerSocket), 'no worker socket')
  // A zombie waiting for init to reap it has stopped: only a process that still runs counts.
  const state = await readFile(`/proc/${workerPid}/stat`, 'utf8').then(
    (stat) => stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3),
    () => 'gone',
  )
  t.ok(state === 'gone' || state === 'Z', `no worker dockerd (${state})`)
  t.equal(await networkExists('docker_gwbridge'), gwbridgeBefore, 'docker_gwbridge as it was before')
  // A manager that leaves while the worker's engine is dying keeps its gossip port open until dockerd restarts.
  t.equal((await run('ss', ['-Hltn', `src ${rig.managerAddr}:7946`])).stdout, '', 'the manager closed its gossip port')
  const images = await rig.manager.listImages({ filters: { reference: [`${rig.registry}/*/*`] } })
  t.same(images, [], 'no image from the rig registry left')
  await rig.stop()
})
