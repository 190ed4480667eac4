// Small shared pieces of the benchmark scripts: timing loops and the results table.
import { writeFile } from 'node:fs/promises'

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
  const lines = rows.map((r) => `| ${r.figure} | ${r.value} | ${r.baseline} | ${r.ratio} | ${r.target} | ${r.met === null ? '—' : r.met ? 'yes' : 'NO'} |`)
  return [header, ...lines].join('\n')
}

export async function writeResults(rows: Row[], notes: string[]): Promise<string> {
  const text = `# Benchmark results\n\nMeasured ${new Date().toISOString()} on ${process.platform}/${process.arch}, Node ${process.version}.\n\n${formatRows(rows)}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`
  await writeFile(new URL('./results/latest.md', import.meta.url), text)
  return text
}

export const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
