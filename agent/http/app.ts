// The fastify app factory: everything it needs comes in through `deps`; listening, signals and shutdown belong
// to the process (cli/serve.ts), so tests build the app and call `inject`.
import { randomUUID } from 'node:crypto'
import swagger from '@fastify/swagger'
import type { Server as HttpsServer } from 'node:https'
import Fastify, {
  LogController,
  type FastifyHttpsOptions,
  type FastifyInstance,
  type FastifyRequest,
  type FastifyServerOptions,
} from 'fastify'
import { registerAuth } from './auth.js'
import type { AppDeps } from './deps.js'
import { clientAddress, trustList } from './client.js'
import { registerErrorHandling } from './errors.js'
import { appLogRoutes } from './routes/app-logs.js'
import { backupRoutes } from './routes/backups.js'
import { deployRoutes } from './routes/deploys.js'
import { healthRoutes } from './routes/health.js'
import { metricsRoutes } from './routes/metrics.js'
import { statusRoutes } from './routes/status.js'

export const BODY_LIMIT_BYTES = 64 * 1024
const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/

export type { AppDeps, Backups } from './deps.js'

export interface AppOptions {
  https?: { cert: Buffer; key: Buffer }
}

export async function buildApp(deps: AppDeps, options: AppOptions = {}): Promise<FastifyInstance> {
  const serverOptions: FastifyServerOptions = {
    loggerInstance: deps.logger,
    logController: new LogController({ disableRequestLogging: true }), // one line per request, in onResponse below
    bodyLimit: BODY_LIMIT_BYTES,
    requestTimeout: 10_000, // whole request (headers + body) must arrive in 10 s: no slow-loris uploads
    connectionTimeout: 120_000, // idle sockets; followed logs send a heartbeat well inside this
    keepAliveTimeout: 5_000,
    routerOptions: { maxParamLength: 128 },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // request.ip stays the socket peer; who the client is for the limiter and the log is request.client below.
    trustProxy: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: true, useDefaults: false } },
  }
  const app = options.https
    ? (Fastify({ ...serverOptions, https: options.https } as FastifyHttpsOptions<HttpsServer>) as unknown as FastifyInstance)
    : Fastify(serverOptions)

  // Keep the raw bytes: the signature covers them, not a re-serialisation of the parsed JSON.
  app.removeAllContentTypeParsers()
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    request.rawBody = body as Buffer
    parseJson(request, body as unknown as string, done)
  })

  const trustProxy = trustList(deps.config.listen.trustProxy)
  app.decorateRequest('client', undefined as unknown as FastifyRequest['client'])
  app.addHook('onRequest', async (request) => {
    request.client = clientAddress(request.raw, trustProxy)
  })
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id)
  })
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched'
    deps.metrics.httpRequests.inc({ method: request.method, route, status: String(reply.statusCode) })
    // One line per request. Successful reads are what dashboards and monitors poll many times a second, so they
    // are logged at debug (free at the default info level); changes and refusals stay at info.
    const level = (request.method === 'GET' || request.method === 'HEAD') && reply.statusCode < 400 ? 'debug' : 'info'
    const { peer, forwardedFor } = request.client
    request.log[level](
      { method: request.method, url: request.url, statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime), peer, forwardedFor },
      'request',
    )
  })

  registerErrorHandling(app)
  registerAuth(app, deps.authenticator)
  await app.register(swagger, {
    openapi: {
      info: { title: 'deploy-agent', version: deps.version, description: 'Signed deploys, rollbacks and backups for one server' },
      components: {
        securitySchemes: {
          statusToken: { type: 'http', scheme: 'bearer' },
          signature: { type: 'apiKey', in: 'header', name: 'Deploy-Signature' },
        },
      },
    },
  })

  // The routes read what they need from the `deps` decorator, so they import nothing from this file.
  app.decorate('deps', deps)
  healthRoutes(app)
  statusRoutes(app)
  deployRoutes(app)
  appLogRoutes(app)
  backupRoutes(app)
  metricsRoutes(app)
  app.get('/v1/openapi.json', { config: { auth: 'none' }, schema: { hide: true } }, async () => app.swagger())
  return app
}
