// Checks the chart's PrometheusRule (helm/tokengate/templates/prometheusrule.yaml) in a rendered
// manifest file:
//  1. `promtool check rules` accepts its groups;
//  2. every tokengate_* metric an expression names is one the coordinator exports
//     (grafana/generate.py --metrics);
//  3. `promtool test rules`: synthetic series make each alert fire (and only then), with the
//     labels an Alertmanager route would match on.
// Usage: node check-alert-rules.mjs RENDERED.yaml WORKDIR
// The render must use release name `tg`, namespace `tokengate`, additionalRuleLabels {team: data}
// and a KEDA node group (helm/tokengate/ci/extras-values.yaml).
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const [file, work] = process.argv.slice(2);
let passed = 0, failed = 0;
const pass = (m) => { passed++; console.log(`PASS ${m}`); };
const fail = (m, why) => { failed++; console.log(`FAIL ${m}${why ? `\n     ${String(why).replace(/\n/g, '\n     ')}` : ''}`); };

const rule = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'))
  .map((d) => d.toJS()).find((o) => o && o.kind === 'PrometheusRule');
if (!rule) { fail('a PrometheusRule is rendered'); finish(); }
fs.mkdirSync(work, { recursive: true });
const rulesFile = path.join(work, 'alert-rules.yaml');
fs.writeFileSync(rulesFile, YAML.stringify({ groups: rule.spec.groups }));

// 1.
const check = spawnSync('promtool', ['check', 'rules', rulesFile], { encoding: 'utf8' });
if (check.status === 0) pass('PrometheusRule: promtool check rules');
else fail('PrometheusRule: promtool check rules', check.stdout + check.stderr);

// 2.
const known = new Set(execFileSync('python3', [path.join(root, 'grafana/generate.py'), '--metrics'])
  .toString().split(/\s+/).filter(Boolean));
const rules = rule.spec.groups.flatMap((g) => g.rules);
const unknown = rules.flatMap((r) => (r.expr.match(/tokengate_[a-z_]+/g) ?? [])
  .filter((n) => !known.has(n)).map((n) => `${r.alert}: ${n}`));
if (unknown.length) fail('PrometheusRule: only exported metrics', unknown.join('\n'));
else pass(`PrometheusRule: ${rules.length} rules use only exported metrics`);
const names = new Set(rules.map((r) => r.alert));
for (const a of ['TokenGateCoordinatorDown', 'TokenGateNoReadyNodes', 'TokenGateNodeLost',
  'TokenGateTokenFailures', 'TokenGateQueueGrowing', 'TokenGateJournalErrors']) {
  if (!names.has(a)) fail(`PrometheusRule: has ${a}`);
}

// 3. One minute per sample. The coordinator goes down at 10m; ready nodes drop to 0 at 5m
// while 5 tokens stay queued; a node is lost at 20m; tokens fail at 2/s from 30m; the journal
// fails once at 40m; a queue grows past the threshold at 71m (the alert waits 15m).
const sel = 'job="tg-tokengate-coordinator",namespace="tokengate"';
const series = [
  { series: `up{${sel}}`, values: '1x9 0x50' },
  { series: `tokengate_nodes{${sel},state="ready"}`, values: '2x4 0x55' },
  { series: `tokengate_nodes{${sel},state="dead"}`, values: '0x19 1x40' },
  { series: `tokengate_queue_depth{${sel},op="x"}`, values: '5x60' },
  { series: `tokengate_tokens_failed_total{${sel},op="x",code="internal"}`, values: '0x29 0+120x30' },
  { series: `tokengate_journal_errors_total{${sel}}`, values: '0x39 1x20' },
  // Another op's queue grows by 10k a minute from 61m: over the 100k threshold at 71m, growing.
  { series: `tokengate_queue_depth{${sel},op="y"}`, values: '0x60 0+10000x40' },
];
const labels = (extra = {}) => ({ severity: 'critical', team: 'data', ...extra });
// The annotations as Alertmanager gets them: the rule's, with these summaries rendered.
const summaries = {
  TokenGateCoordinatorDown: 'TokenGate coordinator tokengate is not scraped (down or unreachable)',
  TokenGateNodeLost: '1 TokenGate node(s) lost',
  TokenGateTokenFailures: 'TokenGate tokens fail for good at 2/s',
};
const expect = (alert, expLabels) => ({
  exp_labels: expLabels,
  exp_annotations: {
    ...(rules.find((r) => r.alert === alert)?.annotations ?? {}),
    ...(summaries[alert] ? { summary: summaries[alert] } : {}),
  },
});
const tests = {
  rule_files: [path.basename(rulesFile)],
  evaluation_interval: '1m',
  tests: [{
    interval: '1m',
    input_series: series,
    alert_rule_test: [
      { eval_time: '4m', alertname: 'TokenGateNoReadyNodes', exp_alerts: [] },
      { eval_time: '11m', alertname: 'TokenGateNoReadyNodes', exp_alerts: [expect('TokenGateNoReadyNodes', labels())] },
      { eval_time: '9m', alertname: 'TokenGateCoordinatorDown', exp_alerts: [] },
      { eval_time: '13m', alertname: 'TokenGateCoordinatorDown',
        exp_alerts: [expect('TokenGateCoordinatorDown', labels({ job: 'tg-tokengate-coordinator', namespace: 'tokengate' }))] },
      { eval_time: '19m', alertname: 'TokenGateNodeLost', exp_alerts: [] },
      { eval_time: '22m', alertname: 'TokenGateNodeLost', exp_alerts: [expect('TokenGateNodeLost', labels({ severity: 'warning' }))] },
      { eval_time: '29m', alertname: 'TokenGateTokenFailures', exp_alerts: [] },
      { eval_time: '45m', alertname: 'TokenGateTokenFailures', exp_alerts: [expect('TokenGateTokenFailures', labels({ severity: 'warning' }))] },
      { eval_time: '39m', alertname: 'TokenGateJournalErrors', exp_alerts: [] },
      { eval_time: '41m', alertname: 'TokenGateJournalErrors',
        exp_alerts: [expect('TokenGateJournalErrors', labels({ job: 'tg-tokengate-coordinator', namespace: 'tokengate' }))] },
      { eval_time: '55m', alertname: 'TokenGateQueueGrowing', exp_alerts: [] },
      { eval_time: '84m', alertname: 'TokenGateQueueGrowing', exp_alerts: [] },
      { eval_time: '88m', alertname: 'TokenGateQueueGrowing', exp_alerts: [expect('TokenGateQueueGrowing', labels({ severity: 'warning' }))] },
    ],
  }],
};
const testFile = path.join(work, 'alert-rules-test.yaml');
fs.writeFileSync(testFile, YAML.stringify(tests));
const t = spawnSync('promtool', ['test', 'rules', testFile], { encoding: 'utf8', cwd: work });
if (t.status === 0) pass('PrometheusRule: promtool test rules (each alert fires on its condition, not before)');
else fail('PrometheusRule: promtool test rules', t.stdout + t.stderr);
finish();

function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}
