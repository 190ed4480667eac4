// PITR never holds the agent up: with its database unreachable, start() returns at once, the env is retried in the
// background, and stop() ends it promptly; a deploy's restore point then fails with a clear error.
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { BackupService } from '../../agent/backup/service.js'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget } from '../../agent/config/targets.js'
import { createLogger } from '../../agent/observability/logger.js'
import { receiverArgs } from '../../agent/pitr/receiver.js'
import { PitrService } from '../../agent/pitr/service.js'
import { tempDir } from '../helpers/tmp.js'

t.test('PITR service: an unreachable database neither blocks start-up nor shutdown', async (t) => {
  const dir = await tempDir(t)
  const config = parseConfig(
    `audience: a
backups: { dir: ${dir}/backups }
apps:
  web:
    repo: /srv/web.git
    envs:
      production: { ref: "tag:v*", ports: [18301, 18302], database: { url: "postgres://web:pw@127.0.0.1:1/web", pitr: {} } }
      staging: { ref: "tag:v*", ports: [18303, 18304], database: { url: "postgres://web:pw@127.0.0.1:1/web2" } }
`,
    {},
    'a',
    dir,
  )
  const logger = createLogger({ level: 'silent' })
  const pitr = new PitrService({ config, logger, backups: new BackupService({ config, logger }), deployPoint: () => undefined })
  t.same(
    pitr.targets().map((x) => x.env),
    ['production'],
  )
  // What an agent killed during a PITR restore left: its dump, and its recovery work dir under the temp dir.
  const root = join(dir, 'backups', 'pitr', 'web_production')
  await mkdir(root, { recursive: true })
  await writeFile(join(root, 'restore-20270101T000000Z-1.dump'), 'PGDMP')
  const prefix = `deploy-agent-pitr-${createHash('sha256').update(root).digest('hex').slice(0, 12)}-`
  const work = await mkdtemp(join(tmpdir(), prefix))
  const other = await mkdtemp(join(tmpdir(), 'deploy-agent-pitr-000000000000-'))
  t.teardown(() => rm(other, { recursive: true, force: true }))
  const started = Date.now()
  pitr.start()
  t.ok(Date.now() - started < 100, 'start() does not wait for the database')
  const staging = findTarget(config, 'web', 'staging')
  t.equal(await pitr.restorePoint(staging, 'd_abcdefghijkl'), null, 'an env without PITR takes no restore point')
  await t.rejects(pitr.restorePoint(findTarget(config, 'web', 'production'), 'd_abcdefghijkl'), { message: /ECONNREFUSED|connect/ })
  await t.rejects(pitr.restore(staging, { lsn: '0/1' }), { code: 'pitr_disabled' })
  // Two restores of one env at once: the second is refused while the first runs (here it fails on the database).
  const production = findTarget(config, 'web', 'production')
  const first = pitr.restore(production, { lsn: '0/1' })
  await t.rejects(pitr.restore(production, { lsn: '0/1' }), { code: 'pitr_busy' })
  await t.rejects(first, { message: /ECONNREFUSED|connect/ })
  // Removed in the background, before the env's first connection attempt.
  for (let i = 0; i < 100 && existsSync(work); i++) await new Promise((r) => setTimeout(r, 20))
  t.same(
    (await readdir(root)).filter((n) => n.endsWith('.dump')),
    [],
    'the stale dump is removed',
  )
  t.notOk(existsSync(work), 'and the work dir')
  t.ok(existsSync(other), "another env's is not touched")
  const stopping = Date.now()
  await pitr.stop()
  t.ok(Date.now() - stopping < 1000, 'stop() ends the retries at once')
})

t.test('PITR receiver: pg_receivewal reports each second, never prompts, and gets no password on its command line', async (t) => {
  const argv = receiverArgs({ conn: { url: 'postgresql://agent@127.0.0.1:5432/app' } as never, slot: 's1', walDir: '/w' })
  t.ok(argv.includes('--status-interval=1'), 'a finished segment shows in the lag within a second, not 10')
  t.ok(argv.includes('--no-password'))
  t.notOk(argv.some((a) => /password=|:[^@/]+@/.test(a)))
})
