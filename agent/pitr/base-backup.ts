// Base backups for PITR: `pg_basebackup -Ft -z -X stream -c fast` into `base/<id>.partial/`, then `base.json` (what
// recovery needs: WAL range, timeline, segment size, the server's clock at the end) written last and the directory
// renamed to `base/<id>/`. A directory without base.json, or still `.partial`, is not a base backup.
import { readdir, readFile, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { exitProblem, runTool, ToolError } from '../backup/proc.js'
import { formatStamp } from '../backup/names.js'
import { fsyncDir, writeFileAtomic, ensureDir } from '../files.js'
import { toolEnv, withClient, onDatabase, type Connection } from '../pg/connection.js'
import { MAINTENANCE_DB } from './pg.js'
import type { BaseBackupInfo } from './target.js'

const INFO = 'base.json'

export async function takeBaseBackup(conn: Connection, baseDir: string, pgBasebackup = 'pg_basebackup'): Promise<BaseBackupInfo> {
  const id = formatStamp(new Date())
  const partial = join(baseDir, `${id}.partial`)
  await rm(partial, { recursive: true, force: true })
  await ensureDir(partial, 0o700)
  try {
    const argv = [pgBasebackup, `--dbname=${conn.url}`, `--pgdata=${partial}`, '-Ft', '-z', '-X', 'stream', '-c', 'fast', '--no-password']
    const exit = await runTool(argv, toolEnv(conn))
    const problem = exitProblem(exit)
    if (problem !== null) throw new ToolError('pg_basebackup', `pg_basebackup ${problem}`, exit.stderr)
    const manifest = JSON.parse(await readFile(join(partial, 'backup_manifest'), 'utf8')) as {
      'WAL-Ranges'?: { Timeline: number; 'Start-LSN': string; 'End-LSN': string }[]
    }
    const range = manifest['WAL-Ranges']?.[0]
    if (!range) throw new Error('pg_basebackup wrote no WAL range in backup_manifest')
    const { rows } = await withClient(onDatabase(conn, MAINTENANCE_DB), (client) =>
      client.query<{ now: Date; seg: string }>(
        "SELECT clock_timestamp() AS now, (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size') AS seg",
      ),
    )
    const info: BaseBackupInfo = {
      id,
      startLsn: range['Start-LSN'],
      endLsn: range['End-LSN'],
      endTime: (rows[0] as { now: Date }).now.toISOString(),
      timeline: range.Timeline,
      walSegmentSize: Number((rows[0] as { seg: string }).seg),
    }
    await writeFileAtomic(join(partial, INFO), `${JSON.stringify(info, null, 2)}\n`)
    await rename(partial, join(baseDir, id))
    await fsyncDir(baseDir)
    return info
  } catch (err) {
    await rm(partial, { recursive: true, force: true })
    throw err
  }
}

/** The finished base backups, oldest first. */
export async function listBaseBackups(baseDir: string): Promise<BaseBackupInfo[]> {
  const names = await readdir(baseDir).catch(() => [] as string[])
  const found: BaseBackupInfo[] = []
  for (const name of names.filter((n) => /^\d{8}T\d{6}Z$/.test(n)).sort()) {
    const text = await readFile(join(baseDir, name, INFO), 'utf8').catch(() => null)
    if (text !== null) found.push(JSON.parse(text) as BaseBackupInfo)
  }
  return found
}

/** Removes a base backup: its base.json first (without it the directory is no base backup), then the rest. */
export async function removeBaseBackup(baseDir: string, id: string): Promise<void> {
  await rm(join(baseDir, id, INFO), { force: true })
  await rm(join(baseDir, id), { recursive: true, force: true })
}
