// The manifest: written last, atomically, beside the dump. It is the completion marker — a dump without its
// manifest does not exist — and the record of what the dump holds, how it was taken and how it was last verified.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { NAME_PATTERN } from '../config/schema.js'
import { writeFileAtomic } from '../files.js'
import { BACKUP_ID_PATTERN, BACKUP_KINDS, backupFileName, parseBackupName, type BackupKind } from './names.js'

export type VerifyMethod = 'full' | 'restore'

export interface Verification {
  at: string
  method: VerifyMethod
  ok: boolean
  /** Why verification failed. */
  reason?: string
  /** method 'restore': rows per table (`schema.table` as pg_dump names it) counted in the scratch database. */
  tables?: Record<string, number>
}

export interface ArchiveRecord {
  file: string
  bytes: number
  sha256: string
  /** The absolute paths archived (relative to / inside the archive). */
  paths: string[]
}

export interface Manifest {
  v: 1
  id: string
  app: string
  env: string
  kind: BackupKind
  /** ISO 8601, UTC, whole seconds: the time in the file name. */
  createdAt: string
  /** The dump's file name in the backup directory. */
  file: string
  bytes: number
  sha256: string
  pgServerVersion: string
  pgDumpVersion: string
  durationMs: number
  verified: Verification | null
  pinnedBy: string | null
  files?: ArchiveRecord
}

const sha256 = z.string().regex(/^[0-9a-f]{64}$/)
const count = z.number().int().min(0)

const manifestSchema = z.looseObject({
  v: z.literal(1),
  id: z.string().regex(BACKUP_ID_PATTERN),
  app: z.string().regex(NAME_PATTERN),
  env: z.string().regex(NAME_PATTERN),
  kind: z.enum(BACKUP_KINDS),
  createdAt: z.iso.datetime(),
  file: z.string(),
  bytes: count,
  sha256,
  pgServerVersion: z.string(),
  pgDumpVersion: z.string(),
  durationMs: count,
  verified: z
    .looseObject({
      at: z.iso.datetime(),
      method: z.enum(['full', 'restore']),
      ok: z.boolean(),
      reason: z.string().optional(),
      tables: z.record(z.string(), count).optional(),
    })
    .nullable(),
  pinnedBy: z.string().nullable(),
  files: z.looseObject({ file: z.string(), bytes: count, sha256, paths: z.array(z.string()) }).optional(),
})

/** The manifest's own file name, derived from the dump's. */
export function manifestFileName(manifest: Pick<Manifest, 'file'>): string {
  return manifest.file.replace(/\.dump$/, '.manifest.json')
}

/**
 * Parses and checks a manifest read from `fileName`: the schema, and that it describes the backup its file name
 * names — so a manifest can never point the engine at a file other than its own dump and archive.
 */
export function parseManifest(text: string, fileName: string): Manifest {
  const name = parseBackupName(fileName)
  if (name === null || name.part !== 'manifest') throw new Error(`${fileName} is not a manifest file name`)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new Error(`${fileName}: not JSON`)
  }
  const result = manifestSchema.safeParse(json)
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
    throw new Error(`${fileName}: ${problems.join('; ')}`)
  }
  const m = result.data as Manifest
  const mismatch =
    m.id !== name.id ||
    m.app !== name.app ||
    m.env !== name.env ||
    m.kind !== name.kind ||
    m.file !== backupFileName(name.base, 'dump') ||
    (m.files !== undefined && m.files.file !== backupFileName(name.base, 'files'))
  if (mismatch) throw new Error(`${fileName}: does not describe the backup its name names`)
  return m
}

export async function readManifest(dir: string, fileName: string): Promise<Manifest> {
  return parseManifest(await readFile(join(dir, fileName), 'utf8'), fileName)
}

/** Writes (or rewrites) the manifest atomically, mode 0600. */
export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  await writeFileAtomic(join(dir, manifestFileName(manifest)), `${JSON.stringify(manifest, null, 2)}\n`, 0o600)
}
