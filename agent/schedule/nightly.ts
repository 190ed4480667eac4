// A cron job (node-cron, UTC) that never overlaps itself, and catches up once at start-up when the agent was
// down at its last scheduled time.
import cron, { type ScheduledTask } from 'node-cron'
import type { Logger } from '../observability/logger.js'

const MINUTE_MS = 60_000
/** How far back start-up looks for a missed run: a schedule rarer than monthly is not caught up. */
const CATCH_UP_WINDOW_MS = 32 * 24 * 60 * MINUTE_MS

export interface CronJobOptions {
  name: string
  expression: string
  run: () => Promise<void>
  /** When the job last completed (from what it leaves behind, e.g. the newest nightly backup). */
  lastRunAt: () => Promise<Date | null>
  logger: Logger
  onSkipped?: () => void
  now?: () => Date
}

/** The most recent time before `now` that `expression` fires, within the catch-up window; null if none. */
export function previousOccurrence(expression: string, now: Date): Date | null {
  const task = cron.createTask(expression, () => undefined, { timezone: 'Etc/UTC' })
  try {
    let t = Math.floor(now.getTime() / MINUTE_MS) * MINUTE_MS
    if (t === now.getTime()) t -= MINUTE_MS
    for (const stop = now.getTime() - CATCH_UP_WINDOW_MS; t > stop; t -= MINUTE_MS) {
      if (task.match(new Date(t))) return new Date(t)
    }
    return null
  } finally {
    void task.destroy()
  }
}

export class CronJob {
  private task: ScheduledTask | null = null
  private running: Promise<void> | null = null

  constructor(private readonly o: CronJobOptions) {}

  start(): void {
    this.task = cron.schedule(this.o.expression, () => this.tick('scheduled'), { timezone: 'Etc/UTC', name: this.o.name })
  }

  /** Runs once now if the last scheduled time passed while the agent was down. */
  async catchUp(): Promise<boolean> {
    const now = (this.o.now ?? (() => new Date()))()
    const due = previousOccurrence(this.o.expression, now)
    const last = await this.o.lastRunAt()
    if (!due || (last && last >= due)) return false
    this.o.logger.info({ job: this.o.name, due: due.toISOString(), last: last?.toISOString() ?? null }, 'catching up a missed run')
    await this.tick('catch-up')
    return true
  }

  /** One run, unless one is already running: then this tick is skipped, logged and counted. */
  async tick(reason: string): Promise<void> {
    if (this.running) {
      this.o.logger.warn({ job: this.o.name, reason }, 'previous run still busy; this run is skipped')
      this.o.onSkipped?.()
      return
    }
    this.o.logger.info({ job: this.o.name, reason }, 'job started')
    this.running = this.o
      .run()
      .then(
        () => this.o.logger.info({ job: this.o.name }, 'job finished'),
        (err) => this.o.logger.error({ job: this.o.name, err }, 'job failed'),
      )
      .finally(() => {
        this.running = null
      })
    await this.running
  }

  async stop(): Promise<void> {
    await this.task?.destroy()
    this.task = null
    await this.running
  }
}
