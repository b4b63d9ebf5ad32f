// Drives the real VS Code workbench (code-server) in headless Chromium with playwright-core, as a
// user would: keyboard, command palette, menus; records what the workbench shows into
// $LOGITLS_TEST_OUT/result.json and the README's screenshots into $LOGITLS_TEST_OUT/*.png.
// tests/editors/test_vscode.py starts code-server, runs this, and asserts on the result.
//
// Every wait is for something the workbench shows (a widget, a text, a colour), bounded by a
// timeout; nothing waits a fixed time for the model.
//
// Environment: LOGITLS_VSCODE_URL (the workbench, ?folder=…), LOGITLS_PLAYWRIGHT (playwright-core's
// node_modules folder), LOGITLS_CHROMIUM, LOGITLS_TEST_OUT, LOGITLS_SETTINGS (the Remote settings.json,
// rewritten to change settings as the Settings editor would), LOGITLS_COMPARE_MODEL (a folder for
// lens.compareModel), LOGITLS_TOKEN_SPANS (lens.txt's tokens as [start, end) pairs, whitespace left out).
import { createRequire } from "module";
import * as fs from "fs";
import * as path from "path";

const require = createRequire(path.join(process.env.LOGITLS_PLAYWRIGHT, "/"));
const { chromium } = require("playwright-core");

const OUT = process.env.LOGITLS_TEST_OUT;
const SETTINGS = process.env.LOGITLS_SETTINGS;
const STATUS = '[id="logitls.logitls"]';
const MODEL_TIMEOUT = 600_000; // a model load or a lens pass on 2 busy cores: a limit against a hang, not an assertion
const UI_TIMEOUT = 120_000; // the workbench on a busy machine
const result = { steps: [] };

function save() {
  fs.writeFileSync(path.join(OUT, "result.json"), JSON.stringify(result, null, 2));
}

function step(name) {
  result.steps.push(name);
  save();
}

function setSettings(changes) {
  const settings = JSON.parse(fs.readFileSync(SETTINGS, "utf8"));
  for (const [key, value] of Object.entries(changes)) {
    if (value === undefined) {
      delete settings[key];
    } else {
      settings[key] = value;
    }
  }
  fs.writeFileSync(SETTINGS, JSON.stringify(settings, null, 2));
}

const browser = await chromium.launch({
  executablePath: process.env.LOGITLS_CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1000, height: 540 } });
page.setDefaultTimeout(UI_TIMEOUT);

// Every text the status bar item and the notifications show, as they change (the status goes
// loading → ready in a few seconds; a notification may come and go between two looks).
await page.addInitScript(() => {
  window.__logitls = { status: [], toasts: [], dialogs: [] };
  setInterval(() => {
    const item = document.getElementById("logitls.logitls");
    const text = item ? item.innerText.trim() : "";
    const seen = window.__logitls.status;
    if (text && seen[seen.length - 1] !== text) {
      seen.push(text);
    }
    for (const toast of document.querySelectorAll(".notification-toast")) {
      if (!toast.dataset.logitlsSeen) {
        toast.dataset.logitlsSeen = "1";
        const error = toast.querySelector(".codicon-error") !== null;
        window.__logitls.toasts.push({ text: toast.innerText.trim(), error });
      }
    }
    for (const dialog of document.querySelectorAll(".monaco-dialog-box")) {
      if (!dialog.dataset.logitlsSeen) {
        dialog.dataset.logitlsSeen = "1";
        window.__logitls.dialogs.push(dialog.innerText.trim());
      }
    }
  }, 50);
});

async function statusHistory() {
  return page.evaluate(() => [...window.__logitls.status]);
}

async function toasts() {
  return page.evaluate(() => [...window.__logitls.toasts]);
}

/** Wait until the status bar item's text, as recorded in its history, matches. */
async function waitForStatus(pattern, timeout = MODEL_TIMEOUT) {
  await page.waitForFunction((source) => {
    const seen = window.__logitls.status;
    return seen.length > 0 && new RegExp(source).test(seen[seen.length - 1]);
  }, pattern.source, { timeout });
  return (await page.locator(STATUS).innerText()).trim();
}

async function shot(name) {
  // a hover fades in: without its animation run to the end, a screen may catch it half drawn
  await page.screenshot({ path: path.join(OUT, `${name}.png`), animations: "disabled" });
}

/** The editor's visible text: its lines as rendered (Monaco renders spaces as U+00A0), without the
 *  ghost text of an inline suggestion, which is drawn inside the line. */
async function editorText() {
  return page.evaluate(() => [...document.querySelectorAll(".editor-instance .view-line")]
    .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))
    .map((line) => {
      const copy = line.cloneNode(true);
      copy.querySelectorAll(".ghost-text-decoration, .ghost-text, .ghost-text-decoration-preview").forEach((g) => g.remove());
      return copy.textContent.replace(/\u00a0/g, " ");
    })
    .join("\n"));
}

async function firstLine() {
  return (await editorText()).split("\n")[0];
}

async function waitForFirstLine(predicate, timeout = MODEL_TIMEOUT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const line = await firstLine();
    if (predicate(line) || Date.now() > deadline) {
      return line;
    }
    await page.waitForTimeout(100); // polling the DOM, not waiting for the model
  }
}

async function runCommand(title) {
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor();
  await input.fill(`>${title}`);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first().waitFor();
  await page.keyboard.press("Enter");
}

async function openFile(name) {
  const editor = page.locator(".editor-instance .view-lines").first();
  if (await editor.count()) {
    await editor.click(); // the keyboard's focus may be on a notification
  }
  await page.keyboard.press("Control+p");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor();
  await input.fill(name);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: name }).first().waitFor();
  await page.keyboard.press("Enter");
  await page.locator(".tab.active", { hasText: name }).waitFor();
  await page.locator(".editor-instance .view-line").first().waitFor();
}

/** Rows of the open suggest widget: label and percentage as the screen shows them. */
async function suggestRows() {
  const rows = page.locator(".suggest-widget.visible .monaco-list-row");
  await rows.first().waitFor();
  return rows.evaluateAll((els) => els
    .sort((a, b) => Number(a.dataset.index) - Number(b.dataset.index))
    .map((row) => ({
      label: row.querySelector(".label-name")?.innerText ?? "",
      detail: (row.querySelector(".label-description")?.innerText
        ?? row.querySelector(".details-label")?.innerText ?? "").trim(),
      aria: row.getAttribute("aria-label"),
    })));
}

async function triggerSuggest() {
  await page.keyboard.press("Control+Space");
  return suggestRows();
}

/** The lens's colours: each coloured span's text, where it starts in the document (the lines are one
 *  wrapped line) and its computed colour, in reading order. Plain text (Monaco's default foreground,
 *  class mtk1) is left out. */
async function lineColours() {
  return page.evaluate(() => {
    let at = 0;
    const out = [];
    const lines = [...document.querySelectorAll(".editor-instance .view-line")]
      .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top));
    for (const span of lines.flatMap((line) => [...line.querySelectorAll("span > span")])) {
      const text = span.textContent.replace(/\u00a0/g, " ");
      if (!span.classList.contains("mtk1") && text.trim()) {
        const style = getComputedStyle(span);
        out.push({ start: at, text, colour: style.color, bold: Number(style.fontWeight) >= 700 });
      }
      at += text.length;
    }
    return out;
  });
}

// The server's tokens of lens.txt as the lens colours them: [start, end) with the whitespace left out.
const TOKEN_SPANS = new Set(JSON.parse(process.env.LOGITLS_TOKEN_SPANS ?? "[]").map(([start, end]) => `${start}-${end}`));

/** Every colour covers one whole token: after an edit the workbench shifts the colours it has along
 *  with the text until the server's tokens for the new text come, and those shifted colours straddle
 *  tokens (`a|nd`, `pelica|ns`); the colour list alone can match while the positions are off. */
function onTokens(spans) {
  return spans.every((span) => TOKEN_SPANS.has(`${span.start}-${span.start + span.text.length}`));
}

function sameColours(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The colours once they lie on the tokens and match; past the timeout an error, or with `orLast` the
 *  colours as they were then (for the test to show what stayed on the screen). */
async function waitForColours(predicate, { timeout = MODEL_TIMEOUT, orLast = false } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const colours = await lineColours();
    if (colours.length > 0 && onTokens(colours) && predicate(colours)) {
      return colours;
    }
    if (Date.now() > deadline) {
      if (orLast) {
        return colours;
      }
      throw new Error(`the lens colours never matched: ${JSON.stringify(colours)}`);
    }
    await page.waitForTimeout(200); // polling the DOM, not waiting for the model
  }
}

/** Put the cursor at a line and column (1-based) with the Go to Line box (Ctrl+G). */
async function goTo(line, column) {
  await page.keyboard.press("Control+g");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor();
  await input.fill(`:${line}:${column}`);
  await page.keyboard.press("Enter");
  await page.locator(".quick-input-widget").waitFor({ state: "hidden" });
}

/** Show the hover at the cursor (Ctrl+K Ctrl+I) and read it. Asked again when none comes: the
 *  workbench drops a hover whose request it cancelled (a settings change re-renders the editor). */
async function hoverText(contains) {
  const deadline = Date.now() + MODEL_TIMEOUT;
  const hover = page.locator(".monaco-hover:not(.hidden) .monaco-hover-content", { hasText: contains }).first();
  for (;;) {
    await page.keyboard.press("Control+k");
    await page.keyboard.press("Control+i");
    try {
      await hover.waitFor({ timeout: 15_000 });
      return (await hover.innerText()).replace(/\u00a0/g, " ");
    } catch (error) {
      if (Date.now() > deadline) {
        throw error;
      }
      await page.keyboard.press("Escape");
    }
  }
}

try {
  const started = Date.now();
  await page.goto(process.env.LOGITLS_VSCODE_URL);
  await page.locator(".monaco-workbench").waitFor({ timeout: MODEL_TIMEOUT });
  step("workbench");
  await openFile("capital.txt");
  await page.keyboard.press("Control+b"); // hide the side bar: more room for the editor in the screens
  result.ready_status = await waitForStatus(/logitls: default/);
  result.startup_ms = Date.now() - started;
  result.status_at_start = await statusHistory();
  step("ready");

  // Completion: the raw next tokens after `…is`, then healed after `…is ` and inside `…is Pa`.
  await page.keyboard.press("Control+Home");
  await page.keyboard.press("End");
  result.completion = await triggerSuggest();
  await shot("vscode-completion");
  await page.keyboard.press("Escape");
  await page.keyboard.type(" ");
  result.completion_after_space = await triggerSuggest();
  await page.keyboard.press("Escape");
  await page.keyboard.type("Pa");
  result.completion_in_word = await triggerSuggest();
  await page.keyboard.press("Enter");
  await page.locator(".suggest-widget.visible").waitFor({ state: "hidden" });
  result.line_after_accept = await firstLine();
  step("completion");

  // Generate from the command palette: the continuation is read back from the editor.
  const before = await editorText();
  await runCommand("logitls: Generate greedy continuation");
  await page.waitForFunction((text) => {
    const lines = [...document.querySelectorAll(".editor-instance .view-line")]
      .map((line) => line.innerText.replace(/\u00a0/g, " ")).join("\n");
    return lines !== text;
  }, before, { timeout: MODEL_TIMEOUT });
  await page.locator(".notification-toast", { hasText: "logitls: generating" }).waitFor({ state: "hidden", timeout: MODEL_TIMEOUT });
  result.text_before_generate = before;
  result.text_after_generate = await editorText();
  await shot("vscode-generate");
  step("generate");

  // Inline suggestion (ghost text) after typing at the end of a line.
  await page.keyboard.press("Control+End");
  await page.keyboard.type("\nThe capital of Italy is");
  const ghost = page.locator(".ghost-text-decoration, .ghost-text").first();
  await ghost.waitFor({ timeout: MODEL_TIMEOUT });
  // the decoration can be in the DOM a frame before its text: wait for the text itself
  await page.waitForFunction(() => [...document.querySelectorAll(".ghost-text-decoration, .ghost-text")]
    .map((node) => node.innerText).join("").trim() !== "", null, { timeout: MODEL_TIMEOUT }).catch(() => {});
  result.inline = (await page.locator(".ghost-text-decoration, .ghost-text").allInnerTexts()).join("").replace(/\u00a0/g, " ");
  await page.keyboard.press("Escape");
  step("inline");

  // Cancel a long generation from its progress notification: nothing is inserted.
  await openFile("count.txt");
  await page.keyboard.press("Control+End");
  const counting = await editorText();
  await runCommand("logitls: Generate greedy continuation");
  const progress = page.locator(".notification-toast", { hasText: "logitls: generating" });
  await progress.waitFor();
  await progress.hover(); // the toast's buttons show on hover
  await progress.getByRole("button", { name: "Cancel" }).click();
  await progress.waitFor({ state: "hidden", timeout: MODEL_TIMEOUT });
  result.count_before = counting;
  result.count_after = await editorText();
  step("cancel");

  // The lens on a document with surprising words: colours, the perplexity code lens, Problems.
  await openFile("lens.txt");
  await page.locator(".codelens-decoration", { hasText: "perplexity" }).waitFor({ timeout: MODEL_TIMEOUT });
  result.code_lens = (await page.locator(".codelens-decoration").first().innerText()).replace(/\u00a0/g, " ");
  result.rank_colours = await waitForColours((spans) => new Set(spans.map((s) => s.colour)).size >= 4);
  await shot("vscode-lens");
  await page.keyboard.press("Control+Shift+m");
  const problems = page.locator(".markers-panel .monaco-list-row");
  await problems.first().waitFor({ timeout: MODEL_TIMEOUT });
  result.problems = await problems.evaluateAll((rows) => rows.map((row) => row.innerText.replace(/\u00a0/g, " ")));
  await shot("vscode-problems");
  await page.keyboard.press("Control+j"); // close the panel again
  step("lens");

  // Hover on ` Paris` (line 1, column 26 is inside it).
  await page.locator(".editor-instance .view-lines").click();
  await goTo(1, 28);
  result.hover = await hoverText("rank");
  await shot("vscode-hover");
  // The alternatives' ↪ links run logitls.branch (the extension trusts the hover for that command).
  const links = page.locator('.monaco-hover:not(.hidden) a[data-href^="command:logitls.branch"]');
  result.hover_links = await links.count();
  const beforeLink = await firstLine();
  await page.locator(".monaco-hover:not(.hidden) tr", { hasText: "London" }).locator("a").click();
  result.line_after_hover_link = await waitForFirstLine((line) => line !== beforeLink);
  await page.keyboard.press("Escape");
  await page.locator(".editor-instance .view-lines").click();
  await page.keyboard.press("Control+z");
  result.line_after_hover_link_undo = await waitForFirstLine((line) => line === beforeLink);
  // The text is lens.txt again: its colours must come back to the very same tokens.
  result.colours_after_hover_link_undo = await waitForColours((spans) => sameColours(spans, result.rank_colours),
    { orLast: true });
  step("hover");

  // Branch: the code action menu on ` Paris`; take ` London` and continue; one undo restores the line.
  const lensLine = await firstLine();
  await goTo(1, 28);
  await page.keyboard.press("Control+.");
  const actions = page.locator(".action-widget .monaco-list-row");
  await actions.filter({ hasText: "and continue" }).first().waitFor({ timeout: MODEL_TIMEOUT });
  result.code_actions = await actions.evaluateAll((rows) => rows.map((row) => row.innerText.replace(/\u00a0/g, " ")));
  await shot("vscode-branch");
  await actions.filter({ hasText: "London" }).first().click();
  result.line_after_branch = await waitForFirstLine((line) => line !== lensLine);
  await page.keyboard.press("Control+z");
  result.line_after_undo = await waitForFirstLine((line) => line === lensLine);
  result.lens_line = lensLine;
  // Until the lens has scored the restored text, the workbench shows the branched text's colours
  // shifted along with the undo; then the rank colours of the fresh document again, so that any
  // change after the switch below is the view's.
  result.colours_after_undo = await waitForColours((spans) => sameColours(spans, result.rank_colours),
    { orLast: true });
  step("branch");

  // The entropy view: the colours change to how unsure the model was at each position.
  setSettings({ "logitls.lens.view": "entropy" });
  result.entropy_colours = await waitForColours((spans) => !sameColours(spans, result.rank_colours)
    && new Set(spans.map((s) => s.colour)).size >= 2);
  await shot("vscode-entropy");
  step("entropy");

  // Compare with a second model: both probabilities in the hover, colours by which found it likelier.
  // The test fine-tunes that model meanwhile (a folder that appears whole).
  const compareDeadline = Date.now() + MODEL_TIMEOUT;
  while (!fs.existsSync(process.env.LOGITLS_COMPARE_MODEL)) {
    if (Date.now() > compareDeadline) {
      throw new Error(`no compare model at ${process.env.LOGITLS_COMPARE_MODEL}`);
    }
    await page.waitForTimeout(500);
  }
  setSettings({ "logitls.lens.compareModel": process.env.LOGITLS_COMPARE_MODEL, "logitls.lens.view": "compare" });
  await page.locator(".editor-instance .view-lines").click();
  await goTo(1, 28);
  const hoverDeadline = Date.now() + MODEL_TIMEOUT;
  for (;;) {
    // the second model loads on the model thread; until then the hover has one probability
    result.compare_hover = await hoverText("rank");
    if (result.compare_hover.includes("compared model") || Date.now() > hoverDeadline) {
      break;
    }
    await page.keyboard.press("Escape");
    await page.waitForTimeout(500);
  }
  await page.keyboard.press("Escape");
  result.compare_colours = await waitForColours((spans) => !sameColours(spans, result.entropy_colours)
    && new Set(spans.map((s) => s.colour)).size >= 2);
  await hoverText("compared model"); // again, over the compare view's colours
  await shot("vscode-compare-hover");
  await page.keyboard.press("Escape");
  await shot("vscode-compare");
  setSettings({ "logitls.lens.compareModel": undefined, "logitls.lens.view": undefined });
  step("compare");

  // Restart server from the command palette: loading, then ready again.
  const beforeRestart = (await statusHistory()).length;
  await runCommand("logitls: Restart server");
  await page.waitForFunction((n) => window.__logitls.status.slice(n).some((s) => s.includes("loading")), beforeRestart,
    { timeout: MODEL_TIMEOUT });
  await waitForStatus(/logitls: default$/);
  result.status_restart = (await statusHistory()).slice(beforeRestart);
  step("restart");

  // A model that cannot load: one error, status failed; fixed, the server loads the model again.
  const toastsBefore = (await toasts()).length;
  setSettings({ "logitls.model": "/nonexistent/model" });
  result.failed_status = await waitForStatus(/failed/);
  await page.locator(".notification-toast", { hasText: "/nonexistent/model" }).first().waitFor();
  await shot("vscode-failed");
  setSettings({ "logitls.model": undefined });
  result.recovered_status = await waitForStatus(/logitls: default$/);
  result.bad_model_toasts = (await toasts()).slice(toastsBefore);
  step("bad-model");

  result.status_history = await statusHistory();
  result.toasts = await toasts();
  result.dialogs = await page.evaluate(() => window.__logitls.dialogs);
  result.total_ms = Date.now() - started;
  step("done");
} catch (error) {
  result.error = `${error.stack ?? error}`;
  result.status_history = await statusHistory().catch(() => []);
  result.toasts = await toasts().catch(() => []);
  result.dialogs = await page.evaluate(() => window.__logitls.dialogs).catch(() => []);
  await shot("failure").catch(() => undefined);
} finally {
  save();
  await browser.close();
}
