;;; logitls.el --- Language model next-token probabilities via eglot  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The logitls authors

;; Author: The logitls authors
;; Maintainer: The logitls authors
;; URL: https://github.com/logitls/logitls
;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1") (eglot "1.9"))
;; Keywords: convenience, languages, tools
;; SPDX-License-Identifier: MIT

;; This file is not part of GNU Emacs.

;;; Commentary:

;; Connects eglot to `logitls serve' for text and Markdown buffers (the major modes in
;; `logitls-major-modes').  Installed as a package (the MELPA-style recipe in
;; client-config/emacs/logitls.recipe), load it once eglot is loaded:
;;
;;   (with-eval-after-load 'eglot (require 'logitls))
;;
;; or, from a clone:
;;
;;   (add-to-list 'load-path "/path/to/logitls/client-config/emacs")
;;   (require 'logitls)
;;   (setq logitls-server-command '("~/logitls/.venv/bin/logitls" "serve"))  ; if not on PATH
;;   (setq logitls-settings '(:model "default" :topN 10 :generate (:maxNewTokens 50)))
;;   (add-hook 'text-mode-hook #'eglot-ensure)   ; or M-x eglot in a buffer
;;
;; Then: completion-at-point (C-M-i) lists the next tokens with their probabilities,
;; eldoc shows the probability of the token at point (hover), and M-x logitls-generate inserts
;; the greedy continuation at point; M-x logitls-score-selection gives the region's bits per
;; token.  The mode line shows the model's state (logitls/status).
;;
;; Emacs 29+ has eglot built in; on Emacs 28 install it (Debian 12: apt-get install elpa-eglot).

;;; Code:

(require 'eglot)
(require 'cl-lib)

(defgroup logitls nil
  "A causal language model's next tokens and probabilities, through eglot."
  :group 'eglot
  :prefix "logitls-")

(defcustom logitls-server-command '("logitls" "serve")
  "Program and arguments that start the logitls language server.
The program is looked up on `exec-path'; give a full path for a virtual environment,
e.g. (\"~/logitls/.venv/bin/logitls\" \"serve\")."
  :type '(repeat string))

(defcustom logitls-settings nil
  "logitls settings as a plist in the server's (camelCase) names, e.g.
\(:model \"default\" :topN 10 :generate (:maxNewTokens 50)).  Unset ones keep their
defaults; see client-config/schema.json.  Use :json-false for false."
  :type '(plist :key-type symbol))

(defcustom logitls-major-modes '(text-mode markdown-mode gfm-mode)
  "Major modes whose buffers eglot connects to logitls."
  :type '(repeat symbol))

(defvar logitls-status nil
  "The last logitls/status notification: a plist (:state STATE :model MODEL :message MESSAGE).")

(defun logitls--initialization-options (_server)
  "The settings sent as initializationOptions (under the section name `logitls')."
  (list :logitls (or logitls-settings eglot--{})))

(defun logitls--contact (&optional _interactive)
  "The eglot contact for logitls: the server command and its initialization options."
  (let* ((command (copy-sequence logitls-server-command))
         (program (expand-file-name (car command))))
    (setcar command (if (file-name-absolute-p (car command))
                        program
                      (or (executable-find (car command)) (car command))))
    (unless (or (file-executable-p (car command)) (executable-find (car command)))
      (user-error "logitls: the server program %s was not found; install logitls (pip install logitls) or set `logitls-server-command'"
                  (car command)))
    (append command (list :initializationOptions #'logitls--initialization-options))))

(add-to-list 'eglot-server-programs (cons logitls-major-modes #'logitls--contact))

(defun logitls-mode-line ()
  "Mode-line text for `logitls-status'."
  (when logitls-status
    (format " logitls:%s" (plist-get logitls-status :state))))

(add-to-list 'global-mode-string '(:eval (logitls-mode-line)) t)

(cl-defmethod eglot-handle-notification (_server (_method (eql logitls/status)) &key state model message)
  "Keep the model's state (loading, ready, failed) for the mode line; say when it failed."
  (setq logitls-status (list :state state :model model :message message))
  (when (equal state "failed")
    (message "logitls: the model %s failed to load: %s" model message))
  (force-mode-line-update t))

;;;###autoload
(defun logitls-generate (&optional max-new-tokens)
  "Insert the model's greedy continuation at point (the server's `logitls.generate').
With a numeric prefix argument, generate at most that many tokens.  Returns the server's
answer, a plist (:text TEXT :applied BOOL :stop REASON)."
  (interactive "P")
  (let ((server (eglot--current-server-or-lose))
        (args (append (list :textDocument (eglot--TextDocumentIdentifier)
                            :position (eglot--pos-to-lsp-position))
                      (when max-new-tokens (list :maxNewTokens (prefix-numeric-value max-new-tokens))))))
    (eglot--signal-textDocument/didChange)
    ;; The user asked for this edit: eglot must not ask again before applying workspace/applyEdit.
    (let* ((eglot-confirm-server-initiated-edits nil)
           (result (eglot-execute-command server 'logitls.generate (vector args))))
      (when (and (called-interactively-p 'interactive)
                 (not (eq (plist-get result :applied) t))
                 (equal (plist-get result :text) ""))
        (message "logitls: nothing inserted (%s)" (plist-get result :stop)))
      result)))

;;;###autoload
(defun logitls-score-selection (beg end)
  "Score the region BEG..END (the server's `logitls.scoreSelection'): its bits per token,
perplexity and least likely token, which the server shows in the echo area.  Returns the
server's answer, a plist (:bitsPerToken N :perplexity N :summary TEXT ...)."
  (interactive "r")
  (let ((server (eglot--current-server-or-lose))
        (args (list :textDocument (eglot--TextDocumentIdentifier)
                    :range (list :start (eglot--pos-to-lsp-position beg)
                                 :end (eglot--pos-to-lsp-position end)))))
    (eglot--signal-textDocument/didChange)
    (eglot-execute-command server 'logitls.scoreSelection (vector args))))

;; Branch (M-x eglot-code-actions on a word: "Use ' London' (1.2%) and continue"): the user chose the
;; edit in the menu already; eglot must not ask again before applying the server's workspace/applyEdit.
(cl-defmethod eglot-execute-command :around (_server (_command (eql logitls.branch)) _arguments)
  (let ((eglot-confirm-server-initiated-edits nil))
    (cl-call-next-method)))

(defun logitls--server-p (&optional server)
  "Whether SERVER (default: the current buffer's) is logitls."
  (let ((server (or server (eglot-current-server))))
    (and server (equal (plist-get (eglot--server-info server) :name) "logitls"))))

;; Newer eglot (1.16+) names it eglot-range-region; 1.9 (Debian 12) only eglot--range-region.
(defalias 'logitls--range-region
  (if (fboundp 'eglot-range-region) #'eglot-range-region #'eglot--range-region))

(defun logitls--edit-start (item)
  "Where ITEM's textEdit starts, as a buffer position; point when it has none.
An InsertReplaceEdit counts by its insert range.  An edit that does not
start on point's line before point counts as starting at point."
  (let* ((edit (plist-get item :textEdit))
         (range (and edit (or (plist-get edit :range) (plist-get edit :insert))))
         (start (and range (car (logitls--range-region range)))))
    (if (and start (<= (line-beginning-position) start (point))) start (point))))

(defun logitls-completion-at-point ()
  "The next tokens at point, for `completion-at-point' (C-M-i) and company/corfu.
Each candidate is the text of its item's textEdit, which replaces the region
from the edit's start to point: with token healing that region is the space
or half-typed word before point and the candidate starts with it (after
\"is \" the candidate \" Paris\" makes \"is Paris\"); a raw next token
inserts at point.  The annotation shows the token, its probability and rank.
Used instead of eglot's own function in logitls buffers: eglot before 1.15
assumes a completion label starts with the word before point, which a next
token does not, and mangles the text when one is chosen."
  (when (logitls--server-p)
    (let* ((server (eglot-current-server))
           (_ (eglot--signal-textDocument/didChange))
           (response (jsonrpc-request server :textDocument/completion (eglot--CompletionParams)))
           (items (append (if (vectorp response) response (plist-get response :items)) nil))
           (starts (mapcar #'logitls--edit-start items))
           (start (apply #'min (point) starts))
           (table (cl-mapcar
                   (lambda (item item-start)
                     (let ((text (or (plist-get (plist-get item :textEdit) :newText)
                                     (plist-get item :insertText) (plist-get item :label))))
                       ;; all of one answer's edits start together; one that starts later keeps
                       ;; the text between the common start and its own
                       (propertize (concat (buffer-substring-no-properties start item-start) text)
                                   'logitls-item item)))
                   items starts))
           (point (point)))
      (list start point
            (lambda (probe pred action)
              (if (eq action 'metadata)
                  '(metadata (display-sort-function . identity) (cycle-sort-function . identity)
                             (category . logitls))
                (complete-with-action action table probe pred)))
            :annotation-function
            (lambda (candidate)
              (let ((item (get-text-property 0 'logitls-item candidate)))
                (format "  %s  %s  (%s)" (plist-get item :label)
                        (or (plist-get (plist-get item :labelDetails) :description) "")
                        (or (plist-get item :detail) ""))))
            :exclusive 'no))))

(defun logitls--managed-mode-hook ()
  "Put `logitls-completion-at-point' before eglot's completion in logitls buffers."
  (when (and (bound-and-true-p eglot--managed-mode) (logitls--server-p))
    (add-hook 'completion-at-point-functions #'logitls-completion-at-point nil t)))

(add-hook 'eglot-managed-mode-hook #'logitls--managed-mode-hook)

;;;###autoload
(defun logitls-restart ()
  "Restart the logitls server of the current buffer."
  (interactive)
  (eglot-reconnect (eglot--current-server-or-lose)))

(provide 'logitls)
;;; logitls.el ends here
