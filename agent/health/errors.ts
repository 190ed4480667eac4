// Errors of health checks. Codes are stable: the deploy journal and the API carry them.
import { AgentError } from '../errors.js'

export type HealthErrorCode = 'health_check_failed' | 'container_exited' | 'smoke_failed'

export class HealthError extends AgentError {
  constructor(
    override readonly code: HealthErrorCode,
    message: string,
  ) {
    super(code, 502, message)
  }
}

/** The rejection of a cancelled check: an AbortError, never a HealthError (a cancelled probe is not a failure). */
export function abortError(signal?: AbortSignal): Error {
  const reason: unknown = signal?.reason
  if (reason instanceof Error && reason.name === 'AbortError') return reason
  return new DOMException('the health check was cancelled', 'AbortError')
}

export function isAbortError(err: unknown): boolean {
  return err instanceof Error && err.name === 'AbortError'
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted === true) throw abortError(signal)
}
