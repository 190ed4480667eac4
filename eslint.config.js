// Lint rules for the TypeScript sources; layout is prettier's (.prettierrc.json), import cycles are dpdm's
// (`npm run lint` runs all three).
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/', '.tap/', '.deploy-agent/', '**/*.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Escaping and refusing control characters (terminal output, refs, tables) is deliberate here.
      'no-control-regex': 'off',
    },
  },
)
