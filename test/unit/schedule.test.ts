import t from 'tap'
import { createLogger } from '../../agent/observability/logger.js'
import { CronJob, previousOccurrence } from '../../agent/schedule/nightly.js'

const logger = createLogger({ level: 'silent' })

t.test('previousOccurrence: the last time a UTC cron fired before now', async (t) => {
  t.equal(previousOccurrence('0 3 * * *', new Date('2026-11-25T15:00:00Z'))?.toISOString(), '2026-11-25T03:00:00.000Z')
  t.equal(previousOccurrence('0 3 * * *', new Date('2026-11-25T02:59:00Z'))?.toISOString(), '2026-11-24T03:00:00.000Z')
  t.equal(
    previousOccurrence('0 3 * * *', new Date('2026-11-25T03:00:00Z'))?.toISOString(),
    '2026-11-24T03:00:00.000Z',
    'now itself is not "before"',
  )
  t.equal(previousOccurrence('0 3 29 2 *', new Date('2026-11-25T00:00:00Z')), null, 'nothing within the catch-up window')
})

t.test('CronJob: catches up once when the last run is older than the last scheduled time', async (t) => {
  let runs = 0
  const job = (last: Date | null) =>
    new CronJob({
      name: 'nightly',
      expression: '0 3 * * *',
      run: async () => void runs++,
      lastRunAt: async () => last,
      logger,
      now: () => new Date('2026-11-25T15:00:00Z'),
    })
  t.equal(await job(new Date('2026-11-24T03:00:05Z')).catchUp(), true, 'yesterday’s run is older than today’s 03:00')
  t.equal(await job(new Date('2026-11-25T03:00:05Z')).catchUp(), false, 'today’s run happened')
  t.equal(await job(null).catchUp(), true, 'never ran')
  t.equal(runs, 2)
})

t.test('CronJob: a tick while a run is busy is skipped and counted', async (t) => {
  let release!: () => void
  let skipped = 0
  const job = new CronJob({
    name: 'nightly',
    expression: '0 3 * * *',
    run: () => new Promise<void>((r) => (release = r)),
    lastRunAt: async () => null,
    logger,
    onSkipped: () => skipped++,
  })
  const first = job.tick('scheduled')
  await job.tick('scheduled')
  t.equal(skipped, 1)
  release()
  await first
  job.start()
  await job.stop()
})
