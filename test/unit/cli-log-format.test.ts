// Build output, migration output and error messages come from the deployed repo: the CLI must not hand their
// terminal control sequences (clear screen, set title, OSC 8 links, cursor moves, \r overwrites) to the operator's
// terminal. Only the CLI's own colour codes reach it.
import t from 'tap'
import type { AgentClient, JsonRecord } from '../../agent/cli/client.js'
import { followDeploy, type DeployView } from '../../agent/cli/follow.js'
import { formatEvent, painter, printable } from '../../agent/cli/log-format.js'

const HOSTILE = 'ok\x1b[2J\x1b]0;owned\x07\x1b]8;;http://evil/\x1b\\link\rFAKE\x9b31m\x7f\x00\u202eend'
/** Any control character but \t and \n (C0, DEL, C1), and the bidi overrides. */
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/

t.test('printable: control characters are shown escaped; tab and newline stay', async (t) => {
  t.equal(printable('a\tb\nc'), 'a\tb\nc')
  t.equal(printable('\x1b[31mred\r\x07'), '\\x1b[31mred\\r\\x07')
  t.equal(printable('\x9b\x7f\u202e'), '\\x9b\\x7f\\u202e')
  t.equal(printable('plain ünïcode ✓'), 'plain ünïcode ✓')
})

t.test('formatEvent: no control character from a log event reaches the terminal', async (t) => {
  const events: JsonRecord[] = [
    { at: '2026-01-01T00:00:00Z', event: 'build', line: HOSTILE },
    { event: 'migrate', line: HOSTILE },
    { event: 'container-log', lines: [HOSTILE, HOSTILE] },
    { event: 'health', ok: false, error: HOSTILE },
    { event: 'state', state: `FAILED${HOSTILE}`, error: { code: HOSTILE, message: HOSTILE } },
    { event: HOSTILE, [HOSTILE]: HOSTILE, nested: { x: HOSTILE } },
  ]
  for (const event of events) {
    const lines = formatEvent(event, painter(false))
    t.ok(lines.length > 0)
    for (const line of lines) t.notMatch(line, CONTROL, `${String(event.event).slice(0, 9)}: ${JSON.stringify(line)}`)
  }
  t.match(
    formatEvent({ event: 'build', line: 'Step 1/3\r\n' }, painter(false))[0],
    /build +Step 1\/3$/,
    "a line's trailing \\r is dropped, not shown",
  )
  t.match(
    formatEvent({ event: 'state', state: 'QUEUED', was: 'AWAITING_APPROVAL', approvedBy: 'release-manager' }, painter(false))[0],
    /QUEUED {2}approved by release-manager$/,
    'who approved is shown',
  )
  const coloured = formatEvent({ event: 'state', state: 'SUCCEEDED' }, painter(true))[0] ?? ''
  t.match(coloured, '\x1b[32mSUCCEEDED\x1b[0m', "the CLI's own colour is kept")
})

t.test('followDeploy: the error line, the tail and the summary carry no control characters', async (t) => {
  const deploy: DeployView = {
    id: 'd_aaaaaaaaaaaa',
    kind: 'deploy',
    app: 'shop',
    env: 'production',
    ref: 'v1.0.0',
    release: 'v1.0.0',
    state: 'FAILED',
    error: { code: 'migrate_failed', message: HOSTILE },
    createdAt: '2026-01-01T00:00:00Z',
    finishedAt: '2026-01-01T00:01:00Z',
  }
  const client = {
    get: async () => deploy,
    stream: async function* () {
      yield { event: 'migrate', line: HOSTILE }
      yield { event: 'state', state: 'FAILED', error: { code: 'migrate_failed', message: HOSTILE } }
    },
  } as unknown as AgentClient
  const printed: string[] = []
  await followDeploy(client, deploy.id, { paint: painter(false), out: (l) => printed.push(l), err: (l) => printed.push(l) })
  t.ok(
    printed.some((l) => l.startsWith('error: migrate_failed: ok\\x1b[2J')),
    'the error is printed, escaped',
  )
  for (const line of printed) t.notMatch(line, CONTROL, JSON.stringify(line))
})
