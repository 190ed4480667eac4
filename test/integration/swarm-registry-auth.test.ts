// A swarm env's push to a registry that wants a login, against a real one (Debian's docker-registry on a loopback
// port, htpasswd auth with a bcrypt hash): the swarm facade pushes as the configured user and gets the digest the
// registry stored; without credentials, or with a wrong password, the push is registry_unauthorized and says which
// case it was, and the password never appears in the error or in the push's lines. No swarm is needed to push.
import { randomBytes } from 'node:crypto'
import Docker from 'dockerode'
import t from 'tap'
import { readRegistryAuth } from '../../agent/deploy/prepare.js'
import { DockerEngine } from '../../agent/docker/engine.js'
import { BASE_IMAGE, dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { registryAvailable, startRegistry } from '../helpers/registry.js'
import { tempDir } from '../helpers/tmp.js'

const skip = skipUnless((await dockerAvailable()) && (await registryAvailable()), 'Docker and docker-registry')

t.test('SwarmEngine: a push to a registry with htpasswd auth goes as the configured user', { skip }, async (t) => {
  await ensureBaseImage()
  const registry = await startRegistry(t, await tempDir(t))
  const engine = new DockerEngine(new Docker())
  const swarm = engine.swarm()
  const repo = `${registry.host}/swarm-auth-${randomBytes(3).toString('hex')}`
  t.teardown(async () => {
    for (const tag of ['production-v1', 'production-v2', 'production-v3']) await engine.removeImage(`${repo}:${tag}`).catch(() => undefined)
  })
  const learnt: string[] = []
  const auth = await readRegistryAuth({ username: registry.username, passwordFile: registry.passwordFile }, registry.host, (v) =>
    learnt.push(...v),
  )
  t.same(learnt, [registry.password], 'the password read from its file is learnt as a secret')
  const lines: string[] = []

  const digest = await swarm.push(BASE_IMAGE, repo, 'production-v1', (l) => lines.push(l), auth)
  const basic = Buffer.from(`${registry.username}:${registry.password}`).toString('base64')
  const manifest = await fetch(`http://${registry.host}/v2/${repo.slice(registry.host.length + 1)}/manifests/production-v1`, {
    method: 'HEAD',
    headers: { authorization: `Basic ${basic}`, accept: 'application/vnd.docker.distribution.manifest.v2+json' },
  })
  t.equal(manifest.status, 200, 'the registry has the tag')
  t.equal(manifest.headers.get('docker-content-digest'), digest, 'under the digest the push reported')

  const anonymous = (await swarm.push(BASE_IMAGE, repo, 'production-v2', () => undefined).catch((e: unknown) => e)) as Error & {
    code: string
  }
  t.equal(anonymous.code, 'registry_unauthorized', anonymous.message)
  t.match(anonymous.message, /\(no swarm\.registryAuth is set\)$/)

  const wrong = { ...auth, password: `wrong-${registry.password}` }
  const refused = (await swarm.push(BASE_IMAGE, repo, 'production-v3', (l) => lines.push(l), wrong).catch((e: unknown) => e)) as Error & {
    code: string
  }
  t.equal(refused.code, 'registry_unauthorized', refused.message)
  t.match(refused.message, `(as user ${registry.username}: check swarm.registryAuth)`)
  t.notMatch(refused.message, wrong.password, 'the password is not in the error')
  t.notOk(
    lines.some((l) => l.includes(registry.password)),
    'nor in the lines',
  )
})
