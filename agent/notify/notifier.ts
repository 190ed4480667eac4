// Notifications to Slack, Discord and generic webhooks. Sent in the background with a timeout and a few retries;
// a dead endpoint is logged, never allowed to block or fail a deploy or a backup.
import { createHmac } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Config } from '../config/schema.js'
import type { Logger } from '../observability/logger.js'
import { endedByUnconfirmedReload, type DeployEvent } from '../observability/deploy-feed.js'
import { Scrubber } from '../observability/scrub.js'

export interface Notice {
  event:
    | 'deploy.started'
    | 'deploy.succeeded'
    | 'deploy.failed'
    | 'deploy.rolled_back'
    | 'backup.failed'
    | 'proxy.reload_unconfirmed'
    | 'traffic.errors'
    | 'traffic.down'
    | 'pitr.slot_lost'
    | 'pitr.receiver_down'
    | 'pitr.disk_full'
  app: string
  env: string
  release?: string | null
  commit?: string | null
  durationMs?: number
  reason?: string | null
  id?: string | null
  /** What to do about it, when the agent knows. */
  hint?: string
}

type Target = Config['notify'][number]

const TIMEOUT_MS = 5_000
const ATTEMPTS = 3

/** One line a person reads in a chat channel. */
export function describeNotice(n: Notice): string {
  const what = {
    'deploy.started': 'deploy started',
    'deploy.succeeded': 'deploy succeeded',
    'deploy.failed': 'deploy FAILED',
    'deploy.rolled_back': 'deploy ROLLED BACK',
    'backup.failed': 'backup FAILED',
    'proxy.reload_unconfirmed': 'nginx reload NOT CONFIRMED',
    'traffic.errors': 'live release is ANSWERING ERRORS',
    'traffic.down': 'live release is DOWN',
    'pitr.slot_lost': 'PITR replication slot LOST',
    'pitr.receiver_down': 'PITR WAL receiver DOWN',
    'pitr.disk_full': 'PITR WAL disk FULL',
  }[n.event]
  const parts = [`${n.app}/${n.env}: ${what}`]
  if (n.release) parts.push(`release ${n.release}${n.commit ? ` (${n.commit.slice(0, 12)})` : ''}`)
  if (n.durationMs !== undefined) parts.push(`${Math.round(n.durationMs / 1000)} s`)
  if (n.reason) parts.push(`reason: ${n.reason}`)
  if (n.hint) parts.push(`hint: ${n.hint}`)
  return parts.join(' · ')
}

const RELOAD_HINT =
  'nginx did not run the new config, so every switch of this env fails until that is fixed; with the systemd reload ' +
  'helper: `systemctl status deploy-agent-nginx-reload.path deploy-agent-nginx-reload.service`, after a failure ' +
  '`systemctl reset-failed deploy-agent-nginx-reload.path deploy-agent-nginx-reload.service` and ' +
  '`systemctl start deploy-agent-nginx-reload.path`'

/**
 * The extra notice for a deploy that an unconfirmed nginx reload ended (sent beside its deploy.failed or
 * deploy.rolled_back): the reload helper being stuck blocks every later deploy of the env, so it is named apart.
 */
export function reloadUnconfirmedNotice(event: DeployEvent): Notice | null {
  if (!endedByUnconfirmedReload(event)) return null
  const { app, env, release, commit, error, id } = event.deploy
  return { event: 'proxy.reload_unconfirmed', app, env, release, commit, reason: error?.message ?? null, id, hint: RELOAD_HINT }
}

/** The request body each kind of endpoint expects. */
export function notificationBody(target: Target, n: Notice): string {
  if (target.kind === 'slack') return JSON.stringify({ text: describeNotice(n) })
  if (target.kind === 'discord') return JSON.stringify({ content: describeNotice(n) })
  return JSON.stringify({ ...n, text: describeNotice(n), at: new Date().toISOString() })
}

export class Notifier {
  private readonly pending = new Set<Promise<void>>()

  constructor(
    private readonly targets: readonly Target[],
    private readonly logger: Logger,
    /** Every notice leaves through it: reasons carry migration output and pg tool stderr. */
    private readonly scrubber: Pick<Scrubber, 'value'> = new Scrubber(),
  ) {}

  /** Queues the notice to every target and returns at once. */
  send(notice: Notice): void {
    for (const target of this.targets) {
      const delivery = this.deliver(target, notice).finally(() => this.pending.delete(delivery))
      this.pending.add(delivery)
    }
  }

  /** Waits for deliveries under way (graceful stop, tests). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.pending])
  }

  private async deliver(target: Target, notice: Notice): Promise<void> {
    const body = notificationBody(target, this.scrubber.value(notice))
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    if (target.kind === 'webhook' && target.secretFile) {
      // The receiver checks the body against the shared secret, as CI's requests are checked here.
      const secret = (await readFile(target.secretFile, 'utf8')).trim()
      headers['x-deploy-agent-signature'] = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`
    }
    for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
      try {
        const res = await fetch(target.url, { method: 'POST', headers, body, signal: AbortSignal.timeout(TIMEOUT_MS) })
        await res.arrayBuffer()
        if (res.ok) return
        if (res.status < 500 && res.status !== 429) throw new Error(`HTTP ${res.status} (not retried)`)
        throw new Error(`HTTP ${res.status}`)
      } catch (err) {
        const final = attempt === ATTEMPTS || String(err).includes('not retried')
        if (final) {
          this.logger.warn({ kind: target.kind, event: notice.event, err }, 'notification not delivered')
          return
        }
        await sleep(250 * 2 ** attempt)
      }
    }
  }
}
