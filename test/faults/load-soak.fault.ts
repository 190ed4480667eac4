// Load fault (soak): 50 deploys and manual rollbacks in a row against a live agent on real Docker, git and nginx,
// under a steady request loop through nginx. End state: every operation succeeded, zero failed requests, no
// containers beyond the live one and the standby, images within keepReleases, and the agent's open file
// descriptors and RSS back near where they were (printed, bounded generously to catch leaks).
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import t from 'tap'
import type { Deploy } from '../../agent/store/deploys.js'
import { DEPLOY_ENV, startAgentRig } from '../helpers/agent-rig.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { requestLoop } from '../helpers/load.js'
import { countBy, httpRequest, openFds, rssMb, signedHeaders } from '../helpers/probe.js'
import { SAMPLE_TAGS, servedVersion } from '../helpers/sample-app.js'

const run = promisify(execFile)
const OPERATIONS = 50
const KEEP_RELEASES = 2
// Three good releases with keepReleases 2: every deploy prunes one, and deploying it again rebuilds it.
const TAGS = [SAMPLE_TAGS.good, SAMPLE_TAGS.good2, SAMPLE_TAGS.good3]
const env = DEPLOY_ENV

t.test('Load fault: 50 deploys and rollbacks in a row under load', { skip: skipUnless(await dockerAvailable(), 'docker') }, async (t) => {
  await ensureBaseImage()
  const rig = await startAgentRig(t, {
    proxy: { drainMs: 100 },
    app: {
      migrate: undefined,
      health: { path: '/healthz', intervalMs: 50, timeoutMs: 1000, healthyAfter: 2, deadlineSec: 10 },
      smoke: [{ path: '/version', expectStatus: 200 }],
      observe: { seconds: 1, intervalMs: 100, maxFailures: 2 },
      keepReleases: KEEP_RELEASES,
    },
    serveEnv: { LOG_LEVEL: 'warn' },
  })
  const { app, url, keys } = rig
  const production = { nginx: rig.nginx }
  const pid = rig.agent().child.pid as number
  const token = { authorization: `Bearer ${keys.statusToken}` }

  const post = async (path: string, body: object): Promise<string> => {
    const text = JSON.stringify(body)
    const res = await httpRequest(`${url}${path}`, { method: 'POST', headers: signedHeaders(keys, 'POST', path, text), body: text })
    if (res.status !== 202) throw new Error(`POST ${path}: ${res.status} ${res.body}`)
    return (JSON.parse(res.body) as { id: string }).id
  }
  const finished = async (id: string): Promise<Deploy> => {
    const deadline = Date.now() + 120_000
    for (;;) {
      const res = await httpRequest(`${url}/v1/deploys/${id}`, { headers: token })
      const deploy = JSON.parse(res.body) as Deploy
      if (deploy.finishedAt !== null) return deploy
      if (Date.now() > deadline) throw new Error(`deploy ${id} still ${deploy.state}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  const deploy = async (ref: string) => finished(await post(`/v1/apps/${app}/envs/${env}/deploys`, { ref }))
  const rollback = async () => finished(await post(`/v1/apps/${app}/envs/${env}/rollback`, {}))
  const containers = async () => {
    const { stdout } = await run('docker', [
      'ps',
      '--all',
      '--filter',
      `label=deploy-agent.app=${app}`,
      '--format',
      '{{.State}} {{.Label "deploy-agent.release"}}',
    ])
    return stdout.split('\n').filter(Boolean)
  }
  const images = async () => {
    const { stdout } = await run('docker', ['images', '--filter', `reference=${app}:*`, '--format', '{{.Tag}}'])
    return stdout.split('\n').filter(Boolean)
  }

  const first = await deploy(TAGS[0] as string)
  t.equal(first.state, 'SUCCEEDED', `the first deploy succeeded ${JSON.stringify(first.error)}`)
  // Warm up (one deploy and one rollback) so the baseline includes what every deploy loads once.
  t.equal((await deploy(TAGS[1] as string)).state, 'SUCCEEDED', 'the warm-up deploy succeeded')
  t.equal((await rollback()).state, 'SUCCEEDED', 'the warm-up rollback succeeded')
  await new Promise((r) => setTimeout(r, 500))
  const before = { rss: await rssMb(pid), fds: await openFds(pid) }

  const load = requestLoop(`http://127.0.0.1:${production.nginx.port}/version`, { concurrency: 2 })
  const outcomes: Array<{ op: string; state: string; error: string | null; served: string }> = []
  const worst = { containers: 0, images: 0 }
  const problems: string[] = []
  let next = 0
  const started = Date.now()
  for (let i = 0; i < OPERATIONS; i++) {
    let op: string
    let done: Deploy
    if (i % 2 === 0) {
      // The next release in turn that is not the one being served.
      const live = await servedVersion(production.nginx)
      while (TAGS[next % TAGS.length] === live) next++
      const ref = TAGS[next++ % TAGS.length] as string
      op = `deploy ${ref}`
      done = await deploy(ref)
    } else {
      op = 'rollback'
      done = await rollback()
    }
    const served = await servedVersion(production.nginx)
    outcomes.push({ op, state: done.state, error: done.error?.code ?? null, served })
    if (done.state !== 'SUCCEEDED') problems.push(`${i} ${op}: ${done.state} ${JSON.stringify(done.error)}`)
    if (served !== done.release) problems.push(`${i} ${op}: nginx serves ${served}, the deploy made ${done.release} live`)
    const [c, img] = await Promise.all([containers(), images()])
    worst.containers = Math.max(worst.containers, c.length)
    worst.images = Math.max(worst.images, img.length)
    if (c.filter((l) => l.startsWith('running')).length !== 1) problems.push(`${i} ${op}: running containers: ${c.join('; ')}`)
  }
  const seconds = (Date.now() - started) / 1000
  const { ok, retried, failures } = await load.stop()
  await new Promise((r) => setTimeout(r, 500))
  const after = { rss: await rssMb(pid), fds: await openFds(pid) }

  t.comment(
    `${OPERATIONS} operations in ${seconds.toFixed(0)} s: ${JSON.stringify(countBy(outcomes, (o) => `${o.op.split(' ')[0]} ${o.state}`))}`,
  )
  t.comment(
    `request loop through nginx: ${ok} answered 200, ${retried} resent after nginx closed an idle connection, ${failures.length} failed`,
  )
  t.comment(
    `agent open fds: ${before.fds} before, ${after.fds} after; RSS: ${before.rss.toFixed(1)} MB before, ${after.rss.toFixed(1)} MB after`,
  )
  t.comment(`most containers of the app at once: ${worst.containers}; most images: ${worst.images} (keepReleases ${KEEP_RELEASES})`)
  t.same(problems, [], 'every deploy and rollback succeeded, nginx served its release, and exactly one container ran after each')
  t.ok(ok > OPERATIONS, `the loop made ${ok} requests`)
  t.same(failures, [], 'zero failed requests through nginx')
  t.ok(worst.containers <= 2, `never more containers than the live one and the standby (${worst.containers})`)
  t.ok(worst.images <= KEEP_RELEASES, `never more images than keepReleases (${worst.images})`)
  const end = await containers()
  t.equal(end.length, 2, `the live container and the standby remain: ${end.join('; ')}`)
  t.ok(after.fds - before.fds < 20, `open file descriptors grew by less than 20 (${after.fds - before.fds})`)
  t.ok(after.rss - before.rss < 60, `RSS grew by less than 60 MB (${(after.rss - before.rss).toFixed(1)} MB)`)
})
