-- A minimal Neovim config with logitls: `nvim -u client-config/neovim/init.lua notes.txt`
-- (or install the repository with your plugin manager and copy the setup() call; on 0.11+ `vim.lsp.enable("logitls")` is enough)
-- the repository root: the plugin (lua/, lsp/) lives there, as a plugin manager clones it
local here = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h:h:h")
vim.opt.runtimepath:prepend(here)
vim.opt.completeopt = { "menuone", "noinsert", "noselect" }

require("logitls").setup({
  -- cmd = { vim.fn.expand("~/logitls/.venv/bin/logitls"), "serve" },
  settings = { model = "default", topN = 10 },
})
