// One supervised `pg_receivewal` per env: started with an argument array (the password in PGPASSWORD, never argv),
// restarted with a doubling back-off whenever it exits, stopped with the agent. It streams from the env's slot, so
// nothing is lost while it is down: the server keeps the WAL for the slot.
import { spawn, type ChildProcess } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '../observability/logger.js'
import { toolEnv, type Connection } from '../pg/connection.js'

export interface ReceiverOptions {
  conn: Connection
  slot: string
  walDir: string
  logger: Logger
  pgReceivewal?: string
  /** First back-off after an exit; doubles up to maxBackoffMs, and starts over after a run of a minute. */
  backoffMs?: number
  maxBackoffMs?: number
}

/** pg_receivewal's argv: no password in it (PGPASSWORD), never a prompt (-w). */
export function receiverArgs(o: Pick<ReceiverOptions, 'conn' | 'slot' | 'walDir' | 'pgReceivewal'>): string[] {
  return [
    o.pgReceivewal ?? 'pg_receivewal',
    `--dbname=${o.conn.url}`,
    `--slot=${o.slot}`,
    '--synchronous',
    // Reports a finished segment within a second: at its default (10 s) the lag shows a whole segment for up to
    // 10 s after every base backup's WAL switch on a quiet server (measured by bench/pitr.ts).
    '--status-interval=1',
    '--compress=gzip',
    `--directory=${o.walDir}`,
    '--no-loop',
    '--no-password',
  ]
}

const STEADY_MS = 60_000

export class WalReceiver {
  private child: ChildProcess | null = null
  private stopped = false
  private loop: Promise<void> | null = null
  private wake: (() => void) | null = null
  /** Exits so far (tests and status read it). */
  restarts = 0

  constructor(private readonly o: ReceiverOptions) {}

  get pid(): number | undefined {
    return this.child?.pid
  }

  /** pg_receivewal's process is alive (it may still be connecting). */
  get running(): boolean {
    const child = this.child
    return child !== null && child.pid !== undefined && child.exitCode === null && child.signalCode === null
  }

  start(): void {
    this.loop ??= this.run()
  }

  private async run(): Promise<void> {
    const first = this.o.backoffMs ?? 1000
    let backoff = first
    while (!this.stopped) {
      const started = Date.now()
      const exit = await this.once()
      if (this.stopped) break
      this.restarts++
      if (Date.now() - started > STEADY_MS) backoff = first
      this.o.logger.warn({ slot: this.o.slot, ...exit, retryInMs: backoff }, 'pg_receivewal exited; restarting')
      await new Promise<void>((resolve) => {
        this.wake = resolve
        void sleep(backoff).then(resolve)
      })
      backoff = Math.min(backoff * 2, this.o.maxBackoffMs ?? 60_000)
    }
  }

  private once(): Promise<{ code: number | null; signal: string | null; stderr: string }> {
    const [file, ...args] = receiverArgs(this.o)
    const child = spawn(file as string, args, { env: toolEnv(this.o.conn), stdio: ['ignore', 'ignore', 'pipe'] })
    this.child = child
    let stderr = ''
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (text: string) => {
      stderr = (stderr + text).slice(-2048)
    })
    this.o.logger.info({ slot: this.o.slot, pid: child.pid }, 'pg_receivewal started')
    return new Promise((resolve) => {
      child.once('error', (err) => resolve({ code: null, signal: null, stderr: err.message }))
      child.once('close', (code, signal) => resolve({ code, signal, stderr: stderr.trim() }))
    })
  }

  /** Stops the child (SIGTERM: it flushes and exits) and the restarts. */
  async stop(): Promise<void> {
    this.stopped = true
    this.wake?.()
    const child = this.child
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    await this.loop
  }
}
