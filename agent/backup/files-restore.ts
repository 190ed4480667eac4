// Restoring a backup's `files` (its `.files.tar.gz`) without trusting the archive and without a half-restored
// directory: every entry is checked before anything is written (`checkArchive`), then each backed-up path is
// extracted into a side path beside it, `<path>.restore-<rid>` (same file system), and only after the database swap
// is it swapped in: `<path>` → `<path>.old-<rid>`, `<path>.restore-<rid>` → `<path>`. The old one is kept, like the
// old database.
//
// An entry is refused when its name is absolute or has a `..` segment, lies outside the backed-up paths, is a device
// or a fifo (or any type but file, directory, symlink, hard link), when a symlink points to an absolute path or out
// of its backed-up path, or a hard link names a member outside it. Extraction never writes through a symlink (each
// parent is checked to be a real directory), never overwrites (a member twice is refused), and drops setuid, setgid
// and sticky bits; owners are restored only when the agent runs as root.
import { access, constants, lstat, lutimes, link, lchown, chmod, mkdir, open, rename, rm, stat, symlink, utimes } from 'node:fs/promises'
import { dirname, posix } from 'node:path'
import { fsyncDir } from '../files.js'
import { BackupError, describe } from './errors.js'
import { readTarGz, type TarEntry } from './tar-reader.js'

/** Paths compared as the backup wrote them: normalised, no trailing slash. */
export const cleanFilesPath = (p: string) => posix.normalize(p).replace(/(.)\/+$/, '$1')

export interface FilesPlan {
  /** Archived and still in the env's `files`: restored. */
  restore: string[]
  /** Archived but no longer in the env's `files`: left alone (the archive may not write where the config does not say). */
  skipped: string[]
}

export function planFiles(archived: readonly string[], configured: readonly string[]): FilesPlan {
  const wanted = new Set(configured.map(cleanFilesPath))
  const paths = archived.map(cleanFilesPath)
  return { restore: paths.filter((p) => wanted.has(p)), skipped: paths.filter((p) => !wanted.has(p)) }
}

/** Where an entry goes: its backed-up path and the part below it (`''` for the path itself, else `/a/b`). */
export type Placement = { root: string; rel: string } | { problem: string }

function place(name: string, roots: readonly string[]): Placement {
  if (name.startsWith('/')) return { problem: 'has an absolute path' }
  const parts = name.split('/').filter((p) => p !== '' && p !== '.')
  if (parts.includes('..')) return { problem: 'has a ".." segment' }
  const path = `/${parts.join('/')}`
  const root = roots.find((r) => path === r || path.startsWith(`${r}/`))
  if (root === undefined) return { problem: 'lies outside the backed-up paths' }
  return { root, rel: path.slice(root.length) }
}

/** Where `entry` goes below `roots` (the archived paths), or why it is refused. */
export function placeEntry(entry: TarEntry, roots: readonly string[]): Placement {
  const placed = place(entry.name, roots)
  if ('problem' in placed) return placed
  switch (entry.type) {
    case 'file':
    case 'dir':
      return placed
    case 'symlink': {
      if (placed.rel === '') return { problem: 'is a symlink in place of a backed-up path' }
      if (entry.linkname.startsWith('/')) return { problem: `is a symlink to an absolute path (${entry.linkname})` }
      const to = posix.normalize(posix.join(posix.dirname(placed.rel.slice(1)), entry.linkname))
      if (to === '..' || to.startsWith('../')) return { problem: `is a symlink out of ${placed.root} (${entry.linkname})` }
      return placed
    }
    case 'hardlink': {
      const source = place(entry.linkname, roots)
      if ('problem' in source || source.root !== placed.root || source.rel === '')
        return { problem: `is a hard link to a file outside ${placed.root} (${entry.linkname})` }
      return placed
    }
    case 'device':
    case 'fifo':
      return { problem: `is a ${entry.type === 'fifo' ? 'fifo' : 'device file'}` }
    default:
      return { problem: `has an unsupported type "${entry.flag}"` }
  }
}

const invalid = (id: string, message: string) =>
  new BackupError('backup_invalid', `backup ${id}: the files archive ${message}; nothing was restored`)

/** Reads the whole archive, refusing it when any entry would be refused. Writes nothing. */
export async function checkArchive(id: string, path: string, roots: readonly string[]): Promise<void> {
  const symlinks = new Set<string>()
  try {
    for await (const { entry } of readTarGz(path)) {
      const placed = placeEntry(entry, roots)
      if ('problem' in placed) throw invalid(id, `entry "${entry.name}" ${placed.problem}`)
      // Extraction would refuse to write through it too; said here, before anything happens.
      const full = `${placed.root}${placed.rel}`
      const parts = full.split('/')
      if (parts.some((_, i) => i > 0 && symlinks.has(parts.slice(0, i).join('/'))))
        throw invalid(id, `entry "${entry.name}" lies below a symlink of the archive`)
      if (entry.type === 'symlink') symlinks.add(full)
    }
  } catch (err) {
    if (err instanceof BackupError) throw err
    throw invalid(id, `cannot be read (${describe(err)})`)
  }
}

/**
 * What would stop the swap of each path, checked before anything happens: a mount point cannot be renamed (mount
 * its parent instead), and the agent must be able to write the directory holding it (a read-only file system, e.g.
 * systemd's ProtectSystem, or another owner).
 */
export async function swapProblems(paths: readonly string[]): Promise<string[]> {
  const problems: string[] = []
  for (const path of paths) {
    const parent = dirname(path)
    const [self, above] = await Promise.all([lstat(path).catch(() => null), stat(parent).catch(() => null)])
    if (self !== null && above !== null && self.dev !== above.dev) problems.push(`${path} is a mount point and cannot be swapped`)
    // A missing parent is created: then the nearest existing directory above must be writable.
    let existing = parent
    while (existing !== '/' && (await lstat(existing).catch(() => null)) === null) existing = dirname(existing)
    const writable = await access(existing, constants.W_OK).then(
      () => null,
      (err: NodeJS.ErrnoException) => err.code ?? String(err),
    )
    if (writable !== null) problems.push(`the agent cannot write ${existing} (${writable}), where ${path} is swapped`)
  }
  return problems
}

export interface SidePath {
  /** The backed-up path. */
  path: string
  /** Where it was extracted: `<path>.restore-<rid>`. */
  side: string
  /** Where the live one goes: `<path>.old-<rid>`. */
  old: string
}

/** The restore's own names beside each path. */
export function sidePaths(paths: readonly string[], rid: string): SidePath[] {
  return paths.map((path) => ({ path, side: `${path}.restore-${rid}`, old: `${path}.old-${rid}` }))
}

/** Each parent of `rel` below `side` must be a real directory (created when missing), never a symlink or a file. */
async function parentsOf(side: string, rel: string, create: boolean): Promise<void> {
  const parts = rel.split('/').filter((p) => p !== '')
  let at = side
  for (const part of ['', ...parts.slice(0, -1)]) {
    at = part === '' ? at : `${at}/${part}`
    const stat = await lstat(at).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT' || !create) throw err
      return null
    })
    if (stat === null) await mkdir(at, { mode: 0o755 })
    else if (!stat.isDirectory()) throw new Error(`${at} is not a directory`)
  }
}

/**
 * Extracts the entries of `restore` paths into their side paths (entries of other archived paths are skipped). On
 * any failure the side paths are removed and the live paths were never touched.
 */
export async function extractArchive(id: string, archive: string, roots: readonly string[], sides: readonly SidePath[]): Promise<void> {
  const byRoot = new Map(sides.map((s) => [s.path, s]))
  const asRoot = process.getuid?.() === 0
  const dirModes: [string, number, number][] = []
  try {
    for (const s of sides) {
      if ((await lstat(s.side).catch(() => null)) !== null) throw new Error(`${s.side} already exists`)
      await mkdir(dirname(s.side), { recursive: true })
    }
    for await (const { entry, body } of readTarGz(archive)) {
      const placed = placeEntry(entry, roots)
      if ('problem' in placed) throw invalid(id, `entry "${entry.name}" ${placed.problem}`)
      const s = byRoot.get(placed.root)
      if (s === undefined) continue
      const dest = `${s.side}${placed.rel}`
      // The side path itself is created by its own entry; anything below it needs its parents first.
      if (placed.rel !== '') await parentsOf(s.side, placed.rel, true)
      const mode = entry.mode & 0o777
      if (entry.type === 'dir') {
        const existing = await lstat(dest).catch(() => null)
        if (existing === null) await mkdir(dest, { mode: 0o700 })
        else if (!existing.isDirectory()) throw new Error(`${entry.name} is in the archive twice`)
        dirModes.push([dest, mode, entry.mtime]) // applied last: a read-only directory must still take its files
      } else if (entry.type === 'file') {
        const handle = await open(dest, 'wx', 0o600) // wx: never through a symlink, never over a member seen before
        try {
          for await (const chunk of body()) await handle.write(chunk)
          await handle.sync()
        } finally {
          await handle.close()
        }
        await chmod(dest, mode)
        await utimes(dest, entry.mtime, entry.mtime)
      } else if (entry.type === 'symlink') {
        await symlink(entry.linkname, dest)
        await lutimes(dest, entry.mtime, entry.mtime)
      } else {
        const source = place(entry.linkname, roots) as { root: string; rel: string }
        await parentsOf(s.side, source.rel, false)
        if (!(await lstat(`${s.side}${source.rel}`)).isFile()) throw new Error(`${entry.name} links to ${entry.linkname}, not a file`)
        await link(`${s.side}${source.rel}`, dest)
      }
      if (asRoot) await lchown(dest, entry.uid, entry.gid)
    }
    for (const [dir, mode, mtime] of dirModes.reverse()) {
      await chmod(dir, mode)
      await utimes(dir, mtime, mtime)
    }
    for (const s of sides) await fsyncDir(dirname(s.side))
  } catch (err) {
    await discardSides(sides)
    if (err instanceof BackupError) throw err
    throw new BackupError('restore_failed', `backup ${id}: extracting the files failed; nothing was changed`, describe(err), { cause: err })
  }
}

/** Removes what extraction left (a failed restore's side paths). */
export async function discardSides(sides: readonly SidePath[]): Promise<void> {
  for (const s of sides) await rm(s.side, { recursive: true, force: true }).catch(() => {})
}

/**
 * Swaps each side path in: the live path (when there is one) to `old`, the side path to the live path. On a failure
 * the paths already swapped are swapped back and the side paths removed: the files are then as they were.
 * Answers `old` per path, null where there was no live path.
 */
export async function swapSides(sides: readonly SidePath[]): Promise<{ path: string; old: string | null }[]> {
  const done: { path: string; old: string | null; side: string }[] = []
  try {
    for (const s of sides) {
      const live = await lstat(s.path).catch(() => null)
      if (live !== null) await rename(s.path, s.old)
      try {
        await rename(s.side, s.path)
      } catch (err) {
        if (live !== null) await rename(s.old, s.path)
        throw err
      }
      done.push({ path: s.path, old: live === null ? null : s.old, side: s.side })
      await fsyncDir(dirname(s.path))
    }
  } catch (err) {
    for (const d of done.reverse()) {
      await rename(d.path, d.side).catch(() => {})
      if (d.old !== null) await rename(d.old, d.path).catch(() => {})
    }
    await discardSides(sides)
    throw err
  }
  return done.map(({ path, old }) => ({ path, old }))
}
