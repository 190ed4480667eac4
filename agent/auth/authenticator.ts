// The one place requests are authenticated: signed requests (signature, then nonce), the status token, the
// per-key allow policy, and the failure limiter. The keyring can be swapped at run time (SIGHUP).
//
// The limiter counts failures per client (see http/client.ts: the socket peer, never a header it sends). Failures
// counted against an address need not be its own — loopback is shared by every local process and container — so
// a blocked client is not refused outright: a request that may be valid (known key, fresh timestamp) is still
// verified and let in when its signature or token is right. What a blocked client can make the agent do is bounded
// by a second, higher limit: `maxVerificationsWhenBlocked` verifications per window, after which that client alone
// is refused before any signature work until the window ends.
import { AgentError, ForbiddenError } from '../errors.js'
import { matchesGlob } from '../config/glob.js'
import type { Keyring, LoadedKey } from './keyring.js'
import { FailureLimiter } from './limiter.js'
import {
  AuthError,
  checkSignedHeaders,
  CLOCK_SKEW_SEC,
  statusTokenMatches,
  verifySignature,
  type AuthFailureReason,
  type SignedRequest,
} from './verify.js'

export interface NonceMemory {
  /** false when the nonce was seen before (a replay); remembered for its TTL, and at least until `untilMs` */
  remember(nonce: string, untilMs?: number): Promise<boolean>
}

export class ReplayError extends AgentError {
  constructor() {
    super('replayed_nonce', 409, 'this nonce was already used; sign the request again')
  }
}

export class TooManyFailuresError extends AgentError {
  constructor(readonly retryAfterSec: number) {
    super('too_many_failures', 429, `too many failed authentications from this address; retry in ${retryAfterSec} s`)
  }
}

/** A key may not approve this deploy: `approve_not_allowed` (no `allow.approve`, or not for the env) or `self_approval`. */
export class ApprovalForbiddenError extends AgentError {
  constructor(code: 'approve_not_allowed' | 'self_approval', message: string) {
    super(code, 403, message)
  }
}

export interface AuthenticatorOptions {
  keyring: Keyring
  audience: string
  nonces: NonceMemory
  limiter?: FailureLimiter
  /** Signature verifications a blocked client may still force per window (default 300 a minute). */
  maxVerificationsWhenBlocked?: number
  nowSec?: () => number
  onFailure?: (reason: AuthFailureReason) => void
}

export class Authenticator {
  private keyring: Keyring
  private readonly limiter: FailureLimiter
  /** Verifications forced by blocked clients, per client, in the limiter's window. */
  private readonly verifications: FailureLimiter
  private readonly nowSec: () => number

  constructor(private readonly options: AuthenticatorOptions) {
    this.keyring = options.keyring
    this.limiter = options.limiter ?? new FailureLimiter({ maxFailures: 20, windowMs: 60_000 })
    this.verifications = new FailureLimiter({ maxFailures: options.maxVerificationsWhenBlocked ?? 300, windowMs: this.limiter.windowMs })
    this.nowSec = options.nowSec ?? (() => Math.floor(Date.now() / 1000))
  }

  get keyCount(): number {
    return this.keyring.keys.size
  }

  reload(keyring: Keyring): void {
    this.keyring = keyring
  }

  /**
   * Before the body is read: a blocked client's signed request goes on only if it may be valid and the client has
   * verifications left; anything else is refused here, without reading the body or computing a signature.
   */
  screenSigned(rawHeaders: readonly string[], client: string): void {
    const retryAfter = this.limiter.retryAfterSec(client)
    if (retryAfter === 0) return
    if (this.verifications.retryAfterSec(client) > 0) throw new TooManyFailuresError(retryAfter)
    try {
      checkSignedHeaders(rawHeaders, this.keyring, this.nowSec())
    } catch (err) {
      if (!(err instanceof AuthError)) throw err
      this.options.onFailure?.(err.reason)
      throw new TooManyFailuresError(retryAfter)
    }
  }

  async verifySigned(req: SignedRequest, client: string): Promise<LoadedKey> {
    // Checked again here, after the body was read: requests of a burst all passed the screen on arrival, before
    // any of them failed. The check, the verification and the count run without an await in between.
    const retryAfter = this.limiter.retryAfterSec(client)
    if (retryAfter > 0) {
      if (this.verifications.retryAfterSec(client) > 0) throw new TooManyFailuresError(retryAfter)
      this.verifications.recordFailure(client)
    }
    let verified: { key: LoadedKey; nonce: string; timestamp: number }
    try {
      verified = verifySignature(req, this.keyring, this.options.audience, this.nowSec())
    } catch (err) {
      if (!(err instanceof AuthError)) throw err
      if (retryAfter > 0) {
        // Already blocked: counted in the metrics only, and the answer stays 429.
        this.options.onFailure?.(err.reason)
        throw new TooManyFailuresError(retryAfter)
      }
      this.fail(err.reason, client)
      throw err
    }
    // Only a request with a valid signature may consume a nonce; otherwise anyone could burn nonces. The nonce must
    // outlive every second in which its timestamp still passes the clock check, wherever in the window it came.
    const passesUntilMs = (verified.timestamp + CLOCK_SKEW_SEC + 1) * 1000
    if (!(await this.options.nonces.remember(verified.nonce, passesUntilMs))) {
      this.options.onFailure?.('replayed_nonce')
      throw new ReplayError()
    }
    return verified.key
  }

  /** The token comparison is cheap, so a right token passes even for a blocked client. */
  verifyStatusToken(authorization: string | undefined, client: string): void {
    if (statusTokenMatches(authorization, this.keyring.statusToken)) return
    const retryAfter = this.limiter.retryAfterSec(client)
    if (retryAfter > 0) {
      this.options.onFailure?.('bad_token')
      throw new TooManyFailuresError(retryAfter)
    }
    this.fail('bad_token', client)
    throw new AuthError('bad_token')
  }

  /** Whether a request carries signature headers (so a read endpoint can accept either kind of auth). */
  static looksSigned(rawHeaders: readonly string[]): boolean {
    return rawHeaders.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'deploy-signature')
  }

  /** The key's `allow` policy: envs and ref globs it may deploy. */
  authorize(key: LoadedKey, target: { env: string; ref?: string }): void {
    const denied = deniedBy(key, target)
    if (denied) throw new ForbiddenError(`key "${key.id}" may not deploy ${denied}`)
  }

  /**
   * Approval is a second pair of eyes, so a permission of its own: the key needs `allow.approve`, must not be the key
   * that requested the deploy, and must be allowed for the deploy's env and ref like a deploying key.
   */
  authorizeApproval(key: LoadedKey, deploy: { env: string; ref: string; keyId: string | null }): void {
    if (!key.allow.approve)
      throw new ApprovalForbiddenError('approve_not_allowed', `key "${key.id}" may not approve deploys (its allow.approve is not set)`)
    if (deploy.keyId === key.id)
      throw new ApprovalForbiddenError('self_approval', `key "${key.id}" requested this deploy; another key must approve it`)
    const denied = deniedBy(key, deploy)
    if (denied) throw new ApprovalForbiddenError('approve_not_allowed', `key "${key.id}" may not approve a deploy ${denied}`)
  }

  /**
   * A rollback puts a kept release live again, so the key must be one that may deploy the ref it was built from.
   * With `allow.refs` set, a release no deploy record ties to a ref is refused: it cannot be shown to be allowed.
   */
  authorizeRollback(key: LoadedKey, target: { env: string; release: string; ref: string | null }): void {
    this.authorize(key, { env: target.env })
    if (!key.allow.refs) return
    if (target.ref === null)
      throw new ForbiddenError(
        `key "${key.id}" may not roll back to release "${target.release}": no deploy record says which ref it was built from`,
      )
    const denied = deniedBy(key, { env: target.env, ref: target.ref })
    if (denied) throw new ForbiddenError(`key "${key.id}" may not roll back to release "${target.release}": it may not deploy ${denied}`)
  }

  private fail(reason: AuthFailureReason, client: string): void {
    this.limiter.recordFailure(client)
    this.options.onFailure?.(reason)
  }
}

/** What of `target` the key's `allow` policy refuses (`to env "…"` or `ref "…"`), or null when it allows it. */
function deniedBy(key: LoadedKey, target: { env: string; ref?: string }): string | null {
  const { envs, refs } = key.allow
  if (envs && !envs.includes(target.env)) return `to env "${target.env}"`
  if (refs && target.ref !== undefined && !refs.some((pattern) => matchesGlob(target.ref as string, pattern))) return `ref "${target.ref}"`
  return null
}
