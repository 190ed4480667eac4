// GET /v1/apps/:app/envs/:env/logs through inject, with a real coordinator over an engine of plain records: the
// query's bounds, the 404s (app, env, service, no live release), the status token, and scrubbed NDJSON lines.
import t, { type Test } from 'tap'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { DeployCoordinator } from '../../agent/deploy/coordinator.js'
import type { Instance } from '../../agent/deploy/runtime.js'
import { appLogStream } from '../../agent/http/follow.js'
import { MAX_APP_LOG_FOLLOWERS_PER_ENV, parseSince, parseTail } from '../../agent/http/routes/app-logs.js'
import { buildTestAgent, testConfigDocument } from '../helpers/agent.js'
import { FakeRouter, FakeRuntime } from '../helpers/fake-runtime.js'
import { tempDir } from '../helpers/tmp.js'

const live: Instance = {
  id: 'c-live',
  release: 'r1',
  commit: 'a'.repeat(40),
  deployId: 'd_000000000001',
  port: 18001,
  image: 'web:staging-r1',
  running: true,
  created: new Date(),
}

async function setUp(t: Test, routed: number | null = 18001) {
  const dir = await tempDir(t)
  const runtime = new FakeRuntime([{ ...live }])
  runtime.output.set('c-live', [
    'started',
    'DATABASE_URL=postgresql://app:hunter2-secret@db/app',
    ...Array.from({ length: 300 }, (_, i) => `req ${i}`),
  ])
  const base = testConfigDocument(dir) as { apps: { web: { envs: { staging: Record<string, unknown> } } } }
  base.apps.web.envs.staging.proxy = { upstreamFile: join(dir, 'up.conf') }
  const agent = await buildTestAgent(dir, {
    extra: { apps: base.apps },
    deployments: async (config, store) =>
      new DeployCoordinator({
        config,
        store,
        pipeline: () => ({ run: async (d) => d, recover: async () => false }),
        runtime,
        router: () => new FakeRouter(routed),
        logger: (await import('../../agent/observability/logger.js')).createLogger({ level: 'silent' }),
      }),
  })
  t.teardown(() => agent.close())
  const get = (url: string, headers: Record<string, string> = { authorization: `Bearer ${agent.keys.statusToken}` }) =>
    agent.app.inject({ method: 'GET', url, headers })
  return { agent, get, runtime }
}

const url = (query = '') => `/v1/apps/web/envs/staging/logs${query}`
const ndjson = (body: string) =>
  body
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { at: string; stream: string; line: string })

t.test('API app logs: the last 200 lines by default, as NDJSON { at, stream, line }, secrets scrubbed', async (t) => {
  const { get } = await setUp(t)
  const res = await get(url())
  t.equal(res.statusCode, 200, res.body.slice(0, 300))
  t.match(res.headers['content-type'], /^application\/x-ndjson/)
  const lines = ndjson(res.body)
  t.equal(lines.length, 200)
  t.equal(lines.at(-1)?.line, 'req 299')
  t.match(lines[0], { at: /^\d{4}-\d\d-\d\dT/, stream: 'stdout' })
  const few = ndjson((await get(url('?tail=302'))).body)
  t.equal(few.length, 302)
  t.notOk(
    few.some((l) => l.line.includes('hunter2-secret')),
    'the password in the URL is scrubbed',
  )
  t.ok(few.some((l) => l.line.includes('[redacted]')))
})

t.test('API app logs: tail, since and follow are bounded and checked, each 400 naming the problem', async (t) => {
  const { get } = await setUp(t)
  for (const [query, what] of [
    ['?tail=5001', /tail must be a whole number of lines from 0 to 5000/],
    ['?tail=-1', /tail/],
    ['?tail=ten', /tail/],
    ['?since=yesterday', /since must be an ISO time/],
    ['?since=1', null],
    ['?follow=yes', /follow/],
    ['?colour=1', /unknown field/],
    ['?service=Web!', /service/],
  ] as const) {
    const res = await get(url(query))
    if (what === null) {
      t.equal(res.statusCode, 200, `${query} is fine`)
      continue
    }
    t.equal(res.statusCode, 400, query)
    t.equal(res.json().error.code, 'invalid_request', query)
    t.match(res.json().error.message, what, query)
  }
  t.equal(parseTail(undefined), 200)
  t.equal(parseTail('5000'), 5000)
  t.equal(parseSince('1700000000'), 1700000000)
  t.equal(parseSince('2026-05-01T12:00:00Z'), Date.parse('2026-05-01T12:00:00Z') / 1000)
  t.throws(() => parseSince('May 1'), { code: 'invalid_request' })
})

t.test('API app logs: unknown app, env or service and no live release are 404s with their own codes', async (t) => {
  const { get } = await setUp(t)
  t.equal((await get('/v1/apps/nope/envs/staging/logs')).statusCode, 404)
  t.equal((await get('/v1/apps/web/envs/nope/logs')).statusCode, 404)
  const service = await get(url('?service=worker'))
  t.equal(service.statusCode, 404)
  t.equal(service.json().error.code, 'unknown_service')
  t.match(service.json().error.message, /no service "worker"/)
  t.equal((await get(url('?service=web'))).statusCode, 200, 'web is the one service')
  const { get: getIdle } = await setUp(t, null)
  const none = await getIdle(url())
  t.equal(none.statusCode, 404)
  t.equal(none.json().error.code, 'no_live_release')
  t.match(none.json().error.message, /web\/staging has no live release/)
})

t.test('API app logs: the status token is needed', async (t) => {
  const { get } = await setUp(t)
  t.equal((await get(url(), {})).statusCode, 401)
  t.equal((await get(url(), { authorization: 'Bearer wrong-token-wrong-token' })).statusCode, 401)
})

t.test('API app logs: followers are bounded and a follower that leaves gives its place back', async (t) => {
  const { agent, runtime } = await setUp(t)
  await agent.app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = agent.app.server.address() as AddressInfo
  const headers = { authorization: `Bearer ${agent.keys.statusToken}` }
  const follow = async () => {
    const gone = new AbortController()
    const res = await fetch(`http://127.0.0.1:${port}${url('?follow=1&tail=1')}`, { headers, signal: gone.signal })
    return { res, gone }
  }
  const open = []
  for (let i = 0; i < MAX_APP_LOG_FOLLOWERS_PER_ENV; i++) {
    const f = await follow()
    t.equal(f.res.status, 200)
    open.push(f)
  }
  const refused = await follow()
  t.equal(refused.res.status, 503)
  t.equal(refused.res.headers.get('retry-after'), '5')
  t.match(await refused.res.json(), { error: { code: 'too_many_followers', message: /app logs|follow the log of web\/staging/ } })
  const first = open.shift()
  const reader = (first?.res.body as ReadableStream<Uint8Array>).getReader()
  const { value } = await reader.read()
  t.match(new TextDecoder().decode(value), /"event":"heartbeat"/, 'a follower gets a heartbeat at once')
  first?.gone.abort()
  let again = await follow()
  for (let i = 0; again.res.status === 503 && i < 50; i++) {
    await new Promise((r) => setTimeout(r, 50))
    again = await follow()
  }
  t.equal(again.res.status, 200, 'the place of the follower that left is free again')
  for (const f of [...open, again]) f.gone.abort()
  for (let i = 0; runtime.following > 0 && i < 50; i++) await new Promise((r) => setTimeout(r, 50))
  t.equal(runtime.following, 0, "the engine's streams are closed when their clients go away")
})

t.test('API app logs: a quiet follow gets heartbeats, and the line after them is not lost', async (t) => {
  async function* slow() {
    await new Promise((r) => setTimeout(r, 250))
    yield { at: '2026-01-01T00:00:00.000Z', stream: 'stderr' as const, line: 'late password=hunter22' }
  }
  let out = ''
  for await (const chunk of appLogStream(slow(), (s) => s.replace('hunter22', '[redacted]'), { follow: true, heartbeatMs: 50 }))
    out += String(chunk)
  const events = ndjson(out) as Array<{ event?: string; line?: string; stream?: string }>
  t.ok(events.filter((e) => e.event === 'heartbeat').length >= 3, 'heartbeats while quiet')
  t.same(events.at(-1), { at: '2026-01-01T00:00:00.000Z', stream: 'stderr', line: 'late password=[redacted]' })
})
