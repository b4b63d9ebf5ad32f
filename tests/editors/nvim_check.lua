-- Run inside Neovim after the shipped config (client-config/neovim/init.lua) has loaded and the
-- test file is open: checks completion, hover (through K's floating window), :LogitlsGenerate and the
-- branch code actions,
-- and writes what Neovim saw to $LOGITLS_TEST_OUT as JSON. pytest (test_neovim.py) judges it.
-- How long any wait may last: a limit against a hang, not an assertion; each returns as soon as its
-- condition holds. A busy machine (the suite beside other work) answers slowly.
local WAIT_MS = 600000

local logitls = require("logitls")
local v = vim.version()
local out = { nvim = ("%d.%d.%d"):format(v.major, v.minor, v.patch), events = {} }

local function note(event)
  table.insert(out.events, event)
end

local function finish()
  local f = assert(io.open(vim.env.LOGITLS_TEST_OUT, "w"))
  f:write(vim.fn.json_encode(out))
  f:close()
  vim.cmd("qa!")
end

-- 0. no server needed: an edit's start, counted in UTF-16/UTF-32/UTF-8, as a byte column
do
  local line = "naïve 😀 Pa" -- ï: 2 bytes, 1 unit; 😀: 4 bytes, 2 UTF-16 units, 1 UTF-32 unit
  local function edit(start, new_text, label)
    return { label = label or new_text, sortText = label or new_text,
             textEdit = { range = { start = { line = 0, character = start }, ["end"] = { line = 0, character = 99 } },
                          newText = new_text } }
  end
  local function run(items, encoding)
    local out_items, start = logitls.complete_items({ items = items }, line, 0, #line, encoding)
    local words = {}
    for _, item in ipairs(out_items) do
      table.insert(words, item.word)
    end
    return { start = start, words = words }
  end
  out.synthetic = {
    line_bytes = #line,
    utf16 = run({ edit(8, " Paris", "a") }, "utf-16"),
    utf32 = run({ edit(7, " Paris", "a") }, "utf-32"),
    utf8 = run({ edit(11, " Paris", "a") }, "utf-8"),
    raw = run({ edit(11, " x", "a") }, "utf-16"),
    -- one answer whose edits start at different columns: the earliest wins, the others keep the text between
    mixed = run({ edit(8, " Paris", "a"), edit(11, "ris", "b"), { label = "c", insertText = "!" } }, "utf-16"),
  }
end

local ok, err = xpcall(function()
  -- 1. the server attaches and the model becomes ready (logitls/status)
  vim.wait(WAIT_MS, function()
    return logitls.status.state == "ready" or logitls.status.state == "failed"
  end, 50)
  out.status = logitls.status
  out.statusline = logitls.statusline()
  local client = logitls.client(0)
  out.attached = client ~= nil
  out.omnifunc = vim.bo.omnifunc
  if not client or logitls.status.state ~= "ready" then
    return
  end
  note("ready")

  -- 2. completion at the end of line 1, as the omnifunc builds the menu
  local line = vim.api.nvim_buf_get_lines(0, 0, 1, false)[1]
  vim.api.nvim_win_set_cursor(0, { 1, #line })
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.position.character = #line -- the end of the line (Insert-mode cursor)
  local responses = vim.lsp.buf_request_sync(0, "textDocument/completion", params, WAIT_MS)
  local result = responses and responses[client.id] and responses[client.id].result
  local items, start = logitls.complete_items(result, line, 0, #line, client.offset_encoding)
  out.completion = items
  out.completion_start = start
  for _, item in ipairs(out.completion) do
    item.user_data = nil
  end
  note("completion")

  -- 3. hover through K: the floating window's text
  vim.api.nvim_win_set_cursor(0, { 1, #line - 1 }) -- on "is"
  local before = vim.api.nvim_list_wins()
  vim.api.nvim_feedkeys("K", "x", false) -- the buffer-local K mapping → vim.lsp.buf.hover()
  local float
  vim.wait(WAIT_MS, function()
    for _, win in ipairs(vim.api.nvim_list_wins()) do
      if not vim.tbl_contains(before, win) and vim.api.nvim_win_get_config(win).relative ~= "" then
        float = win
        return true
      end
    end
    return false
  end, 20)
  if float then
    out.hover = vim.api.nvim_buf_get_lines(vim.api.nvim_win_get_buf(float), 0, -1, false)
    vim.api.nvim_win_close(float, true)
  end
  out.k_mapping = vim.fn.maparg("K", "n") ~= "" or vim.fn.mapcheck("K", "n") ~= ""
  note("hover")

  -- 4. :LogitlsGenerate in Normal mode with the cursor on the last character
  vim.api.nvim_win_set_cursor(0, { 1, #line - 1 })
  vim.cmd("LogitlsGenerate 8")
  vim.wait(WAIT_MS, function()
    return vim.api.nvim_buf_get_lines(0, 0, -1, false)[1] ~= line
  end, 20)
  out.after_generate = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  note("generate")

  -- 4b. branch: vim.lsp.buf.code_action() at " Paris" (vim.ui.select records the menu and picks the
  -- ' London' action, as a user would), Neovim runs its logitls.branch command, whose edit changes the
  -- line; one `u` undoes it
  local france = "The capital of France is Paris. It is big."
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { france })
  vim.o.undolevels = vim.o.undolevels -- an undo break: the branch's edit is an undo step of its own
  vim.api.nvim_win_set_cursor(0, { 1, #"The capital of France is P" })
  local select = vim.ui.select
  local branch_menu
  vim.ui.select = function(items, opts, on_choice)
    branch_menu = {}
    local chosen
    for _, item in ipairs(items) do
      local title = opts.format_item(item)
      table.insert(branch_menu, title)
      if not chosen and title:find("' London'", 1, true) then
        chosen = item
      end
    end
    on_choice(chosen)
  end
  vim.lsp.buf.code_action()
  vim.wait(WAIT_MS, function()
    return branch_menu ~= nil
  end, 20)
  vim.ui.select = select
  out.branch_menu = branch_menu
  vim.wait(WAIT_MS, function()
    return vim.api.nvim_buf_get_lines(0, 0, -1, false)[1] ~= france
  end, 20)
  out.after_branch = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  vim.cmd("undo")
  out.after_branch_undo = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  note("branch")

  -- 5. :LogitlsRestart brings a new server that becomes ready again
  local old_id = client.id
  vim.cmd("LogitlsRestart")
  vim.wait(WAIT_MS, function()
    local c = logitls.client(0)
    return c ~= nil and c.id ~= old_id and logitls.status.state == "ready"
  end, 50)
  local new = logitls.client(0)
  out.restarted = new ~= nil and new.id ~= old_id and logitls.status.state == "ready"
  note("restart")
end, debug.traceback)
if not ok then
  out.error = err
  finish()
  return
end
if not out.restarted then
  finish()
  return
end

-- 6. the real thing, as a user types it: Insert mode at the end of the line, <C-x><C-o> (the
-- plugin's omnifunc, its request and complete()), wait for the popup, <C-n> takes the first item,
-- <C-y> accepts it, <Esc>. Typeahead runs only in Neovim's main loop, so each step waits there
-- (a timer polls) before the next: this part runs after the script has returned.
local cases = { "The capital of France is ", "The capital of France is Pa", "The capital of France is" }
out.menus = {}

local function keys(k)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(k, true, false, true), "t", false)
end

local function step(f)
  return function(...)
    local args = { ... }
    local ok2, err2 = xpcall(function()
      f((table.unpack or unpack)(args))
    end, debug.traceback)
    if not ok2 then
      out.error = err2
      finish()
    end
  end
end

local function when(pred, timeout_ms, next)
  local deadline = (vim.uv or vim.loop).now() + timeout_ms
  local tick
  tick = step(function()
    if pred() then
      next(true)
    elseif (vim.uv or vim.loop).now() > deadline then
      next(false)
    else
      vim.defer_fn(tick, 20)
    end
  end)
  vim.defer_fn(tick, 20)
end

local run_case
run_case = step(function(i)
  local text = cases[i]
  if not text then
    note("menu")
    finish()
    return
  end
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { text })
  vim.api.nvim_win_set_cursor(0, { 1, 0 })
  keys("A<C-x><C-o>")
  when(function()
    return vim.fn.pumvisible() == 1
  end, WAIT_MS, function(shown)
    local menu = { text = text, shown = shown, items = {} }
    table.insert(out.menus, menu)
    for _, item in ipairs(vim.fn.complete_info({ "items" }).items or {}) do
      table.insert(menu.items, { word = item.word, abbr = item.abbr, menu = item.menu })
    end
    keys(shown and "<C-n><C-y><Esc>" or "<Esc>")
    when(function()
      return vim.fn.mode() == "n"
    end, WAIT_MS, function()
      menu.line = vim.api.nvim_get_current_line()
      run_case(i + 1)
    end)
  end)
end)
run_case(1)
