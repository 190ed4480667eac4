// The deploy commands of the real binary against a real agent process: a temp git repo with tags, images built by
// the Docker engine, two real nginx instances (production, and a staging env that requires approval).
import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { approverEnvFor, cliEnvFor, runCli, type CliResult } from '../helpers/cli.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import type { NginxInstance } from '../helpers/nginx.js'
import { SAMPLE_TAGS, servedVersion } from '../helpers/sample-app.js'
import { startTwoEnvAgent } from '../helpers/agent-rig.js'

const app = `clishop-${randomBytes(3).toString('hex')}`

interface Fixture {
  url: string
  cliEnv: NodeJS.ProcessEnv
  approverEnv: NodeJS.ProcessEnv
  statusToken: string
  production: NginxInstance
  staging: NginxInstance
}

async function setUp(t: Test): Promise<Fixture> {
  await ensureBaseImage()
  const { url, keys, production, staging } = await startTwoEnvAgent(t, app, 3)
  return {
    url,
    statusToken: keys.statusToken,
    cliEnv: cliEnvFor(url, keys.dir),
    approverEnv: approverEnvFor(url, keys.dir),
    production,
    staging,
  }
}

const served = servedVersion

/** The deploy id a `deploy`/`rollback` command printed first. */
function idOf(result: CliResult): string {
  const id = /^(d_[a-z0-9]+)/m.exec(result.stdout)?.[1]
  if (!id) throw new Error(`no deploy id in:\n${result.stdout}\n${result.stderr}`)
  return id
}

const both = (r: CliResult) => `${r.stdout}\n${r.stderr}`

t.test('CLI deploy commands against a real agent, Docker and nginx', { skip: skipUnless(await dockerAvailable(), 'docker') }, async (t) => {
  const f = await setUp(t)
  const cli = (...args: string[]) => runCli(args, f.cliEnv)
  const approve = (id: string) => runCli(['approve', id], f.approverEnv)

  for (const command of ['deploy', 'rollback', 'approve', 'logs', 'deploys', 'releases']) {
    const help = await cli(command, '--help')
    t.match(help.stdout, /Example:\n {2}deploy-agent /, `${command} --help has an example`)
  }

  const first = await cli('deploy', app, 'production', SAMPLE_TAGS.good, '--reason', 'first release', '--follow')
  t.equal(first.code, 0, `exit code 0`, { output: both(first) })
  const firstId = idOf(first)
  t.match(first.stdout, /^\d\d:\d\d:\d\d {2}RESOLVING$/m, 'state changes are printed flush left with their time')
  t.match(first.stdout, /BUILDING[\s\S]*MIGRATING[\s\S]*VERIFYING[\s\S]*SWITCHING[\s\S]*OBSERVING[\s\S]*SUCCEEDED/)
  t.match(first.stdout, /migrate +migrated to v1\.0\.0/, 'other events are printed compactly')
  t.match(first.stdout, new RegExp(`${firstId} SUCCEEDED: ${app}/production v1\\.0\\.0`))
  t.notMatch(first.stdout, /heartbeat/)
  t.equal(await served(f.production), SAMPLE_TAGS.good)

  await t.test('releases lists the live release', async (t) => {
    const table = await cli('releases', app, 'production')
    t.equal(table.code, 0, `exit code 0`, { output: both(table) })
    t.match(table.stdout, /^RELEASE\s+COMMIT\s+CREATED\s+LIVE\s+OUTCOME\s+DEPLOY\n/)
    t.match(table.stdout, /^v1\.0\.0\s+[0-9a-f]{12}\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\s+\*\s+live\s+d_[a-z0-9]+$/m)
    const json = await cli('releases', app, 'production', '--json')
    const body = JSON.parse(json.stdout) as { releases: Array<{ release: string; live: boolean }>; keepReleases: number }
    t.same(
      body.releases.filter((r) => r.live).map((r) => r.release),
      [SAMPLE_TAGS.good],
    )
    t.equal(body.keepReleases, 3)
  })

  await t.test('deploy then rollback: nginx serves the previous release again', async (t) => {
    const next = await cli('deploy', app, 'production', SAMPLE_TAGS.good2, '--follow')
    t.equal(next.code, 0, `exit code 0`, { output: both(next) })
    t.equal(await served(f.production), SAMPLE_TAGS.good2)
    const back = await cli('rollback', app, 'production', '--follow')
    t.equal(back.code, 0, `exit code 0`, { output: both(back) })
    t.match(back.stdout, new RegExp(`^d_[a-z0-9]+ {2}QUEUED {2}rollback ${app}/production to v1\\.0\\.0$`, 'm'))
    t.match(back.stdout, /SWITCHING[\s\S]*SUCCEEDED/)
    t.equal(await served(f.production), SAMPLE_TAGS.good)
    const again = await cli('rollback', app, 'production', '--to', SAMPLE_TAGS.good)
    t.equal(again.code, 1, 'rolling back to the live release is refused')
    t.match(again.stderr, /already_live/)
  })

  await t.test('a release that never gets healthy exits 1 with the error and the last log lines', async (t) => {
    const bad = await cli('deploy', app, 'production', SAMPLE_TAGS.neverHealthy, '--follow')
    t.equal(bad.code, 1, `exit code 1`, { output: both(bad) })
    t.match(bad.stdout, /FAILED {2}health_check_failed: /)
    t.match(bad.stderr, /^error: health_check_failed: /m)
    t.match(bad.stderr, /last \d+ log lines:\n/)
    t.equal(await served(f.production), SAMPLE_TAGS.good, 'the old release keeps serving')
  })

  await t.test('logs prints a finished deploy, formatted or as NDJSON', async (t) => {
    const logs = await cli('logs', firstId)
    t.equal(logs.code, 0, logs.stderr)
    t.match(logs.stdout, /RESOLVING[\s\S]*BUILDING[\s\S]*SUCCEEDED/)
    const raw = await cli('logs', firstId, '--json')
    const events = raw.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { event: string; state?: string })
    t.same(events.filter((e) => e.event === 'state').at(-1)?.state, 'SUCCEEDED')
    const followed = await cli('logs', '-f', firstId)
    t.equal(followed.code, 0, 'following a finished deploy ends at once')
    t.match(followed.stdout, /SUCCEEDED/)
  })

  await t.test('deploys lists the history', async (t) => {
    const json = await cli('deploys', '--json')
    t.equal(json.code, 0, json.stderr)
    const { deploys } = JSON.parse(json.stdout) as { deploys: Array<{ id: string; app: string; state: string }> }
    t.ok(deploys.some((d) => d.id === firstId && d.state === 'SUCCEEDED'))
    const table = await cli('deploys', '--app', app, '--env', 'production', '--limit', '2')
    t.equal(table.code, 0, table.stderr)
    const lines = table.stdout.trim().split('\n')
    t.match(lines[0], /^ID\s+KIND\s+APP\s+ENV\s+REF\s+STATE\s+CREATED$/)
    t.equal(lines.length, 3, 'the header and --limit rows')
    t.match(lines[1], new RegExp(`^d_[a-z0-9]+\\s+deploy\\s+${app}\\s+production\\s+v1\\.2\\.0\\s+FAILED\\s+\\d{4}-`), 'newest first')
    t.match(
      lines[2],
      new RegExp(`^d_[a-z0-9]+\\s+rollback\\s+${app}\\s+production\\s+v1\\.0\\.0\\s+SUCCEEDED\\s+\\d{4}-`),
      'then the rollback',
    )
    const usage = await cli('deploys', '--limit', '0')
    t.equal(usage.code, 2, 'a bad --limit is a usage error')
  })

  await t.test('an env that requires approval waits until `approve`', async (t) => {
    const held = await cli('deploy', app, 'staging', SAMPLE_TAGS.good)
    t.equal(held.code, 0, `exit code 0`, { output: both(held) })
    t.match(held.stdout, /AWAITING_APPROVAL/)
    t.match(held.stdout, /deploy-agent approve d_/)
    const id = idOf(held)
    const pending = await cli('logs', id)
    t.match(pending.stdout, /awaiting approval/)
    const self = await cli('approve', id)
    t.equal(self.code, 1, 'the requesting key cannot approve', { output: both(self) })
    t.match(self.stderr, /approve_not_allowed/, "CI's key has no allow.approve")
    const approved = await approve(id)
    t.equal(approved.code, 0, `exit code 0`, { output: both(approved) })
    t.match(approved.stdout, new RegExp(`^${id} {2}QUEUED {2}approved$`, 'm'))
    const record = (await (await fetch(`${f.url}/v1/deploys/${id}`, { headers: { authorization: `Bearer ${f.statusToken}` } })).json()) as {
      keyId: string
      approvedBy: string
    }
    t.match(record, { keyId: 'ci', approvedBy: 'approver' }, 'the record names who requested and who approved')
    const followed = await cli('logs', id, '-f')
    t.equal(followed.code, 0, `exit code 0`, { output: both(followed) })
    t.match(followed.stdout, /RESOLVING[\s\S]*SUCCEEDED/)
    t.equal(await served(f.staging), SAMPLE_TAGS.good)
    const twice = await approve(id)
    t.equal(twice.code, 1, 'a deploy is approved once')
    t.match(twice.stderr, /not_awaiting_approval/)
  })

  await t.test('deploy --follow keeps following a deploy held for approval', async (t) => {
    const following = cli('deploy', app, 'staging', SAMPLE_TAGS.good2, '--follow')
    let id: string | undefined
    for (let i = 0; i < 200 && !id; i++) {
      const res = await fetch(`${f.url}/v1/deploys?app=${app}&env=staging&limit=1`, {
        headers: { authorization: `Bearer ${f.statusToken}` },
      })
      const { deploys } = (await res.json()) as { deploys: Array<{ id: string; state: string }> }
      if (deploys[0]?.state === 'AWAITING_APPROVAL') id = deploys[0].id
      else await new Promise((r) => setTimeout(r, 100))
    }
    if (!id) throw new Error('the deploy never reached AWAITING_APPROVAL')
    await new Promise((r) => setTimeout(r, 500))
    const approved = await approve(id)
    t.equal(approved.code, 0, `exit code 0`, { output: both(approved) })
    const result = await following
    t.equal(result.code, 0, `exit code 0`, { output: both(result) })
    t.match(result.stdout, new RegExp(`awaiting approval: run \`deploy-agent approve ${id}\``))
    t.match(result.stdout, /RESOLVING[\s\S]*SUCCEEDED/)
    t.equal(await served(f.staging), SAMPLE_TAGS.good2)
  })

  await t.test('a stream needs the status token; a missing one is named', async (t) => {
    const env = { ...f.cliEnv, DEPLOY_AGENT_STATUS_TOKEN_FILE: '' }
    const noToken = await runCli(['logs', '-f', firstId], env)
    t.equal(noToken.code, 1)
    t.match(noToken.stderr, /status token/)
  })
})
