// The deploy metrics feed: what each deploy event does to the counters, the phase histogram and the gauges read
// from the deploy side at a scrape.
import t from 'tap'
import type { DeployEvent } from '../../agent/deploy/transition.js'
import { Metrics, recordDeploy, type EnvSnapshot, type PitrSnapshot } from '../../agent/observability/metrics.js'
import type { Deploy, DeployState } from '../../agent/store/deploys.js'

/** A deploy whose trail is `states`, each entry `seconds` after the start. */
function deploy(states: Array<[DeployState, number]>, over: Partial<Deploy> = {}): Deploy {
  const at = (s: number) => new Date(Date.UTC(2026, 0, 1) + s * 1000).toISOString()
  const last = states[states.length - 1] as [DeployState, number]
  return {
    id: 'd_aaaaaaaaaaaa',
    kind: 'deploy',
    app: 'shop',
    env: 'production',
    ref: 'v1.0.0',
    commit: 'c'.repeat(40),
    release: 'v1.0.0',
    reason: null,
    keyId: null,
    state: last[0],
    states: states.map(([state, s]) => ({ state, at: at(s) })),
    error: null,
    createdAt: at(0),
    finishedAt: null,
    details: {},
    ...over,
  }
}

/** Replays a trail through the feed as moveDeploy would announce it. */
function replay(metrics: Metrics, states: Array<[DeployState, number]>, over: Partial<Deploy> = {}): void {
  for (let i = 1; i < states.length; i++) {
    recordDeploy(metrics, { type: 'state', deploy: deploy(states.slice(0, i + 1), over), was: (states[i - 1] as [DeployState, number])[0] })
  }
}

async function values(metrics: Metrics, name: string) {
  const metric = metrics.registry.getSingleMetric(name)
  if (!metric) throw new Error(`${name} is not registered`)
  return (await metric.get()).values
}

t.test('recordDeploy: a finished deploy counts once by result, and every state it left is timed', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false })
  replay(metrics, [
    ['QUEUED', 0],
    ['RESOLVING', 1],
    ['BUILDING', 3],
    ['STARTING', 13],
    ['VERIFYING', 14],
    ['SWITCHING', 20],
    ['OBSERVING', 21],
    ['SUCCEEDED', 51],
  ])
  t.same(await values(metrics, 'deploy_agent_deploys_total'), [
    { value: 1, labels: { app: 'shop', env: 'production', kind: 'deploy', result: 'SUCCEEDED' } },
  ])
  const sums = (await values(metrics, 'deploy_agent_deploy_phase_duration_seconds'))
    .filter((v) => (v as { metricName?: string }).metricName === 'deploy_agent_deploy_phase_duration_seconds_sum')
    .map((v) => [v.labels.phase, v.value])
  t.same(sums, [
    ['QUEUED', 1],
    ['RESOLVING', 2],
    ['BUILDING', 10],
    ['STARTING', 1],
    ['VERIFYING', 6],
    ['SWITCHING', 1],
    ['OBSERVING', 30],
  ])
  t.same(await values(metrics, 'deploy_agent_rollbacks_total'), [], 'no rollback')
})

t.test('recordDeploy: a deploy that ends ROLLED_BACK is an automatic rollback; a manual rollback that succeeds is manual', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false })
  replay(metrics, [
    ['QUEUED', 0],
    ['SWITCHING', 1],
    ['OBSERVING', 2],
    ['ROLLING_BACK', 5],
    ['ROLLED_BACK', 7],
  ])
  replay(
    metrics,
    [
      ['QUEUED', 0],
      ['STARTING', 1],
      ['VERIFYING', 2],
      ['SWITCHING', 3],
      ['SUCCEEDED', 4],
    ],
    { kind: 'rollback' },
  )
  replay(
    metrics,
    [
      ['QUEUED', 0],
      ['STARTING', 1],
      ['FAILED', 2],
    ],
    { kind: 'rollback' },
  )
  t.same(
    (await values(metrics, 'deploy_agent_rollbacks_total')).map((v) => [v.labels.trigger, v.value]),
    [
      ['automatic', 1],
      ['manual', 1],
    ],
    'a failed manual rollback put nothing back',
  )
  t.same(
    (await values(metrics, 'deploy_agent_deploys_total')).map((v) => [v.labels.kind, v.labels.result, v.value]),
    [
      ['deploy', 'ROLLED_BACK', 1],
      ['rollback', 'SUCCEEDED', 1],
      ['rollback', 'FAILED', 1],
    ],
  )
})

t.test('recordDeploy: failed probes count by the phase they failed in', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false })
  const probe = (phase: DeployState): DeployEvent => ({
    type: 'probe_failed',
    deploy: deploy([
      ['QUEUED', 0],
      [phase, 1],
    ]),
    phase,
  })
  for (const phase of ['VERIFYING', 'OBSERVING', 'OBSERVING'] as const) recordDeploy(metrics, probe(phase))
  t.same(
    (await values(metrics, 'deploy_agent_health_check_failures_total')).map((v) => [v.labels.phase, v.value]),
    [
      ['VERIFYING', 1],
      ['OBSERVING', 2],
    ],
  )
  t.same(await values(metrics, 'deploy_agent_deploys_total'), [], 'a probe ends nothing')
})

t.test('recordDeploy: a trail that does not end in the state left (journal out of step) times nothing', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false })
  recordDeploy(metrics, {
    type: 'state',
    deploy: deploy([
      ['QUEUED', 0],
      ['RESOLVING', 1],
    ]),
    was: 'BUILDING',
  })
  t.same(
    (await values(metrics, 'deploy_agent_deploy_phase_duration_seconds')).filter((v) => v.value !== 0),
    [],
  )
})

t.test(
  'Metrics.watchEnvs: queue length and the live release are read at each scrape; a replaced release leaves no stale series',
  async (t) => {
    const metrics = new Metrics({ defaultMetrics: false })
    let envs: EnvSnapshot[] = [
      { app: 'shop', env: 'production', queued: 1, live: { release: 'v1.0.0', commit: 'a'.repeat(40) } },
      { app: 'shop', env: 'staging', queued: 0, live: null },
    ]
    metrics.watchEnvs(() => envs)
    let text = await metrics.text()
    t.match(text, 'deploy_agent_deploy_queue_length{app="shop",env="production"} 1')
    t.match(text, 'deploy_agent_deploy_queue_length{app="shop",env="staging"} 0')
    t.match(text, `deploy_agent_release_info{app="shop",env="production",release="v1.0.0",commit="${'a'.repeat(40)}"} 1`)
    t.notMatch(text, /release_info\{[^}]*env="staging"/, 'an env with nothing live has no release series')

    envs = [{ app: 'shop', env: 'production', queued: 0, live: { release: 'v1.1.0', commit: 'b'.repeat(40) } }]
    text = await metrics.text()
    t.match(text, 'release="v1.1.0"')
    t.notMatch(text, 'release="v1.0.0"', 'the old live release is gone')
    t.match(text, 'deploy_agent_deploy_queue_length{app="shop",env="production"} 0')
  },
)

t.test('recordDeploy: a deploy ended by an unconfirmed nginx reload counts once in proxy_reload_unconfirmed', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false })
  const unconfirmed = {
    code: 'proxy_reload_unconfirmed',
    message: 'nginx reload not confirmed within 5000 ms: no new worker process appeared',
  }
  const trail: Array<[DeployState, number]> = [
    ['QUEUED', 0],
    ['SWITCHING', 10],
    ['ROLLING_BACK', 15],
    ['ROLLED_BACK', 16],
  ]
  replay(metrics, trail, { error: unconfirmed })
  // The switch back of an automatic rollback: the code says rollback_failed, the message still names the reload.
  replay(
    metrics,
    [
      ['OBSERVING', 0],
      ['ROLLING_BACK', 5],
      ['FAILED', 11],
    ],
    {
      env: 'staging',
      error: { code: 'rollback_failed', message: `3 probes failed; rolling back failed too: ${unconfirmed.message}` },
    },
  )
  // Other failures are not counted.
  replay(metrics, trail, { env: 'other', error: { code: 'observe_failed', message: '3 probes failed' } })
  t.same(await values(metrics, 'deploy_agent_proxy_reload_unconfirmed_total'), [
    { value: 1, labels: { app: 'shop', env: 'production' } },
    { value: 1, labels: { app: 'shop', env: 'staging' } },
  ])
})

t.test('Metrics: a swarm release has one series per node serving it, gone when the release is replaced', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false })
  let envs: EnvSnapshot[] = [
    { app: 'shop', env: 'production', queued: 0, live: { release: 'v1.0.0', commit: 'a'.repeat(40), nodes: ['10.0.0.6', '127.0.0.1'] } },
  ]
  metrics.watchEnvs(() => envs)
  let text = await metrics.text()
  t.match(text, 'deploy_agent_release_node_info{app="shop",env="production",release="v1.0.0",node="10.0.0.6"} 1')
  t.match(text, 'deploy_agent_release_node_info{app="shop",env="production",release="v1.0.0",node="127.0.0.1"} 1')
  envs = [{ app: 'shop', env: 'production', queued: 0, live: { release: 'v1.1.0', commit: 'b'.repeat(40), nodes: ['127.0.0.1'] } }]
  text = await metrics.text()
  t.notMatch(text, 'node="10.0.0.6"', 'a node that no longer serves has no series')
  t.notMatch(text, 'release="v1.0.0"')
})

t.test('Metrics: each PITR env as last checked, read at the scrape; a value not read leaves no series', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false })
  let envs: PitrSnapshot[] = [
    {
      app: 'shop',
      env: 'production',
      receiveLagBytes: 4096,
      walStatus: 'reserved',
      safeWalSize: null,
      walDiskFreeBytes: 5_000_000,
      receiver: { streaming: true },
    },
    {
      app: 'shop',
      env: 'staging',
      receiveLagBytes: null,
      walStatus: null,
      safeWalSize: null,
      walDiskFreeBytes: 7,
      receiver: { streaming: false },
    },
  ]
  metrics.watchPitr(() => envs)
  const text = await metrics.text()
  t.match(text, /deploy_agent_pitr_receive_lag_bytes\{app="shop",env="production"\} 4096/)
  t.notMatch(text, /deploy_agent_pitr_receive_lag_bytes\{app="shop",env="staging"\}/, 'a database not read has no lag')
  t.match(text, /deploy_agent_pitr_slot_wal_status\{app="shop",env="production",status="reserved"\} 1/)
  t.notMatch(text, /deploy_agent_pitr_slot_safe_wal_size_bytes\{/, 'no max_slot_wal_keep_size, no safe_wal_size')
  t.match(text, /deploy_agent_pitr_wal_disk_free_bytes\{app="shop",env="staging"\} 7/)
  t.match(text, /deploy_agent_pitr_receiver_up\{app="shop",env="production"\} 1/)
  t.match(text, /deploy_agent_pitr_receiver_up\{app="shop",env="staging"\} 0/)
  envs = [{ ...(envs[0] as PitrSnapshot), walStatus: 'lost', safeWalSize: -1024 }]
  const after = await metrics.text()
  t.match(after, /deploy_agent_pitr_slot_wal_status\{app="shop",env="production",status="lost"\} 1/)
  t.notMatch(after, /status="reserved"/, 'the old status goes')
  t.notMatch(after, /env="staging"/, 'an env no longer watched goes')
  t.match(after, /deploy_agent_pitr_slot_safe_wal_size_bytes\{app="shop",env="production"\} -1024/)
})
