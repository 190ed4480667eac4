import type { FastifyInstance } from 'fastify'

export function metricsRoutes(app: FastifyInstance): void {
  const { deps } = app
  app.get(
    '/metrics',
    { config: { auth: 'token' }, schema: { summary: 'Prometheus metrics', produces: ['text/plain'] } },
    async (_request, reply) => {
      reply.type(deps.metrics.contentType)
      return deps.metrics.text()
    },
  )
}
