// package.json against client-config/schema.json: every server setting is contributed with the
// schema's type, default and limits; the commands, keybinding and activation events are there.
import { strict as assert } from "assert";
import * as fs from "fs";
import * as path from "path";
import { test } from "node:test";

const root = path.join(__dirname, "..", "..");
const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"));
const schema = JSON.parse(fs.readFileSync(path.join(root, "..", "schema.json"), "utf8"));

function leaves(props: Record<string, Record<string, unknown>>, prefix = ""): [string, Record<string, unknown>][] {
  return Object.entries(props).flatMap(([name, entry]) => entry.type === "object"
    ? leaves(entry.properties as Record<string, Record<string, unknown>>, `${prefix}${name}.`)
    : [[prefix + name, entry] as [string, Record<string, unknown>]]);
}

test("every schema setting is contributed as logitls.<name> with the same type, default and limits", () => {
  const contributed = pkg.contributes.configuration.properties;
  const settings = leaves(schema.properties);
  assert.ok(settings.length >= 10);
  for (const [name, entry] of settings) {
    const prop = contributed[`logitls.${name}`];
    assert.ok(prop, `logitls.${name} missing from package.json (run make schema)`);
    for (const key of ["type", "default", "enum", "minimum", "maximum", "scope"]) {
      assert.deepEqual(prop[key], entry[key], `logitls.${name}.${key}`);
    }
    assert.equal(prop.markdownDescription, entry.description);
  }
  const serverKeys = new Set(settings.map(([name]) => `logitls.${name}`));
  const extra = Object.keys(contributed).filter((key) => !serverKeys.has(key)).sort();
  assert.deepEqual(extra, ["logitls.server.command", "logitls.server.languages", "logitls.server.notebookCells",
    "logitls.server.venv", "logitls.trace.server"]);
  assert.deepEqual(contributed["logitls.server.languages"].default, ["plaintext", "markdown", "git-commit"]);
  assert.equal(contributed["logitls.server.command"].default, "logitls serve");
});

test("settings that run code or send a secret never come from a workspace's .vscode/settings.json", () => {
  const contributed = pkg.contributes.configuration.properties;
  for (const key of ["logitls.trustRemoteCode", "logitls.endpoint", "logitls.apiKeyEnv",
    "logitls.server.command", "logitls.server.venv"]) {
    assert.equal(contributed[key].scope, "machine", key);
  }
  assert.equal(contributed["logitls.model"].scope, "machine-overridable");
  const trust = pkg.capabilities.untrustedWorkspaces;
  assert.equal(trust.supported, "limited");
  const scoped = Object.keys(contributed)
    .filter((key) => ["machine", "machine-overridable"].includes(contributed[key].scope)).sort();
  assert.deepEqual([...trust.restrictedConfigurations].sort(), scoped);
});

test("the manifest has what the Marketplace and Open VSX show", () => {
  assert.deepEqual(pkg.categories, ["Machine Learning", "Education", "Visualization"]);
  assert.ok(fs.existsSync(path.join(root, pkg.icon)), pkg.icon);
  assert.ok(fs.existsSync(path.join(root, "CHANGELOG.md")));
  assert.ok(pkg.keywords.length > 0 && pkg.keywords.length <= 30);
  for (const key of ["publisher", "license", "repository", "homepage", "bugs", "galleryBanner"]) {
    assert.ok(pkg[key], key);
  }
});

test("commands, keybinding and activation events", () => {
  const commands = Object.fromEntries(pkg.contributes.commands.map((c: { command: string; title: string; category: string }) =>
    [c.command, `${c.category}: ${c.title}`]));
  assert.equal(commands["logitls.generateAtCursor"], "logitls: Generate greedy continuation");
  assert.equal(commands["logitls.restartServer"], "logitls: Restart server");
  assert.ok(!("logitls.generate" in commands), "logitls.generate is the server's command; the client registers it itself");
  const binding = pkg.contributes.keybindings.find((k: { command: string }) => k.command === "logitls.generateAtCursor");
  assert.ok(binding?.key, "generate has a default keybinding");
  assert.ok(pkg.activationEvents.includes("onLanguage:plaintext"));
  assert.match(pkg.dependencies["vscode-languageclient"], /^\^?11\./);
  assert.equal(pkg.main, "./dist/extension.js"); // the esbuild bundle (npm run bundle)
});
