// A stand-in for the `vscode` module (which exists only inside VS Code), just rich enough for the
// extension: it records registered commands, messages and the status bar item, and serves the
// settings from package.json's `contributes.configuration` defaults, as VS Code would.
// Importing this file makes `require("vscode")` resolve to it.
import * as fs from "fs";
import * as path from "path";
import Module = require("module");

type Json = Record<string, unknown>;

const packageJson = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8"));

/** package.json defaults as one nested object: {"logitls": {"model": ..., "generate": {...}}}. */
export function defaultSettings(): Json {
  const root: Json = {};
  for (const [key, prop] of Object.entries(packageJson.contributes.configuration.properties as Record<string, Json>)) {
    setPath(root, key, prop.default);
  }
  return root;
}

function setPath(obj: Json, dotted: string, value: unknown): void {
  const parts = dotted.split(".");
  let node = obj;
  for (const part of parts.slice(0, -1)) {
    node = (node[part] ??= {}) as Json;
  }
  node[parts[parts.length - 1]] = value;
}

function getPath(obj: unknown, dotted: string): unknown {
  let node = obj;
  for (const part of dotted.split(".").filter(Boolean)) {
    if (node === null || typeof node !== "object") {
      return undefined;
    }
    node = (node as Json)[part];
  }
  return node;
}

export const state = {
  settings: defaultSettings(),
  commands: new Map<string, (...args: unknown[]) => unknown>(),
  executed: [] as { command: string; args: unknown[] }[],
  messages: [] as { level: string; message: string }[],
  messageAnswer: undefined as string | undefined,
  configurationListeners: [] as ((event: { affectsConfiguration(section: string): boolean }) => void)[],
  statusItems: [] as StatusBarItem[],
  activeTextEditor: undefined as unknown,
  progress: [] as Json[],
  remoteName: undefined as string | undefined,
};

export function reset(): void {
  state.settings = defaultSettings();
  state.commands.clear();
  state.executed = [];
  state.messages = [];
  state.messageAnswer = undefined;
  state.configurationListeners = [];
  state.statusItems = [];
  state.activeTextEditor = undefined;
  state.progress = [];
  state.remoteName = undefined;
}

export function setSetting(dotted: string, value: unknown): void {
  setPath(state.settings, dotted, value);
  for (const listener of state.configurationListeners) {
    listener({ affectsConfiguration: (section: string) => dotted === section || dotted.startsWith(`${section}.`) });
  }
}

class Disposable {
  constructor(private readonly fn: () => void = () => undefined) {}
  dispose(): void {
    this.fn();
  }
}

export class StatusBarItem {
  text = "";
  tooltip: string | undefined;
  command: string | undefined;
  backgroundColor: unknown;
  visible = false;
  disposed = false;
  constructor(public readonly alignment: number, public readonly priority: number) {}
  show(): void {
    this.visible = true;
  }
  hide(): void {
    this.visible = false;
  }
  dispose(): void {
    this.disposed = true;
  }
}

export class ThemeColor {
  constructor(public readonly id: string) {}
}

function message(level: string) {
  return async (text: string) => {
    state.messages.push({ level, message: text });
    return state.messageAnswer;
  };
}

export const vscode = {
  StatusBarAlignment: { Left: 1, Right: 2 },
  ProgressLocation: { SourceControl: 1, Window: 10, Notification: 15 },
  ThemeColor,
  Disposable,
  env: {
    get remoteName() {
      return state.remoteName;
    },
  },
  workspace: {
    getConfiguration(section?: string) {
      return {
        get<T>(key: string, fallback?: T): T | undefined {
          const value = getPath(state.settings, section ? `${section}.${key}` : key);
          return (value === undefined ? fallback : JSON.parse(JSON.stringify(value))) as T | undefined;
        },
      };
    },
    onDidChangeConfiguration(listener: (typeof state.configurationListeners)[number]) {
      state.configurationListeners.push(listener);
      return new Disposable(() => {
        state.configurationListeners = state.configurationListeners.filter((l) => l !== listener);
      });
    },
  },
  window: {
    get activeTextEditor() {
      return state.activeTextEditor;
    },
    createStatusBarItem(alignment: number, priority: number) {
      const item = new StatusBarItem(alignment, priority);
      state.statusItems.push(item);
      return item;
    },
    showErrorMessage: message("error"),
    showWarningMessage: message("warning"),
    showInformationMessage: message("info"),
    async withProgress(options: Json, task: (progress: unknown, token: unknown) => Promise<unknown>) {
      state.progress.push(options);
      return task({ report: () => undefined }, { isCancellationRequested: false, onCancellationRequested: () => new Disposable() });
    },
  },
  commands: {
    registerCommand(command: string, fn: (...args: unknown[]) => unknown) {
      if (state.commands.has(command)) {
        throw new Error(`command ${command} already registered`);
      }
      state.commands.set(command, fn);
      return new Disposable(() => state.commands.delete(command));
    },
    async executeCommand(command: string, ...args: unknown[]) {
      state.executed.push({ command, args });
      const fn = state.commands.get(command);
      return fn ? fn(...args) : undefined;
    },
  },
};

const mockPath = __filename;
const M = Module as unknown as { _resolveFilename: (request: string, ...rest: unknown[]) => string };
const original = M._resolveFilename;
M._resolveFilename = function (request: string, ...rest: unknown[]) {
  return request === "vscode" ? mockPath : original.call(this, request, ...rest);
};

// `require("vscode")` gets the API object itself.
module.exports = Object.assign(vscode, { state, reset, setSetting, defaultSettings, StatusBarItem, vscode });
