// Config problems as check-config lists them, for the config unit tests.
import { parseConfig } from '../../agent/config/load.js'
import { ConfigError } from '../../agent/errors.js'

/** Every problem `yaml` has (key path and message), none when it parses. */
export function configProblems(yaml: string): string[] {
  try {
    parseConfig(yaml, {}, 'agent.yaml', '/etc/deploy-agent')
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  return []
}
