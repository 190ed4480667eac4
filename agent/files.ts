// Durable file primitives (the state dir, backups, the nginx upstream file): a file is either its old content or its
// new content, never half.
import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, rename, rm } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'

/** Flushes a directory's entries (creations, renames) to disk. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** Creates `dir` and any missing parents with `mode`, and makes the new directory entries durable. */
export async function ensureDir(dir: string, mode = 0o700): Promise<void> {
  const target = resolve(dir)
  const firstCreated = await mkdir(target, { recursive: true, mode })
  if (firstCreated === undefined) return
  // Each created directory's entry lives in its parent: flush from the deepest one up to the first created.
  for (let current = target; ; current = dirname(current)) {
    await fsyncDir(dirname(current))
    if (current === resolve(firstCreated) || dirname(current) === current) break
  }
}

/**
 * Replaces `path` with `data`: write a temp file beside it (O_EXCL, so never someone else's), fsync, rename over
 * the target, fsync the directory. A crash leaves either the old file or the new one (and at worst a stray temp).
 * `syncDir: false` leaves the directory's fsync to the caller (`fsyncDir`), who has something more urgent to do
 * first: until then a crash may still leave the old file, never a partial one.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode = 0o600,
  options: { syncDir?: boolean } = {},
): Promise<void> {
  const dir = dirname(path)
  const temp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`)
  const handle = await open(temp, 'wx', mode)
  try {
    try {
      await handle.writeFile(data)
      await handle.chmod(mode) // the umask may have narrowed the mode given to open()
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, path)
  } catch (err) {
    await rm(temp, { force: true })
    throw err
  }
  if (options.syncDir !== false) await fsyncDir(dir)
}

/** The names in `dir`; a directory that does not exist yet is empty. */
export async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
}
