// Error reporting to Sentry, only when `sentry.dsn` is configured. The SDK is imported lazily (it takes over a
// second to load), so an agent without a DSN never loads it and one with a DSN starts listening without waiting
// for it. It uses its own client and scope, not the SDK's global hub, and no default integrations: only what the
// agent captures is sent, after the scrubber has removed secrets.
import { readFile } from 'node:fs/promises'
import type { Config } from '../config/schema.js'
import { readEnvFile } from '../config/envfile.js'
import type { DeployEvent } from './deploy-feed.js'
import { AgentError } from '../errors.js'
import type { Logger } from './logger.js'
import { envSecretValues, Scrubber } from './scrub.js'

/**
 * What an event is searchable by in Sentry. The app's release is `appRelease`: Sentry keeps the `release` tag for
 * the release of the reporting program (here `deploy-agent@<version>`).
 */
export interface ErrorTags {
  app: string
  env: string
  appRelease?: string | null
  deployId?: string
  backupId?: string | null
  /** the error code (`health_check_failed`, `verify_failed` …) */
  code?: string
  kind?: string
  state?: string
}

export interface ErrorReport {
  err: unknown
  tags: ErrorTags
}

export interface ErrorReporter {
  readonly enabled: boolean
  capture(err: unknown, tags: ErrorTags): void
  /** Sends what is pending (at most `timeoutMs`) and stops; for a graceful stop. */
  close(timeoutMs?: number): Promise<void>
}

export const noErrorReporter: ErrorReporter = {
  enabled: false,
  capture: () => undefined,
  close: async () => undefined,
}

/** A deploy that ended FAILED or ROLLED_BACK, as an error with a stable name Sentry groups by. */
export class DeployEndedBadly extends Error {
  constructor(
    readonly state: string,
    readonly code: string,
    message: string,
  ) {
    super(message)
    this.name = state === 'ROLLED_BACK' ? 'DeployRolledBack' : 'DeployFailed'
  }
}

/** The report a deploy event calls for: only the end of a deploy that failed or was rolled back. */
export function deployReport(event: DeployEvent): ErrorReport | null {
  const d = event.deploy
  if (event.type !== 'state' || (d.state !== 'FAILED' && d.state !== 'ROLLED_BACK')) return null
  const code = d.error?.code ?? 'unknown'
  const err = new DeployEndedBadly(
    d.state,
    code,
    `${d.app}/${d.env} ${d.kind} ${d.id} ${d.state} (${code}): ${d.error?.message ?? 'no reason recorded'}`,
  )
  return { err, tags: { app: d.app, env: d.env, appRelease: d.release, deployId: d.id, kind: d.kind, state: d.state, code } }
}

/** The report a failed backup calls for; `appRelease` is the env's live release, if any. */
export function backupReport(
  e: { target: { app: string; env: string }; kind: string; error?: unknown; id?: string },
  appRelease: string | null,
): ErrorReport | null {
  if (!e.error) return null
  const code = e.error instanceof AgentError ? e.error.code : 'backup_failed'
  return { err: e.error, tags: { app: e.target.app, env: e.target.env, appRelease, backupId: e.id ?? null, kind: e.kind, code } }
}

async function readSecret(path: string | undefined): Promise<string[]> {
  if (!path) return []
  return readFile(path, 'utf8').then(
    (text) => [text.trim()],
    () => [],
  )
}

/**
 * Every value the config makes secret: env file values, database and registry passwords (an app's, a swarm's),
 * tokens, HMAC secrets, notify URLs.
 */
export async function knownSecrets(config: Config): Promise<string[]> {
  const fromEnv = (name: string | undefined) => (name && process.env[name] ? [process.env[name]] : [])
  const found: Array<Promise<string[]>> = [
    readSecret(config.statusToken?.file),
    Promise.resolve(fromEnv(config.statusToken?.env)),
    ...config.keys.map(async (k) => [...(await readSecret(k.secretFile)), ...fromEnv(k.secretEnv)]),
    ...config.notify.map(async (n) => [n.url, ...(await readSecret(n.secretFile))]),
  ]
  for (const app of Object.values(config.apps)) {
    found.push(readSecret(app.registryAuth?.passwordFile))
    for (const env of Object.values(app.envs)) {
      found.push(readEnvFile(env.envFile).then(envSecretValues, () => []))
      found.push(readSecret(env.swarm?.registryAuth?.passwordFile))
      const db = env.database
      if (db) {
        const password = URL.canParse(db.url) ? decodeURIComponent(new URL(db.url).password) : ''
        found.push(readSecret(db.passwordFile).then((file) => [password, ...file]))
      }
    }
  }
  return (await Promise.all(found)).flat()
}

interface SentryHandle {
  close(timeoutMs: number): Promise<unknown>
  capture(err: unknown, tags: ErrorTags): void
}

async function startSentry(
  config: Config,
  sentry: NonNullable<Config['sentry']>,
  release: string,
  shared?: Scrubber,
): Promise<SentryHandle> {
  const scrubber = shared ?? new Scrubber(await knownSecrets(config))
  const Sentry = await import('@sentry/node')
  const client = new Sentry.NodeClient({
    dsn: sentry.dsn,
    environment: sentry.environment,
    release: `deploy-agent@${release}`,
    integrations: [],
    transport: Sentry.makeNodeTransport,
    stackParser: Sentry.defaultStackParser,
    sendClientReports: false,
    beforeSend: (event) => scrubber.value(event),
  })
  const scope = new Sentry.Scope()
  scope.setClient(client)
  client.init()
  return {
    close: (timeoutMs) => Promise.resolve(client.close(timeoutMs)),
    capture: (err, tags) => {
      const tagged = scope.clone()
      tagged.setTags(Object.fromEntries(Object.entries(tags).filter((e): e is [string, string] => typeof e[1] === 'string')))
      // Same app, env and cause → one issue, whatever the release or deploy id in the message.
      if (tags.code) tagged.setFingerprint(['{{ type }}', tags.app, tags.env, tags.code])
      tagged.captureException(err)
    },
  }
}

/** A reporter for the config: the no-op one without `sentry.dsn`; else one that loads the SDK in the background. */
/** `scrubber`: the agent's shared one (it learns on reloads and deploys); without it, one made from the config. */
export function createErrorReporter(config: Config, logger: Logger, release: string, scrubber?: Scrubber): ErrorReporter {
  const sentry = config.sentry
  if (!sentry) return noErrorReporter
  const handle = startSentry(config, sentry, release, scrubber).catch((err: unknown) => {
    logger.error({ err }, 'Sentry could not start; errors are only logged')
    return null
  })
  return {
    enabled: true,
    capture: (err, tags) => {
      void handle.then((h) => h?.capture(err, tags)).catch((e: unknown) => logger.warn({ err: e }, 'could not report an error to Sentry'))
    },
    close: async (timeoutMs = 2000) => {
      const h = await handle
      const sent = await h?.close(timeoutMs).catch(() => false)
      if (sent === false) logger.warn('Sentry did not confirm every pending event before the stop')
    },
  }
}
