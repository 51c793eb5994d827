// The Leibniz workload as the cluster runs it (common/job.cc makeLeibnizJob / leibnizLocal),
// re-implemented independently so the tests check the cluster's answer, not echo it.

// Job JSON (docs/protocol.md "Job JSON"): terms -> terms/chunk chunk sums -> partials -> pi.
export function leibnizJob(terms, precision = 'double', chunk = 1000, partials = 10) {
  const chunks = terms / chunk;
  if (!Number.isInteger(chunks) || !Number.isInteger(chunks / partials))
    throw new Error(`terms ${terms} must be a multiple of chunk ${chunk} x partials ${partials}`);
  const per = chunks / partials;
  const dec = precision === 'dec50';
  return {
    name: `leibniz-${terms}-${dec ? 'dec50' : 'double'}`,
    tokens: [
      { op: dec ? 'leibniz.term_dec50' : 'leibniz.term', repeat: terms, args: [{ value: 0, step: 1 }] },
      { op: 'leibniz.chunk', repeat: chunks, args: [{ refs: [0, chunk], step: chunk }] },
      { op: 'leibniz.partial', repeat: partials, args: [{ refs: [terms, per], step: per }] },
      { op: 'leibniz.final', args: [{ refs: [terms + chunks, partials] }], output: true, name: 'pi' },
    ],
  };
}

// Bit-exact double result: same terms, same grouping, same order as the cluster.
export function leibnizDouble(terms, chunk = 1000, partials = 10) {
  const term = (k) => ((k & 1) ? -1 : 1) / (2 * k + 1);
  const chunkSums = [];
  for (let c = 0; c < terms / chunk; c++) {
    let s = term(c * chunk);
    for (let k = c * chunk + 1; k < (c + 1) * chunk; k++) s += term(k);
    chunkSums.push(s);
  }
  const per = chunkSums.length / partials;
  const parts = [];
  for (let p = 0; p < partials; p++) {
    let s = chunkSums[p * per];
    for (let i = 1; i < per; i++) s += chunkSums[p * per + i];
    parts.push(s);
  }
  let s = parts[0];
  for (let i = 1; i < parts.length; i++) s += parts[i];
  return s * 4;
}

// 4 * sum_{k<terms} (-1)^k/(2k+1) to `digits` significant digits (fixed point with 25 guard
// digits, so rounding of the 50-digit arithmetic cannot matter at this many digits).
export function leibnizDecimal(terms, digits = 45) {
  const scale = 10n ** BigInt(digits + 25);
  let s = 0n;
  for (let k = 0n; k < BigInt(terms); k++) {
    const t = scale / (2n * k + 1n);
    s += (k & 1n) ? -t : t;
  }
  return (4n * s).toString().slice(0, digits); // 3.14... -> "314..." significant digits
}

export function significantDigits(text, digits) {
  const m = /^-?0*\.?0*/.exec(text);
  return text.slice(m[0].length).replace('.', '').slice(0, digits);
}
