// A Docker engine of the test's own (its own socket, data root, exec root and managed containerd), so a test may
// SIGKILL and restart dockerd without touching the shared one other tests use. Started with the same flags as the
// shared engine: no bridge, no iptables; containers use host networking.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { BASE_IMAGE, ensureBaseImage } from './docker.js'

const run = promisify(execFile)

export interface PrivateDocker {
  /** `unix:///…/docker.sock`, for DOCKER_HOST and `docker -H`. */
  host: string
  /** SIGKILLs dockerd and its managed containerd (the containers' shims live on, as after a real crash). */
  kill(): Promise<void>
  /** Starts dockerd again on the same roots and waits until it answers. */
  start(): Promise<void>
}

async function answers(host: string): Promise<boolean> {
  try {
    await run('docker', ['-H', host, 'version', '--format', '{{.Server.Version}}'], { timeout: 5_000 })
    return true
  } catch {
    return false
  }
}

/** Whether this process may run a second dockerd (root, with the binary installed). */
export async function canRunPrivateDockerd(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false
  return run('dockerd', ['--version']).then(
    () => true,
    () => false,
  )
}

/** Starts a private dockerd with the test base image loaded; stopped and removed in `t`'s teardown. */
export async function startPrivateDockerd(t: { teardown: (fn: () => unknown) => void }): Promise<PrivateDocker> {
  // Short paths: containerd's socket lives under the exec root and unix socket paths are limited to 108 bytes.
  const root = await mkdtemp('/tmp/dad-')
  const host = `unix://${join(root, 'docker.sock')}`
  const argv = [
    '--host',
    host,
    '--data-root',
    join(root, 'data'),
    '--exec-root',
    join(root, 'exec'),
    '--pidfile',
    join(root, 'docker.pid'),
    '--bridge=none',
    '--iptables=false',
  ]
  let daemon: ChildProcess | undefined
  let log = ''
  const start = async (): Promise<void> => {
    const child = spawn('dockerd', argv, { stdio: ['ignore', 'ignore', 'pipe'] })
    child.stderr?.on('data', (chunk: Buffer) => {
      log = (log + chunk.toString()).slice(-8192)
    })
    daemon = child
    const deadline = Date.now() + 60_000
    while (!(await answers(host))) {
      if (child.exitCode !== null) throw new Error(`private dockerd exited with ${child.exitCode}:\n${log}`)
      if (Date.now() > deadline) throw new Error(`private dockerd did not answer in 60 s:\n${log}`)
      await sleep(200)
    }
  }
  const kill = async (): Promise<void> => {
    const child = daemon
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
    // Its managed containerd goes too, as when the engine's service is killed as a whole: on this machine a restarted
    // dockerd could not reach the orphaned one ("timeout waiting for containerd to start"). The shims, and so the
    // containers' processes, live on either way.
    const pid = Number((await readFile(join(root, 'exec', 'containerd', 'containerd.pid'), 'utf8').catch(() => '')).trim())
    if (pid > 0) {
      const signal = (sig: NodeJS.Signals | 0): boolean => {
        try {
          process.kill(pid, sig)
          return true
        } catch {
          return false // gone
        }
      }
      // Gone, not just signalled: a restarted dockerd that still sees the pid tries to reuse it.
      signal('SIGKILL')
      for (let i = 0; i < 100 && signal(0); i++) await sleep(100)
    }
  }
  t.teardown(async () => {
    const child = daemon
    if (child && child.exitCode === null && child.signalCode === null) {
      // A graceful stop stops the containers and the managed containerd, and unmounts the layers.
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
      await exited
      clearTimeout(timer)
    }
    // A containerd left by a killed dockerd (never restarted) is ours too: stop it by its pid file.
    const pid = Number((await readFile(join(root, 'exec', 'containerd', 'containerd.pid'), 'utf8').catch(() => '')).trim())
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGTERM')
      } catch {
        // already gone
      }
    }
    // Layers under the data root, the network namespace file under the exec root.
    for (const sub of ['data', 'exec']) await run('umount', ['--recursive', '--lazy', join(root, sub)]).catch(() => undefined)
    await run('umount', ['--lazy', join(root, 'exec', 'netns', 'default')]).catch(() => undefined)
    await rm(root, { recursive: true, force: true }).catch(() => undefined)
  })
  await start()
  // The base image comes from the shared engine: `docker save | docker load` keeps its name and config.
  await ensureBaseImage()
  const save = spawn('docker', ['save', BASE_IMAGE], { stdio: ['ignore', 'pipe', 'inherit'] })
  const load = spawn('docker', ['-H', host, 'load', '--quiet'], { stdio: ['pipe', 'ignore', 'inherit'] })
  save.stdout.pipe(load.stdin)
  const loaded = await new Promise<number | null>((resolve) => load.once('close', resolve))
  if (loaded !== 0) throw new Error(`loading ${BASE_IMAGE} into the private dockerd failed (${loaded})`)
  return { host, kill, start }
}
