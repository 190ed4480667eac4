// The backup engine's public API. Nothing here knows HTTP, cron or the CLI: callers pass the config's values in.
export { BackupError, type BackupErrorCode } from './errors.js'
export { BackupLocks, lockFileName } from './lock.js'
export { listBackups, type AgentBackup, type BackupEntry, type LegacyBackup, type ListOptions } from './list.js'
export {
  manifestFileName,
  parseManifest,
  readManifest,
  writeManifest,
  type ArchiveRecord,
  type Manifest,
  type Verification,
  type VerifyMethod,
} from './manifest.js'
export {
  BACKUP_ID_PATTERN,
  BACKUP_KINDS,
  backupBaseName,
  backupFileName,
  formatStamp,
  newBackupId,
  parseBackupName,
  parseLegacyName,
  resolveBackupPath,
  type BackupKind,
  type BackupName,
  type LegacyBackupName,
  type ParsedBackupName,
  type ResolvedBackup,
} from './names.js'
export { DEFAULT_TOOLS, type DatabaseTarget, type PgTools } from '../pg/connection.js'
export { restoreBackup, type DumpFormat, type RestoreOptions, type RestoreResult } from './restore.js'
export { formatPlan, isoWeek, planRetention, type RetentionCandidate, type RetentionDecision, type RetentionPolicy } from './retention.js'
export { cleanPartials, takeBackup, type TakeBackupOptions } from './take.js'
export { verifyBackup, type VerifyOptions, type VerifyResult } from './verify.js'
