// Static checks of the Grafana dashboards (grafana/dashboards/*.json):
//  1. each dashboard is a TypeScript literal of @grafana/schema's Dashboard type, with each
//     panel's options and custom field config checked against that panel type's generated
//     Options/FieldConfig types and each query against DataQuery + the Prometheus query fields
//     (excess-property checks catch unknown or misspelt keys);
//  2. layout and wiring: unique panel ids, panels inside the 24-column grid and not overlapping,
//     every panel on the ${datasource} variable;
//  3. every metric a query names is one the coordinator exports (grafana/generate.py --metrics);
//  4. every query is valid PromQL (promtool check rules on a generated rule file).
// Usage: node check-dashboards.mjs DASHBOARD_DIR
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { typecheck, LIT } from './lib/typecheck.mjs';
import { loadDashboards, panelsOf, queriesOf } from './lib/dashboards.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const dir = process.argv[2] ?? path.join(root, 'grafana/dashboards');
let passed = 0, failed = 0;
const pass = (m) => { passed++; console.log(`PASS ${m}`); };
const fail = (m, why) => { failed++; console.log(`FAIL ${m}${why ? `\n     ${why.replace(/\n/g, '\n     ')}` : ''}`); };

const dashboards = loadDashboards(dir);
if (dashboards.length < 4) fail(`dashboards: at least 4 in ${dir}`, `found ${dashboards.length}`);

// 1. Types.
// panel type -> [module with its generated types, whether it has a FieldConfig type]
const PANEL_TYPES = {
  timeseries: ['TimeSeriesPanelCfg_types.gen', true], stat: ['StatPanelCfg_types.gen', false],
  table: ['TablePanelCfg_types.gen', true],
};
const header = `import type { Dashboard, DataQuery } from '@grafana/schema';\n` +
  Object.entries(PANEL_TYPES).map(([t, [m, fc]]) =>
    `import type { Options as ${t}Options${fc ? `, FieldConfig as ${t}FieldConfig` : ''} } from ` +
    `'@grafana/schema/dist/esm/raw/composable/${t}/panelcfg/x/${m}';\n`).join('') + LIT +
  // The Prometheus query fields (the datasource's own schema is not in @grafana/schema).
  `type PromQuery = Lit<DataQuery & { expr: string; legendFormat?: string; range?: boolean;\n` +
  `  instant?: boolean; format?: 'time_series' | 'table' | 'heatmap'; interval?: string; }>;\n`;
const files = {};
for (const [i, d] of dashboards.entries()) {
  const decls = [];
  const copy = structuredClone(d.json);
  const unknownTypes = [];
  const hoist = (p, j) => {
    if (p.type === 'row') { (p.panels ?? []).forEach((q, k) => hoist(q, `${j}_${k}`)); return; }
    if (!PANEL_TYPES[p.type]) { unknownTypes.push(p.type); return; }
    decls.push(`const p${j}_targets: PromQuery[] = ${JSON.stringify(p.targets ?? [])};`);
    decls.push(`const p${j}_options: Lit<${p.type}Options> = ${JSON.stringify(p.options ?? {})};`);
    p.targets = `@@p${j}_targets@@`;
    p.options = `@@p${j}_options@@`;
    if (p.fieldConfig?.defaults?.custom) {
      if (!PANEL_TYPES[p.type][1]) { unknownTypes.push(`${p.type} custom field config`); return; }
      decls.push(`const p${j}_custom: Lit<${p.type}FieldConfig> = ${JSON.stringify(p.fieldConfig.defaults.custom)};`);
      p.fieldConfig.defaults.custom = `@@p${j}_custom@@`;
    }
  };
  (copy.panels ?? []).forEach((p, j) => hoist(p, j));
  if (unknownTypes.length) fail(`${d.file}: panel types have schema types`, unknownTypes.join(', '));
  const body = JSON.stringify(copy, null, 1).replace(/"@@(\w+)@@"/g, '$1');
  files[`d${i}.ts`] = header + decls.join('\n') + `\nexport const d: Lit<Dashboard> = ${body};\n`;
}
const tsErrors = typecheck(path.join(here, '.out', 'dashboards-ts'), files);
dashboards.forEach((d, i) => {
  const errs = tsErrors[`d${i}.ts`];
  if (errs) fail(`${d.file}: matches @grafana/schema Dashboard/panel types`, errs.join('\n'));
  else pass(`${d.file}: matches @grafana/schema Dashboard/panel types`);
});

// 2. Layout and datasource wiring.
const uids = new Set();
for (const d of dashboards) {
  const problems = [];
  if (!d.json.uid || uids.has(d.json.uid)) problems.push(`uid ${d.json.uid} missing or duplicated`);
  uids.add(d.json.uid);
  if (!(d.json.templating?.list ?? []).some((v) => v.type === 'datasource' && v.name === 'datasource'))
    problems.push('no ${datasource} variable');
  const ids = new Set();
  const cells = new Set();
  for (const p of panelsOf(d.json)) {
    if (ids.has(p.id)) problems.push(`duplicate panel id ${p.id}`);
    ids.add(p.id);
    const g = p.gridPos;
    if (!g || g.x < 0 || g.w < 1 || g.x + g.w > 24 || g.h < 1) problems.push(`${p.title}: gridPos out of grid`);
    else for (let y = g.y; y < g.y + g.h; y++) for (let x = g.x; x < g.x + g.w; x++) {
      const k = `${x},${y}`;
      if (cells.has(k)) { problems.push(`${p.title}: overlaps another panel at ${k}`); y = Infinity; break; }
      cells.add(k);
    }
    if (p.type !== 'row') {
      if (p.datasource?.uid !== '${datasource}') problems.push(`${p.title}: datasource is not \${datasource}`);
      if (!(p.targets ?? []).length) problems.push(`${p.title}: no queries`);
      for (const t of p.targets ?? []) if (t.datasource?.uid !== '${datasource}')
        problems.push(`${p.title}/${t.refId}: query datasource is not \${datasource}`);
    }
  }
  if (problems.length) fail(`${d.file}: layout, ids and datasource wiring`, problems.join('\n'));
  else pass(`${d.file}: layout, ids and datasource wiring`);
}

// 3. Only exported metrics.
const known = new Set(execFileSync('python3', [path.join(root, 'grafana/generate.py'), '--metrics'])
  .toString().trim().split('\n'));
const queries = queriesOf(dashboards);
for (const d of dashboards) {
  const bad = [];
  for (const q of queries.filter((x) => x.dashboard === d.file)) {
    const names = q.raw.match(/\btokengate_[a-z0-9_]+/g) ?? [];
    if (!names.length) bad.push(`${q.panel}/${q.refId}: names no tokengate metric`);
    for (const n of names) {
      const base = n.replace(/_(bucket|sum|count)$/, '');
      if (!known.has(n) && !known.has(base)) bad.push(`${q.panel}/${q.refId}: unknown metric ${n}`);
    }
  }
  if (bad.length) fail(`${d.file}: queries use only exported metrics`, bad.join('\n'));
  else pass(`${d.file}: queries use only exported metrics`);
}

// 4. PromQL syntax, through promtool's rule checker.
const promtool = spawnSync('sh', ['-c', 'command -v promtool']).stdout.toString().trim();
if (!promtool) {
  fail('dashboards: promtool available for the PromQL check', 'install Debian package prometheus');
} else {
  const rules = { groups: dashboards.map((d) => ({
    name: d.file,
    rules: queries.filter((q) => q.dashboard === d.file).map((q, k) => ({
      record: `tokengate:dashboard_check:${k}`, expr: q.expr })),
  })) };
  const rulesFile = path.join(here, '.out', 'dashboard-rules.json');
  fs.writeFileSync(rulesFile, JSON.stringify(rules, null, 1)); // JSON is YAML
  const r = spawnSync(promtool, ['check', 'rules', rulesFile]);
  if (r.status === 0) pass(`dashboards: all ${queries.length} queries are valid PromQL (promtool check rules)`);
  else fail('dashboards: all queries are valid PromQL (promtool check rules)',
            (r.stdout.toString() + r.stderr.toString()).trim());
}

console.log(`dashboards: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
