// JSON schemas shared by the routes. They are the validation (strict: unknown fields are refused) and the
// source of the OpenAPI document.
export const NAME = { type: 'string', pattern: '^[a-z][a-z0-9-]{0,31}$' } as const
/** A git ref as a request may name it: no "..", no leading "-", no shell or transport syntax. */
export const REF = { type: 'string', pattern: '^(?!.*\\.\\.)[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$' } as const
export const COMMIT = { type: 'string', pattern: '^[0-9a-f]{40}$' } as const
/** An image manifest digest, as a registry answers it. */
export const DIGEST = { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' } as const
export const RELEASE = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' } as const
export const DEPLOY_ID = { type: 'string', pattern: '^d_[a-z0-9]{12}$' } as const
export const BACKUP_ID = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$' } as const

export const appEnvParams = {
  type: 'object',
  required: ['app', 'env'],
  additionalProperties: false,
  properties: { app: NAME, env: NAME },
} as const

export const deployIdParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: DEPLOY_ID },
} as const

export const backupIdParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: BACKUP_ID },
} as const

/** A body that must be absent or `{}` (approve). */
export const emptyBody = { type: 'object', additionalProperties: false, properties: {} } as const

export const errorResponse = {
  type: 'object',
  properties: {
    error: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } }, required: ['code', 'message'] },
  },
} as const

export interface AppEnvParams {
  app: string
  env: string
}
export interface IdParams {
  id: string
}
