-- :checkhealth logitls: the server program, its version, and the model's state.
local M = {}

local health = vim.health or require("health") -- vim.health from 0.8; the "health" module before
local start = health.start or health.report_start
local ok = health.ok or health.report_ok
local warn = health.warn or health.report_warn
local fail = health.error or health.report_error
local info = health.info or health.report_info

local function configured_cmd()
  local logitls = require("logitls")
  if vim.fn.has("nvim-0.11") == 1 and vim.lsp.config and vim.lsp.config.logitls then
    local cmd = vim.lsp.config.logitls.cmd
    if type(cmd) == "table" then
      return cmd, "vim.lsp.config('logitls')"
    end
  end
  local opts = logitls.options or logitls.defaults
  local cmd = type(opts.cmd) == "string" and vim.split(opts.cmd, "%s+", { trimempty = true }) or opts.cmd
  if opts.venv and not cmd[1]:find("/") then
    local candidate = vim.fn.expand(opts.venv) .. "/bin/" .. cmd[1]
    if vim.fn.executable(candidate) == 1 then
      cmd = vim.list_extend({ candidate }, vim.list_slice(cmd, 2))
    end
  end
  return cmd, logitls.options and "setup()" or "the default"
end

function M.check()
  start("logitls")
  if vim.fn.has("nvim-0.11") == 1 then
    ok("Neovim " .. tostring(vim.version()) .. ": vim.lsp.enable('logitls') takes lsp/logitls.lua")
  else
    info("Neovim before 0.11: use require('logitls').setup({...})")
  end
  local cmd, from = configured_cmd()
  local program = cmd[1]
  if vim.fn.executable(program) ~= 1 then
    fail(("the server program %q (%s) was not found"):format(program, from), {
      "Install it: `pipx install logitls` or `uv tool install logitls` (on Linux, a CPU-only torch first)",
      "or point cmd at it: vim.lsp.config('logitls', { cmd = { '/path/to/venv/bin/logitls', 'serve' } })",
    })
    return
  end
  ok(("server: %s (%s)"):format(vim.fn.exepath(program), from))
  local version = vim.fn.systemlist({ program, "--version" })
  if vim.v.shell_error == 0 and version[1] then
    ok("version: " .. version[1])
  else
    warn(("`%s --version` failed: %s"):format(program, table.concat(version, " ")))
  end
  local models = vim.fn.system({ program, "model", "list", "--json" })
  local decoded = vim.v.shell_error == 0 and pcall(vim.fn.json_decode, models) and vim.fn.json_decode(models)
  if decoded then
    for _, model in ipairs(decoded.models or {}) do
      local line = ("model %s: %s%s"):format(model.name, model.state,
        model.path ~= vim.NIL and model.path and (" (" .. model.path .. ")") or "")
      if model.state:find("not fetched") then
        warn(line, { "It is downloaded on first use; `logitls model pull` fetches it now" })
      else
        ok(line)
      end
    end
  else
    warn("`logitls model list` failed: " .. models)
  end
  local status = require("logitls").status
  if status.state == "stopped" then
    info("no logitls server running in this Neovim (open a text, markdown or gitcommit buffer)")
  elseif status.state == "failed" then
    fail(("running server: the model %s failed to load: %s"):format(status.model, status.message))
  else
    ok(("running server: %s %s %s"):format(status.state, status.model, status.message))
  end
end

return M
