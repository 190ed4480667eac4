import { PassThrough } from 'node:stream'
import t from 'tap'
import { followBuild } from '../../agent/docker/build.js'
import { AgentError } from '../../agent/errors.js'
import { BuildError, ContainerExistsError, DockerError, toDockerError } from '../../agent/docker/errors.js'
import { demuxLogBuffer, LineSplitter, nonEmptyLines, Tail } from '../../agent/docker/lines.js'
import { labelFilters, parseDockerTime } from '../../agent/docker/types.js'

function frame(type: number, text: string): Buffer {
  const body = Buffer.from(text)
  const header = Buffer.alloc(8)
  header.writeUInt8(type, 0)
  header.writeUInt32BE(body.length, 4)
  return Buffer.concat([header, body])
}

const json = (event: unknown): string => `${JSON.stringify(event)}\r\n`

t.test('LineSplitter: holds a partial line until it is completed or flushed', async (t) => {
  const lines = new LineSplitter()
  t.same(lines.push('one\ntw'), ['one'])
  t.same(lines.push('o\r\nthree'), ['two'])
  t.same(lines.flush(), ['three'])
  t.same(lines.flush(), [])
})

t.test('Tail: keeps only the last items', async (t) => {
  const tail = new Tail(2)
  for (const item of ['a', 'b', 'c']) tail.push(item)
  t.same(tail.lines(), ['b', 'c'])
})

t.test('demuxLogBuffer: joins stdout and stderr frames, and passes unframed output through', async (t) => {
  t.equal(demuxLogBuffer(Buffer.concat([frame(1, 'out\n'), frame(2, 'err\n')])), 'out\nerr\n')
  t.equal(demuxLogBuffer(Buffer.from('raw tty output\n')), 'raw tty output\n')
  t.equal(demuxLogBuffer(Buffer.alloc(0)), '')
  t.same(nonEmptyLines('a  \n\n b\n'), ['a', ' b'])
})

t.test('labelFilters and parseDockerTime: the engine formats', async (t) => {
  t.same(labelFilters({ 'deploy-agent.app': 'lifeos', 'deploy-agent.env': 'staging' }), {
    label: ['deploy-agent.app=lifeos', 'deploy-agent.env=staging'],
  })
  t.equal(parseDockerTime('0001-01-01T00:00:00Z'), null)
  t.equal(parseDockerTime(''), null)
  t.equal(parseDockerTime('not a date'), null)
  t.equal(parseDockerTime('2026-01-02T03:04:05.123456789Z')?.toISOString(), '2026-01-02T03:04:05.123Z')
})

t.test('followBuild: output lines are trimmed, joined across events and chunks, blank ones dropped', async (t) => {
  const stream = new PassThrough()
  const lines: string[] = []
  const done = followBuild(stream, (line) => lines.push(line))
  const events = json({ stream: 'Step 1/2 : FROM base\n' }) + json({ stream: ' ---> abc\n\n' }) + json({ stream: 'partial ' })
  stream.write(events.slice(0, 30))
  stream.write(events.slice(30))
  stream.write(json({ stream: 'line\n' }) + json({ aux: { ID: 'sha256:1' } }) + 'not json\n' + json({ status: 'pulling' }))
  stream.end(json({ stream: 'no newline at the end' }))
  t.equal(await done, null)
  t.same(lines, ['Step 1/2 : FROM base', '---> abc', 'partial line', 'not json', 'pulling', 'no newline at the end'])
})

t.test('followBuild: an error event is the outcome, whatever happens to the stream after it', async (t) => {
  const stream = new PassThrough()
  const lines: string[] = []
  const done = followBuild(stream, (line) => lines.push(line))
  stream.write(json({ stream: 'Step 2/2 : RUN false\nhalf' }))
  stream.write(json({ errorDetail: { code: 1, message: 'returned a non-zero code: 1' }, error: 'returned a non-zero code: 1' }))
  t.equal(await done, 'returned a non-zero code: 1')
  t.same(lines, ['Step 2/2 : RUN false', 'half'])
  t.ok(stream.destroyed, 'the connection is let go')

  const bare = new PassThrough()
  const bareDone = followBuild(bare, () => {})
  bare.end(json({ error: 'only an error' }))
  t.equal(await bareDone, 'only an error')
})

t.test('followBuild: a broken or closed stream without an outcome rejects', async (t) => {
  const broken = new PassThrough()
  const brokenDone = followBuild(broken, () => {})
  broken.destroy(new Error('socket hang up'))
  await t.rejects(brokenDone, { message: 'socket hang up' })

  const closed = new PassThrough()
  const closedDone = followBuild(closed, () => {})
  closed.write(json({ stream: 'Step 1/1\n' }))
  closed.destroy()
  await t.rejects(closedDone, { message: /closed before the build finished/ })
})

t.test('docker errors: stable codes and statuses', async (t) => {
  const build = new BuildError('build_timeout', 'slow', ['x'])
  t.ok(build instanceof AgentError)
  t.match(build, { code: 'build_timeout', statusCode: 504, lastLines: ['x'], name: 'BuildError' })
  t.match(new BuildError('build_failed', 'no', []), { statusCode: 500 })
  t.match(new ContainerExistsError('web-blue'), { code: 'container_exists', statusCode: 409, message: /web-blue/ })

  const engineError = (statusCode: number, message: string) =>
    Object.assign(new Error(`(HTTP code ${statusCode}) x - ${message} `), { statusCode, json: { message: `${message} ` } })
  t.match(toDockerError(engineError(404, 'No such image: a:b'), 'inspect'), {
    code: 'docker_not_found',
    statusCode: 404,
    message: 'inspect: No such image: a:b',
  })
  t.match(toDockerError(engineError(409, 'in use'), 'remove'), { code: 'docker_conflict', statusCode: 409 })
  const other = toDockerError(new Error('connect ENOENT /var/run/docker.sock '), 'ping')
  t.match(other, { code: 'docker_error', statusCode: 502, message: 'ping: connect ENOENT /var/run/docker.sock' })
  t.ok(other instanceof DockerError)
  t.equal(toDockerError(build, 'again'), build, 'AgentErrors pass through')
})
