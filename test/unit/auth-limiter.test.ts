// The Authenticator's limiter policy (issue 9, item 5): failures block a client, but a blocked client's request
// that could be valid (known key, fresh timestamp) is still verified — a bounded number of times per window — so a
// valid signature is never refused for failures counted against its address by someone else.
import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { Authenticator, TooManyFailuresError } from '../../agent/auth/authenticator.js'
import { signRequest } from '../../agent/auth/canonical.js'
import type { Keyring } from '../../agent/auth/keyring.js'
import { FailureLimiter } from '../../agent/auth/limiter.js'
import { AuthError } from '../../agent/auth/verify.js'

const { privateKey, publicKey } = generateKeyPairSync('ed25519')
const keyring: Keyring = {
  keys: new Map([['ci', { id: 'ci', material: { alg: 'ed25519', publicKey }, allow: { approve: false } }]]),
  statusToken: Buffer.from('s'.repeat(20)),
}
const forged = generateKeyPairSync('ed25519').privateKey

function request(o: { keyId?: string; key?: typeof privateKey } = {}) {
  const headers = signRequest({
    keyId: o.keyId ?? 'ci',
    key: { alg: 'ed25519', privateKey: o.key ?? privateKey },
    audience: 'a',
    method: 'GET',
    path: '/v1/status',
    body: '',
  })
  return { rawHeaders: Object.entries(headers).flat(), method: 'GET', path: '/v1/status', body: Buffer.alloc(0) }
}

function authenticator(options: { maxVerifications?: number } = {}) {
  const reasons: string[] = []
  const auth = new Authenticator({
    keyring,
    audience: 'a',
    nonces: { remember: async () => true },
    limiter: new FailureLimiter({ maxFailures: 3, windowMs: 60_000 }),
    maxVerificationsWhenBlocked: options.maxVerifications,
    onFailure: (reason) => reasons.push(reason),
  })
  return { auth, reasons }
}

const codeOf = (err: unknown) => (err instanceof TooManyFailuresError ? 429 : err instanceof AuthError ? 401 : String(err))

t.test('Authenticator: a blocked client is still let in by a valid signature, refused otherwise', async (t) => {
  const { auth, reasons } = authenticator()
  const answers: Array<number | string> = []
  for (let i = 0; i < 5; i++) answers.push(await auth.verifySigned(request({ key: forged }), 'peer').then(() => 200, codeOf))
  t.same(answers, [401, 401, 401, 429, 429], '3 failures, then 429')
  t.equal(reasons.length, 5, 'every failure is counted in the metrics, blocked or not')
  t.equal((await auth.verifySigned(request(), 'peer')).id, 'ci', 'a valid signature from the blocked client passes')
  t.doesNotThrow(() => auth.screenSigned(request().rawHeaders, 'peer'), 'a request that may be valid goes on to have its body read')
  t.throws(
    () => auth.screenSigned(request({ keyId: 'nobody' }).rawHeaders, 'peer'),
    TooManyFailuresError,
    'an unknown key is refused before the body',
  )
  t.throws(() => auth.screenSigned([], 'peer'), TooManyFailuresError, 'so is a request without signature headers')
  t.doesNotThrow(() => auth.screenSigned(request({ keyId: 'nobody' }).rawHeaders, 'other'), 'other clients are not screened')
  t.doesNotThrow(() => auth.verifyStatusToken(`Bearer ${'s'.repeat(20)}`, 'peer'), 'the right status token passes')
  t.throws(() => auth.verifyStatusToken('Bearer wrong', 'peer'), TooManyFailuresError, 'a wrong one is 429')
})

t.test('Authenticator: a blocked client may force only a bounded number of verifications per window', async (t) => {
  const { auth } = authenticator({ maxVerifications: 4 })
  for (let i = 0; i < 3; i++) await auth.verifySigned(request({ key: forged }), 'peer').catch(() => undefined)
  const answers: Array<number | string> = []
  for (let i = 0; i < 4; i++) answers.push(await auth.verifySigned(request({ key: forged }), 'peer').then(() => 200, codeOf))
  t.same(answers, [429, 429, 429, 429])
  // The client spent its own budget: from now on it is refused before any signature work, even when valid.
  t.throws(() => auth.screenSigned(request().rawHeaders, 'peer'), TooManyFailuresError)
  t.equal(await auth.verifySigned(request(), 'peer').then(() => 200, codeOf), 429)
  t.equal((await auth.verifySigned(request(), 'other')).id, 'ci', 'another client is unaffected')
})
