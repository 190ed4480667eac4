// Status throughput: `GET /v1/status` with the status token against the real `deploy-agent serve` process on
// loopback, driven by autocannon, idle and while a real deploy of the sample app runs in a loop; the baseline is a
// private nginx serving the same bytes as a static file on loopback, under the same autocannon settings and the same
// conditions (idle / during the deploy loop), in the same run.
// Standalone: `node --import tsx bench/status.ts` prints its rows. Knobs: BENCH_STATUS_SECONDS (per measurement),
// BENCH_STATUS_NODE_ARGS (extra node flags for the agent, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"),
// BENCH_STATUS_DEPLOY=0 (idle figures only).
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import autocannon, { type Result } from 'autocannon'
import { stringify } from 'yaml'
import { signRequest } from '../agent/auth/canonical.js'
import { AUDIENCE, testConfigDocument, writeTestKeys, type TestKeys } from '../test/helpers/agent.js'
import { dockerAvailable, ensureBaseImage, removeAppFromDocker } from '../test/helpers/docker.js'
import { startNginx, type NginxInstance } from '../test/helpers/nginx.js'
import { freePorts } from '../test/helpers/ports.js'
import { makeSampleRepo, SAMPLE_TAGS } from '../test/helpers/sample-app.js'
import { fmt, formatRows, installedNodeOptions, type Row } from './lib.js'

const BIN = fileURLToPath(new URL('../bin/deploy-agent.js', import.meta.url))
const SECONDS = Math.max(1, Number(process.env.BENCH_STATUS_SECONDS ?? 5))
const WARM_UP_SECONDS = 2
/** Same for both sides: 10 keep-alive connections, no pipelining (a dashboard or monitoring fleet, not a pipeliner). */
const LOAD = { connections: 10, pipelining: 1 }
const TARGET_RPS = 15_000
const TARGET_P99_MS = 10

export const statusNotes: string[] = []

interface Served {
  child: ChildProcess
  url: string
  stop(): Promise<void>
}

/** `deploy-agent serve` as a child (bin/deploy-agent.js, as an operator runs it), its log in `logFile`. */
async function serveAgent(configPath: string, url: string, logFile: string): Promise<Served> {
  const log = await open(logFile, 'a')
  const nodeArgs = process.env.BENCH_STATUS_NODE_ARGS?.split(' ').filter(Boolean) ?? []
  // As installed: with the systemd unit's NODE_OPTIONS.
  const env = { ...process.env, NODE_OPTIONS: await installedNodeOptions() }
  const child = spawn(process.execPath, [...nodeArgs, BIN, 'serve', '--config', configPath], { stdio: ['ignore', log.fd, log.fd], env })
  const exited = new Promise<void>((res) => child.once('exit', () => res()))
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    await exited
    clearTimeout(timer)
    await log.close()
  }
  const deadline = Date.now() + 30_000
  while (
    !(await fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    ))
  ) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop()
      throw new Error(`deploy-agent serve did not answer /healthz: ${(await readFile(logFile, 'utf8')).slice(-2000)}`)
    }
    await sleep(50)
  }
  return { child, url, stop }
}

/** CPU seconds (user + system) a process and its live descendants have used so far, from /proc. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null)
  if (stat === null) return 0
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const own = (Number(fields[11]) + Number(fields[12])) / 100 // utime, stime in clock ticks (USER_HZ = 100)
  const children = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')
  let sum = own
  for (const child of children.split(' ').filter(Boolean)) sum += await cpuSeconds(Number(child))
  return sum
}

interface Measured extends Result {
  /** CPU µs the server spent per answered request: what the figure would be on an otherwise idle core. */
  cpuUsPerRequest: number
}

async function cannon(url: string, headers: Record<string, string>, serverPid: number, duration = SECONDS): Promise<Measured> {
  const cpuBefore = await cpuSeconds(serverPid)
  const result = await autocannon({ url, headers, duration, ...LOAD })
  const cpuUsPerRequest = (((await cpuSeconds(serverPid)) - cpuBefore) * 1e6) / result.requests.total
  // A stray socket error is reported in the notes; more than a handful means the figure measures something broken.
  if (result.non2xx > 0 || result.errors > 10)
    throw new Error(`${url}: ${result.non2xx} non-2xx answers, ${result.errors} errors under load`)
  return { ...result, cpuUsPerRequest }
}

/** Signed deploys of two releases in turn, each waited out, until stopped; counts what ended how. */
function deployLoop(url: string, keys: TestKeys, app: string, env: string) {
  let stopped = false
  const ended: Record<string, number> = {}
  const states: Record<string, number> = {}
  const tags = [SAMPLE_TAGS.good, SAMPLE_TAGS.good2]
  let running: string | null = null
  const token = { authorization: `Bearer ${keys.statusToken}` }
  const loop = (async () => {
    for (let i = 0; !stopped; i++) {
      const path = `/v1/apps/${app}/envs/${env}/deploys`
      const body = JSON.stringify({ ref: tags[i % 2] })
      const headers = signRequest({
        keyId: keys.ed25519.id,
        key: { alg: 'ed25519', privateKey: keys.ed25519.privateKey },
        audience: AUDIENCE,
        method: 'POST',
        path,
        body,
      })
      const res = await fetch(`${url}${path}`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body })
      if (res.status !== 202) throw new Error(`deploy POST: ${res.status} ${await res.text()}`)
      const { id } = (await res.json()) as { id: string }
      running = id
      for (;;) {
        const deploy = (await (await fetch(`${url}/v1/deploys/${id}`, { headers: token })).json()) as { state: string; finishedAt?: string }
        if (deploy.finishedAt) {
          ended[deploy.state] = (ended[deploy.state] ?? 0) + 1
          break
        }
        states[deploy.state] = (states[deploy.state] ?? 0) + 1
        await sleep(100)
      }
      running = null
    }
  })()
  return {
    ended,
    /** The states seen by the loop's own polls (every 100 ms), so the load demonstrably overlapped every phase. */
    states,
    /** Waits until a deploy is in flight (its first poll has seen it unfinished). */
    async started(): Promise<void> {
      while (running === null || Object.keys(states).length === 0) await sleep(20)
    },
    async stop(): Promise<void> {
      stopped = true
      await loop
    },
  }
}

const rps = (r: Measured) => r.requests.total / r.duration
const describe = (r: Measured) =>
  `${fmt(rps(r))} req/s, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, max ${r.latency.max} ms, ${r.errors} socket errors, ${fmt(r.cpuUsPerRequest)} µs CPU per request`

export async function benchStatus(): Promise<Row[]> {
  statusNotes.length = 0
  const dir = await mkdtemp(join(tmpdir(), 'deploy-agent-bench-status-'))
  const app = `bench-status-${process.pid}`
  const nginxes: NginxInstance[] = []
  let agent: Served | undefined
  try {
    const withDocker = process.env.BENCH_STATUS_DEPLOY !== '0' && (await dockerAvailable())
    const [agentPort, staticPort, appPort, blue, green] = (await freePorts(5)) as [number, number, number, number, number]
    const keys = await writeTestKeys(dir)
    const apps: Record<string, unknown> = {}
    if (withDocker) {
      await ensureBaseImage()
      const repo = await makeSampleRepo(join(dir, 'repo'))
      const nginxDir = join(dir, 'nginx-app')
      const upstreamFile = join(nginxDir, 'upstream.conf')
      nginxes.push(await startNginx(nginxDir, { port: appPort, upstreamFile, upstreamName: 'bench_status_app' }))
      const nginx = nginxes[0] as NginxInstance
      apps[app] = {
        repo: repo.path,
        health: { path: '/healthz', intervalMs: 100, timeoutMs: 1000, healthyAfter: 2, deadlineSec: 10 },
        observe: { seconds: 1, intervalMs: 200, maxFailures: 2 },
        keepReleases: 3,
        envs: {
          production: {
            ref: 'tag:v*',
            ports: [blue, green],
            proxy: {
              upstreamFile,
              upstreamName: 'bench_status_app',
              test: nginx.testCommand,
              reload: nginx.reloadCommand,
              pidFile: join(nginxDir, 'nginx.pid'),
              drainMs: 300,
            },
          },
        },
      }
    }
    const configPath = join(dir, 'agent.yaml')
    await writeFile(configPath, stringify(testConfigDocument(dir, { listen: { host: '127.0.0.1', port: agentPort }, apps })))
    const agentUrl = `http://127.0.0.1:${agentPort}`
    agent = await serveAgent(configPath, agentUrl, join(dir, 'agent.log'))
    const statusUrl = `${agentUrl}/v1/status`
    const token = { authorization: `Bearer ${keys.statusToken}` }

    // The baseline serves the very bytes the agent answers, as a static file.
    const staticDir = join(dir, 'static')
    await mkdir(staticDir)
    const body = await (await fetch(statusUrl, { headers: token })).text()
    await writeFile(join(staticDir, 'status.json'), body)
    const sNginxDir = join(dir, 'nginx-static')
    nginxes.push(
      await startNginx(sNginxDir, {
        port: staticPort,
        upstreamFile: join(sNginxDir, 'upstream.conf'),
        upstreamName: 'bench_status_none',
        staticDir,
      }),
    )
    const staticUrl = `http://127.0.0.1:${staticPort}/static/status.json`
    if ((await (await fetch(staticUrl)).text()) !== body) throw new Error('nginx does not serve the status bytes')

    const loadBefore = loadavg()
    // Warm-up (JIT: the agent's first seconds after start are several times slower), untimed; then agent, nginx.
    const agentPid = agent.child.pid as number
    const nginxPid = Number(await readFile(join(sNginxDir, 'nginx.pid'), 'utf8'))
    await cannon(statusUrl, token, agentPid, WARM_UP_SECONDS)
    await cannon(staticUrl, {}, nginxPid, WARM_UP_SECONDS)
    const idleAgent = await cannon(statusUrl, token, agentPid)
    const idleNginx = await cannon(staticUrl, {}, nginxPid)

    let busyAgent: Measured | undefined
    let busyNginx: Measured | undefined
    let loop: ReturnType<typeof deployLoop> | undefined
    if (withDocker) {
      loop = deployLoop(agentUrl, keys, app, 'production')
      try {
        await loop.started()
        busyAgent = await cannon(statusUrl, token, agentPid)
        busyNginx = await cannon(staticUrl, {}, nginxPid)
      } finally {
        await loop.stop()
      }
    }
    const loadAfter = loadavg()

    const row = (figure: string, agentR: Measured, nginxR: Measured): Row[] => [
      {
        figure: `GET /v1/status req/s, ${figure}`,
        value: fmt(rps(agentR)),
        baseline: `${fmt(rps(nginxR))} (nginx static file)`,
        ratio: `${fmt(rps(agentR) / rps(nginxR), 2)}×`,
        target: `≥ ${fmt(TARGET_RPS)}/s`,
        met: rps(agentR) >= TARGET_RPS,
      },
      {
        figure: `GET /v1/status p99 latency, ${figure}`,
        value: `${agentR.latency.p99} ms`,
        baseline: `${nginxR.latency.p99} ms (nginx static file)`,
        ratio: '—',
        target: `< ${TARGET_P99_MS} ms`,
        met: agentR.latency.p99 < TARGET_P99_MS,
      },
    ]
    const rows = [...row('idle', idleAgent, idleNginx)]
    if (busyAgent && busyNginx && loop) rows.push(...row('during a deploy loop', busyAgent, busyNginx))
    else
      rows.push({
        figure: 'GET /v1/status during a deploy',
        value: 'skipped (no Docker)',
        baseline: '—',
        ratio: '—',
        target: '—',
        met: null,
      })

    statusNotes.push(
      `Status: autocannon in the bench process, ${LOAD.connections} keep-alive connections, pipelining ${LOAD.pipelining}, ${SECONDS} s per measurement after a ${WARM_UP_SECONDS} s untimed warm-up per side; agent then nginx (during the loop too: the two windows see different deploy phases). CPU per request = the server's user + system CPU time (/proc, with its children) over the window ÷ requests answered. Agent: \`node bin/deploy-agent.js serve\` (a child process with the systemd unit's NODE_OPTIONS; its pino log, info level, to a file), \`GET /v1/status\` with \`Authorization: Bearer <status token>\`, ${withDocker ? 'one app with one env' : 'no apps (no Docker)'}, ${fmt(Buffer.byteLength(body))}-byte answer. Baseline: a private nginx (test/helpers/nginx.ts: 1 worker, access log on) serving those bytes as a static file. ` +
        `Idle — agent: ${describe(idleAgent)}; nginx: ${describe(idleNginx)}.` +
        (busyAgent && busyNginx && loop
          ? ` During the deploy loop (signed deploys of ${SAMPLE_TAGS.good} and ${SAMPLE_TAGS.good2} in turn, each polled to its end, through the Docker build, health checks, nginx switch and observe window; ${JSON.stringify(loop.ended)} ended while measuring, states seen ${JSON.stringify(loop.states)}) — agent: ${describe(busyAgent)}; nginx: ${describe(busyNginx)}.`
          : '') +
        ` Machine: ${cpus().length} CPUs shared by autocannon, the server measured and (during the loop) Docker builds and the app; load average before ${loadBefore.map((x) => fmt(x, 1)).join(' / ')}, after ${loadAfter.map((x) => fmt(x, 1)).join(' / ')}.`,
    )
    return rows
  } finally {
    await agent?.stop().catch(() => undefined)
    await removeAppFromDocker(app).catch(() => undefined)
    for (const nginx of nginxes) await nginx.stop().catch(() => undefined)
    await rm(dir, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rows = await benchStatus()
  console.log(`${formatRows(rows)}\n\n${statusNotes.map((n) => `- ${n}`).join('\n')}`)
}
