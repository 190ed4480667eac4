// scripts/ci-deploy.sh, the deploy step of every CI system, against a real agent process: a temp git repo with
// tags, images built by the Docker engine, real nginx in front of a production env and of a staging env that
// requires approval. The script finds the real `deploy-agent` binary on PATH, as on a CI runner.
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, symlink } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import t, { type Test } from 'tap'
import { AUDIENCE } from '../helpers/agent.js'
import { BIN, runBashScript, runCli, type CliResult } from '../helpers/cli.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import type { NginxInstance } from '../helpers/nginx.js'
import { SAMPLE_TAGS, servedVersion } from '../helpers/sample-app.js'
import { startTwoEnvAgent } from '../helpers/agent-rig.js'

const SCRIPT = resolve(import.meta.dirname, '../../scripts/ci-deploy.sh')
const app = `cishop-${randomBytes(3).toString('hex')}`
const both = (r: CliResult) => `${r.stdout}\n${r.stderr}`

interface Fixture {
  url: string
  /** What a CI job sets: the key and the status token as secret values, the CLI on PATH. */
  ciEnv: NodeJS.ProcessEnv
  keysDir: string
  statusToken: string
  /** Where the script may put its temporary key file. */
  scratch: string
  production: NginxInstance
  staging: NginxInstance
}

async function setUp(t: Test): Promise<Fixture> {
  await ensureBaseImage()
  const { dir, url, keys, production, staging } = await startTwoEnvAgent(t, app, 2)
  const binDir = join(dir, 'ci-bin')
  await mkdir(binDir)
  await symlink(BIN, join(binDir, 'deploy-agent'))
  const scratch = join(dir, 'scratch')
  await mkdir(scratch)
  return {
    url,
    keysDir: keys.dir,
    statusToken: keys.statusToken,
    scratch,
    ciEnv: {
      PATH: `${binDir}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      RUNNER_TEMP: scratch, // where GitHub runners keep temporary files; the script writes the key there
      DEPLOY_AGENT_URL: url,
      DEPLOY_AGENT_AUDIENCE: AUDIENCE,
      DEPLOY_AGENT_KEY_ID: keys.ed25519.id,
      DEPLOY_AGENT_KEY: keys.ed25519.privatePem,
      DEPLOY_AGENT_KEY_FILE: '',
      DEPLOY_AGENT_STATUS_TOKEN: keys.statusToken,
      DEPLOY_AGENT_STATUS_TOKEN_FILE: '',
      NO_COLOR: '1',
    },
    production,
    staging,
  }
}

t.test('ci-deploy.sh: a missing variable is named and nothing is sent', async (t) => {
  const cleared = {
    DEPLOY_AGENT_URL: '',
    DEPLOY_AGENT_KEY_ID: '',
    DEPLOY_AGENT_KEY: '',
    DEPLOY_AGENT_KEY_FILE: '',
    DEPLOY_AGENT_STATUS_TOKEN: '',
    DEPLOY_AGENT_STATUS_TOKEN_FILE: '',
    DEPLOY_APP: '',
    DEPLOY_ENV: '',
    DEPLOY_REF: '',
  }
  const none = await runBashScript(SCRIPT, [], cleared)
  t.equal(none.code, 2, 'exit 2', { output: both(none) })
  for (const name of ['app', 'env', 'ref', 'DEPLOY_AGENT_URL', 'DEPLOY_AGENT_KEY_ID', 'DEPLOY_AGENT_KEY', 'DEPLOY_AGENT_STATUS_TOKEN']) {
    t.match(none.stderr, new RegExp(`^ {2}${name}[ :]`, 'm'), `${name} is named`)
  }
  const onlyUrl = await runBashScript(SCRIPT, ['shop', 'production', 'v1.0.0'], {
    ...cleared,
    DEPLOY_AGENT_KEY_ID: 'ci',
    DEPLOY_AGENT_KEY: 'secret',
    DEPLOY_AGENT_STATUS_TOKEN: 'token',
  })
  t.equal(onlyUrl.code, 2, 'exit 2', { output: both(onlyUrl) })
  t.match(onlyUrl.stderr, /^ci-deploy: missing:\n {2}DEPLOY_AGENT_URL: the agent's URL/)
  t.equal(onlyUrl.stderr.match(/^ {2}\S/gm)?.length, 1, 'only the missing one is named')
  t.equal(onlyUrl.stdout, '', 'nothing was deployed')
  const noCli = await runBashScript(SCRIPT, ['shop', 'production', 'v1.0.0'], {
    ...cleared,
    DEPLOY_AGENT_URL: 'http://127.0.0.1:9',
    DEPLOY_AGENT_KEY_ID: 'ci',
    DEPLOY_AGENT_KEY: 'secret',
    DEPLOY_AGENT_STATUS_TOKEN: 'token',
    DEPLOY_AGENT_CLI: 'no-such-deploy-agent',
  })
  t.equal(noCli.code, 2, 'exit 2', { output: both(noCli) })
  t.match(noCli.stderr, /the deploy-agent CLI \(no-such-deploy-agent\) was not found/)
})

t.test('ci-deploy.sh against a real agent, Docker and nginx', { skip: skipUnless(await dockerAvailable(), 'docker') }, async (t) => {
  const f = await setUp(t)
  const ci = (args: string[], env: NodeJS.ProcessEnv = {}) => runBashScript(SCRIPT, args, { ...f.ciEnv, ...env })

  const good = await ci([app, 'production', SAMPLE_TAGS.good], { DEPLOY_REASON: 'ci run 1' })
  t.equal(good.code, 0, 'exit 0', { output: both(good) })
  t.match(good.stdout, /RESOLVING[\s\S]*BUILDING[\s\S]*SWITCHING[\s\S]*SUCCEEDED/, 'the deploy is followed to its end')
  t.match(good.stdout, new RegExp(`ci-deploy: ${app}/production v1\\.0\\.0 SUCCEEDED$`, 'm'))
  t.equal(await servedVersion(f.production), SAMPLE_TAGS.good, 'nginx serves the tag')
  t.same(await readdir(f.scratch), [], 'the key file written from DEPLOY_AGENT_KEY is gone')

  await t.test('a tag that does not exist exits non-zero; the live release stays', async (t) => {
    const missing = await ci([app, 'production', 'v9.9.9'])
    t.not(missing.code, 0, 'non-zero exit', { output: both(missing) })
    t.match(missing.stdout, /FAILED/)
    t.match(missing.stderr, /ci-deploy: the deploy of .* v9\.9\.9 did not succeed/)
    t.equal(await servedVersion(f.production), SAMPLE_TAGS.good)
  })

  await t.test('a release that never gets healthy exits non-zero; the live release stays', async (t) => {
    const bad = await ci([app, 'production', SAMPLE_TAGS.neverHealthy])
    t.not(bad.code, 0, 'non-zero exit', { output: both(bad) })
    t.match(bad.stderr, /health_check_failed/)
    t.equal(await servedVersion(f.production), SAMPLE_TAGS.good)
  })

  await t.test("a pinned commit that is not the tag's is refused", async (t) => {
    const pinned = await ci([app, 'production', SAMPLE_TAGS.good2], { DEPLOY_COMMIT: '0'.repeat(40) })
    t.not(pinned.code, 0, 'non-zero exit', { output: both(pinned) })
    t.match(both(pinned), /commit_mismatch/)
    t.equal(await servedVersion(f.production), SAMPLE_TAGS.good)
  })

  await t.test('an env with approval: the script follows the held deploy until `deploy-agent approve`', async (t) => {
    // Key and token given as files this time, as other CI systems store secrets.
    const following = ci([], {
      DEPLOY_APP: app,
      DEPLOY_ENV: 'staging',
      DEPLOY_REF: SAMPLE_TAGS.good2,
      DEPLOY_AGENT_KEY: '',
      DEPLOY_AGENT_KEY_FILE: join(f.keysDir, 'ci.key'),
      DEPLOY_AGENT_STATUS_TOKEN: '',
      DEPLOY_AGENT_STATUS_TOKEN_FILE: join(f.keysDir, 'status.token'),
    })
    let id: string | undefined
    for (let i = 0; i < 300 && !id; i++) {
      const res = await fetch(`${f.url}/v1/deploys?app=${app}&env=staging&limit=1`, {
        headers: { authorization: `Bearer ${f.statusToken}` },
      })
      const { deploys } = (await res.json()) as { deploys: Array<{ id: string; state: string }> }
      if (deploys[0]?.state === 'AWAITING_APPROVAL') id = deploys[0].id
      else await new Promise((r) => setTimeout(r, 100))
    }
    if (!id) throw new Error('the deploy never reached AWAITING_APPROVAL')
    // A person approves with their own key: CI's key may not approve (it has no allow.approve, and requested the deploy).
    const approved = await runCli(['approve', id], {
      ...f.ciEnv,
      DEPLOY_AGENT_KEY_ID: 'approver',
      DEPLOY_AGENT_KEY_FILE: join(f.keysDir, 'approver.key'),
    })
    t.equal(approved.code, 0, 'approved', { output: both(approved) })
    const result = await following
    t.equal(result.code, 0, 'exit 0 once approved and live', { output: both(result) })
    t.match(result.stdout, new RegExp(`awaiting approval: run \`deploy-agent approve ${id}\``))
    t.match(result.stdout, /RESOLVING[\s\S]*SUCCEEDED/)
    t.equal(await servedVersion(f.staging), SAMPLE_TAGS.good2)
    t.equal((await readFile(join(f.keysDir, 'ci.key'), 'utf8')).includes('PRIVATE KEY'), true, 'a given key file is left alone')
  })
})
