// Backup file names: `<app>_<env>_<YYYYMMDDTHHMMSSZ>_<kind>_<id>` + `.dump` | `.manifest.json` | `.files.tar.gz`, the
// legacy `backup_YYYYMMDD_HHMMSS.sql.gz` of the old shell scripts, and the one safe way from a request's id or file
// name to a path in the backup directory. App and env names never contain `_`, so the parts split unambiguously.
import { randomBytes } from 'node:crypto'
import { lstat, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { NAME_PATTERN } from '../config/schema.js'
import { NotFoundError, ValidationError } from '../errors.js'

export const BACKUP_KINDS = ['nightly', 'predeploy', 'manual', 'prerestore'] as const
export type BackupKind = (typeof BACKUP_KINDS)[number]

/** 8 lowercase hex characters: 32 random bits, unique enough within one backup directory. */
export const BACKUP_ID_PATTERN = /^[0-9a-f]{8}$/

export const SUFFIX = { dump: '.dump', manifest: '.manifest.json', files: '.files.tar.gz' } as const
export type BackupPart = keyof typeof SUFFIX

export interface BackupName {
  app: string
  env: string
  createdAt: Date
  kind: BackupKind
  id: string
}

export interface ParsedBackupName extends BackupName {
  /** The name without its suffix: `<app>_<env>_<stamp>_<kind>_<id>`. */
  base: string
  part: BackupPart
}

export interface LegacyBackupName {
  file: string
  createdAt: Date
}

const NAME = NAME_PATTERN.source.slice(1, -1)
const AGENT_FILE = new RegExp(
  `^(${NAME})_(${NAME})_(\\d{8}T\\d{6}Z)_(${BACKUP_KINDS.join('|')})_([0-9a-f]{8})(\\.dump|\\.manifest\\.json|\\.files\\.tar\\.gz)?$`,
)
const LEGACY_FILE = /^backup_(\d{8})_(\d{6})\.sql\.gz$/

export function newBackupId(): string {
  return randomBytes(4).toString('hex')
}

/** `YYYYMMDDTHHMMSSZ` in UTC; milliseconds are dropped. */
export function formatStamp(date: Date): string {
  return date
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:]/g, '')
}

function parseStamp(date: string, time: string): Date | null {
  const iso = `${date.slice(0, 4)}-${date.slice(4, 6)}-${date.slice(6, 8)}T${time.slice(0, 2)}:${time.slice(2, 4)}:${time.slice(4, 6)}Z`
  const parsed = new Date(iso)
  // Date rolls 2027-02-30 over to March: only a stamp that formats back to itself is a real time.
  return Number.isNaN(parsed.getTime()) || parsed.toISOString() !== iso.replace('Z', '.000Z') ? null : parsed
}

/** The base name (no suffix); throws a ValidationError for app or env names that are not config names. */
export function backupBaseName(name: BackupName): string {
  if (!NAME_PATTERN.test(name.app)) throw new ValidationError(`app "${name.app}" must match ${NAME_PATTERN}`)
  if (!NAME_PATTERN.test(name.env)) throw new ValidationError(`env "${name.env}" must match ${NAME_PATTERN}`)
  if (!BACKUP_ID_PATTERN.test(name.id)) throw new ValidationError(`backup id "${name.id}" must match ${BACKUP_ID_PATTERN}`)
  if (!BACKUP_KINDS.includes(name.kind)) throw new ValidationError(`backup kind "${name.kind}" must be one of ${BACKUP_KINDS.join(', ')}`)
  return `${name.app}_${name.env}_${formatStamp(name.createdAt)}_${name.kind}_${name.id}`
}

export function backupFileName(base: string, part: BackupPart): string {
  return base + SUFFIX[part]
}

/** A file name (or a bare base name, then `part` is 'dump') of this agent's backups, else null. */
export function parseBackupName(file: string): ParsedBackupName | null {
  const m = AGENT_FILE.exec(file)
  if (m === null) return null
  const [, app, env, stamp, kind, id, suffix] = m as unknown as [string, string, string, string, BackupKind, string, string | undefined]
  const createdAt = parseStamp(stamp.slice(0, 8), stamp.slice(9, 15))
  if (createdAt === null) return null
  const part = (Object.keys(SUFFIX) as BackupPart[]).find((p) => SUFFIX[p] === suffix) ?? 'dump'
  return { app, env, createdAt, kind, id, base: `${app}_${env}_${stamp}_${kind}_${id}`, part }
}

/** `backup_YYYYMMDD_HHMMSS.sql.gz` (read as UTC), else null. */
export function parseLegacyName(file: string): LegacyBackupName | null {
  const m = LEGACY_FILE.exec(file)
  if (m === null) return null
  const createdAt = parseStamp(m[1] as string, m[2] as string)
  return createdAt === null ? null : { file, createdAt }
}

export type ResolvedBackup =
  | { format: 'agent'; name: ParsedBackupName; path: string; manifestPath: string }
  | { format: 'legacy'; name: LegacyBackupName; path: string }

const PLAIN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/

/**
 * From what a request names (a backup id, any of a backup's file names, or a legacy file name) to the files in `dir`.
 * Anything that is not a plain file name — a `/`, `..`, a NUL, a leading dot — is refused (400) before the disk is
 * touched; a name that is no backup, a dump without its manifest, or a symlink is not found (404).
 */
export async function resolveBackupPath(dir: string, idOrName: string): Promise<ResolvedBackup> {
  if (typeof idOrName !== 'string' || !PLAIN_NAME.test(idOrName) || idOrName.includes('..')) {
    throw new ValidationError('a backup is named by its id or a plain file name in the backup directory')
  }
  let base: string | undefined
  if (BACKUP_ID_PATTERN.test(idOrName)) {
    const entries = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[]
      throw err
    })
    const matches = entries.filter((f) => f.endsWith(`_${idOrName}${SUFFIX.manifest}`))
    if (matches.length > 1) throw new ValidationError(`backup id "${idOrName}" is ambiguous: name the file`)
    base = matches[0]?.slice(0, -SUFFIX.manifest.length)
  } else {
    const parsed = parseBackupName(idOrName)
    if (parsed !== null) base = parsed.base
    else {
      const legacy = parseLegacyName(idOrName)
      if (legacy !== null) {
        const path = join(dir, idOrName)
        if (!(await isRegularFile(path))) throw new NotFoundError(`no backup "${idOrName}"`)
        return { format: 'legacy', name: legacy, path }
      }
    }
  }
  const name = base === undefined ? null : parseBackupName(base)
  if (base === undefined || name === null) throw new NotFoundError(`no backup "${idOrName}"`)
  const path = join(dir, backupFileName(base, 'dump'))
  const manifestPath = join(dir, backupFileName(base, 'manifest'))
  // A dump without its manifest never completed: it does not exist.
  if (!(await isRegularFile(manifestPath)) || !(await isRegularFile(path))) throw new NotFoundError(`no backup "${idOrName}"`)
  return { format: 'agent', name, path, manifestPath }
}

async function isRegularFile(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isFile()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
}
