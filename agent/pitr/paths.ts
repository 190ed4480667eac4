// Where an env's point-in-time recovery keeps its files: `<backups.dir>/pitr/<app>_<env>/` with `base/` (one dir per
// base backup) and `wal/` (what pg_receivewal writes). Every dir 0700: WAL holds every row the database ever wrote.
import { rename, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { pitrSlotName } from '../config/schema.js'
import type { Target } from '../config/targets.js'
import { ensureDir, fsyncDir, listDir } from '../files.js'

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

const SET_ASIDE = /^before-\d{8}T\d{6}Z$/
const WAL_NAME = /^[0-9A-F]{24}(\.gz)?(\.partial)?$/

/** The WAL files of an env, relative to its WAL dir: the receiver's, and those set aside in `before-<time>/`. */
export async function listWalFiles(walDir: string): Promise<string[]> {
  const names = await listDir(walDir)
  const aside = await Promise.all(
    names.filter((n) => SET_ASIDE.test(n)).map(async (dir) => (await listDir(join(walDir, dir))).map((n) => `${dir}/${n}`)),
  )
  return [...names.filter((n) => !SET_ASIDE.test(n)), ...aside.flat()]
}

/** `listWalFiles` with each file's mtime (a file gone meanwhile, completed or pruned, is left out). */
export async function listWalFileInfos(walDir: string): Promise<{ name: string; mtime: Date }[]> {
  const infos = await Promise.all(
    (await listWalFiles(walDir)).map(async (name) => {
      const s = await stat(join(walDir, name)).catch(() => null)
      return s?.isFile() ? [{ name, mtime: s.mtime }] : []
    }),
  )
  return infos.flat()
}

/**
 * Moves the receiver's WAL segments into `before-<stamp>/` (recovery still reads them): pg_receivewal resumes after
 * the newest segment in its dir, which a new slot (after a lost or dropped one) no longer has on the server, so it
 * would fail forever. Answers how many were moved.
 */
export async function setAsideWal(walDir: string, stamp: string): Promise<number> {
  const names = (await listDir(walDir)).filter((n) => WAL_NAME.test(n))
  if (names.length === 0) return 0
  const aside = join(walDir, `before-${stamp}`)
  await ensureDir(aside, 0o700)
  for (const name of names) await rename(join(walDir, name), join(aside, name))
  await fsyncDir(walDir)
  return names.length
}
