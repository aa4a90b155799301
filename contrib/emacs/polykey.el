;;; polykey.el --- keep files under a Polykey mount out of Emacs's backups and history -*- lexical-binding: t -*-

;;; Commentary:
;; Load it from your init file: (load "/path/to/polykey.el").  A file counts as under a
;; Polykey mount when its true name lies under a mount of type fuse.polykey in /proc/mounts,
;; or matches a regexp in `polykey-path-regexps'.  For such a buffer: no backup file, no
;; auto-save file, no lock file, and it is kept out of recentf.  The minibuffer history that
;; savehist writes (search strings, query-replace strings, and whatever
;; `savehist-additional-variables' names, such as the kill ring) is not per file, so
;; `savehist-mode' is turned off for the rest of the session once such a file is visited.
;; `polykey edit REPO/SECRET' does all of this without the snippet.

;;; Code:

(defvar polykey-path-regexps nil
  "Regexps of file names to treat as under a Polykey mount, besides /proc/mounts.")

(defun polykey--mountpoints ()
  "Mountpoints of type fuse.polykey, from /proc/mounts."
  (when (file-readable-p "/proc/mounts")
    (with-temp-buffer
      (insert-file-contents "/proc/mounts")
      (let (points)
        (dolist (line (split-string (buffer-string) "\n" t) points)
          (let ((f (split-string line " ")))
            (when (and (>= (length f) 3) (string= (nth 2 f) "fuse.polykey"))
              (push (replace-regexp-in-string
                     "\\\\\\([0-7]\\{3\\}\\)"
                     (lambda (m) (string (string-to-number (substring m 1) 8)))
                     (nth 1 f) t t)
                    points))))))))

(defun polykey-file-p (file)
  "Whether FILE lies under a Polykey mount."
  (let ((true (file-truename (expand-file-name file))))
    (or (seq-some (lambda (m) (or (string= true m) (string-prefix-p (file-name-as-directory m) true)))
                  (polykey--mountpoints))
        (seq-some (lambda (re) (string-match-p re true)) polykey-path-regexps))))

(defun polykey--protect ()
  "Turn off what would copy this buffer's file out of the mount."
  (when (and buffer-file-name (polykey-file-p buffer-file-name))
    (setq-local make-backup-files nil)
    (setq-local backup-inhibited t)
    (setq-local create-lockfiles nil)
    (auto-save-mode -1)
    (when (bound-and-true-p savehist-mode)
      (savehist-mode -1))))

(add-hook 'find-file-hook #'polykey--protect)
(with-eval-after-load 'recentf
  (add-to-list 'recentf-exclude #'polykey-file-p))

(provide 'polykey)
;;; polykey.el ends here
