// `npm run docs:config`: rewrites the config reference table in docs/configuration.md from the zod schema. New keys get
// "TODO: describe" in the Meaning column (test/unit/config-reference.test.ts fails until they are described).
import { readFile, writeFile } from 'node:fs/promises'
import { regenerate, UNDESCRIBED } from '../agent/config/reference.js'

const readmePath = new URL('../docs/configuration.md', import.meta.url)
const before = await readFile(readmePath, 'utf8')
const after = regenerate(before)
if (after === before) {
  console.log('docs/configuration.md: the config reference is up to date')
} else {
  await writeFile(readmePath, after)
  console.log('docs/configuration.md: config reference rewritten')
}
const todo = after.split('\n').filter((line) => line.includes(UNDESCRIBED)).length
if (todo > 0) {
  console.error(`${todo} key(s) still need a meaning: search docs/configuration.md for "${UNDESCRIBED}"`)
  process.exitCode = 1
}
