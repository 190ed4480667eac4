// The CLI's HTTP client: signs its requests exactly as CI does (same canonical string), or sends the status token.
import { signRequest, type SigningKey } from '../auth/canonical.js'
import { UsageError } from './usage.js'

export interface ClientOptions {
  url: string
  audience: string
  keyId?: string
  key?: SigningKey
  token?: string
}

export class AgentRequestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

/** No answer at all: nothing listens, DNS, a refused TLS certificate (exit 3, worth a retry in CI). */
export class AgentUnreachableError extends Error {}

/** Why fetch failed, from its cause (undici wraps the socket or TLS error). */
function unreachable(url: URL, err: unknown): AgentUnreachableError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause
  const why = cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err))
  const hint =
    url.protocol === 'https:' && /CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS/.test(why)
      ? ' (a private CA? trust it with NODE_EXTRA_CA_CERTS=/path/ca.pem)'
      : ''
  return new AgentUnreachableError(`cannot reach the agent at ${url.origin}: ${why}${hint}`)
}

/** One line of an NDJSON stream, parsed. */
export type JsonRecord = Record<string, unknown>

export class AgentClient {
  constructor(private readonly options: ClientOptions) {}

  /** GETs use the status token when there is one, else a signature. */
  async get<T>(path: string): Promise<T> {
    return this.send<T>('GET', path, undefined)
  }

  async post<T>(path: string, body: unknown): Promise<T> {
    return this.send<T>('POST', path, JSON.stringify(body ?? {}))
  }

  /**
   * GETs an NDJSON resource and yields one parsed object per line as the body arrives (lines split across chunks
   * are joined). Leaving the loop early cancels the request.
   */
  async *stream(path: string): AsyncGenerator<JsonRecord> {
    const response = await this.request('GET', path, undefined)
    if (!response.ok) throw requestError(response, await response.text())
    if (!response.body) return
    const reader = response.body.getReader()
    const decoder = new TextDecoder()
    let buffered = ''
    try {
      for (;;) {
        const { done, value } = await reader.read()
        buffered += done ? decoder.decode() : decoder.decode(value, { stream: true })
        let newline: number
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline)
          buffered = buffered.slice(newline + 1)
          if (line.trim() !== '') yield parseLine(line)
        }
        if (done) break
      }
      if (buffered.trim() !== '') yield parseLine(buffered)
    } finally {
      await reader.cancel().catch(() => undefined)
    }
  }

  private async send<T>(method: string, path: string, body: string | undefined): Promise<T> {
    const response = await this.request(method, path, body)
    const text = await response.text()
    if (!response.ok) throw requestError(response, text, method === 'GET' && this.options.token === undefined)
    return (text ? JSON.parse(text) : undefined) as T
  }

  private request(method: string, path: string, body: string | undefined): Promise<Response> {
    const headers: Record<string, string> = {}
    if (body !== undefined) headers['content-type'] = 'application/json'
    if (method !== 'GET' || this.options.token === undefined) {
      const { keyId, key } = this.options
      if (!keyId || !key)
        throw new UsageError('this command needs a signing key: --key-id and --key-file (or DEPLOY_AGENT_KEY_ID / DEPLOY_AGENT_KEY_FILE)')
      // Exit 1 like the agent's own 401 for a signed read it does not allow, so both ways of missing the token agree.
      if (path.includes('?'))
        throw new Error('this command needs the status token: --token-file (or DEPLOY_AGENT_STATUS_TOKEN_FILE / DEPLOY_AGENT_STATUS_TOKEN)')
      Object.assign(headers, signRequest({ keyId, key, audience: this.options.audience, method, path, body }))
    } else {
      headers.authorization = `Bearer ${this.options.token}`
    }
    const url = new URL(path, this.options.url)
    return fetch(url, { method, headers, body }).catch((err: unknown) => {
      throw unreachable(url, err)
    })
  }
}

function parseLine(line: string): JsonRecord {
  try {
    const value: unknown = JSON.parse(line)
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as JsonRecord
  } catch {
    // reported below
  }
  throw new Error(`the agent sent a line that is not a JSON object: ${line.slice(0, 200)}`)
}

function requestError(response: Response, text: string, signedRead = false): AgentRequestError {
  let parsed: { error?: { code?: string; message?: string } } | undefined
  try {
    parsed = text ? JSON.parse(text) : undefined
  } catch {
    parsed = undefined
  }
  let message = parsed?.error?.message ?? `HTTP ${response.status}`
  if (signedRead && response.status === 401)
    message += ' (reads other than status need the status token: --token-file or DEPLOY_AGENT_STATUS_TOKEN)'
  return new AgentRequestError(response.status, parsed?.error?.code ?? 'http_error', message)
}
