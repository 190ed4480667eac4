// Issue 9, item 5: with `listen.trustProxy: [127.0.0.0/8]` (nginx on loopback TCP), any local process or container
// (host networking) could forge X-Forwarded-For: name CI's address in 20 bad requests and CI's next deploy got 429,
// or rotate the header and never be limited. Now a TCP peer is limited by its socket address whatever it claims,
// and a valid signature is never refused for failures the limiter counted against its address.
import t from 'tap'
import { buildTestAgent, signedInject, type TestAgent } from '../helpers/agent.js'
import { tempDir } from '../helpers/tmp.js'

const DEPLOY_URL = '/v1/apps/web/envs/staging/deploys'
const CI = '203.0.113.7'

let agent: TestAgent
t.before(async () => {
  const dir = await tempDir(t)
  agent = await buildTestAgent(dir, { extra: { listen: { host: '127.0.0.1', port: 8787, trustProxy: ['127.0.0.0/8'] } } })
})
t.teardown(() => agent.close())

const bad = (remoteAddress: string, forwardedFor?: string) =>
  signedInject(agent, {
    url: DEPLOY_URL,
    body: { ref: 'main' },
    audience: 'wrong',
    remoteAddress,
    headers: forwardedFor ? { 'x-forwarded-for': forwardedFor } : {},
  })
const valid = (remoteAddress: string, forwardedFor?: string) =>
  signedInject(agent, {
    url: DEPLOY_URL,
    body: { ref: 'main' },
    remoteAddress,
    headers: forwardedFor ? { 'x-forwarded-for': forwardedFor } : {},
  })

t.test("API: a forged X-Forwarded-For from a trusted proxy address cannot get another client's valid request refused", async (t) => {
  // A container on the host's loopback poses as nginx and blames CI's address.
  for (let i = 0; i < 25; i++) await bad('127.0.0.1', CI)
  // CI's real request, as nginx on loopback passes it on: same peer, same header, valid signature.
  const ci = await valid('127.0.0.1', CI)
  t.equal(ci.statusCode, 202, `CI's valid signed request is accepted (${ci.body})`)
  const token = await agent.app.inject({
    url: '/v1/status',
    headers: { authorization: `Bearer ${agent.keys.statusToken}`, 'x-forwarded-for': CI },
    remoteAddress: '127.0.0.1',
  })
  t.equal(token.statusCode, 200, 'a right status token is not refused either')
})

t.test('API: rotating X-Forwarded-For does not escape the limit of the real peer', async (t) => {
  const statuses: number[] = []
  for (let i = 0; i < 30; i++) statuses.push((await bad('127.0.0.2', `198.51.100.${i + 1}`)).statusCode)
  t.same(statuses.slice(0, 20), Array(20).fill(401), 'the first 20 failures are answered 401')
  t.same(statuses.slice(20), Array(10).fill(429), 'then the peer is limited, whatever address it claims')
  const noHeader = await bad('127.0.0.2')
  t.equal(noHeader.statusCode, 429, 'and without the header too')
})

t.test('API: a really failing client still gets 429; its valid requests still pass', async (t) => {
  for (let i = 0; i < 20; i++) await bad('127.0.0.3')
  const refused = await bad('127.0.0.3')
  t.equal(refused.statusCode, 429)
  t.ok(Number(refused.headers['retry-after']) > 0, 'Retry-After is set')
  const unknownKey = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main' }, keyId: 'nobody', remoteAddress: '127.0.0.3' })
  t.equal(unknownKey.statusCode, 429, 'a request that cannot be valid is refused before its body is read')
  const wrongToken = await agent.app.inject({
    url: '/v1/status',
    headers: { authorization: 'Bearer nope-nope-nope-nope' },
    remoteAddress: '127.0.0.3',
  })
  t.equal(wrongToken.statusCode, 429, 'a wrong status token too')
  t.equal((await valid('127.0.0.3')).statusCode, 202, 'a valid signature is not refused for the failures counted against its address')
  t.equal((await valid('127.0.0.4')).statusCode, 202, 'another address is unaffected')
})
