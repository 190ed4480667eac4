// The swarm runtime on the two-node rig (test/helpers/swarm.ts: this host's dockerd as manager, a second dockerd in a
// network namespace as worker, a registry both reach as 127.0.0.1:<port>), side by side in one run with:
//   1. the single-box container runtime (`runtime: docker`) of the same app in the same agent: deploy wall time,
//      signed request → SUCCEEDED, same health and (short) observe settings;
//   2. what a team would script: `git archive | docker build`, `docker push`, `docker service update --image
//      <registry>/app@sha256:… --update-order start-first` of a 2-replica service, until the update completes;
//   3. failed requests under a request loop through nginx (test/helpers/load.ts, as the swarm test) during those
//      deploys and during manual rollbacks, and the rollback's request → traffic (target < 3 s).
// The agent is a real `deploy-agent serve` process (test/helpers/agent-rig.ts), driven over its signed API.
// Alone: `node --import tsx bench/swarm.ts` (prints the rows and notes; BENCH_SWARM_RUNS=n runs per side, default 3).
// Needs root, dockerd, iproute2, util-linux and docker-registry (canRunSwarmRig); waits for the rig's lock while a
// test holds it.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { cpus, loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { Test } from 'tap'
import { startAgentRig, type AgentRig } from '../test/helpers/agent-rig.js'
import { ensureBaseImage } from '../test/helpers/docker.js'
import { makeGitRepo } from '../test/helpers/git.js'
import { requestLoop, type LoopResult } from '../test/helpers/load.js'
import { startNginx } from '../test/helpers/nginx.js'
import { freePorts } from '../test/helpers/ports.js'
import { sampleReleaseFiles } from '../test/helpers/sample-app.js'
import { canRunSwarmRig, startSwarmRig, type SwarmRig } from '../test/helpers/swarm.js'
import { tempDir } from '../test/helpers/tmp.js'
import type { Deploy } from '../agent/store/deploys.js'
import { phaseMedians } from './deploy.js'
import { fmt, formatRows, type Row } from './lib.js'

const run = promisify(execFile)

/** Timed deploys per side and rollbacks per runtime (medians). */
const RUNS = Math.max(1, Number(process.env.BENCH_SWARM_RUNS ?? 3))
const REPLICAS = 2
const HEALTH = { path: '/healthz', intervalMs: 100, timeoutMs: 1000, healthyAfter: 2, deadlineSec: 10 }
/** Short and the same for both runtimes. */
const OBSERVE = { seconds: 1, intervalMs: 200, maxFailures: 2 }
/** The env names the rig's CI key may deploy to: production runs on the swarm, staging on one box. */
const SWARM = 'production'
const SINGLE = 'staging'

export const swarmNotes: string[] = []

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number
const ms = (n: number) => `${fmt(n)} ms`
const all = (xs: number[]) => xs.map((x) => fmt(x)).join(', ')
const sum = (rs: LoopResult[]) => ({
  ok: rs.reduce((n, r) => n + r.ok, 0),
  retried: rs.reduce((n, r) => n + r.retried, 0),
  failures: rs.flatMap((r) => r.failures),
})
const loadText = (rs: LoopResult[]) => {
  const s = sum(rs)
  return `${s.failures.length} failed (${fmt(s.ok)} answered, ${s.retried} retried)`
}
const tally = (failures: string[]) =>
  JSON.stringify(failures.reduce<Record<string, number>>((m, f) => ({ ...m, [f]: (m[f] ?? 0) + 1 }), {}))

/** The sample app as in test/swarm/deploy.swarm.ts: httpd on every address of its node, stopping on TERM. */
const SERVE = `trap 'exit 0' TERM; httpd -f -p $PORT -h /www & wait`
/**
 * The scripted service's command: the same, but with host networking and start-first the new task starts on a node
 * whose port the old task still holds, so it retries the bind until the old task is stopped (what a team would add).
 */
const SERVE_RETRYING = `trap 'exit 0' TERM; while ! httpd -f -p $PORT -h /www; do sleep 0.05; done & wait`

/** tap's `t` for the helpers, outside tap: teardowns run in reverse at the end. */
class Teardowns {
  private readonly fns: Array<() => unknown> = []
  teardown(fn: () => unknown): void {
    this.fns.push(fn)
  }
  async run(): Promise<void> {
    for (const fn of this.fns.reverse())
      await Promise.resolve(fn()).catch((err: Error) => console.error(`bench/swarm.ts teardown: ${err.message}`))
  }
}

/** The hand-written script: build, push, `docker service update --update-order start-first` of one service. */
class ScriptSide {
  readonly service: string
  constructor(private readonly o: { repo: string; registry: string; runId: string; port: number }) {
    this.service = `bench-${o.runId}-script`
  }

  private async docker(args: string[]): Promise<string> {
    return (await run('docker', args, { timeout: 180_000, maxBuffer: 16 * 1024 * 1024 })).stdout
  }

  /** `git archive | docker build` (classic builder, as the agent), then `docker push`; the digest pushed. */
  async buildAndPush(tag: string): Promise<{ image: string; buildMs: number; pushMs: number }> {
    const ref = `${this.o.registry}/${this.service}:${tag}`
    const t0 = Date.now()
    await run(
      'sh',
      ['-c', 'git -C "$1" archive "$2" | docker build --quiet --tag "$3" --build-arg VERSION="$2" --label "$4" - >/dev/null', 'sh'].concat([
        this.o.repo,
        tag,
        ref,
        `deploy-agent-bench=${this.o.runId}`,
      ]),
      { env: { ...process.env, DOCKER_BUILDKIT: '0' }, timeout: 180_000 },
    )
    const t1 = Date.now()
    const out = await this.docker(['push', ref])
    const t2 = Date.now()
    const digest = /digest: (sha256:[0-9a-f]{64})/.exec(out)?.[1]
    if (!digest) throw new Error(`docker push ${ref} printed no digest:\n${out}`)
    return { image: `${this.o.registry}/${this.service}@${digest}`, buildMs: t1 - t0, pushMs: t2 - t1 }
  }

  async create(image: string): Promise<void> {
    await this.docker([
      'service',
      'create',
      '--quiet',
      '--detach=false',
      '--name',
      this.service,
      '--replicas',
      String(REPLICAS),
      '--network',
      'host',
      '--env',
      `PORT=${this.o.port}`,
      '--update-order',
      'start-first',
      '--label',
      `deploy-agent-bench=${this.o.runId}`,
      image,
      'sh',
      '-c',
      SERVE_RETRYING,
    ])
  }

  /** The update, until the CLI says it converged (Swarm's defaults otherwise: parallelism 1, monitor 5 s). */
  async update(image: string): Promise<number> {
    const t0 = Date.now()
    await this.docker(['service', 'update', '--quiet', '--detach=false', '--image', image, '--update-order', 'start-first', this.service])
    return Date.now() - t0
  }

  /** The nodes running a task of the service (by node id). */
  async nodes(): Promise<string[]> {
    const out = await this.docker(['service', 'ps', this.service, '--filter', 'desired-state=running', '--format', '{{.Node}}'])
    return out.split('\n').filter(Boolean).sort()
  }

  /** The service, and the images built for it (the rig's `down` leaves the swarm, not the host's images). */
  async remove(): Promise<void> {
    await this.docker(['service', 'rm', this.service]).catch(() => undefined)
    const ids = (await this.docker(['images', '--quiet', '--filter', `label=deploy-agent-bench=${this.o.runId}`]))
      .split('\n')
      .filter(Boolean)
    if (ids.length > 0) await this.docker(['rmi', '--force', ...new Set(ids)]).catch(() => undefined)
  }
}

/** The kinds of error nginx logged, counted (the port and client parts left out). */
async function nginxErrors(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '')
  const kinds = [...text.matchAll(/\[error\] \S+ (?:\*\d+ )?([^,(]*(?:\([^)]*\))?)/g)].map((m) => (m[1] as string).trim())
  return kinds.length === 0 ? 'no errors' : tally(kinds)
}

async function served(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/version`, { signal: AbortSignal.timeout(2_000) })
  return res.status === 200 ? (await res.text()).trim() : `HTTP ${res.status}`
}

/** Signed deploy of `ref` to `env` under a request loop through its nginx; wall time is request → finishedAt. */
async function agentDeploy(agent: AgentRig, env: string, ref: string): Promise<{ ms: number; load: LoopResult; deploy: Deploy }> {
  const loop = requestLoop(`http://127.0.0.1:${agent.nginxOf(env).port}/version`, { concurrency: 2 })
  const t0 = Date.now()
  const done = await agent.waitFinished(await agent.startDeploy(ref, env), 180_000)
  const load = await loop.stop()
  if (done.state !== 'SUCCEEDED') throw new Error(`${env} deploy of ${ref} ended ${done.state}: ${JSON.stringify(done.error)}`)
  return { ms: Date.parse(done.finishedAt as string) - t0, load, deploy: done }
}

/** A manual rollback under the request loop: request → first answer of `to` through nginx, and → SUCCEEDED. */
async function agentRollback(
  agent: AgentRig,
  env: string,
  to: string,
): Promise<{ traffic: number; done: number; load: LoopResult; deploy: Deploy }> {
  const port = agent.nginxOf(env).port
  const loop = requestLoop(`http://127.0.0.1:${port}/version`, { concurrency: 2 })
  const t0 = Date.now()
  const res = await agent.signedPost(`/v1/apps/${agent.app}/envs/${env}/rollback`, {})
  if (res.status !== 202) throw new Error(`${env} rollback: ${res.status} ${await res.text()}`)
  const { id } = (await res.json()) as { id: string }
  let traffic = NaN
  while (Number.isNaN(traffic)) {
    const v = await served(port).catch(() => '')
    if (v === to) traffic = Date.now() - t0
    else if (Date.now() - t0 > 60_000) throw new Error(`${env} rollback never served ${to} (last: ${v})`)
    else await sleep(5)
  }
  const d = await agent.waitFinished(id, 120_000)
  const load = await loop.stop()
  if (d.state !== 'SUCCEEDED') throw new Error(`${env} rollback ended ${d.state}: ${JSON.stringify(d.error)}`)
  return { traffic, done: Date.parse(d.finishedAt as string) - t0, load, deploy: d }
}

async function measure(rig: SwarmRig, t: Teardowns, runId: string): Promise<Row[]> {
  const dir = await tempDir(t, 'deploy-agent-bench-swarm-')
  // One commit; every deploy is a new tag on it, so each side builds a new RUN layer (VERSION build arg) over the
  // same cached COPY layers, and never reuses a layer of the other sides' tags.
  const tagsOf = (side: number) => Array.from({ length: 1 + RUNS }, (_, i) => `v3.${side}.${i}`)
  const tags = { swarm: tagsOf(1), single: tagsOf(2), script: tagsOf(3) }
  const repo = await makeGitRepo(join(dir, 'repo'), [{ files: sampleReleaseFiles({ command: SERVE }), tag: 'v3.0.0', annotated: true }])
  for (const tag of [...tags.swarm, ...tags.single, ...tags.script])
    await run('git', ['-C', repo.path, 'tag', tag, repo.commits[0] as string])

  const agent = await startAgentRig(t as unknown as Test, {
    repo: async () => repo.path,
    envs: { [SWARM]: { runtime: 'swarm', swarm: { replicas: REPLICAS, registry: rig.registry } }, [SINGLE]: {} },
    app: { health: HEALTH, observe: OBSERVE },
  })

  // The script's service behind its own nginx, listing both nodes on its one port.
  const [scriptPort, scriptNginxPort] = (await freePorts(2)) as [number, number]
  const nginxDir = join(dir, 'nginx-script')
  await mkdir(nginxDir, { recursive: true })
  const upstreamFile = join(nginxDir, 'upstream.conf')
  await writeFile(upstreamFile, `upstream bench_script { server 127.0.0.1:${scriptPort}; server ${rig.workerAddr}:${scriptPort}; }\n`)
  const nginx = await startNginx(nginxDir, { port: scriptNginxPort, upstreamFile, upstreamName: 'bench_script' })
  t.teardown(() => nginx.stop())
  const script = new ScriptSide({ repo: repo.path, registry: rig.registry, runId, port: scriptPort })
  t.teardown(() => script.remove())

  // Untimed warm-up: the first deploy of each side creates its services / containers and fills the layer cache.
  await agentDeploy(agent, SWARM, tags.swarm[0] as string)
  await agentDeploy(agent, SINGLE, tags.single[0] as string)
  await script.create((await script.buildAndPush(tags.script[0] as string)).image)

  const swarmMs: number[] = []
  const singleMs: number[] = []
  const scriptTotal: number[] = []
  const scriptPushUpdate: number[] = []
  const scriptUpdate: number[] = []
  const scriptParts: string[] = []
  const scriptSpread: string[] = []
  /** What the script's nginx answered right after each update returned. */
  const scriptAfter: string[] = []
  const loads = { swarm: [] as LoopResult[], single: [] as LoopResult[], script: [] as LoopResult[], scriptUpdate: [] as LoopResult[] }
  const deploys = { swarm: [] as Deploy[], single: [] as Deploy[] }
  for (let i = 1; i <= RUNS; i++) {
    const s = await agentDeploy(agent, SWARM, tags.swarm[i] as string)
    swarmMs.push(s.ms)
    loads.swarm.push(s.load)
    deploys.swarm.push(s.deploy)
    const nodes = (await agent.upstream()).match(/server /g)?.length ?? 0
    if (nodes !== REPLICAS)
      throw new Error(`the swarm release is listed on ${nodes} addresses, not ${REPLICAS}:\n${await agent.upstream()}`)

    const one = await agentDeploy(agent, SINGLE, tags.single[i] as string)
    singleMs.push(one.ms)
    loads.single.push(one.load)
    deploys.single.push(one.deploy)

    // Two loops: one while it builds and pushes, one during the update itself.
    const scriptUrl = `http://127.0.0.1:${scriptNginxPort}/version`
    const buildLoop = requestLoop(scriptUrl, { concurrency: 2 })
    const pushed = await script.buildAndPush(tags.script[i] as string)
    loads.script.push(await buildLoop.stop())
    const updateLoop = requestLoop(scriptUrl, { concurrency: 2 })
    const updateMs = await script.update(pushed.image)
    const updateLoad = await updateLoop.stop()
    loads.script.push(updateLoad)
    loads.scriptUpdate.push(updateLoad)
    scriptAfter.push(await served(scriptNginxPort).catch((err: Error) => err.message))
    scriptTotal.push(pushed.buildMs + pushed.pushMs + updateMs)
    scriptPushUpdate.push(pushed.pushMs + updateMs)
    scriptUpdate.push(updateMs)
    scriptParts.push(`build ${fmt(pushed.buildMs)} + push ${fmt(pushed.pushMs)} + update ${fmt(updateMs)}`)
    scriptSpread.push(`${new Set(await script.nodes()).size} node(s)`)
  }

  // Rollbacks: each to the other of the two newest releases (the kept colour / stopped container).
  const swarmBack: number[] = []
  const swarmDone: number[] = []
  const singleBack: number[] = []
  const singleDone: number[] = []
  const rollbackLoads = { swarm: [] as LoopResult[], single: [] as LoopResult[] }
  const rollbacks = { swarm: [] as Deploy[], single: [] as Deploy[] }
  // The first goes back to the next-to-last deploy, the second forward again to the last, and so on.
  const target = (t: string[], i: number) => t[i % 2 === 0 ? RUNS - 1 : RUNS] as string
  for (let i = 0; i < RUNS; i++) {
    const s = await agentRollback(agent, SWARM, target(tags.swarm, i))
    swarmBack.push(s.traffic)
    swarmDone.push(s.done)
    rollbackLoads.swarm.push(s.load)
    rollbacks.swarm.push(s.deploy)
    const one = await agentRollback(agent, SINGLE, target(tags.single, i))
    singleBack.push(one.traffic)
    singleDone.push(one.done)
    rollbackLoads.single.push(one.load)
    rollbacks.single.push(one.deploy)
  }

  const sw = median(swarmMs)
  const single = median(singleMs)
  const scr = median(scriptTotal)
  const pu = median(scriptPushUpdate)
  const back = median(swarmBack)
  const singleBackMed = median(singleBack)
  const swarmLoad = sum(loads.swarm)
  const swarmRollbackLoad = sum(rollbackLoads.swarm)
  const rows: Row[] = [
    {
      figure: `swarm deploy wall time, ${REPLICAS} replicas on 2 nodes (median of ${RUNS})`,
      value: ms(sw),
      baseline: `${ms(single)} (same agent, runtime: docker)`,
      ratio: `${fmt(sw / single, 2)}×`,
      target: '—',
      met: null,
    },
    {
      figure: `swarm deploy wall time vs a script: build + push + docker service update --update-order start-first (median of ${RUNS})`,
      value: ms(sw),
      baseline: `${ms(scr)} (script; push + update alone ${ms(pu)})`,
      ratio: `${fmt(sw / scr, 2)}× (${fmt(sw / pu, 2)}× push + update)`,
      target: '—',
      met: null,
    },
    {
      figure: `failed requests through nginx during ${RUNS} swarm deploys (request loop, 2 clients)`,
      value: loadText(loads.swarm),
      baseline: `script: ${loadText(loads.script)}; runtime docker: ${loadText(loads.single)}`,
      ratio: '—',
      target: '0',
      met: swarmLoad.failures.length === 0,
    },
    {
      figure: `failed requests through nginx during ${RUNS} swarm manual rollbacks`,
      value: loadText(rollbackLoads.swarm),
      baseline: `runtime docker: ${loadText(rollbackLoads.single)}`,
      ratio: '—',
      target: '0',
      met: swarmRollbackLoad.failures.length === 0,
    },
    {
      figure: `swarm manual rollback: request → traffic on the old release (median of ${RUNS})`,
      value: ms(back),
      baseline: `${ms(singleBackMed)} (runtime docker)`,
      ratio: `${fmt(back / singleBackMed, 1)}×`,
      target: '< 3 s',
      met: back < 3000,
    },
  ]
  swarmNotes.push(
    `Swarm (bench/swarm.ts): the two-node rig of test/helpers/swarm.ts (host dockerd = manager, a dockerd in a network namespace = worker, docker-registry as ${rig.registry} on both; heartbeat 1 s). One real agent process (\`deploy-agent serve\`), one app (busybox httpd on $PORT on every address, trapping TERM; a migration \`sh /migrate.sh\`; smoke GET /version) in two envs each behind its own nginx: \`${SWARM}\` (runtime swarm, replicas ${REPLICAS}, registry the rig's) and \`${SINGLE}\` (runtime docker). Same settings: health every ${HEALTH.intervalMs} ms, healthy after ${HEALTH.healthyAfter}; observe ${OBSERVE.seconds} s every ${OBSERVE.intervalMs} ms; drainMs 300. After one untimed deploy per side, ${RUNS} rounds of swarm deploy, docker deploy, script; each a new tag on one commit (new VERSION build arg → a new RUN layer over cached COPY layers; the swarm side also pushes and its worker pulls). Wall time: signed POST → the deploy record's finishedAt. ` +
      `Phases, median ms — swarm: ${phaseMedians(deploys.swarm)}; runtime docker: ${phaseMedians(deploys.single)}. All runs — swarm: ${all(swarmMs)} ms; runtime docker: ${all(singleMs)} ms.`,
    `Script baseline: \`git archive | docker build\` (classic builder, same Dockerfile and build arg), \`docker push\` to the same registry, \`docker service update --quiet --detach=false --image ${rig.registry}/…@sha256:… --update-order start-first\` of a ${REPLICAS}-replica service (host network, Swarm's default update settings: parallelism 1, monitor 5 s), timed until the CLI returns (converged). The same image and app, but with host networking a start-first task shares its node's port with the task it replaces, so its command retries the bind every 50 ms until the old task stops. One nginx lists both nodes on its port. All runs: ${scriptParts.join('; ')} ms; tasks on ${scriptSpread.join(', ')} after each update; its nginx answered ${scriptAfter.join(', ')} right after each (expected ${tags.script.slice(1).join(', ')}). Update alone, median ${ms(median(scriptUpdate))}.`,
    `Script's requests during the update alone: ${loadText(loads.scriptUpdate)}; its nginx's error log: ${await nginxErrors(join(nginxDir, 'error.log'))} (nginx's default max_fails=1 fail_timeout=10s marks a refused node down for 10 s; with both nodes marked, every request is a 502 "no live upstreams").`,
    `Requests: test/helpers/load.ts's loop (2 keep-alive clients, a GET sent again when its connection closed before any answer = "retried"), GET /version through each side's nginx, from the request to the end of each deploy / update (script: build, push and update). Failures — swarm deploys ${tally(swarmLoad.failures)}; runtime docker deploys ${tally(sum(loads.single).failures)}; script ${tally(sum(loads.script).failures)}; swarm rollbacks ${tally(swarmRollbackLoad.failures)}; runtime docker rollbacks ${tally(sum(rollbackLoads.single).failures)}.`,
    `Manual rollback: ${RUNS} signed POST …/rollback {} per runtime, alternating, each to the other of the two newest releases (swarm: the kept colour, at 0 replicas, scaled back up; docker: the stopped container started). Traffic = first answer of the old release to GET /version through nginx (polled every ~5 ms). Phases, median ms — swarm: ${phaseMedians(rollbacks.swarm)}; runtime docker: ${phaseMedians(rollbacks.single)}. All runs — swarm to traffic: ${all(swarmBack)} ms, to SUCCEEDED: ${all(swarmDone)} ms; runtime docker to traffic: ${all(singleBack)} ms, to SUCCEEDED: ${all(singleDone)} ms.`,
  )
  return rows
}

export async function benchSwarm(): Promise<Row[]> {
  if (!(await canRunSwarmRig())) {
    swarmNotes.push('Swarm figures skipped: the two-node rig needs root, dockerd, iproute2, util-linux and docker-registry.')
    return [{ figure: 'swarm figures', value: 'skipped (no swarm rig)', baseline: '—', ratio: '—', target: '—', met: null }]
  }
  await ensureBaseImage()
  const load = () =>
    loadavg()
      .map((x) => x.toFixed(1))
      .join(' / ')
  const before = load()
  const t = new Teardowns()
  try {
    const rig = await startSwarmRig(t, { heartbeatSeconds: 1 })
    const rows = await measure(rig, t, randomBytes(3).toString('hex'))
    swarmNotes.push(`Swarm machine: ${cpus().length} CPUs; load average (1 / 5 / 15 min) before ${before}, after ${load()}.`)
    return rows
  } finally {
    await t.run()
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rows = await benchSwarm()
  console.log(`${formatRows(rows)}\n\n${swarmNotes.map((n) => `- ${n}`).join('\n')}`)
}
