// A PITR problem is announced only once the status shows it: an operator (or a script) that reads GET /v1/status
// on a `pitr.receiver_down` notification finds the problem there, never the check before it.
import t from 'tap'
import { createLogger } from '../../agent/observability/logger.js'
import { PitrMonitor } from '../../agent/pitr/monitor.js'
import { ensurePitrDirs, pitrPaths } from '../../agent/pitr/paths.js'
import { tempDir } from '../helpers/tmp.js'

t.test('PitrMonitor: the status already shows a problem when it is announced', async (t) => {
  const paths = pitrPaths(await tempDir(t), 'shop', 'prod')
  await ensurePitrDirs(paths)
  const seenOnNotice: string[][] = []
  const monitor: PitrMonitor = new PitrMonitor({
    app: 'shop',
    env: 'prod',
    slot: 'deploy_agent_shop_prod',
    paths,
    conn: () => Promise.reject(new Error('the database does not answer')),
    receiver: () => null,
    logger: createLogger({ level: 'silent' }),
    notify: () => seenOnNotice.push((monitor.status?.problems ?? []).map((p) => p.kind)),
    downAfterMs: 0,
  })
  const status = await monitor.check()
  t.match(status.problems, [{ kind: 'receiver_down' }])
  t.same(seenOnNotice, [['receiver_down']], 'announced once, with the status saying so')
  await monitor.check()
  t.equal(seenOnNotice.length, 1, 'not again while it lasts')
})
