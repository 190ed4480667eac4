import { execFile, spawn } from 'node:child_process'
import { chmod, copyFile, cp, mkdir, mkdtemp, realpath, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { serverBinDir } from '../../agent/pitr/recover.js'

const run = promisify(execFile)

export const BASE_IMAGE = 'deploy-agent-test-base:1'
const LOCK_DIR = join(tmpdir(), 'deploy-agent-test-base.lock')
const STALE_LOCK_MS = 5 * 60_000

/** True when the docker CLI can reach a daemon. */
export async function dockerAvailable(): Promise<boolean> {
  try {
    await run('docker', ['info', '--format', '{{.ServerVersion}}'], { timeout: 15_000 })
    return true
  } catch {
    return false
  }
}

/** Force-removes every container (running or not) that carries `label` (`key` or `key=value`). */
export async function removeContainersByLabel(label: string): Promise<void> {
  const { stdout } = await run('docker', ['ps', '--all', '--quiet', '--filter', `label=${label}`])
  const ids = stdout.split('\n').filter((id) => id !== '')
  if (ids.length === 0) return
  await run('docker', ['rm', '--force', '--volumes', ...ids]).catch((err: { stderr?: string }) => {
    // Gone meanwhile, or being removed by its owner (a swarm removing a service's tasks): what teardown wants.
    const left = (err.stderr ?? '').split('\n').filter((line) => line !== '' && !/already in progress|No such container/.test(line))
    if (left.length > 0) throw err
  })
}

/** Removes every container and image the agent made for `app` (test teardown). */
export async function removeAppFromDocker(app: string): Promise<void> {
  await removeContainersByLabel(`deploy-agent.app=${app}`)
  // The app's images and those of its services with a build of their own (`<app>-<service>:…`).
  const { stdout } = await run('docker', ['images', '--quiet', '--filter', `reference=${app}:*`, '--filter', `reference=${app}-*:*`])
  const ids = [...new Set(stdout.split('\n').filter((id) => id !== ''))]
  if (ids.length > 0) await run('docker', ['rmi', '--force', ...ids]).catch(() => undefined)
}

async function imageExists(ref: string): Promise<boolean> {
  try {
    await run('docker', ['image', 'inspect', '--format', '{{.Id}}', ref])
    return true
  } catch {
    return false
  }
}

// mkdir is atomic, so it serialises the tap processes that run test files in parallel. A lock left by a
// killed process is taken over once it is older than any build could take.
export async function withLock<T>(fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      await mkdir(LOCK_DIR)
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const age = await stat(LOCK_DIR).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      )
      if (age > STALE_LOCK_MS) await rm(LOCK_DIR, { recursive: true, force: true })
      else await sleep(200)
    }
  }
  try {
    return await fn()
  } finally {
    await rm(LOCK_DIR, { recursive: true, force: true })
  }
}

function waitForExit(child: ReturnType<typeof spawn>, name: string, stderr: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code) => {
      if (code === 0) resolve()
      else reject(new Error(`${name} exited with ${code}: ${stderr()}`))
    })
  })
}

// A root filesystem holding only the host's static busybox, one symlink per applet and a minimal /etc.
async function makeRootfs(dir: string): Promise<void> {
  await chmod(dir, 0o755) // mkdtemp makes it 0700, and it becomes the image's /
  for (const sub of ['bin', 'etc', 'root', 'proc', 'sys', 'dev', 'usr']) await mkdir(join(dir, sub))
  await mkdir(join(dir, 'tmp'))
  await chmod(join(dir, 'tmp'), 0o1777) // mkdir's mode is masked by the umask
  await copyFile('/bin/busybox', join(dir, 'bin/busybox'))
  const { stdout } = await run('/bin/busybox', ['--list'])
  for (const applet of stdout.split('\n')) {
    if (applet !== '' && applet !== 'busybox') await symlink('busybox', join(dir, 'bin', applet))
  }
  await symlink('bin', join(dir, 'sbin'))
  await symlink('../bin', join(dir, 'usr/bin'))
  await symlink('../bin', join(dir, 'usr/sbin'))
  await writeFile(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n')
  await writeFile(join(dir, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n')
}

export async function importRootfs(dir: string, image = BASE_IMAGE, label = 'base', env: string[] = [], cmd = ['sh']): Promise<void> {
  const tar = spawn('tar', ['-C', dir, '--numeric-owner', '--owner=0', '--group=0', '-c', '.'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const importer = spawn(
    'docker',
    [
      'import',
      '--change',
      'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin',
      '--change',
      `CMD ${JSON.stringify(cmd)}`,
      ...env.flatMap((e) => ['--change', `ENV ${e}`]),
      '--change',
      `LABEL deploy-agent.test=${label}`,
      '-',
      image,
    ],
    { stdio: ['pipe', 'ignore', 'pipe'] },
  )
  let tarErr = ''
  let importErr = ''
  tar.stderr.on('data', (chunk: Buffer) => {
    tarErr += chunk.toString()
  })
  importer.stderr.on('data', (chunk: Buffer) => {
    importErr += chunk.toString()
  })
  tar.stdout.pipe(importer.stdin)
  await Promise.all([waitForExit(tar, 'tar', () => tarErr), waitForExit(importer, 'docker import', () => importErr)])
}

/** The Node base image for building deploy-agent's own Dockerfile without a registry: one per host Node version. */
export const NODE_BASE_IMAGE = `deploy-agent-test-node-base:${process.versions.node}`

const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt'

/** Copies the host's `binary` into the rootfs at its own path (executable), with the shared libraries `ldd` names. */
async function addWithLibraries(dir: string, binary: string): Promise<void> {
  const { stdout } = await run('ldd', [binary])
  const libraries = [...stdout.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)].map((m) => m[1] as string)
  for (const path of [binary, ...libraries]) {
    await mkdir(join(dir, dirname(path)), { recursive: true })
    await copyFile(await realpath(path), join(dir, path))
  }
  await chmod(join(dir, binary), 0o755)
}

// The host's node binary at its own path with the shared libraries `ldd` names, the npm that came with it, and the
// host's CA bundle (npm in the image must trust what the host trusts, e.g. a proxy's CA).
async function addHostNode(dir: string): Promise<void> {
  const node = await realpath(process.execPath)
  await addWithLibraries(dir, node)
  if (node !== '/usr/bin/node') await symlink(node, join(dir, 'usr/bin/node')).catch(() => undefined)
  const npm = dirname(dirname(await realpath(join(dirname(process.execPath), 'npm'))))
  await mkdir(join(dir, 'usr/lib/node_modules'), { recursive: true })
  await cp(npm, join(dir, 'usr/lib/node_modules/npm'), { recursive: true })
  await symlink('/usr/lib/node_modules/npm/bin/npm-cli.js', join(dir, 'usr/bin/npm')).catch(() => undefined)
  await mkdir(join(dir, dirname(CA_BUNDLE)), { recursive: true })
  await copyFile(CA_BUNDLE, join(dir, CA_BUNDLE))
}

/**
 * Builds `image` unless it exists (once across test processes): a busybox rootfs that `addToRootfs` completes,
 * imported with `label`/`env`. Returns the image name.
 */
async function ensureImage(
  image: string,
  label: string,
  addToRootfs: (dir: string) => Promise<void> = async () => undefined,
  env: string[] = [],
): Promise<string> {
  if (await imageExists(image)) return image
  return await withLock(async () => {
    if (await imageExists(image)) return image
    const dir = await mkdtemp(join(tmpdir(), `deploy-agent-${label}-rootfs-`))
    try {
      await makeRootfs(dir)
      await addToRootfs(dir)
      await importRootfs(dir, image, label, env)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
    return image
  })
}

/** Builds NODE_BASE_IMAGE (busybox + the host's Node and npm) unless it exists; returns the image name. */
export function ensureNodeBaseImage(): Promise<string> {
  return ensureImage(NODE_BASE_IMAGE, 'node-base', addHostNode, [`NODE_EXTRA_CA_CERTS=${CA_BUNDLE}`])
}

/** Builds `deploy-agent-test-base:1` from the host's /bin/busybox unless it exists; returns the image name. */
export function ensureBaseImage(): Promise<string> {
  return ensureImage(BASE_IMAGE, 'base')
}

/** The base image plus the host's `psql` and the shared libraries `ldd` names: for migrations that run SQL. */
export const PSQL_IMAGE = 'deploy-agent-test-psql:1'

/** Adds the host's psql (the server binaries' one) at /usr/bin/psql, with the libraries it links. */
async function addHostPsql(dir: string): Promise<void> {
  const psql = join(await serverBinDir(), 'psql')
  await addWithLibraries(dir, psql)
  await symlink(psql, join(dir, 'bin/psql')) // /usr/bin is a link to /bin
}

/** Builds PSQL_IMAGE (busybox + the host's psql at /usr/bin/psql) unless it exists; returns the image name. */
export function ensurePsqlImage(): Promise<string> {
  return ensureImage(PSQL_IMAGE, 'psql', addHostPsql)
}
