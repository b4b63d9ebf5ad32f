-- Neovim 0.11+: `vim.lsp.enable('logitls')` starts `logitls serve` (from PATH) for text, markdown and
-- gitcommit buffers once this repository is on 'runtimepath' (a plugin manager puts it there).
-- Change any field the usual way, e.g.
--   vim.lsp.config('logitls', { filetypes = { 'text', 'rst' }, settings = { logitls = { topN = 5 } } })
-- (`cmd = { '/path/to/venv/bin/logitls', 'serve' }` for a server off PATH). :checkhealth logitls.
return require("logitls").lsp_config()
