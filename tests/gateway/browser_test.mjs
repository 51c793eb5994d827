// Headless Chromium test of the control page: log in with ?token=, submit a
// job, click Pause on an operation and see the cluster react (state shows
// paused, the op's completed count stops), resume, check a viewer sees
// disabled controls, see non-finite doubles and lists rendered in a finished job's outputs,
// and save screenshots to build/artifacts/.
// Needs TG_GATEWAY_URL / TG_GATEWAY_TOKEN (cluster.py sets them).
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const artifacts = process.env.TG_ARTIFACTS || join(here, '..', '..', 'build', 'artifacts');
mkdirSync(artifacts, { recursive: true });
const URL_ = process.env.TG_GATEWAY_URL;
const TOKEN = process.env.TG_GATEWAY_TOKEN;
const VIEWER = process.env.TG_GATEWAY_VIEWER_TOKEN;
const MODE = process.env.TG_GATEWAY_MODE || 'external';
if (!URL_ || !TOKEN) {
  console.error('TG_GATEWAY_URL and TG_GATEWAY_TOKEN must be set (run through cluster.py)');
  process.exit(2);
}
const OP = 'leibniz.term';

function leibnizJob(terms, chunk = 1000, partials = 10) {
  const chunks = terms / chunk, per = chunks / partials;
  return {
    name: `leibniz-${terms}-double`,
    tokens: [
      { op: 'leibniz.term', repeat: terms, args: [{ value: 0, step: 1 }] },
      { op: 'leibniz.chunk', repeat: chunks, args: [{ refs: [0, chunk], step: chunk }] },
      { op: 'leibniz.partial', repeat: partials, args: [{ refs: [terms, per], step: per }] },
      { op: 'leibniz.final', args: [{ refs: [terms + chunks, partials] }], output: true, name: 'pi' },
    ],
  };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
let failed = false;
const consoleErrors = [];
try {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  await page.goto(`${URL_}/?token=${encodeURIComponent(TOKEN)}`);
  await page.locator('#conn', { hasText: 'connected' }).waitFor({ timeout: 10000 });
  await page.locator('#role', { hasText: 'admin' }).waitFor({ timeout: 10000 });
  if (page.url().includes('token=')) throw new Error('token left in the address bar');

  // A job big enough to still be running while we pause it.
  const terms = 500_000;
  // Cap the term rate so a fast release cluster is still running the job when we click.
  await page.evaluate((op) => request('op.limits', { op, max_in_flight: 0, max_rate_per_s: 50000 }), OP);
  const sub = await page.evaluate((job) => request('submit', { job }), leibnizJob(terms));
  console.log(`submitted job ${sub.job_id}`);
  // 64-bit ids reach JavaScript as strings (docs/protocol.md), and a token id above 2^53
  // computed with BigInt is accepted back as a string (an unknown token: not_found, not
  // invalid_argument).
  if (typeof sub.job_id !== 'string') throw new Error(`job_id is ${typeof sub.job_id}, not a string`);
  const tc = await page.evaluate(async () => {
    const tokenId = ((4194304n << 32n) | 7n).toString();  // 18014398509481991 > 2^53
    try { return await request('token.cancel', { token_id: tokenId }); } catch (e) { return e; }
  });
  if (!tc || tc.code !== 'not_found') {
    throw new Error(`token.cancel with a 64-bit string id: ${JSON.stringify(tc)}`);
  }
  const row = page.locator(`#ops tr[data-op="${OP}"]`);
  await row.waitFor({ timeout: 10000 });
  await page.locator(`#jobs tr[data-job="${sub.job_id}"]`).waitFor({ timeout: 10000 });

  const completed = async () => page.evaluate(async (op) => {
    const r = await request('op.list');
    return r.ops.find((o) => o.op === op).completed;
  }, OP);
  // Wait for visible progress, then click Pause.
  const c0 = await completed();
  for (let i = 0; i < 50 && (await completed()) === c0; i++) await page.waitForTimeout(100);
  await row.locator('button[data-action="op.pause"]').click();
  await row.locator('[data-field="state"]', { hasText: 'paused' }).waitFor({ timeout: 5000 });
  await row.locator('button[data-action="op.resume"]').waitFor({ timeout: 5000 });
  const ack = await page.evaluate((op) => request('op.list').then((r) => r.ops.find((o) => o.op === op)), OP);
  if (!ack.paused) throw new Error('cluster does not report the op paused');
  // In-flight tokens at the pause may finish; after that the count is frozen.
  await page.waitForTimeout(500);
  const p1 = await completed();
  await page.waitForTimeout(1500);
  const p2 = await completed();
  console.log(`completed while paused: ${p1} -> ${p2}`);
  if (p2 !== p1) throw new Error(`paused op kept completing tokens: ${p1} -> ${p2}`);
  await page.waitForTimeout(300);  // let the chart and job bar repaint
  await page.screenshot({ path: join(artifacts, 'gateway-page-paused.png'), fullPage: true });

  await row.locator('button[data-action="op.resume"]').click();
  await row.locator('[data-field="state"]', { hasText: 'running' }).waitFor({ timeout: 5000 });
  for (let i = 0; i < 50 && (await completed()) === p2; i++) await page.waitForTimeout(100);
  const r1 = await completed();
  console.log(`completed after resume: ${r1}`);
  if (r1 <= p2) throw new Error('no progress after resume');
  await page.screenshot({ path: join(artifacts, 'gateway-page-running.png'), fullPage: true });

  // Cancel the job from the page so later tests start clean.
  page.once('dialog', (d) => d.accept());
  // The jobs table re-renders on every progress event, so click inside the page in one step
  // (a locator click can lose the button between "stable" checks on a fast cluster).
  const sel = `#jobs tr[data-job="${sub.job_id}"] button[data-action="job.cancel"]`;
  await page.locator(sel).waitFor({ timeout: 30000 });
  await page.evaluate((s) => document.querySelector(s)?.click(), sel);
  await page.locator(`#jobs tr[data-job="${sub.job_id}"] [data-field="state"]`,
                     { hasText: /cancelled|failed|succeeded/ })
    .waitFor({ timeout: 30000 });

  // Non-finite doubles and lists in results: valid JSON on the wire ({"double": "inf"}, arrays)
  // and rendered by the page as inf / -inf / nan in the job's outputs cell (docs/protocol.md).
  if (MODE === 'real') {
    const nf = await page.evaluate((job) => request('submit', { job }), {
      name: 'non-finite',
      tokens: [
        { op: 'echo', args: [{ double: 'inf' }], output: true, name: 'pinf' },
        { op: 'echo', args: [{ double: '-inf' }], output: true, name: 'ninf' },
        { op: 'echo', args: [{ double: 'nan' }], output: true, name: 'nan' },
        { op: 'echo', args: [[1.5, { double: 'nan' }, [{ double: '-inf' }]]], output: true, name: 'list' },
      ],
    });
    const cell = page.locator(`#jobs tr[data-job="${nf.job_id}"] [data-field="outputs"]`);
    await cell.filter({ hasText: 'pinf' }).waitFor({ timeout: 30000 });
    const text = (await cell.textContent()).trim();
    console.log(`non-finite outputs rendered: ${text}`);
    const want = 'pinf = inf; ninf = -inf; nan = nan; list = [1.5, nan, [-inf]]';
    if (text !== want) throw new Error(`outputs cell shows "${text}", expected "${want}"`);
    const raw = await page.evaluate((id) => request('job.status', { job_id: id }), nf.job_id);
    if (JSON.stringify(raw.outputs.map((o) => o.value)) !==
        '[{"double":"inf"},{"double":"-inf"},{"double":"nan"},[1.5,{"double":"nan"},[{"double":"-inf"}]]]')
      throw new Error(`job.status values: ${JSON.stringify(raw.outputs)}`);
    await page.screenshot({ path: join(artifacts, 'gateway-page-nonfinite.png'), fullPage: true });
    // Packed arrays: {"f64s": [...]} / {"i64s": [...]} on the wire, rendered as f64s[...] with
    // the first 8 elements and the count.
    const pk = await page.evaluate((job) => request('submit', { job }), {
      name: 'packed',
      tokens: [
        { op: 'echo', args: [{ f64s: [0.5, 'inf', '-inf', 'nan', 1, 2, 3, 4, 5, 6] }], output: true,
          name: 'f' },
        { op: 'vec.pack', args: [[1, -2]], output: true, name: 'i' },
      ],
    });
    const pcell = page.locator(`#jobs tr[data-job="${pk.job_id}"] [data-field="outputs"]`);
    await pcell.filter({ hasText: 'f64s' }).waitFor({ timeout: 30000 });
    const ptext = (await pcell.textContent()).trim();
    console.log(`packed outputs rendered: ${ptext}`);
    const pwant = 'f = f64s[0.5, inf, -inf, nan, 1, 2, 3, 4, … (10 in all)]; i = i64s[1, -2]';
    if (ptext !== pwant) throw new Error(`outputs cell shows "${ptext}", expected "${pwant}"`);
    const praw = await page.evaluate((id) => request('job.status', { job_id: id }), pk.job_id);
    if (JSON.stringify(praw.outputs.map((o) => o.value)) !==
        '[{"f64s":[0.5,"inf","-inf","nan",1,2,3,4,5,6]},{"i64s":[1,-2]}]')
      throw new Error(`job.status packed values: ${JSON.stringify(praw.outputs)}`);
  } else {
    console.log(`note: non-finite output rendering needs a real cluster (mode ${MODE}); not checked`);
  }

  if (VIEWER) {
    const v = await ctx.newPage();
    await v.goto(`${URL_}/?token=${encodeURIComponent(VIEWER)}`);
    await v.locator('#role', { hasText: 'viewer' }).waitFor({ timeout: 10000 });
    const btn = v.locator(`#ops tr[data-op="${OP}"] button[data-action="op.pause"]`);
    await btn.waitFor({ timeout: 10000 });
    if (!(await btn.isDisabled())) throw new Error('viewer sees an enabled Pause button');
    await v.close();
  }
  // Without a token the page says so and shows no data.
  const anon = await ctx.newPage();
  await anon.goto(`${URL_}/`);
  await anon.evaluate(() => sessionStorage.clear());
  await anon.goto(`${URL_}/`);
  await anon.locator('#role', { hasText: 'no role' }).waitFor({ timeout: 10000 });
  await anon.close();

  const serious = consoleErrors.filter((e) => !/favicon/.test(e));
  if (serious.length) throw new Error(`console errors: ${serious.join(' | ')}`);
  console.log(`browser_test: ok (${MODE}); screenshots in ${artifacts}`);
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e.message}`);
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages[0]) await pages[0].screenshot({ path: join(artifacts, 'gateway-page-failure.png'), fullPage: true });
  } catch { /* best effort */ }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
