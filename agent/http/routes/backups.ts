// Backups and restores. The backup engine lives in backup/; until it is wired in, these routes authenticate,
// validate and authorize fully, then answer 501.
import type { FastifyInstance } from 'fastify'
import { findTarget } from '../../config/targets.js'
import { NotImplementedError, ValidationError } from '../../errors.js'
import type { AppDeps } from '../app.js'
import { signer } from '../auth.js'
import { backupIdParams, BACKUP_ID, errorResponse, NAME, type IdParams } from '../schemas.js'

const errors = { '4xx': errorResponse, '5xx': errorResponse }

const backupBody = { type: 'object', required: ['app', 'env'], additionalProperties: false, properties: { app: NAME, env: NAME } } as const
const restoreBody = {
  type: 'object',
  required: ['confirm'],
  additionalProperties: false,
  properties: { confirm: BACKUP_ID, app: NAME, env: NAME },
} as const

export function backupRoutes(app: FastifyInstance, deps: AppDeps): void {
  app.post<{ Body: { app: string; env: string } }>(
    '/v1/backups',
    { config: { auth: 'signed' }, schema: { summary: 'Take a manual backup', body: backupBody, response: errors } },
    async (request) => {
      findTarget(deps.config, request.body.app, request.body.env)
      deps.authenticator.authorize(signer(request), { env: request.body.env })
      throw new NotImplementedError('manual backups')
    },
  )

  app.get('/v1/backups', { config: { auth: 'token' }, schema: { summary: 'Backups with size, sha256, verified, pinned', response: errors } }, async () => {
    throw new NotImplementedError('listing backups')
  })

  app.post<{ Params: IdParams; Body: { confirm: string; app?: string; env?: string } }>(
    '/v1/backups/:id/restore',
    { config: { auth: 'signed' }, schema: { summary: 'Restore a backup (body repeats the id)', params: backupIdParams, body: restoreBody, response: errors } },
    async (request) => {
      if (request.body.confirm !== request.params.id) {
        throw new ValidationError(`body.confirm must repeat the backup id "${request.params.id}"`)
      }
      throw new NotImplementedError('restore')
    },
  )
}
