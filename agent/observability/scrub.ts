// Removes secrets from what leaves the box in an error report: values under sensitive keys (the logger's redact
// list and a few more), passwords in URLs, bearer tokens, request signatures, `token=…`-style pairs in text, and
// the exact values the agent knows to be secret (env file values, database passwords, tokens, HMAC secrets).
import { SENSITIVE_FIELDS, SENSITIVE_HEADERS } from './logger.js'

export const SCRUBBED = '[redacted]'

const normalize = (key: string) => key.toLowerCase().replace(/[^a-z0-9]/g, '')

/** Key names (normalized) whose values are never sent: the logger's list plus the usual names of credentials. */
const SENSITIVE_KEY_PARTS = [
  ...SENSITIVE_HEADERS,
  ...SENSITIVE_FIELDS,
  'signature',
  'passwd',
  'apikey',
  'cookie',
  'credential',
  'privatekey',
  'dsn',
].map(normalize)

export function isSensitiveKey(key: string): boolean {
  const k = normalize(key)
  return SENSITIVE_KEY_PARTS.some((part) => k.includes(part))
}

const WORDS = /password|passwd|secret|token|signature|authorization|api[_-]?key|credential/i
// Every rule is linear in the text: the lookbehinds make a match start only where a name starts, so a long line
// (build output, 8 KiB of one character) is not rescanned from each of its positions.
const TEXT_RULES: Array<[RegExp, string | ((...groups: string[]) => string)]> = [
  // scheme://user:password@host → scheme://user:[redacted]@host (DATABASE_URL and friends)
  [/(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*:\/\/[^\s:@/]*):[^\s@/]+@/gi, `$1:${SCRUBBED}@`],
  [/\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+/gi, `$1 ${SCRUBBED}`],
  [/\bv1=[A-Za-z0-9_-]{16,}/g, `v1=${SCRUBBED}`],
  // token=…, "password": "…", X_SECRET: … (the key stays readable, the value goes)
  [
    /(?<![A-Za-z0-9_.-])([A-Za-z0-9_.-]+["']?\s*[=:]\s*["']?)([^\s"',;&}]+)/g,
    (match, key) => (WORDS.test(key as string) ? `${key}${SCRUBBED}` : match),
  ],
]

/** Secrets shorter than this are not searched for in text: a 2-character value would blank out half a message. */
const MIN_KNOWN_SECRET = 6

const SECRET_NAME = /key|pass|secret|token|auth|credential|private|dsn|salt|pepper|cookie|signature/i

/**
 * The values of `KEY=VALUE` env lines to scrub: every value under a secret-sounding name, and every other value
 * that looks random (16+ characters mixing letters with digits or cases). Plain words are left alone:
 * `NODE_ENV=production` must not blank out the env's name in every message.
 */
export function envSecretValues(vars: readonly string[]): string[] {
  return vars.flatMap((v) => {
    const eq = v.indexOf('=')
    const [name, value] = [v.slice(0, eq), v.slice(eq + 1)]
    if (SECRET_NAME.test(name)) return [value]
    const kinds = [/[a-z]/, /[A-Z]/, /[0-9]/].filter((re) => re.test(value)).length
    return value.length >= 16 && kinds >= 2 ? [value] : []
  })
}

/**
 * One instance is shared by everything that sends text out (deploy records and logs, notifications, Sentry), so
 * what it learns (a config reload, env files re-read at deploy time) is scrubbed everywhere from then on.
 */
export class Scrubber {
  private known: string[] = []

  constructor(knownSecrets: Iterable<string> = []) {
    this.learn(knownSecrets)
  }

  /** Adds secrets; the ones known before stay (a rotated secret still shows up in output of the old release). */
  learn(secrets: Iterable<string>): void {
    // Longest first, so a secret containing another is removed whole.
    const fresh = [...secrets].filter((s) => s.length >= MIN_KNOWN_SECRET)
    if (fresh.every((s) => this.known.includes(s))) return
    this.known = [...new Set([...this.known, ...fresh])].sort((a, b) => b.length - a.length)
  }

  text(value: string): string {
    let out = value
    for (const secret of this.known) out = out.split(secret).join(SCRUBBED)
    for (const [pattern, replacement] of TEXT_RULES)
      out = out.replace(pattern, replacement as (substring: string, ...args: string[]) => string)
    return out
  }

  /** A deep copy of `value` with sensitive keys blanked and every string scrubbed. */
  value<T>(value: T): T {
    return this.walk(value, 0) as T
  }

  private walk(value: unknown, depth: number): unknown {
    if (typeof value === 'string') return this.text(value)
    if (typeof value !== 'object' || value === null || depth > 32) return value
    if (Array.isArray(value)) return value.map((v) => this.walk(v, depth + 1))
    const out: Record<string, unknown> = {}
    for (const [key, v] of Object.entries(value))
      out[key] = isSensitiveKey(key) && v !== null && v !== undefined ? SCRUBBED : this.walk(v, depth + 1)
    return out
  }
}
