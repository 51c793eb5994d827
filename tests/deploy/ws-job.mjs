// Runs a Leibniz job through the gateway's WebSocket API, the way a browser or script would:
// hello with the bearer token, submit the job JSON, poll job.status until it ends. Optionally
// runs a command once the job is a given fraction done (the container test kills a node there).
// Prints one JSON line {job_id, state, value, wall_ms, done, total, failed, reconnects}; exit 0
// if the job succeeded. Survives gateway restarts (reconnects and keeps polling the job).
// Usage: node ws-job.mjs --url ws://127.0.0.1:8080/ws --token T --terms N [--precision double]
//                        [--at 0.3 --run "docker kill X"] [--timeout 300] [--fail | --spin N:US]
import { execSync } from 'node:child_process';
import WebSocket from 'ws';
import { leibnizJob } from './lib/leibniz.mjs';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const url = arg('url', 'ws://127.0.0.1:8080/ws');
const token = arg('token', process.env.TG_GATEWAY_TOKEN ?? '');
const terms = Number(arg('terms', '1000000'));
const precision = arg('precision', 'double');
const at = Number(arg('at', '2'));
const runCmd = arg('run', '');
const timeoutS = Number(arg('timeout', '300'));
// --fail: a one-token job the node must reject (leibniz.term wants an int), for failure metrics.
// --spin N:US[,US2...]: N tokens of the light-declared `spin` op, split evenly over the listed
// costs in microseconds, so the cost model sees an op whose cost contradicts its lane
// (reclassification). Two or more costs give the model something the per-op running mean cannot
// know (the cost is in the argument); with one cost the model cannot beat the mean and is never
// published.
function spinJob(n, costs) {
  const per = Math.max(1, Math.floor(n / costs.length));
  return { name: 'deploy-test-spin', tokens: costs.map((us) => ({ op: 'spin', repeat: per, args: [us] })) };
}
const spin = arg('spin', '');
const job = process.argv.includes('--fail')
  ? { name: 'deploy-test-failure', tokens: [{ op: 'leibniz.term', args: ['not-an-int'], output: true, name: 'pi' }] }
  : spin
    ? spinJob(Number(spin.split(':')[0]), spin.split(':')[1].split(',').map(Number))
    : leibnizJob(terms, precision);

// The connection is re-made whenever it drops (a restarted coordinator takes its gateway down
// with it): hello again and keep polling the same job id, which a coordinator with a journal
// resumes. Only the overall --timeout gives up.
let ws = null;
let nextId = 1;
const pending = new Map();
const die = (m) => { console.error(`ws-job: ${m}`); process.exit(2); };
setTimeout(() => die(`timed out after ${timeoutS}s`), timeoutS * 1000).unref();
let reconnects = 0;

const connect = () => new Promise((resolve) => {
  const attempt = () => {
    const sock = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });
    sock.on('open', () => { ws = sock; resolve(); });
    sock.on('message', (data) => {
      const msg = JSON.parse(data.toString());
      if (msg.id === undefined || !pending.has(msg.id)) return; // events
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(new Error(`${p.cmd}: ${msg.error?.code} ${msg.error?.message}`));
    });
    sock.on('error', () => {}); // 'close' follows
    sock.on('close', () => {
      if (ws === sock) {
        ws = null;
        for (const [, p] of pending) p.reject(Object.assign(new Error('connection lost'), { lost: true }));
        pending.clear();
      } else {
        setTimeout(attempt, 250); // not up yet: try again
      }
    });
  };
  attempt();
});
const call = (cmd, fields = {}) => new Promise((resolve, reject) => {
  if (!ws) return reject(Object.assign(new Error('connection lost'), { lost: true }));
  const id = nextId++;
  pending.set(id, { resolve, reject, cmd });
  ws.send(JSON.stringify({ id, cmd, ...fields }));
});
const session = async () => {
  await connect();
  await call('hello', { token });
};

(async () => {
  try {
    await session();
    const { job_id } = await call('submit', { job });
    console.error(`ws-job: submitted job ${job_id} (${job.name})`);
    let ran = false;
    for (;;) {
      let st;
      try {
        st = await call('job.status', { job_id });
      } catch (e) {
        if (!e.lost) throw e;
        reconnects++;
        console.error(`ws-job: connection lost, reconnecting (${reconnects})`);
        await session();
        continue;
      }
      if (!ran && runCmd && st.total && st.done / st.total >= at && st.state === 'running') {
        ran = true;
        console.error(`ws-job: ${st.done}/${st.total} done, running: ${runCmd}`);
        execSync(runCmd, { stdio: ['ignore', 2, 2] }); // keep stdout for the result line
      }
      if (st.state !== 'running') {
        const out = (st.outputs ?? []).find((o) => o.name === 'pi') ?? st.outputs?.[0];
        const value = out?.ok ? out.value : null;
        console.log(JSON.stringify({ job_id, state: st.state, value, wall_ms: st.wall_ms,
          done: st.done, total: st.total, failed: st.failed, error: out?.error ?? null,
          hook_ran: ran, reconnects }));
        ws?.close();
        process.exit(st.state === 'succeeded' && !(runCmd && !ran) ? 0 : 1);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  } catch (e) {
    die(e.message);
  }
})();
