// Secrets never leave through what a deploy writes: a real agent process on real Docker runs a migration that
// prints the env file's secret and fails; the deploy record, its log and the webhook notification (a local receiver)
// must not contain it. After SIGHUP the scrubber knows the config's new secrets, and a deploy teaches it the env
// file values it reads.
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { startAgentRig, type AgentRig } from '../helpers/agent-rig.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { makeGitRepo } from '../helpers/git.js'
import { sampleReleaseFiles } from '../helpers/sample-app.js'
import { tempDir } from '../helpers/tmp.js'

async function webhookReceiver(t: Test): Promise<{ url: string; bodies: string[] }> {
  const bodies: string[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      bodies.push(body)
      res.writeHead(200).end('ok')
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, bodies }
}

async function logOf(rig: AgentRig, id: string): Promise<string> {
  const res = await fetch(`${rig.url}/v1/deploys/${id}/log`, { headers: { authorization: `Bearer ${rig.keys.statusToken}` } })
  return res.text()
}

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  for (const stop = Date.now() + timeoutMs; !check(); await new Promise((r) => setTimeout(r, 50))) {
    if (Date.now() > stop) throw new Error(`timed out waiting for ${what}`)
  }
}

t.test(
  'Scrubbing: a migration printing secrets reaches no record, log or notification',
  { skip: skipUnless(await dockerAvailable(), 'docker') },
  async (t) => {
    await ensureBaseImage()
    // Values with no sensitive-looking name around them: only knowing the exact value can remove them.
    const envSecret = `blob${randomBytes(18).toString('hex')}`
    const reloadedSecret = randomBytes(32).toString('hex')
    const hook = await webhookReceiver(t)
    const own = await tempDir(t)
    const envFile = join(own, 'app.env')
    await writeFile(envFile, `# app settings\nAPP_BLOB=${envSecret}\n`, { mode: 0o600 })
    const prints = (text: string) =>
      sampleReleaseFiles({ migrate: `echo "connecting with ${text}"\necho "refused: ${text}" >&2\nexit 1\n` })
    const rig = await startAgentRig(t, {
      repo: async (dir) =>
        (
          await makeGitRepo(join(dir, 'repo'), [
            { files: prints('$APP_BLOB'), tag: 'v1.0.0' },
            { files: prints(reloadedSecret), tag: 'v2.0.0' },
          ])
        ).path,
      env: { envFile },
      config: () => ({ notify: [{ kind: 'webhook', url: hook.url }] }),
    })

    const first = await rig.waitFinished(await rig.startDeploy('v1.0.0'))
    t.equal(first.state, 'FAILED')
    t.equal(first.error?.code, 'migration_failed')
    t.match(first.error?.message, /connecting with \[redacted\]/, 'the output is kept, the secret is not')
    const firstLog = await logOf(rig, first.id)
    t.match(firstLog, /connecting with \[redacted\]/)
    await until('the failure notification', () => hook.bodies.some((b) => b.includes('deploy.failed')))
    const everything = () => JSON.stringify(first) + firstLog + hook.bodies.join('\n')
    t.notOk(everything().includes(envSecret), 'the env file value is in no record, log or notification')

    // A secret the agent only learns from the reloaded config (a rotated HMAC secret): SIGHUP must teach it.
    await writeFile(join(rig.dir, 'keys', 'legacy.secret'), `${reloadedSecret}\n`, { mode: 0o600 })
    const reloads = () => rig.agent().output().split('keyring reloaded').length - 1
    const before = reloads()
    rig.agent().child.kill('SIGHUP')
    await until('the reload', () => reloads() > before)
    const second = await rig.waitFinished(await rig.startDeploy('v2.0.0'))
    t.equal(second.state, 'FAILED')
    const secondLog = await logOf(rig, second.id)
    await until('the second failure notification', () => hook.bodies.filter((b) => b.includes('deploy.failed')).length >= 2)
    t.match(secondLog, /connecting with \[redacted\]/)
    t.notOk((JSON.stringify(second) + secondLog + hook.bodies.join('\n')).includes(reloadedSecret), 'the reloaded secret is scrubbed too')

    // An env file edited after the start, with no reload: the deploy that reads it teaches the scrubber.
    const editedSecret = `blob${randomBytes(18).toString('hex')}`
    await writeFile(envFile, `APP_BLOB=${editedSecret}\n`, { mode: 0o600 })
    const third = await rig.waitFinished(await rig.startDeploy('v1.0.0'))
    t.equal(third.state, 'FAILED')
    const thirdLog = await logOf(rig, third.id)
    await until('the third failure notification', () => hook.bodies.filter((b) => b.includes('deploy.failed')).length >= 3)
    t.match(thirdLog, /connecting with \[redacted\]/)
    t.notOk((JSON.stringify(third) + thirdLog + hook.bodies.join('\n')).includes(editedSecret), 'the value read at deploy time is scrubbed')
  },
)
