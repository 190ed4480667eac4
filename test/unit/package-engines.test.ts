// package.json's engines claim is true: every Node version it admits is admitted by every package the lockfile
// installs, so `npm ci` on a supported Node warns about no engine (one known exception, named below).
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import t from 'tap'

// npm's own range logic (semver is in the tree through several packages; it ships no types, so the one call is typed here).
const semver = createRequire(import.meta.url)('semver') as { subset(sub: string, dom: string): boolean }

/** Packages whose engines claim is narrower than ours, and why that is acceptable. */
const KNOWN: Record<string, string> = {
  // fastify loads light-my-request only for app.inject (tests); cookie 2 is plain JS and runs on Node 20.
  'node_modules/cookie': '>=22',
}

t.test("package.json: the engines range is within every installed package's engines", async (t) => {
  const pkg = JSON.parse(await readFile('package.json', 'utf8')) as { engines: { node: string } }
  const lock = JSON.parse(await readFile('package-lock.json', 'utf8')) as {
    packages: Record<string, { engines?: { node?: string } | string[] }>
  }
  const ours = pkg.engines.node
  t.equal(lock.packages['']?.engines && (lock.packages[''].engines as { node?: string }).node, ours, 'the lockfile says the same')
  const narrower = Object.entries(lock.packages)
    .filter(([path]) => path !== '')
    .map(([path, entry]) => [path, Array.isArray(entry.engines) ? undefined : entry.engines?.node] as const)
    .filter(([path, range]) => range !== undefined && KNOWN[path] !== range && !semver.subset(ours, range))
  t.same(narrower, [], `every package admits all of ${ours}`)
})
