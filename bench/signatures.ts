// Signature verifications per second through the agent's verifier (headers, clock window, key lookup, canonical
// string, constant-time compare) against the raw crypto call alone, in the same process.
import { createHmac, generateKeyPairSync, randomBytes, timingSafeEqual, verify } from 'node:crypto'
import { cpus, loadavg } from 'node:os'
import { canonicalString, signRequest } from '../agent/auth/canonical.js'
import type { Keyring } from '../agent/auth/keyring.js'
import { verifySignature } from '../agent/auth/verify.js'
import { fmt, opsPerSecond, type Row } from './lib.js'

/** Filled by benchSignatures: how the figures were taken and what bounds them. */
export const signatureNotes: string[] = []

export function benchSignatures(): Row[] {
  signatureNotes.length = 0
  const load = loadavg()
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const secret = randomBytes(32)
  const keyring: Keyring = {
    keys: new Map([
      ['ed', { id: 'ed', material: { alg: 'ed25519', publicKey }, allow: { approve: false } }],
      ['hm', { id: 'hm', material: { alg: 'hmac-sha256', secret }, allow: { approve: false } }],
    ]),
    statusToken: null,
  }
  const body = Buffer.from(JSON.stringify({ ref: 'v1.2.3', reason: 'release' }))
  const path = '/v1/apps/web/envs/production/deploys'
  const rows: Row[] = []
  const raws: Record<string, number> = {}
  const agents: Record<string, number> = {}
  for (const [label, keyId, key] of [
    ['HMAC-SHA256', 'hm', { alg: 'hmac-sha256', secret }],
    ['Ed25519', 'ed', { alg: 'ed25519', privateKey }],
  ] as const) {
    const headers = signRequest({ keyId, key, audience: 'web-1', method: 'POST', path, body })
    const rawHeaders = Object.entries(headers).flat()
    const now = Number(headers['deploy-timestamp'])
    const agent = opsPerSecond(() => verifySignature({ rawHeaders, method: 'POST', path, body }, keyring, 'web-1', now))

    const canonical = canonicalString({
      audience: 'web-1',
      method: 'POST',
      path,
      body,
      timestamp: headers['deploy-timestamp'] as string,
      nonce: headers['deploy-nonce'] as string,
      keyId,
    })
    const signature = (headers['deploy-signature'] as string).slice(3)
    const raw =
      key.alg === 'hmac-sha256'
        ? opsPerSecond(() => timingSafeEqual(createHmac('sha256', secret).update(canonical).digest(), Buffer.from(signature, 'hex')))
        : opsPerSecond(() => verify(null, Buffer.from(canonical), publicKey, Buffer.from(signature, 'base64url')))
    raws[label] = raw
    agents[label] = agent
    rows.push({
      figure: `signature verifications/s, ${label}`,
      value: fmt(agent),
      baseline: `${fmt(raw)} (raw crypto)`,
      ratio: `${fmt(agent / raw, 2)}×`,
      target: '≥ 20,000/s',
      met: agent >= 20_000,
    })
  }
  const rawEd = raws.Ed25519 as number
  const agentEd = agents.Ed25519 as number
  signatureNotes.push(
    `Signatures: one thread, ~1.5 s per figure after 1,000 warm-up calls. The agent figure is \`verifySignature\` (the four headers from rawHeaders, clock window, key lookup, canonical string with the body's sha256, signature format check, constant-time compare / \`crypto.verify\` with the key's KeyObject made once at load); the baseline is the bare crypto call on the same canonical string and key. ` +
      `CPU: ${cpus()[0]?.model ?? 'unknown'} (${cpus().length} cores), load average before ${load.map((x) => x.toFixed(1)).join(' / ')}. ` +
      (rawEd < 20_000
        ? `Ed25519: the bare OpenSSL verify alone reaches ${fmt(rawEd)}/s here, below the 20,000/s target, so the target cannot be met on this CPU by any overhead cut — the gap is the CPU's Ed25519 verify speed (~${fmt(1e6 / rawEd)} µs each); the agent's own work adds ${fmt(Math.max(0, 1e6 / agentEd - 1e6 / rawEd), 1)} µs per verification.`
        : 'Ed25519: the bare verify is above the target on this CPU.'),
  )
  return rows
}
