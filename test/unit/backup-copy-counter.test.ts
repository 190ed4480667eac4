import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { CopyRowCounter, qualifiedName } from '../../agent/pg/admin.js'

t.test('CopyRowCounter: counts the rows of each COPY block, however the script is chunked', async (t) => {
  const script = [
    'CREATE TABLE public.a (id integer);',
    'COPY public.a (id) FROM stdin;',
    '1',
    '2',
    '3',
    '\\.',
    'COPY "Odd"."My ""Table""" (x) FROM stdin;',
    `${'x'.repeat(5000)}\tlong row`,
    '\\.',
    'COPY public.empty (id) FROM stdin;',
    '\\.',
    "SELECT pg_catalog.setval('public.a_id_seq', 3, true);",
    '',
  ].join('\n')
  for (const size of [1, 3, 100, 1 << 16]) {
    const counter = new CopyRowCounter()
    const bytes = Buffer.from(script)
    const chunks: Buffer[] = []
    for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size))
    await pipeline(Readable.from(chunks), counter)
    t.same(counter.tables, { 'public.a': 3, '"Odd"."My ""Table"""': 1, 'public.empty': 0 }, `chunks of ${size}`)
  }
})

t.test('qualifiedName: bare and quoted parts', async (t) => {
  t.equal(qualifiedName('public.t (id) FROM stdin;'), 'public.t')
  t.equal(qualifiedName('"a b"."c.d" FROM stdin;'), '"a b"."c.d"')
  t.equal(qualifiedName('t FROM stdin;'), 't')
  t.equal(qualifiedName('"unterminated'), null)
  t.equal(qualifiedName('(x)'), null)
  t.equal(qualifiedName('public.(x)'), null)
})
