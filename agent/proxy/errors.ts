// Errors of the proxy switch. Codes are stable: the deploy journal and the API carry them.
import { AgentError } from '../errors.js'

export type ProxyErrorCode =
  | 'proxy_invalid_port'
  | 'proxy_invalid_config'
  | 'proxy_not_running'
  | 'proxy_test_failed'
  | 'proxy_reload_failed'
  | 'proxy_reload_unconfirmed'

export class ProxyError extends AgentError {
  constructor(
    override readonly code: ProxyErrorCode,
    message: string,
    /** What the command printed on stderr, when a command failed. */
    readonly stderr?: string,
    statusCode = 502,
  ) {
    super(code, statusCode, message)
  }
}
