// config/grafana-dashboard.json against the metrics the agent registers: a query naming a metric the agent does not
// export would chart nothing, and a metric of the agent's own that no panel shows is a blind spot.
import { readFile } from 'node:fs/promises'
import t from 'tap'
import { Metrics } from '../../agent/observability/metrics.js'

interface Panel {
  id: number
  type: string
  title: string
  datasource?: unknown
  gridPos: { x: number; y: number; w: number; h: number }
  targets?: Array<{ expr?: string; refId: string }>
  panels?: Panel[]
}

const dashboard = JSON.parse(await readFile(new URL('../../config/grafana-dashboard.json', import.meta.url), 'utf8')) as {
  title: string
  uid: string
  schemaVersion: number
  panels: Panel[]
  templating: { list: Array<{ name: string; type: string; query: unknown }> }
}
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row')
const queries = [
  ...panels.flatMap((p) => (p.targets ?? []).map((target) => ({ where: `${p.title} ${target.refId}`, text: target.expr ?? '' }))),
  ...dashboard.templating.list
    .filter((v) => v.type === 'query')
    .map((v) => ({ where: `variable ${v.name}`, text: JSON.stringify(v.query) })),
]
const namesIn = (text: string) => text.match(/\bdeploy_agent_[a-z0-9_]+/g) ?? []

/** Every series name a registry exports: histograms and summaries add their _bucket/_sum/_count series. */
async function seriesNames(metrics: Metrics): Promise<Map<string, string>> {
  const names = new Map<string, string>()
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    names.set(m.name, m.name)
    const type = String(m.type)
    const suffixes = type === 'histogram' ? ['_bucket', '_sum', '_count'] : type === 'summary' ? ['_sum', '_count'] : []
    for (const s of suffixes) names.set(m.name + s, m.name)
  }
  return names
}

t.test('Grafana dashboard: importable shape, every panel queries through the datasource variable', async (t) => {
  t.equal(dashboard.uid, 'deploy-agent')
  t.ok(dashboard.schemaVersion >= 30)
  t.same(
    dashboard.templating.list.map((v) => v.name),
    ['datasource', 'app', 'env'],
  )
  const ids = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).map((p) => p.id)
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique')
  for (const p of panels) {
    t.match(p, { datasource: { uid: '${datasource}' }, targets: [{ expr: /\S/ }] }, p.title)
    t.ok(p.gridPos.x + p.gridPos.w <= 24, `${p.title} fits the 24-column grid`)
  }
})

t.test('Grafana dashboard: every metric a query names is registered by new Metrics()', async (t) => {
  const exported = await seriesNames(new Metrics())
  const unknown = queries.flatMap((q) =>
    namesIn(q.text)
      .filter((n) => !exported.has(n))
      .map((n) => `${q.where}: ${n}`),
  )
  t.same(unknown, [], 'no query names a metric the agent does not export')
  t.ok(queries.length > 10 && queries.every((q) => namesIn(q.text).length > 0), 'every query names a metric of the agent')
})

t.test("Grafana dashboard: every metric of the agent's own is on a panel", async (t) => {
  const own = await seriesNames(new Metrics({ defaultMetrics: false }))
  const shown = new Set(queries.flatMap((q) => namesIn(q.text)).map((n) => own.get(n)))
  const missing = [...new Set(own.values())].filter((name) => !shown.has(name))
  t.same(missing, [], 'no metric without a panel')
})
