// Type-checks generated TypeScript sources with the TypeScript compiler API, so JSON/YAML
// artifacts can be checked against the published TypeScript types of a schema: an object
// literal assigned to a typed constant gets excess-property checks (typos, unknown fields)
// as well as type checks. Returns {fileName: [diagnostic text, ...]} for files with errors.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

export function typecheck(dir, files) {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const names = [];
  for (const [name, code] of Object.entries(files)) {
    const p = path.join(dir, name);
    fs.writeFileSync(p, code);
    names.push(p);
  }
  const program = ts.createProgram(names, {
    strict: true, noEmit: true, skipLibCheck: true, target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  });
  const out = {};
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const file = d.file ? path.basename(d.file.fileName) : '(global)';
    let where = '';
    if (d.file && d.start !== undefined) {
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      where = `line ${line + 1}: `;
    }
    (out[file] ??= []).push(where + ts.flattenDiagnosticMessageText(d.messageText, '\n  '));
  }
  return out;
}

// Maps string enums to their literal values, so plain JSON strings ("lastNotNull") are
// assignable where the TypeScript types use enums (ReducerID.lastNotNull).
export const LIT = `type Lit<T> = T extends string ? \`\${T}\` : T extends (infer U)[] ? Lit<U>[]
  : T extends object ? { [K in keyof T]: Lit<T[K]> } : T;\n`;
