// The live release while a CPU-heavy image builds beside it, at the build weight the agent uses (cpushares 128) and
// at Docker's default (1024): the same fixed-rate load straight at a running app container (busybox httpd, as the
// tests' sample app) during a build whose RUN step keeps every CPU busy for BUSY_SEC. Built through the agent's own
// DockerEngine.buildImage; each request on a fresh connection, as nginx opens them. Run alone: `node --import tsx bench/build-weight.ts` (about a minute; it prints a line
// per side). Knobs: BENCH_BUILD_WEIGHT_ROUNDS (default 2 per side, alternating).
import { execFile, spawn } from 'node:child_process'
import { get } from 'node:http'
import { PassThrough } from 'node:stream'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { mkdtemp, rm } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { DockerEngine } from '../agent/docker/engine.js'
import { BACKGROUND_CPU_SHARES } from '../agent/docker/types.js'
import { BASE_IMAGE, ensureBaseImage, removeContainersByLabel } from '../test/helpers/docker.js'
import { freePorts } from '../test/helpers/ports.js'
import { fmt } from './lib.js'

/** The directory as a tar stream. Piped at once: Node discards a child's unread stdout when the child exits. */
const tarOf = (dir: string): NodeJS.ReadableStream =>
  spawn('tar', ['-C', dir, '-c', '.'], { stdio: ['ignore', 'pipe', 'inherit'] }).stdout.pipe(new PassThrough())

const run = promisify(execFile)
const ROUNDS = Math.max(1, Number(process.env.BENCH_BUILD_WEIGHT_ROUNDS ?? 2))
const BUSY_SEC = 12
const RATE = 200
const LABEL = `deploy-agent-bench-weight=${process.pid}-${randomBytes(3).toString('hex')}`

async function buildBusy(engine: DockerEngine, dir: string, cpuShares: number, round: number): Promise<void> {
  const busy = Array.from({ length: cpus().length }, () => `timeout ${BUSY_SEC} sh -c "while :; do :; done" &`).join(' ')
  await writeFile(join(dir, 'Dockerfile'), `FROM ${BASE_IMAGE}\nARG ROUND\nRUN echo $ROUND; ${busy} wait\n`)
  await engine.buildImage({
    context: tarOf(dir),
    dockerfile: 'Dockerfile',
    tag: `deploy-agent-bench-weight:${round}-${cpuShares}`,
    buildArgs: { ROUND: `${LABEL}-${round}-${cpuShares}` },
    labels: { [LABEL.split('=')[0] as string]: LABEL.split('=')[1] as string },
    timeoutMs: 120_000,
    onLine: () => {},
    cpuShares,
  })
}

interface Probe {
  latencies: number[]
  errors: number
}

/** Fires GET `url` on a fresh connection every 1000/RATE ms until `stop()`; each answer's latency is kept. */
function probe(url: string): { stop: () => Promise<Probe> } {
  const result: Probe = { latencies: [], errors: 0 }
  const inFlight = new Set<Promise<void>>()
  const fire = (): void => {
    const started = performance.now()
    const done = new Promise<void>((resolve) => {
      const req = get(url, { agent: false, timeout: 5000 }, (res) => {
        res.resume()
        res.on('end', () => {
          if (res.statusCode === 200) result.latencies.push(performance.now() - started)
          else result.errors += 1
          resolve()
        })
      })
      req.on('timeout', () => req.destroy(new Error('timeout')))
      req.on('error', () => {
        result.errors += 1
        resolve()
      })
    })
    inFlight.add(done)
    void done.then(() => inFlight.delete(done))
  }
  const timer = setInterval(fire, 1000 / RATE)
  return {
    stop: async () => {
      clearInterval(timer)
      await Promise.all(inFlight)
      return result
    },
  }
}

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? NaN

function describe(r: Probe): string {
  const s = [...r.latencies].sort((a, b) => a - b)
  return `${s.length + r.errors} requests, ${r.errors} failed; latency p50 ${fmt(pct(s, 50), 1)} ms, p99 ${fmt(pct(s, 99), 1)} ms, max ${fmt(s.at(-1) ?? NaN)} ms`
}

const engine = new DockerEngine()
await ensureBaseImage()
const [port] = (await freePorts(1)) as [number]
const dir = await mkdtemp(join(tmpdir(), 'deploy-agent-bench-weight-'))
try {
  await run('docker', [
    'run', '-d', '--network', 'host', '--label', LABEL, BASE_IMAGE,
    'sh', '-c', `mkdir -p /www && echo ok > /www/version && exec httpd -f -p 127.0.0.1:${port} -h /www`,
  ]) // prettier-ignore
  await sleep(1000)
  for (let round = 0; round < ROUNDS; round++) {
    for (const shares of round % 2 === 0 ? [BACKGROUND_CPU_SHARES, 1024] : [1024, BACKGROUND_CPU_SHARES]) {
      const load = probe(`http://127.0.0.1:${port}/version`)
      await buildBusy(engine, dir, shares, round)
      const result = await load.stop()
      console.log(`round ${round + 1}, build cpushares ${shares}: ${describe(result)}`)
    }
  }
} finally {
  await removeContainersByLabel(LABEL)
  const { stdout } = await run('docker', ['images', '-q', '--filter', `label=${LABEL}`])
  for (const id of new Set(stdout.split('\n').filter(Boolean))) await run('docker', ['rmi', '-f', id]).catch(() => undefined)
  await rm(dir, { recursive: true, force: true })
}
