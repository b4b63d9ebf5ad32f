;;; emacs_package_lint.el --- package-lint on client-config/emacs/logitls.el, offline  -*- lexical-binding: t; -*-
;; emacs --batch -q -l tests/editors/emacs_package_lint.el -f package-lint-batch-and-exit logitls.el
;; No package archive is reachable here: the archive index package-lint asks is what GNU ELPA lists for
;; the one dependency (eglot, 1.9 and later). Warnings fail too.
(require 'package)
(require 'package-lint)
(setq package-lint-batch-fail-on-warnings t)
(advice-add 'package-initialize :after
            (lambda (&rest _)
              (setq package-archive-contents
                    (list (list 'eglot (package-desc-create :name 'eglot :version '(1 9) :archive "gnu"))))))
