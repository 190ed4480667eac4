import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { TagLedger } from '../../agent/git/tag-ledger.js'

const A = 'a'.repeat(40)
const B = 'b'.repeat(40)
const at = (iso: string) => () => new Date(iso)
const readJson = async (path: string) => JSON.parse(await readFile(path, 'utf8'))

t.test('TagLedger: a missing file is an empty ledger, created on the first record', async (t) => {
  const path = join(t.testdir(), 'state', 'tags.json')
  const ledger = await TagLedger.open(path, { now: at('2026-05-01T00:00:00.000Z') })
  t.equal(ledger.get('web', 'v1'), undefined)
  ledger.check('web', 'v1', A)
  await ledger.record('web', 'v1', A)
  t.same(await readJson(path), { v: 1, apps: { web: { v1: { commit: A, firstSeen: '2026-05-01T00:00:00.000Z' } } } })
})

t.test('TagLedger: a known tag with another commit is tag_moved, naming both commits', async (t) => {
  const path = join(t.testdir(), 'tags.json')
  const ledger = await TagLedger.open(path)
  await ledger.record('web', 'v1', A)
  ledger.check('web', 'v1', A)
  ledger.check('api', 'v1', B) // another app's tag of the same name is another tag
  const err = t.throws(() => ledger.check('web', 'v1', B), { code: 'tag_moved', statusCode: 409 })
  t.match(String(err), A)
  t.match(String(err), B)
  await t.rejects(ledger.record('web', 'v1', B), { code: 'tag_moved' })
  t.equal(ledger.get('web', 'v1')?.commit, A, 'the ledger keeps the first commit')
  t.equal((await readJson(path)).apps.web.v1.commit, A)
})

t.test('TagLedger: recording the same commit again keeps firstSeen', async (t) => {
  const path = join(t.testdir(), 'tags.json')
  const ledger = await TagLedger.open(path, { now: at('2026-05-01T00:00:00.000Z') })
  await ledger.record('web', 'v1', A)
  const again = await TagLedger.open(path, { now: at('2027-01-01T00:00:00.000Z') })
  await again.record('web', 'v1', A)
  t.equal(again.get('web', 'v1')?.firstSeen, '2026-05-01T00:00:00.000Z')
})

t.test('TagLedger: concurrent records all reach the file', async (t) => {
  const path = join(t.testdir(), 'tags.json')
  const ledger = await TagLedger.open(path)
  await Promise.all(Array.from({ length: 20 }, (_, i) => ledger.record(i % 2 === 0 ? 'web' : 'api', `v${i}`, A)))
  const doc = await readJson(path)
  t.equal(Object.keys(doc.apps.web).length + Object.keys(doc.apps.api).length, 20)
  const reopened = await TagLedger.open(path)
  t.equal(reopened.get('api', 'v19')?.commit, A)
})

t.test('TagLedger: record refuses invalid tags and commits', async (t) => {
  const ledger = await TagLedger.open(join(t.testdir(), 'tags.json'))
  await t.rejects(ledger.record('web', '-x', A), { code: 'invalid_ref' })
  await t.rejects(ledger.record('web', 'v1', 'HEAD'), { code: 'invalid_commit' })
})

t.test('TagLedger: a corrupt file is a clear error at open', async (t) => {
  const dir = t.testdir()
  const cases: Array<[string, string, RegExp]> = [
    ['not json', '{"v":1,', /not JSON/],
    ['array', '[]', /not a JSON object/],
    ['version', JSON.stringify({ v: 2, apps: {} }), /format version 2/],
    ['apps', JSON.stringify({ v: 1, apps: [] }), /"apps" is not an object/],
    ['entry', JSON.stringify({ v: 1, apps: { web: { v1: { commit: 'HEAD', firstSeen: 'x' } } } }), /apps\.web\.v1/],
  ]
  for (const [name, text, message] of cases) {
    const path = join(dir, `${name}.json`)
    await writeFile(path, text)
    const err = await t.rejects(TagLedger.open(path), { code: 'tag_ledger_corrupt', statusCode: 500, message }, name)
    t.match(String(err), path, `${name}: names the file`)
  }
})

t.test('TagLedger: names from the file stay data ("__proto__" round-trips)', async (t) => {
  const path = join(t.testdir(), 'tags.json')
  await writeFile(path, '{"v":1,"apps":{"__proto__":{"v1":{"commit":"' + A + '","firstSeen":"2026-01-01T00:00:00.000Z"}}}}')
  const ledger = await TagLedger.open(path)
  t.equal(ledger.get('__proto__', 'v1')?.commit, A)
  await ledger.record('web', 'v2', B)
  const doc = await readJson(path)
  t.equal(Object.getPrototypeOf(doc.apps), Object.prototype)
  t.same(Object.keys(doc.apps).sort(), ['__proto__', 'web'])
})
