// `npm run bench`: runs every benchmark, prints the table and writes bench/results/latest.md.
// BENCH_SKIP_BACKUP=1 leaves out the backup benchmark (bench/backup.ts, ~1 min; needs PostgreSQL on 127.0.0.1:5432).
// BENCH_SKIP_PITR=1 leaves out the point-in-time recovery benchmark (bench/pitr.ts, ~10 min at its default 1 GB; skipped
// by itself without the PostgreSQL server binaries).
// BENCH_SKIP_SWARM=1 leaves out the swarm benchmark (bench/swarm.ts, ~3 min; skipped by itself without the swarm rig).
// Each script also runs alone (`node --import tsx bench/<name>.ts`) where it says so.
import { backupNotes, benchBackup } from './backup.js'
import { badReleaseNotes, benchBadRelease } from './bad-release.js'
import { benchDeploy, deployNotes } from './deploy.js'
import { benchPitr, pitrNotes } from './pitr.js'
import { writeResults, type Row } from './lib.js'
import { benchSignatures, signatureNotes } from './signatures.js'
import { benchStartup, startupNotes } from './startup.js'
import { benchStatus, statusNotes } from './status.js'
import { benchSwarm, swarmNotes } from './swarm.js'

const rows: Row[] = [
  ...benchSignatures(),
  ...(await benchStartup()),
  ...(await benchStatus()),
  ...(await benchDeploy()),
  ...(await benchBadRelease()),
  ...(process.env.BENCH_SKIP_BACKUP === '1' ? [] : await benchBackup()),
  ...(process.env.BENCH_SKIP_PITR === '1' ? [] : await benchPitr()),
  ...(process.env.BENCH_SKIP_SWARM === '1' ? [] : await benchSwarm()),
]
const text = await writeResults(rows, [
  ...signatureNotes,
  ...startupNotes,
  ...statusNotes,
  ...deployNotes,
  ...badReleaseNotes,
  ...backupNotes,
  ...pitrNotes,
  ...swarmNotes,
])
console.log(text)
