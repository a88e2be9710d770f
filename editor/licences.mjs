// Writes ../zingyconn/hosts/static/editor.LICENSE.txt: the licence of every package bundled into editor.js (all MIT), so the
// built file ships with the notices its licences require. Run by `npm run build` after esbuild.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";

const TOOLS = new Set(["esbuild", "@esbuild/linux-x64"]); // build tools: not in the bundle
const names = readdirSync("node_modules")
  .filter((name) => !name.startsWith("."))
  .flatMap((name) => (name.startsWith("@") ? readdirSync(`node_modules/${name}`).map((sub) => `${name}/${sub}`) : [name]))
  .filter((name) => !TOOLS.has(name))
  .sort();
const sections = names.map((name) => {
  const meta = JSON.parse(readFileSync(`node_modules/${name}/package.json`, "utf8"));
  const file = readdirSync(`node_modules/${name}`).find((entry) => /^licen[cs]e/i.test(entry));
  const text = file ? readFileSync(`node_modules/${name}/${file}`, "utf8").trim() : `License: ${meta.license}`;
  return `${name} ${meta.version} (${meta.license})\n\n${text}\n`;
});
const header = "zingyconn/hosts/static/editor.js bundles the following packages (built from editor/ in the source).\n";
writeFileSync("../zingyconn/hosts/static/editor.LICENSE.txt", [header, ...sections].join("\n" + "-".repeat(78) + "\n\n"));
