// The two-node swarm rig for tests: this host's dockerd as the manager, a second dockerd in a network namespace as the
// worker, and a registry every node reaches as 127.0.0.1:<port>. scripts/swarm-rig.sh is the one recipe (a developer
// runs it by hand); this helper calls it, and adds what tests need: a cross-process lock (the host dockerd can be in
// one swarm only, and tap runs test files in parallel), dockerode clients, node waits and a swarm-ready image.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { access, readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import Docker from 'dockerode'
import { BASE_IMAGE, dockerAvailable } from './docker.js'
import { buildAndPush, REGISTRY_BIN } from './registry.js'

const run = promisify(execFile)
export const SWARM_RIG_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'scripts', 'swarm-rig.sh')
export const SWARM_RIG_LOCK = '/run/dar-swarm.lock'
const HOLDER_FILE = '/run/dar-swarm.holder'

export type NodeState = 'ready' | 'down' | 'unknown' | 'disconnected'

export interface SwarmRig {
  /** The manager's advertised address (the host end of the veth pair). Its tasks are reached on 127.0.0.1. */
  managerAddr: string
  /** The worker's address (inside the namespace): its tasks are reached there. */
  workerAddr: string
  /** The worker dockerd's unix socket. */
  workerSocket: string
  /** `127.0.0.1:<port>`: the registry, under the same address on every node. */
  registry: string
  nodes: { managerId: string; workerId: string }
  /** dockerode on the host's dockerd (the manager) and on the worker's. */
  manager: Docker
  worker: Docker
  /** Where a test reaches a task on `nodeId` (127.0.0.1 on the manager, the worker's own address on the worker). */
  addressOf(nodeId: string): string
  /** The swarm-scope id of the `host` network, for a service's `Networks: [{ Target }]` (not the local network id). */
  hostNetworkId(): Promise<string>
  /**
   * Builds a busybox web image and pushes it to the rig's registry as `name:tag`: httpd on `$PORT` on every address,
   * serving /healthz (`ok`), /version (`version`) and /node (`$NODE_ID`, e.g. `{{.Node.ID}}` in the service's env),
   * with a TERM trap (an app ignoring SIGTERM as PID 1 makes every task stop wait the grace period).
   * Returns `image`, the `127.0.0.1:<port>/name@sha256:…` string to give the service.
   */
  push(name: string, tag: string, version: string): Promise<{ digest: string; image: string }>
  /** The node's state as the manager sees it. */
  nodeState(nodeId: string): Promise<NodeState>
  /** Waits until the manager reports the node in `state`; returns how long that took (ms). */
  waitForNode(nodeId: string, state: NodeState, timeoutMs?: number): Promise<number>
  /**
   * SIGKILLs the worker's dockerd (and its containerd): the node goes Down. Its tasks' processes live on, and answer,
   * until the worker starts again (then they are replaced), unless `tasks` kills them too (the machine dies).
   */
  killWorker(options?: { tasks?: boolean }): Promise<void>
  /** Starts the worker's dockerd again on the same data root: it rejoins as the same node. */
  startWorker(): Promise<void>
  /** Removes the rig (`swarm-rig.sh down`: the swarm left, no namespace, veth, dockerd or gwbridge), keeping the lock. */
  down(): Promise<void>
  /** `down()`, then frees the lock (another test file may take the rig at once). */
  stop(): Promise<void>
}

export interface SwarmRigOptions {
  /** The swarm's dispatcher heartbeat: a SIGKILLed worker shows Down ~3 s after with 1 s, ~13 s with Docker's 5 s. */
  heartbeatSeconds?: number
  /** How long to wait for another test file holding the rig (default 8 min, within tap's 10 min per file). */
  lockTimeoutMs?: number
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  )
}

/** Whether this process can build the rig: root, a running dockerd, iproute2, util-linux's tools, docker-registry. */
export async function canRunSwarmRig(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false
  const found = await Promise.all(
    ['ip', 'ss', 'nsenter', 'unshare', 'flock', 'findmnt', 'curl', 'dockerd'].map((tool) =>
      run('which', [tool]).then(Boolean, () => false),
    ),
  )
  if (found.includes(false)) return false
  return (await exists(REGISTRY_BIN)) && (await dockerAvailable())
}

export interface RigLock {
  release(): Promise<void>
}

/**
 * Takes the rig's exclusive lock, waiting at most `timeoutMs`. `flock LOCK cat` holds it for this process: flock runs
 * cat only once it has the lock, and cat echoes the line written to it, so the echo says the lock is held. cat ends
 * when its stdin closes, i.e. on release or when this process dies in any way, and the kernel frees the lock with it.
 */
export async function acquireRigLock(timeoutMs: number): Promise<RigLock> {
  const seconds = Math.max(1, Math.ceil(timeoutMs / 1000))
  const child: ChildProcess = spawn('flock', ['--exclusive', '--wait', String(seconds), SWARM_RIG_LOCK, 'cat'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
  const held = new Promise<void>((resolve, reject) => {
    child.stdout?.once('data', () => resolve())
    child.once('error', reject)
    child.once('exit', async (code) => {
      const holder = await readFile(HOLDER_FILE, 'utf8').catch(() => 'unknown')
      reject(
        new Error(
          `the swarm rig's lock ${SWARM_RIG_LOCK} was not free within ${seconds} s (flock exited ${code}: ${stderr.trim()}; holder: ${holder.trim()})`,
        ),
      )
    })
  })
  child.stdin?.write('locked\n')
  await held
  child.removeAllListeners('exit')
  await writeFile(HOLDER_FILE, `pid ${process.pid}: ${process.argv.slice(1).join(' ')}\n`)
  return {
    release: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.stdin?.end()
      await exited
    },
  }
}

async function script(
  command: 'up' | 'down' | 'kill-worker' | 'start-worker',
  env: NodeJS.ProcessEnv = {},
  args: string[] = [],
): Promise<string> {
  try {
    const { stdout } = await run('bash', [SWARM_RIG_SCRIPT, command, ...args], {
      env: { ...process.env, ...env, DAR_SWARM_LOCK_HELD: '1' },
      timeout: 180_000,
    })
    return stdout
  } catch (err) {
    const e = err as { stderr?: string; message: string }
    throw new Error(`swarm-rig.sh ${command} failed: ${e.stderr?.trim() || e.message}`, { cause: err })
  }
}

function parseFacts(text: string): Record<string, string> {
  return Object.fromEntries([...text.matchAll(/^([A-Z_]+)=(.*)$/gm)].map((m) => [m[1], m[2]]))
}

/**
 * Builds the two-node rig (cleaning up after any crashed run first), waiting for the lock while another test file has
 * it. `t`'s teardown stops it; `stop()` may be called earlier.
 */
export async function startSwarmRig(t: { teardown: (fn: () => unknown) => void }, options: SwarmRigOptions = {}): Promise<SwarmRig> {
  const lock = await acquireRigLock(options.lockTimeoutMs ?? 8 * 60_000)
  let stopped = false
  let isDown = false
  const down = async (): Promise<void> => {
    if (isDown) return
    isDown = true
    await script('down')
  }
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    try {
      await down()
    } finally {
      await lock.release()
    }
  }
  t.teardown(stop)
  let facts: Record<string, string>
  try {
    const heartbeat = options.heartbeatSeconds === undefined ? {} : { DAR_SWARM_HEARTBEAT: `${options.heartbeatSeconds}s` }
    facts = parseFacts(await script('up', heartbeat))
  } catch (err) {
    await stop().catch(() => undefined)
    throw err
  }
  const fact = (key: string): string => {
    const value = facts[key]
    if (!value) throw new Error(`swarm-rig.sh up printed no ${key}`)
    return value
  }
  const manager = new Docker()
  const worker = new Docker({ socketPath: fact('WORKER_SOCKET') })
  const nodes = { managerId: fact('MANAGER_ID'), workerId: fact('WORKER_ID') }
  const registry = fact('REGISTRY')
  const nodeState = async (nodeId: string): Promise<NodeState> => {
    const node = (await manager.getNode(nodeId).inspect()) as { Status?: { State?: NodeState } }
    return node.Status?.State ?? 'unknown'
  }
  return {
    managerAddr: fact('MANAGER_ADDR'),
    workerAddr: fact('WORKER_ADDR'),
    workerSocket: fact('WORKER_SOCKET'),
    registry,
    nodes,
    manager,
    worker,
    addressOf: (nodeId) => {
      if (nodeId === nodes.managerId) return '127.0.0.1'
      if (nodeId === nodes.workerId) return fact('WORKER_ADDR')
      throw new Error(`node ${nodeId} is not one of the rig's (${nodes.managerId}, ${nodes.workerId})`)
    },
    hostNetworkId: async () => {
      // The engine's own query option, which @types/dockerode does not declare: by name, in the swarm's scope.
      const host = manager.getNetwork('host') as unknown as { inspect(opts: { scope: string }): Promise<{ Id: string }> }
      return (await host.inspect({ scope: 'swarm' })).Id
    },
    push: async (name, tag, version) => {
      const dockerfile = [
        `FROM ${BASE_IMAGE}`,
        `RUN mkdir -p /www && echo ok > /www/healthz && echo ${version} > /www/version`,
        `CMD ["sh", "-c", "trap 'exit 0' TERM; echo \\"$NODE_ID\\" > /www/node; httpd -f -p \\"$PORT\\" -h /www & wait"]`,
        '',
      ].join('\n')
      const { digest } = await buildAndPush(`${registry}/${name}:${tag}`, { Dockerfile: dockerfile })
      return { digest, image: `${registry}/${name}@${digest}` }
    },
    nodeState,
    waitForNode: async (nodeId, state, timeoutMs = 60_000) => {
      const started = Date.now()
      let last: NodeState = 'unknown'
      while (Date.now() - started < timeoutMs) {
        last = await nodeState(nodeId)
        if (last === state) return Date.now() - started
        await sleep(100)
      }
      throw new Error(`node ${nodeId} was still ${last}, not ${state}, after ${timeoutMs} ms`)
    },
    killWorker: async (opts = {}) => void (await script('kill-worker', {}, opts.tasks ? ['all'] : [])),
    startWorker: async () => void (await script('start-worker')),
    down,
    stop,
  }
}
