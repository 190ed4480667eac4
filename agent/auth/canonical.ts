// The signature scheme of DESIGN.md ("Signed requests"): one canonical string, signed with HMAC-SHA256 (hex) or
// Ed25519 (base64url). Shared by the verifier, the CLI's `sign` and the tests so the three cannot drift apart.
import { createHash, createHmac, randomBytes, sign as signBytes, type KeyObject } from 'node:crypto'

export const SCHEME = 'deploy-agent-v1'
export const HEADER = {
  keyId: 'deploy-key-id',
  timestamp: 'deploy-timestamp',
  nonce: 'deploy-nonce',
  signature: 'deploy-signature',
} as const

export interface CanonicalParts {
  audience: string
  method: string
  path: string
  timestamp: string
  nonce: string
  keyId: string
  body: Buffer | string
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex')
}

export function canonicalString(p: CanonicalParts): string {
  return [SCHEME, p.audience, p.method.toUpperCase(), p.path, p.timestamp, p.nonce, p.keyId, sha256Hex(p.body)].join('\n')
}

export type SigningKey = { alg: 'hmac-sha256'; secret: Buffer } | { alg: 'ed25519'; privateKey: KeyObject }

export function signCanonical(key: SigningKey, canonical: string): string {
  if (key.alg === 'hmac-sha256') return `v1=${createHmac('sha256', key.secret).update(canonical).digest('hex')}`
  return `v1=${signBytes(null, Buffer.from(canonical), key.privateKey).toString('base64url')}`
}

export interface SignInput {
  keyId: string
  key: SigningKey
  audience: string
  method: string
  path: string
  body?: Buffer | string
  /** unix seconds; defaults to now */
  timestamp?: number
  nonce?: string
}

/** The four headers of a signed request (lower-case names, as Node and fetch use them). */
export function signRequest(input: SignInput): Record<string, string> {
  const timestamp = String(input.timestamp ?? Math.floor(Date.now() / 1000))
  const nonce = input.nonce ?? randomBytes(18).toString('base64url')
  const canonical = canonicalString({ ...input, body: input.body ?? '', timestamp, nonce })
  return {
    [HEADER.keyId]: input.keyId,
    [HEADER.timestamp]: timestamp,
    [HEADER.nonce]: nonce,
    [HEADER.signature]: signCanonical(input.key, canonical),
  }
}
