// Bundles the dashboard's views into the Python package (memlab/jupyter/dashboard/static/):
// one ES module for anywidget (and, later, the web dashboard page) and one stylesheet.
// Run by `make js` (npm ci, then this); the output is not checked in.
import * as esbuild from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(here, "../../memlab/jupyter/dashboard/static");
const watch = process.argv.includes("--watch");

const options = {
  entryPoints: {
    dashboard: path.join(here, "src/index.js"),
  },
  bundle: true,
  format: "esm",
  minify: !watch,
  sourcemap: false,
  target: ["es2020"],
  outdir: out,
  loader: { ".css": "css" },
  legalComments: "eof",
  logLevel: "info",
};

const css = {
  entryPoints: { dashboard: path.join(here, "src/styles.css") },
  bundle: true,
  minify: !watch,
  outdir: out,
  logLevel: "info",
};

if (watch) {
  const a = await esbuild.context(options);
  const b = await esbuild.context(css);
  await Promise.all([a.watch(), b.watch()]);
} else {
  await Promise.all([esbuild.build(options), esbuild.build(css)]);
}
