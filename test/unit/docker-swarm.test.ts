// The SwarmEngine facade's registry credentials against a fake dockerode: the push and the service create carry
// them as X-Registry-Auth (dockerode's `authconfig`), and a refused push names the user, never the password.
import { Readable } from 'node:stream'
import type Docker from 'dockerode'
import t from 'tap'
import type { RegistryAuth } from '../../agent/docker/pull.js'
import { SwarmEngine, type ServiceDefinition } from '../../agent/docker/swarm.js'

const DIGEST = `sha256:${'b'.repeat(64)}`
const PASSWORD = 'pw-s3cret-0123'
const AUTH: RegistryAuth = { username: 'ci', password: PASSWORD, serveraddress: 'registry.example.com:5000' }

/** A dockerode whose push answers `events` and whose service create answers an id; it records what it was given. */
function engine(events: object[]) {
  const seen: { push: unknown[]; create: unknown[][] } = { push: [], create: [] }
  const docker = {
    getImage: () => ({
      tag: async () => undefined,
      push: async (opts: unknown) => {
        seen.push.push(opts)
        return Readable.from([Buffer.from(events.map((e) => `${JSON.stringify(e)}\n`).join(''))])
      },
    }),
    createService: async (...args: unknown[]) => {
      seen.create.push(args)
      return { id: 'svc1' }
    },
  }
  return { swarm: new SwarmEngine(async () => docker as unknown as Docker), seen }
}

const pushed = [{ status: 'Pushed' }, { aux: { Tag: 'production-v1', Digest: DIGEST, Size: 1 } }]
const definition: ServiceDefinition = {
  name: 'shop_production_web_blue',
  labels: {},
  image: `registry.example.com:5000/shop@${DIGEST}`,
  hostNetwork: 'host-net',
  env: [],
  replicas: 1,
  constraints: [],
  stopGraceSec: 10,
  updateOrder: 'start-first',
}

t.test('SwarmEngine: the push and the service create carry the registry credentials', async (t) => {
  const { swarm, seen } = engine(pushed)
  const repo = 'registry.example.com:5000/shop'
  t.equal(await swarm.push('shop:production-v1', repo, 'production-v1', () => undefined, AUTH), DIGEST)
  t.same(seen.push, [{ authconfig: AUTH }], 'X-Registry-Auth with user, password and registry')
  await swarm.createService(definition, AUTH)
  t.same(seen.create[0]?.[0], AUTH, 'the create sends them too, for the nodes to pull')
  t.match(seen.create[0]?.[1], { Name: 'shop_production_web_blue' })
})

t.test('SwarmEngine: without credentials the push sends an empty auth for the registry, the create none', async (t) => {
  const { swarm, seen } = engine(pushed)
  await swarm.push('shop:production-v1', 'registry.example.com:5000/shop', 'production-v1', () => undefined)
  t.same(seen.push, [{ authconfig: { serveraddress: 'registry.example.com:5000' } }])
  await swarm.createService(definition)
  t.equal(seen.create[0]?.length, 1, 'the spec alone')
})

t.test('SwarmEngine: a push the registry refuses is registry_unauthorized, names the user, never the password', async (t) => {
  const message = `unauthorized: authentication required (tried ${PASSWORD})`
  const { swarm } = engine([{ status: 'Preparing' }, { errorDetail: { message }, error: message }])
  const err = (await swarm
    .push('shop:production-v1', 'registry.example.com:5000/shop', 'production-v1', () => undefined, AUTH)
    .catch((e: unknown) => e)) as Error & { code: string }
  t.equal(err.code, 'registry_unauthorized')
  t.match(
    err.message,
    /^push of registry\.example\.com:5000\/shop:production-v1 failed: unauthorized: .*\(as user ci: check swarm\.registryAuth\)$/,
  )
  t.notMatch(err.message, PASSWORD)
  const anonymous = engine([{ errorDetail: { message: 'unauthorized: authentication required' } }])
  const refused = (await anonymous.swarm
    .push('shop:production-v1', 'registry.example.com:5000/shop', 'production-v1', () => undefined)
    .catch((e: unknown) => e)) as Error & { code: string }
  t.match(refused, { code: 'registry_unauthorized', message: /\(no swarm\.registryAuth is set\)$/ })
})
