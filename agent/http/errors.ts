// One error handler: AgentErrors keep their code and status; fastify's own errors (validation, content type,
// body size) are mapped to stable codes; anything else is a logged 500 that reveals nothing.
import type { FastifyError, FastifyInstance } from 'fastify'
import { AgentError, asDiskFull } from '../errors.js'
import { TooManyFailuresError } from '../auth/authenticator.js'

export interface ErrorBody {
  error: { code: string; message: string }
}

interface AjvIssue {
  instancePath: string
  keyword: string
  params: Record<string, unknown>
  message?: string
}

function dotted(context: string, instancePath: string, extra?: unknown): string {
  const parts = instancePath.split('/').filter(Boolean)
  if (extra !== undefined) parts.push(String(extra))
  return [context, ...parts].join('.')
}

/** `body.foo: unknown field`, `body.ref: must match pattern "…"`: each problem with its path. */
export function describeValidation(context: string, issues: readonly AjvIssue[]): string {
  return issues
    .map((issue) => {
      if (issue.keyword === 'additionalProperties')
        return `${dotted(context, issue.instancePath, issue.params.additionalProperty)}: unknown field`
      if (issue.keyword === 'required') return `${dotted(context, issue.instancePath, issue.params.missingProperty)}: is required`
      return `${dotted(context, issue.instancePath)}: ${issue.message ?? issue.keyword}`
    })
    .join('; ')
}

const FASTIFY_CODES: Record<string, { status: number; code: string; message: string }> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    status: 415,
    code: 'unsupported_media_type',
    message: 'the body must be JSON (Content-Type: application/json)',
  },
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'body_too_large', message: 'the body is larger than 64 KiB' },
  FST_ERR_CTP_INVALID_JSON_BODY: {
    status: 400,
    code: 'invalid_json',
    message: 'the body is not valid JSON, or has __proto__/constructor keys',
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'invalid_json', message: 'the body is empty but Content-Type says JSON' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'invalid_request', message: 'Content-Length does not match the body' },
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof AgentError) {
      if (err instanceof TooManyFailuresError) reply.header('retry-after', String(err.retryAfterSec))
      if (err.statusCode >= 500) request.log.error({ err }, 'request failed')
      return reply.code(err.statusCode).send({ error: { code: err.code, message: err.message } } satisfies ErrorBody)
    }
    if (err.validation) {
      const message = describeValidation(err.validationContext ?? 'request', err.validation as AjvIssue[])
      return reply.code(400).send({ error: { code: 'invalid_request', message } } satisfies ErrorBody)
    }
    const known = FASTIFY_CODES[err.code]
    if (known) return reply.code(known.status).send({ error: { code: known.code, message: known.message } } satisfies ErrorBody)
    if (err.statusCode && err.statusCode < 500) {
      return reply.code(err.statusCode).send({ error: { code: 'bad_request', message: err.message } } satisfies ErrorBody)
    }
    request.log.error({ err }, 'unexpected error')
    const full = asDiskFull(err)
    if (full) return reply.code(full.statusCode).send({ error: { code: full.code, message: full.message } } satisfies ErrorBody)
    return reply.code(500).send({ error: { code: 'internal', message: 'internal error; see the agent log' } } satisfies ErrorBody)
  })
  app.setNotFoundHandler((request, reply) =>
    reply
      .code(404)
      .send({ error: { code: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0]}` } } satisfies ErrorBody),
  )
}
