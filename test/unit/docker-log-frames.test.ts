// Docker's framed log stream read as it arrives: frames split across chunks, stdout and stderr told apart,
// unframed (TTY) bytes passed on, and the time prefix of `timestamps` split off.
import t from 'tap'
import { FrameReader, splitTimestamp } from '../../agent/docker/lines.js'

const frame = (type: number, text: string) => {
  const body = Buffer.from(text)
  const head = Buffer.alloc(8)
  head[0] = type
  head.writeUInt32BE(body.length, 4)
  return Buffer.concat([head, body])
}

t.test('Docker lines: frames are read whole across chunks, each with its stream', async (t) => {
  const bytes = Buffer.concat([frame(1, 'out one\n'), frame(2, 'err one\n'), frame(1, 'out two\n')])
  const reader = new FrameReader()
  const got: string[] = []
  // One byte at a time: every frame and every header is split.
  for (let i = 0; i < bytes.length; i++) for (const f of reader.push(bytes.subarray(i, i + 1))) got.push(`${f.stream}:${f.data.toString()}`)
  t.same(got, ['stdout:out one\n', 'stderr:err one\n', 'stdout:out two\n'])
})

t.test('Docker lines: output that is not framed (a TTY container) is passed on as stdout', async (t) => {
  const reader = new FrameReader()
  t.same(
    reader.push(Buffer.from('plain text, no frames\n')).map((f) => [f.stream, f.data.toString()]),
    [['stdout', 'plain text, no frames\n']],
  )
  t.same(
    reader.push(Buffer.from('\x01more')).map((f) => f.data.toString()),
    ['\x01more'],
    'and stays so',
  )
})

t.test("Docker lines: the engine's time prefix becomes `at`", async (t) => {
  t.same(splitTimestamp('2026-12-07T10:59:45.123456789Z hello world'), { at: '2026-12-07T10:59:45.123Z', text: 'hello world' })
  const plain = splitTimestamp('no time here')
  t.equal(plain.text, 'no time here')
  t.ok(!Number.isNaN(Date.parse(plain.at)))
})
