// Every error the agent answers with: a stable `code` for programs, an HTTP status, and a message for people.
export class AgentError extends Error {
  constructor(
    readonly code: string,
    readonly statusCode: number,
    message: string,
  ) {
    super(message)
    this.name = new.target.name
  }
}

export class ValidationError extends AgentError {
  constructor(message: string) {
    super('invalid_request', 400, message)
  }
}

export class NotFoundError extends AgentError {
  constructor(message: string) {
    super('not_found', 404, message)
  }
}

export class ForbiddenError extends AgentError {
  constructor(message: string) {
    super('forbidden', 403, message)
  }
}

export class ConflictError extends AgentError {
  constructor(code: string, message: string) {
    super(code, 409, message)
  }
}

export class NotImplementedError extends AgentError {
  constructor(what: string) {
    super('not_implemented', 501, `${what} is not available in this version yet`)
  }
}

/** A config with problems: all of them, each prefixed with its key path. */
export class ConfigError extends AgentError {
  constructor(readonly problems: string[]) {
    super('invalid_config', 500, `invalid config:\n  ${problems.join('\n  ')}`)
  }
}

/** A write that found the disk full: said as such to the API (507) and in a deploy's error. */
export class DiskFullError extends AgentError {
  constructor(message: string) {
    super('disk_full', 507, message)
  }
}

/** The DiskFullError for an ENOSPC from the file system, else null. */
export function asDiskFull(err: unknown): DiskFullError | null {
  const e = err as NodeJS.ErrnoException | null
  return e?.code === 'ENOSPC' ? new DiskFullError(`the disk is full: ${e.message}`) : null
}
