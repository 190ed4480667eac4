// Point-in-time recovery end to end, as a user meets it: a real agent process deploys from a real git repo with real
// Docker and PostgreSQL; release v2's migration (psql in a one-off container) destroys data; one CLI command brings
// the database back as it was the instant before that migration, and GET /v1/status shows the recoverable window.
import { join } from 'node:path'
import t from 'tap'
import { cliEnvFor, runCli } from '../helpers/cli.js'
import { dockerAvailable, ensureBaseImage, ensurePsqlImage, BASE_IMAGE } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { makeGitRepo } from '../helpers/git.js'
import { pgAvailable, query } from '../helpers/pg.js'
import { ids, insert, makePitrDatabase, range } from '../helpers/pitr.js'
import { startAgentRig } from '../helpers/agent-rig.js'
import { sampleReleaseFiles } from '../helpers/sample-app.js'

const skip = skipUnless((await pgAvailable()) && (await dockerAvailable()), 'PostgreSQL and Docker')

/** A release of the sample app on the psql image, whose /migrate.sh runs `sql` against $DATABASE_URL. */
function release(image: string, sql: string): Record<string, string> {
  const files = sampleReleaseFiles({
    migrate: `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -c ${JSON.stringify(sql)}\n`,
  })
  return { ...files, Dockerfile: (files.Dockerfile as string).replace(`FROM ${BASE_IMAGE}`, `FROM ${image}`) }
}

interface EnvPitr {
  window: { earliest: { time: string; lsn: string } | null; latest: { time: string | null; lsn: string } | null }
}

t.test(
  'PITR end to end: a migration destroys data; one CLI command restores the database as it was before it',
  { skip, timeout: 300_000 },
  async (t) => {
    await ensureBaseImage()
    const image = await ensurePsqlImage()
    const user: { stop?: () => Promise<unknown> } = {}
    const d = await makePitrDatabase(t, user)
    const rig = await startAgentRig(t, {
      repo: async (dir) =>
        (
          await makeGitRepo(join(dir, 'repo'), [
            { files: release(image, 'SELECT 1'), tag: 'v1.0.0' },
            { files: release(image, 'DROP TABLE notes; DELETE FROM items WHERE id > 10'), tag: 'v2.0.0' },
          ])
        ).path,
      env: { database: { url: d.url, pitr: { slot: d.slot } } },
      config: (dir) => ({ backups: { dir: join(dir, 'backups'), verify: 'none' } }),
      app: { observe: { seconds: 1, intervalMs: 200, maxFailures: 2 } },
    })
    // Stopped gracefully (its receiver too) before the rig's teardown kills it: an active slot cannot be dropped.
    user.stop = () => rig.agent().stop('SIGTERM')
    t.teardown(user.stop)
    const statusOf = async (): Promise<EnvPitr | null> => {
      const res = await fetch(`${rig.url}/v1/status`, { headers: { authorization: `Bearer ${rig.keys.statusToken}` } })
      const body = (await res.json()) as { apps: Record<string, { envs: Record<string, { pitr: EnvPitr | null }> }> }
      return body.apps[rig.app]?.envs[rig.env]?.pitr ?? null
    }
    // The first base backup is taken at start-up, in the background.
    for (let i = 0; i < 1500 && (await statusOf())?.window.earliest == null; i++) await new Promise((r) => setTimeout(r, 100))
    t.ok((await statusOf())?.window.earliest, 'a base backup at start-up')

    const v1 = await rig.waitFinished(await rig.startDeploy('v1.0.0'))
    t.equal(v1.state, 'SUCCEEDED', `v1 deploys ${v1.state === 'SUCCEEDED' ? '' : JSON.stringify(v1.error)}`)
    // The app's data, written before the next release.
    await d.sql("CREATE TABLE items (id int PRIMARY KEY, name text); CREATE TABLE notes (x text); INSERT INTO notes VALUES ('kept')")
    await insert(d, 1, 100)

    const v2id = await rig.startDeploy('v2.0.0')
    const v2 = await rig.waitFinished(v2id)
    t.equal(v2.state, 'SUCCEEDED', `v2 and its migration deploy ${v2.state === 'SUCCEEDED' ? '' : JSON.stringify(v2.error)}`)
    t.equal(await rig.served(), 'v2.0.0', 'v2 is live')
    t.same(await ids(d.db), range(1, 10), 'the migration deleted rows')
    t.same(await query(d.db, `SELECT 1 FROM pg_tables WHERE tablename = 'notes'`), [], '… and dropped a table')

    const env = cliEnvFor(rig.url, join(rig.dir, 'keys'))
    const cli = await runCli(['restore', '--pitr', '--app', rig.app, '--env', rig.env, '--before-deploy', v2id, '--yes'], env)
    t.equal(cli.code, 0, cli.stderr)
    t.match(cli.stdout, new RegExp(`restored ${d.db} to before deploy ${v2id}`))
    t.same(await ids(d.db), range(1, 100), 'every row written before the migration is back')
    t.same(await query(d.db, 'SELECT x FROM notes'), [{ x: 'kept' }], 'the dropped table is back')

    // The window the status shows: from the base backup to what was received (dated once a check saw it).
    let pitr = await statusOf()
    for (let i = 0; i < 300 && pitr?.window.latest?.time == null; i++) {
      await new Promise((r) => setTimeout(r, 100))
      pitr = await statusOf()
    }
    t.match(pitr, {
      window: { earliest: { time: /Z$/, lsn: /^[0-9A-F]+\/[0-9A-F]+$/ }, latest: { time: /Z$/, lsn: /^[0-9A-F]+\/[0-9A-F]+$/ } },
    })
  },
)
