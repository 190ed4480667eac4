// The prepare phase of an image app, decided without Docker: the tag pulled (the engine is a map of tag → digest),
// the digest checked against the pin and the tag ledger, and the pulled image kept under the release's tag.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget } from '../../agent/config/targets.js'
import { prepareRelease } from '../../agent/deploy/prepare.js'
import { DeployRun } from '../../agent/deploy/run.js'
import { TagLedger } from '../../agent/git/tag-ledger.js'
import { createLogger } from '../../agent/observability/logger.js'
import { DeployStore } from '../../agent/store/deploys.js'
import { FakeRuntime } from '../helpers/fake-runtime.js'
import { tempDir } from '../helpers/tmp.js'

const IMAGE = 'registry.example.com/lifeos/api'
const digest = (c: string) => `sha256:${c.repeat(64)}`

async function rig(t: Test) {
  const dir = await tempDir(t)
  await writeFile(join(dir, 'registry.password'), 's3cret-registry-pw\n')
  const config = parseConfig(
    `
audience: a
apps:
  api:
    image: ${IMAGE}
    registryAuth: { username: ci, passwordFile: registry.password }
    envs:
      production: { ref: "tag:v*", ports: [18011, 18012] }
`,
    {},
    'a',
    dir,
  )
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const runtime = new FakeRuntime([])
  const tags = await TagLedger.open(join(dir, 'tags.json'))
  const learnt: string[] = []
  const auths: unknown[] = []
  const pull = runtime.pullImage.bind(runtime)
  runtime.pullImage = (spec) => {
    auths.push(spec.auth)
    return pull(spec)
  }
  const target = findTarget(config, 'api', 'production')
  const logger = createLogger({ level: 'silent' })
  const deps = {
    runtime,
    tags,
    repo: () => {
      throw new Error('an image app has no repo')
    },
    learnSecrets: (values: string[]) => learnt.push(...values),
  }
  const prepare = async (ref: string, pin?: string) => {
    const deploy = await store.create({ app: 'api', env: 'production', ref, commit: pin ?? null })
    const run = new DeployRun({ store, logger }, deploy, logger)
    return { result: prepareRelease(deps, run, target), run, log: () => store.readLog(deploy.id) }
  }
  return { runtime, prepare, learnt, auths }
}

t.test('Prepare: an image app pulls its tag and keeps the image under the release, labelled with the digest', async (t) => {
  const r = await rig(t)
  r.runtime.registry.set(`${IMAGE}:v1.0.0`, digest('a'))
  const { result, run, log } = await r.prepare('v1.0.0')
  const prepared = await result
  t.same(r.runtime.pulls, [`${IMAGE}:v1.0.0`])
  t.equal(prepared.release, 'v1.0.0')
  t.equal(prepared.commit, digest('a'), 'the digest stands where a commit would')
  t.equal(r.runtime.images.get('v1.0.0')?.commit, digest('a'), 'the kept image carries the digest')
  t.equal(run.deploy.commit, digest('a'), 'the deploy record has the digest')
  t.match(await log(), `"event":"resolved","ref":"v1.0.0","digest":"${digest('a')}","image":"${IMAGE}@${digest('a')}"`)
  t.match(await log(), '"event":"build","pulled":true')
  t.same(r.auths, [{ username: 'ci', password: 's3cret-registry-pw', serveraddress: 'registry.example.com' }], 'read at pull time')
  t.same(r.learnt, ['s3cret-registry-pw'], 'and scrubbed from then on')
  t.notMatch(await log(), 's3cret-registry-pw')
})

t.test('Prepare: a pinned digest must be the one the tag resolves to (digest_mismatch)', async (t) => {
  const r = await rig(t)
  r.runtime.registry.set(`${IMAGE}:v1.0.0`, digest('a'))
  await t.resolves((await r.prepare('v1.0.0', digest('a'))).result, 'the pinned digest')
  const other = await r.prepare('v1.0.0', digest('b'))
  await t.rejects(other.result, { code: 'digest_mismatch', message: new RegExp(`is ${digest('a')}, not the pinned ${digest('b')}`) })
  t.equal(r.runtime.images.size, 1, 'nothing kept for the refused deploy')
})

t.test('Prepare: a tag whose digest changed since this app deployed it is refused (tag_moved)', async (t) => {
  const r = await rig(t)
  r.runtime.registry.set(`${IMAGE}:v1.0.0`, digest('a'))
  await (
    await r.prepare('v1.0.0')
  ).result
  r.runtime.registry.set(`${IMAGE}:v1.0.0`, digest('c')) // pushed again under the same tag
  await t.rejects((await r.prepare('v1.0.0')).result, { code: 'tag_moved', message: new RegExp(`${digest('a')}.*now to ${digest('c')}`) })
  t.equal(r.runtime.images.get('v1.0.0')?.commit, digest('a'), 'the kept image is still the first one')
  r.runtime.registry.set(`${IMAGE}:v1.0.0`, digest('a'))
  const again = await (await r.prepare('v1.0.0')).result
  t.equal(again.commit, digest('a'), 'the same digest again is fine (and reuses the kept image)')
})

t.test('Prepare: an image app refuses a ref that is no image tag', async (t) => {
  const r = await rig(t)
  await t.rejects((await r.prepare('release/1.0')).result, { code: 'invalid_tag' })
  t.same(r.runtime.pulls, [], 'nothing pulled')
})
