// Child process of bench/backup.ts: one takeBackup in a process of its own, so that its RSS can be watched from
// /proc. Started as `node --import tsx bench/backup-child.ts <dir>` with the database URL in BENCH_BACKUP_URL.
// Protocol on stdin/stdout: everything is imported, then it prints "ready" and waits for a line on stdin; it resets
// its peak-RSS mark (/proc/self/clear_refs), takes the backup and prints one JSON line { file, bytes, hwmKb }.
import { readFile, writeFile } from 'node:fs/promises'
import { BackupLocks } from '../agent/backup/lock.js'
import { takeBackup } from '../agent/backup/take.js'

const dir = process.argv[2]
const url = process.env.BENCH_BACKUP_URL
if (dir === undefined || url === undefined) throw new Error('usage: BENCH_BACKUP_URL=postgres://… backup-child.ts <dir>')

process.stdout.write('ready\n')
await new Promise<void>((resolve) => {
  process.stdin.once('data', () => {
    process.stdin.pause()
    process.stdin.destroy()
    resolve()
  })
})

// "5" resets VmHWM to the current RSS, so VmHWM afterwards is the peak of the backup alone.
const hwmReset = await writeFile('/proc/self/clear_refs', '5').then(
  () => true,
  () => false,
)
const manifest = await takeBackup({ dir, app: 'bench', env: 'rss', kind: 'manual', database: { url }, locks: new BackupLocks() })
const status = await readFile('/proc/self/status', 'utf8')
const hwmKb = hwmReset ? Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]) : null
process.stdout.write(`${JSON.stringify({ file: manifest.file, bytes: manifest.bytes, hwmKb })}\n`)
