// `npm run bench`: runs every benchmark, prints the table and writes bench/results/latest.md.
// BENCH_SKIP_BACKUP=1 leaves out the backup benchmark (bench/backup.ts, ~1 min; needs PostgreSQL on 127.0.0.1:5432).
import { backupNotes, benchBackup } from './backup.js'
import { benchDeploy, deployNotes } from './deploy.js'
import { writeResults, type Row } from './lib.js'
import { benchSignatures } from './signatures.js'
import { benchStartup } from './startup.js'

const rows: Row[] = [
  ...benchSignatures(),
  ...(await benchStartup()),
  ...(await benchDeploy()),
  ...(process.env.BENCH_SKIP_BACKUP === '1' ? [] : await benchBackup()),
]
const text = await writeResults(rows, [
  'Signature figures go through `verifySignature` (headers, clock window, key lookup, canonical string, compare); the baseline is the bare crypto call on the same canonical string.',
  'Cold start runs `node bin/deploy-agent.js serve` (TypeScript through tsx, cache warm after the first run) on a minimal config.',
  ...deployNotes,
  ...backupNotes,
])
console.log(text)
