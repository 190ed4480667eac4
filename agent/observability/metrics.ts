// prom-client metrics on a registry owned by the app (no global default registry), so tests and several
// agents in one process do not share counters.
import { Counter, Registry, collectDefaultMetrics } from 'prom-client'

export class Metrics {
  readonly registry = new Registry()
  readonly httpRequests = new Counter({
    name: 'deploy_agent_http_requests_total',
    help: 'HTTP requests answered, by route and status code',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  })
  readonly authFailures = new Counter({
    name: 'deploy_agent_auth_failures_total',
    help: 'Refused authentications, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'deploy_agent_' })
  }

  text(): Promise<string> {
    return this.registry.metrics()
  }

  get contentType(): string {
    return this.registry.contentType
  }
}
