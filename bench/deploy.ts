// Deploys on the real engines (Docker, git, nginx), side by side in one run with what they replace:
//   1. deploy wall time with a warm layer cache: the agent vs a hand-written script doing the same steps
//      (bench/baseline-deploy.sh);
//   2. manual rollback: request → traffic on the old release, and request → SUCCEEDED, vs a bare upstream rewrite +
//      `nginx -s reload` to a container that is already running;
//   3. failed requests through nginx at a steady 200 req/s during agent deploys and rollbacks, vs
//      `docker-compose up -d --build` of the same app behind the same kind of nginx, with two references: the same load
//      with nothing deployed, and during bare nginx reloads between two running releases;
//   4. a release that breaks after the switch: failing observe probes → traffic back on the old release.
// The agent is built in-process as in test/integration/deploy.test.ts and driven through signed requests.
import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Worker } from 'node:worker_threads'
import { assembleDeploys } from '../agent/deploy/assemble.js'
import type { DeployCoordinator } from '../agent/deploy/coordinator.js'
import { createLogger } from '../agent/observability/logger.js'
import type { Deploy } from '../agent/store/deploys.js'
import { buildTestAgent, signedInject, type TestAgent } from '../test/helpers/agent.js'
import { removeAppFromDocker, dockerAvailable, ensureBaseImage, removeContainersByLabel } from '../test/helpers/docker.js'
import { startNginx, writeUpstreamFile, type NginxInstance } from '../test/helpers/nginx.js'
import { freePorts } from '../test/helpers/ports.js'
import { FAILS_AFTER_SEC, makeSampleRepo, SAMPLE_TAGS } from '../test/helpers/sample-app.js'
import { fmt, formatRows, type Row } from './lib.js'
import { rateLoad, type RateLoadResult } from './load.js'

const run = promisify(execFile)
const BASELINE_SCRIPT = fileURLToPath(new URL('./baseline-deploy.sh', import.meta.url))

// Development knobs (the defaults are the benchmark): BENCH_DEPLOY_RUNS (timed runs per side), BENCH_DEPLOY_PHASES
// (e.g. "3,compose": which of 2, 3, compose, 4 run after phase 1), BENCH_DEPLOY_KEEP=1 (keep the temp dir and its
// nginx logs), BENCH_DEPLOY_LOAD_RUNS (deploys and rollbacks under load in phase 3, default 3), BENCH_BURNERS=n (n
// CPU-burning host processes, at the default nice, beside phase 3 from its reference to its bare reloads).
// Alone: `node --import tsx bench/deploy.ts` (prints the rows and notes).
/** Timed deploys and rollbacks per side (medians). */
const RUNS = Math.max(1, Number(process.env.BENCH_DEPLOY_RUNS ?? 5))
const PHASES = process.env.BENCH_DEPLOY_PHASES?.split(',')
const want = (phase: string) => PHASES === undefined || PHASES.includes(phase)
/** Deploys, rollbacks and compose updates under load (summed). */
const LOAD_RUNS = Math.max(1, Number(process.env.BENCH_DEPLOY_LOAD_RUNS ?? 3))
/** CPU-burning processes beside phase 3. */
const BURNERS = Math.max(0, Number(process.env.BENCH_BURNERS ?? 0))
/** Bad-release deploys (median). */
const BAD_RUNS = 3
const RATE = 200
const ENV = 'production'
/** Same for the agent and the script: probe every 100 ms, healthy after 2 passes in a row. */
const HEALTH = { path: '/healthz', intervalMs: 100, timeoutMs: 1000, healthyAfter: 2, deadlineSec: 10 }
/** The old release keeps running this long after the switch, in the agent (drainMs) and in the script (sleep). */
const DRAIN_MS = 500
/** The app timed against the script: no observe window (one probe after the switch), as the script has none. */
const OBSERVE_OFF = { seconds: 0, intervalMs: 200, maxFailures: 2 }
/** The app that gets the release breaking after the switch. */
const OBSERVE_BAD = { seconds: 10, intervalMs: 200, maxFailures: 2 }

/** Filled by benchDeploy: the settings and the measured details behind the rows. */
export const deployNotes: string[] = []

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number
const ms = (n: number) => `${fmt(n)} ms`

// The poll loop of ServedWatch, in a worker thread: its clock reads are not delayed by what the bench's own thread
// runs meanwhile (the in-process agent), so the agent and a bare switch are timed alike. Plain JS (no loader).
const WATCH_LOOP = `
const { get } = require('node:http')
const { parentPort, workerData } = require('node:worker_threads')
let stopped = false
parentPort.on('message', () => { stopped = true })
// One GET on a fresh connection (as agent/proxy/through.ts probeThrough): status 200 answers its body.
const probe = () => new Promise((resolve) => {
  const req = get(workerData.url, { agent: false }, (res) => {
    let body = ''
    res.setEncoding('utf8')
    res.on('data', (c) => { if (body.length < 4096) body += c })
    res.on('end', () => resolve(res.statusCode === 200 ? body.trim() : 'HTTP ' + res.statusCode))
    res.on('error', (e) => resolve('error ' + (e.code || e.message)))
  })
  req.setTimeout(1000, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })))
  req.on('error', (e) => resolve('error ' + (e.code || e.message)))
})
;(async () => {
  let last
  while (!stopped) {
    const version = await probe()
    if (version !== last) parentPort.postMessage({ at: Date.now(), version })
    last = version
    await new Promise((r) => setTimeout(r, 5))
  }
  parentPort.close()
})()
`

/**
 * Polls `url` through nginx on fresh connections (~every 5 ms, in a worker thread) and records each change of the
 * answer, timed when the answer arrived.
 */
export class ServedWatch {
  readonly changes: Array<{ at: number; version: string }> = []
  private readonly worker: Worker
  private readonly done: Promise<void>

  constructor(url: string) {
    this.worker = new Worker(WATCH_LOOP, { eval: true, workerData: { url } })
    this.worker.on('message', (c: { at: number; version: string }) => this.changes.push(c))
    this.done = new Promise((resolve) => this.worker.once('exit', () => resolve()))
  }

  /** When `version` was first seen at or after `after`; null if never. */
  firstAt(version: string, after: number): number | null {
    return this.changes.find((c) => c.at >= after && c.version === version)?.at ?? null
  }

  async until(version: string, after: number, timeoutMs = 30_000): Promise<number> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const at = this.firstAt(version, after)
      if (at !== null) return at
      if (Date.now() > deadline)
        throw new Error(`nginx did not serve ${version} within ${timeoutMs} ms (seen: ${this.changes.map((c) => c.version).join(' → ')})`)
      await sleep(5)
    }
  }

  async stop(): Promise<void> {
    this.worker.postMessage('stop')
    await this.done
  }
}

/** The agent in-process, driven as CI would: signed POSTs, then polling the deploy with the status token. */
class AgentSide {
  constructor(
    readonly agent: TestAgent,
    private readonly coordinator: () => DeployCoordinator,
  ) {}

  private async post(url: string, body: object): Promise<string> {
    const res = await signedInject(this.agent, { url, body })
    if (res.statusCode !== 202) throw new Error(`POST ${url}: ${res.statusCode} ${res.body}`)
    return (JSON.parse(res.body) as { id: string }).id
  }

  async get(id: string): Promise<Deploy> {
    const res = await this.agent.app.inject({
      url: `/v1/deploys/${id}`,
      headers: { authorization: `Bearer ${this.agent.keys.statusToken}` },
    })
    return JSON.parse(res.body) as Deploy
  }

  async wait(id: string, timeoutMs = 120_000): Promise<Deploy> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const deploy = await this.get(id)
      if (deploy.finishedAt) return deploy
      if (Date.now() > deadline) throw new Error(`deploy ${id} still ${deploy.state} after ${timeoutMs} ms`)
      await sleep(20)
    }
  }

  async log(id: string): Promise<Array<Record<string, unknown>>> {
    const res = await this.agent.app.inject({
      url: `/v1/deploys/${id}/log`,
      headers: { authorization: `Bearer ${this.agent.keys.statusToken}` },
    })
    return res.body
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
  }

  /** Deploys `ref` and waits for the end; `ms` is request → finishedAt (the record's own timestamp, no poll lag). */
  async deploy(app: string, ref: string, expect: Deploy['state'] = 'SUCCEEDED'): Promise<{ deploy: Deploy; ms: number; t0: number }> {
    const t0 = Date.now()
    const deploy = await this.wait(await this.post(`/v1/apps/${app}/envs/${ENV}/deploys`, { ref }))
    if (deploy.state !== expect)
      throw new Error(`deploy of ${ref} ended ${deploy.state}, expected ${expect}: ${JSON.stringify(deploy.error)}`)
    await this.coordinator().idle() // the prune after a success runs in the lane; keep it out of the next timing
    return { deploy, ms: Date.parse(deploy.finishedAt as string) - t0, t0 }
  }

  /** A manual rollback to the default target (the newest kept release that is not live). */
  async rollback(app: string): Promise<{ deploy: Deploy; ms: number; t0: number }> {
    const t0 = Date.now()
    const deploy = await this.wait(await this.post(`/v1/apps/${app}/envs/${ENV}/rollback`, {}))
    if (deploy.state !== 'SUCCEEDED') throw new Error(`rollback ended ${deploy.state}: ${JSON.stringify(deploy.error)}`)
    await this.coordinator().idle()
    return { deploy, ms: Date.parse(deploy.finishedAt as string) - t0, t0 }
  }
}

/** The hand-written script's blue-green state: which port is live and which release each port runs. */
class ScriptSide {
  livePort: number | null = null
  readonly version = new Map<number, string>()

  constructor(
    private readonly o: {
      repo: string
      runId: string
      ports: [number, number]
      nginxDir: string
      upstreamFile: string
      upstreamName: string
    },
  ) {}

  name(port: number): string {
    return `bench-${this.o.runId}-script-${port}`
  }

  idlePort(): number {
    return this.livePort === this.o.ports[0] ? this.o.ports[1] : this.o.ports[0]
  }

  /** Runs bench/baseline-deploy.sh for `tag`; `ms` is spawn → exit, `marks` the script's step timestamps. */
  async deploy(tag: string): Promise<{ ms: number; marks: Record<string, number> }> {
    const port = this.idlePort()
    const env = {
      ...process.env,
      REPO: this.o.repo,
      TAG: tag,
      IMAGE: `bench-${this.o.runId}-script:${tag}`,
      NAME: this.name(port),
      PORT: String(port),
      LABEL: `deploy-agent-bench=${this.o.runId}`,
      UPSTREAM_FILE: this.o.upstreamFile,
      UPSTREAM_NAME: this.o.upstreamName,
      NGINX_DIR: this.o.nginxDir,
      OLD: this.livePort === null ? '' : this.name(this.livePort),
      HEALTH_INTERVAL: String(HEALTH.intervalMs / 1000),
      HEALTH_DEADLINE: String(HEALTH.deadlineSec),
      DRAIN: String(DRAIN_MS / 1000),
    }
    const t0 = Date.now()
    const { stdout, code, stderr } = await new Promise<{ stdout: string; stderr: string; code: number | null }>((resolve) => {
      const child = spawn('bash', [BASELINE_SCRIPT], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      let err = ''
      child.stdout.on('data', (d: Buffer) => (out += d.toString()))
      child.stderr.on('data', (d: Buffer) => (err += d.toString()))
      child.on('close', (c) => resolve({ stdout: out, stderr: err, code: c }))
    })
    const elapsed = Date.now() - t0
    if (code !== 0) throw new Error(`baseline-deploy.sh ${tag} exited with ${code}: ${stderr}`)
    const marks: Record<string, number> = {}
    for (const m of stdout.matchAll(/^mark (\S+) (\d+)$/gm)) marks[m[1] as string] = Number(m[2])
    this.livePort = port
    this.version.set(port, tag)
    return { ms: elapsed, marks }
  }
}

/** `docker-compose up -d --build` of the same Dockerfile, network_mode host, on one fixed port. */
class ComposeSide {
  private readonly file: string
  private readonly project: string

  constructor(
    private readonly dir: string,
    private readonly runId: string,
    private readonly port: number,
  ) {
    this.file = join(dir, 'docker-compose.yml')
    this.project = `bench${runId}`
  }

  async setUp(repo: string, tag: string): Promise<void> {
    const ctx = join(this.dir, 'ctx')
    await mkdir(ctx, { recursive: true })
    await run('sh', ['-c', 'git -C "$1" archive "$2" | tar -x -C "$3"', 'sh', repo, tag, ctx])
    const label = `deploy-agent-bench: "${this.runId}"`
    await writeFile(
      this.file,
      [
        'version: "3.8"',
        'services:',
        '  web:',
        '    build:',
        '      context: ./ctx',
        '      args:',
        '        VERSION: "${VERSION}"',
        '      labels:',
        `        ${label}`,
        `    image: "bench-${this.runId}-compose:latest"`,
        '    network_mode: host',
        '    init: true',
        '    restart: unless-stopped',
        '    environment:',
        `      PORT: "${this.port}"`,
        '    labels:',
        `      ${label}`,
        '',
      ].join('\n'),
    )
  }

  private compose(args: string[], version: string) {
    return run('docker-compose', ['--project-name', this.project, '--file', this.file, ...args], {
      env: { ...process.env, VERSION: version, DOCKER_BUILDKIT: '0', COMPOSE_DOCKER_CLI_BUILD: '0' },
      timeout: 180_000,
    })
  }

  /** `up -d --build` with VERSION=version; resolves with its wall time. */
  async up(version: string): Promise<number> {
    const t0 = Date.now()
    await this.compose(['up', '--detach', '--build'], version)
    return Date.now() - t0
  }

  async down(): Promise<void> {
    await this.compose(['down', '--rmi', 'all', '--remove-orphans'], 'none').catch(() => undefined)
  }
}

function sumLoads(results: RateLoadResult[]): RateLoadResult {
  const total: RateLoadResult = {
    sent: 0,
    ok: 0,
    non2xx: 0,
    statuses: {},
    socketErrors: 0,
    errors: {},
    retried: 0,
    served: {},
    durationMs: 0,
    maxLatencyMs: 0,
    failures: [],
  }
  const merge = (into: Record<string, number>, from: Record<string, number>) => {
    for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v
  }
  for (const r of results) {
    total.sent += r.sent
    total.ok += r.ok
    total.non2xx += r.non2xx
    total.socketErrors += r.socketErrors
    total.retried += r.retried
    total.durationMs += r.durationMs
    total.maxLatencyMs = Math.max(total.maxLatencyMs, r.maxLatencyMs)
    total.failures.push(...r.failures)
    merge(total.statuses, r.statuses)
    merge(total.errors, r.errors)
    merge(total.served, r.served)
  }
  return total
}

const loadValue = (r: RateLoadResult) => `${r.non2xx} non-2xx, ${r.socketErrors} socket errors (${r.retried} retried, ${fmt(r.sent)} sent)`

function describeLoad(r: RateLoadResult): string {
  const detail = (m: Record<string, number>) =>
    Object.keys(m).length === 0
      ? ''
      : ` (${Object.entries(m)
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ')})`
  return `${r.non2xx} non-2xx${detail(r.statuses)}, ${r.socketErrors} socket errors${detail(r.errors)} of ${fmt(r.sent)} requests, ${r.retried} retried, max latency ${fmt(r.maxLatencyMs)} ms`
}

/** Where failures fell: the state the agent's deploy (or rollback) was in when each failed request was fired and ended. */
function failuresByState(failures: RateLoadResult['failures'], deploys: Deploy[]): string {
  const stateAt = (at: number) => {
    const d = deploys.find((d) => Date.parse(d.createdAt) <= at && at <= Date.parse(d.finishedAt ?? d.createdAt))
    const state = d ? [...d.states].reverse().find((s) => Date.parse(s.at) <= at)?.state : undefined
    return d ? `${d.kind} ${state ?? '?'}` : 'outside the deploy (load padding)'
  }
  const counts: Record<string, number> = {}
  for (const f of failures) {
    const [fired, ended] = [stateAt(f.firedAt), stateAt(f.at)]
    const key = `${fired === ended ? fired : `fired in ${fired}, ended in ${ended}`}: ${f.what}`
    counts[key] = (counts[key] ?? 0) + 1
  }
  return Object.keys(counts).length === 0
    ? 'none'
    : Object.entries(counts)
        .map(([k, v]) => `${k} × ${v}`)
        .join('; ')
}

/** Runs `action` inside a window of steady load through `url`: 500 ms before, 500 ms after. */
async function underLoad<T>(url: string, action: () => Promise<T>): Promise<{ value: T; load: RateLoadResult }> {
  const load = rateLoad(url, { rate: RATE })
  await sleep(500)
  try {
    const value = await action()
    await sleep(500)
    return { value, load: await load.stop() }
  } catch (err) {
    await load.stop()
    throw err
  }
}

/** What nginx's error log says about its upstream since `from` (a byte offset), counted by kind. */
async function upstreamErrors(errorLog: string, from: number): Promise<string> {
  const text = (await readFile(errorLog)).subarray(from).toString('utf8')
  const counts: Record<string, number> = {}
  for (const m of text.matchAll(
    /\[error\] [^:]+: \*\d+ (.+?) while (connecting to|reading response header from) upstream.*?upstream: "http:\/\/[\d.]+:(\d+)/g,
  )) {
    const key = `${m[1] as string} (port ${m[3] as string})`
    counts[key] = (counts[key] ?? 0) + 1
  }
  return Object.keys(counts).length === 0
    ? 'no upstream errors'
    : Object.entries(counts)
        .map(([k, v]) => `${k} × ${v}`)
        .join('; ')
}

const logSize = (file: string) =>
  stat(file).then(
    (s) => s.size,
    () => 0,
  )

/** Median duration of each state of the agent's deploys (time from entering it to entering the next). */
export function phaseMedians(deploys: Deploy[]): string {
  const per = new Map<string, number[]>()
  for (const d of deploys) {
    for (let i = 0; i + 1 < d.states.length; i++) {
      const s = d.states[i] as { state: string; at: string }
      const next = d.states[i + 1] as { state: string; at: string }
      per.set(s.state, [...(per.get(s.state) ?? []), Date.parse(next.at) - Date.parse(s.at)])
    }
  }
  return [...per].map(([state, xs]) => `${state} ${fmt(median(xs))}`).join(', ')
}

function scriptMedians(marks: Array<Record<string, number>>): string {
  const steps = [
    ['build', 'start', 'built'],
    ['run', 'built', 'started'],
    ['health', 'started', 'healthy'],
    ['switch', 'healthy', 'switched'],
    ['drain+stop', 'switched', 'done'],
  ] as const
  return steps.map(([name, a, b]) => `${name} ${fmt(median(marks.map((m) => (m[b] ?? NaN) - (m[a] ?? NaN))))}`).join(', ')
}

async function removeImagesByLabel(label: string): Promise<void> {
  const { stdout } = await run('docker', ['images', '--quiet', '--filter', `label=${label}`])
  const ids = [...new Set(stdout.split('\n').filter(Boolean))]
  if (ids.length > 0) await run('docker', ['rmi', '--force', ...ids]).catch(() => undefined)
}

async function composeAvailable(): Promise<boolean> {
  return run('docker-compose', ['version', '--short']).then(
    () => true,
    () => false,
  )
}

interface Proxied {
  nginx: NginxInstance
  dir: string
  upstreamFile: string
  upstreamName: string
  pidFile: string
  errorLog: string
  url: string
}

interface Bench {
  runId: string
  app: string
  appBad: string
  dir: string
  repo: string
  agentTags: string[]
  scriptTags: string[]
  agent: AgentSide
  script: ScriptSide
  ngA: Proxied
  ngB: Proxied
  ngS: Proxied
  nginxFor(name: string, port: number): Promise<Proxied>
  composePorts: [number, number]
  rows: Row[]
  /** median agent deploy time of phase 1: the length of the control window */
  deployMs: number
  /** median bare nginx switch of phase 2 */
  bareMs: number
  compose?: ComposeSide
}

// ── 1. deploy wall time, warm layer cache ─────────────────────────────────────────────────────────────────────────
async function deployWallTime(b: Bench): Promise<void> {
  // Warm-up (untimed): the first release of each side, so there is a live release to replace and a warm cache.
  await b.agent.deploy(b.app, b.agentTags[0] as string)
  await b.script.deploy(b.scriptTags[0] as string)
  const agentMs: number[] = []
  const scriptMs: number[] = []
  const agentDeploys: Deploy[] = []
  const scriptMarks: Array<Record<string, number>> = []
  for (let i = 1; i <= RUNS; i++) {
    const a = await b.agent.deploy(b.app, b.agentTags[i] as string)
    agentMs.push(a.ms)
    agentDeploys.push(a.deploy)
    const s = await b.script.deploy(b.scriptTags[i] as string)
    scriptMs.push(s.ms)
    scriptMarks.push(s.marks)
  }
  // What the build did, from the agent's deploy logs: the cached steps and the time the label steps took.
  const labelMs: number[] = []
  let cached = 0
  let steps = 0
  for (const d of agentDeploys) {
    const lines = (await b.agent.log(d.id)).filter((l) => l.event === 'build' && typeof l.line === 'string') as Array<{
      line: string
      at: string
    }>
    steps = lines.filter((l) => /^Step \d+\/\d+ : /.test(l.line)).length
    cached = lines.filter((l) => /Using cache/.test(l.line)).length
    const firstLabel = lines.find((l) => /^Step \d+\/\d+ : LABEL /.test(l.line))
    const built = lines.find((l) => /^Successfully built/.test(l.line))
    if (firstLabel && built) labelMs.push(Date.parse(built.at) - Date.parse(firstLabel.at))
  }
  const aMed = median(agentMs)
  const sMed = median(scriptMs)
  b.deployMs = aMed
  b.rows.push({
    figure: `deploy wall time, cached layers (median of ${RUNS})`,
    value: ms(aMed),
    baseline: `${ms(sMed)} (hand-written script)`,
    ratio: `${fmt(aMed / sMed, 2)}×`,
    target: '≤ 1.10×',
    met: aMed / sMed <= 1.1,
  })
  deployNotes.push(
    `Deploy wall time: after one untimed warm-up deploy each, ${RUNS} new tags per side (v99.1.1… agent, v99.2.1… script; all on the commit of v1.0.0), alternating agent / script. ` +
      `Agent: signed POST (in-process inject) → the deploy record's finishedAt: RESOLVING (git fetch into its mirror), BUILDING (git archive → Engine API build), STARTING, VERIFYING, SWITCHING (upstream file, nginx -t, reload, reload confirmed by new worker pids, drain, docker stop old), OBSERVING, SUCCEEDED; the prune after a success is waited out between runs, untimed. ` +
      `Script (bench/baseline-deploy.sh): spawn → exit of git archive | docker build - → docker rm of the idle port's container → docker run --network host --init → curl /healthz until 2 passes → rewrite upstream → nginx -t → nginx -s reload → sleep → docker stop old. ` +
      `Same settings both sides: health probe every ${HEALTH.intervalMs} ms, healthy after ${HEALTH.healthyAfter}; no migration, no smoke check; ${DRAIN_MS} ms between the reload and stopping the old release (agent drainMs, script sleep); agent observe.seconds 0 (one probe after the switch; the script has no observe step). ` +
      `Layer cache: every release has the same files and a new VERSION build arg; in the agent's build log ${cached} of ${steps} steps say "Using cache" (ARG and both COPYs after FROM); RUN echo $VERSION, CMD and the label steps after it are built. Classic builder both sides (DOCKER_BUILDKIT=0 for the script). ` +
      `Both pass one build label (the agent: the commit); Docker 20.10's classic builder makes a LABEL step per label: median ${ms(median(labelMs))} of the agent's BUILDING.`,
  )
  deployNotes.push(
    `Deploy phases, median ms — agent: ${phaseMedians(agentDeploys)}; script: ${scriptMedians(scriptMarks)}. All runs — agent: ${agentMs.map((x) => fmt(x)).join(', ')} ms; script: ${scriptMs.map((x) => fmt(x)).join(', ')} ms.`,
  )
}

/** Starts the script's previous release again beside the live one (untimed); resolves with [live port, other port]. */
async function bothScriptReleasesRunning(b: Bench): Promise<[number, number]> {
  const live = b.script.livePort as number
  const other = b.script.idlePort() // where the previous release's stopped container is
  await run('docker', ['start', b.script.name(other)])
  for (
    let i = 0;
    !(await fetch(`http://127.0.0.1:${other}/healthz`).then(
      (r) => r.ok,
      () => false,
    ));
    i++
  ) {
    if (i > 200) throw new Error("the script's previous release did not answer after docker start")
    await sleep(50)
  }
  return [live, other]
}

/** The bare switch: rewrite the script's upstream file to `port` and `nginx -s reload`, nothing else. */
async function bareSwitch(b: Bench, port: number): Promise<void> {
  const [reload, ...reloadArgs] = b.ngS.nginx.reloadCommand as [string, ...string[]]
  await writeUpstreamFile(b.ngS.upstreamFile, b.ngS.upstreamName, port)
  await run(reload, reloadArgs)
}

// ── 2. manual rollback vs a bare nginx reload switch ──────────────────────────────────────────────────────────────
async function rollbackTime(b: Bench): Promise<void> {
  const traffic: number[] = []
  const done: number[] = []
  const rollbacks: Deploy[] = []
  for (let i = 0; i < RUNS; i++) {
    const watch = new ServedWatch(b.ngA.url)
    await sleep(100)
    try {
      const r = await b.agent.rollback(b.app)
      traffic.push((await watch.until(r.deploy.release ?? r.deploy.ref, r.t0)) - r.t0)
      done.push(r.ms)
      rollbacks.push(r.deploy)
    } finally {
      await watch.stop()
    }
  }
  // The bare switch: the script's previous release is started again (untimed), then the upstream is flipped between
  // the two running containers by rewriting the file and `nginx -s reload` alone.
  const [live, other] = await bothScriptReleasesRunning(b)
  const bare: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const port = i % 2 === 0 ? other : live
    const watch = new ServedWatch(b.ngS.url)
    await sleep(100)
    try {
      const t0 = Date.now()
      await bareSwitch(b, port)
      bare.push((await watch.until(b.script.version.get(port) as string, t0)) - t0)
    } finally {
      await watch.stop()
    }
  }
  const trafficMed = median(traffic)
  const doneMed = median(done)
  b.bareMs = median(bare)
  const baseline = `${ms(b.bareMs)} (bare rewrite + nginx -s reload)`
  b.rows.push(
    {
      figure: `manual rollback: request → traffic on old release (median of ${RUNS})`,
      value: ms(trafficMed),
      baseline,
      ratio: `${fmt(trafficMed / b.bareMs, 1)}×`,
      target: '< 2 s',
      met: trafficMed < 2000,
    },
    {
      figure: `manual rollback: request → SUCCEEDED (median of ${RUNS})`,
      value: ms(doneMed),
      baseline,
      ratio: `${fmt(doneMed / b.bareMs, 1)}×`,
      target: '< 2 s',
      met: doneMed < 2000,
    },
  )
  deployNotes.push(
    `Manual rollback: ${RUNS} signed POST …/rollback {} in a row, each to the other of the two newest releases, whose stopped container waits on the idle port (the agent's fast path: docker start, ${HEALTH.healthyAfter} health probes ${HEALTH.intervalMs} ms apart, nginx -t + reload + confirmation; SUCCEEDED also waits the ${DRAIN_MS} ms drain and docker stop of the release rolled away from). ` +
      `"Traffic on old release" = first answer of the old release to GET /version through nginx, polled on fresh connections every ~5 ms. Bare switch: both containers already running; upstream file rewritten + nginx -s reload; until nginx answers with the other release, same polling. ` +
      `Rollback phases, median ms: ${phaseMedians(rollbacks)}. All runs — traffic: ${traffic.map((x) => fmt(x)).join(', ')} ms; SUCCEEDED: ${done.map((x) => fmt(x)).join(', ')} ms; bare: ${bare.map((x) => fmt(x)).join(', ')} ms.`,
  )
}

// ── 3. failed requests under a steady 200 req/s ───────────────────────────────────────────────────────────────────
/** `n` host processes spinning on a CPU each (plain `node -e`, the default nice); stop() kills them. */
function burnCpus(n: number): { stop: () => void } {
  const burners = Array.from({ length: n }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }))
  return { stop: () => burners.forEach((c) => c.kill('SIGKILL')) }
}

async function failedRequests(b: Bench): Promise<void> {
  const burners = burnCpus(BURNERS)
  try {
    await failedRequestsLoaded(b)
  } finally {
    burners.stop()
  }
}

async function failedRequestsLoaded(b: Bench): Promise<void> {
  const errorsFrom = await logSize(b.ngA.errorLog)
  // Control: the same load on the same nginx and app for as long as a deploy takes, with nothing deployed.
  const controlMs = Number.isFinite(b.deployMs) ? b.deployMs : 6000
  const control = (await underLoad(b.ngA.url, () => sleep(controlMs))).load
  const deployLoads: RateLoadResult[] = []
  const rollbackLoads: RateLoadResult[] = []
  const deploys: Deploy[] = []
  for (let i = 0; i < LOAD_RUNS; i++) {
    const d = await underLoad(b.ngA.url, () => b.agent.deploy(b.app, b.agentTags[1 + RUNS + i] as string))
    deployLoads.push(d.load)
    deploys.push(d.value.deploy)
    const r = await underLoad(b.ngA.url, () => b.agent.rollback(b.app))
    rollbackLoads.push(r.load)
    deploys.push(r.value.deploy)
  }
  const agentUpstream = await upstreamErrors(b.ngA.errorLog, errorsFrom)
  const dl = sumLoads(deployLoads)
  const rl = sumLoads(rollbackLoads)

  // Reference: the same load through the script's nginx while its upstream is flipped LOAD_RUNS times between two
  // running containers by rewrite + reload alone (nothing started or stopped): what an nginx reload itself costs.
  const [live, other] = await bothScriptReleasesRunning(b)
  const scriptErrorsFrom = await logSize(b.ngS.errorLog)
  const reloads = (
    await underLoad(b.ngS.url, async () => {
      for (let i = 0; i < LOAD_RUNS; i++) {
        await sleep(1500)
        await bareSwitch(b, i % 2 === 0 ? other : live)
      }
      await sleep(1500)
    })
  ).load
  const reloadUpstream = await upstreamErrors(b.ngS.errorLog, scriptErrorsFrom)

  let composeLoad: RateLoadResult | null = null
  let composeNote = ''
  if (want('compose') && (await composeAvailable())) {
    const [nginxPort, appPort] = b.composePorts
    const ngC = await b.nginxFor('compose', nginxPort)
    await writeUpstreamFile(ngC.upstreamFile, ngC.upstreamName, appPort)
    const [reload, ...reloadArgs] = ngC.nginx.reloadCommand as [string, ...string[]]
    await run(reload, reloadArgs)
    b.compose = new ComposeSide(join(b.dir, 'compose'), b.runId, appPort)
    await b.compose.setUp(b.repo, SAMPLE_TAGS.good)
    await b.compose.up('v99.3.0') // untimed first start
    const composeFrom = await logSize(ngC.errorLog)
    const loads: RateLoadResult[] = []
    const upMs: number[] = []
    const outage: number[] = []
    for (let i = 1; i <= LOAD_RUNS; i++) {
      const version = `v99.3.${i}`
      const watch = new ServedWatch(ngC.url)
      try {
        const { value, load } = await underLoad(ngC.url, async () => {
          const t0 = Date.now()
          const took = await b.compose!.up(version)
          await watch.until(version, t0) // until the new release answers through nginx
          return took
        })
        upMs.push(value)
        loads.push(load)
        const failedAt = load.failures.map((f) => f.at)
        outage.push(failedAt.length === 0 ? 0 : Math.max(...failedAt) - Math.min(...failedAt))
      } finally {
        await watch.stop()
      }
    }
    composeLoad = sumLoads(loads)
    composeNote =
      ` docker-compose, ${LOAD_RUNS} × \`up -d --build\` with a new VERSION build arg (same Dockerfile and context, network_mode host, init, restart unless-stopped, one port behind its own nginx, classic builder): ${describeLoad(composeLoad)}; served ${JSON.stringify(composeLoad.served)}; ` +
      `first to last failure per run ${outage.map((x) => fmt(x)).join(', ')} ms; up wall time ${upMs.map((x) => fmt(x)).join(', ')} ms; its nginx: ${await upstreamErrors(ngC.errorLog, composeFrom)}.`
  } else if (want('compose')) {
    composeNote = ' docker-compose is not installed: the compose baseline was not run (Debian package docker-compose).'
  }
  const baseline = composeLoad ? `compose: ${loadValue(composeLoad)}` : 'compose not run'
  b.rows.push(
    {
      figure: `failed requests at ${RATE} req/s during ${LOAD_RUNS} agent deploys`,
      value: loadValue(dl),
      baseline,
      ratio: '—',
      target: '0 and 0',
      met: dl.non2xx === 0 && dl.socketErrors === 0,
    },
    {
      figure: `failed requests at ${RATE} req/s during ${LOAD_RUNS} agent rollbacks`,
      value: loadValue(rl),
      baseline,
      ratio: '—',
      target: '0 and 0',
      met: rl.non2xx === 0 && rl.socketErrors === 0,
    },
    {
      figure: `reference: ${RATE} req/s for ${fmt(controlMs / 1000, 1)} s, nothing deployed`,
      value: loadValue(control),
      baseline: '—',
      ratio: '—',
      target: '—',
      met: null,
    },
    {
      figure: `reference: ${RATE} req/s during ${LOAD_RUNS} bare nginx reloads between two running releases`,
      value: loadValue(reloads),
      baseline: '—',
      ratio: '—',
      target: '—',
      met: null,
    },
  )
  deployNotes.push(
    `${BURNERS > 0 ? `With ${BURNERS} CPU-burning host processes (\`node -e 'for (;;) {}'\`, default nice) running through phase 3. ` : ''}Load: bench/load.ts, an open-loop client firing GET /version through nginx at a fixed ${RATE} req/s (keep-alive agent, ≤ 32 sockets, 5 s timeout) from 500 ms before the request until 500 ms after its end (compose: after the new release answers through nginx). ` +
      `Like test/helpers/load.ts it sends a request again when it fails on a reused keep-alive connection before any answer (an idle connection closed by nginx's old workers at a reload), counted as "retried"; every other error is a socket error; non-2xx answers are counted apart. ` +
      `Reference with nothing deployed: ${describeLoad(control)}. Agent deploys: ${describeLoad(dl)}; served ${JSON.stringify(dl.served)}. Agent rollbacks: ${describeLoad(rl)}; served ${JSON.stringify(rl.served)}. ` +
      `Agent failures by the state the deploy or rollback was in when the request ended: ${failuresByState([...dl.failures, ...rl.failures], deploys)}. Agent's nginx over the reference, deploys and rollbacks: ${agentUpstream}. ` +
      `Bare reloads (script's nginx, both releases running, ${LOAD_RUNS} switches 1.5 s apart): ${describeLoad(reloads)}; failures ${reloads.failures.map((f) => `${f.what} ${fmt(f.at - f.firedAt)} ms after firing`).join(', ') || 'none'}; its nginx: ${reloadUpstream}.` +
      composeNote,
  )
}

// ── 4. a release that breaks after the switch ─────────────────────────────────────────────────────────────────────
async function badRelease(b: Bench): Promise<void> {
  await b.agent.deploy(b.appBad, SAMPLE_TAGS.good)
  const fromFirst: number[] = []
  const fromThreshold: number[] = []
  const fromHealthFail: number[] = []
  for (let i = 0; i < BAD_RUNS; i++) {
    const watch = new ServedWatch(b.ngB.url)
    try {
      const { deploy } = await b.agent.deploy(b.appBad, SAMPLE_TAGS.failsAfterSwitch, 'ROLLED_BACK')
      if (deploy.error?.code !== 'observe_failed') throw new Error(`the bad release ended with ${JSON.stringify(deploy.error)}`)
      const log = await b.agent.log(deploy.id)
      const failed = log.filter((l) => l.event === 'observe' && l.ok === false)
      const first = Date.parse(failed[0]?.at as string)
      const threshold = Date.parse(failed.find((l) => l.failures === OBSERVE_BAD.maxFailures + 1)?.at as string)
      const started = Date.parse(log.find((l) => l.event === 'started')?.at as string)
      // Back = the first answer of the old release after the bad one answered for the last time (right after a
      // reload the old workers may still answer for a moment, which is not the rollback).
      const lastBad = [...watch.changes].reverse().find((c) => c.version === SAMPLE_TAGS.failsAfterSwitch)
      if (!lastBad) throw new Error('the bad release never answered through nginx')
      const back = await watch.until(SAMPLE_TAGS.good, lastBad.at)
      fromFirst.push(back - first)
      fromThreshold.push(back - threshold)
      fromHealthFail.push(back - (started + FAILS_AFTER_SEC * 1000))
    } finally {
      await watch.stop()
    }
  }
  const firstMed = median(fromFirst)
  const thrMed = median(fromThreshold)
  const baseline = Number.isFinite(b.bareMs) ? `${ms(b.bareMs)} (bare switch)` : '—'
  const ratio = (x: number) => (Number.isFinite(b.bareMs) ? `${fmt(x / b.bareMs, 1)}×` : '—')
  b.rows.push(
    {
      figure: `bad release: first failed observe probe → old release served (median of ${BAD_RUNS})`,
      value: ms(firstMed),
      baseline,
      ratio: ratio(firstMed),
      target: '—',
      met: null,
    },
    {
      figure: `bad release: observe threshold → old release served (median of ${BAD_RUNS})`,
      value: ms(thrMed),
      baseline,
      ratio: ratio(thrMed),
      target: '< 5 s',
      met: thrMed < 5000,
    },
  )
  deployNotes.push(
    `Bad release: ${BAD_RUNS} deploys of ${SAMPLE_TAGS.failsAfterSwitch} (stops answering /healthz ${FAILS_AFTER_SEC} s after start) over ${SAMPLE_TAGS.good}, on a second app with observe { seconds: ${OBSERVE_BAD.seconds}, intervalMs: ${OBSERVE_BAD.intervalMs}, maxFailures: ${OBSERVE_BAD.maxFailures} } (same health and drain settings); each ended ROLLED_BACK / observe_failed. ` +
      `Measured from the deploy log's failed observe probes (the first; the threshold = failed probe ${OBSERVE_BAD.maxFailures + 1}) to the first answer of ${SAMPLE_TAGS.good} through nginx after the last answer of ${SAMPLE_TAGS.failsAfterSwitch} (fresh connection every ~5 ms). ` +
      `The rollback revives the stopped old container, verifies it (${HEALTH.healthyAfter} probes), switches nginx. All runs — from first failure: ${fromFirst.map((x) => fmt(x)).join(', ')} ms; from threshold: ${fromThreshold.map((x) => fmt(x)).join(', ')} ms; from the candidate's start + ${FAILS_AFTER_SEC} s (when its health starts failing): ${fromHealthFail.map((x) => fmt(x)).join(', ')} ms.`,
  )
}

export async function benchDeploy(): Promise<Row[]> {
  if (!(await dockerAvailable())) {
    deployNotes.push('Deploy figures skipped: no Docker daemon reachable.')
    return [{ figure: 'deploy figures', value: 'skipped (no Docker)', baseline: '—', ratio: '—', target: '—', met: null }]
  }
  await ensureBaseImage()
  const runId = randomBytes(3).toString('hex')
  const app = `bench-${runId}`
  const appBad = `bench-${runId}-bad`
  const dir = await mkdtemp(join(tmpdir(), 'deploy-agent-bench-deploy-'))
  const nginxes: NginxInstance[] = []
  let agent: TestAgent | undefined
  let bench: Bench | undefined
  const load = (when: string) =>
    `${when} ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' / ')}`
  const loadBefore = load('before')
  try {
    const repo = await makeSampleRepo(join(dir, 'repo'))
    // New tags on the commit of v1.0.0: every deploy is a new release (new image tag, new VERSION build arg) of the
    // same files, so the COPY layers come from the cache and the RUN layer (`echo $VERSION`) is built — the same work
    // for each side, as each side has its own tag names and never reuses the other's RUN layer.
    const goodCommit = repo.tags[SAMPLE_TAGS.good] as string
    const agentTags = Array.from({ length: 1 + RUNS + LOAD_RUNS }, (_, i) => `v99.1.${i}`)
    const scriptTags = Array.from({ length: 1 + RUNS }, (_, i) => `v99.2.${i}`)
    for (const tag of [...agentTags, ...scriptTags]) {
      if (tag in repo.tags) throw new Error(`the sample repo already has tag ${tag}; pick other bench tag names`)
      await run('git', ['-C', repo.path, 'tag', tag, goodCommit])
    }

    const ports = await freePorts(11)
    const port = (i: number) => ports[i] as number
    const nginxFor = async (name: string, listen: number): Promise<Proxied> => {
      const d = join(dir, `nginx-${name}`)
      const upstreamFile = join(d, 'upstream.conf')
      const upstreamName = `bench_${name}`
      await mkdir(d, { recursive: true })
      const nginx = await startNginx(d, { port: listen, upstreamFile, upstreamName })
      nginxes.push(nginx)
      return {
        nginx,
        dir: d,
        upstreamFile,
        upstreamName,
        pidFile: join(d, 'nginx.pid'),
        errorLog: join(d, 'error.log'),
        url: `http://127.0.0.1:${listen}/version`,
      }
    }
    const ngA = await nginxFor('agent', port(0))
    const ngB = await nginxFor('bad', port(3))
    const ngS = await nginxFor('script', port(6))
    const proxy = (n: Proxied) => ({
      upstreamFile: n.upstreamFile,
      upstreamName: n.upstreamName,
      test: n.nginx.testCommand,
      reload: n.nginx.reloadCommand,
      pidFile: n.pidFile,
      drainMs: DRAIN_MS,
    })
    let coordinator: DeployCoordinator | undefined
    agent = await buildTestAgent(join(dir, 'agent'), {
      extra: {
        apps: {
          [app]: {
            repo: repo.path,
            health: HEALTH,
            observe: OBSERVE_OFF,
            keepReleases: 3,
            envs: { [ENV]: { ref: 'tag:v*', ports: [port(1), port(2)], proxy: proxy(ngA) } },
          },
          [appBad]: {
            repo: repo.path,
            health: HEALTH,
            observe: OBSERVE_BAD,
            keepReleases: 3,
            envs: { [ENV]: { ref: 'tag:v*', ports: [port(4), port(5)], proxy: proxy(ngB) } },
          },
        },
      },
      deployments: async (config, deploys) => (coordinator = await assembleDeploys(config, deploys, createLogger({ level: 'silent' }))),
    })
    bench = {
      runId,
      app,
      appBad,
      dir,
      repo: repo.path,
      agentTags,
      scriptTags,
      agent: new AgentSide(agent, () => coordinator as DeployCoordinator),
      script: new ScriptSide({
        repo: repo.path,
        runId,
        ports: [port(7), port(8)],
        nginxDir: ngS.dir,
        upstreamFile: ngS.upstreamFile,
        upstreamName: ngS.upstreamName,
      }),
      ngA,
      ngB,
      ngS,
      nginxFor,
      composePorts: [port(9), port(10)],
      rows: [],
      deployMs: NaN,
      bareMs: NaN,
    }
    await deployWallTime(bench)
    if (want('2')) await rollbackTime(bench)
    if (want('3')) await failedRequests(bench)
    if (want('4')) await badRelease(bench)
    deployNotes.push(
      `Machine: ${cpus().length} CPUs; load average (1 / 5 / 15 min) ${loadBefore}, ${load('after')} — other work on the machine shares the CPUs with the builds, the app and the load.`,
    )
    return bench.rows
  } finally {
    await agent?.close().catch(() => undefined)
    await bench?.compose?.down()
    for (const name of [app, appBad]) await removeAppFromDocker(name).catch(() => undefined)
    await removeContainersByLabel(`deploy-agent-bench=${runId}`).catch(() => undefined)
    await removeImagesByLabel(`deploy-agent-bench=${runId}`)
    for (const nginx of nginxes) await nginx.stop().catch(() => undefined)
    if (process.env.BENCH_DEPLOY_KEEP === '1') console.error(`bench/deploy.ts: kept ${dir}`)
    else await rm(dir, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rows = await benchDeploy()
  console.log(`${formatRows(rows)}\n\n${deployNotes.map((n) => `- ${n}`).join('\n')}`)
}
