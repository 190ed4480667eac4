// Issue 11's sample app of several services from a prebuilt image (test/helpers/services-rig.ts): CI pushed one
// image per tag to a real registry (Debian's docker-registry on a loopback port, htpasswd auth); the agent pulls it
// by tag with the digest pinned, and every service — api (with the migration and its async-scheme DATABASE_URL),
// frontend, start-first worker (with a mount of its own), stop-first scheduler — runs that one image by image id
// with its own command. Deployed, rolled back by itself, rolled back by hand (no registry needed), restored; request
// loops on both web services and a scheduler sampler as in services.test.ts.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { dockerAvailable } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { pgAvailable } from '../helpers/pg.js'
import { registryAvailable, startRegistry, type TestRegistry } from '../helpers/registry.js'
import { pushServicesImages, SERVICE_TAGS } from '../helpers/sample-services.js'
import {
  allRunning,
  checkCandidateWorkerExits,
  checkDeployAndRollbackUnderLoad,
  checkFirstDeploy,
  checkObserveRollsAllBack,
  checkRestore,
  inspectByService,
  servedAs,
  startServicesRig,
} from '../helpers/services-rig.js'

const app = `imgmulti-${randomBytes(3).toString('hex')}`

t.test(
  'Services from a prebuilt image in a local registry',
  {
    skip: skipUnless(
      (await dockerAvailable()) && (await pgAvailable()) && (await registryAvailable()),
      'docker, postgresql, docker-registry',
    ),
  },
  async (t) => {
    let registry!: TestRegistry
    let digests: Record<string, string> = {}
    const rig = await startServicesRig(t, app, 'image', async (dir) => {
      registry = await startRegistry(t, dir)
      digests = await pushServicesImages(registry, `${app}/shop`)
      return {
        image: `${registry.host}/${app}/shop`,
        registryAuth: { username: registry.username, passwordFile: registry.passwordFile },
      }
    })
    const { env, token } = rig

    const first = await rig.deploy(SERVICE_TAGS.good, { digest: digests[SERVICE_TAGS.good] })
    t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))
    t.equal(first.commit, digests[SERVICE_TAGS.good], 'the record holds the pinned digest')
    await checkFirstDeploy(t, rig)
    // The image each running container was created from, as Docker recorded it.
    const images = await inspectByService(app, '{{.Config.Image}}')
    t.same(Object.keys(images).sort(), ['api', 'beat', 'frontend', 'worker'])
    t.equal(new Set(Object.values(images)).size, 1, 'every service runs the same image')
    t.match(images.api, /^sha256:[0-9a-f]{64}$/, 'by image id, not by a tag')
    const backupId = await rig.backUp()

    await t.test('releases list every service on the one kept image; app logs pick one by name', async (t) => {
      const releases = JSON.parse((await rig.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/releases`, headers: token })).body)
      const kept = `${app}:${env}-${SERVICE_TAGS.good}`
      t.match(releases.releases[0], { release: SERVICE_TAGS.good, commit: digests[SERVICE_TAGS.good], live: true })
      t.same(
        releases.releases[0].services,
        ['api', 'frontend', 'worker', 'beat'].map((name) => ({ name, image: kept, running: true })),
      )
      const logs = await rig.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/logs?service=beat&tail=10`, headers: token })
      t.match(logs.body, /"line":"start \d+"/, "the scheduler's own output")
    })

    await t.test('a pinned deploy and a manual rollback under load on both web services fail no request; one scheduler at a time', (t) =>
      checkDeployAndRollbackUnderLoad(t, rig, digests),
    )

    await t.test('a candidate whose worker exits fails and leaves no member of it; the live release keeps serving', (t) =>
      checkCandidateWorkerExits(t, rig),
    )

    await t.test('one service failing while observed rolls every service back', (t) =>
      checkObserveRollsAllBack(t, rig).then(() => undefined),
    )

    await t.test('a restore brings the database and the uploads back as they were in the backup', (t) => checkRestore(t, rig, backupId))

    await t.test('a rollback by hand needs no registry: every service starts again from the kept image', async (t) => {
      await registry.stop()
      const rollback = await rig.rollBack(SERVICE_TAGS.good2)
      t.equal(rollback.state, 'SUCCEEDED', JSON.stringify(rollback.error))
      t.equal(rollback.commit, digests[SERVICE_TAGS.good2])
      t.same(await rig.served(), servedAs(SERVICE_TAGS.good2))
      t.same(await rig.running(), allRunning(SERVICE_TAGS.good2))
    })
  },
)
