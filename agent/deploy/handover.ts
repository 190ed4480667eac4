// Which group of a worker-only env is live. An env behind nginx has its upstream file for that; an env of workers
// only has nothing to route, so the agent keeps its own record: the deploy id of the group it handed the work to,
// written (atomically) at the hand-over, the moment nginx would have been switched.
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ensureDir, writeFileAtomic } from '../files.js'

export interface HandOver {
  /** The deploy id of the live group; null before the first hand-over. */
  current(): Promise<string | null>
  handTo(deployId: string): Promise<void>
}

/** Format version of the record: a later format can be told apart. */
const VERSION = 1

export class HandOverFile implements HandOver {
  constructor(readonly path: string) {}

  async current(): Promise<string | null> {
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
    const record = JSON.parse(text) as { version?: number; deployId?: unknown }
    if (record.version !== VERSION || typeof record.deployId !== 'string')
      throw new Error(`${this.path} is not a hand-over record of version ${VERSION}`)
    return record.deployId
  }

  async handTo(deployId: string): Promise<void> {
    await ensureDir(dirname(this.path))
    await writeFileAtomic(this.path, `${JSON.stringify({ version: VERSION, deployId, at: new Date().toISOString() })}\n`)
  }
}
