// Glob patterns in config (`tag:v*.*.*`, `allow.refs: ["v*"]`): `*` is any run of characters but `/`, `?` one
// such character; everything else is literal.
export function globToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\*?]/g, (c) => (c === '*' ? '[^/]*' : c === '?' ? '[^/]' : `\\${c}`))
  return new RegExp(`^${body}$`)
}

export function matchesGlob(value: string, pattern: string): boolean {
  return globToRegExp(pattern).test(value)
}
