// Runs flc's ONNX exports in ONNX Runtime (onnxruntime-node, CPU) and
// compares the probabilities with reference predictions.
//
//   node check_onnx_ort.mjs MODEL.onnx --input X.f32 --shape S
//        [--pred P.f32]... [--tol 1e-5]
//
// --shape is one example's input shape (d for an MLP, C,H,W for a CNN);
// every --pred file (the C model's predictions, a numpy reference) must
// agree with ONNX Runtime within --tol absolute.  With no --pred file that
// exists the run is skipped (77): nothing would have been compared.
//
// Exit status: 0 pass, 1 failure, 77 onnxruntime-node not installed (run
// scripts/setup.sh, which runs npm in tests/export).
import { existsSync, readFileSync } from 'node:fs';
import process from 'node:process';

let ort;
try {
  ort = await import('onnxruntime-node');
} catch (e) {
  console.log('skipped: onnxruntime-node is not installed in tests/export/node_modules ' +
              '(run scripts/setup.sh, which runs npm ci there): ' + e.message.split('\n')[0]);
  process.exit(77);
}

function fail(msg) {
  console.log('FAIL: ' + msg);
  process.exit(1);
}

function floats(path) {
  const b = readFileSync(path);
  if (b.length % 4 !== 0) fail(`${path}: ${b.length} bytes is not a whole number of floats`);
  const out = new Float32Array(b.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = b.readFloatLE(4 * i);
  return out;
}

const args = process.argv.slice(2);
let model = null, input = null, shape = null, tol = 1e-5;
const preds = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--input') input = args[++i];
  else if (a === '--shape') shape = args[++i].split(',').map(Number);
  else if (a === '--pred') preds.push(args[++i]);
  else if (a === '--tol') tol = Number(args[++i]);
  else if (!a.startsWith('--') && !model) model = a;
  else fail(`unknown argument '${a}'`);
}
if (!model || !input || !shape) fail('usage: check_onnx_ort.mjs MODEL.onnx --input X.f32 --shape S [--pred P.f32]...');

const per = shape.reduce((p, v) => p * v, 1);
const x = floats(input);
if (x.length % per !== 0) fail(`${input}: ${x.length} floats is not a whole number of ${per}-value examples`);
const n = x.length / per;

const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'] });
if (session.inputNames.join() !== 'input' || session.outputNames.join() !== 'probabilities')
  fail(`${model}: inputs ${session.inputNames}, outputs ${session.outputNames}`);
const feeds = { input: new ort.Tensor('float32', x, [n, ...shape]) };
const result = await session.run(feeds);
const probs = result.probabilities;
if (probs.dims.length !== 2 || probs.dims[0] !== n)
  fail(`${model}: output dims [${probs.dims}], expected [${n}, K]`);
const k = probs.dims[1];

let compared = 0;
for (const p of preds) {
  if (!existsSync(p)) {
    console.log(`note: ${p} does not exist (not compared)`);
    continue;
  }
  const ref = floats(p);
  if (ref.length !== n * k) fail(`${p}: ${ref.length} floats, expected ${n} x ${k}`);
  let err = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(ref[i] - probs.data[i]);
    if (!(d <= err)) err = d; // also catches NaN
  }
  if (!(err <= tol)) fail(`${model}: ONNX Runtime and ${p} differ by ${err} (> ${tol})`);
  console.log(`ok: ${model}: ${n} examples x ${k} outputs, max |ORT - ${p.split('/').pop()}| = ${err.toExponential(2)}`);
  compared++;
}
if (compared === 0) {
  // Only the CNN can get here: without nn/fl_model in the build and without
  // numpy there is nothing to compare with.
  console.log(`skipped: ${model}: no reference predictions to compare with (run scripts/setup.sh for numpy)`);
  process.exit(77);
}
