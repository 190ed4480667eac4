// The replication slots this agent created, recorded in `stateDir/pitr-slots.json` just before each is created: a
// slot left behind when an env's PITR is removed keeps the server's WAL forever and fills its disk, so start-up
// drops the recorded slots no env uses any more — and never a slot it did not create (one that already existed is
// used, not recorded).
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { ensureDir, writeFileAtomic } from '../files.js'

export interface SlotRecord {
  slot: string
  app: string
  env: string
  /** `host:port` of the database server the slot is on (from the env's database url). */
  server: string
  createdAt: string
}

interface SlotFile {
  version: 1
  slots: SlotRecord[]
}

/** An env as the plan sees it: its database server (null without a database) and its slot (null without PITR). */
export interface SlotEnv {
  app: string
  env: string
  server: string | null
  slot: string | null
}

/** A forgotten slot, and the env whose database reaches its server to drop it (null: none does; it is reported). */
export interface SlotDrop {
  record: SlotRecord
  via: { app: string; env: string } | null
}

/** The server part of a postgres URL: `host:port` (port 5432 when not given). */
export function serverOf(url: string): string {
  const u = new URL(url)
  return `${u.hostname}:${u.port || '5432'}`
}

/**
 * The recorded slots that no env with PITR uses (same name on the same server), each with the env to drop it through:
 * its own env when that still has a database on that server, else the first env that has one.
 */
export function planSlotDrops(records: readonly SlotRecord[], envs: readonly SlotEnv[]): SlotDrop[] {
  return records
    .filter((r) => !envs.some((e) => e.slot === r.slot && e.server === r.server))
    .map((record) => {
      const onServer = envs.filter((e) => e.server === record.server)
      const via = onServer.find((e) => e.app === record.app && e.env === record.env) ?? onServer[0]
      return { record, via: via ? { app: via.app, env: via.env } : null }
    })
}

export class SlotLedger {
  private readonly path: string

  constructor(stateDir: string) {
    this.path = join(stateDir, 'pitr-slots.json')
  }

  /** The recorded slots; a missing file is none. */
  async list(): Promise<SlotRecord[]> {
    const text = await readFile(this.path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null
      throw err
    })
    return text === null ? [] : (JSON.parse(text) as SlotFile).slots
  }

  async add(record: SlotRecord): Promise<void> {
    const slots = (await this.list()).filter((r) => !(r.slot === record.slot && r.server === record.server))
    await this.write([...slots, record])
  }

  async remove(record: Pick<SlotRecord, 'slot' | 'server'>): Promise<void> {
    await this.write((await this.list()).filter((r) => !(r.slot === record.slot && r.server === record.server)))
  }

  private async write(slots: SlotRecord[]): Promise<void> {
    const file: SlotFile = { version: 1, slots }
    await ensureDir(dirname(this.path))
    await writeFileAtomic(this.path, `${JSON.stringify(file, null, 2)}\n`)
  }
}
