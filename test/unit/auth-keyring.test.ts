import { generateKeyPairSync } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { loadKeyring } from '../../agent/auth/keyring.js'
import { FailureLimiter } from '../../agent/auth/limiter.js'
import { parseConfig } from '../../agent/config/load.js'
import { ConfigError } from '../../agent/errors.js'
import { tempDir } from '../helpers/tmp.js'

t.test('Keyring: every unreadable or unfit key is reported with its key path', async (t) => {
  const dir = await tempDir(t)
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' })
  await writeFile(join(dir, 'rsa.pub'), rsa)
  await writeFile(join(dir, 'short.secret'), 'too-short\n')
  await writeFile(join(dir, 'token'), 'tiny')
  const config = parseConfig(
    `
audience: a
keys:
  - { id: a, alg: ed25519, publicKeyFile: missing.pub }
  - { id: b, alg: ed25519, publicKeyFile: rsa.pub }
  - { id: c, alg: hmac-sha256, secretFile: short.secret }
  - { id: d, alg: hmac-sha256, secretEnv: DA_TEST_SECRET }
statusToken: { file: token }
`,
    {},
    'agent.yaml',
    dir,
  )
  const err = await loadKeyring(config, {}).catch((e: unknown) => e)
  t.ok(err instanceof ConfigError)
  t.same((err as ConfigError).problems, [
    `keys[0].publicKeyFile: cannot read ${join(dir, 'missing.pub')} (ENOENT)`,
    'keys[1].publicKeyFile: is a rsa key, not ed25519',
    'keys[2].secretFile: secret must be at least 32 bytes (has 9)',
    'keys[3].secretEnv: secret must be at least 32 bytes (has 0)',
    'statusToken.file: token must be at least 16 bytes',
  ])
  const fromEnv = await loadKeyring(
    parseConfig(
      `audience: a\nkeys: [{ id: d, alg: hmac-sha256, secretEnv: DA_TEST_SECRET }]\nstatusToken: { env: DA_TOKEN }\n`,
      {},
      'a',
      dir,
    ),
    { DA_TEST_SECRET: ` ${'s'.repeat(32)} `, DA_TOKEN: 't'.repeat(20) },
  )
  t.equal(fromEnv.keys.get('d')?.material.alg, 'hmac-sha256')
  t.equal(fromEnv.statusToken?.toString(), 't'.repeat(20))
  const missingToken = await loadKeyring(parseConfig(`audience: a\nstatusToken: { file: nope }\n`, {}, 'a', dir), {}).catch(
    (e: unknown) => e,
  )
  t.match((missingToken as ConfigError).problems[0], /^statusToken\.file: cannot read .*nope \(ENOENT\)$/)
})

t.test('FailureLimiter: blocks past the limit within the window, forgets after it', async (t) => {
  let now = 0
  const limiter = new FailureLimiter({ maxFailures: 3, windowMs: 10_000, now: () => now, maxTracked: 2 })
  for (let i = 0; i < 3; i++) limiter.recordFailure('a')
  t.equal(limiter.retryAfterSec('a'), 10)
  t.equal(limiter.retryAfterSec('b'), 0, 'other addresses are free')
  now = 10_000
  t.equal(limiter.retryAfterSec('a'), 0, 'the window ended')
  limiter.recordFailure('b')
  limiter.recordFailure('c')
  limiter.recordFailure('d') // over maxTracked: the oldest is forgotten rather than memory growing
  for (let i = 0; i < 3; i++) limiter.recordFailure('d')
  t.ok(limiter.retryAfterSec('d') > 0)
})

// Regression (load fault, auth flood): when the map was full each new address evicted the oldest entry, blocked
// or not, so failures from enough other addresses set a blocked address free; it also rescanned the whole map for
// every new address.
t.test('FailureLimiter: 10k distinct addresses stay within maxTracked and do not free a blocked address', async (t) => {
  const now = 0
  const limiter = new FailureLimiter({ maxFailures: 20, windowMs: 60_000, now: () => now })
  for (let i = 0; i < 20; i++) limiter.recordFailure('127.0.0.2')
  t.ok(limiter.retryAfterSec('127.0.0.2') > 0, 'the flooding address is blocked')
  let most = 0
  for (let i = 0; i < 30_000; i++) {
    limiter.recordFailure(`127.${10 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`)
    most = Math.max(most, limiter.tracked)
  }
  t.ok(most <= 10_000, `never more than the default 10k addresses tracked (at most ${most})`)
  t.ok(limiter.retryAfterSec('127.0.0.2') > 0, 'the blocked address is still blocked after 30k other addresses failed')
})

t.test('FailureLimiter: a map full of blocked addresses still evicts (the oldest) rather than grow', async (t) => {
  const limiter = new FailureLimiter({ maxFailures: 2, windowMs: 60_000, now: () => 0, maxTracked: 10 })
  for (let i = 0; i < 25; i++) for (let n = 0; n < 2; n++) limiter.recordFailure(`a${i}`)
  t.ok(limiter.tracked <= 10, `tracked ${limiter.tracked}`)
  t.ok(limiter.retryAfterSec('a24') > 0, 'the newest blocked address is kept')
  t.equal(limiter.retryAfterSec('a0'), 0, 'the oldest was forgotten')
})
