// Loads the Grafana dashboards and flattens their panel queries, with Grafana's template
// variables replaced by values Prometheus accepts, for the static and live checks.
import fs from 'node:fs';
import path from 'node:path';

export function loadDashboards(dir) {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort().map((f) => ({
    file: f, path: path.join(dir, f), json: JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')),
  }));
}

export function panelsOf(dash) {
  const out = [];
  for (const p of dash.panels ?? []) {
    out.push(p);
    for (const q of p.panels ?? []) out.push(q); // collapsed rows keep their panels inside
  }
  return out;
}

// $__rate_interval must cover at least 4 scrapes; the live test scrapes every 1s.
export function substitute(expr, rateInterval = '30s') {
  return expr
    .replaceAll('$__rate_interval', rateInterval)
    .replaceAll('$__interval', rateInterval)
    .replaceAll('$__range', '5m')
    .replace(/\$\{?(op|node|lane|namespace|instance)\}?/g, '.*');
}

export function queriesOf(dashboards, rateInterval) {
  const out = [];
  for (const d of dashboards) {
    for (const p of panelsOf(d.json)) {
      for (const t of p.targets ?? []) {
        out.push({ dashboard: d.file, panel: p.title, refId: t.refId, raw: t.expr,
                   expr: substitute(t.expr, rateInterval) });
      }
    }
    for (const v of d.json.templating?.list ?? []) {
      const def = typeof v.query === 'string' ? v.query : v.query?.query;
      const m = v.type === 'query' && /^label_values\((\w+),\s*(\w+)\)$/.exec(def ?? '');
      if (m) out.push({ dashboard: d.file, panel: `variable $${v.name}`, refId: 'var',
                        raw: def, expr: `group by (${m[2]}) (${m[1]})`, variable: true });
    }
  }
  return out;
}
