// Cold start of `deploy-agent serve` to its first /healthz answer, and its idle RSS, in both ways bin/deploy-agent.js
// runs it — the compiled build in dist/ (`npm run build`, what `npm start` runs) and the TypeScript sources through
// tsx — against a bare Node HTTP server started the same way in the same run.
import { execFile, spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { freePort } from '../test/helpers/ports.js'
import { fmt, formatRows, installedNodeOptions, type Row } from './lib.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const BIN = join(ROOT, 'bin', 'deploy-agent.js')
const RUNS = 5
const IDLE_MS = 2000

export const startupNotes: string[] = []

async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]) / 1024
}

/** Starts a process, polls until `url` answers, returns ms to first answer and RSS after `idleMs`. */
async function coldStart(args: string[], url: string, env: NodeJS.ProcessEnv = process.env): Promise<{ ms: number; rss: number }> {
  const start = performance.now()
  const child = spawn(process.execPath, args, { stdio: 'ignore', env })
  try {
    for (;;) {
      const ok = await fetch(url).then(
        (r) => r.ok,
        () => false,
      )
      if (ok) break
      if (child.exitCode !== null) throw new Error(`${args.join(' ')} exited with ${child.exitCode}`)
      if (performance.now() - start > 20_000) throw new Error(`${args.join(' ')} did not answer in 20 s`)
      await new Promise((r) => setTimeout(r, 5))
    }
    const ms = performance.now() - start
    await new Promise((r) => setTimeout(r, IDLE_MS))
    return { ms, rss: await rssMb(child.pid as number) }
  } finally {
    child.kill('SIGKILL')
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number

type Mode = 'unit' | 'compiled' | 'tsx' | 'bare'

export async function benchStartup(): Promise<Row[]> {
  startupNotes.length = 0
  // The build is what the compiled figures measure: made fresh from the tree, untimed.
  const built = performance.now()
  await promisify(execFile)(
    process.execPath,
    [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.build.json')],
    { cwd: ROOT },
  )
  const buildMs = performance.now() - built
  const nodeOptions = await installedNodeOptions()
  const dir = await mkdtemp(join(tmpdir(), 'deploy-agent-bench-'))
  try {
    const runs: Record<Mode, Array<{ ms: number; rss: number }>> = { unit: [], compiled: [], tsx: [], bare: [] }
    // One untimed start per mode first: the tsx cache and the OS file cache warm, as on a box that started before.
    for (let i = -1; i < RUNS; i++) {
      for (const mode of ['unit', 'compiled', 'tsx', 'bare'] as const) {
        const port = await freePort()
        let result: { ms: number; rss: number }
        if (mode === 'bare') {
          const script = `require('http').createServer((q, s) => s.end('ok')).listen(${port}, '127.0.0.1')`
          result = await coldStart(['-e', script], `http://127.0.0.1:${port}/`)
        } else {
          const config = join(dir, `agent-${mode}-${i}.yaml`)
          await writeFile(config, `listen: { port: ${port} }\nstateDir: state-${mode}-${i}\naudience: bench\napps: {}\n`)
          const env = {
            ...process.env,
            DEPLOY_AGENT_FROM_SOURCE: mode === 'tsx' ? '1' : '0',
            NODE_OPTIONS: mode === 'unit' ? nodeOptions : '',
          }
          result = await coldStart([BIN, 'serve', '--config', config], `http://127.0.0.1:${port}/healthz`, env)
        }
        if (i >= 0) runs[mode].push(result)
      }
    }
    const ms = (mode: Mode) => median(runs[mode].map((r) => r.ms))
    const rss = (mode: Mode) => median(runs[mode].map((r) => r.rss))
    const bareMs = ms('bare')
    const bareRss = rss('bare')
    const all = (mode: Mode, key: 'ms' | 'rss') => runs[mode].map((r) => fmt(r[key], key === 'rss' ? 1 : 0)).join(', ')
    startupNotes.push(
      `Cold start: \`node bin/deploy-agent.js serve\` on a config with no apps, ${RUNS} runs per mode after one untimed run each, modes interleaved; time from spawn to the first 200 of /healthz (polled every 5 ms); RSS = VmRSS ${fmt(IDLE_MS / 1000)} s later. Compiled: dist/ from \`npm run build\` (made fresh by the bench, ${fmt(buildMs / 1000, 1)} s, untimed); "as installed": the same with the NODE_OPTIONS of systemd/deploy-agent.service and the Dockerfile (\`${nodeOptions}\`), the way operators run it. tsx: DEPLOY_AGENT_FROM_SOURCE=1 (the sources through tsx's loader, compiled in memory: the bin turns tsx's disk cache off). Bare: \`node -e\` with an http server answering "ok". All runs — as installed: ${all('unit', 'ms')} ms, ${all('unit', 'rss')} MB; compiled: ${all('compiled', 'ms')} ms, ${all('compiled', 'rss')} MB; tsx: ${all('tsx', 'ms')} ms, ${all('tsx', 'rss')} MB; bare: ${all('bare', 'ms')} ms, ${all('bare', 'rss')} MB.`,
    )
    const row = (mode: Exclude<Mode, 'bare'>, label: string, target: boolean): Row[] => [
      {
        figure: `cold start to /healthz, ${label} (median of ${RUNS})`,
        value: `${fmt(ms(mode))} ms`,
        baseline: `${fmt(bareMs)} ms (bare node http)`,
        ratio: `${fmt(ms(mode) / bareMs, 1)}×`,
        target: target ? '< 1.5 s' : '—',
        met: target ? ms(mode) < 1500 : null,
      },
      {
        figure: `idle RSS after ${fmt(IDLE_MS / 1000)} s, ${label}`,
        value: `${fmt(rss(mode), 1)} MB`,
        baseline: `${fmt(bareRss, 1)} MB (bare node http)`,
        ratio: `${fmt(rss(mode) / bareRss, 1)}×`,
        target: target ? '< 90 MB' : '—',
        met: target ? rss(mode) < 90 : null,
      },
    ]
    return [
      ...row('unit', `compiled dist/ as installed (NODE_OPTIONS=${nodeOptions})`, true),
      ...row('compiled', 'compiled dist/, no NODE_OPTIONS', false),
      ...row('tsx', 'sources through tsx', false),
    ]
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rows = await benchStartup()
  console.log(`${formatRows(rows)}\n\n${startupNotes.map((n) => `- ${n}`).join('\n')}`)
}
