// The extension's wiring, with `vscode` mocked (./vscode-mock) and a fake language client that
// records what the extension asks of it.
import { strict as assert } from "assert";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { beforeEach, test } from "node:test";
import * as mock from "./vscode-mock"; // first: makes require("vscode") resolve to the mock
import type { LanguageClientOptions } from "vscode-languageclient/node";
import { activate, Client, clientOptions, LogitlsExtension } from "../extension";
import type { ServerCommand } from "../config";
import type { Status } from "../config";

const schema = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "..", "schema.json"), "utf8"));

function schemaDefaults(props: Record<string, Record<string, unknown>>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(props).map(([name, entry]) =>
    [name, entry.type === "object" ? schemaDefaults(entry.properties as Record<string, Record<string, unknown>>) : entry.default]));
}

class FakeClient implements Client {
  started = 0;
  stopped = 0;
  requests: { method: string; params: unknown }[] = [];
  handlers = new Map<string, (params: Status) => void>();
  answer: unknown = { text: " Paris.", applied: true, stop: "eos" };
  outputChannel = { show: () => undefined } as unknown as Client["outputChannel"];
  constructor(public readonly server: ServerCommand, public readonly options: LanguageClientOptions) {}
  async start() {
    this.started++;
  }
  async stop() {
    this.stopped++;
  }
  onNotification(method: string, handler: (params: Status) => void) {
    this.handlers.set(method, handler);
    return { dispose: () => this.handlers.delete(method) };
  }
  async sendRequest<R>(method: string, params: unknown): Promise<R> {
    this.requests.push({ method, params });
    return this.answer as R;
  }
}

let clients: FakeClient[] = [];
const factory = (server: ServerCommand, options: LanguageClientOptions) => {
  const client = new FakeClient(server, options);
  clients.push(client);
  return client;
};
const context = { subscriptions: [] as { dispose(): void }[] } as unknown as import("vscode").ExtensionContext;

let venv: string;
beforeEach(() => {
  mock.reset();
  clients = [];
  venv = fs.mkdtempSync(path.join(os.tmpdir(), "logitls-venv-"));
  fs.mkdirSync(path.join(venv, "bin"));
  fs.writeFileSync(path.join(venv, "bin", "logitls"), "#!/bin/sh\n", { mode: 0o755 });
  mock.setSetting("logitls.server.venv", venv);
});

async function activated(): Promise<LogitlsExtension> {
  const ext = await activate(context, factory);
  assert.equal(clients.length, 1);
  return ext;
}

test("activation starts the server from the chosen venv and registers the commands", async () => {
  const ext = await activated();
  assert.deepEqual(clients[0].server, { command: path.join(venv, "bin", "logitls"), args: ["serve"] });
  assert.equal(clients[0].started, 1);
  assert.equal(mock.state.statusItems[0].text, "$(sync~spin) logitls: loading default", "the model's name while it starts");
  for (const command of ["logitls.generateAtCursor", "logitls.restartServer", "logitls.showLog"]) {
    assert.ok(mock.state.commands.has(command), command);
  }
  ext.dispose();
});

test("the settings sent at start are the schema's defaults, without the extension's own", async () => {
  const ext = await activated();
  const options = clients[0].options;
  assert.deepEqual(options.initializationOptions, schemaDefaults(schema.properties));
  assert.deepEqual(options.synchronize, { configurationSection: "logitls" });
  ext.dispose();
});

test("a changed setting reaches the server through workspace/configuration, client keys stripped", async () => {
  mock.setSetting("logitls.topN", 3);
  mock.setSetting("logitls.generate.maxNewTokens", 42);
  const options = clientOptions();
  assert.equal((options.initializationOptions as { topN: number }).topN, 3);
  const configuration = options.middleware!.workspace!.configuration!;
  const next = async (params: { items: { section?: string }[] }) =>
    params.items.map((item) => mock.vscode.workspace.getConfiguration().get(item.section ?? ""));
  const answer = await configuration({ items: [{ section: "logitls" }, { section: "editor" }] },
    {} as never, next as never) as unknown[];
  const sent = answer[0] as Record<string, unknown>;
  assert.equal(sent.topN, 3);
  const defaults = schemaDefaults(schema.properties).generate as Record<string, unknown>;
  assert.deepEqual(sent.generate, { ...defaults, maxNewTokens: 42 });
  assert.ok(!("server" in sent) && !("trace" in sent), "server.* and trace.* stay in the editor");
  assert.equal(answer[1], undefined, "other sections pass through untouched");
});

test("logitls/status drives the status bar item", async () => {
  const ext = await activated();
  const item = mock.state.statusItems[0];
  assert.ok(item.visible);
  assert.equal(item.command, "logitls.restartServer");
  const notify = clients[0].handlers.get("logitls/status")!;
  notify({ state: "loading", model: "default", message: "Loading default…" });
  assert.match(item.text, /loading default/);
  notify({ state: "ready", model: "default", message: "default on cpu" });
  assert.match(item.text, /logitls: default/);
  assert.equal(item.backgroundColor, undefined);
  notify({ state: "failed", model: "nope", message: "no such model" });
  assert.match(item.text, /failed/);
  assert.match(String(item.tooltip), /no such model/);
  assert.ok(item.backgroundColor);
  ext.dispose();
});

test("Generate greedy continuation runs logitls.generate at the cursor", async () => {
  const ext = await activated();
  mock.state.activeTextEditor = {
    document: { uri: { toString: () => "file:///tmp/capital.txt" } },
    selection: { active: { line: 3, character: 24 } },
  };
  const result = await mock.vscode.commands.executeCommand("logitls.generateAtCursor");
  assert.deepEqual(clients[0].requests, [{
    method: "workspace/executeCommand",
    params: { command: "logitls.generate", arguments: [{ textDocument: { uri: "file:///tmp/capital.txt" }, position: { line: 3, character: 24 } }] },
  }]);
  assert.deepEqual(result, { text: " Paris.", applied: true, stop: "eos" });
  assert.equal(mock.state.progress.length, 1, "a cancellable progress while generating");
  assert.equal(mock.state.messages.length, 0, "nothing to say when the text was inserted");
  clients[0].answer = { text: "", applied: false, stop: "eos" };
  await mock.vscode.commands.executeCommand("logitls.generateAtCursor");
  assert.match(mock.state.messages[0].message, /nothing to insert/);
  ext.dispose();
});

test("Generate cancelled from its progress notification: no error, nothing to say", async () => {
  const ext = await activated();
  mock.state.activeTextEditor = {
    document: { uri: { toString: () => "file:///tmp/capital.txt" } },
    selection: { active: { line: 0, character: 24 } },
  };
  clients[0].sendRequest = async () => {
    throw Object.assign(new Error("Request with id 60 is canceled"), { code: -32800 });
  };
  const result = await mock.vscode.commands.executeCommand("logitls.generateAtCursor");
  assert.deepEqual(result, { text: "", applied: false, stop: "cancelled" });
  assert.equal(mock.state.messages.length, 0);
  clients[0].sendRequest = async () => {
    throw Object.assign(new Error("Internal error"), { code: -32603 });
  };
  await assert.rejects(mock.vscode.commands.executeCommand("logitls.generateAtCursor") as Promise<unknown>, /Internal error/);
  ext.dispose();
});

test("Generate without an editor asks for one and sends nothing", async () => {
  const ext = await activated();
  await mock.vscode.commands.executeCommand("logitls.generateAtCursor");
  assert.equal(clients[0].requests.length, 0);
  assert.equal(mock.state.messages[0].level, "info");
  ext.dispose();
});

test("Restart server stops the client and starts a new one; changing server.* restarts too", async () => {
  const ext = await activated();
  await mock.vscode.commands.executeCommand("logitls.restartServer");
  assert.equal(clients.length, 2);
  assert.equal(clients[0].stopped, 1);
  assert.equal(clients[1].started, 1);
  mock.setSetting("logitls.topN", 4); // not a server.* change: no restart
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(clients.length, 2);
  mock.setSetting("logitls.server.command", "logitls serve --strict-exit");
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(clients.length, 3);
  assert.deepEqual(clients[2].server.args, ["serve", "--strict-exit"]);
  ext.dispose();
});

test("changing a setting the server takes at start only (scope machine) restarts it with the new value", async () => {
  const ext = await activated();
  for (const [key, value] of [["logitls.trustRemoteCode", true], ["logitls.endpoint", "https://team.example/v1"],
    ["logitls.apiKeyEnv", "TEAM_KEY"]] as [string, unknown][]) {
    const before = clients.length;
    mock.setSetting(key, value);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(clients.length, before + 1, key);
    const sent = clients[clients.length - 1].options.initializationOptions as Record<string, unknown>;
    assert.equal(sent[key.slice("logitls.".length)], value, key);
  }
  ext.dispose();
});

test("a server that is not installed: error with Open Settings, status stopped, no client", async () => {
  mock.setSetting("logitls.server.venv", "/nonexistent-venv");
  mock.setSetting("logitls.server.command", "logitls-not-installed-anywhere serve");
  mock.state.messageAnswer = "Open Settings";
  const ext = await activate(context, factory);
  assert.equal(clients.length, 0);
  assert.equal(mock.state.messages[0].level, "error");
  assert.match(mock.state.messages[0].message, /not found.*nonexistent-venv/);
  assert.deepEqual(mock.state.executed, [{ command: "workbench.action.openSettings", args: ["logitls.server"] }]);
  assert.match(mock.state.statusItems[0].text, /stopped/);
  ext.dispose();
});

test("not found in a remote window (code-server, SSH, WSL): the error says to use the Remote settings", async () => {
  mock.setSetting("logitls.server.venv", "");
  mock.setSetting("logitls.server.command", "logitls-not-installed-anywhere serve");
  mock.state.remoteName = "ssh-remote";
  mock.state.messageAnswer = "Open Remote Settings";
  const ext = await activate(context, factory);
  assert.equal(clients.length, 0);
  assert.match(mock.state.messages[0].message, /not found.*remote window \(ssh-remote\).*Remote settings/);
  assert.deepEqual(mock.state.executed, [{ command: "workbench.action.openRemoteSettings", args: [] }]);
  assert.match(mock.state.statusItems[0].text, /stopped/);
  ext.dispose();
});

test("the hover's branch links are trusted to run logitls.branch, and nothing else is", async () => {
  const middleware = clientOptions().middleware!;
  const link = "| 2 | `␣the` | 6.5% | [↪](command:logitls.branch?%5B%7B%7D%5D) |";
  const contents: { value: string; isTrusted?: unknown }[] = [{ value: link }, { value: "**`␣Paris`**: p = 0.77" }];
  const next = async () => ({ contents });
  const hover = await middleware.provideHover!(
    {} as never, {} as never, {} as never, next as never) as unknown as { contents: typeof contents };
  assert.deepEqual(hover.contents[0].isTrusted, { enabledCommands: ["logitls.branch"] });
  assert.equal(hover.contents[1].isTrusted, undefined);
  const none = await middleware.provideHover!({} as never, {} as never, {} as never, (async () => null) as never);
  assert.equal(none, null);
});
