// Signature verifications per second through the agent's verifier (headers, clock window, key lookup, canonical
// string, constant-time compare) against the raw crypto call alone, in the same process.
import { createHmac, generateKeyPairSync, randomBytes, timingSafeEqual, verify } from 'node:crypto'
import { canonicalString, signRequest } from '../agent/auth/canonical.js'
import type { Keyring } from '../agent/auth/keyring.js'
import { verifySignature } from '../agent/auth/verify.js'
import { fmt, opsPerSecond, type Row } from './lib.js'

export function benchSignatures(): Row[] {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const secret = randomBytes(32)
  const keyring: Keyring = {
    keys: new Map([
      ['ed', { id: 'ed', material: { alg: 'ed25519', publicKey }, allow: {} }],
      ['hm', { id: 'hm', material: { alg: 'hmac-sha256', secret }, allow: {} }],
    ]),
    statusToken: null,
  }
  const body = Buffer.from(JSON.stringify({ ref: 'v1.2.3', reason: 'release' }))
  const path = '/v1/apps/web/envs/production/deploys'
  const rows: Row[] = []
  for (const [label, keyId, key] of [
    ['HMAC-SHA256', 'hm', { alg: 'hmac-sha256', secret }],
    ['Ed25519', 'ed', { alg: 'ed25519', privateKey }],
  ] as const) {
    const headers = signRequest({ keyId, key, audience: 'web-1', method: 'POST', path, body })
    const rawHeaders = Object.entries(headers).flat()
    const now = Number(headers['deploy-timestamp'])
    const agent = opsPerSecond(() => verifySignature({ rawHeaders, method: 'POST', path, body }, keyring, 'web-1', now))

    const canonical = canonicalString({ audience: 'web-1', method: 'POST', path, body, timestamp: headers['deploy-timestamp'] as string, nonce: headers['deploy-nonce'] as string, keyId })
    const signature = (headers['deploy-signature'] as string).slice(3)
    const raw =
      key.alg === 'hmac-sha256'
        ? opsPerSecond(() => timingSafeEqual(createHmac('sha256', secret).update(canonical).digest(), Buffer.from(signature, 'hex')))
        : opsPerSecond(() => verify(null, Buffer.from(canonical), publicKey, Buffer.from(signature, 'base64url')))
    rows.push({
      figure: `signature verifications/s, ${label}`,
      value: fmt(agent),
      baseline: `${fmt(raw)} (raw crypto)`,
      ratio: `${fmt(agent / raw, 2)}×`,
      target: '≥ 20,000/s',
      met: agent >= 20_000,
    })
  }
  return rows
}
