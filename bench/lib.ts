// Small shared pieces of the benchmark scripts: timing loops and the results table.
import { readFile, writeFile } from 'node:fs/promises'

/** The NODE_OPTIONS systemd/deploy-agent.service (and the Dockerfile) run the agent with: the agent as installed. */
export async function installedNodeOptions(): Promise<string> {
  const unit = await readFile(new URL('../systemd/deploy-agent.service', import.meta.url), 'utf8')
  return /^Environment=NODE_OPTIONS=(.*)$/m.exec(unit)?.[1]?.trim() ?? ''
}

/** Runs `fn` repeatedly for about `ms` milliseconds and returns operations per second. */
export function opsPerSecond(fn: () => unknown, ms = 1500): number {
  for (let i = 0; i < 1000; i++) fn() // warm-up
  let ops = 0
  const start = process.hrtime.bigint()
  const budget = BigInt(ms) * 1_000_000n
  while (process.hrtime.bigint() - start < budget) {
    for (let i = 0; i < 100; i++) fn()
    ops += 100
  }
  return ops / (Number(process.hrtime.bigint() - start) / 1e9)
}

export interface Row {
  figure: string
  value: string
  baseline: string
  ratio: string
  target: string
  met: boolean | null
}

export function formatRows(rows: Row[]): string {
  const header = '| figure | value | baseline (same run) | ratio | target | met |\n|---|---|---|---|---|---|'
  const lines = rows.map(
    (r) => `| ${r.figure} | ${r.value} | ${r.baseline} | ${r.ratio} | ${r.target} | ${r.met === null ? '—' : r.met ? 'yes' : 'NO'} |`,
  )
  return [header, ...lines].join('\n')
}

/** A hand-written section of latest.md from this heading on (gaps and their causes) survives a re-run. */
const KEPT_HEADING = '## Analysis (hand-written, kept across runs)'

export async function writeResults(rows: Row[], notes: string[]): Promise<string> {
  const file = new URL('./results/latest.md', import.meta.url)
  const previous = await readFile(file, 'utf8').catch(() => '')
  const kept = previous.includes(KEPT_HEADING) ? `\n${previous.slice(previous.indexOf(KEPT_HEADING))}` : ''
  const text = `# Benchmark results\n\nMeasured ${new Date().toISOString()} on ${process.platform}/${process.arch}, Node ${process.version}.\n\n${formatRows(rows)}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n${kept}`
  await writeFile(file, text)
  return text
}

export const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
