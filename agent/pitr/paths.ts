// Where an env's point-in-time recovery keeps its files: `<backups.dir>/pitr/<app>_<env>/` with `base/` (one dir per
// base backup) and `wal/` (what pg_receivewal writes). Every dir 0700: WAL holds every row the database ever wrote.
import { join } from 'node:path'
import { pitrSlotName } from '../config/schema.js'
import type { Target } from '../config/targets.js'
import { ensureDir } from '../files.js'

export interface PitrPaths {
  root: string
  base: string
  wal: string
}

export function pitrPaths(backupsDir: string, app: string, env: string): PitrPaths {
  const root = join(backupsDir, 'pitr', `${app}_${env}`)
  return { root, base: join(root, 'base'), wal: join(root, 'wal') }
}

export async function ensurePitrDirs(paths: PitrPaths): Promise<void> {
  await ensureDir(paths.base, 0o700)
  await ensureDir(paths.wal, 0o700)
}

/** The env's replication slot name. */
export function pitrSlot(target: Target): string {
  return pitrSlotName(target.app, target.env, target.envConfig.database?.pitr?.slot)
}
