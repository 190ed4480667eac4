// App logs on real Docker: the sample app deployed by a real agent prints a secret from its env file, to stdout
// and stderr, and a tick every second; the API's tail, its scrubbing, a follower and the CLI are checked on it.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { startAgentRig } from '../helpers/agent-rig.js'
import { cliEnvFor, runCli } from '../helpers/cli.js'
import { makeGitRepo } from '../helpers/git.js'
import { sampleReleaseFiles } from '../helpers/sample-app.js'
import { tempDir } from '../helpers/tmp.js'

const SECRET = 'sk_live_4f9aQ2bX7mP1zR8dW3'
const COMMAND = [
  'echo "booting, key $SHOP_KEY"',
  'echo "warming up" >&2',
  '(while sleep 1; do echo "tick $(date +%s)"; done) &',
  'exec httpd -f -p 127.0.0.1:$PORT -h /www',
].join('\n')

interface LogLine {
  at: string
  stream: string
  line: string
  event?: string
}

t.test('App logs: tail, scrubbing, follow and the CLI on the live container', async (t) => {
  const envDir = await tempDir(t)
  const envFile = join(envDir, 'app.env')
  await writeFile(envFile, `SHOP_KEY=${SECRET}\n`)
  const rig = await startAgentRig(t, {
    env: { envFile },
    repo: async (dir) => (await makeGitRepo(join(dir, 'repo'), [{ files: sampleReleaseFiles({ command: COMMAND }), tag: 'v1.0.0' }])).path,
  })
  const headers = { authorization: `Bearer ${rig.keys.statusToken}` }
  const logs = `${rig.url}/v1/apps/${rig.app}/envs/${rig.env}/logs`

  const before = await fetch(logs, { headers })
  t.equal(before.status, 404, 'nothing is live yet')
  t.equal(((await before.json()) as { error: { code: string } }).error.code, 'no_live_release')

  const done = await rig.waitFinished(await rig.startDeploy('v1.0.0'))
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))

  const res = await fetch(`${logs}?tail=50`, { headers })
  t.equal(res.status, 200)
  const body = await res.text()
  const lines = body
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as LogLine)
  t.notOk(body.includes(SECRET), 'the env file secret never leaves the agent')
  t.ok(
    lines.some((l) => l.stream === 'stdout' && l.line === 'booting, key [redacted]'),
    'stdout line, secret scrubbed',
  )
  t.ok(
    lines.some((l) => l.stream === 'stderr' && l.line === 'warming up'),
    'stderr line',
  )
  t.ok(
    lines.every((l) => !Number.isNaN(Date.parse(l.at))),
    'each line has its time',
  )
  const two = await (await fetch(`${logs}?tail=2`, { headers })).text()
  t.equal(two.trim().split('\n').length, 2, 'tail=2 gives two lines')

  // A follower with no tail gets only new lines: the next tick.
  const gone = new AbortController()
  const follow = await fetch(`${logs}?follow=1&tail=0`, { headers, signal: gone.signal })
  t.equal(follow.status, 200)
  const reader = (follow.body as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  let received = ''
  const deadline = Date.now() + 10_000
  while (!/"line":"tick \d+"/.test(received) && Date.now() < deadline) {
    const { value, done: ended } = await reader.read()
    if (ended) break
    received += decoder.decode(value, { stream: true })
  }
  t.match(received, /"event":"heartbeat"/, 'a heartbeat first')
  t.match(received, /"stream":"stdout","line":"tick \d+"/, 'a new line is delivered')
  t.notMatch(received, /booting/, 'tail=0: nothing from before')
  gone.abort()

  const env = cliEnvFor(rig.url, rig.keys.dir)
  const cli = await runCli(['app-logs', rig.app, rig.env, '--tail', '200'], env)
  t.equal(cli.code, 0, cli.stderr)
  t.match(cli.stdout, /^\d\d:\d\d:\d\d out {2}booting, key \[redacted\]$/m)
  t.match(cli.stdout, /^\d\d:\d\d:\d\d err {2}warming up$/m)
  t.notMatch(cli.stdout, SECRET)
  const json = await runCli(['app-logs', rig.app, rig.env, '--tail', '3', '--json'], env)
  t.equal(json.code, 0, json.stderr)
  const printed = json.stdout.trim().split('\n')
  t.equal(printed.length, 3)
  t.match(JSON.parse(printed[0] as string), { at: String, stream: String, line: String })
  const bad = await runCli(['app-logs', rig.app, rig.env, '--service', 'worker'], env)
  t.not(bad.code, 0)
  t.match(bad.stderr, /no service "worker"/)
})
