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

/**
 * A config of one app, `shop`, with one env, `production` on ports 18001/18002: `appKeys` and `envKeys` are YAML
 * lines (indented 4 and 8 spaces, each ending in a newline) added to the app and to the env.
 */
export function shopConfig(appKeys = '', envKeys = ''): string {
  return `
audience: web-1
apps:
  shop:
    repo: /srv/shop.git
${appKeys}    envs:
      production:
        ref: "tag:v*"
        ports: [18001, 18002]
${envKeys}`
}
