// The CLI's HTTP client: signs its requests exactly as CI does (same canonical string), or sends the status token.
import { signRequest, type SigningKey } from '../auth/canonical.js'

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

export class AgentClient {
  constructor(private readonly options: ClientOptions) {}

  /** GETs use the status token when there is one, else a signature. */
  async get<T>(path: string): Promise<T> {
    return this.send<T>('GET', path, undefined, this.options.token === undefined)
  }

  async post<T>(path: string, body: unknown): Promise<T> {
    return this.send<T>('POST', path, JSON.stringify(body ?? {}), true)
  }

  private async send<T>(method: string, path: string, body: string | undefined, signed: boolean): Promise<T> {
    const headers: Record<string, string> = {}
    if (body !== undefined) headers['content-type'] = 'application/json'
    if (signed) {
      const { keyId, key } = this.options
      if (!keyId || !key) throw new Error('this command needs a signing key: --key-id and --key-file (or DEPLOY_AGENT_KEY_ID / DEPLOY_AGENT_KEY_FILE)')
      Object.assign(headers, signRequest({ keyId, key, audience: this.options.audience, method, path, body }))
    } else {
      headers.authorization = `Bearer ${this.options.token}`
    }
    const response = await fetch(new URL(path, this.options.url), { method, headers, body })
    const text = await response.text()
    const parsed = text ? JSON.parse(text) : undefined
    if (!response.ok) {
      throw new AgentRequestError(response.status, parsed?.error?.code ?? 'http_error', parsed?.error?.message ?? `HTTP ${response.status}`)
    }
    return parsed as T
  }
}
