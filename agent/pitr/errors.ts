// Errors of point-in-time recovery, each with a stable code. A refused target changes nothing.
import { AgentError } from '../errors.js'

export type PitrErrorCode =
  | 'pitr_disabled' // the env has no database.pitr (or it is disabled)
  | 'pitr_unknown_deploy' // beforeDeploy names no deploy of this env
  | 'pitr_target_unreachable' // before the earliest base backup's end, after the last flushed WAL, or no restore point
  | 'pitr_not_flushed' // the receiver did not flush past a position in time (a deploy waits for this)
  | 'pitr_busy' // a PITR restore of this env is already running
  | 'pitr_failed' // slot, receiver, base backup or recovery failed

const STATUS: Record<PitrErrorCode, number> = {
  pitr_disabled: 409,
  pitr_unknown_deploy: 404,
  pitr_target_unreachable: 422,
  pitr_not_flushed: 504,
  pitr_busy: 409,
  pitr_failed: 500,
}

export class PitrError extends AgentError {
  constructor(code: PitrErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, STATUS[code], message)
    if (options?.cause !== undefined) this.cause = options.cause
  }
}
