// Cold start of `deploy-agent serve` to its first /healthz answer, and its idle RSS, against a bare Node HTTP
// server started the same way in the same run.
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { fmt, type Row } from './lib.js'

const BIN = fileURLToPath(new URL('../bin/deploy-agent.js', import.meta.url))
const RUNS = 5

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]) / 1024
}

/** Starts a process, polls until `url` answers, returns ms to first answer and RSS after `idleMs`. */
async function coldStart(args: string[], url: string, idleMs: number): Promise<{ ms: number; rss: number }> {
  const start = performance.now()
  const child = spawn(process.execPath, args, { stdio: 'ignore' })
  try {
    for (;;) {
      const ok = await fetch(url).then((r) => r.ok, () => false)
      if (ok) break
      if (performance.now() - start > 20_000) throw new Error(`${args.join(' ')} did not answer in 20 s`)
      await new Promise((r) => setTimeout(r, 5))
    }
    const ms = performance.now() - start
    await new Promise((r) => setTimeout(r, idleMs))
    return { ms, rss: await rssMb(child.pid as number) }
  } finally {
    child.kill('SIGKILL')
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number

export async function benchStartup(): Promise<Row[]> {
  const dir = await mkdtemp(join(tmpdir(), 'deploy-agent-bench-'))
  try {
    const agent: Array<{ ms: number; rss: number }> = []
    const bare: Array<{ ms: number; rss: number }> = []
    for (let i = 0; i < RUNS; i++) {
      const port = await freePort()
      const config = join(dir, `agent-${i}.yaml`)
      await writeFile(config, `listen: { port: ${port} }\nstateDir: state-${i}\naudience: bench\napps: {}\n`)
      agent.push(await coldStart([BIN, 'serve', '--config', config], `http://127.0.0.1:${port}/healthz`, 2000))
      const barePort = await freePort()
      const script = `require('http').createServer((q, s) => s.end('ok')).listen(${barePort}, '127.0.0.1')`
      bare.push(await coldStart(['-e', script], `http://127.0.0.1:${barePort}/`, 2000))
    }
    const ms = median(agent.map((r) => r.ms))
    const bareMs = median(bare.map((r) => r.ms))
    const rss = median(agent.map((r) => r.rss))
    const bareRss = median(bare.map((r) => r.rss))
    return [
      { figure: `cold start to /healthz (median of ${RUNS})`, value: `${fmt(ms)} ms`, baseline: `${fmt(bareMs)} ms (bare node http)`, ratio: `${fmt(ms / bareMs, 1)}×`, target: '< 1.5 s', met: ms < 1500 },
      { figure: 'idle RSS after 2 s', value: `${fmt(rss, 1)} MB`, baseline: `${fmt(bareRss, 1)} MB (bare node http)`, ratio: `${fmt(rss / bareRss, 1)}×`, target: '< 90 MB', met: rss < 90 },
    ]
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}
