// Nonces of accepted signed requests, remembered for a TTL so a replayed request is refused, across restarts too.
// `<stateDir>/nonces.jsonl` holds one `{ n, exp }` line per nonce; it is compacted once mostly expired.
import { join } from 'node:path'
import { ValidationError } from '../errors.js'
import { ensureDir } from '../files.js'
import { Journal, type TornLine } from './journal.js'

export const NONCE_TTL_MS = 10 * 60 * 1000
export const NONCE_MAX_LENGTH = 256

export interface NonceStoreOptions {
  ttlMs?: number
  /** Clock in ms since the epoch. */
  now?: () => number
  /** The file is compacted when it has more lines than this and more than twice the live nonces. */
  compactMinLines?: number
  onTornLine?: (info: TornLine) => void
  /** A compaction failed; remembering goes on and compaction is tried again later. */
  onCompactError?: (err: unknown) => void
}

const isNonceLine = (record: Readonly<Record<string, unknown>>): record is { n: string; exp: number } =>
  typeof record.n === 'string' && typeof record.exp === 'number' && Number.isFinite(record.exp)

export class NonceStore {
  /** nonce → expiry (ms). Insertion order is roughly expiry order, which lets pruning stop at the first live one. */
  readonly #expiries = new Map<string, number>()
  readonly #journal: Journal
  readonly #ttlMs: number
  readonly #now: () => number
  readonly #compactMinLines: number
  readonly #onCompactError: (err: unknown) => void
  #compacting: Promise<void> | undefined
  /** No compaction is tried again before the file reaches this many lines (raised after a failure). */
  #compactRetryAt = 0

  private constructor(journal: Journal, opts: NonceStoreOptions) {
    this.#journal = journal
    this.#ttlMs = opts.ttlMs ?? NONCE_TTL_MS
    this.#now = opts.now ?? Date.now
    this.#compactMinLines = opts.compactMinLines ?? 1000
    this.#onCompactError = opts.onCompactError ?? (() => undefined)
    const now = this.#now()
    for (const record of journal.records()) {
      if (!isNonceLine(record) || record.exp <= now) continue
      const known = this.#expiries.get(record.n) ?? 0
      this.#expiries.delete(record.n)
      this.#expiries.set(record.n, Math.max(known, record.exp))
    }
  }

  /** Opens `<stateDir>/nonces.jsonl` (creating the state dir) and loads the nonces not yet expired. */
  static async open(stateDir: string, opts: NonceStoreOptions = {}): Promise<NonceStore> {
    const ttlMs = opts.ttlMs ?? NONCE_TTL_MS
    if (!(Number.isFinite(ttlMs) && ttlMs > 0)) throw new RangeError(`ttlMs must be a positive number of ms, got ${ttlMs}`)
    await ensureDir(stateDir)
    const journal = await Journal.open(join(stateDir, 'nonces.jsonl'), { now: opts.now, onTornLine: opts.onTornLine })
    return new NonceStore(journal, opts)
  }

  /** Live nonces in memory. */
  get size(): number {
    this.#prune(this.#now())
    return this.#expiries.size
  }

  /**
   * Remembers `nonce` for the TTL (and at least until `untilMs`: a request's timestamp may stay acceptable longer
   * than the TTL after its first use) and resolves true once that is on disk; false when it is already known and
   * unexpired (a replay). The check and the claim happen before any await, so of two concurrent calls with one
   * nonce only one can win. If the write fails the nonce stays claimed in memory (a retry is a replay) and this rejects.
   */
  async remember(nonce: string, untilMs = 0): Promise<boolean> {
    if (typeof nonce !== 'string' || nonce === '' || nonce.length > NONCE_MAX_LENGTH) {
      throw new ValidationError(`a nonce must be a string of 1 to ${NONCE_MAX_LENGTH} characters`)
    }
    const now = this.#now()
    this.#prune(now)
    const known = this.#expiries.get(nonce)
    if (known !== undefined && known > now) return false
    // Still within about a second of the TTL (a timestamp is at most 300 s ahead), so the map stays in expiry order.
    const exp = Math.max(now + this.#ttlMs, Number.isFinite(untilMs) ? untilMs : 0)
    this.#expiries.delete(nonce) // re-inserted at the end, keeping the map in expiry order
    this.#expiries.set(nonce, exp)
    await this.#journal.append({ n: nonce, exp })
    await this.#maybeCompact()
    return true
  }

  /** Waits for writes (and a running compaction) and closes the file. */
  async close(): Promise<void> {
    await this.#compacting
    await this.#journal.close()
  }

  /** Drops expired nonces from the front of the map; amortised O(1) per call. */
  #prune(now: number): void {
    for (const [nonce, exp] of this.#expiries) {
      if (exp > now) break
      this.#expiries.delete(nonce)
    }
  }

  #maybeCompact(): Promise<void> | undefined {
    const lines = this.#journal.records().length
    if (this.#compacting || lines <= Math.max(this.#compactMinLines, this.#compactRetryAt, 2 * this.#expiries.size)) return
    this.#compacting = this.#compact(lines).finally(() => {
      this.#compacting = undefined
    })
    return this.#compacting
  }

  async #compact(lines: number): Promise<void> {
    const now = this.#now()
    const live = [...this.#expiries].filter(([, exp]) => exp > now).map(([n, exp]) => ({ n, exp }))
    try {
      await this.#journal.rewrite(live)
      this.#compactRetryAt = 0
    } catch (err) {
      this.#compactRetryAt = lines + this.#compactMinLines
      this.#onCompactError(err)
    }
  }
}
