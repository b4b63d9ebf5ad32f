// Pure helpers of the extension (no `vscode` import): the server command line, where its program
// is found, which settings go to the server, and what the status bar says.
import * as path from "path";

/** Settings under `logitls.` that only the extension reads; they are never sent to the server. */
export const CLIENT_ONLY_KEYS = ["server", "trace"] as const;

export const DEFAULT_COMMAND = "logitls serve";

/** The settings whose change restarts the server: the extension's `server.*`, and every setting scoped
 *  to the machine (`trustRemoteCode`, `endpoint`, `apiKeyEnv`), which the server reads from its
 *  initializationOptions only, so that no workspace can change them later. */
export function restartSections(packageJson: unknown): string[] {
  const properties = (packageJson as { contributes?: { configuration?: { properties?: Record<string, { scope?: string }> } } })
    ?.contributes?.configuration?.properties ?? {};
  const machine = Object.keys(properties)
    .filter((key) => properties[key].scope === "machine" && !key.startsWith("logitls.server."));
  return ["logitls.server", ...machine];
}

/** Split a command line on whitespace; single or double quotes keep a part with spaces together. */
export function splitCommand(line: string): string[] {
  const parts: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let match: RegExpExecArray | null;
  while ((match = re.exec(line)) !== null) {
    parts.push(match[1] ?? match[2] ?? match[3]);
  }
  return parts;
}

export interface ServerCommand {
  command: string;
  args: string[];
}

export interface ResolveOptions {
  venv?: string;
  envPath?: string;
  platform?: NodeJS.Platform;
  home?: string;
  exists: (file: string) => boolean;
}

export class ServerNotFound extends Error {
  constructor(public readonly program: string, public readonly searched: string[]) {
    super(`logitls: the server program "${program}" was not found (looked in ${searched.join(", ") || "nothing"}). `
      + "Install logitls (pip install logitls), or set logitls.server.venv / logitls.server.command.");
  }
}

/** What to add to "not found" in a remote window (code-server, Remote - SSH, WSL, a container):
 *  there VS Code applies `machine` and `machine-overridable` settings from the Remote settings only
 *  and ignores them in the User settings (which belong to the local machine), so a venv set in the
 *  User settings is not seen. Undefined in a local window. */
export function remoteSettingsHint(remoteName: string | undefined): string | undefined {
  if (!remoteName) {
    return undefined;
  }
  return `This is a remote window (${remoteName}): set logitls.server.venv or logitls.server.command in the `
    + "Remote settings (Settings → the \"Remote\" tab, or \"Preferences: Open Remote Settings\"); VS Code ignores "
    + "them in your User settings here.";
}

function expandHome(p: string, home?: string): string {
  return home && (p === "~" || p.startsWith("~/")) ? path.join(home, p.slice(1)) : p;
}

/** The program and arguments to spawn: the venv's bin/ first, then PATH; an absolute program as is. */
export function resolveServerCommand(commandLine: string, options: ResolveOptions): ServerCommand {
  const parts = splitCommand(commandLine.trim() || DEFAULT_COMMAND);
  const program = expandHome(parts[0], options.home);
  const args = parts.slice(1);
  const windows = (options.platform ?? process.platform) === "win32";
  const pathApi = windows ? path.win32 : path.posix;
  if (pathApi.isAbsolute(program) || program.includes("/") || (windows && program.includes("\\"))) {
    if (!options.exists(program)) {
      throw new ServerNotFound(program, [program]);
    }
    return { command: program, args };
  }
  const dirs: string[] = [];
  if (options.venv && options.venv.trim()) {
    dirs.push(pathApi.join(expandHome(options.venv.trim(), options.home), windows ? "Scripts" : "bin"));
  }
  for (const dir of (options.envPath ?? "").split(windows ? ";" : ":")) {
    if (dir) {
      dirs.push(dir);
    }
  }
  const names = windows ? [program, `${program}.exe`, `${program}.cmd`] : [program];
  for (const dir of dirs) {
    for (const name of names) {
      const candidate = pathApi.join(dir, name);
      if (options.exists(candidate)) {
        return { command: candidate, args };
      }
    }
  }
  throw new ServerNotFound(program, dirs);
}

/** The `logitls` section as the server wants it: client-only keys removed, a deep plain copy. */
export function serverSettings(section: unknown): Record<string, unknown> {
  if (section === null || typeof section !== "object" || Array.isArray(section)) {
    return {};
  }
  const copy = JSON.parse(JSON.stringify(section)) as Record<string, unknown>;
  for (const key of CLIENT_ONLY_KEYS) {
    delete copy[key];
  }
  return copy;
}

export interface Status {
  state: "loading" | "ready" | "failed" | "stopped" | string;
  model?: string;
  message?: string;
}

export interface StatusView {
  text: string;
  tooltip: string;
  error: boolean;
}

/** The status bar item for a `logitls/status` notification. */
export function statusView(status: Status): StatusView {
  const model = status.model || "model";
  const detail = status.message ? `\n${status.message}` : "";
  switch (status.state) {
    case "loading":
      return { text: `$(sync~spin) logitls: loading ${model}`, tooltip: `logitls is loading ${model}${detail}`, error: false };
    case "ready":
      return { text: `$(pulse) logitls: ${model}`, tooltip: `logitls ready: ${model}${detail}\nClick to restart the server.`, error: false };
    case "failed":
      return { text: `$(error) logitls: ${model} failed`, tooltip: `logitls: ${model} failed to load${detail}\nFix the logitls.model setting.`, error: true };
    default:
      return { text: "$(circle-slash) logitls: stopped", tooltip: `logitls is not running${detail}\nClick to restart the server.`, error: true };
  }
}

export const GENERATE_COMMAND = "logitls.generate";

export interface GenerateArguments {
  textDocument: { uri: string };
  position: { line: number; character: number };
  maxNewTokens?: number;
}

/** The `workspace/executeCommand` params for `logitls.generate` at a position. */
export function generateParams(uri: string, line: number, character: number, maxNewTokens?: number):
  { command: string; arguments: GenerateArguments[] } {
  const arg: GenerateArguments = { textDocument: { uri }, position: { line, character } };
  if (maxNewTokens !== undefined) {
    arg.maxNewTokens = maxNewTokens;
  }
  return { command: GENERATE_COMMAND, arguments: [arg] };
}

export interface GenerateResult {
  text: string;
  applied: boolean;
  stop: string;
}

/** LSP's RequestCancelled: vscode-languageclient rejects a request whose token was cancelled with it. */
export const REQUEST_CANCELLED = -32800;

/** Whether a request failed because it was cancelled (the user's Cancel on the progress notification). */
export function isCancellation(error: unknown): boolean {
  return typeof error === "object" && error !== null && (error as { code?: unknown }).code === REQUEST_CANCELLED;
}

/** What to tell the user after a generation; undefined when the inserted text speaks for itself. */
export function generateOutcome(result: GenerateResult | null | undefined): { level: "info" | "warning"; message: string } | undefined {
  if (!result) {
    return { level: "warning", message: "logitls: the server gave no answer to logitls.generate" };
  }
  if (result.applied) {
    return result.stop === "timeout" ? { level: "info", message: "logitls: stopped at generate.timeoutSeconds" } : undefined;
  }
  if (result.stop === "cancelled" || result.stop === "document-changed" || result.stop === "no-model") {
    return undefined; // the server has already said why (window/showMessage), or the user cancelled
  }
  if (!result.text) {
    return { level: "info", message: "logitls: the model ended the text here (nothing to insert)" };
  }
  return { level: "warning", message: "logitls: the continuation was not inserted" };
}

export type LogLevel = "error" | "warn" | "info" | "debug";

/** How the server's stderr lines are read: `logitls serve` writes `<logger> <LEVEL>: <message>`
 *  (continuation lines, such as a traceback, follow their record). */
export interface StderrReader {
  /** The level of the record being continued, or "skip" when it also came as window/logMessage. */
  current: LogLevel | "skip";
}

const RECORD = /^([\w.]+) (DEBUG|INFO|WARNING|ERROR|CRITICAL): /;
const LEVELS: Record<string, LogLevel> = { DEBUG: "debug", INFO: "info", WARNING: "warn", ERROR: "error", CRITICAL: "error" };

/** Where one stderr line goes in the output channel: its level, or undefined for a line of the
 *  `logitls` logger, whose records the server also sends as window/logMessage (with their level)
 *  and which would otherwise show twice. Progress bars and other bare lines are info. */
export function stderrLevel(line: string, reader: StderrReader): LogLevel | undefined {
  const record = RECORD.exec(line);
  if (record) {
    const logger = record[1];
    reader.current = logger === "logitls" || logger.startsWith("logitls.") ? "skip" : LEVELS[record[2]];
  } else if (line.startsWith("Traceback (most recent call last):") && reader.current !== "skip") {
    reader.current = "error";
  } else if (/\d+%\|/.test(line)) {
    return "info"; // a progress bar (tqdm), whatever record came before it
  }
  return reader.current === "skip" ? undefined : reader.current;
}
