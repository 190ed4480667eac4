// Volumes on the real engine: an app container (as a deploy starts it) and a one-off (as a migration runs) write
// into a mounted host directory and read a read-only one, where writing is refused; a missing host path is
// refused before Docker could create it as root.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { access, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import t from 'tap'
import { DockerEngine } from '../../agent/docker/engine.js'
import type { ContainerSettings } from '../../agent/docker/types.js'
import { BASE_IMAGE, dockerAvailable, ensureBaseImage, removeContainersByLabel } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { tempDir } from '../helpers/tmp.js'

const RUN_ID = `${process.pid}-${randomBytes(4).toString('hex')}`
const RUN_LABEL = 'deploy-agent.test-run'
const IMAGE = `deploy-agent-test-volumes:${RUN_ID}`
const skip = skipUnless(await dockerAvailable(), 'docker')
const engine = new DockerEngine()
const labels = { [RUN_LABEL]: RUN_ID }

// Writes into /data, copies the read-only /conf/in.txt there, and records whether /conf could be written.
const SCRIPT =
  'echo "from $ROLE" > /data/$ROLE.txt; cat /conf/in.txt > /data/$ROLE-read.txt; ' +
  '(echo x > /conf/written.txt) 2>/dev/null && echo writable > /data/$ROLE-ro.txt || echo refused > /data/$ROLE-ro.txt'

if (skip === false) {
  await ensureBaseImage()
  t.teardown(async () => {
    await removeContainersByLabel(`${RUN_LABEL}=${RUN_ID}`)
    await engine.removeImage(IMAGE)
  })
  const dir = await tempDir(t)
  await writeFile(join(dir, 'Dockerfile'), `FROM ${BASE_IMAGE}\nCMD ["sh", "-c", ${JSON.stringify(`${SCRIPT}; sleep 60`)}]\n`)
  const { stdout: archive } = await promisify(execFile)('tar', ['-C', dir, '-c', '.'], { encoding: 'buffer' })
  await engine.buildImage({
    context: Readable.from([archive]),
    dockerfile: 'Dockerfile',
    tag: IMAGE,
    buildArgs: {},
    labels,
    timeoutMs: 120_000,
    onLine: () => {},
  })
}

async function hostDirs(t: Parameters<typeof tempDir>[0]): Promise<{ data: string; conf: string; settings: ContainerSettings }> {
  const root = await tempDir(t)
  const data = join(root, 'uploads')
  const conf = join(root, 'conf')
  await mkdir(data)
  await mkdir(conf)
  await writeFile(join(conf, 'in.txt'), 'config from the host\n')
  const settings: ContainerSettings = {
    capDrop: ['NET_RAW'],
    capAdd: [],
    noNewPrivileges: true,
    volumes: [
      { kind: 'bind', source: data, target: '/data', readOnly: false },
      { kind: 'bind', source: conf, target: '/conf', readOnly: true },
    ],
  }
  return { data, conf, settings }
}

async function waitForFile(path: string): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const text = await readFile(path, 'utf8').catch(() => null)
    if (text !== null && text !== '') return text
    await sleep(50)
  }
  throw new Error(`${path} never appeared`)
}

t.test('DockerEngine: an app container writes into its mounted host dir and cannot write a :ro one', { skip }, async (t) => {
  const { data, conf, settings } = await hostDirs(t)
  const id = await engine.startContainer({ name: `vol-web-${RUN_ID}`, image: IMAGE, env: ['ROLE=web'], labels, container: settings })
  t.teardown(() => engine.removeContainer(id))
  t.equal(await waitForFile(join(data, 'web-ro.txt')), 'refused\n', 'the read-only mount refused the write')
  t.equal(await readFile(join(data, 'web.txt'), 'utf8'), 'from web\n')
  t.equal(await readFile(join(data, 'web-read.txt'), 'utf8'), 'config from the host\n')
  await t.rejects(access(join(conf, 'written.txt')), 'nothing reached the read-only host dir')
})

t.test('DockerEngine: a migration (one-off) gets the same volumes', { skip }, async (t) => {
  const { data, settings } = await hostDirs(t)
  const result = await engine.runOneOff({
    image: IMAGE,
    cmd: ['sh', '-c', SCRIPT],
    env: ['ROLE=migrate'],
    labels,
    timeoutMs: 30_000,
    onLine: () => {},
    container: settings,
  })
  t.equal(result.exitCode, 0)
  t.equal(await readFile(join(data, 'migrate.txt'), 'utf8'), 'from migrate\n')
  t.equal(await readFile(join(data, 'migrate-ro.txt'), 'utf8'), 'refused\n')
})

t.test('DockerEngine: a missing host dir is refused, and Docker creates nothing', { skip }, async (t) => {
  const { data, settings } = await hostDirs(t)
  const missing = join(data, 'not-yet')
  const volumes = [{ kind: 'bind' as const, source: missing, target: '/data', readOnly: false }]
  await t.rejects(
    engine.startContainer({ name: `vol-missing-${RUN_ID}`, image: IMAGE, env: ['ROLE=x'], labels, container: { ...settings, volumes } }),
    { code: 'volume_unavailable', message: /host path ".*not-yet" does not exist/ },
  )
  await t.rejects(
    engine.runOneOff({
      image: IMAGE,
      cmd: ['true'],
      env: [],
      labels,
      timeoutMs: 10_000,
      onLine: () => {},
      container: { ...settings, volumes },
    }),
    { code: 'volume_unavailable' },
  )
  await t.rejects(access(missing), 'the host dir was not created')
  t.equal(await engine.inspectContainer(`vol-missing-${RUN_ID}`), null, 'no container was created')
})
