-- logitls for Neovim: a causal language model's next-token probabilities as LSP completion, hover
-- and a greedy-continuation command.
--
--   require("logitls").setup({
--     cmd = { "logitls", "serve" },            -- or { "/path/to/.venv/bin/logitls", "serve" }
--     venv = nil,                               -- a venv with logitls: its bin/ is tried first
--     filetypes = { "text", "markdown", "gitcommit" },
--     settings = { model = "default", topN = 10, generate = { maxNewTokens = 100 } },
--     keymaps = true,                           -- K: hover; <C-x><C-o>: the completion menu
--     on_attach = function(client, bufnr) end,
--   })
--
-- Neovim 0.11+ uses vim.lsp.config/vim.lsp.enable; 0.7-0.10 use vim.lsp.start_client and attach
-- each buffer of those filetypes. Commands: :LogitlsGenerate [N], :'<,'>LogitlsScoreSelection,
-- :LogitlsRestart, :LogitlsStatus. On 0.11+ setup() is optional: `vim.lsp.enable('logitls')` takes
-- lsp/logitls.lua (this repository on 'runtimepath'), and `vim.lsp.config('logitls', {...})` changes
-- it (filetypes, cmd, settings = { logitls = {...} }). :checkhealth logitls says what it finds.
local M = {}

M.name = "logitls"
M.status = { state = "stopped", model = "", message = "" } -- the last logitls/status notification
M.options = nil

local defaults = {
  cmd = { "logitls", "serve" },
  venv = nil,
  filetypes = { "text", "markdown", "gitcommit" },
  settings = {},
  keymaps = true,
  on_attach = nil,
  capabilities = nil,
}

local has_011 = vim.fn.has("nvim-0.11") == 1
local legacy_client_id = nil -- 0.7-0.10: the one client all buffers share

-- client:request on 0.11+ (the dot form is deprecated there), client.request before.
local function request(client, method, params, handler, bufnr)
  if has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

local function get_clients(bufnr)
  local filter = { name = M.name, bufnr = bufnr }
  if vim.lsp.get_clients then
    return vim.lsp.get_clients(filter)
  end
  local out = {}
  local clients = bufnr and vim.lsp.buf_get_clients(bufnr) or vim.lsp.get_active_clients()
  for _, client in pairs(clients) do
    if client.name == M.name then
      table.insert(out, client)
    end
  end
  return out
end

--- The logitls client attached to a buffer (the current one by default), or nil.
function M.client(bufnr)
  return get_clients(bufnr or vim.api.nvim_get_current_buf())[1]
end

local function resolve_cmd(opts)
  local cmd = vim.deepcopy(opts.cmd)
  if type(cmd) == "string" then
    cmd = vim.split(cmd, "%s+", { trimempty = true })
  end
  local program = cmd[1]
  if opts.venv and not program:find("/") then
    local candidate = vim.fn.expand(opts.venv) .. "/bin/" .. program
    if vim.fn.executable(candidate) == 1 then
      cmd[1] = candidate
      return cmd
    end
  end
  if vim.fn.executable(cmd[1]) ~= 1 then
    vim.notify(("logitls: the server program %q was not found (PATH%s). Install logitls (pip install logitls), "
      .. "or pass cmd = { '/path/to/.venv/bin/logitls', 'serve' } or venv = '/path/to/.venv' to setup()."):format(
      program, opts.venv and (" and " .. opts.venv .. "/bin") or ""), vim.log.levels.ERROR)
    return nil
  end
  return cmd
end

-- Byte column (0-based) in `line` of the LSP position `character`, counted in `encoding`
-- ("utf-8", "utf-16" or "utf-32"). Walks the UTF-8 sequences itself: vim.str_byteindex changed
-- its signature in 0.11.
local function byte_column(line, character, encoding)
  if encoding == "utf-8" then
    return math.min(character, #line)
  end
  local units, i = 0, 1
  while i <= #line and units < character do
    local byte = line:byte(i)
    local len = byte >= 0xF0 and 4 or byte >= 0xE0 and 3 or byte >= 0xC0 and 2 or 1
    units = units + ((encoding ~= "utf-32" and len == 4) and 2 or 1) -- beyond the BMP: a surrogate pair
    i = i + len
  end
  return math.min(i - 1, #line)
end
M.byte_column = byte_column

-- Where an item's edit starts, as a byte column on the cursor's line: its textEdit's range start
-- (an InsertReplaceEdit's `insert` range), or the cursor for an item without one or whose edit
-- is not on the cursor's line before the cursor.
local function edit_start(item, line, row, col, encoding)
  local edit = item.textEdit
  local range = edit and (edit.range or edit.insert)
  if not range or range.start.line ~= row then
    return col
  end
  return math.min(byte_column(line, range.start.character, encoding), col)
end

--- Completion items as Vim's complete() wants them, and the byte column (0-based) they replace
--- from: complete() replaces the text from that column to the cursor with the chosen `word`.
--- With token healing each item's textEdit replaces the space or half-typed word before the
--- cursor (`…is ` + ` Paris`): the column is the edit's start and `word` its newText. Raw next
--- tokens have an empty range at the cursor: the column is the cursor. `line` is the cursor's
--- line, `row` (0-based) and `col` (0-based bytes) the cursor, `encoding` the client's
--- offset_encoding; without them the column is nil and `word` is the newText.
--- The label is shown, the probability in the menu column, the full detail in the info window.
function M.complete_items(result, line, row, col, encoding)
  local items = result and (result.items or result) or {}
  items = vim.deepcopy(items)
  table.sort(items, function(a, b)
    return (a.sortText or a.label) < (b.sortText or b.label)
  end)
  local starts, start = {}, nil
  if line then
    start = col
    for i, item in ipairs(items) do
      starts[i] = edit_start(item, line, row, col, encoding or "utf-16")
      start = math.min(start, starts[i])
    end
  end
  local out = {}
  for i, item in ipairs(items) do
    local word = (item.textEdit and item.textEdit.newText) or item.insertText or item.label
    if start and starts[i] > start then
      word = line:sub(start + 1, starts[i]) .. word -- an edit that starts later keeps the text before it
    end
    local percent = item.labelDetails and item.labelDetails.description or ""
    table.insert(out, {
      word = word,
      abbr = item.label,
      menu = percent,
      info = item.detail or "",
      icase = 1,
      dup = 1,
      empty = 1,
      user_data = { nvim = { lsp = { completion_item = item } } },
    })
  end
  return out, start
end

--- omnifunc (<C-x><C-o>): the next tokens at the cursor, without Vim's keyword-prefix filtering
--- (next tokens usually start with a space, so the word before the cursor must not filter them).
--- The request is asynchronous: findstart answers -2 (stay in completion mode) and the answer
--- opens the menu with complete(), from the column where the items' edit starts.
function M.omnifunc(findstart, _base)
  if findstart ~= 1 then
    return {}
  end
  local bufnr = vim.api.nvim_get_current_buf()
  local client = M.client(bufnr)
  if not client then
    return -3
  end
  local win = vim.api.nvim_get_current_win()
  local cursor = vim.api.nvim_win_get_cursor(win)
  local params = vim.lsp.util.make_position_params(win, client.offset_encoding)
  request(client, "textDocument/completion", params, function(err, result)
    if err or not result then
      return
    end
    local now = vim.api.nvim_win_get_cursor(win)
    if vim.fn.mode() ~= "i" or vim.api.nvim_get_current_win() ~= win or now[1] ~= cursor[1] or now[2] ~= cursor[2] then
      return -- the user moved on
    end
    local line = vim.api.nvim_buf_get_lines(bufnr, cursor[1] - 1, cursor[1], false)[1] or ""
    local items, start = M.complete_items(result, line, cursor[1] - 1, cursor[2], client.offset_encoding)
    vim.fn.complete(start + 1, items)
  end, bufnr)
  return -2
end

-- Byte index just after the character under the cursor (0-based bytes; UTF-8 aware).
local function after_cursor_char(line, col)
  local byte = line:byte(col + 1)
  if not byte then
    return col
  end
  local len = byte >= 0xF0 and 4 or byte >= 0xE0 and 3 or byte >= 0xC0 and 2 or 1
  return math.min(#line, col + len)
end

-- LSP character of byte column `col` (0-based) on `line`, in the client's offset encoding.
local function lsp_character(line, col, encoding)
  col = math.min(col, #line)
  if encoding == "utf-8" then
    return col
  end
  local utf32, utf16 = vim.str_utfindex(line, col)
  return encoding == "utf-32" and utf32 or utf16
end

--- Position for :LogitlsGenerate: in Normal mode just after the character under the cursor (as `a`
--- appends), in Insert mode at the cursor.
function M.generate_position(win, encoding)
  win = win or 0
  local cursor = vim.api.nvim_win_get_cursor(win)
  local row, col = cursor[1] - 1, cursor[2]
  local line = vim.api.nvim_buf_get_lines(vim.api.nvim_win_get_buf(win), row, row + 1, false)[1] or ""
  if vim.fn.mode() ~= "i" then
    col = after_cursor_char(line, col)
  end
  return { line = row, character = lsp_character(line, col, encoding) }
end

-- The logitls client of `bufnr`, or nil after telling the user there is none.
local function attached_client(bufnr)
  local client = M.client(bufnr)
  if not client then
    vim.notify("logitls: no logitls server is attached to this buffer (:LogitlsRestart, or check the filetype)",
      vim.log.levels.WARN)
  end
  return client
end

-- Run `command` with its one argument; an error is told to the user as "<what> failed", a result goes
-- to `on_result` (optional), and both to `done(err, result)` (optional).
local function execute_command(client, bufnr, command, arg, what, done, on_result)
  local params = { command = command, arguments = { arg } }
  request(client, "workspace/executeCommand", params, function(err, result)
    if err then
      vim.notify(("logitls: %s failed: %s"):format(what, err.message or vim.inspect(err)), vim.log.levels.ERROR)
    elseif on_result then
      on_result(result)
    end
    if done then
      done(err, result)
    end
  end, bufnr)
end

--- Insert the greedy continuation (`logitls.generate`) at the cursor. `max_new_tokens` optional.
--- `done(err, result)` is called with the server's answer {text, applied, stop}.
function M.generate(max_new_tokens, done)
  local bufnr = vim.api.nvim_get_current_buf()
  local client = attached_client(bufnr)
  if not client then
    return
  end
  local arg = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = M.generate_position(0, client.offset_encoding),
  }
  if max_new_tokens then
    arg.maxNewTokens = max_new_tokens
  end
  execute_command(client, bufnr, "logitls.generate", arg, "generate", done, function(result)
    if result and not result.applied and result.text == "" and result.stop == "eos" then
      vim.notify("logitls: the model ended the text here (nothing to insert)", vim.log.levels.INFO)
    end
  end)
end

--- The LSP range of the last Visual selection ('< to '>, the end just after the last character;
--- linewise: whole lines), or of lines `line1`..`line2` (1-based) when the marks are elsewhere.
function M.selection_range(bufnr, line1, line2, encoding)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local s, e = vim.fn.getpos("'<"), vim.fn.getpos("'>")
  local srow, scol, erow, ecol = s[2], s[3] - 1, e[2], e[3] - 1
  if line1 and (srow ~= line1 or erow ~= line2) then
    srow, scol, erow, ecol = line1, 0, line2, vim.v.maxcol or 2147483646
  end
  local first = vim.api.nvim_buf_get_lines(bufnr, srow - 1, srow, false)[1] or ""
  local last = vim.api.nvim_buf_get_lines(bufnr, erow - 1, erow, false)[1] or ""
  return {
    start = { line = srow - 1, character = lsp_character(first, math.max(scol, 0), encoding) },
    ["end"] = { line = erow - 1, character = lsp_character(last, after_cursor_char(last, math.min(ecol, #last)), encoding) },
  }
end

--- Score the selection (`logitls.scoreSelection`): bits per token, perplexity and the least likely
--- token, which the server shows as a message. `range` an LSP range (default: the last Visual
--- selection); `done(err, result)` gets the server's answer.
function M.score_selection(range, done)
  local bufnr = vim.api.nvim_get_current_buf()
  local client = attached_client(bufnr)
  if not client then
    return
  end
  local arg = { textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    range = range or M.selection_range(bufnr, nil, nil, client.offset_encoding) }
  execute_command(client, bufnr, "logitls.scoreSelection", arg, "score selection", done)
end

--- "logitls: ready default on cpu", for a statusline: %{v:lua.require'logitls'.statusline()}
function M.statusline()
  local s = M.status
  if s.state == "stopped" then
    return ""
  end
  return ("logitls: %s %s"):format(s.state, s.model or "")
end

local function on_status(_, result)
  if type(result) ~= "table" then
    return
  end
  local previous = M.status.state
  M.status = { state = result.state, model = result.model or "", message = result.message or "" }
  if result.state == "failed" and previous ~= "failed" then
    vim.notify("logitls: the model failed to load: " .. (result.message or ""), vim.log.levels.ERROR)
  end
  pcall(vim.api.nvim_exec_autocmds, "User", { pattern = "LogitlsStatus", modeline = false })
  vim.schedule(function()
    pcall(vim.cmd, "redrawstatus!") -- a statusline showing statusline() changes with it
  end)
end

local function on_attach(client, bufnr)
  local opts = M.options or defaults
  vim.bo[bufnr].omnifunc = "v:lua.require'logitls'.omnifunc"
  if opts.keymaps then
    vim.keymap.set("n", "K", vim.lsp.buf.hover, { buffer = bufnr, desc = "logitls: probability of the token" })
  end
  if opts.on_attach then
    opts.on_attach(client, bufnr)
  end
end

local function capabilities(opts)
  if opts.capabilities then
    return opts.capabilities
  end
  local ok, cmp_lsp = pcall(require, "cmp_nvim_lsp") -- nvim-cmp: advertise what it can show
  if ok then
    return cmp_lsp.default_capabilities()
  end
  return vim.lsp.protocol.make_client_capabilities()
end

-- The client configuration shared by both paths.
function M.client_config(cmd)
  local opts = M.options or defaults
  return {
    name = M.name,
    cmd = cmd,
    filetypes = opts.filetypes,
    -- the server reads initializationOptions and answers to workspace/configuration (section "logitls")
    init_options = { logitls = opts.settings },
    settings = { logitls = opts.settings },
    capabilities = capabilities(opts),
    handlers = { ["logitls/status"] = on_status },
    on_attach = on_attach,
    on_exit = function()
      M.status = { state = "stopped", model = "", message = "" }
    end,
  }
end

--- The configuration lsp/logitls.lua gives `vim.lsp.enable('logitls')` (0.11+), before any setup():
--- `logitls serve` from PATH, the default filetypes and settings.
function M.lsp_config()
  return M.client_config(vim.deepcopy(defaults.cmd))
end

M.defaults = defaults

local function attach_legacy(bufnr)
  if not vim.tbl_contains(M.options.filetypes, vim.bo[bufnr].filetype) or vim.bo[bufnr].buftype ~= "" then
    return
  end
  if not legacy_client_id or not vim.lsp.get_client_by_id(legacy_client_id) then
    local cmd = resolve_cmd(M.options)
    if not cmd then
      return
    end
    local config = M.client_config(cmd)
    config.root_dir = vim.fn.getcwd()
    legacy_client_id = vim.lsp.start_client(config)
    if not legacy_client_id then
      vim.notify("logitls: the server did not start: " .. table.concat(cmd, " "), vim.log.levels.ERROR)
      return
    end
  end
  vim.lsp.buf_attach_client(bufnr, legacy_client_id)
end

local function start_011()
  local cmd = resolve_cmd(M.options)
  if not cmd then
    return
  end
  vim.lsp.config(M.name, M.client_config(cmd))
  vim.lsp.enable(M.name)
end

local function matching_buffers()
  local out = {}
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(M.options.filetypes, vim.bo[bufnr].filetype) then
      table.insert(out, bufnr)
    end
  end
  return out
end

--- Stop the server and start a fresh one for every buffer of the configured filetypes.
function M.restart()
  local old = get_clients(nil)
  for _, client in ipairs(old) do
    if has_011 then
      client:stop()
    else
      client.stop()
    end
  end
  vim.wait(5000, function()
    return #get_clients(nil) == 0
  end, 50)
  legacy_client_id = nil
  for _, bufnr in ipairs(matching_buffers()) do
    if has_011 then
      vim.lsp.start(vim.lsp.config[M.name], { bufnr = bufnr })
    else
      attach_legacy(bufnr)
    end
  end
end

-- The surprisal lens: the server's semantic token types are GLTR's rank buckets. Neovim 0.9+
-- highlights them as @lsp.type.<type>; `default = true` lets a colorscheme or the user override.
M.lens_colours = {
  likely = { bg = "#2d4a2d", ctermbg = 22 },      -- top 10: green
  plausible = { bg = "#4a4a1f", ctermbg = 58 },   -- top 100: yellow
  unlikely = { bg = "#5a2a2a", ctermbg = 52 },    -- top 1000: red
  surprising = { bg = "#4a2a5a", ctermbg = 54 },  -- beyond: purple
  -- lens.view = "entropy": how unsure the model was at each position
  confident = { bg = "#2d4a2d", ctermbg = 22 },   -- entropy < 1 bit: green
  leaning = { bg = "#4a4a1f", ctermbg = 58 },     -- < 3 bits: yellow
  unsure = { bg = "#5a2a2a", ctermbg = 52 },      -- < 6 bits: red
  lost = { bg = "#4a2a5a", ctermbg = 54 },        -- 6 bits or more: purple
  -- lens.view = "compare": which model (logitls.model or lens.compareModel) found the token likelier
  favoured = { bg = "#2d4a2d", ctermbg = 22 },            -- likelier under the main model: green
  stronglyFavoured = { bg = "#3d6a3d", ctermbg = 28 },    -- by 1 nat or more
  disfavoured = { bg = "#5a2a2a", ctermbg = 52 },         -- likelier under the compared model: red
  stronglyDisfavoured = { bg = "#7a2a2a", ctermbg = 88 }, -- by 1 nat or more
}

function M.set_lens_highlights()
  if vim.fn.has("nvim-0.9") == 0 then
    return -- semantic tokens arrived in 0.9; older versions show no lens colours
  end
  for kind, colour in pairs(M.lens_colours) do
    vim.api.nvim_set_hl(0, "@lsp.type." .. kind, vim.tbl_extend("force", colour, { default = true }))
  end
end

function M.setup(opts)
  M.options = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  M.set_lens_highlights()
  vim.api.nvim_create_autocmd("ColorScheme", { callback = M.set_lens_highlights })
  if opts and opts.filetypes then
    M.options.filetypes = opts.filetypes -- lists replace, not merge
  end
  if opts and opts.cmd then
    M.options.cmd = opts.cmd
  end
  vim.api.nvim_create_user_command("LogitlsGenerate", function(args)
    M.generate(tonumber(args.args))
  end, { nargs = "?", desc = "logitls: insert the greedy continuation at the cursor ([N] tokens at most)" })
  vim.api.nvim_create_user_command("LogitlsScoreSelection", function(args)
    local client = M.client()
    local encoding = client and client.offset_encoding or "utf-16"
    local range = args.range > 0 and M.selection_range(nil, args.line1, args.line2, encoding) or nil
    M.score_selection(range)
  end, { range = true, desc = "logitls: bits per token and perplexity of the selection (:'<,'>)" })
  vim.api.nvim_create_user_command("LogitlsRestart", M.restart, { desc = "logitls: restart the language server" })
  vim.api.nvim_create_user_command("LogitlsStatus", function()
    local s = M.status
    print(("logitls: %s %s %s"):format(s.state, s.model or "", s.message or ""))
  end, { desc = "logitls: the model's state" })
  if has_011 then
    start_011()
  else
    local group = vim.api.nvim_create_augroup("logitls", { clear = true })
    vim.api.nvim_create_autocmd("FileType", {
      group = group,
      pattern = M.options.filetypes,
      callback = function(ev)
        attach_legacy(ev.buf)
      end,
    })
    for _, bufnr in ipairs(matching_buffers()) do
      attach_legacy(bufnr)
    end
  end
end

return M
