// Validates rendered Kubernetes manifests (multi-document YAML files given as arguments):
//  1. each object against the OpenAPI schema of its kind (kubernetes-models' validators, and
//     @kubernetes-models/prometheus-operator for ServiceMonitor);
//  2. each object as a TypeScript literal of the models' interface type, which rejects unknown
//     fields (a misspelt `readinessprobe` passes step 1 but not this);
//  3. chart invariants the deployment relies on (non-root, read-only rootfs, probes, ...).
// Prints PASS/FAIL lines; exit code 1 if anything failed.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { typecheck } from './lib/typecheck.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const KINDS = {
  'v1/Service': ['kubernetes-models/v1/Service', 'Service'],
  'v1/Secret': ['kubernetes-models/v1/Secret', 'Secret'],
  'v1/ConfigMap': ['kubernetes-models/v1/ConfigMap', 'ConfigMap'],
  'v1/PersistentVolumeClaim': ['kubernetes-models/v1/PersistentVolumeClaim', 'PersistentVolumeClaim'],
  'v1/ServiceAccount': ['kubernetes-models/v1/ServiceAccount', 'ServiceAccount'],
  'v1/Pod': ['kubernetes-models/v1/Pod', 'Pod'],
  'apps/v1/Deployment': ['kubernetes-models/apps/v1/Deployment', 'Deployment'],
  'policy/v1/PodDisruptionBudget': ['kubernetes-models/policy/v1/PodDisruptionBudget', 'PodDisruptionBudget'],
  'networking.k8s.io/v1/NetworkPolicy': ['kubernetes-models/networking.k8s.io/v1/NetworkPolicy', 'NetworkPolicy'],
  'autoscaling/v2/HorizontalPodAutoscaler': ['kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler', 'HorizontalPodAutoscaler'],
  'monitoring.coreos.com/v1/ServiceMonitor': ['@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor', 'ServiceMonitor'],
  'monitoring.coreos.com/v1/PrometheusRule': ['@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule', 'PrometheusRule'],
  'networking.k8s.io/v1/Ingress': ['kubernetes-models/networking.k8s.io/v1/Ingress', 'Ingress'],
};

let passed = 0, failed = 0;
const pass = (m) => { passed++; console.log(`PASS ${m}`); };
const fail = (m, why) => { failed++; console.log(`FAIL ${m}${why ? `\n     ${why.replace(/\n/g, '\n     ')}` : ''}`); };

const docs = [];
for (const file of process.argv.slice(2)) {
  for (const d of YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'))) {
    if (d.errors.length) { fail(`${file}: YAML parses`, d.errors.map(String).join('\n')); continue; }
    const obj = d.toJS();
    if (obj) docs.push({ file: path.basename(file), obj });
  }
}
if (!docs.length) fail('manifests: at least one object rendered');

// No typed model for KEDA's CRD here: the fields the chart sets, checked by hand against
// https://keda.sh/docs/latest/reference/scaledobject-spec/ and the prometheus scaler.
function checkScaledObject(label, obj) {
  const s = obj.spec ?? {};
  const problems = [];
  const target = s.scaleTargetRef?.name;
  if (!docs.some((d) => d.obj.kind === 'Deployment' && d.obj.metadata?.name === target))
    problems.push(`scaleTargetRef.name ${target} is not a rendered Deployment`);
  if (!Number.isInteger(s.minReplicaCount) || s.minReplicaCount < 0) problems.push('minReplicaCount');
  if (!Number.isInteger(s.maxReplicaCount) || s.maxReplicaCount < Math.max(1, s.minReplicaCount))
    problems.push('maxReplicaCount');
  const deployment = docs.find((d) => d.obj.kind === 'Deployment' && d.obj.metadata?.name === target);
  if (deployment && 'replicas' in deployment.obj.spec) problems.push('the scaled Deployment sets replicas (KEDA owns them)');
  const t = s.triggers ?? [];
  if (t.length !== 1 || t[0].type !== 'prometheus') problems.push('one prometheus trigger');
  for (const k of ['serverAddress', 'query', 'threshold'])
    if (typeof t[0]?.metadata?.[k] !== 'string' || !t[0].metadata[k]) problems.push(`trigger metadata.${k} (string)`);
  if (!/^sum\(tokengate_queue_depth/.test(t[0]?.metadata?.query ?? '')) problems.push('query on tokengate_queue_depth');
  if (problems.length) fail(`${label}: KEDA ScaledObject`, problems.join('\n'));
  else pass(`${label}: KEDA ScaledObject (target, replica bounds, prometheus trigger)`);
}

const tsFiles = {};
for (const [i, { file, obj }] of docs.entries()) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const label = `${file}: ${obj.kind}/${obj.metadata?.name}`;
  if (key === 'keda.sh/v1alpha1/ScaledObject') { checkScaledObject(label, obj); continue; }
  const entry = KINDS[key];
  if (!entry) { fail(`${label}: known kind`, `no validator for ${key}`); continue; }
  const mod = await import(entry[0]);
  const Model = mod[entry[1]];
  try {
    new Model(obj).validate();
    pass(`${label}: matches the ${key} schema`);
  } catch (e) {
    fail(`${label}: matches the ${key} schema`, e.message);
  }
  tsFiles[`m${i}.ts`] = `import type { I${entry[1]} } from '${entry[0]}';\n` +
    `export const m: I${entry[1]} = ${JSON.stringify(obj, null, 2)};\n`;
  docs[i].ts = `m${i}.ts`;
  docs[i].label = label;
}
const tsErrors = typecheck(path.join(here, '.out', 'manifests-ts'), tsFiles);
for (const d of docs) {
  if (!d.ts) continue;
  const errs = tsErrors[d.ts];
  if (errs) fail(`${d.label}: no unknown or mistyped fields`, errs.join('\n'));
  else pass(`${d.label}: no unknown or mistyped fields`);
}

// Invariants the chart promises (issue: non-root, read-only rootfs, no privilege escalation).
for (const { label, obj } of docs) {
  const pod = obj.kind === 'Deployment' ? obj.spec.template.spec : obj.kind === 'Pod' ? obj.spec : null;
  if (!pod) continue;
  const problems = [];
  if (pod.securityContext?.runAsNonRoot !== true) problems.push('pod runAsNonRoot is not true');
  for (const c of pod.containers) {
    const sc = c.securityContext ?? {};
    if (sc.readOnlyRootFilesystem !== true) problems.push(`${c.name}: root filesystem not read-only`);
    if (sc.allowPrivilegeEscalation !== false) problems.push(`${c.name}: privilege escalation allowed`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL')) problems.push(`${c.name}: capabilities not dropped`);
    if (!c.resources?.limits?.cpu || !c.resources?.limits?.memory) problems.push(`${c.name}: no cpu/memory limits`);
    // Probes on the chart's own containers; sidecars (values: sidecars) are the user's.
    if (obj.kind === 'Deployment' && ['coordinator', 'node'].includes(c.name) &&
        !(c.livenessProbe && c.readinessProbe)) problems.push(`${c.name}: missing probes`);
    if (c.name === 'node') {
      // The node's exec probes judge the file its link thread rewrites: both must name the same one.
      const file = (c.env ?? []).find((e) => e.name === 'TG_NODE_HEALTH_FILE')?.value;
      for (const probe of [c.livenessProbe, c.readinessProbe]) {
        const cmd = probe?.exec?.command ?? [];
        if (cmd.includes('--check-health') && cmd[cmd.indexOf('--check-health') + 1] !== file)
          problems.push(`node: probe checks ${cmd[cmd.indexOf('--check-health') + 1]} but TG_NODE_HEALTH_FILE is ${file}`);
      }
    }
  }
  if (problems.length) fail(`${label}: security context, limits and probes`, problems.join('\n'));
  else pass(`${label}: security context, limits and probes`);
}

console.log(`manifests: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
