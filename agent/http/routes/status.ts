import type { FastifyInstance } from 'fastify'
import { errorResponse } from '../schemas.js'

const nullable = (schema: object) => ({ anyOf: [{ type: 'null' }, schema] })

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
                  properties: { id: { type: 'string' }, createdAt: { type: 'string' }, verified: { type: 'boolean' } },
                }),
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
        summary: 'Apps, envs, live release, in-flight deploy, last backup',
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
