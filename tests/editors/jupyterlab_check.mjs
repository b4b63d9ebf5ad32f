// Drives a real JupyterLab (with jupyterlab-lsp, logitls found through its jupyter-lsp entry point) in
// headless Chromium with playwright-core, as a user would: the file browser, Tab for the completer,
// Ctrl+hover for the hover. Records what JupyterLab shows into $LOGITLS_TEST_OUT/result.json and the
// README's screenshots into $LOGITLS_TEST_OUT/*.png. tests/editors/test_jupyterlab.py starts JupyterLab,
// runs this, and asserts on the result.
//
// Every wait is for something JupyterLab shows (the completer, a hover, a text), bounded by a timeout;
// a try that shows nothing yet (the model still loading) is repeated until a deadline.
//
// Environment: LOGITLS_JUPYTERLAB_URL, LOGITLS_PLAYWRIGHT (playwright-core's node_modules folder),
// LOGITLS_CHROMIUM, LOGITLS_TEST_OUT.
import { createRequire } from "module";
import * as fs from "fs";
import * as path from "path";

const require = createRequire(path.join(process.env.LOGITLS_PLAYWRIGHT, "/"));
const { chromium } = require("playwright-core");

const OUT = process.env.LOGITLS_TEST_OUT;
const URL = process.env.LOGITLS_JUPYTERLAB_URL;
const MODEL_TIMEOUT = 300_000; // JupyterLab, the kernel and the model starting on 2 busy cores
const TRY_TIMEOUT = 15_000; // one Tab or one hover
const result = { steps: [] };

function save() {
  fs.writeFileSync(path.join(OUT, "result.json"), JSON.stringify(result, null, 2));
}

function step(name) {
  result.steps.push(name);
  save();
}

const browser = await chromium.launch({
  executablePath: process.env.LOGITLS_CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1000, height: 560 } });
page.setDefaultTimeout(60_000);
result.console = [];
page.on("console", (message) => {
  if (/logitls|error/i.test(message.text())) {
    result.console.push(message.text().slice(0, 300));
  }
});

async function shot(name) {
  await page.screenshot({ path: path.join(OUT, `${name}.png`), animations: "disabled" });
}

/** Opens a file from the file browser (one page load: the language server keeps running). */
async function openFile(name) {
  await page.locator(".jp-DirListing-itemText", { hasText: new RegExp(`^${name.replace(".", "\\.")}$`) }).dblclick();
  await page.locator(".lm-TabBar-tab.jp-mod-current", { hasText: name }).waitFor();
}

/** The current document's visible editor text, line by line. */
async function lines(editor) {
  return editor.locator(".cm-line").allInnerTexts();
}

/** Where `word` is drawn inside `root` (the middle of its third letter). */
async function wordPoint(root, word) {
  return root.evaluate((element, word) => {
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const at = node.textContent.indexOf(word);
      if (at >= 0) {
        const range = document.createRange();
        range.setStart(node, at + 2);
        range.setEnd(node, at + 3);
        const box = range.getBoundingClientRect();
        return { x: box.x + box.width / 2, y: box.y + box.height / 2 };
      }
    }
    return null;
  }, word);
}

/** jupyterlab-lsp's hover: Ctrl held while the pointer comes onto the word; tried again until a hover
 *  shows (the first tries may come before the server has the model). */
async function hoverText(root, word) {
  const deadline = Date.now() + MODEL_TIMEOUT;
  const hover = page.locator(".lsp-hover");
  await root.locator(".cm-line", { hasText: word }).first().waitFor(); // the document's text is in
  for (;;) {
    const point = await wordPoint(root, word);
    // from beside the word on its own line: passing over other text with Ctrl held would hover that
    await page.mouse.move(point.x + 6, point.y);
    await page.keyboard.down("Control");
    await page.mouse.move(point.x, point.y, { steps: 3 });
    try {
      await hover.waitFor({ timeout: TRY_TIMEOUT });
      // the box comes first, its Markdown rendered into it a moment later
      await page.waitForFunction(() => /\S/.test(document.querySelector(".lsp-hover")?.innerText ?? ""),
        null, { timeout: TRY_TIMEOUT });
      return await hover.innerText();
    } catch (error) {
      if (Date.now() > deadline) {
        throw new Error(`no hover over '${word}' in ${MODEL_TIMEOUT / 1000} s`);
      }
    } finally {
      await page.keyboard.up("Control");
    }
  }
}

async function leaveHover() {
  await page.mouse.move(5, 300);
  await page.keyboard.press("Escape");
  await page.locator(".lsp-hover").waitFor({ state: "detached", timeout: TRY_TIMEOUT }).catch(() => {});
}

try {
  step("open JupyterLab");
  await page.goto(`${URL}/lab/tree/capital.txt?reset`);
  const textEditor = page.locator(".jp-FileEditor .cm-content >> visible=true");
  await textEditor.waitFor({ timeout: MODEL_TIMEOUT });

  step("completion in capital.txt");
  await textEditor.click();
  await page.keyboard.press("Control+Home");
  await page.keyboard.press("End");
  const completer = page.locator(".jp-Completer:not(.lm-mod-hidden) .jp-Completer-item");
  const deadline = Date.now() + MODEL_TIMEOUT;
  for (;;) {
    await page.keyboard.press("Tab");
    try {
      await completer.first().waitFor({ timeout: TRY_TIMEOUT });
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        throw new Error(`the completer never showed; the line reads ${JSON.stringify((await lines(textEditor))[0])}`);
      }
      await page.keyboard.press("Escape");
    }
  }
  result.completion = await completer.evaluateAll((items) => items.map((item) => ({
    label: item.querySelector(".jp-Completer-match")?.innerText ?? "",
    detail: item.querySelector(".jp-Completer-typeExtended")?.innerText ?? "",
    insert: item.dataset.value,
  })));
  save();
  await shot("jupyterlab-completion");
  const before = (await lines(textEditor))[0];
  await page.keyboard.press("Enter");
  // the line changes once the item is inserted (bounded: an Enter that inserts nothing is recorded too)
  await page.waitForFunction((before) => {
    const line = document.querySelector(".jp-FileEditor:not(.lm-mod-hidden) .cm-line");
    return line && line.innerText !== before;
  }, before, { timeout: TRY_TIMEOUT }).catch(() => {});
  result.line_after_accept = (await lines(textEditor))[0];
  save();
  await shot("jupyterlab-accepted");

  step("hover in capital.md");
  await openFile("capital.md");
  const mdEditor = page.locator(".jp-FileEditor .cm-content >> visible=true");
  await mdEditor.waitFor();
  result.hover_md = await hoverText(mdEditor, "capital");
  save();
  await shot("jupyterlab-hover-md");
  await leaveHover();

  step("hover in a notebook Markdown cell");
  await openFile("notes.ipynb");
  const cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownCell").first();
  await cell.waitFor();
  await cell.dblclick(); // edit mode: the cell's source in an editor
  const cellEditor = cell.locator(".cm-content");
  await cellEditor.waitFor();
  result.hover_notebook = await hoverText(cellEditor, "capital");
  save();
  await shot("jupyterlab-hover-notebook");
  await leaveHover();
  step("done");
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
  await shot("jupyterlab-error").catch(() => {});
} finally {
  save();
  await browser.close();
}
