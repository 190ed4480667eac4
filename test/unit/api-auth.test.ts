// The "bad input" list of the foundation issue: each request is refused with the documented status, nothing
// runs, and a valid request still works afterwards.
import t from 'tap'
import { AUDIENCE, buildTestAgent, RecordingDeployments, signedInject, type TestAgent } from '../helpers/agent.js'
import { tempDir } from '../helpers/tmp.js'

const DEPLOY_URL = '/v1/apps/web/envs/staging/deploys'
let addressCounter = 0
/** Each case comes from its own address so the failure limiter only trips where a test wants it to. */
const nextAddress = () => `127.0.${Math.floor(++addressCounter / 250)}.${(addressCounter % 250) + 1}`

let agent: TestAgent
t.before(async () => {
  agent = await buildTestAgent(await tempDir(t))
})
t.teardown(() => agent.close())

const code = (body: string) => JSON.parse(body).error.code as string

t.test('API: a valid signed deploy request passes auth and validation', async (t) => {
  const res = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main' }, remoteAddress: nextAddress() })
  t.equal(res.statusCode, 202, res.body)
  t.same(JSON.parse(res.body), { id: 'd_000000000000', state: 'QUEUED' })
  t.same((agent.deployments as RecordingDeployments).calls[0], {
    op: 'request',
    input: { app: 'web', env: 'staging', ref: 'main', commit: undefined, reason: undefined, keyId: 'ci' },
  })
})

t.test('API: unsigned or badly signed requests get the same 401', async (t) => {
  const now = Math.floor(Date.now() / 1000)
  const cases: Array<[string, Parameters<typeof signedInject>[1]]> = [
    ['timestamp 10 min old', { url: DEPLOY_URL, body: { ref: 'main' }, timestamp: now - 600 }],
    ['timestamp 10 min ahead', { url: DEPLOY_URL, body: { ref: 'main' }, timestamp: now + 600 }],
    ['timestamp not digits', { url: DEPLOY_URL, body: { ref: 'main' }, headers: { 'deploy-timestamp': '1e9' } }],
    ['body altered after signing', { url: DEPLOY_URL, body: { ref: 'main' }, signed: { body: '{"ref":"v1.0.0"}' } }],
    ['signed over another path', { url: DEPLOY_URL, body: { ref: 'main' }, signed: { path: '/v1/apps/web/envs/production/deploys' } }],
    ['signed over another method', { url: DEPLOY_URL, body: { ref: 'main' }, signed: { method: 'PUT' } }],
    ['signed for another audience', { url: DEPLOY_URL, body: { ref: 'main' }, audience: 'other.host' }],
    ['unknown key id', { url: DEPLOY_URL, body: { ref: 'main' }, keyId: 'nobody' }],
    ['expired key', { url: DEPLOY_URL, body: { ref: 'main' }, keyId: 'expired' }],
    ['key not yet valid', { url: DEPLOY_URL, body: { ref: 'main' }, keyId: 'future' }],
    ['signature too short', { url: DEPLOY_URL, body: { ref: 'main' }, headers: { 'deploy-signature': 'v1=abcd' } }],
    ['signature not base64url', { url: DEPLOY_URL, body: { ref: 'main' }, headers: { 'deploy-signature': `v1=${'!'.repeat(86)}` } }],
    ['signature without v1=', { url: DEPLOY_URL, body: { ref: 'main' }, headers: { 'deploy-signature': 'a'.repeat(86) } }],
    ['nonce too short', { url: DEPLOY_URL, body: { ref: 'main' }, nonce: 'short' }],
  ]
  for (const [name, options] of cases) {
    const res = await signedInject(agent, { ...options, remoteAddress: nextAddress() })
    t.equal(res.statusCode, 401, name)
    t.same(JSON.parse(res.body), { error: { code: 'unauthorized', message: 'authentication failed' } }, `${name}: uniform body`)
  }
  const unsigned = await agent.app.inject({ method: 'POST', url: DEPLOY_URL, payload: { ref: 'main' }, remoteAddress: nextAddress() })
  t.equal(unsigned.statusCode, 401, 'no signature headers')
})

t.test('API: an HMAC signature presented for an Ed25519 key is refused', async (t) => {
  const res = await signedInject(agent, {
    url: DEPLOY_URL,
    body: { ref: 'main' },
    keyId: 'ci',
    key: { alg: 'hmac-sha256', secret: agent.keys.hmac.secret },
    remoteAddress: nextAddress(),
  })
  t.equal(res.statusCode, 401)
})

t.test('API: the HMAC key signs valid requests too', async (t) => {
  const res = await signedInject(agent, {
    url: DEPLOY_URL,
    body: { ref: 'main' },
    keyId: 'legacy',
    key: { alg: 'hmac-sha256', secret: agent.keys.hmac.secret },
    remoteAddress: nextAddress(),
  })
  t.equal(res.statusCode, 202, res.body)
})

t.test('API: duplicated signature headers are refused', async (t) => {
  const good = await signedInject(agent, { method: 'GET', url: '/v1/status', remoteAddress: nextAddress() })
  t.equal(good.statusCode, 200, 'the same request signed once is fine')
  for (const header of ['deploy-signature', 'deploy-key-id', 'deploy-nonce', 'deploy-timestamp']) {
    const res = await signedInject(agent, {
      method: 'GET',
      url: '/v1/status',
      remoteAddress: nextAddress(),
      headers: { [header]: ['x', 'y'] as unknown as string },
    })
    t.equal(res.statusCode, 401, header)
  }
})

t.test('API: the same nonce twice is a replay (409)', async (t) => {
  const nonce = 'bm9uY2Utb25jZS1vbmx5LXRlc3Q'
  const first = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main' }, nonce, remoteAddress: nextAddress() })
  t.equal(first.statusCode, 202)
  const second = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main' }, nonce, remoteAddress: nextAddress() })
  t.equal(second.statusCode, 409)
  t.equal(code(second.body), 'replayed_nonce')
})

t.test('API: a nonce is only consumed by a valid signature', async (t) => {
  const nonce = 'bm9uY2UtYnVybi1hdHRlbXB0LXRlc3Q'
  const forged = await signedInject(agent, {
    url: DEPLOY_URL,
    body: { ref: 'main' },
    nonce,
    audience: 'elsewhere',
    remoteAddress: nextAddress(),
  })
  t.equal(forged.statusCode, 401)
  const real = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main' }, nonce, remoteAddress: nextAddress() })
  t.equal(real.statusCode, 202, 'the real client can still use its nonce')
})

t.test('API: request shape errors', async (t) => {
  const query = await signedInject(agent, { url: `${DEPLOY_URL}?x=1`, body: { ref: 'main' }, remoteAddress: nextAddress() })
  t.equal(query.statusCode, 400, 'query string on a signed route')

  const big = await signedInject(agent, {
    url: DEPLOY_URL,
    body: { ref: 'main', reason: 'x'.repeat(70 * 1024) },
    remoteAddress: nextAddress(),
  })
  t.equal(big.statusCode, 413, 'body over 64 KiB')

  const text = await signedInject(agent, {
    url: DEPLOY_URL,
    body: 'ref=main',
    headers: { 'content-type': 'text/plain' },
    remoteAddress: nextAddress(),
  })
  t.equal(text.statusCode, 415, 'Content-Type not JSON')

  for (const [name, body] of [
    ['invalid JSON', '{"ref": "main"'],
    ['__proto__ key', '{"ref":"main","__proto__":{"admin":true}}'],
    ['constructor key', '{"ref":"main","constructor":{"prototype":{"admin":true}}}'],
    ['unknown field', '{"ref":"main","force":true}'],
    ['ref missing', '{}'],
    ['body is an array', '[]'],
  ] as const) {
    const res = await signedInject(agent, { url: DEPLOY_URL, body, remoteAddress: nextAddress() })
    t.equal(res.statusCode, 400, name)
  }
  const unknown = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main', force: true }, remoteAddress: nextAddress() })
  t.match(JSON.parse(unknown.body).error.message, /body\.force: unknown field/, 'the unknown field is named')
})

t.test('API: hostile refs and commits are refused before anything runs', async (t) => {
  const refs = [
    'main; rm -rf /',
    'v1 0',
    'main\u0000',
    'main\nx',
    'v1/../../etc',
    '..',
    '-main',
    '--upload-pack=touch /tmp/x',
    'ext::sh -c touch% /tmp/pwned',
    '$(id)',
    'a`b`',
    'x'.repeat(129),
    '',
  ]
  for (const ref of refs) {
    const res = await signedInject(agent, { url: DEPLOY_URL, body: { ref }, remoteAddress: nextAddress() })
    t.equal(res.statusCode, 400, JSON.stringify(ref))
  }
  for (const commit of ['abc', 'g'.repeat(40), 'A'.repeat(40), '0'.repeat(41)]) {
    const res = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main', commit }, remoteAddress: nextAddress() })
    t.equal(res.statusCode, 400, `commit ${commit}`)
  }
})

t.test('API: unknown app or env is 404, a key outside its policy is 403', async (t) => {
  const noApp = await signedInject(agent, {
    url: '/v1/apps/nope/envs/staging/deploys',
    body: { ref: 'main' },
    remoteAddress: nextAddress(),
  })
  t.equal(noApp.statusCode, 404)
  const noEnv = await signedInject(agent, { url: '/v1/apps/web/envs/qa/deploys', body: { ref: 'main' }, remoteAddress: nextAddress() })
  t.equal(noEnv.statusCode, 404)
  const badName = await signedInject(agent, {
    url: '/v1/apps/Web/envs/staging/deploys',
    body: { ref: 'main' },
    remoteAddress: nextAddress(),
  })
  t.equal(badName.statusCode, 400, 'a malformed app name')

  const hmac = { alg: 'hmac-sha256' as const, secret: agent.keys.hmac.secret }
  const envDenied = await signedInject(agent, {
    url: '/v1/apps/web/envs/production/deploys',
    body: { ref: 'v1.0.0' },
    keyId: 'legacy',
    key: hmac,
    remoteAddress: nextAddress(),
  })
  t.equal(envDenied.statusCode, 403, 'key not allowed for the env')
  const refDenied = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'feature/x' }, remoteAddress: nextAddress() })
  t.equal(refDenied.statusCode, 403, 'key not allowed for the ref')
  const envRule = await signedInject(agent, {
    url: '/v1/apps/web/envs/production/deploys',
    body: { ref: 'main' },
    remoteAddress: nextAddress(),
  })
  t.equal(envRule.statusCode, 403, 'production only takes tags matching v*.*.*')
  t.equal(code(envRule.body), 'forbidden')
})

t.test('API: read endpoints need the status token', async (t) => {
  for (const url of ['/v1/status', '/v1/deploys', '/metrics', '/v1/backups', '/v1/apps/web/envs/staging/releases']) {
    const none = await agent.app.inject({ url, remoteAddress: nextAddress() })
    t.equal(none.statusCode, 401, `${url} without token`)
    const wrong = await agent.app.inject({ url, headers: { authorization: 'Bearer not-the-token-at-all' }, remoteAddress: nextAddress() })
    t.equal(wrong.statusCode, 401, `${url} with a wrong token`)
  }
  const ok = await agent.app.inject({ url: '/v1/status', headers: { authorization: `Bearer ${agent.keys.statusToken}` } })
  t.equal(ok.statusCode, 200)
  const status = JSON.parse(ok.body)
  t.same(status.apps.web.envs.staging, { live: null, deploying: null, lastBackup: null, pitr: null })
  t.equal(status.agent.version, '0.0.0-test')
  const health = await agent.app.inject({ url: '/healthz' })
  t.equal(health.statusCode, 200, '/healthz needs no auth')
})

t.test('API: a burst of bad signatures from one address is rate-limited; other addresses are not', async (t) => {
  const attacker = '127.9.9.9'
  const statuses: number[] = []
  for (let i = 0; i < 50; i++) {
    const res = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main' }, audience: 'wrong', remoteAddress: attacker })
    statuses.push(res.statusCode)
  }
  t.equal(statuses[0], 401)
  t.equal(statuses.at(-1), 429, 'the burst ends in 429')
  const limited = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main' }, audience: 'wrong', remoteAddress: attacker })
  t.ok(Number(limited.headers['retry-after']) > 0, 'Retry-After is set')
  // The failures counted against an address need not be its own (issue 9, item 5): a valid signature still passes.
  const valid = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main' }, remoteAddress: attacker })
  t.equal(valid.statusCode, 202, 'a valid request from the blocked address is not refused')
  const other = await signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main' }, remoteAddress: nextAddress() })
  t.equal(other.statusCode, 202, 'a valid request from another address still works')
})

// Regression (load fault, auth flood): the block was only checked when a request arrived, so every concurrent
// request already past that check still cost a signature verification and counted as a 401 beyond the limit.
t.test('API: a concurrent burst of bad signatures gets exactly the limit of 401s, the rest 429', async (t) => {
  const attacker = '127.9.9.10'
  const answers = await Promise.all(
    Array.from({ length: 60 }, () =>
      signedInject(agent, { url: DEPLOY_URL, body: { ref: 'main' }, audience: 'wrong', remoteAddress: attacker }),
    ),
  )
  const counts = answers.reduce<Record<number, number>>((acc, res) => ({ ...acc, [res.statusCode]: (acc[res.statusCode] ?? 0) + 1 }), {})
  t.same(counts, { 401: 20, 429: 40 }, '20 failures a minute, then 429')
})

t.test('API: failures are counted by reason in /metrics, and nothing ran', async (t) => {
  const res = await agent.app.inject({ url: '/metrics', headers: { authorization: `Bearer ${agent.keys.statusToken}` } })
  t.equal(res.statusCode, 200)
  t.match(res.body, /deploy_agent_auth_failures_total\{reason="bad_signature"\} \d+/)
  t.match(res.body, /deploy_agent_auth_failures_total\{reason="stale_timestamp"\} 2/)
  t.match(res.body, /deploy_agent_http_requests_total\{method="POST",route="\/v1\/apps\/:app\/envs\/:env\/deploys",status="401"\}/)
  t.equal(agent.deploys.list({}).length, 0, 'no deploy was recorded')
  t.equal((agent.deployments as RecordingDeployments).calls.length, 6, 'only the six valid requests reached the deploy side')
})

t.test('API: errors and OpenAPI', async (t) => {
  const missing = await agent.app.inject({ url: '/nope' })
  t.equal(missing.statusCode, 404)
  t.equal(code(missing.body), 'not_found')
  const openapi = await agent.app.inject({ url: '/v1/openapi.json' })
  t.equal(openapi.statusCode, 200)
  const doc = JSON.parse(openapi.body)
  t.ok(doc.paths['/v1/apps/{app}/envs/{env}/deploys'].post, 'deploy route documented')
  t.equal(doc.paths['/v1/apps/{app}/envs/{env}/deploys'].post.requestBody.content['application/json'].schema.additionalProperties, false)
  t.ok(AUDIENCE)
})
