// `npm run bench`: runs every benchmark, prints the table and writes bench/results/latest.md.
import { benchDeploy, deployNotes } from './deploy.js'
import { writeResults, type Row } from './lib.js'
import { benchSignatures } from './signatures.js'
import { benchStartup } from './startup.js'

const rows: Row[] = [...benchSignatures(), ...(await benchStartup()), ...(await benchDeploy())]
const text = await writeResults(rows, [
  'Signature figures go through `verifySignature` (headers, clock window, key lookup, canonical string, compare); the baseline is the bare crypto call on the same canonical string.',
  'Cold start runs `node bin/deploy-agent.js serve` (TypeScript through tsx, cache warm after the first run) on a minimal config.',
  ...deployNotes,
])
console.log(text)
