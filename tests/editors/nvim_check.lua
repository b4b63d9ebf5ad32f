-- Run inside Neovim after the shipped config (client-config/neovim/init.lua) has loaded and the
-- test file is open: checks completion, hover (through K's floating window) and :LogitlsGenerate,
-- and writes what Neovim saw to $LOGITLS_TEST_OUT as JSON. pytest (test_neovim.py) judges it.
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

local ok, err = xpcall(function()
  -- 1. the server attaches and the model becomes ready (logitls/status)
  vim.wait(180000, function()
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
  local responses = vim.lsp.buf_request_sync(0, "textDocument/completion", params, 60000)
  local result = responses and responses[client.id] and responses[client.id].result
  out.completion = logitls.complete_items(result)
  for _, item in ipairs(out.completion) do
    item.user_data = nil
  end
  note("completion")

  -- 3. hover through K: the floating window's text
  vim.api.nvim_win_set_cursor(0, { 1, #line - 1 }) -- on "is"
  local before = vim.api.nvim_list_wins()
  vim.api.nvim_feedkeys("K", "x", false) -- the buffer-local K mapping → vim.lsp.buf.hover()
  local float
  vim.wait(60000, function()
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
  vim.wait(120000, function()
    return vim.api.nvim_buf_get_lines(0, 0, -1, false)[1] ~= line
  end, 20)
  out.after_generate = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  note("generate")

  -- 5. :LogitlsRestart brings a new server that becomes ready again
  local old_id = client.id
  vim.cmd("LogitlsRestart")
  vim.wait(180000, function()
    local c = logitls.client(0)
    return c ~= nil and c.id ~= old_id and logitls.status.state == "ready"
  end, 50)
  local new = logitls.client(0)
  out.restarted = new ~= nil and new.id ~= old_id and logitls.status.state == "ready"
  note("restart")
end, debug.traceback)
if not ok then
  out.error = err
end
finish()
