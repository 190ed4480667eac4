// Load fault: 1000 concurrent, valid, signed deploy requests for one env, against a live agent on real Docker, git
// and nginx. Whatever the interleaving, the lane policy must hold exactly: one deploy runs at a time; with
// `queue: replace` every request is accepted (202), at most one waits and every other ends CANCELLED (superseded);
// with `queue: reject` every request while one runs is refused 409 deploy_in_progress and nothing is ever queued.
// The agent keeps answering /v1/status (p99 printed) and its memory comes back near idle (printed, bounded).
import { Agent } from 'node:http'
import t from 'tap'
import type { Deploy } from '../../agent/store/deploys.js'
import { startAgentRig } from '../helpers/agent-rig.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { countBy, httpRequest, openFds, percentile, rssMb, signedHeaders, type HttpAnswer } from '../helpers/probe.js'
import { SAMPLE_TAGS, servedVersion } from '../helpers/sample-app.js'

const FLOOD = 1000
// The test key may deploy to `staging` and `production`: staging keeps the default `replace`, production `reject`.
const replaceEnv = 'staging'
const rejectEnv = 'production'

t.test('Load fault: 1000 concurrent signed deploys for one env', { skip: skipUnless(await dockerAvailable(), 'docker') }, async (t) => {
  await ensureBaseImage()
  const rig = await startAgentRig(t, {
    envs: { [replaceEnv]: { queue: 'replace' }, [rejectEnv]: { queue: 'reject' } },
    proxy: { drainMs: 50 },
    app: {
      migrate: undefined,
      health: { path: '/healthz', intervalMs: 50, timeoutMs: 1000, healthyAfter: 1, deadlineSec: 10 },
      smoke: [],
      observe: { seconds: 1, intervalMs: 100, maxFailures: 2 },
    },
    serveEnv: { LOG_LEVEL: 'warn' },
  })
  const { app, url, keys } = rig
  const replacing = { nginx: rig.nginxOf(replaceEnv) }
  const pid = rig.agent().child.pid as number
  const token = { authorization: `Bearer ${keys.statusToken}` }

  const getJson = async <T>(path: string): Promise<T> => {
    const res = await httpRequest(`${url}${path}`, { headers: token })
    if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${res.body}`)
    return JSON.parse(res.body) as T
  }
  const envDeploys = async (env: string) => (await getJson<{ deploys: Deploy[] }>(`/v1/deploys?app=${app}&env=${env}&limit=5000`)).deploys
  const waitAllFinished = async (env: string, timeoutMs = 240_000): Promise<Deploy[]> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const deploys = await envDeploys(env)
      const open = deploys.filter((d) => d.finishedAt === null)
      if (open.length === 0) return deploys
      if (Date.now() > deadline)
        throw new Error(
          `${open.length} deploys of ${env} never finished: ${open
            .slice(0, 5)
            .map((d) => `${d.id} ${d.state}`)
            .join(', ')}`,
        )
      await new Promise((r) => setTimeout(r, 250))
    }
  }
  const deployOnce = (env: string, ref: string, agentForFlood?: Agent): Promise<HttpAnswer> => {
    const path = `/v1/apps/${app}/envs/${env}/deploys`
    const body = JSON.stringify({ ref })
    return httpRequest(`${url}${path}`, { method: 'POST', headers: signedHeaders(keys, 'POST', path, body), body, agent: agentForFlood })
  }

  /** Sends FLOOD deploy requests at once while GET /v1/status is polled; returns the answers and status figures. */
  const flood = async (env: string, ref: string) => {
    const statusAnswers: number[] = []
    const statusMs: number[] = []
    let flooding = true
    // The poller's connection is open before the flood, so its figures are request handling, not a connect
    // waiting in a full accept queue.
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 })
    await httpRequest(`${url}/v1/status`, { headers: token, agent: keepAlive })
    const poller = (async () => {
      while (flooding) {
        const started = performance.now()
        const res = await httpRequest(`${url}/v1/status`, { headers: token, agent: keepAlive }).catch(() => ({ status: 0 }))
        statusMs.push(performance.now() - started)
        statusAnswers.push(res.status)
        await new Promise((r) => setTimeout(r, 20))
      }
      keepAlive.destroy()
    })()
    const floodAgent = new Agent({ keepAlive: false, maxSockets: FLOOD })
    const started = performance.now()
    const answers = await Promise.all(
      Array.from({ length: FLOOD }, () =>
        deployOnce(env, ref, floodAgent).catch((err: Error) => ({ status: 0, body: err.message, headers: {} })),
      ),
    )
    const floodMs = performance.now() - started
    flooding = false
    await poller
    floodAgent.destroy()
    const byStatus = countBy(answers, (a) => a.status)
    t.comment(`${env}: ${FLOOD} deploy requests answered in ${Math.round(floodMs)} ms: ${JSON.stringify(byStatus)}`)
    t.comment(
      `${env}: GET /v1/status during the flood: ${statusMs.length} requests, p50 ${percentile(statusMs, 0.5).toFixed(1)} ms, p99 ${percentile(statusMs, 0.99).toFixed(1)} ms, max ${Math.max(...statusMs).toFixed(1)} ms`,
    )
    t.ok(statusAnswers.length > 0, 'status was polled while the flood was in flight')
    t.same(
      countBy(statusAnswers, (s) => s),
      { 200: statusAnswers.length },
      'GET /v1/status answered 200 throughout the flood',
    )
    return answers
  }

  /** Runs (deploys that got past QUEUED) never overlap: each starts after the previous one finished. */
  const assertOneAtATime = (deploys: Deploy[]) => {
    const runs = deploys
      .filter((d) => d.states.some((s) => s.state === 'RESOLVING'))
      .map((d) => ({
        id: d.id,
        start: Date.parse(d.states.find((s) => s.state === 'RESOLVING')?.at as string),
        end: Date.parse(d.finishedAt as string),
      }))
      .sort((a, b) => a.start - b.start)
    const overlaps = runs.slice(1).filter((run, i) => run.start < (runs[i] as { end: number }).end)
    t.same(
      overlaps.map((o) => o.id),
      [],
      `the ${runs.length} deploys that ran never overlapped`,
    )
    return runs
  }

  const idleRss = await rssMb(pid)
  const idleFds = await openFds(pid)

  await t.test('queue: replace — all accepted, one runs, one waits, the rest are superseded', async (t) => {
    const answers = await flood(replaceEnv, SAMPLE_TAGS.good)
    t.same(
      countBy(answers, (a) => a.status),
      { 202: FLOOD },
      'every request is accepted with 202',
    )
    const ids = new Set(answers.map((a) => (JSON.parse(a.body) as { id: string }).id))
    t.equal(ids.size, FLOOD, 'each request got its own deploy')
    const deploys = (await waitAllFinished(replaceEnv)).filter((d) => ids.has(d.id))
    t.equal(deploys.length, FLOOD, 'every accepted deploy is in the history')
    const runs = assertOneAtATime(deploys)
    const ran = new Set(runs.map((r) => r.id))
    const notRun = deploys.filter((d) => !ran.has(d.id))
    t.same(
      countBy(notRun, (d) => `${d.state} ${d.error?.code}`),
      { 'CANCELLED superseded': notRun.length },
      'every deploy that never ran ended CANCELLED (superseded)',
    )
    t.ok(runs.length >= 2, `the first ran, and the last one waiting ran after it (${runs.length} ran)`)
    t.same(
      countBy(
        deploys.filter((d) => ran.has(d.id)),
        (d) => d.state,
      ),
      { SUCCEEDED: runs.length },
      'every deploy that ran succeeded',
    )
    t.equal(await servedVersion(replacing.nginx), SAMPLE_TAGS.good, 'nginx serves the release')
  })

  await t.test('queue: reject — while one runs every other request is refused 409 and none is queued', async (t) => {
    // A slow build holds the lane while the flood arrives.
    const holder = await deployOnce(rejectEnv, SAMPLE_TAGS.slowBuild)
    t.equal(holder.status, 202, holder.body)
    const holderId = (JSON.parse(holder.body) as { id: string }).id
    const answers = await flood(rejectEnv, SAMPLE_TAGS.good)
    const byStatus = countBy(answers, (a) => a.status)
    t.same(
      Object.keys(byStatus).sort(),
      Object.keys(byStatus)
        .filter((s) => s === '202' || s === '409')
        .sort(),
      'every answer is 202 or 409',
    )
    const refused = answers.filter((a) => a.status === 409)
    t.same(
      countBy(refused, (a) => (JSON.parse(a.body) as { error: { code: string } }).error.code),
      refused.length ? { deploy_in_progress: refused.length } : {},
      '409s say deploy_in_progress',
    )
    const accepted = new Set(answers.filter((a) => a.status === 202).map((a) => (JSON.parse(a.body) as { id: string }).id))
    const deploys = await waitAllFinished(rejectEnv)
    const flooded = deploys.filter((d) => accepted.has(d.id))
    t.equal(flooded.length, accepted.size, 'every accepted request has its deploy')
    t.same(
      deploys.filter((d) => d.state === 'CANCELLED').map((d) => d.id),
      [],
      'reject never queues, so nothing is superseded',
    )
    const runs = assertOneAtATime(deploys)
    t.equal(runs.length, accepted.size + 1, 'every accepted deploy ran (the holder and each 202), one at a time')
    t.equal(deploys.find((d) => d.id === holderId)?.state, 'SUCCEEDED')
    t.comment(`reject: ${accepted.size} of the flood were accepted because the lane was free when they arrived`)
  })

  // The agent may keep freed heap as its own; a leak of 1000 deploys' worth of handles or records would not come back.
  await new Promise((r) => setTimeout(r, 2000))
  const afterRss = await rssMb(pid)
  t.comment(
    `agent RSS: ${idleRss.toFixed(1)} MB idle before, ${afterRss.toFixed(1)} MB after both floods (growth ${(afterRss - idleRss).toFixed(1)} MB)`,
  )
  t.ok(afterRss - idleRss < 100, `RSS grew by less than 100 MB (${(afterRss - idleRss).toFixed(1)} MB)`)
  // Every one of the ~2000 deploys has a log file; a handle left open per finished deploy would show here.
  const afterFds = await openFds(pid)
  t.comment(`agent open file descriptors: ${idleFds} idle before, ${afterFds} after both floods`)
  t.ok(afterFds - idleFds < 20, `open file descriptors grew by less than 20 (${afterFds - idleFds})`)
  const status = await getJson<{ apps: Record<string, { envs: Record<string, { deploying: unknown }> }> }>('/v1/status')
  t.same(
    Object.values(status.apps[app]?.envs ?? {}).map((e) => e.deploying),
    [null, null],
    'status shows nothing deploying at the end',
  )
})
