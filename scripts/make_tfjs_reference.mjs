// Writes tests/fixtures/nsfwjs_tfjs_reference.json: nsfwjs' Inception v3 run by TF.js itself.
//
// README: run once, from the repository root, after `logowatch weights import nsfwjs`:
//   node scripts/make_tfjs_reference.mjs [MODEL_DIR]
// MODEL_DIR defaults to <cache>/weights/nsfwjs-4.4.0/tfjs (model.json + weights.bin as the
// import extracted them; <cache> follows detector.weights.cache_root). It installs
// @tensorflow/tfjs (pure JS, CPU backend, no native code) into a temporary folder with npm,
// loads the model from memory, and runs it on tests/fixtures/nsfwjs_inputs.npy (made by
// scripts/make_nsfwjs_inputs.py) under two pixel scalings. It is slow (minutes on two cores:
// about 1.5 min to load, 25 s per image), so the tests read its output and never run it.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";

const TFJS_VERSION = "4.22.0";
const NSFWJS_VERSION = "4.4.0";
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const INPUTS = path.join(ROOT, "tests/fixtures/nsfwjs_inputs.npy");
const OUT = path.join(ROOT, "tests/fixtures/nsfwjs_tfjs_reference.json");
// The same formulas tests/integration/test_weights_import.py applies (in doubles, then float32).
const SCALINGS = {
  unit: { formula: "x / 255 (nsfwjs' own scaling)", f: (q) => q / 255 },
  inception: { formula: "x / 127.5 - 1 (Keras' Inception scaling)", f: (q) => q / 127.5 - 1 },
};

function cacheRoot() {
  const base = process.env.LOGOWATCH_CACHE || process.env.XDG_CACHE_HOME;
  return base ? path.join(base, "logowatch") : path.join(os.homedir(), ".cache", "logowatch");
}

function readNpyUint8(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString("latin1", 1, 6) !== "NUMPY") throw new Error(`${file} is not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  const header = buf.toString("latin1", major === 1 ? 10 : 12, start);
  if (!header.includes("'descr': '|u1'") || header.includes("'fortran_order': True")) {
    throw new Error(`${file}: want C-ordered uint8, header ${header.trim()}`);
  }
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(",").filter((s) => s.trim())
    .map(Number);
  return { shape, data: buf.subarray(start), sha256: createHash("sha256").update(buf).digest("hex") };
}

const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");

const modelDir = process.argv[2] || path.join(cacheRoot(), "weights", `nsfwjs-${NSFWJS_VERSION}`, "tfjs");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tfjs-reference-"));
try {
  console.error(`installing @tensorflow/tfjs@${TFJS_VERSION} into ${tmp}`);
  execFileSync("npm", ["install", "--prefix", tmp, "--no-audit", "--no-fund", "--silent",
    `@tensorflow/tfjs@${TFJS_VERSION}`], { stdio: ["ignore", "ignore", "inherit"] });
  const tf = createRequire(path.join(tmp, "index.js"))("@tensorflow/tfjs");
  await tf.setBackend("cpu");
  await tf.ready();

  const modelJsonBytes = fs.readFileSync(path.join(modelDir, "model.json"));
  const weightBytes = fs.readFileSync(path.join(modelDir, "weights.bin"));
  const { modelTopology, weightsManifest } = JSON.parse(modelJsonBytes);
  const t0 = Date.now();
  const model = await tf.loadLayersModel(tf.io.fromMemory({
    modelTopology,
    weightSpecs: weightsManifest.flatMap((g) => g.weights),
    weightData: weightBytes.buffer.slice(weightBytes.byteOffset,
      weightBytes.byteOffset + weightBytes.byteLength),
  }));
  const loadSeconds = (Date.now() - t0) / 1000;
  console.error(`model loaded in ${loadSeconds.toFixed(1)} s`);

  const npy = readNpyUint8(INPUTS);
  const [n, h, w, c] = npy.shape;
  const outputs = {};
  const seconds = {};
  for (const [name, { f }] of Object.entries(SCALINGS)) {
    outputs[name] = [];
    const t1 = Date.now();
    for (let i = 0; i < n; i++) {
      const px = npy.data.subarray(i * h * w * c, (i + 1) * h * w * c);
      const x = new Float32Array(px.length);
      for (let j = 0; j < px.length; j++) x[j] = f(px[j]);
      const y = tf.tidy(() => model.predict(tf.tensor4d(x, [1, h, w, c])));
      outputs[name].push(Array.from(await y.data()));
      y.dispose();
      console.error(`${name} image ${i}: ${outputs[name][i].map((v) => v.toFixed(4)).join(" ")}`);
    }
    seconds[name] = (Date.now() - t1) / 1000;
  }
  const reference = {
    made_by: "scripts/make_tfjs_reference.mjs",
    nsfwjs_version: NSFWJS_VERSION,
    tfjs_version: tf.version.tfjs,
    backend: tf.getBackend(),
    node_version: process.version,
    model_json_sha256: sha256(modelJsonBytes),
    weights_bin_sha256: sha256(weightBytes),
    inputs: {
      file: "tests/fixtures/nsfwjs_inputs.npy", sha256: npy.sha256, shape: npy.shape,
      dtype: "uint8", images: ["astronaut", "coffee", "pattern"],
      note: "float input = formula(x) computed in doubles, stored as float32",
    },
    scalings: Object.fromEntries(Object.entries(SCALINGS).map(([k, v]) => [k, v.formula])),
    classes: ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"],
    outputs,
    seconds: { load: loadSeconds, predict: seconds },
  };
  fs.writeFileSync(OUT, JSON.stringify(reference, null, 2) + "\n");
  console.error(`wrote ${OUT}`);
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
