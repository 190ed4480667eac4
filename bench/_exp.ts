import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, rm } from 'node:fs/promises'
import { pipeline } from 'node:stream/promises'
import { captureToFile } from '../agent/backup/proc.js'
const url = 'postgresql://postgres@127.0.0.1:5432/deploy_agent_bench_1g'
const env = { ...process.env, PGPASSWORD: 'postgres' }
const exit = (c: ReturnType<typeof spawn>) => new Promise((r) => c.on('close', r))
async function plain(f: string) { await exit(spawn('pg_dump', ['-Fc', '-f', f, url], { env, stdio: 'ignore' })); const h = await open(f, 'r'); await h.sync(); await h.close() }
async function piped(f: string) { await captureToFile(['pg_dump', '-Fc', url], env, f) }
async function fd(f: string) {
  const h = await open(f, 'wx', 0o600)
  await exit(spawn('pg_dump', ['-Fc', url], { env, stdio: ['ignore', h.fd, 'pipe'] }))
  const hash = createHash('sha256'); await pipeline(createReadStream(f, { highWaterMark: 1 << 20 }), hash); hash.digest('hex')
  await h.sync(); await h.close()
}
const kinds: Record<string, (f: string) => Promise<void>> = { plain, piped, fd }
const times: Record<string, number[]> = { plain: [], piped: [], fd: [] }
const names = Object.keys(kinds)
for (let i = 0; i < 10; i++) for (let j = 0; j < names.length; j++) {
  const k = names[(i + j) % names.length]!
  const f = `/tmp/exp/${k}.dump`; await rm(f, { force: true })
  const t0 = performance.now(); await kinds[k]!(f); times[k]!.push(Math.round(performance.now() - t0))
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
console.log(JSON.stringify(times))
console.log('piped/plain', med(times.piped!.map((x, i) => x / times.plain![i]!)).toFixed(3), 'fd/plain', med(times.fd!.map((x, i) => x / times.plain![i]!)).toFixed(3))
