// Container hardening on the real engine: what DockerEngine asks of Docker (read back with inspect) and what a
// process in the container then can do (a raw socket, a setuid escalation), by default and as configured.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import Docker from 'dockerode'
import t from 'tap'
import { DockerEngine } from '../../agent/docker/engine.js'
import { BASE_IMAGE, dockerAvailable, ensureBaseImage, removeContainersByLabel } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { PROBE, probeResults, SETUID_SU } from '../helpers/hardening.js'
import { tempDir } from '../helpers/tmp.js'

const RUN_ID = `${process.pid}-${randomBytes(4).toString('hex')}`
const RUN_LABEL = 'deploy-agent.test-run'
const IMAGE = `deploy-agent-test-hardening:${RUN_ID}`
const skip = skipUnless(await dockerAvailable(), 'docker')
const engine = new DockerEngine()
const docker = new Docker()
const labels = (testCase: string) => ({ [RUN_LABEL]: RUN_ID, 'deploy-agent.test-case': testCase })

if (skip === false) {
  await ensureBaseImage()
  t.teardown(async () => {
    await removeContainersByLabel(`${RUN_LABEL}=${RUN_ID}`)
    await engine.removeImage(IMAGE)
  })
  const dir = await tempDir(t)
  await writeFile(join(dir, 'Dockerfile'), `FROM ${BASE_IMAGE}\n${SETUID_SU}\n`)
  // The whole context first: under a loaded full run a piped tar once reached the engine without its Dockerfile.
  const { stdout: archive } = await promisify(execFile)('tar', ['-C', dir, '-c', '.'], { encoding: 'buffer' })
  const context = Readable.from([archive])
  await engine.buildImage({
    context,
    dockerfile: 'Dockerfile',
    tag: IMAGE,
    buildArgs: {},
    labels: labels('image'),
    timeoutMs: 120_000,
    onLine: () => {},
  })
}

/** Runs the probe as a one-off (a migration's kind of container), inspecting the container while it runs. */
async function probeOneOff(testCase: string, container?: Parameters<DockerEngine['runOneOff']>[0]['container']) {
  const lines: string[] = []
  const running = engine.runOneOff({
    image: IMAGE,
    cmd: ['sh', '-c', `${PROBE}\nsleep 2`], // the sleep leaves time to inspect it
    env: [],
    labels: labels(testCase),
    timeoutMs: 30_000,
    onLine: (line) => lines.push(line),
    ...(container !== undefined && { container }),
  })
  let hostConfig: Docker.HostConfig | undefined
  for (let i = 0; i < 100 && hostConfig === undefined; i++) {
    const [found] = await docker.listContainers({
      all: true,
      filters: { label: [`deploy-agent.test-case=${testCase}`, `${RUN_LABEL}=${RUN_ID}`] },
    })
    if (found)
      hostConfig = await docker
        .getContainer(found.Id)
        .inspect()
        .then(
          (info) => info.HostConfig,
          () => undefined,
        )
    if (hostConfig === undefined) await sleep(50)
  }
  const result = await running
  return { result, lines, hostConfig, probe: probeResults(lines) }
}

t.test('DockerEngine: a one-off container drops NET_RAW and cannot gain privileges by default', { skip }, async (t) => {
  const { result, hostConfig, probe, lines } = await probeOneOff('one-off-default')
  t.equal(result.exitCode, 0, lines.join('\n'))
  t.ok(hostConfig?.CapDrop?.includes('NET_RAW'), 'CapDrop has NET_RAW')
  t.ok(hostConfig?.SecurityOpt?.includes('no-new-privileges'), 'SecurityOpt has no-new-privileges')
  t.same(probe, { 'raw-socket': 'refused', setuid: 'blocked', 'no-new-privs': '1' }, lines.join('\n'))
})

t.test('DockerEngine: the probes are meaningful: without the hardening a raw socket opens and setuid escalates', { skip }, async (t) => {
  const { result, hostConfig, probe, lines } = await probeOneOff('one-off-open', { capDrop: [], capAdd: [], noNewPrivileges: false })
  t.equal(result.exitCode, 0, lines.join('\n'))
  t.same(hostConfig?.CapDrop ?? [], [])
  t.same(probe, { 'raw-socket': 'opened', setuid: 'escalated', 'no-new-privs': '0' }, lines.join('\n'))
})

t.test('DockerEngine: a one-off container gets the configured memory and pids limits', { skip }, async (t) => {
  const container = { capDrop: ['NET_RAW', 'MKNOD'], capAdd: [], noNewPrivileges: true, memory: 64 * 1024 ** 2, pids: 50 }
  const { hostConfig, probe, lines } = await probeOneOff('one-off-limits', container)
  t.match(hostConfig, {
    CapDrop: ['NET_RAW', 'MKNOD'],
    SecurityOpt: ['no-new-privileges'],
    Memory: 64 * 1024 ** 2,
    MemorySwap: 64 * 1024 ** 2,
    PidsLimit: 50,
  })
  t.same(probe, { 'raw-socket': 'refused', setuid: 'blocked', 'no-new-privs': '1' }, lines.join('\n'))
})

t.test('DockerEngine: a long-running container is hardened and limited as configured', { skip }, async (t) => {
  const name = `deploy-agent-test-hardening-${RUN_ID}`
  const id = await engine.startContainer({
    name,
    image: IMAGE,
    env: [],
    labels: labels('web'),
    restartPolicy: 'no',
    container: { capDrop: ['NET_RAW'], capAdd: [], noNewPrivileges: true, memory: 32 * 1024 ** 2, pids: 20 },
  })
  // The image's CMD is `sh`, which exits at once without a tty; the engine answers with what it was asked for.
  const { HostConfig } = await docker.getContainer(id).inspect()
  t.match(HostConfig, {
    CapDrop: ['NET_RAW'],
    SecurityOpt: ['no-new-privileges'],
    Memory: 32 * 1024 ** 2,
    MemorySwap: 32 * 1024 ** 2,
    PidsLimit: 20,
  })
  const defaults = await engine.startContainer({
    name: `${name}-defaults`,
    image: IMAGE,
    env: [],
    labels: labels('web'),
    restartPolicy: 'no',
  })
  const { HostConfig: plain } = await docker.getContainer(defaults).inspect()
  t.match(plain, { CapDrop: ['NET_RAW'], SecurityOpt: ['no-new-privileges'], Memory: 0, PidsLimit: null }, 'defaults: hardened, no limits')
})
