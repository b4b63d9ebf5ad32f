;;; emacs_check.el --- run by test_emacs.py in `emacs --batch' with client-config/emacs/logitls.el  -*- lexical-binding: t; -*-
;; Opens the file named by $LOGITLS_TEST_FILE, connects eglot to logitls, and records what Emacs saw
;; (completion candidates and annotations through completion-at-point after `…is', `…is ' and
;; `…is Pa', the first chosen and inserted, eldoc's hover text, the buffer after M-x logitls-generate,
;; the branch code actions of M-x eglot-code-actions and the buffer after one of them, and
;; M-x logitls-score-selection's answer)
;; in $LOGITLS_TEST_OUT.
(require 'logitls)
(require 'json)
(require 'cl-lib)
(require 'seq)

(defvar logitls-check-out nil)
(defun logitls-check-note (key value) (setq logitls-check-out (plist-put logitls-check-out key value)))
(defun logitls-check-wait (pred seconds)
  (let ((deadline (+ (float-time) seconds)))
    (while (and (not (funcall pred)) (< (float-time) deadline))
      (accept-process-output nil 0.05))
    (funcall pred)))

;; A busy machine (the suite beside other work) answers slowly: every request may take as long as a
;; model load. These are limits against a hang, not assertions (jsonrpc's default is 10 s, eglot's
;; connection 30 s: both ended the run with "Timed out" under load).
(setq jsonrpc-default-request-timeout 600
      eglot-connect-timeout 600)
(setq logitls-settings '(:model "default" :topN 10 :device "cpu"))
(condition-case err
    (progn
      (find-file (getenv "LOGITLS_TEST_FILE"))
      (switch-to-buffer (current-buffer))
      (logitls-check-note :major-mode (symbol-name major-mode))
      (apply #'eglot (eglot--guess-contact))
      (logitls-check-wait (lambda () (member (plist-get logitls-status :state) '("ready" "failed"))) 600)
      (logitls-check-note :status logitls-status)
      (logitls-check-note :managed (if (eglot-managed-p) t :json-false))
      (logitls-check-note :mode-line (logitls-mode-line))
      ;; completion-at-point, as C-M-i runs it: the first function that answers, its candidates
      ;; through the completion styles (as the *Completions* buffer, company or corfu get them) and
      ;; the first chosen, as the completion UI inserts it; after `…is', `…is ' and `…is Pa'
      (logitls-check-note :capf (vconcat (mapcar (lambda (f) (format "%s" f)) completion-at-point-functions)))
      (let (cases)
        (dolist (text '("The capital of France is" "The capital of France is " "The capital of France is Pa"))
          (erase-buffer) (insert text "\n")
          (eglot--signal-textDocument/didChange) ; what eglot's idle timer does (no idle time in batch)
          (goto-char (point-min)) (end-of-line)
          (let* ((capf (run-hook-wrapped 'completion-at-point-functions #'completion--capf-wrapper 'all))
                 (capf (if (functionp (car-safe capf)) (cdr capf) capf))
                 (start (nth 0 capf)) (end (nth 1 capf)) (table (nth 2 capf)) (props (nthcdr 3 capf))
                 (probe (buffer-substring-no-properties start end))
                 (candidates (completion-all-completions probe table nil (length probe)
                                                         (completion-metadata probe table nil)))
                 (annotate (plist-get props :annotation-function)))
            (when (consp candidates) (setcdr (last candidates) nil)) ; drop the base size
            (push (list :text text :probe probe
                        :candidates (vconcat (mapcar (lambda (c) (vector (substring-no-properties c)
                                                                         (substring-no-properties (funcall annotate c))))
                                                     candidates)))
                  cases)
            ;; choose the first, as the completion UI does
            (let ((choice (car candidates)))
              (completion--replace start end choice)
              (when (plist-get props :exit-function)
                (funcall (plist-get props :exit-function) choice 'finished)))
            (plist-put (car cases) :after (buffer-substring-no-properties (point-min) (point-max)))))
        (logitls-check-note :completion-cases (vconcat (nreverse cases))))
      (erase-buffer) (insert "The capital of France is\n")
      (eglot--signal-textDocument/didChange)
      ;; hover: eldoc's function for eglot, on "is"
      (goto-char (point-min)) (end-of-line) (backward-char 1)
      (let (hover)
        (eglot-hover-eldoc-function (lambda (info &rest _) (setq hover (or info ""))))
        (logitls-check-wait (lambda () hover) 600)
        (logitls-check-note :hover (and hover (substring-no-properties hover))))
      ;; M-x logitls-generate at the end of line 1
      (goto-char (point-min)) (end-of-line)
      (logitls-check-note :generate-result (logitls-generate 8))
      (logitls-check-note :after-generate (buffer-substring-no-properties (point-min) (point-max)))
      ;; branch: M-x eglot-code-actions on " Paris"; the menu (completing-read) picks ' London', and
      ;; eglot executes its logitls.branch command, whose workspace edit rewrites the rest of the line
      (erase-buffer) (insert "The capital of France is Paris. It is big.\n")
      (eglot--signal-textDocument/didChange)
      (goto-char (point-min)) (search-forward " P")
      (let (menu (last-nonmenu-event 13)) ; a key, not a mouse event: eglot asks through completing-read
        (cl-letf (((symbol-function 'completing-read)
                   (lambda (_prompt collection &rest _)
                     (setq menu (mapcar #'car collection))
                     (seq-find (lambda (title) (string-match-p "' London'" title)) menu))))
          (logitls-check-note :branch-result (eglot-code-actions (point) nil nil t)))
        (logitls-check-note :branch-menu (vconcat menu)))
      (logitls-check-note :after-branch (buffer-substring-no-properties (point-min) (point-max)))
      ;; M-x logitls-score-selection on the region `Paris. It is big.'
      (erase-buffer) (insert "The capital of France is Paris. It is big.\n")
      (goto-char (point-min)) (search-forward "Paris")
      (logitls-check-note :score-result (logitls-score-selection (- (point) 5) (line-end-position))))
  (error (logitls-check-note :error (format "%S" err))))
(let ((stderr (seq-find (lambda (b) (string-match-p "EGLOT.*stderr" (buffer-name b))) (buffer-list))))
  (when stderr (logitls-check-note :server-stderr (with-current-buffer stderr (buffer-string)))))
(with-temp-file (getenv "LOGITLS_TEST_OUT")
  (insert (json-encode logitls-check-out)))
(ignore-errors (eglot-shutdown (eglot-current-server)))
(kill-emacs 0)
