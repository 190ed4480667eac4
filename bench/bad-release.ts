// A bad release caught from real traffic (issue 14, "Done when"), on the real engines (Docker, git, nginx):
// a release whose `/` starts answering 500 two seconds after it gets its first request through nginx, under a
// 200 req/s open-loop load, with observe { seconds: 30, intervalMs: 1000, maxFailures: 3 }, in three configurations,
// alternating run by run:
//   A. today: no warm standby, no access log — probes only. With /healthz green the release is never rolled back;
//      the variant A' whose health check fails too is what the probes can catch;
//   B. warm standby + probes only (health failing too);
//   C. warm standby + proxy.accessLog (observe.maxErrorRate 0.05, minRequests 20), health green;
//   D. as C, and the site retries on the warm standby (nginx's backup while OBSERVING) what the release fails:
//      `proxy_next_upstream error timeout http_500 http_502 http_503 http_504;`. The client sees no 500, so the
//      release's first bad answer is read from nginx's access log.
// Then a manual rollback asked for during OBSERVING (warm standby) vs a bare upstream rewrite + nginx -s reload
// between two running containers, alternating.
// The agent is built in-process as in bench/deploy.ts, with the access-log watch wired as `deploy-agent serve` does.
// Alone: `node --import tsx bench/bad-release.ts` (prints the rows and notes; BENCH_BAD_RUNS=n for fewer runs,
// BENCH_BAD_ONLY=rollback for the manual rollback part alone).
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { assembleDeploys } from '../agent/deploy/assemble.js'
import type { DeployCoordinator } from '../agent/deploy/coordinator.js'
import { parseAccessLine } from '../agent/health/traffic.js'
import { TrafficWatch } from '../agent/observability/env-traffic.js'
import { createLogger } from '../agent/observability/logger.js'
import type { Deploy } from '../agent/store/deploys.js'
import { buildTestAgent, signedInject, type TestAgent } from '../test/helpers/agent.js'
import { BASE_IMAGE, dockerAvailable, ensureBaseImage, removeAppFromDocker, removeContainersByLabel } from '../test/helpers/docker.js'
import { makeGitRepo } from '../test/helpers/git.js'
import { startNginx, writeUpstreamFile, type NginxInstance } from '../test/helpers/nginx.js'
import { freePorts } from '../test/helpers/ports.js'
import { ServedWatch } from './deploy.js'
import { fmt, formatRows, type Row } from './lib.js'
import { rateLoad } from './load.js'

const run = promisify(execFile)

const RUNS = Math.max(1, Number(process.env.BENCH_BAD_RUNS ?? 3))
/** BENCH_BAD_ONLY=rollback: only the manual rollback in the window vs the bare switch (the bad deploys skipped). */
const ONLY_ROLLBACK = process.env.BENCH_BAD_ONLY === 'rollback'
const RATE = 200
const ENV = 'production'
/** The bad release answers 500 on `/` this long after its first request through nginx. */
const BAD_AFTER_SEC = 2
const OBSERVE = { seconds: 30, intervalMs: 1000, maxFailures: 3 }
const HEALTH = { path: '/cgi-bin/health', intervalMs: 100, timeoutMs: 1000, healthyAfter: 2, deadlineSec: 10 }
const DRAIN_MS = 500

const GOOD = 'v9.0.0'
/** Same files as GOOD: the release a manual rollback in the window rolls away from. */
const GOOD2 = 'v9.0.1'
/** `/` answers 500 after BAD_AFTER_SEC; its health check stays green. */
const BAD = 'v9.1.0'
/** The same, and its health check fails from then on too. */
const BAD_HEALTH = 'v9.2.0'

export const badReleaseNotes: string[] = []

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number
const ms = (n: number) => `${fmt(n)} ms`
const pct = (n: number) => `${fmt(n * 100, 1)} %`

// ── the app: busybox httpd; cgi scripts use shell builtins only, so 200 req/s of them stays cheap ───────────────
const ANSWER = (status: string, body: string) => `printf 'HTTP/1.0 ${status}\\r\\nContent-Type: text/plain\\r\\n\\r\\n%s\\n' "${body}"`
const HEALTH_OK = `#!/bin/sh\n${ANSWER('200 OK', 'ok')}\n`
const HEALTH_FAILING = `#!/bin/sh\nif [ -f /tmp/bad ]; then ${ANSWER('500 Internal Server Error', 'sick')}; else ${ANSWER('200 OK', 'ok')}; fi\n`
// `/` of a bad release (a directory without index.html → cgi-bin/index.cgi): its first request marks the switch.
const INDEX_BAD = [
  '#!/bin/sh',
  `if [ -f /tmp/bad ]; then ${ANSWER('500 Internal Server Error', 'boom')}; exit 0; fi`,
  '[ -f /tmp/first ] || : > /tmp/first',
  'read v < /www/version',
  ANSWER('200 OK', '$v'),
  '',
].join('\n')
const SERVE = 'exec httpd -f -p 127.0.0.1:$PORT -h /www'
// The markers are cleared at each start: a kept container started again begins good.
const SERVE_GOING_BAD = `rm -f /tmp/first /tmp/bad; httpd -p 127.0.0.1:$PORT -h /www; while [ ! -f /tmp/first ]; do sleep 0.05; done; sleep ${BAD_AFTER_SEC}; : > /tmp/bad; exec sleep 1000000`

function release(bad: 'no' | 'traffic' | 'traffic+health'): Record<string, string> {
  const going = bad !== 'no'
  return {
    Dockerfile: [
      `FROM ${BASE_IMAGE}`,
      'ARG VERSION',
      'COPY www /www',
      `RUN mkdir -p /tmp && echo "$VERSION" > /www/version && ${going ? 'rm -f /www/index.html' : 'echo "$VERSION" > /www/index.html'} && chmod 755 /www/cgi-bin/*`,
      `CMD ["sh", "-c", ${JSON.stringify(going ? SERVE_GOING_BAD : SERVE)}]`,
      '',
    ].join('\n'),
    'www/index.html': 'placeholder\n',
    'www/cgi-bin/health': bad === 'traffic+health' ? HEALTH_FAILING : HEALTH_OK,
    ...(going ? { 'www/cgi-bin/index.cgi': INDEX_BAD } : {}),
  }
}

interface Env {
  app: string
  nginx: NginxInstance
  url: string
  /** D: nginx's JSON access log, where the release's 500s retried on the standby are seen. */
  accessLog?: string
}

interface Answer {
  firedAt: number
  at: number
  status: number
  body: string
}

/** One bad deploy under load: what the load saw, cut at the bad window. */
interface BadRun {
  state: string
  code: string | undefined
  /** requests failed from the first bad answer to the last failed one */
  failed: number
  /** answers in that window */
  window: number
  /** its length */
  windowMs: number
  /** first bad answer → first answer of GOOD after the last bad one; null if GOOD never came back */
  backMs: number | null
  /** first bad answer → the deploy's ROLLING_BACK */
  detectMs: number | null
  /** first bad answer → the rollback's upstream switch (its `switched` log line) */
  switchMs: number | null
  /** D: the release's 500s nginx logged (each retried on the standby) */
  upstream500: number
  /** failures outside the bad window (during the switch) */
  other: number
  /** the deploy log from ROLLING_BACK on, ms after the first bad answer */
  events: string
}

class Driver {
  constructor(readonly agent: TestAgent) {}

  async post(url: string, body: object): Promise<string> {
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

  async waitFor(id: string, done: (d: Deploy) => boolean, timeoutMs = 120_000): Promise<Deploy> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const d = await this.get(id)
      if (done(d)) return d
      if (Date.now() > deadline) throw new Error(`deploy ${id} still ${d.state} after ${timeoutMs} ms`)
      await sleep(20)
    }
  }

  deploy(app: string, ref: string): Promise<string> {
    return this.post(`/v1/apps/${app}/envs/${ENV}/deploys`, { ref })
  }

  async deployed(app: string, ref: string, expect: Deploy['state'] = 'SUCCEEDED'): Promise<Deploy> {
    const d = await this.waitFor(await this.deploy(app, ref), (d) => d.finishedAt !== null)
    if (d.state !== expect) throw new Error(`${app}: deploy of ${ref} ended ${d.state}, expected ${expect}: ${JSON.stringify(d.error)}`)
    return d
  }

  /** The deploy log's entries from `from` on, as `event +ms` after `zero`. */
  async log(id: string): Promise<string> {
    const res = await this.agent.app.inject({
      url: `/v1/deploys/${id}/log`,
      headers: { authorization: `Bearer ${this.agent.keys.statusToken}` },
    })
    return res.body
  }

  async eventsAfter(id: string, from: number, zero: number): Promise<string> {
    return (await this.log(id))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { at: string; event?: string; state?: string; ok?: boolean })
      .filter((l) => Date.parse(l.at) >= from)
      .map((l) => `${l.event ?? l.state ?? '?'}${l.ok === false ? ' (failed)' : ''} +${fmt(Date.parse(l.at) - zero)}`)
      .join(', ')
  }

  async rollback(app: string, reason?: string): Promise<string> {
    return this.post(`/v1/apps/${app}/envs/${ENV}/rollback`, reason ? { reason } : {})
  }
}

const at = (d: Deploy, state: string) => Date.parse(d.states.find((s) => s.state === state)?.at ?? 'NaN')

/** The times (epoch ms, as nginx logged them) of the answers in which an upstream said 500, from `sinceMs` on. */
async function upstream500s(accessLog: string, sinceMs: number): Promise<number[]> {
  return (await readFile(accessLog, 'utf8'))
    .split('\n')
    .map(parseAccessLine)
    .filter((r) => r !== null && r.atMs >= sinceMs && r.upstreamStatus.split(/[,:]\s*/).some((s) => s.trim() === '500'))
    .map((r) => (r as { atMs: number }).atMs)
}

/** The rollback's `switched` line in the deploy log, epoch ms. */
async function rollbackSwitchAt(drv: Driver, id: string): Promise<number> {
  const line = (await drv.log(id))
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { at: string; event?: string; rollback?: boolean })
    .find((l) => l.event === 'switched' && l.rollback === true)
  return line ? Date.parse(line.at) : NaN
}

/** Deploys `ref` on `env` under RATE req/s through its nginx and cuts the answers at the bad window. */
async function badDeploy(drv: Driver, env: Env, ref: string): Promise<BadRun> {
  const answers: Answer[] = []
  const startedAt = Date.now()
  const load = rateLoad(env.url, { rate: RATE, onAnswer: (a) => answers.push(a) })
  let deploy: Deploy
  try {
    await sleep(500)
    deploy = await drv.waitFor(await drv.deploy(env.app, ref), (d) => d.finishedAt !== null)
    await sleep(1000)
  } finally {
    await load.stop()
  }
  answers.sort((a, b) => a.at - b.at)
  const bad = (a: Answer) => a.status !== 200
  const rollingBack = at(deploy, 'ROLLING_BACK')
  const switchedAt = await rollbackSwitchAt(drv, deploy.id)
  if (env.accessLog) return retriedRun(drv, deploy, answers, await upstream500s(env.accessLog, startedAt), rollingBack, switchedAt)
  const firstBad = answers.find((a) => a.status === 500)
  if (!firstBad) throw new Error(`${env.app}: ${ref} never answered 500 through nginx (deploy ${deploy.state})`)
  const lastBad = [...answers].reverse().find(bad) as Answer
  const inWindow = answers.filter((a) => a.at >= firstBad.at && a.at <= lastBad.at)
  const back = answers.find((a) => a.at > lastBad.at && a.status === 200 && a.body === GOOD)
  return {
    state: deploy.state,
    code: deploy.error?.code,
    failed: inWindow.filter(bad).length,
    window: inWindow.length,
    windowMs: lastBad.at - firstBad.at,
    backMs: back ? back.at - firstBad.at : null,
    detectMs: Number.isFinite(rollingBack) ? rollingBack - firstBad.at : null,
    switchMs: Number.isFinite(switchedAt) ? switchedAt - firstBad.at : null,
    upstream500: 0,
    other: answers.filter((a) => bad(a) && a.at < firstBad.at).length,
    events: Number.isFinite(rollingBack) ? await drv.eventsAfter(deploy.id, rollingBack - 1, firstBad.at) : '',
  }
}

/**
 * D: the client may see no 500 at all (the standby answered the very request the release failed), so the bad
 * window is the release's: from its first 500 in nginx's access log to its last one (or the last failed answer the
 * client saw, if later). Back: the client's first answer of GOOD from the first bad answer on.
 */
async function retriedRun(
  drv: Driver,
  deploy: Deploy,
  answers: Answer[],
  bad500s: number[],
  rollingBack: number,
  switchedAt: number,
): Promise<BadRun> {
  const first = bad500s[0]
  if (first === undefined) throw new Error(`${deploy.app}: the release never answered 500 through nginx (deploy ${deploy.state})`)
  const failedAt = answers.filter((a) => a.status !== 200 && a.at >= first).map((a) => a.at)
  const end = Math.max(bad500s.at(-1) as number, ...failedAt)
  const inWindow = answers.filter((a) => a.at >= first && a.at <= end)
  const back = answers.find((a) => a.at >= first && a.status === 200 && a.body === GOOD)
  return {
    state: deploy.state,
    code: deploy.error?.code,
    failed: inWindow.filter((a) => a.status !== 200).length,
    window: inWindow.length,
    windowMs: end - first,
    backMs: back ? back.at - first : null,
    detectMs: Number.isFinite(rollingBack) ? rollingBack - first : null,
    switchMs: Number.isFinite(switchedAt) ? switchedAt - first : null,
    upstream500: bad500s.length,
    other: answers.filter((a) => a.status !== 200 && a.at < first).length,
    events: Number.isFinite(rollingBack) ? await drv.eventsAfter(deploy.id, rollingBack - 1, first) : '',
  }
}

interface Config {
  key: string
  label: string
  env: Env
  ref: string
  runs: BadRun[]
}

const describeRuns = (runs: BadRun[]) =>
  runs
    .map(
      (r) =>
        `${r.state}${r.code ? `/${r.code}` : ''}: ${r.failed} of ${r.window} failed (${pct(r.failed / r.window)}) in ${ms(r.windowMs)}, back ${r.backMs === null ? 'never' : ms(r.backMs)}, ` +
        `ROLLING_BACK ${r.detectMs === null ? '—' : `${ms(r.detectMs)} after the first 500`}, rollback's switch ${r.switchMs === null ? '—' : ms(r.switchMs)}, ` +
        `${r.upstream500 > 0 ? `${r.upstream500} 500s of the release in nginx's access log (each retried on the standby), ` : ''}` +
        `${r.other} failed before the first 500${r.events ? ` (log: ${r.events})` : ''}`,
    )
    .join('; ')

/** Two plain containers behind their own nginx, switched by upstream rewrite + reload alone. */
async function bareSide(dir: string, runId: string, [listen, p1, p2]: [number, number, number]) {
  const d = join(dir, 'nginx-bare')
  await mkdir(d, { recursive: true })
  const upstreamFile = join(d, 'upstream.conf')
  const upstreamName = 'bench_bare'
  await writeUpstreamFile(upstreamFile, upstreamName, p1)
  const nginx = await startNginx(d, { port: listen, upstreamFile, upstreamName })
  for (const [port, version] of [
    [p1, 'bare-1'],
    [p2, 'bare-2'],
  ] as const) {
    const script = `mkdir -p /w && echo ${version} > /w/index.html && exec httpd -f -p 127.0.0.1:${port} -h /w`
    await run('docker', [
      'run',
      '-d',
      '--network',
      'host',
      '--init',
      '--label',
      `deploy-agent-bench=${runId}`,
      BASE_IMAGE,
      'sh',
      '-c',
      script,
    ])
    for (
      let i = 0;
      !(await fetch(`http://127.0.0.1:${port}/`).then(
        (r) => r.ok,
        () => false,
      ));
      i++
    ) {
      if (i > 200) throw new Error(`the bare container on ${port} did not answer`)
      await sleep(50)
    }
  }
  const [reload, ...reloadArgs] = nginx.reloadCommand as [string, ...string[]]
  const master = Number((await readFile(join(d, 'nginx.pid'), 'utf8')).trim())
  return {
    nginx,
    url: `http://127.0.0.1:${listen}/`,
    /**
     * Switches to the other container; answers ms from the rewrite to its first answer through nginx. `signal`:
     * the reload is a SIGHUP sent from here (what the agent does), not `nginx -s reload` (what a script does).
     */
    async switchTo(port: number, version: string, watch: ServedWatch, signal = false): Promise<number> {
      const t0 = Date.now()
      await writeUpstreamFile(upstreamFile, upstreamName, port)
      if (signal) process.kill(master, 'SIGHUP')
      else await run(reload, reloadArgs)
      return (await watch.until(version, t0)) - t0
    },
    ports: [p1, p2] as const,
  }
}

export async function benchBadRelease(): Promise<Row[]> {
  if (!(await dockerAvailable())) {
    badReleaseNotes.push('Bad-release figures skipped: no Docker daemon reachable.')
    return [{ figure: 'bad-release figures', value: 'skipped (no Docker)', baseline: '—', ratio: '—', target: '—', met: null }]
  }
  await ensureBaseImage()
  const runId = randomBytes(3).toString('hex')
  const dir = await mkdtemp(join(tmpdir(), 'deploy-agent-bench-bad-'))
  const nginxes: NginxInstance[] = []
  const apps = { A: `bad-${runId}-a`, B: `bad-${runId}-b`, C: `bad-${runId}-c`, D: `bad-${runId}-d` }
  let agent: TestAgent | undefined
  let traffic: TrafficWatch | undefined
  const load = () =>
    loadavg()
      .map((x) => x.toFixed(1))
      .join(' / ')
  const loadBefore = load()
  try {
    const repo = await makeGitRepo(join(dir, 'repo'), [
      { files: release('no'), tag: GOOD },
      { files: release('no'), tag: GOOD2 },
      { files: release('traffic'), tag: BAD },
      { files: release('traffic+health'), tag: BAD_HEALTH },
    ])
    const ports = await freePorts(15)
    const port = (i: number) => ports[i] as number
    const envs: Record<keyof typeof apps, Env> = {} as Record<keyof typeof apps, Env>
    const appConfigs: Record<string, unknown> = {}
    for (const [i, key] of (['A', 'B', 'C', 'D'] as const).entries()) {
      const d = join(dir, `nginx-${key}`)
      await mkdir(d, { recursive: true })
      const upstreamFile = join(d, 'upstream.conf')
      const upstreamName = `bench_${key}`
      const logged = key === 'C' || key === 'D'
      const accessLog = logged ? join(d, 'access.json') : undefined
      const retryOnStandby = key === 'D'
      const nginx = await startNginx(d, { port: port(3 * i), upstreamFile, upstreamName, accessLog, retryOnStandby })
      nginxes.push(nginx)
      envs[key] = { app: apps[key], nginx, url: `http://127.0.0.1:${port(3 * i)}/`, ...(retryOnStandby && accessLog ? { accessLog } : {}) }
      appConfigs[apps[key]] = {
        repo: repo.path,
        health: HEALTH,
        observe: { ...OBSERVE, warmStandby: key !== 'A', ...(logged ? { maxErrorRate: 0.05, minRequests: 20 } : {}) },
        keepReleases: 3,
        envs: {
          [ENV]: {
            ref: 'tag:v*',
            ports: [port(3 * i + 1), port(3 * i + 2)],
            proxy: {
              upstreamFile,
              upstreamName,
              test: nginx.testCommand,
              reload: nginx.reloadCommand,
              pidFile: join(d, 'nginx.pid'),
              drainMs: DRAIN_MS,
              ...(accessLog ? { accessLog } : {}),
            },
          },
        },
      }
    }
    const logger = createLogger({ level: 'silent' })
    let coordinator: DeployCoordinator | undefined
    // As agent/cli/serve.ts wires it: the access-log watch judges the new release while OBSERVING.
    traffic = new TrafficWatch({ logger, live: (app, env) => coordinator?.liveRelease(app, env) ?? null })
    const tw = traffic
    agent = await buildTestAgent(join(dir, 'agent'), {
      extra: { apps: appConfigs },
      deployments: async (config, deploys) => {
        coordinator = await assembleDeploys(config, deploys, logger, { watchTraffic: (target, candidate) => tw.check(target, candidate) })
        await tw.sync(config)
        return coordinator
      },
    })
    const drv = new Driver(agent)
    for (const env of Object.values(envs)) await drv.deployed(env.app, GOOD)

    // ── bad releases, alternating configurations ──────────────────────────────────────────────────────────────
    const configs: Config[] = [
      { key: 'A', label: 'A, today (no standby, probes only), health green', env: envs.A, ref: BAD, runs: [] },
      { key: "A'", label: "A', today (no standby, probes only), health failing too", env: envs.A, ref: BAD_HEALTH, runs: [] },
      { key: 'B', label: 'B, warm standby, probes only, health failing too', env: envs.B, ref: BAD_HEALTH, runs: [] },
      { key: 'C', label: 'C, warm standby + access log, health green', env: envs.C, ref: BAD, runs: [] },
      {
        key: 'D',
        label: 'D, warm standby + access log + proxy_next_upstream (retry on the standby), health green',
        env: envs.D,
        ref: BAD,
        runs: [],
      },
    ]
    for (let i = 0; i < (ONLY_ROLLBACK ? 0 : RUNS); i++) {
      for (const c of configs) {
        const r = await badDeploy(drv, c.env, c.ref)
        c.runs.push(r)
        // A release nobody rolled back (A) is rolled back by hand, untimed, so the next run starts from GOOD.
        if (r.state === 'SUCCEEDED') await drv.waitFor(await drv.rollback(c.env.app), (d) => d.finishedAt !== null)
        await coordinator?.idle()
      }
    }

    // ── manual rollback in the observe window vs a bare switch ────────────────────────────────────────────────
    const bare = await bareSide(dir, runId, [port(12), port(13), port(14)])
    nginxes.push(bare.nginx)
    const inWindow: number[] = []
    const inWindowDone: number[] = []
    const inWindowLog: string[] = []
    const bareMs: number[] = []
    const bareSignalMs: number[] = []
    for (let i = 0; i < RUNS; i++) {
      const watch = new ServedWatch(envs.C.url)
      try {
        const id = await drv.deploy(envs.C.app, GOOD2)
        await drv.waitFor(id, (d) => d.state === 'OBSERVING' || d.finishedAt !== null)
        await watch.until(GOOD2, Date.now() - 60_000)
        await sleep(300) // nginx's old workers are gone: what answers is GOOD2 alone
        const t0 = Date.now()
        await drv.rollback(envs.C.app, 'bench')
        inWindow.push((await watch.until(GOOD, t0)) - t0)
        const done = await drv.waitFor(id, (d) => d.finishedAt !== null)
        if (done.state !== 'ROLLED_BACK' || done.error?.code !== 'rollback_requested')
          throw new Error(`the rollback in the window ended ${done.state} ${JSON.stringify(done.error)}`)
        inWindowDone.push(Date.parse(done.finishedAt as string) - t0)
        inWindowLog.push(await drv.eventsAfter(id, t0, t0))
        await coordinator?.idle()
      } finally {
        await watch.stop()
      }
      const bw = new ServedWatch(bare.url)
      try {
        await sleep(300)
        const [p1, p2] = bare.ports
        bareMs.push(await bare.switchTo(p2, 'bare-2', bw))
        await sleep(300)
        // And back, reloaded by a signal as the agent reloads: the cheapest switch nginx allows.
        bareSignalMs.push(await bare.switchTo(p1, 'bare-1', bw, true))
      } finally {
        await bw.stop()
      }
    }

    // ── rows and notes ─────────────────────────────────────────────────────────────────────────────────────────
    const rows: Row[] = []
    const medFailed = (c: Config) => median(c.runs.map((r) => r.failed))
    const medShare = (c: Config) => median(c.runs.map((r) => r.failed / r.window))
    const medBack = (c: Config) => {
      const backs = c.runs.map((r) => r.backMs)
      return backs.some((b) => b === null) ? null : median(backs as number[])
    }
    const [a, a2, , , d] = configs as [Config, Config, Config, Config, Config]
    const today = () => `${fmt(medFailed(a2))} (${pct(medShare(a2))}), A'`
    for (const cfg of ONLY_ROLLBACK ? [] : configs) {
      const back = medBack(cfg)
      // The issue's targets are D's (C is the same without the retry line: the figure without it).
      const isD = cfg === d
      rows.push({
        figure: `bad release (500 on / ${BAD_AFTER_SEC} s after the switch, ${RATE} req/s), ${cfg.label}: failed requests in the bad window (median of ${RUNS})`,
        value: `${fmt(medFailed(cfg))} (${pct(medShare(cfg))} of ${ms(median(cfg.runs.map((r) => r.windowMs)))})${cfg === a ? `, over the whole ${OBSERVE.seconds} s window: never rolled back` : ''}`,
        baseline: cfg === a2 ? '—' : today(),
        ratio: cfg === a2 || cfg === a ? '—' : `${fmt((100 * medFailed(cfg)) / medFailed(a2), 1)} %`,
        target: isD ? "≤ 1 % of today's" : '—',
        met: isD ? medFailed(cfg) <= 0.01 * medFailed(a2) : null,
      })
      rows.push({
        figure: `bad release, ${cfg.label}: first bad answer → old release served again (median of ${RUNS})`,
        value: back === null ? 'never' : ms(back),
        baseline: cfg === a2 ? '—' : medBack(a2) === null ? '—' : `${ms(medBack(a2) as number)}, A'`,
        ratio: back === null || cfg === a2 || medBack(a2) === null ? '—' : `${fmt(back / (medBack(a2) as number), 2)}×`,
        target: isD ? '≤ 1 s' : '—',
        met: isD ? back !== null && back <= 1000 : null,
      })
    }
    for (const cfg of ONLY_ROLLBACK ? [] : configs.slice(3)) {
      const switches = cfg.runs.map((r) => r.switchMs)
      rows.push({
        figure: `bad release, ${cfg.label}: first bad answer → the rollback's upstream switch (median of ${RUNS})`,
        value: switches.some((s) => s === null) ? 'never' : ms(median(switches as number[])),
        baseline: '—',
        ratio: '—',
        target: '—',
        met: null,
      })
    }
    const inMed = median(inWindow)
    const bareMed = median(bareMs)
    rows.push({
      figure: `manual rollback during OBSERVING (warm standby): request → traffic on the old release (median of ${RUNS})`,
      value: ms(inMed),
      baseline: `${ms(bareMed)} (bare rewrite + nginx -s reload)`,
      ratio: `${fmt(inMed / bareMed, 2)}×`,
      target: '≤ 1.2×',
      met: inMed / bareMed <= 1.2,
    })
    const signalMed = median(bareSignalMs)
    rows.push({
      figure: `manual rollback during OBSERVING (warm standby) vs the cheapest bare switch (median of ${RUNS})`,
      value: ms(inMed),
      baseline: `${ms(signalMed)} (bare rewrite + SIGHUP to the nginx master)`,
      ratio: `${fmt(inMed / signalMed, 2)}×`,
      target: '—',
      met: null,
    })
    badReleaseNotes.push(
      `Bad release (bench/bad-release.ts): busybox httpd apps whose \`/\` is a shell cgi (builtins only) that answers its version with 200 until ${BAD_AFTER_SEC} s after its first request through nginx (the switch), then 500; ` +
        `${BAD} keeps its health check (/cgi-bin/health) green, ${BAD_HEALTH} fails it from then on too. Good release ${GOOD}: static \`/\`. ` +
        `Load: bench/load.ts, GET / through the env's nginx at ${RATE} req/s from 500 ms before the deploy request until 1 s after it ended. ` +
        `Health probe every ${HEALTH.intervalMs} ms, healthy after ${HEALTH.healthyAfter}; drainMs ${DRAIN_MS}; observe { seconds: ${OBSERVE.seconds}, intervalMs: ${OBSERVE.intervalMs}, maxFailures: ${OBSERVE.maxFailures} }; ` +
        `A and A' on one app (warmStandby false, no accessLog), B (warmStandby true), C (warmStandby true, proxy.accessLog, maxErrorRate 0.05, minRequests 20), ` +
        `D (as C, and its nginx site has \`proxy_next_upstream error timeout http_500 http_502 http_503 http_504;\`: during OBSERVING the standby is the upstream's backup and answers again what the release failed); ${RUNS} rounds of A, A', B, C, D in that order. ` +
        `Bad window: from the first 500 to the last failed answer (answer end times); its share = failed ÷ answers ending in it. Back: first 200 from ${GOOD} after the last failed answer. ` +
        `D: the client sees no 500, so its bad window runs from the release's first 500 in nginx's access log (msec, the request's end) to its last one (or the client's last failure, if later), and back is the client's first 200 from ${GOOD} from that first 500 on (the standby's answer to that very request). ` +
        `Rollback's switch: the deploy log's \`switched\` line of the rollback (after its nginx -t and confirmed reload). ` +
        `The agent runs in the bench process (like bench/deploy.ts), its access-log watch wired as deploy-agent serve wires it.`,
    )
    for (const cfg of ONLY_ROLLBACK ? [] : configs) badReleaseNotes.push(`Bad release ${cfg.label}, all runs — ${describeRuns(cfg.runs)}.`)
    badReleaseNotes.push(
      `Manual rollback in the window: ${RUNS} deploys of ${GOOD2} over ${GOOD} on app C; once OBSERVING and ${GOOD2} answers through nginx (+300 ms), a signed POST …/rollback; ` +
        `"traffic" = the first answer of ${GOOD} through nginx (fresh connection every ~5 ms from a worker thread, so the in-process agent does not delay its clock: bench/deploy.ts ServedWatch, the same watch for the bare switch); each ended ROLLED_BACK / rollback_requested. ` +
        `Bare: two busybox httpd containers already running, upstream file rewritten + nginx -s reload, until nginx answers with the other one; alternating with the rollbacks. ` +
        `All runs — in the window: ${inWindow.map((x) => fmt(x)).join(', ')} ms (request → ROLLED_BACK ${inWindowDone.map((x) => fmt(x)).join(', ')} ms; deploy log after the request: ${inWindowLog.join(' | ')}); bare (nginx -s reload): ${bareMs.map((x) => fmt(x)).join(', ')} ms; bare (SIGHUP): ${bareSignalMs.map((x) => fmt(x)).join(', ')} ms. The agent's rollback runs no \`nginx -t\` (the content was tested at the deploy's switch) and, knowing the pid file, reloads with the master's SIGHUP as \`nginx -s reload\` does, without starting nginx to parse its config first.`,
      `Bad-release machine: ${cpus().length} CPUs; load average (1 / 5 / 15 min) before ${loadBefore}, after ${load()}.`,
    )
    return rows
  } finally {
    await agent?.close().catch(() => undefined)
    await traffic?.close().catch(() => undefined)
    for (const app of Object.values(apps)) await removeAppFromDocker(app).catch(() => undefined)
    await removeContainersByLabel(`deploy-agent-bench=${runId}`).catch(() => undefined)
    for (const nginx of nginxes) await nginx.stop().catch(() => undefined)
    await rm(dir, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rows = await benchBadRelease()
  console.log(`${formatRows(rows)}\n\n${badReleaseNotes.map((n) => `- ${n}`).join('\n')}`)
}
