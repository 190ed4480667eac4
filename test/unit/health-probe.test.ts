import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import t from 'tap'
import { HealthError, isAbortError, probeHttp, runSmoke } from '../../agent/health/index.js'
import { joinUrl } from '../../agent/health/smoke.js'
import { freePort } from '../helpers/ports.js'

type Handler = (req: IncomingMessage, res: ServerResponse) => void

// A loopback server for one test, closed (with its open connections) in the teardown.
async function serve(t: { teardown: (fn: () => unknown) => void }, handler: Handler): Promise<string> {
  const server = createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  return `http://127.0.0.1:${address.port}`
}

const status =
  (code: number): Handler =>
  (_req, res) => {
    res.statusCode = code
    res.end(String(code))
  }
const hang: Handler = () => {}

t.test('probeHttp: 2xx and 3xx pass, redirects are not followed', async (t) => {
  const base = await serve(t, (req, res) => {
    if (req.url === '/moved') {
      res.writeHead(302, { location: '/missing' })
      res.end()
      return
    }
    res.end('ok')
  })
  const ok = await probeHttp(`${base}/`, 1000)
  t.equal(ok.ok, true)
  t.equal(ok.status, 200)
  t.equal(ok.error, undefined)
  t.type(ok.ms, 'number')
  const moved = await probeHttp(`${base}/moved`, 1000)
  t.same({ ok: moved.ok, status: moved.status }, { ok: true, status: 302 })
})

t.test('probeHttp: 4xx, 5xx, refused and timed-out probes are failed results', async (t) => {
  const s404 = await probeHttp(`${await serve(t, status(404))}/`, 1000)
  t.same({ ok: s404.ok, status: s404.status, error: s404.error }, { ok: false, status: 404, error: 'HTTP 404' })
  const s503 = await probeHttp(`${await serve(t, status(503))}/`, 1000)
  t.same({ ok: s503.ok, status: s503.status }, { ok: false, status: 503 })

  const refused = await probeHttp(`http://127.0.0.1:${await freePort()}/`, 1000)
  t.equal(refused.ok, false)
  t.equal(refused.status, undefined)
  t.match(refused.error, /ECONNREFUSED/)

  const slow = await probeHttp(`${await serve(t, hang)}/`, 50)
  t.equal(slow.ok, false)
  t.equal(slow.error, 'timed out after 50 ms')
  t.ok(slow.ms >= 40 && slow.ms < 1000, `took ${slow.ms} ms`)
})

t.test('probeHttp: a probe cancelled by the caller rejects with an AbortError, not a failed result', async (t) => {
  const base = await serve(t, hang)
  const controller = new AbortController()
  setTimeout(() => controller.abort(), 30)
  const err: unknown = await probeHttp(`${base}/`, 5000, controller.signal).catch((e: unknown) => e)
  t.ok(isAbortError(err), 'AbortError')
  t.notOk(err instanceof HealthError)

  await t.rejects(probeHttp(`${base}/`, 5000, AbortSignal.abort()), { name: 'AbortError' }, 'already aborted')
  const custom = new AbortController()
  custom.abort(new Error('shutting down'))
  await t.rejects(probeHttp(`${base}/`, 5000, custom.signal), { name: 'AbortError' }, 'whatever the abort reason')
})

t.test('runSmoke: every check answering its expected status passes, with results', async (t) => {
  const base = await serve(t, (req, res) => {
    if (req.url === '/') {
      res.end('home')
      return
    }
    if (req.url === '/old') {
      res.writeHead(301, { location: '/' })
      res.end()
      return
    }
    res.statusCode = 404
    res.end()
  })
  const results = await runSmoke(
    `${base}/`,
    [
      { path: '/', expectStatus: 200 },
      { path: 'old', expectStatus: 301 },
      { path: '/nope', expectStatus: 404 },
    ],
    1000,
  )
  t.same(
    results.map((r) => [r.path, r.ok, r.got]),
    [
      ['/', true, 200],
      ['old', true, 301],
      ['/nope', true, 404],
    ],
  )
})

t.test('runSmoke: a status mismatch fails with smoke_failed naming path, expected and got', async (t) => {
  const base = await serve(t, (req, res) => {
    res.statusCode = req.url === '/api' ? 500 : 200
    res.end()
  })
  const err = await runSmoke(
    base,
    [
      { path: '/', expectStatus: 200 },
      { path: '/api', expectStatus: 200 },
      { path: '/gone', expectStatus: 404 },
    ],
    1000,
  ).catch((e: unknown) => e)
  t.ok(err instanceof HealthError)
  t.match(err, { code: 'smoke_failed', statusCode: 502 })
  t.match((err as Error).message, 'GET /api: expected 200, got 500')
  t.match((err as Error).message, 'GET /gone: expected 404, got 200')
  t.notMatch((err as Error).message, 'GET /:')
})

t.test('runSmoke: an unreachable candidate fails with the network error as got', async (t) => {
  const port = await freePort()
  await t.rejects(runSmoke(`http://127.0.0.1:${port}`, [{ path: '/', expectStatus: 200 }], 500), {
    code: 'smoke_failed',
    message: /GET \/: expected 200, got .*ECONNREFUSED/,
  })
})

t.test('joinUrl: one slash between base and path', async (t) => {
  t.equal(joinUrl('http://h:1', '/a'), 'http://h:1/a')
  t.equal(joinUrl('http://h:1/', 'a'), 'http://h:1/a')
  t.equal(joinUrl('http://h:1/base//', '/a?b=1'), 'http://h:1/base/a?b=1')
})
