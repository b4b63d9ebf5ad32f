import { strict as assert } from "assert";
import * as fs from "fs";
import * as path from "path";
import { test } from "node:test";
import {
  generateOutcome, generateParams, resolveServerCommand, restartSections, ServerNotFound, serverSettings, splitCommand,
  statusView, StderrReader, stderrLevel,
} from "../config";

test("splitCommand keeps quoted parts together", () => {
  assert.deepEqual(splitCommand("logitls serve"), ["logitls", "serve"]);
  assert.deepEqual(splitCommand(`  "/opt/my tools/logitls"  serve --tcp `), ["/opt/my tools/logitls", "serve", "--tcp"]);
  assert.deepEqual(splitCommand("python -m 'logitls' serve"), ["python", "-m", "logitls", "serve"]);
});

test("the server is looked up in the venv before PATH", () => {
  const files = new Set(["/home/u/venv/bin/logitls", "/usr/bin/logitls"]);
  const exists = (f: string) => files.has(f);
  assert.deepEqual(resolveServerCommand("logitls serve", { venv: "/home/u/venv", envPath: "/usr/bin", exists, platform: "linux" }),
    { command: "/home/u/venv/bin/logitls", args: ["serve"] });
  assert.deepEqual(resolveServerCommand("logitls serve", { venv: "", envPath: "/nope:/usr/bin", exists, platform: "linux" }),
    { command: "/usr/bin/logitls", args: ["serve"] });
  assert.deepEqual(resolveServerCommand("", { envPath: "/usr/bin", exists, platform: "linux" }),
    { command: "/usr/bin/logitls", args: ["serve"] }, "an empty setting means the default command");
  assert.deepEqual(resolveServerCommand("logitls serve", { venv: "~/venv", home: "/home/u", envPath: "", exists, platform: "linux" }),
    { command: "/home/u/venv/bin/logitls", args: ["serve"] }, "~ in the venv is the home folder");
});

test("a missing server says where it looked", () => {
  assert.throws(() => resolveServerCommand("logitls serve", { venv: "/v", envPath: "/a:/b", exists: () => false, platform: "linux" }),
    (error: unknown) => error instanceof ServerNotFound && error.searched.join(",") === "/v/bin,/a,/b"
      && /logitls\.server\.venv/.test(error.message));
  assert.throws(() => resolveServerCommand("/x/logitls serve", { exists: () => false, platform: "linux" }), ServerNotFound);
});

test("an absolute program is used as is; Windows looks in Scripts and for .exe", () => {
  assert.deepEqual(resolveServerCommand("/x/python -m logitls serve", { exists: (f) => f === "/x/python", platform: "linux" }),
    { command: "/x/python", args: ["-m", "logitls", "serve"] });
  const win = path.win32.join("C:\\v", "Scripts", "logitls.exe");
  assert.deepEqual(resolveServerCommand("logitls serve", { venv: "C:\\v", envPath: "", exists: (f) => f === win, platform: "win32" }),
    { command: win, args: ["serve"] });
});

test("serverSettings drops the extension's own settings and copies the rest", () => {
  const section = { model: "gpt2", topN: 5, generate: { maxNewTokens: 7 }, server: { command: "x", venv: "" }, trace: { server: "off" } };
  const sent = serverSettings(section);
  assert.deepEqual(sent, { model: "gpt2", topN: 5, generate: { maxNewTokens: 7 } });
  (sent.generate as { maxNewTokens: number }).maxNewTokens = 1;
  assert.equal(section.generate.maxNewTokens, 7, "a copy, not the settings object itself");
  assert.deepEqual(serverSettings(undefined), {});
  assert.deepEqual(serverSettings([1]), {});
});

test("statusView for each logitls/status state", () => {
  assert.match(statusView({ state: "loading", model: "default" }).text, /loading default/);
  const ready = statusView({ state: "ready", model: "default", message: "default on cpu" });
  assert.match(ready.text, /logitls: default/);
  assert.match(ready.tooltip, /default on cpu/);
  assert.equal(ready.error, false);
  const failed = statusView({ state: "failed", model: "nope", message: "not found" });
  assert.match(failed.text, /nope failed/);
  assert.equal(failed.error, true);
  assert.equal(statusView({ state: "stopped" }).error, true);
});

test("generateParams is the server's logitls.generate argument shape", () => {
  assert.deepEqual(generateParams("file:///a.txt", 2, 5), {
    command: "logitls.generate", arguments: [{ textDocument: { uri: "file:///a.txt" }, position: { line: 2, character: 5 } }],
  });
  assert.equal(generateParams("file:///a.txt", 0, 0, 12).arguments[0].maxNewTokens, 12);
});

test("generateOutcome: quiet when inserted, says why otherwise", () => {
  assert.equal(generateOutcome({ text: " Paris.", applied: true, stop: "eos" }), undefined);
  assert.equal(generateOutcome({ text: "", applied: false, stop: "cancelled" }), undefined);
  assert.equal(generateOutcome({ text: "", applied: false, stop: "no-model" }), undefined);
  assert.match(generateOutcome({ text: "", applied: false, stop: "eos" })!.message, /nothing to insert/);
  assert.equal(generateOutcome({ text: "x", applied: false, stop: "length" })!.level, "warning");
  assert.equal(generateOutcome(null)!.level, "warning");
});

test("restartSections: server.* and the settings scoped to the machine, from package.json", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8"));
  assert.deepEqual(restartSections(pkg).sort(),
    ["logitls.apiKeyEnv", "logitls.endpoint", "logitls.server", "logitls.trustRemoteCode"]);
  assert.deepEqual(restartSections({}), ["logitls.server"]);
});

test("stderr lines keep their level; the logitls logger's, which also come as logMessage, are dropped", () => {
  const reader: StderrReader = { current: "info" };
  const lines = [
    "logitls INFO: model default ready (converted, float32, cpu) in 0.9 s",
    "logitls.worker WARNING: a job failed",
    "Traceback (most recent call last):", // the record above continues: also dropped
    "transformers WARNING: `torch_dtype` is deprecated",
    "  use `dtype`",
    "Loading weights: 100%|██████████| 272/272 [00:00<00:00, 1234.5it/s]",
    "pygls.protocol.json_rpc ERROR: Failed to handle request 3",
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "something printed by a library",
  ];
  assert.deepEqual(lines.map((line) => stderrLevel(line, reader)),
    [undefined, undefined, undefined, "warn", "warn", "info", "error", "error", "error", "error"]);
  const fresh: StderrReader = { current: "info" };
  assert.equal(stderrLevel("a bare line before any record", fresh), "info");
  assert.equal(stderrLevel("Traceback (most recent call last):", fresh), "error");
  assert.equal(stderrLevel("torch DEBUG: x", fresh), "debug");
});
