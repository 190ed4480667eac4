import type { FastifyInstance } from 'fastify'

export function healthRoutes(app: FastifyInstance): void {
  app.get(
    '/healthz',
    {
      config: { auth: 'none' },
      schema: { summary: 'The agent is alive', response: { 200: { type: 'object', properties: { ok: { type: 'boolean' } } } } },
    },
    async () => ({ ok: true }),
  )
}
