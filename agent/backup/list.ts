// What the backup directory holds: complete backups (those with a valid manifest and their dump) and legacy
// `backup_YYYYMMDD_HHMMSS.sql.gz` files, newest first. Partials, orphan dumps and unknown files are not backups.
import { lstat } from 'node:fs/promises'
import { join } from 'node:path'
import { listDir } from '../files.js'
import { describe } from './errors.js'
import { readManifest, type Manifest } from './manifest.js'
import { parseBackupName, parseLegacyName } from './names.js'

export interface AgentBackup extends Manifest {
  legacy: false
}

/** A legacy file: it names no app or env, and has no manifest; its id is its file name. */
export interface LegacyBackup {
  id: string
  legacy: true
  app: null
  env: null
  kind: null
  createdAt: string
  file: string
  bytes: number
  sha256: null
  verified: null
  pinnedBy: null
}

export type BackupEntry = AgentBackup | LegacyBackup

export interface ListOptions {
  /** Told about a manifest that is not used (unreadable, invalid, or its dump is missing). */
  onSkip?: (file: string, reason: string) => void
}

export async function listBackups(dir: string, options: ListOptions = {}): Promise<BackupEntry[]> {
  const entries = await listDir(dir)
  const backups: BackupEntry[] = []
  // Names carry whole seconds; two backups of the same second are told apart by when their file was written.
  const writtenAt = new Map<string, number>()
  for (const entry of entries) {
    const name = parseBackupName(entry)
    if (name !== null && name.part === 'manifest' && entry.endsWith('.manifest.json')) {
      try {
        const manifest = await readManifest(dir, entry)
        const dump = await fileInfo(join(dir, manifest.file))
        if (dump === null) throw new Error(`its dump ${manifest.file} is missing`)
        writtenAt.set(manifest.id, dump.mtimeMs)
        backups.push({ ...manifest, legacy: false })
      } catch (err) {
        options.onSkip?.(entry, describe(err))
      }
      continue
    }
    const legacy = parseLegacyName(entry)
    if (legacy === null) continue
    const info = await fileInfo(join(dir, entry))
    if (info === null) continue
    writtenAt.set(entry, info.mtimeMs)
    const bytes = info.size
    backups.push({
      id: entry,
      legacy: true,
      app: null,
      env: null,
      kind: null,
      createdAt: legacy.createdAt.toISOString().replace('.000Z', 'Z'),
      file: entry,
      bytes,
      sha256: null,
      verified: null,
      pinnedBy: null,
    })
  }
  const written = (b: BackupEntry) => writtenAt.get(b.id) ?? 0
  return backups.sort(
    (a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt) || written(b) - written(a) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0),
  )
}

/** The size of a regular file (not a symlink), or null. */
async function fileInfo(path: string): Promise<{ size: number; mtimeMs: number } | null> {
  try {
    const info = await lstat(path)
    return info.isFile() ? { size: info.size, mtimeMs: info.mtimeMs } : null
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
}
