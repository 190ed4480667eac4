// One backup per app+env at a time, across everything that takes backups (HTTP, cron, CLI) and across processes:
// an in-process set plus a lock file `<dir>/.lock-<app>_<env>` holding the owner's pid. A second backup is refused
// with backup_busy rather than queued, unless the caller asked to wait: a deploy's or a restore's own backup waits
// behind the nightly run rather than failing the deploy; an operator or a cron tick is told at once.
import { randomBytes } from 'node:crypto'
import { link, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { BackupError } from './errors.js'

export type Release = () => Promise<void>

const BUSY_POLL_MS = 500

export function lockFileName(app: string, env: string): string {
  return `.lock-${app}_${env}`
}

/** Whether process `pid` exists (EPERM: it does, as another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

async function lockOwner(path: string): Promise<number | null | 'gone'> {
  try {
    const pid = Number.parseInt(await readFile(path, 'utf8'), 10)
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'gone'
    throw err
  }
}

/**
 * The backup locks of one agent process. Create one per process and share it: it is what tells this process's own
 * live locks from a stale file left by an earlier process that had the same pid (pid 1 in a container, every time).
 */
export class BackupLocks {
  private readonly held = new Set<string>()

  /**
   * Takes the lock of app+env in `dir`, waiting up to `waitMs` while another backup holds it, or throws BackupError
   * backup_busy. A lock file whose pid is dead is taken over.
   */
  async acquire(dir: string, app: string, env: string, opts: { waitMs?: number; onWait?: () => void } = {}): Promise<Release> {
    const deadline = Date.now() + (opts.waitMs ?? 0)
    for (let waited = false; ; waited = true) {
      try {
        return await this.acquireNow(dir, app, env)
      } catch (err) {
        if (!(err instanceof BackupError && err.code === 'backup_busy') || Date.now() >= deadline) throw err
        if (!waited) opts.onWait?.()
        await new Promise((resolve) => setTimeout(resolve, Math.min(BUSY_POLL_MS, deadline - Date.now())))
      }
    }
  }

  private async acquireNow(dir: string, app: string, env: string): Promise<Release> {
    const path = join(dir, lockFileName(app, env))
    if (this.held.has(path)) throw busy(app, env, 'in this process')
    this.held.add(path)
    try {
      await this.createLockFile(path, app, env)
    } catch (err) {
      this.held.delete(path)
      throw err
    }
    let released = false
    return async () => {
      if (released) return
      released = true
      try {
        if ((await lockOwner(path)) === process.pid) await rm(path, { force: true })
      } finally {
        this.held.delete(path)
      }
    }
  }

  /** Whether app+env's lock is held, by this process or by another live one. */
  async isLocked(dir: string, app: string, env: string): Promise<boolean> {
    const path = join(dir, lockFileName(app, env))
    if (this.held.has(path)) return true
    const owner = await lockOwner(path)
    return typeof owner === 'number' && owner !== process.pid && processAlive(owner)
  }

  private async createLockFile(path: string, app: string, env: string): Promise<void> {
    // The pid is written to a temp file first and hard-linked into place: the lock appears complete or not at all,
    // so a reader never mistakes a lock being created for an empty, stale one.
    const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`
    await writeFile(temp, `${process.pid}\n`, { flag: 'wx', mode: 0o600 })
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          await link(temp, path)
          return
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        }
        const owner = await lockOwner(path)
        if (owner === 'gone') continue
        // Our own pid is stale here: this process does not hold the lock (checked above), an earlier one with the
        // same pid did. An unreadable lock is only stale once it is old enough not to be someone's half-made one.
        if (owner === null && Date.now() - (await stat(path)).mtimeMs < 10_000) throw busy(app, env, 'by a lock file being written')
        if (typeof owner === 'number' && owner !== process.pid && processAlive(owner)) throw busy(app, env, `by pid ${owner}`)
        await rm(path, { force: true })
      }
      throw busy(app, env, 'by a lock file that keeps coming back')
    } finally {
      await rm(temp, { force: true })
    }
  }
}

function busy(app: string, env: string, by: string): BackupError {
  return new BackupError('backup_busy', `a backup of ${app}/${env} is already running (held ${by})`)
}
