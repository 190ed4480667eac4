// A real Docker registry (Debian's docker-registry, distribution 2.x) on a free loopback port, storing in a temp
// dir, with htpasswd auth; dockerd trusts 127.0.0.0/8 registries over plain HTTP. Test images are built and
// pushed through the Docker API.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { access, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import Docker from 'dockerode'
import type { Test } from 'tap'
import { DockerEngine } from '../../agent/docker/engine.js'
import { tarOf } from '../../agent/docker/tar.js'
import { BASE_IMAGE } from './docker.js'
import { freePort } from './ports.js'

const run = promisify(execFile)
export const REGISTRY_BIN = '/usr/bin/docker-registry'

export async function registryAvailable(): Promise<boolean> {
  return access(REGISTRY_BIN).then(
    () => true,
    () => false,
  )
}

export interface TestRegistry {
  /** `127.0.0.1:<port>` */
  host: string
  username: string
  password: string
  /** A file holding the password (for registryAuth.passwordFile). */
  passwordFile: string
  /** Stops the registry (a stopped registry refuses every pull). */
  stop(): Promise<void>
  /** Builds a small web image (busybox httpd serving /healthz and /version = `version`) and pushes it as `name:tag`. */
  push(name: string, tag: string, version: string): Promise<{ digest: string }>
  /** Builds an image of these files (a `Dockerfile` among them) and pushes it as `name:tag`. */
  pushFiles(name: string, tag: string, files: Record<string, string>, buildArgs?: Record<string, string>): Promise<{ digest: string }>
}

/** A bcrypt hash from the C library's crypt(3) (libxcrypt), through perl: no htpasswd or bcrypt module needed. */
async function bcrypt(password: string): Promise<string> {
  const salt = randomBytes(16)
    .toString('base64')
    .replace(/[^A-Za-z0-9]/g, '.')
    .slice(0, 22)
  const { stdout } = await run('perl', ['-e', 'print crypt($ARGV[0], $ARGV[1])', password, `$2b$05$${salt}`])
  if (!stdout.startsWith('$2b$')) throw new Error(`crypt(3) made no bcrypt hash: ${stdout}`)
  return stdout
}

async function waitUp(url: string, child: ChildProcess, output: () => string): Promise<void> {
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; await sleep(100)) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}:\n${output()}`)
    const res = await fetch(url).catch(() => null)
    if (res && (res.status === 200 || res.status === 401)) return
  }
  throw new Error(`docker-registry did not answer ${url}:\n${output()}`)
}

function follow(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = ''
    stream.on('data', (d: Buffer) => (text += d.toString()))
    stream.on('end', () => {
      const error = text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { error?: string })
        .find((e) => e.error)
      if (error) reject(new Error(error.error))
      else resolve(text)
    })
    stream.on('error', reject)
  })
}

/**
 * Builds `dockerfile` as `ref` (`<registry>/<name>:<tag>`) through the Docker API, pushes it and removes the local
 * tag, so that whoever runs it must pull it (its layers stay, so the pull is quick). Returns the pushed digest.
 */
export async function buildAndPush(
  ref: string,
  files: Record<string, string>,
  authconfig: Docker.AuthConfig | object = {},
  buildArgs: Record<string, string> = {},
): Promise<{ digest: string }> {
  const docker = new Docker()
  const engine = new DockerEngine(docker)
  await engine.buildImage({
    context: tarOf(files),
    dockerfile: 'Dockerfile',
    tag: ref,
    buildArgs,
    labels: {},
    timeoutMs: 60_000,
    onLine: () => undefined,
  })
  try {
    // An empty auth still sends X-Registry-Auth, which the engine wants for every push.
    const text = await follow((await docker.getImage(ref).push({ authconfig })) as NodeJS.ReadableStream)
    const digest = /digest: (sha256:[0-9a-f]{64})/.exec(text)?.[1]
    if (!digest) throw new Error(`push of ${ref} reported no digest:\n${text}`)
    return { digest }
  } finally {
    await engine.removeImage(ref)
  }
}

/** Starts a registry in `dir` for the test; stopped and its pushed images removed in `t`'s teardown. */
export async function startRegistry(t: Test, dir: string): Promise<TestRegistry> {
  const port = await freePort()
  const host = `127.0.0.1:${port}`
  const username = 'ci'
  const password = `pw-${randomBytes(12).toString('hex')}`
  const passwordFile = join(dir, 'registry.password')
  await writeFile(passwordFile, `${password}\n`, { mode: 0o600 })
  await writeFile(join(dir, 'htpasswd'), `${username}:${await bcrypt(password)}\n`)
  const config = join(dir, 'registry.yml')
  await writeFile(
    config,
    [
      'version: 0.1',
      'log: { level: warn }',
      `storage: { filesystem: { rootdirectory: ${join(dir, 'registry-data')} }, delete: { enabled: true } }`,
      `http: { addr: "${host}" }`,
      `auth: { htpasswd: { realm: test, path: ${join(dir, 'htpasswd')} } }`,
      '',
    ].join('\n'),
  )
  const child = spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (d) => (output += d))
  child.stderr?.on('data', (d) => (output += d))
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
  }
  t.teardown(stop)
  await waitUp(`http://${host}/v2/`, child, () => output)

  // What was pushed comes back when the agent pulls it by tag.
  const engine = new DockerEngine(new Docker())
  const pushed = new Set<string>()
  t.teardown(async () => {
    for (const ref of pushed) await engine.removeImage(ref).catch(() => undefined)
    // And whatever a test's agent pulled and left under this registry's name (a refused pull keeps its image).
    const { stdout } = await run('docker', ['images', '--quiet', '--filter', `reference=${host}/*/*`])
    const ids = [...new Set(stdout.split('\n').filter(Boolean))]
    if (ids.length > 0) await run('docker', ['rmi', '--force', ...ids]).catch(() => undefined)
  })
  const authconfig = { username, password, serveraddress: host }
  const pushFiles: TestRegistry['pushFiles'] = async (name, tag, files, buildArgs = {}) => {
    const ref = `${host}/${name}:${tag}`
    pushed.add(ref)
    return await buildAndPush(ref, files, authconfig, buildArgs)
  }
  return {
    host,
    username,
    password,
    passwordFile,
    stop,
    pushFiles,
    push: (name, tag, version) => {
      const dockerfile = [
        `FROM ${BASE_IMAGE}`,
        `RUN mkdir -p /www && echo ok > /www/healthz && echo ${version} > /www/version && echo 'echo "migrated to $(cat /www/version)"' > /migrate.sh`,
        'CMD ["sh", "-c", "exec httpd -f -p 127.0.0.1:$PORT -h /www"]',
        '',
      ].join('\n')
      return pushFiles(name, tag, { Dockerfile: dockerfile })
    },
  }
}
