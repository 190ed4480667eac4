// The caps that keep deploy output from exhausting memory and disk: a line is cut at MAX_LINE_CHARS (the rest
// dropped, and the line says how much), and a deploy's log stops taking output at its size cap, with one line
// in the log saying how much was dropped, while the agent's own lines (state changes) still get in.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import t from 'tap'
import { followBuild } from '../../agent/docker/build.js'
import { capLine, LineSplitter, MAX_LINE_CHARS } from '../../agent/docker/lines.js'
import { DeployLogs } from '../../agent/store/deploy-logs.js'

const held = (splitter: LineSplitter) => (splitter as unknown as { pending: string }).pending.length

t.test('LineSplitter: a line without newline holds at most the cap, and comes out cut with what was dropped', async (t) => {
  const lines = new LineSplitter(MAX_LINE_CHARS)
  const chunk = 'x'.repeat(16 * 1024)
  for (let i = 0; i < 64; i++) {
    t.same(lines.push(chunk), [], 'nothing before the newline')
    if (held(lines) > MAX_LINE_CHARS) return void t.fail(`holds ${held(lines)} characters`)
  }
  const [cut, next] = lines.push('yz\nnext')
  t.equal(cut, `${'x'.repeat(MAX_LINE_CHARS)} […${64 * 16 * 1024 + 2 - MAX_LINE_CHARS} more characters of this line dropped]`)
  t.same(lines.flush(), ['next'])
  t.equal(next, undefined)
  // The same at the end of the stream.
  lines.push('a'.repeat(MAX_LINE_CHARS + 5))
  t.same(lines.flush(), [`${'a'.repeat(MAX_LINE_CHARS)} […5 more characters of this line dropped]`])
  t.equal(capLine('short'), 'short')
})

t.test('followBuild: a huge build line without newline is capped, and the build goes on', async (t) => {
  const stream = new PassThrough()
  const lines: string[] = []
  const done = followBuild(stream, (line) => lines.push(line))
  for (let i = 0; i < 100; i++) stream.write(`${JSON.stringify({ stream: 'y'.repeat(10_000) })}\n`)
  stream.write(`${JSON.stringify({ stream: '\nStep 2/2\n' })}\n`)
  stream.end(`${JSON.stringify({ status: 'z'.repeat(20_000) })}\n`)
  t.equal(await done, null)
  t.equal(lines.length, 3)
  t.match(lines[0], new RegExp(`^y{${MAX_LINE_CHARS}} \\[…${1_000_000 - MAX_LINE_CHARS} more characters of this line dropped\\]$`))
  t.equal(lines[1], 'Step 2/2')
  t.ok((lines[2] as string).length < MAX_LINE_CHARS + 100, 'a long status line is cut too')
})

t.test('DeployLogs: past the size cap output is dropped, the agent’s lines still get in, one line says how much', async (t) => {
  const dir = t.testdir()
  const logs = new DeployLogs(dir, { maxBytes: 10_000, reserveBytes: 2_000 })
  const id = 'd_aaaaaaaaaaaa'
  const line = { event: 'build', line: 'o'.repeat(180) }
  const size = JSON.stringify(line).length + 1
  const writes = Array.from({ length: 100 }, () => logs.append(id, line, { output: true }))
  writes.push(logs.append(id, { event: 'state', state: 'FAILED' }))
  await Promise.all(writes)
  await logs.closeLog(id)
  const text = await readFile(join(dir, `${id}.ndjson`), 'utf8')
  const events = text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
  const kept = events.filter((e) => e.event === 'build').length
  t.equal(kept, Math.floor(10_000 / size), 'output up to the cap')
  t.ok(
    events.some((e) => e.event === 'state' && e.state === 'FAILED'),
    'the state line past the cap is kept',
  )
  const capped = events.filter((e) => e.event === 'log-capped')
  t.equal(capped.length, 1, 'one line says what was dropped')
  t.match(capped[0], { limitBytes: 10_000, droppedLines: 100 - kept, droppedBytes: (100 - kept) * size })
  t.ok(Buffer.byteLength(text) <= 12_000 + 300, `the log stays near its cap (${Buffer.byteLength(text)} bytes)`)

  // Past the reserve too, even the agent's own lines are dropped (counted in the same way).
  const logs2 = new DeployLogs(dir, { maxBytes: 1_000, reserveBytes: 500 })
  const id2 = 'd_bbbbbbbbbbbb'
  await Promise.all(Array.from({ length: 20 }, () => logs2.append(id2, { event: 'state', state: 'X'.repeat(80) })))
  await logs2.closeLog(id2)
  const text2 = await readFile(join(dir, `${id2}.ndjson`), 'utf8')
  t.ok(Buffer.byteLength(text2) <= 1_500 + 300, `${Buffer.byteLength(text2)} bytes`)
  t.match(JSON.parse(text2.trim().split('\n').at(-1) as string), { event: 'log-capped', droppedLines: Number })
})
