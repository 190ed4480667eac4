// Fault: nginx's config test fails at the switch (an operator left a broken directive in the config the agent does
// not own). The deploy must end ROLLED_BACK with proxy_test_failed, the upstream file byte for byte as it was, the
// candidate gone, and the old release serving throughout: a request loop through nginx sees no failure.
import { readFile, writeFile } from 'node:fs/promises'
import t from 'tap'
import { startAgentRig } from '../helpers/agent-rig.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { requestLoop } from '../helpers/load.js'
import { SAMPLE_TAGS } from '../helpers/sample-app.js'

t.test(
  'Engine fault: nginx -t failing at the switch leaves routing and the upstream file as they were',
  { skip: skipUnless(await dockerAvailable(), 'docker') },
  async (t) => {
    await ensureBaseImage()
    const rig = await startAgentRig(t)
    const first = await rig.waitFinished(await rig.startDeploy(SAMPLE_TAGS.good))
    t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))

    const config = await readFile(rig.nginx.configPath, 'utf8')
    // The running master keeps the config it loaded; only a test (or reload) reads the broken one.
    await writeFile(rig.nginx.configPath, `${config}include ${rig.dir}/missing-site.conf;\n`)
    t.teardown(() => writeFile(rig.nginx.configPath, config))
    const upstreamBefore = await readFile(rig.upstreamFile)

    const loop = requestLoop(`http://127.0.0.1:${rig.nginx.port}/version`)
    const id = await rig.startDeploy(SAMPLE_TAGS.good2)
    const done = await rig.waitFinished(id)
    const load = await loop.stop()

    t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
    t.equal(done.error?.code, 'proxy_test_failed', done.error?.message ?? 'no error')
    t.match(done.error?.message, /missing-site\.conf/, "the message carries nginx's own complaint")
    t.same(done.states.map((s) => s.state).slice(-3), ['SWITCHING', 'ROLLING_BACK', 'ROLLED_BACK'])
    t.same(await readFile(rig.upstreamFile), upstreamBefore, 'the upstream file is byte for byte unchanged')
    t.equal(await rig.served(), SAMPLE_TAGS.good, 'the old release still serves')
    t.same(load.failures, [], `no request failed (${load.ok} ok, ${load.retried} retried)`)
    t.ok(load.ok > 0, 'the loop ran during the deploy')
    const list = await rig.containers()
    t.same(
      list.filter((l) => l.endsWith(` ${id}`)),
      [],
      `the candidate is removed: ${list.join('; ')}`,
    )
    t.equal(list.filter((l) => l.startsWith('running')).length, 1, 'one container runs, the old release')
    t.equal(await rig.statusLive(), SAMPLE_TAGS.good, 'status still reports the old release live')

    // Nothing is wedged: once the config is repaired, the same release deploys.
    await writeFile(rig.nginx.configPath, config)
    const again = await rig.waitFinished(await rig.startDeploy(SAMPLE_TAGS.good2))
    t.equal(again.state, 'SUCCEEDED', JSON.stringify(again.error))
    t.equal(await rig.served(), SAMPLE_TAGS.good2)
  },
)
