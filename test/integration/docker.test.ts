import { PassThrough } from 'node:stream'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { get } from 'node:http'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import Docker from 'dockerode'
import t from 'tap'
import { DockerEngine } from '../../agent/docker/engine.js'
import { BuildError } from '../../agent/docker/errors.js'
import { BASE_IMAGE, dockerAvailable, ensureBaseImage, removeContainersByLabel } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { freePort } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

// Everything this run creates carries RUN_LABEL=RUN_ID, so teardown finds it even after a failed assertion.
const RUN_ID = `${process.pid}-${randomBytes(4).toString('hex')}`
const RUN_LABEL = 'deploy-agent.test-run'
const skip = skipUnless(await dockerAvailable(), 'docker')
const engine = new DockerEngine()

if (skip === false) {
  await ensureBaseImage()
  t.teardown(async () => {
    await removeContainersByLabel(`${RUN_LABEL}=${RUN_ID}`)
    for (const image of await engine.listImages({ [RUN_LABEL]: RUN_ID })) {
      for (const tag of image.tags) await engine.removeImage(tag)
      if (image.tags.length === 0) await engine.removeImage(image.id)
    }
  })
}

const labels = (testCase: string): Record<string, string> => ({ [RUN_LABEL]: RUN_ID, 'deploy-agent.test-case': testCase })
const tagFor = (testCase: string): string => `deploy-agent-test-app:${RUN_ID}-${testCase}`
const nameFor = (testCase: string): string => `deploy-agent-test-${RUN_ID}-${testCase}`
type Teardown = Parameters<typeof tempDir>[0]

// The build context as the deploy gives it: a tar stream on a pipe.
async function tarContext(t: Teardown, files: Record<string, string>): Promise<NodeJS.ReadableStream> {
  const dir = await tempDir(t)
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content)
  const tar = spawn('tar', ['-C', dir, '--numeric-owner', '--owner=0', '--group=0', '-c', '.'], { stdio: ['ignore', 'pipe', 'inherit'] })
  // Piped at once: Node drops what an exited child wrote to a stdout nobody has read yet.
  return tar.stdout.pipe(new PassThrough())
}

async function build(
  t: Teardown,
  testCase: string,
  files: Record<string, string>,
  extra: { timeoutMs?: number; signal?: AbortSignal } = {},
) {
  const lines: string[] = []
  const result = engine.buildImage({
    context: await tarContext(t, files),
    dockerfile: 'Dockerfile',
    tag: tagFor(testCase),
    buildArgs: { VERSION: '1.2.3' },
    labels: labels(testCase),
    timeoutMs: extra.timeoutMs ?? 120_000,
    onLine: (line) => lines.push(line),
    ...(extra.signal !== undefined ? { signal: extra.signal } : {}),
  })
  return { result, lines }
}

function fetchText(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    }).once('error', reject)
  })
}

async function eventually<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const value = await fn()
      if (value !== undefined) return value
    } catch (err) {
      last = err
    }
    await sleep(100)
  }
  throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`)
}

const WEB_FILES = {
  'index.html': 'hello from the test app\n',
  healthz: 'ok\n',
  Dockerfile: [
    `FROM ${BASE_IMAGE}`,
    'ARG VERSION=unset',
    'COPY index.html /www/index.html',
    'COPY healthz /www/healthz',
    'RUN echo "$VERSION" > /www/version',
    // Shell form so $PORT comes from the container's env; exec so httpd is PID 1 and gets the stop signal.
    'CMD ["sh", "-c", "echo listening on $PORT; exec httpd -f -p 127.0.0.1:$PORT -h /www"]',
    '',
  ].join('\n'),
}

t.test('DockerEngine: ping answers true on the engine and false on a missing socket', { skip }, async (t) => {
  t.equal(await engine.ping(), true)
  t.equal(await new DockerEngine(new Docker({ socketPath: '/nonexistent/docker.sock' })).ping(), false)
})

t.test('DockerEngine: builds from a tar stream, runs with host networking, stops, restarts, renames and removes', { skip }, async (t) => {
  const { result, lines } = await build(t, 'web', WEB_FILES)
  const { imageId } = await result
  t.match(imageId, /^sha256:[0-9a-f]{64}$/)
  t.ok(
    lines.some((line) => /^Step 1\/\d+ : FROM /.test(line)),
    'build steps are streamed',
  )
  t.ok(
    lines.every((line) => line === line.trim() && line !== ''),
    'lines are trimmed and not empty',
  )

  const image = await engine.inspectImage(tagFor('web'))
  t.ok(image)
  t.equal(image?.id, imageId)
  t.ok(image?.tags.includes(tagFor('web')))
  t.match(image?.labels, labels('web'))
  t.equal(image?.healthcheck, false)
  t.ok(image?.created instanceof Date)
  t.equal(await engine.imageExists(tagFor('web')), true)
  t.equal(await engine.imageExists(`deploy-agent-test-missing:${RUN_ID}`), false)
  t.equal(await engine.inspectImage(`deploy-agent-test-missing:${RUN_ID}`), null)
  const listed = await engine.listImages(labels('web'))
  t.same(
    listed.map((i) => i.id),
    [imageId],
  )
  t.same(listed[0]?.tags, [tagFor('web')])

  const port = await freePort()
  const name = nameFor('web')
  const id = await engine.startContainer({ name, image: tagFor('web'), env: [`PORT=${port}`], labels: labels('web') })
  const version = await eventually('the app to answer', async () => fetchText(port, '/version'))
  t.same(version, { status: 200, body: '1.2.3\n' }, 'the build arg reached the image')
  t.equal((await fetchText(port, '/')).body, 'hello from the test app\n')

  const running = await engine.inspectContainer(name)
  t.match(running, { id, name, image: tagFor('web'), imageId, running: true, restarting: false, exitCode: null, health: null })
  t.match(running?.labels, labels('web'))
  t.ok(running?.startedAt instanceof Date)
  const containers = await engine.listContainers(labels('web'))
  t.match(containers, [{ id, name, image: tagFor('web'), state: 'running' }])
  t.ok(containers[0]?.created instanceof Date)

  await t.rejects(engine.startContainer({ name, image: tagFor('web'), env: [], labels: labels('web') }), {
    code: 'container_exists',
    statusCode: 409,
  })

  await engine.stopContainer(id, 1)
  const stopped = await engine.inspectContainer(id)
  t.equal(stopped?.running, false)
  t.type(stopped?.exitCode, 'number')
  await engine.stopContainer(id, 1) // already stopped: no error

  await engine.startExisting(id)
  t.equal((await engine.inspectContainer(id))?.running, true)
  await engine.startExisting(id) // already running: no error
  t.same(await eventually('the app to answer again', async () => fetchText(port, '/version')), { status: 200, body: '1.2.3\n' })
  const logs = await eventually('both starts in the log', async () => {
    const tail = await engine.containerLogTail(id)
    return tail.length >= 2 ? tail : undefined
  })
  t.same(logs, [`listening on ${port}`, `listening on ${port}`])
  t.same(await engine.containerLogTail(id, 1), [`listening on ${port}`])

  await engine.renameContainer(id, `${name}-old`)
  t.equal((await engine.inspectContainer(`${name}-old`))?.id, id)
  t.equal(await engine.inspectContainer(name), null)

  await t.rejects(engine.removeImage(tagFor('web')), { code: 'image_in_use' })
  await engine.removeContainer(id)
  t.equal(await engine.inspectContainer(id), null)
  t.same(await engine.listContainers(labels('web')), [])
  t.same(await engine.containerLogTail(id), [])
  await engine.removeContainer(id) // already gone: no error
  await t.rejects(engine.stopContainer(id), { code: 'docker_not_found' })

  await engine.removeImage(tagFor('web'))
  t.equal(await engine.imageExists(tagFor('web')), false)
  await engine.removeImage(tagFor('web')) // already gone: no error
})

t.test(
  'DockerEngine: a command that cannot run exits 127 under the init process; a missing image is docker_not_found',
  { skip },
  async (t) => {
    const { result } = await build(t, 'bad-cmd', { Dockerfile: `FROM ${BASE_IMAGE}\nCMD ["/no/such/binary"]\n` })
    await result
    const name = nameFor('bad-cmd')
    // The init (docker-init) starts fine and then fails to exec the command: the container exits, which the
    // deploy's health check reports as container_exited.
    const id = await engine.startContainer({ name, image: tagFor('bad-cmd'), env: [], labels: labels('bad-cmd'), restartPolicy: 'no' })
    let details = await engine.inspectContainer(id)
    for (let i = 0; i < 50 && details?.running; i++)
      details = (await new Promise((r) => setTimeout(r, 100)), await engine.inspectContainer(id))
    t.equal(details?.running, false)
    t.equal(details?.exitCode, 127)
    await engine.removeContainer(id)
    await t.rejects(engine.startContainer({ name, image: `deploy-agent-test-missing:${RUN_ID}`, env: [], labels: labels('bad-cmd') }), {
      code: 'docker_not_found',
    })
  },
)

t.test('DockerEngine: a container that keeps exiting shows its restarts', { skip }, async (t) => {
  // The base image's command is a shell without stdin: it exits at once, and unless-stopped brings it back.
  const id = await engine.startContainer({ name: nameFor('crash-loop'), image: BASE_IMAGE, env: [], labels: labels('crash-loop') })
  const details = await eventually('a restart', async () => {
    const d = await engine.inspectContainer(id)
    return d !== null && d.restartCount > 0 ? d : undefined
  })
  t.ok(details.restartCount > 0)
  await engine.removeContainer(id)
  t.equal(await engine.inspectContainer(id), null)
})

t.test('DockerEngine: a failing RUN is reported from the build stream', { skip }, async (t) => {
  const { result } = await build(t, 'fail-run', {
    Dockerfile: `FROM ${BASE_IMAGE}\nRUN echo about to fail && false\n`,
  })
  const err = await result.then(
    () => null,
    (e: unknown) => e,
  )
  t.ok(err instanceof BuildError)
  const buildErr = err as BuildError
  t.equal(buildErr.code, 'build_failed')
  t.match(buildErr.message, /returned a non-zero code: 1/)
  t.ok(buildErr.lastLines.includes('about to fail'), 'the failing step output is kept')
  t.ok(buildErr.lastLines.length > 0 && buildErr.lastLines.length <= 20)
  t.equal(await engine.imageExists(tagFor('fail-run')), false)
})

t.test('DockerEngine: COPY of a file missing from the context fails the build', { skip }, async (t) => {
  const { result } = await build(t, 'fail-copy', { Dockerfile: `FROM ${BASE_IMAGE}\nCOPY missing-file /x\n` })
  await t.rejects(result, { code: 'build_failed', message: /missing-file/ })
  t.equal(await engine.imageExists(tagFor('fail-copy')), false)
})

t.test('DockerEngine: a build past its timeout is aborted as build_timeout', { skip }, async (t) => {
  const started = Date.now()
  const { result } = await build(t, 'slow', { Dockerfile: `FROM ${BASE_IMAGE}\nRUN echo sleeping && sleep 30\n` }, { timeoutMs: 1_500 })
  await t.rejects(result, { code: 'build_timeout', statusCode: 504 })
  t.ok(Date.now() - started < 10_000, 'the caller is not kept waiting for the build')
  t.equal(await engine.imageExists(tagFor('slow')), false)
})

t.test('DockerEngine: an aborted signal cancels the build as build_cancelled', { skip }, async (t) => {
  const controller = new AbortController()
  const { result, lines } = await build(
    t,
    'cancel',
    { Dockerfile: `FROM ${BASE_IMAGE}\nRUN echo sleeping && sleep 30\n` },
    { signal: controller.signal },
  )
  await eventually('the build to start', async () => (lines.includes('sleeping') ? true : undefined))
  controller.abort()
  await t.rejects(result, { code: 'build_cancelled' })

  const aborted = new AbortController()
  aborted.abort()
  const early = await build(t, 'cancel-early', WEB_FILES, { signal: aborted.signal })
  await t.rejects(early.result, { code: 'build_cancelled' })
  t.same(early.lines, [])
})

t.test('DockerEngine: runOneOff reports the exit code and output, and removes its container', { skip }, async (t) => {
  const seen: string[] = []
  const name = nameFor('one-off')
  const result = await engine.runOneOff({
    image: BASE_IMAGE,
    cmd: ['sh', '-c', 'echo hello; echo "to stderr" >&2; echo "PORT=$PORT"; exit 3'],
    env: ['PORT=1234'],
    labels: labels('one-off'),
    timeoutMs: 20_000,
    onLine: (line) => seen.push(line),
    name,
  })
  t.equal(result.exitCode, 3)
  t.equal(result.timedOut, false)
  t.same([...result.logTail].sort(), ['PORT=1234', 'hello', 'to stderr'])
  t.same([...seen].sort(), ['PORT=1234', 'hello', 'to stderr'])
  t.equal(await engine.inspectContainer(name), null)

  const ok = await engine.runOneOff({
    image: BASE_IMAGE,
    cmd: ['true'],
    env: [],
    labels: labels('one-off'),
    timeoutMs: 20_000,
    onLine: () => {},
  })
  t.same(ok, { exitCode: 0, timedOut: false, logTail: [] })
  t.same(await engine.listContainers(labels('one-off')), [])
})

t.test('DockerEngine: runOneOff kills a command past its timeout', { skip }, async (t) => {
  const name = nameFor('one-off-slow')
  const started = Date.now()
  const result = await engine.runOneOff({
    image: BASE_IMAGE,
    cmd: ['sleep', '30'],
    env: [],
    labels: labels('one-off-slow'),
    timeoutMs: 500,
    onLine: () => {},
    name,
  })
  t.same(result, { exitCode: null, timedOut: true, logTail: [] })
  t.ok(Date.now() - started < 10_000)
  t.equal(await engine.inspectContainer(name), null, 'the container is gone')
})

t.test('DockerEngine: runOneOff of a missing executable exits 127 and leaves no container', { skip }, async (t) => {
  const name = nameFor('one-off-missing')
  const result = await engine.runOneOff({
    image: BASE_IMAGE,
    cmd: ['/no/such/binary'],
    env: [],
    labels: labels('one-off-missing'),
    timeoutMs: 5_000,
    onLine: () => {},
    name,
  })
  t.equal(result.exitCode, 127)
  t.match(result.logTail.join('\n'), /no\/such\/binary/, 'the reason is in the output')
  t.equal(await engine.inspectContainer(name), null)
  await t.rejects(
    engine.runOneOff({
      image: `deploy-agent-test-missing:${RUN_ID}`,
      cmd: ['true'],
      env: [],
      labels: labels('one-off-missing'),
      timeoutMs: 5_000,
      onLine: () => {},
    }),
    { code: 'docker_not_found' },
  )
})

t.test('DockerEngine: a HEALTHCHECK reports starting, then healthy', { skip }, async (t) => {
  const dockerfile = WEB_FILES.Dockerfile.replace(
    /^CMD /m,
    'HEALTHCHECK --interval=1s --timeout=2s CMD wget -q -O /dev/null http://127.0.0.1:$PORT/healthz || exit 1\nCMD ',
  )
  const { result } = await build(t, 'health', { ...WEB_FILES, Dockerfile: dockerfile })
  await result
  t.equal((await engine.inspectImage(tagFor('health')))?.healthcheck, true)

  const port = await freePort()
  const id = await engine.startContainer({
    name: nameFor('health'),
    image: tagFor('health'),
    env: [`PORT=${port}`],
    labels: labels('health'),
    restartPolicy: 'no',
  })
  t.equal((await engine.inspectContainer(id))?.health, 'starting')
  const healthy = await eventually('the container to be healthy', async () => {
    const health = (await engine.inspectContainer(id))?.health
    return health === 'healthy' ? health : undefined
  })
  t.equal(healthy, 'healthy')
  await engine.removeContainer(id)
})
