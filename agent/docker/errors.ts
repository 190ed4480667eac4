// Errors of the Docker facade, each with a stable code the deploy journal and the HTTP layer can rely on.
import { AgentError, ConflictError } from '../errors.js'

export type BuildErrorCode = 'build_failed' | 'build_timeout' | 'build_cancelled'

/** A build that did not produce its image; `lastLines` is the tail of the build output, for the deploy log. */
export class BuildError extends AgentError {
  constructor(
    code: BuildErrorCode,
    message: string,
    readonly lastLines: string[],
  ) {
    super(code, code === 'build_timeout' ? 504 : 500, message)
  }
}

export type PullErrorCode = 'pull_failed' | 'pull_timeout' | 'registry_unauthorized' | 'image_not_found'

/** A pull that did not bring the image: the registry refused the credentials, has no such tag, or did not answer. */
export class PullError extends AgentError {
  constructor(code: PullErrorCode, message: string) {
    super(code, code === 'pull_timeout' ? 504 : 502, message)
  }
}

/** A container name is taken: blue/green slots must be retired before they are reused. */
export class ContainerExistsError extends ConflictError {
  constructor(name: string) {
    super('container_exists', `a container named "${name}" already exists`)
  }
}

export type DockerErrorCode =
  | 'docker_error'
  | 'docker_not_found'
  | 'docker_conflict'
  | 'image_in_use'
  | 'container_start_failed'
  /** A push the registry refused for its credentials (a swarm's `registryAuth`), as a pull's PullError says. */
  | 'registry_unauthorized'

/** Any other failure of the engine, keeping dockerode's error as `cause`. */
export class DockerError extends AgentError {
  constructor(code: DockerErrorCode, statusCode: number, message: string, options?: { cause?: unknown }) {
    super(code, statusCode, message)
    if (options?.cause !== undefined) this.cause = options.cause
  }
}

/** The HTTP status dockerode attaches to an engine answer, if any. */
export function engineStatus(err: unknown): number | undefined {
  const status = (err as { statusCode?: unknown } | null)?.statusCode
  return typeof status === 'number' ? status : undefined
}

/** The engine's own words when it sent any (dockerode pads its messages with a trailing space). */
export function engineMessage(err: unknown): string {
  const json = (err as { json?: { message?: unknown } } | null)?.json
  if (typeof json?.message === 'string') return json.message.trim()
  return (err instanceof Error ? err.message : String(err)).trim()
}

/** Maps an engine failure to an AgentError (AgentErrors pass through unchanged). */
export function toDockerError(err: unknown, what: string): AgentError {
  if (err instanceof AgentError) return err
  const status = engineStatus(err)
  const message = `${what}: ${engineMessage(err)}`
  if (status === 404) return new DockerError('docker_not_found', 404, message, { cause: err })
  if (status === 409) return new DockerError('docker_conflict', 409, message, { cause: err })
  return new DockerError('docker_error', 502, message, { cause: err })
}

/** Runs `fn`, turning engine failures into AgentErrors; answers `fallback` for the listed HTTP statuses. */
export async function callEngine<T>(what: string, fn: () => Promise<T>, fallback?: { statuses: number[]; value: T }): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    const status = engineStatus(err)
    if (fallback !== undefined && status !== undefined && fallback.statuses.includes(status)) return fallback.value
    throw toDockerError(err, what)
  }
}
