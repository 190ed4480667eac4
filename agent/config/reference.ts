// The config reference in docs/configuration.md, derived from the zod schema so it cannot drift: every key path with its type
// and default comes from here; only the "Meaning" column is written by hand (and kept across regenerations).
import { z } from 'zod'
import { configSchema } from './schema.js'

export const REFERENCE_START = '<!-- config-reference:start (npm run docs:config rewrites this table; edit only the Meaning column) -->'
export const REFERENCE_END = '<!-- config-reference:end -->'
export const UNDESCRIBED = 'TODO: describe'
const SECTION_DEFAULT = "its keys' defaults"

export interface ReferenceRow {
  /** `listen.port`, `keys[].alg`, `apps.<app>.envs.<env>.ports` */
  path: string
  type: string
  /** `required`, `—` (unset), "its keys' defaults" for a section, or the default as JSON */
  default: string
}

interface JsonSchema {
  type?: string | string[]
  enum?: unknown[]
  properties?: Record<string, JsonSchema>
  required?: string[]
  additionalProperties?: JsonSchema | boolean
  items?: JsonSchema
  prefixItems?: JsonSchema[]
  anyOf?: JsonSchema[]
  format?: string
  default?: unknown
  /** `{ not: {} }`: a key that is named only to be refused with a reason. */
  not?: JsonSchema
}

function typeOf(s: JsonSchema): string {
  if (s.not) return 'refused'
  if (s.anyOf) return [...new Set(s.anyOf.filter((m) => Object.keys(m).length > 0).map(typeOf))].join(' or ')
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' / ')
  if (s.prefixItems) return `[${s.prefixItems.map(typeOf).join(', ')}]`
  if (s.type === 'array') return `${s.items ? typeOf(s.items) : 'any'}[]`
  if (s.type === 'object') {
    if (s.properties) return 'object'
    return typeof s.additionalProperties === 'object' ? `map of ${typeOf(s.additionalProperties)}` : 'map'
  }
  if (s.type === 'string' && s.format === 'date-time') return 'ISO 8601 time'
  return Array.isArray(s.type) ? s.type.join(' or ') : (s.type ?? 'any')
}

type ZodNode = z.ZodType

/** The schema under optional/default/pipe wrappers: the object, record or array whose children we walk. */
function unwrap(node: ZodNode): ZodNode {
  const def = node._zod.def as { type: string; innerType?: ZodNode; in?: ZodNode }
  if ((def.type === 'optional' || def.type === 'default' || def.type === 'prefault' || def.type === 'nullable') && def.innerType)
    return unwrap(def.innerType)
  if (def.type === 'pipe' && def.in) return unwrap(def.in)
  return node
}

const zodDef = (node: ZodNode) => unwrap(node)._zod.def as { shape?: Record<string, ZodNode>; valueType?: ZodNode; element?: ZodNode }

/**
 * The default as the agent sees it: what the key's schema makes of an absent value. (JSON Schema output loses some
 * defaults, e.g. on lists whose items transform, so the schema itself is asked.)
 */
function defaultOf(node: ZodNode): unknown {
  const result = node.safeParse(undefined)
  return result.success ? result.data : undefined
}

/** `apps` → `<app>`, `envs` → `<env>`: the placeholder for a map's keys. */
const placeholder = (key: string) => `<${key.replace(/s$/, '')}>`

function walk(s: JsonSchema, node: ZodNode, prefix: string, rows: ReferenceRow[]): void {
  const required = new Set(s.required ?? [])
  const shape = zodDef(node).shape ?? {}
  for (const [key, child] of Object.entries(s.properties ?? {})) {
    const path = prefix ? `${prefix}.${key}` : key
    const zodChild = shape[key]
    if (!zodChild) throw new Error(`${path}: in the JSON Schema but not in the zod schema`)
    const value = defaultOf(zodChild)
    // A section's default is the sum of its keys' defaults, each in its own row.
    const section = child.properties !== undefined && value !== null && typeof value === 'object' && Object.keys(value).length > 0
    const shown = section ? SECTION_DEFAULT : value !== undefined ? JSON.stringify(value) : required.has(key) ? 'required' : '—'
    rows.push({ path, type: typeOf(child), default: shown })
    const inner = zodDef(zodChild)
    if (child.properties) walk(child, zodChild, path, rows)
    else if (
      child.type === 'object' &&
      typeof child.additionalProperties === 'object' &&
      child.additionalProperties.properties &&
      inner.valueType
    ) {
      walk(child.additionalProperties, inner.valueType, `${path}.${placeholder(key)}`, rows)
    } else if (child.type === 'array' && child.items?.properties && inner.element) walk(child.items, inner.element, `${path}[]`, rows)
  }
}

/** Every key of the config, depth first in schema order. */
export function referenceRows(): ReferenceRow[] {
  const schema = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as JsonSchema
  const rows: ReferenceRow[] = []
  walk(schema, configSchema, '', rows)
  return rows
}

const cell = (text: string) => text.replaceAll('|', '\\|')

export function renderReference(rows: ReferenceRow[], meanings: ReadonlyMap<string, string>): string {
  const lines = ['| Key | Type | Default | Meaning |', '|---|---|---|---|']
  for (const row of rows) {
    const value = row.default === 'required' || row.default === '—' || row.default === SECTION_DEFAULT ? row.default : `\`${row.default}\``
    lines.push(`| \`${row.path}\` | ${cell(row.type)} | ${cell(value)} | ${meanings.get(row.path) ?? UNDESCRIBED} |`)
  }
  return lines.join('\n')
}

/** The table between the markers, or throws when the page has no such section. */
export function referenceSection(readme: string): { before: string; table: string; after: string } {
  const start = readme.indexOf(REFERENCE_START)
  const end = readme.indexOf(REFERENCE_END)
  if (start < 0 || end < start)
    throw new Error(`docs/configuration.md has no config reference between ${REFERENCE_START} and ${REFERENCE_END}`)
  const from = start + REFERENCE_START.length
  return { before: readme.slice(0, from), table: readme.slice(from, end).trim(), after: readme.slice(end) }
}

/** Key path → Meaning, from the rows of an existing table. */
export function meaningsOf(table: string): Map<string, string> {
  const meanings = new Map<string, string>()
  for (const line of table.split('\n')) {
    const cells = line.split(/(?<!\\)\|/).map((c) => c.trim())
    const path = /^`([^`]+)`$/.exec(cells[1] ?? '')?.[1]
    if (path && cells.length >= 6) meanings.set(path, cells[4] as string)
  }
  return meanings
}

/** The page with its reference table regenerated, keeping the meanings already written. */
export function regenerate(readme: string): string {
  const { before, table, after } = referenceSection(readme)
  return `${before}\n${renderReference(referenceRows(), meaningsOf(table))}\n${after}`
}
