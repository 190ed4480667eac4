import type { FastifyInstance } from 'fastify'
import type { AppDeps } from '../app.js'

export function metricsRoutes(app: FastifyInstance, deps: AppDeps): void {
  app.get('/metrics', { config: { auth: 'token' }, schema: { summary: 'Prometheus metrics', produces: ['text/plain'] } }, async (_request, reply) => {
    reply.type(deps.metrics.contentType)
    return deps.metrics.text()
  })
}
