/**
 * The `skip` option for a test needing an engine: a reason when the engine is absent, false when it is present
 * or when DEPLOY_AGENT_REQUIRE_ENGINES=1 (CI), so that a missing engine fails there instead of skipping.
 */
export function skipUnless(available: boolean, engine: string): string | false {
  if (available || process.env.DEPLOY_AGENT_REQUIRE_ENGINES === '1') return false
  return `${engine} is not available on this machine`
}
