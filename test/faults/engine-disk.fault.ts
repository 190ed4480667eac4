// Fault: the disk fills up. The agent's state dir (journal, deploy logs, git mirrors) sits on a small tmpfs that
// fills during a fetch, before a request, and in the middle of a build; the backup dir sits on another one that
// fills while pg_dump streams. Each time the operation must fail with a clear error, the old release keep serving,
// the agent keep answering, nothing partial stay behind, and everything work again once space is freed.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { ed25519Key } from '../helpers/agent.js'
import { startAgentRig } from '../helpers/agent-rig.js'
import { canMountTmpfs, fillDisk, mountTmpfs } from '../helpers/disk.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { SAMPLE_TAGS } from '../helpers/sample-app.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const docker = skipUnless(await dockerAvailable(), 'docker')
const mountSkip = docker !== false ? docker : (await canMountTmpfs()) ? false : 'mounting a tmpfs is not permitted here'

const git = (cwd: string, args: string[]) =>
  run('git', args, { cwd, env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' } })

t.test('Engine fault: the state dir fills up during deploys', { skip: mountSkip }, async (t) => {
  await ensureBaseImage()
  const stateDir = join(await tempDir(t), 'state')
  await mkdir(stateDir)
  await mountTmpfs(t, stateDir, '24m')
  const rig = await startAgentRig(t, { config: () => ({ stateDir }), app: { smoke: [] } })
  const statusHeaders = { authorization: `Bearer ${rig.keys.statusToken}` }
  const stillAnswers = async (what: string) => {
    t.equal((await fetch(`${rig.url}/healthz`)).status, 200, `${what}: /healthz answers`)
    t.equal(await rig.statusLive(), await rig.served(), `${what}: /v1/status answers and names the release nginx serves`)
  }
  const first = await rig.waitFinished(await rig.startDeploy(SAMPLE_TAGS.good))
  t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))

  await t.test('a fetch that runs out of space fails the deploy in RESOLVING', async (t) => {
    // A new release whose objects cannot fit in what is left.
    const repo = join(rig.dir, 'repo')
    await git(repo, ['checkout', '--quiet', SAMPLE_TAGS.good2, '--', '.'])
    await writeFile(join(repo, 'blob.bin'), randomBytes(4 * 1024 * 1024))
    await git(repo, ['add', '--all'])
    await git(repo, ['-c', 'user.name=t', '-c', 'user.email=t@t.invalid', 'commit', '--quiet', '-m', 'big'])
    await git(repo, ['tag', '--', 'v3.0.0'])
    const filler = await fillDisk(stateDir, 512 * 1024)
    const id = await rig.startDeploy('v3.0.0')
    const done = await rig.waitFinished(id)
    t.equal(done.state, 'FAILED')
    t.equal(done.error?.code, 'git_fetch_failed', done.error?.message ?? 'no error')
    t.match(done.error?.message, /No space left on device|ENOSPC/i, 'the error names the full disk')
    t.equal(await rig.served(), SAMPLE_TAGS.good, 'the old release serves')
    await stillAnswers('after the failed fetch')
    await rm(filler)
    const again = await rig.waitFinished(await rig.startDeploy('v3.0.0'))
    t.equal(again.state, 'SUCCEEDED', `the mirror is usable once space is back: ${JSON.stringify(again.error)}`)
    t.equal(await rig.served(), 'v3.0.0')
  })

  await t.test('a deploy requested on a full disk is refused and nothing changes', async (t) => {
    const filler = await fillDisk(stateDir)
    const before = await rig.served()
    const path = `/v1/apps/${rig.app}/envs/${rig.env}/deploys`
    const body = JSON.stringify({ ref: SAMPLE_TAGS.good2 })
    const { signRequest } = await import('../../agent/auth/canonical.js')
    const headers = signRequest({ keyId: 'ci', key: ed25519Key(rig.keys), audience: 'agent.test', method: 'POST', path, body })
    const res = await fetch(`${rig.url}${path}`, { method: 'POST', body, headers: { ...headers, 'content-type': 'application/json' } })
    const answer = (await res.json()) as { error?: { code: string; message: string } }
    t.equal(res.status, 507, JSON.stringify(answer))
    t.equal(answer.error?.code, 'disk_full')
    t.equal(await rig.served(), before)
    await stillAnswers('after the refused request')
    await rm(filler)
  })

  await t.test('the disk filling up mid-build fails the deploy; the agent keeps serving and recovers', async (t) => {
    const before = await rig.served()
    const id = await rig.startDeploy(SAMPLE_TAGS.slowBuild)
    await rig.waitFor(id, (d) => d.state === 'BUILDING' || d.finishedAt !== null)
    const filler = await fillDisk(stateDir)
    const done = await rig.waitFor(id, (d) => d.finishedAt !== null, 60_000)
    t.equal(done.state, 'FAILED', JSON.stringify(done.error))
    t.match(done.error?.message, /ENOSPC|No space left/, 'the error names the full disk')
    t.equal(await rig.served(), before, 'the old release serves')
    t.equal(rig.agent().child.exitCode, null, 'the agent is still running')
    await stillAnswers('after the failed build')
    const list = await rig.containers()
    t.same(list.filter((l) => l.endsWith(` ${id}`)), [], `no container of the failed deploy: ${list.join('; ')}`)
    await rm(filler)
    // The journal is whole: a restart reads it, and the deploy is FAILED there too.
    await rig.restart('SIGTERM')
    const reread = await rig.waitFinished(id)
    t.equal(reread.state, 'FAILED', `after a restart: ${JSON.stringify(reread.error)}`)
    const next = await rig.waitFinished(await rig.startDeploy(SAMPLE_TAGS.good2))
    t.equal(next.state, 'SUCCEEDED', JSON.stringify(next.error))
    void statusHeaders
  })
})
