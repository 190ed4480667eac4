#!/usr/bin/env node
// Runs the compiled agent in dist/ (`npm run build`) when it is at least as new as every source file in agent/;
// otherwise the TypeScript sources through tsx's loader, so `npm ci` alone is enough and an edited source is never
// shadowed by a stale build. DEPLOY_AGENT_FROM_SOURCE=1 always runs the sources. dist/ mirrors agent/ at the same
// depth, so relative paths (package.json, config/) resolve alike from both. An installed copy (scripts/install.sh,
// the Dockerfile) has dist/ and no agent/, so it never runs through a TypeScript loader.
import { readdirSync, statSync } from 'node:fs'

const compiled = new URL('../dist/cli/main.js', import.meta.url)
const sources = new URL('../agent/', import.meta.url)

function mtimeMs(url) {
  try {
    return statSync(url).mtimeMs
  } catch {
    return null
  }
}

function buildIsFresh() {
  const built = mtimeMs(compiled)
  if (built === null) return false
  let names
  try {
    names = readdirSync(sources, { recursive: true })
  } catch {
    return true // installed without the sources: the build is all there is
  }
  return names.every((name) => !name.endsWith('.ts') || (mtimeMs(new URL(name, sources)) ?? 0) <= built)
}

if (process.env.DEPLOY_AGENT_FROM_SOURCE !== '1' && buildIsFresh()) {
  await import(compiled.href)
} else {
  // Development only. tsx's disk cache lives in the shared temp dir and tsx does not check who owns it: a local
  // user who pre-creates it would have their code run by whoever runs the sources (root too). Compile in memory.
  // A loader preloaded by --import/--loader may already have started Node's module-hooks thread, which copied the
  // environment at start and would not see the variable set here: then it must come from outside.
  const preloaded = /--(?:import|loader|experimental-loader)\b/.test(`${process.env.NODE_OPTIONS ?? ''} ${process.execArgv.join(' ')}`)
  if (preloaded && !process.env.TSX_DISABLE_CACHE) {
    console.error(
      'deploy-agent: running the TypeScript sources beside a preloaded loader (--import/--loader) needs TSX_DISABLE_CACHE=1 in the environment (tsx would otherwise use a disk cache in the shared temp dir); or run `npm run build` first',
    )
    process.exit(2)
  }
  process.env.TSX_DISABLE_CACHE = '1'
  const { register } = await import('tsx/esm/api')
  register()
  await import('../agent/cli/main.ts')
}
