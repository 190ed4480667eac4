// Backups and restores: thin adapters over backup/ (the BackupService).
import type { FastifyInstance } from 'fastify'
import { findTarget } from '../../config/targets.js'
import { NotFoundError, ValidationError } from '../../errors.js'
import { PitrError } from '../../pitr/errors.js'
import type { PitrTarget } from '../../pitr/target.js'
import { signer } from '../auth.js'
import { appEnvParams, backupIdParams, BACKUP_ID, DEPLOY_ID, errorResponse, NAME, type AppEnvParams, type IdParams } from '../schemas.js'

const errors = { '4xx': errorResponse, '5xx': errorResponse }

const backupBody = { type: 'object', required: ['app', 'env'], additionalProperties: false, properties: { app: NAME, env: NAME } } as const
const restoreBody = {
  type: 'object',
  required: ['confirm'],
  additionalProperties: false,
  properties: { confirm: BACKUP_ID, app: NAME, env: NAME },
} as const
const pitrBody = {
  type: 'object',
  required: ['app', 'env', 'target', 'confirm'],
  additionalProperties: false,
  properties: {
    app: NAME,
    env: NAME,
    // Exactly one of the three.
    target: {
      type: 'object',
      minProperties: 1,
      maxProperties: 1,
      additionalProperties: false,
      properties: {
        beforeDeploy: DEPLOY_ID,
        time: { type: 'string', maxLength: 40 },
        lsn: { type: 'string', pattern: '^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$' },
      },
    },
    confirm: { type: 'string', maxLength: 80 },
  },
} as const
const pruneBody = { type: 'object', additionalProperties: false, properties: { dryRun: { type: 'boolean' } } } as const

export function backupRoutes(app: FastifyInstance): void {
  const { deps } = app
  app.post<{ Body: { app: string; env: string } }>(
    '/v1/backups',
    {
      config: { auth: 'signed' },
      schema: { summary: 'Take a manual backup (runs in the background)', body: backupBody, response: errors },
    },
    async (request, reply) => {
      const target = findTarget(deps.config, request.body.app, request.body.env)
      deps.authenticator.authorize(signer(request), { env: target.env })
      if (!target.envConfig.database) throw new NotFoundError(`${target.app}/${target.env} has no database to back up`)
      const id = deps.backups.newId()
      // The answer does not wait for pg_dump; the backup shows in GET /v1/backups once complete.
      deps.backups.take(target, 'manual', { id }).catch(() => undefined)
      return reply.code(202).send({ id })
    },
  )

  app.get(
    '/v1/backups',
    { config: { auth: 'token' }, schema: { summary: 'Backups with size, sha256, verified, pinned', response: errors } },
    async () => ({
      backups: await deps.backups.list(),
      failures: deps.backups.recentFailures(),
      // Each PITR env's recoverable window and health, as last checked.
      pitr: deps.pitr?.statuses() ?? [],
    }),
  )

  app.post<{ Params: IdParams }>(
    '/v1/backups/:id/verify',
    {
      config: { auth: 'signed' },
      schema: { summary: 'Re-check a stored backup (sha256 and a full read)', params: backupIdParams, response: errors },
    },
    async (request) => {
      const owner = await deps.backups.ownerOf(request.params.id)
      if (owner) deps.authenticator.authorize(signer(request), { env: owner.env })
      return deps.backups.verify(request.params.id)
    },
  )

  app.post<{ Params: AppEnvParams; Body: { dryRun?: boolean } }>(
    '/v1/apps/:app/envs/:env/backups/prune',
    {
      config: { auth: 'signed' },
      schema: { summary: 'Apply (or with dryRun only show) the retention plan', params: appEnvParams, body: pruneBody, response: errors },
    },
    async (request) => {
      const target = findTarget(deps.config, request.params.app, request.params.env)
      deps.authenticator.authorize(signer(request), { env: target.env })
      const dryRun = request.body?.dryRun ?? false
      const result = await deps.backups.prune(target, { dryRun })
      // The env's PITR base backups and WAL follow the same retention (the nightly run applies both).
      if (!deps.pitr?.enabled(target)) return result
      const pitr = await deps.pitr.prune(target, { dryRun })
      return { ...result, pitr: { plan: pitr.plan, text: pitr.text } }
    },
  )

  app.post<{ Params: IdParams; Body: { confirm: string; app?: string; env?: string } }>(
    '/v1/backups/:id/restore',
    {
      config: { auth: 'signed' },
      schema: { summary: 'Restore a backup (body repeats the id)', params: backupIdParams, body: restoreBody, response: errors },
    },
    async (request) => {
      const { id } = request.params
      if (request.body.confirm !== id) throw new ValidationError(`body.confirm must repeat the backup id "${id}"`)
      // The key must be allowed for the env the restore really goes into (a legacy file without { app, env } goes
      // into the only env with a database), never merely for the env the body names.
      const target = await deps.backups.restoreTarget(id, { app: request.body.app, env: request.body.env })
      deps.authenticator.authorize(signer(request), { env: target.env })
      return deps.backups.restore(id, { app: target.app, env: target.env })
    },
  )

  app.post<{ Body: { app: string; env: string; target: PitrTarget; confirm: string } }>(
    '/v1/backups/pitr/restore',
    {
      config: { auth: 'signed' },
      schema: {
        summary: 'Restore an env database to a point in time (before a deploy, a time, an LSN); body.confirm repeats "<app>/<env>"',
        body: pitrBody,
        response: errors,
      },
    },
    async (request) => {
      const { app: appName, env, target: point, confirm } = request.body
      const target = findTarget(deps.config, appName, env)
      deps.authenticator.authorize(signer(request), { env: target.env })
      if (confirm !== `${appName}/${env}`) throw new ValidationError(`body.confirm must repeat "${appName}/${env}"`)
      if (!deps.pitr) throw new PitrError('pitr_disabled', 'this agent runs no point-in-time recovery')
      return deps.pitr.restore(target, point)
    },
  )
}
