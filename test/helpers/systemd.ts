// A container that boots systemd as PID 1, for checking the installed units the way a server runs them. Its image
// is a Debian bookworm minbase (debootstrap, about 2 min, cached as SYSTEMD_IMAGE) with systemd, dbus, nginx-light
// and the host's node binary (same Debian: its libraries are in the rootfs). No bridge here: the container gets
// its own network namespace with loopback only (`--network none`), so its nginx and agent touch nothing outside.
import { execFile } from 'node:child_process'
import { chmod, copyFile, mkdtemp, realpath, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { importRootfs } from './docker.js'

const run = promisify(execFile)

export const SYSTEMD_IMAGE = 'deploy-agent-test-systemd:1'

/** True when debootstrap is installed (CI installs it; the image is then built on first use). */
export async function debootstrapAvailable(): Promise<boolean> {
  return await run('debootstrap', ['--version']).then(
    () => true,
    () => false,
  )
}

export async function ensureSystemdImage(mirror = 'http://deb.debian.org/debian'): Promise<string> {
  const exists = await run('docker', ['image', 'inspect', SYSTEMD_IMAGE]).then(
    () => true,
    () => false,
  )
  if (exists) return SYSTEMD_IMAGE
  const dir = await mkdtemp(join(tmpdir(), 'deploy-agent-systemd-rootfs-'))
  try {
    await chmod(dir, 0o755)
    const include = 'systemd,systemd-sysv,dbus,nginx-light'
    await run('debootstrap', ['--variant=minbase', `--include=${include}`, 'bookworm', dir, mirror], {
      timeout: 15 * 60_000,
      maxBuffer: 64 * 1024 * 1024,
    })
    await copyFile(await realpath(process.execPath), join(dir, 'usr/bin/node'))
    await importRootfs(dir, SYSTEMD_IMAGE, 'systemd', [], ['/lib/systemd/systemd'])
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
  return SYSTEMD_IMAGE
}

export interface BootedSystemd {
  name: string
  /** Runs argv in the container (as root); resolves with its output, rejects on a non-zero exit. */
  exec(argv: string[], env?: Record<string, string>): Promise<{ stdout: string; stderr: string }>
  remove(): Promise<void>
}

/**
 * Boots SYSTEMD_IMAGE with the flags systemd needs in a container on this kind of host (`--privileged` fails here)
 * and waits until systemd says the system is up. `mounts` are `host:container[:ro]` bind mounts.
 */
export async function bootSystemd(name: string, mounts: string[]): Promise<BootedSystemd> {
  await run('docker', ['rm', '--force', name]).catch(() => undefined)
  await run('docker', [
    'run',
    '--detach',
    '--name',
    name,
    '--label',
    'deploy-agent.test=systemd',
    '--network',
    'none',
    '--cgroupns=host',
    '--volume',
    '/sys/fs/cgroup:/sys/fs/cgroup:rw',
    ...['/run', '/run/lock', '/tmp'].flatMap((dir) => ['--tmpfs', dir]),
    '--cap-add=ALL',
    '--cap-drop=SYS_RESOURCE',
    ...['seccomp=unconfined', 'apparmor=unconfined', 'systempaths=unconfined'].flatMap((opt) => ['--security-opt', opt]),
    ...mounts.flatMap((mount) => ['--volume', mount]),
    SYSTEMD_IMAGE,
  ])
  const exec = (argv: string[], env: Record<string, string> = {}) =>
    run('docker', ['exec', ...Object.entries(env).flatMap(([k, v]) => ['--env', `${k}=${v}`]), name, ...argv], {
      timeout: 5 * 60_000,
      maxBuffer: 16 * 1024 * 1024,
    })
  // `--wait` answers once start-up is over (running, or degraded when a unit failed); right after `docker run` the
  // bus is not up yet and systemctl fails, so it is asked again.
  let state = ''
  for (let i = 0; i < 120 && state !== 'running' && state !== 'degraded'; i++) {
    if (i > 0) await sleep(500)
    state = await exec(['systemctl', 'is-system-running', '--wait']).then(
      (r) => r.stdout.trim(),
      (err: { stdout?: string; stderr?: string }) => `${String(err.stdout ?? '').trim()} ${String(err.stderr ?? '').trim()}`,
    )
  }
  if (state !== 'running' && state !== 'degraded') throw new Error(`systemd in ${name} did not come up: ${state}`)
  return { name, exec, remove: () => run('docker', ['rm', '--force', name]).then(() => undefined) }
}
