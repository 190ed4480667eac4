// PITR never holds the agent up: with its database unreachable, start() returns at once, the env is retried in the
// background, and stop() ends it promptly; a deploy's restore point then fails with a clear error.
import t from 'tap'
import { BackupService } from '../../agent/backup/service.js'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget } from '../../agent/config/targets.js'
import { createLogger } from '../../agent/observability/logger.js'
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
  const stopping = Date.now()
  await pitr.stop()
  t.ok(Date.now() - stopping < 1000, 'stop() ends the retries at once')
})
