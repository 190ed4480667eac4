// The repository's Dockerfile, built for real without a registry: from a local base image holding the host's Node
// and npm (`ensureNodeBaseImage`), with `npm ci` in the image over host networking, then run with a minimal config.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { stringify } from 'yaml'
import { AUDIENCE, writeTestKeys } from '../helpers/agent.js'
import { dockerAvailable, ensureNodeBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { freePort } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const repo = resolve(import.meta.dirname, '../..')

/** `docker <args>` through the CLI; the classic builder, which takes --network host on any engine version. */
function docker(args: string[], timeout = 60_000) {
  return run('docker', args, { env: { ...process.env, DOCKER_BUILDKIT: '0' }, timeout, maxBuffer: 64 * 1024 * 1024 })
}

async function inspect(
  container: string,
): Promise<{ State: { Pid: number; Running: boolean; Health?: { Status: string } }; Config: { User: string } }> {
  const { stdout } = await docker(['inspect', container])
  return (JSON.parse(stdout) as Array<Awaited<ReturnType<typeof inspect>>>)[0] as Awaited<ReturnType<typeof inspect>>
}

/** The real uid of a host process (from /proc), and of its children: `--init` puts docker-init above the agent. */
async function uidsFrom(pid: number): Promise<number[]> {
  const uid = Number(/^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1])
  const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number)
  return [uid, ...(await Promise.all(children.map(uidsFrom))).flat()]
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, tries = 240): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const value = await probe().catch(() => undefined)
    if (value !== undefined) return value
    await new Promise((r) => setTimeout(r, 250))
  }
  throw new Error(`gave up waiting for ${what}`)
}

t.test(
  'Dockerfile: builds from a local Node base and runs the agent as a non-root user',
  { skip: skipUnless(await dockerAvailable(), 'docker') },
  async (t) => {
    const base = await ensureNodeBaseImage()
    const tag = `deploy-agent-dockerfile-test:${randomBytes(4).toString('hex')}`
    const name = `deploy-agent-dockerfile-test-${randomBytes(4).toString('hex')}`
    // The deps stage is tagged too (built first; the full build reuses it), so the teardown leaves no image behind.
    t.teardown(async () => {
      await docker(['rm', '--force', '--volumes', name]).catch(() => undefined)
      await docker(['rmi', '--force', tag, `${tag}-deps`]).catch(() => undefined)
    })
    const build = ['build', '--network', 'host', '--force-rm', '--build-arg', `BASE=${base}`, '--build-arg', 'APT_PACKAGES=']
    await docker([...build, '--target', 'deps', '-t', `${tag}-deps`, repo], 600_000)
    const built = await docker([...build, '-t', tag, repo], 600_000)
    t.match(built.stdout, /Successfully tagged/)

    const dir = await tempDir(t)
    await writeTestKeys(dir)
    // The container's user (uid 10001) reads the mounted config; nothing secret lives in this temp dir.
    for (const path of [dir, join(dir, 'keys')]) await chmod(path, 0o755)
    for (const file of ['ci.pub', 'status.token']) await chmod(join(dir, 'keys', file), 0o644)
    const port = await freePort()
    await writeFile(
      join(dir, 'agent.yaml'),
      stringify({
        listen: { host: '127.0.0.1', port },
        stateDir: '/var/lib/deploy-agent',
        audience: AUDIENCE,
        keys: [{ id: 'ci', alg: 'ed25519', publicKeyFile: 'keys/ci.pub' }],
        statusToken: { file: 'keys/status.token' },
        apps: {},
      }),
    )

    await docker([
      'run',
      '--detach',
      '--name',
      name,
      '--init',
      '--network',
      'host',
      '--volume',
      `${dir}:/etc/deploy-agent:ro`,
      // The image's HEALTHCHECK reads the port from here; checked every second instead of every 30.
      '--env',
      `DEPLOY_AGENT_LISTEN_PORT=${port}`,
      '--health-interval',
      '1s',
      tag,
    ])
    const health = await until('/healthz', async () => {
      if (!(await inspect(name)).State.Running) throw new Error((await docker(['logs', name])).stderr)
      const res = await fetch(`http://127.0.0.1:${port}/healthz`)
      return res.ok ? ((await res.json()) as unknown) : undefined
    }).catch(async (err: Error) => {
      const logs = await docker(['logs', name]).catch(() => ({ stdout: '', stderr: '' }))
      throw new Error(`${err.message}\n${logs.stdout}${logs.stderr}`)
    })
    t.same(health, { ok: true }, '/healthz answers')

    const info = await inspect(name)
    t.equal(info.Config.User, '10001:10001', 'the image runs as uid 10001')
    const uids = await uidsFrom(info.State.Pid)
    t.ok(uids.length >= 2, 'docker-init and the agent')
    t.ok(
      uids.every((uid) => uid === 10001),
      `every process is uid 10001 (${uids.join(', ')})`,
    )
    // Compiled JavaScript only: no sources for a TypeScript loader, and no loader cache in the temp dir.
    const listing = await docker([
      'exec',
      name,
      'node',
      '-e',
      "const { readdirSync } = require('node:fs'); console.log(JSON.stringify({ app: readdirSync('/app'), tmp: readdirSync(require('node:os').tmpdir()) }))",
    ])
    const { app, tmp } = JSON.parse(listing.stdout) as { app: string[]; tmp: string[] }
    t.ok(app.includes('dist'), `the image has dist/ (${app.join(' ')})`)
    t.notOk(app.includes('agent') || app.includes('tsconfig.json'), 'and not the TypeScript sources')
    t.same(
      tmp.filter((f) => f.startsWith('tsx')),
      [],
      'no tsx cache',
    )
    const status = await until('a healthy container', async () => {
      const s = (await inspect(name)).State.Health?.Status
      return s === 'healthy' || s === 'unhealthy' ? s : undefined
    })
    t.equal(status, 'healthy', 'the image HEALTHCHECK passes')
  },
)
