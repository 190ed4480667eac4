// `GET /v1/apps/:app/envs/:env/logs`: the output of the env's live container, for operators without root on the
// host. Bounded (tail, line length, followers), every line scrubbed of known secrets.
import type { FastifyInstance } from 'fastify'
import { ValidationError } from '../../errors.js'
import { appLogStream, Followers, TooManyFollowersError } from '../follow.js'
import { appEnvParams, errorResponse, NAME, type AppEnvParams } from '../schemas.js'

export const DEFAULT_TAIL = 200
export const MAX_TAIL = 5000
/** Followers of one env's app log, and of all app logs, at once. */
export const MAX_APP_LOG_FOLLOWERS_PER_ENV = 8
export const MAX_APP_LOG_FOLLOWERS = 32

export interface AppLogQuery {
  service?: string
  tail?: string
  since?: string
  follow?: '0' | '1'
}

const appLogQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    service: NAME,
    tail: { type: 'string', maxLength: 12 },
    since: { type: 'string', maxLength: 64 },
    follow: { type: 'string', enum: ['0', '1'] },
  },
} as const

/** `tail` as a number of lines: default 200, at most 5000. */
export function parseTail(value: string | undefined): number {
  if (value === undefined) return DEFAULT_TAIL
  if (!/^[0-9]+$/.test(value) || Number(value) > MAX_TAIL)
    throw new ValidationError(`tail must be a whole number of lines from 0 to ${MAX_TAIL}, not "${value}"`)
  return Number(value)
}

/** `since` (an ISO time or unix seconds) as unix seconds; undefined when not given. */
export function parseSince(value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  if (/^[0-9]{1,11}$/.test(value)) return Number(value)
  // Only a full date with a time: Date.parse alone accepts "1" or "May 1".
  const ms = /^\d{4}-\d\d-\d\d(T\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d))?$/.test(value) ? Date.parse(value) : NaN
  if (Number.isNaN(ms)) throw new ValidationError(`since must be an ISO time (2026-05-01T12:00:00Z) or unix seconds, not "${value}"`)
  return Math.floor(ms / 1000)
}

export function appLogRoutes(app: FastifyInstance): void {
  const { deps } = app
  const followers = new Followers(MAX_APP_LOG_FOLLOWERS_PER_ENV, MAX_APP_LOG_FOLLOWERS, 'app logs')
  app.get<{ Params: AppEnvParams; Querystring: AppLogQuery }>(
    '/v1/apps/:app/envs/:env/logs',
    {
      config: { auth: 'token' },
      schema: {
        summary: "The live app container's output as NDJSON",
        params: appEnvParams,
        querystring: appLogQuery,
        response: { '4xx': errorResponse, '5xx': errorResponse },
      },
    },
    async (request, reply) => {
      const { app: appName, env } = request.params
      const tail = parseTail(request.query.tail)
      const since = parseSince(request.query.since)
      const follow = request.query.follow === '1'
      let leave = () => {}
      if (follow) {
        try {
          leave = followers.enter(`${appName}/${env}`)
        } catch (err) {
          if (err instanceof TooManyFollowersError) reply.header('retry-after', String(err.retryAfterSec))
          throw err
        }
      }
      // The engine's stream is closed when the client goes away, so a follower of a quiet app does not linger.
      const gone = new AbortController()
      request.raw.once('close', () => {
        gone.abort()
        leave()
      })
      try {
        const lines = await deps.deployments.appLogs({
          app: appName,
          env,
          service: request.query.service,
          tail,
          since,
          follow,
          signal: gone.signal,
        })
        const stream = appLogStream(lines, deps.scrub, { follow })
        stream.once('close', leave)
        return await reply.type('application/x-ndjson').send(stream)
      } catch (err) {
        leave()
        throw err
      }
    },
  )
}
