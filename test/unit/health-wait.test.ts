import t from 'tap'
import { HealthError, isAbortError, waitHealthy, type Clock, type DockerHealth, type ProbeFn } from '../../agent/health/index.js'
import { freePort } from '../helpers/ports.js'
import { scripted as scriptedAt } from '../helpers/scripted-server.js'

const scripted = (t: { teardown: (fn: () => unknown) => void }, script: Array<number | 'hang'>) => scriptedAt(t, script, '/healthz')

const fast = { intervalMs: 5, timeoutMs: 500, deadlineMs: 5000 }

t.test('waitHealthy: passes after healthyAfter consecutive good probes, reporting each', async (t) => {
  const server = await scripted(t, [200])
  const streaks: number[] = []
  await waitHealthy({ url: server.url, ...fast, healthyAfter: 3, onResult: (r) => streaks.push(r.streak) })
  t.same(streaks, [1, 2, 3])
  t.equal(server.hits(), 3)
})

t.test('waitHealthy: a failure resets the streak (flapping is not healthy)', async (t) => {
  const server = await scripted(t, [200, 200, 503, 200, 500, 200, 200, 200])
  const seen: Array<[boolean, number]> = []
  await waitHealthy({ url: server.url, ...fast, healthyAfter: 3, onResult: (r) => seen.push([r.ok, r.streak]) })
  t.same(seen, [
    [true, 1],
    [true, 2],
    [false, 0],
    [true, 1],
    [false, 0],
    [true, 1],
    [true, 2],
    [true, 3],
  ])
})

t.test('waitHealthy: the deadline fails with health_check_failed and the last failure reason', async (t) => {
  const server = await scripted(t, [200, 503])
  const started = Date.now()
  const err = await waitHealthy({ url: server.url, intervalMs: 5, timeoutMs: 500, deadlineMs: 150, healthyAfter: 2 }).catch(
    (e: unknown) => e,
  )
  t.ok(err instanceof HealthError)
  t.match(err, { code: 'health_check_failed', statusCode: 502 })
  t.match((err as Error).message, /not healthy within 150 ms: HTTP 503$/)
  t.ok(Date.now() - started < 1000, 'stops at the deadline')
  t.ok(server.hits() > 2)
})

t.test('waitHealthy: an unreachable candidate names the connection error', async (t) => {
  const url = `http://127.0.0.1:${await freePort()}/`
  await t.rejects(waitHealthy({ url, intervalMs: 5, timeoutMs: 100, deadlineMs: 60, healthyAfter: 1 }), {
    code: 'health_check_failed',
    message: /ECONNREFUSED/,
  })
})

t.test('waitHealthy: a probe still running at the deadline is cut and not counted as a failure', async (t) => {
  const server = await scripted(t, ['hang'])
  const results: unknown[] = []
  const started = Date.now()
  await t.rejects(
    waitHealthy({
      url: server.url,
      intervalMs: 5,
      timeoutMs: 10_000,
      deadlineMs: 100,
      healthyAfter: 1,
      onResult: (r) => results.push(r),
    }),
    { code: 'health_check_failed', message: /not healthy within 100 ms: no probe answered$/ },
  )
  t.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`)
  t.same(results, [])
})

t.test('waitHealthy: probes that time out are failures named by their timeout', async (t) => {
  const server = await scripted(t, ['hang'])
  await t.rejects(waitHealthy({ url: server.url, intervalMs: 5, timeoutMs: 30, deadlineMs: 150, healthyAfter: 1 }), {
    code: 'health_check_failed',
    message: /not healthy within 150 ms: timed out after 30 ms$/,
  })
})

t.test('waitHealthy: Docker health gates success until it says healthy', async (t) => {
  const server = await scripted(t, [200])
  const answers: DockerHealth[] = ['starting', 'starting', 'healthy']
  let asked = 0
  const streaks: number[] = []
  await waitHealthy({
    url: server.url,
    ...fast,
    healthyAfter: 2,
    dockerHealth: async () => answers[Math.min(asked++, answers.length - 1)] ?? null,
    onResult: (r) => streaks.push(r.streak),
  })
  t.equal(asked, 3, 'asked Docker once the streak was reached, until healthy')
  t.same(streaks, [1, 2, 3, 4])
})

t.test('waitHealthy: Docker unhealthy until the deadline fails, naming Docker', async (t) => {
  const server = await scripted(t, [200])
  await t.rejects(
    waitHealthy({
      url: server.url,
      intervalMs: 5,
      timeoutMs: 500,
      deadlineMs: 80,
      healthyAfter: 1,
      dockerHealth: async () => 'unhealthy',
    }),
    { code: 'health_check_failed', message: /Docker reports the container unhealthy/ },
  )
})

t.test('waitHealthy: a container without a Docker healthcheck (null) is judged by HTTP alone', async (t) => {
  const server = await scripted(t, [200])
  await waitHealthy({ url: server.url, ...fast, healthyAfter: 1, dockerHealth: async () => null })
  t.equal(server.hits(), 1)
})

t.test('waitHealthy: an exited container fails at once with container_exited', async (t) => {
  const server = await scripted(t, [503])
  let checks = 0
  const started = Date.now()
  const err = await waitHealthy({
    url: server.url,
    intervalMs: 5,
    timeoutMs: 500,
    deadlineMs: 60_000,
    healthyAfter: 1,
    containerRunning: async () => ++checks < 3,
  }).catch((e: unknown) => e)
  t.match(err, { code: 'container_exited', message: /HTTP 503/ })
  t.equal(server.hits(), 3, 'no probe after the one beside the check that saw the container gone')
  t.ok(Date.now() - started < 1000)
})

t.test("waitHealthy: Docker's answers are read while the probe runs; its health only beside the last probe", async (t) => {
  const events: string[] = []
  const probe: ProbeFn = async () => {
    events.push('probe')
    await new Promise((resolve) => setTimeout(resolve, 20))
    events.push('answered')
    return { ok: true, status: 200, ms: 20 }
  }
  await waitHealthy({
    url: 'http://127.0.0.1:1/healthz',
    intervalMs: 1,
    timeoutMs: 500,
    deadlineMs: 60_000,
    healthyAfter: 2,
    probe,
    containerRunning: async () => (events.push('running'), true),
    dockerHealth: async () => (events.push('docker'), 'healthy'),
  })
  t.same(events, ['running', 'probe', 'answered', 'running', 'docker', 'probe', 'answered'])
})

t.test('waitHealthy: cancelling rejects with an AbortError, not a health failure', async (t) => {
  const server = await scripted(t, [503, 'hang'])
  const controller = new AbortController()
  const results: boolean[] = []
  setTimeout(() => controller.abort(), 50)
  const err = await waitHealthy({
    url: server.url,
    intervalMs: 5,
    timeoutMs: 5000,
    deadlineMs: 60_000,
    healthyAfter: 1,
    signal: controller.signal,
    onResult: (r) => results.push(r.ok),
  }).catch((e: unknown) => e)
  t.ok(isAbortError(err), 'AbortError')
  t.notOk(err instanceof HealthError)
  t.same(results, [false], 'the cancelled probe was not reported as a result')

  const during = new AbortController()
  const asleep = waitHealthy({
    url: server.url,
    intervalMs: 60_000,
    timeoutMs: 100,
    deadlineMs: 120_000,
    healthyAfter: 5,
    signal: during.signal,
  })
  setTimeout(() => during.abort(), 20)
  await t.rejects(asleep, { name: 'AbortError' }, 'while sleeping between probes')
})

t.test('waitHealthy: time comes from the injected clock', async (t) => {
  let now = 0
  const slept: number[] = []
  const clock: Clock = {
    now: () => now,
    sleep: async (ms) => {
      slept.push(ms)
      now += ms
    },
  }
  const probe = async () => ({ ok: false, error: 'HTTP 500', ms: 0 })
  await t.rejects(
    waitHealthy({ url: 'http://unused/', intervalMs: 400, timeoutMs: 100, deadlineMs: 1000, healthyAfter: 1, clock, probe }),
    { code: 'health_check_failed', message: 'http://unused/ not healthy within 1000 ms: HTTP 500' },
  )
  t.same(slept, [400, 400, 200], 'the last sleep stops at the deadline')
})
