// A migration on real Docker that floods its output: a 1 MiB line without newline, then ~6 MB of lines. Read back
// over HTTP, the deploy's log holds the long line cut at 8 KiB (saying how much was dropped), stops taking output
// at its 5 MiB cap with one line saying what was dropped, and still ends with the deploy's final state.
import { join } from 'node:path'
import t from 'tap'
import { MAX_LINE_CHARS } from '../../agent/docker/lines.js'
import { MAX_LOG_BYTES } from '../../agent/store/deploy-logs.js'
import { startAgentRig } from '../helpers/agent-rig.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { makeGitRepo } from '../helpers/git.js'
import { sampleReleaseFiles } from '../helpers/sample-app.js'

const FLOOD = [`head -c 1048576 /dev/zero | tr '\\0' x`, 'echo', `yes "$(printf '%0900d' 0)" | head -n 7000`, 'exit 1', ''].join('\n')

t.test('Deploy log caps: a flooding migration on real Docker', { skip: skipUnless(await dockerAvailable(), 'docker') }, async (t) => {
  await ensureBaseImage()
  const rig = await startAgentRig(t, {
    repo: async (dir) => (await makeGitRepo(join(dir, 'repo'), [{ files: sampleReleaseFiles({ migrate: FLOOD }), tag: 'v1.0.0' }])).path,
  })
  const deploy = await rig.waitFinished(await rig.startDeploy('v1.0.0'), 120_000)
  t.equal(deploy.state, 'FAILED')
  // The record is finished just before its final state line is appended: read until that line is there.
  let text = ''
  for (let i = 0; i < 100 && !text.includes('"state":"FAILED"'); i++, await new Promise((r) => setTimeout(r, 50))) {
    text = await (
      await fetch(`${rig.url}/v1/deploys/${deploy.id}/log`, { headers: { authorization: `Bearer ${rig.keys.statusToken}` } })
    ).text()
  }
  const bytes = Buffer.byteLength(text)
  t.ok(bytes <= MAX_LOG_BYTES + 256 * 1024, `the log is ${bytes} bytes`)
  const events = text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>)
  const long = events.find((e) => e.event === 'migrate' && String(e.line).startsWith('xxxx'))
  t.match(
    long?.line,
    new RegExp(`^x{${MAX_LINE_CHARS}} \\[…${1048576 - MAX_LINE_CHARS} more characters of this line dropped\\]$`),
    'the 1 MiB line is cut',
  )
  const capped = events.filter((e) => e.event === 'log-capped')
  t.equal(capped.length, 1, 'one line says what the cap dropped')
  t.ok(Number(capped[0]?.droppedLines) > 0, `${capped[0]?.droppedLines} lines dropped`)
  t.ok(
    events.some((e) => e.event === 'state' && e.state === 'FAILED'),
    'the final state is still in the log',
  )
})
