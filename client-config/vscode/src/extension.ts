// The logitls VS Code extension: starts `logitls serve` with vscode-languageclient, sends the
// `logitls` settings to it, shows its `logitls/status` in the status bar, and offers the commands
// "logitls: Generate greedy continuation" and "logitls: Restart server"; lets hovers run logitls.branch links.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as readline from "readline";
import type { Readable } from "stream";
import * as vscode from "vscode";
import type { LanguageClient, LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";
import {
  generateOutcome, generateParams, GenerateResult, isCancellation, remoteSettingsHint, resolveServerCommand, restartSections, ServerCommand,
  serverSettings, Status, StderrReader, stderrLevel, statusView,
} from "./config";

export const SECTION = "logitls";
export const STATUS_NOTIFICATION = "logitls/status";
export const DEFAULT_LANGUAGES = ["plaintext", "markdown", "git-commit"];

/** The documents served: `languages` in files and untitled editors, and notebooks' Markdown cells. */
export function documentSelector(languages: string[] = DEFAULT_LANGUAGES, notebookCells = true) {
  const selector: { scheme: string; language: string }[] = languages.flatMap((language) => [
    { scheme: "file", language },
    { scheme: "untitled", language },
  ]);
  if (notebookCells) {
    selector.push({ scheme: "vscode-notebook-cell", language: "markdown" });
  }
  return selector;
}


/** The part of a language client the extension uses (a real LanguageClient, or a fake in the tests). */
export interface Client {
  start(): Promise<void>;
  stop(): Promise<void>;
  restart?(): Promise<void>;
  onNotification(method: string, handler: (params: Status) => void): vscode.Disposable;
  sendRequest<R>(method: string, params: unknown, token?: vscode.CancellationToken): Promise<R>;
  readonly outputChannel: vscode.OutputChannel;
}

export type ClientFactory = (server: ServerCommand, options: LanguageClientOptions) => Client;

export function createLanguageClient(server: ServerCommand, options: LanguageClientOptions): Client {
  const { LanguageClient: Impl } = require("vscode-languageclient/node") as typeof import("vscode-languageclient/node");
  const serverOptions: ServerOptions = { command: server.command, args: server.args, options: { env: process.env } };
  return new Impl(SECTION, "logitls", serverOptions, options) as LanguageClient as unknown as Client;
}

function currentSettings(): Record<string, unknown> {
  return serverSettings(vscode.workspace.getConfiguration().get(SECTION));
}

/** The server's command that hover links may run (`[↪](command:logitls.branch?…)`, see the server's branch.py). */
export const BRANCH_COMMAND = "logitls.branch";

/** Let a hover's markdown run the branch command links, and no other command: VS Code renders
 *  `command:` links only in a MarkdownString whose `isTrusted` allows them. */
export function trustBranchLinks<H extends { contents: unknown[] } | null | undefined>(hover: H): H {
  for (const content of hover?.contents ?? []) {
    if (content && typeof content === "object" && typeof (content as { value?: unknown }).value === "string"
        && (content as { value: string }).value.includes(`command:${BRANCH_COMMAND}?`)) {
      (content as { isTrusted?: unknown }).isTrusted = { enabledCommands: [BRANCH_COMMAND] };
    }
  }
  return hover;
}

/** The server's stderr in the output channel at each line's own level, its `logitls` records once
 *  (vscode-languageclient would tag every stderr line `[error]`, and those records also arrive as
 *  window/logMessage). */
export function pipeServerStderr(input: Readable, channel: vscode.LogOutputChannel): void {
  const reader: StderrReader = { current: "info" };
  readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on("line", (line) => {
    const level = stderrLevel(line, reader);
    if (level) {
      channel[level](line);
    }
  });
}

function configuredSelector() {
  const config = vscode.workspace.getConfiguration(SECTION);
  const languages = config.get<unknown>("server.languages");
  return documentSelector(Array.isArray(languages) ? languages.filter((l): l is string => typeof l === "string")
    : DEFAULT_LANGUAGES, config.get<boolean>("server.notebookCells") ?? true);
}

export function clientOptions(): LanguageClientOptions {
  return {
    documentSelector: configuredSelector(),
    stdioOptions: {
      stdout: (input, channel) => readline.createInterface({ input, terminal: false }).on("line", (line) => channel.info(line)),
      stderr: pipeServerStderr,
    },
    initializationOptions: currentSettings(),
    // didChangeConfiguration on every change under `logitls`; the server then pulls the section.
    synchronize: { configurationSection: SECTION },
    middleware: {
      provideHover: async (document, position, token, next) => trustBranchLinks(await next(document, position, token)),
      workspace: {
        // Answer workspace/configuration without the extension's own settings (server.*, trace.*).
        configuration: async (params, token, next) => {
          const result = await next(params, token);
          if (!Array.isArray(result)) {
            return result;
          }
          return result.map((value, i) => (params.items[i]?.section === SECTION ? serverSettings(value) : value));
        },
      },
    },
  };
}

export function serverCommand(): ServerCommand {
  const config = vscode.workspace.getConfiguration(SECTION);
  return resolveServerCommand(config.get<string>("server.command") ?? "", {
    venv: config.get<string>("server.venv") ?? "",
    envPath: process.env.PATH,
    home: os.homedir(),
    exists: (file) => {
      try {
        return fs.statSync(file).isFile();
      } catch {
        return false;
      }
    },
  });
}

export class LogitlsExtension implements vscode.Disposable {
  client: Client | undefined;
  readonly statusItem: vscode.StatusBarItem;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly createClient: ClientFactory = createLanguageClient) {
    this.statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
    this.statusItem.command = "logitls.restartServer";
    // the model the server will load, named before it says so ("loading model" read as a bug)
    const model = vscode.workspace.getConfiguration(SECTION).get<string>("model") || undefined;
    this.showStatus({ state: "loading", model, message: "starting the server" });
    this.statusItem.show();
  }

  register(context: vscode.ExtensionContext): void {
    // out/extension.js -> the extension's package.json, whose settings carry their scope
    const restartOn = restartSections(JSON.parse(fs.readFileSync(path.join(__dirname, "..", "package.json"), "utf8")));
    this.disposables.push(
      vscode.commands.registerCommand("logitls.generateAtCursor", () => this.generateAtCursor()),
      vscode.commands.registerCommand("logitls.restartServer", () => this.restart()),
      vscode.commands.registerCommand("logitls.showLog", () => this.client?.outputChannel.show(true)),
      vscode.workspace.onDidChangeConfiguration((event) => {
        if (restartOn.some((section) => event.affectsConfiguration(section))) {
          void this.restart();
        }
      }),
    );
    context.subscriptions.push(this);
  }

  showStatus(status: Status): void {
    const view = statusView(status);
    this.statusItem.text = view.text;
    this.statusItem.tooltip = view.tooltip;
    this.statusItem.backgroundColor = view.error ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  async start(): Promise<void> {
    let server: ServerCommand;
    try {
      server = serverCommand();
    } catch (error) {
      const hint = remoteSettingsHint(vscode.env.remoteName);
      const message = [error instanceof Error ? error.message : String(error), hint].filter(Boolean).join(" ");
      this.showStatus({ state: "stopped", message });
      const open = hint ? "Open Remote Settings" : "Open Settings";
      const choice = await vscode.window.showErrorMessage(message, open);
      if (choice === open) {
        await vscode.commands.executeCommand(hint ? "workbench.action.openRemoteSettings" : "workbench.action.openSettings",
          ...(hint ? [] : ["logitls.server"]));
      }
      return;
    }
    const client = this.createClient(server, clientOptions());
    this.client = client;
    this.disposables.push(client.onNotification(STATUS_NOTIFICATION, (status) => this.showStatus(status)));
    this.showStatus({ state: "loading", model: vscode.workspace.getConfiguration(SECTION).get<string>("model") || undefined,
      message: `${server.command} ${server.args.join(" ")}` });
    try {
      await client.start();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.showStatus({ state: "stopped", message });
      void vscode.window.showErrorMessage(`logitls: the server did not start: ${message}`);
    }
  }

  async restart(): Promise<void> {
    const old = this.client;
    this.client = undefined;
    if (old) {
      try {
        await old.stop();
      } catch {
        // a server that is already gone cannot be stopped; start a new one anyway
      }
    }
    await this.start();
  }

  async generateAtCursor(maxNewTokens?: number): Promise<GenerateResult | undefined> {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      void vscode.window.showInformationMessage("logitls: open a document and put the cursor where the text should go on");
      return undefined;
    }
    if (!this.client) {
      void vscode.window.showWarningMessage("logitls: the server is not running (logitls: Restart server)");
      return undefined;
    }
    const position = editor.selection.active;
    const params = generateParams(editor.document.uri.toString(), position.line, position.character, maxNewTokens);
    const client = this.client;
    const result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: "logitls: generating", cancellable: true },
      async (_progress, token) => {
        try {
          return await client.sendRequest<GenerateResult>("workspace/executeCommand", params, token);
        } catch (error) {
          // Cancel on the notification rejects the request: that is the user's choice, not an error
          // (VS Code would show "Command … resulted in an error" in a modal dialog).
          if (token.isCancellationRequested || isCancellation(error)) {
            return { text: "", applied: false, stop: "cancelled" };
          }
          throw error;
        }
      },
    );
    const outcome = generateOutcome(result);
    if (outcome) {
      const show = outcome.level === "info" ? vscode.window.showInformationMessage : vscode.window.showWarningMessage;
      void show(outcome.message);
    }
    return result;
  }

  dispose(): void {
    for (const d of this.disposables.splice(0)) {
      d.dispose();
    }
    this.statusItem.dispose();
    void this.client?.stop();
  }
}

let extension: LogitlsExtension | undefined;

export async function activate(context: vscode.ExtensionContext, createClient?: ClientFactory): Promise<LogitlsExtension> {
  extension = new LogitlsExtension(createClient);
  extension.register(context);
  await extension.start();
  return extension;
}

export async function deactivate(): Promise<void> {
  const client = extension?.client;
  extension = undefined;
  await client?.stop();
}
