import t from 'tap'
import { HealthError, isAbortError, observe, probeHttp, type Clock } from '../../agent/health/index.js'
import { scripted } from '../helpers/scripted-server.js'

// The first fetch of a process loads its HTTP client: take that time outside the timed windows below.
await probeHttp('http://127.0.0.1:1/', 100)

t.test('observe: a window of good probes is healthy', async (t) => {
  const server = await scripted(t, [200])
  const started = Date.now()
  const outcome = await observe({ url: server.url, seconds: 0.2, intervalMs: 10, timeoutMs: 500, maxFailures: 0 })
  t.same(outcome, { healthy: true })
  t.ok(Date.now() - started >= 190, 'ran the whole window')
  t.ok(server.hits() >= 2, `${server.hits()} probes`)
})

t.test('observe: up to maxFailures failed probes are tolerated', async (t) => {
  const server = await scripted(t, [200, 500, 200, 502, 200])
  const failures: number[] = []
  const outcome = await observe({
    url: server.url,
    seconds: 0.3,
    intervalMs: 5,
    timeoutMs: 500,
    maxFailures: 2,
    onResult: (r) => failures.push(r.failures),
  })
  t.same(outcome, { healthy: true })
  t.same(failures.slice(0, 5), [0, 1, 1, 2, 2])
  t.equal(failures.at(-1), 2)
})

t.test('observe: more than maxFailures failed probes is unhealthy, saying how many', async (t) => {
  const server = await scripted(t, [200, 500, 200, 503, 200, 500])
  const started = Date.now()
  const outcome = await observe({ url: server.url, seconds: 30, intervalMs: 5, timeoutMs: 500, maxFailures: 2 })
  t.same(outcome, { healthy: false, reason: '3 of 6 probes failed (more than maxFailures 2); last: HTTP 500' })
  t.ok(Date.now() - started < 5000, 'decided without waiting for the end of the window')
})

t.test('observe: a container no longer alive is unhealthy at once', async (t) => {
  const server = await scripted(t, [200])
  let checks = 0
  const outcome = await observe({
    url: server.url,
    seconds: 30,
    intervalMs: 5,
    timeoutMs: 500,
    maxFailures: 100,
    containerAlive: async () => ++checks < 3,
  })
  t.same(outcome, { healthy: false, reason: 'the container exited or is restarting' })
  t.equal(server.hits(), 2)
})

t.test('observe: the container is checked once more at the end of the window', async (t) => {
  let now = 0
  const clock: Clock = {
    now: () => now,
    sleep: async (ms) => {
      now += ms
    },
  }
  const alive = [true, true, false]
  let i = 0
  const outcome = await observe({
    url: 'http://unused/',
    seconds: 1,
    intervalMs: 1000,
    timeoutMs: 100,
    maxFailures: 0,
    clock,
    probe: async () => ({ ok: true, status: 200, ms: 1 }),
    containerAlive: async () => alive[i++] ?? false,
  })
  t.same(outcome, { healthy: false, reason: 'the container exited or is restarting' })
  t.equal(i, 3)
})

t.test('observe: cancelling rejects with an AbortError, and the cancelled probe is not a failure', async (t) => {
  const server = await scripted(t, [200, 'hang'])
  const controller = new AbortController()
  const failures: number[] = []
  const err = await observe({
    url: server.url,
    seconds: 30,
    intervalMs: 5,
    timeoutMs: 10_000,
    maxFailures: 0,
    signal: controller.signal,
    // Cancelled once the first probe has answered, while the second one hangs (a fixed delay raced a loaded host).
    onResult: (r) => {
      failures.push(r.failures)
      setTimeout(() => controller.abort(), 20)
    },
  }).catch((e: unknown) => e)
  t.ok(isAbortError(err), 'AbortError')
  t.notOk(err instanceof HealthError)
  t.same(failures, [0])

  const between = new AbortController()
  const pending = observe({ url: server.url, seconds: 30, intervalMs: 60_000, timeoutMs: 100, maxFailures: 5, signal: between.signal })
  setTimeout(() => between.abort(), 20)
  await t.rejects(pending, { name: 'AbortError' }, 'while sleeping between probes')

  await t.rejects(
    observe({
      url: server.url,
      seconds: 30,
      intervalMs: 5,
      timeoutMs: 100,
      maxFailures: 5,
      signal: AbortSignal.abort(),
      containerAlive: async () => true,
    }),
    { name: 'AbortError' },
    'already aborted',
  )
})
