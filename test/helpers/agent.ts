// Builds a real agent app (real stores in a temp dir, real keys on disk) for `inject` tests, plus a helper that
// signs requests the way CI does.
import type { AppDeps } from '../../agent/http/deps.js'
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { stringify } from 'yaml'
import { Authenticator } from '../../agent/auth/authenticator.js'
import { signRequest, type SigningKey } from '../../agent/auth/canonical.js'
import { loadKeyring } from '../../agent/auth/keyring.js'
import { FailureLimiter } from '../../agent/auth/limiter.js'
import { loadConfig } from '../../agent/config/load.js'
import type { Config } from '../../agent/config/schema.js'
import { buildApp } from '../../agent/http/app.js'
import { createLogger, type Logger } from '../../agent/observability/logger.js'
import { Metrics, recordBackup } from '../../agent/observability/metrics.js'
import { BackupService } from '../../agent/backup/service.js'
import { NoLiveReleaseError, type Deployments } from '../../agent/deploy/coordinator.js'
import type { LiveRelease } from '../../agent/deploy/live.js'
import type { ContainerLogLine } from '../../agent/docker/engine.js'
import type { Deploy, DeployStore } from '../../agent/store/deploys.js'
import { Scrubber } from '../../agent/observability/scrub.js'
import { knownSecrets } from '../../agent/observability/sentry.js'
import { StateStore } from '../../agent/store/index.js'

export const AUDIENCE = 'agent.test'

export interface TestKeys {
  dir: string
  ed25519: { id: string; privateKey: KeyObject; publicPem: string; privatePem: string }
  /** A second person's key (`approver`, allow.approve): approving needs a key other than the requesting one. */
  approver: { id: string; privateKey: KeyObject }
  hmac: { id: string; secret: Buffer }
  statusToken: string
}

/** Writes two Ed25519 pairs (ci, approver), an HMAC secret and a status token into `dir/keys`. */
export async function writeTestKeys(dir: string): Promise<TestKeys> {
  const keysDir = join(dir, 'keys')
  await mkdir(keysDir, { recursive: true })
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
  const privatePem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  const secret = randomBytes(32).toString('hex')
  const statusToken = randomBytes(24).toString('base64url')
  await writeFile(join(keysDir, 'ci.pub'), publicPem)
  await writeFile(join(keysDir, 'ci.key'), privatePem, { mode: 0o600 })
  const approver = generateKeyPairSync('ed25519')
  await writeFile(join(keysDir, 'approver.pub'), approver.publicKey.export({ type: 'spki', format: 'pem' }))
  await writeFile(join(keysDir, 'approver.key'), approver.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
  await writeFile(join(keysDir, 'legacy.secret'), `${secret}\n`, { mode: 0o600 })
  await writeFile(join(keysDir, 'status.token'), `${statusToken}\n`, { mode: 0o600 })
  return {
    dir: keysDir,
    ed25519: { id: 'ci', privateKey, publicPem, privatePem },
    approver: { id: 'approver', privateKey: approver.privateKey },
    hmac: { id: 'legacy', secret: Buffer.from(secret) },
    statusToken,
  }
}

/** A config with one app `web` (envs staging: branch:main, production: tag:v*.*.*) and the test keys. */
export function testConfigDocument(dir: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listen: { host: '127.0.0.1', port: 8787 },
    stateDir: join(dir, 'state'),
    audience: AUDIENCE,
    keys: [
      { id: 'ci', alg: 'ed25519', publicKeyFile: 'keys/ci.pub', allow: { envs: ['staging', 'production'], refs: ['v*', 'main'] } },
      { id: 'approver', alg: 'ed25519', publicKeyFile: 'keys/approver.pub', allow: { envs: ['staging', 'production'], approve: true } },
      { id: 'legacy', alg: 'hmac-sha256', secretFile: 'keys/legacy.secret', allow: { envs: ['staging'] } },
      { id: 'expired', alg: 'ed25519', publicKeyFile: 'keys/ci.pub', notAfter: '2020-01-01T00:00:00Z' },
      { id: 'future', alg: 'ed25519', publicKeyFile: 'keys/ci.pub', notBefore: '2100-01-01T00:00:00Z' },
    ],
    statusToken: { file: 'keys/status.token' },
    apps: {
      web: {
        repo: '/srv/git/web.git',
        envs: {
          staging: { ref: 'branch:main', ports: [18001, 18002] },
          production: { ref: 'tag:v*.*.*', ports: [18011, 18012], requireApproval: true },
        },
      },
    },
    ...extra,
  }
}

/** Deployments that only record what they were asked: for tests of the HTTP surface, where nothing may run. */
export class RecordingDeployments implements Deployments {
  readonly calls: Array<{ op: string; input: unknown }> = []

  private answer(op: string, input: unknown): Promise<Deploy> {
    this.calls.push({ op, input })
    const now = new Date().toISOString()
    return Promise.resolve({
      id: 'd_000000000000',
      kind: op === 'rollback' ? 'rollback' : 'deploy',
      app: 'web',
      env: 'staging',
      ref: 'main',
      commit: null,
      release: null,
      reason: null,
      keyId: null,
      approvedBy: null,
      state: 'QUEUED',
      states: [{ state: 'QUEUED', at: now }],
      error: null,
      createdAt: now,
      finishedAt: null,
      details: {},
    })
  }

  request(input: unknown) {
    return this.answer('request', input)
  }
  approve(id: string, approvedBy: string) {
    return this.answer('approve', { id, approvedBy })
  }
  rollback(input: unknown) {
    return this.answer('rollback', input)
  }
  async releases() {
    return []
  }
  liveRelease(): LiveRelease | null {
    return null
  }
  async appLogs(input: unknown): Promise<AsyncIterable<ContainerLogLine>> {
    this.calls.push({ op: 'appLogs', input })
    throw new NoLiveReleaseError('web/staging has no live release running; deploy one first')
  }
}

export interface TestAgent {
  app: FastifyInstance
  config: Config
  keys: TestKeys
  metrics: Metrics
  deploys: DeployStore
  deployments: Deployments
  backups: BackupService
  configPath: string
  close(): Promise<void>
}

export async function buildTestAgent(
  dir: string,
  options: {
    extra?: Record<string, unknown>
    limiter?: FailureLimiter
    deployments?: (config: Config, deploys: DeployStore, backups: BackupService) => Promise<Deployments>
    /** Default: silent. */
    logger?: Logger
    pitr?: AppDeps['pitr']
  } = {},
): Promise<TestAgent> {
  const keys = await writeTestKeys(dir)
  const configPath = join(dir, 'agent.yaml')
  await writeFile(configPath, stringify(testConfigDocument(dir, options.extra)))
  const config = await loadConfig(configPath)
  const keyring = await loadKeyring(config)
  await mkdir(config.stateDir, { recursive: true })
  const store = await StateStore.open(config.stateDir)
  const metrics = new Metrics({ defaultMetrics: false })
  const authenticator = new Authenticator({
    keyring,
    audience: config.audience,
    nonces: store.nonces,
    limiter: options.limiter,
    onFailure: (reason) => metrics.authFailures.inc({ reason }),
  })
  const logger = options.logger ?? createLogger({ level: 'silent' })
  const scrubber = new Scrubber(await knownSecrets(config))
  const backups = new BackupService({ config, logger, onBackup: (event) => recordBackup(metrics, event) })
  await backups.open()
  const deployments = options.deployments ? await options.deployments(config, store.deploys, backups) : new RecordingDeployments()
  const app = await buildApp({
    config,
    authenticator,
    deploys: store.deploys,
    deployments,
    backups,
    pitr: options.pitr,
    metrics,
    logger,
    version: '0.0.0-test',
    startedAt: new Date(),
    scrub: (text) => scrubber.text(text),
  })
  return {
    app,
    config,
    keys,
    metrics,
    deploys: store.deploys,
    deployments,
    backups,
    configPath,
    close: async () => {
      await app.close()
      await store.close()
    },
  }
}

export interface SignedInjectOptions {
  method?: 'GET' | 'POST'
  url: string
  body?: string | object
  keyId?: string
  key?: SigningKey
  audience?: string
  /** sign this path/method/body instead of the one sent (to test mismatches) */
  signed?: { path?: string; method?: string; body?: string }
  timestamp?: number
  nonce?: string
  headers?: Record<string, string>
  remoteAddress?: string
}

export function ed25519Key(keys: TestKeys): SigningKey {
  return { alg: 'ed25519', privateKey: keys.ed25519.privateKey }
}

/** Sends a signed request through `inject`; by default signed with the test Ed25519 key. */
export function signedInject(agent: TestAgent, o: SignedInjectOptions): Promise<LightMyRequestResponse> {
  const method = o.method ?? 'POST'
  const body = o.body === undefined ? '' : typeof o.body === 'string' ? o.body : JSON.stringify(o.body)
  const headers = signRequest({
    keyId: o.keyId ?? agent.keys.ed25519.id,
    key: o.key ?? ed25519Key(agent.keys),
    audience: o.audience ?? AUDIENCE,
    method: o.signed?.method ?? method,
    path: o.signed?.path ?? o.url,
    body: o.signed?.body ?? body,
    timestamp: o.timestamp,
    nonce: o.nonce,
  })
  return agent.app.inject({
    method,
    url: o.url,
    payload: body === '' ? undefined : body,
    headers: { ...(body === '' ? {} : { 'content-type': 'application/json' }), ...headers, ...o.headers },
    remoteAddress: o.remoteAddress,
  })
}
