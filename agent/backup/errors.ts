// Errors of the backup engine, each with a stable code the HTTP layer, the CLI and the journal can rely on.
import { AgentError } from '../errors.js'

export type BackupErrorCode =
  | 'backup_failed' // pg_dump, tar or the disk failed: nothing was kept
  | 'backup_busy' // another backup of the same app+env is running (here or in another process)
  | 'backup_invalid' // a stored backup failed verification and is not restored
  | 'verify_failed' // verification could not be done (scratch database unavailable): the backup is not judged
  | 'restore_failed' // the restore into the scratch database failed; the live database is untouched
  | 'database_busy' // sessions the agent may not end kept the database in use; nothing was swapped
  | 'files_restore_failed' // the database was restored, but its files could not be swapped in (they are as they were)

const STATUS: Record<BackupErrorCode, number> = {
  backup_failed: 500,
  backup_busy: 409,
  backup_invalid: 422,
  verify_failed: 500,
  restore_failed: 500,
  database_busy: 409,
  files_restore_failed: 500,
}

/** `detail` is the tail of the failing tool's stderr (pg_dump, pg_restore, psql, tar), for logs and the operator. */
export class BackupError extends AgentError {
  constructor(
    code: BackupErrorCode,
    message: string,
    readonly detail = '',
    options?: { cause?: unknown },
  ) {
    super(code, STATUS[code], detail === '' ? message : `${message}: ${detail}`)
    if (options?.cause !== undefined) this.cause = options.cause
  }
}

/** The message of anything thrown, for wrapping into a BackupError. */
export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
