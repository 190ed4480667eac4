const ANSI = /\x1b\[[0-9;]*m/g

/** The width a cell takes on a terminal (colour codes take none). */
function visibleLength(cell: string): number {
  return cell.replace(ANSI, '').length
}

/** Aligned columns for human output; the first row is the header. Cells may carry colour codes. */
export function formatTable(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => visibleLength(r[i] ?? '')))) ?? []
  const pad = (cell: string, width: number) => cell + ' '.repeat(Math.max(0, width - visibleLength(cell)))
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : pad(cell, widths[i] ?? 0))).join('  ')).join('\n')
}
