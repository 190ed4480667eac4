// The env traffic watch on a real temp log file: the metric's counts by release and class, the OBSERVING check,
// alerts after it, and tailers that follow the config.
import { appendFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { configSchema, type Config } from '../../agent/config/schema.js'
import type { Notice } from '../../agent/notify/notifier.js'
import { TrafficWatch } from '../../agent/observability/env-traffic.js'
import { createLogger } from '../../agent/observability/logger.js'
import { Metrics } from '../../agent/observability/metrics.js'
import { tempDir } from '../helpers/tmp.js'

const BLUE = 18011
const GREEN = 18012
const logger = createLogger({ level: 'silent' })

function config(accessLog: string | undefined, observe: Record<string, unknown> = {}): Config {
  return configSchema.parse({
    audience: 'deploy.example.com',
    apps: {
      shop: {
        repo: '/srv/shop.git',
        observe: { minRequests: 4, maxErrorRate: 0.25, ...observe },
        envs: {
          production: {
            ref: 'tag:v*',
            ports: [BLUE, GREEN],
            proxy: { upstreamFile: '/etc/nginx/shop.conf', ...(accessLog ? { accessLog } : {}) },
          },
        },
      },
    },
  })
}

function line(status: number, port: number, upstreamStatus = String(status), at = Date.now()): string {
  return `${JSON.stringify({ msec: at / 1000, status, upstream_addr: `127.0.0.1:${port}`, upstream_status: upstreamStatus, request_time: 0.001 })}\n`
}

async function until(what: string, done: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

async function counts(metrics: Metrics): Promise<Record<string, number>> {
  const metric = await metrics.registry.getSingleMetric('deploy_agent_upstream_responses_total')?.get()
  return Object.fromEntries((metric?.values ?? []).map((v) => [`${v.labels.release} ${v.labels.class}`, v.value]))
}

async function rig(t: Test, observe: Record<string, unknown> = {}) {
  const path = join(await tempDir(t), 'shop-production.json')
  await writeFile(path, line(500, BLUE)) // logged before the agent started: never counted
  const metrics = new Metrics({ defaultMetrics: false })
  const notices: Notice[] = []
  let live: { release: string; port: number } | null = { release: 'v1', port: BLUE }
  const watch = new TrafficWatch({
    logger,
    metrics,
    notify: (n) => notices.push(n),
    live: () => live,
    pollMs: 10,
  })
  t.teardown(() => watch.close())
  await watch.sync(config(path, observe))
  return { path, metrics, notices, watch, setLive: (l: typeof live) => (live = l) }
}

t.test('traffic watch: counts every answer by release and class for the metric', async (t) => {
  const { path, metrics, watch } = await rig(t)
  await appendFile(path, line(200, BLUE) + line(200, BLUE) + line(404, BLUE) + line(503, BLUE) + line(200, 9999))
  await until('five answers', async () => Object.values(await counts(metrics)).reduce((a, b) => a + b, 0) === 5)
  t.same(await counts(metrics), { 'v1 2xx': 2, 'v1 4xx': 1, 'v1 5xx': 1, 'unknown 2xx': 1 }, 'a port not of the env is unknown')
  // The new release answers between the switch and OBSERVING: held until its name is known.
  await appendFile(path, line(502, GREEN, '502') + line(200, GREEN))
  await new Promise((r) => setTimeout(r, 100))
  t.same(await counts(metrics), { 'v1 2xx': 2, 'v1 4xx': 1, 'v1 5xx': 1, 'unknown 2xx': 1 })
  watch.check({ app: 'shop', env: 'production' }, { port: GREEN, release: 'v2' })?.stop()
  t.match(await counts(metrics), { 'v2 upstream-error': 1, 'v2 2xx': 1 })
})

t.test('traffic watch: a check fails the new release on its error rate, and only its port counts', async (t) => {
  const { path, metrics, watch } = await rig(t)
  const check = watch.check({ app: 'shop', env: 'production' }, { port: GREEN, release: 'v2' })
  t.ok(check, 'the env has an accessLog')
  let reason: string | null = null
  void check?.failed.then((r) => (reason = r))
  await appendFile(path, line(500, BLUE).repeat(10) + line(200, GREEN).repeat(3))
  await until('13 answers', async () => Object.values(await counts(metrics)).reduce((a, b) => a + b, 0) === 13)
  t.equal(reason, null, "the old release's errors do not fail the new one")
  await appendFile(path, line(500, GREEN) + line(500, GREEN))
  await until('the verdict', () => reason !== null)
  t.match(reason, /error rate of the new release's answers through nginx was 40% \(2 of 5 in 2 s/)
  t.match(await counts(metrics), { 'v2 5xx': 2, 'v2 2xx': 3, 'v1 5xx': 10 })
  check?.stop()
})

t.test('traffic watch: after OBSERVING the live release errors raise alerts', async (t) => {
  const { path, notices, watch, setLive } = await rig(t, { alert: { errorsPerMinute: 3 } })
  const check = watch.check({ app: 'shop', env: 'production' }, { port: GREEN, release: 'v2' })
  await appendFile(path, line(200, GREEN).repeat(30) + line(500, GREEN).repeat(1))
  await new Promise((r) => setTimeout(r, 100))
  check?.stop()
  setLive({ release: 'v2', port: GREEN })
  t.same(notices, [], 'no alerts during OBSERVING')
  await appendFile(path, line(500, GREEN).repeat(4) + line(500, BLUE).repeat(10))
  await until('an alert', () => notices.length > 0)
  await new Promise((r) => setTimeout(r, 100))
  t.same(notices, [
    {
      event: 'traffic.errors',
      app: 'shop',
      env: 'production',
      release: 'v2',
      reason: '4 5xx or upstream errors in the last minute (more than 3)',
    },
  ])
})

t.test('traffic watch: an env without accessLog has no check, and a reload that removes it stops the tailer', async (t) => {
  const { path, metrics, watch } = await rig(t)
  await watch.sync(config(undefined))
  t.equal(watch.check({ app: 'shop', env: 'production' }, { port: GREEN, release: 'v2' }), null)
  t.equal(watch.check({ app: 'other', env: 'production' }, { port: GREEN, release: 'v2' }), null)
  await appendFile(path, line(200, BLUE))
  await new Promise((r) => setTimeout(r, 100))
  t.same(await counts(metrics), {}, 'nothing read after the removal')
  await watch.sync(config(path))
  await appendFile(path, line(200, BLUE))
  await until('the new tailer', async () => (await counts(metrics))['v1 2xx'] === 1)
  t.pass('a reload that adds it back starts at the end again')
})
