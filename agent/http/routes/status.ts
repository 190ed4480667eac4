import type { FastifyInstance } from 'fastify'
import { findTarget } from '../../config/targets.js'
import { errorResponse } from '../schemas.js'

const nullable = (schema: object) => ({ anyOf: [{ type: 'null' }, schema] })

const str = { type: 'string' }
const nullableInt = nullable({ type: 'integer' })

/** An env's PITR as last checked (agent/pitr/monitor.ts); null for an env without it. */
const pitrStatus = nullable({
  type: 'object',
  properties: {
    slot: str,
    window: {
      type: 'object',
      properties: {
        earliest: nullable({ type: 'object', properties: { time: str, lsn: str, baseBackup: str } }),
        latest: nullable({ type: 'object', properties: { lsn: str, time: nullable(str) } }),
        gaps: {
          type: 'array',
          items: {
            type: 'object',
            properties: {
              from: { type: 'object', properties: { lsn: str, time: str } },
              to: { type: 'object', properties: { lsn: str, time: str, baseBackup: str } },
            },
          },
        },
      },
    },
    receiver: {
      type: 'object',
      properties: { running: { type: 'boolean' }, streaming: { type: 'boolean' }, restarts: { type: 'integer' }, downSince: nullable(str) },
    },
    walStatus: nullable(str),
    safeWalSize: nullableInt,
    receiveLagBytes: nullableInt,
    walDiskFreeBytes: nullableInt,
    problems: { type: 'array', items: { type: 'object', properties: { kind: str, message: str, hint: str } } },
    error: nullable(str),
    checkedAt: str,
  },
})

const statusResponse = {
  type: 'object',
  required: ['agent', 'apps'],
  properties: {
    agent: { type: 'object', properties: { version: { type: 'string' }, uptimeSec: { type: 'integer' } } },
    apps: {
      type: 'object',
      additionalProperties: {
        type: 'object',
        properties: {
          envs: {
            type: 'object',
            additionalProperties: {
              type: 'object',
              properties: {
                live: nullable({
                  type: 'object',
                  properties: {
                    release: { type: 'string' },
                    commit: { type: 'string' },
                    port: nullable({ type: 'integer' }),
                    deployId: { type: 'string' },
                    since: { type: 'string' },
                    nodes: { type: 'array', items: { type: 'string' } },
                    services: {
                      type: 'array',
                      items: {
                        type: 'object',
                        properties: {
                          name: { type: 'string' },
                          kind: { type: 'string' },
                          port: nullable({ type: 'integer' }),
                          container: { type: 'string' },
                          nodes: { type: 'array', items: { type: 'string' } },
                        },
                      },
                    },
                  },
                }),
                deploying: nullable({ type: 'object', properties: { id: { type: 'string' }, state: { type: 'string' } } }),
                lastBackup: nullable({
                  type: 'object',
                  // verified is null for a backup not verified (backups.verify: none)
                  properties: { id: { type: 'string' }, createdAt: { type: 'string' }, verified: nullable({ type: 'boolean' }) },
                }),
                pitr: pitrStatus,
              },
            },
          },
        },
      },
    },
  },
} as const

export function statusRoutes(app: FastifyInstance): void {
  const { deps } = app
  app.get(
    '/v1/status',
    {
      config: { auth: 'token-or-signed' },
      schema: {
        summary: 'Apps, envs, live release, in-flight deploy, last backup, point-in-time recovery',
        response: { 200: statusResponse, '4xx': errorResponse },
      },
    },
    async () => {
      const inFlight = deps.deploys.unfinished()
      const apps = Object.fromEntries(
        Object.entries(deps.config.apps).map(([appName, app]) => [
          appName,
          {
            envs: Object.fromEntries(
              Object.keys(app.envs).map((envName) => {
                const deploying = inFlight.find((d) => d.app === appName && d.env === envName)
                return [
                  envName,
                  {
                    live: deps.deployments.liveRelease(appName, envName),
                    deploying: deploying ? { id: deploying.id, state: deploying.state } : null,
                    lastBackup: deps.backups.lastBackup(appName, envName),
                    pitr: deps.pitr?.status(findTarget(deps.config, appName, envName)) ?? null,
                  },
                ]
              }),
            ),
          },
        ]),
      )
      return { agent: { version: deps.version, uptimeSec: Math.floor((Date.now() - deps.startedAt.getTime()) / 1000) }, apps }
    },
  )
}
