// pullImage read from the engine's JSON-lines stream, without Docker: the digest line, an error event classified for
// the operator, a pull that never ends cut at its timeout, and no password in any message or line.
import { PassThrough } from 'node:stream'
import type Docker from 'dockerode'
import t from 'tap'
import { pullImage, registryOf } from '../../agent/docker/pull.js'

const DIGEST = `sha256:${'1f'.repeat(32)}`
const PASSWORD = 'hunter2-registry'

/** A Docker whose createImage answers `events` (then ends, unless `endless`) and whose image inspect answers. */
function engine(events: object[], options: { endless?: boolean; rejectWith?: Error } = {}) {
  const asked: unknown[] = []
  const docker = {
    createImage: async (opts: unknown) => {
      asked.push(opts)
      if (options.rejectWith) throw options.rejectWith
      const stream = new PassThrough()
      for (const e of events) stream.write(`${JSON.stringify(e)}\r\n`)
      if (!options.endless) stream.end()
      return stream
    },
    getImage: () => ({ inspect: async () => ({ Id: 'sha256:local', RepoDigests: [] }) }),
  }
  return { docker: docker as unknown as Docker, asked }
}

const auth = { username: 'ci', password: PASSWORD, serveraddress: '127.0.0.1:5000' }
const pull = (docker: Docker, lines: string[] = [], timeoutMs = 5000) =>
  pullImage(docker, { image: '127.0.0.1:5000/team/api', tag: 'v1', auth, timeoutMs, onLine: (l) => lines.push(l) })

t.test('pullImage: answers the digest the stream reports, and leaves progress bars out of the log', async (t) => {
  const { docker, asked } = engine([
    { status: 'Pulling from team/api', id: 'v1' },
    { status: 'Downloading', id: 'abc', progressDetail: { current: 10, total: 100 } },
    { status: 'Pull complete', id: 'abc' },
    { status: `Digest: ${DIGEST}` },
    { status: 'Status: Downloaded newer image for 127.0.0.1:5000/team/api:v1' },
  ])
  const lines: string[] = []
  t.same(await pull(docker, lines), { digest: DIGEST, imageId: 'sha256:local' })
  t.same(lines, [
    'v1: Pulling from team/api',
    'abc: Pull complete',
    `Digest: ${DIGEST}`,
    'Status: Downloaded newer image for 127.0.0.1:5000/team/api:v1',
  ])
  t.match(asked[0], { fromImage: '127.0.0.1:5000/team/api', tag: 'v1', authconfig: auth })
})

t.test('pullImage: an error event is classified, and the password never shows', async (t) => {
  const cases = [
    [`Head "http://127.0.0.1:5000/v2/team/api/manifests/v1": unauthorized: authentication required (${PASSWORD})`, 'registry_unauthorized'],
    ['manifest for 127.0.0.1:5000/team/api:v1 not found: manifest unknown', 'image_not_found'],
    ['received unexpected HTTP status: 503 Service Unavailable', 'pull_failed'],
  ] as const
  for (const [message, code] of cases) {
    const { docker } = engine([{ status: 'Pulling' }, { errorDetail: { message }, error: message }])
    const err = (await pull(docker).catch((e: unknown) => e)) as Error & { code: string }
    t.equal(err.code, code, message)
    t.match(err.message, 'pull of 127.0.0.1:5000/team/api:v1 from 127.0.0.1:5000 failed')
    t.notMatch(err.message, PASSWORD)
  }
  const refused = engine([], {
    rejectWith: Object.assign(new Error('(HTTP code 500) server error - unauthorized: no'), { statusCode: 500 }),
  })
  const err = (await pull(refused.docker).catch((e: unknown) => e)) as Error & { code: string }
  t.equal(err.code, 'registry_unauthorized')
  t.equal(err.message, 'pull of 127.0.0.1:5000/team/api:v1 from 127.0.0.1:5000 failed: unauthorized: no (as user ci: check registryAuth)')
})

t.test('pullImage: a pull that never ends is cut at its timeout', async (t) => {
  const { docker } = engine([{ status: 'Pulling from team/api', id: 'v1' }], { endless: true })
  const started = Date.now()
  await t.rejects(pull(docker, [], 200), { code: 'pull_timeout', message: /timed out after 200 ms/ })
  t.ok(Date.now() - started < 2000)
})

t.test('registryOf: the registry host of an image name, Docker Hub for the rest', async (t) => {
  t.equal(registryOf('registry.example.com/team/api'), 'registry.example.com')
  t.equal(registryOf('127.0.0.1:5000/api'), '127.0.0.1:5000')
  t.equal(registryOf('localhost/api'), 'localhost')
  t.equal(registryOf('team/api'), 'https://index.docker.io/v1/')
  t.equal(registryOf('api'), 'https://index.docker.io/v1/')
  t.equal(registryOf('docker.io/team/api'), 'https://index.docker.io/v1/')
})
