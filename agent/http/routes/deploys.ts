// Deploys, approvals, rollbacks and releases: thin adapters over deploy/ (the coordinator and the store).
import type { FastifyInstance } from 'fastify'
import { checkPins, checkRefAllowed, findTarget } from '../../config/targets.js'
import { NotFoundError } from '../../errors.js'
import { Followers, followLog, streamLog, TooManyFollowersError } from '../follow.js'
import { signer } from '../auth.js'
import {
  appEnvParams,
  COMMIT,
  deployIdParams,
  DIGEST,
  emptyBody,
  errorResponse,
  NAME,
  REF,
  RELEASE,
  type AppEnvParams,
  type IdParams,
} from '../schemas.js'

export interface DeployBody {
  ref: string
  /** The commit a git app's ref must resolve to (or, for a branch, contain). */
  commit?: string
  /** The manifest digest an image app's tag must resolve to. */
  digest?: string
  reason?: string
}

const deployBody = {
  type: 'object',
  required: ['ref'],
  additionalProperties: false,
  properties: { ref: REF, commit: COMMIT, digest: DIGEST, reason: { type: 'string', maxLength: 500 } },
} as const

export interface RollbackBody {
  to?: string
  /** Allows a release that never served or whose last deploy failed; recorded in the rollback's reason and log. */
  force?: boolean
  reason?: string
}

const rollbackBody = {
  type: 'object',
  additionalProperties: false,
  properties: { to: RELEASE, force: { type: 'boolean' }, reason: { type: 'string', maxLength: 500 } },
} as const

const listQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { app: NAME, env: NAME, limit: { type: 'string', pattern: '^[1-9][0-9]{0,3}$' } },
} as const

const logQuery = { type: 'object', additionalProperties: false, properties: { follow: { type: 'string', enum: ['0', '1'] } } } as const

const errors = { '4xx': errorResponse, '5xx': errorResponse }

export function deployRoutes(app: FastifyInstance): void {
  const { deps } = app
  const followers = new Followers()
  app.post<{ Params: AppEnvParams; Body: DeployBody }>(
    '/v1/apps/:app/envs/:env/deploys',
    {
      config: { auth: 'signed' },
      schema: { summary: 'Start a deploy of a ref', params: appEnvParams, body: deployBody, response: errors },
    },
    async (request, reply) => {
      const { app: appName, env } = request.params
      const target = findTarget(deps.config, appName, env)
      const key = signer(request)
      deps.authenticator.authorize(key, { env, ref: request.body.ref })
      checkRefAllowed(target.envConfig.ref, request.body.ref, `${appName}/${env}`)
      checkPins(target, request.body)
      const { ref, commit, digest, reason } = request.body
      // The record's commit is the pin: a git commit, or an image app's digest (resolved, it is the pulled digest).
      const deploy = await deps.deployments.request({ app: appName, env, ref, commit: commit ?? digest, reason, keyId: key.id })
      return reply.code(202).send({ id: deploy.id, state: deploy.state })
    },
  )

  app.post<{ Params: IdParams }>(
    '/v1/deploys/:id/approve',
    {
      config: { auth: 'signed' },
      schema: { summary: 'Approve a deploy held in AWAITING_APPROVAL', params: deployIdParams, body: emptyBody, response: errors },
    },
    async (request, reply) => {
      const deploy = deps.deploys.get(request.params.id)
      if (!deploy) throw new NotFoundError(`no deploy ${request.params.id}`)
      const key = signer(request)
      deps.authenticator.authorizeApproval(key, deploy)
      const approved = await deps.deployments.approve(deploy.id, key.id)
      return reply.code(202).send({ id: approved.id, state: approved.state, approvedBy: approved.approvedBy })
    },
  )

  app.post<{ Params: AppEnvParams; Body: RollbackBody | undefined }>(
    '/v1/apps/:app/envs/:env/rollback',
    {
      config: { auth: 'signed' },
      schema: { summary: 'Roll back to the previous or a named kept release', params: appEnvParams, body: rollbackBody, response: errors },
    },
    async (request, reply) => {
      const { app: appName, env } = request.params
      findTarget(deps.config, appName, env)
      const key = signer(request)
      deps.authenticator.authorize(key, { env })
      const deploy = await deps.deployments.rollback({
        app: appName,
        env,
        to: request.body?.to,
        force: request.body?.force,
        reason: request.body?.reason,
        keyId: key.id,
        checkRelease: (release) => deps.authenticator.authorizeRollback(key, { env, ...release }),
      })
      // A deploy still in its observe window was told to roll back (kind deploy, ends ROLLED_BACK); else a rollback.
      const inWindow = deploy.kind === 'deploy'
      const release = inWindow ? deploy.details.previousRelease : deploy.ref
      return reply
        .code(202)
        .send({ id: deploy.id, kind: deploy.kind, state: deploy.state, release, endsAs: inWindow ? 'ROLLED_BACK' : 'SUCCEEDED' })
    },
  )

  app.get<{ Params: AppEnvParams }>(
    '/v1/apps/:app/envs/:env/releases',
    { config: { auth: 'token' }, schema: { summary: 'Kept releases and which is live', params: appEnvParams, response: errors } },
    async (request) => {
      const target = findTarget(deps.config, request.params.app, request.params.env)
      return { releases: await deps.deployments.releases(target), keepReleases: target.appConfig.keepReleases }
    },
  )

  app.get<{ Querystring: { app?: string; env?: string; limit?: string } }>(
    '/v1/deploys',
    { config: { auth: 'token' }, schema: { summary: 'Deploy history, newest first', querystring: listQuery, response: errors } },
    async (request) => {
      const { app: appName, env, limit } = request.query
      return { deploys: deps.deploys.list({ app: appName, env, limit: limit ? Number(limit) : 50 }) }
    },
  )

  app.get<{ Params: IdParams }>(
    '/v1/deploys/:id',
    { config: { auth: 'token' }, schema: { summary: 'One deploy with its state trail', params: deployIdParams, response: errors } },
    async (request) => {
      const deploy = deps.deploys.get(request.params.id)
      if (!deploy) throw new NotFoundError(`no deploy ${request.params.id}`)
      return deploy
    },
  )

  app.get<{ Params: IdParams; Querystring: { follow?: '0' | '1' } }>(
    '/v1/deploys/:id/log',
    {
      config: { auth: 'token' },
      schema: { summary: 'Deploy log as NDJSON', params: deployIdParams, querystring: logQuery, response: errors },
    },
    async (request, reply) => {
      const deploy = deps.deploys.get(request.params.id)
      if (!deploy) throw new NotFoundError(`no deploy ${request.params.id}`)
      if (request.query.follow === '1' && deploy.finishedAt === null) {
        let leave: () => void
        try {
          leave = followers.enter(deploy.id)
        } catch (err) {
          if (err instanceof TooManyFollowersError) reply.header('retry-after', String(err.retryAfterSec))
          throw err
        }
        const stream = followLog(deps.deploys, deploy.id, request.raw)
        stream.once('close', leave)
        request.raw.once('close', leave)
        return reply.type('application/x-ndjson').send(stream)
      }
      return reply.type('application/x-ndjson').send(streamLog(deps.deploys, deploy.id))
    },
  )
}
