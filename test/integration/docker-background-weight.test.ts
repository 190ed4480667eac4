// Builds and migrations run at a low CPU weight, so that under CPU pressure the live release keeps its share: read
// back from the real engine (the build step's and the migration's own cgroup, and the migration's HostConfig).
import { spawn } from 'node:child_process'
import { PassThrough } from 'node:stream'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import Docker from 'dockerode'
import t from 'tap'
import { BACKGROUND_CPU_SHARES } from '../../agent/docker/types.js'
import { DockerEngine } from '../../agent/docker/engine.js'
import { BASE_IMAGE, dockerAvailable, ensureBaseImage, removeContainersByLabel } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { tempDir } from '../helpers/tmp.js'

/** The directory as a tar stream. Piped at once: Node discards a child's unread stdout when the child exits. */
const tarOf = (dir: string): NodeJS.ReadableStream =>
  spawn('tar', ['-C', dir, '-c', '.'], { stdio: ['ignore', 'pipe', 'inherit'] }).stdout.pipe(new PassThrough())

const RUN_ID = `${process.pid}-${randomBytes(4).toString('hex')}`
const RUN_LABEL = 'deploy-agent.test-run'
const skip = skipUnless(await dockerAvailable(), 'docker')
const engine = new DockerEngine()
const docker = new Docker()

if (skip === false) {
  await ensureBaseImage()
  t.teardown(async () => {
    await removeContainersByLabel(`${RUN_LABEL}=${RUN_ID}`)
    for (const image of await engine.listImages({ [RUN_LABEL]: RUN_ID })) for (const tag of image.tags) await engine.removeImage(tag)
  })
}

// The process's own CPU weight as its cgroup says it: cpu.shares on cgroup v1, cpu.weight on v2.
const READ_WEIGHT = 'echo "weight=v1:$(cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || echo "v2:$(cat /sys/fs/cgroup/cpu.weight)")"'

/** The cgroup value a container given `shares` reads (v2: runc's shares → weight conversion). */
function expectedWeight(shares: number, line: string | undefined): string {
  return line?.startsWith('weight=v2:') ? `weight=v2:${1 + Math.floor(((shares - 2) * 9999) / 262142)}` : `weight=v1:${shares}`
}

t.test('DockerEngine: a build runs its steps at the low CPU weight, or the one it is given', { skip }, async (t) => {
  for (const cpuShares of [undefined, 256]) {
    const dir = await tempDir(t)
    // A different ARG per round, so the second build cannot reuse the first one's cached step.
    await writeFile(join(dir, 'Dockerfile'), `FROM ${BASE_IMAGE}\nARG ROUND\nRUN echo "round $ROUND" && ${READ_WEIGHT}\n`)
    const lines: string[] = []
    await engine.buildImage({
      context: tarOf(dir),
      dockerfile: 'Dockerfile',
      tag: `deploy-agent-test-weight:${RUN_ID}-${cpuShares ?? 'default'}`,
      buildArgs: { ROUND: `${RUN_ID}-${cpuShares ?? 'default'}` },
      labels: { [RUN_LABEL]: RUN_ID },
      timeoutMs: 120_000,
      onLine: (line) => lines.push(line),
      ...(cpuShares !== undefined && { cpuShares }),
    })
    const seen = lines.find((line) => line.startsWith('weight='))
    t.equal(seen, expectedWeight(cpuShares ?? BACKGROUND_CPU_SHARES, seen), `cpuShares ${cpuShares ?? 'unset'}: ${lines.join(' | ')}`)
  }
  t.equal(BACKGROUND_CPU_SHARES, 128, 'an eighth of a default container (1024)')
})

t.test('DockerEngine: a migration container runs at the low CPU weight, or the one it is given', { skip }, async (t) => {
  for (const cpuShares of [undefined, 512]) {
    const name = `deploy-agent-test-weight-${RUN_ID}-${cpuShares ?? 'default'}`
    const lines: string[] = []
    const run = engine.runOneOff({
      name,
      image: BASE_IMAGE,
      cmd: ['sh', '-c', `${READ_WEIGHT}; sleep 2`],
      env: [],
      labels: { [RUN_LABEL]: RUN_ID },
      timeoutMs: 30_000,
      onLine: (line) => lines.push(line),
      ...(cpuShares !== undefined && { cpuShares }),
    })
    let hostShares: number | undefined
    for (let i = 0; i < 100 && hostShares === undefined; i++) {
      hostShares = await docker
        .getContainer(name)
        .inspect()
        .then(
          (c) => c.HostConfig.CpuShares,
          () => undefined,
        )
      if (hostShares === undefined) await sleep(50)
    }
    const result = await run
    t.equal(result.exitCode, 0)
    const want = cpuShares ?? BACKGROUND_CPU_SHARES
    t.equal(hostShares, want, 'HostConfig.CpuShares')
    const seen = lines.find((line) => line.startsWith('weight='))
    t.equal(seen, expectedWeight(want, seen), 'the weight the container runs at')
  }
})
