#!/usr/bin/env node
// Runs the compiled agent in dist/ (`npm run build`) when it is at least as new as every source file in agent/;
// otherwise the TypeScript sources through tsx's loader, so `npm ci` alone is enough and an edited source is never
// shadowed by a stale build. DEPLOY_AGENT_FROM_SOURCE=1 always runs the sources. dist/ mirrors agent/ at the same
// depth, so relative paths (package.json, config/) resolve alike from both.
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
  const { register } = await import('tsx/esm/api')
  register()
  await import('../agent/cli/main.ts')
}
