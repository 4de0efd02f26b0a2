// Turns nsfwjs' browserified model modules into plain files Python can read.
//
// nsfwjs ships its TF.js model as JS modules (model.min.js exports {modelTopology,
// weightsManifest}; each group1-shardNofM.min.js exports one base64 string), so a JS engine
// has to evaluate them. Usage: node nsfwjs_extract.js SRC_DIR OUT_DIR
// writes OUT_DIR/model.json ({modelTopology, weightsManifest}) and OUT_DIR/weights.bin (the
// shards decoded and concatenated in manifest order). The modules run in a bare vm context
// (no require, no process); the Python caller has already checked the tarball's sha256.
"use strict";
const fs = require("fs");
const path = require("path");
const vm = require("vm");

function evaluate(file) {
  const mod = { exports: {} };
  vm.runInNewContext(fs.readFileSync(file, "utf8"), { module: mod, exports: mod.exports },
    { filename: path.basename(file), timeout: 120000 });
  return mod.exports;
}

function main(argv) {
  if (argv.length !== 2) throw new Error("usage: node nsfwjs_extract.js SRC_DIR OUT_DIR");
  const [src, out] = argv;
  const model = evaluate(path.join(src, "model.min.js"));
  if (!model || typeof model.modelTopology !== "object" || !Array.isArray(model.weightsManifest)) {
    throw new Error("model.min.js does not export {modelTopology, weightsManifest}");
  }
  const parts = [];
  for (const group of model.weightsManifest) {
    for (const shard of group.paths) {
      const text = evaluate(path.join(src, `${path.basename(shard)}.min.js`));
      if (typeof text !== "string") throw new Error(`${shard}.min.js does not export a string`);
      parts.push(Buffer.from(text, "base64"));
    }
  }
  fs.writeFileSync(path.join(out, "model.json"), JSON.stringify({
    modelTopology: model.modelTopology, weightsManifest: model.weightsManifest }));
  const blob = Buffer.concat(parts);
  fs.writeFileSync(path.join(out, "weights.bin"), blob);
  process.stdout.write(JSON.stringify({ shards: parts.length, bytes: blob.length }) + "\n");
}

try {
  main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`nsfwjs_extract: ${err.message}\n`);
  process.exit(1);
}
