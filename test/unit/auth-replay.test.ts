// A captured request must never be accepted twice: its nonce is remembered at least as long as its timestamp can
// still pass the ±300 s clock check, whichever edge of the window it was first used at.
import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { Authenticator, ReplayError } from '../../agent/auth/authenticator.js'
import { signRequest } from '../../agent/auth/canonical.js'
import type { Keyring } from '../../agent/auth/keyring.js'
import { AuthError, CLOCK_SKEW_SEC } from '../../agent/auth/verify.js'
import { NonceStore } from '../../agent/store/nonces.js'

const secret = randomBytes(32)
const keyring: Keyring = {
  keys: new Map([['ci', { id: 'ci', material: { alg: 'hmac-sha256', secret }, allow: { approve: false } }]]),
  statusToken: null,
}

/** One signed request as the agent receives it, signed with `timestamp`. */
function captured(timestamp: number) {
  const headers = signRequest({
    keyId: 'ci',
    key: { alg: 'hmac-sha256', secret },
    audience: 'a',
    method: 'POST',
    path: '/v1/x',
    body: '{}',
    timestamp,
  })
  return { rawHeaders: Object.entries(headers).flat(), method: 'POST', path: '/v1/x', body: Buffer.from('{}') }
}

async function setUp(t: Test, dir: string, clock: { ms: number }) {
  const nonces = await NonceStore.open(dir, { now: () => clock.ms })
  t.teardown(() => nonces.close())
  return new Authenticator({ keyring, audience: 'a', nonces, nowSec: () => Math.floor(clock.ms / 1000) })
}

t.test('Authenticator: a request first used at the early edge of its window is a replay until the window closes', async (t) => {
  const ts = 1_800_000_000
  // First use 300 s before its timestamp (the earliest the clock check allows), half a second into that second.
  const clock = { ms: (ts - CLOCK_SKEW_SEC) * 1000 + 500 }
  const dir = t.testdir()
  const auth = await setUp(t, dir, clock)
  const request = captured(ts)
  t.equal((await auth.verifySigned(request, '127.0.0.1')).id, 'ci', 'accepted once')

  // The last moment the timestamp still passes: 300 s after it (600.499 s after the first use).
  clock.ms = (ts + CLOCK_SKEW_SEC) * 1000 + 999
  await t.rejects(auth.verifySigned(request, '127.0.0.1'), ReplayError, 'replayed at +600 s: still a replay')

  // After a restart, too: the nonce file carries the longer expiry.
  const reopened = await setUp(t, dir, clock)
  await t.rejects(reopened.verifySigned(request, '127.0.0.1'), ReplayError, 'still a replay after a restart')

  clock.ms = (ts + CLOCK_SKEW_SEC + 1) * 1000
  await t.rejects(auth.verifySigned(request, '127.0.0.1'), AuthError, 'a second later the timestamp itself is refused (401)')
})

t.test('Authenticator: a request first used at the late edge of its window is remembered for the normal TTL', async (t) => {
  const ts = 1_800_000_000
  const clock = { ms: (ts + CLOCK_SKEW_SEC) * 1000 }
  const auth = await setUp(t, t.testdir(), clock)
  const request = captured(ts)
  t.equal((await auth.verifySigned(request, '127.0.0.1')).id, 'ci')
  clock.ms += 999
  await t.rejects(auth.verifySigned(request, '127.0.0.1'), ReplayError)
})
