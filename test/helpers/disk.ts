// A small filesystem that fills up: a tmpfs mounted for one test (root only), and a filler that takes its space.
import { execFile } from 'node:child_process'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Whether this process may mount a tmpfs (root, outside a locked-down container): the disk-full tests need it. */
export async function canMountTmpfs(): Promise<boolean> {
  const probe = await mkdtemp(join(tmpdir(), 'deploy-agent-probe-'))
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe])
    await run('umount', [probe])
    return true
  } catch {
    return false
  } finally {
    await rm(probe, { recursive: true, force: true })
  }
}

/** Mounts a tmpfs of `size` (e.g. `16m`) on the existing directory `dir`, unmounted (lazily) in `t`'s teardown. */
export async function mountTmpfs(t: { teardown: (fn: () => unknown) => void }, dir: string, size: string): Promise<void> {
  await run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir])
  t.teardown(() => run('umount', ['--lazy', dir]))
}

/**
 * Writes `<dir>/filler` until the filesystem is full, then gives back `leaveBytes` of it. Returns the filler's
 * path: removing it frees the space again.
 */
export async function fillDisk(dir: string, leaveBytes = 0): Promise<string> {
  const path = join(dir, 'filler')
  const handle = await open(path, 'a')
  const chunk = Buffer.alloc(64 * 1024, 0x5a)
  let size = 0
  try {
    for (;;) {
      const { bytesWritten } = await handle.write(chunk)
      size += bytesWritten
      if (bytesWritten < chunk.length) break
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  }
  // Small writes may still fit in the last partly used page: fill those too.
  for (const small of [4096, 512, 1]) {
    try {
      for (;;) size += (await handle.write(Buffer.alloc(small, 0x5a))).bytesWritten
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
    }
  }
  if (leaveBytes > 0) await handle.truncate(Math.max(0, size - leaveBytes))
  await handle.close()
  return path
}
