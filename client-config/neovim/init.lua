-- A minimal Neovim config with logitls: `nvim -u client-config/neovim/init.lua notes.txt`
-- (or copy the setup() call into your own init.lua after adding this folder to 'runtimepath').
local here = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h")
vim.opt.runtimepath:prepend(here)
vim.opt.completeopt = { "menuone", "noinsert", "noselect" }

require("logitls").setup({
  -- cmd = { vim.fn.expand("~/logitls/.venv/bin/logitls"), "serve" },
  settings = { model = "default", topN = 10 },
})
