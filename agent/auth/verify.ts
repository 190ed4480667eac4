// Checks a signed request against the keyring: headers, clock window, key validity, then the signature itself.
// Pure apart from the clock it is given; the nonce store and rate limiting sit in the Authenticator.
import { createHash, createHmac, timingSafeEqual, verify as verifyBytes } from 'node:crypto'
import { AgentError } from '../errors.js'
import { canonicalString, HEADER } from './canonical.js'
import type { Keyring, LoadedKey } from './keyring.js'

export const CLOCK_SKEW_SEC = 300
const TIMESTAMP_PATTERN = /^\d{1,12}$/
const NONCE_PATTERN = /^[A-Za-z0-9_-]{22,128}$/ // ≥ 16 random bytes, base64url
const HMAC_SIGNATURE = /^v1=([0-9a-fA-F]{64})$/
const ED25519_SIGNATURE = /^v1=([A-Za-z0-9_-]{86})$/

export type AuthFailureReason =
  | 'missing_header'
  | 'duplicate_header'
  | 'bad_timestamp'
  | 'stale_timestamp'
  | 'bad_nonce'
  | 'unknown_key'
  | 'key_not_yet_valid'
  | 'key_expired'
  | 'bad_signature'
  | 'bad_token'
  | 'replayed_nonce'

/** Every authentication failure answers the same; the reason goes only to logs and metrics. */
export class AuthError extends AgentError {
  constructor(readonly reason: AuthFailureReason) {
    super('unauthorized', 401, 'authentication failed')
  }
}

export interface SignedRequest {
  /** Raw header name/value pairs as received (Node's rawHeaders), so duplicates are visible. */
  rawHeaders: readonly string[]
  method: string
  path: string
  body: Buffer
}

/** The value of a header that must appear exactly once. */
function singleHeader(rawHeaders: readonly string[], name: string): string {
  let value: string | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]?.toLowerCase() !== name) continue
    if (value !== undefined) throw new AuthError('duplicate_header')
    value = rawHeaders[i + 1] ?? ''
  }
  if (value === undefined || value === '') throw new AuthError('missing_header')
  return value
}

function signatureMatches(key: LoadedKey, canonical: string, signature: string): boolean {
  if (key.material.alg === 'hmac-sha256') {
    const hex = HMAC_SIGNATURE.exec(signature)?.[1]
    if (!hex) return false
    const expected = createHmac('sha256', key.material.secret).update(canonical).digest()
    return timingSafeEqual(Buffer.from(hex, 'hex'), expected)
  }
  const b64 = ED25519_SIGNATURE.exec(signature)?.[1]
  if (!b64) return false
  return verifyBytes(null, Buffer.from(canonical), key.material.publicKey, Buffer.from(b64, 'base64url'))
}

/** The checks that need neither the body nor a signature computation: headers, clock window, key and its validity. */
export function checkSignedHeaders(rawHeaders: readonly string[], keyring: Keyring, nowSec: number) {
  const keyId = singleHeader(rawHeaders, HEADER.keyId)
  const timestamp = singleHeader(rawHeaders, HEADER.timestamp)
  const nonce = singleHeader(rawHeaders, HEADER.nonce)
  const signature = singleHeader(rawHeaders, HEADER.signature)
  if (!TIMESTAMP_PATTERN.test(timestamp)) throw new AuthError('bad_timestamp')
  if (Math.abs(nowSec - Number(timestamp)) > CLOCK_SKEW_SEC) throw new AuthError('stale_timestamp')
  if (!NONCE_PATTERN.test(nonce)) throw new AuthError('bad_nonce')
  const key = keyring.keys.get(keyId)
  if (!key) throw new AuthError('unknown_key')
  const nowMs = nowSec * 1000
  if (key.notBefore && nowMs < key.notBefore.getTime()) throw new AuthError('key_not_yet_valid')
  if (key.notAfter && nowMs >= key.notAfter.getTime()) throw new AuthError('key_expired')
  return { key, keyId, timestamp, nonce, signature }
}

/** Returns the key that signed the request (with its nonce and timestamp), or throws AuthError. Does not consume the nonce. */
export function verifySignature(
  req: SignedRequest,
  keyring: Keyring,
  audience: string,
  nowSec: number,
): { key: LoadedKey; nonce: string; timestamp: number } {
  const { key, keyId, timestamp, nonce, signature } = checkSignedHeaders(req.rawHeaders, keyring, nowSec)
  const canonical = canonicalString({ audience, method: req.method, path: req.path, timestamp, nonce, keyId, body: req.body })
  if (!signatureMatches(key, canonical, signature)) throw new AuthError('bad_signature')
  return { key, nonce, timestamp: Number(timestamp) }
}

const digest = (b: Buffer | string) => createHash('sha256').update(b).digest()
/** The configured token's digest, computed once per keyring rather than once per request. */
const tokenDigests = new WeakMap<Buffer, Buffer>()

/** Constant-time comparison of a bearer token against the configured one. */
export function statusTokenMatches(authorization: string | undefined, token: Buffer | null): boolean {
  if (!token || !authorization?.startsWith('Bearer ')) return false
  // Compare digests so neither the content nor the length of the token leaks through timing.
  let expected = tokenDigests.get(token)
  if (expected === undefined) tokenDigests.set(token, (expected = digest(token)))
  return timingSafeEqual(digest(authorization.slice('Bearer '.length).trim()), expected)
}
