import t from 'tap'
import {
  classifyAnswers,
  parseAccessLine,
  ReleaseTraffic,
  SlidingCounts,
  TrafficAlerts,
  type AccessRecord,
} from '../../agent/health/traffic.js'

const NEW = 18012
const OLD = 18011

function rec(atMs: number, status: number, upstreamStatus = String(status), upstreamAddr = `127.0.0.1:${NEW}`): AccessRecord {
  return { atMs, status, upstreamAddr, upstreamStatus }
}

t.test('traffic: a deploy_agent log line parses; other lines are skipped', async (t) => {
  const line =
    '{"msec":1765100000.123,"status":502,"upstream_addr":"127.0.0.1:1, 127.0.0.1:2","upstream_status":"502, 200","request_time":0.004}'
  t.same(parseAccessLine(line), { atMs: 1765100000123, status: 502, upstreamAddr: '127.0.0.1:1, 127.0.0.1:2', upstreamStatus: '502, 200' })
  t.equal(parseAccessLine('127.0.0.1 - - [07/Dec/2026] "GET / HTTP/1.1" 200'), null)
  t.equal(parseAccessLine('{"msec":1765100000.1,"sta'), null, 'a torn line')
  t.equal(parseAccessLine('{"status":200}'), null)
  t.equal(parseAccessLine('null'), null)
})

t.test('traffic: answers are classed per upstream tried', async (t) => {
  t.same(classifyAnswers(rec(0, 200)), [{ port: NEW, class: '2xx' }])
  t.same(classifyAnswers(rec(0, 500)), [{ port: NEW, class: '5xx' }])
  t.same(classifyAnswers(rec(0, 404)), [{ port: NEW, class: '4xx' }])
  t.same(classifyAnswers(rec(0, 301)), [{ port: NEW, class: '3xx' }])
  t.same(classifyAnswers(rec(0, 101)), [{ port: NEW, class: '1xx' }])
  // nginx could not connect to the first server and the second answered: the first one failed, the request did not.
  t.same(classifyAnswers(rec(0, 200, '502, 200', `127.0.0.1:${NEW}, 127.0.0.1:${OLD}`)), [
    { port: NEW, class: 'upstream-error' },
    { port: OLD, class: '2xx' },
  ])
  t.same(classifyAnswers(rec(0, 504, '504')), [{ port: NEW, class: 'upstream-error' }], 'timed out')
  t.same(classifyAnswers(rec(0, 502, '-')), [{ port: NEW, class: 'upstream-error' }], 'no answer at all')
  t.same(classifyAnswers(rec(0, 499, '-')), [{ port: NEW, class: '4xx' }], 'the client left: not the release')
  // No live upstream left: nginx logs the group's name as the address.
  t.same(classifyAnswers(rec(0, 502, '502', 'sample_production')), [{ port: null, class: 'upstream-error' }])
  t.same(classifyAnswers(rec(0, 502, '', '')), [{ port: null, class: 'upstream-error' }], 'nginx answered without an upstream')
  t.same(classifyAnswers(rec(0, 200, '', '')), [], 'a request no upstream served is no release answer')
  t.same(classifyAnswers(rec(0, 200, '404 : 200', `127.0.0.1:${NEW} : [::1]:${OLD}`)), [
    { port: NEW, class: '4xx' },
    { port: OLD, class: '2xx' },
  ])
  t.same(
    classifyAnswers(rec(0, 200, '502, 200', `127.0.0.1:${NEW}, 127.0.0.1:${NEW}`)),
    [{ port: NEW, class: '2xx' }],
    'a port tried twice',
  )
})

t.test('traffic: the verdict waits for minRequests answers in the window', async (t) => {
  const v = new ReleaseTraffic(NEW, { maxErrorRate: 0.05, minRequests: 20 })
  for (let i = 0; i < 19; i++) t.equal(v.record(rec(1_000 + i * 10, 500)), null, `${i + 1} errors are too few to judge`)
  const reason = v.record(rec(1_200, 500))
  t.match(reason, /error rate of the new release's answers through nginx was 100% \(20 of 20 in 2 s were 5xx or upstream errors\)/)
  t.match(reason, /more than maxErrorRate 5%/)
})

t.test('traffic: an error rate at the threshold passes, above it fails', async (t) => {
  const v = new ReleaseTraffic(NEW, { maxErrorRate: 0.1, minRequests: 20 })
  for (let i = 0; i < 18; i++) t.equal(v.record(rec(1_000 + i, 200)), null)
  t.equal(v.record(rec(1_050, 500)), null)
  t.equal(v.record(rec(1_060, 500)), null, '2 of 20 is 10%: not more than maxErrorRate')
  t.match(v.record(rec(1_070, 502, '502')), /3 of 21/, '3 of 21 is above it')
})

t.test('traffic: only the new release port counts (and nginx errors with no upstream)', async (t) => {
  const v = new ReleaseTraffic(NEW, { maxErrorRate: 0.05, minRequests: 5 })
  for (let i = 0; i < 50; i++) t.equal(v.record(rec(1_000 + i, 500, '500', `127.0.0.1:${OLD}`)), null, 'the old release is not judged')
  for (let i = 0; i < 4; i++) t.equal(v.record(rec(1_100 + i, 200, '502, 200', `127.0.0.1:${OLD}, 127.0.0.1:${NEW}`)), null)
  // The old release's 50 errors never counted: 1 of 5 is the new release's only error.
  t.match(v.record(rec(1_200, 502, '502', 'sample_production')), /1 of 5 /)
})

t.test('traffic: a 502 from nginx with no live upstream counts against the new release', async (t) => {
  const v = new ReleaseTraffic(NEW, { maxErrorRate: 0.5, minRequests: 4 })
  for (let i = 0; i < 3; i++) t.equal(v.record(rec(1_000 + i, 502, '502', 'sample_production')), null)
  t.match(v.record(rec(1_004, 502, '', '')), /4 of 4/)
})

t.test('traffic: the window slides: errors older than 2 s no longer count', async (t) => {
  const v = new ReleaseTraffic(NEW, { maxErrorRate: 0.5, minRequests: 10 })
  for (let i = 0; i < 9; i++) t.equal(v.record(rec(10_000 + i, 500)), null)
  // 2 s later the nine errors have left the window: ten good answers, then one error, is 1 of 11.
  for (let i = 0; i < 10; i++) t.equal(v.record(rec(12_100 + i, 200)), null)
  t.equal(v.record(rec(12_200, 500)), null)
  // Inside the window they would all have counted: 9 errors + 1 more of 20 is 50%, then 11 of 21.
  const w = new ReleaseTraffic(NEW, { maxErrorRate: 0.5, minRequests: 10 })
  for (let i = 0; i < 9; i++) w.record(rec(10_000 + i, 500))
  for (let i = 0; i < 10; i++) w.record(rec(11_800 + i, 200))
  t.equal(w.record(rec(11_850, 500)), null, '10 of 20 is not more than 50%')
  t.match(w.record(rec(11_900, 500)), /11 of 21/)
})

t.test("traffic: an earlier release's errors on the same port never count against the next one", async (t) => {
  const v = new ReleaseTraffic(NEW, { maxErrorRate: 0.05, minRequests: 5 })
  let reason: string | null = null
  for (let i = 0; i < 10; i++) reason = v.record(rec(1_000 + i, 500))
  t.match(reason, /10 of 10/, 'the release then on that port failed')
  // Minutes later the port serves another release; the first lines of the env are the old port's.
  t.equal(v.record(rec(300_000, 200, '200', `127.0.0.1:${OLD}`)), null)
  for (let i = 0; i < 10; i++) t.equal(v.record(rec(300_001 + i, 200)), null)
})

t.test('traffic: sliding counts keep their edges by slot and ignore samples that are already out', async (t) => {
  const c = new SlidingCounts(2000, 100)
  c.add(1_000, true)
  c.add(2_999, false)
  t.same(c.counts(), { total: 2, errors: 1 }, '1.000 and 2.999 are in one 2 s window')
  c.add(3_000, false)
  t.same(c.counts(), { total: 2, errors: 0 }, 'at 3.000 the slot of 1.000 has left')
  c.add(900, true)
  t.same(c.counts(), { total: 2, errors: 0 }, 'a late line from before the window is dropped')
  c.add(1_500, true)
  t.same(c.counts(), { total: 3, errors: 1 }, 'a late line still inside the window counts')
  t.same(c.counts(10_000), { total: 0, errors: 0 })
})

t.test('traffic: alerts fire once over errorsPerMinute and again only after clearing', async (t) => {
  const a = new TrafficAlerts({ errorsPerMinute: 3 })
  t.same(a.record(0, true), [])
  t.same(a.record(1_000, true), [])
  t.same(a.record(2_000, true), [])
  t.same(a.record(3_000, true), [{ kind: 'errors', reason: '4 5xx or upstream errors in the last minute (more than 3)' }])
  t.same(a.record(4_000, true), [], 'raised once')
  t.same(a.record(70_000, false), [], 'the minute cleared')
  for (const at of [71_000, 72_000, 73_000]) t.same(a.record(at, true), [])
  t.equal(a.record(74_000, true).length, 1, 'raised again')
})

t.test('traffic: a down alert after downMinutes of nothing but errors', async (t) => {
  const a = new TrafficAlerts({ downMinutes: 5 })
  t.same(a.record(0, true), [])
  t.same(a.record(299_000, true), [])
  t.same(a.record(300_001, true), [{ kind: 'down', reason: 'every request for 5 min got a 5xx or upstream error (longer than 5 min)' }])
  t.same(a.record(400_000, true), [], 'raised once')
  t.same(a.record(401_000, false), [], 'a good answer ends the downtime')
  t.same(a.record(402_000, true), [])
  t.same(a.record(500_000, true), [], 'not down for 5 min since')
  t.equal(a.record(703_000, true).length, 1)
  t.same(new TrafficAlerts({}).record(0, true), [], 'no limits, no alerts')
})

t.test('traffic: a 500 the warm standby answered again still counts against the new release', async (t) => {
  // nginx with the standby as `backup` and `proxy_next_upstream ... http_500`: the client got the standby's 200.
  const retried = (atMs: number) => rec(atMs, 200, '500, 200', `127.0.0.1:${NEW}, 127.0.0.1:${OLD}`)
  t.same(classifyAnswers(retried(0)), [
    { port: NEW, class: '5xx' },
    { port: OLD, class: '2xx' },
  ])
  const v = new ReleaseTraffic(NEW, { maxErrorRate: 0.05, minRequests: 20 })
  for (let i = 0; i < 400; i++) t.equal(v.record(rec(1_000 + i * 4, 200)), null)
  let reason: string | null = null
  for (let i = 0; i < 40 && reason === null; i++) reason = v.record(retried(2_700 + i))
  t.match(reason, /error rate of the new release's answers/, 'rolled back although no client saw the 500')
})
